//! The stock docker CLI (and docker-compose) drive hns through Docker's remote NetworkDriver
//! and IpamDriver plugins, against a real dockerd running inside the lab host. Every check
//! moves packets: HTTP through port mappings from the LAN, pings between containers and to
//! the LAN's router.

mod common;

use std::time::Duration;

use common::*;
use hns_lab::docker::{BUSYBOX_IMAGE, BUSYBOX_PAGE};
use hns_lab::{DockerDaemon, HOST_UPLINK, Lab, Side, TEST_SERVER};
use serde_json::Value;

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

/// The busybox page through a mapping on the host's LAN address, waiting for the server.
fn served_from_lan(lab: &Lab, port: u16) -> bool {
    eventually(Duration::from_secs(5), || http_get(lab, Side::Lan, &HOST_UPLINK.to_string(), port).is_ok())
}

/// A detached busybox container: `args` go to `docker run` before the image, `cmd` after.
fn run(docker: &DockerDaemon, args: &[&str], cmd: &[&str]) -> String {
    let mut all = vec!["run", "-d"];
    all.extend_from_slice(args);
    all.push(BUSYBOX_IMAGE);
    all.extend_from_slice(cmd);
    docker.docker_ok(&all).unwrap().trim().to_owned()
}

const HTTPD: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/www"];
const SLEEP: &[&str] = &["sleep", "600"];

fn exec_ok(docker: &DockerDaemon, container: &str, cmd: &[&str]) -> bool {
    let mut all = vec!["exec", container];
    all.extend_from_slice(cmd);
    docker.docker(&all).unwrap().status.success()
}

fn ping(docker: &DockerDaemon, container: &str, target: &str) -> bool {
    exec_ok(docker, container, &["ping", "-c1", "-W2", target])
}

/// The IPv4 address of a container on a network, as Docker reports it.
fn ip_on(docker: &DockerDaemon, container: &str, network: &str) -> String {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    docker.docker_ok(&["inspect", "-f", &f, container]).unwrap().trim().to_owned()
}

/// A docker command that must fail with hnsd's message.
fn fails_with(docker: &DockerDaemon, args: &[&str], needle: &str) {
    let o = docker.docker(args).unwrap();
    assert!(!o.status.success(), "docker {args:?} should fail");
    assert!(o.stderr.contains(needle), "docker {args:?}: stderr {:?} lacks {needle:?}", o.stderr);
    assert!(!o.stderr.contains("Unspecified error"), "{}", o.stderr);
}

fn json(lab: &Lab, args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&lab.hnsctl_ok(&all).unwrap()).unwrap()
}

/// Nothing of hns is left: no objects in hnsd, no links, nft table contents or mounts in the
/// kernel (retired links go in the background, within a second).
fn assert_clean(lab: &Lab) {
    let api = Api::new(lab);
    for kind in ["networks", "endpoints", "namespaces"] {
        let left = api.get(&format!("/{kind}")).ok();
        assert_eq!(left.as_array().map(Vec::len), Some(0), "{kind} left in hnsd: {left}");
    }
    let mut left = Vec::new();
    let clean = eventually(Duration::from_secs(3), || {
        left = lab.leftovers_in_host().unwrap();
        left.is_empty()
    });
    assert!(clean, "left behind in the kernel: {left:?}");
}

