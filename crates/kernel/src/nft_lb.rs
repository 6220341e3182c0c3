//! Load balancers (HNS `HostComputeLoadBalancer`) in the kernel: a pure compiler from the
//! desired state of each load balancer to nft programs in hns's own table [`LB_TABLE`]
//! (`table inet hns_lb`), and the thin layer that runs them.
//!
//! Layout, after kube-proxy's nftables mode:
//! - one verdict map per frontend kind and family, keyed on `VIP . l4proto . port` (`svc4`,
//!   `svc6`), or on `l4proto . port` for frontends on every host address (`node4`, `node6`:
//!   a load balancer without `FrontendVIPs`). The prerouting chain looks each packet up once:
//!   the cost of the dispatch does not grow with the number of services;
//! - the host's own connections (`LocalRoutedVIP`) are looked up in the output hook, in maps
//!   of their own (`local4`, `local6`, `nodelocal4`, `nodelocal6`), so only flagged services
//!   are reachable from the host;
//! - each service (one frontend and port) has one chain. It picks the backend in one map
//!   lookup, stateless: `numgen random mod N` (distribution None) or `jhash` of the client
//!   address (SourceIP) or of address and protocol (SourceIPProtocol), and stores the choice in
//!   the connection's mark; a second anonymous map sends the connection to that backend's
//!   address and port (`dnat ... to ct mark map`). No per-backend chain, no linear walk;
//! - the connection mark of a backend is [`LB_CT_MARK`] plus a number unique to that backend
//!   of that load balancer: the hns table forwards marked connections to any network (a load
//!   balancer may span networks), and removing a backend clears exactly its connections
//!   ([`crate::conntrack::flush_mark`]);
//! - hairpin: a backend whose connection to its own VIP lands on itself is source-NATed in
//!   postrouting, to the load balancer's `SourceVIP` when it has one (what it sees, as on
//!   Windows), else to the host's address on the way (masquerade). Both are set elements keyed
//!   on the backend's mark (`hairpin4`, `srcvip4`, ...);
//! - Direct Server Return and PreserveDIP: the service chain picks the backend into the
//!   connection mark but does not DNAT; the `dsr_route` chain copies the mark of those backends
//!   (set `dsr`) to the packet mark of each packet the client sends, and a policy route per
//!   backend ([`crate::lb_routes`]) delivers it to the backend, still addressed to the VIP;
//! - a service without backends, or an internal one (`ILB`) reached from outside the hns
//!   networks, is refused (TCP reset, ICMP port unreachable): never silently dropped.
//!
//! Priorities: the nat chains run at `dstnat - 10` and `srcnat - 10`, before the hns table's
//! port mappings and masquerade: the first NAT decision of a connection is the one kept, so a
//! load balancer wins over a port mapping of the same address and port, and the hairpin source
//! wins over the nat network's masquerade.
//!
//! An update of one load balancer is one `nft -f` transaction that touches only its chains and
//! map elements ([`compile_update`]); the whole table is written only when it is missing or
//! flushed ([`compile_all`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use crate::error::Result;
use crate::nft::Proto;

/// Name of the load-balancer table (`inet` family).
pub const LB_TABLE: &str = "hns_lb";
/// Connection-mark bit of connections sent to a backend; the low 31 bits number the backend.
pub const LB_CT_MARK: u32 = 0x8000_0000;

/// How the backend of a new connection is chosen (HNS `DistributionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Affinity {
    /// Per connection (random).
    None,
    /// One backend per client address and protocol.
    SourceIpProtocol,
    /// One backend per client address.
    SourceIp,
}

/// Where a service listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Frontend {
    /// One virtual address.
    Vip(IpAddr),
    /// Every local address of the host, of one family (`v6`).
    Node { v6: bool },
}

impl Frontend {
    pub fn is_v6(&self) -> bool {
        match self {
            Frontend::Vip(ip) => ip.is_ipv6(),
            Frontend::Node { v6 } => *v6,
        }
    }
}

/// One backend of a service: the connection mark that names it, its address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    pub mark: u32,
    pub addr: IpAddr,
    pub port: u16,
}

