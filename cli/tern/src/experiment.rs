//! `tern experiment constant-work`: shows that MemDS's load does not move when every router's
//! cache goes cold at once in constant-work mode, and jumps in classic mode.
//!
//! For each cache mode, a fresh local cluster (two routers) serves a steady, open-loop GetItem
//! load spread over many tables. Each second the experiment records the client's completed
//! requests, the routers' cache hit rate and the lookups MemDS served (from their `/metrics`). At
//! `--flush-at` it tells every router to drop its cache (a control message over the bus). It
//! writes `constant-work.csv` and `constant-work.png` and prints the MemDS rates before and after.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tern_cluster::{Cluster, ClusterSpec};

use crate::bench::{call, create_table, HttpClient};
use crate::chart::{Panel, Series};

#[derive(clap::Args, Clone)]
pub struct ConstantWorkArgs {
    /// Seconds of load in each mode.
    #[arg(long, default_value_t = 40)]
    seconds: u64,
    /// Second of the load at which every router's cache is flushed.
    #[arg(long, default_value_t = 20)]
    flush_at: u64,
    /// Offered load: GetItem requests per second, sent at that pace whatever the answers' speed.
    #[arg(long, default_value_t = 800)]
    rate: u64,
    /// Tables the load is spread over (each one entry in a router's cache).
    #[arg(long, default_value_t = 40)]
    tables: usize,
    /// Routers, each taking its share of the load.
    #[arg(long, default_value_t = 2)]
    routers: usize,
    /// Modes, in order.
    #[arg(long, value_delimiter = ',', default_value = "constant,classic")]
    modes: Vec<String>,
    /// Directory for constant-work.csv and constant-work.png.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

/// One second of one mode.
#[derive(Clone, Debug)]
struct Row {
    second: u64,
    client_rps: f64,
    hit_rate: f64,
    memds_rps: f64,
}

/// Counters summed over the processes, read at one moment.
#[derive(Clone, Copy, Default)]
struct Counters {
    hits: f64,
    misses: f64,
    lookups: f64,
}

pub async fn constant_work(args: ConstantWorkArgs) -> anyhow::Result<()> {
    if args.flush_at + 5 > args.seconds || args.flush_at < 5 {
        bail!("--flush-at must leave 5 seconds of load before it and after it");
    }
    std::fs::create_dir_all(&args.out).context("create --out")?;
    let mut results = Vec::new();
    for mode in &args.modes {
        if mode != "constant" && mode != "classic" {
            bail!("unknown cache mode {mode}: constant or classic");
        }
        println!(
            "mode {mode}: starting a local cluster ({} routers) ...",
            args.routers
        );
        let rows = run_mode(&args, mode).await?;
        results.push((mode.clone(), rows));
    }
    let csv = args.out.join("constant-work.csv");
    let mut text =
        String::from("mode,second,client_requests_per_s,cache_hit_rate,memds_lookups_per_s\n");
    for (mode, rows) in &results {
        for r in rows {
            text.push_str(&format!(
                "{mode},{},{:.0},{:.4},{:.0}\n",
                r.second, r.client_rps, r.hit_rate, r.memds_rps
            ));
        }
    }
    std::fs::write(&csv, text).with_context(|| format!("write {}", csv.display()))?;
    println!("wrote {}", csv.display());
    for (mode, rows) in &results {
        let s = summary(rows, args.flush_at);
        let change = if s.before > 0.0 {
            format!("{:+.1}%", (s.after / s.before - 1.0) * 100.0)
        } else {
            "from none".to_string()
        };
        println!(
            "{mode:>8}: MemDS lookups/s in the 10 s before the flush {:.1}, in the 10 s after {:.1} ({change}); highest second after {:.0}; client requests/s {:.0}",
            s.before, s.after, s.peak, s.client,
        );
    }
    let png = args.out.join("constant-work.png");
    let colors = [
        plotters::style::RGBColor(31, 119, 180),
        plotters::style::RGBColor(214, 39, 40),
    ];
    let series = |f: fn(&Row) -> f64| -> Vec<Series> {
        results
            .iter()
            .zip(colors)
            .map(|((mode, rows), color)| Series {
                label: format!("{mode} mode"),
                points: rows.iter().map(|r| (r.second as f64, f(r))).collect(),
                color,
            })
            .collect()
    };
    let marker = Some((
        args.flush_at as f64,
        "every router's cache flushed".to_string(),
    ));
    crate::chart::draw(
        &png,
        &format!(
            "Routing cache flushed at {} s: {} GetItem/s over {} tables, {} routers",
            args.flush_at, args.rate, args.tables, args.routers
        ),
        "seconds",
        &[
            Panel {
                title: "MemDS lookups served per second".into(),
                y_label: "lookups/s".into(),
                series: series(|r| r.memds_rps),
                marker: marker.clone(),
                log_y: false,
            },
            Panel {
                title: "Routers' cache hit rate".into(),
                y_label: "hits / requests".into(),
                series: series(|r| r.hit_rate),
                marker: marker.clone(),
                log_y: false,
            },
            Panel {
                title: "Client requests completed per second".into(),
                y_label: "requests/s".into(),
                series: series(|r| r.client_rps),
                marker,
                log_y: false,
            },
        ],
    )?;
    println!("wrote {}", png.display());
    Ok(())
}

struct Summary {
    before: f64,
    after: f64,
    peak: f64,
    client: f64,
}

/// MemDS rates in the 10 s (at most) before and after the flush, and the client's mean rate.
fn summary(rows: &[Row], flush_at: u64) -> Summary {
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let before_from = flush_at.saturating_sub(10).max(3);
    let before = mean(
        rows.iter()
            .filter(|r| r.second > before_from && r.second <= flush_at)
            .map(|r| r.memds_rps)
            .collect(),
    );
    let after_rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.second > flush_at && r.second <= flush_at + 10)
        .collect();
    Summary {
        before,
        after: mean(after_rows.iter().map(|r| r.memds_rps).collect()),
        peak: after_rows.iter().map(|r| r.memds_rps).fold(0.0, f64::max),
        client: mean(rows.iter().skip(3).map(|r| r.client_rps).collect()),
    }
}

