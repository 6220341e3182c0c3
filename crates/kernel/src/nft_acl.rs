//! ACL policies (HNS `ACL` / `NetworkACL`) in the kernel: a pure compiler from the ACL state
//! of every endpoint to nft programs in hns's own ACL tables, and the thin layer that runs them.
//!
//! Layout (both tables are named [`ACL_TABLE`]):
//! - `table bridge hns_acl`: endpoints whose host veth is a bridge port (nat, overlay). Bridged
//!   neighbour traffic never reaches the inet forward hook as its port, so the bridge family
//!   hooks are the only place that sees the port a packet came in on and goes out of.
//! - `table inet hns_acl`: endpoints routed through their host veth (l2bridge), plus the
//!   connection-state marker below.
//!
//! Dispatch is O(1) in the number of endpoints and rules: four verdict maps keyed on the host
//! veth name (`sw_in`, `sw_out`, `host_in`, `host_out`) jump to the endpoint's own chains.
//! `Out` is what the endpoint sends (`iifname` = its veth), `In` what it receives (`oifname`).
//! Switch chains see every packet of the endpoint (forward, input and output hooks); Host
//! chains only traffic with the host itself (input and output hooks), after the Switch stage:
//! host traffic must pass both.
//!
//! An endpoint's rules are data, not rules: every stage chain is the same three rules, a
//! lookup of `protocol . saddr . sport . daddr . dport` in the stage's IPv4 map, the same in
//! its IPv6 map, and `drop`. The maps (concatenated intervals, one element per box) hold the
//! rules resolved by priority into disjoint boxes ([`crate::acl_boxes`]): an Allow box
//! `return`s (so the peer endpoint's chain still runs for neighbour traffic), a Block box
//! drops, a miss falls to the final drop. One lookup per family whatever the number of rules,
//! and a rule added or removed changes elements only: the kernel validates the whole table
//! whenever a rule is written (every chain reachable from a base chain: ~12 ms at 10 000
//! rules), never for an element with a `return` or `drop` verdict. Each element counts its
//! packets and carries its rule's [`rule_comment`], so the counters still read per rule. A
//! scope (Switch or Host) with rules has both its stages; a scope without rules has none of
//! its objects, so an endpoint with Switch rules only has two chains and four maps.
//!
//! Statefulness: this kernel has no `nf_conntrack_bridge`, so `ct` cannot be used in a bridge
//! table. Bridged IP traffic is still tracked by br_netfilter in the inet prerouting/output
//! hooks; a chain there sets bit [`ESTABLISHED_MARK`] of the packet mark on packets of
//! established or related connections and clears it on all others, and the dispatch chains
//! accept packets with that bit set before any verdict map. So replies of an allowed connection pass, and a Block
//! rule added later does not cut a connection that is already established (as with conntrack
//! based firewalls); it stops new ones.
//!
//! Established packets, non-IP frames and IPv6 neighbour discovery are accepted at the top of
//! the dispatch chains, before the verdict maps (once, not in every endpoint chain).
//!
//! hnsd writes these tables through nfnetlink ([`crate::nft_batch`]), not `nft -f`: nft 1.0.6
//! lists every chain, rule and set of the table into its cache before applying even a small
//! transaction, which made one endpoint's update cost seconds at 1000 endpoints. An update of
//! one endpoint is one netlink batch that rewrites that endpoint's map elements only (its
//! chains and maps too when they may be missing: [`Prior`]), applied atomically by the kernel:
//! a packet sees the old rule set or the new one, and the cost does not depend on the size of
//! the tables. The same state is also compiled to nft
//! notation ([`compile_all`], [`compile_endpoint`]): the readable reference that the tests
//! compare the kernel's tables against (both must list identically through `nft`).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::acl_boxes::{self, AclBox, Span};
use crate::nft_batch::{self, AnonSet, Base, Batch, CmpOp, Expr, Family, Hook, Load, MetaKey, RangeElement, Verdict};

/// Name of the ACL tables (one per family, see the module doc).
pub const ACL_TABLE: &str = "hns_acl";
/// Packet-mark bit meaning "this packet belongs to an established or related connection".
pub const ESTABLISHED_MARK: u32 = 0x0080_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Received by the endpoint.
    In,
    /// Sent by the endpoint.
    Out,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every packet of the endpoint, neighbours on its network included.
    Switch,
    /// Traffic between the endpoint and the host itself.
    Host,
}

/// One typed ACL rule. Empty lists mean "any".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub action: Action,
    pub direction: Direction,
    pub scope: Scope,
    pub priority: u16,
    /// IP protocol numbers; empty = any (HNS "256").
    #[serde(default)]
    pub protocols: Vec<u8>,
    #[serde(default)]
    pub local: Vec<IpNet>,
    #[serde(default)]
    pub remote: Vec<IpNet>,
    /// Inclusive ranges.
    #[serde(default)]
    pub local_ports: Vec<(u16, u16)>,
    #[serde(default)]
    pub remote_ports: Vec<(u16, u16)>,
}

/// Which table an endpoint's chains live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attach {
    /// The host veth is a bridge port (nat, overlay).
    BridgePort,
    /// The host veth is routed (l2bridge).
    Routed,
}

impl Attach {
    fn family(self) -> &'static str {
        match self {
            Attach::BridgePort => "bridge",
            Attach::Routed => "inet",
        }
    }
}

/// The ACL state of one attached endpoint: its host veth and its effective rules (its own and
/// its network's, in any order).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointAcl {
    pub host_if: String,
    pub attach: Attach,
    pub rules: Vec<Rule>,
}

const STAGES: [(Scope, Direction, &str); 4] =
    [(Scope::Switch, Direction::In, "sw_in"), (Scope::Switch, Direction::Out, "sw_out"), (Scope::Host, Direction::In, "host_in"), (Scope::Host, Direction::Out, "host_out")];

fn chain_name(host_if: &str, stage: &str) -> String {
    format!("{host_if}_{stage}")
}

/// The map of one stage and family: its rules as decided boxes ([`crate::acl_boxes`]).
fn map_name(host_if: &str, stage: &str, v6: bool) -> String {
    format!("{host_if}_{stage}_{}", if v6 { 6 } else { 4 })
}

/// Evaluation order: ascending priority; at equal priority Block before Allow; then as given.
pub fn ordered(rules: &[Rule]) -> Vec<&Rule> {
    let mut v: Vec<&Rule> = rules.iter().collect();
    v.sort_by_key(|r| (r.priority, r.action == Action::Allow));
    v
}

/// Refuses rules that compile to more match boxes than one endpoint's map may hold.
pub fn check(rules: &[Rule]) -> std::result::Result<(), String> {
    acl_boxes::check(&ordered(rules))
}

/// How much of an endpoint's ACL objects may exist when its state is written in full. (A
/// change of an endpoint whose objects are in place is [`build_change`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    /// The tables are created in the same batch: nothing of the endpoint exists.
    Fresh,
    /// Anything of the endpoint may exist, or be damaged: all of it is rewritten
    /// (idempotently; its rules make the kernel validate the table once).
    Unknown,
}

/// The datatypes (nft's numbers) and lengths of a stage map's key: protocol . source address
/// . source port . destination address . destination port.
fn key_fields(v6: bool) -> [(u32, u32); 5] {
    let (addr, len) = if v6 { (nft_batch::DT_IP6ADDR, 16) } else { (nft_batch::DT_IPADDR, 4) };
    [(nft_batch::DT_INET_PROTOCOL, 1), (addr, len), (nft_batch::DT_INET_SERVICE, 2), (addr, len), (nft_batch::DT_INET_SERVICE, 2)]
}

