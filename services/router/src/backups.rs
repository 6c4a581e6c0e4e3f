//! Continuous backups and point-in-time restore. Every table's log is archived whatever the
//! setting (`docs/archive.md`); point-in-time recovery, when on, opens the window a table can be
//! restored from: from when it was turned on (at most 35 days back) to now. Restores are the
//! archiver's.

use std::time::Duration;

use serde_json::{json, Value};
use tern_bus::BusError;
use tern_model::{ApiError, ErrorCode};
use tern_proto::archive::{
    BackupOp, BackupRecord, BackupRequest, BackupResponse, BackupStatus, RestoreRequest,
};
use tern_proto::memds::{AlterTableRequest, TableInfo, TableReply};

use crate::json::{null_member, Request};
use crate::tables::{describe, ARN_PREFIX};
use crate::Router;

/// DynamoDB's recovery period.
const WINDOW_MS: u64 = 35 * 24 * 3600 * 1000;
/// How long the router waits for the archiver to create the restored table.
const RESTORE_CALL: Duration = Duration::from_secs(8);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn table_not_found(name: &str) -> ApiError {
    ApiError::new(ErrorCode::TableNotFound, format!("Table not found: {name}"))
}

/// The table, or TableNotFoundException (backup calls' own "not found").
async fn table(r: &Router, name: &str) -> Result<TableInfo, ApiError> {
    match r.memds.describe_table(name).await {
        Ok(TableReply { table: Some(t), .. }) => Ok(t),
        Ok(_) => Err(table_not_found(name)),
        Err(BusError::Api(e)) if e.code == ErrorCode::ResourceNotFound => {
            Err(table_not_found(name))
        }
        Err(e) => Err(e.into_api()),
    }
}

/// (earliest, latest) restorable moment, ms.
fn window(t: &TableInfo) -> (u64, u64) {
    let now = now_ms();
    (t.pitr_since_ms.max(now.saturating_sub(WINDOW_MS)), now)
}

fn description(t: &TableInfo) -> Value {
    let mut pitr = json!({
        "PointInTimeRecoveryStatus": if t.pitr_enabled { "ENABLED" } else { "DISABLED" },
    });
    if t.pitr_enabled {
        let (earliest, latest) = window(t);
        pitr["EarliestRestorableDateTime"] = json!(earliest as f64 / 1000.0);
        pitr["LatestRestorableDateTime"] = json!(latest as f64 / 1000.0);
        pitr["RecoveryPeriodInDays"] = json!(35);
    }
    json!({ "ContinuousBackupsDescription": {
        "ContinuousBackupsStatus": "ENABLED",
        "PointInTimeRecoveryDescription": pitr,
    }})
}

pub async fn describe_continuous_backups(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let t = table(r, req.table_name()?).await?;
    Ok(description(&t).to_string().into_bytes())
}

pub async fn update_continuous_backups(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let name = req.table_name()?;
    let spec = req
        .object("PointInTimeRecoverySpecification")?
        .ok_or_else(|| null_member("pointInTimeRecoverySpecification"))?;
    let enabled = match spec.get("PointInTimeRecoveryEnabled") {
        Some(Value::Bool(b)) => *b,
        None | Some(Value::Null) => {
            return Err(null_member(
                "pointInTimeRecoverySpecification.pointInTimeRecoveryEnabled",
            ))
        }
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::Serialization,
                "Unexpected value type for PointInTimeRecoveryEnabled: expected a boolean",
            ))
        }
    };
    if let Some(days) = spec.get("RecoveryPeriodInDays").and_then(Value::as_i64) {
        if !(1..=35).contains(&days) {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{days}' at 'pointInTimeRecoverySpecification.recoveryPeriodInDays' failed to satisfy constraint: Member must have value between 1 and 35"
            )));
        }
    }
    table(r, name).await?;
    let reply = r
        .memds
        .alter_table(&AlterTableRequest {
            table_name: name.to_string(),
            set_pitr: true,
            pitr_enabled: enabled,
            ..Default::default()
        })
        .await
        .map_err(|e| e.into_api())?;
    Ok(description(&reply.table.unwrap_or_default())
        .to_string()
        .into_bytes())
}

