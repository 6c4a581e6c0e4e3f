//! Sending a data request to the storage node serving its partition, following redirects.

use std::sync::Arc;
use std::time::Duration;

use tern_bus::BusError;
use tern_model::{ApiError, ErrorCode};
use tern_proto::memds::{PartitionInfo, TableInfo, TableStatus};
use tern_proto::storage::{
    GetRequest, GetResponse, ScanRequest, ScanResponse, WriteRequest, WriteResponse,
};
use tern_storage_client::StorageError;

use crate::metrics::inc;
use crate::Router;

/// Attempts of one request across redirects (stale routes, moved leaders).
const ATTEMPTS: u32 = 8;

/// The table's routing metadata; a table that is not ACTIVE does not exist for data requests.
pub async fn active_table(r: &Router, name: &str, fresh: bool) -> Result<Arc<TableInfo>, ApiError> {
    let t = if fresh {
        r.cache.lookup(name).await?
    } else {
        r.cache.get(name).await?
    };
    if t.status() != TableStatus::Active {
        return Err(ApiError::new(
            ErrorCode::ResourceNotFound,
            "Requested resource not found",
        ));
    }
    Ok(t)
}

fn serving_node(p: &PartitionInfo) -> Result<&str, ApiError> {
    if !p.leader.is_empty() {
        return Ok(&p.leader);
    }
    p.replicas
        .iter()
        .find(|r| !r.log)
        .map(|r| r.node_id.as_str())
        .ok_or_else(|| ApiError::new(ErrorCode::InternalServerError, "partition has no replicas"))
}

fn partition(t: &TableInfo, hash: u64) -> Result<&PartitionInfo, ApiError> {
    t.partition_for(hash)
        .ok_or_else(|| ApiError::new(ErrorCode::InternalServerError, "no partition owns the key"))
}

/// Whether an attempt may be repeated elsewhere.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotent {
    Yes,
    No,
}

/// Retries `call` on a redirect (or when nothing listens on the node) with fresh metadata.
/// `t` is the table as the request found it; retries look it up afresh. A node that times out or
/// fails (a stalled or cut-off leader) is not tried first again: the next request, or for a
/// read the next attempt, goes to the following replica, which redirects to the real leader.
async fn with_redirects<T, F, Fut>(
    r: &Router,
    t: Arc<TableInfo>,
    hash: u64,
    idempotent: Idempotent,
    mut call: F,
) -> Result<T, ApiError>
where
    F: FnMut(String, &PartitionInfo) -> Fut,
    Fut: std::future::Future<Output = Result<T, StorageError>>,
{
    let mut last = None;
    let table = t.name.clone();
    let mut t = t;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            t = active_table(r, &table, true).await?;
        }
        let p = partition(&t, hash)?;
        let node = match r.leaders.target(p) {
            Some(hint) => hint,
            None => serving_node(p)?,
        }
        .to_string();
        match call(node.clone(), p).await {
            Ok(v) => return Ok(v),
            Err(e @ StorageError::Bus(BusError::Redirect(_) | BusError::NoResponders(_))) => {
                inc(&r.metrics.storage_redirects);
                r.leaders.learn(p, &node, &e);
                tracing::debug!(%table, attempt, error = %e, "retrying with fresh routing metadata");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis((20u64 << attempt).min(250))).await;
            }
            Err(e) if unanswered(&e) => {
                r.leaders.learn(p, &node, &e);
                tracing::debug!(%table, %node, attempt, error = %e, "storage node did not answer");
                if idempotent == Idempotent::No {
                    return Err(api_error(e));
                }
                last = Some(e);
            }
            Err(e) => return Err(api_error(e)),
        }
    }
    Err(last
        .map(api_error)
        .unwrap_or_else(|| ApiError::new(ErrorCode::InternalServerError, "Internal server error")))
}

/// What a DynamoDB client is told when a storage node did not carry out its request.
fn api_error(e: StorageError) -> ApiError {
    match e {
        StorageError::ConditionFailed => ApiError::new(
            ErrorCode::ConditionalCheckFailed,
            "The conditional request failed",
        ),
        // The SDKs retry a ThrottlingException with backoff.
        StorageError::Busy(m) => ApiError::new(ErrorCode::ThrottlingException, m),
        StorageError::Invalid(m) => ApiError::validation(m),
        StorageError::Unavailable(m) => ApiError::new(ErrorCode::InternalServerError, m),
        StorageError::Bus(b) => b.into_api(),
    }
}

