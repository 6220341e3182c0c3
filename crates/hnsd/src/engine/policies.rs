//! The `ACL` endpoint policy and the `NetworkACL` network policy: the HNS v2 wire form parsed
//! once, at validation, into typed [`Rule`]s. Every bad field is its own error naming the
//! field (`Policies[2].Settings.LocalPorts`), the value and the rule.
//!
//! Wire form (hcsshim `AclPolicySetting`): `Protocols` (comma list of IP protocol numbers or
//! tcp/udp/icmp/icmpv6; "256" or empty = any; also a JSON integer), `Action` (Allow/Block),
//! `Direction` (In/Out), `LocalAddresses`/`RemoteAddresses` (comma lists of addresses and
//! prefixes), `LocalPorts`/`RemotePorts` (comma lists of ports and ranges, only with tcp/udp),
//! `RuleType` (Switch, the default, or Host), `Priority` (uint16, default 0), `Id`.

use hns_api::{AclAction, AclDirection, AclRuleType, ApiError, ErrorCode, Policy};
use hns_kernel::nft_acl::{Action, Direction, Rule, Scope};
use ipnet::IpNet;

pub const ACL: &str = "ACL";
pub const NETWORK_ACL: &str = "NetworkACL";

pub fn is_acl(p: &Policy) -> bool {
    p.kind.eq_ignore_ascii_case(ACL)
}

pub fn is_network_acl(p: &Policy) -> bool {
    p.kind.eq_ignore_ascii_case(NETWORK_ACL)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct AclSettings {
    #[serde(default)]
    id: String,
    #[serde(default)]
    protocols: serde_json::Value,
    action: AclAction,
    direction: AclDirection,
    #[serde(default)]
    local_addresses: String,
    #[serde(default)]
    remote_addresses: String,
    #[serde(default)]
    local_ports: String,
    #[serde(default)]
    remote_ports: String,
    #[serde(default)]
    rule_type: Option<AclRuleType>,
    #[serde(default)]
    priority: u16,
}

fn bad(field: String, msg: String) -> ApiError {
    ApiError::field(ErrorCode::InvalidPolicy, field, msg)
}

fn items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

fn parse_protocols(v: &serde_json::Value, f: &str) -> Result<Vec<u8>, ApiError> {
    let text = match v {
        serde_json::Value::Null => return Ok(Vec::new()),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => return Err(bad(f.into(), format!("Protocols must be a string such as \"6,17\" or a number, got {other}"))),
    };
    let mut out: Vec<u8> = Vec::new();
    for p in items(&text) {
        let n: u16 = match p.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "icmpv6" => 58,
            "any" => 256,
            other => other.parse().map_err(|_| bad(f.into(), format!("{p:?} is not an IP protocol: give a number from 0 to 255, 256 for any, or tcp, udp, icmp, icmpv6")))?,
        };
        if n == 256 {
            return Ok(Vec::new());
        }
        let n = u8::try_from(n).map_err(|_| bad(f.into(), format!("protocol {n} is out of range: IP protocols are 0-255; 256 means any")))?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

fn parse_addresses(s: &str, f: &str) -> Result<Vec<IpNet>, ApiError> {
    items(s)
        .map(|a| {
            a.parse::<IpNet>().or_else(|_| a.parse::<std::net::IpAddr>().map(IpNet::from)).map_err(|_| {
                bad(f.into(), format!("{a:?} is not an IPv4 or IPv6 address or prefix (such as 10.0.0.21 or 192.168.100.0/24); SetPolicy references are not supported yet"))
            })
        })
        .collect()
}

fn parse_ports(s: &str, f: &str) -> Result<Vec<(u16, u16)>, ApiError> {
    let port = |p: &str, whole: &str| -> Result<u16, ApiError> {
        match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad(f.into(), format!("{whole:?} is not a port (1-65535) or a range such as 8000-8080"))),
        }
    };
    items(s)
        .map(|item| {
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (port(a, item)?, port(b, item)?),
                None => {
                    let p = port(item, item)?;
                    (p, p)
                }
            };
            if a > b {
                return Err(bad(f.into(), format!("range {item:?} runs backwards; write the low port first")));
            }
            Ok((a, b))
        })
        .collect()
}

