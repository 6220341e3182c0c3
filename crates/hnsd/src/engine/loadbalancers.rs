//! Load balancers (`HostComputeLoadBalancer`): validation, the store records, and the glue to
//! the compiler of `hns_kernel::nft_lb`.
//!
//! Every request follows the engine's order: validate (nothing changes on failure) → commit
//! the record → write the kernel (only this load balancer's map elements, one
//! nfnetlink batch: `nft_lb_batch`) → answer.
//! If the incremental program fails (the table was flushed or edited by hand), the whole table
//! is rebuilt from the store; the reconciler does the same when it finds the table gone.
//!
//! Semantics worth knowing:
//! - backends are endpoints (by ID, or by name on input); a backend is reached at its address
//!   of the frontend's family; a backend without one is skipped;
//! - a backend endpoint that is deleted leaves every load balancer it was in (the record is
//!   rewritten), and its tracked connections are cleared; a load balancer left without backends
//!   refuses connections (TCP reset, ICMP port unreachable);
//! - `POST /loadbalancers/{id}` with a whole `HostComputeLoadBalancer` replaces it (hcsshim's
//!   `Update`): backends that leave have their tracked connections cleared;
//! - two load balancers may not share a frontend address, protocol and port;
//! - DSR (`Flags` 1) and PreserveDIP (port-mapping flag 8): the backend gets the packet still
//!   addressed to the VIP, so it must own the VIP (`ip addr add VIP/32 dev lo`, with
//!   `arp_ignore=1`/`arp_announce=2`), and the ports cannot differ (no translation); the
//!   backend is reached through a policy route per backend (`hns_kernel::lb_routes`);
//! - a backend may be an overlay endpoint of another host (remote): it is reached through
//!   the overlay with its connections source-NATed to `SourceVIP`, which must then be the
//!   address of an endpoint of this host on that overlay network, created without a
//!   compartment (the Windows kube-proxy's "source VIP endpoint"). hnsd publishes that
//!   endpoint to the other hosts with this host's VXLAN device address
//!   (`hns_kernel::vxlan::device_mac`), so the backends' replies reach this host's stack and
//!   its connection tracking. A remote backend whose endpoint leaves the cluster gets no new
//!   connections and its flows are cleared; it serves again if the endpoint comes back;
//! - the bridge port of every backend is put in hairpin mode (see `hns_kernel::hairpin`), so a
//!   backend's connection to its own VIP can land on itself; it is left on when the backend
//!   leaves (the port goes with the endpoint).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use hns_api::{ApiError, DistributionType, ErrorCode, HostComputeLoadBalancer, LB_FLAG_DSR, LB_FLAG_IPV6, LB_PM_ILB, LB_PM_LOCAL_ROUTED_VIP, LB_PM_PRESERVE_DIP, LB_PM_USE_MUX};
use hns_kernel::names;
use hns_kernel::nft::Proto;
use hns_kernel::nft_batch::Batch;
use hns_kernel::nft_lb::{self, Affinity, Backend, Direct, Frontend, Hairpin, LB_CT_MARK, LbState, Remote, Service};
use hns_kernel::nft_lb_batch;
use hns_store::Kind;
use serde::{Deserialize, Serialize};

use super::{Engine, Result, blocking, kernel_err, new_guid, norm_guid, store_err};

/// What the store holds for a load balancer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LbRecord {
    /// As clients see it; backends by endpoint ID.
    pub lb: HostComputeLoadBalancer,
    /// The connection mark of each backend (endpoint ID → mark), kept for the backend's life
    /// in this load balancer so its connections can be cleared when it leaves.
    #[serde(default)]
    pub marks: BTreeMap<String, u32>,
    /// The backends that are overlay endpoints of other hosts.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub remote: BTreeSet<String>,
    /// With remote backends: the local endpoint whose address is the `SourceVIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_endpoint: Option<String>,
}

/// A request after validation: the load balancer normalized, and what its backends need.
struct Validated {
    lb: HostComputeLoadBalancer,
    remote: BTreeSet<String>,
    source_endpoint: Option<String>,
}

/// The load balancers in memory, and what was last written to the kernel for each.
#[derive(Default)]
pub(crate) struct Lbs {
    pub recs: super::index::Tracked<LbRecord>,
    /// Kernel state last applied, by load balancer ID.
    applied: HashMap<String, LbState>,
    /// Frontend key (`Service::chain`) → load balancer ID.
    frontends: HashMap<String, String>,
    /// Backend endpoint ID → the load balancers it is in: an endpoint's delete visits only
    /// those, not every load balancer.
    by_backend: HashMap<String, BTreeSet<String>>,
    /// Low 31 bits of the next backend mark.
    next_mark: u32,
    /// The table was written whole since start (or since the reconciler found it missing).
    table_ok: bool,
    /// The service shapes the table holds (each one chain; see `nft_lb_batch::Shapes`).
    shapes: nft_lb_batch::Shapes,
    /// Endpoint ID → how many load balancers use its address as the source of remote
    /// backends' connections (it is published with the VXLAN device's address).
    source_endpoints: HashMap<String, usize>,
    /// Endpoints whose published record changed with `source_endpoints`, not yet written.
    republish: Vec<String>,
}

