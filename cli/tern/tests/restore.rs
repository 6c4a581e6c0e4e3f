//! Point-in-time restore through the AWS SDK: write, note the time, write more and delete some,
//! restore to the noted time into a new table, and find exactly the earlier contents; with
//! DynamoDB's errors for what cannot be restored.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_dynamodb::primitives::DateTime;
use aws_sdk_dynamodb::types::{AttributeValue as V, PointInTimeRecoverySpecification, TableStatus};
use aws_sdk_dynamodb::Client;
use common::*;

const TABLE: &str = "orders";

async fn put(c: &Client, table: &str, pk: &str, v: &str) {
    c.put_item()
        .table_name(table)
        .item("pk", V::S(pk.into()))
        .item("v", V::S(v.into()))
        .send()
        .await
        .expect("put");
}

/// Every item of a table: pk → v (consistent scan, all pages).
async fn contents(c: &Client, table: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
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
            let s = |n: &str| match item.get(n) {
                Some(V::S(s)) => s.clone(),
                other => panic!("{n}: {other:?}"),
            };
            out.insert(s("pk"), s("v"));
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return out;
        }
    }
}

async fn wait_table_active(c: &Client, table: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let d = c
            .describe_table()
            .table_name(table)
            .send()
            .await
            .expect("describe");
        if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{table} not ACTIVE within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn enable_pitr(c: &Client, table: &str) {
    let r = c
        .update_continuous_backups()
        .table_name(table)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("enable point-in-time recovery");
    let pitr = r
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .expect("description");
    assert_eq!(
        pitr.point_in_time_recovery_status().map(|s| s.as_str()),
        Some("ENABLED")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_a_table_to_a_point_in_time() {
    // A snapshot of the reference after (nearly) every segment: restores start from the newest
    // one taken before the moment, and the later ones must not be used.
    let mut tc = start_cluster(&[
        ("TERN_ARCHIVER_SEGMENT_AGE_MS", "300"),
        ("TERN_ARCHIVER_SNAPSHOT_BYTES", "1"),
    ])
    .await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, TABLE, None).await;
    create_table(&c, "no-pitr", None).await;
    enable_pitr(&c, TABLE).await;
    let d = c
        .describe_continuous_backups()
        .table_name(TABLE)
        .send()
        .await
        .expect("describe continuous backups");
    let desc = d.continuous_backups_description().unwrap();
    assert_eq!(desc.continuous_backups_status().as_str(), "ENABLED");
    let pitr = desc.point_in_time_recovery_description().unwrap();
    assert!(pitr.earliest_restorable_date_time().is_some());
    assert!(pitr.latest_restorable_date_time().is_some());

    println!("--- 100 items, then the moment, then overwrites, new items and deletes");
    for i in 0..100 {
        put(&c, TABLE, &format!("k{i}"), &format!("before-{i}")).await;
    }
    let expected = contents(&c, TABLE).await;
    assert_eq!(expected.len(), 100);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let moment = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..20 {
        put(&c, TABLE, &format!("k{i}"), &format!("after-{i}")).await;
    }
    for i in 100..150 {
        put(&c, TABLE, &format!("k{i}"), "new").await;
    }
    for i in 50..60 {
        c.delete_item()
            .table_name(TABLE)
            .key("pk", V::S(format!("k{i}")))
            .send()
            .await
            .expect("delete");
    }
    let now_contents = contents(&c, TABLE).await;
    assert_ne!(now_contents, expected);

    let r = c
        .restore_table_to_point_in_time()
        .source_table_name(TABLE)
        .target_table_name("orders-then")
        .restore_date_time(DateTime::from(moment))
        .send()
        .await
        .expect("restore to the moment");
    let t = r.table_description().expect("table description");
    assert_eq!(t.table_name(), Some("orders-then"));
    assert!(t.restore_summary().is_some_and(|s| s.restore_in_progress()));
    wait_table_active(&c, "orders-then", Duration::from_secs(60)).await;
    assert_eq!(
        contents(&c, "orders-then").await,
        expected,
        "restored to the moment"
    );
    let base = tc
        .cluster
        .metrics_base("archiver")
        .expect("archiver metrics");
    let metrics = raw_get(&base, "/metrics").await.1;
    let started_from_snapshot: f64 =
        samples(&metrics, "tern_archiver_restore_snapshot_starts_total")
            .iter()
            .map(|(_, v)| v)
            .sum();
    assert!(
        started_from_snapshot >= 1.0,
        "the restore should start from an archived snapshot taken before the moment"
    );

    println!(
        "--- a restore whose archiver is killed with -9 at once is carried on after its restart"
    );
    c.restore_table_to_point_in_time()
        .source_table_name(TABLE)
        .target_table_name("orders-resumed")
        .restore_date_time(DateTime::from(moment))
        .send()
        .await
        .expect("restore to the moment");
    tc.cluster.kill("archiver").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tc.cluster.restart("archiver").await.unwrap();
    wait_table_active(&c, "orders-resumed", Duration::from_secs(60)).await;
    assert_eq!(
        contents(&c, "orders-resumed").await,
        expected,
        "restored after a restart"
    );

    println!("--- the latest restorable time gives what the table holds now");
    c.restore_table_to_point_in_time()
        .source_table_name(TABLE)
        .target_table_name("orders-now")
        .use_latest_restorable_time(true)
        .send()
        .await
        .expect("restore to the latest time");
    wait_table_active(&c, "orders-now", Duration::from_secs(60)).await;
    assert_eq!(contents(&c, "orders-now").await, now_contents);
    // The restored table takes writes like any other.
    put(&c, "orders-now", "k0", "written after the restore").await;

    println!("--- what cannot be restored");
    let again = c
        .restore_table_to_point_in_time()
        .source_table_name(TABLE)
        .target_table_name("orders-then")
        .use_latest_restorable_time(true)
        .send()
        .await;
    assert_eq!(
        error_of(&again.expect_err("should fail")).0,
        "TableAlreadyExistsException"
    );
    let missing = c
        .restore_table_to_point_in_time()
        .source_table_name("nowhere")
        .target_table_name("target-1")
        .use_latest_restorable_time(true)
        .send()
        .await;
    assert_eq!(
        error_of(&missing.expect_err("should fail")).0,
        "TableNotFoundException"
    );
    let disabled = c
        .restore_table_to_point_in_time()
        .source_table_name("no-pitr")
        .target_table_name("target-2")
        .use_latest_restorable_time(true)
        .send()
        .await;
    assert_eq!(
        error_of(&disabled.expect_err("should fail")).0,
        "PointInTimeRecoveryUnavailableException"
    );
    let future = c
        .restore_table_to_point_in_time()
        .source_table_name(TABLE)
        .target_table_name("target-3")
        .restore_date_time(DateTime::from(
            SystemTime::now() + Duration::from_secs(3600),
        ))
        .send()
        .await;
    assert_eq!(
        error_of(&future.expect_err("should fail")).0,
        "InvalidRestoreTimeException"
    );
    let before = c
        .restore_table_to_point_in_time()
        .source_table_name(TABLE)
        .target_table_name("target-4")
        .restore_date_time(DateTime::from_secs(1_000_000_000))
        .send()
        .await;
    assert_eq!(
        error_of(&before.expect_err("should fail")).0,
        "InvalidRestoreTimeException"
    );
}

async fn wait_backup_available(c: &Client, arn: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let d = c
            .describe_backup()
            .backup_arn(arn)
            .send()
            .await
            .expect("describe backup");
        let status = d
            .backup_description()
            .and_then(|b| b.backup_details())
            .map(|b| b.backup_status().as_str().to_string());
        if status.as_deref() == Some("AVAILABLE") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backup {arn} is {status:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CreateBackup, then more writes and deletes, then the source table deleted: the table restored
/// from the backup holds exactly what the source held when the backup was made.
#[tokio::test(flavor = "multi_thread")]
async fn restores_a_table_from_an_on_demand_backup() {
    let tc = start_cluster(&[("TERN_ARCHIVER_SEGMENT_AGE_MS", "300")]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, TABLE, None).await;
    for i in 0..60 {
        put(&c, TABLE, &format!("k{i}"), &format!("backed-up-{i}")).await;
    }
    let expected = contents(&c, TABLE).await;
    let b = c
        .create_backup()
        .table_name(TABLE)
        .backup_name("nightly")
        .send()
        .await
        .expect("create backup");
    let details = b.backup_details().expect("details");
    let arn = details.backup_arn().to_string();
    assert_eq!(details.backup_name(), "nightly");
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..30 {
        put(&c, TABLE, &format!("k{i}"), "later").await;
    }
    for i in 30..40 {
        c.delete_item()
            .table_name(TABLE)
            .key("pk", V::S(format!("k{i}")))
            .send()
            .await
            .expect("delete");
    }
    wait_backup_available(&c, &arn, Duration::from_secs(30)).await;
    let listed = c
        .list_backups()
        .table_name(TABLE)
        .send()
        .await
        .expect("list backups");
    let arns: Vec<&str> = listed
        .backup_summaries()
        .iter()
        .filter_map(|s| s.backup_arn())
        .collect();
    assert_eq!(arns, vec![arn.as_str()]);
    let d = c
        .describe_backup()
        .backup_arn(&arn)
        .send()
        .await
        .expect("describe backup");
    let source = d
        .backup_description()
        .and_then(|b| b.source_table_details())
        .expect("source");
    assert_eq!(source.table_name(), TABLE);

    println!("--- the source table deleted, then restored from its backup");
    c.delete_table()
        .table_name(TABLE)
        .send()
        .await
        .expect("delete the source");
    let r = c
        .restore_table_from_backup()
        .backup_arn(&arn)
        .target_table_name("orders-from-backup")
        .send()
        .await
        .expect("restore from the backup");
    let summary = r
        .table_description()
        .and_then(|t| t.restore_summary())
        .expect("summary");
    assert_eq!(summary.source_backup_arn(), Some(arn.as_str()));
    wait_table_active(&c, "orders-from-backup", Duration::from_secs(60)).await;
    assert_eq!(contents(&c, "orders-from-backup").await, expected);

    println!("--- a deleted backup is gone");
    let deleted = c
        .delete_backup()
        .backup_arn(&arn)
        .send()
        .await
        .expect("delete backup");
    let status = deleted
        .backup_description()
        .and_then(|b| b.backup_details())
        .map(|b| b.backup_status().as_str().to_string());
    assert_eq!(status.as_deref(), Some("DELETED"));
    let gone = c.describe_backup().backup_arn(&arn).send().await;
    assert_eq!(
        error_of(&gone.expect_err("should fail")).0,
        "BackupNotFoundException"
    );
    let restore_gone = c
        .restore_table_from_backup()
        .backup_arn(&arn)
        .target_table_name("orders-again")
        .send()
        .await;
    assert_eq!(
        error_of(&restore_gone.expect_err("should fail")).0,
        "BackupNotFoundException"
    );
    let missing_table = c
        .create_backup()
        .table_name("nowhere")
        .backup_name("b1x")
        .send()
        .await;
    assert_eq!(
        error_of(&missing_table.expect_err("should fail")).0,
        "TableNotFoundException"
    );
}
