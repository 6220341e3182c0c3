//! Endpoint requests: create (optionally attached at once), delete, modify (port mappings);
//! and the attach and detach steps shared with namespace requests.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use hns_api::{ApiError, ErrorCode, HostComputeEndpoint, ModifyRequest, PortMappingSettings, RequestType, ResourceType, state};
use hns_kernel::nft::Proto;
use hns_drivers::{Compartment, EndpointPlan, NetworkPlan};
use hns_kernel::timing::{self, mark};
use hns_ipam::Mac;
use hns_kernel::netlink::Netlink;
use hns_store::Kind;
use ipnet::IpNet;

use super::cluster_hooks::ClusterDriver;
use super::portmaps;
use super::records::{EndpointRecord, MappingRecord};
use super::step_writes::{DiskSync, ElementWrite, StepWrites, StepWritesDone};
use super::validate;
use super::{Engine, Result, kernel_err, new_guid, norm_guid, store_err};

/// A validated endpoint request: the record, the compartment to attach it to at once with the
/// interface name there, and its port mappings with host ports chosen.
pub(super) type Validated = (EndpointRecord, Option<(String, String)>, Vec<PortMappingSettings>);

/// A request stopped before an attach's or a detach's kernel step, for the caller to run
/// without the lock ([`KernelAttach::run`], [`KernelDetach::run`]) and finish
/// ([`Engine::attach_end`], [`Engine::detach_end`]); or done already.
pub enum Step<T> {
    Done(T),
    Attach(Box<KernelAttach>),
    Detach(Box<KernelDetach>),
}

/// What undoes an attach whose kernel step failed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Undo {
    /// The endpoint existed before: it is unbound from the compartment again.
    Unbind,
    /// It was created attached: the request fails as a whole, the endpoint goes.
    DeleteEndpoint,
}

/// The kernel step of an attach (veth into the compartment, addresses, routes, up), with all it
/// needs in hand so that it runs without the engine lock ([`Engine::attach_begin`]).
pub struct KernelAttach {
    pub(crate) ep_id: String,
    pub(crate) ns_id: String,
    undo: Undo,
    host: Netlink,
    net: NetworkPlan,
    plan: EndpointPlan,
    compartment: Arc<Compartment>,
    /// The attach's lazy commit becoming durable.
    disk: Option<DiskSync>,
    /// The mappings' elements and the resolv.conf, written beside the kernel step.
    writes: Option<StepWrites>,
    written: StepWritesDone,
}

impl KernelAttach {
    /// The kernel step, while the attach's commit (made lazily) becomes durable and its
    /// mappings and resolv.conf are written ([`super::step_writes`]): the reply waits for all,
    /// and the disk's wait (0.6-5 ms here) no longer adds to the kernel's. A crash before the
    /// commit is durable leaves the store as before the request, and the veth, which no record
    /// names then, is removed by the reconciler (and its elements by the next full apply).
    pub async fn run(&mut self) -> Result<()> {
        let writes = self.writes.take().unwrap_or_default();
        let disk = self.disk.take().expect("an attach's kernel step runs once");
        let beside = then_sync(disk, move || {
            let written = writes.run();
            super::failpoint("attach-written-before-durable");
            written
        });
        let kernel = async { hns_drivers::attach(&self.host, &self.net, &self.plan, &self.compartment).await.map_err(kernel_err) };
        let (beside, kernel) = tokio::join!(beside, kernel);
        let (written, durable) = beside?;
        self.written = written;
        durable.and(kernel)
    }
}

/// The kernel step of a detach (the veth taken out of service: both ends down and renamed, the
/// container end's addresses cleared), with all it needs in hand so that it runs without the
/// engine lock ([`Engine::detach_begin`], [`Engine::delete_begin`]). The endpoint and its
/// compartment stay in flight until [`Engine::detach_end`].
pub struct KernelDetach {
    pub(crate) ep_id: String,
    pub(crate) ns_id: String,
    /// The endpoint goes with the detach (a delete) rather than stays, unbound.
    delete: bool,
    host: Netlink,
    link: VethStep,
    /// The detach's commit was made lazily: it becomes durable alongside the veth's step.
    disk: Option<DiskSync>,
    /// What came of the mappings' removal beside the veth's step (`None`: there was none).
    elements_removed: Option<std::result::Result<(), hns_kernel::KernelError>>,
}

/// What retiring an endpoint's veth needs: its network's and its own plan, and the compartment
/// (when it still exists) to take the container end out of there.
struct VethStep {
    net: NetworkPlan,
    plan: EndpointPlan,
    inside: Option<Arc<Compartment>>,
    /// The mappings' elements to take out beside the step, without the lock (see
    /// `step_writes`); `None`: taken out before it, under the lock.
    elements: Option<ElementWrite>,
}

impl KernelDetach {
    /// The veth's step, while the detach's commit (made lazily) becomes durable and the
    /// mappings' elements are taken out: as for an attach ([`KernelAttach::run`]), the reply
    /// waits for all, and the engine's lock is not held while the disk syncs. Returns the
    /// retired link, for the reaper.
    pub async fn run(&mut self) -> Result<Option<String>> {
        let elements = self.link.elements.take();
        let disk = self.disk.take().expect("a detach's veth step runs once");
        let beside = then_sync(disk, move || elements.map(ElementWrite::run));
        let (beside, retired) = tokio::join!(beside, self.link.run(&self.host));
        let (removed, durable) = beside?;
        self.elements_removed = removed;
        durable.and(retired)
    }
}

