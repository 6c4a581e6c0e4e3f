//! The replication runtime of a storage node: one engine per partition replica, driven by ticks,
//! messages from other nodes, client writes and reads, and log fsyncs.
//!
//! - Messages of all groups bound for one node leave as one `RaftBatch` per processing round, so
//!   the heartbeats of every group two nodes share travel together.
//! - Log entries of all groups go through the node's group commit (one fsync for all).
//! - Committed writes are applied in log order on every replica, conditions included, so every
//!   replica reaches the same items; the replica that took the client's write answers it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use tern_bus::{Bus, BusError};
use tern_memds_client::MemdsClient;
use tern_proto::memds::Replica;
use tern_proto::raft::{RaftBatch, RaftEnvelope};
use tern_proto::storage::{
    CreatePartitionRequest, RebuildRequest, ReplicatedWrite, WriteRequest, WriteResponse,
};
use tern_proto::subjects;
use tern_replication::{
    Command, Config as EngineConfig, Engine, Event, HardState, Index, MemberKind, Membership,
    NodeId, Payload, ProposeError, Role,
};
use tern_storage_client::{StorageClient, StorageError};
use tokio::sync::{mpsc, oneshot};

use crate::applier::Job;
use crate::apply::{fatal, ops_of};
use crate::codec;
use crate::compaction::{compaction_point, LogView};
use crate::replica_store::ReplicaStore;
use crate::store::Store;
use crate::writer::{LogOp, StateOp, Writer};

/// Logical tick of the engines: it drives timers only (elections, heartbeats, leases); writes and
/// their acknowledgements go out as they happen. Every replica of a node is stepped on every
/// tick, so idle tables cost in proportion to its rate.
pub const TICK: Duration = Duration::from_millis(20);
/// A follower that heard its leader refuses votes this long (in its own ticks, which never run
/// faster than real time); elections start between this and `ELECTION_MAX` of silence.
const ELECTION_MIN: Duration = Duration::from_millis(300);
const ELECTION_MAX: Duration = Duration::from_millis(600);
/// Three heartbeats within the shortest election timeout, and the lease (250 ms) renewed twice
/// over its length.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// What the lease gives up for clocks that run at different rates on different machines.
const DRIFT_MARGIN: Duration = Duration::from_millis(50);
/// How long after the send of an append a quorum acknowledged the leader may serve consistent
/// reads alone, in real time: shorter than the followers' vote refusal by the drift margin.
pub const LEASE: Duration = ELECTION_MIN.saturating_sub(DRIFT_MARGIN);
/// Tick times a replica remembers, to date its lease (a lease from an older tick has expired).
const TICK_HISTORY: usize = 128;

/// Whole ticks in `d`.
pub(crate) fn ticks(d: Duration) -> u64 {
    (d.as_millis() / TICK.as_millis()) as u64
}
/// How long a write (or read barrier) waits for its group before the client is told to retry;
/// below the router's bus timeout, so the router hears an answer rather than a timeout.
const COMMIT_TIMEOUT: Duration = Duration::from_millis(1500);

pub(crate) type WriteWaiter = oneshot::Sender<Result<WriteResponse, StorageError>>;
type ReadWaiter = oneshot::Sender<Result<(), BusError>>;

/// Founding members of every group: the three replicas placed when the table was created.
const FOUNDING_MEMBERS: NodeId = 3;

pub(crate) struct Group {
    pub pid: u64,
    /// Where each member (by id) lives: node and zone (empty when learned from a message).
    pub addrs: BTreeMap<NodeId, (String, String)>,
    pub engine: Engine,
    pub(crate) writes: HashMap<u64, WriteWaiter>,
    pub(crate) reads: HashMap<u64, ReadWaiter>,
    /// The items reflect committed entries: a founding member, or a replica whose items were
    /// rebuilt from a snapshot. A log replica (or one still being built) has none and serves no
    /// reads.
    pub has_items: bool,
    /// Entries up to here are in the items.
    pub applied: Index,
    /// The archive holds the group's log up to here (as the archiver last said; 0 after a
    /// restart until it says again): with the archive gate on, the log is kept from here on.
    pub archived: Index,
    /// Engine tick at which this replica last became leader.
    pub leader_since: u64,
    pub heal: crate::heal::HealState,
    /// Items are being installed from a snapshot (no compaction, no second install meanwhile).
    pub installing: bool,
    /// No install of our own accord before this engine tick.
    pub install_not_before: u64,
    /// When recent engine ticks fired: (tick, instant), oldest first.
    tick_times: VecDeque<(u64, Instant)>,
    /// Tells this replica from an earlier one of the same partition on this node.
    pub(crate) uid: u64,
    /// Held while committed entries are written into the items, and by whoever changes what the
    /// items are ([`crate::applier`]).
    pub(crate) gate: Arc<Mutex<()>>,
    /// Closed: its items are going, nothing more is applied.
    pub(crate) closed: bool,
    /// Hard-state writes queued and not yet durable; while there are any, messages wait in
    /// `held` (a vote or a term must be on disk before anything that depends on it leaves).
    hard_state_writes: u32,
    held: Outbox,
    /// Trace context of sampled writes' entries, and their open spans.
    pub(crate) traces: crate::traces::Traces,
}

/// What the group commit reports durable for a replica.
#[derive(Debug)]
enum Durability {
    Log { pid: u64, index: Index, term: u64 },
    HardState { pid: u64, uid: u64 },
}

