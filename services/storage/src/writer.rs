//! Group commit: one thread makes the replication logs and replica states of every group on the
//! node durable in batches; one journal fsync covers a whole batch, and each op hears it is
//! durable only after that fsync. The replicas apply committed entries themselves
//! (`replication.rs`), never ahead of what this thread made durable.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::apply::fatal;
use crate::store::Store;

enum Msg {
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
/// every other group's entries. `done` runs after the fsync.
pub struct LogOp {
    pub partition_id: u64,
    /// The log is first cut here: every entry at or after it goes.
    pub from: u64,
    /// (index, encoded entry), from `from` on.
    pub entries: Vec<(u64, Vec<u8>)>,
    pub done: Box<dyn FnOnce() + Send>,
}

/// What the group-commit thread measures.
#[derive(Clone)]
pub struct FsyncMetrics {
    /// Seconds per batch: the journal write and its fsync.
    pub fsync: tern_telemetry::metrics::Histogram,
    /// Ops per batch.
    pub batch: tern_telemetry::metrics::Histogram,
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Writer {
    /// Starts the writer thread; `max_batch` ops at most per fsync (1: every op synced alone).
    pub fn start(store: Store, max_batch: usize, metrics: Option<FsyncMetrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let max_batch = max_batch.max(1);
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                writer_loop(store, rx, max_batch, metrics);
            })
            .expect("spawn group-commit thread");
        Self { tx }
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

    /// Finishes the batch under way and stops the writer thread.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Runs until the channel closes or a stop arrives; returns how many batches it synced.
fn writer_loop(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    max_batch: usize,
    metrics: Option<FsyncMetrics>,
) -> u64 {
    let mut synced = 0u64;
    let mut ends = LogEnds::default();
    let mut logs = Vec::new();
    let mut states = Vec::new();
    while let Some(msg) = rx.blocking_recv() {
        let mut next = Some(msg);
        let mut stop = None;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Log(op) => logs.push(op),
                Msg::State(op) => states.push(op),
                Msg::Stop(done) => stop = Some(done),
            }
            if stop.is_none() && logs.len() + states.len() < max_batch {
                next = rx.try_recv().ok();
            }
        }
        if !logs.is_empty() || !states.is_empty() {
            synced += 1;
            let started = std::time::Instant::now();
            let ops = logs.len() + states.len();
            commit_batch(
                &store,
                &mut ends,
                Batch {
                    logs: std::mem::take(&mut logs),
                    states: std::mem::take(&mut states),
                },
            );
            if let Some(m) = &metrics {
                m.fsync.observe(started.elapsed().as_secs_f64());
                m.batch.observe(ops as f64);
            }
        }
        if let Some(done) = stop {
            let _ = done.send(());
            break;
        }
    }
    synced
}

/// What one group commit carries.
#[derive(Default)]
struct Batch {
    logs: Vec<LogOp>,
    states: Vec<StateOp>,
}

/// For every partition this thread has written log entries of: no entry of its log is above
/// this index. Only this thread inserts log entries (others only remove them: compaction, a
/// cleared replica), so the bound stays true, and an append starting above it truncates
/// nothing: it skips reading the log's tail, which was the costliest part of an append (a
/// range over the memtables and every table of `raft_log`). A partition not yet in the map
/// (after a restart) is read once.
#[derive(Default)]
struct LogEnds(HashMap<u64, u64>);

fn commit_batch(store: &Store, ends: &mut LogEnds, work: Batch) {
    let mut batch = store.batch();
    let mut done = Vec::new();
    let mut staged_logs = HashMap::new();
    for log in work.logs {
        stage_log(store, &mut batch, ends, &mut staged_logs, &log)
            .unwrap_or_else(|e| fatal("stage log entries", e));
        done.push(log.done);
    }
    for state in work.states {
        (state.stage)(&mut batch);
        done.push(state.done);
    }
    if !done.is_empty() {
        batch
            .commit()
            .unwrap_or_else(|e| fatal("commit write batch", e));
        store.sync().unwrap_or_else(|e| fatal("sync journal", e));
    }
    for done in done {
        done();
    }
}

