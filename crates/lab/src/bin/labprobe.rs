//! labprobe: tiny network probes for the hns lab.
//!
//! Servers report the address they see the client as (`peer=IP:PORT`), which
//! is exactly what NAT / port-publishing tests need to check, and they print
//! `listening` on stdout once bound so callers can wait for readiness.
//!
//! ```text
//! labprobe serve-tcp ADDR:PORT
//! labprobe connect-tcp ADDR:PORT [--timeout-ms N] [--send TEXT]
//! labprobe serve-udp ADDR:PORT
//! labprobe send-udp ADDR:PORT TEXT [--timeout-ms N] [--from-port N]
//! labprobe crr ADDR:PORT [--seconds N]
//! labprobe rr ADDR:PORT [--seconds N]
//! labprobe serve-sink ADDR:PORT
//! labprobe bulk ADDR:PORT [--seconds N]
//! labprobe dns SERVER NAME [A|AAAA|PTR] [--timeout-ms N]
//! labprobe dns-burst SERVER NAME COUNT
//! labprobe fake-hnsd --socket PATH [ignored hnsd flags...]
//! ```
//!
//! `serve-udp` answers each datagram with `peer=IP:PORT local=IP:PORT TEXT` (`local=`: the
//! address it is bound to, so behind a load balancer the answer names the backend).
//! `send-udp --from-port N` sends from that source port: repeated calls are one flow to
//! conntrack, as a client that keeps its socket would be.
//!
//! `crr` measures the new-connection rate against a `serve-tcp`: connect, read the peer line,
//! send one byte, read its echo, close; repeated for N seconds (default 2). It prints
//! `conns=N rate=R/s p50_us=X p99_us=Y`.
//!
//! `bulk` measures throughput against a `serve-sink`: it sends as fast as it can for N seconds
//! (default 2), closes its side, and waits for the sink's count of bytes received; it prints
//! `bytes=B seconds=S rate=R` (R in bytes/s: bytes the sink received over the time to its
//! count, so data queued in buffers when the sender stops is timed too).
//!
//! `dns` sends one query over UDP to SERVER (port 53 unless given) and prints `rcode=NAME` and
//! one `answer=DATA` line per A/AAAA/PTR record; exit 0 when there is an answer. `dns-burst`
//! sends COUNT queries one after another and prints `sent=N answered=M lost=L`. The DNS wire
//! format is written by hand here: this tiny probe must not depend on the resolver it tests.
//!
//! `fake-hnsd` is a test double for the lab's own tests: it answers
//! `GET /healthz` with 200 on the Unix socket and nothing else.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

const USAGE: &str = "usage:
  labprobe serve-tcp ADDR:PORT
  labprobe connect-tcp ADDR:PORT [--timeout-ms N] [--send TEXT]
  labprobe serve-udp ADDR:PORT
  labprobe send-udp ADDR:PORT TEXT [--timeout-ms N] [--from-port N]
  labprobe crr ADDR:PORT [--seconds N]
  labprobe rr ADDR:PORT [--seconds N]
  labprobe serve-sink ADDR:PORT
  labprobe bulk ADDR:PORT [--seconds N]
  labprobe dns SERVER NAME [A|AAAA|PTR] [--timeout-ms N]
  labprobe dns-burst SERVER NAME COUNT
  labprobe fake-hnsd --socket PATH [other hnsd flags are ignored]";

