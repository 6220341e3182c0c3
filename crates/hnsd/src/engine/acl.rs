//! ACL policies on endpoints and networks: the effective rules of each endpoint (its own
//! `ACL`s merged with its network's `NetworkACL`s; the compiler orders them by priority), and
//! their programming into the ACL tables of [`hns_kernel::nft_acl`].
//!
//! Rules live in the store with their object (the endpoint record's `acls`, the network's
//! `Policies`), so a restart and the reconciler reprogram them. The kernel holds an endpoint's
//! chains only while it is attached; they are written before its veth exists (dispatch is by
//! name), so its first packet is already filtered.
//!
//! Every write is one nfnetlink batch (see `nft_acl`): an endpoint's update costs the same
//! (well under a millisecond of kernel time) at any number of endpoints, so it stays under
//! the engine lock, run through `blocking()` so a large rebuild never stalls a tokio worker.

use std::collections::HashMap;

use hns_api::{ApiError, ErrorCode, HostComputeNetwork, Policy, RequestType};
use hns_kernel::nft_acl::{self, Attach, EndpointAcl, Prior, Rule};
use hns_kernel::nft_batch::Batch;

use super::policies::{self, ACL, NETWORK_ACL};
use super::records::EndpointRecord;
use super::{Engine, Result, kernel_err};

/// Endpoints whose chains and map elements the periodic ACL check reads per pass (twelve
/// small dumps each, ~15 us apiece).
const ACL_RULE_CHECKS_PER_PASS: usize = 16;

impl Engine {
    /// Refuses endpoint rules that, merged with the network's, compile to more match boxes
    /// than one endpoint may hold (`nft_acl::check`).
    pub(crate) fn check_acl_boxes(&self, net_id: &str, own: &[Rule], field: &str) -> Result<()> {
        let mut rules = self.network_acls(net_id);
        rules.extend(own.iter().cloned());
        nft_acl::check(&rules).map_err(|m| ApiError::field(ErrorCode::InvalidPolicy, field, m))
    }

    /// The NetworkACL rules of a network (validated when they were stored).
    pub(crate) fn network_acls(&self, net_id: &str) -> Vec<Rule> {
        self.networks.get(net_id).map(|n| policies::parse_network_acls(&n.rec.net.policies, "Policies").unwrap_or_default()).unwrap_or_default()
    }

    fn acl_attach(&self, rec: &EndpointRecord) -> Option<Attach> {
        use hns_api::NetworkType as T;
        match self.networks.get(&rec.network_id)?.rec.net.network_type() {
            T::Transparent | T::L2Tunnel => None,
            T::L2Bridge => Some(Attach::Routed),
            _ => Some(Attach::BridgePort),
        }
    }

    /// The kernel ACL state of an attached endpoint (rules empty: it has none).
    pub(crate) fn acl_state(&self, rec: &EndpointRecord) -> Option<EndpointAcl> {
        if rec.ep.host_compute_namespace.is_empty() {
            return None;
        }
        let attach = self.acl_attach(rec)?;
        let plan = self.endpoint_plan(rec)?;
        let mut rules = self.network_acls(&rec.network_id);
        rules.extend(rec.acls.iter().cloned());
        Some(EndpointAcl { host_if: plan.host_if, attach, rules })
    }

    fn all_acl_states(&self) -> Vec<EndpointAcl> {
        self.endpoints.values().filter_map(|r| self.acl_state(r)).filter(|s| !s.rules.is_empty()).collect()
    }

    /// Whether an attached endpoint other than `except` has ACL rules. Stops at the first one
    /// (an endpoint with its own ACLs is found without parsing its network's), so a change at
    /// 1 000 endpoints does not compute every endpoint's rules as `all_acl_states` does.
    fn other_acl_state(&self, except: Option<&str>) -> bool {
        let eps = || self.endpoints.values().filter(|r| Some(r.ep.id.as_str()) != except);
        eps().filter(|r| !r.acls.is_empty()).chain(eps().filter(|r| r.acls.is_empty())).any(|r| self.acl_state(r).is_some_and(|s| !s.rules.is_empty()))
    }

