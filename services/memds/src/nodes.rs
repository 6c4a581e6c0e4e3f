//! Storage nodes heard from recently, by availability zone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tern_proto::node::NodeHeartbeat;

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

    pub fn heard(&self, hb: NodeHeartbeat) {
        self.inner
            .lock()
            .insert(hb.node_id, (hb.az, Instant::now()));
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
