//! `hnsctl lb create|ls|inspect|rm|add-backend|rm-backend`: load balancers
//! (`/loadbalancers`). The API has no partial update: adding or removing a backend reads the
//! object, changes its backend list and posts the whole object back (hcsshim's `Update`).
//!
//! Backends are endpoints. People know their containers by name, so a backend may be named by
//! endpoint ID or unique ID prefix, endpoint name, or container (namespace) name or ID: the
//! container's one endpoint, or its endpoint on `--net`. The names are resolved here, against
//! one listing of endpoints and namespaces, and the API gets endpoint IDs.

use hns_api::{ApiError, HostComputeEndpoint, HostComputeLoadBalancer, HostComputeNamespace, HostComputeNetwork, LB_FLAG_DSR, LB_PM_ILB, LB_PM_LOCAL_ROUTED_VIP, LB_PM_PRESERVE_DIP};

use super::network::{inspect_objects, remove_objects};
use super::{Ctx, endpoints_of, id_has_prefix, lookup, looks_like_id_prefix, network_name, object_path, on_network};
use crate::client::Client;
use crate::error::{CliError, Result};
use crate::lbspec::{family_flags, flag_words, parse_port, port_text, vips_text};
use crate::output::{print_json, print_line, print_rows, same_id, short_id};
use crate::template::Column;
use crate::{LbBackendArgs, LbCreateArgs, LsArgs};

pub const LB_COLUMNS: &[Column] = &[
    Column::new("ID", "ID"),
    Column::new("VIPS", "VIPs"),
    Column::new("PORTS", "Ports"),
    Column::new("BACKENDS", "Backends"),
    Column::new("FLAGS", "Flags"),
];

/// What backends are looked up in: one listing, so a command sees one state of hnsd.
struct Directory {
    endpoints: Vec<HostComputeEndpoint>,
    namespaces: Vec<HostComputeNamespace>,
    networks: Vec<HostComputeNetwork>,
}

impl Directory {
    fn load(client: &Client) -> Result<Directory> {
        Ok(Directory { endpoints: client.get("/endpoints")?, namespaces: client.get("/namespaces")?, networks: client.get("/networks").unwrap_or_default() })
    }

    /// The name a backend is shown by: its endpoint's name, else its short ID.
    fn label(&self, id: &str) -> String {
        match self.endpoints.iter().find(|e| same_id(&e.id, id)) {
            Some(e) if !e.name.is_empty() => e.name.clone(),
            _ => short_id(id),
        }
    }

    /// The endpoint ID `key` names among `candidates` (all endpoints, or a load balancer's
    /// backends). `what` is how the key was given (`--backend web`), for errors.
    fn resolve(&self, key: &str, what: &str, net: Option<&HostComputeNetwork>, candidates: &[&HostComputeEndpoint]) -> Result<String> {
        let fits = |e: &&&HostComputeEndpoint| net.is_none_or(|n| on_network(e, n));
        if let Some(e) = candidates.iter().find(|e| same_id(&e.id, key)) {
            return Ok(e.id.clone());
        }
        let named: Vec<&&HostComputeEndpoint> = candidates.iter().filter(|e| !e.name.is_empty() && e.name == key).filter(fits).collect();
        match named.len() {
            1 => return Ok(named[0].id.clone()),
            0 => {}
            _ => {
                let nets: Vec<String> = named.iter().map(|e| network_name(&e.host_compute_network, &self.networks)).collect();
                return Err(CliError::invalid(format!("{what}: endpoints named {key} are on networks {}; pick one with --net", nets.join(", "))));
            }
        }
        if let Some(ns) = self.namespaces.iter().find(|ns| same_id(&ns.id, key) || (!ns.name.is_empty() && ns.name == key)) {
            let own: Vec<&HostComputeEndpoint> = endpoints_of(ns, &self.endpoints).into_iter().filter(|e| candidates.iter().any(|c| c.id == e.id)).collect();
            let on_net: Vec<&&HostComputeEndpoint> = own.iter().filter(fits).collect();
            let nets = |eps: &[&HostComputeEndpoint]| eps.iter().map(|e| network_name(&e.host_compute_network, &self.networks)).collect::<Vec<_>>().join(", ");
            return match (on_net.len(), net) {
                (1, _) => Ok(on_net[0].id.clone()),
                (0, _) if own.is_empty() && candidates.len() == self.endpoints.len() => {
                    Err(CliError::invalid(format!("{what}: container {key} has no endpoint; connect it first (hnsctl network connect NETWORK {key})")))
                }
                (0, _) if own.is_empty() => Err(self.not_found(key, what, candidates)),
                (0, Some(n)) => Err(CliError::invalid(format!("{what}: container {key} has no endpoint on network {}; its networks: {}", n.name, nets(&own)))),
                _ => Err(CliError::invalid(format!(
                    "{what}: container {key} has endpoints on networks {}; pick one with --net, or give the endpoint's ID",
                    nets(&on_net.iter().map(|e| **e).collect::<Vec<_>>())
                ))),
            };
        }
        if looks_like_id_prefix(key) {
            let hits: Vec<&&HostComputeEndpoint> = candidates.iter().filter(|e| id_has_prefix(&e.id, key)).collect();
            match hits.len() {
                1 => return Ok(hits[0].id.clone()),
                0 => {}
                n => return Err(CliError::invalid(format!("{what}: {key} is the start of the IDs of {n} endpoints; give more of the ID"))),
            }
        }
        if let Some(n) = net
            && let Some(e) = candidates.iter().find(|e| !e.name.is_empty() && e.name == key)
        {
            return Err(CliError::invalid(format!("{what}: endpoint {key} is on network {}, not {}", network_name(&e.host_compute_network, &self.networks), n.name)));
        }
        Err(self.not_found(key, what, candidates))
    }

