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
//!
//! IPv6 is the same design with neighbour discovery: a proxy-NDP entry per container address on
//! the uplink (`proxy_ndp`), a /128 host route into the veth. NDP has no "answer for everything"
//! switch like `proxy_arp`, so the container cannot be made to hand its on-link traffic to the
//! host by resolving every LAN address; instead its address is configured as a /128 (no on-link
//! prefix) with the subnet and the default route via the host end of the veth, which holds the
//! fixed link-local [`HOST_LINK_LOCAL`]. Same addresses on the wire, host's MAC, one hop.
//! Forwarding IPv6 turns off router-advertisement acceptance on interfaces with `accept_ra` 1, so
//! the uplink is set to 2 (accept even when forwarding): the host keeps its RA-learned routes.

use std::net::{IpAddr, Ipv6Addr};

use hns_kernel::netlink::Netlink;
use hns_kernel::sysctl;

use crate::{Compartment, EndpointPlan, NetworkPlan, Result};

/// The link-local address of every l2bridge veth's host end: the containers' IPv6 next hop.
pub const HOST_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

pub async fn create_network(host: &Netlink, net: &NetworkPlan) -> Result<()> {
    sysctl::ensure("net.ipv4.ip_forward", "1")?;
    let _ = crate::uplink_index(host, net).await?;
    let uplink = &net.uplink.as_ref().expect("checked by uplink_index").link;
    sysctl::ensure(&format!("net.ipv4.neigh.{uplink}.proxy_delay"), "0")?;
    if net.has_ipv6() {
        if sysctl::read(&format!("net.ipv6.conf.{uplink}.accept_ra")).ok().as_deref() == Some("1") {
            sysctl::ensure(&format!("net.ipv6.conf.{uplink}.accept_ra"), "2")?;
        }
        sysctl::ensure("net.ipv6.conf.all.forwarding", "1")?;
        sysctl::ensure(&format!("net.ipv6.conf.{uplink}.proxy_ndp"), "1")?;
        sysctl::ensure(&format!("net.ipv6.neigh.{uplink}.proxy_delay"), "0")?;
    }
    Ok(())
}

/// The compartment's view of an l2bridge endpoint: IPv4 as planned (proxy ARP on the host end
/// answers for every address), IPv6 addresses as /128 with the subnet and the default route via
/// the host end's link-local address (see the module doc).
fn inside_plan(net: &NetworkPlan, ep: &EndpointPlan) -> EndpointPlan {
    let mut inside = ep.clone();
    let next_hop = IpAddr::V6(HOST_LINK_LOCAL);
    inside.addresses = ep.addresses.iter().map(|&(ip, plen)| if ip.is_ipv6() { (ip, 128) } else { (ip, plen) }).collect();
    for (ip, _) in ep.addresses.iter().filter(|(ip, _)| ip.is_ipv6()) {
        if let Some((subnet, _)) = net.subnets.iter().find(|(s, _)| s.contains(ip)) {
            inside.routes.push((*subnet, Some(next_hop)));
        }
    }
    if ep.gateways.iter().any(IpAddr::is_ipv6) {
        inside.gateways.retain(IpAddr::is_ipv4);
        inside.gateways.push(next_hop);
    }
    inside
}

pub async fn attach(host: &Netlink, net: &NetworkPlan, ep: &EndpointPlan, c: &Compartment) -> Result<()> {
    let uplink = crate::uplink_index(host, net).await?;
    let inside_index = host.create_veth_into(&ep.host_if, None, &ep.ifname, &c.fd, ep.mac, None).await?;
    host.disable_ipv6_autoconf(&ep.host_if).await?;
    sysctl::ensure(&format!("net.ipv4.conf.{}.proxy_arp", ep.host_if), "1")?;
    sysctl::ensure(&format!("net.ipv4.neigh.{}.proxy_delay", ep.host_if), "0")?;
    let index = host.link_by_name(&ep.host_if).await?.map(|l| l.index).unwrap_or_default();
    let src = host.ipv4_of(uplink).await?;
    if ep.addresses.iter().any(|(ip, _)| ip.is_ipv6()) {
        host.add_address(&ep.host_if, index, IpAddr::V6(HOST_LINK_LOCAL), 64).await?;
    }
    for (ip, _) in &ep.addresses {
        host.add_host_route(*ip, index, if ip.is_ipv4() { src } else { None }).await?;
        host.add_proxy_neighbour(uplink, *ip).await?;
    }
    crate::configure_inside(&inside_plan(net, ep), c, crate::Inside { index: inside_index, no_ipv6_autoconf: true }).await
}

pub async fn detach(host: &Netlink, net: &NetworkPlan, ep: &EndpointPlan, inside: Option<&Compartment>) -> Result<Option<String>> {
    if let Ok(uplink) = crate::uplink_index(host, net).await {
        for (ip, _) in &ep.addresses {
            host.del_proxy_neighbour(uplink, *ip).await?;
        }
    }
    crate::nat::detach(host, &ep.host_if, inside.map(|c| (c, ep.ifname.as_str()))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetworkPlan {
        NetworkPlan {
            id: "n".into(),
            kind: hns_api::NetworkType::L2Bridge,
            bridge: String::new(),
            bridge_mac: [0; 6],
            subnets: vec![("10.77.2.0/24".parse().unwrap(), "10.77.2.1".parse().unwrap()), ("2001:db8:77:2::/64".parse().unwrap(), "2001:db8:77:2::1".parse().unwrap())],
            internal: false,
            uplink: None,
            overlay: None,
            bridge_index: Default::default(),
        }
    }

    fn ep(addresses: Vec<(IpAddr, u8)>, gateways: Vec<IpAddr>) -> EndpointPlan {
        EndpointPlan { id: "e".into(), host_if: "hnv0".into(), ifname: "eth0".into(), mac: [2, 0, 0, 0, 0, 1], addresses, gateways, routes: vec![] }
    }

    #[test]
    fn ipv6_inside_goes_through_the_host_end_and_ipv4_stays_as_planned() {
        let ep = ep(
            vec![("10.77.2.50".parse().unwrap(), 24), ("2001:db8:77:2::50".parse().unwrap(), 64)],
            vec!["10.77.2.1".parse().unwrap(), "2001:db8:77:2::1".parse().unwrap()],
        );
        let inside = inside_plan(&net(), &ep);
        assert_eq!(inside.addresses, vec![("10.77.2.50".parse().unwrap(), 24), ("2001:db8:77:2::50".parse().unwrap(), 128)]);
        assert_eq!(inside.gateways, vec!["10.77.2.1".parse::<IpAddr>().unwrap(), IpAddr::V6(HOST_LINK_LOCAL)]);
        assert_eq!(inside.routes, vec![("2001:db8:77:2::/64".parse().unwrap(), Some(IpAddr::V6(HOST_LINK_LOCAL)))]);
    }

    #[test]
    fn an_ipv4_only_endpoint_is_unchanged() {
        let ep = ep(vec![("10.77.2.50".parse().unwrap(), 24)], vec!["10.77.2.1".parse().unwrap()]);
        let inside = inside_plan(&net(), &ep);
        assert_eq!((inside.addresses, inside.gateways, inside.routes), (ep.addresses, ep.gateways, ep.routes));
    }
}
