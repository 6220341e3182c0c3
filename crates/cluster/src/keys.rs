//! The etcd key layout, in one place. Pure functions, no I/O.
//!
//! ```text
//! /hns/v1/objects/nodes/<node>                 NodeInfo         attached to the node's lease
//! /hns/v1/objects/networks/<net-id>            OverlayNetwork
//! /hns/v1/objects/endpoints/<net-id>/<ep-id>   ClusterEndpoint  attached to its node's lease
//! /hns/v1/alloc/vnis/<vni, 8 digits>           owning network id
//! /hns/v1/alloc/addrs/<net-id>/<ip, fixed>     AddressOwner     (never on a lease)
//! /hns/v1/alloc/owners/<net-id>/<ep-id>        the endpoint's address in the primary subnet
//! /hns/v1/alloc/owners/<net-id>/<ep-id>/<n>    its address in subnet n (n >= 1, dual stack)
//! ```
//!
//! IPv4 and IPv6 reservations share `alloc/addrs/<net-id>/`: the fixed forms of the two
//! families never look alike (dots against colons), and the walk ignores keys of the other
//! family. The owner record of the primary subnet keeps the key it had before networks could
//! be dual stack, so endpoints allocated by older versions keep their reservation.
//!
//! Why two subtrees: everything a host must mirror into its kernel (nodes, networks,
//! endpoints) lives under `objects/`, so one prefix watch and one range read give a consistent
//! view, while the allocation bookkeeping under `alloc/` (written on every address
//! allocation) never wakes the watchers.
//!
//! Why fixed-width numbers: etcd orders keys as bytes. Writing VNIs as 8 decimal digits and
//! addresses with every octet (IPv4, `010.200.000.005`) or every hextet (IPv6, fully
//! expanded) zero-padded makes byte order equal numeric order, so the allocators can ask etcd
//! for "the next taken values after X" with a bounded range read instead of reading them all,
//! and the keys stay readable in `etcdctl`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{ClusterError, Result};

pub const ROOT: &str = "/hns/v1/";
pub const OBJECTS: &str = "/hns/v1/objects/";
pub const NODES: &str = "/hns/v1/objects/nodes/";
pub const NETWORKS: &str = "/hns/v1/objects/networks/";
pub const ENDPOINTS: &str = "/hns/v1/objects/endpoints/";
pub const VNIS: &str = "/hns/v1/alloc/vnis/";
pub const ADDRS: &str = "/hns/v1/alloc/addrs/";
pub const OWNERS: &str = "/hns/v1/alloc/owners/";

/// Checks a name or id that becomes one key segment: non-empty, at most 253 bytes, printable
/// ASCII without `/` (which would split the segment) or spaces.
pub fn validate_segment(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(ClusterError::invalid(what, "must not be empty"));
    }
    if value.len() > 253 {
        return Err(ClusterError::invalid(what, format!("{value:?} is longer than 253 bytes")));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic() || *c == '/') {
        return Err(ClusterError::invalid(what, format!("{value:?} contains {c:?}; use printable ASCII without '/' or spaces")));
    }
    Ok(())
}

pub fn node(name: &str) -> String {
    format!("{NODES}{name}")
}

pub fn network(id: &str) -> String {
    format!("{NETWORKS}{id}")
}

/// Prefix of all endpoints of one network (ends with `/`).
pub fn endpoints_of(net: &str) -> String {
    format!("{ENDPOINTS}{net}/")
}

pub fn endpoint(net: &str, ep: &str) -> String {
    format!("{ENDPOINTS}{net}/{ep}")
}

pub fn vni(vni: u32) -> String {
    format!("{VNIS}{vni:08}")
}

/// Prefix of all address reservations of one network (ends with `/`).
pub fn addrs_of(net: &str) -> String {
    format!("{ADDRS}{net}/")
}

pub fn addr(net: &str, ip: IpAddr) -> String {
    format!("{ADDRS}{net}/{}", fixed_ip(ip))
}

/// Prefix of all owner records of one network (ends with `/`).
pub fn owners_of(net: &str) -> String {
    format!("{OWNERS}{net}/")
}

/// The owner record of endpoint `ep` for the network's subnet number `slot` (0: primary).
pub fn owner(net: &str, ep: &str, slot: usize) -> String {
    match slot {
        0 => format!("{OWNERS}{net}/{ep}"),
        n => format!("{OWNERS}{net}/{ep}/{n}"),
    }
}

/// An address with every part zero-padded, so byte order is numeric order.
pub fn fixed_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{:03}.{:03}.{:03}.{:03}", o[0], o[1], o[2], o[3])
        }
        IpAddr::V6(v6) => v6.segments().iter().map(|s| format!("{s:04x}")).collect::<Vec<_>>().join(":"),
    }
}

