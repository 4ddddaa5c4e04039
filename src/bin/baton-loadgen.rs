//! `baton-loadgen`: drives `RequestHandoff` over gRPC on loopback with N
//! concurrent clients and, alternately in the same run, a baseline: a bare
//! tonic unary echo (the floor) or a second in-process router on the
//! in-memory store given the identical workload. Prints throughput, P50 and
//! P99 of both and their ratio, as a table or (`--json`) one JSON object.
//!
//! By default it starts its own router in this process, on the in-memory or
//! the embedded (redb) store; `--router URL` drives a router that is already
//! running. Every contact id carries a prefix unique to the run, so the tool
//! can be run again and again against one router.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use baton_proto::bench::echo_service_client::EchoServiceClient;
use baton_proto::bench::echo_service_server::{EchoService, EchoServiceServer};
use baton_proto::bench::{EchoRequest, EchoResponse};
use baton_proto::v1::handoff_service_client::HandoffServiceClient;
use baton_proto::v1::{Decision, RequestHandoffRequest};
use baton_router::auth::PrincipalConfig;
use baton_router::telemetry::Telemetry;
use baton_router::{LogFormat, RouterConfig, server};
use clap::Parser;
use hdrhistogram::Histogram;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use sha2::Digest;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

/// Load generator for Baton's decision path.
#[derive(Debug, Parser)]
#[command(name = "baton-loadgen", version)]
struct Args {
    /// Concurrent clients, each on its own connection (also used for --preload).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long each measurement runs.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Traffic before each measurement that is not counted.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Drive this router instead of starting one in-process. All clients
    /// share one address, so start it with `--set
    /// server.rate_per_principal=0`: its per-principal limit (5000 calls/s
    /// by default) would fail the calls above it.
    #[arg(long)]
    router: Option<String>,
    /// Measurements of each, alternating baseline and Baton. Many short
    /// rounds cancel this machine's drift better than a few long ones.
    #[arg(long, default_value_t = 8)]
    rounds: u32,
    /// Which decision path.
    #[arg(long, value_enum, default_value_t = CallPath::Stay)]
    path: CallPath,
    /// Store of the in-process router under test.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory, conflicts_with = "router")]
    store: StoreKind,
    /// What the router under test is compared against, measured alternately
    /// with it in this run.
    #[arg(long, value_enum, default_value_t = Baseline::Floor)]
    baseline: Baseline,
    /// Prefix of every contact id this run uses (ASCII, no spaces, at most
    /// 64 bytes). Default: one unique to the run, from the wall clock and the
    /// pid, so runs can repeat against one router without NOT_OWNER.
    #[arg(long, value_parser = parse_prefix)]
    prefix: Option<String>,
    /// Contacts to create on the router under test before measuring, each
    /// approved once through `RequestHandoff`.
    #[arg(long, default_value_t = 0)]
    preload: u64,
    /// Print one JSON object with every figure on stdout instead of the
    /// table; progress and notes go to stderr.
    #[arg(long)]
    json: bool,
    /// Run the in-process routers as deployed for real: bearer tokens checked
    /// on every call, and spans and metrics exported over OTLP/gRPC (to a
    /// receiver in this process that drops them).
    #[arg(long, conflicts_with = "router")]
    secure: bool,
    /// Sets a configuration key of the in-process routers (both the one
    /// under test and a `memory` baseline), as the router's `--set` does,
    /// e.g. `--set store.batch_wait=1ms`; may be repeated.
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "router")]
    overrides: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CallPath {
    /// A message that stays with the source bot: no storage call.
    Stay,
    /// A message that is handed off: a new contact per call, written to the store.
    Approve,
}

impl CallPath {
    fn name(self) -> &'static str {
        match self {
            CallPath::Stay => "stay",
            CallPath::Approve => "approve",
        }
    }

    /// The decision every call on this path must get; anything else is an error.
    fn expected(self) -> Decision {
        match self {
            CallPath::Stay => Decision::Stay,
            CallPath::Approve => Decision::Approved,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// State in memory only.
    Memory,
    /// The redb file store, in a fresh temporary data dir removed at exit.
    Embedded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Baseline {
    /// A bare tonic unary echo of the same payload size: the gRPC floor.
    Floor,
    /// A second in-process router on the in-memory store, same workload.
    Memory,
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!("must be 1..=64 bytes, got {}", s.len()));
    }
    if !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(s.to_owned())
}

