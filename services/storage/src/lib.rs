//! A storage node: partition replicas on one fjall database, served over the bus.
//!
//! Every partition is a replication group ([`replication`]); the group-commit writer
//! ([`writer`]) makes the logs of all groups durable with one journal fsync per batch, and no
//! write is acknowledged before a quorum's copies of it are durable.

mod applier;
mod apply;
pub mod archive;
mod capacity;
mod codec;
mod compaction;
mod handlers;
mod heal;
mod metrics;
mod partitions;
pub mod reference;
mod repair;
mod replica_store;
mod replication;
mod snapshot_install;
mod snapshot_source;
mod store;
mod traces;
mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tern_bus::Bus;
use tern_proto::{node::NodeHeartbeat, subjects};

pub use store::Store;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub nats_url: String,
    /// The nkey seed this service authenticates to nats-server with (`tern up` writes one per
    /// service); none: connect without credentials.
    pub nats_nkey_file: Option<std::path::PathBuf>,
    /// PEM CA certificate of nats-server's TLS certificate; set: the connection must be TLS.
    pub nats_ca_file: Option<std::path::PathBuf>,
    /// Unique node id; a NATS subject token ([A-Za-z0-9_-]).
    pub node_id: String,
    /// Availability zone label.
    pub az: String,
    pub data_dir: PathBuf,
    /// One fsync for many log appends; `false` syncs each on its own (for comparison only).
    pub group_commit: bool,
    /// Most writes one group commit takes.
    pub max_batch: usize,
    pub heartbeat_ms: u64,
    /// A replica that acknowledges nothing for this long is replaced by its group's leader (a log
    /// replica on a healthy node at once, rebuilt into a full replica after).
    pub replace_after_ms: u64,
    /// A replica's log is compacted once it holds this many applied entries (half of them are
    /// kept, for followers a little behind); a follower behind the compacted log catches up by
    /// snapshot.
    pub compact_after: u64,
    /// ... or once its entries hold this many payload bytes, so memory is bounded by bytes
    /// whatever the item size.
    pub compact_bytes: u64,
    /// Payload bytes the logs of all replicas on the node may hold (on disk): each replica's byte
    /// limit is this shared among them when that is less than `compact_bytes` (at least 1 MiB
    /// each).
    pub log_budget_bytes: u64,
    /// Command bytes the logs of all replicas on the node keep in memory, shared among them
    /// (256 KiB to 8 MiB each). Older entries are read back from disk when a follower behind
    /// needs them.
    pub log_cache_bytes: u64,
    /// Address for Prometheus' scrape of `/metrics` (e.g. `127.0.0.1:9101`); empty: none.
    pub metrics_listen: String,
    /// How often the items of each replica are counted for DescribeTable's ItemCount and
    /// TableSizeBytes (DynamoDB refreshes them about every six hours); the first count runs
    /// `stats_first_ms` after start.
    pub stats_interval_ms: u64,
    pub stats_first_ms: u64,
    /// The node's own limits, in capacity units per second over all its partitions: a node at
    /// its limit throttles every partition, so that no table can take the node from the others.
    pub node_read_units: f64,
    pub node_write_units: f64,
    /// Seconds of unused capacity a PROVISIONED table's partition may save for bursts
    /// (DynamoDB: 300).
    pub burst_seconds: f64,
    /// An archiver ships this cluster's logs: each replica keeps its log until the archive holds
    /// it (up to four times the compaction limits, then the archive gets a gap).
    pub archive_gate: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_nkey_file: None,
            nats_ca_file: None,
            node_id: "storage-1".into(),
            az: "az-a".into(),
            data_dir: "data/storage-1".into(),
            group_commit: true,
            max_batch: 1024,
            heartbeat_ms: 1000,
            replace_after_ms: 10_000,
            compact_after: 20_000,
            compact_bytes: 32 * 1024 * 1024,
            log_budget_bytes: 256 * 1024 * 1024,
            log_cache_bytes: 64 * 1024 * 1024,
            metrics_listen: String::new(),
            node_read_units: 200_000.0,
            node_write_units: 50_000.0,
            burst_seconds: 300.0,
            archive_gate: false,
            stats_interval_ms: 6 * 3600 * 1000,
            stats_first_ms: 30_000,
        }
    }
}

