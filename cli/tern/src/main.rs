//! `tern`: start a local cluster (`tern up`) or drive load against one (`tern bench`).

mod bench;
mod chart;
mod experiment;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tern_cluster::{Cluster, ClusterSpec};

#[derive(Parser)]
#[command(
    name = "tern",
    version,
    about = "Tern: a DynamoDB-compatible database on NATS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start nats-server and every service as its own process; Ctrl-C stops them all.
    Up {
        /// Data directory (JetStream store, storage nodes, logs); kept across restarts.
        #[arg(long, default_value = ".tern")]
        data_dir: PathBuf,
        /// Port of the DynamoDB endpoint.
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// Router cache mode: constant or classic.
        #[arg(long, default_value = "constant")]
        cache_mode: String,
        /// Router instances; each is an endpoint, on `--port` and the ports after it.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        routers: u16,
        /// MemDS instances (they share the lookups and the table DDL).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        memds: u16,
        /// GAC instances (they share the tables' admission control between them).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
        gac: u16,
        #[command(flatten)]
        key: KeyArgs,
        /// PEM certificate chain (for 127.0.0.1) the endpoint and nats-server present: HTTPS and
        /// TLS on the bus. With --tls-key and --tls-ca.
        #[arg(long, requires_all = ["tls_key", "tls_ca"])]
        tls_cert: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The CA certificate (PEM) the services check nats-server's certificate against.
        #[arg(long, requires = "tls_cert")]
        tls_ca: Option<PathBuf>,
        #[command(flatten)]
        otlp: OtlpArgs,
    },
    /// Drive PutItem and GetItem through the full stack and print throughput and latency.
    Bench(bench::Args),
    /// Experiments that show a property of the design with a chart.
    #[command(subcommand)]
    Experiment(Experiment),
    /// Make the bus keys of a deployment (compose runs it once): one nkey seed per service and
    /// storage node under <dir>/secrets/nats, and <dir>/secrets/nats-auth.conf for nats-server
    /// to include. Existing keys are kept.
    BusKeys {
        #[arg(long)]
        dir: PathBuf,
        /// Storage node ids, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "storage-a,storage-b,storage-c"
        )]
        storage_nodes: Vec<String>,
    },
}

#[derive(Subcommand)]
enum Experiment {
    /// MemDS load when every router's cache is flushed, in constant-work and classic mode: CSV
    /// and PNG.
    ConstantWork(experiment::ConstantWorkArgs),
}

/// Where every service sends its spans (OpenTelemetry's OTLP), as the `OTEL_*` variables it sets.
#[derive(clap::Args, Clone)]
pub struct OtlpArgs {
    /// OTLP endpoint every service exports its spans to, e.g. http://127.0.0.1:4318 (Jaeger's
    /// OTLP/HTTP port); none: spans are not exported, and cost next to nothing.
    #[arg(long)]
    pub otlp: Option<String>,
    /// OTLP transport: http/protobuf or grpc (then the endpoint is e.g. http://127.0.0.1:4317).
    #[arg(long, default_value = "http/protobuf", value_parser = ["http/protobuf", "grpc"], requires = "otlp")]
    pub otlp_protocol: String,
    /// Share of client requests traced (0 to 1). Under load, 0.01 keeps the cost small.
    #[arg(long, default_value_t = 1.0, requires = "otlp")]
    pub trace_ratio: f64,
}

impl OtlpArgs {
    /// The environment that makes the services export as asked.
    fn env(&self) -> anyhow::Result<Vec<(String, String)>> {
        let Some(url) = &self.otlp else {
            return Ok(Vec::new());
        };
        if !(0.0..=1.0).contains(&self.trace_ratio) {
            anyhow::bail!("--trace-ratio must be between 0 and 1");
        }
        Ok(vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), url.clone()),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL".into(),
                self.otlp_protocol.clone(),
            ),
            (
                "OTEL_TRACES_SAMPLER".into(),
                "parentbased_traceidratio".into(),
            ),
            (
                "OTEL_TRACES_SAMPLER_ARG".into(),
                self.trace_ratio.to_string(),
            ),
        ])
    }
}

/// The access key requests are signed with: `tern up` requires it, `tern bench` signs with it.
#[derive(clap::Args, Clone)]
pub struct KeyArgs {
    /// Access key id requests are signed with (SigV4).
    #[arg(long, default_value = tern_cluster::DEV_ACCESS_KEY_ID, env = "TERN_ACCESS_KEY_ID")]
    pub access_key_id: String,
    /// Its secret access key. Prefer the environment variable to the flag: a command line is
    /// visible to every user of the machine.
    #[arg(long, default_value = tern_cluster::DEV_SECRET_ACCESS_KEY, env = "TERN_SECRET_ACCESS_KEY", hide_env_values = true, hide_default_value = true)]
    pub secret_access_key: String,
    /// No signatures at all (`tern up`: none checked; `tern bench`: none sent): for local
    /// benchmarks only.
    #[arg(long)]
    pub no_auth: bool,
}

