//! Endpoints published to the cluster: what a peer needs to reach a container on another host
//! (its IP and MAC, and the VTEP of its host).
//!
//! An endpoint key is attached to its node's lease, so it disappears from every peer's view
//! when the node dies. Publishing requires that the endpoint holds the address it announces
//! (the owner records written by `allocate_addresses`) and that the network still exists, both
//! checked inside the same transaction as the put.

use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use crate::client::{Cluster, decode, encode};
use crate::error::{ClusterError, Result};
use crate::keys;
use crate::model::ClusterEndpoint;
use crate::nodes::is_lease_not_found;

impl Cluster {
    /// Publishes (or updates) an endpoint of this host under this host's node lease.
    ///
    /// `ep.node` and `ep.vtep` must be this host's registration; `ep.ips()` must be the
    /// addresses `allocate_addresses` reserved for `ep.id` in `ep.network_id`, in its order.
    pub async fn put_endpoint(&self, ep: ClusterEndpoint) -> Result<()> {
        keys::validate_segment("endpoint id", &ep.id)?;
        keys::validate_segment("network id", &ep.network_id)?;
        let Some(local) = self.local() else { return Err(ClusterError::NotRegistered { op: format!("publish endpoint {}", ep.id) }) };
        if ep.node != local.info.name || ep.vtep != local.info.vtep {
            return Err(ClusterError::invalid(
                format!("endpoint {}", ep.id),
                format!(
                    "node {} / VTEP {} is not this host's registration (node {}, VTEP {})",
                    ep.node, ep.vtep, local.info.name, local.info.vtep
                ),
            ));
        }
        let mut published = local.endpoints.lock().await;
        let slot = (ep.network_id.clone(), ep.id.clone());
        match self.put_endpoint_with_lease(&ep, local.lease_id()).await {
            Ok(()) => {
                published.insert(slot, ep);
                Ok(())
            }
            // The lease is being replaced or etcd is away: remember the endpoint so the
            // keepalive task publishes it under the new lease, and tell the caller.
            Err(e) if e.is_unreachable() || is_lease_not_found(&e) => {
                published.insert(slot, ep);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The put itself, guarded by "network exists" and "each address is this endpoint's".
    pub(crate) async fn put_endpoint_with_lease(&self, ep: &ClusterEndpoint, lease: i64) -> Result<()> {
        let net_key = keys::network(&ep.network_id);
        let ips: Vec<IpAddr> = ep.ips().collect();
        let owner_keys: Vec<String> = (0..ips.len()).map(|slot| keys::owner(&ep.network_id, &ep.id, slot)).collect();
        let mut compares = vec![Compare::create_revision(net_key.clone(), CompareOp::Greater, 0)];
        compares.extend(owner_keys.iter().zip(&ips).map(|(k, ip)| Compare::value(k.clone(), CompareOp::Equal, ip.to_string())));
        let mut reads = vec![TxnOp::get(net_key, None)];
        reads.extend(owner_keys.iter().map(|k| TxnOp::get(k.clone(), None)));
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::put(keys::endpoint(&ep.network_id, &ep.id), encode(ep), Some(PutOptions::new().with_lease(lease)))])
            .or_else(reads);
        let resp = self.txn("publish endpoint", txn).await?;
        if resp.succeeded() {
            return Ok(());
        }
        let mut gets = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
            _ => None,
        });
        if gets.next().flatten().is_none() {
            return Err(ClusterError::not_found(format!("overlay network id {} (endpoint {})", ep.network_id, ep.id)));
        }
        // The first address that is not the endpoint's.
        for (ip, held) in ips.iter().zip(gets) {
            let held = held.map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            match held {
                Some(h) if h == ip.to_string() => continue,
                Some(other) => return Err(ClusterError::conflict(format!("endpoint {} holds address {other}, not {ip}, in network {}", ep.id, ep.network_id))),
                None => {
                    return Err(ClusterError::conflict(format!(
                        "endpoint {} holds no address for {ip} in network {} (call allocate_addresses first)",
                        ep.id, ep.network_id
                    )));
                }
            }
        }
        Err(ClusterError::conflict(format!("endpoint {} in network {}: its addresses changed while it was being published; retry", ep.id, ep.network_id)))
    }

    /// Withdraws an endpoint (its address stays reserved until `release_address`). Deleting
    /// an absent endpoint succeeds.
    pub async fn delete_endpoint(&self, net_id: &str, endpoint_id: &str) -> Result<()> {
        keys::validate_segment("network id", net_id)?;
        keys::validate_segment("endpoint id", endpoint_id)?;
        let local = self.local();
        let mut published = match &local {
            Some(l) => Some(l.endpoints.lock().await),
            None => None,
        };
        let key = keys::endpoint(net_id, endpoint_id);
        self.call("delete endpoint", |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await?;
        if let Some(p) = published.as_mut() {
            p.remove(&(net_id.to_owned(), endpoint_id.to_owned()));
        }
        Ok(())
    }

    /// The endpoints of a network that are currently published (endpoints of dead nodes are
    /// gone with their lease).
    pub async fn list_endpoints(&self, net_id: &str) -> Result<Vec<ClusterEndpoint>> {
        keys::validate_segment("network id", net_id)?;
        let (kvs, _) = self.get_prefix("list endpoints", &keys::endpoints_of(net_id)).await?;
        kvs.iter().map(decode).collect()
    }
}
