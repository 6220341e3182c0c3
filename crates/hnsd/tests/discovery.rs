//! Service discovery in the lab: the responder on each network's gateway answers its
//! containers' names the moment attach returns, forgets them at detach, keeps networks
//! apart, and forwards everything else to real upstreams (dnsmasq on the lab LAN).

mod common;

use std::time::{Duration, Instant};

use common::*;
use hns_lab::{LAN_ROUTER, Lab, Side};
use serde_json::{Value, json};

fn probe() -> String {
    Lab::bin("labprobe").unwrap().display().to_string()
}

/// `labprobe dns` from inside a compartment.
fn query(lab: &Lab, ns: &Value, server: &str, name: &str, qtype: &str) -> (bool, String) {
    let o = in_ns(lab, ns, &probe(), &["dns", server, name, qtype, "--timeout-ms", "3000"]);
    (o.status.success(), format!("{}{}", o.stdout, o.stderr))
}

fn gateway(api: &Api, net: &str) -> String {
    api.get(&format!("/networks/{net}")).ok()["Ipams"][0]["Subnets"][0]["Routes"][0]["NextHop"].as_str().unwrap().to_owned()
}

/// dnsmasq on the LAN router's address, answering example.test names.
fn lan_dnsmasq(lab: &Lab) -> hns_lab::Proc {
    let p = lab
        .spawn_in_lan(
            "dnsmasq",
            &["--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", &format!("--listen-address={LAN_ROUTER}"), "--address=/example.test/192.0.2.7", "--port=53", "--log-facility=-"],
        )
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || lab.probe(Side::Lan, &["dns", &LAN_ROUTER.to_string(), "www.example.test", "A", "--timeout-ms", "300"]).unwrap().status.success()),
        "dnsmasq did not start"
    );
    p
}

#[test]
fn a_sibling_resolves_at_once_and_is_forgotten_at_detach() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let gw = gateway(&api, "nat");
    let (a, _) = api.container("nat", "a", json!({}));
    // Attach returns, then the very first query answers: no sleep, no retry.
    let (b, eb) = api.container("nat", "b", json!({"Aliases": ["db"]}));
    let (ok, out) = query(&lab, &a, &gw, "b", "A");
    assert!(ok && out.contains(&format!("answer={}", ip_of(&eb))), "{out}");
    let (ok, out) = query(&lab, &a, &gw, "db", "A");
    assert!(ok && out.contains(&ip_of(&eb)), "alias: {out}");
    // Reverse lookup.
    let b_ip = ip_of(&eb);
    let octets: Vec<&str> = b_ip.split('.').rev().collect();
    let (ok, out) = query(&lab, &a, &gw, &format!("{}.in-addr.arpa", octets.join(".")), "PTR");
    assert!(ok && out.contains("answer=b"), "PTR: {out}");
    // The compartment's resolv.conf points at the responder, so ordinary programs find it.
    let text = lab.in_host("cat", &[a["ResolvConfPath"].as_str().unwrap()]).unwrap().stdout;
    assert!(text.contains(&format!("nameserver {gw}")), "{text}");
    // Detach: the name is gone right away.
    api.post(
        &format!("/namespaces/{}", b["ID"].as_str().unwrap()),
        &json!({"ResourceType": "Endpoint", "RequestType": "Remove", "Settings": {"EndpointId": eb["ID"]}}),
    )
    .ok();
    let (ok, out) = query(&lab, &a, &gw, "b", "A");
    assert!(!ok && !out.contains(&ip_of(&eb)), "b still resolves after detach: {out}");
}

#[test]
fn networks_do_not_see_each_others_names() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "other", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.93.0.0/24"}]}]})).ok();
    let (_a, ea) = api.container("nat", "a", json!({}));
    let (c, _) = api.container("other", "c", json!({}));
    // Its own responder does not know a...
    let (_, out) = query(&lab, &c, &gateway(&api, "other"), "a", "A");
    assert!(!out.contains(&ip_of(&ea)), "other network resolved a: {out}");
    // ...and the nat network's responder does not answer it at all.
    let (ok, out) = query(&lab, &c, &gateway(&api, "nat"), "a", "A");
    assert!(!ok && !out.contains(&ip_of(&ea)), "the nat responder answered another network: {out}");
}

