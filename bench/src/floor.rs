//! The kernel floor: what the kernel itself takes for the operations hns does per attach and
//! detach, done by a minimal program (no store, no API, no engine, no IPAM) with the crates hns
//! uses (rtnetlink 0.24, hns-kernel's nfnetlink element writer), in the same lab host
//! namespace, on the same bridge, with the same endpoints present. hns's cost is reported as
//! a ratio to it.
//!
//! Per attach it does what the nat driver does for an IPv4 endpoint with one port mapping
//! (crates/drivers/src/nat.rs `attach`, crates/drivers/src/lib.rs `configure_inside`,
//! crates/hnsd/src/engine/endpoints.rs `complete_attach`):
//! - one request: a veth pair, the host end enslaved to the bridge and up, the peer created
//!   inside the compartment with its name and MAC; echoed, so the kernel hands back the
//!   container end's index (it is looked up only on kernels that do not echo);
//! - IPv6 off on the host end (a bridge port: hns does it on every network, by the same file
//!   write, `hns_kernel::sysctl::disable_ipv6`);
//! - address generation off on the container end (hns does it on IPv4-only networks), then
//!   the container end up (the compartment's loopback is up since its creation, as hns's are);
//! - its address (replace), the default route via the gateway;
//! - the port mapping's nft elements (DNAT map and allow set) in one nfnetlink batch.
//!
//! Per detach, what hns's detach does in the kernel (crates/drivers/src/nat.rs `detach`):
//! nft elements out; container end down, renamed and moved to the retired group; its address
//! deleted; host end looked up (for its index), down, renamed, retired. The link delete itself (an RCU grace period under
//! rtnl) hns leaves to a background reaper; the floor times it separately ("delete").
//!
//! Left out, because they are hns's own work or done outside the timed request in both: the
//! store, validation, IPAM, resolv.conf, the DNS name table; the lookups a minimal program does
//! not need (hns looks the container end up again when it retires it); creating the
//! compartment and opening a netlink socket in it
//! (the bench creates the compartment before timing hns's attach too).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use hns_kernel::names::RETIRED_GROUP;
use hns_kernel::nft::{Mapping, Proto};
use hns_kernel::nft_elements::{ElementWriter, element_changes};
use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute};
use netlink_sys::{TokioSocket, protocols::NETLINK_ROUTE};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

/// Where the floor's endpoints go: an existing bridge and its subnet.
#[derive(Clone, Copy)]
pub struct Net {
    pub bridge_index: u32,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    /// Container addresses are `base.x.y`, unused by hns's IPAM (it allocates from the start).
    pub base: [u8; 2],
}

/// One client of the floor: its own netlink connection in the host namespace, its own
/// nfnetlink socket, and a current-thread runtime (the floor's "threads" are OS threads).
pub struct Floor {
    rt: tokio::runtime::Runtime,
    host: Handle,
    nft: ElementWriter,
    net: Net,
    /// Distinguishes this client's link names ("flr<client><n>").
    client: u8,
    n: u32,
}

/// A fresh compartment: the namespace fd and a netlink connection inside it.
pub struct Compartment {
    fd: OwnedFd,
    nl: Handle,
}

/// One endpoint the floor attached.
pub struct Attached {
    host_if: String,
    inside_index: u32,
    addr: Ipv4Addr,
    mapping: Mapping,
}

fn connection(socket: netlink_sys::Socket) -> Handle {
    // The fd comes straight from a socket we own.
    let s = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
    let (conn, handle, _) = rtnetlink::from_socket(s);
    tokio::spawn(conn);
    handle
}

fn route_socket() -> std::io::Result<netlink_sys::Socket> {
    let mut s = netlink_sys::Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    Ok(s)
}

