//! Overlay networks across hosts, in the lab: a real etcd on a lab underlay LAN, host
//! namespaces each with its own hnsd, real VXLAN devices and real packets.
//! Needs root, /usr/bin/etcd, and `cargo build -p hnsd -p hnsctl -p hns-lab --bins`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use hns_lab::{ClusterLab, Daemon, Lab, Proc};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// A cluster lab with hnsd running on every host.
struct Hosts {
    lab: ClusterLab,
    daemons: Vec<Option<Daemon>>,
    apis: Vec<Api>,
}

fn hosts(n: usize, extra: &[&str]) -> Hosts {
    hosts_on(ClusterLab::new(n).expect("cluster lab"), extra)
}

fn hosts_on(lab: ClusterLab, extra: &[&str]) -> Hosts {
    let n = lab.hosts().len();
    let mut args = vec!["--no-default-network"];
    args.extend_from_slice(extra);
    let daemons = (0..n).map(|i| Some(lab.start_hnsd(i, &args).expect("hnsd starts"))).collect();
    let apis = lab.hosts().iter().map(Api::new).collect();
    Hosts { lab, daemons, apis }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // A failed test shows what each hnsd said (the lab directories go with the lab).
        let keep = std::env::var_os("HNS_OVERLAY_LOGS");
        if !std::thread::panicking() && keep.is_none() {
            return;
        }
        for (i, host) in self.lab.hosts().iter().enumerate() {
            let log = std::fs::read_to_string(host.log_path()).unwrap_or_default();
            match &keep {
                Some(dir) => {
                    let _ = std::fs::create_dir_all(dir);
                    let _ = std::fs::write(std::path::Path::new(dir).join(format!("host{i}.log")), &log);
                }
                None => {
                    let lines: Vec<&str> = log.lines().collect();
                    eprintln!("--- host{i} hnsd log (last 40 lines) ---\n{}", lines[lines.len().saturating_sub(40)..].join("\n"));
                }
            }
        }
    }
}

impl Hosts {
    fn host(&self, i: usize) -> &Lab {
        self.lab.host(i)
    }

    /// Creates an overlay network on host `on` with hnsctl and waits until every host has it.
    fn overlay(&self, on: usize, name: &str, subnet: &str) -> Value {
        self.overlay_with(on, name, &[subnet])
    }

    /// As [`Hosts::overlay`], with one `--subnet` per entry of `subnets`.
    fn overlay_with(&self, on: usize, name: &str, subnets: &[&str]) -> Value {
        let mut args = vec!["network", "create", "-d", "overlay"];
        for s in subnets {
            args.extend(["--subnet", s]);
        }
        args.push(name);
        self.host(on).hnsctl_ok(&args).unwrap();
        for (i, api) in self.apis.iter().enumerate() {
            assert!(eventually(Duration::from_secs(5), || api.get(&format!("/networks/{name}")).status == 200), "host{i} did not get network {name}");
        }
        self.apis[on].get(&format!("/networks/{name}")).ok()
    }
}

fn probe() -> String {
    Lab::bin("labprobe").unwrap().display().to_string()
}

fn vxlan_of(net: &Value) -> String {
    let id: String = net["ID"].as_str().unwrap().chars().filter(char::is_ascii_hexdigit).take(8).collect();
    format!("hnx{}", id.to_ascii_lowercase())
}

fn mac_of(ep: &Value) -> String {
    ep["MacAddress"].as_str().unwrap().replace('-', ":").to_ascii_lowercase()
}

/// The FDB of a VXLAN device as `bridge fdb` shows it.
fn fdb(lab: &Lab, dev: &str) -> String {
    lab.try_in(hns_lab::Side::Host, "bridge", &["fdb", "show", "dev", dev]).map(|o| o.stdout).unwrap_or_default()
}

fn neigh(lab: &Lab, dev: &str) -> String {
    lab.try_in(hns_lab::Side::Host, "ip", &["neigh", "show", "dev", dev]).map(|o| o.stdout).unwrap_or_default()
}

/// Starts `labprobe serve-tcp|serve-udp ADDR` inside a compartment and waits until it listens.
fn serve(lab: &Lab, ns: &Value, mode: &str, addr: &str) -> Proc {
    let mut cmd = lab.host().cmd("nsenter");
    cmd.arg(format!("--net={}", ns["NetNsPath"].as_str().unwrap())).arg(probe()).args([mode, addr]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let p = lab.spawn_command(cmd, "labprobe").unwrap();
    let out = p.take_stdout().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the first line so the server never blocks on a full pipe.
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().trim(), "listening");
    p
}

fn tcp_ok(lab: &Lab, ns: &Value, addr: &str) -> bool {
    in_ns(lab, ns, &probe(), &["connect-tcp", addr, "--send", "hello", "--timeout-ms", "2000"]).stdout.contains("hello")
}

/// A DNS query of type `qtype` (A, AAAA) from a compartment; what labprobe printed.
fn dns(lab: &Lab, ns: &Value, server: &str, name: &str, qtype: &str) -> String {
    let o = in_ns(lab, ns, &probe(), &["dns", server, name, qtype, "--timeout-ms", "2000"]);
    format!("{}{}", o.stdout, o.stderr)
}

/// The endpoint's IPv6 address.
fn ip6_of(ep: &Value) -> String {
    let configs = ep["IpConfigurations"].as_array().unwrap();
    configs.iter().filter_map(|c| c["IpAddress"].as_str()).find(|a| a.contains(':')).unwrap_or_else(|| panic!("no IPv6 address: {ep}")).to_owned()
}

/// Whether `dev` has a permanent neighbour entry `ip` -> `mac` (whole words, so fd00::5 is
/// not taken for fd00::51).
fn neigh_has(lab: &Lab, dev: &str, ip: &str, mac: &str) -> bool {
    neigh(lab, dev).lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&ip) && w.windows(2).any(|p| p == ["lladdr", mac]) && l.contains("PERMANENT")
    })
}

fn neigh_has_ip(lab: &Lab, dev: &str, ip: &str) -> bool {
    neigh(lab, dev).lines().any(|l| l.split_whitespace().next() == Some(ip))
}

fn gateway(net: &Value) -> String {
    net["Ipams"][0]["Subnets"][0]["Routes"][0]["NextHop"].as_str().unwrap().to_owned()
}

fn remove_container(api: &Api, ns: &Value, ep: &Value) {
    assert_eq!(api.delete(&format!("/endpoints/{}", ep["ID"].as_str().unwrap())).status, 204);
    assert_eq!(api.delete(&format!("/namespaces/{}", ns["ID"].as_str().unwrap())).status, 204);
}

