use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tern_bus::Bus;
use tern_proto::{subjects, HealthRequest, HealthResponse};

use crate::bus_auth::BusAuth;
use crate::process::log_tail;
use crate::{NatsServer, ServiceProcess};

/// The process name of the cluster's nats-server (for [`Cluster::supervise`] and pid files).
pub const NATS: &str = "nats-server";

/// A process that exits sooner than this after its start counts as failing again: its next
/// restart waits twice as long.
const STABLE_AFTER: Duration = Duration::from_secs(30);
const FIRST_DELAY: Duration = Duration::from_millis(200);
/// A process log above this is rotated: copied to `<log>.1` (replacing the previous one) and
/// emptied; processes write with O_APPEND, so they go on at the new end.
pub const LOG_MAX_BYTES: u64 = 64 * 1024 * 1024;
const LOG_CHECK_EVERY: Duration = Duration::from_secs(10);
const MAX_DELAY: Duration = Duration::from_secs(30);

/// Restart pacing of one supervised process.
struct Backoff {
    started: Instant,
    delay: Duration,
    restart_at: Option<Instant>,
}

impl Backoff {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            delay: FIRST_DELAY,
            restart_at: None,
        }
    }

    /// The process exited now: when to start it again.
    fn exited(&mut self, now: Instant) -> Duration {
        if now.duration_since(self.started) >= STABLE_AFTER {
            self.delay = FIRST_DELAY;
        }
        let wait = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        self.restart_at = Some(now + wait);
        wait
    }
}

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
    /// Router instances (each its own endpoint: `router_port`, then the next ports up, or free
    /// ports when `router_port` is `None`). Processes `router`, `router-2`, ...
    pub routers: usize,
    /// MemDS instances, serving as one queue group. Processes `memds`, `memds-2`, ...
    pub memds: usize,
    /// GAC instances, sharing the tables between them. Processes `gac`, `gac-2`, ...
    pub gac: usize,
    /// The access key (id, secret) requests must be signed with; `None`: the routers check no
    /// signature (local benchmarks only). Written to `<data>/secrets/api-credentials`, readable
    /// by its owner only.
    pub api_credentials: Option<(String, String)>,
    /// Every process authenticates to nats-server with its own nkey and may use only its own
    /// subjects (`crate::bus_auth`); `false`: the bus is open (for comparison only).
    pub bus_auth: bool,
    /// TLS for the DynamoDB endpoint and for nats-server (every service then requires it).
    pub tls: Option<TlsFiles>,
}

/// PEM files for TLS: the certificate chain and key the router and nats-server present (for
/// 127.0.0.1), and the CA certificate every bus client checks nats-server's against.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

/// The development access key of a local cluster: what the README's commands sign with.
pub const DEV_ACCESS_KEY_ID: &str = "tern";
pub const DEV_SECRET_ACCESS_KEY: &str = "tern";

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
            routers: 1,
            memds: 1,
            gac: 2,
            api_credentials: Some((DEV_ACCESS_KEY_ID.into(), DEV_SECRET_ACCESS_KEY.into())),
            bus_auth: true,
            tls: None,
        }
    }
}

/// A running local cluster. Dropping it kills every process.
pub struct Cluster {
    // NOTE: field order is drop order: services go before the nats-server they talk to.
    services: BTreeMap<String, (ServiceProcess, String, String)>,
    nats: NatsServer,
    /// Endpoint port of each router process, by process name.
    router_ports: BTreeMap<String, u16>,
    /// Process name → port of its `/metrics`.
    metrics_ports: BTreeMap<String, u16>,
    /// `http` or `https` (with TLS).
    scheme: &'static str,
    bus: Bus,
    bus_auth: Option<BusAuth>,
    /// Holds `<name>.pid` of every running process.
    run_dir: PathBuf,
    backoff: BTreeMap<String, Backoff>,
    logs_checked: Instant,
}

