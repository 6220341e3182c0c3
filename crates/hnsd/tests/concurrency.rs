//! Many clients at once (issue E1): 100 threads, each with its own connections to the API
//! socket, create, attach, detach and delete containers with port mappings on five nat
//! networks for a bounded time, while the periodic reconciler runs every 200 ms. No request
//! may fail, no address, MAC or host port may be handed out twice (checked continuously through
//! the API and at the end in the kernel), and once everything is deleted nothing is left in the
//! store or the kernel.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hns_lab::Lab;
use serde_json::{Value, json};

const CLIENTS: usize = 100;
const NETWORKS: usize = 5;
const RUN_FOR: Duration = Duration::from_secs(12);
/// Each client maps this host port plus its number statically; dynamic ports come from
/// `--port-range`, which does not overlap.
const STATIC_BASE: u16 = 20000;

fn net_name(i: usize) -> String {
    format!("cc{i}")
}

fn pm(external: u16, internal: u16) -> Value {
    json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": internal, "ExternalPort": external}})
}

/// Records a failed request: any status but the expected one.
struct Failures(Mutex<Vec<String>>);

impl Failures {
    fn check(&self, what: &str, r: &Reply, expected: &[u16]) -> bool {
        if expected.contains(&r.status) {
            return true;
        }
        let mut f = self.0.lock().unwrap();
        if f.len() < 50 {
            f.push(format!("{what}: status {} {}", r.status, r.raw));
        }
        false
    }
}

/// One container's life: compartment, endpoint with a dynamic and a static mapping, attach,
/// detach, delete. `keep` stops after the attach and returns the IDs.
fn one_container(api: &Api, fails: &Failures, client: usize, round: usize, keep: bool) -> Option<(String, String)> {
    let net = net_name((client + round) % NETWORKS);
    let ns = api.post("/namespaces", &json!({"Name": format!("c{client}-{round}")}));
    if !fails.check("create namespace", &ns, &[200, 201]) {
        return None;
    }
    let ns_id = ns.body["ID"].as_str()?.to_owned();
    let policies = json!([pm(0, 80), pm(STATIC_BASE + client as u16, 81)]);
    // Half the rounds attach in the create request, half with a namespace modify.
    let direct = round.is_multiple_of(2);
    let mut body = json!({"HostComputeNetwork": net, "Name": format!("e{client}-{round}"), "Policies": policies});
    if direct {
        body["HostComputeNamespace"] = json!(ns_id);
    }
    let ep = api.post("/endpoints", &body);
    if !fails.check("create endpoint", &ep, &[200, 201]) {
        return None;
    }
    let ep_id = ep.body["ID"].as_str()?.to_owned();
    let modify = |op: &str| api.post(&format!("/namespaces/{ns_id}"), &json!({"ResourceType": "Endpoint", "RequestType": op, "Settings": {"EndpointId": ep_id}}));
    if !direct && !fails.check("attach", &modify("Add"), &[200]) {
        return None;
    }
    if keep {
        return Some((ns_id, ep_id));
    }
    fails.check("detach", &modify("Remove"), &[200]);
    fails.check("delete endpoint", &api.delete(&format!("/endpoints/{ep_id}")), &[204]);
    fails.check("delete namespace", &api.delete(&format!("/namespaces/{ns_id}")), &[204]);
    None
}

/// Duplicates among the endpoints and mappings the API shows at one moment.
fn api_duplicates(api: &Api) -> Vec<String> {
    let mut out = Vec::new();
    let eps = api.get("/endpoints");
    if eps.status != 200 {
        return vec![format!("GET /endpoints: {} {}", eps.status, eps.raw)];
    }
    let mut ips: HashMap<String, String> = HashMap::new();
    let mut macs: HashMap<String, String> = HashMap::new();
    let mut ports: HashMap<(u64, u64), String> = HashMap::new();
    for e in eps.body.as_array().into_iter().flatten() {
        let id = e["ID"].as_str().unwrap_or("?").to_owned();
        for c in e["IpConfigurations"].as_array().into_iter().flatten() {
            if let Some(ip) = c["IpAddress"].as_str()
                && let Some(other) = ips.insert(ip.to_owned(), id.clone())
            {
                out.push(format!("address {ip} on {other} and {id}"));
            }
        }
        if let Some(mac) = e["MacAddress"].as_str()
            && let Some(other) = macs.insert(mac.to_owned(), id.clone())
        {
            out.push(format!("MAC {mac} on {other} and {id}"));
        }
        for p in e["Policies"].as_array().into_iter().flatten().filter(|p| p["Type"] == "PortMapping") {
            let s = &p["Settings"];
            let key = (s["Protocol"].as_u64().unwrap_or(6), s["ExternalPort"].as_u64().unwrap_or(0));
            if key.1 == 0 {
                out.push(format!("endpoint {id} shows a mapping without a host port: {p}"));
            } else if let Some(other) = ports.insert(key, id.clone()) {
                out.push(format!("host port {key:?} on {other} and {id}"));
            }
        }
    }
    out
}

/// Address and MAC of eth0 inside each kept compartment, from the kernel.
fn kernel_identities(lab: &Lab, api: &Api, kept: &[(String, String)]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (ns_id, _) in kept {
        let ns = api.get(&format!("/namespaces/{ns_id}")).ok();
        let o = in_ns(lab, &ns, "ip", &["-j", "addr", "show", "eth0"]);
        let v: Value = serde_json::from_str(&o.stdout).unwrap_or_else(|_| panic!("ip addr in {ns_id}: {}{}", o.stdout, o.stderr));
        let link = &v[0];
        let mac = link["address"].as_str().unwrap_or("").to_owned();
        let ip = link["addr_info"].as_array().into_iter().flatten().find(|a| a["family"] == "inet").and_then(|a| a["local"].as_str()).unwrap_or("").to_owned();
        out.push((ns_id.clone(), ip, mac));
    }
    out
}

