//! The nat driver moves real packets: lab tests with namespaces, a bridge, veths and nft.

mod common;

use common::*;
use hns_lab::{Lab, Side, TEST_SERVER, HOST_UPLINK};
use serde_json::json;

fn lab_with_hnsd() -> (Lab, hns_lab::Daemon, Api) {
    let lab = Lab::new().expect("lab");
    let d = lab.start_hnsd(&[]).expect("hnsd starts");
    let api = Api::new(&lab);
    (lab, d, api)
}

#[test]
fn two_compartments_on_one_nat_network_talk_tcp_and_icmp() {
    let (lab, _d, api) = lab_with_hnsd();
    let (a, ea) = api.container("nat", "a", json!({}));
    let (b, _eb) = api.container("nat", "b", json!({}));
    let ip_a = ip_of(&ea);
    assert!(ping(&lab, &b, &ip_a), "b cannot ping a at {ip_a}");
    // A TCP server inside a, a client inside b.
    let probe = hns_lab::Lab::bin("labprobe").unwrap();
    let netns_a = format!("--net={}", a["NetNsPath"].as_str().unwrap());
    let _server = lab
        .spawn_in_host("nsenter", &[&netns_a, probe.to_str().unwrap(), "serve-tcp", &format!("{ip_a}:7000")])
        .unwrap();
    let out = eventually_output(&lab, &b, &[probe.to_str().unwrap(), "connect-tcp", &format!("{ip_a}:7000"), "--send", "hello"]);
    assert!(out.contains("peer=") && out.contains("hello"), "TCP a<-b failed: {out}");
}

fn eventually_output(lab: &Lab, ns: &serde_json::Value, argv: &[&str]) -> String {
    let mut last = String::new();
    eventually(std::time::Duration::from_secs(5), || {
        let o = in_ns(lab, ns, argv[0], &argv[1..]);
        last = format!("{}{}", o.stdout, o.stderr);
        o.status.success()
    });
    last
}

#[test]
fn egress_reaches_the_lan_with_the_host_uplink_address_as_source() {
    let (lab, _d, api) = lab_with_hnsd();
    let _server = lab.start_tcp_server_in_lan(&format!("{TEST_SERVER}:8080")).unwrap();
    let (c, _) = api.container("nat", "c", json!({}));
    let probe = hns_lab::Lab::bin("labprobe").unwrap();
    let out = eventually_output(&lab, &c, &[probe.to_str().unwrap(), "connect-tcp", &format!("{TEST_SERVER}:8080")]);
    assert!(out.contains(&format!("peer={HOST_UPLINK}:")), "the LAN must see the host's uplink address, saw: {out}");
    assert!(ping(&lab, &c, &TEST_SERVER.to_string()), "ICMP egress failed");
}

#[test]
fn unsolicited_traffic_from_the_lan_cannot_reach_a_nat_container() {
    let (lab, _d, api) = lab_with_hnsd();
    let (_c, ep) = api.container("nat", "c", json!({}));
    let ip = ip_of(&ep);
    let subnet = api.get("/networks/nat").ok()["Ipams"][0]["Subnets"][0]["IpAddressPrefix"].as_str().unwrap().to_owned();
    // Even with a route to the container subnet via the host, the LAN is refused.
    lab.in_lan("ip", &["route", "add", &subnet, "via", &HOST_UPLINK.to_string()]).unwrap();
    let o = lab.try_in(Side::Lan, "ping", &["-c1", "-W1", &ip]).unwrap();
    assert!(!o.status.success(), "the LAN reached a nat container without a port mapping");
    // The host itself still reaches it (the management vNIC).
    assert!(lab.try_in(Side::Host, "ping", &["-c1", "-w3", "-i0.2", "-W1", &ip]).unwrap().status.success());
}

