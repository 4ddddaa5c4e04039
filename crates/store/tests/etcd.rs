//! The etcd backend against a real etcd process started by the test.

use std::time::Duration;

use baton_policy::{
    Config, ContactState, ContextPacket, Decision, EntryKind, GateInput, HealthReport,
    HealthStatus, LearningConfig, Outcome, Verdict, assess_health, run_gates,
};
use baton_store::{
    Commit, EtcdBatching, EtcdOptions, EtcdStore, Store, StoreError, StoreEvent, StoredDecision,
};
use baton_test_support::{Etcd, eventually};

fn options(etcd: &Etcd, prefix: &str) -> EtcdOptions {
    EtcdOptions {
        endpoints: etcd.endpoints(),
        prefix: prefix.into(),
        session_ttl: Duration::from_secs(2),
        op_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        context_ttl: Duration::from_secs(24 * 3600),
        decision_ttl: Duration::from_secs(24 * 3600),
        health_ttl: Duration::from_secs(3600),
        defer_ttl: Duration::from_secs(1800),
        event_ttl: Duration::from_secs(60),
        retention: Duration::from_secs(3600),
        batch: EtcdBatching::default(),
    }
}

fn handed_over(contact: &str, handoff_id: &str) -> Commit {
    let mut state = ContactState::new("lead", now());
    let context = ContextPacket {
        timeline: Some("3 months".into()),
        ..Default::default()
    };
    state.hand_over(
        EntryKind::Handoff,
        handoff_id,
        "seller",
        "sell my house",
        0.9,
        "",
        context,
        &[],
        &Config::default(),
        now(),
    );
    Commit {
        contact_id: contact.into(),
        contact: Some(state),
        decision: None,
        deferred: None,
        published: None,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn the_lock_is_exclusive_across_routers_and_a_waiter_gets_it_on_release() {
    let etcd = Etcd::single().await.unwrap();
    let a = EtcdStore::connect(options(&etcd, "/t1/")).await.unwrap();
    let b = std::sync::Arc::new(EtcdStore::connect(options(&etcd, "/t1/")).await.unwrap());
    let held = a.lock("c1", Duration::from_millis(200)).await.unwrap();
    let busy = b.lock("c1", Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(busy, StoreError::Busy(_)), "{busy}");
    let other = b.lock("c2", Duration::from_millis(300)).await.unwrap();
    drop(other);
    let tries = b.writes();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.lock("c1", Duration::from_secs(5)).await.map(|l| l.fence) })
    };
    // Release only once the waiter has tried (and so waits on its watch).
    eventually("the waiter's first try", Duration::from_secs(5), || {
        let tried = b.writes() > tries;
        async move { tried.then_some(()) }
    })
    .await;
    let first_fence = held.fence;
    drop(held); // released without a commit
    let second_fence = waiter.await.unwrap().unwrap();
    assert!(second_fence > first_fence);
}

#[tokio::test]
async fn a_commit_under_a_lost_lock_is_refused_and_the_new_holder_wins() {
    let etcd = Etcd::single().await.unwrap();
    let a = EtcdStore::connect(options(&etcd, "/t2/")).await.unwrap();
    let b = EtcdStore::connect(options(&etcd, "/t2/")).await.unwrap();
    let stale = a.lock("c1", Duration::from_millis(200)).await.unwrap();
    // The session lease goes away as if the router had been frozen past its TTL.
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    raw.lease_revoke(a.session_lease()).await.unwrap();
    let fresh = b.lock("c1", Duration::from_secs(2)).await.unwrap();
    let refused = a.commit(stale, handed_over("c1", "h-a")).await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced(_)), "{refused}");
    b.commit(fresh, handed_over("c1", "h-b")).await.unwrap();
    let stored = b.contact("c1").await.unwrap().unwrap();
    assert_eq!(stored.last_handoff_id, "h-b");
    assert_eq!(stored.history.len(), 1);
}

