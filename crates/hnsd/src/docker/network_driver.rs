//! Docker's NetworkDriver calls, each turned into one or a few engine requests. Network create
//! and delete take the API's request paths (their kernel and cluster steps run without the
//! engine lock); endpoint calls run under one engine lock so the reconciler never sees half
//! of a Docker call. Joining a container is in [`super::sandbox`].
//!
//! Port mappings: Docker sends a container's `-p` bindings with `ProgramExternalConnectivity`
//! to the one endpoint that gives the container its default gateway, and revokes them there
//! when another endpoint takes that role; so each container's mappings are programmed once,
//! as HNS `PortMapping` policies of that endpoint.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hns_api::{ApiError, ErrorCode, HostComputeEndpoint, HostComputeNetwork, NetworkType, ModifyRequest, PolicyRequest, PortMappingSettings, RequestType, ResourceType};
use serde_json::{Map, Value, json};

use super::options::{self, hns_id};
use super::protocol::{CreateEndpoint, CreateEndpointReply, CreateNetwork, EndpointRef, OperInfo, keys};
use super::{Docker, Driver};
use crate::api::requests;
use crate::engine::Engine;
use crate::events::docker as event;

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

/// Store key of the HNS network a Docker network adopted (see [`adopt_overlay`]).
fn adopted_key(docker_id: &str) -> String {
    format!("docker/network/{docker_id}")
}

/// The HNS network behind a Docker network: the one it adopted if any (a record, so it
/// survives restarts of either daemon), else the one derived from its ID.
pub fn network_hns_id(engine: &Engine, docker_id: &str) -> Result<String> {
    let derived = hns_id(docker_id)?;
    Ok(engine.ext_get::<String>(&adopted_key(docker_id))?.unwrap_or(derived))
}

pub async fn create_network(d: &Docker, driver: Driver, req: CreateNetwork) -> Result<Value> {
    let kind = match driver {
        Driver::Network(k) => k,
        Driver::Overlay => NetworkType::Overlay,
    };
    let engine = d.app.engine.lock().await;
    let hints = d.ipam.lock().await.hints();
    let net = options::network_request(kind, &req, &hints)?;
    // Docker may repeat a create it did not see answered.
    if engine.get_network(&net.id).is_ok() || engine.ext_get::<String>(&adopted_key(&req.network_id))?.is_some() {
        return Ok(json!({}));
    }
    if hns_drivers::is_external(kind) {
        let (adapter, ip) = adapter_of(d, &net).await;
        options::check_lan_subnet(kind, &net, &adapter, ip, &hints)?;
    }
    if kind == NetworkType::Overlay {
        options::check_overlay_ipam(&req)?;
        if adopt_overlay(&engine, &req, &net)? {
            return Ok(json!({}));
        }
    }
    let (id, name) = (net.id.clone(), net.name.clone());
    // The create's kernel step and an overlay network's cluster step run without the lock.
    drop(engine);
    let made = match requests::create_network(&d.app, net).await {
        // A repeated create that raced the first one.
        Err(e) if e.code == ErrorCode::NetworkAlreadyExists && d.app.engine.lock().await.get_network(&id).is_ok() => return Ok(json!({})),
        made => made.inspect_err(|e| d.app.events.publish(event::network("create", &id, &name, Some(e))))?,
    };
    d.app.events.publish(event::network("create", &made.id, &made.name, None));
    tracing::info!(docker_id = %options::short(&req.network_id), name = %made.name, kind = %kind, "docker created a network");
    Ok(json!({}))
}

/// Docker networks are per host (each host's `docker network create` makes its own ID), an
/// overlay network is one cluster object: a host whose engine already has the cluster's
/// overlay network with this subnet (another host created it) maps its Docker network to that
/// one instead of creating a second. Returns whether it adopted.
fn adopt_overlay(engine: &Engine, req: &CreateNetwork, net: &HostComputeNetwork) -> Result<bool> {
    let prefix = |n: &HostComputeNetwork| n.subnets().find_map(|s| s.ip_address_prefix.parse::<ipnet::IpNet>().ok());
    let gateway = |n: &HostComputeNetwork| n.subnets().flat_map(|s| s.routes.iter()).find(|r| r.destination_prefix.ends_with("/0")).map(|r| r.next_hop.clone());
    let Some(wanted) = prefix(net) else { return Ok(false) };
    let found = engine.list_networks().into_iter().find(|n| n.network_type() == NetworkType::Overlay && prefix(n) == Some(wanted));
    let Some(existing) = found else { return Ok(false) };
    if let (Some(asked), Some(has)) = (gateway(net), gateway(&existing))
        && asked != has
    {
        return Err(ApiError::field(
            ErrorCode::InvalidSubnet,
            "--gateway",
            format!("overlay network {:?} with subnet {wanted} already exists in the cluster with gateway {has}, not {asked}; give --gateway {has}", existing.name),
        ));
    }
    engine.ext_put(&adopted_key(&req.network_id), &existing.id)?;
    // Adopted again before its removal came: it stays.
    engine.ext_delete(&retired_key(&existing.id))?;
    tracing::info!(docker_id = %options::short(&req.network_id), network = %existing.name, subnet = %wanted, "docker network adopted a cluster overlay network");
    Ok(true)
}

