//! What the probe is tested against: a real HTTP bot whose latency and
//! error rate the test switches, a real `grpc.health.v1` server, and a
//! stand-in router that records the reports it receives. All on loopback
//! ports chosen by the kernel.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_probe::ProbeConfig;
use baton_proto::v1::health_service_server::{HealthService, HealthServiceServer};
use baton_proto::v1::{HealthReport, ReportHealthRequest, ReportHealthResponse};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Status, Streaming};

/// A probe configuration for tests: quick probes and reports over a short
/// window, fast reconnection, a kernel-chosen port.
pub fn config(bot: &str, routers: &[String]) -> ProbeConfig {
    ProbeConfig {
        bot: bot.into(),
        router: routers.to_vec(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        interval: Duration::from_millis(10),
        timeout: Duration::from_secs(2),
        window: Duration::from_secs(1),
        window_slots: 10,
        report_every: Duration::from_millis(50),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        ..ProbeConfig::default()
    }
}

/// How the bot behaves; switched at runtime.
#[derive(Default)]
struct Behaviour {
    latency_ms: AtomicU64,
    /// 0: never fails; n: every n-th request answers 500.
    fail_every: AtomicU64,
    requests: AtomicU64,
    /// Take requests and never answer them.
    hung: AtomicBool,
}

/// A bot's HTTP health endpoint (`GET /health`), served by hyper.
pub struct HttpBot {
    pub addr: SocketAddr,
    behaviour: Arc<Behaviour>,
    server: tokio::task::JoinHandle<()>,
}

impl HttpBot {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind bot");
        let addr = listener.local_addr().expect("bot address");
        let behaviour = Arc::new(Behaviour::default());
        let shared = Arc::clone(&behaviour);
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let behaviour = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let behaviour = Arc::clone(&behaviour);
                        async move { Ok::<_, Infallible>(answer(&behaviour, req.uri().path()).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            behaviour,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    /// From now on: answer after `latency`, and fail every `fail_every`-th
    /// request (0: never).
    pub fn set(&self, latency: Duration, fail_every: u64) {
        self.behaviour
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
        self.behaviour
            .fail_every
            .store(fail_every, Ordering::SeqCst);
    }

    /// From now on: read each request and never answer it, keeping the
    /// connection open (a bot stuck on a lock or a dead upstream).
    pub fn hang(&self) {
        self.behaviour.hung.store(true, Ordering::SeqCst);
    }

    pub fn requests(&self) -> u64 {
        self.behaviour.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpBot {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(behaviour: &Behaviour, path: &str) -> Response<Full<Bytes>> {
    if path != "/health" {
        return status(StatusCode::NOT_FOUND);
    }
    let n = behaviour.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if behaviour.hung.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let latency = behaviour.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let every = behaviour.fail_every.load(Ordering::SeqCst);
    if every > 0 && n.is_multiple_of(every) {
        status(StatusCode::INTERNAL_SERVER_ERROR)
    } else {
        status(StatusCode::OK)
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = code;
    response
}

/// A bot's `grpc.health.v1` server (tonic-health).
pub struct GrpcBot {
    pub addr: SocketAddr,
    pub reporter: tonic_health::server::HealthReporter,
    server: tokio::task::JoinHandle<()>,
}

impl GrpcBot {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind bot");
        let addr = listener.local_addr().expect("bot address");
        let (reporter, service) = tonic_health::server::health_reporter();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Self {
            addr,
            reporter,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for GrpcBot {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What the stand-in router saw.
#[derive(Default)]
pub struct Seen {
    pub reports: Mutex<Vec<HealthReport>>,
    /// Report streams opened, and those the probe ended cleanly.
    pub streams: AtomicU64,
    pub closed: AtomicU64,
    /// The `authorization` header of each stream, if any.
    pub authorization: Mutex<Vec<Option<String>>>,
}

#[derive(Clone)]
struct Api {
    seen: Arc<Seen>,
    reject_bot: Option<String>,
}

#[tonic::async_trait]
impl HealthService for Api {
    async fn report_health(
        &self,
        request: tonic::Request<Streaming<ReportHealthRequest>>,
    ) -> Result<tonic::Response<ReportHealthResponse>, Status> {
        self.seen.streams.fetch_add(1, Ordering::SeqCst);
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.seen
            .authorization
            .lock()
            .expect("authorization lock")
            .push(authorization);
        let mut stream = request.into_inner();
        let mut accepted = 0;
        while let Some(message) = stream.message().await? {
            let report = message
                .report
                .ok_or_else(|| Status::invalid_argument("field 'report' is missing"))?;
            if self.reject_bot.as_deref() == Some(report.bot.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "field 'report.bot': '{}' is not a configured bot",
                    report.bot
                )));
            }
            self.seen.reports.lock().expect("reports lock").push(report);
            accepted += 1;
        }
        self.seen.closed.fetch_add(1, Ordering::SeqCst);
        Ok(tonic::Response::new(ReportHealthResponse { accepted }))
    }
}

/// A stand-in for the router's `HealthService`, on its own runtime so that
/// stopping it drops every connection at once, as a killed process would.
pub struct FakeRouter {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    reject_bot: Option<String>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeRouter {
    pub fn start() -> Self {
        Self::start_rejecting(None)
    }

    /// A router that ends the stream with INVALID_ARGUMENT on a report for
    /// `bot`, as the real one does for a bot it does not know.
    pub fn start_rejecting(bot: Option<&str>) -> Self {
        let mut router = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            seen: Arc::default(),
            reject_bot: bot.map(str::to_owned),
            runtime: None,
        };
        router.launch();
        router
    }

    fn launch(&mut self) {
        let listener = std::net::TcpListener::bind(self.addr).expect("bind router");
        listener.set_nonblocking(true).expect("nonblocking");
        self.addr = listener.local_addr().expect("router address");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("router runtime");
        let api = Api {
            seen: Arc::clone(&self.seen),
            reject_bot: self.reject_bot.clone(),
        };
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            let _ = tonic::transport::Server::builder()
                .add_service(HealthServiceServer::new(api))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        self.runtime = Some(runtime);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops the server and every connection it had.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Serves again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn reports(&self) -> usize {
        self.seen.reports.lock().expect("reports lock").len()
    }

    pub fn latest(&self) -> Option<HealthReport> {
        self.seen
            .reports
            .lock()
            .expect("reports lock")
            .last()
            .cloned()
    }
}

impl Drop for FakeRouter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP request to the probe; the status and the body.
pub async fn http(method: Method, url: &str, body: &str) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = client.request(request).await.expect("probe answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
