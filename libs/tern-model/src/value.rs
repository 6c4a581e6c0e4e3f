//! Attribute values and items in DynamoDB's JSON form (`{"S":"x"}`, `{"N":"1"}`, …).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use crate::error::{ApiError, ErrorCode, Result};
use crate::number::Number;

/// An item: attribute name → value.
pub type Item = BTreeMap<String, AttributeValue>;

/// DynamoDB allows documents nested 32 levels deep.
pub const MAX_NESTING: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AttributeValue {
    S(String),
    N(Number),
    B(#[serde(with = "b64")] Vec<u8>),
    Bool(bool),
    Null,
    M(Item),
    L(Vec<AttributeValue>),
    SS(Vec<String>),
    NS(Vec<Number>),
    BS(#[serde(with = "b64_list")] Vec<Vec<u8>>),
}

impl AttributeValue {
    /// DynamoDB's type descriptor: "S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS".
    pub fn type_name(&self) -> &'static str {
        match self {
            AttributeValue::S(_) => "S",
            AttributeValue::N(_) => "N",
            AttributeValue::B(_) => "B",
            AttributeValue::Bool(_) => "BOOL",
            AttributeValue::Null => "NULL",
            AttributeValue::M(_) => "M",
            AttributeValue::L(_) => "L",
            AttributeValue::SS(_) => "SS",
            AttributeValue::NS(_) => "NS",
            AttributeValue::BS(_) => "BS",
        }
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

mod b64 {
    use base64::Engine;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::b64().encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        super::b64().decode(s).map_err(serde::de::Error::custom)
    }
}

mod b64_list {
    use base64::Engine;
    pub fn serialize<S: serde::Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| super::b64().encode(b)))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v = <Vec<String> as serde::Deserialize>::deserialize(d)?;
        v.into_iter()
            .map(|s| super::b64().decode(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

fn serialization(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Serialization, msg)
}

/// Parses an item (a JSON object of attribute values).
pub fn parse_item(v: &Value) -> Result<Item> {
    parse_map(v, 0)
}

/// Parses one attribute value.
pub fn parse_value(v: &Value) -> Result<AttributeValue> {
    parse_at(v, 0)
}

fn parse_map(v: &Value, depth: usize) -> Result<Item> {
    let Value::Object(map) = v else {
        return Err(serialization(
            "Start of structure or map found where not expected",
        ));
    };
    map.iter()
        .map(|(k, v)| Ok((k.clone(), parse_at(v, depth)?)))
        .collect()
}

fn parse_at(v: &Value, depth: usize) -> Result<AttributeValue> {
    if depth > MAX_NESTING {
        return Err(ApiError::validation(
            "Nesting Levels have exceeded supported limits",
        ));
    }
    let Value::Object(map) = v else {
        return Err(serialization(
            "Unexpected value type: an attribute value must be an object",
        ));
    };
    let mut set = map.iter().filter(|(_, v)| !v.is_null());
    let (Some((ty, inner)), rest) = (set.next(), set.count()) else {
        return Err(ApiError::validation(
            "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
        ));
    };
    if rest > 0 {
        return Err(ApiError::validation(
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
        ));
    }
    Ok(match ty.as_str() {
        "S" => AttributeValue::S(string(inner, "S")?.to_string()),
        "N" => AttributeValue::N(Number::parse(string(inner, "N")?)?),
        "B" => AttributeValue::B(binary(inner)?),
        "BOOL" => AttributeValue::Bool(
            inner
                .as_bool()
                .ok_or_else(|| serialization("BOOL must be a boolean"))?,
        ),
        "NULL" => match inner.as_bool() {
            Some(true) => AttributeValue::Null,
            Some(false) => {
                return Err(ApiError::invalid_parameter(
                    "Null attribute value types must have the value of true",
                ))
            }
            None => return Err(serialization("NULL must be a boolean")),
        },
        "M" => AttributeValue::M(parse_map(inner, depth + 1)?),
        "L" => {
            let items = inner
                .as_array()
                .ok_or_else(|| serialization("L must be a list"))?;
            AttributeValue::L(
                items
                    .iter()
                    .map(|v| parse_at(v, depth + 1))
                    .collect::<Result<_>>()?,
            )
        }
        "SS" => {
            let v: Vec<String> = list(inner, "SS")?
                .iter()
                .map(|s| string(s, "SS").map(str::to_string))
                .collect::<Result<_>>()?;
            check_set(&v, "An string set  may not be empty", |s| s.clone())?;
            AttributeValue::SS(v)
        }
        "NS" => {
            let v: Vec<Number> = list(inner, "NS")?
                .iter()
                .map(|s| Number::parse(string(s, "NS")?))
                .collect::<Result<_>>()?;
            check_set(&v, "An number set  may not be empty", |n| {
                n.as_str().to_string()
            })?;
            AttributeValue::NS(v)
        }
        "BS" => {
            let v: Vec<Vec<u8>> = list(inner, "BS")?
                .iter()
                .map(binary)
                .collect::<Result<_>>()?;
            check_set(&v, "Binary sets should not be empty", |b| b64().encode(b))?;
            AttributeValue::BS(v)
        }
        _ => return Err(ApiError::validation(
            "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
        )),
    })
}

fn string<'a>(v: &'a Value, ty: &str) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| serialization(format!("{ty} must be a string")))
}

fn list<'a>(v: &'a Value, ty: &str) -> Result<&'a Vec<Value>> {
    v.as_array()
        .ok_or_else(|| serialization(format!("{ty} must be a list")))
}

