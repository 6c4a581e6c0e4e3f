//! Table metadata survives nats-server's death, missing metadata never deletes data, and stale
//! membership reports are refused.
//!
//! - nats-server runs JetStream with every write synced before it is acknowledged (read back from
//!   its `/varz`), and a kill -9 of it under DDL and writes loses no acknowledged table or item.
//! - A replica no table and no tombstone names is kept however long its node reports it; a
//!   replica of a live table on a node its membership leaves out is dropped (the control that
//!   shows the mechanism runs), and so is a replica of a deleted table (tombstone).
//! - A membership report older than the recorded one (a deposed leader's) is refused.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as V;
use common::*;
use futures::StreamExt;
use prost::Message;
use tern_bus::BusError;
use tern_memds_client::MemdsClient;
use tern_model::ErrorCode;
use tern_proto::memds::{PartitionInfo, ReportPartitionRequest, TableInfo};
use tern_proto::node::NodeHeartbeat;
use tern_proto::storage::CreatePartitionRequest;
use tern_proto::subjects;
use tern_storage_client::StorageClient;

/// The tests here each run a cluster: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn describe(cluster: &tern_cluster::Cluster, name: &str) -> TableInfo {
    MemdsClient::new(cluster.bus().clone())
        .describe_table(name)
        .await
        .expect("describe over the bus")
        .table
        .expect("table")
}

/// The partitions `node` reports holding in its next heartbeats (after `settle`).
async fn held_by(cluster: &tern_cluster::Cluster, node: &str, settle: Duration) -> BTreeSet<u64> {
    let mut sub = cluster
        .bus()
        .client()
        .subscribe(subjects::NODE_HEARTBEAT)
        .await
        .unwrap();
    let until = Instant::now() + settle;
    let deadline = until + Duration::from_secs(10);
    let mut held = None;
    while Instant::now() < deadline {
        let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await else {
            continue;
        };
        let hb = NodeHeartbeat::decode(msg.payload.as_ref()).unwrap();
        if hb.node_id == node {
            held = Some(hb.partition_ids.into_iter().collect());
            if Instant::now() >= until {
                break;
            }
        }
    }
    held.unwrap_or_else(|| panic!("no heartbeat from {node}"))
}

