//! DynamoDB's error codes and the error every API call can fail with.

/// An error code that maps onto a DynamoDB exception. The numeric value crosses the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    Validation = 1,
    ResourceNotFound = 2,
    ResourceInUse = 3,
    ConditionalCheckFailed = 4,
    ProvisionedThroughputExceeded = 5,
    Serialization = 6,
    UnknownOperation = 7,
    InternalServerError = 8,
    LimitExceeded = 9,
    RequestLimitExceeded = 10,
    ServiceUnavailable = 11,
    ThrottlingException = 12,
    ItemCollectionSizeLimitExceeded = 13,
    TransactionConflict = 14,
    MissingAuthenticationToken = 15,
    UnrecognizedClient = 16,
    AccessDenied = 17,
    /// A request body above the largest request DynamoDB accepts (HTTP 413).
    RequestEntityTooLarge = 18,
    /// The Authorization header lacks a part SigV4 needs.
    IncompleteSignature = 19,
    /// The signature does not match, or its time or scope is wrong.
    InvalidSignature = 20,
    /// Backup and restore calls name a table that does not exist.
    TableNotFound = 21,
    /// A restore's target table exists already.
    TableAlreadyExists = 22,
    /// A restore from a table whose point-in-time recovery is off.
    PointInTimeRecoveryUnavailable = 23,
    /// A restore time outside the table's restorable window.
    InvalidRestoreTime = 24,
    /// No backup by that ARN.
    BackupNotFound = 25,
    /// The backup is still being made.
    BackupInUse = 26,
}

const ALL: [ErrorCode; 26] = [
    ErrorCode::Validation,
    ErrorCode::ResourceNotFound,
    ErrorCode::ResourceInUse,
    ErrorCode::ConditionalCheckFailed,
    ErrorCode::ProvisionedThroughputExceeded,
    ErrorCode::Serialization,
    ErrorCode::UnknownOperation,
    ErrorCode::InternalServerError,
    ErrorCode::LimitExceeded,
    ErrorCode::RequestLimitExceeded,
    ErrorCode::ServiceUnavailable,
    ErrorCode::ThrottlingException,
    ErrorCode::ItemCollectionSizeLimitExceeded,
    ErrorCode::TransactionConflict,
    ErrorCode::MissingAuthenticationToken,
    ErrorCode::UnrecognizedClient,
    ErrorCode::AccessDenied,
    ErrorCode::RequestEntityTooLarge,
    ErrorCode::IncompleteSignature,
    ErrorCode::InvalidSignature,
    ErrorCode::TableNotFound,
    ErrorCode::TableAlreadyExists,
    ErrorCode::PointInTimeRecoveryUnavailable,
    ErrorCode::InvalidRestoreTime,
    ErrorCode::BackupNotFound,
    ErrorCode::BackupInUse,
];

