//! The engine's rules, one at a time, driven by hand.

use tern_replication::*;

fn full3() -> Membership {
    Membership::new([
        (1, MemberKind::Full),
        (2, MemberKind::Full),
        (3, MemberKind::Full),
    ])
}

fn engine(id: NodeId, m: Membership) -> Engine {
    Engine::new(Config::new(id, 7), HardState::default(), Vec::new(), m, 0)
}

fn sends(cmds: &[Command]) -> Vec<(NodeId, Message)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

fn tick_until_sends(e: &mut Engine) -> Vec<(NodeId, Message)> {
    for _ in 0..100 {
        let out = sends(&e.step(Event::Tick));
        if !out.is_empty() {
            return out;
        }
    }
    panic!("node {} sent nothing in 100 ticks", e.id());
}

/// Drives node 1 to leadership of term 1 with votes from 2 and 3.
fn elect_one() -> Engine {
    let mut e = engine(1, full3());
    let pre = tick_until_sends(&mut e);
    assert!(
        pre.iter().all(|(_, m)| matches!(
            m,
            Message::Vote {
                pre: true,
                term: 1,
                ..
            }
        )),
        "{pre:?}"
    );
    e.step(Event::Message {
        from: 2,
        msg: Message::VoteResponse {
            term: 1,
            granted: true,
            pre: true,
        },
    });
    assert_eq!(e.role(), Role::Candidate);
    assert_eq!(e.term(), 1);
    e.step(Event::Message {
        from: 2,
        msg: Message::VoteResponse {
            term: 1,
            granted: true,
            pre: false,
        },
    });
    assert_eq!(e.role(), Role::Leader);
    e
}

#[test]
fn a_leader_commits_only_what_a_durable_quorum_holds() {
    let mut e = elect_one();
    assert_eq!(e.last_index(), 1, "a new leader appends a no-op");
    let out = e.step(Event::Message {
        from: 2,
        msg: Message::AppendResponse {
            term: 1,
            success: true,
            index: 1,
            sent_at: 0,
        },
    });
    assert!(
        !out.iter().any(|c| matches!(c, Command::Apply(_))),
        "the leader's own copy is not durable yet"
    );
    assert_eq!(e.commit_index(), 0);
    let out = e.step(Event::Persisted { index: 1, term: 1 });
    assert!(out
        .iter()
        .any(|c| matches!(c, Command::Apply(v) if v.len() == 1)));
    assert_eq!(e.commit_index(), 1);
}

#[test]
fn votes_go_to_up_to_date_logs_once_per_term() {
    let mut e = engine(2, full3());
    // Let the restart grace (one election timeout) pass.
    for _ in 0..10 {
        e.step(Event::Tick);
    }
    let log = vec![Entry {
        term: 1,
        index: 1,
        payload: Payload::Noop,
    }];
    let out = e.step(Event::Message {
        from: 1,
        msg: Message::Append {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            entries: log,
            commit: 0,
            sent_at: 0,
        },
    });
    assert!(sends(&out).is_empty(), "no ack before the entry is durable");
    let out = e.step(Event::Persisted { index: 1, term: 1 });
    assert!(matches!(
        &sends(&out)[..],
        [(
            1,
            Message::AppendResponse {
                success: true,
                index: 1,
                ..
            }
        )]
    ));

    for _ in 0..10 {
        e.step(Event::Tick);
    }
    let stale = Message::Vote {
        term: 2,
        last_index: 0,
        last_term: 0,
        pre: false,
    };
    let out = sends(&e.step(Event::Message {
        from: 3,
        msg: stale,
    }));
    assert!(
        matches!(
            &out[..],
            [(3, Message::VoteResponse { granted: false, .. })]
        ),
        "stale log: {out:?}"
    );
    let fresh = Message::Vote {
        term: 2,
        last_index: 1,
        last_term: 1,
        pre: false,
    };
    let out = sends(&e.step(Event::Message {
        from: 3,
        msg: fresh.clone(),
    }));
    assert!(matches!(
        &out[..],
        [(3, Message::VoteResponse { granted: true, .. })]
    ));
    let out = sends(&e.step(Event::Message {
        from: 1,
        msg: Message::Vote {
            term: 2,
            last_index: 1,
            last_term: 1,
            pre: false,
        },
    }));
    assert!(
        matches!(
            &out[..],
            [(1, Message::VoteResponse { granted: false, .. })]
        ),
        "one vote per term"
    );
}

