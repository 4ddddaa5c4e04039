//! The probe's configuration: defaults that run with no file, then a TOML
//! file (`--config`, unknown keys rejected), then `BATON_PROBE_*`
//! environment variables and flags (a flag beats its variable).
//!
//! Every flag has a file key of the same name with `_` for `-`:
//!
//! ```toml
//! bot = "buyer"
//! router = ["http://10.0.0.1:7400", "http://10.0.0.2:7400"]
//! http_url = "http://127.0.0.1:8080/health"   # or grpc_health = "http://127.0.0.1:50051"
//! interval = "1s"
//! timeout = "2500ms"
//! window = "60s"
//! report_every = "1s"
//! listen = "127.0.0.1:7401"
//! queue_capacity = 4096
//! token_file = "/var/run/secrets/baton/probe-token"   # when the router requires tokens
//! ```
//!
//! The token itself is never read from the file, printed or logged; it
//! comes from `--token-file`/`token_file` or `BATON_PROBE_TOKEN`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use http::Uri;
use serde::{Deserialize, Serialize};

use crate::error::ProbeError;

/// Baton probe: measures one bot (active probes and the observations the bot
/// posts) and streams its health to the Baton router.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "baton-probe", version)]
pub struct Args {
    /// TOML configuration file; every key is optional and named like its flag.
    #[arg(long, env = "BATON_PROBE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The bot this probe measures, as the router knows it (required).
    #[arg(long, env = "BATON_PROBE_BOT", value_name = "ID")]
    pub bot: Option<String>,
    /// Router gRPC URLs, tried in turn while reconnecting
    /// [default: http://127.0.0.1:7400].
    #[arg(
        long,
        env = "BATON_PROBE_ROUTER",
        value_name = "URL[,URL…]",
        value_delimiter = ','
    )]
    pub router: Vec<String>,
    /// Probe the bot with an HTTP GET of this URL: a non-2xx answer or a
    /// timeout is an error.
    #[arg(long, env = "BATON_PROBE_HTTP_URL", value_name = "URL")]
    pub http_url: Option<String>,
    /// Probe the bot with the standard grpc.health.v1 Check at this URL:
    /// anything but SERVING, or a timeout, is an error.
    #[arg(long, env = "BATON_PROBE_GRPC_HEALTH", value_name = "URL")]
    pub grpc_health: Option<String>,
    /// Service name for --grpc-health [default: "" (the whole server)].
    #[arg(long, env = "BATON_PROBE_GRPC_SERVICE", value_name = "NAME")]
    pub grpc_service: Option<String>,
    /// Time between two active probes [default: 1s].
    #[arg(long, env = "BATON_PROBE_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// An active probe not answered within this is an error, and counts
    /// as a latency of at least this: keep it above the largest 1.2 × SLA
    /// the router judges the bot by, or a hung bot never trips the P95
    /// gate [default: 2500ms, above 1.2 × 1800ms].
    #[arg(long, env = "BATON_PROBE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Length of the sliding window the percentiles and error rate cover
    /// [default: 60s].
    #[arg(long, env = "BATON_PROBE_WINDOW", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub window: Option<Duration>,
    /// Sub-windows the window is cut into; the oldest is dropped whole
    /// [default: 20].
    #[arg(long, env = "BATON_PROBE_WINDOW_SLOTS", value_name = "N")]
    pub window_slots: Option<u32>,
    /// Time between two reports to the router [default: 1s].
    #[arg(long, env = "BATON_PROBE_REPORT_EVERY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub report_every: Option<Duration>,
    /// Address for the bot's `POST /observe` and the probe's own
    /// `GET /healthz` [default: 127.0.0.1:7401].
    #[arg(long, env = "BATON_PROBE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Observations queued before new ones are dropped (and counted), so
    /// that posting never waits [default: 4096].
    #[arg(long, env = "BATON_PROBE_QUEUE_CAPACITY", value_name = "N")]
    pub queue_capacity: Option<usize>,
    /// First delay before reconnecting to the router; doubles per failure,
    /// with jitter [default: 100ms].
    #[arg(long, env = "BATON_PROBE_RECONNECT_MIN", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub reconnect_min: Option<Duration>,
    /// Longest delay between two reconnection attempts [default: 5s].
    #[arg(long, env = "BATON_PROBE_RECONNECT_MAX", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub reconnect_max: Option<Duration>,
    /// File holding the bearer token for the router, when it requires one
    /// (a mounted secret; surrounding whitespace is ignored).
    #[arg(long, env = "BATON_PROBE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself; prefer the environment variable or
    /// --token-file, since flags show in the process list.
    #[arg(
        long,
        env = "BATON_PROBE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// CA (PEM) the router's TLS certificate must chain to; the router
    /// URLs are then https://.
    #[arg(long, env = "BATON_PROBE_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for routers that require one (with --tls-key).
    #[arg(long, env = "BATON_PROBE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Client certificate's private key (PEM).
    #[arg(long, env = "BATON_PROBE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "BATON_PROBE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
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

