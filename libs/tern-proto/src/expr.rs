//! Conditions and updates as the replication log carries them: protobuf, flat.
//!
//! A [`Condition`] or a SET value is a tree; here it is a list of nodes in postfix order (every
//! node after the nodes it takes), so decoding never recurses whatever the depth, and nesting is
//! bounded where it is rebuilt ([`MAX_DEPTH`]). Attribute values inside are their canonical
//! DynamoDB JSON, the form items are stored in (DynamoDB nests documents at most 32 levels).
//!
//! The variants' tags are the durable format: add new ones, never renumber (`tests/golden.rs`
//! pins the bytes).

use tern_model::{
    Action, AttributeValue, CmpOp, Condition, Operand as ModelOperand, PathElem, SetValue, Update,
};

/// Deepest tree a decoder rebuilds. The router's parser stops far below (300 operators, 32
/// nesting levels of values); a log entry beyond this was not written by a router.
pub const MAX_DEPTH: usize = 512;

/// One step of a document path: `name` or `[index]`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathStep {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Set: this step is a list index and `name` is empty.
    #[prost(uint64, optional, tag = "2")]
    pub index: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum OperandKind {
    Path = 0,
    Value = 1,
    /// `size(path)`.
    Size = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Operand {
    #[prost(enumeration = "OperandKind", tag = "1")]
    pub kind: i32,
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<PathStep>,
    /// DynamoDB JSON of the value (`Value` only).
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum CondOp {
    Exists = 0,
    NotExists = 1,
    /// `operands[0] cmp operands[1]`.
    Compare = 2,
    /// Takes one condition.
    Not = 3,
    /// Takes `arity` conditions.
    And = 4,
    Or = 5,
    /// `operands[0] BETWEEN operands[1] AND operands[2]`.
    Between = 6,
    /// `operands[0] IN (operands[1..])`.
    In = 7,
    /// `attribute_type(path, type_name)`.
    AttributeType = 8,
    BeginsWith = 9,
    Contains = 10,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum Cmp {
    Eq = 0,
    Ne = 1,
    Lt = 2,
    Le = 3,
    Gt = 4,
    Ge = 5,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CondNode {
    #[prost(enumeration = "CondOp", tag = "1")]
    pub op: i32,
    #[prost(enumeration = "Cmp", tag = "2")]
    pub cmp: i32,
    #[prost(message, repeated, tag = "3")]
    pub path: Vec<PathStep>,
    #[prost(message, repeated, tag = "4")]
    pub operands: Vec<Operand>,
    /// How many conditions an `And` or `Or` takes (two or more).
    #[prost(uint32, tag = "5")]
    pub arity: u32,
    #[prost(string, tag = "6")]
    pub type_name: String,
}

/// A condition: its nodes in postfix order; the last one is the root.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConditionProgram {
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<CondNode>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum SetOp {
    Operand = 0,
    /// `if_not_exists(path, value)`: takes one value.
    IfNotExists = 1,
    /// Takes two values.
    ListAppend = 2,
    Plus = 3,
    Minus = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetNode {
    #[prost(enumeration = "SetOp", tag = "1")]
    pub op: i32,
    #[prost(message, optional, tag = "2")]
    pub operand: Option<Operand>,
    /// `IfNotExists` only.
    #[prost(message, repeated, tag = "3")]
    pub path: Vec<PathStep>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum ActionKind {
    Set = 0,
    Remove = 1,
    Add = 2,
    Delete = 3,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateAction {
    #[prost(enumeration = "ActionKind", tag = "1")]
    pub kind: i32,
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<PathStep>,
    /// `Set`: the value's nodes in postfix order.
    #[prost(message, repeated, tag = "3")]
    pub set: Vec<SetNode>,
    /// `Add`, `Delete`: DynamoDB JSON of the value.
    #[prost(bytes = "vec", tag = "4")]
    pub value: Vec<u8>,
}

/// An update: its actions in the order they are applied.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateProgram {
    #[prost(message, repeated, tag = "1")]
    pub actions: Vec<UpdateAction>,
}

/// Why bytes from the log are not a condition or update this version can evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn path_to_wire(path: &[PathElem]) -> Vec<PathStep> {
    path.iter()
        .map(|e| match e {
            PathElem::Name(n) => PathStep {
                name: n.clone(),
                index: None,
            },
            PathElem::Index(i) => PathStep {
                name: String::new(),
                index: Some(*i as u64),
            },
        })
        .collect()
}

fn operand_to_wire(o: &ModelOperand) -> Operand {
    match o {
        ModelOperand::Path(p) => Operand {
            kind: OperandKind::Path as i32,
            path: path_to_wire(p),
            value: Vec::new(),
        },
        ModelOperand::Value(v) => Operand {
            kind: OperandKind::Value as i32,
            path: Vec::new(),
            value: tern_model::value_to_json(v),
        },
        ModelOperand::Size(p) => Operand {
            kind: OperandKind::Size as i32,
            path: path_to_wire(p),
            value: Vec::new(),
        },
    }
}

fn cmp_to_wire(op: CmpOp) -> Cmp {
    match op {
        CmpOp::Eq => Cmp::Eq,
        CmpOp::Ne => Cmp::Ne,
        CmpOp::Lt => Cmp::Lt,
        CmpOp::Le => Cmp::Le,
        CmpOp::Gt => Cmp::Gt,
        CmpOp::Ge => Cmp::Ge,
    }
}

fn node(op: CondOp) -> CondNode {
    CondNode {
        op: op as i32,
        ..Default::default()
    }
}

/// The condition as the log carries it.
pub fn encode_condition(c: &Condition) -> ConditionProgram {
    // Postfix by an explicit walk: children first, then the node (no recursion on depth).
    enum Visit<'a> {
        Enter(&'a Condition),
        Emit(&'a Condition),
    }
    let mut nodes = Vec::new();
    let mut todo = vec![Visit::Enter(c)];
    while let Some(v) = todo.pop() {
        match v {
            Visit::Enter(c) => {
                todo.push(Visit::Emit(c));
                match c {
                    Condition::Not(inner) => todo.push(Visit::Enter(inner)),
                    Condition::And(terms) | Condition::Or(terms) => {
                        todo.extend(terms.iter().rev().map(Visit::Enter))
                    }
                    _ => {}
                }
            }
            Visit::Emit(c) => nodes.push(match c {
                Condition::Exists(p) => CondNode {
                    path: path_to_wire(p),
                    ..node(CondOp::Exists)
                },
                Condition::NotExists(p) => CondNode {
                    path: path_to_wire(p),
                    ..node(CondOp::NotExists)
                },
                Condition::Compare(a, op, b) => CondNode {
                    cmp: cmp_to_wire(*op) as i32,
                    operands: vec![operand_to_wire(a), operand_to_wire(b)],
                    ..node(CondOp::Compare)
                },
                Condition::Not(_) => node(CondOp::Not),
                Condition::And(terms) => CondNode {
                    arity: terms.len() as u32,
                    ..node(CondOp::And)
                },
                Condition::Or(terms) => CondNode {
                    arity: terms.len() as u32,
                    ..node(CondOp::Or)
                },
                Condition::Between(x, lo, hi) => CondNode {
                    operands: [x, lo, hi].into_iter().map(operand_to_wire).collect(),
                    ..node(CondOp::Between)
                },
                Condition::In(x, list) => CondNode {
                    operands: std::iter::once(x)
                        .chain(list)
                        .map(operand_to_wire)
                        .collect(),
                    ..node(CondOp::In)
                },
                Condition::AttributeType(p, t) => CondNode {
                    path: path_to_wire(p),
                    type_name: t.clone(),
                    ..node(CondOp::AttributeType)
                },
                Condition::BeginsWith(a, b) => CondNode {
                    operands: vec![operand_to_wire(a), operand_to_wire(b)],
                    ..node(CondOp::BeginsWith)
                },
                Condition::Contains(a, b) => CondNode {
                    operands: vec![operand_to_wire(a), operand_to_wire(b)],
                    ..node(CondOp::Contains)
                },
            }),
        }
    }
    ConditionProgram { nodes }
}

fn set_to_wire(v: &SetValue, out: &mut Vec<SetNode>) {
    enum Visit<'a> {
        Enter(&'a SetValue),
        Emit(&'a SetValue),
    }
    let mut todo = vec![Visit::Enter(v)];
    while let Some(visit) = todo.pop() {
        match visit {
            Visit::Enter(v) => {
                todo.push(Visit::Emit(v));
                match v {
                    SetValue::Operand(_) => {}
                    SetValue::IfNotExists(_, inner) => todo.push(Visit::Enter(inner)),
                    SetValue::ListAppend(a, b) | SetValue::Plus(a, b) | SetValue::Minus(a, b) => {
                        todo.push(Visit::Enter(b));
                        todo.push(Visit::Enter(a));
                    }
                }
            }
            Visit::Emit(v) => out.push(match v {
                SetValue::Operand(o) => SetNode {
                    op: SetOp::Operand as i32,
                    operand: Some(operand_to_wire(o)),
                    path: Vec::new(),
                },
                SetValue::IfNotExists(p, _) => SetNode {
                    op: SetOp::IfNotExists as i32,
                    operand: None,
                    path: path_to_wire(p),
                },
                SetValue::ListAppend(..) => SetNode {
                    op: SetOp::ListAppend as i32,
                    ..Default::default()
                },
                SetValue::Plus(..) => SetNode {
                    op: SetOp::Plus as i32,
                    ..Default::default()
                },
                SetValue::Minus(..) => SetNode {
                    op: SetOp::Minus as i32,
                    ..Default::default()
                },
            }),
        }
    }
}

/// The update as the log carries it.
pub fn encode_update(u: &Update) -> UpdateProgram {
    let actions = u
        .actions
        .iter()
        .map(|a| match a {
            Action::Set(p, v) => {
                let mut set = Vec::new();
                set_to_wire(v, &mut set);
                UpdateAction {
                    kind: ActionKind::Set as i32,
                    path: path_to_wire(p),
                    set,
                    value: Vec::new(),
                }
            }
            Action::Remove(p) => UpdateAction {
                kind: ActionKind::Remove as i32,
                path: path_to_wire(p),
                ..Default::default()
            },
            Action::Add(p, v) => UpdateAction {
                kind: ActionKind::Add as i32,
                path: path_to_wire(p),
                value: tern_model::value_to_json(v),
                ..Default::default()
            },
            Action::Delete(p, v) => UpdateAction {
                kind: ActionKind::Delete as i32,
                path: path_to_wire(p),
                value: tern_model::value_to_json(v),
                ..Default::default()
            },
        })
        .collect();
    UpdateProgram { actions }
}

// ---------------------------------------------------------------------------------------------
// Decoding

fn path_from_wire(steps: &[PathStep]) -> Result<Vec<PathElem>, DecodeError> {
    if steps.is_empty() {
        return Err(bad("empty document path"));
    }
    steps
        .iter()
        .map(|s| match s.index {
            Some(i) => usize::try_from(i)
                .map(PathElem::Index)
                .map_err(|_| bad(format!("list index {i} out of range"))),
            None if s.name.is_empty() => Err(bad("empty attribute name in a path")),
            None => Ok(PathElem::Name(s.name.clone())),
        })
        .collect()
}

fn value_from_wire(json: &[u8]) -> Result<AttributeValue, DecodeError> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| bad(format!("value: {e}")))?;
    tern_model::parse_value(&v).map_err(|e| bad(format!("value: {}", e.message)))
}

fn operand_from_wire(o: &Operand) -> Result<ModelOperand, DecodeError> {
    match OperandKind::try_from(o.kind) {
        Ok(OperandKind::Path) => Ok(ModelOperand::Path(path_from_wire(&o.path)?)),
        Ok(OperandKind::Value) => Ok(ModelOperand::Value(value_from_wire(&o.value)?)),
        Ok(OperandKind::Size) => Ok(ModelOperand::Size(path_from_wire(&o.path)?)),
        Err(_) => Err(bad(format!("unknown operand kind {}", o.kind))),
    }
}

fn operands<const N: usize>(n: &CondNode) -> Result<[ModelOperand; N], DecodeError> {
    if n.operands.len() != N {
        return Err(bad(format!(
            "{:?} takes {N} operands, not {}",
            CondOp::try_from(n.op),
            n.operands.len()
        )));
    }
    let v = n
        .operands
        .iter()
        .map(operand_from_wire)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(v.try_into()
        .unwrap_or_else(|_| unreachable!("length checked")))
}

/// Pops `n` trees (in their original order) with their depths.
fn pop_n<T>(stack: &mut Vec<(T, usize)>, n: usize) -> Result<(Vec<T>, usize), DecodeError> {
    if stack.len() < n {
        return Err(bad("a node takes more terms than precede it"));
    }
    let taken: Vec<(T, usize)> = stack.split_off(stack.len() - n);
    let depth = taken.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
    if depth > MAX_DEPTH {
        return Err(bad(format!("nested deeper than {MAX_DEPTH}")));
    }
    Ok((taken.into_iter().map(|(t, _)| t).collect(), depth))
}

fn one<T>(stack: Vec<(T, usize)>) -> Result<T, DecodeError> {
    let mut stack = stack;
    match (stack.pop(), stack.is_empty()) {
        (Some((root, _)), true) => Ok(root),
        (None, _) => Err(bad("no nodes")),
        (Some(_), false) => Err(bad("nodes left over after the root")),
    }
}

/// The condition a program describes; an error for anything a router could not have written.
pub fn decode_condition(p: &ConditionProgram) -> Result<Condition, DecodeError> {
    let mut stack: Vec<(Condition, usize)> = Vec::new();
    for n in &p.nodes {
        let op = CondOp::try_from(n.op).map_err(|_| bad(format!("unknown condition {}", n.op)))?;
        let leaf = |c: Condition| Ok::<_, DecodeError>((c, 1));
        let (c, depth) = match op {
            CondOp::Exists => leaf(Condition::Exists(path_from_wire(&n.path)?))?,
            CondOp::NotExists => leaf(Condition::NotExists(path_from_wire(&n.path)?))?,
            CondOp::Compare => {
                let cmp = match Cmp::try_from(n.cmp) {
                    Ok(Cmp::Eq) => CmpOp::Eq,
                    Ok(Cmp::Ne) => CmpOp::Ne,
                    Ok(Cmp::Lt) => CmpOp::Lt,
                    Ok(Cmp::Le) => CmpOp::Le,
                    Ok(Cmp::Gt) => CmpOp::Gt,
                    Ok(Cmp::Ge) => CmpOp::Ge,
                    Err(_) => return Err(bad(format!("unknown comparison {}", n.cmp))),
                };
                let [a, b] = operands(n)?;
                leaf(Condition::Compare(a, cmp, b))?
            }
            CondOp::Not => {
                let (mut terms, depth) = pop_n(&mut stack, 1)?;
                (Condition::Not(Box::new(terms.remove(0))), depth)
            }
            CondOp::And | CondOp::Or => {
                if n.arity < 2 {
                    return Err(bad(format!("{op:?} of {} terms", n.arity)));
                }
                let (terms, depth) = pop_n(&mut stack, n.arity as usize)?;
                let c = if op == CondOp::And {
                    Condition::And(terms)
                } else {
                    Condition::Or(terms)
                };
                (c, depth)
            }
            CondOp::Between => {
                let [x, lo, hi] = operands(n)?;
                leaf(Condition::Between(x, lo, hi))?
            }
            CondOp::In => {
                let mut list = n
                    .operands
                    .iter()
                    .map(operand_from_wire)
                    .collect::<Result<Vec<_>, _>>()?;
                if list.len() < 2 {
                    return Err(bad("IN without a list"));
                }
                let x = list.remove(0);
                leaf(Condition::In(x, list))?
            }
            CondOp::AttributeType => leaf(Condition::AttributeType(
                path_from_wire(&n.path)?,
                n.type_name.clone(),
            ))?,
            CondOp::BeginsWith => {
                let [a, b] = operands(n)?;
                leaf(Condition::BeginsWith(a, b))?
            }
            CondOp::Contains => {
                let [a, b] = operands(n)?;
                leaf(Condition::Contains(a, b))?
            }
        };
        stack.push((c, depth));
    }
    one(stack)
}

fn set_from_wire(nodes: &[SetNode]) -> Result<SetValue, DecodeError> {
    let mut stack: Vec<(SetValue, usize)> = Vec::new();
    for n in nodes {
        let op = SetOp::try_from(n.op).map_err(|_| bad(format!("unknown SET value {}", n.op)))?;
        let item = match op {
            SetOp::Operand => {
                let o = n
                    .operand
                    .as_ref()
                    .ok_or_else(|| bad("SET operand missing"))?;
                (SetValue::Operand(operand_from_wire(o)?), 1)
            }
            SetOp::IfNotExists => {
                let (mut v, depth) = pop_n(&mut stack, 1)?;
                (
                    SetValue::IfNotExists(path_from_wire(&n.path)?, Box::new(v.remove(0))),
                    depth,
                )
            }
            SetOp::ListAppend | SetOp::Plus | SetOp::Minus => {
                let (v, depth) = pop_n(&mut stack, 2)?;
                let [a, b]: [SetValue; 2] = v.try_into().unwrap_or_else(|_| unreachable!());
                let (a, b) = (Box::new(a), Box::new(b));
                let v = match op {
                    SetOp::ListAppend => SetValue::ListAppend(a, b),
                    SetOp::Plus => SetValue::Plus(a, b),
                    _ => SetValue::Minus(a, b),
                };
                (v, depth)
            }
        };
        stack.push(item);
    }
    one(stack)
}

/// The update a program describes; an error for anything a router could not have written.
pub fn decode_update(p: &UpdateProgram) -> Result<Update, DecodeError> {
    let actions = p
        .actions
        .iter()
        .map(|a| {
            let path = path_from_wire(&a.path)?;
            match ActionKind::try_from(a.kind) {
                Ok(ActionKind::Set) => Ok(Action::Set(path, set_from_wire(&a.set)?)),
                Ok(ActionKind::Remove) => Ok(Action::Remove(path)),
                Ok(ActionKind::Add) => Ok(Action::Add(path, value_from_wire(&a.value)?)),
                Ok(ActionKind::Delete) => Ok(Action::Delete(path, value_from_wire(&a.value)?)),
                Err(_) => Err(bad(format!("unknown update action {}", a.kind))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if actions.is_empty() {
        return Err(bad("an update without actions"));
    }
    Ok(Update { actions })
}
