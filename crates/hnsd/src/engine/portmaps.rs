//! Port mappings (WinNAT static mappings): the `PortMapping` endpoint policy, host-port
//! allocation and conflicts, and their kernel form (one nft map element and one allow-set
//! element per mapping, changed through the long-lived nft session).
//!
//! A mapping lives in its endpoint's `Policies`, so it is stored, allocated and deleted in
//! the same transaction as the endpoint; the kernel holds it only while the endpoint is
//! attached (it needs the container's address).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;

use hns_api::{ApiError, ErrorCode, Policy, PortMappingInfo, PortMappingSettings};
use hns_kernel::nft::{Mapping, Proto};

use super::records::EndpointRecord;
use super::validate::{ENDPOINT_POLICY_TYPES, refuse_policy};
use super::{Engine, Result};

/// The most element changes written in one netlink batch; more go through a full apply.
const MAX_ELEMENT_BATCH: usize = 64;

/// The policy type name, canonical spelling.
pub const PORT_MAPPING: &str = "PortMapping";

/// A holder of a host port: the host address it is bound to (`None`: all) and its endpoint.
type Holder = (Option<IpAddr>, String);

/// Host ports in use: (protocol, port) -> holders, each bound to one host address or to all.
#[derive(Debug, Default)]
pub struct PortIndex {
    used: HashMap<(Proto, u16), Vec<Holder>>,
    /// Next-fit cursor of dynamic allocation, persisted with each allocation.
    pub cursor: u16,
    pub range: (u16, u16),
}

impl PortIndex {
    pub fn new(range: (u16, u16), cursor: u16) -> PortIndex {
        PortIndex { used: HashMap::new(), cursor, range }
    }

    /// The endpoint holding a conflicting mapping, if any: a port bound to every address
    /// conflicts with every binding of that port, a bound one with the same address.
    fn holder(&self, proto: Proto, vip: Option<IpAddr>, port: u16) -> Option<&str> {
        self.used.get(&(proto, port))?.iter().find(|(ip, _)| ip.is_none() || vip.is_none() || *ip == vip).map(|(_, e)| e.as_str())
    }

    pub fn take(&mut self, proto: Proto, vip: Option<IpAddr>, port: u16, endpoint: &str) {
        self.used.entry((proto, port)).or_default().push((vip, endpoint.to_owned()));
    }

    pub fn release(&mut self, proto: Proto, vip: Option<IpAddr>, port: u16, endpoint: &str) {
        if let Some(v) = self.used.get_mut(&(proto, port)) {
            v.retain(|(ip, e)| !(*ip == vip && e == endpoint));
            if v.is_empty() {
                self.used.remove(&(proto, port));
            }
        }
    }

    /// Reserves a host port for a mapping: the requested one, or the next free one of `range`
    /// (next-fit, so a released port is not handed out again at once).
    pub fn claim(&mut self, s: &PortMappingSettings, endpoint: &str, field: &str, holders: &dyn Fn(&str) -> String) -> Result<u16> {
        let proto = Proto::from_number(s.protocol).expect("validated");
        let vip = vip_of(s);
        if s.external_port != 0 {
            if let Some(h) = self.holder(proto, vip, s.external_port) {
                return Err(ApiError::field(
                    ErrorCode::PortAlreadyExists,
                    format!("{field}.ExternalPort"),
                    format!("host port {}/{proto}{} is already mapped to {}; choose another host port", s.external_port, on(vip), holders(h)),
                ));
            }
            if let Some(why) = local_socket_conflict(proto, vip, s.external_port) {
                return Err(ApiError::field(ErrorCode::PortAlreadyExists, format!("{field}.ExternalPort"), why));
            }
            self.take(proto, vip, s.external_port, endpoint);
            return Ok(s.external_port);
        }
        let (lo, hi, dynamic) = match parse_range(&s.external_port_range) {
            Some((lo, hi)) => (lo, hi, false),
            None => (self.range.0, self.range.1, true),
        };
        let len = u32::from(hi - lo) + 1;
        let start = if dynamic && (lo..=hi).contains(&self.cursor) { self.cursor } else { lo };
        for i in 0..len {
            let port = lo + ((u32::from(start - lo) + i) % len) as u16;
            if self.holder(proto, vip, port).is_none() && local_socket_conflict(proto, vip, port).is_none() {
                self.take(proto, vip, port, endpoint);
                if dynamic {
                    self.cursor = if port == hi { lo } else { port + 1 };
                }
                return Ok(port);
            }
        }
        Err(ApiError::field(ErrorCode::PortPoolExhausted, format!("{field}.ExternalPort"), format!("no free host port for {proto} in {lo}-{hi}; free a mapping or widen the range")))
    }
}

