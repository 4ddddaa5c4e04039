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
    file: Arc<dyn StorageBackend>,
    syncs: Arc<Syncs>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BackgroundSync {
    pub(crate) fn new(file: impl StorageBackend) -> std::io::Result<(Self, Arc<Syncs>)> {
        let file: Arc<dyn StorageBackend> = Arc::new(file);
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
fn run(file: &Arc<dyn StorageBackend>, syncs: &Syncs) {
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

/// A redb file in memory whose syncs take `delay`, and fail once `fail` is
/// set: for tests of what a slow or failing disk does.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct TestFile {
    inner: redb::backends::InMemoryBackend,
    pub fail: Arc<std::sync::atomic::AtomicBool>,
    pub syncs: Arc<std::sync::atomic::AtomicUsize>,
    pub delay: std::time::Duration,
}

#[cfg(test)]
impl StorageBackend for TestFile {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        std::thread::sleep(self.delay);
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected file sync failure"));
        }
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn slow() -> TestFile {
        TestFile {
            delay: std::time::Duration::from_millis(50),
            ..TestFile::default()
        }
    }

    #[test]
    fn a_sync_returns_at_once_and_the_next_write_waits_for_it() {
        let backend = slow();
        let synced = Arc::clone(&backend.syncs);
        let (file, syncs) = BackgroundSync::new(backend).unwrap();
        file.set_len(64).unwrap();
        file.write(0, &[1; 16]).unwrap();
        let started = std::time::Instant::now();
        file.sync_data().unwrap();
        let n = syncs.asked();
        assert_eq!(syncs.done(n), None, "the sync is still running");
        // The next write lands only once the sync covering the first did.
        file.write(16, &[2; 16]).unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(50));
        assert_eq!(synced.load(Ordering::SeqCst), 1);
        assert_eq!(syncs.done(n), Some(Ok(())));
        let mut out = [0; 32];
        file.read(0, &mut out).unwrap();
        assert_eq!(out[..16], [1; 16]);
        assert_eq!(out[16..], [2; 16]);
        file.close().unwrap();
    }

    #[test]
    fn a_failed_sync_fails_every_later_write_and_sync() {
        let backend = slow();
        backend.fail.store(true, Ordering::SeqCst);
        let (file, syncs) = BackgroundSync::new(backend).unwrap();
        file.set_len(64).unwrap();
        file.write(0, &[1; 16]).unwrap();
        file.sync_data().unwrap();
        let n = syncs.asked();
        let err = syncs.settle().unwrap_err();
        assert!(err.contains("injected file sync failure"), "{err}");
        assert!(matches!(syncs.done(n), Some(Err(_))));
        assert!(file.write(16, &[2; 16]).is_err());
        assert!(file.set_len(128).is_err());
        assert!(file.sync_data().is_err());
    }

    #[test]
    fn a_refused_file_takes_no_more_writes() {
        let (file, syncs) = BackgroundSync::new(slow()).unwrap();
        syncs.refuse("the journal could not be synced".into());
        let err = file.write(0, &[1]).unwrap_err().to_string();
        assert!(err.contains("the journal could not be synced"), "{err}");
    }
}
