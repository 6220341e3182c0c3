//! [`DockerDaemon`]: a real dockerd (with the containerd it starts itself) inside a lab host,
//! so tests can drive hns with the stock docker CLI and docker-compose.
//!
//! Isolation from the machine's own Docker and from other labs:
//! - dockerd runs through the host holder (`nsenter`), so it lives in the lab's network and
//!   mount namespaces; its data root, exec root, pid file, config file and API socket are all
//!   under the lab directory, and its trust key too (20.10 would write `/etc/docker/key.json`);
//! - inside the lab's mount namespace a fresh tmpfs covers `/run`: containerd's shim sockets
//!   (`/run/containerd`) and the plugin directory Docker reads (`/run/docker/plugins`, where the
//!   lab's plugin directory is bind-mounted) never touch the machine's `/run`;
//! - `--bridge=none --iptables=false --ip6tables=false`: Docker makes no networks or rules of
//!   its own; `--live-restore` so containers outlive a dockerd restart.
//!
//! Cleanup: containers are removed and dockerd is stopped on drop; the lab's namespace sweep
//! then takes containerd and its shims. Container processes live in namespaces of their own, so
//! the backstop is their cgroup: every container sits under this daemon's own cgroup parent
//! (`hns-lab-docker-<pid>-<n>`), and whatever is left there is killed. A test process killed
//! before its `Drop` leaves containers and their (daemonized) shims behind: the next
//! [`DockerDaemon::start`] kills those of labs whose owner is dead (by cgroup, and by the lab
//! path in the shims' command line).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::holder::{RunOutput, run_checked};
use hns_client::http_get;
use crate::lab::Lab;
use crate::process::{Proc, pid_alive};

/// The busybox image every docker test uses (built locally, no registry).
pub const BUSYBOX_IMAGE: &str = "hnslab/busybox:latest";
/// What the image's httpd serves at `/` (from `/www/index.html`).
pub const BUSYBOX_PAGE: &str = "hns docker lab page";

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP_PREFIX: &str = "hns-lab-docker-";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A dockerd in a lab host. Dropping it removes its containers and stops it.
pub struct DockerDaemon<'a> {
    lab: &'a Lab,
    root: PathBuf,
    proc: Option<Proc>,
    cgroup_parent: String,
}

impl<'a> DockerDaemon<'a> {
    /// Starts dockerd in `lab` (hnsd may run already or start later) and imports the busybox
    /// image.
    pub fn start(lab: &'a Lab) -> Result<DockerDaemon<'a>> {
        sweep_stale();
        let root = lab.dir().join("docker");
        for d in ["data", "exec", "client"] {
            fs::create_dir_all(root.join(d))?;
        }
        fs::create_dir_all(lab.dir().join("docker-plugins"))?;
        fs::write(root.join("daemon.json"), format!("{{\"deprecated-key-path\": \"{}\"}}\n", root.join("key.json").display()))?;
        let plugins = lab.dir().join("docker-plugins");
        lab.host().sh(&format!(
            "set -e
             mountpoint -q /run/docker/plugins && exit 0
             mount -t tmpfs -o mode=0755,size=16m hns-lab-docker-run /run
             mkdir -p /run/docker/plugins
             mount --bind '{}' /run/docker/plugins",
            plugins.display()
        ))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut d = DockerDaemon { lab, root, proc: None, cgroup_parent: format!("/{CGROUP_PREFIX}{}-{n}", std::process::id()), };
        d.launch()?;
        d.import_busybox()?;
        Ok(d)
    }

    /// The API socket: `<lab>/docker.sock`.
    pub fn socket(&self) -> PathBuf {
        self.lab.dir().join("docker.sock")
    }

    /// dockerd's own log.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("dockerd.log")
    }

    fn launch(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let r = &self.root;
        let mut cmd = self.lab.host().cmd("dockerd");
        cmd.arg("--config-file").arg(r.join("daemon.json"))
            .arg("--data-root").arg(r.join("data"))
            .arg("--exec-root").arg(r.join("exec"))
            .arg("--pidfile").arg(r.join("dockerd.pid"))
            .arg("-H").arg(format!("unix://{}", self.socket().display()))
            // Also where hnsd asks for container names (the lab's own /run).
            .args(["-H", "unix:///var/run/docker.sock"])
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--userland-proxy=false", "--live-restore"])
            .arg("--cgroup-parent").arg(&self.cgroup_parent)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let proc = self.lab.spawn_command(cmd, "dockerd")?;
        self.proc = Some(proc);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_get(&self.socket(), "/_ping").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if self.proc.as_ref().is_some_and(|p| !p.is_running()) {
                bail!("dockerd exited during startup; log:\n{}", tail(&self.log_path()));
            }
            if Instant::now() >= deadline {
                bail!("dockerd did not answer within 30 s; log:\n{}", tail(&self.log_path()));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops dockerd (SIGTERM; with `--live-restore` the containers keep running).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(p) = self.proc.take() {
            p.stop()?;
        }
        // Its socket file stays behind after SIGTERM; the next start must not mistake it.
        let _ = fs::remove_file(self.socket());
        Ok(())
    }

    /// Stops and starts dockerd again.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    /// A `docker` client command in the lab host, aimed at this daemon.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = self.lab.host().cmd(program);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.root.join("client"))
            .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// `docker ARGS...`, whatever the exit status.
    pub fn docker(&self, args: &[&str]) -> Result<RunOutput> {
        let out = self.command("docker").args(args).output().context("running docker")?;
        Ok(RunOutput::from_output(out))
    }

    /// `docker ARGS...`; fails (with its output) on a non-zero exit. Returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.command("docker");
        cmd.args(args);
        Ok(run_checked(cmd, &format!("docker {}", args.join(" ")))?.stdout)
    }

