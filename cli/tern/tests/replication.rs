//! Three-way replication (the default): writes are acknowledged by a quorum and survive kill -9
//! of any storage node, including partition leaders, under load.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as V;
use common::*;
use tokio::sync::watch;

/// Small logs, so replicas compact often and a restarted one catches up by snapshot.
const REPLICATED: &[(&str, &str)] = &[("TERN_STORAGE_COMPACT_AFTER", "300")];

/// Seconds of kill -9 cycles: `TERN_POWER_OFF_SECS` (CI runs the short default; soak with 60+).
fn power_off_secs() -> u64 {
    std::env::var("TERN_POWER_OFF_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

#[derive(Default)]
struct Tally {
    acked: Vec<(String, String)>,
    /// Conditional increments of the shared counter: acknowledged, and attempted in all.
    increments_acked: u64,
    increments_tried: u64,
    failed: u64,
    longest_gap: Duration,
}

/// Unique puts, and read-then-conditionally-increment of one counter, until told to stop.
async fn load(
    c: aws_sdk_dynamodb::Client,
    w: usize,
    tally: Arc<Mutex<Tally>>,
    stop: watch::Receiver<bool>,
) {
    let mut last_ok = Instant::now();
    for i in 0u64.. {
        if *stop.borrow() {
            break;
        }
        let ok = if w == 0 {
            increment(&c, &tally).await
        } else {
            let (pk, value) = (format!("w{w}-{i}"), format!("value-{w}-{i}"));
            let item = HashMap::from([
                ("pk".to_string(), V::S(pk.clone())),
                ("v".to_string(), V::S(value.clone())),
            ]);
            let r = c
                .put_item()
                .table_name("replicated")
                .set_item(Some(item))
                .send()
                .await;
            if r.is_ok() {
                tally.lock().unwrap().acked.push((pk, value));
            }
            r.is_ok()
        };
        let mut t = tally.lock().unwrap();
        if ok {
            t.longest_gap = t.longest_gap.max(last_ok.elapsed());
            last_ok = Instant::now();
        } else {
            t.failed += 1;
        }
    }
}

async fn counter(c: &aws_sdk_dynamodb::Client) -> Option<u64> {
    let got = c
        .get_item()
        .table_name("replicated")
        .key("pk", V::S("counter".into()))
        .consistent_read(true)
        .send()
        .await
        .ok()?;
    match got.item().and_then(|i| i.get("n")) {
        Some(V::N(n)) => n.parse().ok(),
        _ => Some(0),
    }
}

/// One conditional increment; true when it was acknowledged (a lost race counts as done too).
async fn increment(c: &aws_sdk_dynamodb::Client, tally: &Mutex<Tally>) -> bool {
    let Some(n) = counter(c).await else {
        return false;
    };
    tally.lock().unwrap().increments_tried += 1;
    let item = HashMap::from([
        ("pk".to_string(), V::S("counter".into())),
        ("n".to_string(), V::N((n + 1).to_string())),
    ]);
    let mut put = c.put_item().table_name("replicated").set_item(Some(item));
    put = if n == 0 {
        put.condition_expression("attribute_not_exists(n)")
    } else {
        put.condition_expression("n = :old")
            .expression_attribute_values(":old", V::N(n.to_string()))
    };
    match put.send().await {
        Ok(_) => {
            tally.lock().unwrap().increments_acked += 1;
            true
        }
        Err(e) => error_of(&e).0 == "ConditionalCheckFailedException",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_writes_survive_power_off() {
    let mut tc = start_cluster(REPLICATED).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, "replicated", None).await;

    tracing::info!("--- reads and writes through elected leaders");
    let item = HashMap::from([
        ("pk".to_string(), V::S("first".into())),
        ("v".to_string(), V::N("1".into())),
    ]);
    c.put_item()
        .table_name("replicated")
        .set_item(Some(item))
        .send()
        .await
        .expect("first write");
    let got = c
        .get_item()
        .table_name("replicated")
        .key("pk", V::S("first".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(got.item().unwrap()["v"], V::N("1".into()));

    let tally: Arc<Mutex<Tally>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let writers: Vec<_> = (0..6)
        .map(|w| tokio::spawn(load(c.clone(), w, tally.clone(), stop_rx.clone())))
        .collect();

    tracing::info!("--- kill -9 a storage node every few seconds, restart it");
    let nodes = ["storage-a", "storage-b", "storage-c"];
    let (deadline, mut kills) = (Instant::now() + Duration::from_secs(power_off_secs()), 0);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let node = nodes[(kills * 7 + power_off_secs() as usize) % 3];
        tc.cluster.kill(node).unwrap();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        tc.cluster.restart(node).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    for w in writers {
        w.await.unwrap();
    }

    let t = std::mem::take(&mut *tally.lock().unwrap());
    // Counted since each node's last restart: a lower bound.
    let compactions = metric_sum(&tc.cluster, &nodes, "tern_storage_log_compactions_total").await;
    let installs = metric_sum(
        &tc.cluster,
        &nodes,
        "tern_storage_snapshots_installed_total",
    )
    .await;
    println!("power-off: at least {compactions} log compactions, {installs} snapshots installed");
    let final_count = counter(&c).await.expect("read the counter");
    println!(
        "power-off: {kills} kills, {} puts and {} increments acknowledged ({} tried), {} failed calls, \
         longest gap between acknowledgements {:?}, counter {final_count}",
        t.acked.len(),
        t.increments_acked,
        t.increments_tried,
        t.failed,
        t.longest_gap
    );
    assert!(
        t.acked.len() > 100,
        "the load should have written something: {} acked",
        t.acked.len()
    );
    assert!(
        t.increments_acked <= final_count && final_count <= t.increments_tried,
        "counter {final_count} must count every acknowledged increment ({}) and no more than were tried ({})",
        t.increments_acked,
        t.increments_tried
    );
    let missing = missing_writes(&c, "replicated", &t.acked).await;
    assert!(
        missing.is_empty(),
        "acknowledged writes lost: {:?}",
        &missing[..missing.len().min(10)]
    );
}
