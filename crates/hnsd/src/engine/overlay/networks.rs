//! Overlay networks are cluster objects: created and deleted in etcd first (which decides the
//! VNI, and refuses duplicate names, overlapping subnets, or deleting a network other hosts
//! still use), then here. Every other host builds its copy when its watch reports the network
//! and drops it when the watch reports it gone.
//!
//! Every host's copy has the same ID, subnets (one, or one per family, in the same order),
//! gateways (addresses, and the bridge MAC derived from the first), VNI and port; the
//! stored record carries the VNI as the subnet's `VSID` policy and the port as the
//! `VxlanPort` policy, so a restart rebuilds the network without asking etcd.

use hns_api::{ApiError, ErrorCode, HostComputeNetwork, Ipam, IpamType, NetworkType, Policy, Route, Subnet};
use hns_cluster::{OverlayNetwork, OverlayNetworkSpec, OverlaySubnet};
use serde_json::json;

use super::super::records::NetworkRecord;
use super::super::validate::{self, HostFacts};
use hns_kernel::netlink::HostPrefix;

use super::super::networks::KernelNetwork;
use super::super::{Engine, Net, Result};
use super::{DEFAULT_VXLAN_PORT, cluster_err};

/// The record of an overlay network with the cluster's decisions (VNI, port) written in.
fn with_cluster_facts(mut rec: NetworkRecord, on: &OverlayNetwork) -> NetworkRecord {
    for ipam in &mut rec.net.ipams {
        for s in &mut ipam.subnets {
            s.policies.retain(|p| !p.kind.eq_ignore_ascii_case("VSID"));
            s.policies.push(Policy { kind: "VSID".into(), settings: json!({ "IsolationId": on.vni }) });
        }
    }
    rec.net.outbound_nat = on.outbound_nat;
    rec.net.policies.retain(|p| !p.kind.eq_ignore_ascii_case("VxlanPort"));
    rec.net.policies.push(Policy { kind: "VxlanPort".into(), settings: json!({ "Port": on.vxlan_port }) });
    rec
}

/// The HNS form of a network the watch reported: its subnets in the cluster's order (so every
/// host's copy, its bridge MAC and its endpoints' address order, are the same).
fn request_for(on: &OverlayNetwork) -> HostComputeNetwork {
    let subnets = on
        .subnets()
        .iter()
        .map(|s| {
            let default = if s.subnet.addr().is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            Subnet {
                ip_address_prefix: s.subnet.to_string(),
                routes: vec![Route { next_hop: s.gateway.to_string(), destination_prefix: default.into(), metric: 0 }],
                policies: vec![Policy { kind: "VSID".into(), settings: json!({ "IsolationId": on.vni }) }],
                ..Default::default()
            }
        })
        .collect();
    HostComputeNetwork {
        id: on.id.clone(),
        name: on.name.clone(),
        kind: Some(NetworkType::Overlay),
        ipams: vec![Ipam { kind: IpamType::Static, subnets }],
        policies: vec![Policy { kind: "VxlanPort".into(), settings: json!({ "Port": on.vxlan_port }) }],
        outbound_nat: on.outbound_nat,
        ..Default::default()
    }
}

/// What `info` and the log say about a network's subnets.
fn subnets_text(on: &OverlayNetwork) -> String {
    on.subnets().iter().map(|s| s.subnet.to_string()).collect::<Vec<_>>().join(" and ")
}

