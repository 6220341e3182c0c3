//! The engine: the single owner of hnsd's state.
//!
//! Every change is made by `&mut Engine` methods under one lock, in the same order:
//! validate (pure, nothing changes on failure) → commit one store transaction holding the
//! object and its allocations → apply idempotent kernel steps → mark ready. A crash at any
//! point is repaired by [`reconcile`], which makes the kernel match the store. An attach's
//! commit becomes durable while its kernel step runs (the reply waits for both): a crash before
//! that leaves the store as before the request, and the reconciler removes the veth.
//!
//! On the API's paths (`api::requests`) the lock is held only for what must be serial. An
//! attach's kernel step runs with the lock released ([`Engine::attach_begin`], `attach_end`),
//! so does a detach's or a delete's veth step (`detach_begin`, `delete_begin`, `detach_end`),
//! an ACL change's (`acl::KernelAcl`), a network create's and a network delete's (links, the
//! nft table, host routes, the DNS responder: `create_network_begin`,
//! `networks::KernelNetwork`, `network_create_end`; `network_remove_begin`,
//! `networks::KernelNetworkDelete`, `network_delete_end`; the Docker plugin takes the same
//! paths), and so do the steps that wait on another machine: a DHCP exchange
//! ([`dhcp::with_leases`]) and etcd's steps for overlay endpoints (`overlay::create_staged`,
//! `overlay::delete_staged`), an overlay network's create and delete
//! (`overlay::create_network_staged`, `overlay::withdraw_network_staged`) and the sync of this
//! host's records in etcd (`overlay::sync_own`), all reached through [`cluster_hooks`]; a
//! network another host created is built from the watch with its kernel step unlocked too
//! (`overlay::apply_cluster_event`, also for a snapshot's); a compartment's namespace is made
//! and removed without it (`namespaces::NamespaceMake`, `NamespaceRemoval`), and a network
//! create reads the host before taking it (`networks::HostReader`). The store's commits run on
//! its writer thread (`hns_store`), so a commit never waits for another request's disk sync.
//! Still under the lock: a network modify, and the default network at start.
//! Requests for an endpoint,
//! compartment or network whose step is in flight wait for it ([`lock_when_idle`]); the
//! reconciler leaves such objects to it. Writes to the hns nft table, whether under the lock or
//! not, are applied in the order their state was read under the lock ([`nft_order`]).
//!
//! Drivers: the kernel side of each network type is `hns_drivers` (create, delete, attach,
//! detach, nft rules, and the facts the engine asks of a kind or plan). A driver whose
//! networks have cluster-wide state (overlay, [`overlay`]) also gets called by the generic
//! paths at fixed phases (endpoint plan, prepare and finish, withdrawal, network create and
//! delete in the cluster, reconcile) through one hook point, [`cluster_hooks`], dispatched by
//! the network's kind: `api::requests`, `endpoints`, `networks` and `reconcile` never name
//! the driver. docs/internals.md, "Drivers with cluster state", says how one plugs in.
//!
//! The working set lives in memory (loaded from the store at start), so lookups and
//! allocation never scan the store; the store is written through.
//!
//! The API's GETs do not take the lock. The engine lives in an [`EngineLock`], whose guard,
//! when it was borrowed mutably, publishes on release the read model ([`views`]): the API
//! objects as GETs show them, in persistent maps swapped in atomically. Only the objects
//! changed under the guard are recomputed; the maps that hold them note each change
//! (`index::EndpointMap`, `index::Tracked`, `overlay::RemoteMap`). The GETs of networks,
//! endpoints, compartments, port mappings and load balancers read the last published views:
//! they never wait on a writer, never see half of a change, and see a change as soon as its
//! request has answered.

pub mod dhcp;
mod dhcp6;
pub mod acl;
pub(crate) mod cluster_hooks;
mod discovery;
mod epolicies;
mod endpoints;
mod index;
pub mod link_repair;
pub mod info;
pub mod loadbalancers;
mod namespaces;
mod networks;
pub(crate) use networks::build_committed;
mod nft_order;
mod outbound;
pub mod overlay;
pub mod periodic;
mod policies;
mod portmaps;
pub mod reconcile;
pub mod records;
mod step_writes;
pub mod validate;
pub mod views;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;

use hns_api::{ApiError, ErrorCode};
use hns_drivers::{Compartment, EndpointPlan, NetworkPlan};
use hns_ipam::{Mac, Pool};
use hns_kernel::netlink::Netlink;
use hns_kernel::{KernelError, names};
use hns_store::{Kind, Store, StoreError};

