//! The replication engine of one partition's group: a deterministic state machine.
//!
//! Raft-style Multi-Paxos: terms, randomized election timeouts (from a seeded generator the
//! engine owns), pre-votes, log matching with conflict truncation, commit only of entries of the
//! current term by a durable quorum (the leader counts itself only once its own write is on disk),
//! leader leases for reads, log replicas, and single-member membership changes through the log.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Config {
    pub id: NodeId,
    /// Election timeout, in ticks, drawn uniformly from `[election_min, election_max)`.
    pub election_min: u64,
    pub election_max: u64,
    pub heartbeat_interval: u64,
    /// How long a quorum's acknowledgement lets the leader serve reads alone. Must not exceed
    /// `election_min`: followers refuse to vote that long after hearing from the leader.
    pub lease: u64,
    /// Most entries in one append message.
    pub max_batch: usize,
    /// Most payload bytes in one append message (one entry goes alone whatever its size): the
    /// runtime keeps an append within its transport's message limit with this.
    pub max_batch_bytes: usize,
    /// Ticks before a follower that still needs a snapshot is sent another.
    pub snapshot_retry: u64,
    /// Most command bytes the log keeps in memory. Beyond it, the oldest entries that are
    /// applied and durable keep only their index and term ([`Payload::OnDisk`]); the runtime
    /// reads them back from its durable log when a follower behind needs them.
    pub payload_cache_bytes: u64,
    /// Heartbeats go out at the ticks `t` where `(t + heartbeat_phase) % heartbeat_interval == 0`:
    /// a runtime that gives every group it hosts the phase that maps their ticks to its own
    /// clock sends all their heartbeats in the same rounds, so they share messages.
    pub heartbeat_phase: u64,
    pub seed: u64,
}

