//! Overlay networks as cluster objects, each with a cluster-wide VNI.
//!
//! Creation is one optimistic transaction: read every network at revision R, check the name,
//! the subnet and the VNI against them, then write the network and its VNI reservation only if
//! no network key changed after R (`mod_revision(prefix) < R+1`) and the VNI key is still
//! absent. Two hosts creating networks at once therefore never both succeed with a duplicate
//! name, overlapping subnets or one VNI: the loser re-reads and either finds the conflict or
//! retries with the next free VNI.

use etcd_client::{Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp};

use crate::alloc;
use crate::client::{Cluster, MAX_TXN_ATTEMPTS, backoff, decode, encode};
use crate::error::{ClusterError, Result};
use crate::keys;
use crate::model::{ClusterEndpoint, OverlayNetwork, OverlayNetworkSpec};
#[cfg(test)]
use crate::model::OverlaySubnet;

fn shown(n: &OverlayNetwork) -> String {
    let subnets: Vec<String> = n.subnets().iter().map(|s| s.subnet.to_string()).collect();
    let label = if subnets.len() == 1 { "subnet" } else { "subnets" };
    format!("overlay network {} (id {}, {label} {}, VNI {})", n.name, n.id, subnets.join(" and "), n.vni)
}

/// Checks `spec` against the networks that exist: same id (identical spec: returned as the
/// existing network, so a retried create is harmless), same name, overlapping subnet.
pub(crate) fn check_against(spec: &OverlayNetworkSpec, existing: &[OverlayNetwork]) -> Result<Option<OverlayNetwork>> {
    if let Some(same) = existing.iter().find(|n| n.id == spec.id) {
        let identical = same.name == spec.name
            && same.subnets() == spec.subnets
            && same.vxlan_port == spec.vxlan_port
            && same.outbound_nat == spec.outbound_nat
            && spec.vni.is_none_or(|v| v == same.vni);
        return if identical {
            Ok(Some(same.clone()))
        } else {
            Err(ClusterError::conflict(format!("network id {} is already used by {}", spec.id, shown(same))))
        };
    }
    if let Some(other) = existing.iter().find(|n| n.name == spec.name) {
        return Err(ClusterError::conflict(format!("the name {} is already used by {}", spec.name, shown(other))));
    }
    for mine in &spec.subnets {
        for other in existing {
            if let Some(theirs) = other.subnets().iter().find(|s| hns_ipam::overlaps(&s.subnet, &mine.subnet)) {
                return Err(ClusterError::conflict(format!("subnet {} overlaps subnet {} of {}", mine.subnet, theirs.subnet, shown(other))));
            }
        }
    }
    if let Some(v) = spec.vni
        && let Some(other) = existing.iter().find(|n| n.vni == v)
    {
        return Err(ClusterError::conflict(format!("VNI {v} is already used by {}", shown(other))));
    }
    Ok(None)
}

