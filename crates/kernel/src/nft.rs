//! The hns nftables table.
//!
//! All hns packet filtering and NAT lives in one table, `inet hns`. Its content is compiled by a
//! pure function from the desired state ([`Desired`]) into one nft program that replaces the
//! whole table atomically (nft applies a `-f` file as one transaction). Per-network facts are set
//! and map elements, not rules, so the rule count stays constant as networks grow and later
//! per-object updates (port mappings) are single element operations.
//!
//! Applying goes through the `nft` binary: it keeps nft's GPL code behind a process boundary.
//! The whole table is replaced (a few ms, ~100 ms with 10 000 mappings) only when networks
//! change or drift is repaired; single port mappings are added and removed as elements over
//! nfnetlink ([`crate::nft_elements`]), in microseconds.

use std::io::Write;
use std::process::{Command, Stdio};

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{KernelError, Result};
use crate::names::NFT_TABLE;

/// One network's contribution to the table.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkRules {
    /// The bridge (or other link) the network's endpoints hang off.
    pub bridge: String,
    /// Its subnets.
    pub subnets: Vec<IpNet>,
    /// Source NAT towards the outside (nat driver).
    pub masquerade: bool,
    /// No traffic to or from outside the network (`--internal`).
    pub internal: bool,
    /// Unsolicited inbound traffic from outside the host is dropped (nat driver: only port
    /// mappings reach its endpoints).
    pub inbound_closed: bool,
    /// Addresses of the network's DNS responder (both families). Port 53 of these addresses
    /// is open only to packets arriving on this network's bridge: not to other networks, the
    /// LAN, or external networks' host legs (the responder isolates networks by address).
    pub dns_listeners: Vec<IpAddr>,
}

/// One port mapping: traffic for a host port (on every host address of the container
/// address's family, or on `host_ip`) is sent to a container's address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mapping {
    /// "tcp" or "udp".
    pub proto: Proto,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn from_number(n: u32) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
    pub fn number(self) -> u32 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl Mapping {
    /// The map element (key : value) of the DNAT map the mapping belongs to.
    pub(crate) fn map_element(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{ip} . {} . {} : {} . {}", self.proto, self.host_port, self.container_ip, self.container_port),
            None => format!("{} . {} : {} . {}", self.proto, self.host_port, self.container_ip, self.container_port),
        }
    }
    pub(crate) fn map_key(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{ip} . {} . {}", self.proto, self.host_port),
            None => format!("{} . {}", self.proto, self.host_port),
        }
    }
    pub(crate) fn map_name(&self) -> &'static str {
        match (self.container_ip.is_ipv4(), self.host_ip.is_some()) {
            (true, false) => "pm4",
            (true, true) => "pm4ip",
            (false, false) => "pm6",
            (false, true) => "pm6ip",
        }
    }
    pub(crate) fn allow_set(&self) -> &'static str {
        if self.container_ip.is_ipv4() { "pm_allow4" } else { "pm_allow6" }
    }
    /// The element of the forward allow set (seed 000's firewall rule of a static mapping).
    pub(crate) fn allow_element(&self) -> String {
        format!("{} . {} . {}", self.container_ip, self.proto, self.container_port)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub networks: Vec<NetworkRules>,
    /// Port mappings of attached endpoints.
    pub mappings: Vec<Mapping>,
}

