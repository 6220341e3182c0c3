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
//! (well under a millisecond of kernel time) at any number of endpoints. A request's change is
//! written without the engine lock ([`KernelAcl`]); an attach's and a detach's are part of
//! their own steps. Writes of the whole tables stay under the lock, run through `blocking()`
//! so a large rebuild never stalls a tokio worker.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

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
        self.kernel_endpoints().filter_map(|r| self.acl_state(r)).filter(|s| !s.rules.is_empty()).collect()
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
        let states = self.all_acl_states();
        let mut b = Batch::new();
        nft_acl::build_all(&mut b, &states);
        super::blocking(|| nft_acl::apply(&b)).map_err(kernel_err)?;
        self.acl_tables.store(!states.is_empty(), Relaxed);
        Ok(())
    }

    /// Writes the ACL state of some endpoints (one transaction): only their objects change,
    /// unless the tables are missing, then everything is rebuilt. `before`: the state of the
    /// endpoints whose rules were programmed before this change, so their chains and maps
    /// are in place and only the map elements that differ are written (the kernel then has
    /// no table to validate); should the kernel not hold what `before` says, the batch fails
    /// as a whole and the endpoints are written in full.
    pub(crate) fn program_acls(&self, ids: &[String], before: &HashMap<String, EndpointAcl>) -> Result<()> {
        match self.acl_write(ids, before) {
            AclWrite::Nothing => Ok(()),
            AclWrite::Rebuild => self.rebuild_acls(),
            AclWrite::Endpoints(w) => match super::blocking(|| w.apply()) {
                Err(_) if !nft_acl::tables_present() => self.rebuild_acls(),
                r => r,
            },
        }
    }

    /// What [`program_acls`] writes, planned from the engine's state alone (`acl_tables` says
    /// whether the tables are there: no kernel read under the lock).
    fn acl_write(&self, ids: &[String], before: &HashMap<String, EndpointAcl>) -> AclWrite {
        let states: Vec<(&String, EndpointAcl)> = ids.iter().filter_map(|id| Some((id, self.acl_state(self.endpoints.get(id)?)?))).collect();
        if states.iter().all(|(_, s)| s.rules.is_empty()) && before.is_empty() {
            // Nothing was programmed for them, and nothing is wanted.
            return AclWrite::Nothing;
        }
        if !self.acl_tables.load(Relaxed) || !self.other_acl_state(None) {
            return AclWrite::Rebuild;
        }
        let endpoints = states.into_iter().map(|(id, s)| (before.get(id).cloned(), s)).collect();
        AclWrite::Endpoints(EndpointWrites { endpoints, diffs: !before.is_empty() })
    }

    /// Starts the kernel step of an ACL change committed (lazily) for the endpoints `ids`: the
    /// store's sync and the kernel write start here, so they run while the lock is released
    /// and the read model published. The endpoints stay in flight, so requests for them wait
    /// and the reconciler leaves them alone, until [`acl_end`](Self::acl_end). A rebuild of
    /// the whole tables (none there yet, or this is the first endpoint with rules) is written
    /// here, under the lock: it writes every endpoint's objects, and another change running
    /// meanwhile must not be overwritten.
    fn acl_begin(&mut self, ids: Vec<String>, before: &HashMap<String, EndpointAcl>, stored: &'static str) -> Result<KernelAcl> {
        super::failpoint("policy-after-commit");
        let disk = super::step_writes::DiskSync::start(&self.store);
        let durable = tokio::task::spawn_blocking(move || disk.wait());
        let (writes, written) = match self.acl_write(&ids, before) {
            AclWrite::Nothing => (None, Ok(())),
            AclWrite::Rebuild => (None, self.rebuild_acls()),
            AclWrite::Endpoints(w) => (Some(w), Ok(())),
        };
        self.in_flight.extend(ids.iter().cloned());
        Ok(KernelAcl { ids, task: tokio::spawn(kernel_step(durable, writes, written)), stored, tables_missing: false })
    }

    /// Ends an ACL change's kernel step: its endpoints are no longer in flight. Should the
    /// step have found the tables gone, they are written whole now, under the lock.
    pub fn acl_end(&mut self, k: &KernelAcl) -> Result<()> {
        for id in &k.ids {
            self.in_flight.remove(id);
        }
        self.idle.notify_waiters();
        if k.tables_missing {
            self.acl_tables.store(false, Relaxed);
            return self.rebuild_acls().map_err(|e| committed(e, k.stored));
        }
        Ok(())
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
        if state.rules.is_empty() || !self.acl_tables.load(Relaxed) {
            return Ok(());
        }
        let mut b = Batch::new();
        let others = self.other_acl_state(Some(&rec.ep.id));
        if others {
            nft_acl::build_remove(&mut b, &state.host_if, state.attach);
        } else {
            nft_acl::build_all(&mut b, &[]);
        }
        match super::blocking(|| nft_acl::apply(&b)) {
            Ok(()) => {
                self.acl_tables.store(others, Relaxed);
                Ok(())
            }
            // Nothing to take out: the tables are gone. The next change (or the reconciler)
            // writes them whole again.
            Err(_) if !nft_acl::tables_present() => {
                self.acl_tables.store(false, Relaxed);
                Ok(())
            }
            Err(e) => Err(kernel_err(e)),
        }
    }

    /// The ACL check: a deleted or flushed ACL table (or a dispatch rule gone from it) is
    /// rebuilt; otherwise only the endpoints whose objects differ are rewritten, and objects
    /// no endpoint wants are removed, so a restart with nothing drifted writes nothing.
    /// Every pass reads the names of what the tables hold and each endpoint's digest
    /// (`nft_acl::Inventory`: a few dumps), so a missing chain, map or dispatch element, or
    /// objects written from another state than the store's (a crash between the two), are
    /// found at once. What fails open is checked for every endpoint at start (`full`: each
    /// stage chain's rule count; a flushed chain lets traffic through); the map elements,
    /// whose loss fails closed and whose read costs a walk of the table's sets, are compared
    /// for a slice of the endpoints per pass, at a bounded cost under the lock. Returns
    /// whether anything was repaired.
    pub(crate) fn reconcile_acls(&self, full: bool) -> std::result::Result<bool, String> {
        let states = self.all_acl_states();
        if states.is_empty() {
            // Nothing to hold: only a leftover table is removed.
            if full && nft_acl::any_table_exists() {
                self.rebuild_acls().map_err(|e| e.message)?;
            }
            self.acl_tables.store(false, Relaxed);
            return Ok(false);
        }
        if !nft_acl::tables_present() || !nft_acl::skeleton_intact() {
            self.rebuild_acls().map_err(|e| e.message)?;
            return Ok(true);
        }
        self.acl_tables.store(true, Relaxed);
        let have = nft_acl::Inventory::read().map_err(|e| e.to_string())?;
        // Endpoints whose ACL change is in its kernel step (without the lock) are left to it.
        let busy: std::collections::HashSet<String> = self.in_flight.iter().filter_map(|id| self.endpoints.get(id)).filter_map(|r| self.acl_state(r)).map(|s| s.host_if).collect();
        let start = self.acl_check_from.fetch_add(ACL_RULE_CHECKS_PER_PASS, std::sync::atomic::Ordering::Relaxed) % states.len();
        let in_slice = |i: usize| (i + states.len() - start) % states.len() < ACL_RULE_CHECKS_PER_PASS;
        let drifted = |i: usize, s: &EndpointAcl| !have.matches(s) || (full && !nft_acl::chains_intact(s)) || (in_slice(i) && nft_acl::endpoint_drifted(s));
        let mut rewrite: Vec<&EndpointAcl> = states.iter().enumerate().filter(|(i, s)| !busy.contains(&s.host_if) && drifted(*i, s)).map(|(_, s)| s).collect();
        let mut b = Batch::new();
        for (host_if, attach) in have.unwanted(&states).into_iter().filter(|(h, _)| !busy.contains(h)) {
            // A wanted endpoint with an extra stage is written in full (which removes it).
            match states.iter().find(|s| s.host_if == host_if && s.attach == attach) {
                Some(s) if !rewrite.contains(&s) => rewrite.push(s),
                Some(_) => {}
                None => nft_acl::build_remove(&mut b, &host_if, attach),
            }
        }
        for s in &rewrite {
            nft_acl::build_endpoint(&mut b, s, Prior::Unknown);
        }
        if b.is_empty() {
            return Ok(false);
        }
        super::blocking(|| nft_acl::apply(&b)).map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// `ResourceType: Policy` with ACL policies on an endpoint: Add appends, Remove takes out
    /// the equal rule (or the one with the same `Id`), Update replaces the rule with the same
    /// `Id`. Stored first, then programmed.
    pub(crate) fn modify_endpoint_acls(&mut self, id: &str, kind: RequestType, given: &[Policy]) -> Result<Option<KernelAcl>> {
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
        self.persist_endpoint(&rec, true)?;
        self.endpoints.insert(id.to_owned(), rec);
        self.acl_begin(vec![id.to_owned()], &before, "the endpoint's ACLs are stored").map(Some)
    }

    /// The same for NetworkACL policies on a network; every attached endpoint of it is
    /// reprogrammed in one transaction.
    pub(crate) fn modify_network_acls(&mut self, net_id: &str, kind: RequestType, given: &[Policy]) -> Result<(HostComputeNetwork, Option<KernelAcl>)> {
        if let Some(i) = given.iter().position(|p| !policies::is_network_acl(p)) {
            return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("Settings.Policies[{i}].Type"), "send NetworkACL policies and other policies in separate requests"));
        }
        let wanted = policies::parse_network_acls(given, "Settings.Policies")?;
        let mut rec = self.networks[net_id].rec.clone();
        policies::check_network_takes_acls(rec.net.network_type(), true, "Settings.Policies")?;
        let current = self.network_acls(net_id);
        let next = apply_change(&current, kind, &wanted, &format!("network {net_id}"))?;
        let ids = self.endpoints_of_network(net_id);
        for id in &ids {
            let mut rules = next.clone();
            rules.extend(self.endpoints[id].acls.iter().cloned());
            nft_acl::check(&rules).map_err(|m| ApiError::field(ErrorCode::InvalidPolicy, "Settings.Policies", format!("with endpoint {id}'s own rules, {m}")))?;
        }
        let before = self.with_rules(&ids);
        rec.net.policies.retain(|p| !policies::is_network_acl(p));
        rec.net.policies.extend(next.iter().map(|r| policies::to_policy(NETWORK_ACL, r)));
        rec.net.version += 1;
        self.persist_network(&rec, true)?;
        self.networks.get_mut(net_id).expect("exists").rec = rec;
        let step = self.acl_begin(ids, &before, "the network's ACLs are stored")?;
        Ok((self.networks[net_id].rec.net.clone(), Some(step)))
    }
}

