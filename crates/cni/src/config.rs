//! The network configuration a runtime sends on stdin: the plugin object of a conflist plus
//! `cniVersion`, `name`, `runtimeConfig`, `prevResult` (CNI SPEC "Section 3"). Every key is
//! either used or refused by name: a setting hns cannot honour is never dropped silently.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::error::{CniError, Result, code};
use crate::{version, windows};

pub const DEFAULT_SOCKET: &str = "/run/hns/hns.sock";
/// The `type` this binary implements.
pub const PLUGIN_TYPE: &str = "hns";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub cni_versions: Vec<String>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The hns network (name or ID); default: `name`.
    #[serde(default)]
    pub network: String,
    /// hnsd's API socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub ipam: Option<Ipam>,
    #[serde(default)]
    pub dns: Option<Dns>,
    /// Only in a conflist's plugin object; runtimes strip it, but a config written by hand may
    /// carry it.
    #[serde(rename = "capabilities", default)]
    _capabilities: Option<IgnoredAny>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// Free-form metadata (`args.cni.*`, podman's labels): kept by runtimes, unused here.
    #[serde(rename = "args", default)]
    _args: Option<IgnoredAny>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    // Keys of the Windows plugin types (nat, sdnbridge, sdnoverlay): see `windows`.
    #[serde(default)]
    pub optional_flags: BTreeMap<String, Value>,
    #[serde(default)]
    pub additional_routes: Vec<IpamRoute>,
    #[serde(rename = "AdditionalArgs", alias = "additionalArgs", default)]
    pub additional_args: Vec<Kvp>,
    #[serde(default)]
    pub master: String,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The spelling of the GC key before spec 1.1.0 was amended; libcni sends both.
    #[serde(rename = "cni.dev/attachments", default)]
    pub attachments: Option<Vec<Attachment>>,
    // Conflist-level keys, harmless when a runtime passes them on.
    #[serde(rename = "disableCheck", default)]
    _disable_check: Option<IgnoredAny>,
    #[serde(rename = "disableGC", default)]
    _disable_gc: Option<IgnoredAny>,
    #[serde(rename = "loadOnlyInlinedPlugins", default)]
    _load_only_inlined_plugins: Option<IgnoredAny>,
}

/// `ipam`: hns allocates the addresses itself; `subnet` creates the network when it is absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ipam {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub subnet: String,
    #[serde(default)]
    pub gateway: String,
    /// Extra routes inside the container (Windows types: the first route's gateway is the
    /// subnet's gateway).
    #[serde(default)]
    pub routes: Vec<IpamRoute>,
    // Windows types: a static address, and keys that do not apply to hns (refused when set).
    #[serde(default)]
    pub ip_address: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub address_space: String,
    #[serde(default)]
    pub query_interval: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamRoute {
    #[serde(default)]
    pub dst: String,
    #[serde(default, alias = "GW", alias = "gateway")]
    pub gw: String,
}

/// An `AdditionalArgs` entry of the Windows types (Go decodes their keys in any case).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kvp {
    #[serde(alias = "Name")]
    pub name: String,
    #[serde(alias = "Value")]
    pub value: Value,
}

/// The well-known `dns` key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    // The capitalised spellings are those of Windows conflists (Go decodes keys in any case).
    #[serde(default, alias = "Nameservers")]
    pub nameservers: Vec<String>,
    #[serde(default, alias = "Domain")]
    pub domain: String,
    #[serde(default, alias = "Search")]
    pub search: Vec<String>,
    #[serde(default, alias = "Options")]
    pub options: Vec<String>,
}

/// Capability arguments (CNI CONVENTIONS.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub dns: Option<RuntimeDns>,
    /// Network name -> extra DNS names of the container on it (podman's form).
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// The `bandwidth` capability: becomes the endpoint's QOS policy.
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
}

/// The CNI `bandwidth` capability (rates in bits per second, bursts in bits), as the
/// reference plugin reads it. `egressRate` (what the container sends) becomes QOS
/// `MaximumOutgoingBandwidthInBytes`, `ingressRate` (what it receives) hns's
/// `MaximumIncomingBandwidthInBytes`; hns chooses the bursts (50 ms of the rate), so the
/// burst keys are accepted and not used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bandwidth {
    #[serde(default)]
    pub ingress_rate: u64,
    /// Accepted, not used (see the type's doc).
    #[serde(default)]
    #[allow(dead_code)]
    pub ingress_burst: u64,
    #[serde(default)]
    pub egress_rate: u64,
    #[serde(default)]
    #[allow(dead_code)]
    pub egress_burst: u64,
}

