//! ACL and NetworkACL policies with real packets: lab namespaces, nat networks, labprobe
//! servers inside compartments and clients in neighbours, the host and the LAN.

mod common;

use std::time::Duration;

use common::*;
use hns_lab::{Lab, Side};
use serde_json::{Value, json};

fn lab_with_hnsd(args: &[&str]) -> (Lab, hns_lab::Daemon, Api) {
    let lab = Lab::new().expect("lab");
    let d = lab.start_hnsd(args).expect("hnsd starts");
    let api = Api::new(&lab);
    (lab, d, api)
}

fn probe() -> String {
    hns_lab::Lab::bin("labprobe").unwrap().to_str().unwrap().to_owned()
}

/// A labprobe server (`serve-tcp` or `serve-udp`) inside a compartment, ready when returned.
fn serve(lab: &Lab, ns: &Value, mode: &str, addr: &str) -> hns_lab::Proc {
    let netns = format!("--net={}", ns["NetNsPath"].as_str().unwrap());
    let p = lab.spawn_in_host("nsenter", &[&netns, &probe(), mode, addr]).unwrap();
    // From inside the compartment the server's address is local (loopback): no ACL applies.
    let ready = eventually(Duration::from_secs(5), || {
        let cmd = if mode == "serve-tcp" { vec!["connect-tcp", addr, "--timeout-ms", "300"] } else { vec!["send-udp", addr, "x", "--timeout-ms", "300"] };
        in_ns(lab, ns, &probe(), &cmd).status.success()
    });
    assert!(ready, "{mode} {addr} did not start");
    p
}

fn tcp(lab: &Lab, from: &Value, addr: &str) -> bool {
    in_ns(lab, from, &probe(), &["connect-tcp", addr, "--timeout-ms", "800"]).status.success()
}

fn udp(lab: &Lab, from: &Value, addr: &str) -> bool {
    in_ns(lab, from, &probe(), &["send-udp", addr, "hi", "--timeout-ms", "800"]).status.success()
}

fn acl(v: Value) -> Value {
    json!({"Type": "ACL", "Settings": v})
}

fn modify(api: &Api, ep: &Value, request: &str, policies: Value) -> common::Reply {
    api.post(&format!("/endpoints/{}", ep["ID"].as_str().unwrap()), &json!({"ResourceType": "Policy", "RequestType": request, "Settings": {"Policies": policies}}))
}

#[test]
fn protocols_ports_ranges_and_directions_between_neighbours() {
    let (lab, _d, api) = lab_with_hnsd(&[]);
    let (b, eb) = api.container("nat", "b", json!({}));
    let (a, ea) = api.container(
        "nat",
        "a",
        json!({"Policies": [
            acl(json!({"Action": "Allow", "Direction": "In", "Protocols": "tcp", "LocalPorts": "7000,8000-8080", "Priority": 100})),
            acl(json!({"Action": "Allow", "Direction": "In", "Protocols": "17", "LocalPorts": "7002", "RemoteAddresses": ip_of(&eb), "Priority": 100})),
            acl(json!({"Action": "Allow", "Direction": "Out", "Protocols": "256", "Priority": 65500})),
        ]}),
    );
    let ip_a = ip_of(&ea);
    let _s = [serve(&lab, &a, "serve-tcp", &format!("{ip_a}:7000")), serve(&lab, &a, "serve-tcp", &format!("{ip_a}:7001")), serve(&lab, &a, "serve-tcp", &format!("{ip_a}:8005"))];
    let _u = [serve(&lab, &a, "serve-udp", &format!("{ip_a}:7002")), serve(&lab, &a, "serve-udp", &format!("{ip_a}:7003"))];
    assert!(tcp(&lab, &b, &format!("{ip_a}:7000")), "tcp 7000 is allowed in");
    assert!(tcp(&lab, &b, &format!("{ip_a}:8005")), "tcp 8005 is in the allowed range");
    assert!(!tcp(&lab, &b, &format!("{ip_a}:7001")), "tcp 7001 is allowed by no rule");
    assert!(udp(&lab, &b, &format!("{ip_a}:7002")), "udp 7002 from b is allowed");
    assert!(!udp(&lab, &b, &format!("{ip_a}:7003")), "udp 7003 is allowed by no rule");
    assert!(!ping_once(&lab, &b, &ip_a), "ICMP in is allowed by no rule");
    // Out is allowed: a's ping to b and its replies (stateful) pass.
    assert!(ping(&lab, &a, &ip_of(&eb)), "a may send anything; replies come back");
    assert!(ping(&lab, &a, "203.0.113.10"), "a reaches the LAN");
    // The host is also 'remote' for Switch rules: not allowed in.
    assert!(!lab.try_in(Side::Host, "ping", &["-c1", "-W1", &ip_a]).unwrap().status.success());
    // The view shows the rules.
    let shown = api.get(&format!("/endpoints/{}", ea["ID"].as_str().unwrap())).ok();
    let acls: Vec<&Value> = shown["Policies"].as_array().unwrap().iter().filter(|p| p["Type"] == "ACL").collect();
    assert_eq!(acls.len(), 3, "{shown}");
    assert_eq!(acls[0]["Settings"]["LocalPorts"], "7000,8000-8080");
}

