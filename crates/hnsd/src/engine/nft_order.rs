//! The order of the writes to the hns nft table (`inet hns`).
//!
//! Two kinds of writes change that table: a full apply ([`hns_kernel::nft::apply`]: the
//! whole table, set and map elements included, compiled from the engine's state) and the
//! element writes of port mappings (`Engine::program_mappings`, one element each). A full
//! apply compiled from the state at time T and run later would erase a mapping element written
//! after T (and put back one removed after T). Under the engine's lock both are in the order
//! of the lock; a network's full apply runs without it (`networks::KernelNetwork`), so the
//! order is kept by turns instead:
//!
//! - every write takes a turn ([`NftOrder::take`]) under the engine's lock, at the moment it
//!   reads the state it writes (a full apply: when its desired state is compiled), and
//! - runs when every earlier turn is done ([`NftTurn::wait`]).
//!
//! So the kernel sees the writes in the order the engine's state changed: a full apply never
//! overwrites a newer element, and an element write made after a full apply's snapshot comes
//! after that apply. A turn taken under the lock and run without it (a network's kernel step)
//! makes the later writers wait (with the lock, as they would have waited for the lock before)
//! only for its `nft -f` itself, never for the rest of its step: the step takes its turn just
//! before the apply (a brief lock of its own). Dropping a turn unused, or after a panic, passes
//! it on.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
pub(crate) struct NftOrder {
    turns: Mutex<Turns>,
    next_up: Condvar,
}

#[derive(Default)]
struct Turns {
    /// The number the next turn gets.
    next: u64,
    /// The turn that may write now.
    serving: u64,
    /// Turns done (or dropped) before their time came.
    done_early: BTreeSet<u64>,
}

/// One write's place in the order (see the module doc).
pub(crate) struct NftTurn {
    order: Arc<NftOrder>,
    n: u64,
}

impl NftOrder {
    /// The next turn. Take it under the engine's lock, with the state the write is made from.
    pub(crate) fn take(self: &Arc<Self>) -> NftTurn {
        let mut t = self.turns.lock().expect("nft order poisoned");
        let n = t.next;
        t.next += 1;
        NftTurn { order: self.clone(), n }
    }
}

impl NftTurn {
    /// Whether every earlier turn is done (then [`NftTurn::wait`] would not block).
    pub(crate) fn is_up(&self) -> bool {
        self.order.turns.lock().expect("nft order poisoned").serving == self.n
    }

    /// Blocks until every earlier turn is done. Run it on a thread that may block (`blocking`,
    /// `spawn_blocking`): an earlier turn may belong to a step running without the lock.
    pub(crate) fn wait(&self) {
        let mut t = self.order.turns.lock().expect("nft order poisoned");
        while t.serving != self.n {
            t = self.order.next_up.wait(t).expect("nft order poisoned");
        }
    }
}

impl Drop for NftTurn {
    fn drop(&mut self) {
        let mut t = self.order.turns.lock().expect("nft order poisoned");
        t.done_early.insert(self.n);
        loop {
            let serving = t.serving;
            if !t.done_early.remove(&serving) {
                break;
            }
            t.serving += 1;
        }
        self.order.next_up.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_run_in_the_order_they_were_taken() {
        let order = Arc::new(NftOrder::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let turns: Vec<NftTurn> = (0..4).map(|_| order.take()).collect();
        let mut threads = Vec::new();
        // Started in reverse: each must still write after the ones taken before it.
        for (i, turn) in turns.into_iter().enumerate().rev() {
            let log = log.clone();
            threads.push(std::thread::spawn(move || {
                turn.wait();
                log.lock().unwrap().push(i);
            }));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_dropped_turn_passes_it_on() {
        let order = Arc::new(NftOrder::default());
        let first = order.take();
        let second = order.take();
        let third = order.take();
        assert!(first.is_up() && !third.is_up());
        drop(second);
        assert!(!third.is_up(), "the first turn is still pending");
        drop(first);
        assert!(third.is_up());
        third.wait();
    }
}
