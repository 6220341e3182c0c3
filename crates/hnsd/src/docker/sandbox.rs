//! Getting an endpoint into a container's namespace, and making that namespace an hns
//! compartment.
//!
//! Why hns hands Docker a link instead of attaching into the sandbox itself: Docker calls `Join`
//! before the container's namespace exists. For `docker run`, `SandboxKey` is a path that only
//! becomes a namespace when runc's prestart hook calls back into dockerd, after `Join` has
//! returned and before the container's process runs; no driver call happens then. So a driver
//! that wants the network ready when the process starts must leave a link in Docker's namespace
//! and let Docker move it in (`InterfaceName`), as every remote driver does.
//!
//! How, with the engine's own drivers doing the host side (bridge port, proxy ARP, host routes):
//! 1. `Join` creates a staging compartment (`docker-stage-<endpoint>`), attaches the endpoint
//!    there as any attach, then moves the container end out into hnsd's (= Docker's) namespace
//!    as `hdk<endpoint>`. The reply names that link, and the gateway: Docker moves the link into
//!    the sandbox, names it `ethN`, sets its address, MAC and routes, and owns the default route
//!    (so it can move it between networks on connect and disconnect as it does for its own
//!    drivers). Port mappings follow from that: Docker sends them to the gateway endpoint.
//! 2. A watcher waits for the sandbox path to become a namespace holding a link with the
//!    endpoint's MAC, renamed and up (Docker is done with it), then adopts the namespace as a
//!    compartment (once per container) and records the endpoint there under the name Docker
//!    gave it; the staging compartment goes. From then on the endpoint is like any other: the
//!    reconciler repairs it, `Leave` detaches it.
//!
//! macvlan endpoints (transparent, l2tunnel) have no host end the reconciler could check, so
//! while staged their name is held in the staging compartment by a placeholder link.

use std::path::Path;

use hns_api::{ApiError, ErrorCode, HostComputeNamespace, ModifyRequest, NetworkType, RequestType, ResourceType};
use hns_ipam::Mac;
use hns_kernel::netlink::Netlink;
use hns_kernel::netns;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::options::{self, hns_id};
use super::protocol::{InterfaceName, Join, JoinReply};
use super::Docker;
use crate::engine::{Engine, kernel_err as kernel};

pub type Result<T> = std::result::Result<T, ApiError>;

/// Name prefix of staging compartments.
pub const STAGE_PREFIX: &str = "docker-stage-";
/// Name prefix of the link Docker moves in (not one of hns's own prefixes: the reconciler must
/// not take it for a leftover).
const LINK_PREFIX: &str = "hdk";
/// MAC of the placeholder link in a staging compartment (locally administered; never on a wire).
const PLACEHOLDER_MAC: [u8; 6] = [0x02, 0x68, 0x6e, 0x73, 0x00, 0x01];

/// A join whose container namespace is not adopted yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingJoin {
    pub endpoint: String,
    pub sandbox_key: String,
    pub staging: String,
    pub src_name: String,
}

fn record_key(endpoint: &str) -> String {
    format!("docker/join/{endpoint}")
}

/// The link name for an endpoint: `hdk` + 12 hex digits of its ID (15 bytes, the kernel limit).
pub fn src_name(endpoint_id: &str) -> String {
    let hex: String = endpoint_id.chars().filter(char::is_ascii_hexdigit).take(12).collect();
    format!("{LINK_PREFIX}{hex}")
}

/// The compartment name for a container: its Docker name when known, else its sandbox's.
pub fn compartment_name(container: Option<&str>, sandbox_key: &str) -> String {
    match container.map(|c| c.trim_start_matches('/')).filter(|c| !c.is_empty()) {
        Some(c) => c.to_owned(),
        None => format!("docker-{}", Path::new(sandbox_key).file_name().and_then(|n| n.to_str()).unwrap_or("sandbox")),
    }
}