/// The value of the `hns_acl_rule_packets_total` series of one rule of an endpoint.
fn rule_packets(text: &str, ep: &Value, rule: &str) -> u64 {
    let series = format!("hns_acl_rule_packets_total{{endpoint=\"{}\",name=\"{}\",rule=\"{rule}\",", ep["ID"].as_str().unwrap(), ep["Name"].as_str().unwrap());
    let line = text.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("no {series} in:\n{}", text.lines().filter(|l| l.contains("acl_")).collect::<Vec<_>>().join("\n")));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn each_rule_counts_the_packets_it_matched() {
    let (lab, _d, api) = lab_with_hnsd(&[]);
    let (b, _eb) = api.container("nat", "b", json!({}));
    let (a, ea) = api.container(
        "nat",
        "a",
        json!({"Policies": [
            acl(json!({"Id": "web", "Action": "Allow", "Direction": "In", "Protocols": "6", "LocalPorts": "7000", "Priority": 100})),
            acl(json!({"Id": "blk", "Action": "Block", "Direction": "In", "Protocols": "6", "LocalPorts": "7001", "Priority": 100})),
            acl(json!({"Id": "never", "Action": "Allow", "Direction": "In", "Protocols": "17", "LocalPorts": "9999", "Priority": 200})),
            acl(json!({"Action": "Allow", "Direction": "Out", "Priority": 1000})),
        ]}),
    );
    let ip_a = ip_of(&ea);
    let _s = [serve(&lab, &a, "serve-tcp", &format!("{ip_a}:7000")), serve(&lab, &a, "serve-tcp", &format!("{ip_a}:7001"))];
    let (n, m) = (5, 3);
    for _ in 0..n {
        assert!(tcp(&lab, &b, &format!("{ip_a}:7000")));
    }
    for _ in 0..m {
        assert!(!tcp(&lab, &b, &format!("{ip_a}:7001")));
    }
    let text = api.get("/metrics").raw;
    assert!(text.contains("# TYPE hns_acl_rule_packets counter"), "{text}");
    // Packets of established connections are accepted before the endpoint's rules: each
    // allowed connection counts its SYN only, so the count is exact.
    assert_eq!(rule_packets(&text, &ea, "web"), n, "one SYN per allowed connection, none of 7001's");
    // A dropped SYN may be sent again within the client's 800 ms timeout (the first
    // retransmission is due after 1 s, so usually not).
    let blk = rule_packets(&text, &ea, "blk");
    assert!((m..=2 * m).contains(&blk), "blk counted {blk} for {m} blocked connections");
    assert_eq!(rule_packets(&text, &ea, "never"), 0);
    assert!(text.contains("rule=\"prio1000\",action=\"allow\",direction=\"out\"}"), "a rule without an Id is named by its priority");
}

#[test]
fn priority_order_ties_and_out_rules_with_remote_prefixes() {
    let (lab, _d, api) = lab_with_hnsd(&[]);
    let _lan = lab.start_tcp_server_in_lan("203.0.113.10:8080").unwrap();
    let _lan2 = lab.start_tcp_server_in_lan("203.0.113.10:8081").unwrap();
    let (a, _ea) = api.container(
        "nat",
        "a",
        json!({"Policies": [
            // Lower number wins: the block at 100 beats the allow-all at 1000.
            acl(json!({"Action": "Block", "Direction": "Out", "Protocols": "6", "RemotePorts": "8080", "RemoteAddresses": "203.0.113.0/24", "Priority": 100})),
            acl(json!({"Action": "Allow", "Direction": "Out", "Priority": 1000})),
            // At equal priority Block wins, whatever the order given.
            acl(json!({"Action": "Allow", "Direction": "Out", "Protocols": "1", "Priority": 500})),
            acl(json!({"Action": "Block", "Direction": "Out", "Protocols": "1", "RemoteAddresses": "203.0.113.10", "Priority": 500})),
        ]}),
    );
    assert!(!tcp(&lab, &a, "203.0.113.10:8080"), "blocked by the priority-100 rule");
    assert!(tcp(&lab, &a, "203.0.113.10:8081"), "allowed by the allow-all at 1000");
    assert!(!ping_once(&lab, &a, "203.0.113.10"), "the tie at 500 goes to Block");
}

