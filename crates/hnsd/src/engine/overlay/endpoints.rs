//! Endpoints of overlay networks, this host's and the others'.
//!
//! This host's: the address comes from the cluster IPAM (one etcd transaction per address,
//! so hosts allocating at once never share one) after the request passed local validation,
//! and is then used as a static address by the ordinary endpoint code; once the endpoint
//! exists here it is published (IP, MAC, VTEP) under this node's lease. Deleting withdraws it
//! first, so peers stop sending to it, and releases the address after. A step that fails
//! because etcd is away leaves `own_dirty` set and is done by the next sync.
//!
//! Other hosts': kept in memory from the watch, programmed as VXLAN FDB and neighbour
//! entries, answered by this host's DNS responder, and listed by `GET /endpoints` with the
//! HNS `RemoteEndpoint` flag and a `ProviderAddress` policy naming their host's VTEP.

use std::net::IpAddr;
use std::sync::Arc;

use hns_api::{ApiError, ENDPOINT_FLAG_REMOTE, ErrorCode, HostComputeEndpoint, IpConfig, Policy, SCHEMA_VERSION, state};
use hns_cluster::{Cluster, ClusterEndpoint, ClusterError};
use hns_dns::Record;
use hns_drivers::overlay::{self as driver, RemoteEntry};
use hns_ipam::Mac;
use serde_json::json;

use super::super::records::EndpointRecord;
use super::super::{Engine, Result, norm_guid};
use super::cluster_err;

type ClusterResult<T> = std::result::Result<T, ClusterError>;

/// An address this host holds in the cluster IPAM for one of its endpoints.
pub(crate) struct Reserved {
    net_id: String,
    ep_id: String,
}

/// Where an endpoint request goes after [`Engine::overlay_plan_endpoint`].
pub(crate) enum Planned {
    /// Not an overlay network: the ordinary path, unchanged.
    Local(HostComputeEndpoint),
    /// An overlay network: its addresses are to be allocated in etcd first.
    Overlay(Allocation),
}

/// An allocation to ask etcd for, without the engine lock.
pub(crate) struct Allocation {
    req: HostComputeEndpoint,
    net_id: String,
    requested: Vec<IpAddr>,
    cluster: Cluster,
    node: String,
    /// `OverlayState::cluster_io`, held shared through the create's cluster steps.
    io: Arc<tokio::sync::RwLock<()>>,
}

impl Allocation {
    pub(crate) async fn allocate(&self) -> ClusterResult<Vec<IpAddr>> {
        self.cluster.allocate_addresses(&self.net_id, &self.req.id, &self.node, &self.requested).await
    }
}

/// What the kernel needs of a remote endpoint: one entry per address (IPv4 and IPv6 of a
/// dual-stack endpoint), all with its MAC and VTEP.
pub(super) fn entries(e: &ClusterEndpoint) -> Vec<RemoteEntry> {
    e.ips().map(|ip| RemoteEntry { ip, mac: e.mac, vtep: e.vtep }).collect()
}

impl Engine {
    fn overlay_vxlan(&self, net_id: &str) -> Option<String> {
        self.networks.get(net_id).and_then(|n| n.plan.overlay.as_ref()).map(|o| o.vxlan.clone())
    }

    /// Before an endpoint is created: on an overlay network, validate the request as the
    /// ordinary path will (and undo what that took), then reserve its address in the cluster
    /// and put it in the request as a static address. Other networks pass through untouched.
    pub(crate) async fn overlay_prepare_endpoint(&mut self, req: HostComputeEndpoint) -> Result<(HostComputeEndpoint, Option<Reserved>)> {
        match self.overlay_plan_endpoint(req)? {
            Planned::Local(req) => Ok((req, None)),
            Planned::Overlay(a) => {
                // Under the caller's lock the sync of this host's records cannot be waited for.
                let io = a.io.clone();
                let Ok(_steps) = io.try_read() else {
                    self.overlay.creating.remove(&a.req.id);
                    return Err(ApiError::new(ErrorCode::Unavailable, "this host's overlay endpoints are being compared with the cluster; try again in a moment"));
                };
                let allocated = a.allocate().await;
                let (req, r) = self.overlay_allocated(a, allocated)?;
                Ok((req, Some(r)))
            }
        }
    }

