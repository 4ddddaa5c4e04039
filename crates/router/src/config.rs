//! The router's configuration: a TOML file (unknown keys rejected), then
//! `BATON_<SECTION>__<KEY>` environment variables, then `--set` and the
//! named flags, over defaults that run with no file at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use baton_policy::config::duration;
use baton_policy::{Config as PolicyConfig, ConfigError};

use crate::auth::AuthConfig;
use clap::Parser;
use serde::{Deserialize, Serialize};

/// Baton router: decides when a contact moves from one bot to another.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "baton-router",
    version,
    after_help = "Intent models: `baton-router train --help` and `baton-router eval --help`."
)]
pub struct Args {
    /// TOML configuration file; every key is optional (see deploy/baton.toml).
    #[arg(long, env = "BATON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve gRPC on.
    #[arg(long, env = "BATON_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded store (created when missing).
    #[arg(long, env = "BATON_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep state in memory only (tests, demos): nothing survives a restart.
    #[arg(long, env = "BATON_MEMORY")]
    pub memory: bool,
    /// etcd endpoints, comma-separated (`http://127.0.0.1:2379,…`): share
    /// state with other routers instead of the embedded store.
    #[arg(long = "etcd", env = "BATON_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix in etcd, so several deployments can share one cluster.
    #[arg(long, env = "BATON_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Allow listening on a non-loopback address with no tokens configured.
    #[arg(long, env = "BATON_INSECURE_ALLOW_REMOTE")]
    pub insecure_allow_remote: bool,
    /// TLS certificate chain (PEM); with --tls-key, serve TLS only.
    #[arg(long, env = "BATON_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "BATON_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: clients without one are refused.
    #[arg(long, env = "BATON_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// OTLP/gRPC endpoint for traces and metrics (e.g. http://127.0.0.1:4317).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "BATON_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Override one configuration key, e.g. `--set policy.threshold=0.8` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The `[server]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub memory: bool,
    pub log_format: LogFormat,
    /// How long in-flight decisions may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How often expired decisions are purged from the store.
    #[serde(with = "humantime_serde")]
    pub purge_every: Duration,
    /// Decisions buffered per `WatchDecisions`/`WatchHandoffs` subscriber.
    pub watch_buffer: usize,
    /// TLS: certificate chain and key (PEM files); both or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// TLS: require client certificates chaining to this CA (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Calls in flight per client connection (it binds only below
    /// `max_concurrent_streams`, which HTTP/2 holds already).
    pub max_concurrent_per_connection: usize,
    /// Baton calls handled at once by the whole router; past it a call is
    /// refused at once with RESOURCE_EXHAUSTED (load shedding).
    pub max_calls_in_flight: usize,
    /// A call not answered within this gets DEADLINE_EXCEEDED (a stream:
    /// its response head; a decision cut off still commits whole or not).
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Calls per second per principal (per client address without auth); 0 = no limit.
    pub rate_per_principal: f64,
    /// Calls a principal may make at once above its rate.
    pub rate_burst: f64,
    /// HTTP/2 `MAX_CONCURRENT_STREAMS` advertised to each client: calls
    /// (streams included) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// A connection with no call open this long after its last one is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A connection that has not completed TLS and HTTP/2 and started a
    /// call this long after it was accepted is closed.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// HTTP/2 keepalive pings this often: a peer that does not answer one
    /// within 20s is gone, and its streams are closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Failed authentications (missing or wrong token) allowed per client
    /// address per minute; past it the address gets RESOURCE_EXHAUSTED,
    /// whatever its token, until it earns tries back.
    pub auth_failures_per_minute: u32,
    /// OTLP/gRPC endpoint for traces and metrics; none: nothing is exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// How often metrics are exported.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// One STAY decision in this many gets a tracing span (1 = every one);
    /// every other decision always has one.
    pub stay_span_every: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            data_dir: PathBuf::from("baton-data"),
            memory: false,
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(10),
            purge_every: Duration::from_secs(600),
            watch_buffer: 1024,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            max_request_bytes: 4 * 1024 * 1024,
            max_concurrent_per_connection: 256,
            max_calls_in_flight: 10_000,
            call_timeout: Duration::from_secs(30),
            rate_per_principal: 5000.0,
            rate_burst: 10000.0,
            max_concurrent_streams: 100,
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(60),
            auth_failures_per_minute: 60,
            otlp_endpoint: None,
            metrics_interval: Duration::from_secs(15),
            stay_span_every: 100,
        }
    }
}