fn endpoint_modify(request_type: RequestType, endpoint: &str) -> ModifyRequest {
    ModifyRequest { resource_type: ResourceType::Endpoint, request_type, resource_uri: String::new(), settings: json!({ "EndpointId": endpoint }) }
}

/// Gateways Docker should route through: the network's, per family of the endpoint's addresses;
/// none on an internal network (Docker then adds no default route through it either), nor on
/// an overlay network without `OutboundNat`: as on Windows, its containers go out through a
/// second endpoint on a nat network.
fn gateways(engine: &Engine, ep: &hns_api::HostComputeEndpoint) -> Result<(String, String)> {
    let net = engine.get_network(&ep.host_compute_network)?;
    let (mut v4, mut v6) = (String::new(), String::new());
    if net.internal || no_outbound(&net) {
        return Ok((v4, v6));
    }
    for s in net.subnets() {
        let Ok(prefix) = s.ip_address_prefix.parse::<ipnet::IpNet>() else { continue };
        let Some(gw) = s.routes.iter().find(|r| r.destination_prefix.ends_with("/0")).map(|r| r.next_hop.clone()) else { continue };
        let mine = ep.ip_configurations.iter().any(|c| c.ip_address.parse::<std::net::IpAddr>().is_ok_and(|ip| prefix.contains(&ip)));
        if mine {
            let slot = if prefix.addr().is_ipv4() { &mut v4 } else { &mut v6 };
            if slot.is_empty() {
                *slot = gw;
            }
        }
    }
    Ok((v4, v6))
}

/// An overlay network that does not route its containers out (no `OutboundNat`).
fn no_outbound(net: &hns_api::HostComputeNetwork) -> bool {
    net.network_type() == NetworkType::Overlay && !net.outbound_nat
}

pub async fn join(d: &Docker, req: &Join) -> Result<JoinReply> {
    let id = hns_id(&req.endpoint_id)?;
    if req.sandbox_key.is_empty() || !Path::new(&req.sandbox_key).is_absolute() {
        return Err(ApiError::field(ErrorCode::InvalidNamespace, "SandboxKey", format!("SandboxKey {:?} is not an absolute path", req.sandbox_key)));
    }
    // A DHCP lease is obtained before the engine lock is taken for the rest.
    let wanted = |e: &Engine| (e.leases_wanted(std::slice::from_ref(&id)), ());
    crate::engine::dhcp::with_leases(&d.app.engine, |_| Vec::new(), wanted, async |engine, ()| {
        let joined = join_locked(d, engine, req, id.clone()).await;
        d.app.events.publish(crate::events::docker::endpoint(engine, "attach", &id, joined.as_ref().err()).attr("sandbox", req.sandbox_key.as_str()));
        joined
    })
    .await
}

