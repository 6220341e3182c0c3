//! HNS v2 objects. Field names follow the HNS schema exactly (PascalCase, `ID`); fields that
//! hns adds are marked "Extension" in their docs and appear in the OpenAPI document.
//!
//! Every field of the HNS schema is declared, supported or not, so a request never loses a
//! setting silently: the daemon refuses by name a field it does not support yet when it is
//! non-empty. Unknown fields are refused at decode time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::enums::*;

/// `{"Major": N, "Minor": M}`: schema and service versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Default for Version {
    fn default() -> Self {
        crate::SCHEMA_VERSION
    }
}

/// A policy document: a type name and its type-specific settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Policy {
    /// Policy type, e.g. `PortMapping`, `ACL`, `OutBoundNAT`.
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
}

/// A route: `DestinationPrefix` via `NextHop`. On a subnet, the `0.0.0.0/0` (or `::/0`) route's
/// next hop is the subnet's gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Route {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination_prefix: String,
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub metric: u16,
}

/// DNS settings of a network or an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Dns {
    /// DNS suffix (also accepted as `Suffix`, the spelling of one Windows page).
    #[serde(default, alias = "Suffix", skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_list: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.domain.is_empty() && self.search.is_empty() && self.server_list.is_empty() && self.options.is_empty()
    }
}

/// One subnet of an IPAM block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Subnet {
    /// The subnet, in CIDR form (IPv4 or IPv6).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip_address_prefix: String,
    /// Subnet policies (`VLAN`, `VSID`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
    /// Routes; the default route's `NextHop` is the gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// SubnetFlags (1 = DoNotReserveGatewayAddress). Not supported yet.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub flags: u32,
    /// HNS 2.3 `IpSubnets`. Not supported yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub ip_subnets: Vec<serde_json::Value>,
    /// Extension: dynamic addresses are taken only from this CIDR inside the subnet
    /// (Docker's `--ip-range`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    /// Extension: addresses that are never handed out, by name (Docker's `--aux-address`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auxiliary_addresses: BTreeMap<String, String>,
}

/// An IPAM block of a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Ipam {
    #[serde(rename = "Type", default = "static_ipam")]
    pub kind: IpamType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<Subnet>,
}

fn static_ipam() -> IpamType {
    IpamType::Static
}

/// A MAC address range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MacRange {
    pub start_mac_address: String,
    pub end_mac_address: String,
}

/// A pool of MAC addresses for endpoints. Not supported yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MacPool {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<MacRange>,
}

/// A network (`HostComputeNetwork`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HostComputeNetwork {
    /// GUID; chosen by hns when absent.
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The driver. HNS reports NAT networks with no type, so absent means `NAT`.
    #[serde(rename = "Type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NetworkType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_pool: Option<MacPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipams: Vec<Ipam>,
    /// NetworkFlags bitmask. No flag is supported yet.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub flags: u32,
    #[serde(default)]
    pub schema_version: Version,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Opaque data kept for the client.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub additional_params: serde_json::Value,
    /// Not supported (HNS health data).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub health: serde_json::Value,
    /// Not supported (HNS telemetry).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub telemetry: serde_json::Value,
    /// Read-only: 1 = created, 2 = ready (kernel programmed). Ignored on input.
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub state: u16,
    /// Read-only: object version, bumped on every change. Ignored on input.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub version: u64,
    /// Extension: no traffic leaves the network (Docker's `--internal`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    /// Extension, overlay networks only: every host masquerades the network's traffic to the
    /// outside and its endpoints get a default route through the gateway (off by default: as
    /// on Windows, a container reaches the outside through a second endpoint on a nat network).
    #[serde(default, skip_serializing_if = "is_false")]
    pub outbound_nat: bool,
    /// Extension, read-only: the Linux bridge (or uplink) of the network.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
}

impl HostComputeNetwork {
    pub fn network_type(&self) -> NetworkType {
        self.kind.unwrap_or(NetworkType::Nat)
    }
    /// The subnets of every IPAM block, in order.
    pub fn subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.ipams.iter().flat_map(|i| i.subnets.iter())
    }
}

