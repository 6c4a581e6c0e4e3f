//! Table creation and deletion: compare-and-set on the bucket, then driving the storage nodes.
//!
//! A table is written CREATING (or DELETING) first; the partitions are then created on (dropped
//! from) their replicas, and only then is it set ACTIVE (removed). Every step is idempotent and
//! every instance re-drives unfinished tables periodically, so a MemDS that dies half-way leaves
//! nothing stuck.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use tern_model::{ApiError, ErrorCode};
use tern_proto::memds::{
    AlterTableRequest, CreateTableRequest, PartitionInfo, TableInfo, TableReply, TableStatus,
};
use tern_proto::storage::{CreatePartitionRequest, DropPartitionRequest};
use tern_storage_client::StorageClient;

use crate::tables::key;
use crate::{placement, Memds};

pub async fn create_table(m: &Memds, req: CreateTableRequest) -> Result<TableReply, ApiError> {
    let mut table = req
        .table
        .ok_or_else(|| ApiError::validation("table missing"))?;
    if m.tables.get(&table.name).is_some() {
        return Err(in_use(format!("Table already exists: {}", table.name)));
    }
    table.partitions = place_partitions(m).await?;
    table.table_id = format!("{:032x}", rand::random::<u128>());
    table.status = TableStatus::Creating as i32;
    table.creation_time_ms = now_ms();
    let bytes = Bytes::from(table.encode_to_vec());
    let revision =
        m.kv.create(key(&table.name), bytes.clone())
            .await
            .map_err(|e| {
                if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists {
                    in_use(format!("Table already exists: {}", table.name))
                } else {
                    internal("create table metadata", e)
                }
            })?;
    m.tables.apply(
        &key(&table.name),
        revision,
        async_nats::jetstream::kv::Operation::Put,
        &bytes,
    );
    tracing::info!(table = %table.name, partitions = table.partitions.len(), "table created");
    let s = m.clone();
    let name = table.name.clone();
    tokio::spawn(async move { drive(&s, &name).await });
    Ok(TableReply {
        table: Some(table),
        ..Default::default()
    })
}

