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
//! host traffic must pass both. An allow rule `return`s (so the peer endpoint's chain still
//! runs for neighbour traffic), a block rule drops, and the chain ends in `drop`.
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
//! one endpoint is one netlink batch that rewrites that endpoint's chains and map elements
//! only, applied atomically by the kernel: a packet sees the old rule set or the new one, and
//! the cost does not depend on the size of the tables. The same state is also compiled to nft
//! notation ([`compile_all`], [`compile_endpoint`]): the readable reference that the tests
//! compare the kernel's tables against (both must list identically through `nft`).

use std::fmt::Write as _;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::nft_batch::{self, AnonSet, Base, Batch, CmpOp, Expr, Family, Hook, MetaKey, Verdict};

/// Name of the ACL tables (one per family, see the module doc).
pub const ACL_TABLE: &str = "hns_acl";
/// Packet-mark bit meaning "this packet belongs to an established or related connection".
pub const ESTABLISHED_MARK: u32 = 0x0080_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Received by the endpoint.
    In,
    /// Sent by the endpoint.
    Out,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Every packet of the endpoint, neighbours on its network included.
    Switch,
    /// Traffic between the endpoint and the host itself.
    Host,
}

/// One typed ACL rule. Empty lists mean "any".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Evaluation order: ascending priority; at equal priority Block before Allow; then as given.
pub fn ordered(rules: &[Rule]) -> Vec<&Rule> {
    let mut v: Vec<&Rule> = rules.iter().collect();
    v.sort_by_key(|r| (r.priority, r.action == Action::Allow));
    v
}

fn set<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if v.len() == 1 { v[0].clone() } else { format!("{{ {} }}", v.join(", ")) }
}

fn ports(p: &[(u16, u16)]) -> String {
    set(p.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }))
}

/// The nft rules (zero, one or two: one per address family) of one ACL rule in a chain of
/// direction `dir`.
pub fn rule_lines(r: &Rule, dir: Direction) -> Vec<String> {
    expand(r).iter().flat_map(|r| rule_lines_one(r, dir)).collect()
}

/// Up to this many combinations of a rule's lists are written as one nft rule each, without
/// sets. Creating a set costs the kernel a walk over every set of the table (sets are found by
/// name in a list, and `__set%d` names are allocated by scanning them), so anonymous sets in
/// endpoint chains would make an endpoint's update grow with the table again; a few more
/// rules in the endpoint's own chain cost nothing per packet of other endpoints. Larger
/// lists keep their (interval) sets.
pub const EXPAND_LIMIT: usize = 16;

/// The rule as rules with single-entry lists, when their number is at most [`EXPAND_LIMIT`]
/// (same verdict, first match: the same decision); otherwise the rule itself.
pub fn expand(r: &Rule) -> Vec<Rule> {
    let n = |l: usize| l.max(1);
    let product = n(r.protocols.len()) * n(r.local.len()) * n(r.remote.len()) * n(r.local_ports.len()) * n(r.remote_ports.len());
    if product == 1 || product > EXPAND_LIMIT {
        return vec![r.clone()];
    }
    fn split<T: Clone>(rules: Vec<Rule>, list: impl Fn(&mut Rule) -> &mut Vec<T>) -> Vec<Rule> {
        rules
            .into_iter()
            .flat_map(|mut r| {
                let items = list(&mut r).clone();
                if items.len() <= 1 {
                    return vec![r];
                }
                items
                    .into_iter()
                    .map(|i| {
                        let mut one = r.clone();
                        *list(&mut one) = vec![i];
                        one
                    })
                    .collect()
            })
            .collect()
    }
    let mut out = vec![r.clone()];
    out = split(out, |r| &mut r.local);
    out = split(out, |r| &mut r.remote);
    out = split(out, |r| &mut r.protocols);
    out = split(out, |r| &mut r.local_ports);
    split(out, |r| &mut r.remote_ports)
}