#[test]
fn nat_network_publishes_ports_and_containers_reach_each_other() {
    let lab = Lab::new().unwrap();
    let (_hnsd, docker) = setup(&lab);
    docker.docker_ok(&["network", "create", "-d", "nat", "--subnet", "172.30.0.0/16", "--gateway", "172.30.0.1", "MyNatNetwork"]).unwrap();

    // --mac-address needs the client that matches this dockerd (API 1.41).
    docker
        .docker_same_version_ok(&[
            "run", "-d", "--name", "web", "--net", "MyNatNetwork", "--ip", "172.30.0.10", "--mac-address", "02:42:ac:1e:00:0a", "-p", "80:80", "-p", "8082:80", "-p", "80",
            BUSYBOX_IMAGE, "httpd", "-f", "-p", "80", "-h", "/www",
        ])
        .unwrap();
    assert!(served_from_lan(&lab, 8082), "port 8082 is not served from the LAN; hnsd log:\n{}", std::fs::read_to_string(lab.log_path()).unwrap_or_default());
    http_get(&lab, Side::Lan, &HOST_UPLINK.to_string(), 80).unwrap();
    let link = docker.docker_ok(&["exec", "web", "ip", "-o", "addr", "show", "eth0"]).unwrap();
    assert!(link.contains("172.30.0.10/16"), "{link}");
    let mac = docker.docker_ok(&["exec", "web", "cat", "/sys/class/net/eth0/address"]).unwrap();
    assert_eq!(mac.trim(), "02:42:ac:1e:00:0a");

    // `-p 80`: hns chose the host port; hnsctl shows it with the container's name.
    let maps = json(&lab, &["port", "ls"]);
    let maps = maps.as_array().unwrap();
    assert_eq!(maps.len(), 3, "{maps:?}");
    assert!(maps.iter().all(|m| m["Namespace"] == "web" && m["InternalIp"] == "172.30.0.10"), "{maps:?}");
    let dynamic = maps.iter().map(|m| m["ExternalPort"].as_u64().unwrap()).find(|p| *p != 80 && *p != 8082).unwrap();
    http_get(&lab, Side::Lan, &HOST_UPLINK.to_string(), dynamic as u16).unwrap();
    let table = lab.hnsctl_ok(&["port", "ls"]).unwrap();
    assert!(table.contains("web"), "{table}");

    // A host-IP binding answers on that address only.
    run(&docker, &["--name", "local", "--net", "MyNatNetwork", "-p", "127.0.0.1:8080:80"], HTTPD);
    assert!(eventually(Duration::from_secs(5), || http_get(&lab, Side::Host, "127.0.0.1", 8080).is_ok()));
    assert!(http_get(&lab, Side::Lan, &HOST_UPLINK.to_string(), 8080).is_err(), "bound to 127.0.0.1, yet served to the LAN");

    // Two containers of the network reach each other, by address and by name (Docker's DNS).
    run(&docker, &["--name", "client", "--net", "MyNatNetwork"], SLEEP);
    assert!(ping(&docker, "client", "172.30.0.10"));
    assert!(ping(&docker, "client", "web"));
    assert!(exec_ok(&docker, "client", &["wget", "-q", "-O-", "http://web/"]));
    // ...and the LAN, through the host's masquerade.
    assert!(ping(&docker, "client", &TEST_SERVER.to_string()));
    // Docker set no MAC for client: hns chose it and told Docker, which put it on the link.
    let docker_mac = docker.docker_ok(&["inspect", "-f", "{{.NetworkSettings.Networks.MyNatNetwork.MacAddress}}", "client"]).unwrap();
    let link_mac = docker.docker_ok(&["exec", "client", "cat", "/sys/class/net/eth0/address"]).unwrap();
    let eps = json(&lab, &["endpoint", "ls"]);
    let hns_mac = eps.as_array().unwrap().iter().find(|e| e["IpConfigurations"][0]["IpAddress"] == ip_on(&docker, "client", "MyNatNetwork")).unwrap()["MacAddress"].as_str().unwrap().replace('-', ":").to_lowercase();
    assert_eq!((docker_mac.trim(), link_mac.trim()), (hns_mac.as_str(), hns_mac.as_str()));

    // docker network inspect lists the endpoints with their addresses.
    let inspect: Value = serde_json::from_str(&docker.docker_ok(&["network", "inspect", "MyNatNetwork"]).unwrap()).unwrap();
    let containers = inspect[0]["Containers"].as_object().unwrap();
    assert_eq!(containers.len(), 3);
    assert!(containers.values().any(|c| c["Name"] == "web" && c["IPv4Address"] == "172.30.0.10/16"), "{containers:?}");
    // hnsctl sees the same network under the Docker ID's short form, with the Docker ID kept.
    let id = inspect[0]["Id"].as_str().unwrap();
    let net = json(&lab, &["network", "inspect", &id[..12]]);
    assert_eq!(net[0]["AdditionalParams"]["DockerNetworkID"], id);
    assert_eq!(net[0]["Type"], "NAT");

    docker.docker_ok(&["rm", "-f", "web", "local", "client"]).unwrap();
    assert!(http_get(&lab, Side::Lan, &HOST_UPLINK.to_string(), 8082).is_err(), "a removed container's mapping still answers");
    docker.docker_ok(&["network", "rm", "MyNatNetwork"]).unwrap();
    assert_clean(&lab);

    // What Docker did is in the event stream too (it does not pass the API), marked via=docker.
    // Docker does not tell plugins a network's name: hns names it by the short Docker ID.
    let name = &id[..12];
    let text = lab.hnsctl_ok(&["events", "--since", "10m", "--until", "0s", "--format", "json"]).unwrap();
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let docker_events = |kind: &str, action: &str, name: &str| events.iter().filter(|e| e["Type"] == kind && e["Action"] == action && e["Name"] == name && e["Attributes"]["via"] == "docker" && e["Outcome"] == "ok").count();
    assert_eq!(docker_events("network", "create", name), 1, "{text}");
    assert_eq!(docker_events("network", "delete", name), 1, "{text}");
    let endpoint_steps = |action: &str| events.iter().filter(|e| e["Type"] == "endpoint" && e["Action"] == action && e["Attributes"]["via"] == "docker" && e["Network"] == name).count();
    for action in ["create", "attach", "detach", "delete"] {
        assert_eq!(endpoint_steps(action), 3, "three containers, one {action} each: {text}");
    }
    let added: Vec<&str> = events.iter().filter(|e| e["Type"] == "portmapping" && e["Action"] == "add" && e["Attributes"]["via"] == "docker").map(|e| e["Attributes"]["mapping"].as_str().unwrap()).collect();
    for want in ["0.0.0.0:80->80/tcp", "0.0.0.0:8082->80/tcp", &format!("0.0.0.0:{dynamic}->80/tcp"), "127.0.0.1:8080->80/tcp"] {
        assert!(added.contains(&want), "no portmapping add event for {want}: {added:?}");
    }
}

