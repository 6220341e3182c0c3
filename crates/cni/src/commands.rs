//! ADD, DEL, CHECK, GC and STATUS, each a few requests to hnsd. hns-cni keeps no state: the
//! endpoint of an attachment has an ID derived from (network, container ID, interface), so
//! every command finds exactly what ADD made.

use std::collections::BTreeSet;

use hns_api::{Dns, ErrorCode, HostComputeEndpoint, HostComputeNamespace, HostComputeNetwork, IpConfig, Ipam, IpamType, NetworkType, Policy, Route, Subnet};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::{self, NetConf};
use crate::env::Env;
use crate::error::{CniError, Result, code};
use crate::hns::Hns;
use crate::netns;
use crate::result::{self, ResultDns};
use crate::{version, windows};

/// Name space of the derived endpoint IDs (a fixed random UUID: IDs differ from any other
/// derivation's).
const ID_SPACE: Uuid = Uuid::from_u128(0x5d0c_91e2_4f6b_4c1a_9a57_2b1e_83c4_d7a0);
/// `Owner` of CNI endpoints when the runtime names no Kubernetes namespace.
pub const OWNER: &str = "hns-cni";
/// `AdditionalParams` keys that mark an endpoint as a CNI attachment.
const P_NETWORK: &str = "CniNetwork";
const P_CONTAINER: &str = "ContainerId";
const P_IFNAME: &str = "IfName";

/// The endpoint ID of the attachment (network config name, container ID, interface name):
/// libcni's own key for an attachment.
pub fn endpoint_id(network: &str, container_id: &str, ifname: &str) -> String {
    Uuid::new_v5(&ID_SPACE, format!("{network}\n{container_id}\n{ifname}").as_bytes()).to_string()
}

pub struct Ctx {
    pub conf: NetConf,
    pub env: Env,
    pub version: String,
    pub hns: Hns,
}

impl Ctx {
    fn id(&self) -> String {
        endpoint_id(&self.conf.name, &self.env.container_id, &self.env.ifname)
    }

    fn endpoint(&self, id: &str) -> Result<Option<HostComputeEndpoint>> {
        self.hns.get(&format!("/endpoints/{id}"))
    }

    fn namespace(&self, id: &str) -> Result<Option<HostComputeNamespace>> {
        if id.is_empty() { Ok(None) } else { self.hns.get(&format!("/namespaces/{id}")) }
    }

    fn netns_identity(&self) -> Result<(u64, u64)> {
        netns::identity(&self.env.netns).map_err(|e| CniError::env(format!("CNI_NETNS {:?} is not a network namespace: {e}", self.env.netns)))
    }

    // ---- ADD

    /// The common case costs three requests: the network and the namespace adopted (at once,
    /// on two connections: neither needs the other), then the endpoint created attached.
    /// Conflicts lead to the rarer paths (a second interface in a known namespace, ADD again
    /// for the same attachment).
    pub fn add(&self) -> Result<Value> {
        let identity = self.netns_identity()?;
        let id = self.id();
        let (net, ns) = std::thread::scope(|s| {
            let ns = s.spawn(|| self.ensure_namespace(identity));
            let net = self.ensure_network();
            (net, ns.join().expect("ensure_namespace does not panic"))
        });
        let (net, made_net) = match net {
            Ok(v) => v,
            Err(e) => return Err(self.undo(e, ns.ok().filter(|(_, adopted)| *adopted).map(|(n, _)| n.id).as_ref(), None)),
        };
        let (ns, adopted) = match ns {
            Ok(v) => v,
            Err(e) => return Err(self.undo(e, None, made_net.then_some(&net.id))),
        };
        let undo = |e| self.undo(e, adopted.then_some(&ns.id), made_net.then_some(&net.id));
        let mut req = self.endpoint_request(&id, &net, &ns).map_err(undo)?;
        let mut created = self.hns.post::<HostComputeEndpoint>("/endpoints", &req);
        if created.as_ref().is_err_and(|e| e.is_hns(ErrorCode::EndpointAlreadyExists, Some("ID"))) {
            // This attachment has an endpoint already.
            if let Some(ep) = self.endpoint(&id).map_err(undo)?
                && ep.host_compute_namespace == ns.id
                && ep.interface_name == self.env.ifname
            {
                // ADD again: the same result.
                let net = if ep.host_compute_network == net.id { net.clone() } else { self.network_of(&ep).map_err(undo)? };
                return Ok(self.result(&ep, &net, Some(&ns)));
            }
            // Left from an earlier sandbox of the same container ID: replace it.
            self.hns.delete(&format!("/endpoints/{id}")).map_err(|e| undo(e.context("removing the stale endpoint of this attachment")))?;
            created = self.hns.post("/endpoints", &req);
        }
        if created.as_ref().is_err_and(|e| e.is_hns(ErrorCode::EndpointAlreadyExists, Some("Name"))) {
            // The name is taken on this network (another sandbox of the same pod, say): the
            // container ID makes it unique.
            req.name = format!("{}-{}", req.name, short(&self.env.container_id));
            created = self.hns.post("/endpoints", &req);
        }
        let ep = created.map_err(|e| undo(e.context(&format!("creating the endpoint on network {:?}", net.name))))?;
        Ok(self.result(&ep, &net, Some(&ns)))
    }

