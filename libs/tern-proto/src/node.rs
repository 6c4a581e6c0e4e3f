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
}
