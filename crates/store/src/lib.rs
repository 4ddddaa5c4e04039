//! Where Baton keeps what must survive: contact state and context packets,
//! decisions by request id, outcome statistics and the latest bot health.
//!
//! The router talks to one small trait, [`Store`]. Every write a handoff
//! makes goes through [`Store::commit`] under a [`ContactLock`], whose fencing
//! token lets a backend refuse a writer that lost its lock.

#![forbid(unsafe_code)]

mod batch;
mod embedded;
mod error;
pub mod etcd;
mod file;
mod journal;
mod locks;
mod overlay;
mod pending;
mod sync;
mod tables;

use std::time::Duration;

use async_trait::async_trait;
use baton_policy::{
    ContactState, HealthReport, HistoryEntry, LearningConfig, Outcome, OutcomeWindow, UnixMs,
    Verdict,
};
use serde::{Deserialize, Serialize};

pub use batch::{Batching, Checkpoints};
pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use error::StoreError;
pub use etcd::{EtcdBatching, EtcdOptions, EtcdStore};
pub use file::{CheckReport, Integrity, check};
pub use locks::{ContactLock, LocalLocks};

/// The system clock in Unix milliseconds, for what a store stamps itself.
pub(crate) fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, baton_policy::ms)
}

/// A route and the pattern that triggered it: the key learning is kept under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RouteKey {
    pub source: String,
    pub target: String,
    pub pattern: String,
}

impl RouteKey {
    /// `source>target` for display.
    pub fn route(&self) -> String {
        format!("{}>{}", self.source, self.target)
    }

    /// A storage key: `source>target` and the pattern, separated by a unit separator.
    pub fn encode(&self) -> String {
        format!("{}>{}\u{1f}{}", self.source, self.target, self.pattern)
    }

    pub fn decode(key: &str) -> Option<Self> {
        let (route, pattern) = key.split_once('\u{1f}')?;
        let (source, target) = route.split_once('>')?;
        Some(Self {
            source: source.to_owned(),
            target: target.to_owned(),
            pattern: pattern.to_owned(),
        })
    }
}

/// The contact a handoff id names: ids are `<unique id>:<contact id>`, so
/// a store finds a handoff's contact from the id alone, with no index.
pub fn handoff_contact_id(handoff_id: &str) -> Option<&str> {
    handoff_id.split_once(':').map(|(_, contact)| contact)
}

/// The key a decision is remembered under, within its contact: request ids
/// are scoped to (contact, source bot), so two bots that happen to send the
/// same id for one contact never see each other's decision. Stores pass it
/// through as an opaque request id (bot ids never contain `\0`).
pub fn request_key(source: &str, request_id: &str) -> String {
    format!("{source}\0{request_id}")
}

/// A decision remembered by request id until `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDecision {
    pub verdict: Verdict,
    pub expires_at: UnixMs,
}

/// What a locked request reads, in one round trip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub contact: Option<ContactState>,
    /// The earlier decision for the same request id, if any and not expired.
    pub prior: Option<Verdict>,
}

/// Everything one locked decision writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub contact_id: String,
    /// The new contact state, when the decision changed it.
    pub contact: Option<ContactState>,
    /// `(request_id, decision)` to remember.
    pub decision: Option<(String, StoredDecision)>,
    /// Changes to the index of pending deferred handoffs.
    pub deferred: Option<DeferredChange>,
    /// What this decision tells watchers, for the routers that share the
    /// store with this one (opaque to the store; ignored by a store only
    /// this process writes).
    pub published: Option<Vec<u8>>,
}

/// Changes to the index of contacts with a pending deferred handoff, by
/// target bot (the policy decides them, the store applies them).
pub use baton_policy::DeferredChange;

/// The result of recording an outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeRecorded {
    pub key: RouteKey,
    pub window: OutcomeWindow,
    /// False when the handoff already had an outcome (nothing changed).
    pub recorded: bool,
}

/// The result of acknowledging a handoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acknowledged {
    pub at: UnixMs,
    pub first: bool,
}

