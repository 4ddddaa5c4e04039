//! The probe binary's footprint in steady state: resident memory and CPU
//! while it probes a local HTTP bot 10 times a second and reports to a
//! stand-in router every second. Targets: RSS ≤ 15 MiB, CPU < 1 % of a
//! core.
//!
//! `cargo bench -p baton-probe --bench footprint` builds the binary with the
//! bench (release) profile, starts it, lets it settle, then reads
//! `/proc/<pid>/stat` (utime + stime) and `/proc/<pid>/status` (VmRSS,
//! VmHWM) over `MEASURE`. Linux only. The baseline printed beside it is the
//! same process idling with no active probe and no reports to send (router
//! away), measured in the same run.

use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_proto::v1::health_service_server::{HealthService, HealthServiceServer};
use baton_proto::v1::{ReportHealthRequest, ReportHealthResponse};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

const SETTLE: Duration = Duration::from_secs(3);
const MEASURE: Duration = Duration::from_secs(10);
const RSS_TARGET_KIB: f64 = 15.0 * 1024.0;
const CPU_TARGET_PCT: f64 = 1.0;

#[derive(Clone, Default)]
struct Router {
    reports: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl HealthService for Router {
    async fn report_health(
        &self,
        request: tonic::Request<tonic::Streaming<ReportHealthRequest>>,
    ) -> Result<tonic::Response<ReportHealthResponse>, tonic::Status> {
        let mut stream = request.into_inner();
        let mut accepted = 0;
        while stream.message().await?.is_some() {
            self.reports.fetch_add(1, Ordering::Relaxed);
            accepted += 1;
        }
        Ok(tonic::Response::new(ReportHealthResponse { accepted }))
    }
}

async fn bot() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind bot");
    let url = format!("http://{}/health", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, hits)
}

async fn router() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let api = Router::default();
    let reports = Arc::clone(&api.reports);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HealthServiceServer::new(api))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, reports)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the slice starts at field 3.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Figures {
    rss_kib: u64,
    hwm_kib: u64,
    cpu_pct: f64,
}

async fn measure(child: &Child) -> Figures {
    let pid = child.id();
    tokio::time::sleep(SETTLE).await;
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    tokio::time::sleep(MEASURE).await;
    let (t1, c1) = (Instant::now(), cpu_ticks(pid));
    let cpu_s = (c1 - c0) as f64 / clock_ticks_per_second();
    Figures {
        rss_kib: status_kib(pid, "VmRSS:"),
        hwm_kib: status_kib(pid, "VmHWM:"),
        cpu_pct: 100.0 * cpu_s / (t1 - t0).as_secs_f64(),
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_baton-probe"))
        .args(["--bot", "buyer", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start baton-probe")
}

#[tokio::main]
async fn main() {
    let (bot_url, hits) = bot().await;
    let (router_url, reports) = router().await;
    let away = format!("http://127.0.0.1:{}", baton_test_support::free_port());

    let mut idle = spawn(&["--router", &away]);
    let baseline = measure(&idle).await;
    let _ = idle.kill();
    let _ = idle.wait();

    let mut probe = spawn(&[
        "--router",
        &router_url,
        "--http-url",
        &bot_url,
        "--interval",
        "100ms",
        "--report-every",
        "1s",
    ]);
    let (hits0, reports0) = (
        hits.load(Ordering::Relaxed),
        reports.load(Ordering::Relaxed),
    );
    let busy = measure(&probe).await;
    let (hits1, reports1) = (
        hits.load(Ordering::Relaxed),
        reports.load(Ordering::Relaxed),
    );
    let _ = probe.kill();
    let _ = probe.wait();

    let secs = (SETTLE + MEASURE).as_secs_f64();
    println!(
        "baton-probe footprint over {}s (after {}s to settle):",
        MEASURE.as_secs(),
        SETTLE.as_secs()
    );
    println!(
        "  idle (passive only, router away)  RSS {:>6} KiB (peak {:>6})  CPU {:>5.2} %",
        baseline.rss_kib, baseline.hwm_kib, baseline.cpu_pct
    );
    println!(
        "  10 probes/s, 1 report/s           RSS {:>6} KiB (peak {:>6})  CPU {:>5.2} %   \
         ({:.1} probes/s, {:.1} reports/s seen)",
        busy.rss_kib,
        busy.hwm_kib,
        busy.cpu_pct,
        (hits1 - hits0) as f64 / secs,
        (reports1 - reports0) as f64 / secs,
    );
    println!(
        "  vs targets: RSS {:.2} of 15 MiB, CPU {:.2} of 1 % of a core; vs idle: RSS {:.2}x",
        busy.rss_kib as f64 / RSS_TARGET_KIB,
        busy.cpu_pct / CPU_TARGET_PCT,
        busy.rss_kib as f64 / baseline.rss_kib.max(1) as f64,
    );
}
