//! hns-bench: control-plane benchmarks of hns in the lab, side by side with peers.
//!
//! `hns-bench attach` builds a lab (a host namespace with its own hnsd, release build), then
//! re-runs itself inside that host namespace so every request and every peer plugin exec runs
//! exactly where a real client would. It reports per-block percentiles, so growth with the
//! number of endpoints is visible, and ratios to the peer measured in the same run.
//! Timings are wall-clock on a shared machine: compare within one run, not across runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod acl_rate;
mod cni;
mod floor;
mod lb_rate;
mod netrate;
mod overlay;
mod scrape;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "hns benchmarks (run as root; everything happens in lab namespaces)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach/detach latency over the API: new compartments, existing compartments, and the CNI
    /// bridge plugin (bridge + host-local, ipMasq) into the same compartments when installed.
    Attach {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 100)]
        block: usize,
        /// Where the CNI reference plugins live (skipped when absent).
        #[arg(long, default_value = "/usr/lib/cni")]
        cni_path: PathBuf,
        #[command(flatten)]
        inner: Inner,
    },
    /// Port mappings at scale: COUNT mappings added one request at a time, one added and
    /// removed with COUNT present, COUNT at once, and the new-connection rate from the LAN to
    /// the first and the last mapping.
    /// Attach and detach with one port mapping, with PRESENT endpoints already on the host
    /// (spread over networks of at most 1 000: a Linux bridge takes at most 1 023 ports). The
    /// compartments exist beforehand, as the netns does for a CNI ADD; attach = create the
    /// endpoint attached with its mapping, detach = delete it. Each hns cycle is followed by
    /// a cycle of the kernel floor (the same kernel operations by a minimal program, on the
    /// same bridge: bench/src/floor.rs), so hns is reported as a ratio to it; then hnsd's RSS,
    /// and a throughput run: CLIENTS concurrent clients doing attach + detach cycles for
    /// THROUGHPUT_SECS, against hns and against the floor with as many threads.
    AttachPm {
        #[arg(long, default_value_t = 0)]
        present: usize,
        #[arg(long, default_value_t = 200)]
        cycles: usize,
        /// Seconds of each throughput run (0: no throughput run).
        #[arg(long, default_value_t = 5)]
        throughput_secs: u64,
        /// Concurrent clients of the throughput run.
        #[arg(long, default_value_t = 50)]
        clients: u8,
        /// hnsd's log filter, e.g. `hnsd=debug` for the per-stage timing of every request;
        /// hnsd then logs to this program's stderr.
        #[arg(long)]
        hnsd_log: Option<String>,
        #[command(flatten)]
        inner: Inner,
    },
    /// Data path through a port mapping vs straight to the container: TCP throughput (iperf3)
    /// and 1-byte round trips, from the host to the container's address, from the host through
    /// 127.0.0.1 and its own address, and from the LAN through the host's address.
    Dataplane {
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        #[command(flatten)]
        inner: Inner,
    },
    /// Service discovery: queries per second and latency from a container to its network's
    /// responder, for a local name, a forwarded name (cached) and forwarded names (uncached, a
    /// real dnsmasq on the lab LAN answers them).
    Dns {
        #[arg(long, default_value_t = 20000)]
        count: u32,
        #[command(flatten)]
        inner: Inner,
    },
    /// Overlay networks across lab hosts with a real etcd: attach on host A to the first
    /// connection from hosts B and C, throughput across hosts vs a raw VXLAN pair, and
    /// convergence with a growing number of hosts.
    Overlay {
        /// Endpoints attached on host A, one at a time.
        #[arg(long, default_value_t = 200)]
        endpoints: usize,
        /// Seconds of each throughput run.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Cluster sizes of the convergence runs.
        #[arg(long, value_delimiter = ',', default_value = "3,6,12")]
        hosts: Vec<usize>,
    },
    /// CNI ADD and DEL through the exec'd hns-cni (one port mapping each), next to the
    /// reference bridge + host-local + portmap chain when installed.
    Cni {
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Where the CNI reference plugins live (the peer is skipped when absent).
        #[arg(long, default_value = "/usr/lib/cni")]
        cni_path: PathBuf,
        #[command(flatten)]
        inner: Inner,
    },
    /// ACL rule add and remove over the API (`POST /endpoints/{id}` ResourceType Policy) with
    /// ENDPOINTS attached endpoints of RULES ACL rules each present.
    Acl {
        #[arg(long, default_value_t = 1000)]
        endpoints: usize,
        #[arg(long, default_value_t = 10)]
        rules: usize,
        /// Adds (and as many removes) measured.
        #[arg(long, default_value_t = 300)]
        samples: usize,
        /// hnsd's log filter, printed to stderr (e.g. `warn,hnsd=debug`: each request's stages).
        #[arg(long)]
        hnsd_log: Option<String>,
        #[command(flatten)]
        inner: Inner,
    },
    /// Load balancers at scale: COUNT load balancers of BACKENDS backends each are created one
    /// request at a time, then one more is created (and deleted) and a backend of an existing
    /// one is replaced (`POST /loadbalancers/{id}`), SAMPLES times each, with COUNT present.
    Lb {
        #[arg(long, default_value_t = 10000)]
        count: usize,
        #[arg(long, default_value_t = 5)]
        backends: usize,
        #[arg(long, default_value_t = 300)]
        samples: usize,
        #[command(flatten)]
        inner: Inner,
    },
    /// Per-packet cost of ACLs ([P1]): the new-connection rate to an endpoint whose ACL tables
    /// hold 1 rule, ENDPOINTS x RULES rules (through hnsd's API), and the same rules as one
    /// flat rule-per-match nft chain; alternating rounds (bench/src/acl_rate.rs).
    AclRate {
        #[arg(long, default_value_t = 1000)]
        endpoints: usize,
        #[arg(long, default_value_t = 10)]
        rules: usize,
        #[command(flatten)]
        rate: RateArgs,
        #[command(flatten)]
        inner: Inner,
    },
    /// Per-packet cost of load balancers ([P2]): the new-connection rate to the 1st and the
    /// last of SERVICES services, in hns's table and in kube-proxy's iptables shape (nft),
    /// both loaded once in a lab router namespace (bench/src/lb_rate.rs).
    LbRate {
        #[arg(long, default_value_t = 10000)]
        services: usize,
        #[arg(long, default_value_t = 5)]
        backends: usize,
        #[command(flatten)]
        rate: RateArgs,
    },
    /// Cost of a metrics scrape ([U1]): GET /metrics with LEVELS attached endpoints.
    Scrape {
        #[arg(long, value_delimiter = ',', default_value = "0,1000,5000")]
        levels: Vec<usize>,
        #[arg(long, default_value_t = 20)]
        scrapes: usize,
        #[command(flatten)]
        inner: Inner,
    },
    /// (internal) Accepts and drops TCP connections (the server of acl-rate and lb-rate).
    #[command(hide = true)]
    ConnServe { addr: std::net::SocketAddr },
    /// (internal) Connect + reset loop: the client of acl-rate and lb-rate.
    #[command(hide = true)]
    ConnRate {
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 4)]
        clients: usize,
    },
    /// (internal) One connection attempt: open, refused or timeout.
    #[command(hide = true)]
    ConnCheck { addr: std::net::SocketAddr },
    /// (internal) The connection prober `overlay` runs inside client compartments.
    #[command(hide = true)]
    OverlayProbe,
    Portmap {
        #[arg(long, default_value_t = 10000)]
        count: usize,
        /// Seconds of each connection-rate run.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        #[command(flatten)]
        inner: Inner,
    },
}

