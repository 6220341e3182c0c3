//! What a network's subnet asks for, and the checks that turn such a request
//! into a consistent pool geometry.
//!
//! Validation lives apart from the allocator so that the allocator can assume
//! its invariants (gateway and auxiliary addresses are host addresses of the
//! subnet, the range is inside the subnet, ...) instead of re-checking them on
//! every call. Everything is converted to offsets from the subnet's network
//! address here, once.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::addr::{self, Family, NetNum};
use crate::error::{IpamError, SpecialAddress};

/// What a subnet of a network asks for, already parsed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// The subnet, e.g. `172.20.0.0/16` or `fd00:1::/64`. Host bits must be zero.
    pub subnet: IpNet,
    /// The gateway; `None` means the first host address of the subnet.
    pub gateway: Option<IpAddr>,
    /// Dynamic allocation happens only inside this prefix (docker `--ip-range`).
    pub range: Option<IpNet>,
    /// Auxiliary addresses that are never handed out (docker `--aux-address`).
    pub reserved: Vec<IpAddr>,
}

impl PoolSpec {
    /// A spec with only a subnet: default gateway, no range, no auxiliary addresses.
    pub fn new(subnet: IpNet) -> PoolSpec {
        PoolSpec {
            subnet,
            gateway: None,
            range: None,
            reserved: Vec::new(),
        }
    }
}

/// Longest prefix that still leaves two usable host addresses: IPv4 loses the
/// network and broadcast addresses, IPv6 only the network (subnet-router
/// anycast) address.
pub(crate) fn max_prefix_len(family: Family) -> u8 {
    match family {
        Family::V4 => 30,
        Family::V6 => 126,
    }
}

/// A validated spec, expressed as offsets from the subnet's network address.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) subnet: IpNet,
    pub(crate) range: Option<IpNet>,
    pub(crate) family: Family,
    /// Numeric value of the network address.
    pub(crate) base: u128,
    /// Offset of the last address of the subnet.
    pub(crate) last: u128,
    /// Offset of the gateway.
    pub(crate) gateway: u128,
    /// First and last offset of the dynamic allocation window (inclusive).
    pub(crate) window_lo: u128,
    pub(crate) window_hi: u128,
    /// Offsets of the auxiliary addresses.
    pub(crate) aux: BTreeSet<u128>,
}

impl Layout {
    /// The offset of `ip` if it lies inside the subnet.
    pub(crate) fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        let family = Family::of_addr(ip);
        let value = addr::to_u128(ip);
        if family != self.family {
            return None;
        }
        let offset = value.checked_sub(self.base)?;
        (offset <= self.last).then_some(offset)
    }

    /// The address at `offset` (which must be inside the subnet).
    pub(crate) fn addr_at(&self, offset: u128) -> IpAddr {
        addr::from_u128(self.family, self.base + offset)
    }

    /// Whether the offset is the network or (IPv4) broadcast address.
    pub(crate) fn special(&self, offset: u128) -> Option<SpecialAddress> {
        if offset == 0 {
            Some(SpecialAddress::Network)
        } else if self.family.has_broadcast() && offset == self.last {
            Some(SpecialAddress::Broadcast)
        } else {
            None
        }
    }

    /// The dynamic allocation window as a prefix (the range, else the subnet).
    pub(crate) fn window_net(&self) -> IpNet {
        self.range.unwrap_or(self.subnet)
    }
}