async fn run_mode(args: &ConstantWorkArgs, mode: &str) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir().context("create a data dir")?;
    let mut spec = ClusterSpec::new(dir.path(), crate::bin_dir()?);
    spec.routers = args.routers.max(1);
    spec.api_credentials = None;
    spec.env
        .push(("TERN_ROUTER_CACHE_MODE".into(), mode.into()));
    let cluster = Cluster::start(spec).await?;
    let endpoints: Vec<String> = cluster.endpoints().into_iter().map(|(_, e)| e).collect();
    let client = HttpClient::new(256, None);
    let tables: Vec<String> = (0..args.tables).map(|i| format!("cw-{i}")).collect();
    for t in &tables {
        create_table(&client, &endpoints[0], t).await?;
        let item = json!({"TableName": t, "Item": {"pk": {"S": "k"}, "v": {"S": "x"}}});
        let (status, body) = call(&client, &endpoints[0], "PutItem", item.to_string()).await?;
        if status != 200 {
            bail!("PutItem: {}", String::from_utf8_lossy(&body));
        }
    }
    let metrics: Vec<String> = cluster
        .metrics_endpoints()
        .into_iter()
        .filter(|(n, _)| n.starts_with("router") || n.starts_with("memds"))
        .map(|(_, u)| u)
        .collect();
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(open_loop(
        client.clone(),
        endpoints,
        tables,
        args.rate,
        completed.clone(),
        failed.clone(),
        stop.clone(),
    ));
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut last = (read_counters(&metrics).await?, 0u64, Instant::now());
    for second in 1..=args.seconds {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        let now = (
            read_counters(&metrics).await?,
            completed.load(Ordering::Relaxed),
            Instant::now(),
        );
        let dt = now.2.duration_since(last.2).as_secs_f64();
        let hits = now.0.hits - last.0.hits;
        let misses = now.0.misses - last.0.misses;
        rows.push(Row {
            second,
            client_rps: (now.1 - last.1) as f64 / dt,
            hit_rate: if hits + misses > 0.0 {
                hits / (hits + misses)
            } else {
                0.0
            },
            memds_rps: (now.0.lookups - last.0.lookups) / dt,
        });
        last = now;
        if second == args.flush_at {
            // The admin connection publishes the control message; every router answers it.
            cluster
                .bus()
                .publish(
                    tern_proto::subjects::ROUTER_FLUSH_CACHE,
                    &tern_proto::Empty {},
                )
                .await
                .context("flush the routers' caches")?;
            println!("  {second:>3} s: caches flushed");
        }
        let r = rows.last().expect("a row");
        println!(
            "  {second:>3} s: client {:>6.0}/s, hit rate {:.3}, MemDS {:>6.0} lookups/s",
            r.client_rps, r.hit_rate, r.memds_rps
        );
    }
    stop.store(true, Ordering::Relaxed);
    load.await??;
    cluster.bus().drain().await;
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        println!("  {failed} requests failed");
    }
    Ok(rows)
}

/// Router cache hits and misses and MemDS lookups, summed over `urls`.
async fn read_counters(urls: &[String]) -> anyhow::Result<Counters> {
    let mut c = Counters::default();
    for url in urls {
        let text = crate::bench::get_text(url).await?;
        for line in text.lines() {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let v: f64 = value.trim().parse().unwrap_or(0.0);
            match name {
                "tern_router_cache_hits_total" => c.hits += v,
                "tern_router_cache_misses_total" => c.misses += v,
                "tern_memds_lookups_total" => c.lookups += v,
                _ => {}
            }
        }
    }
    Ok(c)
}

/// Sends `rate` GetItems a second, in ticks of 10 ms, round-robin over tables and endpoints, no
/// matter how fast they are answered (at most 1,024 in flight; beyond, a request is counted failed).
async fn open_loop(
    client: HttpClient,
    endpoints: Vec<String>,
    tables: Vec<String>,
    rate: u64,
    completed: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(1024));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            sent += 1;
            n += 1;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let table = &tables[n % tables.len()];
            let endpoint = endpoints[(n / tables.len()) % endpoints.len()].clone();
            let body = json!({"TableName": table, "Key": {"pk": {"S": "k"}}}).to_string();
            let (client, completed, failed) = (client.clone(), completed.clone(), failed.clone());
            tokio::spawn(async move {
                match call(&client, &endpoint, "GetItem", body).await {
                    Ok((200, _)) => completed.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                drop(permit);
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(second: u64, memds_rps: f64) -> Row {
        Row {
            second,
            client_rps: 100.0,
            hit_rate: 1.0,
            memds_rps,
        }
    }

    #[test]
    fn the_summary_compares_ten_seconds_either_side_of_the_flush() {
        let mut rows: Vec<Row> = (1..=20).map(|s| row(s, 100.0)).collect();
        rows.extend((21..=40).map(|s| row(s, if s == 22 { 1000.0 } else { 110.0 })));
        let s = summary(&rows, 20);
        assert_eq!(s.before, 100.0);
        assert_eq!(s.after, (9.0 * 110.0 + 1000.0) / 10.0);
        assert_eq!(s.peak, 1000.0);
    }
}