#[test]
fn containers_on_three_hosts_talk_tcp_and_udp_and_resolve_each_other_by_name() {
    let h = hosts(3, &[]);
    let net = h.overlay(0, "ov", "10.240.0.0/24");
    let vni = net["Ipams"][0]["Subnets"][0]["Policies"][0]["Settings"]["IsolationId"].as_u64().unwrap();
    assert!(vni >= 4096, "{net}");
    assert_eq!(net["Policies"].as_array().unwrap().iter().find(|p| p["Type"] == "VxlanPort").unwrap()["Settings"]["Port"], 4789);
    // Every host has the same network: ID, subnet, gateway, VNI.
    for api in &h.apis[1..] {
        let there = api.get("/networks/ov").ok();
        assert_eq!((&there["ID"], &there["Type"], &there["Ipams"]), (&net["ID"], &json!("Overlay"), &net["Ipams"]));
    }
    let (vx, gw) = (vxlan_of(&net), gateway(&net));

    let ctrs: Vec<(Value, Value)> = (0..3).map(|i| h.apis[i].container("ov", &format!("web{i}"), json!({}))).collect();
    let ip = |i: usize| ip_of(&ctrs[i].1);

    // The data plane: one VXLAN device per network, learning off, ARP answered locally, no
    // flood entry; every overlay link at the underlay MTU minus 50.
    let details = h.host(1).in_host("ip", &["-d", "link", "show", &vx]).unwrap().stdout;
    for want in [format!("vxlan id {vni}"), "nolearning".into(), "proxy".into(), "dstport 4789".into(), "mtu 1450".into()] {
        assert!(details.contains(&want), "{want} missing: {details}");
    }
    // Every host's bridge holds the gateway with the same MAC; it never appears on the VXLAN.
    let bridge = net["InterfaceName"].as_str().unwrap().to_owned();
    let bridge_mac = |i: usize| {
        let line = h.host(i).in_host("ip", &["-o", "link", "show", &bridge]).unwrap().stdout;
        line.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap().to_owned()
    };
    for i in 0..3 {
        assert!(h.host(i).in_host("ip", &["-o", "addr", "show", &bridge]).unwrap().stdout.contains(&format!("{gw}/24")));
        assert_eq!(bridge_mac(i), bridge_mac(0));
        assert!(!fdb(h.host(i), &vx).contains(&bridge_mac(0)), "the gateway MAC is on the VXLAN of host{i}");
    }
    let eth0 = in_ns(h.host(2), &ctrs[2].0, "ip", &["-o", "link", "show", "eth0"]).stdout;
    assert!(eth0.contains("mtu 1450"), "{eth0}");

    // Remote endpoints reach every host's kernel and API.
    for i in 0..3 {
        let want: Vec<String> = (0..3).filter(|j| *j != i).map(|j| mac_of(&ctrs[j].1)).collect();
        assert!(eventually(Duration::from_secs(5), || want.iter().all(|m| fdb(h.host(i), &vx).contains(m.as_str()))), "host{i} FDB: {}", fdb(h.host(i), &vx));
        let table = fdb(h.host(i), &vx);
        assert!(!table.contains("00:00:00:00:00:00"), "a flood entry exists: {table}");
        assert!(neigh(h.host(i), &vx).contains(&ip((i + 1) % 3)), "{}", neigh(h.host(i), &vx));
    }
    let listed = h.apis[1].get("/endpoints").ok();
    let remote: Vec<&Value> = listed.as_array().unwrap().iter().filter(|e| e["Flags"] == 1).collect();
    assert_eq!(remote.len(), 2, "{listed}");
    let r0 = remote.iter().find(|e| e["Name"] == "web0").expect("web0 listed on host1");
    assert_eq!((r0["IpConfigurations"][0]["IpAddress"].as_str().unwrap(), &r0["Policies"][0]["Settings"]["ProviderAddress"]), (ip(0).as_str(), &json!("10.99.0.1")));
    assert_eq!(h.apis[1].get(&format!("/endpoints/{}", r0["ID"].as_str().unwrap())).ok()["Flags"], 1);

    // TCP from two hosts to the third, with full-size segments (the MTU holds), and UDP back.
    let _tcp = serve(h.host(2), &ctrs[2].0, "serve-tcp", &format!("{}:7000", ip(2)));
    assert!(tcp_ok(h.host(0), &ctrs[0].0, &format!("{}:7000", ip(2))), "TCP host0 -> host2");
    assert!(tcp_ok(h.host(1), &ctrs[1].0, &format!("{}:7000", ip(2))), "TCP host1 -> host2");
    let big = in_ns(h.host(0), &ctrs[0].0, "ping", &["-c1", "-W2", "-M", "do", "-s", "1422", &ip(2)]);
    assert!(big.status.success(), "a 1450-byte packet did not cross: {}", big.stderr);
    let _udp = serve(h.host(0), &ctrs[0].0, "serve-udp", &format!("{}:7001", ip(0)));
    let udp = in_ns(h.host(2), &ctrs[2].0, &probe(), &["send-udp", &format!("{}:7001", ip(0)), "ping", "--timeout-ms", "2000"]);
    assert!(udp.status.success() && udp.stdout.contains(&ip(2)), "UDP host2 -> host0: {}{}", udp.stdout, udp.stderr);

    // Global service discovery: names of every host resolve on every host.
    for (from, to) in [(1, 0), (1, 2), (0, 2), (2, 1)] {
        let out = dns(h.host(from), &ctrs[from].0, &gw, &format!("web{to}"), "A");
        assert!(out.contains(&format!("answer={}", ip(to))), "web{to} from host{from}: {out}");
    }

    // The local store is enough for the reconciler: a VXLAN device deleted by hand comes back
    // with every remote endpoint programmed again.
    h.host(1).in_host("ip", &["link", "del", &vx]).unwrap();
    let back = eventually(Duration::from_secs(5), || fdb(h.host(1), &vx).contains(&mac_of(&ctrs[2].1)) && fdb(h.host(1), &vx).contains(&mac_of(&ctrs[0].1)));
    assert!(back, "host1 did not rebuild {vx}: {}", fdb(h.host(1), &vx));
    assert!(tcp_ok(h.host(1), &ctrs[1].0, &format!("{}:7000", ip(2))), "TCP host1 -> host2 after the repair");

    // Removing the network while other hosts use it is refused, naming their endpoints.
    h.apis[1].delete(&format!("/endpoints/{}", ctrs[1].1["ID"].as_str().unwrap()));
    let refused = h.host(1).hnsctl(&["network", "rm", "ov"]).unwrap();
    let text = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success() && text.contains("web0") && text.contains("host0") && text.contains("web2") && text.contains("host2"), "{text}");
    // Another host's endpoint cannot be removed here.
    let e = h.apis[1].delete(&format!("/endpoints/{}", ctrs[0].1["ID"].as_str().unwrap()));
    assert!(e.status == 400 && e.raw.contains("lives on host host0"), "{}", e.raw);

    // Once they are gone, removing it on one host removes it everywhere, kernel included.
    h.apis[1].delete(&format!("/namespaces/{}", ctrs[1].0["ID"].as_str().unwrap()));
    remove_container(&h.apis[0], &ctrs[0].0, &ctrs[0].1);
    remove_container(&h.apis[2], &ctrs[2].0, &ctrs[2].1);
    h.host(1).hnsctl_ok(&["network", "rm", "ov"]).unwrap();
    for i in 0..3 {
        assert!(eventually(Duration::from_secs(5), || h.apis[i].get("/networks/ov").status == 404), "host{i} still has the network");
        let clean = eventually(Duration::from_secs(3), || h.host(i).leftovers_in_host().unwrap().is_empty());
        assert!(clean, "host{i} leftovers: {:?}", h.host(i).leftovers_in_host().unwrap());
    }
}

