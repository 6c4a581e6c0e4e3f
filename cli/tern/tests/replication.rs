//! Three-way replication (the default): writes are acknowledged by a quorum and survive kill -9
//! of any storage node, including partition leaders, under load.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as V;
use common::*;
use tokio::sync::watch;

const REPLICATED: &[(&str, &str)] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_writes_survive_leader_kills() {
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

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut writers = Vec::new();
    for w in 0..6 {
        let (c, acked, stop, gap) = (
            c.clone(),
            acked.clone(),
            stop_rx.clone(),
            longest_gap.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut failed = 0u64;
            let mut last_ok = Instant::now();
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
                    .table_name("replicated")
                    .set_item(Some(item))
                    .send()
                    .await
                {
                    Ok(_) => {
                        let mut g = gap.lock().unwrap();
                        *g = (*g).max(last_ok.elapsed());
                        last_ok = Instant::now();
                        acked.lock().unwrap().push((pk, value));
                    }
                    Err(_) => failed += 1,
                }
            }
            failed
        }));
    }
    for node in ["storage-a", "storage-b", "storage-c", "storage-a"] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tracing::info!("--- kill -9 {node} under load; the others elect leaders and go on");
        tc.cluster.kill(node).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tc.cluster.restart(node).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    let mut failed = 0;
    for w in writers {
        failed += w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let gap = *longest_gap.lock().unwrap();
    println!("replicated: {} writes acknowledged, {failed} failed, longest gap between acknowledgements {gap:?}", acked.len());
    assert!(
        acked.len() > 100,
        "the load should have written something: {} acked",
        acked.len()
    );

    let mut missing = Vec::new();
    for (pk, value) in &acked {
        let got = c
            .get_item()
            .table_name("replicated")
            .key("pk", V::S(pk.clone()))
            .consistent_read(true)
            .send()
            .await
            .expect("read back");
        match got.item().and_then(|i| i.get("v")) {
            Some(V::S(v)) if v == value => {}
            other => missing.push((pk.clone(), other.cloned())),
        }
    }
    assert!(
        missing.is_empty(),
        "acknowledged writes lost: {:?}",
        &missing[..missing.len().min(10)]
    );
}
