//! Hostile input: garbage datagrams, truncated and oversized messages,
//! idle and over-limit TCP connections. Nothing panics, nothing leaks a
//! name, and the server keeps answering everyone else.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::*;
use hickory_server::proto::op::{Message, OpCode, ResponseCode};
use hickory_server::proto::rr::RecordType;
use hns_dns::{DnsConfig, DnsService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics outside the tests' own assertions, including inside tokio
/// tasks (which would otherwise be swallowed with the task). Tests run in
/// parallel, so a failing assertion of one must not count for the other.
fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("tests/")) {
                PANICS.fetch_add(1, SeqCst);
            }
            default(info);
        }));
    });
}

/// A deterministic xorshift generator: reproducible garbage without a
/// dependency.
struct Garbage(u64);
impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

const SECRET: [u8; 4] = [10, 5, 0, 5];

fn leaks_secret(reply: &[u8]) -> bool {
    reply.windows(4).any(|w| w == SECRET)
        || reply.windows(6).any(|w| w.eq_ignore_ascii_case(b"secret"))
}

async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[test]
fn garbage_over_udp_is_survived_without_leaking_names() {
    count_panics();
    let rt = netns_runtime();
    rt.block_on(async {
        let _upstream = fake_upstream(sa("127.0.0.9:53"), Upstream::Answers).await;
        let dns = DnsService::new(DnsConfig::default());
        let records: &[(&str, &[&str])] = &[("secret", &["10.5.0.5"])];
        dns.set_network(
            "n",
            &[v("127.0.0.2")],
            53,
            view(None, records, &[sa("127.0.0.9:53")]),
        )
        .await
        .unwrap();
        let server = sa("127.0.0.2:53");

        let mut rng = Garbage(0x9e3779b97f4a7c15);
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(server).await.unwrap();
        let valid = query("secret", RecordType::A, true).to_vec().unwrap();
        let mut header_only = valid[..12].to_vec(); // says one question, has none
        header_only[0] = 0x42;
        let mut response_bit = valid.clone();
        response_bit[2] |= 0x80;
        let mut two_questions = query("x.example.test", RecordType::A, false);
        two_questions.add_query(two_questions.queries[0].clone());
        let mut update = query("secret", RecordType::A, false);
        update.metadata.op_code = OpCode::Update;
        let mut padded_query = valid.clone();
        padded_query.resize(9000, 0xff);

        let mut datagrams: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x12, 0x34, 0x01],
            valid[..5].to_vec(),
            valid[..valid.len() - 3].to_vec(),
        ];
        datagrams.extend([
            header_only,
            response_bit,
            rng.bytes(9000),
            rng.bytes(65_000),
        ]);
        for _ in 0..2000 {
            let len = (rng.next() % 700) as usize;
            let mut d = rng.bytes(len);
            if len >= 3 && rng.next() & 1 == 0 {
                d[2] &= 0x7f; // look like a query, so more of it gets parsed
            }
            datagrams.push(d);
        }
        for d in &datagrams {
            let _ = sock.send(d).await;
        }
        // Drain whatever came back: headers at most, never the secret.
        let mut replies = 0;
        let mut buf = vec![0u8; 65536];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await
        {
            replies += 1;
            assert!(
                !leaks_secret(&buf[..n]),
                "a reply to garbage carries local data: {:?}",
                &buf[..n]
            );
        }
        eprintln!("{} garbage datagrams, {replies} replies", datagrams.len());

        // A real query padded to 9000 bytes: answered (it asks this network
        // about its own name) or dropped, but nothing else.
        if let Some(reply) = udp_raw(server, &padded_query, Duration::from_millis(500)).await {
            let m = Message::from_vec(&reply).unwrap();
            assert!(
                m.answers.is_empty() || addrs(&m) == vec![v("10.5.0.5")],
                "{m:?}"
            );
        }

        let m = ask_udp_msg(server, &two_questions).await;
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        let m = ask_udp_msg(server, &update).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        assert!(m.answers.is_empty());

        // Still answering, locally and upstream.
        assert_eq!(
            addrs(&ask_udp(server, "secret", RecordType::A).await),
            vec![v("10.5.0.5")]
        );
        assert_eq!(
            addrs(&ask_udp(server, "a.example.test", RecordType::A).await),
            vec![v("192.0.2.7")]
        );
        assert_eq!(PANICS.load(SeqCst), 0, "something panicked");
    });
}

