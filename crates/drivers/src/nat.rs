//! The `nat` driver (Windows' NAT network on an internal vSwitch).
//!
//! - network: a bridge with no uplink, the gateway address on it (the host's "management
//!   vNIC"); forwarding on; masquerade of its subnets and isolation from other networks in the
//!   hns nft table;
//! - endpoint: a veth whose container end is created directly inside the compartment, with
//!   its MAC, its address, a default route via the gateway, and loopback up.
//!
//! An endpoint's host end, a bridge port, has no IPv6 of its own on any network (see
//! [`hns_kernel::sysctl::disable_ipv6`] for why); on IPv4-only networks IPv6 autoconfiguration
//! is turned off on the bridge and the container end before they carry traffic (see
//! [`Netlink::disable_ipv6_autoconf`]).

use std::sync::atomic::Ordering;

use hns_kernel::netlink::Netlink;
use hns_kernel::nft::NetworkRules;
use hns_kernel::sysctl;
use hns_kernel::timing::mark;

use crate::{Compartment, EndpointPlan, Inside, NetworkPlan, Result};

pub async fn create_network(host: &Netlink, net: &NetworkPlan) -> Result<()> {
    let ipv6 = net.has_ipv6();
    sysctl::ensure("net.ipv4.ip_forward", "1")?;
    if ipv6 {
        sysctl::ensure("net.ipv6.conf.all.forwarding", "1")?;
    }
    let index = host.ensure_bridge(&net.bridge, net.bridge_mac, ipv6).await?;
    // Port mappings reached through 127.0.0.1 leave through the bridge with a loopback source
    // until masquerade rewrites it; the kernel routes such packets only with route_localnet.
    // The hns table drops 127/8 arriving from any other interface, so outsiders cannot use it.
    sysctl::ensure(&format!("net.ipv4.conf.{}.route_localnet", net.bridge), "1")?;
    for (subnet, gateway) in &net.subnets {
        host.ensure_address(&net.bridge, index, *gateway, subnet.prefix_len()).await?;
    }
    net.bridge_index.store(index, Ordering::Relaxed);
    Ok(())
}

pub async fn delete_network(host: &Netlink, net: &NetworkPlan) -> Result<()> {
    host.delete_link(&net.bridge).await
}

pub async fn attach(host: &Netlink, net: &NetworkPlan, ep: &EndpointPlan, c: &Compartment) -> Result<()> {
    let ipv6 = net.has_ipv6();
    let cached = net.bridge_index.load(Ordering::Relaxed);
    let bridge = if cached != 0 { cached } else { bridge_index(host, net).await? };
    mark("kernel: bridge lookup");
    let index = match host.create_veth_into(&ep.host_if, Some(bridge), &ep.ifname, &c.fd, ep.mac, None).await {
        // The bridge may have been deleted (and re-created: a new index) since its index was
        // cached: the kernel refuses the master; look it up (or create it) once and retry.
        Err(e) if cached != 0 => match bridge_index(host, net).await? {
            fresh if fresh != cached => host.create_veth_into(&ep.host_if, Some(fresh), &ep.ifname, &c.fd, ep.mac, None).await?,
            _ => return Err(e),
        },
        done => done?,
    };
    mark("kernel: veth create+enslave");
    // Before the container end brings the carrier: see `Netlink::disable_ipv6`. The host end
    // is up since its creation (`create_veth_into`).
    host.disable_ipv6(&ep.host_if)?;
    mark("kernel: host end ipv6 off");
    crate::configure_inside(ep, c, Inside { index, no_ipv6_autoconf: !ipv6 }).await
}

/// The bridge's index, looked up by name (the network created first if its bridge is
/// missing), and cached in the plan.
async fn bridge_index(host: &Netlink, net: &NetworkPlan) -> Result<u32> {
    match host.link_by_name(&net.bridge).await? {
        Some(l) => net.bridge_index.store(l.index, Ordering::Relaxed),
        None => create_network(host, net).await?,
    }
    Ok(net.bridge_index.load(Ordering::Relaxed))
}

/// Takes the endpoint's veth out of service (both ends down and renamed, so the compartment's
/// `ethN` and the host name are free at once) and returns the host end's new name, to be
/// deleted in the background: deleting one end deletes the pair, wherever the other end is.
pub async fn detach(host: &Netlink, host_if: &str, inside: Option<(&Compartment, &str)>) -> Result<Option<String>> {
    let retired = hns_kernel::names::retired_name();
    if let Some((c, ifname)) = inside {
        // Best effort: the compartment may already be gone. The container stops seeing the
        // interface's addresses now, not when the reaper deletes the pair.
        if let Ok(Some(index)) = c.netlink.retire(ifname, &retired).await {
            mark("kernel: retire inside end");
            let _ = c.netlink.clear_addresses(&retired, index).await;
            mark("kernel: clear addresses");
        }
    }
    let retired = host.retire(host_if, &retired).await?.map(|_| retired);
    mark("kernel: retire host end");
    Ok(retired)
}

pub fn nft_rules(net: &NetworkPlan) -> NetworkRules {
    NetworkRules {
        bridge: net.bridge.clone(),
        subnets: net.subnets.iter().map(|(s, _)| *s).collect(),
        masquerade: true,
        internal: net.internal,
        inbound_closed: true,
        dns_listeners: vec![],
    }
}
