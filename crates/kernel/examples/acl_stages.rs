//! Where one endpoint's ACL update spends its time, stage by stage, with N endpoints x R rules
//! loaded: the compile, the batch encode, the socket, the send (the kernel parses, checks and
//! commits the whole batch inside `sendmsg`), and probes that isolate the kernel's commit-time
//! validation walk. Changes the nft ruleset of the namespace it runs in: run it in a scratch
//! one, as root: `unshare -n target/release/examples/acl_stages 1000 10 [runs]`.

use std::time::{Duration, Instant};

use hns_kernel::nft_acl::{self, Attach, EndpointAcl};
use hns_kernel::nft_batch::{self, Base, Batch, Expr, Family, Verdict};

#[path = "common/acl_rules.rs"]
mod acl_rules;
use acl_rules::rules;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median time of `f` over `n` runs.
fn time(n: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let (eps, per) = (args.first().copied().unwrap_or(1000), args.get(1).copied().unwrap_or(10));
    let n = args.get(2).copied().unwrap_or(50);
    let all: Vec<EndpointAcl> = (0..eps).map(|e| EndpointAcl { host_if: format!("hnv{e:012x}"), attach: Attach::BridgePort, rules: rules(per, e) }).collect();
    let mut full = Batch::new();
    nft_acl::build_all(&mut full, &all);
    nft_acl::apply(&full).expect("full load");
    let kernel_rules: usize = all.iter().map(|e| nft_acl::wanted_chains(e).len()).sum::<usize>();
    println!("endpoints={eps} rules_each={per} endpoint_chains={kernel_rules} full_batch_messages={}", full.len());

    // The change measured is what `hns-bench acl` makes over the API: one rule added to an
    // endpoint, then removed (the elements that differ, in the maps that differ).
    let base = all[eps / 2].clone();
    let mut extra = base.clone();
    extra.rules.extend(rules(per + 1, 7).pop());
    let change = |old: &EndpointAcl, new: &EndpointAcl| {
        let mut b = Batch::new();
        nft_acl::build_change(&mut b, old, new);
        b
    };
    // 1. Compile (the batch of one endpoint's update) and encode.
    let compile = time(n, || {
        std::hint::black_box(change(&base, &extra));
    });
    let b = change(&base, &extra);
    let encode = time(n, || {
        std::hint::black_box(b.encode());
    });
    println!("update batch: messages={} bytes={}", b.len(), b.encode().len());
    // 2. Apply (socket + send + answers): the kernel's whole work, the rule added and removed
    //    in turn.
    let mut added = false;
    let apply = time(n, || {
        let b = if added { change(&extra, &base) } else { change(&base, &extra) };
        added = !added;
        nft_acl::apply(&b).expect("update");
    });
    // 3. Probes on a chain nothing jumps to: a rule without a verdict (nothing to validate)
    //    versus the same rule with one (the table is marked for validation: the commit walks
    //    the base chains and every chain the verdict maps jump to).
    let fam = Family::Bridge;
    let t = nft_acl::ACL_TABLE;
    let mut setup = Batch::new();
    setup.add_chain(fam, t, "probe");
    nft_batch::apply(&setup).unwrap();
    let probe = |verdict: bool| {
        time(n, || {
            let mut b = Batch::new();
            b.flush_chain(fam, t, "probe");
            let mut e = vec![Expr::Payload { base: Base::Network, offset: 9, len: 1 }, Expr::cmp_eq(vec![6])];
            if verdict {
                e.push(Expr::Verdict(Verdict::Drop));
            }
            b.add_rule(fam, t, "probe", &e);
            nft_batch::apply(&b).unwrap();
        })
    };
    let no_verdict = probe(false);
    let with_verdict = probe(true);
    // An element of a verdict map with a plain verdict (no jump) and one with a jump.
    let elem = |jump: bool| {
        time(n, || {
            let mut b = Batch::new();
            let key = nft_batch::ifname_key("probe0");
            let v = if jump { Verdict::Jump("probe".into()) } else { Verdict::Accept };
            b.add_element(fam, t, "sw_in", &key, Some(&v));
            b.delete_element(fam, t, "sw_in", &key);
            nft_batch::apply(&b).unwrap();
        })
    };
    let elem_plain = elem(false);
    let elem_jump = elem(true);
    // One endpoint map's elements: flushed alone, and flushed and refilled (first and last
    // endpoint, to see whether finding a map by name grows with its place in the table).
    let map_of = |e: &EndpointAcl| format!("{}_sw_in_4", e.host_if);
    let flush_only = |e: &EndpointAcl| {
        let m = map_of(e);
        time(n, || {
            let mut b = Batch::new();
            b.flush_set(fam, t, &m);
            nft_batch::apply(&b).unwrap();
        })
    };
    let flush_first = flush_only(&all[0]);
    let flush_last = flush_only(&all[eps - 1]);
    let refill = time(n, || {
        let ordered = nft_acl::ordered(&all[1].rules);
        let els: Vec<_> = nft_acl::stage_elements(&all[1], &ordered, hns_kernel::nft_acl::Scope::Switch, hns_kernel::nft_acl::Direction::In, false).into_iter().map(|(_, e)| e).collect();
        let mut b = Batch::new();
        b.flush_set(fam, t, &map_of(&all[1]));
        b.add_range_elements(fam, t, &map_of(&all[1]), &els);
        nft_batch::apply(&b).unwrap();
    });
    // Adding elements only (fresh keys each time) and deleting them only, on endpoint 2's map.
    let m2 = map_of(&all[2]);
    let el = |i: u32, verdict: Verdict| {
        let k = [vec![6, 0, 0, 0], i.to_be_bytes().to_vec(), vec![0; 4], vec![0; 4], vec![0; 4]].concat();
        nft_batch::RangeElement { key: k.clone(), key_end: k, verdict, comment: String::new() }
    };
    let mut next = 0u32;
    let mut added = Vec::new();
    let add_only = time(n, || {
        next += 1;
        let mut b = Batch::new();
        let e = el(0x0a00_0000 + next, Verdict::Return);
        b.add_range_elements(fam, t, &m2, std::slice::from_ref(&e));
        nft_batch::apply(&b).unwrap();
        added.push(e);
    });
    let mut it = added.into_iter();
    let delete_only = time(n, || {
        let e = it.next().unwrap();
        let mut b = Batch::new();
        b.delete_range_elements(fam, t, &m2, std::slice::from_ref(&e));
        nft_batch::apply(&b).unwrap();
    });
    println!("one element: add={add_only:?} delete={delete_only:?}");
    println!("one map: flush (first endpoint)={flush_first:?} flush (last endpoint)={flush_last:?} flush+refill={refill:?}");
    // 4. Reads the engine does around a change.
    let present = time(n, || assert!(nft_acl::tables_present()));
    let chains = time(5, || {
        nft_acl::chains(Attach::BridgePort).unwrap();
    });
    let counts = time(n, || {
        nft_acl::chain_rules(Attach::BridgePort, &format!("{}_sw_in", all[0].host_if)).unwrap();
    });
    println!(
        "compile={compile:?} encode={encode:?} apply(socket+send+kernel)={apply:?}\n\
         probe rule without verdict={no_verdict:?} with verdict={with_verdict:?} (difference: the validation walk)\n\
         probe element accept={elem_plain:?} jump={elem_jump:?}\n\
         reads: tables_present={present:?} chain_names={chains:?} one chain's rule count={counts:?}"
    );
    let mut b = Batch::new();
    nft_acl::build_all(&mut b, &[]);
    nft_acl::apply(&b).expect("cleanup");
}
