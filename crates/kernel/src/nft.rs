//! The hns nftables table.
//!
//! All hns packet filtering and NAT lives in one table, `inet hns`. Its content is compiled by a
//! pure function from the desired state ([`Desired`]) into one nft program that replaces the
//! whole table atomically (nft applies a `-f` file as one transaction). Per-network facts are set
//! and map elements, not rules, so the rule count stays constant as networks grow and later
//! per-object updates (port mappings) are single element operations.
//!
//! Applying goes through the `nft` binary: it keeps nft's GPL code behind a process boundary and
//! its cost (a few ms) is paid only when networks change or drift is repaired, never on attach.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use crate::error::{KernelError, Result};
use crate::names::NFT_TABLE;

/// One network's contribution to the table.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkRules {
    /// The bridge (or other link) the network's endpoints hang off.
    pub bridge: String,
    /// Its subnets.
    pub subnets: Vec<IpNet>,
    /// Source NAT towards the outside (nat driver).
    pub masquerade: bool,
    /// No traffic to or from outside the network (`--internal`).
    pub internal: bool,
    /// Unsolicited inbound traffic from outside the host is dropped (nat driver: only port
    /// mappings reach its endpoints).
    pub inbound_closed: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub networks: Vec<NetworkRules>,
}

fn elements<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if v.is_empty() { String::new() } else { format!(" elements = {{ {} }};", v.join(", ")) }
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// Number of rules [`compile`] emits; used to detect a flushed table.
pub const RULE_COUNT: usize = 9;

/// Compiles the whole table. The program first creates then deletes the table, so it applies
/// the same way whether or not the table exists, and replaces it in one transaction.
pub fn compile(d: &Desired) -> String {
    let bridges = d.networks.iter().map(|n| quoted(&n.bridge));
    let same = d.networks.iter().map(|n| format!("{} . {}", quoted(&n.bridge), quoted(&n.bridge)));
    let internal = d.networks.iter().filter(|n| n.internal).map(|n| quoted(&n.bridge));
    let closed = d.networks.iter().filter(|n| n.inbound_closed).map(|n| quoted(&n.bridge));
    let masq = |v4: bool| {
        let mut v: Vec<IpNet> = d
            .networks
            .iter()
            .filter(|n| n.masquerade && !n.internal)
            .flat_map(|n| n.subnets.iter().copied())
            .filter(|s| matches!(s, IpNet::V4(_)) == v4)
            .collect();
        v.sort();
        v.dedup();
        elements(v)
    };
    format!(
        r#"table inet {t} {{}}
delete table inet {t}
table inet {t} {{
  set bridges {{ type ifname;{bridges} }}
  set same_network {{ type ifname . ifname;{same} }}
  set internal {{ type ifname;{internal} }}
  set inbound_closed {{ type ifname;{closed} }}
  set masq4 {{ type ipv4_addr; flags interval;{masq4} }}
  set masq6 {{ type ipv6_addr; flags interval;{masq6} }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname . oifname @same_network accept
    iifname @bridges oifname @bridges drop
    iifname @internal drop
    oifname @internal drop
    oifname @inbound_closed ct state established,related accept
    oifname @inbound_closed ct status dnat accept
    oifname @inbound_closed drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr @masq4 oifname != @bridges masquerade
    ip6 saddr @masq6 oifname != @bridges masquerade
  }}
}}
"#,
        t = NFT_TABLE,
        bridges = elements(bridges),
        same = elements(same),
        internal = elements(internal),
        closed = elements(closed),
        masq4 = masq(true),
        masq6 = masq(false),
    )
}

