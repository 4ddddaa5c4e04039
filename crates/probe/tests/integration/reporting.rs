//! The report stream: one long-lived stream, router URLs tried in turn,
//! reconnection after the router goes away, rejected reports survived.

use std::sync::atomic::Ordering;
use std::time::Duration;

use baton_probe::{Probe, ProbeConfig, Token};
use baton_test_support::{eventually, free_port};

use crate::support::{FakeRouter, HttpBot, config};

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn reports_flow_over_one_stream_to_the_first_router_that_answers() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let router = FakeRouter::start();
    let probe = Probe::start(config("buyer", &[dead, router.url()]))
        .await
        .unwrap();
    eventually("10 reports", DEADLINE, || {
        let n = router.reports();
        async move { (n >= 10).then_some(()) }
    })
    .await;
    assert_eq!(router.seen.streams.load(Ordering::SeqCst), 1);
    assert_eq!(*router.seen.authorization.lock().unwrap(), [None]);
    assert_eq!(probe.status().router, Some(router.url()));
    probe.stop().await;
    // Stopping ends the stream cleanly: the router saw its end.
    assert_eq!(router.seen.closed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_probe_reconnects_when_the_router_comes_back_and_kept_measuring() {
    let bot = HttpBot::start().await;
    let mut router = FakeRouter::start();
    let probe = Probe::start(ProbeConfig {
        http_url: Some(bot.url()),
        window: Duration::from_secs(60),
        ..config("buyer", &[router.url()])
    })
    .await
    .unwrap();
    eventually("first reports", DEADLINE, || {
        let n = router.reports();
        async move { (n >= 2).then_some(()) }
    })
    .await;

    router.stop();
    eventually("the probe to notice", DEADLINE, || {
        let status = probe.status();
        async move { status.router.is_none().then_some(()) }
    })
    .await;
    let probes_while_away = probe.status().probes;
    let before = router.reports();

    router.restart();
    let report = eventually("reports after the restart", DEADLINE, || {
        let latest = router.latest().filter(|_| router.reports() > before);
        async move { latest }
    })
    .await;
    // Measuring went on while the router was away.
    assert!(report.sample_count >= probes_while_away, "{report:?}");
    assert_eq!(router.seen.streams.load(Ordering::SeqCst), 2);
    assert_eq!(probe.status().router, Some(router.url()));
    probe.stop().await;
}

#[tokio::test]
async fn a_rejected_report_ends_the_stream_and_the_probe_retries_later() {
    let router = FakeRouter::start_rejecting(Some("ghost"));
    let probe = Probe::start(config("ghost", &[router.url()]))
        .await
        .unwrap();
    eventually("three rejected streams", DEADLINE, || {
        let n = router.seen.streams.load(Ordering::SeqCst);
        async move { (n >= 3).then_some(()) }
    })
    .await;
    assert_eq!(router.reports(), 0);
    // Still alive and answering.
    assert_eq!(probe.status().bot, "ghost");
    probe.stop().await;
}

#[tokio::test]
async fn a_configured_token_is_sent_as_a_bearer_on_the_stream() {
    let router = FakeRouter::start();
    let probe = Probe::start(ProbeConfig {
        token: Some(Token::new("buyer-probe-token")),
        ..config("buyer", &[router.url()])
    })
    .await
    .unwrap();
    eventually("a report", DEADLINE, || {
        let n = router.reports();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    assert_eq!(
        *router.seen.authorization.lock().unwrap(),
        [Some("Bearer buyer-probe-token".to_owned())]
    );
    probe.stop().await;
}
