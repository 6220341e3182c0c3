//! Family-agnostic address arithmetic.
//!
//! Every other module works on plain `u128` numbers so that IPv4 and IPv6
//! share one code path: an IPv4 address is its 32-bit value widened to
//! `u128`, an IPv6 address is its natural 128-bit value. The [`Family`] travels
//! alongside the number so it can be turned back into an [`IpAddr`].
//!
//! Inside a pool, addresses are further expressed as *offsets* from the
//! subnet's network address; the helpers here compute the geometry (base,
//! last offset) that makes that possible without ever overflowing, even for
//! an IPv6 `/0` whose size (2^128) does not fit in a `u128`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Address family of an address or prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of_addr(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub(crate) fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// Number of bits in an address of this family.
    pub(crate) fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// IPv4 subnets reserve their last address for broadcast; IPv6 has none.
    pub(crate) fn has_broadcast(self) -> bool {
        self == Family::V4
    }
}

/// The numeric value of an address.
pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Turns a number back into an address of `family`. For IPv4 the value must
/// fit in 32 bits; callers only pass values derived from an IPv4 prefix.
pub(crate) fn from_u128(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => {
            debug_assert!(value <= u128::from(u32::MAX));
            IpAddr::V4(Ipv4Addr::from(value as u32))
        }
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Highest offset inside a prefix with `host_bits` free bits, i.e. size - 1.
/// Written this way so that a 128-bit host part does not overflow.
pub(crate) fn last_offset(host_bits: u8) -> u128 {
    if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// Numeric view of a prefix: family, value of the address as written, prefix
/// length and mask of the host part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetNum {
    pub(crate) family: Family,
    /// The address as written (host bits possibly set).
    pub(crate) addr: u128,
    pub(crate) prefix_len: u8,
}

impl NetNum {
    pub(crate) fn of(net: &IpNet) -> NetNum {
        NetNum {
            family: Family::of_net(net),
            addr: to_u128(net.addr()),
            prefix_len: net.prefix_len(),
        }
    }

    pub(crate) fn host_bits(&self) -> u8 {
        self.family.bits() - self.prefix_len
    }

    /// Mask covering the host part (all ones for a `/0`).
    pub(crate) fn host_mask(&self) -> u128 {
        last_offset(self.host_bits())
    }

    /// The network address: the written address with its host bits cleared.
    pub(crate) fn base(&self) -> u128 {
        self.addr & !self.host_mask()
    }

    /// The last address of the prefix.
    pub(crate) fn last(&self) -> u128 {
        self.base() | self.host_mask()
    }

    pub(crate) fn host_bits_clear(&self) -> bool {
        self.addr & self.host_mask() == 0
    }

    pub(crate) fn contains(&self, family: Family, value: u128) -> bool {
        family == self.family && value >= self.base() && value <= self.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trips_through_u128() {
        let ip: IpAddr = "172.20.3.4".parse().unwrap();
        assert_eq!(to_u128(ip), 0xac14_0304);
        assert_eq!(from_u128(Family::V4, 0xac14_0304), ip);
    }

    #[test]
    fn v6_round_trips_through_u128() {
        let ip: IpAddr = "fd00:1::abcd".parse().unwrap();
        assert_eq!(from_u128(Family::V6, to_u128(ip)), ip);
        assert_eq!(to_u128(ip) & 0xffff, 0xabcd);
    }

    #[test]
    fn last_offset_does_not_overflow_for_whole_v6_space() {
        assert_eq!(last_offset(0), 0);
        assert_eq!(last_offset(8), 255);
        assert_eq!(last_offset(128), u128::MAX);
    }

    #[test]
    fn netnum_geometry() {
        let n = NetNum::of(&"172.20.1.0/16".parse().unwrap());
        assert_eq!(n.base(), 0xac14_0000);
        assert_eq!(n.last(), 0xac14_ffff);
        assert!(!n.host_bits_clear());
        assert!(n.contains(Family::V4, 0xac14_1234));
        assert!(!n.contains(Family::V4, 0xac15_0000));
        assert!(!n.contains(Family::V6, 0xac14_1234));

        let all = NetNum::of(&"::/0".parse().unwrap());
        assert_eq!(all.base(), 0);
        assert_eq!(all.last(), u128::MAX);
        assert!(all.host_bits_clear());
    }
}
