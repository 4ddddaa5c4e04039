//! The router's one error type, and its mapping to gRPC status codes: the
//! only place a status code is chosen. (Bytes that do not even decode are
//! refused before any handler runs, by `baton_proto::codec`, as
//! `INVALID_ARGUMENT` too.)

use baton_store::StoreError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad input; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not see or change this; the message says nothing
    /// about whether it exists.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        let code = match &e {
            EngineError::Invalid(_) => Code::InvalidArgument,
            EngineError::NotFound(_) => Code::NotFound,
            EngineError::FailedPrecondition(_) => Code::FailedPrecondition,
            EngineError::PermissionDenied(_) => Code::PermissionDenied,
            EngineError::Busy(_) => Code::Unavailable,
            EngineError::Store(s) => match s {
                StoreError::Busy(_) | StoreError::Unavailable(_) => Code::Unavailable,
                StoreError::Fenced(_) => Code::Aborted,
                StoreError::NotFound { .. } => Code::NotFound,
                StoreError::Conflict(_) => Code::FailedPrecondition,
                StoreError::Corrupt { .. } => Code::Internal,
            },
        };
        if code == Code::Internal || code == Code::Unavailable {
            tracing::warn!(error = %e, "request failed");
        }
        Status::new(code, e.to_string())
    }
}
