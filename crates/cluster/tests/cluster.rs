//! The cluster layer against a real etcd (Debian's 3.4) running in a lab namespace.
//! Needs root (namespaces) and /usr/bin/etcd.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hns_cluster::{Cluster, ClusterConfig, ClusterEndpoint, ClusterError, ClusterEvent, NodeInfo, OverlayNetwork, OverlayNetworkSpec, OverlaySubnet};

use common::{EtcdLab, connect, next_event, wait_for};

/// A subnet with its first host address as the gateway.
fn sub(subnet: &str) -> OverlaySubnet {
    let subnet: ipnet::IpNet = subnet.parse().unwrap();
    let gateway = match subnet {
        ipnet::IpNet::V4(n) => IpAddr::V4(n.hosts().next().unwrap()),
        ipnet::IpNet::V6(n) => IpAddr::V6(n.hosts().nth(1).unwrap()),
    };
    OverlaySubnet { subnet, gateway }
}

fn spec(id: &str, name: &str, subnet: &str, vni: Option<u32>) -> OverlayNetworkSpec {
    OverlayNetworkSpec { id: id.into(), name: name.into(), subnets: vec![sub(subnet)], vni, vxlan_port: 4789, outbound_nat: false }
}

/// The one-address form for the single-stack networks most tests use.
trait OneAddress {
    async fn allocate_address(&self, net: &str, ep: &str, node: &str, requested: Option<IpAddr>) -> Result<IpAddr, ClusterError>;
}

impl OneAddress for Cluster {
    async fn allocate_address(&self, net: &str, ep: &str, node: &str, requested: Option<IpAddr>) -> Result<IpAddr, ClusterError> {
        let ips = self.allocate_addresses(net, ep, node, requested.as_slice()).await?;
        assert_eq!(ips.len(), 1, "a single-stack network gives one address: {ips:?}");
        Ok(ips[0])
    }
}

fn node(name: &str, last_octet: u8) -> NodeInfo {
    NodeInfo { name: name.into(), vtep: IpAddr::from([10, 99, 0, last_octet]) }
}

fn endpoint(id: &str, net: &OverlayNetwork, node: &NodeInfo, ip: IpAddr) -> ClusterEndpoint {
    let v4 = match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => unreachable!(),
    };
    ClusterEndpoint {
        id: id.into(),
        network_id: net.id.clone(),
        node: node.name.clone(),
        name: format!("ctr-{id}"),
        ip,
        more_ips: Vec::new(),
        mac: [0x02, 0x42, v4[0], v4[1], v4[2], v4[3]],
        vtep: node.vtep,
    }
}