impl Floor {
    pub fn new(net: Net, client: u8) -> Result<Floor> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let host = rt.block_on(async { route_socket().map(connection) })?;
        let nft = ElementWriter::open().map_err(|e| anyhow!("{e}"))?;
        Ok(Floor { rt, host, nft, net, client, n: 0 })
    }

    /// A new network namespace (on a short thread, as hns does) with a netlink socket in it,
    /// its loopback up. Not timed: the compartment exists before an attach.
    pub fn compartment(&self) -> Result<Compartment> {
        let (fd, socket) = std::thread::scope(|s| {
            s.spawn(|| -> Result<(OwnedFd, netlink_sys::Socket)> {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
                let fd: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")?.into();
                Ok((fd, route_socket()?))
            })
            .join()
            .map_err(|_| anyhow!("namespace thread panicked"))?
        })?;
        let nl = self.rt.block_on(async {
            let nl = connection(socket);
            nl.link().set(LinkUnspec::new_with_name("lo").up().build()).execute().await.context("lo up")?;
            anyhow::Ok(nl)
        })?;
        Ok(Compartment { fd, nl })
    }

    /// Times one attach; returns it with what detach needs.
    pub fn attach(&mut self, c: &Compartment) -> Result<(Duration, Attached)> {
        self.n += 1;
        let (client, n, net) = (self.client, self.n, self.net);
        let host_if = format!("flr{client:02x}{n:08x}");
        let addr = Ipv4Addr::new(net.base[0], net.base[1], 200 + client % 50, (n % 250 + 1) as u8);
        let mac = [0x02, 0x66, client, (n >> 16) as u8, (n >> 8) as u8, n as u8];
        let mapping = Mapping { proto: Proto::Tcp, host_ip: None, host_port: 30000 + (client as u16) * 100 + (n % 100) as u16, container_ip: IpAddr::V4(addr), container_port: 80 };
        let t = Instant::now();
        let inside_index = self.rt.block_on(attach_steps(&self.host, c, &host_if, mac, addr, net))?;
        self.nft.apply(&element_changes(std::slice::from_ref(&mapping), &[], &[])).map_err(|e| anyhow!("{e}"))?;
        Ok((t.elapsed(), Attached { host_if, inside_index, addr, mapping }))
    }

    /// Times one detach (the link is retired, as hns does; [`Floor::delete_retired`] deletes it).
    pub fn detach(&mut self, c: &Compartment, a: Attached) -> Result<Duration> {
        let t = Instant::now();
        self.nft.apply(&element_changes(&[], std::slice::from_ref(&a.mapping), &[])).map_err(|e| anyhow!("{e}"))?;
        let retired = format!("flz{:02x}{:08x}", self.client, self.n);
        self.rt.block_on(detach_steps(&self.host, c, &a, &retired, self.net.prefix_len))?;
        Ok(t.elapsed())
    }

    /// Deletes every retired link of the host namespace in one request (what hns's reaper
    /// does off the request path).
    pub fn delete_retired(&self) -> Result<Duration> {
        let t = Instant::now();
        self.rt.block_on(delete_retired(&self.host))?;
        Ok(t.elapsed())
    }

    /// Drops a compartment (its namespace goes when its last link does).
    pub fn close(&self, c: Compartment) {
        let _guard = self.rt.enter();
        drop(c);
    }
}

async fn attach_steps(host: &Handle, c: &Compartment, host_if: &str, mac: [u8; 6], addr: Ipv4Addr, net: Net) -> Result<u32> {
    // One queue each way, as hns asks (crates/kernel/src/netlink.rs `create_veth_into`).
    let one_queue = |b: LinkMessageBuilder<LinkUnspec>| b.append_extra_attribute(LinkAttribute::NumTxQueues(1)).append_extra_attribute(LinkAttribute::NumRxQueues(1));
    let peer = one_queue(LinkMessageBuilder::<LinkUnspec>::new()).name("eth0".to_owned()).setns_by_fd(c.fd.as_fd().as_raw_fd()).address(mac.to_vec()).build();
    let veth = one_queue(LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth))
        .name(host_if.to_owned())
        .up()
        .controller(net.bridge_index)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    // Echoed, as hns asks: the new host end comes back with the peer's index (IFLA_LINK).
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(veth));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO;
    let mut replies = host.clone().request(req).map_err(|e| anyhow!("create veth: {e}"))?;
    let mut echoed = None;
    while let Some(m) = replies.next().await {
        match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                echoed = l.attributes.iter().find_map(|a| if let LinkAttribute::Link(i) = a { Some(*i) } else { None });
            }
            NetlinkPayload::Error(e) if e.code.is_some() => return Err(anyhow!("create veth: {}", e.to_io())),
            _ => {}
        }
    }
    hns_kernel::sysctl::disable_ipv6(host_if).map_err(|e| anyhow!("{e}")).context("ipv6 off, host end")?;
    let index = match echoed {
        Some(i) => i,
        None => c.nl.link().get().match_name("eth0".to_owned()).execute().try_next().await?.context("eth0 missing")?.header.index,
    };
    let no_autoconf = LinkUnspec::new_with_index(index)
        .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)])]))
        .build();
    c.nl.link().set(no_autoconf).execute().await.context("ipv6 off, inside")?;
    c.nl.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.context("inside up")?;
    c.nl.address().add(index, IpAddr::V4(addr), net.prefix_len).replace().execute().await.context("address")?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(Ipv4Addr::UNSPECIFIED, 0).output_interface(index).gateway(net.gateway).build();
    c.nl.route().add(route).execute().await.context("default route")?;
    Ok(index)
}

