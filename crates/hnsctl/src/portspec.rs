//! Port mapping specs in docker's `-p`/`--publish` forms, turned into the settings of
//! `PortMapping` endpoint policies, and mappings shown the way `docker port` shows them.
//!
//! Accepted forms, each optionally followed by `/tcp` or `/udp` (tcp when absent):
//!
//! | spec                   | mappings                                                          |
//! |------------------------|-------------------------------------------------------------------|
//! | `CPORT`                | one, host port chosen by hnsd (`ExternalPort` 0)                  |
//! | `HOSTPORT:CPORT`       | one                                                               |
//! | `HOSTIP:HOSTPORT:CPORT`| one, bound to `HOSTIP` (`VIP`)                                    |
//! | `HOSTIP::CPORT`        | one, bound, host port chosen                                      |
//! | `H1-H2:C1-C2`          | one per pair (the ranges must have the same length)               |
//! | `H1-H2:CPORT`          | one, host port chosen from the range (`ExternalPortRange`)        |
//! | `C1-C2`                | one per container port, each with a chosen host port              |
//!
//! IPv6 host addresses go in brackets (`[::1]:8080:80`, `[2001:db8::1]::80`); the unbracketed
//! form docker also takes (`::1:8080:80`: the last two fields are the ports) is accepted too.
//! The host address `0.0.0.0` means every host address, which the API spells as an empty `VIP`.
//!
//! Only the shape and the numbers are checked here; whether an address is one of the host's,
//! or whether IPv6 mappings are supported, is for hnsd to say.

use std::net::IpAddr;

use hns_api::{Policy, PortMappingSettings};

pub const TCP: u32 = 6;
pub const UDP: u32 = 17;

/// The endpoint policy type that carries a mapping.
pub const POLICY_TYPE: &str = "PortMapping";

/// The forms, for error messages.
const FORMS: &str = "[HOSTIP:][HOSTPORT:]CPORT[/tcp|/udp]";

/// Parses one spec into the mappings it stands for (several for port ranges). The error names
/// the spec and the rule it breaks.
pub fn parse_publish(spec: &str) -> Result<Vec<PortMappingSettings>, String> {
    parse(spec).map_err(|rule| format!("invalid port mapping {spec:?}: {rule}"))
}

/// Parses several specs, in order.
pub fn parse_all(specs: &[String]) -> Result<Vec<PortMappingSettings>, String> {
    let mut all = Vec::new();
    for spec in specs {
        all.extend(parse_publish(spec)?);
    }
    Ok(all)
}

/// `PRIVATE_PORT[/PROTO]` of `hnsctl port CONTAINER 80/tcp`: the container port and protocol
/// (tcp when absent, as docker takes it).
pub fn parse_private_port(text: &str) -> Result<(u16, u32), String> {
    let rule = |rule: String| format!("invalid private port {text:?}: {rule}");
    let (digits, proto) = match text.split_once('/') {
        None => (text, TCP),
        Some((digits, proto)) => (digits, protocol(proto).map_err(rule)?),
    };
    if digits.is_empty() {
        return Err(rule("the container port is missing; write CPORT[/tcp|/udp], e.g. 80/tcp".into()));
    }
    Ok((port(digits, "container").map_err(rule)?, proto))
}

/// A port or an inclusive port range as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ports {
    first: u16,
    last: u16,
    range: bool,
}