fn on(vip: Option<IpAddr>) -> String {
    vip.map(|v| format!(" on {v}")).unwrap_or_default()
}

pub fn vip_of(s: &PortMappingSettings) -> Option<IpAddr> {
    s.vip.parse().ok()
}

fn parse_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
    (a >= 1 && a <= b).then_some((a, b))
}

/// A host port a local process already listens on is refused, as Windows users learn the hard
/// way when WinNAT silently loses to a reserved port range.
fn local_socket_conflict(proto: Proto, vip: Option<IpAddr>, port: u16) -> Option<String> {
    // A process hnsd starts (nft) holds a copy of every descriptor hnsd had open when it was
    // forked, until it runs its program: a probe socket of another request, closed here,
    // may live on there for a moment and make this probe fail. A conflict that holds no
    // listening socket is looked at again before it is believed.
    for attempt in 0..3 {
        if !port_in_use(proto, vip, port) {
            return None;
        }
        let holders = port_holders(proto, vip, port);
        if !holders.is_empty() || attempt == 2 {
            let who = if holders.is_empty() { "a local process".to_owned() } else { format!("local process {}", holders.join(", ")) };
            return Some(format!("host port {port}/{proto}{} is already used by {who}; choose another host port", on(vip)));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    None
}

/// Whether binding the mapping's port fails because a socket has it.
fn port_in_use(proto: Proto, vip: Option<IpAddr>, port: u16) -> bool {
    // Unbound mappings take the port on every address of both families.
    let addrs = match vip {
        Some(ip) => vec![ip],
        None => vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
    };
    addrs.into_iter().any(|ip| {
        let addr = SocketAddr::new(ip, port);
        let err = match proto {
            Proto::Tcp => TcpListener::bind(addr).err(),
            Proto::Udp => UdpSocket::bind(addr).err(),
        };
        err.is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// The processes holding a socket on `port` that conflicts with a mapping on `vip`
/// ("PID 1234 (nginx)"): the socket inodes from hnsd's namespace's /proc/net tables, then the
/// processes with a descriptor on one of them. Best effort: what cannot be read is skipped.
fn port_holders(proto: Proto, vip: Option<IpAddr>, port: u16) -> Vec<String> {
    let conflicts = |a: &SocketAddr| a.port() == port && (vip.is_none() || a.ip().is_unspecified() || Some(a.ip()) == vip);
    let inodes: std::collections::HashSet<u64> = match proto {
        Proto::Tcp => [procfs::net::tcp(), procfs::net::tcp6()]
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.state == procfs::net::TcpState::Listen && conflicts(&e.local_address))
            .map(|e| e.inode)
            .collect(),
        Proto::Udp => [procfs::net::udp(), procfs::net::udp6()].into_iter().flatten().flatten().filter(|e| conflicts(&e.local_address)).map(|e| e.inode).collect(),
    };
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
    all.flatten()
        .filter(|p| p.fd().is_ok_and(|mut fds| fds.any(|fd| fd.is_ok_and(|fd| matches!(fd.target, procfs::process::FDTarget::Socket(i) if inodes.contains(&i))))))
        .map(|p| format!("PID {} ({})", p.pid, p.stat().map(|s| s.comm).unwrap_or_default()))
        .collect()
}

/// Parses and checks the policies of an endpoint request. Only `PortMapping` is implemented.
/// Port mappings are a nat network's way in; a container on the LAN is reached at its own
/// address (as on Windows, where only nat publishes ports).
pub fn check_network_takes_mappings(kind: hns_api::NetworkType, mappings: &[PortMappingSettings], field: &str) -> Result<()> {
    if !mappings.is_empty() && hns_drivers::is_external(kind) {
        return Err(ApiError::field(
            ErrorCode::InvalidPolicy,
            field,
            format!("port mappings are for nat networks; a container on a {kind} network is reached directly at its own address, so remove -p"),
        ));
    }
    if !mappings.is_empty() && kind == hns_api::NetworkType::Overlay {
        return Err(ApiError::field(
            ErrorCode::InvalidPolicy,
            field,
            "port mappings are for nat networks: an overlay network is not routed to the outside (as on Windows); give the container an endpoint on a nat network and publish the port there",
        ));
    }
    Ok(())
}

pub fn parse_policies(policies: &[Policy], field: &str) -> Result<Vec<PortMappingSettings>> {
    let mut out: Vec<PortMappingSettings> = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        if super::policies::is_acl(p) || super::epolicies::is_endpoint_kind(p) {
            continue; // parsed by `policies`, `epolicies`
        }
        if !p.kind.eq_ignore_ascii_case(PORT_MAPPING) {
            return Err(refuse_policy(p, i, field, "endpoint", ENDPOINT_POLICY_TYPES));
        }
        let f = format!("{field}[{i}].Settings");
        let s: PortMappingSettings = hns_api::decode::from_value(p.settings.clone(), &f).map_err(|e| ApiError { code: ErrorCode::InvalidPolicy, ..e })?;
        if Proto::from_number(s.protocol).is_none() {
            return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("{f}.Protocol"), format!("protocol {} cannot be mapped; use 6 (TCP) or 17 (UDP)", s.protocol)));
        }
        if s.internal_port == 0 {
            return Err(ApiError::field(ErrorCode::InvalidInternalPort, format!("{f}.InternalPort"), "InternalPort must be a container port from 1 to 65535"));
        }
        if s.flags != 0 {
            return Err(ApiError::field(ErrorCode::RequestUnsupported, format!("{f}.Flags"), format!("mapping flags {:#x} are not supported yet; send 0", s.flags)));
        }
        if !s.vip.is_empty() {
            match s.vip.parse::<IpAddr>() {
                Ok(ip) if ip == IpAddr::V6(Ipv6Addr::LOCALHOST) => {
                    return Err(ApiError::field(
                        ErrorCode::MappingNotSupported,
                        format!("{f}.VIP"),
                        "::1 cannot be mapped: the kernel does not forward IPv6 loopback traffic to other interfaces; use 127.0.0.1 or a host address",
                    ));
                }
                Ok(ip) => {
                    if UdpSocket::bind(SocketAddr::new(ip, 0)).is_err_and(|e| e.kind() == std::io::ErrorKind::AddrNotAvailable) {
                        return Err(ApiError::field(ErrorCode::InvalidIp, format!("{f}.VIP"), format!("VIP {ip} is not an address of this host; bind the mapping to one of the host's addresses or leave VIP empty")));
                    }
                }
                Err(_) => return Err(ApiError::field(ErrorCode::InvalidIp, format!("{f}.VIP"), format!("VIP {:?} is not an IP address", s.vip))),
            }
        }
        if !s.external_port_range.is_empty() {
            if s.external_port != 0 {
                return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("{f}.ExternalPortRange"), "give ExternalPort or ExternalPortRange, not both"));
            }
            if parse_range(&s.external_port_range).is_none() {
                return Err(ApiError::field(ErrorCode::InvalidPolicy, format!("{f}.ExternalPortRange"), format!("{:?} is not a port range such as 8000-8010", s.external_port_range)));
            }
        }
        let dup = out.iter().any(|o| o.protocol == s.protocol && s.external_port != 0 && o.external_port == s.external_port && (o.vip.is_empty() || s.vip.is_empty() || o.vip == s.vip));
        if dup {
            return Err(ApiError::field(ErrorCode::PortAlreadyExists, format!("{f}.ExternalPort"), format!("host port {} is mapped twice in this request", s.external_port)));
        }
        out.push(s);
    }
    Ok(out)
}