/// The map's type in nft notation.
fn key_type_text(v6: bool) -> String {
    let a = if v6 { "ipv6_addr" } else { "ipv4_addr" };
    format!("inet_proto . {a} . inet_service . {a} . inet_service")
}

/// The last `len` bytes of `v` (big-endian), padded with zeros to a register's 4 bytes, as
/// the kernel stores each field of a concatenated key.
fn field(v: u128, len: u32) -> Vec<u8> {
    let mut out = v.to_be_bytes()[16 - len as usize..].to_vec();
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn key_bytes(b: &AclBox, v6: bool, end: bool) -> Vec<u8> {
    key_fields(v6).iter().zip(b.0).flat_map(|((_, len), s)| field(if end { s.1 } else { s.0 }, *len)).collect()
}

fn span_text(s: Span, show: impl Fn(u128) -> String) -> String {
    if s.0 == s.1 { show(s.0) } else { format!("{}-{}", show(s.0), show(s.1)) }
}

fn box_text(b: &AclBox, v6: bool) -> String {
    let addr = |v: u128| if v6 { std::net::Ipv6Addr::from(v).to_string() } else { std::net::Ipv4Addr::from(v as u32).to_string() };
    let num = |v: u128| v.to_string();
    [span_text(b.0[0], num), span_text(b.0[1], addr), span_text(b.0[2], num), span_text(b.0[3], addr), span_text(b.0[4], num)].join(" . ")
}

/// Whether the endpoint has a stage `scope` at all: a stage with no rule lets everything
/// through; one rule of it in either direction makes both directions default-deny.
fn has_stage(rules: &[Rule], scope: Scope) -> bool {
    rules.iter().any(|r| r.scope == scope)
}

/// The stages an endpoint's rules use: both directions of each scope that has a rule. A
/// scope without rules has no chains, maps or dispatch elements at all (its dispatch maps
/// miss, which lets the packet through as the stage would): most endpoints have Switch rules
/// only, and each map costs the kernel a linear name lookup whenever any map of the table
/// is written or read (nf_tables keeps a table's sets in a list).
fn stages_of(rules: &[Rule]) -> impl Iterator<Item = (Scope, Direction, &'static str)> + '_ {
    STAGES.into_iter().filter(|(scope, _, _)| has_stage(rules, *scope))
}

/// The families (`false`: IPv4, `true`: IPv6) a stage chain has a map and a lookup for: those
/// some rule of the stage can match ([`acl_boxes::matches_family`]). Rules that all name
/// IPv4 addresses give no IPv6 map, and a direction without rules none at all (its chain only
/// drops): a missing map and its lookup decide as an empty map would (the packet falls
/// through to the chain's drop), and every map costs the kernel a walk of the table's list of
/// sets whenever any map of the table is written (most endpoints have IPv4 rules only, so
/// this halves that list).
fn stage_families(rules: &[Rule], scope: Scope, dir: Direction) -> Vec<bool> {
    [false, true].into_iter().filter(|v6| rules.iter().any(|r| r.scope == scope && r.direction == dir && acl_boxes::matches_family(r, *v6))).collect()
}

/// Whether `old`'s kernel objects can be turned into `new`'s by changing map elements only
/// ([`build_change`]): same veth and table, rules in the same scopes (a scope that gains or
/// loses its first rule gains or loses chains) and each stage's maps for the same families.
pub fn changeable(old: &EndpointAcl, new: &EndpointAcl) -> bool {
    old.host_if == new.host_if
        && old.attach == new.attach
        && !old.rules.is_empty()
        && [Scope::Switch, Scope::Host].iter().all(|s| has_stage(&old.rules, *s) == has_stage(&new.rules, *s))
        && STAGES.iter().all(|(scope, dir, _)| stage_families(&old.rules, *scope, *dir) == stage_families(&new.rules, *scope, *dir))
}

/// The elements of one stage map: the stage's decided boxes (Allow returns to the dispatch
/// chain, Block drops; each labelled with its rule's [`rule_comment`]).
pub fn stage_elements(e: &EndpointAcl, ordered: &[&Rule], scope: Scope, dir: Direction, v6: bool) -> Vec<(AclBox, RangeElement)> {
    let element = |b: AclBox, verdict: Verdict, comment: String| (b, RangeElement { key: key_bytes(&b, v6, false), key_end: key_bytes(&b, v6, true), verdict, comment });
    acl_boxes::stage(ordered, scope, dir, v6)
        .into_iter()
        .map(|d| {
            let verdict = match d.action {
                Action::Allow => Verdict::Return,
                Action::Block => Verdict::Drop,
            };
            element(d.b, verdict, rule_comment(&e.host_if, ordered[d.rule]))
        })
        .collect()
}

/// The rules of an endpoint stage chain (nft notation): one map lookup per family of
/// `families` (a miss falls through), then the default drop.
fn chain_lines(host_if: &str, stage: &str, families: &[bool]) -> Vec<String> {
    let mut lines: Vec<String> = families
        .iter()
        .map(|v6| {
            let kw = if *v6 { "ip6" } else { "ip" };
            format!("meta l4proto . {kw} saddr . th sport . {kw} daddr . th dport vmap @{}", map_name(host_if, stage, *v6))
        })
        .collect();
    lines.push("drop".into());
    lines
}

/// The prelude of the dispatch chains (nft notation), before the verdict maps: packets of
/// established connections, non-IP frames and IPv6 neighbour discovery are not what ACLs are
/// about. `accept` in a base chain only ends that chain, as the endpoint chains' `return`
/// did when the prelude was repeated in each of them.
fn prelude_lines(attach: Attach) -> Vec<String> {
    let mut lines = vec![format!("meta mark & {ESTABLISHED_MARK:#x} == {ESTABLISHED_MARK:#x} accept")];
    if attach == Attach::BridgePort {
        lines.push("ether type != { ip, ip6 } accept".into());
    }
    // Neighbour discovery is IPv6's ARP.
    lines.push("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept".into());
    lines
}

/// What identifies the kernel elements of an ACL rule (their comment; all of them share it): the
/// endpoint's host veth and a fingerprint of the rule's content, which hnsd recomputes from
/// its records to label the counters. Not the rule's place in the evaluation order: a rule
/// added before it would relabel every element after it, and a change would rewrite them
/// all. Not the rule's Id alone: it is optional, need not be unique and is free text. (The
/// std hasher with its fixed keys: stable within a build; after an upgrade that changes it
/// the periodic check sees other comments and rewrites the elements once.)
pub fn rule_comment(host_if: &str, rule: &Rule) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    rule.hash(&mut h);
    format!("hns:{host_if}:{:016x}", h.finish())
}

/// The set of each ACL table that records which state every endpoint's objects were last
/// written from: one element per endpoint with rules (its host veth), commented with
/// [`state_digest`], written in the same transaction as the objects. A start-up pass reads it
/// in one dump instead of every map (each map read costs a walk of the table's list of sets:
/// ~1 ms per endpoint at 1 000), and a crash between the store's commit and the kernel's shows
/// as a digest that is not the store's.
pub const DIGEST_SET: &str = "acl_state";

/// A fingerprint of the rules an endpoint's objects are written from (see [`DIGEST_SET`]).
pub fn state_digest(e: &EndpointAcl) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    e.rules.hash(&mut h);
    format!("hns:{:016x}", h.finish())
}

