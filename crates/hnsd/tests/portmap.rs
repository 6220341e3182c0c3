//! Port mappings move real packets: from the LAN, from the host (its addresses and
//! 127.0.0.1), from a sibling container through the host (hairpin); TCP and UDP; static,
//! dynamic and host-IP bound; added and removed on a running container.

mod common;

use std::time::Duration;

use common::*;
use hns_lab::{HOST_UPLINK, HnsdOptions, LAN_ROUTER, Lab, Side};
use serde_json::{Value, json};

fn probe() -> String {
    Lab::bin("labprobe").unwrap().display().to_string()
}

/// A container on `nat` with a TCP (and UDP) echo server on `port`.
fn server(lab: &Lab, api: &Api, name: &str, port: u16, policies: Value) -> (Value, Value, Vec<hns_lab::Proc>) {
    let (ns, ep) = api.container("nat", name, json!({ "Policies": policies }));
    let netns = format!("--net={}", ns["NetNsPath"].as_str().unwrap());
    let mut procs = Vec::new();
    for mode in ["serve-tcp", "serve-udp"] {
        procs.push(lab.spawn_in_host("nsenter", &[&netns, &probe(), mode, &format!("0.0.0.0:{port}")]).unwrap());
    }
    // Wait until the TCP server answers from the host directly.
    let ip = ip_of(&ep);
    assert!(eventually(Duration::from_secs(5), || lab.probe(Side::Host, &["connect-tcp", &format!("{ip}:{port}")]).unwrap().status.success()));
    (ns, ep, procs)
}

fn pm(proto: &str, external: u16, internal: u16) -> Value {
    json!({"Type": "PortMapping", "Settings": {"Protocol": proto, "InternalPort": internal, "ExternalPort": external}})
}

fn tcp_from(lab: &Lab, side: Side, target: &str) -> Result<String, String> {
    let o = lab.probe(side, &["connect-tcp", target, "--timeout-ms", "1500"]).unwrap();
    if o.status.success() { Ok(o.stdout) } else { Err(format!("{}{}", o.stdout, o.stderr)) }
}

#[test]
fn a_mapping_is_reachable_from_the_lan_the_host_and_a_sibling_with_the_real_client_address() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (_ns, ep, _p) = server(&lab, &api, "web", 80, json!([pm("tcp", 8080, 80), pm("udp", 5353, 80)]));
    assert_eq!(ep["Policies"][0]["Settings"]["ExternalPort"], 8080);
    // From the LAN, to the host's uplink address: the container sees the LAN client.
    let out = tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:8080")).expect("LAN -> mapping");
    assert!(out.contains(&format!("peer={LAN_ROUTER}:")), "the container must see the real client: {out}");
    // UDP from the LAN.
    let o = lab.probe(Side::Lan, &["send-udp", &format!("{HOST_UPLINK}:5353"), "hi", "--timeout-ms", "1500"]).unwrap();
    assert!(o.status.success() && o.stdout.contains("hi"), "UDP mapping: {}{}", o.stdout, o.stderr);
    // From the host itself: its own address and 127.0.0.1 (Windows cannot do the latter).
    tcp_from(&lab, Side::Host, &format!("{HOST_UPLINK}:8080")).expect("host -> own address");
    tcp_from(&lab, Side::Host, "127.0.0.1:8080").expect("host -> 127.0.0.1");
    // From a sibling container, through the host's address (hairpin).
    let (sib, _) = api.container("nat", "sibling", json!({}));
    let o = in_ns(&lab, &sib, &probe(), &["connect-tcp", &format!("{HOST_UPLINK}:8080"), "--timeout-ms", "1500"]);
    assert!(o.status.success(), "hairpin: {}{}", o.stdout, o.stderr);
    // An unmapped port stays closed from the LAN.
    assert!(tcp_from(&lab, Side::Lan, &format!("{}:80", ip_of(&ep))).is_err());
    // The listing shows it with the Open-ContainerPort fields.
    let list = api.get("/portmappings").ok();
    let m = list.as_array().unwrap().iter().find(|m| m["ExternalPort"] == 8080).unwrap().clone();
    assert_eq!((m["Protocol"].as_str(), m["InternalIp"].as_str(), m["InternalPort"].as_u64(), m["Active"].as_bool()), (Some("TCP"), ep["IpConfigurations"][0]["IpAddress"].as_str(), Some(80), Some(true)));
}

#[test]
fn dynamic_and_host_ip_bound_mappings() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--port-range", "40000-40009"]).unwrap();
    let api = Api::new(&lab);
    let bound = json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 9090, "VIP": "127.0.0.1"}});
    let (_ns, ep, _p) = server(&lab, &api, "web", 80, json!([pm("tcp", 0, 80), bound]));
    let chosen = ep["Policies"][0]["Settings"]["ExternalPort"].as_u64().unwrap();
    assert!((40000..=40009).contains(&chosen), "dynamic port {chosen} outside the range");
    tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:{chosen}")).expect("dynamic mapping from the LAN");
    tcp_from(&lab, Side::Host, "127.0.0.1:9090").expect("bound to 127.0.0.1: reachable there");
    assert!(tcp_from(&lab, Side::Host, &format!("{HOST_UPLINK}:9090")).is_err(), "bound to 127.0.0.1: refused on another address");
    assert!(tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:9090")).is_err());
}

