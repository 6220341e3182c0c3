//! [`ClusterLab`]: several lab hosts on one underlay LAN with a real etcd on it, for overlay
//! tests and benchmarks.
//!
//! ```text
//!   host0 (a Lab)  ul0 10.99.0.1/24 --+
//!   host1 (a Lab)  ul0 10.99.0.2/24 --+-- bridge `ul` in the underlay namespace
//!   ...                               |   10.99.0.254/24, etcd on 10.99.0.254:2379
//!   hostN-1        ul0 10.99.0.N/24 --+
//! ```
//!
//! Every host is a complete [`Lab`] (host namespace with hnsd, its own LAN on `eth0` for
//! outbound traffic); the underlay is a second adapter, `ul0`, plugged into a switch in a
//! namespace of its own, where etcd runs with a temporary data directory. hnsd of host `i` is
//! node `host{i}` with VTEP `10.99.0.{i+1}`. Dropping the lab stops the hosts (and their
//! hnsd), then etcd, then the underlay.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};

use crate::etcd::EtcdServer;
use crate::holder::Holder;
use crate::lab::{Daemon, HnsdOptions, Lab};

/// The underlay subnet (private, RFC 1918): hosts are `.1` upwards, etcd is `.254`.
pub const UNDERLAY_SUBNET: &str = "10.99.0.0/24";
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
        if n == 0 || n > MAX_HOSTS {
            bail!("a cluster lab has 1 to {MAX_HOSTS} hosts, not {n}");
        }
        let underlay = Holder::new_net().context("creating the underlay namespace")?;
        underlay.sh(&format!(
            "set -e
             ip link set lo up
             ip link add ul type bridge mcast_snooping 0
             ip addr add {ETCD_IP}/24 dev ul
             ip link set ul up"
        ))?;
        let etcd = EtcdServer::start(&underlay, ETCD_IP.into(), ETCD_PORT).context("starting etcd on the underlay")?;
        let mut lab = ClusterLab { hosts: Vec::with_capacity(n), etcd, underlay };
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
        let vtep = ClusterLab::vtep(i);
        host.host().sh(&format!("set -e\nip addr add {vtep}/24 dev {UNDERLAY_IF}\nip link set {UNDERLAY_IF} up"))?;
        Ok(())
    }

    /// The VTEP (underlay address) of host `i`.
    pub fn vtep(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, (i + 1) as u8)
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
            ClusterLab::vtep(i).to_string(),
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
