//! MemDS's bus API as typed calls: each pairs a subject with its request and answer types and its
//! timeout, so callers (routers, storage nodes) never build a MemDS subject or pick a timeout.

use std::time::Duration;

use tern_bus::{Bus, BusError};
use tern_proto::memds::{
    AlterTableRequest, CreateTableRequest, ListTablesRequest, ListTablesResponse,
    LookupBatchRequest, LookupBatchResponse, LookupRequest, PlaceReplicaRequest,
    PlaceReplicaResponse, ReportPartitionRequest, TableNameRequest, TableReply,
};
use tern_proto::{subjects, Empty};

/// Repair calls from storage nodes (placing a replica, reporting a membership).
pub const REPAIR_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct MemdsClient {
    bus: Bus,
}

impl MemdsClient {
    /// Lookups and DDL use `bus`'s own timeout (the caller's latency budget); repair calls use
    /// [`REPAIR_TIMEOUT`].
    pub fn new(bus: Bus) -> Self {
        Self { bus }
    }

    pub async fn lookup(&self, table: &str) -> Result<TableReply, BusError> {
        let req = LookupRequest {
            table_name: table.to_string(),
        };
        self.bus.call(subjects::MEMDS_LOOKUP, &req).await
    }

    /// Lookups coalesced into one message, one name per client request.
    pub async fn lookup_batch(&self, names: Vec<String>) -> Result<LookupBatchResponse, BusError> {
        let req = LookupBatchRequest { table_names: names };
        self.bus.call(subjects::MEMDS_LOOKUP_BATCH, &req).await
    }

    pub async fn create_table(&self, req: &CreateTableRequest) -> Result<TableReply, BusError> {
        self.bus.call(subjects::MEMDS_CREATE_TABLE, req).await
    }

    pub async fn describe_table(&self, name: &str) -> Result<TableReply, BusError> {
        self.bus
            .call(subjects::MEMDS_DESCRIBE_TABLE, &table_name(name))
            .await
    }

    /// UpdateTable, TagResource and UntagResource.
    pub async fn alter_table(&self, req: &AlterTableRequest) -> Result<TableReply, BusError> {
        self.bus.call(subjects::MEMDS_ALTER_TABLE, req).await
    }

    pub async fn delete_table(&self, name: &str) -> Result<TableReply, BusError> {
        self.bus
            .call(subjects::MEMDS_DELETE_TABLE, &table_name(name))
            .await
    }

    pub async fn list_tables(
        &self,
        req: &ListTablesRequest,
    ) -> Result<ListTablesResponse, BusError> {
        self.bus.call(subjects::MEMDS_LIST_TABLES, req).await
    }

    pub async fn place_replica(
        &self,
        req: &PlaceReplicaRequest,
    ) -> Result<PlaceReplicaResponse, BusError> {
        self.bus
            .with_timeout(REPAIR_TIMEOUT)
            .call(subjects::MEMDS_PLACE_REPLICA, req)
            .await
    }

    pub async fn report_partition(&self, req: &ReportPartitionRequest) -> Result<(), BusError> {
        self.bus
            .with_timeout(REPAIR_TIMEOUT)
            .call::<_, Empty>(subjects::MEMDS_REPORT_PARTITION, req)
            .await
            .map(drop)
    }
}

fn table_name(name: &str) -> TableNameRequest {
    TableNameRequest {
        table_name: name.to_string(),
    }
}
