//! The replication engine of a partition's replication group, as a pure state machine: events
//! in ([`Event`]), commands out ([`Command`]); no I/O, no clock, no randomness but a seeded
//! generator of its own. The storage node's runtime does the network and the disk around it.
//!
//! `tests/simulation.rs` runs seeded randomized simulations of groups with message loss, delay,
//! duplication and reordering, crashes that lose unsynced writes, and membership changes, and
//! checks Raft's safety properties and the linearizability of client histories.

mod engine;
mod types;

pub use engine::{Config, Engine};
pub use types::*;