use records::{EndpointRecord, NamespaceRecord, NetworkRecord};
pub use endpoints::Step;
pub use namespaces::NamespaceCreate;
pub use views::{EngineGuard, EngineLock, LockTiming, Views};
pub use epolicies::parse_outbound_nat;
pub(crate) use overlay::Republish;

/// Paths and knobs the engine needs from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Host ports for mappings whose host port hns chooses.
    pub port_range: (u16, u16),
    /// Port of the DNS responders (53).
    pub dns_port: u16,
    /// Compartments whose kernel handles stay open ([`open_compartments`]).
    pub open_compartments: usize,
}

impl EngineConfig {
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }
    pub fn resolv_dir(&self) -> PathBuf {
        self.run_dir.join("resolv")
    }
    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("hns.redb")
    }
}

/// A network with its live allocation state.
pub(crate) struct Net {
    pub rec: NetworkRecord,
    pub plan: NetworkPlan,
    pub pools: Vec<Pool>,
    pub macs: HashSet<[u8; 6]>,
    /// Endpoint name -> endpoint ID, for uniqueness and lookup.
    pub endpoint_names: HashMap<String, String>,
}

/// A compartment. Its kernel handles live in [`Engine::handles`].
pub(crate) struct Ns {
    pub rec: NamespaceRecord,
}

/// How many compartments keep their kernel handles (an nsfs fd, the netlink handle's copy of
/// it for its link dumps, and a netlink socket: three descriptors) open under an open-files
/// limit of `nofile`: an eighth of it (so they take at most three eighths of the
/// descriptors), and no more than 64: each open handle costs ~36 KiB
/// (the netlink connection's buffers and task; 1024 of them were 35 MiB of hnsd's RSS at
/// 5 000 endpoints, hns-bench attach-pm). The least recently used are closed beyond it and reopened from the stored path
/// and identity when next needed; holding every handle would make descriptors grow with the
/// number of compartments, and reopening on every use would cost each reconcile pass a
/// netns switch per attached compartment.
pub fn open_compartments(nofile: u64) -> usize {
    (nofile / 8).clamp(16, 64) as usize
}