#[test]
fn vote_requests_are_ignored_while_the_leader_is_alive() {
    let mut e = engine(2, full3());
    for _ in 0..10 {
        e.step(Event::Tick);
    }
    e.step(Event::Message {
        from: 1,
        msg: Message::Append {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: 0,
            sent_at: 0,
        },
    });
    let out = e.step(Event::Message {
        from: 3,
        msg: Message::Vote {
            term: 5,
            last_index: 9,
            last_term: 4,
            pre: false,
        },
    });
    assert!(sends(&out).is_empty());
    assert_eq!(e.term(), 1, "the disruptive term is not adopted");
}

#[test]
fn conflicting_entries_are_truncated() {
    let mut e = engine(2, full3());
    let old = vec![
        Entry {
            term: 1,
            index: 1,
            payload: Payload::Noop,
        },
        Entry {
            term: 1,
            index: 2,
            payload: Payload::Command(b"lost".to_vec()),
        },
    ];
    e.step(Event::Message {
        from: 1,
        msg: Message::Append {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            entries: old,
            commit: 0,
            sent_at: 0,
        },
    });
    let new = vec![Entry {
        term: 2,
        index: 2,
        payload: Payload::Command(b"kept".to_vec()),
    }];
    let out = e.step(Event::Message {
        from: 3,
        msg: Message::Append {
            term: 2,
            prev_index: 1,
            prev_term: 1,
            entries: new.clone(),
            commit: 0,
            sent_at: 0,
        },
    });
    assert!(out.contains(&Command::AppendLog(new)), "{out:?}");
    assert_eq!(e.log()[1].payload, Payload::Command(b"kept".to_vec()));
    assert_eq!(e.leader(), Some(3));
}

#[test]
fn a_log_replica_never_stands_for_election() {
    let m = Membership::new([
        (1, MemberKind::Full),
        (2, MemberKind::Full),
        (4, MemberKind::Log),
    ]);
    let mut e = engine(4, m);
    for _ in 0..200 {
        let out = e.step(Event::Tick);
        assert!(sends(&out).is_empty(), "a log replica sent {out:?}");
    }
    assert_eq!(e.role(), Role::Follower);
}

#[test]
fn reads_need_a_lease_and_a_deposed_leader_has_none() {
    let mut e = elect_one();
    e.step(Event::Persisted { index: 1, term: 1 });
    e.step(Event::Message {
        from: 2,
        msg: Message::AppendResponse {
            term: 1,
            success: true,
            index: 1,
            sent_at: e.now(),
        },
    });
    let out = e.step(Event::Read { id: 9 });
    assert!(out.contains(&Command::ReadReady { id: 9 }), "{out:?}");
    // Cut off from the others: once the lease runs out, reads are refused.
    for _ in 0..10 {
        e.step(Event::Tick);
    }
    let out = e.step(Event::Read { id: 10 });
    assert!(
        matches!(out[..], [Command::ReadRejected { id: 10, .. }]),
        "{out:?}"
    );
    // A higher term deposes it.
    e.step(Event::Message {
        from: 3,
        msg: Message::Append {
            term: 2,
            prev_index: 1,
            prev_term: 1,
            entries: vec![],
            commit: 1,
            sent_at: 0,
        },
    });
    assert_eq!(e.role(), Role::Follower);
    let out = e.step(Event::Read { id: 11 });
    assert!(
        matches!(
            out[..],
            [Command::ReadRejected {
                id: 11,
                leader: Some(3)
            }]
        ),
        "{out:?}"
    );
}

