//! Forwarding names a network does not know to its upstream servers.
//!
//! Rules: servers are tried strictly in the configured order, each gets
//! `upstream_timeout` (500 ms by default) before the next one is tried, an
//! answer with the TC bit is fetched again from the same server over TCP,
//! and only NOERROR/NXDOMAIN count as answers (SERVFAIL, REFUSED and the
//! like move on to the next server). Every exchange uses a fresh socket
//! with a kernel-chosen port and hickory's random query id, and a reply is
//! only accepted if its id and question match, which makes spoofing from
//! off-path hosts impractical.
//!
//! Why not hickory-resolver: it is a stub resolver for applications. It
//! reorders servers by measured latency and queries several at once, and it
//! hands back a lookup result, not the upstream's message; a forwarder has to
//! relay the response code and the authority section (the SOA that tells
//! clients how long to cache a negative answer). The one exchange we need —
//! one datagram out, one back, maybe once more over TCP — is a few dozen
//! lines on tokio sockets.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_server::proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::cache::{Answer, Cache, Key};

/// The EDNS buffer size we announce upstream: the DNS flag day 2020 value,
/// which avoids IP fragmentation and still fits almost every answer.
pub(crate) const EDNS_PAYLOAD: u16 = 1232;

/// Forwarded queries waiting for an upstream at the same time, across all
/// networks. Each holds a socket for up to one timeout per upstream, so
/// without a bound a container asking for random names while the upstreams
/// are slow could run the daemon out of file descriptors. Beyond it, queries
/// get SERVFAIL at once. (256 sustains 256 000 forwards/s at 1 ms upstream
/// latency, or 256/s when every upstream is dead.)
pub(crate) const MAX_IN_FLIGHT: usize = 256;

pub(crate) struct Forwarder {
    timeout: Duration,
    cache: Mutex<Cache>,
    in_flight: Semaphore,
}

/// The result of a successful forward: the answer, its age in the cache in
/// seconds (0 when fresh) and whether it came from the cache.
pub(crate) struct Forwarded {
    pub answer: Arc<Answer>,
    pub age: u32,
    pub from_cache: bool,
}

impl Forwarder {
    pub fn new(timeout: Duration, max_cache_entries: usize, max_in_flight: usize) -> Forwarder {
        Forwarder {
            timeout,
            cache: Mutex::new(Cache::new(max_cache_entries)),
            in_flight: Semaphore::new(max_in_flight),
        }
    }

    /// Answers `query` from the cache or from the first upstream that gives a
    /// usable answer; `None` when none did.
    pub async fn forward(&self, upstreams: &Arc<[SocketAddr]>, query: &Query) -> Option<Forwarded> {
        let key = Key {
            name: query.name.clone(),
            rtype: query.query_type,
            class: query.query_class,
            upstreams: upstreams.clone(),
        };
        if let Some((answer, age)) = self
            .cache
            .lock()
            .expect("dns cache poisoned")
            .get(&key, Instant::now())
        {
            return Some(Forwarded {
                answer,
                age,
                from_cache: true,
            });
        }

        let Ok(_slot) = self.in_flight.try_acquire() else {
            debug!(name = %query.name, "DNS: too many forwarded queries in flight, refusing this one");
            return None;
        };
        let request = upstream_request(query);
        let wire = request.to_vec().ok()?;
        for server in upstreams.iter() {
            match self.ask(*server, &wire, &request).await {
                Ok(reply)
                    if matches!(
                        reply.metadata.response_code,
                        ResponseCode::NoError | ResponseCode::NXDomain
                    ) =>
                {
                    let answer = Arc::new(Answer {
                        rcode: reply.metadata.response_code,
                        answers: reply.answers,
                        authorities: reply.authorities,
                        additionals: reply.additionals,
                    });
                    if let Some(ttl) = answer.cache_ttl() {
                        self.cache.lock().expect("dns cache poisoned").insert(
                            key,
                            answer.clone(),
                            ttl,
                            Instant::now(),
                        );
                    }
                    return Some(Forwarded {
                        answer,
                        age: 0,
                        from_cache: false,
                    });
                }
                Ok(reply) => {
                    debug!(%server, rcode = %reply.metadata.response_code, name = %query.name, "DNS upstream refused to answer, trying the next one")
                }
                Err(error) => {
                    debug!(%server, %error, name = %query.name, "DNS upstream failed, trying the next one")
                }
            }
        }
        None
    }

