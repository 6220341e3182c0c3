//! The cluster settings of hnsd (overlay networks): where etcd is, who this host is, how long
//! the cluster keeps it after it stops answering. Flags override the `[cluster]` table of the
//! TOML file; everything is checked here so a typo stops hnsd at start, not in a retry loop.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::Deserialize;

use super::parse_duration;

/// How long the cluster keeps a silent host's endpoints when nothing else is configured.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

#[derive(Debug, Default, clap::Args)]
pub struct ClusterArgs {
    /// The cluster store (enables overlay networks): etcd://HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "etcd://HOST:PORT")]
    pub cluster_store: Option<String>,
    /// This host's underlay address, where peers send VXLAN packets (its VTEP). Required with
    /// --cluster-store.
    #[arg(long, value_name = "IP")]
    pub advertise_addr: Option<IpAddr>,
    /// This host's name in the cluster [default: the hostname].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// CA certificate of etcd's server certificate (TLS, with --cluster-cert and --cluster-key).
    #[arg(long, value_name = "FILE")]
    pub cluster_ca: Option<PathBuf>,
    /// This host's client certificate for etcd.
    #[arg(long, value_name = "FILE")]
    pub cluster_cert: Option<PathBuf>,
    /// The key of --cluster-cert.
    #[arg(long, value_name = "FILE")]
    pub cluster_key: Option<PathBuf>,
    /// How long the cluster keeps this host's endpoints once hnsd stops renewing its lease
    /// (whole seconds, 1s-1h) [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub cluster_lease_ttl: Option<Duration>,
}

/// `[cluster]` of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterFile {
    pub store: Option<String>,
    pub advertise_addr: Option<IpAddr>,
    pub node_name: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub lease_ttl: Option<String>,
}

/// The checked settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// `HOST:PORT` (or full URLs) as hns-cluster takes them.
    pub endpoints: Vec<String>,
    pub tls: Option<hns_cluster::TlsFiles>,
    pub advertise: IpAddr,
    pub node: String,
    pub lease_ttl_secs: i64,
}

impl ClusterSettings {
    /// The connection settings: a short dial and request timeout, so cluster operations fail
    /// fast while etcd is away instead of holding requests.
    pub fn connection(&self) -> hns_cluster::ClusterConfig {
        let mut c = hns_cluster::ClusterConfig::new(self.endpoints.clone());
        c.tls = self.tls.clone();
        c.dial_timeout = Duration::from_secs(2);
        c.request_timeout = Duration::from_secs(3);
        c
    }
}

/// `etcd://a:2379,b:2379` -> `["a:2379", "b:2379"]`; `http(s)://` URLs pass as they are.
fn parse_store(text: &str) -> anyhow::Result<Vec<String>> {
    let bad = |why: &str| anyhow!("--cluster-store {text:?}: {why}; expected etcd://HOST:PORT[,HOST:PORT...]");
    let mut out = Vec::new();
    for item in text.trim().trim_start_matches("etcd://").split(',') {
        let item = item.trim().trim_end_matches('/');
        let (scheme, rest) = match item.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (Some(s), rest),
            Some(("etcd", rest)) => (None, rest),
            Some((other, _)) => return Err(bad(&format!("unknown scheme {other}"))),
            None => (None, item),
        };
        if !rest.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)) {
            return Err(bad(&format!("{item:?} is not HOST:PORT")));
        }
        out.push(match scheme {
            Some(s) => format!("{s}://{rest}"),
            None => rest.to_owned(),
        });
    }
    Ok(out)
}

