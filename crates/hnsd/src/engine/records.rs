//! What the store holds for each object: the API object as clients see it, plus the few
//! internal facts the daemon needs to rebuild kernel state and allocations after a restart.

use std::sync::Arc;

use hns_api::{HostComputeEndpoint, HostComputeNamespace, HostComputeNetwork};
use hns_kernel::netns::NsIdentity;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub net: HostComputeNetwork,
    /// IPAM next-fit cursor of each subnet, in `net.subnets()` order; written in the same
    /// transaction as each endpoint that allocates from it.
    #[serde(default)]
    pub cursors: Vec<u128>,
    /// Created by the daemon itself as the default network.
    #[serde(default)]
    pub default: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Shared with the read model: the view of an endpoint without policies of its own (most
    /// of them) is this object itself, not a copy (`Engine::endpoint_view`). Changed through
    /// [`EndpointRecord::ep_mut`].
    #[serde(with = "shared")]
    pub ep: Arc<HostComputeEndpoint>,
    /// Network ID (the API field may have named the network by name).
    pub network_id: String,
    /// The DHCP lease of an endpoint on a DHCP network, kept so a restarted hnsd renews the
    /// same address instead of asking for a new one. Boxed, as `lease6`: most endpoints have
    /// none, and inline the two took 288 of a record's 448 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Box<hns_dhcp::Lease>>,
    /// The DHCPv6 lease of such an endpoint, once the LAN's server gave one (see `dhcp6.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease6: Option<Box<hns_dhcp::Lease6>>,
    /// The `InterfaceName` the endpoint was created with: its interface's name in every
    /// compartment it is attached to. Empty: the lowest free `ethN` there.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub requested_ifname: String,
    /// The endpoint's own `ACL` policies, parsed (its network's are in the network's
    /// `Policies`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<hns_kernel::nft_acl::Rule>,
    /// The endpoint's OutBoundNAT, SDNRoute and QOS policies, parsed.
    #[serde(default, skip_serializing_if = "super::epolicies::EndpointPolicies::is_empty")]
    pub policies: super::epolicies::EndpointPolicies,
}

/// An `Arc` stored as the value it holds (serde's `rc` feature, for one field, would rebuild
/// every crate that uses serde).
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Arc<T>, s: S) -> Result<S::Ok, S::Error> {
        (**v).serialize(s)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Arc<T>, D::Error> {
        T::deserialize(d).map(Arc::new)
    }
}

impl EndpointRecord {
    /// The endpoint, to change: a copy of it if the read model still shares it.
    pub fn ep_mut(&mut self) -> &mut HostComputeEndpoint {
        Arc::make_mut(&mut self.ep)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// Shared with the read model's view of the compartment. Changed through
    /// [`NamespaceRecord::ns_mut`].
    #[serde(with = "shared")]
    pub ns: Arc<HostComputeNamespace>,
    /// Created (and kept alive) by hnsd under its run dir, as opposed to adopted by path.
    pub managed: bool,
    /// The namespace's identity when it was created or adopted; a path that now names another
    /// namespace (a reused PID) means the compartment is gone.
    pub identity: Option<NsIdentity>,
}

impl NamespaceRecord {
    /// The compartment, to change: a copy of it if the read model still shares it.
    pub fn ns_mut(&mut self) -> &mut HostComputeNamespace {
        Arc::make_mut(&mut self.ns)
    }
}

/// One port mapping of an endpoint, with its host port chosen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MappingRecord {
    pub endpoint_id: String,
    pub settings: hns_api::PortMappingSettings,
}
