//! The embedded store: one redb file under the router's data directory, or
//! plain maps in memory for tests and benchmarks; in-process contact locks.
//! A single router owns it. The operations themselves live in [`tables`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use baton_policy::{ContactState, HealthReport, LearningConfig, Outcome, OutcomeWindow, UnixMs};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::tables::{self, Read, Table, Write};
use crate::{
    Acknowledged, Commit, ContactLock, Loaded, LocalLocks, OutcomeRecorded, RouteKey, Store,
    StoreError,
};

fn io(e: impl Into<redb::Error>) -> StoreError {
    StoreError::unavailable(e.into())
}

fn definition(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

fn table_get(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
}

fn table_scan(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    for row in t.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        out.push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

struct RedbRead(redb::ReadTransaction);

impl Read for RedbRead {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        table_get(&self.0.open_table(definition(table)).map_err(io)?, key)
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        table_scan(&self.0.open_table(definition(table)).map_err(io)?)
    }
}

struct RedbWrite<'a>(&'a redb::WriteTransaction);

impl Read for RedbWrite<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        table_get(&self.0.open_table(definition(table)).map_err(io)?, key)
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        table_scan(&self.0.open_table(definition(table)).map_err(io)?)
    }
}

impl Write for RedbWrite<'_> {
    fn put(&mut self, table: Table, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let mut t = self.0.open_table(definition(table)).map_err(io)?;
        t.insert(key, value.as_slice()).map_err(io)?;
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        let mut t = self.0.open_table(definition(table)).map_err(io)?;
        t.remove(key).map_err(io)?;
        Ok(())
    }
}

/// One hash map per table.
#[derive(Default)]
struct Maps([HashMap<String, Vec<u8>>; Table::ALL.len()]);

impl Maps {
    fn table(&mut self, table: Table) -> &mut HashMap<String, Vec<u8>> {
        &mut self.0[table as usize]
    }
}

/// A write on the in-memory maps: changes are staged and applied together,
/// so an operation that fails halfway leaves nothing behind.
struct MemWrite<'a> {
    maps: &'a mut Maps,
    staged: Vec<(Table, String, Option<Vec<u8>>)>,
}

impl Read for Maps {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0[table as usize].get(key).cloned())
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut rows: Vec<_> = self.0[table as usize]
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        rows.sort();
        Ok(rows)
    }
}

impl Read for MemWrite<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let staged = self
            .staged
            .iter()
            .rev()
            .find(|(t, k, _)| *t == table && k == key);
        match staged {
            Some((_, _, value)) => Ok(value.clone()),
            None => Read::get(&*self.maps, table, key),
        }
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut rows: BTreeMap<String, Vec<u8>> = self.maps.scan(table)?.into_iter().collect();
        for (t, k, v) in &self.staged {
            if *t == table {
                match v {
                    Some(v) => rows.insert(k.clone(), v.clone()),
                    None => rows.remove(k),
                };
            }
        }
        Ok(rows.into_iter().collect())
    }
}

impl Write for MemWrite<'_> {
    fn put(&mut self, table: Table, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.staged.push((table, key.to_owned(), Some(value)));
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        self.staged.push((table, key.to_owned(), None));
        Ok(())
    }
}

enum Backend {
    File(Arc<Database>),
    Memory(Arc<Mutex<Maps>>),
}

