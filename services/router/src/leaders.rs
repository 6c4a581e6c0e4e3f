//! Where each partition's leader is, as last learned from storage redirects.
//!
//! A redirect naming a replica points the next attempt there; a redirect without a name, or a
//! replica that does not answer, moves the next attempt to the following replica, so a client's
//! request finds a newly elected leader within its retries.

use std::collections::HashMap;

use parking_lot::RwLock;
use tern_bus::BusError;
use tern_proto::memds::PartitionInfo;
use tern_storage_client::StorageError;

#[derive(Default)]
pub struct Leaders {
    hints: RwLock<HashMap<u64, String>>,
}

impl Leaders {
    /// The replica to try for `p`, if one was learned and still belongs to it.
    pub fn target<'a>(&self, p: &'a PartitionInfo) -> Option<&'a str> {
        let hints = self.hints.read();
        let hint = hints.get(&p.id)?;
        p.replicas
            .iter()
            .map(|r| r.node_id.as_str())
            .find(|n| n == hint)
    }

    /// Learns from a failed attempt at `tried`.
    pub fn learn(&self, p: &PartitionInfo, tried: &str, e: &StorageError) {
        let named = match e {
            StorageError::Bus(BusError::Redirect(hint))
                if p.replicas.iter().any(|r| r.node_id == *hint) =>
            {
                Some(hint.clone())
            }
            _ => None,
        };
        // Log replicas never lead: the rotation passes over them.
        let next = named.or_else(|| {
            let n = p.replicas.len();
            let pos = p
                .replicas
                .iter()
                .position(|r| r.node_id == tried)
                .unwrap_or(0);
            (1..=n)
                .map(|k| &p.replicas[(pos + k) % n])
                .find(|r| !r.log)
                .map(|r| r.node_id.clone())
        });
        let Some(next) = next else { return };
        self.hints.write().insert(p.id, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::memds::Replica;

    fn partition() -> PartitionInfo {
        let replicas = ["a", "b", "c"]
            .iter()
            .map(|n| Replica {
                node_id: n.to_string(),
                az: String::new(),
                ..Default::default()
            })
            .collect();
        PartitionInfo {
            id: 1,
            replicas,
            ..Default::default()
        }
    }

    #[test]
    fn follows_named_leaders_and_rotates_otherwise() {
        let (l, p) = (Leaders::default(), partition());
        assert_eq!(l.target(&p), None);
        l.learn(&p, "a", &BusError::Redirect("c".into()).into());
        assert_eq!(l.target(&p), Some("c"));
        l.learn(&p, "c", &BusError::NoResponders("x".into()).into());
        assert_eq!(l.target(&p), Some("a"));
        l.learn(&p, "a", &BusError::Redirect(String::new()).into());
        assert_eq!(l.target(&p), Some("b"));
        l.learn(&p, "b", &BusError::Redirect("not-a-replica".into()).into());
        assert_eq!(l.target(&p), Some("c"));
        // A stalled leader that times out is not tried first again.
        let timeout = BusError::Timeout {
            subject: "x".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        l.learn(&p, "c", &timeout.into());
        assert_eq!(l.target(&p), Some("a"));
    }
}
