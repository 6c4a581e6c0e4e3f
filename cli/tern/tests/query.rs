//! Query and Scan through the AWS SDK: key conditions, order, Limit and LastEvaluatedKey, 1 MB
//! pages, filters, projections, COUNT, parallel scan, DynamoDB's errors, and pagination that
//! loses and repeats nothing while other keys are written.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue as V, ScalarAttributeType, Select};
use aws_sdk_dynamodb::Client;
use common::*;

const TABLE: &str = "query";

fn s(v: &str) -> V {
    V::S(v.into())
}

fn n(v: i64) -> V {
    V::N(v.to_string())
}

fn num(v: &V) -> i64 {
    match v {
        V::N(x) => x.parse().unwrap(),
        other => panic!("{other:?}"),
    }
}

async fn put(c: &Client, pk: &str, sk: i64, extra: Vec<(&str, V)>) {
    let mut req = c
        .put_item()
        .table_name(TABLE)
        .item("pk", s(pk))
        .item("sk", n(sk));
    for (k, v) in extra {
        req = req.item(k, v);
    }
    req.send().await.unwrap();
}

/// Every page of a query on pk `a` with `limit`, in the given order: the sort keys seen.
async fn query_all(c: &Client, pk: &str, limit: i32, forward: bool) -> (Vec<i64>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut start: Option<HashMap<String, V>> = None;
    loop {
        let out = c
            .query()
            .table_name(TABLE)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(pk))
            .limit(limit)
            .consistent_read(true)
            .scan_index_forward(forward)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        pages += 1;
        seen.extend(out.items().iter().map(|it| num(&it["sk"])));
        match out.last_evaluated_key {
            Some(k) => start = Some(k),
            None => return (seen, pages),
        }
        assert!(pages < 1000, "pagination does not end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_and_scan_as_dynamodb_answers_them() {
    let tc = start_cluster(&[]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, TABLE, Some(ScalarAttributeType::N)).await;
    for i in 0..50 {
        let kind = if i % 3 == 0 { "x" } else { "y" };
        put(&c, "a", i, vec![("kind", s(kind)), ("tag", n(i * 10))]).await;
    }
    for i in 0..10 {
        put(&c, "b", i, vec![]).await;
    }

    // All of a partition key, in sort-key order, numbers by value.
    let out = c
        .query()
        .table_name(TABLE)
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", s("a"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(out.count, 50);
    assert_eq!(out.scanned_count, 50);
    let sks: Vec<i64> = out.items().iter().map(|it| num(&it["sk"])).collect();
    assert_eq!(sks, (0..50).collect::<Vec<_>>());
    assert!(out.last_evaluated_key.is_none());

    // Sort-key conditions.
    let q = |cond: &str, vals: Vec<(&str, V)>| {
        // Consistent: the items were just written, and eventually consistent reads may lag.
        let mut r = c
            .query()
            .table_name(TABLE)
            .consistent_read(true)
            .key_condition_expression(cond)
            .expression_attribute_values(":p", s("a"));
        for (k, v) in vals {
            r = r.expression_attribute_values(k, v);
        }
        r
    };
    let count = |out: &aws_sdk_dynamodb::operation::query::QueryOutput| {
        out.items()
            .iter()
            .map(|it| num(&it["sk"]))
            .collect::<Vec<_>>()
    };
    let out = q(
        "pk = :p AND sk BETWEEN :lo AND :hi",
        vec![(":lo", n(10)), (":hi", n(19))],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(count(&out), (10..20).collect::<Vec<_>>());
    let out = q("pk = :p AND sk < :v", vec![(":v", n(3))])
        .send()
        .await
        .unwrap();
    assert_eq!(count(&out), vec![0, 1, 2]);
    let out = q("pk = :p AND sk >= :v", vec![(":v", n(47))])
        .send()
        .await
        .unwrap();
    assert_eq!(count(&out), vec![47, 48, 49]);
    let out = q("sk = :v AND pk = :p", vec![(":v", n(5))])
        .send()
        .await
        .unwrap();
    assert_eq!(count(&out), vec![5]);

    // Pages by Limit, both directions: every item once, in order.
    let (fwd, pages) = query_all(&c, "a", 7, true).await;
    assert_eq!(fwd, (0..50).collect::<Vec<_>>());
    assert_eq!(pages, 8, "7 full pages and the rest");
    let (back, _) = query_all(&c, "a", 5, false).await;
    assert_eq!(back, (0..50).rev().collect::<Vec<_>>());

    // Filter after the page is read: Count is what passed, ScannedCount what was read.
    let out = q("pk = :p", vec![(":x", s("x"))])
        .filter_expression("kind = :x")
        .limit(10)
        .send()
        .await
        .unwrap();
    assert_eq!(out.scanned_count, 10);
    assert_eq!(out.count, 4, "0, 3, 6, 9");
    assert!(out.last_evaluated_key.is_some());
    // Projection and COUNT.
    let out = q("pk = :p AND sk < :v", vec![(":v", n(2))])
        .projection_expression("tag")
        .send()
        .await
        .unwrap();
    assert_eq!(out.items()[1], HashMap::from([("tag".to_string(), n(10))]));
    let out = q("pk = :p", vec![])
        .select(Select::Count)
        .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Indexes)
        .send()
        .await
        .unwrap();
    assert_eq!(out.count, 50);
    // 50 small items: one 4 KB unit for a consistent read; with INDEXES the table's share is
    // reported apart.
    let cc = out.consumed_capacity.clone().unwrap();
    assert_eq!(cc.capacity_units, Some(1.0));
    assert_eq!(cc.table.and_then(|t| t.capacity_units), Some(1.0));
    assert!(out.items.is_none() || out.items().is_empty());
    let total = c
        .query()
        .table_name(TABLE)
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", s("a"))
        .select(Select::Count)
        .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
        .send()
        .await
        .unwrap();
    let cc = total.consumed_capacity.unwrap();
    assert_eq!(
        cc.capacity_units,
        Some(0.5),
        "half for an eventually consistent read"
    );
    assert!(cc.table.is_none(), "TOTAL has no per-table part");

    // DynamoDB's errors.
    let cases: Vec<(&str, &str)> = vec![
        (
            "pk = :p OR pk = :p",
            "Invalid operator used in KeyConditionExpression: OR",
        ),
        ("pk < :p", "Query key condition not supported"),
    ];
    for (cond, expected) in cases {
        let e = c
            .query()
            .table_name(TABLE)
            .key_condition_expression(cond)
            .expression_attribute_values(":p", s("a"))
            .send()
            .await
            .unwrap_err();
        let (code, msg) = error_of(&e);
        assert_eq!(code, "ValidationException");
        assert_eq!(msg, expected, "{cond}");
    }
    let e = c
        .query()
        .table_name(TABLE)
        .key_condition_expression("sk = :v")
        .expression_attribute_values(":v", n(1))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e).1,
        "Query condition missed key schema element: pk"
    );
    let e = q("pk = :p", vec![(":v", n(1))])
        .filter_expression("sk > :v")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e).1,
        "Filter Expression can only contain non-primary key attributes: Primary key attribute: sk"
    );
    let e = c.query().table_name(TABLE).send().await.unwrap_err();
    assert!(error_of(&e)
        .1
        .contains("KeyConditions or KeyConditionExpression"));
    let e = q("pk = :p AND sk < :v", vec![(":v", n(3))])
        .exclusive_start_key("pk", s("a"))
        .exclusive_start_key("sk", n(40))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e).1,
        "The provided starting key is outside query boundaries based on provided conditions"
    );
    let e = q("pk = :p", vec![])
        .index_name("byKind")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e).1,
        "The table does not have the specified index: byKind"
    );

    // 1 MB pages: 30 items of 100 KB come in pages of about 1 MB.
    for i in 0..30 {
        put(&c, "big", i, vec![("blob", s(&"z".repeat(100 * 1024)))]).await;
    }
    let (big, pages) = query_all(&c, "big", 1000, true).await;
    assert_eq!(big, (0..30).collect::<Vec<_>>());
    assert!((3..=4).contains(&pages), "{pages} pages for 3 MB");

    // Scan: everything once, in pages; and as 4 parallel segments.
    let mut seen = BTreeSet::new();
    let mut start = None;
    let mut scans = 0;
    loop {
        let out = c
            .scan()
            .table_name(TABLE)
            .consistent_read(true)
            .limit(13)
            .projection_expression("pk, sk")
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        scans += 1;
        for it in out.items() {
            let k = (format!("{:?}", it["pk"]), num(&it["sk"]));
            assert!(seen.insert(k.clone()), "{k:?} twice");
        }
        match out.last_evaluated_key {
            Some(k) => start = Some(k),
            None => break,
        }
    }
    assert_eq!(seen.len(), 90);
    assert!(scans >= 7);
    let mut union = BTreeSet::new();
    for segment in 0..4 {
        let mut start = None;
        loop {
            let out = c
                .scan()
                .table_name(TABLE)
                .consistent_read(true)
                .segment(segment)
                .total_segments(4)
                .projection_expression("pk, sk")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .unwrap();
            for it in out.items() {
                let k = (format!("{:?}", it["pk"]), num(&it["sk"]));
                assert!(union.insert(k.clone()), "{k:?} in two segments");
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
    }
    assert_eq!(union, seen, "the segments cover the table");
    let e = c
        .scan()
        .table_name(TABLE)
        .segment(4)
        .total_segments(4)
        .send()
        .await
        .unwrap_err();
    assert!(error_of(&e)
        .1
        .contains("Segment: 4 is out of bounds for TotalSegments: 4"));
    // A filtered scan: pages of at most 1 MB read (the 100 KB items fill them), filtered after.
    let (mut count, mut scanned, mut pages) = (0, 0, 0);
    let mut start = None;
    loop {
        let out = c
            .scan()
            .table_name(TABLE)
            .consistent_read(true)
            .filter_expression("pk = :b")
            .expression_attribute_values(":b", s("b"))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        count += out.count;
        scanned += out.scanned_count;
        pages += 1;
        match out.last_evaluated_key {
            Some(k) => start = Some(k),
            None => break,
        }
    }
    assert_eq!((count, scanned), (10, 90));
    assert!(
        pages >= 3,
        "3 MB of items take at least 3 pages, took {pages}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pagination_loses_and_repeats_nothing_while_other_keys_change() {
    let tc = start_cluster(&[]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, TABLE, Some(ScalarAttributeType::N)).await;
    // Stable items, and churn items that come and go between pages.
    for i in 0..60 {
        put(&c, &format!("stable-{}", i % 6), i, vec![]).await;
    }
    for i in 0..20 {
        put(&c, "churn", i, vec![]).await;
    }
    let mut seen: BTreeMap<(String, i64), usize> = BTreeMap::new();
    let mut start = None;
    let mut round = 0;
    loop {
        let out = c
            .scan()
            .table_name(TABLE)
            .limit(4)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        for it in out.items() {
            let V::S(pk) = &it["pk"] else { panic!() };
            *seen.entry((pk.clone(), num(&it["sk"]))).or_default() += 1;
        }
        // Between pages: new keys appear and churn keys go, all over the table.
        round += 1;
        put(&c, &format!("new-{round}"), round, vec![]).await;
        c.delete_item()
            .table_name(TABLE)
            .key("pk", s("churn"))
            .key("sk", n(round % 20))
            .send()
            .await
            .unwrap();
        match out.last_evaluated_key {
            Some(k) => start = Some(k),
            None => break,
        }
        assert!(round < 500);
    }
    for i in 0..60 {
        let k = (format!("stable-{}", i % 6), i);
        assert_eq!(
            seen.get(&k),
            Some(&1),
            "{k:?} seen {:?} times",
            seen.get(&k)
        );
    }
    assert!(seen.values().all(|n| *n == 1), "no item twice");
}
