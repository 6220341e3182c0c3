//! Pure translation between Docker's requests and HNS objects: IDs and names, `docker network
//! create` options (`-o com.docker.network.windowsshim.*`, `--internal`, `--ipv6`, pools),
//! endpoint interfaces, and port bindings. Nothing here touches the engine or the kernel, so all
//! of it is unit-tested.
//!
//! The mapping follows Docker's own Windows driver (moby `drivers/windows`) where one exists,
//! so a command line written for Windows means the same thing here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hns_api::{ApiError, Dns, ErrorCode, HostComputeEndpoint, HostComputeNetwork, IpConfig, Ipam, IpamType, NetworkType, Policy, PortMappingSettings, Route, Subnet};
use serde_json::{Value, json};

use super::protocol::{CreateEndpoint, CreateNetwork, Interface, Options, PortBinding, TransportPort, keys};

use hns_api::windowsshim::{
    DISABLE_GATEWAY_DNS as OPT_DISABLE_GATEWAY_DNS, DNS_SERVERS as OPT_DNS_SERVERS, DNS_SUFFIX as OPT_DNS_SUFFIX, INTERFACE as OPT_INTERFACE,
    NETWORK_NAME as OPT_NETWORK_NAME, PREFIX as OPT_PREFIX, VLAN as OPT_VLAN,
};
/// `-o ...enable_outboundnat=true`: every endpoint of the network gets an `OutBoundNAT`
/// policy (Docker's Windows driver does the same), with `outboundnat_exceptions` (a comma list).
const OPT_ENABLE_OUTBOUND_NAT: &str = "com.docker.network.windowsshim.enable_outboundnat";
const OPT_OUTBOUND_NAT_EXCEPTIONS: &str = "com.docker.network.windowsshim.outboundnat_exceptions";
/// Where a Docker network keeps that policy, in its `AdditionalParams`.
const OUTBOUND_NAT_PARAM: &str = "DockerOutboundNat";
const SUPPORTED: &[&str] =
    &[OPT_NETWORK_NAME, OPT_INTERFACE, OPT_VLAN, OPT_DNS_SUFFIX, OPT_DNS_SERVERS, OPT_DISABLE_GATEWAY_DNS, OPT_ENABLE_OUTBOUND_NAT, OPT_OUTBOUND_NAT_EXCEPTIONS];

/// Options of Docker's Windows driver that hns knows but does not implement, with the reason.
const NOT_YET: &[(&str, &str)] = &[
    ("hnsid", "adopting a network that already exists in hns is not supported yet; let docker create it"),
    ("vsid", "hns picks the overlay VNI cluster-wide; to choose it, create the network with `hnsctl network create -d overlay -o com.docker.network.windowsshim.vsid=N` (a Docker network on the same --subnet then adopts it)"),
    ("macpool", "MAC pools are not supported: hns derives each endpoint's MAC from its address"),
    ("sourcemac", "a source MAC for the network is not supported"),
    ("routingdomain", "routing domains are not supported"),
    ("disableicc", "disabling inter-container traffic is not supported yet"),
    ("disable_dns", "per-endpoint DNS switches are not supported; use disable_gatewaydns for the network"),
];

/// The key HNS objects made for Docker carry their Docker ID under, in `AdditionalParams`.
pub const DOCKER_NETWORK_ID: &str = "DockerNetworkID";
pub const DOCKER_ENDPOINT_ID: &str = "DockerEndpointID";
/// `Owner` of the HNS objects the plugin creates.
pub const OWNER: &str = "docker";

fn bad(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::field(ErrorCode::InvalidNetwork, field, message)
}

/// The HNS GUID of a Docker object: its first 32 hex digits. Docker IDs are 64 random hex
/// digits, so this is unique, and it is derived, not stored: after any restart of either daemon
/// the same Docker ID still names the same HNS object.
pub fn hns_id(docker_id: &str) -> Result<String, ApiError> {
    let hex = docker_id.get(..32).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    let Some(h) = hex else {
        return Err(ApiError::new(ErrorCode::InvalidJson, format!("{docker_id:?} is not a Docker object ID (64 hex digits)")));
    };
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]).to_ascii_lowercase())
}

/// Docker's short form of an ID.
pub fn short(docker_id: &str) -> &str {
    docker_id.get(..12).unwrap_or(docker_id)
}