async fn join_locked(d: &Docker, engine: &mut Engine, req: &Join, id: String) -> Result<JoinReply> {
    let ep = engine.get_endpoint(&id)?;
    let (gateway, gateway_ipv6) = gateways(engine, &ep)?;
    // Without this Docker would give a gateway-less endpoint's container a docker_gwbridge
    // network for outbound: outbound on an overlay is the user's choice (a nat network).
    let disable_gateway_service = no_outbound(&engine.get_network(&ep.host_compute_network)?);
    let src = src_name(&id);
    let reply = JoinReply { interface_name: Some(InterfaceName { src_name: src.clone(), dst_prefix: "eth".into() }), gateway, gateway_ipv6, disable_gateway_service };
    if !ep.host_compute_namespace.is_empty() {
        // A repeated Join (Docker retried) finds its own staged endpoint.
        if d.pending().get(&id).is_some_and(|p| p.sandbox_key == req.sandbox_key) {
            return Ok(reply);
        }
        return Err(ApiError::new(ErrorCode::EndpointAlreadyAttached, format!("endpoint {} is already in a container", options::short(&req.endpoint_id))));
    }
    let kind = engine.get_network(&ep.host_compute_network)?.network_type();
    let staging_name = format!("{STAGE_PREFIX}{}", options::short(&req.endpoint_id));
    if let Ok(old) = engine.get_namespace(&staging_name) {
        let _ = engine.delete_namespace(&old.id).await;
    }
    let staging = engine.create_namespace(HostComputeNamespace { name: staging_name, ..Default::default() }).await?;
    let pending = PendingJoin { endpoint: id.clone(), sandbox_key: req.sandbox_key.clone(), staging: staging.id.clone(), src_name: src.clone() };
    // Recorded before the kernel work, so a crash half-way is found again at the next start.
    engine.ext_put(&record_key(&id), &pending)?;
    let staged = stage(d, engine, &id, kind, &staging).await;
    if let Err(e) = staged {
        let _ = engine.modify_namespace(&staging.id, endpoint_modify(RequestType::Remove, &id)).await;
        let _ = engine.delete_namespace(&staging.id).await;
        let _ = d.host.delete_link(&src).await;
        let _ = engine.ext_delete(&record_key(&id));
        return Err(e);
    }
    // For `docker run` the sandbox is not a namespace yet (see the module docs); for
    // `docker network connect` to a running container it is.
    let exists = netns::is_netns(Path::new(&req.sandbox_key));
    tracing::info!(endpoint = %options::short(&req.endpoint_id), sandbox = %req.sandbox_key, sandbox_exists = exists, link = %src, "docker join: link handed to docker");
    d.pending().insert(id, pending);
    d.wake.notify_one();
    Ok(reply)
}

/// Attaches the endpoint in the staging compartment and moves the container end out to Docker.
async fn stage(d: &Docker, engine: &mut Engine, id: &str, kind: NetworkType, staging: &HostComputeNamespace) -> Result<()> {
    engine.modify_namespace(&staging.id, endpoint_modify(RequestType::Add, id)).await?;
    let ifname = engine.get_endpoint(id)?.interface_name;
    let fd = netns::open(Path::new(&staging.net_ns_path)).map_err(kernel)?;
    let inside = Netlink::in_netns(&fd).map_err(kernel)?;
    let src = src_name(id);
    d.host.delete_link(&src).await.map_err(kernel)?;
    inside.move_link(&ifname, &src, &d.host_ns).await.map_err(kernel)?;
    if !hns_drivers::has_host_veth(kind) {
        inside.ensure_bridge(&ifname, PLACEHOLDER_MAC, false).await.map_err(kernel)?;
    }
    Ok(())
}

/// Adopts the sandbox of a pending join if Docker has moved the link in by now; `label` names
/// the compartment if one is made (see [`super::names`]). Returns whether the join is done.
pub async fn try_adopt(d: &Docker, engine: &mut Engine, p: &PendingJoin, label: Option<&str>) -> Result<bool> {
    let key = Path::new(&p.sandbox_key);
    if !netns::is_netns(key) {
        return Ok(false);
    }
    let identity = netns::identity(key).map_err(kernel)?;
    let ep = match engine.get_endpoint(&p.endpoint) {
        Ok(ep) => ep,
        Err(_) => {
            // Deleted meanwhile: nothing left to adopt.
            forget(d, engine, p).await;
            return Ok(true);
        }
    };
    // The container's compartment, if an earlier join (or hnsctl, by another path) made one.
    let compartment = engine.list_namespaces().into_iter().find(|n| !n.name.starts_with(STAGE_PREFIX) && netns::identity(Path::new(&n.net_ns_path)).is_ok_and(|i| i == identity));
    let taken: Vec<String> = match &compartment {
        Some(c) => engine.list_endpoints().into_iter().filter(|e| e.host_compute_namespace == c.id).map(|e| e.interface_name).collect(),
        None => Vec::new(),
    };
    let mac = Mac::parse(&ep.mac_address).map_err(|e| ApiError::internal(format!("endpoint {} has a bad MAC: {e}", ep.id)))?;
    let fd = netns::open(key).map_err(kernel)?;
    let inside = Netlink::in_netns(&fd).map_err(kernel)?;
    let Some(link) = inside.link_by_mac(mac.0, &taken).await.map_err(kernel)? else { return Ok(false) };
    // Docker moves the link in, then renames, configures and brings it up: only then is the
    // name final.
    if link.name == p.src_name || !link.up {
        return Ok(false);
    }
    let ns_id = match compartment {
        Some(c) => c.id,
        None => {
            let mut name = compartment_name(label, &p.sandbox_key);
            if engine.get_namespace(&name).is_ok() {
                name = format!("{name}-{}", &ep.id[..8]);
            }
            engine.create_namespace(HostComputeNamespace { name, net_ns_path: p.sandbox_key.clone(), ..Default::default() }).await?.id
        }
    };
    engine.rebind_endpoint(&p.endpoint, &ns_id, &link.name).await?;
    tracing::info!(endpoint = %p.endpoint, compartment = %ns_id, ifname = %link.name, "adopted a docker container's namespace");
    forget(d, engine, p).await;
    Ok(true)
}