impl Cluster {
    /// Creates an overlay network with a cluster-wide unique VNI (the requested one if free,
    /// else the lowest free one from 4096), refusing a duplicate name or a subnet that overlaps
    /// another overlay network (the error names it). Creating the same spec again returns the
    /// existing network.
    pub async fn create_network(&self, spec: OverlayNetworkSpec) -> Result<OverlayNetwork> {
        keys::validate_segment("network id", &spec.id)?;
        keys::validate_segment("network name", &spec.name)?;
        alloc::check_subnets(&spec.subnets)?;
        if let Some(v) = spec.vni {
            alloc::check_vni(v)?;
        }
        if spec.vxlan_port == 0 {
            return Err(ClusterError::invalid("VXLAN port", "0 is not a UDP port; 4789 is the standard one"));
        }
        let net_key = keys::network(&spec.id);
        for attempt in 0..MAX_TXN_ATTEMPTS {
            let (kvs, rev) = self.get_prefix("list networks", keys::NETWORKS).await?;
            let existing = kvs.iter().map(decode).collect::<Result<Vec<OverlayNetwork>>>()?;
            if let Some(same) = check_against(&spec, &existing)? {
                return Ok(same);
            }
            // VNI keys are written together with network keys, so the networks read at `rev`
            // show every VNI in use; the VNI key compare below is the real guarantee.
            let vni = match spec.vni {
                Some(v) => v,
                None => {
                    let mut taken: Vec<u32> = existing.iter().map(|n| n.vni).collect();
                    taken.sort_unstable();
                    alloc::lowest_free_vni(taken)
                        .ok_or_else(|| ClusterError::Exhausted { what: "every VNI from 4096 to 16777215 is in use".into() })?
                }
            };
            let net = OverlayNetwork {
                id: spec.id.clone(),
                name: spec.name.clone(),
                subnet: spec.subnets[0].subnet,
                gateway: spec.subnets[0].gateway,
                more_subnets: spec.subnets[1..].to_vec(),
                vni,
                vxlan_port: spec.vxlan_port,
                outbound_nat: spec.outbound_nat,
            };
            let vni_key = keys::vni(vni);
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(keys::NETWORKS, CompareOp::Less, rev + 1).with_prefix(),
                    Compare::create_revision(net_key.clone(), CompareOp::Equal, 0),
                    Compare::create_revision(vni_key.clone(), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(net_key.clone(), encode(&net), None::<PutOptions>),
                    TxnOp::put(vni_key.clone(), spec.id.clone(), None::<PutOptions>),
                ]);
            if self.txn("create network", txn).await?.succeeded() {
                return Ok(net);
            }
            // Someone else changed the networks (or holds the VNI without a network, which only
            // a half-deleted network from an older version could leave): read again.
            if spec.vni.is_some()
                && let Some(kv) = self.get_one("look up VNI", &vni_key).await?
            {
                let holder = String::from_utf8_lossy(kv.value()).into_owned();
                if holder != spec.id && self.get_one("look up network", &keys::network(&holder)).await?.is_none() {
                    return Err(ClusterError::conflict(format!("VNI {vni} is reserved by network id {holder}, which no longer exists")));
                }
            }
            backoff(attempt).await;
        }
        Err(ClusterError::conflict(format!("creating network {}: the network list kept changing", spec.name)))
    }

    /// The network with id `id`, or [`ClusterError::NotFound`].
    pub async fn get_network(&self, id: &str) -> Result<OverlayNetwork> {
        keys::validate_segment("network id", id)?;
        match self.get_one("look up network", &keys::network(id)).await? {
            Some(kv) => decode(&kv),
            None => Err(ClusterError::not_found(format!("overlay network id {id}"))),
        }
    }

    pub async fn list_networks(&self) -> Result<Vec<OverlayNetwork>> {
        let (kvs, _) = self.get_prefix("list networks", keys::NETWORKS).await?;
        kvs.iter().map(decode).collect()
    }

    /// Deletes a network together with its VNI, its address reservations and the endpoints of
    /// `caller_node` on it. Refused with [`ClusterError::InUse`] (naming each endpoint and its
    /// host) while endpoints of other nodes remain. Endpoints of dead nodes have already gone
    /// with their lease and do not block; their reservations are deleted with the network.
    pub async fn delete_network(&self, id: &str, caller_node: &str) -> Result<()> {
        keys::validate_segment("network id", id)?;
        let net_key = keys::network(id);
        for attempt in 0..MAX_TXN_ATTEMPTS {
            let Some(kv) = self.get_one("look up network", &net_key).await? else {
                return Err(ClusterError::not_found(format!("overlay network id {id}")));
            };
            let net: OverlayNetwork = decode(&kv)?;
            let (eps, rev) = self.get_prefix("list endpoints", &keys::endpoints_of(id)).await?;
            let eps = eps.iter().map(decode).collect::<Result<Vec<ClusterEndpoint>>>()?;
            let holders: Vec<String> = eps
                .iter()
                .filter(|e| e.node != caller_node)
                .map(|e| format!("endpoint {} (id {}, {}) on node {}", e.name, e.id, e.ips().map(|ip| ip.to_string()).collect::<Vec<_>>().join(" "), e.node))
                .collect();
            if !holders.is_empty() {
                return Err(ClusterError::InUse { what: shown(&net), holders });
            }
            let prefix = || Some(DeleteOptions::new().with_prefix());
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(net_key.clone(), CompareOp::Equal, kv.mod_revision()),
                    Compare::mod_revision(keys::endpoints_of(id), CompareOp::Less, rev + 1).with_prefix(),
                ])
                .and_then([
                    TxnOp::delete(net_key.clone(), None),
                    TxnOp::delete(keys::vni(net.vni), None),
                    TxnOp::delete(keys::endpoints_of(id), prefix()),
                    TxnOp::delete(keys::addrs_of(id), prefix()),
                    TxnOp::delete(keys::owners_of(id), prefix()),
                ]);
            let resp = self.txn("delete network", txn).await?;
            if resp.succeeded() {
                if let Some(local) = self.local() {
                    local.endpoints.lock().await.retain(|(net, _), _| net != id);
                }
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(ClusterError::conflict(format!("deleting network {id}: its endpoints kept changing")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(id: &str, name: &str, subnet: &str, vni: u32) -> OverlayNetwork {
        let subnet: ipnet::IpNet = subnet.parse().unwrap();
        let gateway = match subnet {
            ipnet::IpNet::V4(n) => std::net::IpAddr::V4(n.hosts().next().unwrap()),
            ipnet::IpNet::V6(n) => std::net::IpAddr::V6(n.hosts().nth(1).unwrap()),
        };
        OverlayNetwork { id: id.into(), name: name.into(), subnet, gateway, more_subnets: Vec::new(), vni, vxlan_port: 4789, outbound_nat: false }
    }

    /// A dual-stack network: `net` with a second (IPv6) subnet.
    fn dual(n: OverlayNetwork, subnet6: &str) -> OverlayNetwork {
        let second = net("", "", subnet6, 0);
        OverlayNetwork { more_subnets: vec![OverlaySubnet { subnet: second.subnet, gateway: second.gateway }], ..n }
    }

    fn spec(n: &OverlayNetwork, vni: Option<u32>) -> OverlayNetworkSpec {
        OverlayNetworkSpec { id: n.id.clone(), name: n.name.clone(), subnets: n.subnets(), vni, vxlan_port: n.vxlan_port, outbound_nat: n.outbound_nat }
    }

    #[test]
    fn ipv6_subnets_are_checked_for_overlaps_too() {
        let existing = vec![dual(net("n1", "red", "10.10.0.0/16", 4096), "fd00:10::/64"), net("n2", "six", "fd00:20::/64", 4097)];
        let e = check_against(&spec(&dual(net("n3", "blue", "10.20.0.0/16", 0), "fd00:10::/80"), None), &existing).unwrap_err();
        assert!(e.to_string().contains("subnet fd00:10::/80 overlaps subnet fd00:10::/64 of overlay network red (id n1, subnets 10.10.0.0/16 and fd00:10::/64"), "{e}");
        let e = check_against(&spec(&net("n3", "blue", "fd00:20::/96", 0), None), &existing).unwrap_err();
        assert!(e.to_string().contains("overlaps subnet fd00:20::/64 of overlay network six"), "{e}");
        assert_eq!(check_against(&spec(&dual(net("n3", "blue", "10.20.0.0/16", 0), "fd00:30::/64"), None), &existing).unwrap(), None);
        // The same id with a subnet more or less is another spec.
        assert!(check_against(&spec(&net("n1", "red", "10.10.0.0/16", 0), None), &existing).is_err());
        assert_eq!(check_against(&spec(&existing[0], None), &existing).unwrap(), Some(existing[0].clone()));
    }

    #[test]
    fn conflicts_name_the_other_network() {
        let existing = vec![net("n1", "red", "10.10.0.0/16", 4096)];
        let e = check_against(&spec(&net("n2", "red", "10.20.0.0/16", 0), None), &existing).unwrap_err();
        assert!(e.to_string().contains("name red is already used by overlay network red (id n1"), "{e}");
        let e = check_against(&spec(&net("n2", "blue", "10.10.5.0/24", 0), None), &existing).unwrap_err();
        assert!(e.to_string().contains("subnet 10.10.5.0/24 overlaps subnet 10.10.0.0/16 of overlay network red"), "{e}");
        let e = check_against(&spec(&net("n2", "blue", "10.20.0.0/16", 0), Some(4096)), &existing).unwrap_err();
        assert!(e.to_string().contains("VNI 4096 is already used by overlay network red"), "{e}");
        assert_eq!(check_against(&spec(&net("n2", "blue", "10.20.0.0/16", 0), None), &existing).unwrap(), None);
    }

    #[test]
    fn same_id_is_idempotent_only_for_the_same_spec() {
        let existing = vec![net("n1", "red", "10.10.0.0/16", 4100)];
        assert_eq!(check_against(&spec(&existing[0], None), &existing).unwrap(), Some(existing[0].clone()));
        assert_eq!(check_against(&spec(&existing[0], Some(4100)), &existing).unwrap(), Some(existing[0].clone()));
        assert!(check_against(&spec(&existing[0], Some(4101)), &existing).is_err());
        assert!(check_against(&spec(&net("n1", "red", "10.11.0.0/16", 0), None), &existing).is_err());
    }
}
