//! The web view (`--web-listen ADDR`): a live, read-only picture of the host on a TCP address.
//!
//! `/` serves one page (index.html, app.js, app.css, built into the binary: nothing to
//! download or build at install time) that draws the host and lists every object. The page
//! reads the API under `/api/`: the API's own router, nested, behind [`read_only`], which
//! refuses every method but GET and HEAD with 405 before any handler runs. It follows
//! `/api/events` (newline-delimited JSON) to refresh itself, polls when that stream is absent,
//! and polls `/api/metrics` for traffic rates.
//!
//! No authentication: whoever reaches the address reads the host's whole network
//! configuration. Keep it on loopback or a management network.
//!
//! DNS rebinding: a page on any web site could make a browser on this machine resolve the
//! site's own name to 127.0.0.1 and read the view as "same origin". The browser still sends the
//! site's name in `Host`, so [`known_host`] answers only to an IP address, `localhost` or this
//! machine's own name, and refuses every other name with 403.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hns_api::{ApiError, ErrorCode};

use crate::api::{Failure, Shared};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The page's own files may load only from this origin (no CDN, no inline script).
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The web view's routes: the page, its assets, and the API read-only under `/api`.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route("/index.html", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route("/app.js", get(|| asset("text/javascript; charset=utf-8", APP_JS)))
        .route("/app.css", get(|| asset("text/css; charset=utf-8", APP_CSS)))
        .nest("/api", crate::api::router(state))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(read_only))
        // Outermost: a request under a foreign name (DNS rebinding) reaches nothing.
        .layer(axum::middleware::from_fn(known_host))
}

/// Whether `host` (a `Host` header: a name or address, with or without a port) names this
/// machine without a DNS name anyone else controls.
fn host_allowed(host: &str, own_name: Option<&str>) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        match rest.split_once(']') {
            Some((addr, _)) => return addr.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        host.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" || name.ends_with(".localhost") || own_name.is_some_and(|own| !own.is_empty() && name == own.to_ascii_lowercase())
}

/// Refuses requests whose `Host` is not this machine (403, naming the host and what is allowed).
pub async fn known_host(req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
    let own = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok());
    if host_allowed(&host, own.as_deref()) {
        return next.run(req).await;
    }
    let msg = format!(
        "the web view answers only to an IP address, localhost or this machine's name{} in the Host header, not {host:?} (a guard against DNS rebinding); open it by address, e.g. http://127.0.0.1:PORT/",
        own.as_deref().map(|o| format!(" ({o})")).unwrap_or_default()
    );
    let mut resp = Failure(ApiError::new(ErrorCode::HostNotAllowed, msg)).into_response();
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // A new hnsd may serve a new page: revalidate rather than run a stale one.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Failure {
    Failure(ApiError::new(ErrorCode::NotFound, format!("no such page: {uri}; the web view is at / and the API under /api/")))
}

/// Refuses every method but GET and HEAD (405, with `Allow` and an API error body).
pub async fn read_only(req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let msg = format!(
        "the web view is read-only: {} is not allowed on {}; change things through the API socket (hnsctl)",
        req.method(),
        req.uri()
    );
    let mut resp = Failure(ApiError::new(ErrorCode::MethodNotAllowed, msg)).into_response();
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

/// Binds `addr` and serves the web view with the API socket's connection limits.
pub async fn listen(addr: std::net::SocketAddr, state: Shared, limits: crate::serve::Limits) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("web-listen {addr}: bind"))?;
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(url = %format!("http://{addr}/"), "serving the read-only web view (no authentication: keep it on loopback or a management network)");
    let app = router(state);
    Ok(tokio::spawn(async move {
        crate::serve::Server::new(limits).serve(listener, app, std::future::pending()).await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_localhost_and_the_own_name_are_served() {
        for ok in ["127.0.0.1:8080", "127.0.0.1", "192.0.2.7:80", "[::1]:8080", "[fd00::1]", "localhost:8080", "LOCALHOST", "app.localhost:1", "node-1:8080", "Node-1.", "node-1"] {
            assert!(host_allowed(ok, Some("node-1")), "{ok} refused");
        }
        for bad in ["", "evil.example", "evil.example:8080", "127.0.0.1.evil.example", "[::1", "[evil]:80", "node-1.evil.example", "localhost.evil.example"] {
            assert!(!host_allowed(bad, Some("node-1")), "{bad} allowed");
        }
        assert!(!host_allowed("node-1", None) && !host_allowed("", Some("")), "no own name: names are refused");
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        for f in ["/app.js", "/app.css"] {
            assert!(INDEX_HTML.contains(&format!("\"{f}\"")), "index.html does not load {f}");
        }
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            // The SVG namespace is a name, not something fetched.
            let text = text.replace("'http://www.w3.org/2000/svg'", "");
            assert!(!text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"), "an external URL in the page");
        }
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="), "inline script or style: the CSP refuses them");
    }
}
