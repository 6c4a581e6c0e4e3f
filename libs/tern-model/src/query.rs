//! Query and Scan: key conditions (KeyConditionExpression or the legacy KeyConditions) checked as
//! DynamoDB checks them, and turned into a range of storage keys; the expressions of one request
//! parsed together (they share the substitution maps).

use std::collections::{BTreeSet, HashMap};

use crate::error::{ApiError, Result};
use crate::expr::{check_unused, condition_parts, projection_parts, CmpOp, Condition, Operand};
use crate::key::{escape_into, escape_prefix, KeySchema, PrimaryKey, ScalarType};
use crate::value::AttributeValue;
use crate::PathElem;

/// The sort-key part of a key condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortCondition {
    Cmp(CmpOp, AttributeValue),
    Between(AttributeValue, AttributeValue),
    BeginsWith(AttributeValue),
}

/// A Query's key condition: the partition key's value and what the sort key must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCondition {
    pub hash: AttributeValue,
    pub sort: Option<SortCondition>,
}

/// A range of storage keys (`PrimaryKey::storage_key` form): `start` and `end` with whether each
/// is included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub start_inclusive: bool,
    pub end: Vec<u8>,
    pub end_inclusive: bool,
}

/// Every expression of a Query or Scan, parsed.
#[derive(Debug, Default)]
pub struct ReadExpressions {
    pub key: Option<KeyCondition>,
    pub filter: Option<Condition>,
    pub projection: Option<Vec<Vec<PathElem>>>,
}

fn unsupported() -> ApiError {
    ApiError::validation("Query key condition not supported")
}

/// Parses the expressions of one Query (`key` given) or Scan; a name or value none of them uses
/// is an error.
pub fn parse_read_expressions(
    schema: &KeySchema,
    key: Option<&str>,
    filter: Option<&str>,
    projection: Option<&str>,
    names: Option<&HashMap<String, String>>,
    values: Option<&HashMap<String, AttributeValue>>,
) -> Result<ReadExpressions> {
    let mut used_names = BTreeSet::new();
    let mut used_values = BTreeSet::new();
    let mut out = ReadExpressions::default();
    if let Some(text) = key {
        let (c, n, v) = condition_parts("KeyConditionExpression", text, names, values)?;
        used_names.extend(n);
        used_values.extend(v);
        out.key = Some(key_condition(schema, &c)?);
    }
    if let Some(text) = filter {
        let (c, n, v) = condition_parts("FilterExpression", text, names, values)?;
        used_names.extend(n);
        used_values.extend(v);
        if key.is_some() {
            let keys = [Some(&schema.hash.0), schema.range.as_ref().map(|r| &r.0)];
            if let Some(k) = first_key_attribute(&c, &keys) {
                return Err(ApiError::validation(format!(
                    "Filter Expression can only contain non-primary key attributes: Primary key attribute: {k}"
                )));
            }
        }
        out.filter = Some(c);
    }
    if let Some(text) = projection {
        let (p, n) = projection_parts(text, names)?;
        used_names.extend(n);
        out.projection = Some(p);
    }
    check_unused(names, values, &used_names, &used_values)?;
    Ok(out)
}

/// A key attribute a condition refers to at the top level, if any.
fn first_key_attribute(c: &Condition, keys: &[Option<&String>]) -> Option<String> {
    let top = |p: &[PathElem]| match p.first() {
        Some(PathElem::Name(n)) if keys.contains(&Some(n)) => Some(n.clone()),
        _ => None,
    };
    let operand = |o: &Operand| match o {
        Operand::Path(p) | Operand::Size(p) => top(p),
        Operand::Value(_) => None,
    };
    match c {
        Condition::Exists(p) | Condition::NotExists(p) | Condition::AttributeType(p, _) => top(p),
        Condition::Compare(a, _, b) | Condition::BeginsWith(a, b) | Condition::Contains(a, b) => {
            operand(a).or_else(|| operand(b))
        }
        Condition::Between(a, b, c) => operand(a).or_else(|| operand(b)).or_else(|| operand(c)),
        Condition::In(x, list) => operand(x).or_else(|| list.iter().find_map(operand)),
        Condition::Not(inner) => first_key_attribute(inner, keys),
        Condition::And(terms) | Condition::Or(terms) => {
            terms.iter().find_map(|t| first_key_attribute(t, keys))
        }
    }
}

