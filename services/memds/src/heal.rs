//! Replacing a replica that stays unreachable: placing its replacement, and keeping the metadata
//! in step with each group's committed membership and leader.
//!
//! The partition's leader drives the replacement (it alone knows when a member stopped answering
//! and when a change has committed); MemDS chooses the node, creates the replica on it and records
//! what the leader reports, by compare-and-set.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tern_model::{ApiError, ErrorCode};
use tern_proto::memds::{
    PartitionInfo, PlaceReplicaRequest, PlaceReplicaResponse, Replica, ReportPartitionRequest,
    TableInfo,
};
use tern_proto::storage::{CreatePartitionRequest, DropPartitionRequest};
use tern_proto::Empty;
use tern_storage_client::StorageClient;

use crate::tables::key;
use crate::Memds;

/// Chooses a node for a new member of the group and creates the (empty) replica there.
pub async fn place_replica(
    m: &Memds,
    req: PlaceReplicaRequest,
) -> Result<PlaceReplicaResponse, ApiError> {
    let table = table_of(m, req.partition_id)?;
    let p = table
        .partitions
        .iter()
        .find(|p| p.id == req.partition_id)
        .expect("table_of found it");
    let live = m.nodes.live();
    let az_of: HashMap<&str, &str> = live
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str()))
        .chain(
            p.replicas
                .iter()
                .map(|r| (r.node_id.as_str(), r.az.as_str())),
        )
        .collect();
    let replacing_az = az_of.get(req.replacing_node.as_str()).copied();
    let node = choose_node(
        &live,
        &req.member_nodes,
        &req.replacing_node,
        replacing_az,
        &m.tables.load_per_node(),
    )?;
    let az = az_of.get(node.as_str()).copied().unwrap_or_default();
    let replica = Replica {
        node_id: node.clone(),
        az: az.to_string(),
        member_id: req.member_id,
        log: true,
    };
    // The new replica's view of its group: the current members (whose addresses it needs) and
    // itself. The leader adds it to the group once it exists.
    let mut info = p.clone();
    info.replicas
        .retain(|r| req.member_nodes.contains(&r.node_id) && r.node_id != req.replacing_node);
    info.replicas.push(replica.clone());
    let create = CreatePartitionRequest {
        table_name: table.name.clone(),
        table_id: table.table_id.clone(),
        partition: Some(info),
    };
    StorageClient::new(m.bus.clone())
        .create_partition(&node, &create)
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InternalServerError,
                format!("create the replacement replica on {node}: {e}"),
            )
        })?;
    tracing::info!(
        partition = req.partition_id,
        node = %node,
        az,
        member = req.member_id,
        replacing = %req.replacing_node,
        "replacement replica placed"
    );
    Ok(PlaceReplicaResponse {
        replica: Some(replica),
    })
}

/// The node for a new member: never one that holds a member already; in the replaced node's
/// zone if that zone has a live node and no member, else in a zone with no member; a zone that
/// already has a member only when fewer than three zones are live.
pub fn choose_node(
    live: &[(String, String)],
    member_nodes: &[String],
    replacing_node: &str,
    replacing_az: Option<&str>,
    load: &HashMap<String, usize>,
) -> Result<String, ApiError> {
    let az_of: HashMap<&str, &str> = live.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    let used: BTreeSet<&str> = member_nodes
        .iter()
        .filter(|n| n.as_str() != replacing_node)
        .filter_map(|n| az_of.get(n.as_str()).copied())
        .collect();
    let zones: BTreeSet<&str> = live.iter().map(|(_, a)| a.as_str()).collect();
    let candidates: Vec<(&str, &str)> = live
        .iter()
        .filter(|(n, _)| n != replacing_node && !member_nodes.contains(n))
        .map(|(n, a)| (n.as_str(), a.as_str()))
        .collect();
    let least_loaded = |nodes: Vec<&str>| {
        nodes
            .into_iter()
            .min_by_key(|n| (load.get(*n).copied().unwrap_or(0), n.to_string()))
            .map(str::to_string)
    };
    let in_zone = |az: &str| {
        candidates
            .iter()
            .filter(|(_, a)| *a == az)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
    };
    if let Some(az) = replacing_az.filter(|az| !used.contains(az)) {
        if let Some(n) = least_loaded(in_zone(az)) {
            return Ok(n);
        }
    }
    let free: Vec<&str> = candidates
        .iter()
        .filter(|(_, a)| !used.contains(a))
        .map(|(n, _)| *n)
        .collect();
    if let Some(n) = least_loaded(free) {
        return Ok(n);
    }
    if zones.len() < 3 {
        if let Some(n) = least_loaded(candidates.iter().map(|(n, _)| *n).collect()) {
            return Ok(n);
        }
    }
    Err(ApiError::new(
        ErrorCode::InternalServerError,
        format!(
            "no live storage node can host a replacement replica (live: {}, zones with members: {})",
            live.len(),
            used.len()
        ),
    ))
}

