//! Router metrics, registered in the process's Prometheus registry and served on the metrics
//! address (`GET /metrics`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tern_telemetry::metrics::{latency_histogram, Counter, EncodeLabelSet, Family, Histogram};

/// Tables named in labels at most; beyond, requests are counted under `table="(other)"`, so a
/// client that sends many table names cannot grow the router's memory without bound.
const MAX_TABLE_LABELS: usize = 1_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub operation: String,
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub operation: String,
    pub table: String,
    pub error: String,
}

type HistogramFamily = Family<OpLabels, Histogram, fn() -> Histogram>;

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Counters>,
    pub registry: tern_telemetry::metrics::Metrics,
}

pub struct Counters {
    pub requests: Counter,
    pub client_errors: Counter,
    pub server_errors: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub memds_lookups: Counter,
    pub storage_redirects: Counter,
    pub throttled: Counter,
    pub timeouts: Counter,
    pub lookups_skipped: Counter,
    pub auth_failures: Counter,
    operations: Family<OpLabels, Counter>,
    latency: HistogramFamily,
    errors: Family<ErrorLabels, Counter>,
    tables: RwLock<HashSet<String>>,
}

impl std::ops::Deref for Metrics {
    type Target = Counters;
    fn deref(&self) -> &Counters {
        &self.inner
    }
}

pub fn inc(c: &Counter) {
    c.inc();
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(tern_telemetry::metrics::Metrics::new())
    }
}

impl Metrics {
    /// The router's metrics, registered in `registry`.
    pub fn new(registry: tern_telemetry::metrics::Metrics) -> Self {
        let m = &registry;
        m.register_build_info("router");
        let counter = |name: &str, help: &str| m.register(name, help, Counter::default());
        let inner = Counters {
            requests: counter("router_requests", "DynamoDB API requests received"),
            client_errors: counter("router_client_errors", "requests answered with a 4xx error"),
            server_errors: counter("router_server_errors", "requests answered with a 5xx error"),
            cache_hits: counter("router_cache_hits", "routing cache hits"),
            cache_misses: counter("router_cache_misses", "routing cache misses"),
            memds_lookups: counter("router_memds_lookups", "lookups sent to MemDS"),
            storage_redirects: counter("router_storage_redirects", "storage redirects followed"),
            throttled: counter(
                "router_throttled",
                "requests answered ThrottlingException (in-flight caps of this router included)",
            ),
            timeouts: counter(
                "router_timeouts",
                "requests answered InternalServerError after the request timeout",
            ),
            lookups_skipped: counter(
                "router_lookups_skipped",
                "background lookups of cache hits skipped because the queue to MemDS was full",
            ),
            auth_failures: counter(
                "router_auth_failures",
                "requests refused because their signature, key, time or scope did not hold",
            ),
            operations: m.register(
                "router_operations",
                "DynamoDB API requests answered, by operation and table",
                Family::default(),
            ),
            latency: m.register(
                "router_operation_duration_seconds",
                "time from a request's arrival to its answer, by operation and table",
                HistogramFamily::new_with_constructor(latency_histogram),
            ),
            errors: m.register(
                "router_operation_errors",
                "requests answered with an error, by operation, table and DynamoDB error type",
                Family::default(),
            ),
            tables: RwLock::default(),
        };
        Self {
            inner: Arc::new(inner),
            registry,
        }
    }

    /// One request answered: `error` is DynamoDB's error type when it failed.
    pub fn answered(
        &self,
        operation: &str,
        table: Option<&str>,
        took: Duration,
        error: Option<&str>,
    ) {
        let labels = OpLabels {
            operation: operation.to_string(),
            table: self.table_label(table),
        };
        self.operations.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    operation: labels.operation,
                    table: labels.table,
                    error: error.to_string(),
                })
                .inc();
        }
    }

    fn table_label(&self, table: Option<&str>) -> String {
        let Some(table) = table else {
            return String::new();
        };
        if self.tables.read().contains(table) {
            return table.to_string();
        }
        let mut tables = self.tables.write();
        if tables.len() >= MAX_TABLE_LABELS {
            return "(other)".to_string();
        }
        tables.insert(table.to_string());
        table.to_string()
    }
}
