//! HTTP/1.1 + JSON over hnsd's unix socket, through hns-client.
//!
//! Blocking, with no runtime and no thread: hnsctl stays single-threaded and may fork, setns
//! and unshare at any time. Each request uses its own connection, which keeps the code free of
//! connection-reuse state.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CliError, Result};
use hns_api::{ApiError, ModifyRequest};

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Result<Self> {
        Ok(Client { socket: socket.to_owned() })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = self.call("GET", path, None)?;
        decode("GET", path, &body)
    }

    pub fn post<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let json = encode(body)?;
        let reply = self.call("POST", path, Some(json))?;
        decode("POST", path, &reply)
    }

    /// A POST whose reply body is not needed (modify requests).
    pub fn post_ignore<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<()> {
        let json = encode(body)?;
        self.call("POST", path, Some(json)).map(|_| ())
    }

    pub fn modify(&self, path: &str, req: &ModifyRequest) -> Result<()> {
        self.post_ignore(path, req)
    }

    /// A modify request whose reply may carry the updated object: `None` when the reply body
    /// is empty or not a `T` (the change was made all the same).
    pub fn modify_reply<T: DeserializeOwned>(&self, path: &str, req: &ModifyRequest) -> Result<Option<T>> {
        let json = encode(req)?;
        let reply = self.call("POST", path, Some(json))?;
        Ok(serde_json::from_str(&reply).ok())
    }

    pub fn delete(&self, path: &str) -> Result<()> {
        self.call("DELETE", path, None).map(|_| ())
    }

    /// A DELETE whose reply says what was removed.
    pub fn delete_reply<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let reply = self.call("DELETE", path, None)?;
        decode("DELETE", path, &reply)
    }

    /// A GET whose reply is a stream of lines (`/events`): `on_line` gets each line as it
    /// arrives, until the stream ends or `on_line` returns false.
    pub fn stream_lines(&self, path: &str, mut on_line: impl FnMut(&[u8]) -> Result<bool>) -> Result<()> {
        let failed = |e: hns_client::Error| self.failure("GET", path, e);
        let mut stream = hns_client::stream(&self.socket, "GET", path, "", None).map_err(failed)?;
        if !(200..300).contains(&stream.status) {
            let body = stream.text().map_err(failed)?;
            return Err(error_from_reply(stream.status, &body));
        }
        let lost = |e: std::io::Error| {
            CliError::Protocol(format!("lost the connection to hnsd at {} during GET {path}: {e}", self.socket.display()))
        };
        let mut lines = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            if lines.read_until(b'\n', &mut line).map_err(lost)? == 0 {
                return Ok(());
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if !on_line(text)? {
                return Ok(());
            }
        }
    }

    /// Sends one request; a non-2xx answer becomes the error it carries.
    fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<String> {
        let reply = hns_client::request(&self.socket, method, path, body.unwrap_or_default(), None)
            .map_err(|e| self.failure(method, path, e))?;
        if reply.is_success() {
            Ok(reply.body)
        } else {
            Err(error_from_reply(reply.status, &reply.body))
        }
    }

    /// Why a request got no reply: the socket could not be reached, or the exchange broke.
    fn failure(&self, method: &str, path: &str, e: hns_client::Error) -> CliError {
        let shown = self.socket.display().to_string();
        match e {
            hns_client::Error::Connect { source, .. } => connect_error(&shown, &source),
            e => CliError::Protocol(format!("lost the connection to hnsd at {shown} during {method} {path}: {}", e.cause())),
        }
    }
}

fn encode<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| CliError::local(format!("cannot encode the request: {e}")))
}

fn decode<T: DeserializeOwned>(method: &str, path: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| {
        CliError::Protocol(format!("hnsd sent an unexpected reply to {method} {path}: {e}"))
    })
}

/// Turns a failed reply into an error: the API error body when there is one.
pub fn error_from_reply(status: u16, body: &str) -> CliError {
    match serde_json::from_str::<ApiError>(body) {
        Ok(e) => CliError::Api(e),
        Err(_) => CliError::Http { status, body: body.to_owned() },
    }
}

/// Why the socket could not be reached: a permission error (hnsd's socket is mode 0600 in a
/// root-only directory) says so, rather than suggesting that hnsd is not running.
fn connect_error(socket: &str, err: &std::io::Error) -> CliError {
    if err.kind() == std::io::ErrorKind::PermissionDenied {
        CliError::PermissionDenied { socket: socket.to_owned() }
    } else {
        CliError::Connect { socket: socket.to_owned(), err: err.to_string() }
    }
}

