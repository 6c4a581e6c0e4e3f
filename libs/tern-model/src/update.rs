//! Update expressions as DynamoDB defines them: `SET` (with `+`, `-`, `if_not_exists` and
//! `list_append`), `REMOVE` (attributes and list elements), `ADD` (numbers and sets) and `DELETE`
//! (set elements), each section at most once, no two paths overlapping or conflicting.
//!
//! The router parses an expression (substituting names and values) into an [`Update`], which
//! travels in the replication log as JSON; every replica applies it to the item as it stands at
//! that point of the log ([`Update::apply`]), so all reach the same result.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Result};
use crate::expr::{
    check_paths, check_unused, condition_parts, operand_value, resolve, Condition, Operand, Parser,
    PathElem, Tok,
};
use crate::value::{AttributeValue, Item};

/// The right-hand side of a SET action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetValue {
    Operand(Operand),
    IfNotExists(Vec<PathElem>, Box<SetValue>),
    ListAppend(Box<SetValue>, Box<SetValue>),
    Plus(Box<SetValue>, Box<SetValue>),
    Minus(Box<SetValue>, Box<SetValue>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Set(Vec<PathElem>, SetValue),
    Remove(Vec<PathElem>),
    Add(Vec<PathElem>, AttributeValue),
    Delete(Vec<PathElem>, AttributeValue),
}

impl Action {
    pub fn path(&self) -> &[PathElem] {
        match self {
            Action::Set(p, _) | Action::Remove(p) | Action::Add(p, _) | Action::Delete(p, _) => p,
        }
    }
}

/// A parsed update: its actions in the order they are applied (SET, REMOVE, ADD, DELETE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Update {
    pub actions: Vec<Action>,
}

const KIND: &str = "UpdateExpression";

/// Parses an UpdateExpression and an optional ConditionExpression of the same request: they share
/// ExpressionAttributeNames and ExpressionAttributeValues, and a name or value neither uses is an
/// error.
pub fn parse_update(
    update: Option<&str>,
    condition: Option<&str>,
    names: Option<&HashMap<String, String>>,
    values: Option<&HashMap<String, AttributeValue>>,
) -> Result<(Option<Update>, Option<Condition>)> {
    let mut used_names = BTreeSet::new();
    let mut used_values = BTreeSet::new();
    let parsed_update = match update {
        Some(text) => {
            let mut p = Parser::new(KIND, text, names, values)?;
            let u = p.update()?;
            used_names.extend(std::mem::take(&mut p.used_names));
            used_values.extend(std::mem::take(&mut p.used_values));
            Some(u)
        }
        None => None,
    };
    let parsed_condition = match condition {
        Some(text) => {
            let (c, n, v) = condition_parts("ConditionExpression", text, names, values)?;
            used_names.extend(n);
            used_values.extend(v);
            Some(c)
        }
        None => None,
    };
    check_unused(names, values, &used_names, &used_values)?;
    Ok((parsed_update, parsed_condition))
}

fn syntax(msg: impl std::fmt::Display) -> ApiError {
    ApiError::validation(format!("Invalid {KIND}: {msg}"))
}