pub struct Engine {
    pub(crate) cfg: EngineConfig,
    /// Shared with an attach's kernel step, which makes the attach's commit durable meanwhile.
    pub(crate) store: std::sync::Arc<Store>,
    pub(crate) host: Netlink,
    pub(crate) networks: index::Tracked<Net>,
    /// Endpoint records by ID, with indexes by compartment, network and name.
    pub(crate) endpoints: index::EndpointMap,
    pub(crate) namespaces: index::Tracked<Ns>,
    /// Open kernel handles of recently used compartments, by namespace ID.
    pub(crate) handles: lru::LruCache<String, std::sync::Arc<Compartment>>,
    /// Endpoints, compartments and networks whose attach, detach, ACL change, network create
    /// or delete, compartment create or delete, or periodic check is in its kernel step, done
    /// without the lock (`Engine::attach_begin`, `Engine::detach_begin`,
    /// `Engine::create_network_begin`, `Engine::network_remove_begin`,
    /// `Engine::create_namespace_begin`, `Engine::delete_namespace_begin`,
    /// `periodic::check_networks`):
    /// requests for them wait ([`lock_when_idle`]) and the reconciler leaves them alone. `idle`
    /// wakes the waiters when one is done.
    pub(crate) in_flight: HashSet<String>,
    /// Endpoints whose delete is in its veth's step: gone from the store, their mappings and
    /// ACLs already out of the kernel, still in memory (their addresses and names stay taken)
    /// until `detach_end`. A full write of a table made meanwhile leaves them out
    /// ([`Engine::kernel_endpoints`]), or it would put back what their delete took out.
    pub(crate) deleting_endpoints: HashSet<String>,
    pub(crate) idle: std::sync::Arc<tokio::sync::Notify>,
    pub(crate) next_ns_number: u32,
    pub(crate) last_reconcile: String,
    pub(crate) kernel_features: BTreeMap<String, bool>,
    /// hnsd's own and the machine's initial network namespace, found once at start: never
    /// adopted as compartments.
    pub(crate) host_ns: hns_kernel::netns::HostNamespaces,
    /// The host's /etc/resolv.conf, read at start and at every reconcile pass, not on every
    /// attach: compartments without DNS settings inherit it, responders forward to it.
    pub(crate) host_resolv_conf: String,
    /// Retired links to delete in the background.
    reaper: tokio::sync::mpsc::UnboundedSender<String>,
    /// Host ports held by port mappings.
    pub(crate) ports: portmaps::PortIndex,
    /// Port mappings of each endpoint, in the order they were made.
    pub(crate) mappings: index::Tracked<Vec<hns_api::PortMappingSettings>>,
    /// The DHCP client of each attached endpoint on a DHCP network (renews in the background).
    pub(crate) leases: HashMap<String, hns_dhcp::LeaseKeeper>,
    /// Leases obtained for an operation before it took the lock (see `dhcp::with_leases`).
    pub(crate) offers: HashMap<String, dhcp::LeaseOffer>,
    /// Attached endpoints whose lease the reconciler is resuming in the background, and the
    /// channel their results come back on.
    pub(crate) resuming: HashSet<String>,
    pub(crate) resumed: (tokio::sync::mpsc::UnboundedSender<dhcp::LeaseOffer>, tokio::sync::mpsc::UnboundedReceiver<dhcp::LeaseOffer>),
    /// The DHCPv6 client of each such endpoint (in its compartment, in the background).
    pub(crate) leases6: HashMap<String, hns_dhcp::Lease6Keeper>,
    /// Endpoint IDs whose DHCPv6 state changed; [`Engine::take_lease6_events`] gives the
    /// receiving end to the task that applies them.
    pub(crate) lease6_events: tokio::sync::mpsc::UnboundedSender<String>,
    lease6_events_rx: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
    /// Idle nfnetlink sockets for element changes, opened on first use; shared with the
    /// attaches' and detaches' steps run without the lock ([`step_writes`]).
    pub(crate) nft: step_writes::ElementWriters,
    /// The order of the writes to the hns nft table, full applies and element writes alike
    /// (see [`nft_order`]): a network's full apply runs without the lock.
    pub(crate) nft_order: std::sync::Arc<nft_order::NftOrder>,
    /// Networks whose delete is in its kernel step (without the lock): gone from the store and
    /// from `networks`, their ID in `in_flight`. A new network that would take their name,
    /// links, subnets or adapter waits for them (see `Engine::create_waits_for`).
    pub(crate) deleting: HashMap<String, Net>,
    /// The service-discovery responder (one listener set per network with discovery on).
    /// Shared with a network's kernel step, which starts or stops its responder.
    pub(crate) dns: std::sync::Arc<hns_dns::DnsService>,
    /// Networks whose responder could not start, with the reason (shown by `info`).
    pub(crate) dns_errors: BTreeMap<String, String>,
    pub(crate) dns_port: u16,
    /// Overlay networks: this host's VTEP, the cluster handle, the remote endpoints.
    pub(crate) overlay: overlay::OverlayState,
    /// Load balancers (see `loadbalancers`).
    pub(crate) lbs: loadbalancers::Lbs,
    /// What the OutBoundNAT table holds (see `outbound`): empty until written or checked.
    pub(crate) onat: hns_kernel::nft_outbound::Applied,
    /// Where the periodic ACL check's slice of endpoints starts (see `reconcile_acls`).
    pub(crate) acl_check_from: std::sync::atomic::AtomicUsize,
    /// Whether the ACL tables are in the kernel, as hnsd last wrote or checked them, so that a
    /// change plans its write without reading the kernel under the lock; should they have
    /// gone since, the write finds out (see `acl`).
    pub(crate) acl_tables: std::sync::atomic::AtomicBool,
}

/// Runs blocking work (an `nft` process, ~100 ms with 10 000 mappings) so that the async
/// worker it runs on hands its other tasks (DNS, other requests' I/O) to the other workers.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Takes the engine's lock once none of the objects `busy` names (IDs of endpoints,
/// compartments and networks, read under the lock) is in a kernel step run without the lock
/// (see `in_flight`).
#[track_caller]
pub fn lock_when_idle(engine: &EngineLock, busy: impl Fn(&Engine) -> Vec<String>) -> impl std::future::Future<Output = EngineGuard<'_>> {
    let by = std::panic::Location::caller();
    async move {
        loop {
            let guard = engine.lock_by(by).await;
            if guard.in_flight.is_empty() || !busy(&guard).iter().any(|k| guard.in_flight.contains(k)) {
                return guard;
            }
            let idle = guard.idle.clone();
            let notified = idle.notified();
            tokio::pin!(notified);
            // Registered before the lock goes, so the wake-up of the attach that ends next is seen.
            notified.as_mut().enable();
            drop(guard);
            notified.await;
        }
    }
}

