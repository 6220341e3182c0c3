//! Modify requests: `POST /networks/{id}`, `/endpoints/{id}`, `/namespaces/{id}` with
//! `{"ResourceType": ..., "RequestType": ..., "Settings": ...}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::enums::{RequestType, ResourceType};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ModifyRequest {
    pub resource_type: ResourceType,
    pub request_type: RequestType,
    /// HNS 2.x optional resource URI. Not used.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_uri: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
}

/// Settings of a namespace modify with `ResourceType: Endpoint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NamespaceEndpointRequest {
    pub endpoint_id: String,
}

/// Settings of a namespace modify with `ResourceType: Container`: records (Add) or clears
/// (Remove) the process that runs in the compartment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NamespaceContainerRequest {
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub command: Vec<String>,
    /// HNS's container id, when a runtime sends one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
}

/// Settings of a modify with `ResourceType: Policy`: `{"Policies": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PolicyRequest {
    #[serde(default)]
    pub policies: Vec<crate::schema::Policy>,
}
