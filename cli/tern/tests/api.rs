//! The DynamoDB API through the real stack, driven by the AWS SDK for Rust.

mod common;

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue as V, ReturnValue, ScalarAttributeType};
use aws_sdk_dynamodb::Client;
use common::*;

fn s(v: &str) -> V {
    V::S(v.to_string())
}

fn n(v: &str) -> V {
    V::N(v.to_string())
}

fn key(pk: &str, sk: &str) -> HashMap<String, V> {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), n(sk))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_api_through_the_stack() {
    let tc = start_cluster(&[]).await;
    let c = client(&tc.cluster.endpoint());

    create_table(&c, "items", Some(ScalarAttributeType::N)).await;
    every_attribute_type_round_trips(&c).await;
    consumed_capacity(&c).await;
    conditional_writes_and_return_values(&c).await;
    delete_item(&c).await;
    validation_errors(&c).await;
    unknown_table(&c).await;
    table_lifecycle(&c).await;
    protocol_errors(&tc.cluster.endpoint()).await;
}

async fn every_attribute_type_round_trips(c: &Client) {
    let mut item = key("all-types", "1");
    item.insert("s".into(), s("héllo"));
    item.insert("n".into(), n("-12.50"));
    item.insert("b".into(), V::B(Blob::new(vec![0u8, 1, 2, 255])));
    item.insert("bool".into(), V::Bool(true));
    item.insert("null".into(), V::Null(true));
    item.insert(
        "m".into(),
        V::M(HashMap::from([
            ("inner".to_string(), s("x")),
            ("deep".to_string(), V::L(vec![n("1")])),
        ])),
    );
    item.insert("l".into(), V::L(vec![s("a"), n("2"), V::Bool(false)]));
    item.insert("ss".into(), V::Ss(vec!["a".into(), "b".into()]));
    item.insert("ns".into(), V::Ns(vec!["1".into(), "2.5".into()]));
    item.insert(
        "bs".into(),
        V::Bs(vec![Blob::new(vec![1u8]), Blob::new(vec![2u8])]),
    );
    c.put_item()
        .table_name("items")
        .set_item(Some(item))
        .send()
        .await
        .expect("put");

    for consistent in [true, false] {
        // An eventually consistent read may reach a replica that has not applied the write yet.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let got = loop {
            let got = c
                .get_item()
                .table_name("items")
                .set_key(Some(key("all-types", "1")))
                .consistent_read(consistent)
                .send()
                .await
                .expect("get");
            if got.item().is_some() || consistent || std::time::Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let got = got.item().expect("item present");
        assert_eq!(got["s"], s("héllo"));
        assert_eq!(got["n"], n("-12.5"), "numbers come back in canonical form");
        assert_eq!(got["b"], V::B(Blob::new(vec![0u8, 1, 2, 255])));
        assert_eq!(got["bool"], V::Bool(true));
        assert_eq!(got["null"], V::Null(true));
        let m = got["m"].as_m().unwrap();
        assert_eq!(m["inner"], s("x"));
        assert_eq!(m["deep"], V::L(vec![n("1")]));
        assert_eq!(got["l"], V::L(vec![s("a"), n("2"), V::Bool(false)]));
        let mut ss = got["ss"].as_ss().unwrap().clone();
        ss.sort();
        assert_eq!(ss, vec!["a", "b"]);
        let mut ns = got["ns"].as_ns().unwrap().clone();
        ns.sort();
        assert_eq!(ns, vec!["1", "2.5"]);
        assert_eq!(got["bs"].as_bs().unwrap().len(), 2);
    }
    let projected = c
        .get_item()
        .table_name("items")
        .set_key(Some(key("all-types", "1")))
        .projection_expression("#s, m.#i, l[1]")
        .expression_attribute_names("#i", "inner")
        .consistent_read(true)
        .expression_attribute_names("#s", "s")
        .send()
        .await
        .expect("projected get");
    let projected = projected.item().unwrap();
    assert_eq!(projected.len(), 3, "{projected:?}");
    assert_eq!(projected["s"], s("héllo"));
    assert_eq!(
        projected["m"],
        V::M(HashMap::from([("inner".to_string(), s("x"))]))
    );
    assert_eq!(projected["l"], V::L(vec![n("2")]));

    let missing = c
        .get_item()
        .table_name("items")
        .set_key(Some(key("nope", "1")))
        .send()
        .await
        .unwrap();
    assert!(missing.item().is_none(), "absent item gives no Item");
}

