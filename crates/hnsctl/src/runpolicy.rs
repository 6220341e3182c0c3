//! The endpoint policies `hnsctl run` asks for (-p, --max-bandwidth, --acl, --outbound-nat),
//! each with the flag and value it came from, so that hnsd's refusal of `Policies[3]` is
//! shown as the refusal of the flag that made it.

use std::net::IpAddr;

use hns_api::{ApiError, Policy};
use serde_json::json;

use crate::commands::policy::{parse_rule, settings};
use crate::error::CliError;
use crate::{RunArgs, portspec};

/// A policy and how the command line gave it (`--acl "allow in ..."`).
#[derive(Debug, Clone, PartialEq)]
pub struct Labeled {
    pub policy: Policy,
    pub flag: String,
}

/// True when `run` was asked for a policy that lives on an endpoint (other than -p).
pub fn wants_endpoint_policies(a: &RunArgs) -> bool {
    a.max_bandwidth.is_some() || !a.acl.is_empty() || a.outbound_nat.is_some() || !a.outbound_nat_exception.is_empty()
}

/// Every endpoint policy of `run`'s flags, in the order of the flags' kinds.
pub fn run_policies(a: &RunArgs) -> Result<Vec<Labeled>, String> {
    let mut out = Vec::new();
    for spec in &a.publish {
        for m in portspec::parse_publish(spec)? {
            out.push(Labeled { policy: portspec::policy(&m), flag: format!("-p {spec}") });
        }
    }
    if let Some(rate) = &a.max_bandwidth {
        let bytes = crate::rate::bytes_per_second(rate)?;
        let policy = Policy { kind: "QOS".into(), settings: json!({ "MaximumOutgoingBandwidthInBytes": bytes }) };
        out.push(Labeled { policy, flag: format!("--max-bandwidth {rate}") });
    }
    for rule in &a.acl {
        let r = parse_rule(rule).map_err(|e| format!("--acl {rule:?}: {e}"))?;
        out.push(Labeled { policy: Policy { kind: "ACL".into(), settings: settings(&r) }, flag: format!("--acl {rule:?}") });
    }
    out.extend(outbound_nat(a.outbound_nat.as_deref(), &a.outbound_nat_exception)?);
    Ok(out)
}

/// Checks an exception's shape (address or prefix) and tells its family; hnsd checks the rest.
fn exception_family(text: &str, flag: &str) -> Result<bool, String> {
    let bad = || format!("{flag}: {text:?} is not an address or prefix (such as 10.244.0.0/16)");
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    if let Some(l) = len {
        let max = if ip.is_ipv6() { 128 } else { 32 };
        l.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(bad)?;
    }
    Ok(ip.is_ipv6())
}

/// The OutBoundNAT policies of `--outbound-nat[=LIST]` and `--outbound-nat-exception`: one for
/// IPv4, and one for IPv6 (Flags 2) when an IPv6 exception is given, as HNS takes one policy
/// per family.
pub fn outbound_nat(given: Option<&str>, exceptions: &[String]) -> Result<Vec<Labeled>, String> {
    if given.is_none() && exceptions.is_empty() {
        return Ok(Vec::new());
    }
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let listed = given.unwrap_or_default().split(',').map(|e| (e.trim(), format!("--outbound-nat={}", given.unwrap_or_default())));
    let single = exceptions.iter().map(|e| (e.trim(), format!("--outbound-nat-exception {e}")));
    for (e, flag) in listed.chain(single).filter(|(e, _)| !e.is_empty()) {
        if exception_family(e, &flag)? { v6.push(e.to_owned()) } else { v4.push(e.to_owned()) }
    }
    let flag = match (given, exceptions.first()) {
        (Some(""), _) | (None, None) => "--outbound-nat".to_owned(),
        (Some(list), _) => format!("--outbound-nat={list}"),
        (None, Some(e)) => format!("--outbound-nat-exception {e}"),
    };
    let mut out = vec![Labeled { policy: Policy { kind: "OutBoundNAT".into(), settings: json!({ "Exceptions": v4 }) }, flag: flag.clone() }];
    if !v6.is_empty() {
        out.push(Labeled { policy: Policy { kind: "OutBoundNAT".into(), settings: json!({ "Exceptions": v6, "Flags": 2 }) }, flag });
    }
    Ok(out)
}

/// `--outbound-nat 10.244.0.0/16 sleep 1`: clap takes the list only after `=`, so the list
/// would run as the command. Said before anything is created.
pub fn check_outbound_nat_list(given: Option<&str>, command: &[String]) -> Result<(), String> {
    let Some(first) = command.first() else { return Ok(()) };
    let looks_like_list = first.split(',').all(|e| exception_family(e.trim(), "").is_ok());
    if given == Some("") && looks_like_list {
        return Err(format!("--outbound-nat takes its exceptions after =: --outbound-nat={first} (as written, {first} would run as the command)"));
    }
    Ok(())
}

