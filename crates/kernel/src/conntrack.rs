//! Clearing tracked connections over ctnetlink.
//!
//! A backend removed from a load balancer must stop receiving the flows it already has (UDP
//! flows would otherwise stay pinned to it for as long as packets keep coming). Its
//! connections carry its connection mark ([`crate::nft_lb`]), and the kernel deletes every
//! entry with a given mark in one `IPCTNL_MSG_CT_DELETE` request (a flush with a mark filter).
//!
//! Written by hand because the rust-netlink family has no ctnetlink messages
//! (`netlink-packet-netfilter` covers nflog only) and the `conntrack` tool may be absent; the
//! message is one header and two attributes.

use netlink_sys::Socket;

use crate::error::{KernelError, Result};

// linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_MARK: u16 = 8;
const CTA_MARK_MASK: u16 = 21;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;
const NFNETLINK_V0: u8 = 0;

fn attr_u32_be(out: &mut Vec<u8>, kind: u16, v: u32) {
    out.extend_from_slice(&8u16.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&v.to_be_bytes());
}

/// The request deleting every tracked connection (both families) whose mark is `mark`.
fn flush_request(mark: u32, seq: u32) -> Vec<u8> {
    let mut body = vec![0u8 /* AF_UNSPEC: every family */, NFNETLINK_V0, 0, 0];
    attr_u32_be(&mut body, CTA_MARK, mark);
    attr_u32_be(&mut body, CTA_MARK_MASK, u32::MAX);
    let len = 16 + body.len() as u32;
    let mut msg = Vec::with_capacity(len as usize);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// Deletes the tracked connections of every mark in `marks` (in hnsd's network namespace).
/// A mark with no connection is not an error.
pub fn flush_marks(marks: &[u32]) -> Result<()> {
    if marks.is_empty() {
        return Ok(());
    }
    // On the kept nfnetlink socket of nft_batch: closing a socket of our own here, right after
    // the load-balancer batch deleted elements, made the kernel wait for an RCU grace period
    // (12-16 ms per backend change; see `nft_batch::with_socket`).
    crate::nft_batch::with_socket(|sock| flush_on(sock, marks))
}

fn flush_on(sock: &Socket, marks: &[u32]) -> Result<()> {
    let err = |what: &str, e: std::io::Error| KernelError::io(what, "ctnetlink", e);
    for (i, mark) in marks.iter().enumerate() {
        let seq = i as u32 + 1;
        sock.send(&flush_request(*mark, seq), 0).map_err(|e| err("send conntrack delete", e))?;
        let mut buf = vec![0u8; 4096];
        let n = sock.recv(&mut &mut buf[..], 0).map_err(|e| err("read conntrack delete ack", e))?;
        if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
            let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            // ENOENT: nothing carried the mark.
            if code != 0 && code != -libc::ENOENT {
                return Err(KernelError::new("delete tracked connections", format!("mark {mark:#x}"), std::io::Error::from_raw_os_error(-code)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let m = flush_request(0x8000_0005, 7);
        assert_eq!(m.len(), 36);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 36);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 0x0102);
        assert_eq!(m[16..20], [0, 0, 0, 0]);
        assert_eq!(m[20..24], [8, 0, 8, 0], "len 8, CTA_MARK (little-endian host)");
        assert_eq!(m[24..28], [0x80, 0, 0, 5]);
        assert_eq!(m[32..36], [0xff; 4]);
    }
}
