//! The one HTTP/1.1 client of hns over a Unix socket: hnsctl, hns-cni, the lab and its tests,
//! the benchmarks and hnsd's Docker plugin (asking dockerd for a container's name) all talk to a
//! daemon through it. Blocking, with no runtime, so a caller that forks, setns or unshares
//! (hnsctl run) stays single-threaded.
//!
//! Three ways to ask:
//! - [`request`]: one request on a connection of its own (`Connection: close`), the whole
//!   reply read into a [`Reply`] (status, body text, the `Server-Timing` duration);
//! - [`Conn`]: a kept-alive connection for many requests in a row (the benchmarks time attach
//!   latency as a client such as Docker sees it, on one open connection);
//! - [`stream`]: a reply whose body is read as it arrives (`GET /events`).
//!
//! The response head is parsed by `httparse` (hyper's own parser); the rest is written by hand
//! because no maintained client fits: hyper's client needs an async runtime and a connector
//! layer for a Unix socket (hnsctl carried a tokio runtime for that alone); ureq ships no
//! Unix-socket transport (one is written against its transport traits, as much code as here)
//! and is built around URLs, TLS and proxies that a local socket never uses. What is left here
//! is writing a request head and reading a body by its Content-Length, its chunks or to the
//! close.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A whole reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// The body as text (invalid UTF-8 replaced), dechunked.
    pub body: String,
    /// The first `dur=` of a `Server-Timing` header (ms): hnsd's own share of the request.
    pub server_ms: Option<f64>,
}

impl Reply {
    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request got no reply. Each names the socket; [`Error::cause`] says the rest alone.
#[derive(Debug)]
pub enum Error {
    /// The socket could not be connected (absent, refused, permission denied: see `source`).
    Connect { socket: PathBuf, source: io::Error },
    /// The daemon closed the connection without sending a byte of a reply (it exited, or it
    /// refused the request without answering).
    NoReply { socket: PathBuf },
    /// A read or a write waited longer than the timeout given.
    Timeout { socket: PathBuf, after: Duration },
    /// Sending or receiving failed otherwise.
    Io { socket: PathBuf, source: io::Error },
    /// The reply is not HTTP/1.1 as understood here, or ends early.
    Protocol { socket: PathBuf, what: String },
}

impl Error {
    /// The socket the request was for.
    pub fn socket(&self) -> &Path {
        match self {
            Error::Connect { socket, .. }
            | Error::NoReply { socket }
            | Error::Timeout { socket, .. }
            | Error::Io { socket, .. }
            | Error::Protocol { socket, .. } => socket,
        }
    }

