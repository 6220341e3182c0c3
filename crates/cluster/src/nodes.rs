//! Nodes: a host's presence in the cluster, bound to an etcd lease.
//!
//! A host registers its name and VTEP under a lease and keeps the lease alive from a
//! background task. Its endpoints are attached to the same lease, so when a host dies (or is
//! cut off for longer than the TTL) etcd deletes its node key and endpoints by itself and every
//! peer's watch drops them: nobody has to clean up after a dead host for traffic to stop
//! being sent to it. Address reservations are deliberately *not* on the lease (see `ipam`).
//!
//! Restarts: the daemon persists [`NodeRegistration::lease_id`] and passes it back as
//! `previous_lease`. If that lease is still alive the restart is invisible to peers (same
//! lease, same keys, no delete events). If it expired, a new lease is granted and the node
//! key put again; the daemon re-publishes its endpoints.
//!
//! Outages: when the keepalive cannot reach etcd it retries with backoff. If etcd comes back
//! before the lease expired nothing changes; if the lease is gone (expired, or etcd lost it),
//! the task grants a new one, puts the node key again and re-puts every endpoint this host
//! published through this [`Cluster`], then announces the new lease id.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::alloc;
use crate::client::{Cluster, MAX_TXN_ATTEMPTS, backoff, decode, encode};
use crate::error::{ClusterError, Result};
use crate::keys;
use crate::model::{AddressOwner, ClusterEndpoint, NodeInfo};

/// Largest number of operations put in one etcd transaction (etcd refuses more than
/// `--max-txn-ops`, 128 by default).
pub(crate) const TXN_CHUNK: usize = 64;

/// This host's registration, shared by the keepalive task and the endpoint operations.
pub(crate) struct LocalNode {
    pub(crate) info: NodeInfo,
    pub(crate) ttl: i64,
    pub(crate) lease: watch::Sender<i64>,
    /// Endpoints this host published, re-put under a new lease after the old one was lost.
    /// Held across each put/delete and across a re-publish so the two never interleave.
    pub(crate) endpoints: Mutex<BTreeMap<(String, String), ClusterEndpoint>>,
}

impl LocalNode {
    pub(crate) fn lease_id(&self) -> i64 {
        *self.lease.borrow()
    }
}

/// A live registration of this host; one per [`Cluster`] at a time. Dropping it stops the
/// keepalive (the lease then expires after its TTL unless a restarted daemon picks it up again
/// with `previous_lease`) and this `Cluster` can no longer publish endpoints.
pub struct NodeRegistration {
    local: Arc<LocalNode>,
    keeper: JoinHandle<()>,
    cluster: Cluster,
}

impl std::fmt::Debug for NodeRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRegistration").field("node", &self.local.info).field("lease", &self.lease_id()).finish()
    }
}

impl NodeRegistration {
    /// The current lease id. Persist it and pass it as `previous_lease` after a restart.
    /// It changes when the lease was lost and a new one granted; see [`Self::lease_changes`].
    pub fn lease_id(&self) -> i64 {
        self.local.lease_id()
    }

    /// Notifies every change of the lease id (to persist the new one).
    pub fn lease_changes(&self) -> watch::Receiver<i64> {
        self.local.lease.subscribe()
    }

    pub fn node(&self) -> &NodeInfo {
        &self.local.info
    }

    pub fn ttl_secs(&self) -> i64 {
        self.local.ttl
    }