    /// Rewrites the ACL tables from the records (one transaction); removes them when no
    /// endpoint has an ACL.
    pub(crate) fn rebuild_acls(&self) -> Result<()> {
        let mut b = Batch::new();
        nft_acl::build_all(&mut b, &self.all_acl_states());
        super::blocking(|| nft_acl::apply(&b)).map_err(kernel_err)
    }

    /// Writes the ACL state of some endpoints (one transaction): only their objects change,
    /// unless the tables are missing, then everything is rebuilt. `before`: the state of the
    /// endpoints whose rules were programmed before this change, so their chains and maps
    /// are in place and only the map elements that differ are written (the kernel then has
    /// no table to validate); should the kernel not hold what `before` says, the batch fails
    /// as a whole and the endpoints are written in full.
    pub(crate) fn program_acls(&self, ids: &[String], before: &HashMap<String, EndpointAcl>) -> Result<()> {
        let states: Vec<(&String, EndpointAcl)> = ids.iter().filter_map(|id| Some((id, self.acl_state(self.endpoints.get(id)?)?))).collect();
        let present = nft_acl::tables_present();
        if states.iter().all(|(_, s)| s.rules.is_empty()) && !present {
            return Ok(());
        }
        if !present || !self.other_acl_state(None) {
            return self.rebuild_acls();
        }
        let batch = |trust: bool| {
            let mut b = Batch::new();
            for (id, s) in &states {
                match before.get(*id) {
                    Some(old) if trust && !s.rules.is_empty() && old.host_if == s.host_if => nft_acl::build_change(&mut b, old, s),
                    _ => nft_acl::build_endpoint(&mut b, s, Prior::Unknown),
                }
            }
            b
        };
        let fast = batch(true);
        match super::blocking(|| nft_acl::apply(&fast)) {
            Err(e) if !before.is_empty() => {
                tracing::warn!("ACL elements could not be rewritten in place ({e}); writing the endpoints in full");
                let full = batch(false);
                super::blocking(|| nft_acl::apply(&full)).map_err(kernel_err)
            }
            r => r.map_err(kernel_err),
        }
    }

    /// The ACL state of the endpoints among `ids` whose rules are programmed now (see
    /// [`program_acls`]).
    fn with_rules(&self, ids: &[String]) -> HashMap<String, EndpointAcl> {
        ids.iter().filter_map(|id| Some((id.clone(), self.acl_state(self.endpoints.get(id)?)?))).filter(|(_, s)| !s.rules.is_empty()).collect()
    }

    /// At attach: writes the endpoint's chains if it has rules; an endpoint without any costs
    /// nothing (no kernel write).
    pub(crate) fn attach_acls(&self, ep_id: &str) -> Result<()> {
        match self.endpoints.get(ep_id).and_then(|r| self.acl_state(r)) {
            Some(s) if !s.rules.is_empty() => self.program_acls(&[ep_id.to_owned()], &Default::default()),
            _ => Ok(()),
        }
    }

    /// Takes a (detaching) endpoint's ACL out of the kernel. Endpoints without rules cost
    /// nothing.
    pub(crate) fn unprogram_acl(&self, rec: &EndpointRecord) -> Result<()> {
        let Some(state) = self.acl_state(rec) else { return Ok(()) };
        if state.rules.is_empty() || !nft_acl::tables_present() {
            return Ok(());
        }
        let mut b = Batch::new();
        let others = self.other_acl_state(Some(&rec.ep.id));
        if others {
            nft_acl::build_remove(&mut b, &state.host_if, state.attach);
        } else {
            nft_acl::build_all(&mut b, &[]);
        }
        super::blocking(|| nft_acl::apply(&b)).map_err(kernel_err)
    }