    /// One server: UDP, then TCP if the UDP answer was truncated. Each leg has
    /// its own timeout.
    async fn ask(&self, server: SocketAddr, wire: &[u8], request: &Message) -> io::Result<Message> {
        let reply = within(self.timeout, udp_exchange(server, wire, request)).await?;
        if !reply.metadata.truncation {
            return Ok(reply);
        }
        debug!(%server, "DNS upstream answer truncated, asking again over TCP");
        within(self.timeout, tcp_exchange(server, wire, request)).await
    }
}

/// The query we send upstream: the client's question (with its original
/// case), recursion desired, EDNS with our buffer size, no DNSSEC OK bit
/// (we do not validate, so cached answers do not depend on it).
fn upstream_request(query: &Query) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    message.set_edns(edns);
    message
}

async fn within<T>(
    limit: Duration,
    exchange: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, exchange).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {limit:?}"),
        )
    })?
}

async fn udp_exchange(server: SocketAddr, wire: &[u8], request: &Message) -> io::Result<Message> {
    let local: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((local, 0)).await?;
    // connect(): the kernel drops datagrams from anyone else, and an ICMP
    // port-unreachable surfaces as an error at once instead of a timeout.
    socket.connect(server).await?;
    socket.send(wire).await?;
    let mut buf = vec![0u8; usize::from(EDNS_PAYLOAD).max(4096)];
    loop {
        let len = socket.recv(&mut buf).await?;
        match Message::from_vec(&buf[..len]) {
            Ok(reply) if is_reply_to(&reply, request) => return Ok(reply),
            _ => debug!(%server, "DNS upstream sent an unrelated or malformed datagram, ignored"),
        }
    }
}

async fn tcp_exchange(server: SocketAddr, wire: &[u8], request: &Message) -> io::Result<Message> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(wire.len()).map_err(io::Error::other)?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; len.into()];
    stream.read_exact(&mut buf).await?;
    let reply =
        Message::from_vec(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if !is_reply_to(&reply, request) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TCP answer does not match the question",
        ));
    }
    Ok(reply)
}

fn is_reply_to(reply: &Message, request: &Message) -> bool {
    reply.metadata.id == request.metadata.id
        && reply.metadata.message_type == MessageType::Response
        && reply.queries.len() == 1
        && request.queries.first().is_some_and(|q| {
            let r = &reply.queries[0];
            // Name equality ignores case, so a server that lowercases the
            // question is still accepted.
            r.name == q.name && r.query_type == q.query_type && r.query_class == q.query_class
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::rr::{Name, RecordType};

    /// Sockets only in a private network namespace, like every test here.
    fn netns_runtime() -> tokio::runtime::Runtime {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): tests need root");
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn forwards_in_flight_are_bounded() {
        netns_runtime().block_on(async {
            let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let upstreams: Arc<[SocketAddr]> = Arc::from(vec![silent.local_addr().unwrap()]);
            let fwd = Arc::new(Forwarder::new(Duration::from_secs(1), 0, 1));
            let q = Query::query(Name::from_ascii("a.example.").unwrap(), RecordType::A);

            let first = {
                let (fwd, upstreams, q) = (fwd.clone(), upstreams.clone(), q.clone());
                tokio::spawn(async move { fwd.forward(&upstreams, &q).await.is_none() })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = Instant::now();
            assert!(fwd.forward(&upstreams, &q).await.is_none());
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "over the bound fails at once, took {:?}",
                started.elapsed()
            );
            assert!(first.await.unwrap(), "the silent upstream never answers");

            // The slot is free again: this one waits for the upstream.
            let started = Instant::now();
            assert!(fwd.forward(&upstreams, &q).await.is_none());
            assert!(
                started.elapsed() >= Duration::from_millis(900),
                "{:?}",
                started.elapsed()
            );
        });
    }
}
