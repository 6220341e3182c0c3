//! [`ClusterLab`]: several lab hosts on one underlay LAN with a real etcd on it, for overlay
//! tests and benchmarks.
//!
//! ```text
//!   host0 (a Lab)  ul0 10.99.0.1/24 fd99::1/64 --+
//!   host1 (a Lab)  ul0 10.99.0.2/24 fd99::2/64 --+-- bridge `ul` in the underlay namespace
//!   ...                                          |   10.99.0.254/24, fd99::fe/64,
//!   hostN-1        ul0 10.99.0.N/24 fd99::N/64 --+   etcd on 10.99.0.254:2379
//! ```
//!
//! Every host is a complete [`Lab`] (host namespace with hnsd, its own LAN on `eth0` for
//! outbound traffic); the underlay is a second adapter, `ul0`, plugged into a switch in a
//! namespace of its own, where etcd runs with a temporary data directory. hnsd of host `i` is
//! node `host{i}` with VTEP `10.99.0.{i+1}`, or `fd99::{i+1}` in a lab made with
//! [`ClusterLab::with_ipv6_underlay`] (VXLAN over IPv6; etcd stays on IPv4). Dropping the lab stops the hosts (and their
//! hnsd), then etcd, then the underlay.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail};

use crate::etcd::EtcdServer;
use crate::holder::Holder;
use crate::lab::{Daemon, HnsdOptions, Lab};

/// The underlay subnet (private, RFC 1918): hosts are `.1` upwards, etcd is `.254`.
pub const UNDERLAY_SUBNET: &str = "10.99.0.0/24";
/// The IPv6 underlay subnet (unique local): hosts are `::1` upwards, the switch is `::fe`.
pub const UNDERLAY6_SUBNET: &str = "fd99::/64";
/// etcd's address on the underlay.
pub const ETCD_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 254);
/// etcd's client port.
pub const ETCD_PORT: u16 = 2379;
/// The underlay adapter of every host.
pub const UNDERLAY_IF: &str = "ul0";
/// Most hosts one underlay /24 takes (.1 to .250).
pub const MAX_HOSTS: usize = 250;

/// N hosts, one underlay LAN, one etcd.
pub struct ClusterLab {
    // Declaration order is drop order: hosts (and their hnsd) first, then etcd, then the
    // underlay namespace they were plugged into.
    hosts: Vec<Lab>,
    etcd: EtcdServer,
    underlay: Holder,
    /// hnsd advertises the hosts' IPv6 underlay addresses as VTEPs.
    ipv6_vteps: bool,
}

impl std::fmt::Debug for ClusterLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLab").field("hosts", &self.hosts.len()).field("etcd", &self.etcd).finish()
    }
}

impl ClusterLab {
    /// Builds `n` hosts on one underlay and starts etcd on it (no hnsd yet: see
    /// [`ClusterLab::start_hnsd`]). On failure everything built so far is torn down.
    pub fn new(n: usize) -> Result<ClusterLab> {
        ClusterLab::build(n, false)
    }

    /// As [`ClusterLab::new`], with every hnsd advertising its IPv6 underlay address: the
    /// overlay runs VXLAN over IPv6.
    pub fn with_ipv6_underlay(n: usize) -> Result<ClusterLab> {
        ClusterLab::build(n, true)
    }

    fn build(n: usize, ipv6_vteps: bool) -> Result<ClusterLab> {
        if n == 0 || n > MAX_HOSTS {
            bail!("a cluster lab has 1 to {MAX_HOSTS} hosts, not {n}");
        }
        let underlay = Holder::new_net().context("creating the underlay namespace")?;
        underlay.sh(&format!(
            "set -e
             ip link set lo up
             ip link add ul type bridge mcast_snooping 0
             ip addr add {ETCD_IP}/24 dev ul
             ip addr add fd99::fe/64 dev ul nodad
             ip link set ul up"
        ))?;
        let etcd = EtcdServer::start(&underlay, ETCD_IP.into(), ETCD_PORT).context("starting etcd on the underlay")?;
        let mut lab = ClusterLab { hosts: Vec::with_capacity(n), etcd, underlay, ipv6_vteps };
        for i in 0..n {
            let host = Lab::new().with_context(|| format!("creating host {i}"))?;
            lab.plug(&host, i).with_context(|| format!("plugging host {i} into the underlay"))?;
            lab.hosts.push(host);
        }
        Ok(lab)
    }

    fn plug(&self, host: &Lab, i: usize) -> Result<()> {
        let port = format!("ulp{i}");
        host.host().ip(&["link", "add", UNDERLAY_IF, "type", "veth", "peer", "name", &port, "netns", &self.underlay.pid().to_string()])?;
        self.underlay.sh(&format!("set -e\nip link set {port} master ul\nip link set {port} up"))?;
        let (vtep, vtep6) = (ClusterLab::vtep(i), ClusterLab::vtep6(i));
        // No duplicate address detection: the lab hands out each address once, and a
        // tentative address could not be a VTEP yet.
        host.host().sh(&format!(
            "set -e\nip addr add {vtep}/24 dev {UNDERLAY_IF}\nip addr add {vtep6}/64 dev {UNDERLAY_IF} nodad\nip link set {UNDERLAY_IF} up"
        ))?;
        Ok(())
    }

    /// The VTEP (underlay address) of host `i`.
    pub fn vtep(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, (i + 1) as u8)
    }

    /// The IPv6 underlay address of host `i`.
    pub fn vtep6(i: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, (i + 1) as u16)
    }

    /// The VTEP hnsd of host `i` advertises in this lab.
    pub fn advertised(&self, i: usize) -> IpAddr {
        if self.ipv6_vteps { ClusterLab::vtep6(i).into() } else { ClusterLab::vtep(i).into() }
    }

    /// The node name of host `i`.
    pub fn node_name(i: usize) -> String {
        format!("host{i}")
    }

    /// `etcd://10.99.0.254:2379`.
    pub fn store_url() -> String {
        format!("etcd://{ETCD_IP}:{ETCD_PORT}")
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Lab {
        &self.hosts[i]
    }

    /// Every host, in order.
    pub fn hosts(&self) -> &[Lab] {
        &self.hosts
    }

    /// The cluster flags of host `i`'s hnsd.
    pub fn cluster_args(&self, i: usize) -> Vec<String> {
        vec![
            "--cluster-store".into(),
            ClusterLab::store_url(),
            "--advertise-addr".into(),
            self.advertised(i).to_string(),
            "--node-name".into(),
            ClusterLab::node_name(i),
        ]
    }

    /// Starts hnsd on host `i` as a cluster node, with `extra` flags.
    pub fn start_hnsd(&self, i: usize, extra: &[&str]) -> Result<Daemon> {
        let mut args = self.cluster_args(i);
        args.extend(extra.iter().map(|s| s.to_string()));
        self.hosts[i].start_hnsd_with(HnsdOptions { args, ..Default::default() })
    }

    /// The etcd server (for its log, its address).
    pub fn etcd(&self) -> &EtcdServer {
        &self.etcd
    }

    /// Kills etcd (data kept), like a crash of the store.
    pub fn stop_etcd(&mut self) -> Result<()> {
        self.etcd.stop()
    }

    /// Starts etcd again with the same data and waits until it is healthy.
    pub fn restart_etcd(&mut self) -> Result<()> {
        self.etcd.restart(&self.underlay)
    }

    /// The underlay namespace (the switch and etcd), e.g. for captures.
    pub fn underlay(&self) -> &Holder {
        &self.underlay
    }
}
