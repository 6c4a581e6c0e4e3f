//! Engine messages and log entries to and from their wire form.

use tern_proto::raft::{EntryKind, RaftEntry, RaftKind, RaftMessage, RaftSnapshotMeta};
use tern_replication::{Entry, MemberKind, Membership, Message, Payload, SnapshotMeta};

fn membership_to_wire(m: &Membership) -> (Vec<u64>, Vec<u64>) {
    (
        m.members.keys().copied().collect(),
        m.members
            .iter()
            .filter(|(_, k)| **k == MemberKind::Log)
            .map(|(id, _)| *id)
            .collect(),
    )
}

fn membership_from_wire(members: &[u64], log_members: &[u64]) -> Membership {
    // A set: a forged entry with many members must not cost members × log members.
    let log_members: std::collections::HashSet<u64> = log_members.iter().copied().collect();
    Membership::new(members.iter().map(|id| {
        let kind = if log_members.contains(id) {
            MemberKind::Log
        } else {
            MemberKind::Full
        };
        (*id, kind)
    }))
}

pub fn snapshot_to_wire(m: &SnapshotMeta) -> RaftSnapshotMeta {
    let (members, log_members) = membership_to_wire(&m.membership);
    RaftSnapshotMeta {
        index: m.index,
        term: m.term,
        members,
        log_members,
        max_member_id: m.max_member_id,
    }
}

pub fn snapshot_from_wire(m: &RaftSnapshotMeta) -> SnapshotMeta {
    SnapshotMeta {
        index: m.index,
        term: m.term,
        membership: membership_from_wire(&m.members, &m.log_members),
        max_member_id: m.max_member_id,
    }
}

pub fn entry_to_wire(e: &Entry) -> RaftEntry {
    let (kind, data, members, log_members) = match &e.payload {
        Payload::Noop => (EntryKind::Noop, Vec::new(), Vec::new(), Vec::new()),
        Payload::Command(d) => (EntryKind::Command, d.clone(), Vec::new(), Vec::new()),
        Payload::Membership(m) => {
            let (members, log_members) = membership_to_wire(m);
            (EntryKind::Membership, Vec::new(), members, log_members)
        }
        // The runtime reads an entry's bytes back before it encodes it (`read_back`); one
        // without them here is a bug, and an empty command on the wire would diverge replicas.
        Payload::OnDisk { .. } => crate::apply::fatal(
            "encode a log entry",
            format!("entry {} has no bytes in memory", e.index),
        ),
    };
    RaftEntry {
        term: e.term,
        index: e.index,
        kind: kind as i32,
        data,
        members,
        log_members,
    }
}

/// An entry of a kind this version does not know is an error, never a guess: replicas that read
/// the same entry differently diverge.
pub fn entry_from_wire(e: RaftEntry) -> anyhow::Result<Entry> {
    let kind = EntryKind::try_from(e.kind)
        .map_err(|_| anyhow::anyhow!("log entry {} has unknown kind {}", e.index, e.kind))?;
    let payload = match kind {
        EntryKind::Noop => Payload::Noop,
        EntryKind::Command => Payload::Command(e.data),
        EntryKind::Membership => {
            Payload::Membership(membership_from_wire(&e.members, &e.log_members))
        }
    };
    Ok(Entry {
        term: e.term,
        index: e.index,
        payload,
    })
}

pub fn message_to_wire(m: &Message) -> RaftMessage {
    let mut w = RaftMessage {
        term: m.term(),
        ..Default::default()
    };
    match m {
        Message::Vote {
            last_index,
            last_term,
            pre,
            ..
        } => {
            (w.kind, w.index, w.log_term, w.pre) =
                (RaftKind::Vote as i32, *last_index, *last_term, *pre)
        }
        Message::VoteResponse { granted, pre, .. } => {
            (w.kind, w.flag, w.pre) = (RaftKind::VoteResponse as i32, *granted, *pre)
        }
        Message::Append {
            prev_index,
            prev_term,
            entries,
            commit,
            sent_at,
            ..
        } => {
            w.kind = RaftKind::Append as i32;
            (w.index, w.log_term, w.commit, w.sent_at) =
                (*prev_index, *prev_term, *commit, *sent_at);
            w.entries = entries.iter().map(entry_to_wire).collect();
        }
        Message::AppendResponse {
            success,
            index,
            sent_at,
            ..
        } => {
            w.kind = RaftKind::AppendResponse as i32;
            (w.flag, w.index, w.sent_at) = (*success, *index, *sent_at);
        }
    }
    w
}

pub fn message_from_wire(w: RaftMessage) -> Option<Message> {
    let term = w.term;
    Some(match RaftKind::try_from(w.kind).ok()? {
        RaftKind::Vote => Message::Vote {
            term,
            last_index: w.index,
            last_term: w.log_term,
            pre: w.pre,
        },
        RaftKind::VoteResponse => Message::VoteResponse {
            term,
            granted: w.flag,
            pre: w.pre,
        },
        RaftKind::Append => Message::Append {
            term,
            prev_index: w.index,
            prev_term: w.log_term,
            entries: w
                .entries
                .into_iter()
                .map(entry_from_wire)
                .collect::<anyhow::Result<_>>()
                .ok()?,
            commit: w.commit,
            sent_at: w.sent_at,
        },
        RaftKind::AppendResponse => Message::AppendResponse {
            term,
            success: w.flag,
            index: w.index,
            sent_at: w.sent_at,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let entries = vec![
            Entry {
                term: 2,
                index: 5,
                payload: Payload::Noop,
            },
            Entry {
                term: 2,
                index: 6,
                payload: Payload::Command(b"w".to_vec()),
            },
            Entry {
                term: 3,
                index: 7,
                payload: Payload::Membership(Membership::new([
                    (1, MemberKind::Full),
                    (4, MemberKind::Log),
                ])),
            },
        ];
        let msgs = [
            Message::Vote {
                term: 3,
                last_index: 9,
                last_term: 2,
                pre: true,
            },
            Message::VoteResponse {
                term: 3,
                granted: true,
                pre: false,
            },
            Message::Append {
                term: 3,
                prev_index: 4,
                prev_term: 1,
                entries,
                commit: 4,
                sent_at: 77,
            },
            Message::AppendResponse {
                term: 3,
                success: false,
                index: 2,
                sent_at: 77,
            },
        ];
        for m in msgs {
            assert_eq!(message_from_wire(message_to_wire(&m)), Some(m));
        }
    }
}
