//! Router counters, exported in Prometheus' text format at `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Counters>,
}

#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub memds_lookups: AtomicU64,
    pub storage_redirects: AtomicU64,
    pub throttled: AtomicU64,
    pub timeouts: AtomicU64,
    pub lookups_skipped: AtomicU64,
    pub auth_failures: AtomicU64,
}

impl std::ops::Deref for Metrics {
    type Target = Counters;
    fn deref(&self) -> &Counters {
        &self.inner
    }
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &AtomicU64); 11] = [
            (
                "tern_router_requests_total",
                "DynamoDB API requests received",
                &self.requests,
            ),
            (
                "tern_router_client_errors_total",
                "requests answered with a 4xx error",
                &self.client_errors,
            ),
            (
                "tern_router_server_errors_total",
                "requests answered with a 5xx error",
                &self.server_errors,
            ),
            (
                "tern_router_cache_hits_total",
                "routing cache hits",
                &self.cache_hits,
            ),
            (
                "tern_router_cache_misses_total",
                "routing cache misses",
                &self.cache_misses,
            ),
            (
                "tern_router_memds_lookups_total",
                "lookups sent to MemDS",
                &self.memds_lookups,
            ),
            (
                "tern_router_storage_redirects_total",
                "storage redirects followed",
                &self.storage_redirects,
            ),
            (
                "tern_router_throttled_total",
                "requests answered ThrottlingException (in-flight caps of this router included)",
                &self.throttled,
            ),
            (
                "tern_router_timeouts_total",
                "requests answered InternalServerError after the request timeout",
                &self.timeouts,
            ),
            (
                "tern_router_lookups_skipped_total",
                "background lookups of cache hits skipped because the queue to MemDS was full",
                &self.lookups_skipped,
            ),
            (
                "tern_router_auth_failures_total",
                "requests refused because their signature, key, time or scope did not hold",
                &self.auth_failures,
            ),
        ];
        for (name, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}
