//! `hnsctl namespace create|ls|inspect|rm`.

use std::path::PathBuf;

use hns_api::HostComputeNamespace;

use super::Ctx;
use super::network::{absolute, inspect_objects, remove_objects};
use crate::LsArgs;
use crate::error::{CliError, Result};
use crate::output::{print_json, print_line, print_rows, short_id};
use crate::template::Column;

pub const NAMESPACE_COLUMNS: &[Column] = &[
    Column::new("NAMESPACE ID", "ID"),
    Column::new("NAME", "Name"),
    Column::new("NETNS", "NetNs"),
    Column::new("ENDPOINTS", "Endpoints"),
    Column::new("PID", "PID"),
];

pub fn namespace_rows(namespaces: &[HostComputeNamespace]) -> Vec<Vec<String>> {
    namespaces
        .iter()
        .map(|ns| {
            vec![
                short_id(&ns.id),
                ns.name.clone(),
                ns.net_ns_path.clone(),
                ns.endpoint_ids().len().to_string(),
                if ns.pid == 0 { String::new() } else { ns.pid.to_string() },
            ]
        })
        .collect()
}

pub fn create(ctx: &Ctx, name: Option<String>, netns: Option<PathBuf>) -> Result<i32> {
    let net_ns_path = match netns {
        Some(p) => {
            let p = absolute(&p)?;
            p.to_str().map(str::to_owned).ok_or_else(|| CliError::invalid(format!("{} is not UTF-8", p.display())))?
        }
        None => String::new(),
    };
    let body = HostComputeNamespace { name: name.unwrap_or_default(), net_ns_path, ..Default::default() };
    let ns: HostComputeNamespace = ctx.client()?.post("/namespaces", &body)?;
    if ctx.json() {
        print_json(&ns)?;
    } else {
        print_line(&ns.id);
    }
    Ok(0)
}

pub fn ls(ctx: &Ctx, a: &LsArgs) -> Result<i32> {
    let namespaces: Vec<HostComputeNamespace> = ctx.client()?.get("/namespaces")?;
    if ctx.json() {
        print_json(&namespaces)?;
    } else if a.quiet {
        namespaces.iter().for_each(|n| print_line(&n.id));
    } else {
        print_rows(&ctx.format, NAMESPACE_COLUMNS, &namespace_rows(&namespaces))?;
    }
    Ok(0)
}

pub fn inspect(ctx: &Ctx, names: &[String]) -> Result<i32> {
    inspect_objects::<HostComputeNamespace>(ctx, names)
}

pub fn rm(ctx: &Ctx, names: &[String]) -> Result<i32> {
    remove_objects::<HostComputeNamespace>(ctx, names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{headers, render_table};
    use hns_api::NamespaceResource;

    #[test]
    fn namespace_table() {
        let ep = |id: &str| NamespaceResource { kind: "Endpoint".into(), data: serde_json::json!({ "ID": id }) };
        let namespaces = vec![
            HostComputeNamespace {
                id: "AAAA1111-0000-0000-0000-000000000001".into(),
                name: "web".into(),
                net_ns_path: "/run/hns/netns/web".into(),
                resources: vec![ep("e1"), ep("e2")],
                pid: 4242,
                ..Default::default()
            },
            HostComputeNamespace { id: "bbbb2222-0000-0000-0000-000000000002".into(), net_ns_path: "/run/netns/blue".into(), ..Default::default() },
        ];
        let expected = "\
NAMESPACE ID   NAME   NETNS                ENDPOINTS   PID
aaaa11110000   web    /run/hns/netns/web   2           4242
bbbb22220000          /run/netns/blue      0
";
        assert_eq!(render_table(&headers(NAMESPACE_COLUMNS), &namespace_rows(&namespaces)), expected);
    }
}