#[test]
fn mappings_are_added_and_removed_on_a_running_container() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (_ns, ep, _p) = server(&lab, &api, "web", 80, json!([]));
    let path = format!("/endpoints/{}", ep["ID"].as_str().unwrap());
    assert!(tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:8080")).is_err());
    let r = api.post(&path, &json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": {"Policies": [pm("tcp", 8080, 80)]}}));
    assert_eq!(r.status, 204, "{}", r.raw);
    assert_eq!(api.get(&path).ok()["Policies"].as_array().unwrap().len(), 1);
    tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:8080")).expect("added mapping");
    assert_eq!(api.post(&path, &json!({"ResourceType": "Policy", "RequestType": "Remove", "Settings": {"Policies": [pm("tcp", 8080, 80)]}})).status, 204);
    assert!(tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:8080")).is_err(), "removed mapping still answers");
    let r = api.post(&path, &json!({"ResourceType": "Policy", "RequestType": "Remove", "Settings": {"Policies": [pm("tcp", 8080, 80)]}}));
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("POLICY_NOT_FOUND")));
    // Two host ports to one container port share its firewall allow element: removing one
    // mapping must not close the other.
    let add = json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": {"Policies": [pm("tcp", 8081, 80), pm("tcp", 8082, 80)]}});
    assert_eq!(api.post(&path, &add).status, 204);
    assert_eq!(api.post(&path, &json!({"ResourceType": "Policy", "RequestType": "Remove", "Settings": {"Policies": [pm("tcp", 8081, 80)]}})).status, 204);
    tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:8082")).expect("the other mapping to the same port must stay open");
    assert!(tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:8081")).is_err());
}

#[test]
fn a_recreated_container_with_the_same_host_port_gets_the_traffic() {
    // podman#27516: a stale DNAT rule of the old container shadowed the new one.
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (ns, ep, procs) = server(&lab, &api, "web", 80, json!([pm("tcp", 8080, 80)]));
    drop(procs);
    assert_eq!(api.delete(&format!("/endpoints/{}", ep["ID"].as_str().unwrap())).status, 204);
    assert_eq!(api.delete(&format!("/namespaces/{}", ns["ID"].as_str().unwrap())).status, 204);
    // Take the old address so the new container surely gets another one.
    let (_hold, _) = api.container("nat", "hold", json!({"IpConfigurations": [{"IpAddress": ip_of(&ep)}]}));
    let (_ns2, ep2, _p2) = server(&lab, &api, "web2", 80, json!([pm("tcp", 8080, 80)]));
    assert_ne!(ip_of(&ep2), ip_of(&ep));
    tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:8080")).expect("the new container must get the traffic");
    let nft = lab.in_host("nft", &["list", "map", "inet", "hns", "pm4"]).unwrap().stdout;
    assert!(!nft.contains(&format!("{} . 80", ip_of(&ep))) && nft.contains(&format!("{} . 80", ip_of(&ep2))), "{nft}");
}

#[test]
fn conflicts_are_refused_naming_the_holder() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    api.container("nat", "first", json!({"Policies": [pm("tcp", 8080, 80)]}));
    let before = api.snapshot();
    let r = api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "Name": "second", "Policies": [pm("tcp", 8080, 81)]}));
    assert_eq!((r.status, r.body["code"].as_str()), (409, Some("PORT_ALREADY_EXISTS")));
    assert!(r.body["message"].as_str().unwrap().contains("first"), "{}", r.raw);
    // A port a local process listens on: named by PID and command.
    let listener = lab.start_tcp_server_in_host("0.0.0.0:7070").unwrap();
    let r = api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "Policies": [pm("tcp", 7070, 80)]}));
    assert_eq!((r.status, r.body["code"].as_str()), (409, Some("PORT_ALREADY_EXISTS")));
    let holder = format!("local process PID {} (", listener.pid());
    assert!(r.body["message"].as_str().unwrap().contains(&holder), "the message must name {holder}...): {}", r.raw);
    assert_eq!(api.snapshot(), before, "refused requests changed the store");
}

/// An hnsd that dies (SIGKILL) at `failpoint` while it creates endpoint "web" attached, with a
/// mapping of host port 8080, in a compartment made before; returns the API and the compartment.
fn attach_a_mapping_dying_at(lab: &Lab, failpoint: &str) -> (Api, Value) {
    let d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(lab);
    let ns = api.post("/namespaces", &json!({"Name": "web"})).ok();
    d.stop().unwrap();
    let d = lab.start_hnsd_with(HnsdOptions { env: vec![("HNSD_FAILPOINT".into(), failpoint.into())], ..Default::default() }).unwrap();
    let _ = api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "HostComputeNamespace": ns["ID"], "Name": "web", "Policies": [pm("tcp", 8080, 80)]}));
    assert!(eventually(Duration::from_secs(5), || !d.is_running()), "the failpoint {failpoint} did not kill hnsd");
    (api, ns)
}

