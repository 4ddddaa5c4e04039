use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use baton_policy::{
    Config, ContactState, DeferralStatus, HUMAN, HealthReport, LearningConfig, Outcome,
};
use baton_store::{
    Acknowledged, Commit, ContactLock, EmbeddedStore, Loaded, OutcomeRecorded, StoreError,
};

use super::queries::{NOT_YOUR_CONTACT, NOT_YOUR_HANDOFF, NOT_YOUR_OUTCOME};
use super::*;

/// Logs every call that reaches the store (`lock c1`, `load c1 lead/r-1`,
/// `commit c1: contact, decision lead/r-1`, …). With `slow_commit`
/// on, a commit is a slow write: it holds the contact lock and writes only
/// when the test lets it (`release_commit`), so a test can act while a
/// commit is in flight.
struct Counting {
    inner: Arc<EmbeddedStore>,
    calls: std::sync::Mutex<Vec<String>>,
    slow_commit: AtomicBool,
    /// Notified when a slow commit has begun (its lock held, nothing written).
    commit_started: tokio::sync::Notify,
    /// A slow commit writes once this is notified.
    release_commit: tokio::sync::Notify,
    /// Notified when a slow commit has written and released its lock.
    commit_landed: tokio::sync::Notify,
}

impl Counting {
    fn hit(&self, call: String) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
    }

    /// The calls logged since the last take.
    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn describe(c: &Commit) -> String {
        let parts = [
            c.contact.as_ref().map(|_| "contact".to_owned()),
            c.decision
                .as_ref()
                .map(|(key, _)| format!("decision {}", key.replace('\0', "/"))),
            c.deferred.as_ref().map(|d| format!("deferred {d:?}")),
        ];
        let parts: Vec<String> = parts.into_iter().flatten().collect();
        format!("commit {}: {}", c.contact_id, parts.join(", "))
    }
}

#[async_trait]
impl Store for Counting {
    async fn lock(&self, c: &str, wait: Duration) -> Result<ContactLock, StoreError> {
        self.hit(format!("lock {c}"));
        self.inner.lock(c, wait).await
    }
    async fn load(&self, l: &ContactLock, r: &str, now: UnixMs) -> Result<Loaded, StoreError> {
        self.hit(format!("load {} {}", l.contact_id, r.replace('\0', "/")));
        self.inner.load(l, r, now).await
    }
    async fn commit(&self, l: ContactLock, c: Commit) -> Result<(), StoreError> {
        self.hit(Self::describe(&c));
        if !self.slow_commit.load(Ordering::SeqCst) {
            return self.inner.commit(l, c).await;
        }
        self.commit_started.notify_one();
        self.release_commit.notified().await;
        // The lock goes with the write, released once it has landed.
        let landed = self.inner.commit(l, c).await;
        self.commit_landed.notify_one();
        landed
    }
    async fn contact(&self, c: &str) -> Result<Option<ContactState>, StoreError> {
        self.hit(format!("contact {c}"));
        self.inner.contact(c).await
    }
    async fn acknowledge(&self, h: &str, b: &str, now: UnixMs) -> Result<Acknowledged, StoreError> {
        self.hit(format!("acknowledge {b}"));
        self.inner.acknowledge(h, b, now).await
    }
    async fn record_outcome(
        &self,
        h: &str,
        o: Outcome,
        c: &LearningConfig,
    ) -> Result<OutcomeRecorded, StoreError> {
        self.hit(format!("record_outcome {o:?}"));
        self.inner.record_outcome(h, o, c).await
    }
    async fn outcome_windows(&self) -> Result<Vec<(RouteKey, OutcomeWindow)>, StoreError> {
        self.hit("outcome_windows".to_owned());
        self.inner.outcome_windows().await
    }
    async fn put_health(&self, r: &HealthReport) -> Result<(), StoreError> {
        self.hit("put_health".to_owned());
        self.inner.put_health(r).await
    }
    async fn health_reports(&self) -> Result<Vec<HealthReport>, StoreError> {
        self.hit("health_reports".to_owned());
        self.inner.health_reports().await
    }
    async fn deferred(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.hit("deferred".to_owned());
        self.inner.deferred().await
    }
    async fn purge_expired(&self, now: UnixMs) -> Result<usize, StoreError> {
        self.hit("purge_expired".to_owned());
        self.inner.purge_expired(now).await
    }
}