/// The token the load generator's clients present with `--secure`.
const TOKEN: &str = "loadgen-lead-token";

/// The embedded store's file in its data dir (see `EmbeddedStore::open`).
const DB_FILE: &str = "baton.redb";

/// An OTLP receiver that accepts and drops everything.
#[derive(Clone)]
struct Drain;

#[tonic::async_trait]
impl TraceService for Drain {
    async fn export(
        &self,
        _: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Drain {
    async fn export(
        &self,
        _: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
}

async fn start_drain() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        Server::builder()
            .add_service(TraceServiceServer::new(Drain))
            .add_service(MetricsServiceServer::new(Drain))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok(url)
}

struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            payload: request.into_inner().payload,
        }))
    }
}

async fn start_echo() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    // Accepted sockets get TCP_NODELAY, as the router's do: the floor and
    // the router differ in what they serve, not in how they use TCP.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |socket| {
            socket.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        },
    );
    tokio::spawn(
        Server::builder()
            .add_service(EchoServiceServer::new(Echo))
            .serve_with_incoming(incoming),
    );
    Ok(url)
}

/// A data dir made for this run and removed when dropped: at the end, on an
/// error and on Ctrl-C alike.
struct TempDataDir(PathBuf);

impl TempDataDir {
    fn create(stamp: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("baton-loadgen-{stamp}"));
        // `create_dir`, not `create_dir_all`: a dir that exists is not ours.
        std::fs::create_dir(&dir)
            .with_context(|| format!("cannot create data dir {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDataDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cannot remove data dir {}: {e}", self.0.display());
        }
    }
}

/// A router started in this process, and how to stop it.
struct InProcess {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// Starts a router as `baton-router` does: open the configured store,
    /// build the engine, serve; on stop, drain and close the store.
    async fn start(config: RouterConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let store = server::open_store(&config).await?;
        let engine = server::engine(&config, Arc::clone(&store)).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = server::serve(config, engine, listener, async move {
                let _ = stopped.await;
            })
            .await;
            server::close_store(store.as_ref()).await;
            served
        });
        Ok(Self { url, stop, task })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .context("in-process router did not stop within 15s")?
            .context("in-process router task failed")?
    }
}

/// The configuration of an in-process router: defaults, as the router
/// binary has them with no file, on the given store.
fn router_config(secure: bool, data_dir: Option<&Path>) -> RouterConfig {
    let mut config = RouterConfig::default();
    match data_dir {
        Some(dir) => {
            config.server.memory = false;
            config.server.data_dir = dir.to_path_buf();
        }
        None => config.server.memory = true,
    }
    // The per-principal limiter stays on, at a rate no run reaches.
    config.server.rate_per_principal = 1e9;
    config.server.rate_burst = 1e9;
    if secure {
        let hex: String = sha2::Sha256::digest(TOKEN)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        config.auth.principals.push(PrincipalConfig {
            role: "bot:lead".into(),
            token_sha256: Some(hex),
            ..Default::default()
        });
    }
    config
}

