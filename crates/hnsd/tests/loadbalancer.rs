//! Load balancers with real packets: backends are labprobe servers in compartments of the
//! default nat network; clients are other compartments, the LAN and the lab host.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use hns_lab::Lab;
use serde_json::{Value, json};

fn probe() -> String {
    hns_lab::Lab::bin("labprobe").unwrap().to_str().unwrap().to_owned()
}

fn serve(lab: &Lab, ns: &Value, addr: &str) -> hns_lab::Proc {
    let netns = format!("--net={}", ns["NetNsPath"].as_str().unwrap());
    let p = lab.spawn_in_host("nsenter", &[&netns, &probe(), "serve-tcp", addr]).unwrap();
    let ready = eventually(Duration::from_secs(5), || in_ns(lab, ns, &probe(), &["connect-tcp", addr, "--timeout-ms", "300"]).status.success());
    assert!(ready, "server {addr} did not start");
    p
}

fn serve_udp(lab: &Lab, ns: &Value, addr: &str) -> hns_lab::Proc {
    let netns = format!("--net={}", ns["NetNsPath"].as_str().unwrap());
    let p = lab.spawn_in_host("nsenter", &[&netns, &probe(), "serve-udp", addr]).unwrap();
    let ready = eventually(Duration::from_secs(5), || in_ns(lab, ns, &probe(), &["send-udp", addr, "up", "--timeout-ms", "300"]).status.success());
    assert!(ready, "UDP server {addr} did not start");
    p
}

/// The first IPv6 address of an endpoint.
fn ip6_of(ep: &Value) -> String {
    let configs = ep["IpConfigurations"].as_array().unwrap();
    configs.iter().filter_map(|c| c["IpAddress"].as_str()).find(|a| a.contains(':')).unwrap_or_else(|| panic!("no IPv6 address: {ep}")).to_owned()
}

/// The address part of `IP:PORT` or `[IP]:PORT`.
fn host_part(w: &str) -> String {
    w.rsplit_once(':').map_or(w, |(h, _)| h).trim_matches(['[', ']']).to_owned()
}

/// `(peer, local)` addresses of each of `n` exchanges from `from` (labprobe `cmd` with
/// `args`, run in one shell); `("failed", error)` for each that failed.
fn exchanges(lab: &Lab, from: &Value, cmd: &str, n: usize) -> Vec<(String, String)> {
    let script = format!("for i in $(seq {n}); do {} {cmd} 2>&1 || echo failed; done", probe());
    let out = in_ns(lab, from, "sh", &["-c", &script]);
    let mut v = Vec::new();
    let mut lines = out.stdout.lines().peekable();
    while let Some(l) = lines.next() {
        let word = |k: &str| l.split_whitespace().find_map(|w| w.strip_prefix(k)).map(host_part);
        match (word("peer="), word("local=")) {
            (Some(p), Some(q)) => v.push((p, q)),
            // An error line, then `failed`.
            _ if lines.peek() == Some(&"failed") => {
                lines.next();
                v.push(("failed".into(), l.to_owned()));
            }
            _ => v.push(("failed".into(), l.to_owned())),
        }
    }
    v
}

/// The default gateway of a compartment (its network's host address).
fn gateway(lab: &Lab, ns: &Value) -> String {
    let o = in_ns(lab, ns, "ip", &["-4", "route", "show", "default"]);
    o.stdout.split_whitespace().skip_while(|w| *w != "via").nth(1).unwrap_or_else(|| panic!("no default route: {}", o.stdout)).to_owned()
}

/// Which backend (the `local=` address) served each of `n` connections from `from`.
fn tally(lab: &Lab, from: &Value, addr: &str, n: usize) -> BTreeMap<String, usize> {
    let script = format!("for i in $(seq {n}); do {} connect-tcp {addr} --timeout-ms 1000 || echo failed; done", probe());
    let out = in_ns(lab, from, "sh", &["-c", &script]);
    let mut m = BTreeMap::new();
    for l in out.stdout.lines() {
        let who = l.split_whitespace().find_map(|w| w.strip_prefix("local=")).map(|w| w.rsplit_once(':').unwrap().0.to_owned()).unwrap_or_else(|| l.trim().to_owned());
        *m.entry(who).or_insert(0) += 1;
    }
    m
}

