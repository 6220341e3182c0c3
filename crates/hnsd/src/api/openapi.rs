//! The OpenAPI document, generated from the same types the API serves.
//!
//! Each route lists the statuses its own logic returns; [`SharedFailures`] adds the ones that
//! come from code every route of a kind shares (reading the body, the kernel and the store), so
//! no route can forget them. `tests/openapi.rs` checks real replies against this document.

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{MAX_BODY, handlers};

#[derive(OpenApi)]
#[openapi(
    info(title = "hns API", description = "Host Networking Service for Linux: HNS v2 (HCN) objects over HTTP+JSON on a unix socket. Fields marked Extension are additions to the HNS schema. Every failure is an ApiError body."),
    paths(
        handlers::list_networks, handlers::create_network, handlers::get_network, handlers::delete_network, handlers::modify_network,
        handlers::list_endpoints, handlers::create_endpoint, handlers::get_endpoint, handlers::delete_endpoint, handlers::modify_endpoint,
        handlers::list_namespaces, handlers::create_namespace, handlers::get_namespace, handlers::delete_namespace, handlers::modify_namespace,
        handlers::list_port_mappings, super::loadbalancers::list_lbs, super::loadbalancers::create_lb, super::loadbalancers::get_lb,
        super::loadbalancers::delete_lb, super::loadbalancers::modify_lb, handlers::version, handlers::healthz, handlers::info,
        super::nodes::list_nodes, super::nodes::remove_node, crate::events::subscribe, document,
    ),
    components(schemas(hns_api::NamespaceEndpointRequest, hns_api::NamespaceContainerRequest, hns_api::PolicyRequest, hns_api::PortMappingSettings, hns_api::ErrorCode, hns_api::Event)),
    modifiers(&SharedFailures)
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Adds the failures of shared code to every operation they can happen on.
struct SharedFailures;

impl Modify for SharedFailures {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            for (is_get, op) in [(true, &mut item.get), (false, &mut item.post), (false, &mut item.delete)] {
                let Some(op) = op else { continue };
                if op.request_body.is_some() {
                    // `handlers::body`: a body that is not JSON of the route's type, or too large.
                    add_failure(op, "400", "the body is not valid JSON of this route's type, or a field is invalid (`field` names it)");
                    add_failure(op, "413", &format!("the body is larger than {MAX_BODY} bytes"));
                    add_failure(op, "408", "the body did not arrive within the body timeout (`hnsd --body-timeout`)");
                }
                // GETs read memory only; every change goes through the store and the kernel.
                if !is_get {
                    add_failure(op, "500", "the store or the kernel failed (KERNEL_ERROR, STORE_ERROR, INTERNAL)");
                }
            }
        }
    }
}

fn add_failure(op: &mut Operation, status: &str, description: &str) {
    op.responses.responses.entry(status.to_owned()).or_insert_with(|| {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ApiError"))).build();
        ResponseBuilder::new().description(description).content("application/json", content).build().into()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_has_routes_and_extension_fields() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for p in ["/networks", "/networks/{id}", "/endpoints", "/namespaces/{id}", "/globals/version", "/openapi.json"] {
            assert!(doc["paths"].get(p).is_some(), "missing path {p}");
        }
        let subnet = &doc["components"]["schemas"]["Subnet"]["properties"];
        assert!(subnet.get("IpRange").is_some() && subnet.get("AuxiliaryAddresses").is_some());
        assert!(doc["components"]["schemas"]["HostComputeNamespace"]["properties"].get("NetNsPath").is_some());
        assert!(doc["components"]["schemas"]["HostComputeEndpoint"]["properties"].get("Aliases").is_some());
    }

    #[test]
    fn shared_failures_are_on_every_route_they_can_happen_on() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let create = &doc["paths"]["/networks"]["post"]["responses"];
        for s in ["200", "400", "409", "413", "500"] {
            assert!(create.get(s).is_some(), "POST /networks lacks {s}");
        }
        assert!(doc["paths"]["/networks"]["get"]["responses"].get("500").is_none());
        assert!(doc["paths"]["/networks/{id}"]["delete"]["responses"].get("413").is_none());
    }
}
