//! Forwarding: fallback past a dead upstream well inside a client's timeout,
//! TCP retry on truncation, caching, SERVFAIL when every upstream is dead.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use hns_dns::{DnsConfig, DnsService};

#[test]
fn a_dead_first_upstream_costs_one_timeout_not_the_clients_patience() {
    let rt = netns_runtime();
    rt.block_on(async {
        let dead = fake_upstream(sa("127.0.0.20:53"), Upstream::Silent).await;
        let alive = fake_upstream(sa("127.0.0.21:53"), Upstream::Answers).await;
        let dns = DnsService::new(DnsConfig::default());
        let up = [sa("127.0.0.20:53"), sa("127.0.0.21:53")];
        dns.set_network("n", &[v("127.0.0.2")], 53, view(None, &[], &up))
            .await
            .unwrap();
        let server = sa("127.0.0.2:53");

        let started = Instant::now();
        let m = ask_udp(server, "www.example.test", RecordType::A).await;
        let took = started.elapsed();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addrs(&m), vec![v("192.0.2.7")]);
        assert!(m.metadata.recursion_available);
        assert!(took < Duration::from_millis(1500), "answer took {took:?}");
        assert!(
            took >= Duration::from_millis(450),
            "the dead server was asked first ({took:?})"
        );
        assert_eq!((dead.udp(), alive.udp()), (1, 1));

        // The answer is cached for its TTL: the next one is immediate, with
        // no upstream traffic, and its TTL counts down from 60.
        let started = Instant::now();
        let m = ask_udp(server, "WWW.example.test", RecordType::A).await;
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "cached answer took {:?}",
            started.elapsed()
        );
        assert_eq!(addrs(&m), vec![v("192.0.2.7")]);
        assert!(
            m.answers[0].ttl <= 60 && m.answers[0].ttl >= 58,
            "{}",
            m.answers[0].ttl
        );
        assert_eq!((dead.udp(), alive.udp()), (1, 1));

        // Negative answers are cached too (SOA TTL 3600 → our 300 s cap).
        for _ in 0..3 {
            let m = ask_udp(server, "missing.example.org", RecordType::A).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        }
        assert_eq!(alive.udp(), 2);
        let stats = dns.stats();
        assert_eq!((stats.forwarded, stats.cache_hits), (5, 3), "{stats:?}");
    });
}

#[test]
fn every_upstream_dead_gives_servfail_in_time() {
    let rt = netns_runtime();
    rt.block_on(async {
        let _a = fake_upstream(sa("127.0.0.20:53"), Upstream::Silent).await;
        let _b = fake_upstream(sa("127.0.0.21:53"), Upstream::Silent).await;
        let dns = DnsService::new(DnsConfig::default());
        dns.set_network(
            "n",
            &[v("127.0.0.2")],
            53,
            view(None, &[], &[sa("127.0.0.20:53"), sa("127.0.0.21:53")]),
        )
        .await
        .unwrap();
        let started = Instant::now();
        let m = ask_udp(sa("127.0.0.2:53"), "www.example.test", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(dns.stats().failed, 1);
        // Nothing listening at all (ICMP port unreachable) fails over at once.
        dns.update_view(
            "n",
            view(None, &[], &[sa("127.0.0.30:53"), sa("127.0.0.31:53")]),
        )
        .unwrap();
        let started = Instant::now();
        let m = ask_udp(sa("127.0.0.2:53"), "www.example.test", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    });
}

#[test]
fn a_truncated_udp_answer_is_fetched_again_over_tcp() {
    let rt = netns_runtime();
    rt.block_on(async {
        let up = fake_upstream(sa("127.0.0.21:53"), Upstream::TruncatesUdp).await;
        let dns = DnsService::new(DnsConfig::default());
        dns.set_network(
            "n",
            &[v("127.0.0.2")],
            53,
            view(None, &[], &[sa("127.0.0.21:53")]),
        )
        .await
        .unwrap();
        let server = sa("127.0.0.2:53");

        // An EDNS client over UDP gets all 30 records (≈ 520 bytes fit in 1232).
        let m = ask_udp(server, "big.example.test", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addrs(&m).len(), 30, "{m:?}");
        assert!(!m.metadata.truncation);
        assert_eq!(
            (up.udp(), up.tcp()),
            (1, 1),
            "UDP first, then TCP to the same server"
        );

        // A client without EDNS (512 bytes) gets TC from us and then the
        // full answer over TCP, from the cache.
        let m = ask_udp_msg(server, &query("big.example.test", RecordType::A, false)).await;
        assert!(m.metadata.truncation, "{m:?}");
        let m = ask_tcp(server, "big.example.test", RecordType::A).await;
        assert_eq!(addrs(&m).len(), 30);
        assert_eq!((up.udp(), up.tcp()), (1, 1));
    });
}

/// Kills the dnsmasq this test started, by its PID, even when the test fails.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn forwards_to_a_real_dnsmasq_past_a_dead_server() {
    if Command::new("dnsmasq")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("SKIPPED: dnsmasq is not installed (apt-get install -y dnsmasq-base)");
        return;
    }
    let rt = netns_runtime();
    let _dnsmasq = Kill(
        Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--address=/example.test/192.0.2.7",
                "--listen-address=127.0.0.22",
                "--bind-interfaces",
                "--port=53",
                "--pid-file=",
                "--user=root",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq"),
    );
    rt.block_on(async {
        let _dead = fake_upstream(sa("127.0.0.20:53"), Upstream::Silent).await;
        // Wait until dnsmasq answers (it starts in a few milliseconds).
        let probe = query("probe.example.test", RecordType::A, true);
        let deadline = Instant::now() + Duration::from_secs(5);
        while try_udp(sa("127.0.0.22:53"), &probe, Duration::from_millis(100))
            .await
            .is_none()
        {
            assert!(Instant::now() < deadline, "dnsmasq did not come up");
        }

        let dns = DnsService::new(DnsConfig::default());
        dns.set_network(
            "n",
            &[v("127.0.0.2")],
            53,
            view(None, &[], &[sa("127.0.0.20:53"), sa("127.0.0.22:53")]),
        )
        .await
        .unwrap();
        let started = Instant::now();
        let m = ask_udp(sa("127.0.0.2:53"), "host.example.test", RecordType::A).await;
        let took = started.elapsed();
        assert_eq!(addrs(&m), vec![v("192.0.2.7")], "{m:?}");
        assert!(took < Duration::from_millis(1500), "answer took {took:?}");
        let m = ask_tcp(sa("127.0.0.2:53"), "other.example.test", RecordType::A).await;
        assert_eq!(addrs(&m), vec![v("192.0.2.7")], "{m:?}");
    });
}