    /// `key` is not among `candidates`: every endpoint, or a load balancer's backends.
    fn not_found(&self, key: &str, what: &str, candidates: &[&HostComputeEndpoint]) -> CliError {
        if candidates.len() == self.endpoints.len() {
            return CliError::invalid(format!("{what}: no endpoint or container named {key} (hnsctl endpoint ls, hnsctl ps -a)"));
        }
        let names: Vec<String> = candidates.iter().map(|e| self.label(&e.id)).collect();
        CliError::invalid(format!("{what}: {key} is not a backend of the load balancer; its backends: {}", if names.is_empty() { "none".to_owned() } else { names.join(", ") }))
    }
}

/// Puts the flag and value that a field of the API's error came from in front of its message:
/// `HostComputeEndpoints[1]` is the second `--backend`, and so on.
fn name_the_flag(e: CliError, labels: &FieldLabels) -> CliError {
    let CliError::Api(ApiError { code, message, field: Some(field) }) = e else { return e };
    let indexed = |prefix: &str, list: &[String]| -> Option<String> {
        let rest = field.strip_prefix(prefix)?.strip_prefix('[')?;
        let i: usize = rest.split(']').next()?.parse().ok()?;
        list.get(i).cloned()
    };
    let label = indexed("HostComputeEndpoints", &labels.backends)
        .or_else(|| indexed("FrontendVIPs", &labels.vips))
        .or_else(|| indexed("PortMappings", &labels.ports))
        .or_else(|| (field == "SourceVIP").then(|| labels.source_vip.clone()).flatten());
    let message = match label {
        Some(l) => format!("{l}: {message}"),
        None => message,
    };
    CliError::Api(ApiError { code, message, field: Some(field) })
}

/// How each entry of a request's lists was given on the command line.
#[derive(Default)]
struct FieldLabels {
    backends: Vec<String>,
    vips: Vec<String>,
    ports: Vec<String>,
    source_vip: Option<String>,
}

