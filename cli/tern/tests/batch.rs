//! BatchWriteItem and BatchGetItem through the AWS SDK: limits, duplicates, several tables,
//! projections, capacity, and UnprocessedItems when partitions cannot answer.

mod common;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeValue as V, DeleteRequest, KeysAndAttributes, PutRequest, ReturnConsumedCapacity,
    WriteRequest,
};
use common::*;

fn put(pk: &str, n: i64) -> WriteRequest {
    WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .item("pk", V::S(pk.into()))
                .item("n", V::N(n.to_string()))
                .item("pad", V::S("x".repeat(1500)))
                .build()
                .unwrap(),
        )
        .build()
}

fn delete(pk: &str) -> WriteRequest {
    WriteRequest::builder()
        .delete_request(
            DeleteRequest::builder()
                .key("pk", V::S(pk.into()))
                .build()
                .unwrap(),
        )
        .build()
}

fn key(pk: &str) -> HashMap<String, V> {
    HashMap::from([("pk".to_string(), V::S(pk.into()))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_as_dynamodb_answers_them() {
    let mut tc = start_cluster(&[("TERN_ROUTER_BUS_TIMEOUT_MS", "1000")]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, "batch-a", None).await;
    create_table(&c, "batch-b", None).await;

    // 25 writes over two tables; capacity per table.
    let a: Vec<WriteRequest> = (0..20).map(|i| put(&format!("k{i}"), i)).collect();
    let b: Vec<WriteRequest> = (0..5).map(|i| put(&format!("k{i}"), 100 + i)).collect();
    let out = c
        .batch_write_item()
        .request_items("batch-a", a)
        .request_items("batch-b", b)
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .unwrap();
    assert!(out.unprocessed_items.unwrap_or_default().is_empty());
    let mut cc: Vec<(String, f64)> = out
        .consumed_capacity
        .unwrap()
        .into_iter()
        .map(|c| (c.table_name.unwrap(), c.capacity_units.unwrap()))
        .collect();
    cc.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        cc,
        vec![("batch-a".into(), 40.0), ("batch-b".into(), 10.0)],
        "2 units per 1.5 KB item"
    );

    // Reads: one table projected, the other consistent; a missing key is simply absent.
    let out = c
        .batch_get_item()
        .request_items(
            "batch-a",
            KeysAndAttributes::builder()
                .set_keys(Some(
                    (0..20)
                        .map(|i| key(&format!("k{i}")))
                        .chain([key("missing")])
                        .collect(),
                ))
                .projection_expression("n")
                // Right after the writes: an eventually consistent read may not see them yet.
                .consistent_read(true)
                .build()
                .unwrap(),
        )
        .request_items(
            "batch-b",
            KeysAndAttributes::builder()
                .set_keys(Some((0..5).map(|i| key(&format!("k{i}"))).collect()))
                .consistent_read(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let responses = out.responses.unwrap();
    let got_a = &responses["batch-a"];
    assert_eq!(got_a.len(), 20);
    assert!(
        got_a.iter().all(|it| it.len() == 1 && it.contains_key("n")),
        "projected"
    );
    let mut ns: Vec<i64> = responses["batch-b"]
        .iter()
        .map(|it| match &it["n"] {
            V::N(n) => n.parse().unwrap(),
            _ => panic!(),
        })
        .collect();
    ns.sort();
    assert_eq!(ns, vec![100, 101, 102, 103, 104]);
    assert!(out.unprocessed_keys.unwrap_or_default().is_empty());

    // Deletes and puts mixed.
    c.batch_write_item()
        .request_items("batch-a", vec![delete("k0"), delete("k1"), put("k99", 99)])
        .send()
        .await
        .unwrap();
    let it = c
        .get_item()
        .table_name("batch-a")
        .key("pk", V::S("k0".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(it.item.is_none());

    // Limits and duplicates, refused before anything is written.
    let too_many: Vec<WriteRequest> = (0..26).map(|i| put(&format!("x{i}"), i)).collect();
    let e = c
        .batch_write_item()
        .request_items("batch-a", too_many)
        .send()
        .await
        .unwrap_err();
    let (code, msg) = error_of(&e);
    assert_eq!(code, "ValidationException");
    assert!(
        msg.contains("Too many items requested for the BatchWriteItem call"),
        "{msg}"
    );
    let e = c
        .batch_write_item()
        .request_items(
            "batch-a",
            vec![put("dup", 1), put("new-one", 1), delete("dup")],
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e).1,
        "Provided list of item keys contains duplicates"
    );
    let it = c
        .get_item()
        .table_name("batch-a")
        .key("pk", V::S("new-one".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(it.item.is_none(), "nothing of a refused batch is written");
    let keys: Vec<_> = (0..101).map(|i| key(&format!("k{i}"))).collect();
    let e = c
        .batch_get_item()
        .request_items(
            "batch-a",
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert!(error_of(&e)
        .1
        .contains("Too many items requested for the BatchGetItem call"));
    let e = c
        .batch_get_item()
        .request_items(
            "batch-a",
            KeysAndAttributes::builder()
                .set_keys(Some(vec![key("a"), key("a")]))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e).1,
        "Provided list of item keys contains duplicates"
    );
    let e = c
        .batch_write_item()
        .request_items("no-such-table", vec![put("a", 1)])
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ResourceNotFoundException");

    // Every storage node stalls: the parts that cannot be served come back unprocessed, not as a
    // failed call. (SDK retries off: the answer itself is what is checked.)
    for n in NODES {
        tc.cluster.pause(n).unwrap();
    }
    let raw = serde_json::json!({
        "RequestItems": {"batch-a": [
            {"PutRequest": {"Item": {"pk": {"S": "stalled-1"}}}},
            {"PutRequest": {"Item": {"pk": {"S": "stalled-2"}}}}
        ]}
    });
    let (status, body) = raw_post(
        &tc.cluster.endpoint(),
        Some("DynamoDB_20120810.BatchWriteItem"),
        &raw.to_string(),
    )
    .await;
    let get = serde_json::json!({"RequestItems": {"batch-a": {"Keys": [{"pk": {"S": "k5"}}], "ConsistentRead": true}}});
    let (get_status, get_body) = raw_post(
        &tc.cluster.endpoint(),
        Some("DynamoDB_20120810.BatchGetItem"),
        &get.to_string(),
    )
    .await;
    for n in NODES {
        tc.cluster.resume(n).unwrap();
    }
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["UnprocessedItems"]["batch-a"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
    assert_eq!(get_status, 200, "{get_body}");
    assert_eq!(
        get_body["UnprocessedKeys"]["batch-a"]["Keys"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{get_body}"
    );
    assert_eq!(
        get_body["UnprocessedKeys"]["batch-a"]["ConsistentRead"],
        serde_json::json!(true)
    );
}
