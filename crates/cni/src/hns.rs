//! hnsd's HNS API as hns-cni uses it: one blocking request per call over the unix socket
//! (hns-client). hnsd's error messages are passed through in its own words.

use std::path::PathBuf;
use std::time::Duration;

use hns_api::{ApiError, ErrorCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CniError, Result, code};

/// Bounds each read and write. Attaching takes milliseconds; a DHCP network's lease can take
/// seconds, which hnsd bounds itself.
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Hns {
    socket: PathBuf,
}

impl Hns {
    pub fn new(socket: PathBuf) -> Hns {
        Hns { socket }
    }

    fn call(&self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        let reply = hns_client::request(&self.socket, method, path, body, Some(TIMEOUT)).map_err(|e| {
            CniError::new(
                code::TRY_AGAIN,
                format!("hnsd does not answer on {} ({}); start it (systemctl start hnsd) and try again", self.socket.display(), e.cause()),
            )
        })?;
        Ok((reply.status, reply.body))
    }

    /// GET; `None` on 404.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let (status, body) = self.call("GET", path, "")?;
        if status == 404 {
            return Ok(None);
        }
        check(status, &body)?;
        decode(path, &body).map(Some)
    }

    pub fn post<T: DeserializeOwned>(&self, path: &str, req: &impl Serialize) -> Result<T> {
        let body = serde_json::to_string(req).expect("serializable");
        let (status, text) = self.call("POST", path, &body)?;
        check(status, &text)?;
        decode(path, &text)
    }

    /// DELETE; `false` when there was nothing to delete (404).
    pub fn delete(&self, path: &str) -> Result<bool> {
        let (status, body) = self.call("DELETE", path, "")?;
        if status == 404 {
            return Ok(false);
        }
        check(status, &body).map(|_| true)
    }

    pub fn healthy(&self) -> Result<()> {
        let (status, body) = self.call("GET", "/healthz", "")?;
        check(status, &body)
    }
}

fn decode<T: DeserializeOwned>(path: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| CniError::new(code::DECODE, format!("hnsd's answer to {path} is not what hns-cni expects ({e}); are hnsd and hns-cni the same version?")))
}

/// hnsd's error body as a CNI error: bad input is a config error (7), a conflict (an address,
/// a port or a name held by something else) 100, "try again" for 503, else hnsd failed (101).
fn check(status: u16, body: &str) -> Result<()> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let Ok(e) = serde_json::from_str::<ApiError>(body) else {
        return Err(CniError::new(code::HNS_FAILED, format!("hnsd answered HTTP {status}: {}", body.trim())));
    };
    Err(api_error(status, e))
}

fn api_error(status: u16, e: ApiError) -> CniError {
    let cni_code = match (status, e.code) {
        (503, _) => code::TRY_AGAIN,
        (409, _) => code::HNS_CONFLICT,
        (400 | 404, _) => code::INVALID_CONFIG,
        (_, ErrorCode::DhcpFailed) => code::TRY_AGAIN,
        _ => code::HNS_FAILED,
    };
    let details = match &e.field {
        Some(f) => format!("hnsd: {} (field {f})", e.code),
        None => format!("hnsd: {}", e.code),
    };
    CniError { hns: Some(e.clone()), ..CniError::new(cni_code, e.message).with_details(details) }
}
