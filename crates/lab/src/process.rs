//! Child-process plumbing shared by holders, daemons and background servers.
//!
//! * [`spawn_tied`]: fork from a private, never-exiting thread with
//!   `PR_SET_PDEATHSIG = SIGKILL`, so the child dies with this process.
//! * [`Proc`]: a tracked child that is only signalled while it is known to be
//!   unreaped (so its PID cannot have been recycled).
//! * [`sweep_namespaces`]: teardown backstop that kills whatever still lives
//!   in the lab's namespaces, using pidfds so a recycled PID is never hit.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

type Job = Box<dyn FnOnce() + Send>;

fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("hns-lab-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("hns-lab: cannot start the spawner thread");
        tx
    })
}

/// Arrange for `cmd`'s child to be SIGKILLed when this process dies, and put
/// it in its own process group (so a terminal Ctrl-C reaches only us, and we
/// decide the teardown order).
fn tie_to_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: only async-signal-safe syscalls run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited before the child started"));
            }
            Ok(())
        });
    }
}

/// Spawn `cmd` so that it cannot outlive this process (see module docs).
pub(crate) fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    tie_to_parent(&mut cmd);
    let (tx, rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(cmd.spawn());
    });
    spawner()
        .send(job)
        .map_err(|_| io::Error::other("hns-lab spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("hns-lab spawner thread dropped the request"))?
}

/// A long-running child process started by the lab (a daemon or a background
/// server). Cloning gives another handle to the same process.
///
/// Signals are sent only after checking, under a lock, that the child has not
/// been reaped yet: an unreaped child keeps its PID, so the signal can never
/// hit an unrelated process that happens to reuse the number.
#[derive(Clone)]
pub struct Proc {
    pid: u32,
    label: Arc<str>,
    child: Arc<Mutex<Child>>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc").field("pid", &self.pid).field("label", &self.label).finish()
    }
}

impl Proc {
    pub(crate) fn new(child: Child, label: impl Into<String>) -> Proc {
        Proc {
            pid: child.id(),
            label: Arc::from(label.into()),
            child: Arc::new(Mutex::new(child)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What this process is (for messages).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Exit status if the process has exited (reaps it), `None` if running.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        Ok(self.lock().try_wait()?)
    }

    /// True while the process has not exited.
    pub fn is_running(&self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Send `signal` without waiting. Fails if the process already exited.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let mut child = self.lock();
        if let Some(status) = child.try_wait()? {
            bail!("{} (pid {}) already exited: {status}", self.label, self.pid);
        }
        kill(Pid::from_raw(self.pid as i32), signal)
            .with_context(|| format!("sending {signal} to {} (pid {})", self.label, self.pid))?;
        Ok(())
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait (without limit) for the process to exit.
    pub fn wait(&self) -> Result<ExitStatus> {
        Ok(self.lock().wait()?)
    }

    /// Send `signal` and wait for the process to exit. If it is still running
    /// 10 s later it is SIGKILLed and an error is returned. If the process had
    /// already exited, its status is returned and nothing is sent.
    pub fn kill(&self, signal: Signal) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // It may exit between the check and the signal; that is fine.
        if let Err(e) = self.signal(signal) {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            return Err(e);
        }
        if let Some(status) = self.wait_timeout(Duration::from_secs(10))? {
            return Ok(status);
        }
        let _ = self.signal(Signal::SIGKILL);
        let status = self.wait()?;
        Err(anyhow!(
            "{} (pid {}) ignored {signal} for 10 s and was SIGKILLed ({status})",
            self.label,
            self.pid
        ))
    }

    /// Graceful stop: SIGTERM, wait up to 10 s, then SIGKILL.
    pub fn stop(&self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let _ = self.signal(Signal::SIGTERM);
        if let Some(status) = self.wait_timeout(Duration::from_secs(10))? {
            return Ok(status);
        }
        let _ = self.signal(Signal::SIGKILL);
        self.wait()
    }

    /// Take the piped stdout, if it was piped and not taken yet.
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        self.lock().stdout.take()
    }

    /// Take the piped stderr, if it was piped and not taken yet.
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        self.lock().stderr.take()
    }

    /// SIGKILL and reap; for teardown paths that must not fail.
    pub(crate) fn kill_quietly(&self) {
        let mut child = self.lock();
        // std's Child::kill never signals an already-reaped child.
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Identity of a namespace (nsfs device + inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NsId {
    dev: u64,
    ino: u64,
}

/// Identity of the namespace an open namespace file refers to.
pub(crate) fn ns_id_of_file(file: &fs::File) -> io::Result<NsId> {
    let md = file.metadata()?;
    Ok(NsId { dev: md.dev(), ino: md.ino() })
}

/// Namespace of `kind` ("net", "mnt") of process `pid` ("self" for us).
pub(crate) fn ns_id(pid: &str, kind: &str) -> io::Result<NsId> {
    let md = fs::metadata(format!("/proc/{pid}/ns/{kind}"))?;
    Ok(NsId { dev: md.dev(), ino: md.ino() })
}

/// Is there a (non-reaped) process with this pid?
pub(crate) fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    match kill(Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

fn in_namespaces(pid: u32, targets: &[NsId]) -> bool {
    let pid = pid.to_string();
    ["net", "mnt"].iter().any(|kind| match ns_id(&pid, kind) {
        Ok(id) => targets.contains(&id),
        Err(_) => false,
    })
}

/// SIGKILL `pid` only if it is (still) a member of one of `targets`.
/// A pidfd pins the process identity between the check and the signal.
fn kill_if_member(pid: u32, targets: &[NsId]) -> bool {
    // SAFETY: plain syscalls with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return false;
    }
    let fd = fd as libc::c_int;
    // If the pid was recycled after pidfd_open, the pidfd refers to the dead
    // process and the signal below fails with ESRCH; if the pidfd's process
    // is alive, /proc/PID is that very process.
    let killed = in_namespaces(pid, targets)
        && unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        } == 0;
    unsafe { libc::close(fd) };
    killed
}

/// Kill every process (except `exclude`) living in one of the namespaces
/// `targets`, and wait (bounded) until none is left. Teardown backstop for
/// processes the daemon or a test started inside the lab and did not stop.
pub(crate) fn sweep_namespaces(targets: &[NsId], exclude: &[u32]) {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut found = false;
        let Ok(entries) = fs::read_dir("/proc") else { return };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me || exclude.contains(&pid) {
                continue;
            }
            if in_namespaces(pid, targets) {
                found = true;
                kill_if_member(pid, targets);
            }
        }
        if !found || Instant::now() >= deadline {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