/// Adds the bearer token to every call when `--secure`.
#[derive(Clone)]
struct Token(Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type HandoffClient = HandoffServiceClient<InterceptedService<Channel, Token>>;

/// One call that did not answer as expected.
struct Failure {
    /// What kind: `decision DECISION_NOT_OWNER`, `grpc Unavailable`, …
    kind: String,
    detail: String,
}

/// Failed calls, counted per kind with the first detail seen of each.
#[derive(Default)]
struct Failures {
    count: u64,
    kinds: BTreeMap<String, (u64, String)>,
}

impl Failures {
    fn add(&mut self, failure: Failure) {
        self.count += 1;
        self.kinds
            .entry(failure.kind)
            .or_insert((0, failure.detail))
            .0 += 1;
    }

    fn merge(&mut self, other: Failures) {
        self.count += other.count;
        for (kind, (n, detail)) in other.kinds {
            self.kinds.entry(kind).or_insert((0, detail)).0 += n;
        }
    }

    fn report(&self, what: &str) {
        for (kind, (n, detail)) in &self.kinds {
            eprintln!("{what}: {n} calls failed with {kind}: {detail}");
        }
    }
}

struct Stats {
    calls: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// Calls that failed, warm-up included.
    failures: Failures,
}

impl Stats {
    /// Two runs as one: calls and time add up, latencies and failures merge.
    fn merge(total: Option<Stats>, run: Stats) -> anyhow::Result<Stats> {
        let Some(mut total) = total else {
            return Ok(run);
        };
        total.calls += run.calls;
        total.elapsed += run.elapsed;
        total.latency.add(run.latency)?;
        total.failures.merge(run.failures);
        Ok(total)
    }

    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
    fn us(&self, q: f64) -> u64 {
        self.latency.value_at_quantile(q)
    }
    fn ms(&self, q: f64) -> f64 {
        self.us(q) as f64 / 1000.0
    }

    fn json(&self, name: &str) -> Json {
        Json::Obj(vec![
            ("name", Json::Str(name.to_owned())),
            ("calls", Json::Int(self.calls)),
            ("calls_per_s", Json::Num(self.rate())),
            ("p50_us", Json::Int(self.us(0.5))),
            ("p99_us", Json::Int(self.us(0.99))),
            ("errors", Json::Int(self.failures.count)),
        ])
    }
}

/// Runs `clients` loops of `call` for `warmup + duration`; times the calls
/// of the latter that succeed, and counts every failure.
async fn measure<C, F, Fut>(
    clients: Vec<C>,
    warmup: Duration,
    duration: Duration,
    call: F,
) -> anyhow::Result<Stats>
where
    C: Send + 'static,
    F: Fn(C, usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = (C, Result<(), Failure>)> + Send,
{
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::new();
    for (id, client) in clients.into_iter().enumerate() {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            let mut failures = Failures::default();
            let mut client = client;
            let mut n = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let (c, outcome) = call(client, id, n).await;
                client = c;
                n += 1;
                match outcome {
                    Ok(()) if t >= start => hist.record(t.elapsed().as_micros() as u64)?,
                    Ok(()) => {}
                    Err(f) => failures.add(f),
                }
            }
            anyhow::Ok((hist, failures))
        }));
    }
    let mut latency = Histogram::<u64>::new(3)?;
    let mut failures = Failures::default();
    for t in tasks {
        let (hist, f) = t.await??;
        latency.add(hist)?;
        failures.merge(f);
    }
    Ok(Stats {
        calls: latency.len(),
        elapsed: duration,
        latency,
        failures,
    })
}

async fn channels(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = Channel::from_shared(url.to_owned())
            .with_context(|| format!("bad router URL '{url}'"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        out.push(channel);
    }
    Ok(out)
}

fn handoff_request(path: CallPath, contact: String) -> RequestHandoffRequest {
    let message = match path {
        CallPath::Approve => "I want to sell my house",
        CallPath::Stay => "Thanks so much for the info, I will check with my wife tonight.",
    };
    RequestHandoffRequest {
        contact_id: contact,
        source_bot: "lead".into(),
        message: message.into(),
        ..Default::default()
    }
}

/// The contact of call `n` of client `client` in round `round`. The stay
/// path keeps one contact: it never changes hands.
fn contact(prefix: &str, path: CallPath, round: u32, client: usize, n: u64) -> String {
    match path {
        CallPath::Stay => format!("{prefix}-stay"),
        CallPath::Approve => format!("{prefix}-r{round}c{client}n{n}"),
    }
}

/// One `RequestHandoff`; anything but `expected` is a failure.
async fn request(
    mut client: HandoffClient,
    request: RequestHandoffRequest,
    expected: Decision,
) -> (HandoffClient, Result<(), Failure>) {
    let outcome = match client.request_handoff(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            if reply.decision == expected as i32 {
                Ok(())
            } else {
                Err(Failure {
                    kind: format!("decision {}", reply.decision().as_str_name()),
                    detail: reply.reason,
                })
            }
        }
        Err(status) => Err(Failure {
            kind: format!("grpc {:?}", status.code()),
            detail: status.message().to_owned(),
        }),
    };
    (client, outcome)
}

/// Where human-readable lines go: stdout, or stderr when stdout is JSON.
#[derive(Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    fn line(self, text: impl fmt::Display) {
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
}