/// Records a group's membership and leader as its leader reports them.
pub async fn report_partition(m: &Memds, req: ReportPartitionRequest) -> Result<Empty, ApiError> {
    for _ in 0..5 {
        let name = table_of(m, req.partition_id)?.name.clone();
        let Some(entry) =
            m.kv.entry(key(&name))
                .await
                .map_err(|e| internal("read table", e))?
        else {
            return Err(not_found(req.partition_id));
        };
        let mut table =
            TableInfo::decode(entry.value.as_ref()).map_err(|e| internal("decode table", e))?;
        let Some(p) = table
            .partitions
            .iter_mut()
            .find(|p| p.id == req.partition_id)
        else {
            return Err(not_found(req.partition_id));
        };
        let live: HashMap<String, String> = m.nodes.live().into_iter().collect();
        let mut replicas = req.replicas.clone();
        for r in &mut replicas {
            if r.az.is_empty() {
                r.az = live.get(&r.node_id).cloned().unwrap_or_default();
            }
        }
        if !is_current(p, &req)? {
            return Ok(Empty {});
        }
        let removed: Vec<String> = p
            .replicas
            .iter()
            .filter(|old| !replicas.iter().any(|r| r.node_id == old.node_id))
            .map(|r| r.node_id.clone())
            .collect();
        p.replicas = replicas;
        p.leader = req.leader.clone();
        p.reported_term = req.term;
        p.reported_index = req.commit_index;
        let bytes = Bytes::from(table.encode_to_vec());
        match m.kv.update(key(&name), bytes.clone(), entry.revision).await {
            Ok(rev) => {
                m.tables.apply(
                    &key(&name),
                    rev,
                    async_nats::jetstream::kv::Operation::Put,
                    &bytes,
                );
                tracing::info!(
                    partition = req.partition_id,
                    leader = %req.leader,
                    members = ?req.replicas.iter().map(|r| (&r.node_id, r.member_id, r.log)).collect::<Vec<_>>(),
                    "partition membership recorded"
                );
                for node in removed {
                    tokio::spawn(drop_removed(m.clone(), node, req.partition_id));
                }
                return Ok(Empty {});
            }
            Err(e) => {
                tracing::debug!(partition = req.partition_id, error = %e, "report: compare-and-set lost")
            }
        }
    }
    Err(ApiError::new(
        ErrorCode::InternalServerError,
        "table metadata is changing too fast",
    ))
}

/// Whether a report changes what is recorded (members, leader, or a newer version of the same):
/// `Ok(false)` if it repeats it exactly, an error if it is
/// older (its leader term and commit index, compared in that order, are below the recorded
/// report's: a deposed leader's late report, or a report overtaken on the way).
fn is_current(p: &PartitionInfo, req: &ReportPartitionRequest) -> Result<bool, ApiError> {
    let recorded = (p.reported_term, p.reported_index);
    let version = (req.term, req.commit_index);
    if version < recorded {
        tracing::info!(
            partition = req.partition_id,
            leader = %req.leader,
            ?version,
            ?recorded,
            "stale membership report refused"
        );
        return Err(ApiError::new(
            ErrorCode::ConditionalCheckFailed,
            format!(
                "stale report for partition {}: term {} index {} is older than the recorded term {} index {}",
                req.partition_id, req.term, req.commit_index, recorded.0, recorded.1
            ),
        ));
    }
    let same_members = p.replicas.len() == req.replicas.len()
        && p.replicas
            .iter()
            .zip(&req.replicas)
            .all(|(a, b)| a.node_id == b.node_id && a.member_id == b.member_id && a.log == b.log);
    Ok(!(same_members && p.leader == req.leader && version == recorded))
}

