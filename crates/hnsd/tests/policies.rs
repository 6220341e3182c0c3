//! OutBoundNAT, SDNRoute, HostRoute and QOS policies with real packets through lab
//! namespaces. The "outside" is always the lab's LAN namespace (its router and servers),
//! never the machine's own uplink.

mod common;

use std::time::Duration;

use common::*;
use hns_lab::{ExternalUplink, Lab, Side};
use serde_json::{Value, json};

fn probe() -> String {
    Lab::bin("labprobe").unwrap().to_str().unwrap().to_owned()
}

/// The source address a LAN-side `serve-tcp` saw for a connection from `ns`.
fn seen_as(lab: &Lab, ns: &Value, addr: &str) -> String {
    let o = in_ns(lab, ns, &probe(), &["connect-tcp", addr, "--timeout-ms", "2000"]);
    assert!(o.status.success(), "connect from the compartment to {addr}: {}", o.stderr);
    let peer = o.stdout.lines().find_map(|l| l.strip_prefix("peer=")).unwrap_or_else(|| panic!("no peer line: {}", o.stdout));
    // `peer=ADDR:PORT local=ADDR:PORT`: the peer's address.
    let peer = peer.split_whitespace().next().unwrap_or_default();
    peer.rsplit_once(':').unwrap().0.to_owned()
}

fn modify(api: &Api, ep: &Value, request: &str, policies: Value) -> Reply {
    api.post(&format!("/endpoints/{}", ep["ID"].as_str().unwrap()), &json!({"ResourceType": "Policy", "RequestType": request, "Settings": {"Policies": policies}}))
}

/// A lab with hnsd and an l2bridge network `l2` on a second LAN segment (10.77.2.0/24) whose
/// LAN side has servers on 10.77.2.1 (the router) and 10.77.2.3, both on port 8080.
fn l2bridge_lab(args: &[&str]) -> (Lab, hns_lab::Daemon, Api, ExternalUplink, Vec<hns_lab::Proc>) {
    let lab = Lab::new().unwrap();
    let mut all = vec!["--no-default-network"];
    all.extend_from_slice(args);
    let d = lab.start_hnsd(&all).unwrap();
    let api = Api::new(&lab);
    let u = lab.add_uplink(2, false).unwrap();
    lab.in_lan("ip", &["addr", "add", "10.77.2.3/24", "dev", &u.lan_bridge]).unwrap();
    let servers = vec![lab.start_tcp_server_in_lan("10.77.2.1:8080").unwrap(), lab.start_tcp_server_in_lan("10.77.2.3:8080").unwrap()];
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", "l2bridge", "--subnet", &u.subnet, "--gateway", &u.router.to_string(), "-o", &iface, "l2"]).unwrap();
    (lab, d, api, u, servers)
}

fn onat(settings: Value) -> Value {
    json!({"Type": "OutBoundNAT", "Settings": settings})
}

