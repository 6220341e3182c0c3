//! Network drivers. A driver turns a network or endpoint plan (already validated, already
//! committed to the store) into kernel steps, and describes its share of the nft table.
//! Drivers are small because the kernel layer does the work; every step is idempotent so the
//! reconciler can re-run it.
//!
//! Dispatch is a plain `match` on the network type: one module per driver.

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use hns_api::NetworkType;
use hns_kernel::KernelError;
use hns_kernel::netlink::Netlink;
use hns_kernel::nft::NetworkRules;
use hns_kernel::uplink::UplinkPlan;
use ipnet::IpNet;

pub mod l2bridge;
pub mod l2tunnel;
pub mod nat;
pub mod overlay;
pub mod transparent;

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
    /// External networks: the links between the host's adapter(s) and the endpoints.
    pub uplink: Option<UplinkPlan>,
    /// Overlay networks: the VXLAN side.
    pub overlay: Option<overlay::OverlayPlan>,
    /// The bridge's (nat) ifindex once known, 0 before: shared by the plan's clones, so an
    /// attach running without the engine lock learns it for the next ones (a lookup by name
    /// on every attach cost 0.2 ms at 5 000 endpoints). See [`nat::attach`].
    pub bridge_index: Arc<AtomicU32>,
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
    /// Its loopback was brought up through this handle (at the compartment's creation or by an
    /// attach): later attaches skip that step.
    pub loopback_up: std::sync::atomic::AtomicBool,
}

pub type Result<T> = std::result::Result<T, KernelError>;

/// The network types that have a driver in this build.
pub fn implemented(kind: NetworkType) -> bool {
    matches!(kind, NetworkType::Nat | NetworkType::Transparent | NetworkType::L2Bridge | NetworkType::L2Tunnel | NetworkType::Overlay)
}

/// Networks bound to a host adapter (Windows' "external vSwitch").
pub fn is_external(kind: NetworkType) -> bool {
    matches!(kind, NetworkType::Transparent | NetworkType::L2Bridge | NetworkType::L2Tunnel)
}

/// The host-side link named after the network (`plan.bridge`) that the driver keeps: nat's
/// bridge, transparent's host leg, overlay's bridge; l2bridge and l2tunnel have none.
pub fn has_network_link(kind: NetworkType) -> bool {
    matches!(kind, NetworkType::Nat | NetworkType::Transparent | NetworkType::Overlay)
}

/// Endpoints of this kind have a host end named `host_if` (a veth).
pub fn has_host_veth(kind: NetworkType) -> bool {
    matches!(kind, NetworkType::Nat | NetworkType::L2Bridge | NetworkType::Overlay)
}

/// Endpoints of this kind have their host veth enslaved to the network's bridge
/// (`plan.bridge`): nat's and overlay's (l2bridge's hangs off the uplink instead).
pub fn veth_on_bridge(kind: NetworkType) -> bool {
    matches!(kind, NetworkType::Nat | NetworkType::Overlay)
}

/// The host links the driver keeps for a network (the reconciler removes hns links that no
/// network or endpoint wants): its link named after it ([`has_network_link`]) and overlay's
/// VXLAN device. Uplink links are the caller's (`plan.uplink`).
pub fn network_links(net: &NetworkPlan) -> Vec<&str> {
    let own = has_network_link(net.kind).then_some(net.bridge.as_str());
    own.into_iter().chain(net.overlay.as_ref().map(|o| o.vxlan.as_str())).collect()
}

/// Whether endpoints of the network get a default route through its gateway: not on an
/// overlay network without outbound NAT, whose traffic never leaves the segment (a
/// container reaches the outside through a second endpoint on a nat network, which then
/// owns the default route).
pub fn routes_out(net: &NetworkPlan) -> bool {
    net.overlay.as_ref().is_none_or(|o| o.outbound_nat)
}

pub async fn create_network(host: &Netlink, net: &NetworkPlan) -> Result<()> {
    match net.kind {
        NetworkType::Nat => nat::create_network(host, net).await,
        NetworkType::Transparent => transparent::create_network(host, net).await,
        NetworkType::L2Bridge => l2bridge::create_network(host, net).await,
        NetworkType::L2Tunnel => l2tunnel::create_network(host, net).await,
        NetworkType::Overlay => overlay::create_network(host, net).await.map(|_| ()),
        other => Err(KernelError::new("create network", &net.id, format!("no driver for {other}"))),
    }
}

pub async fn delete_network(host: &Netlink, net: &NetworkPlan) -> Result<()> {
    match net.kind {
        NetworkType::Nat | NetworkType::Transparent => host.delete_link(&net.bridge).await?,
        NetworkType::Overlay => overlay::delete_network(host, net).await?,
        _ => {}
    }
    // The VLAN or bond links hns made for the uplink go with the network (never an adapter).
    if let Some(u) = &net.uplink {
        for step in u.steps.iter().rev() {
            let (hns_kernel::uplink::UplinkStep::Bond { name, .. } | hns_kernel::uplink::UplinkStep::Vlan { name, .. }) = step;
            host.delete_link(name).await?;
        }
    }
    Ok(())
}