#[test]
fn connect_fails_fast_and_names_the_endpoints() {
    let holder = hns_lab::Holder::new_net().unwrap();
    holder.ip(&["link", "set", "lo", "up"]).unwrap();
    let ns = hns_kernel::netns::open(&holder.netns_path()).unwrap();
    common::in_netns(&ns, async || {
        // Nothing listens: the connection is refused at once.
        let started = Instant::now();
        let e = Cluster::connect(ClusterConfig::new(["127.0.0.1:2379"])).await.unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("etcd is unreachable at http://127.0.0.1:2379"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

        // Something accepts TCP but never speaks etcd: the dial timeout (2 s) bounds the wait.
        let silent = std::net::TcpListener::bind("127.0.0.1:2381").unwrap();
        let started = Instant::now();
        let e = Cluster::connect(ClusterConfig::new(["127.0.0.1:2381"])).await.unwrap_err();
        let waited = started.elapsed();
        assert!(e.is_unreachable(), "{e:?}");
        assert!(e.to_string().contains("http://127.0.0.1:2381"), "{e}");
        assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(3), "waited {waited:?}: {e}");

        // Several endpoints: all are named, and the attempt lasts at most the dial timeout.
        let started = Instant::now();
        let e = Cluster::connect(ClusterConfig::new(["127.0.0.1:2383", "http://127.0.0.1:2382"])).await.unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
        assert!(e.to_string().contains("etcd is unreachable at http://127.0.0.1:2383,http://127.0.0.1:2382"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        drop(silent);
    });
}

#[test]
fn three_hosts_allocating_300_addresses_at_once_get_300_distinct_addresses() {
    let lab = EtcdLab::start();
    let cfg = lab.config();
    lab.run(async || {
        let first = connect(&cfg).await;
        let net = first.create_network(spec("n-ipam", "ipam", "10.60.0.0/23", None)).await.unwrap();
        let hosts: Vec<Cluster> = vec![first, connect(&cfg).await, connect(&cfg).await];
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (h, cluster) in hosts.iter().enumerate() {
            let cluster = cluster.clone();
            let net_id = net.id.clone();
            tasks.push(tokio::spawn(async move {
                futures::stream::iter(0..100)
                    .map(|i| {
                        let (cluster, net_id) = (cluster.clone(), net_id.clone());
                        async move { cluster.allocate_address(&net_id, &format!("h{h}-ep{i}"), &format!("host-{h}"), None).await }
                    })
                    .buffer_unordered(10)
                    .collect::<Vec<_>>()
                    .await
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            for r in t.await.unwrap() {
                all.push(r.expect("allocation"));
            }
        }
        eprintln!("300 concurrent allocations from 3 clients took {:?}", started.elapsed());
        let distinct: BTreeSet<IpAddr> = all.iter().copied().collect();
        assert_eq!(distinct.len(), 300, "an address was handed out twice");
        for ip in &distinct {
            assert!(net.subnet.contains(ip));
            assert_ne!(*ip, net.gateway);
            assert_ne!(*ip, IpAddr::from([10, 60, 0, 0]));
            assert_ne!(*ip, IpAddr::from([10, 60, 1, 255]));
        }
        let stored = hosts[0].list_addresses(&net.id).await.unwrap();
        assert_eq!(stored.len(), 300);

        // Asking again for the same endpoint returns its address; asking for a taken one names
        // the holder; releasing frees it for the next asker.
        let again = hosts[1].allocate_address(&net.id, "h0-ep7", "host-0", None).await.unwrap();
        assert_eq!(Some(&again), stored.iter().find(|(_, o)| o.endpoint_id == "h0-ep7").map(|(ip, _)| ip));
        let e = hosts[1].allocate_address(&net.id, "late", "host-1", Some(again)).await.unwrap_err();
        assert!(e.to_string().contains(&format!("address {again} in overlay network ipam is in use by endpoint h0-ep7 on node host-0")), "{e}");
        assert_eq!(hosts[0].release_address(&net.id, "h0-ep7").await.unwrap(), vec![again]);
        assert_eq!(hosts[0].release_address(&net.id, "h0-ep7").await.unwrap(), Vec::<IpAddr>::new());
        assert_eq!(hosts[1].allocate_address(&net.id, "late", "host-1", Some(again)).await.unwrap(), again);
        let e = hosts[1].allocate_address(&net.id, "bad", "host-1", Some(net.gateway)).await.unwrap_err();
        assert!(matches!(e, ClusterError::Invalid { .. }), "{e}");

        // IPv6 overlays take the same path (fixed-width hextets in the keys).
        let v6 = hosts[0].create_network(spec("n-v6", "v6", "fd00:60::/120", None)).await.unwrap();
        let picks = futures::future::join_all((0..40).map(|i| {
            let (host, net) = (&hosts[i % 3], &v6.id);
            async move { host.allocate_address(net, &format!("v6-{i}"), "host-0", None).await }
        }))
        .await;
        let picks: BTreeSet<IpAddr> = picks.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(picks.len(), 40);
        assert!(picks.iter().all(|ip| v6.subnet.contains(ip) && *ip != v6.gateway && *ip != v6.subnet.network()));

        // A small subnet runs out with a clear error.
        let tiny = hosts[0].create_network(spec("n-tiny", "tiny", "10.61.0.0/29", None)).await.unwrap();
        let mut got = BTreeSet::new();
        for i in 0..5 {
            got.insert(hosts[i % 3].allocate_address(&tiny.id, &format!("t{i}"), "host-0", None).await.unwrap());
        }
        assert_eq!(got.len(), 5);
        let e = hosts[0].allocate_address(&tiny.id, "t5", "host-0", None).await.unwrap_err();
        assert!(matches!(e, ClusterError::Exhausted { .. }) && e.to_string().contains("10.61.0.0/29"), "{e}");
    });
}

#[test]
fn a_dual_stack_network_gives_every_endpoint_one_address_of_each_family() {
    let lab = EtcdLab::start();
    let cfg = lab.config();
    lab.run(async || {
        let hosts = [connect(&cfg).await, connect(&cfg).await, connect(&cfg).await];
        let nb = node("node-b", 2);
        let _rb = hosts[1].register_node(nb.clone(), None, 10).await.unwrap();
        let dual = OverlayNetworkSpec { subnets: vec![sub("10.62.0.0/24"), sub("fd00:62::/120")], ..spec("n-dual", "dual", "10.62.0.0/24", None) };
        let net = hosts[0].create_network(dual).await.unwrap();
        assert_eq!(net.subnets().len(), 2);
        // Subnets are cluster-wide in both families; two of one family are refused.
        let e = hosts[1].create_network(spec("n-6b", "six-b", "fd00:62::80/121", None)).await.unwrap_err();
        assert!(e.to_string().contains("subnet fd00:62::80/121 overlaps subnet fd00:62::/120 of overlay network dual"), "{e}");
        let two4 = OverlayNetworkSpec { subnets: vec![sub("10.63.0.0/24"), sub("10.64.0.0/24")], ..spec("n-44", "four-four", "10.63.0.0/24", None) };
        assert!(matches!(hosts[1].create_network(two4).await.unwrap_err(), ClusterError::Invalid { .. }));

        // Three hosts at once: every endpoint gets an IPv4 and an IPv6 address, none twice.
        let picks = futures::future::join_all((0..60).map(|i| {
            let (host, net) = (&hosts[i % 3], &net.id);
            async move { host.allocate_addresses(net, &format!("d-{i}"), "host-0", &[]).await }
        }))
        .await;
        let picks: Vec<Vec<IpAddr>> = picks.into_iter().map(|r| r.unwrap()).collect();
        assert!(picks.iter().all(|p| p.len() == 2 && p[0].is_ipv4() && p[1].is_ipv6()), "{picks:?}");
        let v4: BTreeSet<IpAddr> = picks.iter().map(|p| p[0]).collect();
        let v6: BTreeSet<IpAddr> = picks.iter().map(|p| p[1]).collect();
        assert_eq!((v4.len(), v6.len()), (60, 60), "an address was handed out twice");
        let gw6: IpAddr = "fd00:62::1".parse().unwrap();
        assert!(v6.iter().all(|ip| net.more_subnets[0].subnet.contains(ip) && *ip != gw6 && ip.to_string() != "fd00:62::"));
        assert_eq!(hosts[0].list_addresses(&net.id).await.unwrap().len(), 120);
        // Asking again returns what the endpoint holds, in either family order.
        assert_eq!(hosts[1].allocate_addresses(&net.id, "d-7", "host-0", &[]).await.unwrap(), picks[7]);
        assert_eq!(hosts[1].allocate_addresses(&net.id, "d-7", "host-0", &[picks[7][1], picks[7][0]]).await.unwrap(), picks[7]);

        // A requested IPv6 address: given if free; with no IPv4 asked for, that one is picked.
        let want6: IpAddr = "fd00:62::fe".parse().unwrap();
        let got = hosts[1].allocate_addresses(&net.id, "ep-b", "node-b", &[want6]).await.unwrap();
        assert!(got[0].is_ipv4() && got[1] == want6, "{got:?}");
        let e = hosts[2].allocate_addresses(&net.id, "other", "host-2", &[want6]).await.unwrap_err();
        assert!(e.to_string().contains("address fd00:62::fe in overlay network dual is in use by endpoint ep-b on node node-b"), "{e}");
        // That failure kept nothing: the IPv4 address it took first was given back.
        assert!(hosts[2].release_address(&net.id, "other").await.unwrap().is_empty());
        let e = hosts[2].allocate_addresses(&net.id, "other", "host-2", &[gw6]).await.unwrap_err();
        assert!(e.to_string().contains("gateway fd00:62::1"), "{e}");

        // Publishing checks every address against the reservations.
        let mut ep = endpoint("ep-b", &net, &nb, got[0]);
        ep.more_ips = vec!["fd00:62::fd".parse().unwrap()];
        let e = hosts[1].put_endpoint(ep.clone()).await.unwrap_err();
        assert!(e.to_string().contains("endpoint ep-b holds address fd00:62::fe, not fd00:62::fd"), "{e}");
        ep.more_ips = vec![want6];
        hosts[1].put_endpoint(ep.clone()).await.unwrap();
        assert_eq!(hosts[0].list_endpoints(&net.id).await.unwrap(), vec![ep]);

        // Releasing gives back both families, and only the endpoint's own.
        assert_eq!(hosts[0].release_address(&net.id, "d-7").await.unwrap(), picks[7]);
        let rest = hosts[0].list_addresses(&net.id).await.unwrap();
        assert_eq!(rest.len(), 120 - 2 + 2, "{rest:?}");
        assert!(!rest.iter().any(|(ip, _)| picks[7].contains(ip)));
    });
}

#[test]
fn concurrent_network_creation_never_shares_a_vni() {
    let lab = EtcdLab::start();
    let cfg = lab.config();
    lab.run(async || {
        let hosts = [connect(&cfg).await, connect(&cfg).await, connect(&cfg).await];
        let mut tasks = Vec::new();
        for (h, cluster) in hosts.iter().enumerate() {
            for i in 0..5 {
                let cluster = cluster.clone();
                let n = h * 5 + i;
                tasks.push(tokio::spawn(async move {
                    cluster.create_network(spec(&format!("n{n}"), &format!("net{n}"), &format!("10.{}.0.0/24", 100 + n), None)).await
                }));
            }
        }
        let mut vnis = BTreeSet::new();
        for t in tasks {
            let net = t.await.unwrap().expect("create network");
            assert!(net.vni >= 4096);
            assert!(vnis.insert(net.vni), "VNI {} handed out twice", net.vni);
        }
        assert_eq!(vnis.len(), 15);
        // Lowest-free: the 15 networks took 4096..=4110.
        assert_eq!(vnis.iter().copied().collect::<Vec<_>>(), (4096..4111).collect::<Vec<_>>());
        let listed = hosts[0].list_networks().await.unwrap();
        assert_eq!(listed.len(), 15);

        // A requested VNI that is taken is refused naming its network; a free one is honoured.
        let holder = listed.iter().find(|n| n.vni == 4100).unwrap();
        let e = hosts[1].create_network(spec("x", "x", "10.200.0.0/24", Some(4100))).await.unwrap_err();
        assert!(e.to_string().contains(&format!("VNI 4100 is already used by overlay network {}", holder.name)), "{e}");
        let net = hosts[1].create_network(spec("x", "x", "10.200.0.0/24", Some(70000))).await.unwrap();
        assert_eq!(net.vni, 70000);
        let e = hosts[1].create_network(spec("y", "y", "10.201.0.0/24", Some(100))).await.unwrap_err();
        assert!(matches!(e, ClusterError::Invalid { .. }), "{e}");
    });
}

#[test]
fn duplicate_names_and_overlapping_subnets_are_refused_naming_the_other_network() {
    let lab = EtcdLab::start();
    let cfg = lab.config();
    lab.run(async || {
        let c = connect(&cfg).await;
        let red = c.create_network(spec("n-red", "red", "10.70.0.0/16", None)).await.unwrap();
        // Creating the same network again is harmless.
        assert_eq!(c.create_network(spec("n-red", "red", "10.70.0.0/16", None)).await.unwrap(), red);

        let e = c.create_network(spec("n-red2", "red", "10.71.0.0/16", None)).await.unwrap_err();
        assert!(e.is_conflict(), "{e:?}");
        assert!(e.to_string().contains("the name red is already used by overlay network red (id n-red, subnet 10.70.0.0/16"), "{e}");

        let e = c.create_network(spec("n-blue", "blue", "10.70.128.0/24", None)).await.unwrap_err();
        assert!(e.to_string().contains("subnet 10.70.128.0/24 overlaps subnet 10.70.0.0/16 of overlay network red (id n-red"), "{e}");
        let e = c.create_network(spec("n-blue", "blue", "10.0.0.0/8", None)).await.unwrap_err();
        assert!(e.to_string().contains("overlaps subnet 10.70.0.0/16 of overlay network red"), "{e}");

        let blue = c.create_network(spec("n-blue", "blue", "10.71.0.0/16", None)).await.unwrap();
        assert_ne!(blue.vni, red.vni);
        assert_eq!(c.get_network("n-blue").await.unwrap(), blue);
        assert!(c.get_network("nope").await.unwrap_err().is_not_found());
    });
}

#[test]
fn network_delete_is_refused_while_other_hosts_have_endpoints_on_it() {
    let lab = EtcdLab::start();
    let cfg = lab.config();
    lab.run(async || {
        let (a, b) = (connect(&cfg).await, connect(&cfg).await);
        let (na, nb) = (node("node-a", 1), node("node-b", 2));
        let _ra = a.register_node(na.clone(), None, 10).await.unwrap();
        let _rb = b.register_node(nb.clone(), None, 10).await.unwrap();
        let net = a.create_network(spec("n-del", "del", "10.80.0.0/24", Some(5000))).await.unwrap();
        let ip_a = a.allocate_address(&net.id, "ep-a", "node-a", None).await.unwrap();
        a.put_endpoint(endpoint("ep-a", &net, &na, ip_a)).await.unwrap();
        let ip_b = b.allocate_address(&net.id, "ep-b", "node-b", None).await.unwrap();
        b.put_endpoint(endpoint("ep-b", &net, &nb, ip_b)).await.unwrap();

        let e = a.delete_network(&net.id, "node-a").await.unwrap_err();
        assert!(matches!(&e, ClusterError::InUse { holders, .. } if holders.len() == 1), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("overlay network del (id n-del"), "{text}");
        assert!(text.contains(&format!("endpoint ctr-ep-b (id ep-b, {ip_b}) on node node-b")), "{text}");
        assert_eq!(a.list_endpoints(&net.id).await.unwrap().len(), 2, "a refused delete changed something");

        // Publishing needs the address the endpoint holds.
        let e = b.put_endpoint(endpoint("ep-x", &net, &nb, "10.80.0.77".parse().unwrap())).await.unwrap_err();
        assert!(e.to_string().contains("endpoint ep-x holds no address for 10.80.0.77 in network n-del"), "{e}");

        b.delete_endpoint(&net.id, "ep-b").await.unwrap();
        b.release_address(&net.id, "ep-b").await.unwrap();
        // Node a's own endpoint does not block; it goes with the network, as do its address
        // and the VNI.
        a.delete_network(&net.id, "node-a").await.unwrap();
        assert!(a.get_network(&net.id).await.unwrap_err().is_not_found());
        assert!(a.list_endpoints(&net.id).await.unwrap().is_empty());
        assert!(a.list_addresses(&net.id).await.unwrap().is_empty());
        let again = a.create_network(spec("n-del2", "del2", "10.80.0.0/24", Some(5000))).await.unwrap();
        assert_eq!(again.vni, 5000);
        // An endpoint of a deleted network cannot come back.
        let e = a.put_endpoint(endpoint("ep-a", &net, &na, ip_a)).await.unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
    });
}

#[test]
fn a_dead_node_disappears_from_the_view_but_keeps_its_addresses_until_removed() {
    let lab = EtcdLab::start();
    let cfg = lab.config();
    lab.run(async || {
        let a = connect(&cfg).await;
        let na = node("node-a", 1);
        let _ra = a.register_node(na.clone(), None, 10).await.unwrap();
        let net = a.create_network(spec("n-exp", "exp", "10.81.0.0/24", None)).await.unwrap();

        // Node b lives in its own client, as on another host.
        let b = connect(&cfg).await;
        let nb = node("node-b", 2);
        let rb = b.register_node(nb.clone(), None, 2).await.unwrap();
        let ip_b = b.allocate_address(&net.id, "ep-b", "node-b", None).await.unwrap();
        b.put_endpoint(endpoint("ep-b", &net, &nb, ip_b)).await.unwrap();

        let mut view = a.watch();
        let ClusterEvent::Snapshot(s) = next_event(&mut view, Duration::from_secs(5), "snapshot").await else { panic!("first event must be a snapshot") };
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!(s.nodes.len(), 2);

        // While its lease lives the node cannot be removed.
        let e = a.remove_node("node-b").await.unwrap_err();
        assert!(matches!(e, ClusterError::NodeAlive { .. }) && e.to_string().contains("node node-b is still alive"), "{e}");

        // Host b dies: no more keepalives. Within the 2 s TTL (plus etcd's expiry check) its
        // endpoint and node leave everyone's view.
        let died = Instant::now();
        drop(rb);
        drop(b);
        let e = wait_for(&mut view, Duration::from_secs(6), "endpoint of the dead node to go", |e| matches!(e, ClusterEvent::EndpointDeleted { .. })).await;
        let ClusterEvent::EndpointDeleted { endpoint_id, previous, .. } = e else { unreachable!() };
        assert_eq!(endpoint_id, "ep-b");
        assert_eq!(previous.map(|p| p.ip), Some(ip_b), "delete events carry the previous value");
        wait_for(&mut view, Duration::from_secs(2), "node-b down", |e| matches!(e, ClusterEvent::NodeDown { name, .. } if name == "node-b")).await;
        eprintln!("dead node left the view {:?} after its last keepalive stopped", died.elapsed());
        assert!(a.list_endpoints(&net.id).await.unwrap().is_empty());
        assert_eq!(a.list_nodes().await.unwrap(), vec![na.clone()]);

        // Its address stays reserved: nobody else gets it.
        let owners = a.list_addresses(&net.id).await.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!((owners[0].0, owners[0].1.node.as_str()), (ip_b, "node-b"));
        let e = a.allocate_address(&net.id, "ep-a", "node-a", Some(ip_b)).await.unwrap_err();
        assert!(e.to_string().contains("in use by endpoint ep-b on node node-b"), "{e}");

        // The operator removes the dead node: its reservations go.
        let removed = a.remove_node("node-b").await.unwrap();
        assert_eq!((removed.endpoints, removed.addresses), (0, 1));
        assert!(a.list_addresses(&net.id).await.unwrap().is_empty());
        assert_eq!(a.allocate_address(&net.id, "ep-a", "node-a", Some(ip_b)).await.unwrap(), ip_b);
    });
}

#[test]
fn a_restart_with_the_previous_lease_changes_nothing_for_peers() {
    let lab = EtcdLab::start();
    let cfg = lab.config();
    lab.run(async || {
        let peer = connect(&cfg).await;
        let me = node("node-r", 5);
        let (lease, ip, net) = {
            let first_run = connect(&cfg).await;
            let reg = first_run.register_node(me.clone(), None, 10).await.unwrap();
            let net = first_run.create_network(spec("n-rs", "rs", "10.82.0.0/24", None)).await.unwrap();
            let ip = first_run.allocate_address(&net.id, "ep-r", &me.name, None).await.unwrap();
            first_run.put_endpoint(endpoint("ep-r", &net, &me, ip)).await.unwrap();
            (reg.lease_id(), ip, net)
            // hnsd "exits": registration and client dropped, no revoke.
        };
        let mut view = peer.watch();
        assert!(matches!(next_event(&mut view, Duration::from_secs(5), "snapshot").await, ClusterEvent::Snapshot(_)));

        let second_run = connect(&cfg).await;
        let reg = second_run.register_node(me.clone(), Some(lease), 10).await.unwrap();
        assert_eq!(reg.lease_id(), lease, "a live previous lease is reused");
        // The endpoint is still there, under the same lease: re-publishing it is idempotent.
        second_run.put_endpoint(endpoint("ep-r", &net, &me, ip)).await.unwrap();
        assert_eq!(peer.list_endpoints(&net.id).await.unwrap().len(), 1);
        // Peers saw no node or endpoint going away.
        let quiet = tokio::time::timeout(Duration::from_millis(1500), async {
            loop {
                match view.next().await {
                    Some(ClusterEvent::NodeDown { .. } | ClusterEvent::EndpointDeleted { .. }) => return true,
                    Some(_) => continue,
                    None => return false,
                }
            }
        })
        .await;
        assert!(quiet.is_err(), "the restart was visible to peers as a delete");

        // The same name from another VTEP is refused while this one lives.
        let intruder = connect(&cfg).await;
        let e = intruder.register_node(node("node-r", 6), None, 10).await.unwrap_err();
        assert!(e.to_string().contains("node name node-r is already registered by a live host with VTEP 10.99.0.5"), "{e}");

        // A previous lease that no longer exists gives a new one.
        let other = connect(&cfg).await;
        let reg2 = other.register_node(node("node-s", 7), Some(0x7777), 10).await.unwrap();
        assert_ne!(reg2.lease_id(), 0x7777);
        drop(reg);
    });
}

#[test]
fn a_lost_lease_is_replaced_and_the_node_and_its_endpoints_published_again() {
    let lab = EtcdLab::start();
    let cfg = lab.config();
    lab.run(async || {
        let c = connect(&cfg).await;
        let me = node("node-l", 8);
        let reg = c.register_node(me.clone(), None, 3).await.unwrap();
        let net = c.create_network(spec("n-ll", "ll", "10.83.0.0/24", None)).await.unwrap();
        let ip = c.allocate_address(&net.id, "ep-l", &me.name, None).await.unwrap();
        c.put_endpoint(endpoint("ep-l", &net, &me, ip)).await.unwrap();
        let old = reg.lease_id();
        let mut changes = reg.lease_changes();

        // Something (an operator, or etcd losing it) revokes the lease: node and endpoint go.
        let admin = connect(&cfg).await;
        let mut view = admin.watch();
        assert!(matches!(next_event(&mut view, Duration::from_secs(5), "snapshot").await, ClusterEvent::Snapshot(_)));
        let mut etcd = etcd_client::Client::connect([lab_url(&cfg)], None).await.unwrap();
        etcd.lease_revoke(old).await.unwrap();
        wait_for(&mut view, Duration::from_secs(3), "endpoint deleted", |e| matches!(e, ClusterEvent::EndpointDeleted { .. })).await;

        // The keepalive notices within a third of the TTL and registers again.
        tokio::time::timeout(Duration::from_secs(5), changes.changed()).await.expect("lease change announced").unwrap();
        let new = reg.lease_id();
        assert_ne!(new, old);
        wait_for(&mut view, Duration::from_secs(3), "node up again", |e| matches!(e, ClusterEvent::NodeUp(n) if n.name == "node-l")).await;
        wait_for(&mut view, Duration::from_secs(3), "endpoint published again", |e| matches!(e, ClusterEvent::EndpointPut(ep) if ep.id == "ep-l")).await;
        assert_eq!(admin.list_endpoints(&net.id).await.unwrap().len(), 1);
    });
}

fn lab_url(cfg: &ClusterConfig) -> String {
    cfg.endpoints[0].clone()
}

#[test]
fn watch_gives_a_snapshot_then_every_change() {
    let lab = EtcdLab::start();
    let cfg = lab.config();
    lab.run(async || {
        let c = connect(&cfg).await;
        let me = node("node-w", 9);
        let _reg = c.register_node(me.clone(), None, 10).await.unwrap();
        let net = c.create_network(spec("n-w", "w", "10.84.0.0/24", None)).await.unwrap();
        let ip1 = c.allocate_address(&net.id, "ep-1", &me.name, None).await.unwrap();
        c.put_endpoint(endpoint("ep-1", &net, &me, ip1)).await.unwrap();

        let mut view = c.watch();
        let ClusterEvent::Snapshot(s) = next_event(&mut view, Duration::from_secs(5), "snapshot").await else { panic!("expected a snapshot first") };
        assert!(s.revision > 0);
        assert_eq!(s.nodes, vec![me.clone()]);
        assert_eq!(s.networks, vec![net.clone()]);
        assert_eq!(s.endpoints, vec![endpoint("ep-1", &net, &me, ip1)]);

        // Address allocation alone does not wake watchers (it lives outside objects/).
        let ip2 = c.allocate_address(&net.id, "ep-2", &me.name, None).await.unwrap();
        c.put_endpoint(endpoint("ep-2", &net, &me, ip2)).await.unwrap();
        let e = next_event(&mut view, Duration::from_secs(3), "endpoint put").await;
        assert_eq!(e, ClusterEvent::EndpointPut(endpoint("ep-2", &net, &me, ip2)));

        let net2 = c.create_network(spec("n-w2", "w2", "10.85.0.0/24", None)).await.unwrap();
        assert_eq!(next_event(&mut view, Duration::from_secs(3), "network put").await, ClusterEvent::NetworkPut(net2.clone()));

        c.delete_endpoint(&net.id, "ep-1").await.unwrap();
        assert_eq!(
            next_event(&mut view, Duration::from_secs(3), "endpoint deleted").await,
            ClusterEvent::EndpointDeleted { network_id: net.id.clone(), endpoint_id: "ep-1".into(), previous: Some(endpoint("ep-1", &net, &me, ip1)) }
        );

        // Deleting a network with this node's endpoint: the endpoint and the network go in one
        // revision.
        c.delete_network(&net.id, &me.name).await.unwrap();
        let mut seen = vec![
            next_event(&mut view, Duration::from_secs(3), "network delete").await,
            next_event(&mut view, Duration::from_secs(3), "endpoint delete").await,
        ];
        seen.sort_by_key(|e| format!("{e:?}"));
        assert!(matches!(&seen[0], ClusterEvent::EndpointDeleted { endpoint_id, .. } if endpoint_id == "ep-2"), "{seen:?}");
        assert!(matches!(&seen[1], ClusterEvent::NetworkDeleted { id, previous: Some(_) } if id == &net.id), "{seen:?}");
    });
}

#[test]
fn an_etcd_outage_fails_operations_fast_and_the_watch_resnapshots_when_etcd_returns() {
    let lab = EtcdLab::start();
    let cfg = lab.config();
    lab.run(async || {
        let c = connect(&cfg).await;
        let me = node("node-o", 10);
        let reg = c.register_node(me.clone(), None, 15).await.unwrap();
        let lease = reg.lease_id();
        let net = c.create_network(spec("n-o", "o", "10.86.0.0/24", None)).await.unwrap();
        let mut view = c.watch();
        let ClusterEvent::Snapshot(before) = next_event(&mut view, Duration::from_secs(5), "snapshot").await else { panic!() };

        tokio::task::block_in_place(|| lab.stop_etcd());
        let e = next_event(&mut view, Duration::from_secs(5), "disconnect").await;
        assert!(matches!(e, ClusterEvent::Disconnected { .. }), "{e:?}");

        for _ in 0..3 {
            let started = Instant::now();
            let e = c.list_networks().await.unwrap_err();
            assert!(e.is_unreachable(), "{e:?}");
            assert!(e.to_string().contains("etcd is unreachable at http://127.0.0.1:2379"), "{e}");
            assert!(started.elapsed() < Duration::from_secs(1), "failing took {:?}", started.elapsed());
        }
        let e = c.allocate_address(&net.id, "ep-o", &me.name, None).await.unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
        let e = c.create_network(spec("n-o2", "o2", "10.87.0.0/24", None)).await.unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");

        // Changes made elsewhere while this host was cut off arrive in the new snapshot.
        tokio::task::block_in_place(|| lab.restart_etcd());
        let back = Instant::now();
        let other = connect(&cfg).await;
        let made_while_away = other.create_network(spec("n-o3", "o3", "10.88.0.0/24", None)).await.unwrap();
        let e = wait_for(&mut view, Duration::from_secs(5), "snapshot after the outage", |e| matches!(e, ClusterEvent::Snapshot(_))).await;
        eprintln!("watch resnapshotted {:?} after etcd came back", back.elapsed());
        let ClusterEvent::Snapshot(after) = e else { unreachable!() };
        assert!(after.revision >= before.revision);
        assert!(after.networks.contains(&net));
        assert_eq!(after.nodes, vec![me.clone()], "the node survived the outage");

        // Events flow again, and operations work.
        let ip = c.allocate_address(&net.id, "ep-o", &me.name, None).await.unwrap();
        c.put_endpoint(endpoint("ep-o", &net, &me, ip)).await.unwrap();
        let seen = wait_for(&mut view, Duration::from_secs(3), "endpoint after the outage", |e| {
            matches!(e, ClusterEvent::EndpointPut(_)) || matches!(e, ClusterEvent::NetworkPut(n) if n == &made_while_away)
        })
        .await;
        if let ClusterEvent::NetworkPut(_) = seen {
            // Created before the snapshot was read but delivered as an event: also fine.
            wait_for(&mut view, Duration::from_secs(3), "endpoint after the outage", |e| matches!(e, ClusterEvent::EndpointPut(_))).await;
        } else {
            assert!(after.networks.contains(&made_while_away));
        }
        // etcd restores leases on restart, so the keepalive carried on with the same lease.
        assert_eq!(reg.lease_id(), lease);
    });
}

/// Removes a directory on drop (also when the test fails).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(feature = "tls")]
#[test]
fn mutual_tls_with_client_certificates() {
    use hns_cluster::TlsFiles;
    use hns_lab::etcd::{EtcdServer, EtcdTls};

    let holder = hns_lab::Holder::new_net().unwrap();
    holder.ip(&["link", "set", "lo", "up"]).unwrap();
    let dir = TempDir(std::env::temp_dir().join(format!("hns-cluster-tls-{}", std::process::id())));
    let pki = EtcdTls::generate(&dir.0, "127.0.0.1".parse().unwrap()).unwrap();
    let etcd = EtcdServer::start_tls(&holder, "127.0.0.1".parse().unwrap(), common::ETCD_PORT, pki.clone()).unwrap();
    assert_eq!(etcd.client_url(), "https://127.0.0.1:2379");
    let ns = hns_kernel::netns::open(&holder.netns_path()).unwrap();
    common::in_netns(&ns, async || {
        let files = TlsFiles { ca: pki.ca.clone(), cert: pki.client_cert.clone(), key: pki.client_key.clone() };
        let mut cfg = ClusterConfig::new(["127.0.0.1:2379"]);
        cfg.tls = Some(files.clone());
        let c = Cluster::connect(cfg.clone()).await.expect("TLS connect with a client certificate");
        assert_eq!(c.endpoints(), "https://127.0.0.1:2379");
        let net = c.create_network(spec("n-tls", "tls", "10.90.0.0/24", None)).await.unwrap();
        assert_eq!(c.list_networks().await.unwrap(), vec![net]);

        // Without TLS the server does not talk to us.
        let e = Cluster::connect(ClusterConfig::new(["127.0.0.1:2379"])).await.unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");

        // A missing file is named.
        let mut bad = cfg.clone();
        bad.tls = Some(TlsFiles { key: dir.0.join("nope.key"), ..files });
        let e = Cluster::connect(bad).await.unwrap_err();
        assert!(e.to_string().contains("nope.key"), "{e}");
    });
}
