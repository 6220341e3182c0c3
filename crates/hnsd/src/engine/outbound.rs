//! The OutBoundNAT, SDNRoute, QOS and HostRoute policies in the kernel: what each attached
//! endpoint (and each network) should have, programmed at attach (and network create),
//! removed at detach and delete, repaired by the reconciler, and changed on a running
//! endpoint by `POST /endpoints/{id}` with `ResourceType: Policy`.
//!
//! - OutBoundNAT: the table `inet hns_onat` ([`hns_kernel::nft_outbound`]): an endpoint with
//!   the policy that attaches, detaches or has its policy modified is its own map elements
//!   (one nfnetlink batch); the table is rewritten whole (one transaction) when it is new,
//!   when the last such endpoint goes, or when the reconciler finds it drifted. Written before
//!   the endpoint's veth exists (dispatch is by source address), so its first packet is
//!   already NATed. On an overlay network closed to the outside the policy also brings the
//!   endpoint's default route (see [`Engine::sdn_routes`]).
//! - SDNRoute: routes in the compartment, part of the endpoint's kernel plan (so the attach
//!   adds them with its other routes); the reconciler re-adds a deleted one.
//! - QOS: tc caps on the host veth and the endpoint's IFB ([`hns_kernel::qos`]), set once the
//!   veth exists.
//! - HostRoute: routes in the host namespace, added with the network, removed with it.

use std::net::IpAddr;

use hns_api::{ApiError, ErrorCode, Policy, RequestType};
use hns_kernel::nft_outbound::{self, EndpointNat};
use hns_kernel::{names, qos};

use super::epolicies::{self, EndpointPolicies, RouteSpec};
use super::records::EndpointRecord;
use super::reconcile::Report;
use super::{Engine, Result, blocking, kernel_err};

impl Engine {
    fn onat_state(&self, rec: &EndpointRecord) -> Option<EndpointNat> {
        if rec.ep.host_compute_namespace.is_empty() || rec.policies.outbound_nat.is_empty() {
            return None;
        }
        let plan = self.endpoint_plan(rec)?;
        Some(EndpointNat { host_if: plan.host_if, addresses: plan.addresses.iter().map(|(ip, _)| *ip).collect(), policies: rec.policies.outbound_nat.clone() })
    }

    fn all_onat(&self, skip: Option<&str>) -> Vec<EndpointNat> {
        self.endpoints.values().filter(|r| Some(r.ep.id.as_str()) != skip).filter_map(|r| self.onat_state(r)).collect()
    }

    /// Rewrites the OutBoundNAT table from the records, leaving out endpoint `skip` (one that
    /// is going away).
    pub(crate) fn program_outbound_nat(&mut self, skip: Option<&str>) -> Result<()> {
        let eps = self.all_onat(skip);
        let program = nft_outbound::compile(&eps);
        // Unknown until the rewrite succeeds: a failed one leaves the next change to rewrite.
        self.onat = Default::default();
        blocking(|| nft_outbound::run(&program)).map_err(kernel_err)?;
        self.onat = nft_outbound::Applied::of(&eps);
        Ok(())
    }

    /// Endpoint `id`'s OutBoundNAT goes from `old` to `new` (attach: `None` to its state;
    /// detach: its state to `None`): its elements only, when the table holds what `onat`
    /// says and keeps some endpoint; else the whole table is rewritten.
    fn change_outbound_nat(&mut self, id: &str, old: Option<EndpointNat>, new: Option<EndpointNat>) -> Result<()> {
        if !self.onat.is_empty() {
            let mut next = self.onat.clone();
            match blocking(|| nft_outbound::update(&mut next, old.as_ref(), new.as_ref())) {
                Ok(()) if !next.is_empty() => {
                    self.onat = next;
                    return Ok(());
                }
                // The last endpoint went: the rewrite removes the table.
                Ok(()) => {}
                Err(e) => tracing::warn!(endpoint = id, error = %e, "incremental OutBoundNAT change failed; rewriting the table"),
            }
        }
        self.program_outbound_nat(if new.is_none() { Some(id) } else { None })
    }

