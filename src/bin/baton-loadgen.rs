//! `baton-loadgen`: drives `RequestHandoff` over gRPC on loopback with N
//! concurrent clients and, in the same run, a bare tonic unary echo as the
//! floor; prints throughput, P50 and P99 of both and their ratio.
//!
//! By default it starts its own router (in-memory store) and echo server in
//! this process; `--router URL` drives a router that is already running.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

/// Load generator for Baton's decision path.
#[derive(Debug, Parser)]
#[command(name = "baton-loadgen", version)]
struct Args {
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long each measurement runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Traffic before each measurement that is not counted.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Drive this router instead of starting one in-process.
    #[arg(long)]
    router: Option<String>,
    /// Measurements of each, alternating floor and Baton.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Which decision path: `stay` (no storage) or `approve` (a new contact per call).
    #[arg(long, default_value = "stay")]
    path: String,
    /// Run the in-process router as deployed for real: bearer tokens checked
    /// on every call, and spans and metrics exported over OTLP/gRPC (to a
    /// receiver in this process that drops them).
    #[arg(long, conflicts_with = "router")]
    secure: bool,
}

/// The token the load generator's clients present with `--secure`.
const TOKEN: &str = "loadgen-lead-token";

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

struct Stats {
    calls: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Stats {
    /// Two runs as one: calls and time add up, latencies merge.
    fn merge(total: Option<Stats>, run: Stats) -> anyhow::Result<Stats> {
        let Some(mut total) = total else {
            return Ok(run);
        };
        total.calls += run.calls;
        total.elapsed += run.elapsed;
        total.latency.add(run.latency)?;
        Ok(total)
    }

    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `clients` loops of `call` for `warmup + duration`; counts the latter.
async fn measure<C, F, Fut>(
    clients: Vec<C>,
    warmup: Duration,
    duration: Duration,
    call: F,
) -> anyhow::Result<Stats>
where
    C: Send + 'static,
    F: Fn(C, u64) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = anyhow::Result<C>> + Send,
{
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::new();
    for (id, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            let mut client = client;
            let mut n = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                client = call(client, (id as u64) << 40 | n).await?;
                n += 1;
                if t >= start {
                    hist.record(t.elapsed().as_micros() as u64)?;
                }
            }
            anyhow::Ok(hist)
        }));
    }
    let mut latency = Histogram::<u64>::new(3)?;
    for t in tasks {
        latency.add(t.await??)?;
    }
    Ok(Stats {
        calls: latency.len(),
        elapsed: duration,
        latency,
    })
}

async fn channels(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = Channel::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        out.push(channel);
    }
    Ok(out)
}

fn handoff_request(path: &str, n: u64) -> RequestHandoffRequest {
    let (contact, message) = match path {
        "approve" => (format!("load-{n}"), "I want to sell my house"),
        _ => (
            "load-stay".to_owned(),
            "Thanks so much for the info, I will check with my wife tonight.",
        ),
    };
    RequestHandoffRequest {
        contact_id: contact,
        source_bot: "lead".into(),
        message: message.into(),
        ..Default::default()
    }
}