    /// The checks of [`Engine::overlay_prepare_endpoint`] before etcd is asked; on an overlay
    /// network the endpoint's ID is held (see `creating`) until [`Engine::overlay_allocated`].
    pub(crate) fn overlay_plan_endpoint(&mut self, mut req: HostComputeEndpoint) -> Result<Planned> {
        let Some(net_id) = self.network_id(&req.host_compute_network) else { return Ok(Planned::Local(req)) };
        if self.overlay_vxlan(&net_id).is_none() {
            return Ok(Planned::Local(req));
        }
        let (rec, _, maps) = self.validate_endpoint(req.clone())?;
        self.networks.get_mut(&net_id).expect("validated").release_endpoint(&rec);
        self.release_ports(&rec.ep.id, &maps);
        req.id = rec.ep.id.clone();
        if self.overlay.creating.contains(&req.id) {
            return Err(ApiError::field(ErrorCode::EndpointAlreadyExists, "ID", format!("an endpoint with ID {} is being created by another request", req.id)));
        }
        let net_name = self.networks[&net_id].rec.net.name.clone();
        // Names and MACs are cluster-wide on an overlay network: one L2 segment, one DNS view.
        let remote = self.overlay.remote.get(&net_id);
        if let Some(other) = remote.and_then(|m| m.values().find(|e| !req.name.is_empty() && e.name == req.name)) {
            return Err(ApiError::field(
                ErrorCode::EndpointAlreadyExists,
                "Name",
                format!("overlay network {net_name:?} already has an endpoint named {:?} on host {}; choose another name", req.name, other.node),
            ));
        }
        if let Ok(mac) = Mac::parse(&req.mac_address)
            && let Some(other) = remote.and_then(|m| m.values().find(|e| e.mac == mac.0))
        {
            return Err(ApiError::field(ErrorCode::MacInUse, "MacAddress", format!("MAC {mac} is used by endpoint {} on host {} of overlay network {net_name:?}", other.name, other.node)));
        }
        // Validated above: every requested address parses and belongs to a subnet.
        let requested: Vec<IpAddr> = req.ip_configurations.iter().filter_map(|c| c.ip_address.parse().ok()).collect();
        let (cluster, local) = self.cluster_for(&format!("create an endpoint on overlay network {net_name:?}"))?;
        self.overlay.creating.insert(req.id.clone());
        Ok(Planned::Overlay(Allocation { req, net_id, requested, cluster, node: local.node, io: self.overlay.cluster_io.clone() }))
    }

    /// What etcd's allocation gave, written into the request as static addresses; the ID is
    /// no longer held.
    pub(crate) fn overlay_allocated(&mut self, a: Allocation, allocated: ClusterResult<Vec<IpAddr>>) -> Result<(HostComputeEndpoint, Reserved)> {
        let Allocation { mut req, net_id, .. } = a;
        self.overlay.creating.remove(&req.id);
        let ips = self.checked(allocated).map_err(|e| cluster_err(e, ErrorCode::AddrInUse))?;
        let plen = |ip: &IpAddr| self.networks.get(&net_id).and_then(|n| n.plan.subnets.iter().find(|(s, _)| s.contains(ip))).map(|(s, _)| s.prefix_len()).unwrap_or(0);
        req.ip_configurations = ips.iter().map(|ip| IpConfig { ip_address: ip.to_string(), prefix_length: plen(ip), ip_subnet_id: String::new() }).collect();
        if req.mac_address.is_empty() && self.networks.contains_key(&net_id) {
            req.mac_address = self.overlay_mac(&net_id, &ips).to_windows_string();
        }
        let ep_id = req.id.clone();
        Ok((req, Reserved { net_id, ep_id }))
    }

    /// A MAC unique on the whole segment: derived from an address whose low 24 bits tell
    /// endpoints apart (the cluster IPAM hands each address out once): the IPv4 address in a
    /// subnet up to /8, else the IPv6 address in a subnet of /104 or longer; random otherwise
    /// (checked against every MAC this host knows of on the segment).
    fn overlay_mac(&self, net_id: &str, ips: &[IpAddr]) -> Mac {
        let net = &self.networks[net_id];
        let fits = |ip: &IpAddr| {
            let min = if ip.is_ipv4() { 8 } else { 104 };
            net.plan.subnets.iter().any(|(s, _)| s.contains(ip) && s.prefix_len() >= min)
        };
        // IPv4 first: on a dual-stack network the same endpoint's MAC as on an IPv4-only one.
        let source = ips.iter().filter(|ip| ip.is_ipv4()).chain(ips.iter().filter(|ip| ip.is_ipv6())).find(|ip| fits(ip));
        let taken = |m: &Mac| net.macs.contains(&m.0) || self.overlay.remote.get(net_id).is_some_and(|r| r.values().any(|e| e.mac == m.0));
        let mut mac = source.map_or_else(Mac::random, |ip| Mac::from_ip(*ip));
        while taken(&mac) {
            mac = Mac::random();
        }
        mac
    }

