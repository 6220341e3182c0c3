//! Kernel steps of the external-switch drivers (transparent, l2bridge, l2tunnel): macvlan
//! children of the host's uplink, proxy-ARP entries, host routes to single containers, and the
//! VLAN and bond links a network's uplink may need.
//!
//! [`UplinkPlan`] is the pure part: which links a network's uplink needs (a bond of several
//! adapters, a VLAN sub-interface) and their names; the driver asks the kernel for features
//! first ([`probe`]) and refuses a plan the kernel cannot carry.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

use netlink_packet_route::link::MacVlanMode;
use netlink_packet_route::neighbour::NeighbourFlags;
use netlink_packet_route::route::RouteScope;
use rtnetlink::{LinkBond, LinkMacVlan, LinkUnspec, LinkVlan, RouteMessageBuilder};

use crate::error::{KernelError, Result};
use crate::netlink::{Netlink, nl_err};

/// How a macvlan child shares its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildMode {
    /// Children reach each other inside the host (transparent).
    Bridge,
    /// Every frame goes out to the upstream switch, even to a sibling (l2tunnel).
    Vepa,
}

/// One link the uplink of a network needs, in creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkStep {
    /// A bond of several adapters (Windows' switch-embedded teaming), in active-backup mode:
    /// the one mode that needs nothing from the upstream switch.
    Bond { name: String, members: Vec<String> },
    /// An 802.1Q sub-interface of `parent` tagged `id`.
    Vlan { name: String, parent: String, id: u16 },
}

/// The links between the adapters a network names and the link its endpoints hang off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkPlan {
    pub steps: Vec<UplinkStep>,
    /// The link endpoints attach to (an adapter, the bond, or the VLAN sub-interface).
    pub link: String,
}

/// Plans the uplink of a network: `adapters` (one, or several for teaming) and an optional
/// VLAN. `tag` (short, unique per network) names the links hns creates, so garbage collection
/// recognises them by prefix.
pub fn plan_uplink(adapters: &[String], vlan: Option<u16>, tag: &str) -> UplinkPlan {
    let mut steps = Vec::new();
    let mut link = adapters.first().cloned().unwrap_or_default();
    if adapters.len() > 1 {
        link = format!("{}{tag}", crate::names::BOND_PREFIX);
        steps.push(UplinkStep::Bond { name: link.clone(), members: adapters.to_vec() });
    }
    if let Some(id) = vlan {
        let name = format!("{}{tag}", crate::names::VLAN_PREFIX);
        steps.push(UplinkStep::Vlan { name: name.clone(), parent: link, id });
        link = name;
    }
    UplinkPlan { steps, link }
}

/// Kernel features the external drivers may need, with the name a user can search for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// 802.1Q VLAN sub-interfaces (module 8021q, CONFIG_VLAN_8021Q).
    Vlan,
    /// Bonding (module bonding, CONFIG_BONDING).
    Bond,
    /// macvlan (module macvlan, CONFIG_MACVLAN).
    Macvlan,
}

impl Feature {
    pub fn kernel_name(self) -> &'static str {
        match self {
            Feature::Vlan => "802.1Q VLAN support (8021q, CONFIG_VLAN_8021Q)",
            Feature::Bond => "bonding (CONFIG_BONDING)",
            Feature::Macvlan => "macvlan (CONFIG_MACVLAN)",
        }
    }
}

