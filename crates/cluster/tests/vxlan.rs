//! The VXLAN kernel operations of hns-kernel, as the overlay driver will use them: two lab
//! "hosts" joined by an underlay veth, each with a bridge, a VXLAN device and a "container"
//! namespace; FDB and neighbour entries programmed by hand as the cluster watch would. Packets
//! cross; removing the FDB entry stops them. Needs root.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::Duration;

use hns_kernel::netlink::Netlink;
use hns_kernel::netns;
use hns_kernel::vxlan::{FdbEntry, VXLAN_PORT, VxlanSpec, overlay_mtu};
use hns_lab::Holder;

const VNI: u32 = 4242;
const VX: &str = "vx-4242";
const BR: &str = "br-ov";

struct Host {
    holder: Holder,
    ns: OwnedFd,
    vtep: IpAddr,
    ctr: Holder,
    ctr_ns: OwnedFd,
    ctr_ip: IpAddr,
    ctr_mac: [u8; 6],
}

fn host(n: u8) -> Host {
    let holder = Holder::new_net().unwrap();
    holder.ip(&["link", "set", "lo", "up"]).unwrap();
    let ctr = Holder::new_net().unwrap();
    ctr.ip(&["link", "set", "lo", "up"]).unwrap();
    Host {
        ns: netns::open(&holder.netns_path()).unwrap(),
        ctr_ns: netns::open(&ctr.netns_path()).unwrap(),
        holder,
        ctr,
        vtep: IpAddr::from([10, 99, 0, n]),
        ctr_ip: IpAddr::from([10, 200, 0, 10 + n]),
        ctr_mac: [0x02, 0x42, 10, 200, 0, 10 + n],
    }
}

/// Bridge, VXLAN device and container veth on `h`, built with the kernel crate.
async fn build(h: &Host) -> Netlink {
    let nl = Netlink::in_netns(&h.ns).unwrap();
    let mtu = overlay_mtu(1500, h.vtep);
    let br = nl.ensure_bridge(BR, [0x02, 0, 0, 0, 0xbb, h.ctr_mac[5]], false).await.unwrap();
    let spec = VxlanSpec { name: VX.into(), vni: VNI, local: h.vtep, port: VXLAN_PORT, mtu, master: br };
    let vx = nl.ensure_vxlan(&spec).await.unwrap();
    // Idempotent: a second call finds the device as specified and keeps it.
    assert_eq!(nl.ensure_vxlan(&spec).await.unwrap(), vx);
    nl.create_veth_into("veth-c", Some(br), "eth0", &h.ctr_ns, h.ctr_mac, Some(mtu)).await.unwrap();
    nl.set_up("veth-c").await.unwrap();
    let addr = format!("{}/24", h.ctr_ip);
    h.ctr.ip(&["addr", "add", &addr, "dev", "eth0"]).unwrap();
    h.ctr.ip(&["link", "set", "eth0", "up"]).unwrap();
    let details = h.holder.ip(&["-d", "link", "show", VX]).unwrap().stdout;
    assert!(details.contains(&format!("vxlan id {VNI}")) && details.contains("nolearning") && details.contains("proxy"), "{details}");
    assert!(details.contains(&format!("mtu {mtu}")) && details.contains(&format!("master {BR}")), "{details}");
    nl
}

fn ping(from: &Host, to: IpAddr) -> bool {
    from.ctr.run("ping", ["-c", "2", "-i", "0.2", "-W", "1", &to.to_string()]).is_ok()
}

