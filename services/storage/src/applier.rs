//! Applying committed entries to the items, on a thread of its own.
//!
//! A replica's engine hands committed entries over under the replica's lock; writing them into
//! fjall can wait on the disk (the journal while the group commit fsyncs, a tree while a flush
//! deletes files) for hundreds of milliseconds. Done there, it held the replica's lock and a tokio
//! worker meanwhile, and the tick loop behind them stopped sending heartbeats: followers elsewhere
//! started elections. So the lock only queues the work ([`Job`]), in log order, and this thread
//! carries it out:
//!
//! - one queue for the node, filled under each replica's lock, so each replica's jobs keep the
//!   order its engine produced them in. It must not block its sender, who holds a replica's lock
//!   the apply thread may need: it is bounded by what feeds it (a leader's writes in progress are
//!   bounded by its write budget, released only when they are applied) and its length is a gauge
//!   (`tern_storage_apply_queue_jobs`);
//! - a consistent read completes through the same queue, after every entry before it is in the
//!   items;
//! - each replica's `gate` is held while a job writes its items. Whoever changes what the items
//!   are (an install taking them away or bringing them back, a replica closed) holds it too, so no
//!   job writes into items that are being replaced, and a later job sees the new applied index.

use std::sync::mpsc;

use prost::Message as _;
use tern_proto::storage::{ReplicatedWrite, WriteKind, WriteResponse};
use tern_replication::{Entry, Index, Payload};
use tern_storage_client::StorageError;

use crate::apply::{apply_write, fatal, ops_of, Staged};
use crate::replication::{Group, Replication};

pub(crate) enum Job {
    /// Committed entries of replica `uid` of partition `pid`, in log order.
    Apply {
        pid: u64,
        uid: u64,
        entries: Vec<Entry>,
        /// Spans of sampled entries among them, ended once they are applied.
        spans: Vec<tracing::Span>,
    },
    /// A consistent read the engine cleared: answer it once the entries before it are applied.
    Read { pid: u64, uid: u64, id: u64 },
}

pub(crate) type ApplyQueue = mpsc::Sender<Job>;

pub(crate) fn queue() -> (ApplyQueue, mpsc::Receiver<Job>) {
    mpsc::channel()
}

type Replies = Vec<(u64, Result<WriteResponse, StorageError>)>;

/// Records entries up to `last` as applied and takes the waiters of the writes among them (to be
/// answered once the replica's lock is released, where the caller can).
fn settle(
    g: &mut Group,
    last: Index,
    results: Replies,
) -> Vec<(
    crate::replication::WriteWaiter,
    Result<WriteResponse, StorageError>,
)> {
    g.applied = last;
    results
        .into_iter()
        .filter_map(|(id, r)| g.writes.remove(&id).map(|w| (w, r)))
        .collect()
}

