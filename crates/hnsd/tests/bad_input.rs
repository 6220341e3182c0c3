//! Bad input changes nothing: every invalid request gets a 4xx with a stable code naming the
//! field, and neither the store (seen through the API) nor the kernel changes.

mod common;

use common::*;
use hns_lab::Lab;
use serde_json::{Value, json};

struct Case {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(what: &'static str, method: &'static str, path: &'static str, body: Value, status: u16, code: &'static str, field: Option<&'static str>) -> Case {
    Case { what, method, path, body: body.to_string().into_bytes(), status, code, field }
}

fn net(subnet: &str) -> Value {
    json!({"Name": "n2", "Ipams": [{"Subnets": [{"IpAddressPrefix": subnet}]}]})
}

#[test]
fn every_bad_request_is_refused_by_field_and_changes_nothing() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "base", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.80.0.0/24", "AuxiliaryAddresses": {"router": "10.80.0.200"}}]}]})).ok();
    let (ns, ep) = api.container("base", "c1", json!({"IpConfigurations": [{"IpAddress": "10.80.0.10"}], "MacAddress": "02-00-00-00-00-10"}));
    let ns_id = ns["ID"].as_str().unwrap().to_owned();
    let ep_id = ep["ID"].as_str().unwrap().to_owned();
    let ns_path = Box::leak(format!("/namespaces/{ns_id}").into_boxed_str());
    let ep_path = Box::leak(format!("/endpoints/{ep_id}").into_boxed_str());

