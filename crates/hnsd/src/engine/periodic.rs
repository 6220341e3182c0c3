//! The periodic reconcile pass, without holding the engine for the whole pass (issue E1.2).
//!
//! 1. Under the lock, a snapshot of what the kernel should hold: cheap clones (names, plans,
//!    the desired nft table, the open netlink handles of cached compartments).
//! 2. Without the lock, the kernel is read: one link dump of the host, the nft table's shape,
//!    each compartment's identity, and inside each attached compartment its interface and
//!    default routes. What differs from the snapshot is a suspect: a namespace, an endpoint, the
//!    nft table, an orphan link.
//! 3. Only suspects are repaired, under the lock, in small batches, by the same idempotent
//!    steps as the start-up pass; each step looks at the store as it is then, so an object a
//!    request changed meanwhile is skipped (or repaired as it now is), never reverted.
//!
//! With nothing drifted, a pass holds the lock for the snapshot and the few per-network steps
//! only; requests are not queued behind the per-endpoint kernel reads.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use hns_api::state;
use hns_kernel::netlink::Netlink;
use hns_kernel::netns::NsIdentity;
use hns_kernel::{names, netns, nft};

use super::Engine;
use super::reconcile::Report;

/// Repairs of endpoints are done this many at a time under the lock.
const BATCH: usize = 32;

/// One attached endpoint, as the store said when the snapshot was taken.
struct EndpointCheck {
    id: String,
    ns: String,
    /// The host end and the bridge it must be enslaved to (`hns_drivers::veth_on_bridge`).
    host_veth: Option<(String, Option<String>)>,
    /// The interface inside, checked there when it is the only end (macvlan drivers) or when
    /// default routes are due.
    ifname: String,
    inside_only: bool,
    /// Families of the default routes the compartment must have.
    gateways: Vec<bool>,
    ready: bool,
    ns_path: PathBuf,
    ns_identity: Option<NsIdentity>,
    /// The compartment's open netlink handle, if the engine has one cached.
    handle: Option<Netlink>,
}

struct Snapshot {
    /// A connection of the pass's own: its dump of every link must not hold up the replies
    /// to an attach's steps on the engine's.
    host: Netlink,
    desired_nft: nft::Desired,
    wanted: HashSet<String>,
    /// Namespace ID, path, recorded identity, ready.
    namespaces: Vec<(String, PathBuf, Option<NsIdentity>, bool)>,
    endpoints: Vec<EndpointCheck>,
}

/// What the kernel read showed to differ.
#[derive(Default)]
struct Suspects {
    namespaces: bool,
    nft: bool,
    endpoints: Vec<String>,
    orphans: Vec<String>,
    retired: Option<String>,
}

impl Engine {
    fn periodic_snapshot(&mut self) -> Snapshot {
        self.host_resolv_conf = super::read_host_resolv_conf();
        let namespaces = self
            .namespaces
            .iter()
            .map(|(id, ns)| (id.clone(), PathBuf::from(&ns.rec.ns.net_ns_path), ns.rec.identity, ns.rec.ns.state == state::READY))
            .collect();
        // Sized once: grown by doubling, it held 8 192 slots of ~220 bytes for 5 000 endpoints
        // through the pass (and both halves while it grew).
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        // An endpoint in its attach's kernel step (without the lock) is left to it this pass.
        for rec in self.endpoints.values().filter(|e| !e.ep.host_compute_namespace.is_empty() && !self.in_flight.contains(&e.ep.id)) {
            let Some(net) = self.networks.get(&rec.network_id) else { continue };
            let Some(ns) = self.namespaces.get(&rec.ep.host_compute_namespace) else { continue };
            let kind = net.plan.kind;
            let host_veth = hns_drivers::has_host_veth(kind).then(|| {
                let bridge = hns_drivers::veth_on_bridge(kind).then(|| net.plan.bridge.clone());
                (names::veth_host_name(&rec.ep.id), bridge)
            });
            let mut gateways: Vec<bool> = self.endpoint_plan(rec).map(|p| p.gateways.iter().map(|g| g.is_ipv4()).collect()).unwrap_or_default();
            gateways.dedup();
            endpoints.push(EndpointCheck {
                id: rec.ep.id.clone(),
                ns: rec.ep.host_compute_namespace.clone(),
                host_veth,
                ifname: rec.ep.interface_name.clone(),
                inside_only: !hns_drivers::has_host_veth(kind),
                gateways,
                ready: rec.ep.state == state::ATTACHED,
                ns_path: PathBuf::from(&ns.rec.ns.net_ns_path),
                ns_identity: ns.rec.identity,
                handle: self.handles.peek(&rec.ep.host_compute_namespace).map(|c| c.netlink.clone()),
            });
        }
        Snapshot { host: super::own_connection(&self.host), desired_nft: self.desired_nft(), wanted: self.wanted_links(), namespaces, endpoints }
    }
}

