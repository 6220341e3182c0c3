//! Service-discovery DNS for hns networks.
//!
//! Every network that wants name resolution gets a UDP and a TCP listener on
//! port 53 of its gateway address(es). A query is answered from the name
//! table of the network whose listener received it, so containers only ever
//! see names of networks they are attached to (isolation by listener), and
//! only when its source lies in one of that network's subnets
//! ([`NetworkView::clients`]): anything else is dropped unanswered, so the
//! responder is neither a name oracle nor an open resolver for the LAN even
//! if a packet gets past the firewall. Names the table does not know are
//! forwarded to that network's upstream servers.
//!
//! The map of this crate:
//!
//! - `view.rs`: the name table built from a [`NetworkView`] (names with and
//!   without the DNS suffix, reverse names for every address) and its lookup.
//! - `handler.rs`: one DNS request → local answer, forwarded answer or error.
//! - `forward.rs`: the upstream client (per-server timeout, fallback to the
//!   next server, TCP retry on truncation), with `cache.rs`, the bounded
//!   answer cache in front of it.
//! - `listeners.rs`: binding sockets, hickory-server for UDP, our own bounded
//!   TCP loop.
//! - `stats.rs`: the counters behind [`DnsService::stats`].
//! - this file: [`DnsService`], which owns the per-network state and swaps a
//!   network's table atomically (`arc_swap`), so the hot path of an endpoint
//!   attach/detach never touches sockets and never drops a query.
//!
//! Why in-process and why swap instead of reload: the pain points of other
//! container DNS servers are names resolving late (config files + signals),
//! queries dropped while sockets are re-bound on reload, "Server failed" when
//! the upstream is slow, and a 5 s per-upstream timeout that equals the
//! client's own timeout so fallback never helps. Here a view change is one
//! pointer swap, listeners are only added/removed when the set of listen
//! addresses changes, and upstreams get 500 ms each by default.
//!
//! For the daemon:
//! - Listen addresses are bound with `IP_FREEBIND`, so `set_network` succeeds
//!   even before the gateway address is on the bridge (or while an IPv6
//!   address is still in duplicate address detection); queries arrive once
//!   the address is up. A bind error therefore means a real conflict: some
//!   other server holds that address and port, or a wildcard socket on the
//!   port (e.g. a dnsmasq without `--bind-interfaces`).
//! - Linux accepts a packet for any local address on any interface, so
//!   network B's containers, the LAN and external networks can all reach
//!   network A's gateway address. The source check above is the second
//!   layer; the first is the firewall, which drops port 53 to a responder
//!   address unless it arrives on that network's own bridge, for both
//!   families (`hns_kernel::nft`: `iifname . ip daddr` / `ip6 daddr` sets).
//! - Upstreams are reached from the daemon's own network namespace, so the
//!   host's resolvers work as upstreams, including a stub on 127.0.0.53.
//!   Never list one of our own listen addresses as an upstream (a loop that
//!   only the forwarding bound stops).
//! - hickory-server logs every UDP query at `info` (target `hickory_server`);
//!   filter that target to `warn` in the daemon's subscriber.

mod cache;
mod forward;
mod handler;
mod listeners;
mod stats;
mod view;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tokio::sync::{Mutex, Semaphore};

pub use stats::DnsStats;

use forward::Forwarder;
use handler::Handler;
use listeners::Listener;
use stats::Counters;
use view::NameTable;

/// Tunables of the responder. The defaults are what the daemon uses.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// How long to wait for one upstream server before trying the next one.
    /// Kept far below the 5 s a client resolver waits in total, so that
    /// falling back to a second and third server still answers in time.
    pub upstream_timeout: Duration,
    /// Open TCP connections across all listeners; more are closed on accept.
    pub max_tcp_connections: usize,
    /// A TCP connection that sends no complete query (or does not read its
    /// answer) for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Upstream answers kept in the cache (0 disables caching).
    pub max_cache_entries: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            upstream_timeout: Duration::from_millis(500),
            max_tcp_connections: 64,
            tcp_idle_timeout: Duration::from_secs(5),
            max_cache_entries: 4096,
        }
    }
}

