//! The bus API of a storage node.

use std::sync::Arc;

use tern_bus::{Bus, BusError};
use tern_proto::archive::{ArchiveMark, ArchiveReadRequest, ChecksumRequest};
use tern_proto::storage::{
    CreatePartitionRequest, DropPartitionRequest, GetRequest, GetResponse, RebuildRequest,
    ScanRequest, ScanResponse, SnapshotChunkRequest, WriteRequest, WriteResponse,
};
use tern_proto::{subjects, Empty};

use tern_model::capacity::{read_units_of_json, write_units_of_json, ReadKind};
use tern_proto::storage::WriteKind;

use crate::capacity::{Capacity, Kind};
use crate::partitions::Partitions;
use crate::replication::Replication;
use crate::store::{item_key, Store};
use crate::writer::Writer;

#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    store: Store,
    partitions: Partitions,
    writer: Writer,
    replication: Replication,
    capacity: Arc<Capacity>,
}

impl Node {
    pub fn new(
        id: String,
        store: Store,
        partitions: Partitions,
        writer: Writer,
        replication: Replication,
        capacity: Arc<Capacity>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                store,
                partitions,
                writer,
                replication,
                capacity,
            }),
        }
    }

    /// Admits a request on the partition's and the node's buckets.
    fn admit(&self, partition_id: u64, kind: Kind, rate: f64) -> Result<(), BusError> {
        let partitions = &self.inner.partitions;
        self.inner.capacity.admit(partition_id, kind, rate, || {
            partitions.range(partition_id).unwrap_or((0, u64::MAX))
        })
    }

    pub fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    pub fn partition_ids(&self) -> Vec<u64> {
        self.inner
            .partitions
            .all()
            .iter()
            .filter_map(|p| p.partition.as_ref().map(|i| i.id))
            .collect()
    }

    /// Whether this node's replica of the partition holds items (not a log replica).
    pub fn has_items(&self, partition_id: u64) -> bool {
        self.inner.replication.has_items(partition_id)
    }

    /// Items of the partition on this node and their stored bytes.
    pub fn count_items(&self, partition_id: u64) -> fjall::Result<(u64, u64)> {
        let (mut items, mut bytes) = (0u64, 0u64);
        for kv in self.inner.store.items().prefix(partition_id.to_be_bytes()) {
            let (_, v) = kv.into_inner()?;
            items += 1;
            bytes += v.len() as u64;
        }
        Ok((items, bytes))
    }

    pub fn replica_count(&self) -> usize {
        self.inner.partitions.len()
    }

    pub async fn serve(&self, bus: &Bus) -> Result<(), BusError> {
        let id = &self.inner.id;
        let n = self.clone();
        bus.serve(
            &subjects::storage_write(id),
            None,
            move |req: WriteRequest| {
                let n = n.clone();
                async move { n.write(req).await }
            },
        )
        .await?;
        let n = self.clone();
        bus.serve(&subjects::storage_get(id), None, move |req: GetRequest| {
            let n = n.clone();
            async move { n.get(req).await }
        })
        .await?;
        let n = self.clone();
        bus.serve(
            &subjects::storage_scan(id),
            None,
            move |req: ScanRequest| {
                let n = n.clone();
                async move { n.scan(req).await }
            },
        )
        .await?;
        let n = self.clone();
        bus.serve(
            &subjects::storage_create_partition(id),
            None,
            move |req: CreatePartitionRequest| {
                let n = n.clone();
                async move {
                    let r = n.inner.replication.clone();
                    n.admin(move |p| {
                        r.open_group(&req)?;
                        p.create(req)
                    })
                    .await
                }
            },
        )
        .await?;
        let n = self.clone();
        bus.serve(
            &subjects::storage_drop_partition(id),
            None,
            move |req: DropPartitionRequest| {
                let n = n.clone();
                async move {
                    let r = n.inner.replication.clone();
                    n.admin(move |p| {
                        r.close_group(req.partition_id)?;
                        p.drop(req.partition_id)
                    })
                    .await
                }
            },
        )
        .await?;
        let r = &self.inner.replication;
        let r2 = r.clone();
        bus.serve(
            &subjects::storage_rebuild(id),
            None,
            move |req: RebuildRequest| {
                let r = r2.clone();
                async move { r.rebuild(req).await }
            },
        )
        .await?;
        let r2 = r.clone();
        bus.serve(
            &subjects::storage_archive_read(id),
            None,
            move |req: ArchiveReadRequest| {
                let r = r2.clone();
                async move {
                    tokio::task::spawn_blocking(move || r.archive_read(req))
                        .await
                        .map_err(|e| internal(e.to_string()))?
                }
            },
        )
        .await?;
        let r2 = r.clone();
        bus.serve(
            &subjects::storage_archive_mark(id),
            None,
            move |req: ArchiveMark| {
                let r = r2.clone();
                async move { r.archive_mark(req).map(|()| Empty {}) }
            },
        )
        .await?;
        let r2 = r.clone();
        bus.serve(
            &subjects::storage_checksum(id),
            None,
            move |req: ChecksumRequest| {
                let r = r2.clone();
                async move { Ok::<_, BusError>(r.checksum(req)) }
            },
        )
        .await?;
        let r2 = r.clone();
        bus.serve(
            &subjects::storage_snapshot(id),
            None,
            move |req: SnapshotChunkRequest| {
                let r = r2.clone();
                async move {
                    tokio::task::spawn_blocking(move || r.snapshot_chunk(req))
                        .await
                        .map_err(|e| internal(e.to_string()))?
                }
            },
        )
        .await?;
        Ok(())
    }

    async fn write(&self, mut req: WriteRequest) -> Result<WriteResponse, BusError> {
        self.inner
            .partitions
            .check_epoch(req.partition_id, req.epoch)?;
        let (pid, hash) = (req.partition_id, key_hash(&req.key));
        if req.kind == WriteKind::Checksum as i32 {
            // A scrub marker costs the table nothing: it is the archiver's.
            return self.inner.replication.write(req).await;
        }
        if !self.inner.replication.leads(pid) {
            // Not the leader: the write is redirected (or refused) below, never admitted or
            // throttled here.
            req.partition_rate = 0.0;
            return self.inner.replication.write(req).await;
        }
        self.admit(pid, Kind::Write, req.partition_rate)?;
        // The rate is for this node's admission only: the log carries the write without it.
        req.partition_rate = 0.0;
        let new_units = match WriteKind::try_from(req.kind) {
            Ok(WriteKind::Put) => write_units_of_json(&req.item),
            _ => 1.0,
        };
        let result = self.inner.replication.write(req).await;
        let units = match &result {
            Ok(resp) => {
                let updated = if resp.item_size > 0 {
                    tern_model::capacity::write_units(resp.item_size as usize, false)
                } else {
                    0.0
                };
                new_units.max(updated).max(resp.old_write_units as f64)
            }
            // A write whose condition failed is charged too (the least: the node does not
            // answer it with the item's size).
            Err(BusError::Status { code, .. })
                if *code == tern_proto::status::STORAGE_CONDITION_FAILED =>
            {
                1.0
            }
            Err(_) => 0.0,
        };
        self.inner.capacity.consume(pid, Kind::Write, units, hash);
        result
    }

    async fn get(&self, req: GetRequest) -> Result<GetResponse, BusError> {
        let (inner, r) = (&self.inner, &self.inner.replication);
        inner.partitions.check_epoch(req.partition_id, req.epoch)?;
        self.admit(req.partition_id, Kind::Read, req.partition_rate)?;
        // Strong reads wait for the leader's lease and its applied state; eventual reads are
        // served by any replica from what it has applied.
        if req.consistent {
            r.read_barrier(req.partition_id).await?;
        }
        if !r.has_items(req.partition_id) {
            // A log replica (or one being rebuilt) holds no items to read.
            return Err(BusError::Redirect(String::new()));
        }
        let item = inner
            .store
            .get(req.partition_id, &req.key)
            .map_err(internal)?;
        // NOTE: checked after reading, against the clock: a leader that stalled between the
        // barrier and here may have been replaced, and must not answer with what it read.
        if req.consistent && !r.lease_holds(req.partition_id) {
            return Err(BusError::Redirect(String::new()));
        }
        let units = read_units_of_json(
            item.as_deref().unwrap_or_default(),
            ReadKind::consistent(req.consistent),
        );
        inner
            .capacity
            .consume(req.partition_id, Kind::Read, units, key_hash(&req.key));
        Ok(GetResponse { item })
    }

    /// A range read (Query, Scan), by the consistency rules of [`Self::get`].
    async fn scan(&self, req: ScanRequest) -> Result<ScanResponse, BusError> {
        let (inner, r) = (&self.inner, &self.inner.replication);
        inner.partitions.check_epoch(req.partition_id, req.epoch)?;
        self.admit(req.partition_id, Kind::Read, req.partition_rate)?;
        let hash = key_hash(&req.start);
        if req.consistent {
            r.read_barrier(req.partition_id).await?;
        }
        if !r.has_items(req.partition_id) {
            return Err(BusError::Redirect(String::new()));
        }
        let store = inner.store.clone();
        let consistent = req.consistent;
        let pid = req.partition_id;
        // The items' DynamoDB sizes are charged, as the router charges them.
        let (resp, size) = tokio::task::spawn_blocking(move || {
            read_range(&store, &req).map(|resp| {
                let size: usize = resp
                    .items
                    .iter()
                    .map(|i| tern_model::capacity::size_of_json(i))
                    .sum();
                (resp, size)
            })
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        if consistent && !r.lease_holds(pid) {
            return Err(BusError::Redirect(String::new()));
        }
        let units = tern_model::capacity::read_units(size, ReadKind::consistent(consistent));
        inner.capacity.consume(pid, Kind::Read, units, hash);
        Ok(resp)
    }

    async fn admin(
        &self,
        f: impl FnOnce(&Partitions) -> anyhow::Result<()> + Send + 'static,
    ) -> Result<Empty, BusError> {
        let partitions = self.inner.partitions.clone();
        tokio::task::spawn_blocking(move || f(&partitions))
            .await
            .map_err(|e| internal(e.to_string()))?
            .map_err(|e| internal(format!("{e:#}")))?;
        Ok(Empty {})
    }
}

/// The key hash a storage key starts with (0 for an empty or short key: the partition's start).
fn key_hash(key: &[u8]) -> u64 {
    key.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The items of `req`'s range, up to its limit and byte budget.
fn read_range(store: &Store, req: &ScanRequest) -> fjall::Result<ScanResponse> {
    use std::ops::Bound;
    let pid = req.partition_id;
    let prefix = pid.to_be_bytes();
    let lo = if req.start.is_empty() {
        Bound::Included(prefix.to_vec())
    } else if req.start_inclusive {
        Bound::Included(item_key(pid, &req.start))
    } else {
        Bound::Excluded(item_key(pid, &req.start))
    };
    let hi = if !req.end.is_empty() {
        if req.end_inclusive {
            Bound::Included(item_key(pid, &req.end))
        } else {
            Bound::Excluded(item_key(pid, &req.end))
        }
    } else {
        match pid.checked_add(1) {
            Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        }
    };
    let range = store.items().range::<Vec<u8>, _>((lo, hi));
    let mut iter: Box<dyn Iterator<Item = fjall::Guard>> = if req.reverse {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let mut resp = ScanResponse::default();
    let mut bytes = 0usize;
    let limit = if req.limit == 0 {
        usize::MAX
    } else {
        req.limit as usize
    };
    let max_bytes = if req.max_bytes == 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    for kv in iter.by_ref() {
        let (k, v) = kv.into_inner()?;
        if !k.starts_with(&prefix) {
            break;
        }
        bytes += v.len();
        resp.keys.push(k[prefix.len()..].to_vec());
        resp.items.push(v.to_vec());
        if resp.keys.len() >= limit || bytes >= max_bytes {
            resp.more = match iter.next() {
                Some(kv) => kv.key()?.starts_with(&prefix),
                None => false,
            };
            break;
        }
    }
    Ok(resp)
}

fn internal(e: impl std::fmt::Display) -> BusError {
    tracing::error!(error = %e, "storage request failed");
    tern_storage_client::StorageError::Unavailable("internal error".into()).into()
}