/// Resolves flags over the file; `None` when no cluster store is configured.
pub fn resolve(args: &ClusterArgs, file: Option<&ClusterFile>) -> anyhow::Result<Option<ClusterSettings>> {
    let f = file.map(|f| (f.store.clone(), f.advertise_addr, f.node_name.clone(), f.ca.clone(), f.cert.clone(), f.key.clone(), f.lease_ttl.clone()));
    let (fstore, fadv, fname, fca, fcert, fkey, fttl) = f.unwrap_or_default();
    let store = args.cluster_store.clone().or(fstore);
    let advertise = args.advertise_addr.or(fadv);
    let Some(store) = store else {
        if advertise.is_some() || args.node_name.is_some() || args.cluster_ca.is_some() || args.cluster_lease_ttl.is_some() {
            bail!("--advertise-addr, --node-name, --cluster-ca/-cert/-key and --cluster-lease-ttl belong to --cluster-store; give it too");
        }
        return Ok(None);
    };
    let endpoints = parse_store(&store)?;
    let advertise = advertise.ok_or_else(|| anyhow!("--cluster-store needs --advertise-addr: the address other hosts reach this one at (its VXLAN tunnel endpoint)"))?;
    if advertise.is_unspecified() || advertise.is_loopback() || advertise.is_multicast() {
        bail!("--advertise-addr {advertise}: other hosts cannot reach that address; give this host's underlay address");
    }
    let node = match args.node_name.clone().or(fname) {
        Some(n) => n,
        None => nix::unistd::gethostname()?.into_string().map_err(|h| anyhow!("the hostname {h:?} is not UTF-8; give --node-name"))?,
    };
    hns_cluster::keys::validate_segment("--node-name", &node)?;
    let ttl = match (args.cluster_lease_ttl, fttl) {
        (Some(d), _) => d,
        (None, Some(s)) => parse_duration(&s).map_err(|e| anyhow!("config cluster.lease-ttl: {e}"))?,
        (None, None) => DEFAULT_LEASE_TTL,
    };
    if ttl.subsec_nanos() != 0 || !(1..=3600).contains(&ttl.as_secs()) {
        bail!("--cluster-lease-ttl {ttl:?}: the lease TTL is whole seconds from 1s to 3600s");
    }
    let tls = match (args.cluster_ca.clone().or(fca), args.cluster_cert.clone().or(fcert), args.cluster_key.clone().or(fkey)) {
        (None, None, None) => None,
        (Some(ca), Some(cert), Some(key)) => Some(hns_cluster::TlsFiles { ca, cert, key }),
        _ => bail!("etcd TLS needs all three of --cluster-ca, --cluster-cert and --cluster-key"),
    };
    Ok(Some(ClusterSettings { endpoints, tls, advertise, node, lease_ttl_secs: ttl.as_secs() as i64 }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        c: ClusterArgs,
    }

    fn r(argv: &[&str]) -> anyhow::Result<Option<ClusterSettings>> {
        let t = T::parse_from(std::iter::once("hnsd").chain(argv.iter().copied()));
        resolve(&t.c, None)
    }

    #[test]
    fn store_lists_and_defaults() {
        let s = r(&["--cluster-store", "etcd://10.0.0.1:2379,10.0.0.2:2379", "--advertise-addr", "10.0.0.5", "--node-name", "a"]).unwrap().unwrap();
        assert_eq!(s.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!((s.node.as_str(), s.lease_ttl_secs), ("a", 15));
        assert_eq!(parse_store("https://e:2379").unwrap(), ["https://e:2379"]);
        assert!(r(&[]).unwrap().is_none());
    }

    #[test]
    fn the_example_configuration_parses_with_every_key_set() {
        let text = include_str!("../../../../dist/hnsd.toml");
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# ").filter(|rest| rest.starts_with('[') || rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))))
            .map(|l| format!("{l}\n"))
            .collect();
        let file: super::super::FileConfig = toml::from_str(&uncommented).unwrap();
        let c = file.cluster.expect("the [cluster] table");
        let s = resolve(&ClusterArgs::default(), Some(&c)).unwrap().unwrap();
        assert_eq!(s.endpoints, ["10.0.0.10:2379", "10.0.0.11:2379"]);
        assert_eq!((s.node.as_str(), s.lease_ttl_secs, s.tls.is_some()), ("host-a", 15, true));
    }

    #[test]
    fn bad_settings_are_named() {
        let e = r(&["--cluster-store", "etcd://10.0.0.1"]).unwrap_err().to_string();
        assert!(e.contains("is not HOST:PORT"), "{e}");
        let e = r(&["--cluster-store", "etcd://10.0.0.1:2379"]).unwrap_err().to_string();
        assert!(e.contains("needs --advertise-addr"), "{e}");
        let e = r(&["--advertise-addr", "10.0.0.5"]).unwrap_err().to_string();
        assert!(e.contains("give it too"), "{e}");
        let base = ["--cluster-store", "e:1", "--advertise-addr", "10.0.0.5", "--node-name", "a"];
        let e = r(&[&base[..], &["--cluster-lease-ttl", "500ms"]].concat()).unwrap_err().to_string();
        assert!(e.contains("whole seconds"), "{e}");
        let e = r(&[&base[..], &["--cluster-ca", "/x"]].concat()).unwrap_err().to_string();
        assert!(e.contains("all three"), "{e}");
        let e = r(&["--cluster-store", "e:1", "--advertise-addr", "10.0.0.5", "--node-name", "a/b"]).unwrap_err().to_string();
        assert!(e.contains("--node-name"), "{e}");
        let e = r(&["--cluster-store", "ftp://e:1", "--advertise-addr", "10.0.0.5"]).unwrap_err().to_string();
        assert!(e.contains("unknown scheme ftp"), "{e}");
    }
}
