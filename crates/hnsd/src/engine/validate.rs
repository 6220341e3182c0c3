//! Request validation: pure functions from a request and the current state to a canonical
//! object, or an [`ApiError`] naming the field, the value, the rule and the fix. Nothing here
//! touches the store or the kernel, so every rule is unit-tested and bad input can never
//! change state.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hns_api::{ApiError, Dns, ErrorCode, NetworkType, Policy};
use hns_ipam::{IpamError, IpamErrorKind, PoolSpec};
use ipnet::IpNet;

/// Network policy types of the HNS schema (none implemented yet).
pub const NETWORK_POLICY_TYPES: &[&str] = &[
    "SourceMacAddress", "NetAdapterName", "VSwitchExtension", "DrMacAddress", "AutomaticDNS", "InterfaceConstraint",
    "ProviderAddress", "RemoteSubnetRoute", "VxlanPort", "HostRoute", "SetPolicy", "L4Proxy", "LayerConstraint", "NetworkACL",
];
/// Endpoint policy types of the HNS schema (none implemented yet).
pub const ENDPOINT_POLICY_TYPES: &[&str] = &[
    "PortMapping", "ACL", "QOS", "L2Driver", "OutBoundNAT", "SDNRoute", "L4Proxy", "L4WFPPROXY", "PortName", "EncapOverhead",
    "Iov", "ProviderAddress", "InterfaceConstraint", "TierAcl", "Encryption", "VLAN", "InterfaceParameters",
];
/// Subnet policy types of the HNS schema (VLAN on external networks, VSID on overlay ones).
pub const SUBNET_POLICY_TYPES: &[&str] = &["VLAN", "VSID"];

fn invalid(code: ErrorCode, field: impl Into<String>, msg: impl Into<String>) -> ApiError {
    ApiError::field(code, field, msg)
}

/// The error for a policy hns does not implement: known types are "not implemented yet",
/// unknown ones are named as such.
pub fn refuse_policy(p: &Policy, i: usize, field: &str, what: &str, known: &[&str]) -> ApiError {
    let f = format!("{field}[{i}].Type");
    match known.iter().find(|k| k.eq_ignore_ascii_case(&p.kind)) {
        Some(k) => invalid(
            ErrorCode::InvalidPolicyType,
            f,
            format!("{what} policy type {k} is not implemented yet in this hns version; remove it from {field}"),
        ),
        None => invalid(ErrorCode::InvalidPolicyType, f, format!("{:?} is not a {what} policy type; known types: {}", p.kind, known.join(", "))),
    }
}

