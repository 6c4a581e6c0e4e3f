//! The table and service calls clients make besides items: CreateTable answering ACTIVE when the
//! table is ready within the call, DescribeEndpoints, DescribeLimits, the `GET /` health check and
//! the CORS answers browsers need.

mod common;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_and_service_calls() {
    let tc = start_cluster(&[]).await;
    let endpoint = tc.cluster.endpoint();
    let c = client(&endpoint);
    let out = c
        .create_table()
        .table_name("ready")
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let d = out.table_description().unwrap();
    assert_eq!(
        d.table_status(),
        Some(&TableStatus::Active),
        "ready within the call"
    );
    assert!(d.table_arn().unwrap().ends_with(":table/ready"));
    assert!(d.creation_date_time().is_some());

    let ep = c.describe_endpoints().send().await.unwrap();
    assert_eq!(ep.endpoints().len(), 1);
    assert!(
        endpoint.ends_with(ep.endpoints()[0].address()),
        "{:?}",
        ep.endpoints()
    );
    let limits = c.describe_limits().send().await.unwrap();
    assert_eq!(limits.table_max_read_capacity_units(), Some(40000));

    let (status, body) = raw_get(&endpoint, "/").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("healthy"), "{body}");

    // A browser's preflight, then a call carrying the CORS headers.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "OPTIONS / HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://app.example\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type,x-amz-target,authorization\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let lower = text.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{text}");
    assert!(lower.contains("access-control-allow-origin: *"), "{text}");
    assert!(
        lower.contains("access-control-allow-headers: content-type,x-amz-target,authorization"),
        "{text}"
    );
    assert!(
        lower.contains("access-control-allow-methods: get, post, options"),
        "{text}"
    );
    let (status, _) = raw_post(&endpoint, Some("DynamoDB_20120810.ListTables"), "{}").await;
    assert_eq!(status, 200);
}
