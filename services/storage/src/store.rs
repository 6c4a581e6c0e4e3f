//! The node's fjall database: `items` holds every partition's items under
//! `partition id (8 bytes, big-endian) ++ storage key`; `partitions` holds the replicas' metadata.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    items: Keyspace,
    partitions: Keyspace,
    raft_log: Keyspace,
    raft_state: Keyspace,
}

/// Key of a replication log entry: partition id then index, both big-endian.
pub fn log_key(partition_id: u64, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&partition_id.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

pub fn item_key(partition_id: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&partition_id.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Largest memtable of the items before it is flushed to a table on disk.
const ITEMS_MEMTABLE: u64 = 32 * 1024 * 1024;
/// Largest memtable of the replication log (entries live there briefly: compaction drops them).
const LOG_MEMTABLE: u64 = 16 * 1024 * 1024;

impl Store {
    pub fn open(dir: &Path) -> fjall::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder(dir).manual_journal_persist(true).open()?;
        // NOTE: memtables are resident until flushed; fjall's 64 MiB default per keyspace, for
        // items and log alike, would make up most of a node's memory under large items.
        let items = db.keyspace("items", || {
            KeyspaceCreateOptions::default().max_memtable_size(ITEMS_MEMTABLE)
        })?;
        let partitions = db.keyspace("partitions", KeyspaceCreateOptions::default)?;
        let raft_log = db.keyspace("raft_log", || {
            KeyspaceCreateOptions::default().max_memtable_size(LOG_MEMTABLE)
        })?;
        let raft_state = db.keyspace("raft_state", KeyspaceCreateOptions::default)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                items,
                partitions,
                raft_log,
                raft_state,
            }),
        })
    }

    pub fn get(&self, partition_id: u64, key: &[u8]) -> fjall::Result<Option<Bytes>> {
        let v = self.inner.items.get(item_key(partition_id, key))?;
        Ok(v.map(|v| Bytes::copy_from_slice(&v)))
    }

    /// A consistent view of every keyspace at this instant.
    pub fn snapshot(&self) -> fjall::Snapshot {
        self.inner.db.snapshot()
    }

    pub fn batch(&self) -> fjall::OwnedWriteBatch {
        self.inner.db.batch()
    }

    pub fn items(&self) -> &Keyspace {
        &self.inner.items
    }

    pub fn partitions(&self) -> &Keyspace {
        &self.inner.partitions
    }

    /// Replication log entries of every group: `log_key(partition, index)` → `RaftEntry`.
    pub fn raft_log(&self) -> &Keyspace {
        &self.inner.raft_log
    }

    /// Per group: `partition id` → hard state, `partition id ++ "a"` → applied index.
    pub fn raft_state(&self) -> &Keyspace {
        &self.inner.raft_state
    }

    /// Makes everything committed so far durable (fsync of the journal).
    pub fn sync(&self) -> fjall::Result<()> {
        self.inner.db.persist(PersistMode::SyncAll)
    }

    /// Removes every item of a partition (in batches, each synced).
    pub fn drop_items(&self, partition_id: u64) -> fjall::Result<usize> {
        let mut removed = 0;
        loop {
            let keys: Vec<_> = self
                .inner
                .items
                .prefix(partition_id.to_be_bytes())
                .take(1000)
                .map(|kv| kv.key())
                .collect::<Result<_, _>>()?;
            if keys.is_empty() {
                break;
            }
            let mut batch = self.batch();
            for k in &keys {
                batch.remove(&self.inner.items, k.clone());
            }
            batch.commit()?;
            removed += keys.len();
        }
        self.sync()?;
        Ok(removed)
    }
}