/// One frontend and port of a load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub frontend: Frontend,
    pub proto: Proto,
    pub port: u16,
    /// `ILB`: reachable only from the hns networks (containers), refused from elsewhere.
    pub internal: bool,
    /// `LocalRoutedVIP`: reachable from the host itself too.
    pub local: bool,
    /// DSR or PreserveDIP: delivered to the backend with the VIP as destination (no DNAT).
    pub preserve_dip: bool,
    pub affinity: Affinity,
    /// Of the frontend's family, in a stable order.
    pub backends: Vec<Backend>,
}

/// The hairpin source of one backend (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hairpin {
    pub mark: u32,
    pub backend: IpAddr,
    /// `None`: masquerade.
    pub source_vip: Option<IpAddr>,
}

/// A backend reached without DNAT (DSR, PreserveDIP): packets with its mark are routed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Direct {
    pub mark: u32,
    pub backend: IpAddr,
}

/// Everything one load balancer puts in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbState {
    pub services: Vec<Service>,
    pub hairpin: Vec<Hairpin>,
    pub direct: Vec<Direct>,
}

/// Interface-name patterns of the hns networks' host side: bridges and routed host veths.
const HNS_IFACES: &str = "{ \"hns-*\", \"hnv*\" }";

fn hex(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{:08x}", u32::from(a)),
        IpAddr::V6(a) => format!("{:032x}", u128::from(a)),
    }
}

impl Service {
    /// The service's chain: named after its key, so two load balancers can never share one
    /// (the engine refuses a second service on the same frontend, protocol and port).
    pub fn chain(&self) -> String {
        match self.frontend {
            Frontend::Vip(ip) => format!("s{}_{}_{}_{}", if ip.is_ipv4() { 4 } else { 6 }, hex(ip), self.proto, self.port),
            Frontend::Node { v6 } => format!("n{}_{}_{}", if v6 { 6 } else { 4 }, self.proto, self.port),
        }
    }

    /// The dispatch map element's key.
    fn key(&self) -> String {
        match self.frontend {
            Frontend::Vip(ip) => format!("{ip} . {} . {}", self.proto, self.port),
            Frontend::Node { .. } => format!("{} . {}", self.proto, self.port),
        }
    }

    /// The dispatch maps the service is an element of.
    pub fn maps(&self) -> Vec<&'static str> {
        let (pre, out) = match (self.frontend, self.frontend.is_v6()) {
            (Frontend::Vip(_), false) => ("svc4", "local4"),
            (Frontend::Vip(_), true) => ("svc6", "local6"),
            (Frontend::Node { .. }, false) => ("node4", "nodelocal4"),
            (Frontend::Node { .. }, true) => ("node6", "nodelocal6"),
        };
        if self.local { vec![pre, out] } else { vec![pre] }
    }

    /// The rules of the service's chain.
    pub fn rules(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.internal {
            // In the output hook there is no input interface: `iif` is 0 there (and `iifname`
            // the empty name, which alone would refuse), so an internal service flagged
            // LocalRoutedVIP stays reachable from the host.
            out.push(format!("iif != 0 iifname != {HNS_IFACES} goto refuse"));
        }
        if self.backends.is_empty() {
            out.push("goto refuse".into());
            return out;
        }
        let (fam, saddr) = if self.frontend.is_v6() { ("ip6", "ip6 saddr") } else { ("ip", "ip saddr") };
        let n = self.backends.len();
        let marks: Vec<String> = self.backends.iter().enumerate().map(|(i, b)| format!("{i} : {:#010x}", b.mark)).collect();
        let choice = match self.affinity {
            _ if n == 1 => format!("{:#010x}", self.backends[0].mark),
            Affinity::None => format!("numgen random mod {n} map {{ {} }}", marks.join(", ")),
            Affinity::SourceIp => format!("jhash {saddr} mod {n} seed 0x686e73 map {{ {} }}", marks.join(", ")),
            Affinity::SourceIpProtocol => format!("jhash {saddr} . meta l4proto mod {n} seed 0x686e73 map {{ {} }}", marks.join(", ")),
        };
        out.push(format!("ct mark set {choice}"));
        if self.preserve_dip {
            // The packet keeps its destination; `dsr_route` and the backend's policy route
            // deliver it.
            return out;
        }
        let targets: Vec<String> = self.backends.iter().map(|b| format!("{:#010x} : {} . {}", b.mark, b.addr, b.port)).collect();
        out.push(format!("meta l4proto {} dnat {fam} addr . port to ct mark map {{ {} }}", self.proto, targets.join(", ")));
        out
    }
}