/// Drops a pending join: its staging compartment, its record.
async fn forget(d: &Docker, engine: &mut Engine, p: &PendingJoin) {
    if engine.get_namespace(&p.staging).is_ok()
        && let Err(e) = engine.delete_namespace(&p.staging).await
    {
        tracing::warn!(namespace = %p.staging, error = %e, "could not remove a staging compartment");
    }
    if let Err(e) = engine.ext_delete(&record_key(&p.endpoint)) {
        tracing::warn!(error = %e, "could not forget a pending join");
    }
    d.pending().remove(&p.endpoint);
}

pub async fn leave(d: &Docker, docker_endpoint: &str) -> Result<()> {
    let id = hns_id(docker_endpoint)?;
    let mut engine = d.app.engine.lock().await;
    // Made before the leave, while the endpoint still names its compartment.
    let attached = engine.get_endpoint(&id).is_ok_and(|ep| !ep.host_compute_namespace.is_empty());
    let ev = crate::events::docker::endpoint(&engine, "detach", &id, None);
    let left = leave_locked(d, &mut engine, &id).await;
    if attached {
        d.app.events.publish(crate::events::docker::outcome(ev, left.as_ref().err()));
    }
    left
}

/// Takes an endpoint out of its container (idempotent). A staged endpoint whose link Docker
/// already moved in is adopted first, so the link is removed where it really is.
pub async fn leave_locked(d: &Docker, engine: &mut Engine, id: &str) -> Result<()> {
    let pending = d.pending().get(id).cloned();
    if let Some(p) = &pending
        && let Err(e) = try_adopt(d, engine, p, None).await
    {
        tracing::warn!(endpoint = id, error = %e, "could not adopt the container before leaving");
    }
    let Ok(ep) = engine.get_endpoint(id) else { return Ok(()) };
    let ns = ep.host_compute_namespace.clone();
    if !ns.is_empty() {
        engine.modify_namespace(&ns, endpoint_modify(RequestType::Remove, id)).await?;
    }
    let still_pending = d.pending().get(id).cloned();
    if let Some(p) = still_pending {
        // Still staged: the link may wait in Docker's namespace, or be half-way into the
        // sandbox (a macvlan does not go with a host end, so it is removed where it is).
        let _ = d.host.delete_link(&p.src_name).await;
        if let (Ok(mac), Ok(net)) = (Mac::parse(&ep.mac_address), engine.get_network(&ep.host_compute_network)) {
            delete_in_sandbox(&engine.host_ns, &p.sandbox_key, mac.0, container_link_kind(net.network_type())).await;
        }
        forget(d, engine, &p).await;
    } else if !ns.is_empty() {
        let view = engine.get_namespace(&ns)?;
        if view.resources.is_empty() {
            // The container's last hns network: the compartment record goes (the namespace is
            // Docker's and stays).
            engine.delete_namespace(&ns).await?;
        }
    }
    Ok(())
}

