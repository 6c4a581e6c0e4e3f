//! Admission control through a real cluster: two routers and two GAC instances, provisioned and
//! on-demand tables, load above the table's rate, GAC stopped and started under it.
//!
//! The load is open loop: a fixed rate of PutItem per router whatever the answers, from clients
//! whose retries are off, so every admitted write and every throttle is counted.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{AttributeValue as V, BillingMode, ProvisionedThroughput};
use aws_sdk_dynamodb::Client;
use common::*;
use std::sync::Mutex as StdMutex;
use tern_cluster::{Cluster, ClusterSpec};

fn client_without_retries(endpoint: &str) -> Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("tern", "tern", None, None, "tests"))
        .retry_config(RetryConfig::disabled())
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Client::from_conf(conf)
}

async fn start(routers: usize, env: &[(&str, &str)]) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path(), bin_dir());
    spec.routers = routers;
    spec.gac = 2;
    spec.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cluster = Cluster::start(spec).await.expect("start cluster");
    (cluster, dir)
}

async fn provisioned_table(c: &Client, name: &str, rcu: i64, wcu: i64) {
    create_table_request(c, name)
        .billing_mode(BillingMode::Provisioned)
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(rcu)
                .write_capacity_units(wcu)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create table");
    wait_active(c, name).await;
}

/// One answered write: when it was answered (since the load began), by which router, and how.
#[derive(Debug, Clone)]
struct Answer {
    at: Duration,
    router: usize,
    key: String,
    outcome: Outcome,
    took: Duration,
    /// A throttle's ThrottlingReasons ("reason resource").
    reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Admitted,
    Throttled,
    Failed(String),
}

/// The ThrottlingReasons of a throttled PutItem, as the SDK parsed them.
fn reasons(
    e: &aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError>,
) -> Vec<String> {
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    match e.as_service_error() {
        Some(PutItemError::ProvisionedThroughputExceededException(x)) => x
            .throttling_reasons()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r.reason().unwrap_or(""),
                    r.resource().unwrap_or("")
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[derive(Default)]
struct Log(StdMutex<Vec<Answer>>);

impl Log {
    fn between(&self, from: Duration, to: Duration) -> Vec<Answer> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.at >= from && a.at < to)
            .cloned()
            .collect()
    }

    fn admitted_per_second(&self, from: Duration, to: Duration) -> f64 {
        let n = self
            .between(from, to)
            .iter()
            .filter(|a| a.outcome == Outcome::Admitted)
            .count();
        n as f64 / (to - from).as_secs_f64()
    }

    fn count(&self, from: Duration, to: Duration, outcome: &Outcome) -> usize {
        self.between(from, to)
            .iter()
            .filter(|a| &a.outcome == outcome)
            .count()
    }
}

