//! Property tests of the pool: safety of every operation sequence, next-fit
//! order, exhaustion, and persistence of the cursor.
//!
//! Each test drives a real `Pool` and a tiny independent model of it (plain
//! sets and a linear scan) side by side, over small IPv4 and IPv6 subnets with
//! random gateways, ranges and auxiliary addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hns_ipam::{IpamError, IpamErrorKind, Pool, PoolSpec};
use ipnet::IpNet;
use proptest::prelude::*;

/// A generated spec plus its geometry in offsets, computed independently of
/// the crate so the tests do not trust the code under test.
#[derive(Debug, Clone)]
struct Geo {
    spec: PoolSpec,
    v6: bool,
    base: u128,
    /// Offset of the last address of the subnet.
    last: u128,
    gateway: u128,
    aux: BTreeSet<u128>,
    /// Dynamic allocation window, inclusive offsets.
    lo: u128,
    hi: u128,
}

impl Geo {
    fn addr(&self, offset: u128) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.base + offset))
        } else {
            IpAddr::V4(Ipv4Addr::from((self.base + offset) as u32))
        }
    }

    fn offset(&self, ip: IpAddr) -> u128 {
        let v = match ip {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        v - self.base
    }

    /// Network, broadcast (IPv4), gateway or auxiliary.
    fn is_fixed(&self, offset: u128) -> bool {
        offset == 0
            || (!self.v6 && offset == self.last)
            || offset == self.gateway
            || self.aux.contains(&offset)
    }

    fn in_window(&self, offset: u128) -> bool {
        (self.lo..=self.hi).contains(&offset)
    }

    /// Offsets `allocate` may ever return.
    fn allocatable(&self) -> Vec<u128> {
        (self.lo..=self.hi).filter(|&o| !self.is_fixed(o)).collect()
    }

    fn pool(&self) -> Pool {
        Pool::new(&self.spec).expect("generated spec must be valid")
    }
}

fn build(
    v6: bool,
    host_bits: u8,
    net_seed: u32,
    gw_seed: Option<u64>,
    range: Option<(u8, u64)>,
    aux_seeds: Vec<u64>,
) -> Geo {
    let size = 1u128 << host_bits;
    let last = size - 1;
    let mask = last;
    let base = if v6 {
        (0xfd00_0001u128 << 96 | u128::from(net_seed)) & !mask
    } else {
        (0x0a00_0000u128 | u128::from(net_seed & 0x00ff_ffff)) & !mask
    };
    // host offsets that may be a gateway or aux address
    let hosts = if v6 { last } else { last - 1 };
    let gateway = gw_seed.map_or(1, |s| 1 + u128::from(s) % hosts);
    let (lo, hi) = match range {
        None => (0, last),
        Some((shrink, pos)) => {
            let rb = host_bits - shrink.min(host_bits);
            let start = (u128::from(pos) % (size >> rb)) << rb;
            (start, start + (1u128 << rb) - 1)
        }
    };
    let aux: BTreeSet<u128> = aux_seeds
        .iter()
        .map(|&s| 1 + u128::from(s) % hosts)
        .filter(|&o| o != gateway)
        .collect();

    let bits = if v6 { 128 } else { 32 };
    let mk = |g: &Geo, off: u128, prefix: u8| IpNet::new(g.addr(off), prefix).unwrap();
    let mut geo = Geo {
        spec: PoolSpec::new("0.0.0.0/0".parse().unwrap()),
        v6,
        base,
        last,
        gateway,
        aux,
        lo,
        hi,
    };
    let prefix = bits - host_bits;
    geo.spec = PoolSpec {
        subnet: mk(&geo, 0, prefix),
        gateway: gw_seed.map(|_| geo.addr(gateway)),
        range: range.map(|_| mk(&geo, lo, bits - (hi - lo + 1).trailing_zeros() as u8)),
        reserved: geo.aux.iter().map(|&o| geo.addr(o)).collect(),
    };
    geo
}

fn geo() -> impl Strategy<Value = Geo> {
    (
        any::<bool>(),
        2u8..=7,
        any::<u32>(),
        proptest::option::of(any::<u64>()),
        proptest::option::weighted(0.4, (0u8..=7, any::<u64>())),
        proptest::collection::vec(any::<u64>(), 0..5),
    )
        .prop_map(|(v6, hb, net, gw, range, aux)| build(v6, hb, net, gw, range, aux))
}

#[derive(Debug, Clone)]
enum Op {
    Allocate,
    /// Even seeds pick one of the held addresses, odd ones any offset
    /// (possibly outside the subnet).
    Release(u16),
    /// Any offset, possibly outside the subnet.
    Reserve(u16),
    SetCursor(u16),
}