    /// The kernel steps of an attach that need no veth: the endpoint's OutBoundNAT.
    pub(crate) fn attach_policies_early(&mut self, ep_id: &str) -> Result<()> {
        let Some(new) = self.endpoints.get(ep_id).and_then(|r| self.onat_state(r)) else { return Ok(()) };
        self.change_outbound_nat(ep_id, None, Some(new))
    }

    /// The kernel steps of an attach once the veth exists: the QOS caps.
    pub(crate) async fn attach_policies_late(&self, rec: &EndpointRecord) -> Result<()> {
        let Some(q) = rec.policies.qos else { return Ok(()) };
        let host_if = names::veth_host_name(&rec.ep.id);
        let ifb = names::ifb_name(&rec.ep.id);
        if q.outgoing.is_some() {
            self.host.ensure_ifb(&ifb).await.map_err(kernel_err)?;
        }
        blocking(|| qos::apply(&host_if, &ifb, q.outgoing, q.incoming)).map_err(kernel_err)
    }

    /// Takes a (detaching or deleted) endpoint's policies out of the kernel: its OutBoundNAT
    /// elements and chains, its IFB. (Its SDN routes and tc qdiscs go with its veth.)
    pub(crate) async fn detach_policies(&mut self, rec: &EndpointRecord) -> Result<()> {
        if !rec.policies.outbound_nat.is_empty() {
            match self.onat_state(rec) {
                Some(old) => self.change_outbound_nat(&rec.ep.id, Some(old), None)?,
                // Its addresses are not known from this record: rewrite without it.
                None => self.program_outbound_nat(Some(&rec.ep.id))?,
            }
        }
        if rec.policies.qos.is_some_and(|q| q.outgoing.is_some()) {
            self.host.delete_link(&names::ifb_name(&rec.ep.id)).await.map_err(kernel_err)?;
        }
        Ok(())
    }

    /// The SDN routes of an endpoint as kernel routes (destination, next hop): a NeedEncap
    /// route goes through the overlay network's gateway of its family.
    ///
    /// On an overlay network closed to the outside, an OutBoundNAT policy is what opens the
    /// way out, so it brings the default route of its family through the network's gateway.
    pub(crate) fn sdn_routes(&self, rec: &EndpointRecord) -> Vec<(ipnet::IpNet, Option<IpAddr>)> {
        let Some(net) = self.networks.get(&rec.network_id) else { return Vec::new() };
        let gateway = |v6: bool| net.plan.subnets.iter().map(|(_, g)| *g).find(|g| g.is_ipv6() == v6);
        let mut routes: Vec<_> = rec
            .policies
            .sdn_routes
            .iter()
            .map(|r| (r.destination, if r.need_encap { gateway(r.destination.addr().is_ipv6()) } else { r.next_hop }))
            .collect();
        if !hns_drivers::routes_out(&net.plan) {
            for n in &rec.policies.outbound_nat {
                let any = if n.ipv6 { ipnet::IpNet::V6(Default::default()) } else { ipnet::IpNet::V4(Default::default()) };
                if let Some(gw) = gateway(n.ipv6) && !routes.iter().any(|(d, _)| *d == any) {
                    routes.push((any, Some(gw)));
                }
            }
        }
        routes
    }

    /// The IFB links the store says should exist (for the reconciler's link list).
    pub(crate) fn qos_links(&self) -> Vec<String> {
        self.endpoints
            .values()
            .filter(|e| !e.ep.host_compute_namespace.is_empty() && e.policies.qos.is_some_and(|q| q.outgoing.is_some()))
            .map(|e| names::ifb_name(&e.ep.id))
            .collect()
    }

    /// The HostRoutes of a network (validated when stored).
    fn host_routes(&self, net_id: &str) -> Vec<RouteSpec> {
        self.networks.get(net_id).map(|n| epolicies::parse_host_routes(&n.rec.net.policies, "Policies", &[], "").unwrap_or_default()).unwrap_or_default()
    }