fn elements<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if v.is_empty() { String::new() } else { format!(" elements = {{ {} }};", v.join(", ")) }
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// The elements of every set and map of the table, by name, as nft source text (interface
/// names quoted): what [`compile`] writes and [`matches_exactly`] compares.
fn set_elements(d: &Desired) -> Vec<(&'static str, Vec<String>)> {
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v
    };
    let bridges = d.networks.iter().map(|n| quoted(&n.bridge)).collect();
    let same = d.networks.iter().map(|n| format!("{} . {}", quoted(&n.bridge), quoted(&n.bridge))).collect();
    let internal = d.networks.iter().filter(|n| n.internal).map(|n| quoted(&n.bridge)).collect();
    let closed = d.networks.iter().filter(|n| n.inbound_closed).map(|n| quoted(&n.bridge)).collect();
    let masq = |v4: bool| {
        let mut v: Vec<IpNet> = d
            .networks
            .iter()
            .filter(|n| n.masquerade && !n.internal)
            .flat_map(|n| n.subnets.iter().copied())
            .filter(|s| matches!(s, IpNet::V4(_)) == v4)
            .collect();
        v.sort();
        v.dedup();
        v.into_iter().map(|n| n.to_string()).collect()
    };
    // Every responder address, and the one bridge each may be queried from.
    let listeners = |v4: bool| d.networks.iter().flat_map(move |n| n.dns_listeners.iter().filter(move |ip| ip.is_ipv4() == v4).map(move |ip| (n, ip)));
    let dns_gw = |v4: bool| listeners(v4).map(|(_, ip)| ip.to_string()).collect();
    let dns = |v4: bool| listeners(v4).map(|(n, ip)| format!("{} . {ip}", quoted(&n.bridge))).collect();
    let of = |name: &str| sorted(d.mappings.iter().filter(|m| m.map_name() == name).map(|m| m.map_element()).collect());
    let allow = |set: &str| sorted(d.mappings.iter().filter(|m| m.allow_set() == set).map(|m| m.allow_element()).collect());
    vec![
        ("bridges", bridges),
        ("same_network", same),
        ("internal", internal),
        ("inbound_closed", closed),
        ("masq4", masq(true)),
        ("masq6", masq(false)),
        ("pm4", of("pm4")),
        ("pm4ip", of("pm4ip")),
        ("pm_allow4", allow("pm_allow4")),
        ("pm6", of("pm6")),
        ("pm6ip", of("pm6ip")),
        ("pm_allow6", allow("pm_allow6")),
        ("dns_gateways4", dns_gw(true)),
        ("dns_gateways6", dns_gw(false)),
        ("dns_listeners4", dns(true)),
        ("dns_listeners6", dns(false)),
        ("sync", vec![]),
    ]
}

