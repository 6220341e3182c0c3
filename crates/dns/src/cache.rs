//! A bounded cache of upstream answers, positive and negative, kept for
//! their TTL.
//!
//! Hand-written because it is small and its rules are specific to a
//! forwarder: the key includes the upstream set (two networks with different
//! forwarders must not see each other's answers), negative answers live for
//! the SOA's negative TTL (RFC 2308) and are not cached without one, and the
//! TTLs handed out count down with the time spent in the cache. Eviction
//! removes the entry that expires first, which is also how expired entries
//! go: a `BTreeMap` ordered by expiry gives both in O(log n).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// Upper bound for positive answers, so a wrong answer upstream cannot stick
/// for a day.
const MAX_POSITIVE_TTL: u32 = 3600;
/// Upper bound for negative answers (RFC 2308 allows hours; a forwarder for
/// containers gains little from long negative caching).
const MAX_NEGATIVE_TTL: u32 = 300;

/// An upstream's answer as relayed to clients.
#[derive(Debug)]
pub(crate) struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Answer {
    /// How long this answer may be cached, if at all.
    pub fn cache_ttl(&self) -> Option<u32> {
        let ttl = match self.rcode {
            ResponseCode::NoError if !self.answers.is_empty() => self
                .answers
                .iter()
                .map(|r| r.ttl)
                .min()?
                .min(MAX_POSITIVE_TTL),
            ResponseCode::NoError | ResponseCode::NXDomain => {
                self.negative_ttl()?.min(MAX_NEGATIVE_TTL)
            }
            _ => return None,
        };
        (ttl > 0).then_some(ttl)
    }

    /// RFC 2308: the negative TTL is the smaller of the SOA record's TTL and
    /// its MINIMUM field; without a SOA the answer is not cacheable.
    pub fn negative_ttl(&self) -> Option<u32> {
        self.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// hickory's `Name` compares and hashes without case.
    pub name: Name,
    pub rtype: RecordType,
    pub class: DNSClass,
    pub upstreams: Arc<[SocketAddr]>,
}

struct Slot {
    answer: Arc<Answer>,
    stored: Instant,
    expires: Instant,
    seq: u64,
}

pub(crate) struct Cache {
    max: usize,
    slots: HashMap<Key, Slot>,
    by_expiry: BTreeMap<(Instant, u64), Key>,
    next_seq: u64,
}

impl Cache {
    pub fn new(max: usize) -> Cache {
        Cache {
            max,
            slots: HashMap::new(),
            by_expiry: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// The cached answer and its age in whole seconds, if still fresh.
    pub fn get(&mut self, key: &Key, now: Instant) -> Option<(Arc<Answer>, u32)> {
        let slot = self.slots.get(key)?;
        if slot.expires <= now {
            self.remove(&key.clone());
            return None;
        }
        let age = now.duration_since(slot.stored).as_secs();
        Some((slot.answer.clone(), u32::try_from(age).unwrap_or(u32::MAX)))
    }

    pub fn insert(&mut self, key: Key, answer: Arc<Answer>, ttl: u32, now: Instant) {
        if self.max == 0 {
            return;
        }
        self.remove(&key);
        while self.slots.len() >= self.max {
            let Some((_, oldest)) = self.by_expiry.pop_first() else {
                break;
            };
            self.slots.remove(&oldest);
        }
        let expires = now + Duration::from_secs(ttl.into());
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_expiry.insert((expires, seq), key.clone());
        self.slots.insert(
            key,
            Slot {
                answer,
                stored: now,
                expires,
                seq,
            },
        );
    }

    fn remove(&mut self, key: &Key) {
        if let Some(slot) = self.slots.remove(key) {
            self.by_expiry.remove(&(slot.expires, slot.seq));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        debug_assert_eq!(self.slots.len(), self.by_expiry.len());
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::rr::rdata::{A, SOA};

    fn key(n: &str) -> Key {
        Key {
            name: Name::from_ascii(n).unwrap(),
            rtype: RecordType::A,
            class: DNSClass::IN,
            upstreams: Arc::from(vec!["10.0.0.1:53".parse().unwrap()]),
        }
    }

    fn a_answer(ttl: u32) -> Arc<Answer> {
        let rec = Record::from_rdata(
            Name::from_ascii("x.").unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        );
        Arc::new(Answer {
            rcode: ResponseCode::NoError,
            answers: vec![rec],
            authorities: vec![],
            additionals: vec![],
        })
    }

    fn negative(rcode: ResponseCode, soa_ttl: u32, minimum: u32) -> Answer {
        let root = Name::root();
        let soa = SOA::new(root.clone(), root.clone(), 1, 1, 1, 1, minimum);
        Answer {
            rcode,
            answers: vec![],
            authorities: vec![Record::from_rdata(root, soa_ttl, RData::SOA(soa))],
            additionals: vec![],
        }
    }

    #[test]
    fn ttls_follow_the_answer() {
        assert_eq!(a_answer(30).cache_ttl(), Some(30));
        assert_eq!(a_answer(0).cache_ttl(), None);
        assert_eq!(a_answer(86400).cache_ttl(), Some(MAX_POSITIVE_TTL));
        assert_eq!(
            negative(ResponseCode::NXDomain, 60, 10).cache_ttl(),
            Some(10)
        );
        assert_eq!(
            negative(ResponseCode::NoError, 20, 900).cache_ttl(),
            Some(20)
        );
        assert_eq!(
            negative(ResponseCode::NXDomain, 86400, 86400).cache_ttl(),
            Some(MAX_NEGATIVE_TTL)
        );
        let no_soa = Answer {
            rcode: ResponseCode::NXDomain,
            answers: vec![],
            authorities: vec![],
            additionals: vec![],
        };
        assert_eq!(no_soa.cache_ttl(), None);
        assert_eq!(negative(ResponseCode::ServFail, 60, 60).cache_ttl(), None);
    }

    #[test]
    fn entries_expire_and_report_their_age() {
        let mut c = Cache::new(10);
        let t0 = Instant::now();
        c.insert(key("a."), a_answer(30), 30, t0);
        let (_, age) = c
            .get(&key("A."), t0 + Duration::from_secs(12))
            .expect("case-insensitive hit");
        assert_eq!(age, 12);
        assert!(c.get(&key("a."), t0 + Duration::from_secs(30)).is_none());
        assert_eq!(c.len(), 0, "expired entry removed on access");
    }

    #[test]
    fn size_is_bounded_and_soonest_expiry_goes_first() {
        let mut c = Cache::new(3);
        let t0 = Instant::now();
        c.insert(key("a."), a_answer(100), 100, t0);
        c.insert(key("b."), a_answer(5), 5, t0);
        c.insert(key("c."), a_answer(50), 50, t0);
        c.insert(key("d."), a_answer(70), 70, t0);
        assert_eq!(c.len(), 3);
        assert!(
            c.get(&key("b."), t0).is_none(),
            "b expires first, so it was evicted"
        );
        for k in ["a.", "c.", "d."] {
            assert!(c.get(&key(k), t0).is_some(), "{k}");
        }
        c.insert(key("a."), a_answer(1), 1, t0);
        assert_eq!(c.len(), 3, "replacing a key does not grow the cache");
        let mut off = Cache::new(0);
        off.insert(key("a."), a_answer(100), 100, t0);
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn upstream_set_is_part_of_the_key() {
        let mut c = Cache::new(10);
        let t0 = Instant::now();
        c.insert(key("a."), a_answer(100), 100, t0);
        let mut other = key("a.");
        other.upstreams = Arc::from(vec!["10.0.0.2:53".parse::<SocketAddr>().unwrap()]);
        assert!(c.get(&other, t0).is_none());
    }
}
