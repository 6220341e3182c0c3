//! The store is the truth: restarts, crashes, reboots, drift and cleanup, proven in the lab.

mod common;

use std::time::Duration;

use common::*;
use hns_lab::{HnsdOptions, Lab, Side};
use nix::sys::signal::Signal;
use serde_json::json;

fn start(lab: &Lab) -> hns_lab::Daemon {
    lab.start_hnsd(&[]).expect("hnsd starts")
}

fn hns_links(lab: &Lab) -> Vec<String> {
    lab.in_host("ip", &["-o", "link", "show"])
        .unwrap()
        .stdout
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_owned())
        .filter(|n| n.starts_with("hns-") || n.starts_with("hnv") || n.starts_with("hnz"))
        .collect()
}

#[test]
fn restart_keeps_every_object_and_traffic_keeps_flowing() {
    let lab = Lab::new().unwrap();
    let d = start(&lab);
    let api = Api::new(&lab);
    let (a, _) = api.container("nat", "a", json!({}));
    let (_b, eb) = api.container("nat", "b", json!({}));
    let before = api.snapshot();
    d.stop().unwrap();
    // The data plane does not need hnsd.
    assert!(ping(&lab, &a, &ip_of(&eb)), "traffic stopped with hnsd");
    assert!(ping(&lab, &a, "203.0.113.10"), "egress stopped with hnsd");
    let _d = start(&lab);
    assert_eq!(api.snapshot(), before, "objects changed across a restart");
    assert!(ping(&lab, &a, &ip_of(&eb)));
    // Allocation continues after the restart without reusing an address.
    let (_c, ec) = api.container("nat", "c", json!({}));
    assert_ne!(ip_of(&ec), ip_of(&eb));
}

/// SIGKILL at each step boundary of an attach, for both ways to attach. After the commit,
/// which becomes durable only during the kernel step: the next hnsd knows nothing of the
/// attach (no endpoint created; an existing one still unattached) and nothing leaks. After the
/// kernel step (which runs without the engine lock), before "attached": the next hnsd finishes
/// the attach.
#[test]
fn sigkill_at_every_step_of_an_attach_is_repaired_at_restart() {
    let lab = Lab::new().unwrap();
    let d = start(&lab);
    let api = Api::new(&lab);
    let (a, _) = api.container("nat", "a", json!({}));
    d.stop().unwrap();
    let mut names = Vec::new();
    for failpoint in ["attach-after-commit", "attach-after-kernel"] {
        for created_attached in [true, false] {
            let name = format!("{}-{}", &failpoint[13..], if created_attached { "create" } else { "add" });
            let d = start(&lab);
            let ns = api.post("/namespaces", &json!({"Name": name})).ok();
            let ep = (!created_attached).then(|| api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "Name": name})).ok());
            d.stop().unwrap();
            // This hnsd dies with SIGKILL at the failpoint.
            let d = lab.start_hnsd_with(HnsdOptions { args: vec![], env: vec![("HNSD_FAILPOINT".into(), failpoint.into())], ..Default::default() }).unwrap();
            let r = match &ep {
                None => api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "HostComputeNamespace": ns["ID"], "Name": name})),
                Some(ep) => api.post(
                    &format!("/namespaces/{}", ns["ID"].as_str().unwrap()),
                    &json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": ep["ID"]}}),
                ),
            };
            assert!(r.status == 0 || r.status >= 500 || r.raw.is_empty(), "{name}: the request should die with the daemon: {r:?}");
            assert!(eventually(Duration::from_secs(5), || !d.is_running()), "{name}: failpoint did not kill hnsd");
            names.push((name, ns["ID"].clone(), failpoint, created_attached));
        }
    }
    let _d = start(&lab);
    let eps = api.get("/endpoints").ok();
    let mut attached = 0;
    for (name, ns_id, failpoint, created_attached) in &names {
        let e = eps.as_array().unwrap().iter().find(|e| e["Name"] == name.as_str()).cloned();
        if *failpoint == "attach-after-commit" {
            match e {
                None => assert!(created_attached, "{name}: the endpoint created before was lost: {eps}"),
                Some(e) => assert!(!created_attached && e["HostComputeNamespace"].as_str().unwrap_or_default().is_empty(), "{name}: an attach whose commit was not durable survived: {e}"),
            }
            continue;
        }
        attached += 1;
        let e = e.unwrap_or_else(|| panic!("{name}: the committed endpoint was lost: {eps}"));
        assert_eq!(&e["HostComputeNamespace"], ns_id, "{name}");
        assert!(eventually(Duration::from_secs(5), || ping(&lab, &a, &ip_of(&e))), "{name}: the repaired endpoint has no connectivity");
        assert!(eventually(Duration::from_secs(5), || api.get(&format!("/endpoints/{}", e["ID"].as_str().unwrap())).ok()["State"] == hns_api::state::ATTACHED), "{name}: not marked attached");
    }
    // Nothing leaked: exactly one bridge and one veth per attached endpoint.
    let links = hns_links(&lab);
    assert_eq!(links.len(), 2 + attached, "{links:?}");
}

