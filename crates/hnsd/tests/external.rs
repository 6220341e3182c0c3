//! The external-switch drivers (transparent, l2bridge, l2tunnel) proven at the wire: each
//! network gets its own lab adapter (`eth{n}` plugged into switch `lanbr{n}` of the LAN
//! namespace), and tcpdump on the host's switch port shows which MACs the LAN really sees.

mod common;

use common::*;
use hns_lab::{ExternalUplink, Lab};

fn setup() -> (Lab, hns_lab::Daemon) {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    (lab, d)
}


/// Nothing of hns is left in the host (retired links go in the background, within a second).
fn assert_clean(lab: &Lab) {
    let mut left = Vec::new();
    let clean = eventually(std::time::Duration::from_secs(3), || {
        left = lab.leftovers_in_host().unwrap();
        left.is_empty()
    });
    assert!(clean, "left behind: {left:?}");
}

fn create(lab: &Lab, driver: &str, u: &ExternalUplink, name: &str) {
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", driver, "--subnet", &u.subnet, "--gateway", &u.router.to_string(), "-o", &iface, name]).unwrap();
}

fn run(lab: &Lab, net: &str, name: &str, ip: &str) {
    lab.hnsctl_ok(&["run", "-d", "--net", net, "--name", name, "--ip", ip, "--", "sleep", "300"]).unwrap();
}

fn exec_ok(lab: &Lab, name: &str, args: &[&str]) -> String {
    let mut all = vec!["exec", name, "--"];
    all.extend_from_slice(args);
    lab.hnsctl_ok(&all).unwrap()
}

fn mac_of_endpoint(lab: &Lab, name: &str) -> String {
    let eps = Api::new(lab).get("/endpoints").ok();
    let ep = eps.as_array().unwrap().iter().find(|e| e["Name"] == name).unwrap_or_else(|| panic!("no endpoint {name}: {eps}"));
    ep["MacAddress"].as_str().unwrap().replace('-', ":").to_ascii_lowercase()
}

fn link_mac(lab: &Lab, dev: &str) -> String {
    let out = lab.in_host("ip", &["-o", "link", "show", dev]).unwrap().stdout;
    out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap_or_else(|| panic!("no MAC in {out}")).to_owned()
}

/// The MAC the LAN's router has learned for `ip` on switch `br`.
fn lan_neighbour(lab: &Lab, br: &str, ip: &str) -> String {
    lab.in_lan("ip", &["neigh", "show", ip, "dev", br]).unwrap().stdout
}

/// Source MACs of the captured frames whose text contains `needle`.
fn sources(capture: &str, needle: &str) -> Vec<String> {
    capture.lines().filter(|l| l.contains(needle)).filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned)).collect()
}

#[test]
fn transparent_containers_sit_on_the_lan_with_their_own_mac() {
    let (lab, _d) = setup();
    let u = lab.add_uplink(1, false).unwrap();
    create(&lab, "transparent", &u, "tnet");
    let ip = u.addr(50).to_string();
    run(&lab, "tnet", "web", &ip);
    let mac = mac_of_endpoint(&lab, "web");

    let cap = lab.capture_in_lan(&u.lan_port, "icmp or arp").unwrap();
    // The LAN reaches the container directly at its own address...
    lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", &ip]).unwrap();
    // ...and the container reaches the LAN's gateway.
    exec_ok(&lab, "web", &["ping", "-c1", "-W2", &u.router.to_string()]);
    let wire = cap.stop().unwrap();
    let from_container = sources(&wire, &format!("{ip} > {}", u.router));
    assert!(!from_container.is_empty(), "no frame from the container on the wire:\n{wire}");
    assert!(from_container.iter().all(|m| *m == mac), "container frames carry its own MAC {mac}:\n{wire}");
    assert!(lan_neighbour(&lab, &u.lan_bridge, &ip).contains(&mac), "the LAN resolved the container to its MAC");

    // The host reaches its container and the container the host (through the host leg:
    // a macvlan parent never hears its children).
    lab.in_host("ping", &["-c1", "-w3", "-i0.2", "-W1", &ip]).unwrap();
    exec_ok(&lab, "web", &["ping", "-c1", "-W2", &u.host_ip.to_string()]);
    // The host's own address still resolves to the adapter's MAC on the LAN, not the leg's.
    lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", &u.host_ip.to_string()]).unwrap();
    assert!(lan_neighbour(&lab, &u.lan_bridge, &u.host_ip.to_string()).contains(&link_mac(&lab, &u.host_if)));

    // Removing everything leaves nothing behind.
    lab.hnsctl_ok(&["rm", "-f", "web"]).unwrap();
    let routes = lab.in_host("ip", &["route", "show", &ip]).unwrap().stdout;
    assert!(routes.trim().is_empty(), "the host route to the container went with it: {routes}");
    assert!(lab.in_lan("ping", &["-c1", "-W1", &ip]).is_err(), "the container address is gone");
    lab.hnsctl_ok(&["network", "rm", "tnet"]).unwrap();
    assert_clean(&lab);
}

