//! Replication metrics of a storage node, in Prometheus' text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds (seconds) of the commit-latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
pub struct ReplicationMetrics {
    /// Times a replica on this node became leader.
    pub leader_changes: AtomicU64,
    pub groups_led: AtomicU64,
    /// Log replicas in the groups this node leads.
    pub log_replicas: AtomicU64,
    /// Per member of the groups this node leads: (partition, member, node, entries behind).
    pub lag: Mutex<Vec<(u64, u64, String, u64)>>,
    /// Log compactions done by this node's replicas.
    pub compactions: AtomicU64,
    /// Snapshots this node's leaders asked a lagging follower to install.
    pub snapshots_sent: AtomicU64,
    /// Snapshots of items installed on this node (rebuilds and catch-ups).
    pub snapshots_installed: AtomicU64,
    /// Consistent reads refused because the lease ran out in real time after the read barrier.
    pub lease_expired_reads: AtomicU64,
    pub log_reads: AtomicU64,
    pub rounds_dropped: AtomicU64,
    pub append_rejections: AtomicU64,
    /// Jobs waiting for the apply thread (a gauge).
    pub apply_queue: AtomicU64,
    /// Writes told to slow down: the node's budget of writes in progress was used up.
    pub writes_throttled: AtomicU64,
    /// Writes refused because their log entry would not fit a bus message.
    pub writes_too_large: AtomicU64,
    /// Replication messages dropped because their sender is no member of the group.
    pub foreign_messages: AtomicU64,
    commit: Histogram,
}

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl ReplicationMetrics {
    /// A write committed and applied `d` after it was proposed.
    pub fn commit_latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        let h = &self.commit;
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            h.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn render(&self, node: &str, out: &mut String) {
        let l = format!("node=\"{node}\"");
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP tern_storage_leader_changes_total Times a replica on this node became its group's leader.\n# TYPE tern_storage_leader_changes_total counter\ntern_storage_leader_changes_total{{{l}}} {}", get(&self.leader_changes));
        let _ = writeln!(out, "# HELP tern_storage_groups_led Replication groups this node leads.\n# TYPE tern_storage_groups_led gauge\ntern_storage_groups_led{{{l}}} {}", get(&self.groups_led));
        let _ = writeln!(out, "# HELP tern_storage_log_replicas Log replicas in the groups this node leads.\n# TYPE tern_storage_log_replicas gauge\ntern_storage_log_replicas{{{l}}} {}", get(&self.log_replicas));
        let _ = writeln!(out, "# HELP tern_storage_replication_lag_entries Log entries a member is behind its leader's log.\n# TYPE tern_storage_replication_lag_entries gauge");
        for (pid, member, peer, lag) in self.lag.lock().iter() {
            let _ = writeln!(out, "tern_storage_replication_lag_entries{{{l},partition=\"{pid}\",member=\"{member}\",peer=\"{peer}\"}} {lag}");
        }
        let _ = writeln!(out, "# HELP tern_storage_log_compactions_total Times a replica on this node dropped the log its items hold.\n# TYPE tern_storage_log_compactions_total counter\ntern_storage_log_compactions_total{{{l}}} {}", get(&self.compactions));
        let _ = writeln!(out, "# HELP tern_storage_snapshots_sent_total Times a leader on this node asked a follower behind its compacted log to install a snapshot.\n# TYPE tern_storage_snapshots_sent_total counter\ntern_storage_snapshots_sent_total{{{l}}} {}", get(&self.snapshots_sent));
        let _ = writeln!(out, "# HELP tern_storage_snapshots_installed_total Snapshots of a partition's items installed on this node.\n# TYPE tern_storage_snapshots_installed_total counter\ntern_storage_snapshots_installed_total{{{l}}} {}", get(&self.snapshots_installed));
        let _ = writeln!(out, "# HELP tern_storage_replication_rounds_dropped_total Rounds of replication messages dropped because the node's send queue was full.\n# TYPE tern_storage_replication_rounds_dropped_total counter\ntern_storage_replication_rounds_dropped_total{{{l}}} {}", get(&self.rounds_dropped));
        let _ = writeln!(out, "# HELP tern_storage_apply_queue_jobs Committed entries and cleared reads waiting for the apply thread.\n# TYPE tern_storage_apply_queue_jobs gauge\ntern_storage_apply_queue_jobs{{{l}}} {}", get(&self.apply_queue));
        let _ = writeln!(out, "# HELP tern_storage_append_rejections_total Appends a follower refused (its log did not match, or the append came out of order or late), as the leader heard.\n# TYPE tern_storage_append_rejections_total counter\ntern_storage_append_rejections_total{{{l}}} {}", get(&self.append_rejections));
        let _ = writeln!(out, "# HELP tern_storage_log_reads_total Log entries read back from disk to send to a follower behind (their bytes were no longer in memory).\n# TYPE tern_storage_log_reads_total counter\ntern_storage_log_reads_total{{{l}}} {}", get(&self.log_reads));
        let _ = writeln!(out, "# HELP tern_storage_lease_expired_reads_total Consistent reads refused because the leader's lease ran out (in real time) after its read barrier.\n# TYPE tern_storage_lease_expired_reads_total counter\ntern_storage_lease_expired_reads_total{{{l}}} {}", get(&self.lease_expired_reads));
        let _ = writeln!(out, "# HELP tern_storage_writes_throttled_total Writes answered ThrottlingException: the node's writes in progress were at their limit.\n# TYPE tern_storage_writes_throttled_total counter\ntern_storage_writes_throttled_total{{{l}}} {}", get(&self.writes_throttled));
        let _ = writeln!(out, "# HELP tern_storage_writes_too_large_total Writes refused because their log entry would not fit the bus's max_payload.\n# TYPE tern_storage_writes_too_large_total counter\ntern_storage_writes_too_large_total{{{l}}} {}", get(&self.writes_too_large));
        let _ = writeln!(out, "# HELP tern_storage_foreign_messages_total Replication messages dropped because their sender is no member of the group (or not at the member's node).\n# TYPE tern_storage_foreign_messages_total counter\ntern_storage_foreign_messages_total{{{l}}} {}", get(&self.foreign_messages));
        let h = &self.commit;
        let _ = writeln!(out, "# HELP tern_storage_commit_seconds Time from proposing a write to its commit and apply on the leader.\n# TYPE tern_storage_commit_seconds histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&h.counts) {
            cumulative += get(c);
            let _ = writeln!(
                out,
                "tern_storage_commit_seconds_bucket{{{l},le=\"{b}\"}} {cumulative}"
            );
        }
        let count = get(&h.count);
        let _ = writeln!(
            out,
            "tern_storage_commit_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "tern_storage_commit_seconds_sum{{{l}}} {}",
            get(&h.sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "tern_storage_commit_seconds_count{{{l}}} {count}");
    }
}