impl Cluster {
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        let logs = spec.data_dir.join("logs");
        std::fs::create_dir_all(&logs).context("create logs dir")?;
        let bus_auth = if spec.bus_auth {
            let nodes: Vec<String> = spec.storage_nodes.iter().map(|n| n.id.clone()).collect();
            Some(BusAuth::generate(&spec.data_dir, &nodes)?)
        } else {
            None
        };
        let mut nats_extra = bus_auth
            .as_ref()
            .map(BusAuth::config_block)
            .unwrap_or_default();
        if let Some(tls) = &spec.tls {
            nats_extra.push_str(&format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
                tls.cert_file.display(),
                tls.key_file.display()
            ));
        }
        let nats = NatsServer::start_with(
            &spec.data_dir.join("nats"),
            &logs.join("nats-server.log"),
            &nats_extra,
        )?;
        // Every port at once, so that no two processes are given the same one.
        let routers = spec.routers.max(1);
        // Routers: endpoint and metrics; storage nodes, MemDS, GAC, archiver: metrics.
        let mut ports = crate::free_ports(
            2 * routers + spec.storage_nodes.len() + spec.memds.max(1) + spec.gac.max(1) + 1,
        )
        .context("pick ports")?
        .into_iter();
        let mut router_ports = BTreeMap::new();
        for i in 0..routers {
            let free = ports.next().expect("one port per router");
            let port = match spec.router_port {
                Some(p) => p + i as u16,
                None => free,
            };
            router_ports.insert(numbered("router", i), port);
        }
        let mut metrics_ports = BTreeMap::new();
        for node in &spec.storage_nodes {
            metrics_ports.insert(node.id.clone(), ports.next().expect("one port per node"));
        }
        for i in 0..routers {
            metrics_ports.insert(
                numbered("router", i),
                ports.next().expect("a metrics port per router"),
            );
        }
        let others = (0..spec.memds.max(1))
            .map(|i| numbered("memds", i))
            .chain((0..spec.gac.max(1)).map(|i| numbered("gac", i)))
            .chain(["archiver".to_string()]);
        for name in others {
            metrics_ports.insert(name, ports.next().expect("a metrics port per process"));
        }
        let credentials = match &spec.api_credentials {
            Some((id, secret)) => Some(write_credentials(&spec.data_dir, id, secret)?),
            None => None,
        };
        let mut services = BTreeMap::new();
        for (name, service, instance, env) in service_plan(
            &spec,
            &nats.url(),
            &router_ports,
            &metrics_ports,
            credentials.as_deref(),
        ) {
            let binary = spec.bin_dir.join(format!("tern-{service}"));
            if !binary.is_file() {
                bail!(
                    "{} is missing: build the services first (cargo build --workspace --bins)",
                    binary.display()
                );
            }
            let mut env = env;
            if let Some(auth) = &bus_auth {
                let id = crate::bus_auth::identity(&service, &instance);
                env.push((
                    format!("TERN_{}_NATS_NKEY_FILE", service.to_ascii_uppercase()),
                    auth.seed_file(&id).display().to_string(),
                ));
            }
            if let Some(tls) = &spec.tls {
                let up = service.to_ascii_uppercase();
                env.push((
                    format!("TERN_{up}_NATS_CA_FILE"),
                    tls.ca_file.display().to_string(),
                ));
                if service == "router" {
                    env.push((
                        "TERN_ROUTER_TLS_CERT_FILE".into(),
                        tls.cert_file.display().to_string(),
                    ));
                    env.push((
                        "TERN_ROUTER_TLS_KEY_FILE".into(),
                        tls.key_file.display().to_string(),
                    ));
                }
            }
            env.extend(spec.env.iter().cloned());
            let proc = ServiceProcess::new(&name, binary, env, logs.join(format!("{name}.log")));
            services.insert(name, (proc, service, instance));
        }
        let access = tern_bus::NatsAccess {
            nkey_file: bus_auth
                .as_ref()
                .map(|a| a.seed_file(crate::bus_auth::ADMIN)),
            ca_file: spec.tls.as_ref().map(|t| t.ca_file.clone()),
        };
        let bus = Bus::connect_with(&nats.url(), "tern-cluster", &access, None).await?;
        let run_dir = spec.data_dir.join("run");
        std::fs::create_dir_all(&run_dir).context("create run dir")?;
        let mut cluster = Self {
            services,
            nats,
            router_ports,
            metrics_ports,
            scheme: if spec.tls.is_some() { "https" } else { "http" },
            bus,
            bus_auth,
            run_dir,
            backoff: BTreeMap::new(),
            logs_checked: Instant::now(),
        };
        cluster.write_pid(NATS, cluster.nats.pid());
        cluster.backoff.insert(NATS.into(), Backoff::new());
        for name in cluster.service_names() {
            cluster.start_process(&name)?;
        }
        cluster.wait_healthy(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    pub fn endpoint(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.scheme, self.router_ports["router"]
        )
    }

    /// Every router's endpoint, by process name (`router`, `router-2`, ...).
    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.router_ports
            .iter()
            .map(|(n, p)| (n.clone(), format!("{}://127.0.0.1:{p}", self.scheme)))
            .collect()
    }

    /// The Prometheus endpoint of every process: (process name, URL).
    pub fn metrics_endpoints(&self) -> Vec<(String, String)> {
        self.metrics_ports
            .iter()
            .map(|(n, p)| (n.clone(), format!("http://127.0.0.1:{p}/metrics")))
            .collect()
    }

    /// A Prometheus configuration scraping every process: one job per service (router, memds,
    /// storage, gac, archiver), as compose's `compose/prometheus.yml` has them.
    pub fn prometheus_config(&self) -> String {
        prometheus_config(&self.metrics_ports)
    }

    /// The Prometheus endpoint of each storage node: (node id, URL).
    pub fn storage_metrics(&self) -> Vec<(String, String)> {
        self.metrics_ports
            .iter()
            .filter(|(n, _)| n.starts_with("storage-"))
            .map(|(n, p)| (n.clone(), format!("http://127.0.0.1:{p}/metrics")))
            .collect()
    }

    /// The Prometheus endpoint of each router, on its own port: (process name, URL).
    pub fn router_metrics(&self) -> Vec<(String, String)> {
        self.metrics_ports
            .iter()
            .filter(|(n, _)| n.starts_with("router"))
            .map(|(n, p)| (n.clone(), format!("http://127.0.0.1:{p}/metrics")))
            .collect()
    }

    /// `http://127.0.0.1:<port>` serving `/metrics` of process `name`.
    pub fn metrics_base(&self, name: &str) -> Option<String> {
        self.metrics_ports
            .get(name)
            .map(|p| format!("http://127.0.0.1:{p}"))
    }

    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The nkey seed file of a bus identity (`admin`, `router`, `memds`, a storage node id), when
    /// the bus is authenticated.
    pub fn nkey_file(&self, identity: &str) -> Option<PathBuf> {
        self.bus_auth.as_ref().map(|a| a.seed_file(identity))
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

    /// Whether a service's process is running.
    pub fn is_running(&mut self, name: &str) -> anyhow::Result<bool> {
        Ok(self.service(name)?.0.is_running())
    }

    /// The process id of a running service.
    pub fn pid(&mut self, name: &str) -> anyhow::Result<Option<u32>> {
        Ok(self.service(name)?.0.pid())
    }

    /// Resident memory of a running service in bytes (`VmRSS`).
    pub fn rss_bytes(&mut self, name: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.service(name)?.0.rss_bytes())
    }

    /// [`Self::rss_bytes`] through a shared reference.
    pub fn rss_of(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let (p, _, _) = self
            .services
            .get(name)
            .with_context(|| format!("no service named {name}"))?;
        Ok(p.rss_bytes())
    }

    /// Starts a stopped or killed service again and waits until it is healthy.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.start_process(name)?;
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
        let port = self.router_ports.get(name).copied();
        let bus = self.bus.with_timeout(Duration::from_millis(500));
        let (proc, service, instance) = self.service(name)?;
        let subject = subjects::health(service, instance);
        loop {
            if !proc.is_running() {
                bail!(
                    "{name} exited during start-up; last lines of {}:\n{}",
                    proc.log_file().display(),
                    log_tail(proc.log_file(), 10).join("\n")
                );
            }
            let healthy = match bus
                .call::<_, HealthResponse>(&subject, &HealthRequest {})
                .await
            {
                Ok(h) => h.ready && port.is_none_or(router_listens),
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
        // Routers first (no new requests), then the rest, storage last but nats-server.
        let first = |n: &String| {
            ["router", "gac", "archiver", "memds"]
                .iter()
                .position(|s| n == s || n.starts_with(&format!("{s}-")))
                .unwrap_or(usize::MAX)
        };
        let mut names = self.service_names();
        names.sort_by_key(first);
        for name in names {
            if let Some((p, _, _)) = self.services.get_mut(&name) {
                p.stop(Duration::from_secs(10));
            }
        }
        self.bus.drain().await;
        self.nats.stop();
        for name in self.service_names() {
            self.write_pid(&name, None);
        }
        self.write_pid(NATS, None);
    }

    /// The process id of nats-server while it runs.
    pub fn nats_pid(&self) -> Option<u32> {
        self.nats.pid()
    }

    /// nats-server itself: for monitoring queries, kills and restarts in tests.
    pub fn nats(&mut self) -> &mut NatsServer {
        &mut self.nats
    }

    fn start_process(&mut self, name: &str) -> anyhow::Result<()> {
        let proc = &mut self.service(name)?.0;
        proc.start()?;
        let pid = proc.pid();
        self.write_pid(name, pid);
        self.backoff
            .entry(name.to_string())
            .or_insert_with(Backoff::new)
            .started = Instant::now();
        Ok(())
    }

    fn write_pid(&self, name: &str, pid: Option<u32>) {
        let path = self.run_dir.join(format!("{name}.pid"));
        let _ = match pid {
            Some(pid) => std::fs::write(&path, format!("{pid}\n")),
            None => std::fs::remove_file(&path),
        };
    }

    /// One pass of supervision (`tern up` runs it a few times a second): every process that
    /// exited on its own, nats-server included, is reported with its exit status and the last
    /// lines of its log, and started again after a pause that doubles while it keeps failing soon
    /// after start (0.2 s, up to 30 s), as compose's restart policy does. Returns what happened,
    /// for the operator.
    pub fn supervise(&mut self) -> Vec<String> {
        let now = Instant::now();
        let mut events = Vec::new();
        if now.duration_since(self.logs_checked) >= LOG_CHECK_EVERY {
            self.logs_checked = now;
            let mut logs: Vec<PathBuf> = self
                .services
                .values()
                .map(|(p, _, _)| p.log_file().to_path_buf())
                .collect();
            logs.push(self.nats.log_file().to_path_buf());
            for log in logs {
                if let Err(e) = rotate_if_large(&log, LOG_MAX_BYTES) {
                    tracing::warn!(log = %log.display(), error = %e, "log rotation");
                }
            }
        }
        let mut exited: Vec<(String, String, std::path::PathBuf)> = Vec::new();
        if let Some(status) = self.nats.exit_status() {
            exited.push((NATS.into(), status.to_string(), self.nats.log_file().into()));
        }
        for (name, (proc, _, _)) in self.services.iter_mut() {
            if let Some(status) = proc.exit_status() {
                exited.push((name.clone(), status.to_string(), proc.log_file().into()));
            }
        }
        for (name, status, log) in exited {
            let backoff = self
                .backoff
                .entry(name.clone())
                .or_insert_with(Backoff::new);
            if backoff.restart_at.is_some() {
                continue;
            }
            let ran = now.duration_since(backoff.started);
            let wait = backoff.exited(now);
            let mut text = format!(
                "{name} exited ({status}) after {:.1} s; restarting in {:.1} s; last lines of {}:",
                ran.as_secs_f64(),
                wait.as_secs_f64(),
                log.display()
            );
            for line in log_tail(&log, 5) {
                text.push_str("\n    ");
                text.push_str(&line);
            }
            tracing::warn!(process = %name, %status, "process exited; restarting");
            events.push(text);
        }
        let due: Vec<String> = self
            .backoff
            .iter()
            .filter(|(_, b)| b.restart_at.is_some_and(|at| at <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let result = if name == NATS {
                let r = self.nats.restart();
                self.write_pid(NATS, self.nats.pid());
                if let Some(b) = self.backoff.get_mut(NATS) {
                    b.started = Instant::now();
                }
                r
            } else {
                self.start_process(&name)
            };
            let b = self.backoff.get_mut(&name).expect("due came from the map");
            match result {
                Ok(()) => {
                    b.restart_at = None;
                    events.push(format!("{name} restarted"));
                }
                Err(e) => {
                    let wait = b.exited(Instant::now());
                    events.push(format!(
                        "{name} did not start ({e:#}); trying again in {:.1} s",
                        wait.as_secs_f64()
                    ));
                }
            }
        }
        events
    }

    fn service(&mut self, name: &str) -> anyhow::Result<&mut (ServiceProcess, String, String)> {
        self.services
            .get_mut(name)
            .with_context(|| format!("no service named {name}"))
    }
}

/// Copies `log` to `<log>.1` and empties it, if it is above `max` bytes. Returns whether it did.
pub fn rotate_if_large(log: &std::path::Path, max: u64) -> std::io::Result<bool> {
    let len = match std::fs::metadata(log) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max {
        return Ok(false);
    }
    let mut old = log.as_os_str().to_owned();
    old.push(".1");
    std::fs::copy(log, &old)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(0)?;
    Ok(true)
}

/// Writes the routers' access key to `<data>/secrets/api-credentials` (directory 0700, file
/// 0600): the secret stays out of process environments and command lines.
fn write_credentials(data_dir: &Path, id: &str, secret: &str) -> anyhow::Result<PathBuf> {
    if id.is_empty()
        || secret.is_empty()
        || id.contains([':', ',', '/', '\n'])
        || secret.contains([',', '\n'])
    {
        bail!("an access key id or secret is empty or holds one of : , / or a new line");
    }
    let dir = data_dir.join("secrets");
    crate::secrets::private_dir(&dir)?;
    let path = dir.join("api-credentials");
    crate::secrets::private_file(
        &path,
        format!("# access key id:secret access key, one pair per line\n{id}:{secret}\n").as_bytes(),
    )?;
    Ok(path)
}

fn router_listens(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

type Plan = Vec<(String, String, String, Vec<(String, String)>)>;

/// The process name of instance `i` (from 0) of a service: `router`, `router-2`, ...
fn numbered(service: &str, i: usize) -> String {
    if i == 0 {
        service.to_string()
    } else {
        format!("{service}-{}", i + 1)
    }
}

/// The service a process belongs to: `storage-a` → `storage`, `router-2` → `router`.
fn service_of(process: &str) -> &str {
    process.split('-').next().unwrap_or(process)
}

fn prometheus_config(metrics_ports: &BTreeMap<String, u16>) -> String {
    let mut jobs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, port) in metrics_ports {
        jobs.entry(service_of(name))
            .or_default()
            .push(format!("\"127.0.0.1:{port}\""));
    }
    let mut out = String::from(
        "# Written by `tern up`: every Tern process of this cluster, one job per service.\nglobal:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nscrape_configs:\n",
    );
    for (job, targets) in jobs {
        out.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ));
    }
    out
}

