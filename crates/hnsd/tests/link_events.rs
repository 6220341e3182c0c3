//! Event-driven repair (issue E1.2): with the periodic pass an hour away, a host veth or a
//! network's bridge that someone deletes, sets down or unplugs is put back within moments,
//! started by the kernel's link notification. Each case would wait an hour without it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hns_lab::{Lab, Side};
use serde_json::{Value, json};

/// Long enough that no periodic pass runs after the first one (right after start).
const NO_PERIODIC: &[&str] = &["--reconcile-interval", "3600s"];
/// Generous to a loaded machine; a notification-driven repair takes ~0.1 s.
const SOON: Duration = Duration::from_secs(3);

fn veth_of(ep: &Value) -> String {
    format!("hnv{}", &ep["ID"].as_str().unwrap().replace('-', "")[..12])
}

fn link(lab: &Lab, name: &str) -> Option<String> {
    let out = lab.try_in(Side::Host, "ip", &["-o", "link", "show", name]).unwrap();
    out.status.success().then_some(out.stdout)
}

/// Two containers on the default network, and the bridge's name; the first periodic pass
/// (right after start) is over when it returns.
fn two_containers(lab: &Lab, api: &Api) -> ((Value, Value), (Value, Value), String) {
    let a = api.container("nat", "a", json!({}));
    let b = api.container("nat", "b", json!({}));
    let nets = api.get("/networks").ok();
    let nat = nets.as_array().unwrap().iter().find(|n| n["Name"] == "nat").expect("the default network");
    let bridge = format!("hns-{}", &nat["ID"].as_str().unwrap().replace('-', "")[..8]);
    assert!(link(lab, &bridge).is_some(), "no bridge {bridge}");
    // Two passes: the start-up one and the periodic one right after it. No other runs.
    assert!(eventually(Duration::from_secs(10), || reconcile_passes(api) >= 2.0), "no periodic pass after start");
    assert!(ping(lab, &a.0, &ip_of(&b.1)), "a cannot reach b before anything is broken");
    (a, b, bridge)
}

#[test]
fn a_host_veth_deleted_downed_or_unplugged_is_repaired_on_the_kernels_notice() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(NO_PERIODIC).unwrap();
    let api = Api::new(&lab);
    let ((a, _), (_, eb), bridge) = two_containers(&lab, &api);
    let veth = veth_of(&eb);
    let logp = d.log_path().unwrap().to_owned();
    let log = move || std::fs::read_to_string(&logp).unwrap_or_default();
    let ip_b = ip_of(&eb);

    lab.in_host("ip", &["link", "set", &veth, "down"]).unwrap();
    let t = Instant::now();
    assert!(eventually(SOON, || link(&lab, &veth).is_some_and(|l| l.contains("state UP") || l.contains(",UP"))), "the downed veth was not brought up: {:?}\n{}", link(&lab, &veth), log());
    eprintln!("veth set down: up again after {:?}", t.elapsed());
    assert!(ping(&lab, &a, &ip_b), "no traffic after the veth came back up");

    lab.in_host("ip", &["link", "set", &veth, "nomaster"]).unwrap();
    let t = Instant::now();
    assert!(eventually(SOON, || link(&lab, &veth).is_some_and(|l| l.contains(&format!("master {bridge}")))), "the unplugged veth was not put back on {bridge}: {:?}", link(&lab, &veth));
    eprintln!("veth unplugged: back on the bridge after {:?}", t.elapsed());
    assert!(ping(&lab, &a, &ip_b), "no traffic after the veth was plugged back");

    lab.in_host("ip", &["link", "del", &veth]).unwrap();
    let t = Instant::now();
    assert!(eventually(SOON, || link(&lab, &veth).is_some_and(|l| l.contains(&format!("master {bridge}")))), "the deleted veth was not re-created on {bridge}");
    eprintln!("veth deleted: re-created after {:?}", t.elapsed());
    assert!(ping(&lab, &a, &ip_b), "no traffic to the re-created endpoint");
    assert_eq!(ip_of(&api.get(&format!("/endpoints/{}", eb["ID"].as_str().unwrap())).ok()), ip_b, "the endpoint must keep its address");
}

#[test]
fn a_deleted_bridge_is_rebuilt_with_its_endpoints_plugged_back_on_the_kernels_notice() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(NO_PERIODIC).unwrap();
    let api = Api::new(&lab);
    let ((a, ea), (_, eb), bridge) = two_containers(&lab, &api);

    lab.in_host("ip", &["link", "del", &bridge]).unwrap();
    let t = Instant::now();
    let plugged = |ep: &Value| link(&lab, &veth_of(ep)).is_some_and(|l| l.contains(&format!("master {bridge}")));
    assert!(eventually(SOON, || link(&lab, &bridge).is_some() && plugged(&ea) && plugged(&eb)), "the bridge {bridge} and its ports were not rebuilt: {:?}", link(&lab, &bridge));
    eprintln!("bridge deleted: rebuilt with its ports after {:?}", t.elapsed());
    assert!(ping(&lab, &a, &ip_of(&eb)), "no traffic between the endpoints after the rebuild");
    // The gateway address is back on the bridge.
    let gateway = gateway_of(&api);
    assert!(ping(&lab, &a, &gateway), "the gateway {gateway} does not answer after the rebuild");
}

fn gateway_of(api: &Api) -> String {
    let nets = api.get("/networks").ok();
    let nat = nets.as_array().unwrap().iter().find(|n| n["Name"] == "nat").unwrap().clone();
    nat["Ipams"][0]["Subnets"][0]["Routes"][0]["NextHop"].as_str().expect("the default network's gateway").to_owned()
}
