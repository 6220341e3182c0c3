//! DHCPv6 on transparent networks, beside SLAAC: on a DHCP network (transparent, created
//! without subnets) every attached endpoint also gets a stateful DHCPv6 client, run by
//! `hns_dhcp::v6` inside its compartment with a DUID made from its MAC.
//!
//! Unlike DHCPv4 it never holds up an attach or the engine: the client starts once the
//! container's interface exists and works in the background, so a LAN without a DHCPv6
//! server costs nothing but a few Solicits. When a lease arrives (or changes, or is lost) the
//! keeper's event reaches [`Engine::apply_lease6`] through the task main.rs runs: the address
//! is added to the container's interface as a /128 (DHCPv6 carries no prefix length; on-link
//! prefixes and routes come from router advertisements), shown in the endpoint's
//! IpConfigurations and registered for service discovery. Detach and delete release it.

use std::net::IpAddr;

use hns_dhcp::{Lease6, Lease6State};
use ipnet::IpNet;

use super::Engine;
use super::records::EndpointRecord;

/// Shows `lease` (or none) in the endpoint: one /128 IpConfiguration beside the DHCPv4 one.
pub(crate) fn set_lease6(rec: &mut EndpointRecord, lease: Option<&Lease6>) {
    let old = rec.lease6.as_ref().map(|l| IpAddr::from(l.address));
    let mut addrs: Vec<IpNet> = rec.addresses().iter().filter(|a| Some(a.addr()) != old).copied().collect();
    if let Some(l) = lease {
        addrs.push(IpNet::from(IpAddr::from(l.address)));
    }
    rec.set_addresses(addrs);
    rec.lease6 = lease.cloned().map(Box::new);
}

impl Engine {
    /// The receiving end of the keepers' events, for the task that calls
    /// [`Engine::apply_lease6`] (taken once).
    pub fn take_lease6_events(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        self.lease6_events_rx.take()
    }

