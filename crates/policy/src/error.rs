//! The policy crate's one error type.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("config: {0}")]
    Parse(String),
    #[error("config key '{key}' {problem}")]
    Invalid { key: String, problem: String },
}
