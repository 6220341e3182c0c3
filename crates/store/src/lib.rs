//! The store: hnsd's truth.
//!
//! An embedded redb database (ACID, crash-safe by default: a committed transaction survives
//! power loss, an uncommitted one leaves no trace). Each API request is one write transaction
//! that holds the object and every allocation it made (its IP, its MAC, the IPAM cursor), so a
//! crash can never leave an address allocated to nothing or an object without its address.
//!
//! Records are serde types encoded as JSON: readable in a dump and tolerant of added fields.
//! The daemon loads everything at start (the working set is small) and keeps it in memory; the
//! store is written through on every change, by one writer thread ([`Store`]'s commits:
//! a commit never waits for another request's disk sync, and the requests that wait for the
//! disk at the same moment share one sync).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

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
    shared: Arc<Shared>,
    path: PathBuf,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// What the store's users and its writer thread share.
struct Shared {
    db: Database,
    queue: Mutex<Queue>,
    /// Signals the writer: a batch is queued, or the store is dropped.
    work: Condvar,
    /// Signals the waiters: a round of the writer ended.
    done: Condvar,
}

/// A change, serialized when it is made: the writer only copies bytes.
enum Op {
    Put(Kind, String, Vec<u8>),
    Delete(Kind, String),
}

/// One committed transaction, waiting for the writer. Tickets count batches in commit order.
struct Batch {
    ticket: u64,
    ops: Vec<Op>,
    durable: bool,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Batch>,
    /// The last ticket handed out.
    issued: u64,
    /// Every batch up to this ticket is in the database (reads see it).
    applied: u64,
    /// ... and on disk.
    durable: u64,
    /// The last ticket of a batch that waits for the disk (or a sync asked for): the writer's
    /// round that applies it syncs the disk, so a sync asked for after it needs no batch of
    /// its own.
    asked: u64,
    /// Transactions committed (syncs asked for are not counted).
    commits: u64,
    /// Rounds of the writer that synced the disk.
    syncs: u64,
    /// Why a round of the writer failed. The daemon's memory already holds what the failed
    /// batches changed, so from then on every write fails with this reason instead of
    /// letting the store fall silently behind.
    broken: Option<String>,
    stop: bool,
}

/// A sync of the disk under way ([`Store::start_sync`]).
pub struct Syncing {
    ticket: u64,
    shared: Arc<Shared>,
}

impl Syncing {
    /// Blocks until the commits made before the sync started are on disk.
    pub fn wait(self) -> Result<()> {
        self.shared.wait_durable(self.ticket)
    }
}

/// One write transaction. Nothing is visible or durable until [`Txn::commit`].
pub struct Txn {
    inner: TxnInner,
}

enum TxnInner {
    /// While the store opens (migrations): redb's own transaction.
    Opening(redb::WriteTransaction),
    /// Afterwards: the changes, handed to the writer thread at commit.
    Queued { ops: Vec<Op>, lazy: bool, shared: Arc<Shared> },
}

impl Txn {
    pub fn put<T: Serialize>(&mut self, kind: Kind, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(txn_err)?;
        match &mut self.inner {
            TxnInner::Opening(w) => {
                let mut t = w.open_table(kind.table()).map_err(txn_err)?;
                t.insert(key, bytes.as_slice()).map_err(txn_err)?;
            }
            TxnInner::Queued { ops, .. } => ops.push(Op::Put(kind, key.to_owned(), bytes)),
        }
        Ok(())
    }

