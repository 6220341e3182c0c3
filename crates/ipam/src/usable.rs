//! Whether a prefix can be a network's subnet at all, whatever the host.
//!
//! A network's subnet gets its gateway address on a host link and a route to it (or, for
//! the external drivers, is the LAN's own subnet). Some ranges can never be that: the
//! kernel refuses multicast addresses on a link, loopback and "this network" addresses
//! mean something else to every host, and a route for a link-local or IPv4-mapped range
//! would break the host's own traffic. A prefix wider than any one site's network would
//! swallow address space the host needs to reach elsewhere.
//!
//! Bounds: IPv4 subnets may be at most a /8 (the largest private block, 10.0.0.0/8); IPv6
//! subnets at most a /32 (the largest block one organisation is allocated; a network's
//! subnet is normally a /64), so e.g. 2000::/3, the whole global unicast space, is refused.

use ipnet::IpNet;

use crate::overlap::overlaps;

/// Widest IPv4 subnet accepted (see the module docs).
pub const MIN_PREFIX_LEN_V4: u8 = 8;
/// Widest IPv6 subnet accepted (see the module docs).
pub const MIN_PREFIX_LEN_V6: u8 = 32;

/// A special-purpose range no network may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialRange {
    /// The range, as text (parsed on use; the table stays a plain constant).
    pub range: &'static str,
    /// What it is, e.g. "link-local".
    pub name: &'static str,
    /// Where that is defined.
    pub rfc: &'static str,
}

const SPECIAL: &[SpecialRange] = &[
    SpecialRange { range: "0.0.0.0/8", name: "\"this network\"", rfc: "RFC 1122" },
    SpecialRange { range: "127.0.0.0/8", name: "loopback", rfc: "RFC 1122" },
    SpecialRange { range: "169.254.0.0/16", name: "link-local", rfc: "RFC 3927" },
    SpecialRange { range: "224.0.0.0/4", name: "multicast", rfc: "RFC 5771" },
    SpecialRange { range: "240.0.0.0/4", name: "reserved (former class E, with the broadcast address 255.255.255.255)", rfc: "RFC 1112" },
    SpecialRange { range: "::/128", name: "the unspecified address", rfc: "RFC 4291" },
    SpecialRange { range: "::1/128", name: "loopback", rfc: "RFC 4291" },
    SpecialRange { range: "::ffff:0:0/96", name: "IPv4-mapped", rfc: "RFC 4291" },
    SpecialRange { range: "fe80::/10", name: "link-local", rfc: "RFC 4291" },
    SpecialRange { range: "ff00::/8", name: "multicast", rfc: "RFC 4291" },
];

/// Why a prefix cannot be a subnet. Its `Display` completes "subnet X ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// `0.0.0.0/0` or `::/0`.
    DefaultRoute { v4: bool },
    /// Inside a special-purpose range (`inside`) or including (part of) one.
    Special { range: SpecialRange, inside: bool },
    /// Wider than [`MIN_PREFIX_LEN_V4`] / [`MIN_PREFIX_LEN_V6`].
    TooWide { min_prefix_len: u8 },
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::DefaultRoute { v4 } => write!(f, "is the default route (every {} address), not a network", if *v4 { "IPv4" } else { "IPv6" }),
            Unusable::Special { range, inside: true } => write!(f, "is {} ({})", range.name, range.rfc),
            Unusable::Special { range, inside: false } => write!(f, "includes {}, which is {} ({})", range.range, range.name, range.rfc),
            Unusable::TooWide { min_prefix_len } => write!(f, "is wider than /{min_prefix_len}, the widest subnet a network may have"),
        }
    }
}

/// Checks that `subnet` may be a network's subnet (see the module docs for the rules).
pub fn check_usable(subnet: &IpNet) -> Result<(), Unusable> {
    let v4 = subnet.addr().is_ipv4();
    if subnet.prefix_len() == 0 {
        return Err(Unusable::DefaultRoute { v4 });
    }
    for s in SPECIAL {
        let range: IpNet = s.range.parse().expect("the table holds valid prefixes");
        if overlaps(subnet, &range) {
            return Err(Unusable::Special { range: *s, inside: range.contains(subnet) });
        }
    }
    let min_prefix_len = if v4 { MIN_PREFIX_LEN_V4 } else { MIN_PREFIX_LEN_V6 };
    if subnet.prefix_len() < min_prefix_len {
        return Err(Unusable::TooWide { min_prefix_len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn why(s: &str) -> String {
        check_usable(&net(s)).expect_err(s).to_string()
    }

    #[test]
    fn each_special_range_is_refused_by_name() {
        for (subnet, says) in [
            ("0.0.0.0/8", "is \"this network\" (RFC 1122)"),
            ("0.1.0.0/16", "is \"this network\" (RFC 1122)"),
            ("127.0.0.0/8", "is loopback (RFC 1122)"),
            ("127.5.0.0/16", "is loopback"),
            ("169.254.0.0/16", "is link-local (RFC 3927)"),
            ("169.254.3.0/24", "is link-local"),
            ("224.0.0.0/24", "is multicast (RFC 5771)"),
            ("239.255.0.0/16", "is multicast"),
            ("240.0.0.0/24", "is reserved"),
            ("255.255.255.0/24", "255.255.255.255"),
            ("::/64", "includes ::/128, which is the unspecified address (RFC 4291)"),
            ("::1/128", "is loopback (RFC 4291)"),
            ("::ffff:0:0/96", "is IPv4-mapped (RFC 4291)"),
            ("::ffff:10.0.0.0/120", "is IPv4-mapped"),
            ("fe80::/64", "is link-local (RFC 4291)"),
            ("fe80::/10", "is link-local"),
            ("ff00::/8", "is multicast (RFC 4291)"),
            ("ff02::/16", "is multicast"),
        ] {
            let got = why(subnet);
            assert!(got.contains(says), "{subnet}: {got}");
        }
    }

    #[test]
    fn a_wide_prefix_that_includes_a_special_range_names_it() {
        assert_eq!(why("160.0.0.0/3"), "includes 169.254.0.0/16, which is link-local (RFC 3927)");
        assert_eq!(why("fe00::/7"), "includes fe80::/10, which is link-local (RFC 4291)");
    }

    #[test]
    fn default_routes_and_too_wide_prefixes_are_refused() {
        assert_eq!(why("0.0.0.0/0"), "is the default route (every IPv4 address), not a network");
        assert_eq!(why("::/0"), "is the default route (every IPv6 address), not a network");
        assert_eq!(why("8.0.0.0/6"), "is wider than /8, the widest subnet a network may have");
        assert_eq!(why("2000::/3"), "is wider than /32, the widest subnet a network may have");
        assert_eq!(why("fc00::/7"), "is wider than /32, the widest subnet a network may have");
    }

    #[test]
    fn ordinary_subnets_pass() {
        // Private ranges, the bounds themselves, documentation and shared address space,
        // and every default candidate of `defaults`.
        for ok in [
            "10.0.0.0/8", "172.16.0.0/12", "172.17.0.0/16", "192.168.0.0/16", "10.81.0.0/24", "100.64.0.0/10", "198.51.100.0/24",
            "11.0.0.0/8", "223.255.255.0/30", "2001:db8::/32", "fd00:6e73::/48", "fd00:80::/64", "fd00::/32", "2001:db8:1::/126",
        ] {
            assert_eq!(check_usable(&net(ok)), Ok(()), "{ok}");
        }
    }
}
