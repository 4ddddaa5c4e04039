//! Group commit for the embedded file store: every write (a decision's
//! commit, an acknowledgement, an outcome, a health report) is queued to one
//! writer thread, which runs whatever is waiting in one redb write
//! transaction with one fsync, and answers each caller only once that
//! transaction is durable.
//!
//! Each write runs against a staged overlay of the batch's transaction, so a
//! write that fails leaves nothing behind while the others in its batch
//! still commit. Two writes for one contact never share a batch: a decision
//! commits under its contact lock, which is released only after its batch is
//! durable, and acknowledgements and outcomes take the same lock.
//!
//! Without contention a batch holds one write and costs what it did before;
//! under load, writes that arrive while a batch is being synced form the
//! next one. `wait` can hold a batch open a little longer to gather more.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::oneshot;

use crate::StoreError;
use crate::tables::{Read, Table, Write};

/// Bounds on one group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Writes in one transaction at most.
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
    writes: Vec<Row>,
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
            writes: Vec::new(),
        }
    }

    /// The staged writes, in order: `None` removes the key.
    pub(crate) fn into_writes(self) -> Vec<Row> {
        self.writes
    }
}

impl Read for Staged<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let staged = self
            .writes
            .iter()
            .rev()
            .find(|(t, k, _)| *t == table && k == key);
        match staged {
            Some((_, _, value)) => Ok(value.clone()),
            None => self.base.get(table, key),
        }
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut rows: BTreeMap<String, Vec<u8>> = self.base.scan(table)?.into_iter().collect();
        for (t, k, v) in &self.writes {
            if *t == table {
                match v {
                    Some(v) => rows.insert(k.clone(), v.clone()),
                    None => rows.remove(k),
                };
            }
        }
        Ok(rows.into_iter().collect())
    }

    fn range(
        &self,
        table: Table,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut rows: BTreeMap<String, Vec<u8>> = self
            .base
            .range(table, from, to, limit.saturating_add(self.writes.len()))?
            .into_iter()
            .collect();
        for (t, k, v) in &self.writes {
            if *t == table && k.as_str() >= from && k.as_str() < to {
                match v {
                    Some(v) => rows.insert(k.clone(), v.clone()),
                    None => rows.remove(k),
                };
            }
        }
        Ok(rows.into_iter().take(limit).collect())
    }
}

impl Write for Staged<'_> {
    fn put(&mut self, table: Table, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.writes.push((table, key.to_owned(), Some(value)));
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        self.writes.push((table, key.to_owned(), None));
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
    pub(crate) fn start(db: Arc<Database>, batching: Batching) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel::<Box<dyn Job>>();
        let transactions = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&transactions);
        let thread = std::thread::Builder::new()
            .name("baton-store-writer".into())
            .spawn(move || write_batches(&db, &jobs, batching, &counted))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
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
        commit_batch(db, batch);
    }
}

/// Runs `batch` in one transaction and answers every write in it.
fn commit_batch(db: &Database, mut batch: Vec<Box<dyn Job>>) {
    let durable = run_batch(db, &mut batch);
    if let Err(e) = &durable {
        tracing::error!(error = %e, writes = batch.len(), "store batch failed; nothing in it was written");
    }
    for job in batch {
        let durable = match &durable {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        };
        job.finish(durable);
    }
}

fn run_batch(db: &Database, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(StoreError::unavailable)?;
    {
        let mut view = crate::embedded::RedbWrite::new(&txn);
        for job in batch.iter_mut() {
            let mut staged = Staged::new(&view);
            if !job.run(&mut staged) {
                continue;
            }
            let writes = staged.into_writes();
            // A failure here may leave part of this write in the
            // transaction: the whole batch is given up rather than committed.
            apply(&mut view, writes)?;
        }
    }
    txn.commit().map_err(StoreError::unavailable)?;
    Ok(())
}
