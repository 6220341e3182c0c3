//! The ACL tables written over nfnetlink against the real kernel: what hnsd writes must read
//! back through `nft` exactly as the same state in nft notation loaded by `nft -f`, so the
//! netlink encoding means what the readable compiler says. Each side runs in its own private
//! network namespace (a thread that unshared one; `nft` children inherit it).

mod common;

use std::process::Command;

use common::in_private_netns;

use hns_kernel::nft_acl::{self, Action, Attach, Direction, EndpointAcl, Prior, Rule, Scope};
use hns_kernel::nft_batch::Batch;

fn ruleset() -> String {
    let out = Command::new("nft").args(["list", "ruleset"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn rule(action: Action, direction: Direction, scope: Scope, priority: u16) -> Rule {
    Rule { id: String::new(), action, direction, scope, priority, protocols: vec![], local: vec![], remote: vec![], local_ports: vec![], remote_ports: vec![] }
}

fn nets(s: &str) -> Vec<ipnet::IpNet> {
    s.split(',').map(|n| n.parse().unwrap()).collect()
}

/// Every shape of rule the compiler emits.
fn state() -> Vec<EndpointAcl> {
    let rules = vec![
        Rule { protocols: vec![6], local_ports: vec![(80, 80), (8000, 8080)], remote: nets("10.0.0.0/8,fd00::/64"), ..rule(Action::Allow, Direction::In, Scope::Switch, 100) },
        Rule { protocols: vec![6, 17], remote_ports: vec![(53, 53)], local: nets("172.16.0.5/32"), ..rule(Action::Block, Direction::Out, Scope::Switch, 1) },
        Rule { protocols: vec![17], local_ports: vec![(1000, 2000)], remote_ports: vec![(5, 5), (7, 7)], remote: nets("172.16.0.0/12,192.168.0.0/16,10.1.2.3/32"), ..rule(Action::Allow, Direction::Out, Scope::Switch, 200) },
        Rule { protocols: vec![1], remote: nets("0.0.0.0/0"), ..rule(Action::Allow, Direction::In, Scope::Switch, 300) },
        Rule { local: nets("fd00::1/128"), remote: nets("fd01::/61,fd02::/16"), ..rule(Action::Allow, Direction::In, Scope::Host, 10) },
        rule(Action::Block, Direction::Out, Scope::Host, 20),
        rule(Action::Allow, Direction::Out, Scope::Switch, 65000),
        // Lists multiplied: 2 x 5 x 2 boxes, partly shadowed by the rule at 100.
        Rule { protocols: vec![6, 17], local_ports: vec![(1, 1), (3, 3), (5, 9), (100, 200), (65000, 65535)], remote: nets("10.0.0.0/8,fd00::/64"), ..rule(Action::Allow, Direction::In, Scope::Switch, 400) },
    ];
    vec![
        EndpointAcl { host_if: "hnv000000000001".into(), attach: Attach::BridgePort, rules: rules.clone() },
        EndpointAcl { host_if: "hnv000000000002".into(), attach: Attach::Routed, rules: rules.clone() },
        EndpointAcl { host_if: "hnv000000000003".into(), attach: Attach::BridgePort, rules: vec![rule(Action::Allow, Direction::In, Scope::Switch, 5)] },
    ]
}

#[test]
fn netlink_tables_read_back_as_the_nft_program() {
    let eps = state();
    let by_nft = in_private_netns(|| {
        nft_acl::run(&nft_acl::compile_all(&eps)).unwrap();
        ruleset()
    });
    let by_netlink = in_private_netns(|| {
        let mut b = Batch::new();
        nft_acl::build_all(&mut b, &eps);
        nft_acl::apply(&b).unwrap();
        assert!(nft_acl::tables_present());
        // One series per ACL rule of each endpoint (its boxes summed), none counted yet.
        let hits = nft_acl::rule_hits().unwrap();
        assert_eq!(hits.len(), 8 + 8 + 1, "{hits:?}");
        let last = nft_acl::rule_comment("hnv000000000002", nft_acl::ordered(&eps[1].rules)[7]);
        assert!(hits.iter().any(|(c, _, _)| *c == last) && hits.iter().all(|(_, p, b)| (*p, *b) == (0, 0)), "{hits:?}");
        // The reconciler's check: each endpoint's chains and map elements are what its state
        // says; a flushed chain, a flushed map and a deleted element show.
        assert!(eps.iter().all(|e| !nft_acl::endpoint_drifted(e)));
        let repair = |e: &EndpointAcl| {
            let mut b = Batch::new();
            nft_acl::build_endpoint(&mut b, e, Prior::Unknown);
            nft_acl::apply(&b).unwrap();
            assert!(!nft_acl::endpoint_drifted(e));
        };
        let chain = nft_acl::wanted_chains(&eps[0]).remove(0);
        assert!(Command::new("nft").args(["flush", "chain", "bridge", "hns_acl", &chain]).status().unwrap().success());
        assert_eq!(nft_acl::chain_rules(eps[0].attach, &chain).unwrap(), 0, "a flushed chain has no rule");
        assert_eq!(nft_acl::chain_rules(eps[0].attach, "no_such_chain").unwrap(), 0);
        assert!(nft_acl::endpoint_drifted(&eps[0]));
        repair(&eps[0]);
        assert!(Command::new("nft").args(["flush", "map", "inet", "hns_acl", "hnv000000000002_sw_out_4"]).status().unwrap().success());
        assert!(nft_acl::endpoint_drifted(&eps[1]));
        repair(&eps[1]);
        let listed = Command::new("nft").args(["list", "map", "bridge", "hns_acl", "hnv000000000001_sw_in_4"]).output().unwrap();
        let listed = String::from_utf8(listed.stdout).unwrap();
        let first = listed.split("elements = { ").nth(1).unwrap().split(" counter").next().unwrap().to_owned();
        let del = Command::new("nft").args(["delete", "element", "bridge", "hns_acl", "hnv000000000001_sw_in_4", &format!("{{ {first} }}")]).output().unwrap();
        assert!(del.status.success(), "{first}: {}", String::from_utf8_lossy(&del.stderr));
        assert!(nft_acl::endpoint_drifted(&eps[0]), "a deleted element shows");
        repair(&eps[0]);
        // The names check: complete endpoints and nothing unwanted; a deleted dispatch
        // element and a leftover chain show; an endpoint the state drops is unwanted.
        let nft = |args: &[&str]| assert!(Command::new("nft").args(args).status().unwrap().success(), "{args:?}");
        let inv = nft_acl::Inventory::read().unwrap();
        assert!(eps.iter().all(|e| inv.matches(e)) && inv.unwanted(&eps).is_empty(), "{inv:?}");
        // Written from other rules: the digest differs.
        assert!(!inv.matches(&EndpointAcl { rules: eps[0].rules.clone(), ..eps[2].clone() }));
        assert_eq!(inv.unwanted(&eps[..2]), [("hnv000000000003".to_owned(), Attach::BridgePort)]);
        nft(&["delete", "element", "bridge", "hns_acl", "sw_in", "{ \"hnv000000000001\" }"]);
        nft(&["add", "chain", "inet", "hns_acl", "hnv000000000009_host_out"]);
        let inv = nft_acl::Inventory::read().unwrap();
        assert!(!inv.complete(&eps[0]) && inv.complete(&eps[1]), "a deleted dispatch element shows");
        assert!(!nft_acl::endpoint_drifted(&eps[0]), "(the per-endpoint compare does not look at dispatch elements)");
        assert_eq!(inv.unwanted(&eps), [("hnv000000000009".to_owned(), Attach::Routed)]);
        let mut b = Batch::new();
        nft_acl::build_endpoint(&mut b, &eps[0], Prior::Unknown);
        nft_acl::build_remove(&mut b, "hnv000000000009", Attach::Routed);
        nft_acl::apply(&b).unwrap();
        let inv = nft_acl::Inventory::read().unwrap();
        assert!(eps.iter().all(|e| inv.matches(e)) && inv.unwanted(&eps).is_empty(), "{inv:?}");
        // A dispatch chain that lost its rules.
        assert!(nft_acl::skeleton_intact());
        nft(&["flush", "chain", "inet", "hns_acl", "acl_output"]);
        assert!(!nft_acl::skeleton_intact());
        let mut b = Batch::new();
        nft_acl::build_all(&mut b, &eps);
        nft_acl::apply(&b).unwrap();
        assert!(nft_acl::skeleton_intact());
        ruleset()
    });
    let first = nft_acl::rule_comment("hnv000000000001", nft_acl::ordered(&eps[0].rules)[0]);
    assert!(by_nft.contains(&format!("counter packets 0 bytes 0 comment \"{first}\" : drop")), "{by_nft}");
    assert!(by_nft.contains("jump hnv000000000002_sw_in") && by_nft.contains("vmap @hnv000000000002_sw_in_6"), "{by_nft}");
    assert_eq!(by_netlink, by_nft);
}

#[test]
fn endpoint_updates_read_back_as_the_nft_program_and_touch_only_that_endpoint() {
    let mut eps = state();
    let mut changed = eps[0].clone();
    changed.rules[0].local_ports = vec![(443, 443)];
    assert!(nft_acl::changeable(&eps[0], &changed));
    // Its Host rules gone: its Host stages go too (not a change of elements only).
    let mut narrowed = eps[1].clone();
    narrowed.rules.retain(|r| r.scope == Scope::Switch);
    assert!(!nft_acl::changeable(&eps[1], &narrowed));
    let by_nft = in_private_netns(|| {
        nft_acl::run(&nft_acl::compile_all(&eps)).unwrap();
        nft_acl::run(&nft_acl::compile_endpoint(&changed, Prior::Unknown)).unwrap();
        nft_acl::run(&nft_acl::compile_endpoint(&narrowed, Prior::Unknown)).unwrap();
        nft_acl::run(&nft_acl::compile_endpoint(&EndpointAcl { rules: vec![], ..eps[2].clone() }, Prior::Unknown)).unwrap();
        ruleset()
    });
    let by_netlink = in_private_netns(|| {
        let mut b = Batch::new();
        nft_acl::build_all(&mut b, &eps);
        nft_acl::apply(&b).unwrap();
        // The change as hnsd writes it (the elements that differ), then the whole endpoint
        // rewritten twice (idempotent): the same tables.
        let mut b = Batch::new();
        nft_acl::build_change(&mut b, &eps[0], &changed);
        nft_acl::apply(&b).unwrap();
        assert!(!nft_acl::endpoint_drifted(&changed));
        let mut b = Batch::new();
        nft_acl::build_endpoint(&mut b, &changed, Prior::Unknown);
        nft_acl::apply(&b).unwrap();
        nft_acl::apply(&b).unwrap();
        let mut b = Batch::new();
        nft_acl::build_endpoint(&mut b, &narrowed, Prior::Unknown);
        nft_acl::build_remove(&mut b, &eps[2].host_if, eps[2].attach);
        nft_acl::apply(&b).unwrap();
        let chains = nft_acl::chains(Attach::BridgePort).unwrap();
        assert!(chains.contains(&"hnv000000000001_sw_in".to_owned()) && !chains.iter().any(|c| c.starts_with("hnv000000000003")), "{chains:?}");
        let sets = hns_kernel::nft_batch::set_names(hns_kernel::nft_batch::Family::Bridge, nft_acl::ACL_TABLE).unwrap();
        assert!(sets.contains(&"hnv000000000001_host_in_6".to_owned()) && !sets.iter().any(|s| s.starts_with("hnv000000000003")), "{sets:?}");
        let inet = hns_kernel::nft_batch::set_names(hns_kernel::nft_batch::Family::Inet, nft_acl::ACL_TABLE).unwrap();
        assert!(inet.contains(&"hnv000000000002_sw_in_4".to_owned()) && !inet.iter().any(|s| s.starts_with("hnv000000000002_host")), "{inet:?}");
        ruleset()
    });
    assert!(by_nft.contains(" . 443 counter"), "{by_nft}");
    assert_eq!(by_netlink, by_nft);
    eps.clear();
}

#[test]
fn a_refused_batch_changes_nothing_and_names_the_operation() {
    in_private_netns(|| {
        let eps = state();
        let mut b = Batch::new();
        nft_acl::build_all(&mut b, &eps);
        nft_acl::apply(&b).unwrap();
        let before = ruleset();
        let mut b = Batch::new();
        nft_acl::build_endpoint(&mut b, &EndpointAcl { rules: vec![], ..eps[0].clone() }, Prior::Unknown);
        // A chain that does not exist: the kernel refuses the whole transaction.
        nft_acl::build_remove(&mut b, "nosuchveth", Attach::BridgePort);
        b.delete_chain(hns_kernel::nft_batch::Family::Bridge, nft_acl::ACL_TABLE, "nosuchchain");
        let e = nft_acl::apply(&b).unwrap_err();
        assert!(e.to_string().contains("nosuchchain"), "{e}");
        assert_eq!(ruleset(), before, "a refused batch changed the tables");
        // And the tables without an endpoint are removed.
        let mut b = Batch::new();
        nft_acl::build_all(&mut b, &[]);
        nft_acl::apply(&b).unwrap();
        assert_eq!(ruleset(), "");
        assert!(!nft_acl::tables_present());
    });
}
