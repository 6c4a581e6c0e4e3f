//! Group commit: one thread applies writes in batches; one journal fsync covers a whole batch,
//! and a batch's writes are acknowledged only after that fsync.
//!
//! Conditions are decided here, in the order writes are applied, against the latest value of the
//! item (including earlier writes of the same batch), so a conditional write never races another.
//!
//! A write is visible in fjall's memtable before its batch is synced. Readers must not return such
//! a value (it might be lost by a crash although nobody acknowledged it), so the writer marks the
//! keys of a batch as pending before committing and clears them after the fsync; a reader that
//! finds its key pending waits for the batch to become durable ([`Pending::wait_durable`]).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tern_model::{ApiError, ErrorCode};
use tern_proto::storage::{WriteRequest, WriteResponse};
use tokio::sync::{mpsc, oneshot, watch};

use crate::apply::{apply_write, fatal, Ops, Staged};
use crate::store::Store;

pub struct WriteOp {
    pub req: WriteRequest,
    pub ops: Ops,
    pub reply: oneshot::Sender<Result<WriteResponse, ApiError>>,
}

// NOTE: writes dominate; boxing them would cost an allocation per write to shrink a rare Stop.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Write(WriteOp),
    Log(LogOp),
    State(StateOp),
    Stop(oneshot::Sender<()>),
}

/// A small durable record (a replica's term and vote) to write with the next batch; `stage` adds
/// it to the batch (the writer knows no key layout), `done` runs after the fsync.
pub struct StateOp {
    pub stage: Box<dyn FnOnce(&mut fjall::OwnedWriteBatch) + Send>,
    pub done: Box<dyn FnOnce() + Send>,
}

/// Replication log entries of one group to make durable, sharing the group commit's fsync with
/// every other group's entries and the unreplicated writes. `done` runs after the fsync.
pub struct LogOp {
    pub partition_id: u64,
    /// The log is first cut here: every entry at or after it goes.
    pub from: u64,
    /// (index, encoded entry), from `from` on.
    pub entries: Vec<(u64, Vec<u8>)>,
    pub done: Box<dyn FnOnce() + Send>,
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
    pending: Arc<Pending>,
}

/// Keys written by a batch that is not yet durable, with the batch's sequence number.
pub struct Pending {
    keys: Mutex<HashMap<Vec<u8>, u64>>,
    durable: watch::Sender<u64>,
}

impl Pending {
    /// The batch a key waits on, if any.
    pub fn batch_of(&self, key: &[u8]) -> Option<u64> {
        self.keys.lock().get(key).copied()
    }

    /// Resolves once batch `seq` is durable.
    pub async fn wait_durable(&self, seq: u64) {
        let mut rx = self.durable.subscribe();
        let _ = rx.wait_for(|d| *d >= seq).await;
    }
}

impl Writer {
    pub fn start(store: Store, group_commit: bool, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(Pending {
            keys: Mutex::new(HashMap::new()),
            durable: watch::channel(0).0,
        });
        let max_batch = if group_commit { max_batch.max(1) } else { 1 };
        let p = pending.clone();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || writer_loop(store, p, rx, max_batch))
            .expect("spawn group-commit thread");
        Self { tx, pending }
    }

    /// Queues a write; the reply comes once it is durable (or rejected).
    pub async fn submit(&self, req: WriteRequest, ops: Ops) -> Result<WriteResponse, ApiError> {
        let (reply, rx) = oneshot::channel();
        let op = WriteOp { req, ops, reply };
        if self.tx.send(Msg::Write(op)).is_err() {
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "storage node is stopping",
            ));
        }
        rx.await.unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "storage node is stopping",
            ))
        })
    }

    /// Queues replication log entries; `op.done` runs once they are durable.
    pub fn append_log(&self, op: LogOp) {
        if self.tx.send(Msg::Log(op)).is_err() {
            tracing::debug!("log append after the writer stopped");
        }
    }

    /// Queues a durable record; `op.done` runs once it is durable.
    pub fn write_state(&self, op: StateOp) {
        if self.tx.send(Msg::State(op)).is_err() {
            tracing::debug!("state write after the writer stopped");
        }
    }

    pub fn pending(&self) -> &Pending {
        &self.pending
    }

    /// Finishes the batch under way and stops the writer thread.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn writer_loop(
    store: Store,
    pending: Arc<Pending>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    max_batch: usize,
) {
    let mut seq = 0u64;
    let mut ops = Vec::with_capacity(max_batch);
    let mut logs = Vec::new();
    let mut states = Vec::new();
    while let Some(msg) = rx.blocking_recv() {
        let mut next = Some(msg);
        let mut stop = None;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(op) => ops.push(op),
                Msg::Log(op) => logs.push(op),
                Msg::State(op) => states.push(op),
                Msg::Stop(done) => stop = Some(done),
            }
            if stop.is_none() && ops.len() + logs.len() < max_batch {
                next = rx.try_recv().ok();
            }
        }
        if !ops.is_empty() || !logs.is_empty() || !states.is_empty() {
            seq += 1;
            let batch = Batch {
                ops: std::mem::take(&mut ops),
                logs: std::mem::take(&mut logs),
                states: std::mem::take(&mut states),
            };
            commit_batch(&store, &pending, seq, batch);
        }
        if let Some(done) = stop {
            let _ = done.send(());
            return;
        }
    }
}

