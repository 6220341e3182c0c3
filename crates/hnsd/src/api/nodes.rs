//! `GET /nodes` and `DELETE /nodes/{name}`: the hosts of the overlay cluster (an extension).
//! The engine lock is held only to take the cluster handle; the etcd reads run without it.

use axum::Json;
use axum::extract::{Path, State};
use hns_api::{ApiError, ClusterNode, NodeRemoval};

use super::{Failure, Shared};
use crate::engine::overlay::nodes;

/// Live nodes and dead ones that still hold overlay addresses.
#[utoipa::path(get, path = "/nodes", responses((status = 200, body = [ClusterNode]),
    (status = 400, description = "no cluster store is configured (REQUEST_UNSUPPORTED)", body = ApiError),
    (status = 500, description = "the cluster store holds a record hns cannot read", body = ApiError),
    (status = 503, description = "the cluster store is unreachable", body = ApiError)))]
pub async fn list_nodes(State(s): State<Shared>) -> Result<Json<Vec<ClusterNode>>, Failure> {
    let (cluster, local) = s.engine.lock().await.cluster_handle("listing the cluster's nodes")?;
    Ok(Json(nodes::list_nodes(&cluster, &local.node).await?))
}

/// Removes a dead node's endpoints and address reservations (refused while it is alive).
#[utoipa::path(delete, path = "/nodes/{name}", params(("name" = String, Path, description = "node name")),
    responses((status = 200, body = NodeRemoval),
        (status = 400, description = "no cluster store is configured (REQUEST_UNSUPPORTED)", body = ApiError),
        (status = 409, description = "the node is alive, or is this host", body = ApiError),
        (status = 503, description = "the cluster store is unreachable", body = ApiError)))]
pub async fn remove_node(State(s): State<Shared>, Path(name): Path<String>) -> Result<Json<NodeRemoval>, Failure> {
    let (cluster, local) = s.engine.lock().await.cluster_handle(&format!("removing node {name}"))?;
    Ok(Json(nodes::remove_node(&cluster, &local.node, &name).await?))
}
