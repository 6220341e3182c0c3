//! hnsctl drives hnsd: the Docker-style verbs of the README, run in the lab host.

mod common;

use common::*;
use hns_lab::Lab;

fn setup() -> (Lab, hns_lab::Daemon) {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&[]).unwrap();
    (lab, d)
}


#[test]
fn network_create_ls_inspect_rm() {
    let (lab, _d) = setup();
    let id = lab
        .hnsctl_ok(&["network", "create", "-d", "nat", "--subnet", "10.70.0.0/24", "--gateway", "10.70.0.254", "--ip-range", "10.70.0.128/25", "--aux-address", "printer=10.70.0.200", "-o", "com.docker.network.windowsshim.dnssuffix=corp.example", "web"])
        .unwrap();
    assert_eq!(id.trim().len(), 36, "prints the new ID: {id:?}");
    let ls = lab.hnsctl_ok(&["network", "ls"]).unwrap();
    assert!(ls.lines().next().unwrap().contains("NETWORK ID") && ls.contains("web") && ls.contains("10.70.0.0/24") && ls.contains("10.70.0.254"), "{ls}");
    let inspect: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["network", "inspect", "web"]).unwrap()).unwrap();
    let subnet = &inspect[0]["Ipams"][0]["Subnets"][0];
    assert_eq!(subnet["IpRange"], "10.70.0.128/25");
    assert_eq!(subnet["AuxiliaryAddresses"]["printer"], "10.70.0.200");
    assert_eq!(inspect[0]["Dns"]["Domain"], "corp.example");
    // Dynamic addresses come from the range.
    let out = lab.hnsctl_ok(&["run", "--net", "web", "--rm", "--", "ip", "-o", "-4", "addr", "show", "eth0"]).unwrap();
    assert!(out.contains("10.70.0.128/24") || out.contains("10.70.0.129/24"), "{out}");
    fails_with(&lab, &["network", "create", "--subnet", "10.71.0.0/40", "bad"], "INVALID_SUBNET");
    fails_with(&lab, &["network", "create", "--subnet", "10.70.0.0/16", "clash"], "overlaps");
    lab.hnsctl_ok(&["network", "rm", "web"]).unwrap();
    assert!(!lab.hnsctl_ok(&["network", "ls"]).unwrap().contains("web"));
    fails_with(&lab, &["network", "rm", "web"], "NETWORK_NOT_FOUND");
}

#[test]
fn run_exec_ps_rm_like_docker() {
    let (lab, _d) = setup();
    let id = lab.hnsctl_ok(&["run", "-d", "--net", "nat", "--name", "web", "--", "sleep", "300"]).unwrap();
    assert!(!id.trim().is_empty());
    let ps = lab.hnsctl_ok(&["ps"]).unwrap();
    assert!(ps.contains("web") && ps.contains("running") && ps.contains("sleep"), "{ps}");
    let ep: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["--format", "json", "endpoint", "inspect", "web"]).unwrap()).unwrap();
    let ip = ip_of(&ep[0]);
    let addr = lab.hnsctl_ok(&["exec", "web", "--", "ip", "-o", "-4", "addr", "show", "eth0"]).unwrap();
    assert!(addr.contains(&ip), "{addr}");
    let resolv = lab.hnsctl_ok(&["exec", "web", "cat", "/etc/resolv.conf"]).unwrap();
    assert!(resolv.contains("Written by hnsd"), "exec must see the compartment's resolv.conf: {resolv}");
    // A second container reaches the first by IP.
    lab.hnsctl_ok(&["run", "--rm", "--net", "nat", "--", "ping", "-c1", "-W2", &ip]).unwrap();
    fails_with(&lab, &["rm", "web"], "running");
    lab.hnsctl_ok(&["rm", "-f", "web"]).unwrap();
    assert_eq!(Api::new(&lab).get("/namespaces").ok(), serde_json::json!([]));
    assert_eq!(Api::new(&lab).get("/endpoints").ok(), serde_json::json!([]));
}

#[test]
fn run_rm_cleans_up_and_returns_the_exit_code() {
    let (lab, _d) = setup();
    let o = lab.hnsctl(&["run", "--rm", "--net", "nat", "--", "sh", "-c", "exit 7"]).unwrap();
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(Api::new(&lab).get("/namespaces").ok(), serde_json::json!([]));
    lab.hnsctl_ok(&["run", "--rm", "--net", "nat", "--", "ping", "-c1", "-W2", "203.0.113.10"]).unwrap();
}

