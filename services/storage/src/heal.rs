//! Keeping every group at three replicas in three zones when a member stays unreachable.
//!
//! The leader of each group checks, a few times a second, whether a member has acknowledged
//! nothing for `replace_after`. If so, it asks MemDS for a node to host a replacement (preferring
//! the lost member's zone), and once the new replica exists it changes the membership one member
//! at a time, each change committed through the log before the next:
//!
//! 1. remove the silent member (the other two remain a quorum of two);
//! 2. add the new replica as a **log replica**: it votes and acknowledges writes as soon as it has
//!    the log, so the group is back to three durable copies in seconds;
//! 3. rebuild the log replica's items from a consistent snapshot of the leader's items plus its
//!    own log after the snapshot's index, then promote it to a full replica.
//!
//! After every committed change (and whenever it becomes leader) the leader reports the group's
//! membership and itself as leader to MemDS, which writes it into the metadata routers read.
//! Every step is decided afresh from the group's state each round, so a new leader picks up a
//! replacement wherever the old one left it.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjall::Readable;
use parking_lot::Mutex;
use tern_bus::BusError;
use tern_model::{ApiError, ErrorCode};
use tern_proto::memds::{
    PlaceReplicaRequest, PlaceReplicaResponse, Replica, ReportPartitionRequest,
};
use tern_proto::storage::{
    DropPartitionRequest, RebuildRequest, SnapshotChunk, SnapshotChunkRequest,
};
use tern_proto::{subjects, Empty};
use tern_replication::{Event, MemberKind, Membership, NodeId, Payload, Role};

use crate::apply::fatal;
use crate::codec;
use crate::repair::{self, GroupView, MemberView, Placed, Step};
use crate::replica_store::LogAfterInstall;
use crate::replication::{Group, Outbox, Replication, TICK};
use crate::store::item_key;

/// How often each leader looks at its group's health.
const ROUND: Duration = Duration::from_millis(250);
/// After a failed placement or rebuild, the next attempt waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Bytes of items per snapshot chunk (well under NATS' default 1 MiB payload limit).
const CHUNK_BYTES: usize = 256 * 1024;
/// A snapshot session nobody asked for in this long is closed.
const SESSION_IDLE: Duration = Duration::from_secs(60);
/// Snapshot sessions a node serves at once: each pins a database snapshot (and with it old
/// versions the LSM tree may not drop).
const MAX_SESSIONS: usize = 8;
pub(crate) const REBUILD_TIMEOUT: Duration = Duration::from_secs(300);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The leader's view of its group's repair; reset when leadership changes.
#[derive(Default)]
pub struct HealState {
    /// A task (report, placement, rebuild) is under way.
    busy: bool,
    /// No new task before this engine tick.
    not_before: u64,
    placed: Option<Placed>,
    /// The membership and leader MemDS last accepted from us.
    reported: Option<(Vec<Replica>, String)>,
    next_id: NodeId,
}

enum Task {
    Report(Vec<Replica>, String),
    Place(PlaceReplicaRequest, Option<NodeId>),
    Rebuild(NodeId, String),
    DropOrphan(String),
}

/// Open snapshot sessions served by this node: a consistent view of the database each.
pub type SnapshotSessions =
    Mutex<HashMap<u64, (fjall::Snapshot, tern_replication::SnapshotMeta, Instant)>>;