impl ErrorCode {
    /// The exception name as DynamoDB spells it.
    pub fn type_name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            Validation => "ValidationException",
            ResourceNotFound => "ResourceNotFoundException",
            ResourceInUse => "ResourceInUseException",
            ConditionalCheckFailed => "ConditionalCheckFailedException",
            ProvisionedThroughputExceeded => "ProvisionedThroughputExceededException",
            Serialization => "SerializationException",
            UnknownOperation => "UnknownOperationException",
            // NOTE: DynamoDB's own spelling, without the "Exception" suffix.
            InternalServerError => "InternalServerError",
            LimitExceeded => "LimitExceededException",
            RequestLimitExceeded => "RequestLimitExceeded",
            ServiceUnavailable => "ServiceUnavailableException",
            ThrottlingException => "ThrottlingException",
            ItemCollectionSizeLimitExceeded => "ItemCollectionSizeLimitExceededException",
            TransactionConflict => "TransactionConflictException",
            MissingAuthenticationToken => "MissingAuthenticationTokenException",
            UnrecognizedClient => "UnrecognizedClientException",
            AccessDenied => "AccessDeniedException",
            RequestEntityTooLarge => "RequestEntityTooLargeException",
            IncompleteSignature => "IncompleteSignatureException",
            InvalidSignature => "InvalidSignatureException",
            TableNotFound => "TableNotFoundException",
            TableAlreadyExists => "TableAlreadyExistsException",
            PointInTimeRecoveryUnavailable => "PointInTimeRecoveryUnavailableException",
            InvalidRestoreTime => "InvalidRestoreTimeException",
            BackupNotFound => "BackupNotFoundException",
            BackupInUse => "BackupInUseException",
        }
    }

    /// The `__type` of an error body. Clients read the part after `#`.
    pub fn wire_type(self) -> String {
        use ErrorCode::*;
        let namespace = match self {
            Validation => "com.amazon.coral.validate",
            Serialization
            | UnknownOperation
            | MissingAuthenticationToken
            | UnrecognizedClient
            | AccessDenied
            | RequestEntityTooLarge
            | IncompleteSignature
            | InvalidSignature
            | ServiceUnavailable => "com.amazon.coral.service",
            _ => "com.amazonaws.dynamodb.v20120810",
        };
        format!("{namespace}#{}", self.type_name())
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InternalServerError => 500,
            ErrorCode::ServiceUnavailable => 503,
            ErrorCode::RequestEntityTooLarge => 413,
            _ => 400,
        }
    }

    /// Whether the same request may succeed when retried.
    pub fn retryable(self) -> bool {
        use ErrorCode::*;
        matches!(
            self,
            ProvisionedThroughputExceeded
                | InternalServerError
                | RequestLimitExceeded
                | ServiceUnavailable
                | ThrottlingException
                | TransactionConflict
                | LimitExceeded
        )
    }

    pub fn from_u16(v: u16) -> Option<Self> {
        ALL.iter().copied().find(|c| *c as u16 == v)
    }
}

/// An API error: a code and DynamoDB's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.type_name())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The item as it was, for a ConditionalCheckFailedException of a request that asked for it
    /// (ReturnValuesOnConditionCheckFailure: ALL_OLD); canonical DynamoDB JSON.
    pub item: Option<Vec<u8>>,
    /// For ProvisionedThroughputExceededException: which limit (DynamoDB's ThrottlingReason
    /// limit type, e.g. `ProvisionedThroughputExceeded`, `KeyRangeThroughputExceeded`); the
    /// router adds the resource and the kind of operation.
    pub throttled_by: Option<&'static str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            item: None,
            throttled_by: None,
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Validation, message)
    }

    /// "One or more parameter values were invalid: ..."
    pub fn invalid_parameter(detail: impl std::fmt::Display) -> Self {
        Self::validation(format!(
            "One or more parameter values were invalid: {detail}"
        ))
    }
}

pub type Result<T> = std::result::Result<T, ApiError>;

/// Collects constraint violations into DynamoDB's "N validation error(s) detected: ..." message.
#[derive(Default)]
pub struct ValidationErrors(Vec<String>);

impl ValidationErrors {
    pub fn push(&mut self, value: &str, field: &str, constraint: &str) {
        self.0.push(format!(
            "Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
        ));
    }

    pub fn into_result(self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(ApiError::validation(format!(
                "1 validation error detected: {}",
                self.0[0]
            ))),
            n => Err(ApiError::validation(format!(
                "{n} validation errors detected: {}",
                self.0.join("; ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_u16() {
        for c in ALL {
            assert_eq!(ErrorCode::from_u16(c as u16), Some(c));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
    }

    #[test]
    fn validation_errors_count_themselves() {
        let mut v = ValidationErrors::default();
        v.push(
            "a",
            "tableName",
            "Member must have length greater than or equal to 3",
        );
        let e = v.into_result().unwrap_err();
        assert!(e
            .message
            .starts_with("1 validation error detected: Value 'a' at 'tableName'"));
        let mut v = ValidationErrors::default();
        v.push("a", "x", "c1");
        v.push("b", "y", "c2");
        assert!(v
            .into_result()
            .unwrap_err()
            .message
            .starts_with("2 validation errors detected: "));
    }
}
