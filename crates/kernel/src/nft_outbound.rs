//! The `OutBoundNAT` endpoint policy in the kernel: a pure compiler from the outbound-NAT
//! state of every attached endpoint to one nft program for hns's own table
//! `inet` [`ONAT_TABLE`], and the thin layer that runs and inspects it.
//!
//! Layout:
//! - one chain `postrouting` (nat hook, priority srcnat - 5: before the `inet hns` table's
//!   masquerade) that skips traffic leaving into another endpoint's veth or a network bridge
//!   (pod-to-pod on this host keeps its addresses) and dispatches by source address through
//!   the verdict maps `src4` / `src6` (one element per endpoint address: O(1) per packet,
//!   whatever the number of endpoints);
//! - one chain per distinct policy (`p4_<hash>`, `p6_<hash>`, named after the policy's
//!   content, so every endpoint with the same policy shares it: in a cluster that is usually
//!   one chain for all): destinations in `Exceptions` get an identity source NAT (`snat to ip
//!   saddr`: the connection keeps the container's address, and no later NAT chain, such as a
//!   nat network's masquerade, touches it); with `Destinations`, any other destination returns
//!   untouched; everything else is source-NATed to `VirtualIP`, or masqueraded to the address
//!   of the interface it leaves by. Address lists are anonymous sets (hash or interval
//!   lookups), never one rule per entry.
//!
//! - a `forward` chain (filter hook, before the `hns` table's) that marks ([`FORWARD_MARK`])
//!   what the endpoints under a policy send and the replies they get (sets `out4` / `out6`
//!   of their addresses), so that an overlay network, closed to the outside, lets exactly that
//!   traffic through.
//!
//! NAT happens on a connection's first packet only (conntrack keeps the binding), so a change
//! applies to new connections. An endpoint that comes or goes is its map elements, written
//! over nfnetlink in one batch ([`update`]); a policy chain is written (`nft -f`) only with
//! the first endpoint of that policy and removed with the last. The whole table is replaced
//! in one transaction ([`compile`]) when it is missing, flushed or edited.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Command;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{KernelError, Result};

/// Name of the outbound NAT table (family inet).
pub const ONAT_TABLE: &str = "hns_onat";

/// Packet-mark bit of traffic an OutBoundNAT endpoint sends out (and of its replies): the
/// `hns` table's forward chain lets it leave a network that is otherwise closed to the outside
/// (an overlay network without outbound NAT, whose endpoints reach out only through this
/// policy). Apart from the ACL's bit (0x0080_0000) and the load balancer's mark bits.
pub const FORWARD_MARK: u32 = 0x0040_0000;

/// One OutBoundNAT policy of an endpoint, typed: for one address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundNat {
    /// The family the policy is for (HNS `Flags` bit IPv6).
    pub ipv6: bool,
    /// Source address to NAT to; `None`: masquerade (the outgoing interface's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_ip: Option<IpAddr>,
    /// Destinations that keep the container's own source address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<IpNet>,
    /// If not empty: NAT only towards these destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<IpNet>,
}

/// The outbound NAT state of one attached endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointNat {
    /// Host end of its veth: names its chains.
    pub host_if: String,
    /// Its addresses (the source addresses dispatched to its chains).
    pub addresses: Vec<IpAddr>,
    /// At most one policy per family.
    pub policies: Vec<OutboundNat>,
}

fn set(items: &[IpNet]) -> String {
    let v: Vec<String> = items.iter().map(|n| if n.prefix_len() == n.max_prefix_len() { n.addr().to_string() } else { n.trunc().to_string() }).collect();
    format!("{{ {} }}", v.join(", "))
}

/// The body of one endpoint chain for policy `p` (its family).
pub fn chain_body(p: &OutboundNat) -> Vec<String> {
    let kw = if p.ipv6 { "ip6" } else { "ip" };
    let mut lines = Vec::new();
    if !p.exceptions.is_empty() {
        lines.push(format!("{kw} daddr {} snat {kw} to {kw} saddr", set(&p.exceptions)));
    }
    if !p.destinations.is_empty() {
        lines.push(format!("{kw} daddr != {} return", set(&p.destinations)));
    }
    lines.push(match p.virtual_ip {
        Some(vip) => format!("snat {kw} to {vip}"),
        None => "masquerade".to_owned(),
    });
    lines
}

