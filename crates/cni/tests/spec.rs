//! The CNI spec, driven exactly as a runtime drives a plugin: the real `hns-cni` binary exec'd
//! inside a lab host with `CNI_*` variables and the config on stdin, against a real hnsd, with
//! network namespaces made the way runtimes make them (a bind-mounted namespace file).

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use hns_lab::{HOST_UPLINK, Lab, Side, http_get};
use serde_json::{Value, json};

const SUBNET: &str = "10.77.0.0/24";
const GATEWAY: &str = "10.77.0.1";

struct Out {
    ok: bool,
    json: Value,
    stdout: String,
}

impl Out {
    fn code(&self) -> u64 {
        self.json["code"].as_u64().unwrap_or(0)
    }
    fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or_default()
    }
}

/// One attachment's variables.
struct Call<'a> {
    cid: &'a str,
    netns: &'a str,
    ifname: &'a str,
    args: &'a str,
}

fn call<'a>(cid: &'a str, netns: &'a str) -> Call<'a> {
    Call { cid, netns, ifname: "eth0", args: "" }
}

fn cni(lab: &Lab, command: &str, c: &Call, conf: &Value) -> Out {
    let mut cmd = lab.host().cmd(env!("CARGO_BIN_EXE_hns-cni"));
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", c.cid)
        .env("CNI_NETNS", c.netns)
        .env("CNI_IFNAME", c.ifname)
        .env("CNI_ARGS", c.args)
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("exec hns-cni");
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    if !o.status.success() {
        assert!(json["code"].is_u64() && json["msg"].is_string(), "{command}: a failure must print a CNI error: {stdout:?}");
    }
    Out { ok: o.status.success(), json, stdout }
}

fn conf(lab: &Lab, version: &str) -> Value {
    json!({
        "cniVersion": version, "name": "hnsnet", "type": "hns",
        "socket": lab.socket(), "ipam": { "subnet": SUBNET },
    })
}

/// A network namespace pinned by a bind-mounted file, as `ip netns add` and runtimes make
/// them, inside the lab host's private mount namespace.
struct Netns<'a> {
    lab: &'a Lab,
    path: String,
}

