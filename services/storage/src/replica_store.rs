//! The durable state of the replicas on one node, and its only owner: nothing else builds a
//! `raft_state` key or removes log entries outside the group commit, and every transition whose
//! crash-ordering matters is one method here.
//!
//! Per replica (partition id `pid`), in `raft_state`:
//! - `pid` → hard state (term, vote), fsynced before any message that depends on it leaves;
//! - `pid ++ 'a'` → the index of the last entry applied to the items, committed in the same batch
//!   as the items it stands for;
//! - `pid ++ 's'` → the snapshot metadata the compacted log stands for;
//! - `pid ++ 'r'` → present once the items were rebuilt from a snapshot (founding members always
//!   have items);
//! - `pid ++ 'i'` → present while a snapshot is being installed: the items are incomplete.
//!
//! In `raft_log`: `log_key(pid, index)` → `RaftEntry`, written by the group commit
//! ([`crate::writer`]).

use anyhow::Context;
use fjall::Readable;
use prost::Message as _;
use tern_proto::raft::{RaftEntry, RaftHardState, RaftSnapshotMeta};
use tern_replication::{Entry, HardState, Index, Membership, SnapshotMeta};

use crate::codec;
use crate::store::{log_key, Store};

/// What survives a crash of one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct Durable {
    pub hs: HardState,
    pub snap: SnapshotMeta,
    /// The entries after the snapshot, contiguous.
    pub log: Vec<Entry>,
    /// Entries up to here are in the items.
    pub applied: Index,
    pub rebuilt: bool,
    pub installing: bool,
}

impl Durable {
    pub fn log_end(&self) -> Index {
        self.snap.index + self.log.len() as Index
    }
}

/// How a finished install leaves the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAfterInstall {
    /// The log continues the snapshot: only what the snapshot covers goes.
    Continues,
    /// The log conflicts with the snapshot: all of it goes (the writer already removed what lay
    /// after the snapshot, behind every queued write).
    Conflicts,
}

#[derive(Clone)]
pub struct ReplicaStore {
    store: Store,
}