/// The load balancer `lb create` asks for (backends still as given).
pub fn request(a: &LbCreateArgs) -> Result<HostComputeLoadBalancer> {
    let mut flags = family_flags(&a.vip, a.ipv6).map_err(CliError::invalid)?;
    if a.dsr {
        flags |= LB_FLAG_DSR;
    }
    let mut port_flags = 0;
    if a.preserve_dip {
        port_flags |= LB_PM_PRESERVE_DIP;
    }
    if a.internal {
        port_flags |= LB_PM_ILB;
    }
    if a.local_routed {
        port_flags |= LB_PM_LOCAL_ROUTED_VIP;
    }
    let mut port_mappings = Vec::new();
    for spec in &a.port {
        let mut pm = parse_port(spec).map_err(CliError::invalid)?;
        pm.flags = port_flags;
        pm.distribution_type = a.affinity.distribution();
        port_mappings.push(pm);
    }
    if let Some(s) = &a.source_vip
        && s.trim().parse::<std::net::IpAddr>().is_err()
    {
        return Err(CliError::invalid(format!("--source-vip {s}: not an IP address")));
    }
    Ok(HostComputeLoadBalancer {
        id: a.id.clone().unwrap_or_default(),
        frontend_vips: a.vip.iter().map(|v| v.trim().to_owned()).collect(),
        source_vip: a.source_vip.clone().unwrap_or_default(),
        port_mappings,
        flags,
        ..Default::default()
    })
}

pub fn create(ctx: &Ctx, a: &LbCreateArgs) -> Result<i32> {
    let mut lb = request(a)?;
    let client = ctx.client()?;
    let net = a.net.as_deref().map(|n| lookup::<HostComputeNetwork>(&client, n)).transpose()?;
    let dir = Directory::load(&client)?;
    let all: Vec<&HostComputeEndpoint> = dir.endpoints.iter().collect();
    for key in &a.backend {
        lb.host_compute_endpoints.push(dir.resolve(key, &format!("--backend {key}"), net.as_ref(), &all)?);
    }
    let labels = FieldLabels {
        backends: a.backend.iter().map(|b| format!("--backend {b}")).collect(),
        vips: a.vip.iter().map(|v| format!("--vip {v}")).collect(),
        ports: a.port.iter().map(|p| format!("--port {p}")).collect(),
        source_vip: a.source_vip.as_ref().map(|s| format!("--source-vip {s}")),
    };
    let made: HostComputeLoadBalancer = client.post("/loadbalancers", &lb).map_err(|e| name_the_flag(e, &labels))?;
    if ctx.json() {
        print_json(&made)?;
    } else {
        // The ID alone: the API has no name for load balancers, so the ID is how to refer to it.
        print_line(&made.id);
    }
    Ok(0)
}

pub fn lb_rows(lbs: &[HostComputeLoadBalancer], label: impl Fn(&str) -> String) -> Vec<Vec<String>> {
    lbs.iter()
        .map(|lb| {
            vec![
                short_id(&lb.id),
                vips_text(lb),
                lb.port_mappings.iter().map(port_text).collect::<Vec<_>>().join(","),
                lb.host_compute_endpoints.iter().map(|id| label(id)).collect::<Vec<_>>().join(","),
                flag_words(lb).join(","),
            ]
        })
        .collect()
}

pub fn ls(ctx: &Ctx, a: &LsArgs) -> Result<i32> {
    let client = ctx.client()?;
    let lbs: Vec<HostComputeLoadBalancer> = client.get("/loadbalancers")?;
    if ctx.json() {
        print_json(&lbs)?;
    } else if a.quiet {
        lbs.iter().for_each(|lb| print_line(&lb.id));
    } else {
        // Names are a nicety: without the endpoint list the backends show as short IDs.
        let endpoints: Vec<HostComputeEndpoint> = client.get("/endpoints").unwrap_or_default();
        let dir = Directory { endpoints, namespaces: Vec::new(), networks: Vec::new() };
        print_rows(&ctx.format, LB_COLUMNS, &lb_rows(&lbs, |id| dir.label(id)))?;
    }
    Ok(0)
}

pub fn inspect(ctx: &Ctx, names: &[String]) -> Result<i32> {
    inspect_objects::<HostComputeLoadBalancer>(ctx, names)
}

pub fn rm(ctx: &Ctx, names: &[String]) -> Result<i32> {
    remove_objects::<HostComputeLoadBalancer>(ctx, names)
}