/// Removes a replica that left its group from its node (best effort: a node that is down keeps
/// its stale replica, which is no member and never leads).
async fn drop_removed(m: Memds, node: String, partition_id: u64) {
    let req = DropPartitionRequest { partition_id };
    let r = StorageClient::new(m.bus.clone())
        .drop_partition(&node, &req)
        .await;
    match r {
        Ok(_) => tracing::info!(partition = partition_id, node = %node, "removed replica dropped"),
        Err(e) => {
            tracing::info!(partition = partition_id, node = %node, error = %e, "removed replica not dropped")
        }
    }
}

/// Replicas a node reports that the metadata does not list on it. One of a deleted table (a
/// durable tombstone names it) is dropped at once. One of a live table whose recorded, fenced
/// membership leaves the node out (a member removed while its node was down, a placement whose
/// leader died before adding it) is dropped once it has stayed so for `grace` without a break (a
/// replacement is created moments before its leader reports it as a member). One that no table
/// and no tombstone names is **kept**, with a warning: missing metadata is never a reason to
/// delete data.
#[derive(Default)]
pub struct Strays {
    since: parking_lot::Mutex<HashMap<(String, u64), std::time::Instant>>,
    /// Unknown replicas already warned about, so each is logged once.
    unknown: parking_lot::Mutex<BTreeSet<(String, u64)>>,
}

/// What the metadata says of a replica a node reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Known {
    /// Listed as a member on that node.
    Member,
    /// Its table is deleted (tombstone).
    Deleted,
    /// Its table exists but its membership does not list the node.
    NotMember,
    /// No table or tombstone names the partition.
    Unknown,
}

/// Partition id → the nodes its recorded membership lists, over every table: built once per
/// heartbeat, so each reported partition is one lookup.
pub struct MemberIndex(HashMap<u64, Vec<String>>);

impl MemberIndex {
    pub fn new(tables: &crate::Tables) -> Self {
        let mut map = HashMap::new();
        for t in tables.all() {
            for p in &t.partitions {
                map.insert(p.id, p.replicas.iter().map(|r| r.node_id.clone()).collect());
            }
        }
        Self(map)
    }
}

pub fn classify(tables: &crate::Tables, index: &MemberIndex, node: &str, pid: u64) -> Known {
    if tables.is_deleted(pid) {
        return Known::Deleted;
    }
    match index.0.get(&pid) {
        None => Known::Unknown,
        Some(nodes) if nodes.iter().any(|n| n == node) => Known::Member,
        Some(_) => Known::NotMember,
    }
}

impl Strays {
    /// Notes the node's report; returns the partitions to drop from it now.
    pub fn check(
        &self,
        tables: &crate::Tables,
        node: &str,
        partition_ids: &[u64],
        grace: Duration,
    ) -> Vec<u64> {
        let index = MemberIndex::new(tables);
        let mut since = self.since.lock();
        since.retain(|(n, pid), _| n != node || partition_ids.contains(pid));
        let now = std::time::Instant::now();
        let mut drop = Vec::new();
        for &pid in partition_ids {
            let k = (node.to_string(), pid);
            match classify(tables, &index, node, pid) {
                Known::Member => {
                    since.remove(&k);
                }
                Known::Deleted => {
                    since.remove(&k);
                    drop.push(pid);
                }
                Known::Unknown => {
                    since.remove(&k);
                    if self.unknown.lock().insert(k) {
                        tracing::warn!(
                            partition = pid,
                            node,
                            "a replica no table and no tombstone names: kept (metadata may be \
                             missing; it is never deleted for that)"
                        );
                    }
                }
                Known::NotMember => {
                    let first = *since.entry(k.clone()).or_insert(now);
                    if now.duration_since(first) >= grace {
                        since.remove(&k);
                        drop.push(pid);
                    }
                }
            }
        }
        drop
    }
}

