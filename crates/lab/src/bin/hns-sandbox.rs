//! `hns-sandbox`: the throwaway lab behind `hnsd --sandbox`, a binary of its own so that the
//! shipped daemon does not link the test lab. hnsd execs it (found beside hnsd) with its own path.
//!
//! Usage: hns-sandbox --hnsd PATH [--dir DIR] [-- HNSD-ARGS...]

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hns_lab::{SandboxOpts, run_sandbox};

fn main() -> Result<()> {
    let mut opts = SandboxOpts::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--hnsd" => opts.hnsd_bin = PathBuf::from(args.next().context("--hnsd needs the path of the hnsd binary")?),
            "--dir" => opts.dir = PathBuf::from(args.next().context("--dir needs a directory")?),
            "--" => {
                opts.hnsd_args = args.by_ref().collect();
            }
            "-h" | "--help" => {
                println!("hns-sandbox --hnsd PATH [--dir DIR] [-- HNSD-ARGS...]\n\nRun by `hnsd --sandbox`; see `hnsd --help`.");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (usage: hns-sandbox --hnsd PATH [--dir DIR] [-- HNSD-ARGS...])"),
        }
    }
    if opts.hnsd_bin.as_os_str().is_empty() {
        bail!("--hnsd PATH is required: the hnsd binary to run inside the sandbox");
    }
    run_sandbox(opts)
}