/// (process name, service, instance id, environment) of every process to start.
fn service_plan(
    spec: &ClusterSpec,
    nats_url: &str,
    router_ports: &BTreeMap<String, u16>,
    metrics_ports: &BTreeMap<String, u16>,
    credentials: Option<&Path>,
) -> Plan {
    let metrics = |name: &str| {
        (
            "METRICS_LISTEN",
            format!("127.0.0.1:{}", metrics_ports[name]),
        )
    };
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
    let mut plan: Plan = Vec::new();
    for i in 0..spec.memds.max(1) {
        let instance = format!("memds-{}", i + 1);
        plan.push((
            numbered("memds", i),
            "memds".into(),
            instance.clone(),
            env(
                "memds",
                &[("INSTANCE", instance), metrics(&numbered("memds", i))],
            ),
        ));
    }
    for i in 0..spec.gac.max(1) {
        let instance = format!("gac-{}", i + 1);
        plan.push((
            numbered("gac", i),
            "gac".into(),
            instance.clone(),
            env(
                "gac",
                &[("INSTANCE", instance), metrics(&numbered("gac", i))],
            ),
        ));
    }
    plan.push((
        "archiver".into(),
        "archiver".into(),
        "archiver-1".into(),
        env(
            "archiver",
            &[
                ("INSTANCE", "archiver-1".into()),
                metrics("archiver"),
                (
                    "DATA_DIR",
                    spec.data_dir.join("archiver").display().to_string(),
                ),
                (
                    "LOCAL_DIR",
                    spec.data_dir.join("archive").display().to_string(),
                ),
            ],
        ),
    ));
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
                    metrics(&node.id),
                    ("ARCHIVE_GATE", "true".into()),
                ],
            ),
        ));
    }
    for (name, port) in router_ports {
        let instance = if name == "router" {
            "router-1".to_string()
        } else {
            name.clone()
        };
        plan.push((
            name.clone(),
            "router".into(),
            instance.clone(),
            env(
                "router",
                &[
                    ("INSTANCE", instance),
                    ("LISTEN", format!("127.0.0.1:{port}")),
                    metrics(name),
                    match credentials {
                        Some(path) => ("CREDENTIALS_FILE", path.display().to_string()),
                        None => ("AUTH", "off".to_string()),
                    },
                ],
            ),
        ));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_logs_are_rotated_and_appends_go_on() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        writer.write_all(&[b'x'; 2000]).unwrap();
        assert!(!rotate_if_large(&log, 4096).unwrap());
        writer.write_all(&[b'y'; 3000]).unwrap();
        assert!(rotate_if_large(&log, 4096).unwrap());
        assert_eq!(
            std::fs::metadata(dir.path().join("svc.log.1"))
                .unwrap()
                .len(),
            5000
        );
        // The writer, opened with O_APPEND, goes on at the start of the emptied file.
        writer.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "after\n");
    }

    #[test]
    fn prometheus_scrapes_every_process_under_its_service() {
        let ports: BTreeMap<String, u16> = [
            ("router", 1),
            ("router-2", 2),
            ("memds", 3),
            ("storage-a", 4),
            ("storage-b", 5),
            ("gac", 6),
            ("archiver", 7),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_string(), p))
        .collect();
        let conf = prometheus_config(&ports);
        assert!(conf.contains(
            "  - job_name: router\n    static_configs:\n      - targets: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n"
        ), "{conf}");
        assert!(conf.contains("job_name: storage\n    static_configs:\n      - targets: [\"127.0.0.1:4\", \"127.0.0.1:5\"]"));
        assert_eq!(conf.matches("job_name").count(), 5, "{conf}");
    }

    #[test]
    fn restarts_back_off_while_a_process_keeps_failing() {
        let mut b = Backoff::new();
        let t0 = b.started;
        assert_eq!(b.exited(t0), FIRST_DELAY);
        b.started = t0;
        assert_eq!(b.exited(t0), FIRST_DELAY * 2);
        assert_eq!(b.exited(t0), FIRST_DELAY * 4);
        for _ in 0..20 {
            b.exited(t0);
        }
        assert_eq!(b.exited(t0), MAX_DELAY);
        // After a stable run, the next failure restarts quickly again.
        b.started = t0;
        assert_eq!(b.exited(t0 + STABLE_AFTER), FIRST_DELAY);
    }
}
