//! The read model: the API objects as GETs show them, published after every locked section so
//! that a GET never waits on the engine's lock (a network create applying its nft table, an
//! overlay request waiting on etcd, a reconcile pass).
//!
//! [`Views`] holds the wire objects of networks, endpoints (this host's and the remote ones of
//! overlay networks), compartments, port mappings and load balancers, each behind an `Arc`, in
//! persistent maps (`imbl`: a clone is O(1), an update O(log n)), with the name lookups the
//! GETs by name use. What the engine's records already hold is shared, not copied: the view of
//! an endpoint without policies is its record's object, and a compartment's view is its
//! record's object with the IDs of its endpoints ([`NamespaceView`]). [`EngineLock`] wraps the engine's mutex: its guard, when the holder
//! borrowed the engine mutably, recomputes on drop the views of the objects changed meanwhile
//! and publishes the new `Views` through an `ArcSwap`, before the lock goes. A request's reply
//! is sent after its last guard is dropped, so a GET after it shows its change (read your
//! writes), and a GET during a write shows the state before it, never half of it.
//!
//! What changed is noted where the engine changes it, by the maps themselves: the endpoint map
//! (`index::EndpointMap`: the endpoint, and the compartments it joined or left), `index::Tracked`
//! (networks, compartments, port mappings, load balancers: every insert, remove and mutable
//! borrow) and `overlay::RemoteMap` (remote endpoints). A publish costs the views of what
//! changed, not of everything: an attach recomputes its endpoint, its network and its
//! compartment. The views are computed by the engine's own functions (`endpoint_view`,
//! `namespace_view`, `remote_view`, ...), and each read below mirrors the engine's (same order,
//! same name semantics, same errors).
//!
//! Debug builds check every publish while the engine holds at most [`CHECK_UP_TO`] objects:
//! the published views must equal views built from scratch, and (when something changed) each
//! list must serialize to the same bytes as the engine's own list; a mismatch (a change not
//! noted) aborts hnsd with a message saying what differs. The lab suite runs on debug builds,
//! so it exercises that check on every request it makes. Release builds do not check.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hns_api::{ApiError, ErrorCode, HostComputeEndpoint, HostComputeLoadBalancer, HostComputeNamespace, HostComputeNetwork, NamespaceResource, PortMappingInfo};
use imbl::{OrdMap, OrdSet};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use ipnet::IpNet;
use serde::{Serialize, Serializer};

use super::{Engine, Result, norm_guid};

/// Name -> IDs of the objects with that name, in ID order.
type Names = OrdMap<String, OrdSet<String>>;

/// The port mappings of one endpoint as `GET /portmappings` lists them, without the network's
/// and the compartment's names (looked up in the views when read).
#[derive(Debug, Clone, PartialEq)]
struct EndpointPorts {
    network_id: String,
    namespace_id: String,
    infos: Vec<PortMappingInfo>,
}

/// A compartment as GETs show it, held small: its record's object (shared with the engine)
/// and the IDs of the endpoints attached there. The wire object, whose `Resources` list those
/// endpoints, is made when it is sent: held, each endpoint resource's `Data` (a JSON object,
/// one B-tree node) cost ~0.7 KiB, and the compartment's copy as much again.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceView {
    pub(super) ns: Arc<HostComputeNamespace>,
    /// Exactly as long as the list (a collected `Vec` keeps room for four).
    pub(super) endpoints: Box<[String]>,
}

impl NamespaceView {
    pub fn wire(&self) -> HostComputeNamespace {
        let resources = self.endpoints.iter().map(|id| NamespaceResource { kind: "Endpoint".into(), data: serde_json::json!({ "ID": id }) }).collect();
        HostComputeNamespace { resources, ..(*self.ns).clone() }
    }
}

impl Serialize for NamespaceView {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.wire().serialize(s)
    }
}

