//! hnsd configuration: built-in defaults, then the TOML file (`--config`, default
//! /etc/hns/hnsd.toml when it exists), then command-line flags, each overriding the previous.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

// Overlay networks: the cluster store and this host's place in it.
pub mod cluster;

pub const DEFAULT_CONFIG: &str = "/etc/hns/hnsd.toml";

#[derive(Debug, Parser)]
#[command(
    name = "hnsd",
    version,
    about = "hns daemon: the Host Networking Service for Linux",
    long_about = "hnsd owns hns networks, endpoints and compartments: it keeps them in its store, programs the kernel \
(bridges, veths, nftables) and serves the HNS v2 API on a unix socket. Clients: hnsctl, Docker, CNI.",
    after_help = "Examples:\n  hnsd --sandbox                      try hns in a throwaway lab (touches nothing on this host)\n  hnsd                                run with /etc/hns/hnsd.toml and the defaults\n  hnsd --no-default-network           do not create the 'nat' network at first start\n  hnsd --cleanup                      remove every hns kernel object and exit (uninstall)"
)]
pub struct Args {
    /// API socket (mode 0600).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Where the store lives.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Runtime files: namespace mounts, resolv.conf files.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Do not create the default `nat` network at first start (Windows' `-b none`).
    #[arg(long)]
    pub no_default_network: bool,
    /// TOML configuration file; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How often drift is repaired, e.g. 10s, 500ms, 1m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub reconcile_interval: Option<Duration>,
    /// Repair drift only at the periodic pass: do not act on the kernel's link and nf_tables
    /// notifications (a deleted bridge or veth, another process flushing hns's tables), which
    /// otherwise start the repair at once.
    #[arg(long)]
    pub no_repair_on_notice: bool,
    /// Host ports that port mappings take when no host port is given, e.g. 49152-65535.
    #[arg(long, value_name = "FROM-TO", value_parser = parse_port_range)]
    pub port_range: Option<(u16, u16)>,
    /// Log filter (tracing env-filter syntax), e.g. info, debug, hnsd=debug. RUST_LOG also works.
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// Print hnsd's manual page (roff, section 8) and exit: hnsd --man > /usr/local/share/man/man8/hnsd.8
    #[arg(long)]
    pub man: bool,
    /// Remove every hns-owned kernel object (links, nft table, namespace mounts) and exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Build a throwaway lab (a host namespace with an uplink to a simulated LAN), run hnsd in
    /// it, and print how to use it. Nothing touches this machine's network.
    #[arg(long)]
    pub sandbox: bool,
    /// Directory of the sandbox (default /run/hns-sandbox); refused unless root owns it and no one
    /// else can write to it.
    #[arg(long, value_name = "DIR", requires = "sandbox")]
    pub sandbox_dir: Option<PathBuf>,
    /// Where Docker looks for plugin sockets: hnsd serves its network drivers (nat.sock,
    /// transparent.sock, ...) and its `hns` IPAM driver there.
    #[arg(long, value_name = "DIR")]
    pub docker_plugin_dir: Option<PathBuf>,
    /// Do not serve the Docker plugins.
    #[arg(long)]
    pub no_docker_plugin: bool,
    /// Connections served at once on the API socket, and on the Docker plugin sockets together
    /// (default 512); beyond it clients wait in the socket's queue.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: Option<u32>,
    /// Time a client has to send a request's headers, and the longest idle time between two
    /// requests on one connection (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub header_timeout: Option<Duration>,
    /// Time a request's body has to arrive after its headers (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub body_timeout: Option<Duration>,
    /// Also serve GET /metrics (Prometheus text) on this TCP address, e.g. 127.0.0.1:9450. Off
    /// by default; the API socket always serves /metrics. No authentication: keep it on loopback
    /// or a management network.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Serve a live, read-only web view of the host on this TCP address, e.g. 127.0.0.1:8080:
    /// the page, and the API's GET routes under /api/ (every other method is refused). Off by
    /// default. No authentication: keep it on loopback or a management network.
    #[arg(long, value_name = "ADDR:PORT")]
    pub web_listen: Option<std::net::SocketAddr>,
    #[command(flatten, next_help_heading = "Overlay networks (cluster)")]
    pub cluster: cluster::ClusterArgs,
}

