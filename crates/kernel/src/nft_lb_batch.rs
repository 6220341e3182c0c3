//! Load-balancer changes written over nfnetlink ([`crate::nft_batch`]), one atomic batch per
//! change, instead of `nft -f` (nft 1.0.6 lists the whole table into its cache first, so its
//! cost grew with the number of load balancers; a process per change costs milliseconds
//! too). The inputs are the typed state of [`crate::nft_lb`] (`LbState`, `Service`,
//! `Backend`, `Hairpin`); the table's skeleton (dispatch maps, base chains, `refuse`, the
//! hairpin rules) is still written as nft text by [`crate::nft_lb::compile_all`] when the
//! whole table is rebuilt (rare: the table is missing or flushed).
//!
//! What differs from the text compiler's service chains, and why: the text form picks a
//! backend through anonymous maps inside the service's rules (`numgen random mod N map { 0 :
//! mark, ... }`, `dnat ... to ct mark map { mark : addr . port }`). Every anonymous set costs
//! the kernel a walk over all sets of the table (sets are found by name in a list, and
//! `__set%d` names are allocated by scanning them: 20 000 sets at 10 000 services), and any
//! new rule marks the table for the commit-time validation walk over every chain the dispatch
//! maps jump to. So the backend is looked up in a few shared named maps instead:
//! - `pick4`/`pick6` (`picknode4`/`picknode6` for frontends on every host address): the
//!   service's key (`VIP . l4proto . port`) and the backend's index to the backend's
//!   connection mark;
//! - `be4`/`be6`: the mark, protocol and frontend port to the backend's address and port.
//!
//! The service's chain only draws the index (`numgen`/`jhash` mod N) into the connection
//! mark and goes to a common chain (`lb_vip4`, `lb_vip6`, `lb_node4`, `lb_node6`), which
//! replaces the index by the backend's mark through `pick*` and DNATs through `be*`. Why the
//! detour: a rule that looks up a map "binds" it, and binding makes the kernel walk every
//! element of the map (50 000 at 10 000 services of 5 backends: 165 ms per new service when
//! each service chain looked the shared maps up itself). Bound by a few chains only, the maps
//! take element changes in microseconds. So replacing a backend changes map elements only (no
//! rule, no validation walk), and a new service adds its chain, two rules and its elements.
//! DSR and PreserveDIP services go to the `_direct` variants, which set the mark and do not
//! DNAT (the skeleton's `dsr_route` delivers). The marks are unique per backend and load
//! balancer, so the maps never mix services up.
//! `iifname != { "hns-*", "hnv*" }` (an anonymous interval set) is written as two prefix
//! comparisons, which nft lists as `iifname != "hns-*" iifname != "hnv*"`: same meaning.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::error::Result;
use crate::nft_batch::{self, Base, Batch, CmpOp, Expr, Family, Load, MetaKey, REG32_00, Verdict};
use crate::nft_lb::{self, Affinity, Frontend, LB_TABLE, LbState, Service};

/// The `jhash` seed of the text compiler ("hns").
const SEED: u32 = 0x686e73;
const FAM: Family = Family::Inet;

/// The shared maps this encoding adds to the skeleton (nft notation).
pub fn maps_text() -> String {
    let t = format!("inet {LB_TABLE}");
    let mut out = String::new();
    for (name, key) in [("pick4", "ip daddr . meta l4proto . th dport"), ("pick6", "ip6 daddr . meta l4proto . th dport"), ("picknode4", "meta l4proto . th dport"), ("picknode6", "meta l4proto . th dport")] {
        let _ = writeln!(out, "add map {t} {name} {{ typeof {key} . ct mark : ct mark; }}");
    }
    for (name, ip) in [("be4", "ip"), ("be6", "ip6")] {
        let _ = writeln!(out, "add map {t} {name} {{ typeof ct mark . meta l4proto . th dport : {ip} daddr . th dport; }}");
    }
    out
}

