//! One host, one hnsd, and hns touches only what it made: a second hnsd (same namespace, or
//! same state dir) and `--cleanup` under a live daemon are refused; links that merely look like
//! hns's survive; kernel names derived from IDs never collide.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use hns_lab::{Lab, RunOutput, Side};
use serde_json::json;

/// Runs hnsd in the lab host with its own paths (under `dir`) plus `extra`; a daemon that did
/// not refuse would serve forever, so `timeout` ends it and the test fails on its status.
fn other_hnsd(lab: &Lab, state: &Path, run: &Path, socket: &Path, extra: &[&str]) -> RunOutput {
    let hnsd = Lab::bin("hnsd").unwrap();
    let plugins = lab.dir().join("docker-plugins-other");
    let mut args = vec!["10", hnsd.to_str().unwrap(), "--state-dir", state.to_str().unwrap(), "--run-dir", run.to_str().unwrap(), "--socket", socket.to_str().unwrap()];
    args.extend(["--docker-plugin-dir", plugins.to_str().unwrap(), "--no-default-network"]);
    args.extend_from_slice(extra);
    lab.try_in(Side::Host, "timeout", &args).unwrap()
}

fn cleanup(lab: &Lab) -> RunOutput {
    let hnsd = Lab::bin("hnsd").unwrap();
    let (run, state, socket, plugins) = (lab.run_dir(), lab.state_dir(), lab.socket(), lab.dir().join("docker-plugins"));
    let args = [
        "10",
        hnsd.to_str().unwrap(),
        "--cleanup",
        "--run-dir",
        run.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
        "--docker-plugin-dir",
        plugins.to_str().unwrap(),
    ];
    lab.try_in(Side::Host, "timeout", &args).unwrap()
}

/// Waits until the daemon has finished `n` more reconcile passes (its `LastReconcile` has
/// changed `n` times; it has a resolution of one second, and the lab reconciles every second).
fn wait_passes(api: &Api, n: usize) {
    let mut last = api.get("/info").ok()["LastReconcile"].clone();
    for _ in 0..n {
        let changed = eventually(Duration::from_secs(10), || {
            let now = api.get("/info").ok()["LastReconcile"].clone();
            if now != last {
                last = now;
                true
            } else {
                false
            }
        });
        assert!(changed, "no reconcile pass ran");
    }
}

fn link_exists(lab: &Lab, name: &str) -> bool {
    lab.try_in(Side::Host, "ip", &["link", "show", name]).unwrap().status.success()
}

#[test]
fn a_second_hnsd_in_the_same_namespace_refuses_and_the_first_keeps_its_objects() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (a, _) = api.container("nat", "a", json!({}));
    let (_b, eb) = api.container("nat", "b", json!({}));
    let (objects, kernel) = (api.snapshot(), kernel_snapshot(&lab));
    let dir = lab.dir();
    let out = other_hnsd(&lab, &dir.join("state2"), &dir.join("run2"), &dir.join("hns2.sock"), &[]);
    assert!(!out.status.success(), "a second hnsd in the namespace must refuse to start: {}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains(&format!("another hnsd (pid {})", d.pid())), "the error must name the holder: {}", out.stderr);
    assert!(out.stderr.contains("@hns-hnsd-lock"), "{}", out.stderr);
    wait_passes(&api, 2);
    assert_eq!(kernel_snapshot(&lab), kernel, "the first hnsd's kernel objects changed");
    assert_eq!(api.snapshot(), objects);
    assert!(ping(&lab, &a, &ip_of(&eb)));
}

#[test]
fn a_second_hnsd_on_the_same_state_dir_in_another_namespace_refuses() {
    let first = Lab::new().unwrap();
    let d = first.start_hnsd(&[]).unwrap();
    let api = Api::new(&first);
    let (a, _) = api.container("nat", "a", json!({}));
    let objects = api.snapshot();
    let other = Lab::new().unwrap();
    let state = first.state_dir();
    let out = other_hnsd(&other, &state, &other.run_dir(), &other.socket(), &[]);
    assert!(!out.status.success(), "a second hnsd on the state dir must refuse to start: {}{}", out.stdout, out.stderr);
    let lock = state.join("hnsd.lock");
    assert!(
        out.stderr.contains(&format!("another hnsd (pid {}; lock file {})", d.pid(), lock.display())),
        "the error must name the holder and the lock: {}",
        out.stderr
    );
    assert_eq!(api.snapshot(), objects);
    assert!(ping(&first, &a, "203.0.113.10"));
    assert_eq!(other.leftovers_in_host().unwrap(), Vec::<String>::new(), "the refused hnsd built something");
}

