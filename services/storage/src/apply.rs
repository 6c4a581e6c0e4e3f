//! Applying one committed write to the items: the condition is decided against the latest value
//! of the item, earlier writes of the same apply batch included, so every replica applying the
//! same entries in log order reaches the same items and the same answers.

use std::collections::HashMap;

use bytes::Bytes;
use tern_model::{ApiError, Condition, ErrorCode};
use tern_proto::storage::{WriteKind, WriteRequest, WriteResponse};
use tern_storage_client::StorageError;

use crate::store::{item_key, Store};

/// Keys a batch has written so far, with their new value (`None`: deleted).
pub type Staged = HashMap<Vec<u8>, Option<Bytes>>;

/// The condition carried by a write request, if any: protobuf (`condition_expr`), or the serde
/// JSON that versions before it wrote (`condition`), still read from older log entries.
pub fn condition_of(req: &WriteRequest) -> Result<Option<Condition>, StorageError> {
    if let Some(p) = &req.condition_expr {
        return tern_proto::expr::decode_condition(p)
            .map(Some)
            .map_err(|e| undecodable("condition", e));
    }
    if req.condition.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&req.condition)
        .map(Some)
        .map_err(|e| undecodable("condition", e))
}

/// The update carried by an Update write, like [`condition_of`].
pub fn update_of(req: &WriteRequest) -> Result<tern_model::Update, StorageError> {
    if let Some(p) = &req.update_expr {
        return tern_proto::expr::decode_update(p).map_err(|e| undecodable("update", e));
    }
    serde_json::from_slice(&req.update).map_err(|e| undecodable("update", e))
}

/// What a write request carries besides its item, decoded once.
#[derive(Debug, Default)]
pub struct Ops {
    pub condition: Option<Condition>,
    /// Update writes only.
    pub update: Option<tern_model::Update>,
}

/// Decodes a write's condition and update.
pub fn ops_of(req: &WriteRequest) -> Result<Ops, StorageError> {
    Ok(Ops {
        condition: condition_of(req)?,
        update: match WriteKind::try_from(req.kind) {
            Ok(WriteKind::Update) => Some(update_of(req)?),
            _ => None,
        },
    })
}

fn undecodable(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(format!("undecodable {what}: {e}"))
}

/// An error of the data model (an update on the wrong types, an item too large) as the storage
/// node answers it: invalid, in DynamoDB's words; anything else (a stored item that does not
/// parse) is the node's own failure.
fn model_error(e: ApiError) -> StorageError {
    match e.code {
        ErrorCode::Validation => StorageError::Invalid(e.message),
        _ => StorageError::Unavailable(e.message),
    }
}

/// Stages `req` in `batch` unless its condition fails; answers as the client will see it.
pub fn apply_write(
    store: &Store,
    batch: &mut fjall::OwnedWriteBatch,
    staged: &mut Staged,
    req: &WriteRequest,
    ops: &Ops,
) -> Result<WriteResponse, StorageError> {
    let key = item_key(req.partition_id, &req.key);
    let old = match staged.get(&key) {
        Some(v) => v.clone(),
        None => store
            .items()
            .get(&key)
            .map(|v| v.map(|v| Bytes::copy_from_slice(&v)))
            .unwrap_or_else(|e| fatal("read item", e)),
    };
    if let Err(e) = check_condition(ops.condition.as_ref(), old.as_ref()) {
        if req.return_old_on_failure && matches!(e, StorageError::ConditionFailed) {
            return Ok(WriteResponse {
                condition_failed: true,
                old_write_units: old
                    .as_deref()
                    .map_or(0, |o| tern_model::capacity::write_units_of_json(o) as u32),
                old_item: old,
                ..Default::default()
            });
        }
        return Err(e);
    }
    let mut resp = WriteResponse::default();
    let new = match WriteKind::try_from(req.kind) {
        Ok(WriteKind::Delete) => {
            batch.remove(store.items(), key.clone());
            None
        }
        Ok(WriteKind::Put) => {
            batch.insert(store.items(), key.clone(), req.item.as_ref());
            Some(req.item.clone())
        }
        Ok(WriteKind::Update) => {
            let Some(update) = &ops.update else {
                fatal("apply a write", "an update write without its update")
            };
            let (bytes, size) = updated(req, update, old.as_ref()).map_err(model_error)?;
            resp.item_size = size as u64;
            batch.insert(store.items(), key.clone(), bytes.as_ref());
            if req.return_new {
                resp.new_item = Some(bytes.clone());
            }
            Some(bytes)
        }
        // Markers are the apply thread's (`applier.rs`); one reaching here changes nothing.
        Ok(WriteKind::Checksum) => return Ok(resp),
        // A write this version cannot carry out must not be guessed at: replicas of different
        // versions would diverge.
        Err(_) => fatal("apply a write", format!("unknown write kind {}", req.kind)),
    };
    staged.insert(key, new);
    resp.old_write_units = old
        .as_deref()
        .map_or(0, |o| tern_model::capacity::write_units_of_json(o) as u32);
    if req.return_old {
        resp.old_item = old;
    }
    Ok(resp)
}

