//! `hns-bench acl-rate`: what ACL rules cost each new connection ([P1]). A real hnsd in the lab
//! holds a nat network with a client, a target (a server on port 80) and ENDPOINTS - 1 other
//! attached endpoints; the rules go in through the API, so they are exactly what hns programs.
//! Each round measures the new-connection rate from the client to the target in four states:
//!
//! - none: no ACL anywhere (hns's ACL tables do not exist);
//! - hns-1: the target has one rule, an Allow In for TCP port 80 (tables with 1 rule);
//! - hns-all: every endpoint, the target included, has RULES rules (ENDPOINTS x RULES), the
//!   target's Allow evaluated after its other RULES - 1 In rules (higher priority number);
//! - flat: the same rules, none in hns, written the way rule-per-match engines do: one linear
//!   nft chain in the bridge forward hook, one rule per rule (`oifname X` + the same match
//!   hns writes in the endpoint's chain), every other endpoint's rules first, the target's
//!   last, and the same stateful prelude as hns's (established connections accepted first).
//!
//! The rounds alternate the states, so each state sees the same machine load on average; the
//! report gives per-round rates, medians and ratios of medians to hns-1.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hns_kernel::nft_acl::{self, Action, Direction, Rule, Scope};
use serde_json::{Value, json};

use crate::netrate::{self, median};
use crate::Client;

/// Packet-mark bit of the flat rule set's connection-state marker (hns's own marker is gone
/// in that state, its tables are removed; a bit of our own keeps the two apart anyway).
const FLAT_MARK: u32 = 0x0100_0000;

/// The rules of endpoint `e`: RULES - 1 In rules that the client's connections do not match
/// (other sources, other ports; every third a Block), then the Allow In for TCP port 80 at the
/// highest priority number, so it is evaluated last.
fn rules(e: usize, n: usize) -> Vec<Rule> {
    let mut v: Vec<Rule> = (0..n.saturating_sub(1))
        .map(|i| Rule {
            id: format!("e{e}r{i}"),
            action: if i % 3 == 0 { Action::Block } else { Action::Allow },
            direction: Direction::In,
            scope: Scope::Switch,
            priority: (100 + i * 10) as u16,
            protocols: vec![6],
            local: vec![],
            remote: vec![format!("10.{}.{}.0/24", 100 + e / 250, e % 250).parse().unwrap()],
            local_ports: vec![(8000 + i as u16, 8000 + i as u16)],
            remote_ports: vec![],
        })
        .collect();
    v.push(allow_80(e, 100 + n * 10));
    v
}

fn allow_80(e: usize, priority: usize) -> Rule {
    Rule {
        id: format!("e{e}allow"),
        action: Action::Allow,
        direction: Direction::In,
        scope: Scope::Switch,
        priority: priority as u16,
        protocols: vec![6],
        local: vec![],
        remote: vec![],
        local_ports: vec![(80, 80)],
        remote_ports: vec![],
    }
}

/// The HNS v2 wire form of a rule.
fn policy(r: &Rule) -> Value {
    let join = |l: &[(u16, u16)]| l.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect::<Vec<_>>().join(",");
    json!({"Type": "ACL", "Settings": {
        "Id": r.id,
        "Action": if r.action == Action::Allow { "Allow" } else { "Block" },
        "Direction": if r.direction == Direction::In { "In" } else { "Out" },
        "RuleType": "Switch",
        "Priority": r.priority,
        "Protocols": r.protocols.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
        "LocalAddresses": comma(&r.local),
        "RemoteAddresses": comma(&r.remote),
        "LocalPorts": join(&r.local_ports),
        "RemotePorts": join(&r.remote_ports),
    }})
}

/// One nft rule per combination of a rule's lists, as rule-per-match engines write them.
fn flat_lines(r: &Rule) -> Vec<String> {
    let (laddr, raddr, lport, rport) = if r.direction == Direction::In { ("daddr", "saddr", "dport", "sport") } else { ("saddr", "daddr", "sport", "dport") };
    let opt = |v: Vec<String>| if v.is_empty() { vec![String::new()] } else { v };
    let addr = |kw: &str, l: Vec<String>| opt(l.iter().map(|n| format!("{} {kw} {n} ", if n.contains(':') { "ip6" } else { "ip" })).collect());
    let text = |l: &[_]| l.iter().map(ToString::to_string).collect::<Vec<String>>();
    let port = |kw: &str, l: &[(u16, u16)]| opt(l.iter().map(|(a, b)| if a == b { format!("th {kw} {a} ") } else { format!("th {kw} {a}-{b} ") }).collect());
    let verdict = if r.action == Action::Allow { "accept" } else { "drop" };
    let mut out = Vec::new();
    for p in opt(r.protocols.iter().map(|p| format!("meta l4proto {p} ")).collect()) {
        for l in addr(laddr, text(&r.local)) {
            for rm in addr(raddr, text(&r.remote)) {
                // One family per rule: a local IPv4 and a remote IPv6 address never meet.
                if l.starts_with("ip6") != rm.starts_with("ip6") && !l.is_empty() && !rm.is_empty() {
                    continue;
                }
                for lp in port(lport, &r.local_ports) {
                    for rp in port(rport, &r.remote_ports) {
                        out.push(format!("{l}{rm}{p}{lp}{rp}{verdict}"));
                    }
                }
            }
        }
    }
    out
}

