//! One partition's archiving: shipping its committed log to the archive as sealed segments,
//! keeping its reference replica at the archive's end, and scrubbing its replicas against each
//! other and against the reference.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use prost::Message as _;
use tern_bus::BusError;
use tern_proto::archive::{
    seal, ArchiveMark, ArchiveReadRequest, ArchiveSegment, ChecksumRequest, ChecksumState,
    ItemsChecksum, SnapshotManifest, SnapshotPart,
};
use tern_proto::memds::PartitionInfo;
use tern_proto::raft::{EntryKind, RaftEntry};
use tern_proto::storage::{
    RebuildRequest, ReplicatedWrite, SnapshotChunkRequest, WriteKind, WriteRequest,
};
use tern_storage::reference::Reference;
use tern_storage_client::{StorageClient, StorageError};

use crate::metrics::{ArchiverMetrics, PartitionLabels, ReplicaLabels, ResultLabels};
use crate::objects::{Archive, Put};
use crate::scrub::{judge, Verdict};

/// Reference checksums kept per partition, by marker index.
const KEPT_MARKS: usize = 16;
/// Items of an archived snapshot per part object.
const PART_BYTES: usize = 4 * 1024 * 1024;

/// What every partition task shares.
pub struct Ctx {
    pub archive: Archive,
    pub reference: Reference,
    pub storage: StorageClient,
    pub metrics: Arc<ArchiverMetrics>,
    pub segment_bytes: usize,
    pub segment_age: Duration,
    pub poll: Duration,
    pub idle_poll: Duration,
    pub snapshot_bytes: u64,
    pub scrub_every: Duration,
    pub repair: bool,
    /// Judge replicas against the reference too (else against each other only).
    pub scrub_reference: bool,
    /// Where restores rebuild partitions (one fjall database per restore, removed after).
    pub restore_dir: std::path::PathBuf,
}

/// One partition, as the discovery loop last saw it, and what its tasks tell each other.
pub struct Partition {
    pub table: String,
    pub pid: u64,
    pub info: Mutex<PartitionInfo>,
    pub stopped: AtomicBool,
    /// The archive holds the log up to here.
    pub archived: AtomicU64,
    /// The reference replica's checksum at each recent marker.
    marks: Mutex<BTreeMap<u64, ItemsChecksum>>,
}

impl Partition {
    pub fn new(table: String, info: PartitionInfo) -> Arc<Self> {
        Arc::new(Self {
            table,
            pid: info.id,
            info: Mutex::new(info),
            stopped: AtomicBool::new(false),
            archived: AtomicU64::new(0),
            marks: Mutex::default(),
        })
    }

    fn labels(&self) -> PartitionLabels {
        PartitionLabels {
            table: self.table.clone(),
            partition: self.pid.to_string(),
        }
    }

    /// Nodes to read the log from: the leader first, then the other replicas.
    fn sources(&self) -> Vec<String> {
        let info = self.info.lock();
        let mut nodes: Vec<String> = info.replicas.iter().map(|r| r.node_id.clone()).collect();
        nodes.sort_by_key(|n| *n != info.leader);
        nodes
    }

    /// Nodes of the replicas that hold items.
    fn full_replicas(&self) -> Vec<String> {
        let info = self.info.lock();
        let mut nodes: Vec<String> = info
            .replicas
            .iter()
            .filter(|r| !r.log)
            .map(|r| r.node_id.clone())
            .collect();
        nodes.sort_by_key(|n| *n != info.leader);
        nodes
    }

    fn note_marks(&self, marks: &[(u64, ItemsChecksum)]) {
        let mut m = self.marks.lock();
        for (i, c) in marks {
            m.insert(*i, *c);
        }
        while m.len() > KEPT_MARKS {
            m.pop_first();
        }
    }
}

/// Entries read from the replicas, not yet sealed.
#[derive(Default)]
struct Pending {
    entries: Vec<Vec<u8>>,
    bytes: usize,
    since: Option<Instant>,
    first_time_ms: u64,
    last_time_ms: u64,
}

