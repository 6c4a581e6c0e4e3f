//! Condition expressions as DynamoDB defines them: comparisons (`=`, `<>`, `<`, `<=`, `>`, `>=`),
//! `BETWEEN … AND …`, `IN (…)`, the functions `attribute_exists`, `attribute_not_exists`,
//! `attribute_type`, `begins_with`, `contains` and `size`, `AND`, `OR`, `NOT` and parentheses;
//! projections; and the parser the update expressions (`update.rs`) share.
//!
//! Parsing substitutes `#names` and `:values`, so a [`Condition`] is self-contained: the router
//! parses it and sends it to the storage node, which evaluates it against the stored item.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Result};
use crate::value::{AttributeValue, Item};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathElem {
    Name(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operand {
    Path(Vec<PathElem>),
    Value(AttributeValue),
    /// `size(path)`: a number, or nothing where the attribute is absent or has no size.
    Size(Vec<PathElem>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    Exists(Vec<PathElem>),
    NotExists(Vec<PathElem>),
    Compare(Operand, CmpOp, Operand),
    Not(Box<Condition>),
    /// Every term holds (two or more terms). A chain `a AND b AND c` is one level, not nested:
    /// conditions travel in the replication log, whose decoders bound nesting depth. The JSON of
    /// two terms is the same as when this held a pair, so logged conditions read back alike.
    And(Vec<Condition>),
    /// Some term holds (two or more terms), flat like `And`.
    Or(Vec<Condition>),
    /// `x BETWEEN lo AND hi`.
    Between(Operand, Operand, Operand),
    /// `x IN (a, b, …)`.
    In(Operand, Vec<Operand>),
    /// `attribute_type(path, :t)` with the type descriptor (`S`, `N`, `SS`, `BOOL`, …).
    AttributeType(Vec<PathElem>, String),
    /// `begins_with(path, operand)`.
    BeginsWith(Operand, Operand),
    /// `contains(path, operand)`.
    Contains(Operand, Operand),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Name(String),
    Value(String),
    Int(usize),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Dot,
    Comma,
    Op(CmpOp),
    Plus,
    Minus,
    Eof,
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Name(s) | Tok::Value(s) => s.clone(),
            Tok::Int(n) => n.to_string(),
            Tok::LParen => "(".into(),
            Tok::RParen => ")".into(),
            Tok::LBracket => "[".into(),
            Tok::RBracket => "]".into(),
            Tok::Dot => ".".into(),
            Tok::Comma => ",".into(),
            Tok::Op(op) => match op {
                CmpOp::Eq => "=",
                CmpOp::Ne => "<>",
                CmpOp::Lt => "<",
                CmpOp::Le => "<=",
                CmpOp::Gt => ">",
                CmpOp::Ge => ">=",
            }
            .into(),
            Tok::Plus => "+".into(),
            Tok::Minus => "-".into(),
            Tok::Eof => "<EOF>".into(),
        }
    }
}

fn syntax_error(kind: &str, tok: &Tok, near: &str) -> ApiError {
    ApiError::validation(format!(
        "Invalid {kind}: Syntax error; token: \"{}\", near: \"{near}\"",
        tok.text()
    ))
}

fn tokenize(kind: &str, s: &str) -> Result<Vec<(Tok, usize)>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let word = |i: &mut usize| {
            let st = *i;
            while *i < b.len() && (b[*i].is_ascii_alphanumeric() || b[*i] == b'_') {
                *i += 1;
            }
            s[st..*i].to_string()
        };
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b'[' => {
                i += 1;
                Tok::LBracket
            }
            b']' => {
                i += 1;
                Tok::RBracket
            }
            b'.' => {
                i += 1;
                Tok::Dot
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'=' => {
                i += 1;
                Tok::Op(CmpOp::Eq)
            }
            b'<' if b.get(i + 1) == Some(&b'>') => {
                i += 2;
                Tok::Op(CmpOp::Ne)
            }
            b'<' if b.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Op(CmpOp::Le)
            }
            b'<' => {
                i += 1;
                Tok::Op(CmpOp::Lt)
            }
            b'>' if b.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Op(CmpOp::Ge)
            }
            b'>' => {
                i += 1;
                Tok::Op(CmpOp::Gt)
            }
            b'+' => {
                i += 1;
                Tok::Plus
            }
            b'-' => {
                i += 1;
                Tok::Minus
            }
            b'#' => {
                i += 1;
                Tok::Name(format!("#{}", word(&mut i)))
            }
            b':' => {
                i += 1;
                Tok::Value(format!(":{}", word(&mut i)))
            }
            b'0'..=b'9' => {
                let w = word(&mut i);
                Tok::Int(
                    w.parse()
                        .map_err(|_| syntax_error(kind, &Tok::Ident(w.clone()), &s[start..]))?,
                )
            }
            c if c.is_ascii_alphabetic() || c == b'_' => Tok::Ident(word(&mut i)),
            _ => {
                let ch = s[i..].chars().next().unwrap_or(' ');
                return Err(ApiError::validation(format!(
                    "Invalid {kind}: Invalid token: \"{ch}\", near: \"{}\"",
                    &s[start..]
                )));
            }
        };
        out.push((tok, start));
    }
    out.push((Tok::Eof, s.len()));
    Ok(out)
}

pub(crate) struct Parser<'a> {
    pub(crate) kind: &'static str,
    pub(crate) src: &'a str,
    pub(crate) toks: Vec<(Tok, usize)>,
    pub(crate) pos: usize,
    pub(crate) names: Option<&'a HashMap<String, String>>,
    pub(crate) values: Option<&'a HashMap<String, AttributeValue>>,
    pub(crate) used_names: BTreeSet<String>,
    pub(crate) used_values: BTreeSet<String>,
    /// Parentheses and NOTs open around the current position.
    pub(crate) depth: usize,
    /// Operators and functions seen so far.
    pub(crate) operators: usize,
}

/// DynamoDB's limit on the size of one expression.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// DynamoDB's reserved words (573, upper case, sorted): none may name an attribute in an
/// expression; a `#name` placeholder stands in for it.
const RESERVED_WORDS: &str = include_str!("reserved_words.txt");

