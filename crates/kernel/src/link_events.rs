//! The link notifications of a namespace (rtnetlink group `RTNLGRP_LINK`): the kernel reports
//! every link created, changed or deleted, so hnsd repairs what someone breaks by hand when it
//! happens instead of at its next periodic pass.
//!
//! Read on a blocking socket by a thread of the caller's: at a high attach rate each attach
//! brings several notifications, and they must not be parsed on the async workers. Only the
//! fields a repair looks at are read (index, flags, name, master, group), straight from the
//! message's attributes: a full parse of a veth's notification (statistics, per-family
//! configuration) costs several times that, for fields nobody reads.

use std::os::fd::AsRawFd;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use rtnetlink::packet_core::{NlaBuffer, NlasIterator};

use crate::error::{KernelError, Result};
use crate::netlink::LinkInfo;

/// `RTNLGRP_LINK` (linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_GROUP: u16 = 27;
/// Attribute types carry two flag bits (nested, network byte order) above the type.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// Notifications queued in the kernel before hnsd reads them: room for a burst of thousands
/// of attaches (a veth's notification is ~1-3 KiB).
const RECEIVE_BUFFER: usize = 8 << 20;

/// One notification: the link as it is after the change, or as it was when it was deleted.
#[derive(Debug, Clone)]
pub struct LinkEvent {
    pub link: LinkInfo,
    pub deleted: bool,
}

/// What one read brought.
#[derive(Debug)]
pub enum Received {
    Events(Vec<LinkEvent>),
    /// The kernel's queue overflowed and notifications were dropped: the listener must look
    /// at everything, since it cannot know what it missed.
    Lost,
}

/// A subscription to the link notifications of the namespace it was opened in.
pub struct LinkEvents {
    socket: Socket,
    buf: Vec<u8>,
}

impl LinkEvents {
    /// Subscribes in the calling thread's namespace.
    pub fn open() -> Result<LinkEvents> {
        let socket = subscribe(NETLINK_ROUTE, RTNLGRP_LINK, RECEIVE_BUFFER, "link notifications")?;
        Ok(LinkEvents { socket, buf: vec![0u8; 64 * 1024] })
    }

    /// Waits for the next notifications (blocking) and returns those of one read.
    pub fn recv(&mut self) -> Result<Received> {
        let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Received::Lost),
            Err(e) => return Err(KernelError::io("read link notifications", "", e)),
        };
        Ok(Received::Events(parse(&self.buf[..n])))
    }
}

/// A netlink socket of `protocol` subscribed to `group`, with a receive queue of `buffer`
/// bytes. Shared with `nft_events`.
pub(crate) fn subscribe(protocol: isize, group: u32, buffer: usize, what: &str) -> Result<Socket> {
    let err = |op: String, e: std::io::Error| KernelError::io(&op, "", e);
    let mut socket = Socket::new(protocol).map_err(|e| err(format!("open a netlink socket for {what}"), e))?;
    socket.bind(&SocketAddr::new(0, 0)).map_err(|e| err(format!("bind the netlink socket for {what}"), e))?;
    socket.add_membership(group).map_err(|e| err(format!("subscribe to {what}"), e))?;
    // SO_RCVBUFFORCE passes net.core.rmem_max (hnsd has CAP_NET_ADMIN); netlink-sys only
    // offers SO_RCVBUF, which that limit caps at a few hundred KiB.
    let size = buffer as libc::c_int;
    // Safety: a valid socket and a pointer to an int that lives across the call.
    let set = unsafe { libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&raw const size).cast(), size_of::<libc::c_int>() as libc::socklen_t) };
    if set != 0 {
        let _ = socket.set_rx_buf_sz(buffer);
    }
    Ok(socket)
}