struct Preloaded {
    contacts: u64,
    elapsed: Duration,
    failures: Failures,
}

/// Creates `count` contacts, each approved once, with one task per client.
async fn preload(
    clients: Vec<HandoffClient>,
    prefix: Arc<str>,
    count: u64,
    out: Out,
) -> anyhow::Result<Preloaded> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut client in clients {
        let (next, done, prefix) = (Arc::clone(&next), Arc::clone(&done), Arc::clone(&prefix));
        tasks.push(tokio::spawn(async move {
            let mut failures = Failures::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let req = handoff_request(CallPath::Approve, format!("{prefix}-p{i}"));
                let (c, outcome) = request(client, req, Decision::Approved).await;
                client = c;
                if let Err(f) = outcome {
                    failures.add(f);
                }
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if d * 10 / count > (d - 1) * 10 / count {
                    out.line(format_args!(
                        "preload {:>3}%  {d}/{count} contacts  {:.1}s",
                        d * 100 / count,
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
            failures
        }));
    }
    let mut failures = Failures::default();
    for t in tasks {
        failures.merge(t.await?);
    }
    Ok(Preloaded {
        contacts: count,
        elapsed: started.elapsed(),
        failures,
    })
}

fn file_size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot read the size of {}", path.display()))?
        .len())
}

/// A JSON value, enough for the report (no new dependency for it).
enum Json {
    Null,
    Bool(bool),
    Int(u64),
    Num(f64),
    Str(String),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn opt_int(v: Option<u64>) -> Json {
        v.map_or(Json::Null, Json::Int)
    }
    fn opt_num(v: Option<f64>) -> Json {
        v.map_or(Json::Null, Json::Num)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Int(n) => write!(f, "{n}"),
            Json::Num(x) if x.is_finite() => write!(f, "{x:.3}"),
            Json::Num(_) => f.write_str("null"),
            Json::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
            Json::Obj(fields) => {
                f.write_str("{")?;
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{value}", Json::Str((*key).to_owned()))?;
                }
                f.write_str("}")
            }
        }
    }
}

fn print(name: &str, s: &Stats) {
    println!(
        "{name:<36} {:>10.0} calls/s   p50 {:>7.3} ms   p99 {:>7.3} ms   ({} calls, {} errors)",
        s.rate(),
        s.ms(0.5),
        s.ms(0.99),
        s.calls,
        s.failures.count
    );
}

/// Nanoseconds of the wall clock and the pid: unique to this run.
fn run_stamp() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", std::process::id())
}