/// Deletes the endpoint's link inside the sandbox at `key`, if both exist. The sandbox path
/// comes from Docker and may name any namespace, and a MAC alone does not make a link ours: only
/// a link of the kind the endpoint's driver creates (`kind`: veth or macvlan) with the endpoint's
/// MAC goes, and nothing goes in a host namespace (hnsd's own, the machine's initial one, or
/// any namespace when the initial one is unknown).
async fn delete_in_sandbox(host_ns: &netns::HostNamespaces, key: &str, mac: [u8; 6], kind: &str) {
    let path = Path::new(key);
    let Ok(identity) = netns::identity(path) else { return };
    if let Err(why) = host_ns.check(identity) {
        tracing::warn!(sandbox = key, reason = ?why, "not removing a link in a sandbox that is a host namespace (or cannot be told apart from one)");
        return;
    }
    let Ok(fd) = netns::open(path) else { return };
    let Ok(inside) = Netlink::in_netns(&fd) else { return };
    let mut others = Vec::new();
    while let Ok(Some(l)) = inside.link_by_mac(mac, &others).await {
        if l.kind.as_deref() == Some(kind) {
            let _ = inside.delete_link(&l.name).await;
            return;
        }
        tracing::warn!(sandbox = key, link = %l.name, kind = ?l.kind, "not removing a link with the endpoint's MAC that hns did not create");
        others.push(l.name);
    }
}

/// The kind of link an endpoint of a `kind` network has in its container.
fn container_link_kind(kind: NetworkType) -> &'static str {
    if hns_drivers::has_host_veth(kind) { "veth" } else { "macvlan" }
}

/// At start: pending joins from the store; staging compartments nobody waits for are removed.
pub async fn recover(d: &Docker) {
    let mut engine = d.app.engine.lock().await;
    let staging: Vec<HostComputeNamespace> = engine.list_namespaces().into_iter().filter(|n| n.name.starts_with(STAGE_PREFIX)).collect();
    for ns in staging {
        let endpoints = ns.endpoint_ids();
        let mut kept = false;
        for ep in &endpoints {
            if let Ok(Some(p)) = engine.ext_get::<PendingJoin>(&record_key(ep))
                && p.staging == ns.id
            {
                d.pending().insert(ep.clone(), p);
                kept = true;
            }
        }
        if !kept {
            tracing::warn!(namespace = %ns.name, "removing a staging compartment left by a join that did not finish");
            for ep in &endpoints {
                let _ = engine.modify_namespace(&ns.id, endpoint_modify(RequestType::Remove, ep)).await;
                let _ = d.host.delete_link(&src_name(ep)).await;
            }
            let _ = engine.delete_namespace(&ns.id).await;
        }
    }
    if !d.pending().is_empty() {
        d.wake.notify_one();
    }
}