/// One published state of the API objects.
#[derive(Clone, Default, PartialEq)]
pub struct Views {
    networks: OrdMap<String, Arc<HostComputeNetwork>>,
    /// Every network's name (empty ones too, as `Engine::network_id` finds them).
    network_names: Names,
    /// The subnets of each network: the prefix lengths of its remote endpoints' views.
    subnets: OrdMap<String, Arc<Vec<IpNet>>>,
    endpoints: OrdMap<String, Arc<HostComputeEndpoint>>,
    /// Names of this host's endpoints (not empty ones).
    endpoint_names: Names,
    /// Port mappings of the endpoints that have some, by endpoint ID.
    ports: OrdMap<String, Arc<EndpointPorts>>,
    /// Remote endpoints by (network ID, endpoint ID).
    remote: OrdMap<(String, String), Arc<HostComputeEndpoint>>,
    namespaces: OrdMap<String, Arc<NamespaceView>>,
    /// Names of compartments (not empty ones).
    namespace_names: Names,
    lbs: OrdMap<String, Arc<HostComputeLoadBalancer>>,
}

/// A list of published objects, serialized as the JSON array of the objects themselves.
pub struct List<T>(Vec<Arc<T>>);

impl<T: Serialize> Serialize for List<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|a| &**a))
    }
}

/// One published object, serialized as the object itself.
pub struct One<T>(Arc<T>);

impl<T: Serialize> Serialize for One<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (*self.0).serialize(s)
    }
}

/// The endpoint `key` names among the endpoints with that name (`ids`, in ID order): the error
/// of `Engine::endpoint_id` unless there is exactly one.
pub(crate) fn pick_named<'a>(key: &str, ids: &[&'a str]) -> Result<&'a str> {
    match ids {
        [] => Err(ApiError::new(ErrorCode::EndpointNotFound, format!("no endpoint with ID or name {key:?}; list them with `hnsctl endpoint ls`"))),
        [one] => Ok(one),
        _ => Err(ApiError::new(ErrorCode::EndpointNotFound, format!("endpoint name {key:?} is used on several networks ({}); use the endpoint ID", ids.join(", ")))),
    }
}

/// The compartment column of `GET /portmappings`: its name, else its ID.
pub(crate) fn namespace_label(ns: Option<&HostComputeNamespace>) -> String {
    ns.map(|n| if n.name.is_empty() { n.id.clone() } else { n.name.clone() }).unwrap_or_default()
}