    /// Starts the DHCPv6 client of an attached endpoint of a DHCP network (no-op otherwise, or
    /// if it runs). Never fails the caller: a client that cannot start is logged and started
    /// again by the reconciler.
    pub(crate) fn start_lease6(&mut self, ep_id: &str) {
        let Some(rec) = self.endpoints.get(ep_id).cloned() else { return };
        let ns = rec.ep.host_compute_namespace.clone();
        if self.leases6.contains_key(ep_id) || ns.is_empty() || !self.namespaces.contains_key(&ns) || self.dhcp_uplink(&rec).is_none() {
            return;
        }
        let Some(mac) = rec.mac() else { return };
        let fd = match self.compartment(&ns).map(|c| c.fd.try_clone()) {
            Ok(Ok(fd)) => fd,
            Ok(Err(e)) => return tracing::warn!(endpoint = ep_id, error = %e, "DHCPv6 not started: cannot hold the compartment open"),
            Err(e) => return tracing::warn!(endpoint = ep_id, error = %e, "DHCPv6 not started"),
        };
        let keeper = match hns_dhcp::v6::start(fd, &rec.ep.interface_name, mac.0) {
            Ok(k) => k,
            Err(e) => return tracing::warn!(endpoint = ep_id, error = %e, "DHCPv6 not started"),
        };
        let mut changes = keeper.subscribe();
        let events = self.lease6_events.clone();
        let id = ep_id.to_owned();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() && events.send(id.clone()).is_ok() {}
        });
        self.leases6.insert(ep_id.to_owned(), keeper);
    }

    /// Stops an endpoint's DHCPv6 client and releases its lease (detach, delete). Must run
    /// while the container's interface still exists: the Release leaves from it.
    pub(crate) async fn release_lease6(&mut self, ep_id: &str) {
        if let Some(keeper) = self.leases6.remove(ep_id)
            && let Err(e) = keeper.release().await
        {
            tracing::warn!(endpoint = ep_id, error = %e, "DHCPv6 release failed; the lease will expire on its own");
        }
    }

    /// Brings the endpoint and its compartment in line with what its DHCPv6 client holds.
    pub async fn apply_lease6(&mut self, ep_id: &str) {
        let Some(keeper) = self.leases6.get(ep_id) else { return };
        let lease = match keeper.state() {
            Lease6State::Bound { lease } => Some(lease),
            Lease6State::Lost { .. } => None,
            Lease6State::Soliciting => return,
        };
        let Some(rec) = self.endpoints.get(ep_id).cloned() else { return };
        if rec.lease6.as_deref() == lease.as_ref() {
            return;
        }
        let old = rec.lease6.as_ref().map(|l| l.address);
        let new = lease.as_ref().map(|l| l.address);
        let mut upd = rec.clone();
        set_lease6(&mut upd, lease.as_ref());
        // A renewal only moves times: stored lazily, like DHCPv4's.
        if let Err(e) = self.persist_endpoint(&upd, old == new) {
            return tracing::warn!(endpoint = ep_id, error = %e.message, "DHCPv6 lease not stored");
        }
        self.endpoints.insert(ep_id.to_owned(), upd);
        if old == new {
            return;
        }
        let ifname = rec.ep.interface_name.clone();
        let c = match self.compartment(&rec.ep.host_compute_namespace) {
            Ok(c) => c,
            Err(e) => return tracing::warn!(endpoint = ep_id, error = %e, "DHCPv6 address not configured"),
        };
        let netlink = c.netlink.clone();
        let configured = async {
            if let Some(ip) = old {
                netlink.del_address(&ifname, ip.into()).await?;
            }
            if let Some(ip) = new {
                let link = netlink.link_by_name(&ifname).await?.ok_or_else(|| hns_kernel::error::KernelError::new("find link", &ifname, "not in the compartment"))?;
                netlink.add_address(&ifname, link.index, ip.into(), 128).await?;
            }
            Ok::<_, hns_kernel::error::KernelError>(())
        };
        match configured.await {
            Ok(()) => tracing::info!(endpoint = ep_id, previous = ?old, address = ?new, "DHCPv6 address applied"),
            Err(e) => tracing::warn!(endpoint = ep_id, error = %e, "DHCPv6 address not configured"),
        }
        self.dns_refresh(&rec.network_id);
    }

    /// Starts the DHCPv6 client of every attached endpoint of a DHCP network that has none
    /// (after a restart: the server hands the same DUID and IAID the same binding back).
    pub(crate) fn reconcile_leases6(&mut self) {
        let attached: Vec<String> = self.endpoints.values().filter(|r| !r.ep.host_compute_namespace.is_empty() && self.dhcp_uplink(r).is_some()).map(|r| r.ep.id.clone()).collect();
        for id in attached {
            self.start_lease6(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn lease(addr: &str) -> Lease6 {
        Lease6 {
            address: addr.parse().unwrap(),
            server: "fe80::1".parse().unwrap(),
            dns_servers: vec![],
            domains: vec![],
            t1: Duration::from_secs(60),
            t2: Duration::from_secs(105),
            preferred_lifetime: Duration::from_secs(120),
            valid_lifetime: Duration::from_secs(120),
            obtained_at: UNIX_EPOCH,
        }
    }

    #[test]
    fn the_lease6_sits_beside_the_ipv4_lease_and_replaces_only_itself() {
        let mut rec = EndpointRecord::new(Default::default(), "n".into(), vec!["10.77.8.150/24".parse().unwrap()], None);
        set_lease6(&mut rec, Some(&lease("2001:db8:77:8::1a0")));
        let shown = |r: &EndpointRecord| r.ep.ip_configurations.iter().map(|c| format!("{}/{}", c.ip_address, c.prefix_length)).collect::<Vec<_>>();
        assert_eq!(shown(&rec), ["10.77.8.150/24", "2001:db8:77:8::1a0/128"]);
        set_lease6(&mut rec, Some(&lease("2001:db8:77:8::1a1")));
        assert_eq!(shown(&rec), ["10.77.8.150/24", "2001:db8:77:8::1a1/128"]);
        assert_eq!(rec.addresses(), ["10.77.8.150/24".parse::<IpNet>().unwrap(), "2001:db8:77:8::1a1/128".parse().unwrap()]);
        set_lease6(&mut rec, None);
        assert_eq!(shown(&rec), ["10.77.8.150/24"]);
        assert_eq!(rec.lease6, None);
    }
}