/// The `[etcd]` section: used when `endpoints` is not empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// This router's session lease: how long its contact locks outlive a crash.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Bound on every etcd call; past it the call fails as UNAVAILABLE.
    #[serde(with = "humantime_serde")]
    pub op_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Lock acquires and commits of different contacts sent to etcd as one
    /// transaction, at most (each nested with its own compares).
    pub batch_max: usize,
    /// Bytes of keys and values in one such transaction, about, at most
    /// (etcd refuses requests over its `--max-request-bytes`, 1.5 MiB).
    pub batch_bytes: usize,
    /// Such transactions on their way to etcd at once; what waits
    /// meanwhile goes in the next.
    pub batch_inflight: usize,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        let batch = baton_store::EtcdBatching::default();
        Self {
            endpoints: Vec::new(),
            prefix: "/baton/".into(),
            session_ttl: Duration::from_secs(10),
            op_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            batch_max: batch.max,
            batch_bytes: batch.bytes,
            batch_inflight: batch.inflight,
        }
    }
}

impl EtcdConfig {
    /// How the etcd store groups acquires and commits.
    pub fn batching(&self) -> baton_store::EtcdBatching {
        baton_store::EtcdBatching {
            max: self.batch_max,
            bytes: self.batch_bytes,
            inflight: self.batch_inflight,
        }
    }
}

/// The `[store]` section: how the embedded store writes and what it keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Writes in one batch (one journal record, synced with whatever else
    /// is waiting), at most.
    pub batch_max: usize,
    /// How long a batch waits for more writes after its first; 0s commits
    /// what is queued at once (no added latency; batches still form while
    /// the previous one syncs).
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// How often one batch's commit is made durable in the redb file; the
    /// batches in between are durable through the journal alone, which
    /// replays them after a crash. Longer: fewer page writes, a longer
    /// replay after a crash. 0s checkpoints as often as the disk allows.
    #[serde(with = "humantime_serde")]
    pub checkpoint_every: Duration,
    /// A checkpoint also comes once the journal's current file holds this
    /// many bytes, bounding the journal on disk (two files) and the replay.
    pub checkpoint_bytes: u64,
    /// How long one redb transaction takes batches before it commits (in
    /// memory); readers see its rows meanwhile. Longer: less CPU per
    /// write, more rows held in memory. 0s commits every batch.
    #[serde(with = "humantime_serde")]
    pub commit_every: Duration,
    /// A contact with no handoff, acknowledgement or outcome for this long
    /// is deleted, with its handoff index, stored decisions and deferral;
    /// so is an outcome window no outcome reached. At least the longest
    /// rule window (the policy's windows and TTLs).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let defaults = baton_store::EmbeddedOptions::default();
        Self {
            batch_max: defaults.batching.max,
            batch_wait: defaults.batching.wait,
            checkpoint_every: defaults.checkpoints.every,
            checkpoint_bytes: defaults.checkpoints.bytes,
            commit_every: defaults.checkpoints.commit_every,
            retention: defaults.retention,
        }
    }
}

impl StoreConfig {
    /// The embedded store's options.
    pub fn embedded(&self) -> baton_store::EmbeddedOptions {
        baton_store::EmbeddedOptions {
            batching: baton_store::Batching {
                max: self.batch_max,
                wait: self.batch_wait,
            },
            checkpoints: baton_store::Checkpoints {
                every: self.checkpoint_every,
                bytes: self.checkpoint_bytes,
                commit_every: self.commit_every,
            },
            retention: self.retention,
        }
    }
}

/// Everything the router runs with.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouterConfig {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub etcd: EtcdConfig,
    pub auth: AuthConfig,
    #[serde(flatten)]
    pub policy: PolicyConfig,
}

