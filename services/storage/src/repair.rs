//! What a leader does next to keep its group whole: a pure decision from a view of the group,
//! carried out by `heal.rs`. One step at a time, re-decided every round from the group's state,
//! so a new leader carries on where the old one stopped.

use std::collections::BTreeMap;

use tern_proto::memds::{PlaceReplicaRequest, Replica};
use tern_replication::{Index, MemberKind, NodeId};

/// A replacement MemDS placed for this group, not yet (fully) in its membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The silent member it replaces (none when the group was short of members).
    pub replacing: Option<NodeId>,
    pub id: NodeId,
    pub node: String,
    pub az: String,
}

/// A member as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub kind: MemberKind,
    /// Where it lives, if known.
    pub node: Option<String>,
    /// Leader: its durable match and the tick of its newest acknowledgement.
    pub matched: Index,
    pub acked_at: Option<u64>,
}

/// The group as the planner sees it.
#[derive(Clone, Debug)]
pub struct GroupView {
    pub partition_id: u64,
    pub me: NodeId,
    pub leading: bool,
    pub has_lease: bool,
    /// A step is under way, or the last one failed recently.
    pub waiting: bool,
    pub change_pending: bool,
    pub members: BTreeMap<NodeId, MemberView>,
    pub now: u64,
    pub leader_since: u64,
    /// Ticks of silence after which a member is replaced.
    pub grace: u64,
    pub commit: Index,
    pub placed: Option<Placed>,
    /// The smallest member id no member has had.
    pub unused_id: NodeId,
    /// What MemDS should hear, and what it last accepted from us.
    pub report: (Vec<Replica>, String),
    pub reported: Option<(Vec<Replica>, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Tell MemDS the membership and that we lead.
    Report(Vec<Replica>, String),
    /// Ask MemDS for a new replica (replacing a silent member, or because the group is short).
    Place(PlaceReplicaRequest, Option<NodeId>),
    /// The member a placement was to replace answers again: forget the placement and drop the
    /// replica placed for it.
    KeepReturned { orphan_node: String },
    /// Propose this membership (one change: a silent member out, or the placed one in as a log
    /// replica).
    Propose(BTreeMap<NodeId, MemberKind>),
    /// The placement is in the membership already (or moot): forget it.
    ForgetPlaced,
    /// Have a caught-up log replica rebuild its items (then it is promoted).
    Rebuild(NodeId, String),
}

impl GroupView {
    fn silent(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| {
            self.now
                .saturating_sub(m.acked_at.unwrap_or(0).max(self.leader_since))
                > self.grace
        })
    }

    fn kinds(&self) -> BTreeMap<NodeId, MemberKind> {
        self.members.iter().map(|(id, m)| (*id, m.kind)).collect()
    }

    fn member_nodes(&self) -> Vec<String> {
        self.members
            .values()
            .filter_map(|m| m.node.clone())
            .collect()
    }
}

/// The group's next repair step, if any.
pub fn next_step(v: &GroupView) -> Option<Step> {
    if !v.leading || v.waiting {
        return None;
    }
    if !v.change_pending && v.reported.as_ref() != Some(&v.report) {
        return Some(Step::Report(v.report.0.clone(), v.report.1.clone()));
    }
    if v.change_pending || !v.has_lease {
        return None;
    }
    if let Some(p) = &v.placed {
        return Some(continue_placement(v, p));
    }
    let dead = v
        .members
        .keys()
        .copied()
        .find(|id| *id != v.me && v.silent(*id));
    let place = |replacing: Option<NodeId>| {
        let replacing_node = replacing
            .and_then(|d| v.members.get(&d))
            .and_then(|m| m.node.clone())
            .unwrap_or_default();
        let req = PlaceReplicaRequest {
            partition_id: v.partition_id,
            member_id: v.unused_id,
            member_nodes: v.member_nodes(),
            replacing_node,
        };
        Step::Place(req, replacing)
    };
    if let Some(d) = dead.filter(|_| v.members.len() >= 3) {
        return Some(place(Some(d)));
    }
    if v.members.len() < 3 {
        return Some(place(None));
    }
    v.members
        .iter()
        .find(|(_, m)| m.kind == MemberKind::Log && m.matched >= v.commit)
        .and_then(|(id, m)| Some(Step::Rebuild(*id, m.node.clone()?)))
}

