//! Conditions and updates in the log's protobuf form (`tern_proto::expr`): every tree reads back
//! as it was written, any depth a router can write decodes without recursion, and bytes nobody
//! wrote are refused with an error, never a panic or a stack overflow.

use std::collections::{BTreeMap, HashMap};

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use tern_model::{
    Action, AttributeValue as V, CmpOp, Condition, Number, Operand, PathElem, SetValue, Update,
};
use tern_proto::expr::{
    decode_condition, decode_update, encode_condition, encode_update, CondNode, CondOp,
    ConditionProgram, OperandKind, PathStep, SetNode, UpdateAction, UpdateProgram, MAX_DEPTH,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(20261129),
        ),
        ..ProptestConfig::default()
    }
}

/// Through bytes and back.
fn round_condition(c: &Condition) -> Condition {
    let bytes = encode_condition(c).encode_to_vec();
    decode_condition(&ConditionProgram::decode(bytes.as_slice()).expect("protobuf decodes"))
        .expect("a written condition decodes")
}

fn round_update(u: &Update) -> Update {
    let bytes = encode_update(u).encode_to_vec();
    decode_update(&UpdateProgram::decode(bytes.as_slice()).expect("protobuf decodes"))
        .expect("a written update decodes")
}

// ---------------------------------------------------------------------------------------------
// Strategies

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_.#:-]{0,8}"
}

fn path() -> impl Strategy<Value = Vec<PathElem>> {
    (
        name(),
        vec(
            prop_oneof![
                name().prop_map(PathElem::Name),
                (0usize..5000).prop_map(PathElem::Index)
            ],
            0..4,
        ),
    )
        .prop_map(|(first, rest)| {
            let mut p = vec![PathElem::Name(first)];
            p.extend(rest);
            p
        })
}

fn number() -> impl Strategy<Value = Number> {
    (any::<i64>(), 0u32..6).prop_map(|(n, scale)| {
        let s = if scale == 0 {
            n.to_string()
        } else {
            format!("{n}e-{scale}")
        };
        Number::parse(&s).expect("a number")
    })
}

fn scalar() -> impl Strategy<Value = V> {
    prop_oneof![
        ".{0,12}".prop_map(V::S),
        number().prop_map(V::N),
        vec(any::<u8>(), 1..12).prop_map(V::B),
        any::<bool>().prop_map(V::Bool),
        Just(V::Null),
        vec("[a-z]{1,4}", 1..4).prop_map(|mut v| {
            v.sort();
            v.dedup();
            V::SS(v)
        }),
    ]
}

fn value() -> impl Strategy<Value = V> {
    scalar().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(V::L),
            vec((name(), inner), 0..4)
                .prop_map(|kv| V::M(kv.into_iter().collect::<BTreeMap<_, _>>())),
        ]
    })
}

fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        path().prop_map(Operand::Path),
        value().prop_map(Operand::Value),
        path().prop_map(Operand::Size),
    ]
}

fn cmp() -> impl Strategy<Value = CmpOp> {
    prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Gt),
        Just(CmpOp::Ge),
    ]
}

fn condition() -> impl Strategy<Value = Condition> {
    let leaf = prop_oneof![
        path().prop_map(Condition::Exists),
        path().prop_map(Condition::NotExists),
        (operand(), cmp(), operand()).prop_map(|(a, op, b)| Condition::Compare(a, op, b)),
        (operand(), operand(), operand()).prop_map(|(x, lo, hi)| Condition::Between(x, lo, hi)),
        (operand(), vec(operand(), 1..5)).prop_map(|(x, l)| Condition::In(x, l)),
        (path(), "S|N|B|BOOL|NULL|M|L|SS|NS|BS").prop_map(|(p, t)| Condition::AttributeType(p, t)),
        (operand(), operand()).prop_map(|(a, b)| Condition::BeginsWith(a, b)),
        (operand(), operand()).prop_map(|(a, b)| Condition::Contains(a, b)),
    ];
    leaf.prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            inner.clone().prop_map(|c| Condition::Not(Box::new(c))),
            vec(inner.clone(), 2..5).prop_map(Condition::And),
            vec(inner, 2..5).prop_map(Condition::Or),
        ]
    })
}