impl RouterConfig {
    /// Builds the configuration from the file, the environment and the flags.
    pub fn load(args: &Args) -> anyhow::Result<Self> {
        let mut table = match &args.config {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        // Which keys the environment and `--set` gave, so that a bad value
        // is blamed on what set it; the last setter wins, as in the table.
        let mut origins: Vec<(String, String)> = Vec::new();
        for (name, value) in std::env::vars() {
            if let Some(key) = env_key(&name) {
                set_key(&mut table, &key, &value).with_context(|| format!("environment {name}"))?;
                origins.push((key, format!("environment variable {name}")));
            }
        }
        for item in &args.overrides {
            let Some((key, value)) = item.split_once('=') else {
                bail!("--set '{item}': expected KEY=VALUE");
            };
            set_key(&mut table, key.trim(), value.trim())
                .with_context(|| format!("--set {item}"))?;
            origins.push((key.trim().to_owned(), format!("--set {item}")));
        }
        Self::from_table(table)
            .and_then(|config| config.with_flags(args))
            .map_err(|e| blame(e, &origins))
    }

    /// Applies the named flags over the configuration, and checks it again.
    fn with_flags(self, args: &Args) -> anyhow::Result<Self> {
        let mut config = self;
        if let Some(listen) = args.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = &args.data_dir {
            config.server.data_dir = dir.clone();
        }
        if args.memory {
            config.server.memory = true;
        }
        if !args.etcd.is_empty() {
            config.etcd.endpoints = args.etcd.clone();
        }
        if let Some(prefix) = &args.etcd_prefix {
            config.etcd.prefix = prefix.clone();
        }
        if args.insecure_allow_remote {
            config.auth.insecure_allow_remote = true;
        }
        if args.tls_cert.is_some() {
            config.server.tls_cert = args.tls_cert.clone();
            config.server.tls_key = args.tls_key.clone();
        }
        if let Some(endpoint) = &args.otlp_endpoint {
            config.server.otlp_endpoint = Some(endpoint.clone());
        }
        if args.tls_client_ca.is_some() {
            config.server.tls_client_ca = args.tls_client_ca.clone();
        }
        config.validate_server()?;
        config.validate_etcd()?;
        if let Some(format) = args.log_format {
            config.server.log_format = format;
        }
        Ok(config)
    }

    /// Reads a configuration file alone: no environment, no flags.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        Self::from_table(read_table(path)?)
    }

    /// Splits off `[server]`; every other section is the policy's. Both
    /// halves reject unknown keys.
    pub fn from_table(mut table: toml::Table) -> anyhow::Result<Self> {
        let server = match table.remove("server") {
            Some(v) => v
                .try_into::<ServerConfig>()
                .context("config section [server]")?,
            None => ServerConfig::default(),
        };
        let auth = match table.remove("auth") {
            Some(v) => v
                .try_into::<AuthConfig>()
                .context("config section [auth]")?,
            None => AuthConfig::default(),
        };
        let store = match table.remove("store") {
            Some(v) => v
                .try_into::<StoreConfig>()
                .context("config section [store]")?,
            None => StoreConfig::default(),
        };
        let etcd = match table.remove("etcd") {
            Some(v) => v
                .try_into::<EtcdConfig>()
                .context("config section [etcd]")?,
            None => EtcdConfig::default(),
        };
        let text = toml::to_string(&table).context("config")?;
        let policy = PolicyConfig::from_toml(&text)?;
        auth.check_roles(&policy)?;
        let config = Self {
            server,
            store,
            etcd,
            auth,
            policy,
        };
        config.validate_etcd()?;
        config.validate_server()?;
        config.validate_store()?;
        Ok(config)
    }

