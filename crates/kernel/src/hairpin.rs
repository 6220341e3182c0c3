//! Hairpin mode of a bridge port (`ip link set PORT type bridge_slave hairpin on`).
//!
//! A load-balancer backend that connects to its own VIP must be able to land on itself. With
//! br_netfilter (bridged IP traffic passes the inet hooks, which hns's ACLs rely on), a packet
//! that enters a bridge port and is DNATed to an address behind the same bridge is *bridged*,
//! not routed: the bridge then has to send it out of the port it came in by, and drops it
//! unless that port is in hairpin mode. So hns turns hairpin mode on for the ports of
//! load-balancer backends.
//!
//! Synchronous (one request, one ack) so the engine's load-balancer code, which is not async,
//! can call it like it runs `nft`.

use std::ffi::CString;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::InfoBridgePort;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use rtnetlink::LinkBridgePort;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};

use crate::error::{KernelError, Result};

/// The request turning hairpin mode of the bridge port with index `index` on or off. It is an
/// `RTM_NEWLINK` on an existing link (what iproute2 sends): the kernel applies bridge-port
/// settings (`IFLA_INFO_SLAVE_DATA`) only on that path.
fn request(index: u32, on: bool) -> Vec<u8> {
    let msg = LinkBridgePort::new(index).append_info_data(InfoBridgePort::HairpinMode(on)).build();
    serialize(RouteNetlinkMessage::NewLink(msg), 0)
}

/// Turns hairpin mode of bridge port `port` (in hnsd's network namespace) on or off. A link
/// that is not a bridge port is an error (`EOPNOTSUPP`/`EINVAL` from the kernel).
pub fn set(port: &str, on: bool) -> Result<()> {
    let name = CString::new(port).map_err(|e| KernelError::new("set hairpin mode", port, e))?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(KernelError::io("set hairpin mode", port, std::io::Error::last_os_error()));
    }
    send_ack(&request(index, on), "set hairpin mode", port)
}

/// Sends one rtnetlink request (serialized, with `NLM_F_ACK`) and waits for its ack; an error
/// ack becomes the error (its errno kept, so callers can accept `EEXIST` or `ENOENT`).
pub(crate) fn send_ack(request: &[u8], op: &str, object: &str) -> Result<()> {
    let err = |what: &str, e: std::io::Error| KernelError::io(what, object, e);
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| err("open rtnetlink", e))?;
    sock.bind_auto().map_err(|e| err("bind rtnetlink", e))?;
    sock.connect(&SocketAddr::new(0, 0)).map_err(|e| err("connect rtnetlink", e))?;
    sock.send(request, 0).map_err(|e| err(op, e))?;
    let mut buf = vec![0u8; 8192];
    let n = sock.recv(&mut &mut buf[..], 0).map_err(|e| err(op, e))?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..n]).map_err(|e| KernelError::new(op, object, e))?;
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(KernelError::io(op, object, e.to_io())),
        _ => Ok(()),
    }
}

/// Serializes one rtnetlink request with `flags` (`NLM_F_REQUEST | NLM_F_ACK` added).
pub(crate) fn serialize(msg: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_newlink_with_the_bridge_port_mode() {
        let b = request(7, true);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize, b.len());
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 16, "RTM_NEWLINK");
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), NLM_F_REQUEST | NLM_F_ACK, "no CREATE: the link must exist");
        assert_eq!(i32::from_ne_bytes(b[20..24].try_into().unwrap()), 7, "ifinfomsg index");
        // IFLA_INFO_SLAVE_KIND "bridge" and IFLA_BRPORT_MODE (4) = 1 somewhere in IFLA_LINKINFO.
        assert!(b.windows(6).any(|w| w == b"bridge"));
        assert!(b.windows(5).any(|w| w == [5, 0, 4, 0, 1]), "{b:?}");
    }
}
