//! The JSON shapes of Docker's remote plugin protocols (libnetwork `drivers/remote/api` and
//! `ipams/remote/api`), as Docker sends and reads them: PascalCase keys, `ID` spelled in capitals.
//!
//! Requests are decoded leniently (missing keys default, unknown keys are ignored): Docker adds
//! keys between versions, and a plugin that refused them would break on every upgrade. What hns
//! does not support is refused later, by name, where the value is interpreted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Docker's generic options: any JSON per key.
pub type Options = Map<String, Value>;

/// Go encodes a nil map or slice as `null`: read it as empty.
fn nullable<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `Plugin.Activate` reply.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Activate {
    pub implements: Vec<&'static str>,
}

/// One address pool of a network as the IPAM gave it (`driverapi.IPAMData`): CIDRs, and the
/// gateway and auxiliary addresses in `ip/prefix` form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    #[serde(deserialize_with = "nullable")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(deserialize_with = "nullable")]
    pub options: Options,
    #[serde(rename = "IPv4Data")]
    #[serde(deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data")]
    #[serde(deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
}

/// Requests naming a network only (`DeleteNetwork`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// Requests naming an endpoint (`DeleteEndpoint`, `Leave`, `EndpointOperInfo`,
/// `RevokeExternalConnectivity`); `Options` is present in `ProgramExternalConnectivity`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(deserialize_with = "nullable")]
    pub options: Options,
}

/// An endpoint's interface: addresses in `ip/prefix` form, MAC with colons. Empty = unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Interface {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(rename = "AddressIPv6", skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<Interface>,
    #[serde(deserialize_with = "nullable")]
    pub options: Options,
}

/// The fields of the interface Docker left empty and the driver filled in.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointReply {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<Interface>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The sandbox's network namespace path (it may not exist yet: see `sandbox.rs`).
    pub sandbox_key: String,
    #[serde(deserialize_with = "nullable")]
    pub options: Options,
}

/// The link Docker moves into the sandbox (`SrcName`, in Docker's namespace) and the prefix of
/// the name it gets there (`eth` + Docker's own index).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinReply {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<InterfaceName>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    pub disable_gateway_service: bool,
}

/// `NetworkDriver.GetCapabilities` reply.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capabilities {
    pub scope: &'static str,
    pub connectivity_scope: &'static str,
}

/// `NetworkDriver.EndpointOperInfo` reply.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OperInfo {
    pub value: Map<String, Value>,
}

/// A port binding (libnetwork `types.PortBinding`, which has no JSON tags): `Proto` is the IP
/// protocol number, IPs are strings ("" when unset), `HostPort` 0 means "any".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub proto: u8,
    #[serde(rename = "IP")]
    pub ip: String,
    pub port: u16,
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    pub host_port: u16,
    pub host_port_end: u16,
}

/// An exposed port (`types.TransportPort`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TransportPort {
    pub proto: u8,
    pub port: u16,
}

// --- IPAM driver ---

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamCapabilities {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    pub requires_request_replay: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpaces {
    pub local_default_address_space: &'static str,
    pub global_default_address_space: &'static str,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolReply {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub pool: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PoolRef {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddressReply {
    pub address: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

/// Option keys Docker itself sets.
pub mod keys {
    /// The `-o` driver options of `docker network create` (a string map).
    pub const GENERIC: &str = "com.docker.network.generic";
    pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
    pub const INTERNAL: &str = "com.docker.network.internal";
    pub const PORT_MAP: &str = "com.docker.network.portmap";
    pub const EXPOSED_PORTS: &str = "com.docker.network.endpoint.exposedports";
    pub const MAC_ADDRESS: &str = "com.docker.network.endpoint.macaddress";
    /// IPAM `RequestAddress` option naming what the address is for.
    pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
    pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode_as_docker_sends_them() {
        let body = r#"{"NetworkID":"ab","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"com.docker.network.windowsshim.interface":"eth1"}},
            "IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"10.1.0.0/24","Gateway":"10.1.0.1/24","AuxAddresses":{"r":"10.1.0.5/24"}}],"IPv6Data":[]}"#;
        let r: CreateNetwork = serde_json::from_str(body).unwrap();
        assert_eq!((r.network_id.as_str(), r.ipv4_data[0].gateway.as_str()), ("ab", "10.1.0.1/24"));
        assert_eq!(r.ipv4_data[0].aux_addresses["r"], "10.1.0.5/24");
        let j: Join = serde_json::from_str(r#"{"NetworkID":"n","EndpointID":"e","SandboxKey":"/var/run/docker/netns/x","Options":null}"#).unwrap();
        assert!(j.endpoint_id == "e" && j.options.is_empty());
        let j: Join = serde_json::from_str(r#"{"NetworkID":"n","EndpointID":"e","SandboxKey":"/k","Options":{}}"#).unwrap();
        assert_eq!(j.sandbox_key, "/k");
        let pb: PortBinding = serde_json::from_str(r#"{"Proto":6,"IP":"","Port":80,"HostIP":"127.0.0.1","HostPort":8080,"HostPortEnd":8080}"#).unwrap();
        assert_eq!((pb.proto, pb.port, pb.host_ip.as_str(), pb.host_port), (6, 80, "127.0.0.1", 8080));
    }

    #[test]
    fn replies_use_docker_spellings() {
        let r = JoinReply {
            interface_name: Some(InterfaceName { src_name: "hdk1".into(), dst_prefix: "eth".into() }),
            gateway: "10.0.0.1".into(),
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v, serde_json::json!({"InterfaceName": {"SrcName": "hdk1", "DstPrefix": "eth"}, "Gateway": "10.0.0.1", "DisableGatewayService": false}));
        let c = serde_json::to_value(IpamCapabilities { requires_mac_address: false, requires_request_replay: false }).unwrap();
        assert_eq!(c, serde_json::json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}));
    }
}