fn binary(v: &Value) -> Result<Vec<u8>> {
    let s = string(v, "B")?;
    b64()
        .decode(s)
        .map_err(|_| serialization("Base64 encoded value is not valid"))
}

fn check_set<T>(v: &[T], empty_msg: &str, show: impl Fn(&T) -> String) -> Result<()> {
    if v.is_empty() {
        return Err(ApiError::invalid_parameter(empty_msg));
    }
    let mut seen: Vec<String> = v.iter().map(&show).collect();
    seen.sort();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        let all: Vec<String> = v.iter().map(show).collect();
        return Err(ApiError::invalid_parameter(format!(
            "Input collection [{}] contains duplicates.",
            all.join(", ")
        )));
    }
    Ok(())
}

/// Canonical DynamoDB JSON of an item.
pub fn item_to_json(item: &Item) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_map(&mut out, item);
    out
}

/// Canonical DynamoDB JSON of one value.
pub fn value_to_json(v: &AttributeValue) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, v);
    out
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn write_map(out: &mut Vec<u8>, m: &Item) {
    out.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_value(out, v);
    }
    out.push(b'}');
}

fn write_list<T>(out: &mut Vec<u8>, items: &[T], mut each: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, v);
    }
    out.push(b']');
}

fn write_value(out: &mut Vec<u8>, v: &AttributeValue) {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(v.type_name().as_bytes());
    out.extend_from_slice(b"\":");
    match v {
        AttributeValue::S(s) => write_str(out, s),
        AttributeValue::N(n) => write_str(out, n.as_str()),
        AttributeValue::B(b) => write_str(out, &b64().encode(b)),
        AttributeValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        AttributeValue::Null => out.extend_from_slice(b"true"),
        AttributeValue::M(m) => write_map(out, m),
        AttributeValue::L(l) => write_list(out, l, write_value),
        AttributeValue::SS(s) => write_list(out, s, |o, s| write_str(o, s)),
        AttributeValue::NS(s) => write_list(out, s, |o, n| write_str(o, n.as_str())),
        AttributeValue::BS(s) => write_list(out, s, |o, b| write_str(o, &b64().encode(b))),
    }
    out.push(b'}');
}

/// Parses stored canonical JSON (written by [`item_to_json`]).
pub fn parse_item_json(bytes: &[u8]) -> Result<Item> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InternalServerError,
            format!("stored item is not JSON: {e}"),
        )
    })?;
    parse_item(&v)
}

/// DynamoDB's item size: attribute name lengths plus value sizes.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn number_size(n: &Number) -> usize {
    n.significant_digits().div_ceil(2) + 1
}

/// DynamoDB's size of one attribute value.
pub fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.len(),
        AttributeValue::Bool(_) | AttributeValue::Null => 1,
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::SS(s) => s.iter().map(String::len).sum(),
        AttributeValue::NS(s) => s.iter().map(number_size).sum(),
        AttributeValue::BS(s) => s.iter().map(Vec::len).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_every_type() {
        let v = json!({
            "s": {"S": "héllo \"q\""}, "n": {"N": "-1.50"}, "b": {"B": "AAEC/w=="},
            "t": {"BOOL": true}, "z": {"NULL": true},
            "m": {"M": {"x": {"L": [{"N": "1"}, {"S": ""}]}}},
            "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.0"]}, "bs": {"BS": ["AQ==", "Ag=="]}
        });
        let item = parse_item(&v).unwrap();
        assert_eq!(item["n"], AttributeValue::N(Number::parse("-1.5").unwrap()));
        let bytes = item_to_json(&item);
        let again = parse_item_json(&bytes).unwrap();
        assert_eq!(item, again);
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back["n"], json!({"N": "-1.5"}));
        assert_eq!(back["ns"], json!({"NS": ["1", "2"]}));
        assert_eq!(back["b"], json!({"B": "AAEC/w=="}));
    }

    #[test]
    fn rejects_bad_values() {
        let err = |v: Value| parse_value(&v).unwrap_err();
        assert!(err(json!({}))
            .message
            .contains("Supplied AttributeValue is empty"));
        assert!(err(json!({"S": "a", "N": "1"}))
            .message
            .contains("more than one datatypes"));
        assert!(err(json!({"SS": []})).message.contains("may not be empty"));
        assert!(err(json!({"NS": []})).message.contains("may not be empty"));
        assert!(err(json!({"BS": []}))
            .message
            .contains("should not be empty"));
        assert!(err(json!({"SS": ["a", "a"]}))
            .message
            .contains("contains duplicates"));
        assert!(err(json!({"NS": ["1", "1.0"]}))
            .message
            .contains("contains duplicates"));
        assert!(err(json!({"NULL": false}))
            .message
            .contains("Null attribute value types must have the value of true"));
        assert_eq!(err(json!({"S": 1})).code, ErrorCode::Serialization);
        assert_eq!(err(json!({"B": "!!"})).code, ErrorCode::Serialization);
    }

    #[test]
    fn nesting_limit_is_32() {
        let mut ok = json!({"S": "leaf"});
        for _ in 0..32 {
            ok = json!({"L": [ok]});
        }
        assert!(parse_value(&ok).is_ok());
        let deep = json!({"M": {"x": ok}});
        assert!(parse_value(&deep)
            .unwrap_err()
            .message
            .contains("Nesting Levels"));
    }

    #[test]
    fn sizes() {
        let item = parse_item(
            &json!({"ab": {"S": "xyz"}, "n": {"N": "123"}, "l": {"L": [{"BOOL": true}]}}),
        )
        .unwrap();
        // "ab"+3, "n"+(2+1), "l"+(3+1+1)
        assert_eq!(item_size(&item), 5 + 4 + 6);
    }
}
