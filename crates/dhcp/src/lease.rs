//! [`Lease`]: what a DHCPACK granted, in the form hnsd stores, shows and programs.
//!
//! Built from two sources: mozim's `DhcpV4Lease` (DISCOVER and INIT-REBOOT exchanges) and a
//! DHCPACK decoded by dhcproto (the renew/rebind exchanges this crate does itself). Both
//! follow the same rules, so a renewed lease compares equal to the original except for its
//! times.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use dhcproto::v4::{self, DhcpOption, OptionCode};
use serde::{Deserialize, Serialize};

/// A DHCPv4 lease held for a container MAC.
///
/// Serialized with durations as whole seconds and `obtained_at` as RFC 3339 (UTC, seconds),
/// e.g. `{"address":"198.51.100.76","prefix_len":24,...,"lease_time":120,"t1":60,"t2":105,
/// "obtained_at":"2026-11-23T04:28:26Z"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// Default gateway: the 0.0.0.0/0 classless route (option 121) if the server sent one,
    /// else the first router (option 3), as RFC 3442 asks.
    pub gateway: Option<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// Server identifier (option 54): where renewals and the release go.
    pub server: Ipv4Addr,
    #[serde(with = "whole_secs")]
    pub lease_time: Duration,
    /// Renewal time (T1), from `obtained_at`.
    #[serde(with = "whole_secs")]
    pub t1: Duration,
    /// Rebinding time (T2), from `obtained_at`.
    #[serde(with = "whole_secs")]
    pub t2: Duration,
    /// When the request that got this lease was sent (RFC 2131 counts lease times from
    /// there, so the client never believes in a lease longer than the server does).
    #[serde(with = "rfc3339")]
    pub obtained_at: SystemTime,
}

impl Lease {
    pub fn renew_at(&self) -> SystemTime {
        self.obtained_at + self.t1
    }

    pub fn rebind_at(&self) -> SystemTime {
        self.obtained_at + self.t2
    }

    pub fn expires_at(&self) -> SystemTime {
        self.obtained_at + self.lease_time
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at()
    }

    /// True if `other` would program the container the same way (address, prefix, gateway,
    /// DNS, domain); a renewal normally only moves the times.
    pub fn same_config(&self, other: &Lease) -> bool {
        self.address == other.address
            && self.prefix_len == other.prefix_len
            && self.gateway == other.gateway
            && self.dns_servers == other.dns_servers
            && self.domain == other.domain
    }

    pub(crate) fn from_mozim(
        l: &mozim::DhcpV4Lease,
        obtained_at: SystemTime,
    ) -> Result<Lease, String> {
        let default_route = l.classless_routes.as_ref().and_then(|routes| {
            routes
                .iter()
                .find(|r| r.prefix_length == 0)
                .map(|r| r.router)
        });
        let fields = Fields {
            address: l.yiaddr,
            mask: (!l.subnet_mask.is_unspecified()).then_some(l.subnet_mask),
            classless_default: default_route,
            has_classless: l.classless_routes.is_some(),
            routers: l.gateways.clone().unwrap_or_default(),
            dns_servers: l.dns_srvs.clone().unwrap_or_default(),
            domain: l.domain_name.clone(),
            server: if l.srv_id.is_unspecified() {
                l.siaddr
            } else {
                l.srv_id
            },
            lease_time: Some(l.lease_time_sec),
            t1: Some(l.t1_sec),
            t2: Some(l.t2_sec),
        };
        fields.into_lease(obtained_at)
    }

