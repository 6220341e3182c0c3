//! Pure allocation arithmetic: the VNI range and the address walk of the cluster IPAM. No I/O:
//! the etcd side (`networks`, `ipam`) feeds these functions what it read and acts on the
//! answer, so the rules are unit-tested here without a server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::error::{ClusterError, Result};
use crate::model::OverlaySubnet;

/// Lowest VNI the cluster hands out. 0-4095 are left to VLAN-mapped and manually configured
/// segments (Docker's overlay driver starts at the same value).
pub const VNI_MIN: u32 = 4096;
/// Highest VNI: the field is 24 bits wide.
pub const VNI_MAX: u32 = 16_777_215;

/// Refuses a requested VNI outside [`VNI_MIN`]..=[`VNI_MAX`].
pub fn check_vni(vni: u32) -> Result<()> {
    if (VNI_MIN..=VNI_MAX).contains(&vni) {
        Ok(())
    } else {
        Err(ClusterError::invalid("VNI", format!("{vni} is outside {VNI_MIN}..={VNI_MAX}")))
    }
}

/// The lowest VNI not in `taken` (ascending; values outside the range are ignored), or `None`
/// when all 16 million are used.
pub fn lowest_free_vni(taken: impl IntoIterator<Item = u32>) -> Option<u32> {
    let mut candidate = VNI_MIN;
    for t in taken {
        if t < candidate {
            continue;
        }
        if t > candidate {
            break;
        }
        candidate += 1;
    }
    (candidate <= VNI_MAX).then_some(candidate)
}

/// Most subnets of an overlay network: one per address family.
pub const MAX_SUBNETS: usize = 2;

/// Checks the subnets of a network being created: one or two, at most one per address family
/// (an endpoint gets one address of each), each valid (see [`AddrSpace::new`]). Returns their
/// address spaces in the same order.
pub fn check_subnets(subnets: &[OverlaySubnet]) -> Result<Vec<AddrSpace>> {
    if subnets.is_empty() || subnets.len() > MAX_SUBNETS {
        return Err(ClusterError::invalid(
            "subnets",
            format!("{} given; an overlay network has one subnet, or one IPv4 and one IPv6 subnet", subnets.len()),
        ));
    }
    let spaces = subnets.iter().map(|s| AddrSpace::new(s.subnet, s.gateway)).collect::<Result<Vec<_>>>()?;
    if let [a, b] = subnets
        && a.subnet.addr().is_ipv4() == b.subnet.addr().is_ipv4()
    {
        return Err(ClusterError::invalid(
            "subnets",
            format!("{} and {} are of one address family; a dual-stack overlay network has one IPv4 and one IPv6 subnet", a.subnet, b.subnet),
        ));
    }
    Ok(spaces)
}

/// Matches requested addresses to the subnets they belong to: the result has one entry per
/// space, `Some` where an address of that space's family was asked for. An address of a
/// family the network has no subnet of, or two of one family, is refused (whether the address
/// is assignable in its subnet is checked by the allocation, which names the subnet).
pub fn requested_per_subnet(spaces: &[AddrSpace], requested: &[IpAddr], network: &str) -> Result<Vec<Option<IpAddr>>> {
    let mut out = vec![None; spaces.len()];
    for ip in requested {
        let Some(slot) = spaces.iter().position(|s| s.v6 == ip.is_ipv6()) else {
            let family = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
            return Err(ClusterError::invalid(format!("address {ip}"), format!("overlay network {network} has no {family} subnet")));
        };
        if let Some(first) = out[slot].replace(*ip) {
            return Err(ClusterError::invalid(format!("address {ip}"), format!("{first} is asked for too; an endpoint gets one address per family")));
        }
    }
    Ok(out)
}

/// The addresses of an overlay subnet that endpoints may get: every host address except the
/// network address, the IPv4 broadcast address and the gateway. Values are the addresses as
/// numbers (IPv4 widened to `u128`), so one walk serves both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrSpace {
    v6: bool,
    /// First usable address (network address + 1).
    pub first: u128,
    /// Last usable address (broadcast - 1 for IPv4, the last address for IPv6).
    pub last: u128,
    pub gateway: u128,
}