pub(crate) fn not_found(key: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no load balancer with ID {key:?}; list them with `hnsctl lb ls`"))
}

fn bad(field: impl Into<String>, msg: impl Into<String>) -> ApiError {
    ApiError::field(ErrorCode::InvalidParameter, field, msg)
}

/// Load-balancer IDs are GUIDs like every object's.
fn proto_of(n: u32) -> Option<Proto> {
    Proto::from_number(n)
}

fn affinity(d: DistributionType) -> Affinity {
    match d {
        DistributionType::None => Affinity::None,
        DistributionType::SourceIp => Affinity::SourceIp,
        DistributionType::SourceIpProtocol => Affinity::SourceIpProtocol,
    }
}

/// The frontends of a load balancer: its VIPs, or every host address of its family.
fn frontends(lb: &HostComputeLoadBalancer) -> Vec<Frontend> {
    if lb.frontend_vips.is_empty() {
        return vec![Frontend::Node { v6: lb.flags & LB_FLAG_IPV6 != 0 }];
    }
    lb.frontend_vips.iter().filter_map(|v| v.parse().ok()).map(Frontend::Vip).collect()
}

/// The services (frontend × port mapping) of a load balancer, without backends: their chain
/// names are what must be unique.
fn service_keys(lb: &HostComputeLoadBalancer) -> Vec<String> {
    let mut out = Vec::new();
    for f in frontends(lb) {
        for pm in &lb.port_mappings {
            if let Some(proto) = proto_of(pm.protocol) {
                out.push(Service { frontend: f, proto, port: pm.external_port, internal: false, local: false, preserve_dip: false, affinity: Affinity::None, backends: vec![] }.chain());
            }
        }
    }
    out
}

impl Lbs {
    /// Keeps `by_backend` in step when load balancer `id` goes from backends `old` to `new`.
    fn index(&mut self, id: &str, old: &[String], new: &[String]) {
        for e in old.iter().filter(|e| !new.contains(e)) {
            if let Some(ids) = self.by_backend.get_mut(e) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_backend.remove(e);
                }
            }
        }
        for e in new {
            self.by_backend.entry(e.clone()).or_default().insert(id.to_owned());
        }
    }

    /// Keeps `source_endpoints` in step when a load balancer's source endpoint goes from `old`
    /// to `new`; true when an endpoint became or stopped being one (its cluster record changes).
    fn hold_source(&mut self, old: Option<&String>, new: Option<&String>) -> bool {
        if old == new {
            return false;
        }
        let mut changed = false;
        if let Some(o) = old
            && let Some(n) = self.source_endpoints.get_mut(o)
        {
            *n -= 1;
            if *n == 0 {
                self.source_endpoints.remove(o);
                self.republish.push(o.clone());
                changed = true;
            }
        }
        if let Some(n) = new {
            let count = self.source_endpoints.entry(n.clone()).or_default();
            *count += 1;
            if *count == 1 {
                self.republish.push(n.clone());
                changed = true;
            }
        }
        changed
    }

    pub(crate) fn take_republish(&mut self) -> Vec<String> {
        std::mem::take(&mut self.republish)
    }

    /// Whether endpoint `id`'s address is the source of some load balancer's remote backends.
    pub(crate) fn is_source_endpoint(&self, id: &str) -> bool {
        self.source_endpoints.contains_key(id)
    }
}

fn is_usable_vip(ip: IpAddr) -> bool {
    !(ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() || matches!(ip, IpAddr::V4(a) if a.is_broadcast()))
}

impl Engine {
    /// Loads the stored load balancers (at start, after the endpoints). A backend whose
    /// endpoint is gone (hnsd stopped between the endpoint's delete and the load balancer's
    /// rewrite) is dropped here.
    pub(crate) fn load_lbs(&mut self) -> anyhow::Result<()> {
        let mut max = 0u32;
        for mut rec in self.store.load_all::<LbRecord>(Kind::LoadBalancer)? {
            // Remote backends are kept: the cluster's snapshot brings their addresses later.
            let remote = rec.remote.clone();
            rec.lb.host_compute_endpoints.retain(|e| self.endpoints.contains_key(e) || remote.contains(e));
            let eps = &rec.lb.host_compute_endpoints;
            rec.marks.retain(|e, _| eps.contains(e));
            rec.remote.retain(|e| eps.contains(e));
            max = max.max(rec.marks.values().map(|m| m & !LB_CT_MARK).max().unwrap_or(0));
            for k in service_keys(&rec.lb) {
                self.lbs.frontends.insert(k, rec.lb.id.clone());
            }
            self.lbs.index(&rec.lb.id, &[], &rec.lb.host_compute_endpoints);
            self.lbs.hold_source(None, rec.source_endpoint.as_ref());
            self.lbs.recs.insert(rec.lb.id.clone(), rec);
        }
        self.lbs.next_mark = max + 1;
        // The start-up sync compares every record with the cluster's anyway.
        self.lbs.take_republish();
        Ok(())
    }

