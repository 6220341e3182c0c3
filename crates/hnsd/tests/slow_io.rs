//! No request waits on another's slow I/O: while attaches on a DHCP network wait for a LAN
//! server that never answers (ten seconds each), attaches on a nat network go on at their
//! usual pace, and reads answer at once. Attach, detach, ACL and network kernel steps run
//! without the engine lock, ordered per endpoint, compartment and network.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hns_lab::Lab;
use serde_json::json;

#[test]
fn a_silent_dhcp_server_delays_only_the_attaches_that_wait_for_it() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let api = Api::new(&lab);
    // A LAN without a DHCP server, and a transparent network on it that asks one.
    let u = lab.add_uplink(8, false).unwrap();
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", "transparent", "-o", &iface, "silent"]).unwrap();
    api.post("/networks", &json!({"Name": "base", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.80.0.0/16"}]}]})).ok();

    // Both ways to attach on it: created attached at once, and an existing endpoint added to
    // a namespace. Each waits for the server until the DHCP timeout, then fails naming DHCP.
    let ns1 = api.post("/namespaces", &json!({"Name": "d1"})).ok();
    let ns2 = api.post("/namespaces", &json!({"Name": "d2"})).ok();
    let waiting = api.post("/endpoints", &json!({"HostComputeNetwork": "silent", "Name": "w2"})).ok();
    let started = Instant::now();
    let socket = api.socket.clone();
    let created = std::thread::spawn(move || {
        let r = Api { socket }.post("/endpoints", &json!({"HostComputeNetwork": "silent", "HostComputeNamespace": ns1["ID"], "Name": "w1"}));
        (r, started.elapsed())
    });
    let socket = api.socket.clone();
    let add = json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": waiting["ID"]}});
    let path = format!("/namespaces/{}", ns2["ID"].as_str().unwrap());
    let attached = std::thread::spawn(move || {
        let r = Api { socket }.post(&path, &add);
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));

    // Meanwhile: containers on the nat network come and go, and lists answer.
    let mut took = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let (ns, ep) = api.container("base", &format!("c{i}"), json!({}));
        assert_eq!(api.get("/endpoints").status, 200);
        took.push(t.elapsed());
        assert!(ping(&lab, &ns, "10.80.0.1"), "c{i} cannot reach its gateway");
        api.delete(&format!("/endpoints/{}", ep["ID"].as_str().unwrap())).ok();
        api.delete(&format!("/namespaces/{}", ns["ID"].as_str().unwrap())).ok();
    }
    let nat_done = started.elapsed();
    took.sort();
    let (created, created_after) = created.join().unwrap();
    let (attached, attached_after) = attached.join().unwrap();

    // The DHCP requests really waited (so they overlapped the nat work) and failed by name.
    for (what, r, after) in [("create attached", &created, created_after), ("namespace add", &attached, attached_after)] {
        assert_eq!((r.status, r.body["code"].as_str()), (504, Some("DHCP_FAILED")), "{what}: {}", r.raw);
        assert!(after >= Duration::from_secs(5), "{what} gave up after {after:?}: it did not wait for the server");
    }
    assert!(nat_done < created_after.min(attached_after), "the nat containers finished at {nat_done:?}, after the DHCP requests ended: they waited for them");
    // Generous to a noisy machine; a container waiting on the lock would take seconds.
    let worst = *took.last().unwrap();
    assert!(worst < Duration::from_millis(1500), "a nat container took {worst:?} while DHCP was pending (all: {took:?})");
    // Nothing of the failed attaches remains: no endpoint created, the other not attached.
    let eps = api.get("/endpoints").ok();
    assert_eq!(eps.as_array().unwrap().len(), 1, "{eps}");
    assert_eq!(eps[0]["HostComputeNamespace"].as_str().unwrap_or(""), "", "{eps}");
}

/// An attach's kernel step runs without the engine lock, but requests for the same compartment
/// wait for it: an attach racing the deletion of its namespace, and a second endpoint created
/// into it at the same moment, end in a consistent state every time, with nothing leaked.
#[test]
fn requests_for_one_compartment_wait_for_its_attach() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "base", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.81.0.0/16"}]}]})).ok();
    let kernel_before = kernel_snapshot(&lab);
    for i in 0..25 {
        let ns = api.post("/namespaces", &json!({"Name": format!("r{i}")})).ok();
        let ep = api.post("/endpoints", &json!({"HostComputeNetwork": "base", "Name": format!("e{i}")})).ok();
        let ns_path = format!("/namespaces/{}", ns["ID"].as_str().unwrap());
        let add = json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": ep["ID"]}});
        let second = json!({"HostComputeNetwork": "base", "HostComputeNamespace": ns["ID"], "Name": format!("f{i}")});
        let (s1, s2, s3) = (api.socket.clone(), api.socket.clone(), api.socket.clone());
        let (p1, p2) = (ns_path.clone(), ns_path.clone());
        let attach = std::thread::spawn(move || Api { socket: s1 }.post(&p1, &add));
        let create = std::thread::spawn(move || Api { socket: s2 }.post("/endpoints", &second));
        let delete = std::thread::spawn(move || Api { socket: s3 }.delete(&p2));
        let (attach, create, delete) = (attach.join().unwrap(), create.join().unwrap(), delete.join().unwrap());
        // Each request either ran before the delete (and was undone by it) or found the
        // namespace gone; none failed otherwise.
        assert_eq!(delete.status, 204, "r{i}: delete: {}", delete.raw);
        for (what, r) in [("attach", &attach), ("create attached", &create)] {
            assert!(r.status == 200 || r.status == 404, "r{i}: {what}: {} {}", r.status, r.raw);
        }
        assert_eq!(api.get(&ns_path).status, 404, "r{i}: the namespace survived its delete");
        for e in api.get("/endpoints").ok().as_array().unwrap() {
            assert_eq!(e["HostComputeNamespace"].as_str().unwrap_or(""), "", "r{i}: an endpoint is attached to a deleted namespace: {e}");
            assert_eq!(api.delete(&format!("/endpoints/{}", e["ID"].as_str().unwrap())).status, 204);
        }
    }
    let mut now = String::new();
    let clean = eventually(Duration::from_secs(5), || {
        now = kernel_snapshot(&lab);
        now == kernel_before
    });
    assert!(clean, "something was left in the kernel:\n{now}\nwant:\n{kernel_before}");
}

