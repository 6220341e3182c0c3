//! Events: what hnsd did, streamed at `GET /events` as newline-delimited JSON (one
//! [`hns_api::Event`] per line, `Content-Type: application/x-ndjson`), like `docker events`.
//!
//! One [`Bus`] per daemon: a `tokio::sync::broadcast` channel plus the last [`HISTORY`]
//! events (for `since`). Publishing never waits: a subscriber that does not keep up loses the
//! oldest events it has not read, and its stream then says how many (`Type: events`,
//! `Action: missed`, `Attributes.count`).
//!
//! Where events come from, each in one place so the engine stays as it is:
//! - API changes: [`record`], a layer on the API router, sees each POST and DELETE, what the
//!   request asked and how it ended (the object from the reply, or the error), and publishes
//!   after the engine answered, in the order the API answered;
//! - reconcile findings: [`Bus::reconciled`], from the report of each pass (main.rs);
//! - DHCP leases: [`Bus::track_leases`] follows each lease keeper's published state;
//! - overlay nodes joining and lost: the cluster watch (cluster.rs).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hns_api::{ApiError, ErrorCode, Event, HostComputeEndpoint, HostComputeLoadBalancer, HostComputeNamespace, HostComputeNetwork, ModifyRequest, PortMappingSettings};
use tokio::sync::{broadcast, watch};

use crate::api::{Failure, Shared};
use crate::engine::Engine;
use crate::engine::reconcile::Report;

/// Events a subscriber may fall behind by before it misses some.
pub const BUFFER: usize = 1024;
/// Events kept for `since`.
pub const HISTORY: usize = 1024;
/// The content type of the stream.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// One published event, stamped and encoded once for every subscriber.
struct Stamped {
    at: SystemTime,
    event: Event,
    line: Bytes,
}