#[test]
fn transparent_containers_take_ipv6_from_the_lans_router_advertisements() {
    let (lab, _d) = setup();
    let u = lab.add_uplink(5, false).unwrap();
    let _dnsmasq = lab.start_dnsmasq(&u, &[]).unwrap();
    create(&lab, "transparent", &u, "tnet");
    run(&lab, "tnet", "web", &u.addr(60).to_string());
    let prefix = "2001:db8:77:5:";
    let mut shown = String::new();
    let got = eventually(std::time::Duration::from_secs(15), || {
        shown = exec_ok(&lab, "web", &["ip", "-o", "-6", "addr", "show", "eth0", "scope", "global"]);
        shown.contains(prefix)
    });
    assert!(got, "a SLAAC address from the LAN's advertisements: {shown}");
    exec_ok(&lab, "web", &["ping", "-6", "-c1", "-W2", &u.router6.to_string()]);
}

#[test]
fn l2bridge_puts_only_the_host_mac_on_the_wire() {
    let (lab, _d) = setup();
    let u = lab.add_uplink(2, false).unwrap();
    create(&lab, "l2bridge", &u, "l2net");
    let (a, b) = (u.addr(50).to_string(), u.addr(51).to_string());
    run(&lab, "l2net", "a", &a);
    run(&lab, "l2net", "b", &b);
    let host_mac = link_mac(&lab, &u.host_if);

    let cap = lab.capture_in_lan(&u.lan_port, "icmp or arp").unwrap();
    lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", &a]).unwrap();
    exec_ok(&lab, "a", &["ping", "-c1", "-W2", &u.router.to_string()]);
    let wire = cap.stop().unwrap();
    let from_a = sources(&wire, &format!("{a} > {}", u.router));
    assert!(!from_a.is_empty(), "no frame from the container on the wire:\n{wire}");
    assert!(from_a.iter().all(|m| *m == host_mac), "container frames carry the host's MAC {host_mac}:\n{wire}");
    let container_mac = mac_of_endpoint(&lab, "a");
    assert!(!wire.contains(&container_mac), "the container's own MAC never reaches the wire:\n{wire}");
    // Frames for the container arrive at the host's MAC (the LAN resolved it so).
    assert!(lan_neighbour(&lab, &u.lan_bridge, &a).contains(&host_mac), "{}", lan_neighbour(&lab, &u.lan_bridge, &a));

    // Containers of one host meet through the host: one routed hop.
    let ping = exec_ok(&lab, "a", &["ping", "-c1", "-W2", &b]);
    assert!(ping.contains("ttl=63"), "one hop through the host: {ping}");
    lab.in_host("ping", &["-c1", "-w3", "-i0.2", "-W1", &a]).unwrap();

    lab.hnsctl_ok(&["rm", "-f", "a"]).unwrap();
    lab.hnsctl_ok(&["rm", "-f", "b"]).unwrap();
    lab.hnsctl_ok(&["network", "rm", "l2net"]).unwrap();
    assert_clean(&lab);
}

