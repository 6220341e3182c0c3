//! Output: docker-like tables and pretty JSON of the API objects.

use std::io::Write;

use serde::Serialize;

use hns_api::{HostComputeEndpoint, HostComputeNetwork, IpConfig, state};

use crate::error::{CliError, Result};
use crate::template::{Column, Template};

/// `--format`: how lists are printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// The API objects as pretty JSON.
    Json,
    /// One line per row from a `{{.Field}}` template (commands that list rows).
    Template(Template),
}

impl Format {
    /// The value of `--format`: `table` (or `text`), `json` or a template.
    pub fn parse(text: &str) -> std::result::Result<Format, String> {
        match text {
            "table" | "text" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            t if t.contains("{{") => Template::parse(t).map(Format::Template),
            _ => Err("expected table, json, or a template such as '{{.ID}}\\t{{.Name}}'".into()),
        }
    }
}

/// Columns are separated by this many spaces, like `docker ps`.
const GAP: usize = 3;

/// Renders a table with upper-case headers; every line ends with a newline, without trailing
/// blanks.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            text.push_str(cell);
            let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count()) + GAP;
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

pub fn headers(columns: &[Column]) -> Vec<&'static str> {
    columns.iter().map(|c| c.header).collect()
}

/// The rows as a table under the columns' headers, or through the `--format` template.
pub fn print_rows(format: &Format, columns: &[Column], rows: &[Vec<String>]) -> Result<()> {
    let text = match format {
        Format::Template(t) => t.render(columns, rows).map_err(CliError::invalid)?,
        Format::Table | Format::Json => render_table(&headers(columns), rows),
    };
    print_str(&text);
    Ok(())
}

/// Pretty JSON of any API object or list.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| CliError::local(format!("cannot encode JSON: {e}")))
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let mut text = to_json(value)?;
    text.push('\n');
    print_str(&text);
    Ok(())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