#[test]
fn none_and_host_modes() {
    let (lab, _d) = setup();
    let links = lab.hnsctl_ok(&["run", "--rm", "--net", "none", "--", "ip", "-o", "link"]).unwrap();
    assert_eq!(links.lines().count(), 1, "--net none: loopback only: {links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    let host = lab.hnsctl_ok(&["run", "--net", "host", "--", "ip", "-o", "-4", "addr", "show", "eth0"]).unwrap();
    assert!(host.contains("198.51.100.2"), "--net host runs in the host namespace: {host}");
}

#[test]
fn connect_and_disconnect_a_running_container() {
    let (lab, _d) = setup();
    lab.hnsctl_ok(&["network", "create", "--subnet", "10.72.0.0/24", "second"]).unwrap();
    lab.hnsctl_ok(&["run", "-d", "--net", "nat", "--name", "app", "--", "sleep", "300"]).unwrap();
    lab.hnsctl_ok(&["network", "connect", "--ip", "10.72.0.50", "second", "app"]).unwrap();
    let a = lab.hnsctl_ok(&["exec", "app", "--", "ip", "-o", "-4", "addr", "show", "eth1"]).unwrap();
    assert!(a.contains("10.72.0.50/24"), "{a}");
    lab.hnsctl_ok(&["exec", "app", "--", "ping", "-c1", "-W2", "10.72.0.1"]).unwrap();
    lab.hnsctl_ok(&["network", "disconnect", "second", "app"]).unwrap();
    // At once, not when the reaper deletes the retired veth: the old address is gone.
    let addrs = lab.hnsctl_ok(&["exec", "app", "--", "ip", "-o", "addr"]).unwrap();
    assert!(!addrs.contains("10.72.0.50"), "the disconnected address is still visible: {addrs}");
    let links = lab.hnsctl_ok(&["exec", "app", "--", "ip", "-o", "link"]).unwrap();
    assert!(!links.contains("eth1"), "{links}");
    assert!(lab.hnsctl_ok(&["ps"]).unwrap().contains("running"));
}

#[test]
fn connect_an_existing_namespace_by_path() {
    let (lab, _d) = setup();
    let (_p, path) = netns_process(&lab);
    lab.hnsctl_ok(&["network", "connect", "nat", "--netns", &path, "--name", "outside"]).unwrap();
    let ep: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["--format", "json", "endpoint", "inspect", "outside"]).unwrap()).unwrap();
    let o = lab.in_host("nsenter", &[&format!("--net={path}"), "ping", "-c1", "-W2", "203.0.113.10"]);
    assert!(o.is_ok(), "attached namespace has no egress: {o:?}; endpoint {ep}");
}

#[test]
fn processes_keep_running_across_an_hnsd_restart() {
    let (lab, d) = setup();
    lab.hnsctl_ok(&["run", "-d", "--net", "nat", "--name", "keep", "--", "sleep", "300"]).unwrap();
    d.stop().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let ps = lab.hnsctl_ok(&["ps"]).unwrap();
    assert!(ps.contains("keep") && ps.contains("running"), "{ps}");
    lab.hnsctl_ok(&["exec", "keep", "--", "ping", "-c1", "-W2", "203.0.113.10"]).unwrap();
}

#[test]
fn info_version_and_help() {
    let (lab, _d) = setup();
    let info = lab.hnsctl_ok(&["info"]).unwrap();
    assert!(info.contains("hns.redb") && info.to_lowercase().contains("nftables"), "{info}");
    let help = lab.hnsctl_ok(&["--help"]).unwrap();
    for cmdlet in ["New-ContainerNetwork", "Get-ContainerNetwork", "Remove-ContainerNetwork", "Join-ContainerNetwork", "Leave-ContainerNetwork"] {
        assert!(help.contains(cmdlet), "--help lacks {cmdlet}");
    }
    let v = lab.hnsctl_ok(&["version"]).unwrap();
    assert!(v.contains("15.4") || v.contains("15"), "{v}");
    // A foreign firewall that drops forwarded traffic is named in a warning.
    lab.in_host("nft", &["add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }"]).unwrap();
    let info = lab.hnsctl_ok(&["info"]).unwrap();
    assert!(info.contains("WARNING") && info.contains("filter FORWARD") && info.contains("policy drop"), "{info}");
    let dead = std::process::Command::new(Lab::bin("hnsctl").unwrap()).args(["--socket", "/tmp/nonexistent-hns.sock", "network", "ls"]).output().unwrap();
    assert!(!dead.status.success() && String::from_utf8_lossy(&dead.stderr).contains("cannot reach hnsd"));
}

