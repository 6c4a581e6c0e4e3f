//! Where a new table's partitions go: three replicas each, in three different availability zones,
//! on the least-loaded node of each zone.

use std::collections::{BTreeMap, HashMap};

use tern_model::{ApiError, ErrorCode};
use tern_proto::memds::{PartitionInfo, Replica};

/// Hash range `[start, end]` of partition `i` of `n`, splitting the u64 space evenly.
pub fn hash_range(i: u32, n: u32) -> (u64, u64) {
    let span = 1u128 << 64;
    let start = (span * i as u128 / n as u128) as u64;
    let end = (span * (i as u128 + 1) / n as u128 - 1) as u64;
    (start, end)
}

/// Places `n` partitions on `live` nodes (id, az), updating `load` (replicas per node).
pub fn place(
    live: &[(String, String)],
    n: u32,
    load: &mut HashMap<String, usize>,
    mut new_id: impl FnMut() -> u64,
) -> Result<Vec<PartitionInfo>, ApiError> {
    let mut by_az: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, az) in live {
        by_az.entry(az.as_str()).or_default().push(id.as_str());
    }
    if by_az.len() < 3 {
        return Err(ApiError::new(
            ErrorCode::InternalServerError,
            format!(
                "cannot place the table: storage nodes are needed in 3 availability zones, {} are live",
                by_az.len()
            ),
        ));
    }
    let mut partitions = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut candidates: Vec<(usize, &str, &str)> = by_az
            .iter()
            .map(|(az, nodes)| {
                let node = nodes
                    .iter()
                    .min_by_key(|n| (load.get(**n).copied().unwrap_or(0), **n))
                    .expect("az has a node");
                (load.get(*node).copied().unwrap_or(0), *node, *az)
            })
            .collect();
        candidates.sort();
        let mut replicas: Vec<Replica> = candidates[..3]
            .iter()
            .map(|(_, node, az)| Replica {
                node_id: node.to_string(),
                az: az.to_string(),
                ..Default::default()
            })
            .collect();
        for r in &replicas {
            *load.entry(r.node_id.clone()).or_insert(0) += 1;
        }
        // Spread leadership: each partition's first replica (its leader) is in another zone.
        replicas.rotate_left(i as usize % 3);
        // The founding members are 1, 2 and 3; member 1 stands for election first.
        for (m, r) in replicas.iter_mut().enumerate() {
            r.member_id = m as u64 + 1;
        }
        let (hash_start, hash_end) = hash_range(i, n);
        partitions.push(PartitionInfo {
            id: new_id(),
            epoch: 1,
            hash_start,
            hash_end,
            leader: replicas[0].node_id.clone(),
            replicas,
            ..Default::default()
        });
    }
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &[(&str, &str)]) -> Vec<(String, String)> {
        spec.iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect()
    }

    #[test]
    fn ranges_cover_the_hash_space_without_gaps() {
        for n in [1u32, 2, 3, 7] {
            let mut next = 0u64;
            for i in 0..n {
                let (s, e) = hash_range(i, n);
                assert_eq!(s, next);
                assert!(e >= s);
                next = e.wrapping_add(1);
            }
            assert_eq!(hash_range(n - 1, n).1, u64::MAX);
        }
    }

    #[test]
    fn replicas_land_in_three_zones_and_balance() {
        let live = nodes(&[
            ("a1", "az-a"),
            ("a2", "az-a"),
            ("b1", "az-b"),
            ("c1", "az-c"),
        ]);
        let mut load = HashMap::new();
        let mut id = 0;
        let parts = place(&live, 4, &mut load, || {
            id += 1;
            id
        })
        .unwrap();
        for p in &parts {
            let mut azs: Vec<_> = p.replicas.iter().map(|r| r.az.clone()).collect();
            azs.sort();
            azs.dedup();
            assert_eq!(azs.len(), 3, "{p:?}");
            assert_eq!(p.leader, p.replicas[0].node_id);
        }
        assert_eq!(load["a1"], 2);
        assert_eq!(load["a2"], 2);
        let leaders: std::collections::HashSet<_> =
            parts.iter().map(|p| &p.replicas[0].az).collect();
        assert_eq!(leaders.len(), 3, "leadership spreads over zones");
    }

    #[test]
    fn fewer_than_three_zones_is_an_error() {
        let live = nodes(&[("a1", "az-a"), ("b1", "az-b"), ("b2", "az-b")]);
        let err = place(&live, 1, &mut HashMap::new(), || 1).unwrap_err();
        assert!(
            err.message.contains("3 availability zones"),
            "{}",
            err.message
        );
    }
}