#[test]
fn external_networks_put_containers_on_the_lan() {
    let lab = Lab::new().unwrap();
    let (_hnsd, docker) = setup(&lab);
    let mut containers = Vec::new();
    for (n, driver) in [(1u8, "transparent"), (2, "l2bridge"), (3, "l2tunnel")] {
        let u = lab.add_uplink(n, driver == "l2tunnel").unwrap();
        let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
        let name = format!("{driver}net");
        let hns_name = format!("com.docker.network.windowsshim.networkname=lan{n}");
        // l2tunnel also shows the hns IPAM on a LAN subnet (with a range for the containers).
        let mut args = vec!["network", "create", "-d", driver, "--subnet", &u.subnet, "--gateway"];
        let router = u.router.to_string();
        args.extend([router.as_str(), "-o", &iface, "-o", &hns_name, "-o", "com.docker.network.windowsshim.dnsservers=192.0.2.53"]);
        let range = format!("10.77.{n}.128/25");
        if driver == "l2tunnel" {
            args.extend(["--ipam-driver", "hns", "--ip-range", &range]);
        }
        args.push(&name);
        docker.docker_ok(&args).unwrap();
        let c = format!("{driver}-c");
        let ip = u.addr(50).to_string();
        let mut run_args = vec!["--name", c.as_str(), "--net", name.as_str()];
        if driver != "l2tunnel" {
            run_args.extend(["--ip", ip.as_str()]);
        }
        run(&docker, &run_args, SLEEP);
        let got = ip_on(&docker, &c, &name);
        if driver == "l2tunnel" {
            assert!(got.starts_with(&format!("10.77.{n}.")) && got.rsplit('.').next().unwrap().parse::<u8>().unwrap() >= 128, "{got} is outside --ip-range");
        } else {
            assert_eq!(got, ip);
        }
        // The LAN's router reaches the container at its own address, and the other way round.
        assert!(eventually(Duration::from_secs(3), || lab.try_in(Side::Lan, "ping", &["-c1", "-W1", &got]).unwrap().status.success()), "{driver}: LAN cannot ping {got}");
        assert!(ping(&docker, &c, &router), "{driver}: the container cannot ping its LAN router");
        containers.push((c, name));
    }
    // The windowsshim options reached hns: the network's name and DNS servers.
    let lan1 = json(&lab, &["network", "inspect", "lan1"]);
    assert_eq!((lan1[0]["Type"].as_str(), lan1[0]["Dns"]["ServerList"][0].as_str()), (Some("Transparent"), Some("192.0.2.53")), "{lan1}");
    // Containers of one host on different LAN segments meet through the routers.
    assert!(ping(&docker, "transparent-c", "10.77.2.50"));

    // Refused, with hnsd's own words.
    fails_with(&docker, &["network", "create", "-d", "nat", "-o", "com.docker.network.windowsshim.bogus=1", "bad1"], "unknown option com.docker.network.windowsshim.bogus");
    let u4 = lab.add_uplink(4, false).unwrap();
    let iface4 = format!("com.docker.network.windowsshim.interface={}", u4.host_if);
    let router4 = u4.router.to_string();
    fails_with(
        &docker,
        &["network", "create", "-d", "l2bridge", "--subnet", &u4.subnet, "--gateway", &router4, "-o", &iface4, "-o", "com.docker.network.windowsshim.vlanid=5000", "bad2"],
        "VLAN ID 5000 is out of range",
    );
    fails_with(&docker, &["network", "create", "-d", "l2bridge", "-o", &iface4, "bad3"], "give that LAN's --subnet and --gateway");
    fails_with(&docker, &["network", "create", "-d", "l2bridge", "--ipam-driver", "hns", "-o", &iface4, "bad4"], "give that LAN's --subnet and --gateway");
    fails_with(&docker, &["network", "create", "-d", "transparent", "--internal", "--subnet", &u4.subnet, "--gateway", &router4, "-o", &iface4, "bad5"], "cannot be internal");
    fails_with(&docker, &["network", "create", "-d", "hnsoverlay", "bad6"], "needs the cluster store");
    fails_with(&docker, &["run", "--rm", "--net", "l2bridgenet", "--ip", "10.77.2.60", "-p", "81:80", BUSYBOX_IMAGE, "true"], "port mappings are for nat networks");
    // Docker's default IPAM hands out the subnet's first free address, here the host's own 10.77.2.2:
    // refused, saying whose it is and how to avoid it.
    fails_with(&docker, &["run", "--rm", "--net", "l2bridgenet", BUSYBOX_IMAGE, "true"], "address 10.77.2.2 is this host's own address on eth2");
    let nets = docker.docker_ok(&["network", "ls", "--format", "{{.Name}}"]).unwrap();
    assert!(!nets.contains("bad"), "a refused network exists in docker: {nets}");

    for (c, _) in &containers {
        docker.docker_ok(&["rm", "-f", c]).unwrap();
    }
    for (_, n) in &containers {
        docker.docker_ok(&["network", "rm", n]).unwrap();
    }
    assert_clean(&lab);
}

