//! Counters of what the responder did, read by the daemon for its live view.
//! Plain relaxed atomics: they are statistics, not synchronisation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of the counters since the service started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Queries answered from a network's own names (including "name exists,
    /// no record of that type").
    pub answered_local: u64,
    /// Queries answered with an upstream's answer, fresh or from the cache.
    pub forwarded: u64,
    /// The part of `forwarded` served from the cache.
    pub cache_hits: u64,
    /// Queries answered with an error we produced: SERVFAIL (every upstream
    /// failed, or the bound on forwards in flight was reached), REFUSED (no
    /// upstream, or not class IN), FORMERR, NOTIMP. (FORMERR that
    /// hickory-server sends for bodies it cannot parse is not counted.)
    pub failed: u64,
    /// Queries or connections that got no answer at all: queries from a
    /// source outside the network's subnets, TCP connections
    /// over the limit, TCP messages that are oversized or not a query,
    /// answers that could not be sent. (UDP datagrams that hickory-server
    /// discards before they reach us, e.g. shorter than a DNS header, and TCP
    /// connections closed for idling are not counted.)
    pub dropped: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    answered_local: AtomicU64,
    forwarded: AtomicU64,
    cache_hits: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    pub fn local(&self) {
        self.answered_local.fetch_add(1, Relaxed);
    }
    pub fn forwarded(&self, from_cache: bool) {
        self.forwarded.fetch_add(1, Relaxed);
        if from_cache {
            self.cache_hits.fetch_add(1, Relaxed);
        }
    }
    pub fn failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }
    pub fn snapshot(&self) -> DnsStats {
        DnsStats {
            answered_local: self.answered_local.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            failed: self.failed.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }
}
