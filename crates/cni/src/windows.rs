//! The Windows plugin types of microsoft/windows-container-networking (`nat`, `sdnbridge`,
//! `sdnoverlay`): the same binary installed under those names reads their conflists, so a
//! Windows node's config works here with at most the adapter name changed. The network is the
//! conflist `name`, of the HNS type the plugin type stands for; `AdditionalArgs` carry HCN v2
//! policies, which hnsd takes or refuses by name. Keys and flags that do not apply are refused
//! by name, never ignored.

use hns_api::{NetworkType, Policy};
use serde_json::json;

use crate::config::NetConf;
use crate::error::{CniError, Result, code};

pub const TYPES: &[&str] = &["nat", "sdnbridge", "sdnoverlay"];

/// The HNS network type of a Windows plugin type.
pub fn network_type(kind: &str) -> Option<NetworkType> {
    match kind {
        "nat" => Some(NetworkType::Nat),
        "sdnbridge" => Some(NetworkType::L2Bridge),
        "sdnoverlay" => Some(NetworkType::Overlay),
        _ => None,
    }
}

fn unsupported(msg: String) -> CniError {
    CniError::new(code::UNSUPPORTED_FIELD, msg)
}

/// Keys of one family are refused in the other; the Windows keys are checked.
pub fn check(c: &NetConf) -> Result<()> {
    let ipam = c.ipam.clone().unwrap_or_default();
    if !c.is_windows() {
        let windows_only = [
            ("optionalFlags", !c.optional_flags.is_empty()),
            ("additionalRoutes", !c.additional_routes.is_empty()),
            ("AdditionalArgs", !c.additional_args.is_empty()),
            ("master", !c.master.is_empty()),
            ("ipam.ipAddress", !ipam.ip_address.is_empty()),
            ("ipam.environment", !ipam.environment.is_empty()),
            ("ipam.addressSpace", !ipam.address_space.is_empty()),
            ("ipam.queryInterval", !ipam.query_interval.is_empty()),
        ];
        if let Some((key, _)) = windows_only.iter().find(|(_, set)| *set) {
            return Err(unsupported(format!(
                "unsupported field {key:?}: it belongs to the Windows plugin types ({}); type hns does not take it",
                TYPES.join(", ")
            )));
        }
        return Ok(());
    }
    if !c.network.is_empty() {
        return Err(unsupported(format!("unsupported field \"network\": type {} attaches to the hns network named by \"name\"", c.kind)));
    }
    for (key, value) in [("ipam.environment", &ipam.environment), ("ipam.addressSpace", &ipam.address_space), ("ipam.queryInterval", &ipam.query_interval)] {
        if !value.is_empty() {
            return Err(unsupported(format!("unsupported field {key:?} (value {value:?}): it configures Azure's IPAM, which hns does not use; remove it")));
        }
    }
    for (flag, value) in &c.optional_flags {
        match value.as_bool() {
            Some(false) => {}
            Some(true) => return Err(unsupported(format!("unsupported field \"optionalFlags.{flag}\": hns does not implement it yet; remove it or set it to false"))),
            None => return Err(CniError::config(format!("field \"optionalFlags.{flag}\" is {value}: flags are true or false"))),
        }
    }
    if !c.master.is_empty() && c.kind != "sdnbridge" {
        return Err(unsupported(format!("unsupported field \"master\" (value {:?}): only sdnbridge networks take a host adapter", c.master)));
    }
    for (i, kvp) in c.additional_args.iter().enumerate() {
        if !matches!(kvp.name.as_str(), "EndpointPolicy" | "NetworkPolicy") {
            return Err(unsupported(format!("unsupported field \"AdditionalArgs[{i}].Name\" (value {:?}): use EndpointPolicy or NetworkPolicy", kvp.name)));
        }
        serde_json::from_value::<Policy>(kvp.value.clone()).map_err(|e| {
            CniError::config(format!("field \"AdditionalArgs[{i}].Value\": {e}; give an HCN v2 policy, {{\"Type\": ..., \"Settings\": {{...}}}}"))
        })?;
    }
    Ok(())
}

