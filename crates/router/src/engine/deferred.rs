//! Health reports and the handoffs deferred to a bot: a report updates the
//! cache and the store; a bot that turned healthy gets its deferred
//! handoffs retried, each settled again under its contact's lock.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use baton_policy::{BotIx, HealthReport, HealthStatus, UnixMs, assess_health, settle};
use baton_store::{Commit, DeferredChange, StoreError, StoredDecision, request_key};
use tracing::{Instrument, info, info_span, warn};

use super::pipeline::new_handoff_id;
use super::{Engine, read, write};
use crate::error::EngineError;

impl Engine {
    /// Keeps a probe's report on bot `ix` (in the store and in the health
    /// cache).
    pub async fn report_health(
        self: &Arc<Self>,
        ix: BotIx,
        mut report: HealthReport,
    ) -> Result<(), EngineError> {
        let now = self.now();
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

    pub(super) fn assess(
        &self,
        ix: BotIx,
        report: Option<&HealthReport>,
        now: UnixMs,
    ) -> HealthStatus {
        let config = self.policy.config();
        assess_health(report, config.bots[ix].sla_p95, &config.health, now)
    }

    /// Judges a bot after a new report; when it turned healthy, retries
    /// the handoffs deferred to it. `was` is the previous report judged at
    /// this report's arrival: a bot whose reports went stale, which sends
    /// no unhealthy report, recovers from stale to healthy as well (SPEC §4).
    pub(super) fn health_changed(
        self: &Arc<Self>,
        ix: BotIx,
        was: &HealthStatus,
        is: &HealthStatus,
    ) {
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

    /// One retry of a contact's deferred handoff, under its lock: settled
    /// by [`settle::settle_deferred`], committed, and published when it
    /// completed.
    pub(super) async fn retry_one(&self, contact_id: &str) -> Result<(), EngineError> {
        let config = self.policy.config();
        let (lock, loaded) = self
            .store
            .lock_and_load(contact_id, "", config.policy.lock_wait, self.now())
            .await?;
        let now = self.now();
        let Some(contact) = loaded.contact else {
            return Ok(());
        };
        let handoff_id = new_handoff_id(contact_id);
        let retried = {
            let health = read(&self.health);
            let target = contact.deferral.as_ref().map(|d| d.target.as_str());
            let target_health = target
                .and_then(|t| self.policy.bot_ix(t))
                .and_then(|t| health[t].as_ref());
            settle::settle_deferred(config, contact, target_health, now, &handoff_id)
        };
        let Some(retried) = retried else {
            // Nothing pending: the index entry outlived its deferral.
            let commit = Commit {
                contact_id: contact_id.to_owned(),
                deferred: Some(DeferredChange::Remove),
                ..Default::default()
            };
            self.commit(lock, commit).await?;
            return Ok(());
        };
        let (source, request_id) = match &retried.contact.deferral {
            Some(d) => {
                info!(contact = contact_id, status = d.status.as_str(), tries = d.tries, detail = %d.detail, "deferred handoff retried");
                (d.source.clone(), d.request_id.clone())
            }
            None => Default::default(),
        };
        let approved = retried.approved;
        let mut commit = Commit {
            contact_id: contact_id.to_owned(),
            contact: Some(retried.contact),
            deferred: retried.deferred,
            ..Default::default()
        };
        if let Some(verdict) = &approved {
            // A retry of the deferred request replays its completion.
            if !request_id.is_empty() {
                let stored = StoredDecision {
                    verdict: verdict.clone(),
                    expires_at: now + baton_policy::ms(config.policy.decision_ttl),
                };
                commit.decision = Some((request_key(&source, &request_id), stored));
            }
            commit.published = self.published(contact_id, &source, &request_id, now, verdict);
        }
        self.commit(lock, commit).await?;
        if let Some(verdict) = approved {
            self.publish(contact_id, &source, &request_id, &verdict);
        }
        Ok(())
    }
}
