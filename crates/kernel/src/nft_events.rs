//! The nf_tables notifications of a namespace (nfnetlink group `NFNLGRP_NFTABLES`): who changed
//! which table. A firewall reload (`nft flush ruleset`, firewalld, an iptables-nft restore)
//! wipes hns's tables along with everyone else's; with these notifications hnsd rebuilds them
//! at once instead of at its next periodic pass.
//!
//! The kernel reports each object a transaction changed (table, chain, rule, set, element),
//! then one `NEWGEN` message naming the process that committed it. The changes are kept
//! until that message, and a transaction is reported only if it touched an hns table; the
//! caller tells its own writes (its threads, its `nft` children: [`note_own_writer`]) from
//! others'.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use rtnetlink::packet_core::{NlaBuffer, NlasIterator};

use crate::error::{KernelError, Result};

/// `NFNLGRP_NFTABLES` (linux/netfilter/nfnetlink.h).
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
/// NEWSETELEM, DELSETELEM and DESTROYSETELEM: elements alone are not what a reconcile pass
/// compares (a pass checks tables, chains, rules and sets; elements are compared at start),
/// so a transaction that only adds or removes elements starts none. (The attach benchmark's
/// kernel floor writes elements into hns's table, as hns does.)
const ELEMENT_MESSAGES: [u16; 3] = [12, 14, 30];
/// In every object's message (table, chain, rule, set, element list, object, flowtable)
/// attribute 1 names its table.
const ATTR_TABLE: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;
/// A full apply of a table with thousands of elements notifies each element.
const RECEIVE_BUFFER: usize = 16 << 20;

/// One committed transaction that touched hns's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftChange {
    /// The hns tables it touched (family number, name).
    pub tables: BTreeSet<(u8, String)>,
    /// The thread that committed it (the kernel's thread ID, as `/proc/PID/task/TID` names it).
    pub pid: u32,
    /// Its command name.
    pub process: String,
}

#[derive(Debug)]
pub enum NftReceived {
    Changes(Vec<NftChange>),
    /// The kernel's queue overflowed: some changes went unseen.
    Lost,
}

/// A subscription to the nf_tables notifications of the namespace it was opened in.
pub struct NftEvents {
    socket: Socket,
    buf: Vec<u8>,
    /// hns tables the transaction in progress has touched so far.
    pending: BTreeSet<(u8, String)>,
}

impl NftEvents {
    /// Subscribes in the calling thread's namespace.
    pub fn open() -> Result<NftEvents> {
        let socket = crate::link_events::subscribe(NETLINK_NETFILTER, NFNLGRP_NFTABLES, RECEIVE_BUFFER, "nf_tables notifications")?;
        Ok(NftEvents { socket, buf: vec![0u8; 64 * 1024], pending: BTreeSet::new() })
    }

    /// Waits for the next notifications (blocking); returns the transactions they completed.
    pub fn recv(&mut self) -> Result<NftReceived> {
        let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.pending.clear();
                return Ok(NftReceived::Lost);
            }
            Err(e) => return Err(KernelError::io("read nf_tables notifications", "", e)),
        };
        Ok(NftReceived::Changes(parse(&self.buf[..n], &mut self.pending)))
    }
}

