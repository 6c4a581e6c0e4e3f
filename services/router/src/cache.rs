//! The routing cache.
//!
//! In `constant` mode (the default) every request sends a lookup to MemDS, hit or miss: a hit is
//! served from the cache at once and the lookup's answer refreshes the entry in the background.
//! MemDS therefore sees load proportional to client traffic whatever the hit rate, and a cache
//! flush changes nothing for it. `classic` mode looks up on a miss only, for contrast.
//!
//! The background lookups of hits are coalesced: one bus message carries every lookup queued
//! while the previous batches were in flight (one name per request, so MemDS still does one
//! lookup per request); this keeps the bus cost of constant work small.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry::trace::{SpanContext, TraceContextExt};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tern_bus::BusError;
use tern_memds_client::MemdsClient;
use tern_model::{ApiError, ErrorCode};
use tern_proto::memds::{TableInfo, TableReply};
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{inc, Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    Constant,
    Classic,
}

type Entries = Arc<RwLock<HashMap<String, Arc<TableInfo>>>>;

/// Batches of background lookups in flight at once; more lookups wait and join the next batch.
const BATCHES_IN_FLIGHT: usize = 2;
const MAX_BATCH: usize = 1024;
/// Background lookups waiting at most. While MemDS is slow or away the queue fills; beyond this,
/// a hit's lookup is skipped (the entry is still served; its refresh comes with a later hit).
const MAX_QUEUED: usize = 8 * MAX_BATCH;

#[derive(Clone)]
pub struct RouteCache {
    entries: Entries,
    memds: MemdsClient,
    mode: CacheMode,
    metrics: Metrics,
    refresh: mpsc::Sender<Refresh>,
}

/// A background lookup: the table, and the trace context of the request that asked for it when
/// that request is sampled (the batch that carries it links to it).
type Refresh = (String, Option<SpanContext>);

/// The current span's context, when it is sampled.
fn sampled() -> Option<SpanContext> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then_some(sc)
}

impl RouteCache {
    /// Must be called inside a tokio runtime: it starts the background lookup task.
    pub fn new(memds: MemdsClient, mode: CacheMode, metrics: Metrics) -> Self {
        let entries = Entries::default();
        let (refresh, rx) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(refresh_in_batches(
            entries.clone(),
            memds.clone(),
            metrics.clone(),
            rx,
        ));
        Self {
            entries,
            memds,
            mode,
            metrics,
            refresh,
        }
    }

    /// The routing metadata of `table`, from the cache when it holds it.
    pub async fn get(&self, table: &str) -> Result<Arc<TableInfo>, ApiError> {
        let cached = self.entries.read().get(table).cloned();
        match cached {
            Some(t) => {
                inc(&self.metrics.cache_hits);
                if self.mode == CacheMode::Constant
                    && self
                        .refresh
                        .try_send((table.to_string(), sampled()))
                        .is_err()
                {
                    inc(&self.metrics.lookups_skipped);
                }
                Ok(t)
            }
            None => {
                inc(&self.metrics.cache_misses);
                self.lookup(table).await
            }
        }
    }

    /// Asks MemDS and refreshes the cache with the answer.
    pub async fn lookup(&self, table: &str) -> Result<Arc<TableInfo>, ApiError> {
        inc(&self.metrics.memds_lookups);
        match self.memds.lookup(table).await {
            Ok(TableReply { table: Some(t), .. }) => {
                let t = Arc::new(t);
                self.entries.write().insert(table.to_string(), t.clone());
                Ok(t)
            }
            Ok(TableReply { table: None, .. }) => Err(ApiError::new(
                ErrorCode::InternalServerError,
                "empty lookup reply",
            )),
            Err(BusError::Api(e)) if e.code == ErrorCode::ResourceNotFound => {
                self.entries.write().remove(table);
                Err(e)
            }
            Err(e) => Err(e.into_api()),
        }
    }

    /// Drops every entry; returns how many there were.
    pub fn flush(&self) -> usize {
        let mut entries = self.entries.write();
        let n = entries.len();
        entries.clear();
        n
    }

    pub fn invalidate(&self, table: &str) {
        self.entries.write().remove(table);
    }
}

/// Sends queued background lookups to MemDS in batches and applies the answers to the cache.
async fn refresh_in_batches(
    entries: Entries,
    memds: MemdsClient,
    metrics: Metrics,
    mut rx: mpsc::Receiver<Refresh>,
) {
    let permits = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut names = Vec::new();
        let mut links = Vec::new();
        let mut next = Some(first);
        while let Some((name, sc)) = next.take() {
            names.push(name);
            links.extend(sc);
            if names.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        // One span for the batch, linked to every sampled request it carries (it belongs to
        // none of them alone); MemDS's span for it is its child.
        let span = if links.is_empty() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                parent: None,
                "memds.lookup_batch",
                otel.kind = "client",
                messaging.system = "nats",
                messaging.operation.type = "send",
                messaging.destination.name = tern_proto::subjects::MEMDS_LOOKUP_BATCH,
                messaging.batch.message_count = names.len(),
            )
        };
        if let Some(first) = links.first() {
            let _ = span
                .set_parent(opentelemetry::Context::new().with_remote_span_context(first.clone()));
        }
        for sc in links {
            span.add_link(sc);
        }
        metrics.memds_lookups.inc_by(names.len() as u64);
        let (entries, memds) = (entries.clone(), memds.clone());
        tokio::spawn(
            async move {
                match memds.lookup_batch(names).await {
                    Ok(reply) => {
                        let mut map = entries.write();
                        for t in reply.tables {
                            map.insert(t.name.clone(), Arc::new(t));
                        }
                        for name in reply.missing {
                            map.remove(&name);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "background routing lookup"),
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}
