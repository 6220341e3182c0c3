//! Namespace ("compartment") requests, and the compartment's resolv.conf.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hns_api::{
    ApiError, ErrorCode, HostComputeNamespace, ModifyRequest, NamespaceContainerRequest, NamespaceEndpointRequest, NamespaceType, RequestType,
    ResourceType, state,
};
use hns_drivers::Compartment;
use hns_kernel::netns::{self, HostNsRefusal};
use hns_store::Kind;

use super::endpoints::Step;
use super::records::{EndpointRecord, NamespaceRecord};
use super::validate;
use super::views::NamespaceView;
use super::step_writes::DiskSync;
use super::{Engine, Ns, Result, kernel_err, new_guid, norm_guid, store_err_after};

impl Engine {
    /// The namespace as clients see it: `Resources` lists its attached endpoints.
    pub(super) fn namespace_view(&self, id: &str) -> NamespaceView {
        NamespaceView { ns: self.namespaces[id].rec.ns.clone(), endpoints: self.endpoints.in_namespace(id).map(|e| e.ep.id.clone()).collect() }
    }

    pub fn list_namespaces(&self) -> Vec<HostComputeNamespace> {
        self.namespaces.keys().map(|id| self.namespace_view(id).wire()).collect()
    }

    pub fn get_namespace(&self, key: &str) -> Result<HostComputeNamespace> {
        let id = self.namespace_id(key).ok_or_else(|| not_found(key))?;
        Ok(self.namespace_view(&id).wire())
    }

    pub async fn create_namespace(&mut self, req: HostComputeNamespace) -> Result<HostComputeNamespace> {
        match self.create_namespace_begin(req).await? {
            NamespaceCreate::Done(ns) => Ok(ns),
            NamespaceCreate::Make(mut m) => {
                let done = m.run().await;
                self.create_namespace_end(m, done).await
            }
        }
    }