pub struct Bus {
    tx: broadcast::Sender<Arc<Stamped>>,
    history: Mutex<VecDeque<Arc<Stamped>>>,
    /// Set at shutdown: every stream ends, so no subscriber holds the daemon's exit.
    closed: watch::Sender<bool>,
    /// Lease keepers followed by [`Bus::track_leases`], by endpoint ID.
    leases: Mutex<HashMap<String, watch::Receiver<hns_dhcp::LeaseState>>>,
    leases6: Mutex<HashMap<String, watch::Receiver<hns_dhcp::Lease6State>>>,
    /// Events published, by type, action and outcome: `hns_events_total` (DHCP renewals, node
    /// losses, refusals ... without a subscriber).
    counts: Mutex<std::collections::BTreeMap<(String, String, String), u64>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bus")
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bus {
    pub fn new() -> Arc<Bus> {
        let (tx, _) = broadcast::channel(BUFFER);
        Arc::new(Bus { tx, history: Mutex::new(VecDeque::new()), closed: watch::Sender::new(false), leases: Mutex::default(), leases6: Mutex::default(), counts: Mutex::default() })
    }

    /// Stamps and sends an event. Never waits for subscribers.
    pub fn publish(&self, mut event: Event) {
        let at = SystemTime::now();
        event.time = rfc3339(at);
        *lock(&self.counts).entry((event.kind.clone(), event.action.clone(), event.outcome.clone())).or_default() += 1;
        let mut line = serde_json::to_vec(&event).expect("events serialize");
        line.push(b'\n');
        let stamped = Arc::new(Stamped { at, event, line: Bytes::from(line) });
        // Under the history lock, so a new subscriber sees each event exactly once: in its
        // backlog or from the channel.
        let mut h = lock(&self.history);
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(stamped.clone());
        let _ = self.tx.send(stamped);
    }

    /// How many events of each (type, action, outcome) were published since start.
    pub fn counts(&self) -> Vec<((String, String, String), u64)> {
        lock(&self.counts).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Ends every stream (at shutdown).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// The kept events since `since`, and a receiver of every later one.
    fn subscribe(&self, since: Option<SystemTime>) -> (VecDeque<Arc<Stamped>>, broadcast::Receiver<Arc<Stamped>>) {
        let h = lock(&self.history);
        let rx = self.tx.subscribe();
        let backlog = match since {
            Some(t) => h.iter().filter(|s| s.at >= t).cloned().collect(),
            None => VecDeque::new(),
        };
        (backlog, rx)
    }

    /// One event per finding of a reconcile pass.
    pub fn reconciled(&self, r: &Report) {
        for (action, items) in [("repair", &r.repaired), ("remove-orphan", &r.removed), ("collect", &r.collected)] {
            for x in items {
                self.publish(Event::ok("reconcile", action).object(guid_in(x), "").attr("detail", x.as_str()));
            }
        }
        for x in &r.errors {
            self.publish(Event::failed("reconcile", "error", x.as_str()).object(guid_in(x), ""));
        }
    }

    /// Follows the lease keepers of the engine not followed yet: each publishes `obtained`
    /// when first seen bound (at attach, or resumed after a restart), then `renewed`,
    /// `obtained` (a new address), `lost` as its state changes, and `released` when it stops
    /// (detach, delete). Called after changes that may start keepers.
    pub fn track_leases(self: &Arc<Self>, e: &Engine) {
        if e.leases.is_empty() && e.leases6.is_empty() && lock(&self.leases).is_empty() && lock(&self.leases6).is_empty() {
            return;
        }
        {
            let mut followed = lock(&self.leases);
            followed.retain(|id, rx| e.leases.get(id).is_some_and(|k| k.subscribe().same_channel(rx)));
            for (id, keeper) in &e.leases {
                if followed.contains_key(id) {
                    continue;
                }
                let rx = keeper.subscribe();
                followed.insert(id.clone(), rx.clone());
                spawn_lease_watch(self.clone(), lease_event_base(e, id), rx, |s| match s {
                    hns_dhcp::LeaseState::Bound { lease } => Some(Ok((lease.address.to_string(), lease.obtained_at))),
                    hns_dhcp::LeaseState::Lost { previous, reason } => Some(Err((previous.address.to_string(), reason.clone()))),
                });
            }
        }
        let mut followed = lock(&self.leases6);
        followed.retain(|id, rx| e.leases6.get(id).is_some_and(|k| k.subscribe().same_channel(rx)));
        for (id, keeper) in &e.leases6 {
            if followed.contains_key(id) {
                continue;
            }
            let rx = keeper.subscribe();
            followed.insert(id.clone(), rx.clone());
            spawn_lease_watch(self.clone(), lease_event_base(e, id).attr("family", "ipv6"), rx, |s| match s {
                hns_dhcp::Lease6State::Soliciting => None,
                hns_dhcp::Lease6State::Bound { lease } => Some(Ok((lease.address.to_string(), lease.obtained_at))),
                hns_dhcp::Lease6State::Lost { previous, reason } => Some(Err((previous.address.to_string(), reason.clone()))),
            });
        }
    }
}

/// The endpoint fields of a DHCP event.
fn lease_event_base(e: &Engine, ep_id: &str) -> Event {
    let base = Event::ok("dhcp", "");
    match e.endpoints.get(ep_id) {
        Some(r) => {
            let net = e.networks.get(&r.network_id).map(|n| n.rec.net.name.clone()).unwrap_or_default();
            base.object(ep_id, r.ep.name.clone()).on_network(r.network_id.clone(), net)
        }
        None => base.object(ep_id, ""),
    }
}

/// What a lease state says: `Ok((address, obtained_at))` when bound, `Err((address, reason))`
/// when lost, `None` while there is none yet.
type LeaseView = Option<Result<(String, SystemTime), (String, String)>>;

fn spawn_lease_watch<S: Clone + Send + Sync + 'static>(bus: Arc<Bus>, base: Event, mut rx: watch::Receiver<S>, view: fn(&S) -> LeaseView) {
    tokio::spawn(async move {
        let mut last: Option<(String, SystemTime)> = None;
        loop {
            let now = view(&rx.borrow_and_update().clone());
            match now {
                Some(Ok((address, at))) => {
                    let action = match &last {
                        Some((a, t)) if *a == address && *t == at => None,
                        Some((a, _)) if *a == address => Some("renewed"),
                        _ => Some("obtained"),
                    };
                    if let Some(action) = action {
                        bus.publish(Event { action: action.into(), ..base.clone() }.attr("address", address.as_str()));
                    }
                    last = Some((address, at));
                }
                Some(Err((address, reason))) => {
                    if last.is_some() {
                        bus.publish(Event { action: "lost".into(), outcome: "error".into(), error: reason, ..base.clone() }.attr("address", address));
                    }
                    last = None;
                }
                None => {}
            }
            if rx.changed().await.is_err() {
                // The keeper stopped: detach or delete released the lease.
                if let Some((address, _)) = last {
                    bus.publish(Event { action: "released".into(), ..base.clone() }.attr("address", address));
                }
                return;
            }
        }
    });
}

/// The first GUID in a text (reconcile findings name their object by ID).
fn guid_in(text: &str) -> String {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .find(|w| w.len() == 36 && uuid::Uuid::parse_str(w).is_ok())
        .unwrap_or_default()
        .to_owned()
}

// --- GET /events

/// Which events a subscriber wants: each key given must match (several values of one key:
/// any of them).
#[derive(Debug, Default, Clone)]
pub struct Filter {
    types: Vec<String>,
    actions: Vec<String>,
    networks: Vec<String>,
    objects: Vec<String>,
    outcomes: Vec<String>,
}

impl Filter {
    fn matches(&self, e: &Event) -> bool {
        let any = |wanted: &[String], have: &[&str]| wanted.is_empty() || wanted.iter().any(|w| have.iter().any(|h| !h.is_empty() && h.eq_ignore_ascii_case(w)));
        // The notice of missed events goes to everyone: what was missed may have matched.
        e.kind == "events"
            || (any(&self.types, &[&e.kind])
                && any(&self.actions, &[&e.action])
                && any(&self.networks, &[&e.network, &e.network_id])
                && any(&self.objects, &[&e.id, &e.name])
                && any(&self.outcomes, &[&e.outcome]))
    }
}

/// The query of `GET /events`.
#[derive(Debug, Default)]
struct Subscription {
    filter: Filter,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
}

/// A time of `since`/`until`: RFC 3339 (`2026-12-05T13:00:00Z`), Unix seconds, or a duration
/// before now (`10m`, `1h30m`).
fn parse_time(key: &str, v: &str, now: SystemTime) -> Result<SystemTime, ApiError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(v) {
        return Ok(t);
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs >= 0.0
    {
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    if let Ok(d) = humantime::parse_duration(v) {
        return Ok(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    Err(ApiError::field(ErrorCode::InvalidParameter, key, format!("{key}={v:?} is not a time: give RFC 3339 (2026-12-05T13:00:00Z), Unix seconds, or a duration before now (10m)")))
}

impl Subscription {
    fn parse(pairs: &[(String, String)]) -> Result<Subscription, ApiError> {
        let now = SystemTime::now();
        let mut s = Subscription::default();
        for (k, v) in pairs {
            let f = &mut s.filter;
            match k.as_str() {
                "type" => {
                    if !hns_api::EVENT_TYPES.iter().any(|t| t.eq_ignore_ascii_case(v)) {
                        return Err(ApiError::field(ErrorCode::InvalidParameter, "type", format!("type={v:?} is not an event type; the types are {}", hns_api::EVENT_TYPES.join(", "))));
                    }
                    f.types.push(v.clone());
                }
                "action" | "event" => f.actions.push(v.clone()),
                "network" => f.networks.push(v.clone()),
                "object" | "id" | "name" => f.objects.push(v.clone()),
                "outcome" => {
                    if v != "ok" && v != "error" {
                        return Err(ApiError::field(ErrorCode::InvalidParameter, "outcome", format!("outcome={v:?}: give ok or error")));
                    }
                    f.outcomes.push(v.clone());
                }
                "since" => s.since = Some(parse_time(k, v, now)?),
                "until" => s.until = Some(parse_time(k, v, now)?),
                _ => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidParameter,
                        k.as_str(),
                        format!("{k:?} is not a parameter of /events; use type, action, network, object, outcome, since, until"),
                    ));
                }
            }
        }
        Ok(s)
    }
}

/// The stream of events, one JSON object per line, until the client goes away (or `until`).
///
/// Query (each may repeat; values of one key are alternatives, different keys must all match):
/// `type` (network, endpoint, namespace, portmapping, loadbalancer, reconcile, dhcp, node), `action`,
/// `network` (name or ID), `object` (ID or name), `outcome` (ok, error); `since`: first replay
/// the kept events (the last 1024) from this time; `until`: end the stream at this time (with
/// `since`, a past `until` replays and ends at once). Times: RFC 3339, Unix seconds, or a
/// duration before now (`10m`). A subscriber that falls more than 1024 events behind loses
/// the oldest; a line `{"Type": "events", "Action": "missed", "Attributes": {"count": "N"}}`
/// then says how many.
#[utoipa::path(get, path = "/events",
    params(
        ("type" = Option<String>, Query, description = "event type: network, endpoint, namespace, portmapping, loadbalancer, reconcile, dhcp, node"),
        ("action" = Option<String>, Query, description = "action, e.g. create, attach, add, repair, renewed"),
        ("network" = Option<String>, Query, description = "network name or ID"),
        ("object" = Option<String>, Query, description = "object ID or name"),
        ("outcome" = Option<String>, Query, description = "ok or error"),
        ("since" = Option<String>, Query, description = "replay kept events from this time (RFC 3339, Unix seconds, or a duration before now such as 10m)"),
        ("until" = Option<String>, Query, description = "end the stream at this time"),
    ),
    responses(
        (status = 200, description = "newline-delimited JSON: one Event per line, as they happen", body = Event, content_type = "application/x-ndjson"),
        (status = 400, description = "a parameter is not known or its value is invalid (INVALID_PARAMETER)", body = ApiError)))]
