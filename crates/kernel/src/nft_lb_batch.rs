//! Load-balancer changes written over nfnetlink ([`crate::nft_batch`]), one atomic batch per
//! change, instead of `nft -f` (nft 1.0.6 lists the whole table into its cache first, so its
//! cost grew with the number of load balancers; a process per change costs milliseconds
//! too). The inputs are the typed state of [`crate::nft_lb`] (`LbState`, `Service`,
//! `Backend`, `Hairpin`); the table's skeleton (dispatch maps, base chains, `refuse`, the
//! hairpin rules) is written as nft text by [`crate::nft_lb::skeleton_program`] when the
//! whole table is rebuilt (rare: the table is missing or flushed).
//!
//! A service is map elements only, never a chain or a rule of its own. Why: any new rule or
//! new verdict-map element that jumps makes the kernel validate the table at commit, walking
//! every chain a verdict can reach (with a chain per service: 10 000 chains, milliseconds per
//! new service); and a rule that looks a map up "binds" it, which walks every element of the
//! map. Element changes of data maps bound by a few fixed rules do neither: they cost
//! microseconds whatever the number of services. So:
//! - the dispatch maps (`svc4`, `local4`, `node4`, ...) give the service's [`Shape`]: the
//!   number of backends, how one is drawn (random, or a hash of the client address, or of
//!   address and protocol), whether the service is internal, and which common chain it ends
//!   in. The skeleton's dispatch rule goes through the `shapes` verdict map to the shape's
//!   chain (`draw_*`), shared by every service of that shape, which draws the backend's
//!   index (`numgen`/`jhash` mod N) into the connection mark;
//! - the common chain (`lb_vip4`, `lb_vip6`, `lb_node4`, `lb_node6`) replaces the index by
//!   the backend's connection mark through `pick4`/`pick6`/`picknode4`/`picknode6` (keyed on
//!   the service's key and the index) and DNATs through `be4`/`be6` (keyed on the mark,
//!   protocol and frontend port). DSR and PreserveDIP services go to the `_direct` variants,
//!   which set the mark and do not DNAT (the skeleton's `dsr_route` delivers).
//!
//! A shape chain is written when the first service of that shape appears and removed with the
//! last one ([`Shapes`] counts them): a few dozen at most in practice. The marks are unique per
//! backend and load balancer, so the maps never mix services up.
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

/// The number of chains the table holds for `lbs` as [`rebuild`] writes it: the skeleton's,
/// the common chains and one per shape in use (what the drift check compares).
pub fn chain_count(lbs: &[&LbState]) -> usize {
    nft_lb::FIXED_CHAINS + COMMON.len() + Shapes::of(lbs).len()
}

/// What a service's chain of dispatch does: everything about it but its key and backends.
/// Services of one shape share its chain (`draw_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    /// Index in [`COMMON`]: family, frontend kind, DNAT or direct.
    common: u8,
    affinity: Affinity,
    internal: bool,
    /// Number of backends (0: refused).
    n: u32,
}

impl Shape {
    pub fn of(s: &Service) -> Shape {
        let n = s.backends.len() as u32;
        if n == 0 {
            // Refused whoever asks: one shape for all.
            return Shape { common: 0, affinity: Affinity::None, internal: false, n };
        }
        let common = COMMON.iter().position(|c| std::ptr::eq(c, common_of(s))).unwrap_or(0) as u8;
        // One backend: no draw, whatever the distribution.
        let affinity = if n == 1 { Affinity::None } else { s.affinity };
        Shape { common, affinity, internal: s.internal, n }
    }

    /// The value of the dispatch maps' elements: nonzero (a connection's mark starts at 0) and
    /// below [`nft_lb::LB_CT_MARK`] (the mark of a connection sent to a backend). Up to
    /// 2^25 backends per service fit.
    pub fn id(&self) -> u32 {
        let aff = match self.affinity {
            Affinity::None => 0,
            Affinity::SourceIp => 1,
            Affinity::SourceIpProtocol => 2,
        };
        1 + ((self.n << 6) | (u32::from(self.internal) << 5) | (aff << 3) | u32::from(self.common))
    }

    /// Its chain's name, e.g. `draw_vip4_srcip_3_ilb`.
    pub fn chain(&self) -> String {
        if self.n == 0 {
            return "draw_refuse".into();
        }
        let aff = match self.affinity {
            Affinity::None => "random",
            Affinity::SourceIp => "srcip",
            Affinity::SourceIpProtocol => "srcipproto",
        };
        let common = COMMON[self.common as usize].name.trim_start_matches("lb_");
        format!("draw_{common}_{aff}_{}{}", self.n, if self.internal { "_ilb" } else { "" })
    }
}

/// How many services of each shape the table holds: a shape's chain is written with its first
/// service and removed with its last.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Shapes(BTreeMap<Shape, usize>);

