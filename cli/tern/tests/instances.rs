//! Two routers and two MemDS instances: the request path survives the loss of either instance of
//! either service, and both MemDS instances follow the metadata across a nats-server restart.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as V;
use aws_sdk_dynamodb::Client;
use common::*;
use tern_cluster::{Cluster, ClusterSpec};

/// Writes and reads one item through `c` until both succeed; returns how long that took.
async fn serves_within(c: &Client, table: &str, key: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let put = c
            .put_item()
            .table_name(table)
            .item("pk", V::S(key.into()))
            .send()
            .await;
        if put.is_ok() {
            let got = c
                .get_item()
                .table_name(table)
                .key("pk", V::S(key.into()))
                .consistent_read(true)
                .send()
                .await;
            if got.is_ok_and(|g| g.item().is_some()) {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < within,
            "{table}/{key}: no write and read within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_path_survives_losing_any_one_router_or_memds() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path(), bin_dir());
    spec.routers = 2;
    spec.memds = 2;
    let mut cluster = Cluster::start(spec).await.expect("start cluster");
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 2);
    let r1 = client(&endpoints[0].1);
    let r2 = client(&endpoints[1].1);
    create_table(&r1, "tab0", None).await;
    serves_within(&r2, "tab0", "via-r2", Duration::from_secs(5)).await;

    // Either MemDS may go: the other answers lookups and DDL.
    for (i, gone) in ["memds", "memds-2"].iter().enumerate() {
        cluster.kill(gone).unwrap();
        let table = format!("tab{}", i + 1);
        create_table(&r2, &table, None).await;
        let took = serves_within(&r1, &table, "k", Duration::from_secs(10)).await;
        serves_within(
            &r2,
            "tab0",
            &format!("after-{gone}"),
            Duration::from_secs(10),
        )
        .await;
        println!("without {gone}: a new table served after {took:?}");
        cluster.restart(gone).await.unwrap();
    }

    // Either router may go: the other endpoint serves.
    for (gone, other) in [("router", &r2), ("router-2", &r1)] {
        cluster.kill(gone).unwrap();
        let took = serves_within(
            other,
            "tab0",
            &format!("without-{gone}"),
            Duration::from_secs(5),
        )
        .await;
        println!("without {gone}: the other endpoint served after {took:?}");
        cluster.restart(gone).await.unwrap();
    }

    // nats-server restarts: both MemDS instances keep following the bucket, so a table created
    // through one is found by lookups that the queue group spreads over both.
    cluster.nats().kill();
    cluster.nats().restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = create_table_request(&r1, "after-nats").send().await;
        match ok {
            Ok(_) => break,
            Err(e) if error_of(&e).0 == "ResourceInUseException" => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no CreateTable after the nats restart: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Before any DescribeTable (a miss there reads the bucket directly): both instances learn
    // of the new table from their change feeds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut counts = Vec::new();
        for inst in ["memds-1", "memds-2"] {
            let s: tern_proto::memds::MemdsStats = cluster
                .bus()
                .call(
                    &tern_proto::subjects::memds_stats(inst),
                    &tern_proto::Empty {},
                )
                .await
                .expect("stats");
            counts.push(s.tables);
        }
        if counts == [4, 4] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the nats restart, a MemDS does not follow the bucket: tables held {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_active(&r1, "after-nats").await;
    for i in 0..40 {
        let c = if i % 2 == 0 { &r1 } else { &r2 };
        c.put_item()
            .table_name("after-nats")
            .item("pk", V::S(format!("k{i}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {i} after the nats restart: {:?}", error_of(&e)));
    }
    for name in ["memds", "memds-2"] {
        assert!(cluster.is_running(name).unwrap(), "{name} is still running");
    }
}
