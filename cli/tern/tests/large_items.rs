//! Large items under load: items at DynamoDB's 400 KB limit written all at once, and a follower
//! killed while large items are written (it must catch up).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as V;
use aws_sdk_dynamodb::Client;
use common::*;
use tokio::sync::watch;

/// The tests here each run a cluster and measure seconds: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// 1. Items at the size limit, all at once.

/// Just under 400 KB with the key and attribute names: the largest item DynamoDB takes. As JSON
/// (base64) it is more than 512 KB.
const LARGE: usize = 399_000;
const CONCURRENT: usize = 64;

enum Outcome {
    Ok,
    Throttled(String),
    Failed(String, String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_items_concurrently() {
    let _serial = SERIAL.lock().await;
    let mut tc = start_cluster(&[]).await;
    let c = client(&tc.cluster.endpoint());
    let table = "large";
    create_table(&c, table, None).await;
    let base: u64 = rand::random();

    tracing::info!("--- {CONCURRENT} PutItems of {LARGE}-byte binary items, all at once");
    let payloads: Vec<Vec<u8>> = (0..CONCURRENT)
        .map(|i| payload(base ^ i as u64, LARGE))
        .collect();
    let started = Instant::now();
    let puts: Vec<_> = payloads
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let c = c.clone();
            let item = HashMap::from([
                ("pk".to_string(), V::S(format!("big-{i}"))),
                ("B".to_string(), V::B(Blob::new(bytes.clone()))),
            ]);
            tokio::spawn(async move {
                let r = c
                    .put_item()
                    .table_name(table)
                    .set_item(Some(item))
                    .send()
                    .await;
                match r {
                    Ok(_) => Outcome::Ok,
                    Err(e) => {
                        let (code, msg) = error_of(&e);
                        if THROTTLING.contains(&code.as_str()) {
                            Outcome::Throttled(code)
                        } else if code.is_empty() {
                            Outcome::Failed(format!("{e:?}"), msg)
                        } else {
                            Outcome::Failed(code, msg)
                        }
                    }
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for p in puts {
        outcomes.push(p.await.unwrap());
    }
    let took = started.elapsed();
    let ok: Vec<usize> = (0..CONCURRENT)
        .filter(|i| matches!(outcomes[*i], Outcome::Ok))
        .collect();
    let throttled: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Throttled(code) => Some(code.as_str()),
            _ => None,
        })
        .collect();
    let failed: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Outcome::Failed(code, msg) => Some(format!("big-{i}: {code} {msg:?}")),
            _ => None,
        })
        .collect();
    println!(
        "large items: {} of {CONCURRENT} succeeded, {} throttled, {} failed, in {:.2} s; \
         storage memory: {}",
        ok.len(),
        throttled.len(),
        failed.len(),
        took.as_secs_f64(),
        storage_rss(&mut tc.cluster)
    );
    if let Some(code) = throttled.first() {
        println!("  throttled with {code}");
    }
    for f in failed.iter().take(5) {
        println!("  {f}");
    }

    tracing::info!("--- writes keep working: 10 small PutItems");
    let small: Vec<_> = (0..10)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let item = HashMap::from([
                    ("pk".to_string(), V::S(format!("small-{i}"))),
                    ("v".to_string(), V::N(i.to_string())),
                ]);
                let call = c.put_item().table_name(table).set_item(Some(item)).send();
                match tokio::time::timeout(Duration::from_secs(20), call).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("small-{i}: {:?}", error_of(&e))),
                    Err(_) => Err(format!("small-{i}: no answer within 20 s")),
                }
            })
        })
        .collect();
    let mut small_failed = Vec::new();
    for s in small {
        if let Err(e) = s.await.unwrap() {
            small_failed.push(e);
        }
    }
    println!(
        "large items: {} of 10 small writes afterwards succeeded",
        10 - small_failed.len()
    );

    tracing::info!("--- every acknowledged large item reads back exactly");
    let mut wrong = Vec::new();
    for i in &ok {
        let call = c
            .get_item()
            .table_name(table)
            .key("pk", V::S(format!("big-{i}")))
            .consistent_read(true)
            .send();
        match tokio::time::timeout(Duration::from_secs(20), call).await {
            Ok(Ok(got)) => match got.item().and_then(|it| it.get("B")) {
                Some(V::B(b)) if b.as_ref() == payloads[*i].as_slice() => {}
                Some(V::B(b)) => {
                    wrong.push(format!("big-{i}: {} different bytes", b.as_ref().len()))
                }
                other => wrong.push(format!("big-{i}: {:?}", other.map(|_| "not binary"))),
            },
            Ok(Err(e)) => wrong.push(format!("big-{i}: read failed {:?}", error_of(&e))),
            Err(_) => wrong.push(format!("big-{i}: read not answered within 20 s")),
        }
    }

    assert!(
        failed.is_empty(),
        "{} of {CONCURRENT} large PutItems failed with something other than throttling, e.g. {:?}; \
         afterwards {} of 10 small writes failed ({:?}) and {} acknowledged items read back wrong",
        failed.len(),
        &failed[..failed.len().min(3)],
        small_failed.len(),
        &small_failed[..small_failed.len().min(3)],
        wrong.len()
    );
    assert!(
        small_failed.is_empty(),
        "writes stopped working after the large items: {small_failed:?}"
    );
    assert!(
        wrong.is_empty(),
        "acknowledged large items do not read back: {:?}",
        &wrong[..wrong.len().min(5)]
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A follower killed while large items are written catches up.

const BIG: usize = 300_000;

/// An acknowledged large write: key, payload seed, when it was acknowledged.
type Acked = Arc<Mutex<Vec<(String, u64, Instant)>>>;

/// Puts of unique `BIG`-byte items until told to stop; returns the failed calls and a few of
/// their errors.
async fn large_writer(
    c: Client,
    table: &'static str,
    w: u64,
    base: u64,
    acked: Acked,
    stop: watch::Receiver<bool>,
) -> (u64, Vec<String>) {
    let (mut failed, mut errors) = (0, Vec::new());
    for i in 0u64.. {
        if *stop.borrow() {
            break;
        }
        let (pk, seed) = (format!("w{w}-{i}"), base ^ ((w << 32) | i));
        let item = HashMap::from([
            ("pk".to_string(), V::S(pk.clone())),
            ("B".to_string(), V::B(Blob::new(payload(seed, BIG)))),
        ]);
        match c
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
        {
            Ok(_) => acked.lock().unwrap().push((pk, seed, Instant::now())),
            Err(e) => {
                failed += 1;
                if errors.len() < 3 {
                    errors.push(format!("{pk}: {:?}", error_of(&e)));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (failed, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_killed_during_large_writes_catches_up() {
    let _serial = SERIAL.lock().await;
    let mut tc = start_cluster(&[
        // Small logs: the replicas compact often, so the killed one may be behind the log.
        ("TERN_STORAGE_COMPACT_AFTER", "50"),
        // One group, so its leader is the node whose groups_led is 1.
        ("TERN_MEMDS_PARTITIONS_PER_TABLE", "1"),
        // The killed replica must catch up, not be replaced.
        ("TERN_STORAGE_REPLACE_AFTER_MS", "600000"),
        // A few items' bytes in memory: what the follower missed is read back from disk.
        ("TERN_STORAGE_LOG_CACHE_BYTES", "1048576"),
    ])
    .await;
    let c = client(&tc.cluster.endpoint());
    let table = "large_catch_up";
    create_table(&c, table, None).await;
    let item = HashMap::from([("pk".to_string(), V::S("first".into()))]);
    c.put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .expect("first write");
    let leader = wait_single_leader(&tc.cluster, Duration::from_secs(10)).await;
    let victim = NODES.iter().find(|n| **n != leader).unwrap().to_string();
    println!("catch-up: leader {leader}, killing follower {victim}");

    tracing::info!("--- 4 writers of {BIG}-byte items");
    let base: u64 = rand::random();
    let acked: Acked = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(large_writer(
                c.clone(),
                table,
                w,
                base,
                acked.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    tracing::info!("--- kill -9 {victim} for 3 s under writes");
    let killed_at = Instant::now();
    tc.cluster.kill(&victim).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    tc.cluster
        .restart(&victim)
        .await
        .expect("restart the follower");
    let restarted_at = Instant::now();
    tracing::info!("--- {victim} is back; 5 s more writes");
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_tx.send(true).unwrap();
    let (mut failed, mut errors) = (0, Vec::new());
    for w in writers {
        let (f, e) = w.await.unwrap();
        failed += f;
        errors.extend(e);
    }
    let stopped_at = Instant::now();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let while_down = acked
        .iter()
        .filter(|(_, _, t)| *t >= killed_at && *t < restarted_at)
        .count();
    let after = acked.iter().filter(|(_, _, t)| *t >= restarted_at).count();
    println!(
        "catch-up: {} large puts acknowledged ({while_down} while {victim} was down, {after} after \
         its restart), {failed} failed calls {:?}; restart took {:.2} s; storage memory: {}",
        acked.len(),
        &errors[..errors.len().min(3)],
        (restarted_at - killed_at).as_secs_f64() - 3.0,
        storage_rss(&mut tc.cluster)
    );

    tracing::info!("--- the leader reports {victim} with no lag");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut lag, mut seen_victim, mut lags): (f64, bool, Vec<(String, f64)>);
    lags = Vec::new();
    let caught_up = loop {
        lags.clear();
        for node in NODES {
            lags.extend(samples(
                &node_metrics(&tc.cluster, node).await,
                "tern_storage_replication_lag_entries",
            ));
        }
        lag = lags.iter().map(|(_, v)| v).sum();
        seen_victim = lags
            .iter()
            .any(|(l, _)| l.contains(&format!("peer=\"{victim}\"")));
        if seen_victim && lag == 0.0 {
            break Some(stopped_at.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let installs = metric_sum(
        &tc.cluster,
        &[&victim],
        "tern_storage_snapshots_installed_total",
    )
    .await;
    let compactions = metric_sum(&tc.cluster, &NODES, "tern_storage_log_compactions_total").await;
    let log_reads = metric_sum(&tc.cluster, &NODES, "tern_storage_log_reads_total").await;
    println!(
        "catch-up: lag 0 {caught_up:?} after the load stopped; {victim} installed {installs} \
         snapshots; {log_reads} entries read back from disk for it; {compactions} log \
         compactions (since each node's start)"
    );
    assert!(
        installs + log_reads > 0.0,
        "{victim} missed {while_down} writes but was neither sent a snapshot nor entries read \
         back from disk: it was not behind what the leader keeps in memory"
    );

    tracing::info!("--- every acknowledged item reads back exactly (consistent reads)");
    let acked = Arc::new(acked);
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (c, acked) = (c.clone(), acked.clone());
            tokio::spawn(async move {
                let mut wrong = Vec::new();
                for (pk, seed, _) in acked.iter().skip(r).step_by(4) {
                    let got = c
                        .get_item()
                        .table_name(table)
                        .key("pk", V::S(pk.clone()))
                        .consistent_read(true)
                        .send()
                        .await;
                    match got {
                        Ok(got) => match got.item().and_then(|i| i.get("B")) {
                            Some(V::B(b)) if b.as_ref() == payload(*seed, BIG).as_slice() => {}
                            Some(V::B(_)) => wrong.push(format!("{pk}: different bytes")),
                            None => wrong.push(format!("{pk}: missing")),
                            Some(_) => wrong.push(format!("{pk}: not binary")),
                        },
                        Err(e) => wrong.push(format!("{pk}: read failed {:?}", error_of(&e))),
                    }
                }
                wrong
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for r in readers {
        wrong.extend(r.await.unwrap());
    }
    println!(
        "catch-up: {} of {} acknowledged items read back wrong",
        wrong.len(),
        acked.len()
    );

    assert!(
        acked.len() >= 20 && after > 0,
        "the load should have written large items, also after the restart: {} acknowledged, {after} \
         after the restart; errors {errors:?}",
        acked.len()
    );
    assert!(
        wrong.is_empty(),
        "acknowledged large writes lost or wrong: {} of {}, e.g. {:?}",
        wrong.len(),
        acked.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        caught_up.is_some(),
        "{victim} did not catch up within 30 s of the load's end: total lag {lag}, {victim} \
         reported by the leader: {seen_victim}, lag series {lags:?}"
    );
}
