//! containerd 1.6 (Debian's) runs a container on an hns network through hns-cni: `ctr run
//! --cni` against a containerd of its own (root, state, socket in the lab dir) in a lab host,
//! with /etc/cni/net.d and /opt/cni/bin replaced inside the lab host's private mount namespace
//! (ctr reads only those), so the machine's own CNI folders are never touched.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use hns_lab::{eventually, Lab, Side, http_get};
use serde_json::{Value, json};

const SERVER: &str = "while true; do echo served by ctr | /bin/nc -l -p 80; done";

struct Containerd<'a> {
    lab: &'a Lab,
    dir: PathBuf,
}

impl<'a> Containerd<'a> {
    fn start(lab: &'a Lab) -> Containerd<'a> {
        let dir = lab.dir().join("containerd");
        for d in ["net.d", "bin", "root", "state", "rootfs/bin"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hns-cni"), dir.join("bin/hns")).unwrap();
        let conflist = json!({
            "cniVersion": "1.0.0", "name": "hnsnet",
            "plugins": [{ "type": "hns", "socket": lab.socket(), "ipam": { "subnet": "10.91.0.0/24" } }]
        });
        std::fs::write(dir.join("net.d/10-hns.conflist"), conflist.to_string()).unwrap();
        std::fs::write(dir.join("config.toml"), "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n").unwrap();
        std::fs::copy("/usr/bin/busybox", dir.join("rootfs/bin/busybox")).unwrap();
        let applets = Command::new("/usr/bin/busybox").arg("--list").output().unwrap().stdout;
        for applet in String::from_utf8_lossy(&applets).lines().filter(|a| *a != "busybox") {
            std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin").join(applet)).unwrap();
        }
        let d = dir.display();
        lab.host()
            .sh(&format!(
                "mount --bind {d}/net.d /etc/cni/net.d && mount -t tmpfs tmpfs /opt && mkdir -p /opt/cni/bin && mount --bind {d}/bin /opt/cni/bin && \
                 mount -t tmpfs tmpfs /run && (mount -t tmpfs tmpfs /var/lib/cni 2>/dev/null || (mount -t tmpfs tmpfs /var/lib && mkdir -p /var/lib/cni))"
            ))
            .unwrap();
        let mut cmd = lab.host().cmd("containerd");
        cmd.args(["--config", &format!("{d}/config.toml"), "--root", &format!("{d}/root"), "--state", &format!("{d}/state"), "--address", &format!("{d}/containerd.sock")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap());
        lab.spawn_command(cmd, "containerd").unwrap();
        let c = Containerd { lab, dir };
        assert!(eventually(Duration::from_secs(20), || c.run(&["version"]).status.success()), "containerd did not start");
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let sock = self.dir.join("containerd.sock").display().to_string();
        self.lab.host().cmd("ctr").args(["--address", &sock]).args(args).stdin(Stdio::null()).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        assert!(o.status.success(), "ctr {args:?}: {}: {}\n{}\ncontainerd's log ends:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr), tail.join("\n"));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["task", "kill", "-s", "9", "web"]);
        let _ = self.run(&["task", "delete", "-f", "web"]);
        let _ = self.run(&["container", "delete", "web"]);
    }
}

fn api(lab: &Lab, path: &str) -> Value {
    let r = http_get(&lab.socket(), path).unwrap();
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}


#[test]
fn ctr_run_cni_attaches_a_reachable_container() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let c = Containerd::start(&lab);
    let rootfs = c.dir.join("rootfs").display().to_string();
    c.ok(&["run", "-d", "--cni", "--rootfs", &rootfs, "web", "/bin/sh", "-c", SERVER]);
    let eps = api(&lab, "/endpoints");
    let ip = eps[0]["IpConfigurations"][0]["IpAddress"].as_str().unwrap_or_else(|| panic!("no endpoint: {eps}")).to_owned();
    assert!(ip.starts_with("10.91.0."), "{eps}");
    let target = format!("{ip}:80");
    let connect = || lab.probe(Side::Host, &["connect-tcp", &target, "--timeout-ms", "1000"]).unwrap();
    assert!(eventually(Duration::from_secs(5), || connect().stdout.contains("served by ctr")), "the container is not reachable at {target}: {:?}", connect());

    c.ok(&["task", "kill", "-s", "9", "web"]);
    assert!(eventually(Duration::from_secs(10), || c.run(&["task", "delete", "web"]).status.success()), "ctr task delete failed");
    assert!(eventually(Duration::from_secs(5), || api(&lab, "/endpoints") == json!([])), "the endpoint outlived the task: {}", api(&lab, "/endpoints"));
}
