//! The `overlay` driver (Windows' overlay network: one L2 segment across hosts, VXLAN on the
//! wire).
//!
//! On every host the network is the same thing:
//!
//! ```text
//!  container --veth--> bridge hns-XXXXXXXX (gateway address, same MAC everywhere)
//!                        +-- hnxXXXXXXXX: VXLAN, VNI of the network, learning off, ARP/ND proxy
//!                              FDB:   remote MAC -> remote VTEP      (from the cluster store)
//!                              neigh: remote IP  -> remote MAC       (answers ARP and IPv6 ND locally)
//! ```
//!
//! - the gateway address sits on every host's bridge with the same MAC (derived from the
//!   address): each host answers for it locally and nothing about it crosses the tunnel
//!   (the VXLAN device has no FDB entry for that MAC, and ARP never leaves a proxying VXLAN);
//! - nothing is flooded: there is no all-zeros FDB entry, so broadcasts stay on the host, and a
//!   peer the cluster store does not know is unreachable rather than guessed at;
//! - every link of the network (VXLAN, bridge, veths) uses the underlay MTU minus the
//!   encapsulation overhead, so full-size packets cross without fragmentation;
//! - no routing in or out by default (as on Windows, a container reaches the outside through a
//!   second endpoint on a nat network); with outbound NAT the network is masqueraded like nat.
//!
//! The remote entries come from the cluster watch (see hnsd's engine); [`sync_remote`] makes
//! the kernel match a desired set after a snapshot or when the reconciler finds drift.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hns_kernel::KernelError;
use hns_kernel::netlink::Netlink;
use hns_kernel::nft::NetworkRules;
use hns_kernel::sysctl;
use hns_kernel::vxlan::VxlanSpec;

use crate::{Compartment, EndpointPlan, NetworkPlan, Result};

/// The overlay part of a network plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayPlan {
    /// The VXLAN device (`hnx` + 8 hex digits of the network ID).
    pub vxlan: String,
    pub vni: u32,
    /// UDP port of the VXLAN device (HNS `VxlanPort`, 4789 by default).
    pub port: u16,
    /// This host's VTEP, or `None` when hnsd runs without a cluster store: the network then
    /// cannot be built here.
    pub local: Option<IpAddr>,
    /// MTU of the VXLAN device and every veth: underlay MTU minus the encapsulation overhead.
    pub mtu: u32,
    /// Masquerade the network's traffic to the outside (off by default, as on Windows).
    pub outbound_nat: bool,
}

/// One address of a remote endpoint as the kernel needs it (a dual-stack endpoint has two,
/// with one MAC and VTEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteEntry {
    pub ip: IpAddr,
    pub mac: [u8; 6],
    /// The VTEP of the host the endpoint lives on.
    pub vtep: IpAddr,
}

/// What [`sync_remote`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncCount {
    pub added: usize,
    pub removed: usize,
}

fn plan_of(net: &NetworkPlan) -> Result<&OverlayPlan> {
    net.overlay.as_ref().ok_or_else(|| KernelError::new("build overlay network", &net.id, "the network has no overlay plan"))
}

pub async fn create_network(host: &Netlink, net: &NetworkPlan) -> Result<u32> {
    let o = plan_of(net)?;
    let Some(local) = o.local else {
        return Err(KernelError::new(
            "build overlay network",
            &net.id,
            "this host has no VTEP: overlay networks need hnsd --cluster-store etcd://HOST:PORT --advertise-addr IP",
        ));
    };
    if o.outbound_nat {
        sysctl::ensure("net.ipv4.ip_forward", "1")?;
    }
    let ipv6 = net.has_ipv6();
    let bridge = host.ensure_bridge(&net.bridge, net.bridge_mac, ipv6).await?;
    for (subnet, gateway) in &net.subnets {
        host.ensure_address(&net.bridge, bridge, *gateway, subnet.prefix_len()).await?;
    }
    let spec = VxlanSpec { name: o.vxlan.clone(), vni: o.vni, local, port: o.port, mtu: o.mtu, master: bridge };
    host.ensure_vxlan(&spec).await?;
    Ok(bridge)
}

/// Removes the VXLAN device (with every FDB and neighbour entry on it) and the bridge.
pub async fn delete_network(host: &Netlink, net: &NetworkPlan) -> Result<()> {
    if let Some(o) = &net.overlay {
        host.delete_link(&o.vxlan).await?;
    }
    host.delete_link(&net.bridge).await
}

pub async fn attach(host: &Netlink, net: &NetworkPlan, ep: &EndpointPlan, c: &Compartment) -> Result<()> {
    let o = plan_of(net)?;
    let bridge = match host.link_by_name(&net.bridge).await? {
        Some(l) => l.index,
        None => create_network(host, net).await?,
    };
    let index = host.create_veth_into(&ep.host_if, Some(bridge), &ep.ifname, &c.fd, ep.mac, Some(o.mtu)).await?;
    // A bridge port, as nat's (see `crate::nat::attach`).
    host.disable_ipv6(&ep.host_if)?;
    crate::configure_inside(ep, c, crate::Inside { index, no_ipv6_autoconf: !net.has_ipv6() }).await
}

/// An endpoint's veth is a veth on the bridge as nat's: taken out of service the same way
/// (see [`crate::nat::detach`], whose retired link the caller deletes later).
pub async fn detach(host: &Netlink, ep: &EndpointPlan, inside: Option<&Compartment>) -> Result<Option<String>> {
    crate::nat::detach(host, &ep.host_if, inside.map(|c| (c, ep.ifname.as_str()))).await
}

