//! DHCP on transparent networks: hnsd is the compartment-aware DHCP client of its endpoints.
//!
//! The client runs in the host namespace on the network's uplink, with the endpoint's MAC
//! (see `hns-dhcp`), so the LAN's server sees the container. At attach the engine obtains a
//! lease (or renews the stored one after a restart), writes address, gateway and DNS into the
//! endpoint record, and only then builds the container's interface. A keeper renews the lease
//! in the background; the reconciler applies what it reports (a new address after a lost
//! lease). Detach and delete release the lease. DHCPv6 runs beside it: see `dhcp6.rs`.
//!
//! The exchange with the LAN's server can take seconds (ten when no server answers), so it
//! never runs under the engine lock on a request's path: [`with_leases`] asks the engine which
//! leases an operation will need ([`LeaseWanted`]), obtains them with the lock released, and
//! hands them in as offers that [`Engine::ensure_lease`] takes. A slow server then delays only
//! the requests that wait for it. The reconciler resumes leases in the background likewise.

use std::net::IpAddr;
use std::time::Duration;

use hns_api::{ApiError, Dns, ErrorCode, HostComputeEndpoint, Route};
use hns_dhcp::{Lease, LeaseKeeper, LeaseState};
use hns_ipam::Mac;
use ipnet::IpNet;

use super::records::EndpointRecord;
use super::{Engine, Result};

/// How long an attach waits for the LAN's DHCP server.
const DHCP_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes what a lease says into an endpoint record.
pub(crate) fn apply_lease(rec: &mut EndpointRecord, lease: &Lease) {
    // The DHCPv6 address (if any) stays; the IPv4 one comes first.
    let mut addrs: Vec<IpNet> = rec.addresses().iter().filter(|a| a.addr().is_ipv6()).copied().collect();
    // The lease's prefix length is at most 32 (hns_dhcp reads it from a subnet mask).
    addrs.insert(0, IpNet::new(lease.address.into(), lease.prefix_len).unwrap_or_else(|_| IpNet::from(IpAddr::from(lease.address))));
    rec.set_addresses(addrs);
    let mut ep = rec.ep_mut();
    ep.routes = lease.gateway.map(|gw| Route { next_hop: gw.to_string(), destination_prefix: "0.0.0.0/0".into(), metric: 0 }).into_iter().collect();
    ep.dns = (!lease.dns_servers.is_empty() || lease.domain.is_some()).then(|| Dns {
        server_list: lease.dns_servers.iter().map(|s| s.to_string()).collect(),
        domain: lease.domain.clone().unwrap_or_default(),
        ..Default::default()
    });
    drop(ep);
    rec.lease = Some(Box::new(lease.clone()));
}

/// Removes what [`apply_lease`] and `dhcp6::set_lease6` wrote.
pub(crate) fn forget_lease(rec: &mut EndpointRecord) {
    rec.set_addresses(Vec::new());
    let mut ep = rec.ep_mut();
    ep.routes.clear();
    ep.dns = None;
    drop(ep);
    rec.lease = None;
    rec.lease6 = None;
}

/// A lease an operation will need for an endpoint, to be obtained without the engine lock.
pub struct LeaseWanted {
    ep_id: String,
    uplink: String,
    mac: [u8; 6],
    hostname: Option<String>,
    /// The stored lease to renew (after a restart), else a new one is asked for.
    previous: Option<Lease>,
}

/// What the exchange for a [`LeaseWanted`] gave: the keeper and its lease, or why not.
pub struct LeaseOffer {
    ep_id: String,
    mac: [u8; 6],
    got: std::result::Result<(LeaseKeeper, Lease), String>,
}

impl LeaseWanted {
    /// The DHCP exchange itself (up to [`DHCP_TIMEOUT`]).
    pub async fn fetch(self) -> LeaseOffer {
        let hostname = self.hostname.as_deref();
        let got = match self.previous {
            Some(previous) => hns_dhcp::resume(&self.uplink, self.mac, hostname, previous, DHCP_TIMEOUT).await,
            None => hns_dhcp::acquire(&self.uplink, self.mac, hostname, DHCP_TIMEOUT).await,
        };
        LeaseOffer { ep_id: self.ep_id, mac: self.mac, got: got.map_err(|e| e.to_string()) }
    }
}

