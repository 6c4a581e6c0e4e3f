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

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tern_proto::memds::{
    PlaceReplicaRequest, PlaceReplicaResponse, Replica, ReportPartitionRequest,
};
use tern_proto::storage::{DropPartitionRequest, RebuildRequest};
use tern_replication::{Event, MemberKind, Membership, NodeId, Payload, Role};

use crate::repair::{self, GroupView, MemberView, Placed, Step};
use crate::replication::{Group, Outbox, Replication};

/// How often each leader looks at its group's health.
const ROUND: Duration = Duration::from_millis(250);
/// After a failed placement or rebuild, the next attempt waits this long.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(2);

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
    /// Members and leader, with the report's version (term, commit index).
    Report(Vec<Replica>, String, (u64, u64)),
    Place(PlaceReplicaRequest, Option<NodeId>),
    Rebuild(NodeId, String),
    DropOrphan(String),
}

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
            Step::Report(replicas, leader) => Some(Task::Report(
                replicas,
                leader,
                (g.engine.term(), g.engine.commit_index()),
            )),
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
        self.step(
            g,
            Event::Propose {
                id: 0,
                payload: Payload::Membership(Membership { members }),
            },
            out,
        );
    }

    async fn run_task(self, group: Arc<Mutex<Group>>, task: Task) {
        let memds = &self.inner().memds;
        let pid = group.lock().pid;
        let ok = match task {
            Task::Report(replicas, leader, (term, commit_index)) => {
                let req = ReportPartitionRequest {
                    partition_id: pid,
                    replicas: replicas.clone(),
                    leader: leader.clone(),
                    term,
                    commit_index,
                };
                match memds.report_partition(&req).await {
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
            Task::Place(req, replacing) => match memds.place_replica(&req).await {
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
            },
            Task::Rebuild(id, node) => {
                let me = self.inner().node.clone();
                tracing::info!(partition = pid, member = id, node = %node, "rebuilding a log replica's items");
                let started = Instant::now();
                let req = RebuildRequest {
                    partition_id: pid,
                    source_node: me,
                    ..Default::default()
                };
                let r = self.inner().storage.rebuild(&node, &req).await;
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
                let storage = &self.inner().storage;
                storage.drop_partition(&node, &req).await.is_ok()
            }
        };
        let mut g = group.lock();
        g.heal.busy = false;
        if !ok {
            g.heal.not_before = g.engine.now() + crate::replication::ticks(RETRY_AFTER);
        }
    }

    /// Gauges read by the metrics endpoint: groups led, log replicas, replication lag, the
    /// logs' bytes.
    fn update_gauges(&self) {
        let m = &self.inner().metrics;
        let (mut led, mut log_replicas, mut cached, mut stored) = (0, 0, 0, 0);
        let mut lag = Vec::new();
        let groups = self.groups();
        m.replicas.set(groups.len() as i64);
        for group in groups {
            let g = group.lock();
            let e = &g.engine;
            cached += e.cached_bytes();
            stored += e.log_bytes();
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
        m.groups_led.set(led);
        m.log_replicas.set(log_replicas);
        m.log_bytes.set(cached as i64);
        m.log_stored_bytes.set(stored as i64);
        // Members no longer led drop out of the series.
        m.lag.clear();
        for (pid, member, peer, behind) in lag {
            m.lag
                .get_or_create(&crate::metrics::LagLabels {
                    partition: pid.to_string(),
                    member: member.to_string(),
                    peer,
                })
                .set(behind as i64);
        }
    }
}