    /// A record as this transaction sees it (its own writes included).
    pub fn get<T: DeserializeOwned>(&self, kind: Kind, key: &str) -> Result<Option<T>> {
        match &self.inner {
            TxnInner::Opening(w) => {
                let t = w.open_table(kind.table()).map_err(txn_err)?;
                let v = t.get(key).map_err(txn_err)?;
                v.map(|v| decode(kind, key, v.value())).transpose()
            }
            TxnInner::Queued { ops, shared, .. } => {
                let own = ops.iter().rev().find_map(|op| match op {
                    Op::Put(k, name, bytes) if *k == kind && name == key => Some(Some(bytes.as_slice())),
                    Op::Delete(k, name) if *k == kind && name == key => Some(None),
                    _ => None,
                });
                match own {
                    Some(bytes) => bytes.map(|b| decode(kind, key, b)).transpose(),
                    None => shared.get(kind, key),
                }
            }
        }
    }

    /// Every record of a kind with its key, in key order, as this transaction sees them.
    pub fn load_all<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<(String, T)>> {
        let mut rows = std::collections::BTreeMap::new();
        match &self.inner {
            TxnInner::Opening(w) => read_table(&w.open_table(kind.table()).map_err(txn_err)?, &mut rows)?,
            TxnInner::Queued { ops, shared, .. } => {
                shared.read_all(kind, &mut rows)?;
                for op in ops {
                    match op {
                        Op::Put(k, key, bytes) if *k == kind => drop(rows.insert(key.clone(), bytes.clone())),
                        Op::Delete(k, key) if *k == kind => drop(rows.remove(key)),
                        _ => {}
                    }
                }
            }
        }
        rows.into_iter().map(|(k, v)| decode(kind, &k, &v).map(|t| (k, t))).collect()
    }

    pub fn delete(&mut self, kind: Kind, key: &str) -> Result<()> {
        match &mut self.inner {
            TxnInner::Opening(w) => {
                let mut t = w.open_table(kind.table()).map_err(txn_err)?;
                t.remove(key).map_err(txn_err)?;
            }
            TxnInner::Queued { ops, .. } => ops.push(Op::Delete(kind, key.to_owned())),
        }
        Ok(())
    }

    /// Commits without waiting for the disk: the write becomes durable with the next
    /// [`Store::sync`] or normal commit. Only for facts the daemon can re-derive after a crash.
    pub fn lazy(&mut self) {
        match &mut self.inner {
            TxnInner::Opening(w) => drop(w.set_durability(redb::Durability::None)),
            TxnInner::Queued { lazy, .. } => *lazy = true,
        }
    }

    /// A normal commit returns once the transaction is on disk; a lazy one at once (reads of
    /// the store see it all the same).
    pub fn commit(self) -> Result<()> {
        match self.inner {
            TxnInner::Opening(w) => w.commit().map_err(txn_err),
            TxnInner::Queued { ops, lazy, shared } => shared.commit(ops, !lazy),
        }
    }
}

