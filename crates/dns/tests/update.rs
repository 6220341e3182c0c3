//! View updates take effect for the very next query: no sleep, no reload.

mod common;

use common::*;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use hns_dns::{DnsConfig, DnsService};

#[test]
fn the_next_query_sees_an_added_name_and_misses_a_removed_one() {
    let rt = netns_runtime();
    rt.block_on(async {
        let upstream = fake_upstream(sa("127.0.0.9:53"), Upstream::Answers).await;
        let up = [sa("127.0.0.9:53")];
        let dns = DnsService::new(DnsConfig::default());
        let server = sa("127.0.0.2:53");
        dns.set_network(
            "n",
            &[v("127.0.0.2")],
            53,
            view(Some("s.test"), &[("old", &["10.0.0.2"])], &up),
        )
        .await
        .unwrap();

        // Asked before it exists: forwarded, NXDOMAIN.
        assert_eq!(
            ask_udp(server, "new", RecordType::A)
                .await
                .metadata
                .response_code,
            ResponseCode::NXDomain
        );

        for round in 0..50u8 {
            let addr = format!("10.0.1.{round}");
            dns.update_view(
                "n",
                view(
                    Some("s.test"),
                    &[("old", &["10.0.0.2"]), ("new", &[addr.as_str()])],
                    &up,
                ),
            )
            .unwrap();
            let m = ask_udp(server, "new.s.test", RecordType::A).await;
            assert_eq!(
                addrs(&m),
                vec![v(&addr)],
                "round {round}: the added name answers at once"
            );

            dns.update_view("n", view(Some("s.test"), &[("new", &[addr.as_str()])], &up))
                .unwrap();
            let m = ask_tcp(server, "old", RecordType::A).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NXDomain,
                "round {round}: the removed name is gone at once"
            );
            assert!(m.answers.is_empty());
            dns.update_view("n", view(Some("s.test"), &[("old", &["10.0.0.2"])], &up))
                .unwrap();
        }
        // Earlier NXDOMAIN for "new" was cached; the local name still won.
        assert!(upstream.udp() + upstream.tcp() >= 1);
    });
}
