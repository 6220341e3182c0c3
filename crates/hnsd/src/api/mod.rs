//! The HTTP API: HNS v2 shaped JSON over a unix socket.
//!
//! Handlers are thin: decode (naming the bad field), hand a typed request to the engine under
//! its lock (or to [`requests`], for paths that wait on another machine), encode. Every
//! failure is an [`ApiError`] body with its HTTP status.
//!
//! GETs of networks, endpoints, compartments, port mappings and load balancers do not take the
//! engine's lock: they read the views the engine published when its last writer released the
//! lock ([`crate::engine::views`]), so a slow writer (an nft apply, etcd, a reconcile pass)
//! delays no read, and a read after a change's reply shows the change. `GET /info`, `/nodes`
//! and `/metrics` still read the engine itself.

mod handlers;
mod loadbalancers;
mod nodes;
mod openapi;
pub mod requests;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use hns_api::{ApiError, ErrorCode};
use crate::engine::EngineLock;

/// Request bodies above this are refused with 413.
pub const MAX_BODY: usize = 1 << 20;

pub struct AppState {
    /// The engine behind its lock, and the read model the GETs are served from.
    pub engine: EngineLock,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub events: Arc<crate::events::Bus>,
}

pub type Shared = Arc<AppState>;

/// Wraps an [`ApiError`] into a response with its status.
pub struct Failure(pub ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0)).into_response()
    }
}

/// The value of a reply's `Server-Timing` header: the time spent in hnsd since `t`, which
/// benchmarks separate from the client's share of the round trip.
fn server_timing(t: std::time::Instant) -> String {
    format!("hnsd;dur={:.3}", t.elapsed().as_secs_f64() * 1000.0)
}

pub fn router(state: Shared) -> Router {
    use handlers::*;
    let mut r = Router::new();
    // Every route also answers with a trailing slash, as HNS clients send both.
    for (path, route) in [
        ("/networks", get(list_networks).post(create_network)),
        ("/networks/{id}", get(get_network).delete(delete_network).post(modify_network)),
        ("/endpoints", get(list_endpoints).post(create_endpoint)),
        ("/endpoints/{id}", get(get_endpoint).delete(delete_endpoint).post(modify_endpoint)),
        ("/namespaces", get(list_namespaces).post(create_namespace)),
        ("/namespaces/{id}", get(get_namespace).delete(delete_namespace).post(modify_namespace)),
        ("/portmappings", get(list_port_mappings)),
        ("/loadbalancers", get(loadbalancers::list_lbs).post(loadbalancers::create_lb)),
        ("/loadbalancers/{id}", get(loadbalancers::get_lb).delete(loadbalancers::delete_lb).post(loadbalancers::modify_lb)),
        ("/nodes", get(nodes::list_nodes)),
        ("/nodes/{name}", delete(nodes::remove_node)),
        ("/globals/version", get(version)),
        ("/healthz", get(healthz)),
        ("/info", get(info)),
        ("/openapi.json", get(openapi::document)),
        ("/metrics", get(crate::metrics::serve)),
        ("/events", get(crate::events::subscribe)),
    ] {
        r = r.route(path, route.clone()).route(&format!("{path}/"), route);
    }
    let metrics = state.metrics.clone();
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::events::record))
        .layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::track))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> Failure {
    Failure(ApiError::new(ErrorCode::NotFound, format!("no such API route: {uri}; see GET /openapi.json")))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Failure {
    Failure(ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {uri}; see GET /openapi.json")))
}
