//! Opening the metadata bucket.
//!
//! NOTE: async-nats' `create_key_value` first queries the account's JetStream limits, and the
//! answer of nats-server 2.9 (Debian's package) lacks fields it expects, so it fails there. We
//! create the bucket's stream ourselves, with the configuration a KV bucket has, then open it.

use anyhow::Context;
use async_nats::jetstream::{self, kv::Store, stream};

pub async fn open_bucket(client: &async_nats::Client, bucket: &str) -> anyhow::Result<Store> {
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
            num_replicas: 1,
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