/// The stored form of a mapping: a `PortMapping` policy with the chosen host port.
pub fn to_policy(s: &PortMappingSettings) -> Policy {
    let s = PortMappingSettings { external_port_range: String::new(), ..s.clone() };
    Policy { kind: PORT_MAPPING.into(), settings: serde_json::to_value(s).expect("serializable") }
}

/// The store key of a mapping: unique per endpoint, protocol, host address and host port.
pub fn record_key(endpoint_id: &str, s: &PortMappingSettings) -> String {
    let vip = if s.vip.is_empty() { "*" } else { s.vip.as_str() };
    format!("{endpoint_id}/{}/{vip}/{}", s.protocol, s.external_port)
}

/// The kernel form of some mappings of an endpoint (none while it is detached). A mapping
/// bound to an address uses the container address of that family; an unbound one maps both
/// families the endpoint has.
pub fn kernel_form(rec: &EndpointRecord, maps: &[PortMappingSettings]) -> Vec<Mapping> {
    if rec.ep.host_compute_namespace.is_empty() {
        return Vec::new();
    }
    let addrs: Vec<IpAddr> = rec.ips().collect();
    let mut out = Vec::new();
    for s in maps {
        let Some(proto) = Proto::from_number(s.protocol) else { continue };
        let vip = vip_of(s);
        for ip in addrs.iter().filter(|ip| vip.is_none_or(|v| v.is_ipv4() == ip.is_ipv4())) {
            out.push(Mapping { proto, host_ip: vip, host_port: s.external_port, container_ip: *ip, container_port: s.internal_port });
        }
    }
    out
}

