//! The HTTP surface: `POST /` with `X-Amz-Target: DynamoDB_20120810.<Op>`, answered in
//! `application/x-amz-json-1.0`; errors as DynamoDB sends them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tern_model::{ApiError, ErrorCode};
use tracing::Instrument;

use crate::metrics::inc;
use crate::{backups, batch, items, query, tables, Router};

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const TARGET_PREFIX: &str = "DynamoDB_20120810.";
/// DynamoDB's largest request (BatchWriteItem) is 16 MB.
const MAX_BODY: usize = 16 * 1024 * 1024 + 64 * 1024;

pub fn app(router: Arc<Router>) -> axum::Router {
    axum::Router::new()
        .route("/", post(handle).get(health).options(preflight))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(router)
}

/// `GET /`, as DynamoDB answers it: load balancers and clients use it as a health check.
async fn health() -> Response {
    with_cors((StatusCode::OK, "healthy: tern\n").into_response())
}

/// A browser's CORS preflight: any origin may call, as with DynamoDB.
async fn preflight(headers: HeaderMap) -> Response {
    let mut resp = with_cors(StatusCode::OK.into_response());
    let h = resp.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    let requested = headers
        .get("access-control-request-headers")
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("*"));
    h.insert("access-control-allow-headers", requested);
    h.insert("access-control-max-age", HeaderValue::from_static("172800"));
    resp
}

fn with_cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("x-amzn-RequestId, x-amzn-ErrorType, x-amz-crc32, Date"),
    );
    resp
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// Bounds on the work one router takes on at once: requests in flight, and the request bodies
/// they hold (by Content-Length, in KiB). Beyond either, a request is answered
/// ThrottlingException at once (the SDKs retry it with backoff) instead of queueing without
/// bound.
pub struct Admission {
    requests: Arc<tokio::sync::Semaphore>,
    body_kib: Arc<tokio::sync::Semaphore>,
    body_kib_total: u32,
    timeout: Duration,
}

/// What an admitted request holds until it is answered.
pub struct Admitted {
    _request: tokio::sync::OwnedSemaphorePermit,
    _body: tokio::sync::OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(config: &crate::Config) -> Self {
        let body_kib_total = (config.max_in_flight_body_mb.max(17) * 1024).min(u32::MAX as usize);
        Self {
            requests: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
            body_kib: Arc::new(tokio::sync::Semaphore::new(body_kib_total)),
            body_kib_total: body_kib_total as u32,
            timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
        }
    }

    /// The longest a request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn admit(&self, content_length: Option<usize>) -> Result<Admitted, ApiError> {
        let throttled = || {
            ApiError::new(
                ErrorCode::ThrottlingException,
                "Too many requests in flight at this endpoint; retry with backoff",
            )
        };
        let request = self
            .requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| throttled())?;
        let kib = content_length
            .unwrap_or(MAX_BODY)
            .min(MAX_BODY)
            .div_ceil(1024)
            .max(1) as u32;
        let body = self
            .body_kib
            .clone()
            .try_acquire_many_owned(kib.min(self.body_kib_total))
            .map_err(|_| throttled())?;
        Ok(Admitted {
            _request: request,
            _body: body,
        })
    }
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The answer to a body above [`MAX_BODY`] (HTTP 413).
fn too_large(len: Option<usize>) -> ApiError {
    ApiError::new(
        ErrorCode::RequestEntityTooLarge,
        match len {
            Some(n) => format!(
                "Request entity too large: the request is {n} bytes; the maximum is {MAX_BODY} bytes"
            ),
            None => format!("Request entity too large: the maximum is {MAX_BODY} bytes"),
        },
    )
}

async fn handle(State(r): State<Arc<Router>>, request: Request) -> Response {
    inc(&r.metrics.requests);
    let request_id = format!(
        "{}-{:016X}",
        r.instance,
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let (parts, body) = request.into_parts();
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let op_name = op.strip_prefix(TARGET_PREFIX).unwrap_or(&op);
    let traceparent = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let span = if tern_telemetry::sample_request(traceparent) {
        traced_span(op_name, &request_id, &parts.headers)
    } else {
        // For the logs only: the OpenTelemetry layer does not see it.
        tracing::info_span!(target: tern_telemetry::UNTRACED, "dynamodb", op = %op_name, request_id = %request_id)
    };
    let started = std::time::Instant::now();
    let mut table = None;
    let len = content_length(&parts.headers);
    let timeout = r.admission.timeout;
    let result = async {
        if len.is_some_and(|n| n > MAX_BODY) {
            return Err(too_large(len));
        }
        let _admitted = r.admission.admit(len)?;
        let work = async {
            // A body that ends early or outgrows the limit (a client that sent no length).
            let body = axum::body::to_bytes(body, MAX_BODY)
                .await
                .map_err(|_| too_large(len))?;
            if let Some(keys) = &r.keys {
                keys.verify(
                    &parts.method,
                    &parts.uri,
                    &parts.headers,
                    &body,
                    std::time::SystemTime::now(),
                )
                .inspect_err(|e| {
                    inc(&r.metrics.auth_failures);
                    tracing::debug!(error = %e, "request refused");
                })?;
            }
            dispatch(&r, &op, &body, &mut table).await
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => {
                inc(&r.metrics.timeouts);
                Err(ApiError::new(
                    ErrorCode::InternalServerError,
                    format!(
                        "The request did not complete within {} ms",
                        timeout.as_millis()
                    ),
                ))
            }
        }
    }
    .instrument(span.clone())
    .await;
    if matches!(&result, Err(e) if e.code.http_status() >= 500) {
        span.record("otel.status_code", "ERROR");
    }
    // Label only operations DynamoDB has: the target header is the client's to choose.
    let operation = match (&result, op.strip_prefix(TARGET_PREFIX)) {
        (Err(e), _) if e.code == ErrorCode::UnknownOperation => "(unknown)",
        (_, Some(name)) => name,
        (_, None) => "(unknown)",
    };
    r.metrics.answered(
        operation,
        table.as_deref(),
        started.elapsed(),
        result.as_ref().err().map(|e| e.code.type_name()),
    );
    let (status, body) = match result {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            if status.is_server_error() {
                inc(&r.metrics.server_errors);
            } else {
                inc(&r.metrics.client_errors);
            }
            if e.code == ErrorCode::ThrottlingException {
                inc(&r.metrics.throttled);
            }
            (status, error_body(&e, op_name, table.as_deref()))
        }
    };
    let mut resp = (status, Body::from(body)).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amzn-requestid", v);
    }
    with_cors(resp)
}

