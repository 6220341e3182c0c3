//! A small nftables transaction writer over nfnetlink: tables, chains, rules (a typed subset
//! of the expressions), anonymous and named sets and map elements, all in ONE batch that the
//! kernel applies atomically within the `sendmsg` call.
//!
//! Why: `nft -f` builds a cache of the table before it applies anything; with thousands of
//! chains (one per endpoint and stage in the ACL tables) that listing costs seconds, even for a
//! three-line transaction (nft 1.0.6: `add rule` lists every set of the table, an element of a
//! verdict map lists every chain and rule). The kernel applies the same change in microseconds.
//! Written by hand for the reasons given in [`crate::nft_elements`]: no permissively licensed
//! crate encodes nf_tables messages (`rustables` is GPL-3, `nftnl` links the GPL libnftnl).
//! The encodings follow what `nft --debug=netlink` emits for the same rules, so `nft list`
//! shows what this module wrote in nft's own notation.
//!
//! Use: build a [`Batch`] (messages are encoded as they are added), then [`apply`] it. Every
//! operation names its family and table; chains are referred to by name. Operations that may
//! fail on the current state (deleting a missing chain or element) abort the whole batch, so
//! callers make them idempotent the nft way: create (without "exclusive") before deleting.
//!
//! ```ignore
//! let mut b = Batch::new();
//! b.add_chain(Family::Bridge, "t", "c");
//! b.flush_chain(Family::Bridge, "t", "c");
//! b.add_rule(Family::Bridge, "t", "c", &[Expr::meta(MetaKey::L4Proto), Expr::cmp_eq(vec![6]), Expr::verdict(Verdict::Drop)]);
//! b.add_element(Family::Bridge, "t", "m", &ifname_key("veth0"), Some(&Verdict::Jump("c".into())));
//! nft_batch::apply(&b)?;
//! ```

use std::os::fd::AsFd;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::error::{KernelError, Result};

// Constants of linux/netfilter/nfnetlink.h and nf_tables.h (UAPI).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_DESTROYSET: u16 = 29;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// libnftnl's udata type of a comment (`NFTNL_UDATA_SET_ELEM_COMMENT`, as for rules).
const UDATA_COMMENT: u8 = 0;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_SET_FIELD_LEN: u16 = 1;
const NFTA_SET_EXPR: u16 = 17;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
const BYTEORDER_HOST_ENDIAN: u32 = 1;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_CONCAT: u32 = 0x80;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_SET_ELEM_EXPR: u16 = 7;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;

/// The address family of a table (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet = 1,
    Ip = 2,
    Bridge = 7,
    Ip6 = 10,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Bridge => "bridge",
            Family::Ip6 => "ip6",
        }
    }
}

/// A verdict: the end of a rule, or the value of a verdict-map element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    pub fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }
}

/// `meta` keys (`NFT_META_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// skb->protocol: the ethertype, 2 bytes, network order.
    Protocol = 1,
    Mark = 3,
    /// The input interface's index (4 bytes, host order; 0 in the output hook).
    Iif = 4,
    IifName = 6,
    OifName = 7,
    /// The hook's family (`NFPROTO_IPV4` 2, `NFPROTO_IPV6` 10), 1 byte. Not usable in bridge
    /// tables (always `NFPROTO_BRIDGE` there): use `Protocol`.
    NfProto = 15,
    /// The layer-4 protocol number, 1 byte.
    L4Proto = 16,
}

/// Header a `payload` expression loads from (`NFT_PAYLOAD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Link = 0,
    Network = 1,
    Transport = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
    Lt = 2,
    Lte = 3,
    Gt = 4,
    Gte = 5,
}

/// An anonymous set bound to one rule (`{ a, b-c }` in nft): constant, deleted with the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonSet {
    /// nft's datatype number (display only: `nft list` prints the elements with it).
    pub key_type: u32,
    /// Bytes of a key, as many as the expression before the lookup loads.
    pub key_len: u32,
    /// Inclusive ranges `(first, last)` of keys (exact values are `(v, v)`), keys in network
    /// order. With `interval` false every range must be a single value.
    pub ranges: Vec<(Vec<u8>, Vec<u8>)>,
    pub interval: bool,
}

/// The expressions this writer encodes (all load into and compare register 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Loads a meta key into register 1.
    Meta(MetaKey),
    /// Sets a meta key (mark) from register 1.
    MetaSet(MetaKey),
    /// Loads the conntrack state bitmask (4 bytes, host order) into register 1.
    CtState,
    /// Loads `len` bytes at `offset` of a header into register 1.
    Payload { base: Base, offset: u32, len: u32 },
    /// Register 1 = (register 1 & mask) ^ xor (both as long as the operand).
    Bitwise { mask: Vec<u8>, xor: Vec<u8> },
    /// Compares register 1; the rule stops here when false.
    Cmp(CmpOp, Vec<u8>),
    /// Register 1 is (or with `invert`, is not) in an anonymous set.
    Lookup { set: AnonSet, invert: bool },
    /// Register 1 looked up in a named verdict map of the same table: its verdict applies.
    Vmap(String),
    /// The key at `sreg` (a concatenation: see [`Expr::Load`]) looked up in a named verdict
    /// map of the same table: its verdict applies; no match, the rule stops.
    VmapAt { map: String, sreg: u32 },
    /// The rule's verdict.
    Verdict(Verdict),
    /// Counts the packets and bytes that reach it (starts at zero).
    Counter,
    /// Loads into a given register. Registers are numbered as the kernel's 32-bit ones
    /// (`NFT_REG32_00` = 8, each 4 bytes): a concatenation is values in consecutive registers,
    /// each padded to 4 bytes.
    Load { from: Load, reg: u32 },
    /// `numgen random mod modulus` into `reg` (a host-order u32 in 0..modulus).
    Numgen { modulus: u32, reg: u32 },
    /// `jhash` of `len` bytes from `sreg`, `mod modulus`, into `dreg` (host-order u32).
    Jhash { sreg: u32, len: u32, modulus: u32, seed: u32, dreg: u32 },
    /// The key at `sreg` looked up in a named data map of the same table; its value goes to
    /// `dreg` (no match: the rule stops).
    MapLookup { map: String, sreg: u32, dreg: u32 },
    /// Sets the connection mark from `sreg`.
    CtSetMark { sreg: u32 },
    /// Destination NAT to the address at `addr_reg` and the port at `proto_reg`.
    Dnat { v6: bool, addr_reg: u32, proto_reg: u32 },
}

/// What an [`Expr::Load`] loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Load {
    Meta(MetaKey),
    Payload { base: Base, offset: u32, len: u32 },
    CtMark,
}

