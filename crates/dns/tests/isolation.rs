//! Isolation by listener: a network's names are only visible on its own
//! listeners, and only to sources inside the network's subnets; listeners
//! follow the set of listen addresses.

mod common;

use std::time::Duration;

use common::*;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use hns_dns::{DnsConfig, DnsError, DnsService, NetworkView};

#[test]
fn names_of_one_network_are_never_answered_on_another() {
    let rt = netns_runtime();
    rt.block_on(async {
        let upstream = fake_upstream(sa("127.0.0.9:53"), Upstream::Answers).await;
        let up = [sa("127.0.0.9:53")];
        let dns = DnsService::new(DnsConfig::default());
        dns.set_network(
            "red",
            &[v("127.0.0.2")],
            53,
            view(Some("red.test"), &[("alpha", &["10.1.0.2"])], &up),
        )
        .await
        .unwrap();
        dns.set_network(
            "blue",
            &[v("127.0.0.3")],
            53,
            view(Some("blue.test"), &[("beta", &["10.2.0.2"])], &up),
        )
        .await
        .unwrap();
        let (red, blue) = (sa("127.0.0.2:53"), sa("127.0.0.3:53"));

        assert_eq!(
            addrs(&ask_udp(red, "alpha", RecordType::A).await),
            vec![v("10.1.0.2")]
        );
        assert_eq!(
            addrs(&ask_udp(blue, "beta", RecordType::A).await),
            vec![v("10.2.0.2")]
        );

        // red's names on blue's listener: forwarded (the fake says NXDOMAIN),
        // never answered with red's address; same for reverse names.
        for (name, rtype) in [
            ("alpha", RecordType::A),
            ("alpha.red.test", RecordType::A),
            ("2.0.1.10.in-addr.arpa", RecordType::PTR),
        ] {
            let m = ask_udp(blue, name, rtype).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NXDomain,
                "{name} on blue"
            );
            assert!(m.answers.is_empty(), "{name} on blue: {m:?}");
            assert!(!m.metadata.authoritative);
            let m = ask_tcp(blue, name, rtype).await;
            assert!(m.answers.is_empty(), "{name} on blue over TCP: {m:?}");
        }
        let m = ask_udp(red, "beta", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(upstream.udp() >= 4, "the foreign names went upstream");

        // One address cannot serve two networks.
        let err = dns
            .set_network("blue", &[v("127.0.0.2")], 53, view(None, &[], &[]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DnsError::AddressTaken { ref owner, .. } if owner == "red"),
            "{err}"
        );
        assert_eq!(
            addrs(&ask_udp(blue, "beta", RecordType::A).await),
            vec![v("10.2.0.2")],
            "failed call changed nothing"
        );
    });
}

#[test]
fn sources_outside_the_network_get_no_answer_at_all() {
    let rt = netns_runtime();
    rt.block_on(async {
        let _upstream = fake_upstream(sa("127.0.0.9:53"), Upstream::Answers).await;
        let dns = DnsService::new(DnsConfig::default());
        // The network's clients are 10.1.0.0/24 and fd01::/64; the test's own sources
        // (127.0.0.1, ::1) are outside.
        ip(&["addr", "add", "10.1.0.5/32", "dev", "lo"]);
        ip(&["-6", "addr", "add", "fd01::5/128", "dev", "lo", "nodad"]);
        let view = NetworkView {
            clients: vec!["10.1.0.0/24".parse().unwrap(), "fd01::/64".parse().unwrap()],
            ..view(None, &[("alpha", &["10.1.0.2"])], &[sa("127.0.0.9:53")])
        };
        dns.set_network("red", &[v("127.0.0.2"), v("::1")], 53, view)
            .await
            .unwrap();
        for (server, inside) in [("127.0.0.2:53", "10.1.0.5"), ("[::1]:53", "fd01::5")] {
            // Neither a local name nor a forwarded one, over UDP or TCP.
            for name in ["alpha", "www.example.test"] {
                let q = query(name, RecordType::A, true);
                let got = try_udp(sa(server), &q, Duration::from_millis(500)).await;
                assert!(got.is_none(), "{name} from outside on {server}: {got:?}");
                let mut s = tokio::net::TcpStream::connect(server).await.unwrap();
                write_framed(&mut s, &q.to_vec().unwrap()).await.unwrap();
                let got = tokio::time::timeout(Duration::from_secs(2), read_framed(&mut s))
                    .await
                    .expect("the connection is closed, not left hanging");
                assert!(got.is_err(), "{name} from outside on {server} over TCP: {got:?}");
            }
            // From an address inside the network: answered.
            let sock = tokio::net::UdpSocket::bind((v(inside), 0)).await.unwrap();
            sock.connect(sa(server)).await.unwrap();
            sock.send(&query("alpha", RecordType::A, true).to_vec().unwrap())
                .await
                .unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
                .await
                .expect("an answer from inside")
                .unwrap();
            let m = hickory_server::proto::op::Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(addrs(&m), vec![v("10.1.0.2")], "{server} from {inside}");
        }
        assert!(dns.stats().dropped >= 8, "{:?}", dns.stats());
    });
}