/// The link notifications in one read of the socket (several messages, each 4-byte aligned).
pub fn parse(mut rest: &[u8]) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    while rest.len() >= 16 {
        let len = (u32::from_ne_bytes(rest[..4].try_into().expect("4 bytes")) as usize).clamp(16, rest.len());
        let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
        if kind == RTM_NEWLINK || kind == RTM_DELLINK {
            if let Some(link) = link_of(&rest[16..len]) {
                out.push(LinkEvent { link, deleted: kind == RTM_DELLINK });
            }
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

/// The fields of [`LinkInfo`] a repair needs, from an `ifinfomsg` and its attributes.
fn link_of(payload: &[u8]) -> Option<LinkInfo> {
    // struct ifinfomsg: family, pad, type (u16), index (i32), flags (u32), change (u32).
    let header = payload.get(..16)?;
    // The bridge sends its own notifications about its ports (family AF_BRIDGE, a bridge
    // port's state): they carry neither the device group nor the link's own state.
    if header[0] != libc::AF_UNSPEC as u8 {
        return None;
    }
    let index = u32::from_ne_bytes(header[4..8].try_into().ok()?);
    let flags = u32::from_ne_bytes(header[8..12].try_into().ok()?);
    let mut link = LinkInfo { index, name: String::new(), kind: None, master: None, up: flags & libc::IFF_UP as u32 != 0, group: 0, mac: None };
    for nla in NlasIterator::new(&payload[16..]) {
        let nla: NlaBuffer<&[u8]> = nla.ok()?;
        let value = nla.value();
        match nla.kind() & NLA_TYPE_MASK {
            IFLA_IFNAME => link.name = String::from_utf8_lossy(value.split(|b| *b == 0).next().unwrap_or_default()).into_owned(),
            IFLA_MASTER => link.master = value.get(..4).map(|v| u32::from_ne_bytes(v.try_into().expect("4 bytes"))).filter(|m| *m != 0),
            IFLA_GROUP => link.group = value.get(..4).map_or(0, |v| u32::from_ne_bytes(v.try_into().expect("4 bytes"))),
            _ => {}
        }
    }
    (!link.name.is_empty()).then_some(link)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A netlink message as the kernel lays it out: header, the family's fixed header, then
    /// attributes (each padded to 4 bytes). Shared with `nft_events`' tests.
    pub(crate) fn netlink_message(kind: u16, fixed: &[u8], attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = fixed.to_vec();
        for (t, v) in attrs {
            body.extend(((4 + v.len()) as u16).to_ne_bytes());
            body.extend(t.to_ne_bytes());
            body.extend(v);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut m = Vec::new();
        m.extend(((16 + body.len()) as u32).to_ne_bytes());
        m.extend(kind.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(body);
        m
    }

    /// A link notification: netlink header, ifinfomsg, attributes.
    fn message(kind: u16, index: u32, flags: u32, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let fixed = [[0u8, 0, 1, 0], index.to_ne_bytes(), flags.to_ne_bytes(), 0u32.to_ne_bytes()].concat();
        netlink_message(kind, &fixed, attrs)
    }

    #[test]
    fn the_fields_a_repair_needs_are_read_from_each_notification_of_a_read() {
        let name = |s: &str| [s.as_bytes(), &[0]].concat();
        let mut read = message(RTM_NEWLINK, 7, libc::IFF_UP as u32, &[(IFLA_IFNAME, name("hnv0123456789ab")), (IFLA_MASTER, 3u32.to_ne_bytes().to_vec()), (IFLA_GROUP, 0x686e73u32.to_ne_bytes().to_vec())]);
        read.extend(message(RTM_DELLINK, 3, 0, &[(IFLA_GROUP, 0x686e73u32.to_ne_bytes().to_vec()), (IFLA_IFNAME, name("hns-0a0b0c0d"))]));
        // Another kind of message in the same read is skipped, and so is the bridge's own
        // notice about a port (family AF_BRIDGE), which has no group.
        read.extend(message(20, 9, 0, &[(IFLA_IFNAME, name("x"))]));
        let mut port = message(RTM_NEWLINK, 7, 0, &[(IFLA_IFNAME, name("hnv0123456789ab")), (IFLA_MASTER, 3u32.to_ne_bytes().to_vec())]);
        port[16] = libc::AF_BRIDGE as u8;
        read.extend(port);
        let got = parse(&read);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].link.name.as_str(), got[0].link.index, got[0].link.up, got[0].link.master, got[0].link.group, got[0].deleted), ("hnv0123456789ab", 7, true, Some(3), 0x686e73, false));
        assert_eq!((got[1].link.name.as_str(), got[1].link.up, got[1].link.master, got[1].deleted), ("hns-0a0b0c0d", false, None, true));
    }

    #[test]
    fn a_truncated_read_yields_what_parses_and_no_panic() {
        let m = message(RTM_NEWLINK, 7, 0, &[(IFLA_IFNAME, b"hnv1\0".to_vec())]);
        for cut in 0..m.len() {
            let _ = parse(&m[..cut]);
        }
        assert_eq!(parse(&m).len(), 1);
    }
}