/// Drops stray replicas a node reported (see [`Strays`]).
pub fn drop_strays(m: &Memds, node: &str, partition_ids: &[u64]) {
    let grace = Duration::from_millis(m.config.stray_grace_ms);
    for pid in m.strays.check(&m.tables, node, partition_ids, grace) {
        tracing::info!(partition = pid, node, "dropping a replica no group lists");
        tokio::spawn(drop_removed(m.clone(), node.to_string(), pid));
    }
}

fn table_of(m: &Memds, partition_id: u64) -> Result<std::sync::Arc<TableInfo>, ApiError> {
    m.tables
        .all()
        .into_iter()
        .find(|t| t.partitions.iter().any(|p| p.id == partition_id))
        .ok_or_else(|| not_found(partition_id))
}

fn not_found(partition_id: u64) -> ApiError {
    ApiError::new(
        ErrorCode::ResourceNotFound,
        format!("no table has partition {partition_id}"),
    )
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{what}");
    ApiError::new(ErrorCode::InternalServerError, "Internal server error")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(spec: &[(&str, &str)]) -> Vec<(String, String)> {
        spec.iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect()
    }

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn replacement_stays_in_the_lost_zone_when_it_can() {
        let live = live(&[
            ("a2", "az-a"),
            ("b1", "az-b"),
            ("b2", "az-b"),
            ("c1", "az-c"),
        ]);
        let members = nodes(&["a1", "b1", "c1"]);
        let n = choose_node(&live, &members, "a1", Some("az-a"), &HashMap::new()).unwrap();
        assert_eq!(n, "a2");
    }

    #[test]
    fn never_two_members_in_one_zone_while_three_are_live() {
        // az-a's only other node is down: az-b has a spare, but b1 is a member there.
        let live = live(&[("b1", "az-b"), ("b2", "az-b"), ("c1", "az-c")]);
        let members = nodes(&["a1", "b1", "c1"]);
        // Only two zones are live, so doubling up is allowed.
        assert_eq!(
            choose_node(&live, &members, "a1", Some("az-a"), &HashMap::new()).unwrap(),
            "b2"
        );
        // With a third zone live (d), the replacement goes there instead of next to b1.
        let mut live4 = live.clone();
        live4.push(("d1".into(), "az-d".into()));
        assert_eq!(
            choose_node(&live4, &members, "a1", Some("az-a"), &HashMap::new()).unwrap(),
            "d1"
        );
        // Three live zones and no node in a free one: refused.
        let live3 = self::live(&[
            ("a9", "az-x"),
            ("b1", "az-b"),
            ("b2", "az-b"),
            ("c1", "az-c"),
        ]);
        let members3 = nodes(&["a9", "b1", "c1", "a1"]);
        let err = choose_node(&live3, &members3, "a1", Some("az-a"), &HashMap::new()).unwrap_err();
        assert!(
            err.message.contains("no live storage node"),
            "{}",
            err.message
        );
    }

    fn replica(node: &str, id: u64) -> Replica {
        Replica {
            node_id: node.into(),
            member_id: id,
            ..Default::default()
        }
    }

    fn report(term: u64, index: u64, nodes: &[&str]) -> ReportPartitionRequest {
        ReportPartitionRequest {
            partition_id: 7,
            replicas: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| replica(n, i as u64 + 1))
                .collect(),
            leader: nodes[0].into(),
            term,
            commit_index: index,
        }
    }

    #[test]
    fn a_stale_membership_report_is_refused() {
        let mut p = PartitionInfo {
            id: 7,
            replicas: report(0, 0, &["a", "b", "c"]).replicas,
            leader: "a".into(),
            reported_term: 6,
            reported_index: 90,
            ..Default::default()
        };
        // A deposed leader of term 5 reports late, with a higher commit index: refused.
        let late = report(5, 100, &["b", "c", "d"]);
        let err = is_current(&p, &late).unwrap_err();
        assert_eq!(err.code, ErrorCode::ConditionalCheckFailed);
        assert!(err.message.contains("stale report"), "{}", err.message);
        // Same term, older commit index: refused too.
        assert!(is_current(&p, &report(6, 89, &["b", "c", "d"])).is_err());
        // The same report again: nothing to record; the same members at a newer version: the
        // version is recorded.
        assert!(!is_current(&p, &report(6, 90, &["a", "b", "c"])).unwrap());
        assert!(is_current(&p, &report(6, 95, &["a", "b", "c"])).unwrap());
        // Newer (same term, later index; or a later term with a lower index): recorded.
        assert!(is_current(&p, &report(6, 91, &["b", "c", "d"])).unwrap());
        assert!(is_current(&p, &report(7, 10, &["b", "c", "d"])).unwrap());
        p.reported_term = 0;
        p.reported_index = 0;
        assert!(is_current(&p, &report(1, 1, &["b", "c", "d"])).unwrap());
    }

    fn tables_with(pid: u64, nodes: &[&str]) -> crate::Tables {
        let t = crate::Tables::default();
        let info = TableInfo {
            name: "t".into(),
            table_id: "id1".into(),
            partitions: vec![PartitionInfo {
                id: pid,
                replicas: nodes.iter().map(|n| replica(n, 1)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        t.apply(
            &key("t"),
            1,
            async_nats::jetstream::kv::Operation::Put,
            &info.encode_to_vec(),
        );
        t
    }

    #[test]
    fn a_replica_no_metadata_names_is_never_dropped() {
        let tables = tables_with(1, &["a", "b", "c"]);
        let strays = Strays::default();
        // Partition 99 is unknown (its metadata may be lost): kept, however long it is reported.
        let index = MemberIndex::new(&tables);
        assert_eq!(classify(&tables, &index, "a", 99), Known::Unknown);
        for _ in 0..3 {
            assert!(strays
                .check(&tables, "a", &[1, 99], Duration::ZERO)
                .is_empty());
        }
        // A member is kept; a replica of a live table on a node it does not list goes after grace.
        assert_eq!(classify(&tables, &index, "a", 1), Known::Member);
        assert_eq!(classify(&tables, &index, "d", 1), Known::NotMember);
        assert_eq!(strays.check(&tables, "d", &[1], Duration::ZERO), vec![1]);
        assert!(strays
            .check(&tables, "d", &[1], Duration::from_secs(60))
            .is_empty());
    }

    #[test]
    fn a_replica_of_a_tombstoned_table_is_dropped() {
        let tables = tables_with(1, &["a", "b", "c"]);
        let gone = TableInfo {
            name: "old".into(),
            table_id: "id0".into(),
            partitions: vec![PartitionInfo {
                id: 5,
                ..Default::default()
            }],
            ..Default::default()
        };
        let tomb = crate::tables::tombstone_key("id0");
        tables.apply(
            &tomb,
            2,
            async_nats::jetstream::kv::Operation::Put,
            &gone.encode_to_vec(),
        );
        assert_eq!(
            classify(&tables, &MemberIndex::new(&tables), "a", 5),
            Known::Deleted
        );
        let strays = Strays::default();
        assert_eq!(
            strays.check(&tables, "a", &[1, 5], Duration::from_secs(60)),
            vec![5]
        );
    }

    #[test]
    fn least_loaded_node_of_the_zone_wins() {
        let live = live(&[
            ("a2", "az-a"),
            ("a3", "az-a"),
            ("b1", "az-b"),
            ("c1", "az-c"),
        ]);
        let load = HashMap::from([("a2".to_string(), 5), ("a3".to_string(), 1)]);
        let n = choose_node(
            &live,
            &nodes(&["a1", "b1", "c1"]),
            "a1",
            Some("az-a"),
            &load,
        )
        .unwrap();
        assert_eq!(n, "a3");
    }
}
