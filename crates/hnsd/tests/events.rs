//! GET /events and `hnsctl events`: subscribers see every step of a scripted sequence, in
//! order, with its fields; a filter shows only what it names; a subscriber that reads nothing
//! neither slows requests nor grows without bound, and is told how many events it missed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use hns_lab::{Lab, Proc};
use serde_json::{Value, json};

/// `hnsctl events ARGS...` in the lab host; its stdout lines arrive on the channel.
fn hnsctl_events(lab: &Lab, args: &[&str]) -> (Proc, mpsc::Receiver<String>) {
    let mut cmd = lab.host().cmd(Lab::bin("hnsctl").unwrap());
    cmd.arg("--socket").arg(lab.socket()).arg("events").args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let proc = lab.spawn_command(cmd, "hnsctl events").unwrap();
    let stdout = proc.take_stdout().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (proc, rx)
}

/// Lines from `rx` until `last` matches one (included), failing after 20 s.
fn lines_until(rx: &mpsc::Receiver<String>, last: impl Fn(&str) -> bool) -> Vec<String> {
    lines_within(rx, Duration::from_secs(20), last)
}

fn lines_within(rx: &mpsc::Receiver<String>, limit: Duration, last: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = last(&l);
                out.push(l);
                if done {
                    return out;
                }
            }
            Err(_) => panic!("the awaited event did not arrive within {limit:?}; got:\n{}", out.join("\n")),
        }
    }
}

fn now_secs() -> String {
    format!("{:.6}", SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64())
}

fn policy(rt: &str, settings: Value) -> Value {
    json!({"ResourceType": "Policy", "RequestType": rt, "Settings": {"Policies": [{"Type": "PortMapping", "Settings": settings}]}})
}

