//! The HNS-shaped API: routes, trailing slashes, enum forms, version, OpenAPI.

mod common;

use common::*;
use hns_lab::Lab;
use serde_json::json;

#[test]
fn routes_enums_and_documents() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let api = Api::new(&lab);
    assert_eq!(api.get("/globals/version").ok(), json!({"Major": 15, "Minor": 4}));
    assert_eq!(api.get("/healthz").ok()["Status"], "ok");
    let doc = api.get("/openapi.json").ok();
    assert!(doc["paths"]["/namespaces/{id}"]["post"].is_object());
    assert!(doc["components"]["schemas"]["HostComputeNetwork"]["properties"]["Internal"].is_object());

    // Integer and lower-case enum forms are accepted, the canonical form is emitted.
    let n = api.post("/networks/", &json!({"Name": "a", "Type": 0, "Ipams": [{"Type": "static", "Subnets": [{"IpAddressPrefix": "10.60.0.0/24"}]}]})).ok();
    assert_eq!(n["Type"], "NAT");
    assert_eq!(n["Ipams"][0]["Type"], "Static");
    assert_eq!(n["SchemaVersion"], json!({"Major": 2, "Minor": 0}));
    assert_eq!(n["Ipams"][0]["Subnets"][0]["Routes"][0], json!({"DestinationPrefix": "0.0.0.0/0", "NextHop": "10.60.0.1"}));
    let b = api.post("/networks", &json!({"Name": "b", "Type": "nat", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.61.0.0/24"}]}]})).ok();
    assert_eq!(b["Type"], "NAT");

    // By ID (any case, with braces) or by name, with or without a trailing slash.
    let id = n["ID"].as_str().unwrap();
    assert_eq!(api.get(&format!("/networks/{}/", id.to_uppercase())).ok()["Name"], "a");
    assert_eq!(api.get(&format!("/networks/%7B{id}%7D")).ok()["Name"], "a");
    assert_eq!(api.get("/networks/a").ok()["ID"], id);
    assert_eq!(api.get("/networks/").ok().as_array().unwrap().len(), 2);

    // A client-chosen ID is kept.
    let chosen = "6f1d0c2e-9a3b-4c5d-8e7f-0123456789ab";
    let ns = api.post("/namespaces", &json!({"ID": chosen, "Name": "x"})).ok();
    assert_eq!(ns["ID"], chosen);
    assert_eq!(ns["Type"], "Host");
    let ep = api.post("/endpoints", &json!({"HostComputeNetwork": "a", "HostComputeNamespace": chosen, "Aliases": ["db"]})).ok();
    assert_eq!(ep["State"], 2);
    assert_eq!(ep["Aliases"], json!(["db"]));
    assert_eq!(ep["InterfaceName"], "eth0");
    let ns = api.get("/namespaces/x").ok();
    assert_eq!(ns["Resources"], json!([{"Type": "Endpoint", "Data": {"ID": ep["ID"]}}]));

    // The process of a compartment is recorded and cleared.
    let id_path = format!("/namespaces/{chosen}");
    let r = api.post(&id_path, &json!({"ResourceType": "Container", "RequestType": "Add", "Settings": {"Pid": 4242, "Command": ["sleep", "1"]}})).ok();
    assert_eq!(r["Pid"], 4242);
    let r = api.post(&id_path, &json!({"ResourceType": "Container", "RequestType": "Remove", "Settings": {}})).ok();
    assert!(r.get("Pid").is_none());
}

/// Endpoint create and delete, and a namespace's endpoint Add and Remove, tell the time spent in
/// hnsd (`Server-Timing`), which the benchmarks report next to the round trip.
#[test]
fn attach_and_detach_replies_tell_the_time_spent_in_hnsd() {
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&[]).unwrap();
    let api = Api::new(&lab);
    let timed = |what: &str, r: Reply| {
        assert!(r.server_ms.is_some_and(|ms| ms > 0.0), "{what}: no Server-Timing duration: {r:?}");
        r.ok()
    };
    let ns = api.post("/namespaces", &json!({})).ok();
    let ns_path = format!("/namespaces/{}", ns["ID"].as_str().unwrap());
    let ep = timed("create", api.post("/endpoints", &json!({"HostComputeNetwork": "nat", "HostComputeNamespace": ns["ID"]})));
    let change = |request: &str| json!({"ResourceType": "Endpoint", "RequestType": request, "Settings": {"EndpointId": ep["ID"]}});
    timed("remove", api.post(&ns_path, &change("Remove")));
    timed("add", api.post(&ns_path, &change("Add")));
    timed("delete", api.delete(&format!("/endpoints/{}", ep["ID"].as_str().unwrap())));
}