#[test]
fn rules_change_on_a_running_endpoint_and_established_connections_survive_a_block() {
    let (lab, _d, api) = lab_with_hnsd(&[]);
    let (b, _eb) = api.container("nat", "b", json!({}));
    let (a, ea) = api.container("nat", "a", json!({}));
    let ip_a = ip_of(&ea);
    let _s = serve(&lab, &a, "serve-tcp", &format!("{ip_a}:7000"));
    assert!(tcp(&lab, &b, &format!("{ip_a}:7000")), "no ACL: everything is allowed");
    // A long connection, then a Block of new connections on its port.
    let netns_b = format!("--net={}", b["NetNsPath"].as_str().unwrap());
    let long = lab.spawn_in_host("nsenter", &[&netns_b, &probe(), "rr", &format!("{ip_a}:7000"), "--seconds", "3"]).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let block = acl(json!({"Id": "blk", "Action": "Block", "Direction": "In", "Protocols": "6", "LocalPorts": "7000", "Priority": 100}));
    let allow = acl(json!({"Id": "all", "Action": "Allow", "Direction": "In", "Priority": 1000}));
    let out = acl(json!({"Id": "out", "Action": "Allow", "Direction": "Out", "Priority": 1000}));
    let r = modify(&api, &ea, "Add", json!([block.clone(), allow, out]));
    assert!(r.status == 200 || r.status == 204, "{}", r.raw);
    assert!(!tcp(&lab, &b, &format!("{ip_a}:7000")), "a new connection is blocked at once");
    assert!(ping(&lab, &b, &ip_a), "the allow-all still lets ICMP in");
    let status = long.wait_timeout(Duration::from_secs(10)).unwrap().expect("rr ends");
    assert!(status.success(), "the connection established before the Block survives it (stateful, documented)");
    // Update the rule by Id: now it blocks another port.
    let moved = acl(json!({"Id": "blk", "Action": "Block", "Direction": "In", "Protocols": "6", "LocalPorts": "7001", "Priority": 100}));
    assert_eq!(modify(&api, &ea, "Update", json!([moved])).status, 204);
    assert!(tcp(&lab, &b, &format!("{ip_a}:7000")), "after the Update 7000 is open again");
    // Remove everything: the endpoint allows all again.
    let r = modify(&api, &ea, "Remove", json!([acl(json!({"Id": "blk", "Action": "Block", "Direction": "In"})), acl(json!({"Id": "all", "Action": "Allow", "Direction": "In"})), acl(json!({"Id": "out", "Action": "Allow", "Direction": "Out"}))]));
    assert!(r.status == 200 || r.status == 204, "{}", r.raw);
    assert!(tcp(&lab, &b, &format!("{ip_a}:7000")));
    assert!(!lab.try_in(Side::Host, "nft", &["list", "table", "bridge", "hns_acl"]).unwrap().status.success(), "no ACL left: the ACL tables are gone");
}

#[test]
fn a_lone_block_rule_makes_the_endpoint_default_deny() {
    let (lab, _d, api) = lab_with_hnsd(&[]);
    let (b, _eb) = api.container("nat", "b", json!({}));
    let (_a, ea) = api.container("nat", "a", json!({"Policies": [acl(json!({"Action": "Block", "Direction": "In", "Protocols": "6", "Priority": 10}))]}));
    assert!(!ping_once(&lab, &b, &ip_of(&ea)), "as on Windows: once an endpoint has an ACL, what no rule allows is blocked");
}

