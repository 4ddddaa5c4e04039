//! Passive observations: the bot posts what its real requests did; posting
//! never waits, a full queue drops and counts, bad input is a 400.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_probe::{Probe, ProbeConfig, Status};
use baton_test_support::eventually;
use http::{Method, StatusCode};

use crate::support::{FakeRouter, config, http};

const DEADLINE: Duration = Duration::from_secs(20);

fn passive_only(router: &FakeRouter) -> ProbeConfig {
    ProbeConfig {
        // Long enough that nothing posted by the test expires.
        window: Duration::from_secs(60),
        window_slots: 20,
        ..config("buyer", &[router.url()])
    }
}

async fn healthz(probe: &Probe) -> Status {
    let (code, body) = http(
        Method::GET,
        &format!("http://{}/healthz", probe.local_addr()),
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    serde_json::from_str(&body).expect("healthz is JSON")
}

#[tokio::test]
async fn observations_reach_the_report_with_exact_counts() {
    let router = FakeRouter::start();
    let probe = Probe::start(passive_only(&router)).await.unwrap();
    let url = format!("http://{}/observe", probe.local_addr());
    for i in 0..40 {
        let ok = i % 4 != 0;
        let (code, body) = http(
            Method::POST,
            &url,
            &format!(r#"{{"latency_ms": 100.0, "ok": {ok}}}"#),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body, r#"{"queued":true}"#);
    }
    let report = eventually("a report of all 40 observations", DEADLINE, || {
        let found = router.latest().filter(|r| r.sample_count == 40);
        async move { found }
    })
    .await;
    assert_eq!(report.error_rate, 0.25);
    assert!((report.p50_ms - 100.0).abs() <= 0.1, "{report:?}");
    assert!((report.p99_ms - 100.0).abs() <= 0.1, "{report:?}");

    let status = healthz(&probe).await;
    assert_eq!(
        (status.bot.as_str(), status.samples, status.errors),
        ("buyer", 40, 10)
    );
    assert_eq!((status.observed, status.dropped, status.probes), (40, 0, 0));
    assert_eq!(status.router, Some(router.url()));
    assert!(status.reports_sent >= 1);
    probe.stop().await;
}

#[tokio::test]
async fn bad_observations_are_400_with_the_reason_and_change_nothing() {
    let router = FakeRouter::start();
    let probe = Probe::start(passive_only(&router)).await.unwrap();
    let base = format!("http://{}", probe.local_addr());
    let observe = format!("{base}/observe");
    for (body, reason) in [
        ("{not json", "invalid observation: key must be a string"),
        (r#"{"ok": true}"#, "missing field `latency_ms`"),
        (
            r#"{"latency_ms": -5, "ok": true}"#,
            "field 'latency_ms' must be a finite number >= 0, got -5",
        ),
        (
            r#"{"latency_ms": 5, "ok": true, "extra": 1}"#,
            "unknown field `extra`",
        ),
    ] {
        let (code, answer) = http(Method::POST, &observe, body).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer.contains(reason), "{body}: {answer}");
    }
    let too_big = format!(
        r#"{{"latency_ms": 5, "ok": true, "pad": "{}"}}"#,
        "x".repeat(5000)
    );
    let (code, answer) = http(Method::POST, &observe, &too_big).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.contains("at most 4096 bytes"), "{answer}");

    let (code, _) = http(Method::GET, &observe, "").await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let (code, _) = http(Method::POST, &format!("{base}/healthz"), "").await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let (code, _) = http(Method::GET, &format!("{base}/nope"), "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let status = healthz(&probe).await;
    assert_eq!((status.samples, status.observed, status.dropped), (0, 0, 0));
    probe.stop().await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_every_post_is_still_accepted() {
    let router = FakeRouter::start();
    let probe = Probe::start(ProbeConfig {
        queue_capacity: 1,
        ..passive_only(&router)
    })
    .await
    .unwrap();
    let url = Arc::new(format!("http://{}/observe", probe.local_addr()));
    let posted = Arc::new(AtomicU64::new(0));
    // Bursts of concurrent posts until the single-slot queue overflows.
    eventually("observations dropped", DEADLINE, || {
        let (url, posted) = (Arc::clone(&url), Arc::clone(&posted));
        let probe = &probe;
        async move {
            let burst: Vec<_> = (0..32)
                .map(|_| {
                    let (url, posted) = (Arc::clone(&url), Arc::clone(&posted));
                    tokio::spawn(async move {
                        for _ in 0..10 {
                            let (code, body) =
                                http(Method::POST, &url, r#"{"latency_ms": 1, "ok": true}"#).await;
                            assert_eq!(code, StatusCode::ACCEPTED, "{body}");
                            posted.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            for task in burst {
                task.await.expect("posting task");
            }
            (probe.status().dropped > 0).then_some(())
        }
    })
    .await;
    let posted = posted.load(Ordering::SeqCst);
    // Every post was either queued (and ends up in the window) or dropped.
    let status = eventually("the queue drained", DEADLINE, || {
        let status = probe.status();
        async move { (status.samples == status.observed).then_some(status) }
    })
    .await;
    assert_eq!(status.observed + status.dropped, posted, "{status:?}");
    let from_healthz = healthz(&probe).await;
    assert_eq!(from_healthz.dropped, status.dropped);
    probe.stop().await;
}
