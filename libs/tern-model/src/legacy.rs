//! The legacy conditional parameters applications still send (Expected on writes, QueryFilter and
//! ScanFilter on reads, combined by ConditionalOperator), as the conditions their expressions
//! would be.

use serde_json::{Map, Value};

use crate::error::{ApiError, Result};
use crate::expr::{CmpOp, Condition, Operand, PathElem};
use crate::value::parse_value;

fn invalid(msg: impl std::fmt::Display) -> ApiError {
    ApiError::validation(format!("One or more parameter values were invalid: {msg}"))
}

/// `Expected`, `QueryFilter` or `ScanFilter` (named by `field`) joined by `conditional_operator`
/// (AND when absent).
pub fn legacy_condition(
    field: &str,
    conditions: &Map<String, Value>,
    conditional_operator: Option<&str>,
) -> Result<Condition> {
    let join = match conditional_operator {
        None | Some("AND") => Condition::And,
        Some("OR") => Condition::Or,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'conditionalOperator' failed to satisfy constraint: Member must satisfy enum value set: [OR, AND]"
            )))
        }
    };
    let mut terms = Vec::with_capacity(conditions.len());
    for (attr, spec) in conditions {
        let spec = spec.as_object().ok_or_else(|| {
            ApiError::new(
                crate::ErrorCode::Serialization,
                format!("Unexpected value type in {field}"),
            )
        })?;
        terms.push(one(field, attr, spec)?);
    }
    Ok(match terms.len() {
        0 => return Err(invalid(format!("{field} must not be empty"))),
        1 => terms.pop().expect("one"),
        _ => join(terms),
    })
}