impl Config {
    pub fn new(id: NodeId, seed: u64) -> Self {
        Self {
            id,
            election_min: 10,
            election_max: 20,
            heartbeat_interval: 2,
            lease: 8,
            max_batch: 64,
            max_batch_bytes: 256 * 1024,
            snapshot_retry: 20,
            payload_cache_bytes: u64::MAX,
            heartbeat_phase: 0,
            seed,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Progress {
    next: Index,
    matched: Index,
    /// `sent_at` of the newest acknowledged append.
    acked_at: Option<u64>,
    /// Tick a snapshot was last requested for this follower.
    snapshot_at: Option<u64>,
}

/// Cloneable and hashable, so a model checker can hold engines in its states.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Engine {
    cfg: Config,
    hs: HardState,
    /// Entries up to `snap.index` are compacted: the state machine holds them.
    snap: SnapshotMeta,
    /// `log[i]` holds index `snap.index + i + 1`.
    log: Vec<Entry>,
    /// Payload bytes `log` stands for (in memory or not), so the runtime can compact by size.
    log_bytes: u64,
    /// Payload bytes `log` holds in memory.
    cached_bytes: u64,
    /// Entries up to here hold no command bytes in memory (dropped, or never had any).
    evicted_upto: Index,
    membership: Membership,
    commit: Index,
    applied: Index,
    /// The own log is durable up to here.
    persisted: Index,
    role: Role,
    leader: Option<NodeId>,
    now: u64,
    election_deadline: u64,
    heard_leader_at: Option<u64>,
    pre_candidate: bool,
    votes: BTreeSet<NodeId>,
    progress: BTreeMap<NodeId, Progress>,
    heartbeat_due: u64,
    /// Tick this replica last became leader (check-quorum counts from here at the earliest).
    leader_since: u64,
    /// The runtime's word that this replica's state machine is whole: a full member whose state
    /// is being rebuilt votes and acknowledges, but must not lead (it could not serve reads or
    /// apply writes).
    may_lead: bool,
    pending_reads: Vec<(RequestId, Index)>,
    /// Follower: (leader, index, sent_at) to acknowledge once the log is durable up to index.
    pending_ack: Option<(NodeId, Index, u64)>,
    /// Follower: the highest index acknowledged to the current leader.
    ack_sent: Index,
    rng: u64,
    out: Vec<Command>,
}

impl Engine {
    /// `log` is the recovered (durable) log from index 1, `applied` what the state machine
    /// already holds.
    pub fn new(
        cfg: Config,
        hs: HardState,
        log: Vec<Entry>,
        initial: Membership,
        applied: Index,
    ) -> Self {
        let max_member_id = initial.members.keys().max().copied().unwrap_or(0);
        let snap = SnapshotMeta {
            index: 0,
            term: 0,
            membership: initial,
            max_member_id,
        };
        Self::restore(cfg, hs, snap, log, applied)
    }

    /// Recovers from a snapshot and the durable log after it; `applied` (at least `snap.index`)
    /// is what the state machine already holds.
    pub fn restore(
        cfg: Config,
        hs: HardState,
        snap: SnapshotMeta,
        log: Vec<Entry>,
        applied: Index,
    ) -> Self {
        let log: Vec<Entry> = log.into_iter().filter(|e| e.index > snap.index).collect();
        let membership = latest_membership(&log, &snap.membership);
        let persisted = snap.index + log.len() as Index;
        let applied = applied.clamp(snap.index, persisted);
        let log_bytes = log.iter().map(entry_bytes).sum();
        let cached_bytes = log.iter().map(|e| e.payload.in_memory() as u64).sum();
        let evicted_upto = snap.index;
        let rng = cfg.seed ^ cfg.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut e = Engine {
            hs,
            snap,
            log,
            log_bytes,
            cached_bytes,
            evicted_upto,
            membership,
            commit: applied,
            applied,
            persisted,
            role: Role::Follower,
            leader: None,
            now: 0,
            election_deadline: 0,
            // NOTE: after a restart we may have acknowledged a leader moments ago and forgotten;
            // refusing votes for one election timeout keeps that leader's lease safe. A replica
            // that never left term 0 never acknowledged anyone (acks follow the durable term).
            heard_leader_at: (hs.term > 0).then_some(0),
            pre_candidate: false,
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            heartbeat_due: 0,
            leader_since: 0,
            may_lead: true,
            pending_reads: Vec::new(),
            pending_ack: None,
            ack_sent: 0,
            rng,
            out: Vec::new(),
            cfg,
        };
        e.reset_election_deadline();
        e
    }

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.hs.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> Index {
        self.commit
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The index up to which the log is known durable here.
    pub fn persisted_index(&self) -> Index {
        self.persisted
    }
    pub fn last_index(&self) -> Index {
        self.snap.index + self.log.len() as Index
    }
    /// The log this engine still holds: the entries after [`Self::snapshot`]'s index.
    pub fn log(&self) -> &[Entry] {
        &self.log
    }
    /// What the compacted part of the log stands for.
    pub fn snapshot(&self) -> &SnapshotMeta {
        &self.snap
    }
    /// Entries in `(from, to]` still in the log (an empty slice where compacted or absent).
    pub fn entries(&self, from: Index, to: Index) -> &[Entry] {
        let lo = from.max(self.snap.index) - self.snap.index;
        let hi = to.min(self.last_index()).max(self.snap.index) - self.snap.index;
        &self.log[lo.min(hi) as usize..hi as usize]
    }
    /// The term of the entry at `index`, if this log knows it (`Some(0)` for index 0).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.snap.index {
            return Some(self.snap.term);
        }
        if index < self.snap.index {
            return None;
        }
        self.log
            .get((index - self.snap.index) as usize - 1)
            .map(|e| e.term)
    }
    /// The index up to which the state machine has been given committed entries.
    pub fn applied_index(&self) -> Index {
        self.applied
    }
    /// The snapshot metadata of the state at `index` (applied, so at or after the snapshot).
    pub fn snapshot_at(&self, index: Index) -> Option<SnapshotMeta> {
        let term = self.term_at(index)?;
        let upto = self.entries(self.snap.index, index);
        Some(SnapshotMeta {
            index,
            term,
            membership: latest_membership(upto, &self.snap.membership),
            max_member_id: max_member_id(upto, self.snap.max_member_id),
        })
    }

    /// Drops the log up to `upto` (at most the applied and durable index), whose effects the
    /// state machine holds. The runtime must have made that state durable first. Returns the
    /// new snapshot metadata if anything was dropped.
    pub fn compact(&mut self, upto: Index) -> Option<SnapshotMeta> {
        let upto = upto.min(self.applied).min(self.persisted);
        if upto <= self.snap.index {
            return None;
        }
        let meta = self.snapshot_at(upto)?;
        self.drain_log_to(upto);
        self.snap = meta.clone();
        Some(meta)
    }
    /// Logical time: ticks seen since start.
    pub fn now(&self) -> u64 {
        self.now
    }
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// A membership change is in the log but not yet committed (no other may start).
    pub fn membership_change_pending(&self) -> bool {
        self.entries(self.commit, self.last_index())
            .iter()
            .any(|e| matches!(e.payload, Payload::Membership(_)))
    }

    /// Leader only: what `peer` has acknowledged, as (durable match, leader tick of the newest
    /// acknowledged append). `None` when not leading or `peer` is not a member.
    pub fn peer_progress(&self, peer: NodeId) -> Option<(Index, Option<u64>)> {
        self.progress.get(&peer).map(|p| (p.matched, p.acked_at))
    }

    /// Leading, with a quorum's acknowledgement within the lease.
    pub fn has_lease(&self) -> bool {
        self.role == Role::Leader && self.lease_valid()
    }

    /// Leader only: the tick at which the newest append that a quorum (this leader included) has
    /// acknowledged was sent. The lease runs from the real time of that tick: every follower that
    /// acknowledged heard the leader no earlier, and refuses votes for `election_min` of its own
    /// ticks after hearing it. A runtime whose ticks can lag real time (a stalled process) must
    /// check the lease against its clock with this, not against ticks.
    pub fn lease_start(&self) -> Option<u64> {
        if self.role != Role::Leader {
            return None;
        }
        self.quorum_ack_tick()
    }

    /// Payload bytes of the entries still in the log.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// An id no member of this group has had, as far as this log knows: the largest one in the
    /// snapshot's history and every membership entry since, plus one.
    pub fn unused_member_id(&self) -> NodeId {
        max_member_id(&self.log, self.snap.max_member_id) + 1
    }

    /// Whether this replica may stand for election (its state machine is whole); a leader told
    /// it may not steps down.
    pub fn set_may_lead(&mut self, may_lead: bool) -> Vec<Command> {
        self.may_lead = may_lead;
        if !may_lead && self.role != Role::Follower {
            let term = self.hs.term;
            self.become_follower(term, None);
        }
        std::mem::take(&mut self.out)
    }

    /// Feeds one event; returns the commands to carry out, in order.
    pub fn step(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::Tick => self.tick(),
            Event::Message { from, msg } => self.receive(from, msg),
            Event::Propose { id, payload } => self.propose(id, payload),
            Event::Read { id } => self.read(id),
            Event::Persisted { index, term } => self.persisted(index, term),
            Event::Campaign => {
                if self.role != Role::Leader {
                    self.start_pre_vote();
                }
            }
            Event::SnapshotInstalled { from, term, meta } => {
                self.snapshot_installed(from, term, meta)
            }
        }
        self.evict();
        std::mem::take(&mut self.out)
    }