/// The router binary's allocator, so the in-process routers (and the echo
/// floor beside them) allocate as the router does in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // Returning (rather than exiting) on Ctrl-C drops the temporary data dir.
    tokio::select! {
        result = run(args) => result,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be more than 0");
    let out = Out { json: args.json };
    let path = args.path;
    let stamp = run_stamp();
    let prefix: Arc<str> = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("lg-{stamp}"))
        .into();

    let data_dir = match (&args.router, args.store) {
        (None, StoreKind::Embedded) => Some(TempDataDir::create(&stamp)?),
        _ => None,
    };
    let mut telemetry = None;
    let mut routers = Vec::new();
    if args.router.is_none() || args.baseline == Baseline::Memory {
        // Logs (and, secured, OTLP export) as the router binary has them,
        // so spans cost what they cost there.
        let otlp = if args.secure {
            Some(start_drain().await?)
        } else {
            None
        };
        telemetry = Some(Telemetry::init(
            LogFormat::Text,
            otlp.as_deref(),
            Duration::from_secs(1),
        )?);
    }
    let (target_url, store_name) = match &args.router {
        Some(url) => (url.clone(), "external"),
        None => {
            let dir = data_dir.as_ref().map(|d| d.0.as_path());
            let config = router_config(args.secure, dir).with_overrides(&args.overrides)?;
            let router = InProcess::start(config)
                .await
                .context("cannot start the in-process router")?;
            let url = router.url.clone();
            routers.push(router);
            let name = match args.store {
                StoreKind::Memory => "memory",
                StoreKind::Embedded => "embedded",
            };
            (url, name)
        }
    };
    let (baseline_url, baseline_name) = match args.baseline {
        Baseline::Floor => (start_echo().await?, "floor"),
        Baseline::Memory => {
            let config = router_config(args.secure, None).with_overrides(&args.overrides)?;
            let router = InProcess::start(config)
                .await
                .context("cannot start the in-process baseline router")?;
            let url = router.url.clone();
            routers.push(router);
            (url, "memory")
        }
    };

    out.line(format_args!("contact prefix {prefix}"));
    if let Some(dir) = &data_dir {
        out.line(format_args!("embedded store in {}", dir.0.display()));
    }
    out.line(format_args!(
        "{} clients, {} alternating rounds of {:?} each after {:?} warm-up, path '{}', store '{store_name}', baseline '{baseline_name}'{}",
        args.clients,
        args.rounds,
        args.duration,
        args.warmup,
        path.name(),
        if args.secure {
            ", with tokens and OTLP export"
        } else {
            ""
        }
    ));

    let token = Token(if args.secure {
        Some(
            format!("Bearer {TOKEN}")
                .parse()
                .context("token as metadata")?,
        )
    } else {
        None
    });
    let target_channels = channels(&target_url, args.clients).await?;
    let baseline_channels = channels(&baseline_url, args.clients).await?;
    let handoff_clients = |chans: &[Channel]| -> Vec<HandoffClient> {
        chans
            .iter()
            .map(|c| HandoffServiceClient::with_interceptor(c.clone(), token.clone()))
            .collect()
    };

    let mut routers_to_check = vec![("router under test", &target_channels)];
    if args.baseline == Baseline::Memory {
        routers_to_check.push(("baseline router", &baseline_channels));
    }
    if path == CallPath::Stay {
        // The stay path is measured only if its message really stays.
        for (what, chans) in routers_to_check {
            let client = handoff_clients(&chans[..1]).remove(0);
            let req = handoff_request(path, contact(&prefix, path, 0, 0, 0));
            if let (_, Err(f)) = request(client, req, Decision::Stay).await {
                anyhow::bail!("{what}: the stay message got {}: {}", f.kind, f.detail);
            }
        }
    }

    let preloaded = if args.preload > 0 {
        let p = preload(
            handoff_clients(&target_channels),
            Arc::clone(&prefix),
            args.preload,
            out,
        )
        .await?;
        out.line(format_args!(
            "preload: {} contacts in {:.2}s, {:.0} contacts/s, {} errors",
            p.contacts,
            p.elapsed.as_secs_f64(),
            p.contacts as f64 / p.elapsed.as_secs_f64(),
            p.failures.count
        ));
        Some(p)
    } else {
        None
    };
    let db_file = data_dir.as_ref().map(|d| d.0.join(DB_FILE));
    let db_bytes = db_file.as_deref().map(file_size).transpose()?;
    let bytes_per_contact = match (db_bytes, &preloaded) {
        (Some(bytes), Some(p)) => Some(bytes as f64 / p.contacts as f64),
        _ => None,
    };
    if let (Some(bytes), Some(file)) = (db_bytes, &db_file) {
        let per_contact = bytes_per_contact
            .map(|b| format!(", {b:.0} bytes per contact"))
            .unwrap_or_default();
        out.line(format_args!(
            "{}: {bytes} bytes before measuring{per_contact}",
            file.display()
        ));
    }

    // The same payload size as the handoff request, so the floor is fair.
    let payload: Arc<[u8]> =
        prost::Message::encode_to_vec(&handoff_request(path, contact(&prefix, path, 0, 0, 0)))
            .into();
    // Alternate baseline and Baton, so drift on a shared machine hits both alike.
    let mut baseline: Option<Stats> = None;
    let mut baton: Option<Stats> = None;
    for round in 0..args.rounds {
        let handoff = {
            let prefix = Arc::clone(&prefix);
            move |c: HandoffClient, client: usize, n: u64| {
                let req = handoff_request(path, contact(&prefix, path, round, client, n));
                request(c, req, path.expected())
            }
        };
        let run = match args.baseline {
            Baseline::Floor => {
                let clients = baseline_channels
                    .iter()
                    .map(|c| (EchoServiceClient::new(c.clone()), Arc::clone(&payload)))
                    .collect();
                measure(
                    clients,
                    args.warmup,
                    args.duration,
                    |(mut c, p), _, _| async move {
                        let outcome = c
                            .echo(EchoRequest {
                                payload: p.to_vec(),
                            })
                            .await
                            .map(drop)
                            .map_err(|status| Failure {
                                kind: format!("grpc {:?}", status.code()),
                                detail: status.message().to_owned(),
                            });
                        ((c, p), outcome)
                    },
                )
                .await?
            }
            Baseline::Memory => {
                let clients = handoff_clients(&baseline_channels);
                measure(clients, args.warmup, args.duration, handoff.clone()).await?
            }
        };
        baseline = Some(Stats::merge(baseline, run)?);
        let clients = handoff_clients(&target_channels);
        let run = measure(clients, args.warmup, args.duration, handoff).await?;
        baton = Some(Stats::merge(baton, run)?);
    }
    let (baseline, baton) = (baseline.context("no rounds")?, baton.context("no rounds")?);
    let db_bytes_end = db_file.as_deref().map(file_size).transpose()?;

    let baseline_label = match args.baseline {
        Baseline::Floor => "echo (floor)".to_owned(),
        Baseline::Memory => format!("RequestHandoff ({}, memory)", path.name()),
    };
    let target_label = format!("RequestHandoff ({}, {store_name})", path.name());
    let ratio = (
        baton.rate() / baseline.rate(),
        baton.ms(0.5) / baseline.ms(0.5),
        baton.ms(0.99) / baseline.ms(0.99),
    );
    let preload_failures = preloaded.as_ref().map_or(0, |p| p.failures.count);
    let errors = baseline.failures.count + baton.failures.count + preload_failures;
    if args.json {
        let report = Json::Obj(vec![
            ("path", Json::Str(path.name().into())),
            ("store", Json::Str(store_name.into())),
            ("baseline", Json::Str(baseline_name.into())),
            ("router", args.router.clone().map_or(Json::Null, Json::Str)),
            ("secure", Json::Bool(args.secure)),
            ("clients", Json::Int(args.clients as u64)),
            ("duration_s", Json::Num(args.duration.as_secs_f64())),
            ("warmup_s", Json::Num(args.warmup.as_secs_f64())),
            ("rounds", Json::Int(u64::from(args.rounds))),
            ("prefix", Json::Str(prefix.to_string())),
            ("preload", Json::Int(args.preload)),
            (
                "preload_s",
                Json::opt_num(preloaded.as_ref().map(|p| p.elapsed.as_secs_f64())),
            ),
            (
                "preload_contacts_per_s",
                Json::opt_num(
                    preloaded
                        .as_ref()
                        .map(|p| p.contacts as f64 / p.elapsed.as_secs_f64()),
                ),
            ),
            (
                "preload_errors",
                Json::opt_int(preloaded.as_ref().map(|p| p.failures.count)),
            ),
            ("db_bytes", Json::opt_int(db_bytes)),
            ("bytes_per_contact", Json::opt_num(bytes_per_contact)),
            ("db_bytes_end", Json::opt_int(db_bytes_end)),
            ("baseline_run", baseline.json(&baseline_label)),
            ("target_run", baton.json(&target_label)),
            (
                "ratio",
                Json::Obj(vec![
                    ("throughput", Json::Num(ratio.0)),
                    ("p50", Json::Num(ratio.1)),
                    ("p99", Json::Num(ratio.2)),
                ]),
            ),
            ("errors", Json::Int(errors)),
        ]);
        println!("{report}");
    } else {
        print(&baseline_label, &baseline);
        print(&target_label, &baton);
        println!(
            "ratio to baseline: throughput {:.2}   p50 {:.2}x   p99 {:.2}x",
            ratio.0, ratio.1, ratio.2
        );
        if let (Some(bytes), Some(file)) = (db_bytes_end, &db_file) {
            println!("{}: {bytes} bytes after the run", file.display());
        }
    }

    // Close the clients' connections first, so the routers drain at once.
    drop((target_channels, baseline_channels));
    for router in routers {
        router.stop().await?;
    }
    if let Some(t) = telemetry {
        t.shutdown();
    }
    drop(data_dir);
    if errors > 0 {
        if let Some(p) = &preloaded {
            p.failures.report("preload");
        }
        baseline.failures.report(&baseline_label);
        baton.failures.report(&target_label);
        eprintln!("{errors} calls failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
