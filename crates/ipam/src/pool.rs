//! The address pool of one subnet: static reservations and next-fit dynamic
//! allocation.
//!
//! # Why next-fit
//!
//! Handing out the lowest free address (first-fit) reuses an address the
//! moment it is released. Neighbours still hold the old container's MAC for
//! that address in their ARP/ND caches, so the new container is unreachable
//! until those entries time out. Next-fit keeps a cursor and always continues
//! after the last address it gave out, wrapping around once at the end of the
//! allocation window, so an address that was just released sits *behind* the
//! cursor and only comes back once the cursor has travelled the whole window.
//!
//! Precisely: once `allocate` has handed out X, it will not hand out X again
//! before it has handed out every other address that has stayed free ever
//! since. In the everyday case (the window has not filled up and wrapped since
//! X was handed out) this means a released X is reused only after every other
//! free address of the window. After a wrap the cursor is a single point, not
//! a queue, so it cannot order releases perfectly; docker's allocator has the
//! same property, and only a persisted per-address history could do better.
//!
//! # Why a cursor offset
//!
//! The cursor is an offset from the subnet's network address, a plain number
//! the daemon stores in the same transaction as each allocation. After a
//! restart it rebuilds the pool (`new`, `reserve` for every stored address,
//! `set_cursor`) and allocation continues exactly where it stopped.
//!
//! # Cost
//!
//! All addresses that may not be handed out (network, broadcast, gateway,
//! auxiliary addresses and the ones in use) live in one ordered set of
//! offsets. Allocation walks that set from the cursor and stops at the first
//! gap, so it costs O(log n + k) where k is the number of consecutive taken
//! addresses after the cursor, never a scan of every allocation. A count of
//! taken addresses inside the window makes "exhausted" an O(1) answer.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::IpamError;
use crate::spec::{self, Layout, PoolSpec};

/// The addresses of one subnet and which of them are in use.
#[derive(Debug, Clone)]
pub struct Pool {
    layout: Layout,
    /// Offsets that `allocate` must skip: network, broadcast, gateway and
    /// auxiliary addresses (see `fixed`) plus every address in use.
    taken: BTreeSet<u128>,
    /// The part of `taken` that never changes after construction.
    fixed: BTreeSet<u128>,
    /// How many members of `taken` lie inside the allocation window.
    taken_in_window: u128,
    /// Offset at which the next allocation starts looking; always inside the
    /// window.
    cursor: u128,
}

impl Pool {
    /// Validates `spec` and builds an empty pool.
    ///
    /// Refused: a subnet with host bits set (the error names the canonical
    /// form), a prefix leaving fewer than two usable hosts (IPv4 /31 and /32,
    /// IPv6 /127 and /128), a gateway outside the subnet or equal to its
    /// network or (IPv4) broadcast address, a range not inside the subnet, an
    /// auxiliary address outside the subnet or equal to the gateway, network
    /// or broadcast address.
    pub fn new(spec: &PoolSpec) -> Result<Pool, IpamError> {
        let layout = spec::validate(spec)?;
        let mut fixed = layout.aux.clone();
        fixed.insert(0);
        if layout.family.has_broadcast() {
            fixed.insert(layout.last);
        }
        fixed.insert(layout.gateway);
        let taken_in_window = fixed.range(layout.window_lo..=layout.window_hi).count() as u128;
        Ok(Pool {
            cursor: layout.window_lo,
            taken: fixed.clone(),
            fixed,
            taken_in_window,
            layout,
        })
    }

    /// The subnet, as given in the spec.
    pub fn subnet(&self) -> IpNet {
        self.layout.subnet
    }

    /// The gateway (the spec's, or the first host address).
    pub fn gateway(&self) -> IpAddr {
        self.layout.addr_at(self.layout.gateway)
    }

    /// Prefix length of the subnet.
    pub fn prefix_len(&self) -> u8 {
        self.layout.subnet.prefix_len()
    }

