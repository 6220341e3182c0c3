//! The endpoint records in memory, with the indexes that keep the per-request steps from
//! scanning every endpoint on the host: the endpoints of each compartment (its interface names,
//! its resolv.conf, its default routes after a detach), of each network (its DNS names), and
//! by name (lookups by name).
//!
//! Reads go through [`std::ops::Deref`] to the map of records by ID. Writes are only
//! [`EndpointMap::insert`] and [`EndpointMap::remove`], which keep the indexes: there is no
//! mutable access to a record in place, so an index can never miss a change of compartment or
//! network.
//!
//! The same writes note what changed for the read model (`views`): the endpoints, and the
//! compartments whose list of attached endpoints changed. [`Tracked`] does the same for the
//! engine's other maps of API objects (networks, compartments, port mappings, load balancers):
//! every way to change an entry notes its key, so the read model cannot miss a change.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::records::EndpointRecord;

/// Endpoint IDs, sorted. A vector, not a `BTreeSet`: most compartments have one endpoint, for
/// which a B-tree's node takes ~290 bytes (1.4 MB at 5 000 compartments); an insert or removal
/// moves at most a network's IDs (24 bytes each).
type Ids = Vec<String>;

#[derive(Default)]
pub(crate) struct EndpointMap {
    all: BTreeMap<String, EndpointRecord>,
    /// Compartment ID -> IDs of the endpoints attached there.
    by_namespace: HashMap<String, Ids>,
    /// Network ID -> IDs of its endpoints.
    by_network: HashMap<String, Ids>,
    /// Endpoint name -> IDs of the endpoints with that name (one per network at most).
    by_name: HashMap<String, Ids>,
    /// Endpoints inserted or removed since the read model last took them.
    changed: BTreeSet<String>,
    /// Compartments whose set of attached endpoints changed since then.
    changed_namespaces: BTreeSet<String>,
}

impl std::ops::Deref for EndpointMap {
    type Target = BTreeMap<String, EndpointRecord>;
    fn deref(&self) -> &Self::Target {
        &self.all
    }
}

fn add(index: &mut HashMap<String, Ids>, key: &str, id: &str) {
    if !key.is_empty() {
        let ids = index.entry(key.to_owned()).or_default();
        if let Err(at) = ids.binary_search_by(|x| x.as_str().cmp(id)) {
            ids.insert(at, id.to_owned());
        }
    }
}

fn drop_from(index: &mut HashMap<String, Ids>, key: &str, id: &str) {
    if let Some(ids) = index.get_mut(key) {
        if let Ok(at) = ids.binary_search_by(|x| x.as_str().cmp(id)) {
            ids.remove(at);
        }
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

impl EndpointMap {
    /// Inserts or replaces the record of `id`, moving it in the indexes.
    pub fn insert(&mut self, id: String, rec: EndpointRecord) -> Option<EndpointRecord> {
        debug_assert_eq!(id, rec.ep.id);
        self.index(&id, &rec);
        self.changed.insert(id.clone());
        let ns = rec.ep.host_compute_namespace.clone();
        let old = self.all.insert(id.clone(), rec);
        if old.as_ref().is_none_or(|o| o.ep.host_compute_namespace != ns) {
            mark(&mut self.changed_namespaces, &ns);
        }
        if let Some(o) = &old {
            let now = &self.all[&id];
            if o.ep.host_compute_namespace != now.ep.host_compute_namespace {
                drop_from(&mut self.by_namespace, &o.ep.host_compute_namespace, &id);
                mark(&mut self.changed_namespaces, &o.ep.host_compute_namespace);
            }
            if o.network_id != now.network_id {
                drop_from(&mut self.by_network, &o.network_id, &id);
            }
            if o.ep.name != now.ep.name {
                drop_from(&mut self.by_name, &o.ep.name, &id);
            }
        }
        old
    }

    pub fn remove(&mut self, id: &str) -> Option<EndpointRecord> {
        let old = self.all.remove(id)?;
        self.changed.insert(id.to_owned());
        mark(&mut self.changed_namespaces, &old.ep.host_compute_namespace);
        drop_from(&mut self.by_namespace, &old.ep.host_compute_namespace, id);
        drop_from(&mut self.by_network, &old.network_id, id);
        drop_from(&mut self.by_name, &old.ep.name, id);
        Some(old)
    }

    fn index(&mut self, id: &str, rec: &EndpointRecord) {
        add(&mut self.by_namespace, &rec.ep.host_compute_namespace, id);
        add(&mut self.by_network, &rec.network_id, id);
        add(&mut self.by_name, &rec.ep.name, id);
    }

    fn lookup<'a>(&'a self, index: &'a HashMap<String, Ids>, key: &str) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        index.get(key).into_iter().flatten().filter_map(|id| self.all.get(id))
    }

    /// The endpoints attached to the compartment `ns_id`, by ID.
    pub fn in_namespace<'a>(&'a self, ns_id: &str) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        self.lookup(&self.by_namespace, ns_id)
    }

    /// The endpoints of the network `net_id` (attached or not), by ID.
    pub fn on_network<'a>(&'a self, net_id: &str) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        self.lookup(&self.by_network, net_id)
    }

    /// The endpoints named `name`, by ID.
    pub fn named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        self.lookup(&self.by_name, name)
    }

    /// The endpoints inserted or removed since the last call, and the compartments whose
    /// attached endpoints changed.
    pub fn take_changed(&mut self) -> (BTreeSet<String>, BTreeSet<String>) {
        (std::mem::take(&mut self.changed), std::mem::take(&mut self.changed_namespaces))
    }
}