impl Bandwidth {
    /// The QOS policy settings (bytes per second), if any rate is set.
    pub fn qos_settings(&self) -> Option<Value> {
        if self.ingress_rate == 0 && self.egress_rate == 0 {
            return None;
        }
        Some(serde_json::json!({"MaximumOutgoingBandwidthInBytes": self.egress_rate / 8, "MaximumIncomingBandwidthInBytes": self.ingress_rate / 8}))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeDns {
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub searches: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl NetConf {
    /// Decodes and checks the config; a wrong field is named with its value.
    pub fn parse(stdin: &[u8]) -> Result<NetConf> {
        let mut value: Value = serde_json::from_slice(stdin)
            .map_err(|e| CniError::new(code::DECODE, format!("the network configuration on stdin is not JSON: {e}")))?;
        // `cni.dev/*` keys are the runtime's (reserved by the spec); only the GC lists matter here.
        if let Some(o) = value.as_object_mut() {
            o.retain(|k, _| !k.starts_with("cni.dev/") || k == "cni.dev/valid-attachments" || k == "cni.dev/attachments");
        }
        let conf: NetConf = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // "unknown field `x`, expected ...": a setting hns-cni does not have.
            if inner.starts_with("unknown field `") {
                // The path ends with the unknown key itself.
                let pointer = format!("/{}", path.replace(['.', '['], "/").replace(']', ""));
                let v = value.pointer(&pointer).map(|v| v.to_string()).unwrap_or_default();
                return CniError::new(code::UNSUPPORTED_FIELD, format!("unsupported field {path:?} (value {v}): hns-cni has no such setting; remove it"));
            }
            let at = if path == "." { String::new() } else { format!("field {path:?}: ") };
            CniError::config(format!("{at}{inner}"))
        })?;
        conf.check()?;
        Ok(conf)
    }

    fn check(&self) -> Result<()> {
        if self.kind != PLUGIN_TYPE && windows::network_type(&self.kind).is_none() {
            return Err(CniError::config(format!(
                "field \"type\" is {:?}: this binary implements type {PLUGIN_TYPE:?} and the Windows types {}",
                self.kind,
                windows::TYPES.join(", ")
            )));
        }
        windows::check(self)?;
        if !hns_name(&self.name) {
            return Err(CniError::config(format!(
                "field \"name\" {:?} is not a network name: use letters, digits, '_', '.', '-', starting with a letter or digit",
                self.name
            )));
        }
        if !self.network.is_empty() && !hns_name(&self.network) {
            return Err(CniError::config(format!(
                "field \"network\" {:?} is not an hns network name: use up to 128 letters, digits, '_', '.', '-', starting with a letter or digit",
                self.network
            )));
        }
        if self.cni_version.is_empty() && self.cni_versions.is_empty() {
            return Err(CniError::config("field \"cniVersion\" is required"));
        }
        if let Some(s) = &self.socket
            && !s.is_absolute()
        {
            return Err(CniError::config(format!("field \"socket\" {:?} must be an absolute path, such as {DEFAULT_SOCKET}", s.display())));
        }
        if let Some(ipam) = &self.ipam {
            if !ipam.kind.is_empty() && ipam.kind != PLUGIN_TYPE {
                return Err(CniError::config(format!(
                    "field \"ipam.type\" is {:?}: hns allocates addresses itself; leave ipam.type empty or \"hns\"",
                    ipam.kind
                )));
            }
            if !ipam.subnet.is_empty() {
                parse_net(&ipam.subnet, "ipam.subnet")?;
            }
            if !ipam.ip_address.is_empty() {
                parse_ip(&ipam.ip_address, "ipam.ipAddress")?;
            }
            if !ipam.gateway.is_empty() {
                parse_ip(&ipam.gateway, "ipam.gateway")?;
                if ipam.subnet.is_empty() {
                    return Err(CniError::config("field \"ipam.gateway\" needs \"ipam.subnet\": the gateway is only used when hns-cni creates the network"));
                }
            }
            check_routes(&ipam.routes, "ipam.routes", self.is_windows())?;
        }
        check_routes(&self.additional_routes, "additionalRoutes", false)?;
        if let Some(d) = &self.dns {
            for (i, s) in d.nameservers.iter().enumerate() {
                parse_ip(s, &format!("dns.nameservers[{i}]"))?;
            }
        }
        let rc = &self.runtime_config;
        if let Some(b) = &rc.bandwidth {
            // hnsd's QOS takes 10 kB/s to 1 Tbit/s (0: no cap); named here in the capability's units.
            for (name, rate) in [("ingressRate", b.ingress_rate), ("egressRate", b.egress_rate)] {
                if rate != 0 && !(80_000..=1_000_000_000_000).contains(&rate) {
                    return Err(CniError::config(format!("field \"runtimeConfig.bandwidth.{name}\" is {rate} bit/s: give 0 for no limit, or 80000 (10 kB/s) to 1000000000000 (1 Tbit/s)")));
                }
            }
        }
        for (i, p) in rc.port_mappings.iter().enumerate() {
            protocol_number(&p.protocol, &format!("runtimeConfig.portMappings[{i}].protocol"))?;
            if p.container_port == 0 {
                return Err(CniError::config(format!("field \"runtimeConfig.portMappings[{i}].containerPort\" is 0: give the port inside the container")));
            }
            if !p.host_ip.is_empty() {
                parse_ip(&p.host_ip, &format!("runtimeConfig.portMappings[{i}].hostIP"))?;
            }
        }
        if let Some(d) = &rc.dns {
            for (i, s) in d.servers.iter().enumerate() {
                parse_ip(s, &format!("runtimeConfig.dns.servers[{i}]"))?;
            }
        }
        for (i, a) in rc.ips.iter().enumerate() {
            parse_address(a, &format!("runtimeConfig.ips[{i}]"))?;
        }
        for a in self.valid_attachments.iter().chain(&self.attachments).flatten() {
            if a.container_id.is_empty() || a.ifname.is_empty() {
                return Err(CniError::config(format!("GC attachment {a:?}: containerID and ifname are required")));
            }
        }
        Ok(())
    }

    /// The version the result is written in: `cniVersion`, or the highest supported of
    /// `cniVersions` when the runtime did not choose.
    pub fn result_version(&self) -> Result<String> {
        let candidates: Vec<&str> =
            if self.cni_version.is_empty() { self.cni_versions.iter().map(String::as_str).collect() } else { vec![self.cni_version.as_str()] };
        version::highest_supported(candidates.iter().copied()).map(str::to_owned).ok_or_else(|| {
            CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {} is not supported: hns-cni speaks {}", candidates.join(", "), version::SUPPORTED.join(", ")),
            )
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// The hns network this config attaches to.
    pub fn network(&self) -> &str {
        if self.network.is_empty() { &self.name } else { &self.network }
    }

    pub fn is_windows(&self) -> bool {
        self.kind != PLUGIN_TYPE
    }

    /// The gateway of a network this config creates: `ipam.gateway`, or (Windows types) the
    /// first `ipam.routes` gateway.
    pub fn gateway(&self) -> Option<&str> {
        let ipam = self.ipam.as_ref()?;
        let first_route = || ipam.routes.iter().map(|r| r.gw.as_str()).find(|g| !g.is_empty());
        Some(ipam.gateway.as_str()).filter(|g| !g.is_empty()).or_else(|| if self.is_windows() { first_route() } else { None })
    }

    /// Extra routes inside the container: `ipam.routes` (type hns) or `additionalRoutes`.
    pub fn endpoint_routes(&self) -> Vec<&IpamRoute> {
        if self.is_windows() { self.additional_routes.iter().collect() } else { self.ipam.iter().flat_map(|i| &i.routes).collect() }
    }

    pub fn subnet(&self) -> Option<&str> {
        self.ipam.as_ref().map(|i| i.subnet.as_str()).filter(|s| !s.is_empty())
    }

    /// GC's list of attachments to keep (both spellings).
    pub fn keep(&self) -> Vec<Attachment> {
        let mut all: Vec<Attachment> = self.valid_attachments.iter().chain(&self.attachments).flatten().cloned().collect();
        all.sort();
        all.dedup();
        all
    }
}

/// The CNI rule for network names, which is also hns's for object names (plus hns's length cap).
fn hns_name(name: &str) -> bool {
    name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Routes as CNI writes them; the Windows types' `ipam.routes` only carry the gateway (their
/// `dst` is the default route or absent).
fn check_routes(routes: &[IpamRoute], field: &str, gateway_only: bool) -> Result<()> {
    for (i, r) in routes.iter().enumerate() {
        if gateway_only {
            if !r.dst.is_empty() && r.dst != "0.0.0.0/0" && r.dst != "::/0" {
                return Err(CniError::config(format!("field \"{field}[{i}].dst\" is {:?}: the Windows types take only the gateway from ipam.routes; put other routes in additionalRoutes", r.dst)));
            }
        } else {
            parse_net(&r.dst, &format!("{field}[{i}].dst"))?;
        }
        if !r.gw.is_empty() {
            parse_ip(&r.gw, &format!("{field}[{i}].gw"))?;
        }
    }
    Ok(())
}

pub fn parse_ip(s: &str, field: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| CniError::config(format!("field {field:?} {s:?} is not an IP address")))
}

pub fn parse_net(s: &str, field: &str) -> Result<ipnet::IpNet> {
    s.parse().map_err(|_| CniError::config(format!("field {field:?} {s:?} is not a CIDR prefix such as 10.88.0.0/16")))
}

/// `ip` or `ip/len` (the `ips` capability and `IP=` use either).
pub fn parse_address(s: &str, field: &str) -> Result<(IpAddr, Option<u8>)> {
    match s.split_once('/') {
        Some(_) => parse_net(s, field).map(|n| (n.addr(), Some(n.prefix_len()))),
        None => parse_ip(s, field).map(|ip| (ip, None)),
    }
}

/// The IP protocol number of a CNI port-mapping protocol (hns maps TCP and UDP).
pub fn protocol_number(p: &str, field: &str) -> Result<u32> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" | "" => Ok(6),
        "udp" => Ok(17),
        _ => Err(CniError::config(format!("field {field:?} is {p:?}: hns maps tcp and udp ports"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn accepts_a_podman_style_config() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"hnsnet","type":"hns","network":"nat","args":{"podman_labels":{}},
                "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":""}],"aliases":{"hnsnet":["web"]}}}"#,
        )
        .unwrap();
        assert_eq!((c.network(), c.result_version().unwrap().as_str()), ("nat", "1.0.0"));
        let c = parse(r#"{"cniVersions":["0.4.0","1.1.0","7.0.0"],"name":"n","type":"hns"}"#).unwrap();
        assert_eq!((c.network(), c.result_version().unwrap().as_str()), ("n", "1.1.0"));
    }

