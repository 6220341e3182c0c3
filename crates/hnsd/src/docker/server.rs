//! The plugin sockets: `<dir>/<driver>.sock` for each network driver and `<dir>/hns.sock` for the
//! IPAM driver, root-only (0600), created at start and removed at stop. Docker finds them by
//! name in its plugin directory (`/run/docker/plugins`) the first time a network names the
//! driver, and activates them with `Plugin.Activate`.
//!
//! Every call is `POST /<Interface>.<Method>` with a JSON body (Docker sends its own media type,
//! so bodies are decoded here, not by axum's JSON extractor). Errors are answered with status
//! 200 and the message in `Err` (NetworkDriver) or `Error` (IpamDriver): that is what Docker
//! shows the user ("remote: <message>"). Unknown methods get 404, which Docker reads as "not
//! implemented" for its optional calls.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hns_api::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::protocol::*;
use super::{Docker, Driver, IPAM_NAME, ipam, network_driver, options, sandbox};

/// The running plugin sockets. [`Plugins::stop`] closes them and removes the files.
pub struct Plugins {
    sockets: Vec<PathBuf>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Plugins {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// Decodes a request body; an empty body or `null` (Go's nil) is the default request.
fn decode<T: DeserializeOwned + Default>(b: &Bytes) -> Result<T, String> {
    let text = std::str::from_utf8(b).unwrap_or_default().trim();
    if text.is_empty() || text == "null" {
        return Ok(T::default());
    }
    serde_json::from_str(text).map_err(|e| format!("cannot read the request: {e}"))
}

fn reply<T: Serialize>(v: T) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// A NetworkDriver answer: the value, or `{"Err": message}`.
fn driver_reply<T: Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => reply(v),
        Err(e) => {
            tracing::warn!(error = %e, "docker request refused");
            reply(json!({ "Err": options::error_text(&e) }))
        }
    }
}

/// An IpamDriver answer: the value, or `{"Error": message}`.
fn ipam_reply<T: Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => reply(v),
        Err(e) => {
            tracing::warn!(error = %e, "docker IPAM request refused");
            reply(json!({ "Error": options::error_text(&e) }))
        }
    }
}

fn bad_request(key: &str, msg: String) -> Response {
    let mut m = serde_json::Map::new();
    m.insert(key.to_owned(), Value::String(msg));
    reply(m)
}

#[derive(Clone)]
struct DriverState {
    d: Arc<Docker>,
    driver: Driver,
}

/// Decodes the body into `$t` or answers the decode error in `$key`.
macro_rules! body {
    ($b:expr, $t:ty, $key:literal) => {
        match decode::<$t>(&$b) {
            Ok(v) => v,
            Err(m) => return bad_request($key, m),
        }
    };
}

async fn activate_driver() -> Response {
    reply(Activate { implements: vec!["NetworkDriver"] })
}

async fn activate_ipam() -> Response {
    reply(Activate { implements: vec!["IpamDriver"] })
}

async fn capabilities() -> Response {
    reply(Capabilities { scope: "local", connectivity_scope: "local" })
}

async fn create_network(State(s): State<DriverState>, b: Bytes) -> Response {
    let req = body!(b, CreateNetwork, "Err");
    driver_reply(network_driver::create_network(&s.d, s.driver, req).await)
}

async fn delete_network(State(s): State<DriverState>, b: Bytes) -> Response {
    let req = body!(b, NetworkRef, "Err");
    driver_reply(network_driver::delete_network(&s.d, &req.network_id).await)
}

async fn create_endpoint(State(s): State<DriverState>, b: Bytes) -> Response {
    let req = body!(b, CreateEndpoint, "Err");
    driver_reply(network_driver::create_endpoint(&s.d, req).await)
}

async fn delete_endpoint(State(s): State<DriverState>, b: Bytes) -> Response {
    let req = body!(b, EndpointRef, "Err");
    driver_reply(network_driver::delete_endpoint(&s.d, &req).await)
}

async fn oper_info(State(s): State<DriverState>, b: Bytes) -> Response {
    let req = body!(b, EndpointRef, "Err");
    driver_reply(network_driver::oper_info(&s.d, &req).await)
}

async fn join(State(s): State<DriverState>, b: Bytes) -> Response {
    let req = body!(b, Join, "Err");
    driver_reply(sandbox::join(&s.d, &req).await)
}

async fn leave(State(s): State<DriverState>, b: Bytes) -> Response {
    let req = body!(b, EndpointRef, "Err");
    driver_reply(sandbox::leave(&s.d, &req.endpoint_id).await.map(|()| json!({})))
}

async fn program_external(State(s): State<DriverState>, b: Bytes) -> Response {
    let req = body!(b, EndpointRef, "Err");
    driver_reply(network_driver::program_external(&s.d, &req).await)
}

async fn revoke_external(State(s): State<DriverState>, b: Bytes) -> Response {
    let req = body!(b, EndpointRef, "Err");
    driver_reply(network_driver::revoke_external(&s.d, &req).await)
}

/// Calls that need no work from a local-scope driver.
async fn nothing() -> Response {
    reply(json!({}))
}

async fn not_implemented(uri: axum::http::Uri) -> Response {
    (StatusCode::NOT_FOUND, axum::Json(json!({ "Err": format!("{uri} is not implemented by hns") }))).into_response()
}