impl Shapes {
    pub fn of(lbs: &[&LbState]) -> Shapes {
        let mut out = Shapes::default();
        for s in lbs.iter().flat_map(|l| l.services.iter()) {
            *out.0.entry(Shape::of(s)).or_default() += 1;
        }
        out
    }

    /// Number of shapes in use (chains).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Counts the change from `old` to `new`: returns the shapes that come (first service)
    /// and those that go (last service), in order.
    fn change(&mut self, old: &LbState, new: &LbState) -> (Vec<Shape>, Vec<Shape>) {
        let mut delta: BTreeMap<Shape, i64> = BTreeMap::new();
        for s in &old.services {
            *delta.entry(Shape::of(s)).or_default() -= 1;
        }
        for s in &new.services {
            *delta.entry(Shape::of(s)).or_default() += 1;
        }
        let (mut come, mut go) = (Vec::new(), Vec::new());
        for (shape, d) in delta.into_iter().filter(|(_, d)| *d != 0) {
            let before = self.0.get(&shape).copied().unwrap_or(0);
            let after = (before as i64 + d).max(0) as usize;
            match (before, after) {
                (0, a) if a > 0 => come.push(shape),
                (b, 0) if b > 0 => go.push(shape),
                _ => {}
            }
            if after == 0 {
                self.0.remove(&shape);
            } else {
                self.0.insert(shape, after);
            }
        }
        (come, go)
    }
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
            out.insert(Element { set: m, key: key.clone(), data: Data::Value(Shape::of(s).id().to_ne_bytes().to_vec()) });
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
    for r in &l.remote {
        out.insert(Element { set: "remote", key: r.mark.to_ne_bytes().to_vec(), data: Data::None });
        let set = if r.source_vip.is_ipv4() { "srcvip4" } else { "srcvip6" };
        out.insert(Element { set, key: r.mark.to_ne_bytes().to_vec(), data: Data::Value(addr_bytes(r.source_vip)) });
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

/// The rules of a shape's chain as expressions (see the module doc; [`shape_text`] is the
/// same in nft notation).
fn shape_exprs(shape: &Shape) -> Vec<Vec<Expr>> {
    let mut out = Vec::new();
    let refuse = || Expr::Verdict(Verdict::Goto("refuse".into()));
    if shape.internal {
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
    if shape.n == 0 {
        out.push(vec![refuse()]);
        return out;
    }
    let common = &COMMON[shape.common as usize];
    let v6 = common.v6;
    let alen = if v6 { 16 } else { 4 };
    let n = shape.n;
    let mut pick = Vec::new();
    let saddr = Expr::Load { from: Load::Payload { base: Base::Network, offset: if v6 { 8 } else { 12 }, len: alen }, reg: REG32_00 };
    // nft's dependency of an `ip`/`ip6` match in an inet table: the hook's family.
    let dep = [Expr::Meta(MetaKey::NfProto), Expr::cmp_eq(vec![if v6 { 10 } else { 2 }])];
    match shape.affinity {
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
    out.push(vec![Expr::Verdict(Verdict::Goto(common.name.into()))]);
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

/// The rules of a shape's chain in nft notation: the reference the netlink encoding is
/// tested against (both must list identically through `nft`).
pub fn shape_text(shape: &Shape) -> Vec<String> {
    let mut out = Vec::new();
    if shape.internal {
        out.push("iif != 0 iifname != \"hns-*\" iifname != \"hnv*\" goto refuse".to_owned());
    }
    if shape.n == 0 {
        out.push("goto refuse".into());
        return out;
    }
    let common = &COMMON[shape.common as usize];
    let ip = if common.v6 { "ip6" } else { "ip" };
    let n = shape.n;
    let choice = match shape.affinity {
        Affinity::None => format!("numgen random mod {n}"),
        Affinity::SourceIp => format!("jhash {ip} saddr mod {n} seed {SEED:#x}"),
        Affinity::SourceIpProtocol => format!("jhash {ip} saddr . meta l4proto mod {n} seed {SEED:#x}"),
    };
    out.push(format!("ct mark set {choice}"));
    out.push(format!("goto {}", common.name));
    out
}

/// Appends the change from load balancer `old` to `new` (either may be empty: create,
/// delete): only their elements, and only what differs, plus the chain of a shape that comes
/// with its first service or goes with its last (`shapes` counts them and is updated). It
/// assumes the kernel holds `old` and `shapes`: if it does not, the batch fails as a whole and
/// the caller rebuilds.
pub fn build_update(b: &mut Batch, shapes: &mut Shapes, old: &LbState, new: &LbState) {
    let t = LB_TABLE;
    let (old_e, new_e) = (elements(old), elements(new));
    let (come, go) = shapes.change(old, new);
    // 1. Elements that go or change (dispatch with them: no packet reaches a shape that goes).
    for e in old_e.difference(&new_e) {
        b.delete_element(FAM, t, e.set, &e.key);
    }
    // 2. Shapes that go: their verdict element, then their chain.
    for shape in &go {
        b.delete_element(FAM, t, "shapes", &shape.id().to_ne_bytes());
        b.delete_chain(FAM, t, &shape.chain());
    }
    // 3. Shapes that come, before the elements that lead to them.
    for shape in &come {
        let c = shape.chain();
        b.add_chain(FAM, t, &c);
        for r in &shape_exprs(shape) {
            b.add_rule(FAM, t, &c, r);
        }
        b.add_element(FAM, t, "shapes", &shape.id().to_ne_bytes(), Some(&Verdict::Goto(c)));
    }
    // 4. Elements that come.
    for e in new_e.difference(&old_e) {
        match &e.data {
            Data::None => b.add_data_element(FAM, t, e.set, &e.key, None),
            Data::Value(v) => b.add_data_element(FAM, t, e.set, &e.key, Some(v)),
        }
    }
}

/// Applies a batch built with [`build_update`] (one transaction).
pub fn apply(b: &Batch) -> Result<()> {
    nft_batch::apply(b)
}

/// Rewrites the whole table for `lbs`: the skeleton and the shared maps as nft text (one
/// transaction that replaces the table), then every load balancer in one batch. With no
/// load balancer the table is removed. Returns the shapes the table now holds.
pub fn rebuild(lbs: &[&LbState]) -> Result<Shapes> {
    if lbs.is_empty() {
        nft_lb::run(&nft_lb::removal_program())?;
        return Ok(Shapes::default());
    }
    let mut program = nft_lb::skeleton_program();
    program.push_str(&maps_text());
    nft_lb::run(&program)?;
    let mut b = Batch::new();
    for c in &COMMON {
        b.add_chain(FAM, LB_TABLE, c.name);
        for r in common_exprs(c) {
            b.add_rule(FAM, LB_TABLE, c.name, &r);
        }
    }
    let mut shapes = Shapes::default();
    for l in lbs {
        build_update(&mut b, &mut shapes, &LbState::default(), l);
    }
    apply(&b)?;
    Ok(shapes)
}

fn mark_text(m: u32) -> String {
    format!("{m:#010x}")
}

/// The table's chains and rules for the service shapes `shapes`, without any element: what
/// the drift check compares ([`expected_shape`]).
pub fn rules_program(shapes: &Shapes) -> String {
    let mut out = nft_lb::skeleton_program();
    out.push_str(&maps_text());
    out.push_str(&common_chains_text());
    let t = format!("inet {LB_TABLE}");
    for shape in shapes.0.keys() {
        let c = shape.chain();
        let _ = writeln!(out, "add chain {t} {c}");
        for r in shape_text(shape) {
            let _ = writeln!(out, "add rule {t} {c} {r}");
        }
    }
    out
}

/// The chains and rules the table holds for `shapes`, as this kernel lists them (see
/// [`crate::nft::scratch_shape`]); the last one is kept until the shapes change.
pub fn expected_shape(shapes: &Shapes) -> std::result::Result<crate::nft::RuleShape, String> {
    static LAST: crate::nft::ShapeCache<Vec<Shape>> = crate::nft::ShapeCache::new();
    LAST.get(shapes.0.keys().cloned().collect(), || rules_program(shapes), &format!("inet {LB_TABLE}"))
}

/// The whole table for `lbs` in nft notation, laid out as [`rebuild`] writes it: the
/// reference of the kernel test (and a readable dump for debugging).
pub fn text_all(lbs: &[&LbState]) -> String {
    if lbs.is_empty() {
        return nft_lb::removal_program();
    }
    let mut out = nft_lb::skeleton_program();
    out.push_str(&maps_text());
    out.push_str(&common_chains_text());
    let t = format!("inet {LB_TABLE}");
    let mut shapes = Shapes::default();
    for l in lbs {
        let (come, _) = shapes.change(&LbState::default(), l);
        for shape in come {
            let c = shape.chain();
            let _ = writeln!(out, "add chain {t} {c}");
            for r in shape_text(&shape) {
                let _ = writeln!(out, "add rule {t} {c} {r}");
            }
            let _ = writeln!(out, "add element {t} shapes {{ {} : goto {c} }}", mark_text(shape.id()));
        }
        for s in &l.services {
            let key = match s.frontend {
                Frontend::Vip(ip) => format!("{ip} . {} . {}", s.proto, s.port),
                Frontend::Node { .. } => format!("{} . {}", s.proto, s.port),
            };
            for m in s.maps() {
                let _ = writeln!(out, "add element {t} {m} {{ {key} : {} }}", mark_text(Shape::of(s).id()));
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
        for r in &l.remote {
            let _ = writeln!(out, "add element {t} remote {{ {} }}", mark_text(r.mark));
            let _ = writeln!(out, "add element {t} {} {{ {} : {} }}", if r.source_vip.is_ipv4() { "srcvip4" } else { "srcvip6" }, mark_text(r.mark), r.source_vip);
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
        LbState { services: vec![s], hairpin, direct: vec![], remote: vec![] }
    }

    #[test]
    fn replacing_a_backend_changes_elements_only() {
        let old = state(svc(vec![b(1, "172.20.0.5", 8080), b(2, "172.20.0.6", 8080)]));
        let new = state(svc(vec![b(1, "172.20.0.5", 8080), b(3, "172.20.0.7", 8080)]));
        let mut shapes = Shapes::of(&[&old]);
        let mut batch = Batch::new();
        build_update(&mut batch, &mut shapes, &old, &new);
        // pick (index 1), be, hits and hairpin of the backend that leaves and of the one that
        // comes.
        assert_eq!(batch.len(), 8, "no chain or rule is touched");
        let mut same = Batch::new();
        build_update(&mut same, &mut shapes, &new, &new);
        assert!(same.is_empty(), "no change, no batch");
    }

    #[test]
    fn a_new_service_of_a_known_shape_is_elements_only() {
        let first = state(svc(vec![b(1, "172.20.0.5", 8080), b(2, "172.20.0.6", 8080)]));
        let mut shapes = Shapes::default();
        let mut batch = Batch::new();
        build_update(&mut batch, &mut shapes, &LbState::default(), &first);
        // The shape's chain, its two rules and its `shapes` element, then svc4, 2 x (pick, be,
        // hits, hairpin).
        assert_eq!(batch.len(), 4 + 1 + 8);
        let second = state(Service { port: 81, ..svc(vec![b(3, "172.20.0.7", 8080), b(4, "172.20.0.8", 8080)]) });
        let mut batch = Batch::new();
        build_update(&mut batch, &mut shapes, &LbState::default(), &second);
        assert_eq!(batch.len(), 1 + 8, "the shape exists: no chain, no rule");
        assert_eq!(shapes.len(), 1);
        // The first goes: its shape stays for the second.
        let mut batch = Batch::new();
        build_update(&mut batch, &mut shapes, &first, &LbState::default());
        assert_eq!(batch.len(), 1 + 8);
        // The last of the shape goes: its element and chain go too.
        let mut batch = Batch::new();
        build_update(&mut batch, &mut shapes, &second, &LbState::default());
        assert_eq!(batch.len(), 1 + 8 + 2);
        assert!(shapes.is_empty());
    }

    #[test]
    fn shapes_are_named_and_numbered_apart() {
        let two = svc(vec![b(1, "172.20.0.5", 8080), b(2, "172.20.0.6", 8080)]);
        let s = Shape::of(&two);
        assert_eq!(s.chain(), "draw_vip4_random_2");
        assert_eq!(shape_text(&s), vec!["ct mark set numgen random mod 2", "goto lb_vip4"]);
        let ilb = Shape::of(&Service { internal: true, affinity: Affinity::SourceIp, ..two.clone() });
        assert_eq!(ilb.chain(), "draw_vip4_srcip_2_ilb");
        assert_eq!(shape_text(&ilb)[1], "ct mark set jhash ip saddr mod 2 seed 0x686e73");
        let six = Shape::of(&Service { frontend: Frontend::Vip("fd00:96::10".parse().unwrap()), preserve_dip: true, affinity: Affinity::SourceIpProtocol, ..two.clone() });
        assert_eq!(six.chain(), "draw_vip6_direct_srcipproto_2");
        assert_eq!(shape_text(&six), vec!["ct mark set jhash ip6 saddr . meta l4proto mod 2 seed 0x686e73", "goto lb_vip6_direct"]);
        // One backend: no draw whatever the distribution; none: refused, one shape for all.
        let one = Shape::of(&Service { affinity: Affinity::SourceIp, backends: vec![b(1, "172.20.0.5", 8080)], ..two.clone() });
        assert_eq!(one.chain(), "draw_vip4_random_1");
        let none = Shape::of(&Service { internal: true, backends: vec![], ..two.clone() });
        assert_eq!((none.chain(), shape_text(&none)), ("draw_refuse".to_string(), vec!["goto refuse".to_string()]));
        // Every field changes the number; none reaches the backend mark bit or is 0.
        let ids: BTreeSet<u32> = [s, ilb, six, one, none].iter().map(|s| s.id()).collect();
        assert_eq!(ids.len(), 5);
        assert!(ids.iter().all(|&i| i != 0 && i < crate::nft_lb::LB_CT_MARK));
        assert!(Shape { common: 7, affinity: Affinity::SourceIpProtocol, internal: true, n: (1 << 25) - 1 }.id() < crate::nft_lb::LB_CT_MARK);
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
