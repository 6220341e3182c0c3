//! A deliberately tiny, blocking HTTP/1.1 client over a Unix socket: enough to ask hnsd's
//! `GET /healthz` from the lab, dockerd for a container's name from hnsd's Docker plugin, or hnsd
//! for the few requests of one CNI command (hns-cni),
//! without pulling an async stack (or a runtime) into a blocking caller. Written by hand because
//! the maintained clients (hyper, ureq) need a connector layer and a runtime or TLS stack for
//! what is here one request and one `read_to_end` on a `Connection: close` socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use std::io::{Error, Result};

/// `GET path` on the Unix socket `socket`; returns (status code, body).
/// Uses `Connection: close` and a 2 s I/O timeout.
pub fn http_get(socket: &Path, path: &str) -> Result<(u16, String)> {
    request(socket, "GET", path, "", Duration::from_secs(2))
}

/// `METHOD path` with a JSON `body` (none when empty) on the Unix socket `socket`; returns
/// (status code, body). One request per connection (`Connection: close`); `timeout` bounds
/// each read and write, not the whole exchange.
pub fn request(socket: &Path, method: &str, path: &str, body: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| Error::new(e.kind(), format!("connecting to {}: {e}", socket.display())))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if !body.is_empty() {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    // One write: the head and the body leave in one segment on a small request.
    stream.write_all([head.as_bytes(), body.as_bytes()].concat().as_slice())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| Error::new(e.kind(), format!("reading the HTTP response: {e}")))?;
    parse_response(&raw)
}

fn bad(msg: impl Into<String>) -> Error {
    Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad(format!("incomplete HTTP response ({} bytes)", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(bad(format!("not an HTTP response: {status_line:?}")));
    }
    let code: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(format!("bad HTTP status line: {status_line:?}")))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunked body"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let (c, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!((c, b.as_str()), (200, "ok"));
        let (c, b) = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((c, b.as_str()), (503, "abcde"));
        assert!(parse_response(b"garbage").is_err());
    }
}
