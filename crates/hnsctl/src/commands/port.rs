//! `hnsctl port ls|add|rm`: port mappings (WinNAT static mappings) of containers.
//!
//! A mapping is a `PortMapping` policy of one endpoint. `add` and `rm` send a `ResourceType:
//! Policy` modify request to that endpoint and print the mappings that the endpoint gained or
//! lost, comparing its policies before and after (so `add` shows the host ports hnsd chose and
//! `rm` the container port of what it removed). `ls` shows `GET /portmappings`.

use hns_api::{
    HostComputeEndpoint, HostComputeNamespace, HostComputeNetwork, ModifyRequest, PolicyRequest, PortMappingInfo, PortMappingSettings,
    RequestType, ResourceType,
};

use super::{Ctx, endpoints_of, find, id_has_prefix, lookup, looks_like_id_prefix, network_name, object_path, on_network};
use crate::client::Client;
use crate::error::{CliError, Result};
use crate::output::{print_json, print_line, print_rows, same_id, short_id};
use crate::template::Column;
use crate::portspec::{self, host_address, mappings_in, parse_private_port, parse_publish, protocol_name};
use crate::published::{Families, Published, published_all};
use crate::{PortArgs, PortLsArgs, PortShowArgs};

pub const PORT_COLUMNS: &[Column] = &[
    Column::new("ID", "ID"),
    Column::new("CONTAINER", "Container"),
    Column::new("PROTOCOL", "Protocol"),
    Column::new("EXTERNAL IP", "ExternalIP"),
    Column::new("EXTERNAL PORT", "ExternalPort"),
    Column::new("INTERNAL IP", "InternalIP"),
    Column::new("INTERNAL PORT", "InternalPort"),
    Column::new("REMOTE PREFIX", "RemotePrefix"),
    Column::new("ACTIVE", "Active"),
];

/// The ID column: the endpoint's short ID, the protocol and the host side, e.g.
/// `0b1c2d3e4f50/tcp/8080`, or `0b1c2d3e4f50/tcp/127.0.0.1:8080` when bound to an address.
pub fn mapping_id(info: &PortMappingInfo) -> String {
    let ep = short_id(&info.endpoint_id);
    let proto = info.protocol.to_ascii_lowercase();
    if info.external_ip.is_empty() || info.external_ip == "0.0.0.0" {
        format!("{ep}/{proto}/{}", info.external_port)
    } else {
        format!("{ep}/{proto}/{}:{}", host_address(&info.external_ip), info.external_port)
    }
}

fn looks_like_guid(s: &str) -> bool {
    s.chars().filter(char::is_ascii_hexdigit).count() == 32 && s.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, '-' | '{' | '}'))
}

/// The CONTAINER column: the namespace's name (its short ID when hnsd gave the ID), else the
/// endpoint's name or short ID (an endpoint that is not attached).
pub fn container_label(info: &PortMappingInfo) -> String {
    if !info.namespace.is_empty() {
        if looks_like_guid(&info.namespace) { short_id(&info.namespace) } else { info.namespace.clone() }
    } else if !info.endpoint_name.is_empty() {
        info.endpoint_name.clone()
    } else {
        short_id(&info.endpoint_id)
    }
}