impl KeyArgs {
    /// (key id, secret), or `None` with `--no-auth`.
    pub fn credentials(&self) -> Option<(String, String)> {
        (!self.no_auth).then(|| (self.access_key_id.clone(), self.secret_access_key.clone()))
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _telemetry = tern_telemetry::init("tern");
    let result = match cli.command {
        Command::Up {
            data_dir,
            port,
            cache_mode,
            routers,
            memds,
            gac,
            key,
            tls_cert,
            tls_key,
            tls_ca,
            otlp,
        } => {
            let credentials = key.credentials();
            let tls = match (tls_cert, tls_key, tls_ca) {
                (Some(cert_file), Some(key_file), Some(ca_file)) => Some(tern_cluster::TlsFiles {
                    cert_file,
                    key_file,
                    ca_file,
                }),
                _ => None,
            };
            async {
                let mut spec = ClusterSpec::new(&data_dir, bin_dir()?);
                spec.env.extend(otlp.env()?);
                spec.tls = tls;
                spec.api_credentials = credentials;
                spec.router_port = Some(port);
                spec.routers = routers.into();
                spec.memds = memds.into();
                spec.gac = gac.into();
                spec.env.push(("TERN_ROUTER_CACHE_MODE".into(), cache_mode));
                up(spec, otlp).await
            }
            .await
        }
        Command::Bench(args) => bench::run(args).await,
        Command::Experiment(Experiment::ConstantWork(args)) => {
            experiment::constant_work(args).await
        }
        Command::BusKeys { dir, storage_nodes } => bus_keys(&dir, &storage_nodes),
    };
    tern_telemetry::exit_code(result)
}

fn bus_keys(dir: &std::path::Path, storage_nodes: &[String]) -> anyhow::Result<()> {
    let auth = tern_cluster::bus_auth::BusAuth::generate(dir, storage_nodes)?;
    let conf = dir.join("secrets").join("nats-auth.conf");
    auth.write_config(&conf)?;
    println!(
        "bus keys in {}, nats-server configuration in {}",
        dir.join("secrets").join("nats").display(),
        conf.display()
    );
    Ok(())
}

/// Directory of the service binaries: the one holding this executable.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the tern executable")?;
    Ok(exe
        .parent()
        .context("executable has no directory")?
        .to_path_buf())
}

/// Starts Prometheus (Debian's `prometheus` package, or the binary `TERN_PROMETHEUS` names)
/// scraping every process of `cluster`, when it is installed; it stops with `tern up`. Its
/// configuration and data live in `<data-dir>/prometheus`.
async fn start_prometheus(
    cluster: &Cluster,
    data_dir: &std::path::Path,
) -> anyhow::Result<Option<(tokio::process::Child, String)>> {
    use anyhow::Context as _;
    let binary = match std::env::var_os("TERN_PROMETHEUS") {
        Some(b) => PathBuf::from(b),
        None => match std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("prometheus"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.is_file())
        {
            Some(b) => b,
            None => return Ok(None),
        },
    };
    let dir = data_dir.join("prometheus");
    std::fs::create_dir_all(dir.join("data")).context("create the prometheus directory")?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, cluster.prometheus_config()).context("write prometheus.yml")?;
    let port = match std::net::TcpListener::bind("127.0.0.1:9090") {
        Ok(_) => 9090,
        Err(_) => tern_cluster::free_ports(1)?[0],
    };
    let log = std::fs::File::create(data_dir.join("logs").join("prometheus.log"))?;
    let child = tokio::process::Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    Ok(Some((child, format!("http://127.0.0.1:{port}"))))
}

async fn up(spec: ClusterSpec, otlp: OtlpArgs) -> anyhow::Result<()> {
    let data_dir = spec.data_dir.clone();
    let credentials = spec.api_credentials.clone();
    println!("starting tern in {} ...", data_dir.display());
    let mut cluster = Cluster::start(spec).await?;
    println!("nats: {}", cluster.nats_url());
    if let Some(url) = &otlp.otlp {
        println!(
            "traces: OTLP ({}) to {url}, {}% of requests",
            otlp.otlp_protocol,
            otlp.trace_ratio * 100.0
        );
    }
    println!("logs: {}", data_dir.join("logs").display());
    for (name, url) in cluster.metrics_endpoints() {
        println!("{name} metrics: {url}");
    }
    let _prometheus = match start_prometheus(&cluster, &data_dir).await {
        Ok(Some((child, url))) => {
            println!("prometheus: {url}");
            Some(child)
        }
        Ok(None) => None,
        Err(e) => {
            println!("prometheus: not started: {e:#}");
            None
        }
    };
    println!("pids: {}", data_dir.join("run").display());
    for (name, url) in cluster.endpoints().into_iter().skip(1) {
        println!("{name} endpoint: {url}");
    }
    println!("endpoint: {}", cluster.endpoint());
    match &credentials {
        None => println!(
            "auth: OFF (--no-auth): requests are not authenticated; for local benchmarks only"
        ),
        Some((id, secret)) if id == tern_cluster::DEV_ACCESS_KEY_ID && secret == tern_cluster::DEV_SECRET_ACCESS_KEY => println!(
            "auth: SigV4, development key: AWS_ACCESS_KEY_ID={id} AWS_SECRET_ACCESS_KEY={secret} (choose your own with --access-key-id and TERN_SECRET_ACCESS_KEY)"
        ),
        Some((id, _)) => println!(
            "auth: SigV4, access key id {id} (its secret is in {})",
            data_dir.join("secrets").join("api-credentials").display()
        ),
    }
    // Every process is watched: one that exits is reported and restarted, with backoff.
    let shutdown = tern_telemetry::shutdown_signal();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                for event in cluster.supervise() {
                    println!("{event}");
                }
            }
        }
    }
    println!("stopping ...");
    cluster.stop().await;
    println!("stopped");
    Ok(())
}
