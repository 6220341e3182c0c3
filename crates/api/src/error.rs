//! The error body of every failed API call: `{"code", "message", "field"}`.
//!
//! Codes are stable and mirror the names of HCN's HRESULTs where one fits, so a client can
//! branch on them; the message is for people and names the field, the value, the rule and the fix.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! codes {
    ($($variant:ident = $text:literal, $status:literal;)+) => {
        /// Stable machine-readable error codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum ErrorCode { $(#[serde(rename = $text)] $variant),+ }

        // The schema comes from the same table as the serde names (see `crate::enums`).
        impl utoipa::PartialSchema for ErrorCode {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::enums::string_enum_schema("Stable machine-readable error codes.", &[$($text),+])
            }
        }
        impl utoipa::ToSchema for ErrorCode {}

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $(ErrorCode::$variant => $text),+ } }
            /// The HTTP status this code is sent with.
            pub fn http_status(self) -> u16 { match self { $(ErrorCode::$variant => $status),+ } }
        }
    };
}

codes! {
    InvalidJson = "INVALID_JSON", 400;
    InvalidNetwork = "INVALID_NETWORK", 400;
    InvalidNetworkType = "INVALID_NETWORK_TYPE", 400;
    InvalidEndpoint = "INVALID_ENDPOINT", 400;
    InvalidNamespace = "INVALID_NAMESPACE", 400;
    InvalidPolicy = "INVALID_POLICY", 400;
    InvalidPolicyType = "INVALID_POLICY_TYPE", 400;
    InvalidSubnet = "INVALID_SUBNET", 400;
    InvalidPrefix = "INVALID_PREFIX", 400;
    InvalidIp = "INVALID_IP", 400;
    InvalidMac = "INVALID_MAC", 400;
    InvalidName = "INVALID_NAME", 400;
    InvalidDns = "INVALID_DNS", 400;
    AddrInvalidOrReserved = "ADDR_INVALID_OR_RESERVED", 400;
    RequestUnsupported = "REQUEST_UNSUPPORTED", 400;
    InvalidParameter = "INVALID_PARAMETER", 400;
    NetworkNotFound = "NETWORK_NOT_FOUND", 404;
    EndpointNotFound = "ENDPOINT_NOT_FOUND", 404;
    NamespaceNotFound = "NAMESPACE_NOT_FOUND", 404;
    NotFound = "NOT_FOUND", 404;
    MethodNotAllowed = "METHOD_NOT_ALLOWED", 405;
    HostNotAllowed = "HOST_NOT_ALLOWED", 403;
    NetworkAlreadyExists = "NETWORK_ALREADY_EXISTS", 409;
    EndpointAlreadyExists = "ENDPOINT_ALREADY_EXISTS", 409;
    NamespaceAlreadyExists = "NAMESPACE_ALREADY_EXISTS", 409;
    EndpointAlreadyAttached = "ENDPOINT_ALREADY_ATTACHED", 409;
    EndpointNotAttached = "ENDPOINT_NOT_ATTACHED", 409;
    SubnetInUse = "SUBNET_IN_USE", 409;
    AddrInUse = "ADDR_IN_USE", 409;
    MacInUse = "MAC_IN_USE", 409;
    InterfaceNameInUse = "INTERFACE_NAME_IN_USE", 409;
    AddressPoolExhausted = "ADDRESS_POOL_EXHAUSTED", 409;
    PortAlreadyExists = "PORT_ALREADY_EXISTS", 409;
    PortPoolExhausted = "PORT_POOL_EXHAUSTED", 409;
    PolicyNotFound = "POLICY_NOT_FOUND", 404;
    InvalidInternalPort = "INVALID_INTERNAL_PORT", 400;
    MappingNotSupported = "MAPPING_NOT_SUPPORTED", 400;
    EntityHasReferences = "ENTITY_HAS_REFERENCES", 409;
    BodyTooLarge = "BODY_TOO_LARGE", 413;
    RequestTimeout = "REQUEST_TIMEOUT", 408;
    DhcpFailed = "DHCP_FAILED", 504;
    KernelError = "KERNEL_ERROR", 500;
    StoreError = "STORE_ERROR", 500;
    Internal = "INTERNAL", 500;
    Unavailable = "UNAVAILABLE", 503;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// JSON path of the offending field, e.g. `Ipams[0].Subnets[0].IpAddressPrefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), field: None }
    }
    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), field: Some(field.into()) }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Internal, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}
