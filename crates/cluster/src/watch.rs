//! The cluster view a host mirrors into its kernel: a snapshot, then changes.
//!
//! [`Cluster::watch`] starts a task that reads everything under `objects/` at one revision R,
//! hands it over as [`ClusterEvent::Snapshot`], and then streams the changes from R+1 on (an
//! etcd watch started at R+1 misses nothing and repeats nothing). Whenever that chain breaks,
//! because etcd went away, the watch was cancelled, or R+1 was compacted, the task retries
//! with backoff and starts over with a fresh snapshot. A consumer that replaces its view on
//! every snapshot and applies events in between therefore converges to etcd's state after any
//! outage, without restarting anything.

use std::pin::Pin;
use std::task::{Context, Poll};

use etcd_client::{EventType, WatchOptions};
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::Cluster;
use crate::error::ClusterError;
use crate::keys::{self, ObjectKey};
use crate::model::{ClusterEndpoint, NodeInfo, OverlayNetwork};
use crate::nodes::retry_delay;

/// Everything under `objects/` at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The etcd revision the snapshot was read at; events that follow are newer.
    pub revision: i64,
    pub nodes: Vec<NodeInfo>,
    pub networks: Vec<OverlayNetwork>,
    pub endpoints: Vec<ClusterEndpoint>,
}

/// One change of the cluster view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The whole view: replace what you had (first event, and again after every outage).
    Snapshot(Snapshot),
    NetworkPut(OverlayNetwork),
    /// `previous` is the network as it was, when etcd still had it.
    NetworkDeleted { id: String, previous: Option<OverlayNetwork> },
    EndpointPut(ClusterEndpoint),
    /// Also sent when the endpoint's node lease expired.
    EndpointDeleted { network_id: String, endpoint_id: String, previous: Option<ClusterEndpoint> },
    /// A node registered (or registered again after losing its lease).
    NodeUp(NodeInfo),
    /// A node's lease expired or was revoked.
    NodeDown { name: String, previous: Option<NodeInfo> },
    /// Informational: the watch lost etcd and is retrying. The view stays as it was until the
    /// next [`ClusterEvent::Snapshot`].
    Disconnected { reason: String },
}

/// The receiving end of [`Cluster::watch`]. Dropping it stops the watch task.
pub struct ClusterWatch {
    rx: mpsc::Receiver<ClusterEvent>,
    task: JoinHandle<()>,
}

impl ClusterWatch {
    /// The next event; `None` only if the watch task ended (it does not on its own).
    pub async fn next(&mut self) -> Option<ClusterEvent> {
        self.rx.recv().await
    }
}

impl Stream for ClusterWatch {
    type Item = ClusterEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClusterEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Events buffered between the watch task and a slow consumer; beyond that the task waits
/// (and etcd buffers on its side).
const CHANNEL: usize = 1024;

impl Cluster {
    /// Starts watching the cluster view. The first event is a [`ClusterEvent::Snapshot`], or a
    /// [`ClusterEvent::Disconnected`] when etcd cannot be reached at that moment (the snapshot
    /// then follows as soon as it can be read).
    pub fn watch(&self) -> ClusterWatch {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let task = tokio::spawn(watch_forever(self.clone(), tx));
        ClusterWatch { rx, task }
    }
}

enum Ended {
    ReceiverGone,
    /// The watch start revision was compacted away: resnapshot at once.
    Compacted,
    Failed(ClusterError),
}

async fn watch_forever(cluster: Cluster, tx: mpsc::Sender<ClusterEvent>) {
    let mut failures = 0u32;
    let mut online = true;
    loop {
        match watch_once(&cluster, &tx, &mut online, &mut failures).await {
            Ended::ReceiverGone => return,
            Ended::Compacted => {
                tracing::info!("cluster watch fell behind a compaction; taking a new snapshot");
                continue;
            }
            Ended::Failed(e) => {
                if online {
                    tracing::warn!("cluster watch lost etcd, retrying: {e}");
                    if tx.send(ClusterEvent::Disconnected { reason: e.to_string() }).await.is_err() {
                        return;
                    }
                    online = false;
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(retry_delay(failures)).await;
            }
        }
    }
}

/// One snapshot and the watch that follows it, until something breaks.
async fn watch_once(cluster: &Cluster, tx: &mpsc::Sender<ClusterEvent>, online: &mut bool, failures: &mut u32) -> Ended {
    let (kvs, revision) = match cluster.get_prefix("read cluster view", keys::OBJECTS).await {
        Ok(r) => r,
        Err(e) => return Ended::Failed(e),
    };
    let mut snapshot = Snapshot { revision, ..Snapshot::default() };
    for kv in &kvs {
        let key = String::from_utf8_lossy(kv.key());
        match decode_put(&key, kv.value()) {
            Some(ClusterEvent::NodeUp(n)) => snapshot.nodes.push(n),
            Some(ClusterEvent::NetworkPut(n)) => snapshot.networks.push(n),
            Some(ClusterEvent::EndpointPut(e)) => snapshot.endpoints.push(e),
            _ => {}
        }
    }
    let opened = cluster
        .call("watch cluster view", |mut c| async move {
            c.watch(keys::OBJECTS, Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1).with_prev_key())).await
        })
        .await;
    let mut stream = match opened {
        Ok(s) => s,
        Err(e) => return Ended::Failed(e),
    };
    if tx.send(ClusterEvent::Snapshot(snapshot)).await.is_err() {
        return Ended::ReceiverGone;
    }
    *online = true;
    *failures = 0;
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Ended::Failed(ClusterError::Unreachable {
                    endpoints: cluster.endpoints().to_owned(),
                    op: "watch cluster view".into(),
                    reason: "watch stream closed".into(),
                });
            }
            Err(e) => return Ended::Failed(ClusterError::from_etcd(cluster.endpoints(), "watch cluster view", e)),
        };
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return Ended::Compacted;
            }
            return Ended::Failed(ClusterError::Etcd { op: "watch cluster view".into(), reason: format!("watch cancelled: {}", resp.cancel_reason()) });
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key());
            let decoded = match ev.event_type() {
                EventType::Put => decode_put(&key, kv.value()),
                EventType::Delete => decode_delete(&key, ev.prev_kv().map(|p| p.value())),
            };
            if let Some(event) = decoded
                && tx.send(event).await.is_err()
            {
                return Ended::ReceiverGone;
            }
        }
    }
}