async fn engine() -> (Arc<Engine>, Arc<Counting>) {
    let store = Arc::new(Counting {
        inner: Arc::new(EmbeddedStore::in_memory()),
        calls: std::sync::Mutex::default(),
        slow_commit: AtomicBool::new(false),
        commit_started: tokio::sync::Notify::new(),
        release_commit: tokio::sync::Notify::new(),
        commit_landed: tokio::sync::Notify::new(),
    });
    let policy = Policy::new(Config::default()).unwrap();
    let engine = Arc::new(Engine::new(policy, store.clone(), 16).await.unwrap());
    store.take_calls();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stay_path_never_touches_storage_and_an_approval_locks_loads_and_commits_once() {
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
    assert_eq!(store.take_calls(), Vec::<String>::new());

    // An approval: the lock, one load, and one commit carrying the new
    // contact and its handoff; nothing else.
    let sell = request(&engine, "c1", "lead", "I want to sell my house");
    assert_eq!(
        engine.decide(sell).await.unwrap().verdict.decision,
        Decision::Approved
    );
    assert_eq!(
        store.take_calls(),
        ["lock c1", "load c1 ", "commit c1: contact"]
    );
    // With a request id, the decision rides in the same commit: still one write.
    let mut sell = request(&engine, "c2", "lead", "I want to sell my house");
    sell.request_id = "r-1".into();
    let first = engine.decide(sell.clone()).await.unwrap();
    assert_eq!(first.verdict.decision, Decision::Approved);
    assert_eq!(
        store.take_calls(),
        [
            "lock c2",
            "load c2 lead/r-1",
            "commit c2: contact, decision lead/r-1"
        ]
    );
    // Its retry reads the stored decision under the lock and writes nothing.
    assert!(engine.decide(sell).await.unwrap().replayed);
    assert_eq!(store.take_calls(), ["lock c2", "load c2 lead/r-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
        engine
            .release("c1", engine.policy().bot_ix("lead").unwrap(), "called back")
            .await
            .unwrap(),
        HUMAN
    );
    let d = engine
        .decide(request(&engine, "c1", "lead", "I want to sell my house"))
        .await
        .unwrap();
    assert_eq!(d.verdict.decision, Decision::Approved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_makes_the_request_contact_busy() {
    let (engine, store) = engine().await;
    let held = store
        .inner
        .lock("c1", Duration::from_millis(10))
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    let d = engine
        .decide(request(&engine, "c1", "lead", "I want to sell my house"))
        .await
        .unwrap();
    assert_eq!(d.verdict.decision, Decision::ContactBusy);
    assert_eq!(d.verdict.retry_after_ms, 250);
    // It waited the whole lock wait, and then touched nothing else.
    assert!(
        asked.elapsed() >= Duration::from_millis(250),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(store.take_calls(), ["lock c1"]);
    assert!(engine.contact("c1").await.is_err(), "a busy request wrote");
    // Released, the same request goes through.
    drop(held);
    let d = engine
        .decide(request(&engine, "c1", "lead", "I want to sell my house"))
        .await
        .unwrap();
    assert_eq!(d.verdict.decision, Decision::Approved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_report_defers_and_a_healthy_one_lets_through() {
    let (engine, _) = engine().await;
    let mut events = engine.subscribe();
    let report = |p95| HealthReport {
        bot: "buyer".into(),
        sample_count: 100,
        p95_ms: p95,
        ..Default::default()
    };
    reported(&engine, report(2500.0)).await;
    let buy = |contact| request(&engine, contact, "lead", "I want to buy a house");
    let d = engine.decide(buy("c1")).await.unwrap();
    assert_eq!(d.verdict.decision, Decision::DeferredUnhealthy);
    assert_eq!(d.verdict.retry_after_ms, 30_000);
    reported(&engine, report(900.0)).await;
    // The recovery retries c1's deferral in a task of its own; wait for it
    // rather than race it.
    let retried = next_approval(&mut events).await;
    assert_eq!(retried.contact_id, "c1");
    assert_eq!(
        engine.decide(buy("c2")).await.unwrap().verdict.decision,
        Decision::Approved
    );
}

/// The next APPROVED decision event, within a deadline.
async fn next_approval(events: &mut broadcast::Receiver<Arc<DecisionEvent>>) -> Arc<DecisionEvent> {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an approval within 5s")
            .unwrap();
        if e.verdict.decision == Decision::Approved {
            break e;
        }
    }
}

fn buyer_report(p95: f64) -> HealthReport {
    HealthReport {
        bot: "buyer".into(),
        sample_count: 100,
        p95_ms: p95,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_handoff_completes_when_the_target_recovers() {
    let (engine, _) = engine().await;
    let mut events = engine.subscribe();
    reported(&engine, buyer_report(2500.0)).await;
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

    reported(&engine, buyer_report(900.0)).await;
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
    reported(&engine, buyer_report(900.0)).await;
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
    reported(&engine, buyer_report(900.0)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_handoff_is_tried_at_most_three_times() {
    let (engine, _) = engine().await;
    reported(&engine, buyer_report(2500.0)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_never_stored_costs_no_storage_on_the_stay_path() {
    let (engine, store) = engine().await;
    let mut req = request(&engine, "c1", "lead", "hi there");
    req.request_id = "r-new".into();
    let d = engine.decide(req).await.unwrap();
    assert_eq!((d.verdict.decision, d.replayed), (Decision::Stay, false));
    assert_eq!(store.take_calls(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_deferral_replays_as_its_completion() {
    let (engine, _) = engine().await;
    let mut events = engine.subscribe();
    reported(&engine, buyer_report(2500.0)).await;
    let mut req = request(&engine, "c1", "lead", "I want to buy a house");
    req.request_id = "r-1".into();
    let d = engine.decide(req.clone()).await.unwrap();
    assert_eq!(d.verdict.decision, Decision::DeferredUnhealthy);
    reported(&engine, buyer_report(900.0)).await;
    // The recovery completes the deferral in a task of its own.
    let completed = next_approval(&mut events).await;
    assert_eq!(completed.contact_id, "c1");
    let contact = engine.contact("c1").await.unwrap();
    assert_eq!(contact.owner, "buyer");
    assert_eq!(completed.verdict.handoff_id, contact.last_handoff_id);
    let again = engine.decide(req).await.unwrap();
    assert!(again.replayed);
    assert_eq!(
        (again.verdict.decision, again.verdict.target.as_str()),
        (Decision::Approved, "buyer")
    );
    assert_eq!(again.verdict.handoff_id, contact.last_handoff_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_not_stored_under_their_request_id() {
    let (engine, _) = engine().await;
    lead_to_seller(&engine, "c1").await;
    let mut again = request(&engine, "c1", "lead", "I want to sell my house");
    again.request_id = "r-2".into();
    let d = engine.decide(again).await.unwrap();
    assert_eq!(d.verdict.decision, Decision::NotOwner);
    let lock = engine
        .store
        .lock("c1", std::time::Duration::from_secs(1))
        .await
        .unwrap();
    let key = baton_store::request_key("lead", "r-2");
    let loaded = engine.store.load(&lock, &key, 0).await.unwrap();
    assert_eq!(loaded.prior, None, "the refusal was stored");
}

// Item 5: acknowledgements and outcomes against a concurrent decision.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    // The ack and the outcome arrive while that commit is in flight.
    store.take_calls();
    let ack = {
        let (engine, handoff) = (Arc::clone(&engine), handoff.clone());
        tokio::spawn(async move { engine.acknowledge(&handoff, "seller").await })
    };
    let outcome = {
        let (engine, handoff) = (Arc::clone(&engine), handoff.clone());
        tokio::spawn(async move {
            engine
                .record_outcome(&handoff, Outcome::Successful, Viewer::Bot("seller"))
                .await
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let calls = store.calls.lock().unwrap().clone();
        let reached = |call: &str| calls.iter().any(|c| c == call);
        if reached("acknowledge seller") && reached("record_outcome Successful") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ack and the outcome did not reach the store: {calls:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!deciding.is_finished(), "the commit landed early");
    store.release_commit.notify_one();
    let decided = tokio::time::timeout(Duration::from_secs(5), deciding)
        .await
        .expect("the decision to commit")
        .unwrap()
        .unwrap();
    assert_eq!(decided.verdict.decision, Decision::Approved);
    let ack = tokio::time::timeout(Duration::from_secs(5), ack)
        .await
        .expect("the ack to be recorded")
        .unwrap()
        .unwrap();
    assert!(ack.first);
    let outcome = tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .expect("the outcome to be recorded")
        .unwrap()
        .unwrap();
    assert!(outcome.2);

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
    // The commit goes on without its caller, and keeps the contact locked.
    let busy = store.inner.lock("c1", Duration::ZERO).await;
    assert!(
        matches!(busy, Err(StoreError::Busy(_))),
        "the cancelled call let go of the lock before its commit landed"
    );
    store.slow_commit.store(false, Ordering::SeqCst);
    store.release_commit.notify_one();
    tokio::time::timeout(Duration::from_secs(5), store.commit_landed.notified())
        .await
        .expect("the cancelled call's commit to land");
    let retry = engine.decide(req).await.unwrap();
    assert!(retry.replayed, "the retry approved a second time");
    assert_eq!(retry.verdict.decision, Decision::Approved);
    let contact = engine.contact("c1").await.unwrap();
    assert_eq!(contact.history.len(), 1);
    assert_eq!(contact.last_handoff_id, retry.verdict.handoff_id);
}

// Item 10: bot-supplied patterns are capped per route.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_learns_from_at_most_max_patterns_per_route() {
    let mut config = Config::default();
    config.learning.max_patterns_per_route = 2;
    let store = Arc::new(EmbeddedStore::in_memory());
    let engine = Engine::new(Policy::new(config).unwrap(), store, 16)
        .await
        .unwrap();
    let mut handoffs = Vec::new();
    for (i, pattern) in ["p1", "p2", "p3", "p1"].iter().enumerate() {
        let mut req = request(&engine, &format!("c{i}"), "lead", "quick question");
        req.signals.push(Signal {
            target: engine.policy().bot_ix("seller").unwrap(),
            confidence: 0.95,
            pattern: (*pattern).into(),
        });
        let d = engine.decide(req).await.unwrap();
        assert_eq!(d.verdict.decision, Decision::Approved);
        handoffs.push(d.verdict.handoff_id);
    }
    let outcome = |id: String| {
        let engine = &engine;
        async move {
            engine
                .record_outcome(&id, Outcome::Successful, Viewer::Operator)
                .await
        }
    };
    outcome(handoffs[0].clone()).await.unwrap();
    outcome(handoffs[1].clone()).await.unwrap();
    let (code, message) = answer(outcome(handoffs[2].clone()).await);
    assert_eq!(code, tonic::Code::ResourceExhausted);
    assert!(
        message.contains("learning.max_patterns_per_route"),
        "{message}"
    );
    // A pattern the route already learns from is still welcome.
    outcome(handoffs[3].clone()).await.unwrap();
    let patterns: Vec<String> = engine
        .learned_thresholds()
        .into_iter()
        .map(|t| t.key.pattern)
        .collect();
    assert_eq!(patterns, ["p1", "p2"]);
}

/// The engine's clock is injected: a deferral retried after the defer
/// window has passed, by that clock, expires instead of completing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferral_retried_past_the_defer_window_expires_by_the_engines_clock() {
    let now = Arc::new(std::sync::atomic::AtomicI64::new(1_000_000));
    let read = Arc::clone(&now);
    let clock: super::Clock = Arc::new(move || read.load(Ordering::SeqCst));
    let config = Config::default();
    let window = baton_policy::ms(config.health.defer_window);
    let store = Arc::new(EmbeddedStore::in_memory());
    let engine = Arc::new(
        Engine::new(Policy::new(config).unwrap(), store, 16)
            .await
            .unwrap()
            .with_clock(clock),
    );
    reported(&engine, buyer_report(2500.0)).await;
    let d = engine
        .decide(request(&engine, "c1", "lead", "I want to buy a house"))
        .await
        .unwrap();
    assert_eq!(d.verdict.decision, Decision::DeferredUnhealthy);
    let deferred_at = engine
        .contact("c1")
        .await
        .unwrap()
        .deferral
        .unwrap()
        .deferred_at;
    assert_eq!(deferred_at, 1_000_000);

    now.store(1_000_000 + window + 1, Ordering::SeqCst);
    reported(&engine, buyer_report(900.0)).await;
    engine.retry_one("c1").await.unwrap();
    let contact = engine.contact("c1").await.unwrap();
    assert_eq!(contact.owner, "lead");
    assert_eq!(contact.deferral.unwrap().status, DeferralStatus::Expired);
}

/// A probe's report, as the service hands it over once validated.
async fn reported(engine: &Arc<Engine>, report: HealthReport) {
    let ix = engine.policy().bot_ix(&report.bot).unwrap();
    engine.report_health(ix, report).await.unwrap();
}

/// Every call's future holds the decision's, stays included, and tower
/// layers move it: the locked path's kilobytes of store futures are boxed
/// apart (they were 10 KB inline).
#[tokio::test]
async fn a_decisions_future_stays_small() {
    let (engine, _) = engine().await;
    let req = request(&engine, "c", "lead", "hello");
    let decision = engine.decide(req);
    let size = std::mem::size_of_val(&decision);
    assert!(size <= 2048, "the decide future is {size} bytes");
}
