//! `docker network create -d hnsoverlay` across hosts: two lab hosts on one underlay with a real
//! etcd, hnsd and a real dockerd on each. The first host's Docker creates the HNS overlay
//! network, the second's adopts it; busybox containers on the two hosts reach each other.
//! Needs root, /usr/bin/etcd, dockerd, and `cargo build -p hnsd -p hnsctl -p hns-lab --bins`.

mod common;

use std::time::Duration;

use common::*;
use hns_lab::docker::BUSYBOX_IMAGE;
use hns_lab::{ClusterLab, DockerDaemon, Lab};
use serde_json::Value;

const SUBNET: &str = "10.240.0.0/16";

fn docker_fails_with(docker: &DockerDaemon, args: &[&str], needle: &str) -> String {
    let o = docker.docker(args).unwrap();
    assert!(!o.status.success(), "docker {args:?} should fail");
    assert!(o.stderr.contains(needle), "docker {args:?}: stderr {:?} lacks {needle:?}", o.stderr);
    o.stderr
}

fn overlays(lab: &Lab) -> Vec<Value> {
    let nets: Value = serde_json::from_str(&lab.hnsctl_ok(&["--format", "json", "network", "ls"]).unwrap()).unwrap();
    nets.as_array().unwrap().iter().filter(|n| n["Type"] == "Overlay").cloned().collect()
}

fn ip_on(docker: &DockerDaemon, container: &str, network: &str) -> String {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    docker.docker_ok(&["inspect", "-f", &f, container]).unwrap().trim().to_owned()
}

fn exec(docker: &DockerDaemon, container: &str, cmd: &[&str]) -> hns_lab::RunOutput {
    let mut all = vec!["exec", container];
    all.extend_from_slice(cmd);
    docker.docker(&all).unwrap()
}

fn hnsd_logs(lab: &ClusterLab) -> String {
    lab.hosts().iter().enumerate().map(|(i, h)| format!("--- host{i} ---\n{}", std::fs::read_to_string(h.log_path()).unwrap_or_default())).collect()
}