async fn detach_steps(host: &Handle, c: &Compartment, a: &Attached, retired: &str, prefix_len: u8) -> Result<()> {
    let index = a.inside_index;
    retire(&c.nl, || LinkUnspec::new_with_index(index), retired).await?;
    let mut del = c.nl.address().add(index, IpAddr::V4(a.addr), prefix_len);
    let msg = del.message_mut().clone();
    c.nl.address().del(msg).execute().await.context("delete address")?;
    // Renaming needs the index (a name in the message is the new name): one lookup.
    let host_index = host.link().get().match_name(a.host_if.clone()).execute().try_next().await?.context("host end missing")?.header.index;
    retire(host, || LinkUnspec::new_with_index(host_index), retired).await
}

/// Down, then renamed into the retired group (a link cannot be renamed while up).
async fn retire(h: &Handle, link: impl Fn() -> LinkMessageBuilder<LinkUnspec>, retired: &str) -> Result<()> {
    h.link().set(link().down().build()).execute().await.context("take down")?;
    h.link().set(link().name(retired.to_owned()).link_group(RETIRED_GROUP).build()).execute().await.context("rename")?;
    Ok(())
}

async fn delete_retired(host: &Handle) -> Result<()> {
    let msg = LinkUnspec::new_with_index(0).link_group(RETIRED_GROUP).build();
    match host.link().del_with_message(msg).execute().await {
        Ok(()) => Ok(()),
        // Nothing left to delete (hnsd's reaper, which deletes the same group, was first).
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV || m.raw_code() == -libc::ENOENT => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Throughput of the floor: `clients` OS threads, each with its own compartment, doing
/// attach + detach cycles for `run`; one more thread deletes retired links every 50 ms (as
/// hns's reaper does). Returns the attaches completed.
pub fn throughput(net: Net, clients: u8, run: Duration) -> Result<u64> {
    let stop = Instant::now() + run;
    let done = std::sync::atomic::AtomicU64::new(0);
    let running = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| -> Result<()> {
        let reaper = s.spawn(|| -> Result<()> {
            let f = Floor::new(net, 255)?;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                f.delete_retired()?;
            }
            f.delete_retired().map(|_| ())
        });
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                let done = &done;
                s.spawn(move || -> Result<()> {
                    let mut f = Floor::new(net, client)?;
                    let c = f.compartment()?;
                    while Instant::now() < stop {
                        let (_, a) = f.attach(&c)?;
                        f.detach(&c, a)?;
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    f.close(c);
                    Ok(())
                })
            })
            .collect();
        let mut first_err = None;
        for w in workers {
            if let Err(e) = w.join().map_err(|_| anyhow!("floor client panicked")).and_then(|r| r) {
                first_err.get_or_insert(e);
            }
        }
        running.store(false, std::sync::atomic::Ordering::Relaxed);
        reaper.join().map_err(|_| anyhow!("floor reaper panicked"))??;
        first_err.map_or(Ok(()), Err)
    })?;
    Ok(done.into_inner())
}
