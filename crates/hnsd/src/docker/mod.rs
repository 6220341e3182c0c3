//! The Docker plugins: the stock docker CLI drives hns through Docker's remote NetworkDriver
//! protocol (driver names `nat`, `transparent`, `l2bridge`, `l2tunnel`, `hnsoverlay`) and its
//! IpamDriver protocol (driver name `hns`).
//!
//! Map:
//! - [`protocol`]: the JSON shapes Docker sends and reads;
//! - [`options`]: pure translation of Docker's requests into HNS objects (options, IDs,
//!   interfaces, port bindings), unit-tested;
//! - [`network_driver`]: the NetworkDriver calls, each one or a few engine requests;
//! - [`sandbox`]: how an endpoint gets into a container's namespace (Join, Leave) and how hns
//!   then adopts that namespace as a compartment;
//! - [`names`]: which container a sandbox is, for the compartment's name;
//! - [`ipam`]: the `hns` IPAM driver;
//! - [`server`]: one unix socket per driver name in Docker's plugin directory.
//!
//! State: every HNS object made for Docker has an ID derived from its Docker ID (see
//! [`options::hns_id`]), and the few facts that cannot be derived (pending joins, IPAM pools,
//! the cluster overlay network a Docker network adopted) are engine "ext" records in the store,
//! so either daemon can restart at any time.

pub mod ipam;
pub mod names;
pub mod network_driver;
pub mod options;
pub mod protocol;
pub mod sandbox;
pub mod server;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use hns_api::NetworkType;
use hns_kernel::netlink::Netlink;
use tokio::sync::Notify;

use crate::api::Shared;

/// The driver a socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// An HNS network type hns implements.
    Network(NetworkType),
    /// `hnsoverlay`: an HNS overlay network, created by the first host's Docker and adopted by
    /// the others' (see [`network_driver::create_network`]).
    Overlay,
}

impl Driver {
    /// Every network driver hns answers for, with its plugin (socket) name.
    pub const ALL: [(&'static str, Driver); 5] = [
        ("nat", Driver::Network(NetworkType::Nat)),
        ("transparent", Driver::Network(NetworkType::Transparent)),
        ("l2bridge", Driver::Network(NetworkType::L2Bridge)),
        ("l2tunnel", Driver::Network(NetworkType::L2Tunnel)),
        ("hnsoverlay", Driver::Overlay),
    ];
}

/// Name of the IPAM driver (`docker network create --ipam-driver hns`).
pub const IPAM_NAME: &str = "hns";

/// What the plugin handlers share.
pub struct Docker {
    pub app: Shared,
    /// A netlink connection in hnsd's (and Docker's) own namespace.
    pub host: Netlink,
    /// hnsd's own network namespace, where Docker looks for the links it moves.
    pub host_ns: OwnedFd,
    /// Joins whose container namespace hns has not adopted yet, by HNS endpoint ID.
    pub pending: Mutex<BTreeMap<String, sandbox::PendingJoin>>,
    /// Wakes the adoption watcher.
    pub wake: Notify,
    /// The `hns` IPAM's pools. Lock order: the engine first, then this.
    pub ipam: tokio::sync::Mutex<ipam::Pools>,
}

impl Docker {
    pub fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, sandbox::PendingJoin>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running plugins: sockets and the adoption watcher.
pub struct Running {
    plugins: server::Plugins,
    watcher: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Closes the sockets and removes them. Pending joins stay in the store for the next start.
    pub async fn stop(self) {
        self.plugins.stop().await;
        self.watcher.abort();
    }
}

/// Starts the plugins: recovers pending joins, starts the watcher, opens the sockets in `dir`.
pub async fn start(app: Shared, dir: &Path, limits: crate::serve::Limits) -> anyhow::Result<Running> {
    let host = Netlink::current().context("netlink in hnsd's namespace")?;
    let host_ns: OwnedFd = std::fs::File::open("/proc/self/ns/net").context("open hnsd's network namespace")?.into();
    let pools = ipam::Pools::load(&*app.engine.lock().await);
    let d = Arc::new(Docker { app, host, host_ns, pending: Mutex::new(BTreeMap::new()), wake: Notify::new(), ipam: tokio::sync::Mutex::new(pools) });
    sandbox::recover(&d).await;
    network_driver::recover_retired(&d).await;
    let watcher = tokio::spawn(sandbox::watch(d.clone()));
    let plugins = server::start(dir, d, limits)?;
    Ok(Running { plugins, watcher })
}