/// Sends `rate` PutItem/s of 100-byte items (one write unit each) through `c` for `for_`, each
/// in its own task, logging every answer. Returns when the last one is answered.
async fn load(
    c: Client,
    router: usize,
    table: &str,
    rate: f64,
    for_: Duration,
    t0: Instant,
    log: Arc<Log>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let until = Instant::now() + for_;
    let mut tasks = Vec::new();
    let mut i = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        i += 1;
        let (c, log, table) = (c.clone(), log.clone(), table.to_string());
        let key = format!("r{router}-{:?}-{i}", t0.elapsed().as_millis());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = tokio::time::timeout(
                Duration::from_secs(10),
                c.put_item()
                    .table_name(&table)
                    .item("pk", V::S(key.clone()))
                    .item("v", V::S("x".repeat(80)))
                    .send(),
            )
            .await;
            let reasons = match &result {
                Ok(Err(e)) => reasons(e),
                _ => Vec::new(),
            };
            let outcome = match result {
                Ok(Ok(_)) => Outcome::Admitted,
                Ok(Err(e)) => match error_of(&e) {
                    (code, message) if code == "ProvisionedThroughputExceededException" => {
                        if message.contains("limit)") {
                            // The storage node's bucket: the routers let it through.
                            eprintln!("throttled by a storage node: {message}");
                        }
                        Outcome::Throttled
                    }
                    other => Outcome::Failed(format!("{other:?}")),
                },
                Err(_) => Outcome::Failed("no answer within 10 s".into()),
            };
            log.0.lock().unwrap().push(Answer {
                at: t0.elapsed(),
                router,
                key,
                outcome,
                took: sent.elapsed(),
                reasons,
            });
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Every admitted write can be read back (consistently), after the table's read capacity is
/// raised so that checking is not throttled.
async fn all_admitted_durable(c: &Client, table: &str, log: &Log) {
    c.update_table()
        .table_name(table)
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(40_000)
                .write_capacity_units(1)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("raise read capacity");
    let mut stored = std::collections::HashSet::new();
    let mut start = None;
    loop {
        let page = c
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        for item in page.items() {
            if let Some(V::S(k)) = item.get("pk") {
                stored.insert(k.clone());
            }
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    let admitted: Vec<String> = log
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.outcome == Outcome::Admitted)
        .map(|a| a.key.clone())
        .collect();
    let missing: Vec<&String> = admitted.iter().filter(|k| !stored.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} admitted writes are not in the table: {:?}",
        missing.len(),
        admitted.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Every throttle in `log` gave exactly `reason` (and at least one was throttled).
fn expect_reasons(log: &Log, reason: &str) {
    let log = log.0.lock().unwrap();
    let throttled: Vec<&Answer> = log
        .iter()
        .filter(|a| a.outcome == Outcome::Throttled)
        .collect();
    assert!(!throttled.is_empty());
    for a in throttled {
        assert_eq!(a.reasons, [reason.to_string()], "{a:?}");
    }
}

fn no_failures(log: &Log) {
    let log = log.0.lock().unwrap();
    let failed: Vec<&Answer> = log
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Failed(_)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    let slowest = log.iter().map(|a| a.took).max().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(2),
        "a request took {slowest:?}: admission must answer, never hold a request"
    );
}

/// The GAC process that owns `table` while both instances are up, and the other one, picked as
/// the routers pick it.
async fn owner_of(c: &Client, table: &str) -> (&'static str, &'static str) {
    let d = c.describe_table().table_name(table).send().await.unwrap();
    let id = d
        .table()
        .and_then(|t| t.table_id())
        .expect("a table id")
        .to_string();
    match tern_proto::gac::owner(&id, ["gac-1", "gac-2"]) {
        Some("gac-1") => ("gac", "gac-2"),
        _ => ("gac-2", "gac"),
    }
}

async fn metrics_of(cluster: &Cluster, process: &str) -> String {
    let base = cluster.metrics_base(process).expect("metrics address");
    raw_get(&base, "/metrics").await.1
}

/// A PROVISIONED table of 100 write units written through two routers at three times that for
/// 30 seconds: about 100 writes per second are admitted, both routers get a share, and each
/// admitted write is in the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_share_a_provisioned_tables_rate() {
    let (cluster, _dir) = start(2, &[]).await;
    let endpoints = cluster.endpoints();
    let c = client(&endpoints[0].1);
    provisioned_table(&c, "prov", 100, 100).await;
    let log = Arc::new(Log::default());
    let t0 = Instant::now();
    let secs = Duration::from_secs(30);
    let loads = endpoints.iter().enumerate().map(|(i, (_, url))| {
        load(
            client_without_retries(url),
            i,
            "prov",
            150.0,
            secs,
            t0,
            log.clone(),
        )
    });
    futures::future::join_all(loads).await;
    no_failures(&log);
    let rate = log.admitted_per_second(Duration::ZERO, secs);
    eprintln!(
        "admitted {rate:.1} writes/s of 300 offered; throttled {}",
        log.count(
            Duration::ZERO,
            secs + Duration::from_secs(5),
            &Outcome::Throttled
        )
    );
    assert!(
        (90.0..=110.0).contains(&rate),
        "admitted {rate:.1}/s, provisioned 100"
    );
    // Every throttle says why, as DynamoDB's ThrottlingReasons do.
    expect_reasons(
        &log,
        "TableWriteProvisionedThroughputExceeded arn:aws:dynamodb:tern:000000000000:table/prov",
    );
    for router in 0..2 {
        let n = log
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.router == router && a.outcome == Outcome::Admitted)
            .count();
        let share = n as f64 / (rate * 30.0);
        assert!(
            share > 0.3,
            "router {router} admitted only {:.0}% of the writes",
            share * 100.0
        );
    }
    // The table's GAC owner granted both routers a rate; the routers count what they throttled.
    let (owner, _) = owner_of(&c, "prov").await;
    let granted: Vec<(String, f64)> = samples(
        &metrics_of(&cluster, owner).await,
        "tern_gac_granted_rate_units",
    )
    .into_iter()
    .filter(|(l, _)| l.contains("table=\"prov\"") && l.contains("kind=\"write\""))
    .collect();
    assert_eq!(
        granted.len(),
        2,
        "the owner grants both routers: {granted:?}"
    );
    let router_metrics = metrics_of(&cluster, "router").await;
    assert!(
        samples(&router_metrics, "tern_router_throttled_requests_total")
            .iter()
            .any(|(l, v)| l.contains("table=\"prov\"") && *v > 0.0),
        "{router_metrics}"
    );
    all_admitted_durable(&c, "prov", &log).await;
}

