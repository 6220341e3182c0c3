//! `hnsctl network create|ls|inspect|rm|connect|disconnect`.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use hns_api::{HostComputeEndpoint, HostComputeNamespace, HostComputeNetwork, Ipam, IpamType, NetworkType, Policy, Route, Subnet};

use super::{Ctx, endpoints_of, for_each_name, lookup, object_path, on_network, static_addresses};
use crate::client::Client;
use crate::error::{CliError, Result};
use crate::output::{self, NETWORK_COLUMNS, print_json, print_line};
use crate::{ConnectArgs, DisconnectArgs, LsArgs, NetworkCreateArgs};

use hns_api::windowsshim::{
    DNS_SERVERS as OPT_DNS_SERVERS, DNS_SUFFIX as OPT_DNS_SUFFIX, INTERFACE as OPT_INTERFACE, NETWORK_NAME as OPT_NETWORK_NAME, PREFIX as OPT_PREFIX,
    VLAN as OPT_VLAN, VSID as OPT_VSID,
};
const KNOWN_OPTS: &[&str] = &[OPT_NETWORK_NAME, OPT_DNS_SUFFIX, OPT_DNS_SERVERS, OPT_INTERFACE, OPT_VLAN, OPT_VSID];

/// A parsed CIDR: address and prefix length.
type Cidr = (IpAddr, u8);

