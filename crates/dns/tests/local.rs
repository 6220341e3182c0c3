//! Local answers: A/AAAA/PTR for a network's own names, with and without the
//! suffix, in any case, over UDP, TCP and IPv6; NOERROR-no-data versus
//! NXDOMAIN; local names never forwarded.

mod common;

use common::*;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{RData, RecordType};
use hns_dns::{DnsConfig, DnsService};

#[test]
fn local_names_answer_a_aaaa_ptr_with_and_without_suffix() {
    let rt = netns_runtime();
    ip(&["-6", "addr", "add", "fd77::53/128", "dev", "lo", "nodad"]);
    rt.block_on(async {
        let upstream = fake_upstream(sa("127.0.0.9:53"), Upstream::Answers).await;
        let dns = DnsService::new(DnsConfig::default());
        let records: &[(&str, &[&str])] = &[
            ("web", &["10.0.0.2", "fd00::2"]),
            ("db", &["10.0.0.3"]),
            ("database", &["10.0.0.3"]),
        ];
        dns.set_network("n1", &[v("127.0.0.2"), v("fd77::53")], 53, view(Some("corp.example"), records, &[sa("127.0.0.9:53")]))
            .await
            .unwrap();
        let server = sa("127.0.0.2:53");

        for name in ["web", "web.", "WEB", "web.corp.example", "Web.CORP.Example."] {
            let m = ask_udp(server, name, RecordType::A).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(m.metadata.authoritative, "{name}: local answers are authoritative");
            assert_eq!(addrs(&m), vec![v("10.0.0.2")], "{name}");
            assert_eq!(m.answers[0].ttl, 0, "{name}: local answers are not to be cached");
            assert_eq!(m.answers[0].name, m.queries[0].name, "{name}: owner is the question");
        }
        let m = ask_udp(server, "web.corp.example", RecordType::AAAA).await;
        assert_eq!(addrs(&m), vec![v("fd00::2")]);

        // The name exists but has no AAAA: NOERROR with no answer, not
        // NXDOMAIN, and the question is not forwarded.
        let m = ask_udp(server, "db", RecordType::AAAA).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = ask_udp(server, "db.corp.example", RecordType::MX).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());

        // PTR for IPv4 and IPv6, every name of the address, qualified.
        let m = ask_udp(server, "3.0.0.10.in-addr.arpa", RecordType::PTR).await;
        let mut ptrs: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::PTR(p) => p.0.to_ascii(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        ptrs.sort();
        assert_eq!(ptrs, vec!["database.corp.example.", "db.corp.example."]);
        assert!(m.metadata.authoritative);
        let rev6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        let m = ask_udp(server, rev6, RecordType::PTR).await;
        assert!(matches!(&m.answers[..], [r] if r.data == RData::PTR(hickory_server::proto::rr::rdata::PTR("web.corp.example.".parse().unwrap()))), "{m:?}");
        assert_eq!(upstream.udp(), 0, "no local name was forwarded");

        // An unknown name goes upstream; its NXDOMAIN comes back, and since
        // a container could take that name any moment, its SOA TTL is 0.
        let m = ask_udp(server, "nope", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(!m.metadata.authoritative);
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(m.authorities[0].ttl, 0);
        let m = ask_udp(server, "nope.elsewhere.test", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].ttl, 3600, "names the network cannot own keep their negative TTL");
        assert_eq!(upstream.udp(), 2);

        // TCP and the IPv6 listener give the same local answers.
        let m = ask_tcp(server, "web.corp.example", RecordType::A).await;
        assert_eq!(addrs(&m), vec![v("10.0.0.2")]);
        let m = ask_udp(sa("[fd77::53]:53"), "WEB", RecordType::AAAA).await;
        assert_eq!(addrs(&m), vec![v("fd00::2")]);
        let m = ask_tcp(sa("[fd77::53]:53"), "db", RecordType::A).await;
        assert_eq!(addrs(&m), vec![v("10.0.0.3")]);

        let stats = dns.stats();
        assert!(stats.answered_local >= 13, "{stats:?}");
        assert_eq!(stats.forwarded, 2, "{stats:?}");
    });
}

#[test]
fn without_suffix_only_bare_names_are_local_and_without_upstreams_the_rest_is_refused() {
    let rt = netns_runtime();
    rt.block_on(async {
        let dns = DnsService::new(DnsConfig::default());
        dns.set_network(
            "internal",
            &[v("127.0.0.2")],
            53,
            view(None, &[("web", &["10.0.0.2"])], &[]),
        )
        .await
        .unwrap();
        let server = sa("127.0.0.2:53");
        let m = ask_udp(server, "Web.", RecordType::A).await;
        assert_eq!(addrs(&m), vec![v("10.0.0.2")]);
        assert!(
            !m.metadata.recursion_available,
            "nothing to recurse to on an internal network"
        );
        let m = ask_udp(server, "2.0.0.10.in-addr.arpa.", RecordType::PTR).await;
        assert!(
            matches!(&m.answers[..], [r] if r.data.to_string() == "web."),
            "{m:?}"
        );
        for name in ["web.corp.example", "example.org", "9.0.0.10.in-addr.arpa"] {
            let m = ask_udp(server, name, RecordType::A).await;
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
            assert!(m.answers.is_empty());
        }
        assert_eq!(dns.stats().failed, 3);
    });
}