#[test]
fn one_membership_change_at_a_time() {
    let mut e = elect_one();
    let add = Membership::new([
        (1, MemberKind::Full),
        (2, MemberKind::Full),
        (3, MemberKind::Full),
        (4, MemberKind::Log),
    ]);
    let out = e.step(Event::Propose {
        id: 1,
        payload: Payload::Membership(add),
    });
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::Proposed {
                id: 1,
                result: Ok(2)
            }
        )),
        "{out:?}"
    );
    assert_eq!(
        e.membership().members.len(),
        4,
        "a change takes effect once in the log"
    );
    let remove = Membership::new([
        (1, MemberKind::Full),
        (2, MemberKind::Full),
        (4, MemberKind::Log),
    ]);
    let out = e.step(Event::Propose {
        id: 2,
        payload: Payload::Membership(remove),
    });
    assert!(out.contains(&Command::Proposed {
        id: 2,
        result: Err(ProposeError::MembershipChangePending)
    }));
    let two_at_once = Membership::new([
        (1, MemberKind::Full),
        (5, MemberKind::Full),
        (6, MemberKind::Full),
    ]);
    let mut e = elect_one();
    let out = e.step(Event::Propose {
        id: 3,
        payload: Payload::Membership(two_at_once),
    });
    assert!(out.contains(&Command::Proposed {
        id: 3,
        result: Err(ProposeError::InvalidMembership)
    }));
}

#[test]
fn campaign_starts_an_election_at_once() {
    let mut e = engine(1, full3());
    let out = sends(&e.step(Event::Campaign));
    assert_eq!(out.len(), 2, "pre-votes to both peers: {out:?}");
    assert!(out
        .iter()
        .all(|(_, m)| matches!(m, Message::Vote { pre: true, .. })));
}

fn entry(term: Term, index: Index, body: &[u8]) -> Entry {
    Entry {
        term,
        index,
        payload: Payload::Command(body.to_vec()),
    }
}

#[test]
fn a_follower_behind_the_compacted_log_is_sent_a_snapshot() {
    let mut e = elect_one();
    e.step(Event::Persisted { index: 1, term: 1 });
    for i in 0..3 {
        e.step(Event::Propose {
            id: i,
            payload: Payload::Command(vec![i as u8]),
        });
    }
    e.step(Event::Persisted { index: 4, term: 1 });
    e.step(Event::Message {
        from: 2,
        msg: Message::AppendResponse {
            term: 1,
            success: true,
            index: 4,
            sent_at: 1,
        },
    });
    assert_eq!(e.applied_index(), 4);
    assert_eq!(
        e.compact(10).map(|m| m.index),
        Some(4),
        "compacts only what it applied"
    );
    assert_eq!(e.snapshot().term, 1);
    assert!(e.log().is_empty());
    assert_eq!(e.last_index(), 4);
    // Node 3 says it holds nothing: the entries it needs are gone, so it needs a snapshot, asked
    // for once and not again before the retry interval.
    let out = e.step(Event::Message {
        from: 3,
        msg: Message::AppendResponse {
            term: 1,
            success: false,
            index: 1,
            sent_at: 1,
        },
    });
    assert!(
        out.contains(&Command::SendSnapshot { to: 3, index: 4 }),
        "{out:?}"
    );
    let out = e.step(Event::Tick);
    assert!(!out
        .iter()
        .any(|c| matches!(c, Command::SendSnapshot { .. })));
    // Installed there: 3 acknowledges the snapshot's index and gets appends again.
    e.step(Event::Message {
        from: 3,
        msg: Message::AppendResponse {
            term: 1,
            success: true,
            index: 4,
            sent_at: 0,
        },
    });
    let out = e.step(Event::Propose {
        id: 9,
        payload: Payload::Command(b"next".to_vec()),
    });
    let to3: Vec<_> = sends(&out).into_iter().filter(|(to, _)| *to == 3).collect();
    assert!(
        to3.iter().any(|(_, m)| matches!(
            m,
            Message::Append {
                prev_index: 4,
                prev_term: 1,
                ..
            }
        )),
        "{out:?}"
    );
}