/// The file form. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub no_default_network: Option<bool>,
    pub reconcile_interval: Option<String>,
    pub no_repair_on_notice: Option<bool>,
    pub port_range: Option<String>,
    pub log: Option<String>,
    pub docker_plugin_dir: Option<PathBuf>,
    pub no_docker_plugin: Option<bool>,
    pub max_connections: Option<u32>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub metrics_listen: Option<String>,
    pub web_listen: Option<String>,
    /// `[cluster]`: see [`cluster::ClusterFile`].
    pub cluster: Option<cluster::ClusterFile>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub no_default_network: bool,
    pub reconcile_interval: Duration,
    /// Act on the kernel's link and nf_tables notifications (`link_watch`, `nft_watch`).
    pub repair_on_notice: bool,
    pub port_range: (u16, u16),
    pub log: String,
    /// Directory of the Docker plugin sockets; `None`: the plugins are off.
    pub docker_plugin_dir: Option<PathBuf>,
    /// Overlay networks: set when a cluster store is configured.
    pub cluster: Option<cluster::ClusterSettings>,
    /// Limits of the API server (and, separately, of the Docker plugin server).
    pub limits: crate::serve::Limits,
    /// TCP address of the metrics listener; `None`: metrics only on the API socket.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// TCP address of the web view; `None`: no web view.
    pub web_listen: Option<std::net::SocketAddr>,
}

/// Defaults of [`crate::serve::Limits`].
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A duration from a flag, else from the file (key `key`), else `default`.
fn duration(flag: Option<Duration>, file: Option<&String>, key: &str, default: Duration) -> anyhow::Result<Duration> {
    match (flag, file) {
        (Some(d), _) => Ok(d),
        (None, Some(s)) => parse_duration(s).map_err(|e| anyhow::anyhow!("config {key}: {e}")),
        (None, None) => Ok(default),
    }
}

pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a port range such as 49152-65535 (first <= last, 1-65535)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration such as 10s, 500ms or 1m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s or m")),
    };
    if d.is_zero() {
        return Err("the interval must be above zero".into());
    }
    Ok(d)
}