/// An ACL of an endpoint's view.
pub(crate) fn acl_policies(rec: &EndpointRecord) -> impl Iterator<Item = Policy> + '_ {
    rec.acls.iter().map(|r| policies::to_policy(ACL, r))
}

/// What an ACL write does (see [`Engine::program_acls`]).
enum AclWrite {
    Nothing,
    /// Both tables from scratch.
    Rebuild,
    /// Some endpoints' objects.
    Endpoints(EndpointWrites),
}

/// The ACL states to write for some endpoints, each with the state it was programmed with
/// before (if any). Compiling them into batches is pure work, done where the batch is applied
/// (without the engine lock, for a request's change: while the store syncs).
struct EndpointWrites {
    endpoints: Vec<(Option<EndpointAcl>, EndpointAcl)>,
    /// All of them were programmed: write the elements that differ first.
    diffs: bool,
}

impl EndpointWrites {
    /// One transaction: the elements that differ, when every endpoint's objects were in
    /// place; should the kernel not hold what that expects, the batch fails as a whole and the
    /// endpoints are written in full.
    fn apply(&self) -> Result<()> {
        let batch = |trust: bool| {
            let mut b = Batch::new();
            for (old, s) in &self.endpoints {
                match old {
                    Some(old) if trust && !s.rules.is_empty() && nft_acl::changeable(old, s) => nft_acl::build_change(&mut b, old, s),
                    _ => nft_acl::build_endpoint(&mut b, s, Prior::Unknown),
                }
            }
            b
        };
        if self.diffs {
            match nft_acl::apply(&batch(true)) {
                Ok(()) => return Ok(()),
                Err(e) => tracing::warn!("ACL elements could not be rewritten in place ({e}); writing the endpoints in full"),
            }
        }
        let full = batch(false);
        if full.is_empty() {
            return Ok(());
        }
        nft_acl::apply(&full).map_err(kernel_err)
    }
}

