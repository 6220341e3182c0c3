//! What the flags of `hnsctl lb create` stand for in a `HostComputeLoadBalancer`, and how one
//! is summed up on a line of `hnsctl lb ls`.
//!
//! `--port [PROTO/]EXTERNAL[:INTERNAL]` (proto tcp or udp, default tcp; INTERNAL defaults to
//! EXTERNAL) is one entry of `PortMappings`. The protocol comes first, not last as in `run -p`,
//! because the two ports of a load balancer are not a host and a container port: the order
//! reads as "what clients connect to, then where the backends listen". The address family is
//! that of the `--vip`s (`--ipv6` only matters without one), so a family mix-up is named here
//! by flag rather than by the API's field path.

use std::net::IpAddr;

use hns_api::{DistributionType, HostComputeLoadBalancer, LB_FLAG_DSR, LB_FLAG_IPV6, LB_PM_ILB, LB_PM_LOCAL_ROUTED_VIP, LB_PM_PRESERVE_DIP, LB_PM_USE_MUX, LoadBalancerPortMapping};

use crate::portspec::{TCP, UDP};

/// `--affinity`: how a backend is chosen for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Affinity {
    /// Each new connection goes to any backend (DistributionType None).
    #[default]
    None,
    /// A client address always reaches the same backend (SourceIP).
    Source,
    /// A client address and protocol always reach the same backend (SourceIPProtocol).
    SourceProto,
}

impl Affinity {
    pub fn distribution(self) -> DistributionType {
        match self {
            Affinity::None => DistributionType::None,
            Affinity::Source => DistributionType::SourceIp,
            Affinity::SourceProto => DistributionType::SourceIpProtocol,
        }
    }
}

/// The form of `--port`, for error messages.
pub const PORT_FORM: &str = "[tcp/|udp/]EXTERNAL[:INTERNAL], e.g. tcp/80:8080";

fn port_number(text: &str, which: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(format!("{which} port {text:?} is not a number 1-65535")),
    }
}

/// One `--port` value as a port mapping (without flags or distribution).
pub fn parse_port(spec: &str) -> Result<LoadBalancerPortMapping, String> {
    let err = |rule: String| format!("--port {spec}: {rule}");
    let (proto_text, ports) = match spec.split_once('/') {
        Some((p, rest)) => (Some(p), rest),
        None => (None, spec),
    };
    let protocol = match proto_text.map(str::to_ascii_lowercase).as_deref() {
        None | Some("tcp") => TCP,
        Some("udp") => UDP,
        Some("") => return Err(err(format!("the protocol before / is missing; write {PORT_FORM}"))),
        Some(other) if other.chars().all(|c| c.is_ascii_digit() || c == ':') && ["tcp", "udp"].contains(&ports.to_ascii_lowercase().as_str()) => {
            // docker's `80:8080/udp` order: say where the protocol goes.
            return Err(err(format!("the protocol goes first: {}/{other}", ports.to_ascii_lowercase())));
        }
        Some(other) => return Err(err(format!("protocol {other:?} is not tcp or udp"))),
    };
    let (external, internal) = match ports.split_once(':') {
        Some((e, i)) => (e, Some(i)),
        None => (ports, None),
    };
    if external.is_empty() {
        return Err(err(format!("the external port is missing; write {PORT_FORM}")));
    }
    let external_port = port_number(external, "external").map_err(err)?;
    let internal_port = match internal {
        Some(i) => port_number(i, "internal").map_err(err)?,
        None => external_port,
    };
    Ok(LoadBalancerPortMapping { protocol, internal_port, external_port, ..Default::default() })
}

/// The `Flags` of a load balancer's family, from `--vip`s and `--ipv6`; errors name the flags.
pub fn family_flags(vips: &[String], ipv6: bool) -> Result<u32, String> {
    let mut v6 = None::<(bool, &str)>;
    for v in vips {
        let ip: IpAddr = v.trim().parse().map_err(|_| format!("--vip {v}: not an IP address"))?;
        match v6 {
            Some((fam, first)) if fam != ip.is_ipv6() => {
                return Err(format!("--vip {first} and --vip {v}: a load balancer has one address family; create one per family"));
            }
            _ => v6 = Some((ip.is_ipv6(), v)),
        }
    }
    match v6 {
        Some((false, first)) if ipv6 => Err(format!("--ipv6 with --vip {first}: that VIP is IPv4; leave out --ipv6 or give IPv6 VIPs")),
        Some((fam, _)) => Ok(if fam { LB_FLAG_IPV6 } else { 0 }),
        None => Ok(if ipv6 { LB_FLAG_IPV6 } else { 0 }),
    }
}

/// `tcp/80:8080` (the `--port` form, shown the way it is given).
pub fn port_text(pm: &LoadBalancerPortMapping) -> String {
    let proto = match pm.protocol {
        TCP => "tcp".to_owned(),
        UDP => "udp".to_owned(),
        n => n.to_string(),
    };
    format!("{proto}/{}:{}", pm.external_port, pm.internal_port)
}