impl AddrSpace {
    /// Validates `subnet` and `gateway` with the same rules as local networks (hns-ipam): no
    /// host bits in the subnet, at least two host addresses, gateway a host address inside it.
    pub fn new(subnet: IpNet, gateway: IpAddr) -> Result<AddrSpace> {
        let spec = hns_ipam::PoolSpec { subnet, gateway: Some(gateway), range: None, reserved: Vec::new() };
        hns_ipam::Pool::new(&spec).map_err(|e| ClusterError::invalid(format!("subnet {subnet}"), e))?;
        let v6 = matches!(subnet, IpNet::V6(_));
        let base = value(subnet.network());
        let top = value(subnet.broadcast());
        Ok(AddrSpace { v6, first: base + 1, last: if v6 { top } else { top - 1 }, gateway: value(gateway) })
    }

    /// Whether `ip` may be given to an endpoint.
    pub fn is_assignable(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.v6 && (self.first..=self.last).contains(&value(ip)) && value(ip) != self.gateway
    }

    /// Where the walk for `seed` (an endpoint id) starts: a hash of the seed spread over the
    /// usable range. Hosts allocating at the same time start at different places, so they
    /// rarely race for the same key; the same endpoint id starts at the same place every time.
    pub fn start_for(&self, seed: &str) -> u128 {
        let size = self.last - self.first + 1;
        self.first + u128::from(fnv1a(seed.as_bytes())) % size
    }

    /// Whether `ip` is of this space's family (keys of both families share one prefix).
    pub fn same_family(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.v6
    }

    pub fn ip(&self, v: u128) -> IpAddr {
        if self.v6 { IpAddr::V6(Ipv6Addr::from(v)) } else { IpAddr::V4(Ipv4Addr::from(v as u32)) }
    }
}

/// An address as a number.
pub fn value(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// FNV-1a: tiny, stable across Rust releases (unlike `DefaultHasher`), good enough to spread
/// start points.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// What one window of taken addresses tells the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// This address is free (as far as the read showed): try to reserve it.
    Free(u128),
    /// The window held only taken addresses; read the next window from here.
    Continue(u128),
    /// Nothing free up to the end of this stretch.
    End,
}

