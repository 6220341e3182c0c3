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
    let out = lab.hnsctl_ok(&["run", "-d", "--net", "nat", "--name", "web", "-p", "8080:80", "-p", "127.0.0.1::81/udp", "-p", "9000-9001:90-91", "--", "sleep", "300"]).unwrap();
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
    lab.hnsctl_ok(&["port", "rm", "web", "8443:80"]).unwrap();
    assert!(!lab.probe(hns_lab::Side::Lan, &["connect-tcp", "198.51.100.2:8443", "--timeout-ms", "1000"]).unwrap().status.success());
    fails_with(&lab, &["run", "--net", "nat", "-p", "70000:80", "--", "true"], "70000");
    fails_with(&lab, &["run", "--net", "nat", "-p", "8000-8002:80-81", "--", "true"], "container range");
    fails_with(&lab, &["run", "--net", "nat", "-p", "8080:80", "--", "true"], "PORT_ALREADY_EXISTS");
    fails_with(&lab, &["run", "--net", "nat", "-p", "192.0.2.77:80:80", "--", "true"], "not an address of this host");
    lab.hnsctl_ok(&["rm", "-f", "web"]).unwrap();
    assert_eq!(Api::new(&lab).get("/portmappings").ok(), serde_json::json!([]), "removing the container removes its mappings");
}