/// A storage node's ProvisionedThroughputExceededException (its partition or node bucket).
fn is_throttle(e: &StorageError) -> bool {
    matches!(e, StorageError::Bus(BusError::Api(a)) if a.code == ErrorCode::ProvisionedThroughputExceeded)
}

/// A timeout, a transport failure or a node that could not carry out the request: it may be
/// stalled or deposed.
fn unanswered(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::Bus(BusError::Transport(_) | BusError::Timeout { .. })
            | StorageError::Unavailable(_)
    )
}

/// The rate a partition of a PROVISIONED table may take on its storage node: the table's whole
/// rate (keys are rarely spread evenly over partitions; holding the table's total is the
/// routers' job, with GAC), so the node's bucket is the second line: it stops what gets past the
/// routers. 0 for an on-demand table: no bucket of its own.
fn partition_rate(t: &TableInfo, write: bool) -> f64 {
    if t.billing_mode == "PAY_PER_REQUEST" {
        return 0.0;
    }
    (if write {
        t.write_capacity
    } else {
        t.read_capacity
    }) as f64
}

pub async fn write(
    r: &Router,
    t: Arc<TableInfo>,
    hash: u64,
    mut req: WriteRequest,
) -> Result<WriteResponse, ApiError> {
    req.partition_rate = partition_rate(&t, true);
    with_redirects(r, t, hash, Idempotent::No, |node, p| {
        let mut req = req.clone();
        req.partition_id = p.id;
        req.epoch = p.epoch;
        let storage = r.storage.clone();
        async move { storage.write(&node, &req).await }
    })
    .await
}

pub async fn get(
    r: &Router,
    t: Arc<TableInfo>,
    hash: u64,
    mut req: GetRequest,
) -> Result<GetResponse, ApiError> {
    req.partition_rate = partition_rate(&t, false);
    // An eventually consistent read goes to the replica in this router's zone first: any replica
    // may answer it, and staying in the zone is what keeps its latency and cost low.
    if !req.consistent {
        if let Some((node, partition_id, epoch)) = in_zone(r, &t, hash) {
            let local = GetRequest {
                partition_id,
                epoch,
                ..req.clone()
            };
            match r.storage.get(&node, &local).await {
                Ok(resp) => return Ok(resp),
                // The replica's bucket refused it: that is the answer, not a reason to try
                // another replica's bucket.
                Err(e) if is_throttle(&e) => return Err(api_error(e)),
                Err(_) => {}
            }
        }
    }
    with_redirects(r, t, hash, Idempotent::Yes, |node, p| {
        let mut req = req.clone();
        req.partition_id = p.id;
        req.epoch = p.epoch;
        let storage = r.storage.clone();
        async move { storage.get(&node, &req).await }
    })
    .await
}

/// A range read of the partition holding `hash`, by the rules of [`get`].
pub async fn scan(
    r: &Router,
    t: Arc<TableInfo>,
    hash: u64,
    mut req: ScanRequest,
) -> Result<ScanResponse, ApiError> {
    req.partition_rate = partition_rate(&t, false);
    if !req.consistent {
        if let Some((node, partition_id, epoch)) = in_zone(r, &t, hash) {
            let local = ScanRequest {
                partition_id,
                epoch,
                ..req.clone()
            };
            match r.storage.scan(&node, &local).await {
                Ok(resp) => return Ok(resp),
                // The replica's bucket refused it: that is the answer, not a reason to try
                // another replica's bucket.
                Err(e) if is_throttle(&e) => return Err(api_error(e)),
                Err(_) => {}
            }
        }
    }
    with_redirects(r, t, hash, Idempotent::Yes, |node, p| {
        let mut req = req.clone();
        req.partition_id = p.id;
        req.epoch = p.epoch;
        let storage = r.storage.clone();
        async move { storage.scan(&node, &req).await }
    })
    .await
}

/// The full replica in the router's zone of the partition holding `hash`, for an eventually
/// consistent read's first attempt: (node, partition id, epoch).
fn in_zone(r: &Router, t: &TableInfo, hash: u64) -> Option<(String, u64, u64)> {
    let p = t.partition_for(hash)?;
    let local = p.replicas.iter().find(|rep| rep.az == r.az && !rep.log)?;
    Some((local.node_id.clone(), p.id, p.epoch))
}