    fn validate_store(&self) -> anyhow::Result<()> {
        let s = &self.store;
        within("store.batch_max", s.batch_max, 1, MAX_BATCH)?;
        duration("store.batch_wait", s.batch_wait, false)?;
        if s.batch_wait > MAX_BATCH_WAIT {
            return Err(invalid("store.batch_wait", "must be at most 100ms").into());
        }
        duration("store.commit_every", s.commit_every, false)?;
        if s.commit_every > MAX_COMMIT_EVERY {
            return Err(invalid("store.commit_every", "must be at most 1s").into());
        }
        duration("store.checkpoint_every", s.checkpoint_every, false)?;
        if s.checkpoint_every > MAX_CHECKPOINT_EVERY {
            return Err(invalid("store.checkpoint_every", "must be at most 10m").into());
        }
        within(
            "store.checkpoint_bytes",
            usize::try_from(s.checkpoint_bytes).unwrap_or(usize::MAX),
            MIN_CHECKPOINT_BYTES,
            MAX_CHECKPOINT_BYTES,
        )?;
        duration("store.retention", s.retention, true)?;
        let p = &self.policy.policy;
        let (longest, key) = [
            (p.circular_window, "policy.circular_window"),
            (p.chain_gap, "policy.chain_gap"),
            (p.rate_window_short, "policy.rate_window_short"),
            (p.rate_window_long, "policy.rate_window_long"),
            (p.context_ttl, "policy.context_ttl"),
            (p.decision_ttl, "policy.decision_ttl"),
            (self.policy.health.defer_window, "health.defer_window"),
        ]
        .into_iter()
        .max_by_key(|(d, _)| *d)
        .unwrap_or_default();
        if s.retention < longest {
            let why = format!(
                "must be at least the longest rule window ({key} = {})",
                humantime::format_duration(longest)
            );
            return Err(invalid("store.retention", &why).into());
        }
        Ok(())
    }

    fn validate_server(&self) -> anyhow::Result<()> {
        let s = &self.server;
        for (key, value, nonzero) in [
            ("server.shutdown_grace", s.shutdown_grace, false),
            ("server.purge_every", s.purge_every, true),
            ("server.metrics_interval", s.metrics_interval, true),
            ("server.idle_timeout", s.idle_timeout, true),
            ("server.handshake_timeout", s.handshake_timeout, true),
            ("server.keepalive_interval", s.keepalive_interval, true),
            ("server.call_timeout", s.call_timeout, true),
        ] {
            duration(key, value, nonzero)?;
        }
        // Each watcher's buffer is allocated up front (and the decision
        // broadcast's too): a huge one must stop the router here, not later.
        within("server.watch_buffer", s.watch_buffer, 1, MAX_WATCH_BUFFER)?;
        within(
            "server.max_concurrent_per_connection",
            s.max_concurrent_per_connection,
            1,
            MAX_CONCURRENT_PER_CONNECTION,
        )?;
        within(
            "server.max_calls_in_flight",
            s.max_calls_in_flight,
            1,
            MAX_CALLS_IN_FLIGHT,
        )?;
        within(
            "server.max_request_bytes",
            s.max_request_bytes,
            1024,
            MAX_REQUEST_BYTES,
        )?;
        within(
            "server.max_concurrent_streams",
            s.max_concurrent_streams as usize,
            1,
            MAX_CONCURRENT_STREAMS,
        )?;
        within(
            "server.auth_failures_per_minute",
            s.auth_failures_per_minute as usize,
            1,
            MAX_AUTH_FAILURES_PER_MINUTE,
        )?;
        if s.keepalive_interval < Duration::from_secs(1) {
            return Err(invalid("server.keepalive_interval", "must be at least 1s").into());
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            bail!("config keys 'server.tls_cert' and 'server.tls_key' go together");
        }
        if s.tls_client_ca.is_some() && s.tls_cert.is_none() {
            bail!("config key 'server.tls_client_ca' needs 'server.tls_cert' and 'server.tls_key'");
        }
        if let Some(e) = &s.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            bail!("OTLP endpoint '{e}' must be a URL like http://127.0.0.1:4317");
        }
        if s.metrics_interval < Duration::from_millis(100) {
            bail!("config key 'server.metrics_interval' must be at least 100ms");
        }
        if s.stay_span_every == 0 {
            bail!("config key 'server.stay_span_every' must be at least 1");
        }
        if !(s.rate_per_principal.is_finite() && s.rate_per_principal >= 0.0) {
            bail!("config key 'server.rate_per_principal' must be a number >= 0 (0 = no limit)");
        }
        if s.rate_per_principal > 0.0 && !(s.rate_burst.is_finite() && s.rate_burst >= 1.0) {
            bail!("config key 'server.rate_burst' must be at least 1");
        }
        Ok(())
    }

    fn validate_etcd(&self) -> anyhow::Result<()> {
        let e = &self.etcd;
        for url in &e.endpoints {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                bail!("etcd endpoint '{url}' must be a URL like http://127.0.0.1:2379");
            }
        }
        if !e.prefix.starts_with('/') || !e.prefix.ends_with('/') {
            bail!(
                "config key 'etcd.prefix' must start and end with '/', got '{}'",
                e.prefix
            );
        }
        if e.session_ttl < Duration::from_secs(2) {
            return Err(invalid(
                "etcd.session_ttl",
                "must be at least 2s (etcd's minimum lease)",
            )
            .into());
        }
        for (key, value) in [
            ("etcd.session_ttl", e.session_ttl),
            ("etcd.op_timeout", e.op_timeout),
            ("etcd.connect_timeout", e.connect_timeout),
        ] {
            duration(key, value, true)?;
        }
        // Each part of a batch has at most 8 operations; etcd's default
        // --max-txn-ops (128) bounds the batch and each part's operations
        // together.
        within("etcd.batch_max", e.batch_max, 1, 100)?;
        within("etcd.batch_bytes", e.batch_bytes, 16 * 1024, 1024 * 1024)?;
        within("etcd.batch_inflight", e.batch_inflight, 1, 64)?;
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// This configuration with `KEY=VALUE` items applied over it, as
    /// `--set` applies them, and checked again.
    pub fn with_overrides(&self, items: &[String]) -> anyhow::Result<Self> {
        let mut table: toml::Table = self.to_toml().parse().context("configuration as TOML")?;
        for item in items {
            let Some((key, value)) = item.split_once('=') else {
                bail!("--set '{item}': expected KEY=VALUE");
            };
            set_key(&mut table, key.trim(), value.trim())
                .with_context(|| format!("--set {item}"))?;
        }
        let config = Self::from_table(table)?;
        config.validate_server()?;
        config.validate_etcd()?;
        Ok(config)
    }
}