/// The common chains in nft notation (what [`rebuild`] writes over netlink).
fn common_chains_text() -> String {
    let t = format!("inet {LB_TABLE}");
    let mut out = String::new();
    for c in &COMMON {
        let _ = writeln!(out, "add chain {t} {}", c.name);
        for r in common_text(c) {
            let _ = writeln!(out, "add rule {t} {} {r}", c.name);
        }
    }
    out
}

/// One of the chains every service of a kind ends in (see the module doc).
struct Common {
    name: &'static str,
    v6: bool,
    /// The key includes the VIP (`false`: a frontend on every host address).
    vip: bool,
    pick: &'static str,
    /// DNAT to the backend (`false`: DSR and PreserveDIP, delivered by `dsr_route`).
    dnat: bool,
}

const COMMON: [Common; 8] = [
    Common { name: "lb_vip4", v6: false, vip: true, pick: "pick4", dnat: true },
    Common { name: "lb_vip6", v6: true, vip: true, pick: "pick6", dnat: true },
    Common { name: "lb_node4", v6: false, vip: false, pick: "picknode4", dnat: true },
    Common { name: "lb_node6", v6: true, vip: false, pick: "picknode6", dnat: true },
    Common { name: "lb_vip4_direct", v6: false, vip: true, pick: "pick4", dnat: false },
    Common { name: "lb_vip6_direct", v6: true, vip: true, pick: "pick6", dnat: false },
    Common { name: "lb_node4_direct", v6: false, vip: false, pick: "picknode4", dnat: false },
    Common { name: "lb_node6_direct", v6: true, vip: false, pick: "picknode6", dnat: false },
];

fn common_of(s: &Service) -> &'static Common {
    let at = match (s.frontend, s.frontend.is_v6()) {
        (Frontend::Vip(_), false) => 0,
        (Frontend::Vip(_), true) => 1,
        (Frontend::Node { .. }, false) => 2,
        (Frontend::Node { .. }, true) => 3,
    };
    &COMMON[at + if s.preserve_dip { 4 } else { 0 }]
}

/// The chains this encoding adds to the text skeleton's (for the drift check's count).
pub const EXTRA_CHAINS: usize = COMMON.len();

/// The number of chains the table holds for `lbs` as [`rebuild`] writes it.
pub fn chain_count(lbs: &[&LbState]) -> usize {
    nft_lb::chain_count(lbs) + EXTRA_CHAINS
}

fn common_text(c: &Common) -> Vec<String> {
    let ip = if c.v6 { "ip6" } else { "ip" };
    let key = if c.vip { format!("{ip} daddr . meta l4proto . th dport") } else { "meta l4proto . th dport".into() };
    let be = if c.v6 { "be6" } else { "be4" };
    let mut out = vec![format!("ct mark set {key} . ct mark map @{}", c.pick)];
    for proto in ["tcp", "udp"].into_iter().filter(|_| c.dnat) {
        out.push(format!("meta l4proto {proto} dnat {ip} addr . port to ct mark . meta l4proto . th dport map @{be}"));
    }
    out
}

fn addr_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A value in a concatenation: padded to a 4-byte register.
fn field(v: &[u8]) -> Vec<u8> {
    let mut f = v.to_vec();
    f.resize(v.len().next_multiple_of(4), 0);
    f
}

fn proto_number(s: &Service) -> u8 {
    s.proto.number() as u8
}

/// The service's key in the dispatch maps (`VIP . l4proto . port`, or `l4proto . port`).
fn service_key(s: &Service) -> Vec<u8> {
    let mut k = match s.frontend {
        Frontend::Vip(ip) => field(&addr_bytes(ip)),
        Frontend::Node { .. } => Vec::new(),
    };
    k.extend(field(&[proto_number(s)]));
    k.extend(field(&s.port.to_be_bytes()));
    k
}

