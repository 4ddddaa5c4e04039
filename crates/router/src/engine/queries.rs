//! Reads and updates of one contact outside the decision pipeline:
//! `GetContext`, `GetContact`, `AcknowledgeHandoff` and `RecordOutcome`,
//! and who may see what through them (SPEC §2.9, §6).
//!
//! A bot sees only its own contacts and handoffs. Anything else is refused
//! with `PERMISSION_DENIED` and one fixed message per RPC, the answer it
//! would get if the contact or handoff did not exist: naming neither the
//! owner nor whether it exists, and echoing none of the request. Operators
//! see everything and are told plainly what does not exist.

use baton_policy::{ContactState, HistoryEntry, Outcome};
use baton_store::{Acknowledged, RouteKey, StoreError, handoff_contact_id};
use tracing::info;

use super::{Engine, read};
use crate::error::EngineError;

/// Who asks about a contact or a handoff, and so what they may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer<'a> {
    /// An operator, or a caller of a router without tokens that names no
    /// bot (such a router is open to its loopback callers, SPEC §6).
    Operator,
    /// A bot, authenticated by its token or, without tokens, as named in
    /// the request.
    Bot(&'a str),
}

/// What a bot that may not read a contact is told, whether it exists or not.
pub const NOT_YOUR_CONTACT: &str =
    "the asking bot does not own this contact, or there is no such contact";
/// What a bot that may not acknowledge a handoff is told, whether it exists or not.
pub const NOT_YOUR_HANDOFF: &str =
    "the acknowledging bot is not this handoff's target, or there is no such handoff";
/// What a caller that may not record a handoff's outcome is told, whether it exists or not.
pub const NOT_YOUR_OUTCOME: &str = "only the handoff's source or target bot, or an operator, may record its outcome, or there is no such handoff";

impl Engine {
    /// The contact's state, for operators: `NOT_FOUND` when no handoff
    /// ever touched it.
    pub async fn contact(&self, contact_id: &str) -> Result<ContactState, EngineError> {
        self.store
            .contact(contact_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("contact '{contact_id}'")))
    }

    /// The contact for `GetContext`: a bot reads only a contact it owns.
    pub async fn context(
        &self,
        contact_id: &str,
        viewer: Viewer<'_>,
    ) -> Result<ContactState, EngineError> {
        let Viewer::Bot(bot) = viewer else {
            return self.contact(contact_id).await;
        };
        match self.store.contact(contact_id).await? {
            Some(contact) if contact.owner == bot => Ok(contact),
            _ => Err(EngineError::PermissionDenied(NOT_YOUR_CONTACT.into())),
        }
    }

    /// The handoff's history entry as stored now, if `handoff_id` names one.
    async fn handoff(&self, handoff_id: &str) -> Result<Option<HistoryEntry>, EngineError> {
        let Some(contact_id) = handoff_contact_id(handoff_id) else {
            return Ok(None);
        };
        let Some(contact) = self.store.contact(contact_id).await? else {
            return Ok(None);
        };
        Ok(contact
            .history
            .into_iter()
            .rev()
            .find(|e| !e.handoff_id.is_empty() && e.handoff_id == handoff_id))
    }

    /// Marks a handoff as taken by `bot`, which must be its target. The
    /// check reads the entry first: who a handoff went to never changes,
    /// so it still holds when the store writes.
    pub async fn acknowledge(
        &self,
        handoff_id: &str,
        bot: &str,
    ) -> Result<Acknowledged, EngineError> {
        let denied = || EngineError::PermissionDenied(NOT_YOUR_HANDOFF.into());
        let target = self.handoff(handoff_id).await?.is_some_and(|e| e.to == bot);
        if !target {
            return Err(denied());
        }
        match self.store.acknowledge(handoff_id, bot, self.now()).await {
            // Trimmed from the history since the check.
            Err(StoreError::NotFound { .. }) => Err(denied()),
            other => Ok(other?),
        }
    }

    /// Records an outcome and returns the route's threshold after it. Only
    /// the handoff's source or target bot, or an operator, may record it
    /// (anyone else would poison the route's learning); one outcome per
    /// handoff, later ones leave it as it was (`recorded` false).
    pub async fn record_outcome(
        &self,
        handoff_id: &str,
        outcome: Outcome,
        viewer: Viewer<'_>,
    ) -> Result<(RouteKey, f64, bool), EngineError> {
        let denied = || EngineError::PermissionDenied(NOT_YOUR_OUTCOME.into());
        let entry = self.handoff(handoff_id).await?;
        if let Viewer::Bot(bot) = viewer {
            let party = entry.as_ref().is_some_and(|e| e.from == bot || e.to == bot);
            if !party {
                info!(
                    bot,
                    "outcome refused: not a party to the handoff, or no such handoff"
                );
                return Err(denied());
            }
        }
        if let Some(e) = &entry {
            self.pattern_room(&e.from, &e.to, &e.pattern)?;
        }
        let recorded = match self
            .store
            .record_outcome(handoff_id, outcome, &self.policy.config().learning)
            .await
        {
            // Trimmed from the history since the check.
            Err(StoreError::NotFound { .. }) if viewer != Viewer::Operator => return Err(denied()),
            other => other?,
        };
        let threshold = self.learn(&recorded.key, recorded.window);
        if recorded.recorded {
            self.metrics
                .outcome(outcome_name(outcome), recorded.key.route());
        }
        info!(handoff = handoff_id, route = %recorded.key.route(), pattern = %recorded.key.pattern, threshold, "outcome recorded");
        Ok((recorded.key, threshold, recorded.recorded))
    }
}

impl Engine {
    /// Refuses an outcome that would make `source>target` learn from one
    /// more distinct pattern than `learning.max_patterns_per_route`.
    fn pattern_room(&self, source: &str, target: &str, pattern: &str) -> Result<(), EngineError> {
        let (Some(s), Some(t)) = (self.policy.bot_ix(source), self.policy.bot_ix(target)) else {
            return Ok(());
        };
        let cap = self.policy.config().learning.max_patterns_per_route;
        let learned = read(&self.learned);
        let patterns = &learned.routes[s * learned.bots + t];
        if patterns.len() < cap || patterns.contains_key(pattern) {
            return Ok(());
        }
        Err(EngineError::Exhausted(format!(
            "route '{source}>{target}' already learns from {cap} patterns \
             (learning.max_patterns_per_route); outcomes for a new pattern are refused"
        )))
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Successful => "SUCCESSFUL",
        Outcome::Failed => "FAILED",
        Outcome::Reverted => "REVERTED",
        Outcome::Timeout => "TIMEOUT",
    }
}
