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
pub mod model;
pub mod server;
pub(crate) mod stream;
pub mod telemetry;

pub use config::{Args, LogFormat, RouterConfig};
pub use engine::Engine;

/// Sets up structured logs on stderr only; `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    // Without an OTLP endpoint nothing here can fail.
    let _ = telemetry::Telemetry::init(format, None, std::time::Duration::from_secs(60));
}
