//! The daemon's link to the cluster store (overlay networks).
//!
//! At start, [`prepare`] checks that the advertise address belongs to this host and gives the
//! engine its VTEP before the first reconcile, so stored overlay networks come back with or
//! without etcd. Then [`run`] works in the background: connect, register this host under a
//! lease (the one the previous run persisted, when it is still alive, so a restart is
//! invisible to peers), persist every new lease id, and feed the cluster watch into the
//! engine. Until etcd answers, cluster operations fail with the reason and the data plane
//! runs as stored.
//!
//! Stopping hnsd drops the registration without revoking the lease: the data plane keeps
//! running, and peers keep this host's endpoints until the lease expires.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use hns_cluster::{Cluster, ClusterError, NodeInfo, NodeRegistration};

use crate::api::AppState;
use crate::config::cluster::ClusterSettings;
use crate::engine::Engine;
use crate::engine::overlay::LocalVtep;

/// Checks the advertise address and makes the engine a cluster node.
pub async fn prepare(engine: &mut Engine, s: &ClusterSettings) -> anyhow::Result<()> {
    let host = hns_kernel::netlink::Netlink::current()?;
    let (link, mtu) = host.underlay_of(s.advertise).await?.ok_or_else(|| {
        anyhow!("--advertise-addr {}: no interface of this host has that address; give the address other hosts reach this one at", s.advertise)
    })?;
    let overlay_mtu = hns_kernel::vxlan::overlay_mtu(mtu, s.advertise);
    tracing::info!(node = %s.node, vtep = %s.advertise, underlay = %link, underlay_mtu = mtu, overlay_mtu, store = %s.endpoints.join(","), "cluster node");
    engine.enable_overlay(LocalVtep { node: s.node.clone(), vtep: s.advertise, mtu: overlay_mtu, store: s.endpoints.join(",") });
    Ok(())
}

/// Aborts a background task when dropped (with the task that owns it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects, registers, and applies the cluster watch until the daemon stops.
pub async fn run(state: Arc<AppState>, s: ClusterSettings) {
    let (cluster, registration) = connect(&state, &s).await;
    tracing::info!(node = %s.node, lease = format!("{:x}", registration.lease_id()), "registered in the cluster");
    let mut leases = registration.lease_changes();
    let _persist = {
        let (state, node) = (state.clone(), s.node.clone());
        AbortOnDrop(tokio::spawn(async move {
            while leases.changed().await.is_ok() {
                let id = *leases.borrow();
                tracing::warn!(lease = format!("{id:x}"), "registered again under a new lease");
                state.engine.lock().await.store_lease(&node, id);
            }
        }))
    };
    state.engine.lock().await.cluster_connected(cluster.clone());
    let mut watch = cluster.watch();
    while let Some(event) = watch.next().await {
        let arrived = std::time::Instant::now();
        let kind = watch_kind(&event);
        match &event {
            hns_cluster::ClusterEvent::NodeUp(n) => state.events.publish(hns_api::Event::ok("node", "join").object(n.name.clone(), n.name.clone()).attr("vtep", n.vtep.to_string())),
            hns_cluster::ClusterEvent::NodeDown { name, previous } => state.events.publish(
                hns_api::Event::ok("node", "loss").object(name.clone(), name.clone()).attr("vtep", previous.as_ref().map(|p| p.vtep.to_string()).unwrap_or_default()),
            ),
            _ => {}
        }
        crate::engine::overlay::apply_cluster_event(&state.engine, event).await;
        state.metrics.watch_applied(kind, arrived.elapsed());
        if kind == "snapshot" {
            // After every (re)connection: what changed here while etcd was away is written.
            crate::engine::cluster_hooks::sync_clusters(&state.engine).await;
        }
    }
    drop(registration);
}

/// The metrics label of a watch event.
fn watch_kind(e: &hns_cluster::ClusterEvent) -> &'static str {
    use hns_cluster::ClusterEvent as E;
    match e {
        E::Snapshot(_) => "snapshot",
        E::NodeUp(_) => "node_up",
        E::NodeDown { .. } => "node_down",
        E::NetworkPut(_) => "network_put",
        E::NetworkDeleted { .. } => "network_deleted",
        E::EndpointPut(_) => "endpoint_put",
        E::EndpointDeleted { .. } => "endpoint_deleted",
        E::Disconnected { .. } => "disconnected",
    }
}

async fn connect(state: &AppState, s: &ClusterSettings) -> (Cluster, NodeRegistration) {
    let mut failures = 0u32;
    loop {
        match try_connect(state, s).await {
            Ok(done) => return done,
            Err(e) => {
                if failures == 0 {
                    tracing::warn!("cluster store not available yet (retrying; overlay networks keep forwarding meanwhile): {e}");
                }
                state.engine.lock().await.cluster_unreachable(e.to_string());
                failures = failures.saturating_add(1);
                tokio::time::sleep(Duration::from_millis((100u64 << failures.min(5)).min(2000))).await;
            }
        }
    }
}

async fn try_connect(state: &AppState, s: &ClusterSettings) -> Result<(Cluster, NodeRegistration), ClusterError> {
    let cluster = Cluster::connect(s.connection()).await?;
    let previous = state.engine.lock().await.stored_lease(&s.node);
    let me = NodeInfo { name: s.node.clone(), vtep: s.advertise };
    let registration = cluster.register_node(me, previous, s.lease_ttl_secs).await?;
    state.engine.lock().await.store_lease(&s.node, registration.lease_id());
    Ok((cluster, registration))
}
