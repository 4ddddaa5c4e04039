//! The embedded store: one redb file under the router's data directory (or
//! redb's in-memory backend for tests and benchmarks), values as JSON, and
//! in-process contact locks. A single router owns the file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_policy::{ContactState, HealthReport, LearningConfig, Outcome, OutcomeWindow, UnixMs};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    Acknowledged, Commit, ContactLock, Loaded, LocalLocks, OutcomeRecorded, RouteKey, Store,
    StoreError, StoredDecision,
};

const CONTACTS: TableDefinition<&str, &[u8]> = TableDefinition::new("contacts");
/// Keyed `contact_id \0 request_id`: request ids are scoped to their contact.
const DECISIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("decisions");
/// Handoff id → contact id.
const HANDOFFS: TableDefinition<&str, &str> = TableDefinition::new("handoffs");
const OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");
const HEALTH: TableDefinition<&str, &[u8]> = TableDefinition::new("health");

pub struct EmbeddedStore {
    db: Arc<Database>,
    locks: LocalLocks,
    /// File-backed commits fsync, so they run off the async workers.
    blocking: bool,
}

fn io(e: impl Into<redb::Error>) -> StoreError {
    StoreError::unavailable(e.into())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain data structs to JSON cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { what, source })
}

fn decision_key(contact_id: &str, request_id: &str) -> String {
    format!("{contact_id}\0{request_id}")
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/baton.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("baton.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        Self::init(db, true)
    }

    /// A store that lives in memory only: for tests and benchmarks.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(io)?;
        Self::init(db, false)
    }

    fn init(db: Database, blocking: bool) -> Result<Self, StoreError> {
        let txn = db.begin_write().map_err(io)?;
        txn.open_table(CONTACTS).map_err(io)?;
        txn.open_table(DECISIONS).map_err(io)?;
        txn.open_table(HANDOFFS).map_err(io)?;
        txn.open_table(OUTCOMES).map_err(io)?;
        txn.open_table(HEALTH).map_err(io)?;
        txn.commit().map_err(io)?;
        Ok(Self {
            db: Arc::new(db),
            locks: LocalLocks::default(),
            blocking,
        })
    }

    /// Runs a write transaction, off the async workers when it will fsync.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let run = move || {
            let txn = db.begin_write().map_err(io)?;
            let out = f(&txn)?;
            txn.commit().map_err(io)?;
            Ok(out)
        };
        if self.blocking {
            tokio::task::spawn_blocking(run)
                .await
                .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
        } else {
            run()
        }
    }

    fn read_contact(&self, contact_id: &str) -> Result<Option<ContactState>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(CONTACTS).map_err(io)?;
        let found = table.get(contact_id).map_err(io)?;
        found.map(|v| decode("contact", v.value())).transpose()
    }
}

fn get_contact(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    contact_id: &str,
) -> Result<Option<ContactState>, StoreError> {
    let found = table.get(contact_id).map_err(io)?;
    found.map(|v| decode("contact", v.value())).transpose()
}