impl Ports {
    fn len(self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    fn iter(self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }
}

impl std::fmt::Display for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.range { write!(f, "{}-{}", self.first, self.last) } else { write!(f, "{}", self.first) }
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

fn parse(spec: &str) -> Result<Vec<PortMappingSettings>, String> {
    if spec.trim().is_empty() {
        return Err(format!("it is empty; write {FORMS}"));
    }
    let (rest, protocol) = match spec.split_once('/') {
        None => (spec, TCP),
        Some((rest, proto)) => (rest, protocol(proto)?),
    };
    let (ip, host, container) = split_fields(rest)?;
    let vip = match ip {
        Some(text) => host_ip(text)?,
        None => String::new(),
    };
    let cports = ports(container, "container")?;
    let hports = host.map(|h| ports(h, "host")).transpose()?;
    let mapping = |internal_port: u16, external_port: u16, external_port_range: String| PortMappingSettings {
        protocol,
        internal_port,
        external_port,
        vip: vip.clone(),
        flags: 0,
        external_port_range,
    };
    match hports {
        None => Ok(cports.iter().map(|c| mapping(c, 0, String::new())).collect()),
        Some(h) if h.len() == cports.len() => Ok(h.iter().zip(cports.iter()).map(|(h, c)| mapping(c, h, String::new())).collect()),
        Some(h) if cports.len() == 1 => Ok(vec![mapping(cports.first, 0, h.to_string())]),
        Some(h) if !h.range => Err(format!(
            "host port {h} is a single port but container range {cports} has {}; give a host range of the same length, \
             or leave the host port out to let hnsd choose one per container port",
            plural(cports.len(), "port")
        )),
        Some(h) => Err(format!("host range {h} has {} but container range {cports} has {}", plural(h.len(), "port"), cports.len())),
    }
}

fn protocol(text: &str) -> Result<u32, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(TCP),
        "udp" => Ok(UDP),
        "" => Err("the protocol after '/' is missing; use tcp or udp".into()),
        "sctp" => Err("protocol sctp is not supported; use tcp or udp".into()),
        _ => Err(format!("unknown protocol {text:?}; use tcp or udp")),
    }
}

/// Splits `[HOSTIP:][HOSTPORT:]CPORT` into (host address, host ports, container ports); an
/// empty host address or host port part counts as absent.
fn split_fields(s: &str) -> Result<(Option<&str>, Option<&str>, &str), String> {
    fn nonempty(t: &str) -> Option<&str> {
        if t.is_empty() { None } else { Some(t) }
    }
    if let Some(bracketed) = s.strip_prefix('[') {
        let (ip, after) = bracketed.split_once(']').ok_or("the '[' of the host address has no ']'")?;
        if ip.is_empty() {
            return Err("the brackets hold no host address".into());
        }
        let Some((host, container)) = after.strip_prefix(':').and_then(|a| a.split_once(':')) else {
            return Err(format!("a host address needs the host port field too: [{ip}]:HOSTPORT:CPORT, or [{ip}]::CPORT to let hnsd choose the host port"));
        };
        if container.contains(':') {
            return Err(format!("too many ':' fields after [{ip}]; write [{ip}]:HOSTPORT:CPORT"));
        }
        return Ok((Some(ip), nonempty(host), container));
    }
    if s.contains(['[', ']']) {
        return Err("brackets go around the host address only, at the start: [::1]:8080:80".into());
    }
    let fields: Vec<&str> = s.split(':').collect();
    let n = fields.len();
    let container = fields[n - 1];
    match n {
        1 => Ok((None, None, container)),
        2 => Ok((None, nonempty(fields[0]), container)),
        3 => Ok((nonempty(fields[0]), nonempty(fields[1]), container)),
        // docker's reading of an unbracketed IPv6 address: the last two fields are the ports.
        _ => {
            let ip = fields[..n - 2].join(":");
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("too many ':' fields; an IPv6 host address goes in brackets: [{ip}]:HOSTPORT:CPORT"));
            }
            let ip_len = ip.len();
            Ok((Some(&s[..ip_len]), nonempty(fields[n - 2]), container))
        }
    }
}

/// The `VIP` for a host address: its canonical text, or empty for `0.0.0.0` (every address).
fn host_ip(text: &str) -> Result<String, String> {
    let ip: IpAddr = text.parse().map_err(|_| format!("host address {text:?} is not an IP address"))?;
    Ok(match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => String::new(),
        other => other.to_string(),
    })
}

