//! Load balancers (HNS `HostComputeLoadBalancer`) in the kernel: a pure compiler from the
//! desired state of each load balancer to nft programs in hns's own table [`LB_TABLE`]
//! (`table inet hns_lb`), and the thin layer that runs them.
//!
//! Layout (after kube-proxy's nftables mode, with no per-service chain):
//! - one data map per frontend kind and family, keyed on `VIP . l4proto . port` (`svc4`,
//!   `svc6`), or on `l4proto . port` for frontends on every host address (`node4`, `node6`:
//!   a load balancer without `FrontendVIPs`), whose value is the service's *shape* (how many
//!   backends, how they are drawn, whether it is internal; see `nft_lb_batch::Shape`). The
//!   prerouting chain looks each packet up once, then goes through the `shapes` verdict map
//!   to the shape's chain: the cost of the dispatch does not grow with the number of
//!   services;
//! - the host's own connections (`LocalRoutedVIP`) are looked up in the output hook, in maps
//!   of their own (`local4`, `local6`, `nodelocal4`, `nodelocal6`), so only flagged services
//!   are reachable from the host;
//! - a shape's chain draws the backend's index (`numgen random mod N` for distribution None,
//!   `jhash` of the client address for SourceIP, of address and protocol for
//!   SourceIPProtocol), and a common chain turns the index into the backend's connection mark
//!   and DNATs to its address and port through shared maps (`nft_lb_batch`). Services share
//!   shape chains, so a new service, or a new backend, is map elements only: no chain, no
//!   rule, so the kernel's commit-time validation of every chain a verdict can reach (which
//!   grows with the chains) is not triggered;
//! - the connection mark of a backend is [`LB_CT_MARK`] plus a number unique to that backend
//!   of that load balancer: the hns table forwards marked connections to any network (a load
//!   balancer may span networks), and removing a backend clears exactly its connections
//!   ([`crate::conntrack::flush_mark`]);
//! - hairpin: a backend whose connection to its own VIP lands on itself is source-NATed in
//!   postrouting, to the load balancer's `SourceVIP` when it has one (what it sees, as on
//!   Windows), else to the host's address on the way (masquerade). Both are set elements keyed
//!   on the backend's mark (`hairpin4`, `srcvip4`, ...);
//! - a remote backend (an overlay endpoint on another host) is reached through the overlay;
//!   its connections are source-NATed to the `SourceVIP` (set `remote` of marks, the same
//!   `srcvip` maps), whose replies the other hosts send to this host's VXLAN device;
//! - Direct Server Return and PreserveDIP: the shape's common chain picks the backend into the
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
//! This module holds the typed state and the table's skeleton in nft notation
//! ([`skeleton_program`]); `nft_lb_batch` writes the services over nfnetlink.

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

/// A backend on another host (a remote overlay endpoint): every connection sent to it is
/// source-NATed to the load balancer's `SourceVIP`, an overlay address of this host, so the
/// backend's replies come back through this host's connection tracking (its own default route,
/// if any, leads elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Remote {
    pub mark: u32,
    pub source_vip: IpAddr,
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
    pub remote: Vec<Remote>,
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
}