#[test]
fn distribution_affinity_and_backend_removal() {
    let lab = Lab::new().expect("lab");
    let _d = lab.start_hnsd(&[]).expect("hnsd starts");
    let api = Api::new(&lab);
    let (client, _) = api.container("nat", "client", json!({}));
    let mut backends = Vec::new();
    let mut servers = Vec::new();
    for name in ["web1", "web2", "web3"] {
        let (ns, ep) = api.container("nat", name, json!({}));
        servers.push(serve(&lab, &ns, &format!("{}:8080", ip_of(&ep))));
        backends.push(ep);
    }
    let ids: Vec<&Value> = backends.iter().map(|e| &e["ID"]).collect();
    let lb = api
        .post("/loadbalancers", &json!({"HostComputeEndpoints": ids, "FrontendVIPs": ["10.96.0.10"], "PortMappings": [{"Protocol": 6, "InternalPort": 8080, "ExternalPort": 80}]}))
        .ok();
    let t = tally(&lab, &client, "10.96.0.10:80", 300);
    for ep in &backends {
        let got = t.get(&ip_of(ep)).copied().unwrap_or(0);
        assert!(got >= 50, "each backend gets a fair share of 300 connections: {t:?}");
    }
    // The metrics count each backend's new connections: exactly what the clients saw.
    let id = lb["ID"].as_str().unwrap();
    let text = api.get("/metrics").raw;
    for ep in &backends {
        let series = format!("hns_lb_backend_connections_total{{loadbalancer=\"{id}\",endpoint=\"{}\",name=\"{}\"}} ", ep["ID"].as_str().unwrap(), ep["Name"].as_str().unwrap());
        let line = text.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("no {series} in:\n{}", text.lines().filter(|l| l.contains("lb_")).collect::<Vec<_>>().join("\n")));
        let counted: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(counted, t[&ip_of(ep)], "{line} vs the clients' tally {t:?}");
    }
    // SourceIP affinity: one client, one backend.
    let r = api.post(&format!("/loadbalancers/{id}"), &json!({"HostComputeEndpoints": ids, "FrontendVIPs": ["10.96.0.10"], "PortMappings": [{"Protocol": 6, "InternalPort": 8080, "ExternalPort": 80, "DistributionType": "SourceIP"}]}));
    assert_eq!(r.status, 200, "{}", r.raw);
    let t = tally(&lab, &client, "10.96.0.10:80", 30);
    assert_eq!(t.len(), 1, "SourceIP keeps one client on one backend: {t:?}");
    // Removing a backend: new connections avoid it.
    api.delete(&format!("/endpoints/{}", backends[0]["ID"].as_str().unwrap()));
    let shown = api.get(&format!("/loadbalancers/{id}")).ok();
    assert_eq!(shown["HostComputeEndpoints"].as_array().unwrap().len(), 2, "the deleted endpoint left the load balancer: {shown}");
    let r = api.post(&format!("/loadbalancers/{id}"), &json!({"HostComputeEndpoints": [ids[1], ids[2]], "FrontendVIPs": ["10.96.0.10"], "PortMappings": [{"Protocol": 6, "InternalPort": 8080, "ExternalPort": 80}]}));
    assert_eq!(r.status, 200, "{}", r.raw);
    let t = tally(&lab, &client, "10.96.0.10:80", 60);
    assert!(!t.contains_key(&ip_of(&backends[0])) && !t.contains_key("failed"), "{t:?}");
    // No backend left: refused at once (reset), not black-holed.
    let r = api.post(&format!("/loadbalancers/{id}"), &json!({"HostComputeEndpoints": [], "FrontendVIPs": ["10.96.0.10"], "PortMappings": [{"Protocol": 6, "InternalPort": 8080, "ExternalPort": 80}]}));
    assert_eq!(r.status, 200, "{}", r.raw);
    let o = in_ns(&lab, &client, &probe(), &["connect-tcp", "10.96.0.10:80", "--timeout-ms", "3000"]);
    assert!(!o.status.success() && o.stderr.to_lowercase().contains("refused"), "refused, not timed out: {}", o.stderr);
    // Delete: nothing left.
    assert_eq!(api.delete(&format!("/loadbalancers/{id}")).status, 204);
    assert!(!lab.try_in(hns_lab::Side::Host, "nft", &["list", "table", "inet", "hns_lb"]).unwrap().status.success(), "the table is gone with the last load balancer");
}

#[test]
fn bad_input_names_the_field() {
    let lab = Lab::new().expect("lab");
    let _d = lab.start_hnsd(&[]).expect("hnsd starts");
    let api = Api::new(&lab);
    let (_ns, ep) = api.container("nat", "b", json!({}));
    let pm = json!([{"Protocol": 6, "InternalPort": 80, "ExternalPort": 80}]);
    for (body, field) in [
        (json!({"HostComputeEndpoints": ["00000000-0000-0000-0000-000000000001"], "FrontendVIPs": ["10.96.0.10"], "PortMappings": pm}), "HostComputeEndpoints[0]"),
        (json!({"HostComputeEndpoints": [ep["ID"]], "FrontendVIPs": ["10.96.0.300"], "PortMappings": pm}), "FrontendVIPs[0]"),
        (json!({"HostComputeEndpoints": [ep["ID"]], "FrontendVIPs": ["10.96.0.10"], "PortMappings": [{"Protocol": 6, "InternalPort": 0, "ExternalPort": 80}]}), "PortMappings[0].InternalPort"),
        (json!({"HostComputeEndpoints": [ep["ID"]], "FrontendVIPs": ["10.96.0.10"], "PortMappings": [{"Protocol": 99, "InternalPort": 80, "ExternalPort": 80}]}), "PortMappings[0].Protocol"),
        (json!({"HostComputeEndpoints": [ep["ID"]], "FrontendVIPs": ["10.96.0.10"], "SourceVIP": "nope", "PortMappings": pm}), "SourceVIP"),
    ] {
        let r = api.post("/loadbalancers", &body);
        assert!((400..500).contains(&r.status), "{body}: {}", r.raw);
        assert_eq!(r.body["Field"].as_str().or(r.body["field"].as_str()), Some(field), "{}", r.raw);
    }
    assert_eq!(api.get("/loadbalancers").ok(), json!([]), "nothing was created");
}

