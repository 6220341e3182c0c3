//! rtnetlink requests, one small function per kernel step.
//!
//! A [`Netlink`] is a route-netlink connection bound to one network namespace: the daemon's own
//! ([`Netlink::current`]) or a compartment's ([`Netlink::in_netns`], whose socket is opened by a
//! short thread inside the namespace; the socket stays bound to that namespace for its life, so
//! every later request runs on the async runtime with no namespace switching).
//!
//! Every step is idempotent where the kernel allows it (addresses and routes are replaced,
//! deletes of missing links succeed), so the reconciler can re-run any of them.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkExtentMask, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{TokioSocket, protocols::NETLINK_ROUTE};
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use crate::error::{KernelError, Result};
use crate::{names, netns};

/// A route-netlink connection bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    pub(crate) handle: Handle,
    /// Held for the whole of each dump: the kernel runs one dump at a time per socket and
    /// refuses a second one started meanwhile with EBUSY (two requests without the engine
    /// lock, or a request and the periodic pass, may both list something).
    pub(crate) dumps: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The namespace of a handle opened by [`Netlink::in_netns`] (`None`: the process's own):
    /// [`Netlink::links`] opens a socket of its own there.
    netns: Option<Arc<OwnedFd>>,
}

/// The counters of `/proc/net/dev`: after two header lines, `NAME: ` then 8 receive
/// columns (bytes packets errs drop fifo frame compressed multicast) and 8 transmit columns
/// (bytes packets errs drop ...). A link name never holds a colon or blank.
pub fn parse_net_dev(text: &str) -> Vec<(String, LinkCounters)> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest.split_whitespace().map(|x| x.parse().ok()).collect::<Option<_>>()?;
            if v.len() < 16 {
                return None;
            }
            Some((name.trim().to_owned(), LinkCounters { rx_bytes: v[0], rx_packets: v[1], rx_dropped: v[3], tx_bytes: v[8], tx_packets: v[9], tx_dropped: v[11] }))
        })
        .collect()
}

pub(crate) fn nl_err(op: &str, object: &str, e: rtnetlink::Error) -> KernelError {
    let errno = match &e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    };
    let reason = match &e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    };
    KernelError { op: op.into(), object: object.into(), reason, errno }
}

/// A link as seen in a dump.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub master: Option<u32>,
    pub up: bool,
    /// Device group: [`names::HNS_GROUP`] marks links hns created.
    pub group: u32,
    /// The link's hardware address, if it has an Ethernet one.
    pub mac: Option<[u8; 6]>,
}

/// A link's traffic counters since it was created, as the link itself counts them (`rx` is
/// what arrived on this link).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

impl LinkInfo {
    /// Made by hns (see [`names::HNS_GROUP`]).
    pub fn is_marked(&self) -> bool {
        self.group == names::HNS_GROUP
    }

    /// Refuses to take over a link of an hns name that hns did not make.
    pub(crate) fn check_ours(&self, op: &str) -> Result<()> {
        if self.is_marked() {
            return Ok(());
        }
        Err(KernelError {
            op: op.into(),
            object: self.name.clone(),
            reason: format!(
                "a link of that name exists but hns did not create it (its device group is {:#x}, not hns's {:#x}); rename or delete it",
                self.group,
                names::HNS_GROUP
            ),
            errno: Some(libc::EEXIST),
        })
    }
}

impl Netlink {
    fn from_socket(socket: netlink_sys::Socket) -> Result<Netlink> {
        // Safety: the fd comes straight from a socket we own and hand over.
        let tokio_socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(tokio_socket);
        tokio::spawn(conn);
        Ok(Netlink { handle, dumps: Default::default(), netns: None })
    }

    fn open_socket() -> Result<netlink_sys::Socket> {
        let mut s = netlink_sys::Socket::new(NETLINK_ROUTE).map_err(|e| KernelError::io("open netlink socket", "", e))?;
        s.bind_auto().map_err(|e| KernelError::io("bind netlink socket", "", e))?;
        // Make the kernel reject attributes it does not understand instead of ignoring them.
        let _ = s.set_netlink_get_strict_chk(true);
        Ok(s)
    }