    /// Sets [`Config::heartbeat_phase`] (taken modulo the heartbeat interval).
    pub fn set_heartbeat_phase(&mut self, phase: u64) {
        self.cfg.heartbeat_phase = phase % self.cfg.heartbeat_interval.max(1);
    }

    /// Sets [`Config::payload_cache_bytes`] (the runtime shares a node's budget among its
    /// replicas, whose number changes).
    pub fn set_payload_cache_bytes(&mut self, bytes: u64) {
        self.cfg.payload_cache_bytes = bytes;
        self.evict();
    }

    /// Command bytes the log holds in memory.
    pub fn cached_bytes(&self) -> u64 {
        self.cached_bytes
    }

    /// Drops the command bytes of the oldest entries that are applied and durable, until the
    /// log's memory is within [`Config::payload_cache_bytes`]. Entries not yet applied keep
    /// theirs: `Apply` always carries the bytes.
    fn evict(&mut self) {
        let upto = self.applied.min(self.persisted);
        let mut i = self.evicted_upto.max(self.snap.index) + 1;
        while i <= upto && self.cached_bytes > self.cfg.payload_cache_bytes {
            let e = &mut self.log[(i - self.snap.index - 1) as usize];
            if let Payload::Command(b) = &e.payload {
                let len = b.len();
                e.payload = Payload::OnDisk { len };
                self.cached_bytes -= len as u64;
            }
            self.evicted_upto = i;
            i += 1;
        }
    }

    /// The newest tick a quorum has acknowledged (the leader counts as acknowledging now).
    fn quorum_ack_tick(&self) -> Option<u64> {
        self.quorum_value(self.now, |p| p.acked_at)
    }

    /// The largest value a quorum of members has reached: this replica at `own`, each peer at
    /// what `of` says of its progress (a peer it says nothing of counts as not there).
    fn quorum_value(&self, own: u64, of: impl Fn(&Progress) -> Option<u64>) -> Option<u64> {
        let value_of = |id: &NodeId| {
            if *id == self.cfg.id {
                Some(own)
            } else {
                self.progress.get(id).and_then(&of)
            }
        };
        let values = || self.membership.members.keys().filter_map(value_of);
        // NOTE: a leader asks this on every tick; for a group's handful of members, counting
        // without collecting (the largest value at least a quorum reach) saves an allocation.
        let quorum = self.membership.quorum();
        values()
            .filter(|v| values().filter(|w| w >= v).count() >= quorum)
            .max()
    }

