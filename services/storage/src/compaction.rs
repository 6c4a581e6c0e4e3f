//! Where a replica's log may be cut: a pure decision, tested on its own.

use tern_replication::Index;

use crate::replication::CompactLimits;

/// What the decision looks at, taken from a replica under its lock.
#[derive(Debug, Clone, Default)]
pub struct LogView {
    /// A full replica whose items hold the log up to `held`; a log replica (no items) holds its
    /// entries only in the log.
    pub has_items: bool,
    /// Entries up to here are applied (to the items, or, on a log replica, committed and held).
    pub held: Index,
    /// The index the log already starts after.
    pub snapshot: Index,
    /// Entries and payload bytes in the log.
    pub entries: u64,
    pub bytes: u64,
    /// Leading: the durable match of every follower heard from recently.
    pub live_followers: Option<Vec<Index>>,
    /// With the archive gate: the archive holds the log up to here.
    pub archived: Option<Index>,
}

/// The index up to which to drop the log, if it is time. `half_by_bytes` gives the index that
/// keeps the newest half of the bytes up to `held`.
pub fn compaction_point(
    v: &LogView,
    limits: CompactLimits,
    half_by_bytes: impl FnOnce() -> Index,
) -> Option<Index> {
    // NOTE: a log replica stands in for a lost full replica while another is rebuilt: entries it
    // drops may exist on the leader alone. It keeps its log up to four times the limits, which
    // bounds its memory and is far longer than a rebuild takes.
    let scale = if v.has_items { 1 } else { 4 };
    let by_bytes = v.bytes > scale * limits.bytes;
    let by_entries = v.held.saturating_sub(v.snapshot) >= scale * limits.entries;
    if !by_bytes && !by_entries {
        return None;
    }
    let mut upto = if by_bytes {
        half_by_bytes()
    } else {
        v.held - scale * limits.entries / 2
    };
    // A leader keeps what live followers still need unless its log grew far past the limits;
    // a follower beyond that catches up by snapshot.
    let within = v.entries < 4 * limits.entries && v.bytes < 2 * limits.bytes;
    if let (Some(live), true) = (&v.live_followers, within) {
        upto = live.iter().copied().fold(upto, Index::min);
    }
    // NOTE: what the archive lacks stays until it is archived, unless the log grew to four times
    // its limits (the archiver gone for long): memory and disk stay bounded, and the archive
    // then has a gap, which the archiver closes with a snapshot of the items.
    let bounded = v.entries < 4 * scale * limits.entries && v.bytes < 4 * scale * limits.bytes;
    if let (Some(archived), true) = (v.archived, bounded) {
        upto = upto.min(archived);
    }
    (upto > v.snapshot).then_some(upto.min(v.held))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CompactLimits = CompactLimits {
        entries: 100,
        bytes: 1000,
    };

    fn full(held: Index, bytes: u64) -> LogView {
        LogView {
            has_items: true,
            held,
            snapshot: 0,
            entries: held,
            bytes,
            live_followers: None,
            archived: None,
        }
    }

    #[test]
    fn a_full_replica_compacts_at_the_limit_keeping_half() {
        assert_eq!(compaction_point(&full(99, 10), LIMITS, || 0), None);
        assert_eq!(compaction_point(&full(100, 10), LIMITS, || 0), Some(50));
    }

    #[test]
    fn size_triggers_compaction_whatever_the_entry_count() {
        assert_eq!(compaction_point(&full(10, 5000), LIMITS, || 7), Some(7));
    }

    #[test]
    fn never_beyond_what_the_items_hold() {
        let mut v = full(10, 5000);
        v.entries = 40;
        assert_eq!(compaction_point(&v, LIMITS, || 30), Some(10));
    }

    #[test]
    fn a_leader_keeps_what_live_followers_need_within_bounds() {
        let mut v = full(100, 10);
        v.live_followers = Some(vec![80, 20]);
        assert_eq!(compaction_point(&v, LIMITS, || 0), Some(20));
        v.live_followers = Some(vec![0]);
        assert_eq!(compaction_point(&v, LIMITS, || 0), None);
        // Far past the limits the follower is left to a snapshot.
        v.held = 400;
        v.entries = 400;
        assert_eq!(compaction_point(&v, LIMITS, || 0), Some(350));
    }

    #[test]
    fn a_log_replica_keeps_its_log_four_times_longer() {
        let mut v = full(100, 10);
        v.has_items = false;
        assert_eq!(compaction_point(&v, LIMITS, || 0), None);
        v.bytes = 3999;
        assert_eq!(compaction_point(&v, LIMITS, || 0), None);
        v.held = 400;
        assert_eq!(compaction_point(&v, LIMITS, || 0), Some(200));
    }

    #[test]
    fn what_the_archive_lacks_stays_until_the_log_is_four_times_its_limits() {
        let mut v = full(100, 10);
        v.archived = Some(30);
        assert_eq!(compaction_point(&v, LIMITS, || 0), Some(30));
        v.archived = Some(0);
        assert_eq!(compaction_point(&v, LIMITS, || 0), None);
        // The archiver gone for long: the log is cut anyway, and the archive has a gap.
        v.held = 400;
        v.entries = 400;
        assert_eq!(compaction_point(&v, LIMITS, || 0), Some(350));
        let mut by_bytes = full(10, 3999);
        by_bytes.archived = Some(0);
        assert_eq!(compaction_point(&by_bytes, LIMITS, || 7), None);
        by_bytes.bytes = 4000;
        assert_eq!(compaction_point(&by_bytes, LIMITS, || 7), Some(7));
    }
}