#[test]
fn outbound_nat_on_l2bridge_masquerades_except_exceptions_and_keeps_pod_to_pod() {
    let (lab, _d, api, u, _s) = l2bridge_lab(&[]);
    let host_ip = u.host_ip.to_string();
    let (a, ea) = api.container("l2", "a", json!({"IpConfigurations": [{"IpAddress": "10.77.2.50"}], "Policies": [onat(json!({"Exceptions": ["10.77.2.3", "10.244.0.0/16"]}))]}));
    let (b, eb) = api.container("l2", "b", json!({"IpConfigurations": [{"IpAddress": "10.77.2.51"}]}));
    assert_eq!(seen_as(&lab, &a, "10.77.2.1:8080"), host_ip, "an ordinary destination sees the host's address");
    assert_eq!(seen_as(&lab, &a, "10.77.2.3:8080"), "10.77.2.50", "an Exception sees the endpoint's own address");
    assert_eq!(seen_as(&lab, &b, "10.77.2.1:8080"), "10.77.2.51", "control: an endpoint without the policy is not NATed");
    // Pod to pod on this host keeps its addresses (not an Exception: the dispatch skips veths).
    let _sb = lab.spawn_in_host("nsenter", &[&format!("--net={}", b["NetNsPath"].as_str().unwrap()), &probe(), "serve-tcp", "10.77.2.51:7000"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || in_ns(&lab, &a, &probe(), &["connect-tcp", "10.77.2.51:7000", "--timeout-ms", "500"]).status.success()));
    assert_eq!(seen_as(&lab, &a, "10.77.2.51:7000"), "10.77.2.50");
    // The view shows the policy in its settled form.
    let shown = api.get(&format!("/endpoints/{}", ea["ID"].as_str().unwrap())).ok();
    let p = shown["Policies"].as_array().unwrap().iter().find(|p| p["Type"] == "OutBoundNAT").cloned().unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(p["Settings"]["Exceptions"], json!(["10.77.2.3", "10.244.0.0/16"]));
    // Deleting the only endpoint with the policy removes the table.
    api.delete(&format!("/endpoints/{}", ea["ID"].as_str().unwrap())).ok();
    assert!(!lab.try_in(Side::Host, "nft", &["list", "table", "inet", "hns_onat"]).unwrap().status.success(), "the OutBoundNAT table goes with its last endpoint");
    let _ = eb;
}

/// Endpoints with the same policy share its chain; an endpoint that comes or goes changes only
/// its own dispatch elements (the others keep being NATed); IPv6 (`Flags` 2) is NATed to the
/// host's IPv6 address except towards its Exceptions; the last endpoint takes the table with it.
#[test]
fn outbound_nat_shares_policy_chains_changes_per_endpoint_and_covers_ipv6() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let api = Api::new(&lab);
    let u = lab.add_uplink(2, false).unwrap();
    lab.in_host("ip", &["addr", "add", "2001:db8:77:2::2/64", "dev", &u.host_if, "nodad"]).unwrap();
    lab.in_lan("ip", &["addr", "add", "10.77.2.3/24", "dev", &u.lan_bridge]).unwrap();
    lab.in_lan("ip", &["addr", "add", "2001:db8:77:2::3/64", "dev", &u.lan_bridge, "nodad"]).unwrap();
    let _servers: Vec<hns_lab::Proc> = ["10.77.2.1:8080", "10.77.2.3:8080", "[2001:db8:77:2::1]:8080", "[2001:db8:77:2::3]:8080"].iter().map(|a| lab.start_tcp_server_in_lan(a).unwrap()).collect();
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", "l2bridge", "--subnet", &u.subnet, "--gateway", &u.router.to_string(), "--subnet", "2001:db8:77:2::/64", "--gateway", &u.router6.to_string(), "-o", &iface, "l2"]).unwrap();
    let v4 = onat(json!({"Exceptions": ["10.77.2.3"]}));
    let v6 = onat(json!({"Flags": 2, "Exceptions": ["2001:db8:77:2::3"]}));
    let ip = |last: u8| json!([{"IpAddress": format!("10.77.2.{last}")}, {"IpAddress": format!("2001:db8:77:2::{last}")}]);
    let (a, ea) = api.container("l2", "a", json!({"IpConfigurations": ip(50), "Policies": [v4.clone(), v6.clone()]}));
    let (b, eb) = api.container("l2", "b", json!({"IpConfigurations": ip(51), "Policies": [v4.clone()]}));
    let chains = || {
        let t = lab.in_host("nft", &["list", "table", "inet", "hns_onat"]).unwrap().stdout;
        t.lines().filter_map(|l| l.trim().strip_prefix("chain ")).map(|c| c.trim_end_matches(" {").to_owned()).filter(|c| c != "postrouting" && c != "forward").collect::<Vec<_>>()
    };
    assert_eq!(chains().len(), 2, "one chain per distinct policy (IPv4 shared by a and b, IPv6): {:?}", chains());
    // The fresh uplink's IPv6 settles first (its link-local address is tentative for a while,
    // and until then the host does not resolve the LAN's neighbours).
    for lan in ["2001:db8:77:2::1", "2001:db8:77:2::3"] {
        assert!(eventually(Duration::from_secs(5), || lab.try_in(Side::Host, "ping", &["-6", "-c1", "-W1", lan]).unwrap().status.success()), "the host reaches {lan}");
    }
    assert_eq!(seen_as(&lab, &a, "10.77.2.1:8080"), "10.77.2.2");
    assert_eq!(seen_as(&lab, &b, "10.77.2.1:8080"), "10.77.2.2");
    assert_eq!(seen_as(&lab, &a, "10.77.2.3:8080"), "10.77.2.50", "an IPv4 Exception");
    assert_eq!(seen_as(&lab, &a, "[2001:db8:77:2::1]:8080"), "[2001:db8:77:2::2]", "IPv6 NATed to the host's IPv6 address");
    assert_eq!(seen_as(&lab, &b, "[2001:db8:77:2::1]:8080"), "[2001:db8:77:2::51]", "b has no IPv6 policy");
    assert_eq!(seen_as(&lab, &a, "[2001:db8:77:2::3]:8080"), "[2001:db8:77:2::50]", "an IPv6 Exception keeps the container's address");
    // c comes with the shared IPv4 policy: no new chain; a goes: b and c keep being NATed.
    let (c, ec) = api.container("l2", "c", json!({"IpConfigurations": ip(52), "Policies": [v4.clone()]}));
    assert_eq!(chains().len(), 2, "{:?}", chains());
    assert_eq!(seen_as(&lab, &c, "10.77.2.1:8080"), "10.77.2.2");
    api.delete(&format!("/endpoints/{}", ea["ID"].as_str().unwrap())).ok();
    assert_eq!(chains().len(), 1, "the IPv6 policy's chain went with its last endpoint: {:?}", chains());
    let src6 = lab.in_host("nft", &["list", "map", "inet", "hns_onat", "src6"]).unwrap().stdout;
    assert!(!src6.contains("2001:db8:77:2::50"), "{src6}");
    assert_eq!(seen_as(&lab, &b, "10.77.2.1:8080"), "10.77.2.2");
    assert_eq!(seen_as(&lab, &c, "10.77.2.3:8080"), "10.77.2.52");
    for e in [&eb, &ec] {
        api.delete(&format!("/endpoints/{}", e["ID"].as_str().unwrap())).ok();
    }
    assert!(!lab.try_in(Side::Host, "nft", &["list", "table", "inet", "hns_onat"]).unwrap().status.success(), "the table goes with the last endpoint");
}

