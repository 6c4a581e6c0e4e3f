//! Replication traffic that does not come from a member of the group changes nothing: a forged
//! append with a far higher term (which would depose a leader if believed), sent as a member that
//! does not exist and as a real member from another node, and a rebuild request naming a snapshot
//! source outside the group.

mod common;

use std::time::Duration;

use common::*;
use tern_proto::raft::{RaftBatch, RaftEnvelope, RaftKind, RaftMessage};

/// `tern_storage_leader_changes_total` summed over the storage nodes.
async fn leader_changes(tc: &TestCluster) -> f64 {
    metric_sum(&tc.cluster, &NODES, "tern_storage_leader_changes_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_outside_the_group_are_ignored() {
    let tc = start_cluster(&[("TERN_MEMDS_PARTITIONS_PER_TABLE", "1")]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, "guarded", None).await;
    let leader = wait_single_leader(&tc.cluster, Duration::from_secs(10)).await;
    let bus = tc.cluster.bus();
    let reply: tern_proto::memds::TableReply = bus
        .call(
            tern_proto::subjects::MEMDS_LOOKUP,
            &tern_proto::memds::LookupRequest {
                table_name: "guarded".into(),
            },
        )
        .await
        .expect("look up the table");
    let partition = reply.table.expect("table").partitions[0].clone();
    let leader_member = partition
        .replicas
        .iter()
        .find(|r| r.node_id == leader)
        .expect("the leader is a replica")
        .member_id;
    let other_member = partition
        .replicas
        .iter()
        .find(|r| r.node_id != leader)
        .expect("a follower")
        .member_id;
    let before = leader_changes(&tc).await;
    let foreign_before =
        metric_sum(&tc.cluster, &NODES, "tern_storage_foreign_messages_total").await;

    // An append of term 1,000,000: believed, it would make the leader a follower of nobody.
    let forged = |from_node: &str, from: u64| RaftBatch {
        from_node: from_node.into(),
        messages: vec![RaftEnvelope {
            partition_id: partition.id,
            from,
            to: leader_member,
            msg: Some(RaftMessage {
                kind: RaftKind::Append as i32,
                term: 1_000_000,
                ..Default::default()
            }),
            traces: Vec::new(),
        }],
    };
    for _ in 0..5 {
        // A member id the group never had, from a node that is not in it...
        bus.publish(
            &tern_proto::subjects::storage_raft(&leader),
            &forged("intruder", 77),
        )
        .await
        .unwrap();
        // ...and a real member's id, from a node that is not that member's.
        bus.publish(
            &tern_proto::subjects::storage_raft(&leader),
            &forged("intruder", other_member),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A rebuild whose snapshot would come from a node outside the group.
    let follower = partition
        .replicas
        .iter()
        .find(|r| r.node_id != leader)
        .unwrap()
        .node_id
        .clone();
    let storage = tern_storage_client::StorageClient::new(bus.clone());
    let refused = storage
        .rebuild(
            &follower,
            &tern_proto::storage::RebuildRequest {
                partition_id: partition.id,
                source_node: "intruder".into(),
                install: false,
                index: 0,
                leader_member,
                leader_term: 0,
                repair: false,
            },
        )
        .await;
    assert!(
        refused.is_err(),
        "a rebuild from outside the group was taken"
    );

    // Writes and consistent reads go on, and nobody lost leadership over it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..20 {
        c.put_item()
            .table_name("guarded")
            .item(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("k{i}")),
            )
            .send()
            .await
            .expect("write after the forgeries");
    }
    assert_eq!(
        wait_single_leader(&tc.cluster, Duration::from_secs(5)).await,
        leader,
        "the leader changed"
    );
    assert_eq!(
        leader_changes(&tc).await,
        before,
        "a forged message moved leadership"
    );
    let foreign = metric_sum(&tc.cluster, &NODES, "tern_storage_foreign_messages_total").await;
    assert!(
        foreign - foreign_before >= 11.0,
        "forged messages counted: {}",
        foreign - foreign_before
    );
    compare_replicas(&tc, "guarded").await;
}