fn driver_router(d: Arc<Docker>, driver: Driver) -> Router {
    Router::new()
        .route("/Plugin.Activate", post(activate_driver))
        .route("/NetworkDriver.GetCapabilities", post(capabilities))
        .route("/NetworkDriver.CreateNetwork", post(create_network))
        .route("/NetworkDriver.DeleteNetwork", post(delete_network))
        .route("/NetworkDriver.CreateEndpoint", post(create_endpoint))
        .route("/NetworkDriver.DeleteEndpoint", post(delete_endpoint))
        .route("/NetworkDriver.EndpointOperInfo", post(oper_info))
        .route("/NetworkDriver.Join", post(join))
        .route("/NetworkDriver.Leave", post(leave))
        .route("/NetworkDriver.ProgramExternalConnectivity", post(program_external))
        .route("/NetworkDriver.RevokeExternalConnectivity", post(revoke_external))
        .route("/NetworkDriver.DiscoverNew", post(nothing))
        .route("/NetworkDriver.DiscoverDelete", post(nothing))
        .fallback(not_implemented)
        .with_state(DriverState { d, driver })
}

async fn ipam_capabilities() -> Response {
    // Docker need not replay its requests at restart: the pools are in hns's store.
    reply(IpamCapabilities { requires_mac_address: false, requires_request_replay: false })
}

async fn address_spaces() -> Response {
    reply(AddressSpaces { local_default_address_space: ipam::LOCAL_SPACE, global_default_address_space: ipam::GLOBAL_SPACE })
}

async fn request_pool(State(d): State<Arc<Docker>>, b: Bytes) -> Response {
    let req = body!(b, RequestPool, "Error");
    // A pool to pick avoids the host's addresses and routes: read without the engine's lock (a
    // dump of them all, ~0.4 s at 5 000 endpoints).
    let host = if req.pool.is_empty() {
        let reader = d.app.engine.lock().await.host_prefix_reader();
        reader.read().await.prefixes
    } else {
        Vec::new()
    };
    let engine = d.app.engine.lock().await;
    let mut pools = d.ipam.lock().await;
    ipam_reply(pools.request_pool(&engine, &req, &host).await)
}

async fn release_pool(State(d): State<Arc<Docker>>, b: Bytes) -> Response {
    let req = body!(b, PoolRef, "Error");
    let engine = d.app.engine.lock().await;
    let mut pools = d.ipam.lock().await;
    ipam_reply(pools.release_pool(&engine, &req.pool_id).map(|()| json!({})))
}

async fn request_address(State(d): State<Arc<Docker>>, b: Bytes) -> Response {
    let req = body!(b, RequestAddress, "Error");
    let engine = d.app.engine.lock().await;
    let mut pools = d.ipam.lock().await;
    ipam_reply(pools.request_address(&engine, &req))
}

async fn release_address(State(d): State<Arc<Docker>>, b: Bytes) -> Response {
    let req = body!(b, ReleaseAddress, "Error");
    let engine = d.app.engine.lock().await;
    let mut pools = d.ipam.lock().await;
    ipam_reply(pools.release_address(&engine, &req.pool_id, &req.address).map(|()| json!({})))
}

fn ipam_router(d: Arc<Docker>) -> Router {
    Router::new()
        .route("/Plugin.Activate", post(activate_ipam))
        .route("/IpamDriver.GetCapabilities", post(ipam_capabilities))
        .route("/IpamDriver.GetDefaultAddressSpaces", post(address_spaces))
        .route("/IpamDriver.RequestPool", post(request_pool))
        .route("/IpamDriver.ReleasePool", post(release_pool))
        .route("/IpamDriver.RequestAddress", post(request_address))
        .route("/IpamDriver.ReleaseAddress", post(release_address))
        .fallback(not_implemented)
        .with_state(d)
}

/// Binds a plugin socket, refusing to take one another live process serves (another plugin
/// with that name, or another hnsd).
fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is served by another process (another plugin of that name, or another hnsd)", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let l = crate::serve::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Opens every plugin socket in `dir`, served within `limits` (one connection cap for them all). A name already served elsewhere is skipped with an error
/// in the log: the other drivers still work.
pub fn start(dir: &Path, d: Arc<Docker>, limits: crate::serve::Limits) -> anyhow::Result<Plugins> {
    let server = Arc::new(crate::serve::Server::new(limits));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let (stop, stopped) = watch::channel(false);
    let mut plugins = Plugins { sockets: Vec::new(), stop, tasks: Vec::new() };
    let routers = Driver::ALL.iter().map(|(name, driver)| (*name, driver_router(d.clone(), *driver))).chain(std::iter::once((IPAM_NAME, ipam_router(d.clone()))));
    for (name, router) in routers {
        let path = dir.join(format!("{name}.sock"));
        let listener = match bind(&path) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "docker plugin {name} is not served");
                continue;
            }
        };
        let mut stopped = stopped.clone();
        let server = server.clone();
        plugins.tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            server.serve(listener, router, shutdown).await;
        }));
        plugins.sockets.push(path);
    }
    tracing::info!(dir = %dir.display(), "serving the docker plugins (network drivers nat, transparent, l2bridge, l2tunnel; IPAM hns)");
    Ok(plugins)
}

/// Removes plugin sockets of hns's names that nothing serves (`hnsd --cleanup`).
pub fn remove_stale(dir: &Path) -> Vec<String> {
    let names = Driver::ALL.iter().map(|(n, _)| *n).chain(std::iter::once(IPAM_NAME));
    let mut done = Vec::new();
    for name in names {
        let path = dir.join(format!("{name}.sock"));
        if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() && std::fs::remove_file(&path).is_ok() {
            done.push(format!("removed stale docker plugin socket {}", path.display()));
        }
    }
    done
}
