//! MemDS API: routing metadata and table DDL.
//!
//! [`TableInfo`] is also the value stored in the authoritative JetStream key-value bucket.

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AttributeDefinition {
    #[prost(string, tag = "1")]
    pub name: String,
    /// "S", "N" or "B".
    #[prost(string, tag = "2")]
    pub attr_type: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct KeySchema {
    #[prost(string, tag = "1")]
    pub hash_name: String,
    #[prost(string, tag = "2")]
    pub hash_type: String,
    /// Empty when the table has no sort key.
    #[prost(string, tag = "3")]
    pub range_name: String,
    #[prost(string, tag = "4")]
    pub range_type: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Replica {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(string, tag = "2")]
    pub az: String,
    /// The replica's id within its replication group, never reused in the group. The founding
    /// replicas are 1, 2 and 3; 0 (metadata written before ids existed) means position + 1.
    #[prost(uint64, tag = "3")]
    pub member_id: u64,
    /// A log replica: it keeps the recent log and votes, but holds no items and serves no reads.
    #[prost(bool, tag = "4")]
    pub log: bool,
}

impl Replica {
    /// The member id, with the position fallback for metadata that predates ids.
    pub fn member(&self, position: usize) -> u64 {
        if self.member_id == 0 {
            position as u64 + 1
        } else {
            self.member_id
        }
    }
}

/// One partition: the hash range `[hash_start, hash_end]` (both inclusive) of one table.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PartitionInfo {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Changes whenever the partition splits or moves; storage rejects requests with another epoch.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    #[prost(uint64, tag = "3")]
    pub hash_start: u64,
    #[prost(uint64, tag = "4")]
    pub hash_end: u64,
    /// The members of the replication group as its leader last reported them: three replicas in
    /// three availability zones, or, while a replica is being replaced, a log replica among them.
    #[prost(message, repeated, tag = "5")]
    pub replicas: Vec<Replica>,
    /// Node id of the last known leader, a hint.
    #[prost(string, tag = "6")]
    pub leader: String,
    /// The version (leader term, commit index) of the report `replicas` and `leader` came from;
    /// zero until the group's first report.
    #[prost(uint64, tag = "7")]
    pub reported_term: u64,
    #[prost(uint64, tag = "8")]
    pub reported_index: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum TableStatus {
    Creating = 0,
    Active = 1,
    Deleting = 2,
}

impl TableStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TableStatus::Creating => "CREATING",
            TableStatus::Active => "ACTIVE",
            TableStatus::Deleting => "DELETING",
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TableInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Unique per table incarnation: a table deleted and created again gets a new id.
    #[prost(string, tag = "2")]
    pub table_id: String,
    #[prost(enumeration = "TableStatus", tag = "3")]
    pub status: i32,
    #[prost(message, optional, tag = "4")]
    pub key_schema: Option<KeySchema>,
    #[prost(message, repeated, tag = "5")]
    pub attribute_definitions: Vec<AttributeDefinition>,
    /// Milliseconds since the Unix epoch.
    #[prost(uint64, tag = "6")]
    pub creation_time_ms: u64,
    /// "PROVISIONED" or "PAY_PER_REQUEST".
    #[prost(string, tag = "7")]
    pub billing_mode: String,
    #[prost(uint64, tag = "8")]
    pub read_capacity: u64,
    #[prost(uint64, tag = "9")]
    pub write_capacity: u64,
    /// Sorted by `hash_start`, covering the whole u64 hash space without gaps.
    #[prost(message, repeated, tag = "10")]
    pub partitions: Vec<PartitionInfo>,
    /// The table's tags (TagResource), key → value.
    #[prost(btree_map = "string, string", tag = "11")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// A table restored from another: what and to when. It stays CREATING until the archiver
    /// has written every item (`AlterTableRequest::finish_restore`).
    #[prost(message, optional, tag = "12")]
    pub restore: Option<RestoreSource>,
    /// Point-in-time recovery is on (UpdateContinuousBackups), since `pitr_since_ms`.
    #[prost(bool, tag = "13")]
    pub pitr_enabled: bool,
    #[prost(uint64, tag = "14")]
    pub pitr_since_ms: u64,
}

