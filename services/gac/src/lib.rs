//! Global admission control: a fleet of instances sharing the tables between them. Each instance
//! announces itself on [`subjects::GAC_HEARTBEAT`]; a table's owner is picked among the live
//! instances by rendezvous hashing (`tern_proto::gac::owner`), so when an owner stops announcing,
//! routers send its tables' reports to the next instance, which takes over from the routers'
//! next reports. Routers report each table's consumption and demand about once a second and get
//! back the rates they may admit at (`grants`).
//!
//! What an owner knows about a table (its burst balance, an on-demand table's peak) lives in its
//! memory only: a takeover starts the table with no balance and the initial on-demand peak.

mod grants;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use serde::{Deserialize, Serialize};
use tern_proto::gac::{GacHeartbeat, GrantRequest, GrantResponse};
use tern_proto::subjects;
use tern_telemetry::metrics::{Counter, Family, Gauge};

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
    /// Address for Prometheus' scrape of `/metrics` (e.g. `127.0.0.1:9104`); empty: none.
    pub metrics_listen: String,
    /// How often this instance announces itself, in milliseconds.
    pub heartbeat_ms: u64,
    /// Seconds of unused provisioned capacity a table may save for bursts (DynamoDB: 300).
    pub burst_seconds: f64,
    /// A new on-demand table's previous peak, in units per second; it admits twice this at once
    /// (DynamoDB: 6,000 read and 2,000 write units, so 12,000 and 4,000).
    pub on_demand_initial_read_units: f64,
    pub on_demand_initial_write_units: f64,
    /// How old traffic must be before it counts as an on-demand table's previous peak, in
    /// seconds (DynamoDB: doubling within 30 minutes may be throttled).
    pub on_demand_peak_delay_seconds: u64,
    /// Tables this instance keeps state for; beyond, the least recently reported is forgotten.
    pub max_tables: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_nkey_file: None,
            nats_ca_file: None,
            instance: "gac-1".into(),
            metrics_listen: String::new(),
            heartbeat_ms: 500,
            burst_seconds: 300.0,
            on_demand_initial_read_units: 6000.0,
            on_demand_initial_write_units: 2000.0,
            on_demand_peak_delay_seconds: 1800,
            max_tables: 100_000,
        }
    }
}

/// Per table id: its name and the routers that reported it (whose series to remove with it).
type Seen = std::collections::HashMap<String, (String, Vec<String>)>;

/// A table idle this long at every router is forgotten.
const TABLE_IDLE: Duration = Duration::from_secs(600);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrantLabels {
    table: String,
    kind: &'static str,
    router: String,
}

#[derive(Clone)]
struct Metrics {
    reports: Counter,
    table_rate: Family<TableLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    burst: Family<TableLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    granted: Family<GrantLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    tables: Gauge,
}

impl Metrics {
    fn new(registry: &tern_telemetry::metrics::Metrics) -> Self {
        Self {
            reports: registry.register(
                "gac_table_reports",
                "Tables' reports handled (one per table per router report)",
                Counter::default(),
            ),
            table_rate: registry.register(
                "gac_table_rate_units",
                "A table's admitted rate, units per second (provisioned, or on-demand's twice its peak)",
                Family::default(),
            ),
            burst: registry.register(
                "gac_burst_balance_units",
                "Unused capacity a provisioned table has saved for bursts, in units",
                Family::default(),
            ),
            granted: registry.register(
                "gac_granted_rate_units",
                "The rate granted to each router for a table, units per second",
                Family::default(),
            ),
            tables: registry.register(
                "gac_tables_owned",
                "Tables this instance holds admission state for",
                Gauge::default(),
            ),
        }
    }