/// Whether `word` is one of DynamoDB's reserved words (whatever its case).
pub fn is_reserved(word: &str) -> bool {
    static WORDS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let words = WORDS.get_or_init(|| RESERVED_WORDS.lines().filter(|l| !l.is_empty()).collect());
    words
        .binary_search(&word.to_ascii_uppercase().as_str())
        .is_ok()
}

/// DynamoDB's limit on the operands of one IN.
pub const MAX_IN_OPERANDS: usize = 100;
/// The type descriptors `attribute_type` accepts.
const TYPE_NAMES: [&str; 10] = ["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"];

/// DynamoDB's limit on operators and functions in one expression.
pub const MAX_OPERATORS: usize = 300;
/// DynamoDB's limit on the length of one expression attribute name or value placeholder.
pub const MAX_PLACEHOLDER_BYTES: usize = 255;
/// DynamoDB's limit on all substitution variables of a request: names and values together.
pub const MAX_SUBSTITUTION_BYTES: usize = 2 * 1024 * 1024;

/// Checks ExpressionAttributeNames and ExpressionAttributeValues as DynamoDB does before it reads
/// any expression: not empty, keys that are placeholders (`#…`, `:…`) of at most 255 bytes,
/// names not empty, and all of it at most 2 MB.
pub fn validate_substitutions(
    names: Option<&HashMap<String, String>>,
    values: Option<&HashMap<String, AttributeValue>>,
) -> Result<()> {
    let mut total = 0usize;
    if let Some(names) = names {
        if names.is_empty() {
            return Err(ApiError::validation(
                "ExpressionAttributeNames must not be empty",
            ));
        }
        for (k, v) in sorted(names) {
            placeholder_key("ExpressionAttributeNames", k, '#')?;
            if v.is_empty() {
                return Err(ApiError::validation(format!(
                    "ExpressionAttributeNames contains invalid value: Empty attribute name; key: \"{k}\""
                )));
            }
            total += k.len() + v.len();
        }
    }
    if let Some(values) = values {
        if values.is_empty() {
            return Err(ApiError::validation(
                "ExpressionAttributeValues must not be empty",
            ));
        }
        for (k, v) in sorted(values) {
            placeholder_key("ExpressionAttributeValues", k, ':')?;
            total += k.len() + crate::value::value_size(v);
        }
    }
    if total > MAX_SUBSTITUTION_BYTES {
        return Err(ApiError::validation(format!(
            "ExpressionAttributeNames and ExpressionAttributeValues exceed the maximum allowed size \
             of {MAX_SUBSTITUTION_BYTES} bytes; size: {total}"
        )));
    }
    Ok(())
}

/// Map entries in key order, so the first offending key is the same on every call.
fn sorted<V>(m: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

fn placeholder_key(field: &str, k: &str, sigil: char) -> Result<()> {
    let body = k.strip_prefix(sigil).unwrap_or("");
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ApiError::validation(format!(
            "{field} contains invalid key: Syntax error; key: \"{k}\""
        )));
    }
    if k.len() > MAX_PLACEHOLDER_BYTES {
        return Err(ApiError::validation(format!(
            "{field} contains invalid key: The key is longer than {MAX_PLACEHOLDER_BYTES} bytes; \
             key length: {}",
            k.len()
        )));
    }
    Ok(())
}

/// Parentheses and NOTs nested in one expression. DynamoDB bounds expressions by size and
/// operator count; the parser bounds its recursion here, far above any real expression, so no
/// input can exhaust a stack.
const MAX_NESTING: usize = 100;

/// A single term as itself, several joined by `join`.
fn one_or(mut terms: Vec<Condition>, join: fn(Vec<Condition>) -> Condition) -> Condition {
    if terms.len() == 1 {
        terms.pop().expect("one term")
    } else {
        join(terms)
    }
}

/// Parses a ConditionExpression, substituting names and values; unused names or values are
/// errors, as in DynamoDB.
pub fn parse_condition(
    expr: &str,
    names: Option<&HashMap<String, String>>,
    values: Option<&HashMap<String, AttributeValue>>,
) -> Result<Condition> {
    let parsed = condition_parts("ConditionExpression", expr, names, values)?;
    check_unused(names, values, &parsed.1, &parsed.2)?;
    Ok(parsed.0)
}

/// A condition (of the given kind: ConditionExpression, FilterExpression, ...) and the names and
/// values it used, for a request whose expressions share the substitution maps.
pub(crate) fn condition_parts(
    kind: &'static str,
    expr: &str,
    names: Option<&HashMap<String, String>>,
    values: Option<&HashMap<String, AttributeValue>>,
) -> Result<(Condition, BTreeSet<String>, BTreeSet<String>)> {
    if expr.trim().is_empty() {
        return Err(ApiError::validation(format!(
            "Invalid {kind}: The expression can not be empty;"
        )));
    }
    let mut p = Parser::new(kind, expr, names, values)?;
    let cond = p.or()?;
    if p.peek() != &Tok::Eof {
        return Err(p.error());
    }
    if encoded_depth(&cond) > MAX_ENCODED_DEPTH {
        return Err(ApiError::validation(format!(
            "Invalid {kind}: The expression is nested too deeply; maximum depth: {MAX_NESTING}"
        )));
    }
    Ok((cond, p.used_names, p.used_values))
}

/// Parses a ProjectionExpression: comma-separated document paths.
pub fn parse_projection(
    expr: &str,
    names: Option<&HashMap<String, String>>,
) -> Result<Vec<Vec<PathElem>>> {
    let (paths, used) = projection_parts(expr, names)?;
    check_unused(names, None, &used, &BTreeSet::new())?;
    Ok(paths)
}

/// A projection and the names it used (for requests whose expressions share the names).
pub(crate) fn projection_parts(
    expr: &str,
    names: Option<&HashMap<String, String>>,
) -> Result<(Vec<Vec<PathElem>>, BTreeSet<String>)> {
    if expr.trim().is_empty() {
        return Err(ApiError::validation(
            "Invalid ProjectionExpression: The expression can not be empty;",
        ));
    }
    let mut p = Parser::new("ProjectionExpression", expr, names, None)?;
    let mut paths = vec![p.path()?];
    while p.peek() == &Tok::Comma {
        p.next();
        paths.push(p.path()?);
    }
    if p.peek() != &Tok::Eof {
        return Err(p.error());
    }
    check_paths("ProjectionExpression", &paths)?;
    Ok((paths, p.used_names))
}