impl<'a> Netns<'a> {
    fn new(lab: &'a Lab, name: &str) -> Netns<'a> {
        let dir = lab.run_dir().join("cni-netns");
        let path = dir.join(name).display().to_string();
        lab.host().sh(&format!("mkdir -p {d} && touch {path} && unshare --net={path} ip link set lo up", d = dir.display())).unwrap();
        Netns { lab, path }
    }
    fn run(&self, program: &str, args: &[&str]) -> hns_lab::RunOutput {
        let net = format!("--net={}", self.path);
        let mut full = vec![net.as_str(), program];
        full.extend_from_slice(args);
        self.lab.try_in(Side::Host, "nsenter", &full).unwrap()
    }
    fn ping(&self, ip: &str) -> bool {
        self.run("ping", &["-c1", "-w3", "-i0.2", "-W1", ip]).status.success()
    }
    /// Removes the namespace the way runtimes do (lazy unmount, unlink).
    fn remove(&self) {
        self.lab.host().sh(&format!("umount -l {p} && rm {p}", p = self.path)).unwrap();
    }
}

fn api(lab: &Lab, path: &str) -> Value {
    let r = http_get(&lab.socket(), path).unwrap();
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn endpoints(lab: &Lab) -> Vec<Value> {
    api(lab, "/endpoints").as_array().cloned().unwrap_or_default()
}

fn snapshot(lab: &Lab) -> Value {
    json!({ "networks": api(lab, "/networks"), "endpoints": api(lab, "/endpoints"), "namespaces": api(lab, "/namespaces") })
}

fn probe() -> String {
    Lab::bin("labprobe").unwrap().display().to_string()
}

#[test]
fn add_check_del_as_a_runtime_does() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let ns = Netns::new(&lab, "c1");
    let conf = conf(&lab, "1.0.0");
    let c = Call { ifname: "net1", args: "IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=shop;FOO=bar", ..call("c1", &ns.path) };

    let add = cni(&lab, "ADD", &c, &conf);
    assert!(add.ok, "ADD failed: {}", add.stdout);
    let r = &add.json;
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], "net1", "CNI_IFNAME names the interface: {r}");
    assert_eq!(r["interfaces"][0]["sandbox"], ns.path.as_str());
    let addr = r["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(addr.starts_with("10.77.0.") && addr.ends_with("/24"), "{r}");
    assert_eq!(r["ips"][0]["gateway"], GATEWAY);
    assert_eq!(r["ips"][0]["interface"], 0);
    assert!(r["ips"][0].get("version").is_none(), "1.0.0 results have no ips[].version");
    assert_eq!(r["routes"], json!([{ "dst": "0.0.0.0/0", "gw": GATEWAY }]));
    assert!(r["dns"]["nameservers"].as_array().is_some_and(|n| !n.is_empty()), "{r}");

    // The kernel agrees: the interface, its MAC and address are in the namespace; the gateway answers.
    let link = ns.run("ip", &["-o", "addr", "show", "dev", "net1"]).stdout;
    assert!(link.contains(&addr), "{link}");
    let mac = ns.run("ip", &["-o", "link", "show", "dev", "net1"]).stdout;
    assert!(mac.contains(r["interfaces"][0]["mac"].as_str().unwrap()), "{mac} vs {r}");
    assert!(ns.ping(GATEWAY), "the gateway does not answer");

    // hnsd shows the endpoint under the pod's name and namespace.
    let eps = endpoints(&lab);
    assert_eq!(eps.len(), 1);
    assert_eq!((eps[0]["Name"].as_str(), eps[0]["Owner"].as_str()), (Some("web"), Some("shop")));

    // ADD again: the same result, nothing new.
    let again = cni(&lab, "ADD", &c, &conf);
    assert!(again.ok && again.json == add.json, "{} vs {}", again.stdout, add.stdout);
    assert_eq!(endpoints(&lab).len(), 1);

    let mut check_conf = conf.clone();
    check_conf["prevResult"] = add.json.clone();
    let check = cni(&lab, "CHECK", &c, &check_conf);
    assert!(check.ok && check.stdout.trim().is_empty(), "CHECK: {}", check.stdout);

    // Someone removes the address behind hns's back: CHECK says so.
    ns.run("ip", &["addr", "flush", "dev", "net1"]);
    let check = cni(&lab, "CHECK", &c, &check_conf);
    assert!(!check.ok && check.code() == 102 && check.msg().contains("lacks address"), "{}", check.stdout);

    let del = cni(&lab, "DEL", &c, &conf);
    assert!(del.ok && del.stdout.trim().is_empty(), "DEL: {}", del.stdout);
    assert!(endpoints(&lab).is_empty());
    assert_eq!(api(&lab, "/namespaces"), json!([]), "the adopted namespace's record goes with its last endpoint");
    assert!(!ns.run("ip", &["link", "show", "net1"]).status.success(), "the interface stays after DEL");
    let del = cni(&lab, "DEL", &c, &conf);
    assert!(del.ok, "a second DEL must succeed: {}", del.stdout);
    let check = cni(&lab, "CHECK", &c, &check_conf);
    assert!(!check.ok && check.code() == 102 && check.msg().contains("no endpoint"), "{}", check.stdout);
}