impl Engine {
    /// Validates an overlay network and reserves its ID (see [`StagedNetwork`]).
    pub(crate) async fn overlay_network_begin(&mut self, mut req: HostComputeNetwork, host: &[HostPrefix]) -> Result<StagedNetwork> {
        let what = format!("create overlay network {:?}", req.name);
        // Without a cluster store there is nothing to validate for.
        if let Err(e) = self.cluster_for(&what)
            && self.overlay.local.is_none()
        {
            return Err(ApiError { code: ErrorCode::InvalidNetworkType, field: Some("Type".into()), ..e });
        }
        let subnets: usize = req.ipams.iter().map(|i| i.subnets.len()).sum();
        if subnets == 0 || subnets > hns_cluster::alloc::MAX_SUBNETS {
            return Err(ApiError::field(
                ErrorCode::InvalidSubnet,
                "Ipams",
                format!("an overlay network has one subnet, or one IPv4 and one IPv6 subnet, the same on every host ({subnets} given): give --subnet once, or once per family"),
            ));
        }
        let port = validate::parse_network_policies(&req.policies, "Policies")?.vxlan_port.unwrap_or(DEFAULT_VXLAN_PORT);
        let net = self.validate_network(req.clone(), host, &HostFacts::default())?;
        let vni = match net.rec.net.subnets().next() {
            Some(s) => validate::parse_subnet(s, "Ipams[0].Subnets[0]")?.vsid,
            None => None,
        };
        let subnets: Vec<OverlaySubnet> = net.plan.subnets.iter().map(|(subnet, gateway)| OverlaySubnet { subnet: *subnet, gateway: *gateway }).collect();
        hns_cluster::alloc::check_subnets(&subnets).map_err(|e| ApiError::field(ErrorCode::InvalidSubnet, "Ipams", e.to_string()))?;
        let (cluster, local) = self.cluster_for(&what)?;
        let spec = OverlayNetworkSpec {
            id: net.rec.net.id.clone(),
            name: net.rec.net.name.clone(),
            subnets,
            vni,
            vxlan_port: port,
            outbound_nat: net.rec.net.outbound_nat,
        };
        // The ID chosen now is the cluster's: validated again with it at the end.
        req.id = spec.id.clone();
        self.overlay.creating_networks.insert(spec.id.clone());
        Ok(StagedNetwork { req, spec, cluster, local })
    }

    /// After the cluster step: the network the cluster created validated again (a local
    /// network of the same name or subnet may have been made meanwhile) and committed, in
    /// flight until its kernel step, run without the lock, is done ([`create_network_staged`]).
    /// The reservation is undone in any case; the error says why it cannot be built here.
    pub(crate) async fn overlay_network_commit(&mut self, staged: &StagedNetwork, created: std::result::Result<OverlayNetwork, hns_cluster::ClusterError>, host: &[HostPrefix]) -> (Result<KernelNetwork>, Option<OverlayNetwork>) {
        self.overlay.creating_networks.remove(&staged.req.id);
        let on = match self.checked(created) {
            Ok(on) => on,
            Err(e) => {
                let code = if e.to_string().contains("overlaps") { ErrorCode::SubnetInUse } else { ErrorCode::NetworkAlreadyExists };
                return (Err(cluster_err(e, code)), None);
            }
        };
        (self.commit_cluster_copy(staged.req.clone(), &on, host).await, Some(on))
    }

    /// Before an overlay network's cluster delete (the caller checked this host has no
    /// endpoints on it): the network is in flight meanwhile, so endpoint creates on it wait.
    pub(crate) fn overlay_network_withdrawal(&mut self, id: &str) -> Result<NetworkWithdrawal> {
        let name = self.networks.get(id).map(|n| n.rec.net.name.clone()).unwrap_or_default();
        let (cluster, local) = self.cluster_for(&format!("remove overlay network {name:?}"))?;
        self.in_flight.insert(id.to_owned());
        Ok(NetworkWithdrawal { id: id.to_owned(), cluster, node: local.node })
    }

    /// After the cluster delete: refused while other hosts have endpoints on it (naming them);
    /// already gone from the cluster (deleted elsewhere meanwhile) is as good as deleted.
    pub(crate) fn overlay_network_withdrawn(&mut self, w: NetworkWithdrawal, deleted: std::result::Result<(), hns_cluster::ClusterError>) -> Result<()> {
        self.in_flight.remove(&w.id);
        self.idle.notify_waiters();
        match self.checked(deleted) {
            Ok(()) | Err(hns_cluster::ClusterError::NotFound { .. }) => {
                self.forget_remote_network(&w.id);
                Ok(())
            }
            Err(e) => Err(cluster_err(e, ErrorCode::EntityHasReferences)),
        }
    }