#[test]
fn an_installed_snapshot_replaces_a_conflicting_log_and_keeps_a_matching_one() {
    let install = |log: Vec<Entry>| {
        let mut e = engine(2, full3());
        e.step(Event::Message {
            from: 1,
            msg: Message::Append {
                term: 2,
                prev_index: 0,
                prev_term: 0,
                entries: log,
                commit: 0,
                sent_at: 0,
            },
        });
        let meta = SnapshotMeta {
            index: 2,
            term: 2,
            membership: full3(),
            max_member_id: 3,
        };
        let out = e.step(Event::SnapshotInstalled {
            from: 1,
            term: 2,
            meta,
        });
        assert!(sends(&out).iter().any(|(to, m)| *to == 1
            && matches!(
                m,
                Message::AppendResponse {
                    success: true,
                    index: 2,
                    ..
                }
            )));
        assert_eq!((e.commit_index(), e.applied_index()), (2, 2));
        assert!(
            !out.iter().any(|c| matches!(c, Command::Apply(_))),
            "the snapshot holds what the entries did"
        );
        e
    };
    let e = install(vec![
        entry(1, 1, b"a"),
        entry(1, 2, b"b"),
        entry(1, 3, b"c"),
    ]);
    assert_eq!(e.last_index(), 2, "entries after a conflicting index go");
    assert_eq!(e.term_at(2), Some(2));
    let e = install(vec![
        entry(2, 1, b"a"),
        entry(2, 2, b"b"),
        entry(2, 3, b"c"),
    ]);
    assert_eq!(e.last_index(), 3, "entries continuing the snapshot stay");
    assert_eq!(e.log(), &[entry(2, 3, b"c")]);
}