/// The parts of `item` the paths name, in the item's shape: list elements keep their list
/// order (compacted), and paths into the same element or map share it.
pub fn project(item: &Item, paths: &[Vec<PathElem>]) -> Item {
    let tails: Vec<&[PathElem]> = paths.iter().map(Vec::as_slice).collect();
    project_map(item, &tails)
}

/// The projection of a map: each name some path starts with, projected by those paths' tails.
fn project_map(map: &Item, paths: &[&[PathElem]]) -> Item {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&[PathElem]>> = Default::default();
    for p in paths {
        if let Some((PathElem::Name(n), rest)) = p.split_first() {
            by_name.entry(n.as_str()).or_default().push(rest);
        }
    }
    let mut out = Item::new();
    for (name, tails) in by_name {
        if let Some(v) = map.get(name).and_then(|v| project_value(v, &tails)) {
            out.insert(name.to_string(), v);
        }
    }
    out
}

/// The projection of one value by the remaining parts of the paths that reach it; `None` when
/// no path finds anything in it.
fn project_value(v: &AttributeValue, tails: &[&[PathElem]]) -> Option<AttributeValue> {
    if tails.iter().any(|t| t.is_empty()) {
        return Some(v.clone());
    }
    match v {
        AttributeValue::M(m) => {
            let out = project_map(m, tails);
            (!out.is_empty()).then_some(AttributeValue::M(out))
        }
        AttributeValue::L(l) => {
            let mut by_index: std::collections::BTreeMap<usize, Vec<&[PathElem]>> =
                Default::default();
            for t in tails {
                if let Some((PathElem::Index(i), rest)) = t.split_first() {
                    by_index.entry(*i).or_default().push(rest);
                }
            }
            let out: Vec<AttributeValue> = by_index
                .into_iter()
                .filter_map(|(i, ts)| l.get(i).and_then(|e| project_value(e, &ts)))
                .collect();
            (!out.is_empty()).then_some(AttributeValue::L(out))
        }
        _ => None,
    }
}

