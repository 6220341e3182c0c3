//! Port-mapping elements written straight to the kernel over nfnetlink.
//!
//! A port mapping is one element in a DNAT map plus one in an allow set of the hns table
//! ([`crate::nft`]). Going through the `nft` binary costs ~3 ms per process, and ~0.35 ms per
//! change even through a long-lived `nft -i`; the kernel itself inserts an element in a few
//! microseconds. So element changes (and only they) are encoded here and sent as one nfnetlink
//! batch: the kernel applies a batch atomically, within the `sendmsg` call.
//!
//! Written by hand because no permissively licensed crate writes nftables set elements:
//! `rustables` is GPL-3 and `nftnl` links libnftnl (GPL-2); the rust-netlink family has no
//! nftables messages. The encoding is small: the table's maps and sets are created by `nft -f`
//! (whose output this module must match: see the tests, which read the elements back with nft).
//!
//! Layout of a concatenated key or value: each field is padded to 4 bytes (nftables registers
//! are 32-bit): `inet_proto` is 1 byte, `inet_service` 2 bytes in network order, addresses
//! their natural length.

use std::net::IpAddr;
use std::os::fd::AsFd;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::error::{KernelError, Result};
use crate::names::NFT_TABLE;
use crate::nft::Mapping;
use crate::nft_batch::{attr, nested};

// Constants of linux/netfilter/nfnetlink.h and nf_tables.h.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;

/// One element added to or removed from a set or map of the hns table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementChange {
    pub add: bool,
    pub set: &'static str,
    pub key: Vec<u8>,
    /// The mapped value (maps only; never sent on removal).
    pub value: Option<Vec<u8>>,
    /// The element in nft's notation, for error messages.
    pub text: String,
}

fn proto_field(m: &Mapping) -> [u8; 4] {
    [m.proto.number() as u8, 0, 0, 0]
}

fn port_field(port: u16) -> [u8; 4] {
    let p = port.to_be_bytes();
    [p[0], p[1], 0, 0]
}

