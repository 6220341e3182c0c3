//! The periodic reconciler (every second in the lab) repairs what someone breaks with `ip`
//! behind hnsd's back, and stays quiet about hnsd's own work in progress.

mod common;

use std::time::Duration;

use common::*;
use hns_lab::{Lab, Side};
use serde_json::json;

fn veth_of(ep: &serde_json::Value) -> String {
    format!("hnv{}", &ep["ID"].as_str().unwrap().replace('-', "")[..12])
}

#[test]
fn a_host_veth_set_down_is_brought_up_again() {
    let lab = Lab::new().unwrap();
    // The periodic pass's repair; on the kernel's notice it comes too soon to see the cut
    // (`link_events.rs`).
    let _d = lab.start_hnsd(&["--no-repair-on-notice"]).unwrap();
    let api = Api::new(&lab);
    let (a, _) = api.container("nat", "a", json!({}));
    let (_b, eb) = api.container("nat", "b", json!({}));
    let veth = veth_of(&eb);
    lab.in_host("ip", &["link", "set", &veth, "down"]).unwrap();
    assert!(!ping_once(&lab, &a, &ip_of(&eb)), "a downed veth must cut traffic");
    assert!(eventually(Duration::from_secs(10), || ping(&lab, &a, &ip_of(&eb))), "traffic did not come back");
    let shown = lab.in_host("ip", &["-o", "link", "show", &veth]).unwrap().stdout;
    assert!(shown.contains("state UP"), "{shown}");
    assert_eq!(api.get(&format!("/endpoints/{}", eb["ID"].as_str().unwrap())).ok()["State"], 2, "the endpoint must still show attached");
}

#[test]
fn a_default_route_deleted_inside_a_compartment_is_restored() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (a, _) = api.container("nat", "a", json!({}));
    let routes = in_ns(&lab, &a, "ip", &["route", "show", "default"]).stdout;
    assert!(routes.contains("default via"), "{routes}");
    let del = in_ns(&lab, &a, "ip", &["route", "del", "default"]);
    assert!(del.status.success(), "{}", del.stderr);
    assert!(!ping_once(&lab, &a, "203.0.113.10"), "without a default route the LAN is unreachable");
    assert!(eventually(Duration::from_secs(10), || ping(&lab, &a, "203.0.113.10")), "the default route was not restored");
    assert_eq!(in_ns(&lab, &a, "ip", &["route", "show", "default"]).stdout, routes);
}

#[test]
fn an_unmounted_compartment_whose_process_runs_is_mounted_again() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (a, ea) = api.container("nat", "a", json!({}));
    let path = a["NetNsPath"].as_str().unwrap().to_owned();
    let id = a["ID"].as_str().unwrap().to_owned();
    let p = lab.spawn_in_host("nsenter", &[&format!("--net={path}"), "sleep", "300"]).unwrap();
    let comm = format!("/proc/{}/comm", p.pid());
    assert!(eventually(Duration::from_secs(5), || std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")));
    let r = api.post(&format!("/namespaces/{id}"), &json!({"ResourceType": "Container", "RequestType": "Add", "Settings": {"Pid": p.pid(), "Command": ["sleep", "300"]}}));
    assert_eq!(r.status, 200, "{}", r.raw);
    lab.in_host("umount", &["--lazy", &path]).unwrap();
    let mounted = || lab.try_in(Side::Host, "nsenter", &[&format!("--net={path}"), "true"]).unwrap().status.success();
    assert!(eventually(Duration::from_secs(10), mounted), "the compartment was not mounted again");
    // Still the same compartment, with its endpoint, and traffic flows.
    assert_eq!(api.get("/endpoints").ok().as_array().unwrap().len(), 1, "the endpoint was garbage-collected");
    assert_eq!(api.get(&format!("/namespaces/{id}")).ok()["ID"], id.as_str());
    assert!(ping(&lab, &a, "203.0.113.10"));
    assert!(lab.try_in(Side::Host, "ping", &["-c1", "-w3", "-i0.2", "-W1", &ip_of(&ea)]).unwrap().status.success());
    // Control: without a live process the compartment is gone and collected, as before.
    p.kill(nix::sys::signal::Signal::SIGKILL).unwrap();
    lab.in_host("umount", &["--lazy", &path]).unwrap();
    assert!(eventually(Duration::from_secs(10), || api.get("/namespaces").ok() == json!([])), "a dead unmounted compartment must be collected");
}

#[test]
fn detach_churn_is_not_reported_as_orphans() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&["--reconcile-interval", "200ms"]).unwrap();
    let api = Api::new(&lab);
    let made: Vec<_> = (0..10).map(|i| api.container("nat", &format!("c{i}"), json!({}))).collect();
    let start = std::time::Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(4) {
        for (ns, ep) in &made {
            for op in ["Remove", "Add"] {
                let r = api.post(&format!("/namespaces/{}", ns["ID"].as_str().unwrap()), &json!({"ResourceType": "Endpoint", "RequestType": op, "Settings": {"EndpointId": ep["ID"]}}));
                assert_eq!(r.status, 200, "{}", r.raw);
            }
        }
        rounds += 1;
    }
    let log = std::fs::read_to_string(d.log_path().unwrap()).unwrap();
    let orphans: Vec<&str> = log.lines().filter(|l| l.contains("removed orphan")).collect();
    assert!(orphans.is_empty(), "{rounds} rounds of detach and attach were reported as orphans:\n{}", orphans.join("\n"));
    assert!(ping(&lab, &made[0].0, "203.0.113.10"));
}

/// A rule of the hns table edited by hand (the same number of rules, one verdict changed) is
/// put back: the drift check compares the rules' content, not their count.
#[test]
fn a_rule_of_the_hns_table_edited_by_hand_is_put_back() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let _ = api.container("nat", "a", json!({}));
    let isolation = "iifname @bridges oifname @bridges drop";
    let forward = || lab.in_host("nft", &["-a", "list", "chain", "inet", "hns", "forward"]).unwrap().stdout;
    let listing = forward();
    let line = listing.lines().find(|l| l.trim_start().starts_with(isolation)).unwrap_or_else(|| panic!("no isolation rule: {listing}"));
    let handle = line.rsplit("# handle ").next().unwrap().trim().to_owned();
    lab.in_host("nft", &["replace", "rule", "inet", "hns", "forward", "handle", &handle, "iifname", "@bridges", "oifname", "@bridges", "accept"]).unwrap();
    let rules = |text: &str| text.lines().filter(|l| l.contains("# handle") && !l.contains("chain ")).count();
    let edited = forward();
    assert!(!edited.contains(isolation) && rules(&edited) == rules(&listing), "the edit keeps the count: {edited}");
    assert!(eventually(Duration::from_secs(10), || forward().contains(isolation)), "the edited rule was not put back: {}", forward());
    assert!(!forward().contains("iifname @bridges oifname @bridges accept"), "{}", forward());
}