fn pick_map(s: &Service) -> &'static str {
    match (s.frontend, s.frontend.is_v6()) {
        (Frontend::Vip(_), false) => "pick4",
        (Frontend::Vip(_), true) => "pick6",
        (Frontend::Node { .. }, false) => "picknode4",
        (Frontend::Node { .. }, true) => "picknode6",
    }
}

fn be_map(s: &Service) -> &'static str {
    if s.frontend.is_v6() { "be6" } else { "be4" }
}

/// The value of one element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Data {
    None,
    Goto(String),
    Value(Vec<u8>),
}

/// One element of a named set or map of the table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Element {
    set: &'static str,
    key: Vec<u8>,
    data: Data,
}

/// Every element a load balancer puts in the table.
fn elements(l: &LbState) -> BTreeSet<Element> {
    let mut out = BTreeSet::new();
    for s in &l.services {
        let key = service_key(s);
        for m in s.maps() {
            out.insert(Element { set: m, key: key.clone(), data: Data::Goto(s.chain()) });
        }
        for (i, b) in s.backends.iter().enumerate() {
            // Its counter of new connections (a backend of several ports has one mark).
            out.insert(Element { set: "hits", key: b.mark.to_ne_bytes().to_vec(), data: Data::None });
            let mut k = key.clone();
            k.extend((i as u32).to_ne_bytes());
            out.insert(Element { set: pick_map(s), key: k, data: Data::Value(b.mark.to_ne_bytes().to_vec()) });
            if s.preserve_dip {
                continue;
            }
            let mut k = b.mark.to_ne_bytes().to_vec();
            k.extend(field(&[proto_number(s)]));
            k.extend(field(&s.port.to_be_bytes()));
            let mut v = field(&addr_bytes(b.addr));
            v.extend(field(&b.port.to_be_bytes()));
            out.insert(Element { set: be_map(s), key: k, data: Data::Value(v) });
        }
    }
    for d in &l.direct {
        out.insert(Element { set: "dsr", key: d.mark.to_ne_bytes().to_vec(), data: Data::None });
    }
    for h in &l.hairpin {
        let v4 = h.backend.is_ipv4();
        let mut k = h.mark.to_ne_bytes().to_vec();
        k.extend(addr_bytes(h.backend));
        out.insert(Element { set: if v4 { "hairpin4" } else { "hairpin6" }, key: k, data: Data::None });
        if let Some(vip) = h.source_vip.filter(|s| s.is_ipv4() == v4) {
            out.insert(Element { set: if v4 { "srcvip4" } else { "srcvip6" }, key: h.mark.to_ne_bytes().to_vec(), data: Data::Value(addr_bytes(vip)) });
        }
    }
    out
}

/// The rules of a service's chain as expressions (see the module doc; [`rules_text`] is
/// the same in nft notation).
pub fn rule_exprs(s: &Service) -> Vec<Vec<Expr>> {
    let mut out = Vec::new();
    let refuse = || Expr::Verdict(Verdict::Goto("refuse".into()));
    if s.internal {
        // In the output hook `iif` is 0 (and `iifname` empty): an internal service flagged
        // LocalRoutedVIP stays reachable from the host.
        out.push(vec![
            Expr::Meta(MetaKey::Iif),
            Expr::Cmp(CmpOp::Neq, 0u32.to_ne_bytes().to_vec()),
            Expr::Meta(MetaKey::IifName),
            Expr::Cmp(CmpOp::Neq, b"hns-".to_vec()),
            Expr::Meta(MetaKey::IifName),
            Expr::Cmp(CmpOp::Neq, b"hnv".to_vec()),
            refuse(),
        ]);
    }
    if s.backends.is_empty() {
        out.push(vec![refuse()]);
        return out;
    }
    let v6 = s.frontend.is_v6();
    let alen = if v6 { 16 } else { 4 };
    let n = s.backends.len() as u32;
    let mut pick = Vec::new();
    let saddr = Expr::Load { from: Load::Payload { base: Base::Network, offset: if v6 { 8 } else { 12 }, len: alen }, reg: REG32_00 };
    // nft's dependency of an `ip`/`ip6` match in an inet table: the hook's family.
    let dep = [Expr::Meta(MetaKey::NfProto), Expr::cmp_eq(vec![if v6 { 10 } else { 2 }])];
    match s.affinity {
        Affinity::None => pick.push(Expr::Numgen { modulus: n, reg: REG32_00 }),
        Affinity::SourceIp => pick.extend(dep.into_iter().chain([saddr, Expr::Jhash { sreg: REG32_00, len: alen, modulus: n, seed: SEED, dreg: REG32_00 }])),
        Affinity::SourceIpProtocol => pick.extend(dep.into_iter().chain([
            saddr,
            Expr::Load { from: Load::Meta(MetaKey::L4Proto), reg: REG32_00 + alen / 4 },
            Expr::Jhash { sreg: REG32_00, len: alen + 4, modulus: n, seed: SEED, dreg: REG32_00 },
        ])),
    }
    pick.push(Expr::CtSetMark { sreg: REG32_00 });
    out.push(pick);
    out.push(vec![Expr::Verdict(Verdict::Goto(common_of(s).name.into()))]);
    out
}