#[test]
fn publish_ports_like_docker_and_manage_them() {
    let (lab, _d) = setup();
    let run = lab.hnsctl(&["run", "-d", "--net", "nat", "--name", "web", "-p", "8080:80", "-p", "127.0.0.1::81/udp", "-p", "9000-9001:90-91", "--", "sleep", "300"]).unwrap();
    assert!(run.status.success(), "{run:?}");
    // stdout is the ID alone (ID=$(hnsctl run -d ...)); the mappings go to stderr.
    let id = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(id.ends_with('\n') && id.trim().len() == 36 && id.lines().count() == 1, "stdout must be the ID only: {id:?}");
    let out = String::from_utf8_lossy(&run.stderr).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"80/tcp -> 0.0.0.0:8080"), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("81/udp -> 127.0.0.1:")), "{out}");
    assert!(lines.contains(&"90/tcp -> 0.0.0.0:9000") && lines.contains(&"91/tcp -> 0.0.0.0:9001"), "{out}");
    let ls = lab.hnsctl_ok(&["port", "ls", "web"]).unwrap();
    assert!(ls.lines().next().unwrap().contains("EXTERNAL PORT") && ls.lines().count() == 5, "{ls}");
    // A server in the container, reached from the LAN through the mapping.
    let probe = Lab::bin("labprobe").unwrap();
    let _srv = lab.spawn_in_host(Lab::bin("hnsctl").unwrap().to_str().unwrap(), &["--socket", lab.socket().to_str().unwrap(), "exec", "web", "--", probe.to_str().unwrap(), "serve-tcp", "0.0.0.0:80"]).unwrap();
    assert!(eventually(std::time::Duration::from_secs(5), || lab.probe(hns_lab::Side::Lan, &["connect-tcp", "198.51.100.2:8080"]).unwrap().status.success()));
    lab.hnsctl_ok(&["port", "add", "web", "8443:80"]).unwrap();
    assert!(lab.probe(hns_lab::Side::Lan, &["connect-tcp", "198.51.100.2:8443"]).unwrap().status.success());
    assert_eq!(lab.hnsctl_ok(&["port", "rm", "web", "8443:80"]).unwrap(), "removed 80/tcp -> 0.0.0.0:8443\n");
    assert!(!lab.probe(hns_lab::Side::Lan, &["connect-tcp", "198.51.100.2:8443", "--timeout-ms", "1000"]).unwrap().status.success());
    fails_with(&lab, &["run", "--net", "nat", "-p", "70000:80", "--", "true"], "70000");
    fails_with(&lab, &["run", "--net", "nat", "-p", "8000-8002:80-81", "--", "true"], "container range");
    fails_with(&lab, &["run", "--net", "nat", "-p", "8080:80", "--", "true"], "PORT_ALREADY_EXISTS");
    fails_with(&lab, &["run", "--net", "nat", "-p", "192.0.2.77:80:80", "--", "true"], "not an address of this host");
    lab.hnsctl_ok(&["rm", "-f", "web"]).unwrap();
    assert_eq!(Api::new(&lab).get("/portmappings").ok(), serde_json::json!([]), "removing the container removes its mappings");
}

/// A dual-stack nat network made through the CLI, as its help says (two --subnet).
fn dual_stack(lab: &Lab, name: &str, v4: &str, v6: &str) {
    lab.hnsctl_ok(&["network", "create", "-d", "nat", "--subnet", v4, "--subnet", v6, name]).unwrap();
}

fn stdout_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn ps_shows_running_containers_with_their_ports_and_a_shows_all() {
    let (lab, _d) = setup();
    dual_stack(&lab, "ds", "10.73.0.0/24", "fd00:73::/64");
    lab.hnsctl_ok(&["run", "-d", "--net", "ds", "--name", "web", "-p", "8080:80", "-p", "127.0.0.1:5353:53/udp", "--", "sleep", "300"]).unwrap();
    lab.hnsctl_ok(&["run", "-d", "--net", "nat", "--name", "gone", "--", "true"]).unwrap();
    lab.hnsctl_ok(&["namespace", "create", "--name", "idle"]).unwrap();
    let all = || lab.hnsctl_ok(&["ps", "-a"]).unwrap();
    assert!(eventually(std::time::Duration::from_secs(5), || all().lines().any(|l| l.contains("gone") && l.contains("exited"))), "{}", all());
    let ps = lab.hnsctl_ok(&["ps"]).unwrap();
    let header = ps.lines().next().unwrap();
    assert!(header.contains("PORTS") && header.contains("NAMES"), "{ps}");
    let web = ps.lines().find(|l| l.contains("web")).unwrap_or_else(|| panic!("{ps}"));
    assert!(web.contains("running") && web.contains("0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 127.0.0.1:5353->53/udp"), "{ps}");
    assert!(!ps.contains("gone") && !ps.contains("idle"), "ps lists running containers only: {ps}");
    let all = all();
    assert!(all.lines().any(|l| l.contains("idle") && l.contains("created")), "{all}");
    // A template of the same columns.
    assert_eq!(lab.hnsctl_ok(&["ps", "--format", "{{.Names}} {{.Status}} {{.Ports}}"]).unwrap(), "web running 0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 127.0.0.1:5353->53/udp\n");
    let json: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["--format", "json", "ps"]).unwrap()).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{json}");
    // What PORTS says is what the kernel does: the mapping answers on both families.
    let probe = Lab::bin("labprobe").unwrap();
    let _srv = lab.spawn_in_host(Lab::bin("hnsctl").unwrap().to_str().unwrap(), &["--socket", lab.socket().to_str().unwrap(), "exec", "web", "--", probe.to_str().unwrap(), "serve-tcp", "[::]:80"]).unwrap();
    let v6 = format!("[{}]:8080", hns_lab::HOST_UPLINK_V6);
    assert!(eventually(std::time::Duration::from_secs(5), || lab.probe(hns_lab::Side::Lan, &["connect-tcp", &v6]).unwrap().status.success()), "[::]:8080 from the LAN");
    assert!(lab.probe(hns_lab::Side::Lan, &["connect-tcp", "198.51.100.2:8080"]).unwrap().status.success(), "0.0.0.0:8080 from the LAN");
}