#[test]
fn a_subscriber_sees_every_step_in_order_and_a_filter_only_its_type() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network", "--reconcile-interval", "10m"]).expect("hnsd starts");
    let api = Api::new(&lab);
    // From a time before the sequence: whenever the subscribers connect, they miss nothing.
    let since = now_secs();
    let (_all, all) = hnsctl_events(&lab, &["--format", "json", "--since", &since]);
    let (_eps, eps) = hnsctl_events(&lab, &["--filter", "type=endpoint", "--since", &since]);

    let net = api.post("/networks", &json!({"Name": "ev", "Type": "nat", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.71.0.0/24"}]}]})).ok();
    let net_id = net["ID"].as_str().unwrap().to_owned();
    let refused = api.post("/networks", &json!({"Name": "ev", "Type": "nat", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.72.0.0/24"}]}]}));
    assert_eq!(refused.status, 409, "{}", refused.raw);
    let ns = api.post("/namespaces", &json!({"Name": "c1"})).ok();
    let ns_id = ns["ID"].as_str().unwrap().to_owned();
    let ep = api.post("/endpoints", &json!({"Name": "web", "HostComputeNetwork": "ev"})).ok();
    let ep_id = ep["ID"].as_str().unwrap().to_owned();
    let attach = |rt: &str| json!({"ResourceType": "Endpoint", "RequestType": rt, "Settings": {"EndpointId": ep_id}});
    api.post(&format!("/namespaces/{ns_id}"), &attach("Add")).ok();
    api.post(&format!("/endpoints/{ep_id}"), &policy("Add", json!({"Protocol": 6, "InternalPort": 80, "ExternalPort": 8080}))).ok();
    // A host port hnsd chooses: the event names the one chosen.
    api.post(&format!("/endpoints/{ep_id}"), &policy("Add", json!({"Protocol": "udp", "InternalPort": 53}))).ok();
    let chosen = api.get("/portmappings").ok().as_array().unwrap().iter().find(|m| m["Protocol"] == "UDP").unwrap()["ExternalPort"].as_u64().unwrap();
    api.post(&format!("/endpoints/{ep_id}"), &policy("Remove", json!({"Protocol": 6, "InternalPort": 80, "ExternalPort": 8080}))).ok();
    api.post(&format!("/namespaces/{ns_id}"), &attach("Remove")).ok();
    assert_eq!(api.delete(&format!("/endpoints/{ep_id}")).status, 204);
    assert_eq!(api.delete("/namespaces/c1").status, 204);
    assert_eq!(api.delete("/networks/ev").status, 204);
    // A load balancer's life (no backend needed): create, modify, delete, a refusal.
    let lb_body = |port: u16| json!({"FrontendVIPs": ["10.96.0.10"], "PortMappings": [{"Protocol": 6, "InternalPort": 8080, "ExternalPort": port}]});
    let lb = api.post("/loadbalancers", &lb_body(80)).ok();
    let lb_id = lb["ID"].as_str().unwrap().to_owned();
    api.post(&format!("/loadbalancers/{lb_id}"), &lb_body(81)).ok();
    assert_eq!(api.delete(&format!("/loadbalancers/{lb_id}")).status, 204);
    assert_eq!(api.post("/loadbalancers", &json!({"FrontendVIPs": ["not-an-ip"], "PortMappings": []})).status, 400);
    // Last: an endpoint create that fails, the end marker of both subscribers.
    assert_eq!(api.post("/endpoints", &json!({"Name": "last", "HostComputeNetwork": "ev"})).status, 404);

    let lines = lines_until(&all, |l| l.contains("\"Name\":\"last\""));
    let events: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    let seen: Vec<(String, String, String, String)> = events
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("Type"), s("Action"), s("Name"), s("Outcome"))
        })
        .collect();
    let want = |t: &str, a: &str, n: &str, o: &str| (t.to_owned(), a.to_owned(), n.to_owned(), o.to_owned());
    assert_eq!(
        seen,
        vec![
            want("network", "create", "ev", "ok"),
            want("network", "create", "ev", "error"),
            want("namespace", "create", "c1", "ok"),
            want("endpoint", "create", "web", "ok"),
            want("endpoint", "attach", "web", "ok"),
            want("portmapping", "add", "web", "ok"),
            want("portmapping", "add", "web", "ok"),
            want("portmapping", "remove", "web", "ok"),
            want("endpoint", "detach", "web", "ok"),
            want("endpoint", "delete", "web", "ok"),
            want("namespace", "delete", "c1", "ok"),
            want("network", "delete", "ev", "ok"),
            want("loadbalancer", "create", "", "ok"),
            want("loadbalancer", "modify", "", "ok"),
            want("loadbalancer", "delete", "", "ok"),
            want("loadbalancer", "create", "", "error"),
            want("endpoint", "create", "last", "error"),
        ],
        "{}",
        lines.join("\n")
    );
    // The fields of each step.
    let mut last_time = SystemTime::UNIX_EPOCH;
    for e in &events {
        let t = e["Time"].as_str().unwrap();
        assert!(t.ends_with('Z') && t.len() == "2026-12-05T13:00:00.000000Z".len(), "not RFC 3339 UTC: {e}");
        let t: SystemTime = humantime_like(t);
        assert!(t >= last_time, "out of order: {e}");
        last_time = t;
        if e["Outcome"] == "ok" {
            assert!(e.get("Error").is_none(), "{e}");
        }
    }
    assert_eq!(events[0]["ID"], net_id.as_str());
    assert_eq!((events[0]["Network"].as_str(), events[0]["Attributes"]["driver"].as_str()), (Some("ev"), Some("NAT")));
    let e = events[1]["Error"].as_str().unwrap();
    assert!(e.contains("NETWORK_ALREADY_EXISTS"), "the refusal carries the API error: {e}");
    assert_eq!(events[2]["ID"], ns_id.as_str());
    for e in &events[3..10] {
        assert_eq!((e["Network"].as_str(), e["NetworkID"].as_str()), (Some("ev"), Some(net_id.as_str())), "{e}");
    }
    assert_eq!(events[3]["ID"], ep_id.as_str());
    assert_eq!(events[3]["Attributes"]["address"], ep["IpConfigurations"][0]["IpAddress"]);
    for i in [4, 8] {
        assert_eq!((events[i]["ID"].as_str(), events[i]["Attributes"]["namespace"].as_str()), (Some(ep_id.as_str()), Some("c1")), "{}", events[i]);
        assert_eq!(events[i]["Attributes"]["namespace_id"], ns_id.as_str());
    }
    assert_eq!(events[5]["Attributes"]["mapping"], "0.0.0.0:8080->80/tcp");
    assert_eq!(events[5]["ID"], format!("{ep_id}/TCP/0.0.0.0/8080"));
    assert_eq!(events[6]["Attributes"]["mapping"], format!("0.0.0.0:{chosen}->53/udp"));
    assert_eq!(events[7]["Attributes"]["mapping"], "0.0.0.0:8080->80/tcp");
    for (i, frontends) in [(12, "10.96.0.10:80/tcp"), (13, "10.96.0.10:81/tcp"), (14, "10.96.0.10:81/tcp")] {
        assert_eq!((events[i]["ID"].as_str(), events[i]["Attributes"]["frontends"].as_str()), (Some(lb_id.as_str()), Some(frontends)), "{}", events[i]);
        assert_eq!(events[i]["Attributes"]["backends"], "0", "{}", events[i]);
    }
    assert!(events[15]["Error"].as_str().unwrap().contains("not-an-ip"), "the refusal names the bad VIP: {}", events[15]);
    assert!(events[16]["Error"].as_str().unwrap().contains("NETWORK_NOT_FOUND"), "{}", events[16]);
    // Every event is counted by type, action and outcome (hns_events_total).
    let metrics = api.get("/metrics").raw;
    let count = |kind: &str, action: &str, outcome: &str| -> u64 {
        let series = format!("hns_events_total{{kind=\"{kind}\",action=\"{action}\",outcome=\"{outcome}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).map_or(0, |v| v.trim().parse().unwrap())
    };
    assert_eq!((count("network", "create", "ok"), count("network", "create", "error")), (1, 1));
    assert_eq!((count("endpoint", "create", "ok"), count("endpoint", "create", "error")), (1, 1));
    assert_eq!((count("portmapping", "add", "ok"), count("portmapping", "remove", "ok")), (2, 1));
    assert_eq!((count("loadbalancer", "create", "ok"), count("loadbalancer", "create", "error"), count("loadbalancer", "delete", "ok")), (1, 1, 1));

    // `--filter type=endpoint`: the endpoint steps only, as text lines.
    let lines = lines_until(&eps, |l| l.contains("name=last"));
    let shape: Vec<Vec<&str>> = lines.iter().map(|l| l.split(' ').skip(1).take(2).collect()).collect();
    assert_eq!(
        shape,
        vec![vec!["endpoint", "create"], vec!["endpoint", "attach"], vec!["endpoint", "detach"], vec!["endpoint", "delete"], vec!["endpoint", "create"]],
        "{}",
        lines.join("\n")
    );
    assert!(lines[1].contains(&ep_id) && lines[1].contains("name=web, network=ev") && lines[1].contains("namespace=c1") && lines[1].ends_with(" ok"), "{}", lines[1]);
    assert!(lines[4].contains("error: ") && lines[4].contains("NETWORK_NOT_FOUND"), "{}", lines[4]);

    // Replay: since the start, until now, then the stream ends (hnsctl exits 0).
    let out = lab.hnsctl_ok(&["events", "--since", &since, "--until", "0s", "--filter", "type=portmapping", "--format", "{{.Action}} {{.Name}}"]).unwrap();
    assert_eq!(out, "add web\nadd web\nremove web\n");
    // Bad filters are refused by hnsd, naming the parameter.
    let bad = lab.hnsctl(&["events", "--filter", "type=container"]).unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("INVALID_PARAMETER") && err.contains("portmapping"), "{err}");
}

/// Parses the RFC 3339 UTC times hnsd writes (`YYYY-MM-DDTHH:MM:SS.ffffffZ`).
fn humantime_like(t: &str) -> SystemTime {
    let num = |a: usize, b: usize| t[a..b].parse::<i64>().unwrap_or_else(|_| panic!("bad time {t}"));
    let (y, m, d) = (num(0, 4), num(5, 7), num(8, 10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + num(11, 13) * 3600 + num(14, 16) * 60 + num(17, 19);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_micros(num(20, 26) as u64)
}

/// A `GET /events` connection that reads nothing until asked (but its reply's head).
struct RawSubscriber {
    s: BufReader<hns_client::Stream>,
}

impl RawSubscriber {
    fn connect(lab: &Lab) -> RawSubscriber {
        let s = hns_client::stream(&lab.socket(), "GET", "/events", "", Some(Duration::from_secs(20))).unwrap();
        assert!(s.status == 200 && s.content_type.as_deref().is_some_and(|t| t.starts_with("application/x-ndjson")), "{} {:?}", s.status, s.content_type);
        RawSubscriber { s: BufReader::new(s) }
    }

    /// Reads the body line by line until `last` matches a line.
    fn lines_until(&mut self, last: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            assert!(self.s.read_line(&mut line).unwrap() > 0, "the stream ended");
            let v: Value = serde_json::from_str(&line).unwrap();
            let done = last(&v);
            out.push(v);
            if done {
                return out;
            }
        }
    }
}

#[test]
fn a_subscriber_that_reads_nothing_does_not_slow_requests_and_learns_what_it_missed() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&["--no-default-network", "--reconcile-interval", "10m"]).expect("hnsd starts");
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "slow", "Type": "nat", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.73.0.0/24"}]}]})).ok();
    let ep = api.post("/endpoints", &json!({"Name": "p", "HostComputeNetwork": "slow"})).ok();
    let path = format!("/endpoints/{}", ep["ID"].as_str().unwrap());
    let mapping = json!({"Protocol": 6, "InternalPort": 80, "ExternalPort": 9000});
    // One add and one remove: two events.
    let pairs = |n: usize| {
        let start = Instant::now();
        for _ in 0..n {
            assert_eq!(api.post(&path, &policy("Add", mapping.clone())).status, 204);
            assert_eq!(api.post(&path, &policy("Remove", mapping.clone())).status, 204);
        }
        start.elapsed() / (2 * n as u32)
    };
    let baseline = pairs(300);

    let mut stuck = RawSubscriber::connect(&lab);
    // Subscribed once its request is served; a live event stream shows the connection in use.
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kb(d.pid());
    // Far more than the subscriber's buffer (1024 events) and the socket's.
    let n = 2000;
    let loaded = pairs(n);
    let rss_after = rss_kb(d.pid());
    assert!(
        loaded <= baseline * 3 + Duration::from_millis(2),
        "requests slowed by a subscriber that reads nothing: {loaded:?} per request, {baseline:?} without it"
    );
    // Bounded: 4000 events of ~400 bytes for a stuck reader would be 1.6 MB if kept.
    assert!(rss_after < rss_before + 8 * 1024, "hnsd grew from {rss_before} kB to {rss_after} kB");

    // The end marker, then the stuck subscriber reads at last.
    assert_eq!(api.post("/endpoints", &json!({"Name": "end", "HostComputeNetwork": "slow"})).status, 200);
    let got = stuck.lines_until(|e| e["Name"] == "end");
    let missed: Vec<&Value> = got.iter().filter(|e| e["Type"] == "events").collect();
    assert!(!missed.is_empty(), "a subscriber 4000 events behind was not told it missed some");
    for m in &missed {
        assert_eq!((m["Action"].as_str(), m["Outcome"].as_str()), (Some("missed"), Some("error")), "{m}");
    }
    let missed_count: u64 = missed.iter().map(|m| m["Attributes"]["count"].as_str().unwrap().parse::<u64>().unwrap()).sum();
    let delivered = got.iter().filter(|e| e["Type"] == "portmapping").count() as u64;
    // Every event is either delivered or counted as missed (the marker comes last).
    assert_eq!(delivered + missed_count, 2 * n as u64, "delivered {delivered}, missed {missed_count}");
    assert!(delivered < 2 * n as u64);
    assert!(got.last().unwrap()["Type"] == "endpoint");
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[test]
fn dhcp_leases_are_events_obtained_renewed_and_released() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).expect("hnsd starts");
    let u = lab.add_uplink(8, false).unwrap();
    let (_dnsmasq, _leases) = lab.start_dnsmasq(&u, &[]).unwrap();
    let since = now_secs();
    let (_p, rx) = hnsctl_events(&lab, &["--format", "json", "--filter", "type=dhcp", "--since", &since]);
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", "transparent", "-o", &iface, "dnet"]).unwrap();
    lab.hnsctl_ok(&["run", "-d", "--net", "dnet", "--name", "c1", "--", "sleep", "300"]).unwrap();
    let ep = Api::new(&lab).get("/endpoints").ok()[0].clone();
    let ip = ip_of(&ep);
    // IPv4 only: the LAN's dnsmasq serves no DHCPv6.
    let v4 = |l: &str| !l.contains("\"family\":\"ipv6\"");
    let is = |l: &str, action: &str| v4(l) && l.contains(&format!("\"Action\":\"{action}\""));
    let check = |l: &str, action: &str| {
        let e: Value = serde_json::from_str(l).unwrap();
        assert_eq!((e["Type"].as_str(), e["Action"].as_str(), e["Outcome"].as_str()), (Some("dhcp"), Some(action), Some("ok")), "{e}");
        assert_eq!((e["ID"].as_str(), e["Name"].as_str(), e["Network"].as_str()), (ep["ID"].as_str(), Some("c1"), Some("dnet")), "{e}");
        assert_eq!(e["Attributes"]["address"], ip.as_str(), "{e}");
    };
    let got = lines_until(&rx, |l| is(l, "obtained"));
    check(got.last().unwrap(), "obtained");
    // dnsmasq's shortest lease is 120 s, renewed at T1 = 60 s.
    let got = lines_within(&rx, Duration::from_secs(80), |l| v4(l));
    check(got.last().unwrap(), "renewed");
    // The renewal is counted in the metrics too.
    let metrics = Api::new(&lab).get("/metrics").raw;
    let renewals = metrics.lines().find(|l| l.starts_with(r#"hns_events_total{kind="dhcp",action="renewed",outcome="ok"} "#));
    assert!(renewals.is_some_and(|l| l.ends_with(" 1")), "{renewals:?}");
    lab.hnsctl_ok(&["rm", "-f", "c1"]).unwrap();
    let got = lines_until(&rx, |l| v4(l));
    check(got.last().unwrap(), "released");
}