/// Moves `id` from the name `old` to the name `new` (`None`: not indexed).
fn rename(names: &mut Names, id: &str, old: Option<&str>, new: Option<&str>) {
    if old == new {
        return;
    }
    if let Some(o) = old
        && let Some(set) = names.get_mut(o)
    {
        set.remove(id);
        if set.is_empty() {
            names.remove(o);
        }
    }
    if let Some(n) = new {
        names.entry(n.to_owned()).or_default().insert(id.to_owned());
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn first(names: &Names, key: &str) -> Option<String> {
    names.get(key).and_then(|s| s.get_min()).cloned()
}

impl Views {
    pub fn networks(&self) -> List<HostComputeNetwork> {
        List(self.networks.values().cloned().collect())
    }

    fn network_id(&self, key: &str) -> Option<String> {
        norm_guid(key).filter(|id| self.networks.contains_key(id)).or_else(|| first(&self.network_names, key))
    }

    pub fn network(&self, key: &str) -> Result<One<HostComputeNetwork>> {
        let id = self.network_id(key).ok_or_else(|| super::networks::not_found(key))?;
        Ok(One(self.networks[&id].clone()))
    }

    /// Every network, in ID order.
    pub(crate) fn network_objects(&self) -> impl Iterator<Item = &Arc<HostComputeNetwork>> {
        self.networks.values()
    }

    /// This host's endpoints (not the remote ones), in ID order.
    pub(crate) fn local_endpoints(&self) -> impl Iterator<Item = &Arc<HostComputeEndpoint>> {
        self.endpoints.values()
    }

    pub(crate) fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    /// This host's endpoints, then the remote ones (as `Engine::list_endpoints`).
    pub fn endpoints(&self) -> List<HostComputeEndpoint> {
        List(self.endpoints.values().chain(self.remote.values()).cloned().collect())
    }

    /// As `Engine::get_endpoint`: this host's endpoint by ID or unique name, else a remote one.
    pub fn endpoint(&self, key: &str) -> Result<One<HostComputeEndpoint>> {
        let local = match norm_guid(key).filter(|id| self.endpoints.contains_key(id)) {
            Some(id) => Ok(id),
            None => {
                let ids: Vec<&str> = self.endpoint_names.get(key).into_iter().flatten().map(String::as_str).collect();
                pick_named(key, &ids).map(str::to_owned)
            }
        };
        match local {
            Ok(id) => Ok(One(self.endpoints[&id].clone())),
            Err(e) => self.find_remote(key).map(One).ok_or(e),
        }
    }

    /// As `Engine::find_remote`.
    fn find_remote(&self, key: &str) -> Option<Arc<HostComputeEndpoint>> {
        let mut all = self.remote.values();
        match norm_guid(key) {
            Some(id) => all.find(|e| norm_guid(&e.id).as_deref() == Some(id.as_str())),
            None => all.find(|e| !e.name.is_empty() && e.name == key),
        }
        .cloned()
    }

    pub fn namespaces(&self) -> List<NamespaceView> {
        List(self.namespaces.values().cloned().collect())
    }

    pub fn namespace(&self, key: &str) -> Result<One<NamespaceView>> {
        let id = norm_guid(key).filter(|id| self.namespaces.contains_key(id)).or_else(|| first(&self.namespace_names, key));
        let id = id.ok_or_else(|| super::namespaces::not_found(key))?;
        Ok(One(self.namespaces[&id].clone()))
    }

    /// As `Engine::list_port_mappings`.
    pub fn port_mappings(&self) -> Vec<PortMappingInfo> {
        let mut out = Vec::new();
        for p in self.ports.values() {
            let network = self.networks.get(&p.network_id).map(|n| n.name.clone()).unwrap_or_default();
            let namespace = namespace_label(self.namespaces.get(&p.namespace_id).map(|n| &*n.ns));
            out.extend(p.infos.iter().map(|i| PortMappingInfo { network_name: network.clone(), namespace: namespace.clone(), ..i.clone() }));
        }
        out
    }

    pub fn lbs(&self) -> List<HostComputeLoadBalancer> {
        List(self.lbs.values().cloned().collect())
    }

    pub fn lb(&self, key: &str) -> Result<One<HostComputeLoadBalancer>> {
        let id = norm_guid(key).filter(|id| self.lbs.contains_key(id)).ok_or_else(|| super::loadbalancers::not_found(key))?;
        Ok(One(self.lbs[&id].clone()))
    }

    #[cfg(debug_assertions)]
    fn object_count(&self) -> usize {
        self.networks.len() + self.endpoints.len() + self.remote.len() + self.namespaces.len() + self.lbs.len()
    }
}

/// What changed in the engine since the last publish.
#[derive(Default)]
struct Changes {
    networks: BTreeSet<String>,
    endpoints: BTreeSet<String>,
    namespaces: BTreeSet<String>,
    lbs: BTreeSet<String>,
    remote: BTreeSet<(String, String)>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.endpoints.is_empty() && self.namespaces.is_empty() && self.lbs.is_empty() && self.remote.is_empty()
    }
}

impl Engine {
    /// Takes the notes of what changed from the maps that keep them.
    fn take_changes(&mut self) -> Changes {
        let (mut endpoints, mut namespaces) = self.endpoints.take_changed();
        endpoints.extend(self.mappings.take_changed());
        namespaces.extend(self.namespaces.take_changed());
        Changes { networks: self.networks.take_changed(), endpoints, namespaces, lbs: self.lbs.recs.take_changed(), remote: self.overlay.remote.take_changed() }
    }

    fn subnets_of(&self, net_id: &str) -> Option<Vec<IpNet>> {
        self.networks.get(net_id).map(|n| n.plan.subnets.iter().map(|(s, _)| *s).collect())
    }

    /// Brings the views of the changed objects up to date in `v`.
    fn update_views(&self, v: &mut Views, mut c: Changes) {
        for id in &c.networks {
            let new = self.networks.get(id).map(|n| &n.rec.net);
            let old_name = v.networks.get(id).map(|n| n.name.clone());
            rename(&mut v.network_names, id, old_name.as_deref(), new.map(|n| n.name.as_str()));
            match new {
                Some(n) => v.networks.insert(id.clone(), Arc::new(n.clone())),
                None => v.networks.remove(id),
            };
            // A network's subnets give its remote endpoints' prefix lengths.
            let subnets = self.subnets_of(id);
            if v.subnets.get(id).map(|s| &**s) != subnets.as_ref() {
                match subnets {
                    Some(s) => v.subnets.insert(id.clone(), Arc::new(s)),
                    None => v.subnets.remove(id),
                };
                c.remote.extend(self.overlay.remote.get(id).into_iter().flat_map(|m| m.keys()).map(|ep| (id.clone(), ep.clone())));
            }
        }
        for id in &c.endpoints {
            let rec = self.endpoints.get(id);
            let old_name = v.endpoints.get(id).map(|e| e.name.clone());
            rename(&mut v.endpoint_names, id, old_name.as_deref().and_then(non_empty), rec.and_then(|r| non_empty(&r.ep.name)));
            match rec {
                Some(r) => v.endpoints.insert(id.clone(), self.endpoint_view(r)),
                None => v.endpoints.remove(id),
            };
            match rec.filter(|r| self.mappings.contains_key(&r.ep.id)) {
                Some(r) => {
                    let p = EndpointPorts { network_id: r.network_id.clone(), namespace_id: r.ep.host_compute_namespace.clone(), infos: self.port_infos(r) };
                    v.ports.insert(id.clone(), Arc::new(p))
                }
                None => v.ports.remove(id),
            };
        }
        for id in &c.namespaces {
            let new = self.namespaces.get(id).map(|n| &n.rec.ns);
            let old_name = v.namespaces.get(id).map(|n| n.ns.name.clone());
            rename(&mut v.namespace_names, id, old_name.as_deref().and_then(non_empty), new.and_then(|n| non_empty(&n.name)));
            match new {
                Some(_) => v.namespaces.insert(id.clone(), Arc::new(self.namespace_view(id))),
                None => v.namespaces.remove(id),
            };
        }
        for id in &c.lbs {
            match self.lbs.recs.get(id) {
                Some(r) => v.lbs.insert(id.clone(), Arc::new(r.lb.clone())),
                None => v.lbs.remove(id),
            };
        }
        for key in c.remote {
            match self.overlay.remote.get(&key.0).and_then(|m| m.get(&key.1)) {
                Some(e) => v.remote.insert(key, Arc::new(self.remote_view(e))),
                None => v.remote.remove(&key),
            };
        }
    }

    /// The views of everything, built from scratch.
    fn build_views(&self) -> Views {
        let all = Changes {
            networks: self.networks.keys().cloned().collect(),
            endpoints: self.endpoints.keys().cloned().collect(),
            namespaces: self.namespaces.keys().cloned().collect(),
            lbs: self.lbs.recs.keys().cloned().collect(),
            remote: self.overlay.remote.iter().flat_map(|(n, m)| m.keys().map(move |e| (n.clone(), e.clone()))).collect(),
        };
        let mut v = Views::default();
        self.update_views(&mut v, all);
        v
    }

    /// Publishes the views of what changed since the last publish.
    fn publish_views(&mut self, to: &ArcSwap<Views>) {
        let changes = self.take_changes();
        #[cfg(debug_assertions)]
        let changed = !changes.is_empty();
        if !changes.is_empty() {
            let mut v = Views::clone(&to.load());
            self.update_views(&mut v, changes);
            to.store(Arc::new(v));
        }
        #[cfg(debug_assertions)]
        self.check_views(&to.load(), changed);
    }

    /// Debug builds: the published views must be what a full build gives, and, when something
    /// changed, each list what the engine's own list gives, byte for byte.
    #[cfg(debug_assertions)]
    fn check_views(&self, published: &Views, changed: bool) {
        if std::thread::panicking() || published.object_count().max(self.object_count()) > CHECK_UP_TO {
            return;
        }
        let full = self.build_views();
        if *published != full {
            let keys = |a: OrdMap<String, String>, b: OrdMap<String, String>| -> Vec<String> {
                a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect::<BTreeSet<String>>().into_iter().collect()
            };
            let diff = [
                format!("networks {:?}", keys(json_map(&published.networks), json_map(&full.networks))),
                format!("endpoints {:?}", keys(json_map(&published.endpoints), json_map(&full.endpoints))),
                format!("namespaces {:?}", keys(json_map(&published.namespaces), json_map(&full.namespaces))),
                format!("load balancers {:?}", keys(json_map(&published.lbs), json_map(&full.lbs))),
                format!("remote endpoints equal: {}", published.remote == full.remote),
                format!("port mappings equal: {}", published.ports == full.ports),
                format!(
                    "names equal: networks {}, endpoints {}, namespaces {}",
                    published.network_names == full.network_names,
                    published.endpoint_names == full.endpoint_names,
                    published.namespace_names == full.namespace_names
                ),
                format!("subnets equal: {}", published.subnets == full.subnets),
            ];
            mismatch(format!("the published read model differs from the engine's state (a change was not noted where it was made); differing: {}", diff.join("; ")));
        }
        if !changed {
            return;
        }
        let same = |what: &str, a: String, b: String| {
            if a != b {
                mismatch(format!("GET {what} from the read model differs from the engine's:\n views: {a}\nengine: {b}"));
            }
        };
        same("/networks", json(&full.networks()), json(&self.list_networks()));
        same("/endpoints", json(&full.endpoints()), json(&self.list_endpoints()));
        same("/namespaces", json(&full.namespaces()), json(&self.list_namespaces()));
        same("/portmappings", json(&full.port_mappings()), json(&self.list_port_mappings()));
        same("/loadbalancers", json(&full.lbs()), json(&self.list_lbs()));
    }

    #[cfg(debug_assertions)]
    fn object_count(&self) -> usize {
        self.networks.len() + self.endpoints.len() + self.overlay.remote.values().map(|m| m.len()).sum::<usize>() + self.namespaces.len() + self.lbs.recs.len()
    }
}

/// Debug builds: a read model that differs from the engine stops hnsd at once, loudly. Not a
/// panic: that would end only the task that made the change (unnoticed if it was the
/// reconciler's).
#[cfg(debug_assertions)]
fn mismatch(msg: String) -> ! {
    tracing::error!("engine::views: {msg}");
    eprintln!("engine::views: {msg}");
    std::process::abort()
}

#[cfg(debug_assertions)]
fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializable")
}