/// Runs the storage node until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bus = Bus::connect_instance(
        &config.nats_url,
        &tern_bus::NatsAccess {
            nkey_file: config.nats_nkey_file.clone(),
            ca_file: config.nats_ca_file.clone(),
        },
        "storage",
        &config.node_id,
    )
    .await?;
    let store = Store::open(&config.data_dir).context("open store")?;
    let partitions = partitions::Partitions::load(&store).context("load partitions")?;
    let registry = tern_telemetry::metrics::Metrics::with_labels(&[("node", &config.node_id)]);
    registry.register_build_info("storage");
    let metrics = Arc::new(metrics::ReplicationMetrics::new(registry.clone()));
    bus.register_metrics(&registry);
    let writer = writer::Writer::start(
        store.clone(),
        if config.group_commit {
            config.max_batch
        } else {
            1
        },
        Some(writer::FsyncMetrics {
            fsync: metrics.fsync.clone(),
            batch: metrics.fsync_batch.clone(),
        }),
    );
    let replication = replication::Replication::start(
        replication::Placement {
            node: config.node_id.clone(),
            az: config.az.clone(),
        },
        store.clone(),
        writer.clone(),
        bus.clone(),
        Duration::from_millis(config.replace_after_ms),
        replication::LogLimits {
            compact: replication::CompactLimits {
                entries: config.compact_after.max(2),
                bytes: config.compact_bytes.max(1024 * 1024),
            },
            budget: config.log_budget_bytes,
            cache: config.log_cache_bytes,
            archive_gate: config.archive_gate,
        },
        metrics,
    );
    for p in partitions.all() {
        replication.open_group(&p).context("recover replica")?;
    }
    replication.serve(&bus).await?;
    let capacity = capacity::Capacity::new(capacity::Limits {
        node_read_units: config.node_read_units,
        node_write_units: config.node_write_units,
        burst_seconds: config.burst_seconds,
    });
    registry.register_collector(Box::new(capacity::Collector(Arc::downgrade(&capacity))));
    let node = handlers::Node::new(
        config.node_id.clone(),
        store.clone(),
        partitions,
        writer,
        replication,
        capacity,
    );
    node.serve(&bus).await?;
    let ready = Arc::new(AtomicBool::new(false));
    tern_bus::serve_health(&bus, "storage", &config.node_id, ready.clone()).await?;
    let stats = Stats::default();
    let counter = tokio::spawn(count_items(config.clone(), node.clone(), stats.clone()));
    let heartbeat = tokio::spawn(heartbeat(bus.clone(), config.clone(), node.clone(), stats));
    registry
        .serve(&config.metrics_listen)
        .await
        .context("metrics_listen")?;
    ready.store(true, Ordering::Release);
    tracing::info!(node = %config.node_id, az = %config.az, dir = %config.data_dir.display(), "storage node ready");

    shutdown.await;
    tracing::info!("storage node stopping");
    heartbeat.abort();
    counter.abort();
    bus.drain().await;
    node.writer().shutdown().await;
    store.sync().context("sync store at shutdown")?;
    Ok(())
}

/// Item count and bytes of each replica holding items, as last counted.
type Stats = Arc<parking_lot::Mutex<std::collections::HashMap<u64, (u64, u64)>>>;

/// Counts the items of every replica that holds items, now and then (a range read of the
/// partition in a blocking task, one partition at a time).
async fn count_items(config: Config, node: handlers::Node, stats: Stats) {
    tokio::time::sleep(Duration::from_millis(config.stats_first_ms)).await;
    let mut tick = tokio::time::interval(Duration::from_millis(config.stats_interval_ms.max(100)));
    loop {
        tick.tick().await;
        let mut counted = std::collections::HashMap::new();
        for pid in node.partition_ids() {
            if !node.has_items(pid) {
                continue;
            }
            let n = node.clone();
            match tokio::task::spawn_blocking(move || n.count_items(pid)).await {
                Ok(Ok(c)) => {
                    counted.insert(pid, c);
                }
                Ok(Err(e)) => tracing::warn!(partition = pid, error = %e, "count items"),
                Err(e) => tracing::warn!(partition = pid, error = %e, "count items"),
            }
        }
        *stats.lock() = counted;
    }
}

async fn heartbeat(bus: Bus, config: Config, node: handlers::Node, stats: Stats) {
    let mut tick = tokio::time::interval(Duration::from_millis(config.heartbeat_ms));
    loop {
        tick.tick().await;
        let msg = NodeHeartbeat {
            node_id: config.node_id.clone(),
            az: config.az.clone(),
            replicas: node.replica_count() as u32,
            partition_ids: node.partition_ids(),
            stats: stats
                .lock()
                .iter()
                .map(|(pid, (items, bytes))| tern_proto::node::PartitionStats {
                    partition_id: *pid,
                    items: *items,
                    bytes: *bytes,
                })
                .collect(),
        };
        if let Err(e) = bus.publish(subjects::NODE_HEARTBEAT, &msg).await {
            tracing::debug!(error = %e, "publish heartbeat");
        }
    }
}