/// `add-backend` and `rm-backend`: the new backend list, posted as the whole object.
fn change_backends(ctx: &Ctx, a: &LbBackendArgs, add: bool) -> Result<i32> {
    let client = ctx.client()?;
    let mut lb: HostComputeLoadBalancer = lookup(&client, &a.lb)?;
    let net = a.net.as_deref().map(|n| lookup::<HostComputeNetwork>(&client, n)).transpose()?;
    let dir = Directory::load(&client)?;
    let short = short_id(&lb.id);
    let mut done = Vec::new();
    for key in &a.endpoints {
        if add {
            let all: Vec<&HostComputeEndpoint> = dir.endpoints.iter().collect();
            let id = dir.resolve(key, key, net.as_ref(), &all)?;
            if lb.host_compute_endpoints.iter().any(|b| same_id(b, &id)) {
                return Err(CliError::invalid(format!("{key}: endpoint {} is already a backend of load balancer {short}", dir.label(&id))));
            }
            lb.host_compute_endpoints.push(id);
        } else {
            let backends: Vec<&HostComputeEndpoint> = lb.host_compute_endpoints.iter().filter_map(|b| dir.endpoints.iter().find(|e| same_id(b, &e.id))).collect();
            let id = dir.resolve(key, key, net.as_ref(), &backends)?;
            lb.host_compute_endpoints.retain(|b| !same_id(b, &id));
        }
        done.push(key);
    }
    let labels = FieldLabels { backends: lb.host_compute_endpoints.iter().map(|id| format!("backend {}", dir.label(id))).collect(), ..Default::default() };
    let path = object_path::<HostComputeLoadBalancer>(&lb.id);
    let updated: HostComputeLoadBalancer = client.post(&path, &lb).map_err(|e| name_the_flag(e, &labels))?;
    if ctx.json() {
        print_json(&updated)?;
    } else {
        let verb = if add { "added" } else { "removed" };
        let prep = if add { "to" } else { "from" };
        done.iter().for_each(|key| print_line(&format!("{verb} {key} {prep} load balancer {short}")));
    }
    Ok(0)
}

pub fn add_backend(ctx: &Ctx, a: &LbBackendArgs) -> Result<i32> {
    change_backends(ctx, a, true)
}

