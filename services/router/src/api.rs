//! The HTTP surface: `POST /` with `X-Amz-Target: DynamoDB_20120810.<Op>`, answered in
//! `application/x-amz-json-1.0`; errors as DynamoDB sends them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tern_model::{ApiError, ErrorCode};
use tracing::Instrument;

use crate::metrics::inc;
use crate::{items, tables, Router};

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const TARGET_PREFIX: &str = "DynamoDB_20120810.";
/// DynamoDB's largest request (BatchWriteItem) is 16 MB.
const MAX_BODY: usize = 16 * 1024 * 1024 + 64 * 1024;

pub fn app(router: Arc<Router>) -> axum::Router {
    axum::Router::new()
        .route("/", post(handle))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(router)
}

async fn metrics(State(r): State<Arc<Router>>) -> String {
    r.metrics.render()
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

async fn handle(State(r): State<Arc<Router>>, headers: HeaderMap, body: Bytes) -> Response {
    inc(&r.metrics.requests);
    let request_id = format!(
        "{}-{:016X}",
        r.instance,
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let op = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let span = tracing::info_span!("dynamodb", op = %op, request_id = %request_id);
    let result = dispatch(&r, &op, &body).instrument(span).await;
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
            (status, error_body(&e))
        }
    };
    let mut resp = (status, Body::from(body)).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

async fn dispatch(r: &Router, target: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let Some(op) = target.strip_prefix(TARGET_PREFIX) else {
        return Err(unknown_operation());
    };
    let req = crate::json::Request::parse(body)?;
    match op {
        "CreateTable" => tables::create_table(r, &req).await,
        "DescribeTable" => tables::describe_table(r, &req).await,
        "ListTables" => tables::list_tables(r, &req).await,
        "DeleteTable" => tables::delete_table(r, &req).await,
        "PutItem" => items::put_item(r, &req).await,
        "GetItem" => items::get_item(r, &req).await,
        "DeleteItem" => items::delete_item(r, &req).await,
        _ => Err(unknown_operation()),
    }
}

fn unknown_operation() -> ApiError {
    ApiError::new(ErrorCode::UnknownOperation, "")
}

fn error_body(e: &ApiError) -> Vec<u8> {
    let mut v = serde_json::json!({ "__type": e.code.wire_type() });
    if !e.message.is_empty() || e.code != ErrorCode::UnknownOperation {
        v["message"] = serde_json::Value::String(e.message.clone());
    }
    serde_json::to_vec(&v).expect("json")
}
