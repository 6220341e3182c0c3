//! Event-driven repair of the nft tables (issue E1.2): with the periodic pass an hour away, a
//! firewall reload that flushes the whole ruleset is repaired within moments, started by the
//! kernel's nf_tables notification; hnsd's own table changes (every attach and detach writes
//! some) start no pass.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hns_lab::{Lab, Side};
use serde_json::json;

fn hns_table(lab: &Lab) -> String {
    lab.try_in(Side::Host, "nft", &["list", "table", "inet", "hns"]).unwrap().stdout
}

#[test]
fn a_flushed_ruleset_is_rebuilt_at_once_and_hnss_own_changes_start_no_pass() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&["--reconcile-interval", "3600s"]).unwrap();
    let api = Api::new(&lab);
    // The start-up pass and the periodic one right after it.
    assert!(eventually(Duration::from_secs(10), || reconcile_passes(&api) >= 2.0), "no periodic pass after start");
    let passes = reconcile_passes(&api);

    // hnsd's own writes: port mappings added and removed, an endpoint's ACL chain written
    // and deleted, containers coming and going.
    let mapping = json!({"Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 18080}}]});
    let (a, _) = api.container("nat", "a", mapping);
    let acl = json!({"Policies": [{"Type": "ACL", "Settings": {"Action": "Allow", "Direction": "In", "Protocols": "6", "LocalPorts": "80", "Priority": 100}}]});
    let (_b, eb) = api.container("nat", "b", acl);
    api.delete(&format!("/endpoints/{}", eb["ID"].as_str().unwrap())).ok();
    let (_c, _) = api.container("nat", "c", json!({}));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(reconcile_passes(&api), passes, "hnsd's own nft changes started a reconcile pass");
    assert!(hns_table(&lab).contains("18080"), "the mapping's element is missing before the flush");

    // A firewall reload.
    lab.in_host("nft", &["flush", "ruleset"]).unwrap();
    let t = Instant::now();
    let log = || std::fs::read_to_string(d.log_path().unwrap()).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), || {
            let table = hns_table(&lab);
            table.contains("masquerade") && table.contains("18080")
        }),
        "the flushed table was not rebuilt:\n{}\n{}",
        hns_table(&lab),
        log()
    );
    eprintln!("ruleset flushed: the hns table was rebuilt after {:?}", t.elapsed());
    assert!(reconcile_passes(&api) > passes, "the rebuild was not a reconcile pass");
    assert!(log().contains("another process changed hns's nft tables"), "the log does not say who changed the tables:\n{}", log());

    // Masquerade works again.
    let _server = lab.start_tcp_server_in_lan("203.0.113.10:8081").unwrap();
    let probe = Lab::bin("labprobe").unwrap();
    let out = in_ns(&lab, &a, probe.to_str().unwrap(), &["connect-tcp", "203.0.113.10:8081"]);
    assert!(out.stdout.contains("peer=198.51.100.2:"), "masquerade not restored: {}{}", out.stdout, out.stderr);
}