#[test]
fn outbound_nat_virtual_ip_destinations_and_modify() {
    let (lab, _d, api, _u, _s) = l2bridge_lab(&[]);
    // The LAN routes the virtual IP to the host (as a real LAN would be told to).
    lab.in_lan("ip", &["route", "add", "10.77.2.9/32", "via", "10.77.2.2"]).unwrap();
    let (c, ec) = api.container("l2", "c", json!({"IpConfigurations": [{"IpAddress": "10.77.2.60"}], "Policies": [onat(json!({"VirtualIP": "10.77.2.9", "Destinations": ["10.77.2.1/32"]}))]}));
    assert_eq!(seen_as(&lab, &c, "10.77.2.1:8080"), "10.77.2.9", "NATed to the VirtualIP towards a listed destination");
    assert_eq!(seen_as(&lab, &c, "10.77.2.3:8080"), "10.77.2.60", "not NATed towards a destination outside Destinations");
    // A neighbour with a policy of its own keeps the table alive through c's changes.
    let (d, ed) = api.container("l2", "d", json!({"IpConfigurations": [{"IpAddress": "10.77.2.61"}], "Policies": [onat(json!({"Exceptions": ["10.77.2.1"]}))]}));
    // The table's handle is new whenever the table is written whole.
    let table_handle = || {
        let t = lab.in_host("nft", &["-a", "list", "table", "inet", "hns_onat"]).unwrap().stdout;
        t.lines().next().and_then(|l| l.rsplit("# handle ").next()).map(|h| h.trim().to_owned()).unwrap_or_default()
    };
    let handle = table_handle();
    // Update on the running endpoint: masquerade everywhere now, written as its elements only.
    let r = modify(&api, &ec, "Update", json!([onat(json!({}))]));
    assert!(r.status == 200 || r.status == 204, "{}", r.raw);
    assert_eq!(seen_as(&lab, &c, "10.77.2.3:8080"), "10.77.2.2");
    assert_eq!(table_handle(), handle, "an Update changes the endpoint's elements, not the whole table");
    assert_eq!(seen_as(&lab, &d, "10.77.2.3:8080"), "10.77.2.2", "the neighbour's policy is untouched");
    api.delete(&format!("/endpoints/{}", ed["ID"].as_str().unwrap())).ok();
    // Remove: the endpoint's own address again, and the table is gone.
    let r = modify(&api, &ec, "Remove", json!([onat(json!({}))]));
    assert!(r.status == 200 || r.status == 204, "{}", r.raw);
    assert_eq!(seen_as(&lab, &c, "10.77.2.1:8080"), "10.77.2.60");
    assert!(!lab.try_in(Side::Host, "nft", &["list", "table", "inet", "hns_onat"]).unwrap().status.success());
    // Add back; a second one of the same family is refused by name.
    let r = modify(&api, &ec, "Add", json!([onat(json!({"Exceptions": ["10.77.2.3"]}))]));
    assert!(r.status == 200 || r.status == 204, "{}", r.raw);
    assert_eq!(seen_as(&lab, &c, "10.77.2.1:8080"), "10.77.2.2");
    let r = modify(&api, &ec, "Add", json!([onat(json!({}))]));
    assert_eq!(r.status, 400, "{}", r.raw);
    assert!(r.raw.contains("already has an IPv4 OutBoundNAT"), "{}", r.raw);
}