fn parse_cidr(s: &str) -> Option<Cidr> {
    let (addr, len) = s.split_once('/')?;
    let ip: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// True when `ip` lies in the network `net`.
fn cidr_contains(net: Cidr, ip: IpAddr) -> bool {
    let (base, len) = net;
    match (base, ip) {
        (IpAddr::V4(b), IpAddr::V4(a)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            u32::from(b) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(b), IpAddr::V6(a)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            u128::from(b) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// The subnet (index) that contains `ip`, among those that parse.
fn containing_subnet(parsed: &[Option<Cidr>], ip: IpAddr, min_len: u8) -> Option<usize> {
    parsed.iter().position(|p| p.is_some_and(|net| net.1 <= min_len && cidr_contains(net, ip)))
}

fn isolation_policy(kind: &str, key: &str, value: &str) -> Result<Policy> {
    let id: u32 = value
        .parse()
        .map_err(|_| CliError::invalid(format!("invalid -o {key}={value}: expected a number")))?;
    Ok(Policy { kind: kind.into(), settings: json!({ "IsolationId": id }) })
}

/// Builds the body of `POST /networks` from the options of `network create`.
///
/// A driver name that is not an HNS network type is sent as it is, so hnsd names the error.
pub fn create_body(a: &NetworkCreateArgs) -> Result<serde_json::Value> {
    if a.driver.eq_ignore_ascii_case("none") {
        return Err(CliError::invalid("there is no \"none\" network to create: for a container with only a loopback interface, use `hnsctl run --net none`"));
    }
    let known_type = NetworkType::parse(&a.driver);
    let mut net = HostComputeNetwork { name: a.name.clone(), kind: known_type, internal: a.internal, outbound_nat: a.outbound_nat, ..Default::default() };

    let mut subnets: Vec<Subnet> =
        a.subnet.iter().map(|s| Subnet { ip_address_prefix: s.clone(), ..Default::default() }).collect();
    // Subnets that do not parse are still sent: hnsd explains what is wrong with them.
    let parsed: Vec<Option<Cidr>> = a.subnet.iter().map(|s| parse_cidr(s)).collect();
    let listed = a.subnet.join(", ");

    if a.gateway.len() > a.subnet.len() {
        return Err(CliError::invalid(format!(
            "{} --gateway for {} --subnet: each --gateway belongs to the --subnet at the same position",
            a.gateway.len(),
            a.subnet.len()
        )));
    }
    for (i, gw) in a.gateway.iter().enumerate() {
        let ip: IpAddr = gw.parse().map_err(|_| CliError::invalid(format!("invalid --gateway {gw:?}: not an IP address")))?;
        if let Some((base, _)) = parsed[i]
            && base.is_ipv4() != ip.is_ipv4()
        {
            return Err(CliError::invalid(format!(
                "--gateway {gw} is {} but the --subnet at the same position, {}, is {}",
                family(ip),
                a.subnet[i],
                family(base)
            )));
        }
        let default = if ip.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
        subnets[i].routes.push(Route { next_hop: gw.clone(), destination_prefix: default.into(), metric: 0 });
    }

    for range in &a.ip_range {
        let (base, len) = parse_cidr(range)
            .ok_or_else(|| CliError::invalid(format!("invalid --ip-range {range:?}: expected a CIDR like 172.30.128.0/17")))?;
        let i = containing_subnet(&parsed, base, len)
            .ok_or_else(|| CliError::invalid(format!("--ip-range {range} is not inside any --subnet ({})", none_if_empty(&listed))))?;
        if !subnets[i].ip_range.is_empty() {
            return Err(CliError::invalid(format!(
                "subnet {} has two --ip-range: {} and {range}",
                a.subnet[i], subnets[i].ip_range
            )));
        }
        subnets[i].ip_range = range.clone();
    }

    for aux in &a.aux_address {
        let (name, addr) = aux
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| CliError::invalid(format!("invalid --aux-address {aux:?}: expected NAME=IP")))?;
        let ip: IpAddr =
            addr.parse().map_err(|_| CliError::invalid(format!("invalid --aux-address {aux:?}: {addr:?} is not an IP address")))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let i = containing_subnet(&parsed, ip, max)
            .ok_or_else(|| CliError::invalid(format!("--aux-address {aux} is not inside any --subnet ({})", none_if_empty(&listed))))?;
        if subnets[i].auxiliary_addresses.insert(name.to_owned(), addr.to_owned()).is_some() {
            return Err(CliError::invalid(format!("--aux-address name {name} is given twice for subnet {}", a.subnet[i])));
        }
    }

    let mut subnet_policies = Vec::new();
    for opt in &a.opt {
        let (key, value) = opt
            .split_once('=')
            .ok_or_else(|| CliError::invalid(format!("invalid -o {opt:?}: expected KEY=VALUE")))?;
        let key_lc = key.to_ascii_lowercase();
        match key_lc.as_str() {
            OPT_NETWORK_NAME => {
                if value.is_empty() {
                    return Err(CliError::invalid(format!("-o {key} needs a name")));
                }
                net.name = value.to_owned();
            }
            OPT_DNS_SUFFIX => net.dns.get_or_insert_with(Default::default).domain = value.to_owned(),
            OPT_DNS_SERVERS => {
                net.dns.get_or_insert_with(Default::default).server_list =
                    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
            }
            OPT_INTERFACE => net
                .policies
                .push(Policy { kind: "NetAdapterName".into(), settings: json!({ "NetworkAdapterName": value }) }),
            OPT_VLAN => subnet_policies.push(isolation_policy("VLAN", key, value)?),
            OPT_VSID => subnet_policies.push(isolation_policy("VSID", key, value)?),
            _ => {
                let hint = if key_lc.starts_with(OPT_PREFIX) { "" } else { " (options start with com.docker.network.windowsshim.)" };
                return Err(CliError::invalid(format!("unknown option {key}{hint}; known: {}", KNOWN_OPTS.join(", "))));
            }
        }
    }
    // Last, so the indices of hnsd's errors about them are known (see `create`).
    for rule in &a.acl {
        let r = super::policy::parse_rule(rule).map_err(|e| CliError::invalid(format!("--acl {rule:?}: {e}")))?;
        net.policies.push(Policy { kind: "NetworkACL".into(), settings: super::policy::settings(&r) });
    }
    if !subnet_policies.is_empty() {
        if subnets.is_empty() {
            return Err(CliError::invalid("the vlanid and vsid options apply to subnets: give a --subnet"));
        }
        for s in &mut subnets {
            s.policies.extend(subnet_policies.iter().cloned());
        }
    }

    if !subnets.is_empty() {
        net.ipams = vec![Ipam { kind: IpamType::Static, subnets }];
    }
    let mut body = serde_json::to_value(&net).map_err(|e| CliError::local(format!("cannot encode the network: {e}")))?;
    if known_type.is_none() {
        body["Type"] = json!(a.driver);
    }
    Ok(body)
}

fn none_if_empty(s: &str) -> &str {
    if s.is_empty() { "none given" } else { s }
}

pub fn create(ctx: &Ctx, a: &NetworkCreateArgs) -> Result<i32> {
    let body = create_body(a)?;
    let client = ctx.client()?;
    // The NetworkACLs are the last policies: name their flag in hnsd's errors about them.
    let count = body["Policies"].as_array().map_or(0, Vec::len);
    let mut flags = vec![String::new(); count.saturating_sub(a.acl.len())];
    flags.extend(a.acl.iter().map(|r| format!("--acl {r:?}")));
    let net: HostComputeNetwork = client.post("/networks", &body).map_err(|e| crate::runpolicy::name_the_flag(e, &flags))?;
    if ctx.json() {
        print_json(&net)?;
    } else {
        print_line(&net.id);
    }
    Ok(0)
}

pub fn ls(ctx: &Ctx, a: &LsArgs) -> Result<i32> {
    let nets: Vec<HostComputeNetwork> = ctx.client()?.get("/networks")?;
    if ctx.json() {
        print_json(&nets)?;
    } else if a.quiet {
        nets.iter().for_each(|n| print_line(&n.id));
    } else {
        output::print_rows(&ctx.format, NETWORK_COLUMNS, &output::network_rows(&nets))?;
    }
    Ok(0)
}

/// Prints the objects found as one JSON array (always JSON, like `docker inspect`); the names
/// not found are reported and make the exit code 1.
pub fn inspect_objects<T: super::Object + serde::Serialize>(ctx: &Ctx, names: &[String]) -> Result<i32> {
    let client = ctx.client()?;
    let mut found = Vec::new();
    let code = for_each_name(names, |name| {
        found.push(lookup::<T>(&client, name)?);
        Ok(())
    });
    print_json(&found)?;
    Ok(code)
}

/// Deletes each named object, printing the name as given once it is gone.
pub fn remove_objects<T: super::Object>(ctx: &Ctx, names: &[String]) -> Result<i32> {
    let client = ctx.client()?;
    Ok(for_each_name(names, |name| {
        let obj = lookup::<T>(&client, name)?;
        client.delete(&object_path::<T>(obj.id()))?;
        print_line(name);
        Ok(())
    }))
}

pub fn inspect(ctx: &Ctx, names: &[String]) -> Result<i32> {
    inspect_objects::<HostComputeNetwork>(ctx, names)
}

pub fn rm(ctx: &Ctx, names: &[String]) -> Result<i32> {
    remove_objects::<HostComputeNetwork>(ctx, names)
}

/// An absolute form of `path` without resolving links (`/proc/PID/ns/net` must stay as it is).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    let cwd = std::env::current_dir().map_err(|e| CliError::local(format!("cannot read the current directory: {e}")))?;
    Ok(cwd.join(path))
}

fn text(path: &Path) -> Result<String> {
    path.to_str().map(str::to_owned).ok_or_else(|| CliError::invalid(format!("{} is not UTF-8", path.display())))
}

/// The known namespace whose network namespace is the file at `path` (same nsfs inode; the
/// same path also counts when the file cannot be read).
pub fn namespace_with_netns(client: &Client, path: &Path) -> Result<Option<HostComputeNamespace>> {
    let wanted = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let all: Vec<HostComputeNamespace> = client.get("/namespaces")?;
    Ok(all.into_iter().find(|ns| {
        if ns.net_ns_path.is_empty() {
            return false;
        }
        if Path::new(&ns.net_ns_path) == path {
            return true;
        }
        let theirs = std::fs::metadata(&ns.net_ns_path).ok().map(|m| (m.dev(), m.ino()));
        wanted.is_some() && theirs == wanted
    }))
}

/// The compartment for `--netns PATH`: the one hnsd already has for it, or a new one adopting
/// it. The flag tells whether it was created here.
fn adopt_netns(client: &Client, path: &Path, name: Option<&str>) -> Result<(HostComputeNamespace, bool)> {
    let path = absolute(path)?;
    if !path.exists() {
        return Err(CliError::invalid(format!("--netns {}: no such file", path.display())));
    }
    if let Some(ns) = namespace_with_netns(client, &path)? {
        if let Some(n) = name
            && !ns.name.is_empty()
            && ns.name != n
        {
            return Err(CliError::invalid(format!(
                "{} is already the compartment {} (not {n}); leave out --name or use that name",
                path.display(),
                ns.name
            )));
        }
        return Ok((ns, false));
    }
    let body = HostComputeNamespace { name: name.unwrap_or_default().to_owned(), net_ns_path: text(&path)?, ..Default::default() };
    let ns: HostComputeNamespace = client.post("/namespaces", &body)?;
    Ok((ns, true))
}

/// Refuses to connect a container to a network it is on already, unless the new endpoint is
/// given a name of its own (endpoint names are unique per network).
fn check_not_connected(client: &Client, ns: &HostComputeNamespace, net: &HostComputeNetwork, shown: &str) -> Result<()> {
    let endpoints: Vec<HostComputeEndpoint> = client.get("/endpoints")?;
    match endpoints_of(ns, &endpoints).into_iter().find(|ep| on_network(ep, net)) {
        Some(ep) => Err(CliError::invalid(format!(
            "container {shown} is already connected to network {} (endpoint {}); disconnect it first \
             (hnsctl network disconnect {} {shown}), or give a second endpoint a name of its own with --endpoint-name NAME",
            net.name,
            if ep.name.is_empty() { output::short_id(&ep.id) } else { ep.name.clone() },
            net.name
        ))),
        None => Ok(()),
    }
}

pub fn connect(ctx: &Ctx, a: &ConnectArgs) -> Result<i32> {
    // Everything that can be checked here first, so bad input leaves nothing behind.
    let ip_configurations = static_addresses(a.ip.as_deref(), a.ip6.as_deref())?;
    let client = ctx.client()?;
    let net = lookup::<HostComputeNetwork>(&client, &a.network)?;
    let (ns, created) = match (&a.container, &a.netns) {
        (Some(name), _) => {
            let ns = lookup::<HostComputeNamespace>(&client, name)?;
            if a.endpoint_name.is_none() {
                check_not_connected(&client, &ns, &net, name)?;
            }
            (ns, false)
        }
        (None, Some(path)) => adopt_netns(&client, path, a.name.as_deref())?,
        (None, None) => return Err(CliError::invalid("give a CONTAINER or --netns PATH")),
    };
    let body = HostComputeEndpoint {
        name: a.endpoint_name.clone().or_else(|| a.name.clone()).unwrap_or_else(|| ns.name.clone()),
        host_compute_network: net.id.clone(),
        host_compute_namespace: ns.id.clone(),
        ip_configurations,
        mac_address: a.mac_address.clone().unwrap_or_default(),
        aliases: a.alias.clone(),
        ..Default::default()
    };
    match client.post::<_, HostComputeEndpoint>("/endpoints", &body) {
        Ok(ep) => {
            if ctx.json() {
                print_json(&ep)?;
            }
            Ok(0)
        }
        Err(e) => {
            if created {
                let _ = client.delete(&object_path::<HostComputeNamespace>(&ns.id));
            }
            Err(e)
        }
    }
}

pub fn disconnect(ctx: &Ctx, a: &DisconnectArgs) -> Result<i32> {
    let client = ctx.client()?;
    let net = lookup::<HostComputeNetwork>(&client, &a.network)?;
    let (ns, shown) = match (&a.container, &a.netns) {
        (Some(name), _) => (lookup::<HostComputeNamespace>(&client, name)?, name.clone()),
        (None, Some(path)) => {
            let path = absolute(path)?;
            let ns = namespace_with_netns(&client, &path)?
                .ok_or_else(|| CliError::invalid(format!("no compartment has the network namespace {}", path.display())))?;
            (ns, path.display().to_string())
        }
        (None, None) => return Err(CliError::invalid("give a CONTAINER or --netns PATH")),
    };
    let endpoints: Vec<HostComputeEndpoint> = client.get("/endpoints")?;
    let on_net: Vec<&HostComputeEndpoint> = endpoints_of(&ns, &endpoints).into_iter().filter(|ep| on_network(ep, &net)).collect();
    if on_net.is_empty() {
        return Err(CliError::invalid(format!("{shown} is not connected to network {}", a.network)));
    }
    for ep in on_net {
        match client.delete(&object_path::<HostComputeEndpoint>(&ep.id)) {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> NetworkCreateArgs {
        let mut full = vec!["hnsctl", "network", "create"];
        full.extend_from_slice(argv);
        match <crate::Cli as clap::Parser>::try_parse_from(full).unwrap().command {
            crate::Command::Network(crate::NetworkCmd::Create(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    fn body(argv: &[&str]) -> serde_json::Value {
        create_body(&args(argv)).unwrap()
    }

    fn error(argv: &[&str]) -> String {
        create_body(&args(argv)).unwrap_err().render()
    }

    #[test]
    fn network_acls_come_last_in_words() {
        let b = body(&["-o", "com.docker.network.windowsshim.interface=eth1", "--acl", "allow in proto=tcp local-ports=80", "--acl", "block out remote=10.0.0.0/8 priority=5", "n"]);
        let p = b["Policies"].as_array().unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0]["Type"], "NetAdapterName");
        assert_eq!(p[1], serde_json::json!({"Type": "NetworkACL", "Settings": {"Action": "Allow", "Direction": "In", "Protocols": "tcp", "LocalPorts": "80", "Priority": 0, "RuleType": "Switch"}}));
        assert_eq!(p[2]["Settings"]["RemoteAddresses"], "10.0.0.0/8");
        assert_eq!(error(&["--acl", "allow", "n"]), "Error: --acl \"allow\": give in or out");
    }

    #[test]
    fn plain_nat_network() {
        let b = body(&["mynat"]);
        assert_eq!(b["Name"], "mynat");
        assert_eq!(b["Type"], "NAT");
        assert!(b.get("Ipams").is_none());
        assert!(b.get("Internal").is_none());
        // The body decodes as the API type, as hnsd will decode it.
        let net: HostComputeNetwork = hns_api::decode::from_slice(b.to_string().as_bytes()).unwrap();
        assert_eq!(net.kind, Some(NetworkType::Nat));
    }

    #[test]
    fn subnets_and_gateways_pair_by_position() {
        let b = body(&[
            "-d", "l2bridge", "--subnet", "10.1.0.0/24", "--subnet", "fd00:1::/64", "--subnet", "10.2.0.0/24",
            "--gateway", "10.1.0.1", "--gateway", "fd00:1::1", "--internal", "br",
        ]);
        assert_eq!(b["Type"], "L2Bridge");
        assert_eq!(b["Internal"], true);
        assert_eq!(b["Ipams"][0]["Type"], "Static");
        let subnets = b["Ipams"][0]["Subnets"].as_array().unwrap();
        assert_eq!(subnets.len(), 3);
        assert_eq!(subnets[0]["IpAddressPrefix"], "10.1.0.0/24");
        assert_eq!(subnets[0]["Routes"], json!([{"NextHop": "10.1.0.1", "DestinationPrefix": "0.0.0.0/0"}]));
        assert_eq!(subnets[1]["Routes"], json!([{"NextHop": "fd00:1::1", "DestinationPrefix": "::/0"}]));
        assert!(subnets[2].get("Routes").is_none());
        let net: HostComputeNetwork = hns_api::decode::from_slice(b.to_string().as_bytes()).unwrap();
        assert_eq!(output::gateways(&net), vec!["10.1.0.1", "fd00:1::1"]);
    }

    #[test]
    fn drivers() {
        for (d, t) in [("nat", "NAT"), ("transparent", "Transparent"), ("l2bridge", "L2Bridge"), ("l2tunnel", "L2Tunnel"), ("overlay", "Overlay"), ("NAT", "NAT")] {
            assert_eq!(body(&["-d", d, "n"])["Type"], t, "{d}");
        }
        // Unknown drivers go to hnsd as they are, so it names the error.
        assert_eq!(body(&["--driver", "bridge", "n"])["Type"], "bridge");
        let overlay = body(&["-d", "overlay", "--outbound-nat", "--subnet", "10.240.0.0/16", "-o", "com.docker.network.windowsshim.vsid=5000", "n"]);
        assert_eq!(overlay["OutboundNat"], true);
        assert_eq!(overlay["Ipams"][0]["Subnets"][0]["Policies"][0], serde_json::json!({"Type": "VSID", "Settings": {"IsolationId": 5000}}));
    }

    #[test]
    fn ranges_and_aux_addresses_go_to_their_subnet() {
        let b = body(&[
            "--subnet", "172.30.0.0/16", "--subnet", "fd00::/64",
            "--ip-range", "fd00::8000/113", "--ip-range", "172.30.128.0/17",
            "--aux-address", "router=172.30.0.2", "--aux-address", "dns=fd00::53", "--aux-address", "host=172.30.0.3",
            "n",
        ]);
        let s = &b["Ipams"][0]["Subnets"];
        assert_eq!(s[0]["IpRange"], "172.30.128.0/17");
        assert_eq!(s[1]["IpRange"], "fd00::8000/113");
        assert_eq!(s[0]["AuxiliaryAddresses"], json!({"router": "172.30.0.2", "host": "172.30.0.3"}));
        assert_eq!(s[1]["AuxiliaryAddresses"], json!({"dns": "fd00::53"}));
    }

    #[test]
    fn driver_options() {
        let b = body(&[
            "--subnet", "10.0.0.0/24",
            "-o", "com.docker.network.windowsshim.dnssuffix=corp.example",
            "--opt", "com.docker.network.windowsshim.dnsservers=10.0.0.53, 10.0.0.54",
            "-o", "com.docker.network.windowsshim.networkname=real",
            "-o", "com.docker.network.windowsshim.interface=eth1",
            "-o", "com.docker.network.windowsshim.vlanid=42",
            "given",
        ]);
        assert_eq!(b["Name"], "real");
        assert_eq!(b["Dns"], json!({"Domain": "corp.example", "ServerList": ["10.0.0.53", "10.0.0.54"]}));
        assert_eq!(b["Policies"], json!([{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "eth1"}}]));
        assert_eq!(b["Ipams"][0]["Subnets"][0]["Policies"], json!([{"Type": "VLAN", "Settings": {"IsolationId": 42}}]));
        hns_api::decode::from_slice::<HostComputeNetwork>(b.to_string().as_bytes()).unwrap();
    }

    #[test]
    fn errors() {
        let e = error(&["--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "--gateway", "10.0.1.1", "n"]);
        assert!(e.contains("2 --gateway for 1 --subnet"), "{e}");
        let e = error(&["--gateway", "10.0.0.1", "n"]);
        assert!(e.contains("1 --gateway for 0 --subnet"), "{e}");
        let e = error(&["--subnet", "10.0.0.0/24", "--gateway", "fd00::1", "n"]);
        assert!(e.contains("IPv6") && e.contains("IPv4"), "{e}");
        let e = error(&["--subnet", "10.0.0.0/24", "--gateway", "nope", "n"]);
        assert!(e.contains("invalid --gateway \"nope\""), "{e}");
        let e = error(&["--subnet", "10.0.0.0/24", "--ip-range", "10.9.0.0/25", "n"]);
        assert!(e.contains("--ip-range 10.9.0.0/25 is not inside any --subnet (10.0.0.0/24)"), "{e}");
        // A range wider than the subnet is not inside it.
        let e = error(&["--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.0/16", "n"]);
        assert!(e.contains("not inside"), "{e}");
        let e = error(&["--ip-range", "10.0.0.0/25", "n"]);
        assert!(e.contains("none given"), "{e}");
        let e = error(&["--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.0/25", "--ip-range", "10.0.0.128/25", "n"]);
        assert!(e.contains("two --ip-range"), "{e}");
        let e = error(&["--subnet", "10.0.0.0/24", "--aux-address", "10.0.0.5", "n"]);
        assert!(e.contains("expected NAME=IP"), "{e}");
        let e = error(&["--subnet", "10.0.0.0/24", "--aux-address", "x=10.1.0.5", "n"]);
        assert!(e.contains("--aux-address x=10.1.0.5 is not inside any --subnet"), "{e}");
        let e = error(&["-o", "com.docker.network.driver.mtu=1400", "n"]);
        assert!(e.starts_with("Error: unknown option com.docker.network.driver.mtu"), "{e}");
        assert!(e.contains("known: com.docker.network.windowsshim.networkname"), "{e}");
        let e = error(&["-o", "noequals", "n"]);
        assert!(e.contains("expected KEY=VALUE"), "{e}");
        let e = error(&["-o", "com.docker.network.windowsshim.vlanid=x", "--subnet", "10.0.0.0/24", "n"]);
        assert!(e.contains("expected a number"), "{e}");
        let e = error(&["-o", "com.docker.network.windowsshim.vsid=5", "n"]);
        assert!(e.contains("give a --subnet"), "{e}");
        assert_eq!(create_body(&args(&["-o", "x=y", "n"])).unwrap_err().exit_code(), 1);
    }

    #[test]
    fn cidr_math() {
        let net = parse_cidr("172.30.0.0/16").unwrap();
        assert!(cidr_contains(net, "172.30.255.255".parse().unwrap()));
        assert!(!cidr_contains(net, "172.31.0.0".parse().unwrap()));
        assert!(!cidr_contains(net, "fd00::1".parse().unwrap()));
        assert!(cidr_contains(parse_cidr("0.0.0.0/0").unwrap(), "1.2.3.4".parse().unwrap()));
        assert!(cidr_contains(parse_cidr("fd00::/8").unwrap(), "fdff::1".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("10.0.0.0").is_none());
    }
}
