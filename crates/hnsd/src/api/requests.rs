//! Request paths that hold the engine's lock only for what must be serial. An attach's kernel
//! step (veth into the compartment, addresses, routes: most of its cost), a detach's (the veth
//! retired), an ACL change's (map elements, while the store syncs), a network create's and
//! delete's (bridge and uplink links, the nft table, host routes, the DNS responder; for a
//! cluster driver's network too, its VXLAN device included) and the steps that wait on another
//! machine (a DHCP server, etcd; only an undo after a local failure calls etcd under the lock)
//! run with the lock released, so requests for other containers and networks go on meanwhile.
//! Requests for the same endpoint, compartment or network wait until its step is done
//! ([`lock_when_idle`]). Shared by the HTTP handlers and the Docker plugin.
//!
//! These paths never name a driver: a driver with cluster-wide state is reached through the
//! hooks of `engine::cluster_hooks`, by the network's kind, at each phase (endpoint plan,
//! staged create, withdrawal and staged delete; staged network create and withdrawal).

use std::future::Future;

use hns_api::{ApiError, HostComputeEndpoint, HostComputeNamespace, ModifyRequest, RequestType};

use super::Shared;
use crate::engine::dhcp::with_leases;
use crate::engine::cluster_hooks::{self, ClusterDriver, EndpointCreate};
use crate::engine::{Engine, NamespaceCreate, Step, lock_when_idle};

type Result<T> = std::result::Result<T, ApiError>;

/// Runs a request whose steps take and release the engine lock in a task of its own, so that
/// a client going away cannot cut it short between them (an attach left in flight would hold
/// its endpoint and compartment for good).
async fn uncut<T: Send + 'static>(op: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    tokio::spawn(op).await.map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
}

/// Runs an attach's or a detach's kernel step without the lock and finishes it under the
/// lock; `view` reads the request's result then (given the endpoint's and the compartment's IDs).
async fn finish<T>(s: &Shared, step: Step<T>, view: impl FnOnce(&Engine, &str, &str) -> Result<T>) -> Result<T> {
    match step {
        Step::Done(v) => Ok(v),
        Step::Attach(mut k) => {
            hns_kernel::timing::mark("lock released");
            let done = k.run().await;
            let (ep_id, ns_id) = (k.ep_id.clone(), k.ns_id.clone());
            let mut engine = s.engine.lock().await;
            engine.attach_end(*k, done).await?;
            view(&engine, &ep_id, &ns_id)
        }
        Step::Detach(mut k) => {
            let done = k.run().await;
            let (ep_id, ns_id) = (k.ep_id.clone(), k.ns_id.clone());
            let mut engine = s.engine.lock().await;
            engine.detach_end(*k, done).await?;
            view(&engine, &ep_id, &ns_id)
        }
    }
}

/// Creates an endpoint. Created attached: the kernel step runs without the lock, and a DHCP
/// lease is obtained first, likewise. On a cluster driver's network: the cluster's steps run
/// without the lock.
pub async fn create_endpoint(s: &Shared, req: HostComputeEndpoint) -> Result<HostComputeEndpoint> {
    // Once the network's create or delete step (if in flight) is done.
    let net = req.host_compute_network.clone();
    let planned = lock_when_idle(&s.engine, |e| e.network_id(&net).into_iter().collect()).await.plan_endpoint(req)?;
    let s = s.clone();
    match planned {
        EndpointCreate::Local(req) => uncut(async move {
            // Boxed: the attach's nested futures are too large for a worker's stack in debug builds.
            let (out, stages) = hns_kernel::timing::scope(Box::pin(create_local(&s, req))).await;
            tracing::debug!(total_us = stages.total().as_micros() as u64, "create endpoint stages: {stages}");
            out
        })
        .await,
        EndpointCreate::Cluster(c) => uncut(async move { cluster_hooks::create_endpoint_staged(&s.engine, c).await }).await,
    }
}

