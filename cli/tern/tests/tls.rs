//! TLS, optional: with a certificate configured, the DynamoDB endpoint speaks HTTPS only and
//! nats-server requires TLS of every client, the services included (they check its certificate
//! against the configured CA). The certificates are made here (rcgen) for 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
fn certificates(dir: &std::path::Path) -> tern_cluster::TlsFiles {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tern test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let files = tern_cluster::TlsFiles {
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
        ca_file: dir.join("ca.pem"),
    };
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
    std::fs::write(&files.ca_file, ca.pem()).unwrap();
    files
}

/// A signed ListTables over TLS, trusting `ca` only: the HTTP status and body.
async fn list_tables_over_tls(endpoint: &str, ca: &std::path::Path) -> (u16, String) {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = endpoint.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake with the router");
    let body = "{}";
    let headers = dev_signed(
        endpoint,
        Some("DynamoDB_20120810.ListTables"),
        body.as_bytes(),
    );
    tls.write_all(&post_bytes(&headers, body.as_bytes()))
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_and_bus_speak_tls_when_configured() {
    let certs_dir = tempfile::tempdir().unwrap();
    let tls = certificates(certs_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let mut spec = tern_cluster::ClusterSpec::new(dir.path(), bin_dir());
    spec.tls = Some(tls.clone());
    let cluster = tern_cluster::Cluster::start(spec)
        .await
        .expect("a cluster whose every service talks TLS to nats-server");
    let endpoint = cluster.endpoint();
    assert!(endpoint.starts_with("https://"), "{endpoint}");

    // HTTPS, signed: served (MemDS answered over the TLS bus).
    let (status, text) = list_tables_over_tls(&endpoint, &tls.ca_file).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("TableNames"), "{text}");

    // Plain HTTP to the HTTPS port: no answer in HTTP.
    let plain = format!("http://{}", endpoint.trim_start_matches("https://"));
    let addr = plain.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        !String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
        "plain HTTP was served on the HTTPS port"
    );

    // nats-server requires TLS: a client that does not speak it (with a valid key) is refused.
    let plain_bus = async_nats::ConnectOptions::with_nkey(
        std::fs::read_to_string(cluster.nkey_file("admin").unwrap())
            .unwrap()
            .trim()
            .to_string(),
    )
    .connection_timeout(Duration::from_secs(2))
    .connect(cluster.nats_url())
    .await;
    // NOTE: async-nats upgrades to TLS when the server requires it, trusting the system's roots
    // only: the test CA is not among them, so the handshake fails.
    assert!(
        plain_bus.is_err(),
        "a client without the CA got onto the bus"
    );
    drop(cluster);
}