#[test]
fn network_acl_applies_to_present_and_later_endpoints() {
    let (lab, _d, api) = lab_with_hnsd(&[]);
    api.post("/networks", &json!({"Name": "pol", "Type": "nat", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.95.0.0/24"}]}],
        "Policies": [{"Type": "NetworkACL", "Settings": {"Action": "Allow", "Direction": "Out", "Priority": 1000}}]}))
    .ok();
    let (a, ea) = api.container("pol", "a", json!({}));
    let (b, eb) = api.container("pol", "b", json!({"Policies": [acl(json!({"Action": "Allow", "Direction": "In", "Protocols": "1", "Priority": 100}))]}));
    assert!(!ping_once(&lab, &b, &ip_of(&ea)), "the NetworkACL allows nothing in to a");
    assert!(ping(&lab, &a, &ip_of(&eb)), "b's own ACL merged with the network's: ICMP in allowed, out allowed");
    // A rule added to the network reaches the present endpoints...
    let r = api.post("/networks/pol", &json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": {"Policies": [{"Type": "NetworkACL", "Settings": {"Action": "Allow", "Direction": "In", "Protocols": "icmp", "Priority": 200}}]}}));
    assert!(r.status == 200 || r.status == 204, "{}", r.raw);
    assert!(ping(&lab, &b, &ip_of(&ea)), "the network rule added later reaches a: {}", lab.in_host("nft", &["list", "table", "bridge", "hns_acl"]).unwrap().stdout);
    // ...and the later ones.
    let (_c, ec) = api.container("pol", "c", json!({}));
    let _s = serve(&lab, &_c, "serve-tcp", &format!("{}:7000", ip_of(&ec)));
    assert!(ping(&lab, &a, &ip_of(&ec)));
    assert!(!tcp(&lab, &a, &format!("{}:7000", ip_of(&ec))), "c is under the network's ACL from its first packet");
}

#[test]
fn ipv6_rules_by_prefix() {
    let (lab, _d, api) = lab_with_hnsd(&[]);
    api.post("/networks", &json!({"Name": "ds", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.94.0.0/24"}, {"IpAddressPrefix": "fd00:94::/64"}]}]})).ok();
    let (b, eb) = api.container("ds", "b", json!({}));
    let b6 = eb["IpConfigurations"][1]["IpAddress"].as_str().unwrap().to_owned();
    let (a, ea) = api.container(
        "ds",
        "a",
        json!({"Policies": [
            acl(json!({"Action": "Allow", "Direction": "In", "Protocols": "6", "LocalPorts": "7000", "RemoteAddresses": format!("{b6}/128"), "Priority": 100})),
            acl(json!({"Action": "Allow", "Direction": "Out", "Priority": 100})),
        ]}),
    );
    let a6 = ea["IpConfigurations"][1]["IpAddress"].as_str().unwrap().to_owned();
    let _s6 = serve(&lab, &a, "serve-tcp", &format!("[{a6}]:7000"));
    let _s4 = serve(&lab, &a, "serve-tcp", &format!("{}:7000", ip_of(&ea)));
    assert!(tcp(&lab, &b, &format!("[{a6}]:7000")), "IPv6 from b's address is allowed");
    assert!(!tcp(&lab, &b, &format!("{}:7000", ip_of(&ea))), "the rule names an IPv6 prefix: IPv4 is not allowed");
    assert!(in_ns(&lab, &a, "ping", &["-6", "-c1", "-W2", &b6]).status.success(), "out and its replies over IPv6");
}

#[test]
fn host_rules_are_a_second_stage_for_traffic_with_the_host() {
    let (lab, _d, api) = lab_with_hnsd(&[]);
    let (b, _eb) = api.container("nat", "b", json!({}));
    let (_a, ea) = api.container(
        "nat",
        "a",
        json!({"Policies": [
            acl(json!({"Action": "Allow", "Direction": "In", "Priority": 1000})),
            acl(json!({"Action": "Allow", "Direction": "Out", "Priority": 1000})),
            acl(json!({"Action": "Block", "Direction": "In", "Protocols": "1", "RuleType": "Host", "Priority": 100})),
            acl(json!({"Action": "Allow", "Direction": "Out", "RuleType": "Host", "Priority": 100})),
        ]}),
    );
    assert!(ping(&lab, &b, &ip_of(&ea)), "Host rules do not apply between neighbours");
    assert!(!lab.try_in(Side::Host, "ping", &["-c1", "-W1", &ip_of(&ea)]).unwrap().status.success(), "the host's ping is blocked by the Host stage");
}

#[test]
fn a_root_process_in_the_compartment_cannot_flush_the_acl() {
    let (lab, _d, api) = lab_with_hnsd(&[]);
    let (b, _eb) = api.container("nat", "b", json!({}));
    let (a, ea) = api.container("nat", "a", json!({"Policies": [acl(json!({"Action": "Allow", "Direction": "Out", "Priority": 1}))]}));
    assert!(!ping_once(&lab, &b, &ip_of(&ea)));
    let o = in_ns(&lab, &a, "nft", &["flush", "ruleset"]);
    assert!(o.status.success(), "{}", o.stderr);
    assert!(!ping_once(&lab, &b, &ip_of(&ea)), "the ACL lives in the host namespace, out of the container's reach");
}

#[test]
fn bad_acl_input_is_refused_field_by_field_and_changes_nothing() {
    let (lab, _d, api) = lab_with_hnsd(&[]);
    let (_a, ea) = api.container("nat", "a", json!({}));
    let before = api.snapshot();
    let kernel_before = lab.try_in(Side::Host, "nft", &["list", "ruleset"]).unwrap().stdout;
    let base = json!({"Action": "Allow", "Direction": "In", "Protocols": "6"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("Protocols", json!("300")), "Protocols"),
        (with("Action", json!("Deny")), "Action"),
        (with("Direction", json!("Sideways")), "Direction"),
        (with("LocalAddresses", json!("10.0.0.0/40")), "LocalAddresses"),
        (with("RemoteAddresses", json!("nope")), "RemoteAddresses"),
        (with("LocalPorts", json!("80-70")), "LocalPorts"),
        (with("RemotePorts", json!("0")), "RemotePorts"),
        (with("RuleType", json!("Wfp")), "RuleType"),
        (with("Priority", json!(65536)), "Priority"),
        (json!({"Action": "Allow", "Direction": "In", "Protocols": "1", "LocalPorts": "80"}), "LocalPorts"),
    ];
    for (settings, field) in cases {
        let policies = json!([{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80}}, acl(settings.clone())]);
        let r = api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "Name": "x", "Policies": policies}));
        assert_eq!(r.status, 400, "{settings}: {}", r.raw);
        assert!(r.raw.contains(&format!("Policies[1].Settings.{field}")), "{settings}: {}", r.raw);
        let r = modify(&api, &ea, "Add", json!([acl(settings.clone())]));
        assert_eq!(r.status, 400, "{settings}: {}", r.raw);
        assert!(r.raw.contains(&format!("Settings.Policies[0].Settings.{field}")), "{settings}: {}", r.raw);
    }
    let r = modify(&api, &ea, "Remove", json!([acl(json!({"Id": "none", "Action": "Allow", "Direction": "In"}))]));
    assert_eq!(r.status, 404, "{}", r.raw);
    assert_eq!(api.snapshot(), before, "a refused request changed the API state");
    assert_eq!(lab.try_in(Side::Host, "nft", &["list", "ruleset"]).unwrap().stdout, kernel_before, "a refused request changed the kernel");
}