/// The source table's name, from SourceTableName or SourceTableArn.
fn source_name(req: &Request) -> Result<String, ApiError> {
    match (req.str("SourceTableName")?, req.str("SourceTableArn")?) {
        (Some(n), None) => Ok(n.to_string()),
        (None, Some(arn)) => arn
            .strip_prefix(ARN_PREFIX)
            .map(str::to_string)
            .ok_or_else(|| ApiError::validation(format!("Invalid TableArn: {arn}"))),
        (Some(_), Some(_)) => Err(ApiError::validation(
            "Only one of SourceTableArn or SourceTableName must be specified",
        )),
        (None, None) => Err(ApiError::validation(
            "Either SourceTableArn or SourceTableName must be specified",
        )),
    }
}

pub async fn restore_table_to_point_in_time(
    r: &Router,
    req: &Request,
) -> Result<Vec<u8>, ApiError> {
    let source = source_name(req)?;
    tern_model::validate_table_name(&source, "sourceTableName")?;
    let target = req
        .str("TargetTableName")?
        .ok_or_else(|| null_member("targetTableName"))?;
    tern_model::validate_table_name(target, "targetTableName")?;
    let latest = req.bool("UseLatestRestorableTime")?.unwrap_or(false);
    let at = match req.get("RestoreDateTime") {
        None => None,
        Some(Value::Number(n)) => n.as_f64().map(|s| (s * 1000.0).max(0.0) as u64),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::Serialization,
                "Unexpected value type for RestoreDateTime: expected a timestamp",
            ))
        }
    };
    let t = table(r, &source).await?;
    if !t.pitr_enabled {
        return Err(ApiError::new(
            ErrorCode::PointInTimeRecoveryUnavailable,
            format!("Point in time recovery is not enabled for table '{source}'"),
        ));
    }
    let (earliest, now) = window(&t);
    let time_ms = match (latest, at) {
        (true, Some(_)) => {
            return Err(ApiError::validation(
                "Only one of UseLatestRestorableTime or RestoreDateTime must be specified",
            ))
        }
        (true, None) => now,
        (false, Some(ms)) => ms,
        (false, None) => {
            return Err(ApiError::validation(
                "Either UseLatestRestorableTime or RestoreDateTime must be specified",
            ))
        }
    };
    if time_ms < earliest || time_ms > now {
        return Err(ApiError::new(
            ErrorCode::InvalidRestoreTime,
            format!(
                "RestoreDateTime must be between {:.3} and {:.3}",
                earliest as f64 / 1000.0,
                now as f64 / 1000.0
            ),
        ));
    }
    let reply: TableReply = r
        .archiver
        .with_timeout(RESTORE_CALL)
        .call(
            tern_proto::subjects::ARCHIVER_RESTORE,
            &RestoreRequest {
                source_table: source.clone(),
                target_table: target.to_string(),
                time_ms,
            },
        )
        .await
        .map_err(|e| e.into_api())?;
    let d = describe(&reply.table.unwrap_or_default());
    Ok(json!({ "TableDescription": d }).to_string().into_bytes())
}

// ---- on-demand backups: carried out by the archiver ----

async fn backup_call(r: &Router, req: BackupRequest) -> Result<BackupResponse, ApiError> {
    r.archiver
        .with_timeout(RESTORE_CALL)
        .call(tern_proto::subjects::ARCHIVER_BACKUP, &req)
        .await
        .map_err(|e| e.into_api())
}

fn status_name(b: &BackupRecord) -> &'static str {
    match BackupStatus::try_from(b.status) {
        Ok(BackupStatus::Creating) => "CREATING",
        Ok(BackupStatus::Deleted) => "DELETED",
        _ => "AVAILABLE",
    }
}

fn details(b: &BackupRecord) -> Value {
    json!({
        "BackupArn": b.arn,
        "BackupName": b.name,
        "BackupSizeBytes": b.size_bytes,
        "BackupStatus": status_name(b),
        "BackupType": "USER",
        "BackupCreationDateTime": b.time_ms as f64 / 1000.0,
    })
}