    /// After the local create: publish the endpoint, or give the address back if the create
    /// failed. A failed publish undoes the create: an endpoint the other hosts cannot reach
    /// is not what was asked for.
    pub(crate) async fn overlay_finish_endpoint(&mut self, reserved: Option<Reserved>, created: Result<HostComputeEndpoint>) -> Result<HostComputeEndpoint> {
        let Some(r) = reserved else { return created };
        let publication = match created {
            Ok(ep) => self.overlay_publication(&ep).map(|p| (ep, p)),
            Err(e) => Err(e),
        };
        let (ep, (cluster, record)) = match publication {
            Ok(v) => v,
            Err(e) => {
                self.overlay_unpublished(&r).await;
                return Err(e);
            }
        };
        let put = cluster.put_endpoint(record).await;
        self.overlay_published(r, ep, put).await
    }

    /// What to publish of an endpoint just created here, and the cluster to publish it to.
    pub(crate) fn overlay_publication(&self, ep: &HostComputeEndpoint) -> Result<(Cluster, ClusterEndpoint)> {
        let record = self.endpoints.get(&ep.id).and_then(|r| self.cluster_record(r));
        match (record, self.cluster_for("publish the endpoint")) {
            (Some(record), Ok((cluster, _))) => Ok((cluster, record)),
            (None, _) => Err(ApiError::internal(format!("endpoint {} has no usable address or MAC", ep.id))),
            (_, Err(e)) => Err(e),
        }
    }

    /// After the publication: a failure removes the endpoint here and gives its address back.
    pub(crate) async fn overlay_published(&mut self, r: Reserved, ep: HostComputeEndpoint, put: ClusterResult<()>) -> Result<HostComputeEndpoint> {
        if let Err(e) = self.checked(put) {
            self.overlay_unpublished(&r).await;
            return Err(cluster_err(e, ErrorCode::AddrInUse));
        }
        Ok(ep)
    }

    /// An endpoint that could not be published: gone here (if it was made), address released.
    async fn overlay_unpublished(&mut self, r: &Reserved) {
        if self.endpoints.contains_key(&r.ep_id) {
            let _ = self.delete_local_endpoint(&r.ep_id).await;
        }
        self.release_cluster_address(r).await;
    }

    async fn release_cluster_address(&mut self, r: &Reserved) {
        let released = match self.cluster_for("release the address") {
            Ok((cluster, _)) => {
                let released = cluster.release_address(&r.net_id, &r.ep_id).await;
                self.checked(released).map(|_| ()).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.message),
        };
        if let Err(e) = released {
            tracing::warn!(endpoint = %r.ep_id, "cluster address not released yet (done when etcd answers): {e}");
            self.overlay.own_dirty.mark();
        }
    }

    /// What the cluster should hold of one of this host's endpoints: its addresses in the
    /// order of the network's subnets (the order of its cluster reservations).
    pub(crate) fn cluster_record(&self, rec: &EndpointRecord) -> Option<ClusterEndpoint> {
        let local = self.overlay.local.as_ref()?;
        let mut ips: Vec<IpAddr> = rec.ips().collect();
        let subnets = &self.networks.get(&rec.network_id)?.plan.subnets;
        ips.sort_by_key(|ip| subnets.iter().position(|(s, _)| s.contains(ip)));
        let (&ip, more) = ips.split_first()?;
        let more_ips = more.to_vec();
        // A load balancer's source endpoint for remote backends is this host itself to the
        // others: their frames for it go to the VXLAN device's own address, up to the host.
        let mac = if self.lbs.is_source_endpoint(&rec.ep.id) { hns_kernel::vxlan::device_mac(local.vtep) } else { rec.mac()?.0 };
        // The name others resolve: the endpoint's, else its compartment's (as `run --name`).
        let name = if rec.ep.name.is_empty() {
            self.namespaces.get(&rec.ep.host_compute_namespace).map(|n| n.rec.ns.name.clone()).unwrap_or_default()
        } else {
            rec.ep.name.clone()
        };
        Some(ClusterEndpoint { id: rec.ep.id.clone(), network_id: rec.network_id.clone(), node: local.node.clone(), name, ip, more_ips, mac, vtep: local.vtep })
    }