/// Acknowledges a handoff's history entry, as its target `bot`, once;
/// returns whether the entry changed.
pub(crate) fn acknowledge_entry(
    entry: &mut HistoryEntry,
    bot: &str,
    now: UnixMs,
) -> Result<(Acknowledged, bool), StoreError> {
    if entry.to != bot {
        return Err(StoreError::Conflict(format!(
            "handoff '{}' went to '{}', not '{bot}'",
            entry.handoff_id, entry.to
        )));
    }
    Ok(match entry.acknowledged_at {
        Some(at) => (Acknowledged { at, first: false }, false),
        None => {
            entry.acknowledged_at = Some(now);
            (
                Acknowledged {
                    at: now,
                    first: true,
                },
                true,
            )
        }
    })
}

/// Sets a handoff's outcome if it has none yet; returns its route and
/// whether it was set.
pub(crate) fn outcome_entry(entry: &mut HistoryEntry, outcome: Outcome) -> (RouteKey, bool) {
    let key = RouteKey {
        source: entry.from.clone(),
        target: entry.to.clone(),
        pattern: entry.pattern.clone(),
    };
    let fresh = entry.outcome.is_none();
    if fresh {
        entry.outcome = Some(outcome);
    }
    (key, fresh)
}

/// A change another router made to state every router caches.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreEvent {
    Health(HealthReport),
    /// The bot's report expired in the store: it went silent.
    HealthExpired(String),
    Outcomes(RouteKey, OutcomeWindow),
    /// A decision another router published through its commit
    /// ([`Commit::published`]), as that router wrote it; each arrives once.
    Published(Vec<u8>),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Takes the contact's lock, waiting at most `wait` ([`StoreError::Busy`] then).
    async fn lock(&self, contact_id: &str, wait: Duration) -> Result<ContactLock, StoreError>;

    /// The contact's state and the decision stored under `request_id`.
    async fn load(
        &self,
        lock: &ContactLock,
        request_id: &str,
        now: UnixMs,
    ) -> Result<Loaded, StoreError>;

    /// [`lock`](Self::lock), then [`load`](Self::load): what a decision
    /// needs before its gates. A backend that can read in the same round
    /// trip as it takes the lock (etcd: in the acquire transaction) does.
    async fn lock_and_load(
        &self,
        contact_id: &str,
        request_id: &str,
        wait: Duration,
        now: UnixMs,
    ) -> Result<(ContactLock, Loaded), StoreError> {
        let lock = self.lock(contact_id, wait).await?;
        let loaded = self.load(&lock, request_id, now).await?;
        Ok((lock, loaded))
    }

    /// Writes `commit` atomically, fenced by `lock`, and releases the lock.
    async fn commit(&self, lock: ContactLock, commit: Commit) -> Result<(), StoreError>;

    /// A contact's state, read without the lock (operators, `GetContext`).
    async fn contact(&self, contact_id: &str) -> Result<Option<ContactState>, StoreError>;

    /// Marks a handoff as taken by its target.
    async fn acknowledge(
        &self,
        handoff_id: &str,
        bot: &str,
        now: UnixMs,
    ) -> Result<Acknowledged, StoreError>;

    /// Records how a handoff went, once, and updates its route's window.
    async fn record_outcome(
        &self,
        handoff_id: &str,
        outcome: Outcome,
        config: &LearningConfig,
    ) -> Result<OutcomeRecorded, StoreError>;

    /// Every outcome window, to rebuild the learned thresholds at start-up.
    async fn outcome_windows(&self) -> Result<Vec<(RouteKey, OutcomeWindow)>, StoreError>;

    /// Keeps the latest report of a bot. It is also the bot's last-seen
    /// record, which never expires: a bot that reported once and went
    /// silent stays known as such, to every router sharing the store,
    /// however recently started (SPEC §4).
    async fn put_health(&self, report: &HealthReport) -> Result<(), StoreError>;

    /// The latest report of every bot that ever reported, silent ones
    /// included (their `received_at` makes them stale).
    async fn health_reports(&self) -> Result<Vec<HealthReport>, StoreError>;

    /// Contacts with a pending deferred handoff and the bot each waits for.
    async fn deferred(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Deletes remembered decisions that expired; returns how many.
    async fn purge_expired(&self, now: UnixMs) -> Result<usize, StoreError>;

    /// Ends this process's hold on the store, after the drain: with etcd,
    /// revokes the session lease, so whatever is still attached to it (a
    /// lock whose release failed, one taken by a call the grace period cut
    /// off) is released at once rather than after `session_ttl`. Nothing
    /// can be locked or committed through the store afterwards.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Changes made through other routers, for a store shared by several;
    /// `None` for a store only this process writes.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        None
    }
}
