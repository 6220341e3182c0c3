//! The store: hnsd's truth.
//!
//! An embedded redb database (ACID, crash-safe by default: a committed transaction survives
//! power loss, an uncommitted one leaves no trace). Each API request is one write transaction
//! that holds the object and every allocation it made (its IP, its MAC, the IPAM cursor), so a
//! crash can never leave an address allocated to nothing or an object without its address.
//!
//! Records are serde types encoded as JSON: readable in a dump and tolerant of added fields.
//! The daemon loads everything at start (the working set is small) and keeps it in memory; the
//! store is written through on every change.

use std::path::{Path, PathBuf};

use redb::{Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version of the on-disk layout. Bumped when a change needs a migration.
///
/// 2: endpoint records hold their addresses and MAC typed beside the API object (hnsd's
/// migration from 1 computes them from the API object's strings).
pub const FORMAT_VERSION: u32 = 2;

/// One step of the on-disk layout, from format `from` to `from + 1`. The store does not know
/// the records' types (hnsd does), so the daemon hands its steps to [`Store::open`]. A step
/// runs inside the opening write transaction: an `Err` (why, naming the record, the field and
/// the value) aborts the transaction and leaves the store as it was.
#[derive(Clone, Copy)]
pub struct Migration {
    pub from: u32,
    pub run: fn(&mut Txn) -> std::result::Result<(), String>,
}

/// redb's page cache. Its default (1 GiB) lets the cache grow with every page ever read or
/// written, which made most of hnsd's memory at thousands of endpoints; the daemon reads the
/// store once at start and then only writes through, so a small cache costs nothing measurable.
const CACHE_BYTES: usize = 4 << 20;

/// The kinds of records, one redb table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Network,
    Endpoint,
    Namespace,
    /// Port mappings, one record each (an endpoint may hold thousands; changing one must
    /// not rewrite the others).
    PortMapping,
    /// Small daemon facts: format version, whether the default network was ever created.
    Meta,
    /// Load balancers (HostComputeLoadBalancer), one record each.
    LoadBalancer,
}

impl Kind {
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Kind::Network => TableDefinition::new("networks"),
            Kind::Endpoint => TableDefinition::new("endpoints"),
            Kind::Namespace => TableDefinition::new("namespaces"),
            Kind::PortMapping => TableDefinition::new("portmappings"),
            Kind::Meta => TableDefinition::new("meta"),
            Kind::LoadBalancer => TableDefinition::new("loadbalancers"),
        }
    }
    const ALL: [Kind; 6] = [Kind::Network, Kind::Endpoint, Kind::Namespace, Kind::PortMapping, Kind::Meta, Kind::LoadBalancer];
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store {path} has format version {found}, newer than this hnsd understands ({FORMAT_VERSION}); run a newer hnsd")]
    TooNew { path: String, found: u32 },
    #[error("store {path} has format version {from}; migrating it to {to} failed, and it was left at {from} unchanged: {reason}")]
    Migrate { path: String, from: u32, to: u32, reason: String },
    #[error("store transaction failed: {0}")]
    Txn(String),
    #[error("store record {kind:?}/{key} is corrupt: {reason}")]
    Corrupt { kind: Kind, key: String, reason: String },
}

fn txn_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Txn(e.to_string())
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub struct Store {
    db: Database,
    path: PathBuf,
}

/// One write transaction. Nothing is visible or durable until [`Txn::commit`].
pub struct Txn {
    inner: redb::WriteTransaction,
}

impl Txn {
    pub fn put<T: Serialize>(&mut self, kind: Kind, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(txn_err)?;
        let mut t = self.inner.open_table(kind.table()).map_err(txn_err)?;
        t.insert(key, bytes.as_slice()).map_err(txn_err)?;
        Ok(())
    }

    /// A record as this transaction sees it (its own writes included).
    pub fn get<T: DeserializeOwned>(&self, kind: Kind, key: &str) -> Result<Option<T>> {
        let t = self.inner.open_table(kind.table()).map_err(txn_err)?;
        let v = t.get(key).map_err(txn_err)?;
        v.map(|v| decode(kind, key, v.value())).transpose()
    }

    /// Every record of a kind with its key, in key order, as this transaction sees them.
    pub fn load_all<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<(String, T)>> {
        let t = self.inner.open_table(kind.table()).map_err(txn_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(txn_err)? {
            let (k, v) = item.map_err(txn_err)?;
            out.push((k.value().to_owned(), decode(kind, k.value(), v.value())?));
        }
        Ok(out)
    }

    pub fn delete(&mut self, kind: Kind, key: &str) -> Result<()> {
        let mut t = self.inner.open_table(kind.table()).map_err(txn_err)?;
        t.remove(key).map_err(txn_err)?;
        Ok(())
    }

    /// Commits without waiting for the disk: the write becomes durable with the next normal
    /// commit. Only for facts the daemon can re-derive after a crash.
    pub fn lazy(&mut self) {
        let _ = self.inner.set_durability(redb::Durability::None);
    }

    pub fn commit(self) -> Result<()> {
        self.inner.commit().map_err(txn_err)
    }
}

fn decode<T: DeserializeOwned>(kind: Kind, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { kind, key: key.to_owned(), reason: e.to_string() })
}