#[test]
fn l2bridge_dual_stack_puts_only_the_host_mac_on_the_wire_for_ipv6_too() {
    let (lab, _d) = setup();
    let u = lab.add_uplink(6, false).unwrap();
    // The host has an address of the LAN's IPv6 subnet, as hosts do (by SLAAC usually; by hand here).
    lab.in_host("ip", &["addr", "add", "2001:db8:77:6::2/64", "dev", &u.host_if, "nodad"]).unwrap();
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&[
        "network", "create", "-d", "l2bridge", "--subnet", &u.subnet, "--gateway", &u.router.to_string(),
        "--subnet", "2001:db8:77:6::/64", "--gateway", &u.router6.to_string(), "-o", &iface, "l2v6",
    ])
    .unwrap();
    let (a6, b6) = ("2001:db8:77:6::50".to_owned(), "2001:db8:77:6::51".to_owned());
    for (name, last, ip6) in [("a", 50u8, &a6), ("b", 51, &b6)] {
        lab.hnsctl_ok(&["run", "-d", "--net", "l2v6", "--name", name, "--ip", &u.addr(last).to_string(), "--ip6", ip6, "--", "sleep", "300"]).unwrap();
    }
    // --ip6 is validated like --ip: taken, outside the subnet, the gateway.
    for (ip6, why) in [(a6.as_str(), "in use"), ("2001:db8:99::5", "outside the subnets"), ("2001:db8:77:6::1", "gateway")] {
        let o = lab.hnsctl(&["run", "-d", "--net", "l2v6", "--name", "bad", "--ip", &u.addr(60).to_string(), "--ip6", ip6, "--", "sleep", "300"]).unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(ip6) && err.contains(why), "--ip6 {ip6}: {err}");
    }
    let host_mac = link_mac(&lab, &u.host_if);

    let cap = lab.capture_in_lan(&u.lan_port, "icmp6").unwrap();
    lab.in_lan("ping", &["-6", "-c1", "-W2", &a6]).unwrap();
    exec_ok(&lab, "a", &["ping", "-6", "-c1", "-W2", &u.router6.to_string()]);
    let wire = cap.stop().unwrap();
    let from_a = sources(&wire, &format!("{a6} > {}", u.router6));
    assert!(!from_a.is_empty(), "no frame from the container on the wire:\n{wire}");
    assert!(from_a.iter().all(|m| *m == host_mac), "container frames carry the host's MAC {host_mac}:\n{wire}");
    assert!(!wire.contains(&mac_of_endpoint(&lab, "a")), "the container's own MAC never reaches the wire:\n{wire}");
    // The LAN resolved the container's address to the host's MAC: a proxy neighbour answer.
    let neigh = lab.in_lan("ip", &["-6", "neigh", "show", &a6, "dev", &u.lan_bridge]).unwrap().stdout;
    assert!(neigh.contains(&host_mac), "{neigh}");

    // TCP both ways across the LAN, and same-host neighbours one routed hop apart.
    let _server = lab.start_tcp_server_in_lan(&format!("[{}]:8086", u.router6)).unwrap();
    let probe = hns_lab::Lab::bin("labprobe").unwrap();
    let out = exec_ok(&lab, "a", &[probe.to_str().unwrap(), "connect-tcp", &format!("[{}]:8086", u.router6)]);
    assert!(out.contains(&a6), "the LAN sees the container's own address: {out}");
    let ping = exec_ok(&lab, "a", &["ping", "-6", "-c1", "-W2", &b6]);
    assert!(ping.contains("ttl=63"), "one hop through the host: {ping}");
    lab.in_host("ping", &["-6", "-c1", "-W2", &a6]).unwrap();

    // Removal takes the proxy entries with it.
    lab.hnsctl_ok(&["rm", "-f", "a"]).unwrap();
    lab.hnsctl_ok(&["rm", "-f", "b"]).unwrap();
    let proxies = lab.in_host("ip", &["-6", "neigh", "show", "proxy", "dev", &u.host_if]).unwrap().stdout;
    assert!(proxies.trim().is_empty(), "proxy NDP entries left: {proxies}");
    lab.hnsctl_ok(&["network", "rm", "l2v6"]).unwrap();
    assert_clean(&lab);
}

