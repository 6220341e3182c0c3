//! `hns-bench overlay`: overlay networks across lab hosts (a [`ClusterLab`]: host namespaces
//! on one underlay LAN, a real etcd on it, a release hnsd per host).
//!
//! 1. Reachability after attach: an endpoint is attached on host A (a TCP server already
//!    listens in its compartment); the moment the request returns, long-lived probers in
//!    containers on hosts B and C start connecting to it and report when the first
//!    connection succeeds. The probers retransmit ARP every 5 ms (Linux waits 1 s by default),
//!    so the figure is the propagation through etcd and the peers' kernels, not ARP backoff.
//! 2. Throughput across hosts, container to container through hns (veth, bridge, VXLAN),
//!    beside a raw VXLAN pair set up by hand between the same two host namespaces, and the
//!    underlay itself.
//! 3. Convergence with 3 to 12 hosts: a network created on host 0 until every host built it,
//!    an endpoint created on host 0 until every host lists it, and an etcd restart until
//!    every host dropped an endpoint deleted while etcd was down.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hns_lab::{ClusterLab, Lab};
use serde_json::{Value, json};

use super::{Client, Series, ms, pct};

const HNSD_ARGS: [&str; 5] = ["--no-default-network", "--log", "warn", "--reconcile-interval", "10s"];

fn cluster(n: usize) -> Result<(ClusterLab, Vec<hns_lab::Daemon>, Vec<Client>)> {
    let lab = ClusterLab::new(n)?;
    let mut daemons = Vec::new();
    for i in 0..n {
        daemons.push(lab.start_hnsd(i, &HNSD_ARGS)?);
    }
    let clients = lab.hosts().iter().map(|h| Client::connect(&h.socket())).collect::<Result<Vec<_>>>()?;
    Ok((lab, daemons, clients))
}

fn id(v: &Value) -> &str {
    v["ID"].as_str().unwrap_or_default()
}

fn ip(ep: &Value) -> String {
    ep["IpConfigurations"][0]["IpAddress"].as_str().unwrap_or_default().to_owned()
}

/// A command inside a compartment of a lab host (its namespace file lives in the host's
/// mount namespace).
fn in_compartment(host: &Lab, ns: &Value, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = host.host().cmd("nsenter");
    cmd.arg(format!("--net={}", ns["NetNsPath"].as_str().unwrap_or_default())).arg(program);
    cmd
}

/// A running process whose stdout we wait on for a first line.
fn spawn_ready(mut cmd: Command, ready: &str) -> Result<(Child, BufReader<ChildStdout>)> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let mut out = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != ready {
        let _ = child.kill();
        bail!("expected {ready:?}, got {line:?}");
    }
    Ok((child, out))
}