/// Creates a replica of `partition` (as the only member, on `node`) directly on the node.
async fn plant(cluster: &tern_cluster::Cluster, node: &str, table: &TableInfo, partition: u64) {
    let mut info = PartitionInfo {
        id: partition,
        epoch: 1,
        hash_start: 0,
        hash_end: u64::MAX,
        leader: node.into(),
        ..Default::default()
    };
    info.replicas.push(tern_proto::memds::Replica {
        node_id: node.into(),
        az: String::new(),
        member_id: 1,
        log: false,
    });
    let req = CreatePartitionRequest {
        table_name: table.name.clone(),
        table_id: table.table_id.clone(),
        partition: Some(info),
    };
    StorageClient::new(cluster.bus().clone())
        .create_partition(node, &req)
        .await
        .expect("create a replica directly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_dropped_only_by_tombstone_or_fenced_membership() {
    let _serial = SERIAL.lock().await;
    let t = start_cluster(&[
        ("TERN_MEMDS_STRAY_GRACE_MS", "500"),
        ("TERN_MEMDS_PARTITIONS_PER_TABLE", "1"),
    ])
    .await;
    let c = client(&t.cluster.endpoint());
    create_table(&c, "kept", None).await;
    let table = describe(&t.cluster, "kept").await;
    let pid = table.partitions[0].id;
    let outsider = NODES
        .iter()
        .find(|n| {
            !table.partitions[0]
                .replicas
                .iter()
                .any(|r| &r.node_id == *n)
        })
        .map(|n| n.to_string());
    // One partition of three replicas on three nodes: every node is a member.
    assert!(outsider.is_none(), "{table:?}");

    // A replica of a partition no table names: its metadata might have been lost.
    let unknown = 0x7e57_0000_0000_0001;
    plant(&t.cluster, "storage-a", &table, unknown).await;
    let held = held_by(&t.cluster, "storage-a", Duration::from_secs(3)).await;
    assert!(
        held.contains(&unknown),
        "a replica no metadata names was deleted (held now: {held:?})"
    );

    // Control: delete the table (a tombstone is written), then plant a replica of its partition:
    // that one is garbage and goes.
    c.delete_table().table_name("kept").send().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while MemdsClient::new(t.cluster.bus().clone())
        .describe_table("kept")
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "the table was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    plant(&t.cluster, "storage-b", &table, pid).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let held = held_by(&t.cluster, "storage-b", Duration::ZERO).await;
        if !held.contains(&pid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a replica of a deleted (tombstoned) table was not dropped"
        );
    }
    // And the unknown one is still there.
    let held = held_by(&t.cluster, "storage-a", Duration::ZERO).await;
    assert!(held.contains(&unknown), "{held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_membership_report_is_refused() {
    let _serial = SERIAL.lock().await;
    let t = start_cluster(&[("TERN_MEMDS_PARTITIONS_PER_TABLE", "1")]).await;
    let c = client(&t.cluster.endpoint());
    create_table(&c, "fenced", None).await;
    // Wait for the leader's first report to be recorded.
    let deadline = Instant::now() + Duration::from_secs(15);
    let p = loop {
        let p = describe(&t.cluster, "fenced").await.partitions[0].clone();
        if p.reported_term > 0 {
            break p;
        }
        assert!(Instant::now() < deadline, "no membership report recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A deposed leader's report (an older term), claiming a member is gone.
    let stale = ReportPartitionRequest {
        partition_id: p.id,
        replicas: p.replicas[..2].to_vec(),
        leader: p.replicas[1].node_id.clone(),
        term: p.reported_term - 1,
        commit_index: p.reported_index + 1_000,
    };
    let err = MemdsClient::new(t.cluster.bus().clone())
        .report_partition(&stale)
        .await
        .expect_err("a stale report must be refused");
    match err {
        BusError::Api(e) => {
            assert_eq!(e.code, ErrorCode::ConditionalCheckFailed, "{e}");
            assert!(e.message.contains("stale report"), "{}", e.message);
        }
        other => panic!("unexpected error {other}"),
    }
    let after = describe(&t.cluster, "fenced").await.partitions[0].clone();
    assert_eq!(
        after.replicas, p.replicas,
        "a stale report changed the members"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_and_items_survive_kill_9_of_nats_server() {
    let _serial = SERIAL.lock().await;
    let mut t = start_cluster(&[]).await;
    // The setting that makes JetStream durable is in force.
    let varz: serde_json::Value =
        serde_json::from_str(&t.cluster.nats().monitor_get("/varz").unwrap()).unwrap();
    assert_eq!(
        varz["jetstream"]["config"]["sync_always"],
        serde_json::Value::Bool(true),
        "nats-server does not sync JetStream writes: {}",
        varz["jetstream"]
    );
    let c = client(&t.cluster.endpoint());
    create_table(&c, "items", None).await;

    // DDL and writes run while nats-server is killed and restarted.
    let tables: Arc<Mutex<Vec<String>>> = Arc::default();
    let items: Arc<Mutex<Vec<u32>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ddl = {
        let (c, tables, stop) = (c.clone(), tables.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("ddl-{i}");
                let r = create_table_request(&c, &name).send().await;
                if r.is_ok() {
                    tables.lock().unwrap().push(name);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let writer = {
        let (c, items, stop) = (c.clone(), items.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c
                    .put_item()
                    .table_name("items")
                    .item("pk", V::S(format!("k{i}")))
                    .item("n", V::N(i.to_string()))
                    .send()
                    .await;
                if r.is_ok() {
                    items.lock().unwrap().push(i);
                }
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = (tables.lock().unwrap().len(), items.lock().unwrap().len());
    t.cluster.nats().kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.cluster.nats().restart().expect("restart nats-server");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ddl.await.unwrap();
    writer.await.unwrap();
    let tables = tables.lock().unwrap().clone();
    let items = items.lock().unwrap().clone();
    println!(
        "acknowledged: {} tables ({} before the kill), {} items ({} before the kill)",
        tables.len(),
        before.0,
        items.len(),
        before.1
    );
    assert!(before.0 > 0 && before.1 > 0, "no work before the kill");
    assert!(
        tables.len() > before.0 && items.len() > before.1,
        "no work after nats-server came back"
    );

    // MemDS restarts from the bucket (as after a power cut) and lists every acknowledged table.
    t.cluster.kill("memds").unwrap();
    t.cluster.restart("memds").await.unwrap();
    let memds = MemdsClient::new(t.cluster.bus().clone());
    for name in &tables {
        let found = memds.describe_table(name).await;
        assert!(
            found.is_ok(),
            "acknowledged table {name} is gone: {found:?}"
        );
    }
    for i in &items {
        let out = c
            .get_item()
            .table_name("items")
            .key("pk", V::S(format!("k{i}")))
            .consistent_read(true)
            .send()
            .await
            .expect("read");
        assert_eq!(
            out.item().and_then(|it| it.get("n")),
            Some(&V::N(i.to_string())),
            "acknowledged item k{i} is gone"
        );
    }
}
