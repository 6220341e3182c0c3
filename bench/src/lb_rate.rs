//! `hns-bench lb-rate`: what the number of services costs each new connection ([P2]). Three
//! lab namespaces: a client, a router and a server with the backend addresses. The router
//! holds, loaded once:
//!
//! - `inet hns_lb` as hns writes it (`nft_lb_batch::text_all` of SERVICES load balancers: the layout `rebuild` writes, one
//!   TCP service each on VIP 10.96.x.y:80, BACKENDS backends each, random distribution);
//! - the same services in the shape of kube-proxy's iptables mode, in nft notation
//!   (`ip kp`): a linear dispatch chain of `ip daddr VIP tcp dport 80 jump svc_i` rules, and
//!   per service a chain choosing a backend with probability rules (1/5, 1/4, 1/3, 1/2, the
//!   rest) and DNATing, on VIPs 10.97.x.y.
//!
//! Both tables can stay loaded together: the nat hooks stop at the first chain that sets up
//! the connection's destination NAT, and hns_lb's chain runs first (dstnat - 10), so a
//! connection to an hns VIP never walks the kp chain; one to a kp VIP costs one missed map
//! lookup in hns_lb first, the same for its 1st and last service.
//!
//! Rounds alternate the four targets (hns 1st, hns last, kp 1st, kp last); the report gives
//! per-round rates, medians and the last/first ratios.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hns_kernel::nft::Proto;
use hns_kernel::nft_lb::{Affinity, Backend, Frontend, LB_CT_MARK, LbState, Service};
use hns_kernel::nft_lb_batch;
use hns_lab::Holder;

use crate::netrate::{self, median};

fn vip(net: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, net, (i >> 8) as u8, (i & 255) as u8)
}

fn backend_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 251, 0, 2 + k as u8)
}