/// After a minute of idleness a table has saved 60 s of its rate: a 10 s spike at three times
/// the rate is absorbed whole; a longer one runs the balance out and is throttled to the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_capacity_absorbs_a_short_spike_not_a_long_one() {
    let (cluster, _dir) = start(1, &[]).await;
    let url = cluster.endpoint();
    let c = client(&url);
    provisioned_table(&c, "bursty", 20, 20).await;
    // Touch the table so GAC starts its balance, then a minute of idleness: 1,200 units saved.
    c.put_item()
        .table_name("bursty")
        .item("pk", V::S("first".into()))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let log = Arc::new(Log::default());
    let t0 = Instant::now();
    let nc = client_without_retries(&url);
    // Short: 60/s for 10 s, 400 units beyond the rate.
    load(
        nc.clone(),
        0,
        "bursty",
        60.0,
        Duration::from_secs(10),
        t0,
        log.clone(),
    )
    .await;
    let short_end = t0.elapsed();
    let throttled_short = log.count(Duration::ZERO, short_end, &Outcome::Throttled);
    let admitted_short = log.count(Duration::ZERO, short_end, &Outcome::Admitted);
    eprintln!("short spike: {admitted_short} admitted, {throttled_short} throttled");
    assert!(
        throttled_short * 100 <= admitted_short,
        "the short spike was throttled ({throttled_short} of {})",
        admitted_short + throttled_short
    );
    // Long: 60/s for 40 s wants 1,600 units beyond the rate; about 800 are left.
    load(
        nc,
        0,
        "bursty",
        60.0,
        Duration::from_secs(40),
        t0,
        log.clone(),
    )
    .await;
    let end = t0.elapsed();
    no_failures(&log);
    let throttled_long = log.count(short_end, end, &Outcome::Throttled);
    let tail = log.admitted_per_second(end - Duration::from_secs(10), end);
    eprintln!("long spike: {throttled_long} throttled; last 10 s admitted {tail:.1}/s");
    assert!(
        throttled_long > 100,
        "the long spike was not throttled: {throttled_long}"
    );
    assert!(
        (10.0..=30.0).contains(&tail),
        "with the balance spent, admission should run at the rate (20/s): {tail:.1}/s"
    );
    let burst = samples(
        &metrics_of(&cluster, "gac").await,
        "tern_gac_burst_balance_units",
    )
    .into_iter()
    .chain(samples(
        &metrics_of(&cluster, "gac-2").await,
        "tern_gac_burst_balance_units",
    ))
    .find(|(l, _)| l.contains("table=\"bursty\"") && l.contains("kind=\"write\""));
    assert!(
        burst.as_ref().is_some_and(|(_, v)| *v < 200.0),
        "the balance should be spent: {burst:?}"
    );
}

