//! The decision pipeline around the pure policy: memory-only steps first
//! (most messages end there, in `STAY`, without touching storage), then the
//! contact lock, the gates against stored state, and one fenced commit.
//!
//! The engine also owns the two caches the memory-only steps read: the
//! latest health report per bot and the learned threshold adjustments.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use baton_policy::gates::{self, Failure};
use baton_policy::{
    Assessment, BotIx, ContactState, ContextPacket, Decision, Deferral, DeferralStatus, EntryKind,
    GateCheck, GateInput, HUMAN, HealthReport, HealthStatus, Learned, Message, Next, OutcomeWindow,
    Policy, Signal, UnixMs, Verdict, assess_health, ms,
};
use baton_store::{
    Commit, ContactLock, DeferredChange, RouteKey, Store, StoreError, StoreEvent, StoredDecision,
    request_key,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::EngineError;
use crate::telemetry::Metrics;
use replays::Replays;

/// A validated `RequestHandoff`.
#[derive(Debug, Clone)]
pub struct HandoffRequest {
    pub contact_id: String,
    pub source: BotIx,
    pub message: String,
    pub signals: Vec<Signal>,
    pub context: ContextPacket,
    pub request_id: String,
}

/// A decision as it went out, for operators and target bots to watch. A
/// decision committed to a store shared by several routers travels to the
/// others as this, in JSON ([`Commit::published`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionEvent {
    pub contact_id: String,
    pub source: String,
    pub request_id: String,
    pub at: UnixMs,
    pub verdict: Verdict,
}

/// A decision and whether it was replayed from an earlier identical request.
#[derive(Debug, Clone)]
pub struct Decided {
    pub verdict: Verdict,
    pub replayed: bool,
}

#[derive(Debug, Clone, Default)]
struct Learning {
    window: OutcomeWindow,
    adjustment: f64,
}

/// Learned adjustments by route (`source * bots + target`) and pattern.
struct LearnedCache {
    bots: usize,
    routes: Vec<HashMap<String, Learning>>,
}

impl Learned for LearnedCache {
    fn adjustment(&self, source: BotIx, target: BotIx, pattern: &str) -> f64 {
        self.routes[source * self.bots + target]
            .get(pattern)
            .map_or(0.0, |l| l.adjustment)
    }
}

/// One learned threshold, for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedThreshold {
    pub key: RouteKey,
    pub base: f64,
    pub adjustment: f64,
    pub threshold: f64,
    pub outcomes: usize,
    pub successes: usize,
}

/// A bot and how it is doing, for operators.
#[derive(Debug, Clone)]
pub struct BotView {
    pub id: String,
    pub sla_p95_ms: u64,
    pub status: HealthStatus,
    pub report: Option<HealthReport>,
}

pub struct Engine {
    policy: Policy,
    store: Arc<dyn Store>,
    health: RwLock<Vec<Option<HealthReport>>>,
    /// Per bot: judged healthy at its last report. A change to healthy
    /// retries the handoffs deferred to it.
    healthy: Vec<AtomicBool>,
    learned: RwLock<LearnedCache>,
    counts: [AtomicU64; 8],
    events: broadcast::Sender<Arc<DecisionEvent>>,
    metrics: Metrics,
    /// STAY decisions so far, and how many of them get a span.
    stays: AtomicU64,
    stay_span_every: u64,
    /// Request ids with a stored decision (see the `replays` module).
    replays: Replays,
    /// Whether other routers share the store (etcd): only then does a
    /// commit carry its decision for their watchers (`Commit::published`).
    shared_store: bool,
}

