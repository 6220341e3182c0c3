//! The periodic reconcile pass, without holding the engine for the whole pass (issue E1.2).
//!
//! 1. Under the lock, a snapshot of what the kernel should hold: cheap clones (names, plans,
//!    the desired nft table, the open netlink handles of cached compartments), the endpoints'
//!    part 500 at a time with the lock released in between.
//! 2. Without the lock, the kernel is read: one link dump of the host, the nft table's shape,
//!    each compartment's identity, and inside each attached compartment its interface and
//!    default routes. What differs from the snapshot is a suspect: a namespace, an endpoint, the
//!    nft table, an orphan link.
//! 3. Only suspects are repaired, under the lock, in small batches, by the same idempotent
//!    steps as the start-up pass; each step looks at the store as it is then, so an object a
//!    request changed meanwhile is skipped (or repaired as it now is), never reverted.
//!
//! With nothing drifted, a pass holds the lock for the snapshot's slices and short per-network
//! steps only (each network's links are checked without it, see `check_networks`); requests
//! are not queued behind the kernel reads.

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
    /// The host's resolv.conf differs from the last pass's: every responder's upstreams are
    /// set again.
    resolvers_changed: bool,
    /// Where compartments' files are (their namespace mounts, their resolv.conf).
    netns_dir: PathBuf,
    resolv_dir: PathBuf,
}

/// What the kernel read showed to differ.
#[derive(Default)]
struct Suspects {
    namespaces: HashSet<String>,
    /// Every compartment file, listed (thousands): those without a compartment are removed.
    files: Vec<super::reconcile::NamespaceFile>,
    resolvers_changed: bool,
    nft: bool,
    endpoints: Vec<String>,
    orphans: Vec<String>,
    retired: Option<String>,
}

/// Endpoints are copied into the snapshot this many at a time under the lock (all 5 000 at
/// once held it 7-13 ms).
const SLICE: usize = 500;

impl Engine {
    /// The snapshot without its endpoints (see [`Engine::snapshot_slice`]). `resolv_conf`: the
    /// host's, read before the lock was taken.
    fn periodic_snapshot(&mut self, resolv_conf: String) -> Snapshot {
        let resolvers_changed = self.host_resolv_conf != resolv_conf;
        self.host_resolv_conf = resolv_conf;
        let namespaces = self
            .namespaces
            .iter()
            .map(|(id, ns)| (id.clone(), PathBuf::from(&ns.rec.ns.net_ns_path), ns.rec.identity, ns.rec.ns.state == state::READY))
            .collect();
        Snapshot {
            host: super::own_connection(&self.host),
            desired_nft: self.desired_nft(),
            wanted: self.wanted_network_links(),
            namespaces,
            // Sized once: grown by doubling, it held 8 192 slots of ~220 bytes for 5 000
            // endpoints through the pass (and both halves while it grew).
            endpoints: Vec::with_capacity(self.endpoints.len()),
            resolvers_changed,
            netns_dir: self.cfg.netns_dir(),
            resolv_dir: self.cfg.resolv_dir(),
        }
    }

