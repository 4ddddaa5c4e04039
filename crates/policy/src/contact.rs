//! A contact's stored state: who owns it, its handoff history (what the loop,
//! depth and rate gates read) and its context packet.

use serde::{Deserialize, Serialize};

use crate::config::{Config, HUMAN};
use crate::context::ContextPacket;
use crate::learning::Outcome;
use crate::{UnixMs, ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// An approved bot-to-bot handoff.
    Handoff,
    /// The contact went to a human (trigger or depth limit).
    Escalation,
    /// An operator handed the contact back; resets the chain.
    Release,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Handoff => "HANDOFF",
            EntryKind::Escalation => "ESCALATION",
            EntryKind::Release => "RELEASE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub kind: EntryKind,
    pub handoff_id: String,
    pub from: String,
    pub to: String,
    pub pattern: String,
    pub confidence: f64,
    pub at: UnixMs,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<UnixMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// When the outcome was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_at: Option<UnixMs>,
}

/// Where a deferred handoff stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeferralStatus {
    /// Waiting for the target to recover.
    Pending,
    /// Retried and approved.
    Completed,
    /// The target did not recover within `health.defer_window`.
    Expired,
    /// Retried `health.defer_max_tries` times, or a gate other than health refused it.
    Abandoned,
}

impl DeferralStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeferralStatus::Pending => "PENDING",
            DeferralStatus::Completed => "COMPLETED",
            DeferralStatus::Expired => "EXPIRED",
            DeferralStatus::Abandoned => "ABANDONED",
        }
    }
}

/// A handoff refused only because its target was unhealthy, kept so the
/// router can complete it when the target recovers (SPEC §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deferral {
    pub source: String,
    pub target: String,
    pub pattern: String,
    pub confidence: f64,
    pub threshold: f64,
    pub pending: Vec<String>,
    pub context: ContextPacket,
    pub request_id: String,
    pub deferred_at: UnixMs,
    pub tries: u32,
    pub status: DeferralStatus,
    pub handoff_id: String,
    pub detail: String,
}

impl Deferral {
    pub fn is_pending(&self) -> bool {
        self.status == DeferralStatus::Pending
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactState {
    /// A bot id, or [`HUMAN`].
    pub owner: String,
    pub owner_since: UnixMs,
    /// Oldest first, at most `policy.history_limit` entries.
    pub history: Vec<HistoryEntry>,
    pub context: ContextPacket,
    pub context_expires_at: UnixMs,
    pub last_handoff_id: String,
    /// The latest deferred handoff, and how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferral: Option<Deferral>,
}

impl ContactState {
    /// A contact nobody handed off yet belongs to the first bot that asks.
    pub fn new(owner: &str, now: UnixMs) -> Self {
        Self {
            owner: owner.to_owned(),
            owner_since: now,
            history: Vec::new(),
            context: ContextPacket::default(),
            context_expires_at: 0,
            last_handoff_id: String::new(),
            deferral: None,
        }
    }

    /// The last time anything happened to the contact that the store
    /// keeps: a change of owner, a handoff, its acknowledgement or outcome,
    /// a deferral. Retention counts idleness from here.
    pub fn last_active(&self) -> UnixMs {
        let history = self.history.iter().flat_map(|e| {
            [Some(e.at), e.acknowledged_at, e.outcome_at]
                .into_iter()
                .flatten()
        });
        let deferral = self.deferral.as_ref().map(|d| d.deferred_at);
        history.chain(deferral).fold(self.owner_since, UnixMs::max)
    }

    pub fn with_human(&self) -> bool {
        self.owner == HUMAN
    }

    /// The context packet while it has not expired.
    pub fn live_context(&self, now: UnixMs) -> Option<&ContextPacket> {
        (now < self.context_expires_at).then_some(&self.context)
    }

    /// Approved bot-to-bot handoffs in the active chain: the newest handoffs
    /// each less than `chain_gap` after the one before (and before `now`),
    /// counting back to the last operator release.
    pub fn chain_depth(&self, config: &Config, now: UnixMs) -> u32 {
        let gap = ms(config.policy.chain_gap);
        let mut depth = 0;
        let mut next = now;
        for entry in self.history.iter().rev() {
            match entry.kind {
                EntryKind::Release => break,
                EntryKind::Escalation => continue,
                EntryKind::Handoff => {
                    if next - entry.at >= gap {
                        break;
                    }
                    depth += 1;
                    next = entry.at;
                }
            }
        }
        depth
    }

    /// Approved handoffs after `since`, newest last.
    pub fn handoffs_after(&self, since: UnixMs) -> impl Iterator<Item = &HistoryEntry> {
        self.history
            .iter()
            .filter(move |e| e.kind == EntryKind::Handoff && e.at > since)
    }

    fn push(&mut self, entry: HistoryEntry, config: &Config) {
        self.history.push(entry);
        let extra = self
            .history
            .len()
            .saturating_sub(config.policy.history_limit);
        self.history.drain(..extra);
    }

    /// Moves the contact to `to` and merges the request's context into the packet.
    #[allow(clippy::too_many_arguments)]
    pub fn hand_over(
        &mut self,
        kind: EntryKind,
        handoff_id: &str,
        to: &str,
        pattern: &str,
        confidence: f64,
        reason: &str,
        context: ContextPacket,
        pending: &[String],
        config: &Config,
        now: UnixMs,
    ) {
        let mut packet = self.live_context(now).cloned().unwrap_or_default();
        packet.merge(context);
        for intent in pending {
            crate::context::push_unique(&mut packet.pending_intents, intent.clone());
        }
        // The bot that takes the contact serves its own intent.
        packet.pending_intents.retain(|i| i != to);
        let entry = HistoryEntry {
            kind,
            handoff_id: handoff_id.to_owned(),
            from: self.owner.clone(),
            to: to.to_owned(),
            pattern: pattern.to_owned(),
            confidence,
            at: now,
            reason: reason.to_owned(),
            acknowledged_at: None,
            outcome: None,
            outcome_at: None,
        };
        self.push(entry, config);
        self.owner = to.to_owned();
        self.owner_since = now;
        self.context = packet;
        self.context_expires_at = now + ms(config.policy.context_ttl);
        self.last_handoff_id = handoff_id.to_owned();
    }

    /// An operator gives the contact to `owner` and resets its chain.
    pub fn release(&mut self, owner: &str, reason: &str, config: &Config, now: UnixMs) {
        let entry = HistoryEntry {
            kind: EntryKind::Release,
            handoff_id: String::new(),
            from: self.owner.clone(),
            to: owner.to_owned(),
            pattern: String::new(),
            confidence: 0.0,
            at: now,
            reason: reason.to_owned(),
            acknowledged_at: None,
            outcome: None,
            outcome_at: None,
        };
        self.push(entry, config);
        self.owner = owner.to_owned();
        self.owner_since = now;
    }

    pub fn entry_mut(&mut self, handoff_id: &str) -> Option<&mut HistoryEntry> {
        self.history
            .iter_mut()
            .rev()
            .find(|e| e.handoff_id == handoff_id)
    }
}