/// When a replica compacts its log: once this many applied entries, or this many payload bytes,
/// pile up.
#[derive(Debug, Clone, Copy)]
pub struct CompactLimits {
    pub entries: u64,
    pub bytes: u64,
}

/// How a node's replicas bound their logs: compaction per replica, and node-wide budgets (on disk
/// and in memory) shared among its replicas.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    pub compact: CompactLimits,
    pub budget: u64,
    pub cache: u64,
    /// Keep what the archive does not hold yet (`compaction::compaction_point`).
    pub archive_gate: bool,
}

/// Each replica keeps at least this much of its log's command bytes in memory (entries just
/// applied, which the slower follower usually still needs)...
const MIN_CACHE_BYTES: u64 = 256 * 1024;
/// ... and at most this.
const MAX_CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// The command bytes each replica's log keeps in memory: the node's cache shared among them.
pub fn replica_cache_bytes(node_cache: u64, replicas: usize) -> u64 {
    (node_cache / replicas.max(1) as u64).clamp(MIN_CACHE_BYTES, MAX_CACHE_BYTES)
}

/// A replica's byte limit never goes below this, however many replicas share the node's budget:
/// the largest entry (a 400 KB item is about 550 KB in the log) fits. At 1 MiB the default budget
/// holds for up to 256 replicas on a node; beyond that the node's logs hold 1 MiB per replica.
pub const MIN_COMPACT_BYTES: u64 = 1024 * 1024;

/// The byte limit of each replica's log: `per_replica`, or the node's budget shared among its
/// replicas when that is smaller, never below [`MIN_COMPACT_BYTES`].
pub fn replica_log_bytes(per_replica: u64, node_budget: u64, replicas: usize) -> u64 {
    (node_budget / replicas.max(1) as u64)
        .clamp(MIN_COMPACT_BYTES, per_replica.max(MIN_COMPACT_BYTES))
}

/// KiB of writes in progress on one node before new ones wait (and, after `BUDGET_WAIT`, are
/// told to slow down).
const WRITE_BUDGET_KIB: usize = 64 * 1024;
const BUDGET_WAIT: Duration = Duration::from_millis(500);

/// Rounds of replication messages (one per destination and processing round) waiting to be
/// published before new ones are dropped.
const OUTBOUND_ROUNDS: usize = 16 * 1024;
/// ... or bytes.
const OUTBOUND_BYTES: usize = 128 * 1024 * 1024;

/// Messages for one destination node from one processing round, and their encoded size.
type Round = (String, Vec<RaftBatch>, usize);

/// Bytes of a bus message that are not the message itself (headers, subject, framing).
const MESSAGE_OVERHEAD: usize = 16 * 1024;

/// Messages to send, per destination node.
pub(crate) type Outbox = HashMap<String, Vec<RaftEnvelope>>;

#[derive(Clone)]
pub struct Replication {
    inner: Arc<Inner>,
}

impl Inner {
    /// Removes a group's log from `from` on, after every log write queued before, and waits until
    /// that is durable. Blocks the thread for one group commit: for rare events only.
    pub(crate) fn truncate_log_and_wait(&self, pid: u64, from: Index) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.writer.append_log(LogOp {
            partition_id: pid,
            from,
            entries: Vec::new(),
            done: Box::new(move || {
                let _ = tx.send(());
            }),
        });
        if rx.recv().is_err() {
            fatal("truncate log", "the log writer stopped");
        }
    }
}

pub(crate) struct Inner {
    pub node: String,
    /// The node's availability zone (for spans).
    pub az: String,
    pub store: Store,
    /// Every durable key of the replicas besides their items.
    pub replicas: ReplicaStore,
    writer: Writer,
    pub bus: Bus,
    /// Calls to other storage nodes (rebuilds, snapshots, drops).
    pub storage: StorageClient,
    /// Calls to MemDS (placing replicas, reporting memberships).
    pub memds: MemdsClient,
    groups: RwLock<HashMap<u64, Arc<Mutex<Group>>>>,
    /// Rounds of the tick loop so far.
    node_ticks: AtomicU64,
    next_request: AtomicU64,
    persisted: mpsc::UnboundedSender<Durability>,
    /// Committed entries and cleared reads, for the apply thread.
    pub(crate) applier: crate::applier::ApplyQueue,
    /// Rounds of replication messages waiting to be published, per destination node.
    outbound: mpsc::Sender<Round>,
    /// Encoded bytes of the rounds waiting in `outbound`.
    outbound_bytes: std::sync::atomic::AtomicUsize,
    /// A member unacknowledged this long is replaced.
    pub replace_after: Duration,
    /// Applied entries a log holds before it is compacted.
    pub compact_after: u64,
    /// Payload bytes a log holds before it is compacted.
    pub compact_bytes: u64,
    /// Payload bytes all logs of the node hold, shared among its replicas.
    pub log_budget: u64,
    /// Command bytes all logs of the node keep in memory, shared among its replicas.
    pub log_cache: u64,
    /// Largest append the engine builds: well under the bus's message limit.
    pub max_append_bytes: usize,
    /// Largest message the bus carries (the server's max_payload, less headers).
    pub max_message: usize,
    /// KiB of client writes this node has proposed and not yet answered: what may wait in its
    /// writer queue and its groups' unreplicated logs.
    write_budget: Arc<tokio::sync::Semaphore>,
    pub snapshots: crate::snapshot_source::SnapshotSessions,
    pub metrics: Arc<crate::metrics::ReplicationMetrics>,
    /// Keep each log from what the archive does not hold yet.
    pub archive_gate: bool,
    /// Items checksums at scrub markers.
    pub(crate) checksums: Arc<crate::archive::Checksums>,
}