fn applies(cmds: &[Command]) -> Vec<Index> {
    cmds.iter()
        .flat_map(|c| match c {
            Command::Apply(es) => es.iter().map(|e| e.index).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn a_follower_applies_only_what_its_own_log_holds_durably() {
    let mut e = engine(2, full3());
    let entries = vec![entry(1, 1, b"a"), entry(1, 2, b"b")];
    // The leader says both are committed (it and the third replica have them on disk).
    let out = e.step(Event::Message {
        from: 1,
        msg: Message::Append {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            entries,
            commit: 2,
            sent_at: 1,
        },
    });
    assert!(applies(&out).is_empty(), "applied before durable: {out:?}");
    let out = e.step(Event::Persisted { index: 1, term: 1 });
    assert_eq!(applies(&out), vec![1]);
    let out = e.step(Event::Persisted { index: 2, term: 1 });
    assert_eq!(applies(&out), vec![2]);
}

#[test]
fn a_leader_applies_only_once_its_own_write_is_durable() {
    let mut e = elect_one();
    e.step(Event::Persisted { index: 1, term: 1 });
    e.step(Event::Propose {
        id: 5,
        payload: Payload::Command(b"x".to_vec()),
    });
    // Both followers have entry 2 on disk before the leader does: it is committed, not applied.
    let mut out = Vec::new();
    for from in [2, 3] {
        out.extend(e.step(Event::Message {
            from,
            msg: Message::AppendResponse {
                term: 1,
                success: true,
                index: 2,
                sent_at: e.now(),
            },
        }));
    }
    assert_eq!(e.commit_index(), 2);
    assert!(!applies(&out).contains(&2), "{out:?}");
    let out = e.step(Event::Persisted { index: 2, term: 1 });
    assert_eq!(applies(&out), vec![2]);
}

#[test]
fn a_leader_no_quorum_answers_steps_down() {
    let mut e = elect_one();
    let timeout = e.config().election_max;
    for _ in 0..timeout + 1 {
        e.step(Event::Tick);
    }
    assert_eq!(e.role(), Role::Follower, "check-quorum");
    assert_eq!(e.lease_start(), None);
}

#[test]
fn forged_or_broken_messages_change_nothing() {
    let mut e = engine(2, full3());
    let good = vec![entry(1, 1, b"a"), entry(1, 2, b"b")];
    e.step(Event::Message {
        from: 1,
        msg: Message::Append {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            entries: good,
            commit: 2,
            sent_at: 1,
        },
    });
    e.step(Event::Persisted { index: 2, term: 1 });
    assert_eq!(e.commit_index(), 2);
    let before = e.clone();
    let forged = [
        // Rewrites a committed entry (once an assert that took the process down).
        Message::Append {
            term: 2,
            prev_index: 0,
            prev_term: 0,
            entries: vec![entry(2, 1, b"evil")],
            commit: 0,
            sent_at: 1,
        },
        // Entries that skip an index.
        Message::Append {
            term: 1,
            prev_index: 2,
            prev_term: 1,
            entries: vec![entry(1, 3, b"c"), entry(1, 5, b"e")],
            commit: 2,
            sent_at: 1,
        },
        // Entries from a term after the message's own.
        Message::Append {
            term: 1,
            prev_index: 2,
            prev_term: 1,
            entries: vec![entry(7, 3, b"c")],
            commit: 2,
            sent_at: 1,
        },
        // Indexes that overflow.
        Message::Append {
            term: 1,
            prev_index: u64::MAX,
            prev_term: 1,
            entries: vec![entry(1, 0, b"c")],
            commit: u64::MAX,
            sent_at: 1,
        },
        // A term no election reaches.
        Message::Vote {
            term: u64::MAX,
            last_index: u64::MAX,
            last_term: u64::MAX,
            pre: false,
        },
    ];
    for msg in forged {
        let out = e.step(Event::Message { from: 3, msg });
        assert!(
            out.iter()
                .all(|c| !matches!(c, Command::AppendLog(_) | Command::Apply(_))),
            "{out:?}"
        );
    }
    assert_eq!(e.log(), before.log());
    assert_eq!(e.commit_index(), 2);
    assert!(e.term() < u64::MAX / 2);
}

#[test]
fn appends_are_cut_by_bytes() {
    let mut e = elect_one();
    e.step(Event::Persisted { index: 1, term: 1 });
    let big = vec![0u8; e.config().max_batch_bytes / 2];
    for id in 0..6 {
        e.step(Event::Propose {
            id,
            payload: Payload::Command(big.clone()),
        });
    }
    // Follower 2 is behind from the start: a rejection makes the leader resend everything.
    let out = e.step(Event::Message {
        from: 2,
        msg: Message::AppendResponse {
            term: 1,
            success: false,
            index: 1,
            sent_at: e.now(),
        },
    });
    let limit = e.config().max_batch_bytes;
    let appends: Vec<usize> = sends(&out)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Append { entries, .. } => Some(
                entries
                    .iter()
                    .map(|x| match &x.payload {
                        Payload::Command(b) => b.len(),
                        _ => 0,
                    })
                    .sum(),
            ),
            _ => None,
        })
        .collect();
    assert!(!appends.is_empty(), "{out:?}");
    assert!(
        appends.iter().all(|b| *b <= limit),
        "{appends:?} over {limit}"
    );
}

#[test]
fn a_replica_without_its_state_never_stands_for_election() {
    let mut e = engine(2, full3());
    assert!(e.set_may_lead(false).is_empty());
    for _ in 0..200 {
        let out = e.step(Event::Tick);
        assert!(sends(&out).is_empty(), "it campaigned: {out:?}");
    }
    assert!(e.step(Event::Campaign).is_empty());
    // It still votes: the group needs its log.
    let out = e.step(Event::Message {
        from: 1,
        msg: Message::Vote {
            term: 1,
            last_index: 0,
            last_term: 0,
            pre: true,
        },
    });
    assert!(
        sends(&out)
            .iter()
            .any(|(_, m)| matches!(m, Message::VoteResponse { granted: true, .. })),
        "{out:?}"
    );
    // A leader that loses its state steps down.
    let mut leader = elect_one();
    let out = leader.set_may_lead(false);
    assert_eq!(leader.role(), Role::Follower, "{out:?}");
}

/// A leader's append as an event: from `from` in `term`, after `prev` (index, term).
fn append_event(
    from: NodeId,
    term: Term,
    prev: (Index, Term),
    entries: Vec<Entry>,
    commit: Index,
    sent_at: u64,
) -> Event {
    Event::Message {
        from,
        msg: Message::Append {
            term,
            prev_index: prev.0,
            prev_term: prev.1,
            entries,
            commit,
            sent_at,
        },
    }
}

fn acks(cmds: &[Command]) -> Vec<(Index, u64)> {
    sends(cmds)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::AppendResponse {
                success: true,
                index,
                sent_at,
                ..
            } => Some((index, sent_at)),
            _ => None,
        })
        .collect()
}