impl ReplicaStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Reads a replica's durable state; `founding` is its membership before any snapshot.
    pub fn load(
        &self,
        pid: u64,
        founding: Membership,
        max_member_id: u64,
    ) -> anyhow::Result<Durable> {
        let state = self.store.raft_state();
        let hs = match state.get(pid.to_be_bytes())? {
            Some(v) => {
                let h = RaftHardState::decode(v.as_ref()).context("decode hard state")?;
                HardState {
                    term: h.term,
                    voted_for: (h.voted_for != 0).then_some(h.voted_for),
                }
            }
            None => HardState::default(),
        };
        let snap = match state.get(key(pid, SNAPSHOT))? {
            Some(v) => codec::snapshot_from_wire(
                &RaftSnapshotMeta::decode(v.as_ref()).context("decode snapshot metadata")?,
            ),
            None => SnapshotMeta {
                max_member_id,
                membership: founding,
                ..Default::default()
            },
        };
        // The log continues the snapshot; anything before it (a removal not yet flushed) or after
        // a gap is not part of it.
        let mut log = Vec::new();
        for kv in self
            .store
            .raft_log()
            .range(log_key(pid, snap.index + 1)..=log_key(pid, u64::MAX))
        {
            let (_, v) = kv.into_inner()?;
            let e = codec::entry_from_wire(RaftEntry::decode(v.as_ref())?)?;
            if e.index != snap.index + 1 + log.len() as Index {
                break;
            }
            log.push(e);
        }
        let applied = match state.get(key(pid, APPLIED))? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().context("applied index")?),
            None => 0,
        };
        Ok(Durable {
            hs,
            snap,
            log,
            applied,
            rebuilt: state.get(key(pid, REBUILT))?.is_some(),
            installing: state.get(key(pid, INSTALLING))?.is_some(),
        })
    }

    /// The entry at `index` of a replica's log, if the log holds it with term `term` (it may
    /// have been compacted or replaced since the engine dropped its bytes).
    pub fn read_entry(&self, pid: u64, index: Index, term: u64) -> anyhow::Result<Option<Entry>> {
        let Some(v) = self.store.raft_log().get(log_key(pid, index))? else {
            return Ok(None);
        };
        let e = codec::entry_from_wire(RaftEntry::decode(v.as_ref()).context("decode log entry")?)?;
        Ok((e.index == index && e.term == term).then_some(e))
    }

    /// Adds term and vote to a batch (the group commit's, which fsyncs it).
    pub fn stage_hard_state(&self, batch: &mut fjall::OwnedWriteBatch, pid: u64, hs: HardState) {
        let v = RaftHardState {
            term: hs.term,
            voted_for: hs.voted_for.unwrap_or(0),
        };
        batch.insert(
            self.store.raft_state(),
            pid.to_be_bytes().to_vec(),
            v.encode_to_vec(),
        );
    }

    /// Term and vote, durable when this returns (blocks for an fsync).
    #[cfg(test)]
    pub fn save_hard_state(&self, pid: u64, hs: HardState) -> fjall::Result<()> {
        let mut batch = self.store.batch();
        self.stage_hard_state(&mut batch, pid, hs);
        batch.commit()?;
        self.store.sync()
    }

    /// Records, in the batch that applies them, that the items hold the log up to `applied`.
    pub fn stage_applied(&self, batch: &mut fjall::OwnedWriteBatch, pid: u64, applied: Index) {
        batch.insert(
            self.store.raft_state(),
            key(pid, APPLIED),
            applied.to_be_bytes().to_vec(),
        );
    }

    /// The applied index as a database snapshot sees it (consistent with its items).
    pub fn applied_in(&self, snapshot: &fjall::Snapshot, pid: u64) -> fjall::Result<Index> {
        Ok(snapshot
            .get(self.store.raft_state(), key(pid, APPLIED))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Drops the log up to `meta.index` (from `before`, the previous snapshot's index) and
    /// records the snapshot it now stands for. The items up to there must already be durable
    /// (the caller syncs first); a crash before the next sync leaves the old snapshot and the
    /// whole log, which is as good.
    pub fn compact(&self, pid: u64, before: Index, meta: &SnapshotMeta) -> fjall::Result<()> {
        let mut batch = self.store.batch();
        batch.insert(
            self.store.raft_state(),
            key(pid, SNAPSHOT),
            codec::snapshot_to_wire(meta).encode_to_vec(),
        );
        self.stage_log_removal(&mut batch, pid, before, meta.index)?;
        batch.commit()
    }

    /// Marks the items incomplete before an install starts replacing them (durable on return):
    /// a crash before [`Self::finish_install`] restarts the replica without items.
    pub fn begin_install(&self, pid: u64) -> fjall::Result<()> {
        self.store
            .raft_state()
            .insert(key(pid, INSTALLING), Vec::<u8>::new())?;
        self.store.sync()
    }

    /// Ends an install in one fsynced batch: the snapshot metadata, the log it replaces, and for
    /// a replica with items (`items_at`: their log position) the applied index and the rebuilt
    /// mark, with the install mark gone.
    pub fn finish_install(
        &self,
        pid: u64,
        items_at: Option<Index>,
        snap: &SnapshotMeta,
        log: LogAfterInstall,
    ) -> fjall::Result<()> {
        let state = self.store.raft_state();
        let mut batch = self.store.batch();
        if let Some(applied) = items_at {
            batch.insert(state, key(pid, APPLIED), applied.to_be_bytes().to_vec());
            batch.insert(state, key(pid, REBUILT), Vec::<u8>::new());
            batch.remove(state, key(pid, INSTALLING));
        }
        batch.insert(
            state,
            key(pid, SNAPSHOT),
            codec::snapshot_to_wire(snap).encode_to_vec(),
        );
        let upto = match log {
            LogAfterInstall::Conflicts => u64::MAX,
            LogAfterInstall::Continues => snap.index,
        };
        self.stage_log_removal(&mut batch, pid, 0, upto)?;
        batch.commit()?;
        self.store.sync()
    }

    /// Adds the removal of the log entries `from..=to` of a replica to `batch`.
    fn stage_log_removal(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        pid: u64,
        from: Index,
        to: Index,
    ) -> fjall::Result<()> {
        let log = self.store.raft_log();
        for kv in log.range(log_key(pid, from)..=log_key(pid, to)) {
            batch.remove(log, kv.key()?);
        }
        Ok(())
    }

    /// Forgets a replica's log and state (durable on return); its items are the caller's.
    pub fn clear(&self, pid: u64) -> fjall::Result<()> {
        let mut batch = self.store.batch();
        self.stage_log_removal(&mut batch, pid, 0, u64::MAX)?;
        let state = self.store.raft_state();
        batch.remove(state, pid.to_be_bytes().to_vec());
        for tag in [APPLIED, REBUILT, SNAPSHOT, INSTALLING] {
            batch.remove(state, key(pid, tag));
        }
        batch.commit()?;
        self.store.sync()
    }
}

const APPLIED: u8 = b'a';
const REBUILT: u8 = b'r';
const SNAPSHOT: u8 = b's';
const INSTALLING: u8 = b'i';

/// A replica's record in `raft_state` besides its hard state (`pid` alone): `pid ++ tag`.
fn key(pid: u64, tag: u8) -> Vec<u8> {
    let mut k = pid.to_be_bytes().to_vec();
    k.push(tag);
    k
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tern_replication::{MemberKind, Payload};

    use super::*;

    fn founding() -> Membership {
        Membership::new((1..=3).map(|i| (i, MemberKind::Full)))
    }

    /// What a process that dies now leaves on disk: the files as the OS holds them, without what
    /// fjall still buffers. The copy is opened as the restarted node would open it.
    fn crash_image(dir: &Path) -> (tempfile::TempDir, ReplicaStore) {
        fn copy(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                let target = to.join(e.file_name());
                if e.file_type().unwrap().is_dir() {
                    copy(&e.path(), &target);
                } else {
                    std::fs::copy(e.path(), target).unwrap();
                }
            }
        }
        let image = tempfile::tempdir().unwrap();
        copy(dir, image.path());
        let store = Store::open(image.path()).unwrap();
        (image, ReplicaStore::new(store))
    }

    fn open() -> (tempfile::TempDir, Store, ReplicaStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let replicas = ReplicaStore::new(store.clone());
        (dir, store, replicas)
    }

    fn entry(index: Index) -> Entry {
        Entry {
            term: 1,
            index,
            payload: Payload::Command(vec![index as u8]),
        }
    }

    /// Log entries as the group commit writes them, synced.
    fn append(store: &Store, pid: u64, entries: impl IntoIterator<Item = Index>) {
        for i in entries {
            let bytes = codec::entry_to_wire(&entry(i)).encode_to_vec();
            store.raft_log().insert(log_key(pid, i), bytes).unwrap();
        }
        store.sync().unwrap();
    }

    fn load(r: &ReplicaStore, pid: u64) -> Durable {
        r.load(pid, founding(), 3).unwrap()
    }

    #[test]
    fn an_entry_is_read_back_only_with_its_term_and_partition() {
        let (_dir, store, r) = open();
        append(&store, 7, 1..=3);
        assert_eq!(r.read_entry(7, 2, 1).unwrap(), Some(entry(2)));
        assert_eq!(
            r.read_entry(7, 2, 2).unwrap(),
            None,
            "replaced by another term"
        );
        assert_eq!(r.read_entry(7, 4, 1).unwrap(), None, "not written");
        assert_eq!(r.read_entry(8, 2, 1).unwrap(), None, "another partition");
    }

    #[test]
    fn a_saved_vote_survives_a_crash() {
        let (dir, _store, r) = open();
        let hs = HardState {
            term: 4,
            voted_for: Some(2),
        };
        r.save_hard_state(7, hs).unwrap();
        let (_image, after) = crash_image(dir.path());
        assert_eq!(load(&after, 7).hs, hs);
    }

    #[test]
    fn applied_state_is_recorded_with_the_items() {
        let (dir, store, r) = open();
        append(&store, 7, 1..=5);
        let mut batch = store.batch();
        batch.insert(store.items(), b"item".to_vec(), b"v".to_vec());
        r.stage_applied(&mut batch, 7, 5);
        batch.commit().unwrap();
        store.sync().unwrap();
        let (_image, after) = crash_image(dir.path());
        let d = load(&after, 7);
        assert_eq!((d.applied, d.log_end()), (5, 5));
    }

    #[test]
    fn a_compaction_cut_short_leaves_a_log_that_continues_a_snapshot() {
        let (dir, store, r) = open();
        append(&store, 7, 1..=10);
        let meta = SnapshotMeta {
            index: 6,
            term: 1,
            membership: founding(),
            max_member_id: 3,
        };
        r.compact(7, 0, &meta).unwrap();
        // Not synced yet: either state is one the replica can go on from.
        let (_image, cut) = crash_image(dir.path());
        let d = load(&cut, 7);
        assert!(d.snap.index == 0 || d.snap.index == 6, "{:?}", d.snap);
        assert_eq!(d.log_end(), 10, "the log continues the snapshot: {d:?}");
        assert_eq!(d.log.first().map(|e| e.index), Some(d.snap.index + 1));
        store.sync().unwrap();
        let (_image, done) = crash_image(dir.path());
        let d = load(&done, 7);
        assert_eq!((d.snap.index, d.log.len()), (6, 4));
        assert_eq!(d.log[0], entry(7));
    }

    #[test]
    fn an_install_is_all_or_nothing_across_a_crash() {
        let (dir, store, r) = open();
        append(&store, 7, 1..=3);
        r.begin_install(7).unwrap();
        // Items arrive, unsynced; the node dies before the install ends.
        let mut batch = store.batch();
        batch.insert(store.items(), b"half".to_vec(), b"v".to_vec());
        batch.commit().unwrap();
        let (_image, cut) = crash_image(dir.path());
        let d = load(&cut, 7);
        assert!(d.installing && !d.rebuilt, "items marked incomplete: {d:?}");

        let meta = SnapshotMeta {
            index: 20,
            term: 2,
            membership: founding(),
            max_member_id: 4,
        };
        r.finish_install(7, Some(20), &meta, LogAfterInstall::Conflicts)
            .unwrap();
        let (_image, done) = crash_image(dir.path());
        let d = load(&done, 7);
        assert!(!d.installing && d.rebuilt, "{d:?}");
        assert_eq!((d.applied, d.snap.clone(), d.log.len()), (20, meta, 0));
    }

    #[test]
    fn a_log_replica_install_keeps_the_log_after_the_snapshot() {
        let (dir, store, r) = open();
        append(&store, 7, 1..=8);
        let meta = SnapshotMeta {
            index: 5,
            term: 1,
            membership: founding(),
            max_member_id: 3,
        };
        r.finish_install(7, None, &meta, LogAfterInstall::Continues)
            .unwrap();
        let (_image, done) = crash_image(dir.path());
        let d = load(&done, 7);
        assert_eq!((d.snap.index, d.log_end(), d.applied), (5, 8, 0));
        assert!(!d.rebuilt);
    }

    #[test]
    fn a_cleared_replica_starts_afresh() {
        let (dir, store, r) = open();
        append(&store, 7, 1..=4);
        append(&store, 8, 1..=2);
        r.save_hard_state(
            7,
            HardState {
                term: 3,
                voted_for: None,
            },
        )
        .unwrap();
        r.begin_install(7).unwrap();
        r.clear(7).unwrap();
        let (_image, after) = crash_image(dir.path());
        let d = load(&after, 7);
        assert_eq!(d.hs, HardState::default());
        assert!(d.log.is_empty() && !d.installing && d.applied == 0);
        assert_eq!(load(&after, 8).log_end(), 2, "other replicas untouched");
    }
}
