//! Older and newer versions of a message decode each other: the property upgrade and downgrade
//! tests rely on.

use prost::Message;
use tern_proto::memds::{LookupRequest, PartitionInfo, Replica};

/// `PartitionInfo` as a future version might declare it: one field more, with a new tag.
#[derive(Clone, PartialEq, prost::Message)]
struct PartitionInfoV2 {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    epoch: u64,
    #[prost(uint64, tag = "3")]
    hash_start: u64,
    #[prost(uint64, tag = "4")]
    hash_end: u64,
    #[prost(message, repeated, tag = "5")]
    replicas: Vec<Replica>,
    #[prost(string, tag = "6")]
    leader: String,
    #[prost(uint64, tag = "9")]
    split_parent: u64,
}

/// `LookupRequest` as an older version might have declared it: no fields at all.
#[derive(Clone, PartialEq, prost::Message)]
struct LookupRequestV0 {}

#[test]
fn newer_message_decodes_as_older_and_back() {
    let newer = PartitionInfoV2 {
        id: 7,
        epoch: 3,
        hash_start: 10,
        hash_end: u64::MAX,
        replicas: vec![Replica {
            node_id: "n1".into(),
            az: "az-a".into(),
            ..Default::default()
        }],
        leader: "n1".into(),
        split_parent: 42,
    };
    let old = PartitionInfo::decode(newer.encode_to_vec().as_slice()).unwrap();
    assert_eq!(old.id, 7);
    assert_eq!(old.epoch, 3);
    assert_eq!(old.hash_end, u64::MAX);
    assert_eq!(old.replicas[0].az, "az-a");

    let back = PartitionInfoV2::decode(old.encode_to_vec().as_slice()).unwrap();
    assert_eq!(
        back.split_parent, 0,
        "a field the old version lacks decodes as its default"
    );
    assert_eq!(back.leader, "n1");
}

#[test]
fn older_message_decodes_as_newer() {
    let old = LookupRequestV0 {};
    let new = LookupRequest::decode(old.encode_to_vec().as_slice()).unwrap();
    assert_eq!(new.table_name, "");
    let new = LookupRequest {
        table_name: "t".into(),
    };
    LookupRequestV0::decode(new.encode_to_vec().as_slice()).unwrap();
}