/// Finds a handoff's contact and runs `f` on its history entry, saving the contact.
fn update_entry<T>(
    txn: &redb::WriteTransaction,
    handoff_id: &str,
    f: impl FnOnce(&mut baton_policy::HistoryEntry) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let not_found = || StoreError::NotFound {
        what: "handoff",
        id: handoff_id.to_owned(),
    };
    let contact_id = {
        let handoffs = txn.open_table(HANDOFFS).map_err(io)?;
        let found = handoffs.get(handoff_id).map_err(io)?;
        found.map(|v| v.value().to_owned()).ok_or_else(not_found)?
    };
    let mut contacts = txn.open_table(CONTACTS).map_err(io)?;
    let mut contact = get_contact(&contacts, &contact_id)?.ok_or_else(not_found)?;
    let entry = contact.entry_mut(handoff_id).ok_or_else(not_found)?;
    let out = f(entry)?;
    contacts
        .insert(contact_id.as_str(), encode(&contact).as_slice())
        .map_err(io)?;
    Ok(out)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn lock(&self, contact_id: &str, wait: Duration) -> Result<ContactLock, StoreError> {
        self.locks.lock(contact_id, wait).await
    }

    async fn load(
        &self,
        lock: &ContactLock,
        request_id: &str,
        now: UnixMs,
    ) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let contact = get_contact(&txn.open_table(CONTACTS).map_err(io)?, &lock.contact_id)?;
        let mut prior = None;
        if !request_id.is_empty() {
            let decisions = txn.open_table(DECISIONS).map_err(io)?;
            let key = decision_key(&lock.contact_id, request_id);
            if let Some(v) = decisions.get(key.as_str()).map_err(io)? {
                let stored: StoredDecision = decode("decision", v.value())?;
                if stored.expires_at > now {
                    prior = Some(stored.verdict);
                }
            }
        }
        Ok(Loaded { contact, prior })
    }

    async fn commit(&self, lock: ContactLock, commit: Commit) -> Result<(), StoreError> {
        if lock.contact_id != commit.contact_id {
            return Err(StoreError::Fenced(commit.contact_id));
        }
        self.write(move |txn| {
            if let Some(contact) = &commit.contact {
                let mut t = txn.open_table(CONTACTS).map_err(io)?;
                t.insert(commit.contact_id.as_str(), encode(contact).as_slice())
                    .map_err(io)?;
            }
            if let Some((request_id, decision)) = &commit.decision {
                let mut t = txn.open_table(DECISIONS).map_err(io)?;
                let key = decision_key(&commit.contact_id, request_id);
                t.insert(key.as_str(), encode(decision).as_slice())
                    .map_err(io)?;
            }
            if let Some(handoff_id) = &commit.handoff_id {
                let mut t = txn.open_table(HANDOFFS).map_err(io)?;
                t.insert(handoff_id.as_str(), commit.contact_id.as_str())
                    .map_err(io)?;
            }
            Ok(())
        })
        .await?;
        drop(lock);
        Ok(())
    }

    async fn contact(&self, contact_id: &str) -> Result<Option<ContactState>, StoreError> {
        self.read_contact(contact_id)
    }

    async fn acknowledge(
        &self,
        handoff_id: &str,
        bot: &str,
        now: UnixMs,
    ) -> Result<Acknowledged, StoreError> {
        let (handoff_id, bot) = (handoff_id.to_owned(), bot.to_owned());
        self.write(move |txn| {
            update_entry(txn, &handoff_id, |entry| {
                if entry.to != bot {
                    return Err(StoreError::Conflict(format!(
                        "handoff '{handoff_id}' went to '{}', not '{bot}'",
                        entry.to
                    )));
                }
                Ok(match entry.acknowledged_at {
                    Some(at) => Acknowledged { at, first: false },
                    None => {
                        entry.acknowledged_at = Some(now);
                        Acknowledged {
                            at: now,
                            first: true,
                        }
                    }
                })
            })
        })
        .await
    }

    async fn record_outcome(
        &self,
        handoff_id: &str,
        outcome: Outcome,
        config: &LearningConfig,
    ) -> Result<OutcomeRecorded, StoreError> {
        let (handoff_id, config) = (handoff_id.to_owned(), config.clone());
        self.write(move |txn| {
            let (key, fresh) = update_entry(txn, &handoff_id, |entry| {
                let key = RouteKey {
                    source: entry.from.clone(),
                    target: entry.to.clone(),
                    pattern: entry.pattern.clone(),
                };
                let fresh = entry.outcome.is_none();
                if fresh {
                    entry.outcome = Some(outcome);
                }
                Ok((key, fresh))
            })?;
            let mut outcomes = txn.open_table(OUTCOMES).map_err(io)?;
            let encoded = key.encode();
            let mut window: OutcomeWindow = match outcomes.get(encoded.as_str()).map_err(io)? {
                Some(v) => decode("outcome window", v.value())?,
                None => OutcomeWindow::default(),
            };
            if fresh {
                window.record(outcome, &config);
                outcomes
                    .insert(encoded.as_str(), encode(&window).as_slice())
                    .map_err(io)?;
            }
            Ok(OutcomeRecorded {
                key,
                window,
                recorded: fresh,
            })
        })
        .await
    }

    async fn outcome_windows(&self) -> Result<Vec<(RouteKey, OutcomeWindow)>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(OUTCOMES).map_err(io)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            if let Some(key) = RouteKey::decode(k.value()) {
                out.push((key, decode("outcome window", v.value())?));
            }
        }
        Ok(out)
    }

    async fn put_health(&self, report: &HealthReport) -> Result<(), StoreError> {
        let report = report.clone();
        self.write(move |txn| {
            let mut t = txn.open_table(HEALTH).map_err(io)?;
            t.insert(report.bot.as_str(), encode(&report).as_slice())
                .map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn health_reports(&self) -> Result<Vec<HealthReport>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(HEALTH).map_err(io)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(io)? {
            let (_, v) = row.map_err(io)?;
            out.push(decode("health report", v.value())?);
        }
        Ok(out)
    }

    async fn purge_expired(&self, now: UnixMs) -> Result<usize, StoreError> {
        self.write(move |txn| {
            let mut t = txn.open_table(DECISIONS).map_err(io)?;
            let mut removed = 0;
            t.retain(|_, v| {
                let keep = serde_json::from_slice::<StoredDecision>(v)
                    .map(|d| d.expires_at > now)
                    .unwrap_or(false);
                removed += usize::from(!keep);
                keep
            })
            .map_err(io)?;
            Ok(removed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_policy::{Config, ContextPacket, Decision, EntryKind, Verdict};

    fn verdict() -> Verdict {
        Verdict {
            decision: Decision::Approved,
            target: "seller".into(),
            confidence: 0.9,
            threshold: 0.7,
            pattern: "sell my house".into(),
            reason: "ok".into(),
            gates: vec![],
            handoff_id: "h1".into(),
            retry_after_ms: 0,
            pending_intents: vec![],
            context: None,
        }
    }

    async fn approve(store: &EmbeddedStore, contact_id: &str, request_id: &str) {
        let config = Config::default();
        let lock = store
            .lock(contact_id, Duration::from_millis(100))
            .await
            .unwrap();
        let mut state = ContactState::new("lead", 1);
        let context = ContextPacket {
            timeline: Some("3 months".into()),
            ..Default::default()
        };
        state.hand_over(
            EntryKind::Handoff,
            "h1",
            "seller",
            "sell my house",
            0.9,
            "",
            context,
            &[],
            &config,
            1_000,
        );
        let commit = Commit {
            contact_id: contact_id.into(),
            contact: Some(state),
            decision: Some((
                request_id.into(),
                StoredDecision {
                    verdict: verdict(),
                    expires_at: 5_000,
                },
            )),
            handoff_id: Some("h1".into()),
        };
        store.commit(lock, commit).await.unwrap();
    }

    #[tokio::test]
    async fn everything_survives_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!("baton-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = EmbeddedStore::open(&dir).unwrap();
            approve(&store, "c1", "r1").await;
            store
                .record_outcome("h1", Outcome::Successful, &LearningConfig::default())
                .await
                .unwrap();
            let report = HealthReport {
                bot: "buyer".into(),
                p95_ms: 120.0,
                ..Default::default()
            };
            store.put_health(&report).await.unwrap();
        }
        let store = EmbeddedStore::open(&dir).unwrap();
        let c = store.contact("c1").await.unwrap().unwrap();
        assert_eq!(c.owner, "seller");
        assert_eq!(
            c.live_context(2_000).unwrap().timeline.as_deref(),
            Some("3 months")
        );
        assert_eq!(c.history[0].outcome, Some(Outcome::Successful));
        let windows = store.outcome_windows().await.unwrap();
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].0.encode(), "lead>seller\u{1f}sell my house");
        assert_eq!(windows[0].1.successes(), 1);
        assert_eq!(store.health_reports().await.unwrap()[0].p95_ms, 120.0);
        let lock = store.lock("c1", Duration::from_millis(10)).await.unwrap();
        assert_eq!(
            store.load(&lock, "r1", 2_000).await.unwrap().prior,
            Some(verdict())
        );
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn decisions_expire_and_are_purged() {
        let store = EmbeddedStore::in_memory().unwrap();
        approve(&store, "c1", "r1").await;
        let lock = store.lock("c1", Duration::from_millis(10)).await.unwrap();
        assert!(
            store
                .load(&lock, "r1", 4_999)
                .await
                .unwrap()
                .prior
                .is_some()
        );
        assert!(
            store
                .load(&lock, "r1", 5_000)
                .await
                .unwrap()
                .prior
                .is_none()
        );
        assert!(store.load(&lock, "other", 0).await.unwrap().prior.is_none());
        drop(lock);
        assert_eq!(store.purge_expired(5_000).await.unwrap(), 1);
        assert_eq!(store.purge_expired(5_000).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn outcomes_count_once_per_handoff_and_acks_check_the_target() {
        let store = EmbeddedStore::in_memory().unwrap();
        approve(&store, "c1", "r1").await;
        let config = LearningConfig::default();
        let first = store
            .record_outcome("h1", Outcome::Failed, &config)
            .await
            .unwrap();
        let again = store
            .record_outcome("h1", Outcome::Successful, &config)
            .await
            .unwrap();
        assert!(first.recorded && !again.recorded);
        assert_eq!((again.window.outcomes(), again.window.successes()), (1, 0));
        let missing = store.record_outcome("nope", Outcome::Failed, &config).await;
        assert!(matches!(missing, Err(StoreError::NotFound { .. })));
        assert!(matches!(
            store.acknowledge("h1", "buyer", 7).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            store.acknowledge("h1", "seller", 7).await.unwrap(),
            Acknowledged { at: 7, first: true }
        );
        assert_eq!(
            store.acknowledge("h1", "seller", 9).await.unwrap(),
            Acknowledged {
                at: 7,
                first: false
            }
        );
    }
}
