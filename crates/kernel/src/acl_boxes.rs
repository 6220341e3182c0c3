//! The priority resolution of ACL rules: the rules of one endpoint stage, evaluated in order
//! (first match decides), turned into disjoint boxes of the 5-field space (protocol, source
//! address, source port, destination address, destination port), each labelled with the rule
//! that decides it and that rule's action.
//!
//! Why boxes: the kernel keeps an endpoint's rules as the elements of a concatenated interval
//! map ([`crate::nft_acl`]), so adding or removing a rule rewrites elements only. Rules in a
//! chain would make every change a rule change, and the kernel validates the whole table
//! (every chain reachable from a base chain) on each one: ~12 ms at 10 000 rules. A map has no
//! order, so the order is resolved here: a rule keeps only the part of its boxes that no
//! earlier rule claims. Pure: no kernel, no I/O.

use ipnet::IpNet;

use crate::nft_acl::{Action, Direction, Rule, Scope};

/// An inclusive range of one field.
pub type Span = (u128, u128);

/// A box: one span per field, in the key's order (protocol, source address, source port,
/// destination address, destination port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBox(pub [Span; 5]);

/// A box and the rule that decides its packets: `rule` is the index in the endpoint's
/// evaluation order ([`crate::nft_acl::ordered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    pub b: AclBox,
    pub rule: usize,
    pub action: Action,
}

/// At most this many boxes per stage and address family: the kernel's map of one endpoint
/// stage. Realistic rule sets give a few per rule; only lists multiplied by lists under many
/// overlapping rules come near it, and validation refuses them ([`check`]).
pub const MAX_BOXES: usize = 16_384;

const ANY_PROTO: Span = (0, 255);
const ANY_PORT: Span = (0, 65_535);

fn any_addr(v6: bool) -> Span {
    (0, if v6 { u128::MAX } else { u32::MAX as u128 })
}