/// Runs `op` on the engine once the DHCP leases it will need are obtained with the lock
/// released. `wanted` reads them under the lock and may prepare the request `P` that `op`
/// then takes (see [`Engine::lease_for_new_endpoint`]); offers `op` does not take are handed
/// back afterwards. With nothing wanted (any network but a DHCP one) the lock is taken once.
///
/// `busy` names the objects the request touches: the lock is taken when none is in flight
/// (see [`super::lock_when_idle`]).
pub async fn with_leases<P, T>(
    engine: &super::EngineLock,
    busy: impl Fn(&Engine) -> Vec<String>,
    wanted: impl FnOnce(&Engine) -> (Vec<LeaseWanted>, P),
    op: impl AsyncFnOnce(&mut Engine, P) -> Result<T>,
) -> Result<T> {
    let mut guard = super::lock_when_idle(engine, &busy).await;
    let (wanted, req) = wanted(&guard);
    if !wanted.is_empty() {
        drop(guard);
        let offers = futures::future::join_all(wanted.into_iter().map(LeaseWanted::fetch)).await;
        guard = super::lock_when_idle(engine, &busy).await;
        guard.offers.extend(offers.into_iter().map(|o| (o.ep_id.clone(), o)));
    }
    let result = op(&mut guard, req).await;
    guard.discard_offers();
    result
}

impl Engine {
    /// The leases attaching the endpoints `keys` (IDs or names) would need: those on DHCP
    /// networks that hold none. Unknown keys are left to the operation to refuse.
    pub fn leases_wanted(&self, keys: &[String]) -> Vec<LeaseWanted> {
        keys.iter().filter_map(|k| self.endpoint_id(k).ok()).filter_map(|id| self.lease_wanted(&self.endpoints[&id])).collect()
    }

    fn lease_wanted(&self, rec: &EndpointRecord) -> Option<LeaseWanted> {
        if !rec.ep.host_compute_namespace.is_empty() {
            return None;
        }
        self.lease_of(rec)
    }

    /// The lease an attached endpoint holds no keeper for, unless its exchange is under way.
    fn lease_to_resume(&self, id: &str) -> Option<LeaseWanted> {
        if self.resuming.contains(id) {
            return None;
        }
        self.lease_of(&self.endpoints[id])
    }

    /// The lease of an endpoint on a DHCP network that holds none.
    fn lease_of(&self, rec: &EndpointRecord) -> Option<LeaseWanted> {
        let uplink = self.dhcp_uplink(rec)?;
        if self.leases.contains_key(&rec.ep.id) {
            return None;
        }
        Some(LeaseWanted {
            ep_id: rec.ep.id.clone(),
            uplink,
            mac: rec.mac()?.0,
            hostname: (!rec.ep.name.is_empty()).then(|| rec.ep.name.clone()),
            previous: rec.lease.as_deref().cloned(),
        })
    }

    /// For an endpoint created attached at once on a DHCP network, the lease it will need:
    /// its ID and MAC are chosen now (the server keys the lease on the MAC) and written into
    /// `req`, which validation then checks like the client's own.
    pub fn lease_for_new_endpoint(&self, req: &mut HostComputeEndpoint) -> Vec<LeaseWanted> {
        if req.host_compute_namespace.is_empty() {
            return Vec::new();
        }
        let Some(net_id) = self.network_id(&req.host_compute_network) else { return Vec::new() };
        let net = &self.networks[&net_id];
        let Some(uplink) = net.dhcp_uplink() else { return Vec::new() };
        if req.id.is_empty() {
            req.id = self.fresh_endpoint_id();
        }
        if req.mac_address.is_empty() {
            req.mac_address = std::iter::repeat_with(Mac::random).find(|m| !net.macs.contains(&m.0)).expect("unbounded").to_windows_string();
        }
        let Ok(mac) = Mac::parse(&req.mac_address) else { return Vec::new() };
        let hostname = (!req.name.is_empty()).then(|| req.name.clone());
        vec![LeaseWanted { ep_id: super::norm_guid(&req.id).unwrap_or_else(|| req.id.clone()), uplink, mac: mac.0, hostname, previous: None }]
    }

    /// Hands back the offers no operation took: a keeper for an endpoint that holds another
    /// (a concurrent attach won) stops without a word, so the lease both share stays; any
    /// other is released, as its endpoint is not attached.
    fn discard_offers(&mut self) {
        for (ep_id, offer) in std::mem::take(&mut self.offers) {
            let Ok((keeper, _)) = offer.got else { continue };
            if self.leases.get(&ep_id).is_some_and(|k| k.mac() == offer.mac) {
                drop(keeper);
            } else {
                tokio::spawn(async move {
                    if let Err(e) = keeper.release().await {
                        tracing::warn!(endpoint = ep_id, error = %e, "DHCP release of an unused lease failed; it will expire on its own");
                    }
                });
            }
        }
    }

    pub(crate) fn dhcp_uplink(&self, rec: &EndpointRecord) -> Option<String> {
        self.networks.get(&rec.network_id)?.dhcp_uplink()
    }

