//! SigV4 on the DynamoDB endpoint: what is signed by a configured key gets in, nothing else does,
//! and each refusal is DynamoDB's error. Requests are signed here by AWS's own signer
//! (`aws_sigv4`, as the SDKs sign), then altered the way a forger or a skewed clock would.

mod common;

use std::time::{Duration, SystemTime};

use common::*;

const LIST: &str = "DynamoDB_20120810.ListTables";

fn base_headers(endpoint: &str) -> Vec<(String, String)> {
    vec![
        (
            "host".to_string(),
            endpoint.trim_start_matches("http://").to_string(),
        ),
        (
            "content-type".to_string(),
            "application/x-amz-json-1.0".to_string(),
        ),
        ("x-amz-target".to_string(), LIST.to_string()),
    ]
}

/// A ListTables signed by `key` at `time`, then `tamper`ed with; the router's answer.
async fn send(
    endpoint: &str,
    key: (&str, &str),
    time: SystemTime,
    tamper: impl FnOnce(&mut Vec<(String, String)>, &mut Vec<u8>),
) -> (u16, String, String) {
    let mut headers = base_headers(endpoint);
    let mut body = b"{}".to_vec();
    let signed = signed_headers(endpoint, &headers, &body, key, time);
    headers.extend(signed);
    tamper(&mut headers, &mut body);
    let (status, json) = send_raw(endpoint, &headers, &body).await;
    let kind = json["__type"]
        .as_str()
        .unwrap_or("")
        .rsplit('#')
        .next()
        .unwrap_or("")
        .to_string();
    let message = json["message"].as_str().unwrap_or("").to_string();
    (status, kind, message)
}