#[test]
fn external_networks_never_hand_out_the_hosts_own_address() {
    let (lab, _d) = setup();
    let u = lab.add_uplink(7, false).unwrap();
    create(&lab, "l2bridge", &u, "l2own");
    let host_ip = u.host_ip.to_string();
    // A static request for the host's address is refused, naming it as reserved.
    let o = lab.hnsctl(&["run", "-d", "--net", "l2own", "--name", "thief", "--ip", &host_ip, "--", "sleep", "300"]).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(&host_ip) && err.contains("reserved"), "{err}");
    // Dynamic allocation skips it (it is the first free address of the subnet after the gateway).
    lab.hnsctl_ok(&["run", "-d", "--net", "l2own", "--name", "dyn", "--", "sleep", "300"]).unwrap();
    let eps = Api::new(&lab).get("/endpoints").ok();
    let ep = eps.as_array().unwrap().iter().find(|e| e["Name"] == "dyn").unwrap().clone();
    let got = ep["IpConfigurations"][0]["IpAddress"].as_str().unwrap().to_owned();
    assert_ne!(got, host_ip, "the container was given the host's own address: {ep}");
    // The reservation is visible on the network, and the host keeps its address.
    let net = Api::new(&lab).get("/networks/l2own").ok();
    assert_eq!(net["Ipams"][0]["Subnets"][0]["AuxiliaryAddresses"][&format!("host-{}", u.host_if)], host_ip.as_str(), "{net}");
    lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", &host_ip]).unwrap();
    exec_ok(&lab, "dyn", &["ping", "-c1", "-W2", &u.router.to_string()]);
    lab.hnsctl_ok(&["rm", "-f", "dyn"]).unwrap();
    lab.hnsctl_ok(&["network", "rm", "l2own"]).unwrap();
    assert_clean(&lab);
}

#[test]
fn l2tunnel_hairpins_through_the_upstream_switch() {
    let (lab, d) = setup();
    let u = lab.add_uplink(3, true).unwrap();
    create(&lab, "l2tunnel", &u, "tun");
    let (a, b) = (u.addr(50).to_string(), u.addr(51).to_string());
    run(&lab, "tun", "a", &a);
    run(&lab, "tun", "b", &b);

    // Two containers of one host: their packets are seen on the upstream switch port.
    let cap = lab.capture_in_lan(&u.lan_port, "icmp").unwrap();
    exec_ok(&lab, "a", &["ping", "-c1", "-W2", &b]);
    let wire = cap.stop().unwrap();
    assert!(wire.contains(&format!("{a} > {b}")) && wire.contains(&format!("{b} > {a}")), "sibling traffic went through the switch:\n{wire}");
    assert!(sources(&wire, &format!("{a} > {b}")).iter().all(|m| *m == mac_of_endpoint(&lab, "a")), "own MACs on the wire:\n{wire}");

    // So policy in the switch applies: a drop rule there cuts the two apart.
    lab.in_lan(
        "nft",
        &["add table bridge upstream; add chain bridge upstream relay { type filter hook forward priority 0; }; add rule bridge upstream relay ip saddr", &a, "ip daddr", &b, "drop"],
    )
    .unwrap();
    let o = lab.hnsctl(&["exec", "a", "--", "ping", "-c1", "-W1", &b]).unwrap();
    assert!(!o.status.success(), "the switch's drop rule applies to sibling traffic");
    // Without hairpin on the switch port, VEPA siblings cannot meet at all.
    lab.in_lan("nft", &["delete table bridge upstream"]).unwrap();
    exec_ok(&lab, "a", &["ping", "-c1", "-W2", &b]);
    lab.in_lan("ip", &["link", "set", &u.lan_port, "type", "bridge_slave", "hairpin", "off"]).unwrap();
    let o = lab.hnsctl(&["exec", "a", "--", "ping", "-c1", "-W1", &b]).unwrap();
    assert!(!o.status.success(), "no hairpin upstream, no path between siblings");
    lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", &a]).unwrap();

    // A restart keeps it; removal leaves nothing.
    d.stop().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", &b]).unwrap();
    lab.hnsctl_ok(&["rm", "-f", "a"]).unwrap();
    lab.hnsctl_ok(&["rm", "-f", "b"]).unwrap();
    lab.hnsctl_ok(&["network", "rm", "tun"]).unwrap();
    assert_clean(&lab);
}