const DEFAULT_TIMEOUT_MS: u64 = 2000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve-tcp") => parse_addr(args.get(1)).and_then(serve_tcp),
        Some("connect-tcp") => connect_tcp(&args[1..]),
        Some("serve-udp") => parse_addr(args.get(1)).and_then(serve_udp),
        Some("send-udp") => send_udp(&args[1..]),
        Some("crr") => crr(&args[1..]),
        Some("rr") => rr(&args[1..]),
        Some("serve-sink") => parse_addr(args.get(1)).and_then(serve_sink),
        Some("bulk") => bulk(&args[1..]),
        Some("dns") => dns(&args[1..]),
        Some("dns-burst") => dns_burst(&args[1..]),
        Some("fake-hnsd") => fake_hnsd(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown or missing command\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("labprobe: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn parse_addr(arg: Option<&String>) -> Result<SocketAddr, String> {
    let arg = arg.ok_or_else(|| format!("missing ADDR:PORT\n{USAGE}"))?;
    arg.parse().map_err(|_| format!("not an ADDR:PORT: {arg:?} (IPv6: [ADDR]:PORT)"))
}

/// Show IPv4-mapped IPv6 peers (dual-stack listeners) as plain IPv4.
fn show_peer(peer: SocketAddr) -> String {
    match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), peer.port()).to_string(),
            None => peer.to_string(),
        },
        IpAddr::V4(_) => peer.to_string(),
    }
}

fn announce_listening() {
    println!("listening");
    let _ = std::io::stdout().flush();
}

/// Options after the positional arguments: `--timeout-ms N`, `--send TEXT`, `--from-port N`.
struct Opts {
    positional: Vec<String>,
    timeout: Duration,
    send: Option<String>,
    from_port: u16,
}

fn parse_opts(args: &[String], allow_send: bool) -> Result<Opts, String> {
    let mut opts = Opts { positional: Vec::new(), timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS), send: None, from_port: 0 };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--timeout-ms" => {
                let v = it.next().ok_or("--timeout-ms needs a value")?;
                let ms: u64 = v.parse().map_err(|_| format!("bad --timeout-ms {v:?}"))?;
                opts.timeout = Duration::from_millis(ms.max(1));
            }
            "--send" if allow_send => {
                opts.send = Some(it.next().ok_or("--send needs a value")?.clone());
            }
            "--from-port" if !allow_send => {
                let v = it.next().ok_or("--from-port needs a value")?;
                opts.from_port = v.parse().map_err(|_| format!("bad --from-port {v:?}"))?;
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}\n{USAGE}")),
            _ => opts.positional.push(a.clone()),
        }
    }
    Ok(opts)
}

fn serve_tcp(addr: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on tcp {addr}: {e}"))?;
    announce_listening();
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        thread::spawn(move || {
            let _ = handle_tcp(stream);
        });
    }
    Ok(())
}

fn handle_tcp(mut stream: TcpStream) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    // `local=`: the address the connection reached (after any DNAT): which backend served it.
    let local = stream.local_addr()?;
    stream.write_all(format!("peer={} local={}\n", show_peer(peer), show_peer(local)).as_bytes())?;
    let mut reader = stream.try_clone()?;
    std::io::copy(&mut reader, &mut stream)?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

/// Reads each connection to its end, then answers `bytes=N` (what it read) and closes.
fn serve_sink(addr: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on tcp {addr}: {e}"))?;
    announce_listening();
    for conn in listener.incoming() {
        let Ok(mut stream) = conn else { continue };
        thread::spawn(move || {
            let n = std::io::copy(&mut stream, &mut std::io::sink()).unwrap_or(0);
            let _ = stream.write_all(format!("bytes={n}\n").as_bytes());
        });
    }
    Ok(())
}

