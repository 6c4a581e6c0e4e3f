//! Power-off under a lock workload: conditional writes whose outcome depends on the state they
//! find (take a lock if free, release it if its owner), the workload a replica that re-applies or
//! skips a committed entry gets wrong for good. kill -9 of storage nodes throughout; at the end no
//! acknowledged write is lost, no two clients ever held one lock, and the three replicas hold
//! identical items at the same log position.
//!
//! `TERN_POWER_OFF_SECS` sets the soak length (CI runs the short default; soak with 60+).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as V;
use aws_sdk_dynamodb::Client;
use common::*;
use tokio::sync::watch;

const TABLE: &str = "locks";
const LOCKS: u64 = 6;
const CLIENTS: u64 = 8;

fn soak_secs() -> u64 {
    std::env::var("TERN_POWER_OFF_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// What the clients learned from acknowledged answers.
#[derive(Default)]
struct Ledger {
    /// lock → (client, token) that holds it, by acknowledged acquires and releases.
    holders: HashMap<u64, (u64, String)>,
    /// Tokens of acquires whose outcome was unknown and read back as not applied: they may
    /// still commit later (they were in the log), and then hold a lock nobody believes it holds.
    orphans: HashSet<String>,
    acquired: u64,
    released: u64,
    refused: u64,
    ambiguous: u64,
    violations: Vec<String>,
}

fn lock_key(lock: u64) -> V {
    V::S(format!("lock-{lock}"))
}

/// The token a consistent read finds in the lock, retried until a read succeeds.
async fn read_token(c: &Client, lock: u64) -> Option<String> {
    loop {
        let got = c
            .get_item()
            .table_name(TABLE)
            .key("pk", lock_key(lock))
            .consistent_read(true)
            .send()
            .await;
        match got {
            Ok(out) => {
                let item = out.item();
                let held = item.and_then(|i| i.get("state")) == Some(&V::S("held".into()));
                return item.filter(|_| held).and_then(|i| match i.get("token") {
                    Some(V::S(t)) => Some(t.clone()),
                    _ => None,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn conditional_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

async fn acquire(c: &Client, ledger: &Mutex<Ledger>, me: u64, lock: u64, token: String) -> bool {
    let item = HashMap::from([
        ("pk".to_string(), lock_key(lock)),
        ("token".to_string(), V::S(token.clone())),
        ("state".to_string(), V::S("held".into())),
        ("owner".to_string(), V::N(me.to_string())),
    ]);
    let r = c
        .put_item()
        .table_name(TABLE)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk) OR #s = :free")
        .expression_attribute_names("#s", "state")
        .expression_attribute_values(":free", V::S("free".into()))
        .send()
        .await;
    let held = match r {
        Ok(_) => true,
        Err(e) if e.as_service_error().is_some_and(conditional_failed) => {
            // Held by someone: perhaps by an acquire of ours that committed after we gave up on
            // it. Then it is ours, and we release it like any other.
            let found = read_token(c, lock).await;
            let mut l = ledger.lock().unwrap();
            l.refused += 1;
            match found {
                Some(t) if l.orphans.remove(&t) => {
                    adopt(&mut l, me, lock, t);
                    return true;
                }
                _ => return false,
            }
        }
        Err(_) => {
            ledger.lock().unwrap().ambiguous += 1;
            let found = read_token(c, lock).await;
            if found.as_ref() != Some(&token) {
                ledger.lock().unwrap().orphans.insert(token);
                return false;
            }
            true
        }
    };
    if held {
        let mut l = ledger.lock().unwrap();
        l.acquired += 1;
        adopt(&mut l, me, lock, token);
    }
    held
}

/// `me` holds `lock` with `token`: nobody else may.
fn adopt(l: &mut Ledger, me: u64, lock: u64, token: String) {
    if let Some((other, t)) = l.holders.get(&lock) {
        l.violations.push(format!(
            "client {me} took lock {lock} ({token}) while client {other} held it ({t})"
        ));
    }
    l.holders.insert(lock, (me, token));
}

async fn release(c: &Client, ledger: &Mutex<Ledger>, me: u64, lock: u64, token: &str) {
    // From the moment the release is sent the lock may be free: nobody claims it meanwhile.
    ledger.lock().unwrap().holders.remove(&lock);
    loop {
        // The lock item stays, marked free with who freed it, so the replicas compared at the
        // end hold every lock's last state, not an empty table.
        let freed = HashMap::from([
            ("pk".to_string(), lock_key(lock)),
            ("token".to_string(), V::S(format!("freed-{token}"))),
            ("state".to_string(), V::S("free".into())),
        ]);
        let r = c
            .put_item()
            .table_name(TABLE)
            .set_item(Some(freed))
            .condition_expression("#t = :t")
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":t", V::S(token.to_string()))
            .send()
            .await;
        let released = match r {
            Ok(_) => true,
            // A definite refusal: the lock was not ours any more, someone broke in.
            Err(e) if e.as_service_error().is_some_and(conditional_failed) => {
                let mut l = ledger.lock().unwrap();
                l.violations.push(format!(
                    "client {me} held lock {lock} ({token}), but its release found another token"
                ));
                true
            }
            Err(_) => {
                ledger.lock().unwrap().ambiguous += 1;
                read_token(c, lock).await.as_deref() != Some(token)
            }
        };
        if released {
            ledger.lock().unwrap().released += 1;
            return;
        }
    }
}

async fn client_loop(c: Client, me: u64, ledger: Arc<Mutex<Ledger>>, stop: watch::Receiver<bool>) {
    for seq in 0u64.. {
        if *stop.borrow() {
            return;
        }
        let lock = (me * 7 + seq * 3) % LOCKS;
        let token = format!("c{me}-{seq}");
        if acquire(&c, &ledger, me, lock, token.clone()).await {
            let token = ledger.lock().unwrap().holders[&lock].1.clone();
            tokio::time::sleep(Duration::from_millis(5)).await;
            release(&c, &ledger, me, lock, &token).await;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_workload_survives_power_off_with_identical_replicas() {
    let mut tc = start_cluster(&[("TERN_STORAGE_COMPACT_AFTER", "300")]).await;
    // No retries inside the SDK: a retried write whose first attempt took effect comes back as a
    // conditional failure, and the clients must see every unknown outcome to resolve it.
    let c = client(&tc.cluster.endpoint());
    let c = Client::from_conf(
        c.config()
            .to_builder()
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build(),
    );
    create_table(&c, TABLE, None).await;

    tracing::info!("--- {CLIENTS} clients take and release {LOCKS} locks");
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|me| tokio::spawn(client_loop(c.clone(), me, ledger.clone(), stop_rx.clone())))
        .collect();

    tracing::info!("--- kill -9 a storage node every few seconds, restart it");
    let nodes = ["storage-a", "storage-b", "storage-c"];
    let deadline = Instant::now() + Duration::from_secs(soak_secs());
    let mut kills = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let node = nodes[(kills * 5 + 1) % 3];
        tc.cluster.kill(node).unwrap();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(800)).await;
        tc.cluster.restart(node).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    for h in clients {
        h.await.unwrap();
    }

    let l = std::mem::take(&mut *ledger.lock().unwrap());
    println!(
        "locks: {kills} kills, {} acquires and {} releases acknowledged, {} refused, {} answers \
         unknown and read back, {} orphaned acquires",
        l.acquired,
        l.released,
        l.refused,
        l.ambiguous,
        l.orphans.len()
    );
    assert!(
        l.violations.is_empty(),
        "lock safety violated: {:?}",
        l.violations
    );
    assert!(l.acquired > 50, "too little work: {} acquires", l.acquired);
    assert!(
        l.refused > 0,
        "the workload never contended: no refused acquire"
    );

    tracing::info!("--- every lock holds what the acknowledged writes left in it");
    for lock in 0..LOCKS {
        let found = read_token(&c, lock).await;
        match (l.holders.get(&lock), found) {
            (Some((_, t)), Some(f)) if *t == f => {}
            (None, None) => {}
            (None, Some(f)) if l.orphans.contains(&f) => {}
            (held, found) => {
                panic!("lock {lock}: the clients hold {held:?}, the table has {found:?}")
            }
        }
    }

    tracing::info!("--- the three replicas hold identical items");
    compare_replicas(&tc, TABLE).await;
}
