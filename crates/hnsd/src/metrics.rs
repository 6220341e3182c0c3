//! Metrics in the Prometheus (OpenMetrics) text format, served at `GET /metrics` on the API
//! socket and, when asked, on a TCP address (`--metrics-listen`).
//!
//! Two kinds of series:
//! - counted as things happen: API requests (a layer on the router, by route template, method
//!   and status code, with a latency histogram) and reconcile passes (by `main.rs`);
//! - read at scrape time: object counts, DHCP leases and DNS counters from the engine, and each
//!   endpoint's traffic from one netlink link dump of the host namespace. Nothing is polled.
//!
//! The engine is never waited for: a scrape reads it with `try_lock` and, while an operation
//! holds the lock, serves the figures of the previous scrape (see [`Metrics::encode`]).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::api::Shared;
use crate::engine::Engine;
use crate::engine::reconcile::Report;

/// The content type of the OpenMetrics text that prometheus-client writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriverLabels {
    driver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabels {
    network: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: String,
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LbBackendLabels {
    loadbalancer: String,
    endpoint: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AclRuleLabels {
    endpoint: String,
    name: String,
    /// The ACL's Id, or `prio<N>` when it has none.
    rule: String,
    action: &'static str,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabels {
    family: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
    name: String,
    network: String,
}

/// What a scrape reads of the daemon's state: small copies, no kernel calls.
#[derive(Clone, Default)]
struct Inventory {
    /// (driver, networks)
    networks: Vec<(String, i64)>,
    /// (network name, endpoints)
    endpoints: Vec<(String, i64)>,
    namespaces: i64,
    /// Endpoints that have a host-side veth: (veth name, labels).
    veths: Vec<(String, EndpointLabels)>,
    held: Held,
}

/// The part of an [`Inventory`] only the engine holds, read under its lock.
#[derive(Clone, Default)]
struct Held {
    leases_v4: i64,
    leases_v6: i64,
    dns: hns_dns::DnsStats,
    /// Load-balancer backends: (connection mark, labels).
    lb_backends: Vec<(u32, LbBackendLabels)>,
    /// ACL rules of attached endpoints (their own and their network's): (the comment of
    /// their kernel rules, labels).
    acl_rules: Vec<(String, AclRuleLabels)>,
}

impl Inventory {
    /// Networks, endpoints and compartments from the published views, without the engine's
    /// lock: built under it, at 5 000 endpoints, they held every request up for 5-8 ms a
    /// scrape.
    fn of(v: &crate::engine::Views, held: Held) -> Inventory {
        let mut drivers = std::collections::BTreeMap::<String, i64>::new();
        let mut per_network = std::collections::HashMap::<&str, i64>::new();
        for ep in v.local_endpoints() {
            *per_network.entry(ep.host_compute_network.as_str()).or_default() += 1;
        }
        let mut endpoints = Vec::new();
        let mut names = std::collections::HashMap::<&str, &str>::new();
        for net in v.network_objects() {
            *drivers.entry(net.kind.map_or("unknown", |k| k.as_str()).to_owned()).or_default() += 1;
            endpoints.push((net.name.clone(), per_network.get(net.id.as_str()).copied().unwrap_or(0)));
            names.insert(&net.id, &net.name);
        }
        let veths = v
            .local_endpoints()
            .map(|ep| {
                let network = names.get(ep.host_compute_network.as_str()).map_or_else(|| ep.host_compute_network.clone(), |n| (*n).to_owned());
                let labels = EndpointLabels { endpoint: ep.id.clone(), name: ep.name.clone(), network };
                (hns_kernel::names::veth_host_name(&ep.id), labels)
            })
            .collect();
        Inventory { networks: drivers.into_iter().collect(), endpoints, namespaces: v.namespace_count() as i64, veths, held }
    }
}

impl Held {
    fn of(e: &Engine) -> Held {
        let lb_backends = e
            .lbs
            .recs
            .iter()
            .flat_map(|(lb, rec)| {
                rec.marks.iter().map(move |(ep, mark)| {
                    // A remote backend is named as its host publishes it.
                    let name = e.endpoints.get(ep).map(|r| r.ep.name.clone()).or_else(|| e.find_remote(ep).map(|r| r.name.clone())).unwrap_or_default();
                    (*mark, LbBackendLabels { loadbalancer: lb.clone(), endpoint: ep.clone(), name })
                })
            })
            .collect();
        // Parsed once per network, and only endpoints under some ACL get their state computed.
        let mut net_acls = std::collections::HashMap::<&str, bool>::new();
        let acl_rules = e
            .endpoints
            .values()
            .filter(|r| !r.acls.is_empty() || *net_acls.entry(&r.network_id).or_insert_with(|| !e.network_acls(&r.network_id).is_empty()))
            .filter_map(|r| Some((r, e.acl_state(r)?)))
            .flat_map(|(r, s)| {
                hns_kernel::nft_acl::ordered(&s.rules)
                    .into_iter()
                    .map(|rule| {
                        use hns_kernel::nft_acl::{Action, Direction};
                        let labels = AclRuleLabels {
                            endpoint: r.ep.id.clone(),
                            name: r.ep.name.clone(),
                            rule: if rule.id.is_empty() { format!("prio{}", rule.priority) } else { rule.id.clone() },
                            action: if rule.action == Action::Allow { "allow" } else { "block" },
                            direction: if rule.direction == Direction::In { "in" } else { "out" },
                        };
                        (hns_kernel::nft_acl::rule_comment(&s.host_if, rule), labels)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Held { leases_v4: e.leases.len() as i64, leases_v6: e.leases6.len() as i64, dns: e.dns.stats(), lb_backends, acl_rules }
    }
}

/// Families set from scratch at each scrape (objects that went away drop out).
#[derive(Default)]
struct Scraped {
    networks: Family<DriverLabels, Gauge>,
    endpoints: Family<NetworkLabels, Gauge>,
    namespaces: Gauge,
    leases: Family<FamilyLabels, Gauge>,
    dns_queries: Family<ResultLabels, Counter>,
    lb_backend_connections: Family<LbBackendLabels, Counter>,
    events: Family<EventLabels, Counter>,
    etcd_errors: Family<OpLabels, Counter>,
    acl_rule_packets: Family<AclRuleLabels, Counter>,
    traffic: std::sync::Arc<Traffic>,
}

/// Each endpoint's traffic counters as of the last scrape, written into the text by the
/// registry (a collector). Six `Family`s emptied and refilled at each scrape cost an
/// allocation of labels and counter per series, 30 000 series at 5 000 endpoints: most of
/// the scrape (bench/results/scrape.txt). A list of rows replaced at once costs one.
#[derive(Debug, Default)]
struct Traffic {
    rows: std::sync::Mutex<Vec<(EndpointLabels, hns_kernel::netlink::LinkCounters)>>,
}

type Series = (&'static str, &'static str, Option<Unit>, fn(&hns_kernel::netlink::LinkCounters) -> u64);

impl Collector for Traffic {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The host-side veth transmits what the endpoint receives, and the reverse.
        let series: [Series; 6] = [
            ("endpoint_received", "Bytes the endpoint received (sent to it by its host-side veth)", Some(Unit::Bytes), |c| c.tx_bytes),
            ("endpoint_sent", "Bytes the endpoint sent (received by its host-side veth)", Some(Unit::Bytes), |c| c.rx_bytes),
            ("endpoint_received_packets", "Packets the endpoint received", None, |c| c.tx_packets),
            ("endpoint_sent_packets", "Packets the endpoint sent", None, |c| c.rx_packets),
            ("endpoint_received_drops", "Packets to the endpoint that its host-side veth dropped", None, |c| c.tx_dropped),
            ("endpoint_sent_drops", "Packets from the endpoint that its host-side veth dropped", None, |c| c.rx_dropped),
        ];
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        for (name, help, unit, value) in &series {
            let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
            for (labels, c) in rows.iter() {
                ConstCounter::new(value(c)).encode(metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    reconcile_passes: Counter,
    reconcile_duration: Histogram,
    repairs: Family<KindLabels, Counter>,
    /// Cluster watch events applied, by kind, and how long each took from its arrival from
    /// etcd's watch to being applied (waiting for the engine included): the lag hnsd adds.
    watch_events: Family<WatchLabels, Counter>,
    watch_lag: Histogram,
    scraped: Scraped,
    /// Serialises scrapes (each rewrites [`Scraped`]) and keeps the last inventory.
    last: tokio::sync::Mutex<Option<Held>>,
    /// The length of the last scrape's text: the next one is written into a buffer of about
    /// that size, not grown by doubling (3 MB at 5 000 endpoints, copied at each growth).
    last_len: std::sync::atomic::AtomicUsize,
    /// The host namespace, for the link dump.
    host: hns_kernel::netlink::Netlink,
    lock_timing: crate::engine::LockTiming,
    store: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<hns_store::Store>>>,
}

/// The store's commits and disk syncs, read at scrape time (fewer syncs than durable commits
/// means requests shared them).
#[derive(Debug, Clone)]
struct StoreCounters(std::sync::Arc<std::sync::OnceLock<std::sync::Arc<hns_store::Store>>>);

impl Collector for StoreCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(store) = self.0.get() else { return Ok(()) };
        for (name, help, value) in [
            ("store_commits", "Store transactions committed (lazy ones included) since hnsd started", store.commits()),
            ("store_disk_syncs", "Times the store synced the disk since hnsd started; durable commits that come together share one", store.disk_syncs()),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new(host: hns_kernel::netlink::Netlink) -> Metrics {
        let mut registry = Registry::with_prefix("hns");
        let requests = Family::<RequestLabels, Counter>::default();
        // 1 ms to about 16 s: a list is sub-millisecond, an attach tens of milliseconds, an
        // overlay create may wait for etcd.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        let reconcile_passes = Counter::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let repairs = Family::<KindLabels, Counter>::default();
        let watch_events = Family::<WatchLabels, Counter>::default();
        // 100 us to about 3 s.
        let watch_lag = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        let scraped = Scraped::default();
        registry.register(
            "api_requests",
            "API requests by route template, method and HTTP status code",
            requests.clone(),
        );
        registry.register_with_unit(
            "api_request_duration",
            "API request latency by route template",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register(
            "reconcile_passes",
            "Reconcile passes (at start and periodic)",
            reconcile_passes.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of reconcile passes",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_repairs",
            "Reconcile findings by kind: repaired (kernel state rebuilt), removed (orphan removed), collected (garbage-collected), error",
            repairs.clone(),
        );
        registry.register("cluster_watch_events", "Cluster (etcd) watch events applied, by kind", watch_events.clone());
        registry.register_with_unit(
            "cluster_watch_lag",
            "Time from a cluster watch event's arrival from etcd to its application on this host",
            Unit::Seconds,
            watch_lag.clone(),
        );
        registry.register("events", "Events published (see GET /events), by type, action and outcome: DHCP renewals, node losses, refusals ...", scraped.events.clone());
        registry.register("etcd_errors", "Failed etcd operations (errors and timeouts), by operation", scraped.etcd_errors.clone());
        registry.register("networks", "Networks by driver", scraped.networks.clone());
        registry.register(
            "endpoints",
            "Endpoints by network name",
            scraped.endpoints.clone(),
        );
        registry.register(
            "namespaces",
            "Compartments (network namespaces)",
            scraped.namespaces.clone(),
        );
        registry.register(
            "dhcp_leases",
            "DHCP leases held for endpoints, by address family",
            scraped.leases.clone(),
        );
        registry.register(
            "lb_backend_connections",
            "New connections a load balancer sent to each backend (nft counters; a backend's count starts when it joins)",
            scraped.lb_backend_connections.clone(),
        );
        registry.register(
            "acl_rule_packets",
            "Packets each ACL rule of an endpoint matched (nft counters; a rule's count starts when the endpoint's rules are written)",
            scraped.acl_rule_packets.clone(),
        );
        registry.register("dns_queries", "DNS responder queries by result (local, forwarded, cache_hit (part of forwarded), failed, dropped)", scraped.dns_queries.clone());
        registry.register_collector(Box::new(scraped.traffic.clone()));
        let lock_timing = crate::engine::LockTiming::default();
        registry.register_with_unit(
            "engine_lock_wait",
            "Time a request waited for the engine's lock (held only for validation, allocation and the commit; kernel, disk and network steps run without it)",
            Unit::Seconds,
            lock_timing.wait.clone(),
        );
        registry.register_with_unit("engine_lock_held", "Time the engine's lock was held each time it was taken", Unit::Seconds, lock_timing.held.clone());
        let store = std::sync::Arc::new(std::sync::OnceLock::new());
        registry.register_collector(Box::new(StoreCounters(store.clone())));
        Metrics {
            registry,
            requests,
            latency,
            reconcile_passes,
            reconcile_duration,
            repairs,
            watch_events,
            watch_lag,
            scraped,
            last: tokio::sync::Mutex::new(None),
            last_len: std::sync::atomic::AtomicUsize::new(0),
            host,
            lock_timing,
            store,
        }
    }

    /// The histograms the engine's lock fills ([`crate::engine::EngineLock::new`]).
    pub fn lock_timing(&self) -> crate::engine::LockTiming {
        self.lock_timing.clone()
    }

    /// The store whose counters scrapes show.
    pub fn watch_store(&self, store: std::sync::Arc<hns_store::Store>) {
        let _ = self.store.set(store);
    }

    /// Counts one reconcile pass and its findings.
    pub fn reconciled(&self, report: &Report, took: Duration) {
        self.reconcile_passes.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
        self.found(report);
    }

    /// Counts the findings of a repair, by a pass or by a link notification.
    pub fn found(&self, report: &Report) {
        for (kind, n) in [
            ("repaired", report.repaired.len()),
            ("removed", report.removed.len()),
            ("collected", report.collected.len()),
            ("error", report.errors.len()),
        ] {
            self.repairs
                .get_or_create(&KindLabels { kind })
                .inc_by(n as u64);
        }
    }

    /// A cluster watch event of `kind` applied `took` after it arrived.
    pub fn watch_applied(&self, kind: &'static str, took: Duration) {
        self.watch_events.get_or_create(&WatchLabels { kind }).inc();
        self.watch_lag.observe(took.as_secs_f64());
    }

    /// The text of one scrape.
    pub async fn encode(&self, engine: &crate::engine::EngineLock, events: &crate::events::Bus) -> String {
        let mut last = self.last.lock().await;
        // An operation in flight may hold the engine for a while (kernel steps, etcd): serve
        // the previous figures rather than wait. The first scrape has none, so it waits once.
        let held = match engine.try_lock() {
            Ok(e) => Held::of(&e),
            Err(_) => match last.as_ref() {
                Some(held) => held.clone(),
                None => Held::of(&*engine.lock().await),
            },
        };
        *last = Some(held.clone());
        let inv = Inventory::of(&engine.views(), held);
        let links = match self.host.link_counters().await {
            Ok(l) => l.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: could not read link counters");
                std::collections::HashMap::new()
            }
        };
        // Only with load balancers: one `nft` run per scrape.
        let hits = if inv.held.lb_backends.is_empty() {
            Default::default()
        } else {
            match tokio::task::spawn_blocking(hns_kernel::nft_lb::backend_hits).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "metrics: could not read the load balancers' counters");
                    Default::default()
                }
                Err(_) => Default::default(),
            }
        };
        // Only with ACLs: one rule dump of each ACL table.
        let acl_hits = if inv.held.acl_rules.is_empty() {
            Default::default()
        } else {
            match tokio::task::spawn_blocking(hns_kernel::nft_acl::rule_hits).await {
                Ok(Ok(h)) => h.into_iter().map(|(comment, packets, _)| (comment, packets)).collect(),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "metrics: could not read the ACL rules' counters");
                    Default::default()
                }
                Err(_) => Default::default(),
            }
        };
        self.fill(&inv, &links, &hits, &acl_hits);
        let s = &self.scraped;
        for ((kind, action, outcome), n) in events.counts() {
            store(&s.events, &EventLabels { kind, action, outcome }, n);
        }
        for (op, n) in hns_cluster::etcd_errors() {
            store(&s.etcd_errors, &OpLabels { op }, n);
        }
        let len = self.last_len.load(std::sync::atomic::Ordering::Relaxed);
        let mut out = String::with_capacity(len + len / 8);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        self.last_len
            .store(out.len(), std::sync::atomic::Ordering::Relaxed);
        out
    }

    fn fill(
        &self,
        inv: &Inventory,
        links: &std::collections::HashMap<String, hns_kernel::netlink::LinkCounters>,
        hits: &std::collections::HashMap<u32, u64>,
        acl_hits: &std::collections::HashMap<String, u64>,
    ) {
        let s = &self.scraped;
        s.lb_backend_connections.clear();
        for (mark, labels) in &inv.held.lb_backends {
            store(&s.lb_backend_connections, labels, hits.get(mark).copied().unwrap_or(0));
        }
        // Added, not stored: rules without an Id at the same priority, action and direction
        // (e.g. one of each scope) share a series.
        s.acl_rule_packets.clear();
        for (comment, labels) in &inv.held.acl_rules {
            s.acl_rule_packets.get_or_create(labels).inc_by(acl_hits.get(comment).copied().unwrap_or(0));
        }
        s.networks.clear();
        for (driver, n) in &inv.networks {
            s.networks
                .get_or_create(&DriverLabels {
                    driver: driver.clone(),
                })
                .set(*n);
        }
        s.endpoints.clear();
        for (network, n) in &inv.endpoints {
            s.endpoints
                .get_or_create(&NetworkLabels {
                    network: network.clone(),
                })
                .set(*n);
        }
        s.namespaces.set(inv.namespaces);
        s.leases
            .get_or_create(&FamilyLabels { family: "ipv4" })
            .set(inv.held.leases_v4);
        s.leases
            .get_or_create(&FamilyLabels { family: "ipv6" })
            .set(inv.held.leases_v6);
        let d = &inv.held.dns;
        for (result, v) in [
            ("local", d.answered_local),
            ("forwarded", d.forwarded),
            ("cache_hit", d.cache_hits),
            ("failed", d.failed),
            ("dropped", d.dropped),
        ] {
            store(&s.dns_queries, &ResultLabels { result }, v);
        }
        let rows = inv
            .veths
            .iter()
            .filter_map(|(veth, labels)| Some((labels.clone(), *links.get(veth)?)))
            .collect();
        *s.traffic.rows.lock().unwrap_or_else(|e| e.into_inner()) = rows;
    }
}

/// Sets a counter that something else counts (the kernel, the DNS service) to its value.
fn store<L: EncodeLabelSet + Clone + Eq + std::hash::Hash>(
    family: &Family<L, Counter>,
    labels: &L,
    value: u64,
) {
    family
        .get_or_create(labels)
        .inner()
        .store(value, std::sync::atomic::Ordering::Relaxed);
}

/// Router layer: counts each request by its route template (not the raw path, which holds
/// IDs) and times it.
pub async fn track(State(m): State<std::sync::Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = match req.extensions().get::<MatchedPath>() {
        // Every route also answers with a trailing slash: one series for both.
        Some(p) => p
            .as_str()
            .strip_suffix('/')
            .filter(|s| !s.is_empty())
            .unwrap_or(p.as_str())
            .to_owned(),
        None => "unmatched".to_owned(),
    };
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    m.latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            route,
            method,
            code: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// `GET /metrics`.
pub async fn serve(State(s): State<Shared>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        s.metrics.encode(&s.engine, &s.events).await,
    )
        .into_response()
}

/// The optional TCP listener (`--metrics-listen`): `/metrics` only, nothing of the API.
pub async fn listen(
    addr: std::net::SocketAddr,
    state: Shared,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics-listen {addr}: bind"))?;
    tracing::info!(%addr, "serving /metrics on TCP");
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(serve))
        .with_state(state);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    }))
}
