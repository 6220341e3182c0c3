//! How long the ACL tables take to load and to change, by number of endpoints. Changes the
//! nft ruleset of the namespace it runs in: run it in a scratch one, as root:
//! `unshare -n target/debug/examples/acl_scale 1000 10`.

use std::time::Instant;

use hns_kernel::nft_acl::{self, Action, Attach, Direction, EndpointAcl, Rule, Scope};

fn rules(n: usize, seed: usize) -> Vec<Rule> {
    (0..n)
        .map(|i| Rule {
            id: format!("r{i}"),
            action: if i % 3 == 0 { Action::Block } else { Action::Allow },
            direction: if i % 2 == 0 { Direction::In } else { Direction::Out },
            scope: Scope::Switch,
            priority: (100 + i * 10) as u16,
            protocols: vec![6],
            local: vec![],
            remote: vec![format!("10.{}.{}.0/24", seed % 250, i % 250).parse().unwrap()],
            local_ports: vec![(8000 + i as u16, 8000 + i as u16), (9000, 9100)],
            remote_ports: vec![],
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let (eps, per) = (args.first().copied().unwrap_or(1000), args.get(1).copied().unwrap_or(10));
    let all: Vec<EndpointAcl> = (0..eps).map(|e| EndpointAcl { host_if: format!("hnv{e:012x}"), attach: Attach::BridgePort, rules: rules(per, e) }).collect();
    let t = Instant::now();
    let program = nft_acl::compile_all(&all);
    let compiled = t.elapsed();
    let t = Instant::now();
    nft_acl::run(&program).expect("full load");
    let loaded = t.elapsed();
    let mut one = all[eps / 2].clone();
    one.rules = rules(per, 7);
    let t = Instant::now();
    let n = 20;
    for _ in 0..n {
        nft_acl::run(&nft_acl::compile_endpoint(&one, false)).expect("one endpoint");
    }
    let update = t.elapsed() / n;
    println!("endpoints={eps} rules_each={per} program_bytes={} compile={compiled:?} full_load={loaded:?} one_endpoint_update={update:?}", program.len());
    nft_acl::run(&nft_acl::compile_all(&[])).expect("cleanup");
}