    /// Drops the entries up to `index` (which the snapshot will stand for) from the log.
    fn drain_log_to(&mut self, index: Index) {
        let n = (index.saturating_sub(self.snap.index) as usize).min(self.log.len());
        let dropped: u64 = self.log[..n].iter().map(entry_bytes).sum();
        let cached: u64 = self.log[..n]
            .iter()
            .map(|e| e.payload.in_memory() as u64)
            .sum();
        self.log.drain(..n);
        self.log_bytes -= dropped;
        self.cached_bytes -= cached;
    }

    /// Drops the entries from `index` on.
    fn truncate_log_from(&mut self, index: Index) {
        let keep = (index.saturating_sub(self.snap.index + 1) as usize).min(self.log.len());
        let dropped: u64 = self.log[keep..].iter().map(entry_bytes).sum();
        let cached: u64 = self.log[keep..]
            .iter()
            .map(|e| e.payload.in_memory() as u64)
            .sum();
        self.log.truncate(keep);
        self.log_bytes -= dropped;
        self.cached_bytes -= cached;
        self.evicted_upto = self.evicted_upto.min(index.saturating_sub(1));
    }

    fn push_log(&mut self, entry: Entry) {
        self.log_bytes += entry_bytes(&entry);
        self.cached_bytes += entry.payload.in_memory() as u64;
        self.log.push(entry);
    }

