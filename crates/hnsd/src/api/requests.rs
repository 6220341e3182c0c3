//! Request paths with steps that wait on another machine (a DHCP server, etcd). They take the
//! engine's lock for each step that needs it and release it while they wait, so a slow server
//! delays only the request that asked it. Shared by the HTTP handlers and the Docker plugin.

use std::future::Future;

use hns_api::{ApiError, HostComputeEndpoint, HostComputeNamespace, ModifyRequest, RequestType};

use super::Shared;
use crate::engine::Engine;
use crate::engine::dhcp::with_leases;
use crate::engine::overlay::{self, Planned};

type Result<T> = std::result::Result<T, ApiError>;

/// Runs a request whose steps take and release the engine lock in a task of its own, so that
/// a client going away cannot cut it short between them.
async fn uncut<T: Send + 'static>(op: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    tokio::spawn(op).await.map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
}

/// Creates an endpoint: a DHCP lease (created attached on a DHCP network) or the cluster's
/// address and publication (overlay) are obtained without the lock.
pub async fn create_endpoint(s: &Shared, req: HostComputeEndpoint) -> Result<HostComputeEndpoint> {
    let planned = s.engine.lock().await.overlay_plan_endpoint(req)?;
    match planned {
        Planned::Local(req) => {
            let prepare = |e: &Engine| {
                let mut req = req;
                (e.lease_for_new_endpoint(&mut req), req)
            };
            with_leases(&s.engine, prepare, async |e, req| e.create_endpoint(req).await).await
        }
        Planned::Overlay(a) => {
            let s = s.clone();
            uncut(async move { overlay::create_staged(&s.engine, a).await }).await
        }
    }
}

/// Deletes an endpoint; an overlay endpoint's withdrawal and release run without the lock.
pub async fn delete_endpoint(s: &Shared, key: &str) -> Result<()> {
    let withdrawal = {
        let engine = s.engine.lock().await;
        engine.endpoint_id(key).ok().and_then(|ep| engine.overlay_withdrawal(&ep))
    };
    match withdrawal {
        Some(w) => {
            let s = s.clone();
            uncut(async move { overlay::delete_staged(&s.engine, w).await }).await
        }
        None => s.engine.lock().await.delete_endpoint(key).await,
    }
}

/// Creates a namespace; the leases of the endpoints in its `Resources` are obtained first.
pub async fn create_namespace(s: &Shared, req: HostComputeNamespace) -> Result<HostComputeNamespace> {
    let keys = req.endpoint_ids();
    with_leases(&s.engine, |e| (e.leases_wanted(&keys), req), async |e, req| e.create_namespace(req).await).await
}

/// Attaches, detaches or records a container; an endpoint to attach gets its lease first.
pub async fn modify_namespace(s: &Shared, key: &str, req: ModifyRequest) -> Result<HostComputeNamespace> {
    // Only a look ahead for a lease: the engine checks the request itself.
    let keys: Vec<String> =
        (req.request_type == RequestType::Add).then(|| req.settings.get("EndpointId").and_then(|v| v.as_str()).map(str::to_owned)).flatten().into_iter().collect();
    with_leases(&s.engine, |e| (e.leases_wanted(&keys), req), async |e, req| e.modify_namespace(key, req).await).await
}