/// DynamoDB's rendering of a document path in its messages: `[a, b, [0]]`.
fn render_path(p: &[PathElem]) -> String {
    let parts: Vec<String> = p
        .iter()
        .map(|e| match e {
            PathElem::Name(n) => n.clone(),
            PathElem::Index(i) => format!("[{i}]"),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Refuses two paths of which one contains the other (overlap), or that use the same step as a
/// map key in one and a list index in the other (conflict), as DynamoDB does for projections and
/// updates.
pub(crate) fn check_paths(kind: &str, paths: &[Vec<PathElem>]) -> Result<()> {
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[i + 1..] {
            let common = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
            if common == a.len() || common == b.len() {
                return Err(ApiError::validation(format!(
                    "Invalid {kind}: Two document paths overlap with each other; must remove or \
                     rewrite one of these paths; path one: {}, path two: {}",
                    render_path(a),
                    render_path(b)
                )));
            }
            let kinds_differ = matches!(
                (&a[common], &b[common]),
                (PathElem::Name(_), PathElem::Index(_)) | (PathElem::Index(_), PathElem::Name(_))
            );
            if kinds_differ {
                return Err(ApiError::validation(format!(
                    "Invalid {kind}: Two document paths conflict with each other; must remove or \
                     rewrite one of these paths; path one: {}, path two: {}",
                    render_path(a),
                    render_path(b)
                )));
            }
        }
    }
    Ok(())
}

/// Nesting of the JSON a condition travels in (the replication log's decoder allows 128).
pub fn encoded_depth(c: &Condition) -> usize {
    fn path(_: &[PathElem]) -> usize {
        // {"Path":[{"Name":"a"}]}: the operand's object, the array, each element's object.
        3
    }
    fn operand(o: &Operand) -> usize {
        match o {
            Operand::Path(p) | Operand::Size(p) => path(p),
            Operand::Value(v) => 1 + value_depth(v),
        }
    }
    match c {
        Condition::Exists(p) | Condition::NotExists(p) => 1 + path(p),
        Condition::Compare(a, _, b) => 2 + operand(a).max(operand(b)),
        Condition::Not(inner) => 1 + encoded_depth(inner),
        Condition::And(terms) | Condition::Or(terms) => {
            2 + terms.iter().map(encoded_depth).max().unwrap_or(0)
        }
        Condition::Between(a, b, c) => 2 + operand(a).max(operand(b)).max(operand(c)),
        Condition::In(x, list) => 3 + list.iter().map(operand).max().unwrap_or(0).max(operand(x)),
        Condition::AttributeType(p, _) => 2 + path(p),
        Condition::BeginsWith(a, b) | Condition::Contains(a, b) => 2 + operand(a).max(operand(b)),
    }
}

/// Nesting of an attribute value's JSON: `{"S":"x"}` is 1, each map or list level adds 2.
pub fn value_depth(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::M(m) => 2 + m.values().map(value_depth).max().unwrap_or(0),
        AttributeValue::L(l) => 2 + l.iter().map(value_depth).max().unwrap_or(0),
        AttributeValue::SS(_) | AttributeValue::NS(_) | AttributeValue::BS(_) => 2,
        _ => 1,
    }
}

/// What the replication log's decoder (serde_json, 128 levels) takes, with a margin.
pub const MAX_ENCODED_DEPTH: usize = 120;

impl<'a> Parser<'a> {
    pub(crate) fn new(
        kind: &'static str,
        src: &'a str,
        names: Option<&'a HashMap<String, String>>,
        values: Option<&'a HashMap<String, AttributeValue>>,
    ) -> Result<Self> {
        if src.len() > MAX_EXPRESSION_BYTES {
            return Err(ApiError::validation(format!(
                "Invalid {kind}: Expression size has exceeded the maximum allowed size; \
                 expression size: {}",
                src.len()
            )));
        }
        Ok(Parser {
            kind,
            src,
            toks: tokenize(kind, src)?,
            pos: 0,
            names,
            values,
            used_names: BTreeSet::new(),
            used_values: BTreeSet::new(),
            depth: 0,
            operators: 0,
        })
    }
}

impl Parser<'_> {
    pub(crate) fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    pub(crate) fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if t != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    pub(crate) fn error(&self) -> ApiError {
        let (tok, at) = &self.toks[self.pos];
        syntax_error(self.kind, tok, &self.src[(*at).min(self.src.len())..])
    }

    pub(crate) fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w.eq_ignore_ascii_case(k))
    }

    /// Counts one operator or function against DynamoDB's limit of 300.
    pub(crate) fn operator(&mut self) -> Result<()> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return Err(ApiError::validation(format!(
                "Invalid {}: The expression contains too many operators; the maximum is \
                 {MAX_OPERATORS}",
                self.kind
            )));
        }
        Ok(())
    }

    pub(crate) fn expect(&mut self, t: Tok) -> Result<()> {
        if self.peek() == &t {
            self.next();
            Ok(())
        } else {
            Err(self.error())
        }
    }

    pub(crate) fn or(&mut self) -> Result<Condition> {
        let mut terms = vec![self.and()?];
        while self.keyword("OR") {
            self.next();
            self.operator()?;
            terms.push(self.and()?);
        }
        Ok(one_or(terms, Condition::Or))
    }

    pub(crate) fn and(&mut self) -> Result<Condition> {
        let mut terms = vec![self.not()?];
        while self.keyword("AND") {
            self.next();
            self.operator()?;
            terms.push(self.not()?);
        }
        Ok(one_or(terms, Condition::And))
    }

    pub(crate) fn not(&mut self) -> Result<Condition> {
        if self.keyword("NOT") {
            self.next();
            self.operator()?;
            let inner = self.nested(Self::not)?;
            return Ok(Condition::Not(Box::new(inner)));
        }
        self.primary()
    }

    /// Parses one more level down, refusing to go deeper than `MAX_NESTING`.
    pub(crate) fn nested(
        &mut self,
        parse: fn(&mut Self) -> Result<Condition>,
    ) -> Result<Condition> {
        if self.depth >= MAX_NESTING {
            return Err(ApiError::validation(format!(
                "Invalid {}: The expression is nested too deeply; maximum depth: {MAX_NESTING}",
                self.kind
            )));
        }
        self.depth += 1;
        let c = parse(self);
        self.depth -= 1;
        c
    }

    pub(crate) fn primary(&mut self) -> Result<Condition> {
        if self.peek() == &Tok::LParen {
            self.next();
            let c = self.nested(Self::or)?;
            self.expect(Tok::RParen)?;
            return Ok(c);
        }
        if let Tok::Ident(f) = self.peek().clone() {
            let call = self.toks.get(self.pos + 1).map(|t| &t.0) == Some(&Tok::LParen);
            if call && f != "size" {
                return self.function(&f);
            }
        }
        let left = self.operand()?;
        if self.keyword("BETWEEN") {
            self.next();
            self.operator()?;
            let lo = self.operand()?;
            if !self.keyword("AND") {
                return Err(self.error());
            }
            self.next();
            let hi = self.operand()?;
            for o in [&left, &lo, &hi] {
                self.scalar_operand("BETWEEN", o)?;
            }
            if let (Operand::Value(a), Operand::Value(b)) = (&lo, &hi) {
                if a.type_name() != b.type_name()
                    || order(a, b) == Some(std::cmp::Ordering::Greater)
                {
                    return Err(ApiError::validation(format!(
                        "Invalid {}: The BETWEEN operator requires upper bound to be greater than or \
                         equal to lower bound; lower bound operand: AttributeValue: {{{}}}, upper \
                         bound operand: AttributeValue: {{{}}}",
                        self.kind,
                        describe(a),
                        describe(b)
                    )));
                }
            }
            return Ok(Condition::Between(left, lo, hi));
        }
        if self.keyword("IN") {
            self.next();
            self.operator()?;
            self.expect(Tok::LParen)?;
            let mut list = vec![self.operand()?];
            while self.peek() == &Tok::Comma {
                self.next();
                list.push(self.operand()?);
                if list.len() > MAX_IN_OPERANDS {
                    return Err(ApiError::validation(format!(
                        "Invalid {}: The IN operator is provided with too many operands; the \
                         maximum is {MAX_IN_OPERANDS}",
                        self.kind
                    )));
                }
            }
            self.expect(Tok::RParen)?;
            return Ok(Condition::In(left, list));
        }
        let Tok::Op(op) = self.peek().clone() else {
            return Err(self.error());
        };
        self.next();
        self.operator()?;
        let right = self.operand()?;
        if op != CmpOp::Eq && op != CmpOp::Ne {
            let sym = Tok::Op(op).text();
            self.scalar_operand(&sym, &left)?;
            self.scalar_operand(&sym, &right)?;
        }
        Ok(Condition::Compare(left, op, right))
    }

    /// An operand of an ordering comparison, BETWEEN or begins_with given as a value must be a
    /// string, number or binary.
    pub(crate) fn scalar_operand(&self, op: &str, o: &Operand) -> Result<()> {
        if let Operand::Value(v) = o {
            if !matches!(
                v,
                AttributeValue::S(_) | AttributeValue::N(_) | AttributeValue::B(_)
            ) {
                return Err(self.operand_type_error(op, v));
            }
        }
        Ok(())
    }

    pub(crate) fn operand_type_error(&self, op: &str, v: &AttributeValue) -> ApiError {
        ApiError::validation(format!(
            "Invalid {}: Incorrect operand type for operator or function; operator or function: \
             {op}, operand type: {}",
            self.kind,
            v.type_name()
        ))
    }

    pub(crate) fn function(&mut self, name: &str) -> Result<Condition> {
        if !matches!(
            name,
            "attribute_exists"
                | "attribute_not_exists"
                | "attribute_type"
                | "begins_with"
                | "contains"
        ) {
            return Err(ApiError::validation(format!(
                "Invalid {}: Invalid function name; function: {name}",
                self.kind
            )));
        }
        self.next();
        self.operator()?;
        self.expect(Tok::LParen)?;
        let c = match name {
            "attribute_exists" => Condition::Exists(self.path()?),
            "attribute_not_exists" => Condition::NotExists(self.path()?),
            "attribute_type" => {
                let path = self.path()?;
                self.expect(Tok::Comma)?;
                let t = match self.operand()? {
                    Operand::Value(AttributeValue::S(t)) if TYPE_NAMES.contains(&t.as_str()) => t,
                    Operand::Value(AttributeValue::S(t)) => {
                        return Err(ApiError::validation(format!(
                            "Invalid {}: Invalid attribute type name found in type parameter of \
                             attribute_type function; type: {t}",
                            self.kind
                        )))
                    }
                    Operand::Value(v) => return Err(self.operand_type_error(name, &v)),
                    _ => return Err(self.value_required(name)),
                };
                Condition::AttributeType(path, t)
            }
            _ => {
                let a = Operand::Path(self.path()?);
                self.expect(Tok::Comma)?;
                let b = self.operand()?;
                if name == "begins_with" {
                    self.scalar_operand(name, &b)?;
                    if let Operand::Value(v @ AttributeValue::N(_)) = &b {
                        return Err(self.operand_type_error(name, v));
                    }
                    Condition::BeginsWith(a, b)
                } else {
                    if let (Operand::Path(x), Operand::Path(y)) = (&a, &b) {
                        if x == y {
                            return Err(ApiError::validation(format!(
                                "Invalid {}: The first operand must be distinct from the \
                                 remaining operands for this operator or function; operator: \
                                 contains, first operand: {}",
                                self.kind,
                                render_path(x)
                            )));
                        }
                    }
                    Condition::Contains(a, b)
                }
            }
        };
        self.expect(Tok::RParen)?;
        Ok(c)
    }

    pub(crate) fn value_required(&self, name: &str) -> ApiError {
        ApiError::validation(format!(
            "Invalid {}: Incorrect operand type for operator or function; operator or function: \
             {name}, operand type: a document path",
            self.kind
        ))
    }

    pub(crate) fn operand(&mut self) -> Result<Operand> {
        if self.keyword("size") && self.toks.get(self.pos + 1).map(|t| &t.0) == Some(&Tok::LParen) {
            self.next();
            self.operator()?;
            self.next();
            let path = match self.peek() {
                Tok::Value(_) => {
                    return Err(ApiError::validation(format!(
                        "Invalid {}: Operator or function requires a document path; operator or \
                         function: size",
                        self.kind
                    )))
                }
                _ => self.path()?,
            };
            self.expect(Tok::RParen)?;
            return Ok(Operand::Size(path));
        }
        if let Tok::Value(v) = self.peek().clone() {
            self.next();
            let value = self.values.and_then(|m| m.get(&v)).ok_or_else(|| {
                ApiError::validation(format!(
                    "An expression attribute value used in expression is not defined; attribute value: {v}"
                ))
            })?;
            self.used_values.insert(v);
            return Ok(Operand::Value(value.clone()));
        }
        Ok(Operand::Path(self.path()?))
    }

    pub(crate) fn path(&mut self) -> Result<Vec<PathElem>> {
        let mut path = vec![PathElem::Name(self.name()?)];
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.next();
                    path.push(PathElem::Name(self.name()?));
                }
                Tok::LBracket => {
                    self.next();
                    let Tok::Int(i) = self.peek().clone() else {
                        return Err(self.error());
                    };
                    self.next();
                    self.expect(Tok::RBracket)?;
                    path.push(PathElem::Index(i));
                }
                _ => return Ok(path),
            }
        }
    }

    pub(crate) fn name(&mut self) -> Result<String> {
        match self.peek().clone() {
            Tok::Ident(n) => {
                if is_reserved(&n) {
                    return Err(ApiError::validation(format!(
                        "Invalid {}: Attribute name is a reserved keyword; reserved keyword: {n}",
                        self.kind
                    )));
                }
                self.next();
                Ok(n)
            }
            Tok::Name(n) => {
                self.next();
                let real = self.names.and_then(|m| m.get(&n)).ok_or_else(|| {
                    ApiError::validation(format!(
                        "An expression attribute name used in the document path is not defined; attribute name: {n}"
                    ))
                })?;
                self.used_names.insert(n);
                Ok(real.clone())
            }
            _ => Err(self.error()),
        }
    }
}