/// The gateway of each address family an endpoint has an address of, on a network whose
/// endpoints route out through it.
fn gateways_of(net: &Net, rec: &EndpointRecord) -> Vec<IpAddr> {
    let mut gateways: Vec<IpAddr> = Vec::new();
    if !hns_drivers::routes_out(&net.plan) {
        return gateways;
    }
    for a in rec.addresses() {
        let ip = a.addr();
        if let Some((_, gw)) = net.plan.subnets.iter().find(|(s, _)| s.contains(&ip))
            && !gateways.iter().any(|g| g.is_ipv4() == gw.is_ipv4())
        {
            gateways.push(*gw);
        }
    }
    gateways
}

/// Meta key of the dynamic host-port cursor.
pub(crate) const META_PORT_CURSOR: &str = "port_cursor";

pub type Result<T> = std::result::Result<T, ApiError>;

/// A store failure before any kernel work of the request: nothing changed.
pub(crate) fn store_err(e: StoreError) -> ApiError {
    ApiError::new(ErrorCode::StoreError, format!("could not write the store: {e}; nothing was changed"))
}

/// A store failure after the request changed the kernel: `state` says where things are now.
pub(crate) fn store_err_after(e: StoreError, state: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::StoreError, format!("could not write the store: {e}; {state}"))
}

pub(crate) fn kernel_err(e: KernelError) -> ApiError {
    ApiError::new(ErrorCode::KernelError, format!("kernel refused to {} {}: {}", e.op, e.object, e.reason))
}

