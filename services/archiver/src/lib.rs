//! The archiver: ships every partition's committed log to an object store (S3, or a local
//! directory by default) as sealed, checksummed segments, keeps a reference replica of every
//! partition rebuilt from the archive alone, and scrubs the live replicas against each other and
//! against the reference (`docs/archive.md`).

mod backups;
mod metrics;
mod objects;
mod partition;
mod restore;
mod scrub;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tern_bus::Bus;
use tern_memds_client::MemdsClient;
use tern_proto::memds::{ListTablesRequest, TableStatus};
use tern_storage_client::StorageClient;

pub use objects::Archive;
pub use partition::Partition;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub nats_url: String,
    /// The nkey seed this service authenticates to nats-server with (`tern up` writes one per
    /// service); none: connect without credentials.
    pub nats_nkey_file: Option<PathBuf>,
    /// PEM CA certificate of nats-server's TLS certificate; set: the connection must be TLS.
    pub nats_ca_file: Option<PathBuf>,
    pub instance: String,
    /// Address for Prometheus' scrape of `/metrics` (e.g. `127.0.0.1:9104`); empty: none.
    pub metrics_listen: String,
    /// Ship logs and scrub (false: the archiver only answers health checks).
    pub enabled: bool,
    /// Where the reference replicas live.
    pub data_dir: PathBuf,
    /// `local` (a directory, `local_dir`) or `s3`.
    pub store: String,
    pub local_dir: PathBuf,
    pub s3_bucket: String,
    /// Empty: AWS's endpoint for the region; else e.g. `http://127.0.0.1:9000` (MinIO).
    pub s3_endpoint: String,
    pub s3_region: String,
    /// Empty: the AWS environment and instance credentials.
    pub s3_access_key_id: String,
    pub s3_secret_access_key: tern_config::Secret,
    /// One request to S3 gives up after this long (a stalled store fails the round, which is
    /// retried with backoff, instead of holding it).
    pub s3_timeout_ms: u64,
    /// Object names start with this (e.g. a cluster's name).
    pub prefix: String,
    /// A segment is sealed once it holds this many bytes of log...
    pub segment_bytes: usize,
    /// ... or its oldest entry has waited this long.
    pub segment_age_ms: u64,
    /// How often each partition's replicas are asked for new log.
    pub poll_ms: u64,
    /// A partition with nothing new is polled less and less often, down to once in this long (the
    /// first write after an idle spell waits up to this long to be read, so it bounds the
    /// archive's lag after idleness; DynamoDB's latest restorable time is minutes behind).
    pub idle_poll_ms: u64,
    /// A partition's reference items are archived as a snapshot once this many bytes of log, and
    /// at least as many as the last snapshot held, were archived after it (0: only the snapshots
    /// that bridge gaps). Restores and reference rebuilds start from the newest usable snapshot,
    /// so they replay at most about this much log; the archive grows by at most twice the log.
    pub snapshot_bytes: u64,
    /// How often each partition is scrubbed (0: never).
    pub scrub_interval_ms: u64,
    /// Rebuild a replica that scrub found wrong from a good one.
    pub repair: bool,
    /// Scrub compares the replicas with the reference rebuilt from the archive as well as with
    /// each other; false: with each other only (the majority decides), for an archive that is
    /// known to be incomplete, and to test the comparison of the replicas alone.
    pub scrub_reference: bool,
    /// How often the tables and their partitions are listed from MemDS.
    pub discover_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_nkey_file: None,
            nats_ca_file: None,
            instance: "archiver-1".into(),
            metrics_listen: String::new(),
            enabled: true,
            data_dir: "data/archiver".into(),
            store: "local".into(),
            local_dir: "data/archive".into(),
            s3_bucket: "tern-archive".into(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: Default::default(),
            s3_timeout_ms: 10_000,
            prefix: String::new(),
            segment_bytes: 4 * 1024 * 1024,
            segment_age_ms: 5_000,
            poll_ms: 200,
            idle_poll_ms: 10_000,
            snapshot_bytes: 64 * 1024 * 1024,
            scrub_interval_ms: 10 * 60 * 1000,
            repair: true,
            scrub_reference: true,
            discover_ms: 2_000,
        }
    }
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let access = tern_bus::NatsAccess {
        nkey_file: config.nats_nkey_file.clone(),
        ca_file: config.nats_ca_file.clone(),
    };
    let registry = tern_telemetry::metrics::Metrics::new();
    registry.register_build_info("archiver");
    let metrics = Arc::new(metrics::ArchiverMetrics::new(&registry));
    if !config.enabled {
        registry.serve(&config.metrics_listen).await?;
        return tern_bus::serve_health_until(
            &config.nats_url,
            &access,
            "archiver",
            &config.instance,
            shutdown,
        )
        .await
        .map_err(Into::into);
    }
    let bus =
        Bus::connect_instance(&config.nats_url, &access, "archiver", &config.instance).await?;
    bus.register_metrics(&registry);
    let archive = Archive::open(&config)?;
    let reference = tern_storage::reference::Reference::open(&config.data_dir.join("reference"))?;
    let ctx = Arc::new(partition::Ctx {
        archive,
        reference,
        storage: StorageClient::new(bus.clone()),
        metrics,
        segment_bytes: config.segment_bytes.max(1024),
        segment_age: Duration::from_millis(config.segment_age_ms.max(10)),
        poll: Duration::from_millis(config.poll_ms.max(10)),
        idle_poll: Duration::from_millis(config.idle_poll_ms.max(config.poll_ms).max(10)),
        snapshot_bytes: config.snapshot_bytes,
        scrub_every: Duration::from_millis(config.scrub_interval_ms),
        repair: config.repair,
        scrub_reference: config.scrub_reference,
        restore_dir: config.data_dir.join("restore"),
    });
    let memds = MemdsClient::new(bus.clone());
    {
        let m = memds.clone();
        bus.serve(
            tern_proto::subjects::ARCHIVER_RESTORE,
            None,
            move |req: tern_proto::archive::RestoreRequest| {
                let memds = m.clone();
                async move {
                    restore::start(memds, req)
                        .await
                        .map_err(tern_bus::BusError::Api)
                }
            },
        )
        .await?;
        let (ctx, memds) = (ctx.clone(), memds.clone());
        bus.serve(
            tern_proto::subjects::ARCHIVER_BACKUP,
            None,
            move |req: tern_proto::archive::BackupRequest| {
                let (ctx, memds) = (ctx.clone(), memds.clone());
                async move {
                    backups::handle(ctx, memds, req)
                        .await
                        .map_err(tern_bus::BusError::Api)
                }
            },
        )
        .await?;
    }
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tern_bus::serve_health(&bus, "archiver", &config.instance, ready.clone()).await?;
    registry
        .serve(&config.metrics_listen)
        .await
        .context("metrics_listen")?;
    let discovery = tokio::spawn(discover_forever(
        ctx.clone(),
        memds,
        Duration::from_millis(config.discover_ms.max(100)),
    ));
    ready.store(true, Ordering::Release);
    tracing::info!(store = %config.store, "archiver ready");
    shutdown.await;
    tracing::info!("archiver stopping");
    discovery.abort();
    bus.drain().await;
    ctx.reference
        .sync()
        .context("sync the reference replicas")?;
    Ok(())
}