pub async fn attach(host: &Netlink, net: &NetworkPlan, ep: &EndpointPlan, c: &Compartment) -> Result<()> {
    match net.kind {
        NetworkType::Nat => nat::attach(host, net, ep, c).await,
        NetworkType::Transparent => transparent::attach(host, net, ep, c).await,
        NetworkType::L2Bridge => l2bridge::attach(host, net, ep, c).await,
        NetworkType::L2Tunnel => l2tunnel::attach(host, net, ep, c).await,
        NetworkType::Overlay => overlay::attach(host, net, ep, c).await,
        other => Err(KernelError::new("attach endpoint", &ep.id, format!("no driver for {other}"))),
    }
}

/// Detaches an endpoint; returns a link the caller must delete later (see [`nat::detach`]).
pub async fn detach(host: &Netlink, net: &NetworkPlan, ep: &EndpointPlan, inside: Option<&Compartment>) -> Result<Option<String>> {
    match net.kind {
        NetworkType::Nat => nat::detach(host, &ep.host_if, inside.map(|c| (c, ep.ifname.as_str()))).await,
        NetworkType::Overlay => overlay::detach(host, ep, inside).await,
        NetworkType::L2Bridge => l2bridge::detach(host, net, ep, inside).await,
        NetworkType::Transparent | NetworkType::L2Tunnel => {
            transparent::detach(host, ep, inside).await?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// The container end of an endpoint, as its attach has just made it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Inside {
    /// Its index in the compartment, when the kernel gave it at creation
    /// (`Netlink::create_veth_into`); looked up otherwise.
    pub index: Option<u32>,
    /// IPv6 address generation goes off before it comes up (`Netlink::disable_ipv6_autoconf`;
    /// not in the same request: the kernel makes the link-local address as the link comes up,
    /// before it reads the request's other attributes).
    pub no_ipv6_autoconf: bool,
}

/// The compartment side of every driver: link up, addresses, routes, loopback, gateways.
pub(crate) async fn configure_inside(ep: &EndpointPlan, c: &Compartment, inside: Inside) -> Result<()> {
    use hns_kernel::timing::mark;
    let nl = &c.netlink;
    let index = match inside.index {
        Some(i) => i,
        None => {
            let found = nl.link_by_name(&ep.ifname).await?.map(|l| l.index);
            mark("kernel: inside lookup");
            found.ok_or_else(|| KernelError::new("configure", &ep.ifname, "interface missing in the compartment right after creation"))?
        }
    };
    if inside.no_ipv6_autoconf {
        nl.disable_ipv6_autoconf(&ep.ifname).await?;
        mark("kernel: inside ipv6 autoconf off");
    }
    nl.set_up(&ep.ifname).await?;
    mark("kernel: inside up");
    if !c.loopback_up.load(std::sync::atomic::Ordering::Relaxed) {
        nl.set_up("lo").await?;
        c.loopback_up.store(true, std::sync::atomic::Ordering::Relaxed);
        mark("kernel: lo up");
    }
    for (ip, plen) in &ep.addresses {
        nl.add_address(&ep.ifname, index, *ip, *plen).await?;
    }
    mark("kernel: addresses");
    for (dest, via) in &ep.routes {
        nl.add_route(*dest, *via, index).await?;
    }
    let r = gateways_via(ep, c, index).await.map(|_| ());
    mark("kernel: routes+gateway");
    r
}

/// Gives the compartment a default route via this endpoint's gateways where it has none (the
/// first endpoint wins; after a detach the next one takes over, and the reconciler puts back
/// one someone deleted). Returns the gateways it added a default route through.
pub async fn ensure_gateways(ep: &EndpointPlan, c: &Compartment) -> Result<Vec<IpAddr>> {
    if ep.gateways.is_empty() {
        return Ok(Vec::new());
    }
    match c.netlink.link_by_name(&ep.ifname).await? {
        Some(link) => gateways_via(ep, c, link.index).await,
        None => Ok(Vec::new()),
    }
}

/// [`ensure_gateways`] once the interface's index is known (an attach has just looked it up).
async fn gateways_via(ep: &EndpointPlan, c: &Compartment, index: u32) -> Result<Vec<IpAddr>> {
    let mut added = Vec::new();
    for gw in &ep.gateways {
        if c.netlink.add_default_route_if_absent(*gw, index).await? {
            added.push(*gw);
        }
    }
    Ok(added)
}

/// The network's share of the nft table; external networks have none (their containers sit
/// on the LAN, unfiltered and unNATed, as on Windows).
pub fn nft_rules(net: &NetworkPlan) -> Option<NetworkRules> {
    match net.kind {
        NetworkType::Nat => Some(nat::nft_rules(net)),
        NetworkType::Overlay => Some(overlay::nft_rules(net)),
        _ => None,
    }
}

/// The uplink link of an external network, looked up in the host namespace.
pub(crate) async fn uplink_index(host: &Netlink, net: &NetworkPlan) -> Result<u32> {
    let plan = net.uplink.as_ref().ok_or_else(|| KernelError::new("find uplink of", &net.id, "the network has no adapter"))?;
    match host.link_by_name(&plan.link).await? {
        Some(l) => Ok(l.index),
        None => host.ensure_uplink(plan).await,
    }
}
