//! Sysctls, written only when different (so a reconcile pass that finds everything in place
//! does no writes). Paths under /proc/sys/net resolve against the calling thread's network
//! namespace: to set one inside a compartment, call these from [`crate::netns::run_in`].

use std::path::Path;

use crate::error::{KernelError, Result};

pub fn read(key: &str) -> Result<String> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::read_to_string(&path).map(|s| s.trim().to_owned()).map_err(|e| KernelError::io("read sysctl", key, e))
}

/// Writes `value` to the sysctl `key` (dotted form) unless it already has it.
pub fn ensure(key: &str, value: &str) -> Result<()> {
    if read(key).ok().as_deref() == Some(value) {
        return Ok(());
    }
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| KernelError::io("write sysctl", key, e))
}

/// Turns IPv6 off on `link`, a link of the calling thread's network namespace
/// (`net.ipv6.conf.<link>.disable_ipv6`): it then gets no IPv6 address and no route of its own,
/// and the kernel's IPv6 code skips it when it comes up or gains a carrier.
///
/// For a bridge port (the host end of an endpoint's veth), which carries frames and needs no
/// IP of its own, on every network, IPv6 ones included. An up port with IPv6 on adds a
/// multicast route (`ff00::/8`) to the namespace's IPv6 table, one per port; and the kernel
/// walks that whole table on every change of a link without a carrier, every link taken down
/// or deleted, and every such route added: at 5 000 endpoints, 1.5-3 ms more of each attach
/// and detach, under the RTNL lock. No netlink attribute sets it, hence the file.
/// A kernel without IPv6 (`ipv6.disable=1`: no such file) has nothing to turn off.
pub fn disable_ipv6(link: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !Path::new("/proc/sys/net/ipv6").exists() => Ok(()),
        done => done.map_err(|e| KernelError::io("turn IPv6 off on", link, e)),
    }
}
