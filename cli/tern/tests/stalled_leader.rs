//! A partition leader frozen with SIGSTOP (a stalled machine or a long pause) while a counter is
//! incremented: a new leader must take over quickly, and no consistent read may go back in time,
//! also after the old leader wakes and a router that still routes to it sends it reads.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as V;
use aws_sdk_dynamodb::Client;
use common::*;
use tern_cluster::Cluster;
use tokio::sync::watch;

/// The tests here each run a cluster and measure seconds: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// 3. A stalled (SIGSTOPped) leader is replaced, and consistent reads never go back in time.
//
// The woken leader has seen no time pass: a lease counted in its own ticks still looks valid, and
// until it hears of its successor it would answer consistent reads from its old state. Reads reach
// it from a second router whose routing metadata, looked up before the stall, still names it.

const COUNTER: &str = "stalled";

#[derive(Default)]
struct Counter {
    /// Highest value whose conditional put was acknowledged.
    max_acked: u64,
    /// Acknowledged increments: (call started, acknowledged, value written).
    acks: Vec<(Instant, Instant, u64)>,
    /// Consistent reads that returned less than a value acknowledged before they began.
    stale: Vec<String>,
    /// Consistent reads that succeeded: (started, answered).
    reads: Vec<(Instant, Instant)>,
    failed_reads: u64,
    failed_writes: u64,
    conflicts: u64,
    errors: Vec<String>,
}

/// A consistent read of the counter, checked against what was acknowledged before it began.
async fn checked_read(c: &Client, state: &Mutex<Counter>, t0: Instant) -> Option<u64> {
    let floor = state.lock().unwrap().max_acked;
    let started = Instant::now();
    let got = c
        .get_item()
        .table_name(COUNTER)
        .key("pk", V::S("counter".into()))
        .consistent_read(true)
        .send()
        .await;
    let mut s = state.lock().unwrap();
    let at = started.saturating_duration_since(t0).as_secs_f64();
    let n = match got {
        Ok(got) => match got.item().and_then(|i| i.get("n")) {
            Some(V::N(n)) => n.parse::<u64>().expect("a counter"),
            other => {
                s.stale.push(format!(
                    "a consistent read begun {at:.3} s after the last SIGSTOP found no counter: {other:?}"
                ));
                return None;
            }
        },
        Err(e) => {
            s.failed_reads += 1;
            if s.errors.len() < 5 {
                s.errors.push(format!("read: {:?}", error_of(&e)));
            }
            return None;
        }
    };
    s.reads.push((started, Instant::now()));
    if n < floor {
        s.stale.push(format!(
            "a consistent read begun {at:.3} s after the last SIGSTOP returned {n}, but {floor} was \
             acknowledged before it began"
        ));
    }
    Some(n)
}

