//! The host's own network namespaces are never adopted as compartments: hnsd's, and the
//! machine's initial one. When hnsd cannot identify the initial namespace, it adopts nothing.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use hns_lab::{HnsdOptions, Holder, Lab};
use serde_json::{Value, json};

/// Asserts that adopting `path` is refused by field with a message naming the path and `why`,
/// and returns the message.
fn refused(api: &Api, path: &str, why: &str) -> String {
    let r = api.post("/namespaces", &json!({"NetNsPath": path}));
    assert_eq!(r.status, 400, "adopting {path} must be refused: {}", r.raw);
    assert_eq!(r.body["code"], "INVALID_NAMESPACE", "{}", r.raw);
    assert_eq!(r.body["field"], "NetNsPath", "{}", r.raw);
    let msg = r.body["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains(path) && msg.contains(why), "the message must name {path} and say {why:?}: {msg}");
    msg
}

/// Links, addresses and routes of a lab namespace.
fn net_state(h: &Holder) -> String {
    ["link", "addr", "route"].iter().map(|o| h.ip(&["-o", o, "show"]).unwrap().stdout).collect()
}

/// A bind mount of `holder`'s network namespace on `file`, made in the lab host's mount
/// namespace (which hnsd's copies), so the path means the same namespace inside any PID
/// namespace.
fn bind_netns(lab: &Lab, holder: &Holder, file: &Path) {
    std::fs::File::create(file).unwrap();
    lab.host().run("mount", [Path::new("--bind"), &holder.netns_path(), file]).unwrap();
}

/// Where this bug was found: PID 1 holds a capability outside hnsd's bounding set, so
/// /proc/1/ns/net cannot be read, and hnsd compared only with the namespaces it could read.
/// Here hnsd runs without CAP_SYS_PTRACE in a PID namespace whose PID 1 sits in the lab's LAN
/// namespace (standing for the machine's namespace): PID 1 is unreadable and no kernel thread
/// is visible, so the initial namespace cannot be identified and every adoption is refused.
#[test]
fn without_a_readable_witness_of_the_initial_namespace_nothing_is_adopted() {
    let lab = Lab::new().unwrap();
    let lan_file: PathBuf = lab.dir().join("lan-netns");
    let host_file: PathBuf = lab.dir().join("host-netns");
    bind_netns(&lab, lab.lan(), &lan_file);
    bind_netns(&lab, lab.host(), &host_file);
    let (lan_path, host_path) = (lan_file.display().to_string(), host_file.display().to_string());
    let wrapper: Vec<String> = [
        // The lab stops the daemon with SIGTERM; `unshare --fork` ignores it, so kill it (and
        // with --kill-child the whole PID namespace) from a shell that does not.
        "sh",
        "-c",
        r#""$@" & u=$!; trap 'kill -KILL $u; wait $u; exit 143' TERM; wait $u"#,
        "sh",
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
        "nsenter",
        &format!("--net={lan_path}"),
        "--",
        // PID 1 of the new PID namespace: this shell, in the LAN namespace, with every capability.
        "sh",
        "-c",
        r#""$@" & wait $!"#,
        "sh",
        "nsenter",
        &format!("--net={host_path}"),
        "--",
        "setpriv",
        "--bounding-set=-sys_ptrace",
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _d = lab.start_hnsd_with(HnsdOptions { wrapper, ..Default::default() }).unwrap();
    let api = Api::new(&lab);

    let api_before = api.snapshot();
    let (lan_before, host_before) = (net_state(lab.lan()), net_state(lab.host()));
    let msg = refused(&api, &lan_path, "could not identify that one at start");
    assert!(msg.contains("/proc/1/ns/net") && msg.contains("ermission denied"), "the reason must say what could not be read: {msg}");
    refused(&api, &host_path, "is hnsd's own network namespace");
    // Through an endpoint create with a namespace by path, as `hnsctl network connect --netns` does.
    let r = lab.hnsctl(&["network", "connect", "nat", "--netns", &lan_path]).unwrap();
    assert!(!r.status.success(), "hnsctl network connect --netns {lan_path} must fail");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(stderr.contains(&lan_path), "{stderr}");

    assert_eq!(api.snapshot(), api_before, "a refused adoption created something");
    assert_eq!(net_state(lab.lan()), lan_before, "a refused adoption changed the LAN namespace");
    assert_eq!(net_state(lab.host()), host_before, "a refused adoption changed hnsd's namespace");
}

/// With the usual privileges: hnsd's own namespace is refused by any path that leads to it, the
/// initial namespace (kthreadd's) is refused, and any other namespace is adopted.
#[test]
fn host_namespaces_are_refused_by_identity_and_others_adopted() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let before = api.snapshot();
    let own = lab.host().netns_path().display().to_string();
    refused(&api, &own, "is hnsd's own network namespace");
    refused(&api, "/proc/2/ns/net", "is the machine's initial (root) network namespace");
    assert_eq!(api.snapshot(), before, "a refused adoption created something");

    let lan = lab.lan().netns_path().display().to_string();
    let ns: Value = api.post("/namespaces", &json!({"NetNsPath": lan})).ok();
    assert_eq!(ns["NetNsPath"], lan.as_str());
}