/// How the connection-rate benches measure (acl-rate, lb-rate).
#[derive(clap::Args, Clone, Copy)]
struct RateArgs {
    /// Rounds, alternating the cases; the report gives medians.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of each measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Client threads.
    #[arg(long, default_value_t = 4)]
    clients: usize,
}

/// Set by [`in_lab`] when this binary re-runs itself inside the lab host.
#[derive(clap::Args)]
struct Inner {
    /// The API socket of the lab's hnsd.
    #[arg(long, hide = true)]
    inner_socket: Option<PathBuf>,
    /// The LAN namespace's holder, for clients on the LAN side.
    #[arg(long, hide = true)]
    lan_pid: Option<u32>,
    /// The lab's hnsd, for its memory use.
    #[arg(long, hide = true)]
    hnsd_pid: Option<u32>,
}

/// Builds the lab, starts a release hnsd with the product defaults, and re-runs this binary
/// inside the lab host with `args`.
fn in_lab(args: &[String]) -> Result<()> {
    in_lab_logging(args, None)
}

/// [`in_lab`]; with `log`, hnsd logs at that filter to this program's stderr.
fn in_lab_logging(args: &[String], log: Option<&str>) -> Result<()> {
    let lab = hns_lab::Lab::new()?;
    // The product's default reconcile interval (the lab's default is 1 s, for tests).
    let hnsd_args = ["--no-default-network", "--log", log.unwrap_or("warn"), "--reconcile-interval", "10s"];
    // HNS_BENCH_HNSD_WRAPPER="heaptrack -o /tmp/hnsd" runs hnsd under a profiler.
    let wrapper = std::env::var("HNS_BENCH_HNSD_WRAPPER").map(|w| w.split_whitespace().map(str::to_owned).collect()).unwrap_or_default();
    let d = lab.start_hnsd_with(hns_lab::HnsdOptions { args: hnsd_args.iter().map(|s| s.to_string()).collect(), inherit_stdio: log.is_some(), wrapper, ..Default::default() })?;
    let mut cmd = lab.host().cmd(std::env::current_exe()?);
    cmd.args(args).arg("--inner-socket").arg(lab.socket()).arg("--lan-pid").arg(lab.lan().pid().to_string()).arg("--hnsd-pid").arg(d.pid().to_string());
    let st = cmd.status()?;
    if !st.success() {
        bail!("measurement failed: {st}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let s = |v: &dyn ToString| v.to_string();
    match Cli::parse().cmd {
        Cmd::Attach { count, block, cni_path, inner: Inner { inner_socket: Some(sock), .. } } => attach_inner(&sock, count, block, &cni_path),
        Cmd::Attach { count, block, cni_path, .. } => {
            in_lab(&[s(&"attach"), s(&"--count"), s(&count), s(&"--block"), s(&block), s(&"--cni-path"), cni_path.display().to_string()])
        }
        Cmd::AttachPm { present, cycles, throughput_secs, clients, inner: Inner { inner_socket: Some(sock), hnsd_pid, .. }, .. } => {
            attach_pm_inner(&sock, present, cycles, throughput_secs, clients, hnsd_pid.context("--hnsd-pid")?)
        }
        Cmd::AttachPm { present, cycles, throughput_secs, clients, hnsd_log, .. } => in_lab_logging(
            &[s(&"attach-pm"), s(&"--present"), s(&present), s(&"--cycles"), s(&cycles), s(&"--throughput-secs"), s(&throughput_secs), s(&"--clients"), s(&clients)],
            hnsd_log.as_deref(),
        ),
        Cmd::Dataplane { seconds, inner: Inner { inner_socket: Some(sock), lan_pid, .. } } => dataplane_inner(&sock, seconds, lan_pid.context("--lan-pid")?),
        Cmd::Dataplane { seconds, .. } => in_lab(&[s(&"dataplane"), s(&"--seconds"), s(&seconds)]),
        Cmd::Dns { count, inner: Inner { inner_socket: Some(sock), lan_pid, .. } } => dns_inner(&sock, count, lan_pid.context("--lan-pid")?),
        Cmd::Dns { count, .. } => in_lab(&[s(&"dns"), s(&"--count"), s(&count)]),
        Cmd::Portmap { count, seconds, inner: Inner { inner_socket: Some(sock), lan_pid, .. } } => portmap_inner(&sock, count, seconds, lan_pid.context("--lan-pid")?),
        Cmd::Portmap { count, seconds, .. } => in_lab(&[s(&"portmap"), s(&"--count"), s(&count), s(&"--seconds"), s(&seconds)]),
        Cmd::Cni { count, cni_path, inner: Inner { inner_socket: Some(sock), .. } } => cni::inner(&sock, count, &cni_path),
        Cmd::Cni { count, cni_path, .. } => in_lab(&[s(&"cni"), s(&"--count"), s(&count), s(&"--cni-path"), cni_path.display().to_string()]),
        Cmd::Acl { endpoints, rules, samples, inner: Inner { inner_socket: Some(sock), .. }, .. } => acl_inner(&sock, endpoints, rules, samples),
        Cmd::Acl { endpoints, rules, samples, hnsd_log, .. } => {
            in_lab_logging(&[s(&"acl"), s(&"--endpoints"), s(&endpoints), s(&"--rules"), s(&rules), s(&"--samples"), s(&samples)], hnsd_log.as_deref())
        }
        Cmd::Lb { count, backends, samples, inner: Inner { inner_socket: Some(sock), .. } } => lb_inner(&sock, count, backends, samples),
        Cmd::Lb { count, backends, samples, .. } => in_lab(&[s(&"lb"), s(&"--count"), s(&count), s(&"--backends"), s(&backends), s(&"--samples"), s(&samples)]),
        Cmd::Overlay { endpoints, seconds, hosts } => overlay::run(endpoints, seconds, &hosts),
        Cmd::OverlayProbe => overlay::probe_main(),
        Cmd::AclRate { endpoints, rules, rate: RateArgs { rounds, seconds, clients }, inner: Inner { inner_socket: Some(sock), .. } } => acl_rate::inner(&sock, endpoints, rules, rounds, seconds, clients),
        Cmd::AclRate { endpoints, rules, rate: RateArgs { rounds, seconds, clients }, .. } => in_lab(&[
            s(&"acl-rate"),
            s(&"--endpoints"),
            s(&endpoints),
            s(&"--rules"),
            s(&rules),
            s(&"--rounds"),
            s(&rounds),
            s(&"--seconds"),
            s(&seconds),
            s(&"--clients"),
            s(&clients),
        ]),
        Cmd::LbRate { services, backends, rate: RateArgs { rounds, seconds, clients } } => lb_rate::run(services, backends, rounds, seconds, clients),
        Cmd::Scrape { levels, scrapes, inner: Inner { inner_socket: Some(sock), hnsd_pid, .. } } => scrape::inner(&sock, &levels, scrapes, hnsd_pid.context("--hnsd-pid")?),
        Cmd::Scrape { levels, scrapes, .. } => {
            in_lab(&[s(&"scrape"), s(&"--levels"), levels.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(","), s(&"--scrapes"), s(&scrapes)])
        }
        Cmd::ConnServe { addr } => netrate::serve(addr),
        Cmd::ConnRate { addr, seconds, clients } => netrate::rate(addr, seconds, clients),
        Cmd::ConnCheck { addr } => netrate::check(addr),
    }
}

/// A kept-alive connection on the API socket (clients such as Docker keep one open), through
/// hns-client; each call is one request on it.
struct Client {
    conn: hns_client::Conn,
    /// The `Server-Timing` duration of the last reply, when hnsd sent one (ms).
    server_ms: Option<f64>,
}

impl Client {
    fn connect(p: &Path) -> Result<Client> {
        Ok(Client { conn: hns_client::Conn::connect(p, None)?, server_ms: None })
    }

    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let b = body.map(|b| b.to_string()).unwrap_or_default();
        self.server_ms = None;
        let r = self.conn.request(method, path, &b)?;
        self.server_ms = r.server_ms;
        if !r.is_success() {
            bail!("{method} {path}: {} {}", r.status, r.body);
        }
        Ok(if r.body.is_empty() { Value::Null } else { serde_json::from_str(&r.body)? })
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Nearest-rank percentile.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

struct Series {
    name: String,
    samples: Vec<f64>,
}

impl Series {
    fn new(name: &str) -> Series {
        Series { name: name.into(), samples: Vec::new() }
    }
    fn overall_p50(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        pct(&s, 50.0)
    }
    fn print(&self, block: usize) {
        println!("\n{} (ms; n={})", self.name, self.samples.len());
        println!("  {:>11}  {:>7} {:>7} {:>7}", "block", "p50", "p90", "p99");
        for (i, chunk) in self.samples.chunks(block).enumerate() {
            let mut s = chunk.to_vec();
            s.sort_by(f64::total_cmp);
            println!("  {:>5}-{:<5}  {:>7.2} {:>7.2} {:>7.2}", i * block + 1, i * block + chunk.len(), pct(&s, 50.0), pct(&s, 90.0), pct(&s, 99.0));
        }
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        println!("  {:>11}  {:>7.2} {:>7.2} {:>7.2}", "all", pct(&s, 50.0), pct(&s, 90.0), pct(&s, 99.0));
    }
}

fn attach_inner(sock: &Path, count: usize, block: usize, cni_path: &Path) -> Result<()> {
    let mut c = Client::connect(sock)?;
    c.call("POST", "/networks", Some(&json!({"Name": "bench", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.200.0.0/16"}]}]})))?;
    println!("hns attach benchmark: {count} endpoints on one nat network, release hnsd, lab host namespace");

    // 1. New compartment + attach (namespace create + endpoint create attached), then detach.
    let mut new_attach = Series::new("attach, new compartment (POST /namespaces + POST /endpoints)");
    let mut detach = Series::new("detach (POST /namespaces/{id} Remove)");
    let mut delete = Series::new("delete endpoint (DELETE /endpoints/{id})");
    let mut namespaces = Vec::new();
    for i in 0..count {
        let t = Instant::now();
        let ns = c.call("POST", "/namespaces", Some(&json!({"Name": format!("c{i}")})))?;
        let ep = c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "bench", "HostComputeNamespace": ns["ID"]})))?;
        new_attach.samples.push(ms(t));
        namespaces.push((ns, ep));
    }
    for (ns, ep) in &namespaces {
        let t = Instant::now();
        c.call("POST", &format!("/namespaces/{}", ns["ID"].as_str().unwrap()), Some(&json!({"ResourceType": "Endpoint", "RequestType": "Remove", "Settings": {"EndpointId": ep["ID"]}})))?;
        detach.samples.push(ms(t));
        let t = Instant::now();
        c.call("DELETE", &format!("/endpoints/{}", ep["ID"].as_str().unwrap()), None)?;
        delete.samples.push(ms(t));
    }

    // 2. Attach into compartments that already exist (one request: create + attach).
    let mut existing = Series::new("attach, existing compartment (POST /endpoints with HostComputeNamespace)");
    let mut teardown = Series::new("detach + delete (DELETE /endpoints/{id})");
    let mut eps = Vec::new();
    for (ns, _) in &namespaces {
        let t = Instant::now();
        let ep = c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "bench", "HostComputeNamespace": ns["ID"]})))?;
        existing.samples.push(ms(t));
        eps.push(ep);
    }
    for ep in &eps {
        let t = Instant::now();
        c.call("DELETE", &format!("/endpoints/{}", ep["ID"].as_str().unwrap()), None)?;
        teardown.samples.push(ms(t));
    }

    // 3. The peer: CNI bridge + host-local ADD/DEL into the same (now empty) compartments.
    let peer = if cni_path.join("bridge").exists() { Some(cni_peer(cni_path, &namespaces)?) } else { None };

    for s in [&new_attach, &existing, &detach, &delete, &teardown] {
        s.print(block);
    }
    match &peer {
        Some((add, del)) => {
            add.print(block);
            del.print(block);
            println!("\nratios of p50 (peer / hns): ADD / attach into an existing compartment = {:.1}x; DEL / detach+delete = {:.1}x",
                add.overall_p50() / existing.overall_p50(), del.overall_p50() / teardown.overall_p50());
        }
        None => println!("\npeer skipped: no CNI plugins in {} (apt-get install containernetworking-plugins)", cni_path.display()),
    }
    for (ns, _) in &namespaces {
        c.call("DELETE", &format!("/namespaces/{}", ns["ID"].as_str().unwrap()), None)?;
    }
    c.call("DELETE", "/networks/bench", None)?;
    Ok(())
}

