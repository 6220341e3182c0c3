//! Events (an extension): what hnsd did, one JSON object per line on `GET /events`, as
//! `docker events` shows for Docker's objects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The kinds of object an event is about (`Type`).
pub const EVENT_TYPES: &[&str] = &["network", "endpoint", "namespace", "portmapping", "loadbalancer", "reconcile", "dhcp", "node", "events"];

/// One thing hnsd did, or tried to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    /// When it happened: RFC 3339, UTC, with microseconds.
    pub time: String,
    /// `network`, `endpoint`, `namespace`, `portmapping`, `reconcile`, `dhcp`, `node`, or
    /// `events` (about the stream itself: `missed`).
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `delete`, `modify`, `attach`, `detach` (networks, endpoints, namespaces);
    /// `add`, `remove` (port mappings); `repair`, `remove-orphan`, `collect`, `error`
    /// (reconcile); `obtained`, `renewed`, `lost`, `released` (DHCP leases, IPv4 and IPv6);
    /// `join`, `loss`, `remove` (overlay cluster nodes); `missed` (this subscriber fell behind).
    pub action: String,
    /// The object's ID (a port mapping: `<endpoint id>/<tcp|udp>/<host ip>/<host port>`; a
    /// node: its name). Empty when the object was never made (a create that failed).
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The object's name (a port mapping, a DHCP lease: its endpoint's name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The network the object is or was on (for a network: itself), by name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// The ID of that network.
    #[serde(rename = "NetworkID", default, skip_serializing_if = "String::is_empty")]
    pub network_id: String,
    /// `ok` or `error`.
    pub outcome: String,
    /// Why it failed (with the error code in parentheses, as the API error's `code`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// What else is known: `namespace`, `namespace_id` (attach, detach), `mapping`
    /// (`8080/tcp -> 80`), `address` (DHCP), `vtep` (nodes), `detail` (reconcile), `count`
    /// (missed), `request` (modify).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// A successful event; the time is set when it is published.
    pub fn ok(kind: &str, action: &str) -> Event {
        Event { kind: kind.into(), action: action.into(), outcome: "ok".into(), ..Default::default() }
    }

    /// A failed attempt, with the reason.
    pub fn failed(kind: &str, action: &str, error: impl Into<String>) -> Event {
        Event { kind: kind.into(), action: action.into(), outcome: "error".into(), error: error.into(), ..Default::default() }
    }

    pub fn is_ok(&self) -> bool {
        self.outcome == "ok"
    }

    pub fn object(mut self, id: impl Into<String>, name: impl Into<String>) -> Event {
        self.id = id.into();
        self.name = name.into();
        self
    }

    pub fn on_network(mut self, id: impl Into<String>, name: impl Into<String>) -> Event {
        self.network_id = id.into();
        self.network = name.into();
        self
    }

    pub fn attr(mut self, key: &str, value: impl Into<String>) -> Event {
        let v = value.into();
        if !v.is_empty() {
            self.attributes.insert(key.into(), v);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let e = Event::ok("endpoint", "attach").object("e1", "web").on_network("n1", "mynat").attr("namespace", "web").attr("empty", "");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"Time": "", "Type": "endpoint", "Action": "attach", "ID": "e1", "Name": "web", "Network": "mynat",
                "NetworkID": "n1", "Outcome": "ok", "Attributes": {"namespace": "web"}})
        );
        let f = Event::failed("network", "create", "subnet overlaps (SUBNET_IN_USE)");
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["Outcome"], "error");
        assert!(v.get("ID").is_none() && v.get("Attributes").is_none());
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), f);
    }
}
