//! Differential tests of Tern's condition evaluator and update semantics against an independent
//! reference model written from DynamoDB's documentation (not from Tern's code):
//!
//! - Developer Guide, "Condition and filter expressions, operators, and functions"
//!   (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.OperatorsAndFunctions.html>):
//!   the grammar, the comparators, `BETWEEN`, `IN`, the functions `attribute_exists`,
//!   `attribute_not_exists`, `attribute_type`, `begins_with`, `contains`, `size`, and the
//!   precedence `NOT` > `AND` > `OR`;
//! - Developer Guide, "Using update expressions"
//!   (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.UpdateExpressions.html>):
//!   `SET` (plain, `+`/`-`, `if_not_exists`, `list_append`, list indexes past the end append in
//!   index order), `REMOVE` (attributes and list elements, indexes of the list as it was, missing
//!   attributes are a no-op), `ADD` (numbers, sets), `DELETE` (sets); every action reads the item as
//!   it was before the update;
//! - API Reference, `Condition` (`ComparisonOperator`: typed comparisons, `{"S":"6"}` ≠
//!   `{"N":"6"}`, ordering only on String, Number, Binary, numbers compared numerically, binary as
//!   unsigned bytes, `CONTAINS` on lists and on binary subsequences, `BEGINS_WITH` only on String or
//!   Binary) and `AttributeValueUpdate` (`ADD` to a missing attribute sets it, sets must have the
//!   same element type, `DELETE` subtracts sets);
//! - Developer Guide, "Supported data types" (sets are unordered, hold unique values, cannot be
//!   empty).
//!
//! The model has its own value type (`V`: numbers as exact tenths, sets as ordered sets so that
//! equality ignores order), its own path resolution, comparison, condition evaluation (three-valued:
//! where the documentation leaves a case open the model says "unspecified" and the case is not
//! compared) and its own update application. Values reach Tern as DynamoDB JSON (`parse_item`,
//! `parse_value`, numbers written in varied but equal forms, set members in varied order) and come
//! back through `item_to_json`.
//!
//! The default case counts (1500 per property) keep the file within ~10 s in a debug build. A
//! long run:
//!
//! ```sh
//! PROPTEST_CASES=20000 cargo test -p tern-model --release --test reference
//! ```
//!
//! (`PROPTEST_CASES` replaces every property's case count.) Inputs on which Tern and the model
//! disagreed are pinned as named `#[test]`s at the end of the file (all three fixed in Tern: `<>`
//! with a missing attribute, `contains(a, a)`, SETs past a list's end out of index order). The
//! properties are strict; `REFERENCE_LENIENT=1` accepts Tern's old behaviour on those, and
//! `REFERENCE_STATS=1` prints what they compared (with `-- --nocapture`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use tern_model::{item_to_json, parse_condition, parse_item, parse_update, parse_value};

// ---------------------------------------------------------------------------------------------
// Harness

/// `cases` unless `PROPTEST_CASES` says otherwise. Failures are not persisted: a failing input
/// becomes a named regression test.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        // A fixed seed unless PROPTEST_RNG_SEED names another: the same cases on every CI run.
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(20261129),
        ),
        ..ProptestConfig::default()
    }
}

/// Outcome counters, printed with `REFERENCE_STATS=1` (to see what the properties compare).
static STATS: std::sync::Mutex<BTreeMap<&'static str, u64>> =
    std::sync::Mutex::new(BTreeMap::new());

fn count(what: &'static str) {
    *STATS.lock().expect("stats").entry(what).or_default() += 1;
}

fn print_stats(prefix: &str) {
    if std::env::var("REFERENCE_STATS").is_ok_and(|v| v == "1") {
        let stats = STATS.lock().expect("stats");
        for (what, n) in stats.iter().filter(|(k, _)| k.starts_with(prefix)) {
            eprintln!("{what}: {n}");
        }
    }
}

/// A small deterministic generator for choices that do not change a value's meaning (how a number
/// is written, the order of set members, keyword case, whether a name goes through `#n`).
/// `Rng::plain()` always picks the first choice: literal names, upper-case keywords, numbers in
/// canonical form, set members in order (for readable regression tests).
struct Rng(Option<u64>);

impl Rng {
    fn plain() -> Rng {
        Rng(None)
    }

    fn seeded(seed: u64) -> Rng {
        Rng(Some(seed))
    }

    fn pick(&mut self, n: u64) -> u64 {
        match &mut self.0 {
            None => 0,
            Some(s) => {
                *s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (*s >> 33) % n
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model values

/// A DynamoDB value as the model sees it. Numbers are exact tenths (the generators stay within
/// ±50.0 with one decimal digit); sets are ordered sets, so equality ignores member order, and
/// numbers compare by value however they were written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum V {
    S(String),
    N(i64),
    B(Vec<u8>),
    Bool(bool),
    Null,
    SS(BTreeSet<String>),
    NS(BTreeSet<i64>),
    BS(BTreeSet<Vec<u8>>),
    L(Vec<V>),
    M(BTreeMap<String, V>),
}

type MItem = BTreeMap<String, V>;

/// The data type descriptors `attribute_type` accepts.
const TYPES: &[&str] = &["S", "SS", "N", "NS", "B", "BS", "BOOL", "NULL", "L", "M"];

impl V {
    fn type_name(&self) -> &'static str {
        match self {
            V::S(_) => "S",
            V::N(_) => "N",
            V::B(_) => "B",
            V::Bool(_) => "BOOL",
            V::Null => "NULL",
            V::SS(_) => "SS",
            V::NS(_) => "NS",
            V::BS(_) => "BS",
            V::L(_) => "L",
            V::M(_) => "M",
        }
    }

    /// String, Number or Binary: the types ordering comparisons, `BETWEEN` and `IN` take.
    fn is_scalar(&self) -> bool {
        matches!(self, V::S(_) | V::N(_) | V::B(_))
    }

    fn is_set(&self) -> bool {
        matches!(self, V::SS(_) | V::NS(_) | V::BS(_))
    }
}

/// Order of two values of the same String, Number or Binary type: strings by their UTF-8 bytes,
/// numbers numerically, binary as unsigned bytes. `None` for any other pair ("does not compare").
fn order(a: &V, b: &V) -> Option<Ordering> {
    match (a, b) {
        (V::S(x), V::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (V::N(x), V::N(y)) => Some(x.cmp(y)),
        (V::B(x), V::B(y)) => Some(x.as_slice().cmp(y.as_slice())),
        _ => None,
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A number of tenths, written in one of several equal forms.
fn num_text(t: i64, rng: &mut Rng) -> String {
    let sign = if t < 0 { "-" } else { "" };
    let a = t.unsigned_abs();
    let (int, frac) = (a / 10, a % 10);
    match rng.pick(6) {
        0 | 1 if frac == 0 => format!("{sign}{int}"),
        0 | 1 => format!("{sign}{int}.{frac}"),
        2 => format!("{sign}{int}.{frac}0"),
        3 => format!("{t}e-1"),
        4 => format!("{}0{int}.{frac}", if t < 0 { "-" } else { "+" }),
        _ => format!("{sign}{}.{:02}E1", a / 100, a % 100),
    }
}

fn shuffled<T>(mut v: Vec<T>, rng: &mut Rng) -> Vec<T> {
    if rng.0.is_none() {
        return v;
    }
    for i in (1..v.len()).rev() {
        let j = rng.pick(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// DynamoDB JSON of a model value.
fn to_json(v: &V, rng: &mut Rng) -> Value {
    match v {
        V::S(s) => json!({ "S": s }),
        V::N(t) => json!({ "N": num_text(*t, rng) }),
        V::B(b) => json!({ "B": b64(b) }),
        V::Bool(b) => json!({ "BOOL": b }),
        V::Null => json!({ "NULL": true }),
        V::SS(s) => json!({ "SS": shuffled(s.iter().cloned().collect(), rng) }),
        V::NS(s) => {
            let members: Vec<String> = s.iter().map(|t| num_text(*t, rng)).collect();
            json!({ "NS": shuffled(members, rng) })
        }
        V::BS(s) => json!({ "BS": shuffled(s.iter().map(|b| b64(b)).collect(), rng) }),
        V::L(l) => json!({ "L": l.iter().map(|x| to_json(x, rng)).collect::<Vec<_>>() }),
        V::M(m) => json!({ "M": item_json(m, rng) }),
    }
}

fn item_json(m: &MItem, rng: &mut Rng) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, x)| (k.clone(), to_json(x, rng)))
            .collect(),
    )
}

/// Exact tenths of a decimal literal (sign, digits, optional fraction and exponent).
fn tenths(s: &str) -> Result<i64, String> {
    let bad = || format!("not a number of tenths in range: {s:?}");
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mant, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let digits = format!("{int}{frac}");
    if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut value: i128 = digits.parse().map_err(|_| bad())?;
    // value × 10^(exp − |frac|) is the number; tenths are that × 10.
    let scale = exp - frac.len() as i32 + 1;
    if scale >= 0 {
        for _ in 0..scale {
            value = value.checked_mul(10).ok_or_else(bad)?;
        }
    } else {
        for _ in 0..-scale {
            if value % 10 != 0 {
                return Err(bad());
            }
            value /= 10;
        }
    }
    let value = i64::try_from(value).map_err(|_| bad())?;
    Ok(if neg { -value } else { value })
}

/// A model value from DynamoDB JSON (Tern's output).
fn from_json(v: &Value) -> Result<V, String> {
    let obj = v
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or(format!("not a value: {v}"))?;
    let (tag, body) = obj.iter().next().expect("one entry");
    let strs = |b: &Value| -> Result<Vec<String>, String> {
        b.as_array()
            .ok_or(format!("not an array: {b}"))?
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or(format!("not a string: {x}"))
            })
            .collect()
    };
    let bin = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("{e}: {s}"))
    };
    let s = |b: &Value| {
        b.as_str()
            .map(String::from)
            .ok_or(format!("not a string: {b}"))
    };
    Ok(match tag.as_str() {
        "S" => V::S(s(body)?),
        "N" => V::N(tenths(&s(body)?)?),
        "B" => V::B(bin(&s(body)?)?),
        "BOOL" => V::Bool(body.as_bool().ok_or(format!("not a bool: {body}"))?),
        "NULL" => V::Null,
        "SS" => V::SS(strs(body)?.into_iter().collect()),
        "NS" => V::NS(
            strs(body)?
                .iter()
                .map(|x| tenths(x))
                .collect::<Result<_, _>>()?,
        ),
        "BS" => V::BS(
            strs(body)?
                .iter()
                .map(|x| bin(x))
                .collect::<Result<_, _>>()?,
        ),
        "L" => V::L(
            body.as_array()
                .ok_or(format!("not a list: {body}"))?
                .iter()
                .map(from_json)
                .collect::<Result<_, _>>()?,
        ),
        "M" => V::M(item_from_json(body)?),
        _ => return Err(format!("unknown type {tag}")),
    })
}