/// Compiles the whole table. The program first creates then deletes the table, so it applies
/// the same way whether or not the table exists, and replaces it in one transaction.
pub fn compile(d: &Desired) -> String {
    let sets = set_elements(d);
    let e = |name: &str| elements(sets.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).unwrap_or_default());
    format!(
        r#"table inet {t} {{}}
delete table inet {t}
table inet {t} {{
  set bridges {{ type ifname;{bridges} }}
  set same_network {{ type ifname . ifname;{same} }}
  set internal {{ type ifname;{internal} }}
  set inbound_closed {{ type ifname;{closed} }}
  set masq4 {{ type ipv4_addr; flags interval;{masq4} }}
  set masq6 {{ type ipv6_addr; flags interval;{masq6} }}
  map pm4 {{ type inet_proto . inet_service : ipv4_addr . inet_service;{pm4} }}
  map pm4ip {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;{pm4ip} }}
  set pm_allow4 {{ type ipv4_addr . inet_proto . inet_service;{allow4} }}
  map pm6 {{ type inet_proto . inet_service : ipv6_addr . inet_service;{pm6} }}
  map pm6ip {{ type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service;{pm6ip} }}
  set pm_allow6 {{ type ipv6_addr . inet_proto . inet_service;{allow6} }}
  set dns_gateways4 {{ type ipv4_addr;{dns_gw4} }}
  set dns_gateways6 {{ type ipv6_addr;{dns_gw6} }}
  set dns_listeners4 {{ type ifname . ipv4_addr;{dns4} }}
  set dns_listeners6 {{ type ifname . ipv6_addr;{dns6} }}
  set sync {{ type inet_service; }}
  chain guard {{
    type filter hook prerouting priority raw; policy accept;
    iifname != "lo" ip saddr 127.0.0.0/8 drop
    iifname != "lo" ip daddr 127.0.0.0/8 drop
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    meta l4proto {{ tcp, udp }} th dport 53 ip daddr @dns_gateways4 iifname . ip daddr != @dns_listeners4 drop
    meta l4proto {{ tcp, udp }} th dport 53 ip6 daddr @dns_gateways6 iifname . ip6 daddr != @dns_listeners6 drop
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local dnat ip addr . port to ip daddr . meta l4proto . th dport map @pm4ip
    fib daddr type local dnat ip addr . port to meta l4proto . th dport map @pm4
    fib daddr type local dnat ip6 addr . port to ip6 daddr . meta l4proto . th dport map @pm6ip
    fib daddr type local dnat ip6 addr . port to meta l4proto . th dport map @pm6
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    fib daddr type local dnat ip addr . port to ip daddr . meta l4proto . th dport map @pm4ip
    fib daddr type local dnat ip addr . port to meta l4proto . th dport map @pm4
    ip6 daddr != ::1 fib daddr type local dnat ip6 addr . port to ip6 daddr . meta l4proto . th dport map @pm6ip
    ip6 daddr != ::1 fib daddr type local dnat ip6 addr . port to meta l4proto . th dport map @pm6
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct mark & {lb_mark:#x} == {lb_mark:#x} accept
    iifname . oifname @same_network accept
    iifname @bridges oifname @bridges drop
    meta mark & {onat:#x} == {onat:#x} accept
    iifname @internal drop
    oifname @internal drop
    oifname @inbound_closed ct state established,related accept
    oifname @inbound_closed ip daddr . meta l4proto . th dport @pm_allow4 ct status dnat accept
    oifname @inbound_closed ip6 daddr . meta l4proto . th dport @pm_allow6 ct status dnat accept
    oifname @inbound_closed drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 127.0.0.0/8 ct status dnat masquerade
    ip saddr @masq4 ct status dnat oifname @bridges masquerade
    ip6 saddr @masq6 ct status dnat oifname @bridges masquerade
    ip saddr @masq4 oifname != @bridges masquerade
    ip6 saddr @masq6 oifname != @bridges masquerade
  }}
}}
"#,
        t = NFT_TABLE,
        lb_mark = crate::nft_lb::LB_CT_MARK,
        onat = crate::nft_outbound::FORWARD_MARK,
        bridges = e("bridges"),
        same = e("same_network"),
        internal = e("internal"),
        closed = e("inbound_closed"),
        masq4 = e("masq4"),
        masq6 = e("masq6"),
        pm4 = e("pm4"),
        pm4ip = e("pm4ip"),
        pm6 = e("pm6"),
        pm6ip = e("pm6ip"),
        allow4 = e("pm_allow4"),
        allow6 = e("pm_allow6"),
        dns_gw4 = e("dns_gateways4"),
        dns_gw6 = e("dns_gateways6"),
        dns4 = e("dns_listeners4"),
        dns6 = e("dns_listeners6"),
    )
}

/// Runs one nft program (atomically) through `nft -f -`.
pub fn run(program: &str) -> Result<()> {
    run_program(program, "apply nft program", &format!("table inet {NFT_TABLE}"))
}