type Reply = (
    oneshot::Sender<Result<WriteResponse, ApiError>>,
    Result<WriteResponse, ApiError>,
);

/// What one group commit carries.
#[derive(Default)]
struct Batch {
    ops: Vec<WriteOp>,
    logs: Vec<LogOp>,
    states: Vec<StateOp>,
}

fn commit_batch(store: &Store, pending: &Pending, seq: u64, work: Batch) {
    let mut batch = store.batch();
    let mut log_done = Vec::new();
    let mut staged_logs = HashMap::new();
    for log in work.logs {
        stage_log(store, &mut batch, &mut staged_logs, &log)
            .unwrap_or_else(|e| fatal("stage log entries", e));
        log_done.push(log.done);
    }
    for state in work.states {
        (state.stage)(&mut batch);
        log_done.push(state.done);
    }
    let mut latest = Staged::new();
    let mut replies: Vec<Reply> = Vec::new();
    for op in work.ops {
        let result = apply_write(store, &mut batch, &mut latest, &op.req, &op.ops);
        replies.push((op.reply, result));
    }
    if !latest.is_empty() || !log_done.is_empty() {
        {
            let mut keys = pending.keys.lock();
            for k in latest.keys() {
                keys.insert(k.clone(), seq);
            }
        }
        batch
            .commit()
            .unwrap_or_else(|e| fatal("commit write batch", e));
        store.sync().unwrap_or_else(|e| fatal("sync journal", e));
        {
            let mut keys = pending.keys.lock();
            for k in latest.keys() {
                if keys.get(k) == Some(&seq) {
                    keys.remove(k);
                }
            }
        }
    }
    pending.durable.send_replace(seq);
    for (reply, result) in replies {
        let _ = reply.send(result);
    }
    for done in log_done {
        done();
    }
}