pub fn port_rows(infos: &[PortMappingInfo]) -> Vec<Vec<String>> {
    infos
        .iter()
        .map(|i| {
            vec![
                mapping_id(i),
                container_label(i),
                i.protocol.to_ascii_uppercase(),
                i.external_ip.clone(),
                i.external_port.to_string(),
                i.internal_ip.clone(),
                i.internal_port.to_string(),
                i.remote_prefix.clone(),
                if i.active { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect()
}

/// What `port ls CONTAINER` keeps: the name as given, plus the names and IDs of the namespace
/// and endpoint it resolved to.
#[derive(Debug, Default)]
pub struct Selection {
    pub key: String,
    pub names: Vec<String>,
    pub ids: Vec<String>,
}

impl Selection {
    pub fn new(key: &str, ns: Option<&HostComputeNamespace>, ep: Option<&HostComputeEndpoint>) -> Self {
        let mut s = Selection { key: key.to_owned(), names: vec![key.to_owned()], ids: Vec::new() };
        if let Some(ns) = ns {
            s.names.push(ns.name.clone());
            s.ids.push(ns.id.clone());
            s.ids.extend(ns.endpoint_ids());
        }
        if let Some(ep) = ep {
            s.names.push(ep.name.clone());
            s.ids.push(ep.id.clone());
        }
        s.names.retain(|n| !n.is_empty());
        s
    }

    pub fn selects(&self, info: &PortMappingInfo) -> bool {
        let named = |v: &str| !v.is_empty() && self.names.iter().any(|n| n == v);
        let ided = |v: &str| self.ids.iter().any(|id| same_id(id, v));
        let prefixed = |v: &str| looks_like_id_prefix(&self.key) && id_has_prefix(v, &self.key);
        named(&info.namespace)
            || named(&info.endpoint_name)
            || ided(&info.namespace)
            || ided(&info.endpoint_id)
            || prefixed(&info.namespace)
            || prefixed(&info.endpoint_id)
    }
}

fn no_such(key: &str) -> CliError {
    CliError::invalid(format!("no container (namespace) or endpoint named {key}"))
}

pub fn ls(ctx: &Ctx, a: &PortLsArgs) -> Result<i32> {
    let client = ctx.client()?;
    let mut infos: Vec<PortMappingInfo> = client.get("/portmappings")?;
    if let Some(key) = &a.container {
        let ns = find::<HostComputeNamespace>(&client, key)?;
        let ep = if ns.is_none() { find::<HostComputeEndpoint>(&client, key)? } else { None };
        let selection = Selection::new(key, ns.as_ref(), ep.as_ref());
        infos.retain(|i| selection.selects(i));
        if infos.is_empty() && ns.is_none() && ep.is_none() {
            return Err(no_such(key));
        }
    }
    if ctx.json() {
        print_json(&infos)?;
    } else {
        print_rows(&ctx.format, PORT_COLUMNS, &port_rows(&infos))?;
    }
    Ok(0)
}

/// The modify request that adds or removes mappings.
pub fn modify_request(request_type: RequestType, mappings: &[PortMappingSettings]) -> ModifyRequest {
    let settings = PolicyRequest { policies: mappings.iter().map(portspec::policy).collect() };
    ModifyRequest {
        resource_type: ResourceType::Policy,
        request_type,
        resource_uri: String::new(),
        settings: serde_json::to_value(settings).unwrap_or_default(),
    }
}

/// The specs of `port rm`: each must name its host port, which is what hnsd matches on.
pub fn removal_mappings(specs: &[String]) -> Result<Vec<PortMappingSettings>> {
    let mut all = Vec::new();
    for spec in specs {
        let mappings = parse_publish(spec).map_err(CliError::invalid)?;
        if mappings.iter().any(|m| m.external_port == 0) {
            return Err(CliError::invalid(format!(
                "cannot remove {spec:?}: say which host port to remove: HOSTPORT:CPORT (or HOSTIP:HOSTPORT:CPORT for a bound one)"
            )));
        }
        all.extend(mappings);
    }
    Ok(all)
}

/// Distinct network names of some endpoints, in order.
fn network_names(eps: &[&HostComputeEndpoint], networks: &[HostComputeNetwork]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for ep in eps {
        let name = network_name(&ep.host_compute_network, networks);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn net_label(net: &HostComputeNetwork) -> &str {
    if net.name.is_empty() { &net.id } else { &net.name }
}

/// The endpoint of container `label` that gets the mappings: its only one, or its one on
/// `wanted` (`--net`).
pub fn pick_endpoint<'a>(
    label: &str,
    eps: &[&'a HostComputeEndpoint],
    networks: &[HostComputeNetwork],
    wanted: Option<&HostComputeNetwork>,
) -> Result<&'a HostComputeEndpoint> {
    if eps.is_empty() {
        return Err(CliError::invalid(format!(
            "container {label} has no endpoint; port mappings need a network (hnsctl network connect NETWORK {label})"
        )));
    }
    let chosen: Vec<&HostComputeEndpoint> = match wanted {
        Some(net) => eps.iter().copied().filter(|ep| on_network(ep, net)).collect(),
        None => eps.to_vec(),
    };
    let names = network_names(eps, networks);
    match (chosen.len(), wanted) {
        (1, _) => Ok(chosen[0]),
        (0, Some(net)) => Err(CliError::invalid(format!(
            "container {label} has no endpoint on network {}; its networks: {}",
            net_label(net),
            names.join(", ")
        ))),
        (_, None) if names.len() > 1 => {
            Err(CliError::invalid(format!("container {label} has endpoints on networks {}; pick one with --net", names.join(", "))))
        }
        (n, _) => Err(CliError::invalid(format!(
            "container {label} has {n} endpoints on network {}; give the endpoint's name or ID instead of the container",
            network_names(&chosen, networks).join(", ")
        ))),
    }
}

/// The endpoint that `CONTAINER` (a namespace, else an endpoint) and `--net` designate.
fn target_endpoint(client: &Client, key: &str, net: Option<&str>) -> Result<HostComputeEndpoint> {
    let wanted = net.map(|n| lookup::<HostComputeNetwork>(client, n)).transpose()?;
    if let Some(ns) = find::<HostComputeNamespace>(client, key)? {
        let all: Vec<HostComputeEndpoint> = client.get("/endpoints")?;
        let networks: Vec<HostComputeNetwork> = client.get("/networks").unwrap_or_default();
        return pick_endpoint(key, &endpoints_of(&ns, &all), &networks, wanted.as_ref()).cloned();
    }
    let ep = find::<HostComputeEndpoint>(client, key)?.ok_or_else(|| no_such(key))?;
    if let Some(net) = &wanted
        && !on_network(&ep, net)
    {
        let networks: Vec<HostComputeNetwork> = client.get("/networks").unwrap_or_default();
        return Err(CliError::invalid(format!(
            "endpoint {key} is on network {}, not {}",
            network_name(&ep.host_compute_network, &networks),
            net_label(net)
        )));
    }
    Ok(ep)
}

/// The mappings `port add` made or `port rm` removed, and the address families of their
/// endpoint (an unbound mapping is published on each).
#[derive(Debug)]
pub struct Changed {
    pub mappings: Vec<PortMappingSettings>,
    pub families: Families,
}

/// Sends the modify request; the endpoint's mappings before and after it, and its families.
fn change(
    client: &Client,
    a: &PortArgs,
    request_type: RequestType,
    mappings: &[PortMappingSettings],
) -> Result<(Vec<PortMappingSettings>, Vec<PortMappingSettings>, Families)> {
    let ep = target_endpoint(client, &a.container, a.net.as_deref())?;
    let path = object_path::<HostComputeEndpoint>(&ep.id);
    let updated = match client.modify_reply::<HostComputeEndpoint>(&path, &modify_request(request_type, mappings))? {
        Some(updated) => updated,
        None => client.get(&path)?,
    };
    Ok((mappings_in(&ep.policies), mappings_in(&updated.policies), Families::of(&updated)))
}

/// The mappings `port add` made, with the host ports hnsd chose. The specs are checked before
/// hnsd is asked anything.
pub fn add_mappings(client: &Client, a: &PortArgs) -> Result<Changed> {
    let mappings = portspec::parse_all(&a.specs).map_err(CliError::invalid)?;
    let (before, after, families) = change(client, a, RequestType::Add, &mappings)?;
    Ok(Changed { mappings: portspec::difference(&after, &before), families })
}

/// The mappings `port rm` removed.
pub fn remove_mappings(client: &Client, a: &PortArgs) -> Result<Changed> {
    let mappings = removal_mappings(&a.specs)?;
    let (before, after, families) = change(client, a, RequestType::Remove, &mappings)?;
    Ok(Changed { mappings: portspec::difference(&before, &after), families })
}

/// The lines `port add` (`prefix` empty) and `port rm` (`removed `) print: one
/// `80/tcp -> 0.0.0.0:8080` per host binding.
pub fn change_lines(prefix: &str, changed: &Changed) -> Vec<String> {
    published_all(&changed.mappings, changed.families).iter().map(|p| format!("{prefix}{}", p.line())).collect()
}

/// The changed mappings as lines, or their settings as JSON.
fn show(ctx: &Ctx, prefix: &str, changed: &Changed) -> Result<i32> {
    if ctx.json() {
        print_json(&changed.mappings)?;
    } else {
        change_lines(prefix, changed).iter().for_each(|l| print_line(l));
    }
    Ok(0)
}

pub fn add(ctx: &Ctx, a: &PortArgs) -> Result<i32> {
    let added = add_mappings(&ctx.client()?, a)?;
    show(ctx, "", &added)
}

pub fn rm(ctx: &Ctx, a: &PortArgs) -> Result<i32> {
    let removed = remove_mappings(&ctx.client()?, a)?;
    show(ctx, "removed ", &removed)
}

/// The endpoints `CONTAINER` designates: a namespace's, else the endpoint of that name or ID.
fn container_endpoints(client: &Client, key: &str) -> Result<Vec<HostComputeEndpoint>> {
    if let Some(ns) = find::<HostComputeNamespace>(client, key)? {
        let all: Vec<HostComputeEndpoint> = client.get("/endpoints")?;
        return Ok(endpoints_of(&ns, &all).into_iter().cloned().collect());
    }
    Ok(vec![find::<HostComputeEndpoint>(client, key)?.ok_or_else(|| no_such(key))?])
}

/// The host bindings of some endpoints' mappings, those of one container port when `wanted`
/// (port, protocol number) is given.
pub fn bindings(endpoints: &[HostComputeEndpoint], wanted: Option<(u16, u32)>) -> Vec<Published> {
    endpoints
        .iter()
        .flat_map(|ep| {
            let mine: Vec<PortMappingSettings> = mappings_in(&ep.policies)
                .into_iter()
                .filter(|m| wanted.is_none_or(|(port, proto)| m.internal_port == port && m.protocol == proto))
                .collect();
            published_all(&mine, Families::of(ep))
        })
        .collect()
}

/// `hnsctl port CONTAINER [PRIVATE_PORT[/PROTO]]`, like `docker port`: every mapping as
/// `80/tcp -> 0.0.0.0:8080`, or only the host sides of one container port.
pub fn show_container(ctx: &Ctx, a: &PortShowArgs) -> Result<i32> {
    let container = a.container.as_deref().ok_or_else(|| CliError::invalid("give a CONTAINER, or a subcommand (ls, add, rm)"))?;
    let wanted = a.private_port.as_deref().map(parse_private_port).transpose().map_err(CliError::invalid)?;
    let client = ctx.client()?;
    let found = bindings(&container_endpoints(&client, container)?, wanted);
    if let Some((port, proto)) = wanted
        && found.is_empty()
    {
        return Err(CliError::invalid(format!("no public port {port}/{} published for {container}", protocol_name(proto))));
    }
    if ctx.json() {
        print_json(&found)?;
    } else if wanted.is_some() {
        found.iter().for_each(|p| print_line(&p.host_side()));
    } else {
        found.iter().for_each(|p| print_line(&p.line()));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::{fake_daemon, reply};
    use crate::output::{headers, render_table};
    use crate::portspec::{TCP, UDP};
    use hns_api::{NamespaceResource, Policy};

    fn info(ep: &str, ns: &str, proto: &str, ext_ip: &str, ext: u16, int: u16, active: bool) -> PortMappingInfo {
        PortMappingInfo {
            id: format!("{ep}/{}/{ext_ip}/{ext}", proto.to_ascii_lowercase()),
            endpoint_id: ep.into(),
            endpoint_name: "web".into(),
            network_name: "mynat".into(),
            namespace: ns.into(),
            protocol: proto.into(),
            external_ip: ext_ip.into(),
            external_port: ext,
            internal_ip: "172.30.0.2".into(),
            internal_port: int,
            remote_prefix: "0.0.0.0/0".into(),
            active,
        }
    }

    fn m(protocol: u32, internal_port: u16, external_port: u16, vip: &str) -> PortMappingSettings {
        PortMappingSettings { protocol, internal_port, external_port, vip: vip.into(), ..Default::default() }
    }

    const EP1: &str = "0B1C2D3E-4F50-6172-8394-A5B6C7D8E9F0";
    const EP2: &str = "1b1c2d3e-4f50-6172-8394-a5b6c7d8e9f1";
    const NS1: &str = "aaaa1111-0000-0000-0000-000000000001";

    #[test]
    fn port_table() {
        let mut detached = info(EP2, "", "UDP", "::1", 5353, 53, false);
        detached.endpoint_name = "lonely".into();
        let infos = vec![
            info(EP1, "web", "TCP", "0.0.0.0", 8080, 80, true),
            info(EP1, NS1, "TCP", "127.0.0.1", 49153, 443, true),
            detached,
        ];
        let expected = "\
ID                                 CONTAINER      PROTOCOL   EXTERNAL IP   EXTERNAL PORT   INTERNAL IP   INTERNAL PORT   REMOTE PREFIX   ACTIVE
0b1c2d3e4f50/tcp/8080              web            TCP        0.0.0.0       8080            172.30.0.2    80              0.0.0.0/0       yes
0b1c2d3e4f50/tcp/127.0.0.1:49153   aaaa11110000   TCP        127.0.0.1     49153           172.30.0.2    443             0.0.0.0/0       yes
1b1c2d3e4f50/udp/[::1]:5353        lonely         UDP        ::1           5353            172.30.0.2    53              0.0.0.0/0       no
";
        assert_eq!(render_table(&headers(PORT_COLUMNS), &port_rows(&infos)), expected);
        assert_eq!(render_table(&headers(PORT_COLUMNS), &[]).lines().count(), 1);
    }

    #[test]
    fn selection_by_container_or_endpoint() {
        let by_name = info(EP1, "web", "TCP", "0.0.0.0", 8080, 80, true);
        let mut by_id = info(EP1, NS1, "TCP", "0.0.0.0", 8081, 81, true);
        by_id.endpoint_name = String::new();
        let mut other = info(EP2, "db", "TCP", "0.0.0.0", 5432, 5432, true);
        other.endpoint_name = "db".into();

        // Unresolved: the name as given, or an ID prefix.
        let s = Selection::new("web", None, None);
        assert!(s.selects(&by_name) && !s.selects(&by_id) && !s.selects(&other));
        let s = Selection::new("aaaa1111", None, None);
        assert!(!s.selects(&by_name) && s.selects(&by_id));
        let s = Selection::new("1b1c2d3e4f50", None, None);
        assert!(s.selects(&other) && !s.selects(&by_name));

        // Resolved to the namespace: its name, its ID and its endpoints all count.
        let ns = HostComputeNamespace {
            id: NS1.into(),
            name: "web".into(),
            resources: vec![NamespaceResource { kind: "Endpoint".into(), data: serde_json::json!({"ID": EP1}) }],
            ..Default::default()
        };
        let s = Selection::new("aaaa11110000", Some(&ns), None);
        assert!(s.selects(&by_name) && s.selects(&by_id) && !s.selects(&other));

        // Resolved to an endpoint.
        let ep = HostComputeEndpoint { id: EP2.into(), name: "db".into(), ..Default::default() };
        let s = Selection::new("db", None, Some(&ep));
        assert!(s.selects(&other) && !s.selects(&by_name));
        assert!(!Selection::new("", None, None).selects(&PortMappingInfo::default()));
    }

    #[test]
    fn bindings_of_a_container() {
        let dual = HostComputeEndpoint {
            ip_configurations: vec![
                hns_api::IpConfig { ip_address: "172.30.0.2".into(), ..Default::default() },
                hns_api::IpConfig { ip_address: "fd00::2".into(), ..Default::default() },
            ],
            policies: vec![portspec::policy(&m(TCP, 80, 8080, "")), portspec::policy(&m(UDP, 80, 5353, "127.0.0.1"))],
            ..Default::default()
        };
        let v4 = HostComputeEndpoint {
            ip_configurations: vec![hns_api::IpConfig { ip_address: "10.0.0.2".into(), ..Default::default() }],
            policies: vec![portspec::policy(&m(TCP, 443, 8443, ""))],
            ..Default::default()
        };
        let eps = [dual, v4];
        let lines = |wanted| bindings(&eps, wanted).iter().map(Published::line).collect::<Vec<_>>();
        assert_eq!(lines(None), vec!["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080", "80/udp -> 127.0.0.1:5353", "443/tcp -> 0.0.0.0:8443"]);
        assert_eq!(lines(Some((80, TCP))), vec!["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080"]);
        assert_eq!(lines(Some((80, UDP))), vec!["80/udp -> 127.0.0.1:5353"]);
        assert!(lines(Some((443, UDP))).is_empty());
    }

    #[test]
    fn modify_bodies() {
        let body = serde_json::to_value(modify_request(RequestType::Add, &[m(TCP, 80, 0, ""), m(UDP, 53, 5353, "127.0.0.1")])).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "ResourceType": "Policy",
                "RequestType": "Add",
                "Settings": {"Policies": [
                    {"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 0}},
                    {"Type": "PortMapping", "Settings": {"Protocol": 17, "InternalPort": 53, "ExternalPort": 5353, "VIP": "127.0.0.1"}}
                ]}
            })
        );
        let body = serde_json::to_value(modify_request(RequestType::Remove, &[m(TCP, 80, 8080, "")])).unwrap();
        assert_eq!(body["RequestType"], "Remove");
    }

    #[test]
    fn removal_needs_host_ports() {
        let specs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(removal_mappings(&specs(&["8080:80", "127.0.0.1:53:53/udp"])).unwrap(), vec![m(TCP, 80, 8080, ""), m(UDP, 53, 53, "127.0.0.1")]);
        assert_eq!(removal_mappings(&specs(&["8000-8001:80-81"])).unwrap().len(), 2);
        for spec in ["80", "127.0.0.1::80", "8000-8010:80", "80-81"] {
            let e = removal_mappings(&specs(&[spec])).unwrap_err();
            assert_eq!(e.exit_code(), 1);
            assert!(e.render().contains("say which host port to remove: HOSTPORT:CPORT"), "{spec}: {}", e.render());
        }
        let e = removal_mappings(&specs(&["8080:80", "x"])).unwrap_err().render();
        assert!(e.contains("invalid port mapping \"x\""), "{e}");
    }

    #[test]
    fn endpoint_choice() {
        let nets = vec![
            HostComputeNetwork { id: "11111111-0000-0000-0000-000000000001".into(), name: "a".into(), ..Default::default() },
            HostComputeNetwork { id: "22222222-0000-0000-0000-000000000002".into(), name: "b".into(), ..Default::default() },
        ];
        let ep = |id: &str, net: &str| HostComputeEndpoint { id: id.into(), host_compute_network: net.into(), ..Default::default() };
        let on_a = ep("e1", "11111111-0000-0000-0000-000000000001");
        let on_b = ep("e2", "b");
        let also_a = ep("e3", "a");

        assert_eq!(pick_endpoint("web", &[&on_a], &nets, None).unwrap().id, "e1");
        assert_eq!(pick_endpoint("web", &[&on_a, &on_b], &nets, Some(&nets[1])).unwrap().id, "e2");
        assert_eq!(pick_endpoint("web", &[&on_a, &on_b], &nets, Some(&nets[0])).unwrap().id, "e1");
        let e = pick_endpoint("web", &[&on_a, &on_b], &nets, None).unwrap_err().render();
        assert_eq!(e, "Error: container web has endpoints on networks a, b; pick one with --net");
        let e = pick_endpoint("web", &[&on_a], &nets, Some(&nets[1])).unwrap_err().render();
        assert_eq!(e, "Error: container web has no endpoint on network b; its networks: a");
        let e = pick_endpoint("web", &[], &nets, None).unwrap_err().render();
        assert!(e.contains("container web has no endpoint; port mappings need a network"), "{e}");
        let e = pick_endpoint("web", &[&on_a, &also_a], &nets, None).unwrap_err().render();
        assert!(e.contains("container web has 2 endpoints on network a; give the endpoint's name or ID"), "{e}");
        let e = pick_endpoint("web", &[&on_a, &also_a, &on_b], &nets, Some(&nets[0])).unwrap_err().render();
        assert!(e.contains("has 2 endpoints on network a"), "{e}");
    }

    fn endpoint_json(id: &str, ns: &str, net: &str, mappings: &[PortMappingSettings]) -> String {
        let ep = HostComputeEndpoint {
            id: id.into(),
            name: "web".into(),
            host_compute_network: net.into(),
            host_compute_namespace: ns.into(),
            policies: mappings.iter().map(portspec::policy).chain([Policy { kind: "OutBoundNAT".into(), settings: serde_json::Value::Null }]).collect(),
            ..Default::default()
        };
        serde_json::to_string(&ep).unwrap()
    }

    fn port_args(container: &str, specs: &[&str], net: Option<&str>) -> PortArgs {
        PortArgs { container: container.into(), specs: specs.iter().map(|s| s.to_string()).collect(), net: net.map(str::to_owned) }
    }

    fn body_of(request: &str) -> serde_json::Value {
        serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap()
    }

    #[test]
    fn add_over_the_socket() {
        let existing = m(TCP, 22, 2222, "");
        let ns = serde_json::json!({"ID": NS1, "Name": "web", "Resources": [{"Type": "Endpoint", "Data": {"ID": EP1}}]}).to_string();
        let before = endpoint_json(EP1, NS1, "mynat", std::slice::from_ref(&existing));
        let after = endpoint_json(EP1, NS1, "mynat", &[existing, m(TCP, 80, 49153, ""), m(UDP, 53, 5353, "127.0.0.1")]);
        let (path, server) = fake_daemon(vec![
            reply("200 OK", &ns),
            reply("200 OK", &format!("[{before}]")),
            reply("200 OK", r#"[{"ID":"n1","Name":"mynat"}]"#),
            reply("200 OK", &after),
        ]);
        let client = Client::new(&path).unwrap();
        let added = add_mappings(&client, &port_args("web", &["80", "127.0.0.1:5353:53/udp"], None)).unwrap();
        assert_eq!(added.mappings, vec![m(TCP, 80, 49153, ""), m(UDP, 53, 5353, "127.0.0.1")]);
        assert_eq!(change_lines("", &added), vec!["80/tcp -> 0.0.0.0:49153", "53/udp -> 127.0.0.1:5353"]);
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("GET /namespaces/web "), "{}", seen[0]);
        assert!(seen[1].starts_with("GET /endpoints "), "{}", seen[1]);
        assert!(seen[3].starts_with(&format!("POST /endpoints/{EP1} ")), "{}", seen[3]);
        assert_eq!(body_of(&seen[3]), serde_json::to_value(modify_request(RequestType::Add, &[m(TCP, 80, 0, ""), m(UDP, 53, 5353, "127.0.0.1")])).unwrap());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn rm_by_endpoint_name_with_an_empty_reply() {
        let kept = m(TCP, 22, 2222, "");
        let before = endpoint_json(EP1, "", "n1", &[m(TCP, 80, 8080, ""), kept.clone()]);
        let after = endpoint_json(EP1, "", "n1", &[kept]);
        let not_found = r#"{"code":"NAMESPACE_NOT_FOUND","message":"no namespace web"}"#;
        let (path, server) = fake_daemon(vec![
            reply("200 OK", r#"{"ID":"n1","Name":"mynat"}"#),
            reply("404 Not Found", not_found),
            reply("200 OK", &before),
            "HTTP/1.1 204 No Content\r\n\r\n".to_owned(),
            reply("200 OK", &after),
        ]);
        let client = Client::new(&path).unwrap();
        // The spec says container port 8080; hnsd matches on the host side, and the removed
        // mapping is shown as it was.
        let removed = remove_mappings(&client, &port_args("web", &["8080:8080"], Some("mynat"))).unwrap();
        assert_eq!(removed.mappings, vec![m(TCP, 80, 8080, "")]);
        assert_eq!(change_lines("removed ", &removed), vec!["removed 80/tcp -> 0.0.0.0:8080"]);
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("GET /networks/mynat "), "{}", seen[0]);
        assert!(seen[1].starts_with("GET /namespaces/web "), "{}", seen[1]);
        assert!(seen[2].starts_with("GET /endpoints/web "), "{}", seen[2]);
        assert!(seen[3].starts_with(&format!("POST /endpoints/{EP1} ")), "{}", seen[3]);
        assert_eq!(body_of(&seen[3])["RequestType"], "Remove");
        assert!(seen[4].starts_with(&format!("GET /endpoints/{EP1} ")), "{}", seen[4]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn errors_from_hnsd_are_passed_on() {
        let ep = endpoint_json(EP1, "", "n1", &[]);
        let not_found = r#"{"code":"NAMESPACE_NOT_FOUND","message":"no namespace web"}"#;
        let (path, server) = fake_daemon(vec![
            reply("404 Not Found", not_found),
            reply("200 OK", &ep),
            reply("404 Not Found", r#"{"code":"POLICY_NOT_FOUND","message":"no TCP mapping of host port 8080"}"#),
        ]);
        let client = Client::new(&path).unwrap();
        let e = remove_mappings(&client, &port_args("web", &["8080:80"], None)).unwrap_err();
        assert_eq!(e.render(), "Error: no TCP mapping of host port 8080 (POLICY_NOT_FOUND)");
        assert_eq!(e.exit_code(), 1);
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn unknown_container() {
        let not_found = |what: &str| reply("404 Not Found", &format!(r#"{{"code":"NOT_FOUND","message":"no {what}"}}"#));
        let (path, server) = fake_daemon(vec![not_found("namespace"), not_found("endpoint")]);
        let client = Client::new(&path).unwrap();
        let e = add_mappings(&client, &port_args("ghost", &["80"], None)).unwrap_err();
        assert_eq!(e.render(), "Error: no container (namespace) or endpoint named ghost");
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
