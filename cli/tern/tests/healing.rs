//! A replica that stays down is replaced: its group's leader adds a log replica on a healthy node
//! of the same zone, rebuilds it into a full replica from a snapshot, and the metadata follows.
//! Writes go on throughout, and the rebuilt replica alone serves every acknowledged item.
//!
//! A replica that comes back after its group compacted the log it missed catches up by snapshot,
//! and recovers from its own compacted log after a restart.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as V;
use common::*;
use tern_cluster::{Cluster, ClusterSpec, StorageNodeSpec};
use tern_proto::memds::{PartitionInfo, TableNameRequest, TableReply};
use tern_proto::subjects;
use tokio::sync::watch;

const TABLE: &str = "healing";

/// The tests here each run a cluster and measure seconds: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn partition(cluster: &Cluster) -> PartitionInfo {
    let reply: TableReply = cluster
        .bus()
        .call(
            subjects::MEMDS_DESCRIBE_TABLE,
            &TableNameRequest {
                table_name: TABLE.into(),
            },
        )
        .await
        .expect("describe table over the bus");
    reply.table.expect("table").partitions[0].clone()
}

/// Starts the cluster with one partition per table, the router in az-a and `env`, and creates the
/// table.
async fn start_with_table(
    mut spec: ClusterSpec,
    env: &[(&str, &str)],
) -> (Cluster, aws_sdk_dynamodb::Client) {
    spec.env = [
        ("TERN_MEMDS_PARTITIONS_PER_TABLE", "1"),
        ("TERN_ROUTER_AZ", "az-a"),
    ]
    .iter()
    .chain(env)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let cluster = Cluster::start(spec).await.expect("start cluster");
    let c = client(&cluster.endpoint());
    create_table(&c, TABLE, None).await;
    (cluster, c)
}

/// The node of the group's member in `az`.
fn member_in(p: &PartitionInfo, az: &str) -> String {
    p.replicas
        .iter()
        .find(|r| r.az == az)
        .unwrap_or_else(|| panic!("a replica in {az}"))
        .node_id
        .clone()
}

fn members(p: &PartitionInfo) -> Vec<(String, bool)> {
    let mut m: Vec<_> = p
        .replicas
        .iter()
        .map(|r| (r.node_id.clone(), r.log))
        .collect();
    m.sort();
    m
}

