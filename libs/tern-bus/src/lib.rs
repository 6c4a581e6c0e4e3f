//! Tern's bus: typed request/reply over NATS.
//!
//! Every call has a timeout, carries W3C trace context in its NATS headers, and fails with a typed
//! [`BusError`]; API errors cross the bus as a status header plus the message as the body, so a
//! DynamoDB error raised on a storage node reaches the client unchanged. Calls are also available as
//! [`tower::Service`]s ([`RpcService`]) so timeouts, retries and limits compose as layers.

mod error;
mod service;
mod trace;

pub use error::BusError;
pub use service::RpcService;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures::StreamExt;
use tern_model::ApiError;
use tern_proto::status;
use tern_telemetry::metrics::{
    latency_histogram, size_histogram, Counter, EncodeLabelSet, Family, Histogram,
};
use tracing::Instrument;

/// Default timeout of a call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a service waits for NATS at start-up before giving up.
const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// How a process proves itself to nats-server and checks it is talking to the real one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsAccess {
    /// The NATS user's nkey seed file; none: connect without credentials.
    pub nkey_file: Option<std::path::PathBuf>,
    /// PEM CA certificate that signed the server's TLS certificate; set: TLS is required.
    pub ca_file: Option<std::path::PathBuf>,
}

/// A connection to the bus. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    timeout: Duration,
    metrics: Arc<OnceLock<BusMetrics>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubjectLabels {
    subject: String,
}

/// Payload sizes of the messages this connection sends and receives; requests it served.
#[derive(Debug)]
struct BusMetrics {
    sizes: Family<Direction, Histogram, fn() -> Histogram>,
    handled: Family<SubjectLabels, Histogram, fn() -> Histogram>,
    failed: Family<SubjectLabels, Counter>,
}

impl BusMetrics {
    fn sent(&self, bytes: usize) {
        self.observe("sent", bytes);
    }

    fn received(&self, bytes: usize) {
        self.observe("received", bytes);
    }

    fn observe(&self, direction: &'static str, bytes: usize) {
        self.sizes
            .get_or_create(&Direction { direction })
            .observe(bytes as f64);
    }
}

/// The servers of `url`: one URL, or several separated by commas (the servers of a NATS cluster;
/// the client connects to any and fails over to the others).
fn servers(url: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| BusError::Transport(format!("NATS server address {u}: {e}")))
        })
        .collect()
}

/// Requests one subscription handles at once.
pub const MAX_IN_FLIGHT: usize = 1024;

impl Bus {
    /// Connects to NATS at `url`, naming the connection after the service instance.
    pub async fn connect(url: &str, name: &str) -> Result<Self, BusError> {
        Self::connect_with(url, name, &NatsAccess::default(), None).await
    }