#[test]
fn ilb_lan_restart_and_flushed_table() {
    let lab = Lab::new().expect("lab");
    let d = lab.start_hnsd(&[]).expect("hnsd starts");
    let api = Api::new(&lab);
    let (client, _) = api.container("nat", "client", json!({}));
    let (bns, bep) = api.container("nat", "web", json!({}));
    let _s = serve(&lab, &bns, &format!("{}:8080", ip_of(&bep)));
    lab.in_lan("ip", &["route", "add", "10.96.0.0/24", "via", &hns_lab::HOST_UPLINK.to_string()]).unwrap();
    let mk = |vip: &str, flags: u32| {
        api.post("/loadbalancers", &json!({"HostComputeEndpoints": [bep["ID"]], "FrontendVIPs": [vip], "PortMappings": [{"Protocol": 6, "InternalPort": 8080, "ExternalPort": 80, "Flags": flags}]})).ok()
    };
    mk("10.96.0.10", 0);
    mk("10.96.0.11", 1);
    let lan = |vip: &str| lab.probe(hns_lab::Side::Lan, &["connect-tcp", &format!("{vip}:80"), "--timeout-ms", "1500"]).unwrap();
    assert!(lan("10.96.0.10").status.success(), "a public load balancer is reachable from the LAN: {:?}", lan("10.96.0.10"));
    let o = lan("10.96.0.11");
    assert!(!o.status.success(), "an internal load balancer is refused from the LAN: {o:?}");
    let conn = |from: &Value, vip: &str| in_ns(&lab, from, &probe(), &["connect-tcp", &format!("{vip}:80"), "--timeout-ms", "1500"]);
    assert!(conn(&client, "10.96.0.11").status.success(), "an internal load balancer is reachable from a container");
    // Restart: still works, and the table, which did not drift, is not written again (a
    // table written whole gets a new handle). Flushed table: the reconciler rebuilds it.
    let table_handle = || lab.in_host("nft", &["-a", "list", "table", "inet", "hns_lb"]).unwrap().stdout.lines().next().unwrap_or_default().to_owned();
    let before = table_handle();
    d.stop().unwrap();
    let _d2 = lab.start_hnsd(&[]).expect("hnsd restarts");
    assert!(conn(&client, "10.96.0.10").status.success(), "after a restart");
    assert_eq!(table_handle(), before, "a restart with nothing drifted leaves the table as it was");
    lab.in_host("nft", &["flush", "table", "inet", "hns_lb"]).unwrap();
    assert!(eventually(Duration::from_secs(10), || conn(&client, "10.96.0.10").status.success()), "the reconciler rebuilt the flushed table");
}


/// Hairpin: a backend connecting to its own VIP may land on itself. Every connection succeeds
/// (the bridge port is in hairpin mode); those that land on the backend itself come from the
/// load balancer's `SourceVIP`, or, without one, from the host's address on the network.
#[test]
fn hairpin_lands_on_itself_from_the_source_vip() {
    let lab = Lab::new().expect("lab");
    let _d = lab.start_hnsd(&[]).expect("hnsd starts");
    let api = Api::new(&lab);
    let (ns1, ep1) = api.container("nat", "web1", json!({}));
    let (ns2, ep2) = api.container("nat", "web2", json!({}));
    let _s1 = serve(&lab, &ns1, &format!("{}:8080", ip_of(&ep1)));
    let _s2 = serve(&lab, &ns2, &format!("{}:8080", ip_of(&ep2)));
    let body = |source_vip: &str| {
        json!({"HostComputeEndpoints": [ep1["ID"], ep2["ID"]], "FrontendVIPs": ["10.96.0.20"], "SourceVIP": source_vip, "PortMappings": [{"Protocol": 6, "InternalPort": 8080, "ExternalPort": 80}]})
    };
    let lb = api.post("/loadbalancers", &body("10.96.0.99")).ok();
    let me = ip_of(&ep1);
    let gw = gateway(&lab, &ns1);
    let check = |want_peer: &str| {
        let got = exchanges(&lab, &ns1, "connect-tcp 10.96.0.20:80 --timeout-ms 2000", 40);
        assert!(got.iter().all(|(p, _)| p != "failed"), "every connection from a backend to its own VIP succeeds: {got:?}");
        let own: Vec<&(String, String)> = got.iter().filter(|(_, l)| *l == me).collect();
        assert!(!own.is_empty() && own.len() < got.len(), "some of 40 connections land on the backend itself, some on the other: {got:?}");
        assert!(own.iter().all(|(p, _)| p == want_peer), "landed on itself, it sees {want_peer} as the client: {got:?}");
    };
    check("10.96.0.99");
    // Without SourceVIP: the host's address on the backend's network (masquerade).
    let id = lb["ID"].as_str().unwrap();
    api.post(&format!("/loadbalancers/{id}"), &body("")).ok();
    check(&gw);
}

/// LocalRoutedVIP: the host itself reaches the VIP (through its output hook); without the flag
/// it does not. An internal (ILB) service with the flag is reached from the host and still
/// refused from the LAN.
#[test]
fn local_routed_vip_from_the_host() {
    let lab = Lab::new().expect("lab");
    let _d = lab.start_hnsd(&[]).expect("hnsd starts");
    let api = Api::new(&lab);
    let (bns, bep) = api.container("nat", "web", json!({}));
    let _s = serve(&lab, &bns, &format!("{}:8080", ip_of(&bep)));
    for (vip, flags) in [("10.96.0.30", 2), ("10.96.0.31", 0), ("10.96.0.32", 3)] {
        api.post("/loadbalancers", &json!({"HostComputeEndpoints": [bep["ID"]], "FrontendVIPs": [vip], "PortMappings": [{"Protocol": 6, "InternalPort": 8080, "ExternalPort": 80, "Flags": flags}]})).ok();
    }
    let from = |side: hns_lab::Side, vip: &str| lab.probe(side, &["connect-tcp", &format!("{vip}:80"), "--timeout-ms", "1500"]).unwrap();
    let backend = format!("local={}:8080", ip_of(&bep));
    let o = from(hns_lab::Side::Host, "10.96.0.30");
    assert!(o.status.success() && o.stdout.contains(&backend), "LocalRoutedVIP: the host reaches the backend: {o:?}");
    let o = from(hns_lab::Side::Host, "10.96.0.31");
    assert!(!o.status.success(), "without LocalRoutedVIP the host does not reach the backend: {o:?}");
    let o = from(hns_lab::Side::Host, "10.96.0.32");
    assert!(o.status.success() && o.stdout.contains(&backend), "ILB with LocalRoutedVIP: the host reaches the backend: {o:?}");
    lab.in_lan("ip", &["route", "add", "10.96.0.0/24", "via", &hns_lab::HOST_UPLINK.to_string()]).unwrap();
    assert!(from(hns_lab::Side::Lan, "10.96.0.30").status.success(), "a public LocalRoutedVIP service is reached from the LAN too");
    let o = from(hns_lab::Side::Lan, "10.96.0.32");
    assert!(!o.status.success() && o.stderr.to_lowercase().contains("refused"), "the internal one is refused from the LAN: {o:?}");
}