/// Baton calls in flight router-wide, at most (tokio's semaphore bound).
const MAX_CALLS_IN_FLIGHT: usize = 1 << 24;
/// Writes in one store transaction, at most.
const MAX_BATCH: usize = 65_536;
/// The longest a store batch may wait for more writes.
const MAX_BATCH_WAIT: Duration = Duration::from_millis(100);
/// The longest redb's transaction may take batches before it commits.
const MAX_COMMIT_EVERY: Duration = Duration::from_secs(1);
/// The longest a store checkpoint interval may be.
const MAX_CHECKPOINT_EVERY: Duration = Duration::from_secs(600);
/// Journal bytes that trigger a checkpoint: 64 KiB ..= 4 GiB.
const MIN_CHECKPOINT_BYTES: usize = 64 << 10;
const MAX_CHECKPOINT_BYTES: usize = 4 << 30;
/// Decisions buffered per watcher, at most.
const MAX_WATCH_BUFFER: usize = 65_536;
/// Calls in flight per connection, at most.
const MAX_CONCURRENT_PER_CONNECTION: usize = 100_000;
/// HTTP/2 streams per connection, at most.
const MAX_CONCURRENT_STREAMS: usize = 100_000;
/// Failed authentications per address per minute, at most.
const MAX_AUTH_FAILURES_PER_MINUTE: usize = 1_000_000;
/// The largest request message that may be allowed: 1 GiB.
const MAX_REQUEST_BYTES: usize = 1 << 30;

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// A count that must lie in `min..=max`.
fn within(key: &str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(key, format!("{value} is not in {min}..={max}")))
    }
}

/// Names the environment variable or `--set` that gave a refused key, when
/// one did: the key alone would send an operator looking in the file.
fn blame(error: anyhow::Error, origins: &[(String, String)]) -> anyhow::Error {
    let key = match error.downcast_ref::<ConfigError>() {
        Some(ConfigError::Invalid { key, .. }) => key.clone(),
        _ => return error,
    };
    match origins.iter().rev().find(|(k, _)| *k == key) {
        Some((_, origin)) => error.context(origin.clone()),
        None => error,
    }
}

fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("config file {}", path.display()))
}

