//! hns-cni: a CNI plugin (spec 1.1.0; 0.3.x to 1.1.0 results) that attaches containers to hns
//! networks. The runtime execs it with `CNI_*` variables and the network config on stdin; it
//! asks hnsd over its API socket and prints the result (or error) on stdout. All state lives in
//! hnsd: the plugin is a few blocking requests, no runtime, no files of its own.

mod commands;
mod config;
mod env;
mod error;
mod hns;
mod netns;
mod result;
mod version;
mod windows;

use std::io::{Read, Write};

use serde_json::{Value, json};

use crate::commands::Ctx;
use crate::config::NetConf;
use crate::env::{Command, Env};
use crate::error::{CniError, Result, code};

fn main() {
    let get = |k: &str| std::env::var(k).ok();
    let mut stdin = Vec::new();
    let (out, status) = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(&get, &stdin),
        Err(e) => (Some(CniError::new(code::IO_FAILURE, format!("reading stdin: {e}")).to_json(version::LATEST)), 1),
    };
    if let Some(v) = out {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{v}");
    }
    std::process::exit(status);
}

/// The output (none for a successful DEL, CHECK, GC, STATUS) and the exit status.
fn run(get: &impl Fn(&str) -> Option<String>, stdin: &[u8]) -> (Option<Value>, i32) {
    // Errors are written in the config's version when it names a supported one.
    let asked = serde_json::from_slice::<Value>(stdin).ok().and_then(|v| v["cniVersion"].as_str().map(str::to_owned));
    let err_version = asked.clone().filter(|v| version::is_supported(v)).unwrap_or_else(|| version::LATEST.to_owned());
    match execute(get, stdin, asked) {
        Ok(out) => (out, 0),
        Err(e) => {
            eprintln!("hns-cni: {}", e.msg);
            (Some(e.to_json(&err_version)), 1)
        }
    }
}

fn execute(get: &impl Fn(&str) -> Option<String>, stdin: &[u8], asked: Option<String>) -> Result<Option<Value>> {
    let cmd = env::command(get)?;
    if cmd == Command::Version {
        let v = asked.unwrap_or_else(|| version::LATEST.to_owned());
        return Ok(Some(json!({ "cniVersion": v, "supportedVersions": version::SUPPORTED })));
    }
    let conf = NetConf::parse(stdin)?;
    let version = conf.result_version()?;
    let env = Env::read(cmd, get)?;
    let hns = hns::Hns::new(conf.socket());
    let ctx = Ctx { conf, env, version, hns };
    match cmd {
        Command::Add => ctx.add().map(Some),
        Command::Del => ctx.del().map(|_| None),
        Command::Check => ctx.check().map(|_| None),
        Command::Gc => ctx.gc().map(|_| None),
        Command::Status => ctx.status().map(|_| None),
        Command::Version => unreachable!("answered above"),
    }
}