    /// The periodic check: a deleted or flushed ACL table is rebuilt; an endpoint whose chain
    /// went missing is rewritten (one dump of the chain names per table). Returns whether
    /// anything was repaired.
    pub(crate) fn reconcile_acls(&self, full: bool) -> std::result::Result<bool, String> {
        let states = self.all_acl_states();
        let wanted = !states.is_empty();
        if full && !wanted {
            // Nothing to hold: only a leftover table is removed, so a restart writes nothing.
            if nft_acl::any_table_exists() {
                self.rebuild_acls().map_err(|e| e.message)?;
            }
            return Ok(false);
        }
        if full || (wanted && !nft_acl::tables_present()) {
            self.rebuild_acls().map_err(|e| e.message)?;
            return Ok(wanted);
        }
        if !wanted {
            return Ok(false);
        }
        // Every endpoint's chains must exist (one dump of the chain names); the rules and map
        // elements of a slice of the endpoints are compared per pass, so a chain flushed by hand
        // (which lets the endpoint's traffic through) is found within a few passes at a bounded
        // cost under the lock (a dump of all rules took 80 ms at 1 000 x 10).
        let mut have = std::collections::HashSet::new();
        for attach in [Attach::BridgePort, Attach::Routed] {
            have.extend(nft_acl::chains(attach).map_err(|e| e.to_string())?);
        }
        let start = self.acl_check_from.fetch_add(ACL_RULE_CHECKS_PER_PASS, std::sync::atomic::Ordering::Relaxed) % states.len();
        let in_slice = |i: usize| (i + states.len() - start) % states.len() < ACL_RULE_CHECKS_PER_PASS;
        let mut broken = Vec::new();
        for (i, s) in states.iter().enumerate() {
            let missing = || nft_acl::wanted_chains(s).iter().any(|c| !have.contains(c));
            if missing() || (in_slice(i) && nft_acl::endpoint_drifted(s)) {
                broken.push(s);
            }
        }
        if broken.is_empty() {
            return Ok(false);
        }
        let mut b = Batch::new();
        for s in broken {
            nft_acl::build_endpoint(&mut b, s, Prior::Unknown);
        }
        super::blocking(|| nft_acl::apply(&b)).map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// `ResourceType: Policy` with ACL policies on an endpoint: Add appends, Remove takes out
    /// the equal rule (or the one with the same `Id`), Update replaces the rule with the same
    /// `Id`. Stored first, then programmed.
    pub(crate) fn modify_endpoint_acls(&mut self, id: &str, kind: RequestType, given: &[Policy]) -> Result<()> {
        if let Some(i) = given.iter().position(|p| !policies::is_acl(p)) {
            return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("Settings.Policies[{i}].Type"), "send ACL policies and other policies in separate requests"));
        }
        let wanted = policies::parse_endpoint_acls(given, "Settings.Policies")?;
        let mut rec = self.endpoints[id].clone();
        let kind_of_net = self.networks[&rec.network_id].rec.net.network_type();
        policies::check_network_takes_acls(kind_of_net, true, "Settings.Policies")?;
        rec.acls = apply_change(&rec.acls, kind, &wanted, &format!("endpoint {id}"))?;
        self.check_acl_boxes(&rec.network_id, &rec.acls, "Settings.Policies")?;
        let before = self.with_rules(&[id.to_owned()]);
        rec.ep_mut().version += 1;
        self.persist_endpoint(&rec, false)?;
        self.endpoints.insert(id.to_owned(), rec);
        super::failpoint("policy-after-commit");
        self.program_acls(&[id.to_owned()], &before).map_err(|e| committed(e, "the endpoint's ACLs are stored"))
    }

    /// The same for NetworkACL policies on a network; every attached endpoint of it is
    /// reprogrammed in one transaction.
    pub(crate) fn modify_network_acls(&mut self, net_id: &str, kind: RequestType, given: &[Policy]) -> Result<HostComputeNetwork> {
        if let Some(i) = given.iter().position(|p| !policies::is_network_acl(p)) {
            return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("Settings.Policies[{i}].Type"), "send NetworkACL policies and other policies in separate requests"));
        }
        let wanted = policies::parse_network_acls(given, "Settings.Policies")?;
        let mut rec = self.networks[net_id].rec.clone();
        policies::check_network_takes_acls(rec.net.network_type(), true, "Settings.Policies")?;
        let current = self.network_acls(net_id);
        let next = apply_change(&current, kind, &wanted, &format!("network {net_id}"))?;
        let ids: Vec<String> = self.endpoints.values().filter(|e| e.network_id == net_id).map(|e| e.ep.id.clone()).collect();
        for id in &ids {
            let mut rules = next.clone();
            rules.extend(self.endpoints[id].acls.iter().cloned());
            nft_acl::check(&rules).map_err(|m| ApiError::field(ErrorCode::InvalidPolicy, "Settings.Policies", format!("with endpoint {id}'s own rules, {m}")))?;
        }
        let before = self.with_rules(&ids);
        rec.net.policies.retain(|p| !policies::is_network_acl(p));
        rec.net.policies.extend(next.iter().map(|r| policies::to_policy(NETWORK_ACL, r)));
        rec.net.version += 1;
        self.persist_network(&rec, false)?;
        self.networks.get_mut(net_id).expect("exists").rec = rec;
        self.program_acls(&ids, &before).map_err(|e| committed(e, "the network's ACLs are stored"))?;
        Ok(self.networks[net_id].rec.net.clone())
    }
}

