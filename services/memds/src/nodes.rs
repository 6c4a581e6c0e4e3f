//! Storage nodes heard from recently, by availability zone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tern_proto::node::NodeHeartbeat;

/// Storage nodes held at most.
const MAX_NODES: usize = 10_000;

#[derive(Clone)]
pub struct Nodes {
    inner: Arc<Mutex<HashMap<String, (String, Instant)>>>,
    timeout: Duration,
}

impl Nodes {
    pub fn new(timeout: Duration) -> Self {
        Self {
            inner: Arc::default(),
            timeout,
        }
    }

    /// Notes a heartbeat. One whose node id could not name the node's subjects, or without a
    /// zone, is ignored; nodes silent for ten timeouts are forgotten, and at most `MAX_NODES`
    /// are held.
    pub fn heard(&self, hb: NodeHeartbeat) {
        if !tern_proto::subjects::is_valid_token(&hb.node_id)
            || hb.az.is_empty()
            || hb.az.len() > 255
        {
            tracing::debug!(node = %hb.node_id.escape_debug(), "heartbeat with an invalid node id or zone ignored");
            return;
        }
        let now = Instant::now();
        let mut nodes = self.inner.lock();
        if nodes.len() >= MAX_NODES && !nodes.contains_key(&hb.node_id) {
            nodes.retain(|_, (_, seen)| now.duration_since(*seen) < self.timeout * 10);
            if nodes.len() >= MAX_NODES {
                tracing::warn!(node = %hb.node_id, "too many storage nodes: heartbeat ignored");
                return;
            }
        }
        nodes.insert(hb.node_id, (hb.az, now));
    }

    /// Live nodes as (node id, az), sorted by node id.
    pub fn live(&self) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut v: Vec<_> = self
            .inner
            .lock()
            .iter()
            .filter(|(_, (_, seen))| now.duration_since(*seen) < self.timeout)
            .map(|(id, (az, _))| (id.clone(), az.clone()))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(node: &str, az: &str) -> NodeHeartbeat {
        NodeHeartbeat {
            node_id: node.into(),
            az: az.into(),
            ..Default::default()
        }
    }

    #[test]
    fn heartbeats_that_cannot_name_a_node_are_ignored() {
        let nodes = Nodes::new(Duration::from_secs(5));
        nodes.heard(hb("storage-a", "az-a"));
        nodes.heard(hb("bad.node", "az-b"));
        nodes.heard(hb("node>", "az-b"));
        nodes.heard(hb("", "az-b"));
        nodes.heard(hb("storage-c", ""));
        assert_eq!(nodes.live(), vec![("storage-a".into(), "az-a".into())]);
    }

    #[test]
    fn the_node_view_is_bounded() {
        let nodes = Nodes::new(Duration::from_secs(5));
        for i in 0..MAX_NODES + 10 {
            nodes.heard(hb(&format!("n{i}"), "az-a"));
        }
        assert_eq!(nodes.live().len(), MAX_NODES);
    }
}
