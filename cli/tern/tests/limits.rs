//! Bad input gets DynamoDB's error and the router keeps serving; the router bounds the work it
//! takes on (requests and bodies in flight, request time) and says so with DynamoDB's errors.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as V;
use common::*;

/// The tests here each run a cluster: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serves(c: &aws_sdk_dynamodb::Client) {
    c.put_item()
        .table_name("limits")
        .item("pk", V::S("still".into()))
        .send()
        .await
        .expect("the router serves after bad input");
    let out = c
        .get_item()
        .table_name("limits")
        .key("pk", V::S("still".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("read");
    assert!(out.item().is_some());
}

/// Headers announcing `len` bytes, then a few bytes of body: the answer comes from the headers.
async fn announce(endpoint: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.0\r\n\
         X-Amz-Target: DynamoDB_20120810.PutItem\r\nContent-Length: {len}\r\n\r\n{{\"TableName\":"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_dynamodb_errors_and_the_router_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let t = start_cluster(&[]).await;
    let endpoint = t.cluster.endpoint();
    let c = client(&endpoint);
    create_table(&c, "limits", None).await;
    let put = || {
        c.put_item()
            .table_name("limits")
            .item("pk", V::S("k".into()))
    };

    // The request that once killed the router: 20,000 NOTs (80 KB).
    let nots = format!("{}attribute_exists(pk)", "NOT ".repeat(20_000));
    let e = put().condition_expression(&nots).send().await.unwrap_err();
    let (code, msg) = error_of(&e);
    assert_eq!(code, "ValidationException");
    assert!(msg.contains("Expression size has exceeded"), "{msg}");
    serves(&c).await;

    // Within 4 KB but nested 101 deep.
    let deep = format!("{}attribute_exists(pk){}", "(".repeat(101), ")".repeat(101));
    let (code, msg) = error_of(&put().condition_expression(&deep).send().await.unwrap_err());
    assert_eq!(code, "ValidationException");
    assert!(msg.contains("nested too deeply"), "{msg}");

    // 301 operators: 151 comparisons joined by 150 ANDs.
    let many = vec!["pk = pk"; 151].join(" AND ");
    assert!(many.len() < 4096);
    let (code, msg) = error_of(&put().condition_expression(&many).send().await.unwrap_err());
    assert_eq!(code, "ValidationException");
    assert!(msg.contains("too many operators"), "{msg}");
    // 300 are fine.
    let ok = vec!["pk = pk"; 150].join(" AND ");
    assert!(
        put().condition_expression(&ok).send().await.is_err(),
        "pk = pk fails on an absent item: ConditionalCheckFailed, not a limit"
    );

    // Substitution maps as DynamoDB checks them.
    let (code, msg) = error_of(
        &put()
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_names(Some(Default::default()))
            .send()
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code.as_str(), msg.as_str()),
        (
            "ValidationException",
            "ExpressionAttributeNames must not be empty"
        )
    );
    let (code, msg) = error_of(
        &put()
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values("v", V::S("x".into()))
            .send()
            .await
            .unwrap_err(),
    );
    assert_eq!(code, "ValidationException");
    assert_eq!(
        msg,
        "ExpressionAttributeValues contains invalid key: Syntax error; key: \"v\""
    );
    let long = format!("#{}", "n".repeat(255));
    let (code, msg) = error_of(
        &put()
            .condition_expression(format!("attribute_exists({long})"))
            .expression_attribute_names(&long, "pk")
            .send()
            .await
            .unwrap_err(),
    );
    assert_eq!(code, "ValidationException");
    assert!(msg.contains("longer than 255 bytes"), "{msg}");

    // JSON nested past any parser's patience, and an item nested past DynamoDB's 32 levels.
    let deep_json = format!(
        "{{\"TableName\":\"limits\",\"Item\":{}{}}}",
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    let (status, body) = raw_post(&endpoint, Some("DynamoDB_20120810.PutItem"), &deep_json).await;
    assert_eq!(status, 400, "{body}");
    let mut item = serde_json::json!({"S": "leaf"});
    for _ in 0..40 {
        item = serde_json::json!({"M": {"x": item}});
    }
    let req = serde_json::json!({"TableName": "limits", "Item": {"pk": {"S": "deep"}, "x": item}});
    let (status, body) = raw_post(
        &endpoint,
        Some("DynamoDB_20120810.PutItem"),
        &req.to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["__type"]
            .as_str()
            .unwrap()
            .ends_with("#ValidationException"),
        "{body}"
    );

    // A body above 16 MB is refused from its Content-Length, before it is read.
    let (status, text) = announce(&endpoint, 17 * 1024 * 1024).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("RequestEntityTooLargeException"), "{text}");
    serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_caps_requests_in_flight_and_their_time() {
    let _serial = SERIAL.lock().await;
    let mut t = start_cluster(&[
        ("TERN_ROUTER_MAX_IN_FLIGHT", "4"),
        ("TERN_ROUTER_REQUEST_TIMEOUT_MS", "1000"),
        ("TERN_ROUTER_BUS_TIMEOUT_MS", "5000"),
    ])
    .await;
    let endpoint = t.cluster.endpoint();
    let c = client(&endpoint);
    create_table(&c, "limits", None).await;
    serves(&c).await;

    // Every storage node stalls: requests wait on them.
    for n in NODES {
        t.cluster.pause(n).unwrap();
    }
    let started = Instant::now();
    let get = serde_json::json!({"TableName": "limits", "Key": {"pk": {"S": "still"}}, "ConsistentRead": true})
        .to_string();
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (e, g) = (endpoint.clone(), get.clone());
            tokio::spawn(async move {
                let (status, body) = raw_post(&e, Some("DynamoDB_20120810.GetItem"), &g).await;
                (status, body, started.elapsed())
            })
        })
        .collect();
    let mut throttled = 0;
    let mut timed_out = Vec::new();
    for call in calls {
        let (status, body, took) = call.await.unwrap();
        let kind = body["__type"].as_str().unwrap_or_default().to_string();
        if status == 400 && kind.ends_with("#ThrottlingException") {
            throttled += 1;
        } else if status == 500
            && body["message"]
                .as_str()
                .unwrap_or("")
                .contains("did not complete")
        {
            timed_out.push(took);
        } else {
            panic!("unexpected answer {status} {body}");
        }
    }
    for n in NODES {
        t.cluster.resume(n).unwrap();
    }
    println!(
        "throttled {throttled}, timed out {} after {timed_out:?}",
        timed_out.len()
    );
    assert_eq!(
        timed_out.len(),
        4,
        "four requests in flight, each timed out"
    );
    assert_eq!(throttled, 12, "the rest were turned away at once");
    for took in timed_out {
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(3000),
            "timed out after {took:?}, the request timeout is 1 s"
        );
    }
    let metrics = raw_get(&t.cluster.metrics_base("router").unwrap(), "/metrics")
        .await
        .1;
    assert_eq!(metric(&metrics, "tern_router_throttled_total"), Some(12.0));
    assert_eq!(metric(&metrics, "tern_router_timeouts_total"), Some(4.0));
    // Once the nodes are back, the endpoint serves again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = c
            .get_item()
            .table_name("limits")
            .key("pk", V::S("still".into()))
            .consistent_read(true)
            .send()
            .await
            .is_ok();
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint did not serve again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