impl Replication {
    /// Runs the apply thread until every sender is gone.
    pub(crate) fn start_applier(&self, rx: mpsc::Receiver<Job>) {
        let r = self.clone();
        std::thread::Builder::new()
            .name("apply".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    r.inner().metrics.apply_queue.dec();
                    match job {
                        Job::Apply {
                            pid,
                            uid,
                            entries,
                            spans,
                        } => {
                            r.apply_job(pid, uid, entries);
                            drop(spans);
                        }
                        Job::Read { pid, uid, id } => r.finish_read(pid, uid, id),
                    }
                }
            })
            .unwrap_or_else(|e| fatal("start the apply thread", e));
    }

    /// Queues work for the apply thread (called under the replica's lock, which keeps the order).
    pub(crate) fn queue_job(&self, job: Job) {
        self.inner().metrics.apply_queue.inc();
        if self.inner().applier.send(job).is_err() {
            fatal("queue committed entries", "the apply thread is gone");
        }
    }

    fn apply_job(&self, pid: u64, uid: u64, entries: Vec<Entry>) {
        let Some(group) = self.group(pid) else { return };
        let gate = group.lock().gate.clone();
        let _gate = gate.lock();
        let applied = {
            let g = group.lock();
            if g.uid != uid || g.closed || !g.has_items {
                // A log replica, or one whose items are being rebuilt (the install replays what
                // it needs), or one no longer open.
                return;
            }
            g.applied
        };
        let entries: Vec<_> = entries.into_iter().filter(|e| e.index > applied).collect();
        if entries.is_empty() {
            return;
        }
        let (last, results) = self.write_entries(pid, entries);
        let replies = settle(&mut group.lock(), last, results);
        for (w, r) in replies {
            let _ = w.send(r);
        }
    }

    fn finish_read(&self, pid: u64, uid: u64, id: u64) {
        let Some(group) = self.group(pid) else { return };
        let waiter = {
            let mut g = group.lock();
            if g.uid != uid {
                return;
            }
            g.reads.remove(&id)
        };
        if let Some(w) = waiter {
            let _ = w.send(Ok(()));
        }
    }

    /// Applies entries at once, on the caller's thread: for the catch-up after an install, whose
    /// caller holds the replica's gate and lock.
    pub(crate) fn apply_now(&self, g: &mut Group, entries: Vec<Entry>) {
        let entries: Vec<_> = entries
            .into_iter()
            .filter(|e| e.index > g.applied)
            .collect();
        if !g.has_items || entries.is_empty() {
            return;
        }
        let (last, results) = self.write_entries(g.pid, entries);
        for (w, r) in settle(g, last, results) {
            let _ = w.send(r);
        }
    }

    /// Writes committed entries into the items, in log order, with the applied index in the same
    /// batch (so a restart resumes exactly after the last applied entry). Returns the last index
    /// and the outcome of each write this node took from a client.
    fn write_entries(&self, pid: u64, mut entries: Vec<Entry>) -> (Index, Replies) {
        if !self.read_back(pid, &mut entries) {
            fatal(
                "apply committed entries",
                "a committed entry is missing from the durable log",
            );
        }
        let store = &self.inner().store;
        let mut batch = store.batch();
        let mut latest = Staged::new();
        let mut results = Vec::new();
        let mut last = 0;
        for e in entries {
            last = e.index;
            let Payload::Command(bytes) = &e.payload else {
                continue;
            };
            // Every replica must apply every committed entry alike: one this version cannot read
            // stops the replica rather than letting it diverge.
            let rw = ReplicatedWrite::decode(bytes.as_slice())
                .unwrap_or_else(|err| fatal("decode a committed write", err));
            let Some(req) = rw.write else {
                fatal("decode a committed write", "the entry carries no write")
            };
            if req.kind == WriteKind::Checksum as i32 {
                // A scrub marker: the items as they stand right after it are checksummed, off a
                // snapshot taken here, while later entries go on being applied.
                self.inner()
                    .replicas
                    .stage_applied(&mut batch, pid, e.index);
                let done = std::mem::replace(&mut batch, store.batch());
                if let Err(err) = done.commit() {
                    fatal("apply committed entries", err);
                }
                latest.clear();
                self.inner()
                    .checksums
                    .submit(pid, e.index, store.snapshot());
                if rw.origin_node == self.inner().node {
                    let answer = WriteResponse {
                        index: e.index,
                        ..Default::default()
                    };
                    results.push((rw.request_id, Ok(answer)));
                }
                continue;
            }
            let ops = ops_of(&req).unwrap_or_else(|e| fatal("decode a committed write", e));
            let result = apply_write(store, &mut batch, &mut latest, &req, &ops);
            if rw.origin_node == self.inner().node {
                results.push((rw.request_id, result));
            }
        }
        self.inner().replicas.stage_applied(&mut batch, pid, last);
        if let Err(e) = batch.commit() {
            fatal("apply committed entries", e);
        }
        (last, results)
    }

    /// Reads back from the durable log the bytes of entries the engine keeps on disk only; false
    /// if one is no longer there (compacted, or replaced by another leader's).
    pub(crate) fn read_back(&self, pid: u64, entries: &mut [Entry]) -> bool {
        for e in entries.iter_mut() {
            if !matches!(e.payload, Payload::OnDisk { .. }) {
                continue;
            }
            match self.inner().replicas.read_entry(pid, e.index, e.term) {
                Ok(Some(full)) => {
                    *e = full;
                    self.inner().metrics.log_reads.inc();
                }
                Ok(None) => return false,
                Err(err) => fatal("read the replication log", err),
            }
        }
        true
    }
}