#[test]
fn outbound_nat_exceptions_skip_a_nat_networks_masquerade() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "n", "Type": "nat", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.93.0.0/24"}]}]})).ok();
    // The LAN is told the way back to the NAT subnet, so an un-NATed connection can answer.
    lab.in_lan("ip", &["route", "add", "10.93.0.0/24", "via", &hns_lab::HOST_UPLINK.to_string()]).unwrap();
    let _srv = lab.start_tcp_server_in_lan("203.0.113.10:8080").unwrap();
    lab.in_lan("ip", &["addr", "add", "203.0.113.11/32", "dev", "lo"]).unwrap();
    let _srv2 = lab.start_tcp_server_in_lan("203.0.113.11:8080").unwrap();
    let (a, ea) = api.container("n", "a", json!({"Policies": [onat(json!({"Exceptions": ["203.0.113.11"]}))]}));
    assert_eq!(seen_as(&lab, &a, "203.0.113.10:8080"), hns_lab::HOST_UPLINK.to_string(), "still masqueraded by the nat network");
    assert_eq!(seen_as(&lab, &a, "203.0.113.11:8080"), ip_of(&ea), "the Exception skips the masquerade");
}

#[test]
fn outbound_nat_is_repaired_and_survives_restart() {
    let (lab, d, api, _u, _s) = l2bridge_lab(&["--reconcile-interval", "300ms"]);
    let (a, _ea) = api.container("l2", "a", json!({"IpConfigurations": [{"IpAddress": "10.77.2.50"}], "Policies": [onat(json!({"Exceptions": ["10.77.2.3"]}))]}));
    assert_eq!(seen_as(&lab, &a, "10.77.2.1:8080"), "10.77.2.2");
    std::thread::sleep(Duration::from_millis(700));
    let log = std::fs::read_to_string(lab.log_path()).unwrap();
    assert!(!log.contains("hns_onat rewritten"), "the reconciler rewrote a table that had not drifted:\n{log}");
    lab.in_host("nft", &["flush", "map", "inet", "hns_onat", "src4"]).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || lab.in_host("nft", &["list", "map", "inet", "hns_onat", "src4"]).unwrap().stdout.contains("10.77.2.50")),
        "the reconciler restored the flushed map"
    );
    assert_eq!(seen_as(&lab, &a, "10.77.2.1:8080"), "10.77.2.2");
    d.stop().unwrap();
    lab.in_host("nft", &["delete", "table", "inet", "hns_onat"]).unwrap();
    assert_eq!(seen_as(&lab, &a, "10.77.2.1:8080"), "10.77.2.50", "control: without the table nothing is NATed");
    let _d2 = lab.start_hnsd(&["--no-default-network", "--reconcile-interval", "300ms"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || seen_as(&lab, &a, "10.77.2.1:8080") == "10.77.2.2"), "a restarted hnsd reprograms the OutBoundNAT");
    assert_eq!(seen_as(&lab, &a, "10.77.2.3:8080"), "10.77.2.50");
}

