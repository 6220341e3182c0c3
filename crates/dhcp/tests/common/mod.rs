//! The DHCP lab: three network namespaces and a real dnsmasq.
//!
//! ```text
//!  lan ns                          host ns                    container ns
//! +---------------------------+   +----------------------+   +------------------------+
//! | lanbr 198.51.100.1/24     |   | uplink0 (no address) |   | eth0: macvlan (bridge) |
//! |   └ lan-p0 ── veth ───────┼───┼─ uplink0 ────────────┼───┼─ of uplink0, test MAC  |
//! | dnsmasq (DHCP only)       |   | the client runs here |   |                        |
//! +---------------------------+   +----------------------+   +------------------------+
//! ```
//!
//! Every namespace is held by an `hns_lab::Holder` (dies with the test process), dnsmasq is
//! killed by PID in `Drop` and its files live in a private directory under /tmp that `Drop`
//! removes. Only RFC 5737 documentation addresses are used. Nothing touches the root
//! namespace.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hns_lab::Holder;

pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const RANGE_START: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
pub const RANGE_END: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 150);
pub const DNS1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
pub const DNS2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 54);
pub const DOMAIN: &str = "lan.example";
pub const UPLINK: &str = "uplink0";
/// dnsmasq refuses leases shorter than 120 s.
pub const LEASE_SECS: u64 = 120;

pub struct DhcpLab {
    pub lan: Holder,
    pub host: Holder,
    pub ctr: Holder,
    dnsmasq: Mutex<Option<Child>>,
    /// The dhcp-range dnsmasq gets at its next start.
    range: Mutex<(Ipv4Addr, Ipv4Addr)>,
    dir: PathBuf,
}

/// Locally administered unicast MACs, distinct per test so parallel runs never share one.
pub fn test_mac(n: u8) -> [u8; 6] {
    [0x02, 0x00, 0x5e, 0x10, 0x00, n]
}

