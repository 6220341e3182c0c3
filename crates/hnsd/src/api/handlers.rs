//! One handler per route. Each decodes its input, calls the engine, encodes the result. GETs
//! of API objects read the published views (`engine::views`) and never take the engine's lock.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hns_api::{ApiError, DaemonInfo, ErrorCode, Health, HostComputeEndpoint, HostComputeNamespace, HostComputeNetwork, ModifyRequest, PortMappingInfo, Version};
use serde::de::DeserializeOwned;

use super::{Failure, MAX_BODY, Shared, server_timing};
use crate::engine::views::{List, NamespaceView, One};
use super::requests;

type Reply<T> = Result<Json<T>, Failure>;

/// Reads a JSON body, mapping an oversized one to 413, a late one to 408 and bad JSON to 400
/// with the field.
pub(super) fn body<T: DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> Result<T, Failure> {
    let b = b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::BodyTooLarge, format!("request body is larger than {MAX_BODY} bytes"))
        } else if let Some(t) = crate::serve::body_timeout(&e) {
            ApiError::new(ErrorCode::RequestTimeout, format!("{t}; send the whole request at once"))
        } else {
            ApiError::new(ErrorCode::InvalidJson, format!("could not read the request body: {e}"))
        }
    })?;
    Ok(hns_api::decode::from_slice(&b)?)
}

#[utoipa::path(get, path = "/networks", responses((status = 200, body = [HostComputeNetwork])))]
pub async fn list_networks(State(s): State<Shared>) -> Json<List<HostComputeNetwork>> {
    Json(s.engine.views().networks())
}

#[utoipa::path(post, path = "/networks", request_body = HostComputeNetwork,
    responses((status = 200, body = HostComputeNetwork), (status = 400, body = ApiError), (status = 409, body = ApiError),
        (status = 503, description = "overlay: the cluster store is unreachable", body = ApiError)))]
pub async fn create_network(State(s): State<Shared>, b: Result<Bytes, BytesRejection>) -> Reply<HostComputeNetwork> {
    let req: HostComputeNetwork = body(b).map_err(|Failure(e)| {
        // An unknown driver name is a network-type error, not a syntax error.
        if e.field.as_deref() == Some("Type") { Failure(ApiError { code: ErrorCode::InvalidNetworkType, ..e }) } else { Failure(e) }
    })?;
    Ok(Json(requests::create_network(&s, req).await?))
}

#[utoipa::path(get, path = "/networks/{id}", params(("id" = String, Path, description = "ID or name")),
    responses((status = 200, body = HostComputeNetwork), (status = 404, body = ApiError)))]
pub async fn get_network(State(s): State<Shared>, Path(id): Path<String>) -> Reply<One<HostComputeNetwork>> {
    Ok(Json(s.engine.views().network(&id)?))
}

#[utoipa::path(delete, path = "/networks/{id}", params(("id" = String, Path, description = "ID or name")),
    responses((status = 204), (status = 404, body = ApiError), (status = 409, body = ApiError),
        (status = 503, description = "overlay: the cluster store is unreachable", body = ApiError)))]
pub async fn delete_network(State(s): State<Shared>, Path(id): Path<String>) -> Result<StatusCode, Failure> {
    requests::delete_network(&s, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/networks/{id}", request_body = ModifyRequest, params(("id" = String, Path, description = "ID or name")),
    responses((status = 200, body = HostComputeNetwork), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn modify_network(State(s): State<Shared>, Path(id): Path<String>, b: Result<Bytes, BytesRejection>) -> Reply<HostComputeNetwork> {
    let req: ModifyRequest = body(b)?;
    Ok(Json(requests::modify_network(&s, &id, req).await?))
}

#[utoipa::path(get, path = "/endpoints", responses((status = 200, body = [HostComputeEndpoint])))]
pub async fn list_endpoints(State(s): State<Shared>) -> Json<List<HostComputeEndpoint>> {
    Json(s.engine.views().endpoints())
}

#[utoipa::path(post, path = "/endpoints", request_body = HostComputeEndpoint,
    responses((status = 200, body = HostComputeEndpoint), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError),
        (status = 503, description = "overlay: the cluster store is unreachable", body = ApiError),
        (status = 504, description = "DHCP networks: no lease from the LAN's DHCP server", body = ApiError)))]
pub async fn create_endpoint(State(s): State<Shared>, b: Result<Bytes, BytesRejection>) -> Result<impl IntoResponse, Failure> {
    let t = Instant::now();
    let req = body(b)?;
    let ep = requests::create_endpoint(&s, req).await?;
    Ok(([("server-timing", server_timing(t))], Json(ep)))
}

#[utoipa::path(get, path = "/endpoints/{id}", params(("id" = String, Path, description = "ID or name")),
    responses((status = 200, body = HostComputeEndpoint), (status = 404, body = ApiError)))]
pub async fn get_endpoint(State(s): State<Shared>, Path(id): Path<String>) -> Reply<One<HostComputeEndpoint>> {
    Ok(Json(s.engine.views().endpoint(&id)?))
}