/// Whether this host's Docker created `net` (the others' copies, built from the cluster, carry
/// no Docker ID).
fn created_by_docker_here(net: &HostComputeNetwork) -> bool {
    net.additional_params.get(options::DOCKER_NETWORK_ID).is_some_and(|v| v.is_string())
}

pub async fn delete_network(d: &Arc<Docker>, docker_id: &str) -> Result<Value> {
    // Once a create of the network through the API (in its kernel step) is done.
    let engine = crate::engine::lock_when_idle(&d.app.engine, |e| network_hns_id(e, docker_id).into_iter().collect()).await;
    let id = network_hns_id(&engine, docker_id)?;
    if engine.ext_get::<String>(&adopted_key(docker_id))?.is_some() {
        engine.ext_delete(&adopted_key(docker_id))?;
        // An adopted overlay network belongs to the host whose Docker created it: only the
        // mapping goes, unless that host is this one (it re-adopted its own retired network).
        if !engine.get_network(&id).is_ok_and(|n| created_by_docker_here(&n)) {
            return Ok(json!({}));
        }
    }
    let name = engine.get_network(&id).map(|n| n.name).unwrap_or_default();
    drop(engine);
    // Its kernel step and an overlay network's cluster step run without the lock.
    let result = requests::delete_network(&d.app, &id).await;
    let engine = d.app.engine.lock().await;
    if !matches!(&result, Err(e) if e.code == ErrorCode::NetworkNotFound) {
        d.app.events.publish(event::network("delete", &id, &name, result.as_ref().err()));
    }
    match result {
        Err(e) if e.code == ErrorCode::NetworkNotFound => Ok(json!({})),
        Err(e) if e.code == ErrorCode::EntityHasReferences && engine.get_network(&id).is_ok_and(|n| n.network_type() == NetworkType::Overlay) => {
            // Other hosts still have endpoints on it. Docker (20.10) removes its network even
            // when a remote driver refuses (it only logs the error), so a refusal alone would
            // leave the overlay network to nobody: it is retired, removed once they are gone.
            engine.ext_put(&retired_key(&id), &docker_id)?;
            tokio::spawn(retire(d.clone(), id.clone()));
            tracing::warn!(network = %id, error = %e.message, "docker removed an overlay network other hosts still use; hns removes it once their endpoints are gone");
            Err(ApiError { message: format!("{}; hns removes the overlay network once those endpoints are gone", e.message), ..e })
        }
        other => other.map(|()| json!({})),
    }
}

/// Store key of an overlay network waiting to be removed (see [`delete_network`]).
fn retired_key(hns_id: &str) -> String {
    format!("docker/retired/{hns_id}")
}

/// How often a retired overlay network's removal is tried again.
const RETIRE_RETRY: Duration = Duration::from_secs(2);

/// Removes a retired overlay network once the cluster lets it go; stops when its record is
/// gone (a Docker network adopted it again) or the network is.
pub async fn retire(d: Arc<Docker>, id: String) {
    loop {
        tokio::time::sleep(RETIRE_RETRY).await;
        if !matches!(d.app.engine.lock().await.ext_get::<String>(&retired_key(&id)), Ok(Some(_))) {
            return;
        }
        match requests::delete_network(&d.app, &id).await {
            Ok(()) => tracing::info!(network = %id, "removed a retired overlay network"),
            Err(e) if e.code == ErrorCode::NetworkNotFound => {}
            Err(e) if matches!(e.code, ErrorCode::EntityHasReferences | ErrorCode::Unavailable) => continue,
            Err(e) => tracing::warn!(network = %id, error = %e, "cannot remove a retired overlay network; remove it with hnsctl network rm"),
        }
        if let Err(e) = d.app.engine.lock().await.ext_delete(&retired_key(&id)) {
            tracing::warn!(network = %id, error = %e, "could not forget a retired overlay network");
        }
        return;
    }
}