fn rule_lines_one(r: &Rule, dir: Direction) -> Vec<String> {
    let (laddr, raddr, lport, rport) = match dir {
        Direction::In => ("daddr", "saddr", "dport", "sport"),
        Direction::Out => ("saddr", "daddr", "sport", "dport"),
    };
    let mut common = String::new();
    if !r.protocols.is_empty() {
        let _ = write!(common, " meta l4proto {}", set(&r.protocols));
    }
    if !r.local_ports.is_empty() {
        let _ = write!(common, " th {lport} {}", ports(&r.local_ports));
    }
    if !r.remote_ports.is_empty() {
        let _ = write!(common, " th {rport} {}", ports(&r.remote_ports));
    }
    let verdict = match r.action {
        Action::Allow => "return",
        Action::Block => "drop",
    };
    if r.local.is_empty() && r.remote.is_empty() {
        return vec![format!("{}{common} {verdict}", "").trim_start().to_owned()];
    }
    let mut out = Vec::new();
    for (v4, kw) in [(true, "ip"), (false, "ip6")] {
        let of = |l: &[IpNet]| l.iter().filter(|n| matches!(n, IpNet::V4(_)) == v4).map(|n| n.trunc()).collect::<Vec<_>>();
        let (l, rm) = (of(&r.local), of(&r.remote));
        // A side that lists addresses but none of this family matches nothing of it.
        if (!r.local.is_empty() && l.is_empty()) || (!r.remote.is_empty() && rm.is_empty()) {
            continue;
        }
        let mut line = String::new();
        if !l.is_empty() {
            let _ = write!(line, "{kw} {laddr} {} ", set(&l));
        }
        if !rm.is_empty() {
            let _ = write!(line, "{kw} {raddr} {} ", set(&rm));
        }
        out.push(format!("{}{common} {verdict}", line.trim_end()).trim_start().to_owned());
    }
    out
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

/// The body of one endpoint chain (nft notation): the rules of `scope`/`dir` in evaluation
/// order, the default drop.
fn chain_body(host_if: &str, rules: &[Rule], scope: Scope, dir: Direction) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, r) in ordered(rules).into_iter().enumerate() {
        if r.scope == scope && r.direction == dir {
            let comment = quote(&rule_comment(host_if, i));
            lines.extend(rule_lines(r, dir).into_iter().map(|l| match l.rsplit_once(' ') {
                Some((m, verdict)) => format!("{m} counter {verdict} comment {comment}"),
                None => format!("counter {l} comment {comment}"),
            }));
        }
    }
    lines.push("drop".into());
    lines
}

/// What identifies the kernel rules of an ACL rule (their comment; all of them share it): the
/// endpoint's host veth and the rule's index in the endpoint's evaluation order
/// ([`ordered`] of its effective rules), which hnsd recomputes from its records to label the
/// counters. Not the rule's Id: it is optional, need not be unique and is free text.
pub fn rule_comment(host_if: &str, index: usize) -> String {
    format!("hns:{host_if}:{index}")
}

/// Packets and bytes counted by each ACL rule in the kernel, by [`rule_comment`] (both
/// tables; one dump each).
pub fn rule_hits() -> Result<Vec<(String, u64, u64)>> {
    let mut out = nft_batch::rule_hits(Family::Bridge, ACL_TABLE)?;
    out.extend(nft_batch::rule_hits(Family::Inet, ACL_TABLE)?);
    Ok(out)
}

/// Whether the endpoint has a stage `scope` at all: a stage with no rule lets everything
/// through; one rule of it in either direction makes both directions default-deny.
fn has_stage(rules: &[Rule], scope: Scope) -> bool {
    rules.iter().any(|r| r.scope == scope)
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
        out.push_str(&compile_endpoint(e, true));
    }
    out
}