/// The transactions completed in one read; `pending` carries the tables of one whose
/// `NEWGEN` has not arrived yet from read to read.
pub fn parse(mut rest: &[u8], pending: &mut BTreeSet<(u8, String)>) -> Vec<NftChange> {
    let mut out = Vec::new();
    while rest.len() >= 16 {
        let len = (u32::from_ne_bytes(rest[..4].try_into().expect("4 bytes")) as usize).clamp(16, rest.len());
        let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
        // nfgenmsg: family, version, resource id.
        if kind >> 8 == NFNL_SUBSYS_NFTABLES && len >= 20 {
            let family = rest[16];
            let attrs = || NlasIterator::new(&rest[20..len]).filter_map(|a: std::result::Result<NlaBuffer<&[u8]>, _>| a.ok());
            if kind & 0xff == NFT_MSG_NEWGEN {
                if !pending.is_empty() {
                    let mut change = NftChange { tables: std::mem::take(pending), pid: 0, process: String::new() };
                    for a in attrs() {
                        match a.kind() & NLA_TYPE_MASK {
                            NFTA_GEN_PROC_PID => change.pid = a.value().get(..4).map_or(0, |v| u32::from_be_bytes(v.try_into().expect("4 bytes"))),
                            NFTA_GEN_PROC_NAME => change.process = c_string(a.value()),
                            _ => {}
                        }
                    }
                    out.push(change);
                }
            } else if !ELEMENT_MESSAGES.contains(&(kind & 0xff))
                && let Some(table) = attrs().find(|a| a.kind() & NLA_TYPE_MASK == ATTR_TABLE).map(|a| c_string(a.value()))
                && is_hns_table(&table)
            {
                pending.insert((family, table));
            }
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

fn c_string(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// hns's tables: `hns` and `hns_*` (ACL, load balancers, outbound NAT).
pub fn is_hns_table(name: &str) -> bool {
    name == crate::names::NFT_TABLE || name.strip_prefix(crate::names::NFT_TABLE).is_some_and(|r| r.starts_with('_'))
}

/// The `nft` processes this process started lately (their PIDs), so their transactions are
/// known as its own.
static OWN_CHILDREN: Mutex<VecDeque<u32>> = Mutex::new(VecDeque::new());
const OWN_CHILDREN_KEPT: usize = 64;

/// Notes a child process that writes nf_tables on this process's behalf.
pub fn note_own_writer(pid: u32) {
    let mut kids = OWN_CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    if kids.len() == OWN_CHILDREN_KEPT {
        kids.pop_front();
    }
    kids.push_back(pid);
}

/// Whether a transaction committed by `pid` (a thread ID) was this process's: one of its own
/// threads, or an `nft` it started ([`note_own_writer`]).
pub fn is_own_writer(pid: u32) -> bool {
    pid == std::process::id()
        || OWN_CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).contains(&pid)
        || std::path::Path::new(&format!("/proc/self/task/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(msg: u16, family: u8, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        crate::link_events::tests::netlink_message((NFNL_SUBSYS_NFTABLES << 8) | msg, &[family, 0, 0, 0], attrs)
    }

    fn s(x: &str) -> Vec<u8> {
        [x.as_bytes(), &[0]].concat()
    }

    #[test]
    fn a_transaction_is_reported_at_its_generation_message_with_the_hns_tables_it_touched() {
        let mut pending = BTreeSet::new();
        // A flush of the ruleset, read in two parts: a user's table, hns's main and ACL tables.
        let mut first = message(2, 1, &[(ATTR_TABLE, s("filter"))]);
        first.extend(message(2, 1, &[(ATTR_TABLE, s("hns"))]));
        assert!(parse(&first, &mut pending).is_empty(), "nothing is reported before the generation message");
        let mut second = message(8, 7, &[(ATTR_TABLE, s("hns_acl")), (4, 7u64.to_be_bytes().to_vec())]);
        second.extend(message(NFT_MSG_NEWGEN, 0, &[(1, 9u32.to_be_bytes().to_vec()), (NFTA_GEN_PROC_PID, 4242u32.to_be_bytes().to_vec()), (NFTA_GEN_PROC_NAME, s("nft"))]));
        let got = parse(&second, &mut pending);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].pid, 4242);
        assert_eq!(got[0].process, "nft");
        assert_eq!(got[0].tables.iter().cloned().collect::<Vec<_>>(), vec![(1, "hns".to_owned()), (7, "hns_acl".to_owned())]);
        assert!(pending.is_empty());
        // Nor is one that only adds or removes elements of hns's sets.
        let mut elements = message(12, 1, &[(ATTR_TABLE, s("hns"))]);
        elements.extend(message(14, 1, &[(ATTR_TABLE, s("hns"))]));
        elements.extend(message(NFT_MSG_NEWGEN, 0, &[(NFTA_GEN_PROC_PID, 1u32.to_be_bytes().to_vec())]));
        assert!(parse(&elements, &mut pending).is_empty());
        // A transaction on other tables only is not reported.
        let mut other = message(6, 1, &[(ATTR_TABLE, s("hnsx"))]);
        other.extend(message(NFT_MSG_NEWGEN, 0, &[(NFTA_GEN_PROC_PID, 1u32.to_be_bytes().to_vec())]));
        assert!(parse(&other, &mut pending).is_empty());
    }

    #[test]
    fn own_threads_and_noted_children_are_own_writers() {
        assert!(is_own_writer(std::process::id()));
        let tid = nix::unistd::gettid().as_raw() as u32;
        assert!(is_own_writer(tid), "this thread ({tid})");
        // PID 1 is never one of ours.
        assert!(!is_own_writer(1));
        note_own_writer(1);
        assert!(is_own_writer(1));
    }

    #[test]
    fn hns_tables_are_told_by_name() {
        for t in ["hns", "hns_acl", "hns_lb", "hns_onat"] {
            assert!(is_hns_table(t), "{t}");
        }
        for t in ["hnsx", "filter", "nat", "hn"] {
            assert!(!is_hns_table(t), "{t}");
        }
    }
}