/// `ip/prefix` → (ip, prefix).
fn split_cidr(s: &str, field: &str) -> Result<(IpAddr, u8), ApiError> {
    let parsed = s.split_once('/').and_then(|(ip, len)| Some((ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?)));
    parsed.ok_or_else(|| bad(field, format!("{s:?} is not an address with a prefix length")))
}

fn string_option(key: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(bad(format!("-o {key}"), format!("-o {key} must be a string, got {other}"))),
    }
}

fn bool_option(key: &str, s: &str) -> Result<bool, ApiError> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(bad(format!("-o {key}"), format!("-o {key}={s}: expected true or false"))),
    }
}

fn flag(options: &Options, key: &str) -> bool {
    options.get(key).is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"))
}

/// What the `hns` IPAM knows about a pool it gave out, for the network made from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolHint {
    /// `--ip-range` (Docker tells the IPAM, not the network driver).
    pub ip_range: Option<String>,
    /// hns chose the pool because no `--subnet` was given.
    pub picked: bool,
}

/// The HNS network for `docker network create -d <kind>`. `hints` maps pool CIDRs the `hns`
/// IPAM handed out to what it knows about them.
pub fn network_request(kind: NetworkType, req: &CreateNetwork, hints: &BTreeMap<String, PoolHint>) -> Result<HostComputeNetwork, ApiError> {
    let id = hns_id(&req.network_id)?;
    let mut net = HostComputeNetwork {
        id,
        name: short(&req.network_id).to_owned(),
        kind: Some(kind),
        owner: OWNER.into(),
        additional_params: json!({ DOCKER_NETWORK_ID: req.network_id }),
        internal: flag(&req.options, keys::INTERNAL),
        ..Default::default()
    };
    let generic = match req.options.get(keys::GENERIC) {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => return Err(bad("-o", format!("driver options must be a map of strings, got {other}"))),
    };
    let mut subnet_policies = Vec::new();
    let (mut outbound_nat, mut exceptions) = (false, None);
    for (key, value) in &generic {
        let value = string_option(key, value)?;
        let key_lc = key.to_ascii_lowercase();
        let field = format!("-o {key}");
        match key_lc.as_str() {
            OPT_NETWORK_NAME => {
                if value.is_empty() {
                    return Err(bad(field, format!("-o {key} needs a name")));
                }
                net.name = value;
            }
            OPT_INTERFACE => net.policies.push(Policy { kind: "NetAdapterName".into(), settings: json!({ "NetworkAdapterName": value }) }),
            OPT_VLAN => {
                let vlan: u32 = value.trim().parse().map_err(|_| bad(&field, format!("-o {key}={value}: a VLAN ID is a number from 1 to 4094")))?;
                subnet_policies.push(Policy { kind: "VLAN".into(), settings: json!({ "IsolationId": vlan }) });
            }
            OPT_DNS_SUFFIX => net.dns.get_or_insert_with(Dns::default).domain = value,
            OPT_DNS_SERVERS => {
                net.dns.get_or_insert_with(Dns::default).server_list = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
            }
            OPT_DISABLE_GATEWAY_DNS => {
                if bool_option(key, &value)? {
                    net.policies.push(Policy { kind: "AutomaticDNS".into(), settings: json!({ "Enable": false }) });
                }
            }
            OPT_ENABLE_OUTBOUND_NAT => outbound_nat = bool_option(key, &value)?,
            OPT_OUTBOUND_NAT_EXCEPTIONS => exceptions = Some(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>()),
            _ => {
                if let Some(name) = key_lc.strip_prefix(OPT_PREFIX)
                    && let Some((_, why)) = NOT_YET.iter().find(|(n, _)| *n == name)
                {
                    return Err(ApiError::field(ErrorCode::RequestUnsupported, field, format!("-o {key}: {why}")));
                }
                let hint = if key_lc.starts_with(OPT_PREFIX) { "" } else { " (hns options start with com.docker.network.windowsshim.)" };
                return Err(bad(field, format!("unknown option {key}{hint}; known: {}", SUPPORTED.join(", "))));
            }
        }
    }
    match (outbound_nat, exceptions) {
        (true, _) if matches!(kind, NetworkType::Transparent | NetworkType::L2Tunnel) => {
            return Err(ApiError::field(
                ErrorCode::RequestUnsupported,
                format!("-o {OPT_ENABLE_OUTBOUND_NAT}"),
                format!("outbound NAT needs a host-side interface; {kind} endpoints are macvlan/ipvlan children with none"),
            ));
        }
        (true, exceptions) => {
            // Checked as the endpoint policy is (each exception names its position).
            let settings = json!({ "Exceptions": exceptions.unwrap_or_default() });
            crate::engine::parse_outbound_nat(&settings, &format!("-o {OPT_OUTBOUND_NAT_EXCEPTIONS}"))?;
            net.additional_params[OUTBOUND_NAT_PARAM] = settings;
        }
        (false, Some(_)) => {
            return Err(bad(format!("-o {OPT_OUTBOUND_NAT_EXCEPTIONS}"), format!("exceptions apply to outbound NAT: add -o {OPT_ENABLE_OUTBOUND_NAT}=true")));
        }
        (false, None) => {}
    }
    let mut subnets = Vec::new();
    for data in [&req.ipv4_data, &req.ipv6_data] {
        for d in data {
            // The null IPAM gives 0.0.0.0/0: no pool, hns picks (as Windows' pass-through IPAM).
            if d.pool.is_empty() || d.pool == "0.0.0.0/0" || d.pool == "::/0" {
                continue;
            }
            let mut s = Subnet { ip_address_prefix: d.pool.clone(), policies: subnet_policies.clone(), ..Default::default() };
            if !d.gateway.is_empty() {
                let (gw, _) = split_cidr(&d.gateway, "--gateway")?;
                let default = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                s.routes.push(Route { next_hop: gw.to_string(), destination_prefix: default.into(), metric: 0 });
            }
            for (name, addr) in &d.aux_addresses {
                let (ip, _) = split_cidr(addr, "--aux-address")?;
                s.auxiliary_addresses.insert(name.clone(), ip.to_string());
            }
            if let Some(range) = hints.get(&d.pool).and_then(|h| h.ip_range.clone()) {
                s.ip_range = range;
            }
            subnets.push(s);
        }
    }
    if !req.ipv6_data.is_empty() && !flag(&req.options, keys::ENABLE_IPV6) {
        return Err(bad("--ipv6", "IPv6 pools were given but IPv6 is not enabled on the network; add --ipv6"));
    }
    if !subnets.is_empty() {
        net.ipams = vec![Ipam { kind: IpamType::Static, subnets }];
    }
    Ok(net)
}