fn ops(with_set_cursor: bool, max: usize) -> impl Strategy<Value = Vec<Op>> {
    let set_cursor_weight = if with_set_cursor { 1 } else { 0 };
    proptest::collection::vec(
        prop_oneof![
            6 => Just(Op::Allocate),
            3 => any::<u16>().prop_map(Op::Release),
            1 => any::<u16>().prop_map(Op::Reserve),
            set_cursor_weight => any::<u16>().prop_map(Op::SetCursor),
        ],
        0..max,
    )
}

/// The offset an op refers to, given the addresses currently held.
fn release_target(seed: u16, held: &BTreeSet<u128>, geo: &Geo) -> u128 {
    let seed = u128::from(seed);
    if seed % 2 == 0 && !held.is_empty() {
        *held.iter().nth((seed / 2) as usize % held.len()).unwrap()
    } else {
        seed % (geo.last + 4)
    }
}

fn any_offset(seed: u16, geo: &Geo) -> u128 {
    u128::from(seed) % (geo.last + 3)
}

/// A deliberately naive next-fit allocator: linear scan of the whole window
/// from the cursor.
#[derive(Debug, Clone)]
struct RefNextFit {
    cursor: u128,
}

impl RefNextFit {
    fn allocate(&mut self, geo: &Geo, held: &BTreeSet<u128>) -> Option<u128> {
        let n = geo.hi - geo.lo + 1;
        for i in 0..n {
            let c = geo.lo + (self.cursor - geo.lo + i) % n;
            if !geo.is_fixed(c) && !held.contains(&c) {
                self.cursor = if c == geo.hi { geo.lo } else { c + 1 };
                return Some(c);
            }
        }
        None
    }

    fn set_cursor(&mut self, geo: &Geo, c: u128) {
        self.cursor = if geo.in_window(c) { c } else { geo.lo };
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Builds a pool of `subnet` with gateway `at(gw)` and auxiliary addresses `at(a)`, starts at
/// `cursor` and allocates until it fails, checking that no address comes twice and that the
/// gateway, the auxiliary addresses and `forbidden` never come. Returns the pool, what it gave
/// and the final error.
fn drain(
    subnet: IpNet,
    at: impl Fn(u8) -> IpAddr,
    gw: u8,
    aux: &BTreeSet<u8>,
    cursor: u128,
    forbidden: &[IpAddr],
) -> Result<(Pool, BTreeSet<IpAddr>, IpamError), TestCaseError> {
    let spec = PoolSpec { subnet, gateway: Some(at(gw)), range: None, reserved: aux.iter().map(|&a| at(a)).collect() };
    let mut pool = Pool::new(&spec).unwrap();
    pool.set_cursor(cursor);
    let mut seen = BTreeSet::new();
    loop {
        match pool.allocate() {
            Ok(ip) => {
                prop_assert!(seen.insert(ip), "{} twice", ip);
                prop_assert!(ip != at(gw) && !forbidden.contains(&ip), "{} is the gateway or reserved", ip);
                prop_assert!(!aux.iter().any(|&a| at(a) == ip), "{} is aux", ip);
            }
            Err(e) => return Ok((pool, seen, e)),
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// (1) Whatever the sequence of allocate/release/reserve: no address is
    /// held twice, allocate never returns the network, broadcast, gateway or
    /// an auxiliary address and stays inside the range, and each operation
    /// succeeds or fails exactly when the model says it should.
    #[test]
    fn operations_never_double_allocate(geo in geo(), ops in ops(true, 120)) {
        let mut pool = geo.pool();
        let mut held: BTreeSet<u128> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Allocate => match pool.allocate() {
                    Ok(ip) => {
                        let o = geo.offset(ip);
                        prop_assert!(o <= geo.last, "{ip} outside subnet");
                        prop_assert!(geo.in_window(o), "{ip} outside range");
                        prop_assert!(!geo.is_fixed(o), "{ip} is network/broadcast/gateway/aux");
                        prop_assert!(held.insert(o), "{ip} handed out twice");
                    }
                    Err(e) => {
                        prop_assert_eq!(e.kind(), IpamErrorKind::Exhausted);
                        let free = geo.allocatable().into_iter().find(|o| !held.contains(o));
                        prop_assert_eq!(free, None, "Exhausted although an address is free");
                        let msg = e.to_string();
                        prop_assert!(msg.contains(&geo.spec.subnet.to_string()), "{}", msg);
                    }
                },
                Op::Release(seed) => {
                    let o = release_target(seed, &held, &geo);
                    prop_assert_eq!(pool.release(geo.addr(o)), held.remove(&o));
                }
                Op::Reserve(seed) => {
                    let o = any_offset(seed, &geo);
                    let ip = geo.addr(o);
                    let expected = if o > geo.last {
                        Err(IpamErrorKind::OutOfSubnet)
                    } else if geo.is_fixed(o) {
                        Err(IpamErrorKind::Reserved)
                    } else if held.contains(&o) {
                        Err(IpamErrorKind::InUse)
                    } else {
                        Ok(())
                    };
                    let got = pool.reserve(ip).map_err(|e| e.kind());
                    prop_assert_eq!(got, expected, "reserve {}", ip);
                    if got.is_ok() {
                        held.insert(o);
                    }
                }
                Op::SetCursor(seed) => pool.set_cursor(any_offset(seed, &geo)),
            }
            prop_assert_eq!(pool.used_count(), held.len());
        }
        for o in 0..=geo.last {
            prop_assert_eq!(pool.is_used(geo.addr(o)), held.contains(&o), "is_used offset {}", o);
        }
        let listed: Vec<IpAddr> = held.iter().map(|&o| geo.addr(o)).collect();
        prop_assert_eq!(pool.used_addresses(), listed);
    }

    /// (2a) The allocation order is exactly next-fit: identical, address by
    /// address and cursor by cursor, to a naive linear-scan reference.
    #[test]
    fn allocation_order_is_next_fit(geo in geo(), ops in ops(true, 150)) {
        let mut pool = geo.pool();
        let mut reference = RefNextFit { cursor: geo.lo };
        let mut held: BTreeSet<u128> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Allocate => {
                    let got = pool.allocate().ok().map(|ip| geo.offset(ip));
                    let want = reference.allocate(&geo, &held);
                    prop_assert_eq!(got, want);
                    if let Some(o) = got {
                        held.insert(o);
                    }
                }
                Op::Release(seed) => {
                    let o = release_target(seed, &held, &geo);
                    pool.release(geo.addr(o));
                    held.remove(&o);
                }
                Op::Reserve(seed) => {
                    let o = any_offset(seed, &geo);
                    if pool.reserve(geo.addr(o)).is_ok() {
                        held.insert(o);
                    }
                }
                Op::SetCursor(seed) => {
                    let c = any_offset(seed, &geo);
                    pool.set_cursor(c);
                    reference.set_cursor(&geo, c);
                }
            }
            prop_assert_eq!(pool.cursor(), reference.cursor);
        }
    }