#[test]
fn tcp_is_bounded_and_idle_clients_do_not_block_others() {
    count_panics();
    let rt = netns_runtime();
    rt.block_on(async {
        let cfg = DnsConfig {
            max_tcp_connections: 4,
            tcp_idle_timeout: Duration::from_secs(1),
            ..DnsConfig::default()
        };
        let dns = DnsService::new(cfg);
        dns.set_network(
            "n",
            &[v("127.0.0.2")],
            53,
            view(None, &[("secret", &["10.5.0.5"])], &[]),
        )
        .await
        .unwrap();
        let server = sa("127.0.0.2:53");

        // Two clients that hold a connection and send nothing / half a length.
        let mut silent = TcpStream::connect(server).await.unwrap();
        let mut half = TcpStream::connect(server).await.unwrap();
        half.write_all(&[0x00]).await.unwrap();
        let started = Instant::now();
        let m = ask_tcp(server, "secret", RecordType::A).await;
        assert_eq!(addrs(&m), vec![v("10.5.0.5")]);
        // Well under the idle timeout: nobody waited for the idle clients.
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "blocked by idle clients: {:?}",
            started.elapsed()
        );

        // Several queries pipelined on one connection are all answered.
        let mut pipelined = TcpStream::connect(server).await.unwrap();
        let queries: Vec<Message> = (0..3)
            .map(|_| query("secret", RecordType::A, false))
            .collect();
        for q in &queries {
            write_framed(&mut pipelined, &q.to_vec().unwrap())
                .await
                .unwrap();
        }
        for q in &queries {
            let m = Message::from_vec(&read_framed(&mut pipelined).await.unwrap()).unwrap();
            assert_eq!(m.metadata.id, q.metadata.id);
        }

        // silent + half + pipelined + one more = the limit of 4; the fifth is
        // closed at once, and counted.
        // The connection of the single query above may not be released by the server yet on a
        // loaded machine: the fourth slot is free once a connection there stays open.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut fourth = loop {
            let mut s = TcpStream::connect(server).await.unwrap();
            if !closed_within(&mut s, Duration::from_millis(100)).await {
                break s;
            }
            assert!(Instant::now() < deadline, "the fourth connection was never kept");
        };
        let dropped_before = dns.stats().dropped;
        let mut fifth = TcpStream::connect(server).await.unwrap();
        assert!(
            closed_within(&mut fifth, Duration::from_millis(900)).await,
            "connection over the limit was kept"
        );
        assert_eq!(dns.stats().dropped, dropped_before + 1);

        // After the idle timeout every idle connection is closed by us...
        for (name, s) in [
            ("silent", &mut silent),
            ("half", &mut half),
            ("pipelined", &mut pipelined),
            ("fourth", &mut fourth),
        ] {
            assert!(
                closed_within(s, Duration::from_millis(2500)).await,
                "{name} connection not closed when idle"
            );
        }
        // ...and new clients get in again.
        assert_eq!(
            addrs(&ask_tcp(server, "secret", RecordType::A).await),
            vec![v("10.5.0.5")]
        );

        // An oversized length prefix, and garbage with a plausible length,
        // close the connection without an answer.
        let mut big = TcpStream::connect(server).await.unwrap();
        big.write_all(&[0x13, 0x88]).await.unwrap(); // 5000 bytes announced
        assert!(
            closed_within(&mut big, Duration::from_millis(900)).await,
            "oversized query not refused"
        );
        let mut junk = TcpStream::connect(server).await.unwrap();
        let mut rng = Garbage(7);
        let mut body = rng.bytes(40);
        body[2] = 0x01; // a query header, then nonsense
        body[4..6].copy_from_slice(&[0, 1]);
        write_framed(&mut junk, &body).await.unwrap();
        let mut reply = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_millis(900), junk.read_to_end(&mut reply)).await;
        assert!(!leaks_secret(&reply));

        assert_eq!(
            addrs(&ask_udp(server, "secret", RecordType::A).await),
            vec![v("10.5.0.5")]
        );
        assert_eq!(
            addrs(&ask_tcp(server, "secret", RecordType::A).await),
            vec![v("10.5.0.5")]
        );
        assert_eq!(PANICS.load(SeqCst), 0, "something panicked");
    });
}
