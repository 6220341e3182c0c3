//! Overlay networks: the engine's side of the cluster.
//!
//! etcd (through hns-cluster) is the truth for everything that spans hosts: the overlay
//! networks and their VNIs, the cluster IPAM, and which endpoint lives on which host. The
//! local store keeps what this host applied (its copy of each overlay network, its own
//! endpoints), so the reconciler and a restart work as for any other network, with or
//! without etcd.
//!
//! - [`networks`]: creating and deleting overlay networks (cluster first, then here), and
//!   building or dropping the local copy when the watch reports a network;
//! - [`endpoints`]: this host's endpoints (cluster address before the local commit, published
//!   after it, withdrawn before the local delete) and the remote endpoints the watch reports
//!   (VXLAN FDB and neighbour entries, DNS names, `GET /endpoints` with `RemoteEndpoint`);
//! - [`sync`]: the watch events, the snapshot diff after every (re)connection, and the sync of
//!   this host's own cluster records (what was deleted or published while etcd was away);
//! - [`nodes`]: `GET /nodes` and `DELETE /nodes/{name}`.
//!
//! While etcd is unreachable nothing here touches the kernel: the data plane keeps running as
//! programmed, cluster operations fail at once with the cluster's message (HTTP 503), and the
//! next snapshot converges everything.

mod endpoints;
pub(crate) use endpoints::{Allocation, Planned, Reserved, Withdrawal, create_staged, delete_staged};
mod networks;
pub(crate) use networks::{NetworkWithdrawal, create_network_staged, withdraw_network_staged};
pub mod nodes;
mod sync;

pub(crate) use sync::{Republish, apply_cluster_event, sync_own};

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hns_api::{ApiError, ErrorCode, HostComputeNetwork};
use hns_cluster::{Cluster, ClusterEndpoint, ClusterError};
use hns_drivers::overlay::OverlayPlan;

use super::validate;
use super::{Engine, Net, Result};

/// This host as a cluster node, from hnsd's flags.
#[derive(Debug, Clone)]
pub struct LocalVtep {
    pub node: String,
    /// The underlay address peers send VXLAN packets to.
    pub vtep: IpAddr,
    /// MTU of overlay links: the underlay link's MTU minus the encapsulation overhead.
    pub mtu: u32,
    /// The etcd endpoints, for messages.
    pub store: String,
}

/// How this host sees etcd.
#[derive(Debug, Clone, Default)]
pub(crate) enum Link {
    /// No cluster store configured.
    #[default]
    Disabled,
    /// Not connected (or not registered) yet; the last failure.
    Connecting(String),
    /// The watch delivered a snapshot and runs.
    Online,
    /// The watch lost etcd; the view is kept as it was until the next snapshot.
    Offline(String),
}

/// The overlay side of the engine.
#[derive(Default)]
pub struct OverlayState {
    pub(crate) local: Option<LocalVtep>,
    pub(crate) cluster: Option<Cluster>,
    pub(crate) link: Link,
    /// Endpoints of other hosts, by network ID then endpoint ID.
    pub(crate) remote: RemoteMap,
    /// A snapshot arrived since start: the remote view is complete, so entries the kernel has
    /// beyond it are stale (before that, they are all we know and stay).
    pub(crate) synced: bool,
    /// This host's cluster records may differ from its store (a delete or release failed while
    /// etcd was away, a compartment vanished): the next pass with etcd online fixes them.
    pub(crate) own_dirty: OwnDirty,
    /// Held shared by an endpoint's cluster steps run without the engine lock (its address
    /// allocated and the endpoint published, or withdrawn and released), exclusively by the
    /// sync of this host's records ([`sync::sync_own`]): the sync's view of this host's
    /// endpoints then stays true while it writes to etcd without the engine lock.
    pub(crate) cluster_io: std::sync::Arc<tokio::sync::RwLock<()>>,
    /// Cluster networks this host could not build, with the reason (shown by `info`).
    pub(crate) problems: BTreeMap<String, String>,
    /// An operation found etcd unreachable while the watch still looked healthy (a silent
    /// partition: no reset, so only the request timeout tells): until then, cluster
    /// operations fail at once with that reason instead of each waiting for the timeout
    /// while holding the engine.
    pub(crate) quiet: Option<(Instant, String)>,
    /// IDs of endpoints whose cluster addresses are being allocated (without the engine lock):
    /// a second request for the same ID meanwhile is refused.
    pub(crate) creating: std::collections::HashSet<String>,
    /// IDs of overlay networks this host is creating in the cluster (without the engine
    /// lock): the watch does not build them meanwhile (`networks::StagedNetwork`).
    pub(crate) creating_networks: std::collections::HashSet<String>,
}

/// Whether this host's cluster records may differ from its store, and how many times that was
/// noted: a sync that ran without the engine lock clears the mark only if nothing was noted
/// meanwhile (a change it did not see is done by the next one).
#[derive(Default)]
pub(crate) struct OwnDirty {
    set: bool,
    noted: u64,
}

impl OwnDirty {
    pub(crate) fn mark(&mut self) {
        self.set = true;
        self.noted += 1;
    }