fn addr_field(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn map_key(m: &Mapping) -> Vec<u8> {
    let mut k = m.host_ip.map(addr_field).unwrap_or_default();
    k.extend(proto_field(m));
    k.extend(port_field(m.host_port));
    k
}

fn map_value(m: &Mapping) -> Vec<u8> {
    let mut v = addr_field(m.container_ip);
    v.extend(port_field(m.container_port));
    v
}

fn allow_key(m: &Mapping) -> Vec<u8> {
    let mut k = addr_field(m.container_ip);
    k.extend(proto_field(m));
    k.extend(port_field(m.container_port));
    k
}

/// The element changes that add `add` and remove `remove`, given every mapping that stays
/// (`remaining`): an allow element shared with a remaining or added mapping is kept.
pub fn element_changes(add: &[Mapping], remove: &[Mapping], remaining: &[Mapping]) -> Vec<ElementChange> {
    let mut out = Vec::new();
    for m in remove {
        out.push(ElementChange { add: false, set: m.map_name(), key: map_key(m), value: None, text: m.map_key() });
        let shared = remaining.iter().chain(add.iter()).any(|o| allow_key(o) == allow_key(m));
        if !shared {
            out.push(ElementChange { add: false, set: m.allow_set(), key: allow_key(m), value: None, text: m.allow_element() });
        }
    }
    for m in add {
        out.push(ElementChange { add: true, set: m.map_name(), key: map_key(m), value: Some(map_value(m)), text: m.map_element() });
        out.push(ElementChange { add: true, set: m.allow_set(), key: allow_key(m), value: None, text: m.allow_element() });
    }
    // Removals first, then one run per set: one netlink message each (stable, so a set's
    // changes keep their order).
    out.sort_by_key(|c| (c.add, c.set));
    out
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Appends one netlink message: header, nfgenmsg, then what `fill` writes.
fn message(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend([0u8; 4]); // length, set below
    buf.extend(kind.to_ne_bytes());
    buf.extend(flags.to_ne_bytes());
    buf.extend(seq.to_ne_bytes());
    buf.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
    buf.extend([family, 0]); // nfgenmsg: family, version 0
    buf.extend(res_id.to_be_bytes());
    fill(buf);
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// Encodes `changes` as one nfnetlink batch, one message per run of changes with the same
/// operation and set. Returns the bytes and the sequence numbers that ask for an ack.
pub fn encode_batch(table: &str, changes: &[ElementChange], first_seq: u32) -> (Vec<u8>, Vec<u32>) {
    let mut buf = Vec::with_capacity(128 * changes.len() + 64);
    let mut seq = first_seq;
    message(&mut buf, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, |_| {});
    let mut acked = Vec::new();
    for run in changes.chunk_by(|a, b| a.add == b.add && a.set == b.set) {
        seq += 1;
        acked.push(seq);
        let (kind, flags) = if run[0].add {
            ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
        } else {
            ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
        };
        message(&mut buf, kind, flags, seq, NFPROTO_INET, 0, |b| {
            attr(b, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
            attr(b, NFTA_SET_ELEM_LIST_SET, &cstr(run[0].set));
            nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                for c in run {
                    nested(b, NFTA_LIST_ELEM, |b| {
                        nested(b, NFTA_SET_ELEM_KEY, |b| attr(b, NFTA_DATA_VALUE, &c.key));
                        if let (true, Some(v)) = (c.add, &c.value) {
                            nested(b, NFTA_SET_ELEM_DATA, |b| attr(b, NFTA_DATA_VALUE, v));
                        }
                    });
                }
            });
        });
    }
    seq += 1;
    message(&mut buf, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, |_| {});
    (buf, acked)
}

/// An nfnetlink socket that applies element changes to the hns table.
pub struct ElementWriter {
    socket: Socket,
    seq: u32,
}

impl ElementWriter {
    pub fn open() -> Result<ElementWriter> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| KernelError::io("open", "nfnetlink socket", e))?;
        socket.bind_auto().map_err(|e| KernelError::io("bind", "nfnetlink socket", e))?;
        // The kernel answers within sendmsg; the timeout only guards against a lost answer.
        nix::sys::socket::setsockopt(&socket.as_fd(), nix::sys::socket::sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::from(libc::timeval { tv_sec: 5, tv_usec: 0 }))
            .map_err(|e| KernelError::nix("configure", "nfnetlink socket", e))?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(|e| KernelError::io("connect", "nfnetlink socket", e))?;
        Ok(ElementWriter { socket, seq: 1 })
    }

    /// Applies `changes` in one transaction: all of them or, on error, none. The error names
    /// the element the kernel refused and its reason (ENOENT: the table or element is missing).
    pub fn apply(&mut self, changes: &[ElementChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let (batch, acked) = encode_batch(NFT_TABLE, changes, self.seq);
        self.seq = self.seq.wrapping_add(acked.len() as u32 + 2);
        self.socket.send(&batch, 0).map_err(|e| KernelError::io("send", "nft element batch", e))?;
        let mut pending = acked.len();
        let mut first_error: Option<KernelError> = None;
        let mut buf = vec![0u8; 65536];
        while pending > 0 {
            let n = self.socket.recv(&mut &mut buf[..], 0).map_err(|e| KernelError::io("read the answer to", "nft element batch", e))?;
            let mut at = 0;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
                let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
                if len < 16 || at + len > n {
                    break;
                }
                if kind == NLMSG_ERROR && acked.contains(&seq) && len >= 20 {
                    pending -= 1;
                    let code = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                    if code < 0 && first_error.is_none() {
                        first_error = Some(refusal(changes, &acked, seq, -code));
                    }
                }
                at += len.next_multiple_of(4);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Names the run of changes the kernel refused (one message per run, see [`encode_batch`]).
fn refusal(changes: &[ElementChange], acked: &[u32], seq: u32, errno: i32) -> KernelError {
    let at = acked.iter().position(|s| *s == seq).unwrap_or(0);
    let run = changes.chunk_by(|a, b| a.add == b.add && a.set == b.set).nth(at).unwrap_or(changes);
    let op = if run[0].add { "add element to" } else { "delete element from" };
    let elements: Vec<&str> = run.iter().map(|c| c.text.as_str()).collect();
    let reason = std::io::Error::from_raw_os_error(errno);
    KernelError { op: format!("{op} inet {NFT_TABLE} {}", run[0].set), object: format!("{{ {} }}", elements.join(", ")), reason: reason.to_string(), errno: Some(errno) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::Proto;

    fn m(port: u16, host_ip: Option<&str>, ip: &str, cport: u16) -> Mapping {
        Mapping { proto: Proto::Tcp, host_ip: host_ip.map(|h| h.parse().unwrap()), host_port: port, container_ip: ip.parse().unwrap(), container_port: cport }
    }

    #[test]
    fn fields_are_padded_to_registers() {
        let c = element_changes(&[m(8080, None, "172.20.0.2", 80)], &[], &[]);
        assert_eq!(c[0].set, "pm4");
        assert_eq!(c[0].key, vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(c[0].value.as_deref(), Some(&[172, 20, 0, 2, 0, 80, 0, 0][..]));
        assert_eq!(c[1].set, "pm_allow4");
        assert_eq!(c[1].key, vec![172, 20, 0, 2, 6, 0, 0, 0, 0, 80, 0, 0]);
        let c = element_changes(&[m(80, Some("10.0.0.1"), "fd00::2", 8080)], &[], &[]);
        assert_eq!((c[0].set, c[0].key.len(), c[0].value.as_ref().map(Vec::len)), ("pm6ip", 4 + 4 + 4, Some(16 + 4)));
    }

    #[test]
    fn a_shared_allow_element_stays() {
        let a = m(8080, None, "172.20.0.2", 80);
        let b = m(8081, None, "172.20.0.2", 80);
        let c = element_changes(&[], &[a], &[b]);
        assert_eq!(c.len(), 1, "only the map element goes: {c:?}");
        assert_eq!(element_changes(&[], &[a], &[]).len(), 2);
    }

    #[test]
    fn batch_groups_runs_and_asks_acks_for_them_only() {
        let c = element_changes(&[m(1, None, "172.20.0.2", 80), m(2, None, "172.20.0.3", 80)], &[], &[]);
        let (bytes, acked) = encode_batch("hns", &c, 7);
        // begin, pm4 (two elements), pm_allow4 (two elements), end.
        assert_eq!(acked, vec![8, 9]);
        let first_len = u32::from_ne_bytes(bytes[0..4].try_into().unwrap());
        assert_eq!(first_len, 20, "batch begin is a bare header");
        assert_eq!(bytes.len() % 4, 0);
    }
}
