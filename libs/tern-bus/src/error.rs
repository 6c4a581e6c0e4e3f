use std::time::Duration;

use async_nats::{RequestError, RequestErrorKind};
use tern_model::{ApiError, ErrorCode};
use tern_proto::status;

/// Why a call over the bus failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// An API error raised by the callee; it maps onto a DynamoDB exception.
    #[error("{0}")]
    Api(ApiError),
    /// The callee does not serve this partition at this epoch (or is not its leader); the body is
    /// the leader hint, possibly empty.
    #[error("redirect (leader hint {0:?})")]
    Redirect(String),
    #[error("no reply from {subject} within {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error("no service is listening on {0}")]
    NoResponders(String),
    #[error("bus transport: {0}")]
    Transport(String),
    #[error("undecodable message: {0}")]
    Decode(String),
    /// A name that cannot be part of a subject.
    #[error("{0}")]
    InvalidName(String),
    /// A service's own status (1001 and up, e.g. a storage node's [`tern_proto::status`]
    /// codes): its typed client turns it into that service's error.
    #[error("status {code}: {message}")]
    Status { code: u16, message: String },
}

impl BusError {
    /// Whether retrying the same call may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            BusError::Api(e) => e.code.retryable(),
            BusError::Redirect(_) | BusError::Timeout { .. } | BusError::NoResponders(_) => true,
            BusError::Transport(_) => true,
            BusError::Decode(_) | BusError::InvalidName(_) | BusError::Status { .. } => false,
        }
    }

    /// The DynamoDB error a client sees for this failure.
    pub fn into_api(self) -> ApiError {
        match self {
            BusError::Api(e) => e,
            other => {
                tracing::warn!(error = %other, "internal failure answered as InternalServerError");
                ApiError::new(ErrorCode::InternalServerError, "Internal server error")
            }
        }
    }

    pub(crate) fn to_wire(&self) -> (u16, Vec<u8>) {
        match self {
            BusError::Api(e) => (e.code as u16, e.message.clone().into_bytes()),
            BusError::Redirect(hint) => (status::REDIRECT, hint.clone().into_bytes()),
            BusError::Status { code, message } => (*code, message.clone().into_bytes()),
            other => (
                ErrorCode::InternalServerError as u16,
                other.to_string().into_bytes(),
            ),
        }
    }

    pub(crate) fn from_wire(code: u16, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body).into_owned();
        if code == status::REDIRECT {
            return BusError::Redirect(text);
        }
        match ErrorCode::from_u16(code) {
            Some(code) => BusError::Api(ApiError::new(code, text)),
            None if code > status::REDIRECT => BusError::Status {
                code,
                message: text,
            },
            None => BusError::Decode(format!("unknown status {code}: {text}")),
        }
    }

    pub(crate) fn from_request_error(subject: &str, timeout: Duration, e: RequestError) -> Self {
        match e.kind() {
            RequestErrorKind::TimedOut => BusError::Timeout {
                subject: subject.to_string(),
                timeout,
            },
            RequestErrorKind::NoResponders => BusError::NoResponders(subject.to_string()),
            _ => BusError::Transport(format!("request to {subject}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_cross_the_wire() {
        for e in [
            BusError::Api(ApiError::validation("v")),
            BusError::Redirect("storage-c".into()),
            BusError::Status {
                code: 1003,
                message: "too large".into(),
            },
        ] {
            let (code, body) = e.to_wire();
            assert_eq!(
                format!("{:?}", BusError::from_wire(code, &body)),
                format!("{e:?}")
            );
        }
        // Below the redirect, a code that is no DynamoDB error is not understood.
        assert!(matches!(
            BusError::from_wire(999, b"?"),
            BusError::Decode(_)
        ));
    }
}
