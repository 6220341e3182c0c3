//! Policy routes of Direct Server Return (DSR) and PreserveDIP load-balancer backends.
//!
//! Such a backend receives the packet still addressed to the VIP (it owns the VIP itself, on
//! its loopback). The load balancer picks the backend as for NAT (the connection mark, see
//! [`crate::nft_lb`]), copies the mark to the packet mark in prerouting, and one policy rule per
//! backend sends packets with that mark to a routing table of their own, whose only route is
//! `default via BACKEND`: the packet leaves on the backend's network towards the backend's MAC,
//! destination unchanged. The backend answers from the VIP straight to the client; no NAT on
//! the way back.
//!
//! The table's ID is the backend's mark (marks have the top bit set, far from the tables
//! people number by hand). The rule matches the mark bits hns owns only ([`FWMASK`]), so the
//! ACL table's packet-mark bit does not hide it.

use std::net::IpAddr;

use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};

use crate::error::Result;
use crate::hairpin::{send_ack, serialize};

/// Preference of the rules: after `local` (0), before `main` (32766).
pub const RULE_PREF: u32 = 9000;
/// The packet-mark bits a rule compares: the load-balancer bit and the low bits that number
/// backends, without the ACL's established bit (0x0080_0000).
pub const FWMASK: u32 = 0x807f_ffff;

fn rule(mark: u32, v6: bool) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    m.header.action = RuleAction::ToTable;
    m.attributes = vec![RuleAttribute::Priority(RULE_PREF), RuleAttribute::FwMark(mark), RuleAttribute::FwMask(FWMASK), RuleAttribute::Table(mark)];
    m
}

fn route(mark: u32, via: IpAddr) -> rtnetlink::packet_route::route::RouteMessage {
    match via {
        IpAddr::V4(a) => RouteMessageBuilder::<std::net::Ipv4Addr>::new().table_id(mark).gateway(a).build(),
        IpAddr::V6(a) => RouteMessageBuilder::<std::net::Ipv6Addr>::new().table_id(mark).gateway(a).build(),
    }
}

/// The requests that make packets marked `mark` go to `via` (route first: a rule pointing at
/// an empty table would send them nowhere).
fn add_requests(mark: u32, via: IpAddr) -> [Vec<u8>; 2] {
    [serialize(RouteNetlinkMessage::NewRoute(route(mark, via)), NLM_F_CREATE | NLM_F_REPLACE), serialize(RouteNetlinkMessage::NewRule(rule(mark, via.is_ipv6())), NLM_F_CREATE | NLM_F_EXCL)]
}

/// Routes packets marked `mark` to backend `via` (idempotent).
pub fn add(mark: u32, via: IpAddr) -> Result<()> {
    let object = format!("mark {mark:#x} via {via}");
    let [r, rule] = add_requests(mark, via);
    send_ack(&r, "add load-balancer backend route", &object)?;
    match send_ack(&rule, "add load-balancer backend rule", &object) {
        Err(e) if e.errno == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Removes what [`add`] made (missing pieces are fine).
pub fn del(mark: u32, via: IpAddr) -> Result<()> {
    let object = format!("mark {mark:#x} via {via}");
    let gone = |r: Result<()>| match r {
        Err(e) if matches!(e.errno, Some(libc::ENOENT) | Some(libc::ESRCH)) => Ok(()),
        other => other,
    };
    gone(send_ack(&serialize(RouteNetlinkMessage::DelRule(rule(mark, via.is_ipv6())), 0), "delete load-balancer backend rule", &object))?;
    gone(send_ack(&serialize(RouteNetlinkMessage::DelRoute(route(mark, via)), 0), "delete load-balancer backend route", &object))
}

/// Removes every rule [`add`] made, of both families (uninstall): a delete that names only the
/// preference and the mask matches any of them; repeated until none is left. Their tables'
/// routes went with the bridges. Returns how many rules were removed.
pub fn remove_all() -> Result<usize> {
    let mut n = 0;
    for v6 in [false, true] {
        let mut m = RuleMessage::default();
        m.header.family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        m.attributes = vec![RuleAttribute::Priority(RULE_PREF), RuleAttribute::FwMask(FWMASK)];
        let req = serialize(RouteNetlinkMessage::DelRule(m), 0);
        loop {
            match send_ack(&req, "delete load-balancer backend rule", "every rule") {
                Ok(()) => n += 1,
                Err(e) if matches!(e.errno, Some(libc::ENOENT) | Some(libc::ESRCH)) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

impl crate::netlink::Netlink {
    /// The (mark, backend) pairs whose rule and route are both in place in this namespace:
    /// what the reconciler compares with the backends the load balancers reach without DNAT
    /// (a rule or route deleted by hand is put back).
    pub async fn lb_direct_routes(&self) -> Result<std::collections::BTreeSet<(u32, IpAddr)>> {
        use futures::TryStreamExt;
        use netlink_packet_route::route::{RouteAddress, RouteAttribute};
        let mut rules = std::collections::BTreeSet::new();
        for v in [rtnetlink::IpVersion::V4, rtnetlink::IpVersion::V6] {
            let _one_dump = self.dumps.lock().await;
            let mut s = self.handle.rule().get(v).execute();
            while let Some(m) = s.try_next().await.map_err(|e| crate::netlink::nl_err("list rules", "", e))? {
                let a = &m.attributes;
                let mark = a.iter().find_map(|x| if let RuleAttribute::FwMark(f) = x { Some(*f) } else { None });
                if a.contains(&RuleAttribute::Priority(RULE_PREF)) && a.contains(&RuleAttribute::FwMask(FWMASK))
                    && let Some(mark) = mark
                    && a.contains(&RuleAttribute::Table(mark))
                {
                    rules.insert(mark);
                }
            }
        }
        let mut out = std::collections::BTreeSet::new();
        for mut family in [RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(), RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()] {
            // Strict dump checking filters by every header field set: any protocol, any type.
            family.header.protocol = netlink_packet_route::route::RouteProtocol::Unspec;
            family.header.kind = netlink_packet_route::route::RouteType::Unspec;
            let _one_dump = self.dumps.lock().await;
            let mut routes = self.handle.route().get(family).execute();
            while let Some(m) = routes.try_next().await.map_err(|e| crate::netlink::nl_err("list routes", "", e))? {
                let table = m.attributes.iter().find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None }).unwrap_or(m.header.table.into());
                let via = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some(IpAddr::from(*v4)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some(IpAddr::from(*v6)),
                    _ => None,
                });
                if let Some(via) = via
                    && m.header.destination_prefix_length == 0
                    && rules.contains(&table)
                {
                    out.insert((table, via));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_matches_the_mark_and_looks_up_its_own_table() {
        let m = rule(0x8000_0005, false);
        assert_eq!(m.header.action, RuleAction::ToTable);
        assert!(m.attributes.contains(&RuleAttribute::FwMark(0x8000_0005)));
        assert!(m.attributes.contains(&RuleAttribute::FwMask(FWMASK)));
        assert!(m.attributes.contains(&RuleAttribute::Table(0x8000_0005)));
        let [r, rl] = add_requests(0x8000_0005, "172.17.0.3".parse().unwrap());
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 24, "RTM_NEWROUTE");
        assert_eq!(u16::from_ne_bytes([rl[4], rl[5]]), 32, "RTM_NEWRULE");
        // The gateway is in the route request.
        assert!(r.windows(4).any(|w| w == [172, 17, 0, 3]));
    }
}