#[test]
fn hns_ipam_internal_and_dual_stack_nat_networks() {
    let lab = Lab::new().unwrap();
    let (_hnsd, docker) = setup(&lab);
    // The hns IPAM picks the subnet and gateway, like the default nat network's.
    docker.docker_ok(&["network", "create", "-d", "nat", "--ipam-driver", "hns", "picked"]).unwrap();
    let config: Value = serde_json::from_str(&docker.docker_ok(&["network", "inspect", "-f", "{{json .IPAM.Config}}", "picked"]).unwrap()).unwrap();
    let subnet = config[0]["Subnet"].as_str().unwrap().to_owned();
    assert!(subnet.ends_with(".0.0/16"), "{config}");
    let prefix = subnet.trim_end_matches(".0.0/16");
    assert_eq!(config[0]["Gateway"], format!("{prefix}.0.1"));
    run(&docker, &["--name", "ca", "--net", "picked"], SLEEP);
    run(&docker, &["--name", "cb", "--net", "picked"], SLEEP);
    let (ia, ib) = (ip_on(&docker, "ca", "picked"), ip_on(&docker, "cb", "picked"));
    assert_eq!((ia.as_str(), ib.as_str()), (format!("{prefix}.0.2").as_str(), format!("{prefix}.0.3").as_str()));
    assert!(ping(&docker, "ca", &ib));
    let hns_net = json(&lab, &["network", "ls"]);
    assert_eq!(hns_net[0]["Ipams"][0]["Subnets"][0]["IpAddressPrefix"], subnet.as_str());

    // --ip-range and --aux-address with the hns IPAM.
    docker
        .docker_ok(&["network", "create", "-d", "nat", "--ipam-driver", "hns", "--subnet", "10.44.0.0/16", "--ip-range", "10.44.7.0/24", "--aux-address", "printer=10.44.7.1", "ranged"])
        .unwrap();
    run(&docker, &["--name", "rr", "--net", "ranged"], SLEEP);
    let ip = ip_on(&docker, "rr", "ranged");
    assert!(ip.starts_with("10.44.7.") && ip != "10.44.7.1", "{ip}: outside --ip-range, or the printer's");
    let aux = json(&lab, &["network", "ls"]);
    assert!(aux.to_string().contains("\"printer\":\"10.44.7.1\""), "{aux}");

    // --internal: siblings meet, the LAN is out of reach.
    docker.docker_ok(&["network", "create", "-d", "nat", "--internal", "--subnet", "10.45.0.0/24", "inner"]).unwrap();
    run(&docker, &["--name", "i1", "--net", "inner"], SLEEP);
    run(&docker, &["--name", "i2", "--net", "inner"], SLEEP);
    assert!(ping(&docker, "i1", &ip_on(&docker, "i2", "inner")));
    assert!(!ping(&docker, "i1", &TEST_SERVER.to_string()), "an internal network reached the LAN");
    // hns routes every container itself: Docker never needed its docker_gwbridge.
    assert!(!docker.docker_ok(&["network", "ls"]).unwrap().contains("docker_gwbridge"));
    // The hns IPAM refuses a pool that overlaps one it gave out, in its own words.
    fails_with(&docker, &["network", "create", "-d", "nat", "--ipam-driver", "hns", "--subnet", "10.44.0.0/24", "overlap"], "overlaps pool 10.44.0.0/16");

    // --ipv6: dual-stack nat.
    docker.docker_ok(&["network", "create", "-d", "nat", "--ipv6", "--subnet", "10.46.0.0/24", "--subnet", "fd00:46::/64", "dual"]).unwrap();
    run(&docker, &["--name", "d1", "--net", "dual"], SLEEP);
    // --ip6 through the plugin: the container holds the address Docker was asked for.
    run(&docker, &["--name", "d2", "--net", "dual", "--ip6", "fd00:46::46"], SLEEP);
    let f = "{{(index .NetworkSettings.Networks \"dual\").GlobalIPv6Address}}";
    let v6 = docker.docker_ok(&["inspect", "-f", f, "d2"]).unwrap().trim().to_owned();
    assert_eq!(v6, "fd00:46::46");
    assert!(docker.docker_ok(&["exec", "d2", "ip", "-6", "addr", "show"]).unwrap().contains("fd00:46::46/64"), "d2 does not hold its --ip6 address");
    assert!(exec_ok(&docker, "d1", &["ping", "-6", "-c1", "-W2", &v6]), "IPv6 between containers");
    assert!(ping(&docker, "d1", &ip_on(&docker, "d2", "dual")));

    for c in ["ca", "cb", "rr", "i1", "i2", "d1", "d2"] {
        docker.docker_ok(&["rm", "-f", c]).unwrap();
    }
    for n in ["picked", "ranged", "inner", "dual"] {
        docker.docker_ok(&["network", "rm", n]).unwrap();
    }
    assert_clean(&lab);
}

