//! Choosing a default subnet that does not collide with the host.
//!
//! Windows' HNS hard-coded the default NAT prefix, which broke every host
//! whose LAN or VPN already used it. Here the daemon passes in every prefix
//! it knows about (host addresses, host routes, existing networks) and gets
//! back the first candidate that overlaps none of them.
//!
//! A default route (`0.0.0.0/0`, `::/0`) is ignored: it overlaps everything,
//! yet a more specific route for a container subnet always wins over it, so
//! it is no reason to reject a candidate.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::overlap::overlaps;

/// The IPv4 candidates, in order of preference: 172.17-31.0.0/16 (what
/// docker users expect), then 10.0-255.0.0/16, then 192.168.0.0/16.
fn v4_candidates() -> impl Iterator<Item = IpNet> {
    let in_172 = (17u8..=31).map(|b| Ipv4Addr::new(172, b, 0, 0));
    let in_10 = (0u8..=255).map(|b| Ipv4Addr::new(10, b, 0, 0));
    let in_192 = std::iter::once(Ipv4Addr::new(192, 168, 0, 0));
    in_172
        .chain(in_10)
        .chain(in_192)
        .map(|a| IpNet::V4(Ipv4Net::new(a, 16).expect("/16 is a valid IPv4 prefix")))
}

/// The IPv6 candidates: the /64s of the ULA prefix fd00:6e73::/48 ("ns" in
/// ASCII), fd00:6e73:0:<n>::/64 for n = 0..=0xffff.
fn v6_candidates() -> impl Iterator<Item = IpNet> {
    (0u16..=u16::MAX).map(|n| {
        let a = Ipv6Addr::new(0xfd00, 0x6e73, 0, n, 0, 0, 0, 0);
        IpNet::V6(Ipv6Net::new(a, 64).expect("/64 is a valid IPv6 prefix"))
    })
}

fn first_free(mut candidates: impl Iterator<Item = IpNet>, in_use: &[IpNet]) -> Option<IpNet> {
    let blockers: Vec<&IpNet> = in_use.iter().filter(|n| n.prefix_len() > 0).collect();
    candidates.find(|c| !blockers.iter().any(|b| overlaps(c, b)))
}

/// The first default IPv4 subnet that overlaps none of `in_use`, or `None`
/// if every candidate is taken.
pub fn pick_default_subnet(in_use: &[IpNet]) -> Option<IpNet> {
    first_free(v4_candidates(), in_use)
}

/// The first default IPv6 ULA /64 (from fd00:6e73::/48) that overlaps none
/// of `in_use`, or `None` if every candidate is taken.
pub fn pick_default_subnet_v6(in_use: &[IpNet]) -> Option<IpNet> {
    first_free(v6_candidates(), in_use)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn empty_host_gets_172_17() {
        assert_eq!(pick_default_subnet(&[]), Some(net("172.17.0.0/16")));
    }

    #[test]
    fn skips_overlapping_candidates_in_order() {
        let in_use = nets(&["172.17.0.0/16", "172.18.3.0/24", "192.168.1.0/24"]);
        assert_eq!(pick_default_subnet(&in_use), Some(net("172.19.0.0/16")));
    }

    #[test]
    fn wide_172_route_moves_to_10() {
        let in_use = nets(&["172.17.0.0/16", "172.16.0.0/12"]);
        assert_eq!(pick_default_subnet(&in_use), Some(net("10.0.0.0/16")));
        let in_use = nets(&["172.16.0.0/12", "10.0.0.0/16", "10.1.2.3/32"]);
        assert_eq!(pick_default_subnet(&in_use), Some(net("10.2.0.0/16")));
    }

    #[test]
    fn falls_back_to_192_168() {
        let in_use = nets(&["172.16.0.0/12", "10.0.0.0/8"]);
        assert_eq!(pick_default_subnet(&in_use), Some(net("192.168.0.0/16")));
    }

    #[test]
    fn none_when_everything_is_taken() {
        let in_use = nets(&["172.16.0.0/12", "10.0.0.0/8", "192.168.128.0/17"]);
        assert_eq!(pick_default_subnet(&in_use), None);
    }

    #[test]
    fn default_route_and_other_family_do_not_block() {
        let in_use = nets(&["0.0.0.0/0", "::/0", "fd00::/8"]);
        assert_eq!(pick_default_subnet(&in_use), Some(net("172.17.0.0/16")));
    }

    #[test]
    fn v6_picks_first_free_64() {
        assert_eq!(pick_default_subnet_v6(&[]), Some(net("fd00:6e73::/64")));
        let in_use = nets(&["fd00:6e73::/63", "::/0", "172.17.0.0/16"]);
        assert_eq!(
            pick_default_subnet_v6(&in_use),
            Some(net("fd00:6e73:0:2::/64"))
        );
    }

    #[test]
    fn v6_none_when_ula_block_taken() {
        assert_eq!(pick_default_subnet_v6(&nets(&["fd00::/8"])), None);
        assert_eq!(pick_default_subnet_v6(&nets(&["fd00:6e73::/48"])), None);
        // the last candidate is still found when all others are taken
        let in_use = nets(&[
            "fd00:6e73::/49",
            "fd00:6e73:0:8000::/50",
            "fd00:6e73:0:c000::/51",
            "fd00:6e73:0:e000::/52",
            "fd00:6e73:0:f000::/53",
            "fd00:6e73:0:f800::/54",
            "fd00:6e73:0:fc00::/55",
            "fd00:6e73:0:fe00::/56",
            "fd00:6e73:0:ff00::/57",
            "fd00:6e73:0:ff80::/58",
            "fd00:6e73:0:ffc0::/59",
            "fd00:6e73:0:ffe0::/60",
            "fd00:6e73:0:fff0::/61",
            "fd00:6e73:0:fff8::/62",
            "fd00:6e73:0:fffc::/63",
            "fd00:6e73:0:fffe::/64",
        ]);
        assert_eq!(
            pick_default_subnet_v6(&in_use),
            Some(net("fd00:6e73:0:ffff::/64"))
        );
    }
}