    /// (2b) The stale-ARP guarantee: once allocate has handed out X, it does
    /// not hand X out again while some other address of the range has stayed
    /// free ever since. In particular a released X comes back only after
    /// every address that was free all along has been handed out.
    #[test]
    fn released_address_is_reused_last(geo in geo(), ops in ops(false, 200)) {
        let mut pool = geo.pool();
        let window = geo.allocatable();
        let mut held: BTreeSet<u128> = BTreeSet::new();
        // step at which each allocatable address last became free
        let mut free_since: BTreeMap<u128, usize> = window.iter().map(|&o| (o, 0)).collect();
        // step at which allocate last handed out each address
        let mut allocated_at: BTreeMap<u128, usize> = BTreeMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            let step = step + 1;
            match op {
                Op::Allocate => {
                    if let Ok(ip) = pool.allocate() {
                        let x = geo.offset(ip);
                        if let Some(&a) = allocated_at.get(&x) {
                            let skipped: Vec<u128> = window
                                .iter()
                                .copied()
                                .filter(|&y| y != x && !held.contains(&y) && free_since[&y] <= a)
                                .collect();
                            prop_assert!(
                                skipped.is_empty(),
                                "{} reused although {:?} stayed free since it was handed out",
                                ip,
                                skipped.iter().map(|&y| geo.addr(y)).collect::<Vec<_>>()
                            );
                        }
                        allocated_at.insert(x, step);
                        held.insert(x);
                    }
                }
                Op::Release(seed) => {
                    let o = release_target(seed, &held, &geo);
                    if pool.release(geo.addr(o)) {
                        held.remove(&o);
                        free_since.insert(o, step);
                    }
                }
                Op::Reserve(seed) => {
                    let o = any_offset(seed, &geo);
                    if pool.reserve(geo.addr(o)).is_ok() {
                        held.insert(o);
                    }
                }
                Op::SetCursor(_) => unreachable!("not generated"),
            }
        }
    }

    /// (3) An IPv4 /24 gives out exactly 254 minus the gateway and the
    /// auxiliary addresses, all distinct, then reports Exhausted; whatever
    /// the starting cursor.
    #[test]
    fn v4_slash24_allocates_fully_then_exhausts(
        gw in 1u8..=254,
        aux in proptest::collection::btree_set(1u8..=254, 0..12),
        cursor in 0u128..300,
    ) {
        let subnet: IpNet = "172.20.9.0/24".parse().unwrap();
        let at = |o: u8| IpAddr::V4(Ipv4Addr::new(172, 20, 9, o));
        let aux: BTreeSet<u8> = aux.into_iter().filter(|&a| a != gw).collect();
        let (mut pool, seen, err) = drain(subnet, at, gw, &aux, cursor, &[at(0), at(255)])?;
        prop_assert_eq!(seen.len(), 254 - 1 - aux.len());
        prop_assert_eq!(pool.used_count(), seen.len());
        prop_assert_eq!(err.kind(), IpamErrorKind::Exhausted);
        prop_assert_eq!(
            err.to_string(),
            "no free address left in 172.20.9.0/24 (range 172.20.9.0/24); \
             use a larger subnet or --ip-range"
        );
        // still exhausted, and releasing one makes exactly that one available
        prop_assert_eq!(pool.allocate().unwrap_err().kind(), IpamErrorKind::Exhausted);
        let back = *seen.iter().next().unwrap();
        prop_assert!(pool.release(back));
        prop_assert_eq!(pool.allocate().unwrap(), back);
    }

    /// (3, IPv6) A /120 gives out its 256 addresses minus the network
    /// address, the gateway and the auxiliary addresses (the last address is
    /// a normal host in IPv6), then reports Exhausted.
    #[test]
    fn v6_slash120_allocates_fully_then_exhausts(
        gw in 1u8..=255,
        aux in proptest::collection::btree_set(1u8..=255, 0..12),
        cursor in 0u128..300,
    ) {
        let subnet: IpNet = "fd00:1:2::100/120".parse().unwrap();
        let at = |o: u8| IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 2, 0, 0, 0, 0, 0x100 + u16::from(o)));
        let aux: BTreeSet<u8> = aux.into_iter().filter(|&a| a != gw).collect();
        let (_, seen, err) = drain(subnet, at, gw, &aux, cursor, &[at(0)])?;
        prop_assert_eq!(seen.len(), 255 - 1 - aux.len());
        prop_assert!(aux.contains(&255) || gw == 255 || seen.contains(&at(255)));
        prop_assert_eq!(err.kind(), IpamErrorKind::Exhausted);
        prop_assert!(err.to_string().starts_with("no free address left in fd00:1:2::100/120"));
    }

    /// (4) After a restart (new pool, every held address reserved again,
    /// cursor restored) the pool behaves exactly like the original, not just
    /// for the next address but for any continuation.
    #[test]
    fn cursor_round_trip_continues_identically(
        geo in geo(),
        before in ops(false, 120),
        after in ops(false, 60),
    ) {
        let mut old = geo.pool();
        let mut held: BTreeSet<u128> = BTreeSet::new();
        let apply = |pool: &mut Pool, op: &Op, held: &BTreeSet<u128>| -> String {
            match op {
                Op::Allocate => format!("{:?}", pool.allocate()),
                Op::Release(seed) => {
                    let o = release_target(*seed, held, &geo);
                    format!("{}", pool.release(geo.addr(o)))
                }
                Op::Reserve(seed) => format!("{:?}", pool.reserve(geo.addr(any_offset(*seed, &geo)))),
                Op::SetCursor(_) => unreachable!("not generated"),
            }
        };
        for op in &before {
            apply(&mut old, op, &held);
            held = old.used_addresses().into_iter().map(|ip| geo.offset(ip)).collect();
        }

        let mut new = geo.pool();
        for &o in &held {
            new.reserve(geo.addr(o)).unwrap();
        }
        new.set_cursor(old.cursor());
        prop_assert_eq!(new.cursor(), old.cursor());

        // the very next address is the same...
        let mut old_peek = old.clone();
        let mut new_peek = new.clone();
        prop_assert_eq!(old_peek.allocate(), new_peek.allocate());

        // ...and so is everything after, whatever happens next
        for op in &after {
            let a = apply(&mut old, op, &held);
            let b = apply(&mut new, op, &held);
            prop_assert_eq!(a, b, "diverged on {:?}", op);
            prop_assert_eq!(old.cursor(), new.cursor());
            held = old.used_addresses().into_iter().map(|ip| geo.offset(ip)).collect();
        }
    }
}

/// The generator must actually produce the interesting shapes, or the
/// properties above would pass vacuously.
#[test]
fn generator_covers_ranges_v6_and_aux() {
    let g = build(true, 6, 77, Some(5), Some((3, 9)), vec![1, 2, 3]);
    assert_eq!(g.spec.subnet.to_string(), "fd00:1::40/122");
    assert_eq!(g.spec.range.unwrap().prefix_len(), 125);
    assert_eq!((g.lo, g.hi), (8, 15));
    assert_eq!(g.gateway, 6);
    assert_eq!(g.aux.len(), 3);
    assert!(Pool::new(&g.spec).is_ok());

    let g = build(false, 4, 0x0001_0203, None, None, vec![]);
    assert_eq!(g.spec.subnet.to_string(), "10.1.2.0/28");
    assert_eq!(g.allocatable().len(), 13);
}