/// Test-only crash injection: when `HNSD_FAILPOINT` names this point, the daemon kills itself
/// with SIGKILL right there, so tests can prove that a crash between two steps is repaired.
pub(crate) fn failpoint(name: &str) {
    if failpoint_armed(name) {
        tracing::warn!(failpoint = name, "failpoint reached: killing hnsd");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Whether `HNSD_FAILPOINT` names `name` (for a failpoint that must first wait for a
/// concurrent step, so the crash it simulates is always the same one).
pub(crate) fn failpoint_armed(name: &str) -> bool {
    std::env::var("HNSD_FAILPOINT").is_ok_and(|v| v == name)
}

/// Test-only pause: when `HNSD_FAILPOINT` is `pause:NAME:MS`, a request reaching point `NAME`
/// waits `MS` milliseconds there, holding what it holds (the engine's lock), so tests can prove
/// that reads do not wait for a writer.
pub(crate) async fn pause_point(name: &str) {
    let Ok(v) = std::env::var("HNSD_FAILPOINT") else { return };
    if let Some((point, ms)) = v.strip_prefix("pause:").and_then(|r| r.rsplit_once(':'))
        && point == name
        && let Ok(ms) = ms.parse::<u64>()
    {
        tracing::warn!(failpoint = name, ms, "failpoint reached: pausing under the engine lock");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// [`hns_kernel::netns::HostNamespaces::discover`], logged: when the initial namespace cannot
/// be identified, every adoption will be refused, and the operator should know why at start.
fn host_namespaces() -> anyhow::Result<hns_kernel::netns::HostNamespaces> {
    let h = hns_kernel::netns::HostNamespaces::discover().map_err(|e| anyhow::anyhow!("cannot identify hnsd's own network namespace: {e}"))?;
    if let Some(why) = h.initial_unknown() {
        tracing::warn!(reason = %why, "cannot identify the machine's initial network namespace: adopting existing namespaces (NetNsPath) is refused");
    }
    Ok(h)
}

pub(crate) fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// GUIDs are compared without regard to case or braces.
pub(crate) fn norm_guid(s: &str) -> Option<String> {
    uuid::Uuid::parse_str(s.trim_matches(|c| c == '{' || c == '}')).ok().map(|u| u.to_string())
}

impl Engine {
    /// Opens the store and loads every object. The kernel is not touched: call
    /// [`Engine::reconcile`] next.
    pub fn open(cfg: EngineConfig, host: Netlink) -> anyhow::Result<Engine> {
        let store = std::sync::Arc::new(Store::open(&cfg.store_path(), records::MIGRATIONS)?);
        let reaper = spawn_reaper(own_connection(&host));
        let (lease6_events, lease6_events_rx) = tokio::sync::mpsc::unbounded_channel();
        let port_cursor = store.get::<u16>(Kind::Meta, META_PORT_CURSOR)?.unwrap_or(cfg.port_range.0);
        let ports = portmaps::PortIndex::new(cfg.port_range, port_cursor);
        let mut e = Engine {
            cfg: cfg.clone(),
            store,
            host,
            networks: Default::default(),
            endpoints: index::EndpointMap::default(),
            namespaces: Default::default(),
            in_flight: HashSet::new(),
            deleting_endpoints: HashSet::new(),
            idle: std::sync::Arc::new(tokio::sync::Notify::new()),
            handles: lru::LruCache::new(std::num::NonZeroUsize::new(cfg.open_compartments.max(1)).expect("not zero")),
            next_ns_number: 1,
            last_reconcile: String::new(),
            host_resolv_conf: read_host_resolv_conf(),
            kernel_features: info::probe_kernel(),
            host_ns: host_namespaces()?,
            reaper,
            ports,
            mappings: Default::default(),
            leases: HashMap::new(),
            offers: HashMap::new(),
            resuming: HashSet::new(),
            resumed: tokio::sync::mpsc::unbounded_channel(),
            leases6: HashMap::new(),
            lease6_events,
            lease6_events_rx: Some(lease6_events_rx),
            nft: Default::default(),
            nft_order: Default::default(),
            deleting: HashMap::new(),
            dns: std::sync::Arc::new(hns_dns::DnsService::new(hns_dns::DnsConfig::default())),
            dns_errors: BTreeMap::new(),
            dns_port: cfg.dns_port,
            overlay: overlay::OverlayState::default(),
            lbs: loadbalancers::Lbs::default(),
            onat: Default::default(),
            acl_check_from: Default::default(),
            acl_tables: Default::default(),
        };
        for m in e.store.load_all::<records::MappingRecord>(Kind::PortMapping)? {
            e.mappings.get_or_default(&m.endpoint_id).push(m.settings);
        }
        for rec in e.store.load_all::<NetworkRecord>(Kind::Network)? {
            let net = Net::from_record(rec).map_err(|err| anyhow::anyhow!("stored network is invalid: {err}"))?;
            e.networks.insert(net.rec.net.id.clone(), net);
        }
        for rec in e.store.load_all::<NamespaceRecord>(Kind::Namespace)? {
            // A managed compartment lives under the run dir of the hnsd that made it. One
            // elsewhere means this state dir was copied from (or last served by) an hnsd with
            // another run dir: serving it would reach into that hnsd's compartments.
            if rec.managed && !std::path::Path::new(&rec.ns.net_ns_path).starts_with(cfg.netns_dir()) {
                anyhow::bail!(
                    "the store {} holds compartment {} at {}, outside this hnsd's run dir {}: a state dir belongs to the hnsd (and run dir) that made it; start it with that --run-dir, or give this hnsd a fresh --state-dir",
                    cfg.store_path().display(),
                    rec.ns.id,
                    rec.ns.net_ns_path,
                    cfg.run_dir.display()
                );
            }
            e.next_ns_number = e.next_ns_number.max(rec.ns.namespace_id + 1);
            e.namespaces.insert(rec.ns.id.clone(), Ns { rec });
        }
        for rec in e.store.load_all::<EndpointRecord>(Kind::Endpoint)? {
            if let Some(net) = e.networks.get_mut(&rec.network_id) {
                net.take_endpoint(&rec).map_err(|err| anyhow::anyhow!("stored endpoint {} conflicts: {err}", rec.ep.id))?;
            }
            e.endpoints.insert(rec.ep.id.clone(), rec);
        }
        let held: Vec<(String, Vec<hns_api::PortMappingSettings>)> = e.mappings.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (ep, maps) in held {
            e.take_ports(&ep, &maps);
        }
        e.load_lbs()?;
        Ok(e)
    }

    pub fn store_path(&self) -> PathBuf {
        self.store.path().to_owned()
    }

    /// The store, for its counters (`/metrics`).
    pub fn store(&self) -> std::sync::Arc<Store> {
        self.store.clone()
    }

    pub(crate) fn network_id(&self, key: &str) -> Option<String> {
        if let Some(id) = norm_guid(key)
            && self.networks.contains_key(&id)
        {
            return Some(id);
        }
        self.networks.values().find(|n| n.rec.net.name == key).map(|n| n.rec.net.id.clone())
    }

    /// The endpoints and compartments a request names by `endpoints` and `namespaces` (IDs or
    /// names), with each endpoint's compartment: what it must not touch while in flight.
    pub fn touched(&self, endpoints: &[&str], namespaces: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for ep in endpoints.iter().filter_map(|k| self.endpoint_id(k).ok()) {
            out.push(self.endpoints[&ep].ep.host_compute_namespace.clone());
            out.push(ep);
        }
        out.extend(namespaces.iter().filter_map(|k| self.namespace_id(k)));
        out.retain(|k| !k.is_empty());
        out
    }

    /// The IDs of a network's endpoints (what a change of the whole network touches).
    pub fn endpoints_of_network(&self, net_id: &str) -> Vec<String> {
        self.endpoints.values().filter(|e| e.network_id == net_id).map(|e| e.ep.id.clone()).collect()
    }

    pub(crate) fn endpoint_id(&self, key: &str) -> Result<String> {
        if let Some(id) = norm_guid(key)
            && self.endpoints.contains_key(&id)
        {
            return Ok(id);
        }
        let found: Vec<&str> = self.endpoints.named(key).map(|e| e.ep.id.as_str()).collect();
        views::pick_named(key, &found).map(str::to_owned)
    }

    pub(crate) fn namespace_id(&self, key: &str) -> Option<String> {
        if let Some(id) = norm_guid(key)
            && self.namespaces.contains_key(&id)
        {
            return Some(id);
        }
        self.namespaces.values().find(|n| !n.rec.ns.name.is_empty() && n.rec.ns.name == key).map(|n| n.rec.ns.id.clone())
    }

    /// Opens (or reuses) the kernel handles of a compartment, checking it is still the same
    /// namespace.
    pub(crate) fn compartment_handle(&mut self, ns_id: &str) -> std::result::Result<std::sync::Arc<Compartment>, KernelError> {
        let ns = self.namespaces.get(ns_id).expect("caller checked the namespace exists");
        let path = PathBuf::from(&ns.rec.ns.net_ns_path);
        let current = hns_kernel::netns::identity(&path)?;
        if ns.rec.identity.is_some_and(|id| id != current) {
            self.handles.pop(ns_id);
            return Err(KernelError::new("open compartment", ns.rec.ns.net_ns_path.clone(), "the path now names another network namespace (the process that owned it exited)"));
        }
        if !self.handles.contains(ns_id) {
            let fd = hns_kernel::netns::open(&path)?;
            let netlink = Netlink::in_netns(&fd)?;
            // Beyond the cap this closes the least recently used compartment's handles.
            self.handles.put(ns_id.to_owned(), std::sync::Arc::new(Compartment { fd, netlink, loopback_up: Default::default() }));
        }
        Ok(self.handles.get(ns_id).expect("just put").clone())
    }

    /// [`Engine::compartment_handle`], borrowed.
    pub(crate) fn compartment(&mut self, ns_id: &str) -> std::result::Result<&Compartment, KernelError> {
        self.compartment_handle(ns_id)?;
        Ok(self.handles.get(ns_id).expect("just opened"))
    }

    /// The kernel plan of an attached endpoint.
    pub(crate) fn endpoint_plan(&self, rec: &EndpointRecord) -> Option<EndpointPlan> {
        let net = self.networks.get(&rec.network_id)?;
        let addresses = rec.addresses().iter().map(|a| (a.addr(), a.prefix_len())).collect();
        let gateways = gateways_of(net, rec);
        let routes = rec
            .ep
            .routes
            .iter()
            .filter_map(|r| Some((r.destination_prefix.parse().ok()?, r.next_hop.parse().ok())))
            .chain(self.sdn_routes(rec))
            .collect();
        Some(EndpointPlan {
            id: rec.ep.id.clone(),
            host_if: names::veth_host_name(&rec.ep.id),
            ifname: rec.ep.interface_name.clone(),
            mac: rec.mac()?.0,
            addresses,
            gateways,
            routes,
        })
    }

    /// The address families (IPv4: true) of the default routes an endpoint's compartment must
    /// have: its plan's gateways, without building the rest of the plan (the periodic pass asks
    /// for every endpoint under the lock).
    pub(crate) fn gateway_families(&self, rec: &EndpointRecord) -> Vec<bool> {
        self.networks.get(&rec.network_id).map(|net| gateways_of(net, rec).iter().map(IpAddr::is_ipv4).collect()).unwrap_or_default()
    }

    /// The whole nft table as the store says it should be.
    pub(crate) fn desired_nft(&self) -> hns_kernel::nft::Desired {
        hns_kernel::nft::Desired {
            networks: self
                .networks
                .values()
                .filter_map(|n| {
                    let mut rules = hns_drivers::nft_rules(&n.plan)?;
                    rules.dns_listeners = self.dns_listeners(&n.rec.net.id);
                    Some(rules)
                })
                .collect(),
            mappings: self.kernel_endpoints().flat_map(|r| self.kernel_mappings(r)).collect(),
        }
    }

    /// The endpoints whose kernel objects a full write of a table holds: all but those whose
    /// delete is in flight (see `deleting_endpoints`).
    pub(crate) fn kernel_endpoints(&self) -> impl Iterator<Item = &records::EndpointRecord> {
        self.endpoints.values().filter(|r| !self.deleting_endpoints.contains(&r.ep.id))
    }

    /// Marks host ports as held by an endpoint.
    pub(crate) fn take_ports(&mut self, ep_id: &str, maps: &[hns_api::PortMappingSettings]) {
        for s in maps {
            if let Some(p) = hns_kernel::nft::Proto::from_number(s.protocol) {
                self.ports.take(p, portmaps::vip_of(s), s.external_port, ep_id);
            }
        }
    }

    /// Frees what [`Engine::take_ports`] took.
    pub(crate) fn release_ports(&mut self, ep_id: &str, maps: &[hns_api::PortMappingSettings]) {
        for s in maps {
            if let Some(p) = hns_kernel::nft::Proto::from_number(s.protocol) {
                self.ports.release(p, portmaps::vip_of(s), s.external_port, ep_id);
            }
        }
    }

    /// Queues a retired link for deletion. If hnsd stops first, the reconciler removes it.
    pub(crate) fn reap(&self, link: String) {
        let _ = self.reaper.send(link);
    }

    /// Writes one record in a transaction of its own. `lazy` writes skip the fsync: only for
    /// facts the reconciler re-derives after a crash (the "ready" states).
    /// Writes one record before the request's kernel work (a failure changed nothing).
    pub(crate) fn persist<T: serde::Serialize>(&self, kind: Kind, key: &str, rec: &T, lazy: bool) -> Result<()> {
        self.write(kind, key, rec, lazy).map_err(store_err)
    }

    /// Writes one record after the request's kernel work; `state` says where things are if
    /// that fails.
    pub(crate) fn persist_after<T: serde::Serialize>(&self, kind: Kind, key: &str, rec: &T, lazy: bool, state: &str) -> Result<()> {
        self.write(kind, key, rec, lazy).map_err(|e| store_err_after(e, state))
    }

    fn write<T: serde::Serialize>(&self, kind: Kind, key: &str, rec: &T, lazy: bool) -> std::result::Result<(), StoreError> {
        let mut txn = self.store.begin()?;
        if lazy {
            txn.lazy();
        }
        txn.put(kind, key, rec)?;
        txn.commit()
    }

    pub(crate) fn apply_nft(&self) -> Result<()> {
        let (desired, turn) = self.nft_snapshot();
        blocking(|| apply_in_turn(&desired, turn)).map_err(kernel_err)
    }

    /// The desired nft table and its turn among the table's writes (see [`nft_order`]): the
    /// apply that writes it may run after the lock is released.
    pub(crate) fn nft_snapshot(&self) -> (hns_kernel::nft::Desired, nft_order::NftTurn) {
        (self.desired_nft(), self.nft_order.take())
    }
}

/// Applies a desired nft table once every write to the table before `turn` is done. Blocks:
/// run it on a thread that may ([`blocking`], `spawn_blocking`).
pub(crate) fn apply_in_turn(desired: &hns_kernel::nft::Desired, turn: nft_order::NftTurn) -> std::result::Result<(), KernelError> {
    turn.wait();
    hns_kernel::nft::apply(desired)
}

impl Engine {

    // --- Records of other hnsd modules (the Docker plugin): kept in the store's meta table under
    // `ext/<key>`, so they are as crash-safe as the engine's own objects.

    pub fn ext_get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.store.get(Kind::Meta, &format!("ext/{key}")).map_err(store_err)
    }

    pub fn ext_put<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.persist(Kind::Meta, &format!("ext/{key}"), value, false)
    }

    pub fn ext_delete(&self, key: &str) -> Result<()> {
        let mut txn = self.store.begin().map_err(store_err)?;
        txn.delete(Kind::Meta, &format!("ext/{key}")).map_err(store_err)?;
        txn.commit().map_err(store_err)
    }
    // --- end of records of other modules.
}

pub(crate) fn read_host_resolv_conf() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

/// A netlink connection of its own in hnsd's namespace (where `host` is), for background work
/// with long kernel requests (a batch delete, a dump of every link): on `host`, the replies
/// to the requests' steps would wait behind them. `host` itself if no socket can be opened.
pub(crate) fn own_connection(host: &Netlink) -> Netlink {
    Netlink::current().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not open a netlink connection; background work shares the requests' one");
        host.clone()
    })
}

/// Deletes retired links off the request path (see [`Netlink::retire`]). Requests that
/// arrive together are deleted as one batch: a link delete holds the kernel's rtnl lock for an
/// RCU grace period (~20 ms), and a batch pays it once.
fn spawn_reaper(host: Netlink) -> tokio::sync::mpsc::UnboundedSender<String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Let a burst of detaches accumulate, then delete them together.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            if let Err(e) = host.delete_retired().await {
                tracing::warn!(error = %e, "batch delete of retired links failed; deleting one by one");
                for link in &batch {
                    if let Err(e) = host.delete_link(link).await {
                        tracing::warn!(link, error = %e, "could not delete a retired link; the reconciler will retry");
                    }
                }
            }
        }
    });
    tx
}

