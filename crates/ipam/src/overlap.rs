//! Whether two prefixes share an address.
//!
//! Two prefixes overlap exactly when the shorter one contains the network
//! address of the longer one, so comparing both network addresses under the
//! shorter prefix's mask is enough; no enumeration is ever needed. Prefixes of
//! different families never overlap (IPv4-mapped IPv6 addresses are not
//! treated as IPv4: the kernel routes them separately).

use ipnet::IpNet;

use crate::addr::{self, NetNum};

/// True if the two prefixes share any address. Host bits written in either
/// prefix are ignored (`10.0.0.5/8` is treated as `10.0.0.0/8`).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    let (a, b) = (NetNum::of(a), NetNum::of(b));
    if a.family != b.family {
        return false;
    }
    let shorter = a.prefix_len.min(b.prefix_len);
    let mask = !addr::last_offset(a.family.bits() - shorter);
    a.addr & mask == b.addr & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(a: &str, b: &str) -> bool {
        let (a, b): (IpNet, IpNet) = (a.parse().unwrap(), b.parse().unwrap());
        let r = overlaps(&a, &b);
        assert_eq!(
            r,
            overlaps(&b, &a),
            "overlaps must be symmetric for {a} {b}"
        );
        r
    }

    #[test]
    fn v4_cases() {
        assert!(o("172.16.0.0/12", "172.17.0.0/16"));
        assert!(o("172.17.0.0/16", "172.17.0.0/16"));
        assert!(o("172.17.5.9/32", "172.17.0.0/16"));
        assert!(!o("172.17.0.0/16", "172.18.0.0/16"));
        assert!(!o("10.0.0.0/8", "11.0.0.0/8"));
        assert!(o("0.0.0.0/0", "192.168.1.0/24"));
        assert!(!o("192.168.1.0/25", "192.168.1.128/25"));
        assert!(o("192.168.1.0/24", "192.168.1.200/25"));
    }

    #[test]
    fn v6_cases() {
        assert!(o("fd00::/8", "fd00:6e73::/48"));
        assert!(!o("fd00:6e73:0:1::/64", "fd00:6e73:0:2::/64"));
        assert!(o("::/0", "2001:db8::/32"));
        assert!(o("2001:db8::1/128", "2001:db8::/64"));
    }

    #[test]
    fn families_never_overlap() {
        assert!(!o("0.0.0.0/0", "::/0"));
        assert!(!o("10.0.0.0/8", "::ffff:10.0.0.0/104"));
    }
}
