//! What operators and bots use around decisions: reflection (v1 and
//! v1alpha), acknowledgements, outcomes, stats, release, the decision feed.

use std::time::Duration;

use baton_proto::v1::*;
use baton_test_support::{Router, next_within};
use tonic_reflection::pb::{v1, v1alpha};

use crate::{decision, request, router, router_bin};

/// How long a test waits for a stream's next message.
const STREAM_WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    let router = router(&[]).await;
    let channel = tonic::transport::Channel::from_shared(router.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let expected = [
        "baton.v1.AdminService",
        "baton.v1.HandoffService",
        "baton.v1.HealthService",
        "grpc.health.v1.Health",
    ];

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let ask = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        next_within(&mut replies, STREAM_WAIT, "v1 reflection reply")
            .await
            .unwrap()
            .expect("a v1 reflection reply")
            .message_response
    else {
        panic!("v1 reflection did not list services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in expected {
        assert!(
            names.iter().any(|n| n == name),
            "v1 lacks {name}: {names:?}"
        );
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let ask = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        next_within(&mut replies, STREAM_WAIT, "v1alpha reflection reply")
            .await
            .unwrap()
            .expect("a v1alpha reflection reply")
            .message_response
    else {
        panic!("v1alpha reflection did not list services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in expected {
        assert!(
            names.iter().any(|n| n == name),
            "v1alpha lacks {name}: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.contains("Echo")),
        "bench service leaked: {names:?}"
    );
}

#[tokio::test]
async fn acknowledge_outcome_stats_release_and_the_decision_feed() {
    let router = router(&[]).await;
    let mut handoff = router.handoff().await;
    let mut admin = router.admin().await;
    let mut feed = admin
        .watch_decisions(WatchDecisionsRequest {
            contact_id: "ops-1".into(),
            bot: String::new(),
            skip_stay: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut incoming = handoff
        .watch_handoffs(WatchHandoffsRequest {
            bot: "seller".into(),
        })
        .await
        .unwrap()
        .into_inner();

    // Streams are registered before the first decision is published.
    handoff
        .request_handoff(request("ops-1", "lead", "hello"))
        .await
        .unwrap();
    let reply = handoff
        .request_handoff(request("ops-1", "lead", "I want to sell my house"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision(&reply), Decision::Approved);

    let seen = next_within(&mut feed, STREAM_WAIT, "the approval on WatchDecisions")
        .await
        .unwrap()
        .expect("the feed is open")
        .decision
        .unwrap();
    assert_eq!(
        (seen.decision, seen.handoff_id.as_str()),
        (Decision::Approved as i32, reply.handoff_id.as_str())
    );
    let pushed = next_within(&mut incoming, STREAM_WAIT, "the handoff on WatchHandoffs")
        .await
        .unwrap()
        .expect("the handoff stream is open");
    assert_eq!(pushed.handoff.unwrap().handoff_id, reply.handoff_id);

    let ack = || AcknowledgeHandoffRequest {
        contact_id: "ops-1".into(),
        handoff_id: reply.handoff_id.clone(),
        bot: "seller".into(),
    };
    assert!(
        handoff
            .acknowledge_handoff(ack())
            .await
            .unwrap()
            .into_inner()
            .first_acknowledgement
    );
    assert!(
        !handoff
            .acknowledge_handoff(ack())
            .await
            .unwrap()
            .into_inner()
            .first_acknowledgement
    );

    let outcome = RecordOutcomeRequest {
        handoff_id: reply.handoff_id.clone(),
        outcome: Outcome::Successful as i32,
    };
    let recorded = handoff
        .record_outcome(outcome.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            recorded.route.as_str(),
            recorded.recorded,
            recorded.threshold
        ),
        ("lead>seller", true, 0.7)
    );
    assert!(
        !handoff
            .record_outcome(outcome)
            .await
            .unwrap()
            .into_inner()
            .recorded
    );
    let bad = RecordOutcomeRequest {
        handoff_id: reply.handoff_id.clone(),
        outcome: 0,
    };
    assert_eq!(
        handoff.record_outcome(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    let stats = admin
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let count = |d: Decision| {
        stats
            .decisions
            .iter()
            .find(|c| c.decision == d as i32)
            .unwrap()
            .count
    };
    assert_eq!((count(Decision::Stay), count(Decision::Approved)), (1, 1));
    assert_eq!(stats.thresholds.len(), 1);
    assert_eq!(
        (stats.thresholds[0].outcomes, stats.thresholds[0].successes),
        (1, 1)
    );

    let released = admin
        .release_contact(ReleaseContactRequest {
            contact_id: "ops-1".into(),
            owner: "lead".into(),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.previous_owner, "seller");
    let contact = admin
        .get_contact(GetContactRequest {
            contact_id: "ops-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((contact.owner.as_str(), contact.chain_depth), ("lead", 0));
    let history = &contact.history[0];
    assert_eq!(
        (history.acknowledged_at_unix_ms > 0, history.outcome),
        (true, Outcome::Successful as i32)
    );
}

/// Without tokens the bot a request names is who asks: it is told the same
/// of a contact or handoff that is not its own as of one that does not
/// exist. `RecordOutcome` names no bot, so without tokens its caller is
/// trusted as an operator is (the router listens on loopback only).
#[tokio::test]
async fn without_tokens_the_named_bot_sees_only_its_own() {
    let router = router(&[]).await;
    let mut handoff = router.handoff().await;
    let read = |contact: &str, bot: &str| GetContextRequest {
        contact_id: contact.into(),
        bot: bot.into(),
    };
    let told = |s: tonic::Status| (s.code(), s.message().to_owned());
    let unknown = told(
        handoff
            .get_context(read("open-1", "buyer"))
            .await
            .unwrap_err(),
    );
    let reply = handoff
        .request_handoff(request("open-1", "lead", "I want to sell my house"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision(&reply), Decision::Approved);
    for bot in ["buyer", "lead"] {
        let status = handoff.get_context(read("open-1", bot)).await.unwrap_err();
        assert_eq!(told(status), unknown, "{bot}");
    }
    assert_eq!(unknown.0, tonic::Code::PermissionDenied);
    // Naming no bot reads as an operator does.
    let anyone = handoff.get_context(read("open-1", "")).await.unwrap();
    assert_eq!(anyone.into_inner().owner, "seller");
    let missing = handoff.get_context(read("open-2", "")).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let ack = |handoff_id: &str| AcknowledgeHandoffRequest {
        contact_id: "open-1".into(),
        handoff_id: handoff_id.into(),
        bot: "lead".into(),
    };
    let not_target = told(
        handoff
            .acknowledge_handoff(ack(&reply.handoff_id))
            .await
            .unwrap_err(),
    );
    let no_such = told(
        handoff
            .acknowledge_handoff(ack("no-such"))
            .await
            .unwrap_err(),
    );
    assert_eq!(not_target, no_such);
    assert_eq!(not_target.0, tonic::Code::PermissionDenied);
    assert!(!not_target.1.contains("seller"), "{}", not_target.1);

    let outcome = |handoff_id: &str| RecordOutcomeRequest {
        handoff_id: handoff_id.into(),
        outcome: Outcome::Successful as i32,
    };
    let recorded = handoff
        .record_outcome(outcome(&reply.handoff_id))
        .await
        .unwrap();
    assert!(recorded.into_inner().recorded);
    let missing = handoff
        .record_outcome(outcome("no-such"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

/// SIGTERM while a decision holds its contact's lock: the decision is
/// answered (APPROVED), open streams end, the process exits 0 within the
/// grace period, and the approval is on disk when the router comes back.
#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    // The pause is far inside the grace period, and far longer than
    // signalling takes.
    drain_mid_decision(Duration::from_secs(10), "2s").await;
}

/// SIGTERM to a router with `grace` while a decision pauses `pause`
/// holding its contact lock; see [`sigterm_drains_and_exits_cleanly`].
async fn drain_mid_decision(grace: Duration, pause: &str) {
    let grace_arg = format!("server.shutdown_grace={}s", grace.as_secs());
    let pause_arg = format!("drain-1={pause}");
    let mut router = Router::start_with_env(
        router_bin(),
        &["--set", &grace_arg],
        &[("BATON_TEST_PAUSE_AFTER_LOCK", &pause_arg)],
    )
    .await
    .expect("start baton-router");
    let mut feed = router
        .admin()
        .await
        .watch_decisions(WatchDecisionsRequest {
            contact_id: "other".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut handoff = router.handoff().await;
    let mut in_flight = request("drain-1", "lead", "I want to sell my house");
    in_flight.request_id = "drain-r1".into();
    let deciding = tokio::spawn(async move { handoff.request_handoff(in_flight).await });
    // The decision has passed its gates and holds the contact lock.
    router
        .logged("test pause point: holding the contact lock", STREAM_WAIT)
        .await;
    assert!(
        !deciding.is_finished(),
        "the decision did not wait at the pause point"
    );

    router.process().signal("TERM").unwrap();
    let signalled = std::time::Instant::now();
    // Open streams end instead of holding the shutdown up.
    let end = next_within(&mut feed, STREAM_WAIT, "the feed to end on SIGTERM").await;
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "the feed carried on: {end:?}"
    );
    // The call in flight is answered, not cut off.
    let reply = tokio::time::timeout(STREAM_WAIT, deciding)
        .await
        .expect("the in-flight decision to be answered")
        .unwrap()
        .expect("the in-flight decision is answered while draining")
        .into_inner();
    assert_eq!(decision(&reply), Decision::Approved);
    assert!(!reply.handoff_id.is_empty());
    let status = router.process().wait(grace).await;
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < grace,
        "exited only after the grace period: {:?}",
        signalled.elapsed()
    );

    // Back on the same data directory: the approval was committed.
    router.restart().await.expect("restart baton-router");
    let contact = router
        .admin()
        .await
        .get_contact(GetContactRequest {
            contact_id: "drain-1".into(),
        })
        .await
        .expect("the drained decision's contact")
        .into_inner();
    assert_eq!(contact.owner, "seller");
    assert_eq!(
        contact
            .history
            .iter()
            .map(|h| h.handoff_id.as_str())
            .collect::<Vec<_>>(),
        [reply.handoff_id.as_str()]
    );
}