/// One endpoint's chains and map elements in nft notation (see [`build_endpoint`]).
pub fn compile_endpoint(e: &EndpointAcl, fresh: bool) -> String {
    let fam = e.attach.family();
    let t = format!("{fam} {ACL_TABLE}");
    let mut out = String::new();
    let q = quote(&e.host_if);
    for (scope, dir, map) in STAGES {
        let chain = chain_name(&e.host_if, map);
        let wanted = has_stage(&e.rules, scope);
        if !fresh {
            // Make both exist, then take the element out and empty the chain.
            let _ = writeln!(out, "add chain {t} {chain}\nadd element {t} {map} {{ {q} : jump {chain} }}\ndelete element {t} {map} {{ {q} }}\nflush chain {t} {chain}");
            if !wanted {
                let _ = writeln!(out, "delete chain {t} {chain}");
            }
        }
        if wanted {
            if fresh {
                let _ = writeln!(out, "add chain {t} {chain}");
            }
            for line in chain_body(&e.host_if, &e.rules, scope, dir) {
                let _ = writeln!(out, "add rule {t} {chain} {line}");
            }
            let _ = writeln!(out, "add element {t} {map} {{ {q} : jump {chain} }}");
        }
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

fn net_range(n: &IpNet) -> (Vec<u8>, Vec<u8>) {
    let bytes = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    (bytes(n.network()), bytes(n.broadcast()))
}

/// Matches the address at `offset` of the network header against `nets` (one family): one
/// prefix as nft does it (load the prefix's bytes, mask a partial byte, compare), several
/// through an interval set.
fn addr_exprs(out: &mut Vec<Expr>, nets: &[IpNet], offset: u32) {
    let full = if matches!(nets[0], IpNet::V4(_)) { 4 } else { 16 };
    if let [n] = nets {
        let bits = n.prefix_len() as u32;
        // /0 as nft writes it: the whole address masked to nothing.
        // A partial byte: the whole address masked (as nft writes it).
        let len = if bits == 0 || !bits.is_multiple_of(8) { full } else { bits / 8 };
        let (net, _) = net_range(n);
        out.push(Expr::Payload { base: Base::Network, offset, len });
        if !bits.is_multiple_of(8) || bits == 0 {
            let mask: Vec<u8> = (0..len).map(|i| if (i + 1) * 8 <= bits { 0xff } else if i * 8 >= bits { 0 } else { 0xffu8 << (8 - bits % 8) }).collect();
            out.push(Expr::Bitwise { mask, xor: vec![0; len as usize] });
        }
        out.push(Expr::cmp_eq(net[..len as usize].to_vec()));
        return;
    }
    out.push(Expr::Payload { base: Base::Network, offset, len: full });
    let key_type = if full == 4 { nft_batch::DT_IPADDR } else { nft_batch::DT_IP6ADDR };
    out.push(Expr::Lookup { set: AnonSet { key_type, key_len: full, ranges: nets.iter().map(net_range).collect(), interval: true }, invert: false });
}

/// Matches the transport port at `offset` (0 source, 2 destination) against the ranges.
fn port_exprs(out: &mut Vec<Expr>, ports: &[(u16, u16)], offset: u32) {
    out.push(Expr::Payload { base: Base::Transport, offset, len: 2 });
    match ports {
        [(a, b)] if a == b => out.push(Expr::cmp_eq(a.to_be_bytes().to_vec())),
        [(a, b)] => {
            out.push(Expr::Cmp(CmpOp::Gte, a.to_be_bytes().to_vec()));
            out.push(Expr::Cmp(CmpOp::Lte, b.to_be_bytes().to_vec()));
        }
        _ => {
            let interval = ports.iter().any(|(a, b)| a != b);
            let ranges = ports.iter().map(|(a, b)| (a.to_be_bytes().to_vec(), b.to_be_bytes().to_vec())).collect();
            out.push(Expr::Lookup { set: AnonSet { key_type: nft_batch::DT_INET_SERVICE, key_len: 2, ranges, interval }, invert: false });
        }
    }
}

/// The rules (zero, one or two) of one ACL rule as expressions: the same as [`rule_lines`].
pub fn rule_exprs(r: &Rule, dir: Direction, attach: Attach) -> Vec<Vec<Expr>> {
    expand(r).iter().flat_map(|r| rule_exprs_one(r, dir, attach)).collect()
}

fn rule_exprs_one(r: &Rule, dir: Direction, attach: Attach) -> Vec<Vec<Expr>> {
    // (IPv4, IPv6) offsets in the network header: saddr (12, 8), daddr (16, 24).
    let (saddr, daddr) = ((12u32, 8u32), (16u32, 24u32));
    let (laddr, raddr, lport, rport) = match dir {
        Direction::In => (daddr, saddr, 2, 0),
        Direction::Out => (saddr, daddr, 0, 2),
    };
    let mut common = Vec::new();
    match r.protocols.as_slice() {
        [] => {}
        [p] => common.extend([Expr::Meta(MetaKey::L4Proto), Expr::cmp_eq(vec![*p])]),
        ps => common.extend([
            Expr::Meta(MetaKey::L4Proto),
            Expr::Lookup { set: AnonSet { key_type: nft_batch::DT_INET_PROTOCOL, key_len: 1, ranges: ps.iter().map(|p| (vec![*p], vec![*p])).collect(), interval: false }, invert: false },
        ]),
    }
    if !r.local_ports.is_empty() {
        port_exprs(&mut common, &r.local_ports, lport);
    }
    if !r.remote_ports.is_empty() {
        port_exprs(&mut common, &r.remote_ports, rport);
    }
    let verdict = Expr::Verdict(match r.action {
        Action::Allow => Verdict::Return,
        Action::Block => Verdict::Drop,
    });
    if r.local.is_empty() && r.remote.is_empty() {
        common.push(verdict);
        return vec![common];
    }
    let mut out = Vec::new();
    for v4 in [true, false] {
        let of = |l: &[IpNet]| l.iter().filter(|n| matches!(n, IpNet::V4(_)) == v4).map(|n| n.trunc()).collect::<Vec<_>>();
        let (l, rm) = (of(&r.local), of(&r.remote));
        if (!r.local.is_empty() && l.is_empty()) || (!r.remote.is_empty() && rm.is_empty()) {
            continue;
        }
        let mut e: Vec<Expr> = l3_check(attach, v4).into();
        let pick = |o: (u32, u32)| if v4 { o.0 } else { o.1 };
        if !l.is_empty() {
            addr_exprs(&mut e, &l, pick(laddr));
        }
        if !rm.is_empty() {
            addr_exprs(&mut e, &rm, pick(raddr));
        }
        e.extend(common.iter().cloned());
        e.push(verdict.clone());
        out.push(e);
    }
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
        build_endpoint(b, e, true);
    }
}

/// Appends one endpoint's chains and map elements: the cost depends on its rules only, not
/// on the size of the tables. `fresh`: the tables were just created in this batch, so
/// nothing of the endpoint exists yet; otherwise the batch first clears what may exist (every
/// operation succeeds whether or not the endpoint had chains before), so a packet sees the
/// old rules or the new ones.
pub fn build_endpoint(b: &mut Batch, e: &EndpointAcl, fresh: bool) {
    let fam = nfamily(e.attach);
    let key = nft_batch::ifname_key(&e.host_if);
    for (scope, dir, map) in STAGES {
        let chain = chain_name(&e.host_if, map);
        let wanted = has_stage(&e.rules, scope);
        let jump = Verdict::Jump(chain.clone());
        if !fresh {
            b.add_chain(fam, ACL_TABLE, &chain);
            if !wanted {
                b.add_element(fam, ACL_TABLE, map, &key, Some(&jump));
                b.delete_element(fam, ACL_TABLE, map, &key);
            }
            b.flush_chain(fam, ACL_TABLE, &chain);
            if !wanted {
                b.delete_chain(fam, ACL_TABLE, &chain);
            }
        }
        if wanted {
            if fresh {
                b.add_chain(fam, ACL_TABLE, &chain);
            }
            for (i, r) in ordered(&e.rules).into_iter().enumerate() {
                if r.scope == scope && r.direction == dir {
                    let comment = rule_comment(&e.host_if, i);
                    for mut exprs in rule_exprs(r, dir, e.attach) {
                        // Counted when the rule matches: before its verdict.
                        exprs.insert(exprs.len() - 1, Expr::Counter);
                        b.add_rule_commented(fam, ACL_TABLE, &chain, &exprs, Some(&comment));
                    }
                }
            }
            b.add_rule(fam, ACL_TABLE, &chain, &[Expr::Verdict(Verdict::Drop)]);
            // Nothing if it is there already (same chain): the flushed and refilled chain
            // takes effect with the commit.
            b.add_element(fam, ACL_TABLE, map, &key, Some(&jump));
        }
    }
}

/// Appends the removal of an endpoint's chains and elements (it is detached or has no ACL).
pub fn build_remove(b: &mut Batch, host_if: &str, attach: Attach) {
    build_endpoint(b, &EndpointAcl { host_if: host_if.to_owned(), attach, rules: Vec::new() }, false);
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

/// The chain names an endpoint's state needs (to find one that went missing).
pub fn wanted_chains(e: &EndpointAcl) -> Vec<String> {
    STAGES.iter().filter(|(scope, _, _)| has_stage(&e.rules, *scope)).map(|(_, _, m)| chain_name(&e.host_if, m)).collect()
}

/// The chains an endpoint's state needs and how many rules [`build_endpoint`] writes in each
/// (its rules of that stage, expanded, and the final drop): a missing, flushed or partly
/// emptied chain shows as a different count.
pub fn wanted_rule_counts(e: &EndpointAcl) -> Vec<(String, usize)> {
    let ordered = ordered(&e.rules);
    STAGES
        .iter()
        .filter(|(scope, _, _)| has_stage(&e.rules, *scope))
        .map(|(scope, dir, m)| {
            let rules: usize = ordered.iter().filter(|r| r.scope == *scope && r.direction == *dir).map(|r| rule_exprs(r, *dir, e.attach).len()).sum();
            (chain_name(&e.host_if, m), rules + 1)
        })
        .collect()
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
    fn rule_lines_match_sides_by_direction_and_split_families() {
        let r = Rule {
            protocols: vec![6],
            local_ports: vec![(80, 80), (8000, 8080)],
            remote: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/64".parse().unwrap()],
            ..rule(Action::Allow, Direction::In, 100)
        };
        assert_eq!(
            rule_lines(&r, Direction::In),
            vec![
                "ip saddr 10.0.0.0/8 meta l4proto 6 th dport 80 return",
                "ip saddr 10.0.0.0/8 meta l4proto 6 th dport 8000-8080 return",
                "ip6 saddr fd00::/64 meta l4proto 6 th dport 80 return",
                "ip6 saddr fd00::/64 meta l4proto 6 th dport 8000-8080 return"
            ],
            "small lists: one rule per combination, no sets"
        );
        let big = Rule { local_ports: (1..=9).map(|p| (p, p)).collect(), protocols: vec![6, 17], ..r.clone() };
        assert_eq!(
            rule_lines(&big, Direction::In),
            vec!["ip saddr 10.0.0.0/8 meta l4proto { 6, 17 } th dport { 1, 2, 3, 4, 5, 6, 7, 8, 9 } return", "ip6 saddr fd00::/64 meta l4proto { 6, 17 } th dport { 1, 2, 3, 4, 5, 6, 7, 8, 9 } return"],
            "2 x 2 x 9 combinations: sets"
        );
        let out = Rule { local: vec!["172.16.0.5/32".parse().unwrap()], remote_ports: vec![(53, 53)], protocols: vec![6, 17], ..rule(Action::Block, Direction::Out, 1) };
        assert_eq!(rule_lines(&out, Direction::Out), vec!["ip saddr 172.16.0.5/32 meta l4proto 6 th dport 53 drop", "ip saddr 172.16.0.5/32 meta l4proto 17 th dport 53 drop"]);
        // Local IPv4 only, remote IPv6 only: no packet can match.
        let none = Rule { local: vec!["10.0.0.1/32".parse().unwrap()], remote: vec!["fd00::1/128".parse().unwrap()], ..rule(Action::Allow, Direction::In, 1) };
        assert!(rule_lines(&none, Direction::In).is_empty());
        assert_eq!(rule_lines(&rule(Action::Block, Direction::In, 1), Direction::In), vec!["drop"]);
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
    fn endpoint_update_touches_only_its_chains_and_elements() {
        let e = EndpointAcl { host_if: "hnv0123".into(), attach: Attach::BridgePort, rules: vec![rule(Action::Allow, Direction::Out, 5)] };
        let p = compile_endpoint(&e, false);
        assert!(p.lines().all(|l| l.contains("hnv0123")), "{p}");
        assert!(p.contains("flush chain bridge hns_acl hnv0123_sw_out"));
        assert!(p.contains("add rule bridge hns_acl hnv0123_sw_out counter return comment \"hns:hnv0123:0\""), "{p}");
        assert!(p.contains("add element bridge hns_acl sw_in { \"hnv0123\" : jump hnv0123_sw_in }"), "a Switch rule makes both directions default-deny");
        // No Host rule: the Host chains are removed, not left empty-and-dropping.
        assert!(p.contains("delete chain bridge hns_acl hnv0123_host_in"));
        let last = p.lines().rfind(|l| l.contains("host_in {")).unwrap();
        assert!(last.starts_with("delete element"), "the Host element ends deleted: {p}");
        let removed = compile_endpoint(&EndpointAcl { host_if: "hnv0123".into(), attach: Attach::Routed, rules: vec![] }, false);
        assert_eq!(removed.matches("delete chain inet hns_acl").count(), 4);
        assert!(!removed.contains("add rule"));
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
        let p = compile_all(&[e]);
        let expected_tail = "\
add chain bridge hns_acl hnvA_sw_in
add rule bridge hns_acl hnvA_sw_in meta l4proto 6 th dport 80 counter return comment \"hns:hnvA:1\"
add rule bridge hns_acl hnvA_sw_in drop
add element bridge hns_acl sw_in { \"hnvA\" : jump hnvA_sw_in }
add chain bridge hns_acl hnvA_sw_out
";
        assert!(p.contains(expected_tail), "{p}");
        assert!(p.contains("add rule bridge hns_acl hnvA_host_out counter drop comment \"hns:hnvA:0\"\nadd rule bridge hns_acl hnvA_host_out drop\n"), "the Block rule (first in evaluation order), then the default: {p}");
        assert!(p.contains("ct state established,related meta mark set meta mark | 0x800000"));
        assert!(p.contains("chain acl_forward { type filter hook forward priority -10; policy accept; meta mark & 0x800000 == 0x800000 accept; ether type != { ip, ip6 } accept; icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept; iifname vmap @sw_out; oifname vmap @sw_in; }"), "{p}");
        assert!(!p.contains("hnvA_sw_in meta mark"), "the prelude runs once in the dispatch chain, not in every endpoint chain");
    }
}
