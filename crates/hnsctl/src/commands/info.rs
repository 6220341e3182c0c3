//! `hnsctl info` and `hnsctl version`.

use serde_json::json;

use hns_api::{DaemonInfo, Version};

use super::Ctx;
use crate::error::Result;
use crate::output::{print_json, print_str};

const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn info_text(info: &DaemonInfo, socket: &str) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: &str| s.push_str(&format!("{k}: {v}\n"));
    line("Client Version", CLIENT_VERSION);
    line("Server Version", &info.version);
    line("HNS API Version", &format!("{}.{}", info.hns_version.major, info.hns_version.minor));
    line("Socket", socket);
    line("Store Path", &info.store_path);
    line("Run Dir", &info.run_dir);
    line("Networks", &info.networks.to_string());
    line("Endpoints", &info.endpoints.to_string());
    line("Namespaces", &info.namespaces.to_string());
    if !info.last_reconcile.is_empty() {
        line("Last Reconcile", &info.last_reconcile);
    }
    s.push_str("Kernel Features:\n");
    for (name, available) in &info.kernel_features {
        s.push_str(&format!(" {name}: {}\n", if *available { "yes" } else { "no" }));
    }
    for w in &info.warnings {
        s.push_str(&format!("WARNING: {w}\n"));
    }
    s
}

pub fn info(ctx: &Ctx) -> Result<i32> {
    let info: DaemonInfo = ctx.client()?.get("/info")?;
    if ctx.json() {
        print_json(&info)?;
    } else {
        print_str(&info_text(&info, &ctx.socket.display().to_string()));
    }
    Ok(0)
}

pub fn version(ctx: &Ctx) -> Result<i32> {
    let client = ctx.client()?;
    let api = client.get::<Version>("/globals/version");
    // The daemon's own version is a nicety from /info.
    let server = api.as_ref().ok().and_then(|_| client.get::<DaemonInfo>("/info").ok()).map(|i| i.version);
    if ctx.json() {
        let server_json = match &api {
            Ok(v) => json!({ "Version": server, "HnsVersion": v }),
            Err(_) => serde_json::Value::Null,
        };
        print_json(&json!({ "Client": { "Version": CLIENT_VERSION }, "Server": server_json }))?;
    } else {
        let mut s = format!("Client:\n Version:         {CLIENT_VERSION}\n");
        if let Ok(v) = &api {
            s.push_str("Server:\n");
            if let Some(server) = &server {
                s.push_str(&format!(" Version:         {server}\n"));
            }
            s.push_str(&format!(" HNS API Version: {}.{}\n", v.major, v.minor));
        }
        print_str(&s);
    }
    api.map(|_| 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lines() {
        let info = DaemonInfo {
            version: "0.1.0".into(),
            hns_version: Version { major: 15, minor: 4 },
            store_path: "/var/lib/hns/store.redb".into(),
            run_dir: "/run/hns".into(),
            networks: 2,
            endpoints: 3,
            namespaces: 1,
            kernel_features: [("nftables".to_owned(), true), ("vxlan".to_owned(), false)].into_iter().collect(),
            warnings: vec!["ip forwarding is off".into()],
            last_reconcile: String::new(),
        };
        let text = info_text(&info, "/run/hns/hns.sock");
        for l in [
            "Server Version: 0.1.0",
            "HNS API Version: 15.4",
            "Store Path: /var/lib/hns/store.redb",
            "Run Dir: /run/hns",
            "Networks: 2",
            "Endpoints: 3",
            "Namespaces: 1",
            " nftables: yes",
            " vxlan: no",
            "WARNING: ip forwarding is off",
        ] {
            assert!(text.lines().any(|x| x == l), "missing {l:?} in\n{text}");
        }
    }
}