/// Names and values no expression of the request used are an error, as in DynamoDB.
pub(crate) fn check_unused(
    names: Option<&HashMap<String, String>>,
    values: Option<&HashMap<String, AttributeValue>>,
    used_names: &BTreeSet<String>,
    used_values: &BTreeSet<String>,
) -> Result<()> {
    {
        if let Some(names) = names {
            let unused: BTreeSet<&String> =
                names.keys().filter(|k| !used_names.contains(*k)).collect();
            if !unused.is_empty() {
                let keys: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
                return Err(ApiError::validation(format!(
                    "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{}}}",
                    keys.join(", ")
                )));
            }
        }
        if let Some(values) = values {
            let unused: BTreeSet<&String> = values
                .keys()
                .filter(|k| !used_values.contains(*k))
                .collect();
            if !unused.is_empty() {
                let keys: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
                return Err(ApiError::validation(format!(
                    "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{}}}",
                    keys.join(", ")
                )));
            }
        }
        Ok(())
    }
}

pub(crate) fn resolve<'a>(item: &'a Item, path: &[PathElem]) -> Option<&'a AttributeValue> {
    let (PathElem::Name(first), rest) = path.split_first()? else {
        return None;
    };
    let mut cur = item.get(first)?;
    for elem in rest {
        cur = match (elem, cur) {
            (PathElem::Name(n), AttributeValue::M(m)) => m.get(n)?,
            (PathElem::Index(i), AttributeValue::L(l)) => l.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The order of two strings, numbers or binaries of one type; `None` for anything else.
pub(crate) fn order(a: &AttributeValue, b: &AttributeValue) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (AttributeValue::S(x), AttributeValue::S(y)) => Some(x.cmp(y)),
        (AttributeValue::N(x), AttributeValue::N(y)) => Some(x.cmp(y)),
        (AttributeValue::B(x), AttributeValue::B(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// DynamoDB's equality: numbers by value, sets regardless of order, documents element-wise.
pub fn values_equal(a: &AttributeValue, b: &AttributeValue) -> bool {
    use AttributeValue as V;
    fn same_set<T: Ord + Clone>(x: &[T], y: &[T]) -> bool {
        if x.len() != y.len() {
            return false;
        }
        let (mut x, mut y) = (x.to_vec(), y.to_vec());
        x.sort();
        y.sort();
        x == y
    }
    match (a, b) {
        (V::SS(x), V::SS(y)) => same_set(x, y),
        (V::NS(x), V::NS(y)) => same_set(x, y),
        (V::BS(x), V::BS(y)) => same_set(x, y),
        (V::L(x), V::L(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        (V::M(x), V::M(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => order(a, b).map_or_else(|| a == b, |o| o == std::cmp::Ordering::Equal),
    }
}

fn compare(a: &AttributeValue, op: CmpOp, b: &AttributeValue) -> bool {
    use std::cmp::Ordering;
    let ord = order(a, b);
    match op {
        CmpOp::Eq => values_equal(a, b),
        CmpOp::Ne => !values_equal(a, b),
        CmpOp::Lt => ord == Some(Ordering::Less),
        CmpOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => ord == Some(Ordering::Greater),
        CmpOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
    }
}

/// `size(x)` as DynamoDB defines it: bytes of a string or binary, elements of a set, list or map.
fn size_of(v: &AttributeValue) -> Option<usize> {
    use AttributeValue as V;
    Some(match v {
        V::S(s) => s.len(),
        V::B(b) => b.len(),
        V::SS(s) => s.len(),
        V::NS(s) => s.len(),
        V::BS(s) => s.len(),
        V::L(l) => l.len(),
        V::M(m) => m.len(),
        _ => return None,
    })
}

/// `{N:5}`-style rendering of a value in messages.
fn describe(v: &AttributeValue) -> String {
    let json = crate::value::value_to_json(v);
    let text = String::from_utf8_lossy(&json);
    text.trim_start_matches('{')
        .trim_end_matches('}')
        .replace('"', "")
}

/// The value of an operand against `item`, if it has one.
pub(crate) fn operand_value(item: &Item, o: &Operand) -> Option<AttributeValue> {
    match o {
        Operand::Path(p) => resolve(item, p).cloned(),
        Operand::Value(v) => Some(v.clone()),
        Operand::Size(p) => {
            let n = size_of(resolve(item, p)?)?;
            Some(AttributeValue::N(
                crate::number::Number::parse(&n.to_string()).expect("a count is a number"),
            ))
        }
    }
}

impl Condition {
    /// Evaluates against the current item (`None`: the item does not exist).
    pub fn evaluate(&self, item: Option<&Item>) -> bool {
        let empty = Item::new();
        let item = item.unwrap_or(&empty);
        self.eval(item)
    }

    fn eval(&self, item: &Item) -> bool {
        use AttributeValue as V;
        let operand = |o: &Operand| operand_value(item, o);
        match self {
            Condition::Exists(p) => resolve(item, p).is_some(),
            Condition::NotExists(p) => resolve(item, p).is_none(),
            Condition::Compare(a, op, b) => match (operand(a), operand(b)) {
                (Some(x), Some(y)) => compare(&x, *op, &y),
                // A missing attribute equals nothing: `<>` holds, every other comparison fails.
                _ => *op == CmpOp::Ne,
            },
            Condition::Not(c) => !c.eval(item),
            Condition::And(terms) => terms.iter().all(|c| c.eval(item)),
            Condition::Or(terms) => terms.iter().any(|c| c.eval(item)),
            Condition::Between(x, lo, hi) => match (operand(x), operand(lo), operand(hi)) {
                (Some(x), Some(lo), Some(hi)) => {
                    compare(&x, CmpOp::Ge, &lo) && compare(&x, CmpOp::Le, &hi)
                }
                _ => false,
            },
            Condition::In(x, list) => operand(x).is_some_and(|x| {
                list.iter()
                    .any(|o| operand(o).is_some_and(|y| values_equal(&x, &y)))
            }),
            Condition::AttributeType(p, t) => resolve(item, p).is_some_and(|v| v.type_name() == t),
            Condition::BeginsWith(a, b) => match (operand(a), operand(b)) {
                (Some(V::S(x)), Some(V::S(y))) => x.starts_with(y.as_str()),
                (Some(V::B(x)), Some(V::B(y))) => x.starts_with(&y),
                _ => false,
            },
            Condition::Contains(a, b) => match (operand(a), operand(b)) {
                (Some(V::S(x)), Some(V::S(y))) => x.contains(y.as_str()),
                (Some(V::B(x)), Some(V::B(y))) => {
                    y.is_empty() || x.windows(y.len()).any(|w| w == y.as_slice())
                }
                (Some(V::SS(x)), Some(V::S(y))) => x.contains(&y),
                (Some(V::NS(x)), Some(V::N(y))) => x.contains(&y),
                (Some(V::BS(x)), Some(V::B(y))) => x.contains(&y),
                (Some(V::L(x)), Some(y)) => x.iter().any(|e| values_equal(e, &y)),
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::parse_item;
    use serde_json::json;

    fn item() -> Item {
        parse_item(
            &json!({"pk": {"S": "a"}, "n": {"N": "5"}, "m": {"M": {"x": {"L": [{"S": "y"}]}}}}),
        )
        .unwrap()
    }

    fn eval(expr: &str, names: &[(&str, &str)], values: &[(&str, AttributeValue)]) -> Result<bool> {
        let names: HashMap<String, String> = names
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let values: HashMap<String, AttributeValue> = values
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let c = parse_condition(
            expr,
            (!names.is_empty()).then_some(&names),
            (!values.is_empty()).then_some(&values),
        )?;
        let round: Condition = serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(round, c, "conditions survive the bus encoding");
        Ok(c.evaluate(Some(&item())))
    }

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(crate::number::Number::parse(v).unwrap())
    }

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn between_in_and_functions() {
        // item: pk = "a", n = 5, m = {x: ["y"]}
        assert!(eval(
            "n BETWEEN :a AND :b",
            &[],
            &[(":a", n("1")), (":b", n("5"))]
        )
        .unwrap());
        assert!(!eval(
            "n BETWEEN :a AND :b",
            &[],
            &[(":a", n("6")), (":b", n("9"))]
        )
        .unwrap());
        let e = eval(
            "n BETWEEN :a AND :b",
            &[],
            &[(":a", n("9")), (":b", n("1"))],
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("upper bound to be greater than or equal"),
            "{}",
            e.message
        );
        assert!(eval("pk IN (:a, :b)", &[], &[(":a", s("z")), (":b", s("a"))]).unwrap());
        assert!(!eval("pk IN (:a)", &[], &[(":a", s("z"))]).unwrap());
        assert!(
            eval("n IN (:a)", &[], &[(":a", n("5.00"))]).unwrap(),
            "numbers by value"
        );
        assert!(eval("attribute_type(m, :t)", &[], &[(":t", s("M"))]).unwrap());
        assert!(!eval("attribute_type(n, :t)", &[], &[(":t", s("S"))]).unwrap());
        assert!(eval("attribute_type(n, :t)", &[], &[(":t", s("X"))])
            .unwrap_err()
            .message
            .contains("Invalid attribute type name"));
        assert!(eval("begins_with(pk, :p)", &[], &[(":p", s("a"))]).unwrap());
        assert!(!eval("begins_with(pk, :p)", &[], &[(":p", s("b"))]).unwrap());
        assert!(eval("begins_with(pk, :p)", &[], &[(":p", n("1"))])
            .unwrap_err()
            .message
            .contains("Incorrect operand type"));
        assert!(eval("contains(m.x, :v)", &[], &[(":v", s("y"))]).unwrap());
        assert!(eval("contains(pk, :v)", &[], &[(":v", s("a"))]).unwrap());
        assert!(!eval("contains(pk, :v)", &[], &[(":v", s("q"))]).unwrap());
        assert!(eval("size(m.x) = :one", &[], &[(":one", n("1"))]).unwrap());
        assert!(eval("size(pk) < :two", &[], &[(":two", n("2"))]).unwrap());
        assert!(
            !eval("size(n) > :z", &[], &[(":z", n("0"))]).unwrap(),
            "a number has no size"
        );
        assert!(
            eval("size(:v) > :z", &[], &[(":v", s("x")), (":z", n("0"))])
                .unwrap_err()
                .message
                .contains("requires a document path")
        );
        // Ordering a BOOL is refused; equality of any types is allowed.
        assert!(eval("n < :b", &[], &[(":b", AttributeValue::Bool(true))]).is_err());
        assert!(!eval("n = :b", &[], &[(":b", AttributeValue::Bool(true))]).unwrap());
    }

    #[test]
    fn sets_are_equal_whatever_their_order() {
        let a = AttributeValue::SS(vec!["x".into(), "y".into()]);
        let b = AttributeValue::SS(vec!["y".into(), "x".into()]);
        assert!(values_equal(&a, &b));
        assert!(!values_equal(&a, &AttributeValue::SS(vec!["x".into()])));
    }

    #[test]
    fn reserved_words_need_placeholders() {
        assert!(is_reserved("name") && is_reserved("Status") && is_reserved("ZONE"));
        assert!(!is_reserved("pk") && !is_reserved("metadata"));
        let e = eval("attribute_exists(Status)", &[], &[]).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: Status"
        );
        assert!(eval("attribute_not_exists(#s)", &[("#s", "status")], &[]).unwrap());
        // Nested names too.
        assert!(eval("attribute_exists(m.name)", &[], &[]).is_err());
        let e = parse_projection("pk, data", None).unwrap_err();
        assert!(
            e.message.contains("reserved keyword: data"),
            "{}",
            e.message
        );
    }

    #[test]
    fn at_most_300_operators() {
        // 150 comparisons joined by 149 ANDs: 299 operators.
        let terms = |k: usize| vec!["a = b"; k].join(" AND ");
        assert!(parse_condition(&terms(150), None, None).is_ok());
        // 151 comparisons, 150 ANDs: 301.
        let err = parse_condition(&terms(151), None, None).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::Validation);
        assert!(
            err.message.contains("too many operators"),
            "{}",
            err.message
        );
        // Functions and NOT count too, and the check is done before any deeper parse.
        let fns = vec!["attribute_exists(a)"; 151].join(" OR ");
        assert!(parse_condition(&fns, None, None)
            .unwrap_err()
            .message
            .contains("too many operators"));
    }

    #[test]
    fn substitutions_within_dynamodb_limits() {
        let names = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let msg = |n: Option<&HashMap<String, String>>,
                   v: Option<&HashMap<String, AttributeValue>>| {
            validate_substitutions(n, v).unwrap_err().message
        };
        assert!(validate_substitutions(Some(&names(&[("#a", "x")])), None).is_ok());
        assert_eq!(
            msg(Some(&HashMap::new()), None),
            "ExpressionAttributeNames must not be empty"
        );
        assert_eq!(
            msg(None, Some(&HashMap::new())),
            "ExpressionAttributeValues must not be empty"
        );
        assert_eq!(
            msg(Some(&names(&[("a", "x")])), None),
            "ExpressionAttributeNames contains invalid key: Syntax error; key: \"a\""
        );
        let values: HashMap<String, AttributeValue> =
            [("v".to_string(), AttributeValue::Null)].into();
        assert_eq!(
            msg(None, Some(&values)),
            "ExpressionAttributeValues contains invalid key: Syntax error; key: \"v\""
        );
        let long = format!("#{}", "a".repeat(255));
        assert!(msg(Some(&names(&[(long.as_str(), "x")])), None).contains("longer than 255"));
        assert!(msg(Some(&names(&[("#a", "")])), None).contains("Empty attribute name"));
        // 2 MB of substitutions in all.
        let big: HashMap<String, AttributeValue> = (0..9)
            .map(|i| (format!(":v{i}"), AttributeValue::S("x".repeat(256 * 1024))))
            .collect();
        assert!(msg(None, Some(&big)).contains("maximum allowed size"));
    }

    #[test]
    fn functions_and_logic() {
        assert!(eval("attribute_exists(pk)", &[], &[]).unwrap());
        assert!(!eval("attribute_not_exists(pk)", &[], &[]).unwrap());
        assert!(eval("attribute_not_exists(#p)", &[("#p", "nope")], &[]).unwrap());
        assert!(eval("attribute_exists(m.x[0])", &[], &[]).unwrap());
        assert!(!eval("attribute_exists(m.x[1])", &[], &[]).unwrap());
        assert!(eval(
            "NOT attribute_exists(q) and (attribute_exists(pk) OR attribute_exists(z))",
            &[],
            &[]
        )
        .unwrap());
        assert!(!Condition::Exists(vec![PathElem::Name("pk".into())]).evaluate(None));
        assert!(Condition::NotExists(vec![PathElem::Name("pk".into())]).evaluate(None));
    }

    #[test]
    fn comparisons() {
        assert!(eval("n = :v", &[], &[(":v", n("5.0"))]).unwrap());
        assert!(
            eval("n < :v", &[], &[(":v", n("10"))]).unwrap(),
            "numeric, not lexical"
        );
        assert!(!eval("n > :v", &[], &[(":v", n("10"))]).unwrap());
        assert!(
            eval("pk <> :v", &[], &[(":v", n("1"))]).unwrap(),
            "different types are unequal"
        );
        assert!(!eval("absent = :v", &[], &[(":v", n("1"))]).unwrap());
    }

    #[test]
    fn projections() {
        let names: HashMap<String, String> = [("#k".to_string(), "pk".to_string())].into();
        let paths = parse_projection("#k, m.x[0], nope", Some(&names)).unwrap();
        let out = project(&item(), &paths);
        let expected =
            parse_item(&json!({"pk": {"S": "a"}, "m": {"M": {"x": {"L": [{"S": "y"}]}}}})).unwrap();
        assert_eq!(out, expected);
        assert!(parse_projection("a,", None)
            .unwrap_err()
            .message
            .starts_with("Invalid ProjectionExpression: Syntax error"));
        assert!(parse_projection("a", Some(&names))
            .unwrap_err()
            .message
            .contains("unused in expressions"));
    }

    #[test]
    fn errors() {
        let msg = |r: Result<bool>| r.unwrap_err().message;
        assert!(msg(eval("attribute_exists(", &[], &[]))
            .starts_with("Invalid ConditionExpression: Syntax error; token: \"<EOF>\""));
        assert!(msg(eval("foo(pk)", &[], &[])).contains("Invalid function name; function: foo"));
        assert_eq!(
            msg(eval("attribute_exists(#x)", &[], &[])),
            "An expression attribute name used in the document path is not defined; attribute name: #x"
        );
        assert_eq!(
            msg(eval("n = :v", &[], &[])),
            "An expression attribute value used in expression is not defined; attribute value: :v"
        );
        assert_eq!(
            msg(eval("attribute_exists(pk)", &[("#a", "x")], &[])),
            "Value provided in ExpressionAttributeNames unused in expressions: keys: {#a}"
        );
        assert!(msg(eval("attribute_exists(pk)", &[], &[(":a", n("1"))]))
            .contains("ExpressionAttributeValues unused"));
        assert!(msg(eval("pk", &[], &[])).contains("Syntax error"));
        assert!(parse_condition("  ", None, None).is_err());
    }

    /// Conditions travel in the replication log as JSON and are replayed after restarts: the
    /// stored form is pinned.
    #[test]
    fn the_logged_condition_format_is_pinned() {
        let values = HashMap::from([(":v".to_string(), n("3"))]);
        let names = HashMap::from([("#a".to_string(), "age".to_string())]);
        let c = parse_condition(
            "attribute_not_exists(pk) OR (NOT #a >= :v AND attribute_exists(x.y[2]))",
            Some(&names),
            Some(&values),
        )
        .unwrap();
        let golden = GOLDEN_CONDITION;
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&c).unwrap()).unwrap(),
            golden
        );
        let back: Condition = serde_json::from_str(golden).unwrap();
        assert_eq!(back, c);
    }

    const GOLDEN_CONDITION: &str = r#"{"Or":[{"NotExists":[{"Name":"pk"}]},{"And":[{"Not":{"Compare":[{"Path":[{"Name":"age"}]},"Ge",{"Value":{"N":"3"}}]}},{"Exists":[{"Name":"x"},{"Name":"y"},{"Index":2}]}]}]}"#;

    /// A long AND chain (far past the 128 levels serde_json decodes) crosses the log as one level.
    #[test]
    fn long_and_or_chains_stay_flat() {
        let values = HashMap::from([(":v".to_string(), n("1"))]);
        // 149 comparisons, 148 ANDs, one OR, one more comparison: 299 operators.
        let terms: Vec<String> = (0..149).map(|i| format!("a{i} = :v")).collect();
        let expr = format!("{} OR b = :v", terms.join(" AND "));
        let c = parse_condition(&expr, None, Some(&values)).unwrap();
        let Condition::Or(ref alternatives) = c else {
            panic!("{c:?}");
        };
        assert!(matches!(&alternatives[0], Condition::And(t) if t.len() == 149));
        let json = serde_json::to_vec(&c).unwrap();
        let back: Condition = serde_json::from_slice(&json).expect("decodes within serde's depth");
        assert_eq!(back, c);
    }

    /// Inputs that once overflowed the router's stack answer ValidationException.
    #[test]
    fn no_expression_exhausts_the_stack() {
        let nots = format!("{}attribute_exists(id)", "NOT ".repeat(20_000));
        let e = parse_condition(&nots, None, None).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::Validation);
        assert!(
            e.message.contains("Expression size has exceeded"),
            "{}",
            e.message
        );
        // Within the size limit, as deep as the limit allows.
        for (open, close) in [("(", ")"), ("NOT (", ")"), ("NOT ", "")] {
            let depth = MAX_EXPRESSION_BYTES / (open.len() + close.len()) - 20;
            let expr = format!(
                "{}attribute_exists(id){}",
                open.repeat(depth),
                close.repeat(depth)
            );
            assert!(expr.len() <= MAX_EXPRESSION_BYTES);
            let e = parse_condition(&expr, None, None).unwrap_err();
            assert!(e.message.contains("nested too deeply"), "{}", e.message);
        }
        // A realistic nesting still parses.
        let ok = format!("{}attribute_exists(id){}", "(".repeat(50), ")".repeat(50));
        assert!(parse_condition(&ok, None, None).is_ok());
        let long = "a".repeat(MAX_EXPRESSION_BYTES + 1);
        assert!(parse_projection(&long, None).is_err());
    }
}