impl Replication {
    pub(crate) async fn heal_forever(self) {
        let mut round = tokio::time::interval(ROUND);
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            round.tick().await;
            for group in self.groups() {
                let mut out = Outbox::new();
                let task = {
                    let mut g = group.lock();
                    let t = self.heal_step(&mut g, &mut out);
                    if t.is_some() {
                        g.heal.busy = true;
                    }
                    t
                };
                self.flush(out);
                if let Some(t) = task {
                    tokio::spawn(self.clone().run_task(group.clone(), t));
                }
                self.compact(&group);
                self.rebuild_if_itemless(&group);
            }
            self.update_gauges();
        }
    }

    /// Decides the group's next repair step ([`repair::next_step`]) and carries it out:
    /// membership proposals right here, calls to other services as a task.
    fn heal_step(&self, g: &mut Group, out: &mut Outbox) -> Option<Task> {
        if g.engine.role() != Role::Leader {
            return None;
        }
        let view = self.repair_view(g);
        match repair::next_step(&view)? {
            Step::Report(replicas, leader) => Some(Task::Report(replicas, leader)),
            Step::Place(req, replacing) => {
                if let Some(d) = replacing {
                    tracing::warn!(partition = g.pid, member = d, node = %req.replacing_node, "member silent too long: placing a replacement");
                }
                g.heal.next_id = req.member_id + 1;
                Some(Task::Place(req, replacing))
            }
            Step::KeepReturned { orphan_node } => {
                g.heal.placed = None;
                Some(Task::DropOrphan(orphan_node))
            }
            Step::ForgetPlaced => {
                g.heal.placed = None;
                None
            }
            Step::Propose(members) => {
                if let Some(p) = g.heal.placed.clone() {
                    if members.contains_key(&p.id) && !g.engine.membership().contains(p.id) {
                        tracing::info!(partition = g.pid, member = p.id, node = %p.node, "adding a log replica");
                        g.addrs.insert(p.id, (p.node, p.az));
                    } else if let Some(old) = p.replacing {
                        tracing::info!(partition = g.pid, member = old, node = ?g.node_of(old), "removing a silent member");
                    }
                }
                self.propose_membership(g, members, out);
                None
            }
            Step::Rebuild(id, node) => Some(Task::Rebuild(id, node)),
        }
    }

    /// The group as the repair planner sees it.
    fn repair_view(&self, g: &Group) -> GroupView {
        let e = &g.engine;
        let me = e.id();
        let members = e
            .membership()
            .members
            .iter()
            .map(|(id, kind)| {
                let (matched, acked_at) = if *id == me {
                    (e.persisted_index(), Some(e.now()))
                } else {
                    e.peer_progress(*id).unwrap_or((0, None))
                };
                let view = MemberView {
                    kind: *kind,
                    node: g.node_of(*id).map(str::to_string),
                    matched,
                    acked_at,
                };
                (*id, view)
            })
            .collect();
        let unused_id = e
            .unused_member_id()
            .max(g.addrs.keys().max().map_or(0, |m| m + 1))
            .max(g.heal.next_id);
        GroupView {
            partition_id: g.pid,
            me,
            leading: e.role() == Role::Leader,
            has_lease: e.has_lease(),
            waiting: g.heal.busy || e.now() < g.heal.not_before,
            change_pending: e.membership_change_pending(),
            members,
            now: e.now(),
            leader_since: g.leader_since,
            grace: crate::replication::ticks(self.inner().replace_after),
            commit: e.commit_index(),
            placed: g.heal.placed.clone(),
            unused_id,
            report: (g.replicas(), self.inner().node.clone()),
            reported: g.heal.reported.clone(),
        }
    }

    fn propose_membership(
        &self,
        g: &mut Group,
        members: std::collections::BTreeMap<NodeId, MemberKind>,
        out: &mut Outbox,
    ) {
        let cmds = g.engine.step(Event::Propose {
            id: 0,
            payload: Payload::Membership(Membership { members }),
        });
        self.execute(g, cmds, out);
    }

    async fn run_task(self, group: Arc<Mutex<Group>>, task: Task) {
        let bus = self.inner().bus.with_timeout(CALL_TIMEOUT);
        let pid = group.lock().pid;
        let ok = match task {
            Task::Report(replicas, leader) => {
                let req = ReportPartitionRequest {
                    partition_id: pid,
                    replicas: replicas.clone(),
                    leader: leader.clone(),
                };
                match bus
                    .call::<_, Empty>(subjects::MEMDS_REPORT_PARTITION, &req)
                    .await
                {
                    Ok(_) => {
                        group.lock().heal.reported = Some((replicas, leader));
                        true
                    }
                    Err(e) => {
                        tracing::debug!(partition = pid, error = %e, "report membership");
                        false
                    }
                }
            }
            Task::Place(req, replacing) => {
                match bus
                    .call::<_, PlaceReplicaResponse>(subjects::MEMDS_PLACE_REPLICA, &req)
                    .await
                {
                    Ok(PlaceReplicaResponse { replica: Some(r) }) => {
                        group.lock().heal.placed = Some(Placed {
                            replacing,
                            id: r.member_id,
                            node: r.node_id,
                            az: r.az,
                        });
                        true
                    }
                    Ok(_) => false,
                    Err(e) => {
                        tracing::warn!(partition = pid, error = %e, "no replacement replica placed");
                        false
                    }
                }
            }
            Task::Rebuild(id, node) => {
                let me = self.inner().node.clone();
                tracing::info!(partition = pid, member = id, node = %node, "rebuilding a log replica's items");
                let started = Instant::now();
                let req = RebuildRequest {
                    partition_id: pid,
                    source_node: me,
                    ..Default::default()
                };
                let r = self
                    .inner()
                    .bus
                    .with_timeout(REBUILD_TIMEOUT)
                    .call::<_, Empty>(&subjects::storage_rebuild(&node), &req)
                    .await;
                match r {
                    Ok(_) => {
                        tracing::info!(partition = pid, member = id, node = %node, ms = started.elapsed().as_millis() as u64, "items rebuilt: promoting to a full replica");
                        let mut out = Outbox::new();
                        {
                            let mut g = group.lock();
                            let e = &g.engine;
                            let mut m = e.membership().members.clone();
                            if e.role() == Role::Leader
                                && !e.membership_change_pending()
                                && m.get(&id) == Some(&MemberKind::Log)
                            {
                                m.insert(id, MemberKind::Full);
                                self.propose_membership(&mut g, m, &mut out);
                            }
                        }
                        self.flush(out);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(partition = pid, member = id, error = %e, "rebuild failed");
                        false
                    }
                }
            }
            Task::DropOrphan(node) => {
                let req = DropPartitionRequest { partition_id: pid };
                bus.call::<_, Empty>(&subjects::storage_drop_partition(&node), &req)
                    .await
                    .is_ok()
            }
        };
        let mut g = group.lock();
        g.heal.busy = false;
        if !ok {
            g.heal.not_before =
                g.engine.now() + (RETRY_AFTER.as_millis() / TICK.as_millis()) as u64;
        }
    }

    /// A full member without items (an install cut short by a crash, or one that failed) asks
    /// for them itself, from the leader (or, if it leads, from another member), every few seconds.
    fn rebuild_if_itemless(&self, group: &Arc<Mutex<Group>>) {
        let (pid, source) = {
            let mut g = group.lock();
            let e = &g.engine;
            let me = e.id();
            if g.has_items
                || g.installing
                || e.now() < g.install_not_before
                || e.membership().members.get(&me) != Some(&MemberKind::Full)
            {
                return;
            }
            let source = e
                .leader()
                .filter(|l| *l != me)
                .or_else(|| e.membership().members.keys().copied().find(|m| *m != me))
                .and_then(|m| g.node_of(m))
                .map(str::to_string);
            g.install_not_before = e.now() + (RETRY_AFTER.as_millis() / TICK.as_millis()) as u64;
            let Some(source) = source else { return };
            (g.pid, source)
        };
        let r = self.clone();
        tokio::spawn(async move {
            let req = RebuildRequest {
                partition_id: pid,
                source_node: source,
                ..Default::default()
            };
            if let Err(e) = r.rebuild(req).await {
                tracing::warn!(partition = pid, error = %e, "rebuilding a full replica's items failed");
            }
        });
    }

    /// Installs this replica's items from a consistent snapshot on `source_node`, then applies its
    /// own committed log after the snapshot's index: a log replica being promoted, a full replica
    /// whose items are incomplete, or (with `install`) a follower behind its leader's compacted
    /// log. While it runs the replica has no items (serves no reads, applies no writes); a durable
    /// marker says so across a crash, after which the replica starts over.
    pub async fn rebuild(&self, req: RebuildRequest) -> Result<Empty, BusError> {
        let pid = req.partition_id;
        let group = self
            .group(pid)
            .ok_or_else(|| BusError::Redirect(String::new()))?;
        let log_only = {
            let mut g = group.lock();
            let wanted = if req.install {
                g.engine.applied_index() < req.index && g.engine.role() != Role::Leader
            } else {
                !g.has_items
            };
            if !wanted {
                return Ok(Empty {});
            }
            if g.installing {
                // A leader waiting to promote must not take another's install for its own.
                return Err(BusError::Api(ApiError::new(
                    ErrorCode::InternalServerError,
                    "an install is under way",
                )));
            }
            g.installing = true;
            // A log replica (or a new one, which does not know its own membership yet) keeps no
            // items: it takes only the snapshot's log position, and its items come with its
            // rebuild.
            let me = g.engine.id();
            let log_only = !g.has_items
                && g.engine.membership().members.get(&me) != Some(&MemberKind::Full)
                && req.install;
            if !log_only {
                // Not a leader (checked above), so this changes no role.
                let _ = g.set_has_items(false);
                if let Err(e) = self.inner().replicas.begin_install(pid) {
                    fatal("mark install", e);
                }
            }
            log_only
        };
        let r = self.fetch_and_install(&group, &req, log_only).await;
        let mut g = group.lock();
        g.installing = false;
        if r.is_err() {
            g.install_not_before =
                g.engine.now() + (RETRY_AFTER.as_millis() / TICK.as_millis()) as u64;
        }
        r
    }

    async fn fetch_and_install(
        &self,
        group: &Arc<Mutex<Group>>,
        req: &RebuildRequest,
        log_only: bool,
    ) -> Result<Empty, BusError> {
        let pid = req.partition_id;
        let store = self.inner().store.clone();
        if !log_only {
            store.drop_items(pid).map_err(internal)?;
        }
        let bus = self.inner().bus.with_timeout(CALL_TIMEOUT);
        let (mut session, mut after, mut items) = (0, Vec::new(), 0usize);
        let (applied, meta) = loop {
            let chunk: SnapshotChunk = bus
                .call(
                    &subjects::storage_snapshot(&req.source_node),
                    &SnapshotChunkRequest {
                        partition_id: pid,
                        session,
                        after_key: after.clone(),
                        meta_only: log_only,
                    },
                )
                .await?;
            session = chunk.session;
            let mut batch = store.batch();
            for (k, v) in chunk.keys.iter().zip(&chunk.values) {
                batch.insert(store.items(), item_key(pid, k), v.as_slice());
            }
            batch.commit().map_err(internal)?;
            items += chunk.keys.len();
            if let Some(k) = chunk.keys.last() {
                after = k.clone();
            }
            if chunk.done {
                let meta = chunk
                    .meta
                    .as_ref()
                    .map(codec::snapshot_from_wire)
                    .ok_or_else(|| internal("snapshot without its log position"))?;
                break (chunk.applied, meta);
            }
        };
        if meta.index != applied {
            return Err(internal("snapshot's items and log position disagree"));
        }
        let mut out = Outbox::new();
        let replayed = {
            let mut g = group.lock();
            let e = &g.engine;
            // The engine takes the snapshot if it is past its commit index; otherwise the items
            // catch up from its own log, which must still hold the entries after the snapshot.
            let installs = meta.index > e.commit_index();
            let conflicts = installs && e.term_at(meta.index) != Some(meta.term);
            if !installs && e.snapshot().index > applied {
                return Err(internal("own log compacted past the snapshot"));
            }
            if log_only && !installs {
                return Ok(Empty {});
            }
            if conflicts {
                // The log after the snapshot's index does not continue it: it goes first, behind
                // every log write already queued (under the group's lock no new one is), so none
                // of the replaced log lands after the removal, even across a crash.
                self.inner().truncate_log_and_wait(pid, meta.index + 1);
            }
            let snap = if installs { &meta } else { e.snapshot() };
            let log = if conflicts {
                LogAfterInstall::Conflicts
            } else {
                LogAfterInstall::Continues
            };
            let items_at = (!log_only).then_some(applied);
            if let Err(e) = self
                .inner()
                .replicas
                .finish_install(pid, items_at, snap, log)
            {
                fatal("install snapshot", e);
            }
            let from = req.leader_member;
            let cmds = g.engine.step(Event::SnapshotInstalled {
                from,
                meta: meta.clone(),
            });
            self.execute(&mut g, cmds, &mut out);
            if log_only {
                0
            } else {
                let cmds = g.set_has_items(true);
                self.execute(&mut g, cmds, &mut out);
                g.applied = applied;
                let upto = g.engine.applied_index();
                let catch_up = g.engine.entries(applied, upto).to_vec();
                if catch_up.len() as u64 != upto - applied {
                    fatal(
                        "replay after snapshot",
                        "entries after the snapshot are missing",
                    );
                }
                let replayed = catch_up.len();
                self.apply(&mut g, catch_up);
                replayed
            }
        };
        self.flush(out);
        self.inner()
            .metrics
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            partition = pid,
            items,
            snapshot_index = applied,
            replayed,
            log_only,
            "replica installed a snapshot"
        );
        Ok(Empty {})
    }

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
            // Items are applied under the group's lock: holding it, the database snapshot and
            // the engine agree on the applied index and so on its log position.
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
                return Err(BusError::Api(ApiError::new(
                    ErrorCode::ThrottlingException,
                    "too many snapshot sessions: retry later",
                )));
            }
            let id = rand_id();
            sessions.insert(id, (snap, meta, Instant::now()));
            id
        } else {
            req.session
        };
        let Some((snap, meta, used)) = sessions.get_mut(&session) else {
            return Err(BusError::Api(ApiError::new(
                ErrorCode::InternalServerError,
                "snapshot session expired",
            )));
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

    /// Gauges read by the metrics endpoint: groups led, log replicas, replication lag.
    fn update_gauges(&self) {
        let m = &self.inner().metrics;
        let (mut led, mut log_replicas) = (0, 0);
        let mut lag = Vec::new();
        for group in self.groups() {
            let g = group.lock();
            let e = &g.engine;
            if e.role() != Role::Leader {
                continue;
            }
            led += 1;
            let last = e.last_index();
            for (id, kind) in &e.membership().members {
                if *kind == MemberKind::Log {
                    log_replicas += 1;
                }
                if let Some((matched, _)) = e.peer_progress(*id) {
                    let node = g.node_of(*id).unwrap_or_default().to_string();
                    lag.push((g.pid, *id, node, last.saturating_sub(matched)));
                }
            }
        }
        m.groups_led.store(led, Ordering::Relaxed);
        m.log_replicas.store(log_replicas, Ordering::Relaxed);
        *m.lag.lock() = lag;
    }
}

fn rand_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

fn internal(e: impl std::fmt::Display) -> BusError {
    tracing::error!(error = %e, "replica repair failed");
    BusError::Api(ApiError::new(
        ErrorCode::InternalServerError,
        format!("replica repair failed: {e}"),
    ))
}
