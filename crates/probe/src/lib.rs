//! `baton-probe`, the health sidecar that runs next to one bot (SPEC §4).
//!
//! It measures the bot two ways and keeps both in one sliding window:
//!
//! - [`active`]: an HTTP GET or a `grpc.health.v1` Check every interval;
//! - [`passive`]: the bot posts the latency and outcome of its real
//!   requests to `POST /observe`, which never makes it wait;
//! - [`window`]: HdrHistogram sub-windows, rotated as time passes, merged
//!   into P50/P95/P99, error rate and sample count;
//! - [`report`]: one long-lived `ReportHealth` stream to the router, a
//!   report every interval, reconnecting with backoff when the router is away.
//!
//! [`Probe::start`] wires them together; `main.rs` only adds flags, logs and
//! signals.

#![forbid(unsafe_code)]

pub mod active;
pub mod config;
pub mod error;
pub mod passive;
pub mod report;
mod shared;
pub mod window;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;
use tracing::{Instrument, info};

pub use config::{ActiveProbe, Args, LogFormat, ProbeConfig, Token};
pub use error::ProbeError;
pub use passive::Observation;
pub use shared::Status;
pub use window::{Summary, Window};

use report::{Backoff, Reporter};
use shared::Shared;

/// How long the tasks may take to finish after [`Probe::stop`].
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A running probe: its tasks, and what `/healthz` shows.
pub struct Probe {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Probe {
    /// Binds `config.listen` and starts the active prober (if configured),
    /// the observation endpoint and the reporter.
    pub async fn start(config: ProbeConfig) -> Result<Self, ProbeError> {
        config.validate()?;
        let prober = match config.active_probe()? {
            Some(probe) => Some(active::Prober::new(
                &probe,
                config.interval,
                config.timeout,
            )?),
            None => None,
        };
        let authorization = match &config.token {
            Some(token) => {
                let mut value = MetadataValue::try_from(token.bearer())
                    .map_err(|_| ProbeError::config("--token", "is not a valid header value"))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let listen_error = |source| ProbeError::Listen {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        let shared = Arc::new(Shared::new(
            config.bot.clone(),
            config.window,
            config.window_slots,
        ));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Some(prober) = prober {
            tasks.push(tokio::spawn(
                prober
                    .run(Arc::clone(&shared), stopped.clone())
                    .in_current_span(),
            ));
        }
        tasks.push(tokio::spawn(
            passive::serve(
                listener,
                Arc::clone(&shared),
                config.queue_capacity,
                stopped.clone(),
            )
            .in_current_span(),
        ));
        let reporter = Reporter {
            routers: config.router.clone(),
            authorization,
            tls: client_tls(&config)?,
            every: config.report_every,
            backoff: Backoff::new(config.reconnect_min, config.reconnect_max),
            shared: Arc::clone(&shared),
        };
        tasks.push(tokio::spawn(reporter.run(stopped).in_current_span()));
        info!(
            %addr,
            bot = %config.bot,
            routers = ?config.router,
            active = config
                .http_url
                .as_deref()
                .or(config.grpc_health.as_deref())
                .unwrap_or("none (passive only)"),
            window = %humantime::format_duration(config.window),
            "baton-probe listening"
        );
        Ok(Self {
            shared,
            addr,
            stop,
            tasks,
        })
    }

    /// Where `POST /observe` and `GET /healthz` are served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The figures `GET /healthz` shows.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// Stops probing and accepting observations, closes the report stream
    /// (the router gets the end of it) and waits for the tasks, at most a
    /// few seconds.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let all = async {
            for task in self.tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(STOP_GRACE, all).await.is_err() {
            info!("tasks still running after the grace period: leaving them");
        }
    }
}

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

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received"),
        () = term => info!("SIGTERM received"),
    }
}

/// The TLS settings towards the router, read from the configured files.
fn client_tls(
    config: &ProbeConfig,
) -> Result<Option<tonic::transport::ClientTlsConfig>, ProbeError> {
    let Some(ca) = &config.tls_ca else {
        return Ok(None);
    };
    let read = |flag: &'static str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| ProbeError::config(flag, format!("cannot read {}: {e}", path.display())))
    };
    let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(read("--tls-ca", ca)?),
    );
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let identity = tonic::transport::Identity::from_pem(
            read("--tls-cert", cert)?,
            read("--tls-key", key)?,
        );
        tls = tls.identity(identity);
    }
    Ok(Some(tls))
}
