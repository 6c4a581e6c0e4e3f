//! BatchWriteItem and BatchGetItem: every request validated first (nothing is written when any
//! part is invalid), then each item sent to its partition, all at once; the parts that could not
//! be served come back as UnprocessedItems / UnprocessedKeys for the client to retry.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;
use serde_json::{json, Map, Value};
use tern_model::{ApiError, ErrorCode, PathElem, PrimaryKey};
use tern_proto::memds::TableInfo;
use tern_proto::storage::{GetRequest, WriteKind, WriteRequest};

use tern_model::capacity::{read_units, read_units_of_json, ReadKind};

use crate::capacity::Kind;
use crate::dispatch;
use crate::items::{
    capacity_json, key_schema, projection, wants_capacity, wants_indexes, write_units,
};
use crate::json::{null_member, Request};
use crate::Router;

const MAX_WRITES: usize = 25;
const MAX_KEYS: usize = 100;
/// DynamoDB's largest BatchGetItem answer; keys beyond it come back unprocessed.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// 400 KB, DynamoDB's largest item.
const MAX_ITEM_SIZE: usize = 400 * 1024;

fn request_items(req: &Request) -> Result<&Map<String, Value>, ApiError> {
    let items = req
        .object("RequestItems")?
        .ok_or_else(|| null_member("requestItems"))?;
    if items.is_empty() {
        return Err(ApiError::validation(
            "1 validation error detected: Value '{}' at 'requestItems' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ));
    }
    for name in items.keys() {
        tern_model::validate_table_name(name, "requestItems.key")?;
    }
    Ok(items)
}

fn duplicates() -> ApiError {
    ApiError::validation("Provided list of item keys contains duplicates")
}

/// One write of a batch, validated.
struct Write {
    table: Arc<TableInfo>,
    key: PrimaryKey,
    req: WriteRequest,
    /// The request as the client sent it, returned if it goes unprocessed.
    original: Value,
    size: usize,
}

pub async fn batch_write_item(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let items = request_items(req)?;
    let capacity = wants_capacity(req)?;
    let total: usize = items
        .values()
        .map(|v| v.as_array().map_or(0, Vec::len))
        .sum();
    if total > MAX_WRITES {
        return Err(ApiError::validation(
            "Too many items requested for the BatchWriteItem call",
        ));
    }
    let mut writes = Vec::with_capacity(total);
    for (name, list) in items {
        let list = list.as_array().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Serialization,
                "Unexpected list type for requestItems",
            )
        })?;
        if list.is_empty() {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value at 'requestItems.{name}.member' failed to satisfy constraint: Member must have length greater than or equal to 1"
            )));
        }
        let t = dispatch::active_table(r, name, false).await?;
        let schema = key_schema(&t)?;
        let mut seen = HashSet::new();
        for w in list {
            let put = w.get("PutRequest").filter(|v| !v.is_null());
            let delete = w.get("DeleteRequest").filter(|v| !v.is_null());
            let (key, req, size) =
                match (put, delete) {
                    (Some(p), None) => {
                        let item_json = p.get("Item").ok_or_else(|| null_member("item"))?;
                        let item = tern_model::parse_item(item_json)?;
                        let size = tern_model::item_size(&item);
                        if size > MAX_ITEM_SIZE {
                            return Err(ApiError::validation(
                                "Item size has exceeded the maximum allowed size",
                            ));
                        }
                        let key = schema.key_of_item(&item)?;
                        let write = WriteRequest {
                            key: key.storage_key(),
                            kind: WriteKind::Put as i32,
                            item: Bytes::from(tern_model::item_to_json(&item)),
                            ..Default::default()
                        };
                        (key, write, size)
                    }
                    (None, Some(d)) => {
                        let key_json = d.get("Key").ok_or_else(|| null_member("key"))?;
                        let key = schema.parse_key(&tern_model::parse_item(key_json)?)?;
                        let write = WriteRequest {
                            key: key.storage_key(),
                            kind: WriteKind::Delete as i32,
                            ..Default::default()
                        };
                        (key, write, 0)
                    }
                    _ => return Err(ApiError::validation(
                        "A WriteRequest must contain exactly one of PutRequest and DeleteRequest",
                    )),
                };
            if !seen.insert(key.storage_key()) {
                return Err(duplicates());
            }
            writes.push((
                name.clone(),
                Write {
                    table: t.clone(),
                    key,
                    req,
                    original: w.clone(),
                    size,
                },
            ));
        }
    }
    // Each write is admitted on its table's capacity on its own: the throttled ones come back
    // unprocessed, as DynamoDB returns them, unless none was admitted at all.
    let admitted: Vec<Result<_, ApiError>> = writes
        .iter()
        .map(|(_, w)| r.capacity.admit(&w.table, Kind::Write, write_units(w.size)))
        .collect();
    if let Some(Err(e)) = admitted.iter().find(|a| a.is_err()) {
        if admitted.iter().all(Result::is_err) {
            return Err(e.clone());
        }
    }
    let results = join_all(writes.iter().zip(&admitted).map(|((_, w), a)| async move {
        let admitted = a.as_ref().map_err(Clone::clone)?;
        let result = dispatch::write(r, w.table.clone(), w.key.hash(), w.req.clone()).await;
        let charged = match &result {
            Ok(resp) => write_units(w.size).max(resp.old_write_units as f64),
            Err(_) => 0.0,
        };
        r.capacity.consume(admitted, charged);
        result.map(|_| charged)
    }))
    .await;
    let mut unprocessed: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut units: BTreeMap<&str, f64> = BTreeMap::new();
    for ((table, w), result) in writes.iter().zip(results) {
        match result {
            Ok(charged) => *units.entry(table.as_str()).or_default() += charged,
            Err(e) if e.code.retryable() => {
                tracing::debug!(table, error = %e, "batch write left unprocessed");
                unprocessed
                    .entry(table.as_str())
                    .or_default()
                    .push(w.original.clone());
            }
            Err(e) => return Err(e),
        }
    }
    let mut out = json!({ "UnprocessedItems": unprocessed });
    if capacity {
        out["ConsumedCapacity"] = consumed(&units, wants_indexes(req));
    }
    Ok(serde_json::to_vec(&out).expect("json"))
}