/// Percent-encodes one path segment (a name or an ID given by the user).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(seg("mynat"), "mynat");
        assert_eq!(seg("0b3f-AA_x.y~"), "0b3f-AA_x.y~");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(seg("é"), "%C3%A9");
    }

    #[test]
    fn error_bodies() {
        let e = error_from_reply(404, r#"{"code":"NETWORK_NOT_FOUND","message":"no network named x"}"#);
        assert!(e.is_not_found());
        assert_eq!(e.render(), "Error: no network named x (NETWORK_NOT_FOUND)");
        let e = error_from_reply(502, "upstream broke");
        assert_eq!(e.render(), "Error: hnsd answered HTTP 502: upstream broke");
        assert_eq!(e.exit_code(), 1);
    }

    /// An HTTP reply with a JSON body.
    pub(crate) fn reply(status: &str, body: &str) -> String {
        format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    }

    /// Serves one canned reply per connection, returning the requests seen.
    pub(crate) fn fake_daemon(replies: Vec<String>) -> (PathBuf, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("hnsctl-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hns.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for reply in replies {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then as much body as Content-Length says.
                loop {
                    let n = conn.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len || n == 0 {
                            break;
                        }
                    }
                }
                seen.push(String::from_utf8_lossy(&buf).to_string());
                conn.write_all(reply.as_bytes()).unwrap();
            }
            seen
        });
        (path, handle)
    }

    #[test]
    fn requests_and_replies_over_the_socket() {
        let reply = |status: &str, body: &str| format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let (path, server) = fake_daemon(vec![
            reply("200 OK", r#"{"Major":15,"Minor":4}"#),
            reply("201 Created", r#"{"ID":"abc","Name":"mynat"}"#),
            "HTTP/1.1 204 No Content\r\n\r\n".to_owned(),
            reply("409 Conflict", r#"{"code":"SUBNET_IN_USE","message":"subnet overlaps","field":"Ipams[0].Subnets[0]"}"#),
        ]);
        let c = Client::new(&path).unwrap();
        let v: hns_api::Version = c.get("/globals/version").unwrap();
        assert_eq!(v, hns_api::Version { major: 15, minor: 4 });
        let body = hns_api::HostComputeNetwork { name: "mynat".into(), ..Default::default() };
        let net: hns_api::HostComputeNetwork = c.post("/networks", &body).unwrap();
        assert_eq!(net.id, "abc");
        c.delete("/networks/mynat").unwrap();
        let e = c.post::<_, serde_json::Value>("/networks", &body).unwrap_err();
        assert_eq!(e.render(), "Error: subnet overlaps (SUBNET_IN_USE)\n  field: Ipams[0].Subnets[0]");
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("GET /globals/version HTTP/1.1\r\n"), "{}", seen[0]);
        assert!(seen[1].starts_with("POST /networks HTTP/1.1\r\n"), "{}", seen[1]);
        assert!(seen[1].to_ascii_lowercase().contains("content-type: application/json"));
        assert!(seen[1].ends_with(r#"{"Name":"mynat","SchemaVersion":{"Major":2,"Minor":0}}"#), "{}", seen[1]);
        assert!(seen[2].starts_with("DELETE /networks/mynat HTTP/1.1\r\n"));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn permission_errors_are_not_taken_for_a_stopped_hnsd() {
        let denied = connect_error("/run/hns/hns.sock", &std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(denied.render(), "Error: permission denied on /run/hns/hns.sock: hnsd's socket is root-only; run as root");
        assert_eq!(denied.exit_code(), 1);
        let absent = connect_error("/run/hns/hns.sock", &std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(absent.render().ends_with("is hnsd running? (set --socket or HNS_SOCKET)"), "{}", absent.render());
    }

    #[test]
    fn unreachable_socket_is_named() {
        let c = Client::new(Path::new("/nonexistent/hns.sock")).unwrap();
        let e = c.get::<serde_json::Value>("/healthz").unwrap_err();
        let text = e.render();
        assert!(text.starts_with("Error: cannot reach hnsd at /nonexistent/hns.sock: "), "{text}");
        assert!(text.ends_with("is hnsd running? (set --socket or HNS_SOCKET)"), "{text}");
    }
}