#[test]
fn sdn_routes_live_in_the_compartment_and_host_routes_in_the_host() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--reconcile-interval", "300ms"]).unwrap();
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "hr", "Type": "nat", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.96.0.0/24"}]}],
        "Policies": [{"Type": "HostRoute", "Settings": {}}, {"Type": "HostRoute", "Settings": {"DestinationPrefix": "10.62.0.0/24", "NextHop": "10.96.0.10"}}]}))
    .ok();
    // The router container holds 10.62.0.5 behind it; the other one routes 10.61.0.0/16 to it.
    let (r, _er) = api.container("hr", "r", json!({"IpConfigurations": [{"IpAddress": "10.96.0.10"}]}));
    assert!(in_ns(&lab, &r, "ip", &["addr", "add", "10.62.0.5/32", "dev", "lo"]).status.success());
    assert!(in_ns(&lab, &r, "ip", &["addr", "add", "10.61.0.7/32", "dev", "lo"]).status.success());
    let (c, ec) = api.container("hr", "c", json!({"Policies": [{"Type": "SDNRoute", "Settings": {"DestinationPrefix": "10.61.0.0/16", "NextHop": "10.96.0.10"}}]}));
    let shown = in_ns(&lab, &c, "ip", &["route", "show", "10.61.0.0/16"]).stdout;
    assert!(shown.contains("via 10.96.0.10"), "the SDN route is in the compartment: {shown}");
    assert!(ping(&lab, &c, "10.61.0.7"), "and used: 10.61.0.7 lives behind the next hop only");
    // The HostRoute is in the (lab) host namespace and used.
    let host = lab.in_host("ip", &["route", "show", "10.62.0.0/24"]).unwrap().stdout;
    assert!(host.contains("via 10.96.0.10"), "{host}");
    assert!(lab.try_in(Side::Host, "ping", &["-c1", "-W2", "10.62.0.5"]).unwrap().status.success(), "the host reaches 10.62.0.5 through the route");
    // Deleted by hand: both come back.
    assert!(in_ns(&lab, &c, "ip", &["route", "del", "10.61.0.0/16"]).status.success());
    lab.in_host("ip", &["route", "del", "10.62.0.0/24"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || in_ns(&lab, &c, "ip", &["route", "show", "10.61.0.0/16"]).stdout.contains("via 10.96.0.10")), "SDN route restored");
    assert!(eventually(Duration::from_secs(5), || lab.in_host("ip", &["route", "show", "10.62.0.0/24"]).unwrap().stdout.contains("via")), "host route restored");
    // The network's view keeps both HostRoutes.
    let net = api.get("/networks/hr").ok();
    assert_eq!(net["Policies"].as_array().unwrap().iter().filter(|p| p["Type"] == "HostRoute").count(), 2, "{net}");
    // Removing the SDN route with a modify takes it out of the compartment.
    let r = modify(&api, &ec, "Remove", json!([{"Type": "SDNRoute", "Settings": {"DestinationPrefix": "10.61.0.0/16"}}]));
    assert!(r.status == 200 || r.status == 204, "{}", r.raw);
    assert!(in_ns(&lab, &c, "ip", &["route", "show", "10.61.0.0/16"]).stdout.trim().is_empty());
    // The HostRoute goes with its network.
    for n in ["r", "c"] {
        lab.hnsctl_ok(&["endpoint", "rm", n]).unwrap();
    }
    api.delete("/networks/hr").ok();
    assert!(lab.in_host("ip", &["route", "show", "10.62.0.0/24"]).unwrap().stdout.trim().is_empty(), "the host route went with the network");
}

