//! Serving a consistent snapshot of a partition's items, in chunks, to a replica that rebuilds or
//! catches up from it ([`crate::snapshot_install`]). A session pins one fjall snapshot, taken under
//! the group's lock so its items and their log position agree.

use std::collections::HashMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use fjall::Readable;
use parking_lot::Mutex;
use tern_bus::BusError;
use tern_proto::storage::{SnapshotChunk, SnapshotChunkRequest};
use tern_storage_client::StorageError;

use crate::codec;
use crate::replication::Replication;
use crate::snapshot_install::internal;
use crate::store::item_key;

/// Bytes of items per snapshot chunk (an item larger than this goes alone).
const CHUNK_BYTES: usize = 256 * 1024;
/// A snapshot session nobody asked for in this long is closed.
const SESSION_IDLE: Duration = Duration::from_secs(60);
/// Snapshot sessions a node serves at once: each pins a database snapshot (and with it old
/// versions the LSM tree may not drop).
const MAX_SESSIONS: usize = 8;

/// Open snapshot sessions served by this node: a consistent view of the database each.
pub type SnapshotSessions =
    Mutex<HashMap<u64, (fjall::Snapshot, tern_replication::SnapshotMeta, Instant)>>;

impl Replication {
    /// Serves one chunk of a consistent snapshot of a partition's items.
    pub fn snapshot_chunk(&self, req: SnapshotChunkRequest) -> Result<SnapshotChunk, BusError> {
        let pid = req.partition_id;
        let store = &self.inner().store;
        let mut sessions = self.inner().snapshots.lock();
        sessions.retain(|_, (_, _, used)| used.elapsed() < SESSION_IDLE);
        let session = if req.session == 0 {
            let group = self
                .group(pid)
                .ok_or_else(|| BusError::Redirect(String::new()))?;
            // The applied index is committed in the same batch as the items it stands for, so
            // the database snapshot gives both; the group's lock keeps the engine's log from
            // being compacted past it meanwhile (compaction stops at the applied index).
            let g = group.lock();
            if !g.has_items {
                return Err(BusError::Redirect(String::new()));
            }
            if req.meta_only {
                let meta = g
                    .engine
                    .snapshot_at(g.applied)
                    .ok_or_else(|| internal("applied index outside the log"))?;
                return Ok(SnapshotChunk {
                    applied: meta.index,
                    meta: Some(codec::snapshot_to_wire(&meta)),
                    done: true,
                    ..Default::default()
                });
            }
            let snap = store.snapshot();
            let applied = self
                .inner()
                .replicas
                .applied_in(&snap, pid)
                .map_err(internal)?;
            let meta = g
                .engine
                .snapshot_at(applied)
                .ok_or_else(|| internal("applied index outside the log"))?;
            drop(g);
            if sessions.len() >= MAX_SESSIONS {
                return Err(
                    StorageError::Busy("too many snapshot sessions: retry later".into()).into(),
                );
            }
            let id = rand::random::<u64>() | 1;
            sessions.insert(id, (snap, meta, Instant::now()));
            id
        } else {
            req.session
        };
        let Some((snap, meta, used)) = sessions.get_mut(&session) else {
            return Err(StorageError::Unavailable("snapshot session expired".into()).into());
        };
        *used = Instant::now();
        let prefix = pid.to_be_bytes();
        let start = if req.after_key.is_empty() {
            Bound::Included(prefix.to_vec())
        } else {
            Bound::Excluded(item_key(pid, &req.after_key))
        };
        let mut chunk = SnapshotChunk {
            session,
            applied: meta.index,
            meta: Some(codec::snapshot_to_wire(meta)),
            ..Default::default()
        };
        let mut bytes = 0;
        let mut done = true;
        for kv in snap.range::<Vec<u8>, _>(store.items(), (start, Bound::Unbounded)) {
            let (k, v) = kv.into_inner().map_err(internal)?;
            if !k.starts_with(&prefix) {
                break;
            }
            // A chunk stays under its size with the next item in it; an item larger than the
            // chunk size goes alone (items are far below the bus's message limit).
            let size = k.len() + v.len() + 16;
            if bytes > 0 && bytes + size > CHUNK_BYTES {
                done = false;
                break;
            }
            bytes += size;
            chunk.keys.push(k[prefix.len()..].to_vec());
            chunk.values.push(v.to_vec());
        }
        chunk.done = done;
        if done {
            sessions.remove(&session);
        }
        Ok(chunk)
    }
}
