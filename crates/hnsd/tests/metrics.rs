//! GET /metrics: exact object and request counts after a known sequence, histogram buckets,
//! per-endpoint traffic read from the kernel, and the optional TCP listener.

mod common;

use common::*;
use hns_lab::{Lab, Side};
use serde_json::json;

/// The value of one series (the whole series text, labels in the order hnsd writes them).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

fn scrape(api: &Api) -> String {
    let r = api.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.raw);
    r.raw
}

#[test]
fn counts_objects_requests_and_endpoint_traffic() {
    let lab = Lab::new().unwrap();
    // Two reconcile passes only (the start-up pass, and the periodic pass that runs right after
    // it), so their count is exact.
    let _d = lab
        .start_hnsd(&["--no-default-network", "--reconcile-interval", "10m"])
        .expect("hnsd starts");
    let api = Api::new(&lab);
    let net = api.post("/networks", &json!({"Name": "m", "Type": "nat", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.70.0.0/24"}]}]})).ok();
    let (a, ea) = api.container("m", "a", json!({}));
    let (_b, eb) = api.container("m", "b", json!({}));
    let gone = api
        .post(
            "/endpoints",
            &json!({"HostComputeNetwork": "m", "Name": "gone"}),
        )
        .ok();
    assert_eq!(
        api.delete(&format!("/endpoints/{}", gone["ID"].as_str().unwrap()))
            .status,
        204
    );
    assert_eq!(
        api.request_raw("POST", "/networks", b"{not json").status,
        400
    );
    api.get(&format!("/networks/{}/", net["ID"].as_str().unwrap()))
        .ok();

    // The pass right after start ends on its own schedule: wait for it, no longer than 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while must(&scrape(&api), "hns_reconcile_passes_total") < 2.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before = scrape(&api);
    assert_eq!(must(&before, r#"hns_networks{driver="NAT"}"#), 1.0);
    assert_eq!(must(&before, r#"hns_endpoints{network="m"}"#), 2.0);
    assert_eq!(must(&before, "hns_namespaces"), 2.0);
    assert_eq!(must(&before, "hns_reconcile_passes_total"), 2.0);
    assert_eq!(
        must(&before, r#"hns_reconcile_repairs_total{kind="error"}"#),
        0.0
    );
    assert_eq!(
        must(
            &before,
            r#"hns_api_requests_total{route="/networks",method="POST",code="200"}"#
        ),
        1.0
    );
    assert_eq!(
        must(
            &before,
            r#"hns_api_requests_total{route="/networks",method="POST",code="400"}"#
        ),
        1.0
    );
    assert_eq!(
        must(
            &before,
            r#"hns_api_requests_total{route="/namespaces",method="POST",code="200"}"#
        ),
        2.0
    );
    assert_eq!(
        must(
            &before,
            r#"hns_api_requests_total{route="/endpoints",method="POST",code="200"}"#
        ),
        3.0
    );
    // The route template, not the raw path; one series with and without the trailing slash.
    assert_eq!(
        must(
            &before,
            r#"hns_api_requests_total{route="/endpoints/{id}",method="DELETE",code="204"}"#
        ),
        1.0
    );
    assert_eq!(
        must(
            &before,
            r#"hns_api_requests_total{route="/networks/{id}",method="GET",code="200"}"#
        ),
        1.0
    );
    assert!(
        !before.contains(net["ID"].as_str().unwrap()),
        "a raw path with an ID became a label:\n{before}"
    );
    assert_eq!(
        must(
            &before,
            r#"hns_api_request_duration_seconds_count{route="/endpoints"}"#
        ),
        3.0
    );
    assert_eq!(
        must(
            &before,
            r#"hns_api_request_duration_seconds_bucket{le="+Inf",route="/endpoints"}"#
        ),
        3.0
    );
    assert!(
        value(
            &before,
            r#"hns_api_request_duration_seconds_bucket{le="0.001",route="/endpoints"}"#
        )
        .is_some()
    );
    assert!(value(&before, r#"hns_dns_queries_total{result="local"}"#).is_some());
    assert_eq!(must(&before, r#"hns_dhcp_leases{family="ipv4"}"#), 0.0);
    // The deleted endpoint's series are gone with it.
    assert!(!before.contains(gone["ID"].as_str().unwrap()));
    // Every change took the engine's lock and committed to the store: a network, two
    // compartments, three endpoints (two of them attached, a lazy commit each made durable by a
    // sync), one endpoint delete.
    let took = must(&before, "hns_engine_lock_wait_seconds_count");
    assert!(took >= 7.0, "the engine's lock was taken {took} times");
    // Each is counted held when it is released: one may be held while the text is written.
    let held = must(&before, "hns_engine_lock_held_seconds_count");
    assert!(held == took || held == took - 1.0, "the lock was taken {took} times and released {held} times");
    let commits = must(&before, "hns_store_commits_total");
    let syncs = must(&before, "hns_store_disk_syncs_total");
    assert!(commits >= 7.0, "{commits} store commits");
    assert!((1.0..=commits).contains(&syncs), "{syncs} disk syncs for {commits} commits");

    let series = |ep: &serde_json::Value, metric: &str| {
        format!(
            r#"hns_{metric}{{endpoint="{}",name="{}",network="m"}}"#,
            ep["ID"].as_str().unwrap(),
            ep["Name"].as_str().unwrap()
        )
    };
    let out = in_ns(
        &lab,
        &a,
        "ping",
        &["-c5", "-i0.2", "-W2", "-s1000", &ip_of(&eb)],
    );
    assert!(out.status.success(), "ping a -> b: {}", out.stdout);
    let after = scrape(&api);
    // 5 echoes of 1000 bytes of payload: at least 5 x 1028 bytes (IP + ICMP headers) each way.
    let grew = |ep, metric| must(&after, &series(ep, metric)) - must(&before, &series(ep, metric));
    assert!(
        grew(&ea, "endpoint_sent_bytes_total") >= 5140.0,
        "a sent {}",
        grew(&ea, "endpoint_sent_bytes_total")
    );
    assert!(
        grew(&eb, "endpoint_received_bytes_total") >= 5140.0,
        "b received {}",
        grew(&eb, "endpoint_received_bytes_total")
    );
    assert!(
        grew(&eb, "endpoint_sent_bytes_total") >= 5140.0,
        "b replied {}",
        grew(&eb, "endpoint_sent_bytes_total")
    );
    assert!(grew(&ea, "endpoint_received_packets_total") >= 5.0);
    assert!(value(&after, &series(&ea, "endpoint_received_drops_total")).is_some());
    assert!(after.ends_with("# EOF\n"));

    // An endpoint without a name counts too (the count once came from the network's names).
    api.post("/endpoints", &json!({"HostComputeNetwork": "m"})).ok();
    assert_eq!(must(&scrape(&api), r#"hns_endpoints{network="m"}"#), 3.0, "an unnamed endpoint is not counted");
}

#[test]
fn tcp_listener_only_when_asked() {
    let lab = Lab::new().unwrap();
    let curl = |lab: &Lab| {
        lab.try_in(
            Side::Host,
            "curl",
            &["-sS", "--max-time", "5", "http://127.0.0.1:9450/metrics"],
        )
        .unwrap()
    };
    let d = lab
        .start_hnsd(&["--no-default-network"])
        .expect("hnsd starts");
    assert!(
        !curl(&lab).status.success(),
        "metrics served on TCP by default"
    );
    d.stop().unwrap();
    let _d = lab
        .start_hnsd(&["--no-default-network", "--metrics-listen", "127.0.0.1:9450"])
        .expect("hnsd starts");
    let out = curl(&lab);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        value(&out.stdout, "hns_namespaces"),
        Some(0.0),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("# TYPE hns_api_requests counter"));
    // Only /metrics: the API stays on the unix socket.
    let net = lab
        .in_host(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:9450/networks",
            ],
        )
        .unwrap();
    assert_eq!(net.stdout.trim(), "404");
}
