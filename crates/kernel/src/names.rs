//! Names of hns-owned kernel objects. Every link hns creates starts with one of these prefixes
//! and every nft table is [`NFT_TABLE`].
//!
//! A name alone does not prove ownership (anyone can `ip link add hns-deadbeef`): every host
//! link hns creates also joins the device group [`HNS_GROUP`] in the same request that creates
//! it, and garbage collection removes only links carrying that mark ([`is_hns_link`]). A group
//! rather than an interface alias because the group is set atomically at creation: a crash can
//! never leave an hns link without its mark.
//!
//! Linux interface names are at most 15 bytes, so names are built from a prefix plus the first
//! hex digits of the object's GUID.

/// Bridges of networks: `hns-` + 8 hex digits.
pub const BRIDGE_PREFIX: &str = "hns-";
/// Host ends of endpoint veths: `hnv` + 12 hex digits.
pub const VETH_PREFIX: &str = "hnv";
/// Links being removed: a detached veth is renamed `hnz` + 12 hex digits and deleted in the
/// background (see the engine's reaper).
pub const RETIRED_PREFIX: &str = "hnz";
/// The device group of retired links, so one request deletes a whole batch of them (and pays
/// the kernel's RCU grace period once). Its bytes spell "hnz".
pub const RETIRED_GROUP: u32 = 0x0068_6e7a;
/// The device group of every live host link hns creates (bridges, host legs, host ends of
/// veths, VXLAN, bond and VLAN links). Its bytes spell "hns".
pub const HNS_GROUP: u32 = 0x0068_6e73;
/// IFB devices of endpoints with an outgoing rate cap (QOS): `hnf` + 12 hex digits of the
/// endpoint ID (the same digits as its veth).
pub const IFB_PREFIX: &str = "hnf";
/// Bonds of several adapters (teaming): `hnb` + 8 hex digits of the network ID.
pub const BOND_PREFIX: &str = "hnb";
/// VLAN sub-interfaces of an external network's uplink: `hnq` + 8 hex digits.
pub const VLAN_PREFIX: &str = "hnq";
/// VXLAN devices of overlay networks: `hnx` + 8 hex digits of the network ID.
pub const VXLAN_PREFIX: &str = "hnx";
/// The nft table (family inet) that holds every hns rule.
pub const NFT_TABLE: &str = "hns";

fn hex_of(id: &str, n: usize) -> String {
    id.chars().filter(|c| c.is_ascii_hexdigit()).take(n).collect::<String>().to_ascii_lowercase()
}

pub fn bridge_name(network_id: &str) -> String {
    format!("{BRIDGE_PREFIX}{}", hex_of(network_id, 8))
}

pub fn veth_host_name(endpoint_id: &str) -> String {
    format!("{VETH_PREFIX}{}", hex_of(endpoint_id, 12))
}

pub fn ifb_name(endpoint_id: &str) -> String {
    format!("{IFB_PREFIX}{}", hex_of(endpoint_id, 12))
}

/// A unique name for a link on its way out.
pub fn retired_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Process id and a counter: unique across restarts while the old links may still exist.
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{RETIRED_PREFIX}{:06x}{:06x}", std::process::id() & 0xff_ffff, n & 0xff_ffff)
}

/// True for links hns owns: an hns name and hns's mark (its live or its retired group). A
/// user's link that merely looks like one is never hns's.
pub fn is_hns_link(name: &str, group: u32) -> bool {
    (group == HNS_GROUP || group == RETIRED_GROUP) && has_hns_name(name)
}

/// True for names of the shape hns gives its links (which says nothing about who made it).
pub fn has_hns_name(name: &str) -> bool {
    (name.starts_with(BRIDGE_PREFIX) && name.len() == BRIDGE_PREFIX.len() + 8)
        || (name.starts_with(VETH_PREFIX) && name.len() == VETH_PREFIX.len() + 12)
        || (name.starts_with(RETIRED_PREFIX) && name.len() == RETIRED_PREFIX.len() + 12)
        || (name.starts_with(IFB_PREFIX) && name.len() == IFB_PREFIX.len() + 12)
        || ([BOND_PREFIX, VLAN_PREFIX, VXLAN_PREFIX].iter().any(|p| name.starts_with(p)) && name.len() == 3 + 8)
}

/// The VXLAN device of an overlay network (the same name on every host).
pub fn vxlan_name(network_id: &str) -> String {
    format!("{VXLAN_PREFIX}{}", hex_of(network_id, 8))
}

/// The short tag (8 hex digits of a network ID) that names a network's links.
pub fn network_tag(network_id: &str) -> String {
    hex_of(network_id, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_are_recognised() {
        let id = "6f1d0c2e-9a3b-4c5d-8e7f-0123456789ab";
        let b = bridge_name(id);
        let v = veth_host_name(id);
        assert_eq!(b, "hns-6f1d0c2e");
        assert_eq!(v, "hnv6f1d0c2e9a3b");
        assert!(b.len() <= 15 && v.len() <= 15);
        assert!(is_hns_link(&b, HNS_GROUP) && is_hns_link(&v, HNS_GROUP));
        let r1 = retired_name();
        assert!(r1.len() <= 15 && is_hns_link(&r1, RETIRED_GROUP) && r1 != retired_name());
        assert_eq!(vxlan_name(id), "hnx6f1d0c2e");
        assert!(is_hns_link(&vxlan_name(id), HNS_GROUP));
        assert!(!is_hns_link("eth0", HNS_GROUP) && !is_hns_link("hns-x", HNS_GROUP) && !is_hns_link("docker0", HNS_GROUP));
    }

    #[test]
    fn a_link_named_like_hns_but_without_the_mark_is_not_hns() {
        // `ip link add hns-deadbeef type bridge` is in group 0 (default).
        assert!(has_hns_name("hns-deadbeef"));
        assert!(!is_hns_link("hns-deadbeef", 0));
        assert!(is_hns_link("hns-deadbeef", HNS_GROUP));
    }
}