#[test]
fn port_container_prints_like_docker_port_and_run_d_prints_only_the_id() {
    let (lab, _d) = setup();
    dual_stack(&lab, "ds", "10.74.0.0/24", "fd00:74::/64");
    let bound6 = format!("[{}]:9443:443", hns_lab::HOST_UPLINK_V6);
    let run = lab.hnsctl(&["run", "-d", "--net", "ds", "--name", "web", "-p", "8080:80", "-p", "127.0.0.1:5353:53/udp", "-p", &bound6, "--", "sleep", "300"]).unwrap();
    assert!(run.status.success(), "{run:?}");
    let id = stdout_of(&run);
    assert_eq!(id.lines().count(), 1, "stdout must be the ID only: {id:?}");
    let ns: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["namespace", "inspect", "web"]).unwrap()).unwrap();
    assert_eq!(id.trim(), ns[0]["ID"].as_str().unwrap());
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    let v6_line = format!("443/tcp -> [{}]:9443", hns_lab::HOST_UPLINK_V6);
    let expected = ["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080", "53/udp -> 127.0.0.1:5353", v6_line.as_str()];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "the mappings, both families, on stderr");
    // docker port CONTAINER [PRIVATE_PORT[/PROTO]]
    assert_eq!(lab.hnsctl_ok(&["port", "web"]).unwrap(), expected.map(|l| format!("{l}\n")).concat());
    assert_eq!(lab.hnsctl_ok(&["port", "web", "80"]).unwrap(), "0.0.0.0:8080\n[::]:8080\n");
    assert_eq!(lab.hnsctl_ok(&["port", "web", "53/udp"]).unwrap(), "127.0.0.1:5353\n");
    fails_with(&lab, &["port", "web", "53"], "no public port 53/tcp published for web");
    fails_with(&lab, &["port", "ghost"], "no container (namespace) or endpoint named ghost");
    fails_with(&lab, &["port", "web", "80/sctp"], "protocol sctp is not supported");
    let json: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["--format", "json", "port", "web", "80"]).unwrap()).unwrap();
    assert_eq!(json, serde_json::json!([{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}, {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]));
    // The subcommands keep working beside it; a container named like one is reached after `--`.
    assert!(lab.hnsctl_ok(&["port", "ls", "web"]).unwrap().lines().next().unwrap().contains("EXTERNAL PORT"));
    assert_eq!(lab.hnsctl_ok(&["port", "add", "web", "8443:80"]).unwrap(), "80/tcp -> 0.0.0.0:8443\n80/tcp -> [::]:8443\n");
    assert_eq!(lab.hnsctl_ok(&["port", "rm", "web", "8443:80"]).unwrap(), "removed 80/tcp -> 0.0.0.0:8443\nremoved 80/tcp -> [::]:8443\n");
    lab.hnsctl_ok(&["run", "-d", "--net", "nat", "--name", "ls", "-p", "8181:81", "--", "sleep", "300"]).unwrap();
    assert_eq!(lab.hnsctl_ok(&["port", "--", "ls"]).unwrap(), "81/tcp -> 0.0.0.0:8181\n");
    // The help's IPv6 form works with an address of the host; ::1 is refused by name.
    fails_with(&lab, &["run", "--net", "ds", "-p", "[::1]:8088:80", "--", "true"], "::1 cannot be mapped");
    let help = lab.hnsctl_ok(&["run", "--help"]).unwrap();
    assert!(!help.contains("[::1]:8080:80") && help.contains("[2001:db8::10]:8080:80"), "{help}");
}

#[test]
fn network_ls_shows_dns_and_internal_and_takes_templates() {
    let (lab, _d) = setup();
    lab.hnsctl_ok(&[
        "network", "create", "--subnet", "10.75.0.0/24", "--internal",
        "-o", "com.docker.network.windowsshim.dnsservers=10.75.0.53,10.75.0.54",
        "-o", "com.docker.network.windowsshim.dnssuffix=corp.example", "corp",
    ])
    .unwrap();
    let ls = lab.hnsctl_ok(&["network", "ls"]).unwrap();
    let header = ls.lines().next().unwrap();
    for column in ["INTERNAL", "DNS SERVERS", "DNS SUFFIX"] {
        assert!(header.contains(column), "{ls}");
    }
    let corp = ls.lines().find(|l| l.contains("corp")).unwrap();
    assert!(corp.contains("true") && corp.contains("10.75.0.53,10.75.0.54") && corp.contains("corp.example"), "{ls}");
    let line = lab.hnsctl_ok(&["network", "ls", "--format", r"{{.Name}}\t{{.Driver}}\t{{.Subnet}}\t{{.Internal}}\t{{.DNSServers}}\t{{.DNSSuffix}}"]).unwrap();
    assert!(line.lines().any(|l| l == "corp\tnat\t10.75.0.0/24\ttrue\t10.75.0.53,10.75.0.54\tcorp.example"), "{line:?}");
    assert!(line.lines().any(|l| l.starts_with("nat\tnat\t") && l.contains("\tfalse\t")), "the default network: {line:?}");
    let table = lab.hnsctl_ok(&["network", "ls", "--format", r"table {{.Name}}\t{{.DNSSuffix}}"]).unwrap();
    assert!(table.starts_with("NAME   DNS SUFFIX\n") && table.contains("corp   corp.example\n"), "{table}");
    let ids = lab.hnsctl_ok(&["network", "ls", "--format", "{{.ID}}"]).unwrap();
    assert!(ids.lines().all(|l| l.len() == 12), "{ids}");
    fails_with(&lab, &["network", "ls", "--format", "{{.Scope}}"], "there is no field .Scope here; the fields are .ID .Name .Driver .Subnet .Gateway .Internal .DNSServers .DNSSuffix");
    fails_with(&lab, &["network", "ls", "--format", "{{json .}}"], "only fields are supported");
    fails_with(&lab, &["--format", "{{.Name}}", "network", "inspect", "corp"], "--format TEMPLATE applies to the commands that list rows");
    let json: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["network", "ls", "--format", "json"]).unwrap()).unwrap();
    assert!(json.as_array().unwrap().iter().any(|n| n["Name"] == "corp" && n["Dns"]["Domain"] == "corp.example"), "{json}");
    let endpoints = lab.hnsctl_ok(&["endpoint", "ls", "--format", "{{.Name}} {{.Network}}"]).unwrap();
    assert_eq!(endpoints, "", "no endpoints yet");
}