/// GAC's owner of the table dies (the other instance takes over), then the whole fleet is
/// down, then it comes back, all under load at three times the rate: admission stays at the
/// table's rate throughout and no request hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_holds_while_gac_fails_and_returns() {
    let (mut cluster, _dir) = start(2, &[]).await;
    let endpoints = cluster.endpoints();
    let c = client(&endpoints[0].1);
    provisioned_table(&c, "steady", 100, 100).await;
    let log = Arc::new(Log::default());
    let t0 = Instant::now();
    let secs = Duration::from_secs(36);
    let loads = futures::future::join_all(endpoints.iter().enumerate().map(|(i, (_, url))| {
        load(
            client_without_retries(url),
            i,
            "steady",
            150.0,
            secs,
            t0,
            log.clone(),
        )
    }));
    let faults = async {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let (owner, other) = owner_of(&c, "steady").await;
        assert!(
            metrics_of(&cluster, owner)
                .await
                .contains("table=\"steady\""),
            "{owner} does not grant the table it owns"
        );
        eprintln!("{:?}: stopping the owner {owner}", t0.elapsed());
        cluster.kill(owner).unwrap();
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(
            metrics_of(&cluster, other)
                .await
                .contains("table=\"steady\""),
            "{other} did not take the table over"
        );
        eprintln!("{:?}: stopping {other}: no GAC at all", t0.elapsed());
        cluster.kill(other).unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        eprintln!("{:?}: GAC back", t0.elapsed());
        cluster.restart(owner).await.unwrap();
        cluster.restart(other).await.unwrap();
    };
    let (_, ()) = tokio::join!(loads, faults);
    no_failures(&log);
    let rate = log.admitted_per_second(Duration::ZERO, secs);
    let windows: Vec<f64> = (0..6)
        .map(|w| {
            log.admitted_per_second(Duration::from_secs(w * 6), Duration::from_secs(w * 6 + 6))
        })
        .collect();
    eprintln!("admitted {rate:.1}/s; per 6 s: {windows:.1?}");
    assert!(
        (90.0..=110.0).contains(&rate),
        "admitted {rate:.1}/s, provisioned 100"
    );
    for (w, r) in windows.iter().enumerate() {
        assert!(
            (70.0..=130.0).contains(r),
            "window {w}: {r:.1}/s (windows {windows:.1?})"
        );
    }
}

/// An on-demand table admits twice its previous peak at once and throttles beyond it. The GAC
/// fleet is configured with a small initial peak (30 write units/s) and a peak that settles
/// after 15 s, so that the test runs in a minute instead of DynamoDB's 30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_absorbs_double_its_previous_peak() {
    let (cluster, _dir) = start(
        1,
        &[
            ("TERN_GAC_ON_DEMAND_INITIAL_WRITE_UNITS", "30"),
            ("TERN_GAC_ON_DEMAND_PEAK_DELAY_SECONDS", "15"),
        ],
    )
    .await;
    let url = cluster.endpoint();
    create_table(&client(&url), "ondemand", None).await;
    let nc = client_without_retries(&url);
    let log = Arc::new(Log::default());
    let t0 = Instant::now();
    // 50/s (within twice the initial 30) until it is the settled peak.
    load(
        nc.clone(),
        0,
        "ondemand",
        50.0,
        Duration::from_secs(27),
        t0,
        log.clone(),
    )
    .await;
    let p1 = t0.elapsed();
    assert_eq!(
        log.count(Duration::ZERO, p1, &Outcome::Throttled),
        0,
        "50/s is within twice the initial peak"
    );
    // Double the peak, at once: absorbed.
    load(
        nc.clone(),
        0,
        "ondemand",
        100.0,
        Duration::from_secs(6),
        t0,
        log.clone(),
    )
    .await;
    let p2 = t0.elapsed();
    let throttled = log.count(p1, p2, &Outcome::Throttled);
    let admitted = log.count(p1, p2, &Outcome::Admitted);
    eprintln!("double the peak: {admitted} admitted, {throttled} throttled");
    assert!(
        throttled * 20 <= admitted,
        "twice the previous peak should be absorbed: {throttled} throttled of {}",
        admitted + throttled
    );
    // Five times the peak: held near twice it.
    load(
        nc,
        0,
        "ondemand",
        250.0,
        Duration::from_secs(6),
        t0,
        log.clone(),
    )
    .await;
    let p3 = t0.elapsed();
    no_failures(&log);
    let rate = log.admitted_per_second(p2, p3);
    let throttled = log.count(p2, p3, &Outcome::Throttled);
    eprintln!("five times the peak: {rate:.1}/s admitted, {throttled} throttled");
    assert!(
        throttled > 300,
        "beyond twice the peak must be throttled: {throttled}"
    );
    expect_reasons(
        &log,
        "TableWriteKeyRangeThroughputExceeded arn:aws:dynamodb:tern:000000000000:table/ondemand",
    );
    assert!(
        (70.0..=150.0).contains(&rate),
        "admitted {rate:.1}/s, about 100 allowed"
    );
}

