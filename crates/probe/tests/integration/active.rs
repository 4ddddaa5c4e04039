//! Active probing measures what the bot really does: latency, failures,
//! timeouts, gRPC serving status.

use std::time::Duration;

use baton_probe::{Probe, ProbeConfig};
use baton_proto::v1::HealthReport;
use baton_test_support::eventually;
use tonic_health::ServingStatus;

use crate::support::{FakeRouter, GrpcBot, HttpBot, config};

const DEADLINE: Duration = Duration::from_secs(20);

/// The first report that satisfies `check`, polling the router.
async fn report_where(
    router: &FakeRouter,
    what: &str,
    check: impl Fn(&HealthReport) -> bool,
) -> HealthReport {
    eventually(what, DEADLINE, || {
        let found = router.latest().filter(|r| check(r));
        async move { found }
    })
    .await
}

#[tokio::test]
async fn http_probes_measure_the_error_rate_and_latency_the_bot_switches_to() {
    let bot = HttpBot::start().await;
    let router = FakeRouter::start();
    let probe = Probe::start(ProbeConfig {
        http_url: Some(bot.url()),
        ..config("buyer", &[router.url()])
    })
    .await
    .unwrap();

    let healthy = report_where(&router, "clean reports", |r| {
        r.sample_count >= 20 && r.error_rate == 0.0
    })
    .await;
    assert_eq!(healthy.bot, "buyer");
    assert_eq!(healthy.window_ms, 1000);
    assert!(healthy.p50_ms <= healthy.p95_ms && healthy.p95_ms <= healthy.p99_ms);

    // Every 2nd answer a 500: the window fills with half failures.
    bot.set(Duration::ZERO, 2);
    report_where(&router, "half the probes failing", |r| {
        r.sample_count >= 20 && (r.error_rate - 0.5).abs() <= 0.05
    })
    .await;

    // Every answer takes 150 ms, none fails: the whole window is slow.
    bot.set(Duration::from_millis(150), 0);
    let slow = report_where(&router, "only slow successes", |r| {
        r.sample_count >= 3 && r.error_rate == 0.0 && r.p50_ms >= 150.0
    })
    .await;
    assert!(slow.p99_ms >= 150.0, "{slow:?}");
    assert!(bot.requests() >= 40);
    assert!(probe.status().probes >= 40);
    probe.stop().await;
}

#[tokio::test]
async fn a_probe_that_times_out_is_an_error_at_the_timeout() {
    let bot = HttpBot::start().await;
    bot.set(Duration::from_millis(500), 0);
    let router = FakeRouter::start();
    let probe = Probe::start(ProbeConfig {
        http_url: Some(bot.url()),
        timeout: Duration::from_millis(50),
        ..config("buyer", &[router.url()])
    })
    .await
    .unwrap();
    let r = report_where(&router, "timed-out probes", |r| r.sample_count >= 5).await;
    assert_eq!(r.error_rate, 1.0, "{r:?}");
    assert!(r.p50_ms >= 50.0, "{r:?}");
    probe.stop().await;
}

/// A bot that takes each request and never answers: every probe times out
/// and counts as a latency of at least the timeout, so the P95 the router
/// judges is the timeout (which, by default, is above 1.2 × the SLA).
#[tokio::test]
async fn a_hung_bot_reports_a_p95_of_at_least_the_timeout() {
    let bot = HttpBot::start().await;
    bot.hang();
    let router = FakeRouter::start();
    let timeout = Duration::from_millis(300);
    let probe = Probe::start(ProbeConfig {
        http_url: Some(bot.url()),
        timeout,
        window: Duration::from_secs(2),
        ..config("buyer", &[router.url()])
    })
    .await
    .unwrap();
    let r = report_where(&router, "timed-out probes of the hung bot", |r| {
        r.sample_count >= 4
    })
    .await;
    assert_eq!(r.error_rate, 1.0, "{r:?}");
    let timeout_ms = timeout.as_secs_f64() * 1000.0;
    assert!(r.p50_ms >= timeout_ms, "{r:?}");
    assert!(r.p95_ms >= timeout_ms, "{r:?}");
    // Each probe was sent and left unanswered: a hang, not a refusal.
    assert!(bot.requests() >= 4, "{} requests", bot.requests());
    probe.stop().await;
}

#[tokio::test]
async fn a_bot_that_refuses_connections_is_an_error() {
    let gone = format!(
        "http://127.0.0.1:{}/health",
        baton_test_support::free_port()
    );
    let router = FakeRouter::start();
    let probe = Probe::start(ProbeConfig {
        http_url: Some(gone),
        ..config("buyer", &[router.url()])
    })
    .await
    .unwrap();
    let r = report_where(&router, "failed probes", |r| r.sample_count >= 5).await;
    assert_eq!(r.error_rate, 1.0, "{r:?}");
    probe.stop().await;
}

#[tokio::test]
async fn grpc_health_probes_follow_the_serving_status() {
    let bot = GrpcBot::start().await;
    let service = "bot.v1.Bot";
    bot.reporter
        .set_service_status(service, ServingStatus::Serving)
        .await;
    let router = FakeRouter::start();
    let probe = Probe::start(ProbeConfig {
        grpc_health: Some(bot.url()),
        grpc_service: service.into(),
        ..config("buyer", &[router.url()])
    })
    .await
    .unwrap();
    report_where(&router, "serving", |r| {
        r.sample_count >= 10 && r.error_rate == 0.0
    })
    .await;

    bot.reporter
        .set_service_status(service, ServingStatus::NotServing)
        .await;
    report_where(&router, "not serving", |r| {
        r.sample_count >= 10 && r.error_rate == 1.0
    })
    .await;

    bot.reporter
        .set_service_status(service, ServingStatus::Serving)
        .await;
    report_where(&router, "serving again", |r| {
        r.sample_count >= 10 && r.error_rate == 0.0
    })
    .await;
    probe.stop().await;
}

#[tokio::test]
async fn an_unknown_grpc_service_is_an_error() {
    let bot = GrpcBot::start().await;
    let router = FakeRouter::start();
    let probe = Probe::start(ProbeConfig {
        grpc_health: Some(bot.url()),
        grpc_service: "no.such.Service".into(),
        ..config("buyer", &[router.url()])
    })
    .await
    .unwrap();
    let r = report_where(&router, "failed checks", |r| r.sample_count >= 5).await;
    assert_eq!(r.error_rate, 1.0, "{r:?}");
    probe.stop().await;
}
