//! Network requests: create, delete, modify, and the default `nat` network.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hns_api::{ApiError, ErrorCode, HostComputeNetwork, Ipam, IpamType, ModifyRequest, NetworkType, RequestType, ResourceType, Route, state};
use hns_ipam::{Pool, overlaps};
use hns_kernel::netlink::HostPrefix;
use hns_store::Kind;
use ipnet::IpNet;

use super::records::NetworkRecord;
use super::validate;
use super::{Engine, Net, Result, kernel_err, new_guid, norm_guid, store_err};

/// Name of the network the daemon creates at first start.
pub const DEFAULT_NETWORK: &str = "nat";
const META_DEFAULT_CREATED: &str = "default_network_created";

impl Engine {
    pub fn list_networks(&self) -> Vec<HostComputeNetwork> {
        self.networks.values().map(|n| n.rec.net.clone()).collect()
    }

    pub fn get_network(&self, key: &str) -> Result<HostComputeNetwork> {
        let id = self.network_id(key).ok_or_else(|| not_found(key))?;
        Ok(self.networks[&id].rec.net.clone())
    }

    /// Validates a network request into its canonical stored form and live state.
    /// `host`: the host's addresses and routes, which the subnet of a nat or overlay network
    /// must not overlap (and a chosen default subnet avoids).
    pub(super) fn validate_network(&self, mut req: HostComputeNetwork, host: &[HostPrefix], facts: &validate::HostFacts) -> Result<Net> {
        validate::check_name(&req.name, "Name", true)?;
        if self.networks.values().any(|n| n.rec.net.name == req.name) {
            return Err(ApiError::field(
                ErrorCode::NetworkAlreadyExists,
                "Name",
                format!("a network named {:?} already exists; choose another name or remove it first", req.name),
            ));
        }
        if req.id.is_empty() {
            // A fresh ID whose link names are taken (1 in 2^32 per network) is drawn again.
            req.id = std::iter::repeat_with(new_guid).find(|id| self.network_sharing_links(id).is_none()).expect("unbounded");
        } else {
            let id = norm_guid(&req.id)
                .ok_or_else(|| ApiError::field(ErrorCode::InvalidNetwork, "ID", format!("ID {:?} is not a GUID; leave it empty to let hns choose", req.id)))?;
            if self.networks.contains_key(&id) {
                return Err(ApiError::field(ErrorCode::NetworkAlreadyExists, "ID", format!("a network with ID {id} already exists")));
            }
            if let Some(other) = self.network_sharing_links(&id) {
                return Err(ApiError::field(
                    ErrorCode::NetworkAlreadyExists,
                    "ID",
                    format!(
                        "network ID {id} would share its kernel links with network {other} ({:?}): hns names a network's links after the first 8 hex digits of its ID ({}: bridge {}); choose an ID that differs from {other} in those digits, or leave ID empty",
                        self.networks[&other].rec.net.name,
                        hns_kernel::names::network_tag(&id),
                        hns_kernel::names::bridge_name(&id),
                    ),
                ));
            }
            req.id = id;
        }
        let kind = req.kind.unwrap_or(NetworkType::Nat);
        validate::check_network_type(kind)?;
        req.kind = Some(kind);
        let policies = validate::parse_network_policies(&req.policies, "Policies")?;
        super::policies::check_network_takes_acls(kind, !policies.acls.is_empty(), "Policies")?;
        let original_policies = req.policies.clone();
        if req.outbound_nat && kind != NetworkType::Overlay {
            return Err(ApiError::field(ErrorCode::InvalidNetwork, "OutboundNat", format!("OutboundNat is an option of overlay networks; a {kind} network is {}", if kind == NetworkType::Nat { "always masqueraded" } else { "never NATed by hns" })));
        }
        if policies.vxlan_port.is_some() && kind != NetworkType::Overlay {
            return Err(ApiError::field(ErrorCode::InvalidPolicy, policy_field(&req.policies, "VxlanPort"), format!("VxlanPort sets the VXLAN port of overlay networks; a {kind} network has none")));
        }
        let external = hns_drivers::is_external(kind);
        if external {
            if req.internal {
                return Err(ApiError::field(ErrorCode::InvalidNetwork, "Internal", format!("a {kind} network is bound to a host adapter, so it cannot be internal; use a nat network with --internal")));
            }
            if policies.automatic_dns == Some(true) {
                return Err(ApiError::field(
                    ErrorCode::InvalidPolicy,
                    policy_field(&req.policies, "AutomaticDNS"),
                    format!("service discovery is not offered on {kind} networks (as on Windows): their containers use the LAN's DNS; give servers with Dns.ServerList (-o com.docker.network.windowsshim.dnsservers=...)"),
                ));
            }
        } else if policies.adapters.is_some() {
            return Err(ApiError::field(
                ErrorCode::InvalidPolicy,
                policy_field(&req.policies, "NetAdapterName"),
                format!("{kind} networks use an internal switch, not a host adapter; NetAdapterName is for transparent, l2bridge and l2tunnel networks"),
            ));
        }
        // Canonical policies: AutomaticDNS as given, NetAdapterName once resolved (below).
        req.policies = policies
            .automatic_dns
            .map(|enable| hns_api::Policy { kind: "AutomaticDNS".into(), settings: serde_json::json!({ "Enable": enable }) })
            .into_iter()
            .chain(policies.acls.iter().map(|r| super::policies::to_policy(super::policies::NETWORK_ACL, r)))
            .collect();
        validate::unsupported("MacPool", req.mac_pool.as_ref().is_some_and(|p| !p.ranges.is_empty()))?;
        validate::check_flags(req.flags, "Flags")?;
        validate::unsupported("Health", !req.health.is_null())?;
        validate::unsupported("Telemetry", !req.telemetry.is_null())?;
        validate::check_dns(&req.dns, "Dns")?;
        let no_subnets = req.ipams.iter().all(|i| i.subnets.is_empty());
        let dhcp = kind == NetworkType::Transparent && (no_subnets || req.ipams.iter().any(|i| i.kind == IpamType::Dhcp));
        if dhcp {
            if let Some(i) = req.ipams.iter().position(|i| !i.subnets.is_empty()) {
                return Err(ApiError::field(
                    ErrorCode::InvalidSubnet,
                    format!("Ipams[{i}].Subnets"),
                    "a transparent network takes its addresses either from the LAN's DHCP server (no subnet) or statically (--subnet and --gateway), not both",
                ));
            }
            req.ipams = vec![Ipam { kind: IpamType::Dhcp, subnets: vec![] }];
        } else if external && no_subnets {
            return Err(ApiError::field(
                ErrorCode::InvalidSubnet,
                "Ipams",
                format!("{kind} networks take addresses of the host's LAN: give its --subnet and --gateway (DHCP is not supported with {kind}, as on Windows)"),
            ));
        }
        if no_subnets && !dhcp {
            if let Some(i) = req.ipams.iter().position(|i| i.kind == IpamType::Dhcp) {
                return Err(dhcp_refused(i, kind));
            }
            let subnet = self.pick_free_subnet(host)?;
            req.ipams = vec![Ipam { kind: IpamType::Static, subnets: vec![hns_api::Subnet { ip_address_prefix: subnet.to_string(), ..Default::default() }] }];
        }
        let mut pools: Vec<Pool> = Vec::new();
        let mut vlan = None;
        for (i, ipam) in req.ipams.iter_mut().enumerate() {
            if ipam.kind == IpamType::Dhcp && !dhcp {
                return Err(dhcp_refused(i, kind));
            }
            for (j, subnet) in ipam.subnets.iter_mut().enumerate() {
                let field = format!("Ipams[{i}].Subnets[{j}]");
                let plan = validate::parse_subnet(subnet, &field)?;
                validate::check_subnet_usable(&plan.spec.subnet, &subnet.ip_address_prefix, &field)?;
                if external && plan.gateway_route.is_none() {
                    return Err(ApiError::field(
                        ErrorCode::InvalidSubnet,
                        format!("{field}.Routes"),
                        format!("subnet {} of a {kind} network needs the LAN's gateway: give --gateway (a default route in Routes)", subnet.ip_address_prefix),
                    ));
                }
                if plan.vsid.is_some() && kind != NetworkType::Overlay {
                    return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("{field}.Policies"), format!("a VSID (VXLAN network identifier) applies to overlay networks, not to {kind}")));
                }
                if let Some(v) = plan.vlan {
                    if !external {
                        return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("{field}.Policies"), format!("VLAN isolation applies to networks on a host adapter (transparent, l2bridge, l2tunnel), not to {kind}")));
                    }
                    if vlan.is_some_and(|other| other != v) {
                        return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("{field}.Policies"), "all subnets of a network share one adapter, so they must have the same VLAN ID"));
                    }
                    vlan = Some(v);
                }
                let pool = Pool::new(&plan.spec).map_err(|e| validate::subnet_error(&plan, e))?;
                let prefix = pool.subnet();
                for other in &pools {
                    if overlaps(&prefix, &other.subnet()) {
                        return Err(ApiError::field(ErrorCode::InvalidSubnet, format!("{field}.IpAddressPrefix"), format!("subnet {prefix} overlaps subnet {} of the same request", other.subnet())));
                    }
                }
                for n in self.networks.values() {
                    for p in &n.pools {
                        if overlaps(&prefix, &p.subnet()) {
                            return Err(ApiError::field(
                                ErrorCode::SubnetInUse,
                                format!("{field}.IpAddressPrefix"),
                                format!("subnet {prefix} overlaps subnet {} of network {:?}; choose a free subnet", p.subnet(), n.rec.net.name),
                            ));
                        }
                    }
                }
                if !external {
                    validate::check_subnet_free_on_host(&prefix, &subnet.ip_address_prefix, &field, kind, host)?;
                }
                // Canonical form: the prefix normalised and the gateway spelled as the default route.
                subnet.ip_address_prefix = prefix.to_string();
                let default = if prefix.addr().is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                let route = Route { next_hop: pool.gateway().to_string(), destination_prefix: default.into(), metric: 0 };
                match plan.gateway_route {
                    Some(k) => subnet.routes[k] = Route { metric: subnet.routes[k].metric, ..route },
                    None => subnet.routes.push(route),
                }
                pools.push(pool);
            }
        }
        let subnets: Vec<IpNet> = pools.iter().map(|p| p.subnet()).collect();
        let host_routes = super::epolicies::parse_host_routes(&original_policies, "Policies", &subnets, &req.name)?;
        req.policies.extend(super::epolicies::host_route_policies(&original_policies, &host_routes));
        if external {
            let taken = self.adapters_in_use();
            let (adapters, _) = validate::external_uplink(kind, policies.adapters.as_deref(), vlan, &req.id, facts, &taken)
                .map_err(|e| if e.field.as_deref() == Some("Policies.NetAdapterName") { ApiError { field: Some(policy_field(&original_policies, "NetAdapterName")), ..e } } else { e })?;
            for subnet in req.ipams.iter_mut().flat_map(|i| i.subnets.iter_mut()) {
                validate::reserve_host_addresses(subnet, &adapters, facts);
            }
            req.policies.push(hns_api::Policy { kind: "NetAdapterName".into(), settings: serde_json::json!({ "NetworkAdapterName": adapters.join(",") }) });
        }
        req.schema_version = hns_api::SCHEMA_VERSION;
        req.state = state::CREATED;
        req.version = 1;
        req.interface_name = hns_kernel::names::bridge_name(&req.id);
        let cursors = pools.iter().map(|p| p.cursor()).collect();
        let net = Net::from_record(NetworkRecord { net: req, cursors, default: false }).map_err(ApiError::internal)?;
        self.refuse_clash_with_deleting(&net)?;
        Ok(net)
    }

    /// Adapter -> name of the external network it serves.
    /// The network whose kernel link names (bridge, VXLAN, bond, VLAN: all named after the
    /// first 8 hex digits of the ID) a network with ID `id` would take.
    fn network_sharing_links(&self, id: &str) -> Option<String> {
        let tag = hns_kernel::names::network_tag(id);
        self.networks.keys().find(|other| hns_kernel::names::network_tag(other) == tag).cloned()
    }

    fn adapters_in_use(&self) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        for n in self.networks.values() {
            if let Ok(p) = validate::parse_network_policies(&n.rec.net.policies, "Policies") {
                for a in p.adapters.unwrap_or_default() {
                    out.insert(a, n.rec.net.name.clone());
                }
            }
        }
        out
    }

    /// A reader of the host's addresses and routes alone, to read without the lock.
    pub fn host_prefix_reader(&self) -> HostReader {
        HostReader { host: self.host.clone(), external: false, features: BTreeMap::new() }
    }

    /// What a new network's validation will read of the host, to read without the lock.
    pub fn host_reader(&self, req: &HostComputeNetwork) -> HostReader {
        HostReader { host: self.host.clone(), external: req.kind.is_some_and(hns_drivers::is_external), features: self.kernel_features.clone() }
    }

    /// The first private /16 that overlaps nothing on the host or in another network.
    fn pick_free_subnet(&self, host: &[HostPrefix]) -> Result<IpNet> {
        let mut in_use: Vec<IpNet> = host.iter().map(|h| h.prefix).collect();
        in_use.extend(self.networks.values().chain(self.deleting.values()).flat_map(|n| n.pools.iter().map(|p| p.subnet())));
        hns_ipam::pick_default_subnet(&in_use).ok_or_else(|| {
            ApiError::field(ErrorCode::InvalidSubnet, "Ipams", "every private /16 candidate overlaps an address or route of this host; give a subnet explicitly")
        })
    }

    /// A free subnet for an IPAM client (the Docker plugin's `hns` IPAM), chosen as the default
    /// `nat` subnet is: the first private candidate that overlaps nothing on the host, no
    /// network, and none of `also_in_use` (pools handed out but not yet networks).
    /// `host`: [`Engine::host_prefix_reader`]'s reading.
    pub fn free_subnet(&self, v6: bool, also_in_use: &[IpNet], host: &[HostPrefix]) -> Result<IpNet> {
        let mut in_use: Vec<IpNet> = host.iter().map(|h| h.prefix).collect();
        in_use.extend(self.networks.values().chain(self.deleting.values()).flat_map(|n| n.pools.iter().map(|p| p.subnet())));
        in_use.extend_from_slice(also_in_use);
        let picked = if v6 { hns_ipam::pick_default_subnet_v6(&in_use) } else { hns_ipam::pick_default_subnet(&in_use) };
        picked.ok_or_else(|| ApiError::new(ErrorCode::InvalidSubnet, "every private candidate subnet overlaps an address, route or network of this host; give a subnet explicitly"))
    }

    /// The host's addresses and routes (see [`host_prefixes`]).
    pub(super) async fn host_prefixes(&self) -> Vec<HostPrefix> {
        host_prefixes(&self.host).await
    }

    /// The first step of a local driver's network create (see `cluster_hooks`): validated
    /// against `seen` (the host as [`HostReader::read`] found it just before), committed (state
    /// Creating), in memory, in flight until [`Engine::network_create_end`].
    pub async fn create_network_begin(&mut self, req: HostComputeNetwork, seen: HostSeen) -> Result<KernelNetwork> {
        let net = self.validate_network(req, &seen.prefixes, &seen.facts)?;
        self.network_commit(net, None).await
    }

    /// Creates a validated network, kernel step included, under the caller's lock.
    pub(super) async fn commit_new_network(&mut self, net: Net, meta: Option<&str>) -> Result<HostComputeNetwork> {
        let mut k = self.network_commit(net, meta).await?;
        let done = k.run(|| std::future::ready(self.nft_snapshot())).await;
        self.network_create_end(k, done).await
    }

    /// Commits a validated network (state Creating) before any kernel work, puts it in memory
    /// and in flight: requests for it wait ([`super::lock_when_idle`]) and the reconciler
    /// leaves it alone until [`Engine::network_create_end`].
    pub(super) async fn network_commit(&mut self, net: Net, meta: Option<&str>) -> Result<KernelNetwork> {
        let id = net.rec.net.id.clone();
        let mut txn = self.store.begin().map_err(store_err)?;
        txn.put(Kind::Network, &id, &net.rec).map_err(store_err)?;
        if let Some(key) = meta {
            txn.put(Kind::Meta, key, &true).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)?;
        super::failpoint("network-after-commit");
        let plan = net.plan.clone();
        self.networks.insert(id.clone(), net);
        // A new network has no endpoints: its responder's view is complete now.
        let listen = self.dns_listeners(&id);
        let responder = (!listen.is_empty()).then(|| (listen, self.dns_port, self.dns_view(&id)));
        let routes = self.host_routes_of(&id);
        self.in_flight.insert(id.clone());
        // Under the lock (tests of readers that must not wait for a writer).
        super::pause_point("network-commit").await;
        Ok(KernelNetwork { id, plan, routes, host: self.host.clone(), dns: self.dns.clone(), responder, dns_error: None })
    }

    /// The last step of a network create, under the lock: "ready", or (the kernel step failed
    /// and undid its links and routes) the network forgotten, the nft table without it, its
    /// record deleted.
    pub async fn network_create_end(&mut self, k: KernelNetwork, done: Result<()>) -> Result<HostComputeNetwork> {
        self.in_flight.remove(&k.id);
        self.idle.notify_waiters();
        let id = k.id;
        if let Err(e) = done {
            self.networks.remove(&id);
            let _ = self.apply_nft();
            if let Ok(mut txn) = self.store.begin() {
                let _ = txn.delete(Kind::Network, &id);
                let _ = txn.commit();
            }
            return Err(e);
        }
        match k.dns_error {
            Some(e) => {
                tracing::warn!(network = %id, error = %e, "the DNS responder could not start; the network works without service discovery");
                self.dns_errors.insert(id.clone(), e);
            }
            None => {
                self.dns_errors.remove(&id);
            }
        }
        let Some(net) = self.networks.get(&id) else { return Err(ApiError::internal(format!("network {id} vanished during its create"))) };
        let mut rec = net.rec.clone();
        rec.net.state = state::READY;
        let state = "the network exists (its bridge and firewall rules are in place) and is recorded, but its record still says it is being created";
        self.persist_after(Kind::Network, &id, &rec, false, state)?;
        self.networks.get_mut(&id).expect("checked above").rec = rec.clone();
        Ok(rec.net)
    }

    /// The networks being deleted (their kernel step running without the lock) that a create
    /// of `req` must wait for: same name, same link names, an overlapping subnet, or both on
    /// host adapters. A look ahead from the raw request; [`Engine::validate_network`] checks
    /// the validated network again.
    pub fn create_waits_for(&self, req: &HostComputeNetwork) -> Vec<String> {
        if self.deleting.is_empty() {
            return Vec::new();
        }
        let tag = norm_guid(&req.id).map(|id| hns_kernel::names::network_tag(&id));
        let prefixes: Vec<IpNet> = req.ipams.iter().flat_map(|i| i.subnets.iter()).filter_map(|s| s.ip_address_prefix.trim().parse().ok()).collect();
        let external = req.kind.is_some_and(hns_drivers::is_external);
        self.deleting
            .iter()
            .filter(|(id, n)| {
                n.rec.net.name == req.name
                    || tag.as_ref().is_some_and(|t| *t == hns_kernel::names::network_tag(id))
                    || n.pools.iter().any(|p| prefixes.iter().any(|q| overlaps(q, &p.subnet())))
                    || (external && hns_drivers::is_external(n.plan.kind))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Refuses a network that would take the name, links, subnets or adapter of a network
    /// whose delete is still in its kernel step (for callers that did not wait for it).
    fn refuse_clash_with_deleting(&self, net: &Net) -> Result<()> {
        let adapters = |n: &Net| validate::parse_network_policies(&n.rec.net.policies, "Policies").ok().and_then(|p| p.adapters).unwrap_or_default();
        let mine = adapters(net);
        for (id, d) in &self.deleting {
            let clash = d.rec.net.name == net.rec.net.name
                || hns_kernel::names::network_tag(id) == hns_kernel::names::network_tag(&net.rec.net.id)
                || d.pools.iter().any(|p| net.pools.iter().any(|q| overlaps(&p.subnet(), &q.subnet())))
                || adapters(d).iter().any(|a| mine.contains(a));
            if clash {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "network {:?} ({id}) is being removed and has the name, link names, a subnet or the adapter this network would take; try again when its removal is done",
                        d.rec.net.name
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn persist_network(&self, rec: &NetworkRecord, lazy: bool) -> Result<()> {
        self.persist(Kind::Network, &rec.net.id, rec, lazy)
    }

    /// The ID of the network `key` names, if it may be deleted: it has no endpoints and is not
    /// in its create's kernel step.
    pub(crate) fn deletable_network(&self, key: &str) -> Result<String> {
        let id = self.network_id(key).ok_or_else(|| not_found(key))?;
        let users: Vec<String> = self
            .endpoints
            .values()
            .filter(|e| e.network_id == id)
            .map(|e| if e.ep.name.is_empty() { e.ep.id.clone() } else { e.ep.name.clone() })
            .collect();
        if !users.is_empty() {
            let shown: Vec<&str> = users.iter().take(5).map(String::as_str).collect();
            return Err(ApiError::new(
                ErrorCode::EntityHasReferences,
                format!(
                    "network {:?} still has {} endpoint(s) ({}{}); disconnect or remove them first (hnsctl endpoint rm)",
                    self.networks[&id].rec.net.name,
                    users.len(),
                    shown.join(", "),
                    if users.len() > 5 { ", ..." } else { "" }
                ),
            ));
        }
        if self.in_flight.contains(&id) {
            // Only callers that took the lock without waiting for it (the API's wait).
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("network {:?} is being created; try again when its create is done", self.networks[&id].rec.net.name),
            ));
        }
        Ok(id)
    }

    /// Removes a network without endpoints from the store and the kernel, under the caller's
    /// lock.
    pub(super) async fn remove_network(&mut self, id: &str) -> Result<()> {
        let Some(mut k) = self.network_remove_begin(id)? else { return Ok(()) };
        let done = k.run(|| std::future::ready(self.nft_snapshot())).await;
        self.network_delete_end(k, done)
    }

    /// Deletes a network's record, takes it out of memory (into `deleting`) and puts it in
    /// flight; its kernel step is [`KernelNetworkDelete::run`]. `None`: the network is gone
    /// already (the cluster watch dropped it meanwhile).
    pub(crate) fn network_remove_begin(&mut self, id: &str) -> Result<Option<KernelNetworkDelete>> {
        let mut txn = self.store.begin().map_err(store_err)?;
        txn.delete(Kind::Network, id).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        // The store no longer has it: after a crash from here on, the reconciler removes the
        // rest (the links it does not know, the table without it).
        super::failpoint("network-delete-after-commit");
        let routes = self.host_routes_of(id);
        let Some(net) = self.networks.remove(id) else { return Ok(None) };
        self.dns_errors.remove(id);
        self.in_flight.insert(id.to_owned());
        let k = KernelNetworkDelete { id: id.to_owned(), plan: net.plan.clone(), routes, host: self.host.clone(), dns: self.dns.clone() };
        self.deleting.insert(id.to_owned(), net);
        Ok(Some(k))
    }

    /// The last step of a network delete, under the lock: the network no longer in flight.
    /// `done` is the kernel step's outcome (the record is gone either way: the reconciler
    /// removes what the step could not).
    pub fn network_delete_end(&mut self, k: KernelNetworkDelete, done: Result<()>) -> Result<()> {
        self.in_flight.remove(&k.id);
        self.deleting.remove(&k.id);
        self.idle.notify_waiters();
        done
    }

    /// `ResourceType: Policy` adds (Add, Update) or removes (Remove) network policies; the only
    /// one implemented is `AutomaticDNS`, which turns service discovery on or off.
    pub async fn modify_network(&mut self, key: &str, req: ModifyRequest) -> Result<(HostComputeNetwork, Option<super::acl::KernelAcl>)> {
        let id = self.network_id(key).ok_or_else(|| not_found(key))?;
        if req.resource_type != ResourceType::Policy {
            return Err(ApiError::field(
                ErrorCode::RequestUnsupported,
                "ResourceType",
                format!("modifying a network's {} is not supported yet; supported: Policy", req.resource_type),
            ));
        }
        let p: hns_api::PolicyRequest = hns_api::decode::from_value(req.settings, "Settings")?;
        if p.policies.iter().any(super::policies::is_network_acl) {
            return self.modify_network_acls(&id, req.request_type, &p.policies);
        }
        if let Some(i) = p.policies.iter().position(super::epolicies::is_host_route) {
            return Err(ApiError::field(
                ErrorCode::RequestUnsupported,
                format!("Settings.Policies[{i}].Type"),
                "HostRoute policies are set when a network is created and cannot be changed on an existing network yet; create the network again with the routes it needs",
            ));
        }
        let parsed = validate::parse_network_policies(&p.policies, "Settings.Policies")?;
        let mut rec = self.networks[&id].rec.clone();
        let kind = rec.net.network_type();
        if parsed.adapters.is_some() {
            return Err(ApiError::field(ErrorCode::RequestUnsupported, "Settings.Policies.NetAdapterName", "a network's adapter cannot change; create another network on the other adapter"));
        }
        if hns_drivers::is_external(kind) && parsed.automatic_dns == Some(true) && req.request_type != RequestType::Remove {
            return Err(ApiError::field(ErrorCode::InvalidPolicy, "Settings.Policies.AutomaticDNS", format!("service discovery is not offered on {kind} networks (as on Windows)")));
        }
        rec.net.policies.retain(|p| !p.kind.eq_ignore_ascii_case("AutomaticDNS"));
        match req.request_type {
            RequestType::Add | RequestType::Update => {
                if let Some(enable) = parsed.automatic_dns {
                    rec.net.policies.push(hns_api::Policy { kind: "AutomaticDNS".into(), settings: serde_json::json!({ "Enable": enable }) });
                }
            }
            RequestType::Remove => {}
            other => return Err(ApiError::field(ErrorCode::RequestUnsupported, "RequestType", format!("{other} of a network policy is not supported; use Add, Update or Remove"))),
        }
        rec.net.version += 1;
        self.persist_network(&rec, false)?;
        self.networks.get_mut(&id).expect("exists").rec = rec;
        self.dns_apply(&id).await;
        self.apply_nft()?;
        for ns in self.namespaces_on(&id) {
            self.write_resolv_conf(&ns);
        }
        Ok((self.networks[&id].rec.net.clone(), None))
    }

    /// The compartments with an endpoint on a network.
    pub(crate) fn namespaces_on(&self, net_id: &str) -> Vec<String> {
        let mut v: Vec<String> =
            self.endpoints.on_network(net_id).filter(|e| !e.ep.host_compute_namespace.is_empty()).map(|e| e.ep.host_compute_namespace.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Creates the default `nat` network once, at first start. If a user removed it, it stays
    /// removed (the store remembers it was created).
    pub async fn ensure_default_network(&mut self) -> Result<Option<HostComputeNetwork>> {
        if self.store.get::<bool>(Kind::Meta, META_DEFAULT_CREATED).map_err(store_err)?.unwrap_or(false) {
            return Ok(None);
        }
        if self.networks.values().any(|n| n.rec.net.name == DEFAULT_NETWORK) {
            return Ok(None);
        }
        let req = HostComputeNetwork { name: DEFAULT_NETWORK.into(), kind: Some(NetworkType::Nat), ..Default::default() };
        let host = self.host_prefixes().await;
        let mut net = self.validate_network(req, &host, &validate::HostFacts::default())?;
        net.rec.default = true;
        self.commit_new_network(net, Some(META_DEFAULT_CREATED)).await.map(Some)
    }
}

/// The JSON path of the first policy of a type (`Policies[i]`), or `Policies` if absent.
fn policy_field(policies: &[hns_api::Policy], kind: &str) -> String {
    match policies.iter().position(|p| p.kind.eq_ignore_ascii_case(kind)) {
        Some(i) => format!("Policies[{i}]"),
        None => "Policies".into(),
    }
}

pub(crate) fn not_found(key: &str) -> ApiError {
    ApiError::new(ErrorCode::NetworkNotFound, format!("no network with ID or name {key:?}; list them with `hnsctl network ls`"))
}

fn dhcp_refused(i: usize, kind: NetworkType) -> ApiError {
    let msg = match kind {
        NetworkType::L2Bridge | NetworkType::L2Tunnel => format!("DHCP is not supported with {kind} networks (as on Windows); give the LAN's --subnet and --gateway"),
        _ => format!("Dhcp addressing is only for transparent networks; {kind} networks use Static IPAM"),
    };
    ApiError::field(ErrorCode::InvalidNetwork, format!("Ipams[{i}].Type"), msg)
}

/// A network committed under the lock (state Creating) whose kernel step runs without it:
/// its links, the nft table (in its turn among the table's writes, see `nft_order`), its host
/// routes, its DNS responder. [`Engine::network_create_end`] finishes it under the lock.
pub struct KernelNetwork {
    id: String,
    plan: hns_drivers::NetworkPlan,
    routes: Vec<super::epolicies::RouteSpec>,
    host: hns_kernel::netlink::Netlink,
    dns: std::sync::Arc<hns_dns::DnsService>,
    /// The responder to start: its addresses, port and view.
    responder: Option<(Vec<IpAddr>, u16, hns_dns::NetworkView)>,
    /// Why the responder could not start (the network works without service discovery).
    dns_error: Option<String>,
}

/// Runs a full nft apply in its turn, on a thread that may block (an earlier turn may be a
/// network's kernel step's, running without the lock).
async fn apply_nft_in_turn(desired: hns_kernel::nft::Desired, turn: super::nft_order::NftTurn) -> Result<()> {
    tokio::task::spawn_blocking(move || super::apply_in_turn(&desired, turn))
        .await
        .map_err(|e| ApiError::internal(format!("the nft apply's task failed: {e}")))?
        .map_err(kernel_err)
}

/// A committed network's kernel step, run while the engine lock is free (taken briefly for the
/// nft table's snapshot), then its end under the lock: "ready", or undone.
pub(crate) async fn build_committed(engine: &super::EngineLock, mut k: KernelNetwork) -> Result<HostComputeNetwork> {
    let done = k.run(|| async { engine.lock().await.nft_snapshot() }).await;
    engine.lock().await.network_create_end(k, done).await
}

impl KernelNetwork {
    /// The kernel step. `nft` gives the desired nft table and its turn, taken under the lock
    /// right before the apply (a brief lock of its own when the caller does not hold it), so
    /// the table written holds every element written before and none is overwritten after.
    /// On a failure the links and routes are undone here; the caller's end step does the rest.
    pub async fn run<F: std::future::Future<Output = (hns_kernel::nft::Desired, super::nft_order::NftTurn)>>(&mut self, nft: impl FnOnce() -> F) -> Result<()> {
        super::pause_point("network-create").await;
        let applied = async {
            hns_drivers::create_network(&self.host, &self.plan).await.map_err(kernel_err)?;
            let (desired, turn) = nft().await;
            // Holding the turn: element writes meanwhile wait for this apply.
            super::pause_point("network-nft").await;
            apply_nft_in_turn(desired, turn).await?;
            for r in &self.routes {
                self.host.add_policy_route(r.destination, r.next_hop, None).await.map_err(kernel_err)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = applied {
            // Undo in reverse; the table without the network is the end step's.
            for r in &self.routes {
                let _ = self.host.del_policy_route(r.destination, r.next_hop).await;
            }
            let _ = hns_drivers::delete_network(&self.host, &self.plan).await;
            return Err(e);
        }
        if let Some((listen, port, view)) = self.responder.take()
            && let Err(e) = self.dns.set_network(&self.id, &listen, port, view).await
        {
            self.dns_error = Some(e.to_string());
        }
        Ok(())
    }
}

/// A network deleted from the store and from memory under the lock, whose kernel step (its
/// responder stopped, the nft table without it, its host routes and links removed) runs
/// without it. [`Engine::network_delete_end`] finishes it under the lock.
pub struct KernelNetworkDelete {
    id: String,
    plan: hns_drivers::NetworkPlan,
    routes: Vec<super::epolicies::RouteSpec>,
    host: hns_kernel::netlink::Netlink,
    dns: std::sync::Arc<hns_dns::DnsService>,
}

impl KernelNetworkDelete {
    /// The kernel step (`nft` as for [`KernelNetwork::run`]). Every part is tried; the first
    /// failure is reported (the record is gone: the reconciler removes what is left).
    pub async fn run<F: std::future::Future<Output = (hns_kernel::nft::Desired, super::nft_order::NftTurn)>>(&mut self, nft: impl FnOnce() -> F) -> Result<()> {
        super::pause_point("network-delete").await;
        self.dns.remove_network(&self.id).await;
        let (desired, turn) = nft().await;
        super::pause_point("network-nft").await;
        let nft = apply_nft_in_turn(desired, turn).await;
        let mut routes = Ok(());
        for r in &self.routes {
            if let Err(e) = self.host.del_policy_route(r.destination, r.next_hop).await {
                routes = Err(kernel_err(e));
                break;
            }
        }
        let link = hns_drivers::delete_network(&self.host, &self.plan).await.map_err(kernel_err);
        nft.and(routes).and(link)
    }
}

/// The host's addresses and routes. A failure to list them is not fatal (it does not happen in
/// practice: a dump of hnsd's own namespace): subnets are then checked and chosen knowing less
/// about the host, which is logged.
async fn host_prefixes(host: &hns_kernel::netlink::Netlink) -> Vec<HostPrefix> {
    host.host_prefixes().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not list the host's addresses and routes; new subnets are not checked against them");
        Vec::new()
    })
}

async fn host_facts(host: &hns_kernel::netlink::Netlink, features: BTreeMap<String, bool>) -> validate::HostFacts {
    let links = host.links().await.unwrap_or_default();
    let names: BTreeMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut addresses: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for (index, ip) in host.addresses().await.unwrap_or_default() {
        if let Some(name) = names.get(&index) {
            addresses.entry(name.clone()).or_default().push(ip);
        }
    }
    validate::HostFacts { links: links.into_iter().map(|l| l.name).collect(), default_link: host.default_route_link().await.ok().flatten(), features, addresses }
}

/// What a new network's validation needs to know of the host, read without the engine's lock:
/// its addresses and routes (to refuse or avoid an overlapping subnet) and, for an external
/// network, its links. Each is a dump of every address or route of the host namespace, whose
/// cost grows with its links (~0.4 s at 5 000 endpoints), and every request waited for it.
pub struct HostReader {
    host: hns_kernel::netlink::Netlink,
    external: bool,
    features: BTreeMap<String, bool>,
}

/// What [`HostReader::read`] found.
pub struct HostSeen {
    pub(crate) prefixes: Vec<HostPrefix>,
    facts: validate::HostFacts,
}

impl HostReader {
    pub async fn read(self) -> HostSeen {
        let prefixes = host_prefixes(&self.host).await;
        let facts = if self.external { host_facts(&self.host, self.features).await } else { validate::HostFacts::default() };
        HostSeen { prefixes, facts }
    }
}