pub async fn subscribe(State(s): State<Shared>, q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Response, Failure> {
    let Query(pairs) = q.map_err(|e| ApiError::new(ErrorCode::InvalidParameter, format!("could not read the query: {e}")))?;
    let sub = Subscription::parse(&pairs)?;
    let (backlog, rx) = s.events.subscribe(sub.since);
    let closed = s.events.closed.subscribe();
    let stream = stream(backlog, rx, closed, sub.filter, sub.until);
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(stream)).into_response())
}

fn stream(
    backlog: VecDeque<Arc<Stamped>>,
    rx: broadcast::Receiver<Arc<Stamped>>,
    closed: watch::Receiver<bool>,
    filter: Filter,
    until: Option<SystemTime>,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    // `until` as a deadline of the runtime's clock.
    let deadline = until.map(|u| tokio::time::Instant::now() + u.duration_since(SystemTime::now()).unwrap_or_default());
    struct St {
        backlog: VecDeque<Arc<Stamped>>,
        rx: broadcast::Receiver<Arc<Stamped>>,
        closed: watch::Receiver<bool>,
        filter: Filter,
        until: Option<SystemTime>,
        deadline: Option<tokio::time::Instant>,
    }
    let st = St { backlog, rx, closed, filter, until, deadline };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            let past = |at: SystemTime| st.until.is_some_and(|u| at > u);
            if let Some(ev) = st.backlog.pop_front() {
                if past(ev.at) {
                    return None;
                }
                if st.filter.matches(&ev.event) {
                    return Some((Ok(ev.line.clone()), st));
                }
                continue;
            }
            if st.deadline.is_some_and(|d| d <= tokio::time::Instant::now()) || *st.closed.borrow() {
                return None;
            }
            let until = async {
                match st.deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let got = tokio::select! {
                r = st.rx.recv() => r,
                _ = st.closed.wait_for(|c| *c) => return None,
                () = until => return None,
            };
            match got {
                Ok(ev) => {
                    if past(ev.at) {
                        return None;
                    }
                    if st.filter.matches(&ev.event) {
                        return Some((Ok(ev.line.clone()), st));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let notice = Event::failed("events", "missed", format!("this subscriber fell behind: {n} events were dropped (hnsd keeps at most {BUFFER} unread)"))
                        .attr("count", n.to_string());
                    let mut line = serde_json::to_vec(&Event { time: rfc3339(SystemTime::now()), ..notice }).expect("events serialize");
                    line.push(b'\n');
                    return Some((Ok(Bytes::from(line)), st));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

// --- Recording API changes

/// The changes the API makes, by route template and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateNetwork,
    ModifyNetwork,
    DeleteNetwork,
    CreateEndpoint,
    ModifyEndpoint,
    DeleteEndpoint,
    CreateNamespace,
    ModifyNamespace,
    DeleteNamespace,
    RemoveNode,
    CreateLb,
    ModifyLb,
    DeleteLb,
}

fn op_of(method: &Method, route: &str) -> Option<Op> {
    let route = route.strip_suffix('/').unwrap_or(route);
    Some(match (method.as_str(), route) {
        ("POST", "/networks") => Op::CreateNetwork,
        ("POST", "/networks/{id}") => Op::ModifyNetwork,
        ("DELETE", "/networks/{id}") => Op::DeleteNetwork,
        ("POST", "/endpoints") => Op::CreateEndpoint,
        ("POST", "/endpoints/{id}") => Op::ModifyEndpoint,
        ("DELETE", "/endpoints/{id}") => Op::DeleteEndpoint,
        ("POST", "/namespaces") => Op::CreateNamespace,
        ("POST", "/namespaces/{id}") => Op::ModifyNamespace,
        ("DELETE", "/namespaces/{id}") => Op::DeleteNamespace,
        ("DELETE", "/nodes/{name}") => Op::RemoveNode,
        ("POST", "/loadbalancers") => Op::CreateLb,
        ("POST", "/loadbalancers/{id}") => Op::ModifyLb,
        ("DELETE", "/loadbalancers/{id}") => Op::DeleteLb,
        _ => return None,
    })
}

/// An endpoint as events name it.
#[derive(Debug, Clone, Default)]
struct EpRef {
    id: String,
    name: String,
    network_id: String,
    network: String,
    namespace_id: String,
}

impl EpRef {
    fn event(&self, e: Event) -> Event {
        e.object(self.id.clone(), self.name.clone()).on_network(self.network_id.clone(), self.network.clone())
    }
}

fn ep_ref(e: &Engine, key: &str) -> Option<EpRef> {
    let id = e.endpoint_id(key).ok()?;
    let r = e.endpoints.get(&id)?;
    let network = e.networks.get(&r.network_id).map(|n| n.rec.net.name.clone()).unwrap_or_default();
    Some(EpRef { id, name: r.ep.name.clone(), network_id: r.network_id.clone(), network, namespace_id: r.ep.host_compute_namespace.clone() })
}

/// A namespace's ID and display name (its name, else its ID).
fn ns_ref(e: &Engine, key: &str) -> Option<(String, String)> {
    let id = e.namespace_id(key)?;
    let name = e.namespaces.get(&id).map(|n| n.rec.ns.name.clone()).unwrap_or_default();
    Some((id, name))
}

/// Changes Docker makes through the plugin protocol do not pass the API router's layer: its
/// handlers publish these, shaped like the API's events plus `via=docker`.
pub mod docker {
    use super::*;

    /// An endpoint step (`create`, `attach`, `detach`, `delete`) that succeeded, or failed with
    /// `error`. Call it while the endpoint still exists (before a delete) for its names.
    pub fn endpoint(engine: &Engine, action: &str, id: &str, error: Option<&ApiError>) -> Event {
        let r = ep_ref(engine, id).unwrap_or_else(|| EpRef { id: id.to_owned(), ..Default::default() });
        let ev = outcome(Event::ok("endpoint", action), error);
        let ev = r.event(ev).attr("via", "docker");
        match ns_ref(engine, &r.namespace_id) {
            Some(ns) if action == "attach" || action == "detach" => with_ns(ev, &ns),
            _ => ev,
        }
    }

    /// A network `create` or `delete` (ID and name known to the caller).
    pub fn network(action: &str, id: &str, name: &str, error: Option<&ApiError>) -> Event {
        outcome(Event::ok("network", action), error).object(id, name).on_network(id, name).attr("via", "docker")
    }

    /// `ev` as it turned out: unchanged, or failed with `error` (its message and code, as the
    /// API's refusals read).
    pub fn outcome(ev: Event, error: Option<&ApiError>) -> Event {
        match error {
            None => ev,
            Some(e) => Event { outcome: "error".into(), error: format!("{} ({})", e.message, e.code.as_str()), ..ev },
        }
    }

    /// Port mappings added or removed (`-p` of `docker run`), one event each.
    pub fn mappings(engine: &Engine, action: &str, id: &str, maps: &[PortMappingSettings]) -> Vec<Event> {
        let r = ep_ref(engine, id).unwrap_or_else(|| EpRef { id: id.to_owned(), ..Default::default() });
        maps.iter().map(|m| r.event(Event::ok("portmapping", action)).object(mapping_id(&r.id, m), r.name.clone()).attr("mapping", mapping_text(m)).attr("via", "docker")).collect()
    }
}

fn with_ns(ev: Event, ns: &(String, String)) -> Event {
    ev.attr("namespace", if ns.1.is_empty() { ns.0.as_str() } else { ns.1.as_str() }).attr("namespace_id", ns.0.as_str())
}

/// What the engine held before a change that removes things (names are gone after).
#[derive(Debug, Default)]
struct Before {
    network: Option<(String, String)>,
    endpoint: Option<EpRef>,
    namespace: Option<(String, String)>,
    /// Endpoints attached to the namespace.
    attached: Vec<EpRef>,
    lb: Option<HostComputeLoadBalancer>,
}

fn before(e: &Engine, op: Op, key: &str) -> Before {
    let mut b = Before::default();
    match op {
        Op::DeleteNetwork | Op::ModifyNetwork => {
            b.network = e.network_id(key).and_then(|id| e.networks.get(&id).map(|n| (id.clone(), n.rec.net.name.clone())));
        }
        Op::DeleteEndpoint => b.endpoint = ep_ref(e, key),
        Op::DeleteLb => b.lb = e.get_lb(key).ok(),
        Op::DeleteNamespace => {
            b.namespace = ns_ref(e, key);
            if let Some((id, _)) = &b.namespace {
                b.attached = e.endpoints.in_namespace(id).filter_map(|r| ep_ref(e, &r.ep.id)).collect();
            }
        }
        _ => {}
    }
    b
}

/// The message of an error reply, with its code.
fn error_text(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => format!("{} ({})", e.message, e.code.as_str()),
        Err(_) => format!("HTTP {}: {}", status.as_u16(), String::from_utf8_lossy(body)),
    }
}

/// Decodes one percent-encoded path segment.
fn unescape(seg: &str) -> String {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&seg[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mapping_text(s: &PortMappingSettings) -> String {
    let proto = match s.protocol {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        p => p.to_string(),
    };
    let ip = if s.vip.is_empty() { "0.0.0.0" } else { s.vip.as_str() };
    let ip = if ip.contains(':') { format!("[{ip}]") } else { ip.to_owned() };
    let port = if s.external_port == 0 { s.external_port_range.clone() } else { s.external_port.to_string() };
    format!("{ip}:{port}->{}/{proto}", s.internal_port)
}

fn mapping_id(ep: &str, s: &PortMappingSettings) -> String {
    let proto = match s.protocol {
        6 => "TCP".to_owned(),
        17 => "UDP".to_owned(),
        p => p.to_string(),
    };
    let ip = if s.vip.is_empty() { "0.0.0.0" } else { s.vip.as_str() };
    format!("{ep}/{proto}/{ip}/{}", s.external_port)
}

/// The `PortMapping` settings among some policies.
fn mappings_in(policies: &[hns_api::Policy]) -> Vec<PortMappingSettings> {
    policies.iter().filter(|p| p.kind.eq_ignore_ascii_case("PortMapping")).filter_map(|p| serde_json::from_value(p.settings.clone()).ok()).collect()
}

/// Router layer: publishes one event per change the API made or refused (see the module).
pub async fn record(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let Some(op) = req.extensions().get::<MatchedPath>().and_then(|p| op_of(req.method(), p.as_str())) else {
        return next.run(req).await;
    };
    let key = unescape(req.uri().path().trim_end_matches('/').rsplit('/').next().unwrap_or_default());
    let before = match op {
        Op::DeleteNetwork | Op::ModifyNetwork | Op::DeleteEndpoint | Op::DeleteNamespace | Op::DeleteLb => before(&*s.engine.lock().await, op, &key),
        _ => Before::default(),
    };
    // The request body as the handler reads it (the handler keeps its own limits and errors).
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (parts, body) = req.into_parts();
    let tee = seen.clone();
    let body = Body::from_stream(body.into_data_stream().inspect(move |chunk| {
        if let Ok(b) = chunk {
            lock(&tee).extend_from_slice(b);
        }
    }));
    let resp = next.run(Request::from_parts(parts, body)).await;
    let (parts, body) = resp.into_parts();
    let reply = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let status = parts.status;
    let request = std::mem::take(&mut *lock(&seen));
    let events = if status.is_success() { succeeded(&s, op, &key, before, &request, &reply).await } else { failed(op, &key, before, &request, &error_text(status, &reply)) };
    for e in events {
        s.events.publish(e);
    }
    Response::from_parts(parts, Body::from(reply))
}

/// The events of a change that was made.
async fn succeeded(s: &Shared, op: Op, key: &str, before: Before, request: &[u8], reply: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    match op {
        Op::CreateNetwork | Op::ModifyNetwork => {
            let n: HostComputeNetwork = serde_json::from_slice(reply).unwrap_or_default();
            let action = if op == Op::CreateNetwork { "create" } else { "modify" };
            let mut ev = Event::ok("network", action).object(n.id.clone(), n.name.clone()).on_network(n.id.clone(), n.name.clone());
            if op == Op::ModifyNetwork {
                ev = ev.attr("request", modify_text(request));
            }
            out.push(ev.attr("driver", n.kind.map(|k| k.as_str().to_owned()).unwrap_or_default()));
        }
        Op::DeleteNetwork => {
            let (id, name) = before.network.unwrap_or_else(|| (key.to_owned(), key.to_owned()));
            out.push(Event::ok("network", "delete").object(id.clone(), name.clone()).on_network(id, name));
        }
        Op::CreateEndpoint => {
            let ep: HostComputeEndpoint = serde_json::from_slice(reply).unwrap_or_default();
            let engine = s.engine.lock().await;
            let r = ep_ref(&engine, &ep.id).unwrap_or_else(|| EpRef { id: ep.id.clone(), name: ep.name.clone(), ..Default::default() });
            let address = ep.ip_configurations.iter().map(|c| c.ip_address.as_str()).collect::<Vec<_>>().join(",");
            out.push(r.event(Event::ok("endpoint", "create")).attr("address", address).attr("mac", ep.mac_address.as_str()));
            for m in mappings_in(&ep.policies) {
                out.push(r.event(Event::ok("portmapping", "add")).object(mapping_id(&r.id, &m), r.name.clone()).attr("mapping", mapping_text(&m)));
            }
            if !r.namespace_id.is_empty() {
                let ns = ns_ref(&engine, &r.namespace_id).unwrap_or_else(|| (r.namespace_id.clone(), String::new()));
                out.push(with_ns(r.event(Event::ok("endpoint", "attach")), &ns));
            }
            s.events.track_leases(&engine);
        }
        Op::DeleteEndpoint => {
            let r = before.endpoint.unwrap_or_else(|| EpRef { id: key.to_owned(), ..Default::default() });
            if !r.namespace_id.is_empty() {
                let ns = (r.namespace_id.clone(), String::new());
                out.push(with_ns(r.event(Event::ok("endpoint", "detach")), &ns));
            }
            out.push(r.event(Event::ok("endpoint", "delete")));
            s.events.track_leases(&*s.engine.lock().await);
        }
        Op::ModifyEndpoint => {
            let engine = s.engine.lock().await;
            let r = ep_ref(&engine, key).unwrap_or_else(|| EpRef { id: key.to_owned(), ..Default::default() });
            match serde_json::from_slice::<ModifyRequest>(request) {
                Ok(m) if m.resource_type == hns_api::ResourceType::Policy => {
                    let policies: Vec<hns_api::Policy> = m.settings.get("Policies").and_then(|p| serde_json::from_value(p.clone()).ok()).unwrap_or_default();
                    let asked = mappings_in(&policies);
                    let add = m.request_type != hns_api::RequestType::Remove;
                    // Added mappings are the last ones of the endpoint, with the host ports chosen.
                    let made: Vec<PortMappingSettings> = if add {
                        let all = engine.mappings_of(&r.id);
                        all[all.len().saturating_sub(asked.len())..].to_vec()
                    } else {
                        asked
                    };
                    for mp in made {
                        let action = if add { "add" } else { "remove" };
                        out.push(r.event(Event::ok("portmapping", action)).object(mapping_id(&r.id, &mp), r.name.clone()).attr("mapping", mapping_text(&mp)));
                    }
                }
                _ => out.push(r.event(Event::ok("endpoint", "modify")).attr("request", modify_text(request))),
            }
        }
        Op::CreateNamespace => {
            let ns: HostComputeNamespace = serde_json::from_slice(reply).unwrap_or_default();
            let nsr = (ns.id.clone(), ns.name.clone());
            out.push(Event::ok("namespace", "create").object(ns.id.clone(), ns.name.clone()).attr("netns", ns.net_ns_path.as_str()));
            let engine = s.engine.lock().await;
            for ep in ns.endpoint_ids() {
                let r = ep_ref(&engine, &ep).unwrap_or_else(|| EpRef { id: ep.clone(), ..Default::default() });
                out.push(with_ns(r.event(Event::ok("endpoint", "attach")), &nsr));
            }
            s.events.track_leases(&engine);
        }
        Op::ModifyNamespace => {
            let engine = s.engine.lock().await;
            let nsr = ns_ref(&engine, key).unwrap_or_else(|| (key.to_owned(), String::new()));
            match serde_json::from_slice::<ModifyRequest>(request) {
                Ok(m) if m.resource_type == hns_api::ResourceType::Endpoint => {
                    let ep = m.settings.get("EndpointId").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                    let r = ep_ref(&engine, &ep).unwrap_or_else(|| EpRef { id: ep.clone(), ..Default::default() });
                    let action = if m.request_type == hns_api::RequestType::Remove { "detach" } else { "attach" };
                    out.push(with_ns(r.event(Event::ok("endpoint", action)), &nsr));
                }
                _ => out.push(Event::ok("namespace", "modify").object(nsr.0.clone(), nsr.1.clone()).attr("request", modify_text(request))),
            }
            s.events.track_leases(&engine);
        }
        Op::DeleteNamespace => {
            let nsr = before.namespace.unwrap_or_else(|| (key.to_owned(), String::new()));
            for r in &before.attached {
                out.push(with_ns(r.event(Event::ok("endpoint", "detach")), &nsr));
            }
            out.push(Event::ok("namespace", "delete").object(nsr.0.clone(), nsr.1.clone()));
            s.events.track_leases(&*s.engine.lock().await);
        }
        Op::RemoveNode => out.push(Event::ok("node", "remove").object(key, key)),
        Op::CreateLb | Op::ModifyLb => {
            let lb: HostComputeLoadBalancer = serde_json::from_slice(reply).unwrap_or_default();
            let action = if op == Op::CreateLb { "create" } else { "modify" };
            out.push(lb_event(Event::ok("loadbalancer", action), &lb));
        }
        Op::DeleteLb => {
            let ev = Event::ok("loadbalancer", "delete");
            out.push(match before.lb {
                Some(lb) => lb_event(ev, &lb),
                None => ev.object(key, ""),
            });
        }
    }
    out
}

/// A load balancer's event: its frontends (`VIP:port/proto`, `*` for every host address) and
/// how many backends it has.
fn lb_event(ev: Event, lb: &HostComputeLoadBalancer) -> Event {
    let vips: Vec<&str> = if lb.frontend_vips.is_empty() { vec!["*"] } else { lb.frontend_vips.iter().map(String::as_str).collect() };
    let frontends: Vec<String> = vips
        .iter()
        .flat_map(|v| {
            lb.port_mappings.iter().map(move |m| {
                let proto = match m.protocol {
                    6 => "tcp".to_owned(),
                    17 => "udp".to_owned(),
                    p => p.to_string(),
                };
                if v.contains(':') { format!("[{v}]:{}/{proto}", m.external_port) } else { format!("{v}:{}/{proto}", m.external_port) }
            })
        })
        .collect();
    ev.object(lb.id.clone(), "").attr("frontends", frontends.join(",")).attr("backends", lb.host_compute_endpoints.len().to_string())
}

/// `Policy Add`: what a modify request asked, in short.
fn modify_text(request: &[u8]) -> String {
    match serde_json::from_slice::<ModifyRequest>(request) {
        Ok(m) => format!("{} {}", m.resource_type.as_str(), m.request_type.as_str()),
        Err(_) => String::new(),
    }
}

/// The event of a change that was refused or failed.
fn failed(op: Op, key: &str, before: Before, request: &[u8], error: &str) -> Vec<Event> {
    let body: serde_json::Value = serde_json::from_slice(request).unwrap_or_default();
    let field = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let ev = match op {
        Op::CreateNetwork => {
            let name = field("Name");
            Event::failed("network", "create", error).object("", name.clone()).on_network("", name)
        }
        Op::ModifyNetwork => {
            let (id, name) = before.network.unwrap_or_else(|| (String::new(), key.to_owned()));
            Event::failed("network", "modify", error).object(id.clone(), name.clone()).on_network(id, name).attr("request", modify_text(request))
        }
        Op::DeleteNetwork => {
            let (id, name) = before.network.unwrap_or_else(|| (String::new(), key.to_owned()));
            Event::failed("network", "delete", error).object(id.clone(), name.clone()).on_network(id, name)
        }
        Op::CreateEndpoint => Event::failed("endpoint", "create", error).object("", field("Name")).on_network("", field("HostComputeNetwork")),
        Op::DeleteEndpoint => match before.endpoint {
            Some(r) => r.event(Event::failed("endpoint", "delete", error)),
            None => Event::failed("endpoint", "delete", error).object("", key),
        },
        Op::ModifyEndpoint => {
            let m: Option<ModifyRequest> = serde_json::from_slice(request).ok();
            match m {
                Some(m) if m.resource_type == hns_api::ResourceType::Policy => {
                    let action = if m.request_type == hns_api::RequestType::Remove { "remove" } else { "add" };
                    let policies: Vec<hns_api::Policy> = m.settings.get("Policies").and_then(|p| serde_json::from_value(p.clone()).ok()).unwrap_or_default();
                    let text = mappings_in(&policies).iter().map(mapping_text).collect::<Vec<_>>().join(", ");
                    Event::failed("portmapping", action, error).object("", key).attr("mapping", text).attr("endpoint", key)
                }
                _ => Event::failed("endpoint", "modify", error).object("", key).attr("request", modify_text(request)),
            }
        }
        Op::CreateNamespace => Event::failed("namespace", "create", error).object("", field("Name")),
        Op::ModifyNamespace => {
            let m: Option<ModifyRequest> = serde_json::from_slice(request).ok();
            match m {
                Some(m) if m.resource_type == hns_api::ResourceType::Endpoint => {
                    let ep = m.settings.get("EndpointId").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                    let action = if m.request_type == hns_api::RequestType::Remove { "detach" } else { "attach" };
                    Event::failed("endpoint", action, error).object(ep, "").attr("namespace", key)
                }
                _ => Event::failed("namespace", "modify", error).object("", key).attr("request", modify_text(request)),
            }
        }
        Op::DeleteNamespace => match before.namespace {
            Some((id, name)) => Event::failed("namespace", "delete", error).object(id, name),
            None => Event::failed("namespace", "delete", error).object("", key),
        },
        Op::RemoveNode => Event::failed("node", "remove", error).object(key, key),
        Op::CreateLb => Event::failed("loadbalancer", "create", error),
        Op::ModifyLb => Event::failed("loadbalancer", "modify", error).object(key, ""),
        Op::DeleteLb => Event::failed("loadbalancer", "delete", error).object(key, ""),
    };
    vec![ev]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, action: &str, name: &str, network: &str) -> Event {
        Event::ok(kind, action).object(format!("id-{name}"), name).on_network(format!("nid-{network}"), network)
    }

    #[test]
    fn filters_and_or() {
        let pairs = |p: &[(&str, &str)]| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let s = Subscription::parse(&pairs(&[("type", "endpoint"), ("type", "network"), ("network", "blue")])).unwrap();
        assert!(s.filter.matches(&ev("endpoint", "create", "web", "blue")));
        assert!(s.filter.matches(&ev("network", "delete", "blue", "blue")));
        assert!(!s.filter.matches(&ev("endpoint", "create", "web", "red")));
        assert!(!s.filter.matches(&ev("namespace", "create", "web", "blue")));
        assert!(s.filter.matches(&Event::failed("events", "missed", "x")), "the missed notice passes every filter");
        let s = Subscription::parse(&pairs(&[("network", "NID-BLUE"), ("object", "web")])).unwrap();
        assert!(s.filter.matches(&ev("endpoint", "attach", "web", "blue")));
        assert!(!s.filter.matches(&ev("endpoint", "attach", "db", "blue")));
        for bad in [("type", "container"), ("colour", "red"), ("since", "yesterday"), ("outcome", "fine")] {
            let e = Subscription::parse(&pairs(&[bad])).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidParameter, "{bad:?}");
            assert_eq!(e.field.as_deref(), Some(bad.0), "{bad:?}");
        }
    }

    #[test]
    fn times() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_time("since", "600", now).unwrap(), SystemTime::UNIX_EPOCH + Duration::from_secs(600));
        assert_eq!(parse_time("since", "10m", now).unwrap(), now - Duration::from_secs(600));
        assert_eq!(parse_time("since", "1970-01-01T00:01:00Z", now).unwrap(), SystemTime::UNIX_EPOCH + Duration::from_secs(60));
    }

    #[test]
    fn helpers() {
        assert_eq!(guid_in("endpoint 5a3d0f6e-9c1b-4b2a-8e7f-001122334455: DHCP lease resumed"), "5a3d0f6e-9c1b-4b2a-8e7f-001122334455");
        assert_eq!(guid_in("nft table re-applied"), "");
        assert_eq!(unescape("a%20b%2Fc"), "a b/c");
        assert_eq!(unescape("100%"), "100%");
        let m = PortMappingSettings { protocol: 17, internal_port: 53, external_port: 5353, vip: "127.0.0.1".into(), ..Default::default() };
        assert_eq!(mapping_text(&m), "127.0.0.1:5353->53/udp");
        assert_eq!(mapping_id("e", &m), "e/UDP/127.0.0.1/5353");
        assert_eq!(op_of(&Method::POST, "/namespaces/{id}/"), Some(Op::ModifyNamespace));
        assert_eq!(op_of(&Method::GET, "/networks"), None);
    }

    #[tokio::test]
    async fn a_slow_subscriber_misses_the_oldest_and_is_told_how_many() {
        let bus = Bus::new();
        let (backlog, rx) = bus.subscribe(None);
        let closed = bus.closed.subscribe();
        let total = BUFFER + 10;
        for i in 0..total {
            bus.publish(Event::ok("network", "create").object(i.to_string(), ""));
        }
        let mut s = Box::pin(stream(backlog, rx, closed, Filter::default(), None));
        let first: Event = serde_json::from_slice(&s.next().await.unwrap().unwrap()).unwrap();
        assert_eq!((first.kind.as_str(), first.action.as_str()), ("events", "missed"));
        assert_eq!(first.attributes["count"], "10");
        let next: Event = serde_json::from_slice(&s.next().await.unwrap().unwrap()).unwrap();
        assert_eq!(next.id, "10", "after the notice, the oldest event still kept");
        bus.close();
        let mut rest = 0;
        while s.next().await.is_some() {
            rest += 1;
        }
        assert!(rest < BUFFER, "{rest}");
    }

    #[tokio::test]
    async fn since_replays_and_until_ends() {
        let bus = Bus::new();
        bus.publish(Event::ok("network", "create").object("a", "a"));
        bus.publish(Event::ok("endpoint", "create").object("b", "b"));
        let (backlog, rx) = bus.subscribe(Some(SystemTime::UNIX_EPOCH));
        let closed = bus.closed.subscribe();
        let f = Filter { types: vec!["endpoint".into()], ..Default::default() };
        let lines: Vec<Bytes> = stream(backlog, rx, closed, f, Some(SystemTime::now())).map(|r| r.unwrap()).collect().await;
        assert_eq!(lines.len(), 1);
        let e: Event = serde_json::from_slice(&lines[0]).unwrap();
        assert_eq!(e.id, "b");
        assert!(humantime::parse_rfc3339(&e.time).is_ok(), "{}", e.time);
    }
}
