//! `HostComputeLoadBalancer` (hcsshim `hcn/hcnloadbalancer.go`): a frontend (VIPs and ports)
//! spread over backend endpoints. What kube-proxy's Windows mode creates for every Service.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::enums::DistributionType;
use crate::schema::Version;

/// Load-balancer `Flags`: Direct Server Return.
pub const LB_FLAG_DSR: u32 = 1;
/// Load-balancer `Flags`: the frontends are IPv6.
pub const LB_FLAG_IPV6: u32 = 2;
/// Port-mapping `Flags`: internal load balancer (reachable only from containers).
pub const LB_PM_ILB: u32 = 1;
/// Port-mapping `Flags`: the VIP is reachable from the host itself.
pub const LB_PM_LOCAL_ROUTED_VIP: u32 = 2;
/// Port-mapping `Flags`: Windows' MUX for DSR node ports (no meaning on Linux; accepted).
pub const LB_PM_USE_MUX: u32 = 4;
/// Port-mapping `Flags`: deliver with the VIP as destination.
pub const LB_PM_PRESERVE_DIP: u32 = 8;

/// One frontend port of a load balancer and the backends' port it goes to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LoadBalancerPortMapping {
    /// 6 (TCP) or 17 (UDP).
    #[serde(default)]
    pub protocol: u32,
    /// The backends' port (1-65535).
    #[serde(default)]
    pub internal_port: u16,
    /// The frontend port (1-65535).
    #[serde(default)]
    pub external_port: u16,
    #[serde(default)]
    pub distribution_type: DistributionType,
    /// Bitmask: 1 ILB (reachable only from containers on hns networks), 2 LocalRoutedVIP
    /// (reachable from the host), 4 UseMux (accepted, no effect on Linux), 8 PreserveDIP (the
    /// backend gets the packet addressed to the VIP, which it must own; ports must be equal).
    #[serde(default, skip_serializing_if = "crate::schema::is_zero_u32")]
    pub flags: u32,
}

/// A load balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HostComputeLoadBalancer {
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Backends: endpoint IDs (names are accepted on input and stored as IDs). A backend
    /// endpoint that is deleted leaves every load balancer it was in.
    #[serde(default)]
    pub host_compute_endpoints: Vec<String>,
    /// The source address a backend sees when its connection to its own VIP lands on itself
    /// (hairpin). Empty: the host's address on the backend's network.
    #[serde(rename = "SourceVIP", default, skip_serializing_if = "String::is_empty")]
    pub source_vip: String,
    /// Frontend addresses. Empty: every address of the host (node-port style).
    #[serde(rename = "FrontendVIPs", default)]
    pub frontend_vips: Vec<String>,
    #[serde(default)]
    pub port_mappings: Vec<LoadBalancerPortMapping>,
    /// Bitmask: 1 EnableDirectServerReturn (every port mapping as PreserveDIP: no NAT either
    /// way; the backends own the VIPs), 2 IPv6 (frontends and backends are IPv6; without it,
    /// IPv4).
    #[serde(default, skip_serializing_if = "crate::schema::is_zero_u32")]
    pub flags: u32,
    #[serde(default)]
    pub schema_version: Version,
}
