//! One error type for the cluster layer. Every variant names the object and, where it helps,
//! the other party (the network whose subnet overlaps, the endpoints that still use a network),
//! so the daemon can pass the message to the user unchanged.

use std::time::Duration;

/// What went wrong in a cluster operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// No etcd endpoint answered in time, or the connection failed. Retrying later may work.
    #[error("etcd is unreachable at {endpoints} ({op}): {reason}")]
    Unreachable { endpoints: String, op: String, reason: String },

    /// The request collides with an existing object (duplicate name or id, overlapping subnet,
    /// VNI or address already taken, ...). `what` names both sides.
    #[error("conflict: {what}")]
    Conflict { what: String },

    /// The object does not exist.
    #[error("not found: {what}")]
    NotFound { what: String },

    /// The object is still used by others; `holders` names each of them.
    #[error("{what} is in use by {}", holders.join(", "))]
    InUse { what: String, holders: Vec<String> },

    /// No free value is left (addresses of a subnet, VNIs).
    #[error("exhausted: {what}")]
    Exhausted { what: String },

    /// A node cannot be removed while its lease is alive: its hnsd would publish it again.
    #[error(
        "node {node} is still alive (its lease {lease_id:x} expires in {ttl_secs} s unless renewed); \
         stop hnsd on that host and wait for the lease to expire before removing it"
    )]
    NodeAlive { node: String, lease_id: i64, ttl_secs: i64 },

    /// Bad input, refused before anything was written.
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },

    /// An operation that needs this host's node registration ran before `register_node`.
    #[error("this host has not registered as a cluster node yet (call register_node first): {op}")]
    NotRegistered { op: String },

    /// A value stored in etcd could not be decoded (written by something else, or corrupted).
    #[error("cannot decode {key}: {reason}")]
    Corrupt { key: String, reason: String },

    /// etcd answered with an error that is none of the above.
    #[error("etcd refused {op}: {reason}")]
    Etcd { op: String, reason: String },
}

impl ClusterError {
    /// True when the error means etcd could not be reached (the daemon keeps its local state
    /// and retries; nothing was decided).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClusterError::Unreachable { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ClusterError::NotFound { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, ClusterError::Conflict { .. })
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        ClusterError::Invalid { what: what.into(), reason: reason.to_string() }
    }

    pub(crate) fn conflict(what: impl Into<String>) -> Self {
        ClusterError::Conflict { what: what.into() }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        ClusterError::NotFound { what: what.into() }
    }

    pub(crate) fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> Self {
        ClusterError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: reason.to_string() }
    }

    /// Maps an etcd client error of operation `op`. Transport failures, and the gRPC codes a
    /// client sees while no member can serve (unavailable, deadline exceeded, cancelled by a
    /// broken connection), become [`ClusterError::Unreachable`].
    pub(crate) fn from_etcd(endpoints: &str, op: &str, e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        count_error(op);
        let unreachable = match &e {
            E::TransportError(_) | E::IoError(_) => true,
            // gRPC status codes are wire constants: 1 cancelled, 2 unknown, 4 deadline exceeded,
            // 14 unavailable. tonic reports a connection that broke mid-call as "unknown" with a
            // transport message, so that one counts only with such a message.
            E::GRpcStatus(s) => match s.code() as i32 {
                1 | 4 | 14 => true,
                2 => {
                    let m = s.message().to_ascii_lowercase();
                    ["transport", "connection", "broken pipe", "h2 protocol"].iter().any(|w| m.contains(w))
                }
                _ => false,
            },
            _ => false,
        };
        let reason = match &e {
            E::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
            other => other.to_string(),
        };
        if unreachable {
            ClusterError::Unreachable { endpoints: endpoints.to_owned(), op: op.to_owned(), reason }
        } else {
            ClusterError::Etcd { op: op.to_owned(), reason }
        }
    }

    pub(crate) fn timeout(endpoints: &str, op: &str, after: Duration) -> Self {
        count_error(op);
        ClusterError::Unreachable {
            endpoints: endpoints.to_owned(),
            op: op.to_owned(),
            reason: format!("no answer within {} ms", after.as_millis()),
        }
    }
}

pub type Result<T> = std::result::Result<T, ClusterError>;

/// Failed etcd operations (errors and timeouts) since the process started, by operation: what
/// hnsd's metrics report as `hns_etcd_errors_total`. Counted where etcd's answers become
/// [`ClusterError`]s, so no call site can forget it.
static ERRORS: std::sync::Mutex<std::collections::BTreeMap<String, u64>> = std::sync::Mutex::new(std::collections::BTreeMap::new());

fn count_error(op: &str) {
    *ERRORS.lock().unwrap_or_else(|p| p.into_inner()).entry(op.to_owned()).or_default() += 1;
}

/// The counts of failed etcd operations by operation (see [`ERRORS`]).
pub fn etcd_errors() -> Vec<(String, u64)> {
    ERRORS.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
}