fn backup_description(b: &BackupRecord) -> Value {
    let t = b.table.clone().unwrap_or_default();
    let table = describe(&t);
    json!({
        "BackupDetails": details(b),
        "SourceTableDetails": {
            "TableName": t.name,
            "TableId": t.table_id,
            "TableArn": table["TableArn"],
            "TableSizeBytes": b.size_bytes,
            "KeySchema": table["KeySchema"],
            "TableCreationDateTime": table["CreationDateTime"],
            "ProvisionedThroughput": {
                "ReadCapacityUnits": t.read_capacity,
                "WriteCapacityUnits": t.write_capacity,
            },
            "ItemCount": b.item_count,
            "BillingMode": if t.billing_mode == "PAY_PER_REQUEST" { "PAY_PER_REQUEST" } else { "PROVISIONED" },
        },
        "SourceTableFeatureDetails": {},
    })
}

fn backup_arn(req: &Request) -> Result<String, ApiError> {
    let arn = req
        .str("BackupArn")?
        .ok_or_else(|| null_member("backupArn"))?;
    if arn.len() < 37 || arn.len() > 1024 {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{arn}' at 'backupArn' failed to satisfy constraint: Member must have length between 37 and 1024"
        )));
    }
    Ok(arn.to_string())
}

fn first(resp: BackupResponse) -> Result<BackupRecord, ApiError> {
    resp.backups.into_iter().next().ok_or_else(|| {
        ApiError::new(
            ErrorCode::InternalServerError,
            "the archiver answered no backup",
        )
    })
}

pub async fn create_backup(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = req.table_name()?;
    let name = req
        .str("BackupName")?
        .ok_or_else(|| null_member("backupName"))?;
    tern_model::validate_table_name(name, "backupName")?;
    let b = first(
        backup_call(
            r,
            BackupRequest {
                op: BackupOp::Create as i32,
                table: table.to_string(),
                name: name.to_string(),
                ..Default::default()
            },
        )
        .await?,
    )?;
    Ok(json!({ "BackupDetails": details(&b) })
        .to_string()
        .into_bytes())
}

pub async fn describe_backup(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let arn = backup_arn(req)?;
    let b = first(
        backup_call(
            r,
            BackupRequest {
                op: BackupOp::Describe as i32,
                arn,
                ..Default::default()
            },
        )
        .await?,
    )?;
    Ok(json!({ "BackupDescription": backup_description(&b) })
        .to_string()
        .into_bytes())
}

pub async fn delete_backup(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let arn = backup_arn(req)?;
    let b = first(
        backup_call(
            r,
            BackupRequest {
                op: BackupOp::Delete as i32,
                arn,
                ..Default::default()
            },
        )
        .await?,
    )?;
    Ok(json!({ "BackupDescription": backup_description(&b) })
        .to_string()
        .into_bytes())
}

pub async fn list_backups(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = match req.str("TableName")? {
        Some(t) => {
            tern_model::validate_table_name(t, "tableName")?;
            t.to_string()
        }
        None => String::new(),
    };
    let limit = req.i64("Limit")?.unwrap_or(100);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value between 1 and 100"
        )));
    }
    let resp = backup_call(
        r,
        BackupRequest {
            op: BackupOp::List as i32,
            table,
            arn: req
                .str("ExclusiveStartBackupArn")?
                .unwrap_or("")
                .to_string(),
            limit: limit as u32,
            ..Default::default()
        },
    )
    .await?;
    let summaries: Vec<Value> = resp
        .backups
        .iter()
        .map(|b| {
            let t = b.table.clone().unwrap_or_default();
            let mut v = details(b);
            v["TableName"] = json!(t.name);
            v["TableId"] = json!(t.table_id);
            v["TableArn"] = json!(format!("{ARN_PREFIX}{}", t.name));
            v
        })
        .collect();
    let mut out = json!({ "BackupSummaries": summaries });
    if !resp.last_evaluated.is_empty() {
        out["LastEvaluatedBackupArn"] = json!(resp.last_evaluated);
    }
    Ok(out.to_string().into_bytes())
}

pub async fn restore_table_from_backup(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let arn = backup_arn(req)?;
    let target = req
        .str("TargetTableName")?
        .ok_or_else(|| null_member("targetTableName"))?;
    tern_model::validate_table_name(target, "targetTableName")?;
    let resp = backup_call(
        r,
        BackupRequest {
            op: BackupOp::Restore as i32,
            arn,
            target_table: target.to_string(),
            ..Default::default()
        },
    )
    .await?;
    let d = describe(&resp.table.unwrap_or_default());
    Ok(json!({ "TableDescription": d }).to_string().into_bytes())
}