#[test]
fn a_dual_stack_overlay_carries_ipv6_between_hosts_resolves_aaaa_everywhere_and_forgets_a_dead_host() {
    let mut h = hosts(3, &["--cluster-lease-ttl", "3s"]);
    // Two subnets of one family are refused, naming the rule; nothing is created anywhere.
    let two4 = h.apis[0].post("/networks", &json!({"Name": "two4", "Type": "Overlay",
        "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.243.0.0/24"}, {"IpAddressPrefix": "10.253.0.0/24"}]}]}));
    assert!(two4.status == 400 && two4.raw.contains("Ipams") && two4.raw.contains("are of one address family"), "{}", two4.raw);
    assert_eq!(h.apis[0].get("/networks/two4").status, 404);
    let net = h.overlay_with(0, "ds", &["10.243.0.0/24", "fd00:243::/64"]);
    let vx = vxlan_of(&net);
    // Every host has both subnets, in one order, and its bridge holds both gateways.
    for api in &h.apis[1..] {
        assert_eq!(api.get("/networks/ds").ok()["Ipams"], net["Ipams"]);
    }
    let bridge = net["InterfaceName"].as_str().unwrap().to_owned();
    for i in 0..3 {
        let addrs = h.host(i).in_host("ip", &["-o", "addr", "show", &bridge]).unwrap().stdout;
        assert!(addrs.contains("10.243.0.1/24") && addrs.contains("fd00:243::1/64"), "host{i}: {addrs}");
    }

    let ctrs: Vec<(Value, Value)> = (0..3).map(|i| h.apis[i].container("ds", &format!("d{i}"), json!({}))).collect();
    let (ip4, ip6) = (|i: usize| ip_of(&ctrs[i].1), |i: usize| ip6_of(&ctrs[i].1));
    // A requested IPv6 address is given as asked (the IPv4 one picked beside it); one that
    // another endpoint holds is refused, naming the holder.
    let fixed = h.apis[1].post("/endpoints", &json!({"HostComputeNetwork": "ds", "Name": "fixed", "IpConfigurations": [{"IpAddress": "fd00:243::50"}]})).ok();
    assert_eq!((ip6_of(&fixed), ip_of(&fixed).starts_with("10.243.0.")), ("fd00:243::50".to_owned(), true), "{fixed}");
    let dup = h.apis[2].post("/endpoints", &json!({"HostComputeNetwork": "ds", "IpConfigurations": [{"IpAddress": "fd00:243::50"}]}));
    let holder = format!("address fd00:243::50 in overlay network ds is in use by endpoint {} on node host1", fixed["ID"].as_str().unwrap());
    assert!(dup.status == 409 && dup.raw.contains(&holder), "{}", dup.raw);
    assert_eq!(h.apis[1].delete(&format!("/endpoints/{}", fixed["ID"].as_str().unwrap())).status, 204);
    for (_, ep) in &ctrs {
        assert!(ip_of(ep).starts_with("10.243.0.") && ip6_of(ep).starts_with("fd00:243::"), "{ep}");
        // The MAC still comes from the IPv4 address, as on an IPv4-only overlay.
        let low: Vec<String> = ip_of(ep).split('.').skip(1).map(|o| format!("{:02x}", o.parse::<u8>().unwrap())).collect();
        assert!(mac_of(ep).ends_with(&low.join(":")), "{ep}");
    }

    // Every host programs the others' IPv6 addresses beside their IPv4 ones: neighbour entries
    // (answered by the VXLAN device's ND proxy) and the FDB entry of their MAC.
    for i in 0..3 {
        for j in (0..3).filter(|j| *j != i) {
            let (mac, dev) = (mac_of(&ctrs[j].1), &vx);
            let programmed = eventually(Duration::from_secs(5), || neigh_has(h.host(i), dev, &ip6(j), &mac) && neigh_has(h.host(i), dev, &ip4(j), &mac));
            assert!(programmed, "host{i} lacks d{j}'s entries: {}", neigh(h.host(i), dev));
            assert!(fdb(h.host(i), dev).lines().any(|l| l.starts_with(&mac) && l.contains("dst 10.99.0.")), "{}", fdb(h.host(i), dev));
        }
    }
    // Remote endpoints are listed with both addresses.
    let listed = h.apis[1].get("/endpoints").ok();
    let r0 = listed.as_array().unwrap().iter().find(|e| e["Name"] == "d0" && e["Flags"] == 1).expect("d0 listed on host1");
    assert_eq!((ip_of(r0), ip6_of(r0)), (ip4(0), ip6(0)));

    // TCP and UDP over IPv6 between hosts, with full-size packets.
    let _tcp = serve(h.host(2), &ctrs[2].0, "serve-tcp", &format!("[{}]:7000", ip6(2)));
    assert!(tcp_ok(h.host(0), &ctrs[0].0, &format!("[{}]:7000", ip6(2))), "TCP over IPv6 host0 -> host2");
    assert!(tcp_ok(h.host(1), &ctrs[1].0, &format!("[{}]:7000", ip6(2))), "TCP over IPv6 host1 -> host2");
    let big = in_ns(h.host(0), &ctrs[0].0, "ping", &["-c1", "-W2", "-M", "do", "-s", "1402", &ip6(2)]);
    assert!(big.status.success(), "a 1450-byte IPv6 packet did not cross: {}{}", big.stdout, big.stderr);
    let _udp = serve(h.host(0), &ctrs[0].0, "serve-udp", &format!("[{}]:7001", ip6(0)));
    let udp = in_ns(h.host(2), &ctrs[2].0, &probe(), &["send-udp", &format!("[{}]:7001", ip6(0)), "ping", "--timeout-ms", "2000"]);
    assert!(udp.status.success() && udp.stdout.contains(&ip6(2)), "UDP over IPv6 host2 -> host0: {}{}", udp.stdout, udp.stderr);

    // Names resolve to AAAA (and A) on every host, asked at either gateway.
    for (from, to) in [(1, 0), (1, 2), (0, 2), (2, 1), (0, 1)] {
        for server in ["10.243.0.1", "fd00:243::1"] {
            let out = dns(h.host(from), &ctrs[from].0, server, &format!("d{to}"), "AAAA");
            assert!(out.contains(&format!("answer={}", ip6(to))), "AAAA d{to} from host{from} at {server}: {out}");
        }
        let out = dns(h.host(from), &ctrs[from].0, "10.243.0.1", &format!("d{to}"), "A");
        assert!(out.contains(&format!("answer={}", ip4(to))), "A d{to} from host{from}: {out}");
    }

    // host2's hnsd dies: once its lease expires its peers drop its IPv6 entries with the IPv4
    // ones, and its name stops resolving.
    h.daemons[2].take().unwrap().kill(Signal::SIGKILL).unwrap();
    let mac2 = mac_of(&ctrs[2].1);
    for i in [0, 1] {
        let gone = eventually(Duration::from_secs(10), || {
            // (The bridge may still have learned mac2 on the VXLAN port from d2's packets; that
            // entry leads nowhere once the device's own entry is gone, and ages out.)
            let own = fdb(h.host(i), &vx).lines().any(|l| l.starts_with(&mac2) && l.contains(" self"));
            !neigh_has_ip(h.host(i), &vx, &ip6(2)) && !neigh_has_ip(h.host(i), &vx, &ip4(2)) && !own
        });
        assert!(gone, "host{i} still has host2's entries: {}{}", neigh(h.host(i), &vx), fdb(h.host(i), &vx));
    }
    let out = dns(h.host(0), &ctrs[0].0, "10.243.0.1", "d2", "AAAA");
    assert!(!out.contains(&ip6(2)), "d2 still resolves on host0: {out}");
    // The survivors still talk IPv6.
    let _tcp1 = serve(h.host(1), &ctrs[1].0, "serve-tcp", &format!("[{}]:7002", ip6(1)));
    assert!(tcp_ok(h.host(0), &ctrs[0].0, &format!("[{}]:7002", ip6(1))), "TCP over IPv6 host0 -> host1 after host2 died");
}

