//! How long one endpoint's OutBoundNAT takes to come and go with N endpoints under the same
//! policy present: the whole table rewritten (`nft -f` of `nft_outbound::compile`, what hnsd
//! did before) and the endpoint's own elements (`nft_outbound::update`, what it does now).
//! Changes the nft ruleset of the namespace it runs in: run it in a scratch one, as root:
//! `unshare -n target/release/examples/onat_scale 5000 [runs]`.

use std::time::{Duration, Instant};

use hns_kernel::nft_outbound::{self, Applied, EndpointNat, OutboundNat};

fn ep(i: usize) -> EndpointNat {
    let policy = OutboundNat { ipv6: false, virtual_ip: None, exceptions: vec!["10.244.0.0/16".parse().unwrap()], destinations: vec![] };
    EndpointNat { host_if: format!("hnv{i:08x}"), addresses: vec![std::net::Ipv4Addr::from(0x0a80_0000u32 + i as u32).into()], policies: vec![policy] }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let (n, runs) = (args.first().copied().unwrap_or(1000), args.get(1).copied().unwrap_or(20));
    let mut all: Vec<EndpointNat> = (0..n).map(ep).collect();
    nft_outbound::run(&nft_outbound::compile(&all)).expect("load");
    let (mut whole, mut each) = (Vec::new(), Vec::new());
    for k in 0..runs {
        let extra = ep(n + k);
        all.push(extra.clone());
        let t = Instant::now();
        nft_outbound::run(&nft_outbound::compile(&all)).expect("rewrite");
        whole.push(t.elapsed());
        all.pop();
        nft_outbound::run(&nft_outbound::compile(&all)).expect("rewrite");
        let mut applied = Applied::of(&all);
        let t = Instant::now();
        nft_outbound::update(&mut applied, None, Some(&extra)).expect("attach");
        each.push(t.elapsed());
        nft_outbound::update(&mut applied, Some(&extra), None).expect("detach");
    }
    println!("n={n}: endpoint attach, whole table rewritten={:?}, its elements only={:?} (medians of {runs})", median(whole), median(each));
    nft_outbound::run(&nft_outbound::compile(&[])).expect("cleanup");
}