/// Read the counter, put n + 1 if it is still n; until told to stop.
async fn incrementer(
    c: Client,
    state: Arc<Mutex<Counter>>,
    t0: Arc<Mutex<Instant>>,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let t0_now = *t0.lock().unwrap();
        let Some(n) = checked_read(&c, &state, t0_now).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let started = Instant::now();
        let item = HashMap::from([
            ("pk".to_string(), V::S("counter".into())),
            ("n".to_string(), V::N((n + 1).to_string())),
        ]);
        let r = c
            .put_item()
            .table_name(COUNTER)
            .set_item(Some(item))
            .condition_expression("n = :old")
            .expression_attribute_values(":old", V::N(n.to_string()))
            .send()
            .await;
        let acked_at = Instant::now();
        let failed = {
            let mut s = state.lock().unwrap();
            match r {
                Ok(_) => {
                    s.max_acked = s.max_acked.max(n + 1);
                    s.acks.push((started, acked_at, n + 1));
                    false
                }
                Err(e) if error_of(&e).0 == "ConditionalCheckFailedException" => {
                    s.conflicts += 1;
                    false
                }
                Err(e) => {
                    s.failed_writes += 1;
                    if s.errors.len() < 5 {
                        s.errors.push(format!("put: {:?}", error_of(&e)));
                    }
                    true
                }
            }
        };
        if failed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Consistent reads only, until told to stop.
async fn reader(
    c: Client,
    state: Arc<Mutex<Counter>>,
    t0: Arc<Mutex<Instant>>,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let t0_now = *t0.lock().unwrap();
        if checked_read(&c, &state, t0_now).await.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A second router on the same bus, started outside the cluster (dropping it kills it).
async fn second_router(tc: &TestCluster) -> (tern_cluster::ServiceProcess, String) {
    let port = tern_cluster::free_port().expect("a free port");
    let env = [
        ("TERN_ROUTER_NATS_URL", tc.cluster.nats_url()),
        ("TERN_ROUTER_INSTANCE", "router-2".to_string()),
        ("TERN_ROUTER_LISTEN", format!("127.0.0.1:{port}")),
        ("TERN_ROUTER_AZ", "az-b".to_string()),
        // Routing metadata looked up on a miss only: every request until a redirect goes where
        // the metadata of its last lookup points.
        ("TERN_ROUTER_CACHE_MODE", "classic".to_string()),
        (
            "TERN_ROUTER_NATS_NKEY_FILE",
            tc.cluster
                .nkey_file("router")
                .expect("bus authentication is on")
                .display()
                .to_string(),
        ),
        (
            "TERN_ROUTER_CREDENTIALS_FILE",
            tc.dir
                .path()
                .join("secrets/api-credentials")
                .display()
                .to_string(),
        ),
    ];
    let mut router = tern_cluster::ServiceProcess::new(
        "router-2",
        bin_dir().join("tern-router"),
        env.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        tc.dir.path().join("logs").join("router-2.log"),
    );
    router.start().expect("start a second router");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(router.is_running(), "the second router exited");
        assert!(
            Instant::now() < deadline,
            "the second router does not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (router, format!("http://127.0.0.1:{port}"))
}

/// Freezes `node` for `stall` (SIGSTOP, then SIGCONT). Consistent reads through `c2` (a router
/// still routing to `node`) are sent in the last second of the stall and right after the wake-up:
/// they reach the woken node before or among the news of its successor. Returns when it stopped
/// and woke the node, and the reads under way.
async fn stall_and_probe(
    cluster: &mut Cluster,
    node: &str,
    stall: Duration,
    c2: &Client,
    state: &Arc<Mutex<Counter>>,
) -> (Instant, Instant, Vec<tokio::task::JoinHandle<Option<u64>>>) {
    let stopped_at = Instant::now();
    cluster.pause(node).unwrap();
    tokio::time::sleep(stall.saturating_sub(Duration::from_secs(1))).await;
    let probe = |n: usize| -> Vec<_> {
        (0..n)
            .map(|_| {
                let (c2, state) = (c2.clone(), state.clone());
                tokio::spawn(async move { checked_read(&c2, &state, stopped_at).await })
            })
            .collect()
    };
    let mut probes = Vec::new();
    for _ in 0..10 {
        probes.extend(probe(4));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!("--- SIGCONT {node}");
    let resumed_at = Instant::now();
    cluster.resume(node).unwrap();
    probes.extend(probe(8));
    (stopped_at, resumed_at, probes)
}

/// A reply the frozen leader sent just before SIGSTOP may still arrive a moment later: an
/// acknowledgement counts as served after the stop when its call began after the stop, or when it
/// arrived this long after it.
const IN_FLIGHT: Duration = Duration::from_millis(250);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_leader_is_replaced() {
    let _serial = SERIAL.lock().await;
    let mut tc = start_cluster(&[
        ("TERN_MEMDS_PARTITIONS_PER_TABLE", "1"),
        // The frozen replica stays a member: this is about leadership, not replacement.
        ("TERN_STORAGE_REPLACE_AFTER_MS", "600000"),
    ])
    .await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, COUNTER, None).await;
    let item = HashMap::from([
        ("pk".to_string(), V::S("counter".into())),
        ("n".to_string(), V::N("0".into())),
    ]);
    c.put_item()
        .table_name(COUNTER)
        .set_item(Some(item))
        .send()
        .await
        .expect("create the counter");

    tracing::info!("--- 4 incrementers and a reader");
    let state: Arc<Mutex<Counter>> = Arc::default();
    let t0 = Arc::new(Mutex::new(Instant::now()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(incrementer(
                c.clone(),
                state.clone(),
                t0.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    tasks.push(tokio::spawn(reader(
        c.clone(),
        state.clone(),
        t0.clone(),
        stop_rx.clone(),
    )));
    let load_start = Instant::now();

    // A second router, idle while the leader is stopped: its routing metadata (looked up before
    // the stop) still names the stopped leader when the leader wakes up, as any router's may.
    let (_router2, endpoint2) = second_router(&tc).await;
    let c2 = client(&endpoint2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while checked_read(&c2, &state, load_start).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the second router serves no reads"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = wait_single_leader(&tc.cluster, Duration::from_secs(10)).await;
    // Once more, so the second router has the current leader in its cache.
    checked_read(&c2, &state, load_start).await;
    let before = state.lock().unwrap().acks.len();
    assert!(before > 0, "no increment acknowledged before the stop");

    tracing::info!("--- SIGSTOP the leader {leader} for 10 s under writes");
    *t0.lock().unwrap() = Instant::now();
    let (stopped_at, resumed_at, probes) = stall_and_probe(
        &mut tc.cluster,
        &leader,
        Duration::from_secs(10),
        &c2,
        &state,
    )
    .await;
    let floor_at_wake = state.lock().unwrap().max_acked;

    // (c) Within 10 s: a single leader again (the woken node has heard of its successor, or leads
    // alone), and writes begun after the wake-up are acknowledged.
    let deadline = resumed_at + Duration::from_secs(10);
    let (mut single_leader, mut led) = (None, Vec::new());
    let mut write_after_wake = None;
    while Instant::now() < deadline && (single_leader.is_none() || write_after_wake.is_none()) {
        led = groups_led(&tc.cluster).await;
        let leaders: Vec<_> = led.iter().filter(|(_, n)| *n > 0.0).collect();
        if single_leader.is_none() && leaders.len() == 1 && leaders[0].1 == 1.0 {
            single_leader = Some((leaders[0].0.clone(), resumed_at.elapsed()));
        }
        if write_after_wake.is_none() {
            write_after_wake = state
                .lock()
                .unwrap()
                .acks
                .iter()
                .filter(|(s, _, _)| *s >= resumed_at)
                .map(|(_, a, _)| *a - resumed_at)
                .min();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut probed = Vec::new();
    for p in probes {
        probed.extend(p.await.unwrap());
    }
    println!(
        "stalled leader: {} consistent reads through the second router around the wake-up \
         answered (values {:?} to {:?}), {} of them below the {floor_at_wake} acknowledged by the \
         wake-up",
        probed.len(),
        probed.iter().min(),
        probed.iter().max(),
        probed.iter().filter(|n| **n < floor_at_wake).count()
    );
    let main_end = Instant::now();

    // The woken leader's stale reads are a race with the news of its successor: three more,
    // shorter stalls of whichever node leads give it more chances to show.
    for round in 1..=3 {
        let leader = wait_single_leader(&tc.cluster, Duration::from_secs(10)).await;
        // The second router learns where the leader is (a redirect, if it has to).
        let deadline = Instant::now() + Duration::from_secs(10);
        let since = *t0.lock().unwrap();
        while checked_read(&c2, &state, since).await.is_none() {
            assert!(
                Instant::now() < deadline,
                "the second router serves no reads"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!("--- stall {round}: SIGSTOP the leader {leader} for 4 s");
        *t0.lock().unwrap() = Instant::now();
        let (_, _, probes) = stall_and_probe(
            &mut tc.cluster,
            &leader,
            Duration::from_secs(4),
            &c2,
            &state,
        )
        .await;
        let floor_at_wake = state.lock().unwrap().max_acked;
        let mut probed = Vec::new();
        for p in probes {
            probed.extend(p.await.unwrap());
        }
        println!(
            "stalled leader: stall {round} of {leader}: {} reads through the second router \
             answered, {} of them below the {floor_at_wake} acknowledged by the wake-up",
            probed.len(),
            probed.iter().filter(|n| **n < floor_at_wake).count()
        );
    }
    tracing::info!("--- 3 s more load");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }

    tracing::info!("--- the counter is readable and writable after the load");
    let s = std::mem::take(&mut *state.lock().unwrap());
    let state = Arc::new(Mutex::new(Counter {
        max_acked: s.max_acked,
        ..Default::default()
    }));
    let final_read = checked_read(&c, &state, stopped_at).await;
    let final_write = match final_read {
        Some(n) => c
            .put_item()
            .table_name(COUNTER)
            .set_item(Some(HashMap::from([
                ("pk".to_string(), V::S("counter".into())),
                ("n".to_string(), V::N((n + 1).to_string())),
            ])))
            .condition_expression("n = :old")
            .expression_attribute_values(":old", V::N(n.to_string()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{:?}", error_of(&e))),
        None => Err("the final read failed".to_string()),
    };
    let stale_final = std::mem::take(&mut state.lock().unwrap().stale);

    // Figures.
    let mut ack_times: Vec<Instant> = s
        .acks
        .iter()
        .map(|(_, a, _)| *a)
        .filter(|a| *a < main_end)
        .collect();
    ack_times.sort();
    let mut edges = vec![load_start];
    edges.extend(ack_times.iter().copied());
    edges.push(main_end);
    let longest_gap = edges
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or_default();
    let served_after_stop = |started: Instant, answered: Instant| {
        started >= stopped_at || answered >= stopped_at + IN_FLIGHT
    };
    let first_write = s
        .acks
        .iter()
        .filter(|(st, a, _)| served_after_stop(*st, *a))
        .map(|(_, a, _)| *a - stopped_at)
        .min();
    let first_read = s
        .reads
        .iter()
        .filter(|(st, a)| served_after_stop(*st, *a))
        .map(|(_, a)| *a - stopped_at)
        .min();
    let during_stop = s
        .acks
        .iter()
        .filter(|(_, a, _)| *a >= stopped_at + IN_FLIGHT && *a < resumed_at)
        .count();
    let after_wake = s
        .acks
        .iter()
        .filter(|(_, a, _)| *a >= resumed_at && *a < main_end)
        .count();
    println!(
        "stalled leader: {leader} stopped for 10 s; first write acknowledged {first_write:?} and \
         first consistent read answered {first_read:?} after the stop; longest gap between \
         acknowledged writes {longest_gap:?}"
    );
    println!(
        "stalled leader: {} increments acknowledged in all ({before} before the stop, \
         {during_stop} while it was stopped, {after_wake} after it woke and before the shorter \
         stalls), {} conflicts, {} failed writes, {} consistent reads ({} failed), {} stale reads; \
         errors {:?}",
        s.acks.len(),
        s.conflicts,
        s.failed_writes,
        s.reads.len(),
        s.failed_reads,
        s.stale.len() + stale_final.len(),
        s.errors
    );
    println!(
        "stalled leader: after SIGCONT single leader {single_leader:?} (groups led {led:?}); first \
         write begun after the wake-up acknowledged {write_after_wake:?} after it; final read \
         {final_read:?} (max acknowledged {}), final write {final_write:?}",
        s.max_acked
    );

    let mut failures = Vec::new();
    match first_write {
        Some(d) if d <= Duration::from_secs(3) => {}
        other => failures.push(format!(
            "(a) no write was acknowledged within 3 s of stopping the leader: first after {other:?}"
        )),
    }
    let stale: Vec<_> = s.stale.iter().chain(&stale_final).collect();
    if !stale.is_empty() {
        failures.push(format!(
            "(b) {} consistent reads went back in time, e.g. {:?}",
            stale.len(),
            &stale[..stale.len().min(3)]
        ));
    }
    if single_leader.is_none() {
        failures.push(format!(
            "(c) not exactly one leader within 10 s of SIGCONT: groups led {led:?}"
        ));
    }
    if write_after_wake.is_none() {
        failures.push(
            "(c) no write begun after SIGCONT was acknowledged within 10 s of it".to_string(),
        );
    }
    if let Err(e) = &final_write {
        failures.push(format!("(c) the final increment failed: {e}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