/// The storage nodes' partition buckets hold a provisioned table to its rate when the routers
/// do not (their admission control off), and the node's metrics show which eighth of the
/// partition's key range carries its traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_buckets_are_the_second_line_and_show_hot_ranges() {
    let (cluster, _dir) = start(
        1,
        &[
            ("TERN_ROUTER_ADMISSION_CONTROL", "false"),
            // At most 2 s of unused capacity saved, so the bound below does not depend on how
            // long the cluster took to start.
            ("TERN_STORAGE_BURST_SECONDS", "2"),
        ],
    )
    .await;
    let url = cluster.endpoint();
    provisioned_table(&client(&url), "second", 20, 20).await;
    // Keys whose hash starts with the bits 0110: all in the first of the table's two partitions
    // (MemDS's default: hashes below 2^63), in the seventh eighth of its range.
    let keys: Vec<String> = (0..)
        .map(|i| format!("hot-{i}"))
        .filter(|k| {
            let h = tern_model::PrimaryKey {
                hash: tern_model::AttributeValue::S(k.clone()),
                range: None,
            }
            .hash();
            h >> 60 == 6
        })
        .take(1000)
        .collect();
    let c = client_without_retries(&url);
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut admitted, mut throttled) = (0, 0);
    let mut tasks = Vec::new();
    for k in keys {
        tick.tick().await;
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.put_item()
                .table_name("second")
                .item("pk", V::S(k))
                .send()
                .await
                .map_err(|e| (error_of(&e).0, reasons(&e)))
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => admitted += 1,
            Err((code, reasons)) if code == "ProvisionedThroughputExceededException" => {
                // The partition's bucket on its node refused it: a key range's limit.
                assert_eq!(
                    reasons,
                    ["TableWriteKeyRangeThroughputExceeded arn:aws:dynamodb:tern:000000000000:table/second"]
                );
                throttled += 1
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("{admitted} admitted, {throttled} throttled in {secs:.1} s");
    // 100/s offered to a 20/s table: 20/s, plus at most 2 s of it saved.
    assert!(throttled > 0, "nothing throttled");
    assert!(
        (admitted as f64) < 20.0 * secs + 40.0 + 10.0 && admitted as f64 > 15.0 * secs,
        "{admitted} admitted in {secs:.1} s at 20 units/s"
    );
    let mut throttled_at_nodes = 0.0;
    let mut ranges = Vec::new();
    for (node, _) in cluster.storage_metrics() {
        let text = node_metrics(&cluster, &node).await;
        throttled_at_nodes += samples(&text, "tern_storage_partition_throttled_requests_total")
            .iter()
            .filter(|(l, _)| l.contains("kind=\"write\""))
            .map(|(_, v)| v)
            .sum::<f64>();
        ranges.extend(
            samples(&text, "tern_storage_partition_range_consumed_units_total")
                .into_iter()
                .filter(|(l, _)| l.contains("kind=\"write\"")),
        );
    }
    assert_eq!(
        throttled_at_nodes, throttled as f64,
        "the nodes refused what the client saw refused"
    );
    let total: f64 = ranges.iter().map(|(_, v)| v).sum();
    let hot: f64 = ranges
        .iter()
        .filter(|(l, _)| l.contains("from=\"6000000000000000\""))
        .map(|(_, v)| v)
        .sum();
    assert!(total >= admitted as f64, "{ranges:?}");
    assert_eq!(
        hot, total,
        "every write fell in the seventh eighth: {ranges:?}"
    );
}

/// BatchWriteItem and BatchGetItem admit each item on its own: beyond the table's capacity the
/// rest comes back as UnprocessedItems / UnprocessedKeys (not an error), and sending those again
/// completes the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_beyond_capacity_come_back_unprocessed() {
    use aws_sdk_dynamodb::types::{KeysAndAttributes, PutRequest, WriteRequest};
    use std::collections::HashMap;
    let (cluster, _dir) = start(1, &[]).await;
    let c = client_without_retries(&cluster.endpoint());
    provisioned_table(&client(&cluster.endpoint()), "batched", 2, 5).await;
    // Let the buckets fill to a second of their rate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes: Vec<WriteRequest> = (0..25)
        .map(|i| {
            let put = PutRequest::builder()
                .item("pk", V::S(format!("k{i}")))
                .item("v", V::S("x".repeat(900)))
                .build()
                .unwrap();
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    let mut pending = HashMap::from([("batched".to_string(), writes)]);
    let mut rounds = Vec::new();
    while !pending.is_empty() {
        let out = c
            .batch_write_item()
            .set_request_items(Some(pending.clone()))
            .send()
            .await;
        match out {
            Ok(out) => {
                let left = out.unprocessed_items().cloned().unwrap_or_default();
                let n_left: usize = left.values().map(Vec::len).sum();
                let n_sent: usize = pending.values().map(Vec::len).sum();
                rounds.push(n_sent - n_left);
                pending = left.into_iter().filter(|(_, v)| !v.is_empty()).collect();
            }
            // All throttled at once: DynamoDB's answer too; wait for the refill.
            Err(e) => {
                assert_eq!(error_of(&e).0, "ProvisionedThroughputExceededException");
                rounds.push(0);
            }
        }
        assert!(rounds.len() < 60, "the batch does not complete: {rounds:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("writes processed per round: {rounds:?}");
    assert!(
        rounds[0] >= 1 && rounds[0] < 25,
        "the first round should be cut by the 5-unit bucket: {rounds:?}"
    );
    // Reads: 25 consistent keys of 1 KB items (one unit each) against 2 read units.
    let keys: Vec<HashMap<String, V>> = (0..25)
        .map(|i| HashMap::from([("pk".to_string(), V::S(format!("k{i}")))]))
        .collect();
    let mut pending = HashMap::from([(
        "batched".to_string(),
        KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .unwrap(),
    )]);
    let mut got = 0;
    let mut first = None;
    let mut tries = 0;
    while !pending.is_empty() {
        tries += 1;
        assert!(tries < 80, "the batch read does not complete");
        match c
            .batch_get_item()
            .set_request_items(Some(pending.clone()))
            .send()
            .await
        {
            Ok(out) => {
                let n = out
                    .responses()
                    .map_or(0, |r| r.values().map(Vec::len).sum());
                first.get_or_insert(n);
                got += n;
                pending = out
                    .unprocessed_keys()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, k)| !k.keys().is_empty())
                    .collect();
            }
            Err(e) => assert_eq!(error_of(&e).0, "ProvisionedThroughputExceededException"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("reads: first round {first:?}, {tries} rounds");
    assert_eq!(got, 25, "every item read once");
    assert!(
        first.is_some_and(|n| n < 25),
        "the first read round should be cut: {first:?}"
    );
}
