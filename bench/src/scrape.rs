//! `hns-bench scrape`: the cost of one `GET /metrics` ([U1]) with growing numbers of attached
//! endpoints (each with its host veth, whose counters a scrape reads), on networks of at most
//! 1 000 endpoints (a bridge takes at most 1 023 ports). Each level: SCRAPES scrapes one after
//! another, each on a new connection as a scraper opens it, timed from connect to the last
//! byte; p50/p90/max and the response size.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{Client, ms, pct};

/// hnsd's CPU time so far (user + system, ms), from /proc/PID/stat.
fn cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold blanks): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(") ").context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks * 1000.0 / hz)
}

pub fn inner(sock: &Path, levels: &[usize], scrapes: usize, hnsd_pid: u32) -> Result<()> {
    let mut c = Client::connect(sock)?;
    let mut present = 0usize;
    let mut networks = 0usize;
    println!("# scrape: GET /metrics on the API socket, {scrapes} scrapes per level, one after another, release hnsd");
    println!("# cpu ms/scrape: hnsd's CPU time (user + system) over the scrapes of a level, divided by their number; it");
    println!("# includes whatever else hnsd did meanwhile (a reconcile pass every 10 s), and does not depend on the");
    println!("# other processes of the machine as wall time does");
    println!("{:<9} {:>8} {:>8} {:>8} {:>13} {:>10} {:>7}", "endpoints", "p50 ms", "p90 ms", "max ms", "cpu ms/scrape", "bytes", "lines");
    for &level in levels {
        let t = Instant::now();
        while present < level {
            if present / 1000 >= networks {
                c.call("POST", "/networks", Some(&json!({"Name": format!("s{networks}"), "Ipams": [{"Subnets": [{"IpAddressPrefix": format!("10.{}.0.0/16", 150 + networks)}]}]})))?;
                networks += 1;
            }
            let ns = c.call("POST", "/namespaces", Some(&json!({})))?;
            c.call("POST", "/endpoints", Some(&json!({"HostComputeNetwork": format!("s{}", present / 1000), "HostComputeNamespace": ns["ID"]})))?;
            present += 1;
        }
        let fill = t.elapsed().as_secs_f64();
        let mut times = Vec::new();
        let mut body = String::new();
        let cpu0 = cpu_ms(hnsd_pid)?;
        for _ in 0..scrapes {
            let t = Instant::now();
            // Not hns_client::http_get, whose 2 s timeout a slow scrape on a busy machine can exceed.
            let r = hns_client::request(sock, "GET", "/metrics", "", Some(Duration::from_secs(60))).context("GET /metrics")?;
            times.push(ms(t));
            if r.status != 200 {
                bail!("GET /metrics: {}", r.status);
            }
            body = r.body;
        }
        let cpu = (cpu_ms(hnsd_pid)? - cpu0) / scrapes as f64;
        let series = body.lines().filter(|l| l.starts_with("hns_endpoint_sent_bytes_total{")).count();
        if series != present {
            bail!("{present} endpoints but {series} hns_endpoint_sent_bytes series");
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{present:<9} {:>8.2} {:>8.2} {:>8.2} {:>13.1} {:>10} {:>7}   (filling took {fill:.1} s)",
            pct(&times, 50.0),
            pct(&times, 90.0),
            pct(&times, 100.0),
            cpu,
            body.len(),
            body.lines().count()
        );
    }
    Ok(())
}