/// A detach's veth step runs without the engine lock too, and requests for the same endpoint or
/// compartment wait for it: a detach racing the endpoint's attach to another namespace and the
/// deletion of its own, then a delete racing another attach, end consistent every time, with
/// nothing leaked (an attach during the step would find the old veth still holding the name).
#[test]
fn requests_for_one_endpoint_wait_for_its_detach() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "base", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.82.0.0/16"}]}]})).ok();
    let kernel_before = kernel_snapshot(&lab);
    let change = |request: &str, ep: &serde_json::Value| json!({"ResourceType": "Endpoint", "RequestType": request, "Settings": {"EndpointId": ep["ID"]}});
    for i in 0..25 {
        let ns = api.post("/namespaces", &json!({"Name": format!("r{i}")})).ok();
        let other = api.post("/namespaces", &json!({"Name": format!("o{i}")})).ok();
        let ep = api.post("/endpoints", &json!({"HostComputeNetwork": "base", "HostComputeNamespace": ns["ID"], "Name": format!("e{i}")})).ok();
        let (ns_path, other_path) = (format!("/namespaces/{}", ns["ID"].as_str().unwrap()), format!("/namespaces/{}", other["ID"].as_str().unwrap()));
        let (s1, s2, s3) = (api.socket.clone(), api.socket.clone(), api.socket.clone());
        let (p1, p2, p3) = (ns_path.clone(), other_path.clone(), ns_path.clone());
        let (remove, add) = (change("Remove", &ep), change("Add", &ep));
        let remove = std::thread::spawn(move || Api { socket: s1 }.post(&p1, &remove));
        let add = std::thread::spawn(move || Api { socket: s2 }.post(&p2, &add));
        let delete = std::thread::spawn(move || Api { socket: s3 }.delete(&p3));
        let (remove, add, delete) = (remove.join().unwrap(), add.join().unwrap(), delete.join().unwrap());
        // Each ran before or after the others: only "not attached there (any more)", "attached
        // already" or "namespace gone" may stop one.
        assert_eq!(delete.status, 204, "r{i}: delete: {}", delete.raw);
        for (what, r) in [("remove", &remove), ("add", &add)] {
            assert!([200, 404, 409].contains(&r.status), "r{i}: {what}: {} {}", r.status, r.raw);
        }
        let now = api.get(&format!("/endpoints/{}", ep["ID"].as_str().unwrap())).ok();
        let attached_to = now["HostComputeNamespace"].as_str().unwrap_or("").to_owned();
        assert!(attached_to.is_empty() || attached_to == other["ID"].as_str().unwrap(), "r{i}: attached to {attached_to} after its namespace was deleted");
        // A delete racing another attach of the same endpoint.
        let ep_path = format!("/endpoints/{}", ep["ID"].as_str().unwrap());
        let (s1, s2) = (api.socket.clone(), api.socket.clone());
        let add = if attached_to.is_empty() { change("Add", &ep) } else { change("Remove", &ep) };
        let readd = std::thread::spawn(move || Api { socket: s1 }.post(&other_path, &add));
        let gone = std::thread::spawn(move || Api { socket: s2 }.delete(&ep_path));
        let (readd, gone) = (readd.join().unwrap(), gone.join().unwrap());
        assert_eq!(gone.status, 204, "r{i}: delete endpoint: {}", gone.raw);
        assert!([200, 404, 409].contains(&readd.status), "r{i}: attach or detach racing the delete: {} {}", readd.status, readd.raw);
        assert_eq!(api.delete(&format!("/namespaces/{}", other["ID"].as_str().unwrap())).status, 204);
        assert_eq!(api.get("/endpoints").ok(), json!([]), "r{i}");
    }
    let mut now = String::new();
    let clean = eventually(Duration::from_secs(5), || {
        now = kernel_snapshot(&lab);
        now == kernel_before
    });
    assert!(clean, "something was left in the kernel:\n{now}\nwant:\n{kernel_before}");
}

