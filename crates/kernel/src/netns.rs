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

/// True if `path` currently refers to a network namespace, as opposed to a missing path, the
/// empty placeholder left when /run was emptied by a reboot, or another kind of namespace.
pub fn is_netns(path: &Path) -> bool {
    open(path).is_ok()
}

pub fn identity(path: &Path) -> Result<NsIdentity> {
    let f = open(path)?;
    let m = File::from(f).metadata().map_err(|e| KernelError::io("stat namespace", path.display().to_string(), e))?;
    Ok(NsIdentity { dev: m.dev(), ino: m.ino() })
}

/// Opens `path` if it is a network namespace: an nsfs file (a /proc/PID/ns/ link or a bind
/// mount of one) whose namespace type is network. Every other nsfs file (`/proc/PID/ns/mnt`,
/// `user`, ...) is refused: it can be opened, but never joined as a network namespace.
pub fn open(path: &Path) -> Result<OwnedFd> {
    let shown = path.display().to_string();
    let f = File::open(path).map_err(|e| KernelError::io("open namespace", &shown, e))?;
    let fs = nix::sys::statfs::fstatfs(&f).map_err(|e| KernelError::nix("open namespace", &shown, e))?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(KernelError { op: "open namespace".into(), object: shown, reason: "not a namespace file (a plain file or directory, e.g. a placeholder left after a reboot)".into(), errno: Some(libc::ENOENT) });
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open file's namespace type.
    // nix has no wrapper for it.
    let kind = unsafe { libc::ioctl(f.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(KernelError::io("read namespace type of", shown, std::io::Error::last_os_error()));
    }
    if kind != libc::CLONE_NEWNET {
        return Err(KernelError { op: "open namespace".into(), object: shown, reason: format!("a {} namespace, not a network namespace", ns_type_name(kind)), errno: Some(libc::EINVAL) });
    }
    Ok(f.into())
}

fn ns_type_name(kind: libc::c_int) -> &'static str {
    match kind {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => "non-network",
    }
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

/// The network namespaces that are the host itself and must never become a compartment:
/// hnsd's own and the machine's initial one. Attaching an endpoint there would put a veth, an
/// address and a default route into the host's real network.
#[derive(Debug, Clone)]
pub struct HostNamespaces {
    own: NsIdentity,
    /// The initial namespace as seen through every witness that could be read, or why none
    /// could (then no namespace can be told apart from it, and every adoption is refused).
    initial: std::result::Result<Vec<NsIdentity>, String>,
}

/// Why a namespace may not be adopted (see [`HostNamespaces::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostNsRefusal {
    Own,
    Initial,
    Unknown(String),
}

impl HostNamespaces {
    /// Finds hnsd's own namespace and the initial one. Witnesses of the initial namespace:
    ///  - PID 1 (init lives there), when its ns link can be read. It cannot when PID 1 holds a
    ///    capability outside hnsd's bounding set (the ptrace access check), and inside a PID
    ///    namespace of its own PID 1 is that namespace's init, not the machine's;
    ///  - PID 2 when it is a kernel thread (kthreadd): kernel threads always run in the initial
    ///    namespaces, and their links stay readable without the capabilities PID 1 may hold.
    ///    Inside a PID namespace no kernel thread is visible, and PID 2 is an ordinary process.
    pub fn discover() -> Result<HostNamespaces> {
        let own = identity(Path::new("/proc/thread-self/ns/net"))?;
        let mut found = Vec::new();
        let mut missing = Vec::new();
        match identity(Path::new("/proc/1/ns/net")) {
            Ok(id) => found.push(id),
            Err(e) => missing.push(format!("/proc/1/ns/net: {}", e.reason)),
        }
        if is_kernel_thread(2) {
            match identity(Path::new("/proc/2/ns/net")) {
                Ok(id) => found.push(id),
                Err(e) => missing.push(format!("/proc/2/ns/net (kthreadd): {}", e.reason)),
            }
        } else {
            missing.push("PID 2 is not a kernel thread (hnsd runs in a PID namespace of its own)".into());
        }
        let initial = if found.is_empty() { Err(missing.join("; ")) } else { Ok(found) };
        Ok(HostNamespaces { own, initial })
    }

    /// Why the initial namespace could not be identified, if it could not.
    pub fn initial_unknown(&self) -> Option<&str> {
        self.initial.as_ref().err().map(String::as_str)
    }

    /// Whether the namespace `id` may be adopted as a compartment.
    pub fn check(&self, id: NsIdentity) -> std::result::Result<(), HostNsRefusal> {
        if id == self.own {
            return Err(HostNsRefusal::Own);
        }
        match &self.initial {
            Ok(ids) if ids.contains(&id) => Err(HostNsRefusal::Initial),
            Ok(_) => Ok(()),
            Err(why) => Err(HostNsRefusal::Unknown(why.clone())),
        }
    }
}

/// PF_KTHREAD in the flags field of /proc/PID/stat (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

fn is_kernel_thread(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    stat_flags(&stat).is_some_and(|f| f & PF_KTHREAD != 0)
}

/// The flags field (the 9th) of a /proc/PID/stat line. The command name (2nd, in parentheses)
/// may contain spaces and parentheses, so fields are counted after its last ')'.
fn stat_flags(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(6)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_flags_are_read_after_the_command_name() {
        assert_eq!(stat_flags("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0"), Some(2129984));
        assert_eq!(stat_flags("7 (a) b) (c) S 1 7 7 0 -1 4194560 1"), Some(4194560));
        assert_eq!(stat_flags("garbage"), None);
    }

    #[test]
    fn only_network_namespaces_open() {
        let e = open(Path::new("/proc/self/ns/mnt")).unwrap_err();
        assert!(e.reason.contains("a mount namespace, not a network namespace"), "{e}");
        let e = open(Path::new("/etc/hostname")).unwrap_err();
        assert!(e.reason.contains("not a namespace file"), "{e}");
        assert!(open(Path::new("/proc/self/ns/net")).is_ok());
    }

    #[test]
    fn hnsd_own_namespace_is_refused() {
        let h = HostNamespaces::discover().unwrap();
        assert_eq!(h.check(identity(Path::new("/proc/self/ns/net")).unwrap()), Err(HostNsRefusal::Own));
    }
}
