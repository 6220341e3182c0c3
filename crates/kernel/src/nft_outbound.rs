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
//! - one chain per endpoint and family (`<host veth>_4`, `<host veth>_6`): destinations in
//!   `Exceptions` get an identity source NAT (`snat to ip saddr`: the connection keeps the
//!   container's address, and no later NAT chain, such as a nat network's masquerade, touches
//!   it); with `Destinations`, any other destination returns untouched; everything else is
//!   source-NATed to `VirtualIP`, or masqueraded to the address of the interface it leaves by.
//!   Address lists are anonymous sets (hash or interval lookups), never one rule per entry.
//!
//! NAT happens on a connection's first packet only (conntrack keeps the binding), so a change
//! applies to new connections. The whole table is replaced in one transaction (`nft -f`).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Command;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{KernelError, Result};

/// Name of the outbound NAT table (family inet).
pub const ONAT_TABLE: &str = "hns_onat";

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

fn chain_name(host_if: &str, ipv6: bool) -> String {
    format!("{host_if}_{}", if ipv6 { 6 } else { 4 })
}

/// The map elements of all endpoints, per family, as nft source text (sorted).
pub fn elements(eps: &[EndpointNat]) -> (Vec<String>, Vec<String>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for e in eps {
        for p in &e.policies {
            for a in e.addresses.iter().filter(|a| a.is_ipv6() == p.ipv6) {
                let el = format!("{a} : jump {}", chain_name(&e.host_if, p.ipv6));
                if p.ipv6 { v6.push(el) } else { v4.push(el) }
            }
        }
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
    for e in eps {
        for p in &e.policies {
            if !e.addresses.iter().any(|a| a.is_ipv6() == p.ipv6) {
                continue;
            }
            let _ = writeln!(out, "\tchain {} {{", chain_name(&e.host_if, p.ipv6));
            for l in chain_body(p) {
                let _ = writeln!(out, "\t\t{l}");
            }
            let _ = writeln!(out, "\t}}");
        }
    }
    let _ = writeln!(out, "\tchain postrouting {{");
    let _ = writeln!(out, "\t\ttype nat hook postrouting priority srcnat - 5; policy accept;");
    // Into another endpoint or a network bridge: traffic between endpoints of this host.
    let _ = writeln!(out, "\t\toifname {{ \"{}*\", \"{}*\" }} return", crate::names::VETH_PREFIX, crate::names::BRIDGE_PREFIX);
    let _ = writeln!(out, "\t\tip saddr vmap @src4");
    let _ = writeln!(out, "\t\tip6 saddr vmap @src6");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");
    out
}

/// Number of rules of the `postrouting` chain [`compile`] writes.
const DISPATCH_RULES: usize = 3;

/// Runs one program through `nft -f -` (one transaction).
pub fn run(program: &str) -> Result<()> {
    crate::nft::run_program(program, "apply nft outbound NAT program", &format!("table inet {ONAT_TABLE}"))
}

/// Whether the kernel's table holds what [`compile`] writes for `eps`, compared by content:
/// the elements of both maps (address and chain), the dispatch rules, and one rule per line
/// of each endpoint chain. A deleted or flushed table, a removed element or an emptied chain
/// all count as drift.
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
    let mut rules: std::collections::BTreeMap<String, usize> = Default::default();
    for i in &items {
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
        if let Some(r) = i.get("rule") {
            *rules.entry(r["chain"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        }
    }
    if maps.get("src4") != Some(&v4) || maps.get("src6") != Some(&v6) || rules.get("postrouting") != Some(&DISPATCH_RULES) {
        return Ok(false);
    }
    for e in eps {
        for p in &e.policies {
            if e.addresses.iter().any(|a| a.is_ipv6() == p.ipv6) && rules.get(&chain_name(&e.host_if, p.ipv6)) != Some(&chain_body(p).len()) {
                return Ok(false);
            }
        }
    }
    Ok(true)
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
        let expected = "table inet hns_onat {}
delete table inet hns_onat
table inet hns_onat {
\tmap src4 { type ipv4_addr : verdict; elements = { 10.77.2.50 : jump hnvaaaa_4, 10.77.2.51 : jump hnvbbbb_4 }; }
\tmap src6 { type ipv6_addr : verdict; }
\tchain hnvaaaa_4 {
\t\tip daddr { 10.77.0.0/16 } snat ip to ip saddr
\t\tmasquerade
\t}
\tchain hnvbbbb_4 {
\t\tsnat ip to 10.77.2.9
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat - 5; policy accept;
\t\toifname { \"hnv*\", \"hns-*\" } return
\t\tip saddr vmap @src4
\t\tip6 saddr vmap @src6
\t}
}
";
        assert_eq!(p, expected);
        // The IPv6 address has no IPv6 policy: not dispatched.
        assert!(!p.contains("2001:db8"));
        // More endpoints add elements and their own chains, never dispatch rules.
        let more: Vec<EndpointNat> = (0..50).map(|i| EndpointNat { host_if: format!("hnv{i}"), addresses: vec![format!("10.77.3.{i}").parse().unwrap()], policies: vec![nat(false, None, &[], &[])] }).collect();
        let big = compile(&more);
        assert_eq!(big.matches("vmap").count(), 2);
    }

    #[test]
    fn no_policy_removes_the_table() {
        assert_eq!(compile(&[]), "table inet hns_onat {}\ndelete table inet hns_onat\n");
        let none = EndpointNat { host_if: "hnv1".into(), addresses: vec!["10.0.0.2".parse().unwrap()], policies: vec![] };
        assert_eq!(compile(&[none]), compile(&[]));
    }
}