/// The kube-proxy-shaped rule set (see the module doc).
fn kp_program(services: usize, backends: usize) -> String {
    let mut out = String::from("table ip kp {}\ndelete table ip kp\ntable ip kp {\n\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}\n\tchain services {\n");
    for i in 0..services {
        out.push_str(&format!("\t\tip daddr {} tcp dport 80 jump svc_{i}\n", vip(97, i)));
    }
    out.push_str("\t}\n");
    for i in 0..services {
        out.push_str(&format!("\tchain svc_{i} {{\n"));
        for k in 0..backends {
            // Backend k of n is taken with probability 1/(n-k) of what is left: uniform.
            let cond = if k + 1 < backends { format!("numgen random mod 1000000 < {} ", 1_000_000 / (backends - k)) } else { String::new() };
            out.push_str(&format!("\t\t{cond}meta l4proto tcp dnat to {}:80\n", backend_ip(k)));
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

fn nft_in(h: &Holder, program: &str) -> Result<()> {
    let mut c = h.cmd("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().context("nft")?;
    std::io::Write::write_all(&mut c.stdin.take().context("stdin")?, program.as_bytes())?;
    let out = c.wait_with_output()?;
    if !out.status.success() {
        bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

pub fn run(services: usize, backends: usize, rounds: usize, seconds: f64, clients: usize) -> Result<()> {
    if services > 65536 || backends == 0 || backends > 200 {
        bail!("at most 65536 services and 1-200 backends");
    }
    // Namespaces only (holders die with this process): client <-> router <-> server.
    let (router, client, server) = (Holder::new_net()?, Holder::new_net()?, Holder::new_net()?);
    let (c, s) = (client.pid().to_string(), server.pid().to_string());
    router.sh(&format!(
        "set -e; ip link set lo up; sysctl -qw net.ipv4.ip_forward=1
         ip link add rc type veth peer name eth0 netns {c}; ip link add rs type veth peer name eth0 netns {s}
         ip addr add 10.250.0.1/24 dev rc; ip addr add 10.251.0.1/24 dev rs; ip link set rc up; ip link set rs up"
    ))?;
    client.sh("set -e; ip link set lo up; ip addr add 10.250.0.2/24 dev eth0; ip link set eth0 up; ip route add default via 10.250.0.1")?;
    let adds: String = (0..backends).map(|k| format!("ip addr add {}/24 dev eth0\n", backend_ip(k))).collect();
    server.sh(&format!("set -e; ip link set lo up\n{adds}ip link set eth0 up; ip route add default via 10.251.0.1"))?;

    let lbs: Vec<LbState> = (0..services)
        .map(|i| LbState {
            services: vec![Service {
                frontend: Frontend::Vip(IpAddr::V4(vip(96, i))),
                proto: Proto::Tcp,
                port: 80,
                internal: false,
                local: false,
                affinity: Affinity::None,
                preserve_dip: false,
                backends: (0..backends).map(|k| Backend { mark: LB_CT_MARK | (i * backends + k + 1) as u32, addr: IpAddr::V4(backend_ip(k)), port: 80 }).collect(),
            }],
            // No hairpin sources: client and backends are not on hns networks here.
            ..Default::default()
        })
        .collect();
    let refs: Vec<&LbState> = lbs.iter().collect();
    let t = Instant::now();
    // The table as hnsd writes it (nft_lb_batch::rebuild), in nft notation for `nft -f`.
    let hns = nft_lb_batch::text_all(&refs);
    let compile_hns = t.elapsed().as_secs_f64();
    let t = Instant::now();
    nft_in(&router, &hns)?;
    let load_hns = t.elapsed().as_secs_f64();
    let kp = kp_program(services, backends);
    let t = Instant::now();
    nft_in(&router, &kp)?;
    let load_kp = t.elapsed().as_secs_f64();

    // As in acl-rate: connections end with a reset, and 1 s in CLOSE (not 10) keeps one run's
    // conntrack entries out of the next one's lookups.
    router.sh("sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_close=1")?;
    let mut srv = netrate::start_server(&server.netns_path().display().to_string(), "0.0.0.0:80")?;
    let last = services - 1;
    let targets = [("hns 1st", vip(96, 0)), ("hns last", vip(96, last)), ("kp 1st", vip(97, 0)), ("kp last", vip(97, last))];
    println!("# lb-rate: {services} services x {backends} backends, client -> router (both rule sets loaded) -> server");
    println!("# hns_lb: compile_all {compile_hns:.1} s, nft -f {load_hns:.1} s ({} lines); kp: nft -f {load_kp:.1} s ({} lines)", hns.lines().count(), kp.lines().count());
    println!("# {clients} client threads, connect + reset (SYN, SYN-ACK, ACK, RST), {seconds} s per measurement, {rounds} rounds, targets in order {}", targets.iter().map(|t| t.0).collect::<Vec<_>>().join(", "));
    let cns = client.netns_path().display().to_string();
    let mut rates = vec![Vec::new(); targets.len()];
    let result = (|| -> Result<()> {
        for round in 0..rounds {
            for (k, (name, ip)) in targets.iter().enumerate() {
                std::thread::sleep(std::time::Duration::from_millis(1500));
                let (r, line) = netrate::measure(&cns, &format!("{ip}:80"), seconds, clients)?;
                println!("round {} {name:<9} {ip:<12} {line}", round + 1);
                rates[k].push(r);
            }
        }
        Ok(())
    })();
    // How many connections the router tracks (the runs must stay well under nf_conntrack_max).
    let conntrack = router.run("sh", ["-c", "cat /proc/sys/net/netfilter/nf_conntrack_count"]).map(|o| o.stdout.trim().to_owned()).unwrap_or_default();
    let _ = srv.kill();
    let _ = srv.wait();
    result?;
    println!("# router conntrack entries at the end: {conntrack}");
    println!("\ntarget     median conn/s   (rates per round)");
    for (k, (name, _)) in targets.iter().enumerate() {
        println!("{name:<10} {:>13.0}   ({})", median(&rates[k]), rates[k].iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" "));
    }
    let ratio = |a: usize, b: usize| {
        let per_round: Vec<f64> = rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect();
        (median(&rates[a]) / median(&rates[b]), median(&per_round))
    };
    let (h, hr) = ratio(1, 0);
    let (k, kr) = ratio(3, 2);
    println!("\n[P2] hns last/1st = {h:.3} (per-round median {hr:.3}; goal >= 0.95); kube-proxy-shaped last/1st = {k:.3} (per-round median {kr:.3})");
    Ok(())
}
