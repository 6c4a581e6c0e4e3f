//! The archive's object store: where segments and snapshots live, and the two operations the
//! archive needs: a put that happens at most once per name, and a read that checks what it reads.
//!
//! Layout under the configured prefix (names are zero-padded, so listing order is log order):
//!
//! ```text
//! partitions/<pid>/segments/<first index>          sealed log segment (tern_proto::archive::ArchiveSegment)
//! partitions/<pid>/snapshots/<index>/part-<n>      items of a snapshot (SnapshotPart)
//! partitions/<pid>/snapshots/<index>/manifest      written last: the snapshot is whole (SnapshotManifest)
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::Config;

/// What a put-once found.
pub enum Put {
    Created,
    /// The name was taken: its bytes (an earlier try of the same segment, or another instance's).
    Exists(bytes::Bytes),
}

#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

fn pad(n: u64) -> String {
    format!("{n:020}")
}

impl Archive {
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let store: Arc<dyn ObjectStore> = match config.store.as_str() {
            "local" => {
                std::fs::create_dir_all(&config.local_dir)
                    .with_context(|| format!("create {}", config.local_dir.display()))?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&config.local_dir)
                        .context("open the local archive directory")?,
                )
            }
            "s3" => {
                // HTTPS to S3 goes through rustls with the process's provider: ring, as the
                // router's (installing it twice is harmless).
                let _ = rustls::crypto::ring::default_provider().install_default();
                let retry = object_store::RetryConfig {
                    backoff: object_store::BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(1),
                        base: 2.0,
                    },
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(10),
                };
                // NOTE: with_client_options replaces the builder's own, allow_http included.
                let options = object_store::ClientOptions::new()
                    .with_allow_http(config.s3_endpoint.starts_with("http://"))
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_millis(config.s3_timeout_ms.max(100)));
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&config.s3_bucket)
                    .with_region(&config.s3_region)
                    .with_retry(retry)
                    .with_client_options(options);
                if !config.s3_endpoint.is_empty() {
                    b = b
                        .with_endpoint(&config.s3_endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                if !config.s3_access_key_id.is_empty() {
                    b = b
                        .with_access_key_id(&config.s3_access_key_id)
                        .with_secret_access_key(&config.s3_secret_access_key.0);
                }
                Arc::new(b.build().context("configure the S3 archive")?)
            }
            other => anyhow::bail!("store: unknown archive store {other:?} (local or s3)"),
        };
        let prefix = config.prefix.trim_matches('/').to_string();
        Ok(Self { store, prefix })
    }

    fn path(&self, rest: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.prefix))
        }
    }

    pub fn segment(&self, pid: u64, first: u64) -> Path {
        self.path(&format!("partitions/{}/segments/{}", pad(pid), pad(first)))
    }

    pub fn snapshot_part(&self, pid: u64, index: u64, part: u32) -> Path {
        self.path(&format!(
            "partitions/{}/snapshots/{}/part-{part:06}",
            pad(pid),
            pad(index)
        ))
    }

    pub fn snapshot_manifest(&self, pid: u64, index: u64) -> Path {
        self.path(&format!(
            "partitions/{}/snapshots/{}/manifest",
            pad(pid),
            pad(index)
        ))
    }

    pub fn backup(&self, id: &str) -> Path {
        self.path(&format!("backups/{id}"))
    }

    /// Puts `bytes` at `path`, replacing what is there (backup records only: the log and
    /// snapshots are written once).
    pub async fn put(&self, path: &Path, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .with_context(|| format!("put {path}"))?;
        Ok(())
    }

    pub async fn delete(&self, path: &Path) -> anyhow::Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("delete {path}")),
        }
    }

    /// The ids of every backup record, in order (ids start with their creation time).
    pub async fn backups(&self) -> anyhow::Result<Vec<String>> {
        let prefix = self.path("backups");
        let mut ids: Vec<String> = self
            .store
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
            .context("list backups")?
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Whether an object is there.
    pub async fn exists(&self, path: &Path) -> anyhow::Result<bool> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("head {path}")),
        }
    }

    /// Puts `bytes` at `path` unless something is there already (a conditional create).
    pub async fn put_once(&self, path: &Path, bytes: Vec<u8>) -> anyhow::Result<Put> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(Put::Created),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Ok(Put::Exists(self.get(path).await?))
            }
            Err(e) => Err(e).with_context(|| format!("put {path}")),
        }
    }

    pub async fn get(&self, path: &Path) -> anyhow::Result<bytes::Bytes> {
        let r = self
            .store
            .get(path)
            .await
            .with_context(|| format!("get {path}"))?;
        r.bytes().await.with_context(|| format!("read {path}"))
    }

    /// The message stored at `path`, its checksum checked.
    pub async fn read<M: prost::Message + Default>(&self, path: &Path) -> anyhow::Result<M> {
        let bytes = self.get(path).await?;
        tern_proto::archive::unseal(&bytes).map_err(|e| anyhow::anyhow!("{path}: {e}"))
    }

    /// The first indexes of a partition's archived segments, in order.
    pub async fn segments(&self, pid: u64) -> anyhow::Result<Vec<u64>> {
        let prefix = self.path(&format!("partitions/{}/segments", pad(pid)));
        let mut firsts: Vec<u64> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location.filename().and_then(|f| f.parse().ok()))
            .try_collect::<Vec<_>>()
            .await
            .context("list segments")?
            .into_iter()
            .flatten()
            .collect();
        firsts.sort_unstable();
        Ok(firsts)
    }

    /// The indexes of a partition's whole snapshots (those with a manifest), in order.
    pub async fn snapshots(&self, pid: u64) -> anyhow::Result<Vec<u64>> {
        let prefix = self.path(&format!("partitions/{}/snapshots", pad(pid)));
        let mut found: Vec<u64> = self
            .store
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
            .context("list snapshots")?
            .into_iter()
            .filter(|m| m.location.filename() == Some("manifest"))
            .filter_map(|m| {
                let parts: Vec<_> = m.location.parts().collect();
                parts
                    .get(parts.len().checked_sub(2)?)
                    .and_then(|p| p.as_ref().parse().ok())
            })
            .collect();
        found.sort_unstable();
        Ok(found)
    }
}
