//! How long the ACL tables take to load and to change, by number of endpoints, written as hnsd
//! writes them (nfnetlink batches). Changes the nft ruleset of the namespace it runs in: run
//! it in a scratch one, as root: `unshare -n target/release/examples/acl_scale 1000 10 [runs]`.

use std::time::Instant;

use hns_kernel::nft_acl::{self, Attach, EndpointAcl, Prior};
use hns_kernel::nft_batch::Batch;

#[path = "common/acl_rules.rs"]
mod acl_rules;
use acl_rules::rules;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let (eps, per) = (args.first().copied().unwrap_or(1000), args.get(1).copied().unwrap_or(10));
    let n = args.get(2).copied().unwrap_or(20) as u32;
    let all: Vec<EndpointAcl> = (0..eps).map(|e| EndpointAcl { host_if: format!("hnv{e:012x}"), attach: Attach::BridgePort, rules: rules(per, e) }).collect();
    let t = Instant::now();
    let mut full = Batch::new();
    nft_acl::build_all(&mut full, &all);
    let compiled = t.elapsed();
    let t = Instant::now();
    nft_acl::apply(&full).expect("full load");
    let loaded = t.elapsed();
    // One endpoint's rules all change (compile + write: the map elements that differ), then one endpoint
    // detaches and attaches (its chains and maps go and come back).
    let mut one = all[eps / 2].clone();
    let t = Instant::now();
    for i in 0..n {
        let old = one.clone();
        one.rules = rules(per, 7 + i as usize);
        let mut b = Batch::new();
        nft_acl::build_change(&mut b, &old, &one);
        nft_acl::apply(&b).expect("one endpoint");
    }
    let update = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        let mut b = Batch::new();
        nft_acl::build_remove(&mut b, &one.host_if, one.attach);
        nft_acl::apply(&b).expect("detach");
        let mut b = Batch::new();
        nft_acl::build_endpoint(&mut b, &one, Prior::Unknown);
        nft_acl::apply(&b).expect("attach");
    }
    let reattach = t.elapsed() / n;
    // What hnsd's start-up pass reads when the tables are there: the names of everything and
    // the digests, and every endpoint's chain rule counts; then, for comparison, what reading
    // every map too would cost (the periodic pass reads a slice of them).
    let mut now = all.clone();
    now[eps / 2] = one.clone();
    let t = Instant::now();
    let inv = nft_acl::Inventory::read().expect("inventory");
    assert!(now.iter().all(|e| inv.matches(e) && nft_acl::chains_intact(e)) && inv.unwanted(&now).is_empty());
    let compare = t.elapsed();
    let t = Instant::now();
    assert!(now.iter().all(|e| !nft_acl::endpoint_drifted(e)));
    let deep = t.elapsed();
    if std::env::var_os("ACL_SCALE_DETAIL").is_some() {
        for i in [0, eps / 2 + 1, eps - 1] {
            let t = Instant::now();
            for _ in 0..20 {
                assert!(!nft_acl::endpoint_drifted(&now[i]));
            }
            let d = t.elapsed() / 20;
            let t = Instant::now();
            for _ in 0..20 {
                nft_acl::chain_rules(Attach::BridgePort, &format!("{}_sw_in", now[i].host_if)).unwrap();
            }
            let c = t.elapsed() / 20;
            let t = Instant::now();
            for _ in 0..20 {
                hns_kernel::nft_batch::set_elements(hns_kernel::nft_batch::Family::Bridge, nft_acl::ACL_TABLE, &format!("{}_sw_in_4", now[i].host_if)).unwrap();
            }
            println!("endpoint {i}: drift check {d:?}, one chain dump {c:?}, one map dump {:?}", t.elapsed() / 20);
        }
    }
    let t = Instant::now();
    let present = nft_acl::tables_present();
    let chains = nft_acl::chains(Attach::BridgePort).expect("chains").len();
    let check = t.elapsed();
    assert!(present);
    println!(
        "endpoints={eps} rules_each={per} batch_messages={} batch_bytes={} compile={compiled:?} full_load={loaded:?} one_endpoint_update={update:?} detach+attach={reattach:?} restart_compare={compare:?} every_map_compared={deep:?} reconcile_check({chains} chains)={check:?}",
        full.len(),
        full.encode().len()
    );
    let mut b = Batch::new();
    nft_acl::build_all(&mut b, &[]);
    nft_acl::apply(&b).expect("cleanup");
}
