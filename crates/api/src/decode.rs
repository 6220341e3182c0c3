//! Decoding request bodies so that a failure names the JSON path of the bad field.

use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// Decodes `body` as `T`; errors carry `INVALID_JSON` and the path of the offending field.
/// serde_json appends " at line L column C"; for one-line request bodies that is noise.
fn without_position(msg: String) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => msg[..i].to_owned(),
        _ => msg,
    }
}

pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." { None } else { Some(path.clone()) };
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("the request body is not valid JSON: {inner}; send one JSON object")
        } else {
            let inner = without_position(inner.to_string());
            match &field {
                Some(f) => format!("field {f}: {inner}"),
                None => inner,
            }
        };
        ApiError { code: ErrorCode::InvalidJson, message, field }
    })
}

/// Like [`from_slice`] for a JSON value already parsed (e.g. modify `Settings`), with the path
/// prefixed by `prefix`.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value, prefix: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { prefix.to_owned() } else { format!("{prefix}.{path}") };
        ApiError { code: ErrorCode::InvalidJson, message: format!("field {field}: {}", e.into_inner()), field: Some(field) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::HostComputeNetwork;

    #[test]
    fn unknown_field_is_named() {
        let e = from_slice::<HostComputeNetwork>(br#"{"Name":"a","Bogus":1}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJson);
        assert!(e.message.contains("Bogus"), "{}", e.message);
    }

    #[test]
    fn nested_type_error_has_path() {
        let e = from_slice::<HostComputeNetwork>(br#"{"Ipams":[{"Subnets":[{"IpAddressPrefix":5}]}]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Ipams[0].Subnets[0].IpAddressPrefix"));
    }

    #[test]
    fn malformed_json() {
        let e = from_slice::<HostComputeNetwork>(b"{\"Name\":").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJson);
        assert!(e.message.contains("not valid JSON"));
    }
}