    /// (The read model serves the GETs; debug builds compare it with this.)
    #[cfg(debug_assertions)]
    pub fn list_lbs(&self) -> Vec<HostComputeLoadBalancer> {
        self.lbs.recs.values().map(|r| r.lb.clone()).collect()
    }

    fn lb_id(&self, key: &str) -> Result<String> {
        norm_guid(key)
            .filter(|id| self.lbs.recs.contains_key(id))
            .ok_or_else(|| not_found(key))
    }

    pub fn get_lb(&self, key: &str) -> Result<HostComputeLoadBalancer> {
        Ok(self.lbs.recs[&self.lb_id(key)?].lb.clone())
    }

    /// Checks a request and returns it normalized (backends by endpoint ID, canonical
    /// addresses). `own`: the load balancer being replaced (its frontends may be reused).
    fn validate_lb(&self, mut req: HostComputeLoadBalancer, own: Option<&str>) -> Result<Validated> {
        if req.flags & !(LB_FLAG_DSR | LB_FLAG_IPV6) != 0 {
            return Err(bad("Flags", format!("{} has unknown bits; the flags are 1 EnableDirectServerReturn and 2 IPv6", req.flags)));
        }
        let dsr = req.flags & LB_FLAG_DSR != 0;
        let v6 = req.flags & LB_FLAG_IPV6 != 0;
        let fam = if v6 { "IPv6" } else { "IPv4" };
        let fam_hint = if v6 { "Flags has IPv6 (2): the load balancer is IPv6" } else { "Flags lacks IPv6 (2): the load balancer is IPv4" };
        for (i, v) in req.frontend_vips.iter_mut().enumerate() {
            let field = format!("FrontendVIPs[{i}]");
            let ip: IpAddr = v.trim().parse().map_err(|_| ApiError::field(ErrorCode::InvalidIp, &field, format!("{v:?} is not an IP address")))?;
            if !is_usable_vip(ip) {
                return Err(ApiError::field(ErrorCode::InvalidIp, &field, format!("{ip} cannot be a frontend address (unspecified, loopback, multicast or broadcast)")));
            }
            if ip.is_ipv6() != v6 {
                return Err(ApiError::field(ErrorCode::InvalidIp, &field, format!("{ip} is not {fam}; {fam_hint}")));
            }
            *v = ip.to_string();
        }
        let mut seen = BTreeSet::new();
        for v in &req.frontend_vips {
            if !seen.insert(v.clone()) {
                return Err(bad("FrontendVIPs", format!("{v} is listed twice")));
            }
        }
        if !req.source_vip.is_empty() {
            let ip: IpAddr = req.source_vip.trim().parse().map_err(|_| ApiError::field(ErrorCode::InvalidIp, "SourceVIP", format!("{:?} is not an IP address", req.source_vip)))?;
            if ip.is_ipv6() != v6 || !is_usable_vip(ip) {
                return Err(ApiError::field(ErrorCode::InvalidIp, "SourceVIP", format!("{ip} cannot be the source address: it must be a unicast {fam} address ({fam_hint})")));
            }
            req.source_vip = ip.to_string();
        }
        if req.port_mappings.is_empty() {
            return Err(bad("PortMappings", "at least one port mapping is needed (Protocol, InternalPort, ExternalPort)"));
        }
        let mut ports = BTreeSet::new();
        for (i, pm) in req.port_mappings.iter().enumerate() {
            let f = |n: &str| format!("PortMappings[{i}].{n}");
            let proto = proto_of(pm.protocol).ok_or_else(|| bad(f("Protocol"), format!("{} is not supported: 6 (TCP) or 17 (UDP)", pm.protocol)))?;
            if pm.internal_port == 0 {
                return Err(bad(f("InternalPort"), "0 is not a port: 1-65535"));
            }
            if pm.external_port == 0 {
                return Err(bad(f("ExternalPort"), "0 is not a port: 1-65535"));
            }
            if pm.flags & !(LB_PM_ILB | LB_PM_LOCAL_ROUTED_VIP | LB_PM_USE_MUX | LB_PM_PRESERVE_DIP) != 0 {
                return Err(bad(f("Flags"), format!("{} has unknown bits; the flags are 1 ILB, 2 LocalRoutedVIP, 4 UseMux, 8 PreserveDIP", pm.flags)));
            }
            if dsr || pm.flags & LB_PM_PRESERVE_DIP != 0 {
                // The packet reaches the backend unchanged: nothing translates the port, and the
                // host's own packets are not re-routed to a backend after the output hook.
                let why = if dsr { "with EnableDirectServerReturn (Flags 1)" } else { "with PreserveDIP (8)" };
                if pm.internal_port != pm.external_port {
                    return Err(bad(f("InternalPort"), format!("{} differs from ExternalPort {}: {why} the packet reaches the backend unchanged, so the ports must be equal", pm.internal_port, pm.external_port)));
                }
                if pm.flags & LB_PM_LOCAL_ROUTED_VIP != 0 {
                    return Err(ApiError::field(ErrorCode::RequestUnsupported, f("Flags"), format!("LocalRoutedVIP (2) is not supported {why}")));
                }
                if req.frontend_vips.is_empty() {
                    return Err(bad("FrontendVIPs", format!("is empty: {why} the backends own the VIPs, so they must be listed")));
                }
            }
            if !ports.insert((proto, pm.external_port)) {
                return Err(bad(f("ExternalPort"), format!("{proto}/{} is mapped twice", pm.external_port)));
            }
        }
        let mut ids = Vec::new();
        let mut remote = BTreeSet::new();
        // The overlay network of the remote backends, and the field of the first one.
        let mut remote_net: Option<(String, String)> = None;
        for (i, key) in req.host_compute_endpoints.iter().enumerate() {
            let field = format!("HostComputeEndpoints[{i}]");
            let (id, has_family) = match self.endpoint_id(key) {
                Ok(id) => {
                    let rec = &self.endpoints[&id];
                    (id.clone(), rec.ips().any(|a| a.is_ipv6() == v6))
                }
                Err(e) => {
                    let Some(r) = self.find_remote(key) else { return Err(ApiError { field: Some(field), ..e }) };
                    if dsr || req.port_mappings.iter().any(|pm| pm.flags & LB_PM_PRESERVE_DIP != 0) {
                        let why = if dsr { "EnableDirectServerReturn (Flags 1)" } else { "PreserveDIP (8)" };
                        return Err(ApiError::field(ErrorCode::RequestUnsupported, field, format!("endpoint {key} lives on host {}: a remote backend is reached with its address translated, which {why} does not do", r.node)));
                    }
                    match &remote_net {
                        Some((net, first)) if *net != r.network_id => {
                            return Err(bad(field, format!("endpoint {key} is on another overlay network than {first}: the remote backends of one load balancer share one overlay network (its SourceVIP's)")));
                        }
                        Some(_) => {}
                        None => remote_net = Some((r.network_id.clone(), field.clone())),
                    }
                    remote.insert(r.id.clone());
                    (r.id.clone(), r.ips().any(|a| a.is_ipv6() == v6))
                }
            };
            if ids.contains(&id) {
                return Err(bad(field, format!("endpoint {key} is listed twice")));
            }
            if !has_family {
                return Err(bad(field, format!("endpoint {key} has no {fam} address; {fam_hint}")));
            }
            ids.push(id);
        }
        req.host_compute_endpoints = ids;
        let source_endpoint = match remote_net {
            Some((net, first)) => Some(self.source_endpoint_for(&req.source_vip, &net, &first)?),
            None => None,
        };
        for k in service_keys(&req) {
            if let Some(other) = self.lbs.frontends.get(&k).filter(|o| Some(o.as_str()) != own) {
                return Err(ApiError::new(ErrorCode::PortAlreadyExists, format!("load balancer {other} already has this frontend address, protocol and port ({k}); delete it or change one of them")));
            }
        }
        req.schema_version = hns_api::SCHEMA_VERSION;
        Ok(Validated { lb: req, remote, source_endpoint })
    }

