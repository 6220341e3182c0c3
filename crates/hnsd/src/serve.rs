//! HTTP/1 with limits: the API socket, the Docker plugin sockets (unix) and the web view (TCP,
//! `--web-listen`).
//!
//! `axum::serve` has no limits: a client that connects and sends nothing holds a task, buffers
//! and a file descriptor forever, and 20 000 of them made hnsd run out of descriptors. Here:
//! - at most `max_connections` connections are served at once; beyond that hnsd stops
//!   accepting and new clients wait in the kernel's listen queue ([`LISTEN_BACKLOG`]);
//! - a client has `header_timeout` to send a request's headers, and the same time between two
//!   requests on a kept-alive connection (hyper restarts the header timer when it waits for the
//!   next request), then the connection is closed;
//! - a request's body must arrive within `body_timeout` of its headers (408).
//!
//! Handlers are not cut short: an engine operation dropped halfway would leave kernel steps
//! undone until the reconciler's next pass.
//!
//! After a burst of connections, freed memory is handed back to the kernel ([`Load`]).

use std::future::Future;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

/// A listening socket [`Server::serve`] accepts connections from.
pub trait Listener: Send {
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn accept_conn(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Listener for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept_conn(&self) -> std::io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Listener for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept_conn(&self) -> std::io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Connections the kernel queues while hnsd serves `max_connections` (tokio's default is 1024).
/// Short, so that a client waiting behind a flood of idle connections is accepted as soon as
/// the first slots free up, about one header timeout later.
pub const LISTEN_BACKLOG: i32 = 128;
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Limits of one server (the API socket, or all Docker plugin sockets together).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

/// The connection slots and load of one server, shared by its sockets.
pub struct Server {
    limits: Limits,
    slots: Arc<Semaphore>,
    load: Arc<Load>,
}

impl Server {
    pub fn new(limits: Limits) -> Server {
        Server { limits, slots: Arc::new(Semaphore::new(limits.max_connections)), load: Arc::new(Load::default()) }
    }

    /// Serves `router` on `listener` until `shutdown` completes, then lets requests in flight
    /// finish (for at most [`SHUTDOWN_GRACE`]).
    pub async fn serve(&self, listener: impl Listener, router: Router, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let body_timeout = self.limits.body_timeout;
        let service = tower::ServiceExt::map_request(router, move |req: axum::http::Request<hyper::body::Incoming>| {
            req.map(|b| with_deadline(Body::new(b), body_timeout))
        });
        tokio::pin!(shutdown);
        loop {
            // A slot first: at the cap, connections stay in the listen queue, not in hnsd.
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let stream = tokio::select! {
                r = listener.accept_conn() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and the like: the condition passes when connections close.
                        tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.limits.header_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()));
            let conn = graceful.watch(conn);
            let load = self.load.clone();
            load.opened();
            tokio::spawn(async move {
                // Errors here are the client's (it went away, or timed out): nothing to report.
                let _ = conn.await;
                drop(permit);
                load.closed();
            });
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
            tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
}

/// Binds a unix socket with [`LISTEN_BACKLOG`]. The caller checks for a live owner first.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).context("create a unix socket")?;
    socket.bind(&SockAddr::unix(path)?).with_context(|| format!("bind {}", path.display()))?;
    socket.listen(LISTEN_BACKLOG).with_context(|| format!("listen on {}", path.display()))?;
    socket.set_nonblocking(true)?;
    Ok(UnixListener::from_std(StdUnixListener::from(std::os::fd::OwnedFd::from(socket)))?)
}

/// The error a request body yields when it does not arrive in time.
#[derive(Debug)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body did not arrive within {:?} of its headers", self.0)
    }
}

impl std::error::Error for BodyTimeout {}

/// The [`BodyTimeout`] somewhere in `e`'s chain of sources, if the body timed out.
pub fn body_timeout<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimeout> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<BodyTimeout>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// `body`, failing with [`BodyTimeout`] once `limit` has passed (streamed, not buffered: the
/// size limit stays with the handlers).
fn with_deadline(body: Body, limit: Duration) -> Body {
    let deadline = tokio::time::Instant::now() + limit;
    let frames = futures::stream::unfold(Some(body.into_data_stream()), move |stream| async move {
        let mut stream = stream?;
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(frame)) => Some((frame, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((Err(axum::Error::new(BodyTimeout(limit))), None)),
        }
    });
    Body::from_stream(frames)
}

/// Live connections and the peak since memory was last handed back.
///
/// Each connection's buffers are freed when it closes, but glibc keeps freed memory in its
/// per-thread arenas: after 15 000 idle connections closed, hnsd's RSS stayed at 310 MB.
/// `malloc_trim` returns the free pages of every arena; it walks the heap, so it runs once the
/// connections of a burst (at least [`TRIM_PEAK`]) have mostly closed, not on every close.
#[derive(Default)]
struct Load {
    live: AtomicUsize,
    peak: AtomicUsize,
}

const TRIM_PEAK: usize = 64;

impl Load {
    fn opened(&self) {
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(live, Ordering::Relaxed);
    }

    fn closed(&self) {
        let live = self.live.fetch_sub(1, Ordering::Relaxed) - 1;
        let peak = self.peak.load(Ordering::Relaxed);
        if peak >= TRIM_PEAK && live <= peak / 16 && self.peak.compare_exchange(peak, live, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tokio::task::spawn_blocking(trim_heap);
        }
    }
}

/// Hands free heap memory back to the kernel (glibc only; other allocators do it themselves).
/// Also run after each reconcile pass (main.rs): its kernel dumps (every link of the host,
/// thousands at scale) are parsed into short-lived allocations that glibc would keep.
pub(crate) fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // Safety: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_a_burst_has_drained() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _g = rt.enter();
        let load = Load::default();
        for _ in 0..100 {
            load.opened();
        }
        for _ in 0..93 {
            load.closed();
        }
        assert_eq!(load.peak.load(Ordering::Relaxed), 100, "7 of 100 still open: no trim yet");
        load.closed();
        assert_eq!(load.peak.load(Ordering::Relaxed), 6, "6 <= 100/16: trimmed, peak reset to the live count");
    }
}
