//! Typed access to the fields of a request body, with DynamoDB's errors for wrong shapes.

use std::collections::HashMap;

use serde_json::{Map, Value};
use tern_model::{ApiError, AttributeValue, ErrorCode};

pub struct Request {
    body: Map<String, Value>,
}

fn serialization(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Serialization, msg)
}

/// DynamoDB's message for a required member that is absent.
pub fn null_member(field: &str) -> ApiError {
    ApiError::validation(format!(
        "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
    ))
}

impl Request {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(body)) => Ok(Self { body }),
            Ok(_) => Err(serialization(
                "Start of structure or map found where not expected",
            )),
            Err(e) => Err(serialization(format!("Malformed JSON: {e}"))),
        }
    }

    /// A nested object read with the same accessors (a table's part of a batch request).
    pub fn from_map(body: Map<String, Value>) -> Self {
        Self { body }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.body.get(name).filter(|v| !v.is_null())
    }

    pub fn str(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(serialization(format!(
                "Unexpected value type for {name}: expected a string"
            ))),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(serialization(format!(
                "Unexpected value type for {name}: expected a boolean"
            ))),
        }
    }

    pub fn i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
                serialization(format!("Unexpected value for {name}: expected an integer"))
            }),
            Some(_) => Err(serialization(format!(
                "Unexpected value type for {name}: expected a number"
            ))),
        }
    }

    pub fn array(&self, name: &str) -> Result<Option<&Vec<Value>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(serialization(format!(
                "Unexpected value type for {name}: expected a list"
            ))),
        }
    }

    pub fn object(&self, name: &str) -> Result<Option<&Map<String, Value>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(serialization(format!(
                "Unexpected value type for {name}: expected a map"
            ))),
        }
    }

    /// `TableName`, present and valid.
    pub fn table_name(&self) -> Result<&str, ApiError> {
        let name = self
            .str("TableName")?
            .ok_or_else(|| null_member("tableName"))?;
        tern_model::validate_table_name(name, "tableName")?;
        Ok(name)
    }

    /// ExpressionAttributeNames and ExpressionAttributeValues, checked as DynamoDB checks them
    /// (limits; and present only when the request has an expression, `with_expressions`).
    #[allow(clippy::type_complexity)]
    pub fn substitutions(
        &self,
        with_expressions: bool,
    ) -> Result<
        (
            Option<HashMap<String, String>>,
            Option<HashMap<String, AttributeValue>>,
        ),
        ApiError,
    > {
        let names = self.expression_names()?;
        let values = self.expression_values()?;
        tern_model::validate_substitutions(names.as_ref(), values.as_ref())?;
        if !with_expressions {
            for (present, field) in [
                (names.is_some(), "ExpressionAttributeNames"),
                (values.is_some(), "ExpressionAttributeValues"),
            ] {
                if present {
                    return Err(ApiError::validation(format!(
                        "{field} can only be specified when using expressions"
                    )));
                }
            }
        }
        Ok((names, values))
    }

    pub fn expression_names(&self) -> Result<Option<HashMap<String, String>>, ApiError> {
        let Some(map) = self.object("ExpressionAttributeNames")? else {
            return Ok(None);
        };
        map.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(serialization(
                    "Unexpected value type in ExpressionAttributeNames: expected a string",
                )),
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    pub fn expression_values(&self) -> Result<Option<HashMap<String, AttributeValue>>, ApiError> {
        let Some(map) = self.object("ExpressionAttributeValues")? else {
            return Ok(None);
        };
        map.iter()
            .map(|(k, v)| Ok((k.clone(), tern_model::parse_value(v)?)))
            .collect::<Result<_, ApiError>>()
            .map(Some)
    }
}