    /// The HostRoutes of a network, before it is removed from memory.
    pub(crate) fn host_routes_of(&self, net_id: &str) -> Vec<RouteSpec> {
        self.host_routes(net_id)
    }

    /// The periodic check: the OutBoundNAT table compared by content, every attached
    /// endpoint's QOS caps and SDN routes, every network's HostRoutes; what differs is
    /// rewritten. An object whose attach is in flight is left to it.
    pub(crate) async fn reconcile_policies(&mut self, r: &mut Report) {
        let eps = self.all_onat(None);
        match blocking(|| nft_outbound::matches(&eps)) {
            Ok(true) => self.onat = nft_outbound::Applied::of(&eps),
            Ok(false) => match self.program_outbound_nat(None) {
                Ok(()) if !eps.is_empty() => r.repaired.push(format!("nft table inet {} rewritten from the store", nft_outbound::ONAT_TABLE)),
                Ok(()) => {}
                Err(e) => r.errors.push(e.message),
            },
            Err(e) => r.errors.push(e.to_string()),
        }
        let attached: Vec<EndpointRecord> = self
            .endpoints
            .values()
            .filter(|e| !e.ep.host_compute_namespace.is_empty() && !self.in_flight.contains(&e.ep.id) && !self.in_flight.contains(&e.ep.host_compute_namespace))
            .filter(|e| e.policies.qos.is_some() || !e.policies.sdn_routes.is_empty())
            .cloned()
            .collect();
        for rec in attached {
            let id = rec.ep.id.clone();
            if let Some(q) = rec.policies.qos {
                let host_if = names::veth_host_name(&id);
                let ifb = names::ifb_name(&id);
                let present = self.host.link_by_name(&host_if).await.ok().flatten().is_some();
                if present && !blocking(|| qos::matches(&host_if, &ifb, q.outgoing, q.incoming)) {
                    match self.attach_policies_late(&rec).await {
                        Ok(()) => r.repaired.push(format!("endpoint {id}: QOS caps restored on {host_if}")),
                        Err(e) => r.errors.push(format!("endpoint {id}: {}", e.message)),
                    }
                }
            }
            let routes = self.sdn_routes(&rec);
            if routes.is_empty() {
                continue;
            }
            let ifname = rec.ep.interface_name.clone();
            let Ok(c) = self.compartment(&rec.ep.host_compute_namespace) else { continue };
            let Ok(Some(link)) = c.netlink.link_by_name(&ifname).await else { continue };
            for (dest, via) in routes {
                if c.netlink.has_policy_route(dest, via).await.unwrap_or(true) {
                    continue;
                }
                match c.netlink.add_policy_route(dest, via, Some(link.index)).await {
                    Ok(()) => r.repaired.push(format!("endpoint {id}: SDN route {dest} restored in its compartment")),
                    Err(e) => r.errors.push(format!("endpoint {id}: {e}")),
                }
            }
        }
        // A network in its create's kernel step adds its routes itself.
        let nets: Vec<String> = self.networks.keys().filter(|id| !self.in_flight.contains(*id)).cloned().collect();
        for n in nets {
            for route in self.host_routes(&n) {
                if self.host.has_policy_route(route.destination, route.next_hop).await.unwrap_or(true) {
                    continue;
                }
                match self.host.add_policy_route(route.destination, route.next_hop, None).await {
                    Ok(()) => r.repaired.push(format!("network {n}: host route {} restored", route.destination)),
                    Err(e) => r.errors.push(format!("network {n}: {e}")),
                }
            }
        }
    }

