//! compose.yaml, checked without Docker: the file parses, every file, service, volume, secret and
//! port it names exists, every long-running service has a health check, Prometheus scrapes every
//! Tern process where it serves its metrics, and every Grafana dashboard query names metrics (and
//! labels) that a running cluster really exports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::*;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The YAML file at `rel` (from the repository's root), with merge keys (`<<`) applied.
fn load(rel: &str) -> Yaml {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(docs.len(), 1, "{rel}: one document");
    merge(docs.remove(0))
}

fn merge(y: Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let own: Vec<(Yaml, Yaml)> = h.into_iter().collect();
            for (k, v) in &own {
                if k.as_str() == Some("<<") {
                    let bases = match merge(v.clone()) {
                        Yaml::Array(a) => a,
                        other => vec![other],
                    };
                    for base in bases {
                        if let Yaml::Hash(b) = base {
                            out.extend(b);
                        }
                    }
                }
            }
            for (k, v) in own {
                if k.as_str() != Some("<<") {
                    out.insert(k, merge(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.into_iter().map(merge).collect()),
        other => other,
    }
}

fn keys(y: &Yaml) -> Vec<String> {
    y.as_hash()
        .map(|h| {
            h.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Yaml::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

const TERN_SERVICES: [&str; 10] = [
    "router-1",
    "router-2",
    "memds-1",
    "memds-2",
    "gac-1",
    "gac-2",
    "archiver",
    "storage-a",
    "storage-b",
    "storage-c",
];

#[test]
fn compose_names_only_what_exists() {
    let compose = load("compose.yaml");
    let services = &compose["services"];
    let names: BTreeSet<String> = keys(services).into_iter().collect();
    for s in TERN_SERVICES.iter().chain(&[
        "bus-keys",
        "nats-1",
        "nats-2",
        "nats-3",
        "minio",
        "minio-bucket",
        "jaeger",
        "prometheus",
        "grafana",
    ]) {
        assert!(names.contains(*s), "service {s} missing");
    }
    let volumes: BTreeSet<String> = keys(&compose["volumes"]).into_iter().collect();
    let secrets: BTreeSet<String> = keys(&compose["secrets"]).into_iter().collect();
    for s in &secrets {
        let file = compose["secrets"][s.as_str()]["file"].as_str().unwrap();
        assert!(repo().join(file).is_file(), "secret {s}: {file} missing");
    }
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("the image names its user");
    assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
    // Where Prometheus is told to find each Tern process.
    let prometheus = load("compose/prometheus.yml");
    let mut targets = BTreeSet::new();
    for job in prometheus["scrape_configs"].as_vec().unwrap() {
        for sc in job["static_configs"].as_vec().unwrap() {
            targets.extend(strings(&sc["targets"]));
        }
    }

    for name in &names {
        let s = &services[name.as_str()];
        if !s["build"].is_badvalue() {
            assert_eq!(
                s["build"].as_str(),
                Some("."),
                "{name} builds the repository"
            );
        }
        for v in strings(&s["volumes"]) {
            let source = v.split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(repo().join(source).exists(), "{name}: {source} missing");
            } else {
                assert!(
                    volumes.contains(source),
                    "{name}: volume {source} not declared"
                );
            }
        }
        for d in keys(&s["depends_on"])
            .into_iter()
            .chain(strings(&s["depends_on"]))
        {
            assert!(names.contains(&d), "{name} depends on unknown {d}");
        }
        for secret in strings(&s["secrets"]) {
            assert!(
                secrets.contains(&secret),
                "{name}: secret {secret} not declared"
            );
        }
        let one_shot = s["restart"].as_str() == Some("no");
        assert!(
            one_shot || !s["healthcheck"]["test"].is_badvalue(),
            "{name} has no health check"
        );
        let env = &s["environment"];
        let var = |suffix: &str| -> Option<String> {
            keys(env)
                .into_iter()
                .find(|k| k.starts_with("TERN_") && k.ends_with(suffix))
                .and_then(|k| env[k.as_str()].as_str().map(str::to_string))
        };
        if TERN_SERVICES.contains(&name.as_str()) {
            assert_eq!(s["image"].as_str(), Some("tern:dev"), "{name}");
            let metrics =
                var("_METRICS_LISTEN").unwrap_or_else(|| panic!("{name}: no metrics address"));
            let target = format!("{name}:{}", port_of(&metrics));
            assert!(
                targets.contains(&target),
                "Prometheus does not scrape {target}"
            );
            let health = strings(&s["healthcheck"]["test"]).join(" ");
            assert!(
                health.contains(&format!("/dev/tcp/127.0.0.1/{}", port_of(&metrics))),
                "{name}'s health check asks another port: {health}"
            );
            let nats = var("_NATS_URL").unwrap_or_else(|| panic!("{name}: no NATS URL"));
            for server in nats.split(',') {
                let host = server
                    .trim_start_matches("nats://")
                    .split(':')
                    .next()
                    .unwrap();
                assert!(
                    names.contains(host),
                    "{name}: NATS server {host} is no service"
                );
            }
            if let Some(key) = var("_NKEY_FILE") {
                assert!(key.starts_with("/keys/"), "{name}: {key}");
                assert!(strings(&s["volumes"])
                    .iter()
                    .any(|v| v.starts_with("bus-keys:/keys")));
            }
        }
        if let Some(listen) = var("ROUTER_LISTEN") {
            let published: Vec<String> = strings(&s["ports"]);
            assert!(
                published
                    .iter()
                    .any(|p| p.ends_with(&format!(":{}", port_of(&listen)))),
                "{name} listens on {listen} but publishes {published:?}"
            );
        }
    }
    for t in &targets {
        let host = t.split(':').next().unwrap();
        assert!(
            TERN_SERVICES.contains(&host),
            "Prometheus scrapes {t}, no Tern service"
        );
    }

    // The NATS cluster's routes name its servers.
    let nats = std::fs::read_to_string(repo().join("compose/nats.conf")).unwrap();
    for n in ["nats-1", "nats-2", "nats-3"] {
        assert!(nats.contains(&format!("nats://{n}:6222")), "route to {n}");
    }
    // Grafana's data sources are services of the stack.
    let ds = load("compose/grafana/provisioning/datasources/tern.yaml");
    for d in ds["datasources"].as_vec().unwrap() {
        let url = d["url"].as_str().unwrap();
        let host = url.trim_start_matches("http://").split(':').next().unwrap();
        assert!(names.contains(host), "data source {url}");
    }
    let provider = load("compose/grafana/provisioning/dashboards/tern.yaml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        strings(&services["grafana"]["volumes"])
            .iter()
            .any(|v| v == &format!("./compose/grafana/dashboards:{path}:ro")),
        "the dashboards are mounted where the provider looks"
    );
    let files: BTreeSet<String> = dashboards().into_iter().map(|(f, _, _)| f).collect();
    assert_eq!(
        files.into_iter().collect::<Vec<_>>(),
        [
            "admission.json",
            "archive.json",
            "constant-work.json",
            "overview.json",
            "replication.json"
        ]
    );
}

/// (dashboard file, panel title, query) of every dashboard.
fn dashboards() -> Vec<(String, String, String)> {
    let dir = repo().join("compose/grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(v["uid"].is_string() && v["title"].is_string(), "{file}");
        for p in v["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                assert_eq!(t["datasource"]["uid"], "prometheus", "{file}");
                out.push((
                    file.clone(),
                    p["title"].as_str().unwrap().to_string(),
                    t["expr"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

/// The `tern_*` metric names in a query.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("tern_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The labels a query groups by (`by (a, b)`), but those Prometheus adds (`job`, `instance`) and
/// the histogram's `le`.
fn grouped_by(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("by (") {
        let tail = &rest[i + 4..];
        let end = tail.find(')').unwrap();
        for l in tail[..end].split(',') {
            let l = l.trim();
            if !["le", "job", "instance"].contains(&l) {
                labels.insert(l.to_string());
            }
        }
        rest = &tail[end..];
    }
    labels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_metrics_the_services_export() {
    let tc = start_cluster(&[]).await;
    let c = client(&tc.cluster.endpoint());
    create_table(&c, "dash", None).await;
    use aws_sdk_dynamodb::types::AttributeValue as V;
    c.put_item()
        .table_name("dash")
        .item("pk", V::S("k".into()))
        .send()
        .await
        .unwrap();
    let _ = c
        .get_item()
        .table_name("missing")
        .key("pk", V::S("k".into()))
        .send()
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // Metric name → the label names its samples carry, over every process.
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, url) in tc.cluster.metrics_endpoints() {
        let (_, text) = raw_get(url.trim_end_matches("/metrics"), "/metrics").await;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                exported
                    .entry(rest.split(' ').next().unwrap().to_string())
                    .or_default();
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let series = line.rsplit_once(' ').unwrap().0;
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let set = exported.entry(name.to_string()).or_default();
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                set.insert(pair.split('=').next().unwrap().to_string());
            }
        }
    }
    let queries = dashboards();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for (file, panel, expr) in queries {
        let names = metric_names(&expr);
        assert!(
            !names.is_empty(),
            "{file} / {panel}: no Tern metric in {expr}"
        );
        let mut labels_available = BTreeSet::new();
        for name in &names {
            let labels = exported.get(name).unwrap_or_else(|| {
                panic!("{file} / {panel}: {name} is exported by no process ({expr})")
            });
            labels_available.extend(labels.iter().cloned());
        }
        for label in grouped_by(&expr) {
            assert!(
                labels_available.contains(&label),
                "{file} / {panel}: no sample of {names:?} carries label {label} ({expr})"
            );
        }
    }
}

#[test]
fn the_query_helpers_find_names_and_labels() {
    let e = "histogram_quantile(0.99, sum by (le, node) (rate(tern_storage_fsync_seconds_bucket[1m]))) / tern_x_total";
    assert_eq!(
        metric_names(e),
        vec!["tern_storage_fsync_seconds_bucket", "tern_x_total"]
    );
    assert_eq!(grouped_by(e), BTreeSet::from(["node".to_string()]));
}