#[test]
fn external_networks_refuse_bad_requests_and_change_nothing() {
    let (lab, _d) = setup();
    let u = lab.add_uplink(4, false).unwrap();
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    let gw = u.router.to_string();
    let before = Api::new(&lab).snapshot();
    fails_with(&lab, &["network", "create", "-d", "l2bridge", "-o", &iface, "x"], "give its --subnet and --gateway");
    fails_with(&lab, &["network", "create", "-d", "l2bridge", "--subnet", &u.subnet, "-o", &iface, "x"], "needs the LAN's gateway");
    fails_with(&lab, &["network", "create", "-d", "transparent", "--subnet", &u.subnet, "--gateway", &gw, "-o", "com.docker.network.windowsshim.interface=nope0", "x"], "\"nope0\" does not exist");
    fails_with(&lab, &["network", "create", "-d", "transparent", "--subnet", &u.subnet, "--gateway", &gw, "-o", "com.docker.network.windowsshim.interface=eth4,eth0", "x"], "bonding");
    for bad in ["0", "4095", "5000"] {
        let opt = format!("com.docker.network.windowsshim.vlanid={bad}");
        fails_with(&lab, &["network", "create", "-d", "transparent", "--subnet", &u.subnet, "--gateway", &gw, "-o", &iface, "-o", &opt, "x"], "1-4094");
    }
    fails_with(&lab, &["network", "create", "-d", "transparent", "--subnet", &u.subnet, "--gateway", &gw, "-o", &iface, "-o", "com.docker.network.windowsshim.vlanid=42", "x"], "8021q");
    fails_with(&lab, &["network", "create", "-d", "none", "x"], "--net none");
    assert_eq!(Api::new(&lab).snapshot(), before, "refused requests change nothing");

    // One external network per adapter: the seeds' rule, named.
    create(&lab, "transparent", &u, "first");
    fails_with(&lab, &["network", "create", "-d", "l2bridge", "--subnet", "10.78.0.0/24", "--gateway", "10.78.0.1", "-o", &iface, "second"], "must each use their own network adapter");
    // A static address outside the LAN's subnet.
    fails_with(&lab, &["run", "--rm", "--net", "first", "--ip", "10.78.0.5", "--", "true"], "outside the subnets");
    // Port mappings are a nat feature.
    fails_with(&lab, &["run", "--rm", "--net", "first", "-p", "8080:80", "--", "true"], "port mappings are for nat networks");
    let a = Api::new(&lab);
    let r = a.post("/networks", &serde_json::json!({"Name": "dns", "Type": "L2Bridge", "Policies": [{"Type": "AutomaticDNS", "Settings": {"Enable": true}}]}));
    assert_eq!(r.status, 400, "{}", r.raw);
    // Without an adapter named, the default route's adapter is taken (eth0 in the lab).
    let r = a.post("/networks", &serde_json::json!({"Name": "dflt", "Type": "Transparent", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.79.0.0/24", "Routes": [{"NextHop": "10.79.0.1", "DestinationPrefix": "0.0.0.0/0"}]}]}]}));
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.raw.contains("\"NetworkAdapterName\":\"eth0\""), "{}", r.raw);
}

#[test]
fn the_reconciler_repairs_external_networks_and_a_restart_keeps_them() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let t = lab.add_uplink(6, false).unwrap();
    let b = lab.add_uplink(7, false).unwrap();
    create(&lab, "transparent", &t, "tnet");
    create(&lab, "l2bridge", &b, "l2net");
    let (tip, bip) = (t.addr(50).to_string(), b.addr(50).to_string());
    run(&lab, "tnet", "t", &tip);
    run(&lab, "l2net", "b", &bip);

    // Someone deletes the container's macvlan, the host leg, and the l2bridge veth.
    exec_ok(&lab, "t", &["ip", "link", "del", "eth0"]);
    let leg = lab.in_host("ip", &["-o", "link", "show", "type", "macvlan"]).unwrap().stdout;
    let leg = leg.split(": ").nth(1).unwrap().split('@').next().unwrap().to_owned();
    lab.in_host("ip", &["link", "del", &leg]).unwrap();
    let veth = lab.in_host("ip", &["-o", "link", "show", "type", "veth"]).unwrap().stdout;
    let veth = veth.lines().find(|l| l.contains(": hnv")).unwrap().split(": ").nth(1).unwrap().split('@').next().unwrap().to_owned();
    lab.in_host("ip", &["link", "del", &veth]).unwrap();
    // The reconciler (every second in the lab) puts everything back.
    assert!(eventually(std::time::Duration::from_secs(10), || lab.in_lan("ping", &["-c1", "-W1", &tip]).is_ok() && lab.in_host("ping", &["-c1", "-W1", &tip]).is_ok()));
    assert!(eventually(std::time::Duration::from_secs(10), || lab.in_lan("ping", &["-c1", "-W1", &bip]).is_ok()));

    // A restart of hnsd leaves the data plane alone and keeps managing it.
    d.stop().unwrap();
    lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", &tip]).unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", &bip]).unwrap();
    lab.hnsctl_ok(&["rm", "-f", "t"]).unwrap();
    lab.hnsctl_ok(&["rm", "-f", "b"]).unwrap();
    lab.hnsctl_ok(&["network", "rm", "tnet"]).unwrap();
    lab.hnsctl_ok(&["network", "rm", "l2net"]).unwrap();
    assert_clean(&lab);
}