    /// A failed ADD leaves nothing behind: the namespace record it adopted and the network it
    /// created go again (best effort; a network another ADD uses meanwhile stays).
    fn undo(&self, e: CniError, namespace: Option<&String>, network: Option<&String>) -> CniError {
        if let Some(ns) = namespace {
            let _ = self.hns.delete(&format!("/namespaces/{ns}"));
        }
        if let Some(net) = network {
            let _ = self.hns.delete(&format!("/networks/{net}"));
        }
        e
    }

    fn network_of(&self, ep: &HostComputeEndpoint) -> Result<HostComputeNetwork> {
        self.hns.get(&format!("/networks/{}", ep.host_compute_network))?.ok_or_else(|| {
            CniError::new(code::HNS_FAILED, format!("hnsd lists endpoint {} on network {} but not the network", ep.id, ep.host_compute_network))
        })
    }

    fn result(&self, ep: &HostComputeEndpoint, net: &HostComputeNetwork, ns: Option<&HostComputeNamespace>) -> Value {
        let dns = ns
            .and_then(|n| std::fs::read_to_string(&n.resolv_conf_path).ok())
            .map(|t| ResultDns::from_resolv_conf(&t))
            .unwrap_or_default();
        result::add_result(&self.version, ep, net, &self.env.netns, &dns)
    }

    /// The hns network of the config; created from `ipam.subnet` when absent (then `true`).
    fn ensure_network(&self) -> Result<(HostComputeNetwork, bool)> {
        let name = self.conf.network();
        let path = format!("/networks/{name}");
        let kind = windows::network_type(&self.conf.kind);
        if let Some(net) = self.hns.get::<HostComputeNetwork>(&path)? {
            if let Some(want) = kind.filter(|k| *k != net.network_type()) {
                return Err(CniError::config(format!(
                    "field \"type\" is {} ({want} networks), but hns network {name:?} is a {} network",
                    self.conf.kind,
                    net.network_type()
                )));
            }
            if let Some(want) = self.conf.subnet() {
                let want = config::parse_net(want, "ipam.subnet")?.trunc();
                let has: Vec<String> = net.subnets().map(|s| s.ip_address_prefix.clone()).collect();
                if !has.iter().any(|s| s.parse::<ipnet::IpNet>().is_ok_and(|p| p.trunc() == want)) {
                    return Err(CniError::config(format!(
                        "field \"ipam.subnet\" is {want}, but hns network {name:?} has {}; remove ipam.subnet or make it match",
                        if has.is_empty() { "no subnet".to_owned() } else { has.join(", ") }
                    )));
                }
            }
            return Ok((net, false));
        }
        let Some(subnet) = self.conf.subnet() else {
            return Err(CniError::config(format!(
                "hns network {name:?} does not exist; create it (hnsctl network create --driver nat --subnet ... {name}) or give ipam.subnet so hns-cni creates it"
            )));
        };
        let routes = match self.conf.gateway() {
            None => Vec::new(),
            Some(gw) => {
                let default = if gw.contains(':') { "::/0" } else { "0.0.0.0/0" };
                vec![Route { next_hop: gw.to_owned(), destination_prefix: default.into(), metric: 0 }]
            }
        };
        let req = HostComputeNetwork {
            name: name.to_owned(),
            kind: Some(kind.unwrap_or(NetworkType::Nat)),
            policies: windows::network_policies(&self.conf),
            ipams: vec![Ipam { kind: IpamType::Static, subnets: vec![Subnet { ip_address_prefix: subnet.to_owned(), routes, ..Default::default() }] }],
            owner: OWNER.into(),
            ..Default::default()
        };
        match self.hns.post::<HostComputeNetwork>("/networks", &req) {
            Ok(net) => Ok((net, true)),
            // Another ADD created it meanwhile.
            Err(e) if e.is_hns(ErrorCode::NetworkAlreadyExists, None) => {
                let net = self.hns.get(&path)?.ok_or_else(|| e.context(&format!("creating hns network {name:?}")))?;
                Ok((net, false))
            }
            Err(e) => Err(e.context(&format!("creating hns network {name:?} from ipam.subnet"))),
        }
    }