/// UDP: flows spread over the backends; a client that keeps its source port stays on one
/// backend, moves to another when that backend leaves (its conntrack entries are cleared), and
/// is refused (ICMP port unreachable) when none is left.
#[test]
fn udp_spreads_and_flows_of_a_removed_backend_move() {
    let lab = Lab::new().expect("lab");
    let _d = lab.start_hnsd(&[]).expect("hnsd starts");
    let api = Api::new(&lab);
    let (client, _) = api.container("nat", "client", json!({}));
    let mut eps = Vec::new();
    let mut servers = Vec::new();
    for name in ["dns1", "dns2"] {
        let (ns, ep) = api.container("nat", name, json!({}));
        servers.push(serve_udp(&lab, &ns, &format!("{}:7000", ip_of(&ep))));
        eps.push(ep);
    }
    let body = |eps: &[&Value]| {
        let ids: Vec<&Value> = eps.iter().map(|e| &e["ID"]).collect();
        json!({"HostComputeEndpoints": ids, "FrontendVIPs": ["10.96.0.40"], "PortMappings": [{"Protocol": 17, "InternalPort": 7000, "ExternalPort": 53}]})
    };
    let lb = api.post("/loadbalancers", &body(&[&eps[0], &eps[1]])).ok();
    let id = lb["ID"].as_str().unwrap();
    let got = exchanges(&lab, &client, "send-udp 10.96.0.40:53 q --timeout-ms 2000", 60);
    for ep in &eps {
        let n = got.iter().filter(|(_, l)| *l == ip_of(ep)).count();
        assert!(n >= 10, "each backend gets a share of 60 UDP flows: {got:?}");
    }
    assert!(got.iter().all(|(p, _)| p != "failed"), "{got:?}");
    // One flow (fixed source port): one backend, every time.
    let flow = || exchanges(&lab, &client, "send-udp 10.96.0.40:53 q --timeout-ms 2000 --from-port 40000", 5);
    let first = flow();
    let pinned = first[0].1.clone();
    assert!(first.iter().all(|(_, l)| *l == pinned), "one flow stays on one backend: {first:?}");
    // Its backend leaves: the same flow goes to the other one (its conntrack entry was
    // cleared; the server on the old backend still runs, so a stale entry would still answer).
    let (gone, stays) = if pinned == ip_of(&eps[0]) { (&eps[0], &eps[1]) } else { (&eps[1], &eps[0]) };
    api.post(&format!("/loadbalancers/{id}"), &body(&[stays])).ok();
    let after = flow();
    assert!(after.iter().all(|(_, l)| *l == ip_of(stays)), "the flow moved off {}: {after:?}", ip_of(gone));
    // No backend left: refused at once, not black-holed.
    api.post(&format!("/loadbalancers/{id}"), &body(&[])).ok();
    let o = in_ns(&lab, &client, &probe(), &["send-udp", "10.96.0.40:53", "q", "--timeout-ms", "3000", "--from-port", "40000"]);
    assert!(!o.status.success() && o.stderr.to_lowercase().contains("refused"), "refused, not timed out: {}", o.stderr);
}

/// IPv6: a dual-stack nat network, a load balancer with Flags IPv6 and an IPv6 VIP; TCP
/// reaches both IPv6 backends, and a backend reaching its own VIP sees the IPv6 SourceVIP.
#[test]
fn ipv6_frontend_reaches_ipv6_backends() {
    let lab = Lab::new().expect("lab");
    let _d = lab.start_hnsd(&[]).expect("hnsd starts");
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "ds", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.93.0.0/24"}, {"IpAddressPrefix": "fd00:93::/64"}]}]})).ok();
    let (client, _) = api.container("ds", "client", json!({}));
    let mut eps = Vec::new();
    let mut nss = Vec::new();
    let mut servers = Vec::new();
    for name in ["v6web1", "v6web2"] {
        let (ns, ep) = api.container("ds", name, json!({}));
        servers.push(serve(&lab, &ns, &format!("[{}]:8080", ip6_of(&ep))));
        eps.push(ep);
        nss.push(ns);
    }
    let ids: Vec<&Value> = eps.iter().map(|e| &e["ID"]).collect();
    api.post("/loadbalancers", &json!({"HostComputeEndpoints": ids, "Flags": 2, "FrontendVIPs": ["fd00:96::10"], "SourceVIP": "fd00:96::99", "PortMappings": [{"Protocol": 6, "InternalPort": 8080, "ExternalPort": 80}]})).ok();
    // A fresh compartment's IPv6 address may still be in duplicate address detection: wait
    // until the client can connect at all before counting.
    let up = eventually(Duration::from_secs(10), || in_ns(&lab, &client, &probe(), &["connect-tcp", "[fd00:96::10]:80", "--timeout-ms", "500"]).status.success());
    assert!(up, "the IPv6 VIP is never reached from the client");
    let got = exchanges(&lab, &client, "connect-tcp [fd00:96::10]:80 --timeout-ms 2000", 60);
    assert!(got.iter().all(|(p, _)| p != "failed"), "{got:?}");
    for ep in &eps {
        let n = got.iter().filter(|(_, l)| *l == ip6_of(ep)).count();
        assert!(n >= 10, "each IPv6 backend gets a share of 60 connections: {got:?}");
    }
    let me = ip6_of(&eps[0]);
    let got = exchanges(&lab, &nss[0], "connect-tcp [fd00:96::10]:80 --timeout-ms 2000", 30);
    assert!(got.iter().all(|(p, _)| p != "failed"), "IPv6 hairpin: {got:?}");
    let own: Vec<&(String, String)> = got.iter().filter(|(_, l)| *l == me).collect();
    assert!(!own.is_empty() && own.iter().all(|(p, _)| p == "fd00:96::99"), "landed on itself, it sees the IPv6 SourceVIP: {got:?}");
    // DSR over IPv6: the backends own fd00:96::50 and get the packets addressed to it (nodad:
    // a tentative address cannot be bound yet).
    let mut dsr_servers = Vec::new();
    for ns in &nss {
        let o = in_ns(&lab, ns, "ip", &["-6", "addr", "add", "fd00:96::50/128", "dev", "lo", "nodad"]);
        assert!(o.status.success(), "{o:?}");
        dsr_servers.push(serve(&lab, ns, "[fd00:96::50]:80"));
    }
    api.post("/loadbalancers", &json!({"HostComputeEndpoints": ids, "Flags": 3, "FrontendVIPs": ["fd00:96::50"], "PortMappings": [{"Protocol": 6, "InternalPort": 80, "ExternalPort": 80}]})).ok();
    let client_ip = ip6_of(&api.get("/endpoints").ok().as_array().unwrap().iter().find(|e| e["Name"] == "client").unwrap().clone());
    let before: Vec<u64> = nss.iter().map(|n| accepted(&lab, n)).collect();
    let got = exchanges(&lab, &client, "connect-tcp [fd00:96::50]:80 --timeout-ms 2000", 30);
    assert!(got.iter().all(|(p, l)| *p == client_ip && l == "fd00:96::50"), "IPv6 DSR: the backend sees the client and the VIP: {got:?}");
    let served: Vec<u64> = nss.iter().zip(&before).map(|(n, b)| accepted(&lab, n) - b).collect();
    assert!(served.iter().all(|n| *n >= 3) && served.iter().sum::<u64>() == 30, "IPv6 DSR spreads over both backends: {served:?}");
}