    pub(crate) fn mark_if(&mut self, changed: bool) {
        if changed {
            self.mark();
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set
    }

    /// What a sync starting now saw, for [`OwnDirty::synced`].
    pub(crate) fn seen(&self) -> u64 {
        self.noted
    }

    /// A sync that started when [`OwnDirty::seen`] was `seen` succeeded.
    pub(crate) fn synced(&mut self, seen: u64) {
        if self.noted == seen {
            self.set = false;
        }
    }
}

/// The endpoints of other hosts, by network ID then endpoint ID. Like `index::Tracked`, every
/// change notes the (network, endpoint) it touched for the read model (`views`).
#[derive(Default)]
pub(crate) struct RemoteMap {
    all: BTreeMap<String, BTreeMap<String, ClusterEndpoint>>,
    changed: BTreeSet<(String, String)>,
}

impl std::ops::Deref for RemoteMap {
    type Target = BTreeMap<String, BTreeMap<String, ClusterEndpoint>>;
    fn deref(&self) -> &Self::Target {
        &self.all
    }
}

impl RemoteMap {
    /// Adds or replaces an endpoint (under its network), returning the one it replaced.
    pub fn insert(&mut self, e: ClusterEndpoint) -> Option<ClusterEndpoint> {
        self.changed.insert((e.network_id.clone(), e.id.clone()));
        self.all.entry(e.network_id.clone()).or_default().insert(e.id.clone(), e)
    }

    pub fn remove(&mut self, net_id: &str, ep_id: &str) -> Option<ClusterEndpoint> {
        let gone = self.all.get_mut(net_id)?.remove(ep_id)?;
        self.changed.insert((net_id.to_owned(), ep_id.to_owned()));
        Some(gone)
    }

    pub fn remove_network(&mut self, net_id: &str) {
        if let Some(m) = self.all.remove(net_id) {
            self.changed.extend(m.into_keys().map(|ep| (net_id.to_owned(), ep)));
        }
    }

    /// Replaces every endpoint with `all` (a snapshot of the cluster).
    pub fn replace(&mut self, all: BTreeMap<String, BTreeMap<String, ClusterEndpoint>>) {
        let keys = |m: &BTreeMap<String, BTreeMap<String, ClusterEndpoint>>| -> Vec<(String, String)> {
            m.iter().flat_map(|(n, eps)| eps.keys().map(move |e| (n.clone(), e.clone()))).collect()
        };
        self.changed.extend(keys(&self.all));
        self.changed.extend(keys(&all));
        self.all = all;
    }

    /// The (network, endpoint) pairs changed since the last call.
    pub fn take_changed(&mut self) -> BTreeSet<(String, String)> {
        std::mem::take(&mut self.changed)
    }
}

/// How long cluster operations fail at once after one found etcd unreachable.
const QUIET: Duration = Duration::from_secs(5);

/// The VXLAN port when the network has no `VxlanPort` policy.
pub const DEFAULT_VXLAN_PORT: u16 = hns_kernel::vxlan::VXLAN_PORT;

/// The overlay plan of an overlay network record: its VNI (the subnet's `VSID` policy) and
/// port (`VxlanPort`). The host's VTEP and MTU are filled in by [`Engine::fill_overlay_plan`].
pub fn plan_from_record(net: &HostComputeNetwork) -> std::result::Result<OverlayPlan, String> {
    let policies = validate::parse_network_policies(&net.policies, "Policies").map_err(|e| e.message)?;
    let mut vni = None;
    for (i, s) in net.subnets().enumerate() {
        vni = vni.or(validate::parse_subnet(s, &format!("subnet {i}")).map_err(|e| e.message)?.vsid);
    }
    Ok(OverlayPlan {
        vxlan: hns_kernel::names::vxlan_name(&net.id),
        // A request being validated has no VNI until the cluster decides one; every stored
        // overlay network has it.
        vni: vni.unwrap_or(0),
        port: policies.vxlan_port.unwrap_or(DEFAULT_VXLAN_PORT),
        local: None,
        mtu: 0,
        outbound_nat: net.outbound_nat,
    })
}

/// An API error from a cluster error. `conflict` is the code of a collision in this context.
pub(crate) fn cluster_err(e: ClusterError, conflict: ErrorCode) -> ApiError {
    let code = match &e {
        ClusterError::Unreachable { .. } | ClusterError::NotRegistered { .. } | ClusterError::Etcd { .. } => ErrorCode::Unavailable,
        ClusterError::Conflict { .. } => conflict,
        ClusterError::NotFound { .. } => ErrorCode::NetworkNotFound,
        ClusterError::InUse { .. } | ClusterError::NodeAlive { .. } => ErrorCode::EntityHasReferences,
        ClusterError::Exhausted { .. } => ErrorCode::AddressPoolExhausted,
        ClusterError::Invalid { .. } => ErrorCode::InvalidNetwork,
        ClusterError::Corrupt { .. } => ErrorCode::Internal,
    };
    ApiError::new(code, e.to_string())
}

impl Engine {
    /// Makes this host a cluster node (before the first reconcile, so stored overlay networks
    /// are rebuilt with the VTEP).
    pub fn enable_overlay(&mut self, local: LocalVtep) {
        self.overlay.link = Link::Connecting(format!("connecting to etcd at {}", local.store));
        self.overlay.local = Some(local);
        let ids: Vec<String> = self.networks.keys().cloned().collect();
        for id in ids {
            if let Some(net) = self.networks.get_mut(&id) {
                fill_plan(&self.overlay, net);
            }
        }
    }

