//! Repairs started by the kernel's link notifications (issue E1.2): a bridge, VXLAN device or
//! host veth of hns's that someone deletes, sets down or unplugs from its bridge is put back
//! within a moment of the change, by the same idempotent steps as the reconcile passes, and
//! only for the objects the notifications name (the periodic pass stays as the net for what
//! no host link notification covers: links and routes inside compartments, among others).
//!
//! Notifications are hints, read as the store is when they are handled: hns's own steps
//! produce them too (an attach creates its veth down and unplugged, then plugs it and brings
//! it up), so an object in a request's kernel step is left to that request, and the link is
//! read again before anything is changed.

use std::collections::{HashMap, HashSet};

use hns_kernel::link_events::LinkEvent;
use hns_kernel::names;

use super::reconcile::Report;
use super::{Engine, EngineLock};

/// Whether a notification shows an hns link in a state hns never leaves one in for long:
/// gone, down, or (a veth) out of any bridge. Which of these need a repair is decided
/// against the store ([`Engine::link_repairs`]); this only spares the engine's lock the
/// notifications of links that are fine, which is nearly all of them.
pub fn looks_broken(e: &LinkEvent) -> bool {
    if e.link.group != names::HNS_GROUP || !names::has_hns_name(&e.link.name) {
        return false;
    }
    e.deleted || !e.link.up || (e.link.name.starts_with(names::VETH_PREFIX) && e.link.master.is_none())
}

/// What a burst of notifications asks to repair.
#[derive(Debug, Default)]
struct LinkRepairs {
    /// A network's own link (bridge, VXLAN device) was deleted or set down.
    networks: bool,
    /// Attached endpoints whose host veth was deleted, set down or unplugged: ID and
    /// compartment.
    endpoints: HashMap<String, String>,
}

impl Engine {
    /// The repairs the latest notification of each link in `broken` (by name) asks for, as
    /// the store is now: only objects that are committed and not in a request's kernel step.
    fn link_repairs(&self, broken: &HashMap<String, LinkEvent>) -> LinkRepairs {
        let mut out = LinkRepairs::default();
        for (id, n) in self.networks.iter() {
            if !self.in_flight.contains(id) && hns_drivers::network_links(&n.plan).iter().any(|l| broken.contains_key(*l)) {
                out.networks = true;
            }
        }
        for (name, ev) in broken {
            let Some(e) = self.endpoint_of_veth(name) else { continue };
            if e.ep.host_compute_namespace.is_empty() || self.in_flight.contains(&e.ep.id) {
                continue;
            }
            let Some(kind) = self.networks.get(&e.network_id).map(|n| n.plan.kind) else { continue };
            if !hns_drivers::has_host_veth(kind) {
                continue;
            }
            let unplugged = hns_drivers::veth_on_bridge(kind) && (ev.deleted || ev.link.master.is_none());
            if ev.deleted || !ev.link.up || unplugged {
                out.endpoints.insert(e.ep.id.clone(), e.ep.host_compute_namespace.clone());
            }
            // A veth is plugged back only into a bridge that exists, and a deleted bridge's
            // ports report their unplugging just before the bridge reports its deletion: they
            // may come due first, alone. The network's links are checked (and re-created)
            // first in any case.
            out.networks |= unplugged;
        }
        out
    }

    /// The endpoint whose host veth is named `name`, found without a walk over every endpoint
    /// (this runs under the lock while requests queue): a veth is named after the first 12 hex
    /// digits of its endpoint's ID, and IDs are GUIDs, so the first 8 are the ID's own first 8
    /// characters, in lower or upper case. An ID of another shape is not found here; the
    /// periodic pass repairs its veth.
    pub(super) fn endpoint_of_veth(&self, name: &str) -> Option<&super::records::EndpointRecord> {
        let first8 = name.strip_prefix(names::VETH_PREFIX)?.get(..8)?;
        [first8.to_ascii_lowercase(), first8.to_ascii_uppercase()].into_iter().find_map(|prefix| {
            self.endpoints.range(prefix.clone()..).take_while(|(id, _)| id.starts_with(&prefix)).map(|(_, e)| e).find(|e| names::veth_host_name(&e.ep.id) == name)
        })
    }
}

/// Repairs what the notifications in `broken` (the latest of each link that
/// [`looks_broken`], by name) show to differ from the store.
pub async fn repair(engine: &EngineLock, broken: &HashMap<String, LinkEvent>) -> Report {
    let mut r = Report::default();
    let mut e = engine.lock().await;
    let todo = e.link_repairs(broken);
    // Networks first: a bridge deleted under its endpoints unplugs their veths too, and they
    // are plugged back into the bridge re-created here.
    if todo.networks {
        e.reconcile_networks(&mut r).await;
    }
    if todo.endpoints.is_empty() {
        return r;
    }
    // A veth that went with its compartment (the container's namespace was deleted) is
    // collected with it, not re-created.
    let compartments: HashSet<String> = todo.endpoints.values().cloned().collect();
    e.reconcile_namespaces_of(Some(&compartments), &mut r).await;
    // Read again: a notification may be older than the link's state (an attach's own steps,
    // seen after the attach ended). An endpoint whose veth could not be read is left to the
    // next pass: the links step takes a veth missing from `links` for a deleted one.
    let mut ids = HashSet::with_capacity(todo.endpoints.len());
    let mut links = Vec::with_capacity(todo.endpoints.len());
    for id in todo.endpoints.into_keys() {
        match e.host.link_by_name(&names::veth_host_name(&id)).await {
            Ok(l) => links.extend(l),
            Err(err) => {
                r.errors.push(err.to_string());
                continue;
            }
        }
        ids.insert(id);
    }
    e.reconcile_links_of(Some(&ids), Some(links), false, &mut r).await;
    r
}
