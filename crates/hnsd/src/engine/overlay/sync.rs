//! Keeping this host in step with the cluster.
//!
//! The watch delivers a snapshot (at start and after every outage) and then single changes.
//! A snapshot is applied as a diff: networks the cluster has are built, networks it no longer
//! has are dropped, every VXLAN device is made to hold exactly the remote endpoints of the
//! snapshot, and this host's own records in etcd are compared with its store (published
//! where missing, withdrawn and released where the endpoint is gone). So an outage of any
//! length ends in the same state as if it never happened, without restarting anything.

use std::collections::{BTreeMap, BTreeSet};

use hns_cluster::{Cluster, ClusterEndpoint, ClusterError, ClusterEvent, Snapshot};
use hns_drivers::overlay::{self as driver, RemoteEntry, SyncCount};
use hns_kernel::KernelError;

use super::super::{Engine, EngineLock};
use super::super::reconcile::Report;
use super::Link;
use super::endpoints::entries;

/// Cluster records of this host to write again, taken under the engine lock and written
/// without it (see [`Engine::take_republish`]).
pub(crate) struct Republish {
    cluster: Cluster,
    records: Vec<ClusterEndpoint>,
}

impl Republish {
    /// Writes the records. The change that made them left `own_dirty` set, so whatever fails
    /// here is written by the next reconcile pass.
    pub(crate) async fn run(self) {
        for r in self.records {
            if let Err(e) = self.cluster.put_endpoint(r.clone()).await {
                tracing::warn!(endpoint = %r.id, error = %e, "could not publish an endpoint's new record; the reconciler retries");
                return;
            }
        }
    }
}

impl Engine {
    /// The records of the endpoints a load-balancer change gave another published form (a
    /// source endpoint came or went), to be written at once rather than at the next pass.
    pub(crate) fn take_republish(&mut self) -> Option<Republish> {
        let ids = self.lbs.take_republish();
        if ids.is_empty() {
            return None;
        }
        let (cluster, _) = self.cluster_for("publish an endpoint's record").ok()?;
        let records = ids.iter().filter_map(|id| self.cluster_record_of(id)).collect();
        Some(Republish { cluster, records })
    }

    /// Applies one event of the cluster watch under the caller's lock, the networks it
    /// reports built already (see [`apply_cluster_event`], the watch's entry point).
    async fn apply_cluster_event(&mut self, ev: ClusterEvent) {
        let me = self.overlay.local.as_ref().map(|l| l.node.clone()).unwrap_or_default();
        match ev {
            ClusterEvent::Snapshot(s) => self.apply_snapshot(s, &me).await,
            // Built by `apply_cluster_event`, without the lock.
            ClusterEvent::NetworkPut(_) => {}
            ClusterEvent::NetworkDeleted { id, .. } => self.drop_cluster_network(&id).await,
            ClusterEvent::EndpointPut(e) if e.node == me => {
                // Ours: expected after a publish; anything else is repaired by the sync.
                if self.cluster_record_of(&e.id).as_ref() != Some(&e) {
                    self.overlay.own_dirty.mark();
                }
            }
            ClusterEvent::EndpointPut(e) => self.add_remote_endpoint(e).await,
            ClusterEvent::EndpointDeleted { network_id, endpoint_id, .. } => self.remove_remote_endpoint(&network_id, &endpoint_id).await,
            ClusterEvent::NodeUp(n) => {
                tracing::info!(node = %n.name, vtep = %n.vtep, "cluster node up");
            }
            ClusterEvent::NodeDown { name, .. } => {
                tracing::warn!(node = %name, "cluster node down (its lease expired); its endpoints leave this host's view");
            }
            ClusterEvent::Disconnected { reason } => {
                tracing::warn!("cluster watch lost etcd; overlay networks keep forwarding as programmed: {reason}");
                self.overlay.link = Link::Offline(reason);
            }
        }
    }

