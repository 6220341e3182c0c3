//! What a port mapping publishes, shown as docker shows it: `80/tcp -> 0.0.0.0:8080` (`docker
//! port`, `run -p`, `port add`) and `0.0.0.0:8080->80/tcp` (the PORTS column of `docker ps`).
//!
//! A mapping bound to a host address (`VIP`) listens there only. An unbound one listens on every
//! host address of each family its endpoint has: hnsd maps both families of a dual-stack
//! endpoint, so it shows as `0.0.0.0:8080` and `[::]:8080`, as docker shows a dual-stack port.

use std::net::IpAddr;

use serde::Serialize;

use hns_api::{HostComputeEndpoint, PortMappingSettings};

use crate::portspec::{host_address, protocol_name};

/// The address families of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub fn of(ep: &HostComputeEndpoint) -> Families {
        let ips: Vec<IpAddr> = ep.ip_configurations.iter().filter_map(|c| c.ip_address.parse().ok()).collect();
        Families { v4: ips.iter().any(IpAddr::is_ipv4), v6: ips.iter().any(IpAddr::is_ipv6) }
    }
}

/// One host binding of a mapping, named as docker's API names a port (`IP`, `PrivatePort`,
/// `PublicPort`, `Type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    /// The host address: `0.0.0.0` or `::` for every address of that family.
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "PrivatePort")]
    pub private_port: u16,
    #[serde(rename = "PublicPort")]
    pub public_port: u16,
    /// `tcp` or `udp`.
    #[serde(rename = "Type")]
    pub protocol: String,
}

impl Published {
    /// `0.0.0.0:8080`, `[::]:8080`.
    pub fn host_side(&self) -> String {
        format!("{}:{}", host_address(&self.ip), self.public_port)
    }

    /// `80/tcp`.
    pub fn container_side(&self) -> String {
        format!("{}/{}", self.private_port, self.protocol)
    }

    /// `80/tcp -> 0.0.0.0:8080`, as `docker port` prints it.
    pub fn line(&self) -> String {
        format!("{} -> {}", self.container_side(), self.host_side())
    }

    /// `0.0.0.0:8080->80/tcp`, as the PORTS column of `docker ps` shows it.
    pub fn ps_cell(&self) -> String {
        format!("{}->{}", self.host_side(), self.container_side())
    }
}

/// The host bindings of one mapping of an endpoint with the families `families`. An endpoint
/// without addresses yet (DHCP) shows the IPv4 binding.
pub fn published(m: &PortMappingSettings, families: Families) -> Vec<Published> {
    let ips: Vec<&str> = if !m.vip.is_empty() {
        vec![m.vip.as_str()]
    } else {
        let mut ips = Vec::new();
        if families.v4 || !families.v6 {
            ips.push("0.0.0.0");
        }
        if families.v6 {
            ips.push("::");
        }
        ips
    };
    ips.into_iter()
        .map(|ip| Published {
            ip: ip.to_owned(),
            private_port: m.internal_port,
            public_port: m.external_port,
            protocol: protocol_name(m.protocol),
        })
        .collect()
}

/// The bindings of several mappings of one endpoint, in order.
pub fn published_all(mappings: &[PortMappingSettings], families: Families) -> Vec<Published> {
    mappings.iter().flat_map(|m| published(m, families)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portspec::{TCP, UDP};
    use hns_api::IpConfig;

    fn m(protocol: u32, internal_port: u16, external_port: u16, vip: &str) -> PortMappingSettings {
        PortMappingSettings { protocol, internal_port, external_port, vip: vip.into(), ..Default::default() }
    }

    const V4: Families = Families { v4: true, v6: false };
    const DUAL: Families = Families { v4: true, v6: true };
    const V6: Families = Families { v4: false, v6: true };
    const NONE: Families = Families { v4: false, v6: false };

    fn lines(m: &PortMappingSettings, f: Families) -> Vec<String> {
        published(m, f).iter().map(Published::line).collect()
    }

    #[test]
    fn families_of_an_endpoint() {
        let ep = |ips: &[&str]| HostComputeEndpoint {
            ip_configurations: ips.iter().map(|ip| IpConfig { ip_address: (*ip).into(), ..Default::default() }).collect(),
            ..Default::default()
        };
        assert_eq!(Families::of(&ep(&["172.30.0.2"])), V4);
        assert_eq!(Families::of(&ep(&["172.30.0.2", "fd00::2"])), DUAL);
        assert_eq!(Families::of(&ep(&["fd00::2"])), V6);
        assert_eq!(Families::of(&ep(&[])), NONE);
        assert_eq!(Families::of(&ep(&["not an address"])), NONE);
    }

    #[test]
    fn unbound_mappings_show_each_family() {
        assert_eq!(lines(&m(TCP, 80, 8080, ""), V4), vec!["80/tcp -> 0.0.0.0:8080"]);
        assert_eq!(lines(&m(TCP, 80, 8080, ""), DUAL), vec!["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080"]);
        assert_eq!(lines(&m(UDP, 53, 5353, ""), V6), vec!["53/udp -> [::]:5353"]);
        assert_eq!(lines(&m(TCP, 80, 8080, ""), NONE), vec!["80/tcp -> 0.0.0.0:8080"]);
    }

    #[test]
    fn bound_mappings_show_their_address() {
        assert_eq!(lines(&m(UDP, 53, 5353, "127.0.0.1"), DUAL), vec!["53/udp -> 127.0.0.1:5353"]);
        assert_eq!(lines(&m(TCP, 80, 9443, "2001:db8:100::2"), DUAL), vec!["80/tcp -> [2001:db8:100::2]:9443"]);
        assert_eq!(lines(&m(132, 80, 1, "10.0.0.1"), V4), vec!["80/132 -> 10.0.0.1:1"]);
    }

    #[test]
    fn ps_cells_and_json() {
        let all = published_all(&[m(TCP, 80, 8080, ""), m(UDP, 53, 49153, "127.0.0.1")], DUAL);
        let cells: Vec<String> = all.iter().map(Published::ps_cell).collect();
        assert_eq!(cells, vec!["0.0.0.0:8080->80/tcp", "[::]:8080->80/tcp", "127.0.0.1:49153->53/udp"]);
        assert_eq!(all[1].host_side(), "[::]:8080");
        assert_eq!(
            serde_json::to_value(&all[1]).unwrap(),
            serde_json::json!({"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"})
        );
    }
}