pub fn colon_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl DhcpLab {
    /// The three namespaces, wired; dnsmasq started when `with_server`.
    pub fn new(tag: &str, with_server: bool) -> DhcpLab {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = PathBuf::from(format!(
            "/tmp/hns-dhcp-{tag}-{}-{stamp}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).expect("create lab dir");
        let lab = DhcpLab {
            lan: Holder::new_net().expect("lan namespace (tests need root)"),
            host: Holder::new_net().expect("host namespace"),
            ctr: Holder::new_net().expect("container namespace"),
            dnsmasq: Mutex::new(None),
            range: Mutex::new((RANGE_START, RANGE_END)),
            dir,
        };
        lab.lan
            .sh("set -e
                 ip link set lo up
                 ip link add lanbr type bridge
                 ip addr add 198.51.100.1/24 dev lanbr
                 ip link set lanbr up")
            .unwrap();
        // The veth is created in the host namespace with its peer placed straight into
        // the LAN namespace (by the holder's PID), then enslaved there.
        lab.host
            .sh(&format!(
                "set -e
                 ip link set lo up
                 ip link add {UPLINK} type veth peer name lan-p0 netns {}
                 ip link set {UPLINK} up",
                lab.lan.pid()
            ))
            .unwrap();
        lab.lan
            .sh("set -e; ip link set lan-p0 master lanbr; ip link set lan-p0 up")
            .unwrap();
        lab.ctr.sh("ip link set lo up").unwrap();
        if with_server {
            lab.start_dnsmasq();
        }
        // Wait for the links to be usable: frames sent before the veth's carrier is seen
        // up are dropped, and the first DHCPDISCOVER would be lost.
        wait_for(Duration::from_secs(10), "uplink and LAN port up", || {
            lab.host
                .sh(&format!("ip -br link show {UPLINK}"))
                .is_ok_and(|o| o.stdout.contains(" UP "))
                && lab
                    .lan
                    .sh("ip -br link show lan-p0")
                    .is_ok_and(|o| o.stdout.contains(" UP "))
        });
        lab
    }

    /// A macvlan (bridge mode) of the uplink with `mac`, created in the host namespace and
    /// moved into the container namespace as `name`, up, no address.
    pub fn add_container_link(&self, name: &str, mac: [u8; 6]) {
        let tmp = format!("mv{}", mac[5]);
        self.host
            .sh(&format!(
                "set -e
                 ip link add {tmp} link {UPLINK} address {} type macvlan mode bridge
                 ip link set {tmp} netns {}",
                colon_mac(mac),
                self.ctr.pid()
            ))
            .unwrap();
        self.ctr
            .sh(&format!(
                "set -e; ip link set {tmp} name {name}; ip link set {name} up"
            ))
            .unwrap();
    }

    /// Configures `addr/prefix` on the container link, as hnsd would after a lease.
    pub fn configure_container(&self, name: &str, addr: Ipv4Addr, prefix: u8) {
        self.ctr
            .ip(&["addr", "add", &format!("{addr}/{prefix}"), "dev", name])
            .unwrap();
    }

    pub fn leasefile(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }

    pub fn logfile(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// The exact dnsmasq command line (also quoted in the crate's docs).
    pub fn dnsmasq_args(&self) -> Vec<String> {
        let d = &self.dir;
        let (start, end) = *self.range.lock().unwrap();
        vec![
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            "--bind-interfaces".into(),
            "--interface=lanbr".into(),
            "--except-interface=lo".into(),
            format!("--dhcp-range={start},{end},255.255.255.0,{LEASE_SECS}s"),
            format!("--dhcp-option=option:router,{ROUTER}"),
            format!("--dhcp-option=option:dns-server,{DNS1},{DNS2}"),
            format!("--domain={DOMAIN}"),
            "--dhcp-authoritative".into(),
            // With its default ping check (is the address free?) dnsmasq here only offered
            // on the client's first retransmission, ~3 s later. The tests want fast offers.
            "--no-ping".into(),
            format!("--dhcp-leasefile={}", d.join("dnsmasq.leases").display()),
            format!("--pid-file={}", d.join("dnsmasq.pid").display()),
            "--log-dhcp".into(),
            format!("--log-facility={}", d.join("dnsmasq.log").display()),
            "--user=root".into(),
            "--group=root".into(),
        ]
    }

    /// The address range dnsmasq serves from its next start on.
    pub fn set_range(&self, start: Ipv4Addr, end: Ipv4Addr) {
        *self.range.lock().unwrap() = (start, end);
    }

    pub fn start_dnsmasq(&self) {
        let mut slot = self.dnsmasq.lock().unwrap();
        assert!(slot.is_none(), "dnsmasq already running");
        let starts_before = self.log().matches("DHCP, IP range").count();
        let mut cmd = self.lan.cmd("/usr/sbin/dnsmasq");
        cmd.args(self.dnsmasq_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // nsenter execs dnsmasq in place (no fork for a network namespace alone), so the
        // child's PID is dnsmasq's. Make it die with us even if Drop never runs.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        *slot = Some(spawn_from_lasting_thread(cmd));
        // Ready once it has bound its DHCP socket: it logs its range right after. The log
        // is appended to across restarts, so wait for one more such line.
        wait_for(Duration::from_secs(10), "dnsmasq to start", || {
            self.log().matches("DHCP, IP range").count() > starts_before
        });
    }

    /// Kill dnsmasq (SIGKILL, by the PID we started) and reap it.
    pub fn stop_dnsmasq(&self) {
        let mut slot = self.dnsmasq.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = slot.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Lines of dnsmasq's lease file: `expiry mac ip hostname client-id`.
    pub fn leases(&self) -> Vec<LeaseLine> {
        let text = fs::read_to_string(self.leasefile()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some(LeaseLine {
                    expiry: f.first()?.parse().ok()?,
                    mac: f.get(1)?.to_string(),
                    ip: f.get(2)?.parse().ok()?,
                    hostname: f.get(3)?.to_string(),
                })
            })
            .collect()
    }

    pub fn lease_of(&self, mac: [u8; 6]) -> Option<LeaseLine> {
        let m = colon_mac(mac);
        self.leases().into_iter().find(|l| l.mac == m)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.logfile()).unwrap_or_default()
    }

    /// dnsmasq log lines mentioning `mac` (colon notation) and containing `what`.
    pub fn log_count(&self, mac: [u8; 6], what: &str) -> usize {
        let m = colon_mac(mac);
        self.log()
            .lines()
            .filter(|l| l.contains(&m) && l.contains(what))
            .count()
    }

    /// Runs `f` on a fresh thread that joined the host namespace, inside a current-thread
    /// tokio runtime: every socket the client opens (and the uplink name lookup) then
    /// belongs to the host namespace, as in hnsd.
    pub fn in_host<'a, T: Send>(&'a self, f: impl FnOnce() -> LocalFuture<'a, T> + Send + 'a) -> T {
        let ns = fs::File::open(self.host.netns_path()).expect("open host netns");
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns host");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Counts, in the LAN's bridge, DHCP client->server frames from `mac` by destination
    /// MAC: broadcast vs unicast (nftables named counters in the LAN namespace).
    pub fn watch_requests(&self, mac: [u8; 6]) {
        let tag = format!("{:02x}", mac[5]);
        let script = format!(
            "table bridge dhcpwatch {{
               counter b{tag} {{}}
               counter u{tag} {{}}
               chain in {{
                 type filter hook input priority 0; policy accept;
                 ether saddr {m} ether daddr ff:ff:ff:ff:ff:ff udp dport 67 counter name b{tag}
                 ether saddr {m} ether daddr != ff:ff:ff:ff:ff:ff udp dport 67 counter name u{tag}
               }}
             }}",
            m = colon_mac(mac)
        );
        self.lan
            .sh(&format!("nft -f - <<'EOF'\n{script}\nEOF"))
            .unwrap();
    }

    /// (broadcast, unicast) requests from `mac` seen so far (see `watch_requests`).
    pub fn requests(&self, mac: [u8; 6]) -> (u64, u64) {
        let tag = format!("{:02x}", mac[5]);
        let read = |name: String| {
            let out = self
                .lan
                .sh(&format!("nft list counter bridge dhcpwatch {name}"))
                .unwrap()
                .stdout;
            let after = out.split("packets ").nth(1).expect("counter output");
            after
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        (read(format!("b{tag}")), read(format!("u{tag}")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for DhcpLab {
    fn drop(&mut self) {
        self.stop_dnsmasq();
        if std::env::var_os("HNS_DHCP_KEEP_LAB").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("lab files kept in {}", self.dir.display());
        }
        // The holders are dropped after this (SIGKILL + reap), taking the namespaces and
        // every link in them along.
    }
}

pub type LocalFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

#[derive(Debug, Clone)]
pub struct LeaseLine {
    pub expiry: u64,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub hostname: String,
}

/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, and tests start
/// dnsmasq from short-lived client threads too; so every fork happens on one thread that
/// lives as long as the test process.
fn spawn_from_lasting_thread(mut cmd: Command) -> Child {
    type Job = Box<dyn FnOnce() + Send>;
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || rx.into_iter().for_each(|job| job()));
        tx
    });
    let (tx, rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(cmd.spawn());
    });
    spawner.send(job).expect("spawner thread");
    rx.recv().expect("spawner reply").expect("start dnsmasq")
}

pub fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