    let huge = {
        let mut v = br#"{"Name": ""#.to_vec();
        v.extend(std::iter::repeat_n(b'a', 2 << 20));
        v.extend(br#""}"#);
        v
    };
    let cases = vec![
        // networks
        case("bad CIDR", "POST", "/networks", net("10.81.0.0/40"), 400, "INVALID_SUBNET", Some("Ipams[0].Subnets[0].IpAddressPrefix")),
        case("not a CIDR", "POST", "/networks", net("banana"), 400, "INVALID_SUBNET", Some("Ipams[0].Subnets[0].IpAddressPrefix")),
        case("host bits set", "POST", "/networks", net("10.81.0.5/24"), 400, "INVALID_SUBNET", Some("Ipams[0].Subnets[0].IpAddressPrefix")),
        case("gateway outside subnet", "POST", "/networks",
            json!({"Name": "n2", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.81.0.0/24", "Routes": [{"DestinationPrefix": "0.0.0.0/0", "NextHop": "10.82.0.1"}]}]}]}),
            400, "INVALID_SUBNET", Some("Ipams[0].Subnets[0].Routes[0].NextHop")),
        case("ip-range outside subnet", "POST", "/networks",
            json!({"Name": "n2", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.81.0.0/24", "IpRange": "10.82.0.0/28"}]}]}),
            400, "INVALID_SUBNET", Some("Ipams[0].Subnets[0].IpRange")),
        case("aux address outside subnet", "POST", "/networks",
            json!({"Name": "n2", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.81.0.0/24", "AuxiliaryAddresses": {"x": "10.82.0.9"}}]}]}),
            400, "INVALID_SUBNET", Some("Ipams[0].Subnets[0].AuxiliaryAddresses.x")),
        case("overlapping subnet", "POST", "/networks", net("10.80.0.0/16"), 409, "SUBNET_IN_USE", Some("Ipams[0].Subnets[0].IpAddressPrefix")),
        case("overlap inside the request", "POST", "/networks",
            json!({"Name": "n2", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.81.0.0/24"}, {"IpAddressPrefix": "10.81.0.128/25"}]}]}),
            400, "INVALID_SUBNET", Some("Ipams[0].Subnets[1].IpAddressPrefix")),
        case("duplicate name", "POST", "/networks", json!({"Name": "base", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.81.0.0/24"}]}]}), 409, "NETWORK_ALREADY_EXISTS", Some("Name")),
        case("missing name", "POST", "/networks", json!({"Ipams": [{"Subnets": [{"IpAddressPrefix": "10.81.0.0/24"}]}]}), 400, "INVALID_NAME", Some("Name")),
        case("bad name", "POST", "/networks", json!({"Name": "no spaces"}), 400, "INVALID_NAME", Some("Name")),
        case("unknown driver", "POST", "/networks", json!({"Name": "n2", "Type": "bridge"}), 400, "INVALID_NETWORK_TYPE", Some("Type")),
        case("driver not implemented", "POST", "/networks", json!({"Name": "n2", "Type": "ICS"}), 400, "INVALID_NETWORK_TYPE", Some("Type")),
        case("overlay without a cluster store", "POST", "/networks", json!({"Name": "n2", "Type": "Overlay", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.81.0.0/24"}]}]}), 400, "INVALID_NETWORK_TYPE", Some("Type")),
        case("OutboundNat on a nat network", "POST", "/networks", json!({"Name": "n2", "OutboundNat": true}), 400, "INVALID_NETWORK", Some("OutboundNat")),
        case("VxlanPort on a nat network", "POST", "/networks", json!({"Name": "n2", "Policies": [{"Type": "VxlanPort", "Settings": {"Port": 4789}}]}), 400, "INVALID_POLICY", Some("Policies[0]")),
        case("VSID on a nat network", "POST", "/networks", json!({"Name": "n2", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.81.0.0/24", "Policies": [{"Type": "VSID", "Settings": {"IsolationId": 5000}}]}]}]}), 400, "INVALID_POLICY", Some("Ipams[0].Subnets[0].Policies")),
        case("unknown network policy", "POST", "/networks", json!({"Name": "n2", "Policies": [{"Type": "Bogus", "Settings": {}}]}), 400, "INVALID_POLICY_TYPE", Some("Policies[0].Type")),
        case("unimplemented network policy", "POST", "/networks", json!({"Name": "n2", "Policies": [{"Type": "RemoteSubnetRoute", "Settings": {}}]}), 400, "INVALID_POLICY_TYPE", Some("Policies[0].Type")),
        case("HostRoute next hop off the network", "POST", "/networks", json!({"Name": "n2", "Policies": [{"Type": "HostRoute", "Settings": {"DestinationPrefix": "10.62.0.0/24", "NextHop": "192.0.2.1"}}]}), 400, "INVALID_POLICY", Some("Policies[0].Settings.NextHop")),
        case("adapter on a nat network", "POST", "/networks", json!({"Name": "n2", "Policies": [{"Type": "AutomaticDNS", "Settings": {"Enable": true}}, {"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "eth0"}}]}), 400, "INVALID_POLICY", Some("Policies[1]")),
        case("adapter name with a slash", "POST", "/networks", json!({"Name": "n2", "Type": "L2Bridge", "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "../x"}}]}), 400, "INVALID_POLICY", Some("Policies[0].Settings.NetworkAdapterName")),
        case("VLAN ID out of range", "POST", "/networks", json!({"Name": "n2", "Type": "L2Bridge", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.80.0.0/24", "Policies": [{"Type": "VLAN", "Settings": {"IsolationId": 0}}]}]}]}), 400, "INVALID_POLICY", Some("Ipams[0].Subnets[0].Policies[0].Settings.IsolationId")),
        case("IPv6 l2bridge subnet without the LAN's gateway", "POST", "/networks", json!({"Name": "n2", "Type": "L2Bridge", "Ipams": [{"Subnets": [{"IpAddressPrefix": "fd00:80::/64"}]}]}), 400, "INVALID_SUBNET", Some("Ipams[0].Subnets[0].Routes")),
        case("l2bridge without a subnet", "POST", "/networks", json!({"Name": "n2", "Type": "L2Bridge"}), 400, "INVALID_SUBNET", Some("Ipams")),
        case("unsupported HNS field", "POST", "/networks", json!({"Name": "n2", "MacPool": {"Ranges": [{"StartMacAddress": "00-15-5D-00-00-00", "EndMacAddress": "00-15-5D-00-00-FF"}]}}), 400, "REQUEST_UNSUPPORTED", Some("MacPool")),
        case("unsupported flags", "POST", "/networks", json!({"Name": "n2", "Flags": 8}), 400, "REQUEST_UNSUPPORTED", Some("Flags")),
        case("unknown JSON field", "POST", "/networks", json!({"Name": "n2", "Colour": "blue"}), 400, "INVALID_JSON", None),
        case("bad DNS server", "POST", "/networks", json!({"Name": "n2", "Dns": {"ServerList": ["x"]}}), 400, "INVALID_IP", Some("Dns.ServerList[0]")),
        case("DHCP on nat", "POST", "/networks", json!({"Name": "n2", "Ipams": [{"Type": "Dhcp"}]}), 400, "INVALID_NETWORK", Some("Ipams[0].Type")),
        Case { what: "malformed JSON", method: "POST", path: "/networks", body: b"{\"Name\": ".to_vec(), status: 400, code: "INVALID_JSON", field: None },
        Case { what: "garbage after the object", method: "POST", path: "/networks", body: br#"{"Name": "n2"}xyz"#.to_vec(), status: 400, code: "INVALID_JSON", field: None },
        Case { what: "a second object", method: "POST", path: "/networks", body: br#"{"Name": "n2"} {"Name": "n3"}"#.to_vec(), status: 400, code: "INVALID_JSON", field: None },
        Case { what: "an array for an object", method: "POST", path: "/networks", body: br#"["6e0b3c35-0a4f-4d5e-9a8b-7c6d5e4f3a2b", "n2", "NAT"]"#.to_vec(), status: 400, code: "INVALID_JSON", field: None },
        case("resolver option with a newline", "POST", "/networks", json!({"Name": "n2", "Dns": {"Options": ["ndots:1\nnameserver 203.0.113.66"]}}), 400, "INVALID_DNS", Some("Dns.Options[0]")),
        case("bad DNS domain", "POST", "/networks", json!({"Name": "n2", "Dns": {"Domain": "a b"}}), 400, "INVALID_DNS", Some("Dns.Domain")),
        case("bad DNS search name", "POST", "/networks", json!({"Name": "n2", "Dns": {"Search": ["ok.example", "x;y"]}}), 400, "INVALID_DNS", Some("Dns.Search[1]")),
        Case { what: "huge body", method: "POST", path: "/networks", body: huge, status: 413, code: "BODY_TOO_LARGE", field: None },
        case("unknown network on delete", "DELETE", "/networks/nope", Value::Null, 404, "NETWORK_NOT_FOUND", None),
        case("network in use", "DELETE", "/networks/base", Value::Null, 409, "ENTITY_HAS_REFERENCES", None),
        // endpoints
        case("endpoint without network", "POST", "/endpoints", json!({"Name": "e"}), 400, "INVALID_ENDPOINT", Some("HostComputeNetwork")),
        case("endpoint on unknown network", "POST", "/endpoints", json!({"HostComputeNetwork": "nope"}), 404, "NETWORK_NOT_FOUND", Some("HostComputeNetwork")),
        case("static IP outside subnet", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "IpConfigurations": [{"IpAddress": "10.99.0.5"}]}), 400, "ADDR_INVALID_OR_RESERVED", Some("IpConfigurations[0].IpAddress")),
        case("static IP in use", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "IpConfigurations": [{"IpAddress": "10.80.0.10"}]}), 409, "ADDR_IN_USE", Some("IpConfigurations[0].IpAddress")),
        case("static IP is the gateway", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "IpConfigurations": [{"IpAddress": "10.80.0.1"}]}), 400, "ADDR_INVALID_OR_RESERVED", Some("IpConfigurations[0].IpAddress")),
        case("static IP is the network address", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "IpConfigurations": [{"IpAddress": "10.80.0.0"}]}), 400, "ADDR_INVALID_OR_RESERVED", Some("IpConfigurations[0].IpAddress")),
        case("static IP is the broadcast", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "IpConfigurations": [{"IpAddress": "10.80.0.255"}]}), 400, "ADDR_INVALID_OR_RESERVED", Some("IpConfigurations[0].IpAddress")),
        case("static IP is an aux address", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "IpConfigurations": [{"IpAddress": "10.80.0.200"}]}), 400, "ADDR_INVALID_OR_RESERVED", Some("IpConfigurations[0].IpAddress")),
        case("not an IP", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "IpConfigurations": [{"IpAddress": "ten"}]}), 400, "INVALID_IP", Some("IpConfigurations[0].IpAddress")),
        case("wrong prefix length", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "IpConfigurations": [{"IpAddress": "10.80.0.11", "PrefixLength": 16}]}), 400, "INVALID_PREFIX", Some("IpConfigurations[0].PrefixLength")),
        case("multicast MAC", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "MacAddress": "01:00:5e:00:00:01"}), 400, "INVALID_MAC", Some("MacAddress")),
        case("malformed MAC", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "MacAddress": "zz"}), 400, "INVALID_MAC", Some("MacAddress")),
        case("MAC in use", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "MacAddress": "02:00:00:00:00:10"}), 409, "MAC_IN_USE", Some("MacAddress")),
        case("duplicate endpoint name", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Name": "c1"}), 409, "ENDPOINT_ALREADY_EXISTS", Some("Name")),
        case("unimplemented endpoint policy", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Policies": [{"Type": "TierAcl", "Settings": {}}]}), 400, "INVALID_POLICY_TYPE", Some("Policies[0].Type")),
        case("QOS under the minimum", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Policies": [{"Type": "QOS", "Settings": {"MaximumOutgoingBandwidthInBytes": 1000}}]}), 400, "INVALID_POLICY", Some("Policies[0].Settings.MaximumOutgoingBandwidthInBytes")),
        case("mapping: internal port 0", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 0, "ExternalPort": 8080}}]}), 400, "INVALID_INTERNAL_PORT", Some("Policies[0].Settings.InternalPort")),
        case("mapping: port 70000", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 70000}}]}), 400, "INVALID_POLICY", Some("Policies[0].Settings.ExternalPort")),
        case("mapping: unknown protocol", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": "sctp", "InternalPort": 80}}]}), 400, "INVALID_POLICY", Some("Policies[0].Settings.Protocol")),
        case("mapping: host IP not on the host", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "VIP": "192.0.2.77"}}]}), 400, "INVALID_IP", Some("Policies[0].Settings.VIP")),
        case("mapping: bad range", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPortRange": "9000-8000"}}]}), 400, "INVALID_POLICY", Some("Policies[0].Settings.ExternalPortRange")),
        case("mapping: unknown setting", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "Color": 1}}]}), 400, "INVALID_POLICY", Some("Policies[0].Settings.Color")),
        case("mapping remove: not there", "POST", ep_path, json!({"ResourceType": "Policy", "RequestType": "Remove", "Settings": {"Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 1234}}]}}), 404, "POLICY_NOT_FOUND", Some("Settings.Policies[0]")),
        case("unknown endpoint policy", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Policies": [{"Type": "Teleport"}]}), 400, "INVALID_POLICY_TYPE", Some("Policies[0].Type")),
        case("unknown namespace", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "HostComputeNamespace": "nope"}), 404, "NAMESPACE_NOT_FOUND", Some("HostComputeNamespace")),
        case("endpoint resolver option with a newline", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Dns": {"Options": ["edns0\nsearch evil.example"]}}), 400, "INVALID_DNS", Some("Dns.Options[0]")),
        case("bad alias", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Aliases": ["a b"]}), 400, "INVALID_NAME", Some("Aliases[0]")),
        case("endpoint unknown field", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "VirtualNetwork": "x"}), 400, "INVALID_JSON", None),
        case("endpoint flags", "POST", "/endpoints", json!({"HostComputeNetwork": "base", "Flags": 1}), 400, "REQUEST_UNSUPPORTED", Some("Flags")),
        case("endpoint policy modify", "POST", ep_path, json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": {"Policies": [{"Type": "TierAcl"}]}}), 400, "INVALID_POLICY_TYPE", Some("Settings.Policies[0].Type")),
        case("endpoint modify of routes", "POST", ep_path, json!({"ResourceType": "Port", "RequestType": "Add", "Settings": {}}), 400, "REQUEST_UNSUPPORTED", Some("ResourceType")),
        // namespaces
        case("namespace bad path", "POST", "/namespaces", json!({"NetNsPath": "/tmp/not-a-netns"}), 400, "INVALID_NAMESPACE", Some("NetNsPath")),
        case("namespace of hnsd itself", "POST", "/namespaces", json!({"NetNsPath": "/proc/self/ns/net"}), 400, "INVALID_NAMESPACE", Some("NetNsPath")),
        case("namespace of init", "POST", "/namespaces", json!({"NetNsPath": "/proc/1/ns/net"}), 400, "INVALID_NAMESPACE", Some("NetNsPath")),
        case("namespace of another kind", "POST", "/namespaces", json!({"NetNsPath": "/proc/self/ns/mnt"}), 400, "INVALID_NAMESPACE", Some("NetNsPath")),
        case("namespace relative path", "POST", "/namespaces", json!({"NetNsPath": "netns"}), 400, "INVALID_NAMESPACE", Some("NetNsPath")),
        case("namespace duplicate name", "POST", "/namespaces", json!({"Name": "c1"}), 409, "NAMESPACE_ALREADY_EXISTS", Some("Name")),
        case("namespace guest type", "POST", "/namespaces", json!({"Type": "Guest"}), 400, "REQUEST_UNSUPPORTED", Some("Type")),
        case("attach an attached endpoint", "POST", ns_path, json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": ep_id}}), 200, "", None),
        case("attach unknown endpoint", "POST", ns_path, json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": "nope"}}), 404, "ENDPOINT_NOT_FOUND", Some("Settings.EndpointId")),
        case("bad request type", "POST", ns_path, json!({"ResourceType": "Endpoint", "RequestType": "Explode", "Settings": {}}), 400, "INVALID_JSON", Some("RequestType")),
        case("settings missing field", "POST", ns_path, json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {}}), 400, "INVALID_JSON", Some("Settings")),
        case("unknown namespace", "DELETE", "/namespaces/nope", Value::Null, 404, "NAMESPACE_NOT_FOUND", None),
        // routes
        case("unknown route", "GET", "/bogus", Value::Null, 404, "NOT_FOUND", None),
        case("wrong method", "PUT", "/networks", Value::Null, 405, "METHOD_NOT_ALLOWED", None),
    ];

    let api_before = api.snapshot();
    let kernel_before = kernel_snapshot(&lab);
    let mut failures = Vec::new();
    for c in &cases {
        let body = if c.body == b"null" { Vec::new() } else { c.body.clone() };
        let r = api.request_raw(c.method, c.path, &body);
        if r.status != c.status {
            failures.push(format!("{}: status {} (want {}): {}", c.what, r.status, c.status, r.raw));
            continue;
        }
        if c.status >= 400 {
            if r.body["code"] != c.code {
                failures.push(format!("{}: code {} (want {}): {}", c.what, r.body["code"], c.code, r.raw));
            }
            if let Some(f) = c.field
                && r.body["field"] != f
            {
                failures.push(format!("{}: field {} (want {f}): {}", c.what, r.body["field"], r.raw));
            }
            if r.body["message"].as_str().is_none_or(|m| m.len() < 10) {
                failures.push(format!("{}: no useful message: {}", c.what, r.raw));
            }
        }
    }
    // A body that is not JSON has no field to name.
    let r = api.request_raw("POST", "/networks", br#"{"Name": "n2", "Ipams": [{"Subnets": "#);
    if r.status != 400 || !r.body["field"].is_null() {
        failures.push(format!("truncated body: status {} field {} (want 400 and no field): {}", r.status, r.body["field"], r.raw));
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(api.snapshot(), api_before, "a refused request changed the store");
    assert_eq!(kernel_snapshot(&lab), kernel_before, "a refused request changed the kernel");
}

/// Random requests built from plausible and implausible field values never get a 5xx, never
/// take the daemon down, and whatever they created can be removed without leaving anything.
#[test]
fn random_requests_never_break_the_daemon() {
    use rand::{Rng, SeedableRng, seq::IndexedRandom};
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let vals: Vec<Value> = vec![
        Value::Null, json!(true), json!(0), json!(-1), json!(65536), json!(1u64 << 40), json!(""), json!("x"), json!("10.0.0.0/8"),
        json!("::/0"), json!("fd00::/64"), json!("172.17.0.1"), json!("00-15-5D-00-00-01"), json!("Static"), json!("Dhcp"), json!("NAT"),
        json!([]), json!({}), json!([{}]), json!({"Type": "PortMapping"}), json!("0.0.0.0/0"), json!("255.255.255.255"), json!("a".repeat(300)),
    ];
    let kinds: [(&str, &[&str]); 3] = [
        ("networks", &["ID", "Name", "Type", "Policies", "MacPool", "Dns", "Ipams", "Flags", "SchemaVersion", "Owner", "Internal", "State"]),
        ("endpoints", &["ID", "Name", "HostComputeNetwork", "HostComputeNamespace", "Policies", "IpConfigurations", "Dns", "Routes", "MacAddress", "Flags", "Aliases"]),
        ("namespaces", &["ID", "Name", "Type", "Resources", "NetNsPath", "SchemaVersion"]),
    ];
    let mut failures = Vec::new();
    for _ in 0..1500 {
        let (kind, keys) = kinds.choose(&mut rng).unwrap();
        let mut body = serde_json::Map::new();
        for k in keys.iter() {
            if rng.random_bool(0.4) {
                let v = |rng: &mut rand::rngs::StdRng| vals.choose(rng).unwrap().clone();
                let value = match *k {
                    "Ipams" => json!([{"Type": v(&mut rng), "Subnets": [{"IpAddressPrefix": v(&mut rng), "Routes": [{"DestinationPrefix": v(&mut rng), "NextHop": v(&mut rng)}], "IpRange": v(&mut rng)}]}]),
                    "IpConfigurations" => json!([{"IpAddress": v(&mut rng), "PrefixLength": ([0, 16, 24, 33][rng.random_range(0..4)])}]),
                    "Resources" => json!([{"Type": "Endpoint", "Data": {"ID": v(&mut rng)}}]),
                    _ => v(&mut rng),
                };
                body.insert(k.to_string(), value);
            }
        }
        if *kind == "endpoints" && rng.random_bool(0.5) {
            body.insert("HostComputeNetwork".into(), json!("nat"));
        }
        let mut raw = Value::Object(body).to_string().into_bytes();
        if rng.random_bool(0.05) {
            raw.truncate(rng.random_range(0..raw.len()));
        }
        let r = api.request_raw("POST", &format!("/{kind}"), &raw);
        if r.status == 0 || r.status >= 500 {
            failures.push(format!("{} {}: {}", r.status, String::from_utf8_lossy(&raw), r.raw));
        }
    }
    assert!(failures.is_empty(), "{} request(s) broke the daemon:\n{}", failures.len(), failures.join("\n"));
    for kind in ["endpoints", "namespaces", "networks"] {
        for o in api.get(&format!("/{kind}")).ok().as_array().unwrap() {
            assert_eq!(api.delete(&format!("/{kind}/{}", o["ID"].as_str().unwrap())).status, 204);
        }
    }
    assert_eq!(lab.leftovers_in_host().unwrap(), Vec::<String>::new());
}

/// A network's subnet that would break the host is refused with a 4xx naming the field, the
/// value and the rule, and nothing changes: special-purpose ranges for every driver, and for
/// nat (which routes its subnet to its own bridge) the host's own addresses and routes.
#[test]
fn subnets_that_would_break_the_host_are_refused_by_name_and_change_nothing() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    // A host route that is not an address of the host (a VPN's, say).
    lab.in_host("ip", &["route", "add", "10.123.0.0/16", "via", &hns_lab::LAN_ROUTER.to_string()]).unwrap();
    let uplink = format!("{}/{}", hns_lab::HOST_UPLINK, hns_lab::LAN_PREFIX_LEN);
    let uplink6 = format!("{}/64", hns_lab::HOST_UPLINK_V6);
    // (subnet, status and code, what the message must say besides the subnet): the host's
    // own addresses and routes are in use (409), special ranges are invalid (400).
    let in_use = (409, "SUBNET_IN_USE");
    let invalid = (400, "INVALID_SUBNET");
    let cases: Vec<(&str, (u16, &str), Vec<&str>)> = vec![
        (hns_lab::LAN_SUBNET, in_use, vec![&uplink, "eth0"]),
        ("198.51.100.128/25", in_use, vec![&uplink, "eth0"]),
        ("2001:db8:100::/64", in_use, vec![&uplink6, "eth0"]),
        ("10.123.4.0/24", in_use, vec!["route 10.123.0.0/16", "via 198.51.100.1"]),
        ("127.0.0.0/8", invalid, vec!["loopback"]),
        ("127.5.0.0/16", invalid, vec!["loopback"]),
        ("0.0.0.0/8", invalid, vec!["\"this network\""]),
        ("240.0.0.0/24", invalid, vec!["reserved"]),
        ("169.254.0.0/16", invalid, vec!["link-local", "RFC 3927", "10.0.0.0/8"]),
        ("224.0.0.0/24", invalid, vec!["multicast"]),
        ("0.0.0.0/0", invalid, vec!["default route"]),
        ("8.0.0.0/6", invalid, vec!["wider than /8"]),
        ("fe80::/64", invalid, vec!["link-local"]),
        ("::ffff:0:0/96", invalid, vec!["IPv4-mapped"]),
        ("::/0", invalid, vec!["default route"]),
        ("ff00::/8", invalid, vec!["multicast"]),
        ("2000::/3", invalid, vec!["wider than /32"]),
    ];
    let api_before = api.snapshot();
    let kernel_before = kernel_snapshot(&lab);
    let mut failures = Vec::new();
    for (subnet, (status, code), words) in &cases {
        let r = api.post("/networks", &net(subnet));
        let msg = r.body["message"].as_str().unwrap_or_default();
        let ok = r.status == *status
            && r.body["code"] == *code
            && r.body["field"] == "Ipams[0].Subnets[0].IpAddressPrefix"
            && msg.contains(subnet)
            && words.iter().all(|w| msg.contains(w));
        if !ok {
            failures.push(format!("{subnet}: {} {}", r.status, r.raw));
        }
        if r.status == 200 {
            // Accepted by mistake: removed, so that the next case is judged on its own.
            api.delete(&format!("/networks/{}", r.body["ID"].as_str().unwrap_or_default()));
        }
    }
    assert!(failures.is_empty(), "{} subnet(s) not refused as they should be:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(api.snapshot(), api_before, "a refused request changed the store");
    assert_eq!(kernel_snapshot(&lab), kernel_before, "a refused request changed the kernel");

    // External drivers share the LAN's subnet by design: the uplink's own subnet is fine there,
    // a special range is not.
    let transparent = |subnet: &str, gw: &str| json!({"Name": "t", "Type": "Transparent", "Ipams": [{"Subnets": [{"IpAddressPrefix": subnet, "Routes": [{"NextHop": gw, "DestinationPrefix": "0.0.0.0/0"}]}]}]});
    let r = api.post("/networks", &transparent("169.254.0.0/16", "169.254.0.1"));
    assert!(r.status == 400 && r.raw.contains("link-local"), "{}", r.raw);
    api.post("/networks", &transparent(hns_lab::LAN_SUBNET, &hns_lab::LAN_ROUTER.to_string())).ok();
}

/// The MAC shown by `ip link show DEV` in the lab host.
fn host_link_mac(lab: &Lab, dev: &str) -> String {
    let out = lab.in_host("ip", &["-o", "link", "show", dev]).unwrap().stdout;
    out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap_or_else(|| panic!("no MAC in {out}")).to_owned()
}

/// Asserts a refusal by code and field whose message names `value`; the store and the kernel
/// stay as they were.
fn refused(lab: &Lab, api: &Api, method: &str, path: &str, body: Value, (status, code, field): (u16, &str, &str), value: &str) {
    let (api_before, kernel_before) = (api.snapshot(), kernel_snapshot(lab));
    let r = api.request_raw(method, path, body.to_string().as_bytes());
    assert_eq!((r.status, r.body["code"].as_str(), r.body["field"].as_str()), (status, Some(code), Some(field)), "{body}: {}", r.raw);
    let msg = r.body["message"].as_str().unwrap_or_default().to_ascii_lowercase();
    assert!(msg.contains(&value.to_ascii_lowercase()), "the message must name {value}: {msg}");
    assert_eq!(api.snapshot(), api_before, "a refused request changed the store");
    assert_eq!(kernel_snapshot(lab), kernel_before, "a refused request changed the kernel");
}

/// An endpoint may not take the MAC of its network's gateway (the bridge's host leg) or of
/// the uplink adapter of an external network: two stations with one MAC on one segment.
#[test]
fn an_endpoint_cannot_take_the_gateway_or_the_uplink_mac() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let net = api.post("/networks", &json!({"Name": "base", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.80.0.0/24"}]}]})).ok();
    let gw_mac = host_link_mac(&lab, net["InterfaceName"].as_str().unwrap());
    refused(&lab, &api, "POST", "/endpoints", json!({"HostComputeNetwork": "base", "MacAddress": gw_mac}), (409, "MAC_IN_USE", "MacAddress"), "gateway");

    let u = lab.add_uplink(1, false).unwrap();
    let iface = format!("com.docker.network.windowsshim.interface={}", u.host_if);
    lab.hnsctl_ok(&["network", "create", "-d", "transparent", "--subnet", &u.subnet, "--gateway", &u.router.to_string(), "-o", &iface, "tnet"]).unwrap();
    let up_mac = host_link_mac(&lab, &u.host_if);
    refused(&lab, &api, "POST", "/endpoints", json!({"HostComputeNetwork": "tnet", "MacAddress": up_mac}), (409, "MAC_IN_USE", "MacAddress"), &u.host_if);
}

/// `InterfaceName` names the endpoint's interface in its compartment (a CNI plugin needs
/// that); a name the kernel would refuse is 400, one taken in the compartment is 409.
#[test]
fn an_endpoint_gets_the_interface_name_it_asks_for() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "base", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.80.0.0/24"}]}]})).ok();
    let (ns, ep) = api.container("base", "c1", json!({"InterfaceName": "net7"}));
    assert_eq!(ep["InterfaceName"], "net7", "{ep}");
    let shown = in_ns(&lab, &ns, "ip", &["-o", "addr", "show", "net7"]);
    assert!(shown.status.success() && shown.stdout.contains(&ip_of(&ep)), "no net7 with the endpoint's address in the compartment: {shown:?}");
    let ns_id = ns["ID"].as_str().unwrap();

    refused(&lab, &api, "POST", "/endpoints", json!({"HostComputeNetwork": "base", "InterfaceName": "a/b"}), (400, "INVALID_NAME", "InterfaceName"), "a/b");
    refused(&lab, &api, "POST", "/endpoints", json!({"HostComputeNetwork": "base", "InterfaceName": "sixteen-chars-16"}), (400, "INVALID_NAME", "InterfaceName"), "sixteen-chars-16");
    // Taken, when created attached at once...
    refused(&lab, &api, "POST", "/endpoints", json!({"HostComputeNetwork": "base", "HostComputeNamespace": ns_id, "InterfaceName": "net7"}), (409, "INTERFACE_NAME_IN_USE", "InterfaceName"), "net7");
    refused(&lab, &api, "POST", "/endpoints", json!({"HostComputeNetwork": "base", "HostComputeNamespace": ns_id, "InterfaceName": "lo"}), (409, "INTERFACE_NAME_IN_USE", "InterfaceName"), "loopback");
    // ... and when attached later.
    let second = api.post("/endpoints", &json!({"HostComputeNetwork": "base", "InterfaceName": "net7"})).ok();
    let add = json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": second["ID"]}});
    refused(&lab, &api, "POST", &format!("/namespaces/{ns_id}"), add, (409, "INTERFACE_NAME_IN_USE", "InterfaceName"), "net7");
    // Elsewhere the name is free.
    let other = api.post("/namespaces", &json!({"Name": "c2"})).ok();
    let add = json!({"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": second["ID"]}});
    api.post(&format!("/namespaces/{}", other["ID"].as_str().unwrap()), &add).ok();
    assert!(in_ns(&lab, &other, "ip", &["link", "show", "net7"]).status.success());
}

/// A namespace created with several endpoints in `Resources` is all or nothing: when one
/// cannot be attached, the ones attached before it are detached again and the namespace goes.
#[test]
fn a_namespace_create_with_several_endpoints_is_all_or_nothing() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    api.post("/networks", &json!({"Name": "base", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.80.0.0/24"}]}]})).ok();
    // Both ask for the same interface name: the second cannot be attached next to the first.
    let a = api.post("/endpoints", &json!({"HostComputeNetwork": "base", "Name": "a", "InterfaceName": "net7"})).ok();
    let b = api.post("/endpoints", &json!({"HostComputeNetwork": "base", "Name": "b", "InterfaceName": "net7"})).ok();
    let res = |e: &Value| json!({"Type": "Endpoint", "Data": {"ID": e["ID"]}});
    let (api_before, kernel_before) = (api.snapshot(), kernel_snapshot(&lab));
    let r = api.post("/namespaces", &json!({"Name": "both", "Resources": [res(&a), res(&b)]}));
    assert_eq!((r.status, r.body["code"].as_str(), r.body["field"].as_str()), (409, Some("INTERFACE_NAME_IN_USE"), Some("Resources[1].Data.ID")), "{}", r.raw);
    assert!(r.body["message"].as_str().unwrap().contains("the namespace was not created"), "{}", r.raw);
    assert_eq!(api.snapshot(), api_before, "the failed namespace create left something in the store");
    // The first endpoint's veth, detached again, is retired and deleted in the background.
    let mut now = String::new();
    let clean = eventually(std::time::Duration::from_secs(5), || {
        now = kernel_snapshot(&lab);
        now == kernel_before
    });
    assert!(clean, "the failed namespace create left something in the kernel:\n{now}\nwant:\n{kernel_before}");
}