pub fn rm_backend(ctx: &Ctx, a: &LbBackendArgs) -> Result<i32> {
    change_backends(ctx, a, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{headers, render_table};
    use hns_api::{ErrorCode, LoadBalancerPortMapping, NamespaceResource};

    fn ep(id: &str, name: &str, net: &str, ns: &str) -> HostComputeEndpoint {
        HostComputeEndpoint { id: id.into(), name: name.into(), host_compute_network: net.into(), host_compute_namespace: ns.into(), ..Default::default() }
    }

    fn dir() -> Directory {
        Directory {
            endpoints: vec![
                ep("aaaa0000-0000-0000-0000-000000000001", "web1", "nat", "11110000-0000-0000-0000-000000000001"),
                ep("bbbb0000-0000-0000-0000-000000000002", "app", "nat", "22220000-0000-0000-0000-000000000002"),
                ep("cccc0000-0000-0000-0000-000000000003", "app", "back", "22220000-0000-0000-0000-000000000002"),
                ep("dddd0000-0000-0000-0000-000000000004", "", "nat", ""),
            ],
            namespaces: vec![
                HostComputeNamespace { id: "11110000-0000-0000-0000-000000000001".into(), name: "one".into(), ..Default::default() },
                HostComputeNamespace {
                    id: "22220000-0000-0000-0000-000000000002".into(),
                    name: "two".into(),
                    resources: vec![NamespaceResource { kind: "Endpoint".into(), data: serde_json::json!({"ID": "bbbb0000-0000-0000-0000-000000000002"}) }],
                    ..Default::default()
                },
            ],
            networks: vec![
                HostComputeNetwork { id: "nat".into(), name: "nat".into(), ..Default::default() },
                HostComputeNetwork { id: "back".into(), name: "back".into(), ..Default::default() },
            ],
        }
    }

    #[test]
    fn backends_by_endpoint_container_or_prefix() {
        let d = dir();
        let all: Vec<&HostComputeEndpoint> = d.endpoints.iter().collect();
        let r = |key: &str, net: Option<&str>| {
            let n = net.map(|n| d.networks.iter().find(|x| x.name == n).unwrap());
            d.resolve(key, &format!("--backend {key}"), n, &all)
        };
        assert_eq!(r("web1", None).unwrap(), "aaaa0000-0000-0000-0000-000000000001");
        assert_eq!(r("one", None).unwrap(), "aaaa0000-0000-0000-0000-000000000001", "a container's only endpoint");
        assert_eq!(r("AAAA0000-0000-0000-0000-000000000001", None).unwrap(), "aaaa0000-0000-0000-0000-000000000001");
        assert_eq!(r("dddd0000", None).unwrap(), "dddd0000-0000-0000-0000-000000000004", "an ID prefix");
        assert_eq!(r("app", Some("back")).unwrap(), "cccc0000-0000-0000-0000-000000000003");
        assert_eq!(r("two", Some("back")).unwrap(), "cccc0000-0000-0000-0000-000000000003");
        assert_eq!(r("app", None).unwrap_err().render(), "Error: --backend app: endpoints named app are on networks nat, back; pick one with --net");
        assert!(r("two", None).unwrap_err().render().contains("container two has endpoints on networks nat, back; pick one with --net"));
        assert_eq!(r("ghost", None).unwrap_err().render(), "Error: --backend ghost: no endpoint or container named ghost (hnsctl endpoint ls, hnsctl ps -a)");
        assert_eq!(r("web1", Some("back")).unwrap_err().render(), "Error: --backend web1: endpoint web1 is on network nat, not back");
    }

    #[test]
    fn rm_backend_looks_among_the_backends_only() {
        let d = dir();
        let backends: Vec<&HostComputeEndpoint> = d.endpoints.iter().filter(|e| e.id.starts_with("cccc")).collect();
        // The container has two endpoints; only one is a backend, so its name is enough.
        assert_eq!(d.resolve("two", "two", None, &backends).unwrap(), "cccc0000-0000-0000-0000-000000000003");
        assert_eq!(d.resolve("app", "app", None, &backends).unwrap(), "cccc0000-0000-0000-0000-000000000003");
        assert_eq!(d.resolve("web1", "web1", None, &backends).unwrap_err().render(), "Error: web1: web1 is not a backend of the load balancer; its backends: app");
    }

    #[test]
    fn api_fields_are_named_by_their_flag() {
        let labels = FieldLabels { backends: vec!["--backend a".into(), "--backend b".into()], ports: vec!["--port tcp/80".into()], ..Default::default() };
        let e = name_the_flag(CliError::Api(ApiError::field(ErrorCode::InvalidParameter, "HostComputeEndpoints[1]", "endpoint b has no IPv6 address")), &labels);
        assert_eq!(e.render(), "Error: --backend b: endpoint b has no IPv6 address (INVALID_PARAMETER)\n  field: HostComputeEndpoints[1]");
        let e = name_the_flag(CliError::Api(ApiError::field(ErrorCode::InvalidParameter, "PortMappings[0].Flags", "x")), &labels);
        assert!(e.render().starts_with("Error: --port tcp/80: x"));
        let e = name_the_flag(CliError::Api(ApiError::field(ErrorCode::InvalidParameter, "Flags", "y")), &labels);
        assert!(e.render().starts_with("Error: y"));
    }

    #[test]
    fn lb_table() {
        let d = dir();
        let lb = HostComputeLoadBalancer {
            id: "5A3D0F6E-9C1B-4B2A-8E7F-001122334455".into(),
            host_compute_endpoints: vec!["aaaa0000-0000-0000-0000-000000000001".into(), "dddd0000-0000-0000-0000-000000000004".into()],
            frontend_vips: vec!["10.96.0.10".into()],
            port_mappings: vec![LoadBalancerPortMapping { protocol: 6, internal_port: 8080, external_port: 80, flags: LB_PM_ILB, ..Default::default() }],
            ..Default::default()
        };
        let text = render_table(&headers(LB_COLUMNS), &lb_rows(&[lb], |id| d.label(id)));
        let expected = "\
ID             VIPS         PORTS         BACKENDS            FLAGS
5a3d0f6e9c1b   10.96.0.10   tcp/80:8080   web1,dddd00000000   internal
";
        assert_eq!(text, expected);
    }
}