/// Follows the tables in MemDS: a task pair (shipping, scrub) per partition of every active
/// table, stopped when the partition goes away (its archive stays).
async fn discover_forever(ctx: Arc<partition::Ctx>, memds: MemdsClient, every: Duration) {
    let mut parts: HashMap<u64, Arc<Partition>> = HashMap::new();
    // Restores this instance carries on (found CREATING after a restart, or started here).
    let mut restoring: std::collections::HashSet<String> = Default::default();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let (seen, restores) = match list_partitions(&memds).await {
            Ok(seen) => seen,
            Err(e) => {
                tracing::debug!(error = %e, "list tables");
                continue;
            }
        };
        restoring.retain(|t| restores.contains(t));
        for t in restores {
            if restoring.insert(t.clone()) {
                tokio::spawn(restore::run_until_done(ctx.clone(), memds.clone(), t));
            }
        }
        for (table, info) in &seen {
            match parts.get(&info.id) {
                Some(p) => *p.info.lock() = info.clone(),
                None => {
                    let p = Partition::new(table.clone(), info.clone());
                    tokio::spawn(partition::ship_forever(ctx.clone(), p.clone()));
                    if !ctx.scrub_every.is_zero() {
                        tokio::spawn(partition::scrub_forever(ctx.clone(), p.clone()));
                    }
                    parts.insert(info.id, p);
                }
            }
        }
        parts.retain(|pid, p| {
            let keep = seen.iter().any(|(_, i)| i.id == *pid);
            if !keep {
                p.stopped.store(true, Ordering::Release);
            }
            keep
        });
    }
}

/// The partitions of every ACTIVE table, and the tables being restored.
async fn list_partitions(
    memds: &MemdsClient,
) -> anyhow::Result<(Vec<(String, tern_proto::memds::PartitionInfo)>, Vec<String>)> {
    // One page of names, then their tables in one lookup: two requests per 100 tables, each
    // round (not one per table).
    let (mut out, mut restores) = (Vec::new(), Vec::new());
    let mut start = String::new();
    loop {
        let page = memds
            .list_tables(&ListTablesRequest {
                exclusive_start: start.clone(),
                limit: 100,
            })
            .await?;
        if !page.names.is_empty() {
            for t in memds.lookup_batch(page.names).await?.tables {
                if t.status == TableStatus::Creating as i32 && t.restore.is_some() {
                    restores.push(t.name.clone());
                }
                if t.status != TableStatus::Active as i32 {
                    continue;
                }
                out.extend(t.partitions.iter().map(|p| (t.name.clone(), p.clone())));
            }
        }
        if page.last_evaluated.is_empty() {
            break;
        }
        start = page.last_evaluated;
    }
    Ok((out, restores))
}