/// `80` or `8000-8010`; `which` is "host" or "container".
fn ports(text: &str, which: &str) -> Result<Ports, String> {
    if text.is_empty() {
        return Err(format!("the {which} port is missing; write {FORMS}"));
    }
    match text.split_once('-') {
        None => port(text, which).map(|p| Ports { first: p, last: p, range: false }),
        Some((a, b)) => {
            if a.is_empty() || b.is_empty() || b.contains('-') {
                return Err(format!("{which} range {text:?} is malformed; write FIRST-LAST, e.g. 8000-8010"));
            }
            let (first, last) = (port(a, which)?, port(b, which)?);
            if first > last {
                return Err(format!("{which} range {text} ends before it starts; write the lower port first"));
            }
            Ok(Ports { first, last, range: true })
        }
    }
}

fn port(text: &str, which: &str) -> Result<u16, String> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        let mut rule = format!("{which} port {text:?} is not a number");
        if which == "host" && text.parse::<IpAddr>().is_ok() {
            rule.push_str("; with a host address write HOSTIP:HOSTPORT:CPORT, or HOSTIP::CPORT to let hnsd choose the host port");
        }
        return Err(rule);
    }
    let digits = text.trim_start_matches('0');
    match digits.parse::<u32>() {
        _ if digits.is_empty() => Err(if which == "host" {
            "host port 0 is not a port (ports are 1-65535); leave the host port out to let hnsd choose one".into()
        } else {
            "container port 0 is not a port (ports are 1-65535)".into()
        }),
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(format!("{which} port {text} is above 65535")),
    }
}

/// `tcp`, `udp`, or the protocol number.
pub fn protocol_name(protocol: u32) -> String {
    match protocol {
        TCP => "tcp".into(),
        UDP => "udp".into(),
        n => n.to_string(),
    }
}

/// A host address as it appears before `:PORT`: IPv6 in brackets, `0.0.0.0` when unbound.
pub fn host_address(vip: &str) -> String {
    if vip.is_empty() {
        "0.0.0.0".into()
    } else if vip.contains(':') {
        format!("[{vip}]")
    } else {
        vip.to_owned()
    }
}

/// The endpoint policy that carries a mapping.
pub fn policy(m: &PortMappingSettings) -> Policy {
    Policy { kind: POLICY_TYPE.into(), settings: serde_json::to_value(m).unwrap_or_default() }
}

/// The mappings among an endpoint's policies, in order. Fields the settings type does not know
/// (a newer hnsd may add read-only ones) are ignored rather than failing the whole reply.
pub fn mappings_in(policies: &[Policy]) -> Vec<PortMappingSettings> {
    const KNOWN: &[&str] = &["Protocol", "InternalPort", "ExternalPort", "VIP", "Flags", "ExternalPortRange"];
    policies
        .iter()
        .filter(|p| p.kind.eq_ignore_ascii_case(POLICY_TYPE))
        .filter_map(|p| {
            let mut settings = p.settings.clone();
            if let Some(obj) = settings.as_object_mut() {
                obj.retain(|k, _| KNOWN.contains(&k.as_str()));
            }
            serde_json::from_value(settings).ok()
        })
        .collect()
}

/// True when both name the same host side (what hnsd matches a removal on): protocol, host
/// port and host address, `0.0.0.0` being the same as no address.
pub fn same_host_side(a: &PortMappingSettings, b: &PortMappingSettings) -> bool {
    let vip = |m: &PortMappingSettings| if m.vip == "0.0.0.0" { String::new() } else { m.vip.to_ascii_lowercase() };
    a.protocol == b.protocol && a.external_port == b.external_port && vip(a) == vip(b)
}

