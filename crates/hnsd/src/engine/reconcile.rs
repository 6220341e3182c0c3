//! The reconciler: makes the kernel match the store. Runs at start (after a crash, a
//! restart or a reboot) and periodically (a deleted bridge or veth, a flushed nft table).
//!
//! It (1) garbage-collects compartments that are gone, with their endpoints and addresses (a
//! compartment whose bind mount was removed while its recorded process still runs is mounted
//! again instead); (2) re-applies every network, the nft table and every attachment,
//! idempotently: missing links, host veths set down, default routes deleted inside a
//! compartment; (3) removes hns-owned kernel objects the store does not know. Ownership is
//! hns's device group ([`names::HNS_GROUP`]), never a name alone, so a user's link that looks
//! like an hns one is left alone. Retired links belong to the reaper, not to this pass.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use hns_api::state;
use hns_kernel::{names, netns, nft};
use hns_store::Kind;

use super::Engine;

/// What one pass did, for logs and `hnsctl info`.
#[derive(Debug, Default)]
pub struct Report {
    pub repaired: Vec<String>,
    pub removed: Vec<String>,
    pub collected: Vec<String>,
    pub errors: Vec<String>,
}

impl Engine {
    /// One pass. `full` (at start) compares the whole nft table, elements included, and
    /// rewrites it if it differs: after a crash the store may hold elements the kernel never
    /// got, and the periodic check only compares the table's shape (reading 10 000 elements
    /// back every 10 s would cost more).
    pub async fn reconcile(&mut self, full: bool) -> Report {
        let mut r = Report::default();
        // Where a pass spends its time, logged for the start-up pass (restart at scale, E1.4).
        let mut stages: Vec<(&str, std::time::Duration)> = Vec::new();
        let mut t = std::time::Instant::now();
        let mut lap = |name: &'static str, stages: &mut Vec<(&str, std::time::Duration)>| {
            stages.push((name, t.elapsed()));
            t = std::time::Instant::now();
        };
        self.host_resolv_conf = super::read_host_resolv_conf();
        self.reconcile_namespaces_of(None, &mut r).await;
        lap("namespaces", &mut stages);
        // One dump of the host's links serves the whole start-up pass: at thousands of veths a
        // dump takes the kernel ~0.5 s (it looks up each veth's peer namespace ID among all of
        // them). Nothing else changes links before the pass ends (no request is served yet);
        // a bridge the networks step re-creates is looked up by name.
        let links = if full {
            match self.host.links().await {
                Ok(l) => Some(l),
                Err(e) => {
                    r.errors.push(e.to_string());
                    None
                }
            }
        } else {
            None
        };
        if let Some(links) = &links {
            self.mark_store_links(links, &mut r).await;
        }
        self.reconcile_networks(&mut r).await;
        lap("networks", &mut stages);
        if full {
            if let Err(e) = nft::template_shape() {
                tracing::warn!("the nft drift check cannot compare rule content, only notice a flushed or deleted table: {e}");
            }
            // Rewritten only when it differs: a restart with nothing drifted writes nothing.
            match nft::matches_exactly(&self.desired_nft()) {
                Ok(true) => {}
                Ok(false) | Err(_) => match self.apply_nft() {
                    Ok(()) => r.repaired.push(format!("nft table inet {} rewritten (it differed from the store)", names::NFT_TABLE)),
                    Err(e) => r.errors.push(e.message),
                },
            }
        }
        self.reconcile_nft(&mut r);
        lap("nft", &mut stages);
        // At start every endpoint's ACL objects are compared with the store and only what
        // differs is written, so a restart with nothing drifted writes nothing
        // (tests/restart_scale.rs).
        match self.reconcile_acls(full) {
            Ok(true) => r.repaired.push("ACL objects that differed from the store (rewritten)".into()),
            Ok(_) => {}
            Err(e) => r.errors.push(e),
        }
        match self.reconcile_lbs(full) {
            Ok(Some(done)) => r.repaired.push(done),
            Ok(None) => {}
            Err(e) => r.errors.push(e),
        }
        match self.reconcile_direct_routes().await {
            Ok(done) => r.repaired.extend(done),
            Err(e) => r.errors.push(e),
        }
        lap("acl+lb", &mut stages);
        // The start-up pass checks what the host holds; the default routes inside every
        // compartment (one namespace entry and route dump each: ~1 ms, seconds at thousands)
        // are left to the periodic pass that runs right after start without the lock
        // (engine::periodic), so a restart is ready in time proportional to the host's state.
        self.reconcile_links(links, &mut r, !full).await;
        lap("links", &mut stages);
        Box::pin(self.reconcile_policies(&mut r)).await;
        lap("policies", &mut stages);
        self.reconcile_clusters(&mut r).await;
        self.reconcile_leases(&mut r.errors, &mut r.repaired).await;
        self.reconcile_leases6();
        self.remove_orphan_files(&mut r);
        lap("cluster+leases+files", &mut stages);
        if full {
            let text: Vec<String> = stages.iter().map(|(n, d)| format!("{n} {:.1} ms", d.as_secs_f64() * 1000.0)).collect();
            tracing::info!(endpoints = self.endpoints.len(), stages = %text.join(", "), "start-up reconcile");
        }
        self.last_reconcile = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        r
    }

    /// The namespaces step for the compartments in `only` (all when `None`).
    pub(crate) async fn reconcile_namespaces_of(&mut self, only: Option<&HashSet<String>>, r: &mut Report) {
        // A compartment an attach is working in (without the lock) is left to it this pass.
        let ids: Vec<String> = self.namespaces.keys().filter(|id| !self.in_flight.contains(*id) && only.is_none_or(|o| o.contains(*id))).cloned().collect();
        for id in ids {
            let rec = self.namespaces[&id].rec.clone();
            let path = Path::new(&rec.ns.net_ns_path);
            let current = netns::identity(path).ok();
            let gone = match (rec.managed, current) {
                // Committed but the daemon died before creating it: create it now.
                (true, None) if rec.ns.state == state::CREATED => {
                    match self.apply_namespace(&id).await {
                        Ok(()) => {
                            let mut rec = self.namespaces[&id].rec.clone();
                            rec.ns_mut().state = state::READY;
                            let _ = self.persist_namespace(&rec, true);
                            self.namespaces.get_mut(&id).expect("exists").rec = rec;
                            r.repaired.push(format!("namespace {id}: created"));
                        }
                        Err(e) => r.errors.push(format!("namespace {id}: {}", e.message)),
                    }
                    false
                }
                // Its bind mount is gone: /run was emptied (reboot) or someone removed it. If
                // its recorded process still runs in it, the compartment is alive: mount it
                // again from there.
                (true, None) => match self.remount_from_pid(&rec) {
                    Some(pid) => {
                        r.repaired.push(format!("namespace {id}: {} mounted again from process {pid}", rec.ns.net_ns_path));
                        false
                    }
                    None => true,
                },
                (_, Some(cur)) if rec.identity.is_some_and(|known| known != cur) => true,
                (_, Some(cur)) => {
                    if rec.ns.state != state::READY || rec.identity.is_none() {
                        let mut rec = rec.clone();
                        rec.ns_mut().state = state::READY;
                        rec.identity = Some(cur);
                        let _ = self.persist_namespace(&rec, true);
                        self.namespaces.get_mut(&id).expect("exists").rec = rec;
                    }
                    false
                }
                // An adopted namespace whose path vanished: its process exited.
                (false, None) => true,
            };
            if gone {
                self.collect_namespace(&id, r);
            }
        }
    }

    /// Mounts a managed compartment's namespace on its path again from the process recorded in
    /// it (`Container Add`), if that process still runs in the very namespace it was created
    /// as (a reused PID names another one). Returns the PID on success.
    fn remount_from_pid(&self, rec: &super::records::NamespaceRecord) -> Option<u32> {
        let known = rec.identity?;
        let pid = rec.ns.pid;
        if pid == 0 {
            return None;
        }
        let source = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
        if netns::identity(&source).ok()? != known {
            return None;
        }
        match netns::mount_at(&source, Path::new(&rec.ns.net_ns_path)) {
            Ok(id) if id == known => Some(pid),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(namespace = %rec.ns.id, error = %e, "could not mount the compartment again");
                None
            }
        }
    }

    /// Forgets a compartment that no longer exists, with its endpoints and their addresses.
    fn collect_namespace(&mut self, id: &str, r: &mut Report) {
        let eps: Vec<String> = self.endpoints.in_namespace(id).map(|e| e.ep.id.clone()).collect();
        let mut nets: Vec<String> = self.endpoints.in_namespace(id).map(|e| e.network_id.clone()).collect();
        nets.sort();
        nets.dedup();
        // Their port mappings leave the kernel with them.
        let stale: Vec<hns_kernel::nft::Mapping> = eps.iter().filter_map(|e| self.endpoints.get(e)).flat_map(|r| self.kernel_mappings(r)).collect();
        let committed = (|| {
            let mut txn = self.store.begin()?;
            txn.delete(Kind::Namespace, id)?;
            for e in &eps {
                txn.delete(Kind::Endpoint, e)?;
                for m in self.mappings_of(e) {
                    txn.delete(Kind::PortMapping, &super::portmaps::record_key(e, m))?;
                }
            }
            txn.commit()
        })();
        if let Err(e) = committed {
            r.errors.push(format!("namespace {id}: {e}"));
            return;
        }
        for e in &eps {
            if let Some(rec) = self.endpoints.remove(e) {
                if let Some(net) = self.networks.get_mut(&rec.network_id) {
                    net.release_endpoint(&rec);
                }
                let maps = self.mappings.remove(e).unwrap_or_default();
                self.release_ports(e, &maps);
            }
        }
        if let Some(ns) = self.namespaces.remove(id)
            && ns.rec.managed
        {
            let _ = netns::remove(Path::new(&ns.rec.ns.net_ns_path));
        }
        let _ = std::fs::remove_dir_all(self.cfg.resolv_dir().join(id));
        for n in &nets {
            self.dns_refresh(n);
        }
        if let Err(e) = self.program_mappings(&[], &stale, &[]) {
            r.errors.push(format!("namespace {id}: {}", e.message));
        }
        // Endpoints of cluster networks among them are withdrawn by the next cluster sync.
        self.cluster_endpoints_collected(&eps);
        r.collected.push(format!("namespace {id} is gone; removed it and {} endpoint(s)", eps.len()));
    }

    pub(crate) async fn reconcile_networks(&mut self, r: &mut Report) {
        // A network whose create is in its kernel step (without the lock) is left to it.
        let ids: Vec<String> = self.networks.keys().filter(|id| !self.in_flight.contains(*id)).cloned().collect();
        for id in ids {
            let ensured = ensure_network_links(&self.host, &self.networks[&id].plan).await;
            // Starts the responder at daemon start; afterwards only refreshes its view (and
            // the upstreams, should the host's resolv.conf have changed).
            self.network_checked(&id, ensured, true, r).await;
        }
    }

    /// The end of a network's check, under the lock: what [`ensure_network_links`] found, the
    /// responder (re)started when `dns` says so, the network marked ready.
    pub(crate) async fn network_checked(&mut self, id: &str, ensured: Result<bool, String>, dns: bool, r: &mut Report) {
        match ensured {
            Err(e) => {
                r.errors.push(format!("network {id}: {e}"));
                return;
            }
            Ok(false) => r.repaired.push(format!("network {id}: link {} re-created", self.networks[id].plan.bridge)),
            Ok(true) => {}
        }
        if dns {
            self.dns_apply(id).await;
        }
        if self.networks[id].rec.net.state != state::READY {
            let mut rec = self.networks[id].rec.clone();
            rec.net.state = state::READY;
            let _ = self.persist_network(&rec, true);
            self.networks.get_mut(id).expect("exists").rec = rec;
        }
    }

    pub(crate) fn reconcile_nft(&mut self, r: &mut Report) {
        let (desired, turn) = self.nft_snapshot();
        match nft::observe() {
            Ok(o) if !nft::drifted(&desired, &o) => {}
            Ok(_) => match super::blocking(|| super::apply_in_turn(&desired, turn)) {
                Ok(()) => r.repaired.push(format!("nft table inet {} re-applied", names::NFT_TABLE)),
                Err(e) => r.errors.push(e.to_string()),
            },
            Err(e) => r.errors.push(e.to_string()),
        }
    }

    /// The host links the store says hns should have: network links, uplink links, and the
    /// host ends of attached endpoints.
    pub(crate) fn wanted_links(&self) -> HashSet<String> {
        let mut wanted = self.wanted_network_links();
        wanted.extend(self.endpoints.values().filter_map(|e| self.wanted_veth(e)));
        wanted
    }

    /// [`Engine::wanted_links`] but the endpoints' host ends.
    pub(crate) fn wanted_network_links(&self) -> HashSet<String> {
        let mut wanted: HashSet<String> = HashSet::new();
        for n in self.networks.values() {
            wanted.extend(hns_drivers::network_links(&n.plan).into_iter().map(str::to_owned));
            for step in n.plan.uplink.iter().flat_map(|u| u.steps.iter()) {
                let (hns_kernel::uplink::UplinkStep::Bond { name, .. } | hns_kernel::uplink::UplinkStep::Vlan { name, .. }) = step;
                wanted.insert(name.clone());
            }
        }
        wanted.extend(self.qos_links());
        wanted
    }

    /// The host end an endpoint wants: when it is attached, or in flight (an endpoint in a
    /// detach's veth step is unbound already, and the veth is that step's to retire).
    pub(crate) fn wanted_veth(&self, e: &super::records::EndpointRecord) -> Option<String> {
        let bound = !e.ep.host_compute_namespace.is_empty() || self.in_flight.contains(&e.ep.id);
        (bound && self.networks.get(&e.network_id).is_some_and(|n| hns_drivers::has_host_veth(n.plan.kind))).then(|| names::veth_host_name(&e.ep.id))
    }

    /// The upgrade path (at start only): links an hnsd from before link marks created carry no
    /// mark; those the store names (and only those, in the default group 0) are marked now.
    /// Unmarked links the store does not name are never touched.
    async fn mark_store_links(&mut self, links: &[hns_kernel::netlink::LinkInfo], r: &mut Report) {
        let wanted = self.wanted_links();
        for l in links.iter().filter(|l| l.group == 0 && wanted.contains(&l.name)) {
            match self.host.mark_as_hns(l.index).await {
                Ok(()) => r.repaired.push(format!("link {}: marked as hns's (made before hns marked its links)", l.name)),
                Err(e) => r.errors.push(e.to_string()),
            }
        }
    }

    async fn reconcile_links(&mut self, links: Option<Vec<hns_kernel::netlink::LinkInfo>>, r: &mut Report, routes: bool) {
        self.reconcile_links_of(None, links, routes, r).await
    }

    /// The links step for the attached endpoints in `only` (all when `None`), checked against
    /// the store as it is now: an endpoint deleted or detached since `only` was drawn up is
    /// skipped. Orphans and retired links are handled only in a pass over all (`None`).
    /// With `routes`, each compartment's default routes are checked and restored too.
    /// `links`: a dump of the host's links taken in this pass, else one is taken.
    pub(crate) async fn reconcile_links_of(&mut self, only: Option<&HashSet<String>>, links: Option<Vec<hns_kernel::netlink::LinkInfo>>, routes: bool, r: &mut Report) {
        let links = match links {
            Some(l) => l,
            None => match self.host.links().await {
                Ok(l) => l,
                Err(e) => {
                    r.errors.push(e.to_string());
                    return;
                }
            },
        };
        let by_name: HashMap<&str, &hns_kernel::netlink::LinkInfo> = links.iter().map(|l| (l.name.as_str(), l)).collect();
        let wanted = self.wanted_links();
        // An endpoint in its attach's kernel step (without the lock) is left to it this pass.
        let attached: Vec<_> = self
            .endpoints
            .values()
            .filter(|e| !e.ep.host_compute_namespace.is_empty() && !self.in_flight.contains(&e.ep.id) && only.is_none_or(|o| o.contains(&e.ep.id)))
            .cloned()
            .collect();
        for rec in attached {
            let Some(net) = self.networks.get(&rec.network_id) else { continue };
            let kind = net.plan.kind;
            if !hns_drivers::has_host_veth(kind) {
                // A macvlan lives only inside the compartment: look for it there.
                let ifname = rec.ep.interface_name.clone();
                let present = match self.compartment(&rec.ep.host_compute_namespace) {
                    Ok(c) => c.netlink.link_by_name(&ifname).await.ok().flatten().is_some(),
                    Err(_) => true, // a vanished compartment is collected, not repaired
                };
                if !present {
                    match self.apply_attach(&rec).await {
                        Ok(()) => r.repaired.push(format!("endpoint {}: {ifname} re-created", rec.ep.id)),
                        Err(e) => r.errors.push(format!("endpoint {}: {}", rec.ep.id, e.message)),
                    }
                }
            } else {
                let host_if = names::veth_host_name(&rec.ep.id);
                let bridge = if hns_drivers::veth_on_bridge(kind) {
                    match by_name.get(net.plan.bridge.as_str()).map(|l| l.index) {
                        Some(b) => Some(b),
                        None => self.host.link_by_name(&net.plan.bridge).await.ok().flatten().map(|l| l.index),
                    }
                } else {
                    None
                };
                let bridge_name = net.plan.bridge.clone();
                match by_name.get(host_if.as_str()) {
                    None => match self.apply_attach(&rec).await {
                        Ok(()) => r.repaired.push(format!("endpoint {}: veth re-created", rec.ep.id)),
                        Err(e) => r.errors.push(format!("endpoint {}: {}", rec.ep.id, e.message)),
                    },
                    Some(l) => {
                        if l.master != bridge
                            && let Some(b) = bridge
                        {
                            match self.host.set_master(&host_if, b).await {
                                Ok(()) => r.repaired.push(format!("endpoint {}: {host_if} re-attached to {bridge_name}", rec.ep.id)),
                                Err(e) => r.errors.push(e.to_string()),
                            }
                        }
                        if !l.up {
                            match self.host.set_up(&host_if).await {
                                Ok(()) => r.repaired.push(format!("endpoint {}: {host_if} was down; brought it up", rec.ep.id)),
                                Err(e) => r.errors.push(e.to_string()),
                            }
                        }
                    }
                }
            }
            if routes {
                self.reconcile_default_route(&rec, r).await;
            }
            if rec.ep.state != state::ATTACHED {
                let mut rec = rec.clone();
                rec.ep_mut().state = state::ATTACHED;
                let _ = self.persist_endpoint(&rec, true);
                self.endpoints.insert(rec.ep.id.clone(), rec);
            }
        }
        if only.is_some() {
            return;
        }
        // Retired links are the reaper's (a detach queued them a moment ago, or a previous hnsd
        // died before deleting them): hand them over instead of racing it.
        if let Some(l) = links.iter().find(|l| l.group == names::RETIRED_GROUP && names::has_hns_name(&l.name)) {
            self.reap(l.name.clone());
        }
        for l in links.iter().filter(|l| l.group == names::HNS_GROUP && names::has_hns_name(&l.name) && !wanted.contains(&l.name)) {
            match self.host.delete_link(&l.name).await {
                Ok(()) => r.removed.push(format!("link {}", l.name)),
                Err(e) => r.errors.push(e.to_string()),
            }
        }
    }

    /// Puts back the default route of an attached endpoint's compartment if someone deleted it
    /// (a compartment with another default route of that family keeps it).
    async fn reconcile_default_route(&mut self, rec: &super::records::EndpointRecord, r: &mut Report) {
        let Some(plan) = self.endpoint_plan(rec) else { return };
        if plan.gateways.is_empty() {
            return;
        }
        let ns = rec.ep.host_compute_namespace.clone();
        let Ok(c) = self.compartment(&ns) else { return }; // a vanished compartment is collected
        match hns_drivers::ensure_gateways(&plan, c).await {
            Ok(added) => {
                for gw in added {
                    r.repaired.push(format!("endpoint {}: default route via {gw} restored in namespace {ns}", rec.ep.id));
                }
            }
            Err(e) => r.errors.push(format!("endpoint {}: {e}", rec.ep.id)),
        }
    }

    /// Namespace files and resolv.conf directories under the run dir that no compartment owns.
    pub(crate) fn remove_orphan_files(&mut self, r: &mut Report) {
        let listed = namespace_files(&self.cfg.netns_dir(), &self.cfg.resolv_dir());
        self.remove_orphan_files_of(listed, r);
    }

    /// Removes the files of [`namespace_files`] (listed before the lock was taken) that no
    /// compartment has now.
    pub(crate) fn remove_orphan_files_of(&mut self, listed: Vec<NamespaceFile>, r: &mut Report) {
        // A compartment being deleted is its delete's to clean up (its record is gone already).
        for f in listed.into_iter().filter(|f| !self.namespaces.contains_key(&f.name) && !self.in_flight.contains(&f.name)) {
            let result = if f.mount { netns::remove(&f.path).map_err(|e| e.to_string()) } else { std::fs::remove_dir_all(&f.path).map_err(|e| e.to_string()) };
            match result {
                Ok(()) => r.removed.push(f.path.display().to_string()),
                // Its compartment's delete removed it meanwhile.
                Err(_) if !f.path.exists() => {}
                Err(e) => r.errors.push(e),
            }
        }
    }
}