/// The first 32-bit data register (`NFT_REG32_00`, the same storage as `NFT_REG_1`).
pub const REG32_00: u32 = 8;

impl Expr {
    pub fn cmp_eq(data: Vec<u8>) -> Expr {
        Expr::Cmp(CmpOp::Eq, data)
    }
}

/// A netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// The key of an `ifname` map or set: the name, zero-padded to IFNAMSIZ.
pub fn ifname_key(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.resize(16, 0);
    k
}

/// One transaction under construction.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    /// What each message does (index = its sequence number - 1), for error messages.
    what: Vec<String>,
    next_set_id: u32,
}

/// Appends a netlink attribute (type, payload, padding to 4 bytes).
pub(crate) fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend((len as u16).to_ne_bytes());
    buf.extend(kind.to_ne_bytes());
    buf.extend(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn attr_str(buf: &mut Vec<u8>, kind: u16, s: &str) {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    attr(buf, kind, &v);
}

/// nf_tables integers are big-endian.
fn attr_u32(buf: &mut Vec<u8>, kind: u16, v: u32) {
    attr(buf, kind, &v.to_be_bytes());
}

/// Appends a nested attribute whose content `fill` writes.
pub(crate) fn nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend([0u8; 4]);
    fill(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

fn data_value(buf: &mut Vec<u8>, kind: u16, v: &[u8]) {
    nested(buf, kind, |b| attr(b, NFTA_DATA_VALUE, v));
}

fn data_verdict(buf: &mut Vec<u8>, kind: u16, v: &Verdict) {
    nested(buf, kind, |b| {
        nested(b, NFTA_DATA_VERDICT, |b| {
            attr(b, NFTA_VERDICT_CODE, &v.code().to_be_bytes());
            if let Verdict::Jump(c) | Verdict::Goto(c) = v {
                attr_str(b, NFTA_VERDICT_CHAIN, c);
            }
        })
    });
}

fn expr(buf: &mut Vec<u8>, name: &str, fill: impl FnOnce(&mut Vec<u8>)) {
    nested(buf, NFTA_LIST_ELEM, |b| {
        attr_str(b, NFTA_EXPR_NAME, name);
        nested(b, NFTA_EXPR_DATA, fill);
    });
}

/// The elements of an interval set as the kernel takes them (and nft sends them): a start
/// element per range and an "interval end" element one past its end, ranges merged when they
/// overlap or touch, plus an end element at zero when no range starts there.
fn interval_elements(set: &AnonSet) -> Vec<(Vec<u8>, bool)> {
    let mut ranges = set.ranges.clone();
    ranges.sort();
    let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (a, b) in ranges {
        if let Some(last) = merged.last_mut()
            && (a <= last.1 || successor(&last.1).is_some_and(|n| n == a))
        {
            if b > last.1 {
                last.1 = b;
            }
            continue;
        }
        merged.push((a, b));
    }
    let zero = vec![0u8; set.key_len as usize];
    let mut out = Vec::new();
    if merged.first().is_some_and(|(a, _)| *a != zero) {
        out.push((zero, true));
    }
    for (a, b) in merged {
        out.push((a, false));
        if let Some(n) = successor(&b) {
            out.push((n, true));
        }
    }
    out
}

/// The big-endian number one greater, or none at the maximum.
fn successor(v: &[u8]) -> Option<Vec<u8>> {
    let mut n = v.to_vec();
    for i in (0..n.len()).rev() {
        if n[i] == 0xff {
            n[i] = 0;
        } else {
            n[i] += 1;
            return Some(n);
        }
    }
    None
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Number of messages (operations and anonymous sets) so far.
    pub fn len(&self) -> usize {
        self.what.len()
    }

    pub fn is_empty(&self) -> bool {
        self.what.is_empty()
    }

    /// Appends one message: netlink header, nfgenmsg, then what `fill` writes.
    fn message(&mut self, kind: u16, flags: u16, family: Family, what: String, fill: impl FnOnce(&mut Vec<u8>)) {
        self.what.push(what);
        let seq = self.what.len() as u32;
        let buf = &mut self.buf;
        let start = buf.len();
        buf.extend([0u8; 4]); // length, set below
        buf.extend(((NFNL_SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
        buf.extend((NLM_F_REQUEST | flags).to_ne_bytes());
        buf.extend(seq.to_ne_bytes());
        buf.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
        buf.extend([family as u8, 0, 0, 0]); // nfgenmsg: family, version 0, res_id 0
        fill(buf);
        let len = (buf.len() - start) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Creates a table (nothing if it exists).
    pub fn add_table(&mut self, fam: Family, table: &str) {
        self.message(NFT_MSG_NEWTABLE, NLM_F_CREATE, fam, format!("add table {} {table}", fam.name()), |b| attr_str(b, NFTA_TABLE_NAME, table));
    }

    /// Deletes a table and everything in it (fails if it is missing: add it first).
    pub fn delete_table(&mut self, fam: Family, table: &str) {
        self.message(NFT_MSG_DELTABLE, 0, fam, format!("delete table {} {table}", fam.name()), |b| attr_str(b, NFTA_TABLE_NAME, table));
    }

    /// Creates a regular chain (nothing if it exists).
    pub fn add_chain(&mut self, fam: Family, table: &str, chain: &str) {
        self.message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, fam, format!("add chain {} {table} {chain}", fam.name()), |b| {
            attr_str(b, NFTA_CHAIN_TABLE, table);
            attr_str(b, NFTA_CHAIN_NAME, chain);
        });
    }

    /// Creates a base chain of type filter with policy accept.
    pub fn add_base_chain(&mut self, fam: Family, table: &str, chain: &str, hook: Hook, priority: i32) {
        self.message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, fam, format!("add chain {} {table} {chain} (hook {hook:?} priority {priority})", fam.name()), |b| {
            attr_str(b, NFTA_CHAIN_TABLE, table);
            attr_str(b, NFTA_CHAIN_NAME, chain);
            nested(b, NFTA_CHAIN_HOOK, |b| {
                attr_u32(b, NFTA_HOOK_HOOKNUM, hook as u32);
                attr(b, NFTA_HOOK_PRIORITY, &priority.to_be_bytes());
            });
            attr_u32(b, NFTA_CHAIN_POLICY, 1);
            attr_str(b, NFTA_CHAIN_TYPE, "filter");
        });
    }

    /// Deletes a chain (fails if it is missing or still referenced).
    pub fn delete_chain(&mut self, fam: Family, table: &str, chain: &str) {
        self.message(NFT_MSG_DELCHAIN, 0, fam, format!("delete chain {} {table} {chain}", fam.name()), |b| {
            attr_str(b, NFTA_CHAIN_TABLE, table);
            attr_str(b, NFTA_CHAIN_NAME, chain);
        });
    }

    /// Deletes every rule of a chain (fails if the chain is missing).
    pub fn flush_chain(&mut self, fam: Family, table: &str, chain: &str) {
        self.message(NFT_MSG_DELRULE, 0, fam, format!("flush chain {} {table} {chain}", fam.name()), |b| {
            attr_str(b, NFTA_RULE_TABLE, table);
            attr_str(b, NFTA_RULE_CHAIN, chain);
        });
    }

    /// Creates a named map from `ifname` keys to verdicts (nothing if it exists).
    pub fn add_ifname_vmap(&mut self, fam: Family, table: &str, name: &str) {
        self.add_ifname_keyed(fam, table, name, true);
    }

    /// Creates a named set of interface names (nothing if an equal one exists).
    pub fn add_ifname_set(&mut self, fam: Family, table: &str, name: &str) {
        self.add_ifname_keyed(fam, table, name, false);
    }

    fn add_ifname_keyed(&mut self, fam: Family, table: &str, name: &str, verdicts: bool) {
        // The kernel wants an ID for every new set.
        self.next_set_id += 1;
        let id = self.next_set_id;
        let what = if verdicts { "map" } else { "set" };
        self.message(NFT_MSG_NEWSET, NLM_F_CREATE, fam, format!("add {what} {} {table} {name}", fam.name()), |b| {
            attr_str(b, NFTA_SET_TABLE, table);
            attr_str(b, NFTA_SET_NAME, name);
            attr_u32(b, NFTA_SET_KEY_TYPE, DT_IFNAME);
            attr_u32(b, NFTA_SET_KEY_LEN, 16);
            if verdicts {
                attr_u32(b, NFTA_SET_FLAGS, NFT_SET_MAP);
                attr_u32(b, NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
                attr_u32(b, NFTA_SET_DATA_LEN, 0);
            }
            attr_u32(b, NFTA_SET_ID, id);
            // nft's own note (libnftnl "udata": type, length, value) that the keys are in host
            // byte order, as nft writes it for ifname keys; without it `nft list` prints
            // the names empty.
            let mut udata = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
            udata.extend(BYTEORDER_HOST_ENDIAN.to_ne_bytes());
            attr(b, NFTA_SET_USERDATA, &udata);
        });
    }

    /// Appends a rule at the end of a chain.
    pub fn add_rule(&mut self, fam: Family, table: &str, chain: &str, exprs: &[Expr]) {
        // Anonymous sets first: the rule refers to them by their ID in this batch.
        let mut ids = Vec::new();
        for e in exprs {
            if let Expr::Lookup { set, .. } = e {
                self.next_set_id += 1;
                let id = self.next_set_id;
                ids.push(id);
                self.anon_set(fam, table, id, set);
            }
        }
        let mut ids = ids.into_iter();
        self.message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, fam, format!("add rule {} {table} {chain} {exprs:?}", fam.name()), |b| {
            attr_str(b, NFTA_RULE_TABLE, table);
            attr_str(b, NFTA_RULE_CHAIN, chain);
            nested(b, NFTA_RULE_EXPRESSIONS, |b| {
                for e in exprs {
                    encode_expr(b, e, &mut ids);
                }
            });
        });
    }

    fn anon_set(&mut self, fam: Family, table: &str, id: u32, set: &AnonSet) {
        let elements: Vec<(Vec<u8>, bool)> = if set.interval { interval_elements(set) } else { set.ranges.iter().map(|(a, _)| (a.clone(), false)).collect() };
        let flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | if set.interval { NFT_SET_INTERVAL } else { 0 };
        self.message(NFT_MSG_NEWSET, NLM_F_CREATE, fam, format!("add anonymous set {} {table} {:?}", fam.name(), set.ranges), |b| {
            attr_str(b, NFTA_SET_TABLE, table);
            attr_str(b, NFTA_SET_NAME, "__set%d");
            attr_u32(b, NFTA_SET_FLAGS, flags);
            attr_u32(b, NFTA_SET_KEY_TYPE, set.key_type);
            attr_u32(b, NFTA_SET_KEY_LEN, set.key_len);
            attr_u32(b, NFTA_SET_ID, id);
            nested(b, NFTA_SET_DESC, |b| attr_u32(b, NFTA_SET_DESC_SIZE, elements.len() as u32));
        });
        self.message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, fam, format!("add elements to anonymous set {} {table} {:?}", fam.name(), set.ranges), |b| {
            attr_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
            attr_str(b, NFTA_SET_ELEM_LIST_SET, "__set%d");
            attr_u32(b, NFTA_SET_ELEM_LIST_SET_ID, id);
            nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                for (key, end) in &elements {
                    nested(b, NFTA_LIST_ELEM, |b| {
                        data_value(b, NFTA_SET_ELEM_KEY, key);
                        if *end {
                            attr_u32(b, NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
                        }
                    });
                }
            });
        });
    }

    /// Adds an element to a named set or map (nothing if an equal one exists; a different
    /// value for the same key fails).
    pub fn add_element(&mut self, fam: Family, table: &str, set: &str, key: &[u8], verdict: Option<&Verdict>) {
        self.add_one_element(fam, table, set, key, format!("{} : {verdict:?}", printable(key)), |b| {
            if let Some(v) = verdict {
                data_verdict(b, NFTA_SET_ELEM_DATA, v);
            }
        });
    }

    /// Adds a set element with a comment (nothing if the element exists, whatever its
    /// comment: to change a comment, delete the element first in the same batch).
    pub fn add_commented_element(&mut self, fam: Family, table: &str, set: &str, key: &[u8], comment: &str) {
        self.add_one_element(fam, table, set, key, format!("{} comment {comment:?}", printable(key)), |b| attr(b, NFTA_SET_ELEM_USERDATA, &comment_udata(comment)));
    }

    /// Adds an element with a data value (`None`: a set element) to a named set or map
    /// (nothing if an equal one exists; another value for the same key fails: delete it
    /// first, in the same batch).
    pub fn add_data_element(&mut self, fam: Family, table: &str, set: &str, key: &[u8], data: Option<&[u8]>) {
        self.add_one_element(fam, table, set, key, format!("{key:02x?} : {data:02x?}"), |b| {
            if let Some(d) = data {
                data_value(b, NFTA_SET_ELEM_DATA, d);
            }
        });
    }

    /// One `NEWSETELEM` message of one element: its key, then what `rest` adds (its data, its
    /// comment). `shown` is the element as error messages name it.
    fn add_one_element(&mut self, fam: Family, table: &str, set: &str, key: &[u8], shown: String, rest: impl FnOnce(&mut Vec<u8>)) {
        self.message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, fam, format!("add element {} {table} {set} {{ {shown} }}", fam.name()), |b| {
            attr_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
            attr_str(b, NFTA_SET_ELEM_LIST_SET, set);
            nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                nested(b, NFTA_LIST_ELEM, |b| {
                    data_value(b, NFTA_SET_ELEM_KEY, key);
                    rest(b);
                });
            });
        });
    }

    /// Deletes an element of a named set or map (fails if it is missing).
    pub fn delete_element(&mut self, fam: Family, table: &str, set: &str, key: &[u8]) {
        self.message(NFT_MSG_DELSETELEM, 0, fam, format!("delete element {} {table} {set} {{ {} }}", fam.name(), printable(key)), |b| {
            attr_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
            attr_str(b, NFTA_SET_ELEM_LIST_SET, set);
            nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| nested(b, NFTA_LIST_ELEM, |b| data_value(b, NFTA_SET_ELEM_KEY, key)));
        });
    }

    /// Creates a named verdict map keyed on a concatenation of `fields` (nft datatype number,
    /// bytes), each field an interval, with a counter in every element (nothing if an equal
    /// map exists). `udata` is nft's own description of the key (see the caller), so that
    /// `nft list` prints the elements as nft would.
    pub fn add_concat_vmap(&mut self, fam: Family, table: &str, name: &str, fields: &[(u32, u32)], udata: &[u8]) {
        self.next_set_id += 1;
        let id = self.next_set_id;
        // nft's key type of a concatenation: the field types, 6 bits each, first field highest.
        let key_type = fields.iter().fold(0u32, |t, (dt, _)| (t << 6) | dt);
        let key_len: u32 = fields.iter().map(|(_, len)| len.next_multiple_of(4)).sum();
        self.message(NFT_MSG_NEWSET, NLM_F_CREATE, fam, format!("add map {} {table} {name}", fam.name()), |b| {
            attr_str(b, NFTA_SET_TABLE, table);
            attr_str(b, NFTA_SET_NAME, name);
            attr_u32(b, NFTA_SET_FLAGS, NFT_SET_MAP | NFT_SET_INTERVAL | NFT_SET_CONCAT);
            attr_u32(b, NFTA_SET_KEY_TYPE, key_type);
            attr_u32(b, NFTA_SET_KEY_LEN, key_len);
            attr_u32(b, NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
            attr_u32(b, NFTA_SET_DATA_LEN, 0);
            attr_u32(b, NFTA_SET_ID, id);
            nested(b, NFTA_SET_DESC, |b| {
                nested(b, NFTA_SET_DESC_CONCAT, |b| {
                    for (_, len) in fields {
                        nested(b, NFTA_LIST_ELEM, |b| attr_u32(b, NFTA_SET_FIELD_LEN, *len));
                    }
                })
            });
            if !udata.is_empty() {
                attr(b, NFTA_SET_USERDATA, udata);
            }
            nested(b, NFTA_SET_EXPR, |b| {
                attr_str(b, NFTA_EXPR_NAME, "counter");
                nested(b, NFTA_EXPR_DATA, |_| {});
            });
        });
    }

    /// Deletes a named set or map (fails if it is missing or a rule still uses it).
    pub fn delete_set(&mut self, fam: Family, table: &str, name: &str) {
        self.message(NFT_MSG_DELSET, 0, fam, format!("delete set {} {table} {name}", fam.name()), |b| {
            attr_str(b, NFTA_SET_TABLE, table);
            attr_str(b, NFTA_SET_NAME, name);
        });
    }

    /// Deletes a map made by [`Batch::add_concat_vmap`] if it exists, nothing if it does not:
    /// one message where kernels since 6.3 have it ([`destroy_supported`]), else a create and
    /// a delete.
    pub fn destroy_concat_vmap(&mut self, fam: Family, table: &str, name: &str, fields: &[(u32, u32)], udata: &[u8]) {
        if destroy_supported() {
            self.message(NFT_MSG_DESTROYSET, 0, fam, format!("destroy set {} {table} {name}", fam.name()), |b| {
                attr_str(b, NFTA_SET_TABLE, table);
                attr_str(b, NFTA_SET_NAME, name);
            });
        } else {
            self.add_concat_vmap(fam, table, name, fields, udata);
            self.delete_set(fam, table, name);
        }
    }

    /// Deletes every element of a named set or map (fails if it is missing).
    pub fn flush_set(&mut self, fam: Family, table: &str, name: &str) {
        self.message(NFT_MSG_DELSETELEM, 0, fam, format!("flush set {} {table} {name}", fam.name()), |b| {
            attr_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
            attr_str(b, NFTA_SET_ELEM_LIST_SET, name);
        });
    }

    /// Adds interval elements (first and last key, inclusive) with verdicts and comments to a
    /// map made by [`Batch::add_concat_vmap`], in one message.
    pub fn add_range_elements(&mut self, fam: Family, table: &str, set: &str, elements: &[RangeElement]) {
        if elements.is_empty() {
            return;
        }
        self.message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, fam, format!("add {} elements to {} {table} {set}", elements.len(), fam.name()), |b| {
            attr_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
            attr_str(b, NFTA_SET_ELEM_LIST_SET, set);
            nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                for e in elements {
                    nested(b, NFTA_LIST_ELEM, |b| {
                        data_value(b, NFTA_SET_ELEM_KEY, &e.key);
                        data_value(b, NFTA_SET_ELEM_KEY_END, &e.key_end);
                        data_verdict(b, NFTA_SET_ELEM_DATA, &e.verdict);
                        if !e.comment.is_empty() {
                            attr(b, NFTA_SET_ELEM_USERDATA, &comment_udata(&e.comment));
                        }
                    });
                }
            });
        });
    }

    /// Deletes elements of an interval map made by [`Batch::add_concat_vmap`], in one message
    /// (fails as a whole if one is missing): the kernel finds the map by name once per
    /// message, walking the table's list of sets, so one message per element would pay that
    /// walk for each.
    pub fn delete_range_elements(&mut self, fam: Family, table: &str, set: &str, elements: &[RangeElement]) {
        if elements.is_empty() {
            return;
        }
        self.message(NFT_MSG_DELSETELEM, 0, fam, format!("delete {} elements from {} {table} {set}", elements.len(), fam.name()), |b| {
            attr_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
            attr_str(b, NFTA_SET_ELEM_LIST_SET, set);
            nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                for e in elements {
                    nested(b, NFTA_LIST_ELEM, |b| {
                        data_value(b, NFTA_SET_ELEM_KEY, &e.key);
                        data_value(b, NFTA_SET_ELEM_KEY_END, &e.key_end);
                    });
                }
            });
        });
    }

    /// The whole batch: begin marker, the messages, end marker.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len() + 40);
        let marker = |out: &mut Vec<u8>, kind: u16, seq: u32| {
            out.extend(20u32.to_ne_bytes());
            out.extend(kind.to_ne_bytes());
            out.extend(NLM_F_REQUEST.to_ne_bytes());
            out.extend(seq.to_ne_bytes());
            out.extend(0u32.to_ne_bytes());
            out.extend([0u8, 0]);
            out.extend(NFNL_SUBSYS_NFTABLES.to_be_bytes());
        };
        marker(&mut out, NFNL_MSG_BATCH_BEGIN, 0);
        out.extend(&self.buf);
        marker(&mut out, NFNL_MSG_BATCH_END, self.what.len() as u32 + 1);
        out
    }
}