    #[test]
    fn refuses_by_name() {
        let cases = [
            (r#"{"cniVersion":"1.0.0","name":"n","type":"hns","bridge":"cni0"}"#, 2, "\"bridge\" (value \"cni0\")"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"hns","ipam":{"rangeStart":"10.0.0.5"}}"#, 2, "\"ipam.rangeStart\""),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#, 7, "\"bridge\""),
            (r#"{"cniVersion":"1.0.0","name":"-n","type":"hns"}"#, 7, "\"-n\""),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"hns","ipam":{"type":"host-local"}}"#, 7, "host-local"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"hns","ipam":{"subnet":"10.0.0.0/33"}}"#, 7, "10.0.0.0/33"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"hns","runtimeConfig":{"bandwidth":{"ingressRate":1}}}"#, 7, "runtimeConfig.bandwidth.ingressRate"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"hns","runtimeConfig":{"bandwidth":{"egressRatio":1}}}"#, 2, "runtimeConfig.bandwidth.egressRatio"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"hns","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":2,"protocol":"sctp"}]}}"#, 7, "sctp"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"hns","runtimeConfig":{"ips":["10.0.0.300"]}}"#, 7, "runtimeConfig.ips[0]"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"hns","socket":"hns.sock"}"#, 7, "\"socket\""),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"hns","runtimeConfig":{"portMappings":[{"hostPort":"x","containerPort":2}]}}"#, 7, "runtimeConfig.portMappings[0].hostPort"),
            (r#"{"name":"n","type":"hns"}"#, 7, "cniVersion"),
            ("not json", 6, "not JSON"),
        ];
        for (input, code, needle) in cases {
            let e = parse(input).unwrap_err();
            assert_eq!(e.code, code, "{input}: {e:?}");
            assert!(e.msg.contains(needle), "{input}: {:?} lacks {needle:?}", e.msg);
        }
        let e = parse(r#"{"cniVersion":"2.0.0","name":"n","type":"hns"}"#).unwrap().result_version().unwrap_err();
        assert_eq!(e.code, 1);
    }

    #[test]
    fn gc_keys_both_spellings() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","type":"hns",
                "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
                "cni.dev/attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"eth1"}]}"#,
        )
        .unwrap();
        assert_eq!(c.keep().len(), 2);
    }
}
