//! The harness's JSON reader for checking event data (`{"nick": …, "body": …}`): `serde_json`
//! (strict RFC 8259: no trailing commas, leading zeros, raw control characters, invalid escapes,
//! lone surrogates or trailing garbage) with `preserve_order`, so member order can be checked.
//! Note: a duplicated key keeps its last value; [`keys`] cannot show duplicates.

pub use serde_json::Value;

/// Parses one JSON text (surrounding whitespace allowed); the error names what is wrong.
pub fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Object keys in document order (empty for non-objects).
pub fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .map(|members| members.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// The string member `key` of the JSON object `text`; panics (showing `text`) if `text` is not
/// valid JSON, not an object, or lacks a string `key`.
pub fn json_str(text: &str, key: &str) -> String {
    let v = parse(text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text:?}"));
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        other => panic!("JSON member {key:?} is {other:?}, not a string, in {text:?}"),
    }
}
