//! The sockets of one listen address: UDP served by hickory-server, TCP by a
//! small loop of our own.
//!
//! UDP uses hickory-server's `Server` as is: receive loop, one task per
//! query, header checks, FORMERR for bodies it cannot parse, truncation of
//! answers to the client's buffer size.
//!
//! TCP does not use `Server::register_listener`, because that accepts
//! without limit: every connection gets a task and a buffer for as long as
//! its timeout allows, so a client opening thousands of idle connections
//! takes memory and file descriptors from the whole daemon (the class of
//! problem behind aardvark-dns's CVE-2024-8418). The loop below is the
//! smallest thing with three hard bounds: at most `max_tcp_connections`
//! connections across all listeners (more are closed at accept), at most
//! `tcp_idle_timeout` to deliver each complete query or to take each answer,
//! and at most [`MAX_TCP_QUERY`] bytes per query. Each connection runs in
//! its own task, so one slow client never holds up another. Parsing and
//! answering are still hickory's and the same handler's as for UDP.
//!
//! Sockets are bound with `IP_FREEBIND`: binding succeeds even while the
//! address is not (yet) usable, e.g. an IPv6 gateway address still in
//! duplicate address detection right after the bridge got it, and the
//! listener receives as soon as the address is up. Bind errors that remain
//! are real conflicts (another server on that address and port).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::MessageType;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::debug;

use crate::handler::Handler;
use crate::{DnsError, Shared};

/// Largest query accepted over TCP. Real queries are a few hundred bytes
/// even with EDNS options; the protocol's own limit (64 KiB) would let every
/// connection pin that much memory.
pub(crate) const MAX_TCP_QUERY: usize = 4096;

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

/// Binds the UDP and TCP sockets of one address. Must run inside a tokio
/// runtime.
pub(crate) fn bind(net_id: &str, addr: SocketAddr) -> Result<Sockets, DnsError> {
    let failed = |proto, source| DnsError::Bind {
        net_id: net_id.into(),
        addr,
        proto,
        source,
    };
    let udp = socket(addr, Type::DGRAM)
        .and_then(|s| UdpSocket::from_std(s.into()))
        .map_err(|e| failed("UDP", e))?;
    let tcp = socket(addr, Type::STREAM)
        .and_then(|s| {
            s.listen(1024)?;
            TcpListener::from_std(s.into())
        })
        .map_err(|e| failed("TCP", e))?;
    Ok(Sockets { udp, tcp })
}

fn socket(addr: SocketAddr, kind: Type) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    if kind == Type::STREAM {
        // Lets a listener come back right after it was closed, while old
        // connections linger in TIME_WAIT. (Not for UDP: there it would let
        // a second socket share the address.)
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A running listener. Dropping it also stops it (both the hickory server
/// and our join set abort their tasks on drop); `stop` additionally waits
/// until the sockets are closed.
pub(crate) struct Listener {
    udp: Server<Handler>,
    tcp: JoinSet<()>,
}

impl Listener {
    pub fn start(sockets: Sockets, handler: Handler, shared: &Arc<Shared>) -> Listener {
        let mut udp = Server::new(handler.clone());
        udp.register_socket(sockets.udp);
        let mut tcp = JoinSet::new();
        tcp.spawn(serve_tcp(sockets.tcp, handler, shared.clone()));
        Listener { udp, tcp }
    }

    pub async fn stop(mut self) {
        self.tcp.shutdown().await;
        if let Err(error) = self.udp.shutdown_gracefully().await {
            debug!(%error, "DNS UDP listener ended with an error");
        }
    }
}

async fn serve_tcp(listener: TcpListener, handler: Handler, shared: Arc<Shared>) {
    // Dropped (aborting every connection) when this task is aborted.
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!(%error, "DNS TCP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = shared.tcp_slots.clone().try_acquire_owned() else {
            debug!(%peer, "DNS TCP connection limit reached, closing the new connection");
            shared.stats.dropped();
            continue;
        };
        connections.spawn(serve_connection(
            stream,
            peer,
            handler.clone(),
            shared.clone(),
            slot,
        ));
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Handler,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
) {
    let idle = shared.cfg.tcp_idle_timeout;
    loop {
        let query = match timeout(idle, read_query(&mut stream)).await {
            Ok(Ok(Some(query))) => query,
            // Closed by the client, or idle: the normal end of a connection.
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(error)) => {
                debug!(%peer, %error, "DNS TCP query rejected, closing the connection");
                shared.stats.dropped();
                return;
            }
        };
        let request = match Request::from_bytes(query, peer, Protocol::Tcp) {
            Ok(request) if request.metadata.message_type == MessageType::Query => request,
            _ => {
                debug!(%peer, "DNS TCP message is not a query, closing the connection");
                shared.stats.dropped();
                return;
            }
        };
        let reply = TcpReply::default();
        handler
            .handle_request::<_, TokioTime>(&request, reply.clone())
            .await;
        let Some(answer) = reply.0.lock().expect("dns tcp reply poisoned").take() else {
            return;
        };
        if !matches!(
            timeout(idle, write_answer(&mut stream, &answer)).await,
            Ok(Ok(()))
        ) {
            shared.stats.dropped();
            return;
        }
    }
}

/// One length-prefixed query; `None` on a clean end of stream.
async fn read_query(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if !(12..=MAX_TCP_QUERY).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("query of {len} bytes"),
        ));
    }
    let mut query = vec![0u8; len];
    stream.read_exact(&mut query).await?;
    Ok(Some(query))
}

async fn write_answer(stream: &mut TcpStream, answer: &[u8]) -> io::Result<()> {
    let len = u16::try_from(answer.len()).map_err(io::Error::other)?;
    let mut framed = Vec::with_capacity(answer.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(answer);
    stream.write_all(&framed).await
}

/// Catches the encoded answer of the handler so the connection loop can
/// write it (hickory's own `ResponseHandle` needs its TCP stream machinery).
#[derive(Clone, Default)]
struct TcpReply(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for TcpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut buf = Vec::with_capacity(512);
        let info = {
            let mut encoder = BinEncoder::new(&mut buf);
            encoder.set_max_size(u16::MAX);
            response.destructive_emit(&mut encoder)?
        };
        *self.0.lock().expect("dns tcp reply poisoned") = Some(buf);
        Ok(info)
    }
}