/// Reads the kernel (no lock held) and returns what differs from the snapshot.
async fn inspect(snap: Snapshot, r: &mut Report) -> Suspects {
    let mut s = Suspects::default();
    let desired = snap.desired_nft;
    match tokio::task::spawn_blocking(nft::observe).await {
        Ok(Ok(o)) => s.nft = nft::drifted(&desired, &o),
        Ok(Err(e)) => r.errors.push(e.to_string()),
        Err(e) => r.errors.push(e.to_string()),
    }
    for (_, path, known, ready) in &snap.namespaces {
        let current = netns::identity(path).ok();
        if current.is_none() || *known != current || !ready {
            s.namespaces = true;
        }
    }
    let links = match snap.host.links().await {
        Ok(l) => l,
        Err(e) => {
            r.errors.push(e.to_string());
            // Without the dump every endpoint is a suspect: the locked pass reads again.
            s.endpoints = snap.endpoints.iter().map(|e| e.id.clone()).collect();
            return s;
        }
    };
    let by_name: HashMap<&str, &hns_kernel::netlink::LinkInfo> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    // Compartments the engine has not cached are opened here for the pass, one at a time: the
    // endpoints are visited compartment by compartment and each connection is dropped when the
    // next compartment's is opened. (Holding them all for the pass held a netlink connection
    // per compartment: 5 000 at 5 000 endpoints, ~275 MB at the peak, most of hnsd's RSS.)
    let mut order: Vec<&EndpointCheck> = snap.endpoints.iter().collect();
    order.sort_by(|a, b| a.ns.cmp(&b.ns));
    let mut opened: Option<(String, Option<Netlink>)> = None;
    for e in order {
        let mut suspect = !e.ready;
        if let Some((veth, bridge)) = &e.host_veth {
            match by_name.get(veth.as_str()) {
                None => suspect = true,
                Some(l) => {
                    let master = bridge.as_ref().map(|b| by_name.get(b.as_str()).map(|b| b.index));
                    suspect |= !l.up || master.is_some_and(|m| m.is_none() || m != l.master);
                }
            }
        }
        if !suspect && (e.inside_only || !e.gateways.is_empty()) {
            let nl = match &e.handle {
                Some(h) => Some(h.clone()),
                None => {
                    if opened.as_ref().is_none_or(|(ns, _)| *ns != e.ns) {
                        // The previous compartment's connection goes first.
                        drop(opened.take());
                        let (path, known) = (e.ns_path.clone(), e.ns_identity);
                        let h = tokio::task::spawn_blocking(move || {
                            let fd = netns::open(&path).ok()?;
                            // A path that now names another namespace is the namespace step's.
                            if known.is_some_and(|k| netns::identity(&path).ok() != Some(k)) {
                                return None;
                            }
                            Netlink::in_netns(&fd).ok()
                        })
                        .await
                        .ok()
                        .flatten();
                        opened = Some((e.ns.clone(), h));
                    }
                    opened.as_ref().and_then(|(_, h)| h.clone())
                }
            };
            match nl {
                // A vanished compartment is collected by the namespace step, not repaired.
                None => s.namespaces = true,
                Some(nl) => match nl.link_by_name(&e.ifname).await {
                    Ok(None) => suspect |= e.inside_only,
                    Ok(Some(_)) => {
                        for v4 in &e.gateways {
                            suspect |= !nl.has_default_route(*v4).await.unwrap_or(false);
                        }
                    }
                    Err(_) => suspect = true,
                },
            }
        }
        if suspect {
            s.endpoints.push(e.id.clone());
        }
    }
    s.retired = links.iter().find(|l| l.group == names::RETIRED_GROUP && names::has_hns_name(&l.name)).map(|l| l.name.clone());
    s.orphans = links.iter().filter(|l| l.group == names::HNS_GROUP && names::has_hns_name(&l.name) && !snap.wanted.contains(&l.name)).map(|l| l.name.clone()).collect();
    s
}

