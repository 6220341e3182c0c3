//! [`Lab`]: one simulated container host plus its LAN, and hnsd inside it.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::Signal;

use crate::holder::{Holder, RunOutput, run_checked};
use hns_client::http_get;
use crate::process::{Proc, pid_alive, spawn_tied, sweep_namespaces};
use crate::{HOST_UPLINK, HOST_UPLINK_IF, HOST_UPLINK_V6, LAN_IF, LAN_PREFIX_LEN, LAN_ROUTER, LAN_ROUTER_V6, TEST_SERVER, TEST_SERVER_V6};

/// File marking a directory as a lab directory; holds the owner's PID.
const MARKER: &str = ".hns-lab";
/// How long `start_hnsd` waits for `GET /healthz` to answer 200.
const HNSD_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long probe servers get to print `listening`.
const PROBE_READY_TIMEOUT: Duration = Duration::from_secs(5);

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Which namespace of a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The simulated container host (net + mount namespace, runs hnsd).
    Host,
    /// The simulated LAN: router and test server (net namespace).
    Lan,
}

/// Options of [`Lab::with_options`].
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// Lab directory. `None`: a fresh `/tmp/hns-lab-<pid>-<n>`. `Some`: a
    /// fixed directory that must be absent, empty, or a stale lab directory
    /// (one whose owner is dead), and if present owned by us and writable by
    /// nobody else; it is removed when the lab is dropped.
    pub dir: Option<PathBuf>,
    /// The hnsd binary; `None`: [`Lab::bin`]`("hnsd")`.
    pub hnsd_bin: Option<PathBuf>,
}

/// Options of [`Lab::start_hnsd_with`].
#[derive(Debug, Clone, Default)]
pub struct HnsdOptions {
    /// Extra hnsd arguments. `--socket`, `--state-dir` and `--run-dir` are
    /// set by the lab and may not appear here; `--reconcile-interval`
    /// defaults to `1s` unless given here.
    pub args: Vec<String>,
    /// Let hnsd write to our stdout/stderr instead of `<lab>/hnsd.log`.
    pub inherit_stdio: bool,
    /// Extra environment variables (e.g. `HNSD_FAILPOINT` for crash tests).
    pub env: Vec<(String, String)>,
    /// A command line hnsd is started through inside the host, hnsd's own command line
    /// appended (e.g. `["setpriv", "--bounding-set=-sys_ptrace", "--"]` or
    /// `["prlimit", "--nofile=1024:", "--"]`, both of which exec hnsd so it keeps the PID).
    /// Empty: none. The [`Daemon`] is the wrapper's process: it must end when it gets SIGTERM.
    pub wrapper: Vec<String>,
}

/// A running hnsd started by [`Lab::start_hnsd`]. Dropping it stops the
/// daemon (SIGTERM, then SIGKILL after 10 s).
#[derive(Debug)]
pub struct Daemon {
    proc: Proc,
    log: Option<PathBuf>,
}

impl Daemon {
    /// PID of hnsd.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The underlying process handle.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// The log file hnsd writes to (`None` when stdio was inherited).
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Send `signal` without waiting (e.g. SIGHUP).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.proc.signal(signal)
    }

    /// Send `signal` and wait for hnsd to exit (SIGKILL simulates a crash).
    pub fn kill(&self, signal: Signal) -> Result<ExitStatus> {
        self.proc.kill(signal)
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL.
    pub fn stop(&self) -> Result<ExitStatus> {
        self.proc.stop()
    }

    /// Exit status if hnsd has exited.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        self.proc.try_wait()
    }

    /// Whether hnsd is still running.
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.proc.stop();
    }
}

/// The lab directory; removed on drop (after the holders are gone).
struct LabDir {
    path: PathBuf,
}