/// The network policies hns implements, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkPolicies {
    /// `AutomaticDNS {"Enable": bool}`: service discovery on the network.
    pub automatic_dns: Option<bool>,
    /// `NetAdapterName {"NetworkAdapterName": "eth1[,eth2...]"}`: the host adapter(s) of an
    /// external network; several mean teaming.
    pub adapters: Option<Vec<String>>,
    /// `VxlanPort {"Port": 1-65535}`: the UDP port of an overlay network's VXLAN devices.
    pub vxlan_port: Option<u16>,
    /// `NetworkACL`: ACL rules of every endpoint of the network.
    pub acls: Vec<hns_kernel::nft_acl::Rule>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct VxlanPortSettings {
    port: u16,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NetAdapterSettings {
    network_adapter_name: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct IsolationSettings {
    isolation_id: u32,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct AutomaticDnsSettings {
    enable: bool,
}

pub fn parse_network_policies(policies: &[Policy], field: &str) -> Result<NetworkPolicies, ApiError> {
    let mut out = NetworkPolicies::default();
    for (i, p) in policies.iter().enumerate() {
        let f = format!("{field}[{i}].Settings");
        let policy_err = |e: ApiError| ApiError { code: ErrorCode::InvalidPolicy, ..e };
        if p.kind.eq_ignore_ascii_case("AutomaticDNS") {
            let s: AutomaticDnsSettings = hns_api::decode::from_value(p.settings.clone(), &f).map_err(policy_err)?;
            if out.automatic_dns.replace(s.enable).is_some() {
                return Err(invalid(ErrorCode::InvalidPolicy, format!("{field}[{i}]"), "AutomaticDNS is given twice; give it once"));
            }
        } else if p.kind.eq_ignore_ascii_case("NetAdapterName") {
            let s: NetAdapterSettings = hns_api::decode::from_value(p.settings.clone(), &f).map_err(policy_err)?;
            let names: Vec<String> = s.network_adapter_name.split(',').map(|n| n.trim().to_owned()).collect();
            for n in &names {
                let ok = !n.is_empty() && n.len() <= 15 && !n.contains(['/', ' ']) && n != "." && n != "..";
                if !ok {
                    return Err(invalid(
                        ErrorCode::InvalidPolicy,
                        format!("{f}.NetworkAdapterName"),
                        format!("{n:?} is not a Linux interface name (1-15 characters, no '/' or spaces); list them with `ip link`"),
                    ));
                }
            }
            if out.adapters.replace(names).is_some() {
                return Err(invalid(ErrorCode::InvalidPolicy, format!("{field}[{i}]"), "NetAdapterName is given twice; give it once (several adapters: comma-separated)"));
            }
        } else if p.kind.eq_ignore_ascii_case("VxlanPort") {
            let s: VxlanPortSettings = hns_api::decode::from_value(p.settings.clone(), &f).map_err(policy_err)?;
            if s.port == 0 {
                return Err(invalid(ErrorCode::InvalidPolicy, format!("{f}.Port"), "VXLAN port 0 is not a UDP port; leave VxlanPort out for the standard 4789"));
            }
            if out.vxlan_port.replace(s.port).is_some() {
                return Err(invalid(ErrorCode::InvalidPolicy, format!("{field}[{i}]"), "VxlanPort is given twice; give it once"));
            }
        } else if super::policies::is_network_acl(p) {
            out.acls.push(super::policies::parse_acl(&p.settings, &f)?);
        } else if super::epolicies::is_host_route(p) {
            // Checked against the network's subnets by `epolicies::parse_host_routes`.
            super::epolicies::parse_host_route(&p.settings, &f)?;
        } else {
            return Err(refuse_policy(p, i, field, "network", NETWORK_POLICY_TYPES));
        }
    }
    hns_kernel::nft_acl::check(&out.acls).map_err(|m| invalid(ErrorCode::InvalidPolicy, field, m))?;
    Ok(out)
}

/// What the host has, for validating an external network.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// Every link name of the host namespace.
    pub links: Vec<String>,
    /// The link of the host's default route.
    pub default_link: Option<String>,
    /// Kernel features: `8021q`, `bonding`, `macvlan`.
    pub features: BTreeMap<String, bool>,
    /// The host's own addresses, by link name.
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
}

/// An external network shares the LAN's subnet with the host: the host's own addresses on its
/// adapters must never be handed to a container (it would take the host's address on the LAN). They
/// become auxiliary (never allocated, refused as static) addresses of the subnet, named after the
/// adapter. Returns how many were added.
pub fn reserve_host_addresses(subnet: &mut hns_api::Subnet, adapters: &[String], facts: &HostFacts) -> usize {
    let Ok(prefix) = subnet.ip_address_prefix.parse::<IpNet>() else { return 0 };
    let mut added = 0;
    for adapter in adapters {
        for ip in facts.addresses.get(adapter).into_iter().flatten() {
            let shown = ip.to_string();
            if !prefix.contains(ip) || subnet.auxiliary_addresses.values().any(|v| *v == shown) {
                continue;
            }
            let mut name = format!("host-{adapter}");
            let mut n = 1;
            while subnet.auxiliary_addresses.contains_key(&name) {
                n += 1;
                name = format!("host-{adapter}-{n}");
            }
            subnet.auxiliary_addresses.insert(name, shown);
            added += 1;
        }
    }
    added
}

/// Chooses and checks the adapters of an external network: the ones named, else the one of
/// the default route; each must exist, not be hns's own, and not serve another external
/// network (`taken`: adapter -> network name). Teaming and VLANs need kernel features, named
/// when missing. Returns the uplink plan.
pub fn external_uplink(
    kind: NetworkType,
    adapters: Option<&[String]>,
    vlan: Option<u16>,
    network_id: &str,
    host: &HostFacts,
    taken: &BTreeMap<String, String>,
) -> Result<(Vec<String>, hns_kernel::uplink::UplinkPlan), ApiError> {
    let field = "Policies.NetAdapterName";
    let adapters: Vec<String> = match adapters {
        Some(a) => a.to_vec(),
        None => match &host.default_link {
            Some(l) => vec![l.clone()],
            None => {
                return Err(invalid(
                    ErrorCode::InvalidNetwork,
                    field,
                    format!("the host has no default route to take the adapter from; name the adapter of this {kind} network (-o com.docker.network.windowsshim.interface=NAME)"),
                ));
            }
        },
    };
    for a in &adapters {
        if !host.links.iter().any(|l| l == a) {
            return Err(invalid(ErrorCode::InvalidNetwork, field, format!("network adapter {a:?} does not exist on this host; list them with `ip link`")));
        }
        if hns_kernel::names::has_hns_name(a) {
            return Err(invalid(ErrorCode::InvalidNetwork, field, format!("{a:?} is a link hns created for a network or endpoint, not a network adapter")));
        }
        if let Some(other) = taken.get(a) {
            return Err(invalid(
                ErrorCode::InvalidNetwork,
                field,
                format!(
                    "adapter {a} already serves network {other:?}: networks that use an external switch (transparent, l2bridge, l2tunnel) must each use their own network adapter; name another one with -o com.docker.network.windowsshim.interface=NAME"
                ),
            ));
        }
    }
    let has = |k: &str| host.features.get(k).copied().unwrap_or(false);
    if !has("macvlan") && matches!(kind, NetworkType::Transparent | NetworkType::L2Tunnel) {
        return Err(invalid(ErrorCode::InvalidNetworkType, "Type", format!("{kind} networks need the kernel's {}, which this kernel lacks", hns_kernel::uplink::Feature::Macvlan.kernel_name())));
    }
    if adapters.len() > 1 && !has("bonding") {
        return Err(invalid(
            ErrorCode::InvalidNetwork,
            field,
            format!("teaming {} needs the kernel's {}, which this kernel lacks; give one adapter", adapters.join(","), hns_kernel::uplink::Feature::Bond.kernel_name()),
        ));
    }
    if vlan.is_some() && !has("8021q") {
        return Err(invalid(
            ErrorCode::InvalidNetwork,
            "Ipams.Subnets.Policies.VLAN",
            format!("VLAN isolation needs the kernel's {}, which this kernel lacks; remove the vlanid option", hns_kernel::uplink::Feature::Vlan.kernel_name()),
        ));
    }
    let plan = hns_kernel::uplink::plan_uplink(&adapters, vlan, &hns_kernel::names::network_tag(network_id));
    Ok((adapters, plan))
}

/// A field of the HNS schema that hns does not support yet must be empty.
pub fn unsupported(field: &str, present: bool) -> Result<(), ApiError> {
    if present {
        return Err(invalid(ErrorCode::RequestUnsupported, field, format!("{field} is not supported yet by hns; leave it empty")));
    }
    Ok(())
}

pub fn check_flags(flags: u32, field: &str) -> Result<(), ApiError> {
    if flags != 0 {
        return Err(invalid(ErrorCode::RequestUnsupported, field, format!("{field} {flags:#x}: no flag is supported yet by hns; send 0")));
    }
    Ok(())
}

/// Names of networks, endpoints and compartments: Docker's rule.
pub fn check_name(name: &str, field: &str, required: bool) -> Result<(), ApiError> {
    if name.is_empty() {
        if required {
            return Err(invalid(ErrorCode::InvalidName, field, format!("{field} is required")));
        }
        return Ok(());
    }
    let ok = name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(invalid(
            ErrorCode::InvalidName,
            field,
            format!("{field} {name:?} is not a valid name: use up to 128 letters, digits, '_', '.', '-', starting with a letter or digit"),
        ));
    }
    Ok(())
}

/// An interface name the kernel takes (dev_valid_name): 1-15 bytes, not "." or "..", no '/',
/// ':' or whitespace. Empty: hns chooses.
pub fn check_ifname(name: &str, field: &str) -> Result<(), ApiError> {
    let ok = name.is_empty()
        || (name.len() <= 15 && name != "." && name != ".." && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()));
    if !ok {
        return Err(invalid(
            ErrorCode::InvalidName,
            field,
            format!("{field} {name:?} is not a Linux interface name: use 1-15 characters without '/', ':' or whitespace, not \".\" or \"..\""),
        ));
    }
    Ok(())
}