impl Engine {
    pub(crate) fn mappings_of(&self, ep_id: &str) -> &[PortMappingSettings] {
        self.mappings.get(ep_id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The kernel form of an endpoint's mappings.
    pub(crate) fn kernel_mappings(&self, rec: &EndpointRecord) -> Vec<Mapping> {
        kernel_form(rec, self.mappings_of(&rec.ep.id))
    }

    /// The endpoint as the API shows it: its mappings (as `PortMapping` policies) and its ACL,
    /// OutBoundNAT, SDNRoute and QOS policies appear in its `Policies`. Without any, the view
    /// is the record's own object, shared: a copy of each endpoint in the read model cost
    /// ~1 KiB apiece at thousands.
    pub(crate) fn endpoint_view(&self, rec: &EndpointRecord) -> Arc<hns_api::HostComputeEndpoint> {
        let mut policies: Vec<_> = self.mappings_of(&rec.ep.id).iter().map(to_policy).chain(super::acl::acl_policies(rec)).collect();
        policies.extend(super::epolicies::to_policies(&rec.policies));
        if policies.is_empty() {
            return rec.ep.clone();
        }
        let mut ep = (*rec.ep).clone();
        ep.policies.extend(policies);
        Arc::new(ep)
    }

    /// An endpoint's mappings put into or taken out of the kernel beside an attach's or a
    /// detach's kernel step, without the lock ([`super::step_writes`]): the changes and their
    /// turn taken now, with the state they come from. `None` when there is none, or more than
    /// one netlink batch holds ([`Engine::program_mappings`] writes those, under the lock).
    pub(crate) fn element_write(&self, add: &[Mapping], remove: &[Mapping]) -> Option<super::step_writes::ElementWrite> {
        let n = add.len() + remove.len();
        if n == 0 || n > MAX_ELEMENT_BATCH {
            return None;
        }
        Some(self.element_write_of(add, remove, &[]))
    }

    /// Element changes with their turn among the table's writes, taken now; `keep` as for
    /// [`Engine::program_mappings`].
    fn element_write_of(&self, add: &[Mapping], remove: &[Mapping], keep: &[Mapping]) -> super::step_writes::ElementWrite {
        let changes = hns_kernel::nft_elements::element_changes(add, remove, keep);
        super::step_writes::ElementWrite { changes, turn: self.nft_order.take(), writers: self.nft.clone() }
    }

    /// Puts mappings of one endpoint into, or takes them out of, the kernel. `keep` are the
    /// endpoint's mappings that stay: an allow element shared with one of them is kept (only
    /// an endpoint's own mappings can share one, as they share its address).
    pub(crate) fn program_mappings(&mut self, add: &[Mapping], remove: &[Mapping], keep: &[Mapping]) -> Result<()> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        // Big batches go through one `nft -f` transaction of the whole table (10 000 mappings
        // load in ~0.1 s that way); a netlink batch that large would outgrow the socket buffer.
        if add.len() + remove.len() > MAX_ELEMENT_BATCH {
            return self.apply_nft();
        }
        // In the order of the table's writes: after a full apply whose state was read before
        // this change (a network's, running without the lock), never before it. The turn is
        // passed on when the write returns, before a fallback's full apply takes its own.
        let write = self.element_write_of(add, remove, keep);
        let written = if write.turn.is_up() {
            // The usual case: nothing earlier is pending, so no wait (nor a worker handed off).
            write.run()
        } else {
            super::blocking(|| write.run())
        };
        match written {
            Ok(()) => Ok(()),
            Err(e) => {
                // Removing what is already gone is done; a missing table is repaired by a full apply.
                if e.is_not_found() && add.is_empty() {
                    return Ok(());
                }
                tracing::warn!(error = %e, "element update failed; re-applying the whole nft table");
                self.apply_nft()
            }
        }
    }

    /// (The read model serves the GETs; debug builds compare it with this.)
    #[cfg(debug_assertions)]
    pub fn list_port_mappings(&self) -> Vec<PortMappingInfo> {
        let mut out = Vec::new();
        for rec in self.endpoints.values().filter(|r| self.mappings.contains_key(&r.ep.id)) {
            let ns = super::views::namespace_label(self.namespaces.get(&rec.ep.host_compute_namespace).map(|n| &*n.rec.ns));
            let network = self.networks.get(&rec.network_id).map(|n| n.rec.net.name.clone()).unwrap_or_default();
            out.extend(self.port_infos(rec).into_iter().map(|i| PortMappingInfo { network_name: network.clone(), namespace: ns.clone(), ..i }));
        }
        out
    }

    /// An endpoint's port mappings as `GET /portmappings` lists them, without the network's
    /// and the compartment's names (`NetworkName`, `Namespace`).
    pub(crate) fn port_infos(&self, rec: &EndpointRecord) -> Vec<PortMappingInfo> {
        let v4 = rec.ipv4().map(|a| a.to_string());
        let v6 = rec.ipv6().map(|a| a.to_string());
        let mut out = Vec::new();
        for s in self.mappings_of(&rec.ep.id) {
            let proto = Proto::from_number(s.protocol).map(|p| p.to_string()).unwrap_or_default();
            let external_ip = if s.vip.is_empty() { "0.0.0.0".to_owned() } else { s.vip.clone() };
            let s = s.clone();
            let ip = if vip_of(&s).is_some_and(|v| v.is_ipv6()) { v6.clone() } else { v4.clone().or(v6.clone()) }.unwrap_or_default();
            out.push(PortMappingInfo {
                id: format!("{}/{proto}/{external_ip}/{}", rec.ep.id, s.external_port),
                endpoint_id: rec.ep.id.clone(),
                endpoint_name: rec.ep.name.clone(),
                network_name: String::new(),
                namespace: String::new(),
                protocol: proto.to_uppercase(),
                external_ip,
                external_port: s.external_port,
                internal_ip: ip.clone(),
                internal_port: s.internal_port,
                remote_prefix: "0.0.0.0/0".into(),
                active: !rec.ep.host_compute_namespace.is_empty(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(proto: u32, port: u16, vip: &str) -> PortMappingSettings {
        PortMappingSettings { protocol: proto, internal_port: 80, external_port: port, vip: vip.into(), ..Default::default() }
    }

    #[test]
    fn conflicts_follow_winnat_rules() {
        let mut idx = PortIndex::new((40000, 40002), 40000);
        let name = |e: &str| e.to_owned();
        idx.claim(&pm(6, 8080, ""), "a", "P", &name).unwrap();
        // Same port, other protocol: fine. Same port bound to one address: conflicts with "all".
        idx.claim(&pm(17, 8080, ""), "b", "P", &name).unwrap();
        let e = idx.claim(&pm(6, 8080, "127.0.0.1"), "c", "P", &name).unwrap_err();
        assert_eq!(e.code, ErrorCode::PortAlreadyExists);
        assert!(e.message.contains("already mapped to a"), "{}", e.message);
        idx.claim(&pm(6, 9090, "127.0.0.1"), "c", "P", &name).unwrap();
        idx.claim(&pm(6, 9090, "127.0.0.2"), "d", "P", &name).unwrap();
        assert!(idx.claim(&pm(6, 9090, ""), "e", "P", &name).is_err());
        idx.release(Proto::Tcp, None, 8080, "a");
        idx.claim(&pm(6, 8080, "127.0.0.1"), "c", "P", &name).unwrap();
    }

    #[test]
    fn dynamic_ports_are_next_fit_and_exhaust() {
        let mut idx = PortIndex::new((40000, 40002), 40000);
        let name = |e: &str| e.to_owned();
        let a = idx.claim(&pm(6, 0, ""), "a", "P", &name).unwrap();
        let b = idx.claim(&pm(6, 0, ""), "b", "P", &name).unwrap();
        assert_eq!((a, b), (40000, 40001));
        idx.release(Proto::Tcp, None, a, "a");
        assert_eq!(idx.claim(&pm(6, 0, ""), "c", "P", &name).unwrap(), 40002, "a released port is not reused at once");
        assert_eq!(idx.claim(&pm(6, 0, ""), "d", "P", &name).unwrap(), 40000);
        assert_eq!(idx.claim(&pm(6, 0, ""), "e", "P", &name).unwrap_err().code, ErrorCode::PortPoolExhausted);
        let ranged = PortMappingSettings { external_port_range: "41000-41001".into(), ..pm(6, 0, "") };
        assert_eq!(idx.claim(&ranged, "f", "P", &name).unwrap(), 41000);
        assert_eq!(idx.claim(&ranged, "g", "P", &name).unwrap(), 41001);
    }

    #[test]
    fn policies_are_checked_by_field() {
        let p = |v: serde_json::Value| Policy { kind: "PortMapping".into(), settings: v };
        let ok = parse_policies(&[p(serde_json::json!({"Protocol": "tcp", "InternalPort": 80, "ExternalPort": 8080}))], "Policies").unwrap();
        assert_eq!(ok[0].protocol, 6);
        let cases = [
            (serde_json::json!({"Protocol": 1, "InternalPort": 80}), "Policies[0].Settings.Protocol", ErrorCode::InvalidPolicy),
            (serde_json::json!({"Protocol": 6, "InternalPort": 0}), "Policies[0].Settings.InternalPort", ErrorCode::InvalidInternalPort),
            (serde_json::json!({"Protocol": 6, "InternalPort": 70000}), "Policies[0].Settings.InternalPort", ErrorCode::InvalidPolicy),
            (serde_json::json!({"Protocol": 6, "InternalPort": 80, "VIP": "nope"}), "Policies[0].Settings.VIP", ErrorCode::InvalidIp),
            (serde_json::json!({"Protocol": 6, "InternalPort": 80, "VIP": "192.0.2.99"}), "Policies[0].Settings.VIP", ErrorCode::InvalidIp),
            (serde_json::json!({"Protocol": 6, "InternalPort": 80, "ExternalPortRange": "9-1"}), "Policies[0].Settings.ExternalPortRange", ErrorCode::InvalidPolicy),
        ];
        for (v, field, code) in cases {
            let e = parse_policies(&[p(v.clone())], "Policies").unwrap_err();
            assert_eq!((e.code, e.field.as_deref()), (code, Some(field)), "{v}: {}", e.message);
        }
        let twice = [p(serde_json::json!({"Protocol": 6, "InternalPort": 80, "ExternalPort": 81})), p(serde_json::json!({"Protocol": 6, "InternalPort": 90, "ExternalPort": 81}))];
        assert_eq!(parse_policies(&twice, "Policies").unwrap_err().code, ErrorCode::PortAlreadyExists);
    }
}