/// Which node this is, and in which availability zone.
pub struct Placement {
    pub node: String,
    pub az: String,
}

impl Replication {
    pub fn start(
        at: Placement,
        store: Store,
        writer: Writer,
        bus: Bus,
        replace_after: Duration,
        limits: LogLimits,
        metrics: Arc<crate::metrics::ReplicationMetrics>,
    ) -> Self {
        let (persisted, persisted_rx) = mpsc::unbounded_channel();
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_ROUNDS);
        let (applier, applier_rx) = crate::applier::queue();
        // Room for the headers (trace context) and the batch's own framing.
        let max_message = bus
            .max_payload()
            .saturating_sub(MESSAGE_OVERHEAD)
            .max(64 * 1024);
        let checksums = crate::archive::Checksums::start(store.clone());
        let r = Replication {
            inner: Arc::new(Inner {
                node: at.node,
                az: at.az,
                replicas: ReplicaStore::new(store.clone()),
                store,
                writer,
                storage: StorageClient::new(bus.clone()),
                memds: MemdsClient::new(bus.clone()),
                bus,
                groups: RwLock::default(),
                node_ticks: AtomicU64::new(0),
                // NOTE: entries proposed before a restart may still apply after it; starting the
                // ids from the clock keeps a new request from matching an old entry's id.
                next_request: AtomicU64::new(rand_seed() | 1),
                persisted,
                applier,
                outbound,
                outbound_bytes: Default::default(),
                replace_after,
                compact_after: limits.compact.entries,
                compact_bytes: limits.compact.bytes,
                log_budget: limits.budget,
                log_cache: limits.cache,
                max_append_bytes: max_message / 2,
                max_message,
                write_budget: Arc::new(tokio::sync::Semaphore::new(WRITE_BUDGET_KIB)),
                snapshots: Default::default(),
                metrics,
                archive_gate: limits.archive_gate,
                checksums,
            }),
        };
        r.start_applier(applier_rx);
        tokio::spawn(r.clone().tick_forever());
        tokio::spawn(r.clone().persisted_forever(persisted_rx));
        tokio::spawn(r.clone().send_forever(outbound_rx));
        tokio::spawn(r.clone().heal_forever());
        r
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub(crate) fn groups(&self) -> Vec<Arc<Mutex<Group>>> {
        self.inner.groups.read().values().cloned().collect()
    }

    /// Serves the node's replication subject.
    pub async fn serve(&self, bus: &Bus) -> Result<(), BusError> {
        let r = self.clone();
        bus.consume(&subjects::storage_raft(&self.inner.node), move |batch| {
            r.receive(batch)
        })
        .await?;
        Ok(())
    }

