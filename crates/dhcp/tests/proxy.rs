//! The proxy DHCP client against a real dnsmasq, in namespaces built by `common`. Needs root.
//! Each test builds its own lab, so they run in parallel (the renewal test takes ~62 s; the
//! others a few seconds each).

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use hns_dhcp::{DhcpError, Lease, LeaseState};

const TIMEOUT: Duration = Duration::from_secs(10);

fn in_range(lease: &Lease) -> bool {
    (RANGE_START..=RANGE_END).contains(&lease.address)
}

fn ping_router_from_container(lab: &DhcpLab) {
    let out = lab
        .ctr
        .run("ping", ["-c", "1", "-W", "2", &ROUTER.to_string()]);
    assert!(out.is_ok(), "container cannot ping the LAN router: {out:?}");
}

#[test]
fn acquire_gives_a_lease_the_container_can_use() {
    let lab = DhcpLab::new("acquire", true);
    let mac = test_mac(1);
    lab.add_container_link("eth0", mac);

    let (lease, state) = lab.in_host(|| {
        Box::pin(async {
            let (keeper, lease) = hns_dhcp::acquire(UPLINK, mac, Some("web-1"), TIMEOUT)
                .await
                .unwrap();
            assert_eq!(keeper.mac(), mac);
            assert_eq!(keeper.uplink(), UPLINK);
            (lease, keeper.state())
        })
    });

    assert!(in_range(&lease), "{lease:?}");
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.gateway, Some(ROUTER));
    assert_eq!(lease.dns_servers, vec![DNS1, DNS2]);
    assert_eq!(lease.domain.as_deref(), Some(DOMAIN));
    assert_eq!(lease.server, ROUTER);
    assert_eq!(lease.lease_time, Duration::from_secs(LEASE_SECS));
    assert_eq!(
        (lease.t1, lease.t2),
        (Duration::from_secs(60), Duration::from_secs(105))
    );
    let age = SystemTime::now().duration_since(lease.obtained_at).unwrap();
    assert!(age < Duration::from_secs(5), "obtained_at {age:?} ago");
    assert_eq!(
        state,
        LeaseState::Bound {
            lease: lease.clone()
        }
    );

    // The server filed the lease under the container's MAC, with the hostname we sent.
    let line = lab.lease_of(mac).expect("dnsmasq lease file lists the MAC");
    assert_eq!(line.ip, lease.address);
    assert_eq!(line.hostname, "web-1");

    // Configured the way hnsd will, the lease works on the LAN.
    lab.configure_container("eth0", lease.address, lease.prefix_len);
    ping_router_from_container(&lab);
}

#[test]
fn keeper_renews_at_t1_by_unicast_to_the_server() {
    let lab = DhcpLab::new("renew", true);
    let mac = test_mac(2);
    lab.add_container_link("eth0", mac);
    lab.watch_requests(mac);

    let (first, renewed, waited, expiry_before) = lab.in_host(|| {
        Box::pin(async {
            let (keeper, first) = hns_dhcp::acquire(UPLINK, mac, None, TIMEOUT).await.unwrap();
            // The server answers a renewal at the leased address (RFC 2131 4.1): the
            // container must hold it, as it does once hnsd configured it.
            lab.configure_container("eth0", first.address, first.prefix_len);
            let expiry_before = lab.lease_of(mac).unwrap().expiry;
            let mut updates = keeper.subscribe();
            let t = Instant::now();
            tokio::time::timeout(Duration::from_secs(80), updates.changed())
                .await
                .expect("no new lease state within 80 s")
                .expect("keeper stopped");
            let state = updates.borrow().clone();
            (first, state, t.elapsed(), expiry_before)
        })
    });

    let LeaseState::Bound { lease: renewed } = renewed else {
        panic!("lease lost: {renewed:?}")
    };
    assert!(renewed.same_config(&first), "{first:?} -> {renewed:?}");
    let moved = renewed
        .obtained_at
        .duration_since(first.obtained_at)
        .unwrap();
    assert!(
        (55..=70).contains(&moved.as_secs()),
        "renewal {moved:?} after the first lease"
    );
    assert!(
        waited < Duration::from_secs(70),
        "renewal came after {waited:?}"
    );

    // dnsmasq extended its lease by the renewal.
    let after = lab.lease_of(mac).unwrap();
    assert!(
        after.expiry >= expiry_before + 55,
        "lease file expiry {expiry_before} -> {}",
        after.expiry
    );
    assert_eq!(lab.log_count(mac, "DHCPDISCOVER"), 1, "{}", lab.log());
    assert_eq!(lab.log_count(mac, "DHCPACK"), 2, "{}", lab.log());
    // DISCOVER and REQUEST were broadcast; the renewal was unicast to the server's MAC.
    assert_eq!(lab.requests(mac), (2, 1));
    ping_router_from_container(&lab);
}

