//! A reference replica: a partition's items rebuilt from the archive alone (a snapshot, then the
//! archived log applied in order), by the same apply code every storage replica runs. The
//! archiver keeps one per partition and checksums it at every scrub marker, as the live
//! replicas do.

use std::path::Path;

use anyhow::Context;
use fjall::Readable;
use prost::Message as _;
use tern_proto::archive::ItemsChecksum;
use tern_proto::raft::{EntryKind, RaftEntry};
use tern_proto::storage::{ReplicatedWrite, WriteKind};

use crate::apply::{apply_write, ops_of, Staged};
use crate::archive::items_checksum;
use crate::store::{item_key, Store};

/// What applying archived entries found.
#[derive(Debug, Default)]
pub struct Applied {
    /// The checksum of the items at each checksum marker, by the marker's index.
    pub markers: Vec<(u64, ItemsChecksum)>,
    /// The greatest leader clock among the writes applied (0: none among these entries).
    pub max_time_ms: u64,
}

/// Reference replicas of many partitions, in one fjall database of their own.
#[derive(Clone)]
pub struct Reference {
    store: Store,
}

fn applied_key(pid: u64) -> Vec<u8> {
    let mut k = pid.to_be_bytes().to_vec();
    k.extend_from_slice(b"ref");
    k
}

impl Reference {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            store: Store::open(dir).context("open the reference store")?,
        })
    }

    /// The log index the partition's reference items stand at (0: none yet).
    pub fn applied(&self, pid: u64) -> anyhow::Result<u64> {
        let v = self.store.raft_state().get(applied_key(pid))?;
        Ok(v.map_or(0, |v| {
            u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))
        }))
    }

    /// Replaces the partition's items with a snapshot's, standing at `index`.
    pub fn reset(&self, pid: u64, index: u64) -> anyhow::Result<()> {
        self.store.drop_items(pid)?;
        self.set_applied(pid, index)
    }

    fn set_applied(&self, pid: u64, index: u64) -> anyhow::Result<()> {
        self.commit(pid, self.store.batch(), index)
    }

    /// Adds items of a snapshot part (storage keys without the partition prefix).
    pub fn insert_items(
        &self,
        pid: u64,
        keys: &[Vec<u8>],
        values: &[Vec<u8>],
    ) -> anyhow::Result<()> {
        let mut b = self.store.batch();
        for (k, v) in keys.iter().zip(values) {
            b.insert(self.store.items(), item_key(pid, k), v.as_slice());
        }
        b.commit()?;
        Ok(())
    }

    /// Applies archived log entries (encoded `RaftEntry`s, in order, each the one after the
    /// reference's applied index) and checksums the items at every marker among them.
    pub fn apply(&self, pid: u64, entries: &[Vec<u8>]) -> anyhow::Result<Applied> {
        let mut next = self.applied(pid)? + 1;
        let mut out = Applied::default();
        let mut batch = self.store.batch();
        let mut staged = Staged::new();
        for bytes in entries {
            let e = RaftEntry::decode(bytes.as_slice()).context("decode an archived entry")?;
            if e.index < next {
                continue;
            }
            anyhow::ensure!(
                e.index == next,
                "archived log has a gap: expected entry {next}, found {}",
                e.index
            );
            next += 1;
            if e.kind != EntryKind::Command as i32 {
                continue;
            }
            let rw = ReplicatedWrite::decode(e.data.as_slice()).context("decode a write")?;
            let req = rw.write.context("an archived entry without its write")?;
            out.max_time_ms = out.max_time_ms.max(rw.time_ms);
            if req.kind == WriteKind::Checksum as i32 {
                self.commit(
                    pid,
                    std::mem::replace(&mut batch, self.store.batch()),
                    e.index,
                )?;
                staged.clear();
                let snap = self.store.snapshot();
                out.markers
                    .push((e.index, items_checksum(&self.store, &snap, pid)?));
                continue;
            }
            let ops = ops_of(&req).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            // A write whose condition failed (or that was invalid) changes nothing, as on the
            // replicas; its answer went to the client long ago.
            let _ = apply_write(&self.store, &mut batch, &mut staged, &req, &ops);
        }
        self.commit(pid, batch, next - 1)?;
        Ok(out)
    }

    fn commit(
        &self,
        pid: u64,
        mut batch: fjall::OwnedWriteBatch,
        index: u64,
    ) -> anyhow::Result<()> {
        batch.insert(
            self.store.raft_state(),
            applied_key(pid),
            index.to_be_bytes().to_vec(),
        );
        batch.commit()?;
        Ok(())
    }

    /// The checksum of the partition's reference items now.
    pub fn checksum(&self, pid: u64) -> anyhow::Result<ItemsChecksum> {
        Ok(items_checksum(&self.store, &self.store.snapshot(), pid)?)
    }

    /// The partition's items in storage-key order (keys without the partition prefix), from a
    /// snapshot taken now: at most `limit` after `after`.
    pub fn items(
        &self,
        pid: u64,
        after: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.items_after(pid, after, limit, usize::MAX)
    }

    /// The partition's items after `after` in storage-key order (keys without the partition
    /// prefix), from a snapshot taken now, until they hold at least `max_bytes` (or none are left).
    pub fn items_up_to(
        &self,
        pid: u64,
        after: &[u8],
        max_bytes: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.items_after(pid, after, usize::MAX, max_bytes)
    }

    /// Items after `after` until `limit` of them or at least `max_bytes` of keys and values.
    fn items_after(
        &self,
        pid: u64,
        after: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let snap = self.store.snapshot();
        let start = item_key(pid, after);
        let mut out = Vec::new();
        let mut bytes = 0;
        for kv in snap.range(self.store.items(), start.clone()..) {
            let (k, v) = kv.into_inner()?;
            if !k.starts_with(&pid.to_be_bytes()) {
                break;
            }
            if !after.is_empty() && k.as_ref() == start.as_slice() {
                continue;
            }
            bytes += k.len() - 8 + v.len();
            out.push((k[8..].to_vec(), v.to_vec()));
            if out.len() >= limit || bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Forgets a partition.
    pub fn remove(&self, pid: u64) -> anyhow::Result<()> {
        self.store.drop_items(pid)?;
        let mut b = self.store.batch();
        b.remove(self.store.raft_state(), applied_key(pid));
        b.commit()?;
        Ok(())
    }

    /// Makes what was applied durable.
    pub fn sync(&self) -> anyhow::Result<()> {
        Ok(self.store.sync()?)
    }
}
