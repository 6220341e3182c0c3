//! [`Cluster`]: the connection to etcd and the few primitives every other module uses (a
//! timed call, a consistent prefix read, a transaction), so timeouts and error mapping live in
//! one place.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, Txn, TxnResponse};
use serde::de::DeserializeOwned;

use crate::config::{ClusterConfig, normalize_endpoints};
use crate::error::{ClusterError, Result};
use crate::nodes::LocalNode;

/// gRPC keepalive pings on open streams (watch, lease keepalive), so a silently dead member
/// (no RST, e.g. a partition) is noticed. etcd closes connections that ping more often than
/// every 5 s (`--grpc-keepalive-min-time`) or that ping while no stream is open, hence 10 s
/// and no idle pings.
const GRPC_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(5));

/// Pause before retrying a request that failed for transport reasons on another endpoint.
const FAILOVER_PAUSE: Duration = Duration::from_millis(50);

/// A handle on the hns cluster store. Cheap to clone; all clones share one connection and one
/// node registration.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    /// The endpoints as shown in messages.
    pub(crate) shown: String,
    pub(crate) request_timeout: Duration,
    pub(crate) endpoint_count: usize,
    /// This host's node registration, set by `register_node`.
    pub(crate) local: Mutex<Option<Arc<LocalNode>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("endpoints", &self.inner.shown).finish()
    }
}

impl Cluster {
    /// Connects and checks that etcd answers within `dial_timeout`. Fails with
    /// [`ClusterError::Unreachable`] naming the endpoints otherwise, so a daemon started with a
    /// wrong address says so in about two seconds instead of hanging.
    pub async fn connect(cfg: ClusterConfig) -> Result<Cluster> {
        let urls = normalize_endpoints(&cfg.endpoints, cfg.tls.is_some())?;
        let shown = urls.join(",");
        let options = ConnectOptions::new()
            .with_connect_timeout(cfg.dial_timeout)
            .with_timeout(cfg.request_timeout)
            .with_keep_alive(GRPC_KEEPALIVE.0, GRPC_KEEPALIVE.1)
            .with_keep_alive_while_idle(false);
        let options = with_tls(options, &cfg)?;
        let connect = Client::connect(urls.clone(), Some(options));
        let mut client = match tokio::time::timeout(cfg.dial_timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(ClusterError::from_etcd(&shown, "connect", e)),
            Err(_) => return Err(ClusterError::timeout(&shown, "connect", cfg.dial_timeout)),
        };
        // The channel connects lazily: ask for something to learn whether anyone answers. With
        // several endpoints a refused one must not end the attempt while others may answer.
        let deadline = tokio::time::Instant::now() + cfg.dial_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = match tokio::time::timeout(left, client.status()).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => ClusterError::from_etcd(&shown, "connect", e),
                Err(_) => return Err(ClusterError::timeout(&shown, "connect", cfg.dial_timeout)),
            };
            if !(e.is_unreachable() && urls.len() > 1 && left > FAILOVER_PAUSE * 2) {
                return Err(e);
            }
            tokio::time::sleep(FAILOVER_PAUSE).await;
        }
        Ok(Cluster {
            inner: Arc::new(Inner { client, shown, request_timeout: cfg.request_timeout, endpoint_count: urls.len(), local: Mutex::new(None) }),
        })
    }

    /// The etcd endpoints, as shown in messages.
    pub fn endpoints(&self) -> &str {
        &self.inner.shown
    }

    /// Runs one etcd request with the request timeout and the error mapping.
    ///
    /// With several endpoints, a request that failed for transport reasons is retried (within
    /// the same timeout): etcd-client balances requests over the endpoints without failing
    /// over, so one dead member would otherwise fail a share of all requests. Retrying is safe
    /// here because every write of this crate is idempotent or guarded by a compare that makes
    /// a repeated write fail harmlessly and report what is already there.
    pub(crate) async fn call<T, F, Fut>(&self, op: &str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let timeout = self.inner.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = match tokio::time::timeout(left, f(self.inner.client.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => ClusterError::from_etcd(&self.inner.shown, op, e),
                Err(_) => return Err(ClusterError::timeout(&self.inner.shown, op, timeout)),
            };
            if !(e.is_unreachable() && self.inner.endpoint_count > 1 && left > FAILOVER_PAUSE * 2) {
                return Err(e);
            }
            tokio::time::sleep(FAILOVER_PAUSE).await;
        }
    }

    /// Every key under `prefix` and the revision the read saw.
    pub(crate) async fn get_prefix(&self, op: &str, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let mut resp = self.call(op, |mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }).await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.take_kvs(), rev))
    }

    /// At most `limit` keys in `[from, end)`, in key order; the flag says whether more exist.
    pub(crate) async fn get_range(&self, op: &str, from: String, end: Vec<u8>, limit: i64) -> Result<(Vec<KeyValue>, bool)> {
        let mut resp = self
            .call(op, |mut c| {
                let (from, end) = (from.clone(), end.clone());
                async move { c.get(from, Some(GetOptions::new().with_range(end).with_limit(limit).with_keys_only())).await }
            })
            .await?;
        let more = resp.more();
        Ok((resp.take_kvs(), more))
    }

    /// One key, if present.
    pub(crate) async fn get_one(&self, op: &str, key: &str) -> Result<Option<KeyValue>> {
        let mut resp = self.call(op, |mut c| async move { c.get(key, None).await }).await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    pub(crate) async fn txn(&self, op: &str, txn: Txn) -> Result<TxnResponse> {
        self.call(op, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }
}

/// Decodes a JSON value, naming the key when it cannot.
pub(crate) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(kv.value()).map_err(|e| ClusterError::corrupt(kv.key(), e))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our model types serialize infallibly (no maps with non-string keys, no custom errors).
    serde_json::to_vec(value).expect("cluster objects serialize to JSON")
}

/// Bounded exponential backoff with jitter for optimistic-transaction retries: hosts that lost
/// a race do not retry in lock step.
pub(crate) async fn backoff(attempt: u32) {
    use rand::Rng;
    let cap = 2u64.saturating_pow(attempt.min(6)); // 1 .. 64 ms
    let ms = rand::rng().random_range(0..=cap);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// How many times an optimistic transaction is retried before the caller gets a conflict.
/// Every failed round means another writer succeeded, so this bounds the number of writers
/// racing on one object, not the time.
pub(crate) const MAX_TXN_ATTEMPTS: u32 = 100;

#[cfg(feature = "tls")]
fn with_tls(options: ConnectOptions, cfg: &ClusterConfig) -> Result<ConnectOptions> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let Some(files) = &cfg.tls else { return Ok(options) };
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).map_err(|e| ClusterError::invalid(format!("etcd TLS {what} {}", p.display()), e))
    };
    let ca = read(&files.ca, "CA file")?;
    let cert = read(&files.cert, "certificate file")?;
    let key = read(&files.key, "key file")?;
    let tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca)).identity(Identity::from_pem(cert, key));
    Ok(options.with_tls(tls))
}

#[cfg(not(feature = "tls"))]
fn with_tls(options: ConnectOptions, cfg: &ClusterConfig) -> Result<ConnectOptions> {
    match &cfg.tls {
        None => Ok(options),
        Some(_) => Err(ClusterError::invalid("etcd TLS settings", "this build of hns has no TLS support (crate feature `tls` of hns-cluster)")),
    }
}