#[test]
fn listeners_follow_the_listen_addresses() {
    let rt = netns_runtime();
    rt.block_on(async {
        let dns = DnsService::new(DnsConfig::default());
        let names: &[(&str, &[&str])] = &[("alpha", &["10.1.0.2"])];
        dns.set_network("red", &[v("127.0.0.2")], 53, view(None, names, &[]))
            .await
            .unwrap();
        dns.set_network(
            "red",
            &[v("127.0.0.2"), v("127.0.0.4")],
            53,
            view(None, names, &[]),
        )
        .await
        .unwrap();
        for server in ["127.0.0.2:53", "127.0.0.4:53"] {
            assert_eq!(
                addrs(&ask_udp(sa(server), "alpha", RecordType::A).await),
                vec![v("10.1.0.2")],
                "{server}"
            );
        }
        dns.set_network("red", &[v("127.0.0.4")], 53, view(None, names, &[]))
            .await
            .unwrap();
        let gone = try_udp(
            sa("127.0.0.2:53"),
            &query("alpha", RecordType::A, true),
            Duration::from_millis(300),
        )
        .await;
        assert!(gone.is_none(), "vanished address still answers: {gone:?}");
        assert!(
            tokio::net::TcpStream::connect("127.0.0.2:53")
                .await
                .is_err(),
            "TCP listener closed too"
        );
        assert_eq!(
            addrs(&ask_tcp(sa("127.0.0.4:53"), "alpha", RecordType::A).await),
            vec![v("10.1.0.2")]
        );

        // The freed address can be taken by another network right away.
        dns.set_network(
            "blue",
            &[v("127.0.0.2")],
            53,
            view(None, &[("beta", &["10.2.0.2"])], &[]),
        )
        .await
        .unwrap();
        assert_eq!(
            addrs(&ask_tcp(sa("127.0.0.2:53"), "beta", RecordType::A).await),
            vec![v("10.2.0.2")]
        );

        dns.remove_network("red").await;
        dns.remove_network("red").await; // idempotent
        let gone = try_udp(
            sa("127.0.0.4:53"),
            &query("alpha", RecordType::A, true),
            Duration::from_millis(300),
        )
        .await;
        assert!(gone.is_none(), "removed network still answers: {gone:?}");
        assert!(matches!(
            dns.update_view("red", view(None, &[], &[])),
            Err(DnsError::UnknownNetwork { .. })
        ));
        assert_eq!(
            addrs(&ask_udp(sa("127.0.0.2:53"), "beta", RecordType::A).await),
            vec![v("10.2.0.2")]
        );
    });
}

#[test]
fn a_port_taken_by_another_server_is_a_clear_error_and_changes_nothing() {
    let rt = netns_runtime();
    rt.block_on(async {
        let _other = tokio::net::UdpSocket::bind("127.0.0.5:53").await.unwrap();
        let dns = DnsService::new(DnsConfig::default());
        dns.set_network(
            "red",
            &[v("127.0.0.2")],
            53,
            view(None, &[("alpha", &["10.1.0.2"])], &[]),
        )
        .await
        .unwrap();
        let err = dns
            .set_network(
                "red",
                &[v("127.0.0.2"), v("127.0.0.5")],
                53,
                view(None, &[("new", &["10.1.0.9"])], &[]),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, DnsError::Bind { proto: "UDP", .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.5:53"), "{err}");
        let m = ask_udp(sa("127.0.0.2:53"), "new", RecordType::A).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::Refused,
            "the view was not swapped by the failed call"
        );
        assert_eq!(
            addrs(&ask_udp(sa("127.0.0.2:53"), "alpha", RecordType::A).await),
            vec![v("10.1.0.2")]
        );
    });
}

#[test]
fn a_listener_can_be_set_up_before_its_address_exists() {
    let rt = netns_runtime();
    rt.block_on(async {
        let dns = DnsService::new(DnsConfig::default());
        let names: &[(&str, &[&str])] = &[("early", &["10.77.0.5"])];
        dns.set_network(
            "n",
            &[v("10.77.0.1"), v("fd77:77::1")],
            53,
            view(None, names, &[]),
        )
        .await
        .unwrap();
        let q = query("early", RecordType::A, true);
        assert!(
            try_udp(sa("10.77.0.1:53"), &q, Duration::from_millis(200))
                .await
                .is_none(),
            "no such address yet"
        );

        ip(&["addr", "add", "10.77.0.1/24", "dev", "lo"]);
        ip(&["-6", "addr", "add", "fd77:77::1/64", "dev", "lo", "nodad"]);
        for server in ["10.77.0.1:53", "[fd77:77::1]:53"] {
            assert_eq!(
                addrs(&ask_udp(sa(server), "early", RecordType::A).await),
                vec![v("10.77.0.5")],
                "{server}"
            );
            assert_eq!(
                addrs(&ask_tcp(sa(server), "early", RecordType::A).await),
                vec![v("10.77.0.5")],
                "{server}"
            );
        }
    });
}