impl Drop for LabDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// One simulated container host and its LAN (see the crate docs).
///
/// Drop order: daemons, then background processes, then anything else still
/// living in the lab's namespaces, then the holders (namespaces and mounts go
/// with them), then the lab directory.
pub struct Lab {
    // Field order matters: fields drop in declaration order after
    // `Drop::drop`, so the holders die before the directory is removed.
    host: Holder,
    lan: Holder,
    dir: LabDir,
    hnsd_bin: Option<PathBuf>,
    daemons: Mutex<Vec<Proc>>,
    procs: Mutex<Vec<Proc>>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("dir", &self.dir.path)
            .field("host", &self.host)
            .field("lan", &self.lan)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An extra adapter of the lab host (see [`Lab::add_uplink`]).
#[derive(Debug, Clone)]
pub struct ExternalUplink {
    /// `eth{n}` in the host namespace.
    pub host_if: String,
    /// The switch (bridge) in the LAN namespace.
    pub lan_bridge: String,
    /// The host's port on that switch, where captures see the wire.
    pub lan_port: String,
    /// The LAN's gateway on this segment: `10.77.{n}.1`.
    pub router: std::net::Ipv4Addr,
    /// The host's own address on it: `10.77.{n}.2`.
    pub host_ip: std::net::Ipv4Addr,
    /// `10.77.{n}.0/24`.
    pub subnet: String,
    /// The router's IPv6 address on the segment: `2001:db8:77:{n}::1` (prefix /64).
    pub router6: std::net::Ipv6Addr,
}

impl ExternalUplink {
    fn new(n: u8) -> ExternalUplink {
        ExternalUplink {
            host_if: format!("eth{n}"),
            lan_bridge: format!("lanbr{n}"),
            lan_port: format!("lanp{n}"),
            router: std::net::Ipv4Addr::new(10, 77, n, 1),
            host_ip: std::net::Ipv4Addr::new(10, 77, n, 2),
            subnet: format!("10.77.{n}.0/24"),
            router6: std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x77, n as u16, 0, 0, 0, 1),
        }
    }

    /// An address of the segment: `10.77.{n}.{last}`.
    pub fn addr(&self, last: u8) -> std::net::Ipv4Addr {
        let o = self.router.octets();
        std::net::Ipv4Addr::new(o[0], o[1], o[2], last)
    }
}

/// A running packet capture (see [`Lab::capture_in_lan`]).
pub struct Capture {
    proc: Proc,
    path: PathBuf,
}

impl Capture {
    /// Stops tcpdump and returns the captured lines.
    pub fn stop(self) -> Result<String> {
        // Give the last packets time to be written (-U flushes per packet).
        thread::sleep(Duration::from_millis(200));
        let _ = self.proc.stop();
        Ok(fs::read_to_string(&self.path)?)
    }
}

/// Single-quote `s` for `sh`.
fn sq(s: impl AsRef<str>) -> String {
    format!("'{}'", s.as_ref().replace('\'', "'\\''"))
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| anyhow!("lab paths must be UTF-8: {}", p.display()))
}

/// Last `n` lines of a file (for error messages).
fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// PID recorded in a lab directory's marker, if any.
fn marker_owner(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join(MARKER)).ok()?.trim().parse().ok()
}

/// Remove `/tmp/hns-lab-*` directories left by test processes that were
/// killed before their `Drop` ran (their namespaces are already gone).
fn remove_stale_lab_dirs() {
    let Ok(entries) = fs::read_dir("/tmp") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("hns-lab-")) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let path = entry.path();
        if pid_alive(pid) || marker_owner(&path).is_none_or(pid_alive) {
            continue;
        }
        // Claim it atomically first, so concurrent labs do not trip over
        // each other's half-finished removal. The new name carries our PID:
        // should we die mid-way, the next lab removes it.
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let claimed = PathBuf::from(format!("/tmp/hns-lab-{}-stale{n}", std::process::id()));
        if fs::rename(&path, &claimed).is_ok() {
            let _ = fs::remove_dir_all(&claimed);
        }
    }
}