fn read_table(t: &impl ReadableTable<&'static str, &'static [u8]>, rows: &mut std::collections::BTreeMap<String, Vec<u8>>) -> Result<()> {
    for item in t.iter().map_err(txn_err)? {
        let (k, v) = item.map_err(txn_err)?;
        rows.insert(k.value().to_owned(), v.value().to_vec());
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(kind: Kind, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { kind, key: key.to_owned(), reason: e.to_string() })
}

/// Commits run on one writer thread, not on the caller's.
///
/// redb lets one write transaction exist at a time, and a durable commit keeps it while the
/// disk syncs (~0.1-2 ms here). Committed on the caller's thread, a request's commit under
/// the engine's lock waited for another request's sync. Here a commit hands its changes (already
/// serialized) to the writer and returns, or waits for the disk when it is a normal commit;
/// the writer applies every batch queued meanwhile in one redb transaction, in ticket order, so
/// the requests that wait for the disk at once share one sync (a group commit).
impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commit(&self, ops: Vec<Op>, durable: bool) -> Result<()> {
        let mut q = self.lock();
        if let Some(why) = &q.broken {
            return Err(broken(why));
        }
        if ops.is_empty() {
            return Ok(());
        }
        let ticket = self.queue_batch(&mut q, ops, durable);
        drop(q);
        if durable { self.wait_durable(ticket) } else { Ok(()) }
    }

    /// Hands a batch to the writer; returns its ticket.
    fn queue_batch(&self, q: &mut Queue, ops: Vec<Op>, durable: bool) -> u64 {
        q.issued += 1;
        q.commits += u64::from(!ops.is_empty());
        let ticket = q.issued;
        if durable {
            q.asked = ticket;
        }
        q.pending.push(Batch { ticket, ops, durable });
        self.work.notify_one();
        ticket
    }

    /// Asks the writer to make every commit so far durable; returns the ticket to wait for.
    fn start_sync(&self) -> Result<u64> {
        let mut q = self.lock();
        if let Some(why) = &q.broken {
            return Err(broken(why));
        }
        // Already on disk, or the round that syncs the last batch is coming.
        if q.durable == q.issued || q.asked == q.issued {
            return Ok(q.issued);
        }
        Ok(self.queue_batch(&mut q, Vec::new(), true))
    }

    /// Blocks until every batch up to `ticket` is on disk.
    fn wait_durable(&self, ticket: u64) -> Result<()> {
        let mut q = self.lock();
        loop {
            if q.durable >= ticket {
                return Ok(());
            }
            if let Some(why) = &q.broken {
                return Err(broken(why));
            }
            q = self.done.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until every batch committed so far is in the database, so a read sees it.
    fn applied(&self) {
        let mut q = self.lock();
        let ticket = q.issued;
        while q.applied < ticket && q.broken.is_none() {
            q = self.done.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn get<T: DeserializeOwned>(&self, kind: Kind, key: &str) -> Result<Option<T>> {
        self.applied();
        let r = self.db.begin_read().map_err(txn_err)?;
        let t = r.open_table(kind.table()).map_err(txn_err)?;
        let v = t.get(key).map_err(txn_err)?;
        v.map(|v| decode(kind, key, v.value())).transpose()
    }

    fn read_all(&self, kind: Kind, rows: &mut std::collections::BTreeMap<String, Vec<u8>>) -> Result<()> {
        self.applied();
        let r = self.db.begin_read().map_err(txn_err)?;
        read_table(&r.open_table(kind.table()).map_err(txn_err)?, rows)
    }

    /// The writer thread: a round takes every queued batch and applies them in one
    /// transaction, durable when one of them waits for the disk.
    fn write_rounds(&self) {
        loop {
            let round = {
                let mut q = self.lock();
                while q.pending.is_empty() && !q.stop {
                    q = self.work.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                if q.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut q.pending)
            };
            let last = round.last().map_or(0, |b| b.ticket);
            let durable = round.iter().any(|b| b.durable);
            let written = self.apply(&round, durable);
            let mut q = self.lock();
            match written {
                Ok(()) => {
                    q.applied = last;
                    if durable {
                        q.durable = last;
                        q.syncs += 1;
                    }
                }
                Err(e) => {
                    q.broken.get_or_insert_with(|| e.to_string());
                }
            }
            self.done.notify_all();
        }
    }

    fn apply(&self, round: &[Batch], durable: bool) -> Result<()> {
        let mut w = self.db.begin_write().map_err(txn_err)?;
        if !durable {
            w.set_durability(redb::Durability::None).map_err(txn_err)?;
        }
        for op in round.iter().flat_map(|b| &b.ops) {
            match op {
                Op::Put(kind, key, bytes) => drop(w.open_table(kind.table()).map_err(txn_err)?.insert(key.as_str(), bytes.as_slice()).map_err(txn_err)?),
                Op::Delete(kind, key) => drop(w.open_table(kind.table()).map_err(txn_err)?.remove(key.as_str()).map_err(txn_err)?),
            }
        }
        w.commit().map_err(txn_err)
    }
}

fn broken(why: &str) -> StoreError {
    StoreError::Txn(format!("an earlier write failed ({why}); the store no longer matches hnsd's state: restart hnsd"))
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
        // One transaction: a store refused or failing its migration is not written at all
        // (dropping the transaction aborts it).
        let w = db.begin_write().map_err(txn_err)?;
        for k in Kind::ALL {
            w.open_table(k.table()).map_err(txn_err)?;
        }
        let mut txn = Txn { inner: TxnInner::Opening(w) };
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
        let shared = Arc::new(Shared { db, queue: Mutex::default(), work: Condvar::new(), done: Condvar::new() });
        let on_thread = shared.clone();
        let writer = std::thread::Builder::new()
            .name("hns-store".into())
            .spawn(move || on_thread.write_rounds())
            .map_err(|e| StoreError::Open { path: shown, reason: format!("starting its writer thread: {e}") })?;
        Ok(Store { shared, path: path.to_owned(), writer: Some(writer) })
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
        Ok(Txn { inner: TxnInner::Queued { ops: Vec::new(), lazy: false, shared: self.shared.clone() } })
    }

    /// Makes every commit so far durable, [`Txn::lazy`] ones too. Callers at the same moment
    /// share one sync of the disk.
    pub fn sync(&self) -> Result<()> {
        self.start_sync()?.wait()
    }

    /// [`Store::sync`] in two halves: the writer starts syncing the disk now, and
    /// [`Syncing::wait`] returns once every commit made before this call is durable. A request
    /// starts it right after its lazy commit and waits at its end, so the disk's sync runs
    /// alongside everything in between (the lock released, the kernel step).
    pub fn start_sync(&self) -> Result<Syncing> {
        Ok(Syncing { ticket: self.shared.start_sync()?, shared: self.shared.clone() })
    }

    /// How many transactions were committed since the store opened (lazy ones included).
    pub fn commits(&self) -> u64 {
        self.shared.lock().commits
    }

    /// How many times the store synced the disk since it opened (fewer than the durable
    /// commits and syncs asked for when they came together).
    pub fn disk_syncs(&self) -> u64 {
        self.shared.lock().syncs
    }

    pub fn get<T: DeserializeOwned>(&self, kind: Kind, key: &str) -> Result<Option<T>> {
        self.shared.get(kind, key)
    }

    /// Every record of a kind, in key order.
    pub fn load_all<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>> {
        let mut rows = std::collections::BTreeMap::new();
        self.shared.read_all(kind, &mut rows)?;
        rows.iter().map(|(k, v)| decode(kind, k, v)).collect()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The writer finishes the queued batches (lazy ones stay as lazy as they were) and stops, and
/// the database is closed when this returns: the same process may open it again.
impl Drop for Store {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
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

    /// A sync started after a lazy commit makes it durable when waited for; a sync asked for
    /// when everything is on disk already (or about to be) syncs nothing more.
    #[test]
    fn a_started_sync_covers_the_commits_before_it() {
        let dir = std::env::temp_dir().join(format!("hns-store-test-started-{}", std::process::id()));
        let path = dir.join("hns.redb");
        let s = Store::open(&path, &[]).unwrap();
        let lazy = |key: &str, v: u32| {
            let mut t = s.begin().unwrap();
            t.lazy();
            t.put(Kind::Meta, key, &v).unwrap();
            t.commit().unwrap();
        };
        let on_disk = |key: &str| {
            let copy = dir.join(format!("copy-{key}.redb"));
            std::fs::copy(&path, &copy).unwrap();
            Store::open(&copy, &[]).unwrap().get::<u32>(Kind::Meta, key).unwrap()
        };
        lazy("a", 1);
        let before = s.disk_syncs();
        let first = s.start_sync().unwrap();
        lazy("b", 2);
        first.wait().unwrap();
        assert_eq!(on_disk("a"), Some(1), "the started sync did not make the commit before it durable");
        assert_eq!(s.disk_syncs(), before + 1);
        // "b" came after the first sync started (the writer may have taken it into that sync's
        // round, or not): one more sync at most.
        let second = s.start_sync().unwrap();
        let third = s.start_sync().unwrap();
        second.wait().unwrap();
        third.wait().unwrap();
        assert_eq!(on_disk("b"), Some(2), "the second sync did not make the later commit durable");
        let synced = s.disk_syncs();
        assert!(synced <= before + 2, "two syncs asked for together synced the disk twice");
        s.start_sync().unwrap().wait().unwrap();
        assert_eq!(s.disk_syncs(), synced, "a sync with nothing new to write synced the disk");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Commits from many threads at once: every durable one is on disk when it returns, each
    /// key holds its last write (the writer keeps commit order), and lazy ones become durable
    /// with a sync.
    #[test]
    fn concurrent_commits_keep_their_order_and_durability() {
        let dir = std::env::temp_dir().join(format!("hns-store-test-concurrent-{}", std::process::id()));
        let path = dir.join("hns.redb");
        let s = Store::open(&path, &[]).unwrap();
        std::thread::scope(|scope| {
            for t in 0..8u32 {
                let s = &s;
                scope.spawn(move || {
                    for i in 0..50u32 {
                        let mut txn = s.begin().unwrap();
                        if i % 2 == 1 {
                            txn.lazy();
                        }
                        txn.put(Kind::Meta, &format!("t{t}"), &i).unwrap();
                        txn.put(Kind::Endpoint, &format!("t{t}-{i}"), &i).unwrap();
                        txn.commit().unwrap();
                        assert_eq!(s.get::<u32>(Kind::Meta, &format!("t{t}")).unwrap(), Some(i), "a read missed this thread's own commit");
                    }
                });
            }
        });
        s.sync().unwrap();
        // Lazy commits do not sync the disk; the one sync after them does, once.
        let before = s.disk_syncs();
        for i in 0..100u32 {
            let mut txn = s.begin().unwrap();
            txn.lazy();
            txn.put(Kind::Meta, "lazy", &i).unwrap();
            txn.commit().unwrap();
        }
        s.sync().unwrap();
        assert_eq!(s.disk_syncs(), before + 1, "lazy commits synced the disk");
        drop(s);
        let s = Store::open(&path, &[]).unwrap();
        for t in 0..8u32 {
            assert_eq!(s.get::<u32>(Kind::Meta, &format!("t{t}")).unwrap(), Some(49), "thread {t}'s last write is not the one kept");
        }
        assert_eq!(s.load_all::<u32>(Kind::Endpoint).unwrap().len(), 400);
        assert_eq!(s.get::<u32>(Kind::Meta, "lazy").unwrap(), Some(99), "the sync did not make the lazy commits durable");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A transaction reads its own writes over what the store holds.
    #[test]
    fn a_transaction_sees_its_own_writes() {
        let dir = std::env::temp_dir().join(format!("hns-store-test-own-{}", std::process::id()));
        let s = Store::open(&dir.join("hns.redb"), &[]).unwrap();
        let mut t = s.begin().unwrap();
        t.put(Kind::Network, "a", &1u32).unwrap();
        t.put(Kind::Network, "b", &2u32).unwrap();
        t.commit().unwrap();
        let mut t = s.begin().unwrap();
        t.delete(Kind::Network, "a").unwrap();
        t.put(Kind::Network, "c", &3u32).unwrap();
        t.put(Kind::Network, "b", &4u32).unwrap();
        assert_eq!(t.get::<u32>(Kind::Network, "a").unwrap(), None);
        assert_eq!(t.get::<u32>(Kind::Network, "b").unwrap(), Some(4));
        assert_eq!(t.load_all::<u32>(Kind::Network).unwrap(), vec![("b".to_owned(), 4), ("c".to_owned(), 3)]);
        drop(t); // aborted: the store still holds a and b
        assert_eq!(s.load_all::<u32>(Kind::Network).unwrap(), vec![1, 2]);
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