/// An ACL change's kernel step runs without the engine lock (here held 2 s by the
/// `pause:acl-kernel` failpoint): requests for other endpoints go on meanwhile, while a second
/// change of the same endpoint and its delete wait for it, then run one after the other.
#[test]
fn an_acl_change_delays_only_requests_for_its_endpoint() {
    let lab = Lab::new().unwrap();
    let opts = hns_lab::HnsdOptions { env: vec![("HNSD_FAILPOINT".into(), "pause:acl-kernel:2000".into())], ..Default::default() };
    let _d = lab.start_hnsd_with(opts).unwrap();
    let api = Api::new(&lab);
    let acl = |port: u16, prio: u16| json!({"Type": "ACL", "Settings": {"Action": "Allow", "Direction": "In", "Protocols": "6", "LocalPorts": port.to_string(), "Priority": prio}});
    let (_a, ea) = api.container("nat", "a", json!({"Policies": [acl(7000, 100)]}));
    let path = format!("/endpoints/{}", ea["ID"].as_str().unwrap());
    let change = |port: u16, prio: u16| json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": {"Policies": [acl(port, prio)]}});
    let started = Instant::now();
    let (s1, s2, s3, p1, p2, p3) = (api.socket.clone(), api.socket.clone(), api.socket.clone(), path.clone(), path.clone(), path.clone());
    let (c1, c2) = (change(7001, 200), change(7002, 300));
    let first = std::thread::spawn(move || (Api { socket: s1 }.post(&p1, &c1), started.elapsed()));
    std::thread::sleep(Duration::from_millis(300));
    let second = std::thread::spawn(move || (Api { socket: s2 }.post(&p2, &c2), started.elapsed()));
    std::thread::sleep(Duration::from_millis(100));
    let delete = std::thread::spawn(move || (Api { socket: s3 }.delete(&p3), started.elapsed()));
    // Meanwhile: another container comes and goes, and the changed endpoint reads, at once.
    let t = Instant::now();
    let (_b, eb) = api.container("nat", "b", json!({}));
    assert_eq!(api.get(&path).status, 200);
    assert_eq!(api.delete(&format!("/endpoints/{}", eb["ID"].as_str().unwrap())).status, 204);
    let others = t.elapsed();
    assert!(others < Duration::from_millis(1000), "requests for other endpoints waited for the ACL step: {others:?}");
    let ((r1, t1), (r2, t2), (r3, t3)) = (first.join().unwrap(), second.join().unwrap(), delete.join().unwrap());
    assert_eq!((r1.status, r3.status), (204, 204), "{} / {}", r1.raw, r3.raw);
    assert!(t1 >= Duration::from_millis(1900), "the first change did not run its (paused) kernel step: {t1:?}");
    assert!(t2 >= t1 && t3 >= t1, "a request for the endpoint did not wait for its ACL step: second change {t2:?}, delete {t3:?}, first {t1:?}");
    // The two waiters went one after the other, in either order (no queue is promised): the
    // second change with its own (paused) step, then the delete; or the delete took the
    // endpoint away, then the second change found none (the delete's reply may come later,
    // once its veth's step is done).
    match r2.status {
        204 => assert!(t3 >= t2 && t3 >= Duration::from_millis(3900), "the delete did not wait for the second change's step: {t3:?} < {t2:?}"),
        404 => assert!(r2.raw.contains("no endpoint"), "the second change: {}", r2.raw),
        s => panic!("the second change: {s} {}", r2.raw),
    }
    let tables = lab.in_host("nft", &["list", "tables"]).unwrap().stdout;
    assert!(!tables.contains("hns_acl"), "the deleted endpoint's ACL tables were left:\n{tables}");
}

