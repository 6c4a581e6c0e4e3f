//! Storage node API: data requests to a partition replica and partition administration.

use crate::memds::PartitionInfo;

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum WriteKind {
    Put = 0,
    Delete = 1,
    /// Apply `update` to the stored item, or to `item` (the key attributes) when there is none.
    Update = 2,
    /// A scrub marker: changes no item; every replica checksums its items as they stand right
    /// after it (`crate::archive`). Sent by the archiver, never by a router.
    Checksum = 3,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// Order-preserving storage key of the item (`tern_model::PrimaryKey::storage_key`).
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    #[prost(enumeration = "WriteKind", tag = "4")]
    pub kind: i32,
    /// Canonical DynamoDB JSON of the new item (Put only).
    #[prost(bytes = "bytes", tag = "5")]
    pub item: bytes::Bytes,
    /// Before `condition_expr`: a `tern_model::Condition` as serde JSON. Read from log entries
    /// written by older versions, never written now.
    #[prost(bytes = "vec", tag = "6")]
    pub condition: Vec<u8>,
    /// Return the item as it was before the write.
    #[prost(bool, tag = "7")]
    pub return_old: bool,
    /// Before `update_expr`: a `tern_model::Update` as serde JSON. Read from log entries written
    /// by older versions, never written now.
    #[prost(bytes = "vec", tag = "8")]
    pub update: Vec<u8>,
    /// Return the item as it is after the write (Update only).
    #[prost(bool, tag = "9")]
    pub return_new: bool,
    /// When the condition fails, answer with the item as it is (`condition_failed` set) instead
    /// of an error (ReturnValuesOnConditionCheckFailure: ALL_OLD).
    #[prost(bool, tag = "10")]
    pub return_old_on_failure: bool,
    /// The condition (`crate::expr::encode_condition`); absent when the write is unconditional.
    #[prost(message, optional, tag = "11")]
    pub condition_expr: Option<crate::expr::ConditionProgram>,
    /// The update (`crate::expr::encode_update`), Update only.
    #[prost(message, optional, tag = "12")]
    pub update_expr: Option<crate::expr::UpdateProgram>,
    /// The rate, units per second, the node's bucket for this partition refills at: its
    /// PROVISIONED table's (0: on-demand, no bucket of its own). Sent by the router; never logged.
    #[prost(double, tag = "13")]
    pub partition_rate: f64,
}

