//! The older parameters applications still send, through the AWS SDK: Expected and
//! ConditionalOperator on writes, KeyConditions, QueryFilter, ScanFilter and AttributesToGet on
//! reads, and DynamoDB's errors when they are mixed with expressions.

mod common;

use aws_sdk_dynamodb::types::{
    AttributeValue as V, ComparisonOperator, Condition, ConditionalOperator,
    ExpectedAttributeValue, ScalarAttributeType,
};
use common::*;

const TABLE: &str = "legacy";

fn cond(op: ComparisonOperator, values: Vec<V>) -> Condition {
    Condition::builder()
        .comparison_operator(op)
        .set_attribute_value_list(Some(values))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_parameters_mean_what_their_expressions_mean() {
    let tc = start_cluster(&[]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, TABLE, Some(ScalarAttributeType::N)).await;
    for i in 0..10 {
        c.put_item()
            .table_name(TABLE)
            .item("pk", V::S("a".into()))
            .item("sk", V::N(i.to_string()))
            .item(
                "color",
                V::S(if i % 2 == 0 { "red" } else { "blue" }.into()),
            )
            .send()
            .await
            .unwrap();
    }

    // Expected: Exists false refuses an existing item; a Value must match.
    let e = c
        .put_item()
        .table_name(TABLE)
        .item("pk", V::S("a".into()))
        .item("sk", V::N("1".into()))
        .expected(
            "pk",
            ExpectedAttributeValue::builder().exists(false).build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ConditionalCheckFailedException");
    c.delete_item()
        .table_name(TABLE)
        .key("pk", V::S("a".into()))
        .key("sk", V::N("1".into()))
        .expected(
            "color",
            ExpectedAttributeValue::builder()
                .value(V::S("green".into()))
                .build(),
        )
        .expected(
            "sk",
            ExpectedAttributeValue::builder()
                .comparison_operator(ComparisonOperator::Lt)
                .attribute_value_list(V::N("5".into()))
                .build(),
        )
        .conditional_operator(ConditionalOperator::Or)
        .send()
        .await
        .expect("sk < 5 holds: OR lets the delete through");

    // KeyConditions, QueryFilter and AttributesToGet.
    let out = c
        .query()
        .table_name(TABLE)
        .consistent_read(true)
        .key_conditions("pk", cond(ComparisonOperator::Eq, vec![V::S("a".into())]))
        .key_conditions(
            "sk",
            cond(
                ComparisonOperator::Between,
                vec![V::N("2".into()), V::N("8".into())],
            ),
        )
        .query_filter(
            "color",
            cond(ComparisonOperator::Eq, vec![V::S("red".into())]),
        )
        .attributes_to_get("sk")
        .send()
        .await
        .unwrap();
    let sks: Vec<String> = out
        .items()
        .iter()
        .map(|it| match &it["sk"] {
            V::N(n) => n.clone(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(sks, vec!["2", "4", "6", "8"]);
    assert_eq!(out.scanned_count, 7);
    assert!(out.items().iter().all(|it| it.len() == 1));

    // ScanFilter.
    let out = c
        .scan()
        .table_name(TABLE)
        .consistent_read(true)
        .scan_filter(
            "color",
            cond(ComparisonOperator::Eq, vec![V::S("blue".into())]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.count, 4, "1 of the 5 blue items was deleted");

    // Mixed with expressions: refused.
    let e = c
        .put_item()
        .table_name(TABLE)
        .item("pk", V::S("b".into()))
        .item("sk", V::N("1".into()))
        .condition_expression("attribute_not_exists(pk)")
        .expected(
            "pk",
            ExpectedAttributeValue::builder().exists(false).build(),
        )
        .send()
        .await
        .unwrap_err();
    assert!(error_of(&e)
        .1
        .starts_with("Can not use both expression and non-expression parameters"));
    let e = c
        .query()
        .table_name(TABLE)
        .key_condition_expression("pk = :a")
        .expression_attribute_values(":a", V::S("a".into()))
        .key_conditions("pk", cond(ComparisonOperator::Eq, vec![V::S("a".into())]))
        .send()
        .await
        .unwrap_err();
    assert!(
        error_of(&e)
            .1
            .contains("Non-expression parameters: {KeyConditions}"),
        "{:?}",
        error_of(&e)
    );
}
