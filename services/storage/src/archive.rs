//! What a replica does for the archive: hands out its committed log, keeps it until the archive
//! holds it (the mark), and checksums its items at scrub markers.
//!
//! A checksum marker is a log entry (a write of kind `Checksum`): every replica reaches it at the
//! same point of the same log, so every replica's items at that entry must be equal, and equal to
//! a reference replica built from the archive up to it. The apply thread commits the items up to
//! the marker, takes a fjall snapshot there (at once: nothing is copied), and hands it to the
//! checksum thread, which reads it while writes go on.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;

use fjall::Readable;
use parking_lot::Mutex;
use tern_bus::BusError;
use tern_proto::archive::{
    ArchiveMark, ArchiveReadRequest, ArchiveReadResponse, ChecksumBuilder, ChecksumRequest,
    ChecksumResponse, ChecksumState, ItemsChecksum,
};

use crate::replication::Replication;
use crate::snapshot_install::internal;
use crate::store::{log_key, Store};

/// Checksums kept per partition (the newest ones); the archiver asks for one soon after its
/// marker is applied.
const KEPT_PER_PARTITION: usize = 4;
/// Snapshots waiting for the checksum thread; beyond it a marker gets no checksum (the archiver
/// sees Unknown and tries again later) rather than pinning more old versions.
const MAX_PENDING: usize = 16;
/// Most bytes and entries one archive read answers.
const MAX_READ_BYTES: u32 = 4 * 1024 * 1024;
const MAX_READ_ENTRIES: u32 = 10_000;

/// The checksum of `pid`'s items in a snapshot of the database.
pub fn items_checksum(
    store: &Store,
    snapshot: &fjall::Snapshot,
    pid: u64,
) -> fjall::Result<ItemsChecksum> {
    let mut sum = ChecksumBuilder::new();
    for kv in snapshot.prefix(store.items(), pid.to_be_bytes()) {
        let (k, v) = kv.into_inner()?;
        sum.add(&k[8..], &v);
    }
    Ok(sum.finish())
}

enum Entry {
    Pending,
    Done(ItemsChecksum),
}

/// Checksums of this node's replicas at scrub markers, newest last per partition.
pub(crate) struct Checksums {
    by_partition: Mutex<HashMap<u64, VecDeque<(u64, Entry)>>>,
    queue: mpsc::SyncSender<(u64, u64, fjall::Snapshot)>,
}

impl Checksums {
    /// Starts the checksum thread.
    pub(crate) fn start(store: Store) -> Arc<Self> {
        let (queue, rx) = mpsc::sync_channel::<(u64, u64, fjall::Snapshot)>(MAX_PENDING);
        let me = Arc::new(Self {
            by_partition: Mutex::default(),
            queue,
        });
        let weak = Arc::downgrade(&me);
        std::thread::Builder::new()
            .name("checksum".into())
            .spawn(move || {
                while let Ok((pid, index, snap)) = rx.recv() {
                    let result = items_checksum(&store, &snap, pid);
                    drop(snap);
                    let Some(me) = weak.upgrade() else { return };
                    match result {
                        Ok(sum) => me.set(pid, index, Entry::Done(sum)),
                        Err(e) => {
                            tracing::warn!(partition = pid, index, error = %e, "checksum items");
                            me.forget(pid, index);
                        }
                    }
                }
            })
            .unwrap_or_else(|e| crate::apply::fatal("start the checksum thread", e));
        me
    }

    /// The apply thread reached a marker: `snapshot` holds the items right after it.
    pub(crate) fn submit(&self, pid: u64, index: u64, snapshot: fjall::Snapshot) {
        self.set(pid, index, Entry::Pending);
        if self.queue.try_send((pid, index, snapshot)).is_err() {
            tracing::warn!(
                partition = pid,
                index,
                "checksum queue full: marker left without a checksum"
            );
            self.forget(pid, index);
        }
    }

    fn set(&self, pid: u64, index: u64, e: Entry) {
        let mut all = self.by_partition.lock();
        let list = all.entry(pid).or_default();
        if let Some(slot) = list.iter_mut().find(|(i, _)| *i == index) {
            slot.1 = e;
            return;
        }
        list.push_back((index, e));
        while list.len() > KEPT_PER_PARTITION {
            list.pop_front();
        }
    }

    fn forget(&self, pid: u64, index: u64) {
        if let Some(list) = self.by_partition.lock().get_mut(&pid) {
            list.retain(|(i, _)| *i != index);
        }
    }

    pub(crate) fn drop_partition(&self, pid: u64) {
        self.by_partition.lock().remove(&pid);
    }

    fn state(&self, pid: u64, index: u64) -> ChecksumResponse {
        let all = self.by_partition.lock();
        let found = all
            .get(&pid)
            .and_then(|l| l.iter().find(|(i, _)| *i == index));
        match found {
            Some((_, Entry::Done(sum))) => ChecksumResponse {
                state: ChecksumState::Done as i32,
                checksum: Some(*sum),
            },
            Some((_, Entry::Pending)) => ChecksumResponse {
                state: ChecksumState::Pending as i32,
                checksum: None,
            },
            None => ChecksumResponse::default(),
        }
    }
}

impl Replication {
    /// Committed, durable and applied log entries from `req.from`, as the log stores them.
    pub fn archive_read(&self, req: ArchiveReadRequest) -> Result<ArchiveReadResponse, BusError> {
        let pid = req.partition_id;
        let group = self
            .group(pid)
            .ok_or_else(|| BusError::Redirect(String::new()))?;
        let (held, log_start) = {
            let g = group.lock();
            if g.installing {
                return Err(BusError::Redirect(String::new()));
            }
            let held = if g.has_items {
                g.applied
            } else {
                g.engine.applied_index()
            };
            (held, g.engine.snapshot().index)
        };
        let mut resp = ArchiveReadResponse {
            held,
            log_start,
            ..Default::default()
        };
        if req.from <= log_start || req.from > held {
            return Ok(resp);
        }
        // Within what one bus message carries, whatever the archiver asks.
        let max_bytes =
            (req.max_bytes.clamp(1, MAX_READ_BYTES) as usize).min(self.inner().max_append_bytes);
        let max_entries = req.max_entries.clamp(1, MAX_READ_ENTRIES) as usize;
        let store = &self.inner().store;
        let (mut bytes, mut next) = (0usize, req.from);
        for kv in store
            .raft_log()
            .range(log_key(pid, req.from)..=log_key(pid, held))
        {
            let (k, v) = kv.into_inner().map_err(internal)?;
            // Entries are contiguous from `from`: one missing (compacted meanwhile) ends the read.
            if k.as_ref() != log_key(pid, next).as_slice() {
                break;
            }
            if !resp.entries.is_empty() && bytes + v.len() > max_bytes {
                break;
            }
            bytes += v.len();
            resp.entries.push(v.to_vec());
            next += 1;
            if resp.entries.len() >= max_entries {
                break;
            }
        }
        Ok(resp)
    }

    /// Records how far the archive holds the group's log (never backwards).
    pub fn archive_mark(&self, req: ArchiveMark) -> Result<(), BusError> {
        let group = self
            .group(req.partition_id)
            .ok_or_else(|| BusError::Redirect(String::new()))?;
        let mut g = group.lock();
        g.archived = g.archived.max(req.archived);
        Ok(())
    }

    pub fn checksum(&self, req: ChecksumRequest) -> ChecksumResponse {
        self.inner().checksums.state(req.partition_id, req.index)
    }
}
