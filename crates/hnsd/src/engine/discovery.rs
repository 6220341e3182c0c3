//! Service discovery: each network with discovery on gets the in-process DNS responder on
//! its gateway address, answering the names of its attached endpoints (endpoint name,
//! container/compartment name, aliases) and forwarding everything else.
//!
//! Discovery is on by default for nat networks (as on Windows) and set per network with the
//! HNS `AutomaticDNS` policy `{"Enable": bool}`. The name table is swapped on every attach and
//! detach, before the request returns, so a name resolves the moment attach returns.

use std::net::{IpAddr, SocketAddr};

use hns_api::{HostComputeNetwork, NetworkType};
use hns_dns::{NetworkView, Record};

use super::Engine;
use super::records::EndpointRecord;
use super::validate::parse_network_policies;

/// Whether the network runs the DNS responder.
pub fn enabled(net: &HostComputeNetwork) -> bool {
    let default = matches!(net.network_type(), NetworkType::Nat | NetworkType::Overlay);
    parse_network_policies(&net.policies, "Policies").ok().and_then(|p| p.automatic_dns).unwrap_or(default)
}

/// Upstream servers from a resolv.conf text.
pub fn resolv_conf_servers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()?.parse().ok()
        })
        .collect()
}

impl Engine {
    /// The responder addresses of a network (its gateways), empty when discovery is off.
    pub(crate) fn dns_listeners(&self, net_id: &str) -> Vec<IpAddr> {
        match self.networks.get(net_id) {
            Some(n) if enabled(&n.rec.net) => n.plan.subnets.iter().map(|(_, gw)| *gw).collect(),
            _ => Vec::new(),
        }
    }

    /// What the responder of a network answers and where it forwards.
    pub(crate) fn dns_view(&self, net_id: &str) -> NetworkView {
        let Some(net) = self.networks.get(net_id) else { return NetworkView::default() };
        let mut records = Vec::new();
        for e in self.endpoints.on_network(net_id).filter(|e| !e.ep.host_compute_namespace.is_empty()) {
            // Addresses copied only for an endpoint with a name: this runs on every attach and
            // detach of a named endpoint, over the network's endpoints.
            let names = self.dns_names(e);
            if names.is_empty() {
                continue;
            }
            let addrs: Vec<IpAddr> = e.ips().collect();
            for name in names {
                records.push(Record { name: name.to_owned(), addrs: addrs.clone() });
            }
        }
        // Overlay networks: the endpoints of the other hosts too (global service discovery).
        records.extend(self.overlay_dns_records(net_id));
        let dns = net.rec.net.dns.clone().unwrap_or_default();
        let own = self.dns_listeners(net_id);
        let servers: Vec<IpAddr> = if dns.server_list.is_empty() {
            resolv_conf_servers(&self.host_resolv_conf)
        } else {
            dns.server_list.iter().filter_map(|s| s.parse().ok()).collect()
        };
        NetworkView {
            suffix: (!dns.domain.is_empty()).then(|| dns.domain.clone()),
            records,
            // Never forward to ourselves.
            upstreams: servers.into_iter().filter(|s| !own.contains(s)).map(|s| SocketAddr::new(s, 53)).collect(),
            // Only this network's endpoints (the firewall keeps everyone else out too).
            clients: net.plan.subnets.iter().map(|(subnet, _)| *subnet).collect(),
        }
    }

    /// Starts (or refreshes) the responder of a network, or stops it when discovery is off.
    /// A failure leaves the network working without discovery and is reported by `info`.
    pub(crate) async fn dns_apply(&mut self, net_id: &str) {
        let listen = self.dns_listeners(net_id);
        if listen.is_empty() {
            self.dns.remove_network(net_id).await;
            self.dns_errors.remove(net_id);
            return;
        }
        let view = self.dns_view(net_id);
        match self.dns.set_network(net_id, &listen, self.dns_port, view).await {
            Ok(()) => {
                self.dns_errors.remove(net_id);
            }
            Err(e) => {
                tracing::warn!(network = net_id, error = %e, "the DNS responder could not start; the network works without service discovery");
                self.dns_errors.insert(net_id.to_owned(), e.to_string());
            }
        }
    }

    /// The names an attached endpoint answers to (borrowed): its own, its compartment's
    /// (the container's), its aliases.
    fn dns_names<'a>(&'a self, e: &'a EndpointRecord) -> Vec<&'a str> {
        let container = self.namespaces.get(&e.ep.host_compute_namespace).map(|n| n.rec.ns.name.as_str()).unwrap_or_default();
        let mut names: Vec<&str> = vec![e.ep.name.as_str(), container];
        names.extend(e.ep.aliases.iter().map(String::as_str));
        names.retain(|n| !n.is_empty());
        names.dedup();
        names
    }

    /// [`Engine::dns_refresh`] after `rec` was attached or detached (given attached), only if
    /// it has a name: a nameless endpoint leaves the table as it was, and rebuilding it costs
    /// a walk over every endpoint of the network (1.4 ms of each attach and detach with 1 000
    /// on it).
    pub(crate) fn dns_refresh_for(&self, rec: &EndpointRecord) {
        if !self.dns_names(rec).is_empty() {
            self.dns_refresh(&rec.network_id);
        }
    }

    /// Swaps the name table of a network after endpoints came or went.
    pub(crate) fn dns_refresh(&self, net_id: &str) {
        if self.dns_listeners(net_id).is_empty() || self.dns_errors.contains_key(net_id) {
            return;
        }
        if let Err(e) = self.dns.update_view(net_id, self.dns_view(net_id)) {
            tracing::warn!(network = net_id, error = %e, "could not update the DNS names");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_defaults_and_policy() {
        let mut n = HostComputeNetwork { kind: Some(NetworkType::Nat), ..Default::default() };
        assert!(enabled(&n));
        n.policies = vec![hns_api::Policy { kind: "AutomaticDNS".into(), settings: serde_json::json!({"Enable": false}) }];
        assert!(!enabled(&n));
        let t = HostComputeNetwork { kind: Some(NetworkType::Transparent), ..Default::default() };
        assert!(!enabled(&t));
    }

    #[test]
    fn servers_from_resolv_conf() {
        let s = resolv_conf_servers("# x\nnameserver 127.0.0.53\nnameserver 2001:db8::1\nsearch a\nnameserver bogus\n");
        assert_eq!(s, vec!["127.0.0.53".parse::<IpAddr>().unwrap(), "2001:db8::1".parse().unwrap()]);
    }
}
