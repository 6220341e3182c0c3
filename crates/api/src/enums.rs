//! Enums in the HNS wire form.
//!
//! The HNS schema documents enums as strings while hcsshim sends some as integers, so every enum
//! here accepts the string in any letter case and the integer (the position in the HNS schema
//! table), and serializes in the canonical spelling.
//!
//! The OpenAPI schema of each enum is built from the same spelling table as its serde form
//! ([`string_enum_schema`]): utoipa's derive does not see `#[serde(rename = ...)]` written by a
//! macro, and documented the Rust variant names (`Nat`) instead of what is sent (`NAT`).

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// A string enum schema listing exactly `values`, the spellings hns sends.
pub(crate) fn string_enum_schema(description: &str, values: &[&'static str]) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).description(Some(description)).enum_values(Some(values.iter().copied())).into()
}

macro_rules! hns_enum {
    ($(#[doc = $doc:literal])* $name:ident { $($variant:ident = $num:literal => $text:literal),+ $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let doc = concat!($($doc),*).trim();
                string_enum_schema(
                    &format!("{doc} Sent in this spelling; requests may use any letter case or the integer form (its position in this list)."),
                    &[$($text),+],
                )
            }
        }
        impl utoipa::ToSchema for $name {}

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Canonical spelling.
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
            /// Integer form used by hcsshim.
            pub fn as_int(self) -> u64 { match self { $($name::$variant => $num),+ } }
            /// Parses the string form in any case.
            pub fn parse(s: &str) -> Option<Self> {
                $(if s.eq_ignore_ascii_case($text) { return Some($name::$variant); })+
                None
            }
            pub fn from_int(n: u64) -> Option<Self> { match n { $($num => Some($name::$variant),)+ _ => None } }
            /// The accepted spellings, for error messages.
            pub fn choices() -> String { [$($text),+].join(", ") }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                if let Ok(n) = s.parse::<u64>() {
                    return $name::from_int(n).ok_or_else(|| format!("{n} is not a valid {} (one of {})", stringify!($name), $name::choices()));
                }
                $name::parse(s).ok_or_else(|| format!("{s:?} is not a valid {} (one of {})", stringify!($name), $name::choices()))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = serde_json::Value::deserialize(d)?;
                let parsed = match &v {
                    serde_json::Value::String(s) => s.parse::<$name>(),
                    serde_json::Value::Number(n) => match n.as_u64() {
                        Some(n) => format!("{n}").parse::<$name>(),
                        None => Err(format!("{n} is not a valid {}", stringify!($name))),
                    },
                    other => Err(format!("expected a string or an integer for {}, got {other}", stringify!($name))),
                };
                parsed.map_err(serde::de::Error::custom)
            }
        }
    };
}

hns_enum! {
    /// HNS `NetworkMode`: the driver of a network.
    NetworkType {
        Nat = 0 => "NAT",
        Ics = 1 => "ICS",
        Transparent = 2 => "Transparent",
        L2Bridge = 3 => "L2Bridge",
        L2Tunnel = 4 => "L2Tunnel",
        Overlay = 5 => "Overlay",
        Private = 6 => "Private",
        Internal = 7 => "Internal",
        Mirrored = 8 => "Mirrored",
        Infiniband = 9 => "Infiniband",
        ConstrainedIcs = 10 => "ConstrainedICS",
    }
}

hns_enum! {
    /// How a network's addresses are assigned.
    IpamType {
        Static = 0 => "Static",
        Dhcp = 1 => "Dhcp",
    }
}

hns_enum! {
    /// HNS `NamespaceType`.
    NamespaceType {
        Host = 0 => "Host",
        HostDefault = 1 => "HostDefault",
        Guest = 2 => "Guest",
        GuestDefault = 3 => "GuestDefault",
    }
}

hns_enum! {
    /// What a modify request changes.
    ResourceType {
        Policy = 0 => "Policy",
        Endpoint = 1 => "Endpoint",
        Container = 2 => "Container",
        Port = 3 => "Port",
        Dns = 4 => "DNS",
        Extension = 5 => "Extension",
        Subnet = 6 => "Subnet",
        IpSubnet = 7 => "IPSubnet",
    }
}

hns_enum! {
    /// How a modify request changes it.
    RequestType {
        Add = 0 => "Add",
        Remove = 1 => "Remove",
        Update = 2 => "Update",
        Refresh = 3 => "Refresh",
        Reset = 4 => "Reset",
    }
}

hns_enum! {
    /// HNS ACL `Action`. `Pass` (HNS 2.10 tiers) is decoded so it can be refused by name.
    AclAction {
        Allow = 0 => "Allow",
        Block = 1 => "Block",
        Pass = 2 => "Pass",
    }
}

hns_enum! {
    /// HNS ACL `Direction`, seen from the endpoint.
    AclDirection {
        In = 0 => "In",
        Out = 1 => "Out",
    }
}

hns_enum! {
    /// HNS ACL `RuleType`: `Host` (traffic with the host itself), `Switch` (every packet).
    AclRuleType {
        Host = 0 => "Host",
        Switch = 1 => "Switch",
    }
}

hns_enum! {
    /// Load-balancer `DistributionType`: how a backend is chosen for a new connection.
    DistributionType {
        None = 0 => "None",
        SourceIpProtocol = 1 => "SourceIPProtocol",
        SourceIp = 2 => "SourceIP",
    }
}

// The variants are written by `hns_enum!`, which cannot mark one `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for DistributionType {
    fn default() -> Self {
        DistributionType::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_accept_any_case_and_integers_and_emit_canonical_form() {
        let t: NetworkType = serde_json::from_str("\"nat\"").unwrap();
        assert_eq!(t, NetworkType::Nat);
        let t: NetworkType = serde_json::from_str("\"l2BRIDGE\"").unwrap();
        assert_eq!(t, NetworkType::L2Bridge);
        let t: NetworkType = serde_json::from_str("4").unwrap();
        assert_eq!(t, NetworkType::L2Tunnel);
        assert_eq!(serde_json::to_string(&NetworkType::Nat).unwrap(), "\"NAT\"");
        assert_eq!(serde_json::to_string(&ResourceType::Dns).unwrap(), "\"DNS\"");
        let e = serde_json::from_str::<NetworkType>("\"bridge\"").unwrap_err().to_string();
        assert!(e.contains("bridge") && e.contains("L2Tunnel"), "{e}");
        assert!(serde_json::from_str::<NetworkType>("99").is_err());
        assert!(serde_json::from_str::<NetworkType>("true").is_err());
    }

    /// The OpenAPI enum lists exactly what serde sends, for every enum of the wire.
    #[test]
    fn schemas_list_the_spellings_that_are_sent() {
        fn documented<T: utoipa::PartialSchema>() -> serde_json::Value {
            serde_json::to_value(T::schema()).unwrap()["enum"].clone()
        }
        fn sent<T: Serialize>(all: &[T]) -> serde_json::Value {
            serde_json::to_value(all).unwrap()
        }
        assert_eq!(documented::<NetworkType>(), sent(NetworkType::ALL));
        assert_eq!(documented::<IpamType>(), sent(IpamType::ALL));
        assert_eq!(documented::<NamespaceType>(), sent(NamespaceType::ALL));
        assert_eq!(documented::<ResourceType>(), sent(ResourceType::ALL));
        assert_eq!(documented::<RequestType>(), sent(RequestType::ALL));
        assert_eq!(documented::<crate::ErrorCode>(), sent(crate::ErrorCode::ALL));
        assert!(documented::<NetworkType>().as_array().unwrap().contains(&"NAT".into()));
    }
}
