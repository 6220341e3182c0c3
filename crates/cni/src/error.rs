//! The CNI error result (`{cniVersion, code, msg, details}`) and the spec's codes.

use serde_json::{Value, json};

/// Spec codes (CNI SPEC "Error"), then hns-cni's own (100 and up).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// hnsd refused a request because something it holds conflicts (an address, a port, a name).
    pub const HNS_CONFLICT: u32 = 100;
    /// hnsd failed to carry out a request (kernel or store error).
    pub const HNS_FAILED: u32 = 101;
    /// CHECK: the attachment is not as ADD left it.
    pub const CHECK_FAILED: u32 = 102;
}

#[derive(Debug, Clone, PartialEq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
    /// hnsd's error, when hnsd refused the request.
    pub hns: Option<hns_api::ApiError>,
}

pub type Result<T> = std::result::Result<T, CniError>;

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: String::new(), hns: None }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// Whether hnsd refused the request with `c` (on `field`, when given).
    pub fn is_hns(&self, c: hns_api::ErrorCode, field: Option<&str>) -> bool {
        self.hns.as_ref().is_some_and(|e| e.code == c && (field.is_none() || e.field.as_deref() == field))
    }

    pub fn config(msg: impl Into<String>) -> CniError {
        CniError::new(code::INVALID_CONFIG, msg)
    }

    pub fn env(msg: impl Into<String>) -> CniError {
        CniError::new(code::INVALID_ENV, msg)
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: &str) -> CniError {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}
