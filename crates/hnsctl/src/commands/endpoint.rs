//! `hnsctl endpoint create|ls|inspect|rm`.

use hns_api::{HostComputeEndpoint, HostComputeNamespace, HostComputeNetwork, IpConfig};

use super::network::{inspect_objects, remove_objects};
use super::{Ctx, network_name};
use crate::LsArgs;
use crate::error::{CliError, Result};
use crate::output::{endpoint_ips, endpoint_state, print_json, print_line, print_rows, same_id, short_id};
use crate::template::Column;

pub const ENDPOINT_COLUMNS: &[Column] = &[
    Column::new("ENDPOINT ID", "ID"),
    Column::new("NAME", "Name"),
    Column::new("NETWORK", "Network"),
    Column::new("IP ADDRESS", "IPAddress"),
    Column::new("MAC", "MacAddress"),
    Column::new("NAMESPACE", "Namespace"),
    Column::new("STATE", "State"),
];

/// The NAMESPACE column: the namespace's name, else its short ID.
fn namespace_label(reference: &str, namespaces: &[HostComputeNamespace]) -> String {
    if reference.is_empty() {
        return String::new();
    }
    match namespaces.iter().find(|ns| same_id(&ns.id, reference) || ns.name == reference) {
        Some(ns) if !ns.name.is_empty() => ns.name.clone(),
        Some(ns) => short_id(&ns.id),
        None => short_id(reference),
    }
}

pub fn endpoint_rows(eps: &[HostComputeEndpoint], nets: &[HostComputeNetwork], namespaces: &[HostComputeNamespace]) -> Vec<Vec<String>> {
    eps.iter()
        .map(|ep| {
            vec![
                short_id(&ep.id),
                ep.name.clone(),
                network_name(&ep.host_compute_network, nets),
                endpoint_ips(ep).join(","),
                ep.mac_address.clone(),
                namespace_label(&ep.host_compute_namespace, namespaces),
                if ep.flags & hns_api::ENDPOINT_FLAG_REMOTE != 0 {
                    // Another host's endpoint on an overlay network.
                    format!("remote on {}", ep.additional_params["Node"].as_str().unwrap_or("another host"))
                } else {
                    endpoint_state(ep.state)
                },
            ]
        })
        .collect()
}

/// The endpoint `endpoint create` asks for; a malformed address is refused naming the flag.
pub fn create_request(net: &str, ips: &[String], mac: Option<String>, name: Option<String>) -> Result<HostComputeEndpoint> {
    let mut ip_configurations = Vec::new();
    for ip in ips {
        let addr: std::net::IpAddr = ip.trim().parse().map_err(|_| CliError::invalid(format!("--ip {ip}: not an IP address")))?;
        ip_configurations.push(IpConfig { ip_address: addr.to_string(), ..Default::default() });
    }
    Ok(HostComputeEndpoint { host_compute_network: net.to_owned(), ip_configurations, mac_address: mac.unwrap_or_default(), name: name.unwrap_or_default(), ..Default::default() })
}

pub fn create(ctx: &Ctx, net: &str, ips: &[String], mac: Option<String>, name: Option<String>) -> Result<i32> {
    let body = create_request(net, ips, mac, name)?;
    let ep: HostComputeEndpoint = ctx.client()?.post("/endpoints", &body)?;
    if ctx.json() {
        print_json(&ep)?;
    } else {
        print_line(&ep.id);
    }
    Ok(0)
}

pub fn ls(ctx: &Ctx, a: &LsArgs) -> Result<i32> {
    let client = ctx.client()?;
    let eps: Vec<HostComputeEndpoint> = client.get("/endpoints")?;
    if ctx.json() {
        print_json(&eps)?;
    } else if a.quiet {
        eps.iter().for_each(|e| print_line(&e.id));
    } else {
        // Names are a nicety: a failure to list networks or namespaces only costs them.
        let nets: Vec<HostComputeNetwork> = client.get("/networks").unwrap_or_default();
        let namespaces: Vec<HostComputeNamespace> = client.get("/namespaces").unwrap_or_default();
        print_rows(&ctx.format, ENDPOINT_COLUMNS, &endpoint_rows(&eps, &nets, &namespaces))?;
    }
    Ok(0)
}

