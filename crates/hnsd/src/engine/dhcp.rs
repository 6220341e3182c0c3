//! DHCP on transparent networks: hnsd is the compartment-aware DHCP client of its endpoints.
//!
//! The client runs in the host namespace on the network's uplink, with the endpoint's MAC
//! (see `hns-dhcp`), so the LAN's server sees the container. At attach the engine obtains a
//! lease (or renews the stored one after a restart), writes address, gateway and DNS into the
//! endpoint record, and only then builds the container's interface. A keeper renews the lease
//! in the background; the reconciler applies what it reports (a new address after a lost
//! lease). Detach and delete release the lease. DHCPv6 runs beside it: see `dhcp6.rs`.

use std::time::Duration;

use hns_api::{ApiError, Dns, ErrorCode, IpConfig, Route};
use hns_dhcp::{Lease, LeaseState};
use hns_ipam::Mac;

use super::records::EndpointRecord;
use super::{Engine, Result};

/// How long an attach waits for the LAN's DHCP server.
const DHCP_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes what a lease says into an endpoint record.
pub(crate) fn apply_lease(rec: &mut EndpointRecord, lease: &Lease) {
    // The DHCPv6 address (if any) stays; the IPv4 one comes first.
    rec.ep.ip_configurations.retain(|c| c.ip_address.contains(':'));
    rec.ep.ip_configurations.insert(0, IpConfig { ip_address: lease.address.to_string(), prefix_length: lease.prefix_len, ip_subnet_id: String::new() });
    rec.ep.routes = lease.gateway.map(|gw| Route { next_hop: gw.to_string(), destination_prefix: "0.0.0.0/0".into(), metric: 0 }).into_iter().collect();
    rec.ep.dns = (!lease.dns_servers.is_empty() || lease.domain.is_some()).then(|| Dns {
        server_list: lease.dns_servers.iter().map(|s| s.to_string()).collect(),
        domain: lease.domain.clone().unwrap_or_default(),
        ..Default::default()
    });
    rec.lease = Some(lease.clone());
}

/// Removes what [`apply_lease`] and `dhcp6::set_lease6` wrote.
pub(crate) fn forget_lease(rec: &mut EndpointRecord) {
    rec.ep.ip_configurations.clear();
    rec.ep.routes.clear();
    rec.ep.dns = None;
    rec.lease = None;
    rec.lease6 = None;
}

impl Engine {
    pub(crate) fn dhcp_uplink(&self, rec: &EndpointRecord) -> Option<String> {
        let net = self.networks.get(&rec.network_id)?;
        net.is_dhcp().then(|| net.plan.uplink.as_ref().map(|u| u.link.clone())).flatten()
    }

    /// Makes sure an endpoint of a DHCP network holds a lease, renewing the stored one if any.
    /// No-op on other networks.
    pub(crate) async fn ensure_lease(&mut self, ep_id: &str) -> Result<()> {
        let rec = self.endpoints[ep_id].clone();
        let Some(uplink) = self.dhcp_uplink(&rec) else { return Ok(()) };
        if self.leases.contains_key(ep_id) {
            return Ok(());
        }
        let mac = Mac::parse(&rec.ep.mac_address).map_err(|e| ApiError::internal(format!("endpoint {ep_id}: {e}")))?.0;
        let hostname = (!rec.ep.name.is_empty()).then_some(rec.ep.name.as_str());
        let got = match rec.lease.clone() {
            Some(previous) => hns_dhcp::resume(&uplink, mac, hostname, previous, DHCP_TIMEOUT).await,
            None => hns_dhcp::acquire(&uplink, mac, hostname, DHCP_TIMEOUT).await,
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
        if let Some(keeper) = self.leases.remove(ep_id) {
            if let Err(e) = keeper.release().await {
                tracing::warn!(endpoint = ep_id, error = %e, "DHCP release failed; the lease will expire on its own");
            }
        }
    }

    /// Applies what the keepers report: a renewed lease with new settings, or a lease lost and
    /// replaced by one with another address. Also resumes the leases of attached endpoints that
    /// have none running (after a restart).
    pub(crate) async fn reconcile_leases(&mut self, errors: &mut Vec<String>, repaired: &mut Vec<String>) {
        let attached: Vec<String> =
            self.endpoints.values().filter(|r| !r.ep.host_compute_namespace.is_empty() && self.dhcp_uplink(r).is_some()).map(|r| r.ep.id.clone()).collect();
        for id in attached {
            if !self.leases.contains_key(&id) {
                match self.ensure_lease(&id).await {
                    Ok(()) => repaired.push(format!("endpoint {id}: DHCP lease resumed")),
                    Err(e) => errors.push(e.message),
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
