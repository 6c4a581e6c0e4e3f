//! The archiver: ships sealed WAL segments to S3, rebuilds reference replicas, scrubs and restores.
//! This first version joins the bus, answers health checks and reports its version; the archive path
//! comes with its own issue.

use std::future::Future;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub nats_url: String,
    /// The nkey seed this service authenticates to nats-server with (`tern up` writes one per
    /// service); none: connect without credentials.
    pub nats_nkey_file: Option<std::path::PathBuf>,
    /// PEM CA certificate of nats-server's TLS certificate; set: the connection must be TLS.
    pub nats_ca_file: Option<std::path::PathBuf>,
    pub instance: String,
    /// Address for Prometheus' scrape of `/metrics` (e.g. `127.0.0.1:9104`); empty: none.
    pub metrics_listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_nkey_file: None,
            nats_ca_file: None,
            instance: "archiver-1".into(),
            metrics_listen: String::new(),
        }
    }
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let metrics = tern_telemetry::metrics::Metrics::new();
    metrics.register_build_info("archiver");
    metrics.serve(&config.metrics_listen).await?;
    tern_bus::serve_health_until(
        &config.nats_url,
        &tern_bus::NatsAccess {
            nkey_file: config.nats_nkey_file.clone(),
            ca_file: config.nats_ca_file.clone(),
        },
        "archiver",
        &config.instance,
        shutdown,
    )
    .await?;
    Ok(())
}