/// One periodic pass (see the module doc). The lock is taken for the snapshot, then for each
/// step and batch of repairs, and released in between.
pub async fn periodic(engine: &super::EngineLock) -> Report {
    let mut r = Report::default();
    let snap = engine.lock().await.periodic_snapshot();
    let s = inspect(snap, &mut r).await;
    if s.namespaces {
        engine.lock().await.reconcile_namespaces_of(None, &mut r).await;
    }
    // Per network (few): links re-created if missing, responders refreshed.
    engine.lock().await.reconcile_networks(&mut r).await;
    if s.nft {
        engine.lock().await.reconcile_nft(&mut r);
    }
    // The ACL tables: what is missing or unwanted, and a slice of the endpoints compared.
    match engine.lock().await.reconcile_acls(false) {
        Ok(true) => r.repaired.push("ACL objects that differed from the store (rewritten)".into()),
        Ok(false) => {}
        Err(e) => r.errors.push(e),
    }
    // Load balancers, OutBoundNAT, policy routes and QoS caps: only objects that have them.
    match engine.lock().await.reconcile_lbs(false) {
        Ok(Some(done)) => r.repaired.push(done),
        Ok(None) => {}
        Err(e) => r.errors.push(e),
    }
    match engine.lock().await.reconcile_direct_routes().await {
        Ok(done) => r.repaired.extend(done),
        Err(e) => r.errors.push(e),
    }
    Box::pin(engine.lock().await.reconcile_policies(&mut r)).await;
    for batch in s.endpoints.chunks(BATCH) {
        let only: HashSet<String> = batch.iter().cloned().collect();
        engine.lock().await.reconcile_links_of(Some(&only), None, true, &mut r).await;
    }
    if !s.orphans.is_empty() || s.retired.is_some() {
        let e = engine.lock().await;
        if let Some(l) = s.retired {
            e.reap(l);
        }
        // Looked at again: a request may have made one of them wanted since the dump.
        let wanted = e.wanted_links();
        for name in s.orphans.iter().filter(|n| !wanted.contains(*n)) {
            match e.host.link_by_name(name).await {
                Ok(Some(l)) if l.group == names::HNS_GROUP => match e.host.delete_link(name).await {
                    Ok(()) => r.removed.push(format!("link {name}")),
                    Err(err) => r.errors.push(err.to_string()),
                },
                Ok(_) => {}
                Err(err) => r.errors.push(err.to_string()),
            }
        }
    }
    engine.lock().await.reconcile_clusters(&mut r).await;
    r.repaired.extend(super::cluster_hooks::sync_clusters(engine).await);
    {
        let mut e = engine.lock().await;
        e.reconcile_leases(&mut r.errors, &mut r.repaired).await;
        e.reconcile_leases6();
        e.remove_orphan_files(&mut r);
        e.last_reconcile = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    }
    r
}
