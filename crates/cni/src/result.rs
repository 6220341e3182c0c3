//! The ADD result (CNI SPEC "Success"), built from what hnsd reports, in the version asked for.

use std::net::IpAddr;

use hns_api::{HostComputeEndpoint, HostComputeNetwork, NetworkType};
use serde_json::{Map, Value, json};

use crate::version;

/// DNS settings of the result, read from the resolv.conf hnsd wrote for the compartment.
#[derive(Debug, Default, PartialEq)]
pub struct ResultDns {
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl ResultDns {
    pub fn from_resolv_conf(text: &str) -> ResultDns {
        let mut d = ResultDns::default();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            match w.next() {
                Some("nameserver") => d.nameservers.extend(w.next().map(str::to_owned)),
                Some("search") => d.search = w.map(str::to_owned).collect(),
                Some("options") => d.options = w.map(str::to_owned).collect(),
                _ => {}
            }
        }
        d
    }
}

/// The subnet gateways of a network (the default route's next hop of each subnet).
fn gateways(net: &HostComputeNetwork) -> Vec<(ipnet::IpNet, IpAddr)> {
    net.subnets()
        .filter_map(|s| {
            let prefix: ipnet::IpNet = s.ip_address_prefix.parse().ok()?;
            let gw = s.routes.iter().find(|r| r.destination_prefix == "0.0.0.0/0" || r.destination_prefix == "::/0")?;
            Some((prefix, gw.next_hop.parse().ok()?))
        })
        .collect()
}

/// Whether hnsd gives the network's endpoints a default route (not on internal networks, nor
/// on overlay networks without outbound NAT).
fn routes_out(net: &HostComputeNetwork) -> bool {
    !net.internal && (net.network_type() != NetworkType::Overlay || net.outbound_nat)
}

/// `00-15-5D-0A-00-02` (HNS) → `00:15:5d:0a:00:02` (CNI).
pub fn cni_mac(hns: &str) -> String {
    hns.replace('-', ":").to_ascii_lowercase()
}

pub fn add_result(cni_version: &str, ep: &HostComputeEndpoint, net: &HostComputeNetwork, sandbox: &str, dns: &ResultDns) -> Value {
    let old = !version::at_least(cni_version, "1.0.0");
    let gws = gateways(net);
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for c in &ep.ip_configurations {
        let Ok(ip) = c.ip_address.parse::<IpAddr>() else { continue };
        let mut entry = Map::new();
        if old {
            entry.insert("version".into(), json!(if ip.is_ipv4() { "4" } else { "6" }));
        }
        entry.insert("address".into(), json!(format!("{ip}/{}", c.prefix_length)));
        if let Some((_, gw)) = gws.iter().find(|(p, _)| p.contains(&ip)) {
            entry.insert("gateway".into(), json!(gw.to_string()));
            if routes_out(net) {
                routes.push(json!({ "dst": if ip.is_ipv4() { "0.0.0.0/0" } else { "::/0" }, "gw": gw.to_string() }));
            }
        }
        entry.insert("interface".into(), json!(0));
        ips.push(Value::Object(entry));
    }
    for r in &ep.routes {
        let mut route = json!({ "dst": r.destination_prefix });
        if !r.next_hop.is_empty() {
            route["gw"] = json!(r.next_hop);
        }
        routes.push(route);
    }
    let mut out = json!({
        "cniVersion": cni_version,
        "interfaces": [{ "name": ep.interface_name, "mac": cni_mac(&ep.mac_address), "sandbox": sandbox }],
        "ips": ips,
    });
    if !routes.is_empty() {
        out["routes"] = json!(routes);
    }
    let mut d = Map::new();
    for (key, list) in [("nameservers", &dns.nameservers), ("search", &dns.search), ("options", &dns.options)] {
        if !list.is_empty() {
            d.insert(key.into(), json!(list));
        }
    }
    if !d.is_empty() {
        out["dns"] = Value::Object(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (HostComputeEndpoint, HostComputeNetwork) {
        let net: HostComputeNetwork = serde_json::from_value(json!({
            "Name": "nat", "Type": "NAT",
            "Ipams": [{"Type": "Static", "Subnets": [{"IpAddressPrefix": "10.88.0.0/16", "Routes": [{"NextHop": "10.88.0.1", "DestinationPrefix": "0.0.0.0/0"}]}]}]
        }))
        .unwrap();
        let ep: HostComputeEndpoint = serde_json::from_value(json!({
            "Name": "web", "InterfaceName": "net1", "MacAddress": "00-15-5D-0A-58-02",
            "IpConfigurations": [{"IpAddress": "10.88.0.2", "PrefixLength": 16}],
            "Routes": [{"DestinationPrefix": "192.0.2.0/24", "NextHop": "10.88.0.9"}]
        }))
        .unwrap();
        (ep, net)
    }

    #[test]
    fn result_per_version() {
        let (ep, net) = sample();
        let dns = ResultDns::from_resolv_conf("# x\nnameserver 10.88.0.1\nsearch a.example b.example\noptions ndots:2\n");
        let r = add_result("1.0.0", &ep, &net, "/run/netns/c1", &dns);
        assert_eq!(
            r,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "net1", "mac": "00:15:5d:0a:58:02", "sandbox": "/run/netns/c1"}],
                "ips": [{"address": "10.88.0.2/16", "gateway": "10.88.0.1", "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}, {"dst": "192.0.2.0/24", "gw": "10.88.0.9"}],
                "dns": {"nameservers": ["10.88.0.1"], "search": ["a.example", "b.example"], "options": ["ndots:2"]}
            })
        );
        let r = add_result("0.4.0", &ep, &net, "/run/netns/c1", &ResultDns::default());
        assert_eq!(r["ips"][0]["version"], "4");
        assert!(r.get("dns").is_none());
    }

    #[test]
    fn internal_networks_get_no_default_route() {
        let (ep, mut net) = sample();
        net.internal = true;
        let r = add_result("1.1.0", &ep, &net, "/x", &ResultDns::default());
        assert_eq!(r["routes"], json!([{"dst": "192.0.2.0/24", "gw": "10.88.0.9"}]));
    }
}
