//! The probe's one error type. Configuration errors name the flag (the
//! config-file key is the flag without its dashes, `-` as `_`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A bad configuration value; `flag` is how the user set it.
    #[error("{flag}: {reason}")]
    Config { flag: &'static str, reason: String },
    #[error("cannot read config file {}: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {source}", path.display())]
    ParseConfig {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    /// A passive observation the bot posted that cannot be used; answered
    /// with 400.
    #[error("invalid observation: {0}")]
    Observation(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl ProbeError {
    pub(crate) fn config(flag: &'static str, reason: impl Into<String>) -> Self {
        ProbeError::Config {
            flag,
            reason: reason.into(),
        }
    }
}
