//! Opening the metadata bucket.
//!
//! The bucket's stream is created here with the configuration a KV bucket has (file storage, one
//! message per key, compare-and-set through expected revisions), and `replicas` copies: 1 where
//! one nats-server runs (`tern up`), 3 on a NATS cluster of three or more. Durability across a
//! power cut comes from the server's `sync_interval: always` (see `tern-cluster` and
//! `compose/nats.conf`): every write is on disk before it is acknowledged.

use anyhow::Context;
use async_nats::jetstream::{self, kv::Store, stream};

pub async fn open_bucket(
    client: &async_nats::Client,
    bucket: &str,
    replicas: usize,
) -> anyhow::Result<Store> {
    let js = jetstream::new(client.clone());
    let stream_name = format!("KV_{bucket}");
    if js.get_stream(&stream_name).await.is_err() {
        let config = stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        // Another instance may have created it meanwhile: that is fine.
        if let Err(e) = js.create_stream(config).await {
            js.get_stream(&stream_name)
                .await
                .map_err(|_| e)
                .context("create metadata bucket stream")?;
        }
        tracing::info!(bucket, "metadata bucket created");
    }
    js.get_key_value(bucket)
        .await
        .context("open metadata bucket")
}
