//! A burst of 10 000 queries while the view is swapped hundreds of times:
//! no query is lost, and every answer belongs to a view that was published
//! (never a stale one from before the last completed swap, never a mix).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use common::*;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use hns_dns::{DnsConfig, DnsService, NetworkView, Record};

const CLIENTS: usize = 4;
const QUERIES_PER_CLIENT: usize = 2500;
const NAMES: u32 = 50;

/// Version `k` of the view: names m0..m49 and "svc" all point at the
/// version's own address 10.9.(k/256).(k%256); "stable" never changes.
fn version(k: u32) -> NetworkView {
    let addr = std::net::IpAddr::from([10, 9, (k / 256) as u8, (k % 256) as u8]);
    let mut records: Vec<Record> = (0..NAMES)
        .map(|i| Record {
            name: format!("m{i}"),
            addrs: vec![addr],
        })
        .collect();
    records.push(Record {
        name: "svc".into(),
        addrs: vec![addr],
    });
    records.push(Record {
        name: "stable".into(),
        addrs: vec![v("10.7.0.1")],
    });
    NetworkView {
        suffix: Some("burst.test".into()),
        records,
        upstreams: vec![],
        clients: everyone(),
    }
}

fn version_of(addr: std::net::IpAddr) -> u32 {
    match addr {
        std::net::IpAddr::V4(a) if a.octets()[..2] == [10, 9] => {
            u32::from(a.octets()[2]) * 256 + u32::from(a.octets()[3])
        }
        other => panic!("answer {other} belongs to no view"),
    }
}

#[test]
fn ten_thousand_queries_during_hundreds_of_swaps_all_answered_correctly() {
    let rt = netns_runtime();
    rt.block_on(async {
        let dns = Arc::new(DnsService::new(DnsConfig::default()));
        dns.set_network("n", &[v("127.0.0.2")], 53, version(0)).await.unwrap();
        // `published`: highest version handed to the service (it may be
        // visible already); `completed`: highest version whose swap returned
        // (it must be visible to every query sent afterwards).
        let published = Arc::new(AtomicU32::new(0));
        let completed = Arc::new(AtomicU32::new(0));
        let done = Arc::new(AtomicBool::new(false));

        let swapper = {
            let (dns, published, completed, done) = (dns.clone(), published.clone(), completed.clone(), done.clone());
            tokio::spawn(async move {
                let mut k = 0;
                while !done.load(SeqCst) && k < 60_000 {
                    k += 1;
                    published.store(k, SeqCst);
                    if k % 25 == 0 {
                        // The same listen address again: only the view may change.
                        dns.set_network("n", &[v("127.0.0.2")], 53, version(k)).await.unwrap();
                    } else {
                        dns.update_view("n", version(k)).unwrap();
                    }
                    completed.store(k, SeqCst);
                    tokio::task::yield_now().await;
                }
                k
            })
        };

        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (published, completed) = (published.clone(), completed.clone());
            clients.push(tokio::spawn(async move {
                let server = sa("127.0.0.2:53");
                for i in 0..QUERIES_PER_CLIENT {
                    let n = (i * 7 + c) % (NAMES as usize + 2);
                    let name = match n {
                        50 => "svc.burst.test".to_string(),
                        51 => "STABLE".to_string(),
                        n if i % 2 == 0 => format!("m{n}"),
                        n => format!("M{n}.burst.test."),
                    };
                    let floor = completed.load(SeqCst);
                    let q = query(&name, RecordType::A, i % 3 != 0);
                    let m = try_udp(server, &q, Duration::from_secs(2))
                        .await
                        .unwrap_or_else(|| panic!("client {c} query {i} ({name}) got no answer"));
                    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}: {m:?}");
                    let got = addrs(&m);
                    assert_eq!(got.len(), 1, "{name}: {m:?}");
                    if name == "STABLE" {
                        assert_eq!(got[0], v("10.7.0.1"));
                        continue;
                    }
                    let k = version_of(got[0]);
                    let ceiling = published.load(SeqCst);
                    assert!(k >= floor, "{name}: answered from version {k}, but version {floor} was already in place");
                    assert!(k <= ceiling, "{name}: version {k} was never published (max {ceiling})");
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        done.store(true, SeqCst);
        let swaps = swapper.await.unwrap();
        assert!(swaps >= 200, "only {swaps} swaps happened during the burst");
        let stats = dns.stats();
        assert_eq!(stats.answered_local, (CLIENTS * QUERIES_PER_CLIENT) as u64, "{stats:?}");
        assert_eq!((stats.failed, stats.dropped), (0, 0), "{stats:?}");
        eprintln!("{} queries during {swaps} swaps", CLIENTS * QUERIES_PER_CLIENT);
    });
}
