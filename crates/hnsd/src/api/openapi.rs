//! The OpenAPI document, generated from the same types the API serves.

use axum::Json;
use utoipa::OpenApi;

use super::handlers;

#[derive(OpenApi)]
#[openapi(
    info(title = "hns API", description = "Host Networking Service for Linux: HNS v2 (HCN) objects over HTTP+JSON on a unix socket. Fields marked Extension are additions to the HNS schema."),
    paths(
        handlers::list_networks, handlers::create_network, handlers::get_network, handlers::delete_network, handlers::modify_network,
        handlers::list_endpoints, handlers::create_endpoint, handlers::get_endpoint, handlers::delete_endpoint, handlers::modify_endpoint,
        handlers::list_namespaces, handlers::create_namespace, handlers::get_namespace, handlers::delete_namespace, handlers::modify_namespace,
        handlers::list_port_mappings, handlers::version, handlers::healthz, handlers::info,
        super::nodes::list_nodes, super::nodes::remove_node,
    ),
    components(schemas(hns_api::NamespaceEndpointRequest, hns_api::NamespaceContainerRequest, hns_api::PolicyRequest, hns_api::PortMappingSettings, hns_api::ErrorCode))
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_has_routes_and_extension_fields() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for p in ["/networks", "/networks/{id}", "/endpoints", "/namespaces/{id}", "/globals/version"] {
            assert!(doc["paths"].get(p).is_some(), "missing path {p}");
        }
        let subnet = &doc["components"]["schemas"]["Subnet"]["properties"];
        assert!(subnet.get("IpRange").is_some() && subnet.get("AuxiliaryAddresses").is_some());
        assert!(doc["components"]["schemas"]["HostComputeNamespace"]["properties"].get("NetNsPath").is_some());
        assert!(doc["components"]["schemas"]["HostComputeEndpoint"]["properties"].get("Aliases").is_some());
    }
}