/// One network's view: the names it can see and where everything else goes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkView {
    /// DNS suffix, e.g. "corp.example": names answer both bare and as `name.suffix`.
    pub suffix: Option<String>,
    /// Endpoints of this network.
    pub records: Vec<Record>,
    /// Forwarders, tried in this order.
    pub upstreams: Vec<SocketAddr>,
    /// Source prefixes served: the network's subnets. A query from any other
    /// source is dropped without an answer (not even REFUSED, which a spoofed
    /// source would turn into a reflection). Empty: nobody is served.
    pub clients: Vec<IpNet>,
}

/// A name and its addresses. Several records may share a name (aliases of
/// one endpoint, or one name on several endpoints) and a name may have IPv4
/// and IPv6 addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub name: String,
    pub addrs: Vec<IpAddr>,
}

/// Errors of the DNS service; each message names the network and the value.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(
        "DNS: network {net_id:?} is not known to the DNS service; call set_network before update_view"
    )]
    UnknownNetwork { net_id: String },
    #[error("DNS: suffix {suffix:?} of network {net_id:?} is not a valid domain name: {reason}")]
    InvalidSuffix {
        net_id: String,
        suffix: String,
        reason: String,
    },
    #[error(
        "DNS: listen address {addr} of network {net_id:?} is already served for network {owner:?}"
    )]
    AddressTaken {
        net_id: String,
        addr: SocketAddr,
        owner: String,
    },
    #[error(
        "DNS: cannot listen on {proto} {addr} for network {net_id:?}: {source} (is another DNS server bound to this address or to the wildcard address on this port?)"
    )]
    Bind {
        net_id: String,
        addr: SocketAddr,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What every listener shares: configuration, the forwarder with its cache,
/// counters and the TCP connection budget.
pub(crate) struct Shared {
    pub cfg: DnsConfig,
    pub forwarder: Forwarder,
    pub stats: Counters,
    pub tcp_slots: Arc<Semaphore>,
}

/// The part of a network the request path reads: only its current table.
pub(crate) struct Network {
    pub table: ArcSwap<NameTable>,
}

/// The DNS responder of the daemon: a set of networks, each with listeners
/// and a name table that can be replaced at any time.
pub struct DnsService {
    shared: Arc<Shared>,
    /// Tables by network id. A std lock (not async) because `update_view` is
    /// synchronous; it is held only to clone an `Arc`, never across I/O.
    networks: RwLock<HashMap<String, Arc<Network>>>,
    /// Listeners by network id and address. An async mutex because adding and
    /// removing listeners awaits; it serialises `set_network`/`remove_network`
    /// but is never taken on the query path or by `update_view`.
    listeners: Mutex<HashMap<String, HashMap<SocketAddr, Listener>>>,
}

impl DnsService {
    /// Creates the service with no networks. Nothing runs yet: listeners are
    /// spawned by `set_network` on the tokio runtime it is awaited on.
    pub fn new(cfg: DnsConfig) -> DnsService {
        let shared = Shared {
            forwarder: Forwarder::new(
                cfg.upstream_timeout,
                cfg.max_cache_entries,
                forward::MAX_IN_FLIGHT,
            ),
            stats: Counters::default(),
            tcp_slots: Arc::new(Semaphore::new(cfg.max_tcp_connections)),
            cfg,
        };
        DnsService {
            shared: Arc::new(shared),
            networks: RwLock::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
        }
    }

    /// Starts (or keeps) UDP+TCP listeners on port `port` (53 in production,
    /// any in tests) of each address in `listen` for network `net_id`, and
    /// atomically replaces the network's view.
    ///
    /// Calling it again with the same listen addresses only swaps the view (no
    /// socket is re-bound, no query is dropped). New addresses get listeners,
    /// vanished ones are closed. All new sockets are bound before anything
    /// changes: on error the network is left exactly as it was.
    pub async fn set_network(
        &self,
        net_id: &str,
        listen: &[IpAddr],
        port: u16,
        view: NetworkView,
    ) -> Result<(), DnsError> {
        let table = Arc::new(NameTable::build(net_id, &view)?);
        let mut wanted: Vec<SocketAddr> =
            listen.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        wanted.sort();
        wanted.dedup();

        let mut all = self.listeners.lock().await;
        for (owner, theirs) in all.iter().filter(|(owner, _)| owner.as_str() != net_id) {
            if let Some(addr) = wanted.iter().find(|a| theirs.contains_key(a)) {
                return Err(DnsError::AddressTaken {
                    net_id: net_id.into(),
                    addr: *addr,
                    owner: owner.clone(),
                });
            }
        }
        let existing = self
            .networks
            .read()
            .expect("dns network map poisoned")
            .get(net_id)
            .cloned();
        let network = existing.unwrap_or_else(|| {
            Arc::new(Network {
                table: ArcSwap::from(table.clone()),
            })
        });

        let mine = all.get(net_id);
        let mut bound = Vec::new();
        for addr in wanted
            .iter()
            .filter(|a| !mine.is_some_and(|m| m.contains_key(a)))
        {
            // Dropping `bound` on error closes what this call opened.
            bound.push((*addr, listeners::bind(net_id, *addr)?));
        }

        // Commit: table first, so the first query on a new listener sees it.
        network.table.store(table);
        self.networks
            .write()
            .expect("dns network map poisoned")
            .insert(net_id.to_string(), network.clone());
        let mine = all.entry(net_id.to_string()).or_default();
        for (addr, sockets) in bound {
            let handler = Handler::new(network.clone(), self.shared.clone());
            mine.insert(addr, Listener::start(sockets, handler, &self.shared));
        }
        let gone: Vec<SocketAddr> = mine
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(listener) = mine.remove(&addr) {
                listener.stop().await;
            }
        }
        Ok(())
    }

    /// Whether the network's responder listens on exactly `listen` (at `port`): none at all
    /// when `listen` is empty. Lets a caller skip a [`DnsService::set_network`] (whose view
    /// costs a walk over the network's endpoints) that would change nothing.
    pub async fn serves(&self, net_id: &str, listen: &[IpAddr], port: u16) -> bool {
        let all = self.listeners.lock().await;
        let have = all.get(net_id);
        let mut wanted: Vec<SocketAddr> = listen.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        wanted.sort();
        wanted.dedup();
        have.map_or(0, HashMap::len) == wanted.len() && wanted.iter().all(|a| have.is_some_and(|m| m.contains_key(a)))
    }

    /// Swaps only the view of a network: the hot path, called on every
    /// endpoint attach/detach. Builds the new table (linear in the view's
    /// size) and publishes it with one atomic pointer swap; queries in flight
    /// finish on the old table, the next one sees the new table.
    pub fn update_view(&self, net_id: &str, view: NetworkView) -> Result<(), DnsError> {
        let network = self
            .networks
            .read()
            .expect("dns network map poisoned")
            .get(net_id)
            .cloned()
            .ok_or_else(|| DnsError::UnknownNetwork {
                net_id: net_id.into(),
            })?;
        network
            .table
            .store(Arc::new(NameTable::build(net_id, &view)?));
        Ok(())
    }

    /// Closes the network's listeners and forgets its view. Unknown networks
    /// are ignored (removal is idempotent).
    pub async fn remove_network(&self, net_id: &str) {
        // Held until the sockets are closed, so a concurrent set_network for
        // the same addresses cannot race with the close.
        let mut all = self.listeners.lock().await;
        self.networks
            .write()
            .expect("dns network map poisoned")
            .remove(net_id);
        for (_, listener) in all.remove(net_id).into_iter().flatten() {
            listener.stop().await;
        }
    }

    /// Counters since the service was created.
    pub fn stats(&self) -> DnsStats {
        self.shared.stats.snapshot()
    }
}