/// SIGKILL at each step boundary of a detach (after the commit, which is lazy; after the veth's
/// kernel step, which runs without the engine lock while the commit becomes durable, before the
/// end step), for both ways to detach (delete the endpoint, remove it from its namespace): the
/// next hnsd leaves the first as it was and finishes the second, nothing leaks, and a removed
/// endpoint attaches again.
#[test]
fn sigkill_at_every_step_of_a_detach_is_repaired_at_restart() {
    let lab = Lab::new().unwrap();
    let d = start(&lab);
    let api = Api::new(&lab);
    let (a, _) = api.container("nat", "a", json!({}));
    d.stop().unwrap();
    let mut cases = Vec::new();
    for failpoint in ["detach-after-commit", "detach-after-kernel"] {
        for delete in [true, false] {
            let name = format!("{}-{}", &failpoint[13..], if delete { "delete" } else { "remove" });
            let d = start(&lab);
            let (ns, ep) = api.container("nat", &name, json!({}));
            d.stop().unwrap();
            // This hnsd dies with SIGKILL at the failpoint.
            let d = lab.start_hnsd_with(HnsdOptions { args: vec![], env: vec![("HNSD_FAILPOINT".into(), failpoint.into())], ..Default::default() }).unwrap();
            let ep_id = ep["ID"].as_str().unwrap().to_owned();
            let r = if delete {
                api.delete(&format!("/endpoints/{ep_id}"))
            } else {
                api.post(&format!("/namespaces/{}", ns["ID"].as_str().unwrap()), &json!({"ResourceType": "Endpoint", "RequestType": "Remove", "Settings": {"EndpointId": ep_id}}))
            };
            assert!(r.status == 0 || r.status >= 500 || r.raw.is_empty(), "{name}: the request should die with the daemon: {r:?}");
            assert!(eventually(Duration::from_secs(5), || !d.is_running()), "{name}: failpoint did not kill hnsd");
            cases.push((name, delete, ns, ep_id));
        }
    }
    let _d = start(&lab);
    for (name, delete, ns, ep_id) in &cases {
        let r = api.get(&format!("/endpoints/{ep_id}"));
        if name.starts_with("commit-") {
            // The commit is made lazily and becomes durable with the veth's step: killed
            // before that, the request is lost as a whole and the endpoint works as before.
            let e = r.ok();
            assert_eq!(&e["HostComputeNamespace"], &ns["ID"], "{name}: a detach whose commit was not durable survived");
            assert!(eventually(Duration::from_secs(5), || ping(&lab, &a, &ip_of(&e))), "{name}: the endpoint left as it was has no connectivity");
            continue;
        }
        if *delete {
            assert_eq!(r.status, 404, "{name}: the deleted endpoint is back: {}", r.raw);
            continue;
        }
        let attached_to = r.ok()["HostComputeNamespace"].clone();
        assert!(attached_to.as_str().unwrap_or_default().is_empty(), "{name}: the removed endpoint is still attached to {attached_to}");
        api.post(&format!("/namespaces/{}", ns["ID"].as_str().unwrap()), &json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": ep_id}})).ok();
        let ep = api.get(&format!("/endpoints/{ep_id}")).ok();
        assert!(eventually(Duration::from_secs(5), || ping(&lab, &a, &ip_of(&ep))), "{name}: the endpoint attached again has no connectivity");
    }
    // Nothing leaked: the bridge, a's veth, the veths of the two endpoints left as they were
    // and of the one attached again.
    assert!(eventually(Duration::from_secs(5), || hns_links(&lab).len() == 5), "{:?}", hns_links(&lab));
}

#[test]
fn sigkill_after_committing_a_network_is_repaired_at_restart() {
    let lab = Lab::new().unwrap();
    let d = lab
        .start_hnsd_with(HnsdOptions { args: vec!["--no-default-network".into()], env: vec![("HNSD_FAILPOINT".into(), "network-after-commit".into())], ..Default::default() })
        .unwrap();
    let api = Api::new(&lab);
    let _ = api.post("/networks", &json!({"Name": "n", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.90.0.0/24"}]}]}));
    assert!(eventually(Duration::from_secs(5), || !d.is_running()));
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    assert_eq!(api.get("/networks/n").ok()["State"], 2, "network must be ready after reconcile");
    let (c, _) = api.container("n", "c", json!({}));
    assert!(ping(&lab, &c, "10.90.0.1") && ping(&lab, &c, "203.0.113.10"));
}

/// A network's delete is committed before its kernel step (which runs without the engine
/// lock): a crash right after the commit leaves a bridge and firewall rules the store no longer
/// knows, which the restart removes.
#[test]
fn sigkill_after_committing_a_network_delete_is_repaired_at_restart() {
    let lab = Lab::new().unwrap();
    let opts = HnsdOptions { args: vec!["--no-default-network".into()], env: vec![("HNSD_FAILPOINT".into(), "network-delete-after-commit".into())], ..Default::default() };
    let d = lab.start_hnsd_with(opts).unwrap();
    let api = Api::new(&lab);
    let keep = api.post("/networks", &json!({"Name": "keep", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.92.0.0/24"}]}]})).ok();
    let n = api.post("/networks", &json!({"Name": "n", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.93.0.0/24"}]}]})).ok();
    let bridge = n["InterfaceName"].as_str().unwrap().to_owned();
    let _ = api.delete("/networks/n");
    assert!(eventually(Duration::from_secs(5), || !d.is_running()));
    assert!(hns_links(&lab).contains(&bridge), "the crash came after the kernel step: the test proves nothing");
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    assert_eq!(api.get("/networks/n").status, 404, "the committed delete was lost");
    assert!(eventually(Duration::from_secs(5), || !hns_links(&lab).contains(&bridge)), "the deleted network's bridge was left: {:?}", hns_links(&lab));
    let table = lab.in_host("nft", &["list", "set", "inet", "hns", "bridges"]).unwrap().stdout;
    assert!(!table.contains(&bridge) && table.contains(keep["InterfaceName"].as_str().unwrap()), "the nft table was not rewritten from the store:\n{table}");
    let (c, _) = api.container("keep", "c", json!({}));
    assert!(ping(&lab, &c, "10.92.0.1"));
}

fn with_failpoint(lab: &Lab, point: &str) -> hns_lab::Daemon {
    lab.start_hnsd_with(HnsdOptions { env: vec![("HNSD_FAILPOINT".into(), point.into())], ..Default::default() }).expect("hnsd starts")
}

fn dies_with_hnsd(d: &hns_lab::Daemon, r: &Reply, what: &str) {
    assert!(r.status == 0 || r.status >= 500 || r.raw.is_empty(), "{what}: the request should die with the daemon: {r:?}");
    assert!(eventually(Duration::from_secs(5), || !d.is_running()), "{what}: the failpoint did not kill hnsd");
}

/// The files in the directory of the compartment file `path` (hnsd's managed namespaces).
fn namespace_files(lab: &Lab, path: &str) -> Vec<String> {
    let dir = std::path::Path::new(path).parent().unwrap().display().to_string();
    lab.in_host("ls", &["-1", &dir]).unwrap().stdout.lines().map(str::to_owned).collect()
}

/// A compartment's create commits lazily, then makes its namespace without the engine's lock
/// while the commit becomes durable. SIGKILL right after the commit: the next hnsd knows no
/// such compartment and no namespace file is left. SIGKILL after the namespace is made, before
/// it is recorded ready: the next hnsd has the compartment, and an endpoint attached into it
/// reaches the LAN.
#[test]
fn sigkill_at_every_step_of_a_compartment_create_is_repaired_at_restart() {
    let lab = Lab::new().unwrap();
    let api = Api::new(&lab);
    let d = with_failpoint(&lab, "namespace-after-commit");
    dies_with_hnsd(&d, &api.post("/namespaces", &json!({"Name": "early"})), "after the commit");
    let d = with_failpoint(&lab, "namespace-after-kernel");
    assert_eq!(api.get("/namespaces/early").status, 404, "a compartment whose commit was not durable survived");
    dies_with_hnsd(&d, &api.post("/namespaces", &json!({"Name": "late"})), "after the kernel step");
    let _d = start(&lab);
    assert_eq!(api.get("/namespaces/early").status, 404, "a compartment whose commit was not durable survived");
    let late = api.get("/namespaces/late").ok();
    let path = late["NetNsPath"].as_str().unwrap().to_owned();
    assert!(lab.in_host("test", &["-e", &path]).unwrap().status.success(), "the compartment's namespace file is gone");
    assert!(eventually(Duration::from_secs(5), || namespace_files(&lab, &path).len() == 1), "a namespace file was left: {:?}", namespace_files(&lab, &path));
    api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "HostComputeNamespace": late["ID"]})).ok();
    assert!(ping(&lab, &late, "203.0.113.10"), "an endpoint in the repaired compartment does not reach the LAN");
}

/// A compartment's delete commits lazily, then removes its namespace without the engine's
/// lock. SIGKILL right after the commit: the delete was not durable, so the next hnsd still has
/// the compartment, working (an endpoint attached into it reaches the LAN), and it deletes
/// again, its file with it.
#[test]
fn sigkill_after_committing_a_compartment_delete_leaves_it_working() {
    let lab = Lab::new().unwrap();
    let api = Api::new(&lab);
    let d = with_failpoint(&lab, "namespace-delete-after-commit");
    let ns = api.post("/namespaces", &json!({"Name": "c"})).ok();
    let id = ns["ID"].as_str().unwrap().to_owned();
    dies_with_hnsd(&d, &api.delete(&format!("/namespaces/{id}")), "after the delete's commit");
    let _d = start(&lab);
    assert_eq!(api.get("/namespaces/c").ok()["ID"], ns["ID"], "the compartment whose delete was not durable is gone");
    let path = ns["NetNsPath"].as_str().unwrap().to_owned();
    assert!(lab.in_host("test", &["-e", &path]).unwrap().status.success(), "the compartment's namespace file is gone");
    api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "HostComputeNamespace": id})).ok();
    assert!(ping(&lab, &ns, "203.0.113.10"), "an endpoint in the compartment does not reach the LAN");
    assert_eq!(api.delete(&format!("/namespaces/{id}")).status, 204);
    assert_eq!(api.get("/namespaces/c").status, 404);
    let file = path.rsplit('/').next().unwrap().to_owned();
    assert!(!namespace_files(&lab, &path).contains(&file), "the deleted compartment's file was left");
}

#[test]
fn removing_every_object_leaves_nothing_in_the_kernel() {
    let lab = Lab::new().unwrap();
    let _d = start(&lab);
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "x", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.91.0.0/24"}]}]})).ok();
    let (a, ea) = api.container("nat", "a", json!({}));
    let (b, eb) = api.container("x", "b", json!({}));
    for (ns, ep) in [(&a, &ea), (&b, &eb)] {
        assert_eq!(api.delete(&format!("/endpoints/{}", ep["ID"].as_str().unwrap())).status, 204);
        assert_eq!(api.delete(&format!("/namespaces/{}", ns["ID"].as_str().unwrap())).status, 204);
    }
    for n in ["x", "nat"] {
        assert_eq!(api.delete(&format!("/networks/{n}")).status, 204);
    }
    assert_eq!(lab.leftovers_in_host().unwrap(), Vec::<String>::new());
    assert!(!lab.try_in(Side::Host, "nft", &["list", "table", "inet", "hns"]).unwrap().status.success(), "nft table left behind");
}

#[test]
fn periodic_reconcile_repairs_a_deleted_bridge_and_a_flushed_table() {
    let lab = Lab::new().unwrap();
    let _d = start(&lab);
    let api = Api::new(&lab);
    let (a, _) = api.container("nat", "a", json!({}));
    let (_b, eb) = api.container("nat", "b", json!({}));
    let bridge = api.get("/networks/nat").ok()["InterfaceName"].as_str().unwrap().to_owned();
    // The repair comes within milliseconds of the deletion (on the kernel's notice), too soon
    // for a ping to see the gap: a new interface index shows that the link was re-created.
    let index = |name: &str| lab.try_in(Side::Host, "ip", &["-o", "link", "show", name]).unwrap().stdout.split(':').next().unwrap_or_default().trim().to_owned();
    let before = index(&bridge);
    lab.in_host("ip", &["link", "del", &bridge]).unwrap();
    assert!(eventually(Duration::from_secs(10), || ping(&lab, &a, &ip_of(&eb))), "traffic did not come back after the bridge was deleted");
    assert_ne!(index(&bridge), before, "the bridge was not re-created");
    // Someone deletes an endpoint's veth: the reconciler re-creates it inside the compartment.
    let veth = format!("hnv{}", &eb["ID"].as_str().unwrap().replace('-', "")[..12]);
    let before = index(&veth);
    lab.in_host("ip", &["link", "del", &veth]).unwrap();
    assert!(eventually(Duration::from_secs(10), || ping(&lab, &a, &ip_of(&eb))), "traffic did not come back after the veth was deleted");
    assert_ne!(index(&veth), before, "the veth was not re-created");
    // Someone flushes the firewall: masquerade is gone until the reconciler puts it back.
    lab.in_host("nft", &["flush", "table", "inet", "hns"]).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        lab.try_in(Side::Host, "nft", &["list", "table", "inet", "hns"]).unwrap().stdout.contains("masquerade")
    }));
    let _server = lab.start_tcp_server_in_lan("203.0.113.10:8081").unwrap();
    let probe = Lab::bin("labprobe").unwrap();
    let out = in_ns(&lab, &a, probe.to_str().unwrap(), &["connect-tcp", "203.0.113.10:8081"]);
    assert!(out.stdout.contains("peer=198.51.100.2:"), "masquerade not restored: {}{}", out.stdout, out.stderr);
}

/// An attach uses the bridge's index learned by the previous one: after someone deleted the
/// bridge (no reconcile pass in between), the next attach must still find it gone, re-create
/// it and succeed, and the one after must use the new bridge.
#[test]
fn an_attach_after_the_bridge_was_deleted_re_creates_it() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--reconcile-interval", "10m"]).unwrap();
    let api = Api::new(&lab);
    let (_a, _) = api.container("nat", "a", json!({}));
    let net = api.get("/networks/nat").ok();
    let bridge = net["InterfaceName"].as_str().unwrap().to_owned();
    let gw = net["Ipams"][0]["Subnets"][0]["Routes"][0]["NextHop"].as_str().unwrap().to_owned();
    lab.in_host("ip", &["link", "del", &bridge]).unwrap();
    let (b, eb) = api.container("nat", "b", json!({}));
    let (c, ec) = api.container("nat", "c", json!({}));
    assert!(ping(&lab, &b, &gw), "b cannot reach the gateway {gw} on the re-created bridge");
    assert!(ping(&lab, &c, &ip_of(&eb)), "c cannot reach b");
    assert!(ping(&lab, &b, &ip_of(&ec)), "b cannot reach c");
}

