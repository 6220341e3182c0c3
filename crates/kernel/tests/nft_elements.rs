//! The nfnetlink element writer against the real kernel: elements written by hns must read
//! back through `nft` exactly as if nft had written them. Runs in a private network namespace
//! (a thread that unshared its own; `nft` children inherit it), so nothing touches the host.

mod common;

use std::process::Command;

use common::in_private_netns;

use hns_kernel::nft::{self, Desired, Mapping, NetworkRules, Proto};
use hns_kernel::nft_elements::{ElementWriter, element_changes};

fn list(set: &str) -> String {
    let out = Command::new("nft").args(["list", if set.starts_with("pm_") { "set" } else { "map" }, "inet", "hns", set]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn m(proto: Proto, host_ip: Option<&str>, port: u16, ip: &str, cport: u16) -> Mapping {
    Mapping { proto, host_ip: host_ip.map(|h| h.parse().unwrap()), host_port: port, container_ip: ip.parse().unwrap(), container_port: cport }
}

fn table() -> Desired {
    Desired {
        networks: vec![NetworkRules { bridge: "hns-test0001".into(), subnets: vec!["172.20.0.0/16".parse().unwrap()], masquerade: true, internal: false, inbound_closed: true, dns_listeners: vec![] }],
        mappings: vec![],
    }
}

#[test]
fn written_elements_read_back_through_nft() {
    in_private_netns(|| {
        nft::apply(&table()).unwrap();
        let mut w = ElementWriter::open().unwrap();
        let a = m(Proto::Tcp, None, 8080, "172.20.0.2", 80);
        let b = m(Proto::Udp, Some("198.51.100.2"), 53, "172.20.0.3", 5353);
        let c = m(Proto::Tcp, None, 8443, "fd00::2", 443);
        let d = m(Proto::Tcp, Some("2001:db8::2"), 80, "fd00::3", 8080);
        w.apply(&element_changes(&[a, b, c, d], &[], &[])).unwrap();
        assert!(list("pm4").contains("tcp . 8080 : 172.20.0.2 . 80"), "{}", list("pm4"));
        assert!(list("pm4ip").contains("198.51.100.2 . udp . 53 : 172.20.0.3 . 5353"), "{}", list("pm4ip"));
        assert!(list("pm_allow4").contains("172.20.0.2 . tcp . 80"), "{}", list("pm_allow4"));
        assert!(list("pm_allow4").contains("172.20.0.3 . udp . 5353"), "{}", list("pm_allow4"));
        assert!(list("pm6").contains("tcp . 8443 : fd00::2 . 443"), "{}", list("pm6"));
        assert!(list("pm6ip").contains("2001:db8::2 . tcp . 80 : fd00::3 . 8080"), "{}", list("pm6ip"));
        assert!(list("pm_allow6").contains("fd00::2 . tcp . 443"), "{}", list("pm_allow6"));

        // Removal takes both elements; the other mappings stay.
        w.apply(&element_changes(&[], &[a], &[b, c, d])).unwrap();
        assert!(!list("pm4").contains("8080"), "{}", list("pm4"));
        assert!(!list("pm_allow4").contains("172.20.0.2 "), "{}", list("pm_allow4"));
        assert!(list("pm4ip").contains("198.51.100.2 . udp . 53"));
    });
}

#[test]
fn a_refused_batch_changes_nothing_and_names_the_element() {
    in_private_netns(|| {
        nft::apply(&table()).unwrap();
        let mut w = ElementWriter::open().unwrap();
        let gone = m(Proto::Tcp, None, 9000, "172.20.0.9", 90);
        let new = m(Proto::Tcp, None, 9001, "172.20.0.9", 91);
        // Removing an element that is not there fails the whole batch: the addition in the
        // same batch must not be applied either.
        let e = w.apply(&element_changes(&[new], &[gone], &[])).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("tcp . 9000"), "{e}");
        assert!(!list("pm4").contains("9001"), "atomic: {}", list("pm4"));
        // The same socket keeps working after a refusal.
        w.apply(&element_changes(&[new], &[], &[])).unwrap();
        assert!(list("pm4").contains("tcp . 9001 : 172.20.0.9 . 91"));
    });
}

#[test]
fn a_missing_table_is_reported_as_not_found() {
    in_private_netns(|| {
        let mut w = ElementWriter::open().unwrap();
        let e = w.apply(&element_changes(&[m(Proto::Tcp, None, 80, "172.20.0.2", 80)], &[], &[])).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    });
}
