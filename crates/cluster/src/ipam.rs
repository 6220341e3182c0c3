//! Cluster IPAM: addresses of overlay networks, reserved in etcd.
//!
//! A dual-stack network has two subnets (one per family) and an endpoint one address in
//! each, reserved subnet by subnet with an owner record per subnet (see `keys::owner`).
//!
//! Every address in use is one key, `alloc/addrs/<net>/<ip>`, created by a transaction that
//! requires the key to be absent (`create_revision == 0`). etcd serializes transactions, so
//! when many hosts allocate at once each address is handed out at most once, without any lock.
//! In the same transaction the endpoint's owner record `alloc/owners/<net>/<ep>` is created
//! (also only if absent), so one endpoint never holds two addresses of a network and a
//! retried allocation returns the address it already has.
//!
//! Dynamic allocation walks the subnet next-fit from a start point hashed from the endpoint id
//! (different endpoints start at different places, so concurrent allocations rarely race for
//! one key), reading the taken addresses in bounded windows (keys sort numerically, see
//! `keys`), and tries the first gap; if another host took it meanwhile it moves on.
//!
//! Reservations are not attached to the node's lease: an address stays reserved while its
//! host is down (its container may still use it, and the host will come back with it) until
//! the owner releases it or an operator removes the node.

use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use crate::alloc::{self, AddrSpace, Gap};
use crate::client::{Cluster, decode, encode};
use crate::error::{ClusterError, Result};
use crate::keys;
use crate::model::{AddressOwner, OverlayNetwork};

/// Taken addresses read per window of the walk.
const WINDOW: i64 = 128;

/// Why a reservation attempt did not take.
enum Refused {
    /// The address is someone else's now; continue the walk.
    Taken(AddressOwner),
    /// The endpoint already holds this address.
    AlreadyOwned(IpAddr),
}

