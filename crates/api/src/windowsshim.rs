//! The option keys of Docker's Windows network driver (`docker network create -o KEY=VALUE`),
//! which hnsctl and hnsd's Docker plugin both accept: one list, so the two never disagree.

pub const PREFIX: &str = "com.docker.network.windowsshim.";
/// The HNS network's name.
pub const NETWORK_NAME: &str = "com.docker.network.windowsshim.networkname";
/// The host adapter(s) of an external network (comma-separated: teaming).
pub const INTERFACE: &str = "com.docker.network.windowsshim.interface";
/// 802.1Q VLAN of the network's subnets.
pub const VLAN: &str = "com.docker.network.windowsshim.vlanid";
/// VXLAN VNI of an overlay network's subnet.
pub const VSID: &str = "com.docker.network.windowsshim.vsid";
pub const DNS_SUFFIX: &str = "com.docker.network.windowsshim.dnssuffix";
pub const DNS_SERVERS: &str = "com.docker.network.windowsshim.dnsservers";
/// No DNS responder on the network's gateway.
pub const DISABLE_GATEWAY_DNS: &str = "com.docker.network.windowsshim.disable_gatewaydns";
