//! The router: DynamoDB's JSON protocol over HTTP, request validation, the routing cache, and
//! dispatch of each request to the storage node serving its partition.

mod api;
mod auth;
mod backups;
mod batch;
mod cache;
mod capacity;
mod dispatch;
mod items;
mod json;
mod leaders;
mod metrics;
mod query;
mod tables;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tern_bus::Bus;

pub use auth::{AuthMode, Secret};
pub use cache::CacheMode;

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
    /// HTTP listen address of the DynamoDB endpoint.
    pub listen: SocketAddr,
    /// Availability zone of this router.
    pub az: String,
    /// `constant` (a MemDS lookup for every request) or `classic` (lookup on cache miss only).
    pub cache_mode: CacheMode,
    /// Timeout of each call to MemDS or a storage node.
    pub bus_timeout_ms: u64,
    /// Longest a request may take before it is answered InternalServerError (retryable).
    pub request_timeout_ms: u64,
    /// Requests handled at once; more are answered ThrottlingException.
    pub max_in_flight: usize,
    /// Request bodies held at once, in MiB (each counted by its Content-Length); more are
    /// answered ThrottlingException.
    pub max_in_flight_body_mb: usize,
    /// `on`: every request must be signed (SigV4) by a configured access key; `off`: nothing is
    /// checked, for local benchmarks only.
    pub auth: AuthMode,
    /// Access key pairs, `KEY:SECRET`, comma-separated. Prefer `credentials_file`.
    pub credentials: Secret,
    /// A file of access key pairs, one `KEY:SECRET` per line (`#` starts a comment); it should be
    /// readable by the router's user only.
    pub credentials_file: Option<std::path::PathBuf>,
    /// The region requests must be signed for; empty: any region.
    pub region: String,
    /// Address for Prometheus' scrape of `/metrics` (e.g. `127.0.0.1:9100`), apart from the
    /// DynamoDB endpoint; empty: none.
    pub metrics_listen: String,
    /// PEM certificate chain and private key: the endpoint speaks HTTPS. Both or neither.
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
    /// Admit requests by each table's capacity (provisioned, or on-demand's), at the rates GAC
    /// grants; `false`: no capacity limits (local benchmarks of the data path only).
    pub admission_control: bool,
    /// How often each table's consumption is reported to its GAC owner, in milliseconds.
    pub gac_report_ms: u64,
    /// How long a grant holds without a newer one before the rate decays toward its floor.
    pub gac_hold_ms: u64,
    /// Time constant of that decay, in milliseconds.
    pub gac_decay_ms: u64,
    /// A new on-demand table's "previous peak" (it starts at twice it), read and write units, until
    /// a GAC heartbeat announces GAC's own (`TERN_GAC_ON_DEMAND_INITIAL_*_UNITS`): set both alike.
    pub on_demand_initial_read_units: f64,
    pub on_demand_initial_write_units: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_nkey_file: None,
            nats_ca_file: None,
            instance: "router-1".into(),
            listen: "127.0.0.1:8000".parse().expect("valid address"),
            az: "az-a".into(),
            cache_mode: CacheMode::Constant,
            bus_timeout_ms: 2000,
            request_timeout_ms: 10_000,
            max_in_flight: 1024,
            max_in_flight_body_mb: 256,
            auth: AuthMode::On,
            credentials: Secret::default(),
            credentials_file: None,
            region: String::new(),
            metrics_listen: String::new(),
            tls_cert_file: None,
            tls_key_file: None,
            admission_control: true,
            gac_report_ms: 1000,
            gac_hold_ms: 5000,
            gac_decay_ms: 5000,
            on_demand_initial_read_units: capacity::ON_DEMAND_INITIAL.0 / 2.0,
            on_demand_initial_write_units: capacity::ON_DEMAND_INITIAL.1 / 2.0,
        }
    }
}