/// An address of an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IpConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip_address: String,
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub prefix_length: u8,
    /// HNS 2.3. Not supported yet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip_subnet_id: String,
}

/// An endpoint (`HostComputeEndpoint`): a container's vNIC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HostComputeEndpoint {
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The network, by ID or name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_compute_network: String,
    /// The namespace the endpoint is attached to; given on create, attaches at once.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_compute_namespace: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
    /// Empty: hns allocates from the network's subnets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_configurations: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Extra routes inside the compartment; the default route via the gateway is always added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Empty: hns chooses one. Emitted as `00-15-5D-..`; `:` is accepted too.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    /// EndpointFlags bitmask. hns sets `RemoteEndpoint` (1) on the endpoints of other hosts it
    /// lists for overlay networks; no flag is accepted on input yet.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub flags: u32,
    #[serde(default)]
    pub schema_version: Version,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub additional_params: serde_json::Value,
    /// Not supported (HNS health data).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub health: serde_json::Value,
    /// Read-only: 1 = created, 2 = attached, 4 = detached. Ignored on input.
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub state: u16,
    /// Read-only. Ignored on input.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub version: u64,
    /// Extension: extra DNS names of this endpoint on its network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Extension: the interface name inside the compartment. On create, the name to give it (a
    /// Linux interface name, unique in the compartment); empty: `eth0`, `eth1`...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
}

/// A resource of a namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NamespaceResource {
    /// `Endpoint` or `Container`.
    #[serde(rename = "Type")]
    pub kind: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A namespace (`HostComputeNamespace`): a compartment, i.e. a Linux network namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HostComputeNamespace {
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Extension: a name for the compartment (e.g. the container name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Read-only: a small number, like Windows' compartment id.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub namespace_id: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_guid: String,
    #[serde(rename = "Type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NamespaceType>,
    /// Read-only on output: the attached endpoints. On input, endpoints to attach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<NamespaceResource>,
    #[serde(default)]
    pub schema_version: Version,
    /// Extension: the Linux network namespace. On create, an existing one to adopt
    /// (`/run/netns/x`, `/proc/PID/ns/net`; hns does not keep it alive); absent, hns creates one
    /// under its run dir. On output, where it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub net_ns_path: String,
    /// Extension, read-only: the resolv.conf written for this compartment (`hnsctl run`/`exec`
    /// bind it over /etc/resolv.conf for the process they start).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resolv_conf_path: String,
    /// Extension: the process running in the compartment, recorded by `hnsctl run` through a
    /// `ResourceType: Container` modify request. Informational: hns does not own the process.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub pid: u32,
    /// Extension: the command line of that process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Read-only. Ignored on input.
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub state: u16,
}

impl HostComputeNamespace {
    /// IDs of the endpoints listed in `Resources`.
    pub fn endpoint_ids(&self) -> Vec<String> {
        self.resources
            .iter()
            .filter(|r| r.kind.eq_ignore_ascii_case("Endpoint"))
            .filter_map(|r| r.data.get("ID").or_else(|| r.data.get("Id")).and_then(|v| v.as_str()).map(str::to_owned))
            .collect()
    }
}

/// `GET /healthz` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: String,
}

/// `GET /info` body: what `hnsctl info` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DaemonInfo {
    pub version: String,
    pub hns_version: Version,
    pub store_path: String,
    pub run_dir: String,
    pub networks: usize,
    pub endpoints: usize,
    pub namespaces: usize,
    /// Kernel features probed at start: name -> available.
    pub kernel_features: BTreeMap<String, bool>,
    pub warnings: Vec<String>,
    pub last_reconcile: String,
}

pub(crate) fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}
pub(crate) fn is_zero_u16(v: &u16) -> bool {
    *v == 0
}
pub(crate) fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
pub(crate) fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
pub(crate) fn is_false(v: &bool) -> bool {
    !*v
}

/// Object states, as HNS reports them.
pub mod state {
    pub const CREATED: u16 = 1;
    pub const READY: u16 = 2;
    pub const ATTACHED: u16 = 2;
    pub const DETACHED: u16 = 4;
}
