//! Power-off of each storage node in turn under blind write load: every acknowledged write
//! survives kill -9 and restart of the leader and of the followers alike. `replication.rs` does
//! the same with a conditional workload and more kills.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue as V;
use common::*;
use tokio::sync::watch;

const WRITERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_and_restart() {
    let mut tc = start_cluster(&[]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, "durable", None).await;

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (c, acked, stop) = (c.clone(), acked.clone(), stop_rx.clone());
        writers.push(tokio::spawn(async move {
            let mut failed = 0u64;
            for i in 0u64.. {
                if *stop.borrow() {
                    break;
                }
                let (pk, value) = (format!("w{w}-{i}"), format!("value-{w}-{i}"));
                let item = HashMap::from([
                    ("pk".to_string(), V::S(pk.clone())),
                    ("v".to_string(), V::S(value.clone())),
                ]);
                match c
                    .put_item()
                    .table_name("durable")
                    .set_item(Some(item))
                    .send()
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push((pk, value)),
                    Err(_) => failed += 1,
                }
            }
            failed
        }));
    }

    for node in ["storage-a", "storage-b", "storage-c"] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        tracing::info!("--- kill -9 {node} under load, then restart it");
        tc.cluster.kill(node).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        tc.cluster.restart(node).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop_tx.send(true).unwrap();
    let mut failed = 0;
    for w in writers {
        failed += w.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the load should have written something: {} acked",
        acked.len()
    );
    let missing = missing_writes(&c, "durable", &acked).await;
    println!(
        "acknowledged {} writes, {failed} failed while nodes were down",
        acked.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged writes lost: {:?}",
        &missing[..missing.len().min(10)]
    );
}
