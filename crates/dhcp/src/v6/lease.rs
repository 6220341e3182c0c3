//! A DHCPv6 lease as hnsd stores and shows it, and the container's DHCPv6 identity.

use std::net::Ipv6Addr;
use std::time::{Duration, SystemTime};

use mozim::{DhcpV6Duid, DhcpV6DuidLinkLayerAddr, DhcpV6Lease};
use serde::{Deserialize, Serialize};

use crate::lease::{rfc3339, whole_secs};

/// One IA_NA address leased to a container (RFC 8415 21.4/21.6). DHCPv6 gives no prefix
/// length: the address is configured as a /128 and on-link prefixes and routes come from
/// the LAN's router advertisements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease6 {
    pub address: Ipv6Addr,
    /// Where the server's Reply came from (its link-local address, as a rule).
    pub server: Ipv6Addr,
    pub dns_servers: Vec<Ipv6Addr>,
    pub domains: Vec<String>,
    /// Renew time (T1), from `obtained_at`.
    #[serde(with = "whole_secs")]
    pub t1: Duration,
    /// Rebind time (T2), from `obtained_at`.
    #[serde(with = "whole_secs")]
    pub t2: Duration,
    #[serde(with = "whole_secs")]
    pub preferred_lifetime: Duration,
    #[serde(with = "whole_secs")]
    pub valid_lifetime: Duration,
    /// When the Reply granting (or extending) it arrived.
    #[serde(with = "rfc3339")]
    pub obtained_at: SystemTime,
}

impl Lease6 {
    pub(crate) fn from_mozim(l: &DhcpV6Lease, obtained_at: SystemTime) -> Lease6 {
        let secs = |s: u32| Duration::from_secs(s.into());
        Lease6 {
            address: l.address,
            server: l.srv_ip,
            dns_servers: l.dns_srvs.clone(),
            domains: l.domain_list.clone(),
            t1: secs(l.t1_sec),
            t2: secs(l.t2_sec),
            preferred_lifetime: secs(l.preferred_time_sec),
            valid_lifetime: secs(l.valid_time_sec),
            obtained_at,
        }
    }

    pub fn expires_at(&self) -> SystemTime {
        self.obtained_at + self.valid_lifetime
    }

    /// Same address and options: nothing in the container needs to change (a renewal).
    pub fn same_config(&self, other: &Lease6) -> bool {
        self.address == other.address && self.dns_servers == other.dns_servers && self.domains == other.domains
    }
}

/// ARP hardware type of Ethernet (RFC 826), the link-layer type in the DUID.
const HW_ETHERNET: u16 = 1;

/// The container's DUID: DUID-LL (RFC 8415 11.4) of its MAC, `00:03:00:01:<mac>`. The MAC is
/// the container's and stays with its endpoint, so the server files the lease under the
/// container and hands the same binding back after an hnsd restart. (It must be mozim's typed
/// variant, not the same bytes as `Raw`: mozim matches Replies to the client by comparing
/// its parsed client-id with this value.)
pub(crate) fn duid(mac: [u8; 6]) -> DhcpV6Duid {
    DhcpV6Duid::LinkLayerAddress(DhcpV6DuidLinkLayerAddr::new(HW_ETHERNET, &mac))
}

/// The IAID of the container's one IA_NA: the low 4 bytes of its MAC. RFC 8415 12 asks for
/// an IAID that stays the same across client restarts; the MAC gives one without storage.
pub fn iaid(mac: [u8; 6]) -> u32 {
    u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a];

    #[test]
    fn iaid_is_the_low_bytes_of_the_mac() {
        assert_eq!(iaid(MAC), 0x5e10_000a);
    }

    fn sample() -> Lease6 {
        let mut m = DhcpV6Lease::default();
        m.address = "2001:db8:77::1a0".parse().unwrap();
        m.srv_ip = "fe80::1".parse().unwrap();
        m.dns_srvs = vec!["2001:db8:77::1".parse().unwrap()];
        (m.t1_sec, m.t2_sec, m.preferred_time_sec, m.valid_time_sec) = (60, 105, 120, 120);
        Lease6::from_mozim(&m, UNIX_EPOCH + Duration::from_secs(1000))
    }

    #[test]
    fn takes_times_and_options_from_mozim_and_round_trips_through_json() {
        let l = sample();
        assert_eq!(l.t1, Duration::from_secs(60));
        assert_eq!(l.expires_at(), UNIX_EPOCH + Duration::from_secs(1120));
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["address"], "2001:db8:77::1a0");
        assert_eq!(json["valid_lifetime"], 120);
        assert_eq!(json["obtained_at"], "1970-01-01T00:16:40Z");
        assert_eq!(serde_json::from_value::<Lease6>(json).unwrap(), l);
    }

    #[test]
    fn a_renewal_is_the_same_config_a_new_address_is_not() {
        let l = sample();
        let renewed = Lease6 { obtained_at: l.obtained_at + l.t1, ..l.clone() };
        assert!(l.same_config(&renewed));
        let moved = Lease6 { address: "2001:db8:77::1a1".parse().unwrap(), ..l.clone() };
        assert!(!l.same_config(&moved));
    }
}