/// `--ipam-driver hns` is refused for `hnsoverlay`: its pools and addresses are this host's
/// alone, while an overlay network's addresses are allocated cluster-wide (which Docker's
/// default IPAM with a per-host `--ip-range` fits, see [`overlay_address_hint`]).
pub fn check_overlay_ipam(req: &CreateNetwork) -> Result<(), ApiError> {
    let hns_space = |d: &super::protocol::IpamData| d.address_space == super::ipam::LOCAL_SPACE || d.address_space == super::ipam::GLOBAL_SPACE;
    if req.ipv4_data.iter().chain(&req.ipv6_data).any(hns_space) {
        return Err(ApiError::field(
            ErrorCode::RequestUnsupported,
            "--ipam-driver",
            "--ipam-driver hns is not supported with -d hnsoverlay: the hns IPAM is per host, overlay addresses are cluster-wide; use Docker's default IPAM with --subnet and a different --ip-range on each host",
        ));
    }
    Ok(())
}

/// Docker's default IPAM is per host, so on an overlay network it may hand out an address
/// another host's container holds; the cluster IPAM refuses it (naming the holder), and this
/// adds how to avoid it.
pub fn overlay_address_hint(e: ApiError) -> ApiError {
    if e.code != ErrorCode::AddrInUse {
        return e;
    }
    let message = format!(
        "{}; Docker allocates addresses per host, so give each host its own --ip-range inside the overlay's --subnet (docker network create -d hnsoverlay --subnet S --ip-range R) and do not reuse a --ip another host holds",
        e.message
    );
    ApiError { message, ..e }
}

