//! The sandbox, end to end, with labprobe's fake-hnsd standing in for hnsd.
//! (Own test binary: it installs signal handlers and signals itself.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hns_lab::{Lab, SandboxOpts, http_get, run_sandbox};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn sandbox_runs_until_signalled_and_removes_everything() {
    let pid = std::process::id();
    let fake_dir = std::path::PathBuf::from(format!("/tmp/hns-lab-sbxbin-{pid}"));
    fs::create_dir_all(&fake_dir).unwrap();
    let fake = fake_dir.join("hnsd");
    let probe = Lab::bin("labprobe").unwrap();
    fs::write(&fake, format!("#!/bin/sh\nexec {} fake-hnsd \"$@\"\n", probe.display())).unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();

    let dir = std::path::PathBuf::from(format!("/tmp/hns-sandbox-test-{pid}"));
    let opts = SandboxOpts { dir: dir.clone(), hnsd_args: vec!["--log-level".into(), "debug".into()], hnsd_bin: fake };
    let bad = SandboxOpts { hnsd_args: vec!["--sandbox".into()], ..opts.clone() };
    assert!(run_sandbox(bad).is_err(), "--sandbox must not be passed through");

    let runner = {
        let opts = opts.clone();
        std::thread::spawn(move || run_sandbox(opts))
    };
    let shell = dir.join("shell");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !shell.exists() {
        assert!(Instant::now() < deadline, "sandbox did not come up");
        assert!(!runner.is_finished(), "sandbox ended early: {:?}", runner.join());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http_get(&dir.join("hns.sock"), "/healthz").unwrap().status, 200);

    // A second sandbox on the same directory is refused.
    let err = run_sandbox(opts.clone()).unwrap_err();
    assert!(format!("{err:#}").contains("in use"), "{err:#}");

    // The shell script lands inside the sandbox host, with HNS_SOCKET set.
    let script = fs::read_to_string(&shell).unwrap();
    let host_pid: u32 = script.split("-t ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    let out = Command::new(&shell)
        .args(["-c", "readlink /proc/self/ns/net; echo $HNS_SOCKET"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        fs::read_link(format!("/proc/{host_pid}/ns/net")).unwrap().to_str().unwrap()
    );
    assert_eq!(lines.next().unwrap(), dir.join("hns.sock").to_str().unwrap());

    kill(Pid::this(), Signal::SIGTERM).unwrap();
    runner.join().unwrap().unwrap();
    assert!(!dir.exists());
    assert!(!Path::new(&format!("/proc/{host_pid}")).exists());
    fs::remove_dir_all(&fake_dir).unwrap();
}
