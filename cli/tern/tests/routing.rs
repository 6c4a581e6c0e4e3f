//! Routing: the cache does constant work (with a warm cache MemDS still sees one lookup per
//! request; in classic mode almost none), and stale routes are redirected and retried.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as V;
use common::*;
use tern_proto::memds::MemdsStats;
use tern_proto::{subjects, Empty};

const REQUESTS: u64 = 200;

async fn memds_lookups(tc: &TestCluster) -> u64 {
    let stats: MemdsStats = tc
        .cluster
        .bus()
        .call(&subjects::memds_stats("memds-1"), &Empty {})
        .await
        .expect("memds stats");
    stats.lookups
}

/// MemDS lookups caused by `REQUESTS` GetItems against a warm cache.
async fn lookups_for_warm_requests(mode: &str) -> u64 {
    let tc = start_cluster(&[("TERN_ROUTER_CACHE_MODE", mode)]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, "cwork", None).await;
    let key = HashMap::from([("pk".to_string(), V::S("k".into()))]);
    c.put_item()
        .table_name("cwork")
        .set_item(Some(key.clone()))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = memds_lookups(&tc).await;
    for _ in 0..REQUESTS {
        let got = c
            .get_item()
            .table_name("cwork")
            .set_key(Some(key.clone()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        assert!(got.item().is_some());
    }
    // Constant-mode lookups of cache hits are sent in the background: let them land.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = memds_lookups(&tc).await;
    while after - before < REQUESTS && Instant::now() < deadline && mode == "constant" {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = memds_lookups(&tc).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    memds_lookups(&tc).await - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_mode_sends_one_lookup_per_request() {
    let lookups = lookups_for_warm_requests("constant").await;
    assert_eq!(
        lookups, REQUESTS,
        "every request, hit or miss, is one MemDS lookup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_mode_looks_up_only_on_miss() {
    let lookups = lookups_for_warm_requests("classic").await;
    assert!(
        lookups <= 1,
        "a warm classic cache should not ask MemDS, it asked {lookups} times"
    );
}

/// A router whose cache still holds a dropped table's partitions is redirected by storage and
/// retries with fresh metadata, inside the client's request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_routes_are_redirected_and_retried() {
    use tern_proto::memds::{
        AttributeDefinition, CreateTableRequest, KeySchema, TableInfo, TableNameRequest, TableReply,
    };

    let tc = start_cluster(&[("TERN_ROUTER_CACHE_MODE", "classic")]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, "moving", None).await;
    let item = |v: &str| {
        HashMap::from([
            ("pk".to_string(), V::S("k".into())),
            ("v".to_string(), V::S(v.into())),
        ])
    };
    c.put_item()
        .table_name("moving")
        .set_item(Some(item("old")))
        .send()
        .await
        .unwrap();

    tracing::info!("--- drop and recreate the table behind the router's back");
    let bus = tc.cluster.bus();
    let _: TableReply = bus
        .call(
            subjects::MEMDS_DELETE_TABLE,
            &TableNameRequest {
                table_name: "moving".into(),
            },
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = bus
            .call::<_, TableReply>(
                subjects::MEMDS_DESCRIBE_TABLE,
                &TableNameRequest {
                    table_name: "moving".into(),
                },
            )
            .await;
        if r.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "table not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let table = TableInfo {
        name: "moving".into(),
        key_schema: Some(KeySchema {
            hash_name: "pk".into(),
            hash_type: "S".into(),
            ..Default::default()
        }),
        attribute_definitions: vec![AttributeDefinition {
            name: "pk".into(),
            attr_type: "S".into(),
        }],
        billing_mode: "PAY_PER_REQUEST".into(),
        ..Default::default()
    };
    let _: TableReply = bus
        .call(
            subjects::MEMDS_CREATE_TABLE,
            &CreateTableRequest { table: Some(table) },
        )
        .await
        .unwrap();
    wait_active(&c, "moving").await;

    tracing::info!(
        "--- the router's cached partitions are gone: storage redirects, the router retries"
    );
    let got = c
        .get_item()
        .table_name("moving")
        .key("pk", V::S("k".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(
        got.item().is_none(),
        "the recreated table is empty: {:?}",
        got.item()
    );
    c.put_item()
        .table_name("moving")
        .set_item(Some(item("new")))
        .send()
        .await
        .unwrap();
    let got = c
        .get_item()
        .table_name("moving")
        .key("pk", V::S("k".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(got.item().unwrap()["v"], V::S("new".into()));

    let (_, metrics) = raw_get(&tc.cluster.metrics_base("router").unwrap(), "/metrics").await;
    let redirects: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tern_router_storage_redirects_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("redirect counter");
    assert!(
        redirects >= 1,
        "the stale route should have been redirected: {metrics}"
    );
}
