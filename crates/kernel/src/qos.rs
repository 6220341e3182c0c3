//! Rate caps of the `QOS` endpoint policy, in the host namespace (out of the container's
//! reach), with tc.
//!
//! - Outgoing (what the endpoint sends, i.e. what arrives on its host veth): an `ingress`
//!   qdisc on the host veth whose one u32 filter (match everything) redirects every packet
//!   with `mirred` to the endpoint's own IFB device ([`crate::names::ifb_name`]), which has a
//!   `tbf` root qdisc at the cap. (This kernel has no `police` action, which would cap the
//!   ingress directly, nor `matchall`; u32 with an empty match is the match-all here.)
//! - Incoming (what the endpoint receives): a `tbf` root qdisc on the host veth.
//!
//! The qdiscs and filters go through the `tc` binary: netlink-packet-route 0.34 models
//! neither `tbf` options nor the `mirred` action inside u32 filters we need, and tbf's
//! parameters (rate tables, ticks) are what tc computes. The IFB link itself is created over
//! rtnetlink, in hns's device group, so the reconciler's link garbage collection covers it.
//!
//! Burst: 50 ms worth of the rate, at least 10 full frames; queue latency 25 ms (the CNI
//! bandwidth plugin's value). UDP senders are not paced, only dropped at the cap: pacing
//! needs the qdisc on the sender's own device, inside the compartment.

use std::process::{Command, Stdio};

use netlink_packet_route::link::InfoKind;
use rtnetlink::{LinkMessageBuilder, LinkUnspec};

use crate::error::{KernelError, Result};
use crate::names;
use crate::netlink::{Netlink, nl_err};

/// Queue latency of the tbf qdiscs.
pub const LATENCY_MS: u64 = 25;

/// The burst (bytes) of a cap of `rate` bytes per second.
pub fn burst(rate: u64) -> u64 {
    (rate / 20).max(15_140)
}

/// The tc commands (one `tc -batch` line each) that cap `host_if`'s endpoint: outgoing through
/// `ifb`, incoming on `host_if` itself. `None` removes that side's cap (every line works
/// whether or not the thing existed: the caller runs with `-force`).
pub fn commands(host_if: &str, ifb: &str, outgoing: Option<u64>, incoming: Option<u64>) -> Vec<String> {
    let tbf = |dev: &str, rate: u64| format!("qdisc replace dev {dev} root tbf rate {}bit burst {} latency {LATENCY_MS}ms", rate * 8, burst(rate));
    let mut out = Vec::new();
    match outgoing {
        Some(rate) => {
            out.push(tbf(ifb, rate));
            // Replacing the ingress qdisc drops its old filter: one filter, always.
            out.push(format!("qdisc del dev {host_if} ingress"));
            out.push(format!("qdisc add dev {host_if} handle ffff: ingress"));
            out.push(format!("filter add dev {host_if} parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev {ifb}"));
        }
        None => out.push(format!("qdisc del dev {host_if} ingress")),
    }
    match incoming {
        Some(rate) => out.push(tbf(host_if, rate)),
        None => out.push(format!("qdisc del dev {host_if} root")),
    }
    out
}

fn tc(args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("tc")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KernelError::io("run tc", args.join(" "), e))?;
    if let Some(s) = stdin {
        child.stdin.take().expect("piped").write_all(s.as_bytes()).map_err(|e| KernelError::io("write tc batch", "tc", e))?;
    }
    let out = child.wait_with_output().map_err(|e| KernelError::io("wait for tc", "tc", e))?;
    if !out.status.success() {
        return Err(KernelError::new("run tc", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs [`commands`]; the deletes of things that are not there are not errors.
pub fn apply(host_if: &str, ifb: &str, outgoing: Option<u64>, incoming: Option<u64>) -> Result<()> {
    let lines = commands(host_if, ifb, outgoing, incoming);
    // `-force` keeps going after an error; deletes of absent qdiscs are the expected ones.
    let batch: String = lines.iter().filter(|l| l.starts_with("qdisc del")).map(|l| format!("{l}\n")).collect();
    let _ = tc(&["-force", "-batch", "-"], Some(&batch));
    let adds: String = lines.iter().filter(|l| !l.starts_with("qdisc del")).map(|l| format!("{l}\n")).collect();
    if adds.is_empty() {
        return Ok(());
    }
    tc(&["-batch", "-"], Some(&adds)).map(|_| ()).map_err(|e| KernelError { object: host_if.to_owned(), ..e })
}

/// The tbf rate (bytes per second) of `dev`'s root qdisc, if it has one.
fn tbf_rate(dev: &str) -> Option<u64> {
    let out = tc(&["-j", "qdisc", "show", "dev", dev], None).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v.as_array()?.iter().find(|q| q["kind"] == "tbf" && q["root"] == true)?["options"]["rate"].as_u64()
}

/// Whether the kernel holds the caps [`apply`] writes, compared by content: the tbf rates
/// (tc rounds to its own units: within 1 %) and the redirect filter.
pub fn matches(host_if: &str, ifb: &str, outgoing: Option<u64>, incoming: Option<u64>) -> bool {
    let close = |got: Option<u64>, want: Option<u64>| match (got, want) {
        (Some(g), Some(w)) => g.abs_diff(w) * 100 <= w,
        (None, None) => true,
        _ => false,
    };
    if let Some(rate) = outgoing {
        let filter = tc(&["filter", "show", "dev", host_if, "parent", "ffff:"], None).unwrap_or_default().to_ascii_lowercase();
        // tc shows "mirred (Egress Redirect to device NAME)".
        if !filter.contains(&format!("egress redirect to device {ifb}")) || !close(tbf_rate(ifb), Some(rate)) {
            return false;
        }
    }
    close(tbf_rate(host_if), incoming)
}

impl Netlink {
    /// Creates the IFB device `name` (up, in hns's device group), or leaves an existing one.
    pub async fn ensure_ifb(&self, name: &str) -> Result<()> {
        match self.link_by_name(name).await? {
            Some(l) => {
                l.check_ours("create IFB")?;
                if !l.up {
                    self.set_up(name).await?;
                }
                return Ok(());
            }
            None => {
                let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Ifb).name(name.to_owned()).link_group(names::HNS_GROUP).up().build();
                if let Err(e) = self.handle.link().add(msg).execute().await {
                    let e = nl_err("create IFB", name, e);
                    if !e.is_exists() {
                        return Err(e);
                    }
                }
            }
        }
        self.set_up(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_snapshot() {
        assert_eq!(
            commands("hnv1", "hnf1", Some(125_000), None),
            vec![
                "qdisc replace dev hnf1 root tbf rate 1000000bit burst 15140 latency 25ms",
                "qdisc del dev hnv1 ingress",
                "qdisc add dev hnv1 handle ffff: ingress",
                "filter add dev hnv1 parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev hnf1",
                "qdisc del dev hnv1 root",
            ]
        );
        assert_eq!(commands("hnv1", "hnf1", None, Some(10_000_000)), vec!["qdisc del dev hnv1 ingress", "qdisc replace dev hnv1 root tbf rate 80000000bit burst 500000 latency 25ms"]);
        assert_eq!(burst(1_000_000), 50_000);
    }
}