    /// From a DHCPACK decoded by dhcproto.
    pub(crate) fn from_ack(msg: &v4::Message, obtained_at: SystemTime) -> Result<Lease, String> {
        let opts = msg.opts();
        let classless = match opts.get(OptionCode::ClasslessStaticRoute) {
            Some(DhcpOption::ClasslessStaticRoute(routes)) => Some(routes),
            _ => None,
        };
        let fields = Fields {
            address: msg.yiaddr(),
            mask: match opts.get(OptionCode::SubnetMask) {
                Some(DhcpOption::SubnetMask(m)) => Some(*m),
                _ => None,
            },
            classless_default: classless.and_then(|r| {
                r.iter()
                    .find(|(net, _)| net.prefix_len() == 0)
                    .map(|(_, gw)| *gw)
            }),
            has_classless: classless.is_some(),
            routers: match opts.get(OptionCode::Router) {
                Some(DhcpOption::Router(r)) => r.clone(),
                _ => Vec::new(),
            },
            dns_servers: match opts.get(OptionCode::DomainNameServer) {
                Some(DhcpOption::DomainNameServer(d)) => d.clone(),
                _ => Vec::new(),
            },
            domain: match opts.get(OptionCode::DomainName) {
                Some(DhcpOption::DomainName(d)) => Some(d.clone()),
                _ => None,
            },
            server: match opts.get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => *s,
                _ => msg.siaddr(),
            },
            lease_time: match opts.get(OptionCode::AddressLeaseTime) {
                Some(DhcpOption::AddressLeaseTime(t)) => Some(*t),
                _ => None,
            },
            t1: match opts.get(OptionCode::Renewal) {
                Some(DhcpOption::Renewal(t)) => Some(*t),
                _ => None,
            },
            t2: match opts.get(OptionCode::Rebinding) {
                Some(DhcpOption::Rebinding(t)) => Some(*t),
                _ => None,
            },
        };
        fields.into_lease(obtained_at)
    }

    /// A mozim lease carrying what INIT-REBOOT and DHCPRELEASE read: the address and the
    /// server. mozim's type is `#[non_exhaustive]` and keeps the server's MAC private, so it
    /// can only be built from `Default`; the MAC stays broadcast (see keeper.rs on release).
    pub(crate) fn to_mozim(&self) -> mozim::DhcpV4Lease {
        let mut l = mozim::DhcpV4Lease::default();
        l.yiaddr = self.address;
        l.siaddr = self.server;
        l.srv_id = self.server;
        l.subnet_mask = prefix_to_mask(self.prefix_len);
        l.lease_time_sec = secs_u32(self.lease_time);
        l.t1_sec = secs_u32(self.t1);
        l.t2_sec = secs_u32(self.t2);
        l
    }
}

/// The options both sources share, before the checks.
struct Fields {
    address: Ipv4Addr,
    mask: Option<Ipv4Addr>,
    classless_default: Option<Ipv4Addr>,
    has_classless: bool,
    routers: Vec<Ipv4Addr>,
    dns_servers: Vec<Ipv4Addr>,
    domain: Option<String>,
    server: Ipv4Addr,
    lease_time: Option<u32>,
    t1: Option<u32>,
    t2: Option<u32>,
}

impl Fields {
    fn into_lease(self, obtained_at: SystemTime) -> Result<Lease, String> {
        if self.address.is_unspecified() {
            return Err("no address (yiaddr is 0.0.0.0)".into());
        }
        let mask = self.mask.ok_or("no subnet mask (option 1)")?;
        let prefix_len =
            mask_to_prefix(mask).ok_or_else(|| format!("subnet mask {mask} is not contiguous"))?;
        if prefix_len == 0 {
            return Err("subnet mask 0.0.0.0".into());
        }
        let lease_secs = self.lease_time.ok_or("no lease time (option 51)")?;
        if lease_secs == 0 {
            return Err("lease time 0".into());
        }
        // RFC 2131 4.4.5: T1 defaults to half the lease, T2 to 7/8; values that break
        // T1 < T2 < lease are replaced by the defaults rather than trusted.
        let default_t1 = lease_secs / 2;
        let default_t2 = (u64::from(lease_secs) * 7 / 8) as u32;
        let (mut t1, mut t2) = (self.t1.unwrap_or(default_t1), self.t2.unwrap_or(default_t2));
        if t2 == 0 || t2 >= lease_secs {
            t2 = default_t2;
        }
        if t1 == 0 || t1 >= t2 {
            t1 = default_t1.min(t2.saturating_sub(1));
        }
        // RFC 3442: with classless routes present, the router option is ignored.
        let gateway = if self.has_classless {
            self.classless_default
        } else {
            self.routers.first().copied()
        };
        Ok(Lease {
            address: self.address,
            prefix_len,
            gateway,
            dns_servers: self.dns_servers,
            domain: self.domain.filter(|d| !d.is_empty()),
            server: self.server,
            lease_time: Duration::from_secs(lease_secs.into()),
            t1: Duration::from_secs(t1.into()),
            t2: Duration::from_secs(t2.into()),
            obtained_at,
        })
    }
}

fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

fn prefix_to_mask(len: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(len.min(32)))
            .unwrap_or(0),
    )
}

fn secs_u32(d: Duration) -> u32 {
    d.as_secs().try_into().unwrap_or(u32::MAX)
}

pub(crate) mod whole_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(|e| D::Error::custom(format!("{text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn ack() -> v4::Message {
        let mut m = v4::Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(198, 51, 100, 76),
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::UNSPECIFIED,
            &[2, 0, 0x5e, 0x10, 0, 1],
        );
        m.set_opcode(v4::Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(v4::MessageType::Ack));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(198, 51, 100, 1)]));
        o.insert(DhcpOption::DomainNameServer(vec![
            Ipv4Addr::new(198, 51, 100, 53),
            Ipv4Addr::new(198, 51, 100, 54),
        ]));
        o.insert(DhcpOption::DomainName("lan.example".into()));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 51, 100, 1)));
        o.insert(DhcpOption::AddressLeaseTime(120));
        m
    }

    #[test]
    fn ack_without_t1_t2_gets_rfc_defaults() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let l = Lease::from_ack(&ack(), at).unwrap();
        assert_eq!(l.address, Ipv4Addr::new(198, 51, 100, 76));
        assert_eq!(l.prefix_len, 24);
        assert_eq!(l.gateway, Some(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(l.dns_servers.len(), 2);
        assert_eq!(l.domain.as_deref(), Some("lan.example"));
        assert_eq!(
            (l.t1.as_secs(), l.t2.as_secs(), l.lease_time.as_secs()),
            (60, 105, 120)
        );
        assert_eq!(l.renew_at(), at + Duration::from_secs(60));
    }

    #[test]
    fn classless_default_route_wins_over_router() {
        let mut m = ack();
        m.opts_mut().insert(DhcpOption::ClasslessStaticRoute(vec![
            (
                "10.0.0.0/8".parse().unwrap(),
                Ipv4Addr::new(198, 51, 100, 9),
            ),
            (
                "0.0.0.0/0".parse().unwrap(),
                Ipv4Addr::new(198, 51, 100, 254),
            ),
        ]));
        let l = Lease::from_ack(&m, UNIX_EPOCH).unwrap();
        assert_eq!(l.gateway, Some(Ipv4Addr::new(198, 51, 100, 254)));
    }

    #[test]
    fn unusable_acks_are_refused_with_a_reason() {
        let mut m = ack();
        m.opts_mut().remove(OptionCode::AddressLeaseTime);
        assert!(
            Lease::from_ack(&m, UNIX_EPOCH)
                .unwrap_err()
                .contains("lease time")
        );
        let mut m = ack();
        m.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
        assert!(
            Lease::from_ack(&m, UNIX_EPOCH)
                .unwrap_err()
                .contains("contiguous")
        );
    }

    #[test]
    fn serde_uses_seconds_and_rfc3339() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let l = Lease::from_ack(&ack(), at).unwrap();
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["lease_time"], 120);
        assert_eq!(json["t1"], 60);
        assert_eq!(json["obtained_at"], "2023-11-14T22:13:20Z");
        let back: Lease = serde_json::from_value(json).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn mozim_round_trip_keeps_address_and_server() {
        let l = Lease::from_ack(&ack(), UNIX_EPOCH).unwrap();
        let m = l.to_mozim();
        assert_eq!(m.prefix_length(), 24);
        let back = Lease::from_mozim(&m, UNIX_EPOCH).unwrap();
        assert_eq!(back.address, l.address);
        assert_eq!(back.server, l.server);
        assert_eq!(back.lease_time, l.lease_time);
    }

    #[test]
    fn masks() {
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(prefix_to_mask(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(prefix_to_mask(0), Ipv4Addr::UNSPECIFIED);
    }
}
