//! On-demand backups: a backup is a table's metadata and a moment; its items are the archive's,
//! brought back by the point-in-time restore to that moment ([`crate::restore`]). Records live in
//! the archive (`backups/<id>`), so they outlast the table and the archiver.

use std::sync::Arc;

use tern_memds_client::MemdsClient;
use tern_model::{ApiError, ErrorCode};
use tern_proto::archive::{
    seal, unseal, BackupOp, BackupRecord, BackupRequest, BackupResponse, BackupStatus,
};

use crate::partition::Ctx;
use crate::restore;

/// DynamoDB's table ARN prefix as Tern's router writes it.
const TABLE_ARN_PREFIX: &str = "arn:aws:dynamodb:tern:000000000000:table/";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InternalServerError, format!("{e:#}"))
}

fn not_found(arn: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BackupNotFound,
        format!("Backup not found: {arn}"),
    )
}

/// The record id an ARN names (`…/table/<t>/backup/<id>`).
fn id_of(arn: &str) -> Option<&str> {
    let (_, id) = arn.rsplit_once("/backup/")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')).then_some(id)
}

pub async fn handle(
    ctx: Arc<Ctx>,
    memds: MemdsClient,
    req: BackupRequest,
) -> Result<BackupResponse, ApiError> {
    match BackupOp::try_from(req.op) {
        Ok(BackupOp::Create) => create(ctx, &memds, &req).await,
        Ok(BackupOp::Describe) => Ok(one(read(&ctx, &req.arn).await?)),
        Ok(BackupOp::List) => list(&ctx, &req).await,
        Ok(BackupOp::Delete) => {
            let mut record = read(&ctx, &req.arn).await?;
            let id = id_of(&req.arn).ok_or_else(|| not_found(&req.arn))?;
            ctx.archive
                .delete(&ctx.archive.backup(id))
                .await
                .map_err(internal)?;
            record.status = BackupStatus::Deleted as i32;
            Ok(one(record))
        }
        Ok(BackupOp::Restore) => {
            let record = read(&ctx, &req.arn).await?;
            if record.status != BackupStatus::Available as i32 {
                return Err(ApiError::new(
                    ErrorCode::BackupInUse,
                    format!("Backup is being created: {}", req.arn),
                ));
            }
            let table = record.table.clone().unwrap_or_default();
            let reply = restore::create_target(
                &memds,
                &table,
                &req.target_table,
                record.time_ms,
                &record.arn,
            )
            .await?;
            Ok(BackupResponse {
                backups: vec![record],
                table: reply.table,
                ..Default::default()
            })
        }
        Err(_) => Err(ApiError::validation("unknown backup operation")),
    }
}

fn one(record: BackupRecord) -> BackupResponse {
    BackupResponse {
        backups: vec![record],
        ..Default::default()
    }
}

async fn read(ctx: &Ctx, arn: &str) -> Result<BackupRecord, ApiError> {
    let id = id_of(arn).ok_or_else(|| not_found(arn))?;
    let path = ctx.archive.backup(id);
    if !ctx.archive.exists(&path).await.map_err(internal)? {
        return Err(not_found(arn));
    }
    let bytes = ctx.archive.get(&path).await.map_err(internal)?;
    unseal(&bytes).map_err(internal)
}

/// Records the backup (CREATING) and answers; it becomes AVAILABLE once the archive holds all of
/// the table up to its moment.
async fn create(
    ctx: Arc<Ctx>,
    memds: &MemdsClient,
    req: &BackupRequest,
) -> Result<BackupResponse, ApiError> {
    let reply = restore::describe_source(memds, &req.table).await?;
    let table = reply.table.clone().unwrap_or_default();
    let time_ms = now_ms();
    let id = format!("{time_ms:013}-{:08x}", rand::random::<u32>());
    let mut record = BackupRecord {
        arn: format!("{TABLE_ARN_PREFIX}{}/backup/{id}", table.name),
        name: req.name.clone(),
        table: Some(table),
        time_ms,
        status: BackupStatus::Creating as i32,
        size_bytes: reply.size_bytes,
        item_count: reply.item_count,
    };
    let path = ctx.archive.backup(&id);
    ctx.archive
        .put(&path, seal(&record))
        .await
        .map_err(internal)?;
    let answer = record.clone();
    tokio::spawn(async move {
        let partitions = record
            .table
            .as_ref()
            .map(|t| t.partitions.clone())
            .unwrap_or_default();
        loop {
            let mut done = true;
            for p in &partitions {
                if let Err(e) = restore::wait_archived(&ctx, p).await {
                    tracing::warn!(backup = %record.arn, error = %format!("{e:#}"), "backup waits for the archive");
                    done = false;
                }
            }
            if done {
                break;
            }
        }
        record.status = BackupStatus::Available as i32;
        match ctx.archive.put(&path, seal(&record)).await {
            Ok(()) => tracing::info!(backup = %record.arn, "backup available"),
            Err(e) => {
                tracing::error!(backup = %record.arn, error = %format!("{e:#}"), "record backup")
            }
        }
    });
    Ok(one(answer))
}

async fn list(ctx: &Ctx, req: &BackupRequest) -> Result<BackupResponse, ApiError> {
    let limit = if req.limit == 0 {
        100
    } else {
        req.limit as usize
    };
    let after = id_of(&req.arn).unwrap_or("");
    let mut out = BackupResponse::default();
    for id in ctx.archive.backups().await.map_err(internal)? {
        if id.as_str() <= after {
            continue;
        }
        let bytes = ctx
            .archive
            .get(&ctx.archive.backup(&id))
            .await
            .map_err(internal)?;
        let record: BackupRecord = unseal(&bytes).map_err(internal)?;
        let table = record.table.as_ref().map_or("", |t| t.name.as_str());
        if !req.table.is_empty() && table != req.table {
            continue;
        }
        if out.backups.len() == limit {
            out.last_evaluated = out
                .backups
                .last()
                .map(|b| b.arn.clone())
                .unwrap_or_default();
            break;
        }
        out.backups.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn arns_name_their_record_and_nothing_else() {
        let arn = "arn:aws:dynamodb:tern:000000000000:table/t/backup/01700000000000-0a1b2c3d";
        assert_eq!(super::id_of(arn), Some("01700000000000-0a1b2c3d"));
        assert_eq!(super::id_of("arn:x/backup/../../etc"), None);
        assert_eq!(super::id_of("no backup here"), None);
    }
}
