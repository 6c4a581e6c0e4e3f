//! The storage nodes' bus API as typed calls: each pairs a subject with its request and answer
//! types and its timeout, so callers (router, MemDS, other storage nodes, tests) never build a
//! storage subject or pick a timeout themselves.

use std::time::Duration;

use tern_bus::{Bus, BusError};
use tern_proto::storage::{
    CreatePartitionRequest, DropPartitionRequest, GetRequest, GetResponse, RebuildRequest,
    ScanRequest, ScanResponse, SnapshotChunk, SnapshotChunkRequest, WriteRequest, WriteResponse,
};
use tern_proto::{status, subjects, Empty};

/// Why a storage node did not carry out a data request, in the storage node's own terms; the
/// router decides what a DynamoDB client is told.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The write's condition failed; nothing was written.
    #[error("the condition failed")]
    ConditionFailed,
    /// The node takes no more writes for now (its writes in progress are at their limit).
    #[error("busy: {0}")]
    Busy(String),
    /// The write cannot be carried out as asked; the message is DynamoDB's words for why.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Not taken, or its outcome unknown: commit timeout, leadership lost, an internal failure.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call itself failed or was redirected (not the leader, no such replica, a timeout).
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl From<StorageError> for BusError {
    /// As a storage node answers it on the bus.
    fn from(e: StorageError) -> Self {
        let (code, message) = match e {
            StorageError::ConditionFailed => (status::STORAGE_CONDITION_FAILED, String::new()),
            StorageError::Busy(m) => (status::STORAGE_BUSY, m),
            StorageError::Invalid(m) => (status::STORAGE_INVALID, m),
            StorageError::Unavailable(m) => (status::STORAGE_UNAVAILABLE, m),
            StorageError::Bus(b) => return b,
        };
        BusError::Status { code, message }
    }
}

impl StorageError {
    /// A storage node's answer as its caller reads it.
    pub fn from_bus(e: BusError) -> Self {
        match e {
            BusError::Status { code, message } => match code {
                status::STORAGE_CONDITION_FAILED => StorageError::ConditionFailed,
                status::STORAGE_BUSY => StorageError::Busy(message),
                status::STORAGE_INVALID => StorageError::Invalid(message),
                status::STORAGE_UNAVAILABLE => StorageError::Unavailable(message),
                code => StorageError::Bus(BusError::Status { code, message }),
            },
            other => StorageError::Bus(other),
        }
    }
}

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

    pub async fn write(
        &self,
        node: &str,
        req: &WriteRequest,
    ) -> Result<WriteResponse, StorageError> {
        self.bus
            .call(&subjects::storage_write(node), req)
            .await
            .map_err(StorageError::from_bus)
    }

    pub async fn get(&self, node: &str, req: &GetRequest) -> Result<GetResponse, StorageError> {
        self.bus
            .call(&subjects::storage_get(node), req)
            .await
            .map_err(StorageError::from_bus)
    }

    pub async fn scan(&self, node: &str, req: &ScanRequest) -> Result<ScanResponse, StorageError> {
        self.bus
            .call(&subjects::storage_scan(node), req)
            .await
            .map_err(StorageError::from_bus)
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

    /// A replica's committed log from `req.from` (the archiver's read).
    pub async fn archive_read(
        &self,
        node: &str,
        req: &tern_proto::archive::ArchiveReadRequest,
    ) -> Result<tern_proto::archive::ArchiveReadResponse, BusError> {
        self.admin(&subjects::storage_archive_read(node), req, ADMIN_TIMEOUT)
            .await
    }

    /// Tells a replica how far the archive holds its group's log.
    pub async fn archive_mark(
        &self,
        node: &str,
        req: &tern_proto::archive::ArchiveMark,
    ) -> Result<(), BusError> {
        self.admin::<_, Empty>(&subjects::storage_archive_mark(node), req, ADMIN_TIMEOUT)
            .await
            .map(drop)
    }

    /// A replica's items checksum at a scrub marker.
    pub async fn checksum(
        &self,
        node: &str,
        req: &tern_proto::archive::ChecksumRequest,
    ) -> Result<tern_proto::archive::ChecksumResponse, BusError> {
        self.admin(&subjects::storage_checksum(node), req, ADMIN_TIMEOUT)
            .await
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every storage error reads back as itself after the trip through a bus status.
    #[test]
    fn storage_errors_travel_as_themselves() {
        let all = [
            StorageError::ConditionFailed,
            StorageError::Busy("b".into()),
            StorageError::Invalid("i".into()),
            StorageError::Unavailable("u".into()),
            StorageError::Bus(BusError::Redirect("storage-b".into())),
        ];
        for e in all {
            let back = StorageError::from_bus(BusError::from(e.clone()));
            assert_eq!(format!("{back:?}"), format!("{e:?}"));
        }
        // A status no storage error has stays a bus error.
        let other = StorageError::from_bus(BusError::Status {
            code: 1999,
            message: "x".into(),
        });
        assert!(matches!(
            other,
            StorageError::Bus(BusError::Status { code: 1999, .. })
        ));
    }
}