fn t() -> String {
    format!("inet {LB_TABLE}")
}

/// The table with its maps and base chains, empty of services.
fn skeleton(out: &mut String) {
    let v4 = "ipv4_addr . inet_proto . inet_service : verdict";
    let v6 = "ipv6_addr . inet_proto . inet_service : verdict";
    let node = "inet_proto . inet_service : verdict";
    let _ = writeln!(out, "table inet {LB_TABLE} {{");
    for (name, ty) in [("svc4", v4), ("svc6", v6), ("local4", v4), ("local6", v6), ("node4", node), ("node6", node), ("nodelocal4", node), ("nodelocal6", node)] {
        let _ = writeln!(out, "\tmap {name} {{ type {ty}; }}");
    }
    let _ = writeln!(out, "\tset hairpin4 {{ type mark . ipv4_addr; }}\n\tset hairpin6 {{ type mark . ipv6_addr; }}");
    let _ = writeln!(out, "\tmap srcvip4 {{ type mark : ipv4_addr; }}\n\tmap srcvip6 {{ type mark : ipv6_addr; }}");
    let _ = writeln!(out, "\tset dsr {{ type mark; }}");
    // One element per backend mark, with a counter: the postrouting chain's lookup counts each
    // new connection sent to that backend (hnsd's metrics read them; see [`backend_hits`]).
    let _ = writeln!(out, "\tset hits {{ type mark; counter; }}");
    let _ = writeln!(out, "\tchain refuse {{\n\t\tmeta l4proto tcp reject with tcp reset\n\t\treject\n\t}}");
    let _ = writeln!(
        out,
        "\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat - 10; policy accept;\n\t\tip daddr . meta l4proto . th dport vmap @svc4\n\t\tip6 daddr . meta l4proto . th dport vmap @svc6\n\t\tmeta nfproto ipv4 fib daddr type local meta l4proto . th dport vmap @node4\n\t\tmeta nfproto ipv6 fib daddr type local meta l4proto . th dport vmap @node6\n\t}}"
    );
    let _ = writeln!(
        out,
        "\tchain output {{\n\t\ttype nat hook output priority -110; policy accept;\n\t\tip daddr . meta l4proto . th dport vmap @local4\n\t\tip6 daddr . meta l4proto . th dport vmap @local6\n\t\tmeta nfproto ipv4 fib daddr type local meta l4proto . th dport vmap @nodelocal4\n\t\tmeta nfproto ipv6 fib daddr type local meta l4proto . th dport vmap @nodelocal6\n\t}}"
    );
    let _ = writeln!(
        out,
        "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat - 10; policy accept;\n\t\tct mark & {LB_CT_MARK:#x} == 0 return\n\t\tct mark @hits\n\t\tct mark . ip saddr @hairpin4 snat ip to ct mark map @srcvip4\n\t\tct mark . ip saddr @hairpin4 masquerade\n\t\tct mark . ip6 saddr @hairpin6 snat ip6 to ct mark map @srcvip6\n\t\tct mark . ip6 saddr @hairpin6 masquerade\n\t}}"
    );
    // After the NAT chains (the first packet's mark is chosen there), before routing; only
    // what the client sends (the backend's answers go the usual way). The ACL table's
    // established bit, set earlier in prerouting, is kept.
    let est = crate::nft_acl::ESTABLISHED_MARK;
    let _ = writeln!(
        out,
        "\tchain dsr_route {{\n\t\ttype filter hook prerouting priority dstnat + 10; policy accept;\n\t\tct direction original ct mark @dsr meta mark & {est:#x} == {est:#x} meta mark set ct mark | {est:#x}\n\t\tct direction original ct mark @dsr meta mark & {est:#x} == 0 meta mark set ct mark\n\t}}"
    );
    // A DSR packet leaves the host by the bridge it came in on, towards a next hop on the
    // client's own subnet: the kernel then tells the client (ICMP redirect) to send to that
    // backend directly, and the client would bypass the load balancer for the VIP until the
    // redirect expires. The IPv4 redirect carries the connection it is about (its mark); an
    // IPv6 one does not, so those are dropped on the hns interfaces whole.
    let _ = writeln!(
        out,
        "\tchain no_redirects {{\n\t\ttype filter hook output priority filter; policy accept;\n\t\ticmp type redirect ct mark @dsr drop\n\t\toifname {HNS_IFACES} icmpv6 type nd-redirect drop\n\t}}"
    );
    let _ = writeln!(out, "}}");
}