#[tokio::test]
async fn an_approved_handoff_costs_two_etcd_writes_and_leases_are_shared() {
    let etcd = Etcd::single().await.unwrap();
    // Long-lived published decisions: no lease for a new bucket mid-count.
    let store = EtcdStore::connect(EtcdOptions {
        event_ttl: Duration::from_secs(3600),
        ..options(&etcd, "/t3/")
    })
    .await
    .unwrap();
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    let leases_before = raw.leases().await.unwrap().leases().len();
    for i in 0..3 {
        let proposals = etcd.proposals_committed(0).await.unwrap();
        let writes = store.writes();
        let (lock, _) = store
            .lock_and_load(
                &format!("c{i}"),
                "lead\0r",
                Duration::from_millis(500),
                now(),
            )
            .await
            .unwrap();
        let mut commit = handed_over(&format!("c{i}"), &format!("h{i}"));
        commit.published = Some(b"approved".to_vec());
        store.commit(lock, commit).await.unwrap();
        assert_eq!(store.writes() - writes, 2);
        assert_eq!(etcd.proposals_committed(0).await.unwrap() - proposals, 2);
    }
    for i in 3..100 {
        let lock = store
            .lock(&format!("c{i}"), Duration::from_millis(500))
            .await
            .unwrap();
        let mut commit = handed_over(&format!("c{i}"), &format!("h{i}"));
        commit.published = Some(b"approved".to_vec());
        store.commit(lock, commit).await.unwrap();
    }
    // 100 contexts, handoff records and published decisions with a TTL,
    // and no lease granted for any of them.
    assert_eq!(raw.leases().await.unwrap().leases().len(), leases_before);
    let c = store.contact("c99").await.unwrap().unwrap();
    assert_eq!(
        c.live_context(now()).unwrap().timeline.as_deref(),
        Some("3 months")
    );
}

#[tokio::test]
async fn health_and_outcomes_reach_the_other_router_by_watch() {
    let etcd = Etcd::single().await.unwrap();
    let a = EtcdStore::connect(options(&etcd, "/t4/")).await.unwrap();
    let b = EtcdStore::connect(options(&etcd, "/t4/")).await.unwrap();
    let mut events = b.subscribe().unwrap();
    let report = HealthReport {
        bot: "buyer".into(),
        p95_ms: 2500.0,
        sample_count: 100,
        ..Default::default()
    };
    a.put_health(&report).await.unwrap();
    let lock = a.lock("c1", Duration::from_millis(500)).await.unwrap();
    a.commit(lock, handed_over("c1", "h1:c1")).await.unwrap();
    let recorded = a
        .record_outcome("h1:c1", Outcome::Successful, &LearningConfig::default())
        .await
        .unwrap();
    assert!(recorded.recorded);
    let mut got_health = false;
    let mut got_outcome = false;
    eventually(
        "both events on the other router",
        Duration::from_secs(5),
        || {
            while let Ok(e) = events.try_recv() {
                match e {
                    StoreEvent::Health(r) => got_health |= r == report,
                    StoreEvent::Outcomes(k, w) => {
                        got_outcome |= k.route() == "lead>seller" && w.successes() == 1
                    }
                    StoreEvent::HealthExpired(_) | StoreEvent::Published(_) => {}
                }
            }
            let done = got_health && got_outcome;
            async move { done.then_some(()) }
        },
    )
    .await;
    // Acknowledgements and outcomes read back through the contact.
    assert!(b.acknowledge("h1:c1", "seller", 42).await.unwrap().first);
    let c = b.contact("c1").await.unwrap().unwrap();
    assert_eq!(
        (c.history[0].acknowledged_at, c.history[0].outcome),
        (Some(42), Some(Outcome::Successful))
    );
    assert!(
        !b.record_outcome("h1:c1", Outcome::Failed, &LearningConfig::default())
            .await
            .unwrap()
            .recorded
    );
}