#[test]
fn run_and_connect_take_ip6_and_mac() {
    let (lab, _d) = setup();
    dual_stack(&lab, "ds", "10.76.0.0/24", "fd00:76::/64");
    dual_stack(&lab, "ds2", "10.77.0.0/24", "fd00:77::/64");
    lab.hnsctl_ok(&["run", "-d", "--net", "ds", "--name", "six", "--ip", "10.76.0.10", "--ip6", "fd00:76::10", "--mac=00-15-5D-00-00-10", "--", "sleep", "300"]).unwrap();
    let addr = lab.hnsctl_ok(&["exec", "six", "--", "ip", "-o", "addr", "show", "eth0"]).unwrap();
    assert!(addr.contains("10.76.0.10/24") && addr.contains("fd00:76::10/64"), "{addr}");
    let link = lab.hnsctl_ok(&["exec", "six", "--", "ip", "-o", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("00:15:5d:00:00:10"), "{link}");
    lab.hnsctl_ok(&["exec", "six", "--", "ping", "-6", "-c1", "-W2", "fd00:76::1"]).unwrap();
    lab.hnsctl_ok(&["network", "connect", "ds2", "six", "--ip6", "fd00:77::20", "--mac", "00-15-5D-00-00-20"]).unwrap();
    let addr = lab.hnsctl_ok(&["exec", "six", "--", "ip", "-o", "addr", "show", "eth1"]).unwrap();
    assert!(addr.contains("fd00:77::20/64") && addr.contains("10.77.0."), "{addr}");
    lab.hnsctl_ok(&["exec", "six", "--", "ping", "-6", "-c1", "-W2", "fd00:77::1"]).unwrap();
    // Wrong family, or an IPv6 address on an IPv4-only network: named, and nothing is left.
    let before = Api::new(&lab).get("/namespaces").ok();
    fails_with(&lab, &["run", "--net", "ds", "--ip", "fd00:76::11", "--", "true"], "--ip fd00:76::11: fd00:76::11 is an IPv6 address; give it with --ip6");
    fails_with(&lab, &["network", "connect", "nat", "six", "--ip6", "10.0.0.1"], "is an IPv4 address; give it with --ip");
    fails_with(&lab, &["run", "--net", "nat", "--ip6", "fd00:76::12", "--", "true"], "address fd00:76::12 is outside the subnets of network \"nat\"");
    assert_eq!(Api::new(&lab).get("/namespaces").ok(), before);
}

#[test]
fn run_max_bandwidth_caps_the_endpoint_on_the_host_side() {
    let (lab, _d) = setup();
    lab.hnsctl_ok(&["run", "-d", "--net", "nat", "--name", "slow", "--max-bandwidth", "8mbit", "--", "sleep", "300"]).unwrap();
    let eps = Api::new(&lab).get("/endpoints").ok();
    let ep = eps.as_array().unwrap().iter().find(|e| e["Name"] == "slow").expect("the endpoint of slow").clone();
    let qos = ep["Policies"].as_array().unwrap().iter().find(|p| p["Type"] == "QOS").unwrap_or_else(|| panic!("no QOS policy: {ep}"));
    assert_eq!(qos["Settings"]["MaximumOutgoingBandwidthInBytes"], 1_000_000, "{qos}");
    // Enforced outside the compartment: the host veth's ingress redirects to the endpoint's IFB.
    let veth = format!("hnv{}", ep["ID"].as_str().unwrap().replace('-', "").get(..12).unwrap());
    let filters = lab.in_host("tc", &["filter", "show", "dev", &veth, "parent", "ffff:"]).unwrap().stdout;
    assert!(filters.contains("mirred"), "no redirect on {veth}: {filters}");
    // Bad rates and a network without endpoints are refused by name, and nothing is created.
    let before = Api::new(&lab).get("/namespaces").ok();
    fails_with(&lab, &["run", "--net", "nat", "--max-bandwidth", "10mb", "--", "true"], "--max-bandwidth \"10mb\": give a rate such as 10mbit");
    fails_with(&lab, &["run", "--net", "host", "--max-bandwidth", "10mbit", "--", "true"], "--max-bandwidth caps an endpoint's traffic; --net host has none");
    assert_eq!(Api::new(&lab).get("/namespaces").ok(), before);
}

#[test]
fn connecting_twice_says_how_and_inspect_finds_any_object() {
    let (lab, _d) = setup();
    lab.hnsctl_ok(&["run", "-d", "--net", "nat", "--name", "app", "--", "sleep", "300"]).unwrap();
    fails_with(&lab, &["network", "connect", "nat", "app"], "container app is already connected to network nat (endpoint app)");
    fails_with(&lab, &["network", "connect", "nat", "app"], "--endpoint-name NAME");
    lab.hnsctl_ok(&["network", "connect", "nat", "app", "--endpoint-name", "app-2"]).unwrap();
    let names = lab.hnsctl_ok(&["endpoint", "ls", "--format", "{{.Name}}"]).unwrap();
    assert_eq!(names.lines().collect::<std::collections::BTreeSet<_>>(), ["app", "app-2"].into(), "{names}");
    lab.hnsctl_ok(&["exec", "app", "--", "ip", "-o", "link", "show", "eth1"]).unwrap();
    // A name the server holds already: its advice (choose another name) is a flag now.
    let (_p, path) = netns_process(&lab);
    fails_with(&lab, &["network", "connect", "nat", "--netns", &path, "--name", "outside", "--endpoint-name", "app"], "already has an endpoint named \"app\"; choose another name");
    lab.hnsctl_ok(&["network", "connect", "nat", "--netns", &path, "--name", "outside", "--endpoint-name", "outside-ep"]).unwrap();
    // docker inspect: containers, endpoints and networks by name.
    let found: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["inspect", "app", "app-2", "nat"]).unwrap()).unwrap();
    assert_eq!(found[0]["Name"], "app");
    assert!(found[0]["NetNsPath"].is_string(), "a namespace first: {found}");
    assert_eq!(found[1]["Name"], "app-2");
    assert!(found[1]["HostComputeNetwork"].is_string(), "then an endpoint: {found}");
    assert_eq!(found[2]["Name"], "nat");
    let net: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["inspect", "--type", "network", "nat"]).unwrap()).unwrap();
    assert_eq!(net[0]["Type"], "NAT");
    fails_with(&lab, &["inspect", "ghost"], "no container (namespace), endpoint, network or load balancer named ghost");
    fails_with(&lab, &["inspect", "--type", "network", "app"], "no network named app");
}

