//! A bounded model check of the engine with stateright: three engines, a network that loses and
//! reorders messages (any message in flight may be delivered next, or never), log writes that
//! complete one at a time and are lost by a crash, crashes and restarts from what is durable,
//! elections started by timeouts, and a client proposal. Every interleaving within the bounds is
//! explored, checking election safety, log matching, leader completeness and state-machine safety
//! in every state reached.
//!
//! Breadth-first to `TERN_MODEL_DEPTH` states deep (default 12: about 660,000 states, 2 GB, with
//! no crash: CI's bound, deep enough to elect leaders, commit an entry, and catch a double vote);
//! `TERN_MODEL_CRASHES=1` adds a crash (depth 12: 5 million states, 15 GB), `TERN_MODEL_STATES=N`
//! stops after N states.

use std::collections::{BTreeMap, VecDeque};

use stateright::{Checker, Model, Property};
use tern_replication::*;

const NODES: u64 = 3;
/// Election timeout, fixed: time is modelled only as timeouts firing.
const ELECTION_TICKS: u64 = 2;
/// Bounds: ticks per node, term, proposals, crashes, messages in flight.
const MAX_NOW: u64 = 2 * ELECTION_TICKS;
const MAX_TERM: Term = 3;
const MAX_PROPOSALS: u8 = 1;
const MAX_IN_FLIGHT: usize = 8;
/// The fewest steps to a commit: an election, then the new leader's no-op made durable on two.
const COMMIT_DEPTH: usize = 11;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Node {
    engine: Engine,
    /// Durable hard state and log.
    hs: HardState,
    log: Vec<Entry>,
    /// Log writes not yet durable, completing in order.
    writes: VecDeque<Vec<Entry>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    nodes: Vec<Node>,
    /// Messages in flight, kept sorted (a set with multiplicity: order carries no meaning).
    net: Vec<(NodeId, NodeId, Message)>,
    /// Every entry applied anywhere, by index.
    applied: BTreeMap<Index, Entry>,
    leaders: BTreeMap<Term, NodeId>,
    proposals: u8,
    crashes: u8,
    violation: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    /// Time passes for one node: its election timer fires (and a leader it heard is not recent).
    Timeout(usize),
    Deliver(usize),
    Propose(usize),
    Persist(usize),
    Crash(usize),
}

struct Group {
    depth: usize,
    crashes: u8,
}

fn config(id: NodeId) -> Config {
    let mut cfg = Config::new(id, id);
    (cfg.election_min, cfg.election_max) = (ELECTION_TICKS, ELECTION_TICKS + 1);
    // No heartbeats: appends follow proposals and responses only, which keeps the space small.
    cfg.heartbeat_interval = 1_000;
    cfg
}

fn membership() -> Membership {
    Membership::new((1..=NODES).map(|i| (i, MemberKind::Full)))
}