    /// A connection in the caller's own namespace. Must be called inside a tokio runtime.
    pub fn current() -> Result<Netlink> {
        Netlink::from_socket(Netlink::open_socket()?)
    }

    /// A connection inside the namespace `ns`. Must be called inside a tokio runtime.
    pub fn in_netns(ns: &impl AsFd) -> Result<Netlink> {
        let socket = netns::run_in(ns, Netlink::open_socket)??;
        let netns = ns.as_fd().try_clone_to_owned().map_err(|e| KernelError::io("keep namespace", "", e))?;
        Ok(Netlink { netns: Some(Arc::new(netns)), ..Netlink::from_socket(socket)? })
    }

    /// Every link of the namespace, read on a socket of its own one message at a time, each
    /// parsed message dropped once its [`LinkInfo`] is taken. Not through the connection:
    /// netlink-proto reads its socket until it would block, and a dump's socket does not block
    /// before the dump's end, so the whole dump was parsed before its first link was handed
    /// over: ~50 MB of parsed messages (~10 KB a veth) on every periodic pass at 5 000
    /// endpoints, which also left hnsd's heap fragmented.
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let netns = self.netns.clone();
        let dump = move || -> Result<Vec<LinkInfo>> {
            let socket = match &netns {
                Some(ns) => netns::run_in(&**ns, Netlink::open_socket)??,
                None => Netlink::open_socket()?,
            };
            dump_links(socket)
        };
        tokio::task::spawn_blocking(dump).await.map_err(|e| KernelError::new("list links", "", e))?
    }

    /// The traffic counters of every link, by name, for a metrics scrape: read from
    /// `/proc/self/net/dev` of the namespace this handle was opened in by [`Netlink::current`]
    /// (the process's own; hns enters other namespaces on dedicated threads only).
    ///
    /// Not a link dump (RTM_GETLINK): for each veth the kernel fills in the namespace id of its
    /// peer by a linear walk over the ids the namespace has handed out (`peernet2id`), one per
    /// compartment, so a dump of n endpoints' veths costs n^2 (390 ms of a scrape at 5 000
    /// endpoints, bench/results/scrape.txt); the file costs n. Its receive drop column also
    /// counts `rx_missed_errors`, which veths never set.
    pub async fn link_counters(&self) -> Result<Vec<(String, LinkCounters)>> {
        let text = std::fs::read_to_string("/proc/self/net/dev").map_err(|e| KernelError::io("read link counters", "/proc/self/net/dev", e))?;
        Ok(parse_net_dev(&text))
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>> {
        let mut stream = self.handle.link().get().match_name(name.to_owned()).execute();
        match stream.try_next().await {
            Ok(Some(m)) => Ok(Some(link_info(&m))),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = nl_err("look up link", name, e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    async fn set(&self, op: &str, name: &str, msg: LinkMessage) -> Result<()> {
        self.handle.link().set(msg).execute().await.map_err(|e| nl_err(op, name, e))
    }

    /// Turns IPv6 address generation off on a link that is still down (or up without a
    /// carrier: a veth whose other end is down), so it never starts
    /// duplicate address detection, router solicitations or MLD reports. On IPv4-only networks
    /// that multicast chatter, flooded to every port of a shared bridge, makes attach cost grow
    /// with the number of endpoints.
    pub async fn disable_ipv6_autoconf(&self, name: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_name(name)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
                In6AddrGenMode::None,
            )])]))
            .build();
        self.set("disable IPv6 autoconf on", name, msg).await
    }

    /// Turns IPv6 off on a link of this handle's namespace ([`sysctl::disable_ipv6`]: for a
    /// bridge port, which needs no IP of its own). A write to a file of the namespace, so a
    /// handle opened in another namespace than the caller's does it from a thread there.
    pub fn disable_ipv6(&self, name: &str) -> Result<()> {
        match &self.netns {
            Some(ns) => netns::run_in(&**ns, || crate::sysctl::disable_ipv6(name))?,
            None => crate::sysctl::disable_ipv6(name),
        }
    }

    pub async fn set_up(&self, name: &str) -> Result<()> {
        self.set("bring up", name, LinkUnspec::new_with_name(name).up().build()).await
    }

    /// Creates a bridge with a fixed MAC (so it does not change as ports come and go) and no
    /// multicast snooping, or leaves an existing one as it is. Returns its index.
    pub async fn ensure_bridge(&self, name: &str, mac: [u8; 6], ipv6: bool) -> Result<u32> {
        if let Some(l) = self.link_by_name(name).await? {
            l.check_ours("create bridge")?;
            if !l.up {
                self.set_up(name).await?;
            }
            return Ok(l.index);
        }
        // Multicast snooping off: with it on, every port that joins, goes down or leaves makes
        // the kernel re-arm the multicast timers of every other port of the bridge, so a veth's
        // enslave and its retirement cost grows with the endpoints on the network (0.3-0.5 ms
        // of each attach at 600-800 ports here). Multicast is then flooded to every port, as
        // broadcast is (IPv6 neighbour discovery as ARP).
        let msg = LinkMessageBuilder::<rtnetlink::LinkBridge>::new(name).mcast_snooping(false).address(mac.to_vec()).link_group(names::HNS_GROUP).build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => {}
            Err(e) => {
                let e = nl_err("create bridge", name, e);
                if !e.is_exists() {
                    return Err(e);
                }
            }
        }
        if !ipv6 {
            self.disable_ipv6_autoconf(name).await?;
        }
        self.set_up(name).await?;
        self.link_by_name(name).await?.map(|l| l.index).ok_or_else(|| KernelError::new("create bridge", name, "bridge vanished right after creation"))
    }

    /// Takes a link out of service at once: down, then renamed to `new_name` so its name is
    /// free for reuse. Deleting a link waits for an RCU grace period (about 20 ms here), so
    /// callers rename now and delete later. Returns the link's index, `None` if it does not
    /// exist. It also joins the device group [`names::RETIRED_GROUP`] so
    /// [`Netlink::delete_retired`] can remove many at once.
    pub async fn retire(&self, name: &str, new_name: &str) -> Result<Option<u32>> {
        // Looked up first: renaming needs the index (a name in a request is the new name), and
        // the kernel does not echo a flag change (NLM_F_ECHO on the down gives nothing back).
        let Some(l) = self.link_by_name(name).await? else { return Ok(None) };
        self.set("take down", name, LinkUnspec::new_with_index(l.index).down().build()).await?;
        // Join the group only with the new name: from then on a batch delete may take it.
        let rename = LinkUnspec::new_with_index(l.index).name(new_name.to_owned()).link_group(names::RETIRED_GROUP).build();
        self.set("rename", name, rename).await?;
        Ok(Some(l.index))
    }

    /// Removes every address of the link `index` (`name`, for errors): a retired container
    /// interface, whose old address the container must not keep seeing until the reaper deletes
    /// the pair. Deleting an address, unlike a link, costs no RCU grace period.
    pub async fn clear_addresses(&self, name: &str, index: u32) -> Result<()> {
        let _one_dump = self.dumps.lock().await;
        let mut dump = self.handle.address().get().set_link_index_filter(index).execute();
        let mut found = Vec::new();
        while let Some(m) = dump.try_next().await.map_err(|e| nl_err("list addresses", name, e))? {
            found.push(m);
        }
        for m in found {
            if let Err(e) = self.handle.address().del(m).execute().await {
                let e = nl_err("delete address", name, e);
                if !e.is_not_found() {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Removes one address from a link; a missing link or address is fine.
    pub async fn del_address(&self, name: &str, ip: IpAddr) -> Result<()> {
        use netlink_packet_route::address::AddressAttribute;
        let Some(l) = self.link_by_name(name).await? else { return Ok(()) };
        let _one_dump = self.dumps.lock().await;
        let mut dump = self.handle.address().get().set_link_index_filter(l.index).execute();
        let mut found = Vec::new();
        while let Some(m) = dump.try_next().await.map_err(|e| nl_err("list addresses", name, e))? {
            if m.attributes.iter().any(|a| matches!(a, AddressAttribute::Address(x) if *x == ip)) {
                found.push(m);
            }
        }
        for m in found {
            if let Err(e) = self.handle.address().del(m).execute().await {
                let e = nl_err("delete address", &format!("{ip} on {name}"), e);
                if !e.is_not_found() && e.errno != Some(libc::EADDRNOTAVAIL) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Deletes every retired link of this namespace in one request: the kernel then waits for
    /// one RCU grace period for the whole batch instead of one per link.
    pub async fn delete_retired(&self) -> Result<()> {
        let msg = LinkUnspec::new_with_index(0).link_group(names::RETIRED_GROUP).build();
        match self.handle.link().del_with_message(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_err("delete retired links", "", e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// Puts an existing link into hns's device group: the upgrade path for links an older hnsd
    /// created before links were marked (the caller knows the store names them).
    pub async fn mark_as_hns(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).link_group(names::HNS_GROUP).build();
        self.set("mark as hns's", &format!("index {index}"), msg).await
    }

    /// Enslaves a link to a bridge (repairs a veth whose bridge was deleted and re-created).
    pub async fn set_master(&self, name: &str, master: u32) -> Result<()> {
        self.set("attach to bridge", name, LinkUnspec::new_with_name(name).controller(master).build()).await
    }

    pub async fn delete_link(&self, name: &str) -> Result<()> {
        let Some(l) = self.link_by_name(name).await? else { return Ok(()) };
        match self.handle.link().del(l.index).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_err("delete link", name, e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// Creates a veth pair in one request: `host_name` here, enslaved to `master` if given and
    /// up, and its peer `peer_name` directly inside the namespace `peer_ns` with MAC `peer_mac`
    /// (no later move, no rename), left down. Returns the peer's index there when the kernel
    /// echoes the new link (Linux 6.3 and later), so the caller need not look it up.
    pub async fn create_veth_into(
        &self,
        host_name: &str,
        master: Option<u32>,
        peer_name: &str,
        peer_ns: &impl AsFd,
        peer_mac: [u8; 6],
        mtu: Option<u32>,
    ) -> Result<Option<u32>> {
        // One queue each way, asked for at creation: a veth is made with a queue per CPU and
        // then cut down to one, unless the request names the counts, and each cut waits for an
        // RCU grace period under the RTNL lock (two per pair: 0.1-0.4 ms of every attach here).
        let one_queue = |b: LinkMessageBuilder<LinkUnspec>| b.append_extra_attribute(LinkAttribute::NumTxQueues(1)).append_extra_attribute(LinkAttribute::NumRxQueues(1));
        let mut peer = one_queue(LinkMessageBuilder::<LinkUnspec>::new())
            .name(peer_name.to_owned())
            .setns_by_fd(peer_ns.as_fd().as_raw_fd())
            .address(peer_mac.to_vec());
        if let Some(m) = mtu {
            peer = peer.mtu(m);
        }
        // The host end comes up in the same request: it has no carrier until the container end
        // is up, so the kernel makes no IPv6 address or route on it before then, and IPv6
        // turned off in between (the drivers' next step, [`Netlink::disable_ipv6`]) finds none.
        let mut host = one_queue(LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth))
            .name(host_name.to_owned())
            .up()
            .link_group(names::HNS_GROUP)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(m) = master {
            host = host.controller(m);
        }
        if let Some(m) = mtu {
            host = host.mtu(m);
        }
        // Echoed (NLM_F_ECHO): the kernel sends the new host end back, and its IFLA_LINK is the
        // peer's index in its namespace; one lookup less on every attach. The message is the
        // one it builds anyway for the link's listeners.
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(host.build()));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO;
        let err = |e| nl_err("create veth", host_name, e);
        let mut replies = self.handle.clone().request(req).map_err(err)?;
        let mut peer_index = None;
        while let Some(m) = replies.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    peer_index = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Link(i) => Some(*i),
                        _ => None,
                    });
                }
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(err(rtnetlink::Error::NetlinkError(e))),
                _ => {}
            }
        }
        Ok(peer_index)
    }

    /// Adds (or replaces) an address on a link. IPv6 addresses skip duplicate address
    /// detection: hns's IPAM already guarantees they are unique, and DAD would leave them
    /// unusable ("tentative") for a second after attach.
    pub async fn add_address(&self, link: &str, index: u32, ip: IpAddr, prefix_len: u8) -> Result<()> {
        use netlink_packet_route::address::{AddressAttribute, AddressFlags};
        let mut req = self.handle.address().add(index, ip, prefix_len).replace();
        if ip.is_ipv6() {
            req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute().await.map_err(|e| nl_err("add address", &format!("{ip}/{prefix_len} on {link}"), e))
    }

    /// [`Netlink::add_address`] unless the link already has `ip/prefix_len`: for steps the
    /// reconciler repeats on every pass, where a replace would be a kernel write (and a
    /// notification to every listener) each time even with nothing to change.
    pub async fn ensure_address(&self, link: &str, index: u32, ip: IpAddr, prefix_len: u8) -> Result<()> {
        use netlink_packet_route::address::AddressAttribute;
        let _one_dump = self.dumps.lock().await;
        let mut dump = self.handle.address().get().set_link_index_filter(index).execute();
        let mut present = false;
        while let Some(m) = dump.try_next().await.map_err(|e| nl_err("list addresses", link, e))? {
            present |= m.header.index == index && m.header.prefix_len == prefix_len && m.attributes.iter().any(|a| matches!(a, AddressAttribute::Address(x) if *x == ip));
        }
        if present { Ok(()) } else { self.add_address(link, index, ip, prefix_len).await }
    }

    /// Adds (or replaces) a route to `dest` via `gateway` (or on-link when None) out of `oif`.
    pub async fn add_route(&self, dest: ipnet::IpNet, gateway: Option<IpAddr>, oif: u32) -> Result<()> {
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.addr(), dest.prefix_len())
            .map_err(|e| KernelError::new("build route", dest.to_string(), e))?
            .output_interface(oif);
        if let Some(gw) = gateway {
            b = b.gateway(gw).map_err(|e| KernelError::new("build route", dest.to_string(), e))?;
        }
        let shown = match gateway {
            Some(gw) => format!("{dest} via {gw}"),
            None => dest.to_string(),
        };
        self.handle.route().add(b.build()).replace().execute().await.map_err(|e| nl_err("add route", &shown, e))
    }

    /// Whether the namespace's main table has a default route of that family (what
    /// [`Netlink::add_default_route_if_absent`] would find), read without writing anything.
    pub async fn has_default_route(&self, v4: bool) -> Result<bool> {
        use netlink_packet_route::route::RouteAttribute;
        /// `RT_TABLE_MAIN` of <linux/rtnetlink.h>.
        const MAIN_TABLE: u32 = 254;
        let mut msg = if v4 { RouteMessageBuilder::<std::net::Ipv4Addr>::new().build() } else { RouteMessageBuilder::<std::net::Ipv6Addr>::new().build() };
        // Strict dump checking filters by every header field set: any protocol, any type.
        msg.header.protocol = netlink_packet_route::route::RouteProtocol::Unspec;
        msg.header.kind = netlink_packet_route::route::RouteType::Unspec;
        let _one_dump = self.dumps.lock().await;
        let mut routes = self.handle.route().get(msg).execute();
        let mut found = false;
        while let Some(m) = routes.try_next().await.map_err(|e| nl_err("list routes", "", e))? {
            let table = m.attributes.iter().find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None }).unwrap_or(m.header.table.into());
            found |= m.header.destination_prefix_length == 0 && table == MAIN_TABLE;
        }
        Ok(found)
    }

    /// Adds a default route via `gateway` out of `oif` unless the namespace already has one of
    /// that family: a compartment on several networks keeps the default route of the first,
    /// as Docker does, and another endpoint's route is never replaced. True if it added one.
    pub async fn add_default_route_if_absent(&self, gateway: IpAddr, oif: u32) -> Result<bool> {
        let dest: ipnet::IpNet = if gateway.is_ipv4() { "0.0.0.0/0".parse().unwrap() } else { "::/0".parse().unwrap() };
        let b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.addr(), 0)
            .map_err(|e| KernelError::new("build route", dest.to_string(), e))?
            .output_interface(oif)
            .gateway(gateway)
            .map_err(|e| KernelError::new("build route", dest.to_string(), e))?;
        match self.handle.route().add(b.build()).execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = nl_err("add route", &format!("default via {gateway}"), e);
                if e.is_exists() { Ok(false) } else { Err(e) }
            }
        }
    }

    /// Every address of this namespace (as its prefix) and the destination of every route
    /// but the default ones, with what they are, so that a subnet overlapping one can be
    /// refused by naming it, and a default subnet chosen that overlaps none. Routes of the
    /// kernel's `local` table are left out: they are the
    /// addresses themselves, their broadcasts and the multicast range.
    pub async fn host_prefixes(&self) -> Result<Vec<HostPrefix>> {
        use netlink_packet_route::address::AddressAttribute;
        use netlink_packet_route::route::{RouteAddress, RouteAttribute};
        /// `RT_TABLE_LOCAL` of <linux/rtnetlink.h>.
        const LOCAL_TABLE: u32 = 255;
        let names: std::collections::HashMap<u32, String> = self.links().await?.into_iter().map(|l| (l.index, l.name)).collect();
        let link = |index: u32| names.get(&index).cloned();
        let mut out = Vec::new();
        {
            // Released before the route dumps below take it again.
            let _one_dump = self.dumps.lock().await;
            let mut addrs = self.handle.address().get().execute();
            while let Some(m) = addrs.try_next().await.map_err(|e| nl_err("list addresses", "", e))? {
                for a in &m.attributes {
                    if let AddressAttribute::Address(ip) = a
                        && let Ok(n) = ipnet::IpNet::new(*ip, m.header.prefix_len)
                    {
                        out.push(HostPrefix { prefix: n.trunc(), kind: HostPrefixKind::Address(n), link: link(m.header.index) });
                    }
                }
            }
        }
        let ip_of = |a: &RouteAddress| -> Option<IpAddr> {
            match a {
                RouteAddress::Inet(v4) => Some((*v4).into()),
                RouteAddress::Inet6(v6) => Some((*v6).into()),
                _ => None,
            }
        };
        for mut family in [RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(), RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()] {
            // Strict dump checking filters by every header field set: any protocol, any type.
            family.header.protocol = netlink_packet_route::route::RouteProtocol::Unspec;
            family.header.kind = netlink_packet_route::route::RouteType::Unspec;
            let _one_dump = self.dumps.lock().await;
            let mut routes = self.handle.route().get(family).execute();
            while let Some(m) = routes.try_next().await.map_err(|e| nl_err("list routes", "", e))? {
                let plen = m.header.destination_prefix_length;
                let table = m.attributes.iter().find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None }).unwrap_or(m.header.table.into());
                if plen == 0 || table == LOCAL_TABLE {
                    continue;
                }
                let dest = m.attributes.iter().find_map(|a| if let RouteAttribute::Destination(d) = a { ip_of(d) } else { None });
                let via = m.attributes.iter().find_map(|a| if let RouteAttribute::Gateway(g) = a { ip_of(g) } else { None });
                let oif = m.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { link(*i) } else { None });
                if let Some(n) = dest.and_then(|ip| ipnet::IpNet::new(ip, plen).ok()) {
                    out.push(HostPrefix { prefix: n.trunc(), kind: HostPrefixKind::Route { via }, link: oif });
                }
            }
        }
        Ok(out)
    }
}

