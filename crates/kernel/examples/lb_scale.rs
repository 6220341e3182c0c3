//! How long one load balancer's create, delete and backend replacement take with N present,
//! written as hnsd writes them (one nfnetlink batch of `nft_lb_batch::build_update`). All
//! services have one shape, so after the first a create or delete is map elements only.
//! Changes the nft ruleset of the
//! namespace it runs in: run it in a scratch one, as root:
//! `unshare -n target/release/examples/lb_scale 10000 5 [runs]`.

use std::time::{Duration, Instant};

use hns_kernel::nft::Proto;
use hns_kernel::nft_batch::Batch;
use hns_kernel::nft_lb::{self, Affinity, Backend, Frontend, Hairpin, LB_CT_MARK, LbState, Service};
use hns_kernel::nft_lb_batch;

fn lb(i: usize, backends: usize, first_mark: u32) -> LbState {
    let vip = std::net::Ipv4Addr::from(0x0a60_0000u32 + i as u32);
    let bs: Vec<Backend> = (0..backends).map(|k| Backend { mark: LB_CT_MARK | (first_mark + k as u32), addr: format!("172.20.0.{}", 10 + k).parse().unwrap(), port: 8080 }).collect();
    let hairpin = bs.iter().map(|b| Hairpin { mark: b.mark, backend: b.addr, source_vip: None }).collect();
    LbState { services: vec![Service { frontend: Frontend::Vip(vip.into()), proto: Proto::Tcp, port: 80, internal: false, local: false, preserve_dip: false, affinity: Affinity::None, backends: bs }], hairpin, direct: vec![], remote: vec![] }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let (n, per) = (args.first().copied().unwrap_or(1000), args.get(1).copied().unwrap_or(5));
    let runs = args.get(2).copied().unwrap_or(30);
    let all: Vec<LbState> = (0..n).map(|i| lb(i, per, (i * per) as u32 + 1)).collect();
    let refs: Vec<&LbState> = all.iter().collect();
    let mut next_mark = (n * per) as u32 + 1;
    let t = Instant::now();
    let mut shapes = nft_lb_batch::rebuild(&refs).expect("full load");
    let load = t.elapsed();
    let mut apply = |old: &LbState, new: &LbState| {
        let mut b = Batch::new();
        nft_lb_batch::build_update(&mut b, &mut shapes, old, new);
        nft_lb_batch::apply(&b).expect("update");
    };
    let (mut create, mut delete, mut replace) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..runs {
        let new = lb(n + k, per, next_mark);
        next_mark += per as u32;
        let t = Instant::now();
        apply(&LbState::default(), &new);
        create.push(t.elapsed());
        let t = Instant::now();
        apply(&new, &LbState::default());
        delete.push(t.elapsed());
        // Replace the last backend of an existing load balancer, then put it back.
        let old = &all[(k * 7919) % n];
        let mut swapped = old.clone();
        let last = swapped.services[0].backends.last_mut().unwrap();
        last.mark = LB_CT_MARK | next_mark;
        last.addr = "172.20.1.1".parse().unwrap();
        next_mark += 1;
        swapped.hairpin = swapped.services[0].backends.iter().map(|b| Hairpin { mark: b.mark, backend: b.addr, source_vip: None }).collect();
        let t = Instant::now();
        apply(old, &swapped);
        replace.push(t.elapsed());
        apply(&swapped, old);
    }
    println!("nfnetlink n={n} backends={per}: full load={load:?} create one={:?} delete one={:?} replace a backend={:?} (medians of {runs})", median(create), median(delete), median(replace));
    nft_lb::run(&nft_lb::removal_program()).expect("cleanup");
}