/// Parses the settings of one ACL (or NetworkACL) policy; `f` is its `...Settings` path.
pub fn parse_acl(settings: &serde_json::Value, f: &str) -> Result<Rule, ApiError> {
    let s: AclSettings = hns_api::decode::from_value(settings.clone(), f).map_err(|e| ApiError { code: ErrorCode::InvalidPolicy, ..e })?;
    let action = match s.action {
        AclAction::Allow => Action::Allow,
        AclAction::Block => Action::Block,
        AclAction::Pass => return Err(ApiError::field(ErrorCode::RequestUnsupported, format!("{f}.Action"), "Action Pass belongs to tiered ACLs (TierAcl), which hns does not implement; use Allow or Block")),
    };
    let direction = match s.direction {
        AclDirection::In => Direction::In,
        AclDirection::Out => Direction::Out,
    };
    let scope = match s.rule_type.unwrap_or(AclRuleType::Switch) {
        AclRuleType::Switch => Scope::Switch,
        AclRuleType::Host => Scope::Host,
    };
    let protocols = parse_protocols(&s.protocols, &format!("{f}.Protocols"))?;
    let local = parse_addresses(&s.local_addresses, &format!("{f}.LocalAddresses"))?;
    let remote = parse_addresses(&s.remote_addresses, &format!("{f}.RemoteAddresses"))?;
    let local_ports = parse_ports(&s.local_ports, &format!("{f}.LocalPorts"))?;
    let remote_ports = parse_ports(&s.remote_ports, &format!("{f}.RemotePorts"))?;
    for (name, given) in [("LocalPorts", !local_ports.is_empty()), ("RemotePorts", !remote_ports.is_empty())] {
        if given && (protocols.is_empty() || protocols.iter().any(|p| *p != 6 && *p != 17)) {
            return Err(bad(
                format!("{f}.{name}"),
                format!("ports only exist for TCP and UDP, but Protocols is {:?}; set Protocols to 6, 17 or \"6,17\"", if protocols.is_empty() { "any".to_owned() } else { protocols.iter().map(u8::to_string).collect::<Vec<_>>().join(",") }),
            ));
        }
    }
    Ok(Rule { id: s.id, action, direction, scope, priority: s.priority, protocols, local, remote, local_ports, remote_ports })
}

/// The ACL policies of an endpoint request (others are left to their own parsers).
pub fn parse_endpoint_acls(policies: &[Policy], field: &str) -> Result<Vec<Rule>, ApiError> {
    policies.iter().enumerate().filter(|(_, p)| is_acl(p)).map(|(i, p)| parse_acl(&p.settings, &format!("{field}[{i}].Settings"))).collect()
}

/// The NetworkACL policies of a network's policies.
pub fn parse_network_acls(policies: &[Policy], field: &str) -> Result<Vec<Rule>, ApiError> {
    policies.iter().enumerate().filter(|(_, p)| is_network_acl(p)).map(|(i, p)| parse_acl(&p.settings, &format!("{field}[{i}].Settings"))).collect()
}

/// Refuses ACLs on networks whose endpoints have no host-side interface to enforce them on.
pub fn check_network_takes_acls(kind: hns_api::NetworkType, any: bool, field: &str) -> Result<(), ApiError> {
    if any && matches!(kind, hns_api::NetworkType::Transparent | hns_api::NetworkType::L2Tunnel) {
        return Err(ApiError::field(
            ErrorCode::InvalidPolicy,
            field,
            format!("ACLs are not supported on {kind} networks yet: their endpoints are macvlan/ipvlan children with no host-side interface, so the host cannot filter their traffic outside the container's reach"),
        ));
    }
    Ok(())
}