/// Sends for N seconds to a `serve-sink`, then prints its count as a rate (see the crate doc).
fn bulk(args: &[String]) -> Result<(), String> {
    let addr = parse_addr(args.first())?;
    let seconds: f64 = match args.get(1).map(String::as_str) {
        Some("--seconds") => args.get(2).and_then(|v| v.parse().ok()).ok_or("--seconds needs a number")?,
        None => 2.0,
        Some(other) => return Err(format!("unknown option {other}\n{USAGE}")),
    };
    let start = std::time::Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect to tcp {addr}: {e}"))?;
    stream.set_write_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let chunk = vec![0x5au8; 64 * 1024];
    let end = start + Duration::from_secs_f64(seconds);
    while std::time::Instant::now() < end {
        match stream.write(&chunk) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("send to {addr}: {e}")),
        }
    }
    stream.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(|e| format!("read the sink's count: {e}"))?;
    let elapsed = start.elapsed().as_secs_f64();
    let bytes: u64 = line.trim().strip_prefix("bytes=").and_then(|n| n.parse().ok()).ok_or_else(|| format!("the sink answered {line:?}"))?;
    println!("bytes={bytes} seconds={elapsed:.3} rate={:.0}", bytes as f64 / elapsed);
    Ok(())
}

/// Request/response on one connection: 1 byte out, its echo back, for N seconds. Prints
/// `rr=N rate=R/s p50_us=X p99_us=Y`.
fn rr(args: &[String]) -> Result<(), String> {
    let addr = parse_addr(args.first())?;
    let seconds: u64 = match args.get(1).map(String::as_str) {
        Some("--seconds") => args.get(2).and_then(|v| v.parse().ok()).ok_or("--seconds needs a number")?,
        None => 2,
        Some(other) => return Err(format!("unknown option {other}\n{USAGE}")),
    };
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect to tcp {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let end = std::time::Instant::now() + Duration::from_secs(seconds);
    let mut times = Vec::new();
    let mut one = [0u8; 1];
    while std::time::Instant::now() < end {
        let t = std::time::Instant::now();
        writer.write_all(b"x").map_err(|e| e.to_string())?;
        reader.read_exact(&mut one).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_micros() as u64);
    }
    times.sort_unstable();
    let pct = |p: f64| times[((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    println!("rr={} rate={:.0}/s p50_us={} p99_us={}", times.len(), times.len() as f64 / seconds as f64, pct(0.5), pct(0.99));
    Ok(())
}

fn crr(args: &[String]) -> Result<(), String> {
    let addr = parse_addr(args.first())?;
    let seconds: u64 = match args.get(1).map(String::as_str) {
        Some("--seconds") => args.get(2).and_then(|v| v.parse().ok()).ok_or("--seconds needs a number")?,
        None => 2,
        Some(other) => return Err(format!("unknown option {other}\n{USAGE}")),
    };
    let end = std::time::Instant::now() + Duration::from_secs(seconds);
    let mut times = Vec::new();
    while std::time::Instant::now() < end {
        let t = std::time::Instant::now();
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect to tcp {addr}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        writer.write_all(b"x").map_err(|e| e.to_string())?;
        let mut one = [0u8; 1];
        reader.read_exact(&mut one).map_err(|e| e.to_string())?;
        drop(writer);
        drop(reader);
        times.push(t.elapsed().as_micros() as u64);
    }
    times.sort_unstable();
    let pct = |p: f64| times[((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    println!("conns={} rate={:.0}/s p50_us={} p99_us={}", times.len(), times.len() as f64 / seconds as f64, pct(0.5), pct(0.99));
    Ok(())
}

fn dns_server(arg: Option<&String>) -> Result<SocketAddr, String> {
    let a = arg.ok_or("missing SERVER")?;
    a.parse::<SocketAddr>().or_else(|_| a.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53))).map_err(|_| format!("bad SERVER {a:?}"))
}

fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![(id >> 8) as u8, id as u8, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    q
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(m: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *m.get(at)? as usize;
        if len == 0 {
            return Some(at + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        at += 1 + len;
    }
}

fn read_name(m: &[u8], mut at: usize) -> Option<String> {
    let mut labels = Vec::new();
    for _ in 0..64 {
        let len = *m.get(at)? as usize;
        if len == 0 {
            return Some(labels.join("."));
        }
        if len & 0xc0 == 0xc0 {
            at = ((len & 0x3f) << 8) | *m.get(at + 1)? as usize;
            continue;
        }
        labels.push(String::from_utf8_lossy(m.get(at + 1..at + 1 + len)?).into_owned());
        at += 1 + len;
    }
    None
}

/// (rcode, answers) of a reply.
fn dns_answers(m: &[u8]) -> Option<(u8, Vec<String>)> {
    let rcode = m.get(3)? & 0x0f;
    let qd = u16::from_be_bytes([*m.get(4)?, *m.get(5)?]);
    let an = u16::from_be_bytes([*m.get(6)?, *m.get(7)?]);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(m, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(m, at)?;
        let rtype = u16::from_be_bytes([*m.get(at)?, *m.get(at + 1)?]);
        let rdlen = u16::from_be_bytes([*m.get(at + 8)?, *m.get(at + 9)?]) as usize;
        let data = m.get(at + 10..at + 10 + rdlen)?;
        match rtype {
            1 if rdlen == 4 => out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]).to_string()),
            28 if rdlen == 16 => out.push(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?).to_string()),
            12 => out.push(read_name(m, at + 10)?),
            _ => {}
        }
        at += 10 + rdlen;
    }
    Some((rcode, out))
}

fn rcode_name(r: u8) -> &'static str {
    match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "OTHER",
    }
}