fn set_value() -> impl Strategy<Value = SetValue> {
    operand()
        .prop_map(SetValue::Operand)
        .prop_recursive(4, 16, 2, |inner| {
            prop_oneof![
                (path(), inner.clone()).prop_map(|(p, v)| SetValue::IfNotExists(p, Box::new(v))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| SetValue::ListAppend(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| SetValue::Plus(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| SetValue::Minus(Box::new(a), Box::new(b))),
            ]
        })
}

fn update() -> impl Strategy<Value = Update> {
    vec(
        prop_oneof![
            (path(), set_value()).prop_map(|(p, v)| Action::Set(p, v)),
            path().prop_map(Action::Remove),
            (path(), value()).prop_map(|(p, v)| Action::Add(p, v)),
            (path(), value()).prop_map(|(p, v)| Action::Delete(p, v)),
        ],
        1..6,
    )
    .prop_map(|actions| Update { actions })
}

/// Programs nobody wrote: any operation, arity and operand shape.
fn cond_node() -> impl Strategy<Value = CondNode> {
    let step = || {
        (name(), proptest::option::of(any::<u64>()))
            .prop_map(|(name, index)| PathStep { name, index })
    };
    let wire_operand =
        (0i32..4, vec(step(), 0..3), vec(any::<u8>(), 0..8)).prop_map(|(kind, path, mut value)| {
            if kind == OperandKind::Value as i32 && value.first() == Some(&0) {
                value = br#"{"S":"x"}"#.to_vec();
            }
            tern_proto::expr::Operand { kind, path, value }
        });
    (
        0i32..12,
        0i32..7,
        vec(step(), 0..3),
        vec(wire_operand, 0..4),
        0u32..5,
        "S|N|zz",
    )
        .prop_map(|(op, cmp, path, operands, arity, type_name)| CondNode {
            op,
            cmp,
            path,
            operands,
            arity,
            type_name,
        })
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn conditions_read_back_as_written(c in condition()) {
        prop_assert_eq!(round_condition(&c), c);
    }

    #[test]
    fn updates_read_back_as_written(u in update()) {
        prop_assert_eq!(round_update(&u), u);
    }

    /// Whatever the nodes, decoding answers (no panic); what it accepts re-encodes to a program
    /// that decodes to the same condition.
    #[test]
    fn unwritten_programs_are_refused_or_consistent(nodes in vec(cond_node(), 0..12)) {
        let p = ConditionProgram { nodes };
        if let Ok(c) = decode_condition(&p) {
            prop_assert_eq!(round_condition(&c), c);
        }
    }

    #[test]
    fn unwritten_updates_are_refused_or_consistent(
        kinds in vec((0i32..5, 0i32..6, any::<bool>()), 0..6),
    ) {
        let actions = kinds
            .into_iter()
            .map(|(kind, set_op, with_operand)| UpdateAction {
                kind,
                path: vec![PathStep { name: "a".into(), index: None }],
                set: vec![SetNode {
                    op: set_op,
                    operand: with_operand.then(|| tern_proto::expr::Operand {
                        kind: 1,
                        path: vec![],
                        value: br#"{"N":"1"}"#.to_vec(),
                    }),
                    path: vec![PathStep { name: "b".into(), index: None }],
                }],
                value: br#"{"NS":["1"]}"#.to_vec(),
            })
            .collect();
        if let Ok(u) = decode_update(&UpdateProgram { actions }) {
            prop_assert_eq!(round_update(&u), u);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cases

fn v(s: &str) -> HashMap<String, V> {
    [(":v".to_string(), V::S(s.into()))].into()
}

/// A parsed expression's outcome is the same after the trip through the log form.
#[test]
fn parsed_expressions_evaluate_alike() {
    let values: HashMap<String, V> = [
        (":s".to_string(), V::S("abc".into())),
        (":n".to_string(), V::N(Number::parse("12.5").unwrap())),
        (":lo".to_string(), V::N(Number::parse("1").unwrap())),
        (":hi".to_string(), V::N(Number::parse("100").unwrap())),
        (":t".to_string(), V::S("SS".into())),
    ]
    .into();
    let names: HashMap<String, String> = [("#st".to_string(), "status".to_string())].into();
    let exprs = [
        "attribute_exists(a) AND a = :s",
        "NOT attribute_not_exists(m.things[1]) OR #st IN (:s, :n)",
        "n BETWEEN :lo AND :hi AND size(a) < :n",
        "begins_with(a, :s) OR contains(l, :n) OR attribute_type(a, :t)",
        "(a <> :s) AND (n >= :lo) AND (n <= :hi) AND (n > :lo) AND (n < :hi)",
    ];
    let item: BTreeMap<String, V> = [
        ("a".to_string(), V::S("abcdef".into())),
        ("n".to_string(), V::N(Number::parse("42").unwrap())),
        ("status".to_string(), V::S("abc".into())),
        (
            "l".to_string(),
            V::L(vec![V::N(Number::parse("12.5").unwrap())]),
        ),
    ]
    .into();
    for e in exprs {
        let used: HashMap<String, V> = values
            .iter()
            .filter(|(k, _)| e.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let used_names = e.contains("#st").then_some(&names);
        let c = tern_model::parse_condition(e, used_names, Some(&used)).unwrap();
        let back = round_condition(&c);
        assert_eq!(back, c, "{e}");
        assert_eq!(back.evaluate(Some(&item)), c.evaluate(Some(&item)), "{e}");
        assert_eq!(back.evaluate(None), c.evaluate(None), "{e}");
    }
    let mut update_values = v("q");
    update_values.insert(":one".into(), V::N(Number::parse("1").unwrap()));
    let (u, _) = tern_model::parse_update(
        Some("SET a = if_not_exists(a, :v), l = list_append(l, l), c = n + :one REMOVE x[2] ADD q :one"),
        None,
        None,
        Some(&update_values),
    )
    .unwrap();
    let u = u.unwrap();
    assert_eq!(round_update(&u), u);
    let mut item = item;
    let mut again = item.clone();
    u.apply(&mut item).unwrap();
    round_update(&u).apply(&mut again).unwrap();
    assert_eq!(item, again);
}

fn exists(n: usize) -> Condition {
    Condition::Exists(vec![PathElem::Name(format!("a{n}"))])
}

fn nots(depth: usize) -> Condition {
    let mut c = exists(0);
    for _ in 0..depth {
        c = Condition::Not(Box::new(c));
    }
    c
}

/// The log form is flat: a condition nested deeper than protobuf decoders allow (prost stops at
/// 100 levels) still decodes, up to `MAX_DEPTH`; deeper is refused, not a stack overflow.
#[test]
fn depth_is_bounded_by_the_decoder_not_the_protobuf() {
    let deep = nots(MAX_DEPTH - 1);
    assert_eq!(round_condition(&deep), deep);
    let program = encode_condition(&nots(MAX_DEPTH));
    let err = decode_condition(&program).unwrap_err();
    assert!(err.0.contains("deeper"), "{err}");
    // A chain of 300 ANDs, DynamoDB's operator limit, is one node.
    let chain = Condition::And((0..300).map(exists).collect());
    assert_eq!(round_condition(&chain), chain);
    // Dropping the deep trees built here must not overflow either (they are at most MAX_DEPTH).
    drop(deep);
}

#[test]
fn malformed_programs_are_refused() {
    let leaf = || CondNode {
        op: CondOp::Exists as i32,
        path: vec![PathStep {
            name: "a".into(),
            index: None,
        }],
        ..Default::default()
    };
    let cases: Vec<(&str, Vec<CondNode>)> = vec![
        ("no nodes", vec![]),
        ("left over", vec![leaf(), leaf()]),
        (
            "more terms",
            vec![
                leaf(),
                CondNode {
                    op: CondOp::And as i32,
                    arity: 3,
                    ..Default::default()
                },
            ],
        ),
        (
            "AND of 1",
            vec![
                leaf(),
                CondNode {
                    op: CondOp::And as i32,
                    arity: 1,
                    ..Default::default()
                },
            ],
        ),
        ("unknown condition", vec![CondNode { op: 99, ..leaf() }]),
        (
            "empty document path",
            vec![CondNode {
                path: vec![],
                ..leaf()
            }],
        ),
        (
            "takes 2 operands",
            vec![CondNode {
                op: CondOp::Compare as i32,
                operands: vec![],
                ..Default::default()
            }],
        ),
        (
            "value",
            vec![CondNode {
                op: CondOp::Compare as i32,
                operands: vec![
                    tern_proto::expr::Operand {
                        kind: OperandKind::Value as i32,
                        path: vec![],
                        value: b"not json".to_vec(),
                    };
                    2
                ],
                ..Default::default()
            }],
        ),
    ];
    for (why, nodes) in cases {
        let err = decode_condition(&ConditionProgram { nodes }).unwrap_err();
        assert!(
            err.0.to_lowercase().contains(&why.to_lowercase()),
            "expected '{why}', got '{err}'"
        );
    }
    assert!(decode_update(&UpdateProgram { actions: vec![] }).is_err());
}