#[test]
fn an_ipv6_only_overlay_runs_over_an_ipv6_underlay() {
    let h = hosts_on(ClusterLab::with_ipv6_underlay(3).expect("cluster lab"), &[]);
    // A /112: endpoints' MACs come from the low 24 bits of their IPv6 addresses.
    let net = h.overlay_with(1, "six", &["fd00:244::/112"]);
    let vx = vxlan_of(&net);
    // VXLAN over IPv6: its local address is the host's IPv6 underlay address, and the
    // encapsulation costs 70 bytes of the underlay's 1500.
    let details = h.host(0).in_host("ip", &["-d", "link", "show", &vx]).unwrap().stdout;
    for want in ["local fd99::1", "mtu 1430", "nolearning", "proxy"] {
        assert!(details.contains(want), "{want} missing: {details}");
    }
    let nodes = h.host(0).hnsctl_ok(&["node", "ls"]).unwrap();
    assert!(nodes.lines().any(|l| l.starts_with("host2 ") && l.contains("fd99::3")), "{nodes}");

    let ctrs: Vec<(Value, Value)> = (0..3).map(|i| h.apis[i].container("six", &format!("s{i}"), json!({}))).collect();
    let ip = |i: usize| ip_of(&ctrs[i].1);
    for (i, (ns, ep)) in ctrs.iter().enumerate() {
        assert_eq!(ep["IpConfigurations"].as_array().unwrap().len(), 1, "{ep}");
        let v6: std::net::Ipv6Addr = ip(i).parse().unwrap();
        assert!(ip(i).starts_with("fd00:244::"), "{ep}");
        let o = v6.octets();
        assert!(mac_of(ep).ends_with(&format!("{:02x}:{:02x}:{:02x}", o[13], o[14], o[15])), "MAC not from {v6}: {ep}");
        let eth0 = in_ns(h.host(i), ns, "ip", &["-o", "link", "show", "eth0"]).stdout;
        assert!(eth0.contains("mtu 1430"), "{eth0}");
    }
    // Peers are reached at their IPv6 VTEPs.
    for i in 0..3 {
        for j in (0..3).filter(|j| *j != i) {
            let (mac, vtep) = (mac_of(&ctrs[j].1), format!("dst {}", ClusterLab::vtep6(j)));
            let programmed = eventually(Duration::from_secs(5), || {
                neigh_has(h.host(i), &vx, &ip(j), &mac) && fdb(h.host(i), &vx).lines().any(|l| l.starts_with(&mac) && l.contains(&vtep))
            });
            assert!(programmed, "host{i} lacks s{j}: {}{}", neigh(h.host(i), &vx), fdb(h.host(i), &vx));
        }
    }

    let _tcp = serve(h.host(2), &ctrs[2].0, "serve-tcp", &format!("[{}]:7000", ip(2)));
    assert!(tcp_ok(h.host(0), &ctrs[0].0, &format!("[{}]:7000", ip(2))), "TCP host0 -> host2");
    assert!(tcp_ok(h.host(1), &ctrs[1].0, &format!("[{}]:7000", ip(2))), "TCP host1 -> host2");
    let big = in_ns(h.host(0), &ctrs[0].0, "ping", &["-c1", "-W2", "-M", "do", "-s", "1382", &ip(1)]);
    assert!(big.status.success(), "a 1430-byte packet did not cross: {}{}", big.stdout, big.stderr);
    let _udp = serve(h.host(1), &ctrs[1].0, "serve-udp", &format!("[{}]:7001", ip(1)));
    let udp = in_ns(h.host(2), &ctrs[2].0, &probe(), &["send-udp", &format!("[{}]:7001", ip(1)), "ping", "--timeout-ms", "2000"]);
    assert!(udp.status.success() && udp.stdout.contains(&ip(2)), "UDP host2 -> host1: {}{}", udp.stdout, udp.stderr);
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        let out = dns(h.host(from), &ctrs[from].0, "fd00:244::1", &format!("s{to}"), "AAAA");
        assert!(out.contains(&format!("answer={}", ip(to))), "AAAA s{to} from host{from}: {out}");
    }
}