/// The rules of a common chain as expressions (the same as [`common_text`]).
fn common_exprs(c: &Common) -> Vec<Vec<Expr>> {
    let alen = if c.v6 { 16 } else { 4 };
    let mut pick = Vec::new();
    let mut reg = REG32_00;
    if c.vip {
        pick.extend([Expr::Meta(MetaKey::NfProto), Expr::cmp_eq(vec![if c.v6 { 10 } else { 2 }])]);
        pick.push(Expr::Load { from: Load::Payload { base: Base::Network, offset: if c.v6 { 24 } else { 16 }, len: alen }, reg });
        reg += alen / 4;
    }
    pick.push(Expr::Load { from: Load::Meta(MetaKey::L4Proto), reg });
    pick.push(Expr::Load { from: Load::Payload { base: Base::Transport, offset: 2, len: 2 }, reg: reg + 1 });
    pick.push(Expr::Load { from: Load::CtMark, reg: reg + 2 });
    pick.extend([Expr::MapLookup { map: c.pick.into(), sreg: REG32_00, dreg: REG32_00 }, Expr::CtSetMark { sreg: REG32_00 }]);
    let mut out = vec![pick];
    for proto in [6u8, 17].into_iter().filter(|_| c.dnat) {
        out.push(vec![
            Expr::Meta(MetaKey::L4Proto),
            Expr::cmp_eq(vec![proto]),
            Expr::Load { from: Load::CtMark, reg: REG32_00 },
            Expr::Load { from: Load::Meta(MetaKey::L4Proto), reg: REG32_00 + 1 },
            Expr::Load { from: Load::Payload { base: Base::Transport, offset: 2, len: 2 }, reg: REG32_00 + 2 },
            Expr::MapLookup { map: if c.v6 { "be6" } else { "be4" }.into(), sreg: REG32_00, dreg: REG32_00 },
            Expr::Dnat { v6: c.v6, addr_reg: REG32_00, proto_reg: REG32_00 + alen / 4 },
        ]);
    }
    out
}

/// The rules of a service's chain in nft notation: the reference the netlink encoding is
/// tested against (both must list identically through `nft`).
pub fn rules_text(s: &Service) -> Vec<String> {
    let mut out = Vec::new();
    if s.internal {
        out.push("iif != 0 iifname != \"hns-*\" iifname != \"hnv*\" goto refuse".to_owned());
    }
    if s.backends.is_empty() {
        out.push("goto refuse".into());
        return out;
    }
    let ip = if s.frontend.is_v6() { "ip6" } else { "ip" };
    let n = s.backends.len();
    let choice = match s.affinity {
        Affinity::None => format!("numgen random mod {n}"),
        Affinity::SourceIp => format!("jhash {ip} saddr mod {n} seed {SEED:#x}"),
        Affinity::SourceIpProtocol => format!("jhash {ip} saddr . meta l4proto mod {n} seed {SEED:#x}"),
    };
    out.push(format!("ct mark set {choice}"));
    out.push(format!("goto {}", common_of(s).name));
    out
}