    /// Connects with `access` (the NATS user's nkey, the CA that signed the server's TLS
    /// certificate), with replies delivered under `inbox_prefix` (if any; the server's
    /// permissions may allow a user its own prefix only, so no one reads the replies meant for
    /// another).
    pub async fn connect_with(
        url: &str,
        name: &str,
        access: &NatsAccess,
        inbox_prefix: Option<&str>,
    ) -> Result<Self, BusError> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(ca) = &access.ca_file {
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        if let Some(path) = &access.nkey_file {
            let seed = std::fs::read_to_string(path).map_err(|e| {
                BusError::Transport(format!("read the nkey seed {}: {e}", path.display()))
            })?;
            options = options.nkey(seed.trim().to_string());
        }
        if let Some(prefix) = inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        let client = options
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            // Reconnects forever (the default), at most a second apart: a restarted nats-server
            // is found again within a second of listening (the default backs off to 4 s).
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * attempts.saturating_sub(1).min(10) as u64)
            })
            .event_callback(|event| async move {
                use async_nats::Event;
                match &event {
                    // Permission violations and authorization errors: the server said no.
                    Event::ServerError(e) => {
                        tracing::warn!(error = %e, "nats-server refused an operation")
                    }
                    // NOTE: the client drops messages for a subscription whose buffer is full;
                    // for replication that means lost heartbeats and elections.
                    Event::SlowConsumer(sid) => tracing::warn!(
                        subscription = sid,
                        "bus messages dropped: a subscription is not read fast enough"
                    ),
                    Event::Disconnected => tracing::warn!("disconnected from nats-server"),
                    Event::ClientError(e) => tracing::warn!(error = %e, "bus client error"),
                    Event::Connected => tracing::info!("connected to nats-server"),
                    other => tracing::info!(event = %other, "bus connection event"),
                }
            })
            .connect(servers(url)?)
            .await
            .map_err(|e| BusError::Transport(format!("connect to {url}: {e}")))?;
        // NOTE: with retry_on_initial_connect, `connect` returns before the connection is up, and
        // a subscription made meanwhile reaches the server only later; wait, so that what a
        // caller serves after this is really served.
        let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
        while client.connection_state() != async_nats::connection::State::Connected {
            if tokio::time::Instant::now() > deadline {
                return Err(BusError::Transport(format!(
                    "connect to {url}: not connected after {CONNECT_WAIT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self::from_client(client))
    }

    /// Connects on behalf of one instance of a service, whose id must be usable as a subject
    /// token (it names the instance's subjects).
    pub async fn connect_instance(
        url: &str,
        access: &NatsAccess,
        service: &str,
        instance: &str,
    ) -> Result<Self, BusError> {
        if !tern_proto::subjects::is_valid_token(instance) {
            return Err(BusError::InvalidName(format!(
                "invalid {service} configuration: instance id {instance:?} must be letters, digits, '-' or '_'"
            )));
        }
        Self::connect_with(
            url,
            &format!("tern-{service}-{instance}"),
            access,
            Some(&tern_proto::subjects::inbox_prefix(service, instance)),
        )
        .await
    }

    pub fn from_client(client: async_nats::Client) -> Self {
        Self {
            client,
            timeout: DEFAULT_TIMEOUT,
            metrics: Arc::default(),
        }
    }

    /// The same connection with another call timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            client: self.client.clone(),
            timeout,
            metrics: self.metrics.clone(),
        }
    }

    /// Measures this connection's message sizes (`tern_bus_message_bytes`) and the requests it
    /// serves (`tern_bus_requests_handled_seconds`, `tern_bus_requests_failed_total`, for
    /// subscriptions made after this call) in `registry`, for every clone of it. Once per
    /// connection; later calls do nothing.
    pub fn register_metrics(&self, registry: &tern_telemetry::metrics::Metrics) {
        if self.metrics.get().is_some() {
            return;
        }
        let sizes = registry.register(
            "bus_message_bytes",
            "Payload bytes of the bus messages this process sent and received",
            Family::<Direction, Histogram, fn() -> Histogram>::new_with_constructor(size_histogram),
        );
        let handled = registry.register(
            "bus_requests_handled_seconds",
            "Requests this process served over the bus, by subject: time from decoding to answer",
            Family::<SubjectLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            ),
        );
        let failed = registry.register(
            "bus_requests_failed",
            "Requests this process served over the bus and answered with an error, by subject",
            Family::default(),
        );
        let _ = self.metrics.set(BusMetrics {
            sizes,
            handled,
            failed,
        });
    }

    fn sent(&self, bytes: usize) {
        if let Some(m) = self.metrics.get() {
            m.sent(bytes);
        }
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `req` to `subject` and waits for the typed reply.
    pub async fn call<Req, Resp>(&self, subject: &str, req: &Req) -> Result<Resp, BusError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let payload = Bytes::from(req.encode_to_vec());
        let reply = self.call_raw(subject, payload).await?;
        Resp::decode(reply).map_err(|e| BusError::Decode(format!("reply from {subject}: {e}")))
    }

    /// Sends raw bytes and returns the raw reply body, errors decoded.
    pub async fn call_raw(&self, subject: &str, payload: Bytes) -> Result<Bytes, BusError> {
        self.sent(payload.len());
        let mut headers = HeaderMap::new();
        trace::inject(&mut headers);
        let request = async_nats::Request::new()
            .payload(payload)
            .headers(headers)
            .timeout(Some(self.timeout));
        let msg = self
            .client
            .send_request(subject.to_string(), request)
            .await
            .map_err(|e| BusError::from_request_error(subject, self.timeout, e))?;
        if let Some(m) = self.metrics.get() {
            m.received(msg.payload.len());
        }
        decode_reply(msg)
    }

    /// Publishes a one-way message (no reply expected).
    /// The largest message the server takes (its max_payload, as it told this connection; 1 MiB,
    /// NATS's default, if it has not said).
    pub fn max_payload(&self) -> usize {
        match self.client.server_info().max_payload {
            0 => 1024 * 1024,
            n => n,
        }
    }

    pub async fn publish<M: prost::Message>(&self, subject: &str, msg: &M) -> Result<(), BusError> {
        let mut headers = HeaderMap::new();
        trace::inject(&mut headers);
        let payload = msg.encode_to_vec();
        self.sent(payload.len());
        self.client
            .publish_with_headers(subject.to_string(), headers, payload.into())
            .await
            .map_err(|e| BusError::Transport(format!("publish to {subject}: {e}")))
    }

    /// A [`tower::Service`] calling `subject`.
    pub fn service<Req, Resp>(&self, subject: impl Into<String>) -> RpcService<Req, Resp> {
        RpcService::new(self.clone(), subject.into())
    }

    /// Takes the one-way messages of `subject`, in the order they arrive, each handled inline by
    /// `handler` before the next is read (no task per message: a protocol that pipelines, like
    /// replication, loses far less to reordering). The handler must not block for long; while it
    /// runs, the client library's bounded buffer holds what comes.
    pub async fn consume<Req, F>(
        &self,
        subject: &str,
        mut handler: F,
    ) -> Result<tokio::task::JoinHandle<()>, BusError>
    where
        Req: prost::Message + Default + Send + 'static,
        F: FnMut(Req) + Send + 'static,
    {
        let mut sub = self
            .client
            .subscribe(subject.to_string())
            .await
            .map_err(|e| BusError::Transport(format!("subscribe to {subject}: {e}")))?;
        self.round_trip()
            .await
            .map_err(|e| BusError::Transport(format!("subscribe to {subject}: {e}")))?;
        let subject = subject.to_string();
        let metrics = self.metrics.clone();
        Ok(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(m) = metrics.get() {
                    m.received(msg.payload.len());
                }
                match Req::decode(msg.payload) {
                    Ok(req) => handler(req),
                    Err(e) => {
                        tracing::warn!(subject = %subject, error = %e, "undecodable message dropped")
                    }
                }
            }
        }))
    }

    /// Serves `subject` (in `queue` group if given) until the connection drains: each request is
    /// decoded, handled in its own task under a span whose parent is the caller's trace, and
    /// answered with the handler's reply or error.
    pub async fn serve<Req, Resp, F, Fut>(
        &self,
        subject: &str,
        queue: Option<&str>,
        handler: F,
    ) -> Result<tokio::task::JoinHandle<()>, BusError>
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, BusError>> + Send + 'static,
    {
        let mut sub = match queue {
            Some(q) => {
                self.client
                    .queue_subscribe(subject.to_string(), q.to_string())
                    .await
            }
            None => self.client.subscribe(subject.to_string()).await,
        }
        .map_err(|e| BusError::Transport(format!("subscribe to {subject}: {e}")))?;
        // NOTE: the subscription reaches the server asynchronously, and a flush only writes it to
        // the socket; a round trip on this connection proves the server has processed it, so the
        // subject is served before we say so (callers announce readiness after this).
        self.round_trip()
            .await
            .map_err(|e| BusError::Transport(format!("subscribe to {subject}: {e}")))?;
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let served = metrics.get().map(|m| {
            let l = SubjectLabels {
                subject: subject.to_string(),
            };
            (
                m.handled.get_or_create(&l).clone(),
                m.failed.get_or_create(&l).clone(),
            )
        });
        let handler = std::sync::Arc::new(handler);
        let subject = subject.to_string();
        // Requests in progress per subscription are bounded: beyond the limit the subscription
        // is not read, and the client library's bounded buffer (then the server's slow-consumer
        // rule) holds or drops what comes.
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        Ok(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(m) = metrics.get() {
                    m.received(msg.payload.len());
                }
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let handler = handler.clone();
                let client = client.clone();
                let metrics = metrics.clone();
                let served = served.clone();
                // Traced only as part of a sampled request (which sent its trace context).
                let traced = msg
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.get("traceparent").is_some());
                let span = if traced {
                    let span = tracing::info_span!(
                        "bus.handle",
                        otel.name = %subject,
                        otel.kind = "server",
                        messaging.system = "nats",
                        messaging.operation.type = "process",
                        messaging.destination.name = %subject,
                    );
                    trace::set_parent(&span, msg.headers.as_ref());
                    span
                } else {
                    tracing::info_span!(target: tern_telemetry::UNTRACED, "bus.handle", subject = %subject)
                };
                tokio::spawn(
                    async move {
                        let reply = msg.reply.clone();
                        let started = std::time::Instant::now();
                        let result = match Req::decode(msg.payload) {
                            Ok(req) => handler(req).await,
                            Err(e) => Err(BusError::Decode(format!("request: {e}"))),
                        };
                        if let Some((handled, failed)) = &served {
                            handled.observe(started.elapsed().as_secs_f64());
                            if result.is_err() {
                                failed.inc();
                            }
                        }
                        // A published message (no reply subject) gets no answer.
                        if let Some(reply) = reply {
                            respond(&client, metrics.get(), reply, result).await;
                        }
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        }))
    }

    /// Sends a message to ourselves and waits for it: the server handles one connection's
    /// messages in order, so everything sent before (subscriptions included) has been processed.
    async fn round_trip(&self) -> Result<(), String> {
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| e.to_string())?;
        self.client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| e.to_string())?;
        let got = tokio::time::timeout(self.timeout, sub.next()).await;
        let _ = sub.unsubscribe().await;
        match got {
            Ok(Some(_)) => Ok(()),
            _ => Err("no round trip with the server".into()),
        }
    }

    /// Stops all subscriptions after their pending messages and flushes what was published.
    pub async fn drain(&self) {
        if let Err(e) = self.client.drain().await {
            tracing::debug!(error = %e, "drain bus connection");
        }
    }
}

