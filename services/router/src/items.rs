//! Item operations: parse and validate, then one call to the partition's storage node.
//!
//! Items travel and rest as canonical DynamoDB JSON, so a stored item is answered by splicing its
//! bytes into the response, without parsing it again.

use std::sync::Arc;

use bytes::Bytes;
use tern_model::{ApiError, Condition, ErrorCode, KeySchema, PathElem, PrimaryKey, ScalarType};
use tern_proto::expr::{encode_condition, ConditionProgram};
use tern_proto::memds::TableInfo;
use tern_proto::storage::{GetRequest, WriteKind, WriteRequest};

use crate::capacity::Kind;
use crate::dispatch;
use crate::json::{null_member, Request};
use crate::Router;
use tern_model::capacity::{read_units, read_units_of_json, ReadKind};

/// 400 KB, DynamoDB's largest item.
const MAX_ITEM_SIZE: usize = 400 * 1024;

pub async fn put_item(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = req.table_name()?;
    let item_json = req.get("Item").ok_or_else(|| null_member("item"))?;
    let item = tern_model::parse_item(item_json)?;
    let return_old = return_values(req, "ReturnValues can only be ALL_OLD or NONE")?;
    let condition = condition(req)?;
    let capacity = wants_capacity(req)?;
    let size = tern_model::item_size(&item);
    if size > MAX_ITEM_SIZE {
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
        condition_expr: condition,
        return_old,
        return_old_on_failure: old_on_failure(req)?,
        ..Default::default()
    };
    let (resp, charged) = charged_write(r, t, key.hash(), write, write_units(size)).await?;
    let units = capacity.then_some(charged);
    Ok(reply(
        "Attributes",
        resp.old_item.as_deref(),
        table,
        units,
        wants_indexes(req),
    ))
}

pub async fn delete_item(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = req.table_name()?;
    let key_json = req.get("Key").ok_or_else(|| null_member("key"))?;
    let return_old = return_values(req, "Return values set to invalid value")?;
    let condition = condition(req)?;
    let capacity = wants_capacity(req)?;
    let (t, key) = parse_key(r, table, key_json).await?;
    let write = WriteRequest {
        key: key.storage_key(),
        kind: WriteKind::Delete as i32,
        condition_expr: condition,
        return_old,
        return_old_on_failure: old_on_failure(req)?,
        ..Default::default()
    };
    let (resp, charged) = charged_write(r, t, key.hash(), write, write_units(0)).await?;
    let units = capacity.then_some(charged);
    Ok(reply(
        "Attributes",
        resp.old_item.as_deref(),
        table,
        units,
        wants_indexes(req),
    ))
}

/// What UpdateItem returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Returned {
    None,
    AllOld,
    UpdatedOld,
    AllNew,
    UpdatedNew,
}

