//! Resident memory of the storage nodes stays bounded while large items pour into one partition:
//! the replication log is compacted by bytes, not only by entry count.
//!
//! `TERN_MEMORY_TEST_MB` sets how much to write (CI writes the small default; the documented run
//! writes 2048). `TERN_MEMORY_BOUND_MB` is the bound checked (512).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue as V, ScalarAttributeType};
use common::*;

const ITEM_BYTES: usize = 390 * 1024;
const WRITERS: u64 = 8;

fn env_mb(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes that do not compress (fjall compresses blocks).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_memory_stays_bounded_under_large_items() {
    let total_mb = env_mb("TERN_MEMORY_TEST_MB", 160);
    let bound = env_mb("TERN_MEMORY_BOUND_MB", 512) * 1024 * 1024;
    // The writers go as fast as the nodes take them: a new on-demand table's starting capacity
    // (4,000 write units: ten 400 KB items a second) is raised so that admission control does
    // not set the pace this test measures memory under.
    let mut tc = start_cluster(&[("TERN_GAC_ON_DEMAND_INITIAL_WRITE_UNITS", "10000000")]).await;
    let c = client(&tc.cluster.endpoint());
    // One partition key, many sort keys: every item lands in one partition.
    create_table(&c, "big", Some(ScalarAttributeType::N)).await;

    let items = total_mb * 1024 * 1024 / ITEM_BYTES as u64;
    tracing::info!(
        "--- {WRITERS} writers put {items} items of {ITEM_BYTES} bytes into one partition"
    );
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (c, next) = (c.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items {
                        return;
                    }
                    let item = HashMap::from([
                        ("pk".to_string(), V::S("one".into())),
                        ("sk".to_string(), V::N(i.to_string())),
                        ("b".to_string(), V::B(Blob::new(noise(i, ITEM_BYTES)))),
                    ]);
                    c.put_item()
                        .table_name("big")
                        .set_item(Some(item))
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("put {i}: {e:?}"));
                }
            })
        })
        .collect();
    let nodes = ["storage-a", "storage-b", "storage-c"];
    let mut peak = HashMap::new();
    while writers.iter().any(|w| !w.is_finished()) {
        for n in nodes {
            let rss = tc.cluster.rss_bytes(n).unwrap().unwrap_or(0);
            let p = peak.entry(n).or_insert(0);
            *p = rss.max(*p);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let peaks: Vec<String> = nodes
        .iter()
        .map(|n| format!("{n} {} MB", peak[n] / (1024 * 1024)))
        .collect();
    println!(
        "memory: {items} items, {total_mb} MB in {secs:.1} s ({:.1} MB/s); peak resident: {}",
        total_mb as f64 / secs,
        peaks.join(", ")
    );
    for n in nodes {
        assert!(
            peak[n] < bound,
            "{n} grew to {} MB resident, over the {} MB bound",
            peak[n] / (1024 * 1024),
            bound / (1024 * 1024)
        );
    }

    tracing::info!("--- the first, a middle and the last item read back whole");
    for i in [0, items / 2, items - 1] {
        let got = c
            .get_item()
            .table_name("big")
            .key("pk", V::S("one".into()))
            .key("sk", V::N(i.to_string()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        let b = got.item().and_then(|it| it.get("b")).cloned();
        assert_eq!(b, Some(V::B(Blob::new(noise(i, ITEM_BYTES)))), "item {i}");
    }
}
