//! Global admission control: hands routers capacity tokens for each table. This first version joins the bus,
//! answers health checks and reports its version; token distribution comes with its own issue.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tern_bus::Bus;
use tern_proto::subjects;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub nats_url: String,
    pub instance: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            instance: "gac-1".into(),
        }
    }
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bus = Bus::connect_instance(&config.nats_url, "gac", &config.instance).await?;
    let ready = Arc::new(AtomicBool::new(true));
    tern_bus::serve_health(&bus, "gac", &config.instance, ready).await?;
    tracing::info!(instance = %config.instance, queue = subjects::queue::GAC, "gac ready");
    shutdown.await;
    tracing::info!("gac stopping");
    bus.drain().await;
    Ok(())
}