    /// A cluster network validated and committed here, in flight until its kernel step is
    /// done; `None` when there is nothing to build: this host's own create is under way (left
    /// to it), or it has the network (a copy that differs from the cluster's is reported by
    /// `info`).
    async fn cluster_network_commit(&mut self, on: &OverlayNetwork, host: &[HostPrefix]) -> Option<Result<KernelNetwork>> {
        if self.overlay.creating_networks.contains(&on.id) {
            return None;
        }
        if let Some(n) = self.networks.get(&on.id) {
            match &n.plan.overlay {
                Some(o) if o.vni == on.vni && o.port == on.vxlan_port && o.outbound_nat == on.outbound_nat => {
                    self.overlay.problems.remove(&on.id);
                }
                _ => {
                    let problem = format!("overlay network {} (id {}): this host's copy ({}) differs from the cluster's", on.name, on.id, n.rec.net.name);
                    self.overlay.problems.insert(on.id.clone(), problem);
                }
            }
            return None;
        }
        Some(self.commit_cluster_copy(request_for(on), on, host).await)
    }

    /// This host's copy of cluster network `on` (asked for as `req`), validated with the
    /// cluster's facts and committed, in flight until its kernel step is done.
    async fn commit_cluster_copy(&mut self, req: HostComputeNetwork, on: &OverlayNetwork, host: &[HostPrefix]) -> Result<KernelNetwork> {
        let net = self.validate_network(req, host, &HostFacts::default())?;
        let net = self.overlay_net(with_cluster_facts(net.rec, on))?;
        self.network_commit(net, None).await
    }

    /// How building a cluster network here went. One that cannot be built (its name or
    /// subnet is taken by a local network) is reported by `info`; the rest of the cluster is
    /// unaffected.
    fn cluster_network_built(&mut self, on: &OverlayNetwork, built: Result<()>) {
        match built {
            Ok(()) => {
                self.overlay.problems.remove(&on.id);
                tracing::info!(network = %on.name, vni = on.vni, subnets = %subnets_text(on), "built overlay network from the cluster");
            }
            Err(e) => {
                let problem = format!("overlay network {} (subnets {}, VNI {}) cannot be built on this host: {}", on.name, subnets_text(on), on.vni, e.message);
                tracing::error!("{problem}");
                self.overlay.problems.insert(on.id.clone(), problem);
            }
        }
    }

    /// Removes this host's copy of a network deleted from the cluster, with any endpoint of
    /// this host still on it (the cluster had already released their addresses).
    pub(crate) async fn drop_cluster_network(&mut self, id: &str) {
        self.overlay.problems.remove(id);
        self.forget_remote_network(id);
        let Some(net) = self.networks.get(id) else { return };
        if net.plan.overlay.is_none() {
            return;
        }
        let name = net.rec.net.name.clone();
        let mine: Vec<String> = self.endpoints.values().filter(|e| e.network_id == id).map(|e| e.ep.id.clone()).collect();
        for ep in mine {
            tracing::warn!(network = %name, endpoint = %ep, "the overlay network was removed from the cluster; removing its endpoint here too");
            if let Err(e) = self.delete_local_endpoint(&ep).await {
                tracing::warn!(endpoint = %ep, error = %e, "could not remove the endpoint");
            }
        }
        match self.remove_network(id).await {
            Ok(()) => tracing::info!(network = %name, "removed overlay network deleted from the cluster"),
            Err(e) => tracing::warn!(network = %name, error = %e, "could not remove the overlay network; the reconciler retries"),
        }
    }

    /// Live state of an overlay network record, with this host's VTEP.
    fn overlay_net(&self, rec: NetworkRecord) -> Result<Net> {
        let mut net = Net::from_record(rec).map_err(ApiError::internal)?;
        self.fill_overlay_plan(&mut net);
        Ok(net)
    }
}

/// An overlay network validated under the engine lock, whose cluster step (etcd decides the
/// VNI and refuses duplicates: up to its timeout when etcd is silently partitioned) runs
/// without the lock; [`Engine::overlay_network_commit`] commits it. Until then the watch leaves its
/// ID alone (`creating_networks`).
pub struct StagedNetwork {
    req: HostComputeNetwork,
    spec: OverlayNetworkSpec,
    cluster: hns_cluster::Cluster,
    local: super::LocalVtep,
}

