//! The `transparent` driver: containers on the physical LAN with their own MAC and address.
//!
//! - network: the uplink (an adapter, or a bond/VLAN link of it) plus a host leg: a macvlan
//!   child of the uplink in the host namespace, named after the network. A macvlan parent never
//!   hears its own children, so without that leg the host could not reach its containers;
//! - endpoint: a macvlan child (bridge mode) of the uplink created straight inside the
//!   compartment with the endpoint's MAC, its address (static, or leased by hnsd's DHCP client)
//!   and a default route via the LAN's gateway; on the host, a route to the container's
//!   address through the host leg.
//!
//! IPv6: the container's interface keeps autoconfiguration on, so when the LAN sends router
//! advertisements it gets a SLAAC address and default route from them.
//!
//! The host leg answers ARP only for what the host routes through it (`arp_filter`), so the
//! LAN never sees a second MAC for the host's own address.

use hns_kernel::sysctl;
use hns_kernel::uplink::ChildMode;

use hns_kernel::netlink::Netlink;

use crate::{Compartment, EndpointPlan, NetworkPlan, Result};

pub async fn create_network(host: &Netlink, net: &NetworkPlan) -> Result<()> {
    let uplink = crate::uplink_index(host, net).await?;
    host.ensure_macvlan(&net.bridge, uplink, ChildMode::Bridge, net.bridge_mac).await?;
    sysctl::ensure(&format!("net.ipv4.conf.{}.arp_filter", net.bridge), "1")?;
    Ok(())
}

pub async fn attach(host: &Netlink, net: &NetworkPlan, ep: &EndpointPlan, c: &Compartment) -> Result<()> {
    let uplink = crate::uplink_index(host, net).await?;
    // IPv6 autoconfiguration stays on: a container on the LAN takes its IPv6 address from the
    // LAN's router advertisements (SLAAC), as a host there would.
    host.create_macvlan_into(&ep.ifname, uplink, ChildMode::Bridge, &c.fd, ep.mac).await?;
    crate::configure_inside(ep, c, crate::Inside::default()).await?;
    // The host's way to the container: through its leg, from its own LAN address.
    let leg = match host.link_by_name(&net.bridge).await? {
        Some(l) => l.index,
        None => host.ensure_macvlan(&net.bridge, uplink, ChildMode::Bridge, net.bridge_mac).await?,
    };
    let src = host.ipv4_of(uplink).await?;
    for (ip, _) in &ep.addresses {
        host.add_host_route(*ip, leg, src).await?;
    }
    Ok(())
}

/// Removes the container's macvlan (transparent and l2tunnel) and the host route to it.
pub async fn detach(host: &Netlink, ep: &EndpointPlan, inside: Option<&Compartment>) -> Result<()> {
    for (ip, _) in &ep.addresses {
        host.del_host_route(*ip).await?;
    }
    if let Some(c) = inside {
        // Best effort: the compartment may already be gone, and the link with it.
        let _ = c.netlink.delete_link(&ep.ifname).await;
    }
    Ok(())
}