#[test]
fn a_user_without_access_to_the_socket_is_told_so() {
    let (lab, _d) = setup();
    let bin = Lab::bin("hnsctl").unwrap();
    let o = lab
        .host()
        .cmd("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .arg("--socket")
        .arg(lab.socket())
        .args(["network", "ls"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{o:?}");
    let expected = format!("Error: permission denied on {}: hnsd's socket is root-only; run as root", lab.socket().display());
    assert_eq!(err.trim_end(), expected);
}

/// A labprobe TCP server in a container started by `hnsctl run` (through `hnsctl exec`).
fn serve_in(lab: &Lab, container: &str, addr: &str) -> hns_lab::Proc {
    let hnsctl = Lab::bin("hnsctl").unwrap();
    let probe = Lab::bin("labprobe").unwrap();
    let sock = lab.socket();
    let p = lab
        .spawn_in_host(hnsctl.to_str().unwrap(), &["--socket", sock.to_str().unwrap(), "exec", container, "--", probe.to_str().unwrap(), "serve-tcp", addr])
        .unwrap();
    let port = addr.rsplit_once(':').unwrap().1;
    let local = format!("127.0.0.1:{port}");
    let up = eventually(std::time::Duration::from_secs(5), || lab.hnsctl(&["exec", container, "--", probe.to_str().unwrap(), "connect-tcp", &local, "--timeout-ms", "300"]).unwrap().status.success());
    assert!(up, "the server {addr} in {container} did not start");
    p
}

/// Which backend address (labprobe's `local=`) served each of `n` connections from `from`;
/// a connection that failed counts as "failed".
fn served_by(lab: &Lab, from: &serde_json::Value, addr: &str, n: usize) -> std::collections::BTreeMap<String, usize> {
    let probe = Lab::bin("labprobe").unwrap();
    let script = format!("for i in $(seq {n}); do {} connect-tcp {addr} --timeout-ms 1000 || echo failed; done", probe.display());
    let out = in_ns(lab, from, "sh", &["-c", &script]);
    let mut m = std::collections::BTreeMap::new();
    for l in out.stdout.lines() {
        let who = l.split_whitespace().find_map(|w| w.strip_prefix("local=")).and_then(|w| w.rsplit_once(':')).map_or("failed", |w| w.0);
        *m.entry(who.to_owned()).or_insert(0) += 1;
    }
    m
}

#[test]
fn lb_spreads_over_containers_by_name_follows_backend_changes_and_leaves_nothing() {
    let (lab, _d) = setup();
    let api = Api::new(&lab);
    for name in ["web1", "web2"] {
        lab.hnsctl_ok(&["run", "-d", "--net", "nat", "--name", name, "--", "sleep", "300"]).unwrap();
    }
    let ip = |name: &str| ip_of(&api.get(&format!("/endpoints/{name}")).ok());
    let (ip1, ip2) = (ip("web1"), ip("web2"));
    let _s1 = serve_in(&lab, "web1", "0.0.0.0:8080");
    let _s2 = serve_in(&lab, "web2", "0.0.0.0:8080");
    let (client, _) = api.container("nat", "client", serde_json::json!({}));

    // Bad flags name themselves, and nothing is created.
    fn create<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&["lb", "create", "--vip", "10.96.0.10"][..], extra].concat()
    }
    fails_with(&lab, &create(&["--port", "tcp/80:x", "--backend", "web1"]), "--port tcp/80:x: internal port \"x\" is not a number 1-65535");
    fails_with(&lab, &create(&["--port", "80:8080/udp", "--backend", "web1"]), "--port 80:8080/udp: the protocol goes first: udp/80:8080");
    fails_with(&lab, &create(&["--port", "tcp/80:8080", "--backend", "ghost"]), "--backend ghost: no endpoint or container named ghost");
    fails_with(&lab, &["lb", "create", "--vip", "10.96.0.300", "--port", "80"], "--vip 10.96.0.300: not an IP address");
    fails_with(&lab, &["lb", "create", "--vip", "10.96.0.10", "--vip", "fd00::10", "--port", "80"], "a load balancer has one address family");
    // What hnsd refuses is shown under the flag that carried it.
    fails_with(&lab, &["lb", "create", "--vip", "127.0.0.1", "--port", "80"], "--vip 127.0.0.1: 127.0.0.1 cannot be a frontend address");
    assert_eq!(lab.hnsctl_ok(&["lb", "ls", "-q"]).unwrap(), "", "nothing was created");

    let id = lab.hnsctl_ok(&create(&["--port", "tcp/80:8080", "--backend", "web1", "--backend", "web2"])).unwrap().trim().to_owned();
    assert_eq!(id.len(), 36, "prints the new ID: {id:?}");
    let short: String = id.chars().filter(|c| *c != '-').take(12).collect::<String>().to_lowercase();
    let ls = lab.hnsctl_ok(&["lb", "ls"]).unwrap();
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["ID", "VIPS", "PORTS", "BACKENDS", "FLAGS"], "{ls}");
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), [short.as_str(), "10.96.0.10", "tcp/80:8080", "web1,web2"], "{ls}");
    assert_eq!(lab.hnsctl_ok(&["lb", "ls", "--format", "{{.ID}} {{.Backends}}"]).unwrap(), format!("{short} web1,web2\n"));
    assert_eq!(lab.hnsctl_ok(&["lb", "ls", "-q"]).unwrap(), format!("{id}\n"));
    let json: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["--format", "json", "lb", "ls"]).unwrap()).unwrap();
    let backends = json[0]["HostComputeEndpoints"].as_array().unwrap();
    let web1_id = api.get("/endpoints/web1").ok()["ID"].clone();
    assert!(backends.len() == 2 && backends.contains(&web1_id), "the container names became endpoint IDs: {json}");

    let t = served_by(&lab, &client, "10.96.0.10:80", 60);
    assert!(t.get(&ip1).copied().unwrap_or(0) >= 10 && t.get(&ip2).copied().unwrap_or(0) >= 10 && !t.contains_key("failed"), "both backends serve: {t:?}");

    // Backend changes by a short ID; bad ones change nothing.
    let prefix = &id[..8];
    let before = lab.hnsctl_ok(&["lb", "ls"]).unwrap();
    fails_with(&lab, &["lb", "add-backend", prefix, "web1"], "web1: endpoint web1 is already a backend of load balancer");
    fails_with(&lab, &["lb", "add-backend", prefix, "ghost"], "ghost: no endpoint or container named ghost");
    fails_with(&lab, &["lb", "rm-backend", prefix, "client"], "client: client is not a backend of the load balancer; its backends: web1, web2");
    assert_eq!(lab.hnsctl_ok(&["lb", "ls"]).unwrap(), before);
    assert_eq!(lab.hnsctl_ok(&["lb", "rm-backend", prefix, "web1"]).unwrap(), format!("removed web1 from load balancer {short}\n"));
    let t = served_by(&lab, &client, "10.96.0.10:80", 20);
    assert_eq!(t.keys().collect::<Vec<_>>(), [&ip2], "only web2 serves: {t:?}");
    let shown: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["lb", "inspect", prefix]).unwrap()).unwrap();
    assert_eq!(shown[0]["HostComputeEndpoints"].as_array().unwrap().len(), 1, "{shown}");
    let any: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["inspect", prefix]).unwrap()).unwrap();
    assert_eq!(any, shown, "hnsctl inspect finds load balancers too");
    lab.hnsctl_ok(&["lb", "add-backend", prefix, "web1"]).unwrap();
    assert!(lab.hnsctl_ok(&["lb", "ls"]).unwrap().contains("web2,web1"));

    assert_eq!(lab.hnsctl_ok(&["lb", "rm", &short]).unwrap(), format!("{short}\n"));
    assert_eq!(lab.hnsctl_ok(&["lb", "ls", "-q"]).unwrap(), "");
    let table = lab.try_in(hns_lab::Side::Host, "nft", &["list", "table", "inet", "hns_lb"]).unwrap();
    assert!(!table.status.success() || !table.stdout.contains("10.96.0.10"), "the load balancer left the kernel: {}", table.stdout);
    fails_with(&lab, &["lb", "rm", &short], "no load balancer");
}