impl TableInfo {
    /// The partition owning `hash`.
    pub fn partition_for(&self, hash: u64) -> Option<&PartitionInfo> {
        let i = self.partitions.partition_point(|p| p.hash_end < hash);
        self.partitions
            .get(i)
            .filter(|p| p.hash_start <= hash && hash <= p.hash_end)
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LookupRequest {
    #[prost(string, tag = "1")]
    pub table_name: String,
}

/// Lookups coalesced by a router: one entry per client request (names repeat), so MemDS still
/// does one lookup per request while the bus carries one message per batch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LookupBatchRequest {
    #[prost(string, repeated, tag = "1")]
    pub table_names: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LookupBatchResponse {
    /// Each table found, once.
    #[prost(message, repeated, tag = "1")]
    pub tables: Vec<TableInfo>,
    /// Names that matched no table, once each.
    #[prost(string, repeated, tag = "2")]
    pub missing: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TableReply {
    #[prost(message, optional, tag = "1")]
    pub table: Option<TableInfo>,
    /// ItemCount and TableSizeBytes as the storage nodes last counted them (DescribeTable).
    #[prost(uint64, tag = "2")]
    pub item_count: u64,
    #[prost(uint64, tag = "3")]
    pub size_bytes: u64,
}

/// The router has validated the request; MemDS checks existence, places partitions and persists.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateTableRequest {
    #[prost(message, optional, tag = "1")]
    pub table: Option<TableInfo>,
}

/// What a restored table was restored from.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RestoreSource {
    #[prost(string, tag = "1")]
    pub source_name: String,
    #[prost(string, tag = "2")]
    pub source_table_id: String,
    /// The moment restored to, ms since the epoch.
    #[prost(uint64, tag = "3")]
    pub time_ms: u64,
    /// The source's partitions (their archives are what is restored).
    #[prost(message, repeated, tag = "4")]
    pub partitions: Vec<PartitionInfo>,
    /// Restored from this on-demand backup (empty: to a point in time).
    #[prost(string, tag = "5")]
    pub backup_arn: String,
}

/// A change to an ACTIVE table's settings (UpdateTable) or tags (TagResource, UntagResource).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlterTableRequest {
    #[prost(string, tag = "1")]
    pub table_name: String,
    /// "PROVISIONED" or "PAY_PER_REQUEST"; empty: unchanged.
    #[prost(string, tag = "2")]
    pub billing_mode: String,
    /// New provisioned throughput, when `set_throughput`.
    #[prost(bool, tag = "3")]
    pub set_throughput: bool,
    #[prost(uint64, tag = "4")]
    pub read_capacity: u64,
    #[prost(uint64, tag = "5")]
    pub write_capacity: u64,
    #[prost(btree_map = "string, string", tag = "6")]
    pub set_tags: std::collections::BTreeMap<String, String>,
    #[prost(string, repeated, tag = "7")]
    pub remove_tags: Vec<String>,
    /// UpdateContinuousBackups: set point-in-time recovery to `pitr_enabled`.
    #[prost(bool, tag = "8")]
    pub set_pitr: bool,
    #[prost(bool, tag = "9")]
    pub pitr_enabled: bool,
    /// The archiver restored every item of a restored table (still CREATING): it becomes ACTIVE.
    #[prost(bool, tag = "10")]
    pub finish_restore: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TableNameRequest {
    #[prost(string, tag = "1")]
    pub table_name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListTablesRequest {
    #[prost(string, tag = "1")]
    pub exclusive_start: String,
    #[prost(uint32, tag = "2")]
    pub limit: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListTablesResponse {
    #[prost(string, repeated, tag = "1")]
    pub names: Vec<String>,
    /// Empty when the listing is complete.
    #[prost(string, tag = "2")]
    pub last_evaluated: String,
}

/// A router's answer to a cache flush: how many tables its cache held.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CacheFlushed {
    #[prost(uint64, tag = "1")]
    pub entries: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MemdsStats {
    #[prost(uint64, tag = "1")]
    pub lookups: u64,
    #[prost(uint64, tag = "2")]
    pub tables: u64,
}

/// A partition's leader asks for a node to host a new member of its group (a log replica, built
/// up to a full one later) because a member stayed unreachable.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PlaceReplicaRequest {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    /// The id the new member gets in the group.
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// Nodes of the group's current members: the new one goes elsewhere.
    #[prost(string, repeated, tag = "3")]
    pub member_nodes: Vec<String>,
    /// The node being replaced; its zone is preferred, so the group keeps three zones.
    #[prost(string, tag = "4")]
    pub replacing_node: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PlaceReplicaResponse {
    #[prost(message, optional, tag = "1")]
    pub replica: Option<Replica>,
}

/// A partition's leader reports its group's committed membership and itself as leader; MemDS
/// writes it into the table's metadata (compare-and-set) when it differs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReportPartitionRequest {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    #[prost(message, repeated, tag = "2")]
    pub replicas: Vec<Replica>,
    #[prost(string, tag = "3")]
    pub leader: String,
    /// The version of this report: the reporting leader's term and commit index when it made
    /// it. MemDS refuses a report older than the one it recorded, so a deposed leader's late
    /// report cannot undo a newer membership.
    #[prost(uint64, tag = "4")]
    pub term: u64,
    #[prost(uint64, tag = "5")]
    pub commit_index: u64,
}