/// Runs the CNI bridge plugin the way a runtime does (one exec per ADD/DEL, config on stdin).
fn cni_peer(cni_path: &Path, namespaces: &[(Value, Value)]) -> Result<(Series, Series)> {
    let data = std::env::temp_dir().join(format!("hns-bench-cni-{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    let conf = json!({
        "cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.230.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data.join("ipam")}
    })
    .to_string();
    let exec = |cmd: &str, i: usize, netns: &str| -> Result<()> {
        let mut child = Command::new(cni_path.join("bridge"))
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", format!("bench{i}"))
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().unwrap().write_all(conf.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("CNI {cmd} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let mut add = Series::new("peer: CNI bridge+host-local ADD into an existing namespace");
    let mut del = Series::new("peer: CNI bridge+host-local DEL");
    for (i, (ns, _)) in namespaces.iter().enumerate() {
        let t = Instant::now();
        exec("ADD", i, ns["NetNsPath"].as_str().unwrap())?;
        add.samples.push(ms(t));
    }
    for (i, (ns, _)) in namespaces.iter().enumerate() {
        let t = Instant::now();
        exec("DEL", i, ns["NetNsPath"].as_str().unwrap())?;
        del.samples.push(ms(t));
    }
    let _ = Command::new("ip").args(["link", "del", "cni0"]).status();
    let _ = std::fs::remove_dir_all(&data);
    Ok((add, del))
}

fn mapping(port: u16) -> Value {
    json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": port}})
}

fn portmap_inner(sock: &Path, count: usize, seconds: u64, lan_pid: u32) -> Result<()> {
    const FIRST: u16 = 10000;
    let mut c = Client::connect(sock)?;
    c.call("POST", "/networks", Some(&json!({"Name": "bench", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.201.0.0/16"}]}]})))?;
    let ns = c.call("POST", "/namespaces", Some(&json!({"Name": "srv"})))?;
    let ep = c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "bench", "HostComputeNamespace": ns["ID"]})))?;
    let path = format!("/endpoints/{}", ep["ID"].as_str().unwrap());
    let probe = std::env::current_exe()?.with_file_name("labprobe");
    let mut server = Command::new("nsenter")
        .arg(format!("--net={}", ns["NetNsPath"].as_str().unwrap()))
        .arg(&probe)
        .args(["serve-tcp", "0.0.0.0:80"])
        .stdout(Stdio::null())
        .spawn()?;
    let mut in_hnsd = Series::new("the same adds and removes, time inside hnsd (Server-Timing)");
    let modify = |c: &mut Client, kind: &str, policies: Vec<Value>| -> Result<f64> {
        let t = Instant::now();
        c.call("POST", &path, Some(&json!({"ResourceType": "Policy", "RequestType": kind, "Settings": {"Policies": policies}})))?;
        Ok(ms(t))
    };
    println!("hns port-mapping benchmark: {count} mappings on one endpoint, release hnsd, lab host namespace");
    let mut one_by_one = Series::new("add one mapping per request, as mappings accumulate");
    for i in 0..count {
        one_by_one.samples.push(modify(&mut c, "Add", vec![mapping(FIRST + i as u16)])?);
    }
    one_by_one.print((count / 10).max(1));
    let mut add = Series::new(&format!("add one mapping with {count} present"));
    let mut remove = Series::new(&format!("remove one mapping with {count} present"));
    for k in 0..200u16 {
        add.samples.push(modify(&mut c, "Add", vec![mapping(40000 + k)])?);
        in_hnsd.samples.extend(c.server_ms);
        remove.samples.push(modify(&mut c, "Remove", vec![mapping(40000 + k)])?);
        in_hnsd.samples.extend(c.server_ms);
    }
    add.print(200);
    remove.print(200);
    in_hnsd.print(400);
    let rate = |port: u16| -> Result<String> {
        let out = Command::new("nsenter").args(["-t", &lan_pid.to_string(), "-n"]).arg(&probe).args(["crr", &format!("198.51.100.2:{port}"), "--seconds", &seconds.to_string()]).output()?;
        if !out.status.success() {
            bail!("crr: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let first = rate(FIRST)?;
    let last = rate(FIRST + count as u16 - 1)?;
    let r = |s: &str| s.split_whitespace().find_map(|w| w.strip_prefix("rate=")).and_then(|v| v.trim_end_matches("/s").parse::<f64>().ok()).unwrap_or(f64::NAN);
    println!("\nnew connections from the LAN (connect, 1-byte round trip, close; {seconds} s each):");
    println!("  to mapping 1:      {first}");
    println!("  to mapping {count}: {last}");
    println!("  ratio last/first: {:.2}", r(&last) / r(&first));
    let all: Vec<Value> = (0..count).map(|i| mapping(FIRST + i as u16)).collect();
    let t = modify(&mut c, "Remove", all.clone())?;
    let t2 = modify(&mut c, "Add", all)?;
    println!("\n{count} mappings in one request: remove {t:.1} ms, add {t2:.1} ms");
    let _ = server.kill();
    let _ = server.wait();
    c.call("DELETE", &path, None)?;
    c.call("DELETE", &format!("/namespaces/{}", ns["ID"].as_str().unwrap()), None)?;
    c.call("DELETE", "/networks/bench", None)?;
    Ok(())
}

fn dns_inner(sock: &Path, count: u32, lan_pid: u32) -> Result<()> {
    let mut c = Client::connect(sock)?;
    let mut dnsmasq = Command::new("nsenter")
        .args(["-t", &lan_pid.to_string(), "-n", "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=198.51.100.1", "--address=/example.test/192.0.2.7", "--log-facility=-"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("dnsmasq (apt-get install dnsmasq-base)")?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.call("POST", "/networks", Some(&json!({"Name": "bench", "Dns": {"ServerList": ["198.51.100.1"]}, "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.202.0.0/24"}]}]})))?;
    let mut namespaces = Vec::new();
    for name in ["client", "target"] {
        let ns = c.call("POST", "/namespaces", Some(&json!({"Name": name})))?;
        c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "bench", "HostComputeNamespace": ns["ID"], "Name": name})))?;
        namespaces.push(ns);
    }
    let probe = std::env::current_exe()?.with_file_name("labprobe");
    println!("hns DNS benchmark: one client in a compartment, sequential queries to the network's responder (10.202.0.1), release hnsd");
    for (what, name) in [("local name", "target"), ("forwarded, cached", "www.example.test"), ("forwarded, uncached (dnsmasq upstream)", "q{i}.example.test")] {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", namespaces[0]["NetNsPath"].as_str().unwrap()))
            .arg(&probe)
            .args(["dns-burst", "10.202.0.1", name, &count.to_string()])
            .output()?;
        println!("  {what:<40} {}", String::from_utf8_lossy(&out.stdout).trim());
    }
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    Ok(())
}

