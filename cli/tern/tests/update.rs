//! UpdateItem through the AWS SDK: every ReturnValues option, SET/REMOVE/ADD/DELETE, conditions,
//! DynamoDB's errors, the item size limit, the legacy AttributeUpdates, and concurrent counters
//! that come out exact with all three replicas identical.

mod common;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeAction, AttributeValue as V, AttributeValueUpdate, ReturnValue,
};
use aws_sdk_dynamodb::Client;
use common::*;

const TABLE: &str = "updates";

fn n(v: i64) -> V {
    V::N(v.to_string())
}

fn s(v: &str) -> V {
    V::S(v.into())
}

async fn item(c: &Client, pk: &str) -> Option<HashMap<String, V>> {
    c.get_item()
        .table_name(TABLE)
        .key("pk", s(pk))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_item_as_dynamodb_does_it() {
    let tc = start_cluster(&[]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, TABLE, None).await;
    let update = |pk: &str| c.update_item().table_name(TABLE).key("pk", s(pk));

    // Creates the item when absent; ALL_NEW returns it, key included.
    let out = update("a")
        .update_expression("SET #n = :v, l = :l, m = :m")
        .expression_attribute_names("#n", "name")
        .expression_attribute_values(":v", s("x"))
        .expression_attribute_values(":l", V::L(vec![s("p"), s("q"), s("r")]))
        .expression_attribute_values(":m", V::M(HashMap::from([("k".into(), n(1))])))
        .return_values(ReturnValue::AllNew)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes.unwrap();
    assert_eq!(attrs["pk"], s("a"));
    assert_eq!(attrs["name"], s("x"));

    // UPDATED_OLD and UPDATED_NEW: only what the update touched, nested paths in their shape.
    let out = update("a")
        .update_expression("SET m.k = m.k + :one, #n = :w")
        .expression_attribute_names("#n", "name")
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":w", s("y"))
        .return_values(ReturnValue::UpdatedOld)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes.unwrap();
    assert_eq!(attrs.len(), 2, "{attrs:?}");
    assert_eq!(attrs["name"], s("x"));
    assert_eq!(attrs["m"], V::M(HashMap::from([("k".into(), n(1))])));
    let out = update("a")
        .update_expression("REMOVE l[0], l[2] ADD cnt :five")
        .expression_attribute_values(":five", n(5))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes.unwrap();
    assert_eq!(attrs["cnt"], n(5));
    let now = item(&c, "a").await.unwrap();
    assert_eq!(now["l"], V::L(vec![s("q")]), "list indexes as they were");
    assert_eq!(now["m"], V::M(HashMap::from([("k".into(), n(2))])));
    // ALL_OLD; NONE returns nothing.
    let out = update("a")
        .update_expression("SET tags = :t")
        .expression_attribute_values(":t", V::Ss(vec!["a".into(), "b".into(), "c".into()]))
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .unwrap();
    assert_eq!(out.attributes.unwrap()["cnt"], n(5));
    let out = update("a")
        .update_expression("DELETE tags :b")
        .expression_attribute_values(":b", V::Ss(vec!["b".into()]))
        .send()
        .await
        .unwrap();
    assert!(out.attributes.is_none());
    let tags = item(&c, "a").await.unwrap()["tags"].clone();
    let V::Ss(mut tags) = tags else {
        panic!("{tags:?}")
    };
    tags.sort();
    assert_eq!(tags, vec!["a".to_string(), "c".to_string()]);

    // A condition that fails leaves the item as it was.
    let before = item(&c, "a").await;
    let e = update("a")
        .update_expression("SET cnt = :z")
        .condition_expression("cnt > :big")
        .expression_attribute_values(":z", n(0))
        .expression_attribute_values(":big", n(100))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ConditionalCheckFailedException");
    assert_eq!(item(&c, "a").await, before);
    // ReturnValuesOnConditionCheckFailure: the exception carries the item as it is.
    let e = c
        .put_item()
        .table_name(TABLE)
        .item("pk", s("a"))
        .condition_expression("attribute_not_exists(pk)")
        .return_values_on_condition_check_failure(
            aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
        )
        .send()
        .await
        .unwrap_err();
    let carried = e
        .as_service_error()
        .and_then(|se| match se {
            aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(x) => {
                x.item.clone()
            }
            _ => None,
        })
        .expect("the item comes with the exception");
    assert_eq!(Some(carried), before);
    let e = update("a")
        .update_expression("SET cnt = :z")
        .condition_expression("attribute_not_exists(pk)")
        .expression_attribute_values(":z", n(0))
        .return_values_on_condition_check_failure(
            aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
        )
        .send()
        .await
        .unwrap_err();
    assert!(matches!(
        e.as_service_error(),
        Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(x)) if x.item.is_some()
    ));
    assert_eq!(
        item(&c, "a").await,
        before,
        "a failed condition writes nothing"
    );

    // Errors as DynamoDB gives them, none of them writing anything.
    type Case<'a> = (&'a str, Vec<(&'a str, V)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "SET pk = :v",
            vec![(":v", s("z"))],
            "Cannot update attribute pk. This attribute is part of the key",
        ),
        (
            "SET a = :v SET b = :v",
            vec![(":v", s("z"))],
            "The \"SET\" section can only be used once",
        ),
        (
            "SET a = :v, a.b = :v",
            vec![(":v", s("z"))],
            "Two document paths overlap",
        ),
        (
            "ADD l :one",
            vec![(":one", n(1))],
            "An operand in the update expression has an incorrect data type",
        ),
        (
            "SET name = :v",
            vec![(":v", s("z"))],
            "Attribute name is a reserved keyword; reserved keyword: name",
        ),
        (
            "SET nope.deeper = :v",
            vec![(":v", s("z"))],
            "The document path provided in the update expression is invalid for update",
        ),
        (
            "ADD x :v",
            vec![(":v", s("z"))],
            "Incorrect operand type for operator or function; operator: ADD",
        ),
        (
            "SET x = :v",
            vec![(":v", s("z")), (":w", s("z"))],
            "unused in expressions",
        ),
    ];
    for (expr, values, expected) in cases {
        let mut req = update("a").update_expression(expr);
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        let e = req.send().await.expect_err(expr);
        let (code, msg) = error_of(&e);
        assert_eq!(code, "ValidationException", "{expr}: {msg}");
        assert!(msg.contains(expected), "{expr}: {msg}");
    }
    assert_eq!(item(&c, "a").await, before);

    // An update that would take the item past 400 KB is refused and changes nothing.
    update("big")
        .update_expression("SET a = :v")
        .expression_attribute_values(":v", s(&"x".repeat(300 * 1024)))
        .send()
        .await
        .unwrap();
    let e = update("big")
        .update_expression("SET b = :v")
        .expression_attribute_values(":v", s(&"y".repeat(150 * 1024)))
        .send()
        .await
        .unwrap_err();
    let (code, msg) = error_of(&e);
    assert_eq!(code, "ValidationException");
    assert_eq!(
        msg,
        "Item size to update has exceeded the maximum allowed size"
    );
    assert!(!item(&c, "big").await.unwrap().contains_key("b"));

    // The legacy AttributeUpdates.
    update("legacy")
        .attribute_updates(
            "v",
            AttributeValueUpdate::builder()
                .value(s("put"))
                .action(AttributeAction::Put)
                .build(),
        )
        .attribute_updates(
            "n",
            AttributeValueUpdate::builder()
                .value(n(3))
                .action(AttributeAction::Add)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let it = item(&c, "legacy").await.unwrap();
    assert_eq!((it["v"].clone(), it["n"].clone()), (s("put"), n(3)));

    // ReturnConsumedCapacity counts the larger of the item before and after.
    let out = update("big")
        .update_expression("REMOVE a")
        .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
        .send()
        .await
        .unwrap();
    assert_eq!(out.consumed_capacity.unwrap().capacity_units, Some(301.0));

    // Concurrent counters: every increment counted once, and the replicas agree.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                c.update_item()
                    .table_name(TABLE)
                    .key("pk", s(&format!("counter-{}", i % 3)))
                    .update_expression("ADD hits :one SET lastw = :w")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":w", n(w))
                    .send()
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut total = 0;
    for k in 0..3 {
        let it = item(&c, &format!("counter-{k}")).await.unwrap();
        let V::N(h) = &it["hits"] else { panic!() };
        total += h.parse::<i64>().unwrap();
    }
    assert_eq!(total, 200, "8 writers × 25 increments");
    compare_replicas(&tc, TABLE).await;
}