/// The chain of policy `p`, named after its content (`p4_` or `p6_` and 16 hex digits): the
/// same policy always gets the same name, across endpoints and restarts.
pub fn policy_chain(p: &OutboundNat) -> String {
    // FNV-1a over the policy's JSON (fields in declaration order): std's hashers may change
    // between Rust releases, and a name that changed across an upgrade would make the drift
    // check rewrite the table at the first start; 64 bits make a collision between the few
    // policies of a host negligible.
    let json = serde_json::to_vec(p).unwrap_or_default();
    let h = json.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("p{}_{h:016x}", if p.ipv6 { 6 } else { 4 })
}

/// The dispatch elements of one endpoint: each address of a policy's family → that policy's
/// chain.
fn endpoint_elements(e: &EndpointNat) -> Vec<(IpAddr, String)> {
    let mut out = Vec::new();
    for p in &e.policies {
        let chain = policy_chain(p);
        out.extend(e.addresses.iter().filter(|a| a.is_ipv6() == p.ipv6).map(|a| (*a, chain.clone())));
    }
    out
}

/// The distinct policies of `eps` that some address is dispatched to, by chain name.
fn policies(eps: &[EndpointNat]) -> std::collections::BTreeMap<String, &OutboundNat> {
    eps.iter().flat_map(|e| e.policies.iter().filter(|p| e.addresses.iter().any(|a| a.is_ipv6() == p.ipv6)).map(|p| (policy_chain(p), p))).collect()
}

/// The map elements of all endpoints, per family, as nft source text (sorted).
pub fn elements(eps: &[EndpointNat]) -> (Vec<String>, Vec<String>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (a, chain) in eps.iter().flat_map(endpoint_elements) {
        let el = format!("{a} : jump {chain}");
        if a.is_ipv6() { v6.push(el) } else { v4.push(el) }
    }
    v4.sort();
    v6.sort();
    (v4, v6)
}

