//! MemDS: all routing metadata in memory, answering lookups for any table; the control plane for
//! table DDL.
//!
//! The authoritative metadata is a JetStream key-value bucket (`table.<name>` → [`TableInfo`]),
//! changed only by compare-and-set. Every instance watches the whole bucket and keeps all of it in
//! memory, so any instance answers any lookup; instances serve through one queue group.

mod ddl;
mod heal;
mod kv;
mod nodes;
mod placement;
mod tables;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tern_bus::{Bus, BusError};
use tern_model::{ApiError, ErrorCode};
use tern_proto::memds::{
    CreateTableRequest, ListTablesRequest, ListTablesResponse, LookupBatchRequest, LookupRequest,
    MemdsStats, PlaceReplicaRequest, ReportPartitionRequest, TableNameRequest, TableReply,
};
use tern_proto::node::NodeHeartbeat;
use tern_proto::subjects::{self, queue};

pub use tables::Tables;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub nats_url: String,
    /// The nkey seed this service authenticates to nats-server with (`tern up` writes one per
    /// service); none: connect without credentials.
    pub nats_nkey_file: Option<std::path::PathBuf>,
    /// PEM CA certificate of nats-server's TLS certificate; set: the connection must be TLS.
    pub nats_ca_file: Option<std::path::PathBuf>,
    pub instance: String,
    /// JetStream key-value bucket holding the metadata.
    pub bucket: String,
    /// Partitions a new table starts with.
    pub partitions_per_table: u32,
    /// A storage node not heard from for this long gets no new replicas.
    pub node_timeout_ms: u64,
    /// How often unfinished table creations and deletions are driven forward.
    pub reconcile_ms: u64,
    /// A replica a storage node reports and its table's membership leaves out is dropped after
    /// this long (one of a deleted table at once; one no metadata names never).
    pub stray_grace_ms: u64,
    /// Copies of the metadata bucket's stream: 1 on a single nats-server, 3 on a NATS cluster.
    pub bucket_replicas: usize,
    /// Address for Prometheus' scrape of `/metrics` (e.g. `127.0.0.1:9102`); empty: none.
    pub metrics_listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_nkey_file: None,
            nats_ca_file: None,
            instance: "memds-1".into(),
            bucket: "tern_meta".into(),
            partitions_per_table: 2,
            node_timeout_ms: 5000,
            reconcile_ms: 1000,
            stray_grace_ms: 30_000,
            bucket_replicas: 1,
            metrics_listen: String::new(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Memds {
    pub config: Arc<Config>,
    pub bus: Bus,
    pub kv: async_nats::jetstream::kv::Store,
    pub tables: Tables,
    pub nodes: nodes::Nodes,
    /// Tables looked up (one per name of a batch): the work routers ask of MemDS.
    pub lookups: tern_telemetry::metrics::Counter,
    pub strays: Arc<heal::Strays>,
    /// Partition id → (items, bytes) as its replicas last counted them.
    pub item_stats: Arc<parking_lot::Mutex<std::collections::HashMap<u64, (u64, u64)>>>,
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bus = Bus::connect_instance(
        &config.nats_url,
        &tern_bus::NatsAccess {
            nkey_file: config.nats_nkey_file.clone(),
            ca_file: config.nats_ca_file.clone(),
        },
        "memds",
        &config.instance,
    )
    .await?;
    let registry = tern_telemetry::metrics::Metrics::new();
    registry.register_build_info("memds");
    bus.register_metrics(&registry);
    let kv = kv::open_bucket(bus.client(), &config.bucket, config.bucket_replicas).await?;
    let (tables, watcher) = Tables::load_and_watch(kv.clone()).await?;
    let memds = Memds {
        config: Arc::new(config.clone()),
        bus: bus.clone(),
        kv,
        tables,
        nodes: nodes::Nodes::new(Duration::from_millis(config.node_timeout_ms)),
        lookups: registry.register(
            "memds_lookups",
            "Tables looked up for routers (each name of a batch counts)",
            Default::default(),
        ),
        strays: Arc::default(),
        item_stats: Arc::default(),
    };
    registry.register_collector(Box::new(Gauges(memds.clone())));
    registry.serve(&config.metrics_listen).await?;
    serve(&memds).await?;
    let ready = Arc::new(AtomicBool::new(true));
    tern_bus::serve_health(&bus, "memds", &config.instance, ready).await?;
    let reconciler = tokio::spawn(ddl::reconcile_forever(memds.clone()));
    tracing::info!(instance = %config.instance, bucket = %config.bucket, "memds ready");

    let result = tokio::select! {
        _ = shutdown => Ok(()),
        _ = watcher => Err(anyhow::anyhow!(
            "the metadata change feed ended: this instance's view of the tables would go stale"
        )),
    };
    tracing::info!("memds stopping");
    reconciler.abort();
    bus.drain().await;
    result
}

/// Gauges read from MemDS's state at each scrape.
struct Gauges(Memds);

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("memds gauges")
    }
}

impl tern_telemetry::metrics::Collector for Gauges {
    fn encode(
        &self,
        mut encoder: tern_telemetry::metrics::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let rows = [
            (
                "memds_tables",
                "Tables in this instance's metadata",
                self.0.tables.len(),
            ),
            (
                "memds_storage_nodes_live",
                "Storage nodes heard from within the node timeout",
                self.0.nodes.live().len(),
            ),
        ];
        for (name, help, value) in rows {
            tern_telemetry::metrics::encode_samples(
                &mut encoder,
                name,
                help,
                false,
                [(Vec::new(), value as f64)],
            )?;
        }
        Ok(())
    }
}

