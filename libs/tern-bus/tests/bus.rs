//! The bus against a real nats-server: typed calls, typed errors, timeouts, queue groups, trace
//! context in headers, and calls as tower services.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tern_bus::{Bus, BusError};
use tern_cluster::NatsServer;
use tern_model::{ApiError, ErrorCode};
use tern_proto::memds::{LookupRequest, TableInfo, TableReply};
use tower::{Service, ServiceBuilder, ServiceExt};
use tracing::Instrument;

struct Env {
    _nats: NatsServer,
    _dir: tempfile::TempDir,
    url: String,
}

fn nats() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&dir.path().join("js"), &dir.path().join("nats.log")).unwrap();
    Env {
        url: nats.url(),
        _nats: nats,
        _dir: dir,
    }
}

/// Serves `subject` answering lookups of "t" and failing others with ResourceNotFound.
async fn serve_lookups(bus: &Bus, subject: &str, queue: Option<&str>, hits: Arc<AtomicUsize>) {
    bus.serve(subject, queue, move |req: LookupRequest| {
        hits.fetch_add(1, Ordering::SeqCst);
        async move {
            if req.table_name == "t" {
                Ok(TableReply {
                    table: Some(TableInfo {
                        name: "t".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            } else {
                Err(BusError::Api(ApiError::new(
                    ErrorCode::ResourceNotFound,
                    "Requested resource not found",
                )))
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn typed_calls_and_errors_cross_the_bus() {
    let env = nats();
    let server = Bus::connect(&env.url, "server").await.unwrap();
    let client = Bus::connect(&env.url, "client").await.unwrap();
    serve_lookups(&server, "test.lookup", None, Arc::default()).await;

    let reply: TableReply = client
        .call(
            "test.lookup",
            &LookupRequest {
                table_name: "t".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(reply.table.unwrap().name, "t");

    let err = client
        .call::<_, TableReply>(
            "test.lookup",
            &LookupRequest {
                table_name: "x".into(),
            },
        )
        .await
        .unwrap_err();
    match err {
        BusError::Api(e) => {
            assert_eq!(e.code, ErrorCode::ResourceNotFound);
            assert_eq!(e.message, "Requested resource not found");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn redirects_timeouts_and_missing_services_are_typed() {
    let env = nats();
    let bus = Bus::connect(&env.url, "t").await.unwrap();
    bus.serve("test.redirect", None, |_: LookupRequest| async {
        Err::<TableReply, _>(BusError::Redirect("storage-b".into()))
    })
    .await
    .unwrap();
    bus.serve("test.slow", None, |_: LookupRequest| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(TableReply::default())
    })
    .await
    .unwrap();

    let err = bus
        .call::<_, TableReply>("test.redirect", &LookupRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BusError::Redirect(h) if h == "storage-b"),
        "{err:?}"
    );
    assert!(err.retryable());

    let short = bus.with_timeout(Duration::from_millis(200));
    let err = short
        .call::<_, TableReply>("test.slow", &LookupRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "{err:?}");

    let err = bus
        .call::<_, TableReply>("test.nobody", &LookupRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::NoResponders(_)), "{err:?}");
}

#[tokio::test]
async fn queue_group_spreads_requests_over_instances() {
    let env = nats();
    let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let s1 = Bus::connect(&env.url, "s1").await.unwrap();
    let s2 = Bus::connect(&env.url, "s2").await.unwrap();
    serve_lookups(&s1, "test.q", Some("fleet"), a.clone()).await;
    serve_lookups(&s2, "test.q", Some("fleet"), b.clone()).await;
    let client = Bus::connect(&env.url, "c").await.unwrap();
    for _ in 0..200 {
        let _: TableReply = client
            .call(
                "test.q",
                &LookupRequest {
                    table_name: "t".into(),
                },
            )
            .await
            .unwrap();
    }
    let (a, b) = (a.load(Ordering::SeqCst), b.load(Ordering::SeqCst));
    assert_eq!(
        a + b,
        200,
        "each request is answered by exactly one instance"
    );
    assert!(a > 20 && b > 20, "both instances take a share: {a} / {b}");
}

#[tokio::test]
async fn calls_are_tower_services() {
    let env = nats();
    let bus = Bus::connect(&env.url, "t").await.unwrap();
    serve_lookups(&bus, "test.svc", None, Arc::default()).await;
    let mut svc = ServiceBuilder::new()
        .timeout(Duration::from_secs(1))
        .service(bus.service::<LookupRequest, TableReply>("test.svc"));
    let reply = svc
        .ready()
        .await
        .unwrap()
        .call(LookupRequest {
            table_name: "t".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.table.unwrap().name, "t");
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(LookupRequest {
            table_name: "x".into(),
        })
        .await
        .unwrap_err();
    let err = err.downcast::<BusError>().expect("a bus error");
    assert!(matches!(*err, BusError::Api(ref e) if e.code == ErrorCode::ResourceNotFound));
}

#[tokio::test]
async fn trace_context_travels_in_headers() {
    let _telemetry = tern_telemetry::init_with("bus-test", tern_telemetry::Spans::ContextOnly);
    let env = nats();
    let bus = Bus::connect(&env.url, "t").await.unwrap();
    let mut raw = bus.client().subscribe("test.trace").await.unwrap();
    bus.client().flush().await.unwrap();
    let caller = bus.clone();
    let call = tokio::spawn(
        async move {
            let _ = caller
                .with_timeout(Duration::from_millis(300))
                .call::<_, TableReply>("test.trace", &LookupRequest::default())
                .await;
        }
        .instrument(tracing::info_span!("client request")),
    );
    let msg = tokio::time::timeout(Duration::from_secs(5), raw.next())
        .await
        .unwrap()
        .unwrap();
    let headers = msg.headers.expect("headers");
    let tp = headers
        .get("traceparent")
        .expect("traceparent header")
        .as_str()
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "W3C traceparent: {tp}");
    assert_eq!(parts[1].len(), 32);
    assert_ne!(parts[1], "0".repeat(32));
    call.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_handles_a_bounded_number_of_requests_at_once() {
    let env = nats();
    let server = Bus::connect(&env.url, "server").await.unwrap();
    let client = Bus::connect(&env.url, "client").await.unwrap();
    let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (r, p, g) = (running.clone(), peak.clone(), gate.clone());
    server
        .serve("bounded", None, move |_: LookupRequest| {
            let (r, p, g) = (r.clone(), p.clone(), g.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                // Held until the test opens the gate.
                let _ = g.acquire().await.map(|permit| permit.forget());
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(tern_proto::Empty {})
            }
        })
        .await
        .unwrap();
    let sent = tern_bus::MAX_IN_FLIGHT + 200;
    for _ in 0..sent {
        client
            .publish("bounded", &LookupRequest::default())
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while running.load(Ordering::SeqCst) < tern_bus::MAX_IN_FLIGHT {
        assert!(
            std::time::Instant::now() < deadline,
            "handlers never filled up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(peak.load(Ordering::SeqCst), tern_bus::MAX_IN_FLIGHT);
    // Releasing them lets the rest through.
    gate.add_permits(sent);
    while running.load(Ordering::SeqCst) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "handlers never drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
