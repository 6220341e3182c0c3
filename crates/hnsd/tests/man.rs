//! Manual pages from the clap definitions: `hnsctl man` (hnsctl.1), `hnsctl man --dir` (a page
//! per command) and `hnsd --man` (hnsd.8) are roff that names every subcommand and option.

use std::collections::BTreeSet;
use std::process::Command;

use hns_lab::Lab;

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(Lab::bin(bin).unwrap()).args(args).output().unwrap();
    assert!(out.status.success(), "{bin} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The roff requests a man page may use (those of the man macro package and the few plain
/// requests clap_mangen writes).
const REQUESTS: &[&str] = &["TH", "SH", "SS", "TP", "PP", "P", "LP", "IP", "RS", "RE", "B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "nf", "fi", "br", "sp", "in", "ie", "el", "ds", "EX", "EE"];

/// Structure checks of a man page, and groff's own warnings when groff is installed.
fn assert_valid_roff(page: &str, name: &str, section: &str) {
    assert!(page.contains(&format!(".TH {name} {section} ")), "{name}: no title line:\n{page}");
    for s in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS"] {
        assert!(page.lines().any(|l| l == format!(".SH {s}")), "{name}: no {s} section");
    }
    for l in page.lines().filter(|l| l.starts_with('.')) {
        let req = l[1..].split([' ', '\t']).next().unwrap();
        assert!(REQUESTS.contains(&req), "{name}: unknown roff request {req:?} in {l:?}");
    }
    if let Ok(mut child) = Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn() {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{name}: groff warns: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The subcommand names of a `--help` text (its `Commands:` section; wrapped descriptions are
/// indented further).
fn commands_of(help: &str) -> Vec<String> {
    help.split("Commands:\n")
        .nth(1)
        .map(|rest| rest.lines().take_while(|l| l.starts_with("  ")).filter(|l| !l.starts_with("   ")).map(|l| l.split_whitespace().next().unwrap().to_owned()).filter(|c| c != "help").collect())
        .unwrap_or_default()
}

#[test]
fn hnsctl_page_names_every_subcommand_and_man_dir_writes_one_page_each() {
    let page = run("hnsctl", &["man"]);
    assert_valid_roff(&page, "hnsctl", "1");
    let commands = commands_of(&run("hnsctl", &["--help"]));
    assert!(commands.len() >= 14 && commands.contains(&"events".to_owned()) && commands.contains(&"man".to_owned()), "{commands:?}");
    for c in &commands {
        assert!(page.contains(&format!("hnsctl\\-{c}(1)")), "hnsctl.1 does not name `hnsctl {c}`");
    }
    for flag in ["socket", "format"] {
        assert!(page.contains(&format!("\\fB\\-\\-{flag}\\fR")), "hnsctl.1 lacks --{flag}");
    }

    let dir = std::env::temp_dir().join(format!("hnsctl-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    run("hnsctl", &["man", "--dir", dir.to_str().unwrap()]);
    let files: BTreeSet<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(files.contains("hnsctl.1"), "{files:?}");
    for c in &commands {
        let f = format!("hnsctl-{c}.1");
        assert!(files.contains(&f), "no {f} in {files:?}");
        let page = std::fs::read_to_string(dir.join(&f)).unwrap();
        assert_valid_roff(&page, &format!("hnsctl-{c}"), "1");
    }
    // Nested subcommands get their own page, naming their options.
    for c in commands_of(&run("hnsctl", &["network", "--help"])) {
        assert!(files.contains(&format!("hnsctl-network-{c}.1")), "no page for network {c}: {files:?}");
    }
    let events = std::fs::read_to_string(dir.join("hnsctl-events.1")).unwrap();
    assert!(events.contains("\\-\\-filter") && events.contains("\\-\\-since") && events.contains("type=endpoint"), "{events}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hnsd_page_names_every_option() {
    let page = run("hnsd", &["--man"]);
    assert_valid_roff(&page, "hnsd", "8");
    let help = run("hnsd", &["--help"]);
    let flags: Vec<&str> = help.split_whitespace().filter(|w| w.starts_with("--")).map(|w| w.trim_end_matches([',', '.', ')'])).collect();
    assert!(flags.len() > 20, "{flags:?}");
    for f in flags {
        let name = f.split(['=', '<']).next().unwrap();
        assert!(page.contains(&name.replace('-', "\\-")), "hnsd.8 does not name {name}");
    }
}