    /// [`Engine::create_namespace`] up to the kernel step of a managed compartment created
    /// without endpoints (a runtime's, a CNI ADD's): that step (the namespace made and mounted,
    /// its loopback up; milliseconds, more with thousands of namespaces on the host) is the
    /// caller's to run without the lock ([`NamespaceMake::run`]), the namespace marked in flight
    /// meanwhile, then [`Engine::create_namespace_end`].
    pub async fn create_namespace_begin(&mut self, mut req: HostComputeNamespace) -> Result<NamespaceCreate> {
        validate::check_name(&req.name, "Name", false)?;
        if !req.name.is_empty() && self.namespace_id(&req.name).is_some() {
            return Err(ApiError::field(ErrorCode::NamespaceAlreadyExists, "Name", format!("a namespace named {:?} already exists", req.name)));
        }
        if req.id.is_empty() {
            req.id = new_guid();
        } else {
            req.id = norm_guid(&req.id).ok_or_else(|| ApiError::field(ErrorCode::InvalidNamespace, "ID", format!("ID {:?} is not a GUID", req.id)))?;
            if self.namespaces.contains_key(&req.id) {
                return Err(ApiError::field(ErrorCode::NamespaceAlreadyExists, "ID", format!("a namespace with ID {} already exists", req.id)));
            }
            if self.in_flight.contains(&req.id) {
                return Err(ApiError::field(ErrorCode::Unavailable, "ID", format!("namespace {} is being deleted; try again when its delete is done", req.id)));
            }
        }
        if matches!(req.kind, Some(NamespaceType::Guest) | Some(NamespaceType::GuestDefault)) {
            return Err(ApiError::field(ErrorCode::RequestUnsupported, "Type", "Guest namespaces (utility VMs) do not exist on Linux; use Host"));
        }
        // Endpoints listed in Resources are attached once the namespace exists; check them first.
        let mut to_attach = Vec::new();
        for (i, r) in req.resources.iter().enumerate() {
            if !r.kind.eq_ignore_ascii_case("Endpoint") {
                return Err(ApiError::field(ErrorCode::RequestUnsupported, format!("Resources[{i}].Type"), format!("resource type {:?} is not supported; use Endpoint", r.kind)));
            }
        }
        for (i, key) in req.endpoint_ids().iter().enumerate() {
            let id = self.endpoint_id(key).map_err(|e| ApiError { field: Some(format!("Resources[{i}].Data.ID")), ..e })?;
            if !self.endpoints[&id].ep.host_compute_namespace.is_empty() {
                return Err(ApiError::field(ErrorCode::EndpointAlreadyAttached, format!("Resources[{i}].Data.ID"), format!("endpoint {id} is already attached")));
            }
            to_attach.push(id);
        }
        if req.namespace_id != 0 {
            return Err(ApiError::field(
                ErrorCode::InvalidNamespace,
                "NamespaceId",
                format!("NamespaceId {} cannot be chosen: hns numbers compartments itself (read-only, like Windows' compartment id); omit it", req.namespace_id),
            ));
        }
        if req.pid != 0 || !req.command.is_empty() {
            return Err(ApiError::field(ErrorCode::InvalidNamespace, "Pid", "Pid and Command are recorded with a Container modify request after the process starts"));
        }
        let managed = req.net_ns_path.is_empty();
        let identity = if managed {
            req.net_ns_path = self.cfg.netns_dir().join(&req.id).display().to_string();
            None
        } else {
            let path = Path::new(&req.net_ns_path);
            if !path.is_absolute() {
                return Err(ApiError::field(ErrorCode::InvalidNamespace, "NetNsPath", format!("NetNsPath {:?} must be an absolute path such as /run/netns/x or /proc/PID/ns/net", req.net_ns_path)));
            }
            let id = netns::identity(path).map_err(|e| {
                ApiError::field(ErrorCode::InvalidNamespace, "NetNsPath", format!("NetNsPath {:?} cannot be used as a network namespace: {}", req.net_ns_path, e.reason))
            })?;
            self.refuse_host_namespace(&req.net_ns_path, id)?;
            if let Some(other) = self.namespaces.values().find(|n| n.rec.identity == Some(id)) {
                return Err(ApiError::field(
                    ErrorCode::NamespaceAlreadyExists,
                    "NetNsPath",
                    format!("that network namespace is already known as namespace {} ({})", other.rec.ns.id, other.rec.ns.name),
                ));
            }
            Some(id)
        };
        req.kind = Some(req.kind.unwrap_or(NamespaceType::Host));
        req.namespace_id = self.next_ns_number;
        req.resources.clear();
        req.schema_version = hns_api::SCHEMA_VERSION;
        req.resolv_conf_path = self.resolv_path(&req.id).display().to_string();
        req.state = if managed { state::CREATED } else { state::READY };
        let rec = NamespaceRecord { ns: req.into(), managed, identity };
        // Its kernel step unlocked: the commit is made durable beside it (`NamespaceMake::run`).
        let unlocked = managed && to_attach.is_empty();
        self.persist_namespace(&rec, unlocked)?;
        super::failpoint("namespace-after-commit");
        self.next_ns_number += 1;
        let id = rec.ns.id.clone();
        self.namespaces.insert(id.clone(), Ns { rec: rec.clone() });
        if unlocked {
            self.in_flight.insert(id.clone());
            let disk = Some(DiskSync::start(&self.store));
            return Ok(NamespaceCreate::Make(NamespaceMake { id, path: PathBuf::from(&rec.ns.net_ns_path), disk }));
        }
        if managed {
            let made = make_namespace(PathBuf::from(&rec.ns.net_ns_path)).await;
            self.namespace_made(&id, made)?;
        }
        self.write_resolv_conf(&id);
        let before: Vec<EndpointRecord> = to_attach.iter().map(|ep| self.endpoints[ep].clone()).collect();
        for (i, ep) in to_attach.iter().enumerate() {
            if let Err(e) = self.attach(ep, &id).await {
                return Err(self.undo_create_namespace(&id, &before[..i], i, e).await);
            }
        }
        Ok(NamespaceCreate::Done(self.namespace_view(&id).wire()))
    }

    /// The last step of a namespace create whose kernel step ran without the lock: the
    /// namespace recorded ready with its identity, its handle kept; or, the step failed, the
    /// namespace gone again.
    pub async fn create_namespace_end(&mut self, m: NamespaceMake, done: Result<(netns::NsIdentity, Arc<Compartment>)>) -> Result<HostComputeNamespace> {
        super::failpoint("namespace-after-kernel");
        self.in_flight.remove(&m.id);
        self.idle.notify_waiters();
        self.namespace_made(&m.id, done)?;
        self.write_resolv_conf(&m.id);
        Ok(self.namespace_view(&m.id).wire())
    }