/// The wire form of a rule, as shown in an endpoint's or network's `Policies`.
pub fn to_policy(kind: &str, r: &Rule) -> Policy {
    let join = |v: Vec<String>| v.join(",");
    let ports = |p: &[(u16, u16)]| join(p.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect());
    let mut s = serde_json::json!({
        "Action": match r.action { Action::Allow => "Allow", Action::Block => "Block" },
        "Direction": match r.direction { Direction::In => "In", Direction::Out => "Out" },
        "RuleType": match r.scope { Scope::Switch => "Switch", Scope::Host => "Host" },
        "Priority": r.priority,
        "Protocols": if r.protocols.is_empty() { "256".to_owned() } else { join(r.protocols.iter().map(u8::to_string).collect()) },
    });
    let o = s.as_object_mut().expect("object");
    if !r.id.is_empty() {
        o.insert("Id".into(), r.id.clone().into());
    }
    for (k, v) in [("LocalAddresses", &r.local), ("RemoteAddresses", &r.remote)] {
        if !v.is_empty() {
            o.insert(k.into(), join(v.iter().map(|n| if n.prefix_len() == n.max_prefix_len() { n.addr().to_string() } else { n.to_string() }).collect()).into());
        }
    }
    for (k, v) in [("LocalPorts", &r.local_ports), ("RemotePorts", &r.remote_ports)] {
        if !v.is_empty() {
            o.insert(k.into(), ports(v).into());
        }
    }
    Policy { kind: kind.into(), settings: s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn acl(v: serde_json::Value) -> Policy {
        Policy { kind: "ACL".into(), settings: v }
    }

    #[test]
    fn a_full_rule_parses_in_both_enum_forms() {
        let p = acl(json!({"Id": "r1", "Protocols": "tcp,17", "Action": "allow", "Direction": 1, "LocalAddresses": "10.0.0.21, 192.168.100.0/24",
            "RemoteAddresses": "fd00::/64", "LocalPorts": "80,8000-8080", "RuleType": "Host", "Priority": 200}));
        let r = &parse_endpoint_acls(&[p], "Policies").unwrap()[0];
        assert_eq!((r.action, r.direction, r.scope, r.priority), (Action::Allow, Direction::Out, Scope::Host, 200));
        assert_eq!(r.protocols, vec![6, 17]);
        assert_eq!(r.local, vec!["10.0.0.21/32".parse::<IpNet>().unwrap(), "192.168.100.0/24".parse().unwrap()]);
        assert_eq!(r.remote, vec!["fd00::/64".parse::<IpNet>().unwrap()]);
        assert_eq!(r.local_ports, vec![(80, 80), (8000, 8080)]);
        // Defaults: any protocol, Switch, priority 0; 256 means any; an integer protocol.
        let d = parse_acl(&json!({"Action": 1, "Direction": "In", "Protocols": "256"}), "S").unwrap();
        assert_eq!((d.action, d.scope, d.priority, d.protocols.len()), (Action::Block, Scope::Switch, 0, 0));
        assert_eq!(parse_acl(&json!({"Action": "Allow", "Direction": "In", "Protocols": 6}), "S").unwrap().protocols, vec![6]);
        // The shown form parses back to the same rule.
        assert_eq!(&parse_acl(&to_policy(ACL, r).settings, "S").unwrap(), r);
    }

    #[test]
    fn every_bad_field_is_named() {
        let base = json!({"Action": "Allow", "Direction": "In", "Protocols": "6"});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        let cases = [
            (with("Protocols", json!("7000")), "Policies[1].Settings.Protocols"),
            (with("Protocols", json!("sctpx")), "Policies[1].Settings.Protocols"),
            (with("Action", json!("Deny")), "Policies[1].Settings.Action"),
            (with("Action", json!("Pass")), "Policies[1].Settings.Action"),
            (with("Direction", json!("Both")), "Policies[1].Settings.Direction"),
            (with("LocalAddresses", json!("10.0.0.300")), "Policies[1].Settings.LocalAddresses"),
            (with("RemoteAddresses", json!("10.0.0.0/33")), "Policies[1].Settings.RemoteAddresses"),
            (with("LocalPorts", json!("0")), "Policies[1].Settings.LocalPorts"),
            (with("LocalPorts", json!("90-80")), "Policies[1].Settings.LocalPorts"),
            (with("RemotePorts", json!("70000")), "Policies[1].Settings.RemotePorts"),
            (with("RuleType", json!("Port")), "Policies[1].Settings.RuleType"),
            (with("Priority", json!(70000)), "Policies[1].Settings.Priority"),
            (with("Priority", json!(-1)), "Policies[1].Settings.Priority"),
            (with("Bogus", json!(1)), "Policies[1].Settings"),
        ];
        let pm = Policy { kind: "PortMapping".into(), settings: json!({}) };
        for (v, field) in cases {
            let e = parse_endpoint_acls(&[pm.clone(), acl(v.clone())], "Policies").unwrap_err();
            assert!(e.field.as_deref().is_some_and(|f| f.starts_with(field)), "{v}: {:?} {}", e.field, e.message);
        }
        // Ports need TCP or UDP.
        let e = parse_acl(&json!({"Action": "Allow", "Direction": "In", "LocalPorts": "80"}), "S").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("S.LocalPorts"));
        assert!(e.message.contains("TCP and UDP"), "{}", e.message);
        let e = parse_acl(&json!({"Action": "Allow", "Direction": "In", "Protocols": "1", "RemotePorts": "80"}), "S").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("S.RemotePorts"));
        assert!(parse_acl(&json!({"Direction": "In"}), "S").unwrap_err().message.contains("Action"));
    }

    #[test]
    fn macvlan_networks_refuse_acls() {
        assert!(check_network_takes_acls(hns_api::NetworkType::Transparent, true, "Policies").unwrap_err().message.contains("no host-side interface"));
        assert!(check_network_takes_acls(hns_api::NetworkType::L2Tunnel, true, "Policies").is_err());
        assert!(check_network_takes_acls(hns_api::NetworkType::Nat, true, "Policies").is_ok());
        assert!(check_network_takes_acls(hns_api::NetworkType::Transparent, false, "Policies").is_ok());
    }
}
