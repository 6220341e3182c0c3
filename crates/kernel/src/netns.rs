//! Network namespaces: hns's compartments.
//!
//! A compartment hns creates is a network namespace bind-mounted on a file under the daemon's
//! run dir, so it outlives every process in it. An adopted one is any existing namespace path
//! (`/run/netns/x`, `/proc/PID/ns/net`) that hns only opens and never keeps alive.
//!
//! Why a fresh OS thread for every namespace switch: network namespace membership is per
//! thread. Calling setns/unshare on a tokio worker would leave that worker (and every task it
//! later runs) in the wrong namespace; forking from a multi-threaded daemon is unsafe. A short
//! scoped thread that switches, does its one job and exits can never leak a namespace back.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::error::{KernelError, Result};

const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Identity of a namespace: (device, inode) of its nsfs file. A PID reused by another process
/// points at another namespace, so comparing identities tells whether an adopted path still
/// means the namespace that was attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NsIdentity {
    pub dev: u64,
    pub ino: u64,
}

/// Makes `dir` a shared mount point (as iproute2 does for /run/netns) so that namespace bind
/// mounts made later propagate to mount namespaces cloned from this one (e.g. `hnsctl run`).
pub fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| KernelError::io("create directory", dir.display().to_string(), e))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, dir, None::<&str>, shared, None::<&str>).is_err() {
        // Not a mount point yet: bind it onto itself first.
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| KernelError::nix("bind-mount", dir.display().to_string(), e))?;
        mount(None::<&str>, dir, None::<&str>, shared, None::<&str>)
            .map_err(|e| KernelError::nix("make shared", dir.display().to_string(), e))?;
    }
    Ok(())
}

/// Creates a new network namespace and bind-mounts it on `path`. Loopback is left down; the
/// caller brings it up through netlink.
pub fn create(path: &Path) -> Result<NsIdentity> {
    let shown = path.display().to_string();
    File::create(path).map_err(|e| KernelError::io("create namespace file", &shown, e))?;
    let result = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| KernelError::nix("unshare network namespace", &shown, e))?;
            mount(Some("/proc/thread-self/ns/net"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| KernelError::nix("bind-mount namespace", &shown, e))
        })
        .join()
        .unwrap_or_else(|_| Err(KernelError::new("create namespace", &shown, "thread panicked")))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    identity(path)
}

/// Bind-mounts the namespace `source` (such as `/proc/PID/ns/net`) on `path` again, creating
/// the file if needed: a compartment whose mount was removed while a process still runs in it.
pub fn mount_at(source: &Path, path: &Path) -> Result<NsIdentity> {
    let shown = path.display().to_string();
    if !path.exists() {
        File::create(path).map_err(|e| KernelError::io("create namespace file", &shown, e))?;
    }
    mount(Some(source), path, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| KernelError::nix("bind-mount namespace", &shown, e))?;
    identity(path)
}

/// Unmounts and deletes a namespace file created by [`create`]. Missing is fine.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(KernelError::nix("unmount namespace", path.display().to_string(), e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(KernelError::io("remove namespace file", path.display().to_string(), e)),
    }
}

/// True if `path` currently refers to a network namespace (an nsfs file), as opposed to a
/// missing path or the empty placeholder left when /run was emptied by a reboot.
pub fn is_netns(path: &Path) -> bool {
    matches!(nix::sys::statfs::statfs(path), Ok(s) if s.filesystem_type().0 as i64 == NSFS_MAGIC)
}

pub fn identity(path: &Path) -> Result<NsIdentity> {
    if !is_netns(path) {
        return Err(KernelError { op: "open namespace".into(), object: path.display().to_string(), reason: "not a network namespace (no such namespace, or a plain file)".into(), errno: Some(libc::ENOENT) });
    }
    let m = std::fs::metadata(path).map_err(|e| KernelError::io("stat namespace", path.display().to_string(), e))?;
    Ok(NsIdentity { dev: m.dev(), ino: m.ino() })
}

pub fn open(path: &Path) -> Result<OwnedFd> {
    if !is_netns(path) {
        return Err(KernelError { op: "open namespace".into(), object: path.display().to_string(), reason: "not a network namespace".into(), errno: Some(libc::ENOENT) });
    }
    File::open(path).map(OwnedFd::from).map_err(|e| KernelError::io("open namespace", path.display().to_string(), e))
}

/// Runs `f` on a fresh thread that has joined the namespace `ns`. The thread ends with `f`.
pub fn run_in<T: Send>(ns: &impl AsFd, f: impl FnOnce() -> T + Send) -> Result<T> {
    let fd = ns.as_fd();
    std::thread::scope(|s| {
        s.spawn(move || -> Result<T> {
            setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| KernelError::nix("enter namespace", format!("fd {}", fd.as_raw_fd()), e))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(KernelError::new("run in namespace", "", "thread panicked")))
    })
}
