//! Group commit for the embedded file store: every write (a decision's
//! commit, an acknowledgement, an outcome, a health report) is queued to one
//! writer thread, which runs whatever is waiting as one batch in redb's open
//! write transaction and writes the rows it changed to the journal as one
//! record. A second thread syncs the journal, one sync for every record
//! written since the last, and answers each caller only once its record is
//! durable, in the order the batches ran.
//!
//! redb's transaction takes batches for [`Checkpoints::commit_every`], then
//! commits without a sync: the journal already holds its rows (see
//! [`crate::journal`]), and readers see them meanwhile through
//! [`crate::pending`]. Every [`Checkpoints::every`] one commit is made
//! durable instead, its sync running in the background, after which the
//! journal may drop what that commit covers. A failure once rows are in the
//! open transaction stops the store until it is reopened: their batches
//! may have been answered already, and the journal replays them.
//!
//! Each write runs against a staged overlay of the transaction, so a write
//! that fails leaves nothing behind while the others in its batch still
//! commit. Two writes for one contact never share a batch: a decision
//! commits under its contact lock, which is released only after its batch is
//! durable, and acknowledgements and outcomes take the same lock.
//!
//! Without contention a batch holds one write and is answered after one
//! journal sync; under load, writes that arrive while a batch runs form the
//! next one. `wait` can hold a batch open a little longer to gather more.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::oneshot;

use crate::StoreError;
use crate::journal::{Journal, SyncHandle, Written};
use crate::overlay::Overlay;
use crate::pending::Pending;
use crate::sync::Syncs;
use crate::tables::{Read, Table, Write};

/// Bounds on one group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Writes in one batch at most.
    pub max: usize,
    /// How long a batch waits for more writes once the first arrived; zero
    /// commits whatever is queued at once, adding no latency.
    pub wait: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max: 256,
            wait: Duration::ZERO,
        }
    }
}

/// Writes staged over a transaction's view: reads see them, and they reach
/// the transaction only when the write that made them succeeded.
pub(crate) struct Staged<'a> {
    base: &'a dyn Read,
    writes: Overlay,
}

/// One staged write: a table, a key, and the new value (`None` removes it).
pub(crate) type Row = (Table, String, Option<Vec<u8>>);

/// Applies staged rows, in order.
pub(crate) fn apply(w: &mut dyn Write, rows: Vec<Row>) -> Result<(), StoreError> {
    for (table, key, value) in rows {
        match value {
            Some(value) => w.put(table, &key, value)?,
            None => w.remove(table, &key)?,
        }
    }
    Ok(())
}

impl<'a> Staged<'a> {
    pub(crate) fn new(base: &'a dyn Read) -> Self {
        Self {
            base,
            writes: Overlay::default(),
        }
    }

    /// The staged writes, the last value of each key: `None` removes it.
    pub(crate) fn into_writes(self) -> Vec<Row> {
        self.writes.into_rows()
    }
}

impl Read for Staged<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.writes.over(self.base).get(table, key)
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.writes.over(self.base).scan(table)
    }

    fn range(
        &self,
        table: Table,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.writes.over(self.base).range(table, from, to, limit)
    }
}

impl Write for Staged<'_> {
    fn put(&mut self, table: Table, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.writes.set(table, key.to_owned(), Some(value));
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        self.writes.set(table, key.to_owned(), None);
        Ok(())
    }
}

/// One queued write: runs inside a batch, then hears whether it is durable.
trait Job: Send {
    /// Runs the write on the batch's transaction; false when it failed
    /// (its staged changes are then dropped).
    fn run(&mut self, txn: &mut dyn Write) -> bool;
    /// Answers the caller with the write's result once the batch ended.
    fn finish(self: Box<Self>, durable: Result<(), StoreError>);
}

struct Queued<T, H, F> {
    op: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    /// Contact locks released only once the write is durable (or failed),
    /// whatever became of the caller meanwhile.
    _hold: H,
}

impl<T, H, F> Job for Queued<T, H, F>
where
    T: Send,
    H: Send,
    F: FnOnce(&mut dyn Write) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, txn: &mut dyn Write) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        let out = op(txn);
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(self: Box<Self>, durable: Result<(), StoreError>) {
        let answer = match (self.out, durable) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(e)) => Err(e),
            (None, Ok(())) => Err(StoreError::Unavailable("write was not run".into())),
        };
        // The caller may have gone (its call was cancelled): the write
        // stands all the same.
        let _ = self.reply.send(answer);
    }
}

