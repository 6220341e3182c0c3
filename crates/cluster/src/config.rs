//! How to reach etcd: endpoints, optional client-certificate TLS, timeouts.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{ClusterError, Result};

/// Connection settings of a [`crate::Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd client URLs: `http://IP:PORT`, `https://IP:PORT`, or bare `IP:PORT` (http, or
    /// https when `tls` is set).
    pub endpoints: Vec<String>,
    /// Client-certificate TLS. Needs the crate feature `tls`.
    pub tls: Option<TlsFiles>,
    /// How long `connect` waits for a first answer before it reports etcd unreachable.
    pub dial_timeout: Duration,
    /// Upper bound of every single request (and of every retry round of a transaction).
    pub request_timeout: Duration,
}

impl ClusterConfig {
    /// Plain-HTTP settings with the default timeouts (2 s dial, 5 s per request).
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> ClusterConfig {
        ClusterConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: None,
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// PEM files for mutual TLS with etcd (`--trusted-ca-file`, `--cert-file`, `--key-file` on the
/// etcd side with `--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA that signed etcd's server certificate.
    pub ca: PathBuf,
    /// This host's client certificate.
    pub cert: PathBuf,
    /// The key of `cert`.
    pub key: PathBuf,
}

/// Turns the configured endpoints into full URLs, refusing what cannot work (empty list, a
/// scheme other than http/https, https without TLS files or the other way round).
pub(crate) fn normalize_endpoints(endpoints: &[String], tls: bool) -> Result<Vec<String>> {
    if endpoints.is_empty() {
        return Err(ClusterError::invalid("etcd endpoints", "the list is empty"));
    }
    let scheme = if tls { "https://" } else { "http://" };
    endpoints
        .iter()
        .map(|e| {
            let e = e.trim().trim_end_matches('/');
            if e.is_empty() {
                return Err(ClusterError::invalid("etcd endpoint", "empty string"));
            }
            let url = if let Some((s, rest)) = e.split_once("://") {
                match s {
                    "http" | "https" if format!("{s}://") == scheme => format!("{s}://{rest}"),
                    "http" | "https" => {
                        let want = if tls { "https (TLS files are configured)" } else { "http (no TLS files are configured)" };
                        return Err(ClusterError::invalid(format!("etcd endpoint {e}"), format!("scheme must be {want}")));
                    }
                    other => return Err(ClusterError::invalid(format!("etcd endpoint {e}"), format!("unknown scheme {other:?}"))),
                }
            } else {
                format!("{scheme}{e}")
            };
            // host:port must be present: etcd has no default client port worth guessing.
            let authority = url.split_once("://").map(|(_, a)| a).unwrap_or_default();
            if !authority.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) {
                return Err(ClusterError::invalid(format!("etcd endpoint {e}"), "expected IP:PORT or http://IP:PORT"));
            }
            Ok(url)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(e: &[&str], tls: bool) -> Result<Vec<String>> {
        normalize_endpoints(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>(), tls)
    }

    #[test]
    fn bare_endpoints_get_the_scheme_of_the_tls_setting() {
        assert_eq!(n(&["10.0.0.1:2379"], false).unwrap(), ["http://10.0.0.1:2379"]);
        assert_eq!(n(&["10.0.0.1:2379"], true).unwrap(), ["https://10.0.0.1:2379"]);
        assert_eq!(n(&["http://[fd00::1]:2379/"], false).unwrap(), ["http://[fd00::1]:2379"]);
    }

    #[test]
    fn mismatched_or_malformed_endpoints_are_refused() {
        assert!(n(&[], false).is_err());
        assert!(n(&["https://10.0.0.1:2379"], false).unwrap_err().to_string().contains("http (no TLS"));
        assert!(n(&["http://10.0.0.1:2379"], true).is_err());
        assert!(n(&["ftp://10.0.0.1:2379"], false).is_err());
        assert!(n(&["10.0.0.1"], false).unwrap_err().to_string().contains("IP:PORT"));
    }
}