    /// A remote endpoint appeared or changed: program it and make its name resolve here.
    pub(crate) async fn add_remote_endpoint(&mut self, e: ClusterEndpoint) {
        let net_id = e.network_id.clone();
        let old = self.overlay.remote.insert(e.clone());
        // A network this host could not build keeps its endpoints in view only.
        let Some(vxlan) = self.overlay_vxlan(&net_id) else { return };
        let new = entries(&e);
        for stale in old.iter().flat_map(entries).filter(|o| !new.contains(o)) {
            if let Err(err) = driver::remove_remote(&self.host, &vxlan, &stale).await {
                tracing::warn!(endpoint = %e.id, error = %err, "could not remove the old entries of a moved endpoint");
            }
        }
        for entry in &new {
            if let Err(err) = driver::add_remote(&self.host, &vxlan, entry).await {
                tracing::warn!(endpoint = %e.id, error = %err, "could not program a remote endpoint; the reconciler retries");
            }
        }
        self.dns_refresh(&net_id);
        if old.as_ref().is_none_or(|o| o.ips().ne(e.ips())) {
            self.lbs_remote_changed(&e.id);
        }
    }

    /// A remote endpoint went away (deleted, or its host's lease expired).
    pub(crate) async fn remove_remote_endpoint(&mut self, net_id: &str, ep_id: &str) {
        let Some(gone) = self.overlay.remote.remove(net_id, ep_id) else {
            if self.endpoints.contains_key(ep_id) {
                // One of ours vanished from etcd (its lease was lost): publish it again.
                self.overlay.own_dirty.mark();
            }
            return;
        };
        if let Some(vxlan) = self.overlay_vxlan(net_id) {
            for entry in entries(&gone) {
                if let Err(err) = driver::remove_remote(&self.host, &vxlan, &entry).await {
                    tracing::warn!(endpoint = ep_id, error = %err, "could not remove a remote endpoint; the reconciler retries");
                }
            }
        }
        self.dns_refresh(net_id);
        self.lbs_remote_changed(ep_id);
    }

    /// Forgets the remote endpoints of a network going away (their kernel entries go with
    /// its VXLAN device).
    pub(crate) fn forget_remote_network(&mut self, net_id: &str) {
        self.overlay.remote.remove_network(net_id);
    }

    /// The remote endpoints as HNS endpoints.
    pub(crate) fn remote_endpoint_views(&self) -> impl Iterator<Item = HostComputeEndpoint> + '_ {
        self.overlay.remote.values().flat_map(|m| m.values()).map(|e| self.remote_view(e))
    }

    /// One remote endpoint by ID or name.
    pub(crate) fn remote_endpoint_view(&self, key: &str) -> Option<HostComputeEndpoint> {
        self.find_remote(key).map(|e| self.remote_view(e))
    }

    /// The error for deleting another host's endpoint here.
    pub(crate) fn refuse_remote_endpoint(&self, key: &str) -> Option<ApiError> {
        let e = self.find_remote(key)?;
        Some(ApiError::new(
            ErrorCode::RequestUnsupported,
            format!("endpoint {} ({}) lives on host {} (VTEP {}); remove it with hnsctl on that host", e.name, e.id, e.node, e.vtep),
        ))
    }

    pub(crate) fn find_remote(&self, key: &str) -> Option<&ClusterEndpoint> {
        let id = norm_guid(key);
        let all = || self.overlay.remote.values().flat_map(|m| m.values());
        match id {
            Some(id) => all().find(|e| norm_guid(&e.id).as_deref() == Some(id.as_str())),
            None => all().find(|e| !e.name.is_empty() && e.name == key),
        }
    }

    pub(crate) fn remote_view(&self, e: &ClusterEndpoint) -> HostComputeEndpoint {
        let plen = |ip: &IpAddr| self.networks.get(&e.network_id).and_then(|n| n.plan.subnets.iter().find(|(s, _)| s.contains(ip))).map(|(s, _)| s.prefix_len());
        HostComputeEndpoint {
            id: e.id.clone(),
            name: e.name.clone(),
            host_compute_network: e.network_id.clone(),
            ip_configurations: e.ips().map(|ip| IpConfig { ip_address: ip.to_string(), prefix_length: plen(&ip).unwrap_or(0), ip_subnet_id: String::new() }).collect(),
            mac_address: Mac(e.mac).to_windows_string(),
            flags: ENDPOINT_FLAG_REMOTE,
            policies: vec![Policy { kind: "ProviderAddress".into(), settings: json!({ "ProviderAddress": e.vtep.to_string() }) }],
            additional_params: json!({ "Node": e.node }),
            schema_version: SCHEMA_VERSION,
            state: state::CREATED,
            version: 1,
            ..Default::default()
        }
    }

    /// The names of a network's remote endpoints, for its DNS responder (global service
    /// discovery: an overlay name resolves on every host).
    pub(crate) fn overlay_dns_records(&self, net_id: &str) -> Vec<Record> {
        let Some(m) = self.overlay.remote.get(net_id) else { return Vec::new() };
        m.values().filter(|e| !e.name.is_empty()).map(|e| Record { name: e.name.clone(), addrs: e.ips().collect() }).collect()
    }
}

