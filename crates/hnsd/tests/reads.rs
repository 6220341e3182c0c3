//! GETs are served from the published read model (engine::views): a writer holding the
//! engine's lock does not delay them, they never show half of a write, and a GET after a
//! change shows it at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hns_lab::{HnsdOptions, Lab};
use serde_json::{Value, json};

/// How long the paused network create holds the engine's lock.
const HOLD: Duration = Duration::from_secs(3);
/// A read may take this long at most while the lock is held (generous: the lab is noisy).
const READ_BOUND: Duration = Duration::from_millis(500);

fn pm(external: u16, internal: u16) -> Value {
    json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": internal, "ExternalPort": external}})
}

#[test]
fn reads_do_not_wait_for_a_writer_holding_the_engine() {
    let lab = Lab::new().unwrap();
    // Every network create pauses under the engine's lock, after the network is in memory.
    let env = vec![("HNSD_FAILPOINT".to_owned(), format!("pause:network-commit:{}", HOLD.as_millis()))];
    let _d = lab.start_hnsd_with(HnsdOptions { args: vec!["--no-default-network".into()], env, ..Default::default() }).unwrap();
    let api = Api::new(&lab);
    let base = api.post("/networks", &json!({"Name": "base", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.81.0.0/16"}]}]})).ok();
    let base_id = base["ID"].as_str().unwrap().to_owned();
    for i in 0..3 {
        api.container("base", &format!("c{i}"), json!({"Policies": [pm(18080 + i, 80)]}));
    }
    let paths = ["/networks", &format!("/networks/{base_id}"), "/networks/base", "/endpoints", "/endpoints/c1", "/namespaces", "/namespaces/c2", "/portmappings", "/loadbalancers"];
    let before: Vec<Value> = paths.iter().map(|p| api.get(p).ok()).collect();

    // A writer takes the lock and holds it; a second writer queues behind it.
    let started = Instant::now();
    let socket = api.socket.clone();
    let writer = std::thread::spawn(move || {
        let r = Api { socket }.post("/networks", &json!({"Name": "slow", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.82.0.0/16"}]}]}));
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let socket = api.socket.clone();
    let queued = std::thread::spawn(move || {
        let t = Instant::now();
        let r = Api { socket }.post("/namespaces", &json!({"Name": "queued"}));
        (r, t.elapsed())
    });

    // Meanwhile every read answers at once, and shows the state before the write.
    let mut rounds = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < HOLD - Duration::from_millis(700) {
        for (p, want) in paths.iter().zip(&before) {
            let t = Instant::now();
            let r = api.get(p);
            let took = t.elapsed();
            slowest = slowest.max(took);
            assert_eq!(r.status, 200, "GET {p} during the write: {}", r.raw);
            assert!(took < READ_BOUND, "GET {p} took {took:?} while a writer held the engine");
            assert_eq!(&r.body, want, "GET {p} during the write shows something else than before it");
        }
        let r = api.get("/networks/slow");
        assert_eq!(r.status, 404, "the network being created is not shown before its create is done: {}", r.raw);
        rounds += 1;
    }
    assert!(!writer.is_finished(), "the writer was done before the reads: the test proves nothing");
    let (created, took) = writer.join().unwrap();
    let created = created.ok();
    assert!(took >= HOLD, "the writer held the engine for {took:?}, less than the pause");
    let (ns, waited) = queued.join().unwrap();
    ns.ok();
    assert!(waited >= Duration::from_millis(1500), "a writer behind the held lock waited only {waited:?}: was the lock held?");
    eprintln!("{rounds} rounds of {} reads while the lock was held; slowest {slowest:?}", paths.len() + 1);

    // Right after the reply the change shows, by ID and by name.
    assert_eq!(api.get("/networks/slow").ok(), created);
    assert_eq!(api.get(&format!("/networks/{}", created["ID"].as_str().unwrap())).ok(), created);
    assert_eq!(api.get("/networks").ok().as_array().unwrap().len(), 2);
    assert_eq!(api.get("/namespaces/queued").ok()["Name"], "queued");
}

#[test]
fn a_read_after_a_change_shows_it() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let api = Api::new(&lab);
    let ids = |path: &str| -> Vec<String> { api.get(path).ok().as_array().unwrap().iter().map(|o| o["ID"].as_str().unwrap().to_owned()).collect() };

    // Networks: create, modify (a policy), delete.
    let net = api.post("/networks", &json!({"Name": "ryw", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.83.0.0/16"}]}]})).ok();
    let net_id = net["ID"].as_str().unwrap().to_owned();
    assert_eq!(api.get("/networks/ryw").ok(), net);
    assert_eq!(ids("/networks"), [net_id.as_str()]);
    let acl = json!([{"Type": "NetworkACL", "Settings": {"Action": "Allow", "Direction": "In", "Protocols": "icmp", "Priority": 200}}]);
    let modified = api.post("/networks/ryw", &json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": {"Policies": acl}})).ok();
    assert_eq!(api.get(&format!("/networks/{net_id}")).ok(), modified);

    // Endpoints and compartments: create, attach, mappings added and removed, detach, delete.
    let ep = api.post("/endpoints", &json!({"HostComputeNetwork": "ryw", "Name": "web"})).ok();
    let ep_id = ep["ID"].as_str().unwrap().to_owned();
    assert_eq!(api.get("/endpoints/web").ok(), ep);
    assert_eq!(ids("/endpoints"), [ep_id.as_str()]);
    let ns = api.post("/namespaces", &json!({"Name": "box"})).ok();
    let ns_id = ns["ID"].as_str().unwrap().to_owned();
    assert_eq!(api.get("/namespaces/box").ok(), ns);
    let attach = |op: &str| api.post(&format!("/namespaces/{ns_id}"), &json!({"ResourceType": "Endpoint", "RequestType": op, "Settings": {"EndpointId": ep_id}})).ok();
    let attached = attach("Add");
    assert_eq!(api.get("/namespaces/box").ok(), attached);
    assert_eq!(attached["Resources"][0]["Data"]["ID"], json!(ep_id));
    assert_eq!(api.get(&format!("/endpoints/{ep_id}")).ok()["HostComputeNamespace"], json!(ns_id));
    let policy = |op: &str| api.post(&format!("/endpoints/{ep_id}"), &json!({"ResourceType": "Policy", "RequestType": op, "Settings": {"Policies": [pm(18181, 80)]}}));
    assert_eq!(policy("Add").status, 204);
    let maps = api.get("/portmappings").ok();
    assert_eq!(maps.as_array().unwrap().len(), 1, "{maps}");
    assert_eq!((maps[0]["NetworkName"].as_str(), maps[0]["Namespace"].as_str(), maps[0]["ExternalPort"].as_u64()), (Some("ryw"), Some("box"), Some(18181)));
    let shown = api.get("/endpoints/web").ok();
    assert!(shown["Policies"].as_array().unwrap().iter().any(|p| p["Type"] == "PortMapping"), "{shown}");
    assert_eq!(policy("Remove").status, 204);
    assert_eq!(api.get("/portmappings").ok(), json!([]));

    // Load balancers (the endpoint a backend): create, modify, delete.
    let lb_body = |port: u16| json!({"HostComputeEndpoints": [ep_id], "FrontendVIPs": ["10.96.0.10"], "PortMappings": [{"Protocol": 6, "InternalPort": 8080, "ExternalPort": port}]});
    let lb = api.post("/loadbalancers", &lb_body(80)).ok();
    let lb_id = lb["ID"].as_str().unwrap().to_owned();
    assert_eq!(api.get(&format!("/loadbalancers/{lb_id}")).ok(), lb);
    let lb2 = api.post(&format!("/loadbalancers/{lb_id}"), &lb_body(81)).ok();
    assert_eq!(api.get(&format!("/loadbalancers/{lb_id}")).ok(), lb2);
    assert_eq!(api.get("/loadbalancers").ok(), json!([lb2]));
    api.delete(&format!("/loadbalancers/{lb_id}")).ok();
    assert_eq!(api.get(&format!("/loadbalancers/{lb_id}")).status, 404);
    let detached = attach("Remove");
    assert_eq!(api.get(&format!("/namespaces/{ns_id}")).ok(), detached);
    assert!(detached["Resources"].as_array().is_none_or(|r| r.is_empty()), "{detached}");
    assert!(api.get("/endpoints/web").ok()["HostComputeNamespace"].as_str().is_none_or(str::is_empty), "the detach shows");

    // Deletes: gone at once, with the usual errors.
    api.delete("/endpoints/web").ok();
    let r = api.get("/endpoints/web");
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("ENDPOINT_NOT_FOUND")), "{}", r.raw);
    api.delete("/namespaces/box").ok();
    assert_eq!(api.get("/namespaces/box").status, 404);
    api.delete("/networks/ryw").ok();
    let r = api.get("/networks/ryw");
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("NETWORK_NOT_FOUND")), "{}", r.raw);
    assert_eq!(api.snapshot(), json!({"networks": [], "endpoints": [], "namespaces": []}));
}

#[test]
fn endpoint_names_resolve_as_before() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let api = Api::new(&lab);
    for (name, subnet) in [("n1", "10.84.0.0/16"), ("n2", "10.85.0.0/16")] {
        api.post("/networks", &json!({"Name": name, "Ipams": [{"Subnets": [{"IpAddressPrefix": subnet}]}]})).ok();
    }
    // One name on two networks: by name it is ambiguous, by ID (any case, braces) it is found.
    let a = api.post("/endpoints", &json!({"HostComputeNetwork": "n1", "Name": "twin"})).ok();
    let b = api.post("/endpoints", &json!({"HostComputeNetwork": "n2", "Name": "twin"})).ok();
    let r = api.get("/endpoints/twin");
    assert_eq!(r.status, 404, "{}", r.raw);
    let (first, second) = if a["ID"].as_str() < b["ID"].as_str() { (&a, &b) } else { (&b, &a) };
    let listed = format!("({}, {})", first["ID"].as_str().unwrap(), second["ID"].as_str().unwrap());
    assert!(r.body["message"].as_str().unwrap().contains(&listed), "{}", r.raw);
    let upper = format!("{{{}}}", a["ID"].as_str().unwrap().to_uppercase());
    assert_eq!(api.get(&format!("/endpoints/{upper}")).ok(), a);
    // Once one goes, the name is unique again.
    api.delete(&format!("/endpoints/{}", b["ID"].as_str().unwrap())).ok();
    assert_eq!(api.get("/endpoints/twin").ok(), a);
    // Unknown names and IDs: the engine's errors.
    let r = api.get("/endpoints/nobody");
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("ENDPOINT_NOT_FOUND")), "{}", r.raw);
    let r = api.get("/networks/00000000-0000-0000-0000-000000000001");
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("NETWORK_NOT_FOUND")), "{}", r.raw);
    let r = api.get("/loadbalancers/nope");
    assert_eq!(r.status, 404, "{}", r.raw);
}