/// An ACL of an endpoint's view.
pub(crate) fn acl_policies(rec: &EndpointRecord) -> impl Iterator<Item = Policy> + '_ {
    rec.acls.iter().map(|r| policies::to_policy(ACL, r))
}

fn committed(e: ApiError, what: &str) -> ApiError {
    ApiError { message: format!("{}; {what} and the reconciler retries programming them", e.message), ..e }
}

/// The rule list after an Add, Remove or Update of `wanted`.
fn apply_change(current: &[Rule], kind: RequestType, wanted: &[Rule], owner: &str) -> Result<Vec<Rule>> {
    let mut next = current.to_vec();
    let not_found = |i: usize, what: String| ApiError::field(ErrorCode::PolicyNotFound, format!("Settings.Policies[{i}]"), format!("{owner} has no ACL {what}"));
    match kind {
        RequestType::Add => {
            for (i, w) in wanted.iter().enumerate() {
                if !w.id.is_empty() && next.iter().any(|r| r.id == w.id) {
                    return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("Settings.Policies[{i}].Settings.Id"), format!("{owner} already has an ACL with Id {:?}; use Update to change it", w.id)));
                }
                next.push(w.clone());
            }
        }
        RequestType::Remove => {
            for (i, w) in wanted.iter().enumerate() {
                let at = if w.id.is_empty() { next.iter().position(|r| r == w) } else { next.iter().position(|r| r.id == w.id) };
                let Some(at) = at else { return Err(not_found(i, if w.id.is_empty() { "equal to this one".into() } else { format!("with Id {:?}", w.id) })) };
                next.remove(at);
            }
        }
        RequestType::Update => {
            for (i, w) in wanted.iter().enumerate() {
                if w.id.is_empty() {
                    return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("Settings.Policies[{i}].Settings.Id"), "Update replaces the ACL with the same Id; give its Id"));
                }
                let Some(at) = next.iter().position(|r| r.id == w.id) else { return Err(not_found(i, format!("with Id {:?}", w.id))) };
                next[at] = w.clone();
            }
        }
        other => return Err(ApiError::field(ErrorCode::RequestUnsupported, "RequestType", format!("{other} of an ACL is not supported; use Add, Remove or Update"))),
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, prio: u16) -> Rule {
        policies::parse_acl(&serde_json::json!({"Id": id, "Action": "Allow", "Direction": "In", "Priority": prio}), "S").unwrap()
    }

    #[test]
    fn add_remove_update() {
        let cur = vec![rule("a", 1), rule("", 2)];
        let added = apply_change(&cur, RequestType::Add, &[rule("b", 3)], "e").unwrap();
        assert_eq!(added.len(), 3);
        assert_eq!(apply_change(&cur, RequestType::Add, &[rule("a", 9)], "e").unwrap_err().code, ErrorCode::InvalidPolicy);
        assert_eq!(apply_change(&cur, RequestType::Remove, &[rule("", 2)], "e").unwrap(), vec![rule("a", 1)]);
        assert_eq!(apply_change(&cur, RequestType::Remove, &[rule("a", 77)], "e").unwrap(), vec![rule("", 2)]);
        assert_eq!(apply_change(&cur, RequestType::Remove, &[rule("", 5)], "e").unwrap_err().code, ErrorCode::PolicyNotFound);
        assert_eq!(apply_change(&cur, RequestType::Update, &[rule("a", 7)], "e").unwrap()[0].priority, 7);
        assert_eq!(apply_change(&cur, RequestType::Update, &[rule("z", 7)], "e").unwrap_err().code, ErrorCode::PolicyNotFound);
    }
}
