//! The routing cache does constant work: with a warm cache MemDS still sees one lookup per
//! request; in classic mode it sees almost none.

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
