//! The served OpenAPI document tells the truth: good and bad requests on every route of a real
//! hnsd get replies whose status is documented for that route and whose body validates against
//! the schema documented for that route and status; a request the server accepts validates
//! against the documented request schema.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use hns_lab::Lab;
use serde_json::{Value, json};

/// The document, and the operations the test has called.
struct Conformance {
    api: Api,
    doc: Value,
    called: BTreeSet<(String, String)>,
}

impl Conformance {
    fn new(lab: &Lab) -> Conformance {
        let api = Api::new(lab);
        let doc = api.get("/openapi.json").ok();
        Conformance { api, doc, called: BTreeSet::new() }
    }

    /// The documented path template that `path` matches (`/networks/a/` -> `/networks/{id}`).
    fn template(&self, path: &str) -> String {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let found = self.doc["paths"].as_object().unwrap().keys().find(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segments.len() && ts.iter().zip(&segments).all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
        });
        found.unwrap_or_else(|| panic!("{path} matches no documented path")).clone()
    }

    /// A validator for `schema`, with the document's components to resolve `$ref`s against.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        jsonschema::options().with_draft(jsonschema::Draft::Draft202012).build(&root).unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
    }

    fn check(&self, what: &str, schema: &Value, value: &Value) {
        let errors: Vec<String> = self.validator(schema).iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{what}: does not match the document:\n{}\nvalue: {value}", errors.join("\n"));
    }

    /// Sends the request and checks the reply (and, when it succeeded, the request) against the
    /// document. Returns the reply.
    fn call(&mut self, method: &str, path: &str, body: &[u8]) -> Reply {
        let r = self.api.request_raw(method, path, body);
        let template = self.template(path.split('?').next().unwrap_or(path));
        let m = method.to_ascii_lowercase();
        let op = self.doc["paths"][&template][&m].clone();
        assert!(op.is_object(), "{method} {template} is served but not documented");
        self.called.insert((template.clone(), m));
        let what = format!("{method} {path} -> {}", r.status);
        let documented = op["responses"].as_object().unwrap();
        assert!(
            documented.contains_key(&r.status.to_string()),
            "{what} ({}): status not documented for {method} {template} (documented: {:?})",
            r.raw,
            documented.keys().collect::<Vec<_>>()
        );
        let content = &op["responses"][r.status.to_string()]["content"];
        match (content["application/json"].get("schema"), content["application/x-ndjson"].get("schema")) {
            (Some(schema), _) => self.check(&format!("{what} reply"), schema, &r.body),
            // A stream (GET /events): each line is one value of the schema.
            (None, Some(schema)) => {
                for line in r.raw.lines() {
                    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: a line is not JSON ({e}): {line}"));
                    self.check(&format!("{what} line"), schema, &v);
                }
            }
            (None, None) => assert!(r.raw.is_empty(), "{what}: documented without a body, sent {}", r.raw),
        }
        if (200..300).contains(&r.status)
            && let Some(schema) = op["requestBody"]["content"]["application/json"].get("schema")
        {
            let sent: Value = serde_json::from_slice(body).expect("accepted bodies are JSON");
            self.check(&format!("{what} accepted request"), schema, &sent);
        }
        r
    }

    fn get(&mut self, path: &str) -> Reply {
        self.call("GET", path, b"")
    }
    fn post(&mut self, path: &str, body: &Value) -> Reply {
        self.call("POST", path, body.to_string().as_bytes())
    }
    fn delete(&mut self, path: &str) -> Reply {
        self.call("DELETE", path, b"")
    }
}

fn expect(r: Reply, status: u16, code: Option<&str>) -> Value {
    assert_eq!(r.status, status, "{}", r.raw);
    if let Some(code) = code {
        assert_eq!(r.body["code"], code, "{}", r.raw);
    }
    r.body
}