/// hnsd's error about `Policies[i]...`, with the flag that made policy `i` (`flags[i]`; empty
/// for a policy no flag of this kind made) in front.
pub fn name_the_flag(e: CliError, flags: &[String]) -> CliError {
    let CliError::Api(ApiError { code, message, field: Some(field) }) = e else { return e };
    let index = field.strip_prefix("Policies[").and_then(|r| r.split(']').next()).and_then(|i| i.parse::<usize>().ok());
    let message = match index.and_then(|i| flags.get(i)).filter(|f| !f.is_empty()) {
        Some(flag) => format!("{flag}: {message}"),
        None => message,
    };
    CliError::Api(ApiError { code, message, field: Some(field) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hns_api::ErrorCode;

    #[test]
    fn outbound_nat_forms() {
        assert!(outbound_nat(None, &[]).unwrap().is_empty());
        let p = outbound_nat(Some(""), &[]).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].policy.settings, json!({"Exceptions": []}));
        let p = outbound_nat(Some("10.244.0.0/16,fd00:244::/64"), &["10.96.0.0/12".into(), "192.168.1.1".into()]).unwrap();
        assert_eq!(p[0].policy.settings, json!({"Exceptions": ["10.244.0.0/16", "10.96.0.0/12", "192.168.1.1"]}));
        assert_eq!(p[1].policy.settings, json!({"Exceptions": ["fd00:244::/64"], "Flags": 2}));
        assert_eq!(p[0].flag, "--outbound-nat=10.244.0.0/16,fd00:244::/64");
        let p = outbound_nat(None, &["10.244.0.0/16".into()]).unwrap();
        assert_eq!((p.len(), p[0].flag.as_str()), (1, "--outbound-nat-exception 10.244.0.0/16"));
    }

    #[test]
    fn a_list_after_a_blank_is_not_taken_for_the_command() {
        let cmd = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let e = check_outbound_nat_list(Some(""), &cmd(&["10.244.0.0/16,10.96.0.0/12", "sleep"])).unwrap_err();
        assert_eq!(e, "--outbound-nat takes its exceptions after =: --outbound-nat=10.244.0.0/16,10.96.0.0/12 (as written, 10.244.0.0/16,10.96.0.0/12 would run as the command)");
        assert!(check_outbound_nat_list(Some(""), &cmd(&["sleep", "1"])).is_ok());
        assert!(check_outbound_nat_list(Some("10.0.0.0/8"), &cmd(&["10.0.0.1"])).is_ok());
        assert!(check_outbound_nat_list(None, &cmd(&["10.0.0.1"])).is_ok());
    }

    #[test]
    fn bad_exceptions_name_the_flag() {
        let e = outbound_nat(None, &["10.244.0.0/40".into()]).unwrap_err();
        assert_eq!(e, "--outbound-nat-exception 10.244.0.0/40: \"10.244.0.0/40\" is not an address or prefix (such as 10.244.0.0/16)");
        let e = outbound_nat(Some("10.0.0.0/8,nope"), &[]).unwrap_err();
        assert!(e.starts_with("--outbound-nat=10.0.0.0/8,nope: \"nope\" is not an address"), "{e}");
    }

    #[test]
    fn refusals_of_a_policy_name_its_flag() {
        let policies = vec!["-p 8080:80".to_owned(), "--acl \"allow in local-ports=x\"".to_owned(), String::new()];
        let e = CliError::Api(ApiError::field(ErrorCode::InvalidPolicy, "Policies[1].Settings.LocalPorts", "\"x\" is not a port"));
        assert_eq!(name_the_flag(e, &policies).render(), "Error: --acl \"allow in local-ports=x\": \"x\" is not a port (INVALID_POLICY)\n  field: Policies[1].Settings.LocalPorts");
        let e = CliError::Api(ApiError::field(ErrorCode::InvalidPolicy, "Policies", "ACLs are not supported on Transparent networks"));
        assert_eq!(name_the_flag(e, &policies).render(), "Error: ACLs are not supported on Transparent networks (INVALID_POLICY)\n  field: Policies");
        let e = CliError::Api(ApiError::field(ErrorCode::InvalidPolicy, "Policies[2].Settings", "x"));
        assert_eq!(name_the_flag(e, &policies).render(), "Error: x (INVALID_POLICY)\n  field: Policies[2].Settings", "a policy no flag made");
    }
}