fn continue_placement(v: &GroupView, p: &Placed) -> Step {
    match p.replacing {
        Some(old) if v.members.contains_key(&old) => {
            if !v.silent(old) {
                return Step::KeepReturned {
                    orphan_node: p.node.clone(),
                };
            }
            let mut m = v.kinds();
            m.remove(&old);
            Step::Propose(m)
        }
        _ if !v.members.contains_key(&p.id) => {
            let mut m = v.kinds();
            m.insert(p.id, MemberKind::Log);
            Step::Propose(m)
        }
        _ => Step::ForgetPlaced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(kind: MemberKind, node: &str, matched: Index, acked_at: u64) -> MemberView {
        MemberView {
            kind,
            node: Some(node.into()),
            matched,
            acked_at: Some(acked_at),
        }
    }

    /// Member 1 leads on node a; 2 on b and 3 on c acknowledged at tick 1000.
    fn healthy() -> GroupView {
        let report = (vec![Replica::default()], "a".to_string());
        GroupView {
            partition_id: 9,
            me: 1,
            leading: true,
            has_lease: true,
            waiting: false,
            change_pending: false,
            members: BTreeMap::from([
                (1, member(MemberKind::Full, "a", 50, 1000)),
                (2, member(MemberKind::Full, "b", 50, 1000)),
                (3, member(MemberKind::Full, "c", 50, 1000)),
            ]),
            now: 1000,
            leader_since: 0,
            grace: 100,
            commit: 50,
            placed: None,
            unused_id: 4,
            reported: Some(report.clone()),
            report,
        }
    }

    #[test]
    fn a_healthy_group_needs_nothing() {
        assert_eq!(next_step(&healthy()), None);
        let mut v = healthy();
        v.leading = false;
        v.members.get_mut(&3).unwrap().acked_at = Some(0);
        assert_eq!(next_step(&v), None, "only a leader repairs");
    }

    #[test]
    fn memds_hears_of_a_changed_membership_first() {
        let mut v = healthy();
        v.reported = None;
        assert!(matches!(next_step(&v), Some(Step::Report(_, leader)) if leader == "a"));
        v.change_pending = true;
        assert_eq!(next_step(&v), None, "not while a change is in flight");
    }

    #[test]
    fn a_silent_member_gets_a_replacement_placed() {
        let mut v = healthy();
        v.now = 1101;
        v.members.get_mut(&3).unwrap().acked_at = Some(1000);
        v.members.get_mut(&2).unwrap().acked_at = Some(1100);
        let Some(Step::Place(req, replacing)) = next_step(&v) else {
            panic!("{:?}", next_step(&v));
        };
        assert_eq!(replacing, Some(3));
        assert_eq!(req.replacing_node, "c");
        assert_eq!(req.member_id, 4);
        assert_eq!(req.member_nodes, vec!["a", "b", "c"]);
        // Not without a lease: it may not be the leader any more.
        v.has_lease = false;
        assert_eq!(next_step(&v), None);
    }

    #[test]
    fn a_new_leader_waits_a_grace_before_calling_anyone_silent() {
        let mut v = healthy();
        v.members.get_mut(&3).unwrap().acked_at = None;
        v.leader_since = 950;
        assert_eq!(next_step(&v), None);
    }

    #[test]
    fn a_placement_goes_in_one_change_at_a_time() {
        let mut v = healthy();
        v.now = 1200;
        v.members.get_mut(&2).unwrap().acked_at = Some(1199);
        v.placed = Some(Placed {
            replacing: Some(3),
            id: 4,
            node: "d".into(),
            az: "az-c".into(),
        });
        // First the silent member goes...
        let Some(Step::Propose(m)) = next_step(&v) else {
            panic!("{:?}", next_step(&v));
        };
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        // ...then the new one comes in as a log replica...
        v.members.remove(&3);
        let Some(Step::Propose(m)) = next_step(&v) else {
            panic!("{:?}", next_step(&v));
        };
        assert_eq!(m.get(&4), Some(&MemberKind::Log));
        // ...and once it is in, the placement is done.
        v.members.insert(4, member(MemberKind::Log, "d", 10, 1199));
        assert_eq!(next_step(&v), Some(Step::ForgetPlaced));
    }

    #[test]
    fn a_member_that_comes_back_keeps_its_place() {
        let mut v = healthy();
        v.placed = Some(Placed {
            replacing: Some(3),
            id: 4,
            node: "d".into(),
            az: "az-c".into(),
        });
        assert_eq!(
            next_step(&v),
            Some(Step::KeepReturned {
                orphan_node: "d".into()
            })
        );
    }

    #[test]
    fn a_caught_up_log_replica_is_rebuilt() {
        let mut v = healthy();
        v.members.insert(4, member(MemberKind::Log, "d", 49, 1000));
        v.members.remove(&3);
        assert_eq!(next_step(&v), None, "still behind the commit index");
        v.members.get_mut(&4).unwrap().matched = 50;
        assert_eq!(next_step(&v), Some(Step::Rebuild(4, "d".into())));
    }

    #[test]
    fn a_group_short_of_members_asks_for_one() {
        let mut v = healthy();
        v.members.remove(&3);
        assert!(matches!(next_step(&v), Some(Step::Place(_, None))));
    }
}
