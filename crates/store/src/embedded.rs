//! The embedded store: one redb file under the router's data directory, or
//! plain maps in memory for tests and benchmarks; in-process contact locks.
//! A single router owns it. The operations themselves live in [`tables`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use baton_policy::{ContactState, HealthReport, LearningConfig, Outcome, OutcomeWindow, UnixMs};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::batch::{self, Batching, Checkpoints, Durability, Failure, Staged, Writer};
use crate::journal::{Journal, Replay};
use crate::pending::Pending;
use crate::sync::Syncs;
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

fn table_range(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    from: &str,
    to: &str,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    for row in t.range(from..to).map_err(io)?.take(limit) {
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

    fn range(
        &self,
        table: Table,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        table_range(
            &self.0.open_table(definition(table)).map_err(io)?,
            from,
            to,
            limit,
        )
    }
}

type RedbTable<'a> = redb::Table<'a, &'static str, &'static [u8]>;

/// The store's view of a redb write transaction. Each table is opened once
/// per transaction, at first use, and stays open until the view is dropped
/// (which must happen before the transaction commits).
pub(crate) struct RedbWrite<'a> {
    txn: &'a redb::WriteTransaction,
    open: RefCell<[Option<RedbTable<'a>>; Table::ALL.len()]>,
}

impl<'a> RedbWrite<'a> {
    pub(crate) fn new(txn: &'a redb::WriteTransaction) -> Self {
        Self {
            txn,
            open: RefCell::new(Default::default()),
        }
    }

    fn with<T>(
        &self,
        table: Table,
        f: impl FnOnce(&mut RedbTable<'a>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut open = self.open.borrow_mut();
        let slot = &mut open[table as usize];
        match slot {
            Some(t) => f(t),
            None => f(slot.insert(self.txn.open_table(definition(table)).map_err(io)?)),
        }
    }
}

impl Read for RedbWrite<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(table, |t| table_get(t, key))
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with(table, |t| table_scan(t))
    }

    fn range(
        &self,
        table: Table,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with(table, |t| table_range(t, from, to, limit))
    }
}

impl RedbWrite<'_> {
    /// Applies staged rows, in order, without copying their values.
    pub(crate) fn apply(&mut self, rows: &[batch::Row]) -> Result<(), StoreError> {
        for (table, key, value) in rows {
            self.with(*table, |t| {
                match value {
                    Some(value) => t.insert(key.as_str(), value.as_slice()).map_err(io)?,
                    None => t.remove(key.as_str()).map_err(io)?,
                };
                Ok(())
            })?;
        }
        Ok(())
    }
}

impl Write for RedbWrite<'_> {
    fn put(&mut self, table: Table, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.with(table, |t| {
            t.insert(key, value.as_slice()).map_err(io)?;
            Ok(())
        })
    }

    fn remove(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        self.with(table, |t| {
            t.remove(key).map_err(io)?;
            Ok(())
        })
    }
}

/// One ordered map per table.
#[derive(Default)]
struct Maps([BTreeMap<String, Vec<u8>>; Table::ALL.len()]);

impl Write for Maps {
    fn put(&mut self, table: Table, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.0[table as usize].insert(key.to_owned(), value);
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        self.0[table as usize].remove(key);
        Ok(())
    }
}