/// A follower whose fsyncs take longer than the leader's heartbeat gets a new append before each
/// fsync ends. It must still acknowledge what is durable after every fsync, with the newest send
/// time: otherwise the leader hears nothing, loses its quorum and steps down while every replica
/// is healthy (leader churn under large writes).
#[test]
fn a_follower_acknowledges_what_is_durable_while_appends_keep_coming() {
    let mut e = engine(2, full3());
    let mut next = 1;
    let mut all_acks = Vec::new();
    for round in 1..=5u64 {
        let entries: Vec<Entry> = (next..next + 3).map(|i| entry(1, i, b"big")).collect();
        let prev = next - 1;
        next += 3;
        e.step(append_event(
            1,
            1,
            (prev, if prev == 0 { 0 } else { 1 }),
            entries,
            prev,
            round * 5,
        ));
        // The fsync of the previous round's entries ends only now, after the next append came.
        if round > 1 {
            let out = e.step(Event::Persisted {
                index: prev,
                term: 1,
            });
            let got = acks(&out);
            assert_eq!(
                got,
                vec![(prev, round * 5)],
                "round {round}: the durable prefix is acknowledged with the newest send time"
            );
            all_acks.extend(got);
        }
    }
    let out = e.step(Event::Persisted {
        index: next - 1,
        term: 1,
    });
    assert_eq!(acks(&out), vec![(next - 1, 25)]);
    // Nothing is acknowledged twice for the same durable index and send time.
    let out = e.step(Event::Persisted {
        index: next - 1,
        term: 1,
    });
    assert!(acks(&out).is_empty(), "{out:?}");
    assert_eq!(all_acks.len(), 4);
}

/// A follower with an old leader's entries not yet durable hears from a new leader that holds
/// other entries at those indexes. Once the old entries are durable, the follower must not tell
/// the new leader it holds them: the new leader would count them as its own and commit entries
/// the follower does not have.
#[test]
fn a_new_leader_is_not_acknowledged_what_the_old_one_sent() {
    let mut e = engine(2, full3());
    e.step(append_event(
        1,
        1,
        (0, 0),
        vec![entry(1, 1, b"a"), entry(1, 2, b"b"), entry(1, 3, b"c")],
        0,
        4,
    ));
    // Replica 3 leads term 2 with entry 3 of its own; its first append to us checks entry 1 only.
    let out = e.step(append_event(3, 2, (1, 1), vec![], 0, 9));
    assert!(acks(&out).is_empty(), "{out:?}");
    let out = e.step(Event::Persisted { index: 3, term: 1 });
    for (to, m) in sends(&out) {
        if let Message::AppendResponse {
            success: true,
            index,
            ..
        } = m
        {
            assert_eq!(to, 3);
            assert!(
                index <= 1,
                "acknowledged entries up to {index} to the new leader, which checked only 1"
            );
        }
    }
}