/// TCP connections a compartment has accepted so far (`PassiveOpens` of /proc/net/snmp, read
/// from inside it): which DSR backend served, since each answers from the same VIP.
fn accepted(lab: &Lab, ns: &Value) -> u64 {
    let o = in_ns(lab, ns, "awk", &["/^Tcp:/ { v = $7 } END { print v }", "/proc/net/snmp"]);
    o.stdout.trim().parse().unwrap_or_else(|_| panic!("PassiveOpens: {o:?}"))
}

/// A backend of a direct-return service owns the VIP, as the docs ask.
fn own_vip(lab: &Lab, ns: &Value, vip: &str) {
    let addr = format!("{vip}/32");
    for (prog, args) in [("ip", vec!["addr", "add", &addr, "dev", "lo"]), ("sysctl", vec!["-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"])] {
        let o = in_ns(lab, ns, prog, &args);
        assert!(o.status.success(), "{prog} {args:?}: {o:?}");
    }
}

/// The routing table of the (only) DSR rule: the backend's mark, in decimal.
fn rules_table(lab: &Lab) -> u64 {
    let out = lab.in_host("ip", &["rule", "show", "pref", "9000"]).unwrap().stdout;
    let t = out.split_whitespace().skip_while(|w| *w != "lookup").nth(1).unwrap_or_else(|| panic!("no DSR rule: {out}"));
    t.parse().unwrap_or_else(|_| panic!("table {t}"))
}