/// A lab directory named by the caller (such as the sandbox's) may already exist; it is used only if
/// it is a real directory owned by us that nobody else can write to. Otherwise another local user
/// who created it first could replace the files root later runs from it (the sandbox's `shell`).
fn check_private_dir(path: &Path, meta: &fs::Metadata) -> Result<()> {
    if !meta.is_dir() {
        bail!("{} exists and is not a directory (a symbolic link is refused too); remove it or choose another directory", path.display());
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        bail!(
            "{} is owned by uid {}, not by us (uid {euid}); refusing to use a directory another user could control: remove it or choose another directory",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{} is writable by other users (mode {:o}); refusing to use it: remove it or chmod go-w",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

fn prepare_dir(requested: Option<PathBuf>) -> Result<LabDir> {
    let path = match requested {
        None => {
            remove_stale_lab_dirs();
            loop {
                let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
                let path = PathBuf::from(format!("/tmp/hns-lab-{}-{n}", std::process::id()));
                match fs::create_dir(&path) {
                    Ok(()) => break path,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
                }
            }
        }
        Some(path) => {
            if !path.is_absolute() {
                bail!("lab directory must be an absolute path: {}", path.display());
            }
            if let Ok(meta) = fs::symlink_metadata(&path) {
                check_private_dir(&path, &meta)?;
                let empty = fs::read_dir(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .next()
                    .is_none();
                if !empty {
                    match marker_owner(&path) {
                        Some(owner) if pid_alive(owner) => bail!(
                            "{} is in use by a running lab (pid {owner})",
                            path.display()
                        ),
                        Some(_) => fs::remove_dir_all(&path)
                            .with_context(|| format!("removing stale lab directory {}", path.display()))?,
                        None => bail!(
                            "{} exists, is not empty and is not a lab directory; refusing to use it",
                            path.display()
                        ),
                    }
                }
            }
            if !path.exists() {
                // Only the last component is created, private to us: a parent that does not exist
                // is a typo more often than a wish.
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
            }
            path
        }
    };
    let dir = LabDir { path };
    path_str(&dir.path)?;
    let socket_len = dir.path.join("hns.sock").as_os_str().len();
    if socket_len >= 100 {
        bail!("lab directory path too long for a Unix socket: {}", dir.path.display());
    }
    fs::write(dir.path.join(MARKER), format!("{}\n", std::process::id()))?;
    fs::create_dir(dir.path.join("state"))?;
    fs::create_dir(dir.path.join("run"))?;
    Ok(dir)
}

/// hnsd flags the lab sets itself.
const MANAGED_FLAGS: [&str; 3] = ["--socket", "--state-dir", "--run-dir"];

fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag || a.strip_prefix(flag).is_some_and(|r| r.starts_with('=')))
}

impl Lab {
    /// Build a lab in a fresh `/tmp/hns-lab-<pid>-<n>`.
    pub fn new() -> Result<Lab> {
        Lab::with_options(LabOptions::default())
    }

    /// Build a lab; on failure, everything built so far is torn down.
    pub fn with_options(opts: LabOptions) -> Result<Lab> {
        let dir = prepare_dir(opts.dir)?;
        let host = Holder::new_net_mount().context("creating the host namespaces")?;
        let lan = Holder::new_net().context("creating the LAN namespace")?;
        let lab = Lab {
            host,
            lan,
            dir,
            hnsd_bin: opts.hnsd_bin,
            daemons: Mutex::new(Vec::new()),
            procs: Mutex::new(Vec::new()),
        };
        // If this fails, dropping `lab` undoes everything.
        lab.wire().context("wiring the lab")?;
        Ok(lab)
    }

    fn wire(&self) -> Result<()> {
        let run = sq(path_str(&self.run_dir())?);
        self.host.sh(&format!(
            "set -e
             ip link set lo up
             mount -t tmpfs -o mode=0755,size=64m hns-lab-run {run}
             echo 1 > /proc/sys/net/ipv4/ip_forward"
        ))?;
        self.lan.sh(&format!(
            "set -e
             ip link set lo up
             ip addr add {TEST_SERVER}/32 dev lo
             ip addr add {TEST_SERVER_V6}/128 dev lo
             echo 1 > /proc/sys/net/ipv4/ip_forward
             echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"
        ))?;
        let mut veth = self.host.cmd("ip");
        veth.args(["link", "add", HOST_UPLINK_IF, "type", "veth", "peer", "name", LAN_IF, "netns"])
            .arg(self.lan.netns_path());
        run_checked(veth, "creating the uplink veth in the host namespace")?;
        self.lan.sh(&format!(
            "set -e
             ip addr add {LAN_ROUTER}/{LAN_PREFIX_LEN} dev {LAN_IF}
             ip addr add {LAN_ROUTER_V6}/64 dev {LAN_IF} nodad
             ip link set {LAN_IF} up"
        ))?;
        self.host.sh(&format!(
            "set -e
             ip addr add {HOST_UPLINK}/{LAN_PREFIX_LEN} dev {HOST_UPLINK_IF}
             ip addr add {HOST_UPLINK_V6}/64 dev {HOST_UPLINK_IF} nodad
             ip link set {HOST_UPLINK_IF} up
             ip route add default via {LAN_ROUTER}
             ip -6 route add default via {LAN_ROUTER_V6}"
        ))?;
        // Wait for carrier on both ends so the first packet is not lost.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let h = self.host.ip(&["-o", "link", "show", HOST_UPLINK_IF])?.stdout;
            let l = self.lan.ip(&["-o", "link", "show", LAN_IF])?.stdout;
            if h.contains("LOWER_UP") && l.contains("LOWER_UP") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("uplink veth has no carrier after 5 s:\n{h}{l}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Directory holding the workspace binaries: `$HNS_BIN_DIR`, else the
    /// directory of the running executable (`target/debug` for both
    /// `target/debug/hnsd` and a test binary in `target/debug/deps`).
    pub fn bin_dir() -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os("HNS_BIN_DIR") {
            return Ok(PathBuf::from(dir));
        }
        let exe = std::env::current_exe().context("locating the running executable")?;
        let dir = exe.parent().ok_or_else(|| anyhow!("executable has no parent directory"))?;
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(up) = dir.parent()
        {
            return Ok(up.to_path_buf());
        }
        Ok(dir.to_path_buf())
    }

    /// Path of a workspace binary (`hnsd`, `hnsctl`, `labprobe`), checked to
    /// exist.
    pub fn bin(name: &str) -> Result<PathBuf> {
        let path = Lab::bin_dir()?.join(name);
        if !path.is_file() {
            bail!(
                "binary `{name}` not found at {} — build it first: cargo build --workspace \
                 (or set HNS_BIN_DIR to the directory holding it)",
                path.display()
            );
        }
        Ok(path)
    }

    /// Use this hnsd binary from now on (instead of [`Lab::bin`]`("hnsd")`).
    pub fn set_hnsd_bin(&mut self, path: impl Into<PathBuf>) {
        self.hnsd_bin = Some(path.into());
    }

    fn hnsd_bin(&self) -> Result<PathBuf> {
        match &self.hnsd_bin {
            Some(p) if p.is_file() => Ok(p.clone()),
            Some(p) => bail!("hnsd binary {} does not exist", p.display()),
            None => Lab::bin("hnsd"),
        }
    }

    /// The lab directory.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// hnsd's API socket: `<lab>/hns.sock` (reachable from outside too).
    pub fn socket(&self) -> PathBuf {
        self.dir.path.join("hns.sock")
    }

    /// hnsd's state directory: `<lab>/state` (a plain directory).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path.join("state")
    }

    /// hnsd's run directory: `<lab>/run` (a tmpfs inside the host mount
    /// namespace only).
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path.join("run")
    }

    /// hnsd's log file: `<lab>/hnsd.log`.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path.join("hnsd.log")
    }

    /// The host holder (net + mount namespace).
    pub fn host(&self) -> &Holder {
        &self.host
    }

    /// The LAN holder (net namespace).
    pub fn lan(&self) -> &Holder {
        &self.lan
    }

    /// The holder of `side`.
    pub fn holder(&self, side: Side) -> &Holder {
        match side {
            Side::Host => &self.host,
            Side::Lan => &self.lan,
        }
    }

    /// Start hnsd inside the host with `extra_args`, logging to
    /// `<lab>/hnsd.log`; returns once `GET /healthz` answers 200.
    pub fn start_hnsd(&self, extra_args: &[&str]) -> Result<Daemon> {
        self.start_hnsd_with(HnsdOptions {
            args: extra_args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    }

    /// [`Lab::start_hnsd`] with all options.
    pub fn start_hnsd_with(&self, opts: HnsdOptions) -> Result<Daemon> {
        {
            let mut daemons = lock(&self.daemons);
            daemons.retain(|d| d.is_running());
            if let Some(d) = daemons.first() {
                bail!("hnsd is already running in this lab (pid {}); stop it first", d.pid());
            }
        }
        for flag in MANAGED_FLAGS {
            if has_flag(&opts.args, flag) {
                bail!("{flag} is set by the lab; do not pass it to start_hnsd");
            }
        }
        let bin = self.hnsd_bin()?;
        let mut cmd = match opts.wrapper.split_first() {
            None => self.host.cmd(&bin),
            Some((program, args)) => {
                let mut cmd = self.host.cmd(program);
                cmd.args(args).arg(&bin);
                cmd
            }
        };
        cmd.arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--run-dir")
            .arg(self.run_dir());
        if !has_flag(&opts.args, "--reconcile-interval") {
            cmd.args(["--reconcile-interval", "1s"]);
        }
        // hnsd's default plugin directory is the machine's /run/docker/plugins, which the lab's
        // mount namespace shares: keep the Docker plugin sockets in the lab.
        if !has_flag(&opts.args, "--docker-plugin-dir") && !has_flag(&opts.args, "--no-docker-plugin") {
            cmd.arg("--docker-plugin-dir").arg(self.dir.path.join("docker-plugins"));
        }
        cmd.args(&opts.args);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null());
        let log = if opts.inherit_stdio {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            None
        } else {
            let path = self.log_path();
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            writeln!(file, "=== hns-lab: starting {} {:?} (unix time {now}) ===", bin.display(), opts.args)?;
            cmd.stdout(file.try_clone()?).stderr(file);
            Some(path)
        };
        let child = spawn_tied(cmd).with_context(|| format!("starting {}", bin.display()))?;
        let daemon = Daemon { proc: Proc::new(child, "hnsd"), log };
        lock(&self.daemons).push(daemon.proc.clone());
        self.wait_healthy(&daemon)?;
        Ok(daemon)
    }

    fn wait_healthy(&self, daemon: &Daemon) -> Result<()> {
        let socket = self.socket();
        let log_tail = || match &daemon.log {
            Some(p) => format!("last lines of {}:\n{}", p.display(), tail(p, 40)),
            None => "(hnsd output went to the terminal)".to_string(),
        };
        let deadline = Instant::now() + HNSD_READY_TIMEOUT;
        let mut last = String::from("socket not there yet");
        loop {
            if let Some(status) = daemon.try_wait()? {
                bail!("hnsd exited during startup ({status}); {}", log_tail());
            }
            if socket.exists() {
                match http_get(&socket, "/healthz") {
                    Ok(r) if r.status == 200 => return Ok(()),
                    Ok(r) => last = format!("GET /healthz answered {}: {}", r.status, r.body.trim()),
                    Err(e) => last = format!("{e:#}"),
                }
            }
            if Instant::now() >= deadline {
                let _ = daemon.stop();
                bail!(
                    "hnsd did not become healthy within {}s ({last}); {}",
                    HNSD_READY_TIMEOUT.as_secs(),
                    log_tail()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `hnsctl --socket <sock> ARGS...` inside the host. Never fails on a
    /// non-zero exit status; check `output.status`.
    pub fn hnsctl(&self, args: &[&str]) -> Result<Output> {
        let bin = Lab::bin("hnsctl")?;
        let mut cmd = self.host.cmd(&bin);
        cmd.arg("--socket").arg(self.socket()).args(args).stdin(Stdio::null());
        cmd.output().with_context(|| format!("running {}", bin.display()))
    }

    /// Like [`Lab::hnsctl`] but fails (with stderr) on a non-zero exit;
    /// returns stdout.
    pub fn hnsctl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.hnsctl(args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "hnsctl {} failed ({})\n--- stderr ---\n{}--- stdout ---\n{stdout}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// Run a program inside the host; fails on non-zero exit.
    pub fn in_host(&self, program: &str, args: &[&str]) -> Result<RunOutput> {
        self.host.run(program, args)
    }

    /// Run a program inside the LAN; fails on non-zero exit.
    pub fn in_lan(&self, program: &str, args: &[&str]) -> Result<RunOutput> {
        self.lan.run(program, args)
    }

    /// Run a program in `side` and return its output whatever the exit
    /// status (for asserting that something does *not* work).
    pub fn try_in(&self, side: Side, program: &str, args: &[&str]) -> Result<RunOutput> {
        let mut cmd = self.holder(side).cmd(program);
        cmd.args(args).stdin(Stdio::null());
        Ok(RunOutput::from_output(cmd.output().with_context(|| format!("running {program}"))?))
    }

    /// Run `labprobe ARGS...` in `side`, whatever the exit status.
    pub fn probe(&self, side: Side, args: &[&str]) -> Result<RunOutput> {
        let bin = Lab::bin("labprobe")?;
        self.try_in(side, path_str(&bin)?, args)
    }

    /// Start a background process in the host (stdout piped, stderr
    /// inherited). It is killed when the lab is dropped.
    pub fn spawn_in_host(&self, program: &str, args: &[&str]) -> Result<Proc> {
        self.spawn_in(Side::Host, program, args)
    }

    /// Start a background process in the LAN (stdout piped, stderr
    /// inherited). It is killed when the lab is dropped.
    pub fn spawn_in_lan(&self, program: &str, args: &[&str]) -> Result<Proc> {
        self.spawn_in(Side::Lan, program, args)
    }

    /// Start a background process in `side`; see [`Lab::spawn_in_host`].
    pub fn spawn_in(&self, side: Side, program: &str, args: &[&str]) -> Result<Proc> {
        let mut cmd = self.holder(side).cmd(program);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        self.spawn_command(cmd, program)
    }

    /// Start an arbitrary command (typically built with
    /// `lab.host().cmd(..)`) as a tracked background process: tied to this
    /// process' life and killed when the lab is dropped.
    pub fn spawn_command(&self, cmd: Command, label: &str) -> Result<Proc> {
        let child = spawn_tied(cmd).with_context(|| format!("starting {label}"))?;
        let proc = Proc::new(child, label);
        lock(&self.procs).push(proc.clone());
        Ok(proc)
    }

    /// Start `labprobe serve-tcp|serve-udp ADDR` in `side` and wait until it
    /// is listening.
    pub fn start_probe_server(&self, side: Side, mode: &str, addr: &str) -> Result<Proc> {
        let bin = Lab::bin("labprobe")?;
        let proc = self.spawn_in(side, path_str(&bin)?, &[mode, addr])?;
        let stdout = proc.take_stdout().ok_or_else(|| anyhow!("labprobe stdout not piped"))?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut ready = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim() == "listening"
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
                // Keep draining so the server never blocks on a full pipe.
            }
        });
        let deadline = Instant::now() + PROBE_READY_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(()) => return Ok(proc),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = proc.wait_timeout(Duration::from_secs(1))?;
                    proc.kill_quietly();
                    bail!("labprobe {mode} {addr} in {side:?} exited before listening ({status:?})");
                }
            }
            if Instant::now() >= deadline {
                proc.kill_quietly();
                bail!("labprobe {mode} {addr} in {side:?} not listening after {PROBE_READY_TIMEOUT:?}");
            }
        }
    }

    /// TCP probe server (peer report + echo) in the LAN, e.g. on
    /// `203.0.113.10:8080`.
    pub fn start_tcp_server_in_lan(&self, addr: &str) -> Result<Proc> {
        self.start_probe_server(Side::Lan, "serve-tcp", addr)
    }

    /// UDP probe server in the LAN.
    pub fn start_udp_server_in_lan(&self, addr: &str) -> Result<Proc> {
        self.start_probe_server(Side::Lan, "serve-udp", addr)
    }

    /// TCP probe server in the host.
    pub fn start_tcp_server_in_host(&self, addr: &str) -> Result<Proc> {
        self.start_probe_server(Side::Host, "serve-tcp", addr)
    }

    /// UDP probe server in the host.
    pub fn start_udp_server_in_host(&self, addr: &str) -> Result<Proc> {
        self.start_probe_server(Side::Host, "serve-udp", addr)
    }

    /// Gives the host another adapter on the LAN, for an external network (each needs its
    /// own): `eth{n}` in the host, with [`ExternalUplink::host_ip`], plugged into a switch
    /// (bridge `lanbr{n}`) in the LAN namespace whose router address is
    /// [`ExternalUplink::router`] on `10.77.{n}.0/24`. `hairpin` turns reflective relay on
    /// for the host's switch port (what l2tunnel's VEPA needs to reach a sibling).
    pub fn add_uplink(&self, n: u8, hairpin: bool) -> Result<ExternalUplink> {
        let u = ExternalUplink::new(n);
        let mut veth = self.host.cmd("ip");
        veth.args(["link", "add", &u.host_if, "type", "veth", "peer", "name", &u.lan_port, "netns"]).arg(self.lan.netns_path());
        run_checked(veth, "creating an extra uplink veth in the host namespace")?;
        let hairpin = if hairpin { "on" } else { "off" };
        self.lan.sh(&format!(
            "set -e
             ip link add {br} type bridge mcast_snooping 0
             ip link set {port} master {br}
             ip link set {port} type bridge_slave hairpin {hairpin}
             ip addr add {router}/24 dev {br}
             ip addr add {router6}/64 dev {br} nodad
             ip link set {port} up
             ip link set {br} up",
            br = u.lan_bridge,
            port = u.lan_port,
            router = u.router,
            router6 = u.router6,
        ))?;
        self.host.sh(&format!(
            "set -e
             ip addr add {ip}/24 dev {dev}
             ip link set {dev} up",
            ip = u.host_ip,
            dev = u.host_if,
        ))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.host.ip(&["-o", "link", "show", &u.host_if])?.stdout.contains("LOWER_UP") {
            if Instant::now() >= deadline {
                bail!("extra uplink {} has no carrier after 5 s", u.host_if);
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(u)
    }

    /// Starts a real dnsmasq on the LAN side of an extra uplink: DHCPv4 leases from
    /// `10.77.{n}.100-199` (2-minute leases, dnsmasq's shortest; no ping check before an
    /// offer, which would delay it by seconds) with the router as gateway and DNS server,
    /// and IPv6 router advertisements for `2001:db8:77:{n}::/64` (SLAAC). No DNS. `extra` adds
    /// flags. Returns the process and the lease file.
    pub fn start_dnsmasq(&self, u: &ExternalUplink, extra: &[&str]) -> Result<(Proc, PathBuf)> {
        let leases = self.dir().join(format!("dnsmasq-{}.leases", u.lan_bridge));
        let log = self.dir().join(format!("dnsmasq-{}.log", u.lan_bridge));
        fs::write(&leases, "")?;
        let o = u.router.octets();
        let mut cmd = self.lan.cmd("dnsmasq");
        cmd.args(["--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--bind-interfaces", "--dhcp-authoritative", "--no-ping", "--log-dhcp", "--pid-file="])
            .arg(format!("--interface={}", u.lan_bridge))
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!("--log-facility={}", log.display()))
            .arg(format!("--dhcp-range={}.{}.{}.100,{}.{}.{}.199,255.255.255.0,2m", o[0], o[1], o[2], o[0], o[1], o[2]))
            .arg(format!("--dhcp-option=option:router,{}", u.router))
            .arg(format!("--dhcp-option=option:dns-server,{}", u.router))
            .arg("--domain=lan.example")
            .arg("--enable-ra")
            .arg(format!("--dhcp-range={}::,ra-only", u.router6.segments().iter().take(4).map(|s| format!("{s:x}")).collect::<Vec<_>>().join(":")))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = self.spawn_command(cmd, "dnsmasq")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fs::read_to_string(&log).unwrap_or_default().contains("DHCP, IP range") {
            if Instant::now() >= deadline || !proc.is_running() {
                bail!("dnsmasq did not start: {}", fs::read_to_string(&log).unwrap_or_default());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok((proc, leases))
    }

    /// Starts `tcpdump -e -n` on a LAN-namespace interface, writing to a file, and returns
    /// once it listens. Read the capture with [`Capture::stop`].
    pub fn capture_in_lan(&self, iface: &str, filter: &str) -> Result<Capture> {
        let path = self.dir().join(format!("capture-{iface}-{}.txt", LAB_COUNTER.fetch_add(1, Ordering::Relaxed)));
        let out = fs::File::create(&path)?;
        let err_path = path.with_extension("err");
        let err = fs::File::create(&err_path)?;
        let mut cmd = self.lan.cmd("tcpdump");
        cmd.args(["-e", "-n", "-l", "-U", "-i", iface]).args(filter.split_whitespace()).stdout(out).stderr(err);
        let proc = self.spawn_command(cmd, "tcpdump")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fs::read_to_string(&err_path).unwrap_or_default().contains("listening on") {
            if Instant::now() >= deadline {
                bail!("tcpdump did not start: {}", fs::read_to_string(&err_path).unwrap_or_default());
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(Capture { proc, path })
    }

    /// Simulate a reboot wiping `/run`: lazily unmount everything on
    /// `<lab>/run` inside the host and mount a fresh, empty tmpfs. hnsd must
    /// be stopped first.
    pub fn reboot_run_dir(&self) -> Result<()> {
        if let Some(d) = lock(&self.daemons).iter().find(|d| d.is_running()) {
            bail!("stop hnsd (pid {}) before simulating a reboot", d.pid());
        }
        let run = sq(path_str(&self.run_dir())?);
        self.host.sh(&format!(
            "set -e
             umount --recursive --lazy {run}
             mount -t tmpfs -o mode=0755,size=64m hns-lab-run {run}"
        ))?;
        Ok(())
    }

    /// Things hnsd may leak, as seen inside the host: links named `hns*` or
    /// `hnv*`, nftables tables named `hns*`, and mounts below `<lab>/run`
    /// (plus extra mounts stacked on `<lab>/run` itself). Empty = clean.
    pub fn leftovers_in_host(&self) -> Result<Vec<String>> {
        let mut found = Vec::new();

        let links = self.host.ip(&["-o", "link", "show"])?.stdout;
        for line in links.lines() {
            let Some(name) = line.split(": ").nth(1) else { continue };
            let name = name.split('@').next().unwrap_or(name);
            if name.starts_with("hn") {
                found.push(format!("link {name}"));
            }
        }
        // Proxy-ARP entries (l2bridge) must go with their endpoints.
        for line in self.host.ip(&["neigh", "show", "proxy"])?.stdout.lines() {
            found.push(format!("proxy neighbour {line}"));
        }

        let tables = self.host.run("nft", ["list", "tables"])?.stdout;
        for line in tables.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["table", family, name] = words[..]
                && name.starts_with("hns")
            {
                found.push(format!("nft table {family} {name}"));
            }
        }

        let run = self.run_dir();
        let run = path_str(&run)?;
        let below = format!("{run}/");
        let mounts_path = format!("/proc/{}/mounts", self.host.pid());
        let mounts = fs::read_to_string(&mounts_path).with_context(|| format!("reading {mounts_path}"))?;
        let mut on_run = 0;
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 3 {
                continue;
            }
            let target = unescape_mount_field(fields[1]);
            if target == run {
                on_run += 1;
                if on_run > 1 {
                    found.push(format!("mount {} on {target} ({}), stacked", fields[0], fields[2]));
                }
            } else if target == format!("{run}/netns") && fields[0] == "hns-lab-run" {
                // hnsd makes its namespace directory a shared mount point of the run tmpfs (as
                // iproute2 does for /run/netns); it is infrastructure, not a leaked namespace.
            } else if target.starts_with(&below) {
                found.push(format!("mount {} on {target} ({})", fields[0], fields[2]));
            }
        }
        Ok(found)
    }
}

/// Undo the octal escapes (`\040` etc.) of /proc/*/mounts.
fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Lab {
    /// Opens every namespace of the lab: the holders' and hnsd's compartments (the namespace
    /// files under the run dir, seen through the host's mount namespace). While these files are
    /// open the namespaces cannot be freed, so their identities cannot be reused by a namespace
    /// another lab creates meanwhile, and a sweep can never hit someone else's process.
    fn pin_namespaces(&self) -> Vec<fs::File> {
        let mut paths = vec![
            format!("/proc/{}/ns/net", self.host.pid()),
            format!("/proc/{}/ns/mnt", self.host.pid()),
            format!("/proc/{}/ns/net", self.lan.pid()),
        ];
        let dir = format!("/proc/{}/root{}/netns", self.host.pid(), self.run_dir().display());
        if let Ok(entries) = fs::read_dir(dir) {
            paths.extend(entries.flatten().map(|e| e.path().display().to_string()));
        }
        paths.iter().filter_map(|p| fs::File::open(p).ok()).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for d in lock(&self.daemons).drain(..) {
            let _ = d.stop();
        }
        for p in lock(&self.procs).drain(..) {
            p.kill_quietly();
        }
        // Anything else still inside (processes hnsd started, shells opened
        // in the sandbox, ...) would keep the namespaces and their mounts
        // alive after the holders die.
        // That includes processes in hnsd's compartments (`hnsctl run -d` detaches them from
        // everything else). The namespaces stay pinned until both sweeps are done.
        let pins = self.pin_namespaces();
        let ids: Vec<crate::process::NsId> = pins.iter().filter_map(|f| crate::process::ns_id_of_file(f).ok()).collect();
        sweep_namespaces(&ids, &[self.host.pid(), self.lan.pid()]);
        self.host.kill();
        self.lan.kill();
        // Once more: something (an `nsenter` that had already opened the
        // namespace files) may have slipped in meanwhile. The namespaces'
        // identities stay valid for as long as anything is inside.
        sweep_namespaces(&ids, &[]);
        drop(pins);
        // Now the fields drop (holders already reaped), then the directory.
    }
}
