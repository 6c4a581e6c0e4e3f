//! Prometheus metrics: one registry per process, through `prometheus-client`, served in
//! Prometheus' text format at `GET /metrics` on the service's metrics address (never on the
//! DynamoDB endpoint).

use std::sync::Arc;

use parking_lot::Mutex;
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
pub use prometheus_client::metrics::counter::{ConstCounter, Counter};
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
pub use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// Upper bounds (seconds) of latency histograms: 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Upper bounds of size histograms (bytes): 64 B to 16 MiB, by powers of 4.
pub fn size_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        64.0, 4.0, 10,
    ))
}

/// Writes one family of a collector's samples, read at scrape time: `samples` are each series'
/// labels and value; a counter's name gets `_total`.
pub fn encode_samples<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counter: bool,
    samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    let kind = if counter {
        MetricType::Counter
    } else {
        MetricType::Gauge
    };
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let metric = family.encode_family(&labels)?;
        if counter {
            ConstCounter::new(value).encode(metric)?;
        } else {
            ConstGauge::new(value).encode(metric)?;
        }
    }
    Ok(())
}

/// The process's registry; every name is prefixed `tern_`. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            registry: Arc::new(Mutex::new(Registry::with_prefix("tern"))),
        }
    }

    /// A registry whose every series carries `labels` (a storage node's id, for one).
    pub fn with_labels(labels: &[(&str, &str)]) -> Self {
        let labels: Vec<(
            std::borrow::Cow<'static, str>,
            std::borrow::Cow<'static, str>,
        )> = labels
            .iter()
            .map(|(k, v)| (k.to_string().into(), v.to_string().into()))
            .collect();
        Self {
            registry: Arc::new(Mutex::new(Registry::with_prefix_and_labels(
                "tern",
                labels.into_iter(),
            ))),
        }
    }

    /// Registers `tern_build_info{service, version} 1`: which service and build this process is.
    pub fn register_build_info(&self, service: &str) {
        self.register_once(
            "build",
            "The service and version of this process",
            prometheus_client::metrics::info::Info::new(vec![
                ("service".to_string(), service.to_string()),
                ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ]),
        );
    }

    /// Registers `metric` as `tern_<name>` (counters get `_total` appended) and returns it.
    pub fn register<M: Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        self.registry.lock().register(name, help, metric.clone());
        metric
    }

    /// Registers a metric that is not kept (its value never changes, like an `Info`).
    fn register_once<M: Metric>(&self, name: &str, help: &str, metric: M) {
        self.registry.lock().register(name, help, metric);
    }

    /// Registers a collector, asked for its values at each scrape.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry.lock().register_collector(collector);
    }

    /// Everything registered, in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("writing to a String does not fail");
        out
    }

    /// Serves `GET /metrics` on `listen` until the process ends. An empty address serves nothing.
    pub async fn serve(&self, listen: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
        if listen.is_empty() {
            return Ok(None);
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("metrics address {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "metrics listening");
        let me = self.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let me = me.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        me.render(),
                    )
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
        Ok(Some(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Op {
        operation: String,
    }

    #[test]
    fn counters_families_and_histograms_render_as_prometheus_text() {
        let m = Metrics::new();
        let c = m.register("test_requests", "requests", Counter::<u64>::default());
        let f = m.register(
            "test_ops",
            "requests by operation",
            Family::<Op, Counter>::default(),
        );
        let h = m.register("test_latency_seconds", "latency", latency_histogram());
        c.inc();
        c.inc();
        f.get_or_create(&Op {
            operation: "PutItem".into(),
        })
        .inc();
        h.observe(0.003);
        let text = m.render();
        assert!(text.contains("tern_test_requests_total 2"), "{text}");
        assert!(
            text.contains("tern_test_ops_total{operation=\"PutItem\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tern_test_latency_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(text.contains("tern_test_latency_seconds_count 1"), "{text}");
    }
}
