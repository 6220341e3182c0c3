//! Cluster objects of overlay networks (extensions: HNS has no such routes): the hosts of the
//! cluster as `GET /nodes` lists them, and what `DELETE /nodes/{name}` removed.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `Flags` bit of an endpoint that lives on another host (HNS `RemoteEndpoint`).
pub const ENDPOINT_FLAG_REMOTE: u32 = 1;

/// A host of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterNode {
    /// Node name (`hnsd --node-name`, the hostname by default).
    pub name: String,
    /// The host's VTEP (underlay address), empty when the node is down.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider_address: String,
    /// `Up` while its lease lives; `Down` when only its address reservations are left (remove
    /// it with `DELETE /nodes/{name}` if it is not coming back).
    pub state: String,
    /// This host.
    #[serde(default)]
    pub local: bool,
    /// Endpoints it publishes.
    #[serde(default)]
    pub endpoints: usize,
    /// Overlay addresses reserved in its name.
    #[serde(default)]
    pub addresses: usize,
}

/// What removing a node released.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRemoval {
    pub name: String,
    pub endpoints: usize,
    pub addresses: usize,
}