/// An address or route of a namespace (see [`Netlink::host_prefixes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPrefix {
    /// The network it covers: an address's subnet, a route's destination.
    pub prefix: ipnet::IpNet,
    pub kind: HostPrefixKind,
    /// The link of the address, or the route's output link.
    pub link: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPrefixKind {
    /// An address with its prefix length, as `ip addr` shows it.
    Address(ipnet::IpNet),
    /// A route, with its gateway if it has one.
    Route { via: Option<IpAddr> },
}

/// "address 198.51.100.2/24 on eth0", "route 10.8.0.0/16 via 198.51.100.1 dev eth0".
impl std::fmt::Display for HostPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            HostPrefixKind::Address(a) => write!(f, "address {a}")?,
            HostPrefixKind::Route { via } => {
                write!(f, "route {}", self.prefix)?;
                if let Some(via) = via {
                    write!(f, " via {via}")?;
                }
            }
        }
        match (&self.kind, &self.link) {
            (HostPrefixKind::Address(_), Some(l)) => write!(f, " on {l}"),
            (HostPrefixKind::Route { .. }, Some(l)) => write!(f, " dev {l}"),
            (_, None) => Ok(()),
        }
    }
}

/// Runs an `RTM_GETLINK` dump on `socket` (see [`Netlink::links`]).
fn dump_links(socket: netlink_sys::Socket) -> Result<Vec<LinkInfo>> {
    let err = |e: std::io::Error| KernelError::io("list links", "", e);
    // Without the traffic counters (which LinkInfo does not use): at thousands of links they
    // are most of the dump's bytes and of the parser's work.
    let mut get = LinkMessage::default();
    get.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetLink(get));
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0).map_err(err)?;
    // The kernel fills each read with whole messages, at most 32 KiB of them.
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let n = socket.recv(&mut &mut buf[..], 0).map_err(err)?;
        if n == 0 {
            return Err(KernelError::new("list links", "", "the dump ended without its end message"));
        }
        let mut rest = &buf[..n];
        while rest.len() >= 16 {
            let len = (u32::from_ne_bytes(rest[..4].try_into().expect("4 bytes")) as usize).clamp(16, rest.len());
            // A message that does not parse is skipped, as the connection skips it.
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]).map(|m| m.payload) {
                Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m))) => out.push(link_info(&m)),
                Ok(NetlinkPayload::Done(_)) => return Ok(out),
                Ok(NetlinkPayload::Error(e)) if e.code.is_some() => return Err(err(e.to_io())),
                _ => {}
            }
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
    }
}

