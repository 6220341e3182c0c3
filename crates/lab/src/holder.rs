//! [`Holder`]: a process whose only job is to keep namespaces alive.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{NsId, ns_id, spawn_tied};

/// Output of a command that ran inside a namespace; stdout and stderr are
/// decoded lossily as UTF-8.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    pub(crate) fn from_output(out: std::process::Output) -> RunOutput {
        RunOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Run `cmd` to completion; fail with its stdout/stderr if it exits non-zero.
pub(crate) fn run_checked(mut cmd: Command, what: &str) -> Result<RunOutput> {
    cmd.stdin(Stdio::null());
    let out = cmd.output().with_context(|| format!("cannot start {what}"))?;
    let out = RunOutput::from_output(out);
    if !out.status.success() {
        bail!(
            "{what} failed ({})\n--- stdout ---\n{}--- stderr ---\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
    Ok(out)
}

/// A `sleep infinity` that lives in fresh namespaces, created with
/// `unshare --net [--mount --propagation private]`.
///
/// The namespaces exist exactly as long as the holder (and whatever else was
/// started inside them) lives; dropping the holder SIGKILLs it. The holder is
/// also SIGKILLed by the kernel if this process dies (`PR_SET_PDEATHSIG`).
///
/// [`Holder::spawn`] returns only once the holder is verified to be in a
/// network (and mount) namespace different from ours, so commands built with
/// [`Holder::cmd`] can never land in the root namespace by accident.
pub struct Holder {
    child: Child,
    pid: u32,
    mount: bool,
    net: NsId,
    mnt: Option<NsId>,
}

impl fmt::Debug for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Holder").field("pid", &self.pid).field("mount", &self.mount).finish()
    }
}

impl Holder {
    /// A holder with a new network namespace only.
    pub fn new_net() -> Result<Holder> {
        Holder::spawn(false)
    }

    /// A holder with a new network namespace and a new, private mount
    /// namespace.
    pub fn new_net_mount() -> Result<Holder> {
        Holder::spawn(true)
    }

    /// Start a holder; `mount` adds a private mount namespace.
    pub fn spawn(mount: bool) -> Result<Holder> {
        let our_net = ns_id("self", "net").context("reading our network namespace")?;
        let our_mnt = ns_id("self", "mnt").context("reading our mount namespace")?;

        let mut cmd = Command::new("unshare");
        cmd.arg("--net");
        if mount {
            cmd.args(["--mount", "--propagation", "private"]);
        }
        cmd.args(["--", "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = spawn_tied(cmd).context("cannot start `unshare` (util-linux) for a namespace holder")?;
        let pid = child.id();
        let mut holder = Holder { child, pid, mount, net: our_net, mnt: None };

        // unshare(2) happens after exec of `unshare`; wait until the process
        // has become `sleep` (so unshare and the propagation change are done)
        // and its namespaces differ from ours.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = holder.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = holder.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("namespace holder `unshare` exited ({status}): {} (the lab needs root)", err.trim());
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end() == "sleep" {
                let p = pid.to_string();
                let net = ns_id(&p, "net")?;
                let mnt = ns_id(&p, "mnt")?;
                if net == our_net {
                    bail!("holder {pid} is still in our network namespace after unshare; refusing to use it");
                }
                if mount && mnt == our_mnt {
                    bail!("holder {pid} is still in our mount namespace after unshare; refusing to use it");
                }
                holder.net = net;
                holder.mnt = mount.then_some(mnt);
                break;
            }
            if Instant::now() >= deadline {
                bail!("namespace holder {pid} did not become ready within 10 s");
            }
            thread::sleep(Duration::from_millis(2));
        }
        // Nothing more will be written there; do not keep the pipe around.
        drop(holder.child.stderr.take());
        Ok(holder)
    }

    /// PID of the holder (usable with `nsenter -t PID`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `/proc/PID/ns/net` of the holder.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    /// `/proc/PID/ns/mnt` of the holder, if it has its own mount namespace.
    pub fn mntns_path(&self) -> Option<PathBuf> {
        self.mount.then(|| PathBuf::from(format!("/proc/{}/ns/mnt", self.pid)))
    }

    /// Whether the holder has its own mount namespace.
    pub fn has_mount_ns(&self) -> bool {
        self.mount
    }

    /// A command running `program` inside the holder's namespaces
    /// (`nsenter -t PID -n [-m] -- program`). Add arguments, stdio etc. as
    /// usual. Inside a mount namespace the working directory is `/`, so use
    /// absolute paths.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t").arg(self.pid.to_string()).arg("-n");
        if self.mount {
            cmd.arg("-m");
        }
        cmd.arg("--").arg(program);
        cmd
    }

    /// Run `program args...` inside; fails (with stdout and stderr in the
    /// message) on a non-zero exit status.
    pub fn run<I, S>(&self, program: &str, args: I) -> Result<RunOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut cmd = self.cmd(program);
        cmd.args(&args);
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        run_checked(cmd, &format!("`{program} {}` in namespace of holder {}", shown.join(" "), self.pid))
    }

    /// Run a shell script inside (`sh -c SCRIPT`); fails on non-zero exit.
    pub fn sh(&self, script: &str) -> Result<RunOutput> {
        let mut cmd = self.cmd("sh");
        cmd.arg("-c").arg(script);
        run_checked(cmd, &format!("script in namespace of holder {}:\n{script}\n", self.pid))
    }

    /// `ip ARGS...` inside; fails on non-zero exit.
    pub fn ip(&self, args: &[&str]) -> Result<RunOutput> {
        self.run("ip", args)
    }

    /// Whether the holder process is still running.
    ///
    /// The holder is reaped only when it is dropped, so its PID cannot be
    /// recycled while this `Holder` exists (a dead holder stays a zombie and
    /// `nsenter` into it fails instead of entering someone else).
    pub fn is_alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // Format: "PID (comm) STATE ..."; comm may contain spaces.
            Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
            Err(_) => false,
        }
    }

    /// SIGKILL the holder and reap it (idempotent). Its namespaces go away
    /// once nothing else is inside them. Only for teardown: afterwards the
    /// PID may be recycled, so the holder must not be used any more.
    pub(crate) fn kill(&mut self) {
        // Child::kill never signals a child that was already reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill();
    }
}
