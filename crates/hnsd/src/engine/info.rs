//! `GET /info`: what the daemon knows about itself and the host, and warnings about things
//! that would silently break hns networks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use hns_api::DaemonInfo;

use super::Engine;

/// Kernel features hns cares about, probed once at start. Cheap checks only: files under
/// /proc and /sys, and whether `nft` runs.
pub fn probe_kernel() -> BTreeMap<String, bool> {
    let mut f = BTreeMap::new();
    f.insert("nftables".into(), Command::new("nft").args(["list", "tables"]).output().is_ok_and(|o| o.status.success()));
    f.insert("ipv6".into(), Path::new("/proc/sys/net/ipv6").exists());
    f.insert("br_netfilter".into(), Path::new("/proc/sys/net/bridge").exists());
    // Link kinds the external drivers need: tried in a scratch namespace (a few ms each).
    use hns_kernel::uplink::{Feature, probe};
    f.insert("8021q".into(), Path::new("/proc/net/vlan").exists() || probe(Feature::Vlan));
    f.insert("bonding".into(), probe(Feature::Bond));
    f.insert("macvlan".into(), probe(Feature::Macvlan));
    f
}

/// Forward-hook chains of other tables whose policy is drop: they would drop hns traffic
/// (Docker's, firewalld's and ufw's default rulesets do). Runs `nft` (tens of ms with a large
/// ruleset): callers run it off the engine's lock and off the async workers.
pub fn foreign_drop_chains() -> Vec<String> {
    let Ok(out) = Command::new("nft").args(["-j", "list", "chains"]).output() else { return vec![] };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return vec![] };
    let mut warnings = Vec::new();
    for item in v.get("nftables").and_then(|n| n.as_array()).into_iter().flatten() {
        let Some(c) = item.get("chain") else { continue };
        let table = c.get("table").and_then(|t| t.as_str()).unwrap_or("");
        if table == hns_kernel::names::NFT_TABLE {
            continue;
        }
        if c.get("hook").and_then(|h| h.as_str()) == Some("forward") && c.get("policy").and_then(|p| p.as_str()) == Some("drop") {
            warnings.push(format!(
                "nft chain {} {} {} drops forwarded traffic by default (policy drop); traffic of hns networks may be dropped there unless that firewall allows the hns bridges (hns-*)",
                c.get("family").and_then(|f| f.as_str()).unwrap_or(""),
                table,
                c.get("name").and_then(|n| n.as_str()).unwrap_or("")
            ));
        }
    }
    warnings
}

impl Engine {
    /// What `GET /info` says from the engine's own state (cheap, under the lock); the
    /// handler adds [`foreign_drop_chains`], which asks the host's firewall, after the lock.
    pub fn info(&self) -> DaemonInfo {
        let mut warnings = Vec::new();
        if !self.kernel_features.get("nftables").copied().unwrap_or(false) {
            warnings.push("nft does not run: install nftables; nat networks have no masquerade or isolation without it".into());
        }
        if hns_kernel::sysctl::read("net.ipv4.ip_forward").ok().as_deref() == Some("0") && !self.networks.is_empty() {
            warnings.push("net.ipv4.ip_forward is 0: containers cannot reach the outside".into());
        }
        warnings.extend(self.overlay_warnings());
        DaemonInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            hns_version: hns_api::HNS_VERSION,
            store_path: self.store_path().display().to_string(),
            run_dir: self.cfg.run_dir.display().to_string(),
            networks: self.networks.len(),
            endpoints: self.endpoints.len(),
            namespaces: self.namespaces.len(),
            kernel_features: self.kernel_features.clone(),
            warnings,
            last_reconcile: self.last_reconcile.clone(),
        }
    }
}