/// Checks a spec and computes its layout. The order of checks is subnet,
/// gateway, range, auxiliary addresses, so the first error reported is the
/// most fundamental one.
pub(crate) fn validate(spec: &PoolSpec) -> Result<Layout, IpamError> {
    let subnet = spec.subnet;
    let net = NetNum::of(&subnet);
    if !net.host_bits_clear() {
        return Err(IpamError::SubnetHostBitsSet {
            given: subnet,
            canonical: subnet.trunc(),
        });
    }
    let max = max_prefix_len(net.family);
    if net.prefix_len > max {
        return Err(IpamError::SubnetTooSmall {
            subnet,
            max_prefix_len: max,
        });
    }

    let mut layout = Layout {
        subnet,
        range: spec.range,
        family: net.family,
        base: net.base(),
        last: net.host_mask(),
        gateway: 1,
        window_lo: 0,
        window_hi: net.host_mask(),
        aux: BTreeSet::new(),
    };

    if let Some(gateway) = spec.gateway {
        let offset = layout
            .offset_of(gateway)
            .ok_or(IpamError::GatewayOutsideSubnet { gateway, subnet })?;
        if let Some(what) = layout.special(offset) {
            return Err(IpamError::GatewayNotHost {
                gateway,
                subnet,
                what,
            });
        }
        layout.gateway = offset;
    }

    if let Some(range) = spec.range {
        let r = NetNum::of(&range);
        if r.family == net.family && !r.host_bits_clear() {
            return Err(IpamError::RangeHostBitsSet {
                given: range,
                canonical: range.trunc(),
            });
        }
        if r.family != net.family
            || r.prefix_len < net.prefix_len
            || !net.contains(r.family, r.base())
        {
            return Err(IpamError::RangeOutsideSubnet { range, subnet });
        }
        layout.window_lo = r.base() - layout.base;
        layout.window_hi = r.last() - layout.base;
    }

    for &address in &spec.reserved {
        let offset = layout
            .offset_of(address)
            .ok_or(IpamError::AuxOutsideSubnet { address, subnet })?;
        if let Some(what) = layout.special(offset) {
            return Err(IpamError::AuxNotHost {
                address,
                subnet,
                what,
            });
        }
        if offset == layout.gateway {
            return Err(IpamError::AuxIsGateway { address, subnet });
        }
        // Listing the same auxiliary address twice is harmless: keep one.
        layout.aux.insert(offset);
    }

    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::error::IpamErrorKind;

    fn err(spec: &PoolSpec) -> IpamError {
        validate(spec).expect_err("spec should be refused")
    }

    #[test]
    fn host_bits_set_names_canonical_form() {
        let e = err(&PoolSpec::new(net("172.20.1.0/16")));
        assert_eq!(e.kind(), IpamErrorKind::InvalidSubnet);
        assert_eq!(
            e.to_string(),
            "subnet 172.20.1.0/16 has host bits set; did you mean 172.20.0.0/16?"
        );
        let e = err(&PoolSpec::new(net("fd00:1::5/64")));
        assert!(e.to_string().contains("did you mean fd00:1::/64?"), "{e}");
    }

    #[test]
    fn v4_prefixes_31_and_32_refused_30_accepted() {
        for p in ["10.0.0.0/31", "10.0.0.0/32"] {
            let e = err(&PoolSpec::new(net(p)));
            assert_eq!(e.kind(), IpamErrorKind::InvalidSubnet);
            let msg = e.to_string();
            assert!(msg.contains(p) && msg.contains("/30 or shorter"), "{msg}");
        }
        assert!(validate(&PoolSpec::new(net("10.0.0.0/30"))).is_ok());
    }

    #[test]
    fn v6_prefixes_127_and_128_refused_126_accepted() {
        for p in ["fd00::/127", "fd00::/128"] {
            let e = err(&PoolSpec::new(net(p)));
            assert_eq!(e.kind(), IpamErrorKind::InvalidSubnet);
            assert!(e.to_string().contains("/126 or shorter"), "{e}");
        }
        assert!(validate(&PoolSpec::new(net("fd00::/126"))).is_ok());
    }

    #[test]
    fn default_gateway_is_first_host() {
        let l = validate(&PoolSpec::new(net("172.20.0.0/16"))).unwrap();
        assert_eq!(l.addr_at(l.gateway), ip("172.20.0.1"));
        let l = validate(&PoolSpec::new(net("fd00:1::/64"))).unwrap();
        assert_eq!(l.addr_at(l.gateway), ip("fd00:1::1"));
    }

    #[test]
    fn gateway_outside_subnet_refused() {
        let mut spec = PoolSpec::new(net("172.20.0.0/16"));
        spec.gateway = Some(ip("172.21.0.1"));
        let e = err(&spec);
        assert_eq!(e.kind(), IpamErrorKind::InvalidGateway);
        assert!(
            e.to_string()
                .starts_with("gateway 172.21.0.1 is outside subnet 172.20.0.0/16;"),
            "{e}"
        );
        spec.gateway = Some(ip("fd00::1"));
        assert_eq!(err(&spec).kind(), IpamErrorKind::InvalidGateway);
    }

    #[test]
    fn gateway_network_or_broadcast_refused() {
        let mut spec = PoolSpec::new(net("172.20.0.0/16"));
        spec.gateway = Some(ip("172.20.0.0"));
        let e = err(&spec);
        assert_eq!(e.kind(), IpamErrorKind::InvalidGateway);
        assert!(
            e.to_string()
                .contains("is the network address of 172.20.0.0/16"),
            "{e}"
        );
        spec.gateway = Some(ip("172.20.255.255"));
        let e = err(&spec);
        assert_eq!(e.kind(), IpamErrorKind::InvalidGateway);
        assert!(e.to_string().contains("is the broadcast address of"), "{e}");
    }

    #[test]
    fn v6_last_address_is_a_valid_gateway_but_network_is_not() {
        let mut spec = PoolSpec::new(net("fd00:1::/120"));
        spec.gateway = Some(ip("fd00:1::ff"));
        let l = validate(&spec).unwrap();
        assert_eq!(l.gateway, 0xff);
        spec.gateway = Some(ip("fd00:1::"));
        assert_eq!(err(&spec).kind(), IpamErrorKind::InvalidGateway);
    }

    #[test]
    fn range_must_be_inside_subnet() {
        let mut spec = PoolSpec::new(net("172.20.0.0/16"));
        spec.range = Some(net("172.20.5.0/24"));
        let l = validate(&spec).unwrap();
        assert_eq!((l.window_lo, l.window_hi), (0x500, 0x5ff));

        for bad in ["172.21.0.0/24", "172.0.0.0/8", "fd00::/64"] {
            spec.range = Some(net(bad));
            let e = err(&spec);
            assert_eq!(e.kind(), IpamErrorKind::InvalidRange, "{bad}");
            assert!(
                e.to_string().starts_with(&format!(
                    "ip range {bad} is not inside subnet 172.20.0.0/16"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn range_with_host_bits_names_canonical_form() {
        let mut spec = PoolSpec::new(net("172.20.0.0/16"));
        spec.range = Some(net("172.20.5.7/24"));
        let e = err(&spec);
        assert_eq!(e.kind(), IpamErrorKind::InvalidRange);
        assert!(e.to_string().contains("did you mean 172.20.5.0/24?"), "{e}");
    }

    #[test]
    fn range_equal_to_subnet_is_fine() {
        let mut spec = PoolSpec::new(net("172.20.0.0/16"));
        spec.range = Some(net("172.20.0.0/16"));
        let l = validate(&spec).unwrap();
        assert_eq!((l.window_lo, l.window_hi), (0, 0xffff));
    }

    #[test]
    fn aux_rules() {
        let base = PoolSpec::new(net("172.20.0.0/24"));
        let with = |a: &str| {
            let mut s = base.clone();
            s.reserved = vec![ip(a)];
            s
        };
        let e = err(&with("172.21.0.9"));
        assert_eq!(e.kind(), IpamErrorKind::InvalidAux);
        assert!(
            e.to_string()
                .contains("172.21.0.9 is outside subnet 172.20.0.0/24"),
            "{e}"
        );

        let e = err(&with("172.20.0.1"));
        assert_eq!(e.kind(), IpamErrorKind::InvalidAux);
        assert!(
            e.to_string()
                .contains("172.20.0.1 is the gateway of 172.20.0.0/24"),
            "{e}"
        );

        let e = err(&with("172.20.0.0"));
        assert_eq!(e.kind(), IpamErrorKind::InvalidAux);
        assert!(e.to_string().contains("is the network address"), "{e}");

        let e = err(&with("172.20.0.255"));
        assert_eq!(e.kind(), IpamErrorKind::InvalidAux);
        assert!(e.to_string().contains("is the broadcast address"), "{e}");

        let e = err(&with("fd00::5"));
        assert_eq!(e.kind(), IpamErrorKind::InvalidAux);

        let mut ok = with("172.20.0.9");
        ok.reserved.push(ip("172.20.0.9"));
        let l = validate(&ok).unwrap();
        assert_eq!(l.aux.iter().copied().collect::<Vec<_>>(), vec![9]);
    }

    #[test]
    fn aux_is_checked_against_explicit_gateway() {
        let mut spec = PoolSpec::new(net("172.20.0.0/24"));
        spec.gateway = Some(ip("172.20.0.254"));
        spec.reserved = vec![ip("172.20.0.1")];
        assert!(validate(&spec).is_ok());
        spec.reserved = vec![ip("172.20.0.254")];
        assert_eq!(err(&spec).kind(), IpamErrorKind::InvalidAux);
    }

    #[test]
    fn whole_v6_space_does_not_overflow() {
        let l = validate(&PoolSpec::new(net("::/0"))).unwrap();
        assert_eq!(l.last, u128::MAX);
        assert_eq!(
            l.offset_of(ip("ffff::1")),
            Some(addr::to_u128(ip("ffff::1")))
        );
    }
}
