//! VXLAN for overlay networks: one VXLAN device per network (VNI), enslaved to the network's
//! bridge, with every remote endpoint programmed from the cluster store instead of learned.
//!
//! How a frame reaches a container on another host:
//!
//! ```text
//!  container --veth--> bridge --port--> vxlan<VNI> --UDP to VTEP--> peer host vxlan --> bridge --> container
//! ```
//!
//! - the VXLAN device is created with **learning off**: the kernel never adds FDB entries from
//!   received packets, so the forwarding table is exactly what the control plane (etcd)
//!   says, and a moved or deleted endpoint cannot linger as a learned entry;
//! - for each remote endpoint, [`Netlink::fdb_add`] adds a permanent FDB entry on the VXLAN
//!   device (`bridge fdb replace MAC dev vxlanX dst VTEP self permanent`): frames to that MAC
//!   are encapsulated to that VTEP;
//! - and [`Netlink::neigh_add`] adds a permanent neighbour entry (`ip neigh replace IP lladdr
//!   MAC dev vxlanX nud permanent`). The device is created with **ARP/ND proxy on**, so the
//!   VXLAN driver answers a container's ARP request or neighbour solicitation from these
//!   entries itself: no broadcast is flooded to other hosts (there is no all-zeros FDB entry,
//!   so none could be), and a peer unknown to the control plane is simply unreachable.
//!   A neighbour entry on the bridge instead serves traffic sent from the host itself.
//!
//! MTU: VXLAN over IPv4 adds 50 bytes (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8; the
//! outer Ethernet header does not count against the underlay MTU but the inner one does),
//! over IPv6 70. The VXLAN device, the bridge and every container interface on the overlay
//! must use at most the underlay MTU minus that ([`overlay_mtu`]), or large packets are
//! dropped silently (VXLAN packets are sent with DF clear but most underlays do not fragment
//! UDP well).

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo as Info, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState};
use rtnetlink::{LinkUnspec, LinkVxlan};

use crate::error::{KernelError, Result};
use crate::netlink::{Netlink, nl_err};

/// Bytes VXLAN encapsulation costs over an IPv4 underlay.
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// Bytes VXLAN encapsulation costs over an IPv6 underlay.
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// The IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;

/// The largest MTU of overlay interfaces for an underlay of `underlay_mtu` bytes reached from
/// the VTEP address `local` (its family decides the overhead).
pub fn overlay_mtu(underlay_mtu: u32, local: IpAddr) -> u32 {
    let overhead = if local.is_ipv4() { VXLAN_OVERHEAD_V4 } else { VXLAN_OVERHEAD_V6 };
    underlay_mtu.saturating_sub(overhead)
}

/// The VXLAN device of one overlay network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Device name (at most 15 bytes).
    pub name: String,
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// This host's VTEP: source address of the encapsulated packets.
    pub local: IpAddr,
    /// UDP destination port (4789 unless the cluster says otherwise).
    pub port: u16,
    /// MTU of the device; see [`overlay_mtu`].
    pub mtu: u32,
    /// Index of the bridge the device is enslaved to.
    pub master: u32,
}

/// The hardware address hns gives the VXLAN device of a host whose VTEP is `vtep`: unique to
/// the host (the VTEP's last four bytes, locally administered, apart from endpoint MACs) and the
/// same after a restart or a re-creation. Frames that other hosts send to this address arrive
/// on the device as the host's own and go up the bridge to the host's stack, which is how a
/// load balancer's `SourceVIP` gets the replies of remote backends (the bridge's own address is
/// the gateway's, the same on every host, so it cannot serve).
pub fn device_mac(vtep: IpAddr) -> [u8; 6] {
    let tail = match vtep {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x06, 0x5d, tail[0], tail[1], tail[2], tail[3]]
}

/// A permanent FDB entry of a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    /// Remote VTEP (`dst`), when the entry has one.
    pub remote: Option<IpAddr>,
    pub permanent: bool,
}