/// An element of an interval map: its first and last key (inclusive), its verdict and a
/// comment (empty: none), the way `nft` stores `comment "..."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeElement {
    pub key: Vec<u8>,
    pub key_end: Vec<u8>,
    pub verdict: Verdict,
    pub comment: String,
}

/// An element as the kernel lists it: keys, verdict code (`Verdict::code`), comment and
/// counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedElement {
    pub key: Vec<u8>,
    pub key_end: Vec<u8>,
    pub verdict: Option<i32>,
    /// The chain of a `jump` or `goto` verdict.
    pub chain: String,
    pub comment: String,
    pub packets: u64,
    pub bytes: u64,
}

impl RangeElement {
    /// Whether a listed element is this one (keys, verdict, comment; not the counter).
    pub fn same_as(&self, l: &ListedElement) -> bool {
        self.key == l.key && self.key_end == l.key_end && Some(self.verdict.code()) == l.verdict && self.comment == l.comment
    }
}

/// nft's datatype number of `ifname` (display only).
const DT_IFNAME: u32 = 41;
/// nft's datatype numbers for the keys of anonymous sets (display only).
pub const DT_IPADDR: u32 = 7;
pub const DT_IP6ADDR: u32 = 8;
pub const DT_ETHERTYPE: u32 = 10;
pub const DT_INET_PROTOCOL: u32 = 12;
pub const DT_INET_SERVICE: u32 = 13;