impl Read for Maps {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0[table as usize].get(key).cloned())
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self.0[table as usize]
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn range(
        &self,
        table: Table,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        Ok(self.0[table as usize]
            .range::<str, _>((
                std::ops::Bound::Included(from),
                std::ops::Bound::Excluded(to),
            ))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

enum Backend {
    /// Reads open their own transaction; writes go through the group
    /// committer.
    File {
        db: Arc<Database>,
        writer: Writer,
        /// Set when the store stopped after a failed journal sync.
        failure: Arc<Failure>,
        /// Rows written but not yet committed to redb.
        pending: Arc<Pending>,
    },
    Memory(Arc<Mutex<Maps>>),
}

/// Where the store reads the time it records activity at.
pub type Clock = Arc<dyn Fn() -> UnixMs + Send + Sync>;

pub struct EmbeddedStore {
    backend: Backend,
    locks: LocalLocks,
    retention: Duration,
    clock: Clock,
    replayed: usize,
}

/// How the embedded store batches and keeps what it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Group commit bounds (file store only).
    pub batching: Batching,
    /// How often a redb commit is made durable (file store only).
    pub checkpoints: Checkpoints,
    /// A contact with no write (decision, acknowledgement, outcome) for
    /// this long is deleted with its index entries and stored decisions.
    pub retention: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            batching: Batching::default(),
            checkpoints: Checkpoints::default(),
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Expiry-index entries handled in one write.
const PURGE_SLICE: usize = 512;

impl EmbeddedStore {
    /// The store's clock and retention, for a write about to be queued.
    fn keep(&self) -> tables::Keep {
        tables::Keep {
            now: (self.clock)(),
            retention: i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Opens (or creates) `dir/baton.redb` with the default options.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, EmbeddedOptions::default())
    }

    /// Opens (or creates) `dir/baton.redb` and its journal, putting back
    /// into redb whatever the journal holds that it may not.
    pub fn open_with(dir: &Path, options: EmbeddedOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join(crate::file::FILE_NAME);
        // The journal first: one that cannot be read stops the open before
        // redb touches its file.
        let (journal, replay) = Journal::open(dir)?;
        let (db, syncs) = crate::file::open_database(&path, false)?;
        Self::from_database(db, syncs, journal, replay, options)
    }

    /// The store over an open redb database and its journal: replays the
    /// journal, creates the tables and starts the writer.
    fn from_database(
        db: Database,
        syncs: Arc<Syncs>,
        mut journal: Journal,
        replay: Replay,
        options: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        let replayed = replay.records.len();
        let txn = db.begin_write().map_err(io)?;
        {
            let mut view = RedbWrite::new(&txn);
            for rows in &replay.records {
                view.apply(rows)?;
            }
        }
        for table in Table::ALL {
            txn.open_table(definition(table)).map_err(io)?;
        }
        txn.commit().map_err(io)?;
        syncs.settle().map_err(StoreError::Unavailable)?;
        journal.reset()?;
        if replayed > 0 {
            tracing::warn!(
                records = replayed,
                "store was not shut down cleanly: its journal was replayed"
            );
        }
        let db = Arc::new(db);
        let failure = Arc::new(Failure::default());
        let pending = Arc::new(Pending::default());
        let durability = Durability {
            journal,
            syncs,
            checkpoints: options.checkpoints,
            failure: Arc::clone(&failure),
            pending: Arc::clone(&pending),
        };
        let writer = Writer::start(Arc::clone(&db), options.batching, durability)?;
        let store = Self {
            backend: Backend::File {
                db,
                writer,
                failure,
                pending,
            },
            locks: LocalLocks::default(),
            retention: options.retention,
            clock: Arc::new(crate::now_ms),
            replayed,
        };
        let keep = store.keep();
        let indexed = store.write_now(move |w| tables::index_untracked(w, keep))?;
        if indexed > 0 {
            tracing::info!(
                contacts = indexed,
                "contacts from an older store indexed for retention"
            );
        }
        Ok(store)
    }

    /// Journal records the open put back into redb (0 after a clean
    /// shutdown, and in memory).
    pub fn replayed(&self) -> usize {
        self.replayed
    }

    /// Write transactions the file store committed so far (each one
    /// journal sync, however many writes its batch held); 0 in memory.
    pub fn transactions(&self) -> u64 {
        match &self.backend {
            Backend::File { writer, .. } => writer.transactions(),
            Backend::Memory(_) => 0,
        }
    }

    /// A store that lives in memory only: for tests, demos and benchmarks.
    pub fn in_memory() -> Self {
        Self::in_memory_with(EmbeddedOptions::default())
    }

    /// A store in memory only, keeping contacts for `options.retention`.
    pub fn in_memory_with(options: EmbeddedOptions) -> Self {
        Self {
            backend: Backend::Memory(Arc::default()),
            locks: LocalLocks::default(),
            retention: options.retention,
            clock: Arc::new(crate::now_ms),
            replayed: 0,
        }
    }

    /// Reads the time activity is recorded at from `clock` instead of the
    /// system clock: for tests and simulations that drive time.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Runs `f` in its own write transaction, on this thread: for start-up.
    fn write_now<T>(
        &self,
        f: impl FnOnce(&mut dyn Write) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Backend::File { db, .. } = &self.backend else {
            return f(&mut Staged::new(&Maps::default()));
        };
        let txn = db.begin_write().map_err(io)?;
        let out = f(&mut RedbWrite::new(&txn))?;
        txn.commit().map_err(io)?;
        Ok(out)
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
            Backend::File {
                db,
                failure,
                pending,
                ..
            } => {
                failure.check()?;
                pending.read(|| Ok(RedbRead(db.begin_read().map_err(io)?)), f)
            }
            Backend::Memory(maps) => f(&*maps.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// Runs `f` as one write, all or nothing: on the file, in the next group
    /// commit, answered once it is durable. `hold` (a contact lock) is
    /// released only after the write landed or failed, even if the caller
    /// stopped waiting.
    async fn write<T, H, F>(&self, hold: H, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        H: Send + 'static,
        F: FnOnce(&mut dyn Write) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.backend {
            Backend::File { writer, .. } => writer.write(hold, f).await,
            Backend::Memory(maps) => {
                let mut maps = maps.lock().unwrap_or_else(|p| p.into_inner());
                let (out, writes) = {
                    let mut staged = Staged::new(&*maps);
                    let out = f(&mut staged)?;
                    (out, staged.into_writes())
                };
                batch::apply(&mut *maps, writes)?;
                drop(hold);
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
        // Only a lock from this store's own table, for this contact.
        if !lock.is_local() || lock.contact_id != commit.contact_id {
            return Err(StoreError::Fenced(commit.contact_id));
        }
        // A commit only writes: its rows are encoded here, on the caller's
        // task, and the writer thread only puts them.
        let keep = self.keep();
        let rows = {
            let nothing = Maps::default();
            let mut staged = Staged::new(&nothing);
            tables::commit(&mut staged, &commit, keep)?;
            staged.into_writes()
        };
        self.write(Some(lock), move |w| batch::apply(w, rows)).await
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
        let lock = self.lock_handoff(handoff_id).await?;
        let (handoff_id, bot, keep) = (handoff_id.to_owned(), bot.to_owned(), self.keep());
        self.write(lock, move |w| {
            tables::acknowledge(w, &handoff_id, &bot, now, keep)
        })
        .await
    }

    async fn record_outcome(
        &self,
        handoff_id: &str,
        outcome: Outcome,
        config: &LearningConfig,
    ) -> Result<OutcomeRecorded, StoreError> {
        let lock = self.lock_handoff(handoff_id).await?;
        let (handoff_id, config, keep) = (handoff_id.to_owned(), config.clone(), self.keep());
        self.write(lock, move |w| {
            tables::record_outcome(w, &handoff_id, outcome, &config, keep)
        })
        .await
    }

    async fn outcome_windows(&self) -> Result<Vec<(RouteKey, OutcomeWindow)>, StoreError> {
        self.read(|r| tables::outcome_windows(r))
    }

    async fn put_health(&self, report: &HealthReport) -> Result<(), StoreError> {
        let report = report.clone();
        self.write((), move |w| tables::put_health(w, &report))
            .await
    }

    async fn health_reports(&self) -> Result<Vec<HealthReport>, StoreError> {
        self.read(|r| tables::health_reports(r))
    }

    async fn deferred(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(tables::deferred)
    }

    /// Deletes what expired, from the expiry index, a bounded slice per
    /// write so decisions keep flowing meanwhile. A contact is deleted under
    /// its lock; one that is busy is left for the next purge.
    async fn purge_expired(&self, now: UnixMs) -> Result<usize, StoreError> {
        let keep = tables::Keep {
            now,
            retention: self.keep().retention,
        };
        let mut removed = 0;
        loop {
            let due = self.read(|r| tables::due(r, now, PURGE_SLICE))?;
            if due.is_empty() {
                return Ok(removed);
            }
            let full = due.len() == PURGE_SLICE;
            let mut locks = Vec::new();
            let mut ready = Vec::new();
            for d in due {
                if let Some(contact) = d.contact() {
                    match self.locks.lock(contact, Duration::ZERO).await {
                        Ok(lock) => locks.push(lock),
                        Err(_) => continue,
                    }
                }
                ready.push(d);
            }
            let skipped_all = ready.is_empty();
            removed += self
                .write(Some(locks), move |w| tables::expire(w, &ready, keep))
                .await?;
            if !full || skipped_all {
                return Ok(removed);
            }
        }
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
            handoff_id: "h1:c1".into(),
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
            &format!("h1:{contact_id}"),
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
            deferred: None,
            published: None,
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
                .record_outcome("h1:c1", Outcome::Successful, &LearningConfig::default())
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
                .record_outcome("h1:c1", Outcome::Failed, &config)
                .await
                .unwrap();
            let again = store
                .record_outcome("h1:c1", Outcome::Successful, &config)
                .await
                .unwrap();
            assert!(first.recorded && !again.recorded);
            assert_eq!((again.window.outcomes(), again.window.successes()), (1, 0));
            let missing = store.record_outcome("nope", Outcome::Failed, &config).await;
            assert!(matches!(missing, Err(StoreError::NotFound { .. })));
            assert!(matches!(
                store.acknowledge("h1:c1", "buyer", 7).await,
                Err(StoreError::Conflict(_))
            ));
            assert_eq!(
                store.acknowledge("h1:c1", "seller", 7).await.unwrap(),
                Acknowledged { at: 7, first: true }
            );
            assert_eq!(
                store.acknowledge("h1:c1", "seller", 9).await.unwrap(),
                Acknowledged {
                    at: 7,
                    first: false
                }
            );
        }
    }

    /// A handoff id names its contact, so approving one indexes nothing;
    /// a handoff approved before ids did is found through the index those
    /// versions wrote.
    #[tokio::test]
    async fn handoffs_are_found_from_their_id_and_old_ones_from_the_old_index() {
        let (_dir, stores) = backends("handoff-ids");
        for store in stores {
            let lock = store.lock("c1", Duration::from_secs(1)).await.unwrap();
            store.commit(lock, handed_over("c1")).await.unwrap();
            let lock = store.lock("c2", Duration::from_secs(1)).await.unwrap();
            let mut old = handed_over("c2");
            let state = old.contact.as_mut().unwrap();
            state.history[0].handoff_id = "legacy-2".into();
            state.last_handoff_id = "legacy-2".into();
            store.commit(lock, old).await.unwrap();
            assert_eq!(store.read(|r| r.scan(Table::Handoffs)).unwrap(), vec![]);

            assert!(store.acknowledge("h:c1", "seller", 5).await.unwrap().first);
            assert!(matches!(
                store.acknowledge("legacy-2", "seller", 5).await,
                Err(StoreError::NotFound { .. })
            ));
            store
                .write((), |w| w.put(Table::Handoffs, "legacy-2", b"c2".to_vec()))
                .await
                .unwrap();
            assert!(
                store
                    .acknowledge("legacy-2", "seller", 6)
                    .await
                    .unwrap()
                    .first
            );
            // An id naming a contact whose history does not hold it.
            assert!(matches!(
                store.acknowledge("h:c2", "seller", 6).await,
                Err(StoreError::NotFound { .. })
            ));
        }
    }

    /// A write that fails halfway leaves nothing behind, on either backend,
    /// and on the file it does not spoil the batch it shared.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_leaves_nothing_behind() {
        let (_dir, stores) = backends("halfway");
        for store in stores {
            let store = Arc::new(store);
            let failing = {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .write((), |w| {
                            w.put(Table::Health, "buyer", b"{}".to_vec())?;
                            Err::<(), _>(StoreError::Conflict("halfway".into()))
                        })
                        .await
                })
            };
            let report = HealthReport {
                bot: "seller".into(),
                ..Default::default()
            };
            let fine = store.put_health(&report);
            let (failing, fine) = tokio::join!(failing, fine);
            assert!(matches!(failing.unwrap(), Err(StoreError::Conflict(_))));
            fine.unwrap();
            assert_eq!(store.health_reports().await.unwrap(), vec![report]);
        }
    }

    fn handed_over(contact_id: &str) -> Commit {
        handed_over_at(contact_id, 1_000)
    }

    /// A handoff of a new contact to the seller at `now`.
    fn handed_over_at(contact_id: &str, now: UnixMs) -> Commit {
        let config = Config::default();
        let mut state = ContactState::new("lead", now);
        let handoff_id = format!("h:{contact_id}");
        state.hand_over(
            EntryKind::Handoff,
            &handoff_id,
            "seller",
            "sell my house",
            0.9,
            "",
            ContextPacket::default(),
            &[],
            &config,
            now,
        );
        Commit {
            contact_id: contact_id.into(),
            contact: Some(state),
            decision: Some((
                "r1".into(),
                StoredDecision {
                    verdict: verdict(),
                    expires_at: i64::MAX,
                },
            )),
            ..Default::default()
        }
    }

    /// Concurrent commits for different contacts share transactions (one
    /// fsync each), and every one answered is in the file after reopening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_transactions_and_all_survive() {
        let dir = temp_dir("group");
        let contacts: Vec<String> = (0..64).map(|i| format!("c{i}")).collect();
        {
            let options = EmbeddedOptions {
                batching: Batching {
                    max: 16,
                    wait: Duration::from_millis(20),
                },
                ..Default::default()
            };
            let store = Arc::new(EmbeddedStore::open_with(&dir.0, options).unwrap());
            let before = store.transactions();
            let mut tasks = Vec::new();
            for c in &contacts {
                let (store, c) = (Arc::clone(&store), c.clone());
                tasks.push(tokio::spawn(async move {
                    let lock = store.lock(&c, Duration::from_secs(1)).await.unwrap();
                    store.commit(lock, handed_over(&c)).await
                }));
            }
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            let used = store.transactions() - before;
            // Bounded by batch_max, and far fewer than one per commit.
            assert!(
                (4..=32).contains(&used),
                "{used} transactions for 64 commits"
            );
        }
        let store = EmbeddedStore::open(&dir.0).unwrap();
        for c in &contacts {
            let state = store.contact(c).await.unwrap().unwrap();
            assert_eq!(state.owner, "seller", "{c}");
            let lock = store.lock(c, Duration::from_millis(10)).await.unwrap();
            assert!(store.load(&lock, "r1", 0).await.unwrap().prior.is_some());
        }
    }

    /// When a batch's journal sync fails, every caller in it gets an
    /// error, and nothing of it is approved: no contact, decision or
    /// handoff is shown, now or after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_fsync_fails_every_write_in_its_batch() {
        let dir = baton_test_support::TempDir::new("failed-sync");
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let journal = crate::journal::flaky(dir.path(), &fail);
        let (db, syncs) =
            crate::file::open_database(&dir.path().join("baton.redb"), false).unwrap();
        let options = EmbeddedOptions {
            batching: Batching {
                max: 64,
                wait: Duration::from_millis(50),
            },
            ..Default::default()
        };
        let replay = Replay {
            records: Vec::new(),
        };
        let store =
            Arc::new(EmbeddedStore::from_database(db, syncs, journal, replay, options).unwrap());
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let before = store.transactions();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let c = format!("c{i}");
                let lock = store.lock(&c, Duration::from_secs(1)).await.unwrap();
                store.commit(lock, handed_over(&c)).await
            }));
        }
        for task in tasks {
            let err = task.await.unwrap().unwrap_err();
            assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
            assert!(err.to_string().contains("injected fsync failure"), "{err}");
        }
        assert!(store.transactions() - before < 8, "the writes were batched");
        // The batch reached redb before its sync failed: the store shows
        // none of it, refusing reads and writes until it is reopened.
        let refused = store.contact("c0").await.unwrap_err().to_string();
        assert!(refused.contains("until it is reopened"), "{refused}");
        let lock = store.lock("c9", Duration::from_secs(1)).await.unwrap();
        assert!(store.commit(lock, handed_over("c9")).await.is_err());
        drop(store);
        // Reopened, nothing of the batch is there (its handoffs lived in
        // the contacts' history), and the store works again.
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for i in 0..10 {
            assert_eq!(store.contact(&format!("c{i}")).await.unwrap(), None);
        }
        let lock = store.lock("c1", Duration::from_secs(1)).await.unwrap();
        store.commit(lock, handed_over("c1")).await.unwrap();
        assert!(store.contact("c1").await.unwrap().is_some());
    }

    /// With redb's transaction open across batches, what was answered is
    /// read at once (through the pending rows): the contact, its stored
    /// decision, its handoff for an acknowledgement, a scanned health
    /// report; and all of it is in the file after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answered_writes_are_read_before_their_transaction_commits() {
        let dir = temp_dir("pending");
        let options = EmbeddedOptions {
            checkpoints: Checkpoints {
                every: Duration::from_secs(600),
                commit_every: Duration::from_secs(1),
                ..Default::default()
            },
            ..Default::default()
        };
        {
            let store = EmbeddedStore::open_with(&dir.0, options).unwrap();
            approve(&store, "c1", "r1").await;
            assert_eq!(store.contact("c1").await.unwrap().unwrap().owner, "seller");
            let lock = store.lock("c1", Duration::from_millis(10)).await.unwrap();
            assert_eq!(
                store.load(&lock, "r1", 2_000).await.unwrap().prior,
                Some(verdict())
            );
            drop(lock);
            assert!(store.acknowledge("h1:c1", "seller", 7).await.unwrap().first);
            assert!(!store.acknowledge("h1:c1", "seller", 8).await.unwrap().first);
            let report = HealthReport {
                bot: "buyer".into(),
                ..Default::default()
            };
            store.put_health(&report).await.unwrap();
            assert_eq!(store.health_reports().await.unwrap(), vec![report]);
            // Nothing of it is in redb's committed state yet.
            let Backend::File { db, .. } = &store.backend else {
                panic!("a file store");
            };
            let committed = RedbRead(db.begin_read().unwrap());
            assert_eq!(committed.get(Table::Contacts, "c1").unwrap(), None);
        }
        let store = EmbeddedStore::open(&dir.0).unwrap();
        assert_eq!(store.replayed(), 0, "closed cleanly");
        let c = store.contact("c1").await.unwrap().unwrap();
        assert_eq!(c.history[0].acknowledged_at, Some(7));
        assert_eq!(store.health_reports().await.unwrap().len(), 1);
    }

    /// When a checkpoint's sync of the redb file fails, the writes it
    /// covered were already answered from the journal, which keeps them:
    /// the store stops (reads and writes refused until it is reopened),
    /// and the journal still holds what the file may have lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_checkpoint_stops_the_store_and_the_journal_keeps_its_writes() {
        let dir = baton_test_support::TempDir::new("failed-checkpoint");
        let backend = crate::sync::TestFile::default();
        let fail = Arc::clone(&backend.fail);
        let (backend, syncs) = crate::sync::BackgroundSync::new(backend).unwrap();
        let db = Database::builder().create_with_backend(backend).unwrap();
        let (journal, replay) = Journal::open(dir.path()).unwrap();
        // Every batch is a checkpoint once the last one's sync is done.
        let options = EmbeddedOptions {
            checkpoints: Checkpoints {
                every: Duration::ZERO,
                ..Default::default()
            },
            ..Default::default()
        };
        let started = Arc::clone(&syncs);
        let store = EmbeddedStore::from_database(db, syncs, journal, replay, options).unwrap();
        // The syncs of the open itself finish well first.
        started.settle().unwrap();
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let lock = store.lock("c1", Duration::from_secs(1)).await.unwrap();
        store.commit(lock, handed_over("c1")).await.unwrap();

        // The next write learns of the failed sync, at the latest the one
        // after it: from then on the store refuses.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut tries = 0;
        let stopped = loop {
            tries += 1;
            let c = format!("c2-{tries}");
            let lock = store.lock(&c, Duration::from_secs(1)).await.unwrap();
            if let Err(e) = store.commit(lock, handed_over(&c)).await {
                break e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the store kept taking writes"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(
            stopped.to_string().contains("injected file sync failure"),
            "{stopped}"
        );
        let refused = store.contact("c1").await.unwrap_err().to_string();
        assert!(refused.contains("until it is reopened"), "{refused}");

        let kept: Vec<String> = crate::journal::read(dir.path())
            .unwrap()
            .into_iter()
            .flatten()
            .filter(|(table, _, _)| *table == Table::Contacts)
            .map(|(_, key, _)| key)
            .collect();
        assert!(kept.contains(&"c1".to_owned()), "{kept:?}");
    }

    /// A clock the test moves by hand.
    fn manual_clock() -> (Arc<std::sync::atomic::AtomicI64>, Clock) {
        let now = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let read = Arc::clone(&now);
        (
            now,
            Arc::new(move || read.load(std::sync::atomic::Ordering::SeqCst)),
        )
    }

    fn retained(store: EmbeddedStore, clock: Clock) -> EmbeddedStore {
        store.with_clock(clock)
    }

    /// A contact idle past `retention` is deleted with its stored decisions
    /// (and any handoff index entry an earlier version wrote); one written
    /// since stays, until it is idle too.
    #[tokio::test]
    async fn idle_contacts_are_deleted_with_their_index_and_active_ones_stay() {
        let dir = temp_dir("retention");
        let options = EmbeddedOptions {
            retention: Duration::from_millis(1_000),
            ..Default::default()
        };
        let file = EmbeddedStore::open_with(&dir.0, options).unwrap();
        for store in [file, EmbeddedStore::in_memory_with(options)] {
            let (now, clock) = manual_clock();
            now.store(1_000, std::sync::atomic::Ordering::SeqCst);
            let store = retained(store, clock);
            for c in ["c1", "c2"] {
                let lock = store.lock(c, Duration::from_secs(1)).await.unwrap();
                store.commit(lock, handed_over(c)).await.unwrap();
            }
            now.store(1_800, std::sync::atomic::Ordering::SeqCst);
            store.acknowledge("h:c2", "seller", 1_800).await.unwrap();

            assert!(store.purge_expired(2_500).await.unwrap() >= 2);
            assert_eq!(store.contact("c1").await.unwrap(), None);
            assert!(matches!(
                store.acknowledge("h:c1", "seller", 2_500).await,
                Err(StoreError::NotFound { .. })
            ));
            let lock = store.lock("c1", Duration::from_millis(10)).await.unwrap();
            assert_eq!(
                store.load(&lock, "r1", 1_500).await.unwrap(),
                Loaded::default()
            );
            drop(lock);
            assert!(store.contact("c2").await.unwrap().is_some());

            store.purge_expired(2_799).await.unwrap();
            assert!(store.contact("c2").await.unwrap().is_some());
            store.purge_expired(2_800).await.unwrap();
            assert_eq!(store.contact("c2").await.unwrap(), None);
            // What is left of the index comes due a retention period later.
            store.purge_expired(3_800).await.unwrap();
            // Nothing is left in any table the contacts used.
            for table in [
                Table::Contacts,
                Table::Decisions,
                Table::Handoffs,
                Table::Touched,
                Table::Expiry,
            ] {
                assert_eq!(store.read(|r| r.scan(table)).unwrap(), vec![], "{table:?}");
            }
        }
    }

    /// A contact whose context expired keeps its history but loses the
    /// context packet when the purge reaches it.
    #[tokio::test]
    async fn expired_context_packets_are_deleted() {
        let (now, clock) = manual_clock();
        let store = EmbeddedStore::in_memory().with_clock(clock);
        approve(&store, "c1", "r1").await;
        let expires = store
            .contact("c1")
            .await
            .unwrap()
            .unwrap()
            .context_expires_at;
        assert!(expires > 1_000);
        now.store(expires, std::sync::atomic::Ordering::SeqCst);
        store.purge_expired(expires - 1).await.unwrap();
        let c = store.contact("c1").await.unwrap().unwrap();
        assert_eq!(c.context.timeline.as_deref(), Some("3 months"));
        store.purge_expired(expires).await.unwrap();
        let c = store.contact("c1").await.unwrap().unwrap();
        assert_eq!(c.context, ContextPacket::default());
        assert_eq!(c.owner, "seller");
    }

    /// Under steady churn (new contacts arriving, old ones expiring) the
    /// file stops growing once the retention period is reached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_stops_growing_under_churn() {
        let dir = temp_dir("churn");
        // A checkpoint whenever the last one is synced, so the file shows
        // what each round left (and the journal files stay small).
        let options = EmbeddedOptions {
            retention: Duration::from_millis(1_000),
            checkpoints: Checkpoints {
                every: Duration::ZERO,
                ..Default::default()
            },
            ..Default::default()
        };
        let (now, clock) = manual_clock();
        let store = Arc::new(
            EmbeddedStore::open_with(&dir.0, options)
                .unwrap()
                .with_clock(clock),
        );
        let path = dir.0.join("baton.redb");
        let mut sizes = Vec::new();
        for round in 0..16i64 {
            now.store(round * 1_000, std::sync::atomic::Ordering::SeqCst);
            let mut tasks = Vec::new();
            for i in 0..400 {
                let store = Arc::clone(&store);
                tasks.push(tokio::spawn(async move {
                    let c = format!("r{round}-c{i}");
                    let lock = store.lock(&c, Duration::from_secs(5)).await?;
                    store.commit(lock, handed_over_at(&c, round * 1_000)).await
                }));
            }
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            store.purge_expired(round * 1_000 + 999).await.unwrap();
            sizes.push(std::fs::metadata(&path).unwrap().len());
        }
        let rows = store.read(|r| r.scan(Table::Contacts)).unwrap().len();
        assert_eq!(rows, 400, "only the last round's contacts are left");
        // The first rounds grow the file to the retained working set (and
        // redb's region sizing); from then on, freed pages are reused.
        let settled = sizes[7];
        assert!(
            sizes[8..].iter().all(|&s| s <= settled),
            "file sizes by round: {sizes:?}"
        );
        // The journal's files are reused after each checkpoint: together
        // they stay far below the 6 400 records (about 4 MB) the rounds
        // wrote.
        let journal: u64 = crate::journal::paths(&dir.0)
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(journal < 2 << 20, "journal files of {journal} bytes");
    }
}
