//! OutBoundNAT changes written per endpoint against the real kernel: after endpoints come and
//! go through `nft_outbound::update`, the table reads back as the same state written whole by
//! `nft_outbound::compile`, and the drift check agrees. Each side runs in its own private
//! network namespace.

mod common;

use std::process::Command;

use common::in_private_netns;
use hns_kernel::nft_outbound::{self, Applied, EndpointNat, OutboundNat};

fn table() -> String {
    let out = Command::new("nft").args(["list", "table", "inet", nft_outbound::ONAT_TABLE]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Chains are listed in the order they were made: compare them as a set.
    let text = String::from_utf8(out.stdout).unwrap();
    let mut blocks: Vec<String> = text.split("\n\n").map(|b| b.trim().trim_end_matches('}').trim().to_owned()).collect();
    blocks.sort();
    blocks.join("\n--\n")
}

fn ep(n: u8, policies: Vec<OutboundNat>) -> EndpointNat {
    EndpointNat { host_if: format!("hnv{n}"), addresses: vec![format!("10.77.2.{n}").parse().unwrap(), format!("2001:db8:77:2::{n}").parse().unwrap()], policies }
}

fn masq(exc: &str) -> OutboundNat {
    OutboundNat { ipv6: false, virtual_ip: None, exceptions: vec![exc.parse().unwrap()], destinations: vec![] }
}

fn six() -> OutboundNat {
    OutboundNat { ipv6: true, virtual_ip: None, exceptions: vec!["2001:db8:77::/48".parse().unwrap()], destinations: vec![] }
}

#[test]
fn per_endpoint_changes_read_back_as_the_whole_table() {
    let first = vec![ep(10, vec![masq("10.244.0.0/16")]), ep(11, vec![masq("10.244.0.0/16"), six()])];
    let (c, d) = (ep(12, vec![masq("10.244.0.0/16")]), ep(13, vec![masq("10.99.0.0/16")]));
    // 10 and 11 are there; 12 (known policy) and 13 (new policy) come; 11 goes (its IPv6
    // policy's last endpoint); 13 goes (its policy's only endpoint).
    let last = vec![first[0].clone(), c.clone()];
    let whole = in_private_netns(|| {
        nft_outbound::run(&nft_outbound::compile(&last)).unwrap();
        table()
    });
    let stepped = in_private_netns(|| {
        nft_outbound::run(&nft_outbound::compile(&first)).unwrap();
        let mut applied = Applied::of(&first);
        for (old, new) in [(None, Some(&c)), (None, Some(&d)), (Some(&first[1]), None), (Some(&d), None)] {
            nft_outbound::update(&mut applied, old, new).unwrap();
        }
        assert_eq!(applied, Applied::of(&last), "what the engine keeps follows the kernel");
        assert!(nft_outbound::matches(&last).unwrap(), "the drift check sees no drift");
        assert!(!nft_outbound::matches(&first).unwrap(), "and sees one against another state");
        table()
    });
    assert!(whole.contains("10.77.2.12 : jump p4_") && !whole.contains("p6_"), "{whole}");
    assert_eq!(stepped, whole);
}

#[test]
fn a_change_against_a_table_that_is_gone_fails_and_changes_nothing() {
    in_private_netns(|| {
        let eps = vec![ep(10, vec![masq("10.244.0.0/16")])];
        let mut applied = Applied::of(&eps);
        let before = applied.clone();
        assert!(nft_outbound::update(&mut applied, None, Some(&ep(11, vec![masq("10.244.0.0/16")]))).is_err());
        assert_eq!(applied, before, "a failed change leaves the kept state as it was");
    });
}

#[test]
fn the_drift_check_sees_a_rule_edited_by_hand() {
    in_private_netns(|| {
        let eps = vec![ep(10, vec![masq("10.244.0.0/16")])];
        nft_outbound::run(&nft_outbound::compile(&eps)).unwrap();
        assert!(nft_outbound::matches(&eps).unwrap());
        // The policy chain's masquerade becomes an accept: as many rules as before.
        let chain = table().lines().find_map(|l| l.trim().strip_prefix("chain p4_").map(|c| format!("p4_{}", c.trim_end_matches(" {")))).expect("a policy chain");
        let listed = String::from_utf8(Command::new("nft").args(["-a", "list", "chain", "inet", nft_outbound::ONAT_TABLE, &chain]).output().unwrap().stdout).unwrap();
        let handle = listed.lines().find(|l| l.contains("masquerade")).and_then(|l| l.rsplit("# handle ").next()).expect("the masquerade rule").trim().to_owned();
        let out = Command::new("nft").args(["replace", "rule", "inet", nft_outbound::ONAT_TABLE, &chain, "handle", &handle, "accept"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!nft_outbound::matches(&eps).unwrap(), "an edited rule is drift, though the count is the same");
    });
}

#[test]
fn a_table_grown_change_by_change_is_no_drift() {
    in_private_netns(|| {
        let first = vec![ep(10, vec![masq("10.244.0.0/16")])];
        nft_outbound::run(&nft_outbound::compile(&first)).unwrap();
        let mut applied = Applied::of(&first);
        // A new policy's chain is made after the dispatch chains, so it lists last.
        let new = ep(11, vec![masq("10.99.0.0/16")]);
        nft_outbound::update(&mut applied, None, Some(&new)).unwrap();
        assert!(nft_outbound::matches(&[first[0].clone(), new]).unwrap(), "chains in another order than compile's are the same table");
    });
}
