//! Shared by the integration tests: a real local cluster (nats-server plus every service as its
//! own process) and a real DynamoDB client pointed at it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_dynamodb::Client;
use tern_cluster::{Cluster, ClusterSpec};

/// The directory holding the service binaries (`target/<profile>`), next to the test's `deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    assert!(
        dir.join("tern-router").is_file(),
        "service binaries are missing in {}: run `cargo build --workspace --bins` first (scripts/test does)",
        dir.display()
    );
    dir
}

pub struct TestCluster {
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
}

/// Starts a cluster with three storage nodes in az-a/b/c; `env` adds service configuration.
pub async fn start_cluster(env: &[(&str, &str)]) -> TestCluster {
    // NOTE: ports are picked free and bound by the processes a moment later; on a busy machine
    // another socket can take one in between. A start that fails is said, and tried once more
    // in a fresh directory.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut spec = ClusterSpec::new(dir.path(), bin_dir());
        spec.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match Cluster::start(spec).await {
            Ok(cluster) => return TestCluster { cluster, dir },
            Err(e) if attempt == 1 => eprintln!("cluster start failed, trying again: {e:#}"),
            Err(e) => panic!("start cluster: {e:#}"),
        }
    }
}

pub fn client(endpoint: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new().build_http();
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("tern", "tern", None, None, "tests"))
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

/// Creates a table keyed by `pk` (S) and, if given, sort key `sk` of `sk_type`; waits for ACTIVE.
/// A CreateTable of an on-demand table keyed by `pk` (S), to send or to extend.
pub fn create_table_request(
    c: &Client,
    name: &str,
) -> aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder {
    c.create_table()
        .table_name(name)
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
}

pub async fn create_table(c: &Client, name: &str, sk: Option<ScalarAttributeType>) {
    let mut req = create_table_request(c, name);
    if let Some(t) = sk {
        req = req
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("sk")
                    .key_type(KeyType::Range)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("sk")
                    .attribute_type(t)
                    .build()
                    .unwrap(),
            );
    }
    let out = req.send().await.expect("create table");
    // ACTIVE when the table was ready within the call, else CREATING.
    let status = out.table_description().unwrap().table_status().cloned();
    assert!(
        matches!(status, Some(TableStatus::Creating | TableStatus::Active)),
        "{status:?}"
    );
    wait_active(c, name).await;
}