#[test]
fn release_removes_the_lease_from_the_server() {
    let lab = DhcpLab::new("release", true);
    let mac = test_mac(3);
    lab.add_container_link("eth0", mac);

    lab.in_host(|| {
        Box::pin(async {
            let (keeper, lease) = hns_dhcp::acquire(UPLINK, mac, None, TIMEOUT).await.unwrap();
            assert_eq!(lab.lease_of(mac).map(|l| l.ip), Some(lease.address));
            let mut updates = keeper.subscribe();
            keeper.release().await.unwrap();
            // The task is gone: watchers see the channel close.
            assert!(updates.changed().await.is_err());
        })
    });

    wait_for(Duration::from_secs(5), "dnsmasq to drop the lease", || {
        lab.lease_of(mac).is_none()
    });
    assert_eq!(lab.log_count(mac, "DHCPRELEASE"), 1, "{}", lab.log());
}

#[test]
fn two_macs_get_two_addresses() {
    let lab = DhcpLab::new("two", true);
    let (m1, m2) = (test_mac(4), test_mac(5));
    lab.add_container_link("eth0", m1);
    lab.add_container_link("eth1", m2);

    let (l1, l2) = lab.in_host(|| {
        Box::pin(async {
            let (a, b) = tokio::join!(
                hns_dhcp::acquire(UPLINK, m1, None, TIMEOUT),
                hns_dhcp::acquire(UPLINK, m2, None, TIMEOUT)
            );
            (a.unwrap().1, b.unwrap().1)
        })
    });

    assert_ne!(l1.address, l2.address);
    assert!(in_range(&l1) && in_range(&l2));
    assert_eq!(lab.lease_of(m1).unwrap().ip, l1.address);
    assert_eq!(lab.lease_of(m2).unwrap().ip, l2.address);
}

#[test]
fn resume_after_a_restart_keeps_the_address() {
    let lab = DhcpLab::new("resume", true);
    let mac = test_mac(6);
    lab.add_container_link("eth0", mac);

    lab.in_host(|| {
        Box::pin(async {
            let (keeper, first) = hns_dhcp::acquire(UPLINK, mac, None, TIMEOUT).await.unwrap();
            // hnsd stores the lease, then "restarts": dropping the keeper sends nothing.
            let stored = serde_json::to_string(&first).unwrap();
            drop(keeper);
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                lab.lease_of(mac).map(|l| l.ip),
                Some(first.address),
                "drop must not release"
            );

            let previous: Lease = serde_json::from_str(&stored).unwrap();
            let (keeper, resumed) = hns_dhcp::resume(UPLINK, mac, None, previous, TIMEOUT)
                .await
                .unwrap();
            assert_eq!(resumed.address, first.address);
            assert!(resumed.same_config(&first));
            assert!(resumed.obtained_at >= first.obtained_at);
            assert_eq!(keeper.state(), LeaseState::Bound { lease: resumed });

            // INIT-REBOOT, not a new DISCOVER.
            assert_eq!(lab.log_count(mac, "DHCPDISCOVER"), 1, "{}", lab.log());
            assert_eq!(lab.log_count(mac, "DHCPREQUEST"), 2, "{}", lab.log());
            assert_eq!(lab.log_count(mac, "DHCPACK"), 2, "{}", lab.log());

            keeper.release().await.unwrap();
        })
    });
    wait_for(Duration::from_secs(5), "dnsmasq to drop the lease", || {
        lab.lease_of(mac).is_none()
    });
}

#[test]
fn resume_with_no_server_keeps_an_unexpired_lease_only() {
    let lab = DhcpLab::new("resume-down", true);
    let mac = test_mac(7);
    lab.add_container_link("eth0", mac);
    let short = Duration::from_secs(2);

    lab.in_host(|| {
        Box::pin(async {
            let (keeper, first) = hns_dhcp::acquire(UPLINK, mac, None, TIMEOUT).await.unwrap();
            drop(keeper);
            lab.stop_dnsmasq();

            // Still valid: kept provisionally (RFC 2131 3.7), unchanged.
            let t = Instant::now();
            let (keeper, kept) = hns_dhcp::resume(UPLINK, mac, None, first.clone(), short)
                .await
                .unwrap();
            assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
            assert_eq!(kept, first);
            assert_eq!(
                keeper.state(),
                LeaseState::Bound {
                    lease: first.clone()
                }
            );

            // Expired: an error naming the address, the MAC and the uplink.
            let mut expired = first.clone();
            expired.obtained_at -= Duration::from_secs(LEASE_SECS + 10);
            let err = hns_dhcp::resume(UPLINK, mac, None, expired, short)
                .await
                .unwrap_err();
            assert!(matches!(err, DhcpError::ResumeUnanswered { .. }), "{err:?}");
            let text = err.to_string();
            for part in [
                first.address.to_string(),
                "02-00-5E-10-00-07".into(),
                UPLINK.into(),
                "2 s".into(),
            ] {
                assert!(text.contains(&part), "{text:?} lacks {part:?}");
            }

            // The server comes back (it reloads its lease file). Releasing the provisional
            // lease reaches it although its MAC was never learned.
            lab.start_dnsmasq();
            assert!(lab.lease_of(mac).is_some());
            keeper.release().await.unwrap();
        })
    });
    wait_for(Duration::from_secs(5), "dnsmasq to drop the lease", || {
        lab.lease_of(mac).is_none()
    });
}