/// The log keeps at most `payload_cache_bytes` of commands in memory, dropping the oldest applied
/// and durable ones first; what is not yet applied keeps its bytes whatever the limit.
#[test]
fn the_log_keeps_command_bytes_in_memory_up_to_its_limit() {
    let mut e = engine(2, full3());
    e.set_payload_cache_bytes(250);
    let entries: Vec<Entry> = (1..=6).map(|i| entry(1, i, &[i as u8; 100])).collect();
    e.step(append_event(1, 1, (0, 0), entries, 4, 1));
    assert_eq!(e.cached_bytes(), 600, "nothing is applied yet");
    let out = e.step(Event::Persisted { index: 6, term: 1 });
    assert_eq!(applies(&out), vec![1, 2, 3, 4]);
    // 1..=4 are applied and durable: the oldest go until 250 bytes remain at most.
    assert_eq!(e.cached_bytes(), 200);
    let kinds: Vec<bool> = e
        .log()
        .iter()
        .map(|x| matches!(x.payload, Payload::OnDisk { len: 100 }))
        .collect();
    assert_eq!(kinds, vec![true, true, true, true, false, false]);
    // The log's size for compaction still counts every entry.
    assert!(e.log_bytes() >= 600);
    // A leader does not take an entry without its bytes from anyone.
    let out = e.step(Event::Message {
        from: 1,
        msg: Message::Append {
            term: 1,
            prev_index: 6,
            prev_term: 1,
            entries: vec![Entry {
                term: 1,
                index: 7,
                payload: Payload::OnDisk { len: 5 },
            }],
            commit: 6,
            sent_at: 2,
        },
    });
    assert_eq!(e.last_index(), 6, "{out:?}");
}

/// The leader of `elect_one` with its log compacted to 4 and node 3 never heard from: its
/// heartbeats to 3 are snapshot requests only, with no append among them.
fn leader_needing_a_snapshot_for_3() -> Engine {
    let mut e = elect_one();
    e.step(Event::Persisted { index: 1, term: 1 });
    for i in 0..3 {
        e.step(Event::Propose {
            id: i,
            payload: Payload::Command(vec![i as u8]),
        });
    }
    e.step(Event::Persisted { index: 4, term: 1 });
    e.step(Event::Message {
        from: 2,
        msg: Message::AppendResponse {
            term: 1,
            success: true,
            index: 4,
            sent_at: 1,
        },
    });
    assert_eq!(e.compact(10).map(|m| m.index), Some(4));
    // Heartbeats for a while (within the check-quorum timeout: 2 acknowledged at tick 1).
    let mut asked = false;
    for _ in 0..8 {
        let out = e.step(Event::Tick);
        assert!(
            !sends(&out).iter().any(|(to, _)| *to == 3),
            "a message went to 3: {out:?}"
        );
        asked |= out.contains(&Command::SendSnapshot { to: 3, index: 4 });
    }
    assert_eq!(e.role(), Role::Leader);
    assert!(asked, "no snapshot was asked for");
    e
}

#[test]
fn a_follower_that_never_heard_its_leader_acknowledges_the_snapshot_it_was_sent() {
    // Node 3 restarted (no leader known, at the leader's term or an older one) while its leader's
    // log was compacted past it: the leader asks for an install and sends it nothing else, so
    // the install's acknowledgement is the only way the leader learns where 3 stands. Without it
    // the leader asks again for ever, and 3 holds only what each snapshot held.
    for own_term in [1, 0] {
        let mut leader = leader_needing_a_snapshot_for_3();
        let hs = HardState {
            term: own_term,
            voted_for: None,
        };
        let snap = SnapshotMeta {
            index: 0,
            term: 0,
            membership: full3(),
            max_member_id: 3,
        };
        let mut f = Engine::restore(Config::new(3, 7), hs, snap, Vec::new(), 0);
        assert_eq!(f.leader(), None);
        let out = f.step(Event::SnapshotInstalled {
            from: 1,
            term: 1,
            meta: leader.snapshot().clone(),
        });
        assert_eq!((f.term(), f.leader()), (1, Some(1)), "own term {own_term}");
        if own_term == 0 {
            assert!(
                out.contains(&Command::PersistHardState(HardState {
                    term: 1,
                    voted_for: None
                })),
                "the newer term is made durable: {out:?}"
            );
        }
        let ack = sends(&out)
            .into_iter()
            .find(|(to, m)| *to == 1 && matches!(m, Message::AppendResponse { .. }))
            .unwrap_or_else(|| panic!("no acknowledgement to the leader: {out:?}"));
        assert_eq!(
            ack.1,
            Message::AppendResponse {
                term: 1,
                success: true,
                index: 4,
                sent_at: 0
            }
        );
        leader.step(Event::Message {
            from: 3,
            msg: ack.1,
        });
        assert_eq!(leader.peer_progress(3).map(|p| p.0), Some(4));
        let out = leader.step(Event::Propose {
            id: 9,
            payload: Payload::Command(b"next".to_vec()),
        });
        assert!(
            sends(&out).iter().any(|(to, m)| *to == 3
                && matches!(
                    m,
                    Message::Append {
                        prev_index: 4,
                        prev_term: 1,
                        ..
                    }
                )),
            "3 gets appends again: {out:?}"
        );
    }
}

