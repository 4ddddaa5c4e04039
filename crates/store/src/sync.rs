//! The redb file's fsync, run off the writer thread.
//!
//! A checkpoint's durable redb commit writes every page changed since the
//! last one, then syncs the file: tens of milliseconds under load, during
//! which no batch could be journalled if the writer waited for it. Nothing
//! needs that sync at once (the journal already holds every row the commit
//! covers), so this backend hands the sync to a thread of its own and lets
//! redb go on.
//!
//! The file stays as crash-safe as with a plain sync: no byte reaches the
//! file while a sync is outstanding (a write or a resize waits for it), so
//! on disk each commit is still written, then synced, before anything that
//! follows it. The writer learns from [`Syncs::done`] when a checkpoint is
//! durable, and only then lets the journal forget what it covers.

use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Sync requests and completions, shared by the backend, its thread and
/// the writer.
#[derive(Debug, Default)]
pub(crate) struct Syncs {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Syncs asked for so far.
    asked: u64,
    /// The last request a finished sync covered.
    done: u64,
    /// Why a sync failed: the file is then no longer trusted, and every
    /// later write and sync reports it.
    failed: Option<String>,
    stop: bool,
}

impl Syncs {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest sync asked for: a checkpoint is durable once
    /// [`Syncs::done`] reaches the number read right after its commit.
    pub(crate) fn asked(&self) -> u64 {
        self.state().asked
    }

    /// Whether sync `n` finished well; `None` while it is still running.
    pub(crate) fn done(&self, n: u64) -> Option<Result<(), String>> {
        let state = self.state();
        match &state.failed {
            Some(why) => Some(Err(why.clone())),
            None => (state.done >= n).then_some(Ok(())),
        }
    }

    /// Makes every later write and sync to the file fail with `why`: once
    /// the store has stopped, not even redb's close may persist what it
    /// holds in memory.
    pub(crate) fn refuse(&self, why: String) {
        let mut state = self.state();
        state.failed.get_or_insert(why);
        self.changed.notify_all();
    }

    /// Waits until every sync asked for has finished.
    pub(crate) fn settle(&self) -> Result<(), String> {
        let mut state = self.state();
        while state.done < state.asked && state.failed.is_none() {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        match &state.failed {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    fn ask(&self) -> Result<(), String> {
        let mut state = self.state();
        if let Some(why) = &state.failed {
            return Err(why.clone());
        }
        state.asked += 1;
        self.changed.notify_all();
        Ok(())
    }
}

/// A redb file whose syncs run in the background.
#[derive(Debug)]
pub(crate) struct BackgroundSync {
    file: Arc<FileBackend>,
    syncs: Arc<Syncs>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BackgroundSync {
    pub(crate) fn new(file: FileBackend) -> std::io::Result<(Self, Arc<Syncs>)> {
        let file = Arc::new(file);
        let syncs = Arc::new(Syncs::default());
        let thread = {
            let (file, syncs) = (Arc::clone(&file), Arc::clone(&syncs));
            std::thread::Builder::new()
                .name("baton-store-sync".into())
                .spawn(move || run(&file, &syncs))?
        };
        let backend = Self {
            file,
            syncs: Arc::clone(&syncs),
            thread: Mutex::new(Some(thread)),
        };
        Ok((backend, syncs))
    }

    /// Waits for an outstanding sync before the file is changed again.
    fn settled(&self) -> std::io::Result<()> {
        self.syncs.settle().map_err(std::io::Error::other)
    }
}

/// The sync thread: one `fdatasync` covers every request made before it.
fn run(file: &FileBackend, syncs: &Syncs) {
    let mut state = syncs.state();
    loop {
        while state.done >= state.asked && !state.stop {
            state = syncs.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.done >= state.asked {
            return;
        }
        let covers = state.asked;
        drop(state);
        let synced = file.sync_data();
        state = syncs.state();
        match synced {
            Ok(()) => state.done = covers,
            Err(e) => {
                tracing::error!(error = %e, "store file sync failed; the store refuses writes");
                state.failed = Some(format!("syncing the store file failed: {e}"));
                state.done = covers;
            }
        }
        syncs.changed.notify_all();
    }
}

impl StorageBackend for BackgroundSync {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.settled()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.syncs.ask().map_err(std::io::Error::other)
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.settled()?;
        self.file.write(offset, data)
    }

    /// Finishes the outstanding sync, stops the thread, closes the file.
    fn close(&self) -> std::io::Result<()> {
        let settled = self.settled();
        self.syncs.state().stop = true;
        self.syncs.changed.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        settled?;
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        self.syncs.state().stop = true;
        self.syncs.changed.notify_all();
        if let Some(thread) = self
            .thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = thread.join();
        }
    }
}
