//! The writes an attach makes beside its veth's kernel step: its port mappings' nft elements
//! and its compartment's resolv.conf (a detach: its mappings' elements out). They are prepared
//! under the engine's lock, from the state the request commits, and run without it, on the
//! thread that makes the commit durable meanwhile (`KernelAttach::run`, `KernelDetach::run`):
//! the reply no longer waits for them after the kernel step, under a second turn of the lock.
//!
//! Writing them before the veth exists is harmless: a mapping's DNAT to an address no link
//! holds yet finds no route, as it would a moment later find the container. If the kernel step
//! fails, the attach's undo takes the elements out again (a later turn) and rewrites the file.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hns_kernel::KernelError;
use hns_kernel::nft_elements::{ElementChange, ElementWriter};
use hns_store::{Store, StoreError, Syncing};

use super::nft_order::NftTurn;

/// Idle nfnetlink sockets for element writes, shared by the engine and the steps that run
/// without its lock (each write takes one, or opens one, and gives it back).
#[derive(Clone, Default)]
pub(crate) struct ElementWriters(Arc<Mutex<Vec<ElementWriter>>>);

/// Sockets kept open for later writes: as many writes as this run at once without opening one.
const KEEP_WRITERS: usize = 8;

impl ElementWriters {
    pub(crate) fn take(&self) -> Result<ElementWriter, KernelError> {
        match self.0.lock().expect("element writers poisoned").pop() {
            Some(w) => Ok(w),
            None => ElementWriter::open(),
        }
    }

    pub(crate) fn give_back(&self, w: ElementWriter) {
        let mut idle = self.0.lock().expect("element writers poisoned");
        if idle.len() < KEEP_WRITERS {
            idle.push(w);
        }
    }
}

/// Element changes with their turn among the hns table's writes ([`super::nft_order`]).
pub(crate) struct ElementWrite {
    pub(crate) changes: Vec<ElementChange>,
    pub(crate) turn: NftTurn,
    pub(crate) writers: ElementWriters,
}

impl ElementWrite {
    /// Blocks until its turn, then writes. The turn is passed on when this returns.
    pub(crate) fn run(self) -> Result<(), KernelError> {
        let ElementWrite { changes, turn, writers } = self;
        let mut w = writers.take()?;
        turn.wait();
        let written = w.apply(&changes);
        drop(turn);
        writers.give_back(w);
        written
    }
}

/// A compartment's resolv.conf, rendered under the lock.
pub(crate) struct ResolvFile {
    pub(crate) path: PathBuf,
    pub(crate) content: String,
}

impl ResolvFile {
    pub(crate) fn write(&self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(&self.path, &self.content) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not write resolv.conf");
        }
    }
}

/// What an attach writes beside its kernel step.
#[derive(Default)]
pub(crate) struct StepWrites {
    /// `None`: no mapping, or too many for one netlink batch (written after the step then).
    pub(crate) elements: Option<ElementWrite>,
    pub(crate) resolv: Option<ResolvFile>,
}

/// What came of the [`StepWrites`]: the element write's result (`None`: there was none).
#[derive(Default)]
pub(crate) struct StepWritesDone {
    pub(crate) elements: Option<Result<(), KernelError>>,
    pub(crate) resolv: bool,
}

impl StepWrites {
    /// Blocking (the element write may wait for its turn).
    pub(crate) fn run(self) -> StepWritesDone {
        let elements = self.elements.map(ElementWrite::run);
        if let Some(f) = &self.resolv {
            f.write();
        }
        StepWritesDone { elements, resolv: self.resolv.is_some() }
    }
}

/// The disk's sync that makes a request's lazy commit durable. Started right after the commit
/// (and its failpoint), under the lock, so the disk syncs while the lock is released and the
/// kernel step runs; the reply waits for it at the end ([`DiskSync::wait`]).
pub(crate) enum DiskSync {
    Started(Syncing),
    /// Asked for only when waited for: the store refused to start one (it reports why then),
    /// or a crash test needs the commit not yet durable at a later point.
    Later(Arc<Store>),
}

impl DiskSync {
    pub(crate) fn start(store: &Arc<Store>) -> DiskSync {
        match store.start_sync() {
            Ok(s) => DiskSync::Started(s),
            Err(_) => DiskSync::Later(store.clone()),
        }
    }

    /// Blocks until the commit is on disk.
    pub(crate) fn wait(self) -> Result<(), StoreError> {
        match self {
            DiskSync::Started(s) => s.wait(),
            DiskSync::Later(store) => store.sync(),
        }
    }
}
