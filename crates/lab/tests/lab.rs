//! Lab tests against real namespaces (root required). `labprobe` is built by
//! cargo for this package's tests; see the crate docs.

use std::fs;
use std::path::Path;

use hns_lab::{HOST_UPLINK, Lab, LabOptions, LAN_ROUTER, Side, TEST_SERVER, http_get};
use nix::sys::signal::Signal;

fn ns_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn holders_are_really_elsewhere() {
    let lab = Lab::new().unwrap();
    let ours = ns_inode("/proc/self/ns/net");
    assert!(lab.host().is_alive() && lab.lan().is_alive());
    for side in [Side::Host, Side::Lan] {
        let h = lab.holder(side);
        assert_ne!(ns_inode(h.netns_path().to_str().unwrap()), ours);
        let seen = h.run("readlink", ["/proc/self/ns/net"]).unwrap().stdout;
        let expected = fs::read_link(h.netns_path()).unwrap();
        assert_eq!(seen.trim(), expected.to_str().unwrap(), "{side:?}: command ran in the wrong netns");
    }
    // The run dir is a tmpfs in the host's mount namespace only.
    let run = lab.run_dir();
    let host_mounts = fs::read_to_string(format!("/proc/{}/mounts", lab.host().pid())).unwrap();
    assert!(host_mounts.contains(run.to_str().unwrap()));
    assert!(!fs::read_to_string("/proc/self/mounts").unwrap().contains(run.to_str().unwrap()));
    // Forwarding is on inside, and the uplink is where it should be.
    let fwd = lab.in_host("cat", &["/proc/sys/net/ipv4/ip_forward"]).unwrap().stdout;
    assert_eq!(fwd.trim(), "1");
    let addrs = lab.in_host("ip", &["-o", "-4", "addr", "show", "dev", "eth0"]).unwrap().stdout;
    assert!(addrs.contains(&format!("{HOST_UPLINK}/24")), "{addrs}");
    assert!(lab.leftovers_in_host().unwrap().is_empty());
}

#[test]
fn host_reaches_router_and_test_server() {
    let lab = Lab::new().unwrap();
    for target in [LAN_ROUTER, TEST_SERVER] {
        let t = target.to_string();
        lab.in_host("ping", &["-c1", "-w3", "-i0.2", "-W1", &t]).unwrap();
    }
    let route = lab.in_host("ip", &["route", "get", &TEST_SERVER.to_string()]).unwrap().stdout;
    assert!(route.contains(&format!("via {LAN_ROUTER}")), "{route}");
}