#[test]
fn a_flushed_acl_table_is_repaired_and_a_restart_keeps_the_rules() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&["--reconcile-interval", "300ms"]).unwrap();
    let api = Api::new(&lab);
    let (b, _eb) = api.container("nat", "b", json!({}));
    let (_a, ea) = api.container("nat", "a", json!({"Policies": [acl(json!({"Action": "Allow", "Direction": "Out", "Priority": 1}))]}));
    let ip_a = ip_of(&ea);
    assert!(!ping_once(&lab, &b, &ip_a));
    lab.in_host("nft", &["flush", "table", "bridge", "hns_acl"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || !ping_once(&lab, &b, &ip_a)), "the reconciler rebuilt the flushed table");
    let listed = lab.in_host("nft", &["list", "table", "bridge", "hns_acl"]).unwrap().stdout;
    assert!(listed.contains("iifname vmap @sw_out"), "{listed}");
    // One endpoint chain flushed by hand (an empty chain lets everything through): the
    // periodic pass sees its rule count and writes the endpoint again.
    let chain = format!("hnv{}_sw_in", &ea["ID"].as_str().unwrap().replace('-', "")[..12]);
    lab.in_host("nft", &["flush", "chain", "bridge", "hns_acl", &chain]).unwrap();
    let listed = || lab.in_host("nft", &["list", "chain", "bridge", "hns_acl", &chain]).unwrap().stdout;
    assert!(eventually(Duration::from_secs(5), || listed().contains("drop")), "the reconciler refilled the flushed chain: {}", listed());
    assert!(!ping_once(&lab, &b, &ip_a), "a is closed again");
    // A restart with the tables gone: the store has the rules.
    d.stop().unwrap();
    lab.in_host("nft", &["delete", "table", "bridge", "hns_acl"]).unwrap();
    lab.in_host("nft", &["delete", "table", "inet", "hns_acl"]).unwrap();
    assert!(ping(&lab, &b, &ip_a), "control: without the tables a is open");
    let _d2 = lab.start_hnsd(&["--reconcile-interval", "300ms"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || !ping_once(&lab, &b, &ip_a)), "a restarted hnsd reprograms the ACL");
}