pub async fn update_item(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = req.table_name()?;
    let key_json = req.get("Key").ok_or_else(|| null_member("key"))?;
    let update_text = req.str("UpdateExpression")?;
    let condition_text = req.str("ConditionExpression")?;
    let (names, values) = req.substitutions(update_text.is_some() || condition_text.is_some())?;
    let legacy_updates = req.object("AttributeUpdates")?;
    if let (Some(_), Some(_)) = (update_text, legacy_updates) {
        return Err(ApiError::validation(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {AttributeUpdates} Expression parameters: {UpdateExpression}",
        ));
    }
    if condition_text.is_some() && req.get("Expected").is_some() {
        return Err(ApiError::validation(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {Expected} Expression parameters: {ConditionExpression}",
        ));
    }
    let (update, mut condition) =
        tern_model::parse_update(update_text, condition_text, names.as_ref(), values.as_ref())?;
    if condition_text.is_none() {
        condition = legacy_expected(req)?;
    }
    let update = match (update, legacy_updates) {
        (Some(u), _) => u,
        (None, Some(legacy)) => attribute_updates(legacy)?,
        (None, None) => tern_model::Update::default(),
    };
    let returned = match req.str("ReturnValues")? {
        None | Some("NONE") => Returned::None,
        Some("ALL_OLD") => Returned::AllOld,
        Some("UPDATED_OLD") => Returned::UpdatedOld,
        Some("ALL_NEW") => Returned::AllNew,
        Some("UPDATED_NEW") => Returned::UpdatedNew,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'returnValues' failed to satisfy constraint: Member must satisfy enum value set: [ALL_NEW, UPDATED_OLD, ALL_OLD, NONE, UPDATED_NEW]"
            )))
        }
    };
    let capacity = wants_capacity(req)?;
    let key_item = tern_model::parse_item(key_json)?;
    let t = dispatch::active_table(r, table, false).await?;
    let schema = key_schema(&t)?;
    let key = schema.parse_key(&key_item)?;
    let key_names = [Some(&schema.hash.0), schema.range.as_ref().map(|r| &r.0)];
    for action in &update.actions {
        if let Some(PathElem::Name(top)) = action.path().first() {
            if key_names.contains(&Some(top)) {
                return Err(ApiError::validation(format!(
                    "One or more parameter values were invalid: Cannot update attribute {top}. This attribute is part of the key"
                )));
            }
        }
    }
    let write = WriteRequest {
        key: key.storage_key(),
        kind: WriteKind::Update as i32,
        item: Bytes::from(tern_model::item_to_json(&key_item)),
        update_expr: Some(tern_proto::expr::encode_update(&update)),
        condition_expr: condition.as_ref().map(tern_proto::expr::encode_condition),
        return_old: matches!(returned, Returned::AllOld | Returned::UpdatedOld),
        return_new: matches!(returned, Returned::AllNew | Returned::UpdatedNew),
        return_old_on_failure: old_on_failure(req)?,
        ..Default::default()
    };
    let (resp, charged) = charged_write(r, t, key.hash(), write, write_units(0)).await?;
    let units = capacity.then_some(charged);
    let updated_only = |bytes: Option<&Bytes>| -> Result<Option<Vec<u8>>, ApiError> {
        let Some(b) = bytes else { return Ok(None) };
        let projected = tern_model::project(&tern_model::parse_item_json(b)?, &update.paths());
        Ok((!projected.is_empty()).then(|| tern_model::item_to_json(&projected)))
    };
    let attributes: Option<Vec<u8>> = match returned {
        Returned::None => None,
        Returned::AllOld => resp.old_item.as_deref().map(<[u8]>::to_vec),
        Returned::AllNew => resp.new_item.as_deref().map(<[u8]>::to_vec),
        Returned::UpdatedOld => updated_only(resp.old_item.as_ref())?,
        Returned::UpdatedNew => updated_only(resp.new_item.as_ref())?,
    };
    Ok(reply(
        "Attributes",
        attributes.as_deref(),
        table,
        units,
        wants_indexes(req),
    ))
}

/// The legacy AttributeUpdates parameter as an update: PUT sets, DELETE removes (or takes
/// elements out of a set), ADD adds to a number or a set.
fn attribute_updates(
    legacy: &serde_json::Map<String, serde_json::Value>,
) -> Result<tern_model::Update, ApiError> {
    use tern_model::Action;
    let mut actions = Vec::new();
    for (name, spec) in legacy {
        let path = vec![PathElem::Name(name.clone())];
        let value = spec.get("Value").map(tern_model::parse_value).transpose()?;
        let action = spec.get("Action").and_then(|a| a.as_str()).unwrap_or("PUT");
        actions.push(match (action, value) {
            ("PUT", Some(v)) => Action::Set(path, tern_model::SetValue::Operand(tern_model::Operand::Value(v))),
            ("DELETE", None) => Action::Remove(path),
            ("DELETE", Some(v)) => Action::Delete(path, v),
            ("ADD", Some(v)) => Action::Add(path, v),
            ("PUT" | "ADD", None) => {
                return Err(ApiError::validation(format!(
                    "One or more parameter values were invalid: Only DELETE action is allowed when no attribute value is specified: {name}"
                )))
            }
            (other, _) => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'attributeUpdates.{name}.member.action' failed to satisfy constraint: Member must satisfy enum value set: [ADD, PUT, DELETE]"
                )))
            }
        });
    }
    Ok(tern_model::Update { actions })
}

