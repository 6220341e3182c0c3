//! `hnsctl ps` and `hnsctl rm`: compartments seen as containers.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use hns_api::{HostComputeEndpoint, HostComputeNamespace, HostComputeNetwork};

use super::{Ctx, endpoints_of, lookup, network_name, object_path};
use crate::client::Client;
use crate::error::{CliError, Result};
use crate::output::{print_json, print_line, print_rows, short_id};
use crate::portspec::mappings_in;
use crate::published::{Families, Published, published_all};
use crate::template::Column;
use crate::{PsArgs, RmArgs};

pub const PS_COLUMNS: &[Column] = &[
    Column::new("CONTAINER ID", "ID"),
    Column::new("NAMES", "Names"),
    Column::new("COMMAND", "Command"),
    Column::new("STATUS", "Status"),
    Column::new("PID", "PID"),
    Column::new("PORTS", "Ports"),
    Column::new("NETWORKS", "Networks"),
    Column::new("IP ADDRESS", "IPAddress"),
];

/// The status of a compartment whose process runs.
const RUNNING: &str = "running";

/// Longest command shown without `--no-trunc`.
const COMMAND_WIDTH: usize = 30;

/// Whether the process recorded for a compartment still runs.
///
/// It runs when `/proc/PID` exists, is not a zombie, and (when both can be read) is in the
/// compartment's network namespace: a recycled PID in another namespace is not the process.
pub fn is_running(pid: u32, netns_path: &str) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state letter follows the command name, which is in parentheses and may hold spaces.
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].trim_start().chars().next());
    if matches!(state, Some('Z' | 'X' | 'x')) {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(_) => return false,
    }
    if !netns_path.is_empty()
        && let (Ok(theirs), Ok(ours)) = (std::fs::metadata(format!("/proc/{pid}/ns/net")), std::fs::metadata(netns_path))
    {
        return (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino());
    }
    true
}

fn status(ns: &HostComputeNamespace) -> &'static str {
    if ns.pid == 0 {
        "created"
    } else if is_running(ns.pid, &ns.net_ns_path) {
        RUNNING
    } else {
        "exited"
    }
}

/// `"sleep 1000"` as docker shows it, shortened unless `full`.
pub fn command_cell(command: &[String], full: bool) -> String {
    let joined = command.join(" ");
    let shown = if !full && joined.chars().count() > COMMAND_WIDTH {
        let cut: String = joined.chars().take(COMMAND_WIDTH - 1).collect();
        format!("{cut}…")
    } else {
        joined
    };
    if shown.is_empty() { String::new() } else { format!("\"{shown}\"") }
}

pub fn ps_rows(
    namespaces: &[HostComputeNamespace],
    endpoints: &[HostComputeEndpoint],
    networks: &[HostComputeNetwork],
    full: bool,
    status_of: &dyn Fn(&HostComputeNamespace) -> &'static str,
) -> Vec<Vec<String>> {
    namespaces
        .iter()
        .map(|ns| {
            let eps = endpoints_of(ns, endpoints);
            let mut nets: Vec<String> = eps.iter().map(|ep| network_name(&ep.host_compute_network, networks)).collect();
            nets.dedup();
            let ips: Vec<String> =
                eps.iter().flat_map(|ep| ep.ip_configurations.iter()).map(|c| c.ip_address.clone()).filter(|s| !s.is_empty()).collect();
            let ports: Vec<String> = eps
                .iter()
                .flat_map(|ep| published_all(&mappings_in(&ep.policies), Families::of(ep)))
                .map(|p| Published::ps_cell(&p))
                .collect();
            vec![
                short_id(&ns.id),
                ns.name.clone(),
                command_cell(&ns.command, full),
                status_of(ns).to_owned(),
                if ns.pid == 0 { String::new() } else { ns.pid.to_string() },
                ports.join(", "),
                nets.join(","),
                ips.join(","),
            ]
        })
        .collect()
}

pub fn ps(ctx: &Ctx, a: &PsArgs) -> Result<i32> {
    let client = ctx.client()?;
    let namespaces: Vec<HostComputeNamespace> = client.get("/namespaces")?;
    // Like docker ps: running ones only, unless -a.
    let shown: Vec<HostComputeNamespace> = namespaces.into_iter().filter(|ns| a.all || status(ns) == RUNNING).collect();
    if ctx.json() {
        print_json(&shown)?;
    } else if a.quiet {
        shown.iter().for_each(|ns| print_line(&ns.id));
    } else {
        let endpoints: Vec<HostComputeEndpoint> = client.get("/endpoints")?;
        let networks: Vec<HostComputeNetwork> = client.get("/networks").unwrap_or_default();
        print_rows(&ctx.format, PS_COLUMNS, &ps_rows(&shown, &endpoints, &networks, a.no_trunc, &status))?;
    }
    Ok(0)
}