#[cfg(debug_assertions)]
fn json_map<T: Serialize>(m: &OrdMap<String, Arc<T>>) -> OrdMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), json(&**v))).collect()
}

/// Debug builds check each publish against a full build up to this many objects (networks,
/// endpoints, remote endpoints, compartments, load balancers). Under the lock, the check (a
/// full build, and five list encodings when something changed) slows a debug hnsd: the
/// 100-client churn test (`concurrency.rs`, up to ~250 objects) made ~340 container cycles in
/// its 12 s without it, ~100 with the bound at 300 and the lists always compared, ~200 with this
/// bound. The functional lab tests hold far fewer objects.
#[cfg(debug_assertions)]
pub const CHECK_UP_TO: usize = 150;

/// The engine behind its lock, with the read model it publishes. Every way to the engine goes
/// through [`EngineLock::lock`], so no change can skip a publish.
pub struct EngineLock {
    engine: tokio::sync::Mutex<Engine>,
    views: ArcSwap<Views>,
    timing: LockTiming,
}

/// How long requests wait for the engine's lock and how long they hold it (publishing the
/// views included): `hns_engine_lock_wait_seconds` and `hns_engine_lock_held_seconds`.
#[derive(Clone)]
pub struct LockTiming {
    pub wait: Histogram,
    pub held: Histogram,
}