fn set(headers: &mut [(String, String)], name: &str, f: impl FnOnce(&str) -> String) {
    let h = headers
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("no {name} header"));
    h.1 = f(&h.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_requests_signed_by_a_configured_key_get_in() {
    let t = start_cluster(&[]).await;
    let ep = t.cluster.endpoint();
    let now = SystemTime::now();
    let dev = (DEV_KEY, DEV_SECRET);
    let none = |_: &mut Vec<(String, String)>, _: &mut Vec<u8>| {};

    // Signed right: accepted, also with a clock 10 minutes off either way.
    for skew in [0i64, -600, 600] {
        let at = if skew < 0 {
            now - Duration::from_secs(600)
        } else {
            now + Duration::from_secs(skew as u64)
        };
        let (status, kind, msg) = send(&ep, dev, at, none).await;
        assert_eq!(status, 200, "skew {skew}s: {kind} {msg}");
    }

    // Not signed at all.
    let (status, kind, msg) = send(&ep, dev, now, |h, _| {
        h.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
    })
    .await;
    assert_eq!(
        (status, kind.as_str(), msg.as_str()),
        (
            400,
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token"
        )
    );

    // Signed with the wrong secret.
    let (status, kind, msg) = send(&ep, (DEV_KEY, "not-the-secret"), now, none).await;
    assert_eq!((status, kind.as_str()), (400, "InvalidSignatureException"));
    assert!(
        msg.starts_with("The request signature we calculated does not match"),
        "{msg}"
    );

    // By a key nobody configured.
    let (status, kind, msg) = send(&ep, ("AKIDUNKNOWN", "whatever"), now, none).await;
    assert_eq!(
        (status, kind.as_str(), msg.as_str()),
        (
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid."
        )
    );

    // Expired and future-dated, beyond DynamoDB's 15 minutes.
    let (_, kind, msg) = send(&ep, dev, now - Duration::from_secs(20 * 60), none).await;
    assert_eq!(kind, "InvalidSignatureException");
    assert!(msg.starts_with("Signature expired: "), "{msg}");
    assert!(msg.contains("- 15 min.)"), "{msg}");
    let (_, kind, msg) = send(&ep, dev, now + Duration::from_secs(20 * 60), none).await;
    assert_eq!(kind, "InvalidSignatureException");
    assert!(msg.starts_with("Signature not yet current: "), "{msg}");

    // A body changed after signing (the payload hash is part of the signature).
    let (_, kind, _) = send(&ep, dev, now, |_, body| *body = br#"{"Limit":1}"#.to_vec()).await;
    assert_eq!(kind, "InvalidSignatureException");

    // A signed header changed after signing: another operation on the same signature.
    let (_, kind, _) = send(&ep, dev, now, |h, _| {
        set(h, "x-amz-target", |_| {
            "DynamoDB_20120810.DeleteTable".into()
        })
    })
    .await;
    assert_eq!(kind, "InvalidSignatureException");

    // Parts missing from the Authorization header.
    let (status, kind, msg) = send(&ep, dev, now, |h, _| {
        set(h, "authorization", |v| {
            v.split(", ")
                .filter(|p| !p.starts_with("Signature="))
                .collect::<Vec<_>>()
                .join(", ")
        })
    })
    .await;
    assert_eq!(
        (status, kind.as_str()),
        (400, "IncompleteSignatureException")
    );
    assert!(
        msg.contains("Authorization header requires 'Signature' parameter."),
        "{msg}"
    );
    let (_, kind, msg) = send(&ep, dev, now, |h, _| {
        h.retain(|(k, _)| !k.eq_ignore_ascii_case("x-amz-date"))
    })
    .await;
    assert_eq!(kind, "IncompleteSignatureException");
    assert!(msg.contains("'X-Amz-Date' or a 'Date' header"), "{msg}");

    // A scope for another service, and a scope date that is not the request's.
    let (_, kind, msg) = send(&ep, dev, now, |h, _| {
        set(h, "authorization", |v| v.replace("/dynamodb/", "/s3/"))
    })
    .await;
    assert_eq!(kind, "InvalidSignatureException");
    assert!(msg.contains("correct service: 'dynamodb'"), "{msg}");
    let (_, kind, msg) = send(&ep, dev, now, |h, _| {
        set(h, "authorization", |v| {
            let i = v.find("Credential=").unwrap() + "Credential=".len() + DEV_KEY.len() + 1;
            format!("{}19990101{}", &v[..i], &v[i + 8..])
        })
    })
    .await;
    assert_eq!(kind, "InvalidSignatureException");
    assert!(
        msg.starts_with("Date in Credential scope does not match"),
        "{msg}"
    );

    // The AWS SDK for Rust: the right key works (every other test relies on it), a wrong secret
    // gets DynamoDB's exception through the SDK.
    let bad = {
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("eu-west-3"))
            .endpoint_url(&ep)
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                DEV_KEY, "wrong", None, None, "test",
            ))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    };
    assert_api_error!(
        bad.list_tables().send().await,
        "InvalidSignatureException",
        "does not match"
    );
    client(&ep)
        .list_tables()
        .send()
        .await
        .expect("signed right");

    // Refusals are counted.
    let (_, metrics) = raw_get(&t.cluster.metrics_base("router").unwrap(), "/metrics").await;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tern_router_auth_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("auth failures counter");
    assert!(refused >= 12, "{refused} refusals counted");
    drop(t);

    // With auth off (`tern up --no-auth`), an unsigned request is served.
    let t = start_cluster(&[("TERN_ROUTER_AUTH", "off")]).await;
    let ep = t.cluster.endpoint();
    let (status, kind, msg) = send(&ep, dev, now, |h, _| {
        h.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
    })
    .await;
    assert_eq!(status, 200, "{kind} {msg}");
}

