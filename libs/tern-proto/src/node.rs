//! Storage node liveness, published to MemDS.

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeHeartbeat {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(string, tag = "2")]
    pub az: String,
    /// Partition replicas the node holds.
    #[prost(uint32, tag = "3")]
    pub replicas: u32,
    /// Ids of the partitions the node holds a replica of.
    #[prost(uint64, repeated, tag = "4")]
    pub partition_ids: Vec<u64>,
    /// Item counts and sizes of the replicas holding items, as last counted (every few hours).
    #[prost(message, repeated, tag = "5")]
    pub stats: Vec<PartitionStats>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PartitionStats {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    #[prost(uint64, tag = "2")]
    pub items: u64,
    /// Bytes of the items as stored (their DynamoDB JSON): an approximation of DynamoDB's size.
    #[prost(uint64, tag = "3")]
    pub bytes: u64,
}