#[test]
fn a_reboot_that_empties_run_garbage_collects_compartments_and_frees_addresses() {
    let lab = Lab::new().unwrap();
    let d = start(&lab);
    let api = Api::new(&lab);
    let (_a, ea) = api.container("nat", "a", json!({}));
    d.stop().unwrap();
    lab.reboot_run_dir().unwrap();
    let _d = start(&lab);
    assert_eq!(api.get("/namespaces").ok(), json!([]), "stale compartments must be collected");
    assert_eq!(api.get("/endpoints").ok(), json!([]), "their endpoints too");
    assert!(hns_links(&lab).iter().all(|l| l.starts_with("hns-")), "endpoint veths left behind: {:?}", hns_links(&lab));
    // The address is free again: a static request for it succeeds.
    let (_c, ec) = api.container("nat", "c", json!({"IpConfigurations": [{"IpAddress": ip_of(&ea)}]}));
    assert_eq!(ip_of(&ec), ip_of(&ea));
}

#[test]
fn an_adopted_namespace_whose_process_exits_is_collected() {
    let lab = Lab::new().unwrap();
    let _d = start(&lab);
    let api = Api::new(&lab);
    let (holder, path) = netns_process(&lab);
    let ns = api.post("/namespaces", &json!({"Name": "adopted", "NetNsPath": path})).ok();
    let ep = api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "HostComputeNamespace": ns["ID"]})).ok();
    assert!(lab.try_in(Side::Host, "ping", &["-c1", "-w3", "-i0.2", "-W1", &ip_of(&ep)]).unwrap().status.success());
    holder.kill(Signal::SIGKILL).unwrap();
    assert!(eventually(Duration::from_secs(10), || api.get("/namespaces").ok() == json!([])), "the dead compartment was not collected");
    assert_eq!(api.get("/endpoints").ok(), json!([]));
}

