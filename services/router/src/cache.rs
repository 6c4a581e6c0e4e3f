//! The routing cache.
//!
//! In `constant` mode (the default) every request sends a lookup to MemDS, hit or miss: a hit is
//! served from the cache at once and the lookup's answer refreshes the entry in the background.
//! MemDS therefore sees load proportional to client traffic whatever the hit rate, and a cache
//! flush changes nothing for it. `classic` mode looks up on a miss only, for contrast.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tern_bus::{Bus, BusError};
use tern_model::{ApiError, ErrorCode};
use tern_proto::memds::{LookupRequest, TableInfo, TableReply};
use tern_proto::subjects;

use crate::metrics::{inc, Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    Constant,
    Classic,
}

#[derive(Clone)]
pub struct RouteCache {
    entries: Arc<RwLock<HashMap<String, Arc<TableInfo>>>>,
    bus: Bus,
    mode: CacheMode,
    metrics: Metrics,
}

impl RouteCache {
    pub fn new(bus: Bus, mode: CacheMode, metrics: Metrics) -> Self {
        Self {
            entries: Arc::default(),
            bus,
            mode,
            metrics,
        }
    }

    /// The routing metadata of `table`, from the cache when it holds it.
    pub async fn get(&self, table: &str) -> Result<Arc<TableInfo>, ApiError> {
        let cached = self.entries.read().get(table).cloned();
        match cached {
            Some(t) => {
                inc(&self.metrics.cache_hits);
                if self.mode == CacheMode::Constant {
                    let this = self.clone();
                    let name = table.to_string();
                    tokio::spawn(async move {
                        let _ = this.lookup(&name).await;
                    });
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
        let req = LookupRequest {
            table_name: table.to_string(),
        };
        match self
            .bus
            .call::<_, TableReply>(subjects::MEMDS_LOOKUP, &req)
            .await
        {
            Ok(TableReply { table: Some(t) }) => {
                let t = Arc::new(t);
                self.entries.write().insert(table.to_string(), t.clone());
                Ok(t)
            }
            Ok(TableReply { table: None }) => Err(ApiError::new(
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

    pub fn invalidate(&self, table: &str) {
        self.entries.write().remove(table);
    }
}