#[test]
fn hnsctl_policy_adds_lists_in_evaluation_order_and_removes() {
    let (lab, _d, api) = lab_with_hnsd(&[]);
    let (b, _eb) = api.container("nat", "b", json!({}));
    let (a, ea) = api.container("nat", "a", json!({}));
    let ip_a = ip_of(&ea);
    let _s = serve(&lab, &a, "serve-tcp", &format!("{ip_a}:7000"));
    lab.hnsctl_ok(&["policy", "add", "a", "--allow", "--out", "--priority", "65500", "--id", "out"]).unwrap();
    lab.hnsctl_ok(&["policy", "add", "a", "--allow", "--in", "--proto", "tcp", "--local-ports", "7000,8000-8080", "--remote", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16", "--priority", "200", "--id", "web"]).unwrap();
    assert!(tcp(&lab, &b, &format!("{ip_a}:7000")), "allowed by the rule added with hnsctl");
    assert!(!ping_once(&lab, &b, &ip_a), "nothing else comes in");
    let table = lab.hnsctl_ok(&["policy", "ls", "a"]).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ORDER") && lines[1].contains("web") && lines[2].contains("out"), "evaluation order, not insertion order:\n{table}");
    assert!(lines[1].contains("7000,8000-8080"), "{table}");
    lab.hnsctl_ok(&["policy", "rm", "a", "--allow", "--in", "--id", "web"]).unwrap();
    assert!(!tcp(&lab, &b, &format!("{ip_a}:7000")), "removed: only Out is allowed now");
    let o = lab.hnsctl(&["policy", "add", "a", "--allow", "--in", "--proto", "icmp", "--local-ports", "80"]).unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("LocalPorts"), "{o:?}");
}

#[test]
fn l2bridge_endpoints_are_filtered_on_their_routed_veth_and_transparent_refuses_acls() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let api = Api::new(&lab);
    let u = lab.add_uplink(2, false).unwrap();
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", "l2bridge", "--subnet", &u.subnet, "--gateway", &u.router.to_string(), "-o", &iface, "l2net"]).unwrap();
    let (a_ip, b_ip) = (u.addr(50).to_string(), u.addr(51).to_string());
    for (name, ip) in [("a", &a_ip), ("b", &b_ip)] {
        lab.hnsctl_ok(&["run", "-d", "--net", "l2net", "--name", name, "--ip", ip, "--", "sleep", "300"]).unwrap();
    }
    let (a, b) = (api.get("/namespaces/a").ok(), api.get("/namespaces/b").ok());
    let _s = [serve(&lab, &a, "serve-tcp", &format!("{a_ip}:7000")), serve(&lab, &a, "serve-tcp", &format!("{a_ip}:7001"))];
    assert!(tcp(&lab, &b, &format!("{a_ip}:7001")), "control: no ACL, open");
    lab.hnsctl_ok(&["policy", "add", "a", "--allow", "--out", "--priority", "1000"]).unwrap();
    lab.hnsctl_ok(&["policy", "add", "a", "--allow", "--in", "--proto", "tcp", "--local-ports", "7000", "--priority", "100"]).unwrap();
    assert!(tcp(&lab, &b, &format!("{a_ip}:7000")), "allowed in through the routed veth");
    assert!(!tcp(&lab, &b, &format!("{a_ip}:7001")), "7001 is allowed by no rule");
    assert!(!lab.try_in(Side::Lan, "ping", &["-c1", "-W1", &a_ip]).unwrap().status.success(), "ICMP from the LAN is allowed by no rule");
    assert!(ping(&lab, &a, &u.router.to_string()), "out to the LAN router and its replies");
    let listed = lab.in_host("nft", &["list", "table", "inet", "hns_acl"]).unwrap().stdout;
    assert!(listed.contains(":  jump") || listed.contains(": jump"), "an l2bridge endpoint lives in the inet table: {listed}");

    // Transparent endpoints are macvlans inside the compartment: refused, naming why.
    let t = lab.add_uplink(3, false).unwrap();
    let iface = format!("com.docker.network.windowsshim.interface={}", t.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", "transparent", "--subnet", &t.subnet, "--gateway", &t.router.to_string(), "-o", &iface, "tnet"]).unwrap();
    let r = api.post("/endpoints", &json!({"HostComputeNetwork": "tnet", "Policies": [acl(json!({"Action": "Allow", "Direction": "In"}))]}));
    assert_eq!(r.status, 400, "{}", r.raw);
    assert!(r.raw.contains("no host-side interface"), "{}", r.raw);
}

/// An ACL change is committed lazily and made durable while the kernel step runs (as an
/// attach is). SIGKILL before the sync: the change is lost as a whole (the request failed), the
/// kernel keeps the old rules. SIGKILL once the store holds it but before the kernel does: the
/// restart programs it (the kernel's digest of the endpoint is not the store's).
#[test]
fn a_crash_between_storing_a_policy_and_programming_it_is_repaired_at_restart() {
    let lab = Lab::new().expect("lab");
    let failing = |point: &str| hns_lab::HnsdOptions { env: vec![("HNSD_FAILPOINT".into(), point.into())], ..Default::default() };
    let d = lab.start_hnsd_with(failing("policy-after-commit")).expect("hnsd starts");
    let api = Api::new(&lab);
    let (b, _eb) = api.container("nat", "b", json!({}));
    // Created with two rules (programmed by the attach, which has no failpoint here); the
    // crashing change adds a third to rules the kernel already holds.
    let allow_all = [acl(json!({"Id": "all", "Action": "Allow", "Direction": "In", "Priority": 1000})), acl(json!({"Id": "out", "Action": "Allow", "Direction": "Out", "Priority": 1000}))];
    let (a, ea) = api.container("nat", "a", json!({"Policies": allow_all}));
    let ip_a = ip_of(&ea);
    let _s = serve(&lab, &a, "serve-tcp", &format!("{ip_a}:7000"));
    let _s2 = serve(&lab, &a, "serve-tcp", &format!("{ip_a}:7001"));
    let rules = json!([acl(json!({"Id": "blk", "Action": "Block", "Direction": "In", "Protocols": "6", "LocalPorts": "7000", "Priority": 100}))]);
    let acls = |api: &Api| {
        let ep = api.get(&format!("/endpoints/{}", ea["ID"].as_str().unwrap())).ok();
        ep["Policies"].as_array().map_or(0, |ps| ps.iter().filter(|p| p["Type"] == "ACL").count())
    };
    // hnsd dies after the lazy commit, before it is durable: lost as a whole.
    let r = modify(&api, &ea, "Add", rules.clone());
    assert!(r.status == 0 || r.status >= 500, "the request did not die with hnsd: {} {}", r.status, r.raw);
    assert!(eventually(Duration::from_secs(5), || !d.is_running()), "the failpoint did not kill hnsd");
    let d = lab.start_hnsd_with(failing("policy-durable-before-kernel")).expect("hnsd starts again");
    assert_eq!(acls(&api), 2, "a change whose commit was not durable survived the crash");
    assert!(tcp(&lab, &b, &format!("{ip_a}:7000")), "the kernel holds rules the store does not");
    // hnsd dies once the store holds the rules, before the kernel does.
    let r = modify(&api, &ea, "Add", rules);
    assert!(r.status == 0 || r.status >= 500, "the request did not die with hnsd: {} {}", r.status, r.raw);
    assert!(eventually(Duration::from_secs(5), || !d.is_running()), "the failpoint did not kill hnsd");
    assert!(tcp(&lab, &b, &format!("{ip_a}:7000")), "the kernel does not hold the rules yet");
    // An OutBoundNAT stored the same way is programmed by the restart too (the next failpoint
    // run: this time the crash is in the endpoint-policy path).
    let _d = lab.start_hnsd_with(failing("policy-after-commit")).expect("hnsd starts a third time");
    assert_eq!(acls(&api), 3, "the durable change was lost");
    assert!(eventually(Duration::from_secs(5), || !tcp(&lab, &b, &format!("{ip_a}:7000"))), "the restart did not program the stored Block");
    assert!(tcp(&lab, &b, &format!("{ip_a}:7001")), "the stored allow-all is in force too");
    let onat = json!([{"Type": "OutBoundNAT", "Settings": {"Exceptions": ["10.244.0.0/16"]}}]);
    let r = modify(&api, &ea, "Add", onat);
    assert!(r.status == 0 || r.status >= 500, "{} {}", r.status, r.raw);
    let table = |lab: &Lab| lab.try_in(Side::Host, "nft", &["list", "table", "inet", "hns_onat"]).unwrap().stdout;
    assert!(!table(&lab).contains("10.244.0.0/16"), "programmed before the crash?");
    let _d = lab.start_hnsd(&[]).expect("hnsd starts a fourth time");
    assert!(eventually(Duration::from_secs(5), || table(&lab).contains("10.244.0.0/16")), "the stored OutBoundNAT was not programmed at restart:\n{}", table(&lab));
    // Both are still the endpoint's, and the ACL still holds.
    let ep = api.get(&format!("/endpoints/{}", ea["ID"].as_str().unwrap())).ok();
    let kinds: Vec<&str> = ep["Policies"].as_array().unwrap().iter().map(|p| p["Type"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "ACL").count(), 3, "{kinds:?}");
    assert!(kinds.contains(&"OutBoundNAT"), "{kinds:?}");
    assert!(!tcp(&lab, &b, &format!("{ip_a}:7000")));
}

/// ACLs on an overlay network, as on nat: the endpoint's bridge port is filtered whether the
/// packet comes from a neighbour on the same host or through the VXLAN from another host; a
/// NetworkACL-free endpoint next to it is unaffected.
#[test]
fn overlay_endpoints_are_filtered_for_neighbours_and_other_hosts() {
    let cluster = hns_lab::ClusterLab::new(2).expect("cluster lab");
    let _daemons: Vec<hns_lab::Daemon> = (0..2).map(|i| cluster.start_hnsd(i, &["--no-default-network"]).expect("hnsd starts")).collect();
    let apis: Vec<Api> = cluster.hosts().iter().map(Api::new).collect();
    let (h0, h1) = (cluster.host(0), cluster.host(1));
    h0.hnsctl_ok(&["network", "create", "-d", "overlay", "--subnet", "10.241.0.0/24", "ov"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || apis[1].get("/networks/ov").status == 200), "host 1 did not get the overlay network");
    let (a, ea) = apis[0].container(
        "ov",
        "a",
        json!({"Policies": [
            acl(json!({"Action": "Allow", "Direction": "In", "Protocols": "tcp", "LocalPorts": "7000", "Priority": 100})),
            acl(json!({"Action": "Allow", "Direction": "Out", "Protocols": "256", "Priority": 65500})),
        ]}),
    );
    let (n, _) = apis[0].container("ov", "n", json!({}));
    let (r, _) = apis[1].container("ov", "r", json!({}));
    let ip_a = ip_of(&ea);
    let _s = [serve(h0, &a, "serve-tcp", &format!("{ip_a}:7000")), serve(h0, &a, "serve-tcp", &format!("{ip_a}:7001"))];
    assert!(eventually(Duration::from_secs(5), || tcp(h1, &r, &format!("{ip_a}:7000"))), "tcp 7000 is allowed in from another host");
    assert!(!tcp(h1, &r, &format!("{ip_a}:7001")), "tcp 7001 from another host is allowed by no rule");
    assert!(tcp(h0, &n, &format!("{ip_a}:7000")), "tcp 7000 is allowed in from a neighbour");
    assert!(!tcp(h0, &n, &format!("{ip_a}:7001")), "tcp 7001 from a neighbour is allowed by no rule");
    // The rule added on the running endpoint opens 7001 for every source.
    let r2 = modify(&apis[0], &ea, "Add", json!([acl(json!({"Action": "Allow", "Direction": "In", "Protocols": "tcp", "LocalPorts": "7001", "Priority": 200}))]));
    assert!(r2.status < 300, "{}", r2.raw);
    assert!(tcp(h1, &r, &format!("{ip_a}:7001")) && tcp(h0, &n, &format!("{ip_a}:7001")), "an added rule opens 7001");
}

/// A rule change writes only the map elements that differ from what hnsd wrote last. When the
/// kernel no longer holds that (a map emptied by hand before the reconciler saw it), the change
/// cannot apply as a diff: hnsd writes the endpoint in full instead, and the request succeeds.
#[test]
fn a_rule_change_after_a_hand_edit_of_the_maps_writes_the_endpoint_in_full() {
    // No periodic repair within the test: only the request's own fallback can mend the map.
    let (lab, _d, api) = lab_with_hnsd(&["--reconcile-interval", "10m"]);
    let (b, _eb) = api.container("nat", "b", json!({}));
    let web = |port: &str| acl(json!({"Id": "web", "Action": "Allow", "Direction": "In", "Protocols": "6", "LocalPorts": port, "Priority": 100}));
    let (a, ea) = api.container("nat", "a", json!({"Policies": [web("7000"), acl(json!({"Action": "Allow", "Direction": "Out", "Priority": 1000}))]}));
    let ip_a = ip_of(&ea);
    let _s = [serve(&lab, &a, "serve-tcp", &format!("{ip_a}:7000")), serve(&lab, &a, "serve-tcp", &format!("{ip_a}:7001"))];
    assert!(tcp(&lab, &b, &format!("{ip_a}:7000")) && !tcp(&lab, &b, &format!("{ip_a}:7001")));
    let map = format!("hnv{}_sw_in_4", &ea["ID"].as_str().unwrap().replace('-', "")[..12]);
    lab.in_host("nft", &["flush", "map", "bridge", "hns_acl", &map]).unwrap();
    assert!(!tcp(&lab, &b, &format!("{ip_a}:7000")), "an emptied map lets nothing in (fail-closed)");
    // The update deletes the element of the old "web", which is gone: the diff fails as a whole.
    let r = modify(&api, &ea, "Update", json!([web("7001")]));
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.raw);
    assert!(tcp(&lab, &b, &format!("{ip_a}:7001")), "the endpoint was written in full: the new rule holds");
    assert!(!tcp(&lab, &b, &format!("{ip_a}:7000")), "and the old one is gone");
    let listed = lab.in_host("nft", &["list", "map", "bridge", "hns_acl", &map]).unwrap().stdout;
    assert!(listed.contains(". 7001 counter") && !listed.contains(". 7000 counter"), "{listed}");
}

