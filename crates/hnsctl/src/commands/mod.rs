//! The commands, one module per family, plus what they share: the context (socket, format) and
//! the lookup of objects by name, ID or ID prefix.

pub mod endpoint;
pub mod events;
pub mod info;
pub mod inspect;
pub mod lb;
pub mod namespace;
pub mod network;
pub mod node;
pub mod policy;
pub mod port;
pub mod ps;
pub mod run;

use std::net::IpAddr;
use std::path::PathBuf;

use serde::de::DeserializeOwned;

use hns_api::{HostComputeEndpoint, HostComputeLoadBalancer, HostComputeNamespace, HostComputeNetwork, IpConfig};

use crate::client::{Client, seg};
use crate::error::{CliError, Result};
use crate::output::{Format, same_id};

/// What every command gets from the global flags.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub socket: PathBuf,
    pub format: Format,
}

impl Ctx {
    pub fn client(&self) -> Result<Client> {
        Client::new(&self.socket)
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}

/// An object kind of the API, for lookups.
pub trait Object: DeserializeOwned {
    const COLLECTION: &'static str;
    const KIND: &'static str;
    fn id(&self) -> &str;
}

impl Object for HostComputeNetwork {
    const COLLECTION: &'static str = "/networks";
    const KIND: &'static str = "networks";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Object for HostComputeEndpoint {
    const COLLECTION: &'static str = "/endpoints";
    const KIND: &'static str = "endpoints";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Object for HostComputeNamespace {
    const COLLECTION: &'static str = "/namespaces";
    const KIND: &'static str = "namespaces";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Object for HostComputeLoadBalancer {
    const COLLECTION: &'static str = "/loadbalancers";
    const KIND: &'static str = "load balancers";
    fn id(&self) -> &str {
        &self.id
    }
}

/// The path of one object.
pub fn object_path<T: Object>(key: &str) -> String {
    format!("{}/{}", T::COLLECTION, seg(key))
}

/// Fetches an object by ID or name; when hnsd knows neither and `key` looks like the short ID
/// that the `ls` tables show, by a unique ID prefix.
pub fn lookup<T: Object>(client: &Client, key: &str) -> Result<T> {
    match client.get::<T>(&object_path::<T>(key)) {
        Err(e) if e.is_not_found() && looks_like_id_prefix(key) => {
            let Ok(all) = client.get::<Vec<T>>(T::COLLECTION) else { return Err(e) };
            let mut hits: Vec<T> = all.into_iter().filter(|o| id_has_prefix(o.id(), key)).collect();
            match hits.len() {
                1 => Ok(hits.remove(0)),
                0 => Err(e),
                n => Err(CliError::invalid(format!("{key} is the start of the IDs of {n} {}; give more of the ID", T::KIND))),
            }
        }
        other => other,
    }
}

/// Looks an object up, `None` when hnsd does not know it.
pub fn find<T: Object>(client: &Client, key: &str) -> Result<Option<T>> {
    match lookup::<T>(client, key) {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn looks_like_id_prefix(key: &str) -> bool {
    key.len() >= 4 && key.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn id_has_prefix(id: &str, prefix: &str) -> bool {
    let compact = |s: &str| s.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_lowercase()).collect::<String>();
    let p = compact(prefix);
    !p.is_empty() && compact(id).starts_with(&p)
}

/// The endpoints attached to a namespace: those its `Resources` list and those that name it.
pub fn endpoints_of<'a>(ns: &HostComputeNamespace, endpoints: &'a [HostComputeEndpoint]) -> Vec<&'a HostComputeEndpoint> {
    let listed = ns.endpoint_ids();
    endpoints
        .iter()
        .filter(|ep| listed.iter().any(|id| same_id(id, &ep.id)) || same_id(&ep.host_compute_namespace, &ns.id))
        .collect()
}

/// True when an endpoint is on `net` (it may reference the network by ID or by name).
pub fn on_network(ep: &HostComputeEndpoint, net: &HostComputeNetwork) -> bool {
    same_id(&ep.host_compute_network, &net.id) || (!net.name.is_empty() && ep.host_compute_network == net.name)
}

/// The name of the network an endpoint references (by ID or name), or the reference itself.
pub fn network_name(reference: &str, networks: &[HostComputeNetwork]) -> String {
    networks
        .iter()
        .find(|n| same_id(&n.id, reference) || n.name == reference)
        .map(|n| n.name.clone())
        .unwrap_or_else(|| reference.to_owned())
}

/// `--ip 10.0.0.5` or `--ip 10.0.0.5/24` as an endpoint address. The address itself is checked
/// by hnsd, which names the rule it breaks.
pub fn ip_config(value: &str) -> Result<IpConfig> {
    match value.split_once('/') {
        None => Ok(IpConfig { ip_address: value.to_owned(), ..Default::default() }),
        Some((addr, len)) => {
            let prefix_length = len
                .parse::<u8>()
                .map_err(|_| CliError::invalid(format!("invalid address {value:?}: the prefix length {len:?} is not a number")))?;
            Ok(IpConfig { ip_address: addr.to_owned(), prefix_length, ..Default::default() })
        }
    }
}

/// The static addresses of `--ip` (IPv4) and `--ip6` (IPv6). An address of the other family
/// is refused naming the flag it belongs to; whether it fits the network is for hnsd to say.
pub fn static_addresses(ip: Option<&str>, ip6: Option<&str>) -> Result<Vec<IpConfig>> {
    let mut configs = Vec::new();
    for (flag, value, v4, other) in [("--ip", ip, true, "--ip6"), ("--ip6", ip6, false, "--ip")] {
        let Some(value) = value else { continue };
        let config = ip_config(value)?;
        if let Ok(addr) = config.ip_address.parse::<IpAddr>()
            && addr.is_ipv4() != v4
        {
            let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(CliError::invalid(format!("{flag} {value}: {addr} is an {family} address; give it with {other}")));
        }
        configs.push(config);
    }
    Ok(configs)
}

/// Runs `op` on each name, reporting failures as they come; returns exit code 1 if any failed
/// (like `docker rm a b c`).
pub fn for_each_name(names: &[String], mut op: impl FnMut(&str) -> Result<()>) -> i32 {
    let mut code = 0;
    for name in names {
        if let Err(e) = op(name) {
            e.report();
            code = 1;
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_prefixes() {
        assert!(looks_like_id_prefix("5a3d0f6e9c1b"));
        assert!(!looks_like_id_prefix("web"));
        assert!(!looks_like_id_prefix("abc"));
        assert!(id_has_prefix("5A3D0F6E-9C1B-4B2A-8E7F-001122334455", "5a3d0f6e9c1b"));
        assert!(id_has_prefix("5A3D0F6E-9C1B-4B2A-8E7F-001122334455", "5a3d0f6e-9c"));
        assert!(!id_has_prefix("5A3D0F6E-9C1B-4B2A-8E7F-001122334455", "5a3d0f6e9c1c"));
    }

    #[test]
    fn ip_configs() {
        assert_eq!(ip_config("10.0.0.5").unwrap(), IpConfig { ip_address: "10.0.0.5".into(), ..Default::default() });
        assert_eq!(
            ip_config("fd00::5/64").unwrap(),
            IpConfig { ip_address: "fd00::5".into(), prefix_length: 64, ..Default::default() }
        );
        assert!(ip_config("10.0.0.5/x").is_err());
    }

    #[test]
    fn static_addresses_by_family() {
        let both = static_addresses(Some("10.0.0.5"), Some("fd00::5/64")).unwrap();
        assert_eq!(both.iter().map(|c| c.ip_address.as_str()).collect::<Vec<_>>(), vec!["10.0.0.5", "fd00::5"]);
        assert_eq!(both[1].prefix_length, 64);
        assert!(static_addresses(None, None).unwrap().is_empty());
        let e = static_addresses(Some("fd00::5"), None).unwrap_err().render();
        assert_eq!(e, "Error: --ip fd00::5: fd00::5 is an IPv6 address; give it with --ip6");
        let e = static_addresses(None, Some("10.0.0.5/24")).unwrap_err().render();
        assert_eq!(e, "Error: --ip6 10.0.0.5/24: 10.0.0.5 is an IPv4 address; give it with --ip");
        // What is not an address at all goes to hnsd, which names the field.
        assert_eq!(static_addresses(Some("nope"), None).unwrap()[0].ip_address, "nope");
    }

    #[test]
    fn namespace_endpoints() {
        let ns = HostComputeNamespace {
            id: "AAAA0000-0000-0000-0000-000000000001".into(),
            resources: vec![hns_api::NamespaceResource {
                kind: "Endpoint".into(),
                data: serde_json::json!({"ID": "bbbb0000-0000-0000-0000-000000000002"}),
            }],
            ..Default::default()
        };
        let eps = vec![
            HostComputeEndpoint { id: "BBBB0000-0000-0000-0000-000000000002".into(), ..Default::default() },
            HostComputeEndpoint {
                id: "cccc0000-0000-0000-0000-000000000003".into(),
                host_compute_namespace: "aaaa0000-0000-0000-0000-000000000001".into(),
                ..Default::default()
            },
            HostComputeEndpoint { id: "dddd0000-0000-0000-0000-000000000004".into(), ..Default::default() },
        ];
        let ids: Vec<&str> = endpoints_of(&ns, &eps).iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec!["BBBB0000-0000-0000-0000-000000000002", "cccc0000-0000-0000-0000-000000000003"]);
    }
}