    /// The local endpoint remote backends on overlay network `net_id` reply to: the one on that
    /// network whose address is `source_vip`, not attached to a compartment (an attached one
    /// would lose its own traffic from other hosts). `first`: the field of the first remote
    /// backend, for the error.
    fn source_endpoint_for(&self, source_vip: &str, net_id: &str, first: &str) -> Result<String> {
        let net = self.networks.get(net_id).map(|n| n.rec.net.name.clone()).unwrap_or_else(|| net_id.to_owned());
        let how = format!("create an endpoint with that address on network {net} on this host, without a compartment (hnsctl endpoint create --net {net} --ip ADDRESS)");
        if source_vip.is_empty() {
            return Err(ApiError::field(
                ErrorCode::InvalidParameter,
                "SourceVIP",
                format!("is empty, but {first} is an overlay endpoint of another host: its replies come back to the SourceVIP; {how}"),
            ));
        }
        let found = self.endpoints.values().find(|r| r.network_id == net_id && r.ep.ip_configurations.iter().any(|c| c.ip_address == source_vip));
        match found {
            None => Err(ApiError::field(ErrorCode::InvalidParameter, "SourceVIP", format!("{source_vip} is not the address of an endpoint of this host on overlay network {net}, where {first} is; {how}"))),
            Some(r) if !r.ep.host_compute_namespace.is_empty() => Err(ApiError::field(
                ErrorCode::InvalidParameter,
                "SourceVIP",
                format!("{source_vip} is the address of endpoint {} ({}), which is attached to a compartment; the SourceVIP's endpoint stays without one", r.ep.name, r.ep.id),
            )),
            Some(r) => Ok(r.ep.id.clone()),
        }
    }