    /// A new managed compartment's kernel step done ([`make_namespace`]): recorded ready with
    /// its identity, its handle kept; or, the step failed, the compartment gone again (its
    /// mount, its record).
    fn namespace_made(&mut self, id: &str, made: Result<(netns::NsIdentity, Arc<Compartment>)>) -> Result<()> {
        let (identity, handle) = match made {
            Ok(made) => made,
            Err(e) => {
                let ns = self.namespaces.remove(id).expect("recorded");
                let _ = netns::remove(Path::new(&ns.rec.ns.net_ns_path));
                if let Ok(mut t) = self.store.begin() {
                    let _ = t.delete(Kind::Namespace, id);
                    let _ = t.commit();
                }
                return Err(e);
            }
        };
        self.handles.put(id.to_owned(), handle);
        let mut rec = self.namespaces[id].rec.clone();
        rec.ns_mut().state = state::READY;
        rec.identity = Some(identity);
        let state = format!("namespace {id} exists at {} and is recorded, but its record still says it is being created", rec.ns.net_ns_path);
        self.persist_after(Kind::Namespace, id, &rec, true, &state)?;
        self.namespaces.get_mut(id).expect("recorded").rec = rec;
        Ok(())
    }

    /// A namespace create is all or nothing: when attaching `Resources[failed]` fails, the
    /// endpoints attached before it (`attached`, as they were before) are detached and their
    /// records restored, and the namespace goes. Returns the attach error, saying what state
    /// things are in.
    async fn undo_create_namespace(&mut self, id: &str, attached: &[EndpointRecord], failed: usize, e: ApiError) -> ApiError {
        let field = Some(format!("Resources[{failed}].Data.ID"));
        let mut undone = self.delete_namespace(id).await;
        for rec in attached {
            if undone.is_ok() {
                undone = self.persist_endpoint(rec, false);
            }
            if undone.is_ok() {
                self.endpoints.insert(rec.ep.id.clone(), rec.clone());
            }
        }
        match undone {
            Ok(()) => ApiError { message: format!("{}; the namespace was not created (endpoints attached by this request were detached again)", e.message), field, ..e },
            Err(undo) => ApiError {
                message: format!("{}; undoing the namespace create failed too ({}): namespace {id} or attachments of its endpoints may remain, see `hnsctl namespace ls`", e.message, undo.message),
                field,
                ..e
            },
        }
    }

    /// The host's own namespaces (hnsd's, and the machine's initial one) are never compartments;
    /// nor is any namespace when the initial one could not be identified (fail closed).
    fn refuse_host_namespace(&self, path: &str, id: netns::NsIdentity) -> Result<()> {
        let why = match self.host_ns.check(id) {
            Ok(()) => return Ok(()),
            Err(HostNsRefusal::Own) => "is hnsd's own network namespace".to_owned(),
            Err(HostNsRefusal::Initial) => "is the machine's initial (root) network namespace".to_owned(),
            Err(HostNsRefusal::Unknown(reason)) => format!(
                "cannot be told apart from the machine's initial (root) network namespace, because hnsd could not identify that one at start ({reason}); no existing namespace can be adopted until hnsd runs where it can read /proc/1/ns/net or see kthreadd (PID 2)"
            ),
        };
        Err(ApiError::field(
            ErrorCode::InvalidNamespace,
            "NetNsPath",
            format!("NetNsPath {path:?} {why}; attaching endpoints to a host namespace would rewire the host itself. To run in the host namespace use `hnsctl run --net host`"),
        ))
    }

    /// Creates the kernel namespace of a managed compartment, loopback up.
    pub(crate) async fn apply_namespace(&mut self, id: &str) -> Result<()> {
        let (identity, handle) = make_namespace(PathBuf::from(&self.namespaces[id].rec.ns.net_ns_path)).await?;
        self.namespaces.get_mut(id).expect("exists").rec.identity = Some(identity);
        self.handles.put(id.to_owned(), handle);
        Ok(())
    }

    pub async fn delete_namespace(&mut self, key: &str) -> Result<()> {
        let mut removal = self.delete_namespace_begin(key).await?;
        let done = super::blocking(|| removal.run());
        self.delete_namespace_end(&removal.id, done)
    }