/// A network create's kernel step (links, nft table, routes, responder: held here by the
/// `pause:network-create` failpoint) runs without the engine lock: a container comes and goes
/// on another network meanwhile, at once, while an endpoint on the network being created waits
/// for its create and then works.
#[test]
fn a_network_create_delays_only_requests_for_that_network() {
    const PAUSE: Duration = Duration::from_millis(2500);
    let lab = Lab::new().unwrap();
    // The default network's create at start pauses too.
    let opts = hns_lab::HnsdOptions { env: vec![("HNSD_FAILPOINT".into(), format!("pause:network-create:{}", PAUSE.as_millis()))], ..Default::default() };
    let _d = lab.start_hnsd_with(opts).unwrap();
    let api = Api::new(&lab);
    let started = Instant::now();
    let s1 = api.socket.clone();
    let net = json!({"Name": "slow", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.83.0.0/16"}]}]});
    let create = std::thread::spawn(move || (Api { socket: s1 }.post("/networks", &net), started.elapsed()));
    std::thread::sleep(Duration::from_millis(300));
    let ns = api.post("/namespaces", &json!({"Name": "w"})).ok();
    let s2 = api.socket.clone();
    let ep = json!({"HostComputeNetwork": "slow", "HostComputeNamespace": ns["ID"], "Name": "w"});
    let waiter = std::thread::spawn(move || (Api { socket: s2 }.post("/endpoints", &ep), started.elapsed()));
    std::thread::sleep(Duration::from_millis(100));
    // Meanwhile: a container comes and goes on another network, at once.
    let t = Instant::now();
    let (_b, eb) = api.container("nat", "b", json!({}));
    assert_eq!(api.delete(&format!("/endpoints/{}", eb["ID"].as_str().unwrap())).status, 204);
    let others = t.elapsed();
    assert!(others < Duration::from_millis(1000), "a container on another network waited for the network create: {others:?}");
    assert!(!create.is_finished(), "the network create was done before the other requests: the test proves nothing");
    let (created, t1) = create.join().unwrap();
    let created = created.ok();
    assert!(t1 >= PAUSE, "the network create did not run its (paused) kernel step: {t1:?}");
    assert_eq!(created["State"], 2, "{created}");
    let (ep, t2) = waiter.join().unwrap();
    let ep = ep.ok();
    assert!(t2 >= PAUSE - Duration::from_millis(100), "the endpoint on the network being created did not wait for its create: {t2:?}");
    // The network works: its endpoint reaches the gateway and the outside.
    assert!(ping(&lab, &ns, "10.83.0.1"), "the endpoint cannot reach its gateway");
    assert!(ping(&lab, &ns, "203.0.113.10"), "the endpoint cannot reach the outside (nat)");
    assert_eq!(api.get("/endpoints/w").ok()["ID"], ep["ID"]);
}

/// A compartment's namespace is made without the engine lock (held here by the
/// `pause:namespace-kernel` failpoint): other requests go on meanwhile, at once, while an
/// endpoint created into that compartment waits for it, then works.
#[test]
fn a_compartment_create_delays_only_requests_for_that_compartment() {
    const PAUSE: Duration = Duration::from_millis(2000);
    let lab = Lab::new().unwrap();
    let opts = hns_lab::HnsdOptions { env: vec![("HNSD_FAILPOINT".into(), format!("pause:namespace-kernel:{}", PAUSE.as_millis()))], ..Default::default() };
    let _d = lab.start_hnsd_with(opts).unwrap();
    let api = Api::new(&lab);
    let id = "5a0e0000-0000-4000-8000-00000000c0de";
    let started = Instant::now();
    let s1 = api.socket.clone();
    let create = std::thread::spawn(move || (Api { socket: s1 }.post("/namespaces", &json!({"ID": id, "Name": "slow"})), started.elapsed()));
    std::thread::sleep(Duration::from_millis(300));
    let s2 = api.socket.clone();
    let waiter = std::thread::spawn(move || (Api { socket: s2 }.post("/endpoints", &json!({"HostComputeNetwork": "nat", "HostComputeNamespace": id, "Name": "w"})), started.elapsed()));
    std::thread::sleep(Duration::from_millis(100));
    // Meanwhile: an endpoint comes and goes, a network is created, at once.
    let t = Instant::now();
    let other = api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "Name": "other"})).ok();
    assert_eq!(api.delete(&format!("/endpoints/{}", other["ID"].as_str().unwrap())).status, 204);
    api.post("/networks", &json!({"Name": "more", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.84.0.0/16"}]}]})).ok();
    let others = t.elapsed();
    assert!(others < Duration::from_millis(1000), "requests for other objects waited for the compartment's create: {others:?}");
    assert!(!create.is_finished(), "the compartment's create was done before the other requests: the test proves nothing");
    let (ns, t1) = create.join().unwrap();
    let ns = ns.ok();
    assert!(t1 >= PAUSE, "the compartment's create did not run its (paused) kernel step: {t1:?}");
    assert_eq!(ns["ID"], id, "{ns}");
    let (ep, t2) = waiter.join().unwrap();
    let ep = ep.ok();
    assert!(t2 >= PAUSE - Duration::from_millis(100), "the endpoint created into the compartment being made did not wait for it: {t2:?}");
    assert_eq!(ep["HostComputeNamespace"], id, "{ep}");
    // The compartment works: its endpoint reaches the outside through the nat network.
    assert!(ping(&lab, &ns, "203.0.113.10"), "the endpoint in the compartment cannot reach the outside");
}

/// A network delete's kernel step runs without the engine lock too: a container comes and goes
/// on another network meanwhile, at once, and a create of a network with the deleted one's
/// name and subnet waits for the delete, then works.
#[test]
fn a_network_delete_delays_only_requests_for_that_network() {
    const PAUSE: Duration = Duration::from_millis(2500);
    let lab = Lab::new().unwrap();
    let opts = hns_lab::HnsdOptions { env: vec![("HNSD_FAILPOINT".into(), format!("pause:network-delete:{}", PAUSE.as_millis()))], ..Default::default() };
    let _d = lab.start_hnsd_with(opts).unwrap();
    let api = Api::new(&lab);
    let net = json!({"Name": "gone", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.84.0.0/16"}]}]});
    let old = api.post("/networks", &net).ok();
    let started = Instant::now();
    let s1 = api.socket.clone();
    let delete = std::thread::spawn(move || (Api { socket: s1 }.delete("/networks/gone"), started.elapsed()));
    std::thread::sleep(Duration::from_millis(300));
    let s2 = api.socket.clone();
    let again = std::thread::spawn(move || (Api { socket: s2 }.post("/networks", &net), started.elapsed()));
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (_b, eb) = api.container("nat", "b", json!({}));
    assert_eq!(api.delete(&format!("/endpoints/{}", eb["ID"].as_str().unwrap())).status, 204);
    let others = t.elapsed();
    assert!(others < Duration::from_millis(1000), "a container on another network waited for the network delete: {others:?}");
    assert!(!delete.is_finished(), "the network delete was done before the other requests: the test proves nothing");
    let (deleted, t1) = delete.join().unwrap();
    assert_eq!(deleted.status, 204, "{}", deleted.raw);
    assert!(t1 >= PAUSE, "the network delete did not run its (paused) kernel step: {t1:?}");
    let (made, t2) = again.join().unwrap();
    let made = made.ok();
    assert!(t2 >= PAUSE - Duration::from_millis(100), "the create of a network with the deleted one's name and subnet did not wait for the delete: {t2:?}");
    assert_ne!(made["ID"], old["ID"]);
    let (c, _) = api.container("gone", "c", json!({}));
    assert!(ping(&lab, &c, "10.84.0.1"), "the network made again does not work");
    let links = lab.in_host("ip", &["-o", "link", "show"]).unwrap().stdout;
    assert!(!links.contains(old["InterfaceName"].as_str().unwrap()), "the deleted network's bridge is left:\n{links}");
}

/// Full nft applies of networks (created and deleted meanwhile, each apply held between the
/// moment its table was read and its write by the `pause:network-nft` failpoint) never lose
/// or bring back a port mapping's element written or removed meanwhile.
#[test]
fn port_mappings_survive_network_applies_that_run_without_the_lock() {
    let lab = Lab::new().unwrap();
    let opts = hns_lab::HnsdOptions { env: vec![("HNSD_FAILPOINT".into(), "pause:network-nft:300".into())], ..Default::default() };
    let _d = lab.start_hnsd_with(opts).unwrap();
    let api = Api::new(&lab);
    let s1 = api.socket.clone();
    let churn = std::thread::spawn(move || {
        let api = Api { socket: s1 };
        for i in 0..5 {
            let net = json!({"Name": format!("n{i}"), "Ipams": [{"Subnets": [{"IpAddressPrefix": format!("10.7{i}.0.0/24")}]}]});
            api.post("/networks", &net).ok();
            assert_eq!(api.delete(&format!("/networks/n{i}")).status, 204);
        }
    });
    let pm = |port: u16| json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": port}});
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    let mut i = 0u16;
    while !churn.is_finished() || i < 6 {
        let port = 21000 + i;
        let (_c, ep) = api.container("nat", &format!("c{i}"), json!({"Policies": [pm(port)]}));
        if i % 3 == 2 {
            assert_eq!(api.delete(&format!("/endpoints/{}", ep["ID"].as_str().unwrap())).status, 204);
            removed.push(port);
        } else {
            kept.push(port);
        }
        i += 1;
    }
    churn.join().unwrap();
    assert!(kept.len() >= 4, "too few mappings were made during the churn: {kept:?}");
    let map = lab.in_host("nft", &["list", "map", "inet", "hns", "pm4"]).unwrap().stdout;
    for port in &kept {
        assert!(map.contains(&format!("tcp . {port} :")), "the element of mapping {port} was lost:\n{map}");
    }
    for port in &removed {
        assert!(!map.contains(&format!("tcp . {port} :")), "the element of removed mapping {port} came back:\n{map}");
    }
    let allow = lab.in_host("nft", &["list", "set", "inet", "hns", "pm_allow4"]).unwrap().stdout;
    assert_eq!(allow.matches(". tcp . 80").count(), kept.len(), "allow elements:\n{allow}");
}