/// Packets and bytes counted by each ACL rule in the kernel, by [`rule_comment`] (summed over
/// the rule's elements in every stage map of both tables; one dump per map).
pub fn rule_hits() -> Result<Vec<(String, u64, u64)>> {
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    let mut at = std::collections::HashMap::new();
    for fam in [Family::Bridge, Family::Inet] {
        for set in nft_batch::set_names(fam, ACL_TABLE)?.iter().filter(|s| *s != DIGEST_SET) {
            let elements = match nft_batch::set_elements(fam, ACL_TABLE, set) {
                Err(e) if e.errno == Some(libc::ENOENT) => continue,
                r => r?,
            };
            for e in elements.into_iter().filter(|e| !e.comment.is_empty()) {
                let i = *at.entry(e.comment.clone()).or_insert_with(|| {
                    out.push((e.comment.clone(), 0, 0));
                    out.len() - 1
                });
                out[i].1 += e.packets;
                out[i].2 += e.bytes;
            }
        }
    }
    Ok(out)
}

/// A dispatch chain: name, hook (nft name and number), its verdict maps in order (keyed on
/// iifname?).
type Dispatch = (&'static str, &'static str, Hook, [(&'static str, bool); 2]);
const DISPATCH: [Dispatch; 3] = [
    ("acl_forward", "forward", Hook::Forward, [("sw_out", true), ("sw_in", false)]),
    ("acl_input", "input", Hook::Input, [("sw_out", true), ("host_out", true)]),
    ("acl_output", "output", Hook::Output, [("sw_in", false), ("host_in", false)]),
];

fn skeleton(out: &mut String, attach: Attach) {
    let fam = attach.family();
    let _ = writeln!(out, "table {fam} {ACL_TABLE} {{");
    for (_, _, m) in STAGES {
        let _ = writeln!(out, "\tmap {m} {{ type ifname : verdict; }}");
    }
    let _ = writeln!(out, "\tset {DIGEST_SET} {{ type ifname; }}");
    if attach == Attach::Routed {
        for (name, hook) in [("mark_pre", "prerouting"), ("mark_out", "output")] {
            let _ = writeln!(
                out,
                "\tchain {name} {{ type filter hook {hook} priority -150; policy accept; meta mark set meta mark & {:#x}; ct state established,related meta mark set meta mark | {ESTABLISHED_MARK:#x}; }}",
                !ESTABLISHED_MARK
            );
        }
    }
    for (name, hook, _, maps) in DISPATCH {
        let mut body: Vec<String> = prelude_lines(attach);
        body.extend(maps.iter().map(|(m, iif)| format!("{} vmap @{m}", if *iif { "iifname" } else { "oifname" })));
        let _ = writeln!(out, "\tchain {name} {{ type filter hook {hook} priority -10; policy accept; {}; }}", body.join("; "));
    }
    let _ = writeln!(out, "}}");
}

/// The whole ACL state in nft notation: both tables replaced atomically (`nft -f`). The same
/// state as [`build_all`]; kept as the readable reference the netlink encoding is tested
/// against (tests/nft_acl.rs) and for debugging.
pub fn compile_all(eps: &[EndpointAcl]) -> String {
    let mut out = String::new();
    for fam in ["bridge", "inet"] {
        let _ = writeln!(out, "table {fam} {ACL_TABLE} {{}}\ndelete table {fam} {ACL_TABLE}");
    }
    if eps.iter().all(|e| e.rules.is_empty()) {
        return out;
    }
    // The inet table holds the connection-state marker, so it is needed by bridge ports too.
    skeleton(&mut out, Attach::BridgePort);
    skeleton(&mut out, Attach::Routed);
    for e in eps {
        out.push_str(&compile_endpoint(e, Prior::Fresh));
    }
    out
}

/// One endpoint's maps, chains and elements in nft notation (see [`build_endpoint`]).
pub fn compile_endpoint(e: &EndpointAcl, prior: Prior) -> String {
    let fam = e.attach.family();
    let t = format!("{fam} {ACL_TABLE}");
    let mut out = String::new();
    let q = quote(&e.host_if);
    let ordered = ordered(&e.rules);
    for (scope, dir, stage) in STAGES {
        let chain = chain_name(&e.host_if, stage);
        let maps = [(map_name(&e.host_if, stage, false), false), (map_name(&e.host_if, stage, true), true)];
        let map_def = |v6: bool| format!("{{ type {} : verdict; flags interval; counter; }}", key_type_text(v6));
        if !has_stage(&e.rules, scope) {
            if prior != Prior::Fresh {
                let _ = writeln!(out, "add chain {t} {chain}\nadd element {t} {stage} {{ {q} : jump {chain} }}\ndelete element {t} {stage} {{ {q} }}\nflush chain {t} {chain}\ndelete chain {t} {chain}");
                for (m, v6) in &maps {
                    let _ = writeln!(out, "add map {t} {m} {}\ndelete map {t} {m}", map_def(*v6));
                }
            }
            continue;
        }
        let families = stage_families(&e.rules, scope, dir);
        let (maps, unused): (Vec<_>, Vec<_>) = maps.into_iter().partition(|(_, v6)| families.contains(v6));
        for (m, v6) in &maps {
            let _ = writeln!(out, "add map {t} {m} {}", map_def(*v6));
        }
        let _ = writeln!(out, "add chain {t} {chain}");
        if prior == Prior::Unknown {
            let _ = writeln!(out, "flush chain {t} {chain}");
        }
        for line in chain_lines(&e.host_if, stage, &families) {
            let _ = writeln!(out, "add rule {t} {chain} {line}");
        }
        if prior != Prior::Fresh {
            // The map of a family the rules no longer match (no rule uses it since the flush).
            for (m, v6) in &unused {
                let _ = writeln!(out, "add map {t} {m} {}\ndelete map {t} {m}", map_def(*v6));
            }
        }
        for (m, v6) in &maps {
            if prior != Prior::Fresh {
                let _ = writeln!(out, "flush map {t} {m}");
            }
            let elements: Vec<String> = stage_elements(e, &ordered, scope, dir, *v6)
                .iter()
                .map(|(b, el)| {
                    let comment = if el.comment.is_empty() { String::new() } else { format!(" comment {}", quote(&el.comment)) };
                    let verdict = if el.verdict == Verdict::Drop { "drop" } else { "return" };
                    format!("{}{comment} : {verdict}", box_text(b, *v6))
                })
                .collect();
            if !elements.is_empty() {
                let _ = writeln!(out, "add element {t} {m} {{ {} }}", elements.join(", "));
            }
        }
        let _ = writeln!(out, "add element {t} {stage} {{ {q} : jump {chain} }}");
    }
    if prior != Prior::Fresh {
        let _ = writeln!(out, "add element {t} {DIGEST_SET} {{ {q} }}\ndelete element {t} {DIGEST_SET} {{ {q} }}");
    }
    if !e.rules.is_empty() {
        let _ = writeln!(out, "add element {t} {DIGEST_SET} {{ {q} comment {} }}", quote(&state_digest(e)));
    }
    out
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', ""))
}

/// Runs one program through `nft -f -` (one transaction). hnsd writes through netlink
/// ([`apply`]); this is for tests and tools.
pub fn run(program: &str) -> Result<()> {
    crate::nft::run_program(program, "apply nft ACL program", &format!("table {ACL_TABLE}"))
}

// ---- The same programs as nfnetlink batches (what hnsd runs) ----

fn nfamily(attach: Attach) -> Family {
    match attach {
        Attach::BridgePort => Family::Bridge,
        Attach::Routed => Family::Inet,
    }
}

/// Whether either ACL table exists at all (even empty or flushed).
pub fn any_table_exists() -> bool {
    ["bridge", "inet"].iter().any(|fam| Command::new("nft").args(["list", "table", fam, ACL_TABLE]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()))
}

/// "The packet is IPv4 (or IPv6)", as nft encodes the dependency of `ip`/`ip6`/`icmpv6`
/// matches: the ethertype in bridge tables, the hook's family in inet tables.
fn l3_check(attach: Attach, v4: bool) -> [Expr; 2] {
    match attach {
        Attach::BridgePort => [Expr::Meta(MetaKey::Protocol), Expr::cmp_eq(if v4 { vec![0x08, 0x00] } else { vec![0x86, 0xdd] })],
        Attach::Routed => [Expr::Meta(MetaKey::NfProto), Expr::cmp_eq(vec![if v4 { 2 } else { 10 }])],
    }
}

/// The rules of an endpoint stage chain as expressions: the same as [`chain_lines`]. The
/// key is loaded into consecutive registers, each field padded to 4 bytes (as nft does).
fn chain_exprs(host_if: &str, stage: &str, attach: Attach, families: &[bool]) -> Vec<Vec<Expr>> {
    let mut out = Vec::new();
    for &v6 in families {
        // (saddr, daddr) offsets in the network header, address length.
        let (saddr, daddr, len) = if v6 { (8, 24, 16) } else { (12, 16, 4) };
        let regs = len / 4;
        let r = nft_batch::REG32_00;
        let mut e: Vec<Expr> = l3_check(attach, !v6).into();
        e.extend([
            Expr::Load { from: Load::Meta(MetaKey::L4Proto), reg: r },
            Expr::Load { from: Load::Payload { base: Base::Network, offset: saddr, len }, reg: r + 1 },
            Expr::Load { from: Load::Payload { base: Base::Transport, offset: 0, len: 2 }, reg: r + 1 + regs },
            Expr::Load { from: Load::Payload { base: Base::Network, offset: daddr, len }, reg: r + 2 + regs },
            Expr::Load { from: Load::Payload { base: Base::Transport, offset: 2, len: 2 }, reg: r + 2 + 2 * regs },
            Expr::VmapAt { map: map_name(host_if, stage, v6), sreg: r },
        ]);
        out.push(e);
    }
    out.push(vec![Expr::Verdict(Verdict::Drop)]);
    out
}

fn prelude_exprs(attach: Attach) -> Vec<Vec<Expr>> {
    let accept = Expr::Verdict(Verdict::Accept);
    let m = ESTABLISHED_MARK.to_ne_bytes().to_vec();
    let mut out = vec![vec![Expr::Meta(MetaKey::Mark), Expr::Bitwise { mask: m.clone(), xor: vec![0; 4] }, Expr::cmp_eq(m), accept.clone()]];
    if attach == Attach::BridgePort {
        let ranges = [[0x08, 0x00], [0x86, 0xdd]].iter().map(|t| (t.to_vec(), t.to_vec())).collect();
        out.push(vec![
            Expr::Payload { base: Base::Link, offset: 12, len: 2 },
            Expr::Lookup { set: AnonSet { key_type: nft_batch::DT_ETHERTYPE, key_len: 2, ranges, interval: false }, invert: true },
            accept.clone(),
        ]);
    }
    let mut nd: Vec<Expr> = match attach {
        // nft's own dependency for icmpv6 in a bridge table is the link header's ethertype.
        Attach::BridgePort => vec![Expr::Payload { base: Base::Link, offset: 12, len: 2 }, Expr::cmp_eq(vec![0x86, 0xdd])],
        Attach::Routed => l3_check(attach, false).into(),
    };
    // nd-neighbor-solicit 135, nd-neighbor-advert 136, nd-router-solicit 133, nd-router-advert 134.
    let types = [135u8, 136, 133, 134].iter().map(|t| (vec![*t], vec![*t])).collect();
    nd.extend([
        Expr::Meta(MetaKey::L4Proto),
        Expr::cmp_eq(vec![58]),
        Expr::Payload { base: Base::Transport, offset: 0, len: 1 },
        Expr::Lookup { set: AnonSet { key_type: DT_ICMP6_TYPE, key_len: 1, ranges: types, interval: false }, invert: false },
        accept,
    ]);
    out.push(nd);
    out
}

/// nft's datatype number of `icmpv6_type` (display only).
const DT_ICMP6_TYPE: u32 = 29;

fn build_skeleton(b: &mut Batch, attach: Attach) {
    let fam = nfamily(attach);
    b.add_table(fam, ACL_TABLE);
    for (_, _, m) in STAGES {
        b.add_ifname_vmap(fam, ACL_TABLE, m);
    }
    b.add_ifname_set(fam, ACL_TABLE, DIGEST_SET);
    if attach == Attach::Routed {
        let keep = (!ESTABLISHED_MARK).to_ne_bytes().to_vec();
        for (name, hook) in [("mark_pre", Hook::Prerouting), ("mark_out", Hook::Output)] {
            b.add_base_chain(fam, ACL_TABLE, name, hook, -150);
            b.add_rule(fam, ACL_TABLE, name, &[Expr::Meta(MetaKey::Mark), Expr::Bitwise { mask: keep.clone(), xor: vec![0; 4] }, Expr::MetaSet(MetaKey::Mark)]);
            b.add_rule(
                fam,
                ACL_TABLE,
                name,
                &[
                    Expr::CtState,
                    // established (2) | related (4)
                    Expr::Bitwise { mask: 6u32.to_ne_bytes().to_vec(), xor: vec![0; 4] },
                    Expr::Cmp(CmpOp::Neq, vec![0; 4]),
                    Expr::Meta(MetaKey::Mark),
                    Expr::Bitwise { mask: keep.clone(), xor: ESTABLISHED_MARK.to_ne_bytes().to_vec() },
                    Expr::MetaSet(MetaKey::Mark),
                ],
            );
        }
    }
    for (name, _, hook, maps) in DISPATCH {
        b.add_base_chain(fam, ACL_TABLE, name, hook, -10);
        for rule in prelude_exprs(attach) {
            b.add_rule(fam, ACL_TABLE, name, &rule);
        }
        for (m, iif) in maps {
            b.add_rule(fam, ACL_TABLE, name, &[Expr::Meta(if iif { MetaKey::IifName } else { MetaKey::OifName }), Expr::Vmap(m.to_owned())]);
        }
    }
}

/// Appends the whole ACL state: both tables replaced in the same transaction. With no
/// endpoint under an ACL the tables are removed, so hns without ACLs leaves nothing behind.
pub fn build_all(b: &mut Batch, eps: &[EndpointAcl]) {
    for attach in [Attach::BridgePort, Attach::Routed] {
        b.add_table(nfamily(attach), ACL_TABLE);
        b.delete_table(nfamily(attach), ACL_TABLE);
    }
    if eps.iter().all(|e| e.rules.is_empty()) {
        return;
    }
    // The inet table holds the connection-state marker, so it is needed by bridge ports too.
    build_skeleton(b, Attach::BridgePort);
    build_skeleton(b, Attach::Routed);
    for e in eps {
        build_endpoint(b, e, Prior::Fresh);
    }
}

/// Appends one endpoint's maps, chains and elements in full (`prior`: what may exist already).
/// Every operation succeeds whether or not the object existed. A packet sees the old rules or
/// the new ones. With no rules the endpoint's chains and maps are removed.
pub fn build_endpoint(b: &mut Batch, e: &EndpointAcl, prior: Prior) {
    let fam = nfamily(e.attach);
    let key = nft_batch::ifname_key(&e.host_if);
    let ordered = ordered(&e.rules);
    for (scope, dir, stage) in STAGES {
        let chain = chain_name(&e.host_if, stage);
        let jump = Verdict::Jump(chain.clone());
        let maps = [(map_name(&e.host_if, stage, false), false), (map_name(&e.host_if, stage, true), true)];
        if !has_stage(&e.rules, scope) {
            if prior != Prior::Fresh {
                // Make each exist, then remove it: the element, the chain's rules, the chain,
                // the maps (no longer used by a rule).
                b.add_chain(fam, ACL_TABLE, &chain);
                b.add_element(fam, ACL_TABLE, stage, &key, Some(&jump));
                b.delete_element(fam, ACL_TABLE, stage, &key);
                b.flush_chain(fam, ACL_TABLE, &chain);
                b.delete_chain(fam, ACL_TABLE, &chain);
                for (m, v6) in &maps {
                    b.destroy_concat_vmap(fam, ACL_TABLE, m, &key_fields(*v6), MAP_UDATA);
                }
            }
            continue;
        }
        let families = stage_families(&e.rules, scope, dir);
        let (maps, unused): (Vec<_>, Vec<_>) = maps.into_iter().partition(|(_, v6)| families.contains(v6));
        for (m, v6) in &maps {
            b.add_concat_vmap(fam, ACL_TABLE, m, &key_fields(*v6), MAP_UDATA);
        }
        b.add_chain(fam, ACL_TABLE, &chain);
        if prior == Prior::Unknown {
            b.flush_chain(fam, ACL_TABLE, &chain);
        }
        for rule in chain_exprs(&e.host_if, stage, e.attach, &families) {
            b.add_rule(fam, ACL_TABLE, &chain, &rule);
        }
        if prior != Prior::Fresh {
            // The map of a family the rules no longer match (no rule uses it since the flush).
            for (m, v6) in &unused {
                b.destroy_concat_vmap(fam, ACL_TABLE, m, &key_fields(*v6), MAP_UDATA);
            }
        }
        for (m, v6) in &maps {
            if prior != Prior::Fresh {
                b.flush_set(fam, ACL_TABLE, m);
            }
            let elements: Vec<RangeElement> = stage_elements(e, &ordered, scope, dir, *v6).into_iter().map(|(_, el)| el).collect();
            b.add_range_elements(fam, ACL_TABLE, m, &elements);
        }
        // Nothing if it is there already (same chain).
        b.add_element(fam, ACL_TABLE, stage, &key, Some(&jump));
    }
    if prior != Prior::Fresh {
        b.add_element(fam, ACL_TABLE, DIGEST_SET, &key, None);
        b.delete_element(fam, ACL_TABLE, DIGEST_SET, &key);
    }
    if !e.rules.is_empty() {
        b.add_commented_element(fam, ACL_TABLE, DIGEST_SET, &key, &state_digest(e));
    }
}

/// Appends the change of a programmed endpoint from `old` to `new` (both with rules, same
/// veth): per stage map, the elements that went are deleted and the new ones added; maps
/// that did not change are not touched (each map a transaction touches costs the kernel
/// 0.1-0.5 ms on this machine, removing elements the most). One rule added or removed
/// usually changes one or two maps.
pub fn build_change(b: &mut Batch, old: &EndpointAcl, new: &EndpointAcl) {
    let fam = nfamily(new.attach);
    let (old_order, new_order) = (ordered(&old.rules), ordered(&new.rules));
    for (scope, dir, stage) in stages_of(&new.rules) {
        for v6 in stage_families(&new.rules, scope, dir) {
            let m = map_name(&new.host_if, stage, v6);
            let before: Vec<RangeElement> = stage_elements(old, &old_order, scope, dir, v6).into_iter().map(|(_, e)| e).collect();
            let after: Vec<RangeElement> = stage_elements(new, &new_order, scope, dir, v6).into_iter().map(|(_, e)| e).collect();
            // Deletions first: an element whose keys stay but whose verdict or rule changes
            // goes and comes back in the same transaction.
            let gone: Vec<RangeElement> = before.iter().filter(|e| !after.contains(e)).cloned().collect();
            b.delete_range_elements(fam, ACL_TABLE, &m, &gone);
            let added: Vec<RangeElement> = after.into_iter().filter(|e| !before.contains(e)).collect();
            b.add_range_elements(fam, ACL_TABLE, &m, &added);
        }
    }
    let digest = state_digest(new);
    if digest != state_digest(old) {
        let key = nft_batch::ifname_key(&new.host_if);
        b.delete_element(fam, ACL_TABLE, DIGEST_SET, &key);
        b.add_commented_element(fam, ACL_TABLE, DIGEST_SET, &key, &digest);
    }
}

/// nft's own description of a stage map's key (libnftnl "udata" TLVs, as `nft` writes them
/// for this key type): without it `nft list` could not print the elements in nft notation.
const MAP_UDATA: &[u8] = &[];

/// Appends the removal of an endpoint's chains and elements (it is detached or has no ACL).
pub fn build_remove(b: &mut Batch, host_if: &str, attach: Attach) {
    build_endpoint(b, &EndpointAcl { host_if: host_if.to_owned(), attach, rules: Vec::new() }, Prior::Unknown);
}

/// Applies a batch built with the functions above (one transaction).
pub fn apply(b: &Batch) -> Result<()> {
    nft_batch::apply(b)
}

/// Whether both ACL tables exist with their dispatch rules (a flushed or deleted table is
/// what a firewall reload does). Asks the kernel for the rules of one chain, not nft for the
/// table: the answer costs the same at any table size.
pub fn tables_present() -> bool {
    [Family::Bridge, Family::Inet].iter().all(|fam| nft_batch::chain_rule_count(*fam, ACL_TABLE, "acl_forward").is_ok_and(|n| n > 0))
}

/// The regular chains of one ACL table (empty if the table is missing).
pub fn chains(attach: Attach) -> Result<Vec<String>> {
    nft_batch::chain_names(nfamily(attach), ACL_TABLE)
}

/// The number of rules of one chain of an ACL table (0 if the chain or table is missing). The
/// kernel walks only that chain: ~15 us whatever the size of the table.
pub fn chain_rules(attach: Attach, chain: &str) -> Result<usize> {
    match nft_batch::chain_rule_count(nfamily(attach), ACL_TABLE, chain) {
        Err(e) if e.errno == Some(libc::ENOENT) => Ok(0),
        r => r,
    }
}

/// The chain names an endpoint's state needs (to find one that went missing): those of the
/// stages its rules use.
pub fn wanted_chains(e: &EndpointAcl) -> Vec<String> {
    stages_of(&e.rules).map(|(_, _, stage)| chain_name(&e.host_if, stage)).collect()
}

/// Whether an endpoint's stage chains hold their rules (a chain flushed by hand lets the
/// endpoint's traffic through). Reads only those chains (~15 us each, whatever the size of
/// the tables: the kernel finds a chain by hash).
pub fn chains_intact(e: &EndpointAcl) -> bool {
    stages_of(&e.rules).all(|(scope, dir, stage)| {
        let written = stage_families(&e.rules, scope, dir).len() + 1;
        chain_rules(e.attach, &chain_name(&e.host_if, stage)).is_ok_and(|n| n == written)
    })
}

/// Whether an endpoint's objects in the kernel differ from its state: a stage chain without
/// its rules or a map whose elements are not the compiled ones (missing, added or changed by
/// hand). Reads only that endpoint's chains and maps; a map read costs a walk of the table's
/// list of sets (26 us for the first, 0.5 ms for the 4 000th).
pub fn endpoint_drifted(e: &EndpointAcl) -> bool {
    let fam = nfamily(e.attach);
    let ordered = ordered(&e.rules);
    !chains_intact(e)
        || stages_of(&e.rules).any(|(scope, dir, stage)| {
            stage_families(&e.rules, scope, dir).iter().any(|v6| {
                let wanted = stage_elements(e, &ordered, scope, dir, *v6);
                match nft_batch::set_elements(fam, ACL_TABLE, &map_name(&e.host_if, stage, *v6)) {
                    Ok(have) => have.len() != wanted.len() || !wanted.iter().all(|(_, w)| have.iter().any(|h| w.same_as(h))),
                    Err(_) => true,
                }
            })
        })
}

/// The names of the ACL tables' objects and the endpoints' digests, read in one dump of each
/// table's chains, one of its sets, one of each dispatch map and one of [`DIGEST_SET`] (a few
/// milliseconds at thousands of endpoints): what went missing (an endpoint whose dispatch
/// element was deleted is not filtered at all), what was written from another state than the
/// store's (a crash between the two) and what no endpoint wants (left by a crash, or by
/// hand), without reading every map.
#[derive(Debug, Default)]
pub struct Inventory {
    /// (table, chain name)
    chains: HashSet<(Attach, String)>,
    /// (table, map name)
    maps: HashSet<(Attach, String)>,
    /// (table, dispatch map, host veth, chain it jumps to)
    jumps: HashSet<(Attach, &'static str, String, String)>,
    /// (table, host veth) -> the digest of the state its objects were written from
    digests: std::collections::HashMap<(Attach, String), String>,
}

/// Objects of the table itself, not of an endpoint.
const SKELETON_CHAINS: [&str; 5] = ["acl_forward", "acl_input", "acl_output", "mark_pre", "mark_out"];

impl Inventory {
    pub fn read() -> Result<Inventory> {
        let mut inv = Inventory::default();
        for attach in [Attach::BridgePort, Attach::Routed] {
            let fam = nfamily(attach);
            inv.chains.extend(nft_batch::chain_names(fam, ACL_TABLE)?.into_iter().map(|c| (attach, c)));
            inv.maps.extend(nft_batch::set_names(fam, ACL_TABLE)?.into_iter().map(|m| (attach, m)));
            for (_, _, stage) in STAGES {
                for el in nft_batch::set_elements(fam, ACL_TABLE, stage)? {
                    if el.verdict == Some(Verdict::Jump(String::new()).code()) {
                        inv.jumps.insert((attach, stage, attr_ifname(&el.key), el.chain));
                    }
                }
            }
            for el in nft_batch::set_elements(fam, ACL_TABLE, DIGEST_SET)? {
                inv.digests.insert((attach, attr_ifname(&el.key)), el.comment);
            }
        }
        Ok(inv)
    }

    /// Whether every object `e` needs is there (its stages' chains, maps and dispatch
    /// elements) and was written from `e`'s rules (its digest).
    pub fn matches(&self, e: &EndpointAcl) -> bool {
        self.digests.get(&(e.attach, e.host_if.clone())) == Some(&state_digest(e)) && self.complete(e)
    }

    /// Whether every object `e` needs is there: its stages' chains, maps and dispatch elements.
    pub fn complete(&self, e: &EndpointAcl) -> bool {
        stages_of(&e.rules).all(|(scope, dir, stage)| {
            let chain = chain_name(&e.host_if, stage);
            self.jumps.contains(&(e.attach, stage, e.host_if.clone(), chain.clone()))
                && self.chains.contains(&(e.attach, chain))
                && stage_families(&e.rules, scope, dir).iter().all(|v6| self.maps.contains(&(e.attach, map_name(&e.host_if, stage, *v6))))
        })
    }

    /// The host veths (with their table) that own an object no state in `wanted` needs: a
    /// chain, map, dispatch element or digest of an endpoint without rules there, or of a
    /// stage its rules do not use. Names that are not an endpoint's are left alone.
    pub fn unwanted(&self, wanted: &[EndpointAcl]) -> Vec<(String, Attach)> {
        let mut need: HashSet<(Attach, String)> = HashSet::new();
        for e in wanted {
            for (scope, dir, stage) in stages_of(&e.rules) {
                need.insert((e.attach, chain_name(&e.host_if, stage)));
                for v6 in stage_families(&e.rules, scope, dir) {
                    need.insert((e.attach, map_name(&e.host_if, stage, v6)));
                }
            }
        }
        let owner = |name: &str| {
            STAGES.iter().find_map(|(_, _, stage)| {
                [format!("_{stage}"), format!("_{stage}_4"), format!("_{stage}_6")].iter().find_map(|suffix| name.strip_suffix(suffix.as_str()).filter(|h| !h.is_empty()).map(str::to_owned))
            })
        };
        let mut out: Vec<(String, Attach)> = Vec::new();
        let mut note = |host_if: String, attach: Attach| {
            if !out.contains(&(host_if.clone(), attach)) {
                out.push((host_if, attach));
            }
        };
        for (attach, name) in self.chains.iter().chain(&self.maps) {
            if SKELETON_CHAINS.contains(&name.as_str()) || name == DIGEST_SET || STAGES.iter().any(|(_, _, m)| m == name) || need.contains(&(*attach, name.clone())) {
                continue;
            }
            if let Some(h) = owner(name) {
                note(h, *attach);
            }
        }
        for (attach, _, host_if, chain) in &self.jumps {
            if !need.contains(&(*attach, chain.clone())) {
                note(host_if.clone(), *attach);
            }
        }
        for (attach, host_if) in self.digests.keys() {
            if !wanted.iter().any(|e| e.attach == *attach && e.host_if == *host_if) {
                note(host_if.clone(), *attach);
            }
        }
        out
    }
}

/// An interface name from a dispatch map's key (NUL-padded).
fn attr_ifname(key: &[u8]) -> String {
    String::from_utf8_lossy(key.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// Whether the dispatch and marker chains of both tables hold as many rules as written (a
/// rule deleted by hand from one of them; the endpoint chains are checked per endpoint).
pub fn skeleton_intact() -> bool {
    [Attach::BridgePort, Attach::Routed].iter().all(|attach| {
        let count = |chain: &str| nft_batch::chain_rule_count(nfamily(*attach), ACL_TABLE, chain).ok();
        let marks_ok = *attach == Attach::BridgePort || ["mark_pre", "mark_out"].iter().all(|c| count(c) == Some(2));
        marks_ok && DISPATCH.iter().all(|(name, _, _, maps)| count(name) == Some(prelude_exprs(*attach).len() + maps.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: Action, dir: Direction, prio: u16) -> Rule {
        Rule {
            id: String::new(),
            action,
            direction: dir,
            scope: Scope::Switch,
            priority: prio,
            protocols: vec![],
            local: vec![],
            remote: vec![],
            local_ports: vec![],
            remote_ports: vec![],
        }
    }

    #[test]
    fn order_is_priority_then_block_first_then_given() {
        let mut a = rule(Action::Allow, Direction::In, 200);
        a.id = "a".into();
        let mut b = rule(Action::Block, Direction::In, 200);
        b.id = "b".into();
        let mut c = rule(Action::Allow, Direction::In, 100);
        c.id = "c".into();
        let mut d = rule(Action::Allow, Direction::In, 200);
        d.id = "d".into();
        let all = [a, b, c, d];
        let ids: Vec<&str> = ordered(&all).iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a", "d"]);
    }

    #[test]
    fn keys_are_fields_padded_to_registers_in_network_order() {
        let r = Rule { protocols: vec![6], local_ports: vec![(80, 80)], remote: vec!["10.0.0.0/8".parse().unwrap()], ..rule(Action::Allow, Direction::In, 1) };
        let e = EndpointAcl { host_if: "hnv1".into(), attach: Attach::BridgePort, rules: vec![r] };
        let o = ordered(&e.rules);
        let els = stage_elements(&e, &o, Scope::Switch, Direction::In, false);
        assert_eq!(els.len(), 1);
        let el = &els[0].1;
        // proto . saddr (remote) . sport . daddr (local) . dport
        assert_eq!(el.key, vec![6, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(el.key_end, vec![6, 0, 0, 0, 10, 255, 255, 255, 255, 255, 0, 0, 255, 255, 255, 255, 0, 80, 0, 0]);
        assert_eq!((el.verdict.clone(), el.comment.clone()), (Verdict::Return, rule_comment("hnv1", &e.rules[0])));
        assert!(el.comment.starts_with("hns:hnv1:") && el.comment.len() == "hns:hnv1:".len() + 16, "{}", el.comment);
        assert_eq!(box_text(&els[0].0, false), "6 . 10.0.0.0-10.255.255.255 . 0-65535 . 0.0.0.0-255.255.255.255 . 80");
        // The other direction of the stage has no rule: default deny (no element), while the
        // Host scope, without any rule, has no objects at all (its dispatch maps miss).
        assert!(stage_elements(&e, &o, Scope::Switch, Direction::Out, false).is_empty());
        assert_eq!(wanted_chains(&e), ["hnv1_sw_in", "hnv1_sw_out"]);
        assert!(!compile_endpoint(&e, Prior::Fresh).contains("host"));
    }

    #[test]
    fn unwanted_objects_are_named_by_their_endpoint() {
        let sw = |h: &str| EndpointAcl { host_if: h.into(), attach: Attach::BridgePort, rules: vec![rule(Action::Allow, Direction::In, 1)] };
        let mut inv = Inventory::default();
        let b = Attach::BridgePort;
        for name in ["acl_forward", "sw_in", "host_out", "a_sw_in", "a_sw_out", "b_host_in", "my_chain"] {
            inv.chains.insert((b, name.into()));
        }
        for name in ["a_sw_in_4", "a_sw_in_6", "c_sw_in_6"] {
            inv.maps.insert((b, name.into()));
        }
        inv.jumps.insert((b, "sw_in", "a".into(), "a_sw_in".into()));
        inv.jumps.insert((b, "sw_out", "a".into(), "a_sw_out".into()));
        inv.jumps.insert((b, "host_in", "d".into(), "d_host_in".into()));
        assert!(inv.complete(&sw("a")) && !inv.complete(&sw("c")));
        // b: a stage `a` does not use; c: a map of an endpoint without rules; d: a dispatch
        // element; skeleton objects and names that are no endpoint's stay.
        let mut got = inv.unwanted(&[sw("a")]);
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(got, [("b".into(), b), ("c".into(), b), ("d".into(), b)]);
        // A map of a direction without rules (its chain only drops) is unwanted too.
        inv.maps.insert((b, "a_sw_out_4".into()));
        assert!(inv.complete(&sw("a")) && inv.unwanted(&[sw("a")]).iter().any(|(h, _)| h == "a"));
        inv.maps.remove(&(b, "a_sw_out_4".into()));
        // `a` with Host rules only: its Switch objects are unwanted too.
        let host_only = EndpointAcl { rules: vec![Rule { scope: Scope::Host, ..rule(Action::Allow, Direction::In, 1) }], ..sw("a") };
        assert!(inv.unwanted(&[host_only]).iter().any(|(h, _)| h == "a"));
    }

    #[test]
    fn a_change_of_elements_only_keeps_the_scopes() {
        let sw = EndpointAcl { host_if: "a".into(), attach: Attach::BridgePort, rules: vec![rule(Action::Allow, Direction::In, 1)] };
        let more = EndpointAcl { rules: vec![rule(Action::Allow, Direction::In, 1), rule(Action::Block, Direction::Out, 2)], ..sw.clone() };
        let host = EndpointAcl { rules: vec![Rule { scope: Scope::Host, ..rule(Action::Allow, Direction::In, 3) }], ..more.clone() };
        let other_port = EndpointAcl { rules: vec![Rule { local_ports: vec![(80, 80)], ..rule(Action::Allow, Direction::In, 1) }, rule(Action::Block, Direction::Out, 2)], ..sw.clone() };
        assert!(changeable(&more, &other_port) && changeable(&other_port, &more));
        // A direction that gains its first rule gains its maps; so does a family.
        assert!(!changeable(&sw, &more) && !changeable(&more, &sw));
        let v4_only = |r: Rule| Rule { remote: vec!["10.0.0.0/8".parse().unwrap()], ..r };
        let v4 = EndpointAcl { rules: vec![v4_only(rule(Action::Allow, Direction::In, 1)), rule(Action::Block, Direction::Out, 2)], ..sw.clone() };
        assert!(!changeable(&more, &v4) && !changeable(&v4, &more));
        assert!(changeable(&v4, &EndpointAcl { rules: vec![v4_only(rule(Action::Block, Direction::In, 7)), rule(Action::Block, Direction::Out, 2)], ..sw.clone() }));
        assert!(!changeable(&sw, &host) && !changeable(&EndpointAcl { rules: vec![], ..sw.clone() }, &sw));
        assert!(!changeable(&sw, &EndpointAcl { host_if: "b".into(), ..sw.clone() }));
    }

    #[test]
    fn maps_exist_only_for_the_families_and_directions_the_rules_match() {
        let v4 = Rule { remote: vec!["10.0.0.0/8".parse().unwrap()], ..rule(Action::Allow, Direction::In, 5) };
        let e = EndpointAcl { host_if: "hnv1".into(), attach: Attach::BridgePort, rules: vec![v4] };
        let fresh = compile_endpoint(&e, Prior::Fresh);
        assert!(fresh.contains("add map bridge hns_acl hnv1_sw_in_4") && !fresh.contains("hnv1_sw_in_6") && !fresh.contains("hnv1_sw_out_"), "{fresh}");
        // The chain of the direction without rules only drops (what no rule allows is blocked).
        assert!(fresh.contains("add chain bridge hns_acl hnv1_sw_out\nadd rule bridge hns_acl hnv1_sw_out drop\n"), "{fresh}");
        assert!(fresh.contains("add rule bridge hns_acl hnv1_sw_in meta l4proto . ip saddr") && !fresh.contains("ip6 saddr"), "{fresh}");
        // Written over unknown objects, the maps it does not use go.
        let unknown = compile_endpoint(&e, Prior::Unknown);
        assert!(unknown.contains("delete map bridge hns_acl hnv1_sw_in_6") && unknown.contains("delete map bridge hns_acl hnv1_sw_out_4"), "{unknown}");
        let mut b = Batch::new();
        build_endpoint(&mut b, &e, Prior::Fresh);
        let sets = format!("{b:?}");
        assert!(sets.contains("add map bridge hns_acl hnv1_sw_in_4") && !sets.contains("hnv1_sw_in_6") && !sets.contains("hnv1_sw_out_"), "{sets}");
    }

    #[test]
    fn an_endpoint_written_in_full_or_removed() {
        let e = EndpointAcl { host_if: "hnv0123".into(), attach: Attach::BridgePort, rules: vec![rule(Action::Allow, Direction::Out, 5)] };
        let unknown = compile_endpoint(&e, Prior::Unknown);
        let c = rule_comment("hnv0123", &e.rules[0]);
        assert!(unknown.contains(&format!("flush map bridge hns_acl hnv0123_sw_out_4\nadd element bridge hns_acl hnv0123_sw_out_4 {{ 0-255 . 0.0.0.0-255.255.255.255 . 0-65535 . 0.0.0.0-255.255.255.255 . 0-65535 comment \"{c}\" : return }}")), "{unknown}");
        // A scope without rules: whatever of it exists is removed.
        assert!(unknown.contains("flush chain bridge hns_acl hnv0123_host_in\ndelete chain bridge hns_acl hnv0123_host_in"), "{unknown}");
        assert!(!unknown.contains("add rule bridge hns_acl hnv0123_host_in"), "{unknown}");
        assert!(unknown.contains("add element bridge hns_acl host_in { \"hnv0123\" : jump hnv0123_host_in }"));
        let removed = compile_endpoint(&EndpointAcl { host_if: "hnv0123".into(), attach: Attach::Routed, rules: vec![] }, Prior::Unknown);
        assert_eq!((removed.matches("delete chain inet hns_acl").count(), removed.matches("delete map inet hns_acl").count()), (4, 8));
        assert!(!removed.contains("add rule"));
        assert_eq!(compile_endpoint(&EndpointAcl { rules: vec![], ..e }, Prior::Fresh), "");
    }

    #[test]
    fn a_change_touches_only_the_maps_whose_elements_differ() {
        let base = vec![Rule { protocols: vec![6], local_ports: vec![(80, 80)], ..rule(Action::Allow, Direction::In, 100) }, rule(Action::Allow, Direction::Out, 1000)];
        let old = EndpointAcl { host_if: "hnv9".into(), attach: Attach::BridgePort, rules: base.clone() };
        // An IPv4-only rule of the In stage at a lower priority: one new element in one map.
        let mut new = old.clone();
        new.rules.push(Rule { protocols: vec![6], local_ports: vec![(443, 443)], remote: vec!["10.1.0.0/16".parse().unwrap()], ..rule(Action::Allow, Direction::In, 200) });
        let mut b = Batch::new();
        build_change(&mut b, &old, &new);
        // (Every change also replaces the endpoint's digest: two messages.)
        assert_eq!(b.len(), 1 + 2, "one message: the new element of hnv9_sw_in_4");
        // And back: one deletion.
        let mut b = Batch::new();
        build_change(&mut b, &new, &old);
        assert_eq!(b.len(), 1 + 2);
        // A Block at a higher priority inside the first rule's box splits it: the old box goes,
        // its pieces and the Block's box come, in that map only (and its IPv6 twin).
        let mut split = old.clone();
        split.rules.push(Rule { protocols: vec![6], local_ports: vec![(80, 80)], remote: vec!["10.0.0.0/8".parse().unwrap()], ..rule(Action::Block, Direction::In, 50) });
        let mut b = Batch::new();
        build_change(&mut b, &old, &split);
        assert_eq!(b.len(), 2 + 2, "a delete and an add in the IPv4 In map; the IPv6 map keeps its element");
        // Unchanged state: nothing at all.
        let mut b = Batch::new();
        build_change(&mut b, &old, &old);
        assert!(b.is_empty());
    }

    #[test]
    fn empty_state_removes_the_tables() {
        let p = compile_all(&[]);
        assert_eq!(p, "table bridge hns_acl {}\ndelete table bridge hns_acl\ntable inet hns_acl {}\ndelete table inet hns_acl\n");
    }

    #[test]
    fn whole_table_snapshot() {
        let e = EndpointAcl {
            host_if: "hnvA".into(),
            attach: Attach::BridgePort,
            rules: vec![
                Rule { protocols: vec![6], local_ports: vec![(80, 80)], ..rule(Action::Allow, Direction::In, 100) },
                Rule { scope: Scope::Host, ..rule(Action::Block, Direction::Out, 10) },
            ],
        };
        let (web, block) = (rule_comment("hnvA", &e.rules[0]), rule_comment("hnvA", &e.rules[1]));
        let p = compile_all(&[e]);
        let expected = "\
add map bridge hns_acl hnvA_sw_in_4 { type inet_proto . ipv4_addr . inet_service . ipv4_addr . inet_service : verdict; flags interval; counter; }
add map bridge hns_acl hnvA_sw_in_6 { type inet_proto . ipv6_addr . inet_service . ipv6_addr . inet_service : verdict; flags interval; counter; }
add chain bridge hns_acl hnvA_sw_in
add rule bridge hns_acl hnvA_sw_in meta l4proto . ip saddr . th sport . ip daddr . th dport vmap @hnvA_sw_in_4
add rule bridge hns_acl hnvA_sw_in meta l4proto . ip6 saddr . th sport . ip6 daddr . th dport vmap @hnvA_sw_in_6
add rule bridge hns_acl hnvA_sw_in drop
add element bridge hns_acl hnvA_sw_in_4 { 6 . 0.0.0.0-255.255.255.255 . 0-65535 . 0.0.0.0-255.255.255.255 . 80 comment \"WEB\" : return }
add element bridge hns_acl hnvA_sw_in_6 { 6 . ::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff . 0-65535 . ::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff . 80 comment \"WEB\" : return }
add element bridge hns_acl sw_in { \"hnvA\" : jump hnvA_sw_in }
"
        .replace("WEB", &web);
        assert!(p.contains(&expected), "{p}");
        assert!(p.contains(&format!("add element bridge hns_acl hnvA_host_out_4 {{ 0-255 . 0.0.0.0-255.255.255.255 . 0-65535 . 0.0.0.0-255.255.255.255 . 0-65535 comment \"{block}\" : drop }}")), "the Block rule: {p}");
        assert!(p.contains("ct state established,related meta mark set meta mark | 0x800000"));
        assert!(p.contains("chain acl_forward { type filter hook forward priority -10; policy accept; meta mark & 0x800000 == 0x800000 accept; ether type != { ip, ip6 } accept; icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept; iifname vmap @sw_out; oifname vmap @sw_in; }"), "{p}");
        assert!(!p.contains("hnvA_sw_in meta mark"), "the prelude runs once in the dispatch chain, not in every endpoint chain");
    }
}
