//! The storage nodes' bus API as typed calls: each pairs a subject with its request and answer
//! types and its timeout, so callers (router, MemDS, other storage nodes, tests) never build a
//! storage subject or pick a timeout themselves.

use std::time::Duration;

use tern_bus::{Bus, BusError};
use tern_proto::storage::{
    CreatePartitionRequest, DropPartitionRequest, GetRequest, GetResponse, RebuildRequest,
    ScanRequest, ScanResponse, SnapshotChunk, SnapshotChunkRequest, WriteRequest, WriteResponse,
};
use tern_proto::{subjects, Empty};

/// Creating or dropping a replica, or one snapshot chunk.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole rebuild of a replica's items from a snapshot.
pub const REBUILD_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct StorageClient {
    bus: Bus,
}

impl StorageClient {
    /// Data calls use `bus`'s own timeout (the caller's latency budget); administrative calls
    /// use the timeouts above.
    pub fn new(bus: Bus) -> Self {
        Self { bus }
    }

    pub async fn write(&self, node: &str, req: &WriteRequest) -> Result<WriteResponse, BusError> {
        self.bus.call(&subjects::storage_write(node), req).await
    }

    pub async fn get(&self, node: &str, req: &GetRequest) -> Result<GetResponse, BusError> {
        self.bus.call(&subjects::storage_get(node), req).await
    }

    pub async fn scan(&self, node: &str, req: &ScanRequest) -> Result<ScanResponse, BusError> {
        self.bus.call(&subjects::storage_scan(node), req).await
    }

    pub async fn create_partition(
        &self,
        node: &str,
        req: &CreatePartitionRequest,
    ) -> Result<(), BusError> {
        self.admin::<_, Empty>(
            &subjects::storage_create_partition(node),
            req,
            ADMIN_TIMEOUT,
        )
        .await
        .map(drop)
    }

    pub async fn drop_partition(
        &self,
        node: &str,
        req: &DropPartitionRequest,
    ) -> Result<(), BusError> {
        self.admin::<_, Empty>(&subjects::storage_drop_partition(node), req, ADMIN_TIMEOUT)
            .await
            .map(drop)
    }

    /// Asks `node` to rebuild (or catch up) its replica from a snapshot; answers when it is done.
    pub async fn rebuild(&self, node: &str, req: &RebuildRequest) -> Result<(), BusError> {
        self.admin::<_, Empty>(&subjects::storage_rebuild(node), req, REBUILD_TIMEOUT)
            .await
            .map(drop)
    }

    pub async fn snapshot_chunk(
        &self,
        node: &str,
        req: &SnapshotChunkRequest,
    ) -> Result<SnapshotChunk, BusError> {
        self.admin(&subjects::storage_snapshot(node), req, ADMIN_TIMEOUT)
            .await
    }

    async fn admin<Req, Resp>(
        &self,
        subject: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, BusError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.bus.with_timeout(timeout).call(subject, req).await
    }
}