/// Inverse of [`fixed_ip`].
pub fn parse_fixed_ip(text: &str) -> Option<IpAddr> {
    if text.contains(':') {
        return text.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    // std refuses leading zeros in IPv4 (they mean octal elsewhere), so parse by hand.
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then(|| IpAddr::V4(Ipv4Addr::from(octets)))
}

/// The VNI of a key under [`VNIS`].
pub fn parse_vni(key: &str) -> Option<u32> {
    key.strip_prefix(VNIS)?.parse().ok()
}

/// The address of a key under [`ADDRS`] (`net` is the network id the key belongs to).
pub fn parse_addr(key: &str) -> Option<(&str, IpAddr)> {
    let (net, ip) = key.strip_prefix(ADDRS)?.split_once('/')?;
    Some((net, parse_fixed_ip(ip)?))
}

/// What a key under [`OBJECTS`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKey<'a> {
    Node(&'a str),
    Network(&'a str),
    Endpoint { network: &'a str, endpoint: &'a str },
}

pub fn parse_object(key: &str) -> Option<ObjectKey<'_>> {
    let one = |s: &str| (!s.is_empty() && !s.contains('/')).then_some(());
    if let Some(name) = key.strip_prefix(NODES) {
        one(name)?;
        return Some(ObjectKey::Node(name));
    }
    if let Some(id) = key.strip_prefix(NETWORKS) {
        one(id)?;
        return Some(ObjectKey::Network(id));
    }
    let (network, endpoint) = key.strip_prefix(ENDPOINTS)?.split_once('/')?;
    one(network)?;
    one(endpoint)?;
    Some(ObjectKey::Endpoint { network, endpoint })
}

/// The smallest key after every key that starts with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: the range runs to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ips_sort_numerically_and_round_trip() {
        let ips: Vec<IpAddr> = ["10.0.0.9", "10.0.0.10", "10.0.1.2", "10.200.0.5", "9.255.255.255"].iter().map(|s| s.parse().unwrap()).collect();
        let mut by_key = ips.clone();
        by_key.sort_by_key(|ip| fixed_ip(*ip));
        let mut by_value = ips.clone();
        by_value.sort();
        assert_eq!(by_key, by_value);
        for ip in ips {
            assert_eq!(parse_fixed_ip(&fixed_ip(ip)), Some(ip));
        }
        assert_eq!(fixed_ip("10.200.0.5".parse().unwrap()), "010.200.000.005");
        let v6: IpAddr = "fd00:1::a:5".parse().unwrap();
        assert_eq!(fixed_ip(v6), "fd00:0001:0000:0000:0000:0000:000a:0005");
        assert_eq!(parse_fixed_ip(&fixed_ip(v6)), Some(v6));
        assert!(fixed_ip("fd00::9".parse().unwrap()) < fixed_ip("fd00::a".parse().unwrap()));
        assert_eq!(parse_fixed_ip("010.200.000"), None);
        assert_eq!(parse_fixed_ip("010.200.000.256"), None);
        assert_eq!(parse_fixed_ip("010.200.000.0005"), None);
    }

    #[test]
    fn vni_keys_sort_numerically() {
        assert_eq!(vni(4096), "/hns/v1/alloc/vnis/00004096");
        assert!(vni(9999) < vni(10000));
        assert!(vni(16_777_215) > vni(4096));
        assert_eq!(parse_vni(&vni(16_777_215)), Some(16_777_215));
        assert_eq!(parse_vni("/hns/v1/alloc/vnis/x"), None);
    }

    #[test]
    fn object_keys_round_trip() {
        assert_eq!(parse_object(&node("host-a")), Some(ObjectKey::Node("host-a")));
        assert_eq!(parse_object(&network("n1")), Some(ObjectKey::Network("n1")));
        assert_eq!(parse_object(&endpoint("n1", "e1")), Some(ObjectKey::Endpoint { network: "n1", endpoint: "e1" }));
        assert_eq!(parse_object("/hns/v1/objects/endpoints/n1/"), None);
        assert_eq!(parse_object("/hns/v1/objects/endpoints/n1/e1/x"), None);
        assert_eq!(parse_object("/hns/v1/objects/other/x"), None);
        assert_eq!(parse_addr(&addr("n1", "10.0.0.7".parse().unwrap())), Some(("n1", "10.0.0.7".parse().unwrap())));
    }

    #[test]
    fn prefixes_of_one_network_do_not_cover_another() {
        // "n1/" must not match keys of "n10": the trailing slash is part of the prefix.
        assert!(!endpoint("n10", "e").starts_with(&endpoints_of("n1")));
        assert!(endpoint("n1", "e").starts_with(&endpoints_of("n1")));
        assert_eq!(owner("n1", "e", 0), "/hns/v1/alloc/owners/n1/e");
        assert_eq!(owner("n1", "e", 1), "/hns/v1/alloc/owners/n1/e/1");
        assert!(owner("n1", "e", 1).starts_with(&owners_of("n1")));
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn segments_are_checked() {
        assert!(validate_segment("network id", "abc-123_x.y").is_ok());
        assert!(validate_segment("network id", "").is_err());
        assert!(validate_segment("network id", "a/b").unwrap_err().to_string().contains("'/'"));
        assert!(validate_segment("network id", "a b").is_err());
        assert!(validate_segment("network id", &"x".repeat(254)).is_err());
    }
}