impl Store {
    /// Opens (or creates) the store at `path`, checking its format version. An older store is
    /// brought to [`FORMAT_VERSION`] by `migrations` in the same write transaction that
    /// writes the new version: it is migrated whole or not at all.
    pub fn open(path: &Path, migrations: &[Migration]) -> Result<Store> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open { path: shown.clone(), reason: e.to_string() })?;
        }
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| StoreError::Open { path: shown.clone(), reason: e.to_string() })?;
        let store = Store { db, path: path.to_owned() };
        // One transaction: a store refused or failing its migration is not written at all
        // (dropping the transaction aborts it).
        let mut txn = store.begin()?;
        for k in Kind::ALL {
            txn.inner.open_table(k.table()).map_err(txn_err)?;
        }
        match txn.get::<u32>(Kind::Meta, "format_version")? {
            Some(v) if v > FORMAT_VERSION => return Err(StoreError::TooNew { path: shown, found: v }),
            Some(FORMAT_VERSION) => {}
            Some(found) => {
                for from in found..FORMAT_VERSION {
                    let failed = |reason: String| StoreError::Migrate { path: shown.clone(), from: found, to: FORMAT_VERSION, reason };
                    let step = migrations.iter().find(|m| m.from == from).ok_or_else(|| failed(format!("this hnsd has no migration from format {from}")))?;
                    (step.run)(&mut txn).map_err(|reason| failed(format!("step {from} to {}: {reason}", from + 1)))?;
                }
                txn.put(Kind::Meta, "format_version", &FORMAT_VERSION)?;
            }
            // A new store (every store written since format 1 holds its version).
            None => txn.put(Kind::Meta, "format_version", &FORMAT_VERSION)?,
        }
        txn.commit()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record of the store at `path` as stored (kind, key, bytes), read without opening
    /// it for writing and without checking or migrating its format: a store that does not open
    /// can still be looked at, and compared (redb rewrites its file header on every open, so a
    /// store's file is not the same bytes twice).
    pub fn snapshot(path: &Path) -> Result<Vec<(Kind, String, Vec<u8>)>> {
        let db = ReadOnlyDatabase::open(path).map_err(|e| StoreError::Open { path: path.display().to_string(), reason: e.to_string() })?;
        let r = db.begin_read().map_err(txn_err)?;
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let t = match r.open_table(kind.table()) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(txn_err(e)),
            };
            for item in t.iter().map_err(txn_err)? {
                let (k, v) = item.map_err(txn_err)?;
                out.push((kind, k.value().to_owned(), v.value().to_vec()));
            }
        }
        Ok(out)
    }

    pub fn begin(&self) -> Result<Txn> {
        Ok(Txn { inner: self.db.begin_write().map_err(txn_err)? })
    }

    /// Makes every commit so far durable, [`Txn::lazy`] ones too: an empty commit that waits
    /// for the disk.
    pub fn sync(&self) -> Result<()> {
        self.begin()?.commit()
    }

    pub fn get<T: DeserializeOwned>(&self, kind: Kind, key: &str) -> Result<Option<T>> {
        let r = self.db.begin_read().map_err(txn_err)?;
        let t = r.open_table(kind.table()).map_err(txn_err)?;
        let v = t.get(key).map_err(txn_err)?;
        v.map(|v| decode(kind, key, v.value())).transpose()
    }

    /// Every record of a kind, in key order.
    pub fn load_all<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>> {
        let r = self.db.begin_read().map_err(txn_err)?;
        let t = r.open_table(kind.table()).map_err(txn_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(txn_err)? {
            let (k, v) = item.map_err(txn_err)?;
            out.push(decode(kind, k.value(), v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a crash would leave: a lazy commit is not in the file until a sync (the attach's
    /// crash repair counts on both).
    #[test]
    fn sync_makes_lazy_commits_durable() {
        let dir = std::env::temp_dir().join(format!("hns-store-test-sync-{}", std::process::id()));
        let path = dir.join("hns.redb");
        let s = Store::open(&path, &[]).unwrap();
        let mut t = s.begin().unwrap();
        t.lazy();
        t.put(Kind::Meta, "k", &7u32).unwrap();
        t.commit().unwrap();
        assert_eq!(s.get::<u32>(Kind::Meta, "k").unwrap(), Some(7), "a lazy commit is visible at once");
        let on_disk = |name: &str| {
            let copy = dir.join(name);
            std::fs::copy(&path, &copy).unwrap();
            Store::open(&copy, &[]).unwrap().get::<u32>(Kind::Meta, "k").unwrap()
        };
        assert_eq!(on_disk("before.redb"), None, "a lazy commit is in the file before a sync");
        s.sync().unwrap();
        assert_eq!(on_disk("after.redb"), Some(7), "the sync did not make the lazy commit durable");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn committed_writes_survive_reopen_and_uncommitted_ones_vanish() {
        let dir = std::env::temp_dir().join(format!("hns-store-test-{}", std::process::id()));
        let path = dir.join("hns.redb");
        {
            let s = Store::open(&path, &[]).unwrap();
            let mut t = s.begin().unwrap();
            t.put(Kind::Network, "a", &serde_json::json!({"Name": "a"})).unwrap();
            t.commit().unwrap();
            let mut t = s.begin().unwrap();
            t.put(Kind::Network, "b", &serde_json::json!({"Name": "b"})).unwrap();
            drop(t); // aborted
        }
        let s = Store::open(&path, &[]).unwrap();
        let all: Vec<serde_json::Value> = s.load_all(Kind::Network).unwrap();
        assert_eq!(all, vec![serde_json::json!({"Name": "a"})]);
        assert_eq!(s.get::<u32>(Kind::Meta, "format_version").unwrap(), Some(FORMAT_VERSION));
        let mut t = s.begin().unwrap();
        t.delete(Kind::Network, "a").unwrap();
        t.commit().unwrap();
        assert!(s.load_all::<serde_json::Value>(Kind::Network).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_newer_format() {
        let dir = std::env::temp_dir().join(format!("hns-store-test-new-{}", std::process::id()));
        let path = dir.join("hns.redb");
        {
            let s = Store::open(&path, &[]).unwrap();
            let mut t = s.begin().unwrap();
            t.put(Kind::Meta, "format_version", &(FORMAT_VERSION + 1)).unwrap();
            t.commit().unwrap();
        }
        let err = Store::open(&path, &[]).err().expect("must refuse");
        assert!(matches!(err, StoreError::TooNew { found: 3, .. }) && err.to_string().contains("newer"), "{err}");
        // Refused without a write: still version 3.
        let meta: Vec<_> = Store::snapshot(&path).unwrap().into_iter().filter(|(k, key, _)| *k == Kind::Meta && key == "format_version").map(|(_, _, v)| v).collect();
        assert_eq!(meta, vec![b"3".to_vec()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A store at format 1 with one record, written the way hnsd 1 did.
    fn v1_store(dir: &Path) -> PathBuf {
        let path = dir.join("hns.redb");
        let s = Store::open(&path, &[]).unwrap();
        let mut t = s.begin().unwrap();
        t.put(Kind::Meta, "format_version", &1u32).unwrap();
        t.put(Kind::Endpoint, "e1", &serde_json::json!({"v": 1})).unwrap();
        t.put(Kind::Endpoint, "e2", &serde_json::json!({"v": 2})).unwrap();
        t.commit().unwrap();
        path
    }

    fn bump(t: &mut Txn) -> std::result::Result<(), String> {
        for (k, mut v) in t.load_all::<serde_json::Value>(Kind::Endpoint).map_err(|e| e.to_string())? {
            v["typed"] = true.into();
            t.put(Kind::Endpoint, &k, &v).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    #[test]
    fn migrates_an_older_format_in_one_transaction() {
        let dir = std::env::temp_dir().join(format!("hns-store-test-migrate-{}", std::process::id()));
        let path = v1_store(&dir);
        let s = Store::open(&path, &[Migration { from: 1, run: bump }]).unwrap();
        assert_eq!(s.get::<u32>(Kind::Meta, "format_version").unwrap(), Some(FORMAT_VERSION));
        let all: Vec<serde_json::Value> = s.load_all(Kind::Endpoint).unwrap();
        assert_eq!(all, vec![serde_json::json!({"v": 1, "typed": true}), serde_json::json!({"v": 2, "typed": true})]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_migration_leaves_the_store_as_it_was() {
        fn half(t: &mut Txn) -> std::result::Result<(), String> {
            bump(t)?; // both records written in the transaction...
            Err("endpoint e2: IpAddress \"bogus\" is not an address".into()) // ...then a failure
        }
        let dir = std::env::temp_dir().join(format!("hns-store-test-migrate-fail-{}", std::process::id()));
        let path = v1_store(&dir);
        let before = Store::snapshot(&path).unwrap();
        assert_eq!(before.len(), 3, "{before:?}");
        let err = Store::open(&path, &[Migration { from: 1, run: half }]).err().expect("must fail");
        assert!(matches!(err, StoreError::Migrate { from: 1, to: 2, .. }), "{err}");
        assert!(err.to_string().contains("endpoint e2: IpAddress \"bogus\""), "{err}");
        assert!(Store::snapshot(&path).unwrap() == before, "a failed migration changed the records");
        // Without a migration for its format, the store is refused the same way.
        let err = Store::open(&path, &[]).err().expect("must fail");
        assert!(err.to_string().contains("no migration from format 1"), "{err}");
        assert!(Store::snapshot(&path).unwrap() == before, "a refused store was changed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