/// Places a new table's partitions. Right after start-up this MemDS may not have heard every
/// storage node yet (they announce themselves every second), so a shortage of zones is given one
/// node timeout to resolve before it is an error.
async fn place_partitions(m: &Memds) -> Result<Vec<PartitionInfo>, ApiError> {
    let deadline = Instant::now() + Duration::from_millis(m.config.node_timeout_ms);
    loop {
        let mut load = m.tables.load_per_node();
        let placed = placement::place(
            &m.nodes.live(),
            m.config.partitions_per_table.max(1),
            &mut load,
            rand::random::<u64>,
        );
        match placed {
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

pub async fn delete_table(m: &Memds, name: &str) -> Result<TableReply, ApiError> {
    let table = change_table(m, name, false, |table| {
        table.status = TableStatus::Deleting as i32;
        Ok(())
    })
    .await?;
    tracing::info!(table = name, "table deleting");
    let s = m.clone();
    let n = name.to_string();
    tokio::spawn(async move { drive(&s, &n).await });
    Ok(TableReply {
        table: Some(table),
        ..Default::default()
    })
}

/// UpdateTable, TagResource, UntagResource.
pub async fn alter_table(m: &Memds, req: AlterTableRequest) -> Result<TableReply, ApiError> {
    let table = change_table(m, &req.table_name, req.finish_restore, |table| {
        if req.finish_restore {
            if table.restore.is_none() {
                return Err(ApiError::validation("the table is no restore"));
            }
            table.status = TableStatus::Active as i32;
        }
        if req.set_pitr {
            if req.pitr_enabled && !table.pitr_enabled {
                table.pitr_since_ms = now_ms();
            }
            table.pitr_enabled = req.pitr_enabled;
        }
        if !req.billing_mode.is_empty() {
            table.billing_mode = req.billing_mode.clone();
            if req.billing_mode == "PAY_PER_REQUEST" {
                table.read_capacity = 0;
                table.write_capacity = 0;
            }
        }
        if req.set_throughput {
            table.read_capacity = req.read_capacity;
            table.write_capacity = req.write_capacity;
        }
        table.tags.extend(req.set_tags.clone());
        for k in &req.remove_tags {
            table.tags.remove(k);
        }
        Ok(())
    })
    .await?;
    Ok(TableReply {
        table: Some(table),
        ..Default::default()
    })
}

/// Changes an ACTIVE table's metadata by compare-and-set (read again and retried when another
/// change came first): `change` edits the table; the result is the table as written.
async fn change_table(
    m: &Memds,
    name: &str,
    finishing_restore: bool,
    change: impl Fn(&mut TableInfo) -> Result<(), ApiError>,
) -> Result<TableInfo, ApiError> {
    for _ in 0..5 {
        let Some(entry) =
            m.kv.entry(key(name))
                .await
                .map_err(|e| internal("read table", e))?
        else {
            return Err(table_not_found(name));
        };
        if entry.operation != async_nats::jetstream::kv::Operation::Put {
            return Err(table_not_found(name));
        }
        let mut table =
            TableInfo::decode(entry.value.as_ref()).map_err(|e| internal("decode table", e))?;
        match table.status() {
            // A restored table's replicas exist; only its restore makes it ACTIVE.
            TableStatus::Creating if finishing_restore && table.restore.is_some() => {}
            TableStatus::Creating => {
                return Err(in_use(format!("Attempt to change a resource which is still in use: Table is being created: {name}")))
            }
            TableStatus::Deleting => {
                return Err(in_use(format!("Attempt to change a resource which is still in use: Table is being deleted: {name}")))
            }
            TableStatus::Active => {}
        }
        change(&mut table)?;
        let bytes = Bytes::from(table.encode_to_vec());
        match m.kv.update(key(name), bytes.clone(), entry.revision).await {
            Ok(rev) => {
                m.tables.apply(
                    &key(name),
                    rev,
                    async_nats::jetstream::kv::Operation::Put,
                    &bytes,
                );
                return Ok(table);
            }
            // Someone else changed it meanwhile: read again.
            Err(e) => {
                tracing::debug!(table = name, error = %e, "table change: compare-and-set lost")
            }
        }
    }
    Err(ApiError::new(
        ErrorCode::InternalServerError,
        "table metadata is changing too fast",
    ))
}

/// Moves one table on from CREATING or DELETING, if it is in one of those states.
pub async fn drive(m: &Memds, name: &str) {
    let entry = match m.kv.entry(key(name)).await {
        Ok(Some(e)) if e.operation == async_nats::jetstream::kv::Operation::Put => e,
        Ok(_) => return,
        Err(e) => return tracing::warn!(table = name, error = %e, "read table"),
    };
    let Ok(mut table) = TableInfo::decode(entry.value.as_ref()) else {
        return;
    };
    let result = match table.status() {
        TableStatus::Creating => {
            if let Err(e) = create_replicas(m, &table).await {
                return tracing::warn!(table = name, error = %e, "create partitions; will retry");
            }
            if table.restore.is_some() {
                // The archiver fills it and then makes it ACTIVE (`finish_restore`).
                return;
            }
            table.status = TableStatus::Active as i32;
            let bytes = Bytes::from(table.encode_to_vec());
            m.kv.update(key(name), bytes.clone(), entry.revision)
                .await
                .map(|rev| {
                    m.tables.apply(
                        &key(name),
                        rev,
                        async_nats::jetstream::kv::Operation::Put,
                        &bytes,
                    )
                })
                .map_err(|e| e.to_string())
        }
        TableStatus::Deleting => {
            // The tombstone is durable before the table's metadata goes: a replica that turns
            // up later is then known to be garbage, never mistaken for unknown data.
            let tombstone = crate::tables::tombstone_key(&table.table_id);
            let bytes = Bytes::from(table.encode_to_vec());
            match m.kv.put(&tombstone, bytes.clone()).await {
                Ok(rev) => m.tables.apply(
                    &tombstone,
                    rev,
                    async_nats::jetstream::kv::Operation::Put,
                    &bytes,
                ),
                Err(e) => {
                    return tracing::warn!(table = name, error = %e, "write tombstone; will retry")
                }
            }
            if let Err(e) = drop_replicas(m, &table).await {
                return tracing::warn!(table = name, error = %e, "drop partitions; will retry");
            }
            m.kv.delete_expect_revision(key(name), Some(entry.revision))
                .await
                .map_err(|e| e.to_string())
        }
        TableStatus::Active => return,
    };
    match result {
        Ok(()) => tracing::info!(
            table = name,
            from = table.status().as_str(),
            "table state advanced"
        ),
        Err(e) => tracing::debug!(table = name, error = %e, "table state: compare-and-set lost"),
    }
}

async fn create_replicas(m: &Memds, table: &TableInfo) -> Result<(), tern_bus::BusError> {
    let storage = StorageClient::new(m.bus.clone());
    for p in &table.partitions {
        // The first replica, the designated leader, is created last: it campaigns at once, and
        // its peers are there to answer.
        for r in p.replicas.iter().rev() {
            let req = CreatePartitionRequest {
                table_name: table.name.clone(),
                table_id: table.table_id.clone(),
                partition: Some(p.clone()),
            };
            storage.create_partition(&r.node_id, &req).await?;
        }
    }
    Ok(())
}

async fn drop_replicas(m: &Memds, table: &TableInfo) -> Result<(), tern_bus::BusError> {
    let storage = StorageClient::new(m.bus.clone());
    for p in &table.partitions {
        for r in &p.replicas {
            let req = DropPartitionRequest { partition_id: p.id };
            storage.drop_partition(&r.node_id, &req).await?;
        }
    }
    Ok(())
}

pub async fn reconcile_forever(m: Memds) {
    let mut tick = tokio::time::interval(Duration::from_millis(m.config.reconcile_ms));
    loop {
        tick.tick().await;
        let unfinished: Vec<Arc<TableInfo>> = m
            .tables
            .all()
            .into_iter()
            .filter(|t| t.status() != TableStatus::Active)
            .collect();
        for t in unfinished {
            drive(&m, &t.name).await;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn in_use(msg: String) -> ApiError {
    ApiError::new(ErrorCode::ResourceInUse, msg)
}

fn table_not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ResourceNotFound,
        format!("Requested resource not found: Table: {name} not found"),
    )
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{what}");
    ApiError::new(ErrorCode::InternalServerError, "Internal server error")
}