    /// A snapshot of the cluster, its networks already built here ([`apply_cluster_event`]):
    /// networks gone from the cluster are dropped, other hosts' endpoints replaced.
    async fn apply_snapshot(&mut self, s: Snapshot, me: &str) {
        tracing::info!(revision = s.revision, networks = s.networks.len(), endpoints = s.endpoints.len(), nodes = s.nodes.len(), "cluster snapshot");
        self.overlay.link = Link::Online;
        self.overlay.quiet = None;
        let known: BTreeSet<&str> = s.networks.iter().map(|n| n.id.as_str()).collect();
        for id in self.overlay_network_ids() {
            if !known.contains(id.as_str()) {
                self.drop_cluster_network(&id).await;
            }
        }
        self.overlay.problems.retain(|id, _| known.contains(id.as_str()));
        let mut remote: BTreeMap<String, BTreeMap<String, ClusterEndpoint>> = BTreeMap::new();
        for e in s.endpoints.into_iter().filter(|e| e.node != me) {
            remote.entry(e.network_id.clone()).or_default().insert(e.id.clone(), e);
        }
        self.overlay.remote.replace(remote);
        self.overlay.synced = true;
        for id in self.overlay_network_ids() {
            match self.sync_remote_kernel(&id).await {
                Ok(c) if c.added + c.removed > 0 => tracing::info!(network = %id, added = c.added, removed = c.removed, "remote endpoints brought in line with the cluster"),
                Ok(_) => {}
                Err(e) => tracing::warn!(network = %id, error = %e, "could not program remote endpoints; the reconciler retries"),
            }
            self.dns_refresh(&id);
        }
        self.lbs_follow_remote_snapshot();
        // Anything may have happened while etcd was away: this host's records are compared
        // after the event ([`sync_own`], run by the watch without the engine lock).
        self.overlay.own_dirty.mark();
    }

    /// Makes a network's VXLAN device hold exactly the remote endpoints in view.
    async fn sync_remote_kernel(&self, net_id: &str) -> Result<SyncCount, KernelError> {
        let Some(vxlan) = self.networks.get(net_id).and_then(|n| n.plan.overlay.as_ref()).map(|o| o.vxlan.clone()) else { return Ok(SyncCount::default()) };
        let desired: Vec<RemoteEntry> = self.overlay.remote.get(net_id).map(|m| m.values().flat_map(entries).collect()).unwrap_or_default();
        driver::sync_remote(&self.host, &vxlan, &desired).await
    }

    /// The cluster record an endpoint of this host should have, if it is one of ours on an
    /// overlay network.
    fn cluster_record_of(&self, ep_id: &str) -> Option<ClusterEndpoint> {
        let rec = self.endpoints.get(ep_id)?;
        self.networks.get(&rec.network_id)?.plan.overlay.as_ref()?;
        self.cluster_record(rec)
    }

    /// The reconciler's share under the lock: re-program remote endpoints the kernel lost (a
    /// VXLAN device re-created, an entry deleted by hand) and drop stale ones. This host's own
    /// cluster records are [`sync_own`]'s, without the lock.
    pub(crate) async fn reconcile_overlay(&mut self, r: &mut Report) {
        if self.overlay.synced {
            for id in self.overlay_network_ids() {
                match self.sync_remote_kernel(&id).await {
                    Ok(c) if c.added + c.removed > 0 => {
                        r.repaired.push(format!("overlay network {id}: {} remote endpoint(s) programmed again, {} stale removed", c.added, c.removed))
                    }
                    Ok(_) => {}
                    Err(e) => r.errors.push(format!("overlay network {id}: {e}")),
                }
            }
        }
    }

    /// What [`sync_own`] needs, if there is something to sync and etcd looks reachable.
    fn own_sync_plan(&self) -> Option<OwnSync> {
        if !self.overlay.own_dirty.is_set() || !matches!(self.overlay.link, Link::Online) {
            return None;
        }
        let Ok((cluster, local)) = self.cluster_for("sync this host's endpoints") else { return None };
        let nets = self.overlay_network_ids();
        let here = nets.iter().flat_map(|n| self.endpoints_of_network(n).into_iter().map(move |ep| (n.clone(), ep))).collect();
        let wanted = self.endpoints.keys().filter_map(|id| self.cluster_record_of(id)).collect();
        Some(OwnSync { cluster, me: local.node, nets, here, wanted, seen: self.overlay.own_dirty.seen() })
    }
}

