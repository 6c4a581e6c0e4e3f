//! A load generator speaking DynamoDB's JSON protocol over plain HTTP/1.1 keep-alive connections.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tern_cluster::{Cluster, ClusterSpec};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Endpoint of a running cluster; without it a fresh local cluster is started.
    #[arg(long)]
    endpoint: Option<String>,
    /// Concurrent requests (each its own connection).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Size of the item payload attribute in bytes.
    #[arg(long, default_value_t = 100)]
    item_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Phases to run, in order: load (every key written once, with BatchWriteItem: a table of
    /// `--keys` items for the get phases), put, get, get-consistent, pages (Query and Scan page cost at the
    /// start and at the end of a table of `--page-items` items), curve (latency against offered
    /// load for PutItem and GetItem, charted), scrub (how long a scrub round of `--scrub-mb` of
    /// items takes; a fresh local cluster only), idle (CPU of every process with `--idle-tables`
    /// tables and no requests; a fresh local cluster only).
    #[arg(long, value_delimiter = ',', default_value = "put,get,get-consistent")]
    ops: Vec<String>,
    /// Items loaded for the `pages` phase (a fifth under one partition key, for Query).
    #[arg(long, default_value_t = 1_000_000)]
    page_items: u64,
    /// Items per page in the `pages` phase.
    #[arg(long, default_value_t = 1000)]
    page_limit: u64,
    /// Tables the `idle` phase creates before it measures what the idle cluster costs.
    #[arg(long, default_value_t = 200)]
    idle_tables: u64,
    /// Seconds the `idle` phase measures CPU over.
    #[arg(long, default_value_t = 30.0)]
    idle_seconds: f64,
    /// Megabytes of items the `scrub` phase loads before it times scrub rounds.
    #[arg(long, default_value_t = 1024)]
    scrub_mb: u64,
    /// Bytes of each item's payload in the `scrub` phase (random, so nothing compresses).
    #[arg(long, default_value_t = 4000)]
    scrub_item_size: usize,
    #[command(flatten)]
    key: crate::KeyArgs,
    /// No bus authentication or permissions (only with a fresh local cluster), for comparison.
    #[arg(long)]
    open_bus: bool,
    /// Storage nodes sync each write on its own (only with a fresh local cluster).
    #[arg(long)]
    no_group_commit: bool,
    /// No archiver and no archive gate (only with a fresh local cluster), for comparison.
    #[arg(long)]
    no_archive: bool,
    /// Seconds of each offered rate in the `curve` phase.
    #[arg(long, default_value_t = 5.0)]
    step_seconds: f64,
    /// Offered rates of the `curve` phase, as fractions of the throughput the closed-loop phase
    /// measured just before.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.1,0.25,0.4,0.55,0.7,0.8,0.9,1.0,1.1"
    )]
    curve_steps: Vec<f64>,
    /// Where the `curve` phase writes its chart (PNG) and its figures (the same name, .csv).
    #[arg(long, default_value = "latency-under-load.png")]
    chart: std::path::PathBuf,
}

/// A pooled HTTP client and the key it signs with (`None`: unsigned).
#[derive(Clone)]
pub(crate) struct HttpClient {
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    key: Option<std::sync::Arc<(String, String)>>,
}

impl HttpClient {
    /// Keeps up to `connections` idle connections per endpoint.
    pub(crate) fn new(connections: usize, key: Option<(String, String)>) -> Self {
        Self {
            http: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(connections)
                .build_http(),
            key: key.map(std::sync::Arc::new),
        }
    }
}