    /// The error for deleting an endpoint whose address is a load balancer's SourceVIP for
    /// remote backends (their replies would have nowhere to go).
    pub(crate) fn refuse_source_endpoint_delete(&self, id: &str) -> Option<ApiError> {
        if !self.lbs.is_source_endpoint(id) {
            return None;
        }
        let lbs: Vec<&str> = self.lbs.recs.values().filter(|r| r.source_endpoint.as_deref() == Some(id)).map(|r| r.lb.id.as_str()).collect();
        Some(ApiError::new(
            ErrorCode::EntityHasReferences,
            format!("endpoint {id} holds the SourceVIP of load balancer(s) {} with remote backends; delete those or change their SourceVIP first", lbs.join(", ")),
        ))
    }

    /// The kernel state of one load balancer, from its record and the endpoints' addresses.
    fn lb_state(&self, rec: &LbRecord) -> LbState {
        let lb = &rec.lb;
        let v6 = lb.flags & LB_FLAG_IPV6 != 0;
        let addr_of = |ep: &str| -> Option<IpAddr> {
            if rec.remote.contains(ep) {
                return self.overlay.remote.values().find_map(|m| m.get(ep))?.ips().find(|a| a.is_ipv6() == v6);
            }
            self.endpoints.get(ep)?.ips().find(|a| a.is_ipv6() == v6)
        };
        let backends: Vec<(u32, IpAddr)> = lb.host_compute_endpoints.iter().filter_map(|e| Some((*rec.marks.get(e)?, addr_of(e)?))).collect();
        let mut services = Vec::new();
        for f in frontends(lb) {
            for pm in &lb.port_mappings {
                let Some(proto) = proto_of(pm.protocol) else { continue };
                services.push(Service {
                    frontend: f,
                    proto,
                    port: pm.external_port,
                    internal: pm.flags & LB_PM_ILB != 0,
                    local: pm.flags & LB_PM_LOCAL_ROUTED_VIP != 0,
                    preserve_dip: lb.flags & LB_FLAG_DSR != 0 || pm.flags & LB_PM_PRESERVE_DIP != 0,
                    affinity: affinity(pm.distribution_type),
                    backends: backends.iter().map(|(mark, addr)| Backend { mark: *mark, addr: *addr, port: pm.internal_port }).collect(),
                });
            }
        }
        let source_vip = lb.source_vip.parse().ok();
        let is_remote = |mark: &u32| rec.remote.iter().any(|e| rec.marks.get(e) == Some(mark));
        let hairpin = backends.iter().filter(|(mark, _)| !is_remote(mark)).map(|(mark, addr)| Hairpin { mark: *mark, backend: *addr, source_vip }).collect();
        let remote = match source_vip {
            Some(source_vip) => backends.iter().filter(|(mark, _)| is_remote(mark)).map(|(mark, _)| Remote { mark: *mark, source_vip }).collect(),
            None => vec![],
        };
        let direct = if services.iter().any(|s| s.preserve_dip) { backends.iter().map(|(mark, addr)| Direct { mark: *mark, backend: *addr }).collect() } else { vec![] };
        LbState { services, hairpin, direct, remote }
    }

    /// Rewrites the whole table from the store.
    pub(crate) fn rebuild_lbs(&mut self) -> Result<()> {
        let states: Vec<(String, LbState)> = self.lbs.recs.values().map(|r| (r.lb.id.clone(), self.lb_state(r))).collect();
        let refs: Vec<&LbState> = states.iter().map(|(_, s)| s).collect();
        self.direct_routes(&[], &refs.iter().flat_map(|s| s.direct.iter().copied()).collect::<Vec<_>>());
        self.lbs.shapes = blocking(|| nft_lb_batch::rebuild(&refs)).map_err(kernel_err)?;
        self.lbs.applied = states.into_iter().collect();
        self.lbs.table_ok = true;
        self.hairpin_all();
        Ok(())
    }

    /// Makes the policy routes of backends reached without DNAT go from `old` to `new` (see
    /// `hns_kernel::lb_routes`). Failures are logged: such a backend is then not reached.
    fn direct_routes(&self, old: &[Direct], new: &[Direct]) {
        for d in new.iter().filter(|d| !old.contains(d)) {
            if let Err(e) = blocking(|| hns_kernel::lb_routes::add(d.mark, d.backend)) {
                tracing::warn!(backend = %d.backend, error = %e, "could not route a direct-return load-balancer backend");
            }
        }
        for d in old.iter().filter(|d| !new.contains(d)) {
            if let Err(e) = blocking(|| hns_kernel::lb_routes::del(d.mark, d.backend)) {
                tracing::warn!(backend = %d.backend, error = %e, "could not remove the route of a direct-return load-balancer backend");
            }
        }
    }

