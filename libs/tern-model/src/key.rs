//! Table key schemas, primary keys, their hash and their order-preserving storage encoding.

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{ApiError, Result};
use crate::value::{AttributeValue, Item};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Hash,
    Range,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarType {
    S,
    N,
    B,
}

impl ScalarType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScalarType::S => "S",
            ScalarType::N => "N",
            ScalarType::B => "B",
        }
    }

    fn tag(self) -> u8 {
        match self {
            ScalarType::S => b's',
            ScalarType::N => b'n',
            ScalarType::B => b'b',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySchema {
    pub hash: (String, ScalarType),
    pub range: Option<(String, ScalarType)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryKey {
    pub hash: AttributeValue,
    pub range: Option<AttributeValue>,
}

const MAX_HASH_KEY: usize = 2048;
const MAX_RANGE_KEY: usize = 1024;

fn scalar_bytes(v: &AttributeValue) -> &[u8] {
    match v {
        AttributeValue::S(s) => s.as_bytes(),
        AttributeValue::N(n) => n.as_str().as_bytes(),
        AttributeValue::B(b) => b,
        _ => &[],
    }
}

fn scalar_type(v: &AttributeValue) -> Option<ScalarType> {
    match v {
        AttributeValue::S(_) => Some(ScalarType::S),
        AttributeValue::N(_) => Some(ScalarType::N),
        AttributeValue::B(_) => Some(ScalarType::B),
        _ => None,
    }
}

impl KeySchema {
    /// The key of an item to write; the item must hold the key attributes with their types.
    pub fn key_of_item(&self, item: &Item) -> Result<PrimaryKey> {
        let get = |(name, ty): &(String, ScalarType)| -> Result<AttributeValue> {
            let v = item.get(name).ok_or_else(|| {
                ApiError::invalid_parameter(format!("Missing the key {name} in the item"))
            })?;
            check_key_value(name, *ty, v)?;
            Ok(v.clone())
        };
        let key = PrimaryKey {
            hash: get(&self.hash)?,
            range: self.range.as_ref().map(get).transpose()?,
        };
        key.check_sizes()?;
        Ok(key)
    }

    /// The key given as `Key` of GetItem/DeleteItem: exactly the key attributes.
    pub fn parse_key(&self, key: &Item) -> Result<PrimaryKey> {
        let mismatch =
            || ApiError::validation("The provided key element does not match the schema");
        let expected = 1 + usize::from(self.range.is_some());
        if key.len() != expected {
            return Err(mismatch());
        }
        let get = |(name, ty): &(String, ScalarType)| -> Result<AttributeValue> {
            let v = key.get(name).ok_or_else(mismatch)?;
            if scalar_type(v) != Some(*ty) {
                return Err(mismatch());
            }
            check_key_value(name, *ty, v)?;
            Ok(v.clone())
        };
        let key = PrimaryKey {
            hash: get(&self.hash)?,
            range: self.range.as_ref().map(get).transpose()?,
        };
        key.check_sizes()?;
        Ok(key)
    }
}

fn check_key_value(name: &str, ty: ScalarType, v: &AttributeValue) -> Result<()> {
    if scalar_type(v) != Some(ty) {
        return Err(ApiError::invalid_parameter(format!(
            "Type mismatch for key {name} expected: {} actual: {}",
            ty.as_str(),
            v.type_name()
        )));
    }
    if scalar_bytes(v).is_empty() && ty != ScalarType::N {
        let kind = if ty == ScalarType::S {
            "string"
        } else {
            "binary"
        };
        return Err(ApiError::validation(format!(
            "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty {kind} value. Key: {name}"
        )));
    }
    Ok(())
}

impl PrimaryKey {
    fn check_sizes(&self) -> Result<()> {
        if scalar_bytes(&self.hash).len() > MAX_HASH_KEY {
            // NOTE: DynamoDB's message really lacks the space before 2048.
            return Err(ApiError::invalid_parameter(
                "Size of hashkey has exceeded the maximum size limit of2048 bytes",
            ));
        }
        if self
            .range
            .as_ref()
            .is_some_and(|r| scalar_bytes(r).len() > MAX_RANGE_KEY)
        {
            return Err(ApiError::invalid_parameter(
                "Aggregated size of all range keys has exceeded the size limit of 1024 bytes",
            ));
        }
        Ok(())
    }

    /// Stable 64-bit hash of the partition key. Never change it: it places data.
    pub fn hash(&self) -> u64 {
        let ty = scalar_type(&self.hash).unwrap_or(ScalarType::S);
        let bytes = scalar_bytes(&self.hash);
        let mut buf = Vec::with_capacity(bytes.len() + 1);
        buf.push(ty.tag());
        buf.extend_from_slice(bytes);
        xxh3_64(&buf)
    }

    /// `hash (8 bytes BE) ++ escaped partition key ++ order-preserving sort key`: items of one
    /// partition key are contiguous and in sort-key order under memcmp.
    pub fn storage_key(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + scalar_bytes(&self.hash).len());
        out.extend_from_slice(&self.hash().to_be_bytes());
        escape_into(&mut out, scalar_bytes(&self.hash));
        if let Some(r) = &self.range {
            match r {
                AttributeValue::N(n) => out.extend_from_slice(&n.order_key()),
                other => escape_into(&mut out, scalar_bytes(other)),
            }
        }
        out
    }
}

/// Order-preserving, self-delimiting bytes: 0x00 becomes 0x00 0xFF, and 0x00 0x01 ends the value,
/// so a prefix sorts before its extensions.
pub(crate) fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    escape_prefix(out, bytes);
    out.extend_from_slice(&[0x00, 0x01]);
}

/// The escaped bytes without their end: what every value starting with `bytes` starts with.
pub(crate) fn escape_prefix(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::number::Number;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn schema() -> KeySchema {
        KeySchema {
            hash: ("pk".into(), ScalarType::S),
            range: Some(("sk".into(), ScalarType::N)),
        }
    }

    #[test]
    fn hash_is_pinned() {
        // These values place data on disk: a change here is a data-format break.
        let k = PrimaryKey {
            hash: s("a"),
            range: None,
        };
        assert_eq!(k.hash(), xxh3_64(b"sa"));
        let k = PrimaryKey {
            hash: AttributeValue::N(Number::parse("1.0").unwrap()),
            range: None,
        };
        assert_eq!(k.hash(), xxh3_64(b"n1"));
    }

    #[test]
    fn item_key_errors() {
        let mut item = Item::new();
        item.insert("pk".into(), s("a"));
        let e = schema().key_of_item(&item).unwrap_err();
        assert_eq!(
            e.message,
            "One or more parameter values were invalid: Missing the key sk in the item"
        );
        item.insert("sk".into(), s("x"));
        let e = schema().key_of_item(&item).unwrap_err();
        assert_eq!(e.message, "One or more parameter values were invalid: Type mismatch for key sk expected: N actual: S");
        item.insert("sk".into(), AttributeValue::N(Number::parse("1").unwrap()));
        item.insert("pk".into(), s(""));
        let e = schema().key_of_item(&item).unwrap_err();
        assert!(
            e.message
                .ends_with("cannot contain an empty string value. Key: pk"),
            "{}",
            e.message
        );
        item.insert("pk".into(), s(&"x".repeat(2049)));
        assert!(schema()
            .key_of_item(&item)
            .unwrap_err()
            .message
            .contains("limit of2048 bytes"));
        item.insert("pk".into(), s("ok"));
        item.insert("other".into(), s("fine"));
        assert!(schema().key_of_item(&item).is_ok());
        assert_eq!(
            schema().parse_key(&item).unwrap_err().message,
            "The provided key element does not match the schema"
        );
    }

    #[test]
    fn storage_keys_sort_by_sort_key() {
        let key = |sk: &str| {
            PrimaryKey {
                hash: s("p"),
                range: Some(AttributeValue::N(Number::parse(sk).unwrap())),
            }
            .storage_key()
        };
        let order = ["-100", "-1.5", "0", "0.001", "1", "2", "10", "1e20"];
        for w in order.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{} < {}", w[0], w[1]);
        }
        let skey = |sk: &[u8]| {
            PrimaryKey {
                hash: s("p"),
                range: Some(AttributeValue::B(sk.to_vec())),
            }
            .storage_key()
        };
        let order: [&[u8]; 6] = [b"", b"\x00", b"\x00\x00", b"\x00\x01", b"a", b"ab"];
        for w in order.windows(2) {
            assert!(skey(w[0]) < skey(w[1]), "{:?} < {:?}", w[0], w[1]);
        }
    }
}