/// Deletes the endpoints of a compartment, then the compartment. Objects already gone are
/// fine, so a second cleanup (e.g. by `run --rm` after `rm -f`) is harmless.
pub fn remove_compartment(client: &Client, ns_key: &str) -> Result<()> {
    let ns = match client.get::<HostComputeNamespace>(&object_path::<HostComputeNamespace>(ns_key)) {
        Ok(ns) => ns,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    let endpoints: Vec<HostComputeEndpoint> = client.get("/endpoints")?;
    for ep in endpoints_of(&ns, &endpoints) {
        match client.delete(&object_path::<HostComputeEndpoint>(&ep.id)) {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
    }
    match client.delete(&object_path::<HostComputeNamespace>(&ns.id)) {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// Kills the recorded process and waits (briefly) until it is gone.
fn kill_recorded(pid: u32) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    match kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => return Err(CliError::local(format!("cannot kill pid {pid}: {e}"))),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_running(pid, "") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub fn rm(ctx: &Ctx, a: &RmArgs) -> Result<i32> {
    let client = ctx.client()?;
    Ok(super::for_each_name(&a.names, |name| {
        let ns = lookup::<HostComputeNamespace>(&client, name)?;
        if is_running(ns.pid, &ns.net_ns_path) {
            if !a.force {
                return Err(CliError::invalid(format!("container {name} is running (pid {}); stop it or use rm -f", ns.pid)));
            }
            kill_recorded(ns.pid)?;
        }
        remove_compartment(&client, &ns.id)?;
        print_line(name);
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{headers, render_table};
    use crate::portspec::{TCP, UDP, policy};
    use hns_api::{IpConfig, NamespaceResource, PortMappingSettings};

    #[test]
    fn liveness() {
        let me = std::process::id();
        assert!(is_running(me, ""));
        // Our own network namespace matches; a file that is not it does not.
        assert!(is_running(me, &format!("/proc/{me}/ns/net")));
        assert!(!is_running(me, &format!("/proc/{me}/ns/mnt")));
        assert!(!is_running(0, ""));
        assert!(!is_running(u32::MAX, ""));
    }

    #[test]
    fn command_cells() {
        assert_eq!(command_cell(&["sleep".into(), "1000".into()], false), "\"sleep 1000\"");
        assert_eq!(command_cell(&[], false), "");
        let long: Vec<String> = vec!["python3".into(), "-m".into(), "http.server".into(), "--bind".into(), "0.0.0.0".into()];
        assert_eq!(command_cell(&long, false), "\"python3 -m http.server --bind…\"");
        assert_eq!(command_cell(&long, true), "\"python3 -m http.server --bind 0.0.0.0\"");
    }

    #[test]
    fn ps_table() {
        let namespaces = vec![
            HostComputeNamespace {
                id: "aaaa1111-0000-0000-0000-000000000001".into(),
                name: "web".into(),
                pid: 4242,
                command: vec!["sleep".into(), "1000".into()],
                resources: vec![NamespaceResource { kind: "Endpoint".into(), data: serde_json::json!({"ID": "e1"}) }],
                ..Default::default()
            },
            HostComputeNamespace { id: "bbbb2222-0000-0000-0000-000000000002".into(), name: "idle".into(), ..Default::default() },
        ];
        let mapping = |protocol, internal_port, external_port, vip: &str| {
            policy(&PortMappingSettings { protocol, internal_port, external_port, vip: vip.into(), ..Default::default() })
        };
        let endpoints = vec![HostComputeEndpoint {
            id: "e1".into(),
            host_compute_network: "N1".into(),
            ip_configurations: vec![
                IpConfig { ip_address: "172.30.0.2".into(), prefix_length: 16, ..Default::default() },
                IpConfig { ip_address: "fd00::2".into(), prefix_length: 64, ..Default::default() },
            ],
            policies: vec![mapping(TCP, 80, 8080, ""), mapping(UDP, 53, 49153, "127.0.0.1")],
            ..Default::default()
        }];
        let networks = vec![HostComputeNetwork { id: "n1".into(), name: "mynat".into(), ..Default::default() }];
        let status_of = |ns: &HostComputeNamespace| if ns.pid == 0 { "created" } else { "running" };
        let text = render_table(&headers(PS_COLUMNS), &ps_rows(&namespaces, &endpoints, &networks, false, &status_of));
        let expected = "\
CONTAINER ID   NAMES   COMMAND        STATUS    PID    PORTS                                                              NETWORKS   IP ADDRESS
aaaa11110000   web     \"sleep 1000\"   running   4242   0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 127.0.0.1:49153->53/udp   mynat      172.30.0.2,fd00::2
bbbb22220000   idle                   created
";
        assert_eq!(text, expected);
    }
}