pub fn now_ms() -> UnixMs {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// Builds the engine and warms its caches from the store.
    pub async fn new(
        policy: Policy,
        store: Arc<dyn Store>,
        watch_buffer: usize,
    ) -> Result<Self, EngineError> {
        let bots = policy.config().bots.len();
        let mut health = vec![None; bots];
        for report in store.health_reports().await? {
            if let Some(ix) = policy.bot_ix(&report.bot) {
                health[ix] = Some(report);
            }
        }
        let (events, _) = broadcast::channel(watch_buffer);
        let engine = Self {
            learned: RwLock::new(LearnedCache {
                bots,
                routes: vec![HashMap::new(); bots * bots],
            }),
            health: RwLock::new(health),
            healthy: (0..bots).map(|_| AtomicBool::new(false)).collect(),
            counts: Default::default(),
            events,
            metrics: Metrics::default(),
            stays: AtomicU64::new(0),
            stay_span_every: 1,
            replays: Replays::default(),
            shared_store: store.subscribe().is_some(),
            policy,
            store,
        };
        for (key, window) in engine.store.outcome_windows().await? {
            engine.learn(&key, window);
        }
        Ok(engine)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Gives one STAY decision in `every` a tracing span (every non-STAY
    /// decision always has one).
    pub fn with_stay_span_every(mut self, every: u32) -> Self {
        self.stay_span_every = u64::from(every.max(1));
        self
    }

    /// Keeps the health and learning caches current with the changes other
    /// routers make to a shared store (etcd); a no-op for a store only this
    /// process writes.
    pub fn follow_store(self: &Arc<Self>) {
        let Some(mut events) = self.store.subscribe() else {
            return;
        };
        let engine = Arc::downgrade(self);
        let task = async move {
            loop {
                let event = events.recv().await;
                let Some(engine) = engine.upgrade() else {
                    break;
                };
                match event {
                    Ok(event) => engine.apply(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(missed, "fell behind the store's changes; reloading caches");
                        engine.reload().await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        };
        tokio::spawn(task.instrument(info_span!("follow_store")));
    }

    fn apply(&self, event: StoreEvent) {
        match event {
            StoreEvent::Health(report) => {
                let Some(ix) = self.policy.bot_ix(&report.bot) else {
                    return;
                };
                let mut health = write(&self.health);
                if health[ix]
                    .as_ref()
                    .is_none_or(|r| r.received_at <= report.received_at)
                {
                    health[ix] = Some(report);
                }
            }
            StoreEvent::HealthExpired(bot) => {
                let Some(ix) = self.policy.bot_ix(&bot) else {
                    return;
                };
                // Gone silent, not "never reported": keep the report, make it stale.
                if let Some(r) = write(&self.health)[ix].as_mut() {
                    r.received_at = 0;
                }
            }
            StoreEvent::Outcomes(key, window) => {
                self.learn(&key, window);
            }
            // Another router's decision: told to this router's watchers
            // too, but not counted here (`GetStats` counts this process's).
            StoreEvent::Published(bytes) => match serde_json::from_slice::<DecisionEvent>(&bytes) {
                Ok(event) => {
                    let _ = self.events.send(Arc::new(event));
                }
                Err(e) => warn!(error = %e, "unreadable decision published by another router"),
            },
        }
    }

    async fn reload(self: &Arc<Self>) {
        match self.store.health_reports().await {
            Ok(reports) => reports
                .into_iter()
                .for_each(|r| self.apply(StoreEvent::Health(r))),
            Err(e) => warn!(error = %e, "cannot reload health reports"),
        }
        match self.store.outcome_windows().await {
            Ok(windows) => windows
                .into_iter()
                .for_each(|(k, w)| self.apply(StoreEvent::Outcomes(k, w))),
            Err(e) => warn!(error = %e, "cannot reload outcome windows"),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DecisionEvent>> {
        self.events.subscribe()
    }

    /// The whole pipeline of SPEC §2 for one validated request. A request
    /// id with a stored decision skips the classifier: the decision is
    /// looked up (under the lock) before anything is recomputed.
    pub async fn decide(&self, req: HandoffRequest) -> Result<Decided, EngineError> {
        let started = std::time::Instant::now();
        let stored = !req.request_id.is_empty()
            && self
                .replays
                .known(&req.contact_id, &self.request_key(&req), now_ms());
        let assessment = if stored {
            None
        } else {
            let assessment = self.assess_message(&req);
            if assessment.next == Next::Stay {
                return Ok(self.stay_now(&req, assessment, started));
            }
            Some(assessment)
        };
        let span = self.decision_span(&req);
        async move {
            let decided = self.locked(&req, assessment).await?;
            let v = &decided.verdict;
            record(&tracing::Span::current(), v);
            info!(reason = %v.reason, replayed = decided.replayed, "decided");
            // A replay was counted and pushed when it was first decided.
            if !decided.replayed {
                self.finish(&req, v, started);
            }
            Ok(decided)
        }
        .instrument(span)
        .await
    }

    /// The common path, from memory alone: one span per `stay_span_every`
    /// STAY decisions.
    fn stay_now(
        &self,
        req: &HandoffRequest,
        assessment: Assessment,
        started: std::time::Instant,
    ) -> Decided {
        let verdict = self.stay(assessment);
        let n = self.stays.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(self.stay_span_every) {
            let span = self.decision_span(req);
            span.in_scope(|| {
                record(&span, &verdict);
                debug!(reason = %verdict.reason, "decided");
            });
        }
        self.finish(req, &verdict, started);
        Decided {
            verdict,
            replayed: false,
        }
    }

    fn assess_message(&self, req: &HandoffRequest) -> Assessment {
        let learned = read(&self.learned);
        let message = Message {
            source: req.source,
            text: &req.message,
            signals: &req.signals,
        };
        self.policy.assess(&message, &*learned)
    }

    /// What the request's decision is stored under, within its contact.
    fn request_key(&self, req: &HandoffRequest) -> String {
        request_key(self.policy.bot_id(req.source), &req.request_id)
    }

    /// The decision's span, a child of the call's SERVER span. Attributes
    /// are namespaced `baton.*` (why not `gen_ai.*`: see [`crate::telemetry`]).
    fn decision_span(&self, req: &HandoffRequest) -> tracing::Span {
        info_span!(
            "decision",
            baton.contact_id = %req.contact_id,
            baton.source_bot = self.policy.bot_id(req.source),
            baton.target_bot = tracing::field::Empty,
            baton.decision = tracing::field::Empty,
            baton.gate = tracing::field::Empty,
            baton.handoff_id = tracing::field::Empty,
            baton.lock_wait_ms = tracing::field::Empty,
        )
    }

    /// Counts, measures and broadcasts a decision.
    fn finish(&self, req: &HandoffRequest, verdict: &Verdict, started: std::time::Instant) {
        self.metrics
            .decided(verdict.decision.as_str(), started.elapsed());
        let source = self.policy.bot_id(req.source);
        self.publish(&req.contact_id, source, &req.request_id, verdict);
    }

    fn stay(&self, a: Assessment) -> Verdict {
        Verdict {
            decision: Decision::Stay,
            target: a
                .target
                .map(|t| self.policy.bot_id(t).to_owned())
                .unwrap_or_default(),
            confidence: a.confidence,
            threshold: a.threshold,
            pattern: a.pattern,
            reason: a.reason,
            gates: a.checks,
            handoff_id: String::new(),
            retry_after_ms: 0,
            pending_intents: Vec::new(),
            context: None,
        }
    }

    /// Steps 6–8: lock, replay or gates, commit. Without an assessment (the
    /// request id has a stored decision) the message is assessed only if
    /// the store no longer has it.
    async fn locked(
        &self,
        req: &HandoffRequest,
        assessment: Option<Assessment>,
    ) -> Result<Decided, EngineError> {
        let config = self.policy.config();
        let source = self.policy.bot_id(req.source);
        let request_key = self.request_key(req);
        let request_key = if req.request_id.is_empty() {
            ""
        } else {
            &request_key
        };
        let waiting = std::time::Instant::now();
        // The load rides with the lock: one etcd round trip, not two.
        let locking = self.store.lock_and_load(
            &req.contact_id,
            request_key,
            config.policy.lock_wait,
            now_ms(),
        );
        let locked = locking.instrument(info_span!("store.lock")).await;
        let waited = waiting.elapsed();
        self.metrics.lock_waited(waited);
        tracing::Span::current().record("baton.lock_wait_ms", waited.as_secs_f64() * 1000.0);
        let (lock, loaded) = match locked {
            Ok(locked) => locked,
            Err(StoreError::Busy(_)) => {
                let a = assessment.unwrap_or_else(|| self.assess_message(req));
                let target = a.target.map_or(HUMAN, |t| self.policy.bot_id(t));
                let mut checks = a.checks;
                let why = format!(
                    "another handoff holds the contact (waited {}ms)",
                    config.policy.lock_wait.as_millis()
                );
                checks.push(GateCheck::new("lock", false, why.clone()));
                let verdict = Verdict {
                    decision: Decision::ContactBusy,
                    target: target.to_owned(),
                    confidence: a.confidence,
                    threshold: a.threshold,
                    pattern: a.pattern,
                    reason: why,
                    gates: checks,
                    handoff_id: String::new(),
                    retry_after_ms: ms(config.policy.lock_wait) as u64,
                    pending_intents: Vec::new(),
                    context: None,
                };
                return Ok(Decided {
                    verdict,
                    replayed: false,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let now = now_ms();
        if let Some(verdict) = loaded.prior {
            return Ok(Decided {
                verdict,
                replayed: true,
            });
        }
        let a = match assessment {
            Some(a) => a,
            None => {
                let a = self.assess_message(req);
                if a.next == Next::Stay {
                    return Ok(Decided {
                        verdict: self.stay(a),
                        replayed: false,
                    });
                }
                a
            }
        };
        let target = a.target.map_or(HUMAN, |t| self.policy.bot_id(t));
        let mut checks = a.checks;
        let mut contact = loaded
            .contact
            .unwrap_or_else(|| ContactState::new(source, now));
        let target_ix = a.target;
        let result = {
            let health = read(&self.health);
            let input = GateInput {
                contact: &contact,
                source,
                target,
                target_health: target_ix.and_then(|t| health[t].as_ref()),
                target_sla: target_ix.map_or(Default::default(), |t| config.bots[t].sla_p95),
                now,
            };
            match a.next {
                Next::Escalate => gates::ownership(&input),
                _ => gates::run_gates(config, &input),
            }
        };
        checks.extend(result.checks);

        let (decision, reason, retry_after) = match result.failure {
            Some(Failure {
                decision,
                reason,
                retry_after,
            }) => (decision, reason, retry_after),
            None if a.next == Next::Escalate => (Decision::EscalatedHuman, a.reason.clone(), None),
            None => (Decision::Approved, a.reason.clone(), None),
        };
        let mut verdict = Verdict {
            decision,
            target: target.to_owned(),
            confidence: a.confidence,
            threshold: a.threshold,
            pattern: a.pattern.clone(),
            reason,
            gates: checks,
            handoff_id: String::new(),
            retry_after_ms: retry_after.map_or(0, |d| ms(d) as u64),
            pending_intents: a.pending.clone(),
            context: None,
        };
        let mut commit = Commit {
            contact_id: req.contact_id.clone(),
            ..Default::default()
        };
        if decision == Decision::DeferredUnhealthy {
            contact.deferral = Some(Deferral {
                source: source.to_owned(),
                target: target.to_owned(),
                pattern: a.pattern.clone(),
                confidence: a.confidence,
                threshold: a.threshold,
                pending: a.pending.clone(),
                context: req.context.clone(),
                request_id: req.request_id.clone(),
                deferred_at: now,
                tries: 0,
                status: DeferralStatus::Pending,
                handoff_id: String::new(),
                detail: verdict.reason.clone(),
            });
            commit.contact = Some(contact.clone());
            commit.deferred = Some(DeferredChange::Add(target.to_owned()));
        }
        if decision.moves_contact() {
            if let Some(d) = contact.deferral.as_mut().filter(|d| d.is_pending()) {
                d.status = DeferralStatus::Abandoned;
                d.detail = format!("superseded by a handoff to '{target}'");
                commit.deferred = Some(DeferredChange::Remove);
            }
            let (kind, to) = match decision {
                Decision::Approved => (EntryKind::Handoff, target),
                _ => (EntryKind::Escalation, HUMAN),
            };
            let handoff_id = new_handoff_id(&req.contact_id);
            contact.hand_over(
                kind,
                &handoff_id,
                to,
                &a.pattern,
                a.confidence,
                &verdict.reason,
                req.context.clone(),
                &a.pending,
                config,
                now,
            );
            verdict.target = to.to_owned();
            verdict.handoff_id = handoff_id.clone();
            verdict.context = Some(contact.context.clone());
            commit.contact = Some(contact);
            commit.handoff_id = Some(handoff_id);
        }
        // Only what a retry needs is stored: a decision that changed the
        // contact or left a deferral. A refusal is recomputed on a retry.
        let retry_needs = decision.moves_contact() || decision == Decision::DeferredUnhealthy;
        if !req.request_id.is_empty() && retry_needs {
            let expires_at = now + ms(config.policy.decision_ttl);
            self.replays
                .remember(&req.contact_id, request_key, expires_at);
            let stored = StoredDecision {
                verdict: verdict.clone(),
                expires_at,
            };
            commit.decision = Some((request_key.to_owned(), stored));
        }
        if commit.contact.is_some() || commit.decision.is_some() {
            commit.published =
                self.published(&req.contact_id, source, &req.request_id, now, &verdict);
            #[cfg(debug_assertions)]
            pause_for_tests(&req.contact_id).await;
            self.commit(lock, commit)
                .instrument(info_span!("store.commit"))
                .await?;
        }
        Ok(Decided {
            verdict,
            replayed: false,
        })
    }

    /// Commits and releases the lock in a task of its own, awaited here:
    /// a caller whose deadline passes mid-commit drops this future, but
    /// not the task, which keeps the lock until the write has landed (or
    /// failed). A retry therefore always finds the first call's decision.
    async fn commit(&self, lock: ContactLock, commit: Commit) -> Result<(), StoreError> {
        let store = Arc::clone(&self.store);
        let task = async move { store.commit(lock, commit).await };
        tokio::spawn(task.in_current_span())
            .await
            .map_err(|e| StoreError::Unavailable(format!("commit task failed: {e}")))?
    }

    /// A committed decision as the routers sharing the store tell their
    /// watchers: the event this router broadcasts, in JSON. `None` for a
    /// store nobody else reads.
    fn published(
        &self,
        contact_id: &str,
        source: &str,
        request_id: &str,
        at: UnixMs,
        verdict: &Verdict,
    ) -> Option<Vec<u8>> {
        if !self.shared_store {
            return None;
        }
        let event = DecisionEvent {
            contact_id: contact_id.to_owned(),
            source: source.to_owned(),
            request_id: request_id.to_owned(),
            at,
            verdict: verdict.clone(),
        };
        match serde_json::to_vec(&event) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                warn!(error = %e, "cannot serialise a decision for the other routers");
                None
            }
        }
    }

    fn publish(&self, contact_id: &str, source: &str, request_id: &str, verdict: &Verdict) {
        self.counts[decision_index(verdict.decision)].fetch_add(1, Ordering::Relaxed);
        if self.events.receiver_count() == 0 {
            return;
        }
        let event = DecisionEvent {
            contact_id: contact_id.to_owned(),
            source: source.to_owned(),
            request_id: request_id.to_owned(),
            at: now_ms(),
            verdict: verdict.clone(),
        };
        // Nobody listening is fine: the decision stands either way.
        let _ = self.events.send(Arc::new(event));
    }

    /// Puts a window into the cache; returns the route's threshold with it.
    fn learn(&self, key: &RouteKey, window: OutcomeWindow) -> f64 {
        let (Some(s), Some(t)) = (
            self.policy.bot_ix(&key.source),
            self.policy.bot_ix(&key.target),
        ) else {
            return self.policy.config().policy.threshold;
        };
        let adjustment = window.adjustment(&self.policy.config().learning);
        let mut learned = write(&self.learned);
        let n = learned.bots;
        learned.routes[s * n + t].insert(key.pattern.clone(), Learning { window, adjustment });
        self.policy.threshold(s, t, &key.pattern, &*learned)
    }

    /// Every route and pattern with outcomes, and its threshold now.
    pub fn learned_thresholds(&self) -> Vec<LearnedThreshold> {
        let learned = read(&self.learned);
        let n = learned.bots;
        let mut out = Vec::new();
        for (ix, patterns) in learned.routes.iter().enumerate() {
            let (s, t) = (ix / n, ix % n);
            for (pattern, l) in patterns {
                out.push(LearnedThreshold {
                    key: RouteKey {
                        source: self.policy.bot_id(s).to_owned(),
                        target: self.policy.bot_id(t).to_owned(),
                        pattern: pattern.clone(),
                    },
                    base: self.policy.base_threshold(s, t),
                    adjustment: l.adjustment,
                    threshold: self.policy.threshold(s, t, pattern, &*learned),
                    outcomes: l.window.outcomes(),
                    successes: l.window.successes(),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Keeps a probe's report (in the store and in the health cache).
    pub async fn report_health(
        self: &Arc<Self>,
        mut report: HealthReport,
    ) -> Result<(), EngineError> {
        let Some(ix) = self.policy.bot_ix(&report.bot) else {
            return Err(EngineError::Invalid(format!(
                "field 'report.bot': '{}' is not a configured bot",
                report.bot
            )));
        };
        let now = now_ms();
        report.received_at = now;
        self.store.put_health(&report).await?;
        let (was, is) = {
            let mut health = write(&self.health);
            let previous = health[ix].replace(report);
            (
                self.assess(ix, previous.as_ref(), now),
                self.assess(ix, health[ix].as_ref(), now),
            )
        };
        self.health_changed(ix, &was, &is);
        Ok(())
    }

    fn assess(&self, ix: BotIx, report: Option<&HealthReport>, now: UnixMs) -> HealthStatus {
        let config = self.policy.config();
        assess_health(report, config.bots[ix].sla_p95, &config.health, now)
    }

    /// Judges a bot after a new report; when it turned healthy, retries
    /// the handoffs deferred to it. `was` is the previous report judged at
    /// this report's arrival: a bot whose reports went stale, which sends
    /// no unhealthy report, recovers from stale to healthy as well (SPEC §4).
    fn health_changed(self: &Arc<Self>, ix: BotIx, was: &HealthStatus, is: &HealthStatus) {
        let healthy = matches!(is, HealthStatus::Healthy(_));
        let was_healthy = matches!(was, HealthStatus::Healthy(_));
        // The flag also retries at the first healthy report after start.
        let first = healthy && !self.healthy[ix].swap(true, Ordering::SeqCst);
        if healthy && (first || !was_healthy) {
            let engine = Arc::clone(self);
            // Its own trace, linked to the report that set it off: that
            // report's call is a probe's stream, open for days.
            let span =
                info_span!(parent: None, "deferred", baton.target_bot = self.policy.bot_id(ix));
            span.follows_from(tracing::Span::current());
            tokio::spawn(async move { engine.retry_deferred(ix).await }.instrument(span));
        } else if !healthy {
            self.healthy[ix].store(false, Ordering::SeqCst);
        }
    }

    /// Retries every pending handoff deferred to bot `ix`.
    async fn retry_deferred(&self, ix: BotIx) {
        let target = self.policy.bot_id(ix);
        let waiting = match self.store.deferred().await {
            Ok(all) => all,
            Err(e) => {
                warn!(error = %e, "cannot list deferred handoffs");
                return;
            }
        };
        for (contact_id, _) in waiting.into_iter().filter(|(_, t)| t == target) {
            // A live request may hold the contact for a moment: a few tries.
            let attempts = self.policy.config().health.defer_lock_attempts;
            for attempt in 0..attempts {
                match self.retry_one(&contact_id).await {
                    Err(EngineError::Store(StoreError::Busy(_))) if attempt + 1 < attempts => {
                        tokio::time::sleep(self.policy.config().policy.lock_wait).await;
                    }
                    Err(e) => {
                        warn!(contact = %contact_id, error = %e, "deferred handoff retry failed");
                        break;
                    }
                    Ok(()) => break,
                }
            }
        }
    }

    /// One retry of a contact's deferred handoff: every gate again, under the lock.
    async fn retry_one(&self, contact_id: &str) -> Result<(), EngineError> {
        let config = self.policy.config();
        let (lock, loaded) = self
            .store
            .lock_and_load(contact_id, "", config.policy.lock_wait, now_ms())
            .await?;
        let now = now_ms();
        let Some(mut contact) = loaded.contact else {
            return Ok(());
        };
        let mut commit = Commit {
            contact_id: contact_id.to_owned(),
            deferred: Some(DeferredChange::Remove),
            ..Default::default()
        };
        let Some(mut d) = contact.deferral.clone().filter(Deferral::is_pending) else {
            self.commit(lock, commit).await?;
            return Ok(());
        };
        let target_ix = self.policy.bot_ix(&d.target);
        let mut published = None;
        if now - d.deferred_at > ms(config.health.defer_window) {
            d.status = DeferralStatus::Expired;
            d.detail = format!("'{}' did not recover within the defer window", d.target);
        } else if let Some(t) = target_ix {
            d.tries += 1;
            let result = {
                let health = read(&self.health);
                let input = GateInput {
                    contact: &contact,
                    source: &d.source,
                    target: &d.target,
                    target_health: health[t].as_ref(),
                    target_sla: config.bots[t].sla_p95,
                    now,
                };
                gates::run_gates(config, &input)
            };
            match result.failure {
                None => {
                    let handoff_id = new_handoff_id(contact_id);
                    let reason = format!(
                        "deferred handoff completed after '{}' recovered (try {})",
                        d.target, d.tries
                    );
                    contact.hand_over(
                        EntryKind::Handoff,
                        &handoff_id,
                        &d.target,
                        &d.pattern,
                        d.confidence,
                        &reason,
                        d.context.clone(),
                        &d.pending,
                        config,
                        now,
                    );
                    d.status = DeferralStatus::Completed;
                    d.handoff_id = handoff_id.clone();
                    d.detail = reason.clone();
                    commit.handoff_id = Some(handoff_id.clone());
                    published = Some(Verdict {
                        decision: Decision::Approved,
                        target: d.target.clone(),
                        confidence: d.confidence,
                        threshold: d.threshold,
                        pattern: d.pattern.clone(),
                        reason,
                        gates: result.checks,
                        handoff_id,
                        retry_after_ms: 0,
                        pending_intents: d.pending.clone(),
                        context: Some(contact.context.clone()),
                    });
                }
                Some(f)
                    if f.decision == Decision::DeferredUnhealthy
                        && d.tries < config.health.defer_max_tries =>
                {
                    d.detail = f.reason;
                    commit.deferred = None; // still waiting
                }
                Some(f) => {
                    d.status = DeferralStatus::Abandoned;
                    d.detail = format!("after {} tries: {}", d.tries, f.reason);
                }
            }
        } else {
            d.status = DeferralStatus::Abandoned;
            d.detail = format!("'{}' is no longer a configured bot", d.target);
        }
        info!(contact = contact_id, status = d.status.as_str(), tries = d.tries, detail = %d.detail, "deferred handoff retried");
        let (source, request_id) = (d.source.clone(), d.request_id.clone());
        // A retry of the deferred request replays its completion.
        if let Some(verdict) = published.as_ref().filter(|_| !request_id.is_empty()) {
            let stored = StoredDecision {
                verdict: verdict.clone(),
                expires_at: now + ms(config.policy.decision_ttl),
            };
            commit.decision = Some((request_key(&source, &request_id), stored));
        }
        if let Some(verdict) = &published {
            commit.published = self.published(contact_id, &source, &request_id, now, verdict);
        }
        contact.deferral = Some(d);
        commit.contact = Some(contact);
        self.commit(lock, commit).await?;
        if let Some(verdict) = published {
            self.publish(contact_id, &source, &request_id, &verdict);
        }
        Ok(())
    }

    pub fn bots(&self) -> Vec<BotView> {
        let config = self.policy.config();
        let health = read(&self.health);
        let now = now_ms();
        config
            .bots
            .iter()
            .zip(health.iter())
            .map(|(bot, report)| BotView {
                id: bot.id.clone(),
                sla_p95_ms: ms(bot.sla_p95) as u64,
                status: assess_health(report.as_ref(), bot.sla_p95, &config.health, now),
                report: report.clone(),
            })
            .collect()
    }

    /// Decisions by kind since this process started.
    pub fn counts(&self) -> Vec<(Decision, u64)> {
        Decision::ALL
            .iter()
            .map(|d| (*d, self.counts[decision_index(*d)].load(Ordering::Relaxed)))
            .collect()
    }

    /// An operator hands the contact to `owner` and resets its chain.
    pub async fn release(
        &self,
        contact_id: &str,
        owner: &str,
        reason: &str,
    ) -> Result<String, EngineError> {
        if self.policy.bot_ix(owner).is_none() {
            return Err(EngineError::Invalid(format!(
                "field 'owner': '{owner}' is not a configured bot"
            )));
        }
        let config = self.policy.config();
        let locked = self
            .store
            .lock_and_load(contact_id, "", config.policy.lock_wait, now_ms())
            .await;
        let (lock, loaded) = match locked {
            Err(StoreError::Busy(_)) => {
                return Err(EngineError::Busy(format!(
                    "contact '{contact_id}' is busy, retry"
                )));
            }
            other => other?,
        };
        let now = now_ms();
        let mut contact = loaded
            .contact
            .ok_or_else(|| EngineError::NotFound(format!("contact '{contact_id}'")))?;
        let previous = contact.owner.clone();
        contact.release(owner, reason, config, now);
        let commit = Commit {
            contact_id: contact_id.to_owned(),
            contact: Some(contact),
            ..Default::default()
        };
        self.commit(lock, commit).await?;
        info!(contact = contact_id, previous = %previous, owner, "contact released");
        Ok(previous)
    }

    /// Deletes remembered decisions past their TTL.
    pub async fn purge(&self) -> Result<usize, EngineError> {
        let now = now_ms();
        self.replays.purge(now);
        Ok(self.store.purge_expired(now).await?)
    }
}

/// A test-only pause point, compiled out of release builds: with
/// `BATON_TEST_PAUSE_AFTER_LOCK=<contact>=<duration>` a decision on that
/// contact sleeps while holding its lock, after the gates and before the
/// commit, so a test can kill or freeze the router exactly there.
#[cfg(debug_assertions)]
async fn pause_for_tests(contact: &str) {
    let Ok(spec) = std::env::var("BATON_TEST_PAUSE_AFTER_LOCK") else {
        return;
    };
    let Some((id, pause)) = spec.split_once('=') else {
        return;
    };
    if id == contact
        && let Ok(pause) = humantime::parse_duration(pause)
    {
        warn!(
            contact,
            ?pause,
            "test pause point: holding the contact lock"
        );
        tokio::time::sleep(pause).await;
    }
}

/// A new handoff id: time-ordered and unique, and carrying its contact
/// (`<uuid>:<contact id>`) so a store can find the handoff from its id alone.
fn new_handoff_id(contact_id: &str) -> String {
    format!("{}:{contact_id}", uuid::Uuid::now_v7())
}

/// Puts the decision's outcome on its span: target, decision, handoff id,
/// and `baton.gate`, the check that refused (threshold, lock, ownership,
/// depth, …). A decision no check refused (APPROVED, a STAY without any
/// intent) has no `baton.gate`: "none" would read as a gate of that name.
fn record(span: &tracing::Span, v: &Verdict) {
    if !v.target.is_empty() {
        span.record("baton.target_bot", v.target.as_str());
    }
    span.record("baton.decision", v.decision.as_str());
    if let Some(refused) = v.gates.iter().find(|g| !g.passed) {
        span.record("baton.gate", refused.gate.as_str());
    }
    if !v.handoff_id.is_empty() {
        span.record("baton.handoff_id", v.handoff_id.as_str());
    }
}

fn decision_index(d: Decision) -> usize {
    Decision::ALL.iter().position(|x| *x == d).unwrap_or(0)
}

mod queries;
mod replays;
#[cfg(test)]
mod tests;

pub use queries::Viewer;