/// Adds a group's log entries to the batch, removing any entries at or after `from`: those on
/// disk, and those an earlier op of this batch staged (`staged`: partition → last index staged).
fn stage_log(
    store: &Store,
    batch: &mut fjall::OwnedWriteBatch,
    staged: &mut HashMap<u64, u64>,
    log: &LogOp,
) -> fjall::Result<()> {
    let pid = log.partition_id;
    let from = crate::store::log_key(pid, log.from);
    let to = crate::store::log_key(pid, u64::MAX);
    for kv in store.raft_log().range(from..=to) {
        batch.remove(store.raft_log(), kv.key()?);
    }
    if let Some(last) = staged.remove(&pid) {
        // NOTE: within one batch the last write of a key wins, so these removals undo the
        // earlier op's inserts, and the inserts below come after them.
        for index in log.from..=last {
            batch.remove(store.raft_log(), crate::store::log_key(pid, index));
        }
    }
    for (index, bytes) in &log.entries {
        batch.insert(
            store.raft_log(),
            crate::store::log_key(pid, *index),
            bytes.as_slice(),
        );
    }
    if let Some((last, _)) = log.entries.last() {
        staged.insert(pid, *last);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tern_proto::storage::WriteKind;

    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn pending() -> Pending {
        Pending {
            keys: Mutex::new(HashMap::new()),
            durable: watch::channel(0).0,
        }
    }

    fn put(
        key: &[u8],
        value: &str,
        condition: Option<&str>,
    ) -> (WriteOp, oneshot::Receiver<Result<WriteResponse, ApiError>>) {
        let (reply, rx) = oneshot::channel();
        let condition = condition.map(|c| tern_model::parse_condition(c, None, None).unwrap());
        let req = WriteRequest {
            partition_id: 1,
            key: key.to_vec(),
            kind: WriteKind::Put as i32,
            item: bytes::Bytes::from(format!(r#"{{"pk":{{"S":"{value}"}}}}"#)),
            ..Default::default()
        };
        (
            WriteOp {
                req,
                ops: crate::apply::Ops {
                    condition,
                    update: None,
                },
                reply,
            },
            rx,
        )
    }

    fn log(pid: u64, from: u64, entries: &[(u64, &str)], done: Arc<AtomicUsize>) -> LogOp {
        LogOp {
            partition_id: pid,
            from,
            entries: entries
                .iter()
                .map(|(i, b)| (*i, b.as_bytes().to_vec()))
                .collect(),
            done: Box::new(move || {
                done.fetch_add(1, Ordering::SeqCst);
            }),
        }
    }

    fn log_on_disk(store: &Store, pid: u64) -> Vec<(u64, String)> {
        store
            .raft_log()
            .range(crate::store::log_key(pid, 0)..=crate::store::log_key(pid, u64::MAX))
            .map(|kv| {
                let (k, v) = kv.into_inner().unwrap();
                let index = u64::from_be_bytes(k[8..16].try_into().unwrap());
                (index, String::from_utf8(v.to_vec()).unwrap())
            })
            .collect()
    }

    #[test]
    fn queued_writes_share_one_batch_and_one_fsync() {
        let (_dir, store) = store();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut replies = Vec::new();
        for i in 0..100u32 {
            let (op, reply) = put(&i.to_be_bytes(), "v", None);
            tx.send(Msg::Write(op)).ok().unwrap();
            replies.push(reply);
        }
        let (stop, stopped) = oneshot::channel();
        tx.send(Msg::Stop(stop)).ok().unwrap();
        let p = Arc::new(pending());
        writer_loop(store.clone(), p.clone(), rx, 1024);
        assert_eq!(*p.durable.borrow(), 1, "one batch for all 100");
        for mut r in replies {
            assert!(r.try_recv().unwrap().is_ok());
        }
        assert!(stopped.blocking_recv().is_ok());
        // One at a time when group commit is off.
        let (tx, rx) = mpsc::unbounded_channel();
        for i in 0..5u32 {
            tx.send(Msg::Write(put(&i.to_be_bytes(), "w", None).0))
                .ok()
                .unwrap();
        }
        drop(tx);
        let p = Arc::new(pending());
        writer_loop(store, p.clone(), rx, 1);
        assert_eq!(*p.durable.borrow(), 5);
    }

    #[test]
    fn conditions_in_a_batch_see_the_writes_before_them() {
        let (_dir, store) = store();
        let (first, r1) = put(b"k", "first", Some("attribute_not_exists(pk)"));
        let (second, r2) = put(b"k", "second", Some("attribute_not_exists(pk)"));
        let work = Batch {
            ops: vec![first, second],
            ..Default::default()
        };
        commit_batch(&store, &pending(), 1, work);
        assert!(r1.blocking_recv().unwrap().is_ok());
        let refused = r2.blocking_recv().unwrap().unwrap_err();
        assert_eq!(refused.code, ErrorCode::ConditionalCheckFailed);
        let stored = store.get(1, b"k").unwrap().unwrap();
        assert!(String::from_utf8_lossy(&stored).contains("first"));
    }

    #[test]
    fn a_log_op_truncates_what_an_earlier_op_of_its_batch_staged() {
        let (_dir, store) = store();
        let done = Arc::new(AtomicUsize::new(0));
        let on_disk = log(7, 1, &[(1, "a"), (2, "b")], done.clone());
        let work = Batch {
            logs: vec![on_disk],
            ..Default::default()
        };
        commit_batch(&store, &pending(), 1, work);
        let logs = vec![
            log(7, 3, &[(3, "c"), (4, "d"), (5, "e")], done.clone()),
            // A new leader's entries replace 2.. in the same batch.
            log(7, 2, &[(2, "B")], done.clone()),
            log(8, 1, &[(1, "other")], done.clone()),
        ];
        let work = Batch {
            logs,
            ..Default::default()
        };
        commit_batch(&store, &pending(), 2, work);
        assert_eq!(
            log_on_disk(&store, 7),
            vec![(1, "a".into()), (2, "B".into())]
        );
        assert_eq!(log_on_disk(&store, 8), vec![(1, "other".into())]);
        assert_eq!(
            done.load(Ordering::SeqCst),
            4,
            "every op hears it is durable"
        );
    }

    #[tokio::test]
    async fn a_read_of_a_key_not_yet_durable_waits_for_its_batch() {
        let p = Arc::new(pending());
        p.keys.lock().insert(b"k".to_vec(), 3);
        let seq = p.batch_of(b"k").expect("pending");
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.wait_durable(seq).await }
        });
        p.durable.send_replace(2);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "batch 3 is not durable yet");
        p.durable.send_replace(3);
        tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .expect("durable wakes the reader")
            .unwrap();
    }
}