/// [`create_endpoint`] on a network of this host alone.
async fn create_local(s: &Shared, req: HostComputeEndpoint) -> Result<HostComputeEndpoint> {
    let ns = req.host_compute_namespace.clone();
    let net = req.host_compute_network.clone();
    // The network too, while its create is in its kernel step.
    let busy = move |e: &Engine| [e.touched(&[], &[&ns]), e.network_id(&net).into_iter().collect()].concat();
    let prepare = |e: &Engine| {
        let mut req = req;
        (e.lease_for_new_endpoint(&mut req), req)
    };
    let step = with_leases(&s.engine, busy, prepare, async |e, req| e.create_endpoint_begin(req).await).await?;
    finish(s, step, |e, ep, _| e.get_endpoint(ep)).await
}

/// Deletes an endpoint; its veth's kernel step runs without the lock, and so do the cluster
/// steps of a cluster driver's endpoint (its withdrawal and release).
pub async fn delete_endpoint(s: &Shared, key: &str) -> Result<()> {
    let (s, key) = (s.clone(), key.to_owned());
    uncut(async move {
        let mut engine = lock_when_idle(&s.engine, |e| e.touched(&[&key], &[])).await;
        let id = engine.endpoint_id(&key).ok();
        if let Some(e) = id.as_deref().and_then(|ep| engine.refuse_source_endpoint_delete(ep)) {
            return Err(e);
        }
        if let Some(w) = id.as_deref().and_then(|ep| engine.cluster_withdrawal(ep)) {
            drop(engine);
            return cluster_hooks::delete_endpoint_staged(&s.engine, w).await;
        }
        let (out, stages) = hns_kernel::timing::scope(Box::pin(async {
            let step = engine.delete_endpoint_begin(&key).await?;
            drop(engine);
            finish(&s, step, |_, _, _| Ok(())).await
        }))
        .await;
        tracing::debug!(total_us = stages.total().as_micros() as u64, "delete endpoint stages: {stages}");
        out
    })
    .await
}

/// Changes an endpoint's policies, once its attach (if any) is done; an ACL change's kernel
/// step runs without the lock.
pub async fn modify_endpoint(s: &Shared, key: &str, req: ModifyRequest) -> Result<()> {
    let (s, key) = (s.clone(), key.to_owned());
    uncut(async move {
        let (out, stages) = hns_kernel::timing::scope(async {
            let mut engine = lock_when_idle(&s.engine, |e| e.touched(&[&key], &[])).await;
            hns_kernel::timing::mark("lock");
            let step = engine.modify_endpoint(&key, req).await;
            hns_kernel::timing::mark("validate+commit");
            drop(engine);
            hns_kernel::timing::mark("publish");
            acl_step(&s, step?).await
        })
        .await;
        tracing::debug!(total_us = stages.total().as_micros() as u64, "modify endpoint stages: {stages}");
        out
    })
    .await
}

/// Creates a network. Its kernel step (links, the nft table, host routes, the DNS responder)
/// runs without the lock, the network in flight meanwhile; a create that would take the name,
/// links, subnet or adapter of a network whose delete is in its kernel step waits for it. A
/// cluster driver's network: its cluster step runs without the lock too.
pub async fn create_network(s: &Shared, req: hns_api::HostComputeNetwork) -> Result<hns_api::HostComputeNetwork> {
    let s = s.clone();
    if let Some(driver) = req.kind.and_then(ClusterDriver::of) {
        return uncut(async move { cluster_hooks::create_network_staged(driver, &s.engine, req).await }).await;
    }
    uncut(async move {
        // What validation needs to know of the host, read without the lock, once the networks
        // this one waits for (a delete of one with its name or subnet) are done.
        let reader = lock_when_idle(&s.engine, |e| e.create_waits_for(&req)).await.host_reader(&req);
        let seen = reader.read().await;
        let mut engine = lock_when_idle(&s.engine, |e| e.create_waits_for(&req)).await;
        let k = engine.create_network_begin(req, seen).await?;
        drop(engine);
        crate::engine::build_committed(&s.engine, k).await
    })
    .await
}

/// Deletes a network once its create (if in flight) is done. Its kernel step (the responder
/// stopped, the nft table without it, host routes and links removed) runs without the lock,
/// and so does a cluster driver's network's cluster step before it (the network in flight
/// meanwhile).
pub async fn delete_network(s: &Shared, key: &str) -> Result<()> {
    let (s, key) = (s.clone(), key.to_owned());
    uncut(async move {
        let mut engine = lock_when_idle(&s.engine, |e| e.network_id(&key).into_iter().collect()).await;
        let id = engine.deletable_network(&key)?;
        if let Some(w) = engine.cluster_network_withdrawal(&id)? {
            drop(engine);
            engine = cluster_hooks::withdraw_network_staged(&s.engine, w).await?;
        }
        let Some(mut k) = engine.network_remove_begin(&id)? else { return Ok(()) };
        drop(engine);
        let done = k.run(|| async { s.engine.lock().await.nft_snapshot() }).await;
        s.engine.lock().await.network_delete_end(k, done)
    })
    .await
}

