//! The web view (`--web-listen`) in a real headless Chromium inside the lab host: the page draws
//! and lists the lab's objects, follows a change without a reload, and the view is read-only
//! (every method but GET/HEAD refused, nothing changed); without the flag nothing listens.
//!
//! Chromium runs in the lab host's namespaces (so it reaches hnsd's 127.0.0.1 listener); the
//! test drives it over the Chrome DevTools Protocol through a websocket opened from a thread that
//! entered the lab host's network namespace.

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use hns_lab::{Lab, Proc};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

const WEB: &str = "127.0.0.1:8080";

/// A TCP connection made from inside `netns` (a thread enters it, connects and ends; the
/// socket stays in the namespace it was made in).
fn connect_in_netns(netns: &Path, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        let f = File::open(&netns)?;
        // Safety: setns on a descriptor we own; it changes only this thread's namespace.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .join()
    .expect("connect thread")
}

/// Headless Chromium in the lab host, driven over CDP. Dropping it kills chromium and every
/// process it started, by PID.
struct Browser {
    proc: Proc,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
}

impl Browser {
    fn launch(lab: &Lab) -> Browser {
        let profile = lab.dir().join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let log = File::create(lab.dir().join("chromium.log")).unwrap();
        let mut cmd = lab.host().cmd("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        // nsenter execs chromium: the process is chromium itself.
        let proc = lab.spawn_command(cmd, "chromium").expect("chromium starts (apt-get install chromium)");
        let port_file = profile.join("DevToolsActivePort");
        let mut text = String::new();
        let ready = eventually(Duration::from_secs(30), || {
            text = std::fs::read_to_string(&port_file).unwrap_or_default();
            text.lines().count() >= 2
        });
        let mut browser_guard = Killer(Some(proc.clone()));
        assert!(ready, "chromium wrote no DevToolsActivePort; log:\n{}", std::fs::read_to_string(lab.dir().join("chromium.log")).unwrap_or_default());
        let mut lines = text.lines();
        let port: u16 = lines.next().unwrap().trim().parse().unwrap();
        let path = lines.next().unwrap().trim().to_owned();
        let stream = connect_in_netns(&lab.host().netns_path(), SocketAddr::from(([127, 0, 0, 1], port))).expect("connect to chromium's DevTools port");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream).expect("DevTools websocket handshake");
        browser_guard.0 = None;
        let mut b = Browser { proc, ws, session: String::new(), next_id: 0 };
        let target = b.call_on(None, "Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call_on(None, "Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}));
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        b.call("Page.enable", json!({}));
        b.call("Emulation.setDeviceMetricsOverride", json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}));
        b
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call_on(Some(&session), method, params)
    }

    /// Sends one command and waits for its reply (events in between are skipped).
    fn call_on(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap_or_else(|e| panic!("{method}: send: {e}"));
        loop {
            let m = self.ws.read().unwrap_or_else(|e| panic!("{method}: read: {e}"));
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (awaited when it is a promise).
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true, "awaitPromise": true}));
        assert!(r.get("exceptionDetails").is_none(), "{expr} threw: {r}");
        r["result"]["value"].clone()
    }

    fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        assert!(r.get("errorText").is_none(), "navigate {url}: {r}");
    }

    fn screenshot(&mut self, to: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(to, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        Killer(Some(self.proc.clone())).kill();
    }
}

/// Kills chromium and its descendants by PID (on a failed launch too).
struct Killer(Option<Proc>);