async fn consumed_capacity(c: &Client) {
    use aws_sdk_dynamodb::types::ReturnConsumedCapacity as Rcc;
    let mut item = key("cap", "1");
    item.insert("big".into(), s(&"x".repeat(1500)));
    let out = c
        .put_item()
        .table_name("items")
        .set_item(Some(item))
        .return_consumed_capacity(Rcc::Total)
        .send()
        .await
        .unwrap();
    let cc = out.consumed_capacity().expect("consumed capacity");
    assert_eq!(cc.table_name(), Some("items"));
    assert_eq!(cc.capacity_units(), Some(2.0), "1.5 KB is two write units");
    let get = |consistent| {
        c.get_item()
            .table_name("items")
            .set_key(Some(key("cap", "1")))
            .consistent_read(consistent)
            .return_consumed_capacity(Rcc::Total)
            .send()
    };
    assert_eq!(
        get(true)
            .await
            .unwrap()
            .consumed_capacity()
            .unwrap()
            .capacity_units(),
        Some(1.0)
    );
    assert_eq!(
        get(false)
            .await
            .unwrap()
            .consumed_capacity()
            .unwrap()
            .capacity_units(),
        Some(0.5)
    );
    let plain = c
        .get_item()
        .table_name("items")
        .set_key(Some(key("cap", "1")))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(plain.consumed_capacity().is_none(), "only when asked");
    assert!(plain.item().is_some());
}

async fn conditional_writes_and_return_values(c: &Client) {
    let mut item = key("cond", "1");
    item.insert("v".into(), n("1"));
    c.put_item()
        .table_name("items")
        .set_item(Some(item.clone()))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await
        .expect("first conditional put succeeds");
    item.insert("v".into(), n("2"));
    assert_api_error!(
        c.put_item()
            .table_name("items")
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(#p)")
            .expression_attribute_names("#p", "pk")
            .send()
            .await,
        "ConditionalCheckFailedException",
        "The conditional request failed"
    );
    let got = c
        .get_item()
        .table_name("items")
        .set_key(Some(key("cond", "1")))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.item().unwrap()["v"],
        n("1"),
        "a failed conditional put changes nothing"
    );

    let out = c
        .put_item()
        .table_name("items")
        .set_item(Some(item.clone()))
        .condition_expression("attribute_exists(pk)")
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .expect("put with attribute_exists");
    assert_eq!(
        out.attributes().unwrap()["v"],
        n("1"),
        "ALL_OLD returns the replaced item"
    );
    assert_api_error!(
        c.put_item()
            .table_name("items")
            .set_item(Some(item))
            .return_values(ReturnValue::AllNew)
            .send()
            .await,
        "ValidationException",
        "ReturnValues can only be ALL_OLD or NONE"
    );
}

async fn delete_item(c: &Client) {
    let mut item = key("del", "7");
    item.insert("v".into(), s("gone soon"));
    c.put_item()
        .table_name("items")
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    assert_api_error!(
        c.delete_item()
            .table_name("items")
            .set_key(Some(key("del", "7")))
            .condition_expression("attribute_exists(nothere)")
            .send()
            .await,
        "ConditionalCheckFailedException",
        "conditional request failed"
    );
    let out = c
        .delete_item()
        .table_name("items")
        .set_key(Some(key("del", "7")))
        .condition_expression("attribute_exists(v)")
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .expect("delete");
    assert_eq!(out.attributes().unwrap()["v"], s("gone soon"));
    let got = c
        .get_item()
        .table_name("items")
        .set_key(Some(key("del", "7")))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(got.item().is_none(), "deleted item is gone");
    let out = c
        .delete_item()
        .table_name("items")
        .set_key(Some(key("del", "7")))
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .unwrap();
    assert!(
        out.attributes().is_none(),
        "deleting an absent item returns no attributes"
    );
}

async fn validation_errors(c: &Client) {
    const V_ERR: &str = "ValidationException";
    let put =
        |item: HashMap<String, V>| c.put_item().table_name("items").set_item(Some(item)).send();

    let mut no_sk = HashMap::from([("pk".to_string(), s("a"))]);
    assert_api_error!(
        put(no_sk.clone()).await,
        V_ERR,
        "Missing the key sk in the item"
    );
    no_sk.insert("sk".into(), s("not a number"));
    assert_api_error!(
        put(no_sk).await,
        V_ERR,
        "Type mismatch for key sk expected: N actual: S"
    );
    assert_api_error!(put(key("", "1")).await, V_ERR, "empty string value");

    let mut empty_set = key("a", "1");
    empty_set.insert("ss".into(), V::Ss(vec![]));
    assert_api_error!(put(empty_set).await, V_ERR, "empty");

    let mut big = key("a", "1");
    big.insert("blob".into(), s(&"x".repeat(400 * 1024)));
    assert_api_error!(
        put(big).await,
        V_ERR,
        "Item size has exceeded the maximum allowed size"
    );

    let mut digits = key("a", "1");
    digits.insert("n".into(), n("123456789012345678901234567890123456789"));
    assert_api_error!(put(digits).await, V_ERR, "significant digits");

    let mut deep = s("leaf");
    for _ in 0..33 {
        deep = V::L(vec![deep]);
    }
    let mut nested = key("a", "1");
    nested.insert("deep".into(), deep);
    assert_api_error!(
        put(nested).await,
        V_ERR,
        "Nesting Levels have exceeded supported limits"
    );

    assert_api_error!(
        c.get_item()
            .table_name("items")
            .set_key(Some(HashMap::from([("pk".to_string(), s("a"))])))
            .send()
            .await,
        V_ERR,
        "The provided key element does not match the schema"
    );
    let mut extra = key("a", "1");
    extra.insert("other".into(), s("x"));
    assert_api_error!(
        c.get_item()
            .table_name("items")
            .set_key(Some(extra))
            .send()
            .await,
        V_ERR,
        "The provided key element does not match the schema"
    );
    assert_api_error!(
        c.describe_table().table_name("a!").send().await,
        V_ERR,
        "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
    );
    assert_api_error!(
        c.put_item()
            .table_name("items")
            .set_item(Some(key("a", "1")))
            .condition_expression("attribute_exists(")
            .send()
            .await,
        V_ERR,
        "Invalid ConditionExpression"
    );
    assert_api_error!(
        c.put_item()
            .table_name("items")
            .set_item(Some(key("a", "1")))
            .expression_attribute_names("#a", "b")
            .send()
            .await,
        V_ERR,
        "ExpressionAttributeNames can only be specified when using expressions"
    );
}