fn dns_exchange(sock: &UdpSocket, server: SocketAddr, id: u16, name: &str, qtype: u16) -> Result<(u8, Vec<String>), String> {
    sock.send_to(&dns_query(id, name, qtype), server).map_err(|e| format!("send to {server}: {e}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf).map_err(|e| format!("no answer from {server}: {e}"))?;
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return dns_answers(&buf[..n]).ok_or_else(|| "malformed answer".to_string());
        }
    }
}

fn dns(args: &[String]) -> Result<(), String> {
    let opts = parse_opts(args, false)?;
    let server = dns_server(opts.positional.first())?;
    let name = opts.positional.get(1).ok_or("missing NAME")?;
    let qtype = match opts.positional.get(2).map(String::as_str).unwrap_or("A") {
        "A" => 1,
        "AAAA" => 28,
        "PTR" => 12,
        other => return Err(format!("unknown type {other}")),
    };
    let sock = UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(opts.timeout)).map_err(|e| e.to_string())?;
    let (rcode, answers) = dns_exchange(&sock, server, 0x4e53, name, qtype)?;
    println!("rcode={}", rcode_name(rcode));
    for a in &answers {
        println!("answer={a}");
    }
    if answers.is_empty() { Err(format!("no answer for {name} ({})", rcode_name(rcode))) } else { Ok(()) }
}

