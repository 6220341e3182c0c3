//! Load balancers written over nfnetlink against the real kernel: what hnsd writes must read
//! back through `nft` exactly as the same state in nft notation loaded by `nft -f`, whole and
//! after incremental updates. Each side runs in its own private network namespace.

mod common;

use std::process::Command;

use common::in_private_netns;

use hns_kernel::nft::Proto;
use hns_kernel::nft_batch::Batch;
use hns_kernel::nft_lb::{self, Affinity, Backend, Direct, Frontend, Hairpin, LB_CT_MARK, LbState, Remote, Service};
use hns_kernel::nft_lb_batch;

fn ruleset() -> String {
    let out = Command::new("nft").args(["list", "ruleset"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The listing cut into its blocks (each set, map and chain), sorted: nft lists chains in the
/// order they were made, which differs between a table written whole and one changed step by
/// step; what they hold must not.
fn blocks(listing: &str) -> Vec<String> {
    // The table's own opening and closing lines are the only ones not indented.
    let inner: Vec<&str> = listing.lines().filter(|l| l.is_empty() || l.starts_with('\t')).collect();
    let mut out: Vec<String> = inner.join("\n").split("\n\n").map(|b| b.trim().to_owned()).collect();
    out.sort();
    out
}

fn b(mark: u32, ip: &str, port: u16) -> Backend {
    Backend { mark: LB_CT_MARK | mark, addr: ip.parse().unwrap(), port }
}

fn svc(vip: &str, proto: Proto, port: u16, affinity: Affinity, backends: Vec<Backend>) -> Service {
    Service { frontend: Frontend::Vip(vip.parse().unwrap()), proto, port, internal: false, local: false, preserve_dip: false, affinity, backends }
}

fn lb(services: Vec<Service>, source_vip: Option<&str>) -> LbState {
    let mut hairpin: Vec<Hairpin> = services.iter().flat_map(|s| s.backends.iter()).map(|b| Hairpin { mark: b.mark, backend: b.addr, source_vip: source_vip.map(|v| v.parse().unwrap()) }).collect();
    hairpin.sort();
    hairpin.dedup();
    LbState { services, hairpin, direct: vec![], remote: vec![] }
}

/// Every shape of service: each affinity, both families, node frontends, ILB,
/// LocalRoutedVIP, no backend, one backend, a load balancer with two ports.
fn states() -> Vec<LbState> {
    let three = vec![b(1, "172.20.0.5", 8080), b(2, "172.20.0.6", 8080), b(3, "172.20.0.7", 8080)];
    vec![
        lb(vec![svc("10.96.0.10", Proto::Tcp, 80, Affinity::None, three.clone()), svc("10.96.0.10", Proto::Udp, 53, Affinity::SourceIpProtocol, three.iter().map(|b| Backend { port: 5353, ..*b }).collect())], Some("10.96.0.1")),
        lb(vec![Service { internal: true, local: true, ..svc("10.96.0.11", Proto::Tcp, 443, Affinity::SourceIp, vec![b(4, "172.20.0.8", 8443)]) }], None),
        lb(vec![svc("fd00:96::10", Proto::Tcp, 80, Affinity::SourceIp, vec![b(5, "fd00:20::5", 80), b(6, "fd00:20::6", 80)])], None),
        lb(vec![Service { frontend: Frontend::Node { v6: false }, ..svc("10.96.0.12", Proto::Tcp, 30080, Affinity::None, vec![b(7, "172.20.0.9", 80)]) }], None),
        lb(vec![Service { frontend: Frontend::Node { v6: true }, local: true, ..svc("10.96.0.12", Proto::Udp, 30053, Affinity::None, vec![b(8, "fd00:20::9", 53)]) }], None),
        lb(vec![Service { internal: true, ..svc("10.96.0.13", Proto::Tcp, 80, Affinity::None, vec![]) }], None),
        {
            // DSR / PreserveDIP: the mark is chosen, no DNAT; the marks are in `dsr`.
            let mut l = lb(vec![Service { preserve_dip: true, ..svc("10.96.0.15", Proto::Tcp, 80, Affinity::None, vec![b(12, "172.20.0.40", 80), b(13, "172.20.0.41", 80)]) }], None);
            l.direct = l.services[0].backends.iter().map(|b| Direct { mark: b.mark, backend: b.addr }).collect();
            l
        },
        {
            // A remote backend (an overlay endpoint on another host): no hairpin, its
            // connections source-NATed to the SourceVIP.
            let mut l = lb(vec![svc("10.96.0.16", Proto::Tcp, 80, Affinity::None, vec![b(14, "10.240.0.7", 7000)])], None);
            l.hairpin.clear();
            l.remote = vec![Remote { mark: LB_CT_MARK | 14, source_vip: "10.240.0.250".parse().unwrap() }];
            l
        },
    ]
}

fn by_nft(lbs: &[LbState]) -> String {
    let refs: Vec<&LbState> = lbs.iter().collect();
    let text = nft_lb_batch::text_all(&refs);
    in_private_netns(|| {
        nft_lb::run(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        ruleset()
    })
}

#[test]
fn netlink_table_reads_back_as_the_nft_program() {
    let lbs = states();
    let text = by_nft(&lbs);
    let netlink = in_private_netns(|| {
        let refs = lbs.iter().collect::<Vec<_>>();
        let shapes = nft_lb_batch::rebuild(&refs).unwrap();
        assert_eq!(shapes, nft_lb_batch::Shapes::of(&refs));
        assert!(nft_lb::dispatch_present());
        let obs = nft_lb::observe();
        assert!(obs.dispatch);
        assert_eq!(obs.chains, nft_lb_batch::chain_count(&refs), "the skeleton's, the common chains and one per shape, as the drift check counts");
        // The start-up drift check: the table written over netlink lists as the rules-only
        // program does in a scratch namespace; an edited rule does not.
        let want = nft_lb_batch::expected_shape(&shapes).unwrap();
        assert_eq!(nft_lb::listed_shape().as_ref(), Some(&want));
        let listed = String::from_utf8(Command::new("nft").args(["-a", "list", "chain", "inet", "hns_lb", "refuse"]).output().unwrap().stdout).unwrap();
        let handle = listed.lines().find(|l| l.contains("tcp reset")).and_then(|l| l.rsplit("# handle ").next()).expect("the reset rule").trim().to_owned();
        assert!(Command::new("nft").args(["replace", "rule", "inet", "hns_lb", "refuse", "handle", &handle, "meta", "l4proto", "tcp", "drop"]).status().unwrap().success());
        assert_ne!(nft_lb::listed_shape().as_ref(), Some(&want), "a rule edited by hand is drift");
        nft_lb_batch::rebuild(&refs).unwrap();
        ruleset()
    });
    assert!(text.contains("ct mark set numgen random mod 3") && text.contains("jhash ip6 saddr mod 2 seed 0x686e73") && text.contains("ct mark set ip daddr . meta l4proto . th dport . ct mark map @pick4"), "{text}");
    assert!(text.contains("goto lb_vip4_direct") && text.contains("iif != 0 iifname != \"hns-*\""), "{text}");
    assert!(text.contains("chain draw_vip4_srcipproto_3 {") && !text.contains("chain s4_"), "one chain per shape, none per service: {text}");
    assert_eq!(blocks(&netlink), blocks(&text));
}

#[test]
fn updates_read_back_as_the_final_state() {
    let old = states();
    let mut new = old.clone();
    // Replace a backend (elements only), add one (the chain's shape changes), change a port
    // mapping's backend port, drop a service and a whole load balancer, add a load balancer.
    new[0].services[0].backends[1] = b(9, "172.20.0.20", 8080);
    new[0].services[1].backends.push(b(10, "172.20.0.21", 5353));
    new[0] = lb(new[0].services.clone(), Some("10.96.0.1"));
    new[2].services[0].backends.retain(|b| b.mark != LB_CT_MARK | 5);
    new[2] = lb(new[2].services.clone(), None);
    new[5] = LbState::default();
    new.push(lb(vec![svc("10.96.0.14", Proto::Tcp, 80, Affinity::None, vec![b(11, "172.20.0.30", 80)])], None));
    let text = by_nft(&new.iter().filter(|l| !l.services.is_empty()).cloned().collect::<Vec<_>>());
    let netlink = in_private_netns(|| {
        let mut shapes = nft_lb_batch::rebuild(&old.iter().collect::<Vec<_>>()).unwrap();
        for (i, n) in new.iter().enumerate() {
            let empty = LbState::default();
            let mut b = Batch::new();
            nft_lb_batch::build_update(&mut b, &mut shapes, old.get(i).unwrap_or(&empty), n);
            nft_lb_batch::apply(&b).unwrap();
            // Twice makes no batch at all.
            let mut again = Batch::new();
            nft_lb_batch::build_update(&mut again, &mut shapes, n, n);
            assert!(again.is_empty());
        }
        let left: Vec<&LbState> = new.iter().filter(|l| !l.services.is_empty()).collect();
        assert_eq!(shapes, nft_lb_batch::Shapes::of(&left));
        assert_eq!(nft_lb::observe().chains, nft_lb_batch::chain_count(&left), "shapes no service uses any more are gone");
        ruleset()
    });
    assert!(text.contains("172.20.0.20 . 8080") && !text.contains("172.20.0.6 . 8080"), "{text}");
    assert_eq!(blocks(&netlink), blocks(&text));
}

#[test]
fn a_batch_against_a_state_the_kernel_lacks_fails_whole() {
    in_private_netns(|| {
        let lbs = states();
        nft_lb_batch::rebuild(&lbs.iter().collect::<Vec<_>>()).unwrap();
        let before = ruleset();
        // Pretend the kernel held a load balancer it does not hold: deleting its elements fails.
        let ghost = lb(vec![svc("10.96.0.99", Proto::Tcp, 80, Affinity::None, vec![b(99, "172.20.0.99", 80)])], None);
        let mut shapes = nft_lb_batch::Shapes::of(&lbs.iter().collect::<Vec<_>>());
        let mut b = Batch::new();
        nft_lb_batch::build_update(&mut b, &mut shapes, &lbs[0], &LbState::default());
        nft_lb_batch::build_update(&mut b, &mut shapes, &ghost, &LbState::default());
        assert!(nft_lb_batch::apply(&b).is_err());
        assert_eq!(ruleset(), before, "a refused batch changed the table");
        nft_lb_batch::rebuild(&[]).unwrap();
        assert_eq!(ruleset(), "");
    });
}