async fn unknown_table(c: &Client) {
    const NF: &str = "ResourceNotFoundException";
    assert_api_error!(
        c.describe_table().table_name("no-such-table").send().await,
        NF,
        "not found"
    );
    assert_api_error!(
        c.get_item()
            .table_name("no-such-table")
            .set_key(Some(key("a", "1")))
            .send()
            .await,
        NF,
        "Requested resource not found"
    );
    assert_api_error!(
        c.put_item()
            .table_name("no-such-table")
            .set_item(Some(key("a", "1")))
            .send()
            .await,
        NF,
        "Requested resource not found"
    );
    assert_api_error!(
        c.delete_table().table_name("no-such-table").send().await,
        NF,
        "not found"
    );
}

async fn table_lifecycle(c: &Client) {
    for name in ["t-b", "t-a", "t-c"] {
        create_table(c, name, None).await;
    }
    assert_api_error!(
        c.create_table()
            .table_name("t-a")
            .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
            .key_schema(
                aws_sdk_dynamodb::types::KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                    .build()
                    .unwrap()
            )
            .attribute_definitions(
                aws_sdk_dynamodb::types::AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap()
            )
            .send()
            .await,
        "ResourceInUseException",
        "Table already exists: t-a"
    );
    let page = c.list_tables().limit(2).send().await.unwrap();
    assert_eq!(page.table_names(), ["items", "t-a"]);
    assert_eq!(page.last_evaluated_table_name(), Some("t-a"));
    let page = c
        .list_tables()
        .limit(2)
        .exclusive_start_table_name("t-a")
        .send()
        .await
        .unwrap();
    assert_eq!(page.table_names(), ["t-b", "t-c"]);
    assert_eq!(page.last_evaluated_table_name(), None);

    let d = c.describe_table().table_name("t-b").send().await.unwrap();
    let t = d.table().unwrap();
    assert_eq!(t.table_name(), Some("t-b"));
    assert_eq!(t.key_schema()[0].attribute_name(), "pk");

    let out = c.delete_table().table_name("t-b").send().await.unwrap();
    assert_eq!(
        out.table_description().unwrap().table_status(),
        Some(&aws_sdk_dynamodb::types::TableStatus::Deleting)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while c.describe_table().table_name("t-b").send().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "deleted table still described"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let names = c.list_tables().send().await.unwrap();
    assert_eq!(names.table_names(), ["items", "t-a", "t-c"]);
}

async fn protocol_errors(endpoint: &str) {
    let (status, body) = raw_post(endpoint, Some("DynamoDB_20120810.PutItem"), "{not json").await;
    assert_eq!(status, 400);
    assert!(
        body["__type"]
            .as_str()
            .unwrap()
            .ends_with("#SerializationException"),
        "{body}"
    );

    let (status, body) = raw_post(endpoint, Some("DynamoDB_20120810.Frobnicate"), "{}").await;
    assert_eq!(status, 400);
    assert!(
        body["__type"]
            .as_str()
            .unwrap()
            .ends_with("#UnknownOperationException"),
        "{body}"
    );

    let (status, body) = raw_post(endpoint, None, "{}").await;
    assert_eq!(status, 400);
    assert!(
        body["__type"]
            .as_str()
            .unwrap()
            .ends_with("#UnknownOperationException"),
        "{body}"
    );

    let (status, body) = raw_post(
        endpoint,
        Some("DynamoDB_20120810.GetItem"),
        r#"{"TableName":"items","Key":{"pk":{"S":"a"},"sk":{"N":"1","S":"x"}}}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["__type"]
            .as_str()
            .unwrap()
            .ends_with("#ValidationException"),
        "{body}"
    );
}
