//! All table metadata in memory, kept current by watching the bucket.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use async_nats::jetstream::kv::{Operation, Store};
use futures::StreamExt;
use parking_lot::RwLock;
use prost::Message;
use tern_proto::memds::{LookupBatchResponse, TableInfo};

/// Bucket key of a table.
pub fn key(name: &str) -> String {
    format!("table.{name}")
}

fn name_of(key: &str) -> Option<&str> {
    key.strip_prefix("table.")
}

/// Bucket key of a deleted table's tombstone: its metadata as it was when deletion finished,
/// kept so that a replica of it that turns up later (on a node that was down) is known to be
/// garbage. Replicas of partitions no table and no tombstone names are never dropped.
pub fn tombstone_key(table_id: &str) -> String {
    format!("tombstone.{table_id}")
}

/// A table's metadata with the bucket revision it came from.
type Versioned = (u64, Arc<TableInfo>);

#[derive(Clone, Default)]
pub struct Tables {
    map: Arc<RwLock<HashMap<String, Versioned>>>,
    /// Revision of the latest delete of each name no longer held, so an older put replayed
    /// after it cannot bring the table back.
    removed: Arc<RwLock<HashMap<String, u64>>>,
    /// Partitions of deleted tables (from tombstones).
    deleted: Arc<RwLock<std::collections::HashSet<u64>>>,
}

impl Tables {
    /// Loads every table, then follows the bucket's changes in a background task, which ends
    /// only if the bucket's change feed does (then this instance's view would go stale: MemDS
    /// exits, and its supervisor starts it again).
    pub async fn load_and_watch(kv: Store) -> anyhow::Result<(Self, tokio::task::JoinHandle<()>)> {
        let tables = Tables::default();
        let mut keys = kv.keys().await.context("list metadata keys")?;
        while let Some(key) = keys.next().await {
            let key = key.context("list metadata keys")?;
            if let Some(entry) = kv.entry(key.clone()).await.context("read metadata")? {
                tables.apply(&entry.key, entry.revision, entry.operation, &entry.value);
            }
        }
        let mut watch = kv.watch_all().await.context("watch metadata")?;
        let t = tables.clone();
        let watcher = tokio::spawn(async move {
            while let Some(entry) = watch.next().await {
                match entry {
                    Ok(e) => t.apply(&e.key, e.revision, e.operation, &e.value),
                    Err(e) => tracing::warn!(error = %e, "metadata watch"),
                }
            }
            tracing::error!("metadata watch ended");
        });
        tracing::info!(tables = tables.len(), "metadata loaded");
        Ok((tables, watcher))
    }

    /// Applies one bucket change, ignoring any older than what is held.
    pub fn apply(&self, key: &str, revision: u64, op: Operation, value: &[u8]) {
        if key.starts_with("tombstone.") {
            if op == Operation::Put {
                match TableInfo::decode(value) {
                    Ok(t) => self
                        .deleted
                        .write()
                        .extend(t.partitions.iter().map(|p| p.id)),
                    Err(e) => tracing::error!(key, error = %e, "undecodable tombstone"),
                }
            }
            return;
        }
        let Some(name) = name_of(key) else { return };
        let mut map = self.map.write();
        let mut removed = self.removed.write();
        let newest = map
            .get(name)
            .map(|(rev, _)| *rev)
            .or_else(|| removed.get(name).copied());
        if newest.is_some_and(|rev| rev >= revision) {
            return;
        }
        match op {
            Operation::Put => match TableInfo::decode(value) {
                Ok(t) => {
                    removed.remove(name);
                    map.insert(name.to_string(), (revision, Arc::new(t)));
                }
                Err(e) => tracing::error!(table = name, error = %e, "undecodable table metadata"),
            },
            Operation::Delete | Operation::Purge => {
                map.remove(name);
                removed.insert(name.to_string(), revision);
            }
        }
    }

    /// Reads one table from the bucket (for a miss that may only be this instance's feed lagging
    /// behind another instance's write) and applies what it finds.
    pub async fn refresh(&self, kv: &Store, name: &str) -> Option<Arc<TableInfo>> {
        match kv.entry(key(name)).await {
            Ok(Some(e)) => self.apply(&e.key, e.revision, e.operation, &e.value),
            Ok(None) => {}
            Err(e) => tracing::warn!(table = name, error = %e, "read table metadata"),
        }
        self.get(name)
    }