#[test]
fn three_hosts_creating_300_endpoints_at_once_get_300_distinct_addresses() {
    let h = hosts(3, &[]);
    let net = h.overlay(0, "ipam", "10.241.0.0/23");
    let started = Instant::now();
    let ips: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|i| {
                let api = &h.apis[i];
                s.spawn(move || (0..100).map(|k| ip_of(&api.post("/endpoints", &json!({"HostComputeNetwork": "ipam", "Name": format!("h{i}-{k}")})).ok())).collect::<Vec<_>>())
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    eprintln!("300 overlay endpoints from 3 hosts at once: {:?}", started.elapsed());
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 300, "an address was handed out twice");
    let gw = gateway(&net);
    assert!(ips.iter().all(|ip| ip.starts_with("10.241.") && *ip != gw && ip != "10.241.0.0" && ip != "10.241.1.255"));
    // Every host sees all 300: its own 100 and 200 remote ones.
    for (i, api) in h.apis.iter().enumerate() {
        let seen = eventually(Duration::from_secs(10), || {
            let all = api.get("/endpoints").ok();
            let all = all.as_array().unwrap();
            all.len() == 300 && all.iter().filter(|e| e["Flags"] == 1).count() == 200
        });
        assert!(seen, "host{i} does not list 300 endpoints");
    }
}

