//! Point-in-time restore: a new table holding a table's items as they were at a moment, rebuilt
//! from the archive (the newest snapshot the log continues from, then the archived log up to the
//! last write the leader took at or before that moment) and written into the new table's
//! partitions. The new table stays CREATING until every item is in; its metadata names what it
//! restores, so an archiver that restarts carries an unfinished restore on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use prost::Message as _;
use tern_bus::BusError;
use tern_memds_client::MemdsClient;
use tern_model::{ApiError, ErrorCode};
use tern_proto::archive::{ArchiveReadRequest, ArchiveSegment, RestoreRequest};
use tern_proto::memds::{
    AlterTableRequest, CreateTableRequest, RestoreSource, TableInfo, TableReply, TableStatus,
};
use tern_proto::raft::{EntryKind, RaftEntry};
use tern_proto::storage::{ReplicatedWrite, WriteKind, WriteRequest};
use tern_storage::reference::Reference;
use tern_storage_client::StorageError;

use crate::partition::Ctx;

/// Items written into the new table at once.
const WRITERS: usize = 16;
/// Items read from the rebuilt partition per page.
const PAGE: usize = 256;

/// Starts a restore: creates the target table (CREATING, naming its source and moment) and the
/// job that fills it. Answers at once with the new table.
pub async fn start(memds: MemdsClient, req: RestoreRequest) -> Result<TableReply, ApiError> {
    let source = describe_source(&memds, &req.source_table).await?;
    let table = source
        .table
        .ok_or_else(|| ApiError::new(ErrorCode::InternalServerError, "source table missing"))?;
    create_target(&memds, &table, &req.target_table, req.time_ms, "").await
}

/// A table backups and restores start from: TableNotFoundException (their "not found") if none.
pub(crate) async fn describe_source(
    memds: &MemdsClient,
    name: &str,
) -> Result<TableReply, ApiError> {
    memds.describe_table(name).await.map_err(|e| match e {
        BusError::Api(a) if a.code == ErrorCode::ResourceNotFound => {
            ApiError::new(ErrorCode::TableNotFound, format!("Table not found: {name}"))
        }
        other => other.into_api(),
    })
}

/// Creates the table a restore fills: `source`'s schema and capacity, its partitions and the
/// moment in its metadata.
pub async fn create_target(
    memds: &MemdsClient,
    source: &TableInfo,
    target_table: &str,
    time_ms: u64,
    backup_arn: &str,
) -> Result<TableReply, ApiError> {
    let req = RestoreRequest {
        source_table: source.name.clone(),
        target_table: target_table.to_string(),
        time_ms,
    };
    let target = TableInfo {
        name: req.target_table.clone(),
        key_schema: source.key_schema.clone(),
        attribute_definitions: source.attribute_definitions.clone(),
        billing_mode: source.billing_mode.clone(),
        read_capacity: source.read_capacity,
        write_capacity: source.write_capacity,
        restore: Some(RestoreSource {
            source_name: source.name.clone(),
            source_table_id: source.table_id.clone(),
            time_ms: req.time_ms,
            partitions: source.partitions.clone(),
            backup_arn: backup_arn.to_string(),
        }),
        ..Default::default()
    };
    let reply = memds
        .create_table(&CreateTableRequest {
            table: Some(target),
        })
        .await
        .map_err(|e| match e {
            BusError::Api(a) if a.code == ErrorCode::ResourceInUse => ApiError::new(
                ErrorCode::TableAlreadyExists,
                format!("Table already exists: {}", req.target_table),
            ),
            other => other.into_api(),
        })?;
    // NOTE: the discovery loop starts the job (within `discover_ms`), as it does for a restore it
    // finds unfinished after a restart: one job per table, whoever started it.
    tracing::info!(source = %req.source_table, target = %req.target_table, time_ms = req.time_ms, "restore to a point in time started");
    Ok(reply)
}