/// The mappings of `after` that `before` does not have (each of `before` accounts for one).
pub fn difference(after: &[PortMappingSettings], before: &[PortMappingSettings]) -> Vec<PortMappingSettings> {
    let mut left: Vec<&PortMappingSettings> = before.iter().collect();
    after
        .iter()
        .filter(|m| match left.iter().position(|b| same_host_side(m, b)) {
            Some(i) => {
                left.remove(i);
                false
            }
            None => true,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(protocol: u32, internal_port: u16, external_port: u16, vip: &str, range: &str) -> PortMappingSettings {
        PortMappingSettings { protocol, internal_port, external_port, vip: vip.into(), flags: 0, external_port_range: range.into() }
    }

    fn ok(spec: &str) -> Vec<PortMappingSettings> {
        parse_publish(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    fn err(spec: &str) -> String {
        match parse_publish(spec) {
            Ok(v) => panic!("{spec} parsed as {v:?}"),
            Err(e) => {
                assert!(e.starts_with(&format!("invalid port mapping {spec:?}: ")), "{e}");
                e
            }
        }
    }

    #[test]
    fn container_port_only() {
        assert_eq!(ok("80"), vec![m(TCP, 80, 0, "", "")]);
        assert_eq!(ok("53/udp"), vec![m(UDP, 53, 0, "", "")]);
        assert_eq!(ok("80/TCP"), vec![m(TCP, 80, 0, "", "")]);
        assert_eq!(ok("65535"), vec![m(TCP, 65535, 0, "", "")]);
        // docker takes an empty host port field as "choose one".
        assert_eq!(ok(":80"), vec![m(TCP, 80, 0, "", "")]);
    }

    #[test]
    fn host_and_container_ports() {
        assert_eq!(ok("8080:80"), vec![m(TCP, 80, 8080, "", "")]);
        assert_eq!(ok("5353:53/udp"), vec![m(UDP, 53, 5353, "", "")]);
        assert_eq!(ok("1:65535"), vec![m(TCP, 65535, 1, "", "")]);
        assert_eq!(ok("08080:080"), vec![m(TCP, 80, 8080, "", "")]);
    }

    #[test]
    fn bound_to_a_host_address() {
        assert_eq!(ok("127.0.0.1:8080:80"), vec![m(TCP, 80, 8080, "127.0.0.1", "")]);
        assert_eq!(ok("127.0.0.1::80"), vec![m(TCP, 80, 0, "127.0.0.1", "")]);
        assert_eq!(ok("10.0.0.1::53/udp"), vec![m(UDP, 53, 0, "10.0.0.1", "")]);
        // 0.0.0.0 is every host address: no VIP.
        assert_eq!(ok("0.0.0.0:8080:80"), vec![m(TCP, 80, 8080, "", "")]);
        assert_eq!(ok("::80"), vec![m(TCP, 80, 0, "", "")]);
    }

    #[test]
    fn ipv6_host_addresses() {
        assert_eq!(ok("[::1]:8080:80"), vec![m(TCP, 80, 8080, "::1", "")]);
        assert_eq!(ok("[2001:db8::1]::80"), vec![m(TCP, 80, 0, "2001:db8::1", "")]);
        assert_eq!(ok("[2001:DB8:0::1]:8080:80/udp"), vec![m(UDP, 80, 8080, "2001:db8::1", "")]);
        assert_eq!(ok("[::]:8080:80"), vec![m(TCP, 80, 8080, "::", "")]);
        assert_eq!(ok("[127.0.0.1]:8080:80"), vec![m(TCP, 80, 8080, "127.0.0.1", "")]);
        assert_eq!(ok("[::1]:8000-8001:80-81"), vec![m(TCP, 80, 8000, "::1", ""), m(TCP, 81, 8001, "::1", "")]);
        // docker's unbracketed form: the last two fields are the ports.
        assert_eq!(ok("::1:8080:80"), vec![m(TCP, 80, 8080, "::1", "")]);
        assert_eq!(ok("2001:db8::1::80"), vec![m(TCP, 80, 0, "2001:db8::1", "")]);
    }

    #[test]
    fn ranges() {
        assert_eq!(ok("8000-8002:80-82"), vec![m(TCP, 80, 8000, "", ""), m(TCP, 81, 8001, "", ""), m(TCP, 82, 8002, "", "")]);
        assert_eq!(ok("8000-8010:80"), vec![m(TCP, 80, 0, "", "8000-8010")]);
        assert_eq!(ok("127.0.0.1:8000-8010:80/udp"), vec![m(UDP, 80, 0, "127.0.0.1", "8000-8010")]);
        assert_eq!(ok("80-82"), vec![m(TCP, 80, 0, "", ""), m(TCP, 81, 0, "", ""), m(TCP, 82, 0, "", "")]);
        assert_eq!(ok("127.0.0.1::80-81"), vec![m(TCP, 80, 0, "127.0.0.1", ""), m(TCP, 81, 0, "127.0.0.1", "")]);
        // A range of one port is that port.
        assert_eq!(ok("8000-8000:80"), vec![m(TCP, 80, 8000, "", "")]);
        assert_eq!(ok("8080:80-80"), vec![m(TCP, 80, 8080, "", "")]);
        assert_eq!(ok("80-80"), vec![m(TCP, 80, 0, "", "")]);
    }

    #[test]
    fn range_lengths_must_match() {
        assert!(err("8000-8002:80-81").ends_with(": host range 8000-8002 has 3 ports but container range 80-81 has 2"));
        assert!(err("8000-8000:80-81").ends_with(": host range 8000-8000 has 1 port but container range 80-81 has 2"));
        let e = err("8080:80-81");
        assert!(e.contains("host port 8080 is a single port but container range 80-81 has 2 ports"), "{e}");
    }

    #[test]
    fn bad_ports() {
        assert!(err("0").contains("container port 0 is not a port (ports are 1-65535)"));
        assert!(err("0:80").contains("host port 0 is not a port (ports are 1-65535); leave the host port out"));
        assert!(err("8080:0").contains("container port 0"));
        assert!(err("000:80").contains("host port 0 is not a port"));
        assert!(err("65536").contains("container port 65536 is above 65535"));
        assert!(err("70000:80").contains("host port 70000 is above 65535"));
        assert!(err("99999999999999999999:80").contains("host port 99999999999999999999 is above 65535"));
        assert!(err("8080:http").contains("container port \"http\" is not a number"));
        assert!(err("+80").contains("container port \"+80\" is not a number"));
        assert!(err(" 80").contains("is not a number"));
        assert!(err("8080:").contains("the container port is missing"));
        assert!(err("127.0.0.1:8080:").contains("the container port is missing"));
        assert!(err("80-").contains("container range \"80-\" is malformed"));
        assert!(err("-80").contains("container range \"-80\" is malformed"));
        assert!(err("80-81-82").contains("malformed"));
        assert!(err("90-80").contains("container range 90-80 ends before it starts"));
        assert!(err("8010-8000:80").contains("host range 8010-8000 ends before it starts"));
        assert!(err("0-5:80").contains("host port 0 is not a port"));
        assert!(err("8000-70000:80").contains("host port 70000 is above 65535"));
    }

    #[test]
    fn bad_addresses() {
        assert!(err("1.2.3:8080:80").contains("host address \"1.2.3\" is not an IP address"));
        assert!(err("localhost:8080:80").contains("host address \"localhost\" is not an IP address"));
        assert!(err("256.0.0.1::80").contains("is not an IP address"));
        assert!(err("[::1:8080:80").contains("the '[' of the host address has no ']'"));
        assert!(err("[]:8080:80").contains("the brackets hold no host address"));
        assert!(err("[::1]:80").contains("a host address needs the host port field too: [::1]:HOSTPORT:CPORT"));
        assert!(err("[::1]8080:80").contains("a host address needs the host port field too"));
        assert!(err("[::1]:8080:80:90").contains("too many ':' fields after [::1]"));
        assert!(err("[zz::1]:8080:80").contains("host address \"zz::1\" is not an IP address"));
        assert!(err("::1]:8080:80").contains("brackets go around the host address only"));
        assert!(err("1:2:3:4").contains("too many ':' fields; an IPv6 host address goes in brackets"));
        assert!(err("a:b:c:80").contains("too many ':' fields"));
        // A host address where the host port belongs gets a hint.
        let e = err("127.0.0.1:80");
        assert!(e.contains("host port \"127.0.0.1\" is not a number; with a host address write HOSTIP:HOSTPORT:CPORT"), "{e}");
    }

    #[test]
    fn bad_protocols_and_shapes() {
        assert!(err("80/sctp").contains("protocol sctp is not supported; use tcp or udp"));
        assert!(err("80/icmp").contains("unknown protocol \"icmp\"; use tcp or udp"));
        assert!(err("80/").contains("the protocol after '/' is missing"));
        assert!(err("80/tcp/udp").contains("unknown protocol \"tcp/udp\""));
        assert!(err("").contains("it is empty; write [HOSTIP:][HOSTPORT:]CPORT[/tcp|/udp]"));
        assert!(err("/tcp").contains("the container port is missing"));
    }

    #[test]
    fn private_ports() {
        assert_eq!(parse_private_port("80"), Ok((80, TCP)));
        assert_eq!(parse_private_port("53/udp"), Ok((53, UDP)));
        assert_eq!(parse_private_port("443/TCP"), Ok((443, TCP)));
        assert_eq!(parse_private_port("0").unwrap_err(), "invalid private port \"0\": container port 0 is not a port (ports are 1-65535)");
        assert!(parse_private_port("80/sctp").unwrap_err().contains("protocol sctp is not supported"));
        assert!(parse_private_port("http").unwrap_err().contains("container port \"http\" is not a number"));
        assert!(parse_private_port("8080:80").unwrap_err().contains("is not a number"));
        assert!(parse_private_port("/udp").unwrap_err().contains("the container port is missing"));
    }

    #[test]
    fn several_specs() {
        let specs = vec!["8080:80".to_owned(), "53/udp".to_owned()];
        assert_eq!(parse_all(&specs).unwrap(), vec![m(TCP, 80, 8080, "", ""), m(UDP, 53, 0, "", "")]);
        let specs = vec!["8080:80".to_owned(), "x".to_owned()];
        assert!(parse_all(&specs).unwrap_err().starts_with("invalid port mapping \"x\""));
    }

    #[test]
    fn policies_round_trip() {
        let bound = m(TCP, 80, 0, "127.0.0.1", "8000-8010");
        let p = policy(&bound);
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 0, "VIP": "127.0.0.1", "ExternalPortRange": "8000-8010"}})
        );
        assert_eq!(
            serde_json::to_value(policy(&m(UDP, 53, 5353, "", ""))).unwrap(),
            serde_json::json!({"Type": "PortMapping", "Settings": {"Protocol": 17, "InternalPort": 53, "ExternalPort": 5353}})
        );
        let other = Policy { kind: "OutBoundNAT".into(), settings: serde_json::json!({"Exceptions": []}) };
        let extra = Policy {
            kind: "portmapping".into(),
            settings: serde_json::json!({"Protocol": "udp", "InternalPort": 53, "ExternalPort": 40000, "SomethingNew": true}),
        };
        let broken = Policy { kind: "PortMapping".into(), settings: serde_json::json!({"Protocol": 6}) };
        assert_eq!(mappings_in(&[other, p, broken, extra]), vec![bound, m(UDP, 53, 40000, "", "")]);
    }

    #[test]
    fn differences_by_host_side() {
        let before = vec![m(TCP, 80, 8080, "", ""), m(UDP, 53, 5353, "", "")];
        let after = vec![m(TCP, 80, 8080, "", ""), m(UDP, 53, 5353, "", ""), m(TCP, 80, 8080, "127.0.0.1", ""), m(TCP, 81, 49153, "", "")];
        assert_eq!(difference(&after, &before), vec![m(TCP, 80, 8080, "127.0.0.1", ""), m(TCP, 81, 49153, "", "")]);
        assert_eq!(difference(&before, &after), vec![]);
        // The removed mapping shows its real container port, whatever the spec said.
        assert_eq!(difference(&before, &before[1..]), vec![m(TCP, 80, 8080, "", "")]);
        assert!(same_host_side(&m(TCP, 80, 8080, "0.0.0.0", ""), &m(TCP, 9, 8080, "", "")));
        assert!(!same_host_side(&m(TCP, 80, 8080, "", ""), &m(UDP, 80, 8080, "", "")));
    }
}