/// The lease line of `mac` in dnsmasq's lease file: "expiry mac ip hostname id".
fn lease_of(leases: &std::path::Path, mac: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(leases).unwrap();
    text.lines().find(|l| l.contains(mac)).map(|l| l.split_whitespace().map(str::to_owned).collect())
}

/// The DHCPv6 lease line of the container with `mac` (its DUID-LL, `00:03:00:01:<mac>`) in
/// dnsmasq's lease file: "expiry iaid ip hostname duid".
fn lease6_of(leases: &std::path::Path, mac: &str) -> Option<Vec<String>> {
    lease_of(leases, &format!(" 00:03:00:01:{mac}"))
}

#[test]
fn transparent_dhcpv6_leases_renews_and_releases_for_the_container() {
    let (lab, _d) = setup();
    let u = lab.add_uplink(9, false).unwrap();
    // DHCPv6 from 2001:db8:77:9::100-1ff with dnsmasq's shortest lease, 2 minutes (T1 = 60 s);
    // its advertisements then carry the M flag.
    let (_dnsmasq, leases) = lab.start_dnsmasq(&u, &["--dhcp-range=2001:db8:77:9::100,2001:db8:77:9::1ff,64,2m"]).unwrap();
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", "transparent", "-o", &iface, "dnet6"]).unwrap();
    lab.hnsctl_ok(&["run", "-d", "--net", "dnet6", "--name", "c6", "--", "sleep", "300"]).unwrap();
    let mac = mac_of_endpoint(&lab, "c6");

    // The lease comes in the background: the endpoint shows it as a /128 beside the IPv4 lease.
    let v6_of = |ep: &serde_json::Value| {
        ep["IpConfigurations"].as_array().unwrap().iter().find(|c| c["IpAddress"].as_str().unwrap().contains(':')).cloned()
    };
    let mut ep = serde_json::Value::Null;
    let got = eventually(std::time::Duration::from_secs(20), || {
        ep = Api::new(&lab).get("/endpoints").ok()[0].clone();
        v6_of(&ep).is_some()
    });
    assert!(got, "the endpoint shows a DHCPv6 address: {ep}");
    let conf = v6_of(&ep).unwrap();
    assert_eq!(conf["PrefixLength"], 128, "{ep}");
    let ip6: std::net::Ipv6Addr = conf["IpAddress"].as_str().unwrap().parse().unwrap();
    let s = ip6.segments();
    assert!(s[..4] == [0x2001, 0xdb8, 0x77, 9] && s[4..7] == [0, 0, 0] && (0x100..=0x1ff).contains(&s[7]), "an address from the range: {ep}");
    assert!(ip_of(&ep).starts_with("10.77.9."), "the DHCPv4 lease is still first: {ep}");

    // dnsmasq leased it to the container's DUID, and the container has it and uses it.
    let line = lease6_of(&leases, &mac).unwrap_or_else(|| panic!("dnsmasq has no DHCPv6 lease for DUID-LL {mac}: {}", std::fs::read_to_string(&leases).unwrap()));
    assert_eq!(line[2], ip6.to_string(), "the server leased that address to the container's DUID");
    let shown = exec_ok(&lab, "c6", &["ip", "-o", "-6", "addr", "show", "eth0"]);
    assert!(shown.contains(&format!("{ip6}/128")), "the compartment has the /128: {shown}");
    // Its routes come from the LAN's router advertisements (dnsmasq's may take a few seconds).
    let mut routes = String::new();
    let routed = eventually(std::time::Duration::from_secs(15), || {
        routes = exec_ok(&lab, "c6", &["ip", "-6", "route", "show", "default"]);
        !routes.trim().is_empty()
    });
    assert!(routed, "an IPv6 default route from the advertisements: {routes}");
    lab.in_lan("ping", &["-6", "-c1", "-W2", &ip6.to_string()]).unwrap();

    // Renewal before expiry, from the container's interface, at T1.
    let expiry: u64 = line[0].parse().unwrap();
    let renewed = eventually(std::time::Duration::from_secs(75), || lease6_of(&leases, &mac).is_some_and(|l| l[0].parse::<u64>().unwrap() >= expiry + 30));
    assert!(renewed, "the lease was renewed before expiry: {:?}", lease6_of(&leases, &mac));
    assert_eq!(v6_of(&Api::new(&lab).get("/endpoints").ok()[0]).unwrap(), conf, "a renewal keeps the address");
    lab.in_lan("ping", &["-6", "-c1", "-W2", &ip6.to_string()]).unwrap();

    // Removing the container releases the lease.
    lab.hnsctl_ok(&["rm", "-f", "c6"]).unwrap();
    assert!(eventually(std::time::Duration::from_secs(3), || lease6_of(&leases, &mac).is_none()), "released: {:?}", lease6_of(&leases, &mac));
    lab.hnsctl_ok(&["network", "rm", "dnet6"]).unwrap();
    assert_clean(&lab);
}