/// Docker's default address pools (172.17-31.0.0/16, 192.168.0.0/16 in /20s): what Docker picks
/// when `docker network create` has no `--subnet`.
pub fn is_docker_default_pool(pool: &str) -> bool {
    let Ok(net) = pool.parse::<ipnet::IpNet>() else { return false };
    let IpAddr::V4(a) = net.addr() else { return false };
    let o = a.octets();
    (o[0] == 172 && (17..=31).contains(&o[1]) && net.prefix_len() == 16) || (o[0] == 192 && o[1] == 168 && net.prefix_len() == 20)
}

/// An external network (transparent, l2bridge, l2tunnel) puts its containers on the adapter's
/// LAN, so its subnet must be that LAN's. Docker does not say whether the user gave `--subnet`:
/// a pool Docker (or the `hns` IPAM) chose by itself that does not hold the adapter's own address
/// is refused, with the fix.
pub fn check_lan_subnet(kind: NetworkType, net: &HostComputeNetwork, adapter: &str, adapter_ip: Option<IpAddr>, hints: &BTreeMap<String, PoolHint>) -> Result<(), ApiError> {
    for s in net.subnets() {
        let picked_by_hns = hints.get(&s.ip_address_prefix).is_some_and(|h| h.picked);
        let Ok(prefix) = s.ip_address_prefix.parse::<ipnet::IpNet>() else { continue };
        let on_lan = adapter_ip.is_none_or(|ip| prefix.contains(&ip));
        if picked_by_hns || (is_docker_default_pool(&s.ip_address_prefix) && !on_lan) {
            let lan = adapter_ip.map(|ip| format!(" (the host is {ip} there)")).unwrap_or_default();
            return Err(ApiError::field(
                ErrorCode::InvalidSubnet,
                "--subnet",
                format!(
                    "{kind} networks take addresses of the LAN on {adapter}{lan}, but {} was chosen without --subnet; give that LAN's --subnet and --gateway",
                    s.ip_address_prefix
                ),
            ));
        }
    }
    Ok(())
}

/// The HNS endpoint for Docker's `CreateEndpoint`: Docker's addresses and MAC when it gave them
/// (its IPAM owns them), else hns allocates and the reply tells Docker.
pub fn endpoint_request(req: &CreateEndpoint, network_id: &str) -> Result<HostComputeEndpoint, ApiError> {
    let iface = req.interface.clone().unwrap_or_default();
    let mut ep = HostComputeEndpoint {
        id: hns_id(&req.endpoint_id)?,
        name: short(&req.endpoint_id).to_owned(),
        host_compute_network: network_id.to_owned(),
        mac_address: iface.mac_address.clone(),
        owner: OWNER.into(),
        additional_params: json!({ DOCKER_ENDPOINT_ID: req.endpoint_id }),
        ..Default::default()
    };
    for (addr, field) in [(&iface.address, "--ip"), (&iface.address_ipv6, "--ip6")] {
        if !addr.is_empty() {
            let (ip, prefix_length) = split_cidr(addr, field)?;
            ep.ip_configurations.push(IpConfig { ip_address: ip.to_string(), prefix_length, ip_subnet_id: String::new() });
        }
    }
    Ok(ep)
}

/// The `OutBoundNAT` policy every endpoint of a Docker network made with
/// `enable_outboundnat` gets.
pub fn outbound_nat_policy(net: &HostComputeNetwork) -> Option<Policy> {
    net.additional_params.get(OUTBOUND_NAT_PARAM).map(|s| Policy { kind: "OutBoundNAT".into(), settings: s.clone() })
}

/// `00-15-5D-0A-00-02` (HNS) → `00:15:5d:0a:00:02` (Docker).
pub fn docker_mac(hns_mac: &str) -> String {
    hns_mac.replace('-', ":").to_ascii_lowercase()
}

/// What hns filled in that Docker left empty: only those fields may be returned (Docker refuses
/// a driver that overwrites its own values).
pub fn endpoint_reply(asked: &Interface, made: &HostComputeEndpoint) -> Option<Interface> {
    let mut out = Interface::default();
    if asked.mac_address.is_empty() {
        out.mac_address = docker_mac(&made.mac_address);
    }
    for c in &made.ip_configurations {
        let Ok(ip) = c.ip_address.parse::<IpAddr>() else { continue };
        let cidr = format!("{ip}/{}", c.prefix_length);
        if ip.is_ipv4() && asked.address.is_empty() {
            out.address = cidr;
        } else if ip.is_ipv6() && asked.address_ipv6.is_empty() {
            out.address_ipv6 = cidr;
        }
    }
    (out != Interface::default()).then_some(out)
}