#[test]
fn a_hundred_clients_churning_on_five_networks_get_no_error_and_no_duplicate() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network", "--reconcile-interval", "200ms", "--port-range", "40000-40999"]).unwrap();
    let api = Api::new(&lab);
    for i in 0..NETWORKS {
        let r = api.post("/networks", &json!({"Name": net_name(i), "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": format!("10.120.{i}.0/24")}]}]}));
        assert!(r.status == 200 || r.status == 201, "{}", r.raw);
    }
    let baseline_api = api.snapshot();
    let baseline_kernel = kernel_snapshot(&lab);

    let fails = Arc::new(Failures(Mutex::new(Vec::new())));
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicUsize::new(0));
    let socket = lab.socket();
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (fails, stop, cycles, socket) = (fails.clone(), stop.clone(), cycles.clone(), socket.clone());
            std::thread::spawn(move || {
                let api = Api { socket };
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    one_container(&api, &fails, k, round, false);
                    cycles.fetch_add(1, Ordering::Relaxed);
                    round += 1;
                }
                // Each client ends with one container attached, for the kernel check.
                one_container(&api, &fails, k, round, true)
            })
        })
        .collect();
    // Meanwhile: no duplicate may ever be visible.
    let mut dup_checks = 0;
    let mut dups = Vec::new();
    while start.elapsed() < RUN_FOR {
        dups.extend(api_duplicates(&api));
        dup_checks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let kept: Vec<(String, String)> = clients.into_iter().filter_map(|c| c.join().expect("client thread panicked")).collect();
    let elapsed = start.elapsed();
    let failures = fails.0.lock().unwrap().clone();
    let cycles = cycles.load(Ordering::Relaxed);
    eprintln!("{CLIENTS} clients: {cycles} container cycles in {elapsed:?}, {dup_checks} duplicate checks");
    assert!(failures.is_empty(), "{} failed requests, first ones:\n{}", failures.len(), failures.join("\n"));
    assert!(dups.is_empty(), "duplicates seen through the API:\n{}", dups.join("\n"));
    assert!(cycles >= CLIENTS, "the clients hardly ran: {cycles} cycles");
    assert_eq!(kept.len(), CLIENTS, "every client keeps one container");

    // The kept containers: distinct addresses and MACs in the kernel, matching the store; every
    // host port once in the nft maps.
    let final_dups = api_duplicates(&api);
    assert!(final_dups.is_empty(), "{final_dups:?}");
    let ids = kernel_identities(&lab, &api, &kept);
    let mut ips = HashSet::new();
    let mut macs = HashSet::new();
    for (ns, ip, mac) in &ids {
        assert!(!ip.is_empty() && !mac.is_empty(), "compartment {ns} has no eth0 address: {ip:?} {mac:?}");
        assert!(ips.insert(ip.clone()), "address {ip} twice in the kernel");
        assert!(macs.insert(mac.to_lowercase()), "MAC {mac} twice in the kernel");
    }
    for (_, ep_id) in &kept {
        let ep = api.get(&format!("/endpoints/{ep_id}")).ok();
        let ip = ip_of(&ep);
        let mac = ep["MacAddress"].as_str().unwrap().to_lowercase().replace('-', ":");
        assert!(ids.iter().any(|(_, i, m)| *i == ip && *m == mac), "endpoint {ep_id} ({ip}, {mac}) is not what its compartment has");
    }
    let pm4 = lab.in_host("nft", &["-j", "list", "map", "inet", "hns", "pm4"]).unwrap().stdout;
    let pm4: Value = serde_json::from_str(&pm4).unwrap();
    let elems = pm4["nftables"].as_array().unwrap().iter().find_map(|o| o["map"]["elem"].as_array()).cloned().unwrap_or_default();
    let mut host_ports: BTreeMap<u64, usize> = BTreeMap::new();
    for e in &elems {
        // [ {concat: [proto, port]}, {concat: [addr, port]} ]
        let port = e[0]["concat"][1].as_u64().unwrap_or_else(|| panic!("unexpected element {e}"));
        *host_ports.entry(port).or_default() += 1;
    }
    assert_eq!(host_ports.len(), 2 * CLIENTS, "host ports in the kernel: {host_ports:?}");
    assert!(host_ports.values().all(|n| *n == 1), "{host_ports:?}");

    // Delete everything, concurrently: nothing is left in the store or the kernel.
    let deleters: Vec<_> = kept
        .chunks(10)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            let (socket, fails) = (lab.socket(), fails.clone());
            std::thread::spawn(move || {
                let api = Api { socket };
                for (ns_id, ep_id) in chunk {
                    fails.check("delete endpoint", &api.delete(&format!("/endpoints/{ep_id}")), &[204]);
                    fails.check("delete namespace", &api.delete(&format!("/namespaces/{ns_id}")), &[204]);
                }
            })
        })
        .collect();
    for d in deleters {
        d.join().unwrap();
    }
    let failures = fails.0.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(api.snapshot(), baseline_api, "objects left in the store");
    assert_eq!(api.get("/portmappings").ok(), json!([]), "mappings left in the store");
    assert!(eventually(Duration::from_secs(10), || kernel_snapshot(&lab) == baseline_kernel), "the kernel differs from before the clients ran:\n{}\n--- before:\n{baseline_kernel}", kernel_snapshot(&lab));
}
