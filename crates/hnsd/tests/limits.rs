//! hnsd's limits: idle API connections are capped and closed, late bodies get 408, the
//! open-files limit is raised, and compartment handles stay bounded however many exist.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use hns_lab::{HnsdOptions, Lab};
use serde_json::json;

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// (soft, hard) of "Max open files" in /proc/PID/limits.
fn nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
    let v: Vec<&str> = line.split_whitespace().collect();
    (v[3].to_owned(), v[4].to_owned())
}

/// Raises this test process's soft open-files limit, so it can hold the flood.
fn raise_own_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

/// Connects without waiting: `None` when the server's listen queue is full.
fn connect_now(path: &std::path::Path) -> Option<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    s.connect(&socket2::SockAddr::unix(path).unwrap()).ok().map(|()| s)
}

/// Whether the server has closed `s` (a read returns end of file).
fn closed_by_server(s: &socket2::Socket) -> bool {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(s.recv(&mut buf), Ok(0))
}

#[test]
fn idle_connections_are_capped_and_closed_by_the_header_timeout() {
    let flood = 3000;
    assert!(raise_own_nofile() > flood as u64 + 100, "this test needs a hard open-files limit above {flood}");
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&["--no-default-network", "--no-docker-plugin", "--max-connections", "200", "--header-timeout", "2s", "--body-timeout", "1s"]).unwrap();
    let api = Api::new(&lab);
    let base = fds(d.pid());

    // Clients that connect and send nothing. hnsd serves 200; the kernel queues some more
    // (the listen backlog) and refuses the rest at once instead of hnsd taking them all.
    let idle: Vec<socket2::Socket> = (0..flood).filter_map(|_| connect_now(&lab.socket())).collect();
    assert!(idle.len() > 200, "only {} connections opened", idle.len());
    assert!(idle.len() < flood, "all {flood} idle connections were taken: no cap");
    std::thread::sleep(Duration::from_millis(300));
    let during = fds(d.pid());
    assert!(during <= base + 200 + 4, "hnsd holds {during} descriptors with {} idle clients (base {base}, cap 200)", idle.len());

    // A real client gets through within about one header timeout (generous bound for noise).
    let t = Instant::now();
    assert_eq!(api.get("/healthz").status, 200);
    assert!(t.elapsed() < Duration::from_secs(8), "/healthz took {:?} during the flood", t.elapsed());

    // The header timeout closes every idle connection, queued ones included; descriptors return.
    assert!(eventually(Duration::from_secs(10), || idle.iter().all(closed_by_server)), "idle connections were not closed by the header timeout");
    assert!(eventually(Duration::from_secs(3), || fds(d.pid()) <= base + 1), "descriptors did not return: {} (base {base})", fds(d.pid()));
    drop(idle);

    // A body that does not arrive: 408 after the body timeout, not a held connection.
    let mut s = UnixStream::connect(lab.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    s.write_all(b"POST /networks HTTP/1.1\r\nHost: hns\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"Name\":").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "a late body got: {reply:?}");
    assert!(reply.contains("REQUEST_TIMEOUT"), "{reply}");
    assert!(t.elapsed() < Duration::from_secs(5), "408 took {:?}", t.elapsed());
    assert_eq!(api.get("/networks").ok(), json!([]), "the late request changed nothing");
}

#[test]
fn compartment_handles_stay_bounded_under_a_low_soft_limit() {
    let lab = Lab::new().unwrap();
    let d = lab
        .start_hnsd_with(HnsdOptions {
            args: ["--no-default-network", "--no-docker-plugin"].map(String::from).to_vec(),
            wrapper: ["prlimit", "--nofile=1024:", "--"].map(String::from).to_vec(),
            ..Default::default()
        })
        .unwrap();
    let (soft, hard) = nofile(d.pid());
    assert_eq!(soft, hard, "hnsd did not raise its soft open-files limit (started with 1024)");
    let api = Api::new(&lab);
    let base = fds(d.pid());

    // More compartments than a soft limit of 1024 descriptors allows at two handles each.
    // hnsd keeps the handles of at most 1024 compartments open (a quarter of its raised limit's
    // worth, capped); more than that exist here.
    let count = 1500;
    let first = api.post("/namespaces", &json!({"Name": "c0"})).ok();
    for i in 1..count {
        api.post("/namespaces", &json!({ "Name": format!("c{i}") })).ok();
    }
    let now = fds(d.pid());
    assert!(now < base + 2 * 1024 + 16, "{count} compartments hold {now} descriptors (base {base}): handles are not bounded");

    // The first compartment's handles were closed long ago: using it reopens them.
    api.post("/networks", &json!({"Name": "n", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.71.0.0/24"}]}]})).ok();
    let ep = api.post("/endpoints", &json!({"HostComputeNetwork": "n", "HostComputeNamespace": first["ID"]})).ok();
    let out = in_ns(&lab, &first, "ip", &["-o", "-4", "addr", "show", "eth0"]);
    assert!(out.stdout.contains(&ip_of(&ep)), "the reopened compartment has no address: {}", out.stdout);
}
