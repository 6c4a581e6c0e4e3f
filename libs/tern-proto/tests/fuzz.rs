//! Property-based fuzz tests of every bus and log message of `tern-proto`: `prost::Message::decode`
//! of arbitrary bytes, of protobuf-shaped bytes, and of valid encodings with bytes flipped,
//! inserted or cut off yields a message or a `DecodeError`, never a panic, a stack overflow, or
//! unbounded time. What decodes re-encodes to bytes that decode to the same message.
//!
//! Every message type is listed once, in `messages!` below; `every_message_type_is_listed` checks
//! the list against the derives in `src/`.
//!
//! The default case counts keep the whole file within a few seconds in a debug build. A long run:
//!
//! ```sh
//! PROPTEST_CASES=100000 cargo test -p tern-proto --release --test fuzz
//! ```
//!
//! (`PROPTEST_CASES` replaces every property's case count.)

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use tern_proto::{archive, expr, gac, memds, node, raft, storage};

// ---------------------------------------------------------------------------------------------
// Harness

/// `cases` unless `PROPTEST_CASES` says otherwise (the count is set here, so the variable is read
/// here too). Failures are not persisted: a failing input becomes a named regression test.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        // A fixed seed unless PROPTEST_RNG_SEED names another: the same cases on every CI run.
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(20261129),
        ),
        ..ProptestConfig::default()
    }
}

/// Runs `f` on a thread with a tokio worker's 2 MiB stack and fails unless it returns within a
/// few seconds. A stack overflow aborts the whole test binary: that, too, is a failure.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    let handle = std::thread::Builder::new()
        .name(what.to_string())
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(v) => {
            handle.join().expect("joined");
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no answer after {:?}", started.elapsed())
        }
    }
}

/// Decodes `bytes` as `M` every way a receiver might; what decodes must re-encode faithfully.
fn check<M: Message + Default + PartialEq + Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let from_slice = M::decode(bytes);
    // `bytes = "bytes"` fields take a different path from a `Bytes` buffer (zero copy).
    let from_bytes = M::decode(bytes::Bytes::copy_from_slice(bytes));
    prop_assert_eq!(from_slice.is_ok(), from_bytes.is_ok());
    if let (Ok(m), Ok(n)) = (&from_slice, &from_bytes) {
        prop_assert_eq!(m, n);
        let again = m.encode_to_vec();
        prop_assert_eq!(again.len(), m.encoded_len());
        let decoded = M::decode(again.as_slice()).ok();
        prop_assert_eq!(decoded.as_ref(), Some(m));
        // Protobuf messages concatenate: two encodings in a row decode (as their merge).
        let twice = [again.as_slice(), bytes].concat();
        prop_assert!(M::decode(twice.as_slice()).is_ok());
    }
    let _ = M::decode_length_delimited(bytes);
    let mut merged = M::default();
    let _ = merged.merge(bytes);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Protobuf-shaped bytes