/// The key condition a KeyConditionExpression states: `pk = :v`, optionally `AND` one condition
/// on the sort key (`=`, `<`, `<=`, `>`, `>=`, `BETWEEN`, `begins_with`).
fn key_condition(schema: &KeySchema, c: &Condition) -> Result<KeyCondition> {
    let terms: Vec<&Condition> = match c {
        Condition::And(t) => t.iter().collect(),
        other => vec![other],
    };
    if terms.len() > 2 {
        return Err(ApiError::validation(
            "Conditions can be of length 1 or 2 only",
        ));
    }
    let mut hash = None;
    let mut sort = None;
    for t in terms {
        let (attr, cond) = key_term(t)?;
        if attr == schema.hash.0 {
            match cond {
                SortCondition::Cmp(CmpOp::Eq, v) if hash.is_none() => {
                    check_type(schema.hash.1, &v)?;
                    hash = Some(v);
                }
                _ => return Err(unsupported()),
            }
        } else if schema.range.as_ref().is_some_and(|r| r.0 == attr) && sort.is_none() {
            let ty = schema.range.as_ref().expect("checked").1;
            match &cond {
                SortCondition::Cmp(_, v) | SortCondition::BeginsWith(v) => check_type(ty, v)?,
                SortCondition::Between(a, b) => {
                    check_type(ty, a)?;
                    check_type(ty, b)?;
                }
            }
            if matches!(cond, SortCondition::BeginsWith(_)) && ty == ScalarType::N {
                return Err(ApiError::validation(
                    "Invalid KeyConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
                ));
            }
            sort = Some(cond);
        } else {
            return Err(unsupported());
        }
    }
    let hash = hash.ok_or_else(|| {
        ApiError::validation(format!(
            "Query condition missed key schema element: {}",
            schema.hash.0
        ))
    })?;
    Ok(KeyCondition { hash, sort })
}

/// One term of a key condition: the top-level attribute it is about and the condition on it.
fn key_term(t: &Condition) -> Result<(String, SortCondition)> {
    let attr = |o: &Operand| match o {
        Operand::Path(p) => match p.as_slice() {
            [PathElem::Name(n)] => Some(n.clone()),
            _ => None,
        },
        _ => None,
    };
    let value = |o: &Operand| match o {
        Operand::Value(v) => Some(v.clone()),
        _ => None,
    };
    let invalid = |op: &str| {
        ApiError::validation(format!(
            "Invalid operator used in KeyConditionExpression: {op}"
        ))
    };
    match t {
        Condition::Compare(a, op, b) => {
            if let (Some(n), Some(v)) = (attr(a), value(b)) {
                if *op == CmpOp::Ne {
                    return Err(invalid("<>"));
                }
                return Ok((n, SortCondition::Cmp(*op, v)));
            }
            if let (Some(v), Some(n)) = (value(a), attr(b)) {
                let flipped = match op {
                    CmpOp::Lt => CmpOp::Gt,
                    CmpOp::Le => CmpOp::Ge,
                    CmpOp::Gt => CmpOp::Lt,
                    CmpOp::Ge => CmpOp::Le,
                    CmpOp::Eq => CmpOp::Eq,
                    CmpOp::Ne => return Err(invalid("<>")),
                };
                return Ok((n, SortCondition::Cmp(flipped, v)));
            }
            Err(unsupported())
        }
        Condition::Between(x, lo, hi) => match (attr(x), value(lo), value(hi)) {
            (Some(n), Some(a), Some(b)) => Ok((n, SortCondition::Between(a, b))),
            _ => Err(unsupported()),
        },
        Condition::BeginsWith(x, p) => match (attr(x), value(p)) {
            (Some(n), Some(v)) => Ok((n, SortCondition::BeginsWith(v))),
            _ => Err(unsupported()),
        },
        Condition::Or(_) => Err(invalid("OR")),
        Condition::Not(_) => Err(invalid("NOT")),
        Condition::And(_) => Err(invalid("AND")),
        Condition::In(..) => Err(invalid("IN")),
        Condition::Exists(_) => Err(invalid("attribute_exists")),
        Condition::NotExists(_) => Err(invalid("attribute_not_exists")),
        Condition::AttributeType(..) => Err(invalid("attribute_type")),
        Condition::Contains(..) => Err(invalid("contains")),
    }
}

fn check_type(expected: ScalarType, v: &AttributeValue) -> Result<()> {
    let ok = matches!(
        (expected, v),
        (ScalarType::S, AttributeValue::S(_))
            | (ScalarType::N, AttributeValue::N(_))
            | (ScalarType::B, AttributeValue::B(_))
    );
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "One or more parameter values were invalid: Condition parameter type does not match schema type",
        ))
    }
}

