//! Docker's NetworkDriver calls, each turned into one or a few engine requests under one engine
//! lock (so the reconciler never sees half of a Docker call). Joining a container is in
//! [`super::sandbox`].
//!
//! Port mappings: Docker sends a container's `-p` bindings with `ProgramExternalConnectivity`
//! to the one endpoint that gives the container its default gateway, and revokes them there
//! when another endpoint takes that role; so each container's mappings are programmed once,
//! as HNS `PortMapping` policies of that endpoint.

use std::net::IpAddr;

use hns_api::{ApiError, ErrorCode, HostComputeEndpoint, ModifyRequest, PolicyRequest, PortMappingSettings, RequestType, ResourceType};
use serde_json::{Map, Value, json};

use super::options::{self, hns_id};
use super::protocol::{CreateEndpoint, CreateEndpointReply, CreateNetwork, EndpointRef, OperInfo, keys};
use super::{Docker, Driver};
use crate::engine::Engine;

pub type Result<T> = std::result::Result<T, ApiError>;

/// The adapter an external network will use (its `interface` option, else the host's
/// default-route link, as the engine chooses) and that adapter's IPv4 address.
async fn adapter_of(d: &Docker, net: &hns_api::HostComputeNetwork) -> (String, Option<IpAddr>) {
    let named = net.policies.iter().find(|p| p.kind == "NetAdapterName").and_then(|p| p.settings.get("NetworkAdapterName")?.as_str().map(str::to_owned));
    let name = match named {
        Some(n) => n.split(',').next().unwrap_or_default().trim().to_owned(),
        None => d.host.default_route_link().await.ok().flatten().unwrap_or_default(),
    };
    let ip = match d.host.link_by_name(&name).await {
        Ok(Some(l)) => d.host.ipv4_of(l.index).await.ok().flatten(),
        _ => None,
    };
    (name, ip)
}

pub async fn create_network(d: &Docker, driver: Driver, req: CreateNetwork) -> Result<Value> {
    let kind = match driver {
        Driver::Network(k) => k,
        Driver::Overlay => {
            // Docker's local-scope networks get one ID per host, while an hns overlay network is
            // one cluster object: mapping the two is not built yet.
            return Err(ApiError::new(
                ErrorCode::InvalidNetworkType,
                "overlay networks cannot be created through Docker yet: create them with `hnsctl network create -d overlay --subnet ...` and attach containers with hnsctl; Docker drives nat, transparent, l2bridge and l2tunnel",
            ));
        }
    };
    let mut engine = d.app.engine.lock().await;
    let hints = d.ipam.lock().await.hints();
    let net = options::network_request(kind, &req, &hints)?;
    // Docker may repeat a create it did not see answered.
    if engine.get_network(&net.id).is_ok() {
        return Ok(json!({}));
    }
    if hns_drivers::is_external(kind) {
        let (adapter, ip) = adapter_of(d, &net).await;
        options::check_lan_subnet(kind, &net, &adapter, ip, &hints)?;
    }
    let made = engine.create_network(net).await?;
    tracing::info!(docker_id = %options::short(&req.network_id), name = %made.name, kind = %kind, "docker created a network");
    Ok(json!({}))
}

pub async fn delete_network(d: &Docker, docker_id: &str) -> Result<Value> {
    let id = hns_id(docker_id)?;
    let mut engine = d.app.engine.lock().await;
    match engine.delete_network(&id).await {
        Err(e) if e.code == ErrorCode::NetworkNotFound => Ok(json!({})),
        other => other.map(|()| json!({})),
    }
}

pub async fn create_endpoint(d: &Docker, req: CreateEndpoint) -> Result<CreateEndpointReply> {
    let net_id = hns_id(&req.network_id)?;
    let ep = options::endpoint_request(&req, &net_id)?;
    let mut engine = d.app.engine.lock().await;
    let made = match engine.get_endpoint(&ep.id) {
        Ok(existing) => existing,
        Err(_) => engine.create_endpoint(ep).await?,
    };
    let asked = req.interface.clone().unwrap_or_default();
    Ok(CreateEndpointReply { interface: options::endpoint_reply(&asked, &made) })
}

