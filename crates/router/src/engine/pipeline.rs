//! The locked half of a decision, and of an operator's release: lock and
//! load (one round trip), replay or settle (pure, in `baton-policy`),
//! commit, publish.

use std::sync::Arc;

use baton_policy::settle::{self, Request};
use baton_policy::{Assessment, BotIx, Next};
use baton_store::{Commit, ContactLock, StoreError, StoredDecision};
use tracing::{Instrument, info, info_span};

use super::{Decided, Engine, HandoffRequest};
use crate::error::EngineError;

impl Engine {
    /// Steps 6–8: lock, replay or settle, commit. Without an assessment (the
    /// request id has a stored decision) the message is assessed only if
    /// the store no longer has it.
    pub(super) async fn locked(
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
            self.now(),
        );
        let locked = locking.instrument(info_span!("store.lock")).await;
        let waited = waiting.elapsed();
        self.metrics.lock_waited(waited);
        tracing::Span::current().record("baton.lock_wait_ms", waited.as_secs_f64() * 1000.0);
        let (lock, loaded) = match locked {
            Ok(locked) => locked,
            Err(StoreError::Busy(_)) => {
                let a = assessment.unwrap_or_else(|| self.assess_message(req));
                return Ok(Decided {
                    verdict: settle::busy(config, a),
                    replayed: false,
                });
            }
            Err(e) => return Err(e.into()),
        };
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
        let now = self.now();
        let request = Request {
            source,
            context: &req.context,
            request_id: &req.request_id,
        };
        let handoff_id = new_handoff_id(&req.contact_id);
        let settled = {
            let health = super::read(&self.health);
            let target_health = a.target.and_then(|t| health[t].as_ref());
            settle::settle(
                config,
                &a,
                request,
                loaded.contact,
                target_health,
                now,
                &handoff_id,
            )
        };
        let mut commit = Commit {
            contact_id: req.contact_id.clone(),
            contact: settled.contact,
            deferred: settled.deferred,
            ..Default::default()
        };
        let verdict = settled.verdict;
        if !req.request_id.is_empty() && settled.remember {
            let expires_at = now + baton_policy::ms(config.policy.decision_ttl);
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
    pub(super) async fn commit(&self, lock: ContactLock, commit: Commit) -> Result<(), StoreError> {
        let store = Arc::clone(&self.store);
        let task = async move { store.commit(lock, commit).await };
        tokio::spawn(task.in_current_span())
            .await
            .map_err(|e| StoreError::Unavailable(format!("commit task failed: {e}")))?
    }

    /// An operator hands the contact to bot `owner` and resets its chain.
    pub async fn release(
        &self,
        contact_id: &str,
        owner: BotIx,
        reason: &str,
    ) -> Result<String, EngineError> {
        let owner = self.policy.bot_id(owner);
        let config = self.policy.config();
        let locked = self
            .store
            .lock_and_load(contact_id, "", config.policy.lock_wait, self.now())
            .await;
        let (lock, loaded) = match locked {
            Err(StoreError::Busy(_)) => {
                return Err(EngineError::Busy(format!(
                    "contact '{contact_id}' is busy, retry"
                )));
            }
            other => other?,
        };
        let now = self.now();
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
        tracing::warn!(
            contact,
            ?pause,
            "test pause point: holding the contact lock"
        );
        tokio::time::sleep(pause).await;
    }
}

/// A new handoff id: time-ordered and unique, and carrying its contact
/// (`<uuid>:<contact id>`) so a store can find the handoff from its id alone
/// ([`baton_store::handoff_contact_id`]).
pub(super) fn new_handoff_id(contact_id: &str) -> String {
    format!("{}:{contact_id}", uuid::Uuid::now_v7())
}