/// A neighbour (ARP/NDP) entry of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighEntry {
    pub ip: IpAddr,
    pub mac: Option<[u8; 6]>,
    pub permanent: bool,
}

/// What an existing VXLAN device is configured with, read from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct VxlanState {
    index: u32,
    is_vxlan: bool,
    vni: Option<u32>,
    local: Option<IpAddr>,
    port: Option<u16>,
    learning: Option<bool>,
    proxy: Option<bool>,
    master: Option<u32>,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
}

fn vxlan_state(m: &LinkMessage) -> VxlanState {
    let mut s = VxlanState { index: m.header.index, ..VxlanState::default() };
    for a in &m.attributes {
        match a {
            LinkAttribute::Controller(c) => s.master = Some(*c),
            LinkAttribute::Mtu(mtu) => s.mtu = Some(*mtu),
            LinkAttribute::Address(a) => s.mac = mac_of(a),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        Info::Kind(k) => s.is_vxlan = k.to_string() == "vxlan",
                        Info::Data(InfoData::Vxlan(items)) => {
                            for item in items {
                                match item {
                                    InfoVxlan::Id(v) => s.vni = Some(*v),
                                    InfoVxlan::Local(ip) => s.local = Some((*ip).into()),
                                    InfoVxlan::Local6(ip) => s.local = Some((*ip).into()),
                                    InfoVxlan::Port(p) => s.port = Some(*p),
                                    InfoVxlan::Learning(l) => s.learning = Some(*l),
                                    InfoVxlan::Proxy(p) => s.proxy = Some(*p),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    s
}

fn mac_of(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

fn show_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn neighbour_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some((*v4).into()),
        NeighbourAddress::Inet6(v6) => Some((*v6).into()),
        // In AF_BRIDGE (FDB) messages the parser cannot know the family of NDA_DST and keeps
        // the raw bytes; their length tells IPv4 from IPv6.
        NeighbourAddress::Other(raw) => match raw.len() {
            4 => <[u8; 4]>::try_from(raw.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(raw.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

impl Netlink {
    async fn vxlan_state(&self, name: &str) -> Result<Option<VxlanState>> {
        let mut stream = self.handle.link().get().match_name(name.to_owned()).execute();
        match stream.try_next().await {
            Ok(Some(m)) => Ok(Some(vxlan_state(&m))),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = nl_err("look up link", name, e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    async fn link_index(&self, op: &str, name: &str) -> Result<u32> {
        match self.link_by_name(name).await? {
            Some(l) => Ok(l.index),
            None => Err(KernelError { op: op.into(), object: name.into(), reason: "no such link".into(), errno: Some(libc::ENODEV) }),
        }
    }

    /// The link that holds the address `vtep` and its MTU: where a VXLAN device using `vtep`
    /// as its local address sends from, so [`overlay_mtu`] of that MTU fits the underlay.
    /// `None` when no link of this namespace has the address.
    pub async fn underlay_of(&self, vtep: IpAddr) -> Result<Option<(String, u32)>> {
        use netlink_packet_route::address::AddressAttribute;
        let _one_dump = self.dumps.lock().await;
        let mut addrs = self.handle.address().get().execute();
        let mut index = None;
        while let Some(m) = addrs.try_next().await.map_err(|e| nl_err("list addresses", "", e))? {
            if m.attributes.iter().any(|a| matches!(a, AddressAttribute::Address(ip) if *ip == vtep)) {
                index = Some(m.header.index);
            }
        }
        let Some(index) = index else { return Ok(None) };
        let mut links = self.handle.link().get().match_index(index).execute();
        let Some(m) = links.try_next().await.map_err(|e| nl_err("look up link", &format!("index {index}"), e))? else { return Ok(None) };
        let name = m.attributes.iter().find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n.clone()) } else { None }).unwrap_or_default();
        let mtu = m.attributes.iter().find_map(|a| if let LinkAttribute::Mtu(m) = a { Some(*m) } else { None }).unwrap_or(1500);
        Ok(Some((name, mtu)))
    }

    /// Creates the VXLAN device of `spec` (learning off, ARP/ND proxy on), enslaved to
    /// `spec.master` and up, or repairs an existing one: a device of that name with another
    /// kind, VNI, local address, port, learning or proxy setting, or another hardware address
    /// than [`device_mac`], is deleted and created again
    /// (those cannot be changed in place); master and MTU are set if they differ. Returns the
    /// device's index.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<u32> {
        // Never repair (that is, delete and re-create) a device hns did not make.
        if let Some(l) = self.link_by_name(&spec.name).await? {
            l.check_ours("create VXLAN device")?;
        }
        if let Some(s) = self.vxlan_state(&spec.name).await? {
            let same = s.is_vxlan
                && s.vni == Some(spec.vni)
                && s.local == Some(spec.local)
                && s.port == Some(spec.port)
                && s.learning == Some(false)
                && s.proxy == Some(true)
                && s.mac == Some(device_mac(spec.local));
            if same {
                if s.master != Some(spec.master) {
                    self.set_master(&spec.name, spec.master).await?;
                }
                if s.mtu != Some(spec.mtu) {
                    let msg = LinkUnspec::new_with_index(s.index).mtu(spec.mtu).build();
                    self.handle.link().set(msg).execute().await.map_err(|e| nl_err("set MTU of", &spec.name, e))?;
                }
                self.set_up(&spec.name).await?;
                return Ok(s.index);
            }
            self.delete_link(&spec.name).await?;
        }
        let mut b = LinkVxlan::new(&spec.name, spec.vni).port(spec.port).learning(false).proxy(true);
        b = match spec.local {
            IpAddr::V4(v4) => b.local(v4),
            IpAddr::V6(v6) => b.local6(v6),
        };
        let msg = b.mtu(spec.mtu).address(device_mac(spec.local).to_vec()).controller(spec.master).link_group(crate::names::HNS_GROUP).up().build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl_err("create VXLAN device", &format!("{} (VNI {})", spec.name, spec.vni), e))?;
        self.link_index("create VXLAN device", &spec.name).await
    }

    /// Sends frames for `mac` arriving at VXLAN device `vxlan_if` to the VTEP `remote_vtep`:
    /// a permanent entry in the device's own FDB (NTF_SELF; without it the kernel would look
    /// for a bridge FDB and refuse with EOPNOTSUPP). Replaces an entry for the same MAC, so a
    /// moved endpoint is re-pointed in one step.
    pub async fn fdb_add(&self, vxlan_if: &str, mac: [u8; 6], remote_vtep: IpAddr) -> Result<()> {
        let index = self.link_index("add FDB entry on", vxlan_if).await?;
        self.handle
            .neighbours()
            .add_bridge(index, &mac)
            .flags(NeighbourFlags::Own)
            .destination(remote_vtep)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err("add FDB entry", &format!("{} dst {remote_vtep} on {vxlan_if}", show_mac(&mac)), e))
    }

    /// Removes the FDB entry for `mac` towards `remote_vtep` from `vxlan_if`. Absent is fine.
    pub async fn fdb_del(&self, vxlan_if: &str, mac: [u8; 6], remote_vtep: IpAddr) -> Result<()> {
        let index = self.link_index("delete FDB entry on", vxlan_if).await?;
        // rtnetlink has no builder for neighbour deletes: the message is the one an add
        // would send (family AF_BRIDGE, NTF_SELF, lladdr and dst), built here by hand.
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.flags = NeighbourFlags::Own;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        msg.attributes.push(NeighbourAttribute::Destination(neighbour_address(remote_vtep)));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_err("delete FDB entry", &format!("{} dst {remote_vtep} on {vxlan_if}", show_mac(&mac)), e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// The entries of `vxlan_if`'s own FDB (NTF_SELF), for reconciliation. The bridge's
    /// entries for the port (NTF_MASTER: its own MAC, learned MACs) are left out.
    pub async fn fdb_entries(&self, vxlan_if: &str) -> Result<Vec<FdbEntry>> {
        let index = self.link_index("list FDB of", vxlan_if).await?;
        let mut out = Vec::new();
        let _one_dump = self.dumps.lock().await;
        let mut dump = self.handle.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
        while let Some(m) = dump.try_next().await.map_err(|e| nl_err("list FDB of", vxlan_if, e))? {
            if m.header.ifindex != index || !m.header.flags.contains(NeighbourFlags::Own) {
                continue;
            }
            let mut mac = None;
            let mut remote = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
                    NeighbourAttribute::Destination(d) => remote = neighbour_ip(d),
                    _ => {}
                }
            }
            if let Some(mac) = mac {
                out.push(FdbEntry { mac, remote, permanent: m.header.state == NeighbourState::Permanent });
            }
        }
        Ok(out)
    }

    /// Adds (or replaces) a permanent neighbour entry `ip` -> `mac` on `link` (the VXLAN device,
    /// which then answers ARP/ND for `ip` itself, or the bridge, for the host's own traffic).
    pub async fn neigh_add(&self, link: &str, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
        let index = self.link_index("add neighbour on", link).await?;
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err("add neighbour", &format!("{ip} lladdr {} on {link}", show_mac(&mac)), e))
    }

    /// Removes the neighbour entry for `ip` from `link`. Absent is fine.
    pub async fn neigh_del(&self, link: &str, ip: IpAddr) -> Result<()> {
        let index = self.link_index("delete neighbour on", link).await?;
        // As for FDB deletes, there is no delete builder: family, ifindex and dst by hand.
        let mut msg = NeighbourMessage::default();
        msg.header.family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.ifindex = index;
        msg.attributes.push(NeighbourAttribute::Destination(neighbour_address(ip)));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_err("delete neighbour", &format!("{ip} on {link}"), e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// The IPv4 and IPv6 neighbour entries of `link`, for reconciliation.
    pub async fn neigh_entries(&self, link: &str) -> Result<Vec<NeighEntry>> {
        let index = self.link_index("list neighbours of", link).await?;
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let _one_dump = self.dumps.lock().await;
            let mut dump = self.handle.neighbours().get().set_address_family(family).execute();
            while let Some(m) = dump.try_next().await.map_err(|e| nl_err("list neighbours of", link, e))? {
                if m.header.ifindex != index {
                    continue;
                }
                let mut ip = None;
                let mut mac = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::Destination(d) => ip = neighbour_ip(d),
                        NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
                        _ => {}
                    }
                }
                if let Some(ip) = ip {
                    out.push(NeighEntry { ip, mac, permanent: m.header.state == NeighbourState::Permanent });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_mtu_subtracts_the_encapsulation() {
        assert_eq!(overlay_mtu(1500, "10.0.0.1".parse().unwrap()), 1450);
        assert_eq!(overlay_mtu(1500, "fd00::1".parse().unwrap()), 1430);
        assert_eq!(overlay_mtu(9000, "10.0.0.1".parse().unwrap()), 8950);
        assert_eq!(overlay_mtu(40, "10.0.0.1".parse().unwrap()), 0);
    }

    #[test]
    fn fdb_destinations_are_read_from_raw_bytes() {
        assert_eq!(neighbour_ip(&NeighbourAddress::Other(vec![10, 99, 0, 2])), Some("10.99.0.2".parse().unwrap()));
        let v6: std::net::Ipv6Addr = "fd00::2".parse().unwrap();
        assert_eq!(neighbour_ip(&NeighbourAddress::Other(v6.octets().to_vec())), Some(v6.into()));
        assert_eq!(neighbour_ip(&NeighbourAddress::Other(vec![1, 2, 3])), None);
    }
}