#[test]
fn a_killed_host_is_dropped_by_its_peers_after_its_lease_and_a_restart_within_it_changes_nothing() {
    let mut h = hosts(3, &["--cluster-lease-ttl", "3s"]);
    let net = h.overlay(0, "ov", "10.242.0.0/24");
    let vx = vxlan_of(&net);
    let ctrs: Vec<(Value, Value)> = (0..3).map(|i| h.apis[i].container("ov", &format!("c{i}"), json!({}))).collect();
    let (mac1, mac2) = (mac_of(&ctrs[1].1), mac_of(&ctrs[2].1));
    assert!(eventually(Duration::from_secs(5), || fdb(h.host(0), &vx).contains(&mac1) && fdb(h.host(0), &vx).contains(&mac2)));

    // host1's hnsd restarts within its lease: host0 never loses host1's endpoint.
    h.daemons[1].take().unwrap().stop().unwrap();
    let stopped = Instant::now();
    h.daemons[1] = Some(h.lab.start_hnsd(1, &["--no-default-network", "--cluster-lease-ttl", "3s"]).unwrap());
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(fdb(h.host(0), &vx).contains(&mac1), "host0 dropped host1's endpoint {:?} into its restart", stopped.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ping(h.host(0), &ctrs[0].0, &ip_of(&ctrs[1].1)), "host0 -> host1 after the restart");
    let nodes = h.host(0).hnsctl_ok(&["node", "ls"]).unwrap();
    assert!(nodes.lines().any(|l| l.starts_with("host1 ") && l.contains("10.99.0.2") && l.contains("Up")), "{nodes}");

    // host2's hnsd dies: its container keeps running there, but once its lease expires the
    // others forget its endpoint (FDB and neighbour entries, DNS, API).
    h.daemons[2].take().unwrap().kill(Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    for i in [0, 1] {
        let gone = eventually(Duration::from_secs(10), || !fdb(h.host(i), &vx).contains(&mac2) && !neigh(h.host(i), &vx).contains(&ip_of(&ctrs[2].1)));
        assert!(gone, "host{i} still has host2's endpoint {:?} after the kill", killed.elapsed());
    }
    eprintln!("host2's endpoint left its peers {:?} after SIGKILL (lease TTL 3 s)", killed.elapsed());
    assert!(h.apis[0].get("/endpoints").ok().as_array().unwrap().iter().all(|e| e["Name"] != "c2"));
    assert!(in_ns(h.host(2), &ctrs[2].0, "ip", &["-o", "addr", "show", "eth0"]).stdout.contains(&ip_of(&ctrs[2].1)), "host2's data plane must keep running");

    // Its address stays reserved until an operator removes the node.
    let nodes = h.host(0).hnsctl_ok(&["node", "ls"]).unwrap();
    let row = nodes.lines().find(|l| l.starts_with("host2")).unwrap_or_else(|| panic!("{nodes}"));
    assert!(row.contains("Down") && row.trim_end().ends_with('1'), "{nodes}");
    let taken = h.apis[0].post("/endpoints", &json!({"HostComputeNetwork": "ov", "IpConfigurations": [{"IpAddress": ip_of(&ctrs[2].1)}]}));
    assert_eq!(taken.status, 409, "{}", taken.raw);
    assert!(taken.raw.contains("in use by endpoint") && taken.raw.contains("host2"), "{}", taken.raw);
    let alive = h.host(0).hnsctl(&["node", "rm", "host1"]).unwrap();
    assert!(!alive.status.success() && String::from_utf8_lossy(&alive.stderr).contains("still alive"), "{alive:?}");
    let out = h.host(0).hnsctl_ok(&["node", "rm", "host2"]).unwrap();
    assert!(out.contains("released 1 address"), "{out}");
    assert!(!h.host(0).hnsctl_ok(&["node", "ls"]).unwrap().contains("host2"));
    let again = h.apis[0].post("/endpoints", &json!({"HostComputeNetwork": "ov", "IpConfigurations": [{"IpAddress": ip_of(&ctrs[2].1)}]}));
    assert_eq!(again.status, 200, "{}", again.raw);
}

#[test]
fn with_etcd_down_traffic_flows_cluster_changes_fail_fast_and_everything_converges_after() {
    let mut h = hosts(2, &[]);
    // Through the API this time, with the HNS policies for the VNI and the VXLAN port.
    let req = json!({"Name": "ov", "Type": "Overlay", "Policies": [{"Type": "VxlanPort", "Settings": {"Port": 4790}}],
        "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.243.0.0/24", "Policies": [{"Type": "VSID", "Settings": {"IsolationId": 5001}}]}]}]});
    let net = h.apis[0].post("/networks", &req).ok();
    assert!(eventually(Duration::from_secs(5), || h.apis[1].get("/networks/ov").status == 200));
    let vx = vxlan_of(&net);
    let details = h.host(1).in_host("ip", &["-d", "link", "show", &vx]).unwrap().stdout;
    assert!(details.contains("vxlan id 5001") && details.contains("dstport 4790"), "{details}");
    // The VNI is cluster-wide: another network cannot take it.
    let taken = h.apis[1].post("/networks", &json!({"Name": "ov3", "Type": "Overlay",
        "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.246.0.0/24", "Policies": [{"Type": "VSID", "Settings": {"IsolationId": 5001}}]}]}]}));
    assert!(taken.status == 409 && taken.raw.contains("VNI 5001 is already used by overlay network ov"), "{}", taken.raw);
    let (a0, a1) = (h.apis[0].container("ov", "a0", json!({})), h.apis[1].container("ov", "a1", json!({})));
    let b0 = h.apis[0].container("ov", "b0", json!({}));
    let mac_b0 = mac_of(&b0.1);
    assert!(eventually(Duration::from_secs(5), || fdb(h.host(1), &vx).contains(&mac_b0)));
    let _srv = serve(h.host(1), &a1.0, "serve-tcp", &format!("{}:7000", ip_of(&a1.1)));

    h.lab.stop_etcd().unwrap();
    // The data plane does not need etcd.
    assert!(tcp_ok(h.host(0), &a0.0, &format!("{}:7000", ip_of(&a1.1))), "overlay traffic stopped with etcd");
    // Cluster operations fail at once, saying why.
    let t = Instant::now();
    let out = h.host(0).hnsctl(&["network", "create", "-d", "overlay", "--subnet", "10.244.0.0/24", "ov2"]).unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && text.contains("etcd is unreachable at http://10.99.0.254:2379"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    let e = h.apis[1].post("/endpoints", &json!({"HostComputeNetwork": "ov"}));
    assert!(e.status == 503 && e.raw.contains("etcd is unreachable"), "{}", e.raw);
    // The metrics count the failed etcd operations, and the watch events each host applied
    // (with how long each took from arrival to application).
    let sum = |text: &str, prefix: &str| -> f64 { text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum() };
    for (i, api) in h.apis.iter().enumerate() {
        let m = api.get("/metrics").raw;
        assert!(sum(&m, "hns_etcd_errors_total{") >= 1.0, "host {i}: no etcd error counted:\n{}", m.lines().filter(|l| l.contains("etcd") || l.contains("watch")).collect::<Vec<_>>().join("\n"));
        assert!(sum(&m, "hns_cluster_watch_events_total{kind=\"snapshot\"}") >= 1.0, "host {i}: no snapshot applied");
        // Host 0 saw host 1's endpoint a1 arrive through the watch, and the reverse.
        assert!(sum(&m, "hns_cluster_watch_events_total{kind=\"endpoint_put\"}") >= 1.0, "host {i}: no endpoint from the watch");
        assert_eq!(sum(&m, "hns_cluster_watch_lag_seconds_count"), sum(&m, "hns_cluster_watch_events_total{"), "host {i}: one lag sample per event");
    }
    // Local networks carry on as usual.
    h.apis[0].post("/networks", &json!({"Name": "local", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.250.0.0/24"}]}]})).ok();
    let (l, _) = h.apis[0].container("local", "l0", json!({}));
    assert!(ping(h.host(0), &l, "10.250.0.1"));
    // A local delete works too; the cluster learns of it when etcd is back.
    remove_container(&h.apis[0], &b0.0, &b0.1);
    assert!(fdb(h.host(1), &vx).contains(&mac_b0), "host1 cannot know yet");

    h.lab.restart_etcd().unwrap();
    let back = Instant::now();
    assert!(eventually(Duration::from_secs(10), || !fdb(h.host(1), &vx).contains(&mac_b0)), "host1 still has b0 after etcd came back");
    eprintln!("converged {:?} after etcd came back", back.elapsed());
    // b0's address was released: host1 can take it now; and host0 sees the new endpoint.
    let c1 = h.apis[1].post("/endpoints", &json!({"HostComputeNetwork": "ov", "Name": "c1", "IpConfigurations": [{"IpAddress": ip_of(&b0.1)}]}));
    assert_eq!(c1.status, 200, "{}", c1.raw);
    assert!(eventually(Duration::from_secs(5), || h.apis[0].get("/endpoints").ok().as_array().unwrap().iter().any(|e| e["Name"] == "c1" && e["Flags"] == 1)));
    h.host(0).hnsctl_ok(&["network", "create", "-d", "overlay", "--subnet", "10.244.0.0/24", "ov2"]).unwrap();
}

#[test]
fn overlay_networks_need_the_cluster_store() {
    let lab = Lab::new().unwrap();
    // Flags that make no sense without a store stop hnsd at start, naming the missing flag.
    assert!(lab.start_hnsd(&["--advertise-addr", "198.51.100.2"]).is_err());
    let log = std::fs::read_to_string(lab.log_path()).unwrap();
    assert!(log.contains("--advertise-addr") && log.contains("give it too"), "{log}");
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let out = lab.hnsctl(&["network", "create", "-d", "overlay", "--subnet", "10.245.0.0/24", "ov"]).unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && text.contains("needs the cluster store") && text.contains("--cluster-store"), "{text}");
    let nodes = lab.hnsctl(&["node", "ls"]).unwrap();
    assert!(!nodes.status.success() && String::from_utf8_lossy(&nodes.stderr).contains("--cluster-store"));
}

#[test]
fn a_secured_etcd_takes_client_certificates() {
    let lab = Lab::new().unwrap();
    let tls = hns_lab::etcd::EtcdTls::generate(&lab.dir().join("pki"), hns_lab::LAN_ROUTER.into()).unwrap();
    let _etcd = hns_lab::etcd::EtcdServer::start_tls(lab.lan(), hns_lab::LAN_ROUTER.into(), 2379, tls.clone()).unwrap();
    let store = format!("etcd://{}:2379", hns_lab::LAN_ROUTER);
    let (ca, cert, key) = (tls.ca.display().to_string(), tls.client_cert.display().to_string(), tls.client_key.display().to_string());
    let flags = ["--no-default-network", "--cluster-store", &store, "--advertise-addr", "198.51.100.2", "--node-name", "solo"];
    let _d = lab.start_hnsd(&[&flags[..], &["--cluster-ca", &ca, "--cluster-cert", &cert, "--cluster-key", &key]].concat()).unwrap();
    let api = Api::new(&lab);
    let created = eventually(Duration::from_secs(5), || lab.hnsctl(&["network", "create", "-d", "overlay", "--subnet", "10.247.0.0/24", "ov"]).unwrap().status.success());
    assert!(created, "no overlay network over TLS: {}", std::fs::read_to_string(lab.log_path()).unwrap());
    let (_ns, ep) = api.container("ov", "c", json!({}));
    assert!(ip_of(&ep).starts_with("10.247.0."));
    let nodes = lab.hnsctl_ok(&["node", "ls"]).unwrap();
    assert!(nodes.contains("solo (this host)") && nodes.contains("198.51.100.2") && nodes.contains("Up"), "{nodes}");
}

#[test]
fn outbound_goes_through_a_second_endpoint_on_a_nat_network() {
    let h = hosts(2, &[]);
    h.overlay(0, "ov", "10.248.0.0/24");
    h.apis[0].post("/networks", &json!({"Name": "nat", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.249.0.0/24"}]}]})).ok();
    let (w, ew) = h.apis[0].container("ov", "w", json!({}));
    let (p, ep) = h.apis[1].container("ov", "p", json!({}));
    let server = format!("{}:8080", hns_lab::TEST_SERVER);
    let _srv = h.host(0).start_tcp_server_in_lan(&server).unwrap();
    // The overlay endpoint has no way out (and no default route that would hide one).
    let routes = in_ns(h.host(0), &w, "ip", &["route"]).stdout;
    assert!(!routes.contains("default"), "{routes}");
    assert!(!tcp_ok(h.host(0), &w, &server));
    let e = h.apis[0].post("/endpoints", &json!({"HostComputeNetwork": "ov", "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80}}]}));
    assert!(e.status == 400 && e.raw.contains("endpoint on a nat network"), "{}", e.raw);
    // A second endpoint on a nat network takes the default route and is masqueraded.
    h.apis[0].post("/endpoints", &json!({"HostComputeNetwork": "nat", "HostComputeNamespace": w["ID"]})).ok();
    let out = in_ns(h.host(0), &w, &probe(), &["connect-tcp", &server, "--timeout-ms", "2000"]).stdout;
    assert!(out.contains(&format!("peer={}:", hns_lab::HOST_UPLINK)), "outbound through the nat endpoint: {out}");
    // The overlay still works beside it.
    assert!(ping(h.host(0), &w, &ip_of(&ep)), "overlay peer from the two-endpoint container");
    assert!(ping(h.host(1), &p, &ip_of(&ew)));

    // With outbound NAT (created on host1), every host masquerades the network itself.
    h.host(1).hnsctl_ok(&["network", "create", "-d", "overlay", "--outbound-nat", "--subnet", "10.251.0.0/24", "out"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || h.apis[0].get("/networks/out").status == 200));
    assert_eq!(h.apis[0].get("/networks/out").ok()["OutboundNat"], true);
    let (o, _) = h.apis[0].container("out", "o", json!({}));
    assert!(in_ns(h.host(0), &o, "ip", &["route"]).stdout.contains("default via 10.251.0.1"));
    let out = in_ns(h.host(0), &o, &probe(), &["connect-tcp", &server, "--timeout-ms", "2000"]).stdout;
    assert!(out.contains(&format!("peer={}:", hns_lab::HOST_UPLINK)), "outbound NAT on the overlay: {out}");
}

#[test]
fn a_silent_partition_from_etcd_costs_one_request_timeout_then_fails_at_once() {
    let h = hosts(2, &[]);
    h.overlay(0, "ov", "10.252.0.0/24");
    let (a0, _) = h.apis[0].container("ov", "a0", json!({}));
    let (_, e1) = h.apis[1].container("ov", "a1", json!({}));
    // An overlay network without endpoints here, to delete during the partition.
    let made = h.apis[0].post("/networks", &json!({"Name": "ov3", "Type": "Overlay", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.250.0.0/24"}]}]}));
    assert_eq!(made.status, 200, "{}", made.raw);
    // Packets between host0 and etcd vanish: no reset, nothing (a table of the test's own).
    let etcd = hns_lab::cluster::ETCD_IP.to_string();
    h.host(0)
        .host()
        .sh(&format!(
            "set -e
             nft add table inet labcut
             nft add chain inet labcut out '{{ type filter hook output priority 0; }}'
             nft add chain inet labcut in '{{ type filter hook input priority 0; }}'
             nft add rule inet labcut out ip daddr {etcd} drop
             nft add rule inet labcut in ip saddr {etcd} drop"
        ))
        .unwrap();
    let attempt = || {
        let t = Instant::now();
        (h.apis[0].post("/endpoints", &json!({"HostComputeNetwork": "ov"})), t.elapsed())
    };
    // The first attempt waits for etcd's timeout; meanwhile containers on a local nat network
    // come and go on the same host without waiting for it.
    h.apis[0].post("/networks", &json!({"Name": "local", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.253.0.0/24"}]}]})).ok();
    let started = Instant::now();
    let api0 = Api { socket: h.apis[0].socket.clone() };
    let first = std::thread::spawn(move || {
        let r = api0.post("/endpoints", &json!({"HostComputeNetwork": "ov"}));
        (r, started.elapsed())
    });
    // An overlay network create waits for etcd the same way, without the engine lock.
    let api0 = Api { socket: h.apis[0].socket.clone() };
    let network = std::thread::spawn(move || {
        let r = api0.post("/networks", &json!({"Name": "ov2", "Type": "Overlay", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.251.0.0/24"}]}]}));
        (r, started.elapsed())
    });
    // So does an overlay network delete (its cluster step first, an error refuses it).
    let api0 = Api { socket: h.apis[0].socket.clone() };
    let removal = std::thread::spawn(move || (api0.delete("/networks/ov3"), started.elapsed()));
    std::thread::sleep(Duration::from_millis(200));
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        let (ns, ep) = h.apis[0].container("local", &format!("n{i}"), json!({}));
        worst = worst.max(t.elapsed());
        h.apis[0].delete(&format!("/endpoints/{}", ep["ID"].as_str().unwrap())).ok();
        h.apis[0].delete(&format!("/namespaces/{}", ns["ID"].as_str().unwrap())).ok();
    }
    let local_done = started.elapsed();
    // Generous to a noisy machine; a container waiting for etcd would take seconds.
    assert!(worst < Duration::from_millis(1500), "a local container took {worst:?} while etcd was cut off");
    let (first, took) = first.join().unwrap();
    assert!(first.status == 503 && first.raw.contains("etcd is unreachable"), "{}", first.raw);
    assert!(took < Duration::from_millis(4500), "the first attempt took {took:?}");
    assert!(took > Duration::from_millis(1000), "the first attempt did not wait for etcd ({took:?}): the overlap below proves nothing");
    assert!(local_done < took, "local containers finished at {local_done:?}, after the etcd attempt ({took:?}): they waited for it");
    let (net, took) = network.join().unwrap();
    assert!(net.status == 503 && net.raw.contains("etcd is unreachable"), "{}", net.raw);
    assert!(took > Duration::from_millis(1000) && local_done < took, "the network create ({took:?}) did not wait for etcd, or local containers ({local_done:?}) waited for it");
    assert_eq!(h.apis[0].get("/networks/ov2").status, 404, "a network etcd never created was built");
    let (gone, took) = removal.join().unwrap();
    assert!(gone.status == 503 && gone.raw.contains("etcd is unreachable"), "{}", gone.raw);
    assert!(took > Duration::from_millis(1000) && local_done < took, "the network delete ({took:?}) did not wait for etcd, or local containers ({local_done:?}) waited for it");
    assert_eq!(h.apis[0].get("/networks/ov3").status, 200, "a delete etcd refused removed the network here");
    let (second, took) = attempt();
    assert!(second.status == 503 && took < Duration::from_millis(500), "{took:?}: {}", second.raw);
    assert!(ping(h.host(0), &a0, &ip_of(&e1)), "the overlay must keep forwarding");
    h.host(0).host().sh("nft delete table inet labcut").unwrap();
    let back = eventually(Duration::from_secs(40), || attempt().0.status == 200);
    assert!(back, "cluster operations did not come back after the partition healed");
}

/// A network created on another host is built here from the watch without the engine lock:
/// with that kernel step paused, containers on a local network come and go at once; an
/// endpoint on the network being built waits for it, then works.
#[test]
fn a_network_built_from_the_watch_does_not_hold_up_other_requests() {
    const PAUSE: Duration = Duration::from_millis(2500);
    let lab = ClusterLab::new(2).expect("cluster lab");
    let mut args = lab.cluster_args(0);
    args.push("--no-default-network".into());
    let env = vec![("HNSD_FAILPOINT".into(), format!("pause:network-create:{}", PAUSE.as_millis()))];
    let _d0 = lab.hosts()[0].start_hnsd_with(hns_lab::HnsdOptions { args, env, ..Default::default() }).unwrap();
    let _d1 = lab.start_hnsd(1, &["--no-default-network"]).unwrap();
    let (api0, api1) = (Api::new(&lab.hosts()[0]), Api::new(&lab.hosts()[1]));
    // A local network on host0 (its own create pauses too, before the clock starts).
    api0.post("/networks", &json!({"Name": "local", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.253.0.0/24"}]}]})).ok();
    let started = Instant::now();
    api1.post("/networks", &json!({"Name": "ov", "Type": "Overlay", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.252.0.0/24"}]}]})).ok();
    // host0's watch reports it and host0 builds it, paused; its endpoints wait for it.
    assert!(eventually(Duration::from_secs(2), || api0.get("/networks/ov").status == 200), "host0 did not start building the network");
    let socket = api0.socket.clone();
    let waiter = std::thread::spawn(move || {
        let ns = Api { socket: socket.clone() }.post("/namespaces", &json!({})).ok();
        (Api { socket }.post("/endpoints", &json!({"HostComputeNetwork": "ov", "HostComputeNamespace": ns["ID"]})), started.elapsed())
    });
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let t = Instant::now();
        let (ns, ep) = api0.container("local", &format!("n{i}"), json!({}));
        worst = worst.max(t.elapsed());
        api0.delete(&format!("/endpoints/{}", ep["ID"].as_str().unwrap())).ok();
        api0.delete(&format!("/namespaces/{}", ns["ID"].as_str().unwrap())).ok();
    }
    let local_done = started.elapsed();
    assert!(local_done < PAUSE, "the local containers finished at {local_done:?}, after the paused build: the test proves nothing");
    assert!(worst < Duration::from_millis(1000), "a local container took {worst:?} while the overlay network was being built");
    let (ep, took) = waiter.join().unwrap();
    assert_eq!(ep.status, 200, "{}", ep.raw);
    assert!(took >= PAUSE - Duration::from_millis(300), "the endpoint on the network being built did not wait for it ({took:?})");
}

/// SIGKILL between an overlay network's delete in etcd and its local delete: the restart's
/// snapshot no longer has the network, so this host removes it too, and nothing is left.
#[test]
fn sigkill_between_an_overlay_networks_cluster_delete_and_its_local_delete_is_repaired() {
    let lab = ClusterLab::new(1).expect("cluster lab");
    let mut args = lab.cluster_args(0);
    args.push("--no-default-network".into());
    let env = vec![("HNSD_FAILPOINT".into(), "overlay-network-withdrawn".into())];
    let d = lab.hosts()[0].start_hnsd_with(hns_lab::HnsdOptions { args, env, ..Default::default() }).unwrap();
    let host = &lab.hosts()[0];
    let api = Api::new(host);
    let ov = json!({"Name": "ov", "Type": "Overlay", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.252.0.0/24"}]}]});
    // Once hnsd has joined the cluster.
    assert!(eventually(Duration::from_secs(10), || api.post("/networks", &ov).status == 200), "the overlay network was not created");
    let _ = api.delete("/networks/ov");
    assert!(eventually(Duration::from_secs(5), || !d.is_running()), "the failpoint was not reached");
    let left = host.leftovers_in_host().unwrap();
    assert!(left.iter().any(|l| l.starts_with("link ")), "the network's links were gone before the restart: the test proves nothing ({left:?})");
    let _d = lab.start_hnsd(0, &["--no-default-network"]).unwrap();
    assert!(eventually(Duration::from_secs(10), || api.get("/networks/ov").status == 404), "the network deleted from the cluster stayed here");
    let clean = eventually(Duration::from_secs(5), || host.leftovers_in_host().unwrap().is_empty());
    assert!(clean, "left behind: {:?}", host.leftovers_in_host().unwrap());
    // Its name and subnet are free again, here and in the cluster.
    assert!(eventually(Duration::from_secs(10), || api.post("/networks", &ov).status == 200), "the name and subnet were not free again");
}

/// A network created while a host's hnsd was down is built there from the snapshot its watch
/// starts with, and carries traffic between the hosts.
#[test]
fn a_network_created_while_a_host_was_down_is_built_from_its_snapshot() {
    let mut h = hosts(2, &[]);
    h.daemons[0].take().unwrap().stop().unwrap();
    h.host(1).hnsctl_ok(&["network", "create", "-d", "overlay", "--subnet", "10.249.0.0/24", "late"]).unwrap();
    h.daemons[0] = Some(h.lab.start_hnsd(0, &["--no-default-network"]).unwrap());
    assert!(eventually(Duration::from_secs(10), || h.apis[0].get("/networks/late").status == 200), "host0 did not build the network from its snapshot");
    let (_, e1) = h.apis[1].container("late", "b", json!({}));
    let (c0, _) = h.apis[0].container("late", "a", json!({}));
    assert!(ping(h.host(0), &c0, &ip_of(&e1)), "host0 -> host1 on the network built from the snapshot");
}