/// The table with its maps and base chains, empty of services.
fn skeleton(out: &mut String) {
    // The value is the service's shape (a number below LB_CT_MARK).
    let v4 = "ipv4_addr . inet_proto . inet_service : mark";
    let v6 = "ipv6_addr . inet_proto . inet_service : mark";
    let node = "inet_proto . inet_service : mark";
    let _ = writeln!(out, "table inet {LB_TABLE} {{");
    for (name, ty) in [("svc4", v4), ("svc6", v6), ("local4", v4), ("local6", v6), ("node4", node), ("node6", node), ("nodelocal4", node), ("nodelocal6", node)] {
        let _ = writeln!(out, "\tmap {name} {{ type {ty}; }}");
    }
    let _ = writeln!(out, "\tmap shapes {{ type mark : verdict; }}");
    let _ = writeln!(out, "\tset hairpin4 {{ type mark . ipv4_addr; }}\n\tset hairpin6 {{ type mark . ipv6_addr; }}");
    let _ = writeln!(out, "\tmap srcvip4 {{ type mark : ipv4_addr; }}\n\tmap srcvip6 {{ type mark : ipv6_addr; }}");
    let _ = writeln!(out, "\tset dsr {{ type mark; }}");
    let _ = writeln!(out, "\tset remote {{ type mark; }}");
    // One element per backend mark, with a counter: the postrouting chain's lookup counts each
    // new connection sent to that backend (hnsd's metrics read them; see [`backend_hits`]).
    let _ = writeln!(out, "\tset hits {{ type mark; counter; }}");
    let _ = writeln!(out, "\tchain refuse {{\n\t\tmeta l4proto tcp reject with tcp reset\n\t\treject\n\t}}");
    let _ = writeln!(
        out,
        "\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat - 10; policy accept;\n\t\tct mark set ip daddr . meta l4proto . th dport map @svc4 ct mark vmap @shapes\n\t\tct mark set ip6 daddr . meta l4proto . th dport map @svc6 ct mark vmap @shapes\n\t\tmeta nfproto ipv4 fib daddr type local ct mark set meta l4proto . th dport map @node4 ct mark vmap @shapes\n\t\tmeta nfproto ipv6 fib daddr type local ct mark set meta l4proto . th dport map @node6 ct mark vmap @shapes\n\t}}"
    );
    let _ = writeln!(
        out,
        "\tchain output {{\n\t\ttype nat hook output priority -110; policy accept;\n\t\tct mark set ip daddr . meta l4proto . th dport map @local4 ct mark vmap @shapes\n\t\tct mark set ip6 daddr . meta l4proto . th dport map @local6 ct mark vmap @shapes\n\t\tmeta nfproto ipv4 fib daddr type local ct mark set meta l4proto . th dport map @nodelocal4 ct mark vmap @shapes\n\t\tmeta nfproto ipv6 fib daddr type local ct mark set meta l4proto . th dport map @nodelocal6 ct mark vmap @shapes\n\t}}"
    );
    let _ = writeln!(
        out,
        "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat - 10; policy accept;\n\t\tct mark & {LB_CT_MARK:#x} == 0 return\n\t\tct mark @hits\n\t\tmeta nfproto ipv4 ct mark @remote snat ip to ct mark map @srcvip4\n\t\tmeta nfproto ipv6 ct mark @remote snat ip6 to ct mark map @srcvip6\n\t\tct mark . ip saddr @hairpin4 snat ip to ct mark map @srcvip4\n\t\tct mark . ip saddr @hairpin4 masquerade\n\t\tct mark . ip6 saddr @hairpin6 snat ip6 to ct mark map @srcvip6\n\t\tct mark . ip6 saddr @hairpin6 masquerade\n\t}}"
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

/// Number of base chains of the skeleton plus `refuse`.
pub const FIXED_CHAINS: usize = 6;

/// The program that replaces the table by its skeleton (maps, base chains, `refuse`), empty
/// of services, in one transaction.
pub fn skeleton_program() -> String {
    let mut out = removal_program();
    skeleton(&mut out);
    out
}

/// The program that removes the table (if it exists): hns without load balancers leaves
/// nothing behind.
pub fn removal_program() -> String {
    format!("table inet {LB_TABLE} {{}}\ndelete table inet {LB_TABLE}\n")
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
        dispatch: text.contains("map @svc4 ct mark vmap @shapes") && text.contains("map @local4 ct mark vmap @shapes") && text.contains("@hairpin4 masquerade") && text.contains("ct mark @remote snat"),
        chains: text.lines().filter(|l| l.trim_start().starts_with("chain ")).count(),
    }
}

/// The table's chains and rules as the kernel lists them (`nft -j -t`: no elements, so the
/// same cost at any number of services); `None` when the table does not exist.
pub fn listed_shape() -> Option<crate::nft::RuleShape> {
    let out = Command::new("nft").args(["-j", "-t", "list", "table", "inet", LB_TABLE]).stdout(Stdio::piped()).stderr(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok().map(|v| crate::nft::RuleShape::of_listing(&v))
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
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("map @svc4 ct mark vmap @shapes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_chain_names_are_unique_per_frontend_protocol_and_port() {
        let s = Service { frontend: Frontend::Vip("10.96.0.10".parse().unwrap()), proto: Proto::Tcp, port: 80, internal: false, local: false, preserve_dip: false, affinity: Affinity::None, backends: vec![] };
        assert_eq!(s.chain(), "s4_0a60000a_tcp_80");
        let six = Service { frontend: Frontend::Vip("fd00:96::10".parse().unwrap()), ..s.clone() };
        assert_eq!(six.chain(), "s6_fd000096000000000000000000000010_tcp_80");
        assert_eq!(Service { frontend: Frontend::Node { v6: true }, ..s.clone() }.chain(), "n6_tcp_80");
        assert_eq!(s.maps(), vec!["svc4"]);
        assert_eq!(Service { local: true, ..s }.maps(), vec!["svc4", "local4"]);
    }

    #[test]
    fn hits_are_read_from_the_sets_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "hits", "table": "hns_lb", "type": "mark", "elem": [{"elem": {"val": 2147483649, "counter": {"packets": 6, "bytes": 504}}}, {"elem": {"val": 2147483650, "counter": {"packets": 0, "bytes": 0}}}]}}]}"#;
        let h = parse_hits(json);
        assert_eq!((h.get(&0x80000001), h.get(&0x80000002), h.len()), (Some(&6), Some(&0), 2));
        assert!(parse_hits("{}").is_empty());
    }

    #[test]
    fn skeleton_dispatches_through_data_maps_and_shapes() {
        assert_eq!(removal_program(), "table inet hns_lb {}\ndelete table inet hns_lb\n");
        let p = skeleton_program();
        assert!(p.starts_with(&removal_program()));
        assert!(p.contains("type nat hook prerouting priority dstnat - 10; policy accept;"));
        assert!(p.contains("map svc4 { type ipv4_addr . inet_proto . inet_service : mark; }"), "{p}");
        assert!(p.contains("map shapes { type mark : verdict; }"), "{p}");
        assert!(p.contains("ct mark set ip daddr . meta l4proto . th dport map @svc4 ct mark vmap @shapes"), "{p}");
        assert!(p.contains("fib daddr type local ct mark set meta l4proto . th dport map @nodelocal6 ct mark vmap @shapes"), "{p}");
        assert!(p.contains("ct mark & 0x80000000 == 0 return"));
        assert!(p.contains("meta nfproto ipv4 ct mark @remote snat ip to ct mark map @srcvip4"), "{p}");
        assert!(p.contains("ct direction original ct mark @dsr meta mark & 0x800000 == 0 meta mark set ct mark"), "{p}");
        assert!(p.contains("icmp type redirect ct mark @dsr drop"), "{p}");
        assert_eq!(p.matches("\tchain ").count(), FIXED_CHAINS);
    }
}
