//! The `l2tunnel` driver: every container frame, even to a container on the same host, goes
//! out to the upstream switch and comes back, so the switch's policy applies to all of it.
//!
//! - endpoint: a macvlan child of the uplink in VEPA mode, created straight inside the
//!   compartment, with the endpoint's own MAC and static address. VEPA sends sibling traffic
//!   out of the adapter; the upstream switch port must hairpin (reflective relay) for two
//!   containers of one host to meet.
//!
//! Endpoints keep their own MACs on the wire: a learning switch cannot hairpin between two
//! endpoints that share the host's MAC (Windows relies on its own vSwitch for that).

use hns_kernel::netlink::Netlink;
use hns_kernel::uplink::ChildMode;

use crate::{Compartment, EndpointPlan, NetworkPlan, Result};

pub async fn create_network(host: &Netlink, net: &NetworkPlan) -> Result<()> {
    crate::uplink_index(host, net).await.map(|_| ())
}

pub async fn attach(host: &Netlink, net: &NetworkPlan, ep: &EndpointPlan, c: &Compartment) -> Result<()> {
    let uplink = crate::uplink_index(host, net).await?;
    host.create_macvlan_into(&ep.ifname, uplink, ChildMode::Vepa, &c.fd, ep.mac).await?;
    if !ep.addresses.iter().any(|(ip, _)| ip.is_ipv6()) {
        c.netlink.disable_ipv6_autoconf(&ep.ifname).await.ok();
    }
    crate::configure_inside(ep, c, crate::Inside::default()).await
}