/// Number of base chains of the table plus `refuse` (see [`chain_count`]).
const FIXED_CHAINS: usize = 6;

/// The number of chains the table holds for `lbs`: what a drift check compares.
pub fn chain_count(lbs: &[&LbState]) -> usize {
    FIXED_CHAINS + lbs.iter().map(|l| l.services.len()).sum::<usize>()
}

fn hairpin_elements(h: &Hairpin) -> (String, &'static str, Option<(String, &'static str)>) {
    let fam = if h.backend.is_ipv4() { 4 } else { 6 };
    let set = if fam == 4 { "hairpin4" } else { "hairpin6" };
    let vip = h.source_vip.filter(|s| s.is_ipv4() == h.backend.is_ipv4()).map(|s| (format!("{:#010x} : {s}", h.mark), if fam == 4 { "srcvip4" } else { "srcvip6" }));
    (format!("{:#010x} . {}", h.mark, h.backend), set, vip)
}

/// The program that turns load balancer `old` into `new` (either may be empty: create,
/// delete). It touches only their chains and elements, and skips services that did not change.
/// It assumes the kernel holds `old`: if it does not, the program fails and the caller
/// rebuilds the table ([`compile_all`]).
pub fn compile_update(old: &LbState, new: &LbState) -> String {
    let t = t();
    let mut out = String::new();
    let old_by: BTreeMap<String, &Service> = old.services.iter().map(|s| (s.chain(), s)).collect();
    let new_by: BTreeMap<String, &Service> = new.services.iter().map(|s| (s.chain(), s)).collect();
    let elems = |by: &BTreeMap<String, &Service>| -> BTreeSet<(&'static str, String, String)> { by.iter().flat_map(|(c, s)| s.maps().into_iter().map(move |m| (m, s.key(), c.clone()))).collect() };
    let (old_e, new_e) = (elems(&old_by), elems(&new_by));
    // Hairpin elements: (set, element) plus the srcvip map's elements, keyed by mark; the
    // marks of backends reached without DNAT.
    let hp = |l: &LbState| -> BTreeSet<(&'static str, String)> {
        l.hairpin
            .iter()
            .flat_map(|h| {
                let (e, set, vip) = hairpin_elements(h);
                let mut v = vec![(set, e)];
                v.extend(vip.map(|(e, m)| (m, e)));
                v
            })
            .chain(l.direct.iter().map(|d| ("dsr", format!("{:#010x}", d.mark))))
            .collect()
    };
    let (old_h, new_h) = (hp(old), hp(new));
    // 1. Elements that go (dispatch first, so no packet reaches a chain being removed).
    for (m, key, _) in old_e.difference(&new_e) {
        let _ = writeln!(out, "delete element {t} {m} {{ {key} }}");
    }
    for (set, e) in old_h.difference(&new_h) {
        // A map element is deleted by its key.
        let key = e.split(" : ").next().unwrap_or(e);
        let _ = writeln!(out, "delete element {t} {set} {{ {key} }}");
    }
    // 2. Chains that go.
    for c in old_by.keys().filter(|c| !new_by.contains_key(*c)) {
        let _ = writeln!(out, "delete chain {t} {c}");
    }
    // 3. Chains that are new or changed.
    for (c, s) in &new_by {
        match old_by.get(c) {
            Some(o) if o.rules() == s.rules() => continue,
            Some(_) => {
                let _ = writeln!(out, "flush chain {t} {c}");
            }
            None => {
                let _ = writeln!(out, "add chain {t} {c}");
            }
        }
        for r in s.rules() {
            let _ = writeln!(out, "add rule {t} {c} {r}");
        }
    }
    // 4. Elements that come.
    for (m, key, c) in new_e.difference(&old_e) {
        let _ = writeln!(out, "add element {t} {m} {{ {key} : goto {c} }}");
    }
    for (set, e) in new_h.difference(&old_h) {
        let _ = writeln!(out, "add element {t} {set} {{ {e} }}");
    }
    out
}

/// The whole table for `lbs`, replacing what exists in one transaction. With no load balancer
/// the table is removed: hns without load balancers leaves nothing behind.
pub fn compile_all(lbs: &[&LbState]) -> String {
    let mut out = format!("table inet {LB_TABLE} {{}}\ndelete table inet {LB_TABLE}\n");
    if lbs.is_empty() {
        return out;
    }
    skeleton(&mut out);
    let empty = LbState::default();
    for l in lbs {
        out.push_str(&compile_update(&empty, l));
    }
    out
}

/// Runs one program through `nft -f -` (one transaction).
pub fn run(program: &str) -> Result<()> {
    if program.is_empty() {
        return Ok(());
    }
    crate::nft::run_program(program, "apply nft load-balancer program", &format!("table inet {LB_TABLE}"))
}

/// What the kernel's table looks like, reduced to what drift detection compares: whether its
/// dispatch rules are there (a flushed or deleted table has none) and how many chains it has.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub dispatch: bool,
    pub chains: usize,
}

