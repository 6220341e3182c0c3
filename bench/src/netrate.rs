//! The new-connection rate prober of the per-packet benchmarks (`acl-rate`, `lb-rate`): a
//! server that accepts and closes, and a client that opens and resets connections for a fixed
//! time from several threads. Each run prints one line `conns=N rate=R/s fails=F`.
//!
//! Why this shape: a connection is SYN, SYN-ACK, ACK, RST. Only the SYN is a new packet; the
//! others belong to an established connection, so a rule set is walked once per connection,
//! which is what a rule set costs a workload of short connections. The client resets (linger
//! 0) instead of closing: no TIME_WAIT, so a run is never limited by free source ports, and
//! conntrack keeps the connection 10 s (CLOSE), not 120 s (TIME_WAIT).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// `hns-bench conn-serve ADDR`: accepts and drops connections until killed (two accepting
/// threads).
pub fn serve(addr: SocketAddr) -> Result<()> {
    let l = TcpListener::bind(addr).with_context(|| format!("listen on {addr}"))?;
    // A full accept queue drops SYNs, and the client waits a second to retransmit: on a busy
    // machine the server is not always scheduled in time, and that second would be measured
    // instead of the packet path. A deep queue (the namespace's somaxconn, 4096 by default)
    // absorbs the server's pauses. Calling listen again on a listening socket only changes it.
    // SAFETY: a valid listening socket.
    if unsafe { libc::listen(l.as_raw_fd(), 65535) } != 0 {
        bail!("listen backlog: {}", std::io::Error::last_os_error());
    }
    println!("listening");
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for c in l.incoming() {
                    drop(c);
                }
            });
        }
    });
    Ok(())
}

/// `hns-bench conn-rate ADDR --seconds S --clients N`: N threads, each connecting and
/// resetting in a loop for S seconds.
pub fn rate(addr: SocketAddr, seconds: f64, clients: usize) -> Result<()> {
    let fails = AtomicU64::new(0);
    let t = Instant::now();
    let end = t + Duration::from_secs_f64(seconds);
    // Connect times (us): a dropped SYN shows as a retransmission, one second or more.
    let mut times: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut times = Vec::new();
                    while Instant::now() < end {
                        let t = Instant::now();
                        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                            Ok(c) => {
                                times.push(t.elapsed().as_micros() as u64);
                                reset_on_close(&c);
                            }
                            Err(_) => {
                                fails.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    times
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    });
    let secs = t.elapsed().as_secs_f64();
    times.sort_unstable();
    let pct = |p: f64| if times.is_empty() { 0 } else { times[((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1] };
    println!(
        "conns={} rate={:.0}/s fails={} slow={} connect_us p50={} p99={} max={}",
        times.len(),
        times.len() as f64 / secs,
        fails.load(Ordering::Relaxed),
        times.iter().filter(|t| **t > 500_000).count(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

/// `hns-bench conn-check ADDR`: prints `open`, `refused` or `timeout` (no answer in 300 ms:
/// the SYN was dropped).
pub fn check(addr: SocketAddr) -> Result<()> {
    let what = match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        Ok(_) => "open".to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused".to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "timeout".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    println!("{what}");
    Ok(())
}

/// SO_LINGER 0: close sends RST and leaves no TIME_WAIT.
fn reset_on_close(c: &TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket and a valid linger struct of the size given.
    unsafe { libc::setsockopt(c.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, (&l as *const libc::linger).cast(), std::mem::size_of::<libc::linger>() as libc::socklen_t) };
}

/// A `conn-serve` started in the network namespace at `netns` (a /proc or bind-mounted
/// namespace file), returned once it listens.
pub fn start_server(netns: &str, addr: &str) -> Result<Child> {
    let mut c = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg(std::env::current_exe()?)
        .args(["conn-serve", addr])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(c.stdout.take().context("stdout")?), &mut line)?;
    if line.trim() != "listening" {
        let _ = c.kill();
        let _ = c.wait();
        bail!("conn-serve {addr} did not start");
    }
    Ok(c)
}

/// One `conn-rate` run from the namespace at `netns`: (connections per second, the line).
pub fn measure(netns: &str, addr: &str, seconds: f64, clients: usize) -> Result<(f64, String)> {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg(std::env::current_exe()?)
        .args(["conn-rate", addr, "--seconds", &seconds.to_string(), "--clients", &clients.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("conn-rate {addr}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let rate = line.split_whitespace().find_map(|w| w.strip_prefix("rate=")).and_then(|v| v.trim_end_matches("/s").parse().ok()).context("rate in conn-rate's output")?;
    let fails: u64 = line.split_whitespace().find_map(|w| w.strip_prefix("fails=")).and_then(|v| v.parse().ok()).unwrap_or(0);
    if fails > 0 {
        bail!("conn-rate {addr}: connections failed: {line}");
    }
    Ok((rate, line))
}

/// The median of `v` (the mean of the middle two when even).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}