/// How often the writer commits redb's transaction, and how often it makes
/// a commit durable, which lets the journal drop what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoints {
    /// At most this long between checkpoints while writes come in.
    pub every: Duration,
    /// Or sooner, once the journal's active file holds this many bytes.
    pub bytes: u64,
    /// How long one redb transaction takes batches before it commits (in
    /// memory, unsynced); readers see its rows meanwhile through
    /// [`crate::pending`]. Zero commits every batch.
    pub commit_every: Duration,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(1),
            bytes: 64 << 20,
            commit_every: Duration::from_millis(20),
        }
    }
}

/// What makes a batch durable: the journal, and the checkpoints that let
/// it forget.
pub(crate) struct Durability {
    pub journal: Journal,
    /// The redb file's background syncs.
    pub syncs: Arc<Syncs>,
    pub checkpoints: Checkpoints,
    /// Set once a journal sync failed: the store then refuses everything.
    pub failure: Arc<Failure>,
    /// Rows of the open transaction, for readers.
    pub pending: Arc<Pending>,
}

/// Why the store stopped: a journal sync failed after its batch had
/// reached redb (in memory). Its callers were told it failed, so nothing
/// may show it any more: reads and writes are refused, and the redb file
/// takes no more writes, until the store is reopened and the journal,
/// taken back to before that batch, is replayed.
#[derive(Debug, Default)]
pub(crate) struct Failure {
    failed: AtomicBool,
    why: Mutex<Option<String>>,
}

impl Failure {
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let why = self.why.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Err(StoreError::Unavailable(format!(
            "{}; the store refuses reads and writes until it is reopened",
            why.unwrap_or_default()
        )))
    }

    fn set(&self, why: &str) {
        self.why
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| why.to_owned());
        self.failed.store(true, Ordering::Release);
    }
}

/// The writer's view of durability between batches.
struct Durable {
    journal: Journal,
    syncs: Arc<Syncs>,
    checkpoints: Checkpoints,
    failure: Arc<Failure>,
    last_checkpoint: Instant,
    /// The sync that makes the last checkpoint durable, while it runs.
    syncing: Option<u64>,
    /// Batches whose journal record waits for its sync, and their callers.
    to_sync: mpsc::Sender<ToSync>,
    /// redb's transaction while it takes batches, and since when.
    open: Option<(redb::WriteTransaction, Instant)>,
    pending: Arc<Pending>,
}

impl Durable {
    /// Notes a checkpoint whose sync finished: the journal file it covers
    /// may then be reused.
    fn catch_up(&mut self) {
        let Some(n) = self.syncing else {
            return;
        };
        match self.syncs.done(n) {
            Some(Ok(())) => {
                self.syncing = None;
                self.journal.release_other();
            }
            // The file may have lost what the checkpoint wrote; the journal
            // still holds all of it, so the store stops and a reopen
            // replays it.
            Some(Err(why)) => self.failure.set(&why),
            None => {}
        }
    }

    /// Whether this batch's commit should be a checkpoint.
    fn checkpoint_due(&self) -> bool {
        self.syncing.is_none()
            && (self.last_checkpoint.elapsed() >= self.checkpoints.every
                || self.journal.active_bytes() >= self.checkpoints.bytes)
    }

    /// A checkpoint's commit returned: it is durable once its sync is.
    fn checkpointed(&mut self) {
        self.last_checkpoint = Instant::now();
        self.syncing = Some(self.syncs.asked());
    }