fn printable(key: &[u8]) -> String {
    let s: String = key.iter().take_while(|b| **b != 0).map(|b| *b as char).collect();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic()) { format!("{s:?}") } else { format!("{key:02x?}") }
}

fn encode_expr(b: &mut Vec<u8>, e: &Expr, set_ids: &mut impl Iterator<Item = u32>) {
    const NFTA_META_DREG: u16 = 1;
    const NFTA_META_KEY: u16 = 2;
    const NFTA_META_SREG: u16 = 3;
    const NFTA_CT_DREG: u16 = 1;
    const NFTA_CT_KEY: u16 = 2;
    const NFTA_PAYLOAD_DREG: u16 = 1;
    const NFTA_PAYLOAD_BASE: u16 = 2;
    const NFTA_PAYLOAD_OFFSET: u16 = 3;
    const NFTA_PAYLOAD_LEN: u16 = 4;
    const NFTA_BITWISE_SREG: u16 = 1;
    const NFTA_BITWISE_DREG: u16 = 2;
    const NFTA_BITWISE_LEN: u16 = 3;
    const NFTA_BITWISE_MASK: u16 = 4;
    const NFTA_BITWISE_XOR: u16 = 5;
    const NFTA_CMP_SREG: u16 = 1;
    const NFTA_CMP_OP: u16 = 2;
    const NFTA_CMP_DATA: u16 = 3;
    const NFTA_LOOKUP_SET: u16 = 1;
    const NFTA_LOOKUP_SREG: u16 = 2;
    const NFTA_LOOKUP_DREG: u16 = 3;
    const NFTA_LOOKUP_SET_ID: u16 = 4;
    const NFTA_LOOKUP_FLAGS: u16 = 5;
    const NFT_LOOKUP_F_INV: u32 = 1;
    const NFTA_IMMEDIATE_DREG: u16 = 1;
    const NFTA_IMMEDIATE_DATA: u16 = 2;
    const NFT_CT_STATE: u32 = 0;
    const NFT_CT_MARK: u32 = 3;
    const NFTA_CT_SREG: u16 = 4;
    const NFTA_NG_DREG: u16 = 1;
    const NFTA_NG_MODULUS: u16 = 2;
    const NFTA_NG_TYPE: u16 = 3;
    const NFT_NG_RANDOM: u32 = 1;
    const NFTA_HASH_SREG: u16 = 1;
    const NFTA_HASH_DREG: u16 = 2;
    const NFTA_HASH_LEN: u16 = 3;
    const NFTA_HASH_MODULUS: u16 = 4;
    const NFTA_HASH_SEED: u16 = 5;
    const NFTA_HASH_TYPE: u16 = 7;
    const NFT_HASH_JENKINS: u32 = 0;
    const NFTA_NAT_TYPE: u16 = 1;
    const NFTA_NAT_FAMILY: u16 = 2;
    const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
    const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
    const NFT_NAT_DNAT: u32 = 1;
    match e {
        Expr::Meta(k) => expr(b, "meta", |b| {
            attr_u32(b, NFTA_META_KEY, *k as u32);
            attr_u32(b, NFTA_META_DREG, NFT_REG_1);
        }),
        Expr::MetaSet(k) => expr(b, "meta", |b| {
            attr_u32(b, NFTA_META_KEY, *k as u32);
            attr_u32(b, NFTA_META_SREG, NFT_REG_1);
        }),
        Expr::CtState => expr(b, "ct", |b| {
            attr_u32(b, NFTA_CT_KEY, NFT_CT_STATE);
            attr_u32(b, NFTA_CT_DREG, NFT_REG_1);
        }),
        Expr::Payload { base, offset, len } => expr(b, "payload", |b| {
            attr_u32(b, NFTA_PAYLOAD_DREG, NFT_REG_1);
            attr_u32(b, NFTA_PAYLOAD_BASE, *base as u32);
            attr_u32(b, NFTA_PAYLOAD_OFFSET, *offset);
            attr_u32(b, NFTA_PAYLOAD_LEN, *len);
        }),
        Expr::Bitwise { mask, xor } => expr(b, "bitwise", |b| {
            attr_u32(b, NFTA_BITWISE_SREG, NFT_REG_1);
            attr_u32(b, NFTA_BITWISE_DREG, NFT_REG_1);
            attr_u32(b, NFTA_BITWISE_LEN, mask.len() as u32);
            data_value(b, NFTA_BITWISE_MASK, mask);
            data_value(b, NFTA_BITWISE_XOR, xor);
        }),
        Expr::Cmp(op, data) => expr(b, "cmp", |b| {
            attr_u32(b, NFTA_CMP_SREG, NFT_REG_1);
            attr_u32(b, NFTA_CMP_OP, *op as u32);
            data_value(b, NFTA_CMP_DATA, data);
        }),
        Expr::Lookup { invert, .. } => {
            let id = set_ids.next().expect("one anonymous set per lookup");
            expr(b, "lookup", |b| {
                attr_str(b, NFTA_LOOKUP_SET, "__set%d");
                attr_u32(b, NFTA_LOOKUP_SET_ID, id);
                attr_u32(b, NFTA_LOOKUP_SREG, NFT_REG_1);
                if *invert {
                    attr_u32(b, NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                }
            })
        }
        Expr::Vmap(name) => expr(b, "lookup", |b| {
            attr_str(b, NFTA_LOOKUP_SET, name);
            attr_u32(b, NFTA_LOOKUP_SREG, NFT_REG_1);
            attr_u32(b, NFTA_LOOKUP_DREG, NFT_REG_VERDICT);
        }),
        Expr::VmapAt { map, sreg } => expr(b, "lookup", |b| {
            attr_str(b, NFTA_LOOKUP_SET, map);
            attr_u32(b, NFTA_LOOKUP_SREG, *sreg);
            attr_u32(b, NFTA_LOOKUP_DREG, NFT_REG_VERDICT);
        }),
        // No data: the kernel starts the counter at zero, as when nft sends zeros.
        Expr::Counter => expr(b, "counter", |_| {}),
        Expr::Verdict(v) => expr(b, "immediate", |b| {
            attr_u32(b, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            data_verdict(b, NFTA_IMMEDIATE_DATA, v);
        }),
        Expr::Load { from, reg } => match from {
            Load::Meta(k) => expr(b, "meta", |b| {
                attr_u32(b, NFTA_META_KEY, *k as u32);
                attr_u32(b, NFTA_META_DREG, *reg);
            }),
            Load::Payload { base, offset, len } => expr(b, "payload", |b| {
                attr_u32(b, NFTA_PAYLOAD_DREG, *reg);
                attr_u32(b, NFTA_PAYLOAD_BASE, *base as u32);
                attr_u32(b, NFTA_PAYLOAD_OFFSET, *offset);
                attr_u32(b, NFTA_PAYLOAD_LEN, *len);
            }),
            Load::CtMark => expr(b, "ct", |b| {
                attr_u32(b, NFTA_CT_KEY, NFT_CT_MARK);
                attr_u32(b, NFTA_CT_DREG, *reg);
            }),
        },
        Expr::Numgen { modulus, reg } => expr(b, "numgen", |b| {
            attr_u32(b, NFTA_NG_DREG, *reg);
            attr_u32(b, NFTA_NG_MODULUS, *modulus);
            attr_u32(b, NFTA_NG_TYPE, NFT_NG_RANDOM);
        }),
        Expr::Jhash { sreg, len, modulus, seed, dreg } => expr(b, "hash", |b| {
            attr_u32(b, NFTA_HASH_SREG, *sreg);
            attr_u32(b, NFTA_HASH_DREG, *dreg);
            attr_u32(b, NFTA_HASH_LEN, *len);
            attr_u32(b, NFTA_HASH_MODULUS, *modulus);
            attr_u32(b, NFTA_HASH_SEED, *seed);
            attr_u32(b, NFTA_HASH_TYPE, NFT_HASH_JENKINS);
        }),
        Expr::MapLookup { map, sreg, dreg } => expr(b, "lookup", |b| {
            attr_str(b, NFTA_LOOKUP_SET, map);
            attr_u32(b, NFTA_LOOKUP_SREG, *sreg);
            attr_u32(b, NFTA_LOOKUP_DREG, *dreg);
        }),
        Expr::CtSetMark { sreg } => expr(b, "ct", |b| {
            attr_u32(b, NFTA_CT_KEY, NFT_CT_MARK);
            attr_u32(b, NFTA_CT_SREG, *sreg);
        }),
        Expr::Dnat { v6, addr_reg, proto_reg } => expr(b, "nat", |b| {
            attr_u32(b, NFTA_NAT_TYPE, NFT_NAT_DNAT);
            attr_u32(b, NFTA_NAT_FAMILY, if *v6 { 10 } else { 2 });
            attr_u32(b, NFTA_NAT_REG_ADDR_MIN, *addr_reg);
            attr_u32(b, NFTA_NAT_REG_PROTO_MIN, *proto_reg);
        }),
    }
}

/// Applies a batch in one transaction: all of it or, on error, nothing. The error names the
/// first operation the kernel refused and its reason (ENOENT: a table, chain or element is
/// missing; EBUSY: a chain still in use or an element with another value).
/// Whether this kernel has the "destroy" messages (delete if present), asked once: a batch
/// that creates a scratch table, destroys a set it does not have and deletes the table again
/// (one transaction: nothing is ever visible).
pub fn destroy_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let mut b = Batch::new();
        let table = format!("hns_probe_{}", std::process::id());
        b.add_table(Family::Inet, &table);
        b.message(NFT_MSG_DESTROYSET, 0, Family::Inet, "destroy set (probe)".into(), |m| {
            attr_str(m, NFTA_SET_TABLE, &table);
            attr_str(m, NFTA_SET_NAME, "absent");
        });
        b.delete_table(Family::Inet, &table);
        apply(&b).is_ok()
    })
}

