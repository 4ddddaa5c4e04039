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

use baton_policy::{
    Assessment, BotIx, ContextPacket, Decision, HealthReport, HealthStatus, Learned, Message, Next,
    OutcomeWindow, Policy, Signal, UnixMs, Verdict, assess_health, ms,
};
use baton_store::{RouteKey, Store, request_key};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{Instrument, debug, info, info_span};

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
    /// Where every rule's `now` comes from.
    clock: Clock,
}

/// The engine's clock: Unix milliseconds. The system clock, unless a test
/// drives time ([`Engine::with_clock`]).
pub type Clock = Arc<dyn Fn() -> UnixMs + Send + Sync>;

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
            clock: Arc::new(now_ms),
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

    /// Reads time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Now, by the engine's clock.
    fn now(&self) -> UnixMs {
        (self.clock)()
    }

    /// Gives one STAY decision in `every` a tracing span (every non-STAY
    /// decision always has one).
    pub fn with_stay_span_every(mut self, every: u32) -> Self {
        self.stay_span_every = u64::from(every.max(1));
        self
    }

    /// The whole pipeline of SPEC §2 for one validated request. A request
    /// id with a stored decision skips the classifier: the decision is
    /// looked up (under the lock) before anything is recomputed.
    pub async fn decide(&self, req: HandoffRequest) -> Result<Decided, EngineError> {
        let started = std::time::Instant::now();
        let stored = !req.request_id.is_empty()
            && self
                .replays
                .known(&req.contact_id, &self.request_key(&req), self.now());
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
        // Boxed: the locked path's state (the store's futures, kilobytes)
        // would otherwise be part of every call's future, stays included,
        // and be copied each time a layer moves it.
        Box::pin(
            self.decide_locked(req, assessment, started)
                .instrument(span),
        )
        .await
    }

    async fn decide_locked(
        &self,
        req: HandoffRequest,
        assessment: Option<Assessment>,
        started: std::time::Instant,
    ) -> Result<Decided, EngineError> {
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

    pub fn bots(&self) -> Vec<BotView> {
        let config = self.policy.config();
        let health = read(&self.health);
        let now = self.now();
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

    /// Deletes remembered decisions past their TTL.
    pub async fn purge(&self) -> Result<usize, EngineError> {
        let now = self.now();
        self.replays.purge(now);
        Ok(self.store.purge_expired(now).await?)
    }
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

mod deferred;
mod events;
mod learning;
mod pipeline;
mod queries;
mod replays;
#[cfg(test)]
mod tests;

pub use queries::Viewer;