async fn serve(m: &Memds) -> Result<(), BusError> {
    let bus = &m.bus;
    let q = Some(queue::MEMDS);
    let s = m.clone();
    bus.serve(subjects::MEMDS_LOOKUP, q, move |req: LookupRequest| {
        s.lookups.inc();
        let reply = s.tables.get(&req.table_name);
        async move {
            match reply {
                Some(t) => Ok(TableReply {
                    table: Some((*t).clone()),
                    ..Default::default()
                }),
                None => Err(not_found().into()),
            }
        }
    })
    .await?;
    let s = m.clone();
    bus.serve(
        subjects::MEMDS_LOOKUP_BATCH,
        q,
        move |req: LookupBatchRequest| {
            s.lookups.inc_by(req.table_names.len() as u64);
            let reply = s.tables.lookup_batch(req.table_names);
            async move { Ok(reply) }
        },
    )
    .await?;
    let s = m.clone();
    bus.serve(
        subjects::MEMDS_CREATE_TABLE,
        q,
        move |req: CreateTableRequest| {
            let s = s.clone();
            async move { ddl::create_table(&s, req).await.map_err(Into::into) }
        },
    )
    .await?;
    let s = m.clone();
    bus.serve(
        subjects::MEMDS_DESCRIBE_TABLE,
        q,
        move |req: TableNameRequest| {
            let s = s.clone();
            async move {
                // Another instance may have created the table a moment ago and this one's feed
                // not yet delivered it: a miss is read from the bucket before it is an answer.
                let t = match s.tables.get(&req.table_name) {
                    Some(t) => Some(t),
                    None => s.tables.refresh(&s.kv, &req.table_name).await,
                };
                match t {
                    Some(t) => {
                        let (item_count, size_bytes) = s.table_stats(&t);
                        Ok(TableReply {
                            table: Some((*t).clone()),
                            item_count,
                            size_bytes,
                        })
                    }
                    None => Err(ApiError::new(
                        ErrorCode::ResourceNotFound,
                        format!(
                            "Requested resource not found: Table: {} not found",
                            req.table_name
                        ),
                    )
                    .into()),
                }
            }
        },
    )
    .await?;
    let s = m.clone();
    bus.serve(
        subjects::MEMDS_LIST_TABLES,
        q,
        move |req: ListTablesRequest| {
            let (names, last) = s.tables.list(&req.exclusive_start, req.limit as usize);
            async move {
                Ok(ListTablesResponse {
                    names,
                    last_evaluated: last.unwrap_or_default(),
                })
            }
        },
    )
    .await?;
    let s = m.clone();
    bus.serve(
        subjects::MEMDS_ALTER_TABLE,
        q,
        move |req: tern_proto::memds::AlterTableRequest| {
            let s = s.clone();
            async move { ddl::alter_table(&s, req).await.map_err(Into::into) }
        },
    )
    .await?;
    let s = m.clone();
    bus.serve(
        subjects::MEMDS_DELETE_TABLE,
        q,
        move |req: TableNameRequest| {
            let s = s.clone();
            async move {
                ddl::delete_table(&s, &req.table_name)
                    .await
                    .map_err(Into::into)
            }
        },
    )
    .await?;
    let s = m.clone();
    bus.serve(
        &subjects::memds_stats(&m.config.instance),
        None,
        move |_: tern_proto::Empty| {
            let stats = MemdsStats {
                lookups: s.lookups.get(),
                tables: s.tables.len() as u64,
            };
            async move { Ok(stats) }
        },
    )
    .await?;
    let s = m.clone();
    bus.serve(
        subjects::MEMDS_PLACE_REPLICA,
        q,
        move |req: PlaceReplicaRequest| {
            let s = s.clone();
            async move { heal::place_replica(&s, req).await.map_err(Into::into) }
        },
    )
    .await?;
    let s = m.clone();
    bus.serve(
        subjects::MEMDS_REPORT_PARTITION,
        q,
        move |req: ReportPartitionRequest| {
            let s = s.clone();
            async move { heal::report_partition(&s, req).await.map_err(Into::into) }
        },
    )
    .await?;
    // Every instance hears every heartbeat (no queue group): each keeps the whole node view.
    let s = m.clone();
    bus.serve(subjects::NODE_HEARTBEAT, None, move |hb: NodeHeartbeat| {
        heal::drop_strays(&s, &hb.node_id, &hb.partition_ids);
        {
            let mut stats = s.item_stats.lock();
            for p in &hb.stats {
                stats.insert(p.partition_id, (p.items, p.bytes));
            }
        }
        s.nodes.heard(hb);
        async { Ok(tern_proto::Empty {}) }
    })
    .await?;
    Ok(())
}

impl Memds {
    /// ItemCount and TableSizeBytes of a table: its partitions' last counts, summed.
    pub(crate) fn table_stats(&self, t: &tern_proto::memds::TableInfo) -> (u64, u64) {
        let stats = self.item_stats.lock();
        t.partitions
            .iter()
            .filter_map(|p| stats.get(&p.id))
            .fold((0, 0), |(i, b), (pi, pb)| (i + pi, b + pb))
    }
}

/// DynamoDB's answer for a data request to a table that does not exist (or is not active).
pub(crate) fn not_found() -> ApiError {
    ApiError::new(ErrorCode::ResourceNotFound, "Requested resource not found")
}