    /// Starts (or recovers) the engine of one replica; for a group already open, learns the
    /// members' addresses. A replica placed again under a new member id starts afresh.
    pub fn open_group(&self, p: &CreatePartitionRequest) -> anyhow::Result<()> {
        let info = p
            .partition
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("partition missing"))?;
        let addrs: BTreeMap<NodeId, (String, String)> = info
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| (r.member(i), (r.node_id.clone(), r.az.clone())))
            .collect();
        let Some((&me, _)) = addrs.iter().find(|(_, (n, _))| *n == self.inner.node) else {
            return Ok(());
        };
        if let Some(g) = self.group(info.id) {
            let mut g = g.lock();
            if g.engine.id() == me {
                for (id, a) in addrs {
                    g.addrs.insert(id, a);
                }
                return Ok(());
            }
            tracing::info!(
                partition = info.id,
                old = g.engine.id(),
                new = me,
                "replica placed again: starting afresh"
            );
            drop(g);
            self.close_group(info.id)?;
            self.inner.store.drop_items(info.id)?;
        }
        let founding = Membership::new((1..=FOUNDING_MEMBERS).map(|i| (i, MemberKind::Full)));
        let d = self
            .inner
            .replicas
            .load(info.id, founding, FOUNDING_MEMBERS)?;
        // An install cut short left the items incomplete: they are rebuilt again.
        let has_items = (me <= FOUNDING_MEMBERS || d.rebuilt) && !d.installing;
        let applied = if has_items { d.applied } else { 0 };
        let log_end = d.log_end();
        if applied > log_end {
            // The engine applies only what the own log holds durably, so this means a store
            // written by an older version: the items already hold these entries, and applying
            // them again could decide their conditions differently.
            tracing::error!(
                partition = info.id,
                applied,
                log_end,
                "items hold entries the durable log lacks: they will not be applied again"
            );
        }
        let (hs, log) = (d.hs, d.log);
        let mut cfg = EngineConfig::new(me, info.id ^ rand_seed());
        cfg.election_min = ticks(ELECTION_MIN);
        cfg.election_max = ticks(ELECTION_MAX);
        cfg.heartbeat_interval = ticks(HEARTBEAT);
        cfg.lease = ticks(LEASE);
        cfg.max_batch_bytes = self.inner.max_append_bytes;
        let replicas = self.inner.groups.read().len() + 1;
        cfg.payload_cache_bytes = replica_cache_bytes(self.inner.log_cache, replicas);
        let fresh = hs.term == 0 && log.is_empty() && d.snap.index == 0;
        let mut engine = Engine::restore(cfg, hs, d.snap, log, applied);
        // NOTE: a full member whose items are incomplete must not lead until they are rebuilt.
        engine.set_may_lead(has_items);
        // A new group's first replica stands for election at once rather than after a timeout,
        // so the table's first write does not wait for one.
        let campaign = if fresh && me == 1 {
            engine.step(Event::Campaign)
        } else {
            Vec::new()
        };
        let group = Group {
            pid: info.id,
            addrs,
            engine,
            writes: HashMap::new(),
            reads: HashMap::new(),
            has_items,
            applied,
            leader_since: 0,
            heal: Default::default(),
            archived: 0,
            installing: false,
            install_not_before: 0,
            tick_times: VecDeque::with_capacity(TICK_HISTORY),
            uid: rand_seed() ^ info.id.rotate_left(17),
            gate: Arc::default(),
            closed: false,
            hard_state_writes: 0,
            held: Outbox::new(),
            traces: Default::default(),
        };
        let group = Arc::new(Mutex::new(group));
        {
            let mut groups = self.inner.groups.write();
            // The engine counts ticks from 0, and the tick loop (which counts its rounds under
            // the read lock) steps it once a round from now on: this phase puts its heartbeats
            // in the same rounds as every other group's here, so they travel together.
            let ticked = self.inner.node_ticks.load(Ordering::Relaxed);
            group.lock().engine.set_heartbeat_phase(ticked);
            groups.insert(info.id, group.clone());
        }
        if !campaign.is_empty() {
            let mut out = Outbox::new();
            self.execute(&mut group.lock(), campaign, &mut out);
            self.flush(out);
        }
        tracing::info!(
            partition = info.id,
            member = me,
            applied,
            has_items,
            "replica engine started"
        );
        Ok(())
    }

    /// Whether this replica holds the partition's items (a log replica does not).
    pub fn has_items(&self, pid: u64) -> bool {
        self.group(pid).is_some_and(|g| g.lock().has_items)
    }

    /// Whether this node's replica of `pid` is its group's leader now.
    pub fn leads(&self, pid: u64) -> bool {
        self.group(pid)
            .is_some_and(|g| g.lock().engine.role() == Role::Leader)
    }

    pub fn close_group(&self, pid: u64) -> anyhow::Result<()> {
        if let Some(group) = self.group(pid) {
            // NOTE: waits for at most one apply job of this replica; none starts after this.
            let gate = group.lock().gate.clone();
            let _gate = tokio::task::block_in_place(|| gate.lock());
            group.lock().closed = true;
            self.inner.checksums.drop_partition(pid);
        }
        self.inner.groups.write().remove(&pid);
        self.inner.replicas.clear(pid)?;
        Ok(())
    }

    pub(crate) fn group(&self, pid: u64) -> Option<Arc<Mutex<Group>>> {
        self.inner.groups.read().get(&pid).cloned()
    }

    /// Replicates a write; answers once it is committed and applied here.
    pub async fn write(&self, req: WriteRequest) -> Result<WriteResponse, BusError> {
        let pid = req.partition_id;
        let group = self
            .group(req.partition_id)
            .ok_or_else(|| BusError::Redirect(String::new()))?;
        // What reaches the log must decode on every replica: a write whose condition or update
        // does not is refused here, and one in a committed entry stops the replica (`apply`).
        ops_of(&req)?;
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let entry = ReplicatedWrite {
            origin_node: self.inner.node.clone(),
            request_id: id,
            write: Some(req),
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let payload = entry.encode_to_vec();
        if payload.len() + ENTRY_OVERHEAD > self.inner.max_message {
            // An entry that cannot travel to the followers would never commit and would block
            // every entry behind it: refuse it before it reaches the log.
            tracing::error!(
                bytes = payload.len(),
                max_message = self.inner.max_message,
                "write larger than the bus carries: raise nats-server's max_payload"
            );
            self.inner.metrics.writes_too_large.inc();
            return Err(StorageError::Invalid(
                "Item size has exceeded the maximum allowed size".into(),
            )
            .into());
        }
        // Backpressure: a node whose disk or followers fall behind stops taking writes instead of
        // queueing without bound.
        let kib = (payload.len() / 1024 + 1).min(WRITE_BUDGET_KIB) as u32;
        let budget = self.inner.write_budget.clone();
        let _budget = match tokio::time::timeout(BUDGET_WAIT, budget.acquire_many_owned(kib)).await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                self.inner.metrics.writes_throttled.inc();
                return Err(StorageError::Busy(
                    "Too many writes in progress on the partition's storage node: retry".into(),
                )
                .into());
            }
        };
        // Spans for sampled requests only (their bus span is seen by OpenTelemetry).
        let (span, sampled) = match crate::traces::current_sampled() {
            Some(_) => {
                let span = tracing::info_span!(
                    "storage.replicate",
                    otel.kind = "internal",
                    db.system.name = "tern",
                    tern.partition = pid,
                    tern.node = %self.inner.node,
                    tern.az = %self.inner.az,
                    tern.replica.role = "leader",
                );
                let sampled = span.in_scope(crate::traces::current_sampled);
                (span, sampled)
            }
            None => (tracing::Span::none(), None),
        };
        let mut out = Outbox::new();
        {
            let mut g = group.lock();
            if g.engine.role() != Role::Leader {
                return Err(BusError::Redirect(g.leader_name()));
            }
            if let Some(sc) = sampled {
                // The engine appends a proposal right after its last entry.
                let index = g.engine.last_index() + 1;
                g.traces.note(index, sc);
            }
            g.writes.insert(id, tx);
            self.step(
                &mut g,
                Event::Propose {
                    id,
                    payload: Payload::Command(payload),
                },
                &mut out,
            );
        }
        self.flush(out);
        let proposed = std::time::Instant::now();
        match tokio::time::timeout(COMMIT_TIMEOUT, rx)
            .instrument(span)
            .await
        {
            Ok(Ok(result)) => {
                self.inner.metrics.commit_latency(proposed.elapsed());
                result.map_err(BusError::from)
            }
            Ok(Err(_)) => Err(BusError::Redirect(String::new())),
            Err(_) => Err(StorageError::Unavailable("write not committed in time".into()).into()),
        }
    }

    /// Whether this replica leads under a lease that has not run out in real time. A consistent
    /// read checks this after reading, so a leader that stalled (and may have been replaced
    /// meanwhile) never answers with what it read.
    pub fn lease_holds(&self, pid: u64) -> bool {
        let holds = self
            .group(pid)
            .and_then(|g| g.lock().lease_expiry())
            .is_some_and(|expiry| Instant::now() < expiry);
        if !holds {
            self.inner.metrics.lease_expired_reads.inc();
        }
        holds
    }

    /// Waits until this replica may serve a linearizable read (it leads under a lease).
    pub async fn read_barrier(&self, pid: u64) -> Result<(), BusError> {
        let group = self
            .group(pid)
            .ok_or_else(|| BusError::Redirect(String::new()))?;
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut out = Outbox::new();
        {
            let mut g = group.lock();
            g.reads.insert(id, tx);
            self.step(&mut g, Event::Read { id }, &mut out);
        }
        self.flush(out);
        match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            _ => Err(BusError::Redirect(String::new())),
        }
    }

    fn receive(&self, mut batch: RaftBatch) {
        let mut out = Outbox::new();
        for env in std::mem::take(&mut batch.messages) {
            let (Some(group), Some(msg)) = (self.group(env.partition_id), env.msg) else {
                continue;
            };
            let Some(msg) = codec::message_from_wire(msg) else {
                continue;
            };
            let mut g = group.lock();
            if !env.traces.is_empty() {
                g.traces.receive(&env.traces);
            }
            // Only a member of the group speaks for it: a message from a member id this replica
            // knows at another node, or from an id that is not a member, is dropped.
            let accepted = match g.addrs.get(&env.from) {
                Some((node, _)) => *node == batch.from_node,
                None => g.engine.membership().contains(env.from),
            };
            if !accepted {
                self.inner.metrics.foreign_messages.inc();
                tracing::debug!(partition = g.pid, member = env.from, node = %batch.from_node, "message from no member of the group ignored");
                continue;
            }
            g.addrs
                .entry(env.from)
                .or_insert_with(|| (batch.from_node.clone(), String::new()));
            if let tern_replication::Message::AppendResponse { success: false, .. } = &msg {
                self.inner.metrics.append_rejections.inc();
            }
            self.step(
                &mut g,
                Event::Message {
                    from: env.from,
                    msg,
                },
                &mut out,
            );
        }
        self.flush(out);
    }

    async fn tick_forever(self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // NOTE: counted under the groups' read lock, so a group opened meanwhile (under the
            // write lock) takes either this round's count and this round's tick, or neither.
            let groups: Vec<_> = {
                let groups = self.inner.groups.read();
                self.inner.node_ticks.fetch_add(1, Ordering::Relaxed);
                groups.values().cloned().collect()
            };
            let mut out = Outbox::new();
            // NOTE: one clock read for the round: a group's tick is recorded at or before the
            // moment it was stepped, which only makes its lease end earlier.
            let at = Instant::now();
            for group in groups {
                let mut g = group.lock();
                self.step(&mut g, Event::Tick, &mut out);
                g.record_tick(at);
            }
            self.flush(out);
        }
    }

    async fn persisted_forever(self, mut rx: mpsc::UnboundedReceiver<Durability>) {
        while let Some(durable) = rx.recv().await {
            let pid = match durable {
                Durability::Log { pid, .. } | Durability::HardState { pid, .. } => pid,
            };
            let Some(group) = self.group(pid) else {
                continue;
            };
            let mut out = Outbox::new();
            {
                let mut g = group.lock();
                match durable {
                    Durability::Log { index, term, .. } => {
                        if !g.traces.is_empty() {
                            g.traces.durable(index);
                        }
                        self.step(&mut g, Event::Persisted { index, term }, &mut out);
                    }
                    Durability::HardState { uid, .. } if uid == g.uid => {
                        if g.hard_state_writes == 0 {
                            tracing::error!(partition = pid, "hard state durable twice");
                        }
                        g.hard_state_writes = g.hard_state_writes.saturating_sub(1);
                        if g.hard_state_writes == 0 {
                            out = std::mem::take(&mut g.held);
                        }
                    }
                    Durability::HardState { .. } => {}
                }
            }
            self.flush(out);
        }
    }

    /// Sends each destination its messages, in batches that fit the bus's message limit, in
    /// order.
    pub(crate) fn flush(&self, out: Outbox) {
        for (node, messages) in out {
            let batches = split_batches(&self.inner.node, messages, self.inner.max_message);
            // NOTE: one sender task keeps the order in which rounds were produced (a task per
            // round may run in any order, and an append overtaken by the heartbeat after it is
            // refused and sent again). A full queue drops the round: the protocol recovers from
            // loss, not from unbounded memory.
            let bytes: usize = batches.iter().map(|b| b.encoded_len()).sum();
            let queued = self
                .inner
                .outbound_bytes
                .fetch_add(bytes, Ordering::Relaxed);
            if queued + bytes > OUTBOUND_BYTES
                || self
                    .inner
                    .outbound
                    .try_send((node, batches, bytes))
                    .is_err()
            {
                self.inner
                    .outbound_bytes
                    .fetch_sub(bytes, Ordering::Relaxed);
                self.inner.metrics.rounds_dropped.inc();
            }
        }
    }

    /// Publishes what `flush` queued, in order.
    async fn send_forever(self, mut rx: mpsc::Receiver<Round>) {
        let bus = self.inner.bus.clone();
        while let Some((node, batches, bytes)) = rx.recv().await {
            for batch in batches {
                if let Err(e) = bus.publish(&subjects::storage_raft(&node), &batch).await {
                    tracing::warn!(error = %e, to = %node, "send replication batch");
                }
            }
            self.inner
                .outbound_bytes
                .fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Feeds one event to a replica's engine and carries out what it asks (messages go to `out`,
    /// sent by the caller once the replica's lock is released).
    pub(crate) fn step(&self, g: &mut Group, event: Event, out: &mut Outbox) {
        let cmds = g.engine.step(event);
        self.execute(g, cmds, out);
    }

    pub(crate) fn execute(&self, g: &mut Group, cmds: Vec<Command>, out: &mut Outbox) {
        for c in cmds {
            match c {
                Command::Send { to, mut msg } => {
                    let Some((node, _)) = g.addrs.get(&to) else {
                        continue;
                    };
                    if let tern_replication::Message::Append { entries, .. } = &mut msg {
                        if !self.read_back(g.pid, entries) {
                            // Compacted or replaced meanwhile: the follower's answer (or its
                            // silence) makes the engine send what it needs now.
                            continue;
                        }
                    }
                    let traces = match &msg {
                        tern_replication::Message::Append { entries, .. }
                            if !g.traces.is_empty() && !entries.is_empty() =>
                        {
                            g.traces
                                .to_wire(entries[0].index, entries[entries.len() - 1].index)
                        }
                        _ => Vec::new(),
                    };
                    let env = RaftEnvelope {
                        partition_id: g.pid,
                        from: g.engine.id(),
                        to,
                        msg: Some(codec::message_to_wire(&msg)),
                        traces,
                    };
                    let node = node.clone();
                    let out = if g.hard_state_writes > 0 {
                        &mut g.held
                    } else {
                        &mut *out
                    };
                    out.entry(node).or_default().push(env);
                }
                Command::PersistHardState(hs) => {
                    g.hard_state_writes += 1;
                    self.persist_hard_state(g, hs);
                }
                Command::AppendLog(entries) => {
                    if !g.traces.is_empty() {
                        let at = self.place(g);
                        g.traces.appending(entries.iter().map(|e| e.index), &at);
                    }
                    self.append_log(g.pid, entries)
                }
                Command::Apply(entries) => {
                    let spans = if g.traces.is_empty() {
                        Vec::new()
                    } else {
                        let at = self.place(g);
                        g.traces.applying(entries.iter().map(|e| e.index), &at)
                    };
                    self.queue_job(Job::Apply {
                        pid: g.pid,
                        uid: g.uid,
                        entries,
                        spans,
                    })
                }
                Command::Proposed { id, result: Err(e) } => {
                    if let Some(w) = g.writes.remove(&id) {
                        let err = match e {
                            ProposeError::NotLeader { .. } => {
                                StorageError::Unavailable("leadership changed".into())
                            }
                            other => StorageError::Unavailable(format!("{other:?}")),
                        };
                        let _ = w.send(Err(err));
                    }
                }
                Command::Proposed { .. } => {}
                Command::SendSnapshot { to, index } => self.send_snapshot(g, to, index),
                // Every entry the engine handed over is in the items already: answer now (the
                // common case); otherwise after the apply thread has caught up.
                Command::ReadReady { id } if g.applied >= g.engine.applied_index() => {
                    if let Some(r) = g.reads.remove(&id) {
                        let _ = r.send(Ok(()));
                    }
                }
                Command::ReadReady { id } => self.queue_job(Job::Read {
                    pid: g.pid,
                    uid: g.uid,
                    id,
                }),
                Command::ReadRejected { id, leader } => {
                    if let Some(r) = g.reads.remove(&id) {
                        let name = leader
                            .and_then(|l| g.addrs.get(&l))
                            .map(|(n, _)| n.clone())
                            .unwrap_or_default();
                        let _ = r.send(Err(BusError::Redirect(name)));
                    }
                }
                Command::RoleChanged { role, term, leader } => {
                    tracing::info!(partition = g.pid, ?role, term, leader = ?leader, "replica role changed");
                    if role == Role::Leader {
                        g.leader_since = g.engine.now();
                        g.heal = Default::default();
                        self.inner.metrics.leader_changes.inc();
                    } else {
                        // Writes waiting here may never commit through us: let clients retry.
                        for (_, w) in g.writes.drain() {
                            let _ =
                                w.send(Err(StorageError::Unavailable("leadership changed".into())));
                        }
                    }
                }
            }
        }
    }

    /// Where replica `g` is, for its spans.
    fn place(&self, g: &Group) -> crate::traces::Place<'_> {
        crate::traces::Place {
            partition: g.pid,
            node: &self.inner.node,
            az: &self.inner.az,
            leader: g.engine.role() == Role::Leader,
        }
    }

    /// Asks follower `to`, behind this leader's compacted log, to install a snapshot of our items.
    fn send_snapshot(&self, g: &Group, to: NodeId, index: Index) {
        let Some(node) = g.node_of(to).map(str::to_string) else {
            return;
        };
        self.inner.metrics.snapshots_sent.inc();
        let req = RebuildRequest {
            partition_id: g.pid,
            source_node: self.inner.node.clone(),
            install: true,
            index,
            leader_member: g.engine.id(),
            leader_term: g.engine.term(),
            repair: false,
        };
        tracing::info!(partition = g.pid, member = to, node = %node, index, "follower is behind the compacted log: sending a snapshot");
        let storage = self.inner.storage.clone();
        tokio::spawn(async move {
            let r = storage.rebuild(&node, &req).await;
            if let Err(e) = r {
                tracing::warn!(partition = req.partition_id, node = %node, error = %e, "snapshot install failed");
            }
        });
    }

    /// Drops the log its items (or, on a log replica, its group's items) already hold, once more
    /// than `compact_after` applied entries pile up, keeping the newest half for followers a little
    /// behind. A leader keeps what its live followers still need unless its log has grown four
    /// times past the limit; a follower beyond that catches up by snapshot.
    pub(crate) fn compact(&self, group: &Mutex<Group>) {
        let replicas = self.inner.groups.read().len();
        let limits = CompactLimits {
            entries: self.inner.compact_after,
            bytes: replica_log_bytes(self.inner.compact_bytes, self.inner.log_budget, replicas),
        };
        let cache = replica_cache_bytes(self.inner.log_cache, replicas);
        let upto = {
            let mut g = group.lock();
            g.engine.set_payload_cache_bytes(cache);
            let e = &g.engine;
            if g.installing {
                return;
            }
            let live_followers = (e.role() == Role::Leader).then(|| {
                e.membership()
                    .members
                    .keys()
                    .filter_map(|id| {
                        let (matched, acked) = e.peer_progress(*id)?;
                        let fresh = acked.is_some_and(|a| e.now() < a + 4 * e.config().lease);
                        fresh.then_some(matched)
                    })
                    .collect()
            });
            let held = if g.has_items {
                g.applied
            } else {
                e.applied_index()
            };
            let view = LogView {
                has_items: g.has_items,
                held,
                snapshot: e.snapshot().index,
                entries: e.log().len() as u64,
                bytes: e.log_bytes(),
                live_followers,
                archived: self.inner.archive_gate.then_some(g.archived),
            };
            match compaction_point(&view, limits, || half_by_bytes(e, held)) {
                Some(upto) => upto,
                None => return,
            }
        };
        // NOTE: the gate keeps an install from starting while the log is cut on disk, outside
        // the replica's lock (fjall may wait on the disk there; under the lock, that stopped the
        // tick loop).
        let gate = group.lock().gate.clone();
        let _gate = tokio::task::block_in_place(|| gate.lock());
        // The items up to `upto` (written, not yet synced) must be durable before their log goes.
        // NOTE: an fsync: the worker thread hands its other tasks on while it blocks.
        if let Err(e) = tokio::task::block_in_place(|| self.inner.store.sync()) {
            fatal("sync before compaction", e);
        }
        let (pid, before, meta) = {
            let mut g = group.lock();
            if g.installing {
                return;
            }
            if self.inner.archive_gate && upto > g.archived {
                self.inner.metrics.archive_gaps.inc();
                tracing::warn!(
                    partition = g.pid,
                    archived = g.archived,
                    upto,
                    "log compacted past what the archive holds: its log grew past four times its limits"
                );
            }
            let before = g.engine.snapshot().index;
            let Some(meta) = g.engine.compact(upto) else {
                return;
            };
            (g.pid, before, meta)
        };
        // A crash before this keeps the longer log with the older snapshot, which is consistent.
        if let Err(e) =
            tokio::task::block_in_place(|| self.inner.replicas.compact(pid, before, &meta))
        {
            fatal("compact log", e);
        }
        self.inner.metrics.compactions.inc();
        tracing::debug!(partition = pid, index = meta.index, "log compacted");
    }

    /// The vote must be durable before any message that depends on it leaves.
    /// Queues term and vote to the group commit; messages wait until it is durable.
    fn persist_hard_state(&self, g: &Group, hs: HardState) {
        let (pid, uid) = (g.pid, g.uid);
        let replicas = self.inner.replicas.clone();
        let persisted = self.inner.persisted.clone();
        self.inner.writer.write_state(StateOp {
            stage: Box::new(move |batch| replicas.stage_hard_state(batch, pid, hs)),
            done: Box::new(move || {
                let _ = persisted.send(Durability::HardState { pid, uid });
            }),
        });
    }

    fn append_log(&self, pid: u64, entries: Vec<tern_replication::Entry>) {
        let Some(last) = entries.last() else { return };
        let (index, term) = (last.index, last.term);
        let encoded = entries
            .iter()
            .map(|e| (e.index, codec::entry_to_wire(e).encode_to_vec()))
            .collect();
        let persisted = self.inner.persisted.clone();
        self.inner.writer.append_log(LogOp {
            partition_id: pid,
            from: entries[0].index,
            entries: encoded,
            done: Box::new(move || {
                let _ = persisted.send(Durability::Log { pid, index, term });
            }),
        });
    }
}