/// The leader's clock on a write entry, if it carries one.
fn write_time(e: &RaftEntry) -> u64 {
    if e.kind != EntryKind::Command as i32 {
        return 0;
    }
    ReplicatedWrite::decode(e.data.as_slice()).map_or(0, |w| w.time_ms)
}

struct Shipper {
    ctx: Arc<Ctx>,
    part: Arc<Partition>,
    /// The first index the archive does not hold.
    next: u64,
    pending: Pending,
    /// The source's committed index, as last heard.
    held: u64,
    last_mark: Option<Instant>,
    /// The archived index the replicas were last told.
    marked: u64,
    /// Rounds in a row that found nothing new.
    idle_rounds: u32,
    /// Bytes of log archived since the last archived snapshot (counted from this task's start).
    since_snapshot: u64,
    /// Bytes of items the last archived snapshot held.
    snapshot_size: u64,
    /// The greatest leader clock on the writes the archive holds (as far as this task knows:
    /// from the newest snapshot and segment at its start, and what it archived since).
    time_high: u64,
}

/// The replicas are told the archive's reach again this often even without progress (a
/// restarted replica forgot it and keeps its whole log until told).
const MARK_AGAIN: Duration = Duration::from_secs(30);

/// Ships the partition's log until the partition goes away.
pub async fn ship_forever(ctx: Arc<Ctx>, part: Arc<Partition>) {
    let mut backoff = Duration::from_millis(100);
    let mut shipper = loop {
        if part.stopped.load(Ordering::Acquire) {
            return;
        }
        match Shipper::start(ctx.clone(), part.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                ctx.metrics.upload_failures.inc();
                tracing::warn!(partition = part.pid, error = %format!("{e:#}"), "start archiving a partition");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    backoff = Duration::from_millis(100);
    while !part.stopped.load(Ordering::Acquire) {
        match shipper.round().await {
            Ok(more) => {
                backoff = Duration::from_millis(100);
                if !more {
                    tokio::time::sleep(shipper.pause()).await;
                }
            }
            Err(e) => {
                ctx.metrics.upload_failures.inc();
                tracing::warn!(partition = part.pid, next = shipper.next, error = %format!("{e:#}"), "archiving round failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        shipper.report();
    }
}

impl Shipper {
    /// Finds where the archive of the partition ends, and brings the reference there.
    async fn start(ctx: Arc<Ctx>, part: Arc<Partition>) -> anyhow::Result<Self> {
        let pid = part.pid;
        let segments = ctx.archive.segments(pid).await?;
        let snapshots = ctx.archive.snapshots(pid).await?;
        let (mut next, mut time_high, mut snapshot_size) = (1, 0, 0);
        if let Some(last) = segments.last() {
            let seg: ArchiveSegment = ctx.archive.read(&ctx.archive.segment(pid, *last)).await?;
            next = seg.last + 1;
            time_high = seg.last_time_ms;
        }
        if let Some(s) = snapshots.last() {
            next = next.max(s + 1);
            let m: SnapshotManifest = ctx
                .archive
                .read(&ctx.archive.snapshot_manifest(pid, *s))
                .await?;
            time_high = time_high.max(m.time_ms);
            snapshot_size = m.checksum.map_or(0, |c| c.bytes);
        }
        let me = Self {
            ctx,
            part,
            next,
            pending: Pending::default(),
            held: 0,
            last_mark: None,
            marked: 0,
            idle_rounds: 0,
            since_snapshot: 0,
            snapshot_size,
            time_high,
        };
        me.part.archived.store(next - 1, Ordering::Release);
        me.catch_up_reference(&segments, &snapshots).await?;
        tracing::info!(partition = pid, next, "archiving partition");
        Ok(me)
    }

    /// Rebuilds the reference replica from the archive alone, from where it stands (or from the
    /// newest snapshot, or from nothing) to the archive's end.
    async fn catch_up_reference(&self, segments: &[u64], snapshots: &[u64]) -> anyhow::Result<()> {
        let pid = self.part.pid;
        let end = self.next - 1;
        let mut at = self.ctx.reference.applied(pid)?;
        let covered = |i: u64| i > end || segments.first().is_some_and(|f| *f <= i);
        if at > end || !covered(at + 1) {
            // Start over from the newest snapshot (or from nothing, if the log starts at 1).
            let base = snapshots.iter().copied().rfind(|s| *s <= end).unwrap_or(0);
            at = self.load_snapshot(base).await?;
        }
        for (i, first) in segments.iter().copied().enumerate() {
            // The segment holds [first, next segment's first - 1].
            let last = segments.get(i + 1).map_or(u64::MAX, |n| n - 1);
            if last <= at {
                continue;
            }
            let seg: ArchiveSegment = self
                .ctx
                .archive
                .read(&self.ctx.archive.segment(pid, first))
                .await?;
            self.apply_reference(seg.entries).await?;
            at = self.ctx.reference.applied(pid)?;
        }
        Ok(())
    }

    /// Replaces the reference's items with the archived snapshot at `index` (0: no items).
    async fn load_snapshot(&self, index: u64) -> anyhow::Result<u64> {
        let pid = self.part.pid;
        let reference = self.ctx.reference.clone();
        tokio::task::spawn_blocking(move || reference.reset(pid, index)).await??;
        if index == 0 {
            return Ok(0);
        }
        let manifest: SnapshotManifest = self
            .ctx
            .archive
            .read(&self.ctx.archive.snapshot_manifest(pid, index))
            .await?;
        for n in 0..manifest.parts {
            let part: SnapshotPart = self
                .ctx
                .archive
                .read(&self.ctx.archive.snapshot_part(pid, index, n))
                .await?;
            let reference = self.ctx.reference.clone();
            tokio::task::spawn_blocking(move || {
                reference.insert_items(pid, &part.keys, &part.values)
            })
            .await??;
        }
        let reference = self.ctx.reference.clone();
        let sum = tokio::task::spawn_blocking(move || reference.checksum(pid)).await??;
        if Some(sum) != manifest.checksum {
            self.ctx.metrics.verify_failures.inc();
            anyhow::bail!(
                "archived snapshot {index} of partition {pid} does not sum to its manifest"
            );
        }
        Ok(index)
    }

    /// Applies archived entries to the reference and notes its checksums at markers; the
    /// greatest leader clock among them.
    async fn apply_reference(&self, entries: Vec<Vec<u8>>) -> anyhow::Result<u64> {
        let pid = self.part.pid;
        let reference = self.ctx.reference.clone();
        let applied = tokio::task::spawn_blocking(move || reference.apply(pid, &entries)).await??;
        self.part.note_marks(&applied.markers);
        let at = self.ctx.reference.applied(pid)?;
        self.ctx
            .metrics
            .reference_index
            .get_or_create(&self.part.labels())
            .set(at as i64);
        Ok(applied.max_time_ms)
    }

    /// One round: read what the replicas committed since, seal a segment when it is due, tell
    /// the replicas how far the archive reaches. True if there is more to read at once.
    async fn round(&mut self) -> anyhow::Result<bool> {
        if self.pending.bytes >= self.ctx.segment_bytes {
            // A full segment the store has not taken yet: nothing more is read until it is
            // sealed, so the archiver holds at most one segment; the replicas keep the rest.
            self.seal().await?;
            return Ok(true);
        }
        let from = self.next + self.pending.entries.len() as u64;
        let mut more = false;
        let mut read = None;
        let mut last_err = None;
        for node in self.part.sources() {
            let req = ArchiveReadRequest {
                partition_id: self.part.pid,
                from,
                max_bytes: (self.ctx.segment_bytes - self.pending.bytes).clamp(1, 4 << 20) as u32,
                max_entries: 10_000,
            };
            match self.ctx.storage.archive_read(&node, &req).await {
                Ok(r) => {
                    read = Some((node, r));
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some((node, resp)) = read else {
            anyhow::bail!("no replica answered an archive read: {last_err:?}");
        };
        self.held = self.held.max(resp.held);
        if resp.entries.is_empty() && from <= resp.log_start {
            self.close_gap(&node, resp.log_start).await?;
            return Ok(true);
        }
        for bytes in resp.entries {
            let e = RaftEntry::decode(bytes.as_slice()).context("decode a replica's log entry")?;
            let want = self.next + self.pending.entries.len() as u64;
            anyhow::ensure!(
                e.index == want,
                "replica {node} sent entry {} for {want}",
                e.index
            );
            let t = write_time(&e);
            if t > 0 {
                if self.pending.first_time_ms == 0 {
                    self.pending.first_time_ms = t;
                }
                self.pending.last_time_ms = t;
            }
            self.pending.bytes += bytes.len();
            self.pending.entries.push(bytes);
            self.pending.since.get_or_insert_with(Instant::now);
            more = true;
        }
        self.report();
        let due = self.pending.bytes >= self.ctx.segment_bytes
            || self
                .pending
                .since
                .is_some_and(|s| s.elapsed() >= self.ctx.segment_age);
        if due {
            self.seal().await?;
        }
        let stale = self.last_mark.is_none_or(|t| t.elapsed() >= MARK_AGAIN);
        if stale || self.marked != self.next - 1 {
            self.mark().await;
        }
        self.idle_rounds = if more {
            0
        } else {
            self.idle_rounds.saturating_add(1)
        };
        Ok(more && self.pending.bytes < self.ctx.segment_bytes)
    }

    /// How long to wait before the next round: the poll interval while entries wait to be sealed
    /// or came lately, doubling over idle rounds up to `idle_poll`.
    fn pause(&self) -> Duration {
        if !self.pending.entries.is_empty() {
            return self.ctx.poll;
        }
        let mut pause = self.ctx.poll;
        for _ in 0..self.idle_rounds.min(16) {
            pause = (pause * 2).min(self.ctx.idle_poll);
        }
        pause.max(self.ctx.poll)
    }

    /// Uploads the pending entries as one segment, once, and reads it back.
    async fn seal(&mut self) -> anyhow::Result<()> {
        let pid = self.part.pid;
        let p = std::mem::take(&mut self.pending);
        let n = p.entries.len() as u64;
        let seg = ArchiveSegment {
            partition_id: pid,
            first: self.next,
            last: self.next + n - 1,
            first_time_ms: p.first_time_ms,
            last_time_ms: p.last_time_ms,
            entries: p.entries,
        };
        let path = self.ctx.archive.segment(pid, seg.first);
        let bytes = seal(&seg);
        let size = bytes.len();
        let put = match self.ctx.archive.put_once(&path, bytes).await {
            Ok(put) => put,
            Err(e) => {
                // Keep what was read: the next round seals it again.
                self.pending = Pending {
                    bytes: seg.entries.iter().map(Vec::len).sum(),
                    entries: seg.entries,
                    since: p.since,
                    first_time_ms: seg.first_time_ms,
                    last_time_ms: seg.last_time_ms,
                };
                return Err(e);
            }
        };
        let stored: ArchiveSegment = match put {
            // Verified as stored, not as sent.
            Put::Created => self.ctx.archive.read(&path).await.inspect_err(|_| {
                self.ctx.metrics.verify_failures.inc();
            })?,
            Put::Exists(b) => {
                // A try before a crash (or another instance) got there first: continue after it.
                let s: ArchiveSegment = tern_proto::archive::unseal(&b).map_err(|e| {
                    self.ctx.metrics.verify_failures.inc();
                    anyhow::anyhow!("{path}: {e}")
                })?;
                tracing::info!(
                    partition = pid,
                    first = s.first,
                    last = s.last,
                    "segment already archived"
                );
                s
            }
        };
        anyhow::ensure!(
            stored.first == seg.first && stored.partition_id == pid && stored.last >= stored.first,
            "{path} holds another segment"
        );
        if matches!(stored.last, l if l == seg.last) && stored.entries != seg.entries {
            self.ctx.metrics.verify_failures.inc();
            anyhow::bail!("{path}: read back differs from what was sent");
        }
        self.next = stored.last + 1;
        self.part.archived.store(stored.last, Ordering::Release);
        self.ctx.metrics.segments.inc();
        self.ctx.metrics.segment_bytes.inc_by(size as u64);
        self.ctx.metrics.entries.inc_by(stored.entries.len() as u64);
        let t = self.apply_reference(stored.entries).await?;
        self.time_high = self.time_high.max(t);
        self.since_snapshot += size as u64;
        self.mark().await;
        let due = self.ctx.snapshot_bytes > 0
            && self.since_snapshot >= self.ctx.snapshot_bytes.max(self.snapshot_size);
        if due {
            // The segment is archived whatever becomes of the snapshot: a failed one is tried
            // again after the next segment.
            if let Err(e) = self.snapshot_reference().await {
                self.ctx.metrics.upload_failures.inc();
                tracing::warn!(partition = pid, error = %format!("{e:#}"), "archive a snapshot of the reference");
            }
        }
        Ok(())
    }

    /// Archives the reference's items, which stand exactly at the archive's end, as a snapshot
    /// (parts, then the manifest, which names the greatest leader clock up to it: a restore to a
    /// moment at or after that clock may start from it). The replicas are not asked for anything.
    async fn snapshot_reference(&mut self) -> anyhow::Result<()> {
        let pid = self.part.pid;
        let at = self.ctx.reference.applied(pid)?;
        anyhow::ensure!(
            at == self.next - 1,
            "the reference stands at {at}, the archive at {}",
            self.next - 1
        );
        let started = Instant::now();
        let mut sum = tern_proto::archive::ChecksumBuilder::new();
        let (mut after, mut parts) = (Vec::new(), 0u32);
        loop {
            let reference = self.ctx.reference.clone();
            let from = after.clone();
            let page =
                tokio::task::spawn_blocking(move || reference.items_up_to(pid, &from, PART_BYTES))
                    .await??;
            if page.is_empty() && parts > 0 {
                break;
            }
            let mut part = SnapshotPart::default();
            for (k, v) in page {
                sum.add(&k, &v);
                part.keys.push(k);
                part.values.push(v);
            }
            let done = part.keys.is_empty();
            if let Some(k) = part.keys.last() {
                after = k.clone();
            }
            let path = self.ctx.archive.snapshot_part(pid, at, parts);
            self.ctx.archive.put_once(&path, seal(&part)).await?;
            parts += 1;
            if done {
                break;
            }
        }
        let checksum = sum.finish();
        let manifest = SnapshotManifest {
            partition_id: pid,
            index: at,
            parts,
            checksum: Some(checksum),
            time_ms: self.time_high,
            meta: None,
        };
        let path = self.ctx.archive.snapshot_manifest(pid, at);
        self.ctx.archive.put_once(&path, seal(&manifest)).await?;
        self.ctx.metrics.snapshots.inc();
        self.since_snapshot = 0;
        self.snapshot_size = checksum.bytes;
        tracing::info!(
            partition = pid,
            index = at,
            items = checksum.items,
            bytes = checksum.bytes,
            parts,
            took_ms = started.elapsed().as_millis() as u64,
            "archived a snapshot of the reference"
        );
        Ok(())
    }

    /// Tells every replica how far the archive reaches.
    async fn mark(&mut self) {
        let nodes: Vec<String> = self
            .part
            .info
            .lock()
            .replicas
            .iter()
            .map(|r| r.node_id.clone())
            .collect();
        let mark = ArchiveMark {
            partition_id: self.part.pid,
            archived: self.next - 1,
        };
        for node in nodes {
            if let Err(e) = self.ctx.storage.archive_mark(&node, &mark).await {
                tracing::debug!(partition = self.part.pid, node = %node, error = %e, "archive mark");
            }
        }
        self.last_mark = Some(Instant::now());
        self.marked = self.next - 1;
    }

    /// The replicas no longer hold the log from `next`: the archive continues from a snapshot of
    /// a replica's items instead (restores cannot go to a point inside the gap).
    async fn close_gap(&mut self, node: &str, log_start: u64) -> anyhow::Result<()> {
        self.ctx.metrics.gaps.inc();
        tracing::warn!(partition = self.part.pid, next = self.next, log_start, node = %node, "the replicas' log was compacted past the archive: archiving a snapshot");
        let index = self.archive_snapshot().await?;
        self.pending = Pending::default();
        self.next = index + 1;
        self.part.archived.store(index, Ordering::Release);
        Ok(())
    }

    /// Archives a consistent snapshot of a full replica's items (parts, then the manifest), and
    /// makes it the reference's base. Returns the log index it stands at.
    async fn archive_snapshot(&mut self) -> anyhow::Result<u64> {
        let pid = self.part.pid;
        let mut last_err = None;
        for node in self.part.full_replicas() {
            match self.snapshot_from(&node).await {
                Ok(index) => {
                    self.ctx.metrics.snapshots.inc();
                    return Ok(index);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("partition {pid} has no full replica")))
    }

    async fn snapshot_from(&mut self, node: &str) -> anyhow::Result<u64> {
        let pid = self.part.pid;
        let (mut session, mut after) = (0, Vec::new());
        let mut part = SnapshotPart::default();
        let (mut part_bytes, mut parts) = (0usize, 0u32);
        let mut sum = tern_proto::archive::ChecksumBuilder::new();
        let mut index = None;
        loop {
            let chunk = self
                .ctx
                .storage
                .snapshot_chunk(
                    node,
                    &SnapshotChunkRequest {
                        partition_id: pid,
                        session,
                        after_key: after.clone(),
                        meta_only: false,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("snapshot chunk from {node}: {e}"))?;
            session = chunk.session;
            let at = *index.get_or_insert(chunk.applied);
            if at == 0 {
                anyhow::bail!("{node} has applied nothing yet");
            }
            for (k, v) in chunk.keys.iter().zip(&chunk.values) {
                sum.add(k, v);
                part_bytes += k.len() + v.len();
            }
            if let Some(k) = chunk.keys.last() {
                after = k.clone();
            }
            part.keys.extend(chunk.keys);
            part.values.extend(chunk.values);
            if part_bytes >= PART_BYTES || chunk.done {
                let path = self.ctx.archive.snapshot_part(pid, at, parts);
                self.ctx.archive.put_once(&path, seal(&part)).await?;
                part = SnapshotPart::default();
                part_bytes = 0;
                parts += 1;
            }
            if chunk.done {
                let manifest = SnapshotManifest {
                    partition_id: pid,
                    index: at,
                    parts,
                    checksum: Some(sum.finish()),
                    time_ms: 0,
                    meta: chunk.meta,
                };
                let path = self.ctx.archive.snapshot_manifest(pid, at);
                self.ctx.archive.put_once(&path, seal(&manifest)).await?;
                self.load_snapshot(at).await?;
                return Ok(at);
            }
        }
    }

    fn report(&self) {
        let labels = self.part.labels();
        let m = &self.ctx.metrics;
        let archived = self.next - 1;
        m.archived_index.get_or_create(&labels).set(archived as i64);
        m.backlog
            .get_or_create(&labels)
            .set(self.held.saturating_sub(archived) as i64);
        let lag = self
            .pending
            .since
            .map_or(0, |s| s.elapsed().as_millis() as i64);
        m.lag_ms.get_or_create(&labels).set(lag);
    }
}

/// Scrubs the partition every `scrub_every` until it goes away.
pub async fn scrub_forever(ctx: Arc<Ctx>, part: Arc<Partition>) {
    // Partitions start their rounds spread over the interval (not all at once when many tables
    // appear together, or when the archiver starts).
    let jitter = rand::random::<f64>() * ctx.scrub_every.as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(jitter)).await;
    while !part.stopped.load(Ordering::Acquire) {
        let result = match scrub_once(&ctx, &part).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(partition = part.pid, error = %format!("{e:#}"), "scrub round failed");
                "failed"
            }
        };
        ctx.metrics
            .scrubs
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        tokio::time::sleep(ctx.scrub_every).await;
    }
}

/// One scrub round: a marker into the log, every full replica's checksum at it, the reference's,
/// the verdict, and repairs.
pub async fn scrub_once(ctx: &Ctx, part: &Partition) -> anyhow::Result<&'static str> {
    let pid = part.pid;
    let started = Instant::now();
    let index = append_marker(ctx, part).await?;
    tracing::debug!(partition = pid, index, "scrub marker committed");
    let deadline = Instant::now() + Duration::from_secs(60);
    let nodes = part.full_replicas();
    let mut sums: Vec<(String, ItemsChecksum)> = Vec::new();
    for node in &nodes {
        loop {
            let r = ctx
                .storage
                .checksum(
                    node,
                    &ChecksumRequest {
                        partition_id: pid,
                        index,
                    },
                )
                .await;
            match r.map(|r| (ChecksumState::try_from(r.state), r.checksum)) {
                Ok((Ok(ChecksumState::Done), Some(c))) => {
                    sums.push((node.clone(), c));
                    break;
                }
                Ok((Ok(ChecksumState::Pending), _)) | Err(_) if Instant::now() < deadline => {}
                // A follower may reach the marker a little after the leader.
                Ok((Ok(ChecksumState::Unknown), _)) if Instant::now() < deadline => {}
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let replicas_took = started.elapsed();
    // The reference reaches the marker once the segment holding it is sealed.
    let ref_deadline = Instant::now() + ctx.segment_age + Duration::from_secs(30);
    let reference = loop {
        if !ctx.scrub_reference {
            break None;
        }
        if let Some(c) = part.marks.lock().get(&index).copied() {
            break Some(c);
        }
        if Instant::now() >= ref_deadline || part.stopped.load(Ordering::Acquire) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ctx.metrics.scrub_items.inc_by(
        sums.iter()
            .chain(reference.as_ref().map(|r| ("".into(), *r)).as_ref())
            .map(|(_, c)| c.items)
            .sum(),
    );
    let labels = PartitionLabels {
        table: part.table.clone(),
        partition: pid.to_string(),
    };
    ctx.metrics
        .scrub_index
        .get_or_create(&labels)
        .set(index as i64);
    let took = started.elapsed();
    ctx.metrics
        .scrub_ms
        .get_or_create(&labels)
        .set(took.as_millis() as i64);
    ctx.metrics
        .scrub_replicas_ms
        .get_or_create(&labels)
        .set(replicas_took.as_millis() as i64);
    if let Some(r) = reference {
        ctx.metrics
            .scrub_bytes
            .get_or_create(&labels)
            .set(r.bytes as i64);
    }
    tracing::info!(
        partition = pid,
        index,
        items = reference.map_or(0, |r| r.items),
        bytes = reference.map_or(0, |r| r.bytes),
        took_ms = took.as_millis() as u64,
        replicas_ms = replicas_took.as_millis() as u64,
        "scrub round"
    );
    let replica_labels = |node: &str| ReplicaLabels {
        table: part.table.clone(),
        partition: pid.to_string(),
        node: node.to_string(),
    };
    let verdict = judge(&sums, reference);
    let incomplete = sums.len() < nodes.len() || (ctx.scrub_reference && reference.is_none());
    match &verdict {
        Verdict::Agree => {
            for (node, _) in &sums {
                ctx.metrics
                    .mismatched
                    .get_or_create(&replica_labels(node))
                    .set(0);
            }
            if incomplete {
                tracing::info!(
                    partition = pid,
                    index,
                    replicas = sums.len(),
                    of = nodes.len(),
                    reference = reference.is_some(),
                    "scrub incomplete: those that answered agree"
                );
                return Ok("incomplete");
            }
            tracing::debug!(
                partition = pid,
                index,
                "scrub: replicas and reference agree"
            );
            Ok("ok")
        }
        Verdict::Undecided(why) => {
            tracing::error!(partition = pid, index, reason = %why, sums = ?sums, reference = ?reference, "scrub mismatch, undecided");
            Ok("undecided")
        }
        Verdict::Bad(bad) => {
            let good: Vec<String> = sums
                .iter()
                .map(|(n, _)| n.clone())
                .filter(|n| !bad.contains(n))
                .collect();
            for (node, _) in &sums {
                let is_bad = bad.contains(node);
                ctx.metrics
                    .mismatched
                    .get_or_create(&replica_labels(node))
                    .set(i64::from(is_bad));
                if is_bad {
                    ctx.metrics
                        .mismatches
                        .get_or_create(&replica_labels(node))
                        .inc();
                    tracing::error!(partition = pid, table = %part.table, node = %node, index, against = if reference.is_some() { "reference" } else { "replicas" }, "scrub mismatch: replica's items differ");
                }
            }
            if ctx.repair {
                for node in bad {
                    repair(ctx, part, node, &good).await;
                }
            }
            Ok("mismatch")
        }
    }
}

/// Appends a checksum marker to the partition's log through its leader; its log index.
async fn append_marker(ctx: &Ctx, part: &Partition) -> anyhow::Result<u64> {
    let (epoch, mut nodes) = {
        let info = part.info.lock();
        (
            info.epoch,
            info.replicas
                .iter()
                .map(|r| r.node_id.clone())
                .collect::<Vec<_>>(),
        )
    };
    nodes.sort_by_key(|n| *n != part.info.lock().leader);
    let req = WriteRequest {
        partition_id: part.pid,
        epoch,
        kind: WriteKind::Checksum as i32,
        ..Default::default()
    };
    let mut tried = 0;
    let mut last = None;
    while let Some(node) = nodes.first().cloned() {
        tried += 1;
        match ctx.storage.write(&node, &req).await {
            Ok(r) if r.index > 0 => return Ok(r.index),
            Ok(_) => anyhow::bail!("{node} answered a checksum marker without its index"),
            Err(StorageError::Bus(BusError::Redirect(leader)))
                if !leader.is_empty() && tried < 6 =>
            {
                nodes.retain(|n| *n != leader);
                nodes.insert(0, leader);
            }
            Err(e) => {
                last = Some(e);
                nodes.remove(0);
            }
        }
        if tried >= 6 {
            break;
        }
    }
    anyhow::bail!("no leader took the checksum marker: {last:?}")
}

/// Rebuilds a bad replica's items from a good replica's.
async fn repair(ctx: &Ctx, part: &Partition, bad: &str, good: &[String]) {
    let Some(source) = good.first() else {
        tracing::error!(partition = part.pid, node = %bad, "no good replica to repair from");
        return;
    };
    let req = RebuildRequest {
        partition_id: part.pid,
        source_node: source.clone(),
        repair: true,
        ..Default::default()
    };
    tracing::warn!(partition = part.pid, node = %bad, source = %source, "repairing replica from a good one");
    let result = ctx.storage.rebuild(bad, &req).await;
    let label = if result.is_ok() { "ok" } else { "failed" };
    ctx.metrics
        .repairs
        .get_or_create(&ResultLabels {
            result: label.into(),
        })
        .inc();
    match result {
        Ok(()) => {
            tracing::info!(partition = part.pid, node = %bad, source = %source, "replica repaired")
        }
        Err(e) => tracing::error!(partition = part.pid, node = %bad, error = %e, "repair failed"),
    }
}