/// The secret is written for the router alone, and never reaches a log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_stays_out_of_sight() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = tern_cluster::ClusterSpec::new(dir.path(), bin_dir());
    let secret = "s3cr3t-not-for-logs";
    spec.api_credentials = Some(("AKIDTEST".into(), secret.into()));
    let cluster = tern_cluster::Cluster::start(spec).await.expect("start");
    let file = dir.path().join("secrets/api-credentials");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials file mode {mode:o}");
    let dir_mode = std::fs::metadata(dir.path().join("secrets"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    // Signed with the configured key: served; with the development key: refused.
    let ep = cluster.endpoint();
    let (status, _, _) = send(
        &ep,
        ("AKIDTEST", secret),
        SystemTime::now(),
        |_: &mut Vec<(String, String)>, _: &mut Vec<u8>| {},
    )
    .await;
    assert_eq!(status, 200);
    let (_, kind, _) = send(
        &ep,
        (DEV_KEY, DEV_SECRET),
        SystemTime::now(),
        |_: &mut Vec<(String, String)>, _: &mut Vec<u8>| {},
    )
    .await;
    assert_eq!(kind, "UnrecognizedClientException");
    let router_log = std::fs::read_to_string(dir.path().join("logs/router.log")).unwrap();
    assert!(router_log.contains("AKIDTEST"), "the key id is named");
    for entry in std::fs::read_dir(dir.path().join("logs")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        assert!(!text.contains(secret), "a log holds the secret");
    }
    drop(cluster);
}

/// Whether a message `publisher` publishes on `subject` reaches `subscriber` (identities of the
/// cluster's bus). A refused publish or subscription is dropped by nats-server.
async fn delivered(
    cluster: &tern_cluster::Cluster,
    publisher: &str,
    subscriber: &str,
    subject: &str,
) -> bool {
    let connect = |id: &str| {
        let seed = cluster.nkey_file(id).expect("bus authentication is on");
        let url = cluster.nats_url();
        let prefix = tern_proto::subjects::inbox_prefix(id, "probe");
        let id = id.to_string();
        async move {
            let access = tern_bus::NatsAccess {
                nkey_file: Some(seed),
                ca_file: None,
            };
            tern_bus::Bus::connect_with(&url, &format!("probe-{id}"), &access, Some(&prefix))
                .await
                .expect("connect with a valid key")
        }
    };
    let (sub_bus, pub_bus) = (connect(subscriber).await, connect(publisher).await);
    let mut sub = sub_bus
        .client()
        .subscribe(subject.to_string())
        .await
        .unwrap();
    sub_bus.client().flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let marker = format!("probe {publisher} -> {subscriber}");
    let _ = pub_bus
        .client()
        .publish(subject.to_string(), marker.clone().into())
        .await;
    let _ = pub_bus.client().flush().await;
    use futures::StreamExt;
    match tokio::time::timeout(Duration::from_millis(700), sub.next()).await {
        Ok(Some(m)) => {
            assert_eq!(m.payload, marker.as_bytes(), "another message on {subject}");
            true
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_admits_each_service_to_its_own_subjects_only() {
    let t = start_cluster(&[]).await;
    let url = t.cluster.nats_url();

    // No credentials, or a key the server does not know: no connection.
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(&url)
        .await;
    assert!(anonymous.is_err(), "a client without credentials got in");
    let stranger =
        async_nats::ConnectOptions::with_nkey(nkeys::KeyPair::new_user().seed().unwrap())
            .connection_timeout(Duration::from_secs(2))
            .connect(&url)
            .await;
    assert!(stranger.is_err(), "a client with an unknown key got in");

    // (publisher, subscriber, subject, delivered?)
    let cases = [
        // The router reaches storage data subjects, but not replication or administration.
        ("router", "admin", "tern.storage.nowhere.write", true),
        ("router", "admin", "tern.storage.nowhere.raft", false),
        (
            "router",
            "admin",
            "tern.storage.nowhere.admin.create_partition",
            false,
        ),
        ("router", "admin", "tern.storage.nowhere.snapshot", false),
        // Storage nodes speak replication, not client writes.
        ("storage-b", "admin", "tern.storage.nowhere.raft", true),
        ("storage-b", "admin", "tern.storage.nowhere.write", false),
        ("storage-b", "admin", "tern.memds.ddl.create_table", false),
        // MemDS creates replicas; nobody else does.
        (
            "memds",
            "admin",
            "tern.storage.nowhere.admin.create_partition",
            true,
        ),
        // The archiver reads logs, marks, scrubs and restores; it neither replicates nor drops
        // tables or replicas.
        (
            "archiver",
            "admin",
            "tern.storage.nowhere.archive.read",
            true,
        ),
        (
            "archiver",
            "admin",
            "tern.storage.nowhere.archive.checksum",
            true,
        ),
        ("archiver", "admin", "tern.storage.nowhere.raft", false),
        ("archiver", "admin", "tern.memds.ddl.delete_table", false),
        (
            "archiver",
            "admin",
            "tern.storage.nowhere.admin.drop_partition",
            false,
        ),
        // A node hears its own subjects only.
        ("admin", "storage-a", "tern.storage.storage-a.probe", true),
        ("admin", "storage-b", "tern.storage.storage-a.probe", false),
        // Nobody reads the replies meant for another service.
        ("admin", "router", "_INBOX.router.router-1.x", true),
        ("admin", "memds", "_INBOX.router.router-1.x", false),
        ("admin", "storage-a", "_INBOX.storage.storage-b.x", false),
    ];
    let mut wrong = Vec::new();
    for (publisher, subscriber, subject, expected) in cases {
        let got = delivered(&t.cluster, publisher, subscriber, subject).await;
        if got != expected {
            wrong.push(format!(
                "{publisher} -> {subscriber} on {subject}: delivered {got}, expected {expected}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // And the cluster still serves, every service through its own permissions.
    let c = client(&t.cluster.endpoint());
    create_table(&c, "permitted", None).await;
    c.put_item()
        .table_name("permitted")
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S("k".into()))
        .send()
        .await
        .expect("a write through every permission");
}
