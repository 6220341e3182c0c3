//! The objects the cluster stores, as they appear in etcd values (JSON).
//!
//! JSON keeps the values readable with `etcdctl get --prefix /hns/v1/` when debugging a
//! cluster; MACs are written in the Linux notation for the same reason.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A host of the cluster: its name and the underlay address its VXLAN devices use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// VXLAN tunnel endpoint: the underlay address peers send encapsulated frames to.
    pub vtep: IpAddr,
}

/// One subnet of an overlay network with its gateway (the same on every host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlaySubnet {
    pub subnet: IpNet,
    pub gateway: IpAddr,
}

/// What a caller asks for when creating an overlay network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayNetworkSpec {
    /// Cluster-wide unique id (the HNS network id).
    pub id: String,
    /// Cluster-wide unique name.
    pub name: String,
    /// One or two subnets, at most one per address family (an endpoint gets one address of
    /// each); the first is the network's primary subnet.
    pub subnets: Vec<OverlaySubnet>,
    /// A specific VNI, or `None` to let the cluster pick the lowest free one.
    pub vni: Option<u32>,
    /// UDP port of the VXLAN devices (4789 is the IANA port).
    pub vxlan_port: u16,
    /// Every host masquerades the network's traffic to the outside (off: the network is not
    /// routed out, as on Windows).
    pub outbound_nat: bool,
}

/// An overlay network as stored: the spec with its VNI decided.
///
/// The first subnet keeps the `subnet`/`gateway` fields of records written before networks
/// could be dual stack, so those still decode (with no further subnets) and older hosts
/// still read the primary subnet of new records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayNetwork {
    pub id: String,
    pub name: String,
    pub subnet: IpNet,
    pub gateway: IpAddr,
    /// The subnet of the other address family of a dual-stack network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_subnets: Vec<OverlaySubnet>,
    pub vni: u32,
    pub vxlan_port: u16,
    /// Absent in values written before the option existed: off.
    #[serde(default)]
    pub outbound_nat: bool,
}

impl OverlayNetwork {
    /// Every subnet, the primary first. An endpoint's addresses follow this order.
    pub fn subnets(&self) -> Vec<OverlaySubnet> {
        std::iter::once(OverlaySubnet { subnet: self.subnet, gateway: self.gateway }).chain(self.more_subnets.iter().copied()).collect()
    }
}

/// An endpoint published to the cluster, so every other host can program the FDB and
/// neighbour entries that reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEndpoint {
    pub id: String,
    pub network_id: String,
    /// Name of the node (host) the endpoint lives on.
    pub node: String,
    /// Endpoint (container interface) name, for messages and DNS.
    pub name: String,
    /// Its address in the network's primary subnet.
    pub ip: IpAddr,
    /// Its address in each further subnet, in the network's order (absent in records written
    /// before networks could be dual stack).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_ips: Vec<IpAddr>,
    #[serde(with = "mac_text")]
    pub mac: [u8; 6],
    /// The VTEP of `node`, copied here so a peer needs no second lookup.
    pub vtep: IpAddr,
}

impl ClusterEndpoint {
    /// Every address, in the network's subnet order.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.ip).chain(self.more_ips.iter().copied())
    }
}

/// Who holds an address of a network (the value of an address reservation key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressOwner {
    pub endpoint_id: String,
    pub node: String,
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

mod mac_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_mac(mac))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
        let text = String::deserialize(d)?;
        super::parse_mac(&text).ok_or_else(|| D::Error::custom(format!("bad MAC address {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_in_linux_notation() {
        let mac = [0x02, 0x42, 0x0a, 0x00, 0x00, 0xff];
        assert_eq!(format_mac(&mac), "02:42:0a:00:00:ff");
        assert_eq!(parse_mac("02:42:0a:00:00:ff"), Some(mac));
        assert_eq!(parse_mac("02-42-0A-00-00-FF"), Some(mac));
        assert_eq!(parse_mac("02:42:0a:00:00"), None);
        assert_eq!(parse_mac("02:42:0a:00:00:ff:01"), None);
    }

    #[test]
    fn endpoint_json_is_readable() {
        let ep = ClusterEndpoint {
            id: "e1".into(),
            network_id: "n1".into(),
            node: "host-a".into(),
            name: "web".into(),
            ip: "10.200.0.5".parse().unwrap(),
            more_ips: vec!["fd00:200::5".parse().unwrap()],
            mac: [2, 0x42, 10, 200, 0, 5],
            vtep: "10.99.0.1".parse().unwrap(),
        };
        let text = serde_json::to_string(&ep).unwrap();
        assert!(text.contains("\"mac\":\"02:42:0a:c8:00:05\""), "{text}");
        assert!(text.contains("\"more_ips\":[\"fd00:200::5\"]"), "{text}");
        assert_eq!(serde_json::from_str::<ClusterEndpoint>(&text).unwrap(), ep);
        assert_eq!(ep.ips().map(|ip| ip.to_string()).collect::<Vec<_>>(), ["10.200.0.5", "fd00:200::5"]);
    }

    #[test]
    fn records_written_before_dual_stack_still_decode() {
        let net: OverlayNetwork = serde_json::from_str(
            r#"{"id":"n1","name":"ov","subnet":"10.200.0.0/24","gateway":"10.200.0.1","vni":4096,"vxlan_port":4789}"#,
        )
        .unwrap();
        assert!(net.more_subnets.is_empty() && !net.outbound_nat);
        assert_eq!(net.subnets(), vec![OverlaySubnet { subnet: "10.200.0.0/24".parse().unwrap(), gateway: "10.200.0.1".parse().unwrap() }]);
        // A single-stack record is written as before: older hosts read it unchanged.
        assert!(!serde_json::to_string(&net).unwrap().contains("more_subnets"));
        let ep: ClusterEndpoint = serde_json::from_str(
            r#"{"id":"e1","network_id":"n1","node":"host-a","name":"web","ip":"10.200.0.5","mac":"02:42:0a:c8:00:05","vtep":"10.99.0.1"}"#,
        )
        .unwrap();
        assert_eq!(ep.ips().collect::<Vec<_>>(), vec![ep.ip]);
    }
}