/// DSR (Flags 1) and PreserveDIP (port-mapping flag 8): the backend gets the packet addressed
/// to the VIP (no DNAT) and sees the real client (no SNAT); connections spread over the
/// backends; a backend that leaves gets no more connections and its policy rule goes; nothing
/// is left behind when the load balancer goes. Ports that differ are refused by field.
#[test]
fn dsr_and_preserve_dip_deliver_to_the_vip() {
    let lab = Lab::new().expect("lab");
    let d = lab.start_hnsd(&["--reconcile-interval", "500ms"]).expect("hnsd starts");
    let api = Api::new(&lab);
    let (client, cep) = api.container("nat", "client", json!({}));
    let mut eps = Vec::new();
    let mut nss = Vec::new();
    let mut servers = Vec::new();
    for name in ["dsr1", "dsr2"] {
        let (ns, ep) = api.container("nat", name, json!({}));
        own_vip(&lab, &ns, "10.96.0.50");
        servers.push(serve(&lab, &ns, "10.96.0.50:80"));
        eps.push(ep);
        nss.push(ns);
    }
    let pm = json!([{"Protocol": 6, "InternalPort": 8080, "ExternalPort": 80}]);
    let r = api.post("/loadbalancers", &json!({"HostComputeEndpoints": [eps[0]["ID"]], "Flags": 1, "FrontendVIPs": ["10.96.0.50"], "PortMappings": pm}));
    assert_eq!((r.status, r.body["field"].as_str()), (400, Some("PortMappings[0].InternalPort")), "{}", r.raw);
    assert_eq!(api.get("/loadbalancers").ok(), json!([]), "nothing was created");
    let body = |eps: &[&Value]| {
        let ids: Vec<&Value> = eps.iter().map(|e| &e["ID"]).collect();
        json!({"HostComputeEndpoints": ids, "Flags": 1, "FrontendVIPs": ["10.96.0.50"], "PortMappings": [{"Protocol": 6, "InternalPort": 80, "ExternalPort": 80}]})
    };
    let lb = api.post("/loadbalancers", &body(&[&eps[0], &eps[1]])).ok();
    let id = lb["ID"].as_str().unwrap();
    let before: Vec<u64> = nss.iter().map(|n| accepted(&lab, n)).collect();
    let got = exchanges(&lab, &client, "connect-tcp 10.96.0.50:80 --timeout-ms 2000", 40);
    assert!(got.iter().all(|(p, l)| *p == ip_of(&cep) && l == "10.96.0.50"), "the backend sees the client itself and the VIP as destination: {got:?}");
    // The host forwards these packets out of the bridge they came in by: it must not redirect
    // the client to a backend (the client would then bypass the load balancer).
    let via_gateway = || {
        let route = in_ns(&lab, &client, "ip", &["route", "get", "10.96.0.50"]).stdout;
        assert!(route.contains(&format!("via {} ", gateway(&lab, &client))), "the client still sends to its gateway: {route}");
    };
    via_gateway();
    let served: Vec<u64> = nss.iter().zip(&before).map(|(n, b)| accepted(&lab, n) - b).collect();
    assert!(served.iter().all(|n| *n >= 5) && served.iter().sum::<u64>() == 40, "40 connections spread over both backends: {served:?}");
    // From the LAN: routed in through the host's uplink, same delivery.
    lab.in_lan("ip", &["route", "add", "10.96.0.0/24", "via", &hns_lab::HOST_UPLINK.to_string()]).unwrap();
    let o = lab.probe(hns_lab::Side::Lan, &["connect-tcp", "10.96.0.50:80", "--timeout-ms", "2000"]).unwrap();
    assert!(o.status.success() && o.stdout.contains("local=10.96.0.50:80") && !o.stdout.contains("peer=172."), "from the LAN: {o:?}");
    // dsr1 leaves: every connection goes to dsr2, and dsr1's rule is gone.
    let rules = || lab.in_host("ip", &["rule", "show", "pref", "9000"]).unwrap().stdout;
    assert_eq!(rules().lines().count(), 2, "one rule per backend: {}", rules());
    api.post(&format!("/loadbalancers/{id}"), &body(&[&eps[1]])).ok();
    assert_eq!(rules().lines().count(), 1, "{}", rules());
    let before: Vec<u64> = nss.iter().map(|n| accepted(&lab, n)).collect();
    let got = exchanges(&lab, &client, "connect-tcp 10.96.0.50:80 --timeout-ms 2000", 10);
    assert!(got.iter().all(|(_, l)| l == "10.96.0.50"), "{got:?}");
    let diag = || {
        let show = |p: &str, a: &[&str]| lab.in_host(p, a).map(|o| o.stdout).unwrap_or_default();
        format!("rules:\n{}routes:\n{}neighbours:\n{}{}", show("ip", &["rule"]), show("ip", &["route", "show", "table", "all"]), show("ip", &["neigh"]), show("nft", &["list", "table", "inet", "hns_lb"]))
    };
    via_gateway();
    let served = (accepted(&lab, &nss[0]) - before[0], accepted(&lab, &nss[1]) - before[1]);
    assert_eq!(served, (0, 10), "the backend that left gets nothing ({} left, {} stays)\n{}", ip_of(&eps[0]), ip_of(&eps[1]), diag());
    // The remaining backend's rule and route deleted by hand: the reconciler puts them back.
    let table = rules_table(&lab).to_string();
    // (`ip rule del` fails unless the rule was there; a pass may put it back at once, so its
    // absence is not checked in between.)
    lab.in_host("ip", &["rule", "del", "pref", "9000"]).unwrap();
    assert!(eventually(Duration::from_secs(10), || rules().lines().count() == 1), "the reconciler put the rule back");
    let got = exchanges(&lab, &client, "connect-tcp 10.96.0.50:80 --timeout-ms 2000", 5);
    assert!(got.len() == 5 && got.iter().all(|(_, l)| l == "10.96.0.50"), "delivered again: {got:?}\n{}", diag());
    lab.in_host("ip", &["route", "flush", "table", &table]).unwrap();
    assert!(eventually(Duration::from_secs(10), || !lab.in_host("ip", &["route", "show", "table", &table]).unwrap().stdout.is_empty()), "the reconciler put the route back");
    // PreserveDIP on a port mapping of a NAT load balancer: the same delivery for that port.
    assert_eq!(api.delete(&format!("/loadbalancers/{id}")).status, 204);
    assert_eq!(rules(), "", "no rule left behind");
    own_vip(&lab, &nss[1], "10.96.0.51");
    let _s = serve(&lab, &nss[1], "10.96.0.51:80");
    api.post("/loadbalancers", &json!({"HostComputeEndpoints": [eps[1]["ID"]], "FrontendVIPs": ["10.96.0.51"], "PortMappings": [{"Protocol": 6, "InternalPort": 80, "ExternalPort": 80, "Flags": 8}]})).ok();
    let o = in_ns(&lab, &client, &probe(), &["connect-tcp", "10.96.0.51:80", "--timeout-ms", "2000"]);
    assert!(o.status.success() && o.stdout.contains(&format!("peer={}:", ip_of(&cep))) && o.stdout.contains("local=10.96.0.51:80"), "PreserveDIP: {o:?}");
    // Uninstall removes the policy rules too.
    assert_eq!(rules().lines().count(), 1, "{}", rules());
    d.stop().unwrap();
    let hnsd = Lab::bin("hnsd").unwrap();
    let run = lab.run_dir();
    lab.in_host(hnsd.to_str().unwrap(), &["--cleanup", "--run-dir", run.to_str().unwrap(), "--state-dir", lab.state_dir().to_str().unwrap(), "--socket", lab.socket().to_str().unwrap()]).unwrap();
    assert_eq!(rules(), "", "hnsd --cleanup leaves no rule");
}

/// One connection to `addr` from `from`, retried for up to 10 s until `ok` accepts its
/// `(peer, local)` (a remote backend's path settles once the load balancer exists); the last
/// exchange, and whether it was accepted.
fn settled(lab: &Lab, from: &Value, addr: &str, ok: impl Fn(&(String, String)) -> bool) -> (bool, Vec<(String, String)>) {
    let mut seen = Vec::new();
    let cmd = format!("connect-tcp {addr} --timeout-ms 1000");
    let done = eventually(Duration::from_secs(10), || {
        seen = exchanges(lab, from, &cmd, 1);
        seen.first().is_some_and(&ok)
    });
    (done, seen)
}