/// Runs one nft program (atomically) through `nft -f -`.
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
        return Err(KernelError::new("apply nft program", format!("table inet {NFT_TABLE}"), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Makes the kernel table match `d`. With no network at all the table is removed, so an
/// unused hns leaves nothing behind.
pub fn apply(d: &Desired) -> Result<()> {
    if d.networks.is_empty() {
        return delete_table();
    }
    run(&compile(d))
}

/// Removes the hns table if present.
pub fn delete_table() -> Result<()> {
    run(&format!("table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\n"))
}

/// What the kernel holds now, reduced to what drift detection compares.
#[derive(Debug, Default, PartialEq)]
pub struct Observed {
    pub present: bool,
    pub rules: usize,
    pub bridges: Vec<String>,
}

/// Reads the hns table back (`nft -j list table`) and reduces it to [`Observed`].
pub fn observe() -> Result<Observed> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", NFT_TABLE])
        .output()
        .map_err(|e| KernelError::io("run nft", "nft -j list table", e))?;
    if !out.status.success() {
        // nft says "No such file or directory" for a missing table.
        return Ok(Observed::default());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| KernelError::new("parse nft output", NFT_TABLE, e))?;
    let mut o = Observed { present: true, ..Default::default() };
    for item in v.get("nftables").and_then(|n| n.as_array()).into_iter().flatten() {
        if item.get("rule").is_some() {
            o.rules += 1;
        }
        if let Some(set) = item.get("set") {
            if set.get("name").and_then(|n| n.as_str()) == Some("bridges") {
                for e in set.get("elem").and_then(|e| e.as_array()).into_iter().flatten() {
                    if let Some(s) = e.as_str() {
                        o.bridges.push(s.to_owned());
                    }
                }
            }
        }
    }
    o.bridges.sort();
    Ok(o)
}

/// True when the kernel's table no longer matches `d` (missing, flushed, or other bridges).
pub fn drifted(d: &Desired, o: &Observed) -> bool {
    if d.networks.is_empty() {
        return o.present;
    }
    let mut want: Vec<String> = d.networks.iter().map(|n| n.bridge.clone()).collect();
    want.sort();
    !o.present || o.rules != RULE_COUNT || o.bridges != want
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(bridge: &str, subnet: &str, internal: bool) -> NetworkRules {
        NetworkRules { bridge: bridge.into(), subnets: vec![subnet.parse().unwrap()], masquerade: true, internal, inbound_closed: true }
    }

    #[test]
    fn empty_state_compiles_to_empty_sets() {
        let p = compile(&Desired::default());
        assert!(p.starts_with("table inet hns {}\ndelete table inet hns\n"));
        assert!(p.contains("set bridges { type ifname; }"));
        assert!(!p.contains("elements"));
        assert_eq!(p.lines().filter(|l| l.trim_start().starts_with("iifname") || l.trim_start().starts_with("oifname") || l.trim_start().starts_with("ip")).count(), RULE_COUNT);
    }

    #[test]
    fn networks_become_elements_not_rules() {
        let one = compile(&Desired { networks: vec![net("hns-aaaaaaaa", "172.20.0.0/16", false)] });
        let two = compile(&Desired { networks: vec![net("hns-aaaaaaaa", "172.20.0.0/16", false), net("hns-bbbbbbbb", "172.21.0.0/16", true)] });
        assert_eq!(one.lines().count(), two.lines().count(), "a network must add elements, not rules");
        assert!(two.contains(r#"set same_network { type ifname . ifname; elements = { "hns-aaaaaaaa" . "hns-aaaaaaaa", "hns-bbbbbbbb" . "hns-bbbbbbbb" }; }"#));
        assert!(two.contains(r#"set internal { type ifname; elements = { "hns-bbbbbbbb" }; }"#));
        // An internal network is never masqueraded.
        assert!(two.contains("set masq4 { type ipv4_addr; flags interval; elements = { 172.20.0.0/16 }; }"));
    }

    #[test]
    fn drift_detection() {
        let d = Desired { networks: vec![net("hns-aaaaaaaa", "172.20.0.0/16", false)] };
        let good = Observed { present: true, rules: RULE_COUNT, bridges: vec!["hns-aaaaaaaa".into()] };
        assert!(!drifted(&d, &good));
        assert!(drifted(&d, &Observed { rules: 0, ..good_clone(&good) }));
        assert!(drifted(&d, &Observed::default()));
        assert!(drifted(&d, &Observed { bridges: vec![], ..good_clone(&good) }));
        // No network: the table must not exist at all.
        assert!(drifted(&Desired::default(), &good));
        assert!(!drifted(&Desired::default(), &Observed::default()));
    }

    fn good_clone(o: &Observed) -> Observed {
        Observed { present: o.present, rules: o.rules, bridges: o.bridges.clone() }
    }
}
