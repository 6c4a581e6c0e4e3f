//! Continuous backups and point-in-time restore. Every table's log is archived whatever the
//! setting (`docs/archive.md`); point-in-time recovery, when on, opens the window a table can be
//! restored from: from when it was turned on (at most 35 days back) to now. Restores are the
//! archiver's.

use std::time::Duration;

use serde_json::{json, Value};
use tern_bus::BusError;
use tern_model::{ApiError, ErrorCode};
use tern_proto::archive::RestoreRequest;
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