/// Reads the table back without elements (`nft -t`).
pub fn observe() -> Observed {
    let Ok(out) = Command::new("nft").args(["-t", "list", "table", "inet", LB_TABLE]).stdout(Stdio::piped()).stderr(Stdio::null()).output() else {
        return Observed::default();
    };
    if !out.status.success() {
        return Observed::default();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Observed {
        dispatch: text.contains("vmap @svc4") && text.contains("vmap @local4") && text.contains("@hairpin4 masquerade"),
        chains: text.lines().filter(|l| l.trim_start().starts_with("chain ")).count(),
    }
}

/// New connections sent to each backend since its mark entered the table, by mark: the
/// counters of the `hits` set (a nat chain sees only a connection's first packet, so its
/// packet count is the connection count). Empty when the table does not exist.
pub fn backend_hits() -> Result<std::collections::HashMap<u32, u64>> {
    let out = Command::new("nft").args(["-j", "list", "set", "inet", LB_TABLE, "hits"]).stdout(Stdio::piped()).stderr(Stdio::null()).output().map_err(|e| crate::error::KernelError::new("read", "nft set hits", e.to_string()))?;
    if !out.status.success() {
        return Ok(Default::default());
    }
    Ok(parse_hits(&String::from_utf8_lossy(&out.stdout)))
}

/// The (mark, packets) pairs of `nft -j list set` output.
fn parse_hits(json: &str) -> std::collections::HashMap<u32, u64> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let mut hits = std::collections::HashMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["set"]["elem"].as_array().into_iter().flatten() {
            let e = &e["elem"];
            if let (Some(mark), Some(packets)) = (e["val"].as_u64(), e["counter"]["packets"].as_u64()) {
                hits.insert(mark as u32, packets);
            }
        }
    }
    hits
}