    fn forget(&self, table: &str, routers: &[String]) {
        for kind in ["read", "write"] {
            let l = TableLabels {
                table: table.to_string(),
                kind,
            };
            self.table_rate.remove(&l);
            self.burst.remove(&l);
            for router in routers {
                self.granted.remove(&GrantLabels {
                    table: table.to_string(),
                    kind,
                    router: router.clone(),
                });
            }
        }
    }
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let registry = tern_telemetry::metrics::Metrics::new();
    registry.register_build_info("gac");
    let metrics = Metrics::new(&registry);
    let bus = tern_bus::Bus::connect_instance(
        &config.nats_url,
        &tern_bus::NatsAccess {
            nkey_file: config.nats_nkey_file.clone(),
            ca_file: config.nats_ca_file.clone(),
        },
        "gac",
        &config.instance,
    )
    .await?;
    bus.register_metrics(&registry);
    registry.serve(&config.metrics_listen).await?;
    let limits = grants::Limits {
        burst_seconds: config.burst_seconds.max(0.0),
        initial_read_peak: config.on_demand_initial_read_units.max(1.0),
        initial_write_peak: config.on_demand_initial_write_units.max(1.0),
        peak_delay: Duration::from_secs(config.on_demand_peak_delay_seconds),
        max_tables: config.max_tables.max(1),
    };
    let tables = Arc::new(Mutex::new(grants::Tables::new(limits, Instant::now())));
    // Router names seen per table, for removing their series when the table is forgotten.
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let instance = config.instance.clone();
    {
        let (tables, seen, metrics, instance) = (
            tables.clone(),
            seen.clone(),
            metrics.clone(),
            instance.clone(),
        );
        bus.serve(
            &subjects::gac_grant(&config.instance),
            None,
            move |req: GrantRequest| {
                let now = Instant::now();
                let mut out = GrantResponse {
                    instance: instance.clone(),
                    grants: Vec::with_capacity(req.tables.len()),
                };
                let mut tables = tables.lock();
                let mut seen = seen.lock();
                for d in &req.tables {
                    let (grant, decision, evicted) = tables.report(&req.router, d, now);
                    if let Some(id) = evicted {
                        if let Some((name, routers)) = seen.remove(&id) {
                            metrics.forget(&name, &routers);
                        }
                    }
                    metrics.reports.inc();
                    let entry = seen
                        .entry(d.table_id.clone())
                        .or_insert_with(|| (d.table_name.clone(), Vec::new()));
                    if !entry.1.contains(&req.router) && entry.1.len() < 64 {
                        entry.1.push(req.router.clone());
                    }
                    for (kind, rate, burst, granted) in [
                        (
                            "read",
                            decision.read_rate,
                            decision.read_burst,
                            grant.read_rate,
                        ),
                        (
                            "write",
                            decision.write_rate,
                            decision.write_burst,
                            grant.write_rate,
                        ),
                    ] {
                        let l = TableLabels {
                            table: d.table_name.clone(),
                            kind,
                        };
                        metrics.table_rate.get_or_create(&l).set(rate);
                        metrics.burst.get_or_create(&l).set(burst);
                        metrics
                            .granted
                            .get_or_create(&GrantLabels {
                                table: d.table_name.clone(),
                                kind,
                                router: req.router.clone(),
                            })
                            .set(granted);
                    }
                    out.grants.push(grant);
                }
                metrics.tables.set(tables.len() as i64);
                async move { Ok(out) }
            },
        )
        .await?;
    }
    let heartbeat = {
        let bus = bus.clone();
        let every = Duration::from_millis(config.heartbeat_ms.max(50));
        let beat = GacHeartbeat {
            instance: config.instance.clone(),
            on_demand_initial_read_units: config.on_demand_initial_read_units,
            on_demand_initial_write_units: config.on_demand_initial_write_units,
        };
        let (tables, seen, metrics) = (tables.clone(), seen.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = bus.publish(subjects::GAC_HEARTBEAT, &beat).await {
                    tracing::warn!(error = %e, "heartbeat not sent");
                }
                let gone = tables.lock().expire(TABLE_IDLE, Instant::now());
                let mut seen = seen.lock();
                for (id, _) in gone {
                    if let Some((name, routers)) = seen.remove(&id) {
                        metrics.forget(&name, &routers);
                    }
                }
            }
        })
    };
    let ready = Arc::new(AtomicBool::new(true));
    tern_bus::serve_health(&bus, "gac", &config.instance, ready).await?;
    tracing::info!(instance = %config.instance, "gac ready");
    shutdown.await;
    heartbeat.abort();
    bus.drain().await;
    Ok(())
}
