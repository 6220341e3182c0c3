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
    // SourceIP affinity: one client, one backend.
    let id = lb["ID"].as_str().unwrap();
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
    // Restart: still works. Flushed table: the reconciler rebuilds it.
    d.stop().unwrap();
    let _d2 = lab.start_hnsd(&[]).expect("hnsd restarts");
    assert!(conn(&client, "10.96.0.10").status.success(), "after a restart");
    lab.in_host("nft", &["flush", "table", "inet", "hns_lb"]).unwrap();
    assert!(eventually(Duration::from_secs(10), || conn(&client, "10.96.0.10").status.success()), "the reconciler rebuilt the flushed table");
}