/// The policies of `AdditionalArgs` named `name` (`EndpointPolicy` or `NetworkPolicy`).
fn policies(c: &NetConf, name: &str) -> Vec<Policy> {
    c.additional_args.iter().filter(|k| k.name == name).filter_map(|k| serde_json::from_value(k.value.clone()).ok()).collect()
}

pub fn endpoint_policies(c: &NetConf) -> Vec<Policy> {
    policies(c, "EndpointPolicy")
}

/// The network's policies: `NetworkPolicy` entries, and `master` as the sdnbridge adapter.
pub fn network_policies(c: &NetConf) -> Vec<Policy> {
    let mut all = policies(c, "NetworkPolicy");
    if !c.master.is_empty() {
        all.push(Policy { kind: "NetAdapterName".into(), settings: json!({ "NetworkAdapterName": c.master }) });
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn a_windows_l2bridge_conflist_maps_to_hns() {
        let c = parse(
            r#"{"cniVersion":"0.2.0","cniVersions":["1.0.0"],"name":"cbr0","type":"sdnbridge","master":"eth1",
                "ipam":{"subnet":"10.244.1.0/24","routes":[{"GW":"10.244.1.2"}]},
                "dns":{"Nameservers":["10.96.0.10"],"Search":["svc.cluster.local"]},
                "optionalFlags":{"localRoutedPortMapping":false},
                "AdditionalArgs":[{"Name":"EndpointPolicy","Value":{"Type":"OutBoundNAT","Settings":{"Exceptions":["10.244.0.0/16"]}}},
                                  {"Name":"NetworkPolicy","Value":{"Type":"AutomaticDNS","Settings":{"Enable":false}}}]}"#,
        );
        // 0.2.0 is not spoken here: the runtime's cniVersion is refused, not guessed.
        assert_eq!(c.unwrap().result_version().unwrap_err().code, 1);
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"cbr0","type":"sdnbridge","master":"eth1",
                "ipam":{"subnet":"10.244.1.0/24","routes":[{"GW":"10.244.1.2"}]},
                "dns":{"Nameservers":["10.96.0.10"],"Search":["svc.cluster.local"]},
                "AdditionalArgs":[{"Name":"EndpointPolicy","Value":{"Type":"OutBoundNAT","Settings":{"Exceptions":["10.244.0.0/16"]}}},
                                  {"Name":"NetworkPolicy","Value":{"Type":"AutomaticDNS","Settings":{"Enable":false}}}]}"#,
        )
        .unwrap();
        assert_eq!((network_type(&c.kind), c.gateway(), c.network()), (Some(NetworkType::L2Bridge), Some("10.244.1.2"), "cbr0"));
        assert_eq!(c.dns.as_ref().unwrap().nameservers, ["10.96.0.10"]);
        assert_eq!(endpoint_policies(&c)[0].kind, "OutBoundNAT");
        let net: Vec<String> = network_policies(&c).into_iter().map(|p| p.kind).collect();
        assert_eq!(net, ["AutomaticDNS", "NetAdapterName"]);
    }

    #[test]
    fn what_does_not_apply_is_refused_by_name() {
        let cases = [
            (r#"{"cniVersion":"1.0.0","name":"n","type":"nat","optionalFlags":{"loopbackDSR":true}}"#, 2, "optionalFlags.loopbackDSR"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"nat","master":"Ethernet"}"#, 2, "\"master\""),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"nat","ipam":{"environment":"azure"}}"#, 2, "ipam.environment"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"nat","AdditionalArgs":[{"Name":"Other","Value":{}}]}"#, 2, "AdditionalArgs[0].Name"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"nat","AdditionalArgs":[{"Name":"EndpointPolicy","Value":{"Settings":{}}}]}"#, 7, "AdditionalArgs[0].Value"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"nat","network":"x"}"#, 2, "\"network\""),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"nat","ipam":{"routes":[{"dst":"10.0.0.0/8","GW":"10.0.0.1"}]}}"#, 7, "additionalRoutes"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"hns","master":"eth0"}"#, 2, "Windows plugin types"),
        ];
        for (input, code, needle) in cases {
            let e = parse(input).unwrap_err();
            assert_eq!(e.code, code, "{input}: {e:?}");
            assert!(e.msg.contains(needle), "{input}: {:?} lacks {needle:?}", e.msg);
        }
    }
}