/// Runs one nft program (atomically) through `nft -f -`; a refusal is reported as `what` on
/// `target`, with nft's own message.
pub fn run_program(program: &str, what: &str, target: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KernelError::io("run nft", "nft -f -", e))?;
    // Its transaction is hns's own, not a firewall reload to repair (nft_events).
    crate::nft_events::note_own_writer(child.id());
    child.stdin.take().expect("piped").write_all(program.as_bytes()).map_err(|e| KernelError::io("write nft program", "nft", e))?;
    let out = child.wait_with_output().map_err(|e| KernelError::io("wait for nft", "nft", e))?;
    if !out.status.success() {
        return Err(KernelError::new(what, target, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Makes the kernel table match `d`. With no network at all the table is removed, so an
/// unused hns leaves nothing behind.
pub fn apply(d: &Desired) -> Result<()> {
    if d.networks.is_empty() {
        return delete_table();
    }
    run(&compile(d))
}

/// Removes the hns table if present.
pub fn delete_table() -> Result<()> {
    run(&format!("table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\n"))
}

/// What the kernel holds now, reduced to what drift detection compares.
#[derive(Debug, Default, PartialEq)]
pub struct Observed {
    pub present: bool,
    pub rules: RuleShape,
}

/// The table's chains and rules as the kernel lists them (`nft -j`): each chain's definition
/// and its rules' expressions in order, by chain name (the order chains were made in does not
/// matter: a table grown change by change lists them otherwise than one written whole),
/// without handles or elements. A rule edited, added or removed by hand shows as a
/// difference, not only a flushed chain.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuleShape(std::collections::BTreeMap<String, Vec<String>>);

impl RuleShape {
    /// The shape of an `nft -j list table` output (terse or not).
    pub fn of_listing(v: &serde_json::Value) -> RuleShape {
        fn strip(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(o) => {
                    o.remove("handle");
                    o.values_mut().for_each(strip);
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
                _ => {}
            }
        }
        let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for item in v.get("nftables").and_then(|n| n.as_array()).into_iter().flatten() {
            let (Some(x), name) = (item.get("chain").or_else(|| item.get("rule")), if item.get("chain").is_some() { "name" } else { "chain" }) else { continue };
            let chain = x.get(name).and_then(|n| n.as_str()).unwrap_or_default().to_owned();
            let mut x = x.clone();
            strip(&mut x);
            out.entry(chain).or_default().push(x.to_string());
        }
        RuleShape(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The shape of the rules `program` leaves in `table` (`inet hns`, ...), in this kernel's own
/// notation: the program applied in a scratch network namespace (a thread of its own unshares
/// one; nothing reaches the host's tables) and read back. A few milliseconds: callers cache it.
pub fn scratch_shape(program: &str, table: &str) -> std::result::Result<RuleShape, String> {
    let (program, table) = (program.to_owned(), table.to_owned());
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare a scratch network namespace: {e}"))?;
        run_program(&program, "apply nft program in a scratch namespace", &table).map_err(|e| e.to_string())?;
        let mut args = vec!["-j", "-t", "list", "table"];
        args.extend(table.split_whitespace());
        let out = Command::new("nft").args(&args).output().map_err(|e| format!("run nft: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("parse nft output: {e}"))?;
        Ok(RuleShape::of_listing(&v))
    })
    .join()
    .unwrap_or_else(|_| Err("the scratch namespace thread panicked".into()))
}

/// A [`scratch_shape`] kept with the key it was made for (what the program's rules depend on),
/// so a drift check pays for the scratch namespace only when that changes.
pub struct ShapeCache<K>(std::sync::Mutex<Option<(K, RuleShape)>>);

impl<K: PartialEq> Default for ShapeCache<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: PartialEq> ShapeCache<K> {
    pub const fn new() -> ShapeCache<K> {
        ShapeCache(std::sync::Mutex::new(None))
    }

    /// The shape for `key`: the kept one, or `program()`'s in `table`, then kept.
    pub fn get(&self, key: K, program: impl FnOnce() -> String, table: &str) -> std::result::Result<RuleShape, String> {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, shape)) = last.as_ref()
            && *k == key
        {
            return Ok(shape.clone());
        }
        let shape = scratch_shape(&program(), table)?;
        *last = Some((key, shape.clone()));
        Ok(shape)
    }
}

/// The shape of [`compile`]'s rules (the same for every state), computed once per process.
pub fn template_shape() -> std::result::Result<&'static RuleShape, String> {
    static SHAPE: std::sync::OnceLock<std::result::Result<RuleShape, String>> = std::sync::OnceLock::new();
    SHAPE.get_or_init(|| scratch_shape(&compile(&Desired::default()), &format!("inet {NFT_TABLE}"))).as_ref().map_err(Clone::clone)
}

/// Whether `shape` is the template's. Without a template shape (no scratch namespace could be
/// made; hnsd logs why at start), a table with rules passes: only a flushed or deleted one is
/// then detected.
fn is_template(shape: &RuleShape) -> bool {
    match template_shape() {
        Ok(t) => shape == t,
        Err(_) => !shape.is_empty(),
    }
}

/// Reads the hns table back without its elements (`nft -t`: with 10 000 mappings a full
/// listing takes ~0.35 s, a terse one a fraction of that) and reduces it to [`Observed`].
/// A deleted or flushed table is what firewall reloads do to every peer; that is detected.
/// Single elements removed by hand are not: they come back with the next full apply.
pub fn observe() -> Result<Observed> {
    let out = Command::new("nft")
        .args(["-j", "-t", "list", "table", "inet", NFT_TABLE])
        .output()
        .map_err(|e| KernelError::io("run nft", "nft -j -t list table", e))?;
    if !out.status.success() {
        // nft says "No such file or directory" for a missing table.
        return Ok(Observed::default());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| KernelError::new("parse nft output", NFT_TABLE, e))?;
    Ok(Observed { present: true, rules: RuleShape::of_listing(&v) })
}

/// Whether the kernel's table holds exactly what [`compile`] would write for `d`: every set
/// and map with exactly its elements, and the chains and rules (as [`drifted`]). Reads the
/// table back with its elements (one `nft -j list`, ~0.35 s at 10 000 mappings), so it is for
/// the start, where after a crash the store may hold elements the kernel never got, not for
/// every periodic pass. With no network the table must be absent.
pub fn matches_exactly(d: &Desired) -> Result<bool> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", NFT_TABLE])
        .output()
        .map_err(|e| KernelError::io("run nft", "nft -j list table", e))?;
    if !out.status.success() {
        return Ok(d.networks.is_empty());
    }
    if d.networks.is_empty() {
        return Ok(false);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| KernelError::new("parse nft output", NFT_TABLE, e))?;
    if !is_template(&RuleShape::of_listing(&v)) {
        return Ok(false);
    }
    let items = v.get("nftables").and_then(|n| n.as_array()).cloned().unwrap_or_default();
    let mut kernel: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for i in &items {
        let Some(set) = i.get("set").or_else(|| i.get("map")) else { continue };
        let name = set.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_owned();
        let elems = set.get("elem").and_then(|e| e.as_array()).map(|a| a.iter().map(element_text).collect()).unwrap_or_default();
        kernel.insert(name, elems);
    }
    let wanted: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        set_elements(d).into_iter().map(|(n, v)| (n.to_owned(), v.into_iter().map(|e| e.replace('"', "")).collect())).collect();
    Ok(kernel == wanted)
}

/// An element of `nft -j` output as nft source text without quotes (`a . b`, `addr/len`,
/// `key : value`).
fn element_text(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(kv) if kv.len() == 2 => format!("{} : {}", element_text(&kv[0]), element_text(&kv[1])),
        Value::Object(o) => {
            if let Some(Value::Array(parts)) = o.get("concat") {
                parts.iter().map(element_text).collect::<Vec<_>>().join(" . ")
            } else if let Some(p) = o.get("prefix") {
                format!("{}/{}", element_text(&p["addr"]), element_text(&p["len"]))
            } else if let Some(Value::Array(r)) = o.get("range") {
                format!("{}-{}", element_text(&r[0]), element_text(&r[1]))
            } else if let Some(e) = o.get("elem") {
                element_text(&e["val"])
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// True when the kernel's table no longer matches `d`: missing, a chain or rule flushed,
/// edited or added, or present while there is no network.
pub fn drifted(d: &Desired, o: &Observed) -> bool {
    if d.networks.is_empty() {
        return o.present;
    }
    !o.present || !is_template(&o.rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_ignore_handles_and_elements() {
        let a = serde_json::json!({"nftables": [{"metainfo": {}}, {"set": {"name": "bridges", "elem": ["hns-a"]}}, {"chain": {"name": "forward", "handle": 3}}, {"rule": {"chain": "forward", "handle": 7, "expr": [{"drop": null}]}}]});
        let b = serde_json::json!({"nftables": [{"chain": {"name": "forward", "handle": 9}}, {"rule": {"chain": "forward", "handle": 12, "expr": [{"drop": null}]}}]});
        assert_eq!(RuleShape::of_listing(&a), RuleShape::of_listing(&b));
        let c = serde_json::json!({"nftables": [{"chain": {"name": "forward"}}, {"rule": {"chain": "forward", "expr": [{"accept": null}]}}]});
        assert_ne!(RuleShape::of_listing(&a), RuleShape::of_listing(&c));
        // Chains made in another order: the same shape; rules in another order: not.
        let two = |first: &str, second: &str| serde_json::json!({"nftables": [{"chain": {"name": first}}, {"chain": {"name": second}}, {"rule": {"chain": "x", "expr": [{"drop": null}]}}, {"rule": {"chain": "x", "expr": [{"accept": null}]}}]});
        assert_eq!(RuleShape::of_listing(&two("x", "y")), RuleShape::of_listing(&two("y", "x")));
        let swapped = serde_json::json!({"nftables": [{"chain": {"name": "x"}}, {"chain": {"name": "y"}}, {"rule": {"chain": "x", "expr": [{"accept": null}]}}, {"rule": {"chain": "x", "expr": [{"drop": null}]}}]});
        assert_ne!(RuleShape::of_listing(&two("x", "y")), RuleShape::of_listing(&swapped));
    }

    #[test]
    fn kernel_elements_read_back_as_the_source_text_compile_writes() {
        let v: serde_json::Value = serde_json::json!([
            "hns-a",
            {"concat": ["hns-a", "10.0.0.1"]},
            {"prefix": {"addr": "fd00:1::", "len": 64}},
            [{"concat": ["tcp", 8080]}, {"concat": ["10.0.0.2", 80]}],
            {"elem": {"val": {"concat": ["10.0.0.2", "udp", 53]}, "counter": {"packets": 0, "bytes": 0}}}
        ]);
        let got: Vec<String> = v.as_array().unwrap().iter().map(element_text).collect();
        assert_eq!(got, ["hns-a", "hns-a . 10.0.0.1", "fd00:1::/64", "tcp . 8080 : 10.0.0.2 . 80", "10.0.0.2 . udp . 53"]);
    }

    fn net(bridge: &str, subnet: &str, internal: bool) -> NetworkRules {
        NetworkRules { bridge: bridge.into(), subnets: vec![subnet.parse().unwrap()], masquerade: true, internal, inbound_closed: true, dns_listeners: vec![] }
    }

    fn m(port: u16, host_ip: Option<&str>, ip: &str, cport: u16) -> Mapping {
        Mapping { proto: Proto::Tcp, host_ip: host_ip.map(|h| h.parse().unwrap()), host_port: port, container_ip: ip.parse().unwrap(), container_port: cport }
    }

    #[test]
    fn mappings_are_map_elements_with_an_allow_element() {
        let d = Desired { networks: vec![net("hns-aaaaaaaa", "172.20.0.0/16", false)], mappings: vec![m(8080, None, "172.20.0.2", 80), m(53, Some("198.51.100.2"), "172.20.0.3", 5353)] };
        let p = compile(&d);
        assert!(p.contains("map pm4 { type inet_proto . inet_service : ipv4_addr . inet_service; elements = { tcp . 8080 : 172.20.0.2 . 80 }; }"), "{p}");
        assert!(p.contains("elements = { 198.51.100.2 . tcp . 53 : 172.20.0.3 . 5353 }"), "{p}");
        assert!(p.contains("set pm_allow4 { type ipv4_addr . inet_proto . inet_service; elements = { 172.20.0.2 . tcp . 80, 172.20.0.3 . tcp . 5353 }; }"), "{p}");
        let more = Desired { mappings: (0..100).map(|i| m(10000 + i, None, "172.20.0.2", 80)).collect(), ..d.clone() };
        assert_eq!(compile(&more).lines().count(), p.lines().count(), "mappings add elements, not rules");
    }

    #[test]
    fn empty_state_compiles_to_empty_sets() {
        let p = compile(&Desired::default());
        assert!(p.starts_with("table inet hns {}\ndelete table inet hns\n"));
        assert!(p.contains("set bridges { type ifname; }"));
        assert!(!p.contains("elements"));
        assert!(p.contains("map pm6 {"), "{p}");
    }

    #[test]
    fn networks_become_elements_not_rules() {
        let one = compile(&Desired { networks: vec![net("hns-aaaaaaaa", "172.20.0.0/16", false)], ..Default::default() });
        let two = compile(&Desired { networks: vec![net("hns-aaaaaaaa", "172.20.0.0/16", false), net("hns-bbbbbbbb", "172.21.0.0/16", true)], ..Default::default() });
        assert_eq!(one.lines().count(), two.lines().count(), "a network must add elements, not rules");
        assert!(two.contains(r#"set same_network { type ifname . ifname; elements = { "hns-aaaaaaaa" . "hns-aaaaaaaa", "hns-bbbbbbbb" . "hns-bbbbbbbb" }; }"#));
        assert!(two.contains(r#"set internal { type ifname; elements = { "hns-bbbbbbbb" }; }"#));
        // An internal network is never masqueraded.
        assert!(two.contains("set masq4 { type ipv4_addr; flags interval; elements = { 172.20.0.0/16 }; }"));
    }

    #[test]
    fn dns_listeners_of_both_families_are_open_to_their_own_bridge_only() {
        let mut a = net("hns-aaaaaaaa", "172.20.0.0/16", false);
        a.dns_listeners = vec!["172.20.0.1".parse().unwrap(), "fd00:20::1".parse().unwrap()];
        let mut b = net("hns-bbbbbbbb", "172.21.0.0/16", false);
        b.dns_listeners = vec!["172.21.0.1".parse().unwrap()];
        let p = compile(&Desired { networks: vec![a, b], ..Default::default() });
        assert!(p.contains("set dns_gateways4 { type ipv4_addr; elements = { 172.20.0.1, 172.21.0.1 }; }"), "{p}");
        assert!(p.contains("set dns_gateways6 { type ipv6_addr; elements = { fd00:20::1 }; }"), "{p}");
        assert!(p.contains(r#"set dns_listeners4 { type ifname . ipv4_addr; elements = { "hns-aaaaaaaa" . 172.20.0.1, "hns-bbbbbbbb" . 172.21.0.1 }; }"#), "{p}");
        assert!(p.contains(r#"set dns_listeners6 { type ifname . ipv6_addr; elements = { "hns-aaaaaaaa" . fd00:20::1 }; }"#), "{p}");
        // The drop covers every ingress (no `iifname @bridges` guard): the LAN and external
        // networks' host legs too.
        let input: Vec<&str> = p.lines().skip_while(|l| !l.contains("chain input")).take_while(|l| !l.trim().starts_with('}')).collect();
        assert!(input.iter().any(|l| l.trim() == "meta l4proto { tcp, udp } th dport 53 ip daddr @dns_gateways4 iifname . ip daddr != @dns_listeners4 drop"), "{input:?}");
        assert!(input.iter().any(|l| l.trim() == "meta l4proto { tcp, udp } th dport 53 ip6 daddr @dns_gateways6 iifname . ip6 daddr != @dns_listeners6 drop"), "{input:?}");
        assert!(!input.iter().any(|l| l.contains("@bridges")), "{input:?}");
    }

    #[test]
    fn drift_detection() {
        let d = Desired { networks: vec![net("hns-aaaaaaaa", "172.20.0.0/16", false)], ..Default::default() };
        let good = Observed { present: true, rules: template_shape().expect("a scratch namespace (run as root)").clone() };
        // Each chain's entry is its definition, then its rules.
        assert!(good.rules.0.values().map(|v| v.len() - 1).sum::<usize>() > 20, "{:?}", good.rules);
        assert!(!drifted(&d, &good));
        assert!(drifted(&d, &Observed { present: true, rules: RuleShape::default() }), "a flushed table");
        let mut edited = good.rules.clone();
        let forward = edited.0.get_mut("forward").expect("the forward chain");
        let last = forward.iter().rposition(|r| r.contains("\"drop\"")).expect("a drop rule");
        forward[last] = forward[last].replace("\"drop\"", "\"accept\"");
        assert!(drifted(&d, &Observed { present: true, rules: edited }), "a rule edited by hand, same count");
        assert!(drifted(&d, &Observed::default()), "a deleted table");
        // No network: the table must not exist at all.
        assert!(drifted(&Desired::default(), &good));
        assert!(!drifted(&Desired::default(), &Observed::default()));
    }

}