/// The mappings are committed (durably once the attach's kernel step is done) and written beside
/// that step, but the endpoint is not yet marked attached when hnsd dies: the next hnsd programs
/// them (a full apply at start compares elements too).
#[test]
fn a_crash_between_commit_and_apply_is_repaired_for_mappings_too() {
    let lab = Lab::new().unwrap();
    let (_api, ns) = attach_a_mapping_dying_at(&lab, "attach-after-kernel");
    let _d = lab.start_hnsd(&[]).unwrap();
    let netns = format!("--net={}", ns["NetNsPath"].as_str().unwrap());
    let _srv = lab.spawn_in_host("nsenter", &[&netns, &probe(), "serve-tcp", "0.0.0.0:80"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:8080")).is_ok()), "the mapping was not repaired");
}

/// The mappings' elements are written beside the attach's kernel step, while its commit is
/// still being made durable: hnsd dies between the two. The next hnsd does not have the
/// endpoint, so it takes the elements out of the kernel, the host port is free, and no link
/// is left.
#[test]
fn a_crash_after_the_elements_before_the_commit_is_durable_leaves_nothing() {
    let lab = Lab::new().unwrap();
    let (api, _ns) = attach_a_mapping_dying_at(&lab, "attach-written-before-durable");
    // What the dead hnsd left: the element is in the kernel (written before the crash).
    assert!(lab.in_host("nft", &["list", "map", "inet", "hns", "pm4"]).unwrap().stdout.contains("8080"), "the element was not written before the commit was durable");
    let _d = lab.start_hnsd(&[]).unwrap();
    assert_eq!(api.get("/endpoints").ok(), json!([]), "an attach whose commit was not durable survived");
    assert!(!lab.in_host("nft", &["list", "map", "inet", "hns", "pm4"]).unwrap().stdout.contains("8080"), "the kernel still maps the port");
    assert!(eventually(Duration::from_secs(5), || !lab.in_host("ip", &["-br", "link"]).unwrap().stdout.lines().any(|l| l.starts_with("hnv") || l.starts_with("hnz"))), "a veth was left");
    // The host port is free again.
    api.container("nat", "again", json!({"Policies": [pm("tcp", 8080, 80)]}));
}

#[test]
fn mappings_of_a_compartment_that_disappears_are_removed() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (holder, path) = netns_process(&lab);
    let ns = api.post("/namespaces", &json!({"NetNsPath": path})).ok();
    api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "HostComputeNamespace": ns["ID"], "Policies": [pm("tcp", 8080, 80)]})).ok();
    assert!(lab.in_host("nft", &["list", "map", "inet", "hns", "pm4"]).unwrap().stdout.contains("8080"));
    holder.kill(nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(eventually(Duration::from_secs(10), || api.get("/portmappings").ok() == json!([])), "the mapping outlived its compartment");
    assert!(!lab.in_host("nft", &["list", "map", "inet", "hns", "pm4"]).unwrap().stdout.contains("8080"), "the kernel still maps the port");
    // The host port is free again.
    api.container("nat", "again", json!({"Policies": [pm("tcp", 8080, 80)]}));
}

#[test]
fn ipv6_mappings_on_a_dual_stack_network() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "ds", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.91.0.0/24"}, {"IpAddressPrefix": "fd00:91::/64"}]}]})).ok();
    let bound6 = json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 9443, "VIP": hns_lab::HOST_UPLINK_V6.to_string()}});
    let (ns, _ep) = api.container("ds", "web", json!({"Policies": [pm("tcp", 8080, 80), bound6]}));
    let netns = format!("--net={}", ns["NetNsPath"].as_str().unwrap());
    let _srv = lab.spawn_in_host("nsenter", &[&netns, &probe(), "serve-tcp", "[::]:80"]).unwrap();
    let v6 = |port: u16| format!("[{}]:{port}", hns_lab::HOST_UPLINK_V6);
    assert!(eventually(Duration::from_secs(5), || tcp_from(&lab, Side::Lan, &v6(8080)).is_ok()), "IPv6 mapping from the LAN");
    let out = tcp_from(&lab, Side::Lan, &v6(8080)).unwrap();
    assert!(out.contains(&format!("peer=[{}]", hns_lab::LAN_ROUTER_V6)) || out.contains(&format!("peer={}", hns_lab::LAN_ROUTER_V6)), "real IPv6 client: {out}");
    tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:8080")).expect("the same mapping over IPv4");
    tcp_from(&lab, Side::Lan, &v6(9443)).expect("bound to the host's IPv6 address");
    assert!(tcp_from(&lab, Side::Lan, &format!("{HOST_UPLINK}:9443")).is_err(), "an IPv6-bound mapping must not answer on IPv4");
    let r = api.post("/endpoints", &json!({"HostComputeNetwork": "ds", "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 9000, "VIP": "::1"}}]}));
    assert_eq!((r.status, r.body["code"].as_str()), (400, Some("MAPPING_NOT_SUPPORTED")), "{}", r.raw);
}
