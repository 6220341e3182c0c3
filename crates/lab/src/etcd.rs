//! [`EtcdServer`]: a single-member etcd (`/usr/bin/etcd`) running inside a
//! lab network namespace, for tests of the overlay cluster layer.
//!
//! The server listens only inside the holder's namespace (typically on
//! `127.0.0.1` there, or on a lab LAN address), so nothing outside the lab can
//! reach it and it cannot collide with an etcd on the machine. Its data
//! directory is a fresh temporary directory (on `/dev/shm` when present: etcd
//! fsyncs every write, and on tmpfs that costs nothing, which keeps tests that
//! write hundreds of keys fast). [`EtcdServer::stop`] and
//! [`EtcdServer::restart`] (same data directory, so the same keys and leases
//! come back) simulate an etcd outage.
//!
//! The process is signalled only through its own PID while it is known to be
//! unreaped, and it is started tied to this process (it dies with the test
//! even when no `Drop` runs).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::Signal;

use crate::holder::Holder;
use crate::process::{Proc, spawn_tied};

/// The etcd binary (Debian's `etcd-server` package).
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// How long [`EtcdServer::start`] waits for `GET /health` to report a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

static ETCD_COUNTER: AtomicU32 = AtomicU32::new(0);

/// PEM files of a test PKI for an etcd that serves clients over TLS and requires client
/// certificates: a CA, a server certificate for one IP address, and a client certificate.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdTls {
    /// Creates a throwaway CA and certificates (ECDSA P-256, valid one day) in `dir` with the
    /// `openssl` command; the server certificate is for `server_ip`.
    pub fn generate(dir: &Path, server_ip: IpAddr) -> Result<EtcdTls> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let p = |name: &str| dir.join(name);
        let openssl = |args: &[&str]| -> Result<()> {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .context("running openssl (install the openssl package)")?;
            if !out.status.success() {
                bail!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(&[&["req", "-x509"][..], &key, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=hns-lab-ca"]].concat())?;
        for (name, cn, ext) in [
            ("server", "etcd", format!("subjectAltName=IP:{server_ip}\nextendedKeyUsage=serverAuth")),
            ("client", "hnsd", "extendedKeyUsage=clientAuth".to_owned()),
        ] {
            let (k, csr, pem, extfile) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            fs::write(p(&extfile), ext)?;
            openssl(&[&["req"][..], &key, &["-keyout", &k, "-out", &csr, "-subj", &format!("/CN={cn}")]].concat())?;
            openssl(&["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem, "-days", "1", "-extfile", &extfile])?;
        }
        Ok(EtcdTls {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
        })
    }
}

/// A running (or stopped) lab etcd. Dropping it kills the process and removes
/// the data directory.
pub struct EtcdServer {
    /// `/proc/PID/ns/net` of the holder, opened once: the namespace stays
    /// addressable through this file even while no etcd runs in it.
    netns: File,
    holder_pid: u32,
    listen: SocketAddr,
    dir: PathBuf,
    tls: Option<EtcdTls>,
    proc: Option<Proc>,
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer")
            .field("listen", &self.listen)
            .field("dir", &self.dir)
            .field("pid", &self.proc.as_ref().map(Proc::pid))
            .finish()
    }
}

impl EtcdServer {
    /// Starts etcd inside `holder`'s network namespace, serving clients on
    /// `listen_ip:port` and talking to itself (raft peer URL) on
    /// `127.0.0.1:port+1` in that namespace, and waits until it is healthy
    /// (probed on the plain-HTTP metrics listener `127.0.0.1:port+2`).
    ///
    /// `lo` must already be up in the namespace (`holder.ip(&["link", "set",
    /// "lo", "up"])`), and `listen_ip` must be an address of the namespace.
    pub fn start(holder: &Holder, listen_ip: IpAddr, port: u16) -> Result<EtcdServer> {
        EtcdServer::start_with(holder, listen_ip, port, None)
    }

    /// Like [`EtcdServer::start`], but serving clients over HTTPS with `tls`'s server
    /// certificate and accepting only clients with a certificate signed by its CA.
    pub fn start_tls(holder: &Holder, listen_ip: IpAddr, port: u16, tls: EtcdTls) -> Result<EtcdServer> {
        EtcdServer::start_with(holder, listen_ip, port, Some(tls))
    }

    fn start_with(holder: &Holder, listen_ip: IpAddr, port: u16, tls: Option<EtcdTls>) -> Result<EtcdServer> {
        if port.checked_add(2).is_none() {
            bail!("etcd port {port} leaves no room for the peer and metrics ports");
        }
        let base = if Path::new("/dev/shm").is_dir() { Path::new("/dev/shm") } else { Path::new("/tmp") };
        let n = ETCD_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("hns-lab-etcd-{}-{n}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let netns = File::open(holder.netns_path()).with_context(|| format!("opening the network namespace of holder {}", holder.pid()))?;
        let mut server = EtcdServer {
            netns,
            holder_pid: holder.pid(),
            listen: SocketAddr::new(listen_ip, port),
            dir,
            tls,
            proc: None,
        };
        server.spawn(holder)?;
        Ok(server)
    }

    /// The client URL, e.g. `http://127.0.0.1:2379` (`https://` with TLS).
    pub fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.listen)
    }

    /// The client address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The data directory (kept across [`EtcdServer::restart`]).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// PID of the running etcd, if any.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Stops etcd (SIGKILL, like a crash or a lost host: no graceful leader
    /// hand-off matters for a single member) and waits until it has exited.
    /// The data directory stays. Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(p) = self.proc.take() {
            // kill() returns the exit status; an etcd killed by SIGKILL is
            // the expected outcome, not an error.
            p.kill(Signal::SIGKILL).with_context(|| format!("stopping etcd (pid {})", p.pid()))?;
        }
        Ok(())
    }

    /// Starts etcd again on the same address with the same data directory
    /// (stopping it first if it runs), and waits until it is healthy.
    pub fn restart(&mut self, holder: &Holder) -> Result<()> {
        if holder.pid() != self.holder_pid {
            bail!("restart must use the holder etcd was started in (pid {}), not {}", self.holder_pid, holder.pid());
        }
        self.stop()?;
        self.spawn(holder)
    }

    /// The tail of etcd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::new([127, 0, 0, 1].into(), self.listen.port() + 2)
    }

    fn spawn(&mut self, holder: &Holder) -> Result<()> {
        let client = self.client_url();
        let peer = format!("http://127.0.0.1:{}", self.listen.port() + 1);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .context("creating etcd.log")?;
        let mut cmd = holder.cmd(ETCD_BIN);
        cmd.arg("--name")
            .arg("hns-lab")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("hns-lab={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            // A single member elects itself after one election timeout; a
            // shorter one makes start and restart take ~0.3 s instead of
            // ~1-2 s. It also lowers etcd's minimum lease TTL (1.5 election
            // timeouts), which lease-expiry tests rely on.
            .arg("--heartbeat-interval")
            .arg("25")
            .arg("--election-timeout")
            .arg("250")
            .arg("--listen-metrics-urls")
            .arg(format!("http://{}", self.metrics_addr()));
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = spawn_tied(cmd).with_context(|| format!("starting {ETCD_BIN} in the namespace of holder {}", holder.pid()))?;
        let proc = Proc::new(child, "etcd");
        self.proc = Some(proc.clone());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = proc.try_wait()? {
                self.proc = None;
                bail!("etcd exited during start-up ({status}); log:\n{}", self.log_tail());
            }
            if self.healthy() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("etcd on {client} was not healthy within {READY_TIMEOUT:?}; log:\n{}", self.log_tail());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /health` on the metrics listener (plain HTTP even when clients need
    /// TLS) from a short thread inside the lab namespace (the port is not
    /// reachable from ours). etcd answers `{"health":"true"}` only once it has a
    /// leader and can serve requests.
    fn healthy(&self) -> bool {
        let listen = self.metrics_addr();
        let netns = &self.netns;
        thread::scope(|s| {
            s.spawn(move || -> bool {
                if setns(netns, CloneFlags::CLONE_NEWNET).is_err() {
                    return false;
                }
                let Ok(mut stream) = TcpStream::connect_timeout(&listen, Duration::from_millis(200)) else { return false };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                if write!(stream, "GET /health HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n").is_err() {
                    return false;
                }
                let mut body = String::new();
                let _ = stream.read_to_string(&mut body);
                body.starts_with("HTTP/1.1 200") && body.contains("\"health\":\"true\"")
            })
            .join()
            .unwrap_or(false)
        })
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill_quietly();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