pub fn inspect(ctx: &Ctx, names: &[String]) -> Result<i32> {
    inspect_objects::<HostComputeEndpoint>(ctx, names)
}

pub fn rm(ctx: &Ctx, names: &[String]) -> Result<i32> {
    remove_objects::<HostComputeEndpoint>(ctx, names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{headers, render_table};
    use hns_api::IpConfig;

    #[test]
    fn create_request_types_the_flags() {
        let ep = create_request("ov", &["10.240.0.250".into(), " fd00::fa ".into()], None, Some("lb-source".into())).unwrap();
        assert_eq!((ep.host_compute_network.as_str(), ep.name.as_str()), ("ov", "lb-source"));
        assert_eq!(ep.ip_configurations.iter().map(|c| c.ip_address.as_str()).collect::<Vec<_>>(), ["10.240.0.250", "fd00::fa"]);
        let e = create_request("ov", &["10.240.0.300".into()], None, None).unwrap_err().to_string();
        assert!(e.contains("--ip 10.240.0.300: not an IP address"), "{e}");
    }

    #[test]
    fn endpoint_table() {
        let nets = vec![HostComputeNetwork { id: "5A3D0F6E-9C1B-4B2A-8E7F-001122334455".into(), name: "mynat".into(), ..Default::default() }];
        let namespaces = vec![
            HostComputeNamespace { id: "aaaa1111-0000-0000-0000-000000000001".into(), name: "web".into(), ..Default::default() },
            HostComputeNamespace { id: "bbbb2222-0000-0000-0000-000000000002".into(), ..Default::default() },
        ];
        let eps = vec![
            HostComputeEndpoint {
                id: "0B1C2D3E-4F50-6172-8394-A5B6C7D8E9F0".into(),
                name: "web".into(),
                host_compute_network: "5a3d0f6e-9c1b-4b2a-8e7f-001122334455".into(),
                host_compute_namespace: "AAAA1111-0000-0000-0000-000000000001".into(),
                ip_configurations: vec![IpConfig { ip_address: "172.30.0.2".into(), prefix_length: 16, ..Default::default() }],
                mac_address: "00-15-5D-AC-10-00-02".into(),
                state: 2,
                ..Default::default()
            },
            HostComputeEndpoint {
                id: "1b1c2d3e-4f50-6172-8394-a5b6c7d8e9f1".into(),
                host_compute_network: "mynat".into(),
                host_compute_namespace: "bbbb2222-0000-0000-0000-000000000002".into(),
                state: 4,
                ..Default::default()
            },
            HostComputeEndpoint {
                id: "2b1c2d3e-4f50-6172-8394-a5b6c7d8e9f2".into(),
                name: "lonely".into(),
                host_compute_network: "gone-net".into(),
                state: 1,
                ..Default::default()
            },
        ];
        let remote = HostComputeEndpoint {
            id: "3b1c2d3e-4f50-6172-8394-a5b6c7d8e9f3".into(),
            flags: hns_api::ENDPOINT_FLAG_REMOTE,
            additional_params: serde_json::json!({"Node": "host-b"}),
            ..Default::default()
        };
        assert_eq!(endpoint_rows(&[remote], &nets, &namespaces)[0][6], "remote on host-b");
        let text = render_table(&headers(ENDPOINT_COLUMNS), &endpoint_rows(&eps, &nets, &namespaces));
        let expected = "\
ENDPOINT ID    NAME     NETWORK    IP ADDRESS      MAC                    NAMESPACE      STATE
0b1c2d3e4f50   web      mynat      172.30.0.2/16   00-15-5D-AC-10-00-02   web            attached
1b1c2d3e4f50            mynat                                             bbbb22220000   detached
2b1c2d3e4f50   lonely   gone-net                                                         created
";
        assert_eq!(text, expected);
    }
}