#[tokio::test]
async fn an_unreachable_etcd_fails_in_bounded_time() {
    let mut etcd = Etcd::single().await.unwrap();
    let store = EtcdStore::connect(options(&etcd, "/t5/")).await.unwrap();
    etcd.kill(0);
    let started = std::time::Instant::now();
    let err = store
        .lock("c1", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Busy(_) | StoreError::Unavailable(_)),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_acknowledgement_during_a_decision_is_never_overwritten() {
    let etcd = Etcd::single().await.unwrap();
    let store = EtcdStore::connect(options(&etcd, "/t6/")).await.unwrap();
    let lock = store.lock("c1", Duration::from_millis(500)).await.unwrap();
    store
        .commit(lock, handed_over("c1", "h1:c1"))
        .await
        .unwrap();
    // A second decision loads the contact...
    let lock = store.lock("c1", Duration::from_millis(500)).await.unwrap();
    let loaded = store.load(&lock, "", now()).await.unwrap().contact.unwrap();
    // ...the target acknowledges meanwhile...
    store.acknowledge("h1:c1", "seller", 7).await.unwrap();
    // ...and the decision's commit, built on the older state, is refused.
    let stale = Commit {
        contact_id: "c1".into(),
        contact: Some(loaded),
        ..Default::default()
    };
    let err = store.commit(lock, stale).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let c = store.contact("c1").await.unwrap().unwrap();
    assert_eq!(c.history[0].acknowledged_at, Some(7));
    // The lock was released: the next decision goes through.
    let lock = store.lock("c1", Duration::from_secs(2)).await.unwrap();
    drop(lock);
}

#[tokio::test]
async fn watches_resume_after_etcd_comes_back() {
    let mut etcd = Etcd::single().await.unwrap();
    let a = EtcdStore::connect(options(&etcd, "/t7/")).await.unwrap();
    let b = EtcdStore::connect(options(&etcd, "/t7/")).await.unwrap();
    let mut events = b.subscribe().unwrap();
    // etcd goes away (every watch stream breaks) and comes back on its data.
    etcd.kill(0);
    etcd.restart(0).unwrap();
    etcd.healthy(0).await;
    let report = HealthReport {
        bot: "seller".into(),
        p95_ms: 321.0,
        sample_count: 50,
        ..Default::default()
    };
    eventually("a write after the restart", Duration::from_secs(10), || {
        let (a, report) = (&a, report.clone());
        async move { a.put_health(&report).await.ok() }
    })
    .await;
    eventually(
        "the other router's watch to deliver it",
        Duration::from_secs(10),
        || {
            let mut got = false;
            while let Ok(e) = events.try_recv() {
                got |= e == StoreEvent::Health(report.clone());
            }
            async move { got.then_some(()) }
        },
    )
    .await;
}

/// A router started after a bot went silent must judge it as the routers
/// that saw it report do: stale, not "never reported" (which is allowed).
#[tokio::test]
async fn a_new_router_knows_a_silent_bot_reported_after_its_report_expired() {
    let etcd = Etcd::single().await.unwrap();
    let health_ttl = Duration::from_secs(1);
    let old = EtcdStore::connect(EtcdOptions {
        health_ttl,
        ..options(&etcd, "/t8/")
    })
    .await
    .unwrap();
    let report = HealthReport {
        bot: "buyer".into(),
        p95_ms: 300.0,
        sample_count: 100,
        observed_at: now() - 5_000,
        received_at: now(),
        ..Default::default()
    };
    old.put_health(&report).await.unwrap();
    // The bot goes silent: its leased report expires in etcd.
    let raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    eventually(
        "the leased report to expire",
        Duration::from_secs(20),
        || {
            let mut kv = raw.kv_client();
            async move {
                let got = kv.get("/t8/health/buyer", None).await.unwrap();
                got.kvs().is_empty().then_some(())
            }
        },
    )
    .await;

    // Store level: a replica started now still has the bot's last report.
    let new = EtcdStore::connect(EtcdOptions {
        health_ttl,
        ..options(&etcd, "/t8/")
    })
    .await
    .unwrap();
    assert_eq!(new.health_reports().await.unwrap(), vec![report.clone()]);
    assert_eq!(old.health_reports().await.unwrap(), vec![report.clone()]);

    // Policy level: the new replica defers a handoff to it as stale, where
    // without the record it would have found no report and approved.
    let mut config = Config::default();
    config.health.stale_after = health_ttl;
    let reports = new.health_reports().await.unwrap();
    let contact = ContactState::new("lead", now());
    let at = report.received_at + 1_001;
    let gate = |target_health: Option<&HealthReport>| {
        run_gates(
            &config,
            &GateInput {
                contact: &contact,
                source: "lead",
                target: "buyer",
                target_health,
                target_sla: Duration::from_millis(1800),
                now: at,
            },
        )
        .failure
        .map(|f| f.decision)
    };
    assert_eq!(
        assess_health(
            reports.first(),
            Duration::from_millis(1800),
            &config.health,
            at
        ),
        HealthStatus::Stale("last report 1s ago (stale after 1s)".into())
    );
    assert_eq!(gate(reports.first()), Some(Decision::DeferredUnhealthy));
    assert_eq!(gate(None), None, "no report at all is let through");
}

/// The lock keys left under `prefix`.
async fn lock_keys(raw: &mut etcd_client::Client, prefix: &str) -> Vec<String> {
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    raw.get(format!("{prefix}locks/"), Some(options))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waits_that_time_out_leave_no_lock_behind() {
    let etcd = Etcd::single().await.unwrap();
    let stores = [
        std::sync::Arc::new(EtcdStore::connect(options(&etcd, "/t9/")).await.unwrap()),
        std::sync::Arc::new(EtcdStore::connect(options(&etcd, "/t9/")).await.unwrap()),
    ];
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    let contacts = 4;
    for round in 0..3 {
        let mut tasks = Vec::new();
        for i in 0..contacts * 24 {
            let store = std::sync::Arc::clone(&stores[i % 2]);
            // Waits short enough that some end while their acquire is in flight.
            let wait = Duration::from_millis(1 + (i % 7) as u64 * 3);
            tasks.push(tokio::spawn(async move {
                let contact = format!("c{}", i % contacts);
                match store.lock(&contact, wait).await {
                    Ok(lock) => {
                        tokio::task::yield_now().await;
                        drop(lock);
                        false
                    }
                    Err(StoreError::Busy(_)) => true,
                    Err(e) => panic!("{e}"),
                }
            }));
        }
        let mut busy = 0;
        for task in tasks {
            busy += usize::from(task.await.unwrap());
        }
        assert!(busy > 0, "round {round}: no lock wait timed out");
        // No key stays on the live session leases: every contact is free
        // again, well before the sessions could expire.
        let mut left = Vec::new();
        for _ in 0..100 {
            left = lock_keys(&mut raw, "/t9/").await;
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(left, Vec::<String>::new(), "round {round}");
        // An acquire abandoned in flight may still land after that look;
        // its cleanup removes it within op_timeout (2 s), while a leaked
        // lock would stay as long as the live session: a wait of 3 s tells
        // them apart.
        for c in 0..contacts {
            let lock = stores[c % 2]
                .lock(&format!("c{c}"), Duration::from_secs(3))
                .await
                .unwrap();
            drop(lock);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_lock_call_leaves_no_lock_behind() {
    let etcd = Etcd::single().await.unwrap();
    let store = std::sync::Arc::new(EtcdStore::connect(options(&etcd, "/t10/")).await.unwrap());
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    let mut puts = raw
        .watch(
            "/t10/locks/",
            Some(etcd_client::WatchOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    // Dropped at different points of their flight: some before the
    // transaction is sent, some after etcd applied it, before the answer.
    for i in 0..60 {
        let task = {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let _held = store.lock(&format!("c{i}"), Duration::from_secs(5)).await;
                std::future::pending::<()>().await;
            })
        };
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_micros(50 * (i % 30)) {
            tokio::task::yield_now().await;
        }
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }
    let mut created = 0;
    while let Ok(Ok(Some(resp))) =
        tokio::time::timeout(Duration::from_millis(300), puts.message()).await
    {
        created += resp
            .events()
            .iter()
            .filter(|e| e.event_type() == etcd_client::EventType::Put)
            .count();
    }
    assert!(created > 0, "no dropped call reached etcd");
    eventually(
        "the lock keys of dropped calls to go",
        Duration::from_secs(5),
        || {
            let mut raw = raw.clone();
            async move { lock_keys(&mut raw, "/t10/").await.is_empty().then_some(()) }
        },
    )
    .await;
    let other = EtcdStore::connect(options(&etcd, "/t10/")).await.unwrap();
    for i in 0..60 {
        drop(
            other
                .lock(&format!("c{i}"), Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
}

#[tokio::test]
async fn closing_the_store_releases_its_locks_at_once() {
    let etcd = Etcd::single().await.unwrap();
    let mut slow = options(&etcd, "/t11/");
    slow.session_ttl = Duration::from_secs(60);
    let a = EtcdStore::connect(slow).await.unwrap();
    let b = EtcdStore::connect(options(&etcd, "/t11/")).await.unwrap();
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    // Held locks that nothing releases: as if their release had failed.
    let mut locks = Vec::new();
    for i in 0..3 {
        let contact = format!("c{i}");
        locks.push(a.lock(&contact, Duration::from_millis(500)).await.unwrap());
    }
    std::mem::forget(locks);
    assert_eq!(lock_keys(&mut raw, "/t11/").await.len(), 3);
    let started = std::time::Instant::now();
    a.close().await.unwrap();
    assert_eq!(lock_keys(&mut raw, "/t11/").await, Vec::<String>::new());
    for i in 0..3 {
        drop(
            b.lock(&format!("c{i}"), Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // Nothing is locked through a closed store.
    let refused = a.lock("c9", Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused}");
}

/// The next decision published by another router, skipping other events;
/// `None` when none comes within `within`.
async fn next_published(
    events: &mut tokio::sync::broadcast::Receiver<StoreEvent>,
    within: Duration,
) -> Option<Vec<u8>> {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(StoreEvent::Published(bytes)) => return bytes,
                Ok(_) => continue,
                Err(e) => panic!("store events: {e}"),
            }
        }
    })
    .await
    .ok()
}

/// Commits a handoff of `contact` through `store`, publishing `what`.
async fn commit_publishing(store: &EtcdStore, contact: &str, what: &str) {
    let lock = store
        .lock(contact, Duration::from_millis(500))
        .await
        .unwrap();
    let mut commit = handed_over(contact, &format!("h:{contact}"));
    commit.published = Some(what.as_bytes().to_vec());
    store.commit(lock, commit).await.unwrap();
}

#[tokio::test]
async fn a_published_decision_reaches_the_other_routers_once_and_not_its_own() {
    let etcd = Etcd::single().await.unwrap();
    let a = EtcdStore::connect(options(&etcd, "/t12/")).await.unwrap();
    let b = EtcdStore::connect(options(&etcd, "/t12/")).await.unwrap();
    let (mut on_a, mut on_b) = (a.subscribe().unwrap(), b.subscribe().unwrap());
    let within = Duration::from_secs(5);

    commit_publishing(&a, "c1", "from a: c1").await;
    assert_eq!(
        next_published(&mut on_b, within).await.as_deref(),
        Some(&b"from a: c1"[..])
    );
    // Events arrive in commit order: the first A hears is B's, so it never
    // heard its own; then B hears A's next one, so it heard neither its own
    // nor A's first twice.
    commit_publishing(&b, "c2", "from b: c2").await;
    assert_eq!(
        next_published(&mut on_a, within).await.as_deref(),
        Some(&b"from b: c2"[..])
    );
    commit_publishing(&a, "c3", "from a: c3").await;
    assert_eq!(
        next_published(&mut on_b, within).await.as_deref(),
        Some(&b"from a: c3"[..])
    );

    // A router started now hears only what comes after: no replay.
    let c = EtcdStore::connect(options(&etcd, "/t12/")).await.unwrap();
    let mut on_c = c.subscribe().unwrap();
    commit_publishing(&a, "c4", "from a: c4").await;
    assert_eq!(
        next_published(&mut on_c, within).await.as_deref(),
        Some(&b"from a: c4"[..])
    );

    // The events are short-lived keys on a shared lease of about `event_ttl`
    // (60 s, plus at most three buckets of 7 s), written with the handoff.
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    let stored = raw
        .get(
            "/t12/events/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(stored.kvs().len(), 4);
    for kv in stored.kvs() {
        let ttl = raw
            .lease_time_to_live(kv.lease(), None)
            .await
            .unwrap()
            .ttl();
        assert!((59..=81).contains(&ttl), "event lease ttl {ttl}");
    }
}

#[tokio::test]
async fn a_commit_without_its_lock_publishes_nothing() {
    let etcd = Etcd::single().await.unwrap();
    let a = EtcdStore::connect(options(&etcd, "/t13/")).await.unwrap();
    let b = EtcdStore::connect(options(&etcd, "/t13/")).await.unwrap();
    let mut on_b = b.subscribe().unwrap();
    let stale = a.lock("c1", Duration::from_millis(500)).await.unwrap();
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    raw.lease_revoke(a.session_lease()).await.unwrap();
    let mut refused = handed_over("c1", "h:c1");
    refused.published = Some(b"fenced".to_vec());
    let err = a.commit(stale, refused).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    let other = EtcdStore::connect(options(&etcd, "/t13/")).await.unwrap();
    commit_publishing(&other, "c2", "after").await;
    assert_eq!(
        next_published(&mut on_b, Duration::from_secs(5))
            .await
            .as_deref(),
        Some(&b"after"[..])
    );
}

#[tokio::test]
async fn lock_and_load_reads_with_the_acquire_and_keeps_the_fence() {
    let etcd = Etcd::single().await.unwrap();
    let store = std::sync::Arc::new(EtcdStore::connect(options(&etcd, "/t14/")).await.unwrap());
    let verdict = Verdict {
        decision: Decision::Approved,
        target: "seller".into(),
        confidence: 0.9,
        threshold: 0.7,
        pattern: "sell my house".into(),
        reason: "seller intent".into(),
        gates: Vec::new(),
        handoff_id: "h1:c1".into(),
        retry_after_ms: 0,
        pending_intents: Vec::new(),
        context: None,
    };
    let lock = store.lock("c1", Duration::from_millis(500)).await.unwrap();
    let mut first = handed_over("c1", "h1:c1");
    first.decision = Some((
        "lead\0r1".into(),
        StoredDecision {
            verdict: verdict.clone(),
            expires_at: now() + 3_600_000,
        },
    ));
    store.commit(lock, first).await.unwrap();

    // One request to etcd, one write: the lock, the contact and the decision.
    let (writes, proposals) = (store.writes(), etcd.proposals_committed(0).await.unwrap());
    let (lock, loaded) = store
        .lock_and_load("c1", "lead\0r1", Duration::from_millis(500), now())
        .await
        .unwrap();
    assert_eq!(store.writes() - writes, 1);
    assert_eq!(etcd.proposals_committed(0).await.unwrap() - proposals, 1);
    assert_eq!(loaded.prior, Some(verdict));
    let contact = loaded.contact.unwrap();
    assert_eq!(contact.owner, "seller");
    assert_eq!(contact.last_handoff_id, "h1:c1");
    assert_eq!(contact.context.timeline.as_deref(), Some("3 months"));

    // The load is fenced like a separate one: an acknowledgement written
    // meanwhile makes the commit built on the older state a conflict.
    store.acknowledge("h1:c1", "seller", 7).await.unwrap();
    let stale = Commit {
        contact_id: "c1".into(),
        contact: Some(contact),
        ..Default::default()
    };
    let err = store.commit(lock, stale).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");

    // A caller that had to wait reads what the holder committed.
    let held = store.lock("c2", Duration::from_millis(500)).await.unwrap();
    let tries = store.writes();
    let waiter = {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move {
            store
                .lock_and_load("c2", "", Duration::from_secs(5), now())
                .await
                .map(|(_, loaded)| loaded)
        })
    };
    eventually("the waiter's first try", Duration::from_secs(5), || {
        let tried = store.writes() > tries;
        async move { tried.then_some(()) }
    })
    .await;
    store
        .commit(held, handed_over("c2", "h2:c2"))
        .await
        .unwrap();
    let loaded = waiter.await.unwrap().unwrap();
    assert_eq!(loaded.contact.unwrap().last_handoff_id, "h2:c2");
    assert_eq!(loaded.prior, None);
}

/// A contact record lives under a lease of `retention`, renewed by every
/// write to it: an idle one is deleted by etcd itself, and an
/// acknowledgement keeps it a retention period longer.
#[tokio::test]
async fn an_idle_contact_expires_with_its_retention_lease() {
    let etcd = Etcd::single().await.unwrap();
    let store = EtcdStore::connect(EtcdOptions {
        retention: Duration::from_secs(3),
        ..options(&etcd, "/t-ret/")
    })
    .await
    .unwrap();
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    let lease_ttl = |raw: &mut etcd_client::Client, key: &'static str| {
        let mut raw = raw.clone();
        async move {
            let got = raw.get(key, None).await.unwrap();
            let kv = got.kvs().first().cloned().expect("the contact is stored");
            assert_ne!(kv.lease(), 0, "the contact has no lease");
            raw.lease_time_to_live(kv.lease(), None)
                .await
                .unwrap()
                .ttl()
        }
    };
    for contact in ["idle", "busy"] {
        let lock = store.lock(contact, Duration::from_secs(1)).await.unwrap();
        let handoff = format!("0190:{contact}");
        store
            .commit(lock, handed_over(contact, &handoff))
            .await
            .unwrap();
    }
    // 3 s, plus at most two one-second buckets.
    let ttl = lease_ttl(&mut raw, "/t-ret/contacts/idle").await;
    assert!((1..=5).contains(&ttl), "contact lease ttl {ttl}");

    let busy = async {
        // Keep "busy" active: acknowledge, then record an outcome, a
        // second or so apart.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        store
            .acknowledge("0190:busy", "seller", now())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        store
            .record_outcome("0190:busy", Outcome::Successful, &LearningConfig::default())
            .await
            .unwrap();
    };
    busy.await;
    eventually(
        "the idle contact to expire",
        Duration::from_secs(15),
        || {
            let store = &store;
            async move { store.contact("idle").await.unwrap().is_none().then_some(()) }
        },
    )
    .await;
    assert!(
        store.contact("busy").await.unwrap().is_some(),
        "the active contact expired with the idle one"
    );
}

/// Locks `n` contacts `g0`… concurrently, then commits them concurrently,
/// one batch on its way at a time: the acquires and the commits of
/// different contacts that wait together share etcd transactions.
#[tokio::test]
async fn concurrent_approvals_of_different_contacts_share_etcd_transactions() {
    let etcd = Etcd::single().await.unwrap();
    let store = EtcdStore::connect(EtcdOptions {
        event_ttl: Duration::from_secs(3600),
        batch: EtcdBatching {
            inflight: 1,
            ..EtcdBatching::default()
        },
        ..options(&etcd, "/t-batch/")
    })
    .await
    .unwrap();
    let n = 32;
    let contacts: Vec<String> = (0..n).map(|i| format!("g{i}")).collect();
    let (writes, proposals) = (store.writes(), etcd.proposals_committed(0).await.unwrap());
    let acquires = contacts
        .iter()
        .map(|c| store.lock_and_load(c, "lead\0r", Duration::from_secs(2), now()));
    let locked = futures_join(acquires).await;
    let commits = locked.into_iter().zip(&contacts).map(|(locked, c)| {
        let (lock, loaded) = locked.unwrap();
        assert!(loaded.contact.is_none());
        let mut commit = handed_over(c, &format!("h:{c}"));
        commit.published = Some(b"approved".to_vec());
        store.commit(lock, commit)
    });
    for committed in futures_join(commits).await {
        committed.unwrap();
    }
    // Every approval still counts its two writes; etcd saw far fewer.
    assert_eq!(store.writes() - writes, 2 * n as u64);
    let proposed = etcd.proposals_committed(0).await.unwrap() - proposals;
    assert!(
        proposed < n as u64,
        "{proposed} raft proposals for {n} approvals: not grouped"
    );
    for c in &contacts {
        let stored = store.contact(c).await.unwrap().unwrap();
        assert_eq!(stored.last_handoff_id, format!("h:{c}"));
        // Each lock was released by its commit.
        drop(store.lock(c, Duration::from_millis(500)).await.unwrap());
    }
}

/// A batch whose parts fail differently: one commit built on a contact
/// changed meanwhile is refused, one under a lost lock is fenced, and the
/// others in the same etcd transaction all land.
#[tokio::test]
async fn a_refused_commit_in_a_batch_refuses_only_its_own_contact() {
    let etcd = Etcd::single().await.unwrap();
    let options = EtcdOptions {
        batch: EtcdBatching {
            inflight: 1,
            ..EtcdBatching::default()
        },
        ..options(&etcd, "/t-batch-refused/")
    };
    let store = EtcdStore::connect(options.clone()).await.unwrap();
    let other = EtcdStore::connect(options).await.unwrap();
    let lock = store.lock("changed", Duration::from_secs(2)).await.unwrap();
    store
        .commit(lock, handed_over("changed", "h1:changed"))
        .await
        .unwrap();
    let mut held = Vec::new();
    for i in 0..16 {
        let c = format!("b{i}");
        let lock = store.lock(&c, Duration::from_secs(2)).await.unwrap();
        held.push((c, lock, None));
    }
    let lock = store.lock("changed", Duration::from_secs(2)).await.unwrap();
    let loaded = store.load(&lock, "", now()).await.unwrap().contact.unwrap();
    store.acknowledge("h1:changed", "seller", 7).await.unwrap();
    held.push(("changed".into(), lock, Some(loaded)));
    // `lost`'s lock key is deleted behind its back and taken by another router.
    let lock = store.lock("lost", Duration::from_secs(2)).await.unwrap();
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    raw.delete("/t-batch-refused/locks/lost", None)
        .await
        .unwrap();
    let thief = other.lock("lost", Duration::from_secs(2)).await.unwrap();
    held.push(("lost".into(), lock, None));

    let proposals = etcd.proposals_committed(0).await.unwrap();
    let commits = held.into_iter().map(|(c, lock, loaded)| {
        let commit = match loaded {
            Some(stale) => Commit {
                contact_id: c.clone(),
                contact: Some(stale),
                ..Default::default()
            },
            None => handed_over(&c, &format!("h2:{c}")),
        };
        let store = &store;
        async move { (c, store.commit(lock, commit).await) }
    });
    let results = futures_join(commits).await;
    let proposed = etcd.proposals_committed(0).await.unwrap() - proposals;
    assert!(proposed < 18, "{proposed} raft proposals for 18 commits");
    for (c, result) in results {
        match c.as_str() {
            "changed" => assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}"),
            "lost" => assert!(matches!(result, Err(StoreError::Fenced(_))), "{result:?}"),
            _ => {
                result.unwrap();
                let stored = store.contact(&c).await.unwrap().unwrap();
                assert_eq!(stored.last_handoff_id, format!("h2:{c}"));
            }
        }
    }
    let changed = store.contact("changed").await.unwrap().unwrap();
    assert_eq!(changed.history[0].acknowledged_at, Some(7));
    assert!(store.contact("lost").await.unwrap().is_none());
    drop(thief);
}

/// Polls every future in one task, so they all wait together.
async fn futures_join<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (future, out) in pending.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}
