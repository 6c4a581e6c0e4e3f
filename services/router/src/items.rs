//! Item operations: parse and validate, then one call to the partition's storage node.
//!
//! Items travel and rest as canonical DynamoDB JSON, so a stored item is answered by splicing its
//! bytes into the response, without parsing it again.

use std::sync::Arc;

use bytes::Bytes;
use tern_model::{ApiError, Condition, ErrorCode, KeySchema, PathElem, PrimaryKey, ScalarType};
use tern_proto::memds::TableInfo;
use tern_proto::storage::{GetRequest, WriteKind, WriteRequest};

use crate::dispatch;
use crate::json::{null_member, Request};
use crate::Router;

/// 400 KB, DynamoDB's largest item.
const MAX_ITEM_SIZE: usize = 400 * 1024;

pub async fn put_item(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = req.table_name()?;
    let item_json = req.get("Item").ok_or_else(|| null_member("item"))?;
    let item = tern_model::parse_item(item_json)?;
    let return_old = return_values(req, "ReturnValues can only be ALL_OLD or NONE")?;
    let condition = condition(req)?;
    if tern_model::item_size(&item) > MAX_ITEM_SIZE {
        return Err(ApiError::validation(
            "Item size has exceeded the maximum allowed size",
        ));
    }
    let t = dispatch::active_table(r, table, false).await?;
    let key = key_schema(&t)?.key_of_item(&item)?;
    let write = WriteRequest {
        key: key.storage_key(),
        kind: WriteKind::Put as i32,
        item: Bytes::from(tern_model::item_to_json(&item)),
        condition,
        return_old,
        ..Default::default()
    };
    let resp = dispatch::write(r, t, key.hash(), write).await?;
    Ok(attributes_reply(resp.old_item))
}

pub async fn delete_item(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = req.table_name()?;
    let key_json = req.get("Key").ok_or_else(|| null_member("key"))?;
    let return_old = return_values(req, "Return values set to invalid value")?;
    let condition = condition(req)?;
    let (t, key) = parse_key(r, table, key_json).await?;
    let write = WriteRequest {
        key: key.storage_key(),
        kind: WriteKind::Delete as i32,
        condition,
        return_old,
        ..Default::default()
    };
    let resp = dispatch::write(r, t, key.hash(), write).await?;
    Ok(attributes_reply(resp.old_item))
}

pub async fn get_item(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = req.table_name()?;
    let key_json = req.get("Key").ok_or_else(|| null_member("key"))?;
    let consistent = req.bool("ConsistentRead")?.unwrap_or(false);
    let projection = projection(req)?;
    let (t, key) = parse_key(r, table, key_json).await?;
    let get = GetRequest {
        key: key.storage_key(),
        consistent,
        ..Default::default()
    };
    let resp = dispatch::get(r, t, key.hash(), get).await?;
    Ok(match (resp.item, projection) {
        (Some(item), None) => splice("Item", &item),
        (Some(item), Some(paths)) => {
            let projected = tern_model::project(&tern_model::parse_item_json(&item)?, &paths);
            splice("Item", &tern_model::item_to_json(&projected))
        }
        (None, _) => b"{}".to_vec(),
    })
}

/// The table's routing metadata (one cache lookup per request) and the request's key.
async fn parse_key(
    r: &Router,
    table: &str,
    key_json: &serde_json::Value,
) -> Result<(Arc<TableInfo>, PrimaryKey), ApiError> {
    let key_item = tern_model::parse_item(key_json)?;
    let t = dispatch::active_table(r, table, false).await?;
    let key = key_schema(&t)?.parse_key(&key_item)?;
    Ok((t, key))
}

fn return_values(req: &Request, invalid: &str) -> Result<bool, ApiError> {
    match req.str("ReturnValues")? {
        None | Some("NONE") => Ok(false),
        Some("ALL_OLD") => Ok(true),
        Some("UPDATED_OLD" | "ALL_NEW" | "UPDATED_NEW") => Err(ApiError::validation(invalid)),
        Some(other) => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at 'returnValues' failed to satisfy constraint: Member must satisfy enum value set: [ALL_NEW, UPDATED_OLD, ALL_OLD, NONE, UPDATED_NEW]"
        ))),
    }
}

/// The request's ConditionExpression, compiled and encoded for the storage node.
fn condition(req: &Request) -> Result<Vec<u8>, ApiError> {
    let names = req.expression_names()?;
    let values = req.expression_values()?;
    let Some(expr) = req.str("ConditionExpression")? else {
        if names.is_some() {
            return Err(ApiError::validation(
                "ExpressionAttributeNames can only be specified when using expressions",
            ));
        }
        if values.is_some() {
            return Err(ApiError::validation(
                "ExpressionAttributeValues can only be specified when using expressions",
            ));
        }
        return Ok(Vec::new());
    };
    if req.get("Expected").is_some() {
        return Err(ApiError::validation(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {Expected} Expression parameters: {ConditionExpression}",
        ));
    }
    let cond: Condition = tern_model::parse_condition(expr, names.as_ref(), values.as_ref())?;
    serde_json::to_vec(&cond).map_err(|e| {
        ApiError::new(
            ErrorCode::InternalServerError,
            format!("encode condition: {e}"),
        )
    })
}

/// The document paths a read returns, from ProjectionExpression (or legacy AttributesToGet).
fn projection(req: &Request) -> Result<Option<Vec<Vec<PathElem>>>, ApiError> {
    let names = req.expression_names()?;
    let legacy = req.array("AttributesToGet")?;
    match (req.str("ProjectionExpression")?, legacy) {
        (Some(_), Some(_)) => Err(ApiError::validation(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {AttributesToGet} Expression parameters: {ProjectionExpression}",
        )),
        (Some(expr), None) => Ok(Some(tern_model::parse_projection(expr, names.as_ref())?)),
        (None, legacy) => {
            if names.is_some() {
                return Err(ApiError::validation(
                    "ExpressionAttributeNames can only be specified when using expressions",
                ));
            }
            let Some(attrs) = legacy else { return Ok(None) };
            attrs
                .iter()
                .map(|a| match a.as_str() {
                    Some(name) => Ok(vec![PathElem::Name(name.to_string())]),
                    None => Err(ApiError::new(ErrorCode::Serialization, "AttributesToGet must hold strings")),
                })
                .collect::<Result<_, _>>()
                .map(Some)
        }
    }
}

fn key_schema(t: &Arc<TableInfo>) -> Result<KeySchema, ApiError> {
    let ks = t
        .key_schema
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorCode::InternalServerError, "table has no key schema"))?;
    let scalar = |s: &str| match s {
        "N" => ScalarType::N,
        "B" => ScalarType::B,
        _ => ScalarType::S,
    };
    Ok(KeySchema {
        hash: (ks.hash_name.clone(), scalar(&ks.hash_type)),
        range: (!ks.range_name.is_empty()).then(|| (ks.range_name.clone(), scalar(&ks.range_type))),
    })
}

fn attributes_reply(old: Option<Bytes>) -> Vec<u8> {
    match old {
        Some(item) => splice("Attributes", &item),
        None => b"{}".to_vec(),
    }
}

/// `{"<field>":<item json>}` without re-encoding the item.
fn splice(field: &str, item: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(item.len() + field.len() + 5);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(item);
    out.push(b'}');
    out
}