/// Changes a network's policies; a NetworkACL change's kernel step (every endpoint of the
/// network) runs without the lock, after that of any of them in flight.
pub async fn modify_network(s: &Shared, key: &str, req: ModifyRequest) -> Result<hns_api::HostComputeNetwork> {
    let (s, key) = (s.clone(), key.to_owned());
    uncut(async move {
        // The network itself too, while its create is in its kernel step.
        let busy = |e: &Engine| e.network_id(&key).map(|n| [e.endpoints_of_network(&n), vec![n]].concat()).unwrap_or_default();
        let (net, step) = lock_when_idle(&s.engine, busy).await.modify_network(&key, req).await?;
        acl_step(&s, step).await?;
        Ok(net)
    })
    .await
}

/// Runs an ACL change's kernel step (if any) without the lock, then ends it under the lock.
async fn acl_step(s: &Shared, step: Option<crate::engine::acl::KernelAcl>) -> Result<()> {
    let Some(mut k) = step else { return Ok(()) };
    let done = k.run().await;
    hns_kernel::timing::mark("kernel+sync");
    let mut engine = s.engine.lock().await;
    let ended = engine.acl_end(&k);
    drop(engine);
    hns_kernel::timing::mark("end");
    done.and(ended)
}

/// Creates a namespace; the leases of the endpoints in its `Resources` are obtained first.
pub async fn create_namespace(s: &Shared, req: HostComputeNamespace) -> Result<HostComputeNamespace> {
    let keys = req.endpoint_ids();
    let s = s.clone();
    uncut(async move {
        let busy = |e: &Engine| e.touched(&keys.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        // A managed compartment's namespace is made without the lock (see `create_namespace_begin`).
        match with_leases(&s.engine, busy, |e| (e.leases_wanted(&keys), req), async |e, req| e.create_namespace_begin(req).await).await? {
            NamespaceCreate::Done(ns) => Ok(ns),
            NamespaceCreate::Make(mut m) => {
                let done = m.run().await;
                s.engine.lock().await.create_namespace_end(m, done).await
            }
        }
    })
    .await
}

/// Deletes a namespace once no attach into it is in flight; its mount is removed without the
/// lock.
pub async fn delete_namespace(s: &Shared, key: &str) -> Result<()> {
    let (s, key) = (s.clone(), key.to_owned());
    uncut(async move {
        let mut removal = lock_when_idle(&s.engine, |e| e.touched(&[], &[&key])).await.delete_namespace_begin(&key).await?;
        let id = removal.id.clone();
        let done = tokio::task::spawn_blocking(move || removal.run()).await.unwrap_or_else(|e| vec![format!("removing the namespace's files failed: {e}")]);
        s.engine.lock().await.delete_namespace_end(&id, done)
    })
    .await
}

/// Attaches, detaches or records a container. An attach's kernel step runs without the lock,
/// the endpoint's lease obtained first.
pub async fn modify_namespace(s: &Shared, key: &str, req: ModifyRequest) -> Result<HostComputeNamespace> {
    // Only a look ahead: the engine checks the request itself.
    let endpoint = req.settings.get("EndpointId").and_then(|v| v.as_str()).map(str::to_owned);
    let to_attach: Vec<String> = endpoint.iter().filter(|_| req.request_type == RequestType::Add).cloned().collect();
    let (s, key) = (s.clone(), key.to_owned());
    uncut(async move {
        let busy = |e: &Engine| e.touched(&endpoint.iter().map(String::as_str).collect::<Vec<_>>(), &[&key]);
        let step = with_leases(&s.engine, busy, |e| (e.leases_wanted(&to_attach), req), async |e, req| e.modify_namespace_begin(&key, req).await).await?;
        finish(&s, step, |e, _, ns| e.get_namespace(ns)).await
    })
    .await
}
