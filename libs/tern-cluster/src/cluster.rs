use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tern_bus::Bus;
use tern_proto::{subjects, HealthRequest, HealthResponse};

use crate::{NatsServer, ServiceProcess};

#[derive(Clone, Debug)]
pub struct StorageNodeSpec {
    pub id: String,
    pub az: String,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Holds the JetStream store, each storage node's data and the logs; survives restarts.
    pub data_dir: PathBuf,
    /// Directory holding the tern-* service binaries.
    pub bin_dir: PathBuf,
    /// Router HTTP port; `None` picks a free one.
    pub router_port: Option<u16>,
    pub storage_nodes: Vec<StorageNodeSpec>,
    /// Extra environment for every service process (e.g. `TERN_ROUTER_CACHE_MODE`).
    pub env: Vec<(String, String)>,
}

impl ClusterSpec {
    /// Three storage nodes in az-a, az-b, az-c.
    pub fn new(data_dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Self {
        let storage_nodes = ["a", "b", "c"]
            .iter()
            .map(|z| StorageNodeSpec {
                id: format!("storage-{z}"),
                az: format!("az-{z}"),
            })
            .collect();
        Self {
            data_dir: data_dir.into(),
            bin_dir: bin_dir.into(),
            router_port: None,
            storage_nodes,
            env: Vec::new(),
        }
    }
}

/// A running local cluster. Dropping it kills every process.
pub struct Cluster {
    // NOTE: field order is drop order: services go before the nats-server they talk to.
    services: BTreeMap<String, (ServiceProcess, String, String)>,
    nats: NatsServer,
    router_port: u16,
    /// Storage node id → port of its `/metrics`.
    metrics_ports: BTreeMap<String, u16>,
    bus: Bus,
}

impl Cluster {
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        let logs = spec.data_dir.join("logs");
        std::fs::create_dir_all(&logs).context("create logs dir")?;
        let nats = NatsServer::start(&spec.data_dir.join("nats"), &logs.join("nats-server.log"))?;
        let router_port = match spec.router_port {
            Some(p) => p,
            None => crate::free_port()?,
        };
        let mut metrics_ports = BTreeMap::new();
        for node in &spec.storage_nodes {
            metrics_ports.insert(node.id.clone(), crate::free_port()?);
        }
        let mut services = BTreeMap::new();
        for (name, service, instance, env) in
            service_plan(&spec, &nats.url(), router_port, &metrics_ports)
        {
            let binary = spec.bin_dir.join(format!("tern-{service}"));
            if !binary.is_file() {
                bail!(
                    "{} is missing: build the services first (cargo build --workspace --bins)",
                    binary.display()
                );
            }
            let mut env = env;
            env.extend(spec.env.iter().cloned());
            let proc = ServiceProcess::new(&name, binary, env, logs.join(format!("{name}.log")));
            services.insert(name, (proc, service, instance));
        }
        let bus = Bus::connect(&nats.url(), "tern-cluster").await?;
        let mut cluster = Self {
            services,
            nats,
            router_port,
            metrics_ports,
            bus,
        };
        for (proc, _, _) in cluster.services.values_mut() {
            proc.start()?;
        }
        cluster.wait_healthy(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.router_port)
    }

    /// The Prometheus endpoint of each storage node: (node id, URL).
    pub fn storage_metrics(&self) -> Vec<(String, String)> {
        self.metrics_ports
            .iter()
            .map(|(n, p)| (n.clone(), format!("http://127.0.0.1:{p}/metrics")))
            .collect()
    }

    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Names of the service processes (`memds`, `router`, `storage-a`, ...).
    pub fn service_names(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    /// Power-off of one service: SIGKILL.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        self.service(name)?.0.kill();
        Ok(())
    }