    /// What went wrong, without the socket's name.
    pub fn cause(&self) -> String {
        match self {
            Error::Connect { source, .. } | Error::Io { source, .. } => source.to_string(),
            Error::NoReply { .. } => "the connection was closed without a reply".to_owned(),
            Error::Timeout { after, .. } => format!("no answer within {after:?}"),
            Error::Protocol { what, .. } => what.clone(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect { socket, source } => write!(f, "cannot connect to {}: {source}", socket.display()),
            other => write!(f, "request on {} failed: {}", other.socket().display(), other.cause()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Connect { source, .. } | Error::Io { source, .. } => source.kind(),
            Error::NoReply { .. } => io::ErrorKind::UnexpectedEof,
            Error::Timeout { .. } => io::ErrorKind::TimedOut,
            Error::Protocol { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `GET path` on its own connection with a 2 s timeout (health checks, dockerd look-ups).
pub fn http_get(socket: &Path, path: &str) -> Result<Reply> {
    request(socket, "GET", path, "", Some(Duration::from_secs(2)))
}

/// `METHOD path` with a JSON `body` (none when empty) on a connection of its own
/// (`Connection: close`). `timeout` bounds each read and write, not the whole exchange; `None`
/// waits as long as the daemon takes.
///
/// A daemon may answer before it has read the whole body (413 on a huge one) and close: the
/// reply is returned all the same.
pub fn request(socket: &Path, method: &str, path: &str, body: impl AsRef<[u8]>, timeout: Option<Duration>) -> Result<Reply> {
    let mut s = stream(socket, method, path, body, timeout)?;
    let body = s.text()?;
    Ok(Reply { status: s.status, body, server_ms: s.server_ms })
}

/// Sends a request on a connection of its own and returns once the reply's head has arrived;
/// the body is read from the returned [`Stream`] as it comes (a stream of lines such as
/// `/events` never ends by itself).
pub fn stream(socket: &Path, method: &str, path: &str, body: impl AsRef<[u8]>, timeout: Option<Duration>) -> Result<Stream> {
    let mut conn = Conn::connect(socket, timeout)?;
    let f = |fault: Fault| fault.into_error(socket, timeout);
    let sent = conn.send(method, path, body.as_ref(), true);
    let head = match (read_head(&mut conn.r, method == "HEAD"), sent) {
        (Ok(h), _) => h,
        // The request could not be sent and nothing came back: the send's error says more.
        (Err(Fault::Closed), Err(e)) => return Err(f(Fault::Io(e))),
        (Err(e), _) => return Err(f(e)),
    };
    Ok(Stream {
        status: head.status,
        server_ms: head.server_ms,
        content_type: head.content_type,
        body: Body { r: conn.r, framing: head.framing },
        socket: socket.to_owned(),
        timeout,
    })
}

/// A reply whose body is read as it arrives: `Read` gives the body (dechunked).
pub struct Stream {
    pub status: u16,
    pub server_ms: Option<f64>,
    pub content_type: Option<String>,
    body: Body<BufReader<UnixStream>>,
    socket: PathBuf,
    timeout: Option<Duration>,
}

impl Stream {
    /// The rest of the body as text (invalid UTF-8 replaced).
    pub fn text(&mut self) -> Result<String> {
        let mut raw = Vec::new();
        self.body.read_to_end(&mut raw).map_err(|e| Fault::from_body(e).into_error(&self.socket, self.timeout))?;
        Ok(text(raw))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

/// A kept-alive connection: requests one after another on one socket, as a client such as
/// Docker keeps one open. When the daemon says it closes the connection after a reply, the
/// next request opens a new one.
pub struct Conn {
    socket: PathBuf,
    timeout: Option<Duration>,
    r: BufReader<UnixStream>,
    open: bool,
}

impl Conn {
    /// Connects; `timeout` bounds each read and write of later requests (`None`: no bound).
    pub fn connect(socket: &Path, timeout: Option<Duration>) -> Result<Conn> {
        let s = UnixStream::connect(socket).map_err(|source| Error::Connect { socket: socket.to_owned(), source })?;
        s.set_read_timeout(timeout).and_then(|()| s.set_write_timeout(timeout)).map_err(|source| Error::Io { socket: socket.to_owned(), source })?;
        Ok(Conn { socket: socket.to_owned(), timeout, r: BufReader::new(s), open: true })
    }

    /// `METHOD path` with a JSON `body` (none when empty); the whole reply.
    pub fn request(&mut self, method: &str, path: &str, body: impl AsRef<[u8]>) -> Result<Reply> {
        if !self.open {
            *self = Conn::connect(&self.socket, self.timeout)?;
        }
        let (socket, timeout) = (self.socket.clone(), self.timeout);
        let f = |fault: Fault| fault.into_error(&socket, timeout);
        // Until the reply is read through, the connection cannot carry another request.
        self.open = false;
        self.send(method, path, body.as_ref(), false).map_err(|e| f(Fault::Io(e)))?;
        let head = read_head(&mut self.r, method == "HEAD").map_err(f)?;
        let mut raw = match head.framing {
            Framing::Length(n) => Vec::with_capacity(n.min(1 << 20) as usize),
            _ => Vec::new(),
        };
        let mut body = Body { r: &mut self.r, framing: head.framing };
        body.read_to_end(&mut raw).map_err(|e| f(Fault::from_body(e)))?;
        self.open = !head.close && !matches!(head.framing, Framing::UntilClose);
        Ok(Reply { status: head.status, body: text(raw), server_ms: head.server_ms })
    }

    /// Writes the request in one write (head and a small body leave in one segment).
    fn send(&mut self, method: &str, path: &str, body: &[u8], close: bool) -> io::Result<()> {
        let mut out = request_head(method, path, body.len(), close).into_bytes();
        out.extend_from_slice(body);
        self.r.get_mut().write_all(&out)
    }
}

/// Bytes as text, without a copy when they are UTF-8 (invalid sequences replaced).
fn text(raw: Vec<u8>) -> String {
    String::from_utf8(raw).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn request_head(method: &str, path: &str, body_len: usize, close: bool) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    if body_len > 0 || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {body_len}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

/// What went wrong, before the socket is known to the message.
#[derive(Debug)]
enum Fault {
    Io(io::Error),
    Closed,
    Bad(String),
}

impl Fault {
    /// A body read's error: framing problems are the reply's fault, not the connection's.
    fn from_body(e: io::Error) -> Fault {
        match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => Fault::Bad(e.to_string()),
            _ => Fault::Io(e),
        }
    }

    fn into_error(self, socket: &Path, timeout: Option<Duration>) -> Error {
        let socket = socket.to_owned();
        match self {
            Fault::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Error::Timeout { socket, after: timeout.unwrap_or_default() }
            }
            Fault::Io(source) => Error::Io { socket, source },
            Fault::Closed => Error::NoReply { socket },
            Fault::Bad(what) => Error::Protocol { socket, what },
        }
    }
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Fault {
        Fault::Io(e)
    }
}

/// How the body of a reply ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked: this many bytes are left in the current chunk (0: a size line comes next);
    /// `done` after the last chunk and its trailers.
    Chunked { left: u64, done: bool },
    /// Neither length nor chunks: the body ends when the daemon closes.
    UntilClose,
}

#[derive(Debug)]
struct Head {
    status: u16,
    framing: Framing,
    /// The daemon closes the connection after this reply.
    close: bool,
    server_ms: Option<f64>,
    content_type: Option<String>,
}

/// The longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Reads a response head (skipping 1xx interim ones). `Closed` when the connection ends before
/// the first byte.
fn read_head(r: &mut impl BufRead, head_request: bool) -> Result<Head, Fault> {
    loop {
        let mut buf = Vec::new();
        loop {
            let n = r.by_ref().take((MAX_HEAD - buf.len()) as u64).read_until(b'\n', &mut buf)?;
            if n == 0 {
                return Err(match buf.len() {
                    0 => Fault::Closed,
                    MAX_HEAD => Fault::Bad(format!("the reply's head is longer than {MAX_HEAD} bytes")),
                    n => Fault::Bad(format!("the reply ends inside its head ({n} bytes)")),
                });
            }
            if buf.ends_with(b"\n\r\n") || buf.ends_with(b"\n\n") {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut headers);
        let first_line = || String::from_utf8_lossy(buf.split(|b| *b == b'\n').next().unwrap_or_default()).trim_end().to_owned();
        match res.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(Fault::Bad(format!("incomplete reply head after {:?}", first_line()))),
            Err(e) => return Err(Fault::Bad(format!("not an HTTP reply ({e}): {:?}", first_line()))),
        }
        let status = res.code.unwrap_or_default();
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let (mut length, mut chunked, mut close, mut server_ms, mut content_type) = (None, false, res.version == Some(0), None, None);
        for h in res.headers.iter() {
            let value = String::from_utf8_lossy(h.value);
            if h.name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<u64>().map_err(|_| Fault::Bad(format!("bad Content-Length {value:?}")))?);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                close = value.to_ascii_lowercase().contains("close");
            } else if h.name.eq_ignore_ascii_case("server-timing") && server_ms.is_none() {
                server_ms = server_timing(&value);
            } else if h.name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.trim().to_owned());
            }
        }
        let framing = if head_request || status == 204 || status == 304 {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked { left: 0, done: false }
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        return Ok(Head { status, framing, close, server_ms, content_type });
    }
}

/// The first `dur=` of a Server-Timing value such as `hnsd;dur=1.234` (ms).
fn server_timing(value: &str) -> Option<f64> {
    value.split([';', ',']).find_map(|p| p.trim().strip_prefix("dur=")).and_then(|d| d.trim().trim_matches('"').parse().ok())
}

/// A reply body as it arrives, by its framing.
struct Body<R> {
    r: R,
    framing: Framing,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn early_end(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg.to_owned())
}

impl<R: BufRead> Body<R> {
    /// A chunk's size line, then (after the last chunk) the trailers up to the empty line.
    fn next_chunk(&mut self) -> io::Result<u64> {
        let mut line = Vec::new();
        if self.r.by_ref().take(1024).read_until(b'\n', &mut line)? == 0 {
            return Err(early_end("the reply ends before its last chunk"));
        }
        let size = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, size))) => size,
            _ => return Err(bad(&format!("bad chunk size line {:?}", String::from_utf8_lossy(&line).trim_end()))),
        };
        if size == 0 {
            loop {
                line.clear();
                if self.r.by_ref().take(MAX_HEAD as u64).read_until(b'\n', &mut line)? == 0 {
                    return Err(early_end("the reply ends inside its trailers"));
                }
                if line == b"\r\n" || line == b"\n" {
                    break;
                }
            }
        }
        Ok(size)
    }
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        match self.framing {
            Framing::Length(0) | Framing::Chunked { done: true, .. } => Ok(0),
            Framing::UntilClose => self.r.read(out),
            Framing::Length(left) => {
                let max = out.len().min(left.try_into().unwrap_or(usize::MAX));
                let n = self.r.read(&mut out[..max])?;
                if n == 0 {
                    return Err(early_end(&format!("the reply ends {left} bytes before its Content-Length")));
                }
                self.framing = Framing::Length(left - n as u64);
                Ok(n)
            }
            Framing::Chunked { left, .. } => {
                let left = if left == 0 { self.next_chunk()? } else { left };
                if left == 0 {
                    self.framing = Framing::Chunked { left: 0, done: true };
                    return Ok(0);
                }
                let max = out.len().min(left.try_into().unwrap_or(usize::MAX));
                let n = self.r.read(&mut out[..max])?;
                if n == 0 {
                    return Err(early_end("the reply ends inside a chunk"));
                }
                let left = left - n as u64;
                if left == 0 {
                    let mut end = [0u8; 2];
                    self.r.read_exact(&mut end)?;
                    if &end != b"\r\n" {
                        return Err(bad("a chunk does not end with CRLF"));
                    }
                }
                self.framing = Framing::Chunked { left, done: false };
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    /// Parses a whole reply from bytes: (status, body, server ms, reusable connection).
    fn parse(raw: &[u8]) -> Result<(u16, String, Option<f64>, bool), Fault> {
        let mut r = raw;
        let head = read_head(&mut r, false)?;
        let mut body = Body { r: &mut r, framing: head.framing };
        let mut out = Vec::new();
        body.read_to_end(&mut out).map_err(Fault::from_body)?;
        let reusable = !head.close && head.framing != Framing::UntilClose;
        Ok((head.status, String::from_utf8_lossy(&out).into_owned(), head.server_ms, reusable))
    }

    fn bad_text(raw: &[u8]) -> String {
        match parse(raw) {
            Err(Fault::Bad(what)) => what,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn status_line_and_length() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA").unwrap();
        assert_eq!(r, (200, "ok".to_owned(), None, true));
        let r = parse(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(r, (404, String::new(), None, false));
        // HTTP/1.0 closes unless told otherwise; no length: the body runs to the end.
        let r = parse(b"HTTP/1.0 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!(r, (200, "all of it".to_owned(), None, false));
        // 204 has no body whatever follows; a 100 Continue before the reply is skipped.
        let r = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(r, (204, String::new(), None, true));
        // Bare LF line ends are accepted.
        assert_eq!(parse(b"HTTP/1.1 201 Created\nContent-Length: 1\n\nx").unwrap().1, "x");
    }

    #[test]
    fn malformed_replies() {
        assert!(bad_text(b"garbage\r\n\r\n").starts_with("not an HTTP reply"), "{}", bad_text(b"garbage\r\n\r\n"));
        assert!(bad_text(b"HTTP/1.1 abc OK\r\n\r\n").contains("HTTP/1.1 abc OK"));
        assert!(bad_text(b"HTTP/1.1 200 OK\r\nContent-Le").starts_with("the reply ends inside its head"));
        assert_eq!(bad_text(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), "bad Content-Length \"x\"");
        assert_eq!(bad_text(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok"), "the reply ends 3 bytes before its Content-Length");
        // Nothing at all: the daemon closed without answering.
        assert!(matches!(parse(b""), Err(Fault::Closed)));
        let long = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &vec![b'a'; MAX_HEAD]].concat();
        assert!(bad_text(&long).contains("longer than"));
    }

    #[test]
    fn chunked_bodies() {
        let r = parse(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r, (503, "abcde".to_owned(), None, true));
        // Chunk extensions, upper-case hex, trailers; the chunked framing wins over a length.
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nA;x=y\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n").unwrap();
        assert_eq!(r.1, "0123456789");
        assert_eq!(bad_text(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), "bad chunk size line \"zz\"");
        assert_eq!(bad_text(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"), "the reply ends inside a chunk");
        assert_eq!(bad_text(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY0\r\n\r\n"), "a chunk does not end with CRLF");
        assert_eq!(bad_text(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"), "the reply ends before its last chunk");
    }

    #[test]
    fn server_timing_header() {
        let r = parse(b"HTTP/1.1 201 Created\r\nserver-timing: hnsd;dur=1.250\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert_eq!(r.2, Some(1.25));
        assert_eq!(server_timing("db;desc=\"x\";dur=\"3\", app;dur=4"), Some(3.0));
        assert_eq!(server_timing("miss"), None);
        assert_eq!(server_timing("hnsd;dur=fast"), None);
    }

    #[test]
    fn request_heads() {
        assert_eq!(request_head("GET", "/healthz", 0, true), "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        assert_eq!(
            request_head("POST", "/networks", 0, false),
            "POST /networks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(request_head("DELETE", "/x", 3, false).contains("Content-Length: 3\r\n"));
    }

    /// A daemon on a fresh socket: for each connection, `serve` gets the stream.
    fn daemon(conns: usize, serve: impl Fn(UnixStream) + Send + 'static) -> (PathBuf, JoinHandle<()>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("hns-client-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            for _ in 0..conns {
                serve(listener.accept().unwrap().0);
            }
        });
        (path, handle)
    }

    /// Reads one request head and its Content-Length body; None at the end of the connection.
    fn read_request(r: &mut impl BufRead) -> Option<String> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            text.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let len = text.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())).unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        Some(text + &String::from_utf8(body).unwrap())
    }

    #[test]
    fn one_request_per_connection() {
        let (path, server) = daemon(1, |s| {
            let mut r = BufReader::new(s);
            let req = read_request(&mut r).unwrap();
            assert!(req.starts_with("POST /endpoints HTTP/1.1\r\n") && req.contains("Connection: close\r\n") && req.ends_with("{\"a\":1}"), "{req}");
            r.get_mut().write_all(b"HTTP/1.1 201 Created\r\nServer-Timing: hnsd;dur=0.5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n").unwrap();
        });
        let r = request(&path, "POST", "/endpoints", r#"{"a":1}"#, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(r, Reply { status: 201, body: "{}".into(), server_ms: Some(0.5) });
        assert!(r.is_success());
        server.join().unwrap();
    }

    #[test]
    fn kept_alive_connection() {
        let (path, server) = daemon(2, |s| {
            let mut r = BufReader::new(s);
            let mut n = 0;
            while let Some(req) = read_request(&mut r) {
                n += 1;
                assert!(!req.contains("Connection: close"), "{req}");
                let reply: &[u8] = match n {
                    1 => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none",
                    2 => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
                    // The third says it closes: the fourth request goes on a new connection.
                    _ => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nthree",
                };
                r.get_mut().write_all(reply).unwrap();
                if n == 3 {
                    break;
                }
            }
        });
        let mut c = Conn::connect(&path, Some(Duration::from_secs(5))).unwrap();
        let bodies: Vec<String> = (0..4).map(|_| c.request("GET", "/x", "").unwrap().body).collect();
        assert_eq!(bodies, ["one", "two", "three", "one"]);
        drop(c);
        server.join().unwrap();
    }

    #[test]
    fn daemon_that_closes_without_answering() {
        let (path, server) = daemon(1, |s| {
            let mut r = BufReader::new(s);
            read_request(&mut r).unwrap();
        });
        let e = request(&path, "GET", "/healthz", "", Some(Duration::from_secs(5))).unwrap_err();
        assert!(matches!(e, Error::NoReply { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("request on {} failed: the connection was closed without a reply", path.display()));
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::UnexpectedEof);
        server.join().unwrap();
    }

    #[test]
    fn an_early_answer_to_a_huge_body_is_returned() {
        let (path, server) = daemon(1, |s| {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            r.get_mut().write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig").unwrap();
        });
        let r = request(&path, "POST", "/networks", vec![b'x'; 8 << 20], Some(Duration::from_secs(5))).unwrap();
        assert_eq!((r.status, r.body.as_str()), (413, "big"));
        server.join().unwrap();
    }

    #[test]
    fn timeouts_and_connect_errors_name_the_socket() {
        let (path, server) = daemon(1, |s| {
            let mut r = BufReader::new(s);
            read_request(&mut r).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        let e = request(&path, "GET", "/slow", "", Some(Duration::from_millis(100))).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(e.to_string().ends_with("failed: no answer within 100ms"), "{e}");
        server.join().unwrap();

        let e = http_get(Path::new("/nonexistent/d.sock"), "/").unwrap_err();
        assert!(matches!(&e, Error::Connect { source, .. } if source.kind() == io::ErrorKind::NotFound), "{e:?}");
        assert!(e.to_string().starts_with("cannot connect to /nonexistent/d.sock: "), "{e}");
    }

    #[test]
    fn streamed_body_arrives_line_by_line() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (path, server) = daemon(1, move |s| {
            let mut r = BufReader::new(s);
            read_request(&mut r).unwrap();
            r.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n").unwrap();
            // The second line only once the client has seen the first.
            rx.recv().unwrap();
            r.get_mut().write_all(b"7\r\nsecond\n\r\n0\r\n\r\n").unwrap();
        });
        let s = stream(&path, "GET", "/events", "", Some(Duration::from_secs(5))).unwrap();
        assert_eq!((s.status, s.content_type.as_deref()), (200, Some("application/x-ndjson")));
        let mut lines = BufReader::new(s);
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        assert_eq!(line, "first\n");
        tx.send(()).unwrap();
        line.clear();
        lines.read_line(&mut line).unwrap();
        assert_eq!(line, "second\n");
        line.clear();
        assert_eq!(lines.read_line(&mut line).unwrap(), 0);
        server.join().unwrap();
    }
}
