//! The `OutBoundNAT`, `SDNRoute` and `QOS` endpoint policies and the `HostRoute` network
//! policy: the HNS v2 wire form parsed once, at validation, into typed values stored with the
//! endpoint ([`EndpointPolicies`], in the endpoint record) or the network (its `Policies`).
//! Every bad field is its own error naming the field, the value and the rule.
//!
//! Wire forms (hcsshim `hcn/hcnpolicy.go`):
//! - `OutBoundNAT` (`OutboundNatPolicySetting`): `VirtualIP` string, `Exceptions` and
//!   `Destinations` lists of addresses or prefixes, `Flags` (0, or 2 = the policy is for
//!   IPv6; 1 `LocalRoutedVip` is refused), `MaxPortPoolUsage` (accepted, ignored: the kernel
//!   allocates ports per destination). At most one per family.
//! - `SDNRoute` (`SDNRoutePolicySetting`): `DestinationPrefix`, `NextHop` (empty: on-link),
//!   `NeedEncap` (true only on overlay networks, where the route goes through the overlay's
//!   gateway).
//! - `QOS` (`QosPolicySetting`): `MaximumOutgoingBandwidthInBytes`, bytes per second sent by
//!   the endpoint (0: no cap). hns extension: `MaximumIncomingBandwidthInBytes`, bytes per
//!   second received by it (what CNI's `bandwidth` ingressRate asks for).
//! - `HostRoute` (network): HNS sends `{}`, which hns accepts as is (its host already routes to
//!   every endpoint of every network). hns extension: `DestinationPrefix` and `NextHop` put a
//!   route in the host's namespace towards a next hop on the network.

use std::net::IpAddr;

use hns_api::{ApiError, ErrorCode, NetworkType, Policy};
use hns_kernel::nft_outbound::OutboundNat;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub const OUTBOUND_NAT: &str = "OutBoundNAT";
pub const SDN_ROUTE: &str = "SDNRoute";
pub const QOS: &str = "QOS";
pub const HOST_ROUTE: &str = "HostRoute";

/// The smallest cap accepted, bytes per second: HNS ignores smaller values (hcsshim#153).
pub const MIN_RATE: u64 = 10_000;
/// The largest: 1 Tbit/s.
pub const MAX_RATE: u64 = 125_000_000_000;

/// Whether `p` is one of the endpoint policies of this module.
pub fn is_endpoint_kind(p: &Policy) -> bool {
    [OUTBOUND_NAT, SDN_ROUTE, QOS].iter().any(|k| p.kind.eq_ignore_ascii_case(k))
}

pub fn is_host_route(p: &Policy) -> bool {
    p.kind.eq_ignore_ascii_case(HOST_ROUTE)
}

/// A route: a destination prefix and an optional next hop (none: on-link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub destination: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub need_encap: bool,
}

/// Rates of the QOS policy, bytes per second; `None`: uncapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Qos {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming: Option<u64>,
}

/// The typed policies of this module an endpoint carries (stored in its record).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EndpointPolicies {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_nat: Vec<OutboundNat>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sdn_routes: Vec<RouteSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<Qos>,
}

impl EndpointPolicies {
    pub fn is_empty(&self) -> bool {
        self.outbound_nat.is_empty() && self.sdn_routes.is_empty() && self.qos.is_none()
    }

    /// As stored: a QOS policy that caps nothing (all rates 0) is no policy.
    pub fn normalized(mut self) -> EndpointPolicies {
        if self.qos == Some(Qos::default()) {
            self.qos = None;
        }
        self
    }
}

fn bad(field: String, msg: String) -> ApiError {
    ApiError::field(ErrorCode::InvalidPolicy, field, msg)
}