fn comma<T: ToString>(l: &[T]) -> String {
    l.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// The flat rule set (nft notation): every rule of every endpoint, in `eps` order, one rule
/// each in one chain.
fn flat_program(eps: &[(String, Vec<Rule>)]) -> String {
    let mut body = Vec::new();
    for (veth, rules) in eps {
        for r in nft_acl::ordered(rules) {
            let side = if r.direction == Direction::In { "oifname" } else { "iifname" };
            for line in flat_lines(r) {
                body.push(format!("\t\t{side} \"{veth}\" {line}"));
            }
        }
    }
    let names: Vec<String> = eps.iter().map(|(v, _)| format!("\"{v}\"")).collect();
    let keep = !FLAT_MARK;
    let marker = |name: &str, hook: &str| {
        format!("\tchain {name} {{ type filter hook {hook} priority -150; policy accept; meta mark set meta mark & {keep:#x}; ct state established,related meta mark set meta mark | {FLAT_MARK:#x}; }}\n")
    };
    format!(
        "table inet flat_mark {{}}\ndelete table inet flat_mark\ntable bridge flat_acl {{}}\ndelete table bridge flat_acl\n\
         table inet flat_mark {{\n{}{}}}\n\
         table bridge flat_acl {{\n\tset acl_ports {{ type ifname; elements = {{ {} }}; }}\n\
         \tchain forward {{\n\t\ttype filter hook forward priority -10; policy accept;\n\
         \t\tmeta mark & {FLAT_MARK:#x} == {FLAT_MARK:#x} accept\n\t\tether type != {{ ip, ip6 }} accept\n{}\n\
         \t\toifname @acl_ports drop\n\t\tiifname @acl_ports drop\n\t}}\n}}\n",
        marker("pre", "prerouting"),
        marker("out", "output"),
        names.join(", "),
        body.join("\n")
    )
}

fn nft(program: &str) -> Result<()> {
    let mut c = Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().context("nft")?;
    std::io::Write::write_all(&mut c.stdin.take().context("stdin")?, program.as_bytes())?;
    let out = c.wait_with_output()?;
    if !out.status.success() {
        bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

struct Ep {
    id: String,
    veth: String,
    netns: String,
    ip: String,
}

fn modify(c: &mut Client, ep: &Ep, kind: &str, rules: &[Rule]) -> Result<()> {
    let ps: Vec<Value> = rules.iter().map(policy).collect();
    c.call("POST", &format!("/endpoints/{}", ep.id), Some(&json!({"ResourceType": "Policy", "RequestType": kind, "Settings": {"Policies": ps}})))?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    None,
    One,
    All,
    Flat,
}

const STATES: [(State, &str); 4] = [(State::None, "none"), (State::One, "hns-1"), (State::All, "hns-all"), (State::Flat, "flat")];

pub fn inner(sock: &Path, endpoints: usize, per: usize, rounds: usize, seconds: f64, clients: usize) -> Result<()> {
    let mut c = Client::connect(sock)?;
    c.call("POST", "/networks", Some(&json!({"Name": "acl", "Type": "NAT", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.240.0.0/16"}]}]})))?;
    let t = Instant::now();
    let attach = |c: &mut Client, name: &str| -> Result<Ep> {
        let ns = c.call("POST", "/namespaces", Some(&json!({})))?;
        let ep = c.call("POST", "/endpoints", Some(&json!({"Name": name, "HostComputeNetwork": "acl", "HostComputeNamespace": ns["ID"]})))?;
        let id = ep["ID"].as_str().context("endpoint ID")?.to_owned();
        Ok(Ep {
            veth: hns_kernel::names::veth_host_name(&id),
            id,
            netns: ns["NetNsPath"].as_str().context("NetNsPath")?.to_owned(),
            ip: ep["IpConfigurations"][0]["IpAddress"].as_str().context("address")?.to_owned(),
        })
    };
    let client = attach(&mut c, "client")?;
    let target = attach(&mut c, "target")?;
    let others: Vec<Ep> = (0..endpoints - 1).map(|i| attach(&mut c, &format!("o{i}"))).collect::<Result<_>>()?;
    let fill = t.elapsed().as_secs_f64();
    // The target is endpoint number ENDPOINTS - 1 of the rule sets: last in the flat chain.
    let other_rules: Vec<Vec<Rule>> = (0..endpoints - 1).map(|e| rules(e, per)).collect();
    let target_rules = rules(endpoints - 1, per);
    let (target_allow, target_rest) = target_rules.split_last().context("rules")?;
    // The flat state's target rule set is the hns-all one; hns-1's Allow has the same match.
    let mut flat_eps: Vec<(String, Vec<Rule>)> = others.iter().zip(&other_rules).map(|(e, r)| (e.veth.clone(), r.clone())).collect();
    flat_eps.push((target.veth.clone(), target_rules.clone()));
    let flat = flat_program(&flat_eps);
    let flat_rules = flat.lines().filter(|l| l.starts_with("\t\toifname \"") || l.starts_with("\t\tiifname \"")).count();

    // Connections end with a reset: conntrack keeps them CLOSE for 10 s by default, so a state
    // measured right after another would look them up among the previous run's entries (and
    // 3 s at 50 000/s approach nf_conntrack_max). 1 s clears them between runs.
    std::fs::write("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close", "1").context("conntrack close timeout of the lab host")?;
    let mut server = netrate::start_server(&target.netns, "0.0.0.0:80")?;
    let addr = format!("{}:80", target.ip);
    let closed = format!("{}:81", target.ip);
    println!("# acl-rate: nat network, {endpoints} endpoints with {per} rules each in the hns-all and flat states ({} rules), client and target on the same bridge", endpoints * per);
    println!("# filling {} endpoints through the API took {fill:.1} s; flat chain: {flat_rules} rules", endpoints + 1);
    println!("# {clients} client threads, connect + reset (SYN, SYN-ACK, ACK, RST), {seconds} s per measurement, {rounds} rounds, states in order none, hns-1, hns-all, flat");

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); STATES.len()];
    let mut switch_s: Vec<(String, f64)> = Vec::new();
    let result = (|| -> Result<()> {
        for round in 0..rounds {
            for (k, (state, name)) in STATES.iter().enumerate() {
                let t = Instant::now();
                // A new API connection per switch: hnsd closes a keep-alive connection that
                // stayed idle through the measurements.
                c = Client::connect(sock)?;
                match state {
                    State::None => {
                        if round > 0 {
                            nft("delete table bridge flat_acl\ndelete table inet flat_mark\n")?;
                        }
                    }
                    State::One => modify(&mut c, &target, "Add", std::slice::from_ref(target_allow))?,
                    State::All => {
                        for (e, r) in others.iter().zip(&other_rules) {
                            modify(&mut c, e, "Add", r)?;
                        }
                        modify(&mut c, &target, "Add", target_rest)?;
                    }
                    State::Flat => {
                        for (e, r) in others.iter().zip(&other_rules) {
                            modify(&mut c, e, "Remove", r)?;
                        }
                        modify(&mut c, &target, "Remove", &target_rules)?;
                        nft(&flat)?;
                    }
                }
                // Entries of the previous run expire first (see the close timeout above).
                std::thread::sleep(std::time::Duration::from_millis(1500));
                if round == 0 {
                    switch_s.push((name.to_string(), t.elapsed().as_secs_f64()));
                    // The rules are in force: port 81 (closed) is refused without ACLs and
                    // silently dropped by the default drop of every state with rules.
                    let probe = check(&client.netns, &closed)?;
                    let want = if *state == State::None { "refused" } else { "timeout" };
                    if probe != want {
                        bail!("state {name}: a connection to {closed} was {probe}, expected {want}");
                    }
                    if *state == State::All {
                        let chains = Command::new("nft").args(["-t", "list", "table", "bridge", "hns_acl"]).output()?;
                        let n = String::from_utf8_lossy(&chains.stdout).lines().filter(|l| l.trim_start().starts_with("chain ")).count();
                        println!("# hns-all: bridge hns_acl holds {n} chains");
                    }
                }
                let (r, line) = netrate::measure(&client.netns, &addr, seconds, clients)?;
                let tracked = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count").unwrap_or_default();
                println!("round {} {name:<8} {line} conntrack_after={}", round + 1, tracked.trim());
                rates[k].push(r);
            }
        }
        Ok(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    let _ = nft("table bridge flat_acl {}\ndelete table bridge flat_acl\ntable inet flat_mark {}\ndelete table inet flat_mark\n");
    result?;
    println!("# switching into each state (first round): {}", switch_s.iter().map(|(n, s)| format!("{n} {s:.1} s")).collect::<Vec<_>>().join(", "));
    let base = median(&rates[1]);
    println!("\nstate     median conn/s   ratio to hns-1   per-round ratio median   (rates per round)");
    for (k, (_, name)) in STATES.iter().enumerate() {
        let per_round: Vec<f64> = rates[k].iter().zip(&rates[1]).map(|(a, b)| a / b).collect();
        println!(
            "{name:<9} {:>13.0}   {:>14.3}   {:>22.3}   ({})",
            median(&rates[k]),
            median(&rates[k]) / base,
            median(&per_round),
            rates[k].iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" ")
        );
    }
    println!(
        "\n[P1] hns-all/hns-1 = {:.3} (goal >= 0.95); flat/hns-1 = {:.3}",
        median(&rates[2]) / base,
        median(&rates[3]) / base
    );
    Ok(())
}

/// Whether a connection to `addr` from the namespace at `netns` is accepted ("open"),
/// refused, or gets no answer within 300 ms ("timeout").
fn check(netns: &str, addr: &str) -> Result<String> {
    let out = Command::new("nsenter").arg(format!("--net={netns}")).arg(std::env::current_exe()?).args(["conn-check", addr]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
