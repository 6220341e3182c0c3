//! Throughput and latency of hns-dns: queries answered per second and
//! p50/p99 latency for local names, forwarded names served from the cache,
//! and forwarded names that miss the cache (answered by a dnsmasq upstream).
//!
//! Runs everything in a private network namespace it creates (needs root):
//!
//! ```text
//! cargo run --release -p hns-dns --example qps [-- SECONDS CLIENTS]
//! ```
//!
//! The load generator runs in the same process on its own runtime: with few
//! cores, client and server share them, so the figures are a floor.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_server::proto::op::{Edns, Message, Query};
use hickory_server::proto::rr::{Name, RecordType};
use hns_dns::{DnsConfig, DnsService, NetworkView, Record};
use tokio::net::UdpSocket;

const SERVER: &str = "127.0.0.2:53";
const UPSTREAM: &str = "127.0.0.22";

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(3, |s| s.parse().expect("SECONDS"));
    let clients: usize = args.next().map_or(32, |s| s.parse().expect("CLIENTS"));

    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): run as root");
    assert!(
        Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success()
    );
    let _dnsmasq = start_dnsmasq();

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let dns = server_rt.block_on(async {
        let dns = DnsService::new(DnsConfig::default());
        let records = (0..100)
            .map(|i| Record {
                name: format!("web{i}"),
                addrs: vec![IpAddr::from([10, 0, 0, i as u8 + 2])],
            })
            .collect();
        let view = NetworkView {
            suffix: Some("bench.test".into()),
            records,
            upstreams: vec![format!("{UPSTREAM}:53").parse().unwrap()],
            clients: vec!["127.0.0.0/8".parse().unwrap()],
        };
        dns.set_network("bench", &["127.0.0.2".parse().unwrap()], 53, view)
            .await
            .unwrap();
        dns
    });

    println!("{seconds} s per scenario, {clients} concurrent clients, each one query in flight");
    println!(
        "{:<28} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "scenario", "answers/s", "p50 µs", "p99 µs", "max µs", "lost"
    );
    let counter = Arc::new(AtomicU64::new(0));
    for (label, names) in [
        ("local (100 names)", Names::Local),
        ("forwarded, cache hit", Names::CacheHit),
        ("forwarded, cache miss", Names::CacheMiss),
    ] {
        let report = client_rt.block_on(load(
            names,
            clients,
            Duration::from_secs(seconds),
            counter.clone(),
        ));
        report.print(label);
    }
    println!("service counters: {:?}", dns.stats());

    // The hot path of attach/detach: build a table and swap it in.
    for endpoints in [10, 100, 1000] {
        let view = NetworkView {
            suffix: Some("bench.test".into()),
            records: (0..endpoints)
                .map(|i: u32| Record {
                    name: format!("endpoint-{i}"),
                    addrs: vec![
                        IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
                        IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, i as u16]),
                    ],
                })
                .collect(),
            upstreams: vec![format!("{UPSTREAM}:53").parse().unwrap()],
            clients: vec!["127.0.0.0/8".parse().unwrap()],
        };
        let rounds = 200;
        let copies: Vec<NetworkView> = (0..rounds).map(|_| view.clone()).collect();
        let started = Instant::now();
        for copy in copies {
            dns.update_view("bench", copy).unwrap();
        }
        println!(
            "update_view, {endpoints:>4} endpoints (v4+v6): {:>8.1} µs",
            started.elapsed().as_secs_f64() * 1e6 / rounds as f64
        );
    }
    drop(server_rt);
}

#[derive(Clone, Copy)]
enum Names {
    Local,
    CacheHit,
    CacheMiss,
}

impl Names {
    fn name(self, n: u64) -> String {
        match self {
            Names::Local => format!("web{}.bench.test.", n % 100),
            Names::CacheHit => "www.example.test.".into(),
            Names::CacheMiss => format!("q{n}.example.test."),
        }
    }
}

struct Report {
    latencies_us: Vec<u64>,
    lost: usize,
    elapsed: Duration,
}

impl Report {
    fn print(mut self, label: &str) {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            let l = &self.latencies_us;
            if l.is_empty() {
                0
            } else {
                l[((l.len() - 1) as f64 * p) as usize]
            }
        };
        let qps = self.latencies_us.len() as f64 / self.elapsed.as_secs_f64();
        println!(
            "{label:<28} {qps:>10.0} {:>9} {:>9} {:>9} {:>8}",
            pct(0.50),
            pct(0.99),
            self.latencies_us.last().copied().unwrap_or(0),
            self.lost
        );
    }
}

async fn load(names: Names, clients: usize, duration: Duration, counter: Arc<AtomicU64>) -> Report {
    let server: SocketAddr = SERVER.parse().unwrap();
    // Warm-up so "cache hit" measures hits.
    one_query(server, &names.name(0)).await;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.connect(server).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let (mut lat, mut lost) = (Vec::new(), 0);
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let q = message(&names.name(n));
                let sent = Instant::now();
                sock.send(&q.to_vec().unwrap()).await.unwrap();
                loop {
                    match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                        Ok(Ok(len)) => match Message::from_vec(&buf[..len]) {
                            Ok(m) if m.metadata.id == q.metadata.id => {
                                lat.push(sent.elapsed().as_micros() as u64);
                                break;
                            }
                            _ => continue, // a late answer to an earlier, timed-out query
                        },
                        _ => {
                            lost += 1;
                            break;
                        }
                    }
                }
            }
            (lat, lost)
        }));
    }
    let mut report = Report {
        latencies_us: Vec::new(),
        lost: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (lat, lost) = t.await.unwrap();
        report.latencies_us.extend(lat);
        report.lost += lost;
    }
    report.elapsed = started.elapsed();
    report
}

fn message(name: &str) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.set_edns(edns);
    m
}

async fn one_query(server: SocketAddr, name: &str) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&message(name).to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await;
}

/// The upstream for the forwarded scenarios, killed by PID on drop.
struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dnsmasq() -> Dnsmasq {
    let child = Command::new("dnsmasq")
        .args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--address=/example.test/192.0.2.7",
            &format!("--listen-address={UPSTREAM}"),
            "--bind-interfaces",
            "--port=53",
            "--pid-file=",
            "--user=root",
            "--cache-size=0",
            "--local-ttl=60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq (apt-get install -y dnsmasq-base)");
    std::thread::sleep(Duration::from_millis(300));
    Dnsmasq(child)
}
