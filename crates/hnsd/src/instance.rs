//! One host, one hnsd: exclusive ownership of a network namespace, a state dir and a run dir.
//!
//! Two hnsd in one network namespace delete each other's links on every reconcile pass; two on
//! one state dir write one store from two processes; two on one run dir remove each other's
//! compartment mounts as orphans. `hnsd --cleanup` takes the same locks, so it cannot run
//! under a live daemon.
//!
//! - The network namespace: an abstract unix socket (`@hns-hnsd-lock`). Abstract names are
//!   scoped to a network namespace and vanish with the socket, so the kernel releases it when
//!   the holder dies, however it dies; the holder's PID comes from `SO_PEERCRED` on a connect.
//! - Each directory: `flock` on `hnsd.lock` inside it (also released by the kernel on death),
//!   with the holder's PID written in the file for the error message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};

/// The abstract socket name that marks "an hnsd lives in this network namespace".
const NETNS_LOCK: &[u8] = b"hns-hnsd-lock";
/// The lock file inside each directory.
const LOCK_FILE: &str = "hnsd.lock";

/// Held for the life of the daemon (or of `--cleanup`); the kernel drops it when we exit.
pub struct InstanceLock {
    _dirs: Vec<Flock<File>>,
}

/// Takes the network namespace and every directory in `dirs`, or says who holds one.
/// `what` names the caller's activity for the message ("serve", "clean up").
pub fn acquire(dirs: &[&Path], what: &str) -> anyhow::Result<InstanceLock> {
    lock_netns(what)?;
    let mut held = Vec::new();
    for dir in dirs {
        held.push(lock_dir(dir, what)?);
    }
    Ok(InstanceLock { _dirs: held })
}

fn lock_netns(what: &str) -> anyhow::Result<()> {
    let addr = SocketAddr::from_abstract_name(NETNS_LOCK)?;
    match UnixListener::bind_addr(&addr) {
        Ok(listener) => {
            // Answer connects (and so SO_PEERCRED) for as long as we live; nothing is read.
            std::thread::Builder::new().name("instance-lock".into()).spawn(move || {
                for conn in listener.incoming() {
                    drop(conn);
                }
            })?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let holder = UnixStream::connect_addr(&addr)
                .ok()
                .and_then(|s| nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials).ok())
                .map(|c| format!("pid {}", c.pid()))
                .unwrap_or_else(|| "pid unknown".into());
            bail!(
                "cannot {what}: another hnsd ({holder}) already runs in this network namespace (it holds the abstract socket @{}); two hnsd in one namespace delete each other's links. Stop it first",
                String::from_utf8_lossy(NETNS_LOCK)
            )
        }
        Err(e) => Err(e).context("bind the per-namespace lock socket"),
    }
}

fn lock_dir(dir: &Path, what: &str) -> anyhow::Result<Flock<File>> {
    let path: PathBuf = dir.join(LOCK_FILE);
    let file = File::options().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)?;
            lock.rewind()?;
            writeln!(lock, "{}", std::process::id()).with_context(|| format!("write {}", path.display()))?;
            Ok(lock)
        }
        Err((mut file, nix::Error::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let holder = if pid.is_empty() { "pid unknown".to_owned() } else { format!("pid {pid}") };
            bail!(
                "cannot {what}: {} is in use by another hnsd ({holder}; lock file {}); a state or run dir belongs to one hnsd. Stop it first or give this one its own directory",
                dir.display(),
                path.display()
            )
        }
        Err((_, e)) => Err(e).with_context(|| format!("lock {}", path.display())),
    }
}