/// The event for a put of `key` with `value`; `None` for keys outside the layout or values
/// that do not decode (logged: one bad value must not stop the view of everything else).
pub(crate) fn decode_put(key: &str, value: &[u8]) -> Option<ClusterEvent> {
    fn parse<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
        serde_json::from_slice(value).map_err(|e| tracing::warn!(key, "ignoring undecodable cluster object: {e}")).ok()
    }
    match keys::parse_object(key)? {
        ObjectKey::Node(_) => parse(key, value).map(ClusterEvent::NodeUp),
        ObjectKey::Network(_) => parse(key, value).map(ClusterEvent::NetworkPut),
        ObjectKey::Endpoint { .. } => parse(key, value).map(ClusterEvent::EndpointPut),
    }
}

/// The event for a delete of `key`; `previous` is the value before the delete when etcd had it.
pub(crate) fn decode_delete(key: &str, previous: Option<&[u8]>) -> Option<ClusterEvent> {
    fn prev<T: serde::de::DeserializeOwned>(v: Option<&[u8]>) -> Option<T> {
        v.and_then(|v| serde_json::from_slice(v).ok())
    }
    Some(match keys::parse_object(key)? {
        ObjectKey::Node(name) => ClusterEvent::NodeDown { name: name.to_owned(), previous: prev(previous) },
        ObjectKey::Network(id) => ClusterEvent::NetworkDeleted { id: id.to_owned(), previous: prev(previous) },
        ObjectKey::Endpoint { network, endpoint } => {
            ClusterEvent::EndpointDeleted { network_id: network.to_owned(), endpoint_id: endpoint.to_owned(), previous: prev(previous) }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::encode;

    #[test]
    fn puts_and_deletes_map_to_events() {
        let node = NodeInfo { name: "host-a".into(), vtep: "10.99.0.1".parse().unwrap() };
        assert_eq!(decode_put(&keys::node("host-a"), &encode(&node)), Some(ClusterEvent::NodeUp(node.clone())));
        assert_eq!(
            decode_delete(&keys::node("host-a"), Some(&encode(&node))),
            Some(ClusterEvent::NodeDown { name: "host-a".into(), previous: Some(node) })
        );
        assert_eq!(
            decode_delete(&keys::endpoint("n1", "e1"), None),
            Some(ClusterEvent::EndpointDeleted { network_id: "n1".into(), endpoint_id: "e1".into(), previous: None })
        );
        assert_eq!(decode_delete(&keys::network("n1"), None), Some(ClusterEvent::NetworkDeleted { id: "n1".into(), previous: None }));
    }

    #[test]
    fn foreign_keys_and_bad_values_are_skipped() {
        assert_eq!(decode_put("/hns/v1/objects/unknown/x", b"{}"), None);
        assert_eq!(decode_put(&keys::network("n1"), b"not json"), None);
        assert_eq!(decode_delete("/hns/v1/alloc/vnis/00004096", None), None);
    }
}