#[test]
fn every_reply_matches_the_served_document() {
    let start = Instant::now();
    let lab = Lab::new().unwrap();
    let _d = lab.start_hnsd(&["--no-default-network"]).unwrap();
    let mut c = Conformance::new(&lab);
    let too_large = vec![b' '; 2 << 20];
    let policy = |settings: Value| json!({"ResourceType": "Policy", "RequestType": "Add", "Settings": settings});
    let mapping = json!({"Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 8080}}]});

    // Networks.
    let net = json!({"Name": "a", "Type": "NAT", "Ipams": [{"Type": "Static", "Subnets": [{"IpAddressPrefix": "10.70.0.0/24"}]}]});
    let n = expect(c.post("/networks", &net), 200, None);
    assert_eq!(n["Type"], "NAT");
    expect(c.post("/networks", &net), 409, Some("NETWORK_ALREADY_EXISTS"));
    // `Name` is required by the document and by the server.
    expect(c.post("/networks", &json!({"Type": "NAT"})), 400, Some("INVALID_NAME"));
    expect(c.post("/networks", &json!({"Name": "b", "Type": "bridge"})), 400, Some("INVALID_NETWORK_TYPE"));
    expect(c.call("POST", "/networks", b"{\"Name\":"), 400, Some("INVALID_JSON"));
    expect(c.call("POST", "/networks", &too_large), 413, Some("BODY_TOO_LARGE"));
    expect(c.get("/networks"), 200, None);
    expect(c.get("/networks/a/"), 200, None);
    expect(c.get("/networks/nope"), 404, Some("NETWORK_NOT_FOUND"));
    expect(c.post("/networks/a", &policy(json!({"Policies": [{"Type": "AutomaticDNS", "Settings": {"Enable": true}}]}))), 200, None);
    expect(c.post("/networks/nope", &policy(json!({"Policies": []}))), 404, Some("NETWORK_NOT_FOUND"));
    expect(c.post("/networks/a", &json!({"ResourceType": "Policy"})), 400, Some("INVALID_JSON"));

    // Namespaces; `NamespaceId` is hns's to choose and is refused by name.
    let ns = expect(c.post("/namespaces", &json!({"Name": "x"})), 200, None);
    let e = expect(c.post("/namespaces", &json!({"Name": "y", "NamespaceId": 7})), 400, Some("INVALID_NAMESPACE"));
    assert_eq!(e["field"], "NamespaceId");
    expect(c.post("/namespaces", &json!({"Name": "x"})), 409, Some("NAMESPACE_ALREADY_EXISTS"));
    expect(c.post("/namespaces", &json!({"Resources": [{"Type": "Endpoint", "Data": {"ID": "nope"}}]})), 404, Some("ENDPOINT_NOT_FOUND"));
    expect(c.get("/namespaces"), 200, None);
    expect(c.get("/namespaces/x"), 200, None);
    expect(c.get("/namespaces/nope"), 404, Some("NAMESPACE_NOT_FOUND"));

    // Endpoints.
    let ep = expect(c.post("/endpoints", &json!({"Name": "e", "HostComputeNetwork": "a"})), 200, None);
    let ep_path = format!("/endpoints/{}", ep["ID"].as_str().unwrap());
    expect(c.post("/endpoints", &json!({"Name": "e", "HostComputeNetwork": "a"})), 409, Some("ENDPOINT_ALREADY_EXISTS"));
    expect(c.post("/endpoints", &json!({"HostComputeNetwork": "nope"})), 404, Some("NETWORK_NOT_FOUND"));
    expect(c.post("/endpoints", &json!({"Name": "f"})), 400, None);
    expect(c.get("/endpoints"), 200, None);
    expect(c.get(&ep_path), 200, None);
    expect(c.get("/endpoints/nope"), 404, Some("ENDPOINT_NOT_FOUND"));
    expect(c.post(&ep_path, &policy(mapping.clone())), 204, None);
    expect(c.post(&ep_path, &policy(mapping.clone())), 409, Some("PORT_ALREADY_EXISTS"));
    expect(c.post(&ep_path, &policy(json!({"Policies": [{"Type": "TierAcl"}]}))), 400, Some("INVALID_POLICY_TYPE"));
    expect(c.post("/endpoints/nope", &policy(mapping)), 404, Some("ENDPOINT_NOT_FOUND"));
    expect(c.get("/portmappings"), 200, None);

    // Attach, record a process, detach.
    let ns_path = format!("/namespaces/{}", ns["ID"].as_str().unwrap());
    let attach = |rt: &str| json!({"ResourceType": "Endpoint", "RequestType": rt, "Settings": {"EndpointId": ep["ID"]}});
    expect(c.post(&ns_path, &attach("Add")), 200, None);
    let again = json!({"Name": "z", "Resources": [{"Type": "Endpoint", "Data": {"ID": ep["ID"]}}]});
    expect(c.post("/namespaces", &again), 409, Some("ENDPOINT_ALREADY_ATTACHED"));
    expect(c.post(&ns_path, &json!({"ResourceType": "Container", "RequestType": "Add", "Settings": {"Pid": 1, "Command": ["init"]}})), 200, None);
    expect(c.post(&ns_path, &json!({"ResourceType": "Container", "RequestType": "Add", "Settings": {}})), 400, Some("INVALID_NAMESPACE"));
    expect(c.post("/namespaces/nope", &attach("Add")), 404, Some("NAMESPACE_NOT_FOUND"));
    expect(c.delete("/networks/a"), 409, Some("ENTITY_HAS_REFERENCES"));

    // Cluster routes without a cluster store.
    expect(c.get("/nodes"), 400, Some("REQUEST_UNSUPPORTED"));
    expect(c.delete("/nodes/other"), 400, Some("REQUEST_UNSUPPORTED"));

    // Service routes.
    expect(c.get("/globals/version"), 200, None);
    expect(c.get("/healthz"), 200, None);
    expect(c.get("/info"), 200, None);
    expect(c.get("/openapi.json"), 200, None);
    // The event stream: replayed from the start and ended at once (`until` now).
    let r = c.get("/events?since=0&until=0s");
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.raw.lines().count() >= 10 && r.raw.contains(r#""Type":"portmapping""#), "{}", r.raw);
    expect(c.get("/events?type=container"), 400, Some("INVALID_PARAMETER"));
    expect(c.get("/events?colour=red"), 400, Some("INVALID_PARAMETER"));

    // Load balancers, with the attached endpoint as their backend.
    let lb = |port: u16| json!({"HostComputeEndpoints": [ep["ID"]], "FrontendVIPs": ["10.96.0.10"], "PortMappings": [{"Protocol": 6, "InternalPort": 80, "ExternalPort": port}]});
    let l = expect(c.post("/loadbalancers", &lb(80)), 200, None);
    let lb_path = format!("/loadbalancers/{}", l["ID"].as_str().unwrap());
    let e = expect(c.post("/loadbalancers", &json!({"HostComputeEndpoints": [ep["ID"]], "FrontendVIPs": ["10.96.0.10"], "PortMappings": [{"Protocol": 99, "InternalPort": 80, "ExternalPort": 80}]})), 400, None);
    assert_eq!(e["field"], "PortMappings[0].Protocol");
    expect(c.get("/loadbalancers"), 200, None);
    expect(c.get(&lb_path), 200, None);
    expect(c.get("/loadbalancers/nope"), 404, Some("NOT_FOUND"));
    expect(c.post(&lb_path, &lb(81)), 200, None);
    expect(c.delete(&lb_path), 204, None);
    expect(c.delete(&lb_path), 404, Some("NOT_FOUND"));

    // Deletion, then of what is gone.
    expect(c.delete(&ns_path), 204, None);
    expect(c.delete(&ns_path), 404, Some("NAMESPACE_NOT_FOUND"));
    expect(c.delete(&ep_path), 204, None);
    expect(c.delete(&ep_path), 404, Some("ENDPOINT_NOT_FOUND"));
    expect(c.delete("/networks/a"), 204, None);
    expect(c.delete("/networks/a"), 404, Some("NETWORK_NOT_FOUND"));

    // Every documented operation was called.
    let mut documented = BTreeSet::new();
    for (path, item) in c.doc["paths"].as_object().unwrap() {
        for m in item.as_object().unwrap().keys().filter(|m| ["get", "post", "delete", "put", "patch"].contains(&m.as_str())) {
            documented.insert((path.clone(), m.clone()));
        }
    }
    let missed: Vec<_> = documented.difference(&c.called).collect();
    assert!(missed.is_empty(), "operations the test did not call: {missed:?}");
    assert!(start.elapsed() < Duration::from_secs(60), "the conformance run took {:?}", start.elapsed());
}