    /// Makes sure an endpoint of a DHCP network holds a lease, renewing the stored one if any.
    /// No-op on other networks.
    pub(crate) async fn ensure_lease(&mut self, ep_id: &str) -> Result<()> {
        let rec = self.endpoints[ep_id].clone();
        let Some(uplink) = self.dhcp_uplink(&rec) else { return Ok(()) };
        if self.leases.contains_key(ep_id) {
            return Ok(());
        }
        let mac = rec.mac().ok_or_else(|| ApiError::internal(format!("endpoint {ep_id} has no MAC")))?.0;
        let got = match self.offers.remove(ep_id).filter(|o| o.mac == mac) {
            Some(offer) => offer.got,
            None => {
                // Not obtained beforehand (a caller outside `with_leases`): under the lock.
                let wanted = LeaseWanted { ep_id: ep_id.to_owned(), uplink, mac, hostname: (!rec.ep.name.is_empty()).then(|| rec.ep.name.clone()), previous: rec.lease.as_deref().cloned() };
                wanted.fetch().await.got
            }
        };
        let (keeper, lease) = got.map_err(|e| ApiError::new(ErrorCode::DhcpFailed, format!("endpoint {ep_id}: {e}")))?;
        let mut rec = rec;
        apply_lease(&mut rec, &lease);
        self.persist_endpoint(&rec, false)?;
        self.endpoints.insert(ep_id.to_owned(), rec);
        self.leases.insert(ep_id.to_owned(), keeper);
        Ok(())
    }

    /// Releases an endpoint's lease (detach, delete). The server is told; a failure to tell it
    /// only shortens nothing: the lease then expires on its own.
    pub(crate) async fn release_lease(&mut self, ep_id: &str) {
        if let Some(keeper) = self.leases.remove(ep_id)
            && let Err(e) = keeper.release().await
        {
            tracing::warn!(endpoint = ep_id, error = %e, "DHCP release failed; the lease will expire on its own");
        }
    }

    /// Applies what the keepers report: a renewed lease with new settings, or a lease lost and
    /// replaced by one with another address. Also resumes the leases of attached endpoints that
    /// have none running (after a restart): the exchange runs in the background, and the next
    /// pass takes what it gave.
    pub(crate) async fn reconcile_leases(&mut self, errors: &mut Vec<String>, repaired: &mut Vec<String>) {
        while let Ok(offer) = self.resumed.1.try_recv() {
            let id = offer.ep_id.clone();
            self.resuming.remove(&id);
            let attached = self.endpoints.get(&id).is_some_and(|r| !r.ep.host_compute_namespace.is_empty());
            if !attached || self.leases.contains_key(&id) {
                self.offers.insert(id, offer);
                continue;
            }
            self.offers.insert(id.clone(), offer);
            match self.ensure_lease(&id).await {
                Ok(()) => repaired.push(format!("endpoint {id}: DHCP lease resumed")),
                Err(e) => errors.push(e.message),
            }
        }
        self.discard_offers();
        let attached: Vec<String> =
            self.endpoints.values().filter(|r| !r.ep.host_compute_namespace.is_empty() && self.dhcp_uplink(r).is_some()).map(|r| r.ep.id.clone()).collect();
        for id in attached {
            if !self.leases.contains_key(&id) {
                if let Some(wanted) = self.lease_to_resume(&id) {
                    self.resuming.insert(id);
                    let done = self.resumed.0.clone();
                    tokio::spawn(async move {
                        let _ = done.send(wanted.fetch().await);
                    });
                }
                continue;
            }
            let LeaseState::Bound { lease } = self.leases[&id].state() else { continue };
            let rec = self.endpoints[&id].clone();
            if rec.lease.as_ref().is_some_and(|l| l.same_config(&lease)) {
                continue;
            }
            let moved = rec.lease.as_ref().is_none_or(|l| l.address != lease.address);
            let mut new = rec.clone();
            apply_lease(&mut new, &lease);
            if let Err(e) = self.persist_endpoint(&new, !moved) {
                errors.push(e.message);
                continue;
            }
            self.endpoints.insert(id.clone(), new.clone());
            if moved {
                // A new address: rebuild the container's interface with it.
                let kept = self.leases.remove(&id);
                let kept6 = self.leases6.remove(&id);
                let _ = self.kernel_detach(&rec).await;
                if let Some(k) = kept {
                    self.leases.insert(id.clone(), k);
                }
                if let Some(k) = kept6 {
                    self.leases6.insert(id.clone(), k);
                }
                match self.apply_attach(&new).await {
                    Ok(()) => repaired.push(format!("endpoint {id}: new DHCP address {}", lease.address)),
                    Err(e) => errors.push(format!("endpoint {id}: {}", e.message)),
                }
                let ns = new.ep.host_compute_namespace.clone();
                self.write_resolv_conf(&ns);
            }
        }
    }
}
