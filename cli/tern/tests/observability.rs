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
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for (name, text) in &texts {
        let service = name.split('-').next().unwrap();
        assert_eq!(
            sum(
                text,
                "tern_build_info",
                &[&format!("service=\"{service}\"")]
            ),
            1.0,
            "{name} says which service it is:\n{text}"
        );
    }

    let router = &texts["router"];
    let put = ["operation=\"PutItem\"", "table=\"observed\""];
    assert_eq!(
        sum(router, "tern_router_operations_total", &put),
        PUTS as f64,
        "{router}"
    );
    assert_eq!(
        sum(router, "tern_router_operation_duration_seconds_count", &put),
        PUTS as f64
    );
    assert!(
        sum(
            router,
            "tern_router_operation_duration_seconds_bucket",
            &put
        ) > 0.0
    );
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
    assert!(
        sum(
            router,
            "tern_bus_message_bytes_count",
            &["direction=\"sent\""]
        ) >= PUTS as f64
    );

    let memds = &texts["memds"];
    assert!(
        metric(memds, "tern_memds_lookups_total").unwrap() >= PUTS as f64,
        "{memds}"
    );
    assert_eq!(metric(memds, "tern_memds_tables"), Some(1.0), "{memds}");
    assert_eq!(metric(memds, "tern_memds_storage_nodes_live"), Some(3.0));
    assert!(
        sum(
            memds,
            "tern_bus_requests_handled_seconds_count",
            &["lookup"]
        ) >= PUTS as f64,
        "{memds}"
    );

    let storage: Vec<&String> = ["storage-a", "storage-b", "storage-c"]
        .iter()
        .map(|n| &texts[*n])
        .collect();
    let total = |name: &str| -> f64 { storage.iter().map(|t| sum(t, name, &[])).sum() };
    assert_eq!(total("tern_storage_commit_seconds_count"), PUTS as f64);
    assert_eq!(
        total("tern_storage_groups_led"),
        2.0,
        "one leader per partition"
    );
    assert!(total("tern_storage_leader_changes_total") >= 2.0);
    assert_eq!(
        total("tern_storage_replicas"),
        6.0,
        "two partitions, three replicas each"
    );
    for (node, text) in ["storage-a", "storage-b", "storage-c"].iter().zip(&storage) {
        // Every replica made every write durable: the table's creation and the puts.
        assert!(
            sum(text, "tern_storage_fsync_seconds_count", &[]) >= 1.0,
            "{node}:\n{text}"
        );
        assert!(sum(text, "tern_storage_fsync_batch_ops_sum", &[]) >= 1.0);
        assert!(
            sum(
                text,
                "tern_bus_message_bytes_count",
                &["direction=\"received\""]
            ) > 0.0
        );
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

    // The control message that empties the routers' caches (the constant-work experiment's).
    let misses = metric(router, "tern_router_cache_misses_total").unwrap();
    let flushed: tern_proto::memds::CacheFlushed = tc
        .cluster
        .bus()
        .call(
            tern_proto::subjects::ROUTER_FLUSH_CACHE,
            &tern_proto::Empty {},
        )
        .await
        .expect("the router answers a flush");
    assert_eq!(flushed.entries, 1, "the router had cached one table");
    c.put_item()
        .table_name("observed")
        .item("pk", V::S("after-flush".into()))
        .send()
        .await
        .expect("put");
    let (_, router) = raw_get(&tc.cluster.metrics_base("router").unwrap(), "/metrics").await;
    assert_eq!(
        metric(&router, "tern_router_cache_misses_total"),
        Some(misses + 1.0),
        "the first request after the flush misses"
    );
}

mod otlp {
    //! An OTLP/HTTP receiver (protobuf), as a collector such as Jaeger runs one: it keeps every
    //! span it is sent.

    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use prost::Message;

    #[derive(Clone, Debug)]
    pub struct Span {
        pub service: String,
        pub name: String,
        pub trace_id: Vec<u8>,
        pub span_id: Vec<u8>,
        pub parent_span_id: Vec<u8>,
        pub links: Vec<Vec<u8>>,
        pub attributes: Vec<(String, String)>,
    }

