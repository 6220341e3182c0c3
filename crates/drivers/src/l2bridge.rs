//! The `l2bridge` driver: containers take addresses of the host's LAN, but on the wire every
//! frame carries the host's MAC (Windows' MAC rewrite on egress and ingress).
//!
//! Done by routing with proxy ARP rather than by rewriting frames:
//! - endpoint: a veth (no bridge) whose host end answers every ARP request from the container
//!   (`proxy_arp`), so the container hands all its traffic to the host; a host route to the
//!   container's address through that veth; and a proxy-ARP entry for the address on the
//!   uplink, so the LAN resolves the container's address to the host's MAC.
//! - Frames leave with the uplink's MAC as source; frames for a container arrive at the host's
//!   MAC and are routed into the right veth. Addresses and ports are untouched; the host's
//!   forwarding costs one TTL hop. Containers of one host reach each other through the host.
//!
//! Proxy answers are sent at once (`proxy_delay` 0): by default the kernel delays them up to
//! 0.8 s, which would stall every first packet.

use hns_kernel::netlink::Netlink;
use hns_kernel::sysctl;

use crate::{Compartment, EndpointPlan, NetworkPlan, Result};

pub async fn create_network(host: &Netlink, net: &NetworkPlan) -> Result<()> {
    sysctl::ensure("net.ipv4.ip_forward", "1")?;
    let _ = crate::uplink_index(host, net).await?;
    let uplink = &net.uplink.as_ref().expect("checked by uplink_index").link;
    sysctl::ensure(&format!("net.ipv4.neigh.{uplink}.proxy_delay"), "0")?;
    Ok(())
}

pub async fn attach(host: &Netlink, net: &NetworkPlan, ep: &EndpointPlan, c: &Compartment) -> Result<()> {
    let uplink = crate::uplink_index(host, net).await?;
    host.create_veth_into(&ep.host_if, None, &ep.ifname, &c.fd, ep.mac, None).await?;
    host.disable_ipv6_autoconf(&ep.host_if).await?;
    c.netlink.disable_ipv6_autoconf(&ep.ifname).await?;
    sysctl::ensure(&format!("net.ipv4.conf.{}.proxy_arp", ep.host_if), "1")?;
    sysctl::ensure(&format!("net.ipv4.neigh.{}.proxy_delay", ep.host_if), "0")?;
    host.set_up(&ep.host_if).await?;
    let index = host.link_by_name(&ep.host_if).await?.map(|l| l.index).unwrap_or_default();
    let src = host.ipv4_of(uplink).await?;
    for (ip, _) in &ep.addresses {
        host.add_host_route(*ip, index, src).await?;
        host.add_proxy_neighbour(uplink, *ip).await?;
    }
    crate::configure_inside(ep, c).await
}

pub async fn detach(host: &Netlink, net: &NetworkPlan, ep: &EndpointPlan, inside: Option<&Compartment>) -> Result<Option<String>> {
    if let Ok(uplink) = crate::uplink_index(host, net).await {
        for (ip, _) in &ep.addresses {
            host.del_proxy_neighbour(uplink, *ip).await?;
        }
    }
    crate::nat::detach(host, &ep.host_if, inside.map(|c| (c, ep.ifname.as_str()))).await
}