    /// Gives a freshly built overlay network this host's VTEP and MTU.
    pub(crate) fn fill_overlay_plan(&self, net: &mut Net) {
        fill_plan(&self.overlay, net);
    }

    /// The cluster handle became usable (connected and registered).
    pub fn cluster_connected(&mut self, cluster: Cluster) {
        self.overlay.cluster = Some(cluster);
        self.overlay.link = Link::Online;
    }

    /// Connecting or registering failed; cluster operations report `reason` until it works.
    pub fn cluster_unreachable(&mut self, reason: String) {
        if self.overlay.cluster.is_none() {
            self.overlay.link = Link::Connecting(reason);
        }
    }

    /// The cluster handle for an operation, or the error saying why there is none: no cluster
    /// store configured (400, `what` says what needed it), or etcd unreachable (503, failing
    /// at once with the last error rather than waiting for another timeout).
    pub(crate) fn cluster_for(&self, what: &str) -> Result<(Cluster, LocalVtep)> {
        let Some(local) = &self.overlay.local else {
            return Err(ApiError::new(
                ErrorCode::RequestUnsupported,
                format!("{what} needs the cluster store: overlay networks span hosts, so start hnsd with --cluster-store etcd://HOST:PORT and --advertise-addr IP (see the Overlay section of the README)"),
            ));
        };
        let unavailable = |reason: &str| ApiError::new(ErrorCode::Unavailable, format!("cannot {what}: {reason}; overlay traffic keeps flowing, but overlay networks cannot change until etcd is back"));
        if let Some((until, reason)) = &self.overlay.quiet
            && Instant::now() < *until
        {
            return Err(unavailable(reason));
        }
        match (&self.overlay.cluster, &self.overlay.link) {
            (Some(c), Link::Online) => Ok((c.clone(), local.clone())),
            (_, Link::Offline(reason) | Link::Connecting(reason)) => Err(unavailable(reason)),
            _ => Err(unavailable(&format!("etcd is unreachable at {}", local.store))),
        }
    }

    /// Passes a cluster result through, noting an unreachable etcd (see `quiet`).
    pub(crate) fn checked<T>(&mut self, r: std::result::Result<T, ClusterError>) -> std::result::Result<T, ClusterError> {
        if let Err(e) = &r
            && e.is_unreachable()
        {
            self.overlay.quiet = Some((Instant::now() + QUIET, e.to_string()));
        }
        r
    }

    /// Problems of the cluster link and of networks this host could not build, for `info`.
    pub(crate) fn overlay_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.overlay.link {
            Link::Connecting(r) | Link::Offline(r) => out.push(format!("cluster store: {r}; overlay networks keep forwarding but cannot change")),
            Link::Disabled | Link::Online => {}
        }
        out.extend(self.overlay.problems.values().cloned());
        out
    }

    /// The overlay networks this host has, by ID.
    pub(crate) fn overlay_network_ids(&self) -> Vec<String> {
        self.networks.values().filter(|n| n.plan.overlay.is_some()).map(|n| n.rec.net.id.clone()).collect()
    }

    /// The reconciler removed endpoints `eps` of a vanished compartment: overlay endpoints
    /// among them are withdrawn from the cluster by the next sync.
    pub(crate) fn overlay_endpoints_collected(&mut self, eps: &[String]) {
        self.overlay.own_dirty.mark_if(!eps.is_empty() && !self.overlay_network_ids().is_empty());
    }
}

/// Meta key of this host's node lease, reused after a restart.
const META_LEASE: &str = "cluster_lease";

/// The lease a node registered under, persisted so a restarted hnsd takes it over.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredLease {
    node: String,
    lease: i64,
}

impl Engine {
    /// The lease the previous run registered `node` under, if any.
    pub fn stored_lease(&self, node: &str) -> Option<i64> {
        let stored: StoredLease = self.store.get(hns_store::Kind::Meta, META_LEASE).ok().flatten()?;
        (stored.node == node).then_some(stored.lease)
    }

    /// Persists the lease `node` is registered under.
    pub fn store_lease(&self, node: &str, lease: i64) {
        let rec = StoredLease { node: node.to_owned(), lease };
        if let Err(e) = self.persist(hns_store::Kind::Meta, META_LEASE, &rec, false) {
            tracing::warn!(error = %e, "could not persist the node lease; a restart will register under a new one");
        }
    }
}

fn fill_plan(state: &OverlayState, net: &mut Net) {
    if let (Some(o), Some(local)) = (net.plan.overlay.as_mut(), &state.local) {
        o.local = Some(local.vtep);
        o.mtu = local.mtu;
    }
}
