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
//! established or related connections and clears it on all others, and every endpoint chain
//! starts with "that bit set: return". So replies of an allowed connection pass, and a Block
//! rule added later does not cut a connection that is already established (as with conntrack
//! based firewalls); it stops new ones.
//!
//! An update of one endpoint is one `nft -f` transaction that rewrites that endpoint's chains
//! and map elements only: a packet sees the old rule set or the new one.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{KernelError, Result};

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

/// The body of one endpoint chain: the prelude, the rules of `scope`/`dir` in evaluation
/// order, the default drop.
fn chain_body(attach: Attach, rules: &[Rule], scope: Scope, dir: Direction) -> Vec<String> {
    let mut lines = vec![format!("meta mark & {ESTABLISHED_MARK:#x} == {ESTABLISHED_MARK:#x} return")];
    if attach == Attach::BridgePort {
        // ARP and other non-IP frames are not what ACLs are about.
        lines.push("ether type != { ip, ip6 } return".into());
    }
    // Neighbour discovery is IPv6's ARP.
    lines.push("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } return".into());
    for r in ordered(rules) {
        if r.scope == scope && r.direction == dir {
            lines.extend(rule_lines(r, dir));
        }
    }
    lines.push("drop".into());
    lines
}

/// Whether the endpoint has a stage `scope` at all: a stage with no rule lets everything
/// through; one rule of it in either direction makes both directions default-deny.
fn has_stage(rules: &[Rule], scope: Scope) -> bool {
    rules.iter().any(|r| r.scope == scope)
}

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
    let _ = writeln!(out, "\tchain acl_forward {{ type filter hook forward priority -10; policy accept; iifname vmap @sw_out; oifname vmap @sw_in; }}");
    let _ = writeln!(out, "\tchain acl_input {{ type filter hook input priority -10; policy accept; iifname vmap @sw_out; iifname vmap @host_out; }}");
    let _ = writeln!(out, "\tchain acl_output {{ type filter hook output priority -10; policy accept; oifname vmap @sw_in; oifname vmap @host_in; }}");
    let _ = writeln!(out, "}}");
}

/// The whole ACL state as one program: both tables replaced atomically. With no endpoint
/// under an ACL the tables are removed, so hns without ACLs leaves nothing behind.
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

/// One endpoint's chains and map elements. `fresh`: the table was just created, so nothing
/// of the endpoint exists yet; otherwise the program first clears what may exist (every
/// statement is valid whether or not the endpoint had chains before).
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
            for line in chain_body(e.attach, &e.rules, scope, dir) {
                let _ = writeln!(out, "add rule {t} {chain} {line}");
            }
            let _ = writeln!(out, "add element {t} {map} {{ {q} : jump {chain} }}");
        }
    }
    out
}

/// Removes an endpoint's chains and elements (it is detached or has no ACL any more).
pub fn compile_remove(host_if: &str, attach: Attach) -> String {
    compile_endpoint(&EndpointAcl { host_if: host_if.to_owned(), attach, rules: Vec::new() }, false)
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', ""))
}

/// Runs one program through `nft -f -` (one transaction).
pub fn run(program: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KernelError::io("run nft", "nft -f -", e))?;
    child.stdin.take().expect("piped").write_all(program.as_bytes()).map_err(|e| KernelError::io("write nft program", "nft", e))?;
    let out = child.wait_with_output().map_err(|e| KernelError::io("wait for nft", "nft", e))?;
    if !out.status.success() {
        return Err(KernelError::new("apply nft ACL program", format!("table {ACL_TABLE}"), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Whether both ACL tables exist with their dispatch chains (a flushed or deleted table is
/// what a firewall reload does).
pub fn tables_present() -> bool {
    ["bridge", "inet"].iter().all(|fam| {
        Command::new("nft")
            .args(["-t", "list", "chain", fam, ACL_TABLE, "acl_forward"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("vmap"))
    })
}

/// Whether either ACL table exists at all (even empty or flushed).
pub fn any_table_exists() -> bool {
    ["bridge", "inet"].iter().any(|fam| Command::new("nft").args(["list", "table", fam, ACL_TABLE]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()))
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
            vec!["ip saddr 10.0.0.0/8 meta l4proto 6 th dport { 80, 8000-8080 } return", "ip6 saddr fd00::/64 meta l4proto 6 th dport { 80, 8000-8080 } return"]
        );
        let out = Rule { local: vec!["172.16.0.5/32".parse().unwrap()], remote_ports: vec![(53, 53)], protocols: vec![6, 17], ..rule(Action::Block, Direction::Out, 1) };
        assert_eq!(rule_lines(&out, Direction::Out), vec!["ip saddr 172.16.0.5/32 meta l4proto { 6, 17 } th dport 53 drop"]);
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
        assert!(p.contains("add rule bridge hns_acl hnv0123_sw_out return"));
        assert!(p.contains("add element bridge hns_acl sw_in { \"hnv0123\" : jump hnv0123_sw_in }"), "a Switch rule makes both directions default-deny");
        // No Host rule: the Host chains are removed, not left empty-and-dropping.
        assert!(p.contains("delete chain bridge hns_acl hnv0123_host_in"));
        let last = p.lines().rfind(|l| l.contains("host_in {")).unwrap();
        assert!(last.starts_with("delete element"), "the Host element ends deleted: {p}");
        let removed = compile_remove("hnv0123", Attach::Routed);
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
add rule bridge hns_acl hnvA_sw_in meta mark & 0x800000 == 0x800000 return
add rule bridge hns_acl hnvA_sw_in ether type != { ip, ip6 } return
add rule bridge hns_acl hnvA_sw_in icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } return
add rule bridge hns_acl hnvA_sw_in meta l4proto 6 th dport 80 return
add rule bridge hns_acl hnvA_sw_in drop
add element bridge hns_acl sw_in { \"hnvA\" : jump hnvA_sw_in }
add chain bridge hns_acl hnvA_sw_out
";
        assert!(p.contains(expected_tail), "{p}");
        assert!(p.contains("add rule bridge hns_acl hnvA_host_out drop\nadd rule bridge hns_acl hnvA_host_out drop\n"), "the Block rule, then the default: {p}");
        assert!(p.contains("ct state established,related meta mark set meta mark | 0x800000"));
        assert!(p.contains("chain acl_forward { type filter hook forward priority -10; policy accept; iifname vmap @sw_out; oifname vmap @sw_in; }"));
    }
}