    /// The dynamic allocation range, if the spec had one.
    pub fn range(&self) -> Option<IpNet> {
        self.layout.range
    }

    /// The auxiliary addresses, in ascending order, without duplicates.
    pub fn reserved(&self) -> Vec<IpAddr> {
        self.layout
            .aux
            .iter()
            .map(|&o| self.layout.addr_at(o))
            .collect()
    }

    /// The addresses in use, in ascending order.
    pub fn used_addresses(&self) -> Vec<IpAddr> {
        self.taken
            .iter()
            .filter(|o| !self.fixed.contains(o))
            .map(|&o| self.layout.addr_at(o))
            .collect()
    }

    /// Marks a specific address as used: a static address requested by the
    /// user, or one loaded from the store at start-up. It may lie outside the
    /// range (docker allows that). Does not move the cursor.
    pub fn reserve(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let subnet = self.layout.subnet;
        let offset = self.layout.offset_of(ip).ok_or(IpamError::OutOfSubnet {
            address: ip,
            subnet,
        })?;
        if let Some(what) = self.layout.special(offset) {
            return Err(IpamError::NotHost {
                address: ip,
                subnet,
                what,
            });
        }
        if offset == self.layout.gateway {
            return Err(IpamError::IsGateway {
                address: ip,
                subnet,
            });
        }
        if self.layout.aux.contains(&offset) {
            return Err(IpamError::IsAux {
                address: ip,
                subnet,
            });
        }
        if !self.taken.insert(offset) {
            return Err(IpamError::InUse { address: ip });
        }
        if self.in_window(offset) {
            self.taken_in_window += 1;
        }
        Ok(())
    }

    /// Takes the next free address of the range (or the subnet if there is no
    /// range), starting at the cursor and wrapping around once; the cursor
    /// then points just past the returned address.
    pub fn allocate(&mut self) -> Result<IpAddr, IpamError> {
        let (lo, hi) = (self.layout.window_lo, self.layout.window_hi);
        let exhausted = || IpamError::Exhausted {
            subnet: self.layout.subnet,
            range: self.layout.window_net(),
        };
        // taken_in_window == window size; written to avoid computing the
        // size, which is 2^128 for an IPv6 /0.
        if self.taken_in_window > hi - lo {
            return Err(exhausted());
        }
        let start = self.cursor;
        let found = self.first_free(start, hi).or_else(|| {
            (start > lo)
                .then(|| self.first_free(lo, start - 1))
                .flatten()
        });
        let offset = found.ok_or_else(exhausted)?;

        self.taken.insert(offset);
        self.taken_in_window += 1;
        self.cursor = if offset == hi { lo } else { offset + 1 };
        Ok(self.layout.addr_at(offset))
    }

