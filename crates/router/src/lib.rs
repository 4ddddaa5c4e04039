//! The Baton router: a thin gRPC adapter between the `baton.v1` wire
//! contract, the pure rules of `baton-policy` and the `baton-store` backends.
//!
//! - [`engine`] runs the decision pipeline and keeps the health and learning caches;
//! - [`convert`] validates what comes in and maps what goes out;
//! - [`handoff`] and [`admin`] are the tonic services;
//! - [`server`] assembles them with reflection, `grpc.health.v1` and a graceful drain.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod convert;
pub mod engine;
pub mod error;
pub mod handoff;
pub mod server;
pub(crate) mod stream;

pub use config::{Args, LogFormat, RouterConfig};
pub use engine::Engine;

/// Sets up structured logs on stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