fn decode<T: serde::de::DeserializeOwned>(v: &serde_json::Value, f: &str) -> Result<T, ApiError> {
    hns_api::decode::from_value(v.clone(), f).map_err(|e| ApiError { code: ErrorCode::InvalidPolicy, ..e })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct OutboundNatSettings {
    #[serde(default, rename = "VirtualIP")]
    virtual_ip: String,
    #[serde(default)]
    exceptions: Option<Vec<String>>,
    #[serde(default)]
    destinations: Option<Vec<String>>,
    #[serde(default)]
    flags: u32,
    #[serde(default)]
    #[allow(dead_code)]
    max_port_pool_usage: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SdnRouteSettings {
    #[serde(default)]
    destination_prefix: String,
    #[serde(default)]
    next_hop: String,
    #[serde(default)]
    need_encap: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct QosSettings {
    #[serde(default)]
    maximum_outgoing_bandwidth_in_bytes: u64,
    #[serde(default)]
    maximum_incoming_bandwidth_in_bytes: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct HostRouteSettings {
    #[serde(default)]
    destination_prefix: String,
    #[serde(default)]
    next_hop: String,
}

fn family(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

fn prefixes(list: &[String], f: &str, v6: bool) -> Result<Vec<IpNet>, ApiError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let fi = format!("{f}[{i}]");
            let n = a.trim().parse::<IpNet>().or_else(|_| a.trim().parse::<IpAddr>().map(IpNet::from)).map_err(|_| bad(fi.clone(), format!("{a:?} is not an IPv4 or IPv6 address or prefix (such as 10.244.0.0/16)")))?;
            if n.addr().is_ipv6() != v6 {
                return Err(bad(fi, format!("{a} is {} but this OutBoundNAT policy is for {} (Flags 2 marks an IPv6 policy; give one policy per family)", family(!v6), family(v6))));
            }
            Ok(n.trunc())
        })
        .collect()
}

/// Parses one OutBoundNAT policy's settings; `f` is its `...Settings` path.
pub fn parse_outbound_nat(settings: &serde_json::Value, f: &str) -> Result<OutboundNat, ApiError> {
    let s: OutboundNatSettings = decode(settings, f)?;
    if s.flags & !2 != 0 {
        return Err(ApiError::field(
            ErrorCode::RequestUnsupported,
            format!("{f}.Flags"),
            format!("Flags {:#x}: only 0 (IPv4) and 2 (IPv6) are supported; LocalRoutedVip (1) belongs to load balancers", s.flags),
        ));
    }
    let ipv6 = s.flags & 2 != 0;
    let virtual_ip = if s.virtual_ip.trim().is_empty() {
        None
    } else {
        let ip: IpAddr = s.virtual_ip.trim().parse().map_err(|_| bad(format!("{f}.VirtualIP"), format!("{:?} is not an IP address; leave it empty to use the host's address", s.virtual_ip)))?;
        if ip.is_ipv6() != ipv6 {
            return Err(bad(format!("{f}.VirtualIP"), format!("{ip} is {} but this OutBoundNAT policy is for {} (Flags 2 marks an IPv6 policy)", family(!ipv6), family(ipv6))));
        }
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
            return Err(bad(format!("{f}.VirtualIP"), format!("{ip} cannot be a source address; give a unicast address the LAN routes to this host, or leave it empty")));
        }
        Some(ip)
    };
    let exceptions = prefixes(s.exceptions.as_deref().unwrap_or_default(), &format!("{f}.Exceptions"), ipv6)?;
    let destinations = prefixes(s.destinations.as_deref().unwrap_or_default(), &format!("{f}.Destinations"), ipv6)?;
    Ok(OutboundNat { ipv6, virtual_ip, exceptions, destinations })
}

fn route(dest: &str, hop: &str, f: &str, dest_field: &str) -> Result<RouteSpec, ApiError> {
    if dest.trim().is_empty() {
        return Err(bad(format!("{f}.{dest_field}"), format!("{dest_field} is required: the prefix the route leads to, such as 10.50.0.0/16")));
    }
    let destination = dest.trim().parse::<IpNet>().map_err(|_| bad(format!("{f}.{dest_field}"), format!("{dest:?} is not a prefix such as 10.50.0.0/16 or fd00:50::/64")))?;
    let next_hop = if hop.trim().is_empty() {
        None
    } else {
        let ip: IpAddr = hop.trim().parse().map_err(|_| bad(format!("{f}.NextHop"), format!("{hop:?} is not an IP address; leave it empty for an on-link route")))?;
        if ip.is_ipv6() != destination.addr().is_ipv6() {
            return Err(bad(format!("{f}.NextHop"), format!("next hop {ip} is {} but {destination} is {}", family(ip.is_ipv6()), family(destination.addr().is_ipv6()))));
        }
        Some(ip)
    };
    Ok(RouteSpec { destination: destination.trunc(), next_hop, need_encap: false })
}

/// Checks that a route's next hop lies on one of the network's subnets (`subnets`).
fn check_next_hop(r: &RouteSpec, subnets: &[IpNet], f: &str, net_name: &str) -> Result<(), ApiError> {
    // Stored policies are read back without their network's subnets (checked when stored).
    if let Some(hop) = r.next_hop
        && !subnets.is_empty()
        && !subnets.iter().any(|s| s.contains(&hop))
    {
        let shown: Vec<String> = subnets.iter().map(|s| s.to_string()).collect();
        return Err(bad(format!("{f}.NextHop"), format!("next hop {hop} is not on network {net_name:?} ({}); give an address of its subnets", shown.join(", "))));
    }
    Ok(())
}

/// Parses one SDNRoute; `kind` and `subnets` are the endpoint's network's.
pub fn parse_sdn_route(settings: &serde_json::Value, f: &str, kind: NetworkType, subnets: &[IpNet], net_name: &str) -> Result<RouteSpec, ApiError> {
    let s: SdnRouteSettings = decode(settings, f)?;
    let mut r = route(&s.destination_prefix, &s.next_hop, f, "DestinationPrefix")?;
    if r.destination.prefix_len() == 0 {
        return Err(bad(format!("{f}.DestinationPrefix"), format!("{} is the default route, which the network's gateway already gives; route a narrower prefix", r.destination)));
    }
    if s.need_encap {
        if kind != NetworkType::Overlay {
            return Err(ApiError::field(
                ErrorCode::RequestUnsupported,
                format!("{f}.NeedEncap"),
                format!("NeedEncap true asks for a route through the overlay, but this is a {kind} network; set it false or use an Overlay network"),
            ));
        }
        if r.next_hop.is_some() {
            return Err(bad(format!("{f}.NextHop"), "with NeedEncap true the route goes through the overlay's gateway; leave NextHop empty".into()));
        }
        r.need_encap = true;
    }
    check_next_hop(&r, subnets, f, net_name)?;
    Ok(r)
}

/// Parses one QOS policy.
pub fn parse_qos(settings: &serde_json::Value, f: &str) -> Result<Qos, ApiError> {
    let s: QosSettings = decode(settings, f)?;
    let rate = |v: u64, name: &str| -> Result<Option<u64>, ApiError> {
        match v {
            0 => Ok(None),
            v if !(MIN_RATE..=MAX_RATE).contains(&v) => Err(bad(
                format!("{f}.{name}"),
                format!("{v} bytes per second is out of range: give 0 for no cap, or {MIN_RATE} (10 kB/s; HNS ignores smaller caps) to {MAX_RATE} (1 Tbit/s)"),
            )),
            v => Ok(Some(v)),
        }
    };
    Ok(Qos { outgoing: rate(s.maximum_outgoing_bandwidth_in_bytes, "MaximumOutgoingBandwidthInBytes")?, incoming: rate(s.maximum_incoming_bandwidth_in_bytes, "MaximumIncomingBandwidthInBytes")? })
}

/// The policies of this module among an endpoint request's policies (others are left to
/// their own parsers), checked against its network.
pub fn parse_endpoint(policies: &[Policy], field: &str, kind: NetworkType, subnets: &[IpNet], net_name: &str) -> Result<EndpointPolicies, ApiError> {
    let mut out = EndpointPolicies::default();
    for (i, p) in policies.iter().enumerate().filter(|(_, p)| is_endpoint_kind(p)) {
        let f = format!("{field}[{i}].Settings");
        let needs_veth = |what: &str| -> Result<(), ApiError> {
            if matches!(kind, NetworkType::Transparent | NetworkType::L2Tunnel) {
                return Err(bad(
                    format!("{field}[{i}].Type"),
                    format!("{what} is not supported on {kind} networks: their endpoints are macvlan/ipvlan children with no host-side interface, so the host cannot apply it outside the container's reach"),
                ));
            }
            Ok(())
        };
        if p.kind.eq_ignore_ascii_case(OUTBOUND_NAT) {
            needs_veth(OUTBOUND_NAT)?;
            let n = parse_outbound_nat(&p.settings, &f)?;
            if out.outbound_nat.iter().any(|o| o.ipv6 == n.ipv6) {
                return Err(bad(format!("{field}[{i}]"), format!("a second {} OutBoundNAT policy; give one per family (merge the Exceptions)", family(n.ipv6))));
            }
            out.outbound_nat.push(n);
        } else if p.kind.eq_ignore_ascii_case(SDN_ROUTE) {
            let r = parse_sdn_route(&p.settings, &f, kind, subnets, net_name)?;
            if out.sdn_routes.iter().any(|o| o.destination == r.destination) {
                return Err(bad(format!("{f}.DestinationPrefix"), format!("a second SDNRoute to {}; give one route per prefix", r.destination)));
            }
            out.sdn_routes.push(r);
        } else {
            needs_veth(QOS)?;
            if out.qos.is_some() {
                return Err(bad(format!("{field}[{i}]"), "QOS is given twice; give it once".into()));
            }
            // Kept even when it caps nothing, so a modify can name it (see `normalized`).
            out.qos = Some(parse_qos(&p.settings, &f)?);
        }
    }
    Ok(out)
}

/// Parses one HostRoute network policy; `None` for HNS's empty `{}` form.
pub fn parse_host_route(settings: &serde_json::Value, f: &str) -> Result<Option<RouteSpec>, ApiError> {
    if settings.is_null() || settings.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(None);
    }
    let s: HostRouteSettings = decode(settings, f)?;
    if s.destination_prefix.is_empty() && s.next_hop.is_empty() {
        return Ok(None);
    }
    let r = route(&s.destination_prefix, &s.next_hop, f, "DestinationPrefix")?;
    if r.destination.prefix_len() == 0 {
        return Err(bad(format!("{f}.DestinationPrefix"), format!("{} would replace the host's default route; route a narrower prefix", r.destination)));
    }
    if r.next_hop.is_none() {
        return Err(bad(format!("{f}.NextHop"), "NextHop is required: the address on this network the host sends the prefix to".into()));
    }
    Ok(Some(r))
}

