//! # hns-lab: throwaway worlds made of Linux network namespaces
//!
//! The lab lets integration tests, benchmarks and the newcomer sandbox run a
//! real `hnsd` against a real kernel **without touching the machine's own
//! network**. A [`Lab`] is one simulated container host plus the LAN it is
//! plugged into:
//!
//! ```text
//!   host namespace (net + mount)                lan namespace (net)
//!  +-------------------------------+          +------------------------------+
//!  | hnsd, hnsctl, containers      |          | "router" + "test server"     |
//!  | eth0 198.51.100.2/24  ------- veth ----- | lan0 198.51.100.1/24         |
//!  | default via 198.51.100.1      |          | lo   203.0.113.10/32         |
//!  | tmpfs on <lab>/run            |          | ip_forward = 1               |
//!  | ip_forward = 1                |          |                              |
//!  +-------------------------------+          +------------------------------+
//! ```
//!
//! Only documentation address ranges are used (RFC 5737: 198.51.100.0/24 and
//! 203.0.113.0/24), so nothing the lab does can collide with a real network.
//!
//! For overlay networks, a [`ClusterLab`] joins several such hosts through a second
//! adapter (`ul0`) to one underlay switch (10.99.0.0/24, in a namespace of its own) where a
//! real etcd runs ([`etcd::EtcdServer`]); each host keeps its own LAN as above.
//!
//! ## Why "holder" processes instead of `ip netns add`
//!
//! A namespace lives as long as something references it. `ip netns add`
//! pins the namespace with a bind mount under `/run/netns/NAME`; if a test
//! panics, is SIGKILLed or times out before its cleanup ran, that name and its
//! namespace stay behind forever, and the next run trips over them.
//!
//! Instead each namespace is created by a tiny [`Holder`] process
//! (`unshare --net [--mount] -- sleep infinity`). Nothing is named anywhere;
//! the namespace is referenced only by the holder's `/proc/PID/ns/*`. When
//! the holder dies, the kernel tears down the namespace and everything in it:
//! links (including our veth pair, whose peer goes with it), routes, nftables
//! rulesets and — for the mount namespace — every mount made inside it. The
//! holder is started with `PR_SET_PDEATHSIG = SIGKILL`, so it dies even when
//! the test process itself is SIGKILLed and no `Drop` ever runs.
//!
//! (`PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! not the process. All long-lived children are therefore forked from one
//! private, never-exiting "spawner" thread, so a lab built on a short-lived
//! thread — a tokio blocking thread, say — does not lose its namespaces when
//! that thread goes away.)
//!
//! ## Why the host gets its own mount namespace and a tmpfs on `run/`
//!
//! hnsd bind-mounts namespace files under its run directory (the analogue of
//! `/run/netns`). In the lab that directory is `<lab>/run`, covered by a tmpfs
//! mounted *inside the host's private mount namespace*. Those mounts never
//! appear in the real mount table and vanish with the holder; a simulated
//! reboot ([`Lab::reboot_run_dir`]) is just "replace that tmpfs".
//! The state directory (`<lab>/state`) and the API socket (`<lab>/hns.sock`)
//! are plain files under `/tmp`, visible from outside, so a test can talk to
//! the daemon directly and state survives a daemon restart like on disk.
//!
//! ## Running the tests
//!
//! The lab needs root (namespaces, veth, mounts) and the helper binaries of
//! the workspace. [`Lab::bin`] looks them up next to the running executable
//! (or in `$HNS_BIN_DIR`), so build them first:
//!
//! ```text
//! cargo build --workspace          # hnsd, hnsctl, labprobe
//! cargo test -p hns-lab            # this crate's own tests only need labprobe
//! ```
//!
//! `cargo test -p hns-lab` builds `labprobe` by itself (it is a binary of this
//! package); tests in other crates that start `hnsd` need `cargo build
//! --workspace` (or at least `-p hnsd -p hnsctl -p hns-lab`) beforehand.
//!
//! ## Safety rules the lab follows
//!
//! * Nothing is ever configured in the root namespace: every command runs via
//!   `nsenter` into a holder that was verified to be in a *different* network
//!   (and mount) namespace than ours before it is used.
//! * Processes are only ever signalled by PID, and only processes the lab
//!   started — or processes found living inside the lab's own namespaces at
//!   teardown (those can only be descendants of what the lab started).
//! * Cleanup happens in `Drop`, never panics, and is backed up by the
//!   kernel: the holders die with the test process.

pub mod docker;
pub mod cluster;
pub mod etcd;
mod holder;
mod lab;
mod process;
pub mod sandbox;

pub use docker::DockerDaemon;
pub use cluster::ClusterLab;
pub use holder::{Holder, RunOutput};
pub use hns_client::http_get;
pub use lab::{Capture, Daemon, ExternalUplink, HnsdOptions, Lab, LabOptions, Side};
pub use process::Proc;
pub use sandbox::{SandboxOpts, run_sandbox};

/// Polls `f` every 100 ms until it is true or `limit` passes; true if it became true.
pub fn eventually(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    f()
}

use std::net::{Ipv4Addr, Ipv6Addr};

/// The LAN router's address (on `lan0` in the LAN namespace); the host's
/// default gateway.
pub const LAN_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The host's uplink address (on `eth0` in the host namespace).
pub const HOST_UPLINK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The LAN subnet shared by the router and the host uplink.
pub const LAN_SUBNET: &str = "198.51.100.0/24";
/// Prefix length of [`LAN_SUBNET`].
pub const LAN_PREFIX_LEN: u8 = 24;
/// A "server on the internet": lives on the LAN namespace's `lo`, so traffic
/// from the host to it is routed through [`LAN_ROUTER`].
pub const TEST_SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// IPv6 of the LAN router (documentation prefix 2001:db8::/32).
pub const LAN_ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
/// IPv6 of the host uplink.
pub const HOST_UPLINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
/// IPv6 of the test server behind the router.
pub const TEST_SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0x10);
/// Name of the host's uplink interface (inside the host namespace).
pub const HOST_UPLINK_IF: &str = "eth0";
/// Name of the LAN side of the uplink veth (inside the LAN namespace).
pub const LAN_IF: &str = "lan0";
/// Default directory of the sandbox (`hnsd --sandbox`).
pub const DEFAULT_SANDBOX_DIR: &str = "/run/hns-sandbox";
