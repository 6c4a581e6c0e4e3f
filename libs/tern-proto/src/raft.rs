//! Replication traffic between storage nodes: engine messages of many groups, batched per
//! destination node (so heartbeats of all groups a node pair shares travel together).

#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftBatch {
    #[prost(string, tag = "1")]
    pub from_node: String,
    #[prost(message, repeated, tag = "2")]
    pub messages: Vec<RaftEnvelope>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftEnvelope {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    /// Member ids within the group (1-based position in the partition's replica list).
    #[prost(uint64, tag = "2")]
    pub from: u64,
    #[prost(uint64, tag = "3")]
    pub to: u64,
    #[prost(message, optional, tag = "4")]
    pub msg: Option<RaftMessage>,
    /// The trace context of the sampled client requests whose entries an append carries, so a
    /// follower's spans for them join the requests' traces.
    #[prost(message, repeated, tag = "5")]
    pub traces: Vec<EntryTrace>,
}

/// A log entry's place and the trace context (W3C ids) of the request that proposed it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryTrace {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub span_id: Vec<u8>,
    #[prost(uint32, tag = "4")]
    pub flags: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum RaftKind {
    Vote = 0,
    VoteResponse = 1,
    Append = 2,
    AppendResponse = 3,
}

/// One engine message; which fields are meaningful depends on `kind`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftMessage {
    #[prost(enumeration = "RaftKind", tag = "1")]
    pub kind: i32,
    #[prost(uint64, tag = "2")]
    pub term: u64,
    #[prost(uint64, tag = "3")]
    pub index: u64,
    #[prost(uint64, tag = "4")]
    pub log_term: u64,
    #[prost(bool, tag = "5")]
    pub flag: bool,
    #[prost(bool, tag = "6")]
    pub pre: bool,
    #[prost(uint64, tag = "7")]
    pub commit: u64,
    #[prost(uint64, tag = "8")]
    pub sent_at: u64,
    #[prost(message, repeated, tag = "9")]
    pub entries: Vec<RaftEntry>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum EntryKind {
    Noop = 0,
    Command = 1,
    Membership = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftEntry {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    #[prost(uint64, tag = "2")]
    pub index: u64,
    #[prost(enumeration = "EntryKind", tag = "3")]
    pub kind: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
    /// Membership entries: member ids, and which of them are log replicas.
    #[prost(uint64, repeated, tag = "5")]
    pub members: Vec<u64>,
    #[prost(uint64, repeated, tag = "6")]
    pub log_members: Vec<u64>,
}

/// The durable vote state of one replica.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftHardState {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    #[prost(uint64, tag = "2")]
    pub voted_for: u64,
}

/// What a replica's compacted log stands for: its items hold every entry up to `index`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftSnapshotMeta {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(uint64, tag = "2")]
    pub term: u64,
    /// The membership as of `index`: member ids, and which of them are log replicas.
    #[prost(uint64, repeated, tag = "3")]
    pub members: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    pub log_members: Vec<u64>,
    /// The largest member id the group has had up to `index`.
    #[prost(uint64, tag = "5")]
    pub max_member_id: u64,
}
