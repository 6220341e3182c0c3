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

/// What a caller asks for when creating an overlay network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayNetworkSpec {
    /// Cluster-wide unique id (the HNS network id).
    pub id: String,
    /// Cluster-wide unique name.
    pub name: String,
    pub subnet: IpNet,
    pub gateway: IpAddr,
    /// A specific VNI, or `None` to let the cluster pick the lowest free one.
    pub vni: Option<u32>,
    /// UDP port of the VXLAN devices (4789 is the IANA port).
    pub vxlan_port: u16,
    /// Every host masquerades the network's traffic to the outside (off: the network is not
    /// routed out, as on Windows).
    pub outbound_nat: bool,
}

/// An overlay network as stored: the spec with its VNI decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayNetwork {
    pub id: String,
    pub name: String,
    pub subnet: IpNet,
    pub gateway: IpAddr,
    pub vni: u32,
    pub vxlan_port: u16,
    /// Absent in values written before the option existed: off.
    #[serde(default)]
    pub outbound_nat: bool,
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
    pub ip: IpAddr,
    #[serde(with = "mac_text")]
    pub mac: [u8; 6],
    /// The VTEP of `node`, copied here so a peer needs no second lookup.
    pub vtep: IpAddr,
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
            mac: [2, 0x42, 10, 200, 0, 5],
            vtep: "10.99.0.1".parse().unwrap(),
        };
        let text = serde_json::to_string(&ep).unwrap();
        assert!(text.contains("\"mac\":\"02:42:0a:c8:00:05\""), "{text}");
        assert_eq!(serde_json::from_str::<ClusterEndpoint>(&text).unwrap(), ep);
    }
}
