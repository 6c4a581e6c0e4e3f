//! The vocabulary of the engine: log entries, membership, messages, events in and commands out.

use std::collections::BTreeMap;

pub type NodeId = u64;
pub type Term = u64;
pub type Index = u64;

/// A member of a replication group: a full replica applies entries to its items; a log replica
/// keeps the log only. Both vote and count towards the write quorum; only full replicas lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberKind {
    Full,
    Log,
}

/// The voters of a group, each with its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Membership {
    pub members: BTreeMap<NodeId, MemberKind>,
}

impl Membership {
    pub fn new(members: impl IntoIterator<Item = (NodeId, MemberKind)>) -> Self {
        Self {
            members: members.into_iter().collect(),
        }
    }

    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    pub fn can_lead(&self, id: NodeId) -> bool {
        self.members.get(&id) == Some(&MemberKind::Full)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Payload {
    /// Appended by each new leader, so it can commit entries of earlier terms.
    Noop,
    Command(Vec<u8>),
    /// A membership change; it takes effect as soon as it is in the log.
    Membership(Membership),
    /// A command of `len` bytes that only the durable log holds: the engine dropped its bytes
    /// from memory once it was applied and durable (see `Config::payload_cache_bytes`). The
    /// runtime reads it back from its log before it sends or applies the entry.
    OnDisk {
        len: usize,
    },
}

impl Payload {
    /// The command bytes this payload stands for, in memory or not.
    pub fn len(&self) -> usize {
        match self {
            Payload::Noop => 0,
            Payload::Command(b) => b.len(),
            Payload::Membership(m) => m.members.len() * 16,
            Payload::OnDisk { len } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes this payload holds in memory.
    pub fn in_memory(&self) -> usize {
        match self {
            Payload::OnDisk { .. } => 0,
            other => other.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: Payload,
}

/// What a snapshot stands for: every entry up to `index` (whose term is `term`) is in the state
/// machine, and the log before it may be gone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    /// The membership as of `index`.
    pub membership: Membership,
    /// The largest member id the group has had up to `index`, so ids are never reused.
    pub max_member_id: NodeId,
}

/// What must survive a crash besides the log: the current term and the vote cast in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Message {
    /// `pre`: a pre-vote, which changes no term; it keeps a node that was cut off from raising
    /// terms and deposing a healthy leader when it comes back.
    Vote {
        term: Term,
        last_index: Index,
        last_term: Term,
        pre: bool,
    },
    VoteResponse {
        term: Term,
        granted: bool,
        pre: bool,
    },
    /// `sent_at`: the leader's tick when sending, echoed back, for the lease.
    Append {
        term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
        sent_at: u64,
    },
    /// On success `index` is the follower's durable match; on failure, where to retry from.
    AppendResponse {
        term: Term,
        success: bool,
        index: Index,
        sent_at: u64,
    },
}

impl Message {
    pub fn term(&self) -> Term {
        match self {
            Message::Vote { term, .. }
            | Message::VoteResponse { term, .. }
            | Message::Append { term, .. }
            | Message::AppendResponse { term, .. } => *term,
        }
    }
}

pub type RequestId = u64;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// One unit of logical time.
    Tick,
    Message {
        from: NodeId,
        msg: Message,
    },
    /// A client command (or membership change) to replicate.
    Propose {
        id: RequestId,
        payload: Payload,
    },
    /// A linearizable read: answered with ReadReady once the state machine reflects every write
    /// committed before the read arrived, if this node is a leader holding a valid lease.
    Read {
        id: RequestId,
    },
    /// The log up to `index` (whose entry has `term`) is durable on disk.
    Persisted {
        index: Index,
        term: Term,
    },
    /// Stand for election now instead of waiting for the timeout (e.g. the designated first
    /// leader of a new group). Safe at any time: it is an election timeout firing early.
    Campaign,
    /// The runtime installed (durably) a snapshot: the state machine now reflects the log up to
    /// `meta.index`. Only committed state is ever snapshotted, so this is safe whatever the term;
    /// a snapshot older than the commit index is ignored. `from` is the leader that asked for it
    /// in `term` (0: no leader asked, as for a rebuild of the replica's own accord); it hears the
    /// acknowledgement, which a replica that never heard it otherwise (restarted while its leader
    /// compacted past it: such a leader sends it snapshot requests only) would never send.
    SnapshotInstalled {
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProposeError {
    NotLeader {
        leader: Option<NodeId>,
    },
    /// A membership change is already in flight.
    MembershipChangePending,
    /// The change would not leave a full replica able to lead.
    InvalidMembership,
}

/// Commands the runtime carries out in order. `PersistHardState` must be durable before any
/// later `Send` goes out; `AppendLog` may complete later, reported by `Event::Persisted`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    Send {
        to: NodeId,
        msg: Message,
    },
    PersistHardState(HardState),
    /// Write these entries to the log, first dropping any entry at or after `entries[0].index`.
    AppendLog(Vec<Entry>),
    /// Committed entries, in order, to apply to the state machine.
    Apply(Vec<Entry>),
    Proposed {
        id: RequestId,
        result: Result<Index, ProposeError>,
    },
    ReadReady {
        id: RequestId,
    },
    ReadRejected {
        id: RequestId,
        leader: Option<NodeId>,
    },
    RoleChanged {
        role: Role,
        term: Term,
        leader: Option<NodeId>,
    },
    /// Leader: `to` needs entries this log no longer holds; the runtime sends it a snapshot of
    /// the state machine (at any applied index at or after `index`) and, once installed there,
    /// the follower's engine hears `SnapshotInstalled`. Repeated at most every `snapshot_retry`
    /// ticks while the follower stays behind.
    SendSnapshot {
        to: NodeId,
        index: Index,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}