/// An endpoint to withdraw from the cluster before it is deleted here.
pub(crate) struct Withdrawal {
    r: Reserved,
    /// `None` when etcd is known to be away: the cluster sync withdraws it later.
    cluster: Option<Cluster>,
    /// `OverlayState::cluster_io`, held shared through the delete's cluster steps.
    io: Arc<tokio::sync::RwLock<()>>,
}

impl Engine {
    /// For a delete: the withdrawal an overlay endpoint needs, `None` for other endpoints.
    pub(crate) fn overlay_withdrawal(&self, ep_id: &str) -> Option<Withdrawal> {
        let rec = self.endpoints.get(ep_id)?;
        self.overlay_vxlan(&rec.network_id)?;
        let r = Reserved { net_id: rec.network_id.clone(), ep_id: ep_id.to_owned() };
        Some(Withdrawal { r, cluster: self.cluster_for("withdraw the endpoint").ok().map(|(c, _)| c), io: self.overlay.cluster_io.clone() })
    }

    /// Notes how a cluster step done without the lock went: a failure is retried by the sync.
    fn overlay_noted(&mut self, what: &str, ep_id: &str, r: Option<ClusterResult<()>>) {
        let failed = match r {
            Some(r) => self.checked(r).err().map(|e| e.to_string()),
            None => Some("etcd is unreachable".to_owned()),
        };
        if let Some(e) = failed {
            tracing::warn!(endpoint = ep_id, "{what} not done yet (done when etcd answers): {e}");
            self.overlay.own_dirty.mark();
        }
    }
}

/// Creates an endpoint on an overlay network with etcd's two steps (allocating the address,
/// publishing the endpoint) done while the engine lock is free, so a slow or partitioned etcd
/// delays only this request. Run it in a task of its own: it must not be cut short between
/// its steps.
pub(crate) async fn create_staged(engine: &crate::engine::EngineLock, a: Allocation) -> Result<HostComputeEndpoint> {
    let io = a.io.clone();
    let _steps = io.read().await;
    let allocated = a.allocate().await;
    let mut g = engine.lock().await;
    let (req, r) = g.overlay_allocated(a, allocated)?;
    let created = g.create_local_endpoint(req).await;
    let (ep, (cluster, record)) = match created.and_then(|ep| g.overlay_publication(&ep).map(|p| (ep, p))) {
        Ok(v) => v,
        Err(e) => {
            g.overlay_unpublished(&r).await;
            return Err(e);
        }
    };
    drop(g);
    let put = cluster.put_endpoint(record).await;
    let mut g = engine.lock().await;
    if !g.endpoints.contains_key(&ep.id) {
        // Deleted meanwhile (its withdrawal came before this publication): the sync fixes it.
        g.overlay.own_dirty.mark();
    }
    g.overlay_published(r, ep, put).await
}

/// Deletes an overlay endpoint (see [`create_staged`]): withdrawn from the cluster, deleted
/// here, its address released; the cluster steps run while the engine lock is free.
pub(crate) async fn delete_staged(engine: &crate::engine::EngineLock, w: Withdrawal) -> Result<()> {
    let id = w.r.ep_id.clone();
    let _steps = w.io.read().await;
    let withdrawn = match &w.cluster {
        Some(c) => Some(c.delete_endpoint(&w.r.net_id, &id).await),
        None => None,
    };
    let mut g = engine.lock().await;
    g.overlay_noted("withdrawing the endpoint from the cluster", &id, withdrawn);
    let deleted = if g.endpoints.contains_key(&id) { g.delete_local_endpoint(&id).await } else { Ok(()) };
    if g.endpoints.contains_key(&id) {
        return deleted;
    }
    drop(g);
    let released = match &w.cluster {
        Some(c) => Some(c.release_address(&w.r.net_id, &id).await.map(|_| ())),
        None => None,
    };
    engine.lock().await.overlay_noted("releasing the cluster address", &id, released);
    deleted
}