/// On a blocking thread: `writes`, then the wait for the store's sync that makes a lazy commit
/// durable (the writes beside an attach's or a detach's kernel step, `step_writes`). Returns
/// what the writes gave and whether the sync succeeded.
async fn then_sync<T: Send + 'static>(disk: DiskSync, writes: impl FnOnce() -> T + Send + 'static) -> Result<(T, Result<()>)> {
    tokio::task::spawn_blocking(move || {
        let written = writes();
        (written, disk.wait().map_err(store_err))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the store's sync failed: {e}")))
}

impl VethStep {
    async fn run(&self, host: &Netlink) -> Result<Option<String>> {
        Box::pin(hns_drivers::detach(host, &self.net, &self.plan, self.inside.as_deref())).await.map_err(kernel_err)
    }
}

impl Engine {
    /// This host's endpoints, then the remote endpoints of cluster networks (flagged
    /// `RemoteEndpoint`).
    pub fn list_endpoints(&self) -> Vec<HostComputeEndpoint> {
        self.endpoints.values().map(|e| Arc::unwrap_or_clone(self.endpoint_view(e))).chain(self.remote_endpoint_views()).collect()
    }

    pub fn get_endpoint(&self, key: &str) -> Result<HostComputeEndpoint> {
        match self.endpoint_id(key) {
            Ok(id) => Ok(Arc::unwrap_or_clone(self.endpoint_view(&self.endpoints[&id]))),
            Err(e) => self.remote_endpoint_view(key).ok_or(e),
        }
    }

    /// Validates an endpoint request and allocates its addresses and MAC in memory. On error
    /// nothing was taken.
    /// The compartment comes back with the endpoint's interface name there.
    pub(super) fn validate_endpoint(&mut self, mut req: HostComputeEndpoint) -> Result<Validated> {
        if req.host_compute_network.is_empty() {
            return Err(ApiError::field(ErrorCode::InvalidEndpoint, "HostComputeNetwork", "HostComputeNetwork is required: the ID or name of the network"));
        }
        let net_id = self.network_id(&req.host_compute_network).ok_or_else(|| {
            ApiError::field(
                ErrorCode::NetworkNotFound,
                "HostComputeNetwork",
                format!("no network with ID or name {:?}; list them with `hnsctl network ls`", req.host_compute_network),
            )
        })?;
        if req.id.is_empty() {
            req.id = self.fresh_endpoint_id();
        } else {
            req.id = norm_guid(&req.id).ok_or_else(|| ApiError::field(ErrorCode::InvalidEndpoint, "ID", format!("ID {:?} is not a GUID", req.id)))?;
            if self.endpoints.contains_key(&req.id) {
                return Err(ApiError::field(ErrorCode::EndpointAlreadyExists, "ID", format!("an endpoint with ID {} already exists", req.id)));
            }
            if let Some(other) = self.endpoint_sharing_veth(&req.id) {
                return Err(ApiError::field(
                    ErrorCode::EndpointAlreadyExists,
                    "ID",
                    format!(
                        "endpoint ID {} would share its host link {} with endpoint {other}: hns names an endpoint's veth after the first 12 hex digits of its ID; choose an ID that differs from {other} in those digits, or leave ID empty",
                        req.id,
                        hns_kernel::names::veth_host_name(&req.id)
                    ),
                ));
            }
        }
        mark("validate: ID");
        validate::check_name(&req.name, "Name", false)?;
        for (i, a) in req.aliases.iter().enumerate() {
            validate::check_name(a, &format!("Aliases[{i}]"), true)?;
        }
        let mappings = portmaps::parse_policies(&req.policies, "Policies")?;
        portmaps::check_network_takes_mappings(self.networks[&net_id].rec.net.network_type(), &mappings, "Policies")?;
        let acls = super::policies::parse_endpoint_acls(&req.policies, "Policies")?;
        super::policies::check_network_takes_acls(self.networks[&net_id].rec.net.network_type(), !acls.is_empty(), "Policies")?;
        if !acls.is_empty() {
            self.check_acl_boxes(&net_id, &acls, "Policies")?;
        }
        let extra = {
            let n = &self.networks[&net_id];
            let subnets: Vec<ipnet::IpNet> = n.plan.subnets.iter().map(|(s, _)| *s).collect();
            super::epolicies::parse_endpoint(&req.policies, "Policies", n.rec.net.network_type(), &subnets, &n.rec.net.name)?.normalized()
        };
        validate::check_flags(req.flags, "Flags")?;
        validate::unsupported("Health", !req.health.is_null())?;
        validate::check_dns(&req.dns, "Dns")?;
        validate::check_ifname(&req.interface_name, "InterfaceName")?;
        let requested_ifname = std::mem::take(&mut req.interface_name);
        let ns_id = if req.host_compute_namespace.is_empty() {
            None
        } else {
            let ns = self.namespace_id(&req.host_compute_namespace).ok_or_else(|| {
                ApiError::field(ErrorCode::NamespaceNotFound, "HostComputeNamespace", format!("no namespace with ID or name {:?}", req.host_compute_namespace))
            })?;
            let ifname = self.ifname_in(&requested_ifname, &ns)?;
            Some((ns, ifname))
        };
        mark("validate: compartment, ifname");
        let net = &self.networks[&net_id];
        if !req.name.is_empty() && net.endpoint_names.contains_key(&req.name) {
            return Err(ApiError::field(
                ErrorCode::EndpointAlreadyExists,
                "Name",
                format!("network {:?} already has an endpoint named {:?}; choose another name", net.rec.net.name, req.name),
            ));
        }
        for (i, r) in req.routes.iter().enumerate() {
            validate::parse_cidr(&r.destination_prefix, &format!("Routes[{i}].DestinationPrefix"), ErrorCode::InvalidPrefix)?;
            if !r.next_hop.is_empty() {
                let hop = validate::parse_ip(&r.next_hop, &format!("Routes[{i}].NextHop"))?;
                if !net.plan.subnets.iter().any(|(s, _)| s.contains(&hop)) {
                    return Err(ApiError::field(ErrorCode::InvalidIp, format!("Routes[{i}].NextHop"), format!("next hop {hop} is not on network {:?}", net.rec.net.name)));
                }
            }
        }
        // Static addresses: parse and check everything before taking anything.
        let mut statics: Vec<(usize, IpAddr)> = Vec::new();
        if net.is_dhcp() && !req.ip_configurations.is_empty() {
            return Err(ApiError::field(
                ErrorCode::AddrInvalidOrReserved,
                "IpConfigurations",
                format!("network {:?} takes its addresses from the LAN's DHCP server; leave IpConfigurations empty (no --ip)", net.rec.net.name),
            ));
        }
        for (i, c) in req.ip_configurations.iter().enumerate() {
            let field = format!("IpConfigurations[{i}].IpAddress");
            validate::unsupported(&format!("IpConfigurations[{i}].IpSubnetId"), !c.ip_subnet_id.is_empty())?;
            let ip = validate::parse_ip(&c.ip_address, &field)?;
            let Some(pi) = net.pools.iter().position(|p| p.subnet().contains(&ip)) else {
                let subnets: Vec<String> = net.pools.iter().map(|p| p.subnet().to_string()).collect();
                return Err(ApiError::field(
                    ErrorCode::AddrInvalidOrReserved,
                    field,
                    format!("address {ip} is outside the subnets of network {:?} ({}); choose an address inside", net.rec.net.name, subnets.join(", ")),
                ));
            };
            let plen = net.pools[pi].prefix_len();
            if c.prefix_length != 0 && c.prefix_length != plen {
                return Err(ApiError::field(
                    ErrorCode::InvalidPrefix,
                    format!("IpConfigurations[{i}].PrefixLength"),
                    format!("prefix length {} does not match subnet {} (/{plen}); leave it 0 or send {plen}", c.prefix_length, net.pools[pi].subnet()),
                ));
            }
            if statics.iter().any(|(p, _)| *p == pi) {
                return Err(ApiError::field(ErrorCode::AddrInvalidOrReserved, field, format!("two addresses given in subnet {}; an endpoint takes one address per subnet", net.pools[pi].subnet())));
            }
            statics.push((pi, ip));
        }
        let static_mac = if req.mac_address.is_empty() {
            None
        } else {
            let mac = Mac::parse(&req.mac_address).map_err(|e| ApiError::field(ErrorCode::InvalidMac, "MacAddress", e.to_string()))?;
            if net.macs.contains(&mac.0) {
                return Err(ApiError::field(ErrorCode::MacInUse, "MacAddress", format!("MAC {mac} is already used on network {:?}; choose another or leave it empty", net.rec.net.name)));
            }
            if mac.0 == net.plan.bridge_mac {
                return Err(ApiError::field(
                    ErrorCode::MacInUse,
                    "MacAddress",
                    format!("MAC {mac} is the MAC of network {:?}'s gateway (its host leg {}); choose another or leave it empty", net.rec.net.name, net.plan.bridge),
                ));
            }
            Some(mac)
        };

        // Allocate: one address per family (statics, else the first subnet of each family).
        let net = self.networks.get_mut(&net_id).expect("looked up");
        let mut taken: Vec<(usize, IpAddr)> = Vec::new();
        let mut fail = None;
        for (pi, ip) in &statics {
            match net.pools[*pi].reserve(*ip) {
                Ok(()) => taken.push((*pi, *ip)),
                Err(e) => {
                    let i = statics.iter().position(|(p, _)| p == pi).unwrap_or(0);
                    let field = format!("IpConfigurations[{i}].IpAddress");
                    fail = Some(validate::host_address_error(&net.rec.net, &field, *ip).unwrap_or_else(|| validate::address_error(&field, e)));
                    break;
                }
            }
        }
        if fail.is_none() {
            for v4 in [true, false] {
                if taken.iter().any(|(_, ip)| ip.is_ipv4() == v4) || statics.iter().any(|(_, ip)| ip.is_ipv4() == v4) {
                    continue;
                }
                let Some(pi) = net.pools.iter().position(|p| p.subnet().addr().is_ipv4() == v4) else { continue };
                match net.pools[pi].allocate() {
                    Ok(ip) => taken.push((pi, ip)),
                    Err(e) => {
                        fail = Some(validate::address_error("IpConfigurations", e));
                        break;
                    }
                }
            }
        }
        if let Some(e) = fail {
            for (pi, ip) in taken {
                net.pools[pi].release(ip);
            }
            return Err(e);
        }
        // Host ports last: everything else is valid by now.
        let mut claimed = Vec::new();
        let endpoints = &self.endpoints;
        let holders = |e: &str| describe_endpoint(endpoints, e);
        for (i, m) in mappings.iter().enumerate() {
            match self.ports.claim(m, &req.id, &format!("Policies[{i}].Settings"), &holders) {
                Ok(port) => claimed.push(PortMappingSettings { external_port: port, ..m.clone() }),
                Err(e) => {
                    for c in &claimed {
                        self.ports.release(Proto::from_number(c.protocol).expect("valid"), portmaps::vip_of(c), c.external_port, &req.id);
                    }
                    let net = self.networks.get_mut(&net_id).expect("looked up");
                    for (pi, ip) in taken {
                        net.pools[pi].release(ip);
                    }
                    return Err(e);
                }
            }
        }
        // Mappings are stored as records of their own, not inside the endpoint.
        req.policies.clear();
        let net = self.networks.get_mut(&net_id).expect("looked up");
        taken.sort_by_key(|(pi, _)| *pi);
        let mac = static_mac.unwrap_or_else(|| {
            // Without an address (DHCP) the MAC is random: the LAN's server keys leases on it.
            let mut m = taken.first().map(|(_, ip)| Mac::from_ip(*ip)).unwrap_or_else(Mac::random);
            while net.macs.contains(&m.0) {
                m = Mac::random();
            }
            m
        });
        net.macs.insert(mac.0);
        if !req.name.is_empty() {
            net.endpoint_names.insert(req.name.clone(), req.id.clone());
        }
        // A pool's prefix length fits its family.
        let addrs = taken.iter().map(|(pi, ip)| IpNet::new(*ip, net.pools[*pi].prefix_len()).expect("a pool's prefix")).collect();
        req.host_compute_network = net_id.clone();
        req.host_compute_namespace = String::new();
        req.schema_version = hns_api::SCHEMA_VERSION;
        req.state = state::CREATED;
        req.version = 1;
        // The addresses and MAC are written into `req` by the record, typed and as strings.
        let mut rec = EndpointRecord::new(req, net_id, addrs, Some(mac));
        rec.requested_ifname = requested_ifname;
        rec.acls = acls;
        rec.policies = extra;
        Ok((rec, ns_id, claimed))
    }

    /// A new endpoint ID; one whose veth name is taken (1 in 2^48 per endpoint) is drawn again.
    pub(crate) fn fresh_endpoint_id(&self) -> String {
        std::iter::repeat_with(new_guid).find(|id| self.endpoint_sharing_veth(id).is_none()).expect("unbounded")
    }

    /// The endpoint whose host veth name an endpoint with ID `id` would take.
    /// Endpoint IDs are normalized GUIDs (`xxxxxxxx-xxxx-...`, lowercase), so the first 12 hex
    /// digits that name the veth are the first 13 characters: only keys with that prefix can
    /// share it, and the sorted map finds them without a scan of every endpoint.
    fn endpoint_sharing_veth(&self, id: &str) -> Option<String> {
        let veth = hns_kernel::names::veth_host_name(id);
        let prefix = id.get(..13).unwrap_or(id);
        self.endpoints
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k)
            .find(|other| hns_kernel::names::veth_host_name(other) == veth)
            .cloned()
    }

    /// Creates an endpoint; on a network of a cluster driver, that driver's hooks run before
    /// and after the local create (the address may come from the cluster IPAM first, and the
    /// endpoint is published to the other hosts once it exists here; see `cluster_hooks`).
    /// Logs at debug level where the request's time went (see [`hns_kernel::timing`]).
    pub async fn create_endpoint(&mut self, req: HostComputeEndpoint) -> Result<HostComputeEndpoint> {
        let (out, stages) = timing::scope(async {
            let (req, reserved) = self.cluster_prepare_endpoint(req).await?;
            mark("cluster prepare");
            // Boxed, as the other nested attach futures: debug builds' poll frames grow with them.
            let created = Box::pin(self.create_local_endpoint(req)).await;
            let out = self.cluster_finish_endpoint(reserved, created).await;
            mark("cluster finish");
            out
        })
        .await;
        tracing::debug!(total_us = stages.total().as_micros() as u64, endpoints = self.endpoints.len(), "create endpoint stages: {stages}");
        out
    }

    /// [`Engine::create_endpoint`] up to the kernel step of an attach at once, which the
    /// caller runs. Endpoints of a cluster driver's network are created whole (their cluster
    /// steps without the lock: `cluster_hooks::create_endpoint_staged`).
    pub async fn create_endpoint_begin(&mut self, req: HostComputeEndpoint) -> Result<Step<HostComputeEndpoint>> {
        let clustered = self.network_id(&req.host_compute_network).and_then(|n| ClusterDriver::of(self.networks[&n].plan.kind)).is_some();
        if clustered || req.host_compute_namespace.is_empty() {
            return Ok(Step::Done(Box::pin(self.create_endpoint(req)).await?));
        }
        match Box::pin(self.create_local_begin(req)).await? {
            (id, None) => Ok(Step::Done(Arc::unwrap_or_clone(self.endpoint_view(&self.endpoints[&id])))),
            (_, Some(k)) => Ok(Step::Attach(Box::new(k))),
        }
    }

    pub(crate) async fn create_local_endpoint(&mut self, req: HostComputeEndpoint) -> Result<HostComputeEndpoint> {
        let (id, attach) = self.create_local_begin(req).await?;
        if let Some(mut k) = attach {
            let done = k.run().await;
            Box::pin(self.attach_end(k, done)).await?;
        }
        Ok(Arc::unwrap_or_clone(self.endpoint_view(&self.endpoints[&id])))
    }

    /// The first step of [`Engine::create_local_endpoint`]: the endpoint committed, and when
    /// it is created attached, the attach's kernel step to run (see [`Engine::attach_begin`]).
    pub(crate) async fn create_local_begin(&mut self, req: HostComputeEndpoint) -> Result<(String, Option<KernelAttach>)> {
        self.refuse_uplink_mac(&req).await?;
        mark("uplink MAC check");
        let (mut rec, ns_id, maps) = self.validate_endpoint(req)?;
        mark("validate+allocate: rest");
        let id = rec.ep.id.clone();
        if let Some((ns, ifname)) = &ns_id {
            Self::bind(&mut rec, ns, ifname.clone());
        }
        let cursors = self.networks[&rec.network_id].cursors();
        // One transaction: the endpoint, its addresses and MAC (inside the record), its
        // compartment when attached at once, and the IPAM cursors of its network.
        let mut net_rec = self.networks[&rec.network_id].rec.clone();
        net_rec.cursors = cursors;
        let committed = (|| {
            let mut txn = self.store.begin()?;
            if ns_id.is_some() {
                // Made durable during the attach's kernel step (`KernelAttach::run`).
                txn.lazy();
            }
            if ns_id.is_some() {
                txn.put(Kind::Endpoint, &id, &committed_attached(&rec))?;
            } else {
                txn.put(Kind::Endpoint, &id, &rec)?;
            }
            txn.put(Kind::Network, &net_rec.net.id, &net_rec)?;
            txn.put(Kind::Meta, super::META_PORT_CURSOR, &self.ports.cursor)?;
            for m in &maps {
                txn.put(Kind::PortMapping, &portmaps::record_key(&id, m), &MappingRecord { endpoint_id: id.clone(), settings: m.clone() })?;
            }
            txn.commit()
        })();
        if let Err(e) = committed {
            self.networks.get_mut(&rec.network_id).expect("exists").release_endpoint(&rec);
            self.release_ports(&id, &maps);
            return Err(store_err(e));
        }
        mark("store commit");
        self.networks.get_mut(&rec.network_id).expect("exists").rec = net_rec;
        self.endpoints.insert(id.clone(), rec);
        if !maps.is_empty() {
            self.mappings.insert(id.clone(), maps);
        }
        if ns_id.is_none() {
            return Ok((id, None));
        }
        super::failpoint("attach-after-commit");
        match self.kernel_attach(&id, Undo::DeleteEndpoint).await {
            Ok(k) => Ok((id, Some(k))),
            Err(e) => {
                // The request fails as a whole: remove the endpoint again.
                let _ = self.delete_local_endpoint(&id).await;
                Err(e)
            }
        }
    }

    /// A static MAC equal to the uplink adapter's, on an external network, would put two
    /// stations with one address on the LAN. Read from the kernel, so it is checked apart from
    /// [`Engine::validate_endpoint`] (which is pure); it reads, changes nothing.
    async fn refuse_uplink_mac(&self, req: &HostComputeEndpoint) -> Result<()> {
        let (Ok(mac), Some(net_id)) = (Mac::parse(&req.mac_address), self.network_id(&req.host_compute_network)) else { return Ok(()) };
        let net = &self.networks[&net_id];
        let Some(uplink) = &net.plan.uplink else { return Ok(()) };
        match self.host.link_by_name(&uplink.link).await {
            Ok(Some(l)) if l.mac == Some(mac.0) => Err(ApiError::field(
                ErrorCode::MacInUse,
                "MacAddress",
                format!("MAC {mac} is the MAC of network {:?}'s uplink {}; choose another or leave it empty", net.rec.net.name, uplink.link),
            )),
            _ => Ok(()),
        }
    }

    /// Deletes an endpoint of this host alone (a cluster driver's endpoints:
    /// `cluster_hooks::delete_endpoint_staged`), up to its veth's kernel step, which the
    /// caller runs ([`KernelDetach::run`], [`Engine::detach_end`]).
    pub async fn delete_endpoint_begin(&mut self, key: &str) -> Result<Step<()>> {
        let id = self.endpoint_id(key).map_err(|e| self.refuse_remote_endpoint(key).unwrap_or(e))?;
        mark("look up");
        Ok(match self.delete_begin(&id).await? {
            Some(k) => Step::Detach(Box::new(k)),
            None => Step::Done(()),
        })
    }

    pub(crate) async fn delete_local_endpoint(&mut self, id: &str) -> Result<()> {
        let Some(mut k) = self.delete_begin(id).await? else { return Ok(()) };
        let done = k.run().await;
        self.detach_end(k, done).await
    }

    /// The first step of a delete: the endpoint and its mappings deleted from the store, and
    /// out of the kernel but for its veth, whose step comes back to run without the lock
    /// (`None`: the delete is done). Until [`Engine::detach_end`] the endpoint stays in memory,
    /// in flight with its compartment, so its addresses, MAC and veth name are not reused while
    /// its veth still holds them.
    pub(crate) async fn delete_begin(&mut self, id: &str) -> Result<Option<KernelDetach>> {
        let rec = self.endpoints[id].clone();
        let maps = self.mappings_of(id).to_vec();
        // An attached endpoint's delete is committed lazily, and made durable by its veth's
        // step (without the lock) or below: a crash before that leaves it as it was.
        let attached = !rec.ep.host_compute_namespace.is_empty();
        // One transaction: the endpoint and its mappings.
        let committed = (|| {
            let mut txn = self.store.begin()?;
            txn.delete(Kind::Endpoint, id)?;
            for m in &maps {
                txn.delete(Kind::PortMapping, &portmaps::record_key(id, m))?;
            }
            if attached {
                txn.lazy();
            }
            txn.commit()
        })();
        committed.map_err(store_err)?;
        mark("store commit");
        super::failpoint("detach-after-commit");
        // Committed: a failing kernel step here is finished by the reconciler.
        let mut prepared = Ok(None);
        if attached {
            let disk = DiskSync::start(&self.store);
            prepared = self.detach_prepare(&rec, true).await;
            if let Ok(Some(link)) = prepared {
                return Ok(Some(self.detach_in_flight(&rec, true, link, disk)));
            }
            disk.wait().map_err(store_err)?;
        }
        self.forget_endpoint(id).await;
        prepared.map(|_| None)
    }

    /// The end of a delete: the endpoint leaves memory; its names, addresses, MAC and host
    /// ports are free; its compartment's other endpoints take over the default route.
    async fn forget_endpoint(&mut self, id: &str) {
        let Some(rec) = self.endpoints.get(id).cloned() else { return };
        let maps = self.mappings_of(id).to_vec();
        self.lbs_forget_endpoint(id);
        self.endpoints.remove(id);
        self.mappings.remove(id);
        self.dns_refresh_for(&rec);
        mark("dns names");
        if let Some(net) = self.networks.get_mut(&rec.network_id) {
            net.release_endpoint(&rec);
        }
        self.release_ports(id, &maps);
        mark("release allocations");
        if !rec.ep.host_compute_namespace.is_empty() {
            self.write_resolv_conf(&rec.ep.host_compute_namespace);
            mark("resolv.conf");
            self.restore_gateways(&rec.ep.host_compute_namespace).await;
            mark("restore gateways");
        }
    }

    /// The kernel side of a detach, all under the lock: the veth is taken out of service now
    /// and deleted by the reaper in the background (a delete costs an RCU grace period, ~20 ms).
    pub(crate) async fn kernel_detach(&mut self, rec: &EndpointRecord) -> Result<()> {
        let Some(link) = self.detach_prepare(rec, false).await? else { return Ok(()) };
        let retired = link.run(&self.host).await?;
        self.veth_retired(&rec.ep.id, retired).await;
        Ok(())
    }

    /// A detach's kernel work but the veth's: mappings, ACLs and policies out, the DHCPv6
    /// lease released; then what the veth's step needs (`None`: no veth to retire). `beside`:
    /// the step runs without the lock, and takes the mappings out meanwhile.
    async fn detach_prepare(&mut self, rec: &EndpointRecord, beside: bool) -> Result<Option<VethStep>> {
        let net = self.networks.get(&rec.network_id).map(|n| n.plan.clone());
        let plan = self.endpoint_plan(rec);
        // Mappings first, so no packet is sent to an address that is going away (or at once,
        // beside a veth step run without the lock).
        let mine = self.kernel_mappings(rec);
        let elements = if beside && net.is_some() && plan.is_some() { self.element_write(&[], &mine) } else { None };
        if elements.is_none() {
            self.program_mappings(&[], &mine, &[])?;
            mark("nft elements");
        }
        if let Err(e) = self.unprogram_acl(rec) {
            tracing::warn!(endpoint = rec.ep.id, error = %e.message, "could not remove the endpoint's ACL chains; the reconciler rebuilds the ACL tables");
        }
        if let Err(e) = Box::pin(self.detach_policies(rec)).await {
            tracing::warn!(endpoint = rec.ep.id, error = %e.message, "could not remove the endpoint's OutBoundNAT or QOS; the reconciler finishes it");
        }
        let (Some(net), Some(plan)) = (net, plan) else { return Ok(None) };
        // The DHCPv6 Release leaves from the container's interface: before it goes.
        self.release_lease6(&rec.ep.id).await;
        let ns = &rec.ep.host_compute_namespace;
        let inside = if ns.is_empty() || !self.namespaces.contains_key(ns) { None } else { self.compartment_handle(ns).ok() };
        mark("open compartment");
        Ok(Some(VethStep { net, plan, inside, elements }))
    }

    /// Marks the endpoint `rec` (attached) and its compartment in flight for the veth's step.
    fn detach_in_flight(&mut self, rec: &EndpointRecord, delete: bool, link: VethStep, disk: DiskSync) -> KernelDetach {
        let (ep_id, ns_id) = (rec.ep.id.clone(), rec.ep.host_compute_namespace.clone());
        self.in_flight.insert(ep_id.clone());
        self.in_flight.insert(ns_id.clone());
        if delete {
            self.deleting_endpoints.insert(ep_id.clone());
        }
        KernelDetach { ep_id, ns_id, delete, host: self.host.clone(), link, disk: Some(disk), elements_removed: None }
    }

    /// After the veth's step: the DHCPv4 lease released, the retired link to the reaper.
    async fn veth_retired(&mut self, ep_id: &str, retired: Option<String>) {
        self.release_lease(ep_id).await;
        if let Some(name) = retired {
            self.reap(name);
        }
    }

    /// The last step of a detach or a delete, with what the veth's step gave. Its record was
    /// committed before that step: if the step failed, the reconciler finishes it.
    pub async fn detach_end(&mut self, k: KernelDetach, done: Result<Option<String>>) -> Result<()> {
        super::failpoint("detach-after-kernel");
        self.in_flight.remove(&k.ep_id);
        self.in_flight.remove(&k.ns_id);
        self.deleting_endpoints.remove(&k.ep_id);
        self.idle.notify_waiters();
        if let Some(Err(e)) = &k.elements_removed
            && !e.is_not_found()
        {
            // Gone from the state, still in the kernel: a full apply takes them out.
            tracing::warn!(endpoint = k.ep_id, error = %e, "could not take the mappings' elements out; re-applying the whole nft table");
            if let Err(e) = self.apply_nft() {
                tracing::warn!(endpoint = k.ep_id, error = %e.message, "the nft table's re-apply failed; the reconciler repairs it");
            }
        }
        let result = match done {
            Ok(retired) => {
                self.veth_retired(&k.ep_id, retired).await;
                Ok(())
            }
            Err(e) => Err(e),
        };
        if k.delete {
            self.forget_endpoint(&k.ep_id).await;
        } else if result.is_ok() {
            self.restore_gateways(&k.ns_id).await;
        }
        result
    }

    /// `ResourceType: Policy` adds or removes port mappings on a (running) endpoint, its ACLs
    /// (whose kernel step the caller runs without the lock: the returned step) and its other
    /// policies.
    pub async fn modify_endpoint(&mut self, key: &str, req: ModifyRequest) -> Result<Option<super::acl::KernelAcl>> {
        let id = self.endpoint_id(key)?;
        if req.resource_type != ResourceType::Policy {
            return Err(ApiError::field(
                ErrorCode::RequestUnsupported,
                "ResourceType",
                format!("modifying an endpoint's {} is not supported yet; supported: Policy", req.resource_type),
            ));
        }
        let p: hns_api::PolicyRequest = hns_api::decode::from_value(req.settings, "Settings")?;
        if p.policies.iter().any(super::policies::is_acl) {
            return self.modify_endpoint_acls(&id, req.request_type, &p.policies);
        }
        if p.policies.iter().any(super::epolicies::is_endpoint_kind) {
            return Box::pin(self.modify_endpoint_policies(&id, req.request_type, &p.policies)).await.map(|()| None);
        }
        let wanted = portmaps::parse_policies(&p.policies, "Settings.Policies")?;
        let rec = self.endpoints[&id].clone();
        if let Some(net) = self.networks.get(&rec.network_id) {
            portmaps::check_network_takes_mappings(net.rec.net.network_type(), &wanted, "Settings.Policies")?;
        }
        // Work on positions, not a copy: an endpoint may hold thousands of mappings.
        let current: &[PortMappingSettings] = self.mappings.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        let mut added: Vec<PortMappingSettings> = Vec::new();
        let mut removed_at: Vec<usize> = Vec::new();
        match req.request_type {
            RequestType::Add => {
                let endpoints = &self.endpoints;
                let holders = |e: &str| describe_endpoint(endpoints, e);
                for (i, m) in wanted.iter().enumerate() {
                    match self.ports.claim(m, &id, &format!("Settings.Policies[{i}].Settings"), &holders) {
                        Ok(port) => added.push(PortMappingSettings { external_port: port, ..m.clone() }),
                        Err(e) => {
                            self.release_ports(&id, &added);
                            return Err(e);
                        }
                    }
                }
            }
            RequestType::Remove => {
                // A few removals scan; a big one indexes first, so it stays one pass.
                let key = |c: &PortMappingSettings| (c.protocol, c.external_port, c.vip.clone());
                let mut index: HashMap<(u32, u16, String), usize> =
                    if wanted.len() > 8 { current.iter().enumerate().map(|(at, c)| (key(c), at)).collect() } else { HashMap::new() };
                for (i, m) in wanted.iter().enumerate() {
                    let found = if wanted.len() > 8 {
                        index.remove(&key(m))
                    } else {
                        let same = |c: &PortMappingSettings| c.protocol == m.protocol && c.external_port == m.external_port && c.vip == m.vip;
                        current.iter().enumerate().position(|(at, c)| !removed_at.contains(&at) && same(c))
                    };
                    let Some(pos) = found else {
                        return Err(ApiError::field(
                            ErrorCode::PolicyNotFound,
                            format!("Settings.Policies[{i}]"),
                            format!(
                                "endpoint {id} has no mapping of host port {}/{}{}",
                                m.external_port,
                                Proto::from_number(m.protocol).expect("valid"),
                                if m.vip.is_empty() { String::new() } else { format!(" on {}", m.vip) }
                            ),
                        ));
                    };
                    removed_at.push(pos);
                }
            }
            other => return Err(ApiError::field(ErrorCode::RequestUnsupported, "RequestType", format!("{other} of a policy is not supported; use Add or Remove"))),
        }
        let removed: Vec<PortMappingSettings> = removed_at.iter().map(|&at| current[at].clone()).collect();
        let key = |m: &PortMappingSettings| portmaps::record_key(&id, m);
        // One transaction: the mapping records and the port cursor.
        let committed = (|| {
            let mut txn = self.store.begin()?;
            for m in &removed {
                txn.delete(Kind::PortMapping, &key(m))?;
            }
            for m in &added {
                txn.put(Kind::PortMapping, &key(m), &MappingRecord { endpoint_id: id.clone(), settings: m.clone() })?;
            }
            txn.put(Kind::Meta, super::META_PORT_CURSOR, &self.ports.cursor)?;
            txn.commit()
        })();
        if let Err(e) = committed {
            self.release_ports(&id, &added);
            return Err(store_err(e));
        }
        self.release_ports(&id, &removed);
        let entry = self.mappings.get_or_default(&id);
        removed_at.sort_unstable_by(|a, b| b.cmp(a));
        for at in removed_at {
            entry.remove(at);
        }
        entry.extend(added.iter().cloned());
        // A removed mapping's allow element stays if another mapping goes to the same
        // container port: one such witness per removed mapping is enough.
        let witnesses: Vec<PortMappingSettings> =
            removed.iter().filter_map(|r| entry.iter().find(|a| a.protocol == r.protocol && a.internal_port == r.internal_port).cloned()).collect();
        if entry.is_empty() {
            self.mappings.remove(&id);
        }
        let keep = portmaps::kernel_form(&rec, &witnesses);
        self.program_mappings(&portmaps::kernel_form(&rec, &added), &portmaps::kernel_form(&rec, &removed), &keep).map(|()| None)
    }

    /// Attaches an endpoint to a compartment: commit, create the veth into it, configure,
    /// mark attached. All under the lock; see [`Engine::attach_begin`] for the staged form.
    pub(crate) async fn attach(&mut self, ep_id: &str, ns_id: &str) -> Result<()> {
        let Some(mut k) = self.attach_begin(ep_id, ns_id).await? else { return Ok(()) };
        let done = k.run().await;
        self.attach_end(k, done).await
    }

    /// The first step of an attach: checks, the record committed, the lease and the kernel
    /// handles in hand. `None`: attached there already. The endpoint and the compartment stay
    /// in flight (see `in_flight`) until [`Engine::attach_end`].
    pub(crate) async fn attach_begin(&mut self, ep_id: &str, ns_id: &str) -> Result<Option<KernelAttach>> {
        let current = self.endpoints[ep_id].ep.host_compute_namespace.clone();
        if current == ns_id {
            return Ok(None);
        }
        if !current.is_empty() {
            return Err(ApiError::new(
                ErrorCode::EndpointAlreadyAttached,
                format!("endpoint {ep_id} is already attached to namespace {current}; detach it first"),
            ));
        }
        let mut rec = self.endpoints[ep_id].clone();
        let ifname = self.ifname_in(&rec.requested_ifname, ns_id)?;
        Self::bind(&mut rec, ns_id, ifname);
        // Made durable during the kernel step (`KernelAttach::run`).
        self.persist_endpoint(&committed_attached(&rec), true)?;
        super::failpoint("attach-after-commit");
        self.endpoints.insert(ep_id.to_owned(), rec);
        match self.kernel_attach(ep_id, Undo::Unbind).await {
            Ok(k) => Ok(Some(k)),
            Err(e) => Err(self.undo_attach(ep_id, Undo::Unbind, e).await),
        }
    }

    /// The last step of an attach, with what the kernel step gave: "attached", or the attach
    /// undone (the record unbound, or the endpoint removed if it was created with it).
    pub async fn attach_end(&mut self, k: KernelAttach, done: Result<()>) -> Result<()> {
        super::failpoint("attach-after-kernel");
        self.in_flight.remove(&k.ep_id);
        self.in_flight.remove(&k.ns_id);
        self.idle.notify_waiters();
        let rec = self.endpoints.get(&k.ep_id).cloned();
        let finished = match (done, rec) {
            (Ok(()), Some(rec)) => Box::pin(self.finish_attach(rec, k.written)).await,
            (Ok(()), None) => Err(ApiError::internal(format!("endpoint {} vanished during its attach", k.ep_id))),
            (Err(e), Some(rec)) => {
                let _ = self.kernel_detach(&rec).await;
                Err(e)
            }
            (Err(e), None) => Err(e),
        };
        match finished {
            Ok(()) => Ok(()),
            Err(e) if self.endpoints.contains_key(&k.ep_id) => Err(self.undo_attach(&k.ep_id, k.undo, e).await),
            Err(e) => Err(e),
        }
    }

    /// Undoes the record of an attach that failed: unbound (the store says where things are if
    /// that cannot be written), or the endpoint removed when it was created attached.
    async fn undo_attach(&mut self, ep_id: &str, undo: Undo, e: ApiError) -> ApiError {
        match undo {
            Undo::DeleteEndpoint => {
                let _ = self.delete_local_endpoint(ep_id).await;
                e
            }
            Undo::Unbind => {
                let mut rec = self.endpoints[ep_id].clone();
                let mut ep = rec.ep_mut();
                let ns_id = std::mem::take(&mut ep.host_compute_namespace);
                ep.interface_name.clear();
                ep.state = state::CREATED;
                drop(ep);
                rec.lease = None;
                rec.lease6 = None;
                self.endpoints.insert(ep_id.to_owned(), rec.clone());
                // Written with this endpoint beside the kernel step.
                self.write_resolv_conf(&ns_id);
                let state = format!(
                    "{}; the attach was undone in the kernel, but the store still records endpoint {ep_id} as attached to namespace {ns_id}",
                    e.message
                );
                match self.persist_after(Kind::Endpoint, ep_id, &rec, false, &state) {
                    Ok(()) => e,
                    Err(store) => store,
                }
            }
        }
    }

    /// Records in `rec` that it lives in the compartment `ns_id` as `ifname`.
    fn bind(rec: &mut EndpointRecord, ns_id: &str, ifname: String) {
        let mut ep = rec.ep_mut();
        ep.host_compute_namespace = ns_id.to_owned();
        ep.interface_name = ifname;
        ep.version += 1;
    }

    /// What the kernel step of an attach needs, the lease obtained first; marks the endpoint
    /// and its compartment in flight.
    async fn kernel_attach(&mut self, ep_id: &str, undo: Undo) -> Result<KernelAttach> {
        // The disk syncs from here on, beside the rest; but with the failpoint that needs the
        // elements written while the commit is not yet durable, only after them.
        let disk = if super::failpoint_armed("attach-written-before-durable") { DiskSync::Later(self.store.clone()) } else { DiskSync::start(&self.store) };
        self.ensure_lease(ep_id).await?;
        mark("dhcp lease");
        let rec = self.endpoints[ep_id].clone();
        let plan = self.endpoint_plan(&rec).ok_or_else(|| ApiError::internal(format!("endpoint {ep_id} has an unusable record")));
        let ns_id = rec.ep.host_compute_namespace.clone();
        let compartment = plan.and_then(|p| Ok((p, self.compartment_handle(&ns_id).map_err(kernel_err)?)));
        let (plan, compartment) = match compartment {
            Ok(v) => v,
            Err(e) => {
                // The lease goes back.
                let _ = self.kernel_detach(&rec).await;
                return Err(e);
            }
        };
        mark("plan, compartment handle");
        // ACLs first (dispatch is by interface name): the first packet is already filtered.
        if let Err(e) = self.attach_acls(ep_id) {
            let _ = self.kernel_detach(&rec).await;
            return Err(e);
        }
        // OutBoundNAT too (dispatch is by source address).
        if let Err(e) = self.attach_policies_early(ep_id) {
            let _ = self.kernel_detach(&rec).await;
            return Err(e);
        }
        mark("acl, policies");
        // Beside the kernel step, from the state committed (see `step_writes`).
        let writes = StepWrites { elements: self.element_write(&self.kernel_mappings(&rec), &[]), resolv: self.resolv_file(&ns_id) };
        self.in_flight.insert(ep_id.to_owned());
        self.in_flight.insert(ns_id.clone());
        let net = self.networks[&rec.network_id].plan.clone();
        Ok(KernelAttach { ep_id: ep_id.to_owned(), ns_id, undo, host: self.host.clone(), net, plan, compartment, disk: Some(disk), writes: Some(writes), written: Default::default() })
    }

    /// After the kernel step: the mappings and resolv.conf unless written beside it (`written`),
    /// "attached", DNS names, DHCPv6.
    async fn finish_attach(&mut self, mut rec: EndpointRecord, written: StepWritesDone) -> Result<()> {
        let ep_id = rec.ep.id.clone();
        match written.elements {
            Some(Ok(())) => {}
            beside => {
                if let Some(Err(e)) = beside {
                    tracing::debug!(endpoint = ep_id, error = %e, "the mappings' elements were not written beside the attach; writing them now");
                }
                let mine = self.kernel_mappings(&rec);
                if let Err(e) = self.program_mappings(&mine, &[], &[]) {
                    let _ = self.kernel_detach(&rec).await;
                    return Err(e);
                }
                mark("nft elements");
            }
        }
        // Boxed: these futures nest in every attach and detach path (stack size).
        if let Err(e) = Box::pin(self.attach_policies_late(&rec)).await {
            let _ = self.kernel_detach(&rec).await;
            return Err(e);
        }
        // The store says "attached" since the commit (`committed_attached`).
        rec.ep_mut().state = state::ATTACHED;
        let ns_id = rec.ep.host_compute_namespace.clone();
        self.endpoints.insert(ep_id.clone(), rec);
        if !written.resolv {
            self.write_resolv_conf(&ns_id);
            mark("resolv.conf");
        }
        // Before the request returns: the name resolves the moment attach does.
        self.dns_refresh_for(&self.endpoints[&ep_id]);
        mark("dns names");
        self.start_lease6(&ep_id);
        Ok(())
    }

    /// The kernel part of an attach (also used by the reconciler).
    pub(crate) async fn apply_attach(&mut self, rec: &EndpointRecord) -> Result<()> {
        let plan = self.endpoint_plan(rec).ok_or_else(|| ApiError::internal(format!("endpoint {} has an unusable record", rec.ep.id)))?;
        let net_plan = self.networks[&rec.network_id].plan.clone();
        let host = self.host.clone();
        let c = self.compartment(&rec.ep.host_compute_namespace).map_err(kernel_err)?;
        mark("open compartment");
        hns_drivers::attach(&host, &net_plan, &plan, c).await.map_err(kernel_err)
    }

    /// Detaches an endpoint from its compartment, all under the lock; see
    /// [`Engine::detach_begin`] for the staged form.
    pub(crate) async fn detach(&mut self, ep_id: &str) -> Result<()> {
        let Some(mut k) = self.detach_begin(ep_id).await? else { return Ok(()) };
        let done = k.run().await;
        self.detach_end(k, done).await
    }

    /// The first step of a detach: the endpoint committed unbound, its names and the
    /// compartment's resolv.conf updated, its mappings, ACLs and policies out of the kernel;
    /// then the veth's step to run without the lock (`None`: the detach is done). The endpoint
    /// and the compartment stay in flight until [`Engine::detach_end`].
    pub(crate) async fn detach_begin(&mut self, ep_id: &str) -> Result<Option<KernelDetach>> {
        let mut rec = self.endpoints[ep_id].clone();
        let ns_id = rec.ep.host_compute_namespace.clone();
        if ns_id.is_empty() {
            return Err(ApiError::new(ErrorCode::EndpointNotAttached, format!("endpoint {ep_id} is not attached to any namespace")));
        }
        let attached = rec.clone();
        let mut ep = rec.ep_mut();
        ep.host_compute_namespace.clear();
        ep.interface_name.clear();
        drop(ep);
        if rec.lease.is_some() || rec.lease6.is_some() {
            // Off the LAN: the lease is released below, so its address is no longer ours.
            super::dhcp::forget_lease(&mut rec);
        }
        let mut ep = rec.ep_mut();
        ep.state = state::DETACHED;
        ep.version += 1;
        drop(ep);
        // Lazily, as a delete's (`delete_begin`): durable with the veth's step or below.
        self.persist_endpoint(&rec, true)?;
        super::failpoint("detach-after-commit");
        let disk = DiskSync::start(&self.store);
        self.endpoints.insert(ep_id.to_owned(), rec);
        self.dns_refresh_for(&attached);
        self.write_resolv_conf(&ns_id);
        match self.detach_prepare(&attached, true).await {
            Ok(Some(link)) => Ok(Some(self.detach_in_flight(&attached, false, link, disk))),
            other => {
                disk.wait().map_err(store_err)?;
                other?;
                self.restore_gateways(&ns_id).await;
                Ok(None)
            }
        }
    }

    /// After a detach, the remaining endpoints of the compartment take over the default route.
    /// Best effort: the detach itself succeeded; a failure here is logged.
    async fn restore_gateways(&mut self, ns_id: &str) {
        let plans: Vec<_> = self.endpoints.in_namespace(ns_id).filter_map(|e| self.endpoint_plan(e)).collect();
        if plans.is_empty() {
            return;
        }
        let c = match self.compartment(ns_id) {
            Ok(c) => c,
            Err(e) => return tracing::warn!(namespace = ns_id, error = %e, "could not restore the default route"),
        };
        for p in &plans {
            if let Err(e) = hns_drivers::ensure_gateways(p, c).await {
                tracing::warn!(namespace = ns_id, error = %e, "could not restore the default route");
            }
        }
    }

    /// Records that an attached endpoint's interface now lives in another compartment, named
    /// `ifname` there: its owner (Docker) moved it. Nothing in the kernel changes; from now on
    /// the reconciler and detach look for it there.
    pub async fn rebind_endpoint(&mut self, key: &str, ns_key: &str, ifname: &str) -> Result<()> {
        let id = self.endpoint_id(key)?;
        let ns_id = self.namespace_id(ns_key).ok_or_else(|| ApiError::new(ErrorCode::NamespaceNotFound, format!("no namespace with ID or name {ns_key:?}")))?;
        let mut rec = self.endpoints[&id].clone();
        if rec.ep.host_compute_namespace.is_empty() {
            return Err(ApiError::new(ErrorCode::EndpointNotAttached, format!("endpoint {id} is not attached to any namespace")));
        }
        let mut ep = rec.ep_mut();
        let old = std::mem::replace(&mut ep.host_compute_namespace, ns_id.clone());
        ep.interface_name = ifname.to_owned();
        ep.version += 1;
        drop(ep);
        self.persist_endpoint(&rec, false)?;
        let net_id = rec.network_id.clone();
        self.endpoints.insert(id.clone(), rec);
        self.dns_refresh(&net_id);
        self.write_resolv_conf(&old);
        self.write_resolv_conf(&ns_id);
        // The DHCPv6 client works from the interface: follow it (same DUID, same lease).
        self.leases6.remove(&id);
        self.start_lease6(&id);
        Ok(())
    }

    pub(crate) fn persist_endpoint(&self, rec: &EndpointRecord, lazy: bool) -> Result<()> {
        self.persist(Kind::Endpoint, &rec.ep.id, rec, lazy)
    }

    /// The name of an endpoint's interface in the compartment `ns_id`: `requested` (its
    /// `InterfaceName`) unless another endpoint there has it, else the lowest free `ethN`.
    fn ifname_in(&self, requested: &str, ns_id: &str) -> Result<String> {
        let there = || self.endpoints.in_namespace(ns_id);
        if requested.is_empty() {
            let used: Vec<&str> = there().map(|e| e.ep.interface_name.as_str()).collect();
            return Ok((0..).map(|i| format!("eth{i}")).find(|n| !used.contains(&n.as_str())).expect("unbounded"));
        }
        let holder = if requested == "lo" { Some("its loopback".to_owned()) } else { there().find(|e| e.ep.interface_name == requested).map(|e| describe_endpoint(&self.endpoints, &e.ep.id)) };
        match holder {
            None => Ok(requested.to_owned()),
            Some(h) => Err(ApiError::field(
                ErrorCode::InterfaceNameInUse,
                "InterfaceName",
                format!("InterfaceName {requested:?} is taken in namespace {ns_id} by {h}; choose another name, or leave InterfaceName empty for the next free ethN"),
            )),
        }
    }
}

/// An endpoint bound to a compartment as the attach commits it: "attached" at once. In memory
/// (and so in the API's views) it stays "created" until its kernel step is done; in the store,
/// a bound endpoint's veth is the reconciler's to make either way (a crash after the commit is
/// durable leaves the attach for the restart to finish), so a second write of the record after
/// the step would only change its state.
fn committed_attached(rec: &EndpointRecord) -> EndpointRecord {
    let mut stored = rec.clone();
    stored.ep_mut().state = state::ATTACHED;
    stored
}

/// "endpoint web (ID)" for messages about who holds something.
pub(crate) fn describe_endpoint(endpoints: &BTreeMap<String, EndpointRecord>, id: &str) -> String {
    match endpoints.get(id) {
        Some(r) if !r.ep.name.is_empty() => format!("endpoint {} ({id})", r.ep.name),
        _ => format!("endpoint {id}"),
    }
}
