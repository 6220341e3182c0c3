//! The command's environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS` (CNI SPEC "Parameters"; CNI_PATH is not needed: hns-cni delegates nothing).

use crate::error::{CniError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// `CNI_ARGS` keys hns-cni reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    /// `IP=`: static addresses (comma-separated; podman passes one for `--ip`).
    pub ips: Vec<String>,
    /// `MAC=`: podman's `--mac-address`.
    pub mac: String,
    pub pod_name: String,
    pub pod_namespace: String,
}

#[derive(Debug, Clone, Default)]
pub struct Env {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Args,
}

/// Reads the command; the rest is read by [`Env::read`] once the command is known.
pub fn command(get: &impl Fn(&str) -> Option<String>) -> Result<Command> {
    let raw = get("CNI_COMMAND").unwrap_or_default();
    Command::parse(&raw).ok_or_else(|| {
        CniError::env(format!("CNI_COMMAND {raw:?} is not a CNI command: use ADD, DEL, CHECK, GC, STATUS or VERSION"))
    })
}

impl Env {
    /// The variables `cmd` needs, checked as the spec requires (container ID and interface
    /// name by libcni's rules).
    pub fn read(cmd: Command, get: &impl Fn(&str) -> Option<String>) -> Result<Env> {
        let attach = matches!(cmd, Command::Add | Command::Del | Command::Check);
        if !attach {
            return Ok(Env::default());
        }
        let required = |key: &str| {
            get(key).filter(|v| !v.is_empty()).ok_or_else(|| CniError::env(format!("{key} is required for {}", cmd.name())))
        };
        let container_id = required("CNI_CONTAINERID")?;
        check_container_id(&container_id)?;
        let ifname = required("CNI_IFNAME")?;
        check_ifname(&ifname)?;
        // DEL may come after the namespace is gone: CNI_NETNS is optional there.
        let netns = if cmd == Command::Del { get("CNI_NETNS").unwrap_or_default() } else { required("CNI_NETNS")? };
        if !netns.is_empty() && !netns.starts_with('/') {
            return Err(CniError::env(format!("CNI_NETNS {netns:?} must be the absolute path of a network namespace, such as /run/netns/x")));
        }
        let args = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
        Ok(Env { container_id, netns, ifname, args })
    }
}

/// libcni's rule: a letter or digit, then letters, digits, `_`, `.`, `-`.
fn check_container_id(id: &str) -> Result<()> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::env(format!("CNI_CONTAINERID {id:?} is not a container ID: use letters, digits, '_', '.', '-', starting with a letter or digit")))
    }
}

/// The kernel's rule for interface names (libcni checks the same).
fn check_ifname(name: &str) -> Result<()> {
    let ok = name.len() <= 15 && name != "." && name != ".." && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(CniError::env(format!("CNI_IFNAME {name:?} is not a Linux interface name: use 1 to 15 characters, not \".\" or \"..\", without '/', ':' or spaces")))
    }
}

/// `K=V;K2=V2`. Unknown keys are refused unless `IgnoreUnknown` is `1` or `true` (the rule of
/// containernetworking's `LoadArgs`).
pub fn parse_args(raw: &str) -> Result<Args> {
    let mut args = Args::default();
    let mut unknown = Vec::new();
    let mut ignore_unknown = false;
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::env(format!("CNI_ARGS: {pair:?} is not a KEY=VALUE pair")));
        };
        match k {
            "IgnoreUnknown" => ignore_unknown = matches!(v.to_ascii_lowercase().as_str(), "1" | "true"),
            "IP" => args.ips = v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            "MAC" => args.mac = v.to_owned(),
            "K8S_POD_NAME" => args.pod_name = v.to_owned(),
            "K8S_POD_NAMESPACE" => args.pod_namespace = v.to_owned(),
            // Known to Kubernetes runtimes, carried no further.
            "K8S_POD_INFRA_CONTAINER_ID" | "K8S_POD_UID" => {}
            _ => unknown.push(k.to_owned()),
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(CniError::env(format!(
            "CNI_ARGS: unknown key(s) {}; hns-cni reads IP, MAC, K8S_POD_NAME, K8S_POD_NAMESPACE (add IgnoreUnknown=1 to pass others)",
            unknown.join(", ")
        )));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args() {
        let a = parse_args("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.5;MAC=aa:bb:cc:dd:ee:ff;FOO=bar").unwrap();
        assert_eq!((a.pod_name.as_str(), a.ips.as_slice(), a.mac.as_str()), ("web", &["10.0.0.5".to_owned()][..], "aa:bb:cc:dd:ee:ff"));
        let e = parse_args("FOO=bar").unwrap_err();
        assert!(e.msg.contains("FOO") && e.code == 4, "{e:?}");
        assert!(parse_args("junk").unwrap_err().msg.contains("\"junk\""));
        assert_eq!(parse_args("").unwrap(), Args::default());
    }

    #[test]
    fn env_rules() {
        let vars = |v: &'static [(&'static str, &'static str)]| move |k: &str| v.iter().find(|(n, _)| *n == k).map(|(_, x)| x.to_string());
        let ok = vars(&[("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/run/netns/x")]);
        assert_eq!(Env::read(Command::Add, &ok).unwrap().ifname, "eth0");
        let no_ns = vars(&[("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")]);
        assert!(Env::read(Command::Add, &no_ns).unwrap_err().msg.contains("CNI_NETNS is required for ADD"));
        assert!(Env::read(Command::Del, &no_ns).is_ok());
        let bad = vars(&[("CNI_CONTAINERID", "-x"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/x")]);
        assert!(Env::read(Command::Add, &bad).unwrap_err().msg.contains("CNI_CONTAINERID"));
        let long = vars(&[("CNI_CONTAINERID", "a"), ("CNI_IFNAME", "abcdefghijklmnop"), ("CNI_NETNS", "/x")]);
        assert!(Env::read(Command::Add, &long).unwrap_err().msg.contains("CNI_IFNAME"));
    }
}