/// The words of the FLAGS column: the load balancer's own flags, then those of its port
/// mappings (qualified by port when the mappings differ), in `lb create`'s flag names.
pub fn flag_words(lb: &HostComputeLoadBalancer) -> Vec<String> {
    let mut words = Vec::new();
    if lb.flags & LB_FLAG_IPV6 != 0 {
        words.push("ipv6".to_owned());
    }
    if lb.flags & LB_FLAG_DSR != 0 {
        words.push("dsr".to_owned());
    }
    let pm_words = |pm: &LoadBalancerPortMapping| {
        let mut w = Vec::new();
        for (bit, name) in [(LB_PM_ILB, "internal"), (LB_PM_LOCAL_ROUTED_VIP, "local-routed"), (LB_PM_USE_MUX, "use-mux"), (LB_PM_PRESERVE_DIP, "preserve-dip")] {
            if pm.flags & bit != 0 {
                w.push(name.to_owned());
            }
        }
        match pm.distribution_type {
            DistributionType::None => {}
            DistributionType::SourceIp => w.push("affinity=source".to_owned()),
            DistributionType::SourceIpProtocol => w.push("affinity=source-proto".to_owned()),
        }
        w
    };
    let per_port: Vec<Vec<String>> = lb.port_mappings.iter().map(pm_words).collect();
    if per_port.windows(2).all(|w| w[0] == w[1]) {
        words.extend(per_port.into_iter().next().unwrap_or_default());
    } else {
        for (pm, w) in lb.port_mappings.iter().zip(per_port) {
            words.extend(w.into_iter().map(|w| format!("{w}({})", port_text(pm))));
        }
    }
    if !lb.source_vip.is_empty() {
        words.push(format!("source-vip={}", lb.source_vip));
    }
    words
}

/// The VIPS column: the frontend addresses, or `*` for every host address (node-port style).
pub fn vips_text(lb: &HostComputeLoadBalancer) -> String {
    if lb.frontend_vips.is_empty() { "*".to_owned() } else { lb.frontend_vips.join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forms() {
        let pm = parse_port("tcp/80:8080").unwrap();
        assert_eq!((pm.protocol, pm.external_port, pm.internal_port), (TCP, 80, 8080));
        let pm = parse_port("UDP/53").unwrap();
        assert_eq!((pm.protocol, pm.external_port, pm.internal_port), (UDP, 53, 53));
        let pm = parse_port("443:8443").unwrap();
        assert_eq!((pm.protocol, pm.external_port, pm.internal_port), (TCP, 443, 8443));
        assert_eq!(port_text(&parse_port("udp/53:5353").unwrap()), "udp/53:5353");
    }

    #[test]
    fn bad_ports_name_the_flag_the_value_and_the_rule() {
        assert_eq!(parse_port("tcp/80:x").unwrap_err(), "--port tcp/80:x: internal port \"x\" is not a number 1-65535");
        assert_eq!(parse_port("tcp/0:80").unwrap_err(), "--port tcp/0:80: external port \"0\" is not a number 1-65535");
        assert_eq!(parse_port("80:70000").unwrap_err(), "--port 80:70000: internal port \"70000\" is not a number 1-65535");
        assert_eq!(parse_port("sctp/80").unwrap_err(), "--port sctp/80: protocol \"sctp\" is not tcp or udp");
        assert_eq!(parse_port("80:8080/udp").unwrap_err(), "--port 80:8080/udp: the protocol goes first: udp/80:8080");
        assert!(parse_port("tcp/").unwrap_err().contains("the external port is missing"));
    }

    #[test]
    fn family_from_vips() {
        assert_eq!(family_flags(&[], false), Ok(0));
        assert_eq!(family_flags(&[], true), Ok(LB_FLAG_IPV6));
        assert_eq!(family_flags(&["fd00::10".into()], false), Ok(LB_FLAG_IPV6));
        assert_eq!(family_flags(&["10.96.0.10".into(), "10.96.0.11".into()], false), Ok(0));
        assert_eq!(family_flags(&["10.96.0.300".into()], false).unwrap_err(), "--vip 10.96.0.300: not an IP address");
        let e = family_flags(&["10.96.0.10".into(), "fd00::10".into()], false).unwrap_err();
        assert_eq!(e, "--vip 10.96.0.10 and --vip fd00::10: a load balancer has one address family; create one per family");
        assert!(family_flags(&["10.96.0.10".into()], true).unwrap_err().starts_with("--ipv6 with --vip 10.96.0.10"));
    }

    #[test]
    fn flags_column() {
        let pm = |ext: u16, flags: u32, d: DistributionType| LoadBalancerPortMapping { protocol: TCP, internal_port: 8080, external_port: ext, distribution_type: d, flags };
        let lb = HostComputeLoadBalancer { port_mappings: vec![pm(80, LB_PM_ILB, DistributionType::SourceIp), pm(81, LB_PM_ILB, DistributionType::SourceIp)], flags: LB_FLAG_IPV6, ..Default::default() };
        assert_eq!(flag_words(&lb), ["ipv6", "internal", "affinity=source"]);
        let lb = HostComputeLoadBalancer { port_mappings: vec![pm(80, LB_PM_PRESERVE_DIP, DistributionType::None)], flags: LB_FLAG_DSR, ..Default::default() };
        assert_eq!(flag_words(&lb), ["dsr", "preserve-dip"]);
        let lb = HostComputeLoadBalancer { port_mappings: vec![pm(80, LB_PM_LOCAL_ROUTED_VIP, DistributionType::None), pm(81, 0, DistributionType::None)], source_vip: "10.0.0.1".into(), ..Default::default() };
        assert_eq!(flag_words(&lb), ["local-routed(tcp/80:8080)", "source-vip=10.0.0.1"]);
        assert_eq!(vips_text(&lb), "*");
    }
}