/// Isolated like an `--internal` nat network unless outbound NAT is on: the segment is
/// bridged (across hosts through the VXLAN device), never routed.
pub fn nft_rules(net: &NetworkPlan) -> NetworkRules {
    let outbound = net.overlay.as_ref().is_some_and(|o| o.outbound_nat);
    NetworkRules {
        bridge: net.bridge.clone(),
        subnets: net.subnets.iter().map(|(s, _)| *s).collect(),
        masquerade: outbound,
        internal: !outbound,
        inbound_closed: true,
        dns_listeners: vec![],
    }
}

/// Programs one remote endpoint: frames for its MAC go to its VTEP, and the VXLAN device
/// answers ARP/ND for its address. Replaces what was there for the same MAC or address.
pub async fn add_remote(host: &Netlink, vxlan: &str, e: &RemoteEntry) -> Result<()> {
    host.fdb_add(vxlan, e.mac, e.vtep).await?;
    host.neigh_add(vxlan, e.ip, e.mac).await
}

/// Withdraws one remote endpoint. Absent entries (or an absent device) are fine.
pub async fn remove_remote(host: &Netlink, vxlan: &str, e: &RemoteEntry) -> Result<()> {
    if host.link_by_name(vxlan).await?.is_none() {
        return Ok(());
    }
    host.neigh_del(vxlan, e.ip).await?;
    host.fdb_del(vxlan, e.mac, e.vtep).await
}

/// Makes the VXLAN device's FDB and neighbour entries exactly `desired`: adds what is missing
/// or different, deletes what the cluster no longer has (for instance the endpoints of a
/// host whose lease expired while this hnsd was stopped).
pub async fn sync_remote(host: &Netlink, vxlan: &str, desired: &[RemoteEntry]) -> Result<SyncCount> {
    let mut count = SyncCount::default();
    let fdb: BTreeSet<([u8; 6], Option<IpAddr>)> = host.fdb_entries(vxlan).await?.into_iter().map(|f| (f.mac, f.remote)).collect();
    let neigh: BTreeMap<IpAddr, Option<[u8; 6]>> = host.neigh_entries(vxlan).await?.into_iter().map(|n| (n.ip, n.mac)).collect();
    let want_fdb: BTreeSet<([u8; 6], Option<IpAddr>)> = desired.iter().map(|e| (e.mac, Some(e.vtep))).collect();
    let want_neigh: BTreeMap<IpAddr, Option<[u8; 6]>> = desired.iter().map(|e| (e.ip, Some(e.mac))).collect();
    // Counted per MAC: a dual-stack endpoint has two entries (IPv4 and IPv6) but is one.
    let mut added = BTreeSet::new();
    for e in desired {
        if !fdb.contains(&(e.mac, Some(e.vtep))) || neigh.get(&e.ip) != Some(&Some(e.mac)) {
            add_remote(host, vxlan, e).await?;
            added.insert(e.mac);
        }
    }
    count.added = added.len();
    for ip in neigh.keys().filter(|ip| !want_neigh.contains_key(*ip)) {
        host.neigh_del(vxlan, *ip).await?;
    }
    // A re-pointed MAC was replaced by the add above; what is left is stale. An entry without
    // a destination was not made by hns (it never adds one) and is left alone.
    for (mac, remote) in fdb.iter().filter(|f| !want_fdb.contains(*f)) {
        if let Some(vtep) = remote {
            host.fdb_del(vxlan, *mac, *vtep).await?;
        }
        if !desired.iter().any(|e| e.mac == *mac) {
            count.removed += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hns_api::NetworkType;

    fn plan(outbound_nat: bool) -> NetworkPlan {
        NetworkPlan {
            id: "n".into(),
            kind: NetworkType::Overlay,
            bridge: "hns-00000001".into(),
            bridge_mac: [0, 0x15, 0x5d, 0, 0, 1],
            subnets: vec![("10.1.0.0/24".parse().unwrap(), "10.1.0.1".parse().unwrap())],
            internal: false,
            uplink: None,
            overlay: Some(OverlayPlan { vxlan: "hnx00000001".into(), vni: 4096, port: 4789, local: None, mtu: 1450, outbound_nat }),
            bridge_index: Default::default(),
        }
    }

    #[test]
    fn an_overlay_is_isolated_unless_outbound_nat_is_on() {
        let r = nft_rules(&plan(false));
        assert!(r.internal && !r.masquerade && r.inbound_closed);
        let r = nft_rules(&plan(true));
        assert!(!r.internal && r.masquerade && r.inbound_closed);
    }

    #[test]
    fn the_driver_keeps_its_bridge_and_vxlan_device_and_routes_out_only_with_outbound_nat() {
        assert_eq!(crate::network_links(&plan(false)), vec!["hns-00000001", "hnx00000001"]);
        assert!(!crate::routes_out(&plan(false)) && crate::routes_out(&plan(true)));
        let nat = NetworkPlan { kind: NetworkType::Nat, overlay: None, ..plan(false) };
        assert_eq!(crate::network_links(&nat), vec!["hns-00000001"]);
        assert!(crate::routes_out(&nat));
        let l2bridge = NetworkPlan { kind: NetworkType::L2Bridge, ..nat.clone() };
        assert!(crate::network_links(&l2bridge).is_empty());
        assert!(crate::veth_on_bridge(NetworkType::Overlay) && crate::veth_on_bridge(NetworkType::Nat) && !crate::veth_on_bridge(NetworkType::L2Bridge));
    }
}