/// Prints a series on one line in the peer-bench format (`name n=.. p50=.. p90=.. p99=.. ms`),
/// so one script can compare both; then, when hnsd sent them, the same percentiles of the time
/// spent inside hnsd (`Server-Timing`): the rest of the round trip is the client's and HTTP's.
fn one_line(name: &str, samples: &[f64], in_hnsd: &[f64]) {
    let p = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        format!("p50={:.2} p90={:.2} p99={:.2} ms", pct(&s, 50.0), pct(&s, 90.0), pct(&s, 99.0))
    };
    let inside = if in_hnsd.is_empty() { String::new() } else { format!("; inside hnsd {}", p(in_hnsd)) };
    println!("{name:<8} n={} {}{inside}", samples.len(), p(samples));
}

fn attach_pm_inner(sock: &Path, present: usize, cycles: usize, throughput_secs: u64, clients: u8, hnsd_pid: u32) -> Result<()> {
    let mut c = Client::connect(sock)?;
    let networks = present.div_ceil(1000).max(1);
    let mut bench0 = String::new();
    for n in 0..networks {
        let net = c.call("POST", "/networks", Some(&json!({"Name": format!("bench{n}"), "Ipams": [{"Subnets": [{"IpAddressPrefix": format!("10.{}.0.0/16", 210 + n)}]}]})))?;
        if n == 0 {
            bench0 = net["ID"].as_str().context("network ID")?.to_owned();
        }
    }
    let t = Instant::now();
    for i in 0..present {
        let ns = c.call("POST", "/namespaces", Some(&json!({})))?;
        c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": format!("bench{}", i / 1000), "HostComputeNamespace": ns["ID"]})))?;
    }
    let fill_s = t.elapsed().as_secs_f64();
    let rss_filled = rss_kib(hnsd_pid)?;
    // The floor works on bench0's bridge, next to hns's endpoints there.
    let bench0_net = floor::Net { bridge_index: link_index(&hns_kernel::names::bridge_name(&bench0))?, gateway: [10, 210, 0, 1].into(), prefix_len: 16, base: [10, 210] };
    let mut fl = floor::Floor::new(bench0_net, 0)?;
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    let (mut attach_in, mut detach_in) = (Vec::new(), Vec::new());
    // A GET of the endpoint just made: what one request on the connection costs (HTTP, JSON,
    // the published view), apart from the work of an attach.
    let mut get = Vec::new();
    let (mut f_attach, mut f_detach, mut f_delete) = (Vec::new(), Vec::new(), Vec::new());
    let before_cycles = metrics_text(sock)?;
    // Interleaved, one hns cycle then one floor cycle, so both see the same machine load.
    for i in 0..cycles {
        let ns = c.call("POST", "/namespaces", Some(&json!({})))?;
        let t = Instant::now();
        let ep = c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "bench0", "HostComputeNamespace": ns["ID"], "Policies": [mapping(20000 + i as u16)]})))?;
        attach.push(ms(t));
        attach_in.extend(c.server_ms);
        let t = Instant::now();
        c.call("GET", &format!("/endpoints/{}", ep["ID"].as_str().unwrap()), None)?;
        get.push(ms(t));
        let t = Instant::now();
        c.call("DELETE", &format!("/endpoints/{}", ep["ID"].as_str().unwrap()), None)?;
        detach.push(ms(t));
        detach_in.extend(c.server_ms);
        c.call("DELETE", &format!("/namespaces/{}", ns["ID"].as_str().unwrap()), None)?;

        let comp = fl.compartment()?;
        let (d, a) = fl.attach(&comp)?;
        f_attach.push(d.as_secs_f64() * 1000.0);
        f_detach.push(fl.detach(&comp, a)?.as_secs_f64() * 1000.0);
        f_delete.push(fl.delete_retired()?.as_secs_f64() * 1000.0);
        fl.close(comp);
    }
    let rss_cycles = rss_kib(hnsd_pid)?;
    let cycles_counted = Counted::between(&before_cycles, &metrics_text(sock)?);
    println!("# hns: endpoint + 1 port mapping, {present} endpoints present, {cycles} cycles; floor: the same kernel operations (bench/src/floor.rs), interleaved");
    one_line("attach", &attach, &attach_in);
    one_line("detach", &detach, &detach_in);
    one_line("get", &get, &[]);
    one_line("floor-attach", &f_attach, &[]);
    one_line("floor-detach", &f_detach, &[]);
    one_line("floor-delete", &f_delete, &[]);
    let p = |v: &[f64], q: f64| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        pct(&s, q)
    };
    println!(
        "ratio    hns/floor attach p50={:.2} p99={:.2}; detach p50={:.2} p99={:.2}",
        p(&attach, 50.0) / p(&f_attach, 50.0),
        p(&attach, 99.0) / p(&f_attach, 99.0),
        p(&detach, 50.0) / p(&f_detach, 50.0),
        p(&detach, 99.0) / p(&f_detach, 99.0)
    );
    cycles_counted.print("the cycles");
    println!(
        "rss      filled={:.1} after-cycles={:.1} peak-so-far={:.1} anon={:.1} file={:.1} MiB (hnsd VmRSS, VmHWM, RssAnon, RssFile; filling {present} took {fill_s:.1} s)",
        rss_filled as f64 / 1024.0,
        rss_cycles as f64 / 1024.0,
        status_kib(hnsd_pid, "VmHWM:")? as f64 / 1024.0,
        status_kib(hnsd_pid, "RssAnon:")? as f64 / 1024.0,
        status_kib(hnsd_pid, "RssFile:")? as f64 / 1024.0
    );

    if throughput_secs > 0 {
        // A network of its own: bench0 may hold 1 000 ports already, and a bridge takes 1 023.
        let tput = c.call("POST", "/networks", Some(&json!({"Name": "tput", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.220.0.0/16"}]}]})))?;
        let run = std::time::Duration::from_secs(throughput_secs);
        let before = metrics_text(sock)?;
        let hns_done = hns_throughput(sock, clients, run)?;
        let during = Counted::between(&before, &metrics_text(sock)?);
        let tput_net = floor::Net {
            bridge_index: link_index(&hns_kernel::names::bridge_name(tput["ID"].as_str().context("network ID")?))?,
            gateway: [10, 220, 0, 1].into(),
            prefix_len: 16,
            base: [10, 220],
        };
        let floor_done = floor::throughput(tput_net, clients, run)?;
        let (h, f) = (hns_done as f64 / run.as_secs_f64(), floor_done as f64 / run.as_secs_f64());
        println!("tput     clients={clients} seconds={throughput_secs} hns={h:.0}/s floor={f:.0}/s hns/floor={:.2} (attach+detach cycles per second)", h / f);
        during.print("the hns throughput run");
        println!("rss      after-throughput={:.1} MiB, peak={:.1} MiB (VmHWM)", rss_kib(hnsd_pid)? as f64 / 1024.0, status_kib(hnsd_pid, "VmHWM:")? as f64 / 1024.0);
    }
    Ok(())
}

fn metrics_text(sock: &Path) -> Result<String> {
    let r = hns_client::request(sock, "GET", "/metrics", "", Some(std::time::Duration::from_secs(60))).context("GET /metrics")?;
    if !r.is_success() {
        bail!("GET /metrics: {}", r.status);
    }
    Ok(r.body)
}

/// What hnsd's own metrics counted between two scrapes: the engine lock's waits and holds
/// (histograms) and the store's commits and disk syncs.
struct Counted {
    wait: Vec<(f64, f64)>,
    held: Vec<(f64, f64)>,
    wait_sum: f64,
    held_sum: f64,
    commits: f64,
    syncs: f64,
}

impl Counted {
    fn between(before: &str, after: &str) -> Counted {
        let value = |text: &str, series: &str| -> f64 {
            text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok()).unwrap_or(0.0)
        };
        let delta = |series: &str| value(after, series) - value(before, series);
        // Cumulative buckets: (upper bound, observations at or below it).
        let buckets = |name: &str| -> Vec<(f64, f64)> {
            after
                .lines()
                .filter_map(|l| {
                    let le = l.strip_prefix(&format!("{name}_bucket{{le=\""))?.split('"').next()?;
                    let series = format!("{name}_bucket{{le=\"{le}\"}}");
                    Some((le.parse().unwrap_or(f64::INFINITY), delta(&series)))
                })
                .collect()
        };
        Counted {
            wait: buckets("hns_engine_lock_wait_seconds"),
            held: buckets("hns_engine_lock_held_seconds"),
            wait_sum: delta("hns_engine_lock_wait_seconds_sum"),
            held_sum: delta("hns_engine_lock_held_seconds_sum"),
            commits: delta("hns_store_commits_total"),
            syncs: delta("hns_store_disk_syncs_total"),
        }
    }

    /// The upper bound of the bucket that holds the p-th percentile (ms).
    fn pct(buckets: &[(f64, f64)], p: f64) -> f64 {
        let n = buckets.last().map_or(0.0, |b| b.1);
        buckets.iter().find(|b| b.1 >= n * p / 100.0).map_or(f64::NAN, |b| b.0 * 1000.0)
    }

    /// The upper bound of the highest bucket that holds an observation (ms).
    fn max(buckets: &[(f64, f64)]) -> f64 {
        let n = buckets.last().map_or(0.0, |b| b.1);
        buckets.iter().find(|b| b.1 >= n).map_or(f64::NAN, |b| b.0 * 1000.0)
    }

    fn print(&self, over: &str) {
        let n = |b: &[(f64, f64)]| b.last().map_or(0.0, |b| b.1);
        let line = |what: &str, b: &[(f64, f64)], sum: f64| {
            println!(
                "lock     {what}: n={:.0} mean={:.3} p50<={:.3} p99<={:.3} max<={:.3} ms (hnsd's histogram over {over}; bucket bounds)",
                n(b),
                sum * 1000.0 / n(b).max(1.0),
                Self::pct(b, 50.0),
                Self::pct(b, 99.0),
                Self::max(b)
            )
        };
        line("wait", &self.wait, self.wait_sum);
        line("held", &self.held, self.held_sum);
        println!("store    commits={:.0} disk-syncs={:.0} ({:.1} commits per sync over {over}; durable commits and syncs that come together share one)", self.commits, self.syncs, self.commits / self.syncs.max(1.0));
    }
}

/// `clients` API clients, each on its own connection with its own compartment, doing attach
/// (create the endpoint attached, one mapping) + detach (delete) cycles for `run`.
fn hns_throughput(sock: &Path, clients: u8, run: std::time::Duration) -> Result<u64> {
    let stop = Instant::now() + run;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|k| {
                s.spawn(move || -> Result<u64> {
                    let mut c = Client::connect(sock)?;
                    let ns = c.call("POST", "/namespaces", Some(&json!({})))?;
                    let mut done = 0;
                    while Instant::now() < stop {
                        let ep = c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "tput", "HostComputeNamespace": ns["ID"], "Policies": [mapping(21000 + k as u16)]})))?;
                        c.call("DELETE", &format!("/endpoints/{}", ep["ID"].as_str().unwrap()), None)?;
                        done += 1;
                    }
                    c.call("DELETE", &format!("/namespaces/{}", ns["ID"].as_str().unwrap()), None)?;
                    Ok(done)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().map_err(|_| anyhow::anyhow!("client panicked"))?).sum()
    })
}

