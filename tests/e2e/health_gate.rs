//! SPEC §2.7.5: a slow target is refused until it reports healthy again.

use std::time::Duration;

use baton_proto::v1::{Decision, GetContactRequest, HealthReport, ReportHealthRequest};
use baton_test_support::eventually;

use crate::{decision, request, router};

fn report(p95_ms: f64) -> ReportHealthRequest {
    ReportHealthRequest {
        report: Some(HealthReport {
            bot: "buyer".into(),
            window_ms: 60_000,
            sample_count: 100,
            p50_ms: 400.0,
            p95_ms,
            p99_ms: p95_ms + 100.0,
            error_rate: 0.0,
            observed_at_unix_ms: 0,
        }),
    }
}

#[tokio::test]
async fn a_slow_buyer_defers_the_handoff_and_a_healthy_report_approves_it() {
    let router = router(&[]).await;
    let mut health = router.health().await;
    let accepted = health
        .report_health(tokio_stream::iter(vec![report(2500.0)]))
        .await
        .unwrap();
    assert_eq!(accepted.into_inner().accepted, 1);

    let mut handoff = router.handoff().await;
    let buy = || request("health-1", "lead", "I want to buy a house");
    let reply = handoff.request_handoff(buy()).await.unwrap().into_inner();
    assert_eq!(
        decision(&reply),
        Decision::DeferredUnhealthy,
        "{}",
        reply.reason
    );
    assert!(
        reply.reason.contains("p95 2500ms above 2160ms"),
        "{}",
        reply.reason
    );
    assert_eq!(reply.retry_after_ms, 30_000);
    let failed = reply.gates.last().unwrap();
    assert_eq!((failed.gate.as_str(), failed.passed), ("health", false));

    health
        .report_health(tokio_stream::iter(vec![report(900.0)]))
        .await
        .unwrap();
    let bots = crate::bots(&router).await;
    let buyer = bots.iter().find(|b| b.id == "buyer").unwrap();
    assert_eq!(buyer.last_report.as_ref().unwrap().p95_ms, 900.0);

    // The deferred handoff is completed by the router itself...
    let admin = router.admin().await;
    let contact = eventually(
        "the deferred handoff to complete",
        Duration::from_secs(5),
        || {
            let mut admin = admin.clone();
            async move {
                let get = GetContactRequest {
                    contact_id: "health-1".into(),
                };
                let c = admin.get_contact(get).await.ok()?.into_inner();
                (c.owner == "buyer").then_some(c)
            }
        },
    )
    .await;
    let deferral = contact.deferral.unwrap();
    assert_eq!((deferral.status.as_str(), deferral.tries), ("COMPLETED", 1));
    assert_eq!(deferral.handoff_id, contact.history[0].handoff_id);
    // ...and a new request to the healthy buyer is approved at once.
    let mut fresh = buy();
    fresh.contact_id = "health-2".into();
    let reply = handoff.request_handoff(fresh).await.unwrap().into_inner();
    assert_eq!(decision(&reply), Decision::Approved, "{}", reply.reason);
    assert_eq!(reply.target_bot, "buyer");
}

#[tokio::test]
async fn a_report_for_an_unknown_bot_is_rejected_and_not_applied() {
    let router = router(&[]).await;
    let mut bad = report(100.0);
    bad.report.as_mut().unwrap().bot = "ghost".into();
    let status = router
        .health()
        .await
        .report_health(tokio_stream::iter(vec![bad]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("report.bot"),
        "{}",
        status.message()
    );
    let bots = crate::bots(&router).await;
    assert!(bots.iter().all(|b| b.last_report.is_none()));
}
