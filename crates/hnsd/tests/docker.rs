//! The stock docker CLI (and docker-compose) drive hns through Docker's remote NetworkDriver
//! and IpamDriver plugins, against a real dockerd running inside the lab host.

mod common;

use std::time::Duration;

use common::*;
use hns_lab::docker::{BUSYBOX_IMAGE, BUSYBOX_PAGE};
use hns_lab::{DockerDaemon, HOST_UPLINK, Lab, Side};

fn setup(lab: &Lab) -> (hns_lab::Daemon, DockerDaemon<'_>) {
    let hnsd = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let docker = DockerDaemon::start(lab).unwrap();
    (hnsd, docker)
}

/// An HTTP GET of `/` at `ip port` from `side`, with busybox nc (the static busybox's wget
/// crashes in glibc's NSS outside a container). Ok: the busybox page was served.
fn http_get(lab: &Lab, side: Side, ip: &str, port: u16) -> Result<String, String> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {ip} {port}");
    let o = lab.try_in(side, "sh", &["-c", &script]).unwrap();
    if o.stdout.contains(BUSYBOX_PAGE) { Ok(o.stdout) } else { Err(format!("GET {ip}:{port} from {side:?}: {}{}", o.stdout, o.stderr)) }
}

#[test]
fn nat_network_container_with_published_ports() {
    let lab = Lab::new().unwrap();
    let (_hnsd, docker) = setup(&lab);
    docker.docker_ok(&["network", "create", "-d", "nat", "--subnet", "172.30.0.0/16", "--gateway", "172.30.0.1", "MyNatNetwork"]).unwrap();
    let out = docker
        .docker_same_version_ok(&[
            "run", "-d", "--name", "web", "--net", "MyNatNetwork", "--ip", "172.30.0.10", "--mac-address", "02:42:ac:1e:00:0a", "-p", "80:80", "-p", "8082:80", "-p", "80",
            BUSYBOX_IMAGE, "httpd", "-f", "-p", "80", "-h", "/www",
        ])
        .unwrap();
    assert!(!out.trim().is_empty());
    let page = eventually(Duration::from_secs(5), || http_get(&lab, Side::Lan, &HOST_UPLINK.to_string(), 8082).is_ok());
    if !page {
        for args in [&["ps", "-a"][..], &["logs", "web"], &["exec", "web", "ip", "addr"], &["exec", "web", "ip", "route"], &["exec", "web", "wget", "-qO-", "http://127.0.0.1/"]] {
            eprintln!("docker {args:?}: {:?}", docker.docker(args).unwrap());
        }
        eprintln!("host->container {:?}", http_get(&lab, Side::Host, "172.30.0.10", 80));
        eprintln!("container->gw {:?}", docker.docker(&["exec", "web", "ping", "-c1", "-W1", "172.30.0.1"]).unwrap());
        eprintln!("host addrs {:?}", lab.in_host("ip", &["-o", "addr"]).unwrap().stdout);
        eprintln!("{}", kernel_snapshot(&lab));
        eprintln!("{:?}", lab.in_host("ip", &["-d", "link"]).unwrap().stdout);
        eprintln!("{}", lab.hnsctl_ok(&["port", "ls"]).unwrap());
        eprintln!("{}", lab.hnsctl_ok(&["endpoint", "ls"]).unwrap());
        panic!("port 8082 not reachable from the LAN");
    }
    http_get(&lab, Side::Lan, &HOST_UPLINK.to_string(), 80).unwrap();
    let ip = docker.docker_ok(&["exec", "web", "ip", "-4", "-o", "addr", "show", "eth0"]).unwrap();
    assert!(ip.contains("172.30.0.10/16"), "{ip}");
    println!("{}", lab.hnsctl_ok(&["port", "ls"]).unwrap());
}