impl Config {
    pub fn load(args: &Args) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("config file {}: {e}", p.display()))?),
            None => std::fs::read_to_string(DEFAULT_CONFIG).ok(),
        };
        let fc: FileConfig = match &file {
            Some(text) => toml::from_str(text).map_err(|e| anyhow::anyhow!("config file {}: {e}", args.config.as_deref().unwrap_or(DEFAULT_CONFIG.as_ref()).display()))?,
            None => FileConfig::default(),
        };
        let interval = duration(args.reconcile_interval, fc.reconcile_interval.as_ref(), "reconcile-interval", Duration::from_secs(10))?;
        let max_connections = args.max_connections.or(fc.max_connections).unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            anyhow::bail!("config max-connections: 0 would serve nobody; use 1 or more");
        }
        let limits = crate::serve::Limits {
            max_connections: max_connections as usize,
            header_timeout: duration(args.header_timeout, fc.header_timeout.as_ref(), "header-timeout", DEFAULT_HEADER_TIMEOUT)?,
            body_timeout: duration(args.body_timeout, fc.body_timeout.as_ref(), "body-timeout", DEFAULT_BODY_TIMEOUT)?,
        };
        Ok(Config {
            socket: args.socket.clone().or(fc.socket).unwrap_or_else(|| "/run/hns/hns.sock".into()),
            state_dir: args.state_dir.clone().or(fc.state_dir).unwrap_or_else(|| "/var/lib/hns".into()),
            run_dir: args.run_dir.clone().or(fc.run_dir).unwrap_or_else(|| "/run/hns".into()),
            no_default_network: args.no_default_network || fc.no_default_network.unwrap_or(false),
            reconcile_interval: interval,
            repair_on_notice: !(args.no_repair_on_notice || fc.no_repair_on_notice.unwrap_or(false)),
            port_range: match (&args.port_range, &fc.port_range) {
                (Some(r), _) => *r,
                (None, Some(s)) => parse_port_range(s).map_err(|e| anyhow::anyhow!("config port-range: {e}"))?,
                (None, None) => (49152, 65535),
            },
            log: args.log.clone().or(fc.log).or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".into()),
            docker_plugin_dir: if args.no_docker_plugin || fc.no_docker_plugin.unwrap_or(false) {
                None
            } else {
                Some(args.docker_plugin_dir.clone().or(fc.docker_plugin_dir).unwrap_or_else(|| "/run/docker/plugins".into()))
            },
            cluster: cluster::resolve(&args.cluster, fc.cluster.as_ref())?,
            limits,
            metrics_listen: match (args.metrics_listen, &fc.metrics_listen) {
                (Some(a), _) => Some(a),
                (None, Some(s)) => Some(s.parse().map_err(|_| anyhow::anyhow!("config metrics-listen: {s:?} is not an address and port such as 127.0.0.1:9450"))?),
                (None, None) => None,
            },
            web_listen: match (args.web_listen, &fc.web_listen) {
                (Some(a), _) => Some(a),
                (None, Some(s)) => Some(s.parse().map_err(|_| anyhow::anyhow!("config web-listen: {s:?} is not an address and port such as 127.0.0.1:8080"))?),
                (None, None) => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert_eq!(parse_port_range("40000-40010").unwrap(), (40000, 40010));
        assert!(parse_port_range("10-5").is_err() && parse_port_range("0-5").is_err() && parse_port_range("x").is_err());
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("hnsd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("hnsd.toml");
        std::fs::write(&f, "state-dir = \"/tmp/a\"\nno-default-network = true\nreconcile-interval = \"3s\"\n").unwrap();
        let args = Args::parse_from(["hnsd", "--config", f.to_str().unwrap(), "--state-dir", "/tmp/b"]);
        let c = Config::load(&args).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/tmp/b"));
        assert!(c.no_default_network);
        assert_eq!(c.reconcile_interval, Duration::from_secs(3));
        assert_eq!(c.docker_plugin_dir, Some(PathBuf::from("/run/docker/plugins")));
        assert_eq!(c.limits, crate::serve::Limits { max_connections: 512, header_timeout: Duration::from_secs(10), body_timeout: Duration::from_secs(30) });
        std::fs::write(&f, "max-connections = 64\nheader-timeout = \"2s\"\n").unwrap();
        let c = Config::load(&Args::parse_from(["hnsd", "--config", f.to_str().unwrap(), "--header-timeout", "500ms"])).unwrap();
        assert_eq!((c.limits.max_connections, c.limits.header_timeout), (64, Duration::from_millis(500)));
        std::fs::write(&f, "max-connections = 0\n").unwrap();
        assert!(Config::load(&args).unwrap_err().to_string().contains("max-connections"));
        std::fs::write(&f, "no-docker-plugin = true\n").unwrap();
        assert_eq!(Config::load(&args).unwrap().docker_plugin_dir, None);
        assert_eq!(Config::load(&args).unwrap().metrics_listen, None, "off by default");
        assert_eq!(Config::load(&args).unwrap().web_listen, None, "off by default");
        std::fs::write(&f, "metrics-listen = \"127.0.0.1:9450\"\n").unwrap();
        assert_eq!(Config::load(&args).unwrap().metrics_listen, Some("127.0.0.1:9450".parse().unwrap()));
        std::fs::write(&f, "metrics-listen = \"localhost\"\n").unwrap();
        assert!(Config::load(&args).unwrap_err().to_string().contains("metrics-listen: \"localhost\""));
        std::fs::write(&f, "web-listen = \"127.0.0.1:8080\"\n").unwrap();
        assert_eq!(Config::load(&args).unwrap().web_listen, Some("127.0.0.1:8080".parse().unwrap()));
        let flag = Args::parse_from(["hnsd", "--config", f.to_str().unwrap(), "--web-listen", "127.0.0.1:8081"]);
        assert_eq!(Config::load(&flag).unwrap().web_listen, Some("127.0.0.1:8081".parse().unwrap()), "the flag wins");
        std::fs::write(&f, "web-listen = \"8080\"\n").unwrap();
        assert!(Config::load(&args).unwrap_err().to_string().contains("web-listen: \"8080\""));
        std::fs::write(&f, "bogus = 1\n").unwrap();
        assert!(Config::load(&args).unwrap_err().to_string().contains("bogus"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