    /// Puts the bridge ports of `eps` in hairpin mode. An endpoint whose host veth is not a
    /// bridge port (routed networks) does not need it: the error is only logged at debug.
    fn hairpin_ports<'a>(&self, eps: impl IntoIterator<Item = &'a String>) {
        for ep in eps {
            let port = names::veth_host_name(ep);
            if let Err(e) = blocking(|| hns_kernel::hairpin::set(&port, true)) {
                tracing::debug!(endpoint = %ep, error = %e, "no hairpin mode for a load-balancer backend");
            }
        }
    }

    /// Hairpin mode on the ports of every backend of every load balancer (after a rebuild, and
    /// at start: a port re-created or re-attached since has lost it).
    fn hairpin_all(&self) {
        let eps: BTreeSet<&String> = self.lbs.recs.values().flat_map(|r| r.lb.host_compute_endpoints.iter().filter(|e| !r.remote.contains(*e))).collect();
        self.hairpin_ports(eps);
    }

    /// Makes the kernel hold load balancer `id` as the store says (absent: removed), touching
    /// only its map elements (and a shape chain that comes or goes); rebuilds the table if that fails.
    fn program_lb(&mut self, id: &str) -> Result<()> {
        let new = self.lbs.recs.get(id).map(|r| self.lb_state(r)).unwrap_or_default();
        let old = self.lbs.applied.get(id).cloned().unwrap_or_default();
        // Routes of new direct backends before their marks are used; those of backends that
        // leave once their marks are gone.
        let added: Vec<Direct> = new.direct.iter().filter(|d| !old.direct.contains(d)).copied().collect();
        let removed: Vec<Direct> = old.direct.iter().filter(|d| !new.direct.contains(d)).copied().collect();
        if !self.lbs.table_ok || self.lbs.recs.is_empty() {
            let result = self.rebuild_lbs();
            self.direct_routes(&removed, &[]);
            return result;
        }
        let mut batch = Batch::new();
        nft_lb_batch::build_update(&mut batch, &mut self.lbs.shapes, &old, &new);
        self.direct_routes(&[], &added);
        let result = blocking(|| nft_lb_batch::apply(&batch));
        self.direct_routes(&removed, &[]);
        match result {
            Ok(()) => {
                // Backends that are new to this load balancer.
                let had: BTreeSet<u32> = old.hairpin.iter().map(|h| h.mark).collect();
                if let Some(r) = self.lbs.recs.get(id) {
                    self.hairpin_ports(r.marks.iter().filter(|(e, m)| !had.contains(m) && !r.remote.contains(*e)).map(|(e, _)| e));
                }
                if self.lbs.recs.contains_key(id) {
                    self.lbs.applied.insert(id.to_owned(), new);
                } else {
                    self.lbs.applied.remove(id);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(lb = id, error = %e, "incremental load-balancer update failed; rebuilding the table");
                self.rebuild_lbs()
            }
        }
    }

    fn commit_lb(&self, rec: &LbRecord) -> Result<()> {
        let mut txn = self.store.begin().map_err(store_err)?;
        txn.put(Kind::LoadBalancer, &rec.lb.id, rec).map_err(store_err)?;
        txn.commit().map_err(store_err)
    }

    /// Gives new backends a mark, keeps the marks of those that stay; returns the marks of
    /// those that left.
    fn assign_marks(&mut self, rec: &mut LbRecord) -> Vec<u32> {
        let keep: BTreeSet<&String> = rec.lb.host_compute_endpoints.iter().collect();
        let gone: Vec<u32> = rec.marks.iter().filter(|(e, _)| !keep.contains(e)).map(|(_, m)| *m).collect();
        rec.marks.retain(|e, _| keep.contains(e));
        for e in &rec.lb.host_compute_endpoints {
            if !rec.marks.contains_key(e) {
                rec.marks.insert(e.clone(), LB_CT_MARK | (self.lbs.next_mark & !LB_CT_MARK));
                self.lbs.next_mark = self.lbs.next_mark.wrapping_add(1).max(1);
            }
        }
        gone
    }

    pub fn create_lb(&mut self, req: HostComputeLoadBalancer) -> Result<HostComputeLoadBalancer> {
        let id = match req.id.as_str() {
            "" => new_guid(),
            given => {
                let id = norm_guid(given).ok_or_else(|| bad("ID", format!("{given:?} is not a GUID; leave it empty and hns chooses one")))?;
                if self.lbs.recs.contains_key(&id) {
                    return Err(ApiError::field(ErrorCode::PortAlreadyExists, "ID", format!("load balancer {id} already exists")));
                }
                id
            }
        };
        let Validated { mut lb, remote, source_endpoint } = self.validate_lb(req, None)?;
        lb.id = id.clone();
        let mut rec = LbRecord { lb, marks: BTreeMap::new(), remote, source_endpoint };
        self.assign_marks(&mut rec);
        self.commit_lb(&rec)?;
        self.overlay.own_dirty.mark_if(self.lbs.hold_source(None, rec.source_endpoint.as_ref()));
        for k in service_keys(&rec.lb) {
            self.lbs.frontends.insert(k, id.clone());
        }
        self.lbs.index(&id, &[], &rec.lb.host_compute_endpoints);
        self.lbs.recs.insert(id.clone(), rec.clone());
        self.program_lb(&id)?;
        Ok(rec.lb)
    }

    /// Replaces a load balancer with `req` (hcsshim's `Update`).
    pub fn modify_lb(&mut self, key: &str, req: HostComputeLoadBalancer) -> Result<HostComputeLoadBalancer> {
        let id = self.lb_id(key)?;
        if !req.id.is_empty() && norm_guid(&req.id).as_deref() != Some(id.as_str()) {
            return Err(bad("ID", format!("{:?} is not the ID of the load balancer being modified ({id}); leave it empty", req.id)));
        }
        let Validated { mut lb, remote, source_endpoint } = self.validate_lb(req, Some(&id))?;
        lb.id = id.clone();
        let old = self.lbs.recs[&id].clone();
        let mut rec = LbRecord { lb, marks: old.marks.clone(), remote, source_endpoint };
        let gone = self.assign_marks(&mut rec);
        self.commit_lb(&rec)?;
        self.overlay.own_dirty.mark_if(self.lbs.hold_source(old.source_endpoint.as_ref(), rec.source_endpoint.as_ref()));
        for k in service_keys(&old.lb) {
            self.lbs.frontends.remove(&k);
        }
        for k in service_keys(&rec.lb) {
            self.lbs.frontends.insert(k, id.clone());
        }
        self.lbs.index(&id, &old.lb.host_compute_endpoints, &rec.lb.host_compute_endpoints);
        self.lbs.recs.insert(id.clone(), rec.clone());
        self.program_lb(&id)?;
        self.clear_flows(&gone);
        Ok(rec.lb)
    }

    pub fn delete_lb(&mut self, key: &str) -> Result<()> {
        let id = self.lb_id(key)?;
        let mut txn = self.store.begin().map_err(store_err)?;
        txn.delete(Kind::LoadBalancer, &id).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        let rec = self.lbs.recs.remove(&id).expect("looked up");
        self.overlay.own_dirty.mark_if(self.lbs.hold_source(rec.source_endpoint.as_ref(), None));
        for k in service_keys(&rec.lb) {
            self.lbs.frontends.remove(&k);
        }
        self.lbs.index(&id, &rec.lb.host_compute_endpoints, &[]);
        let result = self.program_lb(&id);
        self.clear_flows(&rec.marks.values().copied().collect::<Vec<_>>());
        result
    }

    /// Clears the tracked connections of backends that left (logged on failure: the flows then
    /// end by themselves when idle).
    fn clear_flows(&self, marks: &[u32]) {
        if let Err(e) = hns_kernel::conntrack::flush_marks(marks) {
            tracing::warn!(error = %e, "could not clear the tracked connections of removed load-balancer backends");
        }
    }

    /// An endpoint is being deleted: it leaves every load balancer it is a backend of.
    pub(crate) fn lbs_forget_endpoint(&mut self, ep_id: &str) {
        let ids: Vec<String> = self.lbs.by_backend.remove(ep_id).unwrap_or_default().into_iter().filter(|id| self.lbs.recs.contains_key(id)).collect();
        for id in ids {
            let mut rec = self.lbs.recs[&id].clone();
            rec.lb.host_compute_endpoints.retain(|e| e != ep_id);
            let gone = self.assign_marks(&mut rec);
            if let Err(e) = self.commit_lb(&rec) {
                // The record is repaired at the next start (load_lbs drops missing endpoints).
                tracing::warn!(lb = %id, error = %e.message, "could not rewrite a load balancer whose backend was deleted");
            }
            self.lbs.recs.insert(id.clone(), rec);
            if let Err(e) = self.program_lb(&id) {
                tracing::warn!(lb = %id, error = %e.message, "could not remove a deleted backend from a load balancer; the reconciler retries");
                self.lbs.table_ok = false;
            }
            self.clear_flows(&gone);
        }
    }

    /// A remote endpoint appeared, changed or went away: the load balancers it is a backend of
    /// follow (a backend without an address gets no new connections, and its flows are cleared
    /// when it goes).
    pub(crate) fn lbs_remote_changed(&mut self, ep_id: &str) {
        let ids: Vec<String> = self.lbs.by_backend.get(ep_id).into_iter().flatten().filter(|id| self.lbs.recs.contains_key(*id)).cloned().collect();
        self.follow_remote(ids);
    }

    /// The cluster's snapshot replaced the remote endpoints in view (at start, after an
    /// outage): every load balancer with remote backends follows.
    pub(crate) fn lbs_follow_remote_snapshot(&mut self) {
        let ids: Vec<String> = self.lbs.recs.values().filter(|r| !r.remote.is_empty()).map(|r| r.lb.id.clone()).collect();
        self.follow_remote(ids);
    }

    /// Reprograms load balancers `ids` from the remote endpoints in view; the tracked flows of
    /// remote backends that left the kernel are cleared.
    fn follow_remote(&mut self, ids: Vec<String>) {
        let remote_marks = |lbs: &Lbs, id: &str| -> Vec<u32> { lbs.applied.get(id).map(|s| s.remote.iter().map(|r| r.mark).collect()).unwrap_or_default() };
        for id in ids {
            let before = remote_marks(&self.lbs, &id);
            if let Err(e) = self.program_lb(&id) {
                tracing::warn!(lb = %id, error = %e.message, "could not follow a remote backend's change; the reconciler retries");
                self.lbs.table_ok = false;
            }
            let after = remote_marks(&self.lbs, &id);
            let gone: Vec<u32> = before.into_iter().filter(|m| !after.contains(m)).collect();
            if !gone.is_empty() {
                self.clear_flows(&gone);
            }
        }
    }

    /// Reconciler step: puts back the policy rule and route of each backend reached without
    /// DNAT (DSR, PreserveDIP) that is missing from the host (deleted by hand, or its table
    /// gone with a bridge). Only load balancers with such backends cost a dump. Returns what
    /// was repaired.
    pub(crate) async fn reconcile_direct_routes(&self) -> std::result::Result<Vec<String>, String> {
        let want: BTreeSet<(u32, IpAddr)> = self.lbs.applied.values().flat_map(|s| s.direct.iter().map(|d| (d.mark, d.backend))).collect();
        if want.is_empty() {
            return Ok(vec![]);
        }
        let have = self.host.lb_direct_routes().await.map_err(|e| format!("could not list the direct-return load-balancer routes: {e}"))?;
        let mut repaired = Vec::new();
        for (mark, via) in want.difference(&have) {
            match blocking(|| hns_kernel::lb_routes::add(*mark, *via)) {
                Ok(()) => repaired.push(format!("route of direct-return load-balancer backend {via} (mark {mark:#x})")),
                Err(e) => tracing::warn!(backend = %via, error = %e, "could not put back the route of a direct-return load-balancer backend"),
            }
        }
        Ok(repaired)
    }

    /// Reconciler step: rebuilds the table when it is missing or flushed (and, at start, when
    /// its chain count differs from the store's). Returns what was repaired.
    pub(crate) fn reconcile_lbs(&mut self, full: bool) -> std::result::Result<Option<String>, String> {
        if self.lbs.recs.is_empty() {
            if full && blocking(nft_lb::observe).chains > 0 {
                blocking(|| nft_lb::run(&nft_lb::removal_program())).map_err(|e| e.to_string())?;
                self.lbs.applied.clear();
                return Ok(Some(format!("removed nft table inet {} (no load balancer)", nft_lb::LB_TABLE)));
            }
            return Ok(None);
        }
        if full {
            let states: Vec<(String, LbState)> = self.lbs.recs.values().map(|r| (r.lb.id.clone(), self.lb_state(r))).collect();
            let refs: Vec<&LbState> = states.iter().map(|(_, s)| s).collect();
            let shapes = nft_lb_batch::Shapes::of(&refs);
            // Every chain and rule compared with what this kernel lists for the same shapes.
            let same = match nft_lb_batch::expected_shape(&shapes) {
                Ok(want) => blocking(nft_lb::listed_shape).is_some_and(|have| have == want),
                Err(e) => {
                    tracing::warn!("the load-balancer drift check compares chain counts only: {e}");
                    let obs = blocking(nft_lb::observe);
                    obs.dispatch && obs.chains == nft_lb_batch::chain_count(&refs)
                }
            };
            if same {
                // A restart with nothing drifted writes nothing to the table.
                self.lbs.shapes = shapes;
                self.lbs.applied = states.into_iter().collect();
                self.lbs.table_ok = true;
                self.hairpin_all();
                return Ok(None);
            }
        } else if self.lbs.table_ok && blocking(nft_lb::dispatch_present) {
            return Ok(None);
        }
        self.rebuild_lbs().map_err(|e| e.message)?;
        Ok(Some(format!("nft table inet {} rebuilt from the store ({} load balancers)", nft_lb::LB_TABLE, self.lbs.recs.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_index_follows_create_modify_delete() {
        let mut l = Lbs::default();
        let eps = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        l.index("lb1", &[], &eps(&["a", "b"]));
        l.index("lb2", &[], &eps(&["b"]));
        assert_eq!(l.by_backend["b"], BTreeSet::from(["lb1".to_string(), "lb2".to_string()]));
        l.index("lb1", &eps(&["a", "b"]), &eps(&["b", "c"]));
        assert!(!l.by_backend.contains_key("a"), "a left its only load balancer");
        assert_eq!(l.by_backend["c"], BTreeSet::from(["lb1".to_string()]));
        l.index("lb2", &eps(&["b"]), &[]);
        assert_eq!(l.by_backend["b"], BTreeSet::from(["lb1".to_string()]));
    }
}
