//! The archiver's metrics (`docs/observability.md`).

use tern_telemetry::metrics::{Counter, EncodeLabelSet, Family, Gauge, Metrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub table: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub table: String,
    pub partition: String,
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

pub struct ArchiverMetrics {
    pub segments: Counter,
    pub segment_bytes: Counter,
    pub entries: Counter,
    pub upload_failures: Counter,
    pub verify_failures: Counter,
    pub gaps: Counter,
    pub snapshots: Counter,
    pub archived_index: Family<PartitionLabels, Gauge>,
    pub backlog: Family<PartitionLabels, Gauge>,
    pub lag_ms: Family<PartitionLabels, Gauge>,
    pub reference_index: Family<PartitionLabels, Gauge>,
    pub scrubs: Family<ResultLabels, Counter>,
    pub scrub_index: Family<PartitionLabels, Gauge>,
    pub scrub_items: Counter,
    pub scrub_ms: Family<PartitionLabels, Gauge>,
    pub scrub_bytes: Family<PartitionLabels, Gauge>,
    pub scrub_replicas_ms: Family<PartitionLabels, Gauge>,
    pub restore_snapshots: Counter,
    pub mismatches: Family<ReplicaLabels, Counter>,
    pub mismatched: Family<ReplicaLabels, Gauge>,
    pub repairs: Family<ResultLabels, Counter>,
}

impl ArchiverMetrics {
    pub fn new(m: &Metrics) -> Self {
        let counter = |name: &str, help: &str| m.register(name, help, Counter::default());
        Self {
            segments: counter("archiver_segments_uploaded", "Sealed log segments uploaded to the archive and read back intact."),
            segment_bytes: counter("archiver_segment_bytes_uploaded", "Bytes of the segments uploaded."),
            entries: counter("archiver_entries_archived", "Log entries in the segments uploaded."),
            upload_failures: counter("archiver_upload_failures", "Archive reads and writes that failed (retried with backoff)."),
            verify_failures: counter("archiver_verify_failures", "Archive objects whose checksum or contents did not hold when read back."),
            gaps: counter("archiver_log_gaps", "Times a partition's log was compacted past what the archive held (closed with a snapshot)."),
            snapshots: counter("archiver_snapshots_archived", "Partition snapshots written to the archive."),
            archived_index: m.register("archiver_archived_index", "Last log index of a partition the archive holds.", Family::default()),
            backlog: m.register("archiver_backlog_entries", "Committed log entries of a partition not yet in the archive (they stay on the replicas).", Family::default()),
            lag_ms: m.register("archiver_lag_milliseconds", "Age of the oldest committed entry of a partition not yet in the archive.", Family::default()),
            reference_index: m.register("archiver_reference_index", "Log index a partition's reference replica (rebuilt from the archive) stands at.", Family::default()),
            scrubs: m.register("archiver_scrubs", "Scrub rounds by result: ok, mismatch, undecided (no majority and no reference), incomplete (a replica or the reference had no checksum in time).", Family::default()),
            scrub_index: m.register("archiver_scrub_index", "Log index of the last checksum marker a partition was scrubbed at.", Family::default()),
            scrub_items: counter("archiver_scrub_items", "Items whose checksums scrub compared (per replica and reference)."),
            scrub_ms: m.register("archiver_scrub_last_milliseconds", "How long a partition's last scrub round took, from its marker to its verdict (every replica's and the reference's checksum).", Family::default()),
            scrub_bytes: m.register("archiver_scrub_last_bytes", "Bytes of items (keys and values) a partition's last scrub round checksummed, as the reference holds them.", Family::default()),
            scrub_replicas_ms: m.register("archiver_scrub_replicas_milliseconds", "How long the replicas took, in a partition's last scrub round, from its marker until every full replica's checksum was in.", Family::default()),
            restore_snapshots: counter("archiver_restore_snapshot_starts", "Partitions a restore rebuilt from an archived snapshot on, rather than from the log's start."),
            mismatches: m.register("archiver_scrub_mismatches", "Scrub rounds that found a replica's items differing from the reference (or, without one, from the other replicas).", Family::default()),
            mismatched: m.register("archiver_replica_mismatched", "1 while a replica's items differ as the last scrub of its partition found.", Family::default()),
            repairs: m.register("archiver_repairs", "Replicas rebuilt from a good one after a mismatch, by result.", Family::default()),
        }
    }
}