#[test]
fn cleanup_refuses_while_hnsd_runs_and_changes_nothing() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (a, _) = api.container("nat", "a", json!({}));
    let (objects, kernel) = (api.snapshot(), kernel_snapshot(&lab));
    let out = cleanup(&lab);
    assert!(!out.status.success(), "--cleanup under a live hnsd must refuse: {}", out.stdout);
    assert!(out.stderr.contains(&format!("cannot clean up: another hnsd (pid {})", d.pid())), "{}", out.stderr);
    assert_eq!(out.stdout, "", "a refused cleanup reports nothing removed");
    assert_eq!(kernel_snapshot(&lab), kernel);
    // The API socket is still there and answers, and the store still has everything.
    assert_eq!(api.snapshot(), objects);
    assert!(ping(&lab, &a, "203.0.113.10"));
}

#[test]
fn cleanup_after_stop_reports_exactly_what_it_removed_and_spares_look_alikes() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (ns, ep) = api.container("nat", "a", json!({}));
    let bridge = api.get("/networks/nat").ok()["InterfaceName"].as_str().unwrap().to_owned();
    let veth = format!("hnv{}", &ep["ID"].as_str().unwrap().replace('-', "")[..12]);
    d.stop().unwrap();
    lab.in_host("ip", &["link", "add", "hns-deadbeef", "type", "bridge"]).unwrap();
    let out = cleanup(&lab);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort();
    let mut want = vec![
        format!("removed link {bridge}"),
        format!("removed link {veth}"),
        "removed nft table inet hns".to_owned(),
        format!("removed namespace {}", ns["NetNsPath"].as_str().unwrap()),
    ];
    want.sort();
    assert_eq!(lines, want);
    assert!(link_exists(&lab, "hns-deadbeef"), "cleanup removed a link hns did not make");
    lab.in_host("ip", &["link", "del", "hns-deadbeef"]).unwrap();
    assert_eq!(lab.leftovers_in_host().unwrap(), Vec::<String>::new());
    // Nothing is left, so nothing is reported.
    let again = cleanup(&lab);
    assert!(again.status.success(), "{}", again.stderr);
    assert_eq!(again.stdout, "", "a second cleanup claims to remove things that do not exist");
}

#[test]
fn a_user_link_named_like_an_hns_link_survives_reconcile() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let (a, _) = api.container("nat", "a", json!({}));
    lab.in_host("ip", &["link", "add", "hns-deadbeef", "type", "bridge"]).unwrap();
    lab.in_host("ip", &["link", "add", "hnv0123456789ab", "type", "bridge"]).unwrap();
    // Positive control: a link with hns's mark (device group "hns") that the store does not
    // know is an orphan, and the same passes remove it.
    lab.in_host("ip", &["link", "add", "hnv00000000beef", "type", "bridge"]).unwrap();
    lab.in_host("ip", &["link", "set", "hnv00000000beef", "group", &0x0068_6e73u32.to_string()]).unwrap();
    assert!(eventually(Duration::from_secs(10), || !link_exists(&lab, "hnv00000000beef")), "the marked orphan was not removed");
    wait_passes(&api, 3);
    assert!(link_exists(&lab, "hns-deadbeef"), "the reconciler deleted a user's bridge");
    assert!(link_exists(&lab, "hnv0123456789ab"), "the reconciler deleted a user's link");
    assert!(ping(&lab, &a, "203.0.113.10"));
}

#[test]
fn network_ids_sharing_the_link_digits_are_refused_and_the_first_keeps_working() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let api = Api::new(&lab);
    let first = "abcdef01-0000-4000-8000-000000000001";
    api.post("/networks", &json!({"ID": first, "Name": "one", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.92.0.0/24"}]}]})).ok();
    let (a, _) = api.container("one", "a", json!({}));
    let (_b, eb) = api.container("one", "b", json!({}));
    let kernel = kernel_snapshot(&lab);
    let r = api.post("/networks", &json!({"ID": "ABCDEF01-1111-4111-8111-111111111111", "Name": "two", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.93.0.0/24"}]}]}));
    assert_eq!(r.status, 409, "{}", r.raw);
    assert_eq!(r.body["field"], "ID", "{}", r.raw);
    let msg = r.body["message"].as_str().unwrap();
    assert!(msg.contains(first) && msg.contains("abcdef01-1111-4111-8111-111111111111") && msg.contains("hns-abcdef01"), "{msg}");
    assert_eq!(api.get("/networks").ok().as_array().unwrap().len(), 1);
    assert_eq!(kernel_snapshot(&lab), kernel, "a refused network changed the kernel");
    assert!(ping(&lab, &a, &ip_of(&eb)));
    // Endpoints: the veth carries 12 hex digits of the ID.
    let e1 = "12345678-9abc-4000-8000-000000000001";
    api.post("/endpoints", &json!({"ID": e1, "HostComputeNetwork": "one"})).ok();
    let r = api.post("/endpoints", &json!({"ID": "12345678-9abc-4fff-8fff-fffffffffff2", "HostComputeNetwork": "one"}));
    assert_eq!(r.status, 409, "{}", r.raw);
    assert!(r.body["message"].as_str().unwrap().contains(e1) && r.raw.contains("hnv123456789abc"), "{}", r.raw);
}
