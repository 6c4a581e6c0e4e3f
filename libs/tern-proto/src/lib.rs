//! Wire messages and subjects of Tern's service-to-service bus.
//!
//! Messages are protobuf, declared with prost's derive macros (the struct and its field tags are the
//! schema; no `protoc` is needed to build). Protobuf's rules make old and new versions of a message
//! decode each other: a reader skips fields it does not know and defaults fields it does not find,
//! so fields are only ever added with new tags, never renumbered or retyped.
//! `tests/compat.rs` pins that property.

pub mod archive;
pub mod expr;
pub mod gac;
pub mod memds;
pub mod node;
pub mod raft;
pub mod storage;
pub mod subjects;

/// The bus-level status of a reply, carried in the `Tern-Status` header of an error reply.
/// Values below 1000 are `tern_model::ErrorCode`s that map onto DynamoDB exceptions; values from
/// 1000 are internal to the bus (a redirect, services' own statuses) and never reach a client.
pub mod status {
    /// The receiver does not hold the partition at this epoch, or is not its leader: the caller
    /// refreshes its routing metadata and retries. The body names the leader if known.
    pub const REDIRECT: u16 = 1000;
    /// Header name carrying the status code of an error reply.
    pub const HEADER: &str = "Tern-Status";
    /// A storage node's answers (`tern_storage_client::StorageError`): the write's condition
    /// failed (nothing written).
    pub const STORAGE_CONDITION_FAILED: u16 = 1001;
    /// The node takes no more writes for now: retry later.
    pub const STORAGE_BUSY: u16 = 1002;
    /// The write cannot be carried out as asked (an update on the wrong types, an item too
    /// large); the body says why in DynamoDB's words.
    pub const STORAGE_INVALID: u16 = 1003;
    /// The write's outcome is unknown or it was not taken (commit timeout, leadership lost, an
    /// internal failure): the body says which.
    pub const STORAGE_UNAVAILABLE: u16 = 1004;
}

/// Health check answered by every service instance.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthResponse {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub instance: String,
    #[prost(string, tag = "3")]
    pub version: String,
    #[prost(bool, tag = "4")]
    pub ready: bool,
}

/// An empty reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}
