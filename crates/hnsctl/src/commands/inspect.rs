//! `hnsctl inspect NAME...`: any object by name or ID, like `docker inspect`.

use serde::Serialize;

use hns_api::{HostComputeEndpoint, HostComputeLoadBalancer, HostComputeNamespace, HostComputeNetwork};

use super::{Ctx, Object, find, for_each_name};
use crate::client::Client;
use crate::error::{CliError, Result};
use crate::output::print_json;
use crate::{InspectArgs, ObjectKind};

/// The kinds tried for a name, in docker's order (containers first).
const ALL: &[ObjectKind] = &[ObjectKind::Container, ObjectKind::Endpoint, ObjectKind::Network, ObjectKind::LoadBalancer];

fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Container => "container (namespace)",
        ObjectKind::Endpoint => "endpoint",
        ObjectKind::Network => "network",
        ObjectKind::LoadBalancer => "load balancer",
    }
}

fn find_value<T: Object + Serialize>(client: &Client, name: &str) -> Result<Option<serde_json::Value>> {
    find::<T>(client, name)?
        .map(|o| serde_json::to_value(o).map_err(|e| CliError::local(format!("cannot encode JSON: {e}"))))
        .transpose()
}

/// "container (namespace), endpoint, network or load balancer".
pub fn kinds_text(kinds: &[ObjectKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| kind_name(*k)).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

pub fn inspect(ctx: &Ctx, a: &InspectArgs) -> Result<i32> {
    let client = ctx.client()?;
    let kinds = match a.kind {
        Some(kind) => vec![kind],
        None => ALL.to_vec(),
    };
    let mut found = Vec::new();
    let code = for_each_name(&a.names, |name| {
        for kind in &kinds {
            let hit = match kind {
                ObjectKind::Container => find_value::<HostComputeNamespace>(&client, name)?,
                ObjectKind::Endpoint => find_value::<HostComputeEndpoint>(&client, name)?,
                ObjectKind::Network => find_value::<HostComputeNetwork>(&client, name)?,
                ObjectKind::LoadBalancer => find_value::<HostComputeLoadBalancer>(&client, name)?,
            };
            if let Some(value) = hit {
                found.push(value);
                return Ok(());
            }
        }
        Err(CliError::invalid(format!("no {} named {name}", kinds_text(&kinds))))
    });
    print_json(&found)?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_in_messages() {
        assert_eq!(kinds_text(ALL), "container (namespace), endpoint, network or load balancer");
        assert_eq!(kinds_text(&[ObjectKind::Network]), "network");
    }
}