impl Default for LockTiming {
    fn default() -> LockTiming {
        // 10 us to about 160 ms.
        let buckets = || Histogram::new(exponential_buckets(0.000_01, 2.0, 15));
        LockTiming { wait: buckets(), held: buckets() }
    }
}

impl EngineLock {
    pub fn new(mut engine: Engine, timing: LockTiming) -> EngineLock {
        engine.take_changes();
        let views = ArcSwap::from_pointee(engine.build_views());
        EngineLock { engine: tokio::sync::Mutex::new(engine), views, timing }
    }

    /// Takes the engine's lock (FIFO, as the mutex it wraps). Not an `async fn`, so that the
    /// caller's place in the code is known ([`LONG_HOLD`]).
    #[track_caller]
    pub fn lock(&self) -> impl std::future::Future<Output = EngineGuard<'_>> + Send {
        self.lock_by(std::panic::Location::caller())
    }

    /// [`EngineLock::lock`] for a helper that takes it on its caller's behalf.
    pub(crate) async fn lock_by(&self, by: &'static std::panic::Location<'static>) -> EngineGuard<'_> {
        let asked = Instant::now();
        let engine = self.engine.lock().await;
        let since = Instant::now();
        self.timing.wait.observe(since.duration_since(asked).as_secs_f64());
        EngineGuard { engine, views: &self.views, wrote: false, since, held: &self.timing.held, by }
    }

    /// The lock if it is free now.
    #[track_caller]
    pub fn try_lock(&self) -> std::result::Result<EngineGuard<'_>, tokio::sync::TryLockError> {
        let engine = self.engine.try_lock()?;
        self.timing.wait.observe(0.0);
        Ok(EngineGuard { engine, views: &self.views, wrote: false, since: Instant::now(), held: &self.timing.held, by: std::panic::Location::caller() })
    }

    /// The views as last published: never waits.
    pub fn views(&self) -> arc_swap::Guard<Arc<Views>> {
        self.views.load()
    }
}