/// Everything the probe runs with; the file's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    pub bot: String,
    pub router: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_health: Option<String>,
    pub grpc_service: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A timed-out probe counts as a latency of at least the timeout, so
    /// a hung bot trips the router's P95 gate only if the timeout exceeds
    /// `sla_factor` × the bot's SLA: the default, 2.5 s, is above the
    /// largest such limit in the shipped configuration (1.2 × 1.8 s =
    /// 2.16 s). A shorter timeout would turn a hung or slow bot into mere
    /// errors and hide its latency.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub window_slots: u32,
    /// Every second: the router's staleness limit (30 s) is far away, and a
    /// report is a few dozen bytes.
    #[serde(with = "humantime_serde")]
    pub report_every: Duration,
    pub listen: SocketAddr,
    pub queue_capacity: usize,
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Never in the file, never printed: from `--token`, `BATON_PROBE_TOKEN`
    /// or read from `token_file`.
    #[serde(skip)]
    pub token: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    pub log_format: LogFormat,
}

/// A bearer token for the router; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The `authorization` header value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            bot: String::new(),
            router: vec!["http://127.0.0.1:7400".to_owned()],
            http_url: None,
            grpc_health: None,
            grpc_service: String::new(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(2500),
            window: Duration::from_secs(60),
            window_slots: 20,
            report_every: Duration::from_secs(1),
            listen: SocketAddr::from(([127, 0, 0, 1], 7401)),
            queue_capacity: 4096,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            token_file: None,
            token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            log_format: LogFormat::Text,
        }
    }
}

/// How the bot is probed actively, if at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveProbe {
    /// `GET url`; 2xx is success.
    Http { url: Uri },
    /// `grpc.health.v1.Health/Check` of `service`; SERVING is success.
    Grpc { url: String, service: String },
}

