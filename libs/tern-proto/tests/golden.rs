//! Durable formats, pinned byte for byte: what a replica wrote to its log or state, or MemDS to
//! the metadata store, must read back the same after any change of the code. A field renumbered,
//! retyped or re-encoded fails here first; a deliberate format change updates the bytes here and
//! says how old data is read.

use tern_proto::memds::{AttributeDefinition, KeySchema, PartitionInfo, Replica, TableInfo};
use tern_proto::raft::{RaftEntry, RaftHardState, RaftSnapshotMeta};
use tern_proto::storage::{ReplicatedWrite, WriteRequest};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pinned<M: prost::Message + Default + PartialEq + std::fmt::Debug>(m: &M, golden: &str) {
    let bytes = m.encode_to_vec();
    assert_eq!(hex(&bytes), golden, "the encoding of {m:?} changed");
    let raw: Vec<u8> = (0..golden.len() / 2)
        .map(|i| u8::from_str_radix(&golden[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert_eq!(
        &M::decode(raw.as_slice()).unwrap(),
        m,
        "pinned bytes decode to the value"
    );
}

#[test]
fn log_entries() {
    let command = RaftEntry {
        term: 7,
        index: 300,
        kind: 1,
        data: b"write".to_vec(),
        members: vec![],
        log_members: vec![],
    };
    pinned(&command, GOLDEN_COMMAND);
    let membership = RaftEntry {
        term: 8,
        index: 301,
        kind: 2,
        data: vec![],
        members: vec![1, 2, 4],
        log_members: vec![4],
    };
    pinned(&membership, GOLDEN_MEMBERSHIP);
}

#[test]
fn replica_state() {
    pinned(
        &RaftHardState {
            term: 9,
            voted_for: 2,
        },
        GOLDEN_HARD_STATE,
    );
    pinned(
        &RaftSnapshotMeta {
            index: 1000,
            term: 9,
            members: vec![1, 2, 3],
            log_members: vec![],
            max_member_id: 5,
        },
        GOLDEN_SNAPSHOT_META,
    );
}

#[test]
fn replicated_writes() {
    let w = ReplicatedWrite {
        origin_node: "storage-a".into(),
        request_id: 42,
        write: Some(WriteRequest {
            partition_id: 77,
            epoch: 1,
            key: b"\x01k".to_vec(),
            kind: 0,
            item: bytes::Bytes::from_static(br#"{"pk":{"S":"k"}}"#),
            condition: br#"{"AttributeNotExists":["pk"]}"#.to_vec(),
            return_old: true,
            // Fields added later, at their defaults: not on the wire, the bytes are unchanged.
            update: Vec::new(),
            return_new: false,
            return_old_on_failure: false,
            condition_expr: None,
            update_expr: None,
            partition_rate: 0.0,
        }),
        time_ms: 0,
    };
    // Written by versions before `condition_expr`: still decodes, and storage reads its JSON.
    pinned(&w, GOLDEN_WRITE);
}

/// The condition and update as the log carries them since they are protobuf.
#[test]
fn logged_conditions_and_updates() {
    let values = [
        (":v".to_string(), tern_model::AttributeValue::S("x".into())),
        (
            ":n".to_string(),
            tern_model::AttributeValue::N(tern_model::Number::parse("5").unwrap()),
        ),
    ]
    .into();
    let (update, condition) = tern_model::parse_update(
        Some("SET a = if_not_exists(a, :v), b[1] = b[0] + :n REMOVE c"),
        Some("attribute_not_exists(pk) OR (a = :v AND size(b) BETWEEN :n AND :n)"),
        None,
        Some(&values),
    )
    .unwrap();
    let w = WriteRequest {
        partition_id: 77,
        epoch: 1,
        key: b"\x01k".to_vec(),
        kind: 2,
        item: bytes::Bytes::from_static(br#"{"pk":{"S":"k"}}"#),
        condition_expr: condition.as_ref().map(tern_proto::expr::encode_condition),
        update_expr: update.as_ref().map(tern_proto::expr::encode_update),
        ..Default::default()
    };
    pinned(&w, GOLDEN_EXPRESSIONS);
    assert_eq!(
        tern_proto::expr::decode_condition(w.condition_expr.as_ref().unwrap()).unwrap(),
        condition.unwrap()
    );
    assert_eq!(
        tern_proto::expr::decode_update(w.update_expr.as_ref().unwrap()).unwrap(),
        update.unwrap()
    );
}

/// An Update write as the log carries it.
#[test]
fn replicated_updates() {
    let update = tern_model::parse_update(
        Some("SET a = :v"),
        None,
        None,
        Some(&[(":v".to_string(), tern_model::AttributeValue::S("x".into()))].into()),
    )
    .unwrap()
    .0
    .unwrap();
    let w = WriteRequest {
        partition_id: 77,
        epoch: 1,
        key: b"\x01k".to_vec(),
        kind: 2,
        item: bytes::Bytes::from_static(br#"{"pk":{"S":"k"}}"#),
        update: serde_json::to_vec(&update).unwrap(),
        return_new: true,
        return_old_on_failure: true,
        ..Default::default()
    };
    pinned(&w, GOLDEN_UPDATE);
}

#[test]
fn table_metadata() {
    let t = TableInfo {
        name: "music".into(),
        table_id: "t-1".into(),
        status: 1,
        key_schema: Some(KeySchema {
            hash_name: "artist".into(),
            hash_type: "S".into(),
            range_name: "song".into(),
            range_type: "N".into(),
        }),
        attribute_definitions: vec![AttributeDefinition {
            name: "artist".into(),
            attr_type: "S".into(),
        }],
        creation_time_ms: 1_700_000_000_000,
        billing_mode: "PAY_PER_REQUEST".into(),
        read_capacity: 0,
        write_capacity: 0,
        // Empty: not on the wire, so the bytes are unchanged.
        tags: Default::default(),
        restore: None,
        pitr_enabled: false,
        pitr_since_ms: 0,
        partitions: vec![PartitionInfo {
            id: 11,
            epoch: 2,
            hash_start: 0,
            hash_end: u64::MAX,
            replicas: vec![Replica {
                node_id: "storage-b".into(),
                az: "az-b".into(),
                member_id: 2,
                log: false,
            }],
            leader: "storage-b".into(),
            // Zero until the first report: not on the wire, so the bytes are unchanged.
            reported_term: 0,
            reported_index: 0,
        }],
    };
    pinned(&t, GOLDEN_TABLE);
}

const GOLDEN_COMMAND: &str = "080710ac02180122057772697465";
const GOLDEN_MEMBERSHIP: &str = "080810ad0218022a03010204320104";
const GOLDEN_HARD_STATE: &str = "08091002";
const GOLDEN_SNAPSHOT_META: &str = "08e80710091a030102032805";
const GOLDEN_WRITE: &str = "0a0973746f726167652d61102a1a3b084d10011a02016b2a107b22706b223a7b2253223a226b227d7d321d7b224174747269627574654e6f74457869737473223a5b22706b225d7d3801";
const GOLDEN_UPDATE: &str = "084d10011a02016b20022a107b22706b223a7b2253223a226b227d7d42467b22616374696f6e73223a5b7b22536574223a5b5b7b224e616d65223a2261227d5d2c7b224f706572616e64223a7b2256616c7565223a7b2253223a2278227d7d7d5d7d5d7d48015001";
const GOLDEN_EXPRESSIONS: &str = "084d10011a02016b20022a107b22706b223a7b2253223a226b227d7d5a5b0a0808011a040a02706b0a180802220512030a0161220d08011a097b2253223a2278227d0a2908062207080212030a0162220d08011a097b224e223a2235227d220d08011a097b224e223a2235227d0a04080428020a040805280262570a1f12030a01611a0f120d08011a097b2253223a2278227d1a0708011a030a01610a2b12030a0162120210011a0b120912030a0162120210001a0f120d08011a097b224e223a2235227d1a0208030a07080112030a0163";
const GOLDEN_TABLE: &str = "0a056d757369631203742d31180122140a066172746973741201531a04736f6e6722014e2a0b0a066172746973741201533080d095ffbc313a0f5041595f5045525f52455155455354522f080b100220ffffffffffffffffff012a130a0973746f726167652d621204617a2d621802320973746f726167652d62";
