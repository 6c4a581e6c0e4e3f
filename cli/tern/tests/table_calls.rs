//! The table and service calls clients make besides items: CreateTable answering ACTIVE when the
//! table is ready within the call, DescribeEndpoints, DescribeLimits, the `GET /` health check and
//! the CORS answers browsers need.

mod common;

use aws_sdk_dynamodb::types::{BillingMode, TableStatus};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_and_service_calls() {
    let tc = start_cluster(&[
        ("TERN_STORAGE_STATS_FIRST_MS", "100"),
        ("TERN_STORAGE_STATS_INTERVAL_MS", "300"),
    ])
    .await;
    let endpoint = tc.cluster.endpoint();
    let c = client(&endpoint);
    let out = create_table_request(&c, "ready").send().await.unwrap();
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

    // UpdateTable: on-demand to provisioned and back, with DynamoDB's checks.
    use aws_sdk_dynamodb::types::{ProvisionedThroughput, Tag};
    let pt = |r, w| {
        ProvisionedThroughput::builder()
            .read_capacity_units(r)
            .write_capacity_units(w)
            .build()
            .unwrap()
    };
    let e = c
        .update_table()
        .table_name("ready")
        .billing_mode(BillingMode::Provisioned)
        .send()
        .await
        .unwrap_err();
    assert!(
        error_of(&e)
            .1
            .contains("ProvisionedThroughput must be specified"),
        "{:?}",
        error_of(&e)
    );
    let out = c
        .update_table()
        .table_name("ready")
        .billing_mode(BillingMode::Provisioned)
        .provisioned_throughput(pt(5, 7))
        .send()
        .await
        .unwrap();
    let d = out.table_description().unwrap();
    let p = d.provisioned_throughput().unwrap();
    assert_eq!(
        (p.read_capacity_units(), p.write_capacity_units()),
        (Some(5), Some(7))
    );
    assert!(d.billing_mode_summary().is_none());
    let e = c
        .update_table()
        .table_name("ready")
        .provisioned_throughput(pt(5, 7))
        .send()
        .await
        .unwrap_err();
    assert!(error_of(&e)
        .1
        .starts_with("The provisioned throughput for the table will not change"));
    let e = c
        .update_table()
        .table_name("ready")
        .send()
        .await
        .unwrap_err();
    assert!(error_of(&e)
        .1
        .starts_with("At least one of ProvisionedThroughput, BillingMode"));
    let d = c.describe_table().table_name("ready").send().await.unwrap();
    assert_eq!(
        d.table()
            .unwrap()
            .provisioned_throughput()
            .unwrap()
            .read_capacity_units(),
        Some(5)
    );
    c.update_table()
        .table_name("ready")
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let d = c.describe_table().table_name("ready").send().await.unwrap();
    assert_eq!(
        d.table()
            .unwrap()
            .billing_mode_summary()
            .unwrap()
            .billing_mode(),
        Some(&BillingMode::PayPerRequest)
    );
    let e = c
        .update_table()
        .table_name("nope")
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ResourceNotFoundException");

    // ItemCount and TableSizeBytes follow the storage nodes' counts (every 300 ms here; DynamoDB
    // and Tern's default: every few hours).
    for i in 0..25 {
        c.put_item()
            .table_name("ready")
            .item(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("k{i}")),
            )
            .send()
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let t = c.describe_table().table_name("ready").send().await.unwrap();
        let t = t.table().unwrap();
        if t.item_count() == Some(25) {
            assert!(t.table_size_bytes().unwrap_or(0) >= 25 * 10, "{t:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ItemCount {:?}",
            t.item_count()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Tags.
    let arn = d.table().unwrap().table_arn().unwrap().to_string();
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build().unwrap();
    c.tag_resource()
        .resource_arn(&arn)
        .tags(tag("team", "storage"))
        .tags(tag("env", "test"))
        .send()
        .await
        .unwrap();
    c.untag_resource()
        .resource_arn(&arn)
        .tag_keys("env")
        .send()
        .await
        .unwrap();
    let tags = c
        .list_tags_of_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    let got: Vec<(&str, &str)> = tags.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(got, vec![("team", "storage")]);
    let e = c
        .list_tags_of_resource()
        .resource_arn("not-an-arn")
        .send()
        .await
        .unwrap_err();
    assert!(
        error_of(&e).1.contains("Invalid ResourceArn"),
        "{:?}",
        error_of(&e)
    );
    let e = c
        .tag_resource()
        .resource_arn(arn.replace("table/ready", "table/gone"))
        .tags(tag("a", "b"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ResourceNotFoundException");
}