pub struct EmbeddedStore {
    backend: Backend,
    locks: LocalLocks,
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
        let txn = db.begin_write().map_err(io)?;
        for table in Table::ALL {
            txn.open_table(definition(table)).map_err(io)?;
        }
        txn.commit().map_err(io)?;
        Ok(Self {
            backend: Backend::File(Arc::new(db)),
            locks: LocalLocks::default(),
        })
    }

    /// A store that lives in memory only: for tests, demos and benchmarks.
    pub fn in_memory() -> Self {
        Self {
            backend: Backend::Memory(Arc::default()),
            locks: LocalLocks::default(),
        }
    }

    /// Takes the lock of a handoff's contact, for a write that changes the
    /// contact outside a decision (an acknowledgement, an outcome). A
    /// decision loads the contact under this lock and commits it whole;
    /// without the lock such a write could land in between and be
    /// overwritten (the ack lost, the outcome counted again on a resend).
    ///
    /// The wait is not bounded by `lock_wait`: that bound answers a bot
    /// `CONTACT_BUSY` quickly, while an ack should rather wait its turn. A
    /// local lock is only held for one decision's load, gates and commit,
    /// and a commit always runs to its end, so the wait is short. An
    /// unknown handoff takes no lock (the write then finds nothing).
    async fn lock_handoff(&self, handoff_id: &str) -> Result<Option<ContactLock>, StoreError> {
        let Some(contact_id) = self.read(|r| tables::handoff_contact(r, handoff_id))? else {
            return Ok(None);
        };
        Ok(Some(self.locks.lock(&contact_id, Duration::MAX).await?))
    }

    fn read<T>(&self, f: impl FnOnce(&dyn Read) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match &self.backend {
            Backend::File(db) => f(&RedbRead(db.begin_read().map_err(io)?)),
            Backend::Memory(maps) => f(&*maps.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// Runs `f` in one write transaction. File commits fsync, so they run
    /// off the async workers.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Write) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.backend {
            Backend::File(db) => {
                let db = Arc::clone(db);
                let run = move || {
                    let txn = db.begin_write().map_err(io)?;
                    let out = f(&mut RedbWrite(&txn))?;
                    txn.commit().map_err(io)?;
                    Ok(out)
                };
                tokio::task::spawn_blocking(run)
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
            }
            Backend::Memory(maps) => {
                let mut maps = maps.lock().unwrap_or_else(|p| p.into_inner());
                let mut txn = MemWrite {
                    maps: &mut maps,
                    staged: Vec::new(),
                };
                let out = f(&mut txn)?;
                for (table, key, value) in std::mem::take(&mut txn.staged) {
                    match value {
                        Some(v) => txn.maps.table(table).insert(key, v),
                        None => txn.maps.table(table).remove(&key),
                    };
                }
                Ok(out)
            }
        }
    }
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
        self.read(|r| tables::load(r, &lock.contact_id, request_id, now))
    }

    async fn commit(&self, lock: ContactLock, commit: Commit) -> Result<(), StoreError> {
        if lock.contact_id != commit.contact_id {
            return Err(StoreError::Fenced(commit.contact_id));
        }
        self.write(move |w| tables::commit(w, &commit)).await?;
        drop(lock);
        Ok(())
    }

    async fn contact(&self, contact_id: &str) -> Result<Option<ContactState>, StoreError> {
        self.read(|r| tables::contact(r, contact_id))
    }

    async fn acknowledge(
        &self,
        handoff_id: &str,
        bot: &str,
        now: UnixMs,
    ) -> Result<Acknowledged, StoreError> {
        let _lock = self.lock_handoff(handoff_id).await?;
        let (handoff_id, bot) = (handoff_id.to_owned(), bot.to_owned());
        self.write(move |w| tables::acknowledge(w, &handoff_id, &bot, now))
            .await
    }

    async fn record_outcome(
        &self,
        handoff_id: &str,
        outcome: Outcome,
        config: &LearningConfig,
    ) -> Result<OutcomeRecorded, StoreError> {
        let _lock = self.lock_handoff(handoff_id).await?;
        let (handoff_id, config) = (handoff_id.to_owned(), config.clone());
        self.write(move |w| tables::record_outcome(w, &handoff_id, outcome, &config))
            .await
    }

    async fn outcome_windows(&self) -> Result<Vec<(RouteKey, OutcomeWindow)>, StoreError> {
        self.read(|r| tables::outcome_windows(r))
    }

    async fn put_health(&self, report: &HealthReport) -> Result<(), StoreError> {
        let report = report.clone();
        self.write(move |w| tables::put_health(w, &report)).await
    }

    async fn health_reports(&self) -> Result<Vec<HealthReport>, StoreError> {
        self.read(|r| tables::health_reports(r))
    }

    async fn deferred(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(tables::deferred)
    }

    async fn purge_expired(&self, now: UnixMs) -> Result<usize, StoreError> {
        self.write(move |w| tables::purge_expired(w, now)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoredDecision;
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
            deferred: None,
        };
        store.commit(lock, commit).await.unwrap();
    }

    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(label: &str) -> TempDir {
        TempDir(std::env::temp_dir().join(format!("baton-store-{label}-{}", std::process::id())))
    }

    /// Both backends, fresh.
    fn backends(label: &str) -> (TempDir, [EmbeddedStore; 2]) {
        let dir = temp_dir(label);
        let file = EmbeddedStore::open(&dir.0).unwrap();
        (dir, [file, EmbeddedStore::in_memory()])
    }

    /// A bot's last report is its last-seen record: purging expired data
    /// never removes it, however old, so a silent bot stays known as one
    /// that reported (and is judged stale), not as one that never did.
    #[tokio::test]
    async fn a_silent_bots_last_report_is_never_purged() {
        let store = EmbeddedStore::in_memory();
        let report = HealthReport {
            bot: "buyer".into(),
            sample_count: 100,
            received_at: 1_000,
            ..Default::default()
        };
        store.put_health(&report).await.unwrap();
        store.purge_expired(i64::MAX).await.unwrap();
        assert_eq!(store.health_reports().await.unwrap(), vec![report]);
    }

    #[tokio::test]
    async fn everything_survives_reopening_the_file() {
        let dir = temp_dir("reopen");
        {
            let store = EmbeddedStore::open(&dir.0).unwrap();
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
        let store = EmbeddedStore::open(&dir.0).unwrap();
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
    }

    #[tokio::test]
    async fn decisions_expire_and_are_purged() {
        let (_dir, stores) = backends("purge");
        for store in stores {
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
    }

    #[tokio::test]
    async fn outcomes_count_once_per_handoff_and_acks_check_the_target() {
        let (_dir, stores) = backends("outcomes");
        for store in stores {
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

    #[tokio::test]
    async fn a_failed_memory_write_leaves_nothing_behind() {
        let store = EmbeddedStore::in_memory();
        let err = store
            .write(|w| {
                w.put(Table::Health, "buyer", b"{}".to_vec())?;
                Err::<(), _>(StoreError::Conflict("halfway".into()))
            })
            .await;
        assert!(err.is_err());
        assert!(store.health_reports().await.unwrap().is_empty());
    }
}