    /// [`Engine::delete_namespace`] up to its kernel step (the namespace's mount and its
    /// resolv.conf removed), the caller's to run without the lock ([`NamespaceRemoval::run`]),
    /// the ID marked in flight meanwhile, then [`Engine::delete_namespace_end`].
    pub async fn delete_namespace_begin(&mut self, key: &str) -> Result<NamespaceRemoval> {
        let id = self.namespace_id(key).ok_or_else(|| not_found(key))?;
        let attached: Vec<String> = self.endpoints.in_namespace(&id).map(|e| e.ep.id.clone()).collect();
        let mut errors = Vec::new();
        for ep in attached {
            if let Err(e) = self.detach(&ep).await {
                errors.push(e.message);
            }
        }
        // Made durable by the removal's step, without the lock (`NamespaceRemoval::run`).
        let deleted = (|| {
            let mut txn = self.store.begin()?;
            txn.lazy();
            txn.delete(Kind::Namespace, &id)?;
            txn.commit()
        })();
        super::failpoint("namespace-delete-after-commit");
        if let Err(e) = deleted {
            let state = if errors.is_empty() { format!("its endpoints were detached, but namespace {id} is still recorded and still exists") } else { format!("detaching its endpoints failed in part ({}); namespace {id} is still recorded and still exists", errors.join("; ")) };
            return Err(store_err_after(e, state));
        }
        let ns = self.namespaces.remove(&id).expect("looked up");
        self.handles.pop(&id);
        self.in_flight.insert(id.clone());
        let mount = ns.rec.managed.then(|| PathBuf::from(&ns.rec.ns.net_ns_path));
        let resolv_dir = self.resolv_path(&id).parent().expect("has a parent").to_owned();
        let disk = Some(DiskSync::start(&self.store));
        Ok(NamespaceRemoval { id, mount, resolv_dir, errors, disk })
    }

    /// The last step of a namespace delete: its ID free again; what failed on the way, if anything.
    pub fn delete_namespace_end(&mut self, id: &str, done: Vec<String>) -> Result<()> {
        self.in_flight.remove(id);
        self.idle.notify_waiters();
        if done.is_empty() { Ok(()) } else { Err(ApiError::new(ErrorCode::KernelError, done.join("; "))) }
    }

    pub async fn modify_namespace(&mut self, key: &str, req: ModifyRequest) -> Result<HostComputeNamespace> {
        match self.modify_namespace_begin(key, req).await? {
            Step::Done(ns) => Ok(ns),
            Step::Attach(k) => {
                let mut k = *k;
                let done = k.run().await;
                let ns_id = k.ns_id.clone();
                self.attach_end(k, done).await?;
                Ok(self.namespace_view(&ns_id).wire())
            }
            Step::Detach(k) => {
                let mut k = *k;
                let done = k.run().await;
                let ns_id = k.ns_id.clone();
                self.detach_end(k, done).await?;
                Ok(self.namespace_view(&ns_id).wire())
            }
        }
    }

    /// [`Engine::modify_namespace`] up to an attach's kernel step, which the caller runs (see
    /// [`Engine::attach_begin`]).
    pub async fn modify_namespace_begin(&mut self, key: &str, req: ModifyRequest) -> Result<Step<HostComputeNamespace>> {
        let id = self.namespace_id(key).ok_or_else(|| not_found(key))?;
        match (req.resource_type, req.request_type) {
            (ResourceType::Endpoint, RequestType::Add | RequestType::Remove) => {
                let s: NamespaceEndpointRequest = hns_api::decode::from_value(req.settings, "Settings")?;
                let ep = self.endpoint_id(&s.endpoint_id).map_err(|e| ApiError { field: Some("Settings.EndpointId".into()), ..e })?;
                if req.request_type == RequestType::Add {
                    if let Some(k) = self.attach_begin(&ep, &id).await? {
                        return Ok(Step::Attach(Box::new(k)));
                    }
                } else {
                    if self.endpoints[&ep].ep.host_compute_namespace != id {
                        return Err(ApiError::field(ErrorCode::EndpointNotAttached, "Settings.EndpointId", format!("endpoint {ep} is not attached to namespace {id}")));
                    }
                    if let Some(k) = self.detach_begin(&ep).await? {
                        return Ok(Step::Detach(Box::new(k)));
                    }
                }
            }
            (ResourceType::Container, RequestType::Add | RequestType::Remove) => {
                let s: NamespaceContainerRequest = hns_api::decode::from_value(req.settings, "Settings")?;
                let mut rec = self.namespaces[&id].rec.clone();
                if req.request_type == RequestType::Add {
                    if s.pid == 0 {
                        return Err(ApiError::field(ErrorCode::InvalidNamespace, "Settings.Pid", "Pid is required"));
                    }
                    let ns = rec.ns_mut();
                    ns.pid = s.pid;
                    ns.command = s.command;
                } else {
                    let ns = rec.ns_mut();
                    ns.pid = 0;
                    ns.command.clear();
                }
                self.persist_namespace(&rec, false)?;
                self.namespaces.get_mut(&id).expect("exists").rec = rec;
            }
            (rt, qt) => {
                return Err(ApiError::field(
                    ErrorCode::RequestUnsupported,
                    "ResourceType",
                    format!("{qt} of {rt} on a namespace is not supported; use Endpoint Add/Remove or Container Add/Remove"),
                ));
            }
        }
        Ok(Step::Done(self.namespace_view(&id).wire()))
    }

