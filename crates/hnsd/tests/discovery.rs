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
    // An endpoint without a name of its own answers to its compartment's: that name comes with
    // its attach and goes with its delete too.
    let ns = api.post("/namespaces", &json!({"Name": "c"})).ok();
    let ec = api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "HostComputeNamespace": ns["ID"]})).ok();
    let (ok, out) = query(&lab, &a, &gw, "c", "A");
    assert!(ok && out.contains(&format!("answer={}", ip_of(&ec))), "compartment name: {out}");
    assert_eq!(api.delete(&format!("/endpoints/{}", ec["ID"].as_str().unwrap())).status, 204);
    let (ok, out) = query(&lab, &a, &gw, "c", "A");
    assert!(!ok && !out.contains(&ip_of(&ec)), "c still resolves after its endpoint was deleted: {out}");
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

/// True when nothing came back at all: not even REFUSED (any reply would make the responder a
/// reflector for spoofed sources).
fn unanswered((ok, out): &(bool, String)) -> bool {
    !ok && !out.contains("rcode=")
}

/// Whether a TCP handshake with port 53 of `server` completes from the LAN (`labprobe
/// connect-tcp` fails either way, since a DNS server sends no greeting: "connect to" means the
/// handshake itself failed).
fn lan_tcp_connects(lab: &Lab, server: &str) -> bool {
    let out = lab.probe(Side::Lan, &["connect-tcp", server, "--timeout-ms", "1000"]).unwrap();
    !format!("{}{}", out.stdout, out.stderr).contains("connect to tcp")
}

fn lan_query(lab: &Lab, server: &str, name: &str, qtype: &str) -> (bool, String) {
    let o = lab.probe(Side::Lan, &["dns", server, name, qtype, "--timeout-ms", "1500"]).unwrap();
    (o.status.success(), format!("{}{}", o.stdout, o.stderr))
}

/// The network's gateways, IPv4 first: (v4, v6) of a dual-stack network.
fn gateways(api: &Api, net: &str) -> (String, String) {
    let n = api.get(&format!("/networks/{net}")).ok();
    let hop = |i: usize| n["Ipams"][0]["Subnets"][i]["Routes"][0]["NextHop"].as_str().unwrap().to_owned();
    (hop(0), hop(1))
}

#[test]
fn the_lan_gets_no_answer_from_a_responder_over_either_family() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let _dnsmasq = lan_dnsmasq(&lab);
    api.post(
        "/networks",
        &json!({"Name": "ds", "Dns": {"ServerList": [LAN_ROUTER.to_string()]}, "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.95.0.0/24"}, {"IpAddressPrefix": "fd00:95::/64"}]}]}),
    )
    .ok();
    let (a, ea) = api.container("ds", "a", json!({}));
    let (gw4, gw6) = gateways(&api, "ds");
    // The LAN routes the network's subnets to the host, so the gateways are reachable from it.
    lab.in_lan("ip", &["route", "add", "10.95.0.0/24", "via", &hns_lab::HOST_UPLINK.to_string()]).unwrap();
    lab.in_lan("ip", &["-6", "route", "add", "fd00:95::/64", "via", &hns_lab::HOST_UPLINK_V6.to_string()]).unwrap();
    for gw in [&gw4, &gw6] {
        lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", gw]).unwrap_or_else(|e| panic!("the LAN reaches {gw}: {e}"));
        // Neither the container names nor the forwarding (an open resolver) are served to the LAN.
        for (name, qtype) in [("a", "A"), ("www.example.test", "A")] {
            let r = lan_query(&lab, gw, name, qtype);
            assert!(unanswered(&r), "the LAN got an answer from {gw} for {name}: {}", r.1);
        }
        let port = if gw.contains(':') { format!("[{gw}]:53") } else { format!("{gw}:53") };
        assert!(!lan_tcp_connects(&lab, &port), "the LAN opened a TCP connection to {port}");
    }
    // Positive control: the network's own container resolves its names and forwarded names on
    // both gateways.
    for gw in [&gw4, &gw6] {
        let (ok, out) = query(&lab, &a, gw, "a", "A");
        assert!(ok && out.contains(&format!("answer={}", ip_of(&ea))), "{gw}: {out}");
        let (ok, out) = query(&lab, &a, gw, "www.example.test", "A");
        assert!(ok && out.contains("answer=192.0.2.7"), "{gw}: {out}");
    }
}

#[test]
fn networks_do_not_see_each_others_names_over_ipv6() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    for (name, n) in [("red", 96), ("blue", 97)] {
        api.post("/networks", &json!({"Name": name, "Ipams": [{"Subnets": [{"IpAddressPrefix": format!("10.{n}.0.0/24")}, {"IpAddressPrefix": format!("fd00:{n}::/64")}]}]})).ok();
    }
    let (a, ea) = api.container("red", "a", json!({}));
    let (c, _) = api.container("blue", "c", json!({}));
    let (red4, red6) = gateways(&api, "red");
    // c reaches red's gateways (the host's own addresses), but its responder does not answer c.
    for gw in [&red4, &red6] {
        assert!(ping(&lab, &c, gw), "blue reaches {gw}");
        let r = query(&lab, &c, gw, "a", "A");
        assert!(unanswered(&r), "red's responder at {gw} answered blue: {}", r.1);
    }
    // Positive control: red's own container resolves over both families.
    for gw in [&red4, &red6] {
        let (ok, out) = query(&lab, &a, gw, "a", "A");
        assert!(ok && out.contains(&format!("answer={}", ip_of(&ea))), "{gw}: {out}");
    }
}

#[test]
fn a_container_on_an_external_network_gets_no_answer_from_a_nat_responder() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let gw = gateway(&api, "nat");
    let (a, ea) = api.container("nat", "a", json!({}));
    let u = lab.add_uplink(1, false).unwrap();
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", "transparent", "--subnet", &u.subnet, "--gateway", &u.router.to_string(), "-o", &iface, "tnet"]).unwrap();
    lab.hnsctl_ok(&["run", "-d", "--net", "tnet", "--name", "web", "--ip", &u.addr(50).to_string(), "--", "sleep", "300"]).unwrap();
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "web", "--"];
        all.extend_from_slice(args);
        let o = lab.hnsctl(&all).unwrap();
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    };
    // The container sends to the nat gateway through the host's leg of the transparent network.
    let (ok, out) = exec(&["ip", "route", "add", &format!("{gw}/32"), "via", &u.host_ip.to_string()]);
    assert!(ok, "{out}");
    let (ok, out) = exec(&["ping", "-c1", "-W2", &gw]);
    assert!(ok, "the transparent container reaches the nat gateway: {out}");
    let r = exec(&[&probe(), "dns", &gw, "a", "A", "--timeout-ms", "1500"]);
    assert!(unanswered(&r), "the nat responder answered a transparent container: {}", r.1);
    let (ok, out) = query(&lab, &a, &gw, "a", "A");
    assert!(ok && out.contains(&format!("answer={}", ip_of(&ea))), "positive control: {out}");
}