    /// Leaves the cluster now: stops the keepalive and revokes the lease, so peers drop this
    /// node and its endpoints at once instead of after the TTL. Address reservations stay.
    pub async fn deregister(self) -> Result<()> {
        let id = self.lease_id();
        let cluster = self.cluster.clone();
        drop(self); // stops the keepalive and forgets the registration
        match cluster.call("revoke node lease", |mut c| async move { c.lease_revoke(id).await }).await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for NodeRegistration {
    fn drop(&mut self) {
        self.keeper.abort();
        // Without a keepalive, endpoints published from now on would die with the lease.
        self.cluster.clear_local(&self.local);
    }
}

/// A key to delete if its mod revision is still the given one, with keys deleted along with it.
pub(crate) type GuardedDelete = (Vec<u8>, i64, Vec<Vec<u8>>);

/// What `remove_node` deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemovedNode {
    pub endpoints: usize,
    pub addresses: usize,
}

pub(crate) fn is_lease_not_found(e: &ClusterError) -> bool {
    match e {
        ClusterError::Etcd { reason, .. } => reason.contains("lease not found"),
        _ => false,
    }
}

impl Cluster {
    /// Registers this host as node `info.name` with VTEP `info.vtep`.
    ///
    /// `previous_lease` is the lease id persisted by an earlier run: reused when still alive,
    /// so a restart within the TTL changes nothing for peers. Otherwise a lease of `ttl_secs`
    /// is granted. The node name may already be registered only under the same VTEP (then it
    /// is this host's own earlier registration and is taken over); a live registration with
    /// another VTEP is a [`ClusterError::Conflict`].
    ///
    /// A background task keeps the lease alive from now on (see the module docs for outages).
    pub async fn register_node(&self, info: NodeInfo, previous_lease: Option<i64>, ttl_secs: i64) -> Result<NodeRegistration> {
        keys::validate_segment("node name", &info.name)?;
        if !(1..=3600).contains(&ttl_secs) {
            return Err(ClusterError::invalid("node lease TTL", format!("{ttl_secs} s is outside 1..=3600 s")));
        }
        if let Some(current) = self.local() {
            return Err(ClusterError::conflict(format!(
                "this host is already registered as node {} (lease {:x}); drop that registration first",
                current.info.name,
                current.lease_id()
            )));
        }
        let lease = match previous_lease {
            Some(id) if self.lease_ttl(id).await? > 0 => id,
            _ => self.grant(ttl_secs).await?,
        };
        self.put_node(&info, lease, true).await?;
        let (tx, _) = watch::channel(lease);
        let local = Arc::new(LocalNode { info, ttl: ttl_secs, lease: tx, endpoints: Mutex::new(BTreeMap::new()) });
        *self.inner.local.lock().unwrap_or_else(|e| e.into_inner()) = Some(local.clone());
        let keeper = tokio::spawn(keep_alive_forever(self.clone(), local.clone()));
        Ok(NodeRegistration { local, keeper, cluster: self.clone() })
    }

    /// Every live node.
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        let (kvs, _) = self.get_prefix("list nodes", keys::NODES).await?;
        kvs.iter().map(decode).collect()
    }