/// This host's endpoints on overlay networks as the store has them, taken under the engine
/// lock by [`Engine::own_sync_plan`], and the cluster to bring in line with them.
struct OwnSync {
    cluster: Cluster,
    me: String,
    nets: Vec<String>,
    /// (network, endpoint) of every endpoint of this host on an overlay network.
    here: BTreeSet<(String, String)>,
    /// The records those endpoints should have.
    wanted: Vec<ClusterEndpoint>,
    /// [`OwnDirty::seen`](super::OwnDirty::seen) when the plan was taken.
    seen: u64,
}

impl OwnSync {
    /// Publishes what etcd lacks, withdraws what this host no longer has, and releases the
    /// addresses of its endpoints that are gone.
    async fn run(&self) -> Result<(), ClusterError> {
        let (cluster, me) = (&self.cluster, self.me.as_str());
        let mut published = Vec::new();
        for n in &self.nets {
            published.extend(cluster.list_endpoints(n).await?.into_iter().filter(|e| e.node == me));
        }
        for w in self.wanted.iter().filter(|w| !published.contains(w)) {
            tracing::info!(endpoint = %w.id, ip = %w.ip, "publishing an endpoint of this host the cluster did not have");
            match cluster.put_endpoint(w.clone()).await {
                Ok(()) => {}
                // Its reservation is gone (an operator removed this node while it was down):
                // take the same address again if it is still free.
                Err(ClusterError::Conflict { .. }) => {
                    cluster.allocate_addresses(&w.network_id, &w.id, me, &w.ips().collect::<Vec<_>>()).await?;
                    cluster.put_endpoint(w.clone()).await?;
                }
                Err(ClusterError::NotFound { .. }) => {} // the network is going: its drop event follows
                Err(e) => return Err(e),
            }
        }
        for p in published.iter().filter(|p| !self.wanted.iter().any(|w| w.id == p.id && w.network_id == p.network_id)) {
            tracing::info!(endpoint = %p.id, ip = %p.ip, "withdrawing an endpoint this host no longer has");
            cluster.delete_endpoint(&p.network_id, &p.id).await?;
        }
        for n in &self.nets {
            for (ip, owner) in cluster.list_addresses(n).await? {
                if owner.node == me && !self.here.contains(&(n.clone(), owner.endpoint_id.clone())) {
                    tracing::info!(network = %n, %ip, endpoint = %owner.endpoint_id, "releasing the address of an endpoint this host no longer has");
                    cluster.release_address(n, &owner.endpoint_id).await?;
                }
            }
        }
        Ok(())
    }
}

/// Brings this host's records in etcd in line with its store, if they may differ (see
/// `own_dirty`), with etcd's I/O done while the engine lock is free: requests wait for it only
/// if they are overlay endpoint creates or deletes (their cluster steps and this sync exclude
/// each other through `cluster_io`, so what the sync saw of this host stays true while it
/// writes). Returns whether it synced; a failure is logged and left for the next pass.
pub(crate) async fn sync_own(engine: &EngineLock) -> bool {
    let io = engine.lock().await.overlay.cluster_io.clone();
    let _alone = io.write().await;
    let Some(plan) = engine.lock().await.own_sync_plan() else { return false };
    let done = plan.run().await;
    let mut g = engine.lock().await;
    match g.checked(done) {
        Ok(()) => {
            g.overlay.own_dirty.synced(plan.seen);
            true
        }
        Err(e) => {
            tracing::warn!("this host's cluster records are not in sync yet (retried on the next pass): {e}");
            false
        }
    }
}

/// Applies one event of the cluster watch. The networks it reports (one another host created,
/// or all of them in a snapshot after a (re)connection) are built here first, each with its
/// kernel step without the engine lock ([`super::networks::build_cluster_network`]); the
/// rest of the event is applied under it.
pub(crate) async fn apply_cluster_event(engine: &EngineLock, ev: ClusterEvent) {
    match &ev {
        ClusterEvent::NetworkPut(n) => return super::networks::build_cluster_network(engine, n).await,
        ClusterEvent::Snapshot(s) => {
            for n in &s.networks {
                super::networks::build_cluster_network(engine, n).await;
            }
        }
        _ => {}
    }
    engine.lock().await.apply_cluster_event(ev).await;
}