    impl Span {
        pub fn attr(&self, key: &str) -> Option<&str> {
            self.attributes
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }
    }

    fn text(kvs: &[KeyValue]) -> Vec<(String, String)> {
        kvs.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    Some(Value::IntValue(i)) => i.to_string(),
                    Some(Value::BoolValue(b)) => b.to_string(),
                    Some(Value::DoubleValue(d)) => d.to_string(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    /// Starts the receiver; returns its base URL and the spans it has received.
    pub async fn start() -> (String, Arc<Mutex<Vec<Span>>>) {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut kept = kept.lock().unwrap();
                    for rs in req.resource_spans {
                        let resource = rs.resource.map(|r| text(&r.attributes)).unwrap_or_default();
                        let service = resource
                            .iter()
                            .find(|(k, _)| k == "service.name")
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for s in ss.spans {
                                kept.push(Span {
                                    service: service.clone(),
                                    name: s.name,
                                    trace_id: s.trace_id,
                                    span_id: s.span_id,
                                    parent_span_id: s.parent_span_id,
                                    links: s.links.into_iter().map(|l| l.span_id).collect(),
                                    attributes: text(&s.attributes),
                                });
                            }
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, spans)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_write_is_one_trace_across_router_memds_and_three_replicas() {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    let (url, received) = otlp::start().await;
    let tc = start_cluster(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, "traced", None).await;
    // The router's first request to the table misses its routing cache: MemDS answers within
    // the request's trace.
    c.put_item()
        .table_name("traced")
        .item("pk", V::S("k".into()))
        .item("v", V::S("x".into()))
        .send()
        .await
        .expect("put");

    let deadline = Instant::now() + Duration::from_secs(20);
    let (trace, spans) = loop {
        let all = received.lock().unwrap().clone();
        let put = all.iter().find(|s| {
            s.service == "tern-router"
                && s.name == "PutItem"
                && s.attr("aws.dynamodb.table_names") == Some("traced")
        });
        if let Some(put) = put {
            let trace: Vec<otlp::Span> = all
                .iter()
                .filter(|s| s.trace_id == put.trace_id)
                .cloned()
                .collect();
            let nodes = |name: &str| -> HashSet<String> {
                trace
                    .iter()
                    .filter(|s| s.name == name)
                    .filter_map(|s| s.attr("tern.node").map(str::to_string))
                    .collect()
            };
            if nodes("storage.log.append").len() == 3 && nodes("storage.apply").len() == 3 {
                break (put.clone(), trace);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete trace of the PutItem; received {} spans: {:#?}",
            all.len(),
            all.iter()
                .filter(|s| put.is_some_and(|p| p.trace_id == s.trace_id))
                .map(|s| (&s.service, &s.name, s.attr("tern.node")))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The router's span is the root and says what DynamoDB call it is.
    assert!(
        trace.parent_span_id.is_empty(),
        "the router's span is the root"
    );
    assert_eq!(trace.attr("rpc.system"), Some("aws-api"));
    assert_eq!(trace.attr("rpc.method"), Some("PutItem"));
    assert_eq!(trace.attr("db.operation.name"), Some("PutItem"));
    assert_eq!(trace.attr("db.system.name"), Some("aws.dynamodb"));
    let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    for s in ["tern-router", "tern-memds", "tern-storage"] {
        assert!(
            services.contains(s),
            "{s} missing from the trace: {services:?}"
        );
    }
    let lookup = spans
        .iter()
        .find(|s| s.service == "tern-memds")
        .expect("a MemDS span");
    assert_eq!(lookup.attr("messaging.system"), Some("nats"));
    // Exactly one leader replicated it; each replica made it durable and applied it, and says
    // where it is and in which role.
    let replicate: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "storage.replicate")
        .collect();
    assert_eq!(replicate.len(), 1, "{replicate:#?}");
    let leader = replicate[0].attr("tern.node").unwrap().to_string();
    for name in ["storage.log.append", "storage.apply"] {
        let on: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(on.len(), 3, "{name} on each replica once: {on:#?}");
        for s in on {
            let node = s.attr("tern.node").unwrap();
            let role = if node == leader { "leader" } else { "follower" };
            assert_eq!(s.attr("tern.replica.role"), Some(role), "{s:#?}");
            assert!(s.attr("tern.az").is_some_and(|z| z.starts_with("az-")));
            assert!(s.attr("tern.partition").is_some());
        }
    }
    // A second write finds the route cached: its lookup travels in a background batch, whose
    // span links to the request (and is its child, being the batch's first sampled request).
    c.put_item()
        .table_name("traced")
        .item("pk", V::S("k2".into()))
        .send()
        .await
        .expect("put");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = received.lock().unwrap().clone();
        let second = all.iter().find(|s| {
            s.name == "PutItem"
                && s.attr("aws.dynamodb.table_names") == Some("traced")
                && s.trace_id != trace.trace_id
        });
        let batch = second.and_then(|p| {
            all.iter()
                .find(|s| s.name == "memds.lookup_batch" && s.links.contains(&p.span_id))
        });
        let served = batch.and_then(|b| {
            all.iter()
                .find(|s| s.service == "tern-memds" && s.parent_span_id == b.span_id)
        });
        if let (Some(p), Some(b), Some(_)) = (second, batch, served) {
            assert_eq!(b.trace_id, p.trace_id);
            assert_eq!(b.parent_span_id, p.span_id);
            assert_eq!(b.service, "tern-router");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no lookup batch linked to the second PutItem"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A caller's trace context decides: its sampled flag joins the request to the caller's
    // trace; a cleared flag leaves the request untraced (no span of it is exported anywhere).
    let endpoint = tc.cluster.endpoint();
    let put = |pk: &str| format!(r#"{{"TableName":"traced","Item":{{"pk":{{"S":"{pk}"}}}}}}"#);
    let target = Some("DynamoDB_20120810.PutItem");
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    for (pk, flags) in [("sampled-by-caller", "01"), ("unsampled-by-caller", "00")] {
        let body = put(pk);
        let mut headers = dev_signed(&endpoint, target, body.as_bytes());
        headers.push((
            "traceparent".into(),
            format!("00-{caller_trace}-00f067aa0ba902b7-{flags}"),
        ));
        let (status, _) = send_raw(&endpoint, &headers, body.as_bytes()).await;
        assert_eq!(status, 200);
    }
    let caller_id = (0..16)
        .map(|i| u8::from_str_radix(&caller_trace[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = received.lock().unwrap().clone();
        let joined: Vec<_> = all.iter().filter(|s| s.trace_id == caller_id).collect();
        let storage_nodes: HashSet<_> = joined
            .iter()
            .filter(|s| s.name == "storage.log.append")
            .filter_map(|s| s.attr("tern.node"))
            .collect();
        if joined.iter().any(|s| s.name == "PutItem") && storage_nodes.len() == 3 {
            let root = joined.iter().find(|s| s.name == "PutItem").unwrap();
            assert_eq!(
                root.parent_span_id,
                vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the caller's sampled trace was not continued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give the unsampled request's spans, had there been any, time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = received.lock().unwrap().clone();
    let puts = all
        .iter()
        .filter(|s| s.name == "PutItem" && s.attr("aws.dynamodb.table_names") == Some("traced"))
        .count();
    assert_eq!(puts, 3, "the unsampled request made no span");

    // Every span but the root hangs off another span of the same trace.
    let ids: HashSet<&Vec<u8>> = spans.iter().map(|s| &s.span_id).collect();
    for s in &spans {
        if s.span_id != trace.span_id {
            assert!(
                ids.contains(&s.parent_span_id),
                "{} of {} has a parent outside the trace",
                s.name,
                s.service
            );
        }
    }
}