    pub(crate) fn persist_namespace(&self, rec: &NamespaceRecord, lazy: bool) -> Result<()> {
        self.persist(Kind::Namespace, &rec.ns.id, rec, lazy)
    }

    pub(crate) fn resolv_path(&self, ns_id: &str) -> PathBuf {
        self.cfg.resolv_dir().join(ns_id).join("resolv.conf")
    }

    /// Writes the compartment's resolv.conf ([`Engine::resolv_file`]).
    pub(crate) fn write_resolv_conf(&self, ns_id: &str) {
        if let Some(f) = self.resolv_file(ns_id) {
            f.write();
        }
    }

    /// The compartment's resolv.conf, from the DNS settings of its endpoints (endpoint settings
    /// first, then their network's), else the host's non-loopback servers. `None`: no such
    /// compartment.
    pub(crate) fn resolv_file(&self, ns_id: &str) -> Option<super::step_writes::ResolvFile> {
        if !self.namespaces.contains_key(ns_id) {
            return None;
        }
        let mut servers: Vec<String> = Vec::new();
        let mut search: Vec<String> = Vec::new();
        let mut options: Vec<String> = Vec::new();
        for e in self.endpoints.in_namespace(ns_id) {
            let net_dns = self.networks.get(&e.network_id).and_then(|n| n.rec.net.dns.clone());
            // On a network with service discovery the compartment asks the network's
            // responder, which forwards to the configured servers.
            let responder: Vec<String> = self.dns_listeners(&e.network_id).iter().map(|ip| ip.to_string()).collect();
            let discovery = !responder.is_empty();
            extend_unique(&mut servers, responder.iter());
            for d in [e.ep.dns.clone(), net_dns].into_iter().flatten() {
                if !discovery {
                    extend_unique(&mut servers, d.server_list.iter());
                }
                extend_unique(&mut search, std::iter::once(&d.domain).filter(|s| !s.is_empty()).chain(d.search.iter()));
                extend_unique(&mut options, d.options.iter());
            }
        }
        let content = render_resolv_conf(&servers, &search, &options, &self.host_resolv_conf);
        Some(super::step_writes::ResolvFile { path: self.resolv_path(ns_id), content })
    }
}

fn extend_unique<'a>(into: &mut Vec<String>, items: impl Iterator<Item = &'a String>) {
    for i in items {
        if !into.contains(i) {
            into.push(i.clone());
        }
    }
}

