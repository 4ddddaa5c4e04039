//! Several `baton-router` replicas on real etcd processes (SPEC §3): every
//! rule holds across replicas, locks survive crashes only as long as their
//! lease, a frozen router cannot commit, losing etcd fails closed, and a
//! bot watching one replica hears of handoffs approved on another.

use std::time::{Duration, Instant};

use baton_proto::v1::{
    ContextPacket, Decision, GetContactRequest, GetContextRequest, Handoff, HealthReport,
    RecordOutcomeRequest, ReportHealthRequest, RequestHandoffResponse, Signal,
    WatchHandoffsRequest, WatchHandoffsResponse,
};
use baton_test_support::{Etcd, Router, eventually};
use tonic::Code;

use crate::{decision, request, router_bin};

const TTL: &str = "etcd.session_ttl=2s";

async fn replica(etcd: &Etcd, prefix: &str, extra: &[&str]) -> Router {
    replica_with_env(etcd, prefix, extra, &[]).await
}

async fn replica_with_env(
    etcd: &Etcd,
    prefix: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Router {
    let endpoints = etcd.endpoints_arg();
    let mut args = vec!["--etcd", &endpoints, "--etcd-prefix", prefix, "--set", TTL];
    args.extend_from_slice(extra);
    Router::start_with_env(router_bin(), &args, env)
        .await
        .expect("start a replica")
}

fn signal_to(
    contact: &str,
    source: &str,
    target: &str,
    confidence: f64,
) -> baton_proto::v1::RequestHandoffRequest {
    let mut req = request(contact, source, "a message");
    req.signals = vec![Signal {
        target_bot: target.into(),
        confidence,
        pattern: "model".into(),
    }];
    req
}

async fn ask(
    router: &Router,
    req: baton_proto::v1::RequestHandoffRequest,
) -> Result<RequestHandoffResponse, tonic::Status> {
    router
        .handoff()
        .await
        .request_handoff(req)
        .await
        .map(|r| r.into_inner())
}

/// Whether the contact's lock key exists in etcd.
async fn locked(etcd: &Etcd, prefix: &str, contact: &str) -> bool {
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("etcd client");
    let key = format!("{prefix}locks/{contact}");
    client
        .get(key, None)
        .await
        .map(|r| !r.kvs().is_empty())
        .unwrap_or(false)
}

#[tokio::test]
async fn two_replicas_give_exactly_one_approval_per_contact() {
    let etcd = Etcd::single().await.unwrap();
    let r1 = replica(&etcd, "/race/", &["--set", "policy.lock_wait=2s"]).await;
    let r2 = replica(&etcd, "/race/", &["--set", "policy.lock_wait=2s"]).await;
    let (c1, c2) = (r1.handoff().await, r2.handoff().await);
    let mut approvals = std::collections::HashMap::new();
    for batch in 0..10 {
        let mut calls = Vec::new();
        for c in 0..20 {
            let contact = format!("contact-{}", batch * 20 + c);
            for i in 0..8 {
                let mut client = if i % 2 == 0 { c1.clone() } else { c2.clone() };
                let target = if i % 4 < 2 { "seller" } else { "buyer" };
                let req = signal_to(&contact, "lead", target, 0.95);
                let contact = contact.clone();
                calls.push(tokio::spawn(async move {
                    (contact, client.request_handoff(req).await)
                }));
            }
        }
        for call in calls {
            let (contact, reply) = call.await.unwrap();
            let reply = reply.expect("no call fails while etcd is up").into_inner();
            match decision(&reply) {
                Decision::Approved => approvals
                    .entry(contact)
                    .or_insert_with(Vec::new)
                    .push(reply.target_bot),
                Decision::NotOwner | Decision::ContactBusy => {}
                other => panic!("unexpected {other:?}: {}", reply.reason),
            }
        }
    }
    assert_eq!(approvals.len(), 200);
    // Audit what is stored, read through the other replica than most writes.
    let mut admin = r2.admin().await;
    for (contact, targets) in approvals {
        assert_eq!(targets.len(), 1, "{contact}: {targets:?}");
        let stored = admin
            .get_contact(GetContactRequest {
                contact_id: contact.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stored.owner, targets[0], "{contact}");
        assert_eq!(stored.history.len(), 1, "{contact}");
        assert_eq!(
            (
                stored.history[0].source_bot.as_str(),
                stored.history[0].target_bot.as_str()
            ),
            ("lead", targets[0].as_str())
        );
    }
}

#[tokio::test]
async fn a_router_killed_while_holding_a_lock_frees_it_within_the_lease_ttl() {
    let etcd = Etcd::single().await.unwrap();
    let pause = [("BATON_TEST_PAUSE_AFTER_LOCK", "held-1=1h")];
    let mut r1 = replica_with_env(&etcd, "/kill/", &[], &pause).await;
    let r2 = replica(&etcd, "/kill/", &[]).await;
    let mut stuck = r1.handoff().await;
    let mut req = signal_to("held-1", "lead", "seller", 0.95);
    req.context = Some(ContextPacket {
        timeline: Some("r1 timeline".into()),
        ..Default::default()
    });
    let pending = tokio::spawn(async move { stuck.request_handoff(req).await });
    eventually("r1 to hold the lock", Duration::from_secs(10), || async {
        locked(&etcd, "/kill/", "held-1").await.then_some(())
    })
    .await;

    r1.kill();
    assert!(
        pending.await.unwrap().is_err(),
        "a killed router answers nothing"
    );
    let killed = Instant::now();
    let mut req = signal_to("held-1", "lead", "buyer", 0.95);
    req.context = Some(ContextPacket {
        timeline: Some("r2 timeline".into()),
        ..Default::default()
    });
    let reply = eventually("r2 to take the contact", Duration::from_secs(2 + 3), || {
        let req = req.clone();
        let r2 = &r2;
        async move {
            ask(r2, req)
                .await
                .ok()
                .filter(|r| decision(r) == Decision::Approved)
        }
    })
    .await;
    assert!(killed.elapsed() < Duration::from_secs(5));
    assert_eq!(reply.target_bot, "buyer");
    // Nothing of r1's half-done decision is visible: owner and context agree.
    let contact = r2
        .admin()
        .await
        .get_contact(GetContactRequest {
            contact_id: "held-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(contact.owner, "buyer");
    assert_eq!(contact.history.len(), 1);
    assert_eq!(
        contact.context.unwrap().timeline.as_deref(),
        Some("r2 timeline")
    );
}

#[tokio::test]
async fn sigterm_on_a_replica_holding_a_lock_frees_the_contact_at_once() {
    let etcd = Etcd::single().await.unwrap();
    let pause = [("BATON_TEST_PAUSE_AFTER_LOCK", "held-2=1h")];
    // A session that would outlive the test: only its revocation frees the lock.
    let slow = [
        "--set",
        "etcd.session_ttl=60s",
        "--set",
        "server.shutdown_grace=500ms",
    ];
    let mut r1 = replica_with_env(&etcd, "/term/", &slow, &pause).await;
    let r2 = replica(&etcd, "/term/", &[]).await;
    let mut stuck = r1.handoff().await;
    let req = signal_to("held-2", "lead", "seller", 0.95);
    let pending = tokio::spawn(async move { stuck.request_handoff(req).await });
    eventually("r1 to hold the lock", Duration::from_secs(10), || async {
        locked(&etcd, "/term/", "held-2").await.then_some(())
    })
    .await;

    let terminated = Instant::now();
    r1.process().signal("TERM").unwrap();
    let status = r1.process().wait(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
    assert!(
        pending.await.unwrap().is_err(),
        "cut off by the grace period"
    );
    let req = signal_to("held-2", "lead", "buyer", 0.95);
    let reply = eventually("r2 to take the contact", Duration::from_secs(2), || {
        let req = req.clone();
        let r2 = &r2;
        async move {
            ask(r2, req)
                .await
                .ok()
                .filter(|r| decision(r) == Decision::Approved)
        }
    })
    .await;
    assert!(terminated.elapsed() < Duration::from_secs(2));
    assert_eq!(reply.target_bot, "buyer");
}

#[tokio::test]
async fn a_router_frozen_past_its_lease_cannot_commit() {
    let etcd = Etcd::single().await.unwrap();
    let pause = [("BATON_TEST_PAUSE_AFTER_LOCK", "frozen-1=1s")];
    let mut r1 = replica_with_env(&etcd, "/fence/", &[], &pause).await;
    let r2 = replica(&etcd, "/fence/", &[]).await;
    let mut frozen = r1.handoff().await;
    let req = signal_to("frozen-1", "lead", "seller", 0.95);
    let pending = tokio::spawn(async move { frozen.request_handoff(req).await });
    eventually("r1 to hold the lock", Duration::from_secs(10), || async {
        locked(&etcd, "/fence/", "frozen-1").await.then_some(())
    })
    .await;

    r1.process().signal("STOP").unwrap();
    // The lease (2 s) runs out while r1 is frozen; its lock key goes with it.
    eventually("r1's lock to expire", Duration::from_secs(10), || async {
        (!locked(&etcd, "/fence/", "frozen-1").await).then_some(())
    })
    .await;
    let reply = ask(&r2, signal_to("frozen-1", "lead", "buyer", 0.95))
        .await
        .unwrap();
    assert_eq!(decision(&reply), Decision::Approved, "{}", reply.reason);

    r1.process().signal("CONT").unwrap();
    match pending.await.unwrap() {
        Ok(reply) => assert_ne!(
            decision(reply.get_ref()),
            Decision::Approved,
            "a fenced router approved"
        ),
        Err(status) => assert!(
            matches!(status.code(), Code::Aborted | Code::Unavailable),
            "{status}"
        ),
    }
    let contact = r2
        .admin()
        .await
        .get_contact(GetContactRequest {
            contact_id: "frozen-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (contact.owner.as_str(), contact.history.len()),
        ("buyer", 1)
    );
}

#[tokio::test]
async fn losing_etcd_quorum_fails_closed_and_the_router_recovers_by_itself() {
    let mut etcd = Etcd::cluster(3).await.unwrap();
    let router = replica(&etcd, "/quorum/", &["--set", "etcd.op_timeout=1s"]).await;
    let approve = |contact: &str| signal_to(contact, "lead", "seller", 0.95);

    etcd.kill(0);
    let reply = eventually(
        "a decision with one member down",
        Duration::from_secs(10),
        || {
            let router = &router;
            async move {
                ask(router, approve("q-1"))
                    .await
                    .ok()
                    .filter(|r| decision(r) == Decision::Approved)
            }
        },
    )
    .await;
    assert_eq!(reply.target_bot, "seller");

    etcd.kill(1);
    for i in 0..3 {
        let started = Instant::now();
        match ask(&router, approve(&format!("q-lost-{i}"))).await {
            Ok(reply) => assert_eq!(decision(&reply), Decision::ContactBusy, "{}", reply.reason),
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let stay = ask(
            &router,
            request(&format!("q-lost-{i}"), "lead", "hello there"),
        )
        .await
        .unwrap();
        assert_eq!(decision(&stay), Decision::Stay);
    }

    etcd.restart(0).unwrap();
    etcd.restart(1).unwrap();
    let restarted = Instant::now();
    etcd.healthy(0).await;
    eventually(
        "the router to approve again",
        Duration::from_secs(10),
        || {
            let router = &router;
            async move {
                ask(router, approve("q-2"))
                    .await
                    .ok()
                    .filter(|r| decision(r) == Decision::Approved)
            }
        },
    )
    .await;
    assert!(restarted.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn contexts_survive_restarting_every_router() {
    let etcd = Etcd::single().await.unwrap();
    let mut routers = [
        replica(&etcd, "/ctx/", &[]).await,
        replica(&etcd, "/ctx/", &[]).await,
    ];
    for i in 0..20 {
        let mut req = request(&format!("ctx-{i}"), "lead", "I want to sell my house");
        req.context = Some(ContextPacket {
            timeline: Some(format!("{i} months")),
            ..Default::default()
        });
        let reply = ask(&routers[i % 2], req).await.unwrap();
        assert_eq!(decision(&reply), Decision::Approved);
    }
    for r in &mut routers {
        r.restart().await.unwrap();
    }
    for i in 0..20 {
        let read = GetContextRequest {
            contact_id: format!("ctx-{i}"),
            bot: "seller".into(),
        };
        let got = routers[(i + 1) % 2]
            .handoff()
            .await
            .get_context(read)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.context.unwrap().timeline, Some(format!("{i} months")));
    }
}

#[tokio::test]
async fn health_and_learning_on_one_replica_apply_on_the_other() {
    let etcd = Etcd::single().await.unwrap();
    let r1 = replica(&etcd, "/share/", &[]).await;
    let r2 = replica(&etcd, "/share/", &[]).await;

    let slow = ReportHealthRequest {
        report: Some(HealthReport {
            bot: "buyer".into(),
            sample_count: 100,
            p95_ms: 2500.0,
            ..Default::default()
        }),
    };
    r1.health()
        .await
        .report_health(tokio_stream::iter(vec![slow]))
        .await
        .unwrap();
    let reported = Instant::now();
    eventually("replica 2 to defer", Duration::from_secs(1), || {
        let r2 = &r2;
        async move {
            let reply = ask(r2, request("share-h", "lead", "I want to buy a house"))
                .await
                .ok()?;
            (decision(&reply) == Decision::DeferredUnhealthy).then_some(())
        }
    })
    .await;
    assert!(reported.elapsed() <= Duration::from_secs(1));

    // Ten handoffs on replica 1, nine good outcomes: lead>seller via "model" drops to 0.65.
    for i in 0..10 {
        let reply = ask(&r1, signal_to(&format!("learn-{i}"), "lead", "seller", 0.9))
            .await
            .unwrap();
        assert_eq!(decision(&reply), Decision::Approved);
        let outcome = if i == 0 { 2 } else { 1 }; // FAILED once, SUCCESSFUL nine times
        r1.handoff()
            .await
            .record_outcome(RecordOutcomeRequest {
                handoff_id: reply.handoff_id,
                outcome,
            })
            .await
            .unwrap();
    }
    let reply = eventually(
        "replica 2 to apply the learned threshold",
        Duration::from_secs(5),
        || {
            let r2 = &r2;
            async move {
                ask(r2, signal_to("learn-weak", "lead", "seller", 0.66))
                    .await
                    .ok()
                    .filter(|r| decision(r) == Decision::Approved)
            }
        },
    )
    .await;
    assert_eq!(reply.threshold, 0.65);
}

#[tokio::test]
async fn an_approved_handoff_through_a_router_is_two_etcd_writes() {
    let etcd = Etcd::single().await.unwrap();
    // Long-lived health leases, so no lease for a new time bucket is granted mid-count.
    let router = replica(&etcd, "/count/", &["--set", "health.stale_after=1h"]).await;
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    let mut counted = 0;
    for i in 0..10 {
        // The published decisions' leases (60 s, per 7 s bucket) are granted
        // ahead of need, now and then: a count a grant fell into is redone.
        let leases = lease_ids(&mut raw).await;
        let before = etcd.proposals_committed(0).await.unwrap();
        let reply = ask(
            &router,
            request(&format!("count-{i}"), "lead", "I want to sell my house"),
        )
        .await
        .unwrap();
        assert_eq!(decision(&reply), Decision::Approved);
        let after = etcd.proposals_committed(0).await.unwrap();
        if lease_ids(&mut raw).await != leases {
            continue;
        }
        assert_eq!(after - before, 2, "etcd writes for approval {i}");
        counted += 1;
        if counted == 3 {
            return;
        }
    }
    panic!("only {counted} of 10 approvals counted without a lease grant");
}

async fn lease_ids(raw: &mut etcd_client::Client) -> Vec<i64> {
    let mut ids: Vec<i64> = raw
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort_unstable();
    ids
}

/// How long a pushed handoff may take to reach another replica's watcher.
const PUSHED_WITHIN: Duration = Duration::from_secs(5);

/// The next handoff on a `WatchHandoffs` stream, within [`PUSHED_WITHIN`].
async fn next_handoff(
    stream: &mut tonic::Streaming<WatchHandoffsResponse>,
    what: &str,
) -> (Handoff, Option<ContextPacket>) {
    let item = tokio::time::timeout(PUSHED_WITHIN, stream.message())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing on WatchHandoffs within {PUSHED_WITHIN:?}"))
        .expect("the stream stays healthy")
        .expect("the stream stays open");
    (item.handoff.expect("a handoff"), item.context)
}

async fn watch_handoffs(router: &Router, bot: &str) -> tonic::Streaming<WatchHandoffsResponse> {
    router
        .handoff()
        .await
        .watch_handoffs(WatchHandoffsRequest { bot: bot.into() })
        .await
        .expect("WatchHandoffs")
        .into_inner()
}

fn health_report(bot: &str, p95_ms: f64) -> ReportHealthRequest {
    ReportHealthRequest {
        report: Some(HealthReport {
            bot: bot.into(),
            sample_count: 100,
            p95_ms,
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn a_handoff_approved_on_one_replica_reaches_watch_handoffs_on_the_other() {
    let etcd = Etcd::single().await.unwrap();
    let r1 = replica(&etcd, "/push/", &[]).await;
    let r2 = replica(&etcd, "/push/", &[]).await;
    let mut on_r2 = watch_handoffs(&r2, "seller").await;

    let mut req = request("push-1", "lead", "I want to sell my house");
    req.context = Some(ContextPacket {
        timeline: Some("3 months".into()),
        ..Default::default()
    });
    let approved = ask(&r1, req).await.unwrap();
    assert_eq!(
        decision(&approved),
        Decision::Approved,
        "{}",
        approved.reason
    );
    let (pushed, context) = next_handoff(&mut on_r2, "approved on r1").await;
    assert_eq!(
        (
            pushed.handoff_id.as_str(),
            pushed.contact_id.as_str(),
            pushed.source_bot.as_str(),
            pushed.target_bot.as_str(),
            pushed.kind.as_str(),
        ),
        (
            approved.handoff_id.as_str(),
            "push-1",
            "lead",
            "seller",
            "HANDOFF"
        )
    );
    assert_eq!(context.unwrap().timeline.as_deref(), Some("3 months"));

    // Each handoff arrives once: one approved on r2 itself, then one on r1
    // again, come next and in order (a duplicate would come between).
    let local = ask(&r2, request("push-2", "lead", "I want to sell my house"))
        .await
        .unwrap();
    let remote = ask(&r1, request("push-3", "lead", "I want to sell my house"))
        .await
        .unwrap();
    for (reply, from) in [(local, "r2"), (remote, "r1")] {
        assert_eq!(decision(&reply), Decision::Approved, "{}", reply.reason);
        let (pushed, _) = next_handoff(&mut on_r2, from).await;
        assert_eq!(pushed.handoff_id, reply.handoff_id, "approved on {from}");
    }
}

#[tokio::test]
async fn a_deferral_completed_on_one_replica_reaches_watch_handoffs_on_the_other() {
    let etcd = Etcd::single().await.unwrap();
    let r1 = replica(&etcd, "/defer/", &[]).await;
    let r2 = replica(&etcd, "/defer/", &[]).await;
    let mut on_r2 = watch_handoffs(&r2, "buyer").await;

    // buyer's P95 (2.5 s) is over 1.2 x its SLA: the handoff waits for it.
    let mut health = r1.health().await;
    health
        .report_health(tokio_stream::iter(vec![health_report("buyer", 2500.0)]))
        .await
        .unwrap();
    let mut req = request("defer-1", "lead", "I want to buy a house");
    req.request_id = "m-1".into();
    let deferred = ask(&r1, req.clone()).await.unwrap();
    assert_eq!(
        decision(&deferred),
        Decision::DeferredUnhealthy,
        "{}",
        deferred.reason
    );

    // buyer recovers: r1 completes the handoff, and r2's watcher hears of it.
    health
        .report_health(tokio_stream::iter(vec![health_report("buyer", 300.0)]))
        .await
        .unwrap();
    let (pushed, _) = next_handoff(&mut on_r2, "completed on r1").await;
    assert_eq!(
        (
            pushed.contact_id.as_str(),
            pushed.source_bot.as_str(),
            pushed.target_bot.as_str()
        ),
        ("defer-1", "lead", "buyer")
    );
    assert!(
        pushed.reason.starts_with("deferred handoff completed"),
        "{}",
        pushed.reason
    );
    let contact = r2
        .admin()
        .await
        .get_contact(GetContactRequest {
            contact_id: "defer-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(contact.owner, "buyer");
    let deferral = contact.deferral.unwrap();
    assert_eq!(
        (deferral.status.as_str(), deferral.handoff_id.as_str()),
        ("COMPLETED", pushed.handoff_id.as_str())
    );
    // The source's retry, on either replica, replays the completion.
    let replayed = ask(&r2, req).await.unwrap();
    assert_eq!(
        (
            decision(&replayed),
            replayed.handoff_id.as_str(),
            replayed.replayed
        ),
        (Decision::Approved, pushed.handoff_id.as_str(), true)
    );
}

/// 24 concurrent requests for each of 15 contacts, alternating between two
/// replicas, three rounds: many lock waits time out (`CONTACT_BUSY`) while
/// their acquire may already have reached etcd. Afterwards every lock key
/// is gone within the cleanup's bound (`op_timeout`), and every contact
/// takes a new handoff at once, on either replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_requests_over_two_replicas_leave_no_lock_behind() {
    let etcd = Etcd::single().await.unwrap();
    let r1 = replica(&etcd, "/leak/", &[]).await;
    let r2 = replica(&etcd, "/leak/", &[]).await;
    let (c1, c2) = (r1.handoff().await, r2.handoff().await);
    for round in 0..3 {
        let mut calls = Vec::new();
        for c in 0..15 {
            let contact = format!("r{round}-c{c}");
            for i in 0..24 {
                let mut client = if i % 2 == 0 { c1.clone() } else { c2.clone() };
                let target = if i % 4 < 2 { "seller" } else { "buyer" };
                let req = signal_to(&contact, "lead", target, 0.95);
                calls.push(tokio::spawn(
                    async move { client.request_handoff(req).await },
                ));
            }
        }
        let mut busy = 0;
        for call in calls {
            let reply = call.await.unwrap().expect("no call fails").into_inner();
            match decision(&reply) {
                Decision::ContactBusy => busy += 1,
                Decision::Approved | Decision::NotOwner => {}
                other => panic!("unexpected {other:?}: {}", reply.reason),
            }
        }
        eprintln!("round {round}: {busy} of 360 requests found their contact busy");
        for c in 0..15 {
            let contact = format!("r{round}-c{c}");
            // An acquire abandoned while still on its way to etcd lands
            // after its first cleanup; the cleanup looks again after
            // `op_timeout`/4 and `op_timeout` (2 s), so the key is gone by then.
            eventually(
                &format!("round {round}: {contact}'s lock to be released"),
                Duration::from_secs(5),
                || async { (!locked(&etcd, "/leak/", &contact).await).then_some(()) },
            )
            .await;
            // Under load every request for a contact may have found it
            // busy; it is then still the first bot's.
            let owner = match r2
                .admin()
                .await
                .get_contact(GetContactRequest {
                    contact_id: contact.clone(),
                })
                .await
            {
                Ok(found) => found.into_inner().owner,
                Err(e) if e.code() == Code::NotFound => "lead".to_owned(),
                Err(e) => panic!("{contact}: {e}"),
            };
            let next = if owner == "seller" { "buyer" } else { "seller" };
            let via = if c % 2 == 0 { &r1 } else { &r2 };
            let reply = ask(via, signal_to(&contact, &owner, next, 0.95))
                .await
                .unwrap();
            assert_eq!(
                decision(&reply),
                Decision::Approved,
                "round {round}: {contact}: {}",
                reply.reason
            );
        }
    }
}