#[test]
fn tcp_and_udp_probes_report_the_host_uplink() {
    let lab = Lab::new().unwrap();
    lab.start_tcp_server_in_lan(&format!("{TEST_SERVER}:7000")).unwrap();
    lab.start_udp_server_in_lan(&format!("{TEST_SERVER}:7001")).unwrap();

    let out = lab
        .probe(Side::Host, &["connect-tcp", &format!("{TEST_SERVER}:7000"), "--send", "hello"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut lines = out.stdout.lines();
    let peer = lines.next().unwrap();
    assert!(peer.starts_with(&format!("peer={HOST_UPLINK}:")), "{peer}");
    assert_eq!(lines.next(), Some("hello"));

    let out = lab.probe(Side::Host, &["send-udp", &format!("{TEST_SERVER}:7001"), "ping"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.starts_with(&format!("peer={HOST_UPLINK}:")), "{out:?}");
    assert!(out.stdout.trim_end().ends_with(" ping"), "{out:?}");

    // Nothing listens on 7002: a clear failure, exit code 1.
    let out = lab
        .probe(Side::Host, &["connect-tcp", &format!("{TEST_SERVER}:7002"), "--timeout-ms", "500"])
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("connect to tcp"), "{out:?}");
    let out = lab
        .probe(Side::Host, &["send-udp", &format!("{TEST_SERVER}:7000"), "x", "--timeout-ms", "300"])
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn drop_leaves_nothing_behind() {
    let lab = Lab::new().unwrap();
    let server = lab.start_tcp_server_in_lan(&format!("{TEST_SERVER}:7000")).unwrap();
    // A stray process inside the host that nobody tracks: the drop sweep
    // must get it, or it would keep the host namespaces alive.
    let mut stray = lab.host().cmd("sleep");
    stray.arg("1000").stdin(std::process::Stdio::null());
    let stray = stray.spawn().unwrap();
    let stray_pid = stray.id();
    // Wait until nsenter has moved it inside (otherwise this tests nothing).
    let host_mnt = fs::read_link(lab.host().mntns_path().unwrap()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while fs::read_link(format!("/proc/{stray_pid}/ns/mnt")).ok() != Some(host_mnt.clone()) {
        assert!(std::time::Instant::now() < deadline, "stray never entered the host");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    let pids = [lab.host().pid(), lab.lan().pid(), server.pid()];
    let dir = lab.dir().to_path_buf();
    assert!(dir.join("state").is_dir());
    drop(lab);
    // The stray was our child: reap it (it was killed by the sweep).
    let status = { let mut s = stray; s.wait().unwrap() };
    assert!(!status.success());
    assert!(!pid_exists(stray_pid));
    for pid in pids {
        assert!(!pid_exists(pid), "pid {pid} still exists");
    }
    assert!(!dir.exists(), "{} still exists", dir.display());
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(dir.to_str().unwrap()), "{mounts}");
}

/// `hnsd` stand-in: labprobe's fake-hnsd behind a script (shebang keeps the
/// PID: nsenter -> sh -> exec labprobe).
fn fake_hnsd(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let probe = Lab::bin("labprobe").unwrap();
    let path = dir.join("fake-hnsd");
    fs::write(&path, format!("#!/bin/sh\nexec {} fake-hnsd \"$@\"\n", probe.display())).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn daemon_lifecycle_with_a_fake_hnsd() {
    let mut lab = Lab::new().unwrap();
    let fake = fake_hnsd(lab.dir());
    lab.set_hnsd_bin(&fake);

    let d = lab.start_hnsd(&["--log-format", "json"]).unwrap();
    assert_eq!(http_get(&lab.socket(), "/healthz").unwrap().status, 200);
    assert_eq!(http_get(&lab.socket(), "/nope").unwrap().status, 404);
    // It really runs inside the host namespaces.
    assert_eq!(
        fs::read_link(format!("/proc/{}/ns/net", d.pid())).unwrap(),
        fs::read_link(lab.host().netns_path()).unwrap()
    );
    let log = fs::read_to_string(lab.log_path()).unwrap();
    assert!(log.contains("--reconcile-interval") && log.contains("--log-format"), "{log}");
    assert!(lab.start_hnsd(&[]).is_err(), "second daemon must be refused");
    assert!(lab.start_hnsd(&["--socket", "/tmp/x"]).is_err());
    assert!(lab.reboot_run_dir().is_err(), "reboot with hnsd running must be refused");

    // Crash and restart.
    let status = d.kill(Signal::SIGKILL).unwrap();
    assert!(!status.success());
    assert!(!d.is_running());
    let d2 = lab.start_hnsd(&[]).unwrap();
    assert_ne!(d.pid(), d2.pid());
    d2.stop().unwrap();
    let _d3 = lab.start_hnsd(&[]).unwrap(); // left running: the lab's drop stops it
}

#[test]
fn start_hnsd_reports_a_daemon_that_dies() {
    use std::os::unix::fs::PermissionsExt;
    let mut lab = Lab::new().unwrap();
    let bad = lab.dir().join("bad-hnsd");
    fs::write(&bad, "#!/bin/sh\necho 'boom: cannot do the thing' >&2\nexit 3\n").unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).unwrap();
    lab.set_hnsd_bin(&bad);
    let err = format!("{:#}", lab.start_hnsd(&[]).unwrap_err());
    assert!(err.contains("exited during startup") && err.contains("boom: cannot do the thing"), "{err}");
}

#[test]
fn leftovers_and_reboot() {
    let lab = Lab::new().unwrap();
    let run = lab.run_dir();
    let run = run.to_str().unwrap();
    lab.host()
        .sh(&format!(
            "set -e
             ip link add hnsv0 type veth peer name other0
             nft add table inet hns_test
             mkdir {run}/netns
             touch {run}/netns/c1
             mount --bind /proc/self/ns/net {run}/netns/c1"
        ))
        .unwrap();
    let left = lab.leftovers_in_host().unwrap();
    assert!(left.iter().any(|l| l == "link hnsv0"), "{left:?}");
    assert!(left.iter().any(|l| l == "nft table inet hns_test"), "{left:?}");
    assert!(left.iter().any(|l| l.contains(&format!("{run}/netns/c1"))), "{left:?}");
    assert_eq!(left.len(), 3, "{left:?}");

    lab.reboot_run_dir().unwrap();
    let left = lab.leftovers_in_host().unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(lab.in_host("ls", &[&format!("{run}/netns")]).is_err(), "run dir must be empty after reboot");
    // Nothing of this shows in our own mount table.
    assert!(!fs::read_to_string("/proc/self/mounts").unwrap().contains(run));
}

#[test]
fn fixed_directory_is_guarded_and_reusable() {
    let dir = std::env::temp_dir().join(format!("hns-lab-fixed-{}", std::process::id()));
    let lab = Lab::with_options(LabOptions { dir: Some(dir.clone()), hnsd_bin: None }).unwrap();
    let err = Lab::with_options(LabOptions { dir: Some(dir.clone()), hnsd_bin: None }).unwrap_err();
    assert!(format!("{err:#}").contains("in use"), "{err:#}");
    drop(lab);
    assert!(!dir.exists());

    // A foreign non-empty directory is never taken over.
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("precious"), "data").unwrap();
    let err = Lab::with_options(LabOptions { dir: Some(dir.clone()), hnsd_bin: None }).unwrap_err();
    assert!(format!("{err:#}").contains("not a lab directory"), "{err:#}");
    assert!(dir.join("precious").exists());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bin_errors_clearly() {
    let err = Lab::bin("no-such-binary-hns").unwrap_err().to_string();
    assert!(err.contains("cargo build --workspace"), "{err}");
    assert!(Lab::bin("labprobe").is_ok());
}

/// Child half of `sigkilled_test_process_leaves_nothing_behind`: runs only
/// when that test re-executes this binary with HNS_LAB_CHILD=1.
#[test]
#[ignore = "helper, run by sigkilled_test_process_leaves_nothing_behind"]
fn child_holds_a_lab_until_killed() {
    if std::env::var_os("HNS_LAB_CHILD").is_none() {
        return;
    }
    let mut lab = Lab::new().unwrap();
    let fake = fake_hnsd(lab.dir());
    lab.set_hnsd_bin(&fake);
    let d = lab.start_hnsd(&[]).unwrap();
    let server = lab.start_tcp_server_in_lan(&format!("{TEST_SERVER}:7000")).unwrap();
    println!(
        "LAB {} {} {} {} {}",
        lab.host().pid(),
        lab.lan().pid(),
        d.pid(),
        server.pid(),
        lab.dir().display()
    );
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn sigkilled_test_process_leaves_nothing_behind() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_holds_a_lab_until_killed", "--nocapture"])
        .env("HNS_LAB_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    while !line.starts_with("LAB ") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "child ended without a lab");
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let pids: Vec<u32> = fields[1..5].iter().map(|p| p.parse().unwrap()).collect();
    let dir = std::path::PathBuf::from(fields[5]);
    for &pid in &pids {
        assert!(pid_exists(pid));
    }

    child.kill().unwrap(); // SIGKILL: no Drop runs in the child
    child.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| pid_exists(p)) {
        assert!(Instant::now() < deadline, "lab processes survived their parent: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The directory is the one thing the kernel cannot clean; the next lab
    // created anywhere removes it (its owner is dead) — possibly a lab of a
    // test running in parallel, so it may already be gone here.
    let lab = Lab::new().unwrap();
    assert!(!dir.exists(), "stale {} not removed", dir.display());
    drop(lab);
}