pub async fn wait_active(c: &Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = c
            .describe_table()
            .table_name(name)
            .send()
            .await
            .expect("describe");
        if d.table().unwrap().table_status() == Some(&TableStatus::Active) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "table {name} did not become ACTIVE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (error code, message) of a failed SDK call.
pub fn error_of<E: ProvideErrorMetadata, R>(
    e: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> (String, String) {
    (
        e.code().unwrap_or("").to_string(),
        e.message().unwrap_or("").to_string(),
    )
}

/// Asserts a call failed with `code` and a message containing `msg_part`.
#[macro_export]
macro_rules! assert_api_error {
    ($result:expr, $code:expr, $msg_part:expr) => {{
        match $result {
            Ok(_) => panic!("expected {} but the call succeeded", $code),
            Err(e) => {
                let (code, msg) = $crate::common::error_of(&e);
                assert_eq!(code, $code, "wrong error code (message: {msg})");
                assert!(
                    msg.contains($msg_part),
                    "message {msg:?} should contain {:?}",
                    $msg_part
                );
            }
        }
    }};
}

/// A raw HTTP POST to the endpoint, for inputs no SDK would send, signed with the development
/// key as an SDK would sign it.
pub async fn raw_post(
    endpoint: &str,
    target: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let headers = dev_signed(endpoint, target, body.as_bytes());
    send_raw(endpoint, &headers, body.as_bytes()).await
}

/// The headers of a POST to `endpoint` (http or https) for `target`, signed with the development
/// key now.
pub fn dev_signed(endpoint: &str, target: Option<&str>, body: &[u8]) -> Vec<(String, String)> {
    let addr = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let mut headers = vec![
        ("host".to_string(), addr.to_string()),
        (
            "content-type".to_string(),
            "application/x-amz-json-1.0".to_string(),
        ),
    ];
    if let Some(t) = target {
        headers.push(("x-amz-target".to_string(), t.to_string()));
    }
    let signed = signed_headers(
        endpoint,
        &headers,
        body,
        (DEV_KEY, DEV_SECRET),
        std::time::SystemTime::now(),
    );
    headers.extend(signed);
    headers
}

/// The development access key `tern up` and the test clusters accept.
pub const DEV_KEY: &str = tern_cluster::DEV_ACCESS_KEY_ID;
pub const DEV_SECRET: &str = tern_cluster::DEV_SECRET_ACCESS_KEY;

/// The headers an SDK adds to sign `headers` and `body` with `key` at `time` (AWS's own signer).
pub fn signed_headers(
    endpoint: &str,
    headers: &[(String, String)],
    body: &[u8],
    key: (&str, &str),
    time: std::time::SystemTime,
) -> Vec<(String, String)> {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    tern_cluster::sigv4::sign_headers(
        "POST",
        &format!("{endpoint}/"),
        &pairs,
        body,
        key,
        "us-east-1",
        time,
    )
    .expect("sign")
}

/// An HTTP/1.1 POST of `body` to `/` with exactly `headers` (plus Content-Length), closing.
pub fn post_bytes(headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut req = "POST / HTTP/1.1\r\n".to_string();
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// POSTs `body` with exactly `headers` (plus Content-Length); the status and the JSON answer.
pub async fn send_raw(
    endpoint: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    let addr = endpoint.trim_start_matches("http://");
    let bytes = post_bytes(headers, body);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(&bytes).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // The body may be chunked; take the JSON object inside.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map(|i| i + 1).unwrap_or(body.len());
    let json = serde_json::from_str(&body[start..end]).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// A raw HTTP GET, returning status and body text.
pub async fn raw_get(endpoint: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    )
}

/// The acknowledged (key, value) writes a strongly consistent read does not find as written.
pub async fn missing_writes(
    c: &Client,
    table: &str,
    acked: &[(String, String)],
) -> Vec<(String, Option<aws_sdk_dynamodb::types::AttributeValue>)> {
    missing_writes_read(c, table, acked, true).await
}

/// Like [`missing_writes`], with strongly or eventually consistent reads.
pub async fn missing_writes_read(
    c: &Client,
    table: &str,
    acked: &[(String, String)],
    consistent: bool,
) -> Vec<(String, Option<aws_sdk_dynamodb::types::AttributeValue>)> {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let mut missing = Vec::new();
    for (pk, value) in acked {
        let got = c
            .get_item()
            .table_name(table)
            .key("pk", V::S(pk.clone()))
            .consistent_read(consistent)
            .send()
            .await
            .expect("read back");
        match got.item().and_then(|i| i.get("v")) {
            Some(V::S(v)) if v == value => {}
            other => missing.push((pk.clone(), other.cloned())),
        }
    }
    missing
}

/// The value of the first sample of `name` in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Sum of the first sample of `name` over the given storage nodes' metrics.
pub async fn metric_sum(cluster: &Cluster, nodes: &[&str], name: &str) -> f64 {
    let mut sum = 0.0;
    for (node, u) in cluster.storage_metrics() {
        if nodes.contains(&node.as_str()) {
            let (_, text) = raw_get(u.trim_end_matches("/metrics"), "/metrics").await;
            sum += metric(&text, name).unwrap_or(0.0);
        }
    }
    sum
}

// ---- storage nodes under faults (shared by large_items.rs and stalled_leader.rs) ----

pub const NODES: [&str; 3] = ["storage-a", "storage-b", "storage-c"];

/// The error codes DynamoDB uses to say "slow down": the only acceptable failures under load.
pub const THROTTLING: [&str; 3] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
];

/// `len` pseudo-random bytes, the same for the same seed.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut bytes = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// The `/metrics` text of one storage node.
pub async fn node_metrics(cluster: &tern_cluster::Cluster, node: &str) -> String {
    let (_, url) = cluster
        .storage_metrics()
        .into_iter()
        .find(|(n, _)| n == node)
        .unwrap_or_else(|| panic!("no storage node {node}"));
    let (status, text) = raw_get(url.trim_end_matches("/metrics"), "/metrics").await;
    assert_eq!(status, 200, "metrics of {node}");
    text
}

/// Every sample of `name` in Prometheus text: (labels, value).
pub fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series[name.len()..].to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `tern_storage_groups_led` of each storage node.
pub async fn groups_led(cluster: &tern_cluster::Cluster) -> Vec<(String, f64)> {
    let mut led = Vec::new();
    for node in NODES {
        let text = node_metrics(cluster, node).await;
        led.push((
            node.to_string(),
            metric(&text, "tern_storage_groups_led").unwrap_or(0.0),
        ));
    }
    led
}

/// The one node leading the (single) group, once exactly one node says it leads.
pub async fn wait_single_leader(cluster: &tern_cluster::Cluster, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let led = groups_led(cluster).await;
        let leaders: Vec<_> = led.iter().filter(|(_, n)| *n > 0.0).collect();
        if leaders.len() == 1 && leaders[0].1 == 1.0 {
            return leaders[0].0.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no single leader within {within:?}: groups led {led:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident memory of the storage nodes, for the record.
pub fn storage_rss(cluster: &mut tern_cluster::Cluster) -> String {
    NODES
        .iter()
        .map(|n| match cluster.rss_bytes(n).ok().flatten() {
            Some(b) => format!("{n} {} MiB", b / (1024 * 1024)),
            None => format!("{n} down"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every item of one replica of the partition, with the log position they are at.
pub async fn replica_items(
    storage: &tern_storage_client::StorageClient,
    node: &str,
    partition: u64,
) -> Option<(u64, std::collections::BTreeMap<Vec<u8>, Vec<u8>>)> {
    let mut items = std::collections::BTreeMap::new();
    let mut req = tern_proto::storage::SnapshotChunkRequest {
        partition_id: partition,
        ..Default::default()
    };
    loop {
        let chunk: tern_proto::storage::SnapshotChunk =
            storage.snapshot_chunk(node, &req).await.ok()?;
        for (k, v) in chunk.keys.iter().zip(&chunk.values) {
            items.insert(k.clone(), v.clone());
        }
        if chunk.done {
            return Some((chunk.applied, items));
        }
        req.session = chunk.session;
        req.after_key = chunk.keys.last()?.clone();
    }
}

/// Waits until the replicas of each of the table's partitions are at one log position, then
/// compares their items.
pub async fn compare_replicas(tc: &TestCluster, table_name: &str) {
    let bus = tc.cluster.bus();
    let reply: tern_proto::memds::TableReply = bus
        .call(
            tern_proto::subjects::MEMDS_LOOKUP,
            &tern_proto::memds::LookupRequest {
                table_name: table_name.into(),
            },
        )
        .await
        .expect("look up the table");
    let table = reply.table.expect("table metadata");
    let storage = tern_storage_client::StorageClient::new(bus.clone());
    for p in &table.partitions {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut seen = Vec::new();
            for r in p.replicas.iter().filter(|r| !r.log) {
                if let Some(s) = replica_items(&storage, &r.node_id, p.id).await {
                    seen.push((r.node_id.clone(), s));
                }
            }
            let positions: Vec<u64> = seen.iter().map(|(_, (a, _))| *a).collect();
            if seen.len() == 3 && positions.windows(2).all(|w| w[0] == w[1]) {
                let (first, (at, items)) = &seen[0];
                for (node, (_, other)) in &seen[1..] {
                    assert_eq!(
                        items, other,
                        "partition {}: replicas {first} and {node} differ at log position {at}",
                        p.id
                    );
                }
                println!(
                    "{table_name}: partition {}: 3 replicas identical at log position {at}, {} items",
                    p.id,
                    items.len()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "partition {}: replicas did not reach one log position: {positions:?} of {} \
                 answering",
                p.id,
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// `tern up` as a child process, its stdout collected line by line.
pub struct Up {
    pub child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Up {
    pub fn start(dir: &std::path::Path, port: u16) -> Self {
        let mut child = std::process::Command::new(bin_dir().join("tern"))
            .args(["up", "--port", &port.to_string(), "--data-dir"])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start tern up");
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = out.clone();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                println!("tern up: {line}");
                lines.lock().unwrap().push(line);
            }
        });
        Self { child, out }
    }

    pub fn printed(&self, what: &str) -> bool {
        self.out.lock().unwrap().iter().any(|l| l.contains(what))
    }

    pub async fn wait_printed(&self, what: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.printed(what) {
            assert!(
                Instant::now() < deadline,
                "tern up did not print {what:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Up {
    /// SIGTERM, so `tern up` stops every process it started; SIGKILL if it has not after 20 s.
    fn drop(&mut self) {
        // Already stopped (and reaped): its pid may belong to another process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