const IN_KERNEL_NOT_DURABLE: &str = "the change is in the kernel and in memory, and becomes durable with the next commit";

/// The kernel step of an ACL change (map elements, or its endpoints' objects in full), with all
/// it needs in hand so that it runs without the engine lock ([`Engine::acl_begin`]), while
/// the request's lazy commit becomes durable (as an attach's does): the reply waits for
/// both, and the disk's wait no longer adds to the kernel's. Both start when the change is
/// committed ([`Engine::acl_begin`]), so they also overlap the publishing of the read model
/// when the lock is released. A crash before the sync leaves
/// the store as before the request; the kernel may hold the new rules then, and the
/// restart's check (an endpoint digest that is not the store's, `nft_acl::Inventory`)
/// writes the stored ones back. Failpoints: `policy-after-commit` (nothing durable yet),
/// `policy-durable-before-kernel` (the store holds the change, the kernel does not);
/// `pause:acl-kernel:MS` holds the step (tests of what waits for it).
pub struct KernelAcl {
    pub(crate) ids: Vec<String>,
    task: tokio::task::JoinHandle<Outcome>,
    stored: &'static str,
    /// The step found the ACL tables gone: [`Engine::acl_end`] writes them whole.
    tables_missing: bool,
}

/// What a [`kernel_step`] did.
struct Outcome {
    kernel: Result<()>,
    durable: std::result::Result<(), hns_store::StoreError>,
    tables_missing: bool,
}