/// A compartment's file: its namespace mount, or its resolv.conf directory.
pub(crate) struct NamespaceFile {
    name: String,
    path: std::path::PathBuf,
    mount: bool,
}

/// The files under the namespace and resolv.conf directories, named by compartment ID.
pub(crate) fn namespace_files(netns_dir: &Path, resolv_dir: &Path) -> Vec<NamespaceFile> {
    let mut out = Vec::new();
    for (dir, mount) in [(netns_dir, true), (resolv_dir, false)] {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        out.extend(entries.flatten().map(|e| NamespaceFile { name: e.file_name().to_string_lossy().into_owned(), path: e.path(), mount }));
    }
    out
}

/// A network's links made as its plan says (idempotent: nothing is written when they are):
/// whether its main link existed already, or why it could not be made.
pub(crate) async fn ensure_network_links(host: &hns_kernel::netlink::Netlink, plan: &hns_drivers::NetworkPlan) -> Result<bool, String> {
    let existed = !hns_drivers::has_network_link(plan.kind) || host.link_by_name(&plan.bridge).await.ok().flatten().is_some();
    hns_drivers::create_network(host, plan).await.map_err(|e| e.to_string())?;
    Ok(existed)
}

/// Removes every hns-owned kernel object (uninstall): links carrying hns's mark, the nft table,
/// and namespace mounts under the run dir. The store is left alone. Returns one line per thing
/// it removed or failed to remove; nothing that did not exist is reported. The caller holds the
/// instance lock, so no hnsd is running meanwhile.
pub async fn cleanup_all(host: &hns_kernel::netlink::Netlink, run_dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    match host.links().await {
        Ok(links) => {
            // Endpoint veths first, then bridges.
            let mut hns: Vec<_> = links.into_iter().filter(|l| names::is_hns_link(&l.name, l.group)).collect();
            hns.sort_by_key(|l| !l.name.starts_with(names::VETH_PREFIX));
            for l in hns {
                match host.delete_link(&l.name).await {
                    Ok(()) => done.push(format!("removed link {}", l.name)),
                    Err(e) => done.push(format!("could not remove link {}: {e}", l.name)),
                }
            }
        }
        Err(e) => done.push(format!("could not list links: {e}")),
    }
    match nft::observe() {
        Ok(o) if !o.present => {}
        Ok(_) => match nft::delete_table() {
            Ok(()) => done.push(format!("removed nft table inet {}", names::NFT_TABLE)),
            Err(e) => done.push(format!("could not remove nft table inet {}: {e}", names::NFT_TABLE)),
        },
        Err(e) => done.push(format!("could not read nft table inet {}: {e}", names::NFT_TABLE)),
    }
    // The ACL tables (whether there or not: the program creates and deletes them).
    if let Err(e) = hns_kernel::nft_acl::run(&hns_kernel::nft_acl::compile_all(&[])) {
        done.push(format!("could not remove the ACL tables: {e}"));
    }
    if let Err(e) = hns_kernel::nft_outbound::run(&hns_kernel::nft_outbound::compile(&[])) {
        done.push(format!("could not remove the OutBoundNAT table: {e}"));
    }
    if let Err(e) = hns_kernel::nft_lb::run(&hns_kernel::nft_lb::removal_program()) {
        done.push(format!("could not remove the load-balancer table: {e}"));
    }
    match hns_kernel::lb_routes::remove_all() {
        Ok(0) => {}
        Ok(n) => done.push(format!("removed {n} policy rules of direct-return load-balancer backends")),
        Err(e) => done.push(format!("could not remove the policy rules of direct-return load-balancer backends: {e}")),
    }
    let netns_dir = run_dir.join("netns");
    if let Ok(entries) = std::fs::read_dir(&netns_dir) {
        for e in entries.flatten() {
            let what = if netns::is_netns(&e.path()) { "namespace" } else { "leftover namespace file" };
            match netns::remove(&e.path()) {
                Ok(()) => done.push(format!("removed {what} {}", e.path().display())),
                Err(err) => done.push(format!("could not remove {}: {err}", e.path().display())),
            }
        }
    }
    // The directory's own bind mount is infrastructure (see netns::prepare_dir), not an object.
    let _ = nix::mount::umount2(&netns_dir, nix::mount::MntFlags::MNT_DETACH);
    done
}
