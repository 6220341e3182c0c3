//! Test helpers: a private network namespace per test, a DNS client built on
//! hickory-proto, and fake upstream servers whose behaviour the test picks.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hns_dns::{NetworkView, Record as Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

/// Moves the calling thread into a new, empty network namespace with `lo`
/// up, then builds the runtime (its worker threads inherit the namespace).
/// Must be the first thing a test does, before any thread is spawned.
pub fn netns_runtime() -> tokio::runtime::Runtime {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET) failed: these tests need root");
    ip(&["link", "set", "lo", "up"]);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `ip` in the test's namespace (never call before `netns_runtime`).
pub fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn v(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn view(
    suffix: Option<&str>,
    records: &[(&str, &[&str])],
    upstreams: &[SocketAddr],
) -> NetworkView {
    NetworkView {
        suffix: suffix.map(String::from),
        records: records
            .iter()
            .map(|(name, addrs)| Endpoint {
                name: name.to_string(),
                addrs: addrs.iter().map(|a| v(a)).collect(),
            })
            .collect(),
        upstreams: upstreams.to_vec(),
        clients: everyone(),
    }
}

/// Every source: most tests here are about other things and query from
/// whatever address the test namespace picks (`isolation.rs` tests the
/// source filter).
pub fn everyone() -> Vec<ipnet::IpNet> {
    vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]
}

pub fn query(name: &str, rtype: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

fn unspecified_for(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Sends raw bytes over UDP and returns the first datagram back, if any
/// arrives within `wait`.
pub async fn udp_raw(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(unspecified_for(server)).await.unwrap();
    sock.connect(server).await.ok()?;
    sock.send(bytes).await.ok()?;
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// One query over UDP; panics if no (matching) answer comes within 3 s.
pub async fn ask_udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    ask_udp_msg(server, &query(name, rtype, true)).await
}

/// Like a stub resolver, asks again when no answer comes within 2 s (three tries): these tests
/// check what the answers say; that no query is lost is `a_burst_of_queries_loses_none_while_endpoints_come_and_go`'s job (hnsd's discovery tests).
pub async fn ask_udp_msg(server: SocketAddr, q: &Message) -> Message {
    for _ in 0..3 {
        if let Some(m) = try_udp(server, q, Duration::from_secs(2)).await {
            return m;
        }
    }
    panic!("no UDP answer from {server} for {:?} in three tries", q.queries)
}

pub async fn try_udp(server: SocketAddr, q: &Message, wait: Duration) -> Option<Message> {
    let reply = udp_raw(server, &q.to_vec().unwrap(), wait).await?;
    let reply = Message::from_vec(&reply).expect("answer parses");
    assert_eq!(reply.metadata.id, q.metadata.id);
    Some(reply)
}

pub async fn ask_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let q = query(name, rtype, false);
    let mut s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(server))
        .await
        .unwrap()
        .unwrap();
    write_framed(&mut s, &q.to_vec().unwrap()).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(3), read_framed(&mut s))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, q.metadata.id);
    reply
}

pub async fn write_framed(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
    s.write_all(bytes).await
}

pub async fn read_framed(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = s.read_u16().await?;
    let mut buf = vec![0u8; len.into()];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

pub fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers.iter().filter_map(|r| r.data.ip_addr()).collect()
}

/// How a fake upstream behaves.
#[derive(Clone, Copy, Debug)]
pub enum Upstream {
    /// `*.example.test` A → 192.0.2.7 (TTL 60); `big.example.test` → 30 A
    /// records; anything else NXDOMAIN with a SOA (TTL 3600) — over UDP and TCP.
    Answers,
    /// Like `Answers` over TCP, but every UDP answer is an empty one with TC.
    TruncatesUdp,
    /// Receives over UDP and never answers (a dead server).
    Silent,
}

/// A fake upstream on `addr`, counting the queries it gets per protocol.
pub struct Fake {
    pub udp_queries: Arc<AtomicUsize>,
    pub tcp_queries: Arc<AtomicUsize>,
    _tasks: JoinSet<()>,
}

impl Fake {
    pub fn udp(&self) -> usize {
        self.udp_queries.load(Ordering::SeqCst)
    }
    pub fn tcp(&self) -> usize {
        self.tcp_queries.load(Ordering::SeqCst)
    }
}

pub async fn fake_upstream(addr: SocketAddr, mode: Upstream) -> Fake {
    let udp_queries = Arc::new(AtomicUsize::new(0));
    let tcp_queries = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    let udp = UdpSocket::bind(addr).await.unwrap();
    let count = udp_queries.clone();
    tasks.spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let reply = match mode {
                Upstream::Silent => continue,
                Upstream::Answers => answer(&q),
                Upstream::TruncatesUdp => {
                    let mut r = Message::response(q.metadata.id, OpCode::Query);
                    r.metadata.recursion_available = true;
                    r.metadata.truncation = true;
                    r.add_queries(q.queries.clone());
                    r
                }
            };
            let _ = udp.send_to(&reply.to_vec().unwrap(), peer).await;
        }
    });
    if !matches!(mode, Upstream::Silent) {
        let tcp = TcpListener::bind(addr).await.unwrap();
        let count = tcp_queries.clone();
        tasks.spawn(async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else {
                    continue;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    while let Ok(bytes) = read_framed(&mut s).await {
                        count.fetch_add(1, Ordering::SeqCst);
                        let q = Message::from_vec(&bytes).unwrap();
                        write_framed(&mut s, &answer(&q).to_vec().unwrap())
                            .await
                            .unwrap();
                    }
                });
            }
        });
    }
    Fake {
        udp_queries,
        tcp_queries,
        _tasks: tasks,
    }
}

fn answer(q: &Message) -> Message {
    let mut r = Message::response(q.metadata.id, OpCode::Query);
    r.metadata.message_type = MessageType::Response;
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_queries(q.queries.clone());
    let question = &q.queries[0];
    let name = question.name.to_ascii().to_ascii_lowercase();
    let zone = Name::from_ascii("example.test.").unwrap();
    if name == "big.example.test." && question.query_type == RecordType::A {
        for i in 1..=30 {
            r.add_answer(Record::from_rdata(
                question.name.clone(),
                60,
                RData::A(A::new(192, 0, 2, i)),
            ));
        }
    } else if zone.zone_of(&question.name) && question.query_type == RecordType::A {
        r.add_answer(Record::from_rdata(
            question.name.clone(),
            60,
            RData::A(A::new(192, 0, 2, 7)),
        ));
    } else {
        r.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(Name::root(), Name::root(), 1, 1800, 900, 604800, 3600);
        r.add_authority(Record::from_rdata(Name::root(), 3600, RData::SOA(soa)));
    }
    r
}