/// Appends the change from load balancer `old` to `new` (either may be empty: create,
/// delete): only their chains and elements, and only what differs. It assumes the kernel
/// holds `old`: if it does not, the batch fails as a whole and the caller rebuilds.
pub fn build_update(b: &mut Batch, old: &LbState, new: &LbState) {
    let t = LB_TABLE;
    let old_by: BTreeMap<String, &Service> = old.services.iter().map(|s| (s.chain(), s)).collect();
    let new_by: BTreeMap<String, &Service> = new.services.iter().map(|s| (s.chain(), s)).collect();
    let (old_e, new_e) = (elements(old), elements(new));
    // 1. Elements that go or change (dispatch with them: no packet reaches a chain that goes).
    for e in old_e.difference(&new_e) {
        b.delete_element(FAM, t, e.set, &e.key);
    }
    // 2. Chains that go.
    for c in old_by.keys().filter(|c| !new_by.contains_key(*c)) {
        b.delete_chain(FAM, t, c);
    }
    // 3. Chains that are new or change shape.
    for (c, s) in &new_by {
        let rules = rule_exprs(s);
        match old_by.get(c) {
            Some(o) if rule_exprs(o) == rules => continue,
            Some(_) => b.flush_chain(FAM, t, c),
            None => b.add_chain(FAM, t, c),
        }
        for r in &rules {
            b.add_rule(FAM, t, c, r);
        }
    }
    // 4. Elements that come (after the chains they jump to).
    for e in new_e.difference(&old_e) {
        match &e.data {
            Data::None => b.add_data_element(FAM, t, e.set, &e.key, None),
            Data::Value(v) => b.add_data_element(FAM, t, e.set, &e.key, Some(v)),
            Data::Goto(c) => b.add_element(FAM, t, e.set, &e.key, Some(&Verdict::Goto(c.clone()))),
        }
    }
}

/// Applies a batch built with [`build_update`] (one transaction).
pub fn apply(b: &Batch) -> Result<()> {
    nft_batch::apply(b)
}

/// Rewrites the whole table for `lbs`: the skeleton and the shared maps as nft text (one
/// transaction that replaces the table), then every load balancer in one batch. With no
/// load balancer the table is removed.
pub fn rebuild(lbs: &[&LbState]) -> Result<()> {
    if lbs.is_empty() {
        return nft_lb::run(&nft_lb::compile_all(&[]));
    }
    let mut program = nft_lb::compile_all(&[&LbState::default()]);
    program.push_str(&maps_text());
    nft_lb::run(&program)?;
    let mut b = Batch::new();
    for c in &COMMON {
        b.add_chain(FAM, LB_TABLE, c.name);
        for r in common_exprs(c) {
            b.add_rule(FAM, LB_TABLE, c.name, &r);
        }
    }
    for l in lbs {
        build_update(&mut b, &LbState::default(), l);
    }
    apply(&b)
}

fn mark_text(m: u32) -> String {
    format!("{m:#010x}")
}

