//! A storage node's metrics, in the process's Prometheus registry (served at `GET /metrics` on
//! the metrics address). Every series carries the node's id as label `node`.

use std::time::Duration;

use tern_telemetry::metrics::{
    latency_histogram, Counter, EncodeLabelSet, Family, Gauge, Histogram, Metrics,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    pub partition: String,
    pub member: String,
    pub peer: String,
}

pub struct ReplicationMetrics {
    /// Times a replica on this node became leader.
    pub leader_changes: Counter,
    pub groups_led: Gauge,
    /// Log replicas in the groups this node leads.
    pub log_replicas: Gauge,
    /// Per member of the groups this node leads: entries behind the leader's log.
    pub lag: Family<LagLabels, Gauge>,
    /// Log compactions done by this node's replicas.
    pub compactions: Counter,
    /// Snapshots this node's leaders asked a lagging follower to install.
    pub snapshots_sent: Counter,
    /// Snapshots of items installed on this node (rebuilds and catch-ups).
    pub snapshots_installed: Counter,
    /// Consistent reads refused because the lease ran out in real time after the read barrier.
    pub lease_expired_reads: Counter,
    pub log_reads: Counter,
    pub rounds_dropped: Counter,
    pub append_rejections: Counter,
    /// Jobs waiting for the apply thread.
    pub apply_queue: Gauge,
    /// Writes told to slow down: the node's budget of writes in progress was used up.
    pub writes_throttled: Counter,
    /// Writes refused because their log entry would not fit a bus message.
    pub writes_too_large: Counter,
    /// Replication messages dropped because their sender is no member of the group.
    pub foreign_messages: Counter,
    /// Compactions that dropped log entries the archive did not hold yet.
    pub archive_gaps: Counter,
    pub replicas: Gauge,
    pub log_bytes: Gauge,
    pub log_stored_bytes: Gauge,
    /// One journal commit and fsync of the group-commit thread.
    pub fsync: Histogram,
    /// Log appends and state writes one fsync carried.
    pub fsync_batch: Histogram,
    commit: Histogram,
}

impl Default for ReplicationMetrics {
    fn default() -> Self {
        Self::new(Metrics::new())
    }
}

impl ReplicationMetrics {
    /// Registers a storage node's metrics in `m` (a registry labelled with the node).
    pub fn new(m: Metrics) -> Self {
        let counter = |name: &str, help: &str| m.register(name, help, Counter::default());
        let gauge = |name: &str, help: &str| m.register(name, help, Gauge::default());
        Self {
            leader_changes: counter("storage_leader_changes", "Times a replica on this node became its group's leader."),
            groups_led: gauge("storage_groups_led", "Replication groups this node leads."),
            log_replicas: gauge("storage_log_replicas", "Log replicas in the groups this node leads."),
            lag: m.register("storage_replication_lag_entries", "Log entries a member is behind its leader's log.", Family::default()),
            compactions: counter("storage_log_compactions", "Times a replica on this node dropped the log its items hold."),
            snapshots_sent: counter("storage_snapshots_sent", "Times a leader on this node asked a follower behind its compacted log to install a snapshot."),
            snapshots_installed: counter("storage_snapshots_installed", "Snapshots of a partition's items installed on this node."),
            lease_expired_reads: counter("storage_lease_expired_reads", "Consistent reads refused because the leader's lease ran out (in real time) after its read barrier."),
            log_reads: counter("storage_log_reads", "Log entries read back from disk to send to a follower behind (their bytes were no longer in memory)."),
            rounds_dropped: counter("storage_replication_rounds_dropped", "Rounds of replication messages dropped because the node's send queue was full."),
            append_rejections: counter("storage_append_rejections", "Appends a follower refused (its log did not match, or the append came out of order or late), as the leader heard."),
            apply_queue: gauge("storage_apply_queue_jobs", "Committed entries and cleared reads waiting for the apply thread."),
            writes_throttled: counter("storage_writes_throttled", "Writes answered ThrottlingException: the node's writes in progress were at their limit."),
            writes_too_large: counter("storage_writes_too_large", "Writes refused because their log entry would not fit the bus's max_payload."),
            foreign_messages: counter("storage_foreign_messages", "Replication messages dropped because their sender is no member of the group (or not at the member's node)."),
            archive_gaps: counter("storage_archive_gaps", "Log compactions that dropped entries the archive did not hold yet (the log had grown to four times its limits)."),
            replicas: gauge("storage_replicas", "Partition replicas on this node."),
            log_bytes: gauge("storage_log_bytes", "Command bytes the replication logs of this node hold in memory."),
            log_stored_bytes: gauge("storage_log_stored_bytes", "Payload bytes the replication logs of this node hold, on disk."),
            fsync: m.register("storage_fsync_seconds", "One group commit: the journal write and its fsync.", latency_histogram()),
            fsync_batch: m.register(
                "storage_fsync_batch_ops",
                "Log appends and state writes one group commit's fsync made durable.",
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 12)),
            ),
            commit: m.register("storage_commit_seconds", "Time from proposing a write to its commit and apply on the leader.", latency_histogram()),
        }
    }

    /// A write committed and applied `d` after it was proposed.
    pub fn commit_latency(&self, d: Duration) {
        self.commit.observe(d.as_secs_f64());
    }
}