    fn last_term(&self) -> Term {
        self.log.last().map_or(self.snap.term, |e| e.term)
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn reset_election_deadline(&mut self) {
        let span = self
            .cfg
            .election_max
            .saturating_sub(self.cfg.election_min)
            .max(1);
        // A fixed timeout draws nothing, so equal states stay equal (the model check relies on it).
        let jitter = if span > 1 {
            self.next_random() % span
        } else {
            0
        };
        self.election_deadline = self.now + self.cfg.election_min + jitter;
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.out.push(Command::Send { to, msg });
    }

    fn peers(&self) -> Vec<NodeId> {
        self.membership
            .members
            .keys()
            .copied()
            .filter(|m| *m != self.cfg.id)
            .collect()
    }

    fn persist_hard_state(&mut self) {
        self.out.push(Command::PersistHardState(self.hs));
    }

    fn set_role(&mut self, role: Role, leader: Option<NodeId>) {
        if self.role != role || self.leader != leader {
            self.role = role;
            self.leader = leader;
            self.out.push(Command::RoleChanged {
                role,
                term: self.hs.term,
                leader,
            });
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.hs.term {
            self.hs = HardState {
                term,
                voted_for: None,
            };
            self.persist_hard_state();
        }
        self.pre_candidate = false;
        self.progress.clear();
        // What another leader (or this one in an earlier term) sent says nothing about the log of
        // the new one: acknowledging it could count entries the new leader does not hold.
        self.pending_ack = None;
        self.ack_sent = 0;
        self.reject_pending_reads(leader);
        self.set_role(Role::Follower, leader);
    }

    fn reject_pending_reads(&mut self, leader: Option<NodeId>) {
        for (id, _) in std::mem::take(&mut self.pending_reads) {
            self.out.push(Command::ReadRejected { id, leader });
        }
    }

    // ---- time ----

    fn tick(&mut self) {
        self.now += 1;
        if self.role == Role::Leader {
            // A leader in touch with a quorum counts as a live leader for its own vote decisions.
            if self.lease_valid() {
                self.heard_leader_at = Some(self.now);
            }
            // Check-quorum: a leader no quorum has answered for an election timeout has most
            // likely been replaced (or is cut off); it steps down so clients go elsewhere.
            let heard = self.quorum_ack_tick().unwrap_or(0).max(self.leader_since);
            if self.now >= heard + self.cfg.election_max {
                let term = self.hs.term;
                self.become_follower(term, None);
                self.reset_election_deadline();
                return;
            }
            if self.now >= self.heartbeat_due {
                self.broadcast_append();
            }
        } else if self.now >= self.election_deadline {
            self.start_pre_vote();
        }
    }

    fn start_pre_vote(&mut self) {
        self.reset_election_deadline();
        if !self.membership.can_lead(self.cfg.id) || !self.may_lead {
            return;
        }
        self.pre_candidate = true;
        self.votes = BTreeSet::from([self.cfg.id]);
        if self.votes.len() >= self.membership.quorum() {
            return self.start_election();
        }
        self.request_votes(self.hs.term + 1, true);
    }

    /// Asks every peer for its (pre-)vote in `term`.
    fn request_votes(&mut self, term: Term, pre: bool) {
        let msg = Message::Vote {
            term,
            last_index: self.last_index(),
            last_term: self.last_term(),
            pre,
        };
        for p in self.peers() {
            self.send(p, msg.clone());
        }
    }

    fn start_election(&mut self) {
        self.pre_candidate = false;
        self.hs = HardState {
            term: self.hs.term + 1,
            voted_for: Some(self.cfg.id),
        };
        self.persist_hard_state();
        self.set_role(Role::Candidate, None);
        self.reset_election_deadline();
        self.votes = BTreeSet::from([self.cfg.id]);
        if self.votes.len() >= self.membership.quorum() {
            return self.become_leader();
        }
        self.request_votes(self.hs.term, false);
    }

    fn become_leader(&mut self) {
        self.set_role(Role::Leader, Some(self.cfg.id));
        self.heard_leader_at = Some(self.now);
        self.leader_since = self.now;
        let next = self.last_index() + 1;
        self.progress = self
            .peers()
            .into_iter()
            .map(|p| {
                (
                    p,
                    Progress {
                        next,
                        matched: 0,
                        acked_at: None,
                        snapshot_at: None,
                    },
                )
            })
            .collect();
        self.append_own(Payload::Noop);
        self.broadcast_append();
    }

    // ---- messages ----

    fn receive(&mut self, from: NodeId, msg: Message) {
        if !self.well_formed(from, &msg) {
            return;
        }
        let term = msg.term();
        let recently_heard = self
            .heard_leader_at
            .is_some_and(|t| self.now < t + self.cfg.election_min);
        match &msg {
            // A vote request while a leader is alive is ignored outright, its term included.
            Message::Vote { pre: false, .. } if term > self.hs.term && recently_heard => return,
            // A refused pre-vote tells the term the group is at: a replica that fell behind in
            // terms (cut off while others held elections) catches up, or its pre-votes, which
            // ask for its own term plus one, would be refused for ever while its log may be the
            // one the group needs.
            Message::VoteResponse {
                pre: true,
                granted: false,
                ..
            } if term > self.hs.term => self.become_follower(term, None),
            Message::Vote { pre: true, .. } | Message::VoteResponse { pre: true, .. } => {}
            _ if term > self.hs.term => {
                let leader = matches!(msg, Message::Append { .. }).then_some(from);
                self.become_follower(term, leader);
            }
            _ => {}
        }
        match msg {
            Message::Vote {
                term,
                last_index,
                last_term,
                pre,
            } => self.on_vote(from, term, last_index, last_term, pre, recently_heard),
            Message::VoteResponse { term, granted, pre } => {
                self.on_vote_response(from, term, granted, pre)
            }
            Message::Append {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
                sent_at,
            } => self.on_append(from, term, prev_index, prev_term, entries, commit, sent_at),
            Message::AppendResponse {
                term,
                success,
                index,
                sent_at,
            } => self.on_append_response(from, term, success, index, sent_at),
        }
    }

    /// Peer input is checked, never trusted: a message from a non-member, with a term no real
    /// group reaches (it would overflow), or with entries that do not continue `prev_index`
    /// contiguously in non-decreasing terms up to the message's own is dropped.
    fn well_formed(&self, from: NodeId, msg: &Message) -> bool {
        if from == self.cfg.id || msg.term() >= MAX_TERM {
            return false;
        }
        match msg {
            Message::Append {
                term,
                prev_index,
                prev_term,
                entries,
                ..
            } => {
                let mut expect = (*prev_index, *prev_term);
                for e in entries {
                    // An entry without its bytes is the sender's to fill in before sending.
                    if Some(e.index) != expect.0.checked_add(1)
                        || e.term < expect.1
                        || e.term > *term
                        || matches!(e.payload, Payload::OnDisk { .. })
                    {
                        return false;
                    }
                    expect = (e.index, e.term);
                }
                prev_term <= term
            }
            _ => true,
        }
    }

    fn log_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    fn on_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
        pre: bool,
        recently_heard: bool,
    ) {
        let log_ok = self.log_up_to_date(last_index, last_term);
        let granted = if pre {
            term > self.hs.term && log_ok && !recently_heard && self.role != Role::Leader
        } else {
            term == self.hs.term
                && self.hs.voted_for.is_none_or(|v| v == from)
                && log_ok
                && self.role != Role::Leader
        };
        if granted && !pre {
            self.hs.voted_for = Some(from);
            self.persist_hard_state();
            self.reset_election_deadline();
        }
        let reply_term = if pre && granted { term } else { self.hs.term };
        self.send(
            from,
            Message::VoteResponse {
                term: reply_term,
                granted,
                pre,
            },
        );
    }

    fn on_vote_response(&mut self, from: NodeId, term: Term, granted: bool, pre: bool) {
        if !granted || !self.membership.contains(from) {
            return;
        }
        if pre && self.pre_candidate && term == self.hs.term + 1 {
            self.votes.insert(from);
            if self.votes.len() >= self.membership.quorum() {
                self.start_election();
            }
        } else if !pre && self.role == Role::Candidate && term == self.hs.term {
            self.votes.insert(from);
            if self.votes.len() >= self.membership.quorum() {
                self.become_leader();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        from: NodeId,
        term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
        sent_at: u64,
    ) {
        if term < self.hs.term {
            // NOTE: no send time: the sender may lead a later term by now (after a restart, with
            // a clock started afresh), and must not take this answer to an old append for a
            // recent acknowledgement of its lease.
            let msg = Message::AppendResponse {
                term: self.hs.term,
                success: false,
                index: 0,
                sent_at: 0,
            };
            return self.send(from, msg);
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(term, Some(from));
        }
        self.heard_leader_at = Some(self.now);
        self.reset_election_deadline();
        match self.term_at(prev_index) {
            None => {
                let hint = self.last_index() + 1;
                return self.send(
                    from,
                    Message::AppendResponse {
                        term,
                        success: false,
                        index: hint,
                        sent_at,
                    },
                );
            }
            Some(t) if t != prev_term => {
                let hint = self.first_index_of_term(prev_index, t);
                return self.send(
                    from,
                    Message::AppendResponse {
                        term,
                        success: false,
                        index: hint,
                        sent_at,
                    },
                );
            }
            Some(_) => {}
        }
        let upto = prev_index + entries.len() as Index;
        if !self.append_from_leader(entries) {
            return;
        }
        let new_commit = commit.min(upto).max(self.commit);
        if new_commit > self.commit {
            self.commit = new_commit;
            self.apply();
        }
        let (_, acked, _) = self.pending_ack.unwrap_or((from, 0, 0));
        self.pending_ack = Some((from, acked.max(upto), sent_at));
        self.ack_if_durable();
    }

    fn first_index_of_term(&self, from: Index, term: Term) -> Index {
        let mut i = from;
        while i > self.snap.index + 1 && self.term_at(i - 1) == Some(term) {
            i -= 1;
        }
        i.max(self.snap.index + 1)
    }

    /// Appends what the leader sent after the matching prefix; false (and nothing changed) if it
    /// conflicts with a committed entry, which only a faulty or forged message can.
    fn append_from_leader(&mut self, entries: Vec<Entry>) -> bool {
        let mut new = Vec::new();
        let mut truncate_from = None;
        for e in entries {
            if e.index <= self.snap.index {
                // Committed, and in the snapshot already.
                continue;
            }
            match self.term_at(e.index) {
                Some(t) if t == e.term && new.is_empty() => continue,
                Some(_) if new.is_empty() => {
                    if e.index <= self.commit {
                        return false;
                    }
                    truncate_from = Some(e.index);
                    new.push(e);
                }
                _ => new.push(e),
            }
        }
        if new.is_empty() {
            return true;
        }
        if let Some(from) = truncate_from {
            self.truncate_log_from(from);
            self.persisted = self.persisted.min(from - 1);
            // Rare: the membership may have come from a dropped entry.
            self.membership = latest_membership(&self.log, &self.snap.membership);
        }
        // Only the new entries can change the membership: no scan of the whole log.
        if let Some(m) = new.iter().rev().find_map(|e| match &e.payload {
            Payload::Membership(m) => Some(m.clone()),
            _ => None,
        }) {
            self.membership = m;
        }
        for e in &new {
            self.push_log(e.clone());
        }
        self.out.push(Command::AppendLog(new));
        true
    }

    /// Acknowledges the durable part of what the leader sent. Once all of it is durable the ack
    /// is complete; before that, each fsync that moves the durable index acknowledges the new
    /// prefix. A follower whose fsyncs take longer than the heartbeat gets the next append before
    /// each fsync ends: waiting for all of it would never acknowledge, and the leader would step
    /// down for want of a quorum. Every ack carries the newest send time (the lease counts from
    /// when the follower last heard the leader, durable or not).
    fn ack_if_durable(&mut self) {
        let Some((leader, upto, sent_at)) = self.pending_ack else {
            return;
        };
        let durable = self.persisted.min(upto);
        if durable >= upto {
            self.pending_ack = None;
        } else if durable <= self.ack_sent {
            return;
        }
        self.ack_sent = self.ack_sent.max(durable);
        let msg = Message::AppendResponse {
            term: self.hs.term,
            success: true,
            index: durable,
            sent_at,
        };
        self.send(leader, msg);
    }

    fn on_append_response(
        &mut self,
        from: NodeId,
        term: Term,
        success: bool,
        index: Index,
        sent_at: u64,
    ) {
        if self.role != Role::Leader || term != self.hs.term {
            return;
        }
        let last = self.last_index();
        // A follower never holds more than was sent to it.
        let index = index.min(last + 1);
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        // A snapshot's acknowledgement carries no send time (0): it says nothing about the lease;
        // nor does a time this leader's clock has not reached (an answer to an earlier life).
        if sent_at > 0 && sent_at <= self.now {
            p.acked_at = Some(p.acked_at.map_or(sent_at, |a| a.max(sent_at)));
        }
        if success {
            let index = index.min(last);
            p.matched = p.matched.max(index);
            p.next = p.next.max(index + 1);
            p.snapshot_at = None;
            let behind = p.next <= last;
            self.maybe_commit();
            if behind {
                self.send_append(from);
            }
        } else if index > 0 {
            p.next = index.min(p.next.saturating_sub(1)).max(1);
            self.send_append(from);
        }
    }

    // ---- leader ----

    fn append_own(&mut self, payload: Payload) -> Index {
        let index = self.last_index() + 1;
        let entry = Entry {
            term: self.hs.term,
            index,
            payload,
        };
        if let Payload::Membership(m) = &entry.payload {
            self.membership = m.clone();
            let next = index;
            for id in m.members.keys() {
                if *id != self.cfg.id {
                    self.progress.entry(*id).or_insert(Progress {
                        next,
                        matched: 0,
                        acked_at: None,
                        snapshot_at: None,
                    });
                }
            }
            self.progress.retain(|id, _| m.contains(*id));
        }
        self.push_log(entry.clone());
        self.out.push(Command::AppendLog(vec![entry]));
        index
    }

    fn broadcast_append(&mut self) {
        let every = self.cfg.heartbeat_interval.max(1);
        let at = (self.now + self.cfg.heartbeat_phase) % every;
        self.heartbeat_due = self.now + every - at;
        for p in self.peers() {
            self.send_append(p);
        }
    }

    fn send_append(&mut self, to: NodeId) {
        let Some(p) = self.progress.get(&to) else {
            return;
        };
        let prev_index = p.next - 1;
        let Some(prev_term) = self.term_at(prev_index) else {
            // The entries it needs are compacted: it needs a snapshot.
            let due = p
                .snapshot_at
                .is_none_or(|at| self.now >= at + self.cfg.snapshot_retry);
            if due {
                let now = self.now;
                if let Some(p) = self.progress.get_mut(&to) {
                    p.snapshot_at = Some(now);
                }
                let index = self.snap.index;
                self.out.push(Command::SendSnapshot { to, index });
            }
            return;
        };
        let end = (prev_index + self.cfg.max_batch as Index).min(self.last_index());
        let mut bytes = 0;
        let entries: Vec<Entry> = self
            .entries(prev_index, end)
            .iter()
            .take_while(|e| {
                let first = bytes == 0;
                bytes += entry_bytes(e) as usize;
                first || bytes <= self.cfg.max_batch_bytes
            })
            .cloned()
            .collect();
        let end = prev_index + entries.len() as Index;
        // Pipelining: the next append continues after these entries instead of resending them;
        // a lost message shows up as a rejection, which rewinds `next`.
        if let Some(p) = self.progress.get_mut(&to) {
            p.next = end + 1;
        }
        let msg = Message::Append {
            term: self.hs.term,
            prev_index,
            prev_term,
            entries,
            commit: self.commit,
            sent_at: self.now,
        };
        self.send(to, msg);
    }

    fn maybe_commit(&mut self) {
        let Some(n) = self.quorum_value(self.persisted, |p| Some(p.matched)) else {
            return;
        };
        // NOTE: only an entry of the current term commits by counting replicas (Raft's figure 8).
        if n > self.commit && self.term_at(n) == Some(self.hs.term) {
            self.commit = n;
            self.apply();
        }
    }

    /// Hands committed entries to the state machine, but never beyond the own durable log: an
    /// applied entry must survive a crash in this replica's log, or a restart would re-apply it
    /// (harmless for a blind put, not for a conditional write).
    fn apply(&mut self) {
        let upto = self.commit.min(self.persisted);
        if upto > self.applied {
            let entries = self.entries(self.applied, upto).to_vec();
            self.applied = upto;
            self.out.push(Command::Apply(entries));
        }
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_reads)
            .into_iter()
            .partition(|(_, at)| *at <= applied);
        self.pending_reads = waiting;
        for (id, _) in ready {
            self.out.push(Command::ReadReady { id });
        }
    }

    fn lease_valid(&self) -> bool {
        let fresh = |at: Option<u64>| at.is_some_and(|a| self.now < a + self.cfg.lease);
        let acks = self
            .membership
            .members
            .keys()
            .filter(|id| {
                **id == self.cfg.id || fresh(self.progress.get(id).and_then(|p| p.acked_at))
            })
            .count();
        acks >= self.membership.quorum()
    }

    fn propose(&mut self, id: RequestId, payload: Payload) {
        if self.role != Role::Leader {
            let leader = self.leader;
            return self.out.push(Command::Proposed {
                id,
                result: Err(ProposeError::NotLeader { leader }),
            });
        }
        if let Payload::Membership(m) = &payload {
            if let Err(e) = self.check_membership_change(m) {
                return self.out.push(Command::Proposed { id, result: Err(e) });
            }
        }
        let index = self.append_own(payload);
        self.out.push(Command::Proposed {
            id,
            result: Ok(index),
        });
        // One append in flight per follower: entries proposed meanwhile go out together when it
        // is acknowledged (or with the next heartbeat), which batches them under load.
        for p in self.peers() {
            if self
                .progress
                .get(&p)
                .is_some_and(|pr| pr.next <= pr.matched + 1)
            {
                self.send_append(p);
            }
        }
        if self.membership.quorum() == 1 {
            self.maybe_commit();
        }
    }

    fn check_membership_change(&self, m: &Membership) -> Result<(), ProposeError> {
        if self.membership_change_pending() {
            return Err(ProposeError::MembershipChangePending);
        }
        let old = &self.membership.members;
        let changed = old
            .keys()
            .chain(m.members.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|id| old.get(id) != m.members.get(id))
            .count();
        if changed > 1 || !m.can_lead(self.cfg.id) {
            return Err(ProposeError::InvalidMembership);
        }
        Ok(())
    }

    fn read(&mut self, id: RequestId) {
        let committed_in_term = self.term_at(self.commit) == Some(self.hs.term);
        if self.role != Role::Leader || !committed_in_term || !self.lease_valid() {
            let leader = self.leader;
            return self.out.push(Command::ReadRejected { id, leader });
        }
        self.pending_reads.push((id, self.commit));
        self.apply();
    }

    fn snapshot_installed(&mut self, from: NodeId, term: Term, meta: SnapshotMeta) {
        if meta.index > self.commit {
            let index = meta.index;
            if self.term_at(index) == Some(meta.term) {
                self.drain_log_to(index);
            } else {
                self.log.clear();
                self.log_bytes = 0;
                self.cached_bytes = 0;
            }
            self.persisted = self
                .persisted
                .max(index)
                .min(index + self.log.len() as Index);
            self.membership = latest_membership(&self.log, &meta.membership);
            self.snap = meta;
            self.commit = index;
            self.applied = index;
            self.pending_ack = None;
        }
        if term == 0 || from == self.cfg.id || !self.membership.contains(from) || term >= MAX_TERM {
            return;
        }
        if term < self.hs.term {
            // Asked by a leader since deposed: it hears the newer term, not a success to count.
            let msg = Message::AppendResponse {
                term: self.hs.term,
                success: false,
                index: 0,
                sent_at: 0,
            };
            return self.send(from, msg);
        }
        // The leader of `term` asked: as good as an append from it (a replica restarted while
        // its leader compacted past it hears nothing else from it until this acknowledgement).
        if term > self.hs.term || self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(term, Some(from));
        }
        self.heard_leader_at = Some(self.now);
        self.reset_election_deadline();
        // NOTE: no send time: a snapshot says nothing about the leader's lease.
        let msg = Message::AppendResponse {
            term: self.hs.term,
            success: true,
            index: self.commit.min(self.persisted),
            sent_at: 0,
        };
        self.send(from, msg);
    }

    fn persisted(&mut self, index: Index, term: Term) {
        if self.term_at(index) != Some(term) || index <= self.persisted {
            return;
        }
        self.persisted = index;
        if self.role == Role::Leader {
            self.maybe_commit();
        } else {
            self.ack_if_durable();
        }
        // Entries committed before they were durable here apply now.
        self.apply();
    }
}

/// Terms at or beyond this are refused from peers: no group gets there by elections, and
/// arithmetic on them must not overflow.
const MAX_TERM: Term = 1 << 62;

/// An entry's weight in the log's byte count and in an append's size.
fn entry_bytes(e: &Entry) -> u64 {
    e.payload.len() as u64 + 32
}

fn max_member_id(log: &[Entry], before: NodeId) -> NodeId {
    log.iter()
        .filter_map(|e| match &e.payload {
            Payload::Membership(m) => m.members.keys().max().copied(),
            _ => None,
        })
        .fold(before, NodeId::max)
}

fn latest_membership(log: &[Entry], initial: &Membership) -> Membership {
    log.iter()
        .rev()
        .find_map(|e| match &e.payload {
            Payload::Membership(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_else(|| initial.clone())
}
