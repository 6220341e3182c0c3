//! `hns-bench cni`: ADD and DEL through the exec'd `hns-cni` (one process per command, config on
//! stdin, exactly as a runtime calls it), next to the reference chain bridge + host-local +
//! portmap in the same run. Every container gets one port mapping, so both sides do the same
//! work. The namespaces are bind-mounted files, as runtimes make them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{Series, ms};

/// Execs `plugin` with the CNI variables; returns stdout.
fn exec(plugin: &Path, cmd: &str, id: &str, netns: &str, path: &Path, conf: &Value) -> Result<String> {
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", path)
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAME={id}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("exec {}", plugin.display()))?;
    child.stdin.take().expect("piped").write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{} {cmd} failed: {stdout}{}", plugin.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(stdout)
}

fn mapping(i: usize, base: usize) -> Value {
    json!({ "portMappings": [{ "hostPort": base + i, "containerPort": 80, "protocol": "tcp" }] })
}

pub fn inner(sock: &Path, count: usize, cni_path: &Path) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("hns-bench-cni-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("netns"))?;
    let spaces: Vec<String> = (0..count).map(|i| dir.join("netns").join(format!("c{i}")).display().to_string()).collect();
    for p in &spaces {
        std::fs::write(p, "")?;
        let st = Command::new("unshare").arg(format!("--net={p}")).arg("true").status()?;
        if !st.success() {
            bail!("unshare --net={p} failed");
        }
    }
    let result = measure(sock, &spaces, cni_path, &dir);
    for p in &spaces {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(sock: &Path, spaces: &[String], cni_path: &Path, dir: &Path) -> Result<()> {
    let hns_cni: PathBuf = std::env::current_exe()?.with_file_name("hns-cni");
    println!("CNI ADD/DEL benchmark: {} containers, one port mapping each, every command one exec; release hnsd and hns-cni", spaces.len());
    // The network exists beforehand (as a node's conflist network would).
    let conf = |rc: Value| json!({ "cniVersion": "1.0.0", "name": "benchnet", "type": "hns", "socket": sock, "ipam": { "subnet": "10.210.0.0/16" }, "runtimeConfig": rc });
    exec(&hns_cni, "ADD", "warmup", &spaces[0], cni_path, &conf(json!({})))?;
    exec(&hns_cni, "DEL", "warmup", &spaces[0], cni_path, &conf(json!({})))?;
    // The floor: starting the process and answering VERSION (no request to hnsd).
    let mut start = Series::new("hns-cni VERSION (process start, no request)");
    for _ in spaces {
        let t = Instant::now();
        exec(&hns_cni, "VERSION", "", "", cni_path, &json!({ "cniVersion": "1.0.0" }))?;
        start.samples.push(ms(t));
    }
    let mut add = Series::new("hns-cni ADD (endpoint + port mapping)");
    let mut del = Series::new("hns-cni DEL");
    for (i, ns) in spaces.iter().enumerate() {
        let t = Instant::now();
        exec(&hns_cni, "ADD", &format!("c{i}"), ns, cni_path, &conf(mapping(i, 20000)))?;
        add.samples.push(ms(t));
    }
    for (i, ns) in spaces.iter().enumerate() {
        let t = Instant::now();
        exec(&hns_cni, "DEL", &format!("c{i}"), ns, cni_path, &conf(mapping(i, 20000)))?;
        del.samples.push(ms(t));
    }
    let block = spaces.len();
    start.print(block);
    add.print(block);
    del.print(block);
    if !cni_path.join("bridge").exists() || !cni_path.join("portmap").exists() {
        println!("\npeer skipped: no bridge/portmap in {} (apt-get install containernetworking-plugins)", cni_path.display());
        return Ok(());
    }
    // The peer: bridge (host-local IPAM, ipMasq) then portmap with the bridge's result.
    let bridge = json!({
        "cniVersion": "1.0.0", "name": "peernet", "type": "bridge", "bridge": "cni-bench0", "isGateway": true, "ipMasq": true,
        "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.230.0.0/16" }]], "routes": [{ "dst": "0.0.0.0/0" }], "dataDir": dir.join("ipam") }
    });
    let portmap = |i: usize, prev: &Value| {
        json!({ "cniVersion": "1.0.0", "name": "peernet", "type": "portmap", "snat": true, "runtimeConfig": mapping(i, 30000), "prevResult": prev })
    };
    let mut padd = Series::new("peer ADD: bridge + host-local, then portmap");
    let mut pdel = Series::new("peer DEL: portmap, then bridge + host-local");
    let mut results = Vec::new();
    for (i, ns) in spaces.iter().enumerate() {
        let t = Instant::now();
        let r: Value = serde_json::from_str(&exec(&cni_path.join("bridge"), "ADD", &format!("c{i}"), ns, cni_path, &bridge)?)?;
        exec(&cni_path.join("portmap"), "ADD", &format!("c{i}"), ns, cni_path, &portmap(i, &r))?;
        padd.samples.push(ms(t));
        results.push(r);
    }
    for (i, ns) in spaces.iter().enumerate() {
        let t = Instant::now();
        exec(&cni_path.join("portmap"), "DEL", &format!("c{i}"), ns, cni_path, &portmap(i, &results[i]))?;
        exec(&cni_path.join("bridge"), "DEL", &format!("c{i}"), ns, cni_path, &bridge)?;
        pdel.samples.push(ms(t));
    }
    let _ = Command::new("ip").args(["link", "del", "cni-bench0"]).status();
    padd.print(block);
    pdel.print(block);
    println!(
        "\nratios of p50 (peer / hns-cni): ADD {:.1}x, DEL {:.1}x",
        padd.overall_p50() / add.overall_p50(),
        pdel.overall_p50() / del.overall_p50()
    );
    Ok(())
}
