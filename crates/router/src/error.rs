//! The router's one error type, and its mapping to gRPC status codes: the
//! only place a status code is chosen, for handlers, the auth layer and
//! streams alike. (Bytes that do not even decode are
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
    /// A conflict with a concurrent change; retrying the call may succeed.
    #[error("{0}")]
    Busy(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// A rate or failed-authentication limit was reached.
    #[error("{0}")]
    Exhausted(String),
    /// A stream fell behind and lost items; the client must subscribe again.
    #[error("{0}")]
    DataLoss(String),
    /// The call was not answered within the router's handler timeout.
    #[error("{0}")]
    Timeout(String),
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
            // Retryable conflicts: the caller may try again at once.
            EngineError::Busy(_) => Code::Aborted,
            EngineError::Unauthenticated(_) => Code::Unauthenticated,
            EngineError::Exhausted(_) => Code::ResourceExhausted,
            EngineError::DataLoss(_) => Code::DataLoss,
            EngineError::Timeout(_) => Code::DeadlineExceeded,
            EngineError::Store(s) => match s {
                StoreError::Busy(_) | StoreError::Fenced(_) => Code::Aborted,
                StoreError::Unavailable(_) => Code::Unavailable,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error the router answers with, and the code a client sees.
    #[test]
    fn each_error_has_one_deliberate_code() {
        let cases = [
            (EngineError::Invalid("x".into()), Code::InvalidArgument),
            (EngineError::NotFound("x".into()), Code::NotFound),
            (
                EngineError::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (
                EngineError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (EngineError::Busy("x".into()), Code::Aborted),
            (
                EngineError::Unauthenticated("x".into()),
                Code::Unauthenticated,
            ),
            (EngineError::Exhausted("x".into()), Code::ResourceExhausted),
            (EngineError::DataLoss("x".into()), Code::DataLoss),
            (EngineError::Timeout("x".into()), Code::DeadlineExceeded),
            (StoreError::Busy("c".into()).into(), Code::Aborted),
            (StoreError::Fenced("c".into()).into(), Code::Aborted),
            (
                StoreError::Unavailable("down".into()).into(),
                Code::Unavailable,
            ),
            (
                StoreError::Conflict("x".into()).into(),
                Code::FailedPrecondition,
            ),
            (
                StoreError::NotFound {
                    what: "handoff",
                    id: "h".into(),
                }
                .into(),
                Code::NotFound,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, message.as_str()));
        }
    }
}