/// At start: resumes the removal of retired overlay networks.
pub async fn recover_retired(d: &Arc<Docker>) {
    let engine = d.app.engine.lock().await;
    for net in engine.list_networks() {
        if matches!(engine.ext_get::<String>(&retired_key(&net.id)), Ok(Some(_))) {
            tokio::spawn(retire(d.clone(), net.id));
        }
    }
}

pub async fn create_endpoint(d: &Docker, req: CreateEndpoint) -> Result<CreateEndpointReply> {
    let (ep, existing, overlay) = {
        let engine = d.app.engine.lock().await;
        let net_id = network_hns_id(&engine, &req.network_id)?;
        let mut ep = options::endpoint_request(&req, &net_id)?;
        ep.policies.extend(engine.get_network(&net_id).ok().and_then(|n| options::outbound_nat_policy(&n)));
        let existing = engine.get_endpoint(&ep.id).ok();
        (ep, existing, engine.get_network(&net_id).is_ok_and(|n| n.network_type() == NetworkType::Overlay))
    };
    let made = match existing {
        Some(existing) => existing,
        // etcd's steps on an overlay network run without the engine lock.
        None => {
            let id = ep.id.clone();
            let made = requests::create_endpoint(&d.app, ep).await.map_err(|e| if overlay { options::overlay_address_hint(e) } else { e });
            let ev = event::endpoint(&*d.app.engine.lock().await, "create", made.as_ref().map_or(&id, |m| &m.id), made.as_ref().err());
            d.app.events.publish(ev);
            made?
        }
    };
    let asked = req.interface.clone().unwrap_or_default();
    Ok(CreateEndpointReply { interface: options::endpoint_reply(&asked, &made) })
}

pub async fn delete_endpoint(d: &Docker, req: &EndpointRef) -> Result<Value> {
    let id = hns_id(&req.endpoint_id)?;
    // The event is made while the endpoint's names are still known.
    let done = {
        let mut engine = d.app.engine.lock().await;
        // Docker leaves before it deletes; after a crash of either daemon it may not have.
        super::sandbox::leave_locked(d, &mut engine, &id).await?;
        event::endpoint(&engine, "delete", &id, None)
    };
    match requests::delete_endpoint(&d.app, &id).await {
        Err(e) if e.code == ErrorCode::EndpointNotFound => Ok(json!({})),
        Ok(()) => {
            d.app.events.publish(done);
            Ok(json!({}))
        }
        Err(e) => {
            d.app.events.publish(event::outcome(done, Some(&e)));
            Err(e)
        }
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

async fn remove_mappings(d: &Docker, engine: &mut Engine, id: &str) -> Result<()> {
    let current = match engine.get_endpoint(id) {
        Ok(ep) => mappings_of(&ep),
        Err(_) => return Ok(()),
    };
    if current.is_empty() {
        return Ok(());
    }
    engine.modify_endpoint(id, policy_request(RequestType::Remove, &current)).await?;
    for ev in event::mappings(engine, "remove", id, &current) {
        d.app.events.publish(ev);
    }
    Ok(())
}

/// `ProgramExternalConnectivity`: the container's `-p` bindings become the endpoint's mappings
/// (replacing any it had, so a repeated call changes nothing but dynamic host ports).
pub async fn program_external(d: &Docker, req: &EndpointRef) -> Result<Value> {
    let id = hns_id(&req.endpoint_id)?;
    let wanted = options::port_mappings(&req.options)?;
    let mut engine = d.app.engine.lock().await;
    remove_mappings(d, &mut engine, &id).await?;
    if !wanted.is_empty() {
        engine.modify_endpoint(&id, policy_request(RequestType::Add, &wanted)).await?;
        // With the host ports hnsd chose.
        let made = engine.get_endpoint(&id).map(|ep| mappings_of(&ep)).unwrap_or_default();
        for ev in event::mappings(&engine, "add", &id, &made) {
            d.app.events.publish(ev);
        }
        tracing::info!(endpoint = %options::short(&req.endpoint_id), count = wanted.len(), "docker published ports");
    }
    Ok(json!({}))
}

pub async fn revoke_external(d: &Docker, req: &EndpointRef) -> Result<Value> {
    let id = hns_id(&req.endpoint_id)?;
    let mut engine = d.app.engine.lock().await;
    remove_mappings(d, &mut engine, &id).await?;
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