/// Throughput (bytes/s) of a `bulk` send from `from` to a sink at `to`.
fn bulk(lab: &Lab, from: Side, ns: Option<&Value>, to: &str) -> f64 {
    let args = ["bulk", to, "--seconds", "2"];
    let o = match ns {
        Some(ns) => in_ns(lab, ns, &probe(), &args),
        None => lab.probe(from, &args).unwrap(),
    };
    assert!(o.status.success(), "bulk to {to}: {}", o.stderr);
    o.stdout.split_whitespace().find_map(|w| w.strip_prefix("rate=")).unwrap().parse().unwrap()
}

#[test]
fn qos_caps_the_outgoing_rate_and_leaves_a_neighbour_alone() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&["--reconcile-interval", "300ms"]).unwrap();
    let api = Api::new(&lab);
    let _sink = lab.start_probe_server(Side::Lan, "serve-sink", "203.0.113.10:9000").unwrap();
    let cap = 1_000_000u64;
    let (a, ea) = api.container("nat", "a", json!({"Policies": [{"Type": "QOS", "Settings": {"MaximumOutgoingBandwidthInBytes": cap}}]}));
    let (b, _eb) = api.container("nat", "b", json!({}));
    let capped = bulk(&lab, Side::Host, Some(&a), "203.0.113.10:9000");
    let free = bulk(&lab, Side::Host, Some(&b), "203.0.113.10:9000");
    eprintln!("QOS cap {cap} B/s: capped endpoint {capped:.0} B/s, uncapped neighbour {free:.0} B/s");
    assert!((capped - cap as f64).abs() <= 0.10 * cap as f64, "capped rate {capped:.0} B/s is not within 10 % of {cap}");
    assert!(free > 5.0 * cap as f64, "the uncapped neighbour ({free:.0} B/s) must not be held to the cap");
    // A root process in the compartment cannot lift it: the cap lives on the host side.
    let _ = in_ns(&lab, &a, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
    let again = bulk(&lab, Side::Host, Some(&a), "203.0.113.10:9000");
    assert!(again < 1.3 * cap as f64, "{again:.0} B/s after the container's own tc change");
    // The reconciler leaves a cap that is in place alone (a rewrite would refill the bucket)...
    let log = std::fs::read_to_string(lab.log_path()).unwrap();
    assert!(!log.contains("QOS caps restored"), "the reconciler rewrote a cap that had not drifted:\n{log}");
    // ...repairs a removed one; a restart keeps it.
    let ep = ea["ID"].as_str().unwrap();
    let veth = format!("hnv{}", ep.replace('-', "").get(..12).unwrap());
    lab.in_host("tc", &["qdisc", "del", "dev", &veth, "ingress"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || lab.in_host("tc", &["filter", "show", "dev", &veth, "parent", "ffff:"]).unwrap().stdout.contains("mirred")), "the reconciler restored the cap");
    d.stop().unwrap();
    let _d2 = lab.start_hnsd(&["--reconcile-interval", "300ms"]).unwrap();
    let after = bulk(&lab, Side::Host, Some(&a), "203.0.113.10:9000");
    assert!(after < 1.3 * cap as f64, "{after:.0} B/s after a restart");
    // Removing the policy lifts the cap and the IFB goes.
    let r = modify(&api, &ea, "Remove", json!([{"Type": "QOS", "Settings": {}}]));
    assert!(r.status == 200 || r.status == 204, "{}", r.raw);
    let lifted = bulk(&lab, Side::Host, Some(&a), "203.0.113.10:9000");
    assert!(lifted > 5.0 * cap as f64, "{lifted:.0} B/s once the QOS policy is removed");
    let ifb = format!("hnf{}", ep.replace('-', "").get(..12).unwrap());
    assert!(!lab.in_host("ip", &["-o", "link", "show"]).unwrap().stdout.contains(&ifb));
}

