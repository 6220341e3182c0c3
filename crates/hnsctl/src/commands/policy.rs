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

/// The ACL settings the flags describe.
pub fn settings(a: &PolicyArgs) -> Result<Value> {
    let action = match (a.allow, a.block) {
        (true, false) => "Allow",
        (false, true) => "Block",
        _ => return Err(CliError::invalid("give --allow or --block")),
    };
    let direction = match (a.inbound, a.outbound) {
        (true, false) => "In",
        (false, true) => "Out",
        _ => return Err(CliError::invalid("give --in or --out")),
    };
    let mut s = json!({"Action": action, "Direction": direction, "Priority": a.priority.unwrap_or(0), "RuleType": a.kind.as_deref().unwrap_or("Switch")});
    let o = s.as_object_mut().expect("object");
    for (key, v) in [
        ("Id", &a.id),
        ("Protocols", &a.proto),
        ("LocalAddresses", &a.local),
        ("RemoteAddresses", &a.remote),
        ("LocalPorts", &a.local_ports),
        ("RemotePorts", &a.remote_ports),
    ] {
        if let Some(v) = v {
            o.insert(key.into(), v.clone().into());
        }
    }
    Ok(s)
}

fn change(ctx: &Ctx, a: &PolicyArgs, request_type: RequestType) -> Result<i32> {
    let client = ctx.client()?;
    let ep: HostComputeEndpoint = lookup(&client, &a.endpoint)?;
    let policy = Policy { kind: "ACL".into(), settings: settings(a)? };
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
}
