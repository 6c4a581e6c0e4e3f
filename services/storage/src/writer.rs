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
use tern_model::{ApiError, Condition, ErrorCode};
use tern_proto::storage::{WriteRequest, WriteResponse};
use tokio::sync::{mpsc, oneshot, watch};

use crate::apply::{apply_write, fatal, Staged};
use crate::store::Store;

pub struct WriteOp {
    pub req: WriteRequest,
    pub condition: Option<Condition>,
    pub reply: oneshot::Sender<Result<WriteResponse, ApiError>>,
}

// NOTE: writes dominate; boxing them would cost an allocation per write to shrink a rare Stop.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Write(WriteOp),
    Log(LogOp),
    Stop(oneshot::Sender<()>),
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
    pub async fn submit(
        &self,
        req: WriteRequest,
        condition: Option<Condition>,
    ) -> Result<WriteResponse, ApiError> {
        let (reply, rx) = oneshot::channel();
        let op = WriteOp {
            req,
            condition,
            reply,
        };
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
    while let Some(msg) = rx.blocking_recv() {
        let mut next = Some(msg);
        let mut stop = None;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(op) => ops.push(op),
                Msg::Log(op) => logs.push(op),
                Msg::Stop(done) => stop = Some(done),
            }
            if stop.is_none() && ops.len() + logs.len() < max_batch {
                next = rx.try_recv().ok();
            }
        }
        if !ops.is_empty() || !logs.is_empty() {
            seq += 1;
            commit_batch(&store, &pending, seq, ops.drain(..), logs.drain(..));
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

fn commit_batch(
    store: &Store,
    pending: &Pending,
    seq: u64,
    ops: impl Iterator<Item = WriteOp>,
    logs: impl Iterator<Item = LogOp>,
) {
    let mut batch = store.batch();
    let mut log_done = Vec::new();
    for log in logs {
        stage_log(store, &mut batch, &log).unwrap_or_else(|e| fatal("stage log entries", e));
        log_done.push(log.done);
    }
    let mut latest = Staged::new();
    let mut replies: Vec<Reply> = Vec::new();
    for op in ops {
        let result = apply_write(
            store,
            &mut batch,
            &mut latest,
            &op.req,
            op.condition.as_ref(),
        );
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

/// Adds a group's log entries to the batch, removing any entries at or after `from`.
fn stage_log(store: &Store, batch: &mut fjall::OwnedWriteBatch, log: &LogOp) -> fjall::Result<()> {
    let from = crate::store::log_key(log.partition_id, log.from);
    let to = crate::store::log_key(log.partition_id, u64::MAX);
    for kv in store.raft_log().range(from..=to) {
        batch.remove(store.raft_log(), kv.key()?);
    }
    for (index, bytes) in &log.entries {
        batch.insert(
            store.raft_log(),
            crate::store::log_key(log.partition_id, *index),
            bytes.as_slice(),
        );
    }
    Ok(())
}