#[test]
fn qos_incoming_cap_slows_what_the_endpoint_receives() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let cap = 2_000_000u64;
    let (a, ea) = api.container("nat", "a", json!({"Policies": [{"Type": "QOS", "Settings": {"MaximumOutgoingBandwidthInBytes": 0, "MaximumIncomingBandwidthInBytes": cap}}]}));
    let addr = format!("{}:9000", ip_of(&ea));
    let _sink = lab.spawn_in_host("nsenter", &[&format!("--net={}", a["NetNsPath"].as_str().unwrap()), &probe(), "serve-sink", &addr]).unwrap();
    assert!(eventually(Duration::from_secs(5), || in_ns(&lab, &a, "ss", &["-ltn"]).stdout.contains(":9000")));
    let got = bulk(&lab, Side::Host, None, &addr);
    eprintln!("QOS incoming cap {cap} B/s: measured {got:.0} B/s");
    assert!((got - cap as f64).abs() <= 0.10 * cap as f64, "incoming rate {got:.0} B/s is not within 10 % of {cap}");
}

#[test]
fn bad_policy_input_is_refused_field_by_field_and_changes_nothing() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (_a, ea) = api.container("nat", "a", json!({}));
    let before = api.snapshot();
    let kernel_before = lab.in_host("nft", &["list", "ruleset"]).unwrap().stdout;
    let cases = [
        (onat(json!({"VirtualIP": "10.0.0.300"})), "Settings.VirtualIP"),
        (onat(json!({"Exceptions": ["10.0.0.0/8", "x"]})), "Settings.Exceptions[1]"),
        (onat(json!({"Destinations": ["fd00::/8"]})), "Settings.Destinations[0]"),
        (onat(json!({"Flags": 1})), "Settings.Flags"),
        (json!({"Type": "SDNRoute", "Settings": {"DestinationPrefix": "10.1.0.0/33"}}), "Settings.DestinationPrefix"),
        (json!({"Type": "SDNRoute", "Settings": {"DestinationPrefix": "10.1.0.0/16", "NextHop": "192.0.2.1"}}), "Settings.NextHop"),
        (json!({"Type": "SDNRoute", "Settings": {"DestinationPrefix": "10.1.0.0/16", "NeedEncap": true}}), "Settings.NeedEncap"),
        (json!({"Type": "QOS", "Settings": {"MaximumOutgoingBandwidthInBytes": 100}}), "Settings.MaximumOutgoingBandwidthInBytes"),
        (json!({"Type": "QOS", "Settings": {"MaximumOutgoingBandwidthInBytes": "fast"}}), "Settings.MaximumOutgoingBandwidthInBytes"),
    ];
    for (policy, field) in cases {
        let r = api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "Name": "x", "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80}}, policy.clone()]}));
        assert_eq!(r.status, 400, "{policy}: {}", r.raw);
        assert!(r.raw.contains(&format!("Policies[1].{field}")), "{policy}: {}", r.raw);
        let r = modify(&api, &ea, "Add", json!([policy.clone()]));
        assert_eq!(r.status, 400, "{policy}: {}", r.raw);
        assert!(r.raw.contains(&format!("Settings.Policies[0].{field}")), "{policy}: {}", r.raw);
    }
    let r = api.post("/networks", &json!({"Name": "bad", "Type": "nat", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.97.0.0/24"}]}], "Policies": [{"Type": "HostRoute", "Settings": {"DestinationPrefix": "10.63.0.0/24", "NextHop": "10.1.1.1"}}]}));
    assert_eq!(r.status, 400, "{}", r.raw);
    assert!(r.raw.contains("Policies[0].Settings.NextHop"), "{}", r.raw);
    let r = api.post("/networks/nat", &json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": {"Policies": [{"Type": "HostRoute", "Settings": {}}]}}));
    assert_eq!(r.status, 400, "{}", r.raw);
    assert!(r.raw.contains("HostRoute"), "{}", r.raw);
    let r = modify(&api, &ea, "Remove", json!([{"Type": "QOS", "Settings": {}}]));
    assert_eq!(r.status, 404, "{}", r.raw);
    assert_eq!(api.snapshot(), before, "a refused request changed the API state");
    assert_eq!(lab.in_host("nft", &["list", "ruleset"]).unwrap().stdout, kernel_before, "a refused request changed the kernel");
}

/// OutBoundNAT on an overlay network (the Kubernetes shape): a pod's connection to an address
/// outside the cluster network (here another host's underlay address) leaves with its host's
/// underlay address, while pod-to-pod across hosts (the Exception: the overlay subnet) keeps
/// the pod's own address through the VXLAN.
#[test]
fn outbound_nat_on_overlay_masquerades_to_the_underlay_and_keeps_pod_to_pod() {
    let cluster = hns_lab::ClusterLab::new(2).expect("cluster lab");
    let _daemons: Vec<hns_lab::Daemon> = (0..2).map(|i| cluster.start_hnsd(i, &["--no-default-network"]).expect("hnsd starts")).collect();
    let apis: Vec<Api> = cluster.hosts().iter().map(Api::new).collect();
    cluster.host(0).hnsctl_ok(&["network", "create", "-d", "overlay", "--subnet", "10.240.0.0/24", "ov"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || apis[1].get("/networks/ov").status == 200), "host1 did not get the network");
    let underlay1 = hns_lab::ClusterLab::vtep(1).to_string();
    let _outside = cluster.host(1).start_tcp_server_in_host(&format!("{underlay1}:8080")).unwrap();
    let (b, eb) = apis[1].container("ov", "b", json!({}));
    let _pod = cluster.host(1).spawn_in_host("nsenter", &[&format!("--net={}", b["NetNsPath"].as_str().unwrap()), &probe(), "serve-tcp", &format!("{}:7000", ip_of(&eb))]).unwrap();
    let (a, ea) = apis[0].container("ov", "a", json!({"Policies": [onat(json!({"Exceptions": ["10.240.0.0/24"]}))]}));
    let from_a = |to: &str| {
        let lab = cluster.host(0);
        let mut seen = String::new();
        let ok = eventually(Duration::from_secs(5), || {
            let o = in_ns(lab, &a, &probe(), &["connect-tcp", to, "--timeout-ms", "1000"]);
            seen = o.stdout.lines().find_map(|l| l.strip_prefix("peer=")).and_then(|p| p.split_whitespace().next()).and_then(|p| p.rsplit_once(':')).map(|(ip, _)| ip.to_owned()).unwrap_or_default();
            o.status.success()
        });
        assert!(ok, "a reaches {to}");
        seen
    };
    assert_eq!(from_a(&format!("{underlay1}:8080")), hns_lab::ClusterLab::vtep(0).to_string(), "outside the cluster network: host0's underlay address");
    assert_eq!(from_a(&format!("{}:7000", ip_of(&eb))), ip_of(&ea), "pod to pod across hosts keeps the pod's address");
    // Added later on a running endpoint, the policy brings its default route with it; removed,
    // it takes the route away again (the overlay is closed to the outside without it).
    let (c, ep_c) = apis[0].container("ov", "c", json!({}));
    let outside = || in_ns(cluster.host(0), &c, &probe(), &["connect-tcp", &format!("{underlay1}:8080"), "--timeout-ms", "500"]).status.success();
    assert!(!outside(), "without OutBoundNAT the overlay endpoint reaches nothing outside");
    assert_eq!(modify(&apis[0], &ep_c, "Add", json!([onat(json!({}))])).status, 204);
    assert!(eventually(Duration::from_secs(5), outside), "OutBoundNAT added on a running overlay endpoint opens the way out");
    assert_eq!(modify(&apis[0], &ep_c, "Remove", json!([onat(json!({}))])).status, 204);
    assert!(!outside(), "OutBoundNAT removed: the way out is closed again");
}