    /// Whether a durable tombstone names the partition (its table was deleted).
    pub fn is_deleted(&self, partition_id: u64) -> bool {
        self.deleted.read().contains(&partition_id)
    }

    pub fn get(&self, name: &str) -> Option<Arc<TableInfo>> {
        self.map.read().get(name).map(|(_, t)| t.clone())
    }

    /// One lookup per name (names repeat: one per client request), each table answered once.
    pub fn lookup_batch(&self, names: Vec<String>) -> LookupBatchResponse {
        let map = self.map.read();
        let mut seen = std::collections::HashSet::with_capacity(4);
        let mut reply = LookupBatchResponse::default();
        for name in names {
            let found = map.get(&name).map(|(_, t)| t.clone());
            if seen.insert(name.clone()) {
                match found {
                    Some(t) => reply.tables.push((*t).clone()),
                    None => reply.missing.push(name),
                }
            }
        }
        reply
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// Every table, for the reconciler.
    pub fn all(&self) -> Vec<Arc<TableInfo>> {
        self.map.read().values().map(|(_, t)| t.clone()).collect()
    }

    /// Up to `limit` (1..=100, default 100) names after `exclusive_start`, in order, and the last
    /// name returned if more follow.
    pub fn list(&self, exclusive_start: &str, limit: usize) -> (Vec<String>, Option<String>) {
        let limit = if limit == 0 { 100 } else { limit };
        let mut names: Vec<String> = self
            .map
            .read()
            .keys()
            .filter(|n| n.as_str() > exclusive_start)
            .cloned()
            .collect();
        names.sort();
        let more = names.len() > limit;
        names.truncate(limit);
        let last = if more { names.last().cloned() } else { None };
        (names, last)
    }

    /// Replica count per node over all tables, for placement.
    pub fn load_per_node(&self) -> HashMap<String, usize> {
        let mut load = HashMap::new();
        for (_, t) in self.map.read().values() {
            for p in &t.partitions {
                for r in &p.replicas {
                    *load.entry(r.node_id.clone()).or_insert(0) += 1;
                }
            }
        }
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, status: i32) -> Vec<u8> {
        TableInfo {
            name: name.into(),
            status,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn older_revisions_never_replace_newer() {
        let t = Tables::default();
        t.apply("table.a", 5, Operation::Put, &table("a", 1));
        t.apply("table.a", 3, Operation::Put, &table("a", 0));
        assert_eq!(t.get("a").unwrap().status, 1);
        t.apply("table.a", 6, Operation::Delete, &[]);
        assert!(t.get("a").is_none());
        // A put older than the delete, replayed after it, does not bring the table back.
        t.apply("table.a", 5, Operation::Put, &table("a", 1));
        assert!(t.get("a").is_none());
        t.apply("table.a", 7, Operation::Put, &table("a", 1));
        assert!(t.get("a").is_some());
    }

    #[test]
    fn batch_lookups_answer_each_table_once() {
        let t = Tables::default();
        t.apply("table.a", 1, Operation::Put, &table("a", 1));
        let names = ["a", "a", "b", "a"].map(String::from).to_vec();
        let reply = t.lookup_batch(names);
        assert_eq!(reply.tables.len(), 1);
        assert_eq!(reply.tables[0].name, "a");
        assert_eq!(reply.missing, vec!["b".to_string()]);
    }

    #[test]
    fn list_pages_in_name_order() {
        let t = Tables::default();
        for (i, n) in ["c", "a", "b", "d"].iter().enumerate() {
            t.apply(&key(n), i as u64 + 1, Operation::Put, &table(n, 1));
        }
        assert_eq!(
            t.list("", 3),
            (vec!["a".into(), "b".into(), "c".into()], Some("c".into()))
        );
        assert_eq!(t.list("c", 3), (vec!["d".into()], None));
        assert_eq!(t.list("", 0).0.len(), 4);
    }
}