impl Cluster {
    /// Reserves one address per subnet of overlay network `net_id` for endpoint `endpoint_id`
    /// on `node` (an IPv4 and an IPv6 address on a dual-stack network), in the network's
    /// subnet order: for each subnet the address of `requested` of its family if given and
    /// free, otherwise the next free one from the endpoint's start point. Never hands out the
    /// network, broadcast or gateway address. Calling it again for the same endpoint returns
    /// the addresses it holds. When one subnet fails, what this call reserved in the others is
    /// released again.
    pub async fn allocate_addresses(&self, net_id: &str, endpoint_id: &str, node: &str, requested: &[IpAddr]) -> Result<Vec<IpAddr>> {
        keys::validate_segment("network id", net_id)?;
        keys::validate_segment("endpoint id", endpoint_id)?;
        keys::validate_segment("node name", node)?;
        let net = self.get_network(net_id).await?;
        let subnets = net.subnets();
        let spaces = subnets.iter().map(|s| AddrSpace::new(s.subnet, s.gateway)).collect::<Result<Vec<_>>>()?;
        let wanted = alloc::requested_per_subnet(&spaces, requested, &net.name)?;
        let owner = AddressOwner { endpoint_id: endpoint_id.to_owned(), node: node.to_owned() };
        let mut got: Vec<IpAddr> = Vec::with_capacity(spaces.len());
        let mut fresh: Vec<usize> = Vec::new();
        for (slot, (space, want)) in spaces.iter().zip(wanted).enumerate() {
            match self.allocate_in(&net, slot, space, &owner, want).await {
                Ok((ip, new)) => {
                    got.push(ip);
                    if new {
                        fresh.push(slot);
                    }
                }
                Err(e) => {
                    for slot in fresh {
                        if let Err(undo) = self.release_slot(net_id, endpoint_id, slot).await {
                            tracing::warn!(network = net_id, endpoint = endpoint_id, error = %undo, "could not give back an address after a failed allocation");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(got)
    }

    /// Reserves the address of subnet `slot`; says whether this call reserved it (rather than
    /// finding it held by the endpoint already).
    async fn allocate_in(&self, net: &OverlayNetwork, slot: usize, space: &AddrSpace, owner: &AddressOwner, requested: Option<IpAddr>) -> Result<(IpAddr, bool)> {
        let (net_id, endpoint_id) = (net.id.as_str(), owner.endpoint_id.as_str());
        let sub = net.subnets()[slot];
        if let Some(ip) = requested {
            if !space.is_assignable(ip) {
                return Err(ClusterError::invalid(
                    format!("address {ip}"),
                    format!("not assignable in subnet {} of overlay network {} (outside it, or its network, broadcast or gateway {} address)", sub.subnet, net.name, sub.gateway),
                ));
            }
            return match self.try_reserve(net, slot, ip, owner).await? {
                Ok(()) => Ok((ip, true)),
                Err(Refused::AlreadyOwned(held)) if held == ip => Ok((ip, false)),
                Err(Refused::AlreadyOwned(held)) => Err(ClusterError::conflict(format!(
                    "endpoint {endpoint_id} already holds address {held} in overlay network {}; release it before asking for {ip}",
                    net.name
                ))),
                Err(Refused::Taken(other)) => Err(ClusterError::conflict(format!(
                    "address {ip} in overlay network {} is in use by endpoint {} on node {}",
                    net.name, other.endpoint_id, other.node
                ))),
            };
        }

        let start = space.start_for(endpoint_id);
        let mut stretches = vec![(start, space.last)];
        if start > space.first {
            stretches.push((space.first, start - 1));
        }
        for (mut cursor, end) in stretches {
            loop {
                let from = keys::addr(net_id, space.ip(cursor));
                let mut until = keys::addr(net_id, space.ip(end)).into_bytes();
                until.push(0); // keys are fixed width: this is the first key after `end`
                let (kvs, more) = self.get_range("read address reservations", from, until, WINDOW).await?;
                let taken: Vec<u128> = kvs
                    .iter()
                    .filter_map(|kv| keys::parse_addr(&String::from_utf8_lossy(kv.key())).map(|(_, ip)| ip))
                    .filter(|ip| space.same_family(*ip))
                    .map(alloc::value)
                    .collect();
                match alloc::find_gap(space, cursor, end, &taken, !more) {
                    Gap::Free(candidate) => {
                        let ip = space.ip(candidate);
                        match self.try_reserve(net, slot, ip, owner).await? {
                            Ok(()) => return Ok((ip, true)),
                            Err(Refused::AlreadyOwned(held)) => return Ok((held, false)),
                            Err(Refused::Taken(_)) => cursor = candidate + 1,
                        }
                    }
                    Gap::Continue(next) => cursor = next,
                    Gap::End => break,
                }
            }
        }
        Err(ClusterError::Exhausted { what: format!("no free address left in subnet {} of overlay network {}", sub.subnet, net.name) })
    }

    /// One reservation attempt: creates the address key and the owner record if both are
    /// absent and the network still exists; otherwise says why not (from the same revision).
    async fn try_reserve(&self, net: &OverlayNetwork, slot: usize, ip: IpAddr, owner: &AddressOwner) -> Result<std::result::Result<(), Refused>> {
        let net_key = keys::network(&net.id);
        let addr_key = keys::addr(&net.id, ip);
        let owner_key = keys::owner(&net.id, &owner.endpoint_id, slot);
        let txn = Txn::new()
            .when([
                Compare::create_revision(net_key.clone(), CompareOp::Greater, 0),
                Compare::create_revision(addr_key.clone(), CompareOp::Equal, 0),
                Compare::create_revision(owner_key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(addr_key.clone(), encode(owner), None::<PutOptions>),
                TxnOp::put(owner_key.clone(), ip.to_string(), None::<PutOptions>),
            ])
            .or_else([TxnOp::get(net_key, None), TxnOp::get(owner_key, None), TxnOp::get(addr_key, None)]);
        let resp = self.txn("reserve address", txn).await?;
        if resp.succeeded() {
            return Ok(Ok(()));
        }
        let mut gets = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
            _ => None,
        });
        let (net_kv, owner_kv, addr_kv) = (gets.next().flatten(), gets.next().flatten(), gets.next().flatten());
        if net_kv.is_none() {
            return Err(ClusterError::not_found(format!("overlay network id {} (deleted meanwhile)", net.id)));
        }
        if let Some(kv) = owner_kv {
            let text = String::from_utf8_lossy(kv.value()).into_owned();
            let held = text.parse().map_err(|e| ClusterError::corrupt(kv.key(), e))?;
            return Ok(Err(Refused::AlreadyOwned(held)));
        }
        match addr_kv {
            Some(kv) => Ok(Err(Refused::Taken(decode(&kv)?))),
            // Released between the compare and the read: just another lost race.
            None => Ok(Err(Refused::Taken(AddressOwner { endpoint_id: "?".into(), node: "?".into() }))),
        }
    }

    /// Releases the addresses held by `endpoint_id` in `net_id`; returns them (none if the
    /// endpoint held none: releasing twice is harmless).
    pub async fn release_address(&self, net_id: &str, endpoint_id: &str) -> Result<Vec<IpAddr>> {
        keys::validate_segment("network id", net_id)?;
        keys::validate_segment("endpoint id", endpoint_id)?;
        let mut released = Vec::new();
        for slot in 0..alloc::MAX_SUBNETS {
            released.extend(self.release_slot(net_id, endpoint_id, slot).await?);
        }
        Ok(released)
    }

    /// Releases the address of subnet `slot` held by the endpoint, if any.
    async fn release_slot(&self, net_id: &str, endpoint_id: &str, slot: usize) -> Result<Option<IpAddr>> {
        let owner_key = keys::owner(net_id, endpoint_id, slot);
        let Some(owner_kv) = self.get_one("look up address owner", &owner_key).await? else { return Ok(None) };
        let ip: IpAddr = String::from_utf8_lossy(owner_kv.value()).parse().map_err(|e| ClusterError::corrupt(owner_kv.key(), e))?;
        let addr_key = keys::addr(net_id, ip);
        // Delete the address key only if it is still this endpoint's (it always should be,
        // both are written together; the check keeps a damaged store from getting worse).
        let mut deletes = vec![TxnOp::delete(owner_key.clone(), None)];
        let mut compares = vec![Compare::mod_revision(owner_key, CompareOp::Equal, owner_kv.mod_revision())];
        if let Some(addr_kv) = self.get_one("look up address", &addr_key).await? {
            let holder: AddressOwner = decode(&addr_kv)?;
            if holder.endpoint_id == endpoint_id {
                compares.push(Compare::mod_revision(addr_key.clone(), CompareOp::Equal, addr_kv.mod_revision()));
                deletes.push(TxnOp::delete(addr_key, None));
            }
        }
        if self.txn("release address", Txn::new().when(compares).and_then(deletes)).await?.succeeded() {
            Ok(Some(ip))
        } else {
            Err(ClusterError::conflict(format!("address {ip} of endpoint {endpoint_id} changed while it was being released; retry")))
        }
    }

    /// Every reserved address of a network with its owner, in address order.
    pub async fn list_addresses(&self, net_id: &str) -> Result<Vec<(IpAddr, AddressOwner)>> {
        keys::validate_segment("network id", net_id)?;
        let (kvs, _) = self.get_prefix("list addresses", &keys::addrs_of(net_id)).await?;
        kvs.iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let (_, ip) = keys::parse_addr(&key).ok_or_else(|| ClusterError::corrupt(kv.key(), "not an address key"))?;
                Ok((ip, decode(kv)?))
            })
            .collect()
    }
}