pub async fn get_item(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = req.table_name()?;
    let key_json = req.get("Key").ok_or_else(|| null_member("key"))?;
    let consistent = req.bool("ConsistentRead")?.unwrap_or(false);
    let projection = projection(req)?;
    let capacity = wants_capacity(req)?;
    let (t, key) = parse_key(r, table, key_json).await?;
    let get = GetRequest {
        key: key.storage_key(),
        consistent,
        ..Default::default()
    };
    let admitted = r.capacity.admit(
        &t,
        Kind::Read,
        read_units(0, ReadKind::consistent(consistent)),
    )?;
    let resp = dispatch::get(r, t, key.hash(), get).await?;
    let charged = read_units_of_json(
        resp.item.as_deref().unwrap_or_default(),
        ReadKind::consistent(consistent),
    );
    r.capacity.consume(&admitted, charged);
    let units = capacity.then_some(charged);
    Ok(match (resp.item, projection) {
        (Some(item), Some(paths)) => {
            let projected = tern_model::project(&tern_model::parse_item_json(&item)?, &paths);
            reply(
                "Item",
                Some(&tern_model::item_to_json(&projected)),
                table,
                units,
                wants_indexes(req),
            )
        }
        (item, _) => reply("Item", item.as_deref(), table, units, wants_indexes(req)),
    })
}

/// The table's routing metadata (one cache lookup per request) and the request's key.
pub(crate) async fn parse_key(
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
fn condition(req: &Request) -> Result<Option<ConditionProgram>, ApiError> {
    let expr = req.str("ConditionExpression")?;
    let (names, values) = req.substitutions(expr.is_some())?;
    let Some(expr) = expr else {
        return match legacy_expected(req)? {
            Some(c) => Ok(Some(encode_condition(&c))),
            None => Ok(None),
        };
    };
    if req.get("ConditionalOperator").is_some() {
        return Err(ApiError::validation(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {ConditionalOperator} Expression parameters: {ConditionExpression}",
        ));
    }
    if req.get("Expected").is_some() {
        return Err(ApiError::validation(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {Expected} Expression parameters: {ConditionExpression}",
        ));
    }
    let cond: Condition = tern_model::parse_condition(expr, names.as_ref(), values.as_ref())?;
    Ok(Some(encode_condition(&cond)))
}

/// ReturnValuesOnConditionCheckFailure: whether a failed condition returns the item (ALL_OLD).
fn old_on_failure(req: &Request) -> Result<bool, ApiError> {
    match req.str("ReturnValuesOnConditionCheckFailure")? {
        None | Some("NONE") => Ok(false),
        Some("ALL_OLD") => Ok(true),
        Some(other) => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at 'returnValuesOnConditionCheckFailure' failed to satisfy constraint: Member must satisfy enum value set: [ALL_OLD, NONE]"
        ))),
    }
}

/// A write whose condition failed and that asked for the item: DynamoDB's exception with it.
fn failed_with_item(resp: &tern_proto::storage::WriteResponse) -> Result<(), ApiError> {
    if !resp.condition_failed {
        return Ok(());
    }
    let mut e = ApiError::new(
        ErrorCode::ConditionalCheckFailed,
        "The conditional request failed",
    );
    e.item = resp.old_item.as_ref().map(|b| b.to_vec());
    Err(e)
}

/// The legacy `Expected` (with `ConditionalOperator`) as a condition, if the request has one.
pub(crate) fn legacy_expected(req: &Request) -> Result<Option<Condition>, ApiError> {
    let Some(expected) = req.object("Expected")? else {
        if req.get("ConditionalOperator").is_some() {
            return Err(ApiError::validation(
                "ConditionalOperator can only be used when Expected or QueryFilter or ScanFilter is present",
            ));
        }
        return Ok(None);
    };
    tern_model::legacy_condition("Expected", expected, req.str("ConditionalOperator")?).map(Some)
}

