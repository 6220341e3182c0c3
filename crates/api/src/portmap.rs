//! Port mappings (WinNAT static mappings): the `PortMapping` endpoint policy and the read-only
//! listing served at `GET /portmappings`.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// Settings of a `{"Type": "PortMapping"}` endpoint policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PortMappingSettings {
    /// IP protocol number: 6 (TCP) or 17 (UDP). `"tcp"`/`"udp"` are accepted too.
    #[serde(deserialize_with = "protocol")]
    #[schema(value_type = u32)]
    pub protocol: u32,
    /// Port inside the container; required (HCN: INVALID_INTERNAL_PORT).
    pub internal_port: u16,
    /// Port on the host; 0 = hns chooses a free one from its dynamic range.
    #[serde(default)]
    pub external_port: u16,
    /// Host address the mapping is bound to; empty = every host address.
    #[serde(rename = "VIP", default, skip_serializing_if = "String::is_empty")]
    pub vip: String,
    /// NatFlags (1 = LocalRoutedVip, 2 = IPv6). Only 0 is supported yet.
    #[serde(default, skip_serializing_if = "crate::schema::is_zero_u32")]
    pub flags: u32,
    /// Extension: with `ExternalPort` 0, choose the host port from this range (`"8000-8010"`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_port_range: String,
}

fn protocol<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match &v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| serde::de::Error::custom(format!("{n} is not a protocol number"))),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("tcp") => Ok(6),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("udp") => Ok(17),
        serde_json::Value::String(s) => s.parse().map_err(|_| serde::de::Error::custom(format!("{s:?} is not a protocol: use 6 (TCP), 17 (UDP), \"tcp\" or \"udp\""))),
        other => Err(serde::de::Error::custom(format!("expected a protocol number or name, got {other}"))),
    }
}

/// One mapping as `GET /portmappings` lists it (the fields of Windows' Open-ContainerPort).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct PortMappingInfo {
    /// Stable id of the mapping: `<endpoint id>/<tcp|udp>/<external ip>/<external port>`.
    #[serde(rename = "ID")]
    pub id: String,
    pub endpoint_id: String,
    pub endpoint_name: String,
    pub network_name: String,
    /// The namespace (compartment) name or ID, when attached.
    pub namespace: String,
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// `0.0.0.0` (every address) or the bound host address.
    pub external_ip: String,
    pub external_port: u16,
    pub internal_ip: String,
    pub internal_port: u16,
    /// Remote prefix allowed to use the mapping (`0.0.0.0/0`: everyone).
    pub remote_prefix: String,
    /// Programmed in the kernel (the endpoint is attached).
    pub active: bool,
}