impl Killer {
    fn kill(&mut self) {
        let Some(p) = self.0.take() else { return };
        // Its descendants first (renderers, zygote, GPU and network services), found by PPID
        // while chromium still runs, then chromium itself.
        let mut family = vec![p.pid()];
        let mut i = 0;
        while i < family.len() {
            family.extend(children(family[i]));
            i += 1;
        }
        for pid in family.iter().skip(1).rev() {
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        let _ = p.kill(nix::sys::signal::Signal::SIGKILL);
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The children of `pid` (from /proc/PID/task/*/children).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().take_while(|c| *c != b'=').collect();
        let mut n = 0u32;
        for (i, c) in data.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let got = data.len().saturating_sub(1);
        for i in 0..got {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// `curl` inside the lab host: (exit code, HTTP status, body).
fn curl(lab: &Lab, args: &[&str]) -> (i32, u16, String) {
    let body = lab.dir().join(format!("curl-body-{}", std::process::id()));
    let mut all = vec!["-sS", "--max-time", "5", "-o", body.to_str().unwrap(), "-w", "%{http_code}"];
    all.extend_from_slice(args);
    let out = lab.try_in(hns_lab::Side::Host, "curl", &all).unwrap();
    let text = std::fs::read_to_string(&body).unwrap_or_default();
    let _ = std::fs::remove_file(&body);
    (out.status.code().unwrap_or(-1), out.stdout.trim().parse().unwrap_or(0), text)
}

/// A JavaScript string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn pm(proto: u32, internal: u16, external: u16) -> Value {
    json!({"Type": "PortMapping", "Settings": {"Protocol": proto, "InternalPort": internal, "ExternalPort": external}})
}

/// Three networks (two nat, one internal; a transparent one on an uplink), a dozen endpoints in
/// compartments (some compartments on two networks), some port mappings, a load balancer over
/// the three web endpoints.
fn populate(lab: &Lab, api: &Api) -> usize {
    let u = lab.add_uplink(1, false).unwrap();
    api.post("/networks", &json!({"Name": "frontend", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.81.0.0/24"}]}]})).ok();
    api.post("/networks", &json!({"Name": "backend", "Type": "NAT", "Internal": true, "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.82.0.0/24"}]}]})).ok();
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", "transparent", "--subnet", &u.subnet, "--gateway", &u.router.to_string(), "-o", &iface, "lan"]).unwrap();
    let mut mappings = 0;
    let mut namespaces = Vec::new();
    for (i, name) in ["web-1", "web-2", "web-3", "api-1", "api-2", "db", "cache", "proxy"].iter().enumerate() {
        let (net, extra) = match i {
            0..=2 => ("frontend", json!({"Policies": [pm(6, 80, 8081 + i as u16)]})),
            3 | 4 => ("backend", json!({})),
            5 | 6 => ("backend", json!({})),
            _ => ("frontend", json!({"Policies": [pm(6, 443, 8443), pm(17, 53, 8053)]})),
        };
        mappings += extra["Policies"].as_array().map_or(0, |p| p.len());
        let (ns, _) = api.container(net, name, extra);
        namespaces.push(ns);
    }
    // Second endpoints: the api and proxy compartments also sit on another network.
    for (ns, net, name, ip) in [(3, "frontend", "api-1-front", None), (4, "frontend", "api-2-front", None), (7, "backend", "proxy-back", None), (7, "lan", "proxy-lan", Some("10.77.1.50"))] {
        let mut ep = json!({"HostComputeNetwork": net, "HostComputeNamespace": namespaces[ns]["ID"], "Name": name});
        if let Some(ip) = ip {
            ep["IpConfigurations"] = json!([{"IpAddress": ip, "PrefixLength": 24}]);
        }
        api.post("/endpoints", &ep).ok();
    }
    let webs: Vec<String> = ["web-1", "web-2", "web-3"].iter().map(|n| api.get(&format!("/endpoints/{n}")).ok()["ID"].as_str().unwrap().to_owned()).collect();
    api.post("/loadbalancers", &json!({"HostComputeEndpoints": webs, "FrontendVIPs": ["10.96.0.10"], "PortMappings": [{"Protocol": 6, "InternalPort": 80, "ExternalPort": 80, "DistributionType": "SourceIP"}]})).ok();
    mappings
}

fn count(b: &mut Browser, selector: &str) -> u64 {
    b.eval(&format!("document.querySelectorAll({}).length", js(selector))).as_u64().unwrap()
}

#[test]
fn the_page_draws_the_host_lists_every_object_and_follows_changes_without_reload() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network", "--web-listen", WEB]).expect("hnsd starts");
    let api = Api::new(&lab);
    let mappings = populate(&lab, &api);
    let networks = api.get("/networks").ok();
    let endpoints = api.get("/endpoints").ok();
    let namespaces = api.get("/namespaces").ok();
    let (networks, endpoints, namespaces) = (networks.as_array().unwrap(), endpoints.as_array().unwrap(), namespaces.as_array().unwrap());
    assert_eq!((networks.len(), endpoints.len(), namespaces.len()), (3, 12, 8));
    assert!(std::fs::read_to_string(lab.log_path()).unwrap().contains(&format!("http://{WEB}/")), "hnsd logs the view's URL");

    let mut b = Browser::launch(&lab);
    b.navigate(&format!("http://{WEB}/"));
    let loaded = eventually(Duration::from_secs(10), || count(&mut b, "#endpoints-table tbody tr[data-endpoint-id]") == 12);
    assert!(loaded, "the page did not list 12 endpoints: {}", b.eval("document.body.innerText"));

    // The drawing: a switch per network, a node per endpoint (in its compartment's box), a box
    // per compartment, a label per port mapping, the uplink of the transparent network.
    for n in networks {
        let id = n["ID"].as_str().unwrap();
        assert_eq!(count(&mut b, &format!("#topology .switch[data-network-id='{id}']")), 1, "switch of {}", n["Name"]);
        assert_eq!(count(&mut b, &format!("#networks-table tr[data-network-id='{id}']")), 1, "row of {}", n["Name"]);
        let text = b.eval(&format!("document.querySelector(\"#topology .switch[data-network-id='{id}']\").textContent"));
        assert!(text.as_str().unwrap().contains(n["Name"].as_str().unwrap()), "{text}");
    }
    for e in endpoints {
        let (id, ns) = (e["ID"].as_str().unwrap(), e["HostComputeNamespace"].as_str().unwrap());
        let inside = count(&mut b, &format!("#topology .compartment[data-namespace-id='{ns}'] .endpoint[data-endpoint-id='{id}']"));
        assert_eq!(inside, 1, "endpoint {} drawn in its compartment", e["Name"]);
        let row = b.eval(&format!("document.querySelector(\"#endpoints-table tr[data-endpoint-id='{id}']\").textContent"));
        assert!(row.as_str().unwrap().contains(&ip_of(e)), "the row of {} shows its address: {row}", e["Name"]);
    }
    for ns in namespaces {
        assert_eq!(count(&mut b, &format!("#namespaces-table tr[data-namespace-id='{}']", ns["ID"].as_str().unwrap())), 1);
    }
    assert_eq!(count(&mut b, "#topology .compartment[data-namespace-id]"), 8);
    assert_eq!(count(&mut b, "#portmappings-table tbody tr[data-portmapping-id]") as usize, mappings);
    assert_eq!(count(&mut b, "#topology .endpoint .port") as usize, mappings);
    let labels = b.eval("[...document.querySelectorAll('#topology .port')].map(t => t.textContent).join('\\n')");
    assert!(labels.as_str().unwrap().contains(":8081 → web-1:80/tcp"), "{labels}");
    assert!(labels.as_str().unwrap().contains(":8053 → proxy:53/udp"), "{labels}");
    // The load balancer: a row naming its frontend and backends, a box wired to each backend.
    let lbs = api.get("/loadbalancers").ok();
    let lb = lbs[0]["ID"].as_str().unwrap();
    let row = b.eval(&format!("document.querySelector(\"#loadbalancers-table tr[data-loadbalancer-id='{lb}']\").textContent"));
    for want in ["10.96.0.10:80/tcp → :80", "web-1", "web-2", "web-3", "affinity SourceIP"] {
        assert!(row.as_str().unwrap().contains(want), "the load balancer's row lacks {want}: {row}");
    }
    assert_eq!(count(&mut b, &format!("#topology .lb[data-loadbalancer-id='{lb}']")), 1);
    for web in lbs[0]["HostComputeEndpoints"].as_array().unwrap() {
        let wire = format!("#topology [data-lb-wire='{lb} {}']", web.as_str().unwrap());
        assert_eq!(count(&mut b, &wire), 1, "a wire from the load balancer to backend {web}");
    }
    // Health from /api/info.
    let info = api.get("/info").ok();
    let health = b.eval("document.getElementById('health').innerText");
    assert!(health.as_str().unwrap().contains(info["Version"].as_str().unwrap()), "{health}");
    assert_eq!(count(&mut b, "#warnings li") as usize, info["Warnings"].as_array().unwrap().len().max(1));
    // Traffic rates: once two scrapes are in, every local endpoint has a rate.
    let rated = eventually(Duration::from_secs(8), || b.eval("window.hnsView.rates.size > 0 && window.hnsView.rates.size === window.hnsView.lastCounters.byId.size") == json!(true));
    assert!(rated, "rates for {} endpoints", b.eval("window.hnsView.rates.size"));
    // The table shows them once it is drawn again after the rates came in: a veth endpoint's
    // cell (not the first row's: the rows go by ID, and a transparent endpoint, a macvlan with
    // no host-side veth, has no counters and shows "–").
    let cell = format!("document.querySelector(\"#endpoints-table td[data-rx-for='{}']\").textContent", lbs[0]["HostComputeEndpoints"][0].as_str().unwrap());
    let shown = eventually(Duration::from_secs(5), || b.eval(&cell).as_str().is_some_and(|t| t.ends_with("B/s")));
    assert!(shown, "{}", b.eval(&cell));

    // One search box filters every table.
    b.eval("(() => { const s = document.getElementById('search'); s.value = 'web-2'; s.dispatchEvent(new Event('input')); })()");
    assert_eq!(count(&mut b, "#endpoints-table tbody tr[data-endpoint-id]:not([hidden])"), 1);
    assert_eq!(count(&mut b, "#portmappings-table tbody tr[data-portmapping-id]:not([hidden])"), 1);
    assert_eq!(count(&mut b, "#networks-table tbody tr:not([hidden])"), 0);
    b.eval("(() => { const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input')); })()");
    assert_eq!(count(&mut b, "#endpoints-table tbody tr[data-endpoint-id]:not([hidden])"), 12);

    // The screenshot: under the lab dir, and where the build keeps test files (it outlives the lab).
    let shot = lab.dir().join("web-view.png");
    b.screenshot(&shot);
    let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-view.png");
    std::fs::copy(&shot, &kept).unwrap();
    if let Ok(to) = std::env::var("HNS_WEB_VIEW_PNG") {
        std::fs::copy(&shot, to).unwrap();
    }
    eprintln!("screenshot: {}", kept.display());

    // Live: a new endpoint appears within 1 s, without a reload, because the page follows the
    // event stream (not a poll).
    let expected = "live";
    assert!(eventually(Duration::from_secs(5), || b.eval("window.hnsView.mode").as_str() == Some(expected)), "mode {}", b.eval("window.hnsView.mode"));
    let events_before = b.eval("window.hnsView.events").as_u64().unwrap();
    b.eval("window.__notReloaded = true");
    let (_, late) = api.container("frontend", "late-arrival", json!({}));
    let id = late["ID"].as_str().unwrap();
    let start = Instant::now();
    let selector = js(&format!("#endpoints-table tr[data-endpoint-id='{id}']"));
    let mut seen = false;
    while start.elapsed() < Duration::from_secs(1) {
        if b.eval(&format!("!!document.querySelector({selector})")) == json!(true) {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = start.elapsed();
    assert!(seen, "the new endpoint did not appear within 1 s (mode {})", b.eval("window.hnsView.mode"));
    eprintln!("the new endpoint appeared after {took:?} ({expected})");
    assert_eq!(b.eval("window.__notReloaded"), json!(true), "the page was reloaded");
    assert_eq!(count(&mut b, &format!("#topology .endpoint[data-endpoint-id='{id}']")), 1, "and in the drawing");
    assert!(b.eval("window.hnsView.events").as_u64().unwrap() > events_before, "the change came as an event");
    // A load balancer removed through the API leaves the page too.
    assert_eq!(api.delete(&format!("/loadbalancers/{lb}")).status, 204);
    let gone = eventually(Duration::from_secs(1), || count(&mut b, "#loadbalancers-table tr[data-loadbalancer-id]") == 0 && count(&mut b, "#topology .lb-wire") == 0);
    assert!(gone, "the deleted load balancer is still shown");
}

#[test]
fn the_view_is_read_only_and_absent_unless_asked() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&["--no-default-network", "--web-listen", WEB]).expect("hnsd starts");
    let api = Api::new(&lab);
    let net = api.post("/networks", &json!({"Name": "n", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.84.0.0/24"}]}]})).ok();
    let nid = net["ID"].as_str().unwrap().to_owned();
    api.container("n", "c", json!({}));
    let before = (api.snapshot(), kernel_snapshot(&lab));

    // The page and its files, from the binary, with a policy that loads nothing from elsewhere.
    let out = lab.in_host("curl", &["-sS", "-i", &format!("http://{WEB}/")]).unwrap().stdout;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html") && lower.contains("content-security-policy: default-src 'self'"), "{out}");
    for f in ["/app.js", "/app.css"] {
        assert_eq!(curl(&lab, &[&format!("http://{WEB}{f}")]).1, 200, "{f}");
    }
    // The API's GET routes under /api/.
    let (_, status, body) = curl(&lab, &[&format!("http://{WEB}/api/networks")]);
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()[0]["ID"], json!(nid));
    assert_eq!(curl(&lab, &["-I", &format!("http://{WEB}/api/info")]).1, 200, "HEAD is allowed");

    // Every write refused with 405 and a JSON error, on the API and on the page alike.
    let create = json!({"Name": "sneaky", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.85.0.0/24"}]}]}).to_string();
    let ep_body = json!({"HostComputeNetwork": "n", "Name": "sneaky"}).to_string();
    for (method, path, body) in [
        ("POST", "/api/networks".to_owned(), create.as_str()),
        ("POST", "/api/endpoints".to_owned(), ep_body.as_str()),
        ("POST", "/api/namespaces".to_owned(), "{}"),
        ("DELETE", format!("/api/networks/{nid}"), ""),
        ("POST", format!("/api/networks/{nid}"), "{\"Policies\": []}"),
        ("PUT", "/api/networks".to_owned(), create.as_str()),
        ("PATCH", format!("/api/networks/{nid}"), "{}"),
        ("DELETE", "/api/nodes/somehost".to_owned(), ""),
        ("POST", "/".to_owned(), ""),
        ("OPTIONS", "/api/networks".to_owned(), ""),
    ] {
        let (_, status, text) = curl(&lab, &["-X", method, "-H", "Content-Type: application/json", "--data-binary", body, &format!("http://{WEB}{path}")]);
        assert_eq!(status, 405, "{method} {path}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        assert_eq!(err["code"], json!("METHOD_NOT_ALLOWED"), "{text}");
        assert!(err["message"].as_str().unwrap().contains("read-only"), "{text}");
    }
    // DNS rebinding: a request under another site's name is refused before anything runs.
    for host in ["evil.example", "evil.example:8080", "127.0.0.1.evil.example"] {
        let (_, status, text) = curl(&lab, &["-H", &format!("Host: {host}"), &format!("http://{WEB}/api/networks")]);
        assert_eq!(status, 403, "Host {host}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["code"], json!("HOST_NOT_ALLOWED"), "{text}");
        assert!(err["message"].as_str().unwrap().contains(&format!("{host:?}")), "the refusal names the host: {text}");
    }
    for host in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080"] {
        assert_eq!(curl(&lab, &["-H", &format!("Host: {host}"), &format!("http://{WEB}/")]).1, 200, "Host {host}");
    }
    let allow = lab.in_host("curl", &["-sS", "-i", "-X", "DELETE", &format!("http://{WEB}/api/networks/{nid}")]).unwrap().stdout.to_ascii_lowercase();
    assert!(allow.contains("allow: get, head"), "{allow}");
    assert_eq!((api.snapshot(), kernel_snapshot(&lab)), before, "a refused write changed something");

    // Without --web-listen nothing listens there.
    d.stop().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).expect("hnsd starts");
    let (code, _, _) = curl(&lab, &[&format!("http://{WEB}/")]);
    assert_eq!(code, 7, "curl could not connect (exit 7)");
    let listening = lab.in_host("ss", &["-Hltn"]).unwrap().stdout;
    assert!(!listening.contains(":8080"), "{listening}");
    assert!(!std::fs::read_to_string(lab.log_path()).unwrap().rsplit("=== hns-lab: starting").next().unwrap().contains("web view"), "no web view logged");
}