#[test]
fn every_cni_version_and_version_command() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let ns = Netns::new(&lab, "v");
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let c = call("ctr-v", &ns.path);
        let add = cni(&lab, "ADD", &c, &conf(&lab, v));
        assert!(add.ok, "{v}: {}", add.stdout);
        assert_eq!(add.json["cniVersion"], v);
        assert_eq!(add.json["ips"][0].get("version").is_some(), v.starts_with("0."), "{v}: {}", add.stdout);
        assert!(cni(&lab, "DEL", &c, &conf(&lab, v)).ok);
    }
    // cniVersions alone: the highest the plugin speaks.
    let mut list = conf(&lab, "");
    list.as_object_mut().unwrap().remove("cniVersion");
    list["cniVersions"] = json!(["0.4.0", "1.1.0", "9.0.0"]);
    let add = cni(&lab, "ADD", &call("ctr-l", &ns.path), &list);
    assert_eq!(add.json["cniVersion"], "1.1.0", "{}", add.stdout);
    assert!(cni(&lab, "DEL", &call("ctr-l", &ns.path), &list).ok);

    let before = snapshot(&lab);
    let bad = cni(&lab, "ADD", &call("ctr-x", &ns.path), &conf(&lab, "2.0.0"));
    assert!(!bad.ok && bad.code() == 1 && bad.msg().contains("2.0.0"), "{}", bad.stdout);
    assert_eq!(snapshot(&lab), before);
    // CHECK needs 0.4.0, GC and STATUS need 1.1.0.
    let mut old = conf(&lab, "0.3.1");
    old["prevResult"] = json!({});
    assert_eq!(cni(&lab, "CHECK", &call("ctr-v", &ns.path), &old).code(), 1);
    assert_eq!(cni(&lab, "GC", &call("", ""), &conf(&lab, "1.0.0")).code(), 1);

    let v = cni(&lab, "VERSION", &call("", ""), &json!({ "cniVersion": "1.0.0" }));
    assert!(v.ok);
    assert_eq!(v.json, json!({ "cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] }));
}

#[test]
fn del_after_the_namespace_is_gone_frees_everything() {
    let lab = Lab::new().unwrap();
    // No reconcile pass meanwhile: what is freed, the plugin freed.
    let _d = lab.start_hnsd(&["--reconcile-interval", "60m"]).unwrap();
    let ns = Netns::new(&lab, "gone");
    let mut conf = conf(&lab, "1.0.0");
    conf["runtimeConfig"] = json!({ "ips": ["10.77.0.50/24"] });
    let c = call("gone1", &ns.path);
    let add = cni(&lab, "ADD", &c, &conf);
    assert!(add.ok, "{}", add.stdout);
    assert_eq!(add.json["ips"][0]["address"], "10.77.0.50/24");
    ns.remove();
    // The runtime passes the old path, or none.
    let del = cni(&lab, "DEL", &Call { netns: "", ..call("gone1", "") }, &conf);
    assert!(del.ok, "{}", del.stdout);
    assert!(cni(&lab, "DEL", &c, &conf).ok);
    assert!(endpoints(&lab).is_empty());
    assert_eq!(api(&lab, "/namespaces"), json!([]), "hnsd still holds the removed namespace");
    // The address is free again at once.
    let ns2 = Netns::new(&lab, "gone2");
    let add = cni(&lab, "ADD", &call("gone2", &ns2.path), &conf);
    assert!(add.ok, "the static address was not released: {}", add.stdout);
}

#[test]
fn hnsd_down_is_try_again_and_status_follows_hnsd() {
    let lab = Lab::new().unwrap();
    let ns = Netns::new(&lab, "down");
    let c = call("down1", &ns.path);
    let add = cni(&lab, "ADD", &c, &conf(&lab, "1.1.0"));
    assert!(!add.ok && add.code() == 11 && add.msg().contains("hnsd does not answer"), "{}", add.stdout);
    let status = cni(&lab, "STATUS", &call("", ""), &conf(&lab, "1.1.0"));
    assert!(!status.ok && status.code() == 50 && status.msg().contains("hnsd does not answer"), "{}", status.stdout);
    // DEL cannot know whether anything is left: try again later, not a false success.
    let del = cni(&lab, "DEL", &c, &conf(&lab, "1.1.0"));
    assert!(!del.ok && del.code() == 11, "{}", del.stdout);

    let _d = lab.start_hnsd(&[]).unwrap();
    let status = cni(&lab, "STATUS", &call("", ""), &conf(&lab, "1.1.0"));
    assert!(status.ok && status.stdout.trim().is_empty(), "{}", status.stdout);
    // A network that does not exist and cannot be made: not ready.
    let mut named = conf(&lab, "1.1.0");
    named.as_object_mut().unwrap().remove("ipam");
    named["network"] = json!("nosuch");
    let status = cni(&lab, "STATUS", &call("", ""), &named);
    assert!(!status.ok && status.code() == 50 && status.msg().contains("\"nosuch\""), "{}", status.stdout);
    assert!(cni(&lab, "ADD", &c, &conf(&lab, "1.1.0")).ok);
}

#[test]
fn gc_removes_exactly_what_is_not_valid() {
    let lab = Lab::new().unwrap();
    // No reconcile pass meanwhile: what is freed, the plugin freed.
    let _d = lab.start_hnsd(&["--reconcile-interval", "60m"]).unwrap();
    let spaces: Vec<Netns> = ["g1", "g2", "g3", "g4"].iter().map(|n| Netns::new(&lab, n)).collect();
    let conf = conf(&lab, "1.1.0");
    for (i, ns) in spaces.iter().enumerate() {
        let id = format!("g{}", i + 1);
        assert!(cni(&lab, "ADD", &call(&id, &ns.path), &conf).ok);
    }
    // An endpoint made through the API, not by CNI, on the same network.
    let body = json!({ "HostComputeNetwork": "hnsnet", "Name": "byhand" }).to_string();
    let hns_client::Reply { status, body: text, .. } = hns_client::request(&lab.socket(), "POST", "/endpoints", &body, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(status, 200, "{text}");
    // g4's runtime removed its namespace without a DEL.
    spaces[3].remove();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": "g1", "ifname": "eth0" }]);
    gc["cni.dev/attachments"] = json!([{ "containerID": "g2", "ifname": "eth0" }]);
    let out = cni(&lab, "GC", &call("", ""), &gc);
    assert!(out.ok && out.stdout.trim().is_empty(), "{}", out.stdout);
    let mut names: Vec<String> = endpoints(&lab).iter().map(|e| e["Name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["byhand", "g1", "g2"]);
    assert!(!spaces[2].run("ip", &["link", "show", "eth0"]).status.success(), "g3's interface survived GC");
    let paths: Vec<String> = api(&lab, "/namespaces").as_array().unwrap().iter().map(|n| n["NetNsPath"].as_str().unwrap().to_owned()).collect();
    assert!(!paths.contains(&spaces[3].path), "hnsd still holds g4's removed namespace: {paths:?}");
    assert!(spaces[0].ping(GATEWAY), "GC broke a valid attachment");
}

#[test]
fn bad_config_is_refused_by_name_and_changes_nothing() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let ns = Netns::new(&lab, "bad");
    lab.hnsctl_ok(&["network", "create", "--driver", "nat", "--subnet", "10.66.0.0/24", "taken"]).unwrap();
    let before = snapshot(&lab);
    let base = conf(&lab, "1.0.0");
    let with = |patch: Value| {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let cases = [
        (with(json!({ "ipam": { "subnet": "10.77.0.0/33" } })), 7, "ipam.subnet"),
        (with(json!({ "ipam": { "type": "host-local", "subnet": SUBNET } })), 7, "host-local"),
        (with(json!({ "ipam": { "subnet": SUBNET, "rangeStart": "10.77.0.9" } })), 2, "ipam.rangeStart"),
        (with(json!({ "master": "eth0" })), 2, "\"master\""),
        (with(json!({ "type": "bridge" })), 7, "\"bridge\""),
        (with(json!({ "runtimeConfig": { "bandwidth": { "ingressRate": 1000 } } })), 7, "runtimeConfig.bandwidth.ingressRate"),
        (with(json!({ "runtimeConfig": { "portMappings": [{ "hostPort": 80, "containerPort": 80, "protocol": "sctp" }] } })), 7, "sctp"),
        // hnsd's own checks, in its words: an address outside the subnet, a network with another subnet.
        (with(json!({ "runtimeConfig": { "ips": ["10.99.0.5/24"] } })), 7, "outside the subnets"),
        (with(json!({ "network": "taken" })), 7, "10.66.0.0/24"),
    ];
    for (conf, code, needle) in cases {
        let out = cni(&lab, "ADD", &call("bad1", &ns.path), &conf);
        assert!(!out.ok && out.code() == code && out.msg().contains(needle), "{conf}:\n{}", out.stdout);
        assert_eq!(snapshot(&lab), before, "{conf} left something behind");
    }
    // Bad variables: code 4.
    let out = cni(&lab, "ADD", &Call { args: "FOO=1", ..call("bad1", &ns.path) }, &base);
    assert!(out.code() == 4 && out.msg().contains("FOO"), "{}", out.stdout);
    let out = cni(&lab, "ADD", &call("bad1", ""), &base);
    assert!(out.code() == 4 && out.msg().contains("CNI_NETNS"), "{}", out.stdout);
    assert_eq!(snapshot(&lab), before);
}

/// The `bandwidth` capability becomes the endpoint's QOS policy (bits/s to bytes/s), enforced
/// with tc on the host side of the container's veth.
#[test]
fn bandwidth_becomes_a_qos_policy_on_the_host_veth() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let ns = Netns::new(&lab, "bw");
    let mut conf = conf(&lab, "1.0.0");
    conf["runtimeConfig"] = json!({ "bandwidth": { "egressRate": 8_000_000, "egressBurst": 80_000, "ingressRate": 16_000_000, "ingressBurst": 160_000 } });
    let c = call("bw", &ns.path);
    let add = cni(&lab, "ADD", &c, &conf);
    assert!(add.ok, "{}", add.stdout);
    let ep = &endpoints(&lab)[0];
    let q = ep["Policies"].as_array().unwrap().iter().find(|p| p["Type"] == "QOS").cloned().unwrap_or_else(|| panic!("{ep}"));
    assert_eq!(q["Settings"], json!({ "MaximumOutgoingBandwidthInBytes": 1_000_000, "MaximumIncomingBandwidthInBytes": 2_000_000 }));
    let id = ep["ID"].as_str().unwrap().replace('-', "");
    let (veth, ifb) = (format!("hnv{}", &id[..12]), format!("hnf{}", &id[..12]));
    let qd = lab.in_host("tc", &["qdisc", "show", "dev", &ifb]).unwrap().stdout;
    assert!(qd.contains("tbf") && qd.contains("rate 8Mbit"), "egress cap on the IFB: {qd}");
    let qd = lab.in_host("tc", &["qdisc", "show", "dev", &veth]).unwrap().stdout;
    assert!(qd.contains("tbf") && qd.contains("rate 16Mbit"), "ingress cap on the host veth: {qd}");
    assert!(cni(&lab, "DEL", &c, &conf).ok);
    assert!(!lab.in_host("ip", &["-o", "link", "show"]).unwrap().stdout.contains(&ifb), "the IFB goes with the endpoint");
}

#[test]
fn port_mapping_static_ip_mac_and_a_second_interface() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let ns = Netns::new(&lab, "pm");
    let mut conf = conf(&lab, "1.0.0");
    conf["runtimeConfig"] = json!({ "portMappings": [{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": HOST_UPLINK.to_string() }] });
    let c = Call { args: "IgnoreUnknown=1;IP=10.77.0.42;MAC=02:00:00:00:00:42", ..call("pm1", &ns.path) };
    let add = cni(&lab, "ADD", &c, &conf);
    assert!(add.ok, "{}", add.stdout);
    assert_eq!(add.json["ips"][0]["address"], "10.77.0.42/24");
    assert_eq!(add.json["interfaces"][0]["mac"], "02:00:00:00:00:42");
    let net = format!("--net={}", ns.path);
    let _srv = lab.spawn_in_host("nsenter", &[&net, &probe(), "serve-tcp", "0.0.0.0:80"]).unwrap();
    let target = format!("{HOST_UPLINK}:8080");
    let reached = (0..50).any(|_| {
        let ok = lab.probe(Side::Lan, &["connect-tcp", &target, "--timeout-ms", "1500"]).unwrap().status.success();
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    assert!(reached, "the LAN does not reach the container through {target}");

    // A second interface in the same namespace, on another network: the compartment is shared.
    let other = json!({ "cniVersion": "1.0.0", "name": "second", "type": "hns", "socket": lab.socket(), "ipam": { "subnet": "10.78.0.0/24" } });
    let c2 = Call { ifname: "eth1", ..call("pm1", &ns.path) };
    let add2 = cni(&lab, "ADD", &c2, &other);
    assert!(add2.ok, "{}", add2.stdout);
    assert_eq!(api(&lab, "/namespaces").as_array().unwrap().len(), 1);
    assert!(ns.ping("10.78.0.1") && ns.ping(GATEWAY));
    // The same interface name twice in one namespace: hnsd refuses, in its words.
    let third = json!({ "cniVersion": "1.0.0", "name": "third", "type": "hns", "socket": lab.socket(), "ipam": { "subnet": "10.79.0.0/24" } });
    let clash = cni(&lab, "ADD", &c2, &third);
    assert!(!clash.ok && clash.code() == 100 && clash.msg().contains("InterfaceName \"eth1\" is taken in namespace"), "{}", clash.stdout);
    // DEL of one leaves the other working.
    assert!(cni(&lab, "DEL", &c2, &other).ok);
    assert!(ns.ping(GATEWAY));
    assert_eq!(api(&lab, "/namespaces").as_array().unwrap().len(), 1);
    assert!(cni(&lab, "DEL", &c, &conf).ok);
    assert_eq!(api(&lab, "/portmappings"), json!([]));
    assert_eq!(api(&lab, "/namespaces"), json!([]));
}

#[test]
fn a_stale_attachment_is_replaced_and_a_taken_name_gets_the_container_id() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let (a, b, c) = (Netns::new(&lab, "a"), Netns::new(&lab, "b"), Netns::new(&lab, "c"));
    let conf = conf(&lab, "1.0.0");
    // The runtime made a new sandbox for the same container ID without a DEL of the old one.
    assert!(cni(&lab, "ADD", &call("same", &a.path), &conf).ok);
    let add = cni(&lab, "ADD", &call("same", &b.path), &conf);
    assert!(add.ok && add.json["interfaces"][0]["sandbox"] == b.path.as_str(), "{}", add.stdout);
    assert!(!a.run("ip", &["link", "show", "eth0"]).status.success(), "the old sandbox keeps its interface");
    assert!(b.ping(GATEWAY));
    assert_eq!(endpoints(&lab).len(), 1);
    // Two pods named web (in different Kubernetes namespaces) on one network.
    assert!(cni(&lab, "DEL", &call("same", &b.path), &conf).ok);
    let one = Call { args: "K8S_POD_NAME=web;K8S_POD_NAMESPACE=one", ..call("0123456789abcdef", &b.path) };
    assert!(cni(&lab, "ADD", &one, &conf).ok);
    let two = Call { args: "K8S_POD_NAME=web;K8S_POD_NAMESPACE=two", ..call("fedcba9876543210", &c.path) };
    let second = cni(&lab, "ADD", &two, &conf);
    assert!(second.ok, "{}", second.stdout);
    let mut names: Vec<String> = endpoints(&lab).iter().map(|e| e["Name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["web", "web-fedcba987654"]);
}

/// A conflist written for windows-container-networking's `nat`: the network it names is made
/// from its ipam (gateway from the first route), the endpoint is named as there, the pod's
/// namespace goes before the first search domain, an `EndpointPolicy` of AdditionalArgs reaches
/// hnsd, and what hns does not implement is refused by name with nothing made.
#[test]
fn a_windows_nat_conflist_works_here() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let ns = Netns::new(&lab, "win");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "winnat", "type": "nat", "socket": lab.socket(),
        "ipam": { "subnet": "10.80.0.0/24", "routes": [{ "GW": "10.80.0.1" }] },
        "dns": { "Nameservers": ["198.51.100.1"], "Search": ["svc.cluster.local"] },
        "optionalFlags": { "localRoutedPortMapping": false },
        "AdditionalArgs": [{ "Name": "EndpointPolicy", "Value": { "Type": "PortMapping", "Settings": { "Protocol": 6, "InternalPort": 80, "ExternalPort": 8090 } } }]
    });
    let c = Call { args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web", ..call("winctr", &ns.path) };
    let add = cni(&lab, "ADD", &c, &conf);
    assert!(add.ok, "{}", add.stdout);
    assert_eq!(add.json["ips"][0]["gateway"], "10.80.0.1");
    let net = api(&lab, "/networks/winnat");
    assert_eq!(net["Type"], "NAT", "{net}");
    let ep = &endpoints(&lab)[0];
    assert_eq!(ep["Name"], "winctr_winnat");
    assert_eq!(ep["Dns"]["Search"], json!(["shop.svc.cluster.local"]), "{ep}");
    assert_eq!(api(&lab, "/portmappings")[0]["ExternalPort"], 8090);
    assert!(ns.ping("10.80.0.1"));
    assert!(cni(&lab, "DEL", &c, &conf).ok);

    // OutBoundNAT from AdditionalArgs reaches the endpoint (its Exceptions skip the masquerade).
    let mut outbound = conf.clone();
    outbound["AdditionalArgs"] = json!([{ "Name": "EndpointPolicy", "Value": { "Type": "OutBoundNAT", "Settings": { "Exceptions": ["10.0.0.0/8"] } } }]);
    let out = cni(&lab, "ADD", &c, &outbound);
    assert!(out.ok, "{}", out.stdout);
    let ep = &endpoints(&lab)[0];
    let p = ep["Policies"].as_array().unwrap().iter().find(|p| p["Type"] == "OutBoundNAT").cloned();
    assert_eq!(p.map(|p| p["Settings"]["Exceptions"].clone()), Some(json!(["10.0.0.0/8"])), "{ep}");
    assert!(cni(&lab, "DEL", &c, &outbound).ok);
    let before = snapshot(&lab);
    let mut flag = conf.clone();
    flag["optionalFlags"] = json!({ "loopbackDSR": true });
    let out = cni(&lab, "ADD", &c, &flag);
    assert!(!out.ok && out.code() == 2 && out.msg().contains("optionalFlags.loopbackDSR"), "{}", out.stdout);
    assert_eq!(snapshot(&lab), before);
}

/// `sdnbridge` with its `master` adapter: an L2Bridge network on the LAN, the container (at
/// its `ipam.ipAddress`) reaches the LAN's router.
#[test]
fn a_windows_sdnbridge_conflist_puts_the_container_on_the_lan() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let u = lab.add_uplink(3, false).unwrap();
    let ns = Netns::new(&lab, "br");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "cbr0", "type": "sdnbridge", "master": u.host_if, "socket": lab.socket(),
        // A static address: the LAN's own hosts (the router .1, this host .2) are not hns's to hand out.
        "ipam": { "subnet": u.subnet, "routes": [{ "GW": u.router.to_string() }], "ipAddress": u.addr(50).to_string() }
    });
    let c = call("brctr", &ns.path);
    let add = cni(&lab, "ADD", &c, &conf);
    assert!(add.ok, "{}", add.stdout);
    assert_eq!(add.json["ips"][0]["address"], format!("{}/24", u.addr(50)));
    assert_eq!(api(&lab, "/networks/cbr0")["Type"], "L2Bridge");
    assert!(ns.ping(&u.router.to_string()), "the container does not reach the LAN's router");
    assert!(cni(&lab, "DEL", &c, &conf).ok);
    assert!(endpoints(&lab).is_empty());
}
