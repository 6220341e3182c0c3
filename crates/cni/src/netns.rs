//! The container's network namespace as this process sees it: its identity (to find the hns
//! compartment that already adopted it) and, for CHECK, what is inside.

use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;

use nix::ifaddrs::getifaddrs;
use nix::sched::{CloneFlags, setns};

/// (device, inode) of a namespace file: equal for every path naming the same namespace
/// (`/run/netns/x`, `/proc/PID/ns/net`), as hnsd compares them.
pub fn identity(path: &str) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// An interface as the kernel shows it inside the namespace.
#[derive(Debug, Default)]
pub struct Seen {
    pub mac: Option<[u8; 6]>,
    pub addresses: Vec<IpAddr>,
}

/// Enters the namespace at `path` and reads `ifname`'s MAC and addresses; `None` when there
/// is no such interface. The process stays in that namespace: call it last (hns-cni is single
/// threaded, so setns applies to the whole process).
pub fn inspect(path: &str, ifname: &str) -> std::io::Result<Option<Seen>> {
    let ns = File::open(path)?;
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    let mut seen: Option<Seen> = None;
    for a in getifaddrs().map_err(std::io::Error::from)?.filter(|a| a.interface_name == ifname) {
        let s = seen.get_or_insert_with(Seen::default);
        let Some(addr) = a.address else { continue };
        if let Some(link) = addr.as_link_addr() {
            s.mac = link.addr().or(s.mac);
        } else if let Some(v4) = addr.as_sockaddr_in() {
            s.addresses.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            s.addresses.push(IpAddr::V6(v6.ip()));
        }
    }
    Ok(seen)
}