/// The document paths a read returns, from ProjectionExpression (or legacy AttributesToGet).
pub(crate) fn projection(req: &Request) -> Result<Option<Vec<Vec<PathElem>>>, ApiError> {
    let names = req.expression_names()?;
    tern_model::validate_substitutions(names.as_ref(), None)?;
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

pub(crate) fn key_schema(t: &Arc<TableInfo>) -> Result<KeySchema, ApiError> {
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

/// ReturnConsumedCapacity: TOTAL and INDEXES (the same here: no indexes yet) report capacity.
pub(crate) fn wants_capacity(req: &Request) -> Result<bool, ApiError> {
    match req.str("ReturnConsumedCapacity")? {
        None | Some("NONE") => Ok(false),
        Some("TOTAL" | "INDEXES") => Ok(true),
        Some(other) => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at 'returnConsumedCapacity' failed to satisfy constraint: Member must satisfy enum value set: [INDEXES, TOTAL, NONE]"
        ))),
    }
}

/// ReturnConsumedCapacity INDEXES: the table's share is reported apart too (there are no indexes).
pub(crate) fn wants_indexes(req: &Request) -> bool {
    matches!(req.str("ReturnConsumedCapacity"), Ok(Some("INDEXES")))
}

/// DynamoDB's ConsumedCapacity of one table.
pub(crate) fn capacity_json(table: &str, units: f64, indexes: bool) -> serde_json::Value {
    let mut cc = serde_json::json!({ "TableName": table, "CapacityUnits": units });
    if indexes {
        cc["Table"] = serde_json::json!({ "CapacityUnits": units });
    }
    cc
}

/// Write capacity units of a write whose item is `size` bytes.
pub(crate) fn write_units(size: usize) -> f64 {
    tern_model::capacity::write_units(size, false)
}

/// Admits a write on its table's capacity, sends it and charges what it consumed, as DynamoDB
/// does: the larger of the new item (`units`, or the updated item's size the node reports) and
/// the item it replaced or deleted; a write whose condition failed, the item as it is; a write
/// that failed otherwise, nothing. Returns the response and the units charged.
pub(crate) async fn charged_write(
    r: &Router,
    t: Arc<TableInfo>,
    hash: u64,
    write: WriteRequest,
    units: f64,
) -> Result<(tern_proto::storage::WriteResponse, f64), ApiError> {
    let admitted = r.capacity.admit(&t, Kind::Write, units)?;
    let result = dispatch::write(r, t, hash, write)
        .await
        .and_then(|resp| failed_with_item(&resp).map(|()| resp));
    let charged = match &result {
        Ok(resp) => {
            let updated = if resp.item_size > 0 {
                write_units(resp.item_size as usize)
            } else {
                0.0
            };
            units.max(updated).max(resp.old_write_units as f64)
        }
        // DynamoDB charges a failed condition on the item as it is (at least one unit); it is
        // known here when the request asked for it back, otherwise the least is charged.
        Err(e) if e.code == ErrorCode::ConditionalCheckFailed => e
            .item
            .as_deref()
            .map_or(1.0, tern_model::capacity::write_units_of_json),
        Err(_) => 0.0,
    };
    r.capacity.consume(&admitted, charged);
    result.map(|resp| (resp, charged))
}

/// `{"<field>": <item>, "ConsumedCapacity": …}`, splicing the stored item's bytes as they are.
fn reply(
    field: &str,
    item: Option<&[u8]>,
    table: &str,
    units: Option<f64>,
    indexes: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(item.map_or(0, <[u8]>::len) + 64);
    out.push(b'{');
    if let Some(item) = item {
        out.push(b'"');
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(item);
    }
    if let Some(units) = units {
        if item.is_some() {
            out.push(b',');
        }
        let cc = capacity_json(table, units, indexes);
        out.extend_from_slice(b"\"ConsumedCapacity\":");
        out.extend_from_slice(cc.to_string().as_bytes());
    }
    out.push(b'}');
    out
}