/// The HostRoutes of a network's policies, checked against its subnets.
pub fn parse_host_routes(policies: &[Policy], field: &str, subnets: &[IpNet], net_name: &str) -> Result<Vec<RouteSpec>, ApiError> {
    let mut out: Vec<RouteSpec> = Vec::new();
    for (i, p) in policies.iter().enumerate().filter(|(_, p)| is_host_route(p)) {
        let f = format!("{field}[{i}].Settings");
        if let Some(r) = parse_host_route(&p.settings, &f)? {
            check_next_hop(&r, subnets, &f, net_name)?;
            if out.iter().any(|o| o.destination == r.destination) {
                return Err(bad(format!("{f}.DestinationPrefix"), format!("a second HostRoute to {}; give one route per prefix", r.destination)));
            }
            out.push(r);
        }
    }
    Ok(out)
}

/// The canonical HostRoute policies of a network: HNS's `{}` ones as given, the routes (as
/// parsed by [`parse_host_routes`] from the same `given`) in their settled form.
pub fn host_route_policies(given: &[Policy], routes: &[RouteSpec]) -> Vec<Policy> {
    let empty = given.iter().filter(|p| is_host_route(p)).count() - routes.len();
    std::iter::repeat_n(Policy { kind: HOST_ROUTE.into(), settings: serde_json::json!({}) }, empty)
        .chain(routes.iter().map(|r| Policy {
            kind: HOST_ROUTE.into(),
            settings: serde_json::json!({"DestinationPrefix": r.destination.to_string(), "NextHop": r.next_hop.map(|h| h.to_string()).unwrap_or_default()}),
        }))
        .collect()
}