impl Parser<'_> {
    fn update(&mut self) -> Result<Update> {
        if self.src.trim().is_empty() {
            return Err(syntax("The expression can not be empty;"));
        }
        let mut seen: BTreeSet<&'static str> = BTreeSet::new();
        let (mut sets, mut removes, mut adds, mut deletes) = (vec![], vec![], vec![], vec![]);
        while self.peek() != &Tok::Eof {
            let section = ["SET", "REMOVE", "ADD", "DELETE"]
                .into_iter()
                .find(|k| self.keyword(k))
                .ok_or_else(|| self.error())?;
            if !seen.insert(section) {
                return Err(syntax(format!(
                    "The \"{section}\" section can only be used once in an update expression;"
                )));
            }
            self.next();
            loop {
                match section {
                    "SET" => {
                        let path = self.path()?;
                        self.expect(Tok::Op(crate::expr::CmpOp::Eq))?;
                        self.operator()?;
                        let value = self.set_value()?;
                        sets.push(Action::Set(path, value));
                    }
                    "REMOVE" => removes.push(Action::Remove(self.path()?)),
                    _ => {
                        let path = self.path()?;
                        self.operator()?;
                        let value = match self.operand()? {
                            Operand::Value(v) => v,
                            _ => return Err(self.error()),
                        };
                        let fits = match section {
                            "ADD" => matches!(
                                value,
                                AttributeValue::N(_)
                                    | AttributeValue::SS(_)
                                    | AttributeValue::NS(_)
                                    | AttributeValue::BS(_)
                            ),
                            _ => matches!(
                                value,
                                AttributeValue::SS(_)
                                    | AttributeValue::NS(_)
                                    | AttributeValue::BS(_)
                            ),
                        };
                        if !fits {
                            return Err(syntax(format!(
                                "Incorrect operand type for operator or function; operator: \
                                 {section}, operand type: {}",
                                type_word(&value)
                            )));
                        }
                        if section == "ADD" {
                            adds.push(Action::Add(path, value));
                        } else {
                            deletes.push(Action::Delete(path, value));
                        }
                    }
                }
                if self.peek() != &Tok::Comma {
                    break;
                }
                self.next();
            }
        }
        let mut actions = sets;
        actions.extend(removes);
        actions.extend(adds);
        actions.extend(deletes);
        let paths: Vec<Vec<PathElem>> = actions.iter().map(|a| a.path().to_vec()).collect();
        check_paths(KIND, &paths)?;
        let update = Update { actions };
        if update.encoded_depth() > crate::expr::MAX_ENCODED_DEPTH {
            return Err(syntax(
                "The expression is nested too deeply for its values; nest fewer functions or \
                 values",
            ));
        }
        Ok(update)
    }

    /// `operand [(+|-) operand]`.
    fn set_value(&mut self) -> Result<SetValue> {
        let left = self.set_operand()?;
        let op = match self.peek() {
            Tok::Plus => "+",
            Tok::Minus => "-",
            _ => return Ok(left),
        };
        self.next();
        self.operator()?;
        let right = self.set_operand()?;
        for side in [&left, &right] {
            if let SetValue::Operand(Operand::Value(v)) = side {
                if !matches!(v, AttributeValue::N(_)) {
                    return Err(syntax(format!(
                        "Incorrect operand type for operator or function; operator or function: \
                         {op}, operand type: {}",
                        type_word(v)
                    )));
                }
            }
        }
        Ok(if op == "+" {
            SetValue::Plus(Box::new(left), Box::new(right))
        } else {
            SetValue::Minus(Box::new(left), Box::new(right))
        })
    }

    /// A path, a value, or `if_not_exists(path, operand)` / `list_append(operand, operand)`.
    fn set_operand(&mut self) -> Result<SetValue> {
        let call = matches!(self.peek(), Tok::Ident(_))
            && self.toks.get(self.pos + 1).map(|t| &t.0) == Some(&Tok::LParen);
        if !call {
            return match self.operand()? {
                o @ (Operand::Path(_) | Operand::Value(_)) => Ok(SetValue::Operand(o)),
                Operand::Size(_) => Err(syntax("Invalid function name; function: size")),
            };
        }
        let Tok::Ident(name) = self.next() else {
            unreachable!("checked above")
        };
        if name != "if_not_exists" && name != "list_append" {
            return Err(syntax(format!("Invalid function name; function: {name}")));
        }
        self.operator()?;
        self.expect(Tok::LParen)?;
        if self.depth >= 32 {
            return Err(syntax("The expression is nested too deeply"));
        }
        self.depth += 1;
        let result = if name == "if_not_exists" {
            let path = match self.peek() {
                Tok::Value(_) => {
                    return Err(syntax(
                        "Operator or function requires a document path; operator or function: \
                         if_not_exists",
                    ))
                }
                _ => self.path()?,
            };
            self.expect(Tok::Comma)?;
            let fallback = self.set_operand()?;
            SetValue::IfNotExists(path, Box::new(fallback))
        } else {
            let a = self.set_operand()?;
            self.expect(Tok::Comma)?;
            let b = self.set_operand()?;
            for side in [&a, &b] {
                if let SetValue::Operand(Operand::Value(v)) = side {
                    if !matches!(v, AttributeValue::L(_)) {
                        return Err(syntax(format!(
                            "Incorrect operand type for operator or function; operator or \
                             function: list_append, operand type: {}",
                            type_word(v)
                        )));
                    }
                }
            }
            SetValue::ListAppend(Box::new(a), Box::new(b))
        };
        self.depth -= 1;
        self.expect(Tok::RParen)?;
        Ok(result)
    }
}