/// Everything a request handler needs.
pub(crate) struct Router {
    pub storage: tern_storage_client::StorageClient,
    pub memds: tern_memds_client::MemdsClient,
    /// Restores go to the archiver.
    pub archiver: tern_bus::Bus,
    pub cache: cache::RouteCache,
    pub metrics: metrics::Metrics,
    pub leaders: leaders::Leaders,
    pub instance: String,
    /// This router's availability zone.
    pub az: String,
    pub admission: api::Admission,
    /// Admission by table capacity (token buckets refilled at GAC's grants).
    pub capacity: Arc<capacity::Capacity>,
    /// `host:port` this router answers on, for DescribeEndpoints.
    pub endpoint_address: String,
    /// The access keys requests are checked against; `None`: no check (`auth = off`).
    pub keys: Option<auth::Keys>,
}

pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("tls_cert_file and tls_key_file go together: set both or neither"),
    };
    // Keys first: a router that could not check requests must not start.
    let keys = match config.auth {
        AuthMode::Off => {
            tracing::warn!("auth = off: requests are not authenticated (local benchmarks only)");
            None
        }
        AuthMode::On => {
            let keys = auth::Keys::load(
                &config.credentials,
                config.credentials_file.as_deref(),
                &config.region,
            )?;
            if keys.len() == 0 {
                anyhow::bail!(
                    "auth is on but no access keys are configured: set credentials_file (or credentials), or auth = off"
                );
            }
            tracing::info!(keys = ?keys.ids(), "requests must be signed (SigV4) by one of these access keys");
            Some(keys)
        }
    };
    let bus = Bus::connect_instance(
        &config.nats_url,
        &tern_bus::NatsAccess {
            nkey_file: config.nats_nkey_file.clone(),
            ca_file: config.nats_ca_file.clone(),
        },
        "router",
        &config.instance,
    )
    .await?
    .with_timeout(Duration::from_millis(config.bus_timeout_ms));
    let metrics = metrics::Metrics::default();
    bus.register_metrics(&metrics.registry);
    let peak = |units: f64| {
        if units.is_nan() {
            1.0
        } else {
            units.clamp(1.0, 1e12)
        }
    };
    let capacity = capacity::Capacity::new(
        capacity::Settings {
            enabled: config.admission_control,
            report: Duration::from_millis(config.gac_report_ms.max(50)),
            hold: Duration::from_millis(config.gac_hold_ms),
            decay: Duration::from_millis(config.gac_decay_ms.max(1)),
            on_demand_initial: (
                2.0 * peak(config.on_demand_initial_read_units),
                2.0 * peak(config.on_demand_initial_write_units),
            ),
        },
        &config.instance,
        &metrics.registry,
    );
    capacity.clone().run(bus.clone()).await?;
    let router = Arc::new(Router {
        capacity,
        keys,
        cache: cache::RouteCache::new(
            tern_memds_client::MemdsClient::new(bus.clone()),
            config.cache_mode,
            metrics.clone(),
        ),
        storage: tern_storage_client::StorageClient::new(bus.clone()),
        memds: tern_memds_client::MemdsClient::new(bus.clone()),
        archiver: bus.clone(),
        metrics,
        leaders: leaders::Leaders::default(),
        instance: config.instance.clone(),
        az: config.az.clone(),
        admission: api::Admission::new(&config),
        endpoint_address: config.listen.to_string(),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    router
        .metrics
        .registry
        .serve(&config.metrics_listen)
        .await
        .context("metrics_listen")?;
    let cache = router.cache.clone();
    bus.serve(
        tern_proto::subjects::ROUTER_FLUSH_CACHE,
        None,
        move |_: tern_proto::Empty| {
            let entries = cache.flush() as u64;
            tracing::info!(entries, "routing cache flushed on request");
            async move { Ok(tern_proto::memds::CacheFlushed { entries }) }
        },
    )
    .await?;
    let ready = Arc::new(AtomicBool::new(true));
    tern_bus::serve_health(&bus, "router", &config.instance, ready).await?;
    tracing::info!(listen = %config.listen, mode = ?config.cache_mode, https = tls.is_some(), "router ready");
    match tls {
        Some(acceptor) => axum::serve(tls::TlsListener::new(listener, acceptor)?, api::app(router))
            .with_graceful_shutdown(shutdown)
            .await
            .context("serve https")?,
        None => axum::serve(listener, api::app(router))
            .with_graceful_shutdown(shutdown)
            .await
            .context("serve http")?,
    }
    tracing::info!("router stopped taking requests");
    bus.drain().await;
    Ok(())
}
