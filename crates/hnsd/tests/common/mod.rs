//! Shared helpers of the lab tests: a blocking API client over the unix socket and small
//! conveniences for running things inside compartments.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use hns_lab::{Lab, Side};
use serde_json::{Value, json};

/// The API socket as the tests use it: one connection per request, every reply returned.
pub struct Api {
    pub socket: PathBuf,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub raw: String,
    /// The `Server-Timing` duration (ms), when the reply has one.
    pub server_ms: Option<f64>,
}

impl Reply {
    pub fn ok(self) -> Value {
        assert!((200..300).contains(&self.status), "expected success, got {}: {}", self.status, self.raw);
        self.body
    }
}

impl Api {
    pub fn new(lab: &Lab) -> Api {
        Api { socket: lab.socket() }
    }

    /// One request on a connection of its own (hns-client). Status 0: the daemon closed the
    /// connection without answering (it died), or the exchange broke; `raw` then says how.
    pub fn request_raw(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        match hns_client::request(&self.socket, method, path, body, Some(Duration::from_secs(30))) {
            Ok(r) => Reply { status: r.status, body: serde_json::from_str(&r.body).unwrap_or(Value::Null), raw: r.body, server_ms: r.server_ms },
            Err(e @ hns_client::Error::Connect { .. }) => panic!("{e}"),
            Err(e) => Reply { status: 0, body: Value::Null, raw: e.to_string(), server_ms: None },
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request_raw("GET", path, b"")
    }
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.request_raw("POST", path, body.to_string().as_bytes())
    }
    pub fn delete(&self, path: &str) -> Reply {
        self.request_raw("DELETE", path, b"")
    }

    /// Creates a compartment and an endpoint attached to it; returns (namespace, endpoint).
    pub fn container(&self, network: &str, name: &str, extra: Value) -> (Value, Value) {
        let ns = self.post("/namespaces", &json!({ "Name": name })).ok();
        let mut ep = json!({ "HostComputeNetwork": network, "HostComputeNamespace": ns["ID"], "Name": name });
        if let (Some(e), Some(x)) = (ep.as_object_mut(), extra.as_object()) {
            for (k, v) in x {
                e.insert(k.clone(), v.clone());
            }
        }
        let ep = self.post("/endpoints", &ep).ok();
        (ns, ep)
    }

    /// Everything the API shows, for before/after comparisons.
    pub fn snapshot(&self) -> Value {
        json!({
            "networks": self.get("/networks").ok(),
            "endpoints": self.get("/endpoints").ok(),
            "namespaces": self.get("/namespaces").ok(),
        })
    }
}

/// The first IPv4 address of an endpoint.
pub fn ip_of(ep: &Value) -> String {
    ep["IpConfigurations"][0]["IpAddress"].as_str().expect("endpoint has an address").to_owned()
}

/// Runs a program inside a compartment (from the lab host, where the namespace files live).
pub fn in_ns(lab: &Lab, ns: &Value, program: &str, args: &[&str]) -> hns_lab::RunOutput {
    let netns = format!("--net={}", ns["NetNsPath"].as_str().expect("namespace path"));
    let mut full = vec![netns.as_str(), program];
    full.extend_from_slice(args);
    lab.try_in(Side::Host, "nsenter", &full).expect("nsenter runs")
}

/// Whether `ip` answers a ping from `ns` within 3 s: one echo every 0.2 s until the first reply,
/// so a packet lost or answered late on a loaded machine does not decide. For "is it cut now?"
/// use [`ping_once`]: a repair may well arrive within these 3 s.
pub fn ping(lab: &Lab, ns: &Value, ip: &str) -> bool {
    in_ns(lab, ns, "ping", &["-c1", "-w3", "-i0.2", "-W1", ip]).status.success()
}

/// One echo, one second to answer.
pub fn ping_once(lab: &Lab, ns: &Value, ip: &str) -> bool {
    in_ns(lab, ns, "ping", &["-c1", "-W1", ip]).status.success()
}

pub use hns_lab::eventually;

/// `hns_reconcile_passes_total` from `GET /metrics`.
pub fn reconcile_passes(api: &Api) -> f64 {
    let text = api.get("/metrics").raw;
    let line = text.lines().find(|l| l.starts_with("hns_reconcile_passes_total ")).unwrap_or_else(|| panic!("no hns_reconcile_passes_total in:\n{text}"));
    line.split(' ').nth(1).and_then(|v| v.parse().ok()).expect("a number")
}

/// What the kernel of the lab host shows of hns: links, the nft table, namespace files.
pub fn kernel_snapshot(lab: &Lab) -> String {
    let links = lab.in_host("ip", &["-o", "link", "show"]).map(|o| o.stdout).unwrap_or_default();
    let mut links: Vec<String> = links.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or("").to_owned()).collect();
    links.sort();
    let nft = lab.try_in(Side::Host, "nft", &["list", "table", "inet", "hns"]).map(|o| o.stdout).unwrap_or_default();
    // The run dir is a tmpfs inside the lab host's mount namespace: look from there.
    let dir = lab.run_dir().join("netns");
    let files = lab.try_in(Side::Host, "ls", &[dir.to_str().unwrap()]).map(|o| o.stdout).unwrap_or_default();
    let files: Vec<&str> = files.lines().collect();
    format!("links: {links:?}\nnft:\n{nft}\nnetns: {files:?}")
}

/// A process in a network namespace of its own inside the lab host, for tests that adopt an
/// existing namespace by path. Returns once the process runs `sleep` (so unshare has done its
/// work: before that, /proc/PID/ns/net may still name another namespace, even the machine's own).
pub fn netns_process(lab: &Lab) -> (hns_lab::Proc, String) {
    let p = lab.spawn_in_host("unshare", &["--net", "sleep", "300"]).expect("spawn unshare");
    let comm = format!("/proc/{}/comm", p.pid());
    let ready = eventually(Duration::from_secs(5), || std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep"));
    assert!(ready, "the namespace holder did not start");
    let path = format!("/proc/{}/ns/net", p.pid());
    let host = std::fs::read_link(format!("/proc/{}/ns/net", lab.host().pid())).unwrap();
    assert_ne!(std::fs::read_link(&path).unwrap(), host, "the holder must be in a namespace of its own");
    (p, path)
}

/// Runs hnsctl expecting failure with `needle` in its error output.
pub fn fails_with(lab: &Lab, args: &[&str], needle: &str) {
    let o = lab.hnsctl(args).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(err.contains(needle), "{args:?}: stderr {err:?} lacks {needle:?}");
}