/// The body of `GET url` (plain HTTP).
pub(crate) async fn get_text(url: &str) -> anyhow::Result<String> {
    let http: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = http.get(url.parse()?).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (endpoint, mut cluster, _dir) = match &args.endpoint {
        Some(e) => (e.clone(), None, None),
        None => {
            let dir = tempfile::tempdir().context("create a data dir")?;
            let mut spec = ClusterSpec::new(dir.path(), crate::bin_dir()?);
            spec.bus_auth = !args.open_bus;
            spec.api_credentials = args.key.credentials();
            let flag = |on: bool| if on { "false" } else { "true" }.to_string();
            spec.env.push((
                "TERN_STORAGE_GROUP_COMMIT".into(),
                flag(args.no_group_commit),
            ));
            spec.env
                .push(("TERN_ARCHIVER_ENABLED".into(), flag(args.no_archive)));
            spec.env
                .push(("TERN_STORAGE_ARCHIVE_GATE".into(), flag(args.no_archive)));
            if args.ops.iter().any(|o| o == "scrub") {
                // Rounds one after another, so the one after the load is soon.
                spec.env
                    .push(("TERN_ARCHIVER_SCRUB_INTERVAL_MS".into(), "1000".into()));
            }
            // The bench measures the data path at saturation on a new on-demand table, which
            // DynamoDB (and Tern) would hold to 4,000 write and 12,000 read units at first:
            // its starting peak is raised, admission itself stays on.
            // Routers take the same start until they hear GAC's heartbeat (a router that hears
            // it late otherwise throttles the first half second's writes at 4,000 units).
            for (kind, units) in [("READ", "3000000"), ("WRITE", "1000000")] {
                for service in ["GAC", "ROUTER"] {
                    spec.env.push((
                        format!("TERN_{service}_ON_DEMAND_INITIAL_{kind}_UNITS"),
                        units.into(),
                    ));
                }
            }
            let cluster = Cluster::start(spec).await?;
            (cluster.endpoint(), Some(cluster), Some(dir))
        }
    };
    let client = HttpClient::new(args.concurrency, args.key.credentials());
    let table = format!("bench-{}", std::process::id());
    create_table(&client, &endpoint, &table).await?;
    println!(
        "endpoint {endpoint}, {} connections, {}-byte items, {} keys, group commit {}",
        args.concurrency,
        args.item_size,
        args.keys,
        if args.no_group_commit { "off" } else { "on" },
    );
    for op in &args.ops {
        if op == "pages" {
            pages(&client, &endpoint, &args, cluster.as_ref()).await?;
            continue;
        }
        if op == "curve" {
            curve(&client, &endpoint, &table, &args).await?;
            continue;
        }
        if op == "load" {
            let payload = "x".repeat(args.item_size);
            let started = Instant::now();
            batch_load(
                &client,
                &endpoint,
                &table,
                args.keys,
                args.concurrency,
                move |i| json!({"pk": {"S": format!("key-{i}")}, "data": {"S": payload}}),
            )
            .await?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{:>15}: {} items of {} bytes written in {secs:.1} s ({:.0} items/s, BatchWriteItem)",
                "load",
                args.keys,
                args.item_size,
                args.keys as f64 / secs
            );
            // The next phase measures the table, not the archiver shipping this load's log.
            if let Some(base) = cluster
                .as_ref()
                .filter(|_| !args.no_archive)
                .and_then(|c| c.metrics_base("archiver"))
            {
                let waited = Instant::now();
                let left = archive_caught_up(&base, args.keys, Duration::from_secs(600)).await;
                println!(
                    "{:>15}: {left:.0} entries left to archive after {:.1} s",
                    "archive",
                    waited.elapsed().as_secs_f64()
                );
            }
            continue;
        }
        if op == "idle" {
            idle(&client, &endpoint, &args, cluster.as_mut()).await?;
            continue;
        }
        if op == "scrub" {
            scrub(&client, &endpoint, &args, cluster.as_ref()).await?;
            continue;
        }
        let archiver = cluster
            .as_ref()
            .filter(|_| !args.no_archive)
            .and_then(|c| c.metrics_base("archiver"));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(ArchiveSeen::default()));
        let sampler = archiver.map(|base| tokio::spawn(sample_archive(base, seen.clone())));
        let mut pids = cluster.as_mut().map(process_ids).unwrap_or_default();
        pids.push(("the bench's load".into(), std::process::id()));
        let before: Vec<Option<f64>> = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
        let messages = cluster.as_mut().and_then(bus_messages);
        let started = Instant::now();
        let (report, rate) = phase(&client, &endpoint, &table, op, &args).await?;
        let ops = rate * started.elapsed().as_secs_f64();
        println!("{report}");
        if let (Some(a), Some(b)) = (messages, cluster.as_mut().and_then(bus_messages)) {
            if ops > 0.0 {
                println!(
                    "  bus messages per {op}: {:.2} into nats-server",
                    (b - a) / ops
                );
            }
        }
        if ops > 0.0 {
            let (total, parts) = cpu_spent(&pids, &before, 1e6 / ops);
            println!(
                "  CPU per {op}: {total:.0} µs in all: {}",
                parts
                    .iter()
                    .map(|(us, n)| format!("{n} {us:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(s) = sampler {
            s.abort();
            let seen = seen.lock().map(|s| *s).unwrap_or_default();
            println!(
                "  archive during {op}: lag max {:.0} ms, backlog max {:.0} entries, {:.0} segments uploaded",
                seen.lag_ms, seen.backlog, seen.segments
            );
        }
    }
    Ok(())
}

/// Loads `page_items` items, then pages through a Query of one partition key and a Scan of the
/// whole table, timing every page: the first and the last tenth of the pages should cost the same
/// (reads are range scans from the page's start key, not skips from the table's start).
async fn pages(
    client: &HttpClient,
    endpoint: &str,
    args: &Args,
    cluster: Option<&Cluster>,
) -> anyhow::Result<()> {
    let table = format!("bench-pages-{}", std::process::id());
    let body = json!({
        "TableName": table,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}],
        "BillingMode": "PAY_PER_REQUEST",
    });
    let (status, resp) = call(client, endpoint, "CreateTable", body.to_string()).await?;
    if status != 200 {
        bail!("CreateTable failed: {}", String::from_utf8_lossy(&resp));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = args.page_items;
    let payload = "x".repeat(args.item_size);
    let started = Instant::now();
    batch_load(client, endpoint, &table, n, args.concurrency, move |i| {
        let pk = if i % 5 == 0 {
            "q".to_string()
        } else {
            format!("p{i}")
        };
        json!({"pk": {"S": pk}, "sk": {"N": i.to_string()}, "data": {"S": payload}})
    })
    .await?;
    let load = started.elapsed().as_secs_f64();
    println!(
        "{:>15}: {n} items loaded in {load:.1} s ({:.0} items/s)",
        "pages",
        n as f64 / load
    );
    let rss = |label: &str| {
        if let Some(c) = cluster {
            let nodes: Vec<String> = c
                .storage_metrics()
                .into_iter()
                .map(|(node, _)| node)
                .collect();
            let mut parts = Vec::new();
            for node in nodes {
                if let Ok(Some(b)) = c.rss_of(&node) {
                    parts.push(format!("{node} {} MB", b / (1024 * 1024)));
                }
            }
            println!(
                "{:>15}: resident memory {label}: {}",
                "pages",
                parts.join(", ")
            );
        }
    };
    rss("after loading");
    for (what, query) in [("query", true), ("scan", false)] {
        let mut times = Vec::new();
        let mut start: Option<serde_json::Value> = None;
        let mut items = 0u64;
        loop {
            // Strongly consistent (from the leaders): an eventually consistent page may come
            // from a replica that has not applied the load's last writes yet, and the count of
            // items read would then fall short of the load (seen: a Scan of 2,990 of 3,000).
            let mut body = if query {
                json!({"TableName": table, "KeyConditionExpression": "pk = :q",
                       "ExpressionAttributeValues": {":q": {"S": "q"}}, "Limit": args.page_limit,
                       "ConsistentRead": true})
            } else {
                json!({"TableName": table, "Limit": args.page_limit, "ConsistentRead": true})
            };
            if let Some(k) = start.take() {
                body["ExclusiveStartKey"] = k;
            }
            let t0 = Instant::now();
            let (status, resp) = call(
                client,
                endpoint,
                if query { "Query" } else { "Scan" },
                body.to_string(),
            )
            .await?;
            times.push(t0.elapsed());
            if status != 200 {
                bail!("{what} page failed: {}", String::from_utf8_lossy(&resp));
            }
            let v: serde_json::Value = serde_json::from_slice(&resp)?;
            items += v["Count"].as_u64().unwrap_or(0);
            match v.get("LastEvaluatedKey") {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        let tenth = (times.len() / 10).max(1);
        let p50 = |t: &[Duration]| {
            let mut t = t.to_vec();
            t.sort();
            t[t.len() / 2].as_secs_f64() * 1000.0
        };
        println!(
            "{what:>15}: {items} items in {} pages of {}: p50 per page {:.2} ms in the first tenth, {:.2} ms in the last tenth, {:.2} ms overall",
            times.len(),
            args.page_limit,
            p50(&times[..tenth]),
            p50(&times[times.len() - tenth..]),
            p50(&times)
        );
    }
    rss("after paging");
    Ok(())
}

/// Writes items `0..n` (each made by `item`) with BatchWriteItem from `concurrency` tasks, 25 to
/// a request, sending unprocessed items again until none is left.
async fn batch_load(
    client: &HttpClient,
    endpoint: &str,
    table: &str,
    n: u64,
    concurrency: usize,
    item: impl Fn(u64) -> serde_json::Value + Clone + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, endpoint, table, next, item) = (
            client.clone(),
            endpoint.to_string(),
            table.to_string(),
            next.clone(),
            item.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(25, Ordering::Relaxed);
                if from >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let mut writes: Vec<serde_json::Value> = (from..(from + 25).min(n))
                    .map(|i| json!({"PutRequest": {"Item": item(i)}}))
                    .collect();
                while !writes.is_empty() {
                    let body = json!({"RequestItems": {&table: writes}}).to_string();
                    let (status, resp) = call(&client, &endpoint, "BatchWriteItem", body).await?;
                    if status != 200 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&resp)?;
                    writes = v["UnprocessedItems"][&table]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// CPU seconds a process has used (user and system), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first, utime the 12th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux whatever the kernel's own tick rate.
    Some(ticks / 100.0)
}

/// Every process of the cluster (services and nats-server), by name.
fn process_ids(cluster: &mut Cluster) -> Vec<(String, u32)> {
    let mut pids: Vec<(String, u32)> = Vec::new();
    for name in cluster.service_names() {
        if let Ok(Some(pid)) = cluster.pid(&name) {
            pids.push((name, pid));
        }
    }
    if let Some(pid) = cluster.nats_pid() {
        pids.push(("nats-server".into(), pid));
    }
    pids
}

/// CPU time (user and system) each process spent since `before` (readings of [`cpu_seconds`]),
/// times `factor`, largest first, and their sum: `factor` turns seconds into microseconds per
/// request or into a share of one core.
fn cpu_spent(
    pids: &[(String, u32)],
    before: &[Option<f64>],
    factor: f64,
) -> (f64, Vec<(f64, String)>) {
    let mut total = 0.0;
    let mut parts = Vec::new();
    for ((name, pid), b) in pids.iter().zip(before) {
        if let (Some(b), Some(a)) = (b, cpu_seconds(*pid)) {
            let v = (a - b) * factor;
            total += v;
            parts.push((v, name.clone()));
        }
    }
    parts.sort_by(|a, b| b.0.total_cmp(&a.0));
    (total, parts)
}

/// Creates `idle_tables` tables, lets the cluster settle, then measures every process's CPU over
/// `idle_seconds` with no request sent: what tables cost while nobody uses them (ticks,
/// heartbeats, archiving polls, metadata refreshes).
async fn idle(
    client: &HttpClient,
    endpoint: &str,
    args: &Args,
    cluster: Option<&mut Cluster>,
) -> anyhow::Result<()> {
    let Some(cluster) = cluster else {
        bail!("the idle phase needs a fresh local cluster");
    };
    let started = Instant::now();
    for i in 0..args.idle_tables {
        create_table(client, endpoint, &format!("idle-{i:04}")).await?;
    }
    println!(
        "{:>15}: {} tables created and ACTIVE in {:.1} s; settling 10 s",
        "idle",
        args.idle_tables,
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pids = process_ids(cluster);
    let before: Vec<Option<f64>> = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let messages = bus_messages(cluster);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.idle_seconds)).await;
    let secs = t0.elapsed().as_secs_f64();
    let (total, parts) = cpu_spent(&pids, &before, 100.0 / secs);
    println!(
        "{:>15}: {} idle tables (and the bench's own): {total:.1}% of one core in all over {secs:.0} s: {}",
        "idle",
        args.idle_tables,
        parts
            .iter()
            .map(|(s, n)| format!("{n} {s:.1}%"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let (Some(a), Some(b)) = (messages, bus_messages(cluster)) {
        println!(
            "{:>15}: {:.0} bus messages a second into nats-server",
            "idle",
            (b - a) / secs
        );
    }
    Ok(())
}

/// Messages nats-server has received so far (`/varz` `in_msgs`), if its monitoring answers.
fn bus_messages(cluster: &mut Cluster) -> Option<f64> {
    let varz = cluster.nats().monitor_get("/varz").ok()?;
    serde_json::from_str::<serde_json::Value>(&varz).ok()?["in_msgs"].as_f64()
}

/// Samples of a metric family in Prometheus text: (labels, value).
fn metric_samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series[name.len()..].to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Loads `scrub_mb` of random items into a new table, then waits for every partition's second
/// scrub round after the load (the first may have started before it ended) and prints how long
/// it took and what it covered: marker, every replica's checksum on its snapshot, the reference's.
async fn scrub(
    client: &HttpClient,
    endpoint: &str,
    args: &Args,
    cluster: Option<&Cluster>,
) -> anyhow::Result<()> {
    let Some(base) = cluster
        .filter(|_| !args.no_archive)
        .and_then(|c| c.metrics_base("archiver"))
    else {
        bail!("the scrub phase needs a fresh local cluster with its archiver");
    };
    let table = format!("bench-scrub-{}", std::process::id());
    let body = json!({
        "TableName": table,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    });
    let (status, resp) = call(client, endpoint, "CreateTable", body.to_string()).await?;
    if status != 200 {
        bail!("CreateTable failed: {}", String::from_utf8_lossy(&resp));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let size = args.scrub_item_size.max(1);
    let n = (args.scrub_mb * 1024 * 1024).div_ceil(size as u64);
    let started = Instant::now();
    batch_load(client, endpoint, &table, n, args.concurrency, move |i| {
        use rand::Rng as _;
        let payload: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(size)
            .map(char::from)
            .collect();
        json!({"pk": {"S": format!("s{i:010}")}, "data": {"S": payload}})
    })
    .await?;
    let load = started.elapsed().as_secs_f64();
    println!(
        "{:>15}: {n} items of {size} bytes ({} MB) loaded in {load:.1} s ({:.1} MB/s)",
        "scrub",
        args.scrub_mb,
        args.scrub_mb as f64 / load
    );
    let label = format!("table=\"{table}\"");
    let of_table = |text: &str, name: &str| -> Vec<(String, f64)> {
        metric_samples(text, name)
            .into_iter()
            .filter(|(l, _)| l.contains(&label))
            .collect()
    };
    let first = get_text(&format!("{base}/metrics")).await?;
    let before = of_table(&first, "tern_archiver_scrub_index");
    let mut rounds: std::collections::HashMap<String, (f64, u32)> =
        before.iter().map(|(l, v)| (l.clone(), (*v, 0))).collect();
    let deadline = Instant::now() + Duration::from_secs(1800);
    let text = loop {
        let text = get_text(&format!("{base}/metrics")).await?;
        for (l, v) in of_table(&text, "tern_archiver_scrub_index") {
            let e = rounds.entry(l).or_insert((v, 0));
            if v != e.0 {
                *e = (v, e.1 + 1);
            }
        }
        if !rounds.is_empty() && rounds.values().all(|(_, r)| *r >= 2) {
            break text;
        }
        if Instant::now() > deadline {
            bail!("no second scrub round of every partition within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ms = of_table(&text, "tern_archiver_scrub_last_milliseconds");
    let bytes = of_table(&text, "tern_archiver_scrub_last_bytes");
    let replicas = of_table(&text, "tern_archiver_scrub_replicas_milliseconds");
    let mut total_bytes = 0.0;
    let mut longest: f64 = 0.0;
    for (l, t) in &ms {
        let of = |v: &[(String, f64)]| v.iter().find(|(vl, _)| vl == l).map_or(0.0, |(_, v)| *v);
        let (b, r) = (of(&bytes), of(&replicas));
        total_bytes += b;
        longest = longest.max(*t);
        println!(
            "{:>15}: partition {l}: {:.0} MB of items; round {:.2} s, the three replicas' checksums in {:.2} s ({:.0} MB/s each); the rest waits for the reference's segment to be sealed",
            "scrub",
            b / 1e6,
            t / 1000.0,
            r / 1000.0,
            b / 1e6 / (r / 1000.0).max(1e-3)
        );
    }
    let results = metric_samples(&text, "tern_archiver_scrubs_total");
    println!(
        "{:>15}: {:.0} MB over {} partitions (scrubbed side by side) in {:.2} s; rounds by result: {}",
        "scrub",
        total_bytes / 1e6,
        ms.len(),
        longest / 1000.0,
        results
            .iter()
            .map(|(l, v)| format!("{l} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// What a failed request was, for the phase's summary: DynamoDB's error type with the HTTP status,
/// or the transport's error.
fn error_kind(answer: &anyhow::Result<(u16, Bytes)>) -> String {
    match answer {
        Ok((status, body)) => {
            let kind = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("__type")?.as_str().map(str::to_string))
                .map(|t| t.rsplit('#').next().unwrap_or_default().to_string())
                .unwrap_or_else(|| "no error type".to_string());
            format!("{kind} ({status})")
        }
        Err(e) => {
            let mut e = e.to_string();
            e.truncate(80);
            format!("transport: {e}")
        }
    }
}

pub(crate) async fn call(
    client: &HttpClient,
    endpoint: &str,
    op: &str,
    body: String,
) -> anyhow::Result<(u16, Bytes)> {
    let target = format!("DynamoDB_20120810.{op}");
    let mut req = hyper::Request::post(endpoint)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", &target);
    if let Some(key) = &client.key {
        let uri: hyper::Uri = endpoint.parse()?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let signed = tern_cluster::sigv4::sign_headers(
            "POST",
            endpoint,
            &[
                ("host", host.as_str()),
                ("content-type", "application/x-amz-json-1.0"),
                ("x-amz-target", target.as_str()),
            ],
            body.as_bytes(),
            (key.0.as_str(), key.1.as_str()),
            "us-east-1",
            std::time::SystemTime::now(),
        )?;
        for (k, v) in signed {
            req = req.header(k, v);
        }
    }
    let req = req.body(Full::new(Bytes::from(body)))?;
    let resp = client.http.request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

pub(crate) async fn create_table(
    client: &HttpClient,
    endpoint: &str,
    table: &str,
) -> anyhow::Result<()> {
    let body = json!({
        "TableName": table,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    });
    let (status, body) = call(client, endpoint, "CreateTable", body.to_string()).await?;
    if status != 200 {
        bail!("CreateTable failed: {}", String::from_utf8_lossy(&body));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let (_, body) = call(
            client,
            endpoint,
            "DescribeTable",
            json!({"TableName": table}).to_string(),
        )
        .await?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        if v["Table"]["TableStatus"] == "ACTIVE" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("table {table} did not become ACTIVE")
}

fn request_body(op: &str, table: &str, key: u64, payload: &str) -> (&'static str, String) {
    let pk = format!("key-{key}");
    match op {
        "put" => (
            "PutItem",
            json!({"TableName": table, "Item": {"pk": {"S": pk}, "data": {"S": payload}}}).to_string(),
        ),
        _ => (
            "GetItem",
            json!({"TableName": table, "Key": {"pk": {"S": pk}}, "ConsistentRead": op == "get-consistent"})
                .to_string(),
        ),
    }
}

/// One closed-loop phase: its report line and its throughput (operations a second).
async fn phase(
    client: &HttpClient,
    endpoint: &str,
    table: &str,
    op: &str,
    args: &Args,
) -> anyhow::Result<(String, f64)> {
    if !matches!(op, "put" | "get" | "get-consistent") {
        bail!("unknown phase {op}: use put, get or get-consistent");
    }
    let payload: String = "x".repeat(args.item_size);
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let next_key = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..args.concurrency {
        let (client, endpoint, table, payload) = (
            client.clone(),
            endpoint.to_string(),
            table.to_string(),
            payload.clone(),
        );
        let (op, keys, next_key, errors) =
            (op.to_string(), args.keys, next_key.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            while Instant::now() < deadline {
                let key = next_key.fetch_add(1, Ordering::Relaxed) % keys;
                let (target, body) = request_body(&op, &table, key, &payload);
                let t0 = Instant::now();
                match call(&client, &endpoint, target, body).await {
                    Ok((200, _)) => hist.saturating_record(t0.elapsed().as_micros() as u64),
                    answer => {
                        *errors
                            .lock()
                            .expect("errors")
                            .entry(error_kind(&answer))
                            .or_insert(0) += 1;
                    }
                }
            }
            hist
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        total.add(t.await?)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = total.len() as f64 / secs;
    let errors = errors.lock().expect("errors");
    let mut line = format!(
        "{op:>15}: {:>8.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} ok, {} errors, {:.1} s)",
        rate,
        total.value_at_quantile(0.50) as f64 / 1000.0,
        total.value_at_quantile(0.99) as f64 / 1000.0,
        total.max() as f64 / 1000.0,
        total.len(),
        errors.values().sum::<u64>(),
        secs
    );
    if !errors.is_empty() {
        let kinds: Vec<String> = errors.iter().map(|(k, n)| format!("{n} {k}")).collect();
        line.push_str(&format!("\n{:>15}  errors: {}", "", kinds.join(", ")));
    }
    Ok((line, rate))
}

/// One offered rate of the `curve` phase.
#[derive(Debug, Clone)]
struct Step {
    offered: f64,
    achieved: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Requests answered with an error, or not sent because too many were in flight.
    failed: u64,
}

/// Requests of one `curve` step in flight at most; beyond, a request is not sent and counts as
/// failed (the service is past saturation).
const CURVE_IN_FLIGHT: usize = 512;

/// Latency against offered load: for PutItem and GetItem, a closed-loop phase finds the
/// throughput, then open-loop steps offer fractions of it (`--curve-steps`), each request sent at
/// its scheduled time whatever the answers' speed, and its latency counted from that time (so a
/// sender held up by a slow service does not hide the wait). Prints a table, writes the figures
/// (CSV) and the chart (PNG).
async fn curve(
    client: &HttpClient,
    endpoint: &str,
    table: &str,
    args: &Args,
) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for op in ["put", "get"] {
        let (line, saturation) = phase(client, endpoint, table, op, args).await?;
        println!("{line}");
        let mut steps = Vec::new();
        for fraction in &args.curve_steps {
            let rate = (saturation * fraction).max(1.0);
            let step = open_loop_step(client, endpoint, table, op, rate, args).await?;
            println!(
                "{:>15}: offered {:>8.0}/s  achieved {:>8.0}/s  p50 {:>8.2} ms  p99 {:>8.2} ms  failed {}",
                format!("{op} {:.0}%", fraction * 100.0),
                step.offered,
                step.achieved,
                step.p50_ms,
                step.p99_ms,
                step.failed
            );
            steps.push(step);
        }
        results.push((op, saturation, steps));
    }
    let mut csv = String::from("operation,offered_per_s,achieved_per_s,p50_ms,p99_ms,failed\n");
    for (op, _, steps) in &results {
        for s in steps {
            csv.push_str(&format!(
                "{op},{:.0},{:.0},{:.3},{:.3},{}\n",
                s.offered, s.achieved, s.p50_ms, s.p99_ms, s.failed
            ));
        }
    }
    let csv_path = args.chart.with_extension("csv");
    std::fs::write(&csv_path, csv).with_context(|| format!("write {}", csv_path.display()))?;
    let panels: Vec<crate::chart::Panel> = results
        .iter()
        .map(|(op, saturation, steps)| {
            let name = if *op == "put" { "PutItem" } else { "GetItem" };
            let line = |f: fn(&Step) -> f64| steps.iter().map(|s| (s.offered, f(s))).collect();
            crate::chart::Panel {
                title: format!(
                    "{name}: latency against offered load (closed-loop throughput {saturation:.0}/s)"
                ),
                y_label: "latency, ms (log scale)".into(),
                series: vec![
                    crate::chart::Series {
                        label: "p50".into(),
                        points: line(|s| s.p50_ms),
                        color: plotters::style::RGBColor(31, 119, 180),
                    },
                    crate::chart::Series {
                        label: "p99".into(),
                        points: line(|s| s.p99_ms),
                        color: plotters::style::RGBColor(214, 39, 40),
                    },
                ],
                marker: Some((*saturation, "closed-loop throughput".into())),
                log_y: true,
            }
        })
        .collect();
    crate::chart::draw(
        &args.chart,
        &format!(
            "Latency under load: {}-byte items, 3 replicas, fsync on 2 of 3 before the answer",
            args.item_size
        ),
        "offered load, requests/s",
        &panels,
    )?;
    println!(
        "{:>15}: wrote {} and {}",
        "curve",
        args.chart.display(),
        csv_path.display()
    );
    Ok(())
}

async fn open_loop_step(
    client: &HttpClient,
    endpoint: &str,
    table: &str,
    op: &str,
    rate: f64,
    args: &Args,
) -> anyhow::Result<Step> {
    let payload: String = "x".repeat(args.item_size);
    let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let failed = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(CURVE_IN_FLIGHT));
    let total = (rate * args.step_seconds).max(1.0) as u64;
    let started = Instant::now();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (target, body) = request_body(op, table, i % args.keys, &payload);
        let (client, endpoint, hist, failed) = (
            client.clone(),
            endpoint.to_string(),
            hist.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            match call(&client, &endpoint, target, body).await {
                Ok((200, _)) => {
                    let waited = due.elapsed().as_micros() as u64;
                    hist.lock().expect("histogram").saturating_record(waited);
                }
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
    let _all = in_flight.acquire_many(CURVE_IN_FLIGHT as u32).await?;
    let secs = started.elapsed().as_secs_f64();
    let hist = hist.lock().expect("histogram");
    Ok(Step {
        offered: rate,
        achieved: hist.len() as f64 / secs,
        p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        failed: failed.load(Ordering::Relaxed),
    })
}

/// Waits until the archiver has shipped the load's `entries` writes (archived log positions summed
/// over partitions reach them, and no committed entry waits) or `limit` passed; returns the
/// entries still to archive.
async fn archive_caught_up(base: &str, entries: u64, limit: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let (archived, backlog) = match get_text(&format!("{base}/metrics")).await {
            Ok(text) => {
                let sum = |name| {
                    metric_samples(&text, name)
                        .iter()
                        .map(|(_, v)| v)
                        .sum::<f64>()
                };
                (
                    sum("tern_archiver_archived_index"),
                    sum("tern_archiver_backlog_entries"),
                )
            }
            Err(_) => (0.0, f64::NAN),
        };
        let left = (entries as f64 - archived).max(backlog);
        if left <= 0.0 || started.elapsed() > limit {
            return left.max(0.0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the archiver's metrics showed while a phase ran: the largest lag and backlog summed over
/// partitions, and the segments uploaded so far.
#[derive(Default, Clone, Copy)]
struct ArchiveSeen {
    lag_ms: f64,
    backlog: f64,
    segments: f64,
}

async fn sample_archive(base: String, seen: std::sync::Arc<std::sync::Mutex<ArchiveSeen>>) {
    let sum = |text: &str, name: &str, max: bool| -> f64 {
        let values = text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if max {
            values.fold(0.0, f64::max)
        } else {
            values.sum()
        }
    };
    loop {
        if let Ok(text) = get_text(&format!("{base}/metrics")).await {
            if let Ok(mut s) = seen.lock() {
                s.lag_ms = s
                    .lag_ms
                    .max(sum(&text, "tern_archiver_lag_milliseconds", true));
                s.backlog = s
                    .backlog
                    .max(sum(&text, "tern_archiver_backlog_entries", false));
                s.segments = sum(&text, "tern_archiver_segments_uploaded_total", false);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