    /// The compartment of CNI_NETNS: adopted by path (then `true`), or, when hnsd knows that
    /// namespace already (a second interface of the same container), the one it has.
    fn ensure_namespace(&self, identity: (u64, u64)) -> Result<(HostComputeNamespace, bool)> {
        match self.hns.post::<HostComputeNamespace>("/namespaces", &json!({ "NetNsPath": self.env.netns })) {
            Ok(ns) => Ok((ns, true)),
            Err(e) if e.is_hns(ErrorCode::NamespaceAlreadyExists, None) => self.find_namespace(identity)?.map(|ns| (ns, false)).ok_or(e),
            Err(e) => Err(e),
        }
        .map_err(|e| e.context(&format!("adopting network namespace {}", self.env.netns)))
    }

    fn find_namespace(&self, identity: (u64, u64)) -> Result<Option<HostComputeNamespace>> {
        let all: Vec<HostComputeNamespace> = self.hns.get("/namespaces")?.unwrap_or_default();
        Ok(all.into_iter().find(|n| netns::identity(&n.net_ns_path).ok() == Some(identity)))
    }

    fn endpoint_request(&self, id: &str, net: &HostComputeNetwork, ns: &HostComputeNamespace) -> Result<HostComputeEndpoint> {
        let rc = &self.conf.runtime_config;
        let env = &self.env;
        let mut policies = rc
            .port_mappings
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let proto = config::protocol_number(&p.protocol, &format!("runtimeConfig.portMappings[{i}].protocol"))?;
                let settings = json!({ "Protocol": proto, "InternalPort": p.container_port, "ExternalPort": p.host_port, "VIP": p.host_ip });
                Ok(Policy { kind: "PortMapping".into(), settings })
            })
            .collect::<Result<Vec<_>>>()?;
        policies.extend(windows::endpoint_policies(&self.conf));
        if let Some(settings) = rc.bandwidth.as_ref().and_then(config::Bandwidth::qos_settings) {
            policies.push(Policy { kind: "QOS".into(), settings });
        }
        // The `ips` capability wins over CNI_ARGS IP= (as in the reference plugins), which
        // wins over a Windows config's ipam.ipAddress.
        let config_ip = self.conf.ipam.iter().map(|i| &i.ip_address).filter(|a| !a.is_empty());
        let ips = if !rc.ips.is_empty() {
            rc.ips.iter().enumerate().map(|(i, a)| config::parse_address(a, &format!("runtimeConfig.ips[{i}]"))).collect::<Result<Vec<_>>>()?
        } else if !env.args.ips.is_empty() {
            env.args.ips.iter().map(|a| config::parse_address(a, "CNI_ARGS IP").map_err(|e| CniError { code: code::INVALID_ENV, ..e })).collect::<Result<Vec<_>>>()?
        } else {
            config_ip.map(|a| config::parse_address(a, "ipam.ipAddress")).collect::<Result<Vec<_>>>()?
        };
        let ip_configurations = ips.into_iter().map(|(ip, len)| IpConfig { ip_address: ip.to_string(), prefix_length: len.unwrap_or(0), ..Default::default() }).collect();
        let routes = self.conf.endpoint_routes().into_iter().map(|r| Route { destination_prefix: r.dst.clone(), next_hop: r.gw.clone(), metric: 0 }).collect();
        let name: String = if self.conf.is_windows() {
            // The Windows plugins' name: <container ID>_<network>.
            format!("{}_{}", env.container_id, self.conf.name).chars().take(128).collect()
        } else if env.args.pod_name.is_empty() {
            env.container_id.chars().take(64).collect()
        } else {
            env.args.pod_name.clone()
        };
        Ok(HostComputeEndpoint {
            id: id.to_owned(),
            name,
            host_compute_network: net.id.clone(),
            host_compute_namespace: ns.id.clone(),
            interface_name: env.ifname.clone(),
            policies,
            ip_configurations,
            mac_address: if rc.mac.is_empty() { env.args.mac.clone() } else { rc.mac.clone() },
            dns: self.dns(),
            routes,
            aliases: rc.aliases.get(&self.conf.name).cloned().unwrap_or_default(),
            owner: if env.args.pod_namespace.is_empty() { OWNER.into() } else { env.args.pod_namespace.clone() },
            additional_params: json!({ P_NETWORK: self.conf.name, P_CONTAINER: env.container_id, P_IFNAME: env.ifname }),
            ..Default::default()
        })
    }

    /// The endpoint's DNS settings. Type hns: the `dns` capability, else the config's `dns`.
    /// Windows types, as there: the config's `dns` with the pod's namespace before the first
    /// search domain, each part the runtime gives replacing the config's.
    fn dns(&self) -> Option<Dns> {
        let rc = self.conf.runtime_config.dns.as_ref();
        let conf = self.conf.dns.as_ref();
        if !self.conf.is_windows() {
            return match (rc, conf) {
                (Some(d), _) => Some(Dns { server_list: d.servers.clone(), search: d.searches.clone(), options: d.options.clone(), ..Default::default() }),
                (None, Some(d)) => Some(Dns { domain: d.domain.clone(), search: d.search.clone(), server_list: d.nameservers.clone(), options: d.options.clone() }),
                (None, None) => None,
            };
        }
        let mut dns = conf.map(|d| Dns { domain: d.domain.clone(), search: d.search.clone(), server_list: d.nameservers.clone(), options: d.options.clone() }).unwrap_or_default();
        if let Some(first) = dns.search.first_mut()
            && !self.env.args.pod_namespace.is_empty()
        {
            *first = format!("{}.{first}", self.env.args.pod_namespace);
        }
        if let Some(d) = rc {
            let replace = |into: &mut Vec<String>, from: &Vec<String>| {
                if !from.is_empty() {
                    *into = from.clone();
                }
            };
            replace(&mut dns.server_list, &d.servers);
            replace(&mut dns.search, &d.searches);
            replace(&mut dns.options, &d.options);
        }
        (!dns.is_empty()).then_some(dns)
    }

    // ---- DEL

    /// Removes the attachment's endpoint; nothing to remove is success.
    pub fn del(&self) -> Result<()> {
        let id = self.id();
        let Some(ep) = self.endpoint(&id)? else { return Ok(()) };
        self.hns.delete(&format!("/endpoints/{id}")).map_err(|e| e.context(&format!("removing endpoint {id}")))?;
        self.forget_namespace(&ep.host_compute_namespace)
    }

    /// Drops hnsd's record of the runtime's namespace once its last endpoint is gone (hnsd
    /// never removes an adopted namespace itself, only its record; the record holds the
    /// namespace open). Only a namespace adopted under CNI_NETNS, or whose file the runtime
    /// already removed: one hnsd made, or someone adopted under another path, stays.
    fn forget_namespace(&self, ns_id: &str) -> Result<()> {
        let Some(ns) = self.namespace(ns_id)? else { return Ok(()) };
        let ours = !self.env.netns.is_empty() && ns.net_ns_path == self.env.netns;
        if ns.resources.is_empty() && (ours || netns::identity(&ns.net_ns_path).is_err()) {
            self.hns.delete(&format!("/namespaces/{}", ns.id)).map_err(|e| e.context(&format!("forgetting namespace {}", ns.id)))?;
        }
        Ok(())
    }

    // ---- CHECK

    pub fn check(&self) -> Result<()> {
        if !version::at_least(&self.version, "0.4.0") {
            return Err(CniError::new(code::INCOMPATIBLE_VERSION, format!("cniVersion {} has no CHECK (it came with 0.4.0)", self.version)));
        }
        let Some(prev) = &self.conf.prev_result else {
            return Err(CniError::config("field \"prevResult\" is required for CHECK"));
        };
        let fail = |msg: String| CniError::new(code::CHECK_FAILED, msg);
        let id = self.id();
        let ep = self.endpoint(&id)?.ok_or_else(|| {
            fail(format!("hnsd has no endpoint for container {} interface {} on {:?} (ID {id})", self.env.container_id, self.env.ifname, self.conf.name))
        })?;
        let identity = self.netns_identity()?;
        let ns = self.namespace(&ep.host_compute_namespace)?;
        if ns.as_ref().is_none_or(|n| netns::identity(&n.net_ns_path).ok() != Some(identity)) {
            return Err(fail(format!("endpoint {id} is not attached to the namespace {}", self.env.netns)));
        }
        if ep.interface_name != self.env.ifname {
            return Err(fail(format!("endpoint {id} is interface {:?}, not {:?}", ep.interface_name, self.env.ifname)));
        }
        let have: BTreeSet<String> = ep.ip_configurations.iter().map(|c| c.ip_address.clone()).collect();
        for ip in prev["ips"].as_array().into_iter().flatten().filter_map(|i| i["address"].as_str()) {
            let addr = ip.split('/').next().unwrap_or_default();
            if !have.contains(addr) {
                return Err(fail(format!("prevResult has address {ip}, endpoint {id} has {}", have.iter().cloned().collect::<Vec<_>>().join(", "))));
            }
        }
        // Last: this enters the container's namespace.
        let seen = netns::inspect(&self.env.netns, &self.env.ifname)
            .map_err(|e| CniError::new(code::IO_FAILURE, format!("looking inside {}: {e}", self.env.netns)))?
            .ok_or_else(|| fail(format!("there is no interface {} in {}", self.env.ifname, self.env.netns)))?;
        let mac = seen.mac.map(|m| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"));
        if mac.as_deref() != Some(result::cni_mac(&ep.mac_address).as_str()) {
            return Err(fail(format!("interface {} has MAC {}, hnsd says {}", self.env.ifname, mac.unwrap_or_default(), result::cni_mac(&ep.mac_address))));
        }
        for a in &have {
            if !seen.addresses.iter().any(|s| s.to_string() == *a) {
                return Err(fail(format!("interface {} in {} lacks address {a}", self.env.ifname, self.env.netns)));
            }
        }
        Ok(())
    }

    // ---- GC

    /// Removes every endpoint this network config's ADDs made that is not in the valid list;
    /// goes on past failures and reports them all.
    pub fn gc(&self) -> Result<()> {
        if !version::at_least(&self.version, "1.1.0") {
            return Err(CniError::new(code::INCOMPATIBLE_VERSION, format!("cniVersion {} has no GC (it came with 1.1.0)", self.version)));
        }
        let keep: BTreeSet<String> = self.conf.keep().iter().map(|a| endpoint_id(&self.conf.name, &a.container_id, &a.ifname)).collect();
        let all: Vec<HostComputeEndpoint> = self.hns.get("/endpoints")?.unwrap_or_default();
        let mut failed = Vec::new();
        for ep in all.iter().filter(|e| e.additional_params[P_NETWORK] == self.conf.name.as_str() && !keep.contains(&e.id)) {
            // A namespace the runtime already removed is forgotten with its last endpoint.
            if let Err(e) = self.hns.delete(&format!("/endpoints/{}", ep.id)).and_then(|_| self.forget_namespace(&ep.host_compute_namespace)) {
                failed.push(format!("endpoint {} ({}): {}", ep.id, ep.additional_params[P_CONTAINER], e.msg));
            }
        }
        if failed.is_empty() { Ok(()) } else { Err(CniError::new(code::HNS_FAILED, format!("GC could not remove {}", failed.join("; ")))) }
    }

    // ---- STATUS

    /// Ready when hnsd answers and the network exists or can be made.
    pub fn status(&self) -> Result<()> {
        if !version::at_least(&self.version, "1.1.0") {
            return Err(CniError::new(code::INCOMPATIBLE_VERSION, format!("cniVersion {} has no STATUS (it came with 1.1.0)", self.version)));
        }
        let unavailable = |e: CniError| CniError { code: code::NOT_AVAILABLE, ..e };
        self.hns.healthy().map_err(unavailable)?;
        let name = self.conf.network();
        if self.hns.get::<HostComputeNetwork>(&format!("/networks/{name}")).map_err(unavailable)?.is_none() && self.conf.subnet().is_none() {
            return Err(CniError::new(code::NOT_AVAILABLE, format!("hns network {name:?} does not exist and the config has no ipam.subnet to create it from")));
        }
        Ok(())
    }
}

/// The short form of a container ID (12 characters, as Docker and podman show it).
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = endpoint_id("net", "c1", "eth0");
        assert_eq!(a, endpoint_id("net", "c1", "eth0"));
        assert_ne!(a, endpoint_id("net", "c1", "eth1"));
        assert_ne!(a, endpoint_id("net2", "c1", "eth0"));
        // No ambiguity from concatenation.
        assert_ne!(endpoint_id("a", "bc", "eth0"), endpoint_id("ab", "c", "eth0"));
    }
}