#[test]
fn no_server_gives_a_clean_timeout_naming_mac_and_uplink() {
    let lab = DhcpLab::new("noserver", false);
    let mac = test_mac(8);
    lab.add_container_link("eth0", mac);

    let (err, took, bad_uplink, bad_mac) = lab.in_host(|| {
        Box::pin(async {
            let t = Instant::now();
            let err = hns_dhcp::acquire(UPLINK, mac, None, Duration::from_secs(2))
                .await
                .unwrap_err();
            let took = t.elapsed();
            let bad_uplink = hns_dhcp::acquire("nosuch0", mac, None, TIMEOUT)
                .await
                .unwrap_err();
            let bad_mac = hns_dhcp::acquire(UPLINK, [0x01, 0, 0x5e, 0, 0, 1], None, TIMEOUT)
                .await
                .unwrap_err();
            (err, took, bad_uplink, bad_mac)
        })
    });

    assert!(matches!(err, DhcpError::NoOffer { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no DHCP offer for MAC 02-00-5E-10-00-08 on uplink uplink0 within 2 s"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        matches!(bad_uplink, DhcpError::UplinkNotFound { .. }),
        "{bad_uplink:?}"
    );
    assert!(
        bad_uplink
            .to_string()
            .contains("uplink nosuch0 does not exist"),
        "{bad_uplink}"
    );
    assert!(
        matches!(bad_mac, DhcpError::InvalidMac { .. }),
        "{bad_mac:?}"
    );
}

#[test]
fn lost_lease_is_reported_and_replaced() {
    let lab = DhcpLab::new("lost", true);
    let mac = test_mac(9);
    lab.add_container_link("eth0", mac);
    let (new_start, new_end) = (
        "198.51.100.200".parse().unwrap(),
        "198.51.100.250".parse().unwrap(),
    );

    let states = lab.in_host(|| {
        Box::pin(async {
            let (keeper, first) = hns_dhcp::acquire(UPLINK, mac, None, TIMEOUT).await.unwrap();
            lab.configure_container("eth0", first.address, first.prefix_len);
            drop(keeper);
            lab.stop_dnsmasq();
            // A stored lease already past T1, resumed while no server answers: the keeper
            // starts renewing at once (retransmitting every few seconds).
            let mut stored = first.clone();
            stored.obtained_at -= Duration::from_secs(61);
            let (keeper, _) = hns_dhcp::resume(UPLINK, mac, None, stored, Duration::from_secs(2))
                .await
                .unwrap();
            // The server returns serving another range: it refuses the renewal (DHCPNAK,
            // "wrong network"); the keeper must report the loss and get a new lease.
            lab.set_range(new_start, new_end);
            lab.start_dnsmasq();
            let mut updates = keeper.subscribe();
            let mut states = Vec::new();
            while !matches!(states.last(), Some(LeaseState::Bound { .. })) {
                tokio::time::timeout(Duration::from_secs(30), updates.changed())
                    .await
                    .expect("no lease change within 30 s")
                    .expect("keeper stopped");
                states.push(updates.borrow_and_update().clone());
            }
            (first, states)
        })
    });

    let (first, states) = states;
    let [
        LeaseState::Lost { previous, reason },
        LeaseState::Bound { lease },
    ] = &states[..]
    else {
        panic!("expected Lost then Bound: {states:?}")
    };
    assert_eq!(previous.address, first.address);
    assert!(reason.contains("DHCPNAK"), "{reason}");
    assert!((new_start..=new_end).contains(&lease.address), "{lease:?}");
    assert_eq!(lab.lease_of(mac).map(|l| l.ip), Some(lease.address));
    assert!(lab.log_count(mac, "DHCPNAK") >= 1, "{}", lab.log());
}
