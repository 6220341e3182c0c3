//! `hnsctl node ls|rm`: the hosts of the overlay cluster (`GET /nodes`, `DELETE /nodes/NAME`).

use hns_api::{ClusterNode, NodeRemoval};

use super::{Ctx, for_each_name};
use crate::LsArgs;
use crate::client::seg;
use crate::error::Result;
use crate::output::{print_json, print_line, print_rows};
use crate::template::Column;

pub const NODE_COLUMNS: &[Column] = &[
    Column::new("NODE", "Name"),
    Column::new("ADDRESS", "Address"),
    Column::new("STATE", "State"),
    Column::new("ENDPOINTS", "Endpoints"),
    Column::new("ADDRESSES", "Addresses"),
];

pub fn node_rows(nodes: &[ClusterNode]) -> Vec<Vec<String>> {
    nodes
        .iter()
        .map(|n| {
            let name = if n.local { format!("{} (this host)", n.name) } else { n.name.clone() };
            vec![name, n.provider_address.clone(), n.state.clone(), n.endpoints.to_string(), n.addresses.to_string()]
        })
        .collect()
}

pub fn ls(ctx: &Ctx, a: &LsArgs) -> Result<i32> {
    let nodes: Vec<ClusterNode> = ctx.client()?.get("/nodes")?;
    if ctx.json() {
        print_json(&nodes)?;
    } else if a.quiet {
        nodes.iter().for_each(|n| print_line(&n.name));
    } else {
        print_rows(&ctx.format, NODE_COLUMNS, &node_rows(&nodes))?;
    }
    Ok(0)
}

/// Removes dead nodes (their endpoints and address reservations); hnsd refuses live ones.
pub fn rm(ctx: &Ctx, names: &[String]) -> Result<i32> {
    let client = ctx.client()?;
    Ok(for_each_name(names, |name| {
        let removed: NodeRemoval = client.delete_reply(&format!("/nodes/{}", seg(name)))?;
        if ctx.json() {
            print_json(&removed)?;
        } else {
            print_line(&format!("{name}: released {} address(es), {} endpoint(s)", removed.addresses, removed.endpoints));
        }
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{headers, render_table};

    #[test]
    fn node_table() {
        let nodes = vec![
            ClusterNode { name: "a".into(), provider_address: "10.99.0.1".into(), state: "Up".into(), local: true, endpoints: 2, addresses: 2 },
            ClusterNode { name: "c".into(), state: "Down".into(), addresses: 1, ..Default::default() },
        ];
        let t = render_table(&headers(NODE_COLUMNS), &node_rows(&nodes));
        assert!(t.contains("a (this host)") && t.contains("10.99.0.1") && t.contains("Down"), "{t}");
    }
}