fn item_from_json(v: &Value) -> Result<MItem, String> {
    v.as_object()
        .ok_or(format!("not a map: {v}"))?
        .iter()
        .map(|(k, x)| Ok((k.clone(), from_json(x)?)))
        .collect()
}

fn tern_item(m: &MItem, rng: &mut Rng) -> tern_model::Item {
    let j = item_json(m, rng);
    parse_item(&j).unwrap_or_else(|e| panic!("Tern rejects a generated item {j}: {e}"))
}

fn model_item(item: &tern_model::Item) -> Result<MItem, String> {
    let bytes = item_to_json(item);
    let j: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    item_from_json(&j)
}

// ---------------------------------------------------------------------------------------------
// Paths

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum El {
    K(String),
    I(usize),
}

type P = Vec<El>;

/// `m.x[1]` → [K m, K x, I 1] (the test's own notation for its fixed path pool).
fn path(s: &str) -> P {
    let mut out = Vec::new();
    for part in s.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        out.push(El::K(name.to_string()));
        while !rest.is_empty() {
            let (idx, r) = rest.split_once(']').expect("closing bracket");
            out.push(El::I(idx.parse().expect("index")));
            rest = r.strip_prefix('[').unwrap_or(r);
        }
    }
    out
}

fn resolve<'a>(item: &'a MItem, p: &[El]) -> Option<&'a V> {
    let (first, rest) = p.split_first()?;
    let El::K(name) = first else { return None };
    let mut cur = item.get(name)?;
    for el in rest {
        cur = match (el, cur) {
            (El::K(k), V::M(m)) => m.get(k)?,
            (El::I(i), V::L(l)) => l.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn resolve_mut<'a>(item: &'a mut MItem, p: &[El]) -> Option<&'a mut V> {
    let (first, rest) = p.split_first()?;
    let El::K(name) = first else { return None };
    let mut cur = item.get_mut(name)?;
    for el in rest {
        cur = match (el, cur) {
            (El::K(k), V::M(m)) => m.get_mut(k)?,
            (El::I(i), V::L(l)) => l.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// One path is the other or lies inside it.
fn overlap(a: &[El], b: &[El]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

// ---------------------------------------------------------------------------------------------
// Rendering expressions

type Names = HashMap<String, String>;
type Values = HashMap<String, tern_model::AttributeValue>;

/// Builds the expression text and its substitution maps.
struct Render {
    rng: Rng,
    /// attribute name → `#n` placeholder
    name_of: BTreeMap<String, String>,
    names: Names,
    values: Values,
    /// what each placeholder stands for, for failure messages
    shown: BTreeMap<String, Value>,
}

impl Render {
    fn new(rng: Rng) -> Render {
        Render {
            rng,
            name_of: BTreeMap::new(),
            names: HashMap::new(),
            values: HashMap::new(),
            shown: BTreeMap::new(),
        }
    }

    fn path(&mut self, p: &[El]) -> String {
        let mut out = String::new();
        for (i, el) in p.iter().enumerate() {
            match el {
                El::K(k) => {
                    if i > 0 {
                        out.push('.');
                    }
                    if self.rng.pick(3) == 1 {
                        let n = self.name_of.len();
                        let ph = self
                            .name_of
                            .entry(k.clone())
                            .or_insert_with(|| format!("#n{n}"))
                            .clone();
                        self.names.insert(ph.clone(), k.clone());
                        out.push_str(&ph);
                    } else {
                        out.push_str(k);
                    }
                }
                El::I(n) => out.push_str(&format!("[{n}]")),
            }
        }
        out
    }

    fn value(&mut self, v: &V) -> String {
        let ph = format!(":v{}", self.values.len());
        let j = to_json(v, &mut self.rng);
        let tv =
            parse_value(&j).unwrap_or_else(|e| panic!("Tern rejects a generated value {j}: {e}"));
        self.values.insert(ph.clone(), tv);
        self.shown.insert(ph.clone(), j);
        ph
    }

    /// A keyword in upper, lower or mixed case.
    fn kw(&mut self, k: &str) -> String {
        match self.rng.pick(4) {
            1 => k.to_ascii_lowercase(),
            2 => {
                let mut c = k.chars();
                let first = c.next().expect("keyword");
                first.to_string() + &c.as_str().to_ascii_lowercase()
            }
            _ => k.to_string(),
        }
    }

    /// `f(args)` or `f (args)`.
    fn call(&mut self, f: &str, args: &[String]) -> String {
        let gap = if self.rng.pick(3) == 1 { " " } else { "" };
        format!("{f}{gap}({})", args.join(", "))
    }

    fn maps(&self) -> (Option<Names>, Option<Values>) {
        (
            (!self.names.is_empty()).then(|| self.names.clone()),
            (!self.values.is_empty()).then(|| self.values.clone()),
        )
    }

    fn describe(&self, text: &str) -> String {
        format!(
            "expression: {text}\nnames: {:?}\nvalues: {}",
            self.names.iter().collect::<BTreeMap<_, _>>(),
            serde_json::to_string(&self.shown).expect("json")
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Conditions: syntax and the model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn text(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "<>",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }

    fn ordering(self) -> bool {
        !matches!(self, Cmp::Eq | Cmp::Ne)
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            Cmp::Eq => o == Ordering::Equal,
            Cmp::Ne => o != Ordering::Equal,
            Cmp::Lt => o == Ordering::Less,
            Cmp::Le => o != Ordering::Greater,
            Cmp::Gt => o == Ordering::Greater,
            Cmp::Ge => o != Ordering::Less,
        }
    }
}

const CMPS: &[Cmp] = &[Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Opnd {
    Path(P),
    Val(V),
    Size(P),
}

#[derive(Debug, Clone)]
enum Cond {
    Cmp(Opnd, Cmp, Opnd),
    Between(Opnd, V, V),
    In(Opnd, Vec<Opnd>),
    Exists(P),
    NotExists(P),
    Type(P, V),
    BeginsWith(P, V),
    Contains(P, Opnd),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Paren(Box<Cond>),
}

fn render_opnd(r: &mut Render, o: &Opnd) -> String {
    match o {
        Opnd::Path(p) => r.path(p),
        Opnd::Val(v) => r.value(v),
        Opnd::Size(p) => {
            let a = r.path(p);
            r.call("size", &[a])
        }
    }
}

/// Renders with the fewest parentheses the documented precedence (NOT, then AND, then OR) needs,
/// plus the explicit `Paren` nodes.
fn render_cond(r: &mut Render, c: &Cond) -> String {
    match c {
        Cond::Cmp(a, op, b) => {
            let a = render_opnd(r, a);
            let b = render_opnd(r, b);
            format!("{a} {} {b}", op.text())
        }
        Cond::Between(a, lo, hi) => {
            let a = render_opnd(r, a);
            let (kb, ka) = (r.kw("BETWEEN"), r.kw("AND"));
            let lo = r.value(lo);
            let hi = r.value(hi);
            format!("{a} {kb} {lo} {ka} {hi}")
        }
        Cond::In(a, list) => {
            let a = render_opnd(r, a);
            let k = r.kw("IN");
            let items: Vec<String> = list.iter().map(|o| render_opnd(r, o)).collect();
            format!("{a} {k} ({})", items.join(", "))
        }
        Cond::Exists(p) => {
            let a = r.path(p);
            r.call("attribute_exists", &[a])
        }
        Cond::NotExists(p) => {
            let a = r.path(p);
            r.call("attribute_not_exists", &[a])
        }
        Cond::Type(p, t) => {
            let a = r.path(p);
            let b = r.value(t);
            r.call("attribute_type", &[a, b])
        }
        Cond::BeginsWith(p, v) => {
            let a = r.path(p);
            let b = r.value(v);
            r.call("begins_with", &[a, b])
        }
        Cond::Contains(p, o) => {
            let a = r.path(p);
            let b = render_opnd(r, o);
            r.call("contains", &[a, b])
        }
        Cond::And(a, b) => {
            let wrap = |r: &mut Render, c: &Cond| match c {
                Cond::Or(..) => format!("({})", render_cond(r, c)),
                _ => render_cond(r, c),
            };
            let a = wrap(r, a);
            let k = r.kw("AND");
            let b = wrap(r, b);
            format!("{a} {k} {b}")
        }
        Cond::Or(a, b) => {
            let a = render_cond(r, a);
            let k = r.kw("OR");
            let b = render_cond(r, b);
            format!("{a} {k} {b}")
        }
        Cond::Not(a) => {
            let k = r.kw("NOT");
            match **a {
                Cond::And(..) | Cond::Or(..) => format!("{k} ({})", render_cond(r, a)),
                _ => format!("{k} {}", render_cond(r, a)),
            }
        }
        Cond::Paren(a) => format!("({})", render_cond(r, a)),
    }
}

/// What the documentation says of an expression before any item is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Validity {
    Valid,
    /// The documentation leaves it open whether DynamoDB accepts it.
    Unsure(String),
    /// The documentation rules it out.
    Invalid(String),
}

fn merge(a: Validity, b: Validity) -> Validity {
    match (a, b) {
        (Validity::Invalid(m), _) | (_, Validity::Invalid(m)) => Validity::Invalid(m),
        (Validity::Unsure(m), _) | (_, Validity::Unsure(m)) => Validity::Unsure(m),
        _ => Validity::Valid,
    }
}

fn validity(c: &Cond, q: Quirks) -> Validity {
    use Validity::*;
    match c {
        Cond::Cmp(a, op, b) => {
            let mut v = Valid;
            if op.ordering() {
                // Ordering comparisons take String, Number or Binary (API Condition: LT, LE, GT,
                // GE "can contain only one AttributeValue element of type String, Number, or
                // Binary (not a set type)").
                for o in [a, b] {
                    if let Opnd::Val(x) = o {
                        if !x.is_scalar() {
                            v = merge(
                                v,
                                Invalid(format!("{} with a {} value", op.text(), x.type_name())),
                            );
                        }
                    }
                }
            }
            if matches!((a, b), (Opnd::Val(_), Opnd::Val(_))) {
                v = merge(v, Unsure("a comparison of two values".into()));
            }
            if a == b && !matches!(a, Opnd::Val(_)) {
                v = merge(v, Unsure("the same operand on both sides".into()));
            }
            v
        }
        Cond::Between(a, lo, hi) => {
            // API Condition: BETWEEN "must contain two AttributeValue elements of the same type,
            // either String, Number, or Binary (not a set type)".
            let mut v = if matches!(a, Opnd::Val(_)) {
                Unsure("BETWEEN on a value".into())
            } else {
                Valid
            };
            for x in [lo, hi] {
                if !x.is_scalar() {
                    v = merge(
                        v,
                        Invalid(format!("BETWEEN with a {} bound", x.type_name())),
                    );
                }
            }
            if lo.is_scalar() && hi.is_scalar() {
                match order(lo, hi) {
                    Some(Ordering::Greater) => {
                        v = merge(v, Invalid("BETWEEN with lower bound > upper bound".into()))
                    }
                    Some(_) => {}
                    None => v = merge(v, Unsure("BETWEEN bounds of different types".into())),
                }
            }
            v
        }
        Cond::In(a, list) => {
            let mut v = if matches!(a, Opnd::Val(_)) {
                Unsure("IN on a value".into())
            } else {
                Valid
            };
            for o in list {
                match o {
                    Opnd::Val(x) if !x.is_scalar() => {
                        // API Condition: IN values "of type String, Number, or Binary".
                        v = merge(v, Unsure(format!("IN with a {} value", x.type_name())))
                    }
                    _ if o == a => v = merge(v, Unsure("IN lists its own operand".into())),
                    _ => {}
                }
            }
            v
        }
        Cond::Exists(_) | Cond::NotExists(_) => Valid,
        Cond::Type(_, t) => match t {
            // "The type parameter must be one of the following: S, SS, N, NS, B, BS, BOOL, NULL,
            // L, M"; "You must use an expression attribute value for the type parameter".
            V::S(s) if TYPES.contains(&s.as_str()) => Valid,
            _ => Invalid(format!("attribute_type with type {t:?}")),
        },
        Cond::BeginsWith(_, v) => match v {
            // API Condition: BEGINS_WITH takes "String or Binary (not a Number or a set type)".
            V::S(_) | V::B(_) => Valid,
            _ => Invalid(format!("begins_with with a {} value", v.type_name())),
        },
        Cond::Contains(p, o) => match o {
            // "The path and the operand must be distinct; that is, contains (a, a) returns an
            // error."
            Opnd::Path(o) if o == p && !q.contains_same_ok => Invalid("contains(a, a)".into()),
            // API Condition: CONTAINS takes String, Number or Binary; "b" cannot be a set, a
            // map, or a list.
            Opnd::Val(x) if !x.is_scalar() => {
                Unsure(format!("contains with a {} value", x.type_name()))
            }
            _ => Valid,
        },
        Cond::And(a, b) | Cond::Or(a, b) => merge(validity(a, q), validity(b, q)),
        Cond::Not(a) | Cond::Paren(a) => validity(a, q),
    }
}

/// An operand's value in an item.
#[derive(Debug, Clone)]
enum Ov {
    /// No attribute at the path.
    Missing,
    /// `size` of a type the documentation gives no size for (N, BOOL, NULL), or of a string
    /// whose length in characters and in bytes differ: unspecified.
    Undef,
    Val(V),
}

fn size(v: &V) -> Ov {
    let n = |k: usize| Ov::Val(V::N(k as i64 * 10));
    match v {
        V::S(s) if s.is_ascii() => n(s.len()),
        V::B(b) => n(b.len()),
        V::SS(s) => n(s.len()),
        V::NS(s) => n(s.len()),
        V::BS(s) => n(s.len()),
        V::L(l) => n(l.len()),
        V::M(m) => n(m.len()),
        _ => Ov::Undef,
    }
}

fn operand(item: &MItem, o: &Opnd) -> Ov {
    match o {
        Opnd::Path(p) => resolve(item, p).map_or(Ov::Missing, |v| Ov::Val(v.clone())),
        Opnd::Val(v) => Ov::Val(v.clone()),
        Opnd::Size(p) => resolve(item, p).map_or(Ov::Missing, size),
    }
}

/// Disagreements Tern once had with the model, each pinned by a named test at the end of the file;
/// `REFERENCE_LENIENT=1` accepts them; the model proper is `Quirks::NONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quirks {
    /// Tern: `a <> b` is false when one operand is missing.
    ne_missing_false: bool,
    /// Tern accepts `contains(a, a)`.
    contains_same_ok: bool,
}

impl Quirks {
    const NONE: Quirks = Quirks {
        ne_missing_false: false,
        contains_same_ok: false,
    };
    const TERN: Quirks = Quirks {
        ne_missing_false: true,
        contains_same_ok: true,
    };
}

/// Strict by default: the disagreements once pinned here are fixed. `REFERENCE_LENIENT=1` accepts
/// Tern's old behaviour on them again (to look for new disagreements past a known one).
fn strict() -> bool {
    !std::env::var("REFERENCE_LENIENT").is_ok_and(|v| v == "1")
}

/// `a op b`: true if the values are of one type and compare so; a missing attribute equals
/// nothing (so `<>` holds); values of different types are not equal and do not order.
fn compare(a: &Ov, op: Cmp, b: &Ov, q: Quirks) -> Option<bool> {
    match (a, b) {
        (Ov::Undef, _) | (_, Ov::Undef) => None,
        // Two missing operands: the documentation does not say.
        (Ov::Missing, Ov::Missing) => None,
        (Ov::Missing, _) | (_, Ov::Missing) => Some(op == Cmp::Ne && !q.ne_missing_false),
        (Ov::Val(x), Ov::Val(y)) => Some(match op {
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
            _ => order(x, y).is_some_and(|o| op.holds(o)),
        }),
    }
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// The model's value of a condition on an item (`None`: the documentation does not determine it).
fn eval(item: &MItem, c: &Cond, q: Quirks) -> Option<bool> {
    match c {
        Cond::Cmp(a, op, b) => compare(&operand(item, a), *op, &operand(item, b), q),
        Cond::Between(a, lo, hi) => match operand(item, a) {
            Ov::Undef => None,
            Ov::Missing => Some(false),
            Ov::Val(x) => Some(
                order(&x, lo).is_some_and(|o| o != Ordering::Less)
                    && order(&x, hi).is_some_and(|o| o != Ordering::Greater),
            ),
        },
        Cond::In(a, list) => {
            let a = operand(item, a);
            list.iter()
                .map(|o| compare(&a, Cmp::Eq, &operand(item, o), q))
                .fold(Some(false), or3)
        }
        Cond::Exists(p) => Some(resolve(item, p).is_some()),
        Cond::NotExists(p) => Some(resolve(item, p).is_none()),
        Cond::Type(p, t) => {
            let V::S(t) = t else { return None };
            Some(resolve(item, p).is_some_and(|v| v.type_name() == t))
        }
        Cond::BeginsWith(p, prefix) => match (resolve(item, p), prefix) {
            // An empty prefix: not documented.
            (Some(V::S(_)), V::S(x)) if x.is_empty() => None,
            (Some(V::B(_)), V::B(x)) if x.is_empty() => None,
            (Some(V::S(s)), V::S(x)) => Some(s.starts_with(x.as_str())),
            (Some(V::B(b)), V::B(x)) => Some(b.starts_with(x)),
            _ => Some(false),
        },
        Cond::Contains(p, o) => {
            let Some(target) = resolve(item, p) else {
                return Some(false);
            };
            let x = match operand(item, o) {
                Ov::Missing => return Some(false),
                Ov::Undef => return None,
                Ov::Val(x) => x,
            };
            match (target, &x) {
                // An empty substring: not documented.
                (V::S(_), V::S(t)) if t.is_empty() => None,
                (V::B(_), V::B(t)) if t.is_empty() => None,
                (V::S(s), V::S(t)) => Some(s.contains(t.as_str())),
                (V::B(b), V::B(t)) => Some(b.windows(t.len()).any(|w| w == t.as_slice())),
                (V::SS(s), V::S(t)) => Some(s.contains(t)),
                (V::NS(s), V::N(t)) => Some(s.contains(t)),
                (V::BS(s), V::B(t)) => Some(s.contains(t)),
                (V::L(l), x) => Some(l.contains(x)),
                _ => Some(false),
            }
        }
        Cond::And(a, b) => and3(eval(item, a, q), eval(item, b, q)),
        Cond::Or(a, b) => or3(eval(item, a, q), eval(item, b, q)),
        Cond::Not(a) => eval(item, a, q).map(|b| !b),
        Cond::Paren(a) => eval(item, a, q),
    }
}

/// Parses the rendered condition with Tern and compares acceptance and evaluation (on the item
/// and on an absent item) with the model; `tolerate`: Tern's known disagreements pass.
fn check_condition(item: &MItem, c: &Cond, rng: Rng, tolerate: bool) -> Result<(), String> {
    let mut r = Render::new(rng);
    let text = render_cond(&mut r, c);
    let (names, values) = r.maps();
    let ti = tern_item(item, &mut r.rng);
    let context = || {
        format!(
            "{}\nitem: {}\nmodel syntax: {c:?}",
            r.describe(&text),
            item_json(item, &mut Rng::plain())
        )
    };
    let parsed = parse_condition(&text, names.as_ref(), values.as_ref());
    let valid = validity(c, Quirks::NONE);
    let cond = match (parsed, valid) {
        (Err(e), Validity::Valid) => {
            return Err(format!(
                "Tern rejects a valid condition: {e}\n{}",
                context()
            ))
        }
        (Err(_), v) => {
            count(match v {
                Validity::Invalid(_) => "cond: rejected, invalid",
                _ => "cond: rejected, unsure",
            });
            return Ok(());
        }
        (Ok(_), Validity::Invalid(why))
            if !tolerate || matches!(validity(c, Quirks::TERN), Validity::Invalid(_)) =>
        {
            return Err(format!(
                "Tern accepts an invalid condition ({why})\n{}",
                context()
            ))
        }
        (Ok(cond), Validity::Invalid(_)) => {
            count("cond: known disagreement tolerated (accepted)");
            cond
        }
        (Ok(cond), _) => cond,
    };
    let empty = MItem::new();
    for (model_item, tern_arg, which) in [
        (item, Some(&ti), "the item"),
        (&empty, None, "an absent item"),
    ] {
        let tern = cond.evaluate(tern_arg);
        let m = eval(model_item, c, Quirks::NONE);
        count(match (m, tern_arg.is_some()) {
            (None, _) => "cond: unspecified",
            (Some(true), true) => "cond: item, true",
            (Some(false), true) => "cond: item, false",
            (Some(true), false) => "cond: absent, true",
            (Some(false), false) => "cond: absent, false",
        });
        if let Some(model) = m {
            let known = tolerate && eval(model_item, c, Quirks::TERN).is_none_or(|m| m == tern);
            if tern != model && known {
                count("cond: known disagreement tolerated");
            }
            if tern != model && !known {
                return Err(format!(
                    "on {which}: Tern says {tern}, the model says {model}\n{}",
                    context()
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Updates: syntax and the model

#[derive(Debug, Clone)]
enum UOp {
    Path(P),
    Val(V),
    IfNotExists(P, V),
    ListAppend(Box<UOp>, Box<UOp>),
}

#[derive(Debug, Clone)]
enum SetVal {
    One(UOp),
    Plus(UOp, UOp),
    Minus(UOp, UOp),
}

#[derive(Debug, Clone)]
enum Act {
    Set(P, SetVal),
    Remove(P),
    Add(P, V),
    Delete(P, V),
}

impl Act {
    fn path(&self) -> &P {
        match self {
            Act::Set(p, _) | Act::Remove(p) | Act::Add(p, _) | Act::Delete(p, _) => p,
        }
    }

    fn clause(&self) -> usize {
        match self {
            Act::Set(..) => 0,
            Act::Remove(_) => 1,
            Act::Add(..) => 2,
            Act::Delete(..) => 3,
        }
    }
}

#[derive(Debug, Clone)]
struct Upd {
    acts: Vec<Act>,
    /// The order the clauses are written in (a permutation of SET, REMOVE, ADD, DELETE).
    clauses: Vec<usize>,
}

fn render_uop(r: &mut Render, o: &UOp) -> String {
    match o {
        UOp::Path(p) => r.path(p),
        UOp::Val(v) => r.value(v),
        UOp::IfNotExists(p, v) => {
            let a = r.path(p);
            let b = r.value(v);
            r.call("if_not_exists", &[a, b])
        }
        UOp::ListAppend(a, b) => {
            let a = render_uop(r, a);
            let b = render_uop(r, b);
            r.call("list_append", &[a, b])
        }
    }
}

fn render_update(r: &mut Render, u: &Upd) -> String {
    let mut clauses = Vec::new();
    for &k in &u.clauses {
        let acts: Vec<&Act> = u.acts.iter().filter(|a| a.clause() == k).collect();
        if acts.is_empty() {
            continue;
        }
        let kw = r.kw(["SET", "REMOVE", "ADD", "DELETE"][k]);
        let parts: Vec<String> = acts
            .iter()
            .map(|a| match a {
                Act::Set(p, v) => {
                    let p = r.path(p);
                    let v = match v {
                        SetVal::One(o) => render_uop(r, o),
                        SetVal::Plus(a, b) => {
                            format!("{} + {}", render_uop(r, a), render_uop(r, b))
                        }
                        SetVal::Minus(a, b) => {
                            format!("{} - {}", render_uop(r, a), render_uop(r, b))
                        }
                    };
                    format!("{p} = {v}")
                }
                Act::Remove(p) => r.path(p),
                Act::Add(p, v) | Act::Delete(p, v) => {
                    let p = r.path(p);
                    format!("{p} {}", r.value(v))
                }
            })
            .collect();
        clauses.push(format!("{kw} {}", parts.join(", ")));
    }
    clauses.join(" ")
}

/// The model's outcome of an update.
#[derive(Debug)]
enum Expect {
    /// The documentation does not settle the outcome (or, in tolerant runs, Tern's outcome is a
    /// known disagreement).
    Skip(&'static str),
    /// The update fails.
    Fail(String),
    /// The update gives this item; with `may_fail`, failing instead is also consistent with the
    /// documentation (an action the documentation describes for existing attributes only, met
    /// with a missing parent or one of the wrong type).
    Ok {
        item: MItem,
        may_fail: Option<String>,
    },
}

/// Where an action's path leads in the item as it was.
#[derive(Debug, Clone)]
enum Tgt {
    Top(String),
    Key(P, String),
    /// List, index, whether the index is within the list.
    Idx(P, usize, bool),
}

fn target(item: &MItem, p: &[El]) -> Result<Tgt, String> {
    let (last, parent) = p.split_last().expect("non-empty path");
    if parent.is_empty() {
        let El::K(k) = last else {
            unreachable!("paths start with a name")
        };
        return Ok(Tgt::Top(k.clone()));
    }
    match (resolve(item, parent), last) {
        (None, _) => Err(format!("the parent of {p:?} does not exist")),
        (Some(V::M(_)), El::K(k)) => Ok(Tgt::Key(parent.to_vec(), k.clone())),
        (Some(V::L(l)), El::I(i)) => Ok(Tgt::Idx(parent.to_vec(), *i, *i < l.len())),
        (Some(v), _) => Err(format!("the parent of {p:?} is a {}", v.type_name())),
    }
}

fn eval_uop(item: &MItem, o: &UOp) -> Result<V, String> {
    match o {
        UOp::Path(p) => resolve(item, p)
            .cloned()
            .ok_or(format!("operand {p:?} does not exist")),
        UOp::Val(v) => Ok(v.clone()),
        // "If the item does not contain an attribute at the specified path, if_not_exists
        // evaluates to value; otherwise, it evaluates to path."
        UOp::IfNotExists(p, v) => Ok(resolve(item, p).cloned().unwrap_or_else(|| v.clone())),
        // "The function takes two lists as input and appends all elements from list2 to list1."
        UOp::ListAppend(a, b) => match (eval_uop(item, a)?, eval_uop(item, b)?) {
            (V::L(mut x), V::L(y)) => {
                x.extend(y);
                Ok(V::L(x))
            }
            (x, y) => Err(format!(
                "list_append of {} and {}",
                x.type_name(),
                y.type_name()
            )),
        },
    }
}

fn eval_set(item: &MItem, v: &SetVal) -> Result<V, String> {
    let arith = |a: &UOp, b: &UOp, sign: i64| match (eval_uop(item, a)?, eval_uop(item, b)?) {
        (V::N(x), V::N(y)) => Ok(V::N(x + sign * y)),
        (x, y) => Err(format!(
            "arithmetic on {} and {}",
            x.type_name(),
            y.type_name()
        )),
    };
    match v {
        SetVal::One(o) => eval_uop(item, o),
        SetVal::Plus(a, b) => arith(a, b, 1),
        SetVal::Minus(a, b) => arith(a, b, -1),
    }
}

/// `ADD`: a number is added to a number, a set is added to a set of its type, a missing
/// attribute is set to the value.
fn add(cur: Option<&V>, v: &V) -> Result<V, String> {
    Ok(match (cur, v) {
        (None, v) => v.clone(),
        (Some(V::N(a)), V::N(b)) => V::N(a + b),
        (Some(V::SS(a)), V::SS(b)) => V::SS(a.union(b).cloned().collect()),
        (Some(V::NS(a)), V::NS(b)) => V::NS(a.union(b).cloned().collect()),
        (Some(V::BS(a)), V::BS(b)) => V::BS(a.union(b).cloned().collect()),
        (Some(c), v) => return Err(format!("ADD of a {} to a {}", v.type_name(), c.type_name())),
    })
}

/// `DELETE`: the members of `v` are subtracted from a set of the same type (`None`: the set
/// became empty, and sets cannot be empty).
fn subtract(cur: &V, v: &V) -> Result<Option<V>, String> {
    let r = match (cur, v) {
        (V::SS(a), V::SS(b)) => V::SS(a.difference(b).cloned().collect()),
        (V::NS(a), V::NS(b)) => V::NS(a.difference(b).cloned().collect()),
        (V::BS(a), V::BS(b)) => V::BS(a.difference(b).cloned().collect()),
        _ => {
            return Err(format!(
                "DELETE of a {} from a {}",
                v.type_name(),
                cur.type_name()
            ))
        }
    };
    let empty = match &r {
        V::SS(s) => s.is_empty(),
        V::NS(s) => s.is_empty(),
        V::BS(s) => s.is_empty(),
        _ => false,
    };
    Ok((!empty).then_some(r))
}

enum Place {
    Put(V),
    Del,
}

/// Tern's known disagreement: two `SET`s past the end of one list written with the larger index
/// first (Tern appends the first, and the second then replaces it).
fn appends_out_of_order(orig: &MItem, acts: &[Act]) -> bool {
    let mut last: BTreeMap<&[El], usize> = BTreeMap::new();
    for a in acts {
        let Act::Set(p, _) = a else { continue };
        let (Some(El::I(i)), parent) = (p.last(), &p[..p.len() - 1]) else {
            continue;
        };
        let Some(V::L(list)) = resolve(orig, parent) else {
            continue;
        };
        if *i >= list.len() {
            if last.get(parent).is_some_and(|prev| prev > i) {
                return true;
            }
            last.insert(parent, *i);
        }
    }
    false
}

fn model_update(orig: &MItem, acts: &[Act]) -> Expect {
    // List indexes: REMOVE shifts the elements after the removed one, and SET past the end
    // appends. How either combines with another action on an element of the same list is not
    // documented.
    for a in acts {
        let p = a.path();
        let (Some(El::I(_)), parent) = (p.last(), &p[..p.len() - 1]) else {
            continue;
        };
        let Some(V::L(list)) = resolve(orig, parent) else {
            continue;
        };
        for b in acts {
            let q = b.path();
            if std::ptr::eq(a, b) || q.len() <= parent.len() || !q.starts_with(parent) {
                continue;
            }
            if matches!(a, Act::Remove(_)) && !matches!(b, Act::Remove(_)) {
                return Expect::Skip(
                    "update: skipped, REMOVE of a list element with another action on the list",
                );
            }
            let appends = matches!(p.last(), Some(El::I(i)) if *i >= list.len());
            let beyond = matches!(q.get(parent.len()), Some(El::I(j)) if *j >= list.len());
            if matches!(a, Act::Set(..)) && appends && beyond && q.len() > parent.len() + 1 {
                return Expect::Skip("update: skipped, a path into an element SET appends");
            }
        }
    }

    let mut may_fail = None;
    let mut puts: Vec<(Tgt, Place)> = Vec::new();
    let mut removals: BTreeMap<P, BTreeSet<usize>> = BTreeMap::new();
    for a in acts {
        match a {
            Act::Set(p, v) => {
                // Every action reads the item as it was before the update.
                let v = match eval_set(orig, v) {
                    Ok(v) => v,
                    Err(e) => return Expect::Fail(e),
                };
                match target(orig, p) {
                    Ok(t) => puts.push((t, Place::Put(v))),
                    Err(e) => return Expect::Fail(e),
                }
            }
            Act::Remove(p) => match target(orig, p) {
                // "If the attributes don't exist, nothing happens."
                Err(e) => may_fail = Some(format!("REMOVE: {e}")),
                Ok(Tgt::Idx(list, i, true)) => {
                    removals.entry(list).or_default().insert(i);
                }
                Ok(Tgt::Idx(_, _, false)) => {}
                Ok(t) => puts.push((t, Place::Del)),
            },
            Act::Add(p, v) => {
                // "The ADD action supports only number and set data types."
                if !matches!(v, V::N(_)) && !v.is_set() {
                    return Expect::Fail(format!("ADD of a {}", v.type_name()));
                }
                let t = match target(orig, p) {
                    Ok(t) => t,
                    Err(e) => return Expect::Fail(e),
                };
                if matches!(t, Tgt::Idx(_, _, false)) {
                    return Expect::Skip("update: skipped, ADD past the end of a list");
                }
                match add(resolve(orig, p), v) {
                    Ok(n) => puts.push((t, Place::Put(n))),
                    Err(e) => return Expect::Fail(e),
                }
            }
            Act::Delete(p, v) => {
                // "The DELETE action supports only Set data types."
                if !v.is_set() {
                    return Expect::Fail(format!("DELETE of a {}", v.type_name()));
                }
                let t = match target(orig, p) {
                    Ok(t) => t,
                    Err(e) => {
                        may_fail = Some(format!("DELETE: {e}"));
                        continue;
                    }
                };
                let Some(cur) = resolve(orig, p) else {
                    continue;
                };
                match subtract(cur, v) {
                    Ok(Some(n)) => puts.push((t, Place::Put(n))),
                    Ok(None) if matches!(t, Tgt::Idx(..)) => {
                        return Expect::Skip("update: skipped, DELETE empties a list element")
                    }
                    Ok(None) => puts.push((t, Place::Del)),
                    Err(e) => return Expect::Fail(e),
                }
            }
        }
    }

    let mut w = orig.clone();
    let mut appends: BTreeMap<P, Vec<(usize, V)>> = BTreeMap::new();
    for (t, place) in puts {
        match (t, place) {
            (Tgt::Top(k), Place::Put(v)) => {
                w.insert(k, v);
            }
            (Tgt::Top(k), Place::Del) => {
                w.remove(&k);
            }
            (Tgt::Key(parent, k), place) => {
                let Some(V::M(m)) = resolve_mut(&mut w, &parent) else {
                    unreachable!("parents are not changed by other actions")
                };
                match place {
                    Place::Put(v) => m.insert(k, v),
                    Place::Del => m.remove(&k),
                };
            }
            (Tgt::Idx(parent, i, true), Place::Put(v)) => {
                let Some(V::L(l)) = resolve_mut(&mut w, &parent) else {
                    unreachable!("parents are not changed by other actions")
                };
                l[i] = v;
            }
            // "If the element doesn't already exist, SET appends the new element at the end of
            // the list. If you add multiple elements in a single SET operation, the elements are
            // sorted in order by element number."
            (Tgt::Idx(parent, i, false), Place::Put(v)) => {
                appends.entry(parent).or_default().push((i, v))
            }
            (Tgt::Idx(..), Place::Del) => unreachable!("list elements are removed below"),
        }
    }
    // "After Hammer and Nails are removed, the remaining elements are shifted": indexes name
    // elements of the list as it was.
    for (parent, idxs) in removals {
        let Some(V::L(l)) = resolve_mut(&mut w, &parent) else {
            unreachable!("parents are not changed by other actions")
        };
        for i in idxs.into_iter().rev() {
            l.remove(i);
        }
    }
    for (parent, mut items) in appends {
        let Some(V::L(l)) = resolve_mut(&mut w, &parent) else {
            unreachable!("parents are not changed by other actions")
        };
        items.sort_by_key(|(i, _)| *i);
        l.extend(items.into_iter().map(|(_, v)| v));
    }
    Expect::Ok { item: w, may_fail }
}

/// Parses and applies the rendered update with Tern and compares the outcome with the model's;
/// `tolerate`: Tern's known disagreements pass.
fn check_update(item: &MItem, u: &Upd, rng: Rng, tolerate: bool) -> Result<(), String> {
    let mut r = Render::new(rng);
    let text = render_update(&mut r, u);
    let (names, values) = r.maps();
    let mut ti = tern_item(item, &mut r.rng);
    let context = || {
        format!(
            "{}\nitem: {}\nmodel syntax: {:?}",
            r.describe(&text),
            item_json(item, &mut Rng::plain()),
            u.acts
        )
    };
    let tern: Result<MItem, String> =
        match parse_update(Some(&text), None, names.as_ref(), values.as_ref()) {
            Err(e) => Err(format!("parse: {e}")),
            Ok((None, _)) => return Err(format!("no update parsed\n{}", context())),
            Ok((Some(upd), _)) => match upd.apply(&mut ti) {
                Err(e) => Err(format!("apply: {e}")),
                Ok(()) => Ok(model_item(&ti)?),
            },
        };
    let expect = if tolerate && appends_out_of_order(item, &u.acts) {
        Expect::Skip("update: skipped, known: appends out of order")
    } else {
        model_update(item, &u.acts)
    };
    count(match (&expect, &tern) {
        (Expect::Skip(why), _) => why,
        (Expect::Fail(_), _) => "update: fails",
        (Expect::Ok { .. }, Err(_)) => "update: Tern fails, model may fail",
        (Expect::Ok { .. }, Ok(_)) => "update: items compared",
    });
    match (expect, tern) {
        (Expect::Skip(_), _) => Ok(()),
        (Expect::Fail(_), Err(_)) => Ok(()),
        (Expect::Fail(why), Ok(got)) => Err(format!(
            "Tern succeeds where the model fails ({why}); Tern gives {}\n{}",
            item_json(&got, &mut Rng::plain()),
            context()
        )),
        (
            Expect::Ok {
                may_fail: Some(_), ..
            },
            Err(_),
        ) => Ok(()),
        (Expect::Ok { item: want, .. }, Err(e)) => Err(format!(
            "Tern fails ({e}) where the model gives {}\n{}",
            item_json(&want, &mut Rng::plain()),
            context()
        )),
        (Expect::Ok { item: want, .. }, Ok(got)) if want == got => Ok(()),
        (Expect::Ok { item: want, .. }, Ok(got)) => Err(format!(
            "Tern gives {}\nthe model gives {}\n{}",
            item_json(&got, &mut Rng::plain()),
            item_json(&want, &mut Rng::plain()),
            context()
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies

fn string() -> impl Strategy<Value = String> + Clone {
    // ASCII, and a few code points whose UTF-8 and UTF-16 orders differ.
    select(
        &[
            "",
            "a",
            "ab",
            "abc",
            "b",
            "ba",
            "A",
            "é",
            "aé",
            "\u{ff41}",
            "\u{1f600}",
        ][..],
    )
    .prop_map(String::from)
}

/// Tenths in ±50.0, mostly small.
fn number() -> impl Strategy<Value = i64> + Clone {
    prop_oneof![3 => -30i64..=30, 1 => -500i64..=500]
}

fn binary() -> impl Strategy<Value = Vec<u8>> + Clone {
    vec(select(&[0u8, 1, 2, 0x7f, 0x80, 0xff][..]), 0..3)
}

fn scalar() -> impl Strategy<Value = V> + Clone {
    prop_oneof![
        3 => string().prop_map(V::S),
        3 => number().prop_map(V::N),
        2 => binary().prop_map(V::B),
        1 => any::<bool>().prop_map(V::Bool),
        1 => Just(V::Null),
    ]
}

fn set() -> impl Strategy<Value = V> + Clone {
    prop_oneof![
        btree_set(string(), 1..4).prop_map(V::SS),
        btree_set(number(), 1..4).prop_map(V::NS),
        btree_set(binary(), 1..4).prop_map(V::BS),
    ]
}

fn key() -> impl Strategy<Value = String> + Clone {
    select(&["x", "y", "z"][..]).prop_map(String::from)
}

/// Any value, documents nested up to two levels.
fn value() -> BoxedStrategy<V> {
    prop_oneof![4 => scalar(), 2 => set()]
        .prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(V::L),
                btree_map(key(), inner, 0..3).prop_map(V::M),
            ]
        })
        .boxed()
}

/// Items over `a`, `b`, `c` (any type), `n` (mostly a number), `l` (mostly a list), `m` (mostly
/// a map), `s` (mostly a set).
fn item() -> impl Strategy<Value = MItem> {
    let opt = |s: BoxedStrategy<V>| prop::option::weighted(0.8, s);
    (
        opt(value()),
        opt(value()),
        opt(value()),
        opt(prop_oneof![4 => number().prop_map(V::N), 1 => value()].boxed()),
        opt(prop_oneof![4 => vec(value(), 0..4).prop_map(V::L), 1 => value()].boxed()),
        opt(prop_oneof![4 => btree_map(key(), value(), 0..3).prop_map(V::M), 1 => value()].boxed()),
        opt(prop_oneof![4 => set(), 1 => value()].boxed()),
    )
        .prop_map(|(a, b, c, n, l, m, s)| {
            let mut item = MItem::new();
            for (k, v) in [
                ("a", a),
                ("b", b),
                ("c", c),
                ("n", n),
                ("l", l),
                ("m", m),
                ("s", s),
            ] {
                if let Some(v) = v {
                    item.insert(k.to_string(), v);
                }
            }
            item
        })
}

/// Every value in an item, nested ones and set members included.
fn subvalues(item: &MItem) -> Vec<V> {
    fn walk(v: &V, out: &mut Vec<V>) {
        out.push(v.clone());
        match v {
            V::L(l) => l.iter().for_each(|x| walk(x, out)),
            V::M(m) => m.values().for_each(|x| walk(x, out)),
            V::SS(s) => out.extend(s.iter().cloned().map(V::S)),
            V::NS(s) => out.extend(s.iter().cloned().map(V::N)),
            V::BS(s) => out.extend(s.iter().cloned().map(V::B)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    item.values().for_each(|v| walk(v, &mut out));
    out
}

/// An item and the values expressions draw from: the item's own values (so that equality and
/// membership hold often) and random ones.
fn item_and_pool() -> impl Strategy<Value = (MItem, Vec<V>)> {
    let item = prop_oneof![7 => item(), 1 => Just(MItem::new())];
    (item, vec(value(), 4..8)).prop_map(|(item, extra)| {
        let mut pool = subvalues(&item);
        pool.extend(extra);
        (item, pool)
    })
}

const COND_PATHS: &[&str] = &[
    "a", "b", "c", "n", "l", "m", "s", "m.x", "m.y", "m.x.y", "l[0]", "l[1]", "l[2]", "l[0][0]",
    "l[1].x", "zz",
];

fn cond_path() -> impl Strategy<Value = P> + Clone {
    select(COND_PATHS).prop_map(path)
}

fn condition(pool: Vec<V>) -> BoxedStrategy<Cond> {
    let v = select(pool.clone());
    // Mostly String, Number or Binary values where the documentation requires them, so that most
    // conditions are valid; the others test the rejections.
    let mut scalars: Vec<V> = pool.iter().filter(|x| x.is_scalar()).cloned().collect();
    scalars.extend([V::N(0), V::S("a".into()), V::B(vec![1])]);
    let sv = prop_oneof![6 => select(scalars.clone()), 1 => v.clone()];
    let mut prefixes: Vec<V> = scalars
        .into_iter()
        .filter(|x| !matches!(x, V::N(_)))
        .collect();
    prefixes.extend([V::S("ab".into()), V::B(vec![0x80])]);
    let lhs = prop_oneof![
        5 => cond_path().prop_map(Opnd::Path),
        2 => cond_path().prop_map(Opnd::Size),
        1 => sv.clone().prop_map(Opnd::Val),
    ];
    let rhs = prop_oneof![
        6 => sv.clone().prop_map(Opnd::Val),
        2 => v.clone().prop_map(Opnd::Val),
        2 => cond_path().prop_map(Opnd::Path),
        1 => cond_path().prop_map(Opnd::Size),
    ];
    let type_name = prop_oneof![
        12 => select(TYPES).prop_map(|t| V::S(t.to_string())),
        1 => select(&["s", "X", "", "STRING"][..]).prop_map(|t| V::S(t.to_string())),
        1 => v.clone(),
    ];
    // Bounds in order four times in five.
    let bounds = (sv.clone(), sv.clone(), 0..5u8).prop_map(|(lo, hi, k)| {
        if k > 0 && order(&lo, &hi) == Some(Ordering::Greater) {
            (hi, lo)
        } else {
            (lo, hi)
        }
    });
    let leaf = prop_oneof![
        5 => (lhs.clone(), select(CMPS), rhs.clone()).prop_map(|(a, op, b)| Cond::Cmp(a, op, b)),
        2 => (lhs.clone(), bounds).prop_map(|(a, (lo, hi))| Cond::Between(a, lo, hi)),
        2 => (lhs, vec(rhs, 1..4)).prop_map(|(a, l)| Cond::In(a, l)),
        1 => cond_path().prop_map(Cond::Exists),
        1 => cond_path().prop_map(Cond::NotExists),
        1 => (cond_path(), type_name).prop_map(|(p, t)| Cond::Type(p, t)),
        2 => (cond_path(), prop_oneof![6 => select(prefixes), 1 => v.clone()])
            .prop_map(|(p, x)| Cond::BeginsWith(p, x)),
        2 => (cond_path(), prop_oneof![
            4 => sv.prop_map(Opnd::Val),
            1 => v.prop_map(Opnd::Val),
            1 => cond_path().prop_map(Opnd::Path),
        ]).prop_map(|(p, o)| Cond::Contains(p, o)),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
            inner.clone().prop_map(|a| Cond::Not(Box::new(a))),
            inner.prop_map(|a| Cond::Paren(Box::new(a))),
        ]
    })
    .boxed()
}

const SET_TARGETS: &[&str] = &[
    "a", "b", "c", "n", "l", "m", "s", "zz", "m.x", "m.y", "m.w", "m.x.y", "l[0]", "l[1]", "l[2]",
    "l[3]", "l[5]", "l[0][0]", "l[1].x",
];
const NUMBER_PATHS: &[&str] = &["n", "a", "m.x", "l[0]", "zz"];
const LIST_PATHS: &[&str] = &["l", "a", "m.x", "l[0]", "zz"];
// Weighted by repetition towards numbers, sets and missing attributes.
const ADD_TARGETS: &[&str] = &[
    "a", "b", "c", "n", "n", "s", "s", "zz", "zz", "m.x", "m.y", "m.w", "m.w", "l[0]",
];
const DELETE_TARGETS: &[&str] = &["a", "b", "c", "n", "s", "s", "s", "zz", "m.x", "m.y"];

fn update(pool: Vec<V>) -> BoxedStrategy<Upd> {
    let v = select(pool.clone());
    // Sets, and sets made of the item's own set members (so that DELETE removes something).
    let mut members: Vec<V> = pool.iter().filter(|x| x.is_scalar()).cloned().collect();
    members.push(V::N(10));
    let sets = {
        // The first member's type, and the others of that type.
        let from_members = vec(select(members), 1..4).prop_map(|xs| match &xs[0] {
            V::S(_) => V::SS(
                xs.iter()
                    .filter_map(|x| {
                        if let V::S(s) = x {
                            Some(s.clone())
                        } else {
                            None
                        }
                    })
                    .collect(),
            ),
            V::N(_) => V::NS(
                xs.iter()
                    .filter_map(|x| if let V::N(n) = x { Some(*n) } else { None })
                    .collect(),
            ),
            _ => V::BS(
                xs.iter()
                    .filter_map(|x| {
                        if let V::B(b) = x {
                            Some(b.clone())
                        } else {
                            None
                        }
                    })
                    .collect(),
            ),
        });
        prop_oneof![set(), from_members].boxed()
    };
    let num_op = prop_oneof![
        2 => number().prop_map(|n| UOp::Val(V::N(n))),
        2 => select(NUMBER_PATHS).prop_map(|p| UOp::Path(path(p))),
        1 => (select(NUMBER_PATHS), number()).prop_map(|(p, n)| UOp::IfNotExists(path(p), V::N(n))),
        1 => cond_path().prop_map(UOp::Path),
        1 => v.clone().prop_map(UOp::Val),
    ];
    let list_op = prop_oneof![
        2 => vec(value(), 0..3).prop_map(|l| UOp::Val(V::L(l))),
        2 => select(LIST_PATHS).prop_map(|p| UOp::Path(path(p))),
        1 => (select(LIST_PATHS), vec(value(), 0..2))
            .prop_map(|(p, l)| UOp::IfNotExists(path(p), V::L(l))),
        1 => v.clone().prop_map(UOp::Val),
    ];
    let op = prop_oneof![
        4 => v.clone().prop_map(UOp::Val),
        2 => cond_path().prop_map(UOp::Path),
        2 => (cond_path(), v.clone()).prop_map(|(p, x)| UOp::IfNotExists(p, x)),
        2 => (list_op.clone(), list_op)
            .prop_map(|(a, b)| UOp::ListAppend(Box::new(a), Box::new(b))),
    ];
    let set_val = prop_oneof![
        4 => op.prop_map(SetVal::One),
        2 => (num_op.clone(), num_op.clone()).prop_map(|(a, b)| SetVal::Plus(a, b)),
        2 => (num_op.clone(), num_op).prop_map(|(a, b)| SetVal::Minus(a, b)),
    ];
    let add_val = prop_oneof![
        3 => number().prop_map(V::N),
        3 => sets.clone(),
        1 => v.clone(),
    ];
    let delete_val = prop_oneof![5 => sets, 1 => v];
    let act = prop_oneof![
        4 => (select(SET_TARGETS).prop_map(path), set_val).prop_map(|(p, v)| Act::Set(p, v)),
        2 => select(SET_TARGETS).prop_map(path).prop_map(Act::Remove),
        2 => (select(ADD_TARGETS).prop_map(path), add_val).prop_map(|(p, x)| Act::Add(p, x)),
        2 => (select(DELETE_TARGETS).prop_map(path), delete_val)
            .prop_map(|(p, x)| Act::Delete(p, x)),
    ];
    (vec(act, 1..4), Just(vec![0, 1, 2, 3]).prop_shuffle())
        .prop_map(|(acts, clauses)| {
            // No two actions on overlapping paths (DynamoDB rejects those).
            let mut kept: Vec<Act> = Vec::new();
            for a in acts {
                if kept.iter().all(|k| !overlap(k.path(), a.path())) {
                    kept.push(a);
                }
            }
            Upd {
                acts: kept,
                clauses,
            }
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Runs a property with `config(cases)`, prints its outcome counters (`REFERENCE_STATS=1`), and
/// fails with proptest's minimal input.
fn run<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), String>,
) {
    let mut runner = proptest::test_runner::TestRunner::new(config(cases));
    let result = runner.run(&strategy, |v| test(v).map_err(TestCaseError::fail));
    print_stats(name);
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Tern accepts a condition where the documentation does, rejects it where the documentation
/// does, and evaluates it as the model does, on the item and on an absent item.
#[test]
fn conditions_agree_with_the_model() {
    let strategy =
        item_and_pool().prop_flat_map(|(item, pool)| (Just(item), condition(pool), any::<u64>()));
    run("cond", 1500, strategy, |(item, c, seed)| {
        check_condition(&item, &c, Rng::seeded(seed), !strict())
    });
}

/// Tern's update gives the model's item, or fails where the model does.
#[test]
fn updates_agree_with_the_model() {
    let strategy =
        item_and_pool().prop_flat_map(|(item, pool)| (Just(item), update(pool), any::<u64>()));
    run("update", 1500, strategy, |(item, u, seed)| {
        check_update(&item, &u, Rng::seeded(seed), !strict())
    });
}

// ---------------------------------------------------------------------------------------------
// Checks of the model itself

#[test]
fn model_reads_numbers_exactly() {
    let mut rng = Rng::seeded(7);
    for t in -600..=600 {
        for _ in 0..6 {
            let s = num_text(t, &mut rng);
            assert_eq!(tenths(&s), Ok(t), "{s}");
        }
    }
    assert!(tenths("0.05").is_err());
}

#[test]
fn model_resolves_paths() {
    let item: MItem = [(
        "m".to_string(),
        V::M([("x".to_string(), V::L(vec![V::N(10), V::Null]))].into()),
    )]
    .into();
    assert_eq!(resolve(&item, &path("m.x[1]")), Some(&V::Null));
    assert_eq!(resolve(&item, &path("m.x[2]")), None);
    assert_eq!(resolve(&item, &path("m.y")), None);
    assert_eq!(resolve(&item, &path("m[0]")), None);
}

// ---------------------------------------------------------------------------------------------
// The documentation's own examples (the model must give them; so must Tern)

fn pv(s: &str) -> Opnd {
    Opnd::Path(path(s))
}

fn s(x: &str) -> V {
    V::S(x.to_string())
}

fn list(xs: &[&str]) -> V {
    V::L(xs.iter().map(|x| s(x)).collect())
}

fn ss(xs: &[&str]) -> V {
    V::SS(xs.iter().map(|x| x.to_string()).collect())
}

fn one(name: &str, v: V) -> MItem {
    [(name.to_string(), v)].into()
}

fn assert_condition(item: &MItem, c: Cond) {
    if let Err(e) = check_condition(item, &c, Rng::plain(), false) {
        panic!("{e}");
    }
}

fn assert_update(item: &MItem, acts: Vec<Act>) {
    let u = Upd {
        acts,
        clauses: vec![0, 1, 2, 3],
    };
    if let Err(e) = check_update(item, &u, Rng::plain(), false) {
        panic!("{e}");
    }
}

/// The model's item for an update that must succeed.
fn model_gives(item: &MItem, acts: &[Act]) -> MItem {
    match model_update(item, acts) {
        Expect::Ok {
            item,
            may_fail: None,
        } => item,
        other => panic!("{other:?}"),
    }
}

/// "REMOVE RelatedItems[1], RelatedItems[2]" on Chisel, Hammer, Nails, Screwdriver, Hacksaw:
/// "After Hammer and Nails are removed, the remaining elements are shifted."
#[test]
fn documented_remove_of_list_elements() {
    let item = one(
        "l",
        list(&["Chisel", "Hammer", "Nails", "Screwdriver", "Hacksaw"]),
    );
    let acts = vec![Act::Remove(path("l[1]")), Act::Remove(path("l[2]"))];
    assert_eq!(
        model_gives(&item, &acts),
        one("l", list(&["Chisel", "Screwdriver", "Hacksaw"]))
    );
    assert_update(&item, acts);
}

/// "SET #ri = list_append(#ri, :vals)" appends; with the operands swapped, prepends.
#[test]
fn documented_list_append() {
    let item = one("l", list(&["Hammer", "Nails"]));
    let append = |a: UOp, b: UOp| {
        vec![Act::Set(
            path("l"),
            SetVal::One(UOp::ListAppend(Box::new(a), Box::new(b))),
        )]
    };
    let end = append(
        UOp::Path(path("l")),
        UOp::Val(list(&["Screwdriver", "Hacksaw"])),
    );
    assert_eq!(
        model_gives(&item, &end),
        one("l", list(&["Hammer", "Nails", "Screwdriver", "Hacksaw"]))
    );
    assert_update(&item, end);
    let start = append(UOp::Val(list(&["Chisel"])), UOp::Path(path("l")));
    assert_eq!(
        model_gives(&item, &start),
        one("l", list(&["Chisel", "Hammer", "Nails"]))
    );
    assert_update(&item, start);
}

/// "ADD Color :c" on an item without Color sets it; again, adds to the set; "DELETE Color :p"
/// removes members; "SET Price = Price - :p" subtracts; "ADD QuantityOnHand :q" starts from
/// nothing.
#[test]
fn documented_add_delete_and_arithmetic() {
    let empty = MItem::new();
    let add = |v: V| vec![Act::Add(path("c"), v)];
    let first = add(ss(&["Orange", "Purple"]));
    assert_eq!(
        model_gives(&empty, &first),
        one("c", ss(&["Orange", "Purple"]))
    );
    assert_update(&empty, first);
    let item = one("c", ss(&["Orange", "Purple"]));
    let more = add(ss(&["Yellow", "Green", "Blue"]));
    let all = ss(&["Orange", "Purple", "Yellow", "Green", "Blue"]);
    assert_eq!(model_gives(&item, &more), one("c", all.clone()));
    assert_update(&item, more);
    let item = one("c", all);
    let delete = vec![Act::Delete(path("c"), ss(&["Yellow", "Purple"]))];
    assert_eq!(
        model_gives(&item, &delete),
        one("c", ss(&["Orange", "Green", "Blue"]))
    );
    assert_update(&item, delete);

    let price = one("p", V::N(520));
    let minus = vec![Act::Set(
        path("p"),
        SetVal::Minus(UOp::Path(path("p")), UOp::Val(V::N(150))),
    )];
    assert_eq!(model_gives(&price, &minus), one("p", V::N(370)));
    assert_update(&price, minus);
    let q = vec![Act::Add(path("q"), V::N(50))];
    assert_eq!(model_gives(&empty, &q), one("q", V::N(50)));
    assert_update(&empty, q);
}

/// "suppose that conditions a and b are true, and that condition c is false": `a OR b AND c` is
/// true, `(a OR b) AND c` is false.
#[test]
fn documented_precedence() {
    let item = one("a", s("x"));
    let t = || Cond::Exists(path("a"));
    let f = || Cond::NotExists(path("a"));
    let loose = Cond::Or(
        Box::new(t()),
        Box::new(Cond::And(Box::new(t()), Box::new(f()))),
    );
    assert_eq!(eval(&item, &loose, Quirks::NONE), Some(true));
    assert_condition(&item, loose);
    let tight = Cond::And(
        Box::new(Cond::Or(Box::new(t()), Box::new(t()))),
        Box::new(f()),
    );
    assert_eq!(eval(&item, &tight, Quirks::NONE), Some(false));
    assert_condition(&item, tight);
}

// ---------------------------------------------------------------------------------------------
// Disagreements with Tern: each fails until Tern changes (then drop its `Quirks` field or its
// tolerance in `check_update`)

/// `a <> :v0` (`:v0` = `{"S":"x"}`) on an item without `a`, and on an absent item: Tern says
/// false; the model says true. "a <> b — true if a is not equal to b" (Expressions.
/// OperatorsAndFunctions, Making comparisons): an attribute the item does not have is not equal
/// to "x". (Emulators checked against DynamoDB agree: moto's `OpNotEqual` is `lhs != rhs` with
/// a missing `lhs`; dynoxide#8, extenddb#5.)
#[test]
fn ne_with_a_missing_attribute_is_true() {
    assert_condition(
        &MItem::new(),
        Cond::Cmp(pv("a"), Cmp::Ne, Opnd::Val(s("x"))),
    );
}

/// `contains(a, a)`: Tern accepts it; the model rejects it. "The path and the operand must be
/// distinct; that is, contains (a, a) returns an error." (Expressions.OperatorsAndFunctions,
/// Functions, contains.)
#[test]
fn contains_of_a_path_and_itself_is_rejected() {
    assert_condition(&MItem::new(), Cond::Contains(path("a"), pv("a")));
}

/// `SET l[2] = :v0, l[1] = :v1` on `{"l": [1]}`: both indexes are past the end. Tern gives
/// `[1, "b"]` (it appends `:v0`, then overwrites it); the model gives `[1, "b", "a"]`. "If the
/// element doesn't already exist, SET appends the new element at the end of the list. If you add
/// multiple elements in a single SET operation, the elements are sorted in order by element
/// number." (Expressions.UpdateExpressions, Adding elements to a list.)
#[test]
fn set_past_the_end_appends_in_index_order() {
    let item = one("l", V::L(vec![V::N(10)]));
    let acts = vec![
        Act::Set(path("l[2]"), SetVal::One(UOp::Val(s("a")))),
        Act::Set(path("l[1]"), SetVal::One(UOp::Val(s("b")))),
    ];
    assert_eq!(
        model_gives(&item, &acts),
        one("l", V::L(vec![V::N(10), s("b"), s("a")]))
    );
    assert_update(&item, acts);
}
