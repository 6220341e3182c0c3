//! The hosts of the cluster, for operators: `GET /nodes` lists live nodes and the dead ones
//! that still hold overlay addresses (a dead host's endpoints vanish with its lease, its
//! reservations stay so a returning host finds its addresses); `DELETE /nodes/{name}`
//! releases what a host that will not come back held.
//!
//! These run without the engine lock: they only read and write etcd.

use std::collections::BTreeMap;

use hns_api::{ApiError, ClusterNode, ErrorCode, NodeRemoval};
use hns_cluster::Cluster;

use super::super::{Engine, Result};
use super::{LocalVtep, cluster_err};

impl Engine {
    /// The cluster handle for a node request.
    pub fn cluster_handle(&self, what: &str) -> Result<(Cluster, LocalVtep)> {
        self.cluster_for(what)
    }
}

/// Every node that is up or holds addresses, sorted by name.
pub async fn list_nodes(cluster: &Cluster, me: &str) -> Result<Vec<ClusterNode>> {
    let err = |e| cluster_err(e, ErrorCode::Internal);
    let mut nodes: BTreeMap<String, ClusterNode> = BTreeMap::new();
    for n in cluster.list_nodes().await.map_err(err)? {
        let row = ClusterNode { name: n.name.clone(), provider_address: n.vtep.to_string(), state: "Up".into(), local: n.name == me, ..Default::default() };
        nodes.insert(n.name, row);
    }
    for net in cluster.list_networks().await.map_err(err)? {
        for e in cluster.list_endpoints(&net.id).await.map_err(err)? {
            down_or_up(&mut nodes, &e.node, me).endpoints += 1;
        }
        for (_, owner) in cluster.list_addresses(&net.id).await.map_err(err)? {
            down_or_up(&mut nodes, &owner.node, me).addresses += 1;
        }
    }
    Ok(nodes.into_values().collect())
}

fn down_or_up<'a>(nodes: &'a mut BTreeMap<String, ClusterNode>, name: &str, me: &str) -> &'a mut ClusterNode {
    nodes
        .entry(name.to_owned())
        .or_insert_with(|| ClusterNode { name: name.to_owned(), state: "Down".into(), local: name == me, ..Default::default() })
}

/// Removes a dead node: its endpoints and address reservations. Refused for this host and
/// for a node whose lease is alive (the cluster's message says when it expires).
pub async fn remove_node(cluster: &Cluster, me: &str, name: &str) -> Result<NodeRemoval> {
    if name == me {
        return Err(ApiError::new(
            ErrorCode::EntityHasReferences,
            format!("{name} is this host; remove a node from another host after stopping hnsd here and letting its lease expire"),
        ));
    }
    let removed = cluster.remove_node(name).await.map_err(|e| cluster_err(e, ErrorCode::EntityHasReferences))?;
    tracing::info!(node = name, endpoints = removed.endpoints, addresses = removed.addresses, "removed cluster node");
    Ok(NodeRemoval { name: name.to_owned(), endpoints: removed.endpoints, addresses: removed.addresses })
}