fn consumed(units: &BTreeMap<&str, f64>, indexes: bool) -> Value {
    Value::Array(
        units
            .iter()
            .map(|(t, u)| capacity_json(t, *u, indexes))
            .collect(),
    )
}

/// One key of a batch read, validated.
struct Read {
    table: Arc<TableInfo>,
    name: String,
    key: PrimaryKey,
    key_json: Value,
    consistent: bool,
    projection: Option<Arc<Vec<Vec<PathElem>>>>,
}

pub async fn batch_get_item(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let items = request_items(req)?;
    let capacity = wants_capacity(req)?;
    let mut reads = Vec::new();
    // The rest of each table's request (projection, consistency), echoed with unprocessed keys.
    let mut table_params: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (name, spec) in items {
        let spec = spec.as_object().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Serialization,
                "Unexpected value type for requestItems",
            )
        })?;
        let sub = Request::from_map(spec.clone());
        let keys = sub.array("Keys")?.ok_or_else(|| null_member("keys"))?;
        if keys.is_empty() {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '[]' at 'requestItems.{name}.member.keys' failed to satisfy constraint: Member must have length greater than or equal to 1"
            )));
        }
        let consistent = sub.bool("ConsistentRead")?.unwrap_or(false);
        let projection = projection(&sub)?.map(Arc::new);
        let t = dispatch::active_table(r, name, false).await?;
        let schema = key_schema(&t)?;
        let mut seen = HashSet::new();
        for k in keys {
            let key = schema.parse_key(&tern_model::parse_item(k)?)?;
            if !seen.insert(key.storage_key()) {
                return Err(duplicates());
            }
            reads.push(Read {
                table: t.clone(),
                name: name.clone(),
                key,
                key_json: k.clone(),
                consistent,
                projection: projection.clone(),
            });
        }
        let mut params = spec.clone();
        params.remove("Keys");
        table_params.insert(name.clone(), params);
        if reads.len() > MAX_KEYS {
            return Err(ApiError::validation(
                "Too many items requested for the BatchGetItem call",
            ));
        }
    }
    let admitted: Vec<Result<_, ApiError>> = reads
        .iter()
        .map(|k| {
            let least = read_units(0, ReadKind::consistent(k.consistent));
            r.capacity.admit(&k.table, Kind::Read, least)
        })
        .collect();
    if let Some(Err(e)) = admitted.iter().find(|a| a.is_err()) {
        if admitted.iter().all(Result::is_err) {
            return Err(e.clone());
        }
    }
    let results = join_all(reads.iter().zip(&admitted).map(|(k, a)| async move {
        a.as_ref().map_err(Clone::clone)?;
        let get = GetRequest {
            key: k.key.storage_key(),
            consistent: k.consistent,
            ..Default::default()
        };
        dispatch::get(r, k.table.clone(), k.key.hash(), get).await
    }))
    .await;
    let mut responses: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut unprocessed: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut units: BTreeMap<&str, f64> = BTreeMap::new();
    let mut bytes = 0usize;
    for ((k, admitted), result) in reads.iter().zip(&admitted).zip(results) {
        let name = k.name.as_str();
        responses.entry(name).or_default();
        // Charged only for what is answered: a key left unprocessed is charged when it is read
        // again (its estimate comes back).
        let charge = |units: f64| {
            if let Ok(a) = admitted {
                r.capacity.consume(a, units);
            }
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(e) if e.code.retryable() => {
                charge(0.0);
                unprocessed
                    .entry(name)
                    .or_default()
                    .push(k.key_json.clone());
                continue;
            }
            Err(e) => {
                charge(0.0);
                return Err(e);
            }
        };
        let charged = read_units_of_json(
            resp.item.as_deref().unwrap_or_default(),
            ReadKind::consistent(k.consistent),
        );
        let Some(item) = resp.item else {
            charge(charged);
            *units.entry(name).or_default() += charged;
            continue;
        };
        if bytes + item.len() > MAX_RESPONSE_BYTES {
            charge(0.0);
            unprocessed
                .entry(name)
                .or_default()
                .push(k.key_json.clone());
            continue;
        }
        charge(charged);
        *units.entry(name).or_default() += charged;
        bytes += item.len();
        let value: Value = match &k.projection {
            Some(paths) => {
                let projected = tern_model::project(&tern_model::parse_item_json(&item)?, paths);
                serde_json::from_slice(&tern_model::item_to_json(&projected))
            }
            None => serde_json::from_slice(&item),
        }
        .map_err(|e| ApiError::new(ErrorCode::InternalServerError, format!("stored item: {e}")))?;
        responses.entry(name).or_default().push(value);
    }
    let unprocessed: BTreeMap<&str, Value> = unprocessed
        .into_iter()
        .map(|(t, keys)| {
            let mut spec = table_params.get(t).cloned().unwrap_or_default();
            spec.insert("Keys".into(), Value::Array(keys));
            (t, Value::Object(spec))
        })
        .collect();
    let mut out = json!({ "Responses": responses, "UnprocessedKeys": unprocessed });
    if capacity {
        out["ConsumedCapacity"] = consumed(&units, wants_indexes(req));
    }
    Ok(serde_json::to_vec(&out).expect("json"))
}