/// The span of a sampled request, named and described as OpenTelemetry's conventions for
/// DynamoDB calls say, child of the caller's span when it sent its trace context.
fn traced_span(op_name: &str, request_id: &str, headers: &HeaderMap) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!(
        "dynamodb",
        otel.name = %op_name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "aws-api",
        rpc.service = "DynamoDB",
        rpc.method = %op_name,
        db.system.name = "aws.dynamodb",
        db.operation.name = %op_name,
        aws.request_id = %request_id,
        aws.dynamodb.table_names = tracing::field::Empty,
    );
    struct Headers<'a>(&'a HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    if headers.contains_key("traceparent") {
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
        let _ = span.set_parent(cx);
    }
    span
}

/// Runs the operation `target` names; `table` is set to the request's table name when it has a
/// valid one (for metrics).
async fn dispatch(
    r: &Router,
    target: &str,
    body: &[u8],
    table: &mut Option<String>,
) -> Result<Vec<u8>, ApiError> {
    let Some(op) = target.strip_prefix(TARGET_PREFIX) else {
        return Err(unknown_operation());
    };
    let req = crate::json::Request::parse(body)?;
    *table = req.table_name().ok().map(str::to_string);
    if let Some(name) = table.as_deref() {
        tracing::Span::current().record("aws.dynamodb.table_names", name);
    }
    match op {
        "CreateTable" => tables::create_table(r, &req).await,
        "DescribeTable" => tables::describe_table(r, &req).await,
        "ListTables" => tables::list_tables(r, &req).await,
        "DeleteTable" => tables::delete_table(r, &req).await,
        "PutItem" => items::put_item(r, &req).await,
        "GetItem" => items::get_item(r, &req).await,
        "DeleteItem" => items::delete_item(r, &req).await,
        "UpdateItem" => items::update_item(r, &req).await,
        "BatchWriteItem" => batch::batch_write_item(r, &req).await,
        "BatchGetItem" => batch::batch_get_item(r, &req).await,
        "Query" => query::query(r, &req).await,
        "DescribeEndpoints" => Ok(tables::describe_endpoints(r)),
        "DescribeLimits" => Ok(tables::describe_limits()),
        "UpdateTable" => tables::update_table(r, &req).await,
        "TagResource" => tables::tag_resource(r, &req).await,
        "UntagResource" => tables::untag_resource(r, &req).await,
        "ListTagsOfResource" => tables::list_tags_of_resource(r, &req).await,
        "Scan" => query::scan(r, &req).await,
        "UpdateContinuousBackups" => backups::update_continuous_backups(r, &req).await,
        "DescribeContinuousBackups" => backups::describe_continuous_backups(r, &req).await,
        "RestoreTableToPointInTime" => backups::restore_table_to_point_in_time(r, &req).await,
        "CreateBackup" => backups::create_backup(r, &req).await,
        "DescribeBackup" => backups::describe_backup(r, &req).await,
        "ListBackups" => backups::list_backups(r, &req).await,
        "DeleteBackup" => backups::delete_backup(r, &req).await,
        "RestoreTableFromBackup" => backups::restore_table_from_backup(r, &req).await,
        _ => Err(unknown_operation()),
    }
}

fn unknown_operation() -> ApiError {
    ApiError::new(ErrorCode::UnknownOperation, "")
}

fn error_body(e: &ApiError, op: &str, table: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({ "__type": e.code.wire_type() });
    if !e.message.is_empty() || e.code != ErrorCode::UnknownOperation {
        v["message"] = serde_json::Value::String(e.message.clone());
    }
    if e.code == ErrorCode::ProvisionedThroughputExceeded {
        // DynamoDB's ThrottlingReasons: Table + Read/Write + the limit. A storage node's refusal
        // (its partition or node bucket) carries no limit of its own: a key range's.
        let kind = match op {
            "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" => "Write",
            _ => "Read",
        };
        let limit = e.throttled_by.unwrap_or("KeyRangeThroughputExceeded");
        v["ThrottlingReasons"] = serde_json::json!([{
            "reason": format!("Table{kind}{limit}"),
            "resource": format!("{}{}", tables::ARN_PREFIX, table.unwrap_or_default()),
        }]);
    }
    if let Some(item) = e.item.as_ref().and_then(|b| serde_json::from_slice(b).ok()) {
        v["Item"] = item;
    }
    serde_json::to_vec(&v).expect("json")
}