/// The engine, locked. Dropped after a mutable borrow, it publishes the views of what changed
/// before it releases the lock.
pub struct EngineGuard<'a> {
    engine: tokio::sync::MutexGuard<'a, Engine>,
    views: &'a ArcSwap<Views>,
    wrote: bool,
    since: Instant,
    held: &'a Histogram,
    /// Where the lock was taken.
    by: &'static std::panic::Location<'static>,
}

/// A hold of the engine's lock longer than this is logged (debug) with the place that took it:
/// every request waits behind it.
const LONG_HOLD: std::time::Duration = std::time::Duration::from_millis(5);

impl std::ops::Deref for EngineGuard<'_> {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.engine
    }
}

impl std::ops::DerefMut for EngineGuard<'_> {
    fn deref_mut(&mut self) -> &mut Engine {
        self.wrote = true;
        &mut self.engine
    }
}

impl Drop for EngineGuard<'_> {
    fn drop(&mut self) {
        if self.wrote {
            self.engine.publish_views(self.views);
        }
        let held = self.since.elapsed();
        self.held.observe(held.as_secs_f64());
        if held > LONG_HOLD {
            tracing::debug!(held_us = held.as_micros() as u64, by = %self.by, "the engine's lock was held long");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: &str, name: &str) -> Arc<HostComputeEndpoint> {
        Arc::new(HostComputeEndpoint { id: id.into(), name: name.into(), ..Default::default() })
    }

    #[test]
    fn names_follow_renames_and_removals() {
        let mut n = Names::new();
        rename(&mut n, "b", None, Some("web"));
        rename(&mut n, "a", None, Some("web"));
        assert_eq!(first(&n, "web").as_deref(), Some("a"), "the lowest ID first, as a scan in ID order finds it");
        rename(&mut n, "a", Some("web"), Some("db"));
        assert_eq!(first(&n, "web").as_deref(), Some("b"));
        rename(&mut n, "b", Some("web"), None);
        assert!(!n.contains_key("web"), "an empty entry is dropped");
        assert_eq!(first(&n, "db").as_deref(), Some("a"));
    }

    #[test]
    fn endpoint_lookups_mirror_the_engine() {
        let (a, b) = ("0a000000-0000-0000-0000-000000000001", "0b000000-0000-0000-0000-000000000002");
        let mut v = Views::default();
        for (id, name) in [(a, "twin"), (b, "twin")] {
            v.endpoints.insert(id.into(), ep(id, name));
            rename(&mut v.endpoint_names, id, None, Some(name));
        }
        let remote = "0c000000-0000-0000-0000-000000000003";
        v.remote.insert(("net".into(), remote.into()), ep(remote, "far"));
        let e = v.endpoint("twin").err().expect("ambiguous");
        assert_eq!(e.code, ErrorCode::EndpointNotFound);
        assert!(e.message.contains(&format!("({a}, {b})")), "{}", e.message);
        assert_eq!(v.endpoint(&format!("{{{}}}", b.to_uppercase())).unwrap().0.id, b);
        assert_eq!(v.endpoint("far").unwrap().0.id, remote);
        assert_eq!(v.endpoint(&remote.to_uppercase()).unwrap().0.id, remote);
        assert_eq!(v.endpoint("none").err().unwrap().message, pick_named("none", &[]).unwrap_err().message);
        let ids: Vec<String> = v.endpoints().0.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, [a, b, remote], "this host's endpoints, then the remote ones");
    }
}