/// A resolv.conf for a compartment. Without settings of its own it inherits the host's
/// servers, minus loopback ones (a stub resolver on the host's 127.0.0.53 is unreachable from
/// inside a compartment).
pub(crate) fn render_resolv_conf(servers: &[String], search: &[String], options: &[String], host: &str) -> String {
    let mut servers = servers.to_vec();
    let mut search = search.to_vec();
    let mut options = options.to_vec();
    if servers.is_empty() {
        for line in host.lines() {
            let mut w = line.split_whitespace();
            match (w.next(), w.next()) {
                (Some("nameserver"), Some(ip)) if !ip.starts_with("127.") && ip != "::1" => servers.push(ip.to_owned()),
                (Some("search"), Some(_)) if search.is_empty() => search = line.split_whitespace().skip(1).map(str::to_owned).collect(),
                (Some("options"), Some(_)) if options.is_empty() => options = line.split_whitespace().skip(1).map(str::to_owned).collect(),
                _ => {}
            }
        }
    }
    let mut out = String::from("# Written by hnsd for this compartment.\n");
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

pub(crate) fn not_found(key: &str) -> ApiError {
    ApiError::new(ErrorCode::NamespaceNotFound, format!("no namespace with ID or name {key:?}; list them with `hnsctl namespace ls`"))
}

#[cfg(test)]
mod tests {
    use super::render_resolv_conf;

    #[test]
    fn own_settings_win_and_loopback_servers_are_dropped() {
        let host = "nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch corp.example\n";
        let r = render_resolv_conf(&[], &[], &[], host);
        assert!(r.contains("nameserver 192.0.2.53") && !r.contains("127.0.0.53") && r.contains("search corp.example"), "{r}");
        let r = render_resolv_conf(&["198.51.100.53".into()], &["lab.example".into()], &[], host);
        assert!(r.contains("nameserver 198.51.100.53") && !r.contains("192.0.2.53") && r.contains("search lab.example"), "{r}");
    }
}

/// What a namespace create leaves to do: nothing (the reply), or a managed compartment's
/// kernel step.
pub enum NamespaceCreate {
    Done(HostComputeNamespace),
    Make(NamespaceMake),
}

/// A managed compartment's kernel namespace, to make without the engine's lock.
pub struct NamespaceMake {
    pub(crate) id: String,
    path: PathBuf,
    /// The create's lazy commit, synced beside the kernel step.
    disk: Option<DiskSync>,
}

impl NamespaceMake {
    /// [`make_namespace`], the create's commit made durable beside it.
    pub async fn run(&mut self) -> Result<(netns::NsIdentity, Arc<Compartment>)> {
        // Holds no lock (tests of requests that must not wait for it).
        super::pause_point("namespace-kernel").await;
        let made = make_namespace(self.path.clone()).await?;
        let disk = self.disk.take().expect("a compartment's kernel step runs once");
        tokio::task::spawn_blocking(move || disk.wait()).await.map_err(|e| ApiError::internal(format!("the store's sync failed: {e}")))?.map_err(super::store_err)?;
        Ok(made)
    }
}

/// A managed compartment's kernel namespace made and mounted at `path` (or found there, made by
/// a run that died before recording it), its loopback up, and a handle open in it.
async fn make_namespace(path: PathBuf) -> Result<(netns::NsIdentity, Arc<Compartment>)> {
    let made = tokio::task::spawn_blocking(move || -> std::result::Result<_, hns_kernel::KernelError> {
        let identity = match netns::identity(&path) {
            Ok(i) => i,
            Err(_) => netns::create(&path)?,
        };
        Ok((identity, netns::open(&path)?))
    });
    let (identity, fd) = made.await.map_err(|e| ApiError::internal(format!("the namespace's kernel step failed: {e}")))?.map_err(kernel_err)?;
    let netlink = hns_kernel::netlink::Netlink::in_netns(&fd).map_err(kernel_err)?;
    netlink.set_up("lo").await.map_err(kernel_err)?;
    Ok((identity, Arc::new(Compartment { fd, netlink, loopback_up: true.into() })))
}

/// A deleted namespace's files, to remove without the engine's lock.
pub struct NamespaceRemoval {
    pub(crate) id: String,
    /// Its mount, when hns made the namespace (an adopted one is its owner's).
    mount: Option<PathBuf>,
    resolv_dir: PathBuf,
    /// What failed before (detaching its endpoints).
    errors: Vec<String>,
    /// The delete's lazy commit, synced beside the step.
    disk: Option<DiskSync>,
}

impl NamespaceRemoval {
    /// Removes the files (blocking: an unmount). Returns every failure, this step's and the
    /// earlier ones.
    pub fn run(&mut self) -> Vec<String> {
        let mut errors = self.errors.clone();
        if let Some(path) = &self.mount
            && let Err(e) = netns::remove(path)
        {
            errors.push(e.to_string());
        }
        let _ = std::fs::remove_dir_all(&self.resolv_dir);
        if let Some(Err(e)) = self.disk.take().map(DiskSync::wait) {
            errors.push(format!("the namespace's delete may not be saved: the store's sync failed: {e}"));
        }
        errors
    }
}