#[test]
fn other_names_are_forwarded_and_a_dead_upstream_is_skipped_quickly() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let _dnsmasq = lan_dnsmasq(&lab);
    // The first server does not exist (packets vanish); the second is dnsmasq.
    api.post(
        "/networks",
        &json!({"Name": "fw", "Dns": {"Domain": "corp.example", "ServerList": ["198.51.100.99", LAN_ROUTER.to_string()]}, "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.92.0.0/24"}]}]}),
    )
    .ok();
    let (a, _) = api.container("fw", "a", json!({}));
    let (_b, eb) = api.container("fw", "b", json!({}));
    let gw = gateway(&api, "fw");
    let t = Instant::now();
    let (ok, out) = query(&lab, &a, &gw, "www.example.test", "A");
    let took = t.elapsed();
    assert!(ok && out.contains("answer=192.0.2.7"), "{out}");
    // Well inside a client's first retry (glibc waits 5 s).
    assert!(took < Duration::from_millis(2500), "forwarding took {took:?}");
    // The suffix works for local names.
    let (ok, out) = query(&lab, &a, &gw, "b.corp.example", "A");
    assert!(ok && out.contains(&ip_of(&eb)), "{out}");
    let text = lab.in_host("cat", &[a["ResolvConfPath"].as_str().unwrap()]).unwrap().stdout;
    assert!(text.contains("search corp.example") && text.contains(&format!("nameserver {gw}")), "{text}");
}

#[test]
fn a_burst_of_queries_loses_none_while_endpoints_come_and_go() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let gw = gateway(&api, "nat");
    let (a, _) = api.container("nat", "a", json!({}));
    api.container("nat", "stable", json!({}));
    let netns = format!("--net={}", a["NetNsPath"].as_str().unwrap());
    let burst = std::process::Command::new("nsenter")
        .args(["-t", &lab.host().pid().to_string(), "-n", "-m", "nsenter", &netns, &probe(), "dns-burst", &gw, "stable", "10000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // 200 attach/detach cycles meanwhile.
    let ns = api.post("/namespaces", &json!({"Name": "churn"})).ok();
    for i in 0..200 {
        let ep = api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "HostComputeNamespace": ns["ID"], "Name": format!("churn{i}")})).ok();
        assert_eq!(api.delete(&format!("/endpoints/{}", ep["ID"].as_str().unwrap())).status, 204);
    }
    let out = burst.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("sent=10000 answered=10000 lost=0"), "{text}{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn automatic_dns_can_be_turned_off_and_on() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (a, _) = api.container("nat", "a", json!({}));
    let (_b, eb) = api.container("nat", "b", json!({}));
    let gw = gateway(&api, "nat");
    let off = json!({"ResourceType": "Policy", "RequestType": "Update", "Settings": {"Policies": [{"Type": "AutomaticDNS", "Settings": {"Enable": false}}]}});
    api.post("/networks/nat", &off).ok();
    let (ok, _) = query(&lab, &a, &gw, "b", "A");
    assert!(!ok, "discovery still answers after AutomaticDNS off");
    let on = json!({"ResourceType": "Policy", "RequestType": "Remove", "Settings": {"Policies": [{"Type": "AutomaticDNS", "Settings": {"Enable": false}}]}});
    api.post("/networks/nat", &on).ok();
    let (ok, out) = query(&lab, &a, &gw, "b", "A");
    assert!(ok && out.contains(&ip_of(&eb)), "{out}");
}

#[test]
fn names_still_resolve_after_an_hnsd_restart() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let gw = gateway(&api, "nat");
    let (a, _) = api.container("nat", "a", json!({}));
    let (_b, eb) = api.container("nat", "b", json!({}));
    d.stop().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let (ok, out) = query(&lab, &a, &gw, "b", "A");
    assert!(ok && out.contains(&ip_of(&eb)), "after restart: {out}");
}