impl State {
    fn step(&mut self, i: usize, event: Event) {
        let id = i as NodeId + 1;
        let cmds = self.nodes[i].engine.step(event);
        for c in cmds {
            match c {
                Command::Send { to, msg } => {
                    let m = (id, to, msg);
                    let at = self.net.partition_point(|x| *x < m);
                    self.net.insert(at, m);
                }
                Command::PersistHardState(hs) => self.nodes[i].hs = hs,
                Command::AppendLog(entries) => self.nodes[i].writes.push_back(entries),
                Command::Apply(entries) => {
                    for e in entries {
                        match self.applied.get(&e.index) {
                            Some(a) if *a != e => self.fail(format!(
                                "state machine safety: {id} applies {e:?} over {a:?}"
                            )),
                            Some(_) => {}
                            None => {
                                self.applied.insert(e.index, e);
                            }
                        }
                    }
                }
                Command::RoleChanged {
                    role: Role::Leader,
                    term,
                    ..
                } => {
                    if let Some(other) = self.leaders.insert(term, id) {
                        if other != id {
                            self.fail(format!(
                                "election safety: {other} and {id} lead term {term}"
                            ));
                        }
                    }
                    let engine = &self.nodes[i].engine;
                    let lacks = self
                        .applied
                        .iter()
                        .find(|(ix, e)| engine.entries(*ix - 1, **ix).first() != Some(*e));
                    if let Some((ix, _)) = lacks {
                        self.fail(format!(
                            "leader completeness: {id} leads term {term} without entry {ix}"
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    fn fail(&mut self, what: String) {
        self.violation.get_or_insert(what);
    }
}

fn logs_match(s: &State) -> bool {
    s.nodes.iter().all(|a| {
        s.nodes.iter().all(|b| {
            let (ea, eb) = (&a.engine, &b.engine);
            let to = ea.last_index().min(eb.last_index());
            match (1..=to).rev().find(|i| ea.term_at(*i) == eb.term_at(*i)) {
                Some(i) => ea.entries(0, i) == eb.entries(0, i),
                None => true,
            }
        })
    })
}

impl Model for Group {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let nodes = (1..=NODES)
            .map(|id| Node {
                engine: Engine::new(
                    config(id),
                    HardState::default(),
                    Vec::new(),
                    membership(),
                    0,
                ),
                hs: HardState::default(),
                log: Vec::new(),
                writes: VecDeque::new(),
            })
            .collect();
        vec![State {
            nodes,
            net: Vec::new(),
            applied: BTreeMap::new(),
            leaders: BTreeMap::new(),
            proposals: 0,
            crashes: 0,
            violation: None,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if s.violation.is_some() {
            return;
        }
        for (i, n) in s.nodes.iter().enumerate() {
            let e = &n.engine;
            if e.now() < MAX_NOW && e.role() != Role::Leader && e.term() < MAX_TERM {
                actions.push(Action::Timeout(i));
            }
            if e.role() == Role::Leader && s.proposals < MAX_PROPOSALS {
                actions.push(Action::Propose(i));
            }
            if !n.writes.is_empty() {
                actions.push(Action::Persist(i));
            }
            if s.crashes < self.crashes {
                actions.push(Action::Crash(i));
            }
        }
        for m in 0..s.net.len() {
            if m > 0 && s.net[m] == s.net[m - 1] {
                continue;
            }
            actions.push(Action::Deliver(m));
        }
    }

    fn next_state(&self, s: &State, action: Action) -> Option<State> {
        let mut s = s.clone();
        match action {
            Action::Timeout(i) => {
                for _ in 0..ELECTION_TICKS {
                    s.step(i, Event::Tick);
                }
            }
            Action::Deliver(m) => {
                let (from, to, msg) = s.net.remove(m);
                s.step(to as usize - 1, Event::Message { from, msg });
            }
            Action::Propose(i) => {
                s.proposals += 1;
                let id = u64::from(s.proposals);
                s.step(
                    i,
                    Event::Propose {
                        id,
                        payload: Payload::Command(vec![s.proposals]),
                    },
                );
            }
            Action::Persist(i) => {
                let entries = s.nodes[i].writes.pop_front()?;
                let last = entries.last()?.clone();
                let log = &mut s.nodes[i].log;
                log.truncate(entries[0].index as usize - 1);
                log.extend(entries);
                s.step(
                    i,
                    Event::Persisted {
                        index: last.index,
                        term: last.term,
                    },
                );
            }
            Action::Crash(i) => {
                s.crashes += 1;
                let n = &mut s.nodes[i];
                n.writes.clear();
                n.engine = Engine::new(
                    config(i as NodeId + 1),
                    n.hs,
                    n.log.clone(),
                    membership(),
                    0,
                );
                s.net.retain(|(_, to, _)| *to != i as NodeId + 1);
            }
        }
        Some(s)
    }

    fn within_boundary(&self, s: &State) -> bool {
        s.net.len() <= MAX_IN_FLIGHT
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(
                "election safety, leader completeness, state machine safety",
                |_, s: &State| s.violation.is_none(),
            ),
            Property::always("log matching", |_, s: &State| logs_match(s)),
            Property::sometimes("a leader is elected", |_, s: &State| !s.leaders.is_empty()),
        ];
        // Sanity of the bounds: deep enough, an entry commits somewhere.
        if self.depth >= COMMIT_DEPTH {
            properties.push(Property::sometimes("an entry commits", |_, s: &State| {
                !s.applied.is_empty()
            }));
        }
        properties
    }
}

#[test]
fn bounded_model_check() {
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (depth, states) = (var("TERN_MODEL_DEPTH", 12), var("TERN_MODEL_STATES", 0));
    let crashes = var("TERN_MODEL_CRASHES", 0) as u8;
    let mut checker = Group { depth, crashes }
        .checker()
        .threads(1)
        .target_max_depth(depth);
    if states > 0 {
        checker = checker.target_state_count(states);
    }
    let started = std::time::Instant::now();
    let checker = checker.spawn_bfs().join();
    println!(
        "model check to depth {depth}, {crashes} crashes: {} states ({} unique) in {:?}",
        checker.state_count(),
        checker.unique_state_count(),
        started.elapsed()
    );
    checker.assert_properties();
}
