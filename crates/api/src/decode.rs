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
    // serde's derived structs also accept a JSON array of their fields in order, so
    // `["id","name","NAT"]` would read as a network: a request body must be an object.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        first => {
            let got = match first {
                None => "an empty body".to_owned(),
                Some(b'[') => "an array".to_owned(),
                Some(_) => "something else".to_owned(),
            };
            return Err(ApiError::new(ErrorCode::InvalidJson, format!("the request body must be one JSON object ({{...}}), got {got}")));
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            // The body is not JSON: there is no field to name, only a position.
            return ApiError::new(ErrorCode::InvalidJson, format!("the request body is not valid JSON: {inner}; send one JSON object"));
        }
        let field = if path == "." { None } else { Some(path.clone()) };
        let inner = without_position(inner.to_string());
        let message = match &field {
            Some(f) => format!("field {f}: {inner}"),
            None => inner,
        };
        ApiError { code: ErrorCode::InvalidJson, message, field }
    })?;
    // Anything after the object (`{...}xyz`, a second object) is refused, not ignored.
    de.end().map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the request body has more after its JSON object: {e}; send exactly one JSON object")))?;
    Ok(value)
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
    fn only_one_object_is_a_body() {
        let trailing = from_slice::<HostComputeNetwork>(br#"{"Name":"a"}xyz"#).unwrap_err();
        assert!(trailing.message.contains("more after its JSON object"), "{}", trailing.message);
        let second = from_slice::<HostComputeNetwork>(br#"{"Name":"a"} {"Name":"b"}"#).unwrap_err();
        assert_eq!(second.code, ErrorCode::InvalidJson);
        assert!(from_slice::<HostComputeNetwork>(b"{\"Name\":\"a\"}\n ").is_ok(), "trailing whitespace is fine");
        let array = from_slice::<HostComputeNetwork>(br#"["id","name","NAT"]"#).unwrap_err();
        assert!(array.message.contains("must be one JSON object") && array.message.contains("an array"), "{}", array.message);
        assert!(from_slice::<HostComputeNetwork>(b"").unwrap_err().message.contains("an empty body"));
    }

    #[test]
    fn a_truncated_body_names_no_field() {
        let e = from_slice::<HostComputeNetwork>(br#"{"Name": "a", "Ipams": [{"Subnets": "#).unwrap_err();
        assert_eq!(e.field, None, "{}", e.message);
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }

    #[test]
    fn malformed_json() {
        let e = from_slice::<HostComputeNetwork>(b"{\"Name\":").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJson);
        assert!(e.message.contains("not valid JSON"));
    }
}
