//! `hnsctl policy ls|add|rm ENDPOINT`: an endpoint's ACL policies. `ls` shows them in the
//! order hnsd evaluates them (ascending priority, Block before Allow at equal priority, then as
//! added); `add` and `rm` send a `ResourceType: Policy` modify request with one `ACL` policy.

use hns_api::{HostComputeEndpoint, ModifyRequest, Policy, PolicyRequest, RequestType, ResourceType};
use serde_json::{Value, json};

use super::{Ctx, lookup, object_path};
use crate::error::{CliError, Result};
use crate::output::{print_json, print_line, print_rows};
use crate::template::Column;
use crate::{PolicyArgs, PolicyLsArgs};

pub const POLICY_COLUMNS: &[Column] = &[
    Column::new("ORDER", "Order"),
    Column::new("ID", "Id"),
    Column::new("PRIORITY", "Priority"),
    Column::new("ACTION", "Action"),
    Column::new("DIRECTION", "Direction"),
    Column::new("TYPE", "RuleType"),
    Column::new("PROTOCOLS", "Protocols"),
    Column::new("LOCAL ADDRESSES", "LocalAddresses"),
    Column::new("LOCAL PORTS", "LocalPorts"),
    Column::new("REMOTE ADDRESSES", "RemoteAddresses"),
    Column::new("REMOTE PORTS", "RemotePorts"),
];

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The ACL settings of an endpoint in evaluation order.
pub fn evaluation_order(ep: &HostComputeEndpoint) -> Vec<Value> {
    let mut acls: Vec<(usize, Value)> = ep.policies.iter().filter(|p| p.kind.eq_ignore_ascii_case("ACL")).map(|p| p.settings.clone()).enumerate().collect();
    acls.sort_by_key(|(i, s)| (s["Priority"].as_u64().unwrap_or(0), text(&s["Action"]).eq_ignore_ascii_case("Allow"), *i));
    acls.into_iter().map(|(_, s)| s).collect()
}

pub fn policy_rows(acls: &[Value]) -> Vec<Vec<String>> {
    acls.iter()
        .enumerate()
        .map(|(i, s)| {
            let mut row = vec![(i + 1).to_string()];
            row.extend(POLICY_COLUMNS[1..].iter().map(|c| text(&s[c.field])));
            row
        })
        .collect()
}

pub fn ls(ctx: &Ctx, a: &PolicyLsArgs) -> Result<i32> {
    let client = ctx.client()?;
    let ep: HostComputeEndpoint = lookup(&client, &a.endpoint)?;
    let acls = evaluation_order(&ep);
    if ctx.json() {
        print_json(&acls)?;
    } else {
        print_rows(&ctx.format, POLICY_COLUMNS, &policy_rows(&acls))?;
    }
    Ok(0)
}

/// One ACL rule, as the flags of `policy add|rm` or the words of a RULE give it (`--rule`,
/// `run --acl`): both forms go through [`settings`], so they accept the same rules.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AclRule {
    pub allow: Option<bool>,
    pub inbound: Option<bool>,
    pub proto: Option<String>,
    pub local: Option<String>,
    pub remote: Option<String>,
    pub local_ports: Option<String>,
    pub remote_ports: Option<String>,
    pub priority: Option<u16>,
    pub kind: Option<String>,
    pub id: Option<String>,
}

/// The form of a RULE, for help and errors.
pub const RULE_FORM: &str = "allow|block in|out [proto=P] [local=A] [remote=A] [local-ports=P] [remote-ports=P] [priority=N] [type=switch|host] [id=ID]";

/// The rule the `policy add|rm` flags describe (`--rule RULE`, or the flags one by one).
pub fn rule_of_flags(a: &PolicyArgs) -> Result<AclRule> {
    if let Some(text) = &a.rule {
        return parse_rule(text).map_err(|e| CliError::invalid(format!("--rule {text:?}: {e}")));
    }
    if a.allow == a.block {
        return Err(CliError::invalid("give --allow or --block"));
    }
    if a.inbound == a.outbound {
        return Err(CliError::invalid("give --in or --out"));
    }
    Ok(AclRule {
        allow: Some(a.allow),
        inbound: Some(a.inbound),
        proto: a.proto.clone(),
        local: a.local.clone(),
        remote: a.remote.clone(),
        local_ports: a.local_ports.clone(),
        remote_ports: a.remote_ports.clone(),
        priority: a.priority,
        kind: a.kind.clone(),
        id: a.id.clone(),
    })
}

