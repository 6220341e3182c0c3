//! Network drivers. A driver turns a network or endpoint plan (already validated, already
//! committed to the store) into kernel steps, and describes its share of the nft table.
//! Drivers are small because the kernel layer does the work; every step is idempotent so the
//! reconciler can re-run it.
//!
//! Dispatch is a plain `match` on the network type: one module per driver.

use std::net::IpAddr;
use std::os::fd::OwnedFd;

use hns_api::NetworkType;
use hns_kernel::KernelError;
use hns_kernel::netlink::Netlink;
use hns_kernel::nft::NetworkRules;
use ipnet::IpNet;

pub mod nat;

/// What the kernel needs to know about a network.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    pub id: String,
    pub kind: NetworkType,
    /// The bridge (nat) the endpoints attach to.
    pub bridge: String,
    pub bridge_mac: [u8; 6],
    /// Each subnet with its gateway.
    pub subnets: Vec<(IpNet, IpAddr)>,
    pub internal: bool,
}

impl NetworkPlan {
    pub fn has_ipv6(&self) -> bool {
        self.subnets.iter().any(|(s, _)| matches!(s, IpNet::V6(_)))
    }
}

/// What the kernel needs to know about an endpoint being attached.
#[derive(Debug, Clone)]
pub struct EndpointPlan {
    pub id: String,
    /// Host end of the veth.
    pub host_if: String,
    /// Interface name inside the compartment (`eth0`...).
    pub ifname: String,
    pub mac: [u8; 6],
    /// Addresses with their prefix length.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Default gateways, one per family at most.
    pub gateways: Vec<IpAddr>,
    /// Extra routes inside the compartment.
    pub routes: Vec<(IpNet, Option<IpAddr>)>,
}

/// A compartment as the drivers see it: its namespace fd and a netlink connection inside it.
pub struct Compartment {
    pub fd: OwnedFd,
    pub netlink: Netlink,
}

pub type Result<T> = std::result::Result<T, KernelError>;

/// The network types that have a driver in this build.
pub fn implemented(kind: NetworkType) -> bool {
    matches!(kind, NetworkType::Nat)
}

pub async fn create_network(host: &Netlink, net: &NetworkPlan) -> Result<()> {
    match net.kind {
        NetworkType::Nat => nat::create_network(host, net).await,
        other => Err(KernelError::new("create network", &net.id, format!("no driver for {other}"))),
    }
}

pub async fn delete_network(host: &Netlink, net: &NetworkPlan) -> Result<()> {
    match net.kind {
        NetworkType::Nat => nat::delete_network(host, net).await,
        _ => Ok(()),
    }
}

pub async fn attach(host: &Netlink, net: &NetworkPlan, ep: &EndpointPlan, c: &Compartment) -> Result<()> {
    match net.kind {
        NetworkType::Nat => nat::attach(host, net, ep, c).await,
        other => Err(KernelError::new("attach endpoint", &ep.id, format!("no driver for {other}"))),
    }
}

/// Detaches an endpoint; returns a link the caller must delete later (see [`nat::detach`]).
pub async fn detach(host: &Netlink, net: &NetworkPlan, ep_host_if: &str, inside: Option<(&Compartment, &str)>) -> Result<Option<String>> {
    match net.kind {
        NetworkType::Nat => nat::detach(host, ep_host_if, inside).await,
        _ => Ok(None),
    }
}

/// Gives the compartment a default route via this endpoint's gateways where it has none (the
/// first endpoint wins; after a detach the next one takes over).
pub async fn ensure_gateways(ep: &EndpointPlan, c: &Compartment) -> Result<()> {
    if ep.gateways.is_empty() {
        return Ok(());
    }
    let Some(link) = c.netlink.link_by_name(&ep.ifname).await? else { return Ok(()) };
    for gw in &ep.gateways {
        c.netlink.add_default_route_if_absent(*gw, link.index).await?;
    }
    Ok(())
}

/// The network's share of the nft table.
pub fn nft_rules(net: &NetworkPlan) -> NetworkRules {
    match net.kind {
        NetworkType::Nat => nat::nft_rules(net),
        _ => NetworkRules { bridge: net.bridge.clone(), subnets: vec![], masquerade: false, internal: net.internal, inbound_closed: false, dns_listeners: vec![] },
    }
}