/// A write as the replication log carries it (the storage state machine's command; the
/// replication engine sees opaque bytes): the client's request plus who waits for its answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReplicatedWrite {
    #[prost(string, tag = "1")]
    pub origin_node: String,
    #[prost(uint64, tag = "2")]
    pub request_id: u64,
    #[prost(message, optional, tag = "3")]
    pub write: Option<WriteRequest>,
    /// The leader's clock when it took the write, ms since the epoch (0: before this field):
    /// what point-in-time restore goes by.
    #[prost(uint64, tag = "4")]
    pub time_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteResponse {
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub old_item: Option<bytes::Bytes>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub new_item: Option<bytes::Bytes>,
    /// DynamoDB's size of the larger of the item before and after an update (its write cost).
    #[prost(uint64, tag = "3")]
    pub item_size: u64,
    /// The condition failed and nothing was written; `old_item` is the item as it is.
    #[prost(bool, tag = "4")]
    pub condition_failed: bool,
    /// Write units of the item the write replaced or deleted (0: there was none); a Put or
    /// Delete is charged on the larger of it and the new item.
    #[prost(uint32, tag = "5")]
    pub old_write_units: u32,
    /// The log index the write took (checksum markers only).
    #[prost(uint64, tag = "6")]
    pub index: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetRequest {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    #[prost(bool, tag = "4")]
    pub consistent: bool,
    /// The rate, units per second, the node's bucket for this partition refills at: its
    /// PROVISIONED table's (0: on-demand, no bucket of its own). Sent by the router; never logged.
    #[prost(double, tag = "5")]
    pub partition_rate: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetResponse {
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub item: Option<bytes::Bytes>,
}

/// A range read of one partition's items, in storage-key order (or reverse), stopping at `limit`
/// items or once `max_bytes` of items were read, whichever comes first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScanRequest {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// Lower bound (a storage key); empty: the partition's first item.
    #[prost(bytes = "vec", tag = "3")]
    pub start: Vec<u8>,
    #[prost(bool, tag = "4")]
    pub start_inclusive: bool,
    /// Upper bound; empty: the partition's last item.
    #[prost(bytes = "vec", tag = "5")]
    pub end: Vec<u8>,
    #[prost(bool, tag = "6")]
    pub end_inclusive: bool,
    /// From the upper bound down.
    #[prost(bool, tag = "7")]
    pub reverse: bool,
    /// Items at most (0: no limit).
    #[prost(uint32, tag = "8")]
    pub limit: u32,
    /// Stop after the item that takes the bytes read to this (DynamoDB's 1 MB page).
    #[prost(uint32, tag = "9")]
    pub max_bytes: u32,
    #[prost(bool, tag = "10")]
    pub consistent: bool,
    /// The rate, units per second, the node's bucket for this partition refills at: its
    /// PROVISIONED table's (0: on-demand, no bucket of its own). Sent by the router; never logged.
    #[prost(double, tag = "11")]
    pub partition_rate: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScanResponse {
    /// Storage keys of the items read, in the order read.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub keys: Vec<Vec<u8>>,
    /// The items (canonical DynamoDB JSON), one per key.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub items: Vec<Vec<u8>>,
    /// Stopped by `limit` or `max_bytes` with more items left in the range.
    #[prost(bool, tag = "3")]
    pub more: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreatePartitionRequest {
    #[prost(string, tag = "1")]
    pub table_name: String,
    #[prost(string, tag = "2")]
    pub table_id: String,
    #[prost(message, optional, tag = "3")]
    pub partition: Option<PartitionInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DropPartitionRequest {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
}

/// Asks a replica to rebuild its items from a snapshot served by `source_node`, then catch up
/// from its own log; answered once the items are durable. A log replica being promoted is asked
/// by its leader; with `install`, a replica behind the leader's compacted log is (it installs even
/// if it has items, unless it already holds everything up to `index`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RebuildRequest {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    #[prost(string, tag = "2")]
    pub source_node: String,
    #[prost(bool, tag = "3")]
    pub install: bool,
    /// The leader's compacted index: a replica that applied this much needs no snapshot.
    #[prost(uint64, tag = "4")]
    pub index: u64,
    /// The member id of the leader that asked.
    #[prost(uint64, tag = "5")]
    pub leader_member: u64,
    /// Scrub found the replica's items wrong: replace them even though it has items (a leader
    /// refuses; its items are repaired once another replica leads).
    #[prost(bool, tag = "6")]
    pub repair: bool,
    /// The asking leader's term (0: no leader asked). The installed replica takes it as word from
    /// that leader and acknowledges the snapshot's index to it: a replica restarted while its
    /// leader compacted past it hears nothing else from the leader.
    #[prost(uint64, tag = "7")]
    pub leader_term: u64,
}

/// One chunk of a partition snapshot. The first request has `session` 0 and opens a consistent
/// snapshot on the source; later ones name the session and continue after `after_key`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotChunkRequest {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    #[prost(uint64, tag = "2")]
    pub session: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub after_key: Vec<u8>,
    /// Only the log position the items are at (`applied`, `meta`), for a log replica that keeps
    /// no items: no session, no items.
    #[prost(bool, tag = "4")]
    pub meta_only: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotChunk {
    #[prost(uint64, tag = "1")]
    pub session: u64,
    /// The log index the snapshot's items reflect.
    #[prost(uint64, tag = "2")]
    pub applied: u64,
    /// Storage keys (without the partition prefix) and canonical item JSON, in key order.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub keys: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub values: Vec<Vec<u8>>,
    #[prost(bool, tag = "5")]
    pub done: bool,
    /// The log position and membership the items stand for (index = `applied`).
    #[prost(message, optional, tag = "6")]
    pub meta: Option<crate::raft::RaftSnapshotMeta>,
}