/// The legacy KeyConditions of a Query (`{"pk": {"ComparisonOperator": "EQ",
/// "AttributeValueList": [...]}}`) as a key condition.
pub fn legacy_key_condition(
    schema: &KeySchema,
    conditions: &[(String, String, Vec<AttributeValue>)],
) -> Result<KeyCondition> {
    let mut terms = Vec::new();
    for (attr, op, args) in conditions {
        let path = Operand::Path(vec![PathElem::Name(attr.clone())]);
        let arg = |i: usize| -> Result<Operand> {
            args.get(i).cloned().map(Operand::Value).ok_or_else(|| {
                ApiError::validation(format!(
                    "One or more parameter values were invalid: Invalid number of argument(s) for the {op} ComparisonOperator"
                ))
            })
        };
        let expected = match op.as_str() {
            "BETWEEN" => 2,
            _ => 1,
        };
        if args.len() != expected {
            return Err(ApiError::validation(format!(
                "One or more parameter values were invalid: Invalid number of argument(s) for the {op} ComparisonOperator"
            )));
        }
        let cmp =
            |o: CmpOp| -> Result<Condition> { Ok(Condition::Compare(path.clone(), o, arg(0)?)) };
        terms.push(match op.as_str() {
            "EQ" => cmp(CmpOp::Eq)?,
            "LT" => cmp(CmpOp::Lt)?,
            "LE" => cmp(CmpOp::Le)?,
            "GT" => cmp(CmpOp::Gt)?,
            "GE" => cmp(CmpOp::Ge)?,
            "BETWEEN" => {
                if crate::expr::order(&args[0], &args[1]) == Some(std::cmp::Ordering::Greater) {
                    return Err(ApiError::validation(
                        "Invalid KeyConditions: The BETWEEN operator requires upper bound to be greater than or equal to lower bound",
                    ));
                }
                Condition::Between(path.clone(), arg(0)?, arg(1)?)
            }
            "BEGINS_WITH" => Condition::BeginsWith(path.clone(), arg(0)?),
            other => {
                return Err(ApiError::validation(format!(
                    "Attempted conditional constraint is not an indexable operation: {other}"
                )))
            }
        });
    }
    let c = if terms.len() == 1 {
        terms.pop().expect("one")
    } else {
        Condition::And(terms)
    };
    key_condition(schema, &c)
}

/// Bytes just above every byte string that starts with `p`.
fn successor(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    while v.last() == Some(&0xFF) {
        v.pop();
    }
    if let Some(last) = v.last_mut() {
        *last += 1;
    }
    v
}