/// Two hosts: an overlay network `ov` on `overlay` subnets and a nat network `n` on `nat`
/// subnets (created on host 0), and a backend `b` on host 1 serving TCP on port 7000 of its
/// address of the family `v6`, already known to host 0 as a remote endpoint.
struct RemoteLab {
    /// hnsd of each host (first field: dropped before the cluster).
    daemons: Vec<hns_lab::Daemon>,
    apis: Vec<Api>,
    /// The backend's endpoint (as host 1 returned it).
    eb: Value,
    _server: hns_lab::Proc,
    cluster: hns_lab::ClusterLab,
}

impl RemoteLab {
    fn new(overlay: &[&str], nat: &[&str], v6: bool) -> RemoteLab {
        let cluster = hns_lab::ClusterLab::new(2).expect("cluster lab");
        let daemons: Vec<hns_lab::Daemon> = (0..2).map(|i| cluster.start_hnsd(i, &["--no-default-network"]).expect("hnsd starts")).collect();
        let apis: Vec<Api> = cluster.hosts().iter().map(Api::new).collect();
        let h0 = cluster.host(0);
        for (driver, subnets, name) in [("overlay", overlay, "ov"), ("nat", nat, "n")] {
            let mut args = vec!["network", "create", "-d", driver];
            subnets.iter().for_each(|s| args.extend(["--subnet", s]));
            args.push(name);
            h0.hnsctl_ok(&args).unwrap();
        }
        assert!(eventually(Duration::from_secs(5), || apis[1].get("/networks/ov").status == 200), "host 1 did not get the overlay network");
        let (b, eb) = apis[1].container("ov", "b", json!({}));
        let addr = if v6 { format!("[{}]:7000", ip6_of(&eb)) } else { format!("{}:7000", ip_of(&eb)) };
        let _server = serve(cluster.host(1), &b, &addr);
        let id = eb["ID"].as_str().unwrap().to_owned();
        assert!(eventually(Duration::from_secs(5), || apis[0].get(&format!("/endpoints/{id}")).status == 200), "host 0 did not learn the remote endpoint");
        RemoteLab { daemons, apis, eb, _server, cluster }
    }

    fn b_id(&self) -> String {
        self.eb["ID"].as_str().unwrap().to_owned()
    }
}

/// A backend on another host (a remote overlay endpoint): a container on a nat network of
/// host 0, host 0 itself (LocalRoutedVIP) and its LAN reach it through the VIP, and the backend
/// sees the SourceVIP, the address of an
/// endpoint of host 0 without a compartment, to which its replies go back through the
/// overlay, also after hnsd restarts. The SourceVIP is required and checked by field; its
/// endpoint cannot be deleted while a load balancer relies on it.
#[test]
fn a_remote_overlay_backend_is_reached_through_the_source_vip() {
    let mut lab = RemoteLab::new(&["10.240.0.0/24"], &["172.30.0.0/24"], false);
    let (apis, eb, b_id, cluster) = (&lab.apis, lab.eb.clone(), lab.b_id(), &lab.cluster);
    let h0 = cluster.host(0);
    // The source endpoint, made with hnsctl (no compartment).
    let src_id = h0.hnsctl_ok(&["endpoint", "create", "--net", "ov", "--ip", "10.240.0.250", "--name", "lb-source"]).unwrap().trim().to_owned();
    let src = apis[0].get(&format!("/endpoints/{src_id}")).ok();
    assert_eq!((src["Name"].as_str(), ip_of(&src).as_str(), src["HostComputeNamespace"].as_str().unwrap_or_default()), (Some("lb-source"), "10.240.0.250", ""));
    let lb = |source_vip: &str| json!({"FrontendVIPs": ["10.96.0.50"], "PortMappings": [{"Protocol": 6, "InternalPort": 7000, "ExternalPort": 80, "Flags": 2}], "HostComputeEndpoints": [b_id], "SourceVIP": source_vip});
    let before = apis[0].get("/loadbalancers").body;
    for (source_vip, says) in [("", "is empty, but HostComputeEndpoints[0] is an overlay endpoint of another host"), ("10.240.0.251", "10.240.0.251 is not the address of an endpoint of this host on overlay network ov")] {
        let r = apis[0].post("/loadbalancers", &lb(source_vip));
        assert_eq!(r.status, 400, "{}", r.raw);
        assert!(r.raw.contains("SourceVIP") && r.raw.contains(says), "{}", r.raw);
    }
    assert_eq!(apis[0].get("/loadbalancers").body, before, "a refused load balancer changed nothing");
    let created = apis[0].post("/loadbalancers", &lb("10.240.0.250")).ok();
    let (c, _) = apis[0].container("n", "c", json!({}));
    let (reached, seen) = settled(h0, &c, "10.96.0.50:80", |(p, _)| p != "failed");
    assert!(reached, "the VIP did not reach the remote backend: {seen:?}");
    assert_eq!(seen, vec![("10.240.0.250".to_owned(), ip_of(&eb))], "the remote backend serves and sees the SourceVIP");
    // The host itself (LocalRoutedVIP) and the LAN reach it the same way.
    let seen_from = |side: hns_lab::Side| h0.probe(side, &["connect-tcp", "10.96.0.50:80", "--timeout-ms", "1500"]).unwrap();
    let o = seen_from(hns_lab::Side::Host);
    assert!(o.status.success() && o.stdout.contains("peer=10.240.0.250:"), "from the host (LocalRoutedVIP): {o:?}");
    h0.in_lan("ip", &["route", "add", "10.96.0.0/24", "via", &hns_lab::HOST_UPLINK.to_string()]).unwrap();
    let o = seen_from(hns_lab::Side::Lan);
    assert!(o.status.success() && o.stdout.contains("peer=10.240.0.250:"), "from the LAN: {o:?}");
    // After a restart the remote backend is known again from the cluster's snapshot: the
    // table, deleted while hnsd was down, is rebuilt before the snapshot arrives (without the
    // remote backend) and completed when it does.
    drop(lab.daemons.remove(0));
    h0.in_host("nft", &["delete", "table", "inet", "hns_lb"]).unwrap();
    lab.daemons.insert(0, cluster.start_hnsd(0, &["--no-default-network"]).expect("hnsd restarts"));
    let (reached, seen) = settled(h0, &c, "10.96.0.50:80", |(p, _)| p == "10.240.0.250");
    assert!(reached, "after a restart the VIP still reaches the remote backend through the SourceVIP: {seen:?}");
    let r = apis[0].delete(&format!("/endpoints/{}", src["ID"].as_str().unwrap()));
    assert!(r.status >= 400 && r.raw.contains("SourceVIP"), "the source endpoint's delete is refused: {}", r.raw);
    assert_eq!(apis[0].delete(&format!("/loadbalancers/{}", created["ID"].as_str().unwrap())).status, 204);
    assert!(apis[0].delete(&format!("/endpoints/{}", src["ID"].as_str().unwrap())).status < 300, "without the load balancer the source endpoint goes");
}