/// One field on the wire, of any wire type, with a value of any shape.
#[derive(Debug, Clone)]
enum Wire {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(Vec<u8>),
    Text(String),
    Packed(Vec<u64>),
    Nested(Vec<(u32, Wire)>),
    Group(Vec<(u32, Wire)>),
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_field(tag: u32, w: &Wire, out: &mut Vec<u8>) {
    let key =
        |wire_type: u64, out: &mut Vec<u8>| put_varint((u64::from(tag) << 3) | wire_type, out);
    let delimited = |body: &[u8], out: &mut Vec<u8>| {
        key(2, out);
        put_varint(body.len() as u64, out);
        out.extend_from_slice(body);
    };
    match w {
        Wire::Varint(v) => {
            key(0, out);
            put_varint(*v, out);
        }
        Wire::Fixed64(v) => {
            key(1, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Wire::Fixed32(v) => {
            key(5, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Wire::Bytes(b) => delimited(b, out),
        Wire::Text(s) => delimited(s.as_bytes(), out),
        Wire::Packed(vs) => {
            let mut body = Vec::new();
            for v in vs {
                put_varint(*v, &mut body);
            }
            delimited(&body, out);
        }
        Wire::Nested(fields) => delimited(&encode(fields), out),
        Wire::Group(fields) => {
            key(3, out);
            out.extend_from_slice(&encode(fields));
            key(4, out);
        }
    }
}

fn encode(fields: &[(u32, Wire)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, w) in fields {
        put_field(*tag, w, &mut out);
    }
    out
}

fn tag() -> impl Strategy<Value = u32> {
    prop_oneof![
        12 => 1u32..=10,
        1 => 11u32..64,
        1 => Just((1 << 29) - 1),
        1 => Just(0u32),
    ]
}

fn scalar_wire() -> impl Strategy<Value = Wire> {
    let small = prop_oneof![0u64..4, Just(u64::MAX), Just(i32::MAX as u64), any::<u64>()];
    prop_oneof![
        4 => small.clone().prop_map(Wire::Varint),
        1 => any::<u64>().prop_map(Wire::Fixed64),
        1 => any::<u32>().prop_map(Wire::Fixed32),
        2 => vec(any::<u8>(), 0..24).prop_map(Wire::Bytes),
        3 => "(?s).{0,12}".prop_map(Wire::Text),
        2 => vec(small, 0..6).prop_map(Wire::Packed),
    ]
}

/// Fields, nesting submessages and groups a few levels deep.
fn fields() -> impl Strategy<Value = Vec<(u32, Wire)>> {
    let nested = scalar_wire().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            3 => vec((tag(), inner.clone()), 0..4).prop_map(Wire::Nested),
            1 => vec((tag(), inner), 0..3).prop_map(Wire::Group),
        ]
    });
    let wire = prop_oneof![3 => scalar_wire(), 2 => nested];
    vec((tag(), wire), 0..32)
}

/// A valid encoding of `M` out of `fields`: each field is kept if the message still decodes with
/// it (a submessage field repeated merges, so nested messages fill up field by field too), then
/// re-encoded canonically.
fn greedy<M: Message + Default>(fields: &[(u32, Wire)]) -> Vec<u8> {
    let mut kept = Vec::new();
    for (tag, w) in fields {
        let mut candidate = kept.clone();
        put_field(*tag, w, &mut candidate);
        if M::decode(candidate.as_slice()).is_ok() {
            kept = candidate;
        }
    }
    M::decode(kept.as_slice())
        .expect("kept fields decode")
        .encode_to_vec()
}

/// A change to a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Remove(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    Duplicate(prop::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => (any::<prop::sample::Index>(), vec(any::<u8>(), 1..6))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<prop::sample::Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        1 => (any::<prop::sample::Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: &prop::sample::Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
    match m {
        Mutation::Flip(i, x) => {
            if !bytes.is_empty() {
                let i = i.index(bytes.len());
                bytes[i] ^= x;
            }
        }
        Mutation::Insert(i, b) => {
            let i = at(i, bytes.len());
            bytes.splice(i..i, b.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let i = at(i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Truncate(i) => {
            let i = at(i, bytes.len());
            bytes.truncate(i);
        }
        Mutation::Duplicate(i, n) => {
            let i = at(i, bytes.len());
            let end = (i + n).min(bytes.len());
            let part = bytes[i..end].to_vec();
            bytes.splice(i..i, part);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The messages

macro_rules! messages {
    ($($m:ty),* $(,)?) => {
        /// Every message type, as written in the list.
        const MESSAGES: &[&str] = &[$(stringify!($m)),*];

        /// Decodes `bytes` as every message type.
        fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
            $(check::<$m>(bytes)?;)*
            Ok(())
        }

        /// Decodes `bytes` as every message type, once each (for large inputs).
        fn decode_each(bytes: &[u8]) -> usize {
            0 $(+ usize::from(<$m>::decode(bytes).is_ok()))*
        }

        /// A valid encoding of every message type, built out of `fields`, then once more with
        /// fields holding those encodings (`nest`: tag and which encoding), so submessages of
        /// every type are filled in too.
        fn valid_encodings(
            fields: &[(u32, Wire)],
            nest: &[(u32, prop::sample::Index)],
        ) -> Vec<(&'static str, Vec<u8>)> {
            let first = vec![$(greedy::<$m>(fields)),*];
            let mut more = fields.to_vec();
            more.extend(
                nest.iter()
                    .map(|(tag, i)| (*tag, Wire::Bytes(i.get(&first).clone()))),
            );
            vec![$((stringify!($m), greedy::<$m>(&more))),*]
        }

        /// Decodes `bytes` as the message type named `name`.
        fn decode_as(name: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
            $(if name == stringify!($m) {
                return check::<$m>(bytes);
            })*
            unreachable!("{name} is listed")
        }
    };
}

messages![
    tern_proto::HealthRequest,
    tern_proto::HealthResponse,
    tern_proto::Empty,
    gac::GacHeartbeat,
    gac::GrantRequest,
    gac::TableDemand,
    gac::GrantResponse,
    gac::TableGrant,
    memds::AttributeDefinition,
    memds::KeySchema,
    memds::Replica,
    memds::PartitionInfo,
    memds::TableInfo,
    memds::LookupRequest,
    memds::LookupBatchRequest,
    memds::LookupBatchResponse,
    memds::TableReply,
    memds::CreateTableRequest,
    memds::AlterTableRequest,
    memds::RestoreSource,
    node::PartitionStats,
    memds::TableNameRequest,
    memds::ListTablesRequest,
    memds::ListTablesResponse,
    memds::MemdsStats,
    memds::CacheFlushed,
    memds::PlaceReplicaRequest,
    memds::PlaceReplicaResponse,
    memds::ReportPartitionRequest,
    node::NodeHeartbeat,
    raft::RaftBatch,
    raft::RaftEnvelope,
    raft::EntryTrace,
    raft::RaftMessage,
    raft::RaftEntry,
    raft::RaftHardState,
    raft::RaftSnapshotMeta,
    storage::WriteRequest,
    storage::ReplicatedWrite,
    storage::WriteResponse,
    storage::GetRequest,
    storage::GetResponse,
    storage::ScanRequest,
    storage::ScanResponse,
    storage::CreatePartitionRequest,
    storage::DropPartitionRequest,
    storage::RebuildRequest,
    storage::SnapshotChunkRequest,
    storage::SnapshotChunk,
    expr::PathStep,
    expr::Operand,
    expr::CondNode,
    expr::ConditionProgram,
    expr::SetNode,
    expr::UpdateAction,
    expr::UpdateProgram,
    archive::ArchiveReadRequest,
    archive::ArchiveReadResponse,
    archive::ArchiveMark,
    archive::ChecksumRequest,
    archive::ChecksumResponse,
    archive::ItemsChecksum,
    archive::ArchiveSegment,
    archive::SnapshotPart,
    archive::SnapshotManifest,
    archive::RestoreRequest,
    archive::BackupRequest,
    archive::BackupRecord,
    archive::BackupResponse,
];

fn short_name(listed: &str) -> &str {
    listed.rsplit("::").next().unwrap().trim()
}

/// Message types derived in `src/` (a struct right after a derive naming `prost::Message`).
fn derived_messages() -> BTreeSet<String> {
    let sources = [
        include_str!("../src/lib.rs"),
        include_str!("../src/archive.rs"),
        include_str!("../src/expr.rs"),
        include_str!("../src/gac.rs"),
        include_str!("../src/memds.rs"),
        include_str!("../src/node.rs"),
        include_str!("../src/raft.rs"),
        include_str!("../src/storage.rs"),
        include_str!("../src/subjects.rs"),
    ];
    let mut found = BTreeSet::new();
    for src in sources {
        let mut derived = false;
        for line in src.lines().map(str::trim) {
            if line.starts_with("#[derive(") {
                derived = line.contains("prost::Message");
            } else if let Some(rest) = line.strip_prefix("pub struct ") {
                if derived {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    found.insert(name);
                }
                derived = false;
            }
        }
    }
    found
}

#[test]
fn every_message_type_is_listed() {
    let listed: BTreeSet<String> = MESSAGES.iter().map(|m| short_name(m).to_string()).collect();
    assert_eq!(listed.len(), MESSAGES.len(), "a type is listed twice");
    let derived = derived_messages();
    assert_eq!(
        listed, derived,
        "the list in messages! differs from the prost::Message derives in src/"
    );
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_decode_or_fail(bytes in prop_oneof![
        vec(any::<u8>(), 0..64),
        vec(any::<u8>(), 0..1024),
        vec(prop_oneof![Just(0x08u8), Just(0x0A), Just(0x0B), Just(0x0C), Just(0x12), Just(0x80), Just(0xFF), Just(0x00), Just(0x01)], 0..128),
    ]) {
        decode_all(&bytes)?;
    }

    #[test]
    fn protobuf_shaped_bytes_decode_or_fail(fields in fields()) {
        decode_all(&encode(&fields))?;
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Valid encodings decode; changed ones decode or fail, and so does every prefix.
    #[test]
    fn changed_valid_encodings_decode_or_fail(
        fields in fields(),
        nest in vec((1u32..=10, any::<prop::sample::Index>()), 0..12),
        mutations in vec(vec(mutation(), 1..4), 1..4),
        cuts in vec(any::<prop::sample::Index>(), 8),
    ) {
        for (name, valid) in valid_encodings(&fields, &nest) {
            decode_as(name, &valid)?;
            for ms in &mutations {
                let mut bytes = valid.clone();
                for m in ms {
                    mutate(&mut bytes, m);
                }
                decode_as(name, &bytes)?;
            }
            if valid.len() <= 64 {
                for n in 0..valid.len() {
                    decode_as(name, &valid[..n])?;
                }
            } else {
                for c in &cuts {
                    decode_as(name, &valid[..c.index(valid.len())])?;
                }
            }
        }
    }

    #[test]
    fn enumerations_read_any_value(v in prop_oneof![-4i32..8, any::<i32>()]) {
        if let Ok(k) = memds::TableStatus::try_from(v) {
            prop_assert_eq!(k as i32, v);
        }
        if let Ok(k) = raft::RaftKind::try_from(v) {
            prop_assert_eq!(k as i32, v);
        }
        if let Ok(k) = raft::EntryKind::try_from(v) {
            prop_assert_eq!(k as i32, v);
        }
        if let Ok(k) = storage::WriteKind::try_from(v) {
            prop_assert_eq!(k as i32, v);
        }
    }
}

/// Pathological inputs: deep groups, deep submessages, huge lengths, long varints, many fields.
/// Each is answered (an error, or a message where the bytes are valid) within the deadline on a
/// 2 MiB stack, as every message type.
#[test]
fn pathological_inputs_are_answered_quickly() {
    let mut nested = Vec::new();
    for _ in 0..10_000 {
        let mut outer = vec![0x0A];
        put_varint(nested.len() as u64, &mut outer);
        outer.extend_from_slice(&nested);
        nested = outer;
    }
    let mut huge_len = vec![0x0A];
    put_varint(u64::MAX >> 1, &mut huge_len);
    let mut packed_huge = vec![0x22];
    put_varint(1 << 40, &mut packed_huge);
    // (what, bytes, whether no message type may accept them)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("1M start-group keys", [0x0B].repeat(1_000_000), true),
        (
            "200k start groups of rising tags",
            {
                let mut b = Vec::new();
                for t in 1..200_000u64 {
                    put_varint((t << 3) | 3, &mut b);
                }
                b
            },
            true,
        ),
        ("10k nested submessages", nested, false),
        ("length 2^63", huge_len, true),
        ("packed length 2^40", packed_huge, true),
        (
            "11-byte varint",
            [&[0x08u8][..], &[0xFF; 10], &[0x01]].concat(),
            true,
        ),
        (
            "128k empty length-delimited fields",
            [0x2A, 0x00].repeat(128 * 1024),
            false,
        ),
        ("128k varint fields", [0x10, 0x7F].repeat(128 * 1024), false),
        (
            "256 KiB of packed varints",
            {
                let mut b = vec![0x22];
                put_varint(1 << 18, &mut b);
                b.extend(std::iter::repeat_n(0x01, 1 << 18));
                b
            },
            false,
        ),
        ("end group without start", vec![0x0C], true),
        ("tag 0", vec![0x00, 0x00], true),
    ];
    for (what, bytes, all_fail) in cases {
        let (bytes, decoded) = bounded(what, move || {
            let n = decode_each(&bytes);
            (bytes, n)
        });
        if all_fail {
            assert_eq!(decoded, 0, "{what}: decoded as some message type");
        }
        if bytes.len() <= 4096 {
            decode_all(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}