#[test]
fn a_rule_change_after_the_tables_were_deleted_by_hand_writes_them_whole() {
    // No repair within the test (no periodic pass, none on the deletion's notice): hnsd
    // believes the tables are there (it wrote them), so only the change's own write can find
    // out they are gone.
    let (lab, _d, api) = lab_with_hnsd(&["--reconcile-interval", "10m", "--no-repair-on-notice"]);
    let (b, _eb) = api.container("nat", "b", json!({}));
    let out = || acl(json!({"Action": "Allow", "Direction": "Out", "Priority": 1000}));
    let web = |port: &str| acl(json!({"Id": "web", "Action": "Allow", "Direction": "In", "Protocols": "6", "LocalPorts": port, "Priority": 100}));
    let (a, ea) = api.container("nat", "a", json!({"Policies": [web("7000"), out()]}));
    let (c, ec) = api.container("nat", "c", json!({"Policies": [web("7000"), out()]}));
    let (ip_a, ip_c) = (ip_of(&ea), ip_of(&ec));
    let _s = [serve(&lab, &a, "serve-tcp", &format!("{ip_a}:7001")), serve(&lab, &c, "serve-tcp", &format!("{ip_c}:7001"))];
    assert!(!tcp(&lab, &b, &format!("{ip_a}:7001")) && !tcp(&lab, &b, &format!("{ip_c}:7001")));
    lab.in_host("nft", &["delete", "table", "bridge", "hns_acl"]).unwrap();
    lab.in_host("nft", &["delete", "table", "inet", "hns_acl"]).unwrap();
    assert!(tcp(&lab, &b, &format!("{ip_c}:7001")), "control: without the tables c is open");
    let r = modify(&api, &ea, "Update", json!([web("7001")]));
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.raw);
    assert!(tcp(&lab, &b, &format!("{ip_a}:7001")), "a's new rule holds");
    assert!(!tcp(&lab, &b, &format!("{ip_c}:7001")), "the tables were written whole: c is filtered again too");
    assert!(!ping_once(&lab, &b, &ip_c), "c's default deny is back");
}
