//! `/loadbalancers`: HostComputeLoadBalancer objects (see `engine::loadbalancers`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hns_api::{ApiError, HostComputeLoadBalancer};

use super::handlers::body;
use super::{Failure, Shared, server_timing};
use crate::engine::views::{List, One};

#[utoipa::path(get, path = "/loadbalancers", responses((status = 200, body = [HostComputeLoadBalancer])))]
pub async fn list_lbs(State(s): State<Shared>) -> Json<List<HostComputeLoadBalancer>> {
    Json(s.engine.views().lbs())
}

/// Creates a load balancer: connections to each frontend VIP and external port are spread over
/// the backend endpoints' addresses on the internal port.
#[utoipa::path(post, path = "/loadbalancers", request_body = HostComputeLoadBalancer,
    responses((status = 200, body = HostComputeLoadBalancer), (status = 400, body = ApiError),
        (status = 404, description = "a backend endpoint does not exist", body = ApiError),
        (status = 409, description = "another load balancer has this frontend address, protocol and port", body = ApiError)))]
pub async fn create_lb(State(s): State<Shared>, b: Result<Bytes, BytesRejection>) -> Result<impl axum::response::IntoResponse, Failure> {
    let req: HostComputeLoadBalancer = body(b)?;
    let t = std::time::Instant::now();
    let lb = {
        let mut e = s.engine.lock().await;
        let lb = e.create_lb(req)?;
        republish(e.take_republish());
        lb
    };
    tracing::debug!(us = t.elapsed().as_micros() as u64, "load balancer created");
    // Server-Timing: the time spent in hnsd (benchmarks separate it from the client's share).
    Ok(([("server-timing", server_timing(t))], Json(lb)))
}

/// Writes the cluster records a load-balancer change reshaped (a source endpoint for remote
/// backends came or went) in the background, outside the engine lock.
fn republish(job: Option<crate::engine::Republish>) {
    if let Some(job) = job {
        tokio::spawn(job.run());
    }
}

#[utoipa::path(get, path = "/loadbalancers/{id}", params(("id" = String, Path, description = "ID")),
    responses((status = 200, body = HostComputeLoadBalancer), (status = 404, body = ApiError)))]
pub async fn get_lb(State(s): State<Shared>, Path(id): Path<String>) -> Result<Json<One<HostComputeLoadBalancer>>, Failure> {
    Ok(Json(s.engine.views().lb(&id)?))
}

#[utoipa::path(delete, path = "/loadbalancers/{id}", params(("id" = String, Path, description = "ID")),
    responses((status = 204), (status = 404, body = ApiError)))]
pub async fn delete_lb(State(s): State<Shared>, Path(id): Path<String>) -> Result<impl axum::response::IntoResponse, Failure> {
    let t = std::time::Instant::now();
    {
        let mut e = s.engine.lock().await;
        e.delete_lb(&id)?;
        republish(e.take_republish());
    }
    Ok((StatusCode::NO_CONTENT, [("server-timing", server_timing(t))]))
}

/// Replaces the load balancer with the one given (hcsshim's `Update`): backends, VIPs, port
/// mappings and flags. Backends that leave have their tracked connections cleared.
#[utoipa::path(post, path = "/loadbalancers/{id}", request_body = HostComputeLoadBalancer, params(("id" = String, Path, description = "ID")),
    responses((status = 200, body = HostComputeLoadBalancer), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn modify_lb(State(s): State<Shared>, Path(id): Path<String>, b: Result<Bytes, BytesRejection>) -> Result<impl axum::response::IntoResponse, Failure> {
    let req: HostComputeLoadBalancer = body(b)?;
    let t = std::time::Instant::now();
    let lb = {
        let mut e = s.engine.lock().await;
        let lb = e.modify_lb(&id, req)?;
        republish(e.take_republish());
        lb
    };
    Ok(([("server-timing", server_timing(t))], Json(lb)))
}