impl KeyCondition {
    /// The storage keys of the items that meet the condition.
    pub fn range(&self) -> KeyRange {
        let base = PrimaryKey {
            hash: self.hash.clone(),
            range: None,
        }
        .storage_key();
        let with = |v: &AttributeValue| {
            let mut k = base.clone();
            match v {
                AttributeValue::N(n) => k.extend_from_slice(&n.order_key()),
                AttributeValue::S(s) => escape_into(&mut k, s.as_bytes()),
                AttributeValue::B(b) => escape_into(&mut k, b),
                _ => {}
            }
            k
        };
        let all_end = successor(&base);
        let r = |start, start_inclusive, end, end_inclusive| KeyRange {
            start,
            start_inclusive,
            end,
            end_inclusive,
        };
        match &self.sort {
            None => r(base.clone(), true, all_end, false),
            Some(SortCondition::Cmp(op, v)) => match op {
                CmpOp::Eq => r(with(v), true, with(v), true),
                CmpOp::Lt => r(base.clone(), true, with(v), false),
                CmpOp::Le => r(base.clone(), true, with(v), true),
                CmpOp::Gt => r(with(v), false, all_end, false),
                CmpOp::Ge => r(with(v), true, all_end, false),
                CmpOp::Ne => r(base.clone(), true, all_end, false),
            },
            Some(SortCondition::Between(a, b)) => r(with(a), true, with(b), true),
            Some(SortCondition::BeginsWith(v)) => {
                let mut p = base.clone();
                match v {
                    AttributeValue::S(s) => escape_prefix(&mut p, s.as_bytes()),
                    AttributeValue::B(b) => escape_prefix(&mut p, b),
                    _ => {}
                }
                let end = successor(&p);
                r(p, true, end, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::number::Number;

    fn schema(sk: ScalarType) -> KeySchema {
        KeySchema {
            hash: ("pk".into(), ScalarType::S),
            range: Some(("sk".into(), sk)),
        }
    }

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(Number::parse(v).unwrap())
    }

    fn key(pk: &str, sk: AttributeValue) -> Vec<u8> {
        PrimaryKey {
            hash: s(pk),
            range: Some(sk),
        }
        .storage_key()
    }

    fn parse(
        schema: &KeySchema,
        expr: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<KeyCondition> {
        let values: HashMap<String, AttributeValue> = values
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Ok(
            parse_read_expressions(schema, Some(expr), None, None, None, Some(&values))?
                .key
                .unwrap(),
        )
    }

    fn within(r: &KeyRange, k: &[u8]) -> bool {
        let lo = if r.start_inclusive {
            k >= r.start.as_slice()
        } else {
            k > r.start.as_slice()
        };
        let hi = if r.end_inclusive {
            k <= r.end.as_slice()
        } else {
            k < r.end.as_slice()
        };
        lo && hi
    }

    #[test]
    fn ranges_hold_exactly_the_matching_keys() {
        let sch = schema(ScalarType::N);
        let nums = ["-10", "-1", "0", "0.5", "1", "2", "10", "100"];
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, AttributeValue)>,
            Box<dyn Fn(f64) -> bool>,
        );
        let cases: Vec<Case> = vec![
            ("pk = :p", vec![], Box::new(|_| true)),
            (
                "pk = :p AND sk = :a",
                vec![(":a", n("1"))],
                Box::new(|x| x == 1.0),
            ),
            (
                "pk = :p AND sk < :a",
                vec![(":a", n("1"))],
                Box::new(|x| x < 1.0),
            ),
            (
                "pk = :p AND sk <= :a",
                vec![(":a", n("1"))],
                Box::new(|x| x <= 1.0),
            ),
            (
                "pk = :p AND sk > :a",
                vec![(":a", n("0.5"))],
                Box::new(|x| x > 0.5),
            ),
            (
                "pk = :p AND :a <= sk",
                vec![(":a", n("0"))],
                Box::new(|x| x >= 0.0),
            ),
            (
                "sk BETWEEN :a AND :b AND pk = :p",
                vec![(":a", n("-1")), (":b", n("2"))],
                Box::new(|x| (-1.0..=2.0).contains(&x)),
            ),
        ];
        for (expr, mut values, want) in cases {
            values.push((":p", s("a")));
            let r = parse(&sch, expr, &values).unwrap().range();
            for x in nums {
                let k = key("a", n(x));
                assert_eq!(within(&r, &k), want(x.parse().unwrap()), "{expr}: {x}");
                // Other partition keys are never in range.
                assert!(!within(&r, &key("b", n(x))), "{expr}: pk b {x}");
                assert!(!within(&r, &key("a\0", n(x))), "{expr}: pk a\\0 {x}");
            }
        }
    }

    #[test]
    fn begins_with_covers_exactly_its_prefix() {
        let sch = schema(ScalarType::S);
        let r = parse(
            &sch,
            "pk = :p AND begins_with(sk, :x)",
            &[(":p", s("a")), (":x", s("ab"))],
        )
        .unwrap()
        .range();
        for (sk, inside) in [
            ("ab", true),
            ("abc", true),
            ("ab\0", true),
            ("ab\u{ff}", true),
            ("a", false),
            ("ac", false),
            ("aa", false),
            ("b", false),
        ] {
            assert_eq!(within(&r, &key("a", s(sk))), inside, "{sk:?}");
        }
    }

    #[test]
    fn key_conditions_are_checked_as_dynamodb_checks_them() {
        let sch = schema(ScalarType::N);
        let msg = |e: &str, v: &[(&str, AttributeValue)]| parse(&sch, e, v).unwrap_err().message;
        let p = (":p", s("a"));
        assert_eq!(
            msg("sk = :a", &[(":a", n("1"))]),
            "Query condition missed key schema element: pk"
        );
        assert_eq!(
            msg("pk = :p OR sk = :a", &[p.clone(), (":a", n("1"))]),
            "Invalid operator used in KeyConditionExpression: OR"
        );
        assert_eq!(
            msg("pk < :p", std::slice::from_ref(&p)),
            "Query key condition not supported"
        );
        assert_eq!(
            msg("pk = :p AND extra = :a", &[p.clone(), (":a", n("1"))]),
            "Query key condition not supported"
        );
        assert!(msg("pk = :p AND sk = :a", &[p.clone(), (":a", s("x"))])
            .contains("Condition parameter type does not match schema type"));
        assert!(msg(
            "pk = :p AND begins_with(sk, :a)",
            &[p.clone(), (":a", n("1"))]
        )
        .contains("begins_with"));
        assert_eq!(
            msg(
                "pk = :p AND sk > :a AND sk < :a",
                &[p.clone(), (":a", n("1"))]
            ),
            "Conditions can be of length 1 or 2 only"
        );
        let e = parse_read_expressions(
            &sch,
            Some("pk = :p"),
            Some("sk > :p"),
            None,
            None,
            Some(&HashMap::from([(":p".to_string(), s("a"))])),
        )
        .unwrap_err();
        assert_eq!(e.message, "Filter Expression can only contain non-primary key attributes: Primary key attribute: sk");
    }
}