impl Group {
    /// Records whether the items are whole; only then may this replica lead.
    pub(crate) fn set_has_items(&mut self, has_items: bool) -> Vec<Command> {
        self.has_items = has_items;
        self.engine.set_may_lead(has_items)
    }

    fn record_tick(&mut self, at: Instant) {
        if self.tick_times.len() == TICK_HISTORY {
            self.tick_times.pop_front();
        }
        self.tick_times.push_back((self.engine.now(), at));
    }

    /// When this leader's lease runs out, if it holds one: `LEASE` after the real time of the
    /// tick its quorum's newest acknowledged append was sent at.
    fn lease_expiry(&self) -> Option<Instant> {
        let start = self.engine.lease_start()?;
        // Ticks are recorded one after another, so the tick's place is its distance from the
        // oldest one kept.
        let oldest = self.tick_times.front()?.0;
        let (tick, at) = self
            .tick_times
            .get(usize::try_from(start.checked_sub(oldest)?).ok()?)?;
        (*tick == start).then_some(*at + LEASE)
    }

    fn leader_name(&self) -> String {
        self.engine
            .leader()
            .and_then(|l| self.addrs.get(&l))
            .map(|(n, _)| n.clone())
            .unwrap_or_default()
    }

    pub fn node_of(&self, member: NodeId) -> Option<&str> {
        self.addrs.get(&member).map(|(n, _)| n.as_str())
    }