/// A link's index in this (the lab host's) namespace.
fn link_index(name: &str) -> Result<u32> {
    // Not /sys/class/net: sysfs there shows the namespace it was mounted from.
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()).with_context(|| format!("link {name}")),
        i => Ok(i),
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of /proc/PID/status.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s.lines().find(|l| l.starts_with(field)).with_context(|| format!("{field} in /proc/{pid}/status"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

fn dataplane_inner(sock: &Path, seconds: u64, lan_pid: u32) -> Result<()> {
    let mut c = Client::connect(sock)?;
    c.call("POST", "/networks", Some(&json!({"Name": "bench", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.203.0.0/24"}]}]})))?;
    let ns = c.call("POST", "/namespaces", Some(&json!({"Name": "srv"})))?;
    let pms = json!([mapping_to(5201, 5201), mapping_to(7000, 7000)]);
    let ep = c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "bench", "HostComputeNamespace": ns["ID"], "Policies": pms})))?;
    let ip = ep["IpConfigurations"][0]["IpAddress"].as_str().unwrap().to_owned();
    let netns = format!("--net={}", ns["NetNsPath"].as_str().unwrap());
    let probe = std::env::current_exe()?.with_file_name("labprobe");
    let mut servers = [
        Command::new("nsenter").arg(&netns).args(["iperf3", "-s"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("iperf3 (apt-get install iperf3)")?,
        Command::new("nsenter").arg(&netns).arg(&probe).args(["serve-tcp", "0.0.0.0:7000"]).stdout(Stdio::null()).spawn()?,
    ];
    std::thread::sleep(std::time::Duration::from_millis(500));
    let lan = lan_pid.to_string();
    let run = |from_lan: bool, program: &str, args: &[String]| -> Result<String> {
        let mut cmd = if from_lan {
            let mut c = Command::new("nsenter");
            c.args(["-t", &lan, "-n", program]);
            c
        } else {
            Command::new(program)
        };
        let out = cmd.args(args).output()?;
        if !out.status.success() {
            bail!("{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let gbits = |from_lan: bool, host: &str| -> Result<f64> {
        let out = run(from_lan, "iperf3", &["-c".into(), host.into(), "-p".into(), "5201".into(), "-t".into(), seconds.to_string(), "-J".into()])?;
        let v: Value = serde_json::from_str(&out)?;
        Ok(v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(f64::NAN) / 1e9)
    };
    let rr = |from_lan: bool, host: &str| -> Result<String> {
        Ok(run(from_lan, probe.to_str().unwrap(), &["rr".into(), format!("{host}:7000"), "--seconds".into(), seconds.to_string()])?.trim().to_owned())
    };
    println!("hns data path: one container, TCP through a port mapping vs straight to its address ({seconds} s per run)");
    let direct = gbits(false, &ip)?;
    let cases = [("host -> container address (direct)", false, ip.clone()), ("host -> 127.0.0.1 (mapping)", false, "127.0.0.1".into()), ("host -> its own address (mapping)", false, "198.51.100.2".into()), ("LAN -> host address (mapping)", true, "198.51.100.2".into())];
    for (what, lan_side, host) in cases {
        let g = if host == ip { direct } else { gbits(lan_side, &host)? };
        println!("  {what:<38} {g:>6.2} Gbit/s ({:.2} of direct)   {}", g / direct, rr(lan_side, &host)?);
    }
    for s in servers.iter_mut() {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(())
}

fn mapping_to(external: u16, internal: u16) -> Value {
    json!({"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": internal, "ExternalPort": external}})
}

/// One ACL rule in HNS v2 JSON: rule `i` of endpoint `e` (distinct priorities and addresses,
/// one protocol and two local ports each, like the kernel-level `acl_scale` example).
fn acl_rule(e: usize, i: usize, id: &str) -> Value {
    json!({"Type": "ACL", "Settings": {
        "Id": id, "Action": if i.is_multiple_of(3) { "Block" } else { "Allow" }, "Direction": if i.is_multiple_of(2) { "In" } else { "Out" },
        "Protocols": "6", "LocalPorts": format!("{},9000-9100", 8000 + i), "RemoteAddresses": format!("10.{}.{}.0/24", e % 250, i % 250),
        "Priority": 100 + i * 10}})
}

/// Prints the client's and hnsd's own (`Server-Timing`) percentiles of one operation.
fn report(name: &str, client: &[f64], server: &[f64]) {
    let p = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        format!("p50={:.3} p90={:.3} p99={:.3}", pct(&s, 50.0), pct(&s, 90.0), pct(&s, 99.0))
    };
    println!("{name:<44} n={:<4} API round trip {} ms; inside hnsd {} ms", client.len(), p(client), p(server));
}

fn acl_inner(sock: &Path, endpoints: usize, rules: usize, samples: usize) -> Result<()> {
    let mut c = Client::connect(sock)?;
    c.call("POST", "/networks", Some(&json!({"Name": "bench", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.204.0.0/16"}]}]})))?;
    println!("hns ACL benchmark: {endpoints} attached endpoints x {rules} ACL rules on one nat network, release hnsd, lab host namespace");
    let t = Instant::now();
    let mut eps = Vec::new();
    for e in 0..endpoints {
        let ns = c.call("POST", "/namespaces", Some(&json!({})))?;
        let policies: Vec<Value> = (0..rules).map(|i| acl_rule(e, i, &format!("r{i}"))).collect();
        let ep = c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "bench", "HostComputeNamespace": ns["ID"], "Policies": policies})))?;
        eps.push(ep["ID"].as_str().context("endpoint ID")?.to_owned());
    }
    println!("filled: {} endpoints with {} ACL rules in {:.1} s", endpoints, endpoints * rules, t.elapsed().as_secs_f64());
    let (mut add, mut add_s, mut rm, mut rm_s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 0..samples {
        // Spread over the endpoints, so no single chain is measured.
        let e = (k * 7919) % endpoints;
        let path = format!("/endpoints/{}", eps[e]);
        let rule = acl_rule(e, rules + k % 50, "bench-extra");
        let t = Instant::now();
        c.call("POST", &path, Some(&json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": {"Policies": [rule.clone()]}})))?;
        add.push(ms(t));
        add_s.extend(c.server_ms);
        let t = Instant::now();
        c.call("POST", &path, Some(&json!({"ResourceType": "Policy", "RequestType": "Remove", "Settings": {"Policies": [rule]}})))?;
        rm.push(ms(t));
        rm_s.extend(c.server_ms);
    }
    report(&format!("ACL rule add, {} rules present", endpoints * rules), &add, &add_s);
    report(&format!("ACL rule remove, {} rules present", endpoints * rules), &rm, &rm_s);
    Ok(())
}

fn lb_inner(sock: &Path, count: usize, backends: usize, samples: usize) -> Result<()> {
    let mut c = Client::connect(sock)?;
    c.call("POST", "/networks", Some(&json!({"Name": "bench", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.205.0.0/16"}]}]})))?;
    // The backends, plus one to swap in.
    let mut eps = Vec::new();
    for _ in 0..=backends {
        let ns = c.call("POST", "/namespaces", Some(&json!({})))?;
        let ep = c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "bench", "HostComputeNamespace": ns["ID"]})))?;
        eps.push(ep["ID"].as_str().context("endpoint ID")?.to_owned());
    }
    let lb = |i: usize, members: &[String]| json!({
        "HostComputeEndpoints": members, "FrontendVIPs": [format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256)],
        "PortMappings": [{"Protocol": 6, "InternalPort": 8080, "ExternalPort": 80}]});
    let first: Vec<String> = eps[..backends].to_vec();
    println!("hns load-balancer benchmark: {count} load balancers x {backends} backends (one VIP, one TCP port each), release hnsd, lab host namespace");
    let mut fill = Vec::new();
    let mut ids = Vec::new();
    let t = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        let v = c.call("POST", "/loadbalancers", Some(&lb(i, &first)))?;
        fill.push(ms(t));
        ids.push(v["ID"].as_str().context("load balancer ID")?.to_owned());
    }
    println!("filled: {count} load balancers in {:.1} s", t.elapsed().as_secs_f64());
    let mut s = Series::new("create, as load balancers accumulate");
    s.samples = fill;
    s.print((count / 10).max(1));
    let (mut create, mut create_s, mut delete, mut delete_s, mut replace, mut replace_s) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for k in 0..samples {
        let t = Instant::now();
        let v = c.call("POST", "/loadbalancers", Some(&lb(count + k, &first)))?;
        create.push(ms(t));
        create_s.extend(c.server_ms);
        let t = Instant::now();
        c.call("DELETE", &format!("/loadbalancers/{}", v["ID"].as_str().context("ID")?), None)?;
        delete.push(ms(t));
        delete_s.extend(c.server_ms);
        // Replace the last backend of an existing one with the spare endpoint.
        let i = (k * 7919) % count;
        let mut members = first.clone();
        members[backends - 1] = eps[backends].clone();
        let mut body = lb(i, &members);
        body["ID"] = json!(ids[i]);
        let t = Instant::now();
        c.call("POST", &format!("/loadbalancers/{}", ids[i]), Some(&body))?;
        replace.push(ms(t));
        replace_s.extend(c.server_ms);
    }
    report(&format!("create one, {count} present"), &create, &create_s);
    report(&format!("delete one, {count} present"), &delete, &delete_s);
    report(&format!("replace a backend, {count} present"), &replace, &replace_s);
    Ok(())
}