pub fn apply(batch: &Batch) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let bytes = batch.encode();
    with_socket(|socket| send_batch(socket, batch, &bytes))
}

fn send_batch(socket: &Socket, batch: &Batch, bytes: &[u8]) -> Result<()> {
    // A large batch (a full rebuild) is one message: make room for it (root may exceed the
    // system's maximum).
    let fd = socket.as_fd();
    let size = bytes.len() + 65536;
    if size > 200_000 {
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBufForce, &size);
    }
    // The kernel processes the batch within sendmsg and queues its answers before returning:
    // no message asks for an ack, so the answers are the errors only (and none means the
    // transaction was committed).
    socket.send(bytes, 0).map_err(|e| KernelError::io("send", "nft batch", e))?;
    let mut buf = vec![0u8; 65536];
    let mut first_error: Option<KernelError> = None;
    loop {
        let n = match socket.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(first_error.unwrap_or_else(|| KernelError::io("read the answer to", "nft batch", e))),
        };
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
            if len < 16 || at + len > n {
                break;
            }
            // An error carries the header of the message it answers: its sequence number.
            if kind == NLMSG_ERROR && len >= 36 && first_error.is_none() {
                let code = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                let seq = u32::from_ne_bytes(buf[at + 28..at + 32].try_into().expect("4 bytes"));
                if code < 0 {
                    let what = batch.what.get((seq as usize).wrapping_sub(1)).cloned().unwrap_or_else(|| "commit the nft batch".to_owned());
                    let reason = std::io::Error::from_raw_os_error(-code);
                    first_error = Some(KernelError { op: "apply nft batch".to_owned(), object: what, reason: reason.to_string(), errno: Some(-code) });
                }
            }
            at += len.next_multiple_of(4);
        }
    }
    first_error.map_or(Ok(()), Err)
}

