//! Installing a snapshot of a partition's items from another replica: rebuilding a new or
//! itemless replica, or catching up a follower behind its leader's compacted log. The durable
//! steps (begin, finish) are [`crate::replica_store::ReplicaStore`]'s.

use std::sync::Arc;

use parking_lot::Mutex;
use tern_bus::BusError;
use tern_proto::storage::{RebuildRequest, SnapshotChunk, SnapshotChunkRequest};
use tern_proto::Empty;
use tern_replication::{Event, MemberKind, Role};

use crate::apply::fatal;
use crate::codec;
use crate::heal::RETRY_AFTER;
use crate::replica_store::LogAfterInstall;
use crate::replication::{ticks, Group, Outbox, Replication};
use crate::store::item_key;

impl Replication {
    /// A full member without items (an install cut short by a crash, or one that failed) asks
    /// for them itself, from the leader (or, if it leads, from another member), every few seconds.
    pub(crate) fn rebuild_if_itemless(&self, group: &Arc<Mutex<Group>>) {
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
            g.install_not_before = e.now() + ticks(RETRY_AFTER);
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
        // No apply job writes into the items while they are taken away (jobs that come later
        // see that there are none) or brought back (later jobs see the new applied index).
        let gate = group.lock().gate.clone();
        let gate_held = tokio::task::block_in_place(|| gate.lock());
        let log_only = {
            let mut g = group.lock();
            // Items come only from a replica of this group: a source that is no member's node
            // (someone else on the bus asking this replica to install what they serve) is refused.
            let known_source = g.addrs.values().any(|(node, _)| *node == req.source_node);
            if !known_source || req.source_node == self.inner().node {
                self.inner().metrics.foreign_messages.inc();
                tracing::warn!(partition = pid, source = %req.source_node, "rebuild from a node that holds no replica of the group refused");
                return Err(tern_storage_client::StorageError::Invalid(
                    "the snapshot source holds no replica of this partition".into(),
                )
                .into());
            }
            let wanted = if req.repair {
                if g.engine.role() == Role::Leader {
                    return Err(tern_storage_client::StorageError::Unavailable(
                        "a leader does not replace its own items: repair it once another replica leads"
                            .into(),
                    )
                    .into());
                }
                g.has_items
            } else if req.install {
                g.engine.applied_index() < req.index && g.engine.role() != Role::Leader
            } else {
                !g.has_items
            };
            if !wanted {
                if req.install {
                    // Installed already (a retry whose first answer was lost): the leader still
                    // has to hear where this replica stands, or it keeps asking.
                    self.acknowledge_install(&mut g, &req);
                }
                return Ok(Empty {});
            }
            if g.installing {
                // A leader waiting to promote must not take another's install for its own.
                return Err(tern_storage_client::StorageError::Unavailable(
                    "an install is under way".into(),
                )
                .into());
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
        drop(gate_held);
        let r = self.fetch_and_install(&group, &req, log_only).await;
        let mut g = group.lock();
        g.installing = false;
        if r.is_err() {
            g.install_not_before = g.engine.now() + ticks(RETRY_AFTER);
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
        let storage = &self.inner().storage;
        let (mut session, mut after, mut items) = (0, Vec::new(), 0usize);
        let (applied, meta) = loop {
            let chunk: SnapshotChunk = storage
                .snapshot_chunk(
                    &req.source_node,
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
        let gate = group.lock().gate.clone();
        let _gate = tokio::task::block_in_place(|| gate.lock());
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
                self.acknowledge_install(&mut g, req);
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
            self.step(
                &mut g,
                Event::SnapshotInstalled {
                    from: req.leader_member,
                    term: req.leader_term,
                    meta: meta.clone(),
                },
                &mut out,
            );
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
                self.apply_now(&mut g, catch_up);
                replayed
            }
        };
        self.flush(out);
        self.inner().metrics.snapshots_installed.inc();
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
}

impl Replication {
    /// Tells the leader that asked for an install which this replica needs no longer (it holds
    /// everything up to the leader's compacted index) how far it stands.
    fn acknowledge_install(&self, g: &mut Group, req: &RebuildRequest) {
        let mut out = Outbox::new();
        // At or before the commit index: the engine takes nothing from it but the acknowledgement.
        let meta = g.engine.snapshot().clone();
        self.step(
            g,
            Event::SnapshotInstalled {
                from: req.leader_member,
                term: req.leader_term,
                meta,
            },
            &mut out,
        );
        self.flush(out);
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> BusError {
    tracing::error!(error = %e, "replica repair failed");
    tern_storage_client::StorageError::Unavailable(format!("replica repair failed: {e}")).into()
}