    /// `ResourceType: Policy` with OutBoundNAT, SDNRoute or QOS policies on an endpoint: Add
    /// (refused if the endpoint has one of that key: an OutBoundNAT of the family, a route to
    /// the prefix, a QOS), Remove (by the same key), Update (replaces the one with that key).
    /// Stored first, then the kernel follows.
    pub(crate) async fn modify_endpoint_policies(&mut self, id: &str, kind: RequestType, given: &[Policy]) -> Result<()> {
        if let Some(i) = given.iter().position(|p| !epolicies::is_endpoint_kind(p)) {
            return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("Settings.Policies[{i}].Type"), "send OutBoundNAT, SDNRoute and QOS policies apart from other policies"));
        }
        let mut rec = self.endpoints[id].clone();
        let (net_kind, subnets, net_name) = {
            let n = &self.networks[&rec.network_id];
            (n.rec.net.network_type(), n.plan.subnets.iter().map(|(s, _)| *s).collect::<Vec<_>>(), n.rec.net.name.clone())
        };
        let wanted = epolicies::parse_endpoint(given, "Settings.Policies", net_kind, &subnets, &net_name)?;
        let before = rec.policies.clone();
        rec.policies = apply_change(&before, kind, &wanted, id)?.normalized();
        rec.ep_mut().version += 1;
        self.persist_endpoint(&rec, false)?;
        self.endpoints.insert(id.to_owned(), rec.clone());
        if rec.ep.host_compute_namespace.is_empty() {
            return Ok(());
        }
        super::failpoint("policy-after-commit");
        let committed = |e: ApiError| ApiError { message: format!("{}; the endpoint's policies are stored and the reconciler retries programming them", e.message), ..e };
        if before.outbound_nat != rec.policies.outbound_nat {
            // Only this endpoint's elements (and a policy chain that comes or goes).
            let old = self.onat_state(&rec.with_policies(before.clone()));
            let new = self.onat_state(&rec);
            self.change_outbound_nat(id, old, new).map_err(committed)?;
        }
        if before.qos != rec.policies.qos {
            let host_if = names::veth_host_name(id);
            let ifb = names::ifb_name(id);
            match rec.policies.qos {
                Some(_) => self.attach_policies_late(&rec).await.map_err(committed)?,
                None => blocking(|| qos::apply(&host_if, &ifb, None, None)).map_err(kernel_err).map_err(committed)?,
            }
            if rec.policies.qos.is_none_or(|q| q.outgoing.is_none()) {
                self.host.delete_link(&ifb).await.map_err(kernel_err).map_err(committed)?;
            }
        }
        let old = self.sdn_routes(&rec.with_policies(before.clone()));
        let new = self.sdn_routes(&rec);
        if old != new {
            let ifname = rec.ep.interface_name.clone();
            let c = self.compartment(&rec.ep.host_compute_namespace).map_err(kernel_err)?;
            for (dest, via) in old.iter().filter(|o| !new.contains(o)) {
                c.netlink.del_policy_route(*dest, *via).await.map_err(kernel_err).map_err(committed)?;
            }
            let index = c.netlink.link_by_name(&ifname).await.map_err(kernel_err)?.map(|l| l.index);
            for (dest, via) in new.iter().filter(|n| !old.contains(n)) {
                c.netlink.add_policy_route(*dest, *via, index).await.map_err(kernel_err).map_err(committed)?;
            }
        }
        Ok(())
    }
}