pub(crate) fn link_info(m: &LinkMessage) -> LinkInfo {
    use netlink_packet_route::link::{LinkFlags, LinkInfo as Info};
    let mut l = LinkInfo { index: m.header.index, name: String::new(), kind: None, master: None, up: m.header.flags.contains(LinkFlags::Up), group: 0, mac: None };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Controller(c) => l.master = Some(*c),
            LinkAttribute::Group(g) => l.group = *g,
            LinkAttribute::Address(a) => l.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let Info::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefixes_read_like_ip_shows_them() {
        let addr = HostPrefix { prefix: "198.51.100.0/24".parse().unwrap(), kind: HostPrefixKind::Address("198.51.100.2/24".parse().unwrap()), link: Some("eth0".into()) };
        assert_eq!(addr.to_string(), "address 198.51.100.2/24 on eth0");
        let route = HostPrefix { prefix: "10.8.0.0/16".parse().unwrap(), kind: HostPrefixKind::Route { via: Some("198.51.100.1".parse().unwrap()) }, link: Some("eth0".into()) };
        assert_eq!(route.to_string(), "route 10.8.0.0/16 via 198.51.100.1 dev eth0");
        let onlink = HostPrefix { prefix: "10.9.0.0/16".parse().unwrap(), kind: HostPrefixKind::Route { via: None }, link: None };
        assert_eq!(onlink.to_string(), "route 10.9.0.0/16");
    }

    #[test]
    fn net_dev_columns_are_read_by_position() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    6472      60    0    0    0     0          0         0     6472      60    0    0    0     0       0          0
hnv0123456789ab: 1000 10 1 2 3 4 5 6 2000 20 7 8 9 10 11 12
";
        let c = parse_net_dev(text);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].0, "hnv0123456789ab");
        let v = &c[1].1;
        assert_eq!((v.rx_bytes, v.rx_packets, v.rx_dropped, v.tx_bytes, v.tx_packets, v.tx_dropped), (1000, 10, 2, 2000, 20, 8));
    }
}