/// Does this kernel have `feature`? Checked by creating the link kind in a scratch network
/// namespace (the only reliable test: a module may be built in, loadable, or absent, and
/// /proc/config.gz is often missing). Costs a few ms; callers cache the answer.
pub fn probe(feature: Feature) -> bool {
    let script = match feature {
        // A veth as the parent: some kernels have no dummy links.
        Feature::Vlan => "ip link add p0 type veth peer name p1 && ip link add link p0 name v0 type vlan id 5",
        Feature::Bond => "ip link add b0 type bond",
        Feature::Macvlan => "ip link add p0 type veth peer name p1 && ip link add link p0 name m0 type macvlan mode bridge",
    };
    std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netlink {
    /// Creates a macvlan child of `parent` directly inside the namespace `ns`, with `mac`, left
    /// down. The parent is looked up in this connection's namespace.
    pub async fn create_macvlan_into(&self, name: &str, parent: u32, mode: ChildMode, ns: &impl AsFd, mac: [u8; 6]) -> Result<()> {
        let mode = match mode {
            ChildMode::Bridge => MacVlanMode::Bridge,
            ChildMode::Vepa => MacVlanMode::Vepa,
        };
        let msg = LinkMacVlan::new(name, parent, mode).setns_by_fd(ns.as_fd().as_raw_fd()).address(mac.to_vec()).build();
        self.handle.link().add(msg).execute().await.map_err(|e| nl_err("create macvlan", name, e))
    }

    /// Creates a macvlan child of `parent` here (the host's own leg on a transparent network,
    /// through which it reaches the network's containers), or leaves an existing one.
    pub async fn ensure_macvlan(&self, name: &str, parent: u32, mode: ChildMode, mac: [u8; 6]) -> Result<u32> {
        if let Some(l) = self.link_by_name(name).await? {
            l.check_ours("create macvlan")?;
            return Ok(l.index);
        }
        let mode = match mode {
            ChildMode::Bridge => MacVlanMode::Bridge,
            ChildMode::Vepa => MacVlanMode::Vepa,
        };
        let msg = LinkMacVlan::new(name, parent, mode).address(mac.to_vec()).link_group(crate::names::HNS_GROUP).build();
        self.handle.link().add(msg).execute().await.map_err(|e| nl_err("create macvlan", name, e))?;
        self.disable_ipv6_autoconf(name).await?;
        self.set_up(name).await?;
        self.link_by_name(name).await?.map(|l| l.index).ok_or_else(|| KernelError::new("create macvlan", name, "missing right after creation"))
    }

    /// Creates the links of an uplink plan that do not exist yet, and brings them up.
    pub async fn ensure_uplink(&self, plan: &UplinkPlan) -> Result<u32> {
        for step in &plan.steps {
            match step {
                UplinkStep::Bond { name, members } => {
                    if let Some(l) = self.link_by_name(name).await? {
                        l.check_ours("create bond")?;
                    } else {
                        let msg = LinkBond::new(name).mode(netlink_packet_route::link::BondMode::ActiveBackup).link_group(crate::names::HNS_GROUP).build();
                        self.handle.link().add(msg).execute().await.map_err(|e| nl_err("create bond", name, e))?;
                    }
                    let bond = self.link_by_name(name).await?.ok_or_else(|| KernelError::new("create bond", name, "missing after creation"))?;
                    for m in members {
                        let l = self.link_by_name(m).await?.ok_or_else(|| KernelError::new("enslave", m, "no such adapter"))?;
                        if l.master != Some(bond.index) {
                            let down = LinkUnspec::new_with_name(m).down().build();
                            self.handle.link().set(down).execute().await.map_err(|e| nl_err("take down", m, e))?;
                            self.set_master(m, bond.index).await?;
                        }
                    }
                    self.set_up(name).await?;
                }
                UplinkStep::Vlan { name, parent, id } => {
                    if let Some(l) = self.link_by_name(name).await? {
                        l.check_ours("create VLAN link")?;
                    } else {
                        let p = self.link_by_name(parent).await?.ok_or_else(|| KernelError::new("create VLAN link on", parent, "no such link"))?;
                        let msg = LinkVlan::new(name, p.index, *id).link_group(crate::names::HNS_GROUP).build();
                        self.handle.link().add(msg).execute().await.map_err(|e| nl_err("create VLAN link", name, e))?;
                    }
                    self.set_up(name).await?;
                }
            }
        }
        self.link_by_name(&plan.link).await?.map(|l| l.index).ok_or_else(|| KernelError::new("find uplink", &plan.link, "no such network adapter"))
    }

    /// The link of the IPv4 default route (the host's uplink), if any.
    pub async fn default_route_link(&self) -> Result<Option<String>> {
        use futures::TryStreamExt;
        use netlink_packet_route::route::RouteAttribute;
        // With strict dump checking the kernel filters by every header field set: ask for any
        // protocol and type (the builder's defaults would keep only "static" routes).
        let mut filter = RouteMessageBuilder::<std::net::Ipv4Addr>::new().build();
        filter.header.protocol = netlink_packet_route::route::RouteProtocol::Unspec;
        filter.header.kind = netlink_packet_route::route::RouteType::Unspec;
        let oif = {
            let _one_dump = self.dumps.lock().await;
            let mut routes = self.handle.route().get(filter).execute();
            let mut found = None;
            while let Some(m) = routes.try_next().await.map_err(|e| nl_err("list routes", "", e))? {
                if m.header.destination_prefix_length != 0 || m.header.table != 254 {
                    continue;
                }
                // The dump is read to its end (another dump on this socket waits for it).
                if found.is_none() {
                    found = m.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None });
                }
            }
            found
        };
        match oif {
            Some(oif) => Ok(self.links().await?.into_iter().find(|l| l.index == oif).map(|l| l.name)),
            None => Ok(None),
        }
    }

    /// A route to one address out of `oif` (on-link), replacing any previous one; `src` is the
    /// source the host uses towards it (the link may have no address of its own).
    pub async fn add_host_route(&self, ip: IpAddr, oif: u32, src: Option<IpAddr>) -> Result<()> {
        use netlink_packet_route::route::{RouteAddress, RouteAttribute};
        let plen = if ip.is_ipv4() { 32 } else { 128 };
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(ip, plen)
            .map_err(|e| KernelError::new("build route", ip.to_string(), e))?
            .output_interface(oif)
            .scope(RouteScope::Link);
        match src {
            Some(IpAddr::V4(a)) if ip.is_ipv4() => b.get_mut().attributes.push(RouteAttribute::PrefSource(RouteAddress::Inet(a))),
            Some(IpAddr::V6(a)) if ip.is_ipv6() => b.get_mut().attributes.push(RouteAttribute::PrefSource(RouteAddress::Inet6(a))),
            _ => {}
        }
        self.handle.route().add(b.build()).replace().execute().await.map_err(|e| nl_err("add route", &format!("{ip}/{plen}"), e))
    }

    /// Every address of this namespace with the index of its link.
    pub async fn addresses(&self) -> Result<Vec<(u32, IpAddr)>> {
        use futures::TryStreamExt;
        use netlink_packet_route::address::AddressAttribute;
        let mut out = Vec::new();
        let _one_dump = self.dumps.lock().await;
        let mut addrs = self.handle.address().get().execute();
        while let Some(m) = addrs.try_next().await.map_err(|e| nl_err("list addresses", "", e))? {
            for a in &m.attributes {
                if let AddressAttribute::Address(ip) = a {
                    out.push((m.header.index, *ip));
                }
            }
        }
        Ok(out)
    }

    /// The first IPv4 address of a link, if it has one.
    pub async fn ipv4_of(&self, index: u32) -> Result<Option<IpAddr>> {
        use futures::TryStreamExt;
        use netlink_packet_route::address::AddressAttribute;
        let _one_dump = self.dumps.lock().await;
        let mut addrs = self.handle.address().get().set_link_index_filter(index).execute();
        // Read to the end: a dump left half-read keeps the socket busy for the next one.
        let mut found = None;
        while let Some(m) = addrs.try_next().await.map_err(|e| nl_err("list addresses", "", e))? {
            for a in &m.attributes {
                if let AddressAttribute::Address(ip @ IpAddr::V4(_)) = a {
                    found = found.or(Some(*ip));
                }
            }
        }
        Ok(found)
    }

    /// Removes the route to one address; a missing route is fine.
    pub async fn del_host_route(&self, ip: IpAddr) -> Result<()> {
        let plen = if ip.is_ipv4() { 32 } else { 128 };
        // Scope "nowhere" and protocol unspec are the kernel's wildcards for a delete; the
        // builder's defaults (universe, static) would match no on-link route.
        let mut msg = RouteMessageBuilder::<IpAddr>::new().destination_prefix(ip, plen).map_err(|e| KernelError::new("build route", ip.to_string(), e))?.build();
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = netlink_packet_route::route::RouteProtocol::Unspec;
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_err("delete route", &format!("{ip}/{plen}"), e);
                if e.is_not_found() || e.errno == Some(libc::ESRCH) { Ok(()) } else { Err(e) }
            }
        }
    }

    /// Makes this host answer ARP for `ip` on the link `index` (a proxy entry): the LAN then
    /// sends frames for a container to the host's MAC, and the host routes them on.
    pub async fn add_proxy_neighbour(&self, index: u32, ip: IpAddr) -> Result<()> {
        self.handle
            .neighbours()
            .add(index, ip)
            .flags(NeighbourFlags::Proxy)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err("add proxy neighbour", &ip.to_string(), e))
    }

    pub async fn del_proxy_neighbour(&self, index: u32, ip: IpAddr) -> Result<()> {
        let mut req = self.handle.neighbours().add(index, ip).flags(NeighbourFlags::Proxy);
        let msg = req.message_mut().clone();
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_err("delete proxy neighbour", &ip.to_string(), e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_adapter_needs_no_links() {
        let p = plan_uplink(&["eth1".into()], None, "1a2b3c4d");
        assert_eq!(p, UplinkPlan { steps: vec![], link: "eth1".into() });
    }

    #[test]
    fn a_vlan_is_a_sub_interface_of_the_adapter() {
        let p = plan_uplink(&["eth1".into()], Some(42), "1a2b3c4d");
        assert_eq!(p.steps, vec![UplinkStep::Vlan { name: "hnq1a2b3c4d".into(), parent: "eth1".into(), id: 42 }]);
        assert_eq!(p.link, "hnq1a2b3c4d");
    }

    #[test]
    fn teaming_bonds_the_adapters_and_a_vlan_sits_on_the_bond() {
        let p = plan_uplink(&["eth1".into(), "eth2".into()], Some(7), "1a2b3c4d");
        assert_eq!(
            p.steps,
            vec![
                UplinkStep::Bond { name: "hnb1a2b3c4d".into(), members: vec!["eth1".into(), "eth2".into()] },
                UplinkStep::Vlan { name: "hnq1a2b3c4d".into(), parent: "hnb1a2b3c4d".into(), id: 7 },
            ]
        );
        assert_eq!(p.link, "hnq1a2b3c4d");
        assert!(crate::names::has_hns_name(&p.link));
    }
}