const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;

fn open_socket() -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| KernelError::io("open", "nfnetlink socket", e))?;
    socket.bind_auto().map_err(|e| KernelError::io("bind", "nfnetlink socket", e))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(|e| KernelError::io("connect", "nfnetlink socket", e))?;
    nix::sys::socket::setsockopt(&socket.as_fd(), nix::sys::socket::sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::from(libc::timeval { tv_sec: 5, tv_usec: 0 }))
        .map_err(|e| KernelError::nix("configure", "nfnetlink socket", e))?;
    Ok(socket)
}

/// Open nfnetlink sockets, one per network namespace (by the inode of its nsfs file), kept
/// for the life of the process. Why not one socket per call: closing a netfilter netlink
/// socket makes the kernel flush nf_tables' pending destroy work first (its NETLINK_URELEASE
/// notifier), and that work waits for an RCU grace period whenever the last transaction
/// deleted anything (a rule, chain or element): measured 12-16 ms per change on this 2-CPU
/// machine, against 5-50 us for the batch itself. A kept socket never closes.
static SOCKETS: std::sync::Mutex<Vec<(u64, Socket)>> = std::sync::Mutex::new(Vec::new());
/// Namespaces whose socket is kept (tests create many short-lived ones; a kept socket keeps
/// its namespace alive).
const KEPT_SOCKETS: usize = 8;