/// The wire form of an endpoint's policies of this module, as shown in its `Policies`.
pub fn to_policies(p: &EndpointPolicies) -> Vec<Policy> {
    let mut out = Vec::new();
    let list = |v: &[IpNet]| v.iter().map(|n| if n.prefix_len() == n.max_prefix_len() { n.addr().to_string() } else { n.to_string() }).collect::<Vec<_>>();
    for n in &p.outbound_nat {
        let mut s = serde_json::json!({});
        let o = s.as_object_mut().expect("object");
        if let Some(v) = n.virtual_ip {
            o.insert("VirtualIP".into(), v.to_string().into());
        }
        if !n.exceptions.is_empty() {
            o.insert("Exceptions".into(), list(&n.exceptions).into());
        }
        if !n.destinations.is_empty() {
            o.insert("Destinations".into(), list(&n.destinations).into());
        }
        if n.ipv6 {
            o.insert("Flags".into(), 2.into());
        }
        out.push(Policy { kind: OUTBOUND_NAT.into(), settings: s });
    }
    for r in &p.sdn_routes {
        out.push(Policy {
            kind: SDN_ROUTE.into(),
            settings: serde_json::json!({"DestinationPrefix": r.destination.to_string(), "NextHop": r.next_hop.map(|h| h.to_string()).unwrap_or_default(), "NeedEncap": r.need_encap}),
        });
    }
    if let Some(q) = p.qos {
        let mut s = serde_json::json!({"MaximumOutgoingBandwidthInBytes": q.outgoing.unwrap_or(0)});
        if let Some(i) = q.incoming {
            s["MaximumIncomingBandwidthInBytes"] = i.into();
        }
        out.push(Policy { kind: QOS.into(), settings: s });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pol(kind: &str, v: serde_json::Value) -> Policy {
        Policy { kind: kind.into(), settings: v }
    }

    fn subnets() -> Vec<IpNet> {
        vec!["10.77.2.0/24".parse().unwrap(), "2001:db8:77:2::/64".parse().unwrap()]
    }

    fn parse(ps: &[Policy], kind: NetworkType) -> Result<EndpointPolicies, ApiError> {
        parse_endpoint(ps, "Policies", kind, &subnets(), "l2")
    }

    #[test]
    fn full_policies_parse_and_show_back() {
        let ps = [
            pol("PortMapping", json!({})),
            pol("OutBoundNAT", json!({"VirtualIP": "10.77.2.9", "Exceptions": ["10.244.0.0/16", "10.77.2.0/24", "192.168.1.1"], "MaxPortPoolUsage": 100})),
            pol("outboundnat", json!({"Exceptions": ["fd00::/8"], "Flags": 2})),
            pol("SDNRoute", json!({"DestinationPrefix": "10.50.0.0/16", "NextHop": "10.77.2.1", "NeedEncap": false})),
            pol("QOS", json!({"MaximumOutgoingBandwidthInBytes": 125000})),
        ];
        let p = parse(&ps, NetworkType::L2Bridge).unwrap();
        assert_eq!(p.outbound_nat.len(), 2);
        assert_eq!(p.outbound_nat[0].virtual_ip, Some("10.77.2.9".parse().unwrap()));
        assert_eq!(p.outbound_nat[0].exceptions[2], "192.168.1.1/32".parse::<IpNet>().unwrap());
        assert!(p.outbound_nat[1].ipv6);
        assert_eq!(p.sdn_routes[0].next_hop, Some("10.77.2.1".parse().unwrap()));
        assert_eq!(p.qos, Some(Qos { outgoing: Some(125000), incoming: None }));
        // The shown form parses back to the same policies.
        assert_eq!(parse(&to_policies(&p), NetworkType::L2Bridge).unwrap(), p);
        // QOS 0 means no cap.
        assert_eq!(parse(&[pol("QOS", json!({"MaximumOutgoingBandwidthInBytes": 0}))], NetworkType::Nat).unwrap().normalized().qos, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (pol("OutBoundNAT", json!({"VirtualIP": "10.0.0.300"})), "Policies[0].Settings.VirtualIP"),
            (pol("OutBoundNAT", json!({"VirtualIP": "fd00::1"})), "Policies[0].Settings.VirtualIP"),
            (pol("OutBoundNAT", json!({"VirtualIP": "0.0.0.0"})), "Policies[0].Settings.VirtualIP"),
            (pol("OutBoundNAT", json!({"Exceptions": ["10.0.0.0/8", "nope"]})), "Policies[0].Settings.Exceptions[1]"),
            (pol("OutBoundNAT", json!({"Exceptions": ["fd00::/8"]})), "Policies[0].Settings.Exceptions[0]"),
            (pol("OutBoundNAT", json!({"Destinations": ["10.0.0.0/33"]})), "Policies[0].Settings.Destinations[0]"),
            (pol("OutBoundNAT", json!({"Flags": 1})), "Policies[0].Settings.Flags"),
            (pol("OutBoundNAT", json!({"Bogus": 1})), "Policies[0].Settings"),
            (pol("SDNRoute", json!({"NextHop": "10.77.2.1"})), "Policies[0].Settings.DestinationPrefix"),
            (pol("SDNRoute", json!({"DestinationPrefix": "10.50.0.0/40"})), "Policies[0].Settings.DestinationPrefix"),
            (pol("SDNRoute", json!({"DestinationPrefix": "0.0.0.0/0", "NextHop": "10.77.2.1"})), "Policies[0].Settings.DestinationPrefix"),
            (pol("SDNRoute", json!({"DestinationPrefix": "10.50.0.0/16", "NextHop": "10.9.9.9"})), "Policies[0].Settings.NextHop"),
            (pol("SDNRoute", json!({"DestinationPrefix": "10.50.0.0/16", "NextHop": "fd00::1"})), "Policies[0].Settings.NextHop"),
            (pol("SDNRoute", json!({"DestinationPrefix": "10.50.0.0/16", "NeedEncap": true})), "Policies[0].Settings.NeedEncap"),
            (pol("QOS", json!({"MaximumOutgoingBandwidthInBytes": 1024})), "Policies[0].Settings.MaximumOutgoingBandwidthInBytes"),
            (pol("QOS", json!({"MaximumOutgoingBandwidthInBytes": -5})), "Policies[0].Settings.MaximumOutgoingBandwidthInBytes"),
            (pol("QOS", json!({"MaximumIncomingBandwidthInBytes": 200_000_000_000u64})), "Policies[0].Settings.MaximumIncomingBandwidthInBytes"),
        ];
        for (p, field) in cases {
            let e = parse(std::slice::from_ref(&p), NetworkType::L2Bridge).unwrap_err();
            assert!(e.field.as_deref().is_some_and(|f| f.starts_with(field)), "{:?}: {:?} {}", p.settings, e.field, e.message);
        }
        let twice = [pol("OutBoundNAT", json!({})), pol("OutBoundNAT", json!({"VirtualIP": "10.77.2.9"}))];
        assert_eq!(parse(&twice, NetworkType::L2Bridge).unwrap_err().field.as_deref(), Some("Policies[1]"));
        let e = parse(&[pol("QOS", json!({"MaximumOutgoingBandwidthInBytes": 100000}))], NetworkType::Transparent).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Policies[0].Type"));
        assert!(e.message.contains("no host-side interface"), "{}", e.message);
        // NeedEncap on overlay: through the overlay's gateway, no NextHop.
        let r = parse(&[pol("SDNRoute", json!({"DestinationPrefix": "10.50.0.0/16", "NeedEncap": true}))], NetworkType::Overlay).unwrap();
        assert!(r.sdn_routes[0].need_encap);
    }

    #[test]
    fn host_routes() {
        let ok = [pol("HostRoute", json!({})), pol("HostRoute", json!({"DestinationPrefix": "10.60.0.0/16", "NextHop": "10.77.2.50"}))];
        let r = parse_host_routes(&ok, "Policies", &subnets(), "l2").unwrap();
        assert_eq!(r, vec![RouteSpec { destination: "10.60.0.0/16".parse().unwrap(), next_hop: Some("10.77.2.50".parse().unwrap()), need_encap: false }]);
        for (v, field) in [
            (json!({"DestinationPrefix": "10.60.0.0/16"}), "Policies[0].Settings.NextHop"),
            (json!({"DestinationPrefix": "0.0.0.0/0", "NextHop": "10.77.2.50"}), "Policies[0].Settings.DestinationPrefix"),
            (json!({"DestinationPrefix": "10.60.0.0/16", "NextHop": "10.1.1.1"}), "Policies[0].Settings.NextHop"),
            (json!({"DestinationPrefix": "x", "NextHop": "10.77.2.50"}), "Policies[0].Settings.DestinationPrefix"),
            (json!({"Metric": 5}), "Policies[0].Settings"),
        ] {
            let e = parse_host_routes(&[pol("HostRoute", v.clone())], "Policies", &subnets(), "l2").unwrap_err();
            assert!(e.field.as_deref().is_some_and(|f| f.starts_with(field)), "{v}: {:?} {}", e.field, e.message);
        }
    }
}
