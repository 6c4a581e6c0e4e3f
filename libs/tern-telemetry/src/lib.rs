//! Logging, tracing and metrics set-up shared by every service.
//!
//! Logs go to stderr (filter with `TERN_LOG` or `RUST_LOG`, default `info`).
//!
//! Spans are OpenTelemetry spans, exported over OTLP when an endpoint is configured through the
//! standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`;
//! `OTEL_EXPORTER_OTLP_PROTOCOL` = `http/protobuf`, the default, or `grpc`; sampling by
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`; `OTEL_SDK_DISABLED=true` turns it off).
//! Their W3C trace context travels in bus headers, so one client request is one trace across
//! services. With no endpoint, no OpenTelemetry layer is installed at all: a span then costs only
//! what `tracing` itself costs.
//!
//! Sampling is decided once per client request, where it enters ([`sample_request`]: the
//! caller's `traceparent` flag, else the configured ratio). A request not sampled creates its
//! spans under the target [`UNTRACED`], which the OpenTelemetry layer never sees (they still name
//! the request in log lines), and sends no trace context on: its downstream spans are untraced
//! too. Only the spans of sampled requests pay for OpenTelemetry.

pub mod metrics;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;

/// The `tracing` target of spans the OpenTelemetry layer ignores: those of requests not sampled.
pub const UNTRACED: &str = "tern::untraced";

/// Share of client requests sampled, as f64 bits (0 until spans are exported).
static HEAD_RATIO: AtomicU64 = AtomicU64::new(0);

/// Whether a client request is traced: as its caller's W3C `traceparent` says when it sent one,
/// else with the configured probability. Always false when no exporter is configured.
pub fn sample_request(traceparent: Option<&str>) -> bool {
    let ratio = f64::from_bits(HEAD_RATIO.load(Ordering::Relaxed));
    if ratio <= 0.0 {
        return false;
    }
    if let Some(flags) = traceparent.and_then(|tp| tp.trim().rsplit('-').next()) {
        if let Ok(flags) = u8::from_str_radix(flags, 16) {
            return flags & 1 == 1;
        }
    }
    ratio >= 1.0 || rand::random::<f64>() < ratio
}

/// The share of requests to sample, from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`
/// (OpenTelemetry's names; unset: every request).
fn configured_ratio() -> f64 {
    let sampler = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default();
    let arg = || {
        std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|r| r.clamp(0.0, 1.0))
            .unwrap_or(1.0)
    };
    match sampler.trim() {
        "always_off" | "parentbased_always_off" => 0.0,
        "traceidratio" | "parentbased_traceidratio" => arg(),
        _ => 1.0,
    }
}

/// Keeps the tracer provider alive; flushes and shuts it down on drop.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

/// What becomes of spans.
pub enum Spans {
    /// Logs only: no OpenTelemetry layer.
    Off,
    /// OpenTelemetry spans and trace context in messages, exported nowhere (tests of propagation).
    ContextOnly,
    /// OpenTelemetry spans exported over OTLP as the `OTEL_*` variables say.
    Export,
}

impl Spans {
    /// `Export` when the environment names an OTLP endpoint (and does not disable the SDK).
    pub fn from_env() -> Self {
        let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
        let disabled = std::env::var("OTEL_SDK_DISABLED")
            .is_ok_and(|v| v.eq_ignore_ascii_case("true"))
            || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
        if !disabled
            && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        {
            Spans::Export
        } else {
            Spans::Off
        }
    }
}

/// Installs the global subscriber and propagator for `service`, exporting spans when the
/// environment says so ([`Spans::from_env`]). Call once, first thing in `main`, inside the tokio
/// runtime (the gRPC exporter needs it).
pub fn init(service: &'static str) -> Telemetry {
    init_with(service, Spans::from_env())
}

/// [`init`] with the fate of spans chosen by the caller.
pub fn init_with(service: &'static str, spans: Spans) -> Telemetry {
    // NOTE: every HTTP client of the process (the OTLP exporter's, the archiver's S3 one) is
    // reqwest with rustls and no built-in provider: ring is the process's, as the router's TLS.
    let _ = rustls::crypto::ring::default_provider().install_default();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = std::env::var("TERN_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only for a terminal: log files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let mut export_error = None;
    let provider = match spans {
        Spans::Off => None,
        Spans::ContextOnly => {
            HEAD_RATIO.store(1f64.to_bits(), Ordering::Relaxed);
            Some(SdkTracerProvider::builder().build())
        }
        Spans::Export => match opentelemetry_otlp::SpanExporter::builder().build() {
            Ok(exporter) => {
                let mut resource = Resource::builder();
                if std::env::var("OTEL_SERVICE_NAME").is_err() {
                    resource = resource.with_service_name(service);
                }
                HEAD_RATIO.store(configured_ratio().to_bits(), Ordering::Relaxed);
                Some(
                    SdkTracerProvider::builder()
                        .with_resource(resource.build())
                        .with_batch_exporter(exporter)
                        // The decision was made where the request entered (`sample_request`):
                        // every span the layer sees is recorded.
                        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                        .build(),
                )
            }
            Err(e) => {
                export_error = Some(e.to_string());
                None
            }
        },
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    let _ = match &provider {
        Some(p) => registry
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(p.tracer(service))
                    // NOTE: each of these costs on every poll or every span, sampled or not
                    // (context switched in and out, two clock reads, extra attributes): with
                    // them, GetItem lost 30% of its throughput at 1% sampling.
                    .with_context_activation(false)
                    .with_tracked_inactivity(false)
                    .with_threads(false)
                    .with_location(false)
                    .with_target(false)
                    .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                        m.target() != UNTRACED
                    })),
            )
            .try_init(),
        None => registry.try_init(),
    };
    if let Some(e) = export_error {
        tracing::error!(error = %e, "OTLP span exporter not started: spans are not exported");
    }
    exit_on_panic();
    Telemetry { provider }
}

/// A panic anywhere (a request task, a replica's background loop) ends the process with status
/// 101 after logging it: a service that lost a task must not live on half-working and answer
/// health checks; it restarts from its durable state instead.
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panic: exiting");
        default(info);
        std::process::exit(101);
    }));
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The exit code of a binary: on error, one line `error: <cause chain>` on stderr (no backtrace;
/// that belongs in the logs of a crash, not in an operator's terminal).
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_sampled_as_its_caller_says_else_by_ratio() {
        HEAD_RATIO.store(0f64.to_bits(), Ordering::Relaxed);
        let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let not = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        assert!(
            !sample_request(Some(sampled)),
            "no exporter: nothing traced"
        );
        HEAD_RATIO.store(0.5f64.to_bits(), Ordering::Relaxed);
        assert!(sample_request(Some(sampled)));
        assert!(!sample_request(Some(not)));
        let traced = (0..10_000).filter(|_| sample_request(None)).count();
        assert!(
            (4_500..5_500).contains(&traced),
            "{traced} of 10,000 at 0.5"
        );
        HEAD_RATIO.store(0f64.to_bits(), Ordering::Relaxed);
    }
}