/// Runs `f` with this thread's namespace's kept socket (opened on first use), drained of any
/// answer left from an earlier request. The lock serializes requests to the kernel, which
/// serializes nf_tables transactions anyway.
pub(crate) fn with_socket<T>(f: impl FnOnce(&Socket) -> Result<T>) -> Result<T> {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/thread-self/ns/net").map_err(|e| KernelError::io("read", "/proc/thread-self/ns/net", e))?.ino();
    let mut kept = SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
    let at = match kept.iter().position(|(n, _)| *n == ns) {
        Some(at) => at,
        None => {
            if kept.len() >= KEPT_SOCKETS {
                kept.remove(0);
            }
            kept.push((ns, open_socket()?));
            kept.len() - 1
        }
    };
    let socket = &kept[at].1;
    let mut buf = vec![0u8; 8192];
    while socket.recv(&mut &mut buf[..], libc::MSG_DONTWAIT).is_ok_and(|n| n > 0) {}
    let out = f(socket);
    if out.as_ref().is_err_and(|e| !matches!(e.op.as_str(), "apply nft batch" | "list" | "delete tracked connections")) {
        // A socket-level failure (not a refusal by nf_tables): start afresh next time.
        kept.remove(at);
    }
    out
}

/// Runs one dump request (outside a batch) and returns the attribute payload of every
/// answer (after the nfgenmsg header).
fn dump(kind: u16, fam: Family, what: &str, fill: impl FnOnce(&mut Vec<u8>)) -> Result<Vec<Vec<u8>>> {
    let mut b = Batch::new();
    b.message(kind, NLM_F_DUMP, fam, what.to_owned(), fill);
    with_socket(|socket| dump_on(socket, &b.buf, what))
}

fn dump_on(socket: &Socket, request: &[u8], what: &str) -> Result<Vec<Vec<u8>>> {
    socket.send(request, 0).map_err(|e| KernelError::io("send", what, e))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0).map_err(|e| KernelError::io("read the answer to", what, e))?;
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let t = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
            if len < 16 || at + len > n {
                break;
            }
            match t {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                    if code < 0 {
                        return Err(KernelError { op: "list".to_owned(), object: what.to_owned(), reason: std::io::Error::from_raw_os_error(-code).to_string(), errno: Some(-code) });
                    }
                }
                _ if len >= 20 => out.push(buf[at + 20..at + len].to_vec()),
                _ => {}
            }
            at += len.next_multiple_of(4);
        }
    }
}

/// The top-level attributes of a message payload: (type without flags, payload).
fn attrs(mut p: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while p.len() >= 4 {
        let len = u16::from_ne_bytes([p[0], p[1]]) as usize;
        let kind = u16::from_ne_bytes([p[2], p[3]]) & 0x3fff;
        if len < 4 || len > p.len() {
            break;
        }
        out.push((kind, &p[4..len]));
        p = &p[len.next_multiple_of(4).min(p.len())..];
    }
    out
}