pub fn print_str(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

pub fn print_line(text: &str) {
    print_str(&format!("{text}\n"));
}

/// The ID column form of a GUID: its first 12 hex digits, lower case, without dashes or braces.
pub fn short_id(id: &str) -> String {
    id.chars().filter(char::is_ascii_hexdigit).take(12).map(|c| c.to_ascii_lowercase()).collect()
}

/// True when two spellings of an ID denote the same GUID (case, braces and dashes ignored).
pub fn same_id(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect::<String>();
    !a.is_empty() && norm(a) == norm(b)
}

/// The gateways of a network: the next hop of each subnet's default route.
pub fn gateways(net: &HostComputeNetwork) -> Vec<String> {
    net.subnets()
        .flat_map(|s| s.routes.iter())
        .filter(|r| r.destination_prefix == "0.0.0.0/0" || r.destination_prefix == "::/0")
        .filter(|r| !r.next_hop.is_empty())
        .map(|r| r.next_hop.clone())
        .collect()
}

pub fn subnets(net: &HostComputeNetwork) -> Vec<String> {
    net.subnets().map(|s| s.ip_address_prefix.clone()).filter(|s| !s.is_empty()).collect()
}

/// `docker network ls` driver names: the network type in lower case.
pub fn driver_name(net: &HostComputeNetwork) -> String {
    net.network_type().as_str().to_ascii_lowercase()
}

/// `address/len`, or the bare address when the length is unknown.
pub fn ip_with_len(c: &IpConfig) -> String {
    if c.prefix_length == 0 { c.ip_address.clone() } else { format!("{}/{}", c.ip_address, c.prefix_length) }
}

pub fn endpoint_ips(ep: &HostComputeEndpoint) -> Vec<String> {
    ep.ip_configurations.iter().filter(|c| !c.ip_address.is_empty()).map(ip_with_len).collect()
}

pub fn endpoint_state(s: u16) -> String {
    match s {
        0 => String::new(),
        state::CREATED => "created".into(),
        state::ATTACHED => "attached".into(),
        state::DETACHED => "detached".into(),
        n => n.to_string(),
    }
}

pub fn network_rows(nets: &[HostComputeNetwork]) -> Vec<Vec<String>> {
    nets.iter()
        .map(|n| {
            let dns = n.dns.clone().unwrap_or_default();
            vec![
                short_id(&n.id),
                n.name.clone(),
                driver_name(n),
                subnets(n).join(","),
                gateways(n).join(","),
                n.internal.to_string(),
                dns.server_list.join(","),
                dns.domain,
            ]
        })
        .collect()
}

/// `network ls`: docker's columns, then what Get-ContainerNetwork shows besides.
pub const NETWORK_COLUMNS: &[Column] = &[
    Column::new("NETWORK ID", "ID"),
    Column::new("NAME", "Name"),
    Column::new("DRIVER", "Driver"),
    Column::new("SUBNET", "Subnet"),
    Column::new("GATEWAY", "Gateway"),
    Column::new("INTERNAL", "Internal"),
    Column::new("DNS SERVERS", "DNSServers"),
    Column::new("DNS SUFFIX", "DNSSuffix"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use hns_api::{Dns, Ipam, IpamType, NetworkType, Route, Subnet};

    fn net(id: &str, name: &str, kind: Option<NetworkType>, subnets: &[(&str, Option<&str>)]) -> HostComputeNetwork {
        HostComputeNetwork {
            id: id.into(),
            name: name.into(),
            kind,
            ipams: vec![Ipam {
                kind: IpamType::Static,
                subnets: subnets
                    .iter()
                    .map(|(p, gw)| Subnet {
                        ip_address_prefix: (*p).into(),
                        routes: gw
                            .map(|g| Route {
                                next_hop: g.into(),
                                destination_prefix: if g.contains(':') { "::/0".into() } else { "0.0.0.0/0".into() },
                                metric: 0,
                            })
                            .into_iter()
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_id("5A3D0F6E-9C1B-4B2A-8E7F-001122334455"), "5a3d0f6e9c1b");
        assert_eq!(short_id("{5a3d0f6e-9c1b-4b2a-8e7f-001122334455}"), "5a3d0f6e9c1b");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id(""), "");
        assert!(same_id("{5A3D0F6E-9C1B-4B2A-8E7F-001122334455}", "5a3d0f6e-9c1b-4b2a-8e7f-001122334455"));
        assert!(!same_id("", ""));
    }

    #[test]
    fn network_table() {
        let nets = vec![
            net("5A3D0F6E-9C1B-4B2A-8E7F-001122334455", "nat", None, &[("172.20.0.0/16", Some("172.20.0.1"))]),
            net(
                "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
                "mynet",
                Some(NetworkType::L2Bridge),
                &[("10.1.0.0/24", Some("10.1.0.1")), ("fd00::/64", Some("fd00::1"))],
            ),
            HostComputeNetwork {
                internal: true,
                dns: Some(Dns { domain: "corp.example".into(), server_list: vec!["10.0.0.53".into(), "10.0.0.54".into()], ..Default::default() }),
                ..net("11111111-2222-3333-4444-555555555555", "quiet", Some(NetworkType::Transparent), &[])
            },
        ];
        let text = render_table(&headers(NETWORK_COLUMNS), &network_rows(&nets));
        let expected = "\
NETWORK ID     NAME    DRIVER        SUBNET                  GATEWAY            INTERNAL   DNS SERVERS           DNS SUFFIX
5a3d0f6e9c1b   nat     nat           172.20.0.0/16           172.20.0.1         false
0b1c2d3e4f50   mynet   l2bridge      10.1.0.0/24,fd00::/64   10.1.0.1,fd00::1   false
111111112222   quiet   transparent                                              true       10.0.0.53,10.0.0.54   corp.example
";
        assert_eq!(text, expected);
    }

    #[test]
    fn empty_table_is_just_the_header() {
        assert_eq!(render_table(&["A", "BB"], &[]), "A   BB\n");
    }

    #[test]
    fn format_values() {
        assert_eq!(Format::parse("table"), Ok(Format::Table));
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert!(matches!(Format::parse("{{.Name}}"), Ok(Format::Template(_))));
        assert!(matches!(Format::parse("table {{.Name}}\\t{{.ID}}"), Ok(Format::Template(_))));
        assert!(Format::parse("yaml").unwrap_err().contains("expected table, json, or a template"));
        assert!(Format::parse("{{.Name").is_err());
    }

    #[test]
    fn endpoint_helpers() {
        let ep = HostComputeEndpoint {
            ip_configurations: vec![
                IpConfig { ip_address: "172.20.0.2".into(), prefix_length: 16, ..Default::default() },
                IpConfig { ip_address: "fd00::2".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        assert_eq!(endpoint_ips(&ep), vec!["172.20.0.2/16", "fd00::2"]);
        assert_eq!(endpoint_state(1), "created");
        assert_eq!(endpoint_state(2), "attached");
        assert_eq!(endpoint_state(4), "detached");
        assert_eq!(endpoint_state(9), "9");
    }
}