/// Whether the dispatch rules are in place (cheap: one chain is listed). A flushed or deleted
/// table has none.
pub fn dispatch_present() -> bool {
    Command::new("nft")
        .args(["list", "chain", "inet", LB_TABLE, "prerouting"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("vmap @svc4"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(mark: u32, ip: &str, port: u16) -> Backend {
        Backend { mark: LB_CT_MARK | mark, addr: ip.parse().unwrap(), port }
    }

    fn svc(vip: &str, backends: Vec<Backend>) -> Service {
        Service { frontend: Frontend::Vip(vip.parse().unwrap()), proto: Proto::Tcp, port: 80, internal: false, local: false, preserve_dip: false, affinity: Affinity::None, backends }
    }

    #[test]
    fn service_chain_picks_by_numgen_or_jhash_and_dnats_by_mark() {
        let s = svc("10.96.0.10", vec![b(1, "172.20.0.5", 8080), b(2, "172.20.0.6", 8080), b(3, "172.20.0.7", 8080)]);
        assert_eq!(s.chain(), "s4_0a60000a_tcp_80");
        assert_eq!(
            s.rules(),
            vec![
                "ct mark set numgen random mod 3 map { 0 : 0x80000001, 1 : 0x80000002, 2 : 0x80000003 }",
                "meta l4proto tcp dnat ip addr . port to ct mark map { 0x80000001 : 172.20.0.5 . 8080, 0x80000002 : 172.20.0.6 . 8080, 0x80000003 : 172.20.0.7 . 8080 }",
            ]
        );
        let a = Service { affinity: Affinity::SourceIp, ..s.clone() };
        assert!(a.rules()[0].starts_with("ct mark set jhash ip saddr mod 3 seed 0x686e73 map"), "{:?}", a.rules());
        let p = Service { affinity: Affinity::SourceIpProtocol, proto: Proto::Udp, ..s.clone() };
        assert!(p.rules()[0].starts_with("ct mark set jhash ip saddr . meta l4proto mod 3"));
        assert!(p.rules()[1].starts_with("meta l4proto udp dnat ip addr . port"));
        let six = Service { frontend: Frontend::Vip("fd00:96::10".parse().unwrap()), backends: vec![b(9, "fd00:20::5", 80)], ..s.clone() };
        assert_eq!(six.chain(), "s6_fd000096000000000000000000000010_tcp_80");
        assert_eq!(six.rules(), vec!["ct mark set 0x80000009", "meta l4proto tcp dnat ip6 addr . port to ct mark map { 0x80000009 : fd00:20::5 . 80 }"]);
    }

    #[test]
    fn empty_and_internal_services_refuse() {
        let empty = svc("10.96.0.10", vec![]);
        assert_eq!(empty.rules(), vec!["goto refuse"]);
        let ilb = Service { internal: true, ..svc("10.96.0.10", vec![b(1, "172.20.0.5", 80)]) };
        assert_eq!(ilb.rules()[0], "iif != 0 iifname != { \"hns-*\", \"hnv*\" } goto refuse");
    }

    #[test]
    fn update_touches_only_the_changed_service_and_elements() {
        let one = svc("10.96.0.10", vec![b(1, "172.20.0.5", 8080)]);
        let other = Service { port: 443, ..svc("10.96.0.10", vec![b(1, "172.20.0.5", 8443)]) };
        let old = LbState { services: vec![one.clone(), other.clone()], hairpin: vec![Hairpin { mark: LB_CT_MARK | 1, backend: "172.20.0.5".parse().unwrap(), source_vip: None }], direct: vec![] };
        let two = svc("10.96.0.10", vec![b(1, "172.20.0.5", 8080), b(2, "172.20.0.6", 8080)]);
        let new = LbState {
            services: vec![two, other],
            hairpin: vec![
                Hairpin { mark: LB_CT_MARK | 1, backend: "172.20.0.5".parse().unwrap(), source_vip: None },
                Hairpin { mark: LB_CT_MARK | 2, backend: "172.20.0.6".parse().unwrap(), source_vip: Some("10.96.0.1".parse().unwrap()) },
            ],
            direct: vec![],
        };
        let p = compile_update(&old, &new);
        assert!(p.starts_with("flush chain inet hns_lb s4_0a60000a_tcp_80\n"), "{p}");
        assert!(!p.contains("s4_0a60000a_tcp_443"), "the unchanged service is not touched: {p}");
        assert!(!p.contains("svc4"), "its dispatch element stays: {p}");
        assert!(p.contains("add element inet hns_lb hairpin4 { 0x80000002 . 172.20.0.6 }"));
        assert!(p.contains("add element inet hns_lb srcvip4 { 0x80000002 : 10.96.0.1 }"));
        assert!(!p.contains("0x80000001 . 172.20.0.5"), "{p}");
        // Removal deletes elements before the chains they point to.
        let gone = compile_update(&new, &LbState::default());
        let el = gone.find("delete element inet hns_lb svc4 { 10.96.0.10 . tcp . 80 }").unwrap();
        let ch = gone.find("delete chain inet hns_lb s4_0a60000a_tcp_80").unwrap();
        assert!(el < ch, "{gone}");
        assert!(gone.contains("delete element inet hns_lb srcvip4 { 0x80000002 }"), "{gone}");
        assert_eq!(compile_update(&new, &new), "", "no change, no program");
    }

    #[test]
    fn local_routed_and_node_frontends_use_their_maps() {
        let local = Service { local: true, ..svc("10.96.0.10", vec![]) };
        let p = compile_update(&LbState::default(), &LbState { services: vec![local], hairpin: vec![], direct: vec![] });
        assert!(p.contains("add element inet hns_lb svc4 { 10.96.0.10 . tcp . 80 : goto s4_0a60000a_tcp_80 }"), "{p}");
        assert!(p.contains("add element inet hns_lb local4 { 10.96.0.10 . tcp . 80 : goto s4_0a60000a_tcp_80 }"), "{p}");
        let node = Service { frontend: Frontend::Node { v6: true }, ..svc("10.96.0.10", vec![]) };
        let p = compile_update(&LbState::default(), &LbState { services: vec![node], hairpin: vec![], direct: vec![] });
        assert!(p.contains("add element inet hns_lb node6 { tcp . 80 : goto n6_tcp_80 }"), "{p}");
    }

    #[test]
    fn hits_are_read_from_the_sets_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "hits", "table": "hns_lb", "type": "mark", "elem": [{"elem": {"val": 2147483649, "counter": {"packets": 6, "bytes": 504}}}, {"elem": {"val": 2147483650, "counter": {"packets": 0, "bytes": 0}}}]}}]}"#;
        let h = parse_hits(json);
        assert_eq!((h.get(&0x80000001), h.get(&0x80000002), h.len()), (Some(&6), Some(&0), 2));
        assert!(parse_hits("{}").is_empty());
    }

    #[test]
    fn whole_table_and_empty_table() {
        assert_eq!(compile_all(&[]), "table inet hns_lb {}\ndelete table inet hns_lb\n");
        let l = LbState { services: vec![svc("10.96.0.10", vec![b(1, "172.20.0.5", 8080)])], hairpin: vec![], direct: vec![] };
        let p = compile_all(&[&l]);
        assert!(p.contains("type nat hook prerouting priority dstnat - 10; policy accept;"));
        assert!(p.contains("ip daddr . meta l4proto . th dport vmap @svc4"));
        assert!(p.contains("ct mark & 0x80000000 == 0 return"));
        assert!(p.contains("add chain inet hns_lb s4_0a60000a_tcp_80"));
        assert!(p.contains("ct direction original ct mark @dsr meta mark & 0x800000 == 0 meta mark set ct mark"), "{p}");
        assert!(p.contains("icmp type redirect ct mark @dsr drop"), "{p}");
        assert_eq!(chain_count(&[&l]), 7);
    }

    #[test]
    fn direct_services_pick_a_backend_without_dnat() {
        let s = Service { preserve_dip: true, ..svc("10.96.0.50", vec![b(1, "172.20.0.5", 80), b(2, "172.20.0.6", 80)]) };
        assert_eq!(s.rules(), vec!["ct mark set numgen random mod 2 map { 0 : 0x80000001, 1 : 0x80000002 }"], "no dnat");
        let d = |m: u32, ip: &str| Direct { mark: LB_CT_MARK | m, backend: ip.parse().unwrap() };
        let l = LbState { services: vec![s], hairpin: vec![], direct: vec![d(1, "172.20.0.5"), d(2, "172.20.0.6")] };
        let p = compile_update(&LbState::default(), &l);
        assert!(p.contains("add element inet hns_lb dsr { 0x80000001 }") && p.contains("add element inet hns_lb dsr { 0x80000002 }"), "{p}");
        let fewer = LbState { direct: vec![d(2, "172.20.0.6")], ..l.clone() };
        let p = compile_update(&l, &fewer);
        assert!(p.contains("delete element inet hns_lb dsr { 0x80000001 }") && !p.contains("0x80000002 }"), "{p}");
    }
}