/// `hns-bench overlay-probe`, run inside a compartment: for every `IP:PORT` line on stdin,
/// connects until a connection succeeds and prints `ok MICROSECONDS`.
pub fn probe_main() -> Result<()> {
    // Re-try unresolved neighbours every 5 ms instead of every second (this namespace only).
    for dir in std::fs::read_dir("/proc/sys/net/ipv4/neigh")?.flatten() {
        if dir.file_name() != "lo" {
            let _ = std::fs::write(dir.path().join("retrans_time_ms"), "5");
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lines() {
        let addr: SocketAddr = line?.trim().parse()?;
        let t = Instant::now();
        let deadline = t + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(20)).is_ok() {
                writeln!(out, "ok {}", t.elapsed().as_micros())?;
                break;
            }
            if Instant::now() > deadline {
                writeln!(out, "timeout")?;
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        out.flush()?;
    }
    Ok(())
}

struct Prober {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Prober {
    fn start(host: &Lab, ns: &Value) -> Result<Prober> {
        let mut cmd = in_compartment(host, ns, std::env::current_exe()?);
        cmd.arg("overlay-probe");
        let (mut child, output) = spawn_ready(cmd, "ready")?;
        let input = child.stdin.take().context("stdin")?;
        Ok(Prober { child, input, output })
    }

    fn ask(&mut self, addr: &str) -> Result<()> {
        writeln!(self.input, "{addr}")?;
        Ok(self.input.flush()?)
    }

    fn answer_ms(&mut self) -> Result<f64> {
        let mut line = String::new();
        self.output.read_line(&mut line)?;
        match line.trim().strip_prefix("ok ") {
            Some(us) => Ok(us.parse::<f64>()? / 1000.0),
            None => bail!("prober: {}", line.trim()),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(endpoints: usize, seconds: u64, host_counts: &[usize]) -> Result<()> {
    println!("hns overlay benchmark: lab hosts on one underlay LAN (veth + bridge), etcd on it, release hnsd on each host");
    reachability_and_throughput(endpoints, seconds)?;
    convergence(host_counts)?;
    Ok(())
}

fn reachability_and_throughput(endpoints: usize, seconds: u64) -> Result<()> {
    let (lab, _daemons, mut c) = cluster(3)?;
    c[0].call("POST", "/networks", Some(&json!({"Name": "bench", "Type": "Overlay", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.240.0.0/20"}]}]})))?;
    for peer in &mut c[1..] {
        while peer.call("GET", "/networks/bench", None).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut clients = Vec::new();
    let mut probers = Vec::new();
    for (k, peer) in c.iter_mut().enumerate().skip(1) {
        let ns = peer.call("POST", "/namespaces", Some(&json!({"Name": format!("client{k}")})))?;
        let ep = peer.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "bench", "HostComputeNamespace": ns["ID"]})))?;
        probers.push(Prober::start(lab.host(k), &ns)?);
        clients.push((ns, ep));
    }
    let probe = Lab::bin("labprobe")?;
    let mut attach = Series::new("attach on host A (POST /endpoints into an existing compartment)");
    let mut to_b = Series::new("attach returned on A -> first TCP connection from a container on B");
    let mut to_c = Series::new("attach returned on A -> first TCP connection from a container on C");
    let mut made = Vec::new();
    for i in 0..endpoints {
        let ns = c[0].call("POST", "/namespaces", Some(&json!({"Name": format!("t{i}")})))?;
        let mut server_cmd = in_compartment(lab.host(0), &ns, &probe);
        server_cmd.args(["serve-tcp", "0.0.0.0:7000"]);
        let (mut server, _out) = spawn_ready(server_cmd, "listening")?;
        let t = Instant::now();
        let ep = c[0].call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "bench", "HostComputeNamespace": ns["ID"], "Name": format!("t{i}")})))?;
        attach.samples.push(ms(t));
        let target = format!("{}:7000", ip(&ep));
        for p in probers.iter_mut() {
            p.ask(&target)?;
        }
        to_b.samples.push(probers[0].answer_ms()?);
        to_c.samples.push(probers[1].answer_ms()?);
        let _ = server.kill();
        let _ = server.wait();
        made.push((ns, ep));
    }
    for s in [&attach, &to_b, &to_c] {
        s.print(endpoints.div_ceil(4).max(1));
    }
    drop(probers);

    // Throughput: container on A -> container on B through hns; a raw VXLAN pair between
    // the same host namespaces; the underlay. iperf3 when installed, else labprobe's 1-byte
    // round trips (a latency comparison, not a throughput one).
    let (server_ns, server_ep) = &clients[0];
    let server_ip = ip(server_ep);
    let client_ns = &made.first().context("at least one endpoint")?.0;
    for (i, (peer, me)) in [(2, 1), (1, 2)].iter().enumerate() {
        lab.host(i).host().sh(&format!(
            "set -e
             ip link add vxraw type vxlan id 99 local 10.99.0.{me} remote 10.99.0.{peer} dstport 4790 nolearning
             ip link set vxraw mtu 1450
             ip addr add 10.98.0.{me}/24 dev vxraw
             ip link set vxraw up"
        ))?;
    }
    let iperf3 = Command::new("iperf3").arg("--version").output().is_ok_and(|o| o.status.success());
    let paths: [(&str, CommandIn<'_>, CommandIn<'_>, String); 3] = [
        ("container -> container through hns overlay", Box::new(|p| in_compartment(lab.host(1), server_ns, p)), Box::new(|p| in_compartment(lab.host(0), client_ns, p)), server_ip),
        ("raw VXLAN pair set up by hand (host to host)", Box::new(|p| lab.host(1).host().cmd(p)), Box::new(|p| lab.host(0).host().cmd(p)), "10.98.0.2".into()),
        ("underlay, no encapsulation", Box::new(|p| lab.host(1).host().cmd(p)), Box::new(|p| lab.host(0).host().cmd(p)), "10.99.0.2".into()),
    ];
    let results: Vec<Result<String>> = paths
        .iter()
        .map(|(_, server, client, addr)| {
            if iperf3 {
                iperf(|| server("iperf3"), || client("iperf3"), addr, seconds).map(|g| format!("{g:.2}"))
            } else {
                round_trips(|| server(&probe.display().to_string()), || client(&probe.display().to_string()), addr, seconds)
            }
        })
        .collect();
    for i in 0..2 {
        let _ = lab.host(i).host().ip(&["link", "del", "vxraw"]);
    }
    if iperf3 {
        let g: Vec<f64> = results.into_iter().map(|r| r.and_then(|v| Ok(v.parse::<f64>()?))).collect::<Result<_>>()?;
        println!("\nTCP throughput host A -> host B (iperf3, {seconds} s, one stream, MTU 1450 inside VXLAN, 1500 underlay):");
        println!("  {:<46} {:>6.2} Gbit/s ({:.2} of raw VXLAN)", paths[0].0, g[0], g[0] / g[1]);
        println!("  {:<46} {:>6.2} Gbit/s", paths[1].0, g[1]);
        println!("  {:<46} {:>6.2} Gbit/s", paths[2].0, g[2]);
    } else {
        println!("\niperf3 is not installed: 1-byte TCP round trips host A -> host B instead (labprobe rr, {seconds} s):");
        for ((what, ..), r) in paths.iter().zip(results) {
            println!("  {what:<46} {}", r?);
        }
    }
    Ok(())
}

/// `labprobe rr` from a client to a `serve-tcp` server (both built by the callers).
fn round_trips(server: impl Fn() -> Command, client: impl Fn() -> Command, addr: &str, seconds: u64) -> Result<String> {
    let target = format!("{addr}:7100");
    let mut s = server();
    s.args(["serve-tcp", &target]);
    let (mut srv, _out) = spawn_ready(s, "listening")?;
    let out = client().args(["rr", &target, "--seconds", &seconds.to_string()]).output()?;
    let _ = srv.kill();
    let _ = srv.wait();
    if !out.status.success() {
        bail!("labprobe rr {target}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Gbit/s from an iperf3 client (built by `client`) to a one-shot server (built by `server`).
fn iperf(server: impl Fn() -> Command, client: impl Fn() -> Command, addr: &str, seconds: u64) -> Result<f64> {
    let mut s = server();
    s.args(["-s", "-1"]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut srv = s.spawn().context("iperf3 (apt-get install iperf3)")?;
    std::thread::sleep(Duration::from_millis(300));
    let mut cl = client();
    let out = cl.args(["-c", addr, "-t", &seconds.to_string(), "-J"]).output()?;
    let _ = srv.kill();
    let _ = srv.wait();
    if !out.status.success() {
        bail!("iperf3 -c {addr}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(f64::NAN) / 1e9)
}

/// Polls `check` on every host but the first, each from its own thread, and returns when the
/// last one succeeded (ms from `t`).
fn until_all(sockets: &[std::path::PathBuf], t: Instant, check: impl Fn(&mut Client) -> bool + Sync) -> Result<f64> {
    let times: Vec<Result<f64>> = std::thread::scope(|s| {
        let workers: Vec<_> = sockets
            .iter()
            .map(|sock| {
                let check = &check;
                s.spawn(move || -> Result<f64> {
                    let mut c = Client::connect(sock)?;
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !check(&mut c) {
                        if Instant::now() > deadline {
                            bail!("no convergence within 30 s on {}", sock.display());
                        }
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    Ok(ms(t))
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("poller")).collect()
    });
    times.into_iter().try_fold(0.0f64, |max, t| Ok(max.max(t?)))
}

fn convergence(host_counts: &[usize]) -> Result<()> {
    println!("\nconvergence: change on host 0 -> every other host has applied it (polled over each host's API every 0.5 ms)");
    println!("  {:>5}  {:>16}  {:>27}  {:>27}  {:>22}", "hosts", "network (ms)", "endpoint p50/p99/max (ms)", "endpoint, all at once (ms)", "etcd restart (ms)");
    for &n in host_counts {
        let (mut lab, _daemons, mut c) = cluster(n)?;
        let others: Vec<std::path::PathBuf> = lab.hosts()[1..].iter().map(|h| h.socket()).collect();
        c[0].call("POST", "/networks", Some(&json!({"Name": "conv", "Type": "Overlay", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.241.0.0/20"}]}]})))?;
        let t = Instant::now();
        let network = until_all(&others, t, |c| c.call("GET", "/networks/conv", None).is_ok())?;
        let mut one = Vec::new();
        let mut last = None;
        for _ in 0..20 {
            let ep = c[0].call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "conv"})))?;
            let t = Instant::now();
            let path = format!("/endpoints/{}", id(&ep));
            one.push(until_all(&others, t, |c| c.call("GET", &path, None).is_ok())?);
            last = Some(ep);
        }
        one.sort_by(f64::total_cmp);
        // Every host creates 10 endpoints at once; until every host lists all of them.
        let t = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let workers: Vec<_> = lab
                .hosts()
                .iter()
                .map(|h| {
                    let sock = h.socket();
                    s.spawn(move || -> Result<()> {
                        let mut c = Client::connect(&sock)?;
                        for _ in 0..10 {
                            c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": "conv"})))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| w.join().expect("creator"))
        })?;
        let want = 20 + 10 * n;
        let everyone: Vec<std::path::PathBuf> = lab.hosts().iter().map(|h| h.socket()).collect();
        let burst = until_all(&everyone, t, |c| c.call("GET", "/endpoints", None).is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == want)))?;
        // etcd away, an endpoint deleted meanwhile, etcd back: until nobody lists it.
        let gone = last.context("an endpoint")?;
        lab.stop_etcd()?;
        c[0].call("DELETE", &format!("/endpoints/{}", id(&gone)), None)?;
        lab.restart_etcd()?;
        let t = Instant::now();
        let path = format!("/endpoints/{}", id(&gone));
        let restart = until_all(&others, t, |c| c.call("GET", &path, None).is_err())?;
        println!(
            "  {n:>5}  {network:>16.1}  {:>9.1} {:>6.1} {:>8.1}  {burst:>27.1}  {restart:>22.1}",
            pct(&one, 50.0),
            pct(&one, 99.0),
            one.last().copied().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// Builds a command run in some namespace, given its name.
type CommandIn<'a> = Box<dyn Fn(&str) -> Command + 'a>;