#[test]
fn connect_disconnect_and_restarts_keep_connectivity() {
    let lab = Lab::new().unwrap();
    let (hnsd, mut docker) = setup(&lab);
    docker.docker_ok(&["network", "create", "-d", "nat", "--subnet", "10.50.0.0/24", "front"]).unwrap();
    docker.docker_ok(&["network", "create", "-d", "nat", "--subnet", "10.51.0.0/24", "back"]).unwrap();
    run(&docker, &["--name", "web", "--net", "front", "-p", "8090:80"], HTTPD);
    run(&docker, &["--name", "db", "--net", "back"], SLEEP);
    assert!(served_from_lan(&lab, 8090));

    // Hot add: web gets a second interface on back; db reaches it there.
    docker.docker_ok(&["network", "connect", "--ip", "10.51.0.77", "back", "web"]).unwrap();
    assert!(ping(&docker, "db", "10.51.0.77"), "db cannot reach web's new interface");
    assert!(ping(&docker, "db", "web"));
    let links = docker.docker_ok(&["exec", "web", "ip", "-o", "-4", "addr"]).unwrap();
    assert!(links.contains("10.51.0.77/24"), "{links}");
    // Docker moved web's gateway to "back" (it sorts first): the mapping followed it, once.
    assert!(served_from_lan(&lab, 8090), "the mapping broke on connect");
    let maps = json(&lab, &["port", "ls"]);
    assert_eq!(maps.as_array().unwrap().len(), 1, "{maps}");
    assert_eq!(maps[0]["InternalIp"], "10.51.0.77", "{maps}");
    let ns = json(&lab, &["namespace", "ls"]);
    let web = ns.as_array().unwrap().iter().find(|n| n["Name"] == "web").unwrap_or_else(|| panic!("no compartment web: {ns}"));
    assert_eq!(web["Resources"].as_array().unwrap().len(), 2, "{web}");
    // Hot remove.
    docker.docker_ok(&["network", "disconnect", "back", "web"]).unwrap();
    assert!(!ping(&docker, "db", "10.51.0.77"));
    assert!(!docker.docker_ok(&["exec", "web", "ip", "-o", "-4", "addr"]).unwrap().contains("10.51.0.77"));
    assert!(served_from_lan(&lab, 8090));

    // dockerd restarts (live restore): containers, networks and mappings stay.
    docker.restart().unwrap();
    assert!(served_from_lan(&lab, 8090), "after a dockerd restart");
    assert!(docker.docker_ok(&["ps", "--format", "{{.Names}}"]).unwrap().contains("web"));
    // The plugin sockets are root-only, and go with hnsd.
    let plugins = lab.dir().join("docker-plugins");
    for name in ["nat", "transparent", "l2bridge", "l2tunnel", "hnsoverlay", "hns"] {
        let meta = std::fs::metadata(plugins.join(format!("{name}.sock"))).unwrap_or_else(|e| panic!("{name}.sock: {e}"));
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600, "{name}.sock");
    }
    // hnsd restarts.
    hnsd.stop().unwrap();
    drop(hnsd);
    assert_eq!(std::fs::read_dir(&plugins).unwrap().count(), 0, "plugin sockets left after hnsd stopped");
    let hnsd = lab.start_hnsd(&["--no-default-network"]).unwrap();
    assert!(served_from_lan(&lab, 8090), "after an hnsd restart");
    // hnsd down while dockerd restarts.
    hnsd.stop().unwrap();
    drop(hnsd);
    docker.restart().unwrap();
    let hnsd = lab.start_hnsd(&["--no-default-network"]).unwrap();
    assert!(served_from_lan(&lab, 8090), "after restarting dockerd while hnsd was down");
    // dockerd down while hnsd restarts.
    docker.stop().unwrap();
    hnsd.stop().unwrap();
    drop(hnsd);
    let _hnsd = lab.start_hnsd(&["--no-default-network"]).unwrap();
    docker.restart().unwrap();
    assert!(served_from_lan(&lab, 8090), "after restarting hnsd while dockerd was down");
    // And the plugins still work afterwards.
    run(&docker, &["--name", "late", "--net", "front"], SLEEP);
    assert!(ping(&docker, "late", "web"));

    docker.docker_ok(&["rm", "-f", "web", "db", "late"]).unwrap();
    docker.docker_ok(&["network", "rm", "front", "back"]).unwrap();
    assert_clean(&lab);
}