/// Unique puts until told to stop; returns what was acknowledged and how many calls failed.
async fn writer(
    c: aws_sdk_dynamodb::Client,
    w: usize,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    stop: watch::Receiver<bool>,
) -> u64 {
    let mut failed = 0;
    for i in 0u64.. {
        if *stop.borrow() {
            break;
        }
        let (pk, v) = (format!("h{w}-{i}"), format!("v{w}-{i}"));
        let item = HashMap::from([
            ("pk".to_string(), V::S(pk.clone())),
            ("v".to_string(), V::S(v.clone())),
        ]);
        match c
            .put_item()
            .table_name(TABLE)
            .set_item(Some(item))
            .send()
            .await
        {
            Ok(_) => acked.lock().unwrap().push((pk, v)),
            Err(_) => failed += 1,
        }
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replica_is_replaced_in_its_zone() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path(), bin_dir());
    // storage-a and storage-d share az-a: d is where a's replacement must go.
    spec.storage_nodes.push(StorageNodeSpec {
        id: "storage-d".into(),
        az: "az-a".into(),
    });
    let env = [
        ("TERN_STORAGE_REPLACE_AFTER_MS", "1500"),
        ("TERN_MEMDS_STRAY_GRACE_MS", "1000"),
        // Small logs: the new log replica starts from a snapshot's log position. The archive
        // gate keeps what the archive lacks, so segments are sealed quickly: with the default
        // age (5 s) nothing is archived before the kill, the leader keeps its whole log (up to
        // four times the limit) and the log replica may catch up from the log instead.
        ("TERN_STORAGE_COMPACT_AFTER", "200"),
        ("TERN_ARCHIVER_SEGMENT_AGE_MS", "200"),
    ];
    let (mut cluster, c) = start_with_table(spec, &env).await;

    let before = partition(&cluster).await;
    let az_a = member_in(&before, "az-a");
    let spare = if az_a == "storage-a" {
        "storage-d"
    } else {
        "storage-a"
    };
    println!("group before: {:?}", members(&before));

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(writer(c.clone(), w, acked.clone(), stop_rx.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let killed_at = Instant::now();
    cluster.kill(&az_a).unwrap();
    let (mut log_seen, mut healed) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let p = partition(&cluster).await;
        let m = members(&p);
        if log_seen.is_none() && m.iter().any(|(n, log)| n == spare && *log) {
            log_seen = Some(killed_at.elapsed());
        }
        if !m.iter().any(|(n, _)| *n == az_a) && m.iter().any(|(n, log)| n == spare && !*log) {
            assert_eq!(m.len(), 3, "{m:?}");
            let mut zones: Vec<_> = p.replicas.iter().map(|r| r.az.clone()).collect();
            zones.sort();
            assert_eq!(zones, ["az-a", "az-b", "az-c"], "{:?}", p.replicas);
            assert!(
                p.replicas.iter().any(|r| r.node_id == p.leader),
                "leader hint {} names a member",
                p.leader
            );
            healed = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let healed = healed.unwrap_or_else(|| {
        panic!(
            "the group was not healed within 60 s: {:?}",
            members(&futures_block(&cluster))
        )
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop_tx.send(true).unwrap();
    let mut failed = 0;
    for w in writers {
        failed += w.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    println!(
        "healing: log replica in the metadata after {log_seen:?}, full replica after {healed:?}; \
         {} puts acknowledged, {failed} failed calls",
        acked.len()
    );
    assert!(acked.len() > 50, "writes went on: {} acked", acked.len());
    let missing = missing_writes(&c, TABLE, &acked).await;
    assert!(
        missing.is_empty(),
        "acknowledged writes lost: {:?}",
        &missing[..missing.len().min(5)]
    );

    // Replication metrics of the surviving nodes: a leader was elected after the kill, writes
    // committed through it, its two followers' lag is reported, no log replica is left.
    let (mut leader_changes, mut commits, mut lag_series, mut log_replicas) = (0.0, 0.0, 0, 0.0);
    for (node, u) in cluster.storage_metrics() {
        if node == az_a {
            continue;
        }
        let (status, text) = raw_get(u.trim_end_matches("/metrics"), "/metrics").await;
        assert_eq!(status, 200);
        leader_changes += metric(&text, "tern_storage_leader_changes_total").unwrap_or(0.0);
        commits += metric(&text, "tern_storage_commit_seconds_count").unwrap_or(0.0);
        log_replicas += metric(&text, "tern_storage_log_replicas").unwrap_or(0.0);
        lag_series += text
            .lines()
            .filter(|l| l.starts_with("tern_storage_replication_lag_entries{"))
            .count();
    }
    println!(
        "metrics: {leader_changes} leader changes, {commits} commits, {lag_series} lag series"
    );
    assert!(leader_changes >= 1.0, "leader changes: {leader_changes}");
    assert!(commits > 0.0, "no commit latency recorded");
    assert_eq!(
        lag_series, 2,
        "the leader reports the lag of its two followers"
    );
    assert_eq!(log_replicas, 0.0);
    // The log replica joined after its leader compacted the log: it took a snapshot's log position
    // (no items), then its items in the rebuild.
    let installs = metric_sum(&cluster, &[spare], "tern_storage_snapshots_installed_total").await;
    println!("{spare}: {installs} snapshots installed");
    assert!(installs >= 2.0, "{spare} installed {installs} snapshots");

    // The rebuilt replica alone: with the other two members down there is no quorum, but the
    // router's eventually consistent reads go to its zone's replica, the rebuilt one.
    let others: Vec<String> = partition(&cluster)
        .await
        .replicas
        .iter()
        .map(|r| r.node_id.clone())
        .filter(|n| n != spare)
        .collect();
    for n in &others {
        cluster.kill(n).unwrap();
    }
    let missing = missing_writes_read(&c, TABLE, &acked, false).await;
    assert!(
        missing.is_empty(),
        "the rebuilt replica lacks acknowledged items: {} of {}, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    for n in &others {
        cluster.restart(n).await.unwrap();
    }
    let item = HashMap::from([("pk".to_string(), V::S("after".into()))]);
    c.put_item()
        .table_name(TABLE)
        .set_item(Some(item))
        .send()
        .await
        .expect("the group takes writes again");

    // The replaced node comes back: its replica belongs to no group any more and is dropped.
    cluster.restart(&az_a).await.unwrap();
    let url = |node: &str| {
        cluster
            .storage_metrics()
            .into_iter()
            .find(|(n, _)| n == node)
            .map(|(_, u)| u.trim_end_matches("/metrics").to_string())
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = raw_get(&url(&az_a), "/metrics").await;
        if metric(&text, "tern_storage_replicas") == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stale replica on {az_a} was not dropped:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_compacted_log_catches_up_by_snapshot() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = ClusterSpec::new(dir.path(), bin_dir());
    let env = [
        ("TERN_STORAGE_COMPACT_AFTER", "200"),
        // Not replaced while it is down: it has to catch up.
        ("TERN_STORAGE_REPLACE_AFTER_MS", "600000"),
    ];
    let (mut cluster, c) = start_with_table(spec, &env).await;
    let p = partition(&cluster).await;
    let behind = member_in(&p, "az-a");
    let others: Vec<String> = p
        .replicas
        .iter()
        .map(|r| r.node_id.clone())
        .filter(|n| *n != behind)
        .collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    // Writers `round*4..round*4+4`, so every round writes new keys.
    let run_writers = |secs: u64, round: usize| {
        let (c, acked) = (c.clone(), acked.clone());
        async move {
            let (stop_tx, stop_rx) = watch::channel(false);
            let writers: Vec<_> = (round * 4..round * 4 + 4)
                .map(|w| tokio::spawn(writer(c.clone(), w, acked.clone(), stop_rx.clone())))
                .collect();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            stop_tx.send(true).unwrap();
            let mut failed = 0;
            for w in writers {
                failed += w.await.unwrap();
            }
            failed
        }
    };

    cluster.kill(&behind).unwrap();
    // Write until the live replicas' logs have outgrown the limit several times over, however
    // slow this machine is today (rounds after the first use keys of their own).
    let mut failed = 0;
    for round in [0, 2, 3, 4, 5, 6] {
        failed += run_writers(if round == 0 { 3 } else { 2 }, round).await;
        if acked.lock().unwrap().len() > 800 {
            break;
        }
    }
    let missed = acked.lock().unwrap().len();
    assert!(missed > 600, "too few writes to outgrow the log: {missed}");
    let compactions = metric_sum(&cluster, &others, "tern_storage_log_compactions_total").await;
    assert!(
        compactions >= 2.0,
        "the two live replicas compacted: {compactions}"
    );

    let back_at = Instant::now();
    cluster.restart(&behind).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_sum(
        &cluster,
        &[&behind],
        "tern_storage_snapshots_installed_total",
    )
    .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "{behind} did not install a snapshot within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up = back_at.elapsed();
    let sent = metric_sum(&cluster, &others, "tern_storage_snapshots_sent_total").await;
    assert!(sent >= 1.0, "the leader sent no snapshot");
    // The leader learns where the replica stands from the install's acknowledgement (a replica
    // restarted while its leader compacted past it hears nothing else from it): its lag falls
    // to zero. Left at its old place, the leader would ask for a snapshot again and again, and
    // the replica would hold only what the last one held.
    wait_lag_zero(&cluster, &others, &behind, "after the install").await;
    // Writes go on after the snapshot; then the replica restarts from its compacted log.
    let failed = failed + run_writers(2, 1).await;
    wait_lag_zero(&cluster, &others, &behind, "after the writes").await;
    cluster.kill(&behind).unwrap();
    cluster.restart(&behind).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    wait_lag_zero(&cluster, &others, &behind, "after its restart").await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    println!(
        "catch-up: {missed} puts while {behind} was down, {compactions} compactions; snapshot \
         installed {caught_up:?} after its restart; {} puts acknowledged in all, {failed} failed calls",
        acked.len()
    );

    // The replica alone (no quorum): eventually consistent reads in its zone go to it.
    for n in &others {
        cluster.kill(n).unwrap();
    }
    let missing = missing_writes_read(&c, TABLE, &acked, false).await;
    assert!(
        missing.is_empty(),
        "the caught-up replica lacks acknowledged items: {} of {}, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

/// The replication lag the leader among `nodes` reports for its follower on `peer`, if one does.
async fn lag_of(cluster: &Cluster, nodes: &[&str], peer: &str) -> Option<f64> {
    let label = format!("peer=\"{peer}\"");
    let mut lag = None;
    for (node, u) in cluster.storage_metrics() {
        if !nodes.contains(&node.as_str()) {
            continue;
        }
        let (_, text) = raw_get(u.trim_end_matches("/metrics"), "/metrics").await;
        for line in text.lines() {
            if line.starts_with("tern_storage_replication_lag_entries{") && line.contains(&label) {
                let v: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok())?;
                lag = Some(lag.unwrap_or(0.0) + v);
            }
        }
    }
    lag
}

/// Waits (10 s at most) until the leader among `nodes` reports no lag for `peer`.
async fn wait_lag_zero(cluster: &Cluster, nodes: &[&str], peer: &str, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lag = lag_of(cluster, nodes, peer).await;
        if lag == Some(0.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: the leader still counts {peer} {lag:?} entries behind after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn futures_block(cluster: &Cluster) -> PartitionInfo {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(partition(cluster)))
}