fn dns_burst(args: &[String]) -> Result<(), String> {
    let server = dns_server(args.first())?;
    let name = args.get(1).ok_or("missing NAME")?;
    let count: u32 = args.get(2).and_then(|c| c.parse().ok()).ok_or("missing COUNT")?;
    let sock = UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    let mut answered = 0u32;
    let mut times = Vec::with_capacity(count as usize);
    let start = std::time::Instant::now();
    for i in 0..count {
        // `{i}` in NAME makes every query a different name (no cache can answer it).
        let qname = name.replace("{i}", &i.to_string());
        let t = std::time::Instant::now();
        if dns_exchange(&sock, server, i as u16, &qname, 1).is_ok_and(|(rcode, _)| rcode == 0 || rcode == 3) {
            answered += 1;
            times.push(t.elapsed().as_micros() as u64);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    times.sort_unstable();
    let pct = |p: f64| if times.is_empty() { 0 } else { times[((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1] };
    println!("sent={count} answered={answered} lost={} qps={:.0} p50_us={} p99_us={}", count - answered, f64::from(answered) / secs, pct(0.5), pct(0.99));
    if answered == count { Ok(()) } else { Err(format!("{} queries lost", count - answered)) }
}

fn connect_tcp(args: &[String]) -> Result<(), String> {
    let opts = parse_opts(args, true)?;
    let [target] = opts.positional.as_slice() else {
        return Err(format!("connect-tcp takes exactly one ADDR:PORT\n{USAGE}"));
    };
    let addr = parse_addr(Some(target))?;
    let ms = opts.timeout.as_millis();
    let stream = TcpStream::connect_timeout(&addr, opts.timeout).map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            format!("connect to tcp {addr}: timed out after {ms} ms")
        } else {
            format!("connect to tcp {addr}: {e}")
        }
    })?;
    stream.set_read_timeout(Some(opts.timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(opts.timeout)).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);

    let mut first = String::new();
    let n = reader.read_line(&mut first).map_err(|e| read_error(addr, ms, e))?;
    if n == 0 || !first.ends_with('\n') {
        return Err(format!("tcp {addr} closed the connection before sending a line"));
    }
    print!("{first}");

    if let Some(text) = opts.send {
        writer.write_all(text.as_bytes()).map_err(|e| format!("send to tcp {addr}: {e}"))?;
        let mut echo = vec![0u8; text.len()];
        reader.read_exact(&mut echo).map_err(|e| read_error(addr, ms, e))?;
        println!("{}", String::from_utf8_lossy(&echo));
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

fn read_error(addr: SocketAddr, ms: u128, e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("no answer from tcp {addr} within {ms} ms")
        }
        std::io::ErrorKind::UnexpectedEof => format!("tcp {addr} closed the connection early"),
        _ => format!("read from tcp {addr}: {e}"),
    }
}

fn serve_udp(addr: SocketAddr) -> Result<(), String> {
    let socket = UdpSocket::bind(addr).map_err(|e| format!("cannot bind udp {addr}: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    announce_listening();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
        let reply = format!("peer={} local={} {}", show_peer(peer), show_peer(local), String::from_utf8_lossy(&buf[..n]));
        let _ = socket.send_to(reply.as_bytes(), peer);
    }
}

fn send_udp(args: &[String]) -> Result<(), String> {
    let opts = parse_opts(args, false)?;
    let [target, text] = opts.positional.as_slice() else {
        return Err(format!("send-udp takes ADDR:PORT TEXT\n{USAGE}"));
    };
    let addr = parse_addr(Some(target))?;
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, opts.from_port).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, opts.from_port).into(),
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("cannot bind a udp socket: {e}"))?;
    socket.connect(addr).map_err(|e| format!("udp {addr}: {e}"))?;
    socket.set_read_timeout(Some(opts.timeout)).map_err(|e| e.to_string())?;
    socket.send(text.as_bytes()).map_err(|e| format!("send to udp {addr}: {e}"))?;
    let mut buf = vec![0u8; 65536];
    let n = socket.recv(&mut buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("no reply from udp {addr} within {} ms", opts.timeout.as_millis())
        }
        _ => format!("receive from udp {addr}: {e}"),
    })?;
    println!("{}", String::from_utf8_lossy(&buf[..n]).trim_end_matches('\n'));
    Ok(())
}

/// Stand-in for hnsd in the lab's own tests.
fn fake_hnsd(args: &[String]) -> Result<(), String> {
    let mut socket = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--socket" {
            socket = it.next().cloned();
        } else if let Some(v) = a.strip_prefix("--socket=") {
            socket = Some(v.to_string());
        }
    }
    let socket = socket.ok_or("fake-hnsd needs --socket PATH")?;
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| format!("cannot bind {socket}: {e}"))?;
    eprintln!("fake-hnsd: serving on {socket} (args: {args:?})");
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        thread::spawn(move || {
            let _ = answer_http(stream);
        });
    }
    Ok(())
}

fn answer_http(stream: UnixStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let (status, body) = if request_line.starts_with("GET /healthz ") {
        ("200 OK", "ok\n")
    } else {
        ("404 Not Found", "not found\n")
    };
    write!(
        writer,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    writer.flush()
}