    /// Waits until every batch handed to the sync thread is answered.
    fn drain(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.to_sync.send(ToSync::Barrier(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Stops the store after a failure that may have left rows in the open
    /// transaction whose batches were answered from the journal: nothing
    /// more is read, written or committed until the store is reopened and
    /// the journal replayed.
    fn stop(&mut self, why: &str) {
        self.failure.set(why);
        self.syncs.refuse(why.to_owned());
        self.open = None;
        tracing::error!(error = %why, "store write failed; the store stops until it is reopened");
    }

    /// On the way out: one durable commit of everything, then a journal
    /// with nothing to replay. After a failure nothing is committed: the
    /// journal, as it was taken back, is replayed at the next open.
    fn close(&mut self, db: &Database) {
        self.drain();
        if let Err(e) = self.failure.check() {
            self.open = None;
            tracing::warn!(error = %e, "store closed after a failed write");
            return;
        }
        let txn = match self.open.take() {
            Some((txn, _)) => Ok(txn),
            None => db.begin_write().map_err(StoreError::unavailable),
        };
        let synced = txn
            .and_then(|txn| txn.commit().map_err(StoreError::unavailable))
            .and_then(|()| self.syncs.settle().map_err(StoreError::Unavailable));
        self.pending.clear();
        let reset = synced.and_then(|()| self.journal.reset());
        if let Err(e) = reset {
            tracing::warn!(error = %e, "store closed without a final checkpoint; its journal is replayed at the next open");
        }
    }
}

/// What the writer hands the journal's sync thread.
enum ToSync {
    /// A committed batch: answered once its record (if it wrote one) is
    /// synced, and never before the batches handed over before it.
    Batch {
        jobs: Vec<Box<dyn Job>>,
        written: Option<Written>,
    },
    /// Answered once everything handed over before it is.
    Barrier(mpsc::SyncSender<()>),
}

/// The journal's sync thread: one sync covers every record written before
/// it, so batches the writer committed meanwhile share it. A failed sync
/// fails its batches and stops the store (see [`Failure`]).
fn sync_batches(
    queue: &mpsc::Receiver<ToSync>,
    files: &[SyncHandle; 2],
    syncs: &Syncs,
    failure: &Failure,
) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while let Ok(next) = queue.try_recv() {
            group.push(next);
        }
        let mut dirty = [false; 2];
        let mut earliest = None;
        for item in &group {
            if let ToSync::Batch {
                written: Some(w), ..
            } = item
            {
                dirty[w.side] = true;
                earliest.get_or_insert(*w);
            }
        }
        let mut outcome = failure.check();
        if outcome.is_ok() {
            for (file, _) in files.iter().zip(dirty).filter(|(_, d)| *d) {
                if let Err(why) = file.sync() {
                    // Replay stops at the first record of the group; the
                    // redb file takes no more writes, so redb's close
                    // cannot persist what it holds either.
                    if let Some(w) = earliest
                        && let Err(e) = files[w.side].take_back(w.at)
                    {
                        tracing::error!(error = %e, "cannot take back a record whose sync failed");
                    }
                    syncs.refuse(why.clone());
                    failure.set(&why);
                    tracing::error!(error = %why, "journal sync failed; the store stops");
                    outcome = Err(StoreError::Unavailable(why));
                    break;
                }
            }
        }
        for item in group {
            match item {
                ToSync::Batch { jobs, .. } => {
                    for job in jobs {
                        job.finish(
                            outcome
                                .as_ref()
                                .map(|_| ())
                                .map_err(|e| StoreError::Unavailable(e.to_string())),
                        );
                    }
                }
                ToSync::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// The handle to the writer thread; dropping the last one stops it once the
/// queue is empty.
pub(crate) struct Writer {
    queue: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    transactions: Arc<AtomicU64>,
}

impl Drop for Writer {
    /// Lets the writer finish what is queued and waits for it, so the
    /// database is closed (and its file lock released) when the store is
    /// dropped.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    pub(crate) fn start(
        db: Arc<Database>,
        batching: Batching,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel::<Box<dyn Job>>();
        let (to_sync, synced) = mpsc::channel::<ToSync>();
        let transactions = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&transactions);
        let cannot = |e: std::io::Error| {
            StoreError::Unavailable(format!("cannot start the store writer: {e}"))
        };
        let files = durability.journal.sync_handles();
        let (syncs, failure) = (
            Arc::clone(&durability.syncs),
            Arc::clone(&durability.failure),
        );
        let syncer = std::thread::Builder::new()
            .name("baton-journal-sync".into())
            .spawn(move || sync_batches(&synced, &files, &syncs, &failure))
            .map_err(cannot)?;
        let mut durable = Durable {
            journal: durability.journal,
            syncs: durability.syncs,
            checkpoints: durability.checkpoints,
            failure: durability.failure,
            last_checkpoint: Instant::now(),
            syncing: None,
            to_sync,
            open: None,
            pending: durability.pending,
        };
        let thread = std::thread::Builder::new()
            .name("baton-store-writer".into())
            .spawn(move || {
                write_batches(&db, &jobs, batching, &mut durable, &counted);
                durable.close(&db);
                drop(durable);
                let _ = syncer.join();
            })
            .map_err(cannot)?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
            transactions,
        })
    }

    /// Write transactions committed (or tried) so far: one per batch.
    pub(crate) fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Runs `op` in the next batch and answers once it is durable; `hold`
    /// is released only then.
    pub(crate) async fn write<T, H, F>(&self, hold: H, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        H: Send + 'static,
        F: FnOnce(&mut dyn Write) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Queued {
            op: Some(op),
            out: None,
            reply,
            _hold: hold,
        };
        let stopped = || StoreError::Unavailable("the store writer has stopped".into());
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        queue.send(Box::new(job)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer thread: one transaction per batch, until every handle is gone.
fn write_batches(
    db: &Database,
    jobs: &mpsc::Receiver<Box<dyn Job>>,
    batching: Batching,
    durable: &mut Durable,
    transactions: &AtomicU64,
) {
    let max = batching.max.max(1);
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let deadline = Instant::now() + batching.wait;
        while batch.len() < max {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match jobs.recv_timeout(left) {
                        Ok(job) => batch.push(job),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
        }
        transactions.fetch_add(1, Ordering::Relaxed);
        commit_batch(db, batch, durable);
    }
}

/// Runs `batch` in one transaction, then answers it, or hands it to the
/// sync thread to be answered once its journal record is durable.
fn commit_batch(db: &Database, mut batch: Vec<Box<dyn Job>>, durable: &mut Durable) {
    match run_batch(db, &mut batch, durable) {
        Ok(Some(written)) => {
            let handed = ToSync::Batch {
                jobs: batch,
                written,
            };
            if let Err(mpsc::SendError(ToSync::Batch { jobs, .. })) = durable.to_sync.send(handed) {
                finish_all(
                    jobs,
                    &Err(StoreError::Unavailable(
                        "the journal sync thread has stopped".into(),
                    )),
                );
            }
        }
        Ok(None) => finish_all(batch, &Ok(())),
        Err(e) => {
            tracing::error!(error = %e, writes = batch.len(), "store batch failed; nothing in it was written");
            finish_all(batch, &Err(e));
        }
    }
}

fn finish_all(batch: Vec<Box<dyn Job>>, outcome: &Result<(), StoreError>) {
    for job in batch {
        job.finish(match outcome {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        });
    }
}

/// Runs the batch's writes in redb's open transaction and journals the rows
/// they wrote. Usually the record is only written, the rows join the
/// pending ones readers see, and the transaction commits (unsynced) once it
/// is `commit_every` old: `Ok(Some(record))`, for the sync thread to sync
/// and answer. When a checkpoint is due, everything before it is synced
/// first, then this record, then the transaction commits durably (its sync
/// in the background): `Ok(None)`, durable already. Any error stops the
/// store (see [`Durable::stop`]).
fn run_batch(
    db: &Database,
    batch: &mut [Box<dyn Job>],
    durable: &mut Durable,
) -> Result<Option<Option<Written>>, StoreError> {
    durable.failure.check()?;
    durable.catch_up();
    let outcome = write_batch(db, batch, durable);
    if let Err(e) = &outcome {
        durable.stop(&e.to_string());
    }
    outcome
}

fn write_batch(
    db: &Database,
    batch: &mut [Box<dyn Job>],
    durable: &mut Durable,
) -> Result<Option<Option<Written>>, StoreError> {
    let (mut txn, since) = match durable.open.take() {
        Some(open) => open,
        None => (
            db.begin_write().map_err(StoreError::unavailable)?,
            Instant::now(),
        ),
    };
    let mut rows = Vec::new();
    {
        let mut view = crate::embedded::RedbWrite::new(&txn);
        for job in batch.iter_mut() {
            let mut staged = Staged::new(&view);
            if !job.run(&mut staged) {
                continue;
            }
            let writes = staged.into_writes();
            view.apply(&writes)?;
            rows.extend(writes);
        }
    }
    if rows.is_empty() {
        durable.open = Some((txn, since));
        // What it read may stand on batches not yet synced: it is answered
        // after them.
        return Ok(Some(None));
    }
    if durable.checkpoint_due() {
        durable.drain();
        durable.failure.check()?;
        if durable.journal.can_switch() {
            durable.journal.switch()?;
        }
        durable.journal.append(&rows)?;
        if let Err(e) = txn.commit() {
            let _ = durable.journal.retract();
            return Err(StoreError::unavailable(e));
        }
        durable.pending.clear();
        durable.checkpointed();
        return Ok(None);
    }
    let written = durable.journal.write(&rows)?;
    durable.pending.add(rows);
    if since.elapsed() < durable.checkpoints.commit_every {
        durable.open = Some((txn, since));
        return Ok(Some(Some(written)));
    }
    let committed = txn
        .set_durability(redb::Durability::None)
        .map_err(StoreError::unavailable)
        .and_then(|()| txn.commit().map_err(StoreError::unavailable));
    if let Err(e) = committed {
        // Its callers are told it failed: a reopen must not replay it.
        let _ = durable.journal.retract();
        return Err(e);
    }
    durable.pending.clear();
    Ok(Some(Some(written)))
}