#[test]
fn transparent_dhcp_leases_renews_and_releases_for_the_container() {
    let (lab, d) = setup();
    let u = lab.add_uplink(8, false).unwrap();
    let (_dnsmasq, leases) = lab.start_dnsmasq(&u, &[]).unwrap();
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", "transparent", "-o", &iface, "dnet"]).unwrap();
    let net: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["network", "inspect", "dnet"]).unwrap()).unwrap();
    assert_eq!(net[0]["Ipams"][0]["Type"], "Dhcp", "no subnet given: DHCP: {net}");
    lab.hnsctl_ok(&["run", "-d", "--net", "dnet", "--name", "c1", "--", "sleep", "300"]).unwrap();

    // The endpoint shows what the LAN's server gave: address, gateway, DNS.
    let eps = Api::new(&lab).get("/endpoints").ok();
    let ep = eps[0].clone();
    let ip = ip_of(&ep);
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!(ip.starts_with("10.77.8.") && (100..200).contains(&last), "{ep}");
    assert_eq!(ep["Routes"][0]["NextHop"], u.router.to_string(), "{ep}");
    assert_eq!(ep["Dns"]["ServerList"][0], u.router.to_string(), "{ep}");
    let mac = mac_of_endpoint(&lab, "c1");
    let line = lease_of(&leases, &mac).unwrap_or_else(|| panic!("dnsmasq has no lease for {mac}"));
    assert_eq!(line[2], ip, "the server leased that address to the container's MAC");
    assert_eq!(line[3], "c1", "the endpoint name goes out as the host name");

    // The container uses it: the LAN reaches it, it reaches the LAN, its resolv.conf names the server.
    lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", &ip]).unwrap();
    exec_ok(&lab, "c1", &["ping", "-c1", "-W2", &u.router.to_string()]);
    assert!(exec_ok(&lab, "c1", &["cat", "/etc/resolv.conf"]).contains(&format!("nameserver {}", u.router)));

    // hnsd restarts: the lease is resumed (same address), not replaced.
    d.stop().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let ep2 = Api::new(&lab).get("/endpoints").ok()[0].clone();
    assert_eq!(ip_of(&ep2), ip);
    lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", &ip]).unwrap();

    // Renewal before expiry: dnsmasq's shortest lease is 120 s, renewed at T1 = 60 s.
    let expiry: u64 = line[0].parse().unwrap();
    let renewed = eventually(std::time::Duration::from_secs(75), || lease_of(&leases, &mac).is_some_and(|l| l[0].parse::<u64>().unwrap() >= expiry + 30));
    assert!(renewed, "the lease was renewed before expiry: {:?}", lease_of(&leases, &mac));
    lab.in_lan("ping", &["-c1", "-w3", "-i0.2", "-W1", &ip]).unwrap();

    // Removing the container releases the lease.
    lab.hnsctl_ok(&["rm", "-f", "c1"]).unwrap();
    assert!(eventually(std::time::Duration::from_secs(3), || lease_of(&leases, &mac).is_none()), "released: {:?}", lease_of(&leases, &mac));
    // A static --ip on a DHCP network is refused by name.
    fails_with(&lab, &["run", "--rm", "--net", "dnet", "--ip", "10.77.8.5", "--", "true"], "DHCP server");
    lab.hnsctl_ok(&["network", "rm", "dnet"]).unwrap();
    assert_clean(&lab);
}
