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
}