    /// Frees an address; returns false if it was not in use (including the
    /// gateway, auxiliary, network and broadcast addresses, and addresses
    /// outside the subnet). Does not move the cursor.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        let Some(offset) = self.layout.offset_of(ip) else {
            return false;
        };
        if self.fixed.contains(&offset) || !self.taken.remove(&offset) {
            return false;
        }
        if self.in_window(offset) {
            self.taken_in_window -= 1;
        }
        true
    }

    /// True if an endpoint holds the address (through `reserve` or
    /// `allocate`). The gateway and auxiliary addresses are not "used" in
    /// this sense, although they are never handed out.
    pub fn is_used(&self, ip: IpAddr) -> bool {
        self.layout
            .offset_of(ip)
            .is_some_and(|o| self.taken.contains(&o) && !self.fixed.contains(&o))
    }

    /// How many addresses endpoints hold.
    pub fn used_count(&self) -> usize {
        self.taken.len() - self.fixed.len()
    }

    /// Where the next allocation starts looking, as an offset from the
    /// subnet's network address. Persist it with each allocation.
    pub fn cursor(&self) -> u128 {
        self.cursor
    }

    /// Restores a cursor saved from [`Pool::cursor`]. A value outside the
    /// allocation window (e.g. saved before the range changed) restarts at
    /// the beginning of the window.
    pub fn set_cursor(&mut self, cursor: u128) {
        self.cursor = if self.in_window(cursor) {
            cursor
        } else {
            self.layout.window_lo
        };
    }

    fn in_window(&self, offset: u128) -> bool {
        (self.layout.window_lo..=self.layout.window_hi).contains(&offset)
    }

    /// The lowest offset in `from..=to` that is not taken. Walks the taken
    /// set from `from` and stops at the first gap, so the cost is the length
    /// of the run of taken offsets starting at `from`.
    fn first_free(&self, from: u128, to: u128) -> Option<u128> {
        let mut candidate = from;
        for &taken in self.taken.range(from..=to) {
            if taken != candidate {
                break;
            }
            if candidate == to {
                return None;
            }
            candidate += 1;
        }
        Some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::error::IpamErrorKind;

    fn pool(subnet: &str) -> Pool {
        Pool::new(&PoolSpec::new(net(subnet))).unwrap()
    }

    #[test]
    fn accessors() {
        let mut spec = PoolSpec::new(net("172.20.0.0/16"));
        spec.range = Some(net("172.20.4.0/24"));
        spec.reserved = vec![ip("172.20.0.9"), ip("172.20.0.3")];
        let p = Pool::new(&spec).unwrap();
        assert_eq!(p.subnet(), net("172.20.0.0/16"));
        assert_eq!(p.gateway(), ip("172.20.0.1"));
        assert_eq!(p.prefix_len(), 16);
        assert_eq!(p.range(), Some(net("172.20.4.0/24")));
        assert_eq!(p.reserved(), vec![ip("172.20.0.3"), ip("172.20.0.9")]);
        assert_eq!(p.used_count(), 0);
    }

    #[test]
    fn first_allocations_skip_network_and_gateway() {
        let mut p = pool("172.20.0.0/16");
        assert_eq!(p.allocate().unwrap(), ip("172.20.0.2"));
        assert_eq!(p.allocate().unwrap(), ip("172.20.0.3"));
        assert_eq!(p.used_count(), 2);
        assert!(p.is_used(ip("172.20.0.2")));
        assert!(!p.is_used(ip("172.20.0.1")));
    }

    #[test]
    fn v6_allocation_skips_network_and_gateway() {
        let mut p = pool("fd00:1::/64");
        assert_eq!(p.allocate().unwrap(), ip("fd00:1::2"));
        assert_eq!(p.allocate().unwrap(), ip("fd00:1::3"));
    }

    #[test]
    fn allocation_skips_aux_and_static_addresses() {
        let mut spec = PoolSpec::new(net("10.1.0.0/24"));
        spec.reserved = vec![ip("10.1.0.3")];
        let mut p = Pool::new(&spec).unwrap();
        p.reserve(ip("10.1.0.4")).unwrap();
        assert_eq!(p.allocate().unwrap(), ip("10.1.0.2"));
        assert_eq!(p.allocate().unwrap(), ip("10.1.0.5"));
    }

    #[test]
    fn allocation_stays_inside_range() {
        let mut spec = PoolSpec::new(net("10.1.0.0/24"));
        spec.range = Some(net("10.1.0.8/30"));
        let mut p = Pool::new(&spec).unwrap();
        let got: Vec<_> = (0..4).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(
            got,
            ["10.1.0.8", "10.1.0.9", "10.1.0.10", "10.1.0.11"].map(ip)
        );
        let e = p.allocate().unwrap_err();
        assert_eq!(e.kind(), IpamErrorKind::Exhausted);
        assert_eq!(
            e.to_string(),
            "no free address left in 10.1.0.0/24 (range 10.1.0.8/30); \
             use a larger subnet or --ip-range"
        );
    }

    #[test]
    fn smallest_v4_subnet_has_one_dynamic_address() {
        let mut p = pool("172.20.0.0/30");
        assert_eq!(p.allocate().unwrap(), ip("172.20.0.2"));
        let e = p.allocate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "no free address left in 172.20.0.0/30 (range 172.20.0.0/30); \
             use a larger subnet or --ip-range"
        );
    }

    #[test]
    fn cursor_wraps_around_once() {
        let mut p = pool("10.0.0.0/29"); // hosts .2 .. .6 allocatable
        let first: Vec<_> = (0..5).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(first.last(), Some(&ip("10.0.0.6")));
        assert!(p.release(ip("10.0.0.4")));
        assert_eq!(p.allocate().unwrap(), ip("10.0.0.4"));
        assert_eq!(p.allocate().unwrap_err().kind(), IpamErrorKind::Exhausted);
    }

    #[test]
    fn released_address_comes_back_last() {
        let mut p = pool("10.0.0.0/24");
        let got: Vec<_> = (0..10).map(|_| p.allocate().unwrap()).collect();
        let x = got[2];
        assert!(p.release(x));
        // every other free address of the window comes before x
        let mut rest = Vec::new();
        while let Ok(a) = p.allocate() {
            rest.push(a);
        }
        assert_eq!(rest.len(), 253 - 10 + 1);
        assert_eq!(rest.last(), Some(&x));
        assert!(!rest[..rest.len() - 1].contains(&x));
    }

    #[test]
    fn reserve_errors() {
        let mut spec = PoolSpec::new(net("172.20.0.0/16"));
        spec.reserved = vec![ip("172.20.0.9")];
        let mut p = Pool::new(&spec).unwrap();

        let e = p.reserve(ip("10.9.0.5")).unwrap_err();
        assert_eq!(e.kind(), IpamErrorKind::OutOfSubnet);
        assert!(
            e.to_string()
                .starts_with("address 10.9.0.5 is outside subnet 172.20.0.0/16"),
            "{e}"
        );
        assert_eq!(
            p.reserve(ip("fd00::1")).unwrap_err().kind(),
            IpamErrorKind::OutOfSubnet
        );

        let e = p.reserve(ip("172.20.0.1")).unwrap_err();
        assert_eq!(e.kind(), IpamErrorKind::Reserved);
        assert_eq!(
            e.to_string(),
            "address 172.20.0.1 is the gateway of 172.20.0.0/16; choose another address"
        );

        let e = p.reserve(ip("172.20.0.0")).unwrap_err();
        assert_eq!(e.kind(), IpamErrorKind::Reserved);
        assert!(
            e.to_string()
                .contains("is the network address of 172.20.0.0/16"),
            "{e}"
        );

        let e = p.reserve(ip("172.20.255.255")).unwrap_err();
        assert_eq!(e.kind(), IpamErrorKind::Reserved);
        assert!(e.to_string().contains("is the broadcast address"), "{e}");

        let e = p.reserve(ip("172.20.0.9")).unwrap_err();
        assert_eq!(e.kind(), IpamErrorKind::Reserved);
        assert!(
            e.to_string()
                .contains("172.20.0.9 is a reserved auxiliary address"),
            "{e}"
        );

        p.reserve(ip("172.20.0.7")).unwrap();
        let e = p.reserve(ip("172.20.0.7")).unwrap_err();
        assert_eq!(e.kind(), IpamErrorKind::InUse);
        assert!(
            e.to_string()
                .starts_with("address 172.20.0.7 is already in use on this network"),
            "{e}"
        );
        assert_eq!(p.used_count(), 1);
    }

    #[test]
    fn v6_last_address_can_be_reserved() {
        let mut p = pool("fd00:1::/120");
        p.reserve(ip("fd00:1::ff")).unwrap();
        assert!(p.is_used(ip("fd00:1::ff")));
        assert_eq!(
            p.reserve(ip("fd00:1::")).unwrap_err().kind(),
            IpamErrorKind::Reserved
        );
    }

    #[test]
    fn static_address_may_be_outside_range() {
        let mut spec = PoolSpec::new(net("10.1.0.0/24"));
        spec.range = Some(net("10.1.0.128/25"));
        let mut p = Pool::new(&spec).unwrap();
        p.reserve(ip("10.1.0.5")).unwrap();
        assert!(p.is_used(ip("10.1.0.5")));
        assert_eq!(p.allocate().unwrap(), ip("10.1.0.128"));
        assert!(p.release(ip("10.1.0.5")));
    }

    #[test]
    fn reserve_does_not_move_cursor() {
        let mut p = pool("10.0.0.0/24");
        p.reserve(ip("10.0.0.50")).unwrap();
        assert_eq!(p.cursor(), 0);
        assert_eq!(p.allocate().unwrap(), ip("10.0.0.2"));
    }

    #[test]
    fn release_reports_whether_address_was_used() {
        let mut p = pool("10.0.0.0/24");
        let a = p.allocate().unwrap();
        let cursor = p.cursor();
        assert!(p.release(a));
        assert_eq!(p.cursor(), cursor, "release must not move the cursor");
        assert!(!p.release(a));
        assert!(!p.release(ip("10.0.0.1")), "gateway is never released");
        assert!(!p.release(ip("10.0.0.0")));
        assert!(!p.release(ip("192.168.0.1")));
        assert!(!p.release(ip("fd00::2")));
        assert_eq!(p.used_count(), 0);
        // the gateway must still be skipped after the attempt to release it
        let mut q = pool("10.0.0.0/24");
        q.release(ip("10.0.0.1"));
        assert_eq!(q.allocate().unwrap(), ip("10.0.0.2"));
    }

    #[test]
    fn cursor_is_offset_and_restores() {
        let mut p = pool("10.0.0.0/24");
        p.allocate().unwrap();
        assert_eq!(p.cursor(), 3);
        let mut q = pool("10.0.0.0/24");
        q.set_cursor(100);
        assert_eq!(q.allocate().unwrap(), ip("10.0.0.100"));
        assert_eq!(q.cursor(), 101);
    }

    #[test]
    fn cursor_outside_window_restarts_at_window_start() {
        let mut spec = PoolSpec::new(net("10.1.0.0/24"));
        spec.range = Some(net("10.1.0.64/26"));
        let mut p = Pool::new(&spec).unwrap();
        assert_eq!(p.cursor(), 64);
        p.set_cursor(5);
        assert_eq!(p.cursor(), 64);
        p.set_cursor(u128::MAX);
        assert_eq!(p.allocate().unwrap(), ip("10.1.0.64"));
    }

    #[test]
    fn cursor_wraps_to_window_start_after_last_address() {
        let mut p = pool("fd00::/126");
        p.set_cursor(3);
        assert_eq!(p.allocate().unwrap(), ip("fd00::3"));
        assert_eq!(p.cursor(), 0);
        assert_eq!(p.allocate().unwrap(), ip("fd00::2"));
    }

    #[test]
    fn huge_v6_pool_is_fast_and_does_not_overflow() {
        let mut p = pool("::/0");
        p.set_cursor(u128::MAX);
        assert_eq!(
            p.allocate().unwrap(),
            ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
        );
        assert_eq!(p.cursor(), 0);
        assert_eq!(p.allocate().unwrap(), ip("::2"));
    }

    #[test]
    fn allocation_cost_is_bounded_by_the_run_after_the_cursor() {
        // 60k used addresses *behind* the cursor must not slow allocation:
        // run many allocations after a large block was reserved.
        let mut p = pool("10.0.0.0/8");
        for i in 2..60_002u32 {
            p.reserve(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
                .unwrap();
        }
        p.set_cursor(60_002);
        let t = std::time::Instant::now();
        for _ in 0..20_000 {
            p.allocate().unwrap();
        }
        // A full scan per allocation would be 20k * 60k set lookups.
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
    }
}