#[test]
fn run_acl_blocks_what_it_does_not_allow_and_outbound_nat_exceptions_show() {
    let (lab, _d) = setup();
    let probe = Lab::bin("labprobe").unwrap();
    let probe = probe.to_str().unwrap();
    // Bad rules and exceptions name the flag, and nothing is created.
    let before = Api::new(&lab).snapshot();
    fails_with(&lab, &["run", "--net", "nat", "--acl", "allow inward", "--", "true"], "--acl \"allow inward\": \"inward\" is not allow, block, in, out or KEY=VALUE");
    fails_with(&lab, &["run", "--net", "nat", "--acl", "allow in", "--acl", "allow in local-ports=http", "--", "true"], "--acl \"allow in local-ports=http\": ");
    fails_with(&lab, &["run", "--net", "nat", "--outbound-nat-exception", "10.244.0.0/40", "--", "true"], "--outbound-nat-exception 10.244.0.0/40: \"10.244.0.0/40\" is not an address or prefix");
    fails_with(&lab, &["run", "--net", "none", "--acl", "allow in", "--", "true"], "--net none has none");
    fails_with(&lab, &["run", "--net", "nat", "--outbound-nat", "10.244.0.0/16", "true"], "--outbound-nat takes its exceptions after =");
    assert_eq!(Api::new(&lab).snapshot(), before);

    lab.hnsctl_ok(&[
        "run", "-d", "--net", "nat", "--name", "guarded",
        "--acl", "allow in proto=tcp local-ports=8080 priority=100",
        "--outbound-nat-exception", "10.244.0.0/16",
        "--", "sleep", "300",
    ])
    .unwrap();
    let _open = serve_in(&lab, "guarded", "0.0.0.0:8080");
    let _closed = serve_in(&lab, "guarded", "0.0.0.0:9090");
    let ip = ip_of(&Api::new(&lab).get("/endpoints/guarded").ok());
    lab.hnsctl_ok(&["run", "-d", "--net", "nat", "--name", "peer", "--", "sleep", "300"]).unwrap();
    let connect = |port: u16| lab.hnsctl(&["exec", "peer", "--", probe, "connect-tcp", &format!("{ip}:{port}"), "--timeout-ms", "1500"]).unwrap().status.success();
    assert!(connect(8080), "the allowed port answers");
    assert!(!connect(9090), "a port no rule allows is blocked");
    // `policy add --rule` takes the same words.
    lab.hnsctl_ok(&["policy", "add", "guarded", "--rule", "allow in proto=tcp local-ports=9090 priority=100 id=open-9090"]).unwrap();
    assert!(connect(9090), "allowed by the rule added in words");
    lab.hnsctl_ok(&["policy", "rm", "guarded", "--rule", "allow in id=open-9090"]).unwrap();
    assert!(!connect(9090), "blocked again once the rule is removed");
    let acls: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["--format", "json", "policy", "ls", "guarded"]).unwrap()).unwrap();
    let acl = &acls[0];
    assert_eq!((acls.as_array().unwrap().len(), &acl["Action"], &acl["Direction"], &acl["LocalPorts"], &acl["Priority"]), (1, &"Allow".into(), &"In".into(), &"8080".into(), &100.into()), "{acls}");
    let ep: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["inspect", "--type", "endpoint", "guarded"]).unwrap()).unwrap();
    let onat: Vec<&serde_json::Value> = ep[0]["Policies"].as_array().unwrap().iter().filter(|p| p["Type"] == "OutBoundNAT").collect();
    assert_eq!(onat.len(), 1, "{ep}");
    assert_eq!(onat[0]["Settings"]["Exceptions"], serde_json::json!(["10.244.0.0/16"]), "{ep}");
}