/// DynamoDB's word for a type in update-expression messages.
fn type_word(v: &AttributeValue) -> &'static str {
    match v {
        AttributeValue::S(_) => "STRING",
        AttributeValue::N(_) => "NUMBER",
        AttributeValue::B(_) => "BINARY",
        AttributeValue::Bool(_) => "BOOLEAN",
        AttributeValue::Null => "NULL",
        AttributeValue::M(_) => "MAP",
        AttributeValue::L(_) => "LIST",
        AttributeValue::SS(_) => "SS",
        AttributeValue::NS(_) => "NS",
        AttributeValue::BS(_) => "BS",
    }
}

fn wrong_type() -> ApiError {
    ApiError::validation("An operand in the update expression has an incorrect data type")
}

fn invalid_path() -> ApiError {
    ApiError::validation(
        "The document path provided in the update expression is invalid for update",
    )
}

impl Update {
    /// Applies the update to `item` (the stored item, or just its key when absent). All SET values
    /// are computed from the item as it was, as DynamoDB does; on error the item may be partly
    /// changed and must be discarded.
    pub fn apply(&self, item: &mut Item) -> Result<()> {
        let before = item.clone();
        let mut sets = Vec::new();
        for a in &self.actions {
            if let Action::Set(path, value) = a {
                sets.push((path, eval(&before, value)?));
            }
        }
        // Elements written past a list's end are appended in index order, as DynamoDB does.
        sets.sort_by(|a, b| cmp_paths(a.0, b.0));
        for (path, v) in sets {
            set_at(item, path, v)?;
        }
        // List elements go from the highest index down, so each index means what it did before.
        let mut removes: Vec<&Vec<PathElem>> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove(p) => Some(p),
                _ => None,
            })
            .collect();
        removes.sort_by(|a, b| cmp_paths(b, a));
        for p in removes {
            remove_at(item, p);
        }
        for a in &self.actions {
            match a {
                Action::Add(path, v) => {
                    let new = match resolve(item, path) {
                        None => v.clone(),
                        Some(old) => add(old, v)?,
                    };
                    set_at(item, path, new)?;
                }
                Action::Delete(path, v) => {
                    let Some(old) = resolve(item, path) else {
                        continue;
                    };
                    match subtract(old, v)? {
                        Some(rest) => set_at(item, path, rest)?,
                        None => remove_at(item, path),
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Nesting of the JSON the update travels in (the replication log's decoder allows 128).
    fn encoded_depth(&self) -> usize {
        fn operand(o: &Operand) -> usize {
            match o {
                Operand::Value(v) => 1 + crate::expr::value_depth(v),
                _ => 3,
            }
        }
        fn set_value(v: &SetValue) -> usize {
            match v {
                SetValue::Operand(o) => 1 + operand(o),
                SetValue::IfNotExists(_, f) => 2 + set_value(f).max(2),
                SetValue::ListAppend(a, b) | SetValue::Plus(a, b) | SetValue::Minus(a, b) => {
                    2 + set_value(a).max(set_value(b))
                }
            }
        }
        // {"actions":[{"Set":[path, value]}]}: four levels before the action's parts.
        4 + self
            .actions
            .iter()
            .map(|a| match a {
                Action::Set(_, v) => set_value(v).max(2),
                Action::Remove(_) => 2,
                Action::Add(_, v) | Action::Delete(_, v) => {
                    (1 + crate::expr::value_depth(v)).max(2)
                }
            })
            .max()
            .unwrap_or(0)
    }

    /// The document paths the update writes (for ReturnValues UPDATED_OLD and UPDATED_NEW).
    pub fn paths(&self) -> Vec<Vec<PathElem>> {
        self.actions.iter().map(|a| a.path().to_vec()).collect()
    }
}

fn cmp_paths(a: &[PathElem], b: &[PathElem]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (PathElem::Name(p), PathElem::Name(q)) => p.cmp(q),
            (PathElem::Index(p), PathElem::Index(q)) => p.cmp(q),
            (PathElem::Name(_), PathElem::Index(_)) => std::cmp::Ordering::Less,
            (PathElem::Index(_), PathElem::Name(_)) => std::cmp::Ordering::Greater,
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

fn eval(item: &Item, v: &SetValue) -> Result<AttributeValue> {
    match v {
        SetValue::Operand(o) => operand_value(item, o).ok_or_else(|| {
            ApiError::validation(
                "The provided expression refers to an attribute that does not exist in the item",
            )
        }),
        SetValue::IfNotExists(path, fallback) => match resolve(item, path) {
            Some(v) => Ok(v.clone()),
            None => eval(item, fallback),
        },
        SetValue::ListAppend(a, b) => match (eval(item, a)?, eval(item, b)?) {
            (AttributeValue::L(mut x), AttributeValue::L(y)) => {
                x.extend(y);
                Ok(AttributeValue::L(x))
            }
            _ => Err(wrong_type()),
        },
        SetValue::Plus(a, b) | SetValue::Minus(a, b) => match (eval(item, a)?, eval(item, b)?) {
            (AttributeValue::N(x), AttributeValue::N(y)) => {
                Ok(AttributeValue::N(if matches!(v, SetValue::Plus(..)) {
                    x.add(&y)?
                } else {
                    x.sub(&y)?
                }))
            }
            _ => Err(wrong_type()),
        },
    }
}

fn add(old: &AttributeValue, v: &AttributeValue) -> Result<AttributeValue> {
    use AttributeValue as V;
    fn union<T: PartialEq + Clone>(a: &[T], b: &[T]) -> Vec<T> {
        let mut out = a.to_vec();
        for x in b {
            if !out.contains(x) {
                out.push(x.clone());
            }
        }
        out
    }
    Ok(match (old, v) {
        (V::N(a), V::N(b)) => V::N(a.add(b)?),
        (V::SS(a), V::SS(b)) => V::SS(union(a, b)),
        (V::NS(a), V::NS(b)) => V::NS(union(a, b)),
        (V::BS(a), V::BS(b)) => V::BS(union(a, b)),
        _ => return Err(wrong_type()),
    })
}

/// The set `old` without the elements of `v`; `None` when nothing is left.
fn subtract(old: &AttributeValue, v: &AttributeValue) -> Result<Option<AttributeValue>> {
    use AttributeValue as V;
    fn minus<T: PartialEq + Clone>(a: &[T], b: &[T]) -> Vec<T> {
        a.iter().filter(|x| !b.contains(x)).cloned().collect()
    }
    let rest = match (old, v) {
        (V::SS(a), V::SS(b)) => V::SS(minus(a, b)),
        (V::NS(a), V::NS(b)) => V::NS(minus(a, b)),
        (V::BS(a), V::BS(b)) => V::BS(minus(a, b)),
        _ => return Err(wrong_type()),
    };
    let empty = match &rest {
        V::SS(s) => s.is_empty(),
        V::NS(s) => s.is_empty(),
        V::BS(s) => s.is_empty(),
        _ => false,
    };
    Ok((!empty).then_some(rest))
}

/// The value at `path`'s parent, to change one of its children.
fn parent_mut<'a>(item: &'a mut Item, path: &[PathElem]) -> Result<&'a mut AttributeValue> {
    let (PathElem::Name(first), rest) = path.split_first().ok_or_else(invalid_path)? else {
        return Err(invalid_path());
    };
    let mut cur = item.get_mut(first).ok_or_else(invalid_path)?;
    for step in &rest[..rest.len() - 1] {
        cur = match (step, cur) {
            (PathElem::Name(n), AttributeValue::M(m)) => m.get_mut(n).ok_or_else(invalid_path)?,
            (PathElem::Index(i), AttributeValue::L(l)) => l.get_mut(*i).ok_or_else(invalid_path)?,
            _ => return Err(invalid_path()),
        };
    }
    Ok(cur)
}

fn set_at(item: &mut Item, path: &[PathElem], v: AttributeValue) -> Result<()> {
    if let [PathElem::Name(n)] = path {
        item.insert(n.clone(), v);
        return Ok(());
    }
    let parent = parent_mut(item, path)?;
    match (path.last().expect("paths are never empty"), parent) {
        (PathElem::Name(n), AttributeValue::M(m)) => {
            m.insert(n.clone(), v);
        }
        (PathElem::Index(i), AttributeValue::L(l)) => {
            if *i < l.len() {
                l[*i] = v;
            } else {
                l.push(v);
            }
        }
        _ => return Err(invalid_path()),
    }
    Ok(())
}

fn remove_at(item: &mut Item, path: &[PathElem]) {
    if let [PathElem::Name(n)] = path {
        item.remove(n);
        return;
    }
    let Ok(parent) = parent_mut(item, path) else {
        return;
    };
    match (path.last().expect("paths are never empty"), parent) {
        (PathElem::Name(n), AttributeValue::M(m)) => {
            m.remove(n);
        }
        (PathElem::Index(i), AttributeValue::L(l)) if *i < l.len() => {
            l.remove(*i);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::parse_item;
    use serde_json::json;

    fn item() -> Item {
        parse_item(&json!({
            "pk": {"S": "k"},
            "n": {"N": "5"},
            "l": {"L": [{"S": "a"}, {"S": "b"}, {"S": "c"}]},
            "m": {"M": {"x": {"N": "1"}}},
            "ss": {"SS": ["p", "q"]}
        }))
        .unwrap()
    }

    fn run(expr: &str, values: serde_json::Value) -> Result<Item> {
        let values: HashMap<String, AttributeValue> = values
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), crate::value::parse_value(v).unwrap()))
            .collect();
        let values = (!values.is_empty()).then_some(&values);
        let (u, _) = parse_update(Some(expr), None, None, values)?;
        let u = u.unwrap();
        let json = serde_json::to_vec(&u).unwrap();
        let u: Update = serde_json::from_slice(&json).expect("updates cross the log");
        let mut it = item();
        u.apply(&mut it)?;
        Ok(it)
    }

    fn get(it: &Item, attr: &str) -> serde_json::Value {
        serde_json::from_slice(&crate::value::value_to_json(&it[attr])).unwrap()
    }

    #[test]
    fn set_with_arithmetic_and_functions() {
        let it = run(
            "SET n = n + :one, a = :s, m.y = :one",
            json!({":one": {"N": "1"}, ":s": {"S": "v"}}),
        )
        .unwrap();
        assert_eq!(get(&it, "n"), json!({"N": "6"}));
        assert_eq!(get(&it, "a"), json!({"S": "v"}));
        assert_eq!(
            get(&it, "m"),
            json!({"M": {"x": {"N": "1"}, "y": {"N": "1"}}})
        );
        let it = run(
            "SET c = if_not_exists(c, :z) - :one, n = if_not_exists(n, :z)",
            json!({":z": {"N": "0"}, ":one": {"N": "1"}}),
        )
        .unwrap();
        assert_eq!(get(&it, "c"), json!({"N": "-1"}));
        assert_eq!(get(&it, "n"), json!({"N": "5"}));
        let it = run(
            "SET l = list_append(l, :more), l2 = list_append(:more, if_not_exists(l2, :empty))",
            json!({":more": {"L": [{"S": "d"}]}, ":empty": {"L": []}}),
        )
        .unwrap();
        assert_eq!(
            get(&it, "l"),
            json!({"L": [{"S": "a"}, {"S": "b"}, {"S": "c"}, {"S": "d"}]})
        );
        assert_eq!(get(&it, "l2"), json!({"L": [{"S": "d"}]}));
        // SET into a list past its end appends; into a missing parent fails.
        let it = run("SET l[10] = :s", json!({":s": {"S": "z"}})).unwrap();
        assert_eq!(get(&it, "l")["L"].as_array().unwrap().len(), 4);
        let e = run("SET nope.x = :s", json!({":s": {"S": "z"}})).unwrap_err();
        assert_eq!(
            e.message,
            "The document path provided in the update expression is invalid for update"
        );
        // Values are computed from the item as it was.
        let it = run("SET a = n, n = :one", json!({":one": {"N": "1"}})).unwrap();
        assert_eq!(get(&it, "a"), json!({"N": "5"}));
        let e = run("SET a = absent", json!({})).unwrap_err();
        assert!(
            e.message.contains("does not exist in the item"),
            "{}",
            e.message
        );
        let e = run("SET a = pk + :one", json!({":one": {"N": "1"}})).unwrap_err();
        assert_eq!(
            e.message,
            "An operand in the update expression has an incorrect data type"
        );
    }

    #[test]
    fn remove_add_delete() {
        let it = run("REMOVE l[0], l[2], m.x, nope", json!({})).unwrap();
        assert_eq!(
            get(&it, "l"),
            json!({"L": [{"S": "b"}]}),
            "indexes as they were"
        );
        assert_eq!(get(&it, "m"), json!({"M": {}}));
        let it = run(
            "ADD n :two, ss :more, fresh :two",
            json!({":two": {"N": "2"}, ":more": {"SS": ["q", "r"]}}),
        )
        .unwrap();
        assert_eq!(get(&it, "n"), json!({"N": "7"}));
        assert_eq!(get(&it, "ss"), json!({"SS": ["p", "q", "r"]}));
        assert_eq!(get(&it, "fresh"), json!({"N": "2"}));
        let it = run("DELETE ss :p", json!({":p": {"SS": ["p"]}})).unwrap();
        assert_eq!(get(&it, "ss"), json!({"SS": ["q"]}));
        let it = run("DELETE ss :pq", json!({":pq": {"SS": ["p", "q"]}})).unwrap();
        assert!(!it.contains_key("ss"), "an emptied set is removed");
        let e = run("ADD pk :two", json!({":two": {"N": "2"}})).unwrap_err();
        assert_eq!(
            e.message,
            "An operand in the update expression has an incorrect data type"
        );
    }

    #[test]
    fn expressions_are_checked_as_dynamodb_checks_them() {
        let msg = |e: &str, v: serde_json::Value| run(e, v).unwrap_err().message;
        assert_eq!(
            msg("SET a = :v SET b = :v", json!({":v": {"S": "x"}})),
            "Invalid UpdateExpression: The \"SET\" section can only be used once in an update expression;"
        );
        assert!(msg("SET a = :v, a.b = :v", json!({":v": {"S": "x"}}))
            .contains("Two document paths overlap"));
        assert!(msg("SET a.b = :v REMOVE a[0]", json!({":v": {"S": "x"}}))
            .contains("Two document paths conflict"));
        assert!(msg("ADD a :v", json!({":v": {"S": "x"}}))
            .contains("operator: ADD, operand type: STRING"));
        assert!(msg("DELETE a :v", json!({":v": {"N": "1"}}))
            .contains("operator: DELETE, operand type: NUMBER"));
        assert!(
            msg("SET a = :v + :v", json!({":v": {"S": "x"}})).contains("operator or function: +")
        );
        assert!(
            msg("SET a = if_not_exists(:v, :v)", json!({":v": {"S": "x"}}))
                .contains("requires a document path")
        );
        assert!(msg("SET a = nope(b)", json!({})).contains("Invalid function name; function: nope"));
        assert!(
            msg("SET a = :v", json!({":v": {"S": "x"}, ":w": {"S": "y"}}))
                .contains("unused in expressions")
        );
        assert!(msg("", json!({})).contains("can not be empty"));
        assert!(msg("SET", json!({})).starts_with("Invalid UpdateExpression: Syntax error"));
    }

    #[test]
    fn updates_the_log_could_not_decode_are_refused() {
        // 30 nested functions around a list nested 30 levels deep: within each limit, too deep
        // together for the log's decoder.
        let mut deep = json!({"S": "x"});
        for _ in 0..30 {
            deep = json!({"L": [deep]});
        }
        let expr = format!(
            "SET a = {}:v{}",
            "list_append(:v, ".repeat(30),
            ")".repeat(30)
        );
        let e = run(&expr, json!({":v": deep})).unwrap_err();
        assert!(e.message.contains("nested too deeply"), "{}", e.message);
        // What is accepted decodes (run() round-trips every update through JSON).
        let expr = format!(
            "SET a = {}:v{}",
            "list_append(:v, ".repeat(5),
            ")".repeat(5)
        );
        assert!(run(&expr, json!({":v": {"L": [{"S": "x"}]}})).is_ok());
    }

    #[test]
    fn one_request_shares_its_substitutions_between_update_and_condition() {
        let values: HashMap<String, AttributeValue> = [
            (":v".to_string(), AttributeValue::S("x".into())),
            (":c".to_string(), AttributeValue::S("k".into())),
        ]
        .into();
        let (u, c) =
            parse_update(Some("SET a = :v"), Some("pk = :c"), None, Some(&values)).unwrap();
        assert!(u.is_some() && c.is_some());
        let e = parse_update(Some("SET a = :v"), None, None, Some(&values)).unwrap_err();
        assert!(e.message.contains("keys: {:c}"), "{}", e.message);
    }
}