/// 400 KB, DynamoDB's largest item.
const MAX_ITEM_SIZE: usize = 400 * 1024;

/// The item an Update leaves (its JSON) and its write cost's size. The same on every replica: it
/// depends only on the request and the item as the log order left it. Any error leaves nothing
/// written.
fn updated(
    req: &WriteRequest,
    update: &tern_model::Update,
    old: Option<&Bytes>,
) -> Result<(Bytes, usize), ApiError> {
    let mut item = match old {
        Some(b) => tern_model::parse_item_json(b)?,
        None => tern_model::parse_item_json(&req.item)?,
    };
    let old_size = old.map_or(0, |_| tern_model::item_size(&item));
    update.apply(&mut item)?;
    let size = tern_model::item_size(&item);
    if size > MAX_ITEM_SIZE {
        return Err(ApiError::validation(
            "Item size to update has exceeded the maximum allowed size",
        ));
    }
    Ok((
        Bytes::from(tern_model::item_to_json(&item)),
        size.max(old_size),
    ))
}

fn check_condition(condition: Option<&Condition>, old: Option<&Bytes>) -> Result<(), StorageError> {
    let Some(condition) = condition else {
        return Ok(());
    };
    let old_item = old
        .map(|b| tern_model::parse_item_json(b))
        .transpose()
        .map_err(model_error)?;
    if condition.evaluate(old_item.as_ref()) {
        Ok(())
    } else {
        Err(StorageError::ConditionFailed)
    }
}

/// A store that failed a read, a write or a sync must not take more writes: what it acknowledged
/// next could be lost. Crash, and recover from the journal on restart.
pub fn fatal(what: &str, e: impl std::fmt::Display) -> ! {
    tracing::error!(error = %e, "{what} failed; stopping the node to recover from its journal");
    std::process::exit(70)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> std::collections::HashMap<String, tern_model::AttributeValue> {
        [(":v".to_string(), tern_model::AttributeValue::S("x".into()))].into()
    }

    /// Both forms read: entries written before the protobuf form carry serde JSON.
    #[test]
    fn conditions_and_updates_decode_in_both_forms() {
        let (update, condition) = tern_model::parse_update(
            Some("SET a = :v"),
            Some("attribute_not_exists(a) OR a <> :v"),
            None,
            Some(&values()),
        )
        .unwrap();
        let (update, condition) = (update.unwrap(), condition.unwrap());
        let proto = WriteRequest {
            kind: WriteKind::Update as i32,
            condition_expr: Some(tern_proto::expr::encode_condition(&condition)),
            update_expr: Some(tern_proto::expr::encode_update(&update)),
            ..Default::default()
        };
        let json = WriteRequest {
            kind: WriteKind::Update as i32,
            condition: serde_json::to_vec(&condition).unwrap(),
            update: serde_json::to_vec(&update).unwrap(),
            ..Default::default()
        };
        for req in [proto, json] {
            let ops = ops_of(&req).unwrap();
            assert_eq!(ops.condition.as_ref(), Some(&condition));
            assert_eq!(ops.update.as_ref(), Some(&update));
        }
        let unconditional = ops_of(&WriteRequest::default()).unwrap();
        assert!(unconditional.condition.is_none() && unconditional.update.is_none());
        let broken = WriteRequest {
            condition_expr: Some(tern_proto::expr::ConditionProgram::default()),
            ..Default::default()
        };
        assert!(matches!(
            ops_of(&broken).unwrap_err(),
            StorageError::Unavailable(m) if m.contains("undecodable condition")
        ));
    }

    /// Two writes of one apply batch: the second's condition sees the first (staged, not yet
    /// committed), as it would had they been applied one batch each.
    #[test]
    fn conditions_in_a_batch_see_the_writes_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let condition =
            tern_model::parse_condition("attribute_not_exists(pk)", None, None).unwrap();
        let put = |value: &str| WriteRequest {
            partition_id: 1,
            key: b"k".to_vec(),
            kind: WriteKind::Put as i32,
            item: Bytes::from(format!(r#"{{"pk":{{"S":"{value}"}}}}"#)),
            condition_expr: Some(tern_proto::expr::encode_condition(&condition)),
            ..Default::default()
        };
        let mut batch = store.batch();
        let mut staged = Staged::new();
        let (first, second) = (put("first"), put("second"));
        let r1 = apply_write(
            &store,
            &mut batch,
            &mut staged,
            &first,
            &ops_of(&first).unwrap(),
        );
        let r2 = apply_write(
            &store,
            &mut batch,
            &mut staged,
            &second,
            &ops_of(&second).unwrap(),
        );
        assert!(r1.is_ok());
        assert!(matches!(r2.unwrap_err(), StorageError::ConditionFailed));
        batch.commit().unwrap();
        let stored = store.get(1, b"k").unwrap().unwrap();
        assert!(String::from_utf8_lossy(&stored).contains("first"));
    }
}