/// Carries a restore out, retrying until it is done (or the target table is gone).
pub async fn run_until_done(ctx: Arc<Ctx>, memds: MemdsClient, target: String) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match run(&ctx, &memds, &target).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(table = %target, error = %format!("{e:#}"), "restore round failed; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// One try at the whole restore; true once the table is ACTIVE (or gone).
async fn run(ctx: &Ctx, memds: &MemdsClient, target: &str) -> anyhow::Result<bool> {
    let table = match memds.describe_table(target).await {
        Ok(TableReply { table: Some(t), .. }) => t,
        Err(BusError::Api(a)) if a.code == ErrorCode::ResourceNotFound => return Ok(true),
        Ok(_) => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    let Some(restore) = table.restore.clone() else {
        return Ok(true);
    };
    if table.status() != TableStatus::Creating || table.partitions.is_empty() {
        return Ok(table.status() != TableStatus::Creating);
    }
    let started = Instant::now();
    let dir = tempdir_for(ctx, &table.table_id);
    let reference = Reference::open(&dir)?;
    let mut items = 0u64;
    for source in &restore.partitions {
        wait_archived(ctx, source).await?;
        rebuild_at(ctx, &reference, source.id, restore.time_ms).await?;
        items += copy_items(ctx, &reference, source.id, &table).await?;
        let r = reference.clone();
        let pid = source.id;
        tokio::task::spawn_blocking(move || r.remove(pid)).await??;
    }
    memds
        .alter_table(&AlterTableRequest {
            table_name: target.to_string(),
            finish_restore: true,
            ..Default::default()
        })
        .await?;
    drop(reference);
    let _ = std::fs::remove_dir_all(&dir);
    tracing::info!(table = %target, source = %restore.source_name, items, secs = started.elapsed().as_secs_f64(), "restore to a point in time done");
    Ok(true)
}

fn tempdir_for(ctx: &Ctx, table_id: &str) -> std::path::PathBuf {
    ctx.restore_dir.join(table_id)
}

/// Waits until the archive holds everything the source partition had committed by now (so every
/// write before the restore's moment is in it). A source whose replicas no longer answer (the
/// table deleted) is restored from what the archive has.
pub(crate) async fn wait_archived(
    ctx: &Ctx,
    p: &tern_proto::memds::PartitionInfo,
) -> anyhow::Result<()> {
    let mut held = None;
    for r in &p.replicas {
        let req = ArchiveReadRequest {
            partition_id: p.id,
            from: u64::MAX,
            max_bytes: 1,
            max_entries: 1,
        };
        if let Ok(resp) = ctx.storage.archive_read(&r.node_id, &req).await {
            held = Some(held.unwrap_or(0).max(resp.held));
        }
    }
    let Some(held) = held else { return Ok(()) };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let end = archived_end(ctx, p.id).await?;
        if end >= held {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "partition {}: archive at {end}, committed {held}",
            p.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last log index the partition's archive holds.
async fn archived_end(ctx: &Ctx, pid: u64) -> anyhow::Result<u64> {
    let mut end = ctx
        .archive
        .snapshots(pid)
        .await?
        .last()
        .copied()
        .unwrap_or(0);
    if let Some(first) = ctx.archive.segments(pid).await?.last() {
        let seg: ArchiveSegment = ctx.archive.read(&ctx.archive.segment(pid, *first)).await?;
        end = end.max(seg.last);
    }
    Ok(end)
}

/// The leader's clock on an entry (0: an entry that is no write, which goes with what is
/// around it).
fn entry_time(bytes: &[u8]) -> anyhow::Result<u64> {
    let e = RaftEntry::decode(bytes).context("decode an archived entry")?;
    if e.kind != EntryKind::Command as i32 {
        return Ok(0);
    }
    Ok(ReplicatedWrite::decode(e.data.as_slice())
        .context("decode an archived write")?
        .time_ms)
}

/// Rebuilds the partition's items in `reference` as they were after the last write taken at or
/// before `time_ms`: from the newest snapshot the archived log continues from (or from nothing),
/// then the archived log up to the first write after the moment.
async fn rebuild_at(
    ctx: &Ctx,
    reference: &Reference,
    pid: u64,
    time_ms: u64,
) -> anyhow::Result<()> {
    // The newest snapshot whose writes all came at or before the moment (a snapshot that only
    // bridged a gap names no clock, and is used only to cross its gap).
    let snapshots = ctx.archive.snapshots(pid).await?;
    let mut at = 0;
    for s in snapshots.iter().rev() {
        let m: tern_proto::archive::SnapshotManifest = ctx
            .archive
            .read(&ctx.archive.snapshot_manifest(pid, *s))
            .await?;
        if m.time_ms > 0 && m.time_ms <= time_ms {
            at = *s;
            break;
        }
    }
    if at > 0 {
        load_snapshot(ctx, reference, pid, at).await?;
        ctx.metrics.restore_snapshots.inc();
    } else {
        let r = reference.clone();
        tokio::task::spawn_blocking(move || r.reset(pid, 0)).await??;
    }
    let mut stopped = false;
    let segments = ctx.archive.segments(pid).await?;
    for (i, first) in segments.iter().copied().enumerate() {
        // Segments wholly before the starting snapshot are not read.
        if segments.get(i + 1).is_some_and(|next| next - 1 <= at) {
            continue;
        }
        let seg: ArchiveSegment = ctx.archive.read(&ctx.archive.segment(pid, first)).await?;
        if seg.first > at + 1 {
            // A gap in the log, bridged by a snapshot of the items right before this segment.
            // NOTE: a moment inside the gap restores to the gap's start.
            load_snapshot(ctx, reference, pid, seg.first - 1).await?;
        }
        let upto = seg
            .entries
            .iter()
            .map(|b| entry_time(b))
            .position(|t| t.map_or(true, |t| t > time_ms))
            .unwrap_or(seg.entries.len());
        let entries = seg.entries[..upto].to_vec();
        let r = reference.clone();
        tokio::task::spawn_blocking(move || r.apply(pid, &entries)).await??;
        if upto < seg.entries.len() {
            stopped = true;
            break;
        }
        at = seg.last;
    }
    // An archive that ends with a snapshot (a gap bridged, nothing written since).
    let last_snapshot = ctx.archive.snapshots(pid).await?.last().copied();
    if let Some(s) = last_snapshot.filter(|s| !stopped && *s > at) {
        load_snapshot(ctx, reference, pid, s).await?;
    }
    Ok(())
}

async fn load_snapshot(ctx: &Ctx, reference: &Reference, pid: u64, s: u64) -> anyhow::Result<()> {
    let manifest: tern_proto::archive::SnapshotManifest = ctx
        .archive
        .read(&ctx.archive.snapshot_manifest(pid, s))
        .await
        .with_context(|| {
            format!(
                "partition {pid}: the archive has a gap before {} and no snapshot",
                s + 1
            )
        })?;
    let r = reference.clone();
    tokio::task::spawn_blocking(move || r.reset(pid, s)).await??;
    for n in 0..manifest.parts {
        let part: tern_proto::archive::SnapshotPart = ctx
            .archive
            .read(&ctx.archive.snapshot_part(pid, s, n))
            .await?;
        let r = reference.clone();
        tokio::task::spawn_blocking(move || r.insert_items(pid, &part.keys, &part.values))
            .await??;
    }
    Ok(())
}

/// Writes every rebuilt item of source partition `pid` into the target table's partition that
/// owns its key's hash (the first 8 bytes of a storage key). A write is a plain put, so a restore
/// tried again writes the same items again.
async fn copy_items(
    ctx: &Ctx,
    reference: &Reference,
    pid: u64,
    target: &TableInfo,
) -> anyhow::Result<u64> {
    let mut after = Vec::new();
    let mut copied = 0u64;
    loop {
        let r = reference.clone();
        let from = after.clone();
        let page = tokio::task::spawn_blocking(move || r.items(pid, &from, PAGE)).await??;
        let Some((last, _)) = page.last() else {
            return Ok(copied);
        };
        after = last.clone();
        let n = page.len() as u64;
        futures::stream::iter(
            page.into_iter()
                .map(|(key, item)| put(ctx, target, key, item)),
        )
        .buffer_unordered(WRITERS)
        .try_collect::<Vec<()>>()
        .await?;
        copied += n;
    }
}

/// One put into the target table, following redirects to its partition's leader.
async fn put(ctx: &Ctx, target: &TableInfo, key: Vec<u8>, item: Vec<u8>) -> anyhow::Result<()> {
    let hash = u64::from_be_bytes(key.get(..8).context("short storage key")?.try_into()?);
    let p = target
        .partition_for(hash)
        .context("no partition of the target owns the key")?;
    let req = WriteRequest {
        partition_id: p.id,
        epoch: p.epoch,
        key,
        kind: WriteKind::Put as i32,
        item: item.into(),
        ..Default::default()
    };
    let mut nodes: Vec<String> = p.replicas.iter().map(|r| r.node_id.clone()).collect();
    nodes.sort_by_key(|n| *n != p.leader);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    loop {
        let node = nodes[i % nodes.len()].clone();
        match ctx.storage.write(&node, &req).await {
            Ok(_) => return Ok(()),
            Err(StorageError::Bus(BusError::Redirect(leader))) if !leader.is_empty() => {
                if let Some(j) = nodes.iter().position(|n| *n == leader) {
                    i = j;
                    continue;
                }
                i += 1;
            }
            Err(e) if Instant::now() >= deadline => anyhow::bail!("restore write: {e:?}"),
            Err(_) => {
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