    /// Adds up to [`SLICE`] endpoints after `after` (in ID order) to the snapshot: the checks of
    /// the attached ones, the host ends they and those in a kernel step want. Returns the last
    /// ID it looked at, `None` once all were. An endpoint attached or detached between two slices
    /// is seen as it was or as it is: what the pass finds is checked again under the lock
    /// before anything is repaired or removed.
    fn snapshot_slice(&self, after: Option<&str>, snap: &mut Snapshot) -> Option<String> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, |id| Excluded(id.to_owned()));
        let mut last = None;
        for (id, rec) in self.endpoints.range((from, Unbounded)).take(SLICE) {
            last = Some(id.clone());
            if let Some(veth) = self.wanted_veth(rec) {
                snap.wanted.insert(veth);
            }
            // An endpoint in its attach's kernel step (without the lock) is left to it this pass.
            if rec.ep.host_compute_namespace.is_empty() || self.in_flight.contains(&rec.ep.id) {
                continue;
            }
            let Some(net) = self.networks.get(&rec.network_id) else { continue };
            let Some(ns) = self.namespaces.get(&rec.ep.host_compute_namespace) else { continue };
            let kind = net.plan.kind;
            let host_veth = hns_drivers::has_host_veth(kind).then(|| {
                let bridge = hns_drivers::veth_on_bridge(kind).then(|| net.plan.bridge.clone());
                (names::veth_host_name(&rec.ep.id), bridge)
            });
            let gateways = if rec.mac().is_some() { self.gateway_families(rec) } else { Vec::new() };
            snap.endpoints.push(EndpointCheck {
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
        last
    }
}

/// Reads the kernel (no lock held) and returns what differs from the snapshot.
async fn inspect(snap: Snapshot, r: &mut Report) -> Suspects {
    let mut s = Suspects { resolvers_changed: snap.resolvers_changed, ..Suspects::default() };
    let desired = snap.desired_nft;
    match tokio::task::spawn_blocking(nft::observe).await {
        Ok(Ok(o)) => s.nft = nft::drifted(&desired, &o),
        Ok(Err(e)) => r.errors.push(e.to_string()),
        Err(e) => r.errors.push(e.to_string()),
    }
    // A stat of each compartment's mount and a listing of their files: thousands of blocking
    // calls, off the async workers.
    let (namespaces, netns_dir, resolv_dir) = (snap.namespaces, snap.netns_dir, snap.resolv_dir);
    let checked = tokio::task::spawn_blocking(move || {
        let suspects = namespaces
            .into_iter()
            .filter(|(_, path, known, ready)| {
                let current = netns::identity(path).ok();
                current.is_none() || *known != current || !ready
            })
            .map(|(id, ..)| id)
            .collect::<HashSet<String>>();
        (suspects, super::reconcile::namespace_files(&netns_dir, &resolv_dir))
    });
    match checked.await {
        Ok((suspects, files)) => (s.namespaces, s.files) = (suspects, files),
        Err(e) => r.errors.push(e.to_string()),
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
                None => drop(s.namespaces.insert(e.ns.clone())),
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

/// Per network (few): its links re-created if missing, by the same idempotent steps as at
/// start, without the engine's lock (tens of milliseconds over a few networks at thousands of
/// endpoints, under it). One network at a time is marked in flight meanwhile: requests for it
/// wait, the others go on. Its responder is set again, under the lock, only when it is not
/// serving where it should or the host's resolvers changed; otherwise its view is current
/// already (every attach and detach refreshes it), and building it walks the network's
/// endpoints.
async fn check_networks(engine: &super::EngineLock, resolvers_changed: bool, r: &mut Report) {
    let ids: Vec<String> = engine.lock().await.networks.keys().cloned().collect();
    for id in ids {
        let (host, plan) = {
            let mut e = engine.lock().await;
            // Deleted since, or in a request's kernel step (left to it).
            let Some(net) = e.networks.get(&id).filter(|_| !e.in_flight.contains(&id)) else { continue };
            let plan = net.plan.clone();
            e.in_flight.insert(id.clone());
            (e.host.clone(), plan)
        };
        let done = super::reconcile::ensure_network_links(&host, &plan).await;
        let mut e = engine.lock().await;
        e.in_flight.remove(&id);
        e.idle.notify_waiters();
        let listen = e.dns_listeners(&id);
        let dns = resolvers_changed || e.dns_errors.contains_key(&id) || !e.dns.serves(&id, &listen, e.dns_port).await;
        e.network_checked(&id, done, dns, r).await;
    }
}

/// One periodic pass (see the module doc). The lock is taken for the snapshot, then for each
/// step and batch of repairs, and released in between.
pub async fn periodic(engine: &super::EngineLock) -> Report {
    let mut r = Report::default();
    let resolv_conf = tokio::task::spawn_blocking(super::read_host_resolv_conf).await.unwrap_or_default();
    let mut snap = engine.lock().await.periodic_snapshot(resolv_conf);
    let mut after = None;
    while let Some(last) = engine.lock().await.snapshot_slice(after.as_deref(), &mut snap) {
        after = Some(last);
    }
    let s = inspect(snap, &mut r).await;
    // Only the suspects, a batch at a time (all of them, under one lock, took ~40 ms at 5 000).
    let suspects: Vec<String> = s.namespaces.iter().cloned().collect();
    for batch in suspects.chunks(BATCH) {
        let only: HashSet<String> = batch.iter().cloned().collect();
        engine.lock().await.reconcile_namespaces_of(Some(&only), &mut r).await;
    }
    check_networks(engine, s.resolvers_changed, &mut r).await;
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
        // Looked at again: a request may have made one of them wanted since the dump (or since
        // its slice of the snapshot). A host end is looked up by its endpoint's ID; only a name
        // that finds none (an ID not shaped as a GUID) costs a walk over every endpoint.
        let network_links = e.wanted_network_links();
        let mut every: Option<HashSet<String>> = None;
        let mut wanted = |name: &String| {
            network_links.contains(name)
                || match e.endpoint_of_veth(name) {
                    Some(ep) => e.wanted_veth(ep).is_some(),
                    None => every.get_or_insert_with(|| e.wanted_links()).contains(name),
                }
        };
        let unwanted: Vec<&String> = s.orphans.iter().filter(|n| !wanted(n)).collect();
        for name in unwanted {
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
        e.remove_orphan_files_of(s.files, &mut r);
        e.last_reconcile = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    }
    r
}