#[test]
fn the_default_network_is_created_once_and_stays_removed() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let api = Api::new(&lab);
    assert_eq!(api.get("/networks").ok(), json!([]));
    d.stop().unwrap();
    let d = start(&lab);
    let nat = api.get("/networks/nat").ok();
    let subnet: ipnet::IpNet = nat["Ipams"][0]["Subnets"][0]["IpAddressPrefix"].as_str().unwrap().parse().unwrap();
    assert_eq!(subnet.prefix_len(), 16);
    assert!(!subnet.contains(&"198.51.100.2".parse::<std::net::IpAddr>().unwrap()));
    assert_eq!(api.delete("/networks/nat").status, 204);
    d.stop().unwrap();
    let _d = start(&lab);
    assert_eq!(api.get("/networks").ok(), json!([]), "a removed default network must stay removed");
}

#[test]
fn cleanup_removes_every_hns_kernel_object() {
    let lab = Lab::new().unwrap();
    let d = start(&lab);
    let api = Api::new(&lab);
    api.container("nat", "a", json!({}));
    d.stop().unwrap();
    let hnsd = Lab::bin("hnsd").unwrap();
    let run = lab.run_dir();
    lab.in_host(hnsd.to_str().unwrap(), &["--cleanup", "--run-dir", run.to_str().unwrap(), "--state-dir", lab.state_dir().to_str().unwrap(), "--socket", lab.socket().to_str().unwrap()]).unwrap();
    assert_eq!(lab.leftovers_in_host().unwrap(), Vec::<String>::new());
}

#[test]
fn detached_veths_are_deleted_in_the_background_without_waiting_for_reconcile() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--reconcile-interval", "10m"]).unwrap();
    let api = Api::new(&lab);
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(api.container("nat", &format!("c{i}"), json!({})));
    }
    for (ns, ep) in &made {
        let r = api.post(&format!("/namespaces/{}", ns["ID"].as_str().unwrap()), &json!({"ResourceType": "Endpoint", "RequestType": "Remove", "Settings": {"EndpointId": ep["ID"]}}));
        assert_eq!(r.status, 200, "{}", r.raw);
        // The compartment loses its interface at once.
        assert!(!in_ns(&lab, ns, "ip", &["-o", "link"]).stdout.contains("eth0"));
    }
    assert!(
        eventually(Duration::from_secs(3), || hns_links(&lab).iter().all(|l| l.starts_with("hns-"))),
        "retired veths were not deleted: {:?}",
        hns_links(&lab)
    );
    // The same endpoint attaches again at once, under the same names.
    let (ns, ep) = &made[0];
    api.post(&format!("/namespaces/{}", ns["ID"].as_str().unwrap()), &json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": ep["ID"]}})).ok();
    assert!(ping(&lab, ns, "203.0.113.10"));
}