#[utoipa::path(delete, path = "/endpoints/{id}", params(("id" = String, Path, description = "ID or name")),
    responses((status = 204), (status = 404, body = ApiError),
        (status = 503, description = "overlay: the cluster store is unreachable", body = ApiError)))]
pub async fn delete_endpoint(State(s): State<Shared>, Path(id): Path<String>) -> Result<impl IntoResponse, Failure> {
    let t = Instant::now();
    requests::delete_endpoint(&s, &id).await?;
    Ok((StatusCode::NO_CONTENT, [("server-timing", server_timing(t))]))
}

/// `ResourceType: Policy` with `RequestType: Add|Remove` adds or removes `PortMapping` policies.
#[utoipa::path(post, path = "/endpoints/{id}", request_body = ModifyRequest, params(("id" = String, Path, description = "ID or name")),
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn modify_endpoint(State(s): State<Shared>, Path(id): Path<String>, b: Result<Bytes, BytesRejection>) -> Result<impl IntoResponse, Failure> {
    let req: ModifyRequest = body(b)?;
    // No body, as HcnModifyEndpoint returns none: an endpoint may hold thousands of mappings,
    // and echoing them all would make every change cost as much as the whole set.
    let t = Instant::now();
    requests::modify_endpoint(&s, &id, req).await?;
    Ok((StatusCode::NO_CONTENT, [("server-timing", server_timing(t))]))
}

#[utoipa::path(get, path = "/namespaces", responses((status = 200, body = [HostComputeNamespace])))]
pub async fn list_namespaces(State(s): State<Shared>) -> Json<List<NamespaceView>> {
    Json(s.engine.views().namespaces())
}

#[utoipa::path(post, path = "/namespaces", request_body = HostComputeNamespace,
    responses((status = 200, body = HostComputeNamespace), (status = 400, body = ApiError),
        (status = 404, description = "an endpoint listed in Resources does not exist", body = ApiError), (status = 409, body = ApiError),
        (status = 503, description = "overlay: the cluster store is unreachable", body = ApiError),
        (status = 504, description = "DHCP networks: no lease from the LAN's DHCP server", body = ApiError)))]
pub async fn create_namespace(State(s): State<Shared>, b: Result<Bytes, BytesRejection>) -> Reply<HostComputeNamespace> {
    let req: HostComputeNamespace = body(b)?;
    Ok(Json(requests::create_namespace(&s, req).await?))
}

#[utoipa::path(get, path = "/namespaces/{id}", params(("id" = String, Path, description = "ID or name")),
    responses((status = 200, body = HostComputeNamespace), (status = 404, body = ApiError)))]
pub async fn get_namespace(State(s): State<Shared>, Path(id): Path<String>) -> Reply<One<NamespaceView>> {
    Ok(Json(s.engine.views().namespace(&id)?))
}

#[utoipa::path(delete, path = "/namespaces/{id}", params(("id" = String, Path, description = "ID or name")),
    responses((status = 204), (status = 404, body = ApiError)))]
pub async fn delete_namespace(State(s): State<Shared>, Path(id): Path<String>) -> Result<StatusCode, Failure> {
    requests::delete_namespace(&s, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Attach/detach an endpoint (`ResourceType: Endpoint`), or record the process running in the
/// compartment (`ResourceType: Container`).
#[utoipa::path(post, path = "/namespaces/{id}", request_body = ModifyRequest, params(("id" = String, Path, description = "ID or name")),
    responses((status = 200, body = HostComputeNamespace), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError),
        (status = 503, description = "overlay: the cluster store is unreachable", body = ApiError),
        (status = 504, description = "DHCP networks: no lease from the LAN's DHCP server", body = ApiError)))]
pub async fn modify_namespace(State(s): State<Shared>, Path(id): Path<String>, b: Result<Bytes, BytesRejection>) -> Result<impl IntoResponse, Failure> {
    let t = Instant::now();
    let req: ModifyRequest = body(b)?;
    let ns = requests::modify_namespace(&s, &id, req).await?;
    Ok(([("server-timing", server_timing(t))], Json(ns)))
}

/// Every port mapping, with the fields of Windows' Open-ContainerPort.
#[utoipa::path(get, path = "/portmappings", responses((status = 200, body = [PortMappingInfo])))]
pub async fn list_port_mappings(State(s): State<Shared>) -> Json<Vec<PortMappingInfo>> {
    Json(s.engine.views().port_mappings())
}

/// The HNS service version (no envelope).
#[utoipa::path(get, path = "/globals/version", responses((status = 200, body = Version)))]
pub async fn version() -> Json<Version> {
    Json(hns_api::HNS_VERSION)
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

#[utoipa::path(get, path = "/info", responses((status = 200, body = DaemonInfo)))]
pub async fn info(State(s): State<Shared>) -> Json<DaemonInfo> {
    let mut info = s.engine.lock().await.info();
    let foreign = tokio::task::spawn_blocking(crate::engine::info::foreign_drop_chains).await.unwrap_or_default();
    info.warnings.splice(0..0, foreign);
    Json(info)
}