/// An overlay network to take out of the cluster, taken under the engine lock by
/// [`Engine::overlay_network_withdrawal`]; the delete itself (up to etcd's timeout when it is
/// silently partitioned) runs without it.
pub struct NetworkWithdrawal {
    id: String,
    cluster: hns_cluster::Cluster,
    node: String,
}

impl NetworkWithdrawal {
    async fn run(&self) -> std::result::Result<(), hns_cluster::ClusterError> {
        self.cluster.delete_network(&self.id, &self.node).await
    }
}

/// The cluster half of `DELETE /networks/{id}` of an overlay network, run without the engine
/// lock; the lock is held again when it returns, for the local delete.
pub(crate) async fn withdraw_network_staged(engine: &crate::engine::EngineLock, w: NetworkWithdrawal) -> Result<crate::engine::EngineGuard<'_>> {
    let deleted = w.run().await;
    // Gone from the cluster, still here: the restart's snapshot no longer has it, so this host
    // drops it then.
    if deleted.is_ok() {
        crate::engine::failpoint("overlay-network-withdrawn");
    }
    let mut g = engine.lock().await;
    g.overlay_network_withdrawn(w, deleted)?;
    Ok(g)
}

/// A cluster network the watch reported (another host created it, or a snapshot after a
/// (re)connection holds it), unless this host has it: committed under the engine lock, built
/// here without it (the VXLAN device, the bridge, the nft table), in flight meanwhile. The
/// watch applies the rest of the event, and its next one, after this, so the network's
/// endpoints come after it.
pub(crate) async fn build_cluster_network(engine: &crate::engine::EngineLock, on: &OverlayNetwork) {
    let host = host_prefixes_unlocked(engine, &request_for(on)).await;
    let Some(committed) = engine.lock().await.cluster_network_commit(on, &host).await else { return };
    let built = match committed {
        Ok(k) => crate::engine::build_committed(engine, k).await.map(|_| ()),
        Err(e) => Err(e),
    };
    engine.lock().await.cluster_network_built(on, built);
}

/// The host's addresses and routes, which an overlay network's validation checks its subnet
/// against, read without the engine's lock (a dump of every address and route: ~0.4 s at 5 000
/// endpoints), once the networks `req` waits for (a delete of one with its name or subnet)
/// are done.
async fn host_prefixes_unlocked(engine: &crate::engine::EngineLock, req: &HostComputeNetwork) -> Vec<HostPrefix> {
    let reader = crate::engine::lock_when_idle(engine, |e| e.create_waits_for(req)).await.host_reader(req);
    reader.read().await.prefixes
}

/// `POST /networks` of an overlay network: validated under the engine lock, created in the
/// cluster without it (a slow or partitioned etcd delays only this request), committed under
/// it, then built here without it (the VXLAN device, the bridge, the nft table), as a local
/// network is. A network the cluster created that cannot be built here is taken out of the
/// cluster again, or it would exist everywhere but on the host that asked for it. Run it in a
/// task of its own: it must not be cut short between its steps.
pub(crate) async fn create_network_staged(engine: &crate::engine::EngineLock, req: HostComputeNetwork) -> Result<HostComputeNetwork> {
    let host = host_prefixes_unlocked(engine, &req).await;
    let staged = engine.lock().await.overlay_network_begin(req, &host).await?;
    let created = staged.cluster.create_network(staged.spec.clone()).await;
    // Read again: the cluster's step may have taken long.
    let host = host_prefixes_unlocked(engine, &staged.req).await;
    let (committed, on) = engine.lock().await.overlay_network_commit(&staged, created, &host).await;
    let built = match committed {
        Ok(k) => crate::engine::build_committed(engine, k).await,
        Err(e) => Err(e),
    };
    if built.is_err()
        && let Some(on) = on
        && let Err(undo) = staged.cluster.delete_network(&on.id, &staged.local.node).await
    {
        tracing::warn!(network = %on.name, error = %undo, "could not undo the cluster network after a local failure");
    }
    built
}