fn addr_span(n: &IpNet) -> Span {
    match n.trunc() {
        IpNet::V4(n) => (u32::from(n.network()) as u128, u32::from(n.broadcast()) as u128),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// The spans of an address list for one family: `None` when the list names addresses of
/// the other family only (the rule matches no packet of this one).
fn addr_spans(list: &[IpNet], v6: bool) -> Option<Vec<Span>> {
    if list.is_empty() {
        return Some(vec![any_addr(v6)]);
    }
    let v: Vec<Span> = list.iter().filter(|n| matches!(n, IpNet::V6(_)) == v6).map(addr_span).collect();
    (!v.is_empty()).then_some(v)
}

fn port_spans(list: &[(u16, u16)]) -> Vec<Span> {
    if list.is_empty() { vec![ANY_PORT] } else { list.iter().map(|(a, b)| (*a as u128, *b as u128)).collect() }
}

/// Whether a rule can match packets of a family (`v6`): its address lists, when given, name
/// some address of it. Exactly when [`rule_boxes`] has boxes for it.
pub fn matches_family(r: &Rule, v6: bool) -> bool {
    let names = |list: &[IpNet]| list.is_empty() || list.iter().any(|n| matches!(n, IpNet::V6(_)) == v6);
    names(&r.local) && names(&r.remote)
}

/// The boxes of one rule for one family: the product of its lists, laid out in key order
/// for its direction (`In`: the remote side is the source; `Out`: the endpoint is).
pub fn rule_boxes(r: &Rule, v6: bool) -> Vec<AclBox> {
    let (Some(local), Some(remote)) = (addr_spans(&r.local, v6), addr_spans(&r.remote, v6)) else { return Vec::new() };
    let protos: Vec<Span> = if r.protocols.is_empty() { vec![ANY_PROTO] } else { r.protocols.iter().map(|p| (*p as u128, *p as u128)).collect() };
    let (lports, rports) = (port_spans(&r.local_ports), port_spans(&r.remote_ports));
    let mut out = Vec::with_capacity(protos.len() * local.len() * remote.len() * lports.len() * rports.len());
    for p in &protos {
        for l in &local {
            for rm in &remote {
                for lp in &lports {
                    for rp in &rports {
                        out.push(AclBox(match r.direction {
                            Direction::In => [*p, *rm, *rp, *l, *lp],
                            Direction::Out => [*p, *l, *lp, *rm, *rp],
                        }));
                    }
                }
            }
        }
    }
    out
}

fn intersects(a: &AclBox, b: &AclBox) -> bool {
    a.0.iter().zip(&b.0).all(|(x, y)| x.0 <= y.1 && y.0 <= x.1)
}

/// `a` minus `b` as disjoint boxes (at most two per field), appended to `out`.
fn subtract(a: AclBox, b: &AclBox, out: &mut Vec<AclBox>) {
    if !intersects(&a, b) {
        out.push(a);
        return;
    }
    let mut rest = a;
    for d in 0..5 {
        let ((lo, hi), (blo, bhi)) = (rest.0[d], b.0[d]);
        if lo < blo {
            let mut below = rest;
            below.0[d] = (lo, blo - 1);
            out.push(below);
        }
        if hi > bhi {
            let mut above = rest;
            above.0[d] = (bhi + 1, hi);
            out.push(above);
        }
        rest.0[d] = (lo.max(blo), hi.min(bhi));
    }
    // What is left of `rest` lies inside `b`: claimed by the earlier rule.
}

/// The decided boxes of one stage (`scope`, `dir`) and family, from the endpoint's rules in
/// evaluation order. Each rule keeps what no earlier rule of the stage covers, so the boxes
/// are disjoint and a packet falls in at most one: the one its first matching rule owns.
pub fn stage(ordered: &[&Rule], scope: Scope, dir: Direction, v6: bool) -> Vec<Decided> {
    let mut earlier: Vec<AclBox> = Vec::new();
    let mut out = Vec::new();
    for (i, r) in ordered.iter().enumerate() {
        if r.scope != scope || r.direction != dir {
            continue;
        }
        let boxes = rule_boxes(r, v6);
        for b in &boxes {
            let mut pieces = vec![*b];
            for e in &earlier {
                if pieces.is_empty() {
                    break;
                }
                let mut next = Vec::with_capacity(pieces.len());
                for p in pieces {
                    subtract(p, e, &mut next);
                }
                pieces = next;
            }
            out.extend(pieces.into_iter().map(|b| Decided { b, rule: i, action: r.action }));
        }
        earlier.extend(boxes);
    }
    out
}

/// Refuses rule sets whose boxes would exceed [`MAX_BOXES`] in some stage; the message says
/// which stage and how many.
pub fn check(ordered: &[&Rule]) -> Result<(), String> {
    for (scope, dir) in [(Scope::Switch, Direction::In), (Scope::Switch, Direction::Out), (Scope::Host, Direction::In), (Scope::Host, Direction::Out)] {
        for v6 in [false, true] {
            let n = stage(ordered, scope, dir, v6).len();
            if n > MAX_BOXES {
                return Err(format!(
                    "the {scope:?} {dir:?} rules compile to {n} {} match boxes, more than the {MAX_BOXES} one endpoint may hold: use fewer overlapping rules or shorter address and port lists",
                    if v6 { "IPv6" } else { "IPv4" }
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    /// The whole space of a family.
    fn everything(v6: bool) -> AclBox {
        AclBox([ANY_PROTO, any_addr(v6), ANY_PORT, any_addr(v6), ANY_PORT])
    }
    use super::*;
    use crate::nft_acl::ordered;

    fn rule(action: Action, dir: Direction, prio: u16) -> Rule {
        Rule { id: String::new(), action, direction: dir, scope: Scope::Switch, priority: prio, protocols: vec![], local: vec![], remote: vec![], local_ports: vec![], remote_ports: vec![] }
    }

    /// The decision for one packet: the action of the box it falls in (None: no rule).
    fn decide(boxes: &[Decided], key: [u128; 5]) -> Option<(usize, Action)> {
        let hits: Vec<&Decided> = boxes.iter().filter(|d| d.b.0.iter().zip(key).all(|(s, k)| s.0 <= k && k <= s.1)).collect();
        assert!(hits.len() <= 1, "boxes overlap at {key:?}: {hits:?}");
        hits.first().map(|d| (d.rule, d.action))
    }

    /// The same decision by walking the rules in order, as a chain would.
    fn first_match(rules: &[&Rule], dir: Direction, key: [u128; 5]) -> Option<(usize, Action)> {
        rules.iter().enumerate().find(|(_, r)| r.direction == dir && rule_boxes(r, false).iter().any(|b| b.0.iter().zip(key).all(|(s, k)| s.0 <= k && k <= s.1))).map(|(i, r)| (i, r.action))
    }

    #[test]
    fn a_lower_priority_number_wins_and_block_wins_ties() {
        let rules = vec![
            Rule { protocols: vec![6], local_ports: vec![(80, 80)], ..rule(Action::Allow, Direction::In, 100) },
            Rule { remote: vec!["10.0.0.0/8".parse().unwrap()], ..rule(Action::Block, Direction::In, 100) },
            Rule { ..rule(Action::Allow, Direction::In, 65000) },
        ];
        let o = ordered(&rules);
        let boxes = stage(&o, Scope::Switch, Direction::In, false);
        let ten = u32::from(std::net::Ipv4Addr::new(10, 1, 2, 3)) as u128;
        let other = u32::from(std::net::Ipv4Addr::new(192, 0, 2, 1)) as u128;
        // [proto, saddr (remote), sport, daddr (local), dport]
        assert_eq!(decide(&boxes, [6, ten, 40000, 5, 80]).map(|d| d.1), Some(Action::Block), "the Block ties the Allow at 100 and wins");
        assert_eq!(decide(&boxes, [6, other, 40000, 5, 80]).map(|d| d.1), Some(Action::Allow));
        assert_eq!(decide(&boxes, [17, other, 1, 5, 53]).map(|d| d.1), Some(Action::Allow), "the allow-all at 65000");
        assert!(stage(&o, Scope::Switch, Direction::Out, false).is_empty());
    }

    #[test]
    fn boxes_decide_every_packet_as_the_first_matching_rule() {
        let p = |s: &str| -> IpNet { s.parse().unwrap() };
        let rules = vec![
            Rule { protocols: vec![6, 17], local_ports: vec![(1000, 2000), (80, 80)], remote: vec![p("10.0.0.0/8"), p("192.0.2.0/24")], ..rule(Action::Allow, Direction::In, 10) },
            Rule { remote: vec![p("10.1.0.0/16")], ..rule(Action::Block, Direction::In, 5) },
            Rule { protocols: vec![6], remote_ports: vec![(0, 1023)], ..rule(Action::Block, Direction::In, 20) },
            Rule { local: vec![p("172.16.0.5/32"), p("fd00::1/128")], ..rule(Action::Allow, Direction::In, 30) },
            Rule { protocols: vec![1], ..rule(Action::Allow, Direction::In, 40) },
        ];
        let o = ordered(&rules);
        let boxes = stage(&o, Scope::Switch, Direction::In, false);
        // Probe a grid of interesting values in every field: each must be decided as a
        // walk over the rules decides it.
        let addrs: Vec<u128> = ["0.0.0.0", "9.255.255.255", "10.0.0.0", "10.1.0.0", "10.1.255.255", "10.2.0.1", "10.255.255.255", "172.16.0.5", "172.16.0.6", "192.0.2.77", "255.255.255.255"]
            .iter()
            .map(|a| u32::from(a.parse::<std::net::Ipv4Addr>().unwrap()) as u128)
            .collect();
        let ports = [0u128, 79, 80, 81, 999, 1000, 1023, 1024, 2000, 2001, 65535];
        let mut probes = 0;
        for proto in [1u128, 6, 17, 50] {
            for s in &addrs {
                for sp in &ports {
                    for d in &addrs {
                        for dp in &ports {
                            let key = [proto, *s, *sp, *d, *dp];
                            assert_eq!(decide(&boxes, key), first_match(&o, Direction::In, key), "{key:?}");
                            probes += 1;
                        }
                    }
                }
            }
        }
        assert!(probes > 50_000);
    }

    #[test]
    fn families_split_and_a_one_sided_family_matches_nothing() {
        let r = Rule { local: vec!["10.0.0.1/32".parse().unwrap()], remote: vec!["fd00::/64".parse().unwrap()], ..rule(Action::Allow, Direction::In, 1) };
        assert!(rule_boxes(&r, false).is_empty() && rule_boxes(&r, true).is_empty());
        let any = rule(Action::Block, Direction::Out, 1);
        assert_eq!(rule_boxes(&any, true), vec![everything(true)]);
        assert_eq!(rule_boxes(&any, false), vec![everything(false)]);
    }

    #[test]
    fn too_many_boxes_are_refused_with_the_stage_named() {
        let ports: Vec<(u16, u16)> = (0..200).map(|p| (p * 2, p * 2)).collect();
        let nets: Vec<IpNet> = (0..100).map(|i| format!("10.{i}.0.0/16").parse().unwrap()).collect();
        let big = Rule { local_ports: ports, remote: nets, ..rule(Action::Allow, Direction::Out, 1) };
        let e = check(&[&big]).unwrap_err();
        assert!(e.contains("Switch Out") && e.contains("20000 IPv4"), "{e}");
        assert!(check(&[&rule(Action::Allow, Direction::Out, 1)]).is_ok());
    }
}