/// The work of a [`KernelAcl`], in a task of its own: waits for the store's sync, started
/// before it, and writes `writes` meanwhile (`written`: the result of what was written under
/// the lock instead, if anything).
async fn kernel_step(durable: tokio::task::JoinHandle<std::result::Result<(), hns_store::StoreError>>, writes: Option<EndpointWrites>, written: Result<()>) -> Outcome {
    let joined = |what: &str, e: tokio::task::JoinError| ApiError::internal(format!("the ACL change's {what} failed: {e}"));
    let durable = async { durable.await.map_err(|e| joined("store sync", e)) };
    if super::failpoint_armed("policy-durable-before-kernel") {
        let _ = durable.await;
        super::failpoint("policy-durable-before-kernel");
        return Outcome { kernel: Err(ApiError::internal("failpoint")), durable: Ok(()), tables_missing: false };
    }
    let kernel = async {
        super::pause_point("acl-kernel").await;
        let Some(w) = writes else { return (written, false) };
        tokio::task::spawn_blocking(move || match w.apply() {
            // Gone since the change was planned: `acl_end` writes them whole, under the lock.
            Err(_) if !nft_acl::tables_present() => (Ok(()), true),
            r => (r, false),
        })
        .await
        .unwrap_or_else(|e| (Err(joined("kernel step", e)), false))
    };
    let (durable, (kernel, tables_missing)) = tokio::join!(durable, kernel);
    match durable {
        Ok(durable) => Outcome { kernel, durable, tables_missing },
        Err(e) => Outcome { kernel: kernel.and(Err(e)), durable: Ok(()), tables_missing },
    }
}

impl KernelAcl {
    pub async fn run(&mut self) -> Result<()> {
        let out = (&mut self.task).await.map_err(|e| ApiError::internal(format!("the ACL change's kernel step failed: {e}")))?;
        self.tables_missing = out.tables_missing;
        let kernel = out.kernel.map_err(|e| committed(e, self.stored));
        out.durable.map_err(|e| super::store_err_after(e, IN_KERNEL_NOT_DURABLE)).and(kernel)
    }
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
