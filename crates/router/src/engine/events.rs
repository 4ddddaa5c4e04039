//! Decisions as events: broadcast to this router's `WatchDecisions` and
//! `WatchHandoffs` subscribers, carried in a commit to the routers sharing
//! the store, and the changes those routers make (health, outcomes, their
//! decisions) applied to this one's caches and subscribers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use baton_policy::{UnixMs, Verdict};
use baton_store::StoreEvent;
use tokio::sync::broadcast;
use tracing::{Instrument, info_span, warn};

use super::{DecisionEvent, Engine, decision_index, write};

impl Engine {
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

    pub(super) fn apply(&self, event: StoreEvent) {
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

    /// A committed decision as the routers sharing the store tell their
    /// watchers: the event this router broadcasts, in JSON. `None` for a
    /// store nobody else reads.
    pub(super) fn published(
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

    pub(super) fn publish(
        &self,
        contact_id: &str,
        source: &str,
        request_id: &str,
        verdict: &Verdict,
    ) {
        self.counts[decision_index(verdict.decision)].fetch_add(1, Ordering::Relaxed);
        if self.events.receiver_count() == 0 {
            return;
        }
        let event = DecisionEvent {
            contact_id: contact_id.to_owned(),
            source: source.to_owned(),
            request_id: request_id.to_owned(),
            at: self.now(),
            verdict: verdict.clone(),
        };
        // Nobody listening is fine: the decision stands either way.
        let _ = self.events.send(Arc::new(event));
    }
}