#[test]
fn network_create_acl_filters_every_endpoint_of_the_network() {
    let (lab, _d) = setup();
    let probe = Lab::bin("labprobe").unwrap();
    let probe = probe.to_str().unwrap();
    // Bad rules name the flag (ours, or hnsd's refusal under it), and no network is made.
    fails_with(&lab, &["network", "create", "--subnet", "10.73.0.0/24", "--acl", "allow sideways", "guarded"], "--acl \"allow sideways\": \"sideways\" is not allow");
    fails_with(&lab, &["network", "create", "--subnet", "10.73.0.0/24", "--acl", "allow out", "--acl", "allow in proto=icmp local-ports=80", "guarded"], "--acl \"allow in proto=icmp local-ports=80\": ");
    assert!(!lab.hnsctl_ok(&["network", "ls"]).unwrap().contains("guarded"));

    lab.hnsctl_ok(&["network", "create", "--subnet", "10.73.0.0/24", "--acl", "allow in proto=tcp local-ports=8080", "--acl", "allow out", "guarded"]).unwrap();
    for name in ["srv", "cli"] {
        lab.hnsctl_ok(&["run", "-d", "--net", "guarded", "--name", name, "--", "sleep", "300"]).unwrap();
    }
    let _open = serve_in(&lab, "srv", "0.0.0.0:8080");
    let _closed = serve_in(&lab, "srv", "0.0.0.0:9090");
    let ip = ip_of(&Api::new(&lab).get("/endpoints/srv").ok());
    let connect = |port: u16| lab.hnsctl(&["exec", "cli", "--", probe, "connect-tcp", &format!("{ip}:{port}"), "--timeout-ms", "1500"]).unwrap().status.success();
    assert!(connect(8080), "the network's rule lets 8080 in");
    assert!(!connect(9090), "what no rule of the network allows is blocked");
    let net: serde_json::Value = serde_json::from_str(&lab.hnsctl_ok(&["network", "inspect", "guarded"]).unwrap()).unwrap();
    let acls = net[0]["Policies"].as_array().unwrap().iter().filter(|p| p["Type"] == "NetworkACL").count();
    assert_eq!(acls, 2, "{net}");
}
