use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use async_trait::async_trait;
use baton_policy::{Config, DeferralStatus, HealthReport, LearningConfig, Outcome};
use baton_store::{Acknowledged, ContactLock, EmbeddedStore, Loaded, OutcomeRecorded};

use super::queries::{NOT_YOUR_CONTACT, NOT_YOUR_HANDOFF, NOT_YOUR_OUTCOME};
use super::*;

/// Counts every call that reaches the store; with `slow_commit` on, a
/// commit behaves as a slow durable write does: the write runs on in a
/// task of its own whoever waits for it, and lands after a delay.
struct Counting {
    inner: Arc<EmbeddedStore>,
    calls: AtomicUsize,
    slow_commit: AtomicBool,
    commit_started: tokio::sync::Notify,
}

const SLOW_COMMIT: Duration = Duration::from_millis(100);

impl Counting {
    fn hit(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for Counting {
    async fn lock(&self, c: &str, wait: Duration) -> Result<ContactLock, StoreError> {
        self.hit();
        self.inner.lock(c, wait).await
    }
    async fn load(&self, l: &ContactLock, r: &str, now: UnixMs) -> Result<Loaded, StoreError> {
        self.hit();
        self.inner.load(l, r, now).await
    }
    async fn commit(&self, l: ContactLock, c: Commit) -> Result<(), StoreError> {
        self.hit();
        if !self.slow_commit.load(Ordering::SeqCst) {
            return self.inner.commit(l, c).await;
        }
        self.commit_started.notify_one();
        let inner = Arc::clone(&self.inner);
        let write = async move {
            tokio::time::sleep(SLOW_COMMIT).await;
            // The held lock stays with the caller, as with a write on a blocking thread.
            let unfenced = ContactLock::new(c.contact_id.clone(), 0, Box::new(()));
            inner.commit(unfenced, c).await
        };
        let landed = tokio::spawn(write).await.unwrap();
        drop(l);
        landed
    }
    async fn contact(&self, c: &str) -> Result<Option<ContactState>, StoreError> {
        self.hit();
        self.inner.contact(c).await
    }
    async fn acknowledge(&self, h: &str, b: &str, now: UnixMs) -> Result<Acknowledged, StoreError> {
        self.hit();
        self.inner.acknowledge(h, b, now).await
    }
    async fn record_outcome(
        &self,
        h: &str,
        o: Outcome,
        c: &LearningConfig,
    ) -> Result<OutcomeRecorded, StoreError> {
        self.hit();
        self.inner.record_outcome(h, o, c).await
    }
    async fn outcome_windows(&self) -> Result<Vec<(RouteKey, OutcomeWindow)>, StoreError> {
        self.hit();
        self.inner.outcome_windows().await
    }
    async fn put_health(&self, r: &HealthReport) -> Result<(), StoreError> {
        self.hit();
        self.inner.put_health(r).await
    }
    async fn health_reports(&self) -> Result<Vec<HealthReport>, StoreError> {
        self.hit();
        self.inner.health_reports().await
    }
    async fn deferred(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.hit();
        self.inner.deferred().await
    }
    async fn purge_expired(&self, now: UnixMs) -> Result<usize, StoreError> {
        self.hit();
        self.inner.purge_expired(now).await
    }
}

async fn engine() -> (Arc<Engine>, Arc<Counting>) {
    let store = Arc::new(Counting {
        inner: Arc::new(EmbeddedStore::in_memory()),
        calls: AtomicUsize::new(0),
        slow_commit: AtomicBool::new(false),
        commit_started: tokio::sync::Notify::new(),
    });
    let policy = Policy::new(Config::default()).unwrap();
    let engine = Arc::new(Engine::new(policy, store.clone(), 16).await.unwrap());
    store.calls.store(0, Ordering::SeqCst);
    (engine, store)
}

fn request(engine: &Engine, contact: &str, source: &str, message: &str) -> HandoffRequest {
    HandoffRequest {
        contact_id: contact.into(),
        source: engine.policy().bot_ix(source).unwrap(),
        message: message.into(),
        signals: vec![],
        context: ContextPacket::default(),
        request_id: String::new(),
    }
}

fn with_signal(
    mut req: HandoffRequest,
    engine: &Engine,
    target: &str,
    confidence: f64,
) -> HandoffRequest {
    req.signals.push(Signal {
        target: engine.policy().bot_ix(target).unwrap(),
        confidence,
        pattern: "model".into(),
    });
    req
}

#[tokio::test]
async fn the_stay_path_never_touches_storage() {
    let (engine, store) = engine().await;
    for message in [
        "hi there",
        "what's the weather",
        "I'm not looking to buy, just curious about FHA",
    ] {
        let d = engine
            .decide(request(&engine, "c1", "lead", message))
            .await
            .unwrap();
        assert_eq!(d.verdict.decision, Decision::Stay, "{message}");
    }
    let below = with_signal(
        request(&engine, "c1", "lead", "hmm"),
        &engine,
        "buyer",
        0.69,
    );
    assert_eq!(
        engine.decide(below).await.unwrap().verdict.decision,
        Decision::Stay
    );
    assert_eq!(store.calls.load(Ordering::SeqCst), 0);
    // The approve path does use the store: the counter counts.
    let sell = request(&engine, "c1", "lead", "I want to sell my house");
    assert_eq!(
        engine.decide(sell).await.unwrap().verdict.decision,
        Decision::Approved
    );
    assert_eq!(store.calls.load(Ordering::SeqCst), 3); // lock, load, commit
}

#[tokio::test]
async fn a_repeated_request_id_replays_the_decision_and_executes_once() {
    let (engine, _) = engine().await;
    let mut req = request(&engine, "c1", "lead", "I want to sell my house");
    req.request_id = "r-1".into();
    let first = engine.decide(req.clone()).await.unwrap();
    let again = engine.decide(req).await.unwrap();
    assert_eq!(first.verdict.decision, Decision::Approved);
    assert!(!first.replayed && again.replayed);
    assert_eq!(again.verdict, first.verdict);
    let contact = engine.contact("c1").await.unwrap();
    assert_eq!(contact.history.len(), 1);
    assert_eq!(contact.owner, "seller");
}

#[tokio::test]
async fn a_human_trigger_escalates_and_bots_then_find_the_contact_with_a_human() {
    let (engine, _) = engine().await;
    let d = engine
        .decide(request(
            &engine,
            "c1",
            "lead",
            "can I talk to a real person",
        ))
        .await
        .unwrap();
    assert_eq!(
        (d.verdict.decision, d.verdict.target.as_str()),
        (Decision::EscalatedHuman, HUMAN)
    );
    let d = engine
        .decide(request(&engine, "c1", "lead", "I want to sell my house"))
        .await
        .unwrap();
    assert_eq!(
        (d.verdict.decision, d.verdict.reason.as_str()),
        (Decision::NotOwner, "with human")
    );
    // An operator hands it back and the chain starts over.
    assert_eq!(
        engine.release("c1", "lead", "called back").await.unwrap(),
        HUMAN
    );
    let d = engine
        .decide(request(&engine, "c1", "lead", "I want to sell my house"))
        .await
        .unwrap();
    assert_eq!(d.verdict.decision, Decision::Approved);
}

#[tokio::test]
async fn a_held_lock_makes_the_request_contact_busy() {
    let (engine, store) = engine().await;
    let held = store
        .inner
        .lock("c1", Duration::from_millis(10))
        .await
        .unwrap();
    let d = engine
        .decide(request(&engine, "c1", "lead", "I want to sell my house"))
        .await
        .unwrap();
    assert_eq!(d.verdict.decision, Decision::ContactBusy);
    assert_eq!(d.verdict.retry_after_ms, 250);
    drop(held);
    assert!(engine.contact("c1").await.is_err());
}

#[tokio::test]
async fn nine_of_ten_successful_outcomes_let_a_0_66_signal_through() {
    let (engine, _) = engine().await;
    let mut handoffs = Vec::new();
    for i in 0..10 {
        let req = with_signal(
            request(&engine, &format!("c{i}"), "lead", "x"),
            &engine,
            "seller",
            0.9,
        );
        let d = engine.decide(req).await.unwrap();
        assert_eq!(d.verdict.decision, Decision::Approved);
        handoffs.push(d.verdict.handoff_id);
    }
    let weak = || {
        with_signal(
            request(&engine, "weak", "lead", "x"),
            &engine,
            "seller",
            0.66,
        )
    };
    for (i, id) in handoffs.iter().enumerate() {
        // Before the tenth outcome, nothing changes.
        assert_eq!(
            engine.decide(weak()).await.unwrap().verdict.decision,
            Decision::Stay
        );
        let outcome = if i == 0 {
            Outcome::Failed
        } else {
            Outcome::Successful
        };
        let (key, threshold, recorded) = engine
            .record_outcome(id, outcome, Viewer::Bot("seller"))
            .await
            .unwrap();
        assert!(recorded);
        assert_eq!(key.route(), "lead>seller");
        assert_eq!(threshold, if i == 9 { 0.65 } else { 0.7 });
    }
    let d = engine.decide(weak()).await.unwrap();
    assert_eq!(
        (d.verdict.decision, d.verdict.threshold),
        (Decision::Approved, 0.65)
    );
    let learned = engine.learned_thresholds();
    assert_eq!(learned.len(), 1);
    assert_eq!(
        (
            learned[0].outcomes,
            learned[0].successes,
            learned[0].threshold
        ),
        (10, 9, 0.65)
    );
}

#[tokio::test]
async fn an_unhealthy_report_defers_and_a_healthy_one_lets_through() {
    let (engine, _) = engine().await;
    let report = |p95| HealthReport {
        bot: "buyer".into(),
        sample_count: 100,
        p95_ms: p95,
        ..Default::default()
    };
    engine.report_health(report(2500.0)).await.unwrap();
    let buy = || request(&engine, "c1", "lead", "I want to buy a house");
    let d = engine.decide(buy()).await.unwrap();
    assert_eq!(d.verdict.decision, Decision::DeferredUnhealthy);
    assert_eq!(d.verdict.retry_after_ms, 30_000);
    engine.report_health(report(900.0)).await.unwrap();
    assert_eq!(
        engine.decide(buy()).await.unwrap().verdict.decision,
        Decision::Approved
    );
}

fn buyer_report(p95: f64) -> HealthReport {
    HealthReport {
        bot: "buyer".into(),
        sample_count: 100,
        p95_ms: p95,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_deferred_handoff_completes_when_the_target_recovers() {
    let (engine, _) = engine().await;
    let mut events = engine.subscribe();
    engine.report_health(buyer_report(2500.0)).await.unwrap();
    let mut req = request(&engine, "c1", "lead", "I want to buy a house");
    req.context.timeline = Some("6 months".into());
    let d = engine.decide(req).await.unwrap();
    assert_eq!(d.verdict.decision, Decision::DeferredUnhealthy);
    let deferral = engine.contact("c1").await.unwrap().deferral.unwrap();
    assert_eq!(
        (deferral.status, deferral.tries),
        (DeferralStatus::Pending, 0)
    );
    assert_eq!(
        engine.store.deferred().await.unwrap(),
        vec![("c1".into(), "buyer".into())]
    );

    engine.report_health(buyer_report(900.0)).await.unwrap();
    // The decision event the router publishes for the completed handoff.
    let event = loop {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        if e.verdict.decision == Decision::Approved {
            break e;
        }
    };
    assert_eq!(
        (event.contact_id.as_str(), event.verdict.target.as_str()),
        ("c1", "buyer")
    );
    assert_eq!(
        event.verdict.context.as_ref().unwrap().timeline.as_deref(),
        Some("6 months")
    );
    let contact = engine.contact("c1").await.unwrap();
    assert_eq!(contact.owner, "buyer");
    let deferral = contact.deferral.unwrap();
    assert_eq!(
        (deferral.status, deferral.tries),
        (DeferralStatus::Completed, 1)
    );
    assert_eq!(deferral.handoff_id, contact.last_handoff_id);
    assert!(engine.store.deferred().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_deferred_for_a_stale_target_completes_when_reports_resume() {
    let mut config = Config::default();
    config.health.stale_after = Duration::from_millis(300);
    let policy = Policy::new(config).unwrap();
    let engine = Arc::new(
        Engine::new(policy, Arc::new(EmbeddedStore::in_memory()), 16)
            .await
            .unwrap(),
    );
    let mut events = engine.subscribe();
    engine.report_health(buyer_report(900.0)).await.unwrap();
    // The buyer goes silent: no unhealthy report, only staleness.
    let buyer_status = |engine: &Engine| {
        engine
            .bots()
            .into_iter()
            .find(|b| b.id == "buyer")
            .map(|b| b.status)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !matches!(buyer_status(&engine), Some(HealthStatus::Stale(_))) {
        assert!(
            std::time::Instant::now() < deadline,
            "buyer never went stale"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = engine
        .decide(request(&engine, "c1", "lead", "I want to buy a house"))
        .await
        .unwrap();
    assert_eq!(d.verdict.decision, Decision::DeferredUnhealthy);

    // Reports resume, healthy: the deferred handoff is retried and completes.
    engine.report_health(buyer_report(900.0)).await.unwrap();
    let event = loop {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("the deferred handoff to be retried")
            .unwrap();
        if e.verdict.decision == Decision::Approved {
            break e;
        }
    };
    assert_eq!(
        (event.contact_id.as_str(), event.verdict.target.as_str()),
        ("c1", "buyer")
    );
    let contact = engine.contact("c1").await.unwrap();
    assert_eq!(contact.owner, "buyer");
    let deferral = contact.deferral.unwrap();
    assert_eq!(
        (deferral.status, deferral.tries),
        (DeferralStatus::Completed, 1)
    );
}

#[tokio::test]
async fn a_deferred_handoff_is_tried_at_most_three_times() {
    let (engine, _) = engine().await;
    engine.report_health(buyer_report(2500.0)).await.unwrap();
    let d = engine
        .decide(request(&engine, "c1", "lead", "I want to buy a house"))
        .await
        .unwrap();
    assert_eq!(d.verdict.decision, Decision::DeferredUnhealthy);
    let expected = [
        (1, DeferralStatus::Pending),
        (2, DeferralStatus::Pending),
        (3, DeferralStatus::Abandoned),
    ];
    for (tries, status) in expected {
        engine.retry_one("c1").await.unwrap();
        let deferral = engine.contact("c1").await.unwrap().deferral.unwrap();
        assert_eq!((deferral.tries, deferral.status), (tries, status));
    }
    assert!(engine.store.deferred().await.unwrap().is_empty());
    assert_eq!(engine.contact("c1").await.unwrap().owner, "lead");
}

/// Approves a lead → seller handoff of `contact`; its handoff id.
async fn lead_to_seller(engine: &Engine, contact: &str) -> String {
    let d = engine
        .decide(request(engine, contact, "lead", "I want to sell my house"))
        .await
        .unwrap();
    assert_eq!(d.verdict.decision, Decision::Approved);
    d.verdict.handoff_id
}

/// The status a caller sees: code and message.
fn answer<T: std::fmt::Debug>(result: Result<T, EngineError>) -> (tonic::Code, String) {
    let status = tonic::Status::from(result.unwrap_err());
    (status.code(), status.message().to_owned())
}

#[tokio::test]
async fn only_the_handoffs_bots_or_an_operator_record_its_outcome() {
    let (engine, _) = engine().await;
    let [h1, h2, h3] = [
        lead_to_seller(&engine, "c1").await,
        lead_to_seller(&engine, "c2").await,
        lead_to_seller(&engine, "c3").await,
    ];
    // A bot outside the route cannot record, and nothing is learned.
    for h in [&h1, &h2, &h3] {
        let refused = engine
            .record_outcome(h, Outcome::Failed, Viewer::Bot("buyer"))
            .await;
        assert_eq!(
            answer(refused),
            (tonic::Code::PermissionDenied, NOT_YOUR_OUTCOME.to_owned())
        );
    }
    assert_eq!(engine.learned_thresholds(), vec![]);
    for contact in ["c1", "c2", "c3"] {
        let history = engine.contact(contact).await.unwrap().history;
        assert_eq!(history[0].outcome, None, "{contact}");
    }
    // The source, the target and an operator can, once per handoff.
    let recorders = [
        (&h1, Viewer::Bot("lead")),
        (&h2, Viewer::Bot("seller")),
        (&h3, Viewer::Operator),
    ];
    for (h, viewer) in recorders {
        let (key, threshold, recorded) = engine
            .record_outcome(h, Outcome::Successful, viewer)
            .await
            .unwrap();
        assert_eq!(
            (key.route().as_str(), threshold, recorded),
            ("lead>seller", 0.7, true),
            "{viewer:?}"
        );
    }
    let again = engine
        .record_outcome(&h1, Outcome::Failed, Viewer::Bot("seller"))
        .await
        .unwrap();
    assert!(!again.2);
    let refused = engine
        .record_outcome(&h1, Outcome::Failed, Viewer::Bot("buyer"))
        .await;
    assert_eq!(answer(refused).0, tonic::Code::PermissionDenied);
    let learned = engine.learned_thresholds();
    assert_eq!(
        learned
            .iter()
            .map(|t| (t.key.route(), t.outcomes, t.successes))
            .collect::<Vec<_>>(),
        vec![("lead>seller".to_owned(), 3, 3)]
    );
    let outcome = engine.contact("c1").await.unwrap().history[0].outcome;
    assert_eq!(outcome, Some(Outcome::Successful));
}

#[tokio::test]
async fn a_bot_is_told_the_same_of_others_contacts_as_of_contacts_that_do_not_exist() {
    let (engine, _) = engine().await;
    // Asked before the contact exists, and after it went to the seller.
    let before = answer(engine.context("c1", Viewer::Bot("buyer")).await);
    let h = lead_to_seller(&engine, "c1").await;
    let (uuid, _) = h.split_once(':').unwrap();
    let other_uuid = uuid::Uuid::now_v7();
    assert_ne!(other_uuid.to_string(), uuid);
    let unknown_handoffs = [
        format!("{other_uuid}:c1"), // the contact exists, the handoff does not
        h.replace(":c1", ":c2"),    // no such contact
        "not-a-handoff-id".to_owned(),
    ];

    assert_eq!(
        before,
        (tonic::Code::PermissionDenied, NOT_YOUR_CONTACT.to_owned())
    );
    for bot in ["buyer", "lead"] {
        let after = answer(engine.context("c1", Viewer::Bot(bot)).await);
        assert_eq!(after, before, "{bot}");
    }
    assert!(!before.1.contains("seller"), "{}", before.1);
    let owner = engine.context("c1", Viewer::Bot("seller")).await.unwrap();
    assert_eq!(owner.owner, "seller");
    // Operators see everything, and are told what does not exist.
    assert_eq!(
        engine.context("c1", Viewer::Operator).await.unwrap().owner,
        "seller"
    );
    assert_eq!(
        answer(engine.context("c2", Viewer::Operator).await),
        (tonic::Code::NotFound, "contact 'c2' not found".to_owned())
    );

    // Acknowledging: only the target, and the real target goes unnamed.
    let expected = (tonic::Code::PermissionDenied, NOT_YOUR_HANDOFF.to_owned());
    assert_eq!(answer(engine.acknowledge(&h, "lead").await), expected);
    for id in &unknown_handoffs {
        assert_eq!(
            answer(engine.acknowledge(id, "lead").await),
            expected,
            "{id}"
        );
        assert_eq!(
            answer(engine.acknowledge(id, "seller").await),
            expected,
            "{id}"
        );
    }
    assert!(engine.acknowledge(&h, "seller").await.unwrap().first);

    // Recording an outcome: a third bot learns nothing either.
    let expected = (tonic::Code::PermissionDenied, NOT_YOUR_OUTCOME.to_owned());
    let third = engine
        .record_outcome(&h, Outcome::Failed, Viewer::Bot("buyer"))
        .await;
    assert_eq!(answer(third), expected);
    for id in &unknown_handoffs {
        for bot in ["buyer", "seller"] {
            let refused = engine
                .record_outcome(id, Outcome::Failed, Viewer::Bot(bot))
                .await;
            assert_eq!(answer(refused), expected, "{id} {bot}");
        }
        let operator = engine
            .record_outcome(id, Outcome::Failed, Viewer::Operator)
            .await;
        assert_eq!(answer(operator).0, tonic::Code::NotFound, "{id}");
    }
}

// Item 7: replays.

/// Raises the learned threshold of `lead>seller` for pattern `model` to
/// 0.8, as ten failed outcomes would.
fn raise_lead_to_seller_threshold(engine: &Engine) {
    let mut window = OutcomeWindow::default();
    for _ in 0..10 {
        window.record(Outcome::Failed, &LearningConfig::default());
    }
    let key = RouteKey {
        source: "lead".into(),
        target: "seller".into(),
        pattern: "model".into(),
    };
    assert_eq!(engine.learn(&key, window), 0.8);
}

#[tokio::test]
async fn a_retry_replays_its_approval_after_learning_raised_the_threshold() {
    let (engine, _) = engine().await;
    let mut req = with_signal(request(&engine, "c1", "lead", "x"), &engine, "seller", 0.75);
    req.request_id = "r-1".into();
    let first = engine.decide(req.clone()).await.unwrap();
    assert_eq!(first.verdict.decision, Decision::Approved);
    raise_lead_to_seller_threshold(&engine);
    let again = engine.decide(req).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.verdict, first.verdict);
}

#[tokio::test]
async fn a_request_id_never_stored_costs_no_storage_on_the_stay_path() {
    let (engine, store) = engine().await;
    let mut req = request(&engine, "c1", "lead", "hi there");
    req.request_id = "r-new".into();
    let d = engine.decide(req).await.unwrap();
    assert_eq!((d.verdict.decision, d.replayed), (Decision::Stay, false));
    assert_eq!(store.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_replay_is_neither_pushed_nor_counted_again() {
    let (engine, _) = engine().await;
    let mut events = engine.subscribe();
    let mut req = request(&engine, "c1", "lead", "I want to sell my house");
    req.request_id = "r-1".into();
    engine.decide(req.clone()).await.unwrap();
    assert!(engine.decide(req).await.unwrap().replayed);
    let event = events.try_recv().unwrap();
    assert_eq!(event.verdict.decision, Decision::Approved);
    assert!(events.try_recv().is_err(), "the replay was pushed again");
    let approved = engine
        .counts()
        .into_iter()
        .find(|(d, _)| *d == Decision::Approved);
    assert_eq!(approved, Some((Decision::Approved, 1)));
}

#[tokio::test]
async fn a_completed_deferral_replays_as_its_completion() {
    let (engine, _) = engine().await;
    engine.report_health(buyer_report(2500.0)).await.unwrap();
    let mut req = request(&engine, "c1", "lead", "I want to buy a house");
    req.request_id = "r-1".into();
    let d = engine.decide(req.clone()).await.unwrap();
    assert_eq!(d.verdict.decision, Decision::DeferredUnhealthy);
    engine.report_health(buyer_report(900.0)).await.unwrap();
    engine.retry_one("c1").await.unwrap();
    let contact = engine.contact("c1").await.unwrap();
    assert_eq!(contact.owner, "buyer");
    let again = engine.decide(req).await.unwrap();
    assert!(again.replayed);
    assert_eq!(
        (again.verdict.decision, again.verdict.target.as_str()),
        (Decision::Approved, "buyer")
    );
    assert_eq!(again.verdict.handoff_id, contact.last_handoff_id);
}

#[tokio::test]
async fn request_ids_are_scoped_to_contact_and_source_bot() {
    let (engine, _) = engine().await;
    let mut sell = request(&engine, "c1", "lead", "I want to sell my house");
    sell.request_id = "r-1".into();
    assert_eq!(
        engine.decide(sell).await.unwrap().verdict.decision,
        Decision::Approved
    );
    // The new owner happens to send the same id: its own request, decided afresh.
    let mut buy = request(&engine, "c1", "seller", "I want to buy a house");
    buy.request_id = "r-1".into();
    let d = engine.decide(buy).await.unwrap();
    assert!(!d.replayed);
    assert_eq!(
        (d.verdict.decision, d.verdict.target.as_str()),
        (Decision::Approved, "buyer")
    );
}

#[tokio::test]
async fn refusals_are_not_stored_under_their_request_id() {
    let (engine, _) = engine().await;
    lead_to_seller(&engine, "c1").await;
    let mut again = request(&engine, "c1", "lead", "I want to sell my house");
    again.request_id = "r-2".into();
    let d = engine.decide(again).await.unwrap();
    assert_eq!(d.verdict.decision, Decision::NotOwner);
    // Every stored decision, expired or not, is purged at the end of time: none.
    assert_eq!(engine.store.purge_expired(UnixMs::MAX).await.unwrap(), 0);
}

// Item 5: acknowledgements and outcomes against a concurrent decision.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acks_and_outcomes_survive_a_decision_committing_at_the_same_time() {
    let (engine, store) = engine().await;
    let handoff = lead_to_seller(&engine, "c1").await;
    store.slow_commit.store(true, Ordering::SeqCst);
    // The seller hands the contact on; its commit rewrites the whole contact.
    let deciding = {
        let engine = Arc::clone(&engine);
        let req = request(&engine, "c1", "seller", "I want to buy a house");
        tokio::spawn(async move { engine.decide(req).await })
    };
    store.commit_started.notified().await;
    let (ack, outcome) = tokio::join!(
        engine.acknowledge(&handoff, "seller"),
        engine.record_outcome(&handoff, Outcome::Successful, Viewer::Bot("seller")),
    );
    assert!(ack.unwrap().first);
    assert!(outcome.unwrap().2);
    let decided = deciding.await.unwrap().unwrap();
    assert_eq!(decided.verdict.decision, Decision::Approved);

    let contact = engine.contact("c1").await.unwrap();
    assert_eq!(contact.owner, "buyer");
    let entry = contact
        .history
        .iter()
        .find(|e| e.handoff_id == handoff)
        .unwrap();
    assert!(entry.acknowledged_at.is_some(), "the ack was lost");
    assert_eq!(entry.outcome, Some(Outcome::Successful));
    // Sent again, the outcome is not counted again.
    let (_, _, recorded) = engine
        .record_outcome(&handoff, Outcome::Successful, Viewer::Bot("seller"))
        .await
        .unwrap();
    assert!(!recorded);
    let learned = engine.learned_thresholds();
    assert_eq!((learned.len(), learned[0].outcomes), (1, 1));
}

// Item 6: a call cancelled mid-commit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_mid_commit_is_replayed_not_executed_again() {
    let (engine, store) = engine().await;
    store.slow_commit.store(true, Ordering::SeqCst);
    let mut req = request(&engine, "c1", "lead", "I want to sell my house");
    req.request_id = "r-1".into();
    // The client's deadline passes while the commit is being written.
    tokio::select! {
        _ = engine.decide(req.clone()) => panic!("the commit should still be running"),
        _ = store.commit_started.notified() => {}
    }
    store.slow_commit.store(false, Ordering::SeqCst);
    let retry = engine.decide(req).await.unwrap();
    assert!(retry.replayed, "the retry approved a second time");
    assert_eq!(retry.verdict.decision, Decision::Approved);
    let contact = engine.contact("c1").await.unwrap();
    assert_eq!(contact.history.len(), 1);
    assert_eq!(contact.last_handoff_id, retry.verdict.handoff_id);
}