/// The port bindings in Docker's options (`docker run -p`) as HNS `PortMapping` settings:
/// `-p 80` (any host port), `-p 8080:80`, `-p 127.0.0.1:8080:80`, `-p 8000-8010:80`.
pub fn port_mappings(options: &Options) -> Result<Vec<PortMappingSettings>, ApiError> {
    let bindings: Vec<PortBinding> = match options.get(keys::PORT_MAP) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| ApiError::new(ErrorCode::InvalidPolicy, format!("cannot read Docker's port bindings: {e}")))?,
    };
    let mut out: Vec<PortMappingSettings> = Vec::new();
    for b in &bindings {
        let shown = format!("-p {}{}:{}", if b.host_ip.is_empty() { String::new() } else { format!("{}:", b.host_ip) }, b.host_port, b.port);
        if b.proto != 6 && b.proto != 17 {
            return Err(ApiError::field(ErrorCode::InvalidPolicy, "-p", format!("{shown}: protocol {} cannot be mapped; hns maps tcp and udp", proto_name(b.proto))));
        }
        if b.port == 0 {
            return Err(ApiError::field(ErrorCode::InvalidInternalPort, "-p", format!("{shown}: the container port is missing")));
        }
        let any_host = matches!(b.host_ip.as_str(), "" | "0.0.0.0" | "::");
        let mut s = PortMappingSettings { protocol: u32::from(b.proto), internal_port: b.port, vip: if any_host { String::new() } else { b.host_ip.clone() }, ..Default::default() };
        if b.host_port_end > b.host_port && b.host_port != 0 {
            s.external_port_range = format!("{}-{}", b.host_port, b.host_port_end);
        } else {
            s.external_port = b.host_port;
        }
        // Newer Docker sends one binding per family (0.0.0.0 and ::); one hns mapping serves
        // both families.
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// Port bindings as Docker spells them, from the mappings hns made (with the host ports it
/// chose). Docker cannot display them for a remote driver (moby/libnetwork#2451); they are
/// returned in `EndpointOperInfo` for tools that read the driver's data.
pub fn docker_bindings(maps: &[PortMappingSettings], container_ip: Option<IpAddr>) -> (Vec<PortBinding>, Vec<TransportPort>) {
    let mut bindings = Vec::new();
    let mut exposed: Vec<TransportPort> = Vec::new();
    for m in maps {
        let proto = u8::try_from(m.protocol).unwrap_or(0);
        bindings.push(PortBinding {
            proto,
            ip: container_ip.map(|i| i.to_string()).unwrap_or_default(),
            port: m.internal_port,
            host_ip: if m.vip.is_empty() { "0.0.0.0".into() } else { m.vip.clone() },
            host_port: m.external_port,
            host_port_end: m.external_port,
        });
        let t = TransportPort { proto, port: m.internal_port };
        if !exposed.contains(&t) {
            exposed.push(t);
        }
    }
    (bindings, exposed)
}

/// The Docker flag an HNS field comes from, so an engine error speaks Docker's language.
pub fn docker_flag(hns_field: &str) -> Option<&'static str> {
    let f = hns_field;
    if f.contains(".Policies") && f.starts_with("Ipams") {
        Some("-o com.docker.network.windowsshim.vlanid")
    } else if f.contains("IpRange") {
        Some("--ip-range")
    } else if f.contains("AuxiliaryAddresses") {
        Some("--aux-address")
    } else if f.contains("Routes") && f.starts_with("Ipams") {
        Some("--gateway")
    } else if f.starts_with("Ipams") {
        Some("--subnet")
    } else if f.starts_with("Policies") && !f.contains("Settings.") {
        Some("-o com.docker.network.windowsshim.interface")
    } else if f == "Name" {
        Some("-o com.docker.network.windowsshim.networkname")
    } else if f == "Internal" {
        Some("--internal")
    } else if f.starts_with("Dns") {
        Some("-o com.docker.network.windowsshim.dnsservers")
    } else if f.starts_with("IpConfigurations") {
        Some("--ip")
    } else if f == "MacAddress" {
        Some("--mac-address")
    } else if f.contains("Policies") {
        Some("-p")
    } else {
        None
    }
}