#[test]
fn an_install_no_leader_asked_for_acknowledges_nobody() {
    // A rebuild of a replica's own accord (term 0: no leader asked) takes the snapshot but tells
    // no one and changes no term.
    let mut f = engine(3, full3());
    let meta = SnapshotMeta {
        index: 4,
        term: 1,
        membership: full3(),
        max_member_id: 3,
    };
    let out = f.step(Event::SnapshotInstalled {
        from: 1,
        term: 0,
        meta,
    });
    assert!(sends(&out).is_empty(), "{out:?}");
    assert_eq!((f.term(), f.leader(), f.commit_index()), (0, None, 4));
}

#[test]
fn an_install_asked_by_a_deposed_leader_does_not_take_its_term() {
    let mut f = Engine::restore(
        Config::new(3, 7),
        HardState {
            term: 5,
            voted_for: None,
        },
        SnapshotMeta {
            index: 0,
            term: 0,
            membership: full3(),
            max_member_id: 3,
        },
        Vec::new(),
        0,
    );
    let meta = SnapshotMeta {
        index: 4,
        term: 1,
        membership: full3(),
        max_member_id: 3,
    };
    let out = f.step(Event::SnapshotInstalled {
        from: 1,
        term: 2,
        meta,
    });
    assert_eq!((f.term(), f.leader()), (5, None));
    // The old leader hears the newer term (and steps down) rather than a success it could count.
    assert!(
        sends(&out).iter().all(|(_, m)| matches!(
            m,
            Message::AppendResponse {
                term: 5,
                success: false,
                ..
            }
        )),
        "{out:?}"
    );
}

#[test]
fn heartbeats_fall_on_the_ticks_their_phase_names() {
    // Groups a node hosts start their clocks at different times; with the phase that maps each
    // one's ticks onto the node's, all send heartbeats in the same rounds (one message a node).
    for phase in 0..5u64 {
        let cfg = Config {
            heartbeat_interval: 5,
            ..Config::new(1, 7)
        };
        let mut e = Engine::new(cfg, HardState::default(), Vec::new(), full3(), 0);
        e.set_heartbeat_phase(phase + 10);
        let vote = |pre| Event::Message {
            from: 2,
            msg: Message::VoteResponse {
                term: 1,
                granted: true,
                pre,
            },
        };
        tick_until_sends(&mut e);
        e.step(vote(true));
        e.step(vote(false));
        assert_eq!(e.role(), Role::Leader);
        let mut beats = Vec::new();
        for _ in 0..15 {
            let out = e.step(Event::Tick);
            if sends(&out)
                .iter()
                .any(|(_, m)| matches!(m, Message::Append { .. }))
            {
                beats.push(e.now());
            }
            // Acknowledged, so it keeps leading.
            e.step(Event::Message {
                from: 2,
                msg: Message::AppendResponse {
                    term: 1,
                    success: true,
                    index: 0,
                    sent_at: e.now(),
                },
            });
        }
        assert_eq!(beats.len(), 3, "phase {phase}: {beats:?}");
        assert!(
            beats.iter().all(|t| (t + phase) % 5 == 0),
            "phase {phase}: heartbeats at {beats:?}"
        );
    }
}