async fn respond<Resp: prost::Message>(
    client: &async_nats::Client,
    metrics: Option<&BusMetrics>,
    reply: async_nats::Subject,
    result: Result<Resp, BusError>,
) {
    let sent = match result {
        Ok(resp) => {
            let payload = resp.encode_to_vec();
            if let Some(m) = metrics {
                m.sent(payload.len());
            }
            client.publish(reply, payload.into()).await
        }
        Err(err) => {
            let (code, body) = err.to_wire();
            let mut headers = HeaderMap::new();
            headers.insert(status::HEADER, code.to_string().as_str());
            client
                .publish_with_headers(reply, headers, body.into())
                .await
        }
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "send reply");
    }
}

fn decode_reply(msg: Message) -> Result<Bytes, BusError> {
    let status_code = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(status::HEADER))
        .map(|v| v.as_str().parse::<u16>().unwrap_or(u16::MAX));
    match status_code {
        None => Ok(msg.payload),
        Some(code) => Err(BusError::from_wire(code, &msg.payload)),
    }
}

/// Converts an API error into the bus error that carries it.
impl From<ApiError> for BusError {
    fn from(e: ApiError) -> Self {
        BusError::Api(e)
    }
}

/// Serves `tern.health.<service>.<instance>`, answering ready once `ready` is set.
pub async fn serve_health(
    bus: &Bus,
    service: &'static str,
    instance: &str,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>, BusError> {
    let subject = tern_proto::subjects::health(service, instance);
    let instance = instance.to_string();
    bus.serve(&subject, None, move |_: tern_proto::HealthRequest| {
        let resp = tern_proto::HealthResponse {
            service: service.to_string(),
            instance: instance.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: ready.load(std::sync::atomic::Ordering::Acquire),
        };
        async move { Ok(resp) }
    })
    .await
}

/// Runs a service that so far only joins the bus and answers health checks, until `shutdown`.
pub async fn serve_health_until(
    nats_url: &str,
    access: &NatsAccess,
    service: &'static str,
    instance: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    let bus = Bus::connect_instance(nats_url, access, service, instance).await?;
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    serve_health(&bus, service, instance, ready).await?;
    tracing::info!(service, instance, "ready");
    shutdown.await;
    tracing::info!(service, "stopping");
    bus.drain().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_may_name_every_server_of_a_cluster() {
        let s = servers("nats://nats-1:4222, nats://nats-2:4222,nats://nats-3:4222").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(servers("nats://127.0.0.1:4222").unwrap().len(), 1);
        assert!(servers("nats://host:notaport").is_err());
    }
}