    /// `docker ARGS...` with the client shipped with this dockerd (Debian's docker.io, API 1.41)
    /// when it is installed: newer clients refuse some flags against an older daemon (the 28.x
    /// client sends `--mac-address` only to API 1.44+). Fails on a non-zero exit.
    pub fn docker_same_version_ok(&self, args: &[&str]) -> Result<String> {
        let client = if Path::new("/usr/bin/docker").is_file() { "/usr/bin/docker" } else { "docker" };
        let mut cmd = self.command(client);
        cmd.args(args);
        Ok(run_checked(cmd, &format!("{client} {}", args.join(" ")))?.stdout)
    }

    /// `docker-compose -f FILE -p PROJECT ARGS...`, whatever the exit status.
    pub fn compose(&self, file: &Path, project: &str, args: &[&str]) -> Result<RunOutput> {
        let mut cmd = self.command("docker-compose");
        cmd.arg("-f").arg(file).args(["-p", project]).args(args);
        Ok(RunOutput::from_output(cmd.output().context("running docker-compose")?))
    }

    /// Builds the busybox image from the host's static busybox (package `busybox-static`)
    /// and imports it: no registry involved.
    fn import_busybox(&self) -> Result<()> {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().map(PathBuf::from).find(|p| p.is_file()).context("no static busybox on this machine: install the busybox-static package")?;
        let rootfs = self.root.join("rootfs");
        for d in ["bin", "etc", "www", "tmp", "proc", "sys", "dev"] {
            fs::create_dir_all(rootfs.join(d))?;
        }
        fs::copy(&busybox, rootfs.join("bin/busybox"))?;
        let applets = Command::new(&busybox).arg("--list").output().context("busybox --list")?;
        for a in String::from_utf8_lossy(&applets.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox") {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a));
        }
        fs::write(rootfs.join("www/index.html"), format!("{BUSYBOX_PAGE}\n"))?;
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
        let tar = self.root.join("busybox.tar");
        let mut t = Command::new("tar");
        t.arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".");
        run_checked(t, "packing the busybox rootfs")?;
        self.docker_ok(&["import", "-c", "ENV PATH=/bin", "-c", "CMD [\"sh\"]", tar.to_str().context("utf-8 path")?, BUSYBOX_IMAGE])?;
        Ok(())
    }

    /// Removes every container (bounded wait).
    fn remove_containers(&self) {
        let Ok(ids) = self.docker(&["ps", "-aq"]) else { return };
        let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.docker(&args);
        }
    }
}

impl Drop for DockerDaemon<'_> {
    fn drop(&mut self) {
        if self.proc.as_ref().is_some_and(|p| p.is_running()) {
            self.remove_containers();
        }
        let _ = self.stop();
        kill_cgroup(self.cgroup_parent.trim_start_matches('/'));
    }
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The hierarchies a cgroup name may exist in: v1 has one per controller, v2 one in all.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut dirs = vec![Path::new(CGROUP_ROOT).join(name)];
    if let Ok(entries) = fs::read_dir(CGROUP_ROOT) {
        dirs.extend(entries.flatten().map(|e| e.path().join(name)));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Every process in a cgroup tree, as listed by its `cgroup.procs` files.
fn cgroup_pids(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            cgroup_pids(&e.path(), out);
        }
    }
}

/// Removes a cgroup tree bottom-up (only empty cgroups can go).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            remove_cgroup(&e.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Kills what is left in the cgroup tree `name` (a container dockerd did not stop) and removes
/// it. A PID is signalled only while `/proc/PID/cgroup` still names our tree, so a recycled PID
/// is never hit.
fn kill_cgroup(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut pids = Vec::new();
        for d in cgroup_dirs(name) {
            cgroup_pids(&d, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() || Instant::now() >= deadline {
            break;
        }
        for pid in pids {
            let ours = fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&format!("/{name}/")) || c.contains(&format!("/{name}\n")));
            if ours {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    for d in cgroup_dirs(name) {
        remove_cgroup(&d);
    }
}

/// containerd shims of labs whose test process is gone: a shim daemonizes (it outlives dockerd
/// and containerd by design), and names its lab in its `-address` argument.
fn sweep_stale_shims() {
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let cmdline = |pid: u32| fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).replace('\0', " ")).unwrap_or_default();
        let line = cmdline(pid);
        if !line.contains("containerd-shim") {
            continue;
        }
        let Some(owner) = line.split("/tmp/hns-lab-").nth(1).and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid_alive(owner) {
            continue;
        }
        // A pidfd pins the process: the command line is checked again on the very process that
        // gets the signal.
        // SAFETY: plain syscalls with integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            continue;
        }
        if cmdline(pid) == line {
            unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd as libc::c_int, libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0) };
        }
        unsafe { libc::close(fd as libc::c_int) };
    }
}

/// Containers (by their cgroup tree) and shims of labs whose test process is gone (killed
/// before its `Drop`).
fn sweep_stale() {
    sweep_stale_cgroups();
    sweep_stale_shims();
}

/// Cgroup trees of labs whose test process is gone.
fn sweep_stale_cgroups() {
    let mut names: Vec<String> = Vec::new();
    for base in std::iter::once(PathBuf::from(CGROUP_ROOT)).chain(fs::read_dir(CGROUP_ROOT).into_iter().flatten().flatten().map(|e| e.path())) {
        for e in fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(CGROUP_PREFIX) else { continue };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if !pid_alive(pid) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    for n in names {
        kill_cgroup(&n);
    }
}