/// Adopts containers' namespaces as they appear. Polls (every 50 ms) only while joins are
/// pending: the namespace appears in the middle of container start, with no call to the driver.
pub async fn watch(d: std::sync::Arc<Docker>) {
    // Container names by sandbox, looked up once per sandbox, outside the engine lock.
    let mut labels: std::collections::HashMap<String, Option<String>> = std::collections::HashMap::new();
    // The last error per join: logged once, not every 50 ms.
    let mut errors: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    loop {
        if d.pending().is_empty() {
            d.wake.notified().await;
        } else {
            tokio::select! {
                _ = d.wake.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
        let ready: Vec<PendingJoin> = d.pending().values().filter(|p| netns::is_netns(Path::new(&p.sandbox_key))).cloned().collect();
        labels.retain(|k, _| ready.iter().any(|p| &p.sandbox_key == k));
        errors.retain(|k, _| ready.iter().any(|p| &p.endpoint == k));
        if ready.is_empty() {
            continue;
        }
        for p in &ready {
            if !labels.contains_key(&p.sandbox_key) {
                let key = std::path::PathBuf::from(&p.sandbox_key);
                let label = tokio::task::spawn_blocking(move || super::names::container_label(&key)).await.ok().flatten();
                labels.insert(p.sandbox_key.clone(), label);
            }
        }
        let mut engine = d.app.engine.lock().await;
        for p in ready {
            // Leave may have finished it while we waited for the lock.
            if !d.pending().contains_key(&p.endpoint) {
                continue;
            }
            let label = labels.get(&p.sandbox_key).cloned().flatten();
            if let Err(e) = try_adopt(&d, &mut engine, &p, label.as_deref()).await
                && errors.insert(p.endpoint.clone(), e.message.clone()).as_ref() != Some(&e.message)
            {
                tracing::warn!(endpoint = %p.endpoint, error = %e, "could not adopt a container's namespace yet; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lab namespace holding a veth pair and a bridge, all with `mac`; returns the holder
    /// and the link names left in it.
    fn namespace_with_links(mac: &str) -> (hns_lab::Holder, impl Fn(&hns_lab::Holder) -> String) {
        let h = hns_lab::Holder::new_net().unwrap();
        h.sh(&format!("ip link add userveth address {mac} type veth peer name userpeer && ip link add userbridge address {mac} type bridge")).unwrap();
        let links = |h: &hns_lab::Holder| {
            let mut names: Vec<String> = h.ip(&["-o", "link", "show"]).unwrap().stdout.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap().to_owned()).collect();
            names.sort();
            names.join(" ")
        };
        (h, links)
    }

    /// Docker's `Leave` for a join not adopted yet removes the link with the endpoint's MAC in
    /// the sandbox Docker named: never in hnsd's own namespace, and never a link hns would not
    /// have made there.
    #[tokio::test]
    async fn leave_removes_only_hns_links_and_never_in_a_host_namespace() {
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x09];
        let shown = "02:42:ac:11:00:09";
        // hnsd "runs" in `own`: its host namespaces are found from a thread inside it.
        let (own, links) = namespace_with_links(shown);
        let own_fd = netns::open(&own.netns_path()).unwrap();
        let host_ns = netns::run_in(&own_fd, || netns::HostNamespaces::discover().unwrap()).unwrap();
        let before = links(&own);
        delete_in_sandbox(&host_ns, own.netns_path().to_str().unwrap(), mac, "veth").await;
        assert_eq!(links(&own), before, "a link in hnsd's own namespace was removed");

        // A container's namespace: the bridge is not a kind hns makes there, so it stays.
        let (sandbox, links) = namespace_with_links(shown);
        sandbox.sh("ip link del userveth").unwrap();
        delete_in_sandbox(&host_ns, sandbox.netns_path().to_str().unwrap(), mac, "veth").await;
        assert!(links(&sandbox).contains("userbridge"), "a bridge with the endpoint's MAC was removed: {}", links(&sandbox));
        // A veth with the MAC, as hns hands to Docker, goes.
        sandbox.sh(&format!("ip link add ctr address {shown} type veth peer name ctrpeer")).unwrap();
        delete_in_sandbox(&host_ns, sandbox.netns_path().to_str().unwrap(), mac, "veth").await;
        let after = links(&sandbox);
        assert!(!after.split(' ').any(|n| n == "ctr" || n == "ctrpeer"), "the endpoint's veth stayed: {after}");
        assert!(after.split(' ').any(|n| n == "userbridge"), "{after}");
    }

    #[test]
    fn names() {
        assert_eq!(src_name("4f0c1e2d-3b4a-5968-7766-554433221100"), "hdk4f0c1e2d3b4a");
        assert!(src_name("4f0c1e2d-3b4a-5968-7766-554433221100").len() <= 15);
        assert!(!hns_kernel::names::has_hns_name(&src_name("4f0c1e2d-3b4a-5968-7766-554433221100")));
        assert_eq!(compartment_name(Some("/web"), "/var/run/docker/netns/abc"), "web");
        assert_eq!(compartment_name(None, "/var/run/docker/netns/0123456789ab"), "docker-0123456789ab");
    }
}