/// A remote backend whose endpoint is deleted on its host leaves the load balancer's data
/// plane on this host as the deletion reaches it through the cluster: with no backend left,
/// connections are refused (reset) instead of timing out.
#[test]
fn a_deleted_remote_backend_stops_receiving_connections() {
    let lab = RemoteLab::new(&["10.243.0.0/24"], &["172.29.0.0/24"], false);
    let (apis, b_id) = (&lab.apis, lab.b_id());
    let h0 = lab.cluster.host(0);
    h0.hnsctl_ok(&["endpoint", "create", "--net", "ov", "--ip", "10.243.0.250"]).unwrap();
    h0.hnsctl_ok(&["lb", "create", "--vip", "10.96.0.51", "--port", "tcp/80:7000", "--backend", &b_id, "--source-vip", "10.243.0.250"]).unwrap();
    let (c, _) = apis[0].container("n", "c", json!({}));
    let connect = || in_ns(h0, &c, &probe(), &["connect-tcp", "10.96.0.51:80", "--timeout-ms", "1500"]);
    assert!(eventually(Duration::from_secs(10), || connect().status.success()), "the VIP reaches the remote backend");
    assert_eq!(apis[1].delete(&format!("/endpoints/{b_id}")).status, 204);
    let mut last = connect();
    let refused = eventually(Duration::from_secs(10), || {
        last = connect();
        !last.status.success() && last.stderr.to_lowercase().contains("refused")
    });
    assert!(refused, "with its only backend deleted on the other host, the VIP refuses: {last:?}");
}

/// The same over IPv6: a dual-stack overlay, an IPv6 load balancer whose SourceVIP is the
/// source endpoint's IPv6 address (neighbour discovery for it answered on the other host
/// with this host's VXLAN address), with a local backend next to the remote one.
#[test]
fn a_remote_ipv6_backend_is_reached_through_the_source_vip() {
    let lab = RemoteLab::new(&["10.242.0.0/24", "fd00:242::/64"], &["172.31.0.0/24", "fd00:31::/64"], true);
    let (apis, eb, b_id) = (&lab.apis, lab.eb.clone(), lab.b_id());
    let h0 = lab.cluster.host(0);
    // A local backend next to the remote one, on the nat network.
    let (l, el) = apis[0].container("n", "l", json!({}));
    let _local = serve(h0, &l, &format!("[{}]:7000", ip6_of(&el)));
    h0.hnsctl_ok(&["endpoint", "create", "--net", "ov", "--ip", "10.242.0.250", "--ip", "fd00:242::fa", "--name", "lb-source"]).unwrap();
    let lb = h0.hnsctl_ok(&["lb", "create", "--vip", "fd00:96::50", "--port", "tcp/80:7000", "--backend", &b_id, "--backend", "l", "--source-vip", "fd00:242::fa"]);
    assert!(lb.is_ok(), "{lb:?}");
    let (c, _) = apis[0].container("n", "c", json!({}));
    let (reached, seen) = settled(h0, &c, "[fd00:96::50]:80", |(p, _)| p != "failed");
    assert!(reached, "the IPv6 VIP did not reach a backend: {seen:?}");
    // 3 s: one lost SYN (TCP retransmits it after 1 s) is load on the machine, not a
    // connection the load balancer failed to deliver.
    let seen = exchanges(h0, &c, "connect-tcp [fd00:96::50]:80 --timeout-ms 3000", 30);
    let on = |backend: String| seen.iter().filter(|(_, l)| *l == backend).map(|(p, _)| p.clone()).collect::<Vec<_>>();
    let (remote, local) = (on(ip6_of(&eb)), on(ip6_of(&el)));
    assert_eq!(remote.len() + local.len(), 30, "every connection lands on one of the two backends: {seen:?}");
    assert!(!remote.is_empty() && !local.is_empty(), "both backends serve: {seen:?}");
    assert!(remote.iter().all(|p| p == "fd00:242::fa"), "the remote backend sees the IPv6 SourceVIP: {seen:?}");
    // The client is on the local backend's own network: that connection comes from the
    // network's gateway (see "Hairpin" in docs/policies.md), never from the SourceVIP.
    assert!(local.iter().all(|p| p == "fd00:31::1"), "the local backend sees its network's gateway: {seen:?}");
}