/// The whole table as one program that replaces it atomically; with no endpoint under an
/// OutBoundNAT policy the table is removed, so hns without them leaves nothing behind.
pub fn compile(eps: &[EndpointNat]) -> String {
    let t = format!("inet {ONAT_TABLE}");
    let mut out = format!("table {t} {{}}\ndelete table {t}\n");
    let (v4, v6) = elements(eps);
    if v4.is_empty() && v6.is_empty() {
        return out;
    }
    let els = |v: &[String]| if v.is_empty() { String::new() } else { format!(" elements = {{ {} }};", v.join(", ")) };
    let _ = writeln!(out, "table {t} {{");
    let _ = writeln!(out, "\tmap src4 {{ type ipv4_addr : verdict;{} }}", els(&v4));
    let _ = writeln!(out, "\tmap src6 {{ type ipv6_addr : verdict;{} }}", els(&v6));
    let keys = |v: &[String]| v.iter().map(|e| e.split(" : ").next().unwrap_or(e).to_owned()).collect::<Vec<_>>();
    let _ = writeln!(out, "\tset out4 {{ type ipv4_addr;{} }}", els(&keys(&v4)));
    let _ = writeln!(out, "\tset out6 {{ type ipv6_addr;{} }}", els(&keys(&v6)));
    for (chain, p) in policies(eps) {
        let _ = writeln!(out, "\tchain {chain} {{");
        for l in chain_body(p) {
            let _ = writeln!(out, "\t\t{l}");
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "\tchain postrouting {{");
    let _ = writeln!(out, "\t\ttype nat hook postrouting priority srcnat - 5; policy accept;");
    // Into another endpoint or a network bridge: traffic between endpoints of this host.
    let _ = writeln!(out, "\t\toifname {{ \"{}*\", \"{}*\" }} return", crate::names::VETH_PREFIX, crate::names::BRIDGE_PREFIX);
    let _ = writeln!(out, "\t\tip saddr vmap @src4");
    let _ = writeln!(out, "\t\tip6 saddr vmap @src6");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain forward {{");
    let _ = writeln!(out, "\t\ttype filter hook forward priority filter - 5; policy accept;");
    let _ = writeln!(out, "\t\tip saddr @out4 meta mark set meta mark | {FORWARD_MARK:#x}");
    let _ = writeln!(out, "\t\tip6 saddr @out6 meta mark set meta mark | {FORWARD_MARK:#x}");
    let _ = writeln!(out, "\t\tct direction reply ip daddr @out4 meta mark set meta mark | {FORWARD_MARK:#x}");
    let _ = writeln!(out, "\t\tct direction reply ip6 daddr @out6 meta mark set meta mark | {FORWARD_MARK:#x}");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");
    out
}

/// Runs one program through `nft -f -` (one transaction).
pub fn run(program: &str) -> Result<()> {
    crate::nft::run_program(program, "apply nft outbound NAT program", &format!("table inet {ONAT_TABLE}"))
}

/// Whether the kernel's table holds what [`compile`] writes for `eps`, compared by content:
/// the elements of both maps (address and chain) and of the forward sets, and every chain and
/// rule as the kernel lists them (see [`expected_shape`]). A deleted or flushed table, a
/// removed element, an emptied or edited chain all count as drift.
pub fn matches(eps: &[EndpointNat]) -> Result<bool> {
    let out = Command::new("nft").args(["-j", "list", "table", "inet", ONAT_TABLE]).output().map_err(|e| KernelError::io("run nft", "nft -j list table", e))?;
    let (v4, v6) = elements(eps);
    if !out.status.success() {
        return Ok(v4.is_empty() && v6.is_empty());
    }
    if v4.is_empty() && v6.is_empty() {
        return Ok(false);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| KernelError::new("parse nft output", ONAT_TABLE, e))?;
    let items = v.get("nftables").and_then(|n| n.as_array()).cloned().unwrap_or_default();
    let mut maps: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut sets: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for i in &items {
        if let Some(m) = i.get("set") {
            let name = m["name"].as_str().unwrap_or_default().to_owned();
            let mut els: Vec<String> = m.get("elem").and_then(|e| e.as_array()).map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect()).unwrap_or_default();
            els.sort();
            sets.insert(name, els);
        }
        if let Some(m) = i.get("map") {
            let name = m["name"].as_str().unwrap_or_default().to_owned();
            let mut els: Vec<String> = m
                .get("elem")
                .and_then(|e| e.as_array())
                .map(|a| a.iter().filter_map(|kv| Some(format!("{} : jump {}", kv.get(0)?.as_str()?, kv.get(1)?.pointer("/jump/target")?.as_str()?))).collect())
                .unwrap_or_default();
            els.sort();
            maps.insert(name, els);
        }
    }
    let keys = |v: &[String]| {
        let mut k: Vec<String> = v.iter().map(|e| e.split(" : ").next().unwrap_or(e).to_owned()).collect();
        k.sort();
        k
    };
    if maps.get("src4") != Some(&v4) || maps.get("src6") != Some(&v6) || sets.get("out4") != Some(&keys(&v4)) || sets.get("out6") != Some(&keys(&v6)) {
        return Ok(false);
    }
    let wanted = expected_shape(eps).map_err(|e| KernelError::new("compute the expected rules of", ONAT_TABLE, e))?;
    Ok(crate::nft::RuleShape::of_listing(&v) == wanted)
}

/// The chains and rules [`compile`] writes for `eps`, as this kernel lists them
/// ([`crate::nft::scratch_shape`]). They depend on the distinct policies only (endpoints are
/// elements), so the shape of the last set of policies is kept.
fn expected_shape(eps: &[EndpointNat]) -> std::result::Result<crate::nft::RuleShape, String> {
    static LAST: crate::nft::ShapeCache<Vec<String>> = crate::nft::ShapeCache::new();
    LAST.get(policies(eps).into_keys().collect(), || compile(eps), &format!("inet {ONAT_TABLE}"))
}

/// What the kernel's table holds, kept between changes so that an endpoint that comes or
/// goes is written as its own elements only: each element's chain, and how many elements
/// lead to each chain.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    elements: std::collections::BTreeMap<IpAddr, String>,
    chains: std::collections::BTreeMap<String, usize>,
}

impl Applied {
    /// The state [`compile`] writes for `eps`.
    pub fn of(eps: &[EndpointNat]) -> Applied {
        let mut a = Applied::default();
        for (addr, chain) in eps.iter().flat_map(endpoint_elements) {
            *a.chains.entry(chain.clone()).or_default() += 1;
            a.elements.insert(addr, chain);
        }
        a
    }

    /// Whether the table exists (some element): an endpoint with no neighbour under a policy
    /// writes the whole table.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }
}

fn addr_key(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// Makes the kernel go from `applied` holding endpoint `old` to holding `new` instead (either
/// may be `None`: attach, detach), touching only their elements: a policy chain new to the
/// table is written first (`nft -f`, small), then one nfnetlink batch deletes and adds the
/// elements and removes a chain no element leads to any more. `applied` follows on success;
/// on failure (the table was flushed or edited) the caller rewrites the table whole.
pub fn update(applied: &mut Applied, old: Option<&EndpointNat>, new: Option<&EndpointNat>) -> Result<()> {
    use crate::nft_batch::{Batch, Family, Verdict};
    let before: Vec<(IpAddr, String)> = old.map(endpoint_elements).unwrap_or_default();
    let after: Vec<(IpAddr, String)> = new.map(endpoint_elements).unwrap_or_default();
    let mut next = applied.clone();
    let gone: Vec<&(IpAddr, String)> = before.iter().filter(|e| !after.contains(e)).collect();
    let come: Vec<&(IpAddr, String)> = after.iter().filter(|e| !before.contains(e)).collect();
    for (a, c) in &gone {
        if next.elements.get(a) == Some(c) {
            next.elements.remove(a);
            if let Some(n) = next.chains.get_mut(c) {
                *n -= 1;
            }
        }
    }
    let new_chains: Vec<&String> = come.iter().map(|(_, c)| c).filter(|c| next.chains.get(*c).copied().unwrap_or(0) == 0 && !applied.chains.contains_key(*c)).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for (a, c) in &come {
        next.elements.insert(*a, c.clone());
        *next.chains.entry(c.clone()).or_default() += 1;
    }
    let empty: Vec<String> = next.chains.iter().filter(|(_, n)| **n == 0).map(|(c, _)| c.clone()).collect();
    for c in &empty {
        next.chains.remove(c);
    }
    if !new_chains.is_empty() {
        let t = format!("inet {ONAT_TABLE}");
        let mut program = String::new();
        let pols: Vec<&OutboundNat> = new.map(|e| e.policies.iter().collect()).unwrap_or_default();
        for c in &new_chains {
            let Some(p) = pols.iter().find(|p| policy_chain(p) == **c) else { continue };
            let _ = writeln!(program, "add chain {t} {c}");
            for l in chain_body(p) {
                let _ = writeln!(program, "add rule {t} {c} {l}");
            }
        }
        run(&program)?;
    }
    let mut b = Batch::new();
    for (a, _) in &gone {
        b.delete_element(Family::Inet, ONAT_TABLE, if a.is_ipv6() { "src6" } else { "src4" }, &addr_key(*a));
        if !after.iter().any(|(x, _)| x == a) {
            b.delete_element(Family::Inet, ONAT_TABLE, if a.is_ipv6() { "out6" } else { "out4" }, &addr_key(*a));
        }
    }
    for c in &empty {
        b.delete_chain(Family::Inet, ONAT_TABLE, c);
    }
    for (a, c) in &come {
        b.add_element(Family::Inet, ONAT_TABLE, if a.is_ipv6() { "src6" } else { "src4" }, &addr_key(*a), Some(&Verdict::Jump(c.clone())));
        if !before.iter().any(|(x, _)| x == a) {
            b.add_data_element(Family::Inet, ONAT_TABLE, if a.is_ipv6() { "out6" } else { "out4" }, &addr_key(*a), None);
        }
    }
    if !b.is_empty() {
        crate::nft_batch::apply(&b)?;
    }
    *applied = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nat(ipv6: bool, vip: Option<&str>, exc: &[&str], dst: &[&str]) -> OutboundNat {
        OutboundNat {
            ipv6,
            virtual_ip: vip.map(|v| v.parse().unwrap()),
            exceptions: exc.iter().map(|e| e.parse().unwrap()).collect(),
            destinations: dst.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn chain_bodies_follow_the_policy() {
        assert_eq!(chain_body(&nat(false, None, &[], &[])), vec!["masquerade"]);
        assert_eq!(
            chain_body(&nat(false, Some("198.51.100.7"), &["10.244.0.0/16", "10.0.0.9/32"], &[])),
            vec!["ip daddr { 10.244.0.0/16, 10.0.0.9 } snat ip to ip saddr", "snat ip to 198.51.100.7"]
        );
        assert_eq!(
            chain_body(&nat(true, None, &["fd00:1::/64"], &["2001:db8::/32"])),
            vec!["ip6 daddr { fd00:1::/64 } snat ip6 to ip6 saddr", "ip6 daddr != { 2001:db8::/32 } return", "masquerade"]
        );
    }

    #[test]
    fn whole_table_snapshot() {
        let eps = [
            EndpointNat { host_if: "hnvaaaa".into(), addresses: vec!["10.77.2.50".parse().unwrap(), "2001:db8:77:2::50".parse().unwrap()], policies: vec![nat(false, None, &["10.77.0.0/16"], &[])] },
            EndpointNat { host_if: "hnvbbbb".into(), addresses: vec!["10.77.2.51".parse().unwrap()], policies: vec![nat(false, Some("10.77.2.9"), &[], &[])] },
        ];
        let p = compile(&eps);
        let (pa, pb) = (policy_chain(&eps[0].policies[0]), policy_chain(&eps[1].policies[0]));
        assert!(pa.starts_with("p4_") && pa.len() == 19 && pa != pb, "{pa} {pb}");
        let expected = format!(
            "table inet hns_onat {{}}
delete table inet hns_onat
table inet hns_onat {{
\tmap src4 {{ type ipv4_addr : verdict; elements = {{ 10.77.2.50 : jump {pa}, 10.77.2.51 : jump {pb} }}; }}
\tmap src6 {{ type ipv6_addr : verdict; }}
\tset out4 {{ type ipv4_addr; elements = {{ 10.77.2.50, 10.77.2.51 }}; }}
\tset out6 {{ type ipv6_addr; }}
\tchain {pb} {{
\t\tsnat ip to 10.77.2.9
\t}}
\tchain {pa} {{
\t\tip daddr {{ 10.77.0.0/16 }} snat ip to ip saddr
\t\tmasquerade
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat - 5; policy accept;
\t\toifname {{ \"hnv*\", \"hns-*\" }} return
\t\tip saddr vmap @src4
\t\tip6 saddr vmap @src6
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter - 5; policy accept;
\t\tip saddr @out4 meta mark set meta mark | 0x400000
\t\tip6 saddr @out6 meta mark set meta mark | 0x400000
\t\tct direction reply ip daddr @out4 meta mark set meta mark | 0x400000
\t\tct direction reply ip6 daddr @out6 meta mark set meta mark | 0x400000
\t}}
}}
"
        );
        // Chains come in name order.
        let expected = if pa < pb { expected.replacen(&format!("chain {pb} {{\n\t\tsnat ip to 10.77.2.9\n\t}}\n\tchain {pa} {{\n\t\tip daddr {{ 10.77.0.0/16 }} snat ip to ip saddr\n\t\tmasquerade\n\t}}"), &format!("chain {pa} {{\n\t\tip daddr {{ 10.77.0.0/16 }} snat ip to ip saddr\n\t\tmasquerade\n\t}}\n\tchain {pb} {{\n\t\tsnat ip to 10.77.2.9\n\t}}"), 1) } else { expected };
        assert_eq!(p, expected);
        // The IPv6 address has no IPv6 policy: not dispatched.
        assert!(!p.contains("2001:db8"));
        // More endpoints with one policy add elements, never chains or dispatch rules.
        let more: Vec<EndpointNat> = (0..50).map(|i| EndpointNat { host_if: format!("hnv{i}"), addresses: vec![format!("10.77.3.{i}").parse().unwrap()], policies: vec![nat(false, None, &[], &[])] }).collect();
        let big = compile(&more);
        assert_eq!(big.matches("vmap").count(), 2);
        assert_eq!(big.matches("\tchain ").count(), 3, "one policy chain, the dispatch chain and the forward chain");
        assert_eq!(Applied::of(&more).chains.get(&policy_chain(&more[0].policies[0])), Some(&50));
    }

    #[test]
    fn policy_chain_names_follow_the_content_only() {
        let a = nat(false, None, &["10.77.0.0/16"], &[]);
        assert_eq!(policy_chain(&a), policy_chain(&a.clone()));
        assert_ne!(policy_chain(&a), policy_chain(&nat(false, None, &["10.78.0.0/16"], &[])));
        assert!(policy_chain(&nat(true, None, &[], &[])).starts_with("p6_"));
        // Pinned: a name that changed between releases would make the first start after an
        // upgrade rewrite the table.
        assert_eq!(policy_chain(&nat(false, None, &[], &[])), "p4_36f366e211cbc2c3");
    }

    #[test]
    fn no_policy_removes_the_table() {
        assert_eq!(compile(&[]), "table inet hns_onat {}\ndelete table inet hns_onat\n");
        let none = EndpointNat { host_if: "hnv1".into(), addresses: vec!["10.0.0.2".parse().unwrap()], policies: vec![] };
        assert_eq!(compile(&[none]), compile(&[]));
    }
}