/// `BATON_POLICY__LOCK_WAIT` → `policy.lock_wait`; variables without `__`
/// are the flags' own (`BATON_LISTEN`).
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix("BATON_")?;
    rest.contains("__").then(|| {
        rest.split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join(".")
    })
}

/// Sets a dotted key; the value is read as TOML (`0.8`, `true`, `["a"]`)
/// and otherwise taken as a string (`30m`).
fn set_key(table: &mut toml::Table, key: &str, value: &str) -> anyhow::Result<()> {
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("'{key}' is not a configuration key");
    }
    let (last, sections) = parts.split_last().context("empty key")?;
    let mut node = table;
    for section in sections {
        let entry = node
            .entry((*section).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry
            .as_table_mut()
            .with_context(|| format!("'{section}' in '{key}' is not a section"))?;
    }
    node.insert((*last).to_owned(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::parse_from(std::iter::once("baton-router").chain(list.iter().copied()))
    }

    #[test]
    fn no_file_means_the_defaults() {
        let c = RouterConfig::load(&args(&[])).unwrap();
        assert_eq!(c, RouterConfig::default());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:7400");
    }

    #[test]
    fn set_overrides_typed_values_and_durations() {
        let c = RouterConfig::load(&args(&[
            "--set",
            "policy.threshold=0.8",
            "--set",
            "policy.lock_wait=1s",
            "--set",
            "server.shutdown_grace=3s",
            "--listen",
            "127.0.0.1:9000",
        ]))
        .unwrap();
        assert_eq!(c.policy.policy.threshold, 0.8);
        assert_eq!(c.policy.policy.lock_wait, Duration::from_secs(1));
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(3));
        assert_eq!(c.server.listen.port(), 9000);
    }

    #[test]
    fn typos_are_errors_that_name_the_key() {
        let err = RouterConfig::load(&args(&["--set", "policy.treshold=0.8"])).unwrap_err();
        assert!(format!("{err:#}").contains("treshold"), "{err:#}");
        let err = RouterConfig::load(&args(&["--set", "server.lisen=1"])).unwrap_err();
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
        let err = RouterConfig::load(&args(&["--set", "nonsense"])).unwrap_err();
        assert!(format!("{err:#}").contains("KEY=VALUE"), "{err:#}");
    }

    #[test]
    fn etcd_flags_and_their_mistakes() {
        let c = RouterConfig::load(&args(&[
            "--etcd",
            "http://127.0.0.1:2379,http://127.0.0.1:2380",
            "--etcd-prefix",
            "/team-a/",
        ]))
        .unwrap();
        assert_eq!(c.etcd.endpoints.len(), 2);
        assert_eq!(c.etcd.prefix, "/team-a/");
        let err = RouterConfig::load(&args(&["--etcd", "127.0.0.1:2379"])).unwrap_err();
        assert!(format!("{err:#}").contains("must be a URL"), "{err:#}");
        let err = RouterConfig::load(&args(&["--etcd-prefix", "baton"])).unwrap_err();
        assert!(format!("{err:#}").contains("etcd.prefix"), "{err:#}");
        let err = RouterConfig::load(&args(&["--set", "etcd.session_ttl=500ms"])).unwrap_err();
        assert!(format!("{err:#}").contains("etcd.session_ttl"), "{err:#}");
    }

    #[test]
    fn env_names_map_to_keys() {
        assert_eq!(
            env_key("BATON_POLICY__LOCK_WAIT").as_deref(),
            Some("policy.lock_wait")
        );
        assert_eq!(env_key("BATON_LISTEN"), None);
        assert_eq!(env_key("HOME"), None);
    }

    #[test]
    fn printed_config_reads_back_identically() {
        let c = RouterConfig::default();
        let table: toml::Table = c.to_toml().parse().unwrap();
        assert_eq!(RouterConfig::from_table(table).unwrap(), c);
    }

    #[test]
    fn absurd_values_stop_the_router_naming_the_key() {
        let cases = [
            (
                "server.watch_buffer=4611686018427387904",
                "server.watch_buffer",
            ),
            ("server.watch_buffer=0", "server.watch_buffer"),
            (
                "server.max_concurrent_per_connection=4611686018427387904",
                "server.max_concurrent_per_connection",
            ),
            (
                "server.max_request_bytes=4611686018427387904",
                "server.max_request_bytes",
            ),
            ("server.purge_every=0s", "server.purge_every"),
            ("store.batch_max=0", "store.batch_max"),
            ("store.checkpoint_every=11m", "store.checkpoint_every"),
            ("store.commit_every=2s", "store.commit_every"),
            ("store.checkpoint_bytes=1024", "store.checkpoint_bytes"),
            ("server.max_calls_in_flight=0", "server.max_calls_in_flight"),
            ("server.call_timeout=0s", "server.call_timeout"),
            ("store.batch_wait=1s", "store.batch_wait"),
            ("store.retention=0s", "store.retention"),
            ("store.retention=1h", "store.retention"),
            ("server.idle_timeout=0s", "server.idle_timeout"),
            ("server.handshake_timeout=0s", "server.handshake_timeout"),
            (
                "server.handshake_timeout=1000000000y",
                "server.handshake_timeout",
            ),
            (
                "server.keepalive_interval=10ms",
                "server.keepalive_interval",
            ),
            (
                "server.max_concurrent_streams=0",
                "server.max_concurrent_streams",
            ),
            (
                "server.max_concurrent_streams=4294967295",
                "server.max_concurrent_streams",
            ),
            (
                "server.auth_failures_per_minute=0",
                "server.auth_failures_per_minute",
            ),
            ("server.shutdown_grace=1000000000y", "server.shutdown_grace"),
            ("etcd.op_timeout=1000000000y", "etcd.op_timeout"),
            ("etcd.session_ttl=1000000000y", "etcd.session_ttl"),
            ("etcd.batch_max=0", "etcd.batch_max"),
            ("etcd.batch_max=128", "etcd.batch_max"),
            ("etcd.batch_bytes=2000000", "etcd.batch_bytes"),
            ("etcd.batch_inflight=0", "etcd.batch_inflight"),
            ("policy.context_ttl=1000000000y", "policy.context_ttl"),
            ("policy.decision_ttl=1000000000y", "policy.decision_ttl"),
            ("policy.rate_window_long=0s", "policy.rate_window_long"),
            ("health.defer_lock_attempts=0", "health.defer_lock_attempts"),
            ("limits.message_bytes=0", "limits.message_bytes"),
            ("limits.handoff_id_bytes=20", "limits.handoff_id_bytes"),
        ];
        for (set, key) in cases {
            let err = RouterConfig::load(&args(&["--set", set])).unwrap_err();
            let text = format!("{err:#}");
            assert!(
                text.starts_with(&format!("--set {set}: config key '{key}' ")),
                "{set}: {text}"
            );
        }
    }

    #[test]
    fn a_bad_key_is_blamed_on_what_set_it() {
        let origins = vec![
            (
                "server.watch_buffer".to_owned(),
                "environment variable BATON_SERVER__WATCH_BUFFER".to_owned(),
            ),
            (
                "policy.threshold".to_owned(),
                "--set policy.threshold=2".to_owned(),
            ),
        ];
        let refused = |key: &str| anyhow::Error::from(invalid(key, "is wrong"));
        assert_eq!(
            format!("{:#}", blame(refused("server.watch_buffer"), &origins)),
            "environment variable BATON_SERVER__WATCH_BUFFER: \
             config key 'server.watch_buffer' is wrong"
        );
        // A key from the file is named alone.
        assert_eq!(
            format!("{:#}", blame(refused("server.purge_every"), &origins)),
            "config key 'server.purge_every' is wrong"
        );
    }

    #[test]
    fn a_token_role_for_an_unknown_bot_stops_the_router() {
        let text = "[[auth.principals]]\nrole = \"bot:ghost\"\ntoken_env = \"X\"\n";
        let err = RouterConfig::from_table(text.parse().unwrap()).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "config key 'auth.principals[0].role' 'bot:ghost' names a bot that is not configured"
        );
    }

    #[test]
    fn the_shipped_example_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/baton.toml");
        let c = RouterConfig::load(&args(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(c, RouterConfig::default());
    }
}