#[test]
fn compose_services_reach_each_other_by_name() {
    let lab = Lab::new().unwrap();
    let (_hnsd, docker) = setup(&lab);
    let file = lab.dir().join("docker-compose.yml");
    std::fs::write(
        &file,
        format!(
            "version: \"2.4\"
services:
  web:
    image: {BUSYBOX_IMAGE}
    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
    ports: [\"8085:80\"]
    networks: [appnet]
  client:
    image: {BUSYBOX_IMAGE}
    command: [\"sleep\", \"600\"]
    networks: [appnet]
networks:
  appnet:
    driver: nat
    ipam:
      config:
        - subnet: 10.60.0.0/24
"
        ),
    )
    .unwrap();
    let up = docker.compose(&file, "shop", &["up", "-d"]).unwrap();
    assert!(up.status.success(), "compose up: {}{}", up.stdout, up.stderr);
    let get = docker.compose(&file, "shop", &["exec", "-T", "client", "wget", "-q", "-O-", "http://web/"]).unwrap();
    assert!(get.stdout.contains(BUSYBOX_PAGE), "client -> web by name: {}{}", get.stdout, get.stderr);
    assert!(served_from_lan(&lab, 8085), "the published port");
    let down = docker.compose(&file, "shop", &["down"]).unwrap();
    assert!(down.status.success(), "compose down: {}{}", down.stdout, down.stderr);
    assert_clean(&lab);
}

/// `-o ...enable_outboundnat=true` with `outboundnat_exceptions`: every container of the
/// l2bridge network reaches the LAN with the host's address, except towards the exceptions.
#[test]
fn l2bridge_outbound_nat_options_apply_to_every_container() {
    let lab = Lab::new().unwrap();
    let (_hnsd, docker) = setup(&lab);
    let u = lab.add_uplink(2, false).unwrap();
    lab.in_lan("ip", &["addr", "add", "10.77.2.3/24", "dev", &u.lan_bridge]).unwrap();
    let _s = [lab.start_tcp_server_in_lan("10.77.2.1:8080").unwrap(), lab.start_tcp_server_in_lan("10.77.2.3:8080").unwrap()];
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    let router = u.router.to_string();
    docker
        .docker_ok(&[
            "network", "create", "-d", "l2bridge", "--subnet", &u.subnet, "--gateway", &router, "-o", &iface,
            "-o", "com.docker.network.windowsshim.enable_outboundnat=true", "-o", "com.docker.network.windowsshim.outboundnat_exceptions=10.77.2.3", "onat",
        ])
        .unwrap();
    run(&docker, &["--name", "onatc", "--net", "onat", "--ip", "10.77.2.50"], SLEEP);
    let seen = |target: &str| {
        let o = docker.docker(&["exec", "onatc", "sh", "-c", &format!("busybox nc -w 3 {target} 8080 </dev/null")]).unwrap();
        o.stdout.lines().find_map(|l| l.strip_prefix("peer=")).map(|p| p.split_whitespace().next().unwrap_or_default().rsplit_once(':').unwrap().0.to_owned()).unwrap_or_else(|| panic!("{}{}", o.stdout, o.stderr))
    };
    assert_eq!(seen("10.77.2.1"), u.host_ip.to_string(), "NATed to the host's address");
    assert_eq!(seen("10.77.2.3"), "10.77.2.50", "the exception keeps the container's address");
    fails_with(&docker, &["network", "create", "-d", "l2bridge", "-o", "com.docker.network.windowsshim.outboundnat_exceptions=10.0.0.0/8", "bad"], "enable_outboundnat");
}