#[test]
fn hnsoverlay_is_created_on_one_host_adopted_on_the_other_and_containers_talk_across() {
    let lab = ClusterLab::new(2).expect("cluster lab");
    let _hnsd: Vec<_> = (0..2).map(|i| lab.start_hnsd(i, &["--no-default-network"]).expect("hnsd starts")).collect();
    let docker: Vec<DockerDaemon> = lab.hosts().iter().map(|h| DockerDaemon::start(h).unwrap()).collect();

    // Host 0 creates the overlay network; host 1 learns it from the watch, then its Docker
    // network (an ID of its own) adopts it. Each host gets its own --ip-range.
    docker[0].docker_ok(&["network", "create", "-d", "hnsoverlay", "--subnet", SUBNET, "--gateway", "10.240.0.1", "--ip-range", "10.240.1.0/24", "ov"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || overlays(lab.host(1)).len() == 1), "host1 did not get the overlay network");
    docker_fails_with(&docker[1], &["network", "create", "-d", "hnsoverlay", "--subnet", SUBNET, "--gateway", "10.240.0.9", "wrong-gw"], "give --gateway 10.240.0.1");
    // The hns IPAM is per host, overlay addresses are cluster-wide: refused, with the way.
    docker_fails_with(&docker[1], &["network", "create", "-d", "hnsoverlay", "--ipam-driver", "hns", "--subnet", SUBNET, "hns-ipam"], "use Docker's default IPAM");
    docker_fails_with(&docker[0], &["network", "create", "-d", "hnsoverlay", "--ipam-driver", "hns", "--subnet", "10.241.0.0/16", "hns-ipam"], "--ipam-driver hns is not supported with -d hnsoverlay");
    docker[1].docker_ok(&["network", "create", "-d", "hnsoverlay", "--subnet", SUBNET, "--gateway", "10.240.0.1", "--ip-range", "10.240.2.0/24", "ov"]).unwrap();
    let (o0, o1) = (overlays(lab.host(0)), overlays(lab.host(1)));
    assert_eq!((o0.len(), o1.len()), (1, 1), "one overlay network per host: {o0:?} {o1:?}");
    assert_eq!(o0[0]["ID"], o1[0]["ID"], "host1 adopted the cluster network");

    docker[0].docker_ok(&["run", "-d", "--name", "alpha", "--net", "ov", BUSYBOX_IMAGE, "sleep", "600"]).unwrap();
    docker[1].docker_ok(&["run", "-d", "--name", "bravo", "--net", "ov", BUSYBOX_IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]).unwrap();
    let (ip_a, ip_b) = (ip_on(&docker[0], "alpha", "ov"), ip_on(&docker[1], "bravo", "ov"));
    assert!(ip_a.starts_with("10.240.1.") && ip_b.starts_with("10.240.2."), "{ip_a} {ip_b}");
    let pinged = eventually(Duration::from_secs(5), || exec(&docker[0], "alpha", &["ping", "-c1", "-W1", &ip_b]).status.success());
    assert!(pinged, "a (host0) cannot ping b (host1) at {ip_b}\n{}", hnsd_logs(&lab));
    assert!(exec(&docker[1], "bravo", &["ping", "-c1", "-W2", &ip_a]).status.success(), "b cannot ping a at {ip_a}");
    let page = exec(&docker[0], "alpha", &["wget", "-q", "-O-", &format!("http://{ip_b}/")]);
    assert!(page.status.success() && page.stdout.contains(hns_lab::docker::BUSYBOX_PAGE), "TCP across hosts: {page:?}");
    // Overlay endpoints get no default route (outbound is a second, nat, endpoint's job) and
    // Docker added no docker_gwbridge network for one.
    let routes = exec(&docker[0], "alpha", &["ip", "route"]).stdout;
    assert!(!routes.contains("default"), "{routes}");
    let nets = docker[0].docker_ok(&["network", "ls", "--format", "{{.Name}}"]).unwrap();
    assert!(!nets.contains("gwbridge"), "{nets}");

    // Docker's IPAM is per host: host 1 handing out host 0's address is refused, naming the
    // holder and the fix.
    let err = docker_fails_with(&docker[1], &["run", "-d", "--name", "charlie", "--net", "ov", "--ip", &ip_a, BUSYBOX_IMAGE, "sleep", "600"], "is in use by endpoint");
    assert!(err.contains("host0") && err.contains("--ip-range"), "{err}");
    eprintln!("collision refused: {err}");
    let _ = docker[1].docker(&["rm", "-f", "charlie"]);

    // The adopting host's `docker network rm` only forgets its mapping; creating the Docker
    // network again adopts the overlay again.
    docker[1].docker_ok(&["rm", "-f", "bravo"]).unwrap();
    docker[1].docker_ok(&["network", "rm", "ov"]).unwrap();
    assert_eq!(overlays(lab.host(1)).len(), 1, "host1's rm must not remove the cluster network");
    docker[1].docker_ok(&["network", "create", "-d", "hnsoverlay", "--subnet", SUBNET, "--gateway", "10.240.0.1", "--ip-range", "10.240.2.0/24", "ov"]).unwrap();
    docker[1].docker_ok(&["run", "-d", "--name", "bravo", "--net", "ov", BUSYBOX_IMAGE, "sleep", "600"]).unwrap();

    // The creating host removes its Docker network while host 1's container still uses the
    // overlay: hnsd refuses, Docker (20.10) removes its network anyway and logs hnsd's
    // message, so hns keeps the overlay network and removes it once bravo is gone.
    docker[0].docker_ok(&["rm", "-f", "alpha"]).unwrap();
    docker[0].docker_ok(&["network", "rm", "ov"]).unwrap();
    let dockerd_log = std::fs::read_to_string(docker[0].log_path()).unwrap_or_default();
    assert!(dockerd_log.contains("hns removes the overlay network once those endpoints are gone"), "dockerd did not log hnsd's refusal");
    assert_eq!((overlays(lab.host(0)).len(), overlays(lab.host(1)).len()), (1, 1), "the overlay network went while host1 uses it");
    docker[1].docker_ok(&["rm", "-f", "bravo"]).unwrap();
    docker[1].docker_ok(&["network", "rm", "ov"]).unwrap();
    for (i, host) in lab.hosts().iter().enumerate() {
        assert!(eventually(Duration::from_secs(5), || overlays(host).is_empty()), "host{i} still has the overlay network");
        let mut left = Vec::new();
        let clean = eventually(Duration::from_secs(3), || {
            left = host.leftovers_in_host().unwrap();
            left.is_empty()
        });
        assert!(clean, "host{i} left behind in the kernel: {left:?}");
    }
}
