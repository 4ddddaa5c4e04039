//! The storage crate's one error type.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The contact lock was not acquired in time; the caller may retry.
    #[error("contact '{0}' is busy")]
    Busy(String),
    /// A write under a lock that is no longer held was refused.
    #[error("lock on contact '{0}' was lost before commit")]
    Fenced(String),
    #[error("{what} '{id}' not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    /// The backend cannot be reached or failed; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored {what} is unreadable: {source}")]
    Corrupt {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl StoreError {
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}
