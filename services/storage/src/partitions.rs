//! The partition replicas this node holds, in memory and in the `partitions` keyspace.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use prost::Message;
use tern_bus::BusError;
use tern_proto::storage::CreatePartitionRequest;

use crate::store::Store;

#[derive(Clone)]
pub struct Partitions {
    map: Arc<RwLock<HashMap<u64, Arc<CreatePartitionRequest>>>>,
    store: Store,
}

impl Partitions {
    pub fn load(store: &Store) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        for kv in store.partitions().iter() {
            let (_, v) = kv.into_inner()?;
            let p = CreatePartitionRequest::decode(v.as_ref())?;
            if let Some(info) = &p.partition {
                map.insert(info.id, Arc::new(p));
            }
        }
        tracing::info!(replicas = map.len(), "partitions loaded");
        Ok(Self {
            map: Arc::new(RwLock::new(map)),
            store: store.clone(),
        })
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Records a replica durably; idempotent.
    pub fn create(&self, req: CreatePartitionRequest) -> anyhow::Result<()> {
        let info = req
            .partition
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("partition missing"))?;
        let id = info.id;
        self.store
            .partitions()
            .insert(id.to_be_bytes(), req.encode_to_vec())?;
        self.store.sync()?;
        tracing::info!(partition = id, table = %req.table_name, epoch = info.epoch, "partition replica created");
        self.map.write().insert(id, Arc::new(req));
        Ok(())
    }

    /// Forgets a replica and removes its items; idempotent.
    pub fn drop(&self, id: u64) -> anyhow::Result<()> {
        self.map.write().remove(&id);
        self.store.partitions().remove(id.to_be_bytes())?;
        let removed = self.store.drop_items(id)?;
        tracing::info!(partition = id, items = removed, "partition replica dropped");
        Ok(())
    }

    pub fn all(&self) -> Vec<Arc<CreatePartitionRequest>> {
        self.map.read().values().cloned().collect()
    }

    /// The hash range `[start, end]` of partition `id`, if this node holds it.
    pub fn range(&self, id: u64) -> Option<(u64, u64)> {
        let map = self.map.read();
        let info = map.get(&id)?.partition.as_ref()?;
        Some((info.hash_start, info.hash_end))
    }

    /// Checks that this node holds a replica of `id` at `epoch`: a redirect otherwise.
    pub fn check_epoch(&self, id: u64, epoch: u64) -> Result<(), BusError> {
        match self.map.read().get(&id).and_then(|p| p.partition.as_ref()) {
            Some(info) if info.epoch == epoch => Ok(()),
            Some(info) => Err(BusError::Redirect(info.leader.clone())),
            None => Err(BusError::Redirect(String::new())),
        }
    }
}