/// The text Docker shows for an hns error: the message, and the flag (or HNS field) it is about.
pub fn error_text(e: &ApiError) -> String {
    match e.field.as_deref() {
        Some(f) if f.starts_with('-') => format!("{} ({f})", e.message),
        Some(f) => match docker_flag(f) {
            Some(flag) => format!("{} ({flag}; hns field {f})", e.message),
            None => format!("{} (hns field {f})", e.message),
        },
        None => e.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::protocol::IpamData;

    const NID: &str = "4f0c1e2d3b4a59687766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn overlay_refuses_the_hns_ipam_and_points_to_ip_ranges() {
        let pool = |space: &str| IpamData { address_space: space.into(), pool: "10.240.0.0/16".into(), ..Default::default() };
        assert!(check_overlay_ipam(&create(json!({}), vec![pool("LocalDefault")])).is_ok());
        let e = check_overlay_ipam(&create(json!({}), vec![pool(crate::docker::ipam::LOCAL_SPACE)])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("--ipam-driver"));
        assert!(e.message.contains("--ip-range"), "{}", e.message);
        let taken = overlay_address_hint(ApiError::new(ErrorCode::AddrInUse, "address 10.240.1.0 is in use by endpoint e on node host0"));
        assert!(taken.message.contains("node host0") && taken.message.contains("its own --ip-range"), "{}", taken.message);
        assert_eq!(overlay_address_hint(ApiError::new(ErrorCode::InvalidNetwork, "other")).message, "other");
    }

    fn create(generic: Value, v4: Vec<IpamData>) -> CreateNetwork {
        let mut options = serde_json::Map::new();
        options.insert(keys::GENERIC.into(), generic);
        CreateNetwork { network_id: NID.into(), options, ipv4_data: v4, ipv6_data: vec![] }
    }

    fn pool(p: &str, gw: &str) -> IpamData {
        IpamData { pool: p.into(), gateway: gw.into(), ..Default::default() }
    }

    #[test]
    fn ids_and_names_derive_from_docker_ids() {
        assert_eq!(hns_id(NID).unwrap(), "4f0c1e2d-3b4a-5968-7766-554433221100");
        assert_eq!(short(NID), "4f0c1e2d3b4a");
        assert!(hns_id("nothex").is_err() && hns_id("zz0c1e2d3b4a59687766554433221100ffee").is_err());
    }

    #[test]
    fn windowsshim_options_map_like_hnsctl() {
        let g = json!({
            "com.docker.network.windowsshim.networkname": "lan",
            "com.docker.network.windowsshim.interface": "eth1",
            "com.docker.network.windowsshim.vlanid": "7",
            "com.docker.network.windowsshim.dnssuffix": "corp.example",
            "com.docker.network.windowsshim.dnsservers": "192.0.2.53, 192.0.2.54",
        });
        let mut data = pool("10.77.1.0/24", "10.77.1.1/24");
        data.aux_addresses.insert("router2".into(), "10.77.1.3/24".into());
        let n = network_request(NetworkType::Transparent, &create(g, vec![data]), &BTreeMap::new()).unwrap();
        assert_eq!((n.name.as_str(), n.kind, n.owner.as_str()), ("lan", Some(NetworkType::Transparent), "docker"));
        assert_eq!(n.policies[0].settings, json!({"NetworkAdapterName": "eth1"}));
        let dns = n.dns.clone().unwrap();
        assert_eq!((dns.domain.as_str(), dns.server_list.len()), ("corp.example", 2));
        let s = n.subnets().next().unwrap();
        assert_eq!(s.policies[0].settings, json!({"IsolationId": 7}));
        assert_eq!((s.routes[0].next_hop.as_str(), s.auxiliary_addresses["router2"].as_str()), ("10.77.1.1", "10.77.1.3"));
        assert_eq!(n.additional_params[DOCKER_NETWORK_ID], NID);
    }

    #[test]
    fn names_default_to_the_short_docker_id_and_flags_map() {
        let mut req = create(json!({}), vec![pool("172.18.0.0/16", "172.18.0.1/16")]);
        req.options.insert(keys::INTERNAL.into(), json!(true));
        let mut hints = BTreeMap::new();
        hints.insert("172.18.0.0/16".to_owned(), PoolHint { ip_range: Some("172.18.5.0/24".into()), picked: false });
        let n = network_request(NetworkType::Nat, &req, &hints).unwrap();
        assert_eq!(n.name, short(NID));
        assert!(n.internal);
        assert_eq!(n.subnets().next().unwrap().ip_range, "172.18.5.0/24");
        // The null IPAM's 0.0.0.0/0 means "no pool": hns picks.
        let n = network_request(NetworkType::Nat, &create(json!({}), vec![pool("0.0.0.0/0", "")]), &BTreeMap::new()).unwrap();
        assert!(n.ipams.is_empty());
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let e = network_request(NetworkType::Nat, &create(json!({"com.docker.network.windowsshim.bogus": "1"}), vec![]), &BTreeMap::new()).unwrap_err();
        assert!(e.message.contains("unknown option com.docker.network.windowsshim.bogus") && e.message.contains("networkname"), "{}", e.message);
        let e = network_request(NetworkType::Nat, &create(json!({"mtu": "1400"}), vec![]), &BTreeMap::new()).unwrap_err();
        assert!(e.message.contains("start with com.docker.network.windowsshim."), "{}", e.message);
        let e = network_request(NetworkType::L2Bridge, &create(json!({"com.docker.network.windowsshim.vlanid": "ten"}), vec![]), &BTreeMap::new()).unwrap_err();
        assert!(e.message.contains("1 to 4094"), "{}", e.message);
        let e = network_request(NetworkType::Nat, &create(json!({"com.docker.network.windowsshim.macpool": "a,b"}), vec![]), &BTreeMap::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::RequestUnsupported);
        assert!(error_text(&e).contains("(-o com.docker.network.windowsshim.macpool)"), "{}", error_text(&e));
    }

    #[test]
    fn lan_subnets_are_checked_for_external_networks() {
        let n = network_request(NetworkType::L2Bridge, &create(json!({}), vec![pool("172.19.0.0/16", "172.19.0.1/16")]), &BTreeMap::new()).unwrap();
        let host: IpAddr = "10.77.2.2".parse().unwrap();
        let e = check_lan_subnet(NetworkType::L2Bridge, &n, "eth2", Some(host), &BTreeMap::new()).unwrap_err();
        assert!(e.message.contains("--subnet") && e.message.contains("eth2"), "{}", e.message);
        let n = network_request(NetworkType::L2Bridge, &create(json!({}), vec![pool("10.77.2.0/24", "10.77.2.1/24")]), &BTreeMap::new()).unwrap();
        check_lan_subnet(NetworkType::L2Bridge, &n, "eth2", Some(host), &BTreeMap::new()).unwrap();
        let mut hints = BTreeMap::new();
        hints.insert("10.77.2.0/24".to_owned(), PoolHint { ip_range: None, picked: true });
        assert!(check_lan_subnet(NetworkType::L2Bridge, &n, "eth2", Some(host), &hints).is_err());
        assert!(is_docker_default_pool("192.168.16.0/20") && !is_docker_default_pool("10.0.0.0/8"));
    }

    #[test]
    fn outbound_nat_options_give_every_endpoint_the_policy() {
        let o = |v: Value| create(v, vec![pool("10.77.2.0/24", "10.77.2.1/24")]);
        let n = network_request(NetworkType::L2Bridge, &o(json!({OPT_ENABLE_OUTBOUND_NAT: "true", OPT_OUTBOUND_NAT_EXCEPTIONS: "10.244.0.0/16, 10.77.2.0/24"})), &BTreeMap::new()).unwrap();
        let p = outbound_nat_policy(&n).unwrap();
        assert_eq!((p.kind.as_str(), p.settings.clone()), ("OutBoundNAT", json!({"Exceptions": ["10.244.0.0/16", "10.77.2.0/24"]})));
        assert!(outbound_nat_policy(&network_request(NetworkType::L2Bridge, &o(json!({})), &BTreeMap::new()).unwrap()).is_none());
        let e = network_request(NetworkType::L2Bridge, &o(json!({OPT_OUTBOUND_NAT_EXCEPTIONS: "10.0.0.0/8"})), &BTreeMap::new()).unwrap_err();
        assert!(e.message.contains("enable_outboundnat"), "{}", e.message);
        let e = network_request(NetworkType::L2Bridge, &o(json!({OPT_ENABLE_OUTBOUND_NAT: "true", OPT_OUTBOUND_NAT_EXCEPTIONS: "10.0.0.0/8,nope"})), &BTreeMap::new()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("-o com.docker.network.windowsshim.outboundnat_exceptions.Exceptions[1]"));
        let e = network_request(NetworkType::Transparent, &o(json!({OPT_ENABLE_OUTBOUND_NAT: "1"})), &BTreeMap::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::RequestUnsupported);
    }

    #[test]
    fn endpoints_take_dockers_values_and_reply_only_with_the_rest() {
        let req = CreateEndpoint {
            network_id: NID.into(),
            endpoint_id: NID.into(),
            interface: Some(Interface { address: "172.18.0.5/16".into(), ..Default::default() }),
            options: Default::default(),
        };
        let ep = endpoint_request(&req, "net").unwrap();
        assert_eq!((ep.ip_configurations[0].ip_address.as_str(), ep.ip_configurations[0].prefix_length), ("172.18.0.5", 16));
        let made = HostComputeEndpoint { mac_address: "00-15-5D-12-00-05".into(), ip_configurations: ep.ip_configurations.clone(), ..Default::default() };
        let reply = endpoint_reply(req.interface.as_ref().unwrap(), &made).unwrap();
        assert_eq!(reply, Interface { mac_address: "00:15:5d:12:00:05".into(), ..Default::default() });
        let asked_all = Interface { address: "172.18.0.5/16".into(), mac_address: "02:00:00:00:00:01".into(), ..Default::default() };
        assert_eq!(endpoint_reply(&asked_all, &made), None);
    }

    #[test]
    fn port_bindings_become_mappings() {
        let mut o = serde_json::Map::new();
        o.insert(
            keys::PORT_MAP.into(),
            json!([
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 80, "HostPortEnd": 80},
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8082, "HostPortEnd": 8082},
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 0, "HostPortEnd": 0},
                {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 5353, "HostPortEnd": 5353},
                {"Proto": 6, "IP": "", "Port": 81, "HostIP": "", "HostPort": 9000, "HostPortEnd": 9010},
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "::", "HostPort": 80, "HostPortEnd": 80},
            ]),
        );
        let m = port_mappings(&o).unwrap();
        assert_eq!(m.len(), 5, "{m:?}");
        assert_eq!((m[0].external_port, m[0].internal_port, m[0].protocol), (80, 80, 6));
        assert_eq!((m[2].external_port, m[2].external_port_range.as_str()), (0, ""));
        assert_eq!((m[3].vip.as_str(), m[3].protocol), ("127.0.0.1", 17));
        assert_eq!(m[4].external_port_range, "9000-9010");
        let mut sctp = serde_json::Map::new();
        sctp.insert(keys::PORT_MAP.into(), json!([{"Proto": 132, "Port": 80, "HostPort": 80}]));
        assert!(port_mappings(&sctp).unwrap_err().message.contains("sctp"));
        let (b, x) = docker_bindings(&m[..2], Some("172.18.0.5".parse().unwrap()));
        assert_eq!((b[1].host_port, b[1].host_ip.as_str(), b[1].ip.as_str()), (8082, "0.0.0.0", "172.18.0.5"));
        assert_eq!(x, vec![TransportPort { proto: 6, port: 80 }]);
    }

    #[test]
    fn engine_fields_speak_docker() {
        let e = ApiError::field(ErrorCode::InvalidPolicy, "Ipams[0].Subnets[0].Policies[0].Settings.IsolationId", "VLAN ID 5000 is out of range");
        assert_eq!(error_text(&e), "VLAN ID 5000 is out of range (-o com.docker.network.windowsshim.vlanid; hns field Ipams[0].Subnets[0].Policies[0].Settings.IsolationId)");
        assert_eq!(docker_flag("Internal"), Some("--internal"));
        assert_eq!(docker_flag("Policies[0]"), Some("-o com.docker.network.windowsshim.interface"));
        assert_eq!(error_text(&ApiError::new(ErrorCode::Internal, "boom")), "boom");
    }
}