/// Adds a group's log entries to the batch, removing any entries at or after `from`: those on
/// disk (unless `ends` shows there are none), and those an earlier op of this batch staged
/// (`staged`: partition → last index staged).
fn stage_log(
    store: &Store,
    batch: &mut fjall::OwnedWriteBatch,
    ends: &mut LogEnds,
    staged: &mut HashMap<u64, u64>,
    log: &LogOp,
) -> fjall::Result<()> {
    let pid = log.partition_id;
    let truncates = ends.0.get(&pid).is_none_or(|end| log.from <= *end);
    if truncates {
        let from = crate::store::log_key(pid, log.from);
        let to = crate::store::log_key(pid, u64::MAX);
        for kv in store.raft_log().range(from..=to) {
            batch.remove(store.raft_log(), kv.key()?);
        }
        ends.0.insert(pid, log.from.saturating_sub(1));
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
        ends.0.insert(pid, *last);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
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
    fn queued_ops_share_one_batch_and_one_fsync() {
        let (_dir, store) = store();
        let (tx, rx) = mpsc::unbounded_channel();
        let done = Arc::new(AtomicUsize::new(0));
        for pid in 0..100u64 {
            tx.send(Msg::Log(log(pid, 1, &[(1, "e")], done.clone())))
                .ok()
                .unwrap();
        }
        let (stop, stopped) = oneshot::channel();
        tx.send(Msg::Stop(stop)).ok().unwrap();
        assert_eq!(
            writer_loop(store.clone(), rx, 1024, None),
            1,
            "one batch for all 100"
        );
        assert_eq!(done.load(Ordering::SeqCst), 100);
        assert!(stopped.blocking_recv().is_ok());
        assert_eq!(log_on_disk(&store, 42), vec![(1, "e".into())]);
        // One at a time when group commit is off.
        let (tx, rx) = mpsc::unbounded_channel();
        for pid in 0..5u64 {
            tx.send(Msg::Log(log(pid, 2, &[(2, "f")], done.clone())))
                .ok()
                .unwrap();
        }
        drop(tx);
        assert_eq!(writer_loop(store, rx, 1, None), 5);
    }

    #[test]
    fn a_log_op_truncates_what_an_earlier_op_of_its_batch_staged() {
        let (_dir, store) = store();
        let done = Arc::new(AtomicUsize::new(0));
        let on_disk = log(7, 1, &[(1, "a"), (2, "b")], done.clone());
        let mut ends = LogEnds::default();
        commit_batch(
            &store,
            &mut ends,
            Batch {
                logs: vec![on_disk],
                ..Default::default()
            },
        );
        let logs = vec![
            log(7, 3, &[(3, "c"), (4, "d"), (5, "e")], done.clone()),
            // A new leader's entries replace 2.. in the same batch.
            log(7, 2, &[(2, "B")], done.clone()),
            log(8, 1, &[(1, "other")], done.clone()),
        ];
        commit_batch(
            &store,
            &mut ends,
            Batch {
                logs,
                ..Default::default()
            },
        );
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

    fn commit(store: &Store, ends: &mut LogEnds, op: LogOp) {
        commit_batch(
            store,
            ends,
            Batch {
                logs: vec![op],
                ..Default::default()
            },
        );
    }

    #[test]
    fn an_append_truncates_the_log_on_disk_also_after_a_restart() {
        let (_dir, store) = store();
        let done = Arc::new(AtomicUsize::new(0));
        let mut ends = LogEnds::default();
        commit(
            &store,
            &mut ends,
            log(3, 1, &[(1, "a"), (2, "b"), (3, "c")], done.clone()),
        );
        // Appends after the end skip reading the log; one inside it replaces its tail.
        commit(&store, &mut ends, log(3, 4, &[(4, "d")], done.clone()));
        commit(&store, &mut ends, log(3, 3, &[(3, "C")], done.clone()));
        assert_eq!(
            log_on_disk(&store, 3),
            vec![(1, "a".into()), (2, "b".into()), (3, "C".into())]
        );
        // An append with no entries truncates too, and lowers the bound.
        commit(&store, &mut ends, log(3, 3, &[], done.clone()));
        commit(&store, &mut ends, log(3, 3, &[(3, "x")], done.clone()));
        assert_eq!(
            log_on_disk(&store, 3),
            vec![(1, "a".into()), (2, "b".into()), (3, "x".into())]
        );
        // A restarted writer knows nothing of the log and reads it on its first append.
        let mut fresh = LogEnds::default();
        commit(&store, &mut fresh, log(3, 2, &[(2, "B")], done.clone()));
        assert_eq!(
            log_on_disk(&store, 3),
            vec![(1, "a".into()), (2, "B".into())]
        );
    }
}