pub async fn delete_endpoint(d: &Docker, req: &EndpointRef) -> Result<Value> {
    let id = hns_id(&req.endpoint_id)?;
    let mut engine = d.app.engine.lock().await;
    // Docker leaves before it deletes; after a crash of either daemon it may not have.
    super::sandbox::leave_locked(d, &mut engine, &id).await?;
    match engine.delete_endpoint(&id).await {
        Err(e) if e.code == ErrorCode::EndpointNotFound => Ok(json!({})),
        other => other.map(|()| json!({})),
    }
}

/// The `PortMapping` settings an endpoint holds.
fn mappings_of(ep: &HostComputeEndpoint) -> Vec<PortMappingSettings> {
    ep.policies
        .iter()
        .filter(|p| p.kind.eq_ignore_ascii_case("PortMapping"))
        .filter_map(|p| serde_json::from_value(p.settings.clone()).ok())
        .collect()
}

fn policy_request(request_type: RequestType, maps: &[PortMappingSettings]) -> ModifyRequest {
    let policies = maps.iter().map(|m| hns_api::Policy { kind: "PortMapping".into(), settings: serde_json::to_value(m).unwrap_or_default() }).collect();
    ModifyRequest {
        resource_type: ResourceType::Policy,
        request_type,
        resource_uri: String::new(),
        settings: serde_json::to_value(PolicyRequest { policies }).unwrap_or_default(),
    }
}

async fn remove_mappings(engine: &mut Engine, id: &str) -> Result<()> {
    let current = match engine.get_endpoint(id) {
        Ok(ep) => mappings_of(&ep),
        Err(_) => return Ok(()),
    };
    if current.is_empty() {
        return Ok(());
    }
    engine.modify_endpoint(id, policy_request(RequestType::Remove, &current)).await
}

/// `ProgramExternalConnectivity`: the container's `-p` bindings become the endpoint's mappings
/// (replacing any it had, so a repeated call changes nothing but dynamic host ports).
pub async fn program_external(d: &Docker, req: &EndpointRef) -> Result<Value> {
    let id = hns_id(&req.endpoint_id)?;
    let wanted = options::port_mappings(&req.options)?;
    let mut engine = d.app.engine.lock().await;
    remove_mappings(&mut engine, &id).await?;
    if !wanted.is_empty() {
        engine.modify_endpoint(&id, policy_request(RequestType::Add, &wanted)).await?;
        tracing::info!(endpoint = %options::short(&req.endpoint_id), count = wanted.len(), "docker published ports");
    }
    Ok(json!({}))
}

pub async fn revoke_external(d: &Docker, req: &EndpointRef) -> Result<Value> {
    let id = hns_id(&req.endpoint_id)?;
    let mut engine = d.app.engine.lock().await;
    remove_mappings(&mut engine, &id).await?;
    Ok(json!({}))
}

/// `EndpointOperInfo`: the HNS endpoint ID, its MAC and the mappings with the host ports hns
/// chose. Docker keeps this as opaque data: `docker ps`/`docker port` cannot show a remote
/// driver's ports (moby/libnetwork#2451); `hnsctl port ls` does.
pub async fn oper_info(d: &Docker, req: &EndpointRef) -> Result<OperInfo> {
    let id = hns_id(&req.endpoint_id)?;
    let ep = d.app.engine.lock().await.get_endpoint(&id)?;
    let ip = ep.ip_configurations.iter().find_map(|c| c.ip_address.parse::<IpAddr>().ok().filter(IpAddr::is_ipv4));
    let (bindings, exposed) = options::docker_bindings(&mappings_of(&ep), ip);
    let mut value = Map::new();
    value.insert("hnsid".into(), json!(ep.id));
    value.insert(keys::MAC_ADDRESS.into(), json!(options::docker_mac(&ep.mac_address)));
    value.insert(keys::PORT_MAP.into(), json!(bindings));
    value.insert(keys::EXPOSED_PORTS.into(), json!(exposed));
    Ok(OperInfo { value })
}