/// The whole table for `lbs` in nft notation, laid out as [`rebuild`] writes it: the
/// reference of the kernel test (and a readable dump for debugging).
pub fn text_all(lbs: &[&LbState]) -> String {
    let mut out = nft_lb::compile_all(&[&LbState::default()]);
    if lbs.is_empty() {
        return nft_lb::compile_all(&[]);
    }
    out.push_str(&maps_text());
    out.push_str(&common_chains_text());
    let t = format!("inet {LB_TABLE}");
    for l in lbs {
        for s in &l.services {
            let c = s.chain();
            let _ = writeln!(out, "add chain {t} {c}");
            for r in rules_text(s) {
                let _ = writeln!(out, "add rule {t} {c} {r}");
            }
        }
        for s in &l.services {
            let key = match s.frontend {
                Frontend::Vip(ip) => format!("{ip} . {} . {}", s.proto, s.port),
                Frontend::Node { .. } => format!("{} . {}", s.proto, s.port),
            };
            for m in s.maps() {
                let _ = writeln!(out, "add element {t} {m} {{ {key} : goto {} }}", s.chain());
            }
            for (i, b) in s.backends.iter().enumerate() {
                let _ = writeln!(out, "add element {t} hits {{ {} }}", mark_text(b.mark));
                let _ = writeln!(out, "add element {t} {} {{ {key} . {i} : {} }}", pick_map(s), mark_text(b.mark));
                if !s.preserve_dip {
                    let _ = writeln!(out, "add element {t} {} {{ {} . {} . {} : {} . {} }}", be_map(s), mark_text(b.mark), s.proto, s.port, b.addr, b.port);
                }
            }
        }
        for d in &l.direct {
            let _ = writeln!(out, "add element {t} dsr {{ {} }}", mark_text(d.mark));
        }
        for h in &l.hairpin {
            let v4 = h.backend.is_ipv4();
            let _ = writeln!(out, "add element {t} {} {{ {} . {} }}", if v4 { "hairpin4" } else { "hairpin6" }, mark_text(h.mark), h.backend);
            if let Some(vip) = h.source_vip.filter(|s| s.is_ipv4() == v4) {
                let _ = writeln!(out, "add element {t} {} {{ {} : {vip} }}", if v4 { "srcvip4" } else { "srcvip6" }, mark_text(h.mark));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::Proto;
    use crate::nft_lb::{Backend, Hairpin, LB_CT_MARK};

    fn b(mark: u32, ip: &str, port: u16) -> Backend {
        Backend { mark: LB_CT_MARK | mark, addr: ip.parse().unwrap(), port }
    }

    fn svc(backends: Vec<Backend>) -> Service {
        Service { frontend: Frontend::Vip("10.96.0.10".parse().unwrap()), proto: Proto::Tcp, port: 80, internal: false, local: false, preserve_dip: false, affinity: Affinity::None, backends }
    }

    fn state(s: Service) -> LbState {
        let hairpin = s.backends.iter().map(|b| Hairpin { mark: b.mark, backend: b.addr, source_vip: None }).collect();
        LbState { services: vec![s], hairpin, direct: vec![] }
    }

    #[test]
    fn replacing_a_backend_changes_elements_only() {
        let old = state(svc(vec![b(1, "172.20.0.5", 8080), b(2, "172.20.0.6", 8080)]));
        let new = state(svc(vec![b(1, "172.20.0.5", 8080), b(3, "172.20.0.7", 8080)]));
        let mut batch = Batch::new();
        build_update(&mut batch, &old, &new);
        // pick (index 1), be, hits and hairpin of the backend that leaves and of the one that
        // comes.
        assert_eq!(batch.len(), 8, "no chain or rule is touched");
        let mut same = Batch::new();
        build_update(&mut same, &new, &new);
        assert!(same.is_empty(), "no change, no batch");
        // One backend more: the chain's shape (mod N) changes.
        let three = state(svc(vec![b(1, "172.20.0.5", 8080), b(3, "172.20.0.7", 8080), b(4, "172.20.0.8", 8080)]));
        let t = rules_text(&three.services[0]);
        assert_eq!(t, vec!["ct mark set numgen random mod 3", "goto lb_vip4"]);
    }

    #[test]
    fn keys_are_padded_to_registers() {
        let s = svc(vec![b(1, "172.20.0.5", 8080)]);
        assert_eq!(service_key(&s), vec![10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0]);
        let e = elements(&state(s));
        let be = e.iter().find(|e| e.set == "be4").unwrap();
        assert_eq!(be.data, Data::Value(vec![172, 20, 0, 5, 0x1f, 0x90, 0, 0]));
    }
}