fn print(name: &str, s: &Stats) {
    println!(
        "{name:<24} {:>10.0} calls/s   p50 {:>7.3} ms   p99 {:>7.3} ms   ({} calls)",
        s.rate(),
        s.ms(0.5),
        s.ms(0.99),
        s.calls
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        matches!(args.path.as_str(), "stay" | "approve"),
        "--path must be 'stay' or 'approve'"
    );

    let echo_listener = TcpListener::bind("127.0.0.1:0").await?;
    let echo_url = format!("http://{}", echo_listener.local_addr()?);
    tokio::spawn(
        Server::builder()
            .add_service(EchoServiceServer::new(Echo))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                echo_listener,
            )),
    );

    let mut telemetry = None;
    let router_url = match &args.router {
        Some(url) => url.clone(),
        None => {
            let mut config = RouterConfig::default();
            config.server.memory = true;
            // The per-principal limiter stays on, at a rate no run reaches.
            config.server.rate_per_principal = 1e9;
            config.server.rate_burst = 1e9;
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
            if args.secure {
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
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let store = server::open_store(&config).await?;
            let engine = server::engine(&config, store).await?;
            tokio::spawn(server::serve(
                config,
                engine,
                listener,
                std::future::pending(),
            ));
            url
        }
    };

    // The same payload size as the handoff request, so the floor is fair.
    let payload: Arc<[u8]> = prost::Message::encode_to_vec(&handoff_request(&args.path, 0)).into();
    println!(
        "{} clients, {} alternating rounds of {:?} each after {:?} warm-up, path '{}'{}",
        args.clients,
        args.rounds,
        args.duration,
        args.warmup,
        args.path,
        if args.secure {
            ", with tokens and OTLP export"
        } else {
            ""
        }
    );
    let path: &'static str = if args.path == "approve" {
        "approve"
    } else {
        "stay"
    };
    let secure = args.secure;
    let with_token = move |mut r: Request<()>| {
        if secure {
            let value = format!("Bearer {TOKEN}")
                .parse()
                .map_err(|_| Status::internal("token"))?;
            r.metadata_mut().insert("authorization", value);
        }
        Ok(r)
    };
    let echo_channels = channels(&echo_url, args.clients).await?;
    let router_channels = channels(&router_url, args.clients).await?;
    if path == "stay" {
        // The stay path is measured only if its message really stays.
        let mut client =
            HandoffServiceClient::with_interceptor(router_channels[0].clone(), with_token);
        let answer = client
            .request_handoff(handoff_request(path, 0))
            .await?
            .into_inner();
        anyhow::ensure!(
            answer.decision == baton_proto::v1::Decision::Stay as i32,
            "the stay message was decided {:?}: {}",
            answer.decision,
            answer.reason
        );
    }
    // Alternate floor and Baton, so drift on a shared machine hits both alike.
    let mut echo: Option<Stats> = None;
    let mut baton: Option<Stats> = None;
    for round in 0..args.rounds {
        let clients = echo_channels
            .iter()
            .map(|c| (EchoServiceClient::new(c.clone()), payload.clone()))
            .collect();
        let run = measure(
            clients,
            args.warmup,
            args.duration,
            |(mut c, p), _| async move {
                c.echo(EchoRequest {
                    payload: p.to_vec(),
                })
                .await?;
                Ok((c, p))
            },
        )
        .await?;
        echo = Some(Stats::merge(echo, run)?);
        let clients = router_channels
            .iter()
            .map(|c| HandoffServiceClient::with_interceptor(c.clone(), with_token))
            .collect();
        let offset = u64::from(round) << 56;
        let run = measure(
            clients,
            args.warmup,
            args.duration,
            move |mut c, n| async move {
                let reply = c
                    .request_handoff(handoff_request(path, offset | n))
                    .await?
                    .into_inner();
                let expected = if path == "stay" {
                    Decision::Stay
                } else {
                    Decision::Approved
                };
                anyhow::ensure!(
                    reply.decision == expected as i32,
                    "unexpected decision {:?}: {}",
                    reply.decision(),
                    reply.reason
                );
                Ok(c)
            },
        )
        .await?;
        baton = Some(Stats::merge(baton, run)?);
    }
    let (echo, baton) = (echo.context("no rounds")?, baton.context("no rounds")?);
    print("echo (floor)", &echo);
    print(&format!("RequestHandoff ({path})"), &baton);
    println!(
        "ratio to floor: throughput {:.2}   p50 {:.2}x   p99 {:.2}x",
        baton.rate() / echo.rate(),
        baton.ms(0.5) / echo.ms(0.5),
        baton.ms(0.99) / echo.ms(0.99)
    );
    if let Some(t) = telemetry {
        t.shutdown();
    }
    Ok(())
}