/// The endpoint's policies after an Add, Remove or Update of `wanted`.
fn apply_change(current: &EndpointPolicies, kind: RequestType, wanted: &EndpointPolicies, id: &str) -> Result<EndpointPolicies> {
    let mut next = current.clone();
    let has = |what: String| ApiError::field(ErrorCode::InvalidPolicy, "Settings.Policies", format!("endpoint {id} already has {what}; use Update to change it"));
    let missing = |what: String| ApiError::field(ErrorCode::PolicyNotFound, "Settings.Policies", format!("endpoint {id} has no {what}"));
    let fam = |v6: bool| if v6 { "IPv6" } else { "IPv4" };
    match kind {
        RequestType::Add | RequestType::Update => {
            let add = kind == RequestType::Add;
            for n in &wanted.outbound_nat {
                match (next.outbound_nat.iter().position(|o| o.ipv6 == n.ipv6), add) {
                    (Some(_), true) => return Err(has(format!("an {} OutBoundNAT policy", fam(n.ipv6)))),
                    (Some(at), false) => next.outbound_nat[at] = n.clone(),
                    (None, true) => next.outbound_nat.push(n.clone()),
                    (None, false) => return Err(missing(format!("{} OutBoundNAT policy to update", fam(n.ipv6)))),
                }
            }
            for r in &wanted.sdn_routes {
                match (next.sdn_routes.iter().position(|o| o.destination == r.destination), add) {
                    (Some(_), true) => return Err(has(format!("an SDNRoute to {}", r.destination))),
                    (Some(at), false) => next.sdn_routes[at] = r.clone(),
                    (None, true) => next.sdn_routes.push(r.clone()),
                    (None, false) => return Err(missing(format!("SDNRoute to {} to update", r.destination))),
                }
            }
            if let Some(q) = wanted.qos {
                match (next.qos.is_some(), add) {
                    (true, true) => return Err(has("a QOS policy".into())),
                    (false, false) => return Err(missing("QOS policy to update".into())),
                    _ => next.qos = Some(q),
                }
            }
        }
        RequestType::Remove => {
            for n in &wanted.outbound_nat {
                let at = next.outbound_nat.iter().position(|o| o.ipv6 == n.ipv6).ok_or_else(|| missing(format!("{} OutBoundNAT policy", fam(n.ipv6))))?;
                next.outbound_nat.remove(at);
            }
            for r in &wanted.sdn_routes {
                let at = next.sdn_routes.iter().position(|o| o.destination == r.destination).ok_or_else(|| missing(format!("SDNRoute to {}", r.destination)))?;
                next.sdn_routes.remove(at);
            }
            if wanted.qos.is_some() {
                if next.qos.is_none() {
                    return Err(missing("QOS policy".into()));
                }
                next.qos = None;
            }
        }
        other => return Err(ApiError::field(ErrorCode::RequestUnsupported, "RequestType", format!("{other} of a policy is not supported; use Add, Remove or Update"))),
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hns_api::NetworkType;

    fn parse(v: serde_json::Value) -> EndpointPolicies {
        let ps: Vec<Policy> = serde_json::from_value(v).unwrap();
        epolicies::parse_endpoint(&ps, "P", NetworkType::L2Bridge, &["10.77.2.0/24".parse().unwrap()], "n").unwrap()
    }

    #[test]
    fn add_remove_update() {
        let cur = parse(serde_json::json!([{"Type": "OutBoundNAT", "Settings": {}}]));
        let q = parse(serde_json::json!([{"Type": "QOS", "Settings": {"MaximumOutgoingBandwidthInBytes": 100000}}]));
        let added = apply_change(&cur, RequestType::Add, &q, "e").unwrap();
        assert_eq!((added.outbound_nat.len(), added.qos.is_some()), (1, true));
        assert_eq!(apply_change(&added, RequestType::Add, &q, "e").unwrap_err().code, ErrorCode::InvalidPolicy);
        let vip = parse(serde_json::json!([{"Type": "OutBoundNAT", "Settings": {"VirtualIP": "10.77.2.9"}}]));
        assert_eq!(apply_change(&added, RequestType::Update, &vip, "e").unwrap().outbound_nat[0].virtual_ip, Some("10.77.2.9".parse().unwrap()));
        let removed = apply_change(&added, RequestType::Remove, &q, "e").unwrap();
        assert_eq!(removed, cur);
        let route = parse(serde_json::json!([{"Type": "SDNRoute", "Settings": {"DestinationPrefix": "10.50.0.0/16", "NextHop": "10.77.2.1"}}]));
        assert_eq!(apply_change(&cur, RequestType::Remove, &route, "e").unwrap_err().code, ErrorCode::PolicyNotFound);
        assert_eq!(apply_change(&cur, RequestType::Update, &q, "e").unwrap_err().code, ErrorCode::PolicyNotFound);
    }
}