/// Four bytes of a GUID, for a stable locally administered MAC.
fn uuid_bytes4(id: &str) -> [u8; 4] {
    let b = uuid::Uuid::parse_str(id).map(|u| *u.as_bytes()).unwrap_or_default();
    [b[0], b[1], b[2], b[3]]
}

impl Net {
    /// Addresses come from the LAN's DHCP server (transparent networks without a subnet).
    pub fn is_dhcp(&self) -> bool {
        self.rec.net.ipams.iter().any(|i| i.kind == hns_api::IpamType::Dhcp)
    }

    /// The uplink hnsd asks the LAN's DHCP server on, for a DHCP network.
    pub fn dhcp_uplink(&self) -> Option<String> {
        self.is_dhcp().then(|| self.plan.uplink.as_ref().map(|u| u.link.clone())).flatten()
    }

    /// Rebuilds the live state of a stored network: its pools (with cursors) and plan.
    pub fn from_record(rec: NetworkRecord) -> std::result::Result<Net, String> {
        let mut pools = Vec::new();
        let mut subnets = Vec::new();
        let mut vlan = None;
        for (i, s) in rec.net.subnets().enumerate() {
            let p = validate::parse_subnet(s, "subnet").map_err(|e| e.message)?;
            vlan = vlan.or(p.vlan);
            let mut pool = Pool::new(&p.spec).map_err(|e| e.to_string())?;
            if let Some(c) = rec.cursors.get(i) {
                pool.set_cursor(*c);
            }
            subnets.push((pool.subnet(), pool.gateway()));
            pools.push(pool);
        }
        let gw = subnets.first().map(|(_, g)| *g).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        // External networks store their adapters, already resolved, in NetAdapterName.
        let uplink = if hns_drivers::is_external(rec.net.network_type()) {
            let p = validate::parse_network_policies(&rec.net.policies, "Policies").map_err(|e| e.message)?;
            let adapters = p.adapters.ok_or("external network without NetAdapterName")?;
            Some(hns_kernel::uplink::plan_uplink(&adapters, vlan, &names::network_tag(&rec.net.id)))
        } else {
            None
        };
        // DHCP networks have no gateway of their own: the host leg's MAC comes from the ID.
        let bridge_mac = if subnets.is_empty() { Mac::from_ip(IpAddr::from(uuid_bytes4(&rec.net.id))).0 } else { Mac::from_ip(gw).0 };
        let overlay = if rec.net.network_type() == hns_api::NetworkType::Overlay { Some(overlay::plan_from_record(&rec.net)?) } else { None };
        let plan = NetworkPlan {
            id: rec.net.id.clone(),
            kind: rec.net.network_type(),
            bridge: names::bridge_name(&rec.net.id),
            bridge_mac,
            subnets,
            internal: rec.net.internal,
            uplink,
            overlay,
            bridge_index: Default::default(),
        };
        Ok(Net { rec, plan, pools, macs: HashSet::new(), endpoint_names: HashMap::new() })
    }