fn mark(set: &mut BTreeSet<String>, key: &str) {
    if !key.is_empty() && !set.contains(key) {
        set.insert(key.to_owned());
    }
}

/// A map of API objects by ID that notes the key of every entry changed (inserted, removed or
/// borrowed mutably) until [`Tracked::take_changed`]. Reads go through [`std::ops::Deref`].
pub(crate) struct Tracked<V> {
    all: BTreeMap<String, V>,
    changed: BTreeSet<String>,
}

impl<V> Default for Tracked<V> {
    fn default() -> Self {
        Tracked { all: BTreeMap::new(), changed: BTreeSet::new() }
    }
}

impl<V> std::ops::Deref for Tracked<V> {
    type Target = BTreeMap<String, V>;
    fn deref(&self) -> &Self::Target {
        &self.all
    }
}

impl<V> Tracked<V> {
    pub fn insert(&mut self, id: String, v: V) -> Option<V> {
        mark(&mut self.changed, &id);
        self.all.insert(id, v)
    }

    pub fn remove(&mut self, id: &str) -> Option<V> {
        let old = self.all.remove(id)?;
        mark(&mut self.changed, id);
        Some(old)
    }

    /// The entry of `id`, noted as changed (whether or not the caller changes it).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        let v = self.all.get_mut(id)?;
        mark(&mut self.changed, id);
        Some(v)
    }

    /// The entry of `id`, made with `V::default()` if missing; noted as changed.
    pub fn get_or_default(&mut self, id: &str) -> &mut V
    where
        V: Default,
    {
        mark(&mut self.changed, id);
        self.all.entry(id.to_owned()).or_default()
    }

    /// The keys changed since the last call.
    pub fn take_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, net: &str, ns: &str, name: &str) -> EndpointRecord {
        let ep = hns_api::HostComputeEndpoint { id: id.into(), name: name.into(), host_compute_namespace: ns.into(), ..Default::default() };
        EndpointRecord::new(ep, net.into(), Vec::new(), None)
    }

    fn ids<'a>(it: impl Iterator<Item = &'a EndpointRecord>) -> Vec<&'a str> {
        it.map(|r| r.ep.id.as_str()).collect()
    }

    #[test]
    fn indexes_follow_inserts_moves_and_removals() {
        let mut m = EndpointMap::default();
        m.insert("a".into(), rec("a", "n1", "", "web"));
        m.insert("b".into(), rec("b", "n1", "c1", ""));
        m.insert("c".into(), rec("c", "n2", "c1", "web"));
        assert_eq!(ids(m.in_namespace("c1")), ["b", "c"]);
        assert_eq!(ids(m.in_namespace("")), Vec::<&str>::new());
        assert_eq!(ids(m.on_network("n1")), ["a", "b"]);
        assert_eq!(ids(m.named("web")), ["a", "c"]);
        // Attached, moved, renamed, detached: each replaces the record.
        m.insert("a".into(), rec("a", "n1", "c2", "web"));
        m.insert("b".into(), rec("b", "n1", "c2", "db"));
        assert_eq!(ids(m.in_namespace("c1")), ["c"]);
        assert_eq!(ids(m.in_namespace("c2")), ["a", "b"]);
        assert_eq!(ids(m.named("db")), ["b"]);
        m.insert("c".into(), rec("c", "n2", "", "web"));
        assert!(!m.by_namespace.contains_key("c1"), "an empty entry is dropped");
        assert_eq!(m.remove("a").map(|r| r.ep.id.clone()), Some("a".to_owned()));
        assert_eq!(ids(m.on_network("n1")), ["b"]);
        assert_eq!(ids(m.named("web")), ["c"]);
        assert_eq!(ids(m.in_namespace("c2")), ["b"]);
        assert!(m.remove("a").is_none());
        assert_eq!(m.len(), 2);
    }
}