    /// The group's current membership as metadata replicas.
    pub fn replicas(&self) -> Vec<Replica> {
        self.engine
            .membership()
            .members
            .iter()
            .map(|(id, kind)| {
                let (node, az) = self.addrs.get(id).cloned().unwrap_or_default();
                Replica {
                    node_id: node,
                    az,
                    member_id: *id,
                    log: *kind == MemberKind::Log,
                }
            })
            .collect()
    }
}

/// Bytes a log entry adds to its payload on the wire (index, term, kind, framing).
const ENTRY_OVERHEAD: usize = 64;

/// The index up to which dropping the log (up to `held`) leaves the newest half of its bytes.
fn half_by_bytes(e: &Engine, held: Index) -> Index {
    let mut keep = e.log_bytes() / 2;
    let mut upto = held;
    for entry in e.entries(e.snapshot().index, held).iter().rev() {
        let size = entry.payload.len() as u64;
        if keep < size {
            break;
        }
        keep -= size;
        upto = entry.index - 1;
    }
    upto
}

/// Cuts one destination's messages into batches of at most `max` encoded bytes (a message larger
/// than that on its own goes alone; the engine keeps appends below it).
pub(crate) fn split_batches(from: &str, messages: Vec<RaftEnvelope>, max: usize) -> Vec<RaftBatch> {
    let new = || RaftBatch {
        from_node: from.to_string(),
        messages: Vec::new(),
    };
    let mut batches = vec![new()];
    let mut size = 0;
    for m in messages {
        let len = m.encoded_len() + 8;
        let current = batches.last_mut().expect("one batch at least");
        if size + len > max && !current.messages.is_empty() {
            batches.push(new());
            size = 0;
        }
        size += len;
        batches
            .last_mut()
            .expect("one batch at least")
            .messages
            .push(m);
    }
    batches
}