#[test]
fn two_nat_networks_cannot_reach_each_other() {
    let (lab, _d, api) = lab_with_hnsd();
    api.post("/networks", &json!({"Name": "other", "Type": "nat", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.99.0.0/24"}]}]})).ok();
    let (a, ea) = api.container("nat", "a", json!({}));
    let (b, eb) = api.container("other", "b", json!({}));
    assert!(ping(&lab, &a, "203.0.113.10") && ping(&lab, &b, "203.0.113.10"), "both must reach the LAN");
    assert!(!ping_once(&lab, &a, &ip_of(&eb)), "nat reached other");
    assert!(!ping_once(&lab, &b, &ip_of(&ea)), "other reached nat");
    assert!(ping(&lab, &b, "10.99.0.1"), "b must reach its own gateway");
}

#[test]
fn static_ip_and_mac_are_what_the_compartment_shows() {
    let (lab, _d, api) = lab_with_hnsd();
    api.post("/networks", &json!({"Name": "s", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.98.0.0/24", "Routes": [{"DestinationPrefix": "0.0.0.0/0", "NextHop": "10.98.0.254"}]}]}]})).ok();
    let (c, ep) = api.container("s", "c", json!({"IpConfigurations": [{"IpAddress": "10.98.0.42"}], "MacAddress": "02:aa:bb:cc:dd:01"}));
    assert_eq!(ep["MacAddress"], "02-AA-BB-CC-DD-01");
    assert_eq!(ep["IpConfigurations"][0]["PrefixLength"], 24);
    let link = in_ns(&lab, &c, "ip", &["-o", "link", "show", "eth0"]).stdout;
    assert!(link.contains("02:aa:bb:cc:dd:01"), "{link}");
    let addr = in_ns(&lab, &c, "ip", &["-o", "-4", "addr", "show", "eth0"]).stdout;
    assert!(addr.contains("10.98.0.42/24"), "{addr}");
    let route = in_ns(&lab, &c, "ip", &["route", "show", "default"]).stdout;
    assert!(route.contains("via 10.98.0.254"), "{route}");
    assert!(ping(&lab, &c, "10.98.0.254"));
}

/// The veth as an attach makes it, in one request: one queue each way (the kernel would make a
/// queue per CPU and cut them down, waiting for RCU twice), the host end up from its creation
/// yet without an IPv6 address (address generation is off before the container end gives it
/// a carrier), the compartment's loopback up.
#[test]
fn an_endpoints_veth_has_one_queue_each_way_and_no_ipv6_on_an_ipv4_network() {
    let (lab, _d, api) = lab_with_hnsd();
    let (c, ep) = api.container("nat", "c", json!({}));
    let host_if = hns_kernel::names::veth_host_name(ep["ID"].as_str().unwrap());
    assert_host_end_is_a_plain_bridge_port(&lab, &ep);
    let host = lab.in_host("ip", &["-d", "link", "show", &host_if]).unwrap().stdout;
    let inside = in_ns(&lab, &c, "ip", &["-d", "link", "show", "eth0"]).stdout;
    for (end, shown) in [("host end", &host), ("container end", &inside)] {
        assert!(shown.contains("numtxqueues 1 ") && shown.contains("numrxqueues 1 "), "{end}: {shown}");
        assert!(shown.contains(",UP,LOWER_UP>"), "{end} is not up with a carrier: {shown}");
    }
    assert_eq!(lab.in_host("ip", &["-6", "addr", "show", "dev", &host_if]).unwrap().stdout.trim(), "", "the host end has an IPv6 address");
    assert_eq!(in_ns(&lab, &c, "ip", &["-6", "addr", "show", "dev", "eth0"]).stdout.trim(), "", "the container end has an IPv6 address");
    assert!(in_ns(&lab, &c, "ip", &["link", "show", "lo"]).stdout.contains(",UP,"), "loopback is down");
    let route = in_ns(&lab, &c, "ip", &["-4", "route", "show", "default"]).stdout;
    let gateway = route.split_whitespace().skip_while(|w| *w != "via").nth(1).unwrap_or_else(|| panic!("no default route: {route}")).to_owned();
    assert!(ping(&lab, &c, &gateway), "no traffic through the veth to {gateway}");
}

/// The endpoint's host end has IPv6 off and no IPv6 route of its own in the host namespace
/// (an up port with IPv6 adds an `ff00::/8` route, one per endpoint, which the kernel walks
/// on every link change), and its bridge does no multicast snooping (which makes every port
/// added or removed re-arm the timers of every other port).
fn assert_host_end_is_a_plain_bridge_port(lab: &Lab, ep: &serde_json::Value) {
    let host_if = hns_kernel::names::veth_host_name(ep["ID"].as_str().unwrap());
    let off = lab.in_host("cat", &[&format!("/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6")]).unwrap().stdout;
    assert_eq!(off.trim(), "1", "IPv6 is on on the host end {host_if}");
    let routes = lab.in_host("ip", &["-6", "route", "show", "table", "all", "dev", &host_if]).unwrap().stdout;
    assert_eq!(routes.trim(), "", "the host end {host_if} has IPv6 routes");
    let bridge = hns_kernel::names::bridge_name(ep["HostComputeNetwork"].as_str().unwrap());
    let shown = lab.in_host("ip", &["-d", "link", "show", &bridge]).unwrap().stdout;
    assert!(shown.contains("mcast_snooping 0 "), "the bridge snoops multicast: {shown}");
}

#[test]
fn endpoints_are_hot_added_and_removed_while_a_process_runs() {
    let (lab, _d, api) = lab_with_hnsd();
    api.post("/networks", &json!({"Name": "second", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.97.0.0/24"}]}]})).ok();
    let (c, _) = api.container("nat", "c", json!({}));
    let netns = format!("--net={}", c["NetNsPath"].as_str().unwrap());
    let sleeper = lab.spawn_in_host("nsenter", &[&netns, "sleep", "300"]).unwrap();
    let ep2 = api.post("/endpoints", &json!({"HostComputeNetwork": "second", "Name": "c2"})).ok();
    api.post(&format!("/namespaces/{}", c["ID"].as_str().unwrap()), &json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": ep2["ID"]}})).ok();
    let shown = api.get(&format!("/endpoints/{}", ep2["ID"].as_str().unwrap())).ok();
    assert_eq!(shown["InterfaceName"], "eth1");
    let addr = in_ns(&lab, &c, "ip", &["-o", "-4", "addr", "show", "eth1"]).stdout;
    assert!(addr.contains(&ip_of(&ep2)), "eth1 not configured: {addr}");
    assert!(ping(&lab, &c, "10.97.0.1"), "hot-added endpoint has no connectivity");
    api.post(&format!("/namespaces/{}", c["ID"].as_str().unwrap()), &json!({"ResourceType": "Endpoint", "RequestType": "Remove", "Settings": {"EndpointId": ep2["ID"]}})).ok();
    let links = in_ns(&lab, &c, "ip", &["-o", "link"]).stdout;
    assert!(!links.contains("eth1"), "eth1 still there after remove: {links}");
    assert!(sleeper.is_running(), "the process must survive hot add/remove");
    assert!(ping(&lab, &c, "203.0.113.10"), "eth0 must keep working");
}

#[test]
fn internal_network_has_no_egress_but_members_talk() {
    let (lab, _d, api) = lab_with_hnsd();
    api.post("/networks", &json!({"Name": "int", "Internal": true, "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.96.0.0/24"}]}]})).ok();
    let (a, _) = api.container("int", "a", json!({}));
    let (_b, eb) = api.container("int", "b", json!({}));
    assert!(ping(&lab, &a, &ip_of(&eb)));
    assert!(!ping_once(&lab, &a, "203.0.113.10"), "internal network reached the LAN");
}

#[test]
fn dns_settings_are_written_to_the_compartment_resolv_conf() {
    let (lab, _d, api) = lab_with_hnsd();
    // Without service discovery the compartment asks the configured servers directly.
    api.post("/networks", &json!({"Name": "d", "Dns": {"Domain": "corp.example", "ServerList": ["198.51.100.53"]}, "Policies": [{"Type": "AutomaticDNS", "Settings": {"Enable": false}}], "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.95.0.0/24"}]}]})).ok();
    let (ns, _) = api.container("d", "c", json!({"Dns": {"ServerList": ["192.0.2.53"]}}));
    let path = ns["ResolvConfPath"].as_str().unwrap();
    let text = lab.in_host("cat", &[path]).unwrap().stdout;
    assert!(text.contains("nameserver 192.0.2.53") && text.contains("nameserver 198.51.100.53") && text.contains("search corp.example"), "{text}");
}

#[test]
fn a_dual_stack_nat_network_moves_ipv4_and_ipv6() {
    let (lab, _d, api) = lab_with_hnsd();
    api.post("/networks", &json!({"Name": "ds", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.94.0.0/24"}, {"IpAddressPrefix": "fd00:94::/64"}]}]})).ok();
    let (a, ea) = api.container("ds", "a", json!({}));
    let (_b, eb) = api.container("ds", "b", json!({}));
    // The bridge carries IPv6 between the containers; its ports need none of their own.
    assert_host_end_is_a_plain_bridge_port(&lab, &ea);
    let b6 = eb["IpConfigurations"][1]["IpAddress"].as_str().unwrap().to_owned();
    assert!(b6.starts_with("fd00:94::"), "{eb}");
    assert_eq!(eb["IpConfigurations"][1]["PrefixLength"], 64);
    assert!(in_ns(&lab, &a, "ping", &["-6", "-c1", "-W2", &b6]).status.success(), "IPv6 between compartments right after attach");
    assert!(ping(&lab, &a, &ip_of(&eb)), "IPv4 between compartments");
    // IPv6 egress is masqueraded to the host's uplink address, like IPv4.
    let _server = lab.start_tcp_server_in_lan(&format!("[{}]:8082", hns_lab::TEST_SERVER_V6)).unwrap();
    let probe = hns_lab::Lab::bin("labprobe").unwrap();
    let out = eventually_output(&lab, &a, &[probe.to_str().unwrap(), "connect-tcp", &format!("[{}]:8082", hns_lab::TEST_SERVER_V6)]);
    assert!(out.contains(&format!("peer=[{}]", hns_lab::HOST_UPLINK_V6)) || out.contains(&format!("peer={}", hns_lab::HOST_UPLINK_V6)), "{out}");
}