    /// Marks an endpoint's addresses, MAC and name as taken.
    pub fn take_endpoint(&mut self, rec: &EndpointRecord) -> std::result::Result<(), String> {
        for ip in rec.ips() {
            if let Some(pool) = self.pools.iter_mut().find(|p| p.subnet().contains(&ip)) {
                pool.reserve(ip).map_err(|e| e.to_string())?;
            }
        }
        if let Some(mac) = rec.mac() {
            self.macs.insert(mac.0);
        }
        if !rec.ep.name.is_empty() {
            self.endpoint_names.insert(rec.ep.name.clone(), rec.ep.id.clone());
        }
        Ok(())
    }

    /// Frees what [`Net::take_endpoint`] took.
    pub fn release_endpoint(&mut self, rec: &EndpointRecord) {
        for ip in rec.ips() {
            for p in self.pools.iter_mut() {
                p.release(ip);
            }
        }
        if let Some(mac) = rec.mac() {
            self.macs.remove(&mac.0);
        }
        if self.endpoint_names.get(&rec.ep.name) == Some(&rec.ep.id) {
            self.endpoint_names.remove(&rec.ep.name);
        }
    }

    pub fn cursors(&self) -> Vec<u128> {
        self.pools.iter().map(|p| p.cursor()).collect()
    }
}