fn rand_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ std::process::id() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_budget_is_shared_among_replicas() {
        const MIB: u64 = 1024 * 1024;
        // Few replicas: each keeps its own limit.
        assert_eq!(replica_log_bytes(32 * MIB, 256 * MIB, 4), 32 * MIB);
        // Many: the budget shared, so the node's total stays at the budget...
        assert_eq!(replica_log_bytes(32 * MIB, 256 * MIB, 32), 8 * MIB);
        // ...down to the floor, below which an entry of a large item would not fit.
        assert_eq!(
            replica_log_bytes(32 * MIB, 256 * MIB, 1000),
            MIN_COMPACT_BYTES
        );
        assert_eq!(replica_log_bytes(MIB / 2, 256 * MIB, 1), MIN_COMPACT_BYTES);
        // 120 replicas (60 tables of 2 partitions): the budget holds, 2.1 MiB each.
        assert!(replica_log_bytes(32 * MIB, 256 * MIB, 120) * 120 <= 256 * MIB);
        assert_eq!(replica_log_bytes(32 * MIB, 256 * MIB, 0), 32 * MIB);
    }
    use tern_proto::raft::{RaftEntry, RaftMessage};

    fn envelope(bytes: usize) -> RaftEnvelope {
        RaftEnvelope {
            partition_id: 1,
            from: 1,
            to: 2,
            msg: Some(RaftMessage {
                entries: vec![RaftEntry {
                    data: vec![7; bytes],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            traces: Vec::new(),
        }
    }

    #[test]
    fn batches_fit_the_message_limit_and_keep_order() {
        let max = 1024 * 1024;
        let sizes = [400_000, 400_000, 10, 900_000, 5, 5, 2_000_000, 1];
        let messages: Vec<_> = sizes.iter().map(|b| envelope(*b)).collect();
        let batches = split_batches("n", messages, max);
        for b in &batches {
            assert!(
                b.encoded_len() <= max || b.messages.len() == 1,
                "a batch of {} messages is {} bytes",
                b.messages.len(),
                b.encoded_len()
            );
        }
        let order: Vec<usize> = batches
            .iter()
            .flat_map(|b| &b.messages)
            .map(|m| m.msg.as_ref().unwrap().entries[0].data.len())
            .collect();
        assert_eq!(order, sizes);
        assert_eq!(
            batches.len(),
            4,
            "{:?}",
            batches.iter().map(|b| b.messages.len()).collect::<Vec<_>>()
        );
    }
}
