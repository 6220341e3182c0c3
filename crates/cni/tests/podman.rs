//! podman 4.3 (Debian's, CNI backend) runs containers on an hns network through hns-cni, in a
//! lab host: its own root, run root, tmp dir and network config dir, and tmpfs over /run and
//! /var/lib/cni inside the lab host's private mount namespace, so nothing of the machine's
//! own podman, /etc/cni or container storage is touched. The image is a busybox rootfs made
//! with `podman import`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hns_lab::{eventually, HOST_UPLINK, Lab, Side, http_get};
use serde_json::{Value, json};

const SUBNET: &str = "10.89.0.0/24";
/// A TCP server on port 80 that greets every connection with one line (what labprobe's
/// connect-tcp waits for).
const SERVER: &str = "while true; do echo served by web | nc -l -p 80; done";

struct Podman<'a> {
    lab: &'a Lab,
    dir: PathBuf,
}

impl<'a> Podman<'a> {
    /// Sets podman up in the lab host and imports the image.
    fn new(lab: &'a Lab) -> Podman<'a> {
        assert!(Path::new("/usr/bin/podman").exists(), "podman is not installed: scripts/lib/setup.sh installs it (TEST_PACKAGES)");
        let dir = lab.dir().join("podman");
        for d in ["net.d", "bin", "root", "runroot", "tmp", "rootfs/bin"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        // The plugin's type is its file name in the plugin directory.
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hns-cni"), dir.join("bin/hns")).unwrap();
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{d}/events.log\"\n\
             [network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{d}/net.d\"\ncni_plugin_dirs = [\"{d}/bin\"]\n",
            d = dir.display()
        );
        // podman raises the containers' nofile and nproc limits above this machine's hard
        // limits by default, which runc is not allowed to do here.
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        let conflist = json!({
            "cniVersion": "1.0.0", "name": "hnsnet",
            "plugins": [{
                "type": "hns", "socket": lab.socket(), "ipam": { "subnet": SUBNET },
                "capabilities": { "portMappings": true, "ips": true, "mac": true, "aliases": true }
            }]
        });
        std::fs::write(dir.join("net.d/hnsnet.conflist"), serde_json::to_string_pretty(&conflist).unwrap()).unwrap();
        // podman's netns files (/run/netns) and libcni's cache (/var/lib/cni) stay in the lab.
        lab.host().sh("mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib/cni 2>/dev/null || (mount -t tmpfs tmpfs /var/lib && mkdir -p /var/lib/cni)").unwrap();
        // A busybox image.
        std::fs::copy("/usr/bin/busybox", dir.join("rootfs/bin/busybox")).unwrap();
        let rootfs = dir.join("rootfs");
        let applets = Command::new("/usr/bin/busybox").arg("--list").output().unwrap().stdout;
        for applet in String::from_utf8_lossy(&applets).lines().filter(|a| *a != "busybox") {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let p = Podman { lab, dir };
        let tar = p.dir.join("rootfs.tar");
        let st = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().unwrap();
        assert!(st.success());
        p.ok(&["import", tar.to_str().unwrap(), "localhost/bb"]);
        p
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let d = |s: &str| self.dir.join(s).display().to_string();
        let mut cmd = self.lab.host().cmd("podman");
        cmd.env("CONTAINERS_CONF", d("containers.conf"))
            .args(["--root", &d("root"), "--runroot", &d("runroot"), "--tmpdir", &d("tmp"), "--storage-driver", "vfs"])
            .args(["--network-config-dir", &d("net.d")])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "podman {args:?}: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af", "-t", "0"]);
    }
}

fn api(lab: &Lab, path: &str) -> Value {
    let r = http_get(&lab.socket(), path).unwrap();
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// Host-side veths of hns endpoints (live and retired) in the lab host.
fn hns_links(lab: &Lab) -> Vec<String> {
    let out = lab.in_host("ip", &["-o", "link", "show"]).unwrap().stdout;
    out.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap().to_owned()).filter(|n| n.starts_with("hnv") || n.starts_with("hnz")).collect()
}


#[test]
fn podman_runs_containers_on_an_hns_network() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let links_before = hns_links(&lab);
    let p = Podman::new(&lab);
    assert!(p.ok(&["network", "ls", "--format", "{{.Name}}"]).lines().any(|l| l == "hnsnet"), "podman network ls lacks hnsnet");

    p.ok(&["run", "-d", "--name", "web", "--network", "hnsnet", "-p", "8080:80", "--ip", "10.89.0.50", "--mac-address", "02:00:00:00:00:50", "localhost/bb", "sh", "-c", SERVER]);
    let eps = api(&lab, "/endpoints");
    let web = eps.as_array().unwrap().iter().find(|e| e["Name"] == "web").unwrap_or_else(|| panic!("no endpoint named web: {eps}"));
    assert_eq!(web["IpConfigurations"][0]["IpAddress"], "10.89.0.50", "{web}");
    assert_eq!(web["MacAddress"], "02-00-00-00-00-50", "{web}");
    let inside = p.ok(&["exec", "web", "ip", "addr", "show", "eth0"]);
    assert!(inside.contains("10.89.0.50/24") && inside.contains("02:00:00:00:00:50"), "{inside}");
    let target = format!("{HOST_UPLINK}:8080");
    let connect = || lab.probe(Side::Lan, &["connect-tcp", &target, "--timeout-ms", "1000"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || connect().stdout.contains("served by web")), "the LAN does not reach web through {target}: {:?}", connect());

    // Two containers reach each other by name.
    p.ok(&["run", "-d", "--name", "client", "--network", "hnsnet", "localhost/bb", "sleep", "300"]);
    let ping = p.run(&["exec", "client", "ping", "-c1", "-W2", "web"]);
    assert!(ping.status.success(), "client cannot reach web by name: {}{}", String::from_utf8_lossy(&ping.stdout), String::from_utf8_lossy(&ping.stderr));

    p.ok(&["rm", "-f", "-t", "0", "web", "client"]);
    assert_eq!(api(&lab, "/endpoints"), json!([]), "podman rm left endpoints");
    assert_eq!(api(&lab, "/portmappings"), json!([]), "podman rm left port mappings");
    assert!(eventually(Duration::from_secs(5), || hns_links(&lab) == links_before), "podman rm left links: {:?}", hns_links(&lab));
}

#[test]
fn podman_killed_mid_run_then_rm_leaves_nothing() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let links_before = hns_links(&lab);
    let p = Podman::new(&lab);
    let mut cmd = p.cmd(&["run", "--name", "k", "--network", "hnsnet", "-p", "8081:80", "localhost/bb", "sleep", "300"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let run = lab.spawn_command(cmd, "podman run").unwrap();
    // Mid-run: the container runs (podman recorded it) while `podman run` waits on it.
    let running = || p.run(&["inspect", "-f", "{{.State.Running}}", "k"]).stdout.starts_with(b"true");
    assert!(eventually(Duration::from_secs(20), running), "the container never ran");
    assert_eq!(api(&lab, "/endpoints").as_array().map(Vec::len), Some(1));
    run.kill(nix::sys::signal::Signal::SIGKILL).unwrap();
    p.ok(&["rm", "-f", "-t", "0", "k"]);
    assert_eq!(api(&lab, "/endpoints"), json!([]));
    assert_eq!(api(&lab, "/portmappings"), json!([]));
    assert!(eventually(Duration::from_secs(5), || hns_links(&lab) == links_before), "links left: {:?}", hns_links(&lab));
}