pub fn parse_ip(s: &str, field: &str) -> Result<IpAddr, ApiError> {
    s.parse().map_err(|_| invalid(ErrorCode::InvalidIp, field, format!("{field} {s:?} is not an IP address")))
}

pub fn parse_cidr(s: &str, field: &str, code: ErrorCode) -> Result<IpNet, ApiError> {
    s.parse().map_err(|_| invalid(code, field, format!("{field} {s:?} is not a CIDR prefix such as 172.20.0.0/16 or fd00:1::/64")))
}

/// DNS settings end up in a compartment's resolv.conf, one line per kind: every value must be
/// one token of a safe charset, so none can end a line or add a directive of its own.
pub fn check_dns(dns: &Option<Dns>, field: &str) -> Result<(), ApiError> {
    let Some(d) = dns else { return Ok(()) };
    for (i, s) in d.server_list.iter().enumerate() {
        parse_ip(s, &format!("{field}.ServerList[{i}]"))?;
    }
    if !d.domain.is_empty() {
        check_dns_name(&d.domain, &format!("{field}.Domain"))?;
    }
    for (i, s) in d.search.iter().enumerate() {
        check_dns_name(s, &format!("{field}.Search[{i}]"))?;
    }
    for (i, s) in d.options.iter().enumerate() {
        let ok = (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-'));
        if !ok {
            let f = format!("{field}.Options[{i}]");
            return Err(invalid(
                ErrorCode::InvalidDns,
                f.clone(),
                format!("{f} {s:?} is not a resolver option: use one option such as \"ndots:2\" or \"edns0\" (1-64 letters, digits, ':', '.', '_', '-') per entry"),
            ));
        }
    }
    Ok(())
}

/// A DNS name as resolv.conf takes it: dot-separated labels of 1-63 letters, digits, '-' or
/// '_', at most 253 characters, an optional final dot.
fn check_dns_name(s: &str, field: &str) -> Result<(), ApiError> {
    let name = s.strip_suffix('.').unwrap_or(s);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| (1..=63).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')));
    if !ok {
        return Err(invalid(
            ErrorCode::InvalidDns,
            field,
            format!("{field} {s:?} is not a DNS name: use dot-separated labels of 1-63 letters, digits, '-' or '_' (at most 253 characters), e.g. corp.example"),
        ));
    }
    Ok(())
}

/// A subnet of a network request, parsed.
#[derive(Debug, Clone)]
pub struct SubnetPlan {
    pub spec: PoolSpec,
    /// JSON path of the subnet, for error messages.
    pub field: String,
    /// Index of the subnet's default route in its `Routes`, if the request had one.
    pub gateway_route: Option<usize>,
    pub aux_names: BTreeMap<String, IpAddr>,
    /// `VLAN {"IsolationId": 1-4094}`: 802.1Q isolation of the subnet.
    pub vlan: Option<u16>,
    /// `VSID {"IsolationId": VNI}`: the VXLAN network identifier an overlay network asks for.
    pub vsid: Option<u32>,
}

/// Parses one `Subnet` of a network request into a pool spec.
pub fn parse_subnet(s: &hns_api::Subnet, field: &str) -> Result<SubnetPlan, ApiError> {
    let prefix = parse_cidr(&s.ip_address_prefix, &format!("{field}.IpAddressPrefix"), ErrorCode::InvalidSubnet)?;
    let mut vlan = None;
    let mut vsid = None;
    for (i, p) in s.policies.iter().enumerate() {
        let pf = format!("{field}.Policies");
        let is_vsid = p.kind.eq_ignore_ascii_case("VSID");
        if !p.kind.eq_ignore_ascii_case("VLAN") && !is_vsid {
            return Err(refuse_policy(p, i, &pf, "subnet", SUBNET_POLICY_TYPES));
        }
        let f = format!("{pf}[{i}].Settings");
        let v: IsolationSettings = hns_api::decode::from_value(p.settings.clone(), &f).map_err(|e| ApiError { code: ErrorCode::InvalidPolicy, ..e })?;
        if is_vsid {
            use hns_cluster::alloc::{VNI_MAX, VNI_MIN};
            if !(VNI_MIN..=VNI_MAX).contains(&v.isolation_id) {
                return Err(invalid(
                    ErrorCode::InvalidPolicy,
                    format!("{f}.IsolationId"),
                    format!("VSID {} is out of range: overlay VNIs are {VNI_MIN}-{VNI_MAX} (lower ones are left to other VXLAN users)", v.isolation_id),
                ));
            }
            vsid = Some(v.isolation_id);
            continue;
        }
        if !(1..=4094).contains(&v.isolation_id) {
            return Err(invalid(ErrorCode::InvalidPolicy, format!("{f}.IsolationId"), format!("VLAN ID {} is out of range: 802.1Q IDs are 1-4094", v.isolation_id)));
        }
        vlan = Some(v.isolation_id as u16);
    }
    check_flags(s.flags, &format!("{field}.Flags"))?;
    unsupported(&format!("{field}.IpSubnets"), !s.ip_subnets.is_empty())?;
    let mut spec = PoolSpec { subnet: prefix, gateway: None, range: None, reserved: vec![] };
    let mut gateway_route = None;
    for (i, r) in s.routes.iter().enumerate() {
        let rf = format!("{field}.Routes[{i}]");
        let dest = parse_cidr(&r.destination_prefix, &format!("{rf}.DestinationPrefix"), ErrorCode::InvalidPrefix)?;
        if dest.prefix_len() != 0 {
            return Err(invalid(
                ErrorCode::RequestUnsupported,
                format!("{rf}.DestinationPrefix"),
                format!("{rf}.DestinationPrefix {dest}: only the default route (0.0.0.0/0 or ::/0) is supported on a subnet; it names the gateway"),
            ));
        }
        if dest.addr().is_ipv4() != prefix.addr().is_ipv4() {
            return Err(invalid(ErrorCode::InvalidPrefix, format!("{rf}.DestinationPrefix"), format!("{rf}.DestinationPrefix {dest} is not of the family of subnet {prefix}")));
        }
        if gateway_route.is_some() {
            return Err(invalid(ErrorCode::InvalidSubnet, rf, format!("subnet {prefix} has more than one default route; give one gateway per subnet")));
        }
        spec.gateway = Some(parse_ip(&r.next_hop, &format!("{rf}.NextHop"))?);
        gateway_route = Some(i);
    }
    if !s.ip_range.is_empty() {
        spec.range = Some(parse_cidr(&s.ip_range, &format!("{field}.IpRange"), ErrorCode::InvalidSubnet)?);
    }
    let mut aux_names = BTreeMap::new();
    for (name, ip) in &s.auxiliary_addresses {
        let ip = parse_ip(ip, &format!("{field}.AuxiliaryAddresses.{name}"))?;
        spec.reserved.push(ip);
        aux_names.insert(name.clone(), ip);
    }
    Ok(SubnetPlan { spec, field: field.to_owned(), gateway_route, aux_names, vlan, vsid })
}

/// Refuses a subnet no network may have: a special-purpose range, a default route, or a
/// prefix too wide to be one network (rules and bounds: `hns_ipam::check_usable`). `given`
/// is the prefix as the request spelled it; `field` the subnet's path (`Ipams[i].Subnets[j]`).
pub fn check_subnet_usable(subnet: &IpNet, given: &str, field: &str) -> Result<(), ApiError> {
    hns_ipam::check_usable(subnet).map_err(|why| {
        let instead = if subnet.addr().is_ipv4() {
            "a private range (RFC 1918) such as 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 (a /16 or /24 of it)"
        } else {
            "a unique local range (RFC 4193): a /64 of fd00::/8 such as fd00:1::/64"
        };
        invalid(ErrorCode::InvalidSubnet, format!("{field}.IpAddressPrefix"), format!("subnet {given} {why}; choose {instead}"))
    })
}

/// Refuses the subnet of a network that routes it to a bridge of its own (nat, overlay) when
/// it overlaps an address or route of the host: the host would send that traffic into the
/// bridge and lose its LAN, its default gateway or whatever the route led to. (The external
/// drivers share the LAN's subnet by design and are not checked.)
pub fn check_subnet_free_on_host(subnet: &IpNet, given: &str, field: &str, kind: NetworkType, host: &[hns_kernel::netlink::HostPrefix]) -> Result<(), ApiError> {
    match host.iter().find(|h| hns_ipam::overlaps(subnet, &h.prefix)) {
        Some(h) => Err(invalid(
            ErrorCode::SubnetInUse,
            format!("{field}.IpAddressPrefix"),
            format!(
                "subnet {given} overlaps the host's {h}: a {kind} network routes its subnet to its own bridge, so the host would lose its way to those addresses; choose a subnet the host does not use, or leave the subnet out and hns picks a free one"
            ),
        )),
        None => Ok(()),
    }
}

/// Maps an IPAM validation error of a subnet to the API field it came from.
pub fn subnet_error(p: &SubnetPlan, e: IpamError) -> ApiError {
    let field = match e.kind() {
        IpamErrorKind::InvalidGateway => match p.gateway_route {
            Some(i) => format!("{}.Routes[{i}].NextHop", p.field),
            None => format!("{}.IpAddressPrefix", p.field),
        },
        IpamErrorKind::InvalidRange => format!("{}.IpRange", p.field),
        IpamErrorKind::InvalidAux => {
            let name = p.aux_names.iter().find(|(_, ip)| e.to_string().contains(&ip.to_string())).map(|(n, _)| n.clone()).unwrap_or_default();
            format!("{}.AuxiliaryAddresses.{name}", p.field)
        }
        _ => format!("{}.IpAddressPrefix", p.field),
    };
    invalid(ErrorCode::InvalidSubnet, field, e.to_string())
}

/// Maps an address error of an endpoint request.
/// The refusal of a static address that [`reserve_host_addresses`] reserved: it says whose address
/// it is and how Docker users (whose default IPAM hands out the subnet's first addresses) avoid it.
pub fn host_address_error(net: &hns_api::HostComputeNetwork, field: &str, ip: IpAddr) -> Option<ApiError> {
    let shown = ip.to_string();
    let (name, subnet) = net.ipams.iter().flat_map(|i| &i.subnets).find_map(|s| {
        s.auxiliary_addresses.iter().find(|(k, v)| k.starts_with("host-") && **v == shown).map(|(k, _)| (k.clone(), s.ip_address_prefix.clone()))
    })?;
    let adapter = name.trim_start_matches("host-");
    Some(invalid(
        ErrorCode::AddrInvalidOrReserved,
        field,
        format!(
            "address {ip} is this host's own address on {adapter} (reserved as auxiliary address {name} of {subnet}); choose another address. With Docker's default IPAM, which hands out the subnet's first addresses, create the network with --aux-address {name}={ip} or an --ip-range, or use --ipam-driver hns"
        ),
    ))
}

pub fn address_error(field: &str, e: IpamError) -> ApiError {
    let code = match e.kind() {
        IpamErrorKind::InUse => ErrorCode::AddrInUse,
        IpamErrorKind::Exhausted => ErrorCode::AddressPoolExhausted,
        _ => ErrorCode::AddrInvalidOrReserved,
    };
    invalid(code, field, e.to_string())
}

pub fn check_network_type(kind: NetworkType) -> Result<(), ApiError> {
    if !hns_drivers::implemented(kind) {
        let implemented: Vec<&str> = NetworkType::ALL.iter().filter(|k| hns_drivers::implemented(**k)).map(|k| k.as_str()).collect();
        return Err(invalid(
            ErrorCode::InvalidNetworkType,
            "Type",
            format!("network type {kind} is not implemented yet in this hns version; implemented: {}", implemented.join(", ")),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_refused_by_name() {
        let p = [Policy { kind: "portmapping".into(), settings: serde_json::Value::Null }];
        let e = refuse_policy(&p[0], 0, "Policies", "endpoint", ENDPOINT_POLICY_TYPES);
        assert_eq!(e.code, ErrorCode::InvalidPolicyType);
        assert_eq!(e.field.as_deref(), Some("Policies[0].Type"));
        assert!(e.message.contains("PortMapping is not implemented yet"), "{}", e.message);
        let p = [Policy { kind: "Bogus".into(), settings: serde_json::Value::Null }];
        let e = refuse_policy(&p[0], 0, "Policies", "endpoint", ENDPOINT_POLICY_TYPES);
        assert!(e.message.contains("\"Bogus\" is not a endpoint policy type") || e.message.contains("is not a"), "{}", e.message);
    }

    #[test]
    fn automatic_dns_is_parsed_and_checked() {
        let p = |v: serde_json::Value| Policy { kind: "AutomaticDNS".into(), settings: v };
        assert_eq!(parse_network_policies(&[p(serde_json::json!({"Enable": false}))], "Policies").unwrap().automatic_dns, Some(false));
        assert_eq!(parse_network_policies(&[], "Policies").unwrap().automatic_dns, None);
        let e = parse_network_policies(&[p(serde_json::json!({"Enable": "yes"}))], "Policies").unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidPolicy, Some("Policies[0].Settings.Enable")));
        let e = parse_network_policies(&[p(serde_json::json!({"Enable": true})), p(serde_json::json!({"Enable": true}))], "Policies").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Policies[1]"));
        let other = Policy { kind: "RemoteSubnetRoute".into(), settings: serde_json::Value::Null };
        let e = parse_network_policies(&[p(serde_json::json!({"Enable": true})), other], "Policies").unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidPolicyType, Some("Policies[1].Type")));
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        for ok in ["", "eth0", "net1", "a.b-c_d", "fifteen-chars15"] {
            assert!(check_ifname(ok, "InterfaceName").is_ok(), "{ok}");
        }
        for bad in ["sixteen-chars-16", "a/b", "a b", "a:b", ".", "..", "a\n"] {
            let e = check_ifname(bad, "InterfaceName").unwrap_err();
            assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidName, Some("InterfaceName")), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(check_name("my-net_1.a", "Name", true).is_ok());
        assert!(check_name("", "Name", true).is_err());
        assert!(check_name("", "Name", false).is_ok());
        let e = check_name("-bad name", "Name", true).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidName);
        assert!(e.message.contains("-bad name"));
    }

    #[test]
    fn subnet_parsing_names_fields() {
        let s = hns_api::Subnet { ip_address_prefix: "172.20.0.0/33".into(), ..Default::default() };
        let e = parse_subnet(&s, "Ipams[0].Subnets[0]").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Ipams[0].Subnets[0].IpAddressPrefix"));
        assert_eq!(e.code, ErrorCode::InvalidSubnet);
        let s = hns_api::Subnet {
            ip_address_prefix: "172.20.0.0/16".into(),
            routes: vec![hns_api::Route { next_hop: "10.0.0.1".into(), destination_prefix: "0.0.0.0/0".into(), metric: 0 }],
            ..Default::default()
        };
        let p = parse_subnet(&s, "Ipams[0].Subnets[0]").unwrap();
        let e = subnet_error(&p, hns_ipam::Pool::new(&p.spec).err().unwrap());
        assert_eq!(e.field.as_deref(), Some("Ipams[0].Subnets[0].Routes[0].NextHop"));
        let s = hns_api::Subnet { ip_address_prefix: "172.20.0.0/16".into(), routes: vec![hns_api::Route { next_hop: "172.20.0.1".into(), destination_prefix: "10.0.0.0/8".into(), metric: 0 }], ..Default::default() };
        assert_eq!(parse_subnet(&s, "S").unwrap_err().code, ErrorCode::RequestUnsupported);
    }

    #[test]
    fn unimplemented_driver_is_named() {
        let e = check_network_type(NetworkType::Ics).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidNetworkType);
        assert!(e.message.contains("ICS") && e.message.contains("NAT") && e.message.contains("Overlay"));
        assert!(check_network_type(NetworkType::Nat).is_ok());
    }

    #[test]
    fn overlay_policies_parse_and_refuse_bad_values() {
        let vxlan = |settings: serde_json::Value| vec![Policy { kind: "VxlanPort".into(), settings }];
        assert_eq!(parse_network_policies(&vxlan(serde_json::json!({"Port": 4790})), "Policies").unwrap().vxlan_port, Some(4790));
        let e = parse_network_policies(&vxlan(serde_json::json!({"Port": 0})), "Policies").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Policies[0].Settings.Port"));
        let e = parse_network_policies(&vxlan(serde_json::json!({"Port": 70000})), "Policies").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPolicy);
        let subnet = |id: u32| hns_api::Subnet {
            ip_address_prefix: "10.9.0.0/24".into(),
            policies: vec![Policy { kind: "VSID".into(), settings: serde_json::json!({"IsolationId": id}) }],
            ..Default::default()
        };
        assert_eq!(parse_subnet(&subnet(5000), "S").unwrap().vsid, Some(5000));
        let e = parse_subnet(&subnet(10), "S").unwrap_err();
        assert!(e.field.as_deref() == Some("S.Policies[0].Settings.IsolationId") && e.message.contains("4096"), "{e:?}");
    }

    #[test]
    fn dns_values_are_single_safe_tokens() {
        let dns = |d: Dns| check_dns(&Some(d), "Dns");
        let ok = Dns { domain: "corp.example.".into(), search: vec!["a-b.c_d".into()], options: vec!["ndots:2".into(), "edns0".into()], ..Default::default() };
        assert!(dns(ok).is_ok());
        let e = dns(Dns { options: vec!["ndots:1\nnameserver 203.0.113.66".into()], ..Default::default() }).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidDns, Some("Dns.Options[0]")));
        assert!(e.message.contains("nameserver 203.0.113.66"), "{}", e.message);
        for (bad, field) in [("a b", "Dns.Domain"), ("a..b", "Dns.Domain"), ("x/y", "Dns.Domain"), (&"a".repeat(64), "Dns.Domain")] {
            let e = dns(Dns { domain: bad.into(), ..Default::default() }).unwrap_err();
            assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidDns, Some(field)), "{bad}");
        }
        let e = dns(Dns { search: vec!["ok".into(), "bad\tname".into()], ..Default::default() }).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Dns.Search[1]"));
    }

    #[test]
    fn dns_servers_must_be_ips() {
        let d = Some(Dns { server_list: vec!["1.1.1.1".into(), "nope".into()], ..Default::default() });
        let e = check_dns(&d, "Dns").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Dns.ServerList[1]"));
    }

    #[test]
    fn unusable_subnets_are_refused_naming_field_value_and_rule() {
        let e = check_subnet_usable(&"169.254.0.0/16".parse().unwrap(), "169.254.0.0/16", "Ipams[0].Subnets[0]").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidSubnet);
        assert_eq!(e.field.as_deref(), Some("Ipams[0].Subnets[0].IpAddressPrefix"));
        assert!(e.message.starts_with("subnet 169.254.0.0/16 is link-local (RFC 3927); choose a private range (RFC 1918) such as 10.0.0.0/8"), "{}", e.message);
        let e = check_subnet_usable(&"::ffff:0:0/96".parse().unwrap(), "::ffff:0:0/96", "Ipams[1].Subnets[0]").unwrap_err();
        assert!(e.message.starts_with("subnet ::ffff:0:0/96 is IPv4-mapped (RFC 4291); choose a unique local range"), "{}", e.message);
        assert!(check_subnet_usable(&"10.80.0.0/24".parse().unwrap(), "10.80.0.0/24", "Ipams[0].Subnets[0]").is_ok());
    }

    #[test]
    fn a_subnet_on_the_hosts_addresses_or_routes_is_refused_naming_them() {
        use hns_kernel::netlink::{HostPrefix, HostPrefixKind};
        let host = vec![
            HostPrefix { prefix: "198.51.100.0/24".parse().unwrap(), kind: HostPrefixKind::Address("198.51.100.2/24".parse().unwrap()), link: Some("eth0".into()) },
            HostPrefix { prefix: "10.8.0.0/16".parse().unwrap(), kind: HostPrefixKind::Route { via: Some("198.51.100.1".parse().unwrap()) }, link: Some("eth0".into()) },
        ];
        let check = |s: &str| check_subnet_free_on_host(&s.parse().unwrap(), s, "Ipams[0].Subnets[0]", NetworkType::Nat, &host);
        let e = check("198.51.100.0/25").unwrap_err();
        assert_eq!(e.code, ErrorCode::SubnetInUse);
        assert_eq!(e.field.as_deref(), Some("Ipams[0].Subnets[0].IpAddressPrefix"));
        assert!(e.message.starts_with("subnet 198.51.100.0/25 overlaps the host's address 198.51.100.2/24 on eth0: a NAT network"), "{}", e.message);
        assert!(check("10.8.4.0/24").unwrap_err().message.contains("the host's route 10.8.0.0/16 via 198.51.100.1 dev eth0"));
        assert!(check("10.9.0.0/16").is_ok());
    }
}