    /// Operator removal of a dead host: deletes its node key (there is none once the lease
    /// expired), its endpoints, and releases every address it owned in every network.
    /// Refused with [`ClusterError::NodeAlive`] while its lease is alive, because its hnsd
    /// would publish it again and reuse addresses already handed to others.
    pub async fn remove_node(&self, name: &str) -> Result<RemovedNode> {
        keys::validate_segment("node name", name)?;
        if let Some(kv) = self.get_one("look up node", &keys::node(name)).await? {
            let ttl = if kv.lease() != 0 { self.lease_ttl(kv.lease()).await? } else { -1 };
            if ttl > 0 {
                return Err(ClusterError::NodeAlive { node: name.to_owned(), lease_id: kv.lease(), ttl_secs: ttl });
            }
            let (key, rev) = (kv.key().to_vec(), kv.mod_revision());
            let txn = Txn::new().when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)]).and_then([TxnOp::delete(key, None)]);
            self.txn("delete node", txn).await?;
        }
        let mut removed = RemovedNode::default();
        for attempt in 0..MAX_TXN_ATTEMPTS {
            let (kvs, _) = self.get_prefix("list endpoints", keys::ENDPOINTS).await?;
            let mut doomed = Vec::new();
            for kv in &kvs {
                let ep: ClusterEndpoint = decode(kv)?;
                if ep.node == name {
                    doomed.push((kv.key().to_vec(), kv.mod_revision(), Vec::new()));
                }
            }
            let (kvs, _) = self.get_prefix("list addresses", keys::ADDRS).await?;
            let mut addrs = Vec::new();
            for kv in &kvs {
                let owner: AddressOwner = decode(kv)?;
                if owner.node == name {
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let Some((net, _)) = keys::parse_addr(&key) else { continue };
                    // Every owner record of the endpoint: its other addresses are this node's too.
                    let extra = (0..alloc::MAX_SUBNETS).map(|slot| keys::owner(net, &owner.endpoint_id, slot).into_bytes()).collect();
                    addrs.push((kv.key().to_vec(), kv.mod_revision(), extra));
                }
            }
            let (n_eps, n_addrs) = (doomed.len(), addrs.len());
            doomed.extend(addrs);
            if self.delete_guarded("remove node", doomed).await? {
                removed.endpoints += n_eps;
                removed.addresses += n_addrs;
                return Ok(removed);
            }
            backoff(attempt).await;
        }
        Err(ClusterError::conflict(format!("removing node {name}: its keys kept changing")))
    }

    /// Deletes each `(key, mod_revision, also_delete)` only if the key is unchanged, in chunks
    /// that fit a transaction. False when some key changed meanwhile (the caller re-reads);
    /// the chunks that did apply stay applied, which is fine for idempotent removals.
    pub(crate) async fn delete_guarded(&self, op: &str, items: Vec<GuardedDelete>) -> Result<bool> {
        let mut all = true;
        let mut batches: Vec<Vec<GuardedDelete>> = Vec::new();
        let mut ops = usize::MAX; // the first item opens a batch
        for item in items {
            let n = 1 + item.2.len();
            if ops.saturating_add(n) > TXN_CHUNK {
                batches.push(Vec::new());
                ops = 0;
            }
            ops += n;
            batches.last_mut().expect("a batch was just opened").push(item);
        }
        for batch in batches {
            let compares: Vec<Compare> = batch.iter().map(|(k, rev, _)| Compare::mod_revision(k.clone(), CompareOp::Equal, *rev)).collect();
            let deletes: Vec<TxnOp> = batch
                .iter()
                .flat_map(|(k, _, extra)| std::iter::once(k.clone()).chain(extra.iter().cloned()))
                .map(|k| TxnOp::delete(k, None::<DeleteOptions>))
                .collect();
            let resp = self.txn(op, Txn::new().when(compares).and_then(deletes)).await?;
            all &= resp.succeeded();
        }
        Ok(all)
    }

    pub(crate) fn local(&self) -> Option<Arc<LocalNode>> {
        self.inner.local.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn clear_local(&self, local: &Arc<LocalNode>) {
        let mut slot = self.inner.local.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, local)) {
            *slot = None;
        }
    }

    /// Remaining TTL of a lease in seconds; -1 when it does not exist (expired or revoked).
    async fn lease_ttl(&self, id: i64) -> Result<i64> {
        let resp = self.call("look up lease", |mut c| async move { c.lease_time_to_live(id, None).await }).await?;
        Ok(resp.ttl())
    }

    async fn grant(&self, ttl: i64) -> Result<i64> {
        let resp = self.call("grant node lease", |mut c| async move { c.lease_grant(ttl, None).await }).await?;
        Ok(resp.id())
    }

    /// Puts the node key under `lease`. With `check`, refuses to take over the name from a live
    /// registration with another VTEP.
    async fn put_node(&self, info: &NodeInfo, lease: i64, check: bool) -> Result<()> {
        let key = keys::node(&info.name);
        for attempt in 0..MAX_TXN_ATTEMPTS {
            let existing = self.get_one("look up node", &key).await?;
            let guard = match &existing {
                Some(kv) => {
                    if check && kv.lease() != lease {
                        let other: NodeInfo = decode(kv)?;
                        if other.vtep != info.vtep {
                            return Err(ClusterError::conflict(format!(
                                "node name {} is already registered by a live host with VTEP {} (lease {:x}); \
                                 pick another node name, or stop that host and wait for its lease to expire",
                                info.name, other.vtep, kv.lease()
                            )));
                        }
                    }
                    Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision())
                }
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            };
            let put = TxnOp::put(key.clone(), encode(info), Some(PutOptions::new().with_lease(lease)));
            if self.txn("register node", Txn::new().when([guard]).and_then([put])).await?.succeeded() {
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(ClusterError::conflict(format!("registering node {}: its key kept changing", info.name)))
    }

    /// After the lease was lost: a new lease, the node key and every local endpoint under it.
    async fn reregister(&self, local: &LocalNode) -> Result<i64> {
        let eps = local.endpoints.lock().await;
        let lease = self.grant(local.ttl).await?;
        self.put_node(&local.info, lease, false).await?;
        for ep in eps.values() {
            match self.put_endpoint_with_lease(ep, lease).await {
                Ok(()) => {}
                // The network was deleted meanwhile, or the address released: nothing to restore.
                Err(e @ (ClusterError::NotFound { .. } | ClusterError::Conflict { .. })) => {
                    tracing::warn!(endpoint = %ep.id, network = %ep.network_id, "not re-publishing endpoint: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        local.lease.send_replace(lease);
        Ok(lease)
    }
}

enum KeepAliveEnd {
    /// The lease does not exist any more.
    Lost,
    /// etcd could not be reached or the stream broke.
    Failed(ClusterError),
}

/// Keeps the lease alive until the registration is dropped (the task is aborted then).
async fn keep_alive_forever(cluster: Cluster, local: Arc<LocalNode>) {
    let mut failures = 0u32;
    loop {
        let end = keep_alive_session(&cluster, &local).await;
        match end {
            KeepAliveEnd::Lost => {
                tracing::warn!(node = %local.info.name, lease = local.lease_id(), "node lease lost; registering again");
                match cluster.reregister(&local).await {
                    Ok(lease) => {
                        tracing::info!(node = %local.info.name, lease, "node registered again under a new lease");
                        failures = 0;
                        continue;
                    }
                    Err(e) => tracing::warn!(node = %local.info.name, "registering again failed: {e}"),
                }
            }
            KeepAliveEnd::Failed(e) => {
                if failures == 0 {
                    tracing::warn!(node = %local.info.name, "node lease keepalive failed, retrying: {e}");
                }
            }
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(retry_delay(failures)).await;
    }
}

/// 100 ms doubling up to 2 s: an outage is noticed again within 2 s of its end.
pub(crate) fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(5)).min(2000))
}

/// One keepalive stream: a request every third of the TTL until something goes wrong.
async fn keep_alive_session(cluster: &Cluster, local: &LocalNode) -> KeepAliveEnd {
    let id = local.lease_id();
    let opened = cluster.call("keep node lease alive", |mut c| async move { c.lease_keep_alive(id).await }).await;
    let (mut keeper, mut stream) = match opened {
        Ok(pair) => pair,
        Err(ClusterError::Etcd { reason, .. }) if reason.contains("not found") => return KeepAliveEnd::Lost,
        Err(e) => return KeepAliveEnd::Failed(e),
    };
    let period = Duration::from_millis((local.ttl as u64 * 1000 / 3).max(200));
    let timeout = cluster.inner.request_timeout;
    loop {
        tokio::time::sleep(period).await;
        if let Err(e) = keeper.keep_alive().await {
            return KeepAliveEnd::Failed(ClusterError::from_etcd(&cluster.inner.shown, "keep node lease alive", e));
        }
        match tokio::time::timeout(timeout, stream.message()).await {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {}
            Ok(Ok(Some(_))) => return KeepAliveEnd::Lost,
            Ok(Ok(None)) => {
                return KeepAliveEnd::Failed(ClusterError::Unreachable {
                    endpoints: cluster.inner.shown.clone(),
                    op: "keep node lease alive".into(),
                    reason: "keepalive stream closed".into(),
                });
            }
            Ok(Err(e)) => return KeepAliveEnd::Failed(ClusterError::from_etcd(&cluster.inner.shown, "keep node lease alive", e)),
            Err(_) => return KeepAliveEnd::Failed(ClusterError::timeout(&cluster.inner.shown, "keep node lease alive", timeout)),
        }
    }
}
