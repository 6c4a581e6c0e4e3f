//! Observability: every process exports Prometheus metrics on its own port, and one client
//! request is one trace across the router, MemDS and the storage replicas.

mod common;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue as V;
use common::*;

/// The samples of `name` whose labels contain every `label="value"` pair in `with`.
fn matching(text: &str, name: &str, with: &[&str]) -> Vec<f64> {
    samples(text, name)
        .into_iter()
        .filter(|(labels, _)| with.iter().all(|w| labels.contains(w)))
        .map(|(_, v)| v)
        .collect()
}

fn sum(text: &str, name: &str, with: &[&str]) -> f64 {
    matching(text, name, with).iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_exports_its_metrics() {
    let tc = start_cluster(&[]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, "observed", None).await;
    const PUTS: usize = 20;
    for i in 0..PUTS {
        c.put_item()
            .table_name("observed")
            .set_item(Some(HashMap::from([
                ("pk".to_string(), V::S(format!("k{i}"))),
                ("v".to_string(), V::S("x".repeat(100))),
            ])))
            .send()
            .await
            .expect("put");
    }
    let missing = c
        .get_item()
        .table_name("no-such-table")
        .key("pk", V::S("k".into()))
        .send()
        .await;
    assert!(missing.is_err());
    // Constant-work lookups of cache hits land in the background.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let mut texts = HashMap::new();
    for (name, url) in tc.cluster.metrics_endpoints() {
        let (status, text) = raw_get(url.trim_end_matches("/metrics"), "/metrics").await;
        assert_eq!(status, 200, "{name}: {url}");
        texts.insert(name, text);
    }
    let names: Vec<&str> = texts.keys().map(String::as_str).collect();
    for expected in [
        "router",
        "memds",
        "gac",
        "archiver",
        "storage-a",
        "storage-b",
        "storage-c",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    for (name, text) in &texts {
        let service = name.split('-').next().unwrap();
        assert_eq!(
            sum(text, "tern_build_info", &[&format!("service=\"{service}\"")]),
            1.0,
            "{name} says which service it is:\n{text}"
        );
    }

    let router = &texts["router"];
    let put = ["operation=\"PutItem\"", "table=\"observed\""];
    assert_eq!(sum(router, "tern_router_operations_total", &put), PUTS as f64, "{router}");
    assert_eq!(
        sum(router, "tern_router_operation_duration_seconds_count", &put),
        PUTS as f64
    );
    assert!(sum(router, "tern_router_operation_duration_seconds_bucket", &put) > 0.0);
    assert_eq!(
        sum(
            router,
            "tern_router_operation_errors_total",
            &[
                "operation=\"GetItem\"",
                "table=\"no-such-table\"",
                "error=\"ResourceNotFoundException\""
            ]
        ),
        1.0,
        "{router}"
    );
    assert!(metric(router, "tern_router_cache_hits_total").unwrap() >= (PUTS - 1) as f64);
    assert!(metric(router, "tern_router_memds_lookups_total").unwrap() >= PUTS as f64);
    assert!(sum(router, "tern_bus_message_bytes_count", &["direction=\"sent\""]) >= PUTS as f64);

    let memds = &texts["memds"];
    assert!(metric(memds, "tern_memds_lookups_total").unwrap() >= PUTS as f64, "{memds}");
    assert_eq!(metric(memds, "tern_memds_tables"), Some(1.0), "{memds}");
    assert_eq!(metric(memds, "tern_memds_storage_nodes_live"), Some(3.0));
    assert!(
        sum(memds, "tern_bus_requests_handled_seconds_count", &["lookup"]) >= PUTS as f64,
        "{memds}"
    );

    let storage: Vec<&String> = ["storage-a", "storage-b", "storage-c"]
        .iter()
        .map(|n| &texts[*n])
        .collect();
    let total = |name: &str| -> f64 { storage.iter().map(|t| sum(t, name, &[])).sum() };
    assert_eq!(total("tern_storage_commit_seconds_count"), PUTS as f64);
    assert_eq!(total("tern_storage_groups_led"), 2.0, "one leader per partition");
    assert!(total("tern_storage_leader_changes_total") >= 2.0);
    assert_eq!(total("tern_storage_replicas"), 6.0, "two partitions, three replicas each");
    for (node, text) in ["storage-a", "storage-b", "storage-c"].iter().zip(&storage) {
        // Every replica made every write durable: the table's creation and the puts.
        assert!(
            sum(text, "tern_storage_fsync_seconds_count", &[]) >= 1.0,
            "{node}:\n{text}"
        );
        assert!(sum(text, "tern_storage_fsync_batch_ops_sum", &[]) >= 1.0);
        assert!(sum(text, "tern_bus_message_bytes_count", &["direction=\"received\""]) > 0.0);
        assert!(
            samples(text, "tern_storage_fsync_seconds_count")
                .iter()
                .all(|(labels, _)| labels.contains(&format!("node=\"{node}\""))),
            "every series names its node"
        );
    }
    // Leaders report how far behind each follower is.
    let lag: usize = storage
        .iter()
        .map(|t| samples(t, "tern_storage_replication_lag_entries").len())
        .sum();
    assert_eq!(lag, 4, "two followers per leader of two partitions");
}