/// Finds the first assignable address at or after `cursor` and at most `end`, given the taken
/// addresses of that stretch in ascending order as one bounded range read returned them;
/// `complete` says the read returned every taken address up to `end` (etcd's `more` was false).
pub fn find_gap(space: &AddrSpace, cursor: u128, end: u128, taken: &[u128], complete: bool) -> Gap {
    let mut c = cursor;
    let mut taken = taken.iter().copied().peekable();
    loop {
        if c > end {
            return Gap::End;
        }
        if c == space.gateway {
            match c.checked_add(1) {
                Some(n) => c = n,
                None => return Gap::End,
            }
            continue;
        }
        match taken.peek().copied() {
            Some(t) if t < c => {
                taken.next();
            }
            Some(t) if t == c => {
                taken.next();
                match c.checked_add(1) {
                    Some(n) => c = n,
                    None => return Gap::End,
                }
            }
            Some(_) => return Gap::Free(c),
            None if complete => return Gap::Free(c),
            None => return Gap::Continue(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(net: &str, gw: &str) -> AddrSpace {
        AddrSpace::new(net.parse().unwrap(), gw.parse().unwrap()).unwrap()
    }

    fn v(ip: &str) -> u128 {
        value(ip.parse().unwrap())
    }

    #[test]
    fn vni_range_and_lowest_free() {
        assert!(check_vni(4095).is_err());
        assert!(check_vni(4096).is_ok());
        assert!(check_vni(16_777_215).is_ok());
        assert!(check_vni(16_777_216).unwrap_err().to_string().contains("4096..=16777215"));
        assert_eq!(lowest_free_vni([]), Some(4096));
        assert_eq!(lowest_free_vni([4096, 4097, 4099]), Some(4098));
        assert_eq!(lowest_free_vni([42, 4097]), Some(4096));
        assert_eq!(lowest_free_vni(VNI_MIN..=VNI_MAX), None);
    }

    #[test]
    fn space_skips_network_broadcast_and_gateway() {
        let s = space("10.200.0.0/24", "10.200.0.1");
        assert_eq!(s.first, v("10.200.0.1"));
        assert_eq!(s.last, v("10.200.0.254"));
        assert!(!s.is_assignable("10.200.0.1".parse().unwrap()));
        assert!(s.is_assignable("10.200.0.2".parse().unwrap()));
        assert!(!s.is_assignable("10.200.0.255".parse().unwrap()));
        assert!(!s.is_assignable("10.200.1.2".parse().unwrap()));
        assert!(!s.is_assignable("fd00::2".parse().unwrap()));
        let s6 = space("fd00:5::/120", "fd00:5::1");
        assert_eq!(s6.last, v("fd00:5::ff"));
    }

    #[test]
    fn invalid_subnets_are_refused_with_the_ipam_rules() {
        assert!(AddrSpace::new("10.0.0.1/24".parse().unwrap(), "10.0.0.1".parse().unwrap()).is_err());
        assert!(AddrSpace::new("10.0.0.0/24".parse().unwrap(), "10.0.1.1".parse().unwrap()).is_err());
        assert!(AddrSpace::new("10.0.0.0/31".parse().unwrap(), "10.0.0.1".parse().unwrap()).is_err());
    }

    fn sub(net: &str, gw: &str) -> OverlaySubnet {
        OverlaySubnet { subnet: net.parse().unwrap(), gateway: gw.parse().unwrap() }
    }

    #[test]
    fn a_network_has_one_subnet_or_one_per_family() {
        assert_eq!(check_subnets(&[sub("fd00:5::/64", "fd00:5::1")]).unwrap().len(), 1);
        let both = check_subnets(&[sub("10.0.0.0/24", "10.0.0.1"), sub("fd00:5::/64", "fd00:5::1")]).unwrap();
        assert_eq!(both[1].ip(both[1].first).to_string(), "fd00:5::1");
        let e = check_subnets(&[sub("10.0.0.0/24", "10.0.0.1"), sub("10.1.0.0/24", "10.1.0.1")]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/24 and 10.1.0.0/24 are of one address family"), "{e}");
        let e = check_subnets(&[sub("fd00:5::/64", "fd00:5::1"), sub("fd00:6::/64", "fd00:6::1")]).unwrap_err();
        assert!(e.to_string().contains("one IPv4 and one IPv6 subnet"), "{e}");
        assert!(check_subnets(&[]).unwrap_err().to_string().contains("0 given"));
        let three = [sub("10.0.0.0/24", "10.0.0.1"), sub("fd00:5::/64", "fd00:5::1"), sub("10.1.0.0/24", "10.1.0.1")];
        assert!(check_subnets(&three).unwrap_err().to_string().contains("3 given"));
        // Each subnet is checked with the IPAM rules: a gateway outside its IPv6 subnet.
        assert!(check_subnets(&[sub("10.0.0.0/24", "10.0.0.1"), sub("fd00:5::/64", "fd00:6::1")]).is_err());
    }

    #[test]
    fn requested_addresses_go_to_the_subnet_of_their_family() {
        let dual = check_subnets(&[sub("10.0.0.0/24", "10.0.0.1"), sub("fd00:5::/64", "fd00:5::1")]).unwrap();
        let (v4, v6): (IpAddr, IpAddr) = ("10.0.0.7".parse().unwrap(), "fd00:5::7".parse().unwrap());
        assert_eq!(requested_per_subnet(&dual, &[v6, v4], "ov").unwrap(), vec![Some(v4), Some(v6)]);
        assert_eq!(requested_per_subnet(&dual, &[v6], "ov").unwrap(), vec![None, Some(v6)]);
        assert_eq!(requested_per_subnet(&dual, &[], "ov").unwrap(), vec![None, None]);
        let e = requested_per_subnet(&dual, &[v6, "fd00:5::8".parse().unwrap()], "ov").unwrap_err();
        assert!(e.to_string().contains("one address per family"), "{e}");
        let only6 = check_subnets(&[sub("fd00:5::/64", "fd00:5::1")]).unwrap();
        let e = requested_per_subnet(&only6, &[v4], "ov").unwrap_err();
        assert!(e.to_string().contains("address 10.0.0.7") && e.to_string().contains("has no IPv4 subnet"), "{e}");
    }

    #[test]
    fn ipv6_walk_skips_the_gateway_and_keeps_the_last_address() {
        // IPv6 has no broadcast: the last address of the subnet is assignable.
        let s = space("fd00:5::/125", "fd00:5::1"); // usable ::2 - ::7
        assert!(s.is_assignable("fd00:5::7".parse().unwrap()));
        assert!(!s.is_assignable("fd00:5::".parse().unwrap()) && !s.is_assignable("fd00:5::1".parse().unwrap()));
        assert!(!s.is_assignable("10.0.0.2".parse().unwrap()));
        let taken: Vec<u128> = ["fd00:5::2", "fd00:5::3"].iter().map(|a| v(a)).collect();
        assert_eq!(find_gap(&s, s.first, s.last, &taken, true), Gap::Free(v("fd00:5::4")));
        let all: Vec<u128> = (v("fd00:5::2")..=v("fd00:5::7")).collect();
        assert_eq!(find_gap(&s, s.first, s.last, &all, true), Gap::End);
        // A /64 is walked without overflow, from a hashed start point inside it.
        let big = space("fd00:6::/64", "fd00:6::1");
        let start = big.start_for("ep-1");
        assert!((big.first..=big.last).contains(&start));
        assert_eq!(find_gap(&big, big.last, big.last, &[], true), Gap::Free(big.last));
        let top = space("ffff:ffff:ffff:ffff::/64", "ffff:ffff:ffff:ffff::1");
        assert_eq!(find_gap(&top, top.last, top.last, &[top.last], true), Gap::End);
    }

    #[test]
    fn start_points_spread_over_the_range_and_are_stable() {
        let s = space("10.200.0.0/16", "10.200.0.1");
        let starts: std::collections::BTreeSet<u128> = (0..100).map(|i| s.start_for(&format!("ep-{i}"))).collect();
        assert!(starts.len() > 95, "hash start points collide too often: {}", starts.len());
        assert!(starts.iter().all(|x| (s.first..=s.last).contains(x)));
        assert_eq!(s.start_for("ep-1"), s.start_for("ep-1"));
    }

    #[test]
    fn gap_walk() {
        let s = space("10.0.0.0/29", "10.0.0.1"); // usable .2 - .6
        let (first, last) = (s.first, s.last);
        // Empty window: the cursor itself, but never the gateway.
        assert_eq!(find_gap(&s, first, last, &[], true), Gap::Free(v("10.0.0.2")));
        // Taken run after the cursor.
        assert_eq!(find_gap(&s, v("10.0.0.2"), last, &[v("10.0.0.2"), v("10.0.0.3"), v("10.0.0.5")], true), Gap::Free(v("10.0.0.4")));
        // A partial window that held only taken addresses asks for more.
        assert_eq!(find_gap(&s, v("10.0.0.2"), last, &[v("10.0.0.2"), v("10.0.0.3")], false), Gap::Continue(v("10.0.0.4")));
        // Full to the end.
        let all: Vec<u128> = (v("10.0.0.2")..=v("10.0.0.6")).collect();
        assert_eq!(find_gap(&s, v("10.0.0.2"), last, &all, true), Gap::End);
        // Stops at `end` even when the read went past it.
        assert_eq!(find_gap(&s, v("10.0.0.2"), v("10.0.0.3"), &[v("10.0.0.2"), v("10.0.0.3")], true), Gap::End);
    }

    #[test]
    fn gap_walk_never_hands_out_a_taken_address() {
        // Exhaustive over a /28: every taken set that a bounded read may return.
        let s = space("10.0.0.0/28", "10.0.0.9");
        for mask in 0u32..(1 << 14) {
            let taken: Vec<u128> = (0..14).filter(|b| mask & (1 << b) != 0).map(|b| s.first + b as u128).collect();
            match find_gap(&s, s.first, s.last, &taken, true) {
                Gap::Free(a) => {
                    assert!(!taken.contains(&a) && a != s.gateway && (s.first..=s.last).contains(&a));
                    assert!((s.first..a).all(|x| x == s.gateway || taken.contains(&x)), "not the first free");
                }
                Gap::End => assert!((s.first..=s.last).all(|x| x == s.gateway || taken.contains(&x))),
                Gap::Continue(_) => panic!("complete read must not ask for more"),
            }
        }
    }
}