impl ProbeConfig {
    /// Builds the configuration from the file, then the environment and
    /// the flags (clap has merged those two), and checks it.
    pub fn load(args: &Args) -> Result<Self, ProbeError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        let a = args.clone();
        if let Some(v) = a.bot {
            config.bot = v;
        }
        if !a.router.is_empty() {
            config.router = a.router;
        }
        if a.http_url.is_some() || a.grpc_health.is_some() {
            // A flag picks the active probe, whatever the file said.
            config.http_url = a.http_url;
            config.grpc_health = a.grpc_health;
        }
        let set = |slot: &mut Duration, v: Option<Duration>| *slot = v.unwrap_or(*slot);
        set(&mut config.interval, a.interval);
        set(&mut config.timeout, a.timeout);
        set(&mut config.window, a.window);
        set(&mut config.report_every, a.report_every);
        set(&mut config.reconnect_min, a.reconnect_min);
        set(&mut config.reconnect_max, a.reconnect_max);
        config.grpc_service = a.grpc_service.unwrap_or(config.grpc_service);
        config.window_slots = a.window_slots.unwrap_or(config.window_slots);
        config.listen = a.listen.unwrap_or(config.listen);
        config.queue_capacity = a.queue_capacity.unwrap_or(config.queue_capacity);
        config.log_format = a.log_format.unwrap_or(config.log_format);
        if a.token_file.is_some() {
            config.token_file = a.token_file;
        }
        for (slot, value) in [
            (&mut config.tls_ca, a.tls_ca),
            (&mut config.tls_cert, a.tls_cert),
            (&mut config.tls_key, a.tls_key),
        ] {
            if value.is_some() {
                *slot = value;
            }
        }
        config.token = match (a.token, &config.token_file) {
            (Some(token), _) => Some(Token::new(token.trim())),
            (None, Some(path)) => Some(read_token(path)?),
            (None, None) => None,
        };
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ProbeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProbeError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ProbeError::ParseConfig {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Checks every value; the error names the flag.
    pub fn validate(&self) -> Result<(), ProbeError> {
        let bot = self.bot.trim();
        if bot.is_empty() {
            return Err(ProbeError::config(
                "--bot",
                "is required (or BATON_PROBE_BOT, or `bot` in the config file)",
            ));
        }
        if bot != self.bot || self.bot.len() > 128 {
            return Err(ProbeError::config(
                "--bot",
                format!(
                    "'{}' must be 1..=128 bytes without surrounding spaces",
                    self.bot
                ),
            ));
        }
        if self.router.is_empty() {
            return Err(ProbeError::config("--router", "needs at least one URL"));
        }
        for url in &self.router {
            if self.tls_ca.is_some() {
                if !url.starts_with("https://") {
                    return Err(ProbeError::config(
                        "--router",
                        format!("'{url}' must start with https:// when --tls-ca is given"),
                    ));
                }
            } else {
                http_url("--router", url)?;
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ProbeError::config(
                "--tls-cert",
                "and --tls-key go together",
            ));
        }
        if self.tls_cert.is_some() && self.tls_ca.is_none() {
            return Err(ProbeError::config("--tls-cert", "needs --tls-ca"));
        }
        self.active_probe()?;
        for (flag, value) in [
            ("--interval", self.interval),
            ("--timeout", self.timeout),
            ("--report-every", self.report_every),
            ("--reconnect-min", self.reconnect_min),
        ] {
            if value.is_zero() {
                return Err(ProbeError::config(flag, "must be above zero"));
            }
        }
        if !(1..=3600).contains(&self.window_slots) {
            return Err(ProbeError::config(
                "--window-slots",
                format!("must be in 1..=3600, got {}", self.window_slots),
            ));
        }
        if self.window < Duration::from_millis(u64::from(self.window_slots)) {
            return Err(ProbeError::config(
                "--window",
                format!(
                    "must be at least 1ms per slot ({} slots), got {}",
                    self.window_slots,
                    humantime::format_duration(self.window)
                ),
            ));
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(ProbeError::config(
                "--reconnect-max",
                format!(
                    "must be at least --reconnect-min ({})",
                    humantime::format_duration(self.reconnect_min)
                ),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ProbeError::config("--queue-capacity", "must be above zero"));
        }
        if let Some(token) = &self.token
            && (token.0.is_empty() || !token.0.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ProbeError::config(
                "--token",
                "must be non-empty printable ASCII without spaces",
            ));
        }
        Ok(())
    }

    /// The active probe, from `http_url` or `grpc_health` (at most one).
    pub fn active_probe(&self) -> Result<Option<ActiveProbe>, ProbeError> {
        match (&self.http_url, &self.grpc_health) {
            (Some(_), Some(_)) => Err(ProbeError::config(
                "--http-url",
                "give one active probe: --http-url or --grpc-health, not both",
            )),
            (Some(url), None) => Ok(Some(ActiveProbe::Http {
                url: http_url("--http-url", url)?,
            })),
            (None, Some(url)) => {
                http_url("--grpc-health", url)?;
                Ok(Some(ActiveProbe::Grpc {
                    url: url.clone(),
                    service: self.grpc_service.clone(),
                }))
            }
            (None, None) if !self.grpc_service.is_empty() => Err(ProbeError::config(
                "--grpc-service",
                "only applies with --grpc-health",
            )),
            (None, None) => Ok(None),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

fn read_token(path: &Path) -> Result<Token, ProbeError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ProbeError::config(
            "--token-file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Ok(Token::new(text.trim()))
}

/// Parses a plain-HTTP URL with a host (the probe has no TLS: it talks to a
/// bot on its own pod and to the router on a private network).
fn http_url(flag: &'static str, url: &str) -> Result<Uri, ProbeError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ProbeError::config(flag, format!("'{url}' is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(ProbeError::config(
                flag,
                format!("'{url}': scheme '{other}' is not supported, use http://"),
            ));
        }
        None => {
            return Err(ProbeError::config(
                flag,
                format!("'{url}' must start with http://"),
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ProbeError::config(flag, format!("'{url}' has no host")));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("baton-probe").chain(list.iter().copied()))
            .expect("flags parse")
    }

    fn error(list: &[&str]) -> String {
        ProbeConfig::load(&args(list)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_need_only_a_bot() {
        let c = ProbeConfig::load(&args(&["--bot", "buyer"])).unwrap();
        assert_eq!(
            c,
            ProbeConfig {
                bot: "buyer".into(),
                ..ProbeConfig::default()
            }
        );
        assert_eq!(c.active_probe().unwrap(), None);
        assert_eq!(c.listen.to_string(), "127.0.0.1:7401");
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.window, Duration::from_secs(60));
    }

    /// A hung bot's probes all time out, and each counts as the timeout:
    /// its P95 is the timeout, which must exceed the router's largest limit
    /// (`health.sla_factor` 1.2 × the 1,800 ms SLA of the shipped bots).
    #[test]
    fn the_default_timeout_is_above_the_largest_p95_limit() {
        let limit = Duration::from_millis(1800).mul_f64(1.2);
        assert_eq!(ProbeConfig::default().timeout, Duration::from_millis(2500));
        assert!(ProbeConfig::default().timeout > limit);
        let help = <Args as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("[default: 2500ms, above 1.2 × 1800ms]"),
            "{help}"
        );
    }

    #[test]
    fn flags_set_every_key() {
        let c = ProbeConfig::load(&args(&[
            "--bot",
            "seller",
            "--router",
            "http://10.0.0.1:7400,http://10.0.0.2:7400",
            "--http-url",
            "http://127.0.0.1:8080/health",
            "--interval",
            "250ms",
            "--timeout",
            "1s",
            "--window",
            "30s",
            "--window-slots",
            "10",
            "--report-every",
            "5s",
            "--listen",
            "0.0.0.0:9000",
            "--queue-capacity",
            "8",
        ]))
        .unwrap();
        assert_eq!(c.router, ["http://10.0.0.1:7400", "http://10.0.0.2:7400"]);
        assert_eq!(
            c.active_probe().unwrap(),
            Some(ActiveProbe::Http {
                url: "http://127.0.0.1:8080/health".parse().unwrap()
            })
        );
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.timeout, Duration::from_secs(1));
        assert_eq!(c.window, Duration::from_secs(30));
        assert_eq!(c.window_slots, 10);
        assert_eq!(c.report_every, Duration::from_secs(5));
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.queue_capacity, 8);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "--bot: is required"),
            (&["--bot", " buyer"], "--bot: ' buyer' must be"),
            (
                &["--bot", "b", "--interval", "0s"],
                "--interval: must be above zero",
            ),
            (
                &["--bot", "b", "--timeout", "0ms"],
                "--timeout: must be above zero",
            ),
            (
                &["--bot", "b", "--report-every", "0s"],
                "--report-every: must be above zero",
            ),
            (
                &["--bot", "b", "--window-slots", "0"],
                "--window-slots: must be in 1..=3600, got 0",
            ),
            (
                &["--bot", "b", "--window", "5ms", "--window-slots", "10"],
                "--window: must be at least 1ms per slot",
            ),
            (
                &["--bot", "b", "--queue-capacity", "0"],
                "--queue-capacity: must be above zero",
            ),
            (
                &["--bot", "b", "--router", "127.0.0.1:7400"],
                "--router: '127.0.0.1:7400'",
            ),
            (
                &["--bot", "b", "--router", "https://r:7400"],
                "--router: 'https://r:7400': scheme 'https' is not supported",
            ),
            (
                &["--bot", "b", "--http-url", "not a url"],
                "--http-url: 'not a url' is not a URL",
            ),
            (
                &["--bot", "b", "--grpc-health", "/health"],
                "--grpc-health: '/health' must start with http://",
            ),
            (
                &[
                    "--bot",
                    "b",
                    "--http-url",
                    "http://a/h",
                    "--grpc-health",
                    "http://a:1",
                ],
                "--http-url: give one active probe",
            ),
            (
                &["--bot", "b", "--grpc-service", "bot.v1.Bot"],
                "--grpc-service: only applies with --grpc-health",
            ),
            (
                &[
                    "--bot",
                    "b",
                    "--reconnect-min",
                    "2s",
                    "--reconnect-max",
                    "1s",
                ],
                "--reconnect-max: must be at least --reconnect-min (2s)",
            ),
        ];
        for (flags, expected) in cases {
            let got = error(flags);
            assert!(got.starts_with(expected), "{flags:?}: {got}");
        }
    }

    #[test]
    fn unparsable_flag_values_are_clap_errors_naming_the_flag() {
        let parse = |list: &[&str]| {
            Args::try_parse_from(std::iter::once("baton-probe").chain(list.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(parse(&["--interval", "5 parsecs"]).contains("--interval"));
        assert!(parse(&["--listen", "localhost"]).contains("--listen"));
        assert!(parse(&["--queue-capacity", "lots"]).contains("--queue-capacity"));
    }

    #[test]
    fn the_file_is_read_then_flags_win_and_typos_are_errors() {
        let dir = baton_test_support::TempDir::new("probe-config");
        let path = dir.path().join("probe.toml");
        std::fs::write(
            &path,
            "bot = \"buyer\"\nrouter = [\"http://r1:7400\", \"http://r2:7400\"]\n\
             grpc_health = \"http://127.0.0.1:50051\"\ngrpc_service = \"bot.v1.Bot\"\n\
             interval = \"500ms\"\nwindow = \"2m\"\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let c = ProbeConfig::load(&args(&["--config", file, "--window", "10s"])).unwrap();
        assert_eq!(c.bot, "buyer");
        assert_eq!(c.router.len(), 2);
        assert_eq!(
            c.active_probe().unwrap(),
            Some(ActiveProbe::Grpc {
                url: "http://127.0.0.1:50051".into(),
                service: "bot.v1.Bot".into()
            })
        );
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.window, Duration::from_secs(10));

        std::fs::write(&path, "bot = \"buyer\"\nintervall = \"1s\"\n").unwrap();
        let err = ProbeConfig::load(&args(&["--config", file])).unwrap_err();
        assert!(err.to_string().contains("intervall"), "{err}");
        std::fs::write(&path, "bot = \"buyer\"\ninterval = \"soon\"\n").unwrap();
        let err = ProbeConfig::load(&args(&["--config", file])).unwrap_err();
        assert!(err.to_string().contains("interval"), "{err}");

        let missing = dir.path().join("missing.toml");
        let err = ProbeConfig::load(&args(&["--config", missing.to_str().unwrap()])).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read config file"),
            "{err}"
        );
    }

    #[test]
    fn the_token_comes_from_the_flag_or_a_file_and_is_never_shown() {
        let dir = baton_test_support::TempDir::new("probe-token");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-token\n").unwrap();
        let file = path.to_str().unwrap();
        let c = ProbeConfig::load(&args(&["--bot", "buyer", "--token-file", file])).unwrap();
        assert_eq!(c.token, Some(Token::new("s3cret-token")));
        assert_eq!(c.token.as_ref().unwrap().bearer(), "Bearer s3cret-token");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!c.to_toml().contains("s3cret"));
        let c = ProbeConfig::load(&args(&["--bot", "buyer", "--token", "other"])).unwrap();
        assert_eq!(c.token, Some(Token::new("other")));

        std::fs::write(&path, "two words").unwrap();
        let err = error(&["--bot", "buyer", "--token-file", file]);
        assert!(
            err.starts_with("--token: must be non-empty printable"),
            "{err}"
        );
        let missing = dir.path().join("missing");
        let err = error(&["--bot", "b", "--token-file", missing.to_str().unwrap()]);
        assert!(err.starts_with("--token-file: cannot read"), "{err}");
    }

    #[test]
    fn printed_config_reads_back_identically() {
        let c = ProbeConfig {
            bot: "buyer".into(),
            http_url: Some("http://127.0.0.1:8080/health".into()),
            ..ProbeConfig::default()
        };
        let back: ProbeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }
}