    /// Freezes one service (SIGSTOP), as a stalled machine or a long pause would.
    pub fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        self.service(name)?.0.pause()
    }

    /// Lets a paused service run again (SIGCONT).
    pub fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        self.service(name)?.0.resume()
    }

    /// The process id of a running service.
    pub fn pid(&mut self, name: &str) -> anyhow::Result<Option<u32>> {
        Ok(self.service(name)?.0.pid())
    }

    /// Resident memory of a running service in bytes (`VmRSS`).
    pub fn rss_bytes(&mut self, name: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.service(name)?.0.rss_bytes())
    }

    /// Starts a stopped or killed service again and waits until it is healthy.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.service(name)?.0.start()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        self.wait_one(name, deadline).await
    }

    /// Waits until every service answers its health check (and the router listens).
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let names = self.service_names();
        for name in names {
            self.wait_one(&name, deadline).await?;
        }
        Ok(())
    }

    async fn wait_one(&mut self, name: &str, deadline: Instant) -> anyhow::Result<()> {
        let port = self.router_port;
        let bus = self.bus.with_timeout(Duration::from_millis(500));
        let (proc, service, instance) = self.service(name)?;
        let subject = subjects::health(service, instance);
        loop {
            if !proc.is_running() {
                bail!(
                    "{name} exited during start-up; see {}",
                    proc.log_file().display()
                );
            }
            let healthy = match bus
                .call::<_, HealthResponse>(&subject, &HealthRequest {})
                .await
            {
                Ok(h) => h.ready && (service != "router" || router_listens(port)),
                Err(_) => false,
            };
            if healthy {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} is not healthy; see {}", proc.log_file().display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every service cleanly (SIGTERM; the router first, nats-server last).
    pub async fn stop(mut self) {
        let order = ["router", "gac", "archiver", "memds"];
        for name in order {
            if let Some((p, _, _)) = self.services.get_mut(name) {
                p.stop(Duration::from_secs(10));
            }
        }
        for (p, _, _) in self.services.values_mut() {
            p.stop(Duration::from_secs(10));
        }
        self.bus.drain().await;
        self.nats.stop();
    }

    fn service(&mut self, name: &str) -> anyhow::Result<&mut (ServiceProcess, String, String)> {
        self.services
            .get_mut(name)
            .with_context(|| format!("no service named {name}"))
    }
}

fn router_listens(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

type Plan = Vec<(String, String, String, Vec<(String, String)>)>;

/// (process name, service, instance id, environment) of every process to start.
fn service_plan(
    spec: &ClusterSpec,
    nats_url: &str,
    router_port: u16,
    metrics_ports: &BTreeMap<String, u16>,
) -> Plan {
    let env = |service: &str, pairs: &[(&str, String)]| -> Vec<(String, String)> {
        let up = service.to_ascii_uppercase();
        let mut v = vec![(format!("TERN_{up}_NATS_URL"), nats_url.to_string())];
        v.extend(
            pairs
                .iter()
                .map(|(k, val)| (format!("TERN_{up}_{k}"), val.clone())),
        );
        v
    };
    let mut plan: Plan = vec![
        (
            "memds".into(),
            "memds".into(),
            "memds-1".into(),
            env("memds", &[("INSTANCE", "memds-1".into())]),
        ),
        (
            "gac".into(),
            "gac".into(),
            "gac-1".into(),
            env("gac", &[("INSTANCE", "gac-1".into())]),
        ),
        (
            "archiver".into(),
            "archiver".into(),
            "archiver-1".into(),
            env("archiver", &[("INSTANCE", "archiver-1".into())]),
        ),
    ];
    for node in &spec.storage_nodes {
        let dir = spec.data_dir.join(&node.id);
        plan.push((
            node.id.clone(),
            "storage".into(),
            node.id.clone(),
            env(
                "storage",
                &[
                    ("NODE_ID", node.id.clone()),
                    ("AZ", node.az.clone()),
                    ("DATA_DIR", dir.display().to_string()),
                    (
                        "METRICS_LISTEN",
                        format!("127.0.0.1:{}", metrics_ports[&node.id]),
                    ),
                ],
            ),
        ));
    }
    plan.push((
        "router".into(),
        "router".into(),
        "router-1".into(),
        env(
            "router",
            &[
                ("INSTANCE", "router-1".into()),
                ("LISTEN", format!("127.0.0.1:{router_port}")),
            ],
        ),
    ));
    plan
}