/// Parses a RULE: words separated by blanks, each `allow`, `block`, `in`, `out` or
/// `KEY=VALUE` with a key named like the `policy add` flag (`local-ports=80,8000-8080`). The
/// error says which word breaks which rule; the caller names the flag.
pub fn parse_rule(text: &str) -> std::result::Result<AclRule, String> {
    let mut r = AclRule::default();
    fn set<T>(slot: &mut Option<T>, v: T, what: &str) -> std::result::Result<(), String> {
        if slot.is_some() {
            return Err(format!("{what} is given twice"));
        }
        *slot = Some(v);
        Ok(())
    }
    for word in text.split_whitespace() {
        match word.to_ascii_lowercase().as_str() {
            "allow" | "block" => set(&mut r.allow, word.eq_ignore_ascii_case("allow"), "the action (allow or block)")?,
            "in" | "out" => set(&mut r.inbound, word.eq_ignore_ascii_case("in"), "the direction (in or out)")?,
            _ => {
                let Some((key, value)) = word.split_once('=') else {
                    return Err(format!("{word:?} is not allow, block, in, out or KEY=VALUE; write {RULE_FORM}"));
                };
                if value.is_empty() {
                    return Err(format!("{key}= has no value"));
                }
                let v = value.to_owned();
                match key.to_ascii_lowercase().as_str() {
                    "proto" | "protocols" => set(&mut r.proto, v, "proto")?,
                    "local" => set(&mut r.local, v, "local")?,
                    "remote" => set(&mut r.remote, v, "remote")?,
                    "local-ports" => set(&mut r.local_ports, v, "local-ports")?,
                    "remote-ports" => set(&mut r.remote_ports, v, "remote-ports")?,
                    "priority" => {
                        let n = value.parse::<u16>().map_err(|_| format!("priority={value}: not a number 0-65535"))?;
                        set(&mut r.priority, n, "priority")?
                    }
                    "type" => {
                        if !["switch", "host"].contains(&value.to_ascii_lowercase().as_str()) {
                            return Err(format!("type={value}: the type is switch or host"));
                        }
                        set(&mut r.kind, value.to_ascii_lowercase(), "type")?
                    }
                    "id" => set(&mut r.id, v, "id")?,
                    _ => return Err(format!("{key:?} is not a key; the keys are proto, local, remote, local-ports, remote-ports, priority, type, id")),
                }
            }
        }
    }
    if r.allow.is_none() {
        return Err("give allow or block".into());
    }
    if r.inbound.is_none() {
        return Err("give in or out".into());
    }
    Ok(r)
}

/// The ACL settings of a rule (its fields are checked by hnsd, which names them).
pub fn settings(r: &AclRule) -> Value {
    let action = if r.allow == Some(true) { "Allow" } else { "Block" };
    let direction = if r.inbound == Some(true) { "In" } else { "Out" };
    let mut s = json!({"Action": action, "Direction": direction, "Priority": r.priority.unwrap_or(0), "RuleType": r.kind.as_deref().unwrap_or("Switch")});
    let o = s.as_object_mut().expect("object");
    for (key, v) in [
        ("Id", &r.id),
        ("Protocols", &r.proto),
        ("LocalAddresses", &r.local),
        ("RemoteAddresses", &r.remote),
        ("LocalPorts", &r.local_ports),
        ("RemotePorts", &r.remote_ports),
    ] {
        if let Some(v) = v {
            o.insert(key.into(), v.clone().into());
        }
    }
    s
}

fn change(ctx: &Ctx, a: &PolicyArgs, request_type: RequestType) -> Result<i32> {
    let client = ctx.client()?;
    let ep: HostComputeEndpoint = lookup(&client, &a.endpoint)?;
    let policy = Policy { kind: "ACL".into(), settings: settings(&rule_of_flags(a)?) };
    let req = ModifyRequest {
        resource_type: ResourceType::Policy,
        request_type,
        resource_uri: String::new(),
        settings: serde_json::to_value(PolicyRequest { policies: vec![policy] }).expect("serializable"),
    };
    client.modify(&object_path::<HostComputeEndpoint>(&ep.id), &req)?;
    if !ctx.json() {
        print_line(&format!("{} ACL on endpoint {}", if request_type == RequestType::Remove { "removed" } else { "added" }, if ep.name.is_empty() { &ep.id } else { &ep.name }));
    }
    Ok(0)
}

pub fn add(ctx: &Ctx, a: &PolicyArgs) -> Result<i32> {
    change(ctx, a, RequestType::Add)
}

pub fn rm(ctx: &Ctx, a: &PolicyArgs) -> Result<i32> {
    change(ctx, a, RequestType::Remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_in_evaluation_order() {
        let acl = |prio: u64, action: &str, id: &str| Policy { kind: "ACL".into(), settings: json!({"Id": id, "Priority": prio, "Action": action, "Direction": "In"}) };
        let ep = HostComputeEndpoint { policies: vec![acl(200, "Allow", "a"), acl(200, "Block", "b"), acl(100, "Allow", "c"), acl(200, "Allow", "d")], ..Default::default() };
        let ids: Vec<String> = policy_rows(&evaluation_order(&ep)).into_iter().map(|r| r[1].clone()).collect();
        assert_eq!(ids, ["c", "b", "a", "d"]);
    }

    #[test]
    fn rules_in_words_give_the_settings_of_the_flags() {
        let r = parse_rule("allow in proto=tcp local-ports=80,8000-8080 remote=10.0.0.0/8 priority=200").unwrap();
        assert_eq!(
            settings(&r),
            json!({"Action": "Allow", "Direction": "In", "Protocols": "tcp", "LocalPorts": "80,8000-8080", "RemoteAddresses": "10.0.0.0/8", "Priority": 200, "RuleType": "Switch"})
        );
        let r = parse_rule("  Block   OUT type=Host id=x ").unwrap();
        assert_eq!(settings(&r), json!({"Action": "Block", "Direction": "Out", "Priority": 0, "RuleType": "host", "Id": "x"}));
    }

    #[test]
    fn bad_rules_name_the_word_and_the_rule() {
        for (text, want) in [
            ("allow", "give in or out"),
            ("in proto=tcp", "give allow or block"),
            ("allow block in", "the action (allow or block) is given twice"),
            ("allow in sideways", "\"sideways\" is not allow, block, in, out or KEY=VALUE"),
            ("allow in priority=high", "priority=high: not a number 0-65535"),
            ("allow in priority=70000", "priority=70000: not a number 0-65535"),
            ("allow in type=router", "type=router: the type is switch or host"),
            ("allow in port=80", "\"port\" is not a key; the keys are proto"),
            ("allow in proto=", "proto= has no value"),
        ] {
            let e = parse_rule(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