/// Sends 256 KiB over TCP from `a`'s container to `b`'s and checks the echoed byte count:
/// full-size segments cross the tunnel, so the MTU arithmetic holds.
fn tcp_across(a: &Host, b: &Host) {
    let server_addr = SocketAddr::new(b.ctr_ip, 7000);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let b_ns = b.ctr_ns.try_clone().unwrap();
    let server = std::thread::spawn(move || {
        netns::run_in(&b_ns, || {
            let listener = TcpListener::bind(server_addr).unwrap();
            ready_tx.send(()).unwrap();
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(got.len().to_string().as_bytes()).unwrap();
        })
        .unwrap()
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let echoed = netns::run_in(&a.ctr_ns, || {
        let mut s = TcpStream::connect_timeout(&server_addr, Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&vec![0x5a; 256 * 1024]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    })
    .unwrap();
    server.join().unwrap();
    assert_eq!(echoed, (256 * 1024).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_reach_each_other_through_programmed_vxlan_entries() {
    let (a, b) = (host(1), host(2));
    // Underlay: one veth between the two hosts, 10.99.0.0/24.
    a.holder.ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", &b.holder.pid().to_string()]).unwrap();
    for (h, addr) in [(&a, "10.99.0.1/24"), (&b, "10.99.0.2/24")] {
        h.holder.ip(&["addr", "add", addr, "dev", "ul0"]).unwrap();
        h.holder.ip(&["link", "set", "ul0", "up"]).unwrap();
    }
    let (nla, nlb) = (build(&a).await, build(&b).await);

    // Nothing programmed yet: learning is off and there is no flood entry, so nothing crosses.
    assert!(!ping(&a, b.ctr_ip), "traffic crossed before any FDB entry existed");

    // What the cluster watch will do for each remote endpoint.
    nla.fdb_add(VX, b.ctr_mac, b.vtep).await.unwrap();
    nla.neigh_add(VX, b.ctr_ip, b.ctr_mac).await.unwrap();
    nlb.fdb_add(VX, a.ctr_mac, a.vtep).await.unwrap();
    nlb.neigh_add(VX, a.ctr_ip, a.ctr_mac).await.unwrap();
    // Adding again is harmless (replace).
    nla.fdb_add(VX, b.ctr_mac, b.vtep).await.unwrap();
    nla.neigh_add(VX, b.ctr_ip, b.ctr_mac).await.unwrap();

    let fdb = nla.fdb_entries(VX).await.unwrap();
    assert!(fdb.contains(&FdbEntry { mac: b.ctr_mac, remote: Some(b.vtep), permanent: true }), "{fdb:?}");
    let neigh = nla.neigh_entries(VX).await.unwrap();
    assert!(neigh.iter().any(|n| n.ip == b.ctr_ip && n.mac == Some(b.ctr_mac) && n.permanent), "{neigh:?}");

    assert!(ping(&a, b.ctr_ip), "ping across the overlay failed");
    assert!(ping(&b, a.ctr_ip), "ping back across the overlay failed");
    tcp_across(&a, &b);

    // Withdrawing the endpoint's FDB entry cuts it off, even with the neighbour entry cached.
    nla.fdb_del(VX, b.ctr_mac, b.vtep).await.unwrap();
    assert!(!nla.fdb_entries(VX).await.unwrap().iter().any(|e| e.mac == b.ctr_mac));
    assert!(!ping(&a, b.ctr_ip), "traffic still crossed after fdb_del");
    nla.fdb_del(VX, b.ctr_mac, b.vtep).await.unwrap(); // absent: fine
    nla.neigh_del(VX, b.ctr_ip).await.unwrap();
    nla.neigh_del(VX, b.ctr_ip).await.unwrap();
    assert!(!nla.neigh_entries(VX).await.unwrap().iter().any(|n| n.ip == b.ctr_ip));

    // Programming it again restores the path.
    nla.fdb_add(VX, b.ctr_mac, b.vtep).await.unwrap();
    nla.neigh_add(VX, b.ctr_ip, b.ctr_mac).await.unwrap();
    assert!(ping(&a, b.ctr_ip), "ping failed after re-adding the entries");

    // A spec change that cannot be applied in place (another VNI) re-creates the device.
    let br = nla.link_by_name(BR).await.unwrap().unwrap().index;
    let spec = VxlanSpec { name: VX.into(), vni: VNI + 1, local: a.vtep, port: VXLAN_PORT, mtu: 1450, master: br };
    nla.ensure_vxlan(&spec).await.unwrap();
    let details = a.holder.ip(&["-d", "link", "show", VX]).unwrap().stdout;
    assert!(details.contains(&format!("vxlan id {}", VNI + 1)), "{details}");
}