fn attr_string(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// The names of the chains of a table (none if the table is missing). One kernel dump of the
/// family's chains: names only, no rules.
pub fn chain_names(fam: Family, table: &str) -> Result<Vec<String>> {
    let all = dump(NFT_MSG_GETCHAIN, fam, &format!("chains of {} {table}", fam.name()), |_| {})?;
    Ok(all
        .iter()
        .filter_map(|m| {
            let a = attrs(m);
            let t = a.iter().find(|(k, _)| *k == NFTA_CHAIN_TABLE).map(|(_, v)| attr_string(v))?;
            (t == table).then(|| a.iter().find(|(k, _)| *k == NFTA_CHAIN_NAME).map(|(_, v)| attr_string(v))).flatten()
        })
        .collect())
}

/// The number of rules in one chain (ENOENT if the table or chain is missing): the kernel
/// dumps that chain only.
pub fn chain_rule_count(fam: Family, table: &str, chain: &str) -> Result<usize> {
    let rules = dump(NFT_MSG_GETRULE, fam, &format!("rules of {} {table} {chain}", fam.name()), |b| {
        attr_str(b, NFTA_RULE_TABLE, table);
        attr_str(b, NFTA_RULE_CHAIN, chain);
    })?;
    Ok(rules.len())
}

/// A comment as libnftnl's udata TLV: type, length, the string with its NUL (nft cuts
/// comments at 128 bytes; ours are short).
fn comment_udata(c: &str) -> Vec<u8> {
    let c = &c.as_bytes()[..c.len().min(127)];
    let mut out = vec![UDATA_COMMENT, c.len() as u8 + 1];
    out.extend_from_slice(c);
    out.push(0);
    out
}

fn udata_comment(mut u: &[u8]) -> Option<String> {
    while u.len() >= 2 {
        let (t, len) = (u[0], u[1] as usize);
        let v = u.get(2..2 + len)?;
        if t == UDATA_COMMENT {
            return Some(attr_string(v));
        }
        u = &u[2 + len..];
    }
    None
}

/// The names of the named sets and maps of a table (none if the table is missing).
pub fn set_names(fam: Family, table: &str) -> Result<Vec<String>> {
    let all = match dump(NFT_MSG_GETSET, fam, &format!("sets of {} {table}", fam.name()), |b| attr_str(b, NFTA_SET_TABLE, table)) {
        Err(e) if e.errno == Some(libc::ENOENT) => return Ok(Vec::new()),
        r => r?,
    };
    Ok(all
        .iter()
        .filter_map(|m| {
            let a = attrs(m);
            let t = a.iter().find(|(k, _)| *k == NFTA_SET_TABLE).map(|(_, v)| attr_string(v))?;
            let name = a.iter().find(|(k, _)| *k == NFTA_SET_NAME).map(|(_, v)| attr_string(v))?;
            (t == table && !name.starts_with("__")).then_some(name)
        })
        .collect())
}

/// The elements of a named set or map with their counters (ENOENT if it is missing): the
/// kernel walks that set only.
pub fn set_elements(fam: Family, table: &str, set: &str) -> Result<Vec<ListedElement>> {
    let msgs = dump(NFT_MSG_GETSETELEM, fam, &format!("elements of {} {table} {set}", fam.name()), |b| {
        attr_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
        attr_str(b, NFTA_SET_ELEM_LIST_SET, set);
    })?;
    let value = |v: &[u8]| attrs(v).iter().find(|(k, _)| *k == NFTA_DATA_VALUE).map(|(_, d)| d.to_vec()).unwrap_or_default();
    let mut out = Vec::new();
    for m in &msgs {
        for (k, list) in attrs(m) {
            if k != NFTA_SET_ELEM_LIST_ELEMENTS {
                continue;
            }
            for (_, elem) in attrs(list) {
                let mut e = ListedElement { key: Vec::new(), key_end: Vec::new(), verdict: None, chain: String::new(), comment: String::new(), packets: 0, bytes: 0 };
                for (k, v) in attrs(elem) {
                    match k {
                        NFTA_SET_ELEM_KEY => e.key = value(v),
                        NFTA_SET_ELEM_KEY_END => e.key_end = value(v),
                        NFTA_SET_ELEM_DATA => {
                            for (k, d) in attrs(v).iter().filter(|(k, _)| *k == NFTA_DATA_VERDICT).flat_map(|(_, d)| attrs(d)) {
                                match k {
                                    NFTA_VERDICT_CODE => e.verdict = d.try_into().ok().map(i32::from_be_bytes),
                                    NFTA_VERDICT_CHAIN => e.chain = attr_string(d),
                                    _ => {}
                                }
                            }
                        }
                        NFTA_SET_ELEM_USERDATA => e.comment = udata_comment(v).unwrap_or_default(),
                        NFTA_SET_ELEM_EXPR => add_counter(v, &mut e.packets, &mut e.bytes),
                        NFTA_SET_ELEM_EXPRESSIONS => attrs(v).iter().for_each(|(_, x)| add_counter(x, &mut e.packets, &mut e.bytes)),
                        _ => {}
                    }
                }
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// Adds the packets and bytes of a `counter` expression (name and data attributes) to the
/// totals; other expressions add nothing.
fn add_counter(expr: &[u8], packets: &mut u64, bytes: &mut u64) {
    let e = attrs(expr);
    if !e.iter().any(|(k, v)| *k == NFTA_EXPR_NAME && attr_string(v) == "counter") {
        return;
    }
    for (k, v) in e.iter().filter(|(k, _)| *k == NFTA_EXPR_DATA).flat_map(|(_, d)| attrs(d)) {
        let n = v.try_into().map(u64::from_be_bytes).unwrap_or(0);
        match k {
            NFTA_COUNTER_PACKETS => *packets += n,
            NFTA_COUNTER_BYTES => *bytes += n,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(u16, u16)]) -> AnonSet {
        AnonSet { key_type: DT_INET_SERVICE, key_len: 2, ranges: ranges.iter().map(|(a, b)| (a.to_be_bytes().to_vec(), b.to_be_bytes().to_vec())).collect(), interval: true }
    }

    fn keys(e: &[(Vec<u8>, bool)]) -> Vec<(u16, bool)> {
        e.iter().map(|(k, end)| (u16::from_be_bytes([k[0], k[1]]), *end)).collect()
    }

    #[test]
    fn intervals_are_merged_and_ended_one_past_like_nft_does() {
        // As `nft --debug=netlink` shows for `th dport { 80, 8000-8080 }`.
        assert_eq!(keys(&interval_elements(&set(&[(8000, 8080), (80, 80)]))), vec![(0, true), (80, false), (81, true), (8000, false), (8081, true)]);
        // Overlapping and touching ranges merge; a range to the maximum has no end element;
        // a range from zero needs no leading end.
        assert_eq!(keys(&interval_elements(&set(&[(0, 10), (11, 20), (15, 30), (60000, 65535)]))), vec![(0, false), (31, true), (60000, false)]);
    }

    #[test]
    fn messages_are_framed_and_numbered() {
        let mut b = Batch::new();
        b.add_chain(Family::Bridge, "t", "c");
        b.add_rule(Family::Bridge, "t", "c", &[Expr::Meta(MetaKey::L4Proto), Expr::Lookup { set: set(&[(1, 2)]), invert: false }, Expr::Verdict(Verdict::Drop)]);
        // chain, anonymous set, its elements, the rule.
        assert_eq!(b.len(), 4);
        let bytes = b.encode();
        let mut at = 0;
        let mut seqs = Vec::new();
        while at < bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            seqs.push(u32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap()));
            at += len;
        }
        assert_eq!(at, bytes.len());
        assert_eq!(seqs, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn comments_are_udata_tlvs_as_libnftnl_writes_them() {
        assert_eq!(comment_udata("ab"), vec![0, 3, b'a', b'b', 0]);
        assert_eq!(udata_comment(&[1, 1, 9, 0, 3, b'a', b'b', 0]).as_deref(), Some("ab"));
    }

    #[test]
    fn successor_carries() {
        assert_eq!(successor(&[0x0a, 0xff]), Some(vec![0x0b, 0]));
        assert_eq!(successor(&[0xff, 0xff]), None);
    }
}