fn one(field: &str, attr: &str, spec: &Map<String, Value>) -> Result<Condition> {
    let path = vec![PathElem::Name(attr.to_string())];
    let value = spec
        .get("Value")
        .filter(|v| !v.is_null())
        .map(parse_value)
        .transpose()?;
    let exists = spec.get("Exists").and_then(Value::as_bool);
    let op = spec.get("ComparisonOperator").and_then(Value::as_str);
    let list = match spec.get("AttributeValueList") {
        Some(Value::Array(l)) => Some(l.iter().map(parse_value).collect::<Result<Vec<_>>>()?),
        _ => None,
    };
    let Some(op) = op else {
        if field != "Expected" {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value null at '{}.{attr}.member.comparisonOperator' failed to satisfy constraint: Member must not be null",
                lower_first(field)
            )));
        }
        return match (exists, value) {
            (Some(false), None) => Ok(Condition::NotExists(path)),
            (Some(false), Some(_)) => Err(invalid(format!(
                "Value cannot be used when Exists is false for Attribute: {attr}"
            ))),
            (_, Some(v)) => Ok(Condition::Compare(
                Operand::Path(path),
                CmpOp::Eq,
                Operand::Value(v),
            )),
            (_, None) => Err(invalid(format!(
                "Value must be provided when Exists is true for Attribute: {attr}"
            ))),
        };
    };
    if exists.is_some() {
        return Err(invalid(format!(
            "Exists and ComparisonOperator cannot be used together for Attribute: {attr}"
        )));
    }
    let args = match (list, value) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "Value and AttributeValueList cannot be used together for Attribute: {attr}"
            )))
        }
        (Some(l), None) => l,
        (None, Some(v)) => vec![v],
        (None, None) => Vec::new(),
    };
    const OPERATORS: [&str; 13] = [
        "EQ",
        "NE",
        "LT",
        "LE",
        "GT",
        "GE",
        "NOT_NULL",
        "NULL",
        "CONTAINS",
        "NOT_CONTAINS",
        "BEGINS_WITH",
        "IN",
        "BETWEEN",
    ];
    if !OPERATORS.contains(&op) {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{op}' at '{}.{attr}.member.comparisonOperator' failed to satisfy constraint: Member must satisfy enum value set: [IN, NULL, BETWEEN, LT, NOT_CONTAINS, EQ, GT, NOT_NULL, NE, LE, BEGINS_WITH, GE, CONTAINS]",
            lower_first(field)
        )));
    }
    let expected = match op {
        "NULL" | "NOT_NULL" => Some(0),
        "BETWEEN" => Some(2),
        "IN" => None,
        _ => Some(1),
    };
    let count_ok = match expected {
        Some(n) => args.len() == n,
        None => !args.is_empty(),
    };
    if !count_ok {
        return Err(invalid(format!(
            "Invalid number of argument(s) for the {op} ComparisonOperator"
        )));
    }
    let p = || Operand::Path(path.clone());
    let v = |i: usize| Operand::Value(args[i].clone());
    let cmp = |o: CmpOp| Condition::Compare(p(), o, v(0));
    Ok(match op {
        "EQ" => cmp(CmpOp::Eq),
        "NE" => Condition::Not(Box::new(cmp(CmpOp::Eq))),
        "LT" => cmp(CmpOp::Lt),
        "LE" => cmp(CmpOp::Le),
        "GT" => cmp(CmpOp::Gt),
        "GE" => cmp(CmpOp::Ge),
        "NOT_NULL" => Condition::Exists(path),
        "NULL" => Condition::NotExists(path),
        "CONTAINS" => Condition::Contains(p(), v(0)),
        "NOT_CONTAINS" => Condition::Not(Box::new(Condition::Contains(p(), v(0)))),
        "BEGINS_WITH" => Condition::BeginsWith(p(), v(0)),
        "IN" => Condition::In(p(), (0..args.len()).map(v).collect()),
        _ => Condition::Between(p(), v(0), v(1)),
    })
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::parse_item;
    use serde_json::json;

    fn eval(field: &str, conds: Value, op: Option<&str>, item: Value) -> Result<bool> {
        let c = legacy_condition(field, conds.as_object().unwrap(), op)?;
        Ok(c.evaluate(Some(&parse_item(&item).unwrap())))
    }

    #[test]
    fn expected_and_filters_mean_what_their_expressions_mean() {
        let item = json!({"a": {"N": "5"}, "s": {"S": "hello"}, "ss": {"SS": ["x"]}});
        assert!(eval(
            "Expected",
            json!({"a": {"Value": {"N": "5"}}}),
            None,
            item.clone()
        )
        .unwrap());
        assert!(eval(
            "Expected",
            json!({"z": {"Exists": false}}),
            None,
            item.clone()
        )
        .unwrap());
        assert!(!eval(
            "Expected",
            json!({"a": {"Exists": false}}),
            None,
            item.clone()
        )
        .unwrap());
        assert!(eval(
            "Expected",
            json!({"a": {"ComparisonOperator": "GT", "AttributeValueList": [{"N": "4"}]}}),
            None,
            item.clone()
        )
        .unwrap());
        assert!(eval("ScanFilter", json!({"a": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "1"}, {"N": "5"}]}}), None, item.clone()).unwrap());
        assert!(eval("ScanFilter", json!({"s": {"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [{"S": "he"}]}}), None, item.clone()).unwrap());
        assert!(eval(
            "ScanFilter",
            json!({"ss": {"ComparisonOperator": "CONTAINS", "AttributeValueList": [{"S": "x"}]}}),
            None,
            item.clone()
        )
        .unwrap());
        assert!(eval(
            "ScanFilter",
            json!({"z": {"ComparisonOperator": "NULL"}}),
            None,
            item.clone()
        )
        .unwrap());
        assert!(eval("ScanFilter", json!({"a": {"ComparisonOperator": "IN", "AttributeValueList": [{"N": "1"}, {"N": "5"}]}}), None, item.clone()).unwrap());
        // AND by default, OR when asked.
        let two = json!({"a": {"ComparisonOperator": "EQ", "AttributeValueList": [{"N": "5"}]}, "s": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "no"}]}});
        assert!(!eval("QueryFilter", two.clone(), None, item.clone()).unwrap());
        assert!(eval("QueryFilter", two, Some("OR"), item.clone()).unwrap());
        // Errors.
        let e = eval(
            "Expected",
            json!({"a": {"Exists": true}}),
            None,
            item.clone(),
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("Value must be provided when Exists is true"),
            "{}",
            e.message
        );
        let e = eval(
            "ScanFilter",
            json!({"a": {"ComparisonOperator": "EQ", "AttributeValueList": []}}),
            None,
            item.clone(),
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("Invalid number of argument(s) for the EQ ComparisonOperator"),
            "{}",
            e.message
        );
        let e = eval(
            "ScanFilter",
            json!({"a": {"ComparisonOperator": "LIKE", "AttributeValueList": []}}),
            None,
            item,
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("at 'scanFilter.a.member.comparisonOperator'"),
            "{}",
            e.message
        );
    }
}
