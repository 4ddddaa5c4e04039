//! The embedded store's file, `baton.redb`: opened only once redb has shown
//! it can read it, and checked (or repaired) on an operator's request.
//!
//! redb trusts a file it shut down cleanly and may panic on one damaged
//! outside it; it treats an empty file as a new database. Neither may cost a
//! router its contacts: before the real open, redb opens, recovers and
//! checks the file through a [`Scratch`] view that keeps every write in
//! memory, so a file that is refused is never written to. A file left by an
//! unclean shutdown (`kill -9`, power loss) is the normal crash path: redb
//! recovers it on open, losing nothing committed, and it opens as usual.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::backends::FileBackend;
use redb::{
    BackendError, Builder, Database, DatabaseError, ReadableDatabase, ReadableTableMetadata,
    StorageBackend, StorageError, TableDefinition, TableError,
};

use crate::StoreError;
use crate::batch::Row;
use crate::sync::{BackgroundSync, Syncs};
use crate::tables::Table;

/// The store's file name in the data directory.
pub(crate) const FILE_NAME: &str = "baton.redb";

/// redb's file header (magic number, layout, two commit slots): a shorter
/// file holds no database.
const HEADER_LEN: u64 = 320;

/// Memory redb may cache while it examines a file.
const SCRATCH_CACHE: usize = 16 << 20;

/// The open store file, and the handle on its background syncs.
pub(crate) type Opened = (Database, Arc<Syncs>);

/// Opens the store file at `path`, creating it when missing.
///
/// Refuses, without writing a byte to it, a file that holds no data (empty,
/// or shorter than redb's header), one redb cannot read, one redb panics on,
/// and one whose integrity check fails; the check reads the whole file once.
/// With `repair`, a damaged file redb can repair is first copied to
/// `baton.redb.bak-<unix seconds>` beside it, then repaired in place.
pub(crate) fn open_database(path: &Path, repair: bool) -> Result<Opened, StoreError> {
    open(path, repair).map(|(db, syncs, _)| (db, syncs))
}

/// [`open_database`], also returning the backup `repair` made.
fn open(path: &Path, repair: bool) -> Result<(Database, Arc<Syncs>, Option<PathBuf>), StoreError> {
    let bytes = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let (db, syncs) = backed(path, &Builder::new(), true)?;
            return Ok((db, syncs, None));
        }
        Err(e) => return Err(unavailable(format!("cannot read {}: {e}", path.display()))),
    };
    if bytes < HEADER_LEN {
        return Err(unavailable(no_data(path, bytes)));
    }
    let found = examine(path, &[])?;
    match &found.integrity {
        Integrity::Intact => {
            let recovered = Arc::new(AtomicBool::new(false));
            let (db, syncs) = backed(path, &builder(&recovered, false), false)?;
            if recovered.load(Ordering::Relaxed) {
                tracing::warn!(
                    path = %path.display(),
                    "store was not shut down cleanly: redb recovered it"
                );
            }
            Ok((db, syncs, None))
        }
        Integrity::Repairable(_) if repair => {
            let backup = back_up(path)?;
            // The way redb repaired it on the scratch view: a plain open and
            // its integrity check, or, when the plain open failed, the check
            // on open.
            let recovered = Arc::new(AtomicBool::new(false));
            let kept = |e: String| {
                unavailable(format!(
                    "{e}; the file as it was is kept in {}",
                    backup.display()
                ))
            };
            let repaired = guarded(|| {
                let mut db = builder(&recovered, !found.opened).open(path)?;
                db.check_integrity()?;
                Ok::<_, DatabaseError>(db)
            });
            let db = match repaired {
                Ok(Ok(db)) => db,
                Ok(Err(e)) => return Err(kept(open_failure(path, &e))),
                Err(panicked) => return Err(kept(damaged(path, &panicked))),
            };
            tracing::warn!(
                path = %path.display(),
                backup = %backup.display(),
                "store repaired by redb"
            );
            // Opened again as any sound file is, with its syncs in the
            // background.
            drop(db);
            let (db, syncs) = backed(path, &builder(&recovered, false), false)
                .map_err(|e| kept(e.to_string()))?;
            Ok((db, syncs, Some(backup)))
        }
        _ => Err(unavailable(refusal(path, &found))),
    }
}

/// What `baton-router check` found in a data directory's store file.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Whether redb opens the file as the router does.
    pub opened: bool,
    /// Why it does not, when it does not.
    pub problem: Option<String>,
    /// The file was not shut down cleanly: redb recovers it on open.
    pub needed_repair: bool,
    pub integrity: Integrity,
    /// Rows per table, as the router would serve them: what redb reads
    /// (after its repair, if it needs one) with the journal replayed.
    pub tables: Vec<(&'static str, Result<u64, String>)>,
    /// Journal records the router replays at start, or why it cannot.
    pub journal: Result<usize, String>,
    /// The copies of the files `--repair` kept before repairing them.
    pub backup: Option<PathBuf>,
    pub journal_backups: Vec<PathBuf>,
}

/// The result of redb's integrity check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// Every page of the committed trees matched its checksum.
    Intact,
    /// Damaged, but redb can repair it (possibly by going back to an
    /// earlier commit); the reason.
    Repairable(String),
    /// Damaged beyond what redb can repair; the reason.
    Damaged(String),
}

impl CheckReport {
    /// Whether the router would start on this file as it is.
    pub fn readable(&self) -> bool {
        self.opened && self.integrity == Integrity::Intact && self.journal.is_ok()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file: {} ({} bytes)", self.path.display(), self.bytes)?;
        match &self.problem {
            None => writeln!(f, "opens: yes")?,
            Some(problem) => writeln!(f, "opens: no: {problem}")?,
        }
        if self.needed_repair {
            writeln!(
                f,
                "shutdown: not clean; redb recovers it on open, keeping every commit"
            )?;
        }
        match &self.integrity {
            Integrity::Intact => writeln!(f, "integrity: intact")?,
            Integrity::Repairable(why) => writeln!(
                f,
                "integrity: damaged ({why}); redb can repair it, possibly losing the latest \
                 writes: run with --repair"
            )?,
            Integrity::Damaged(why) => writeln!(
                f,
                "integrity: damaged beyond repair ({why}); restore a backup, or move the file \
                 away to start a new store"
            )?,
        }
        match &self.journal {
            Ok(0) => writeln!(f, "journal: nothing to replay")?,
            Ok(n) => writeln!(
                f,
                "journal: {n} records not yet in the file; the router replays them at start"
            )?,
            Err(why) => writeln!(f, "journal: unreadable: {why}")?,
        }
        if !self.tables.is_empty() {
            let after = if self.opened && self.integrity == Integrity::Intact {
                ""
            } else {
                " (after repair)"
            };
            writeln!(f, "rows{after}:")?;
            for (name, rows) in &self.tables {
                match rows {
                    Ok(n) => writeln!(f, "  {name}: {n}")?,
                    Err(e) => writeln!(f, "  {name}: unreadable: {e}")?,
                }
            }
        }
        if let Some(backup) = &self.backup {
            writeln!(f, "backup of the file before repair: {}", backup.display())?;
        }
        for backup in &self.journal_backups {
            writeln!(
                f,
                "backup of a journal file before repair: {}",
                backup.display()
            )?;
        }
        Ok(())
    }
}

/// Reports on `dir/baton.redb` without changing it; with `repair`, first
/// lets redb repair a damaged file it can repair, keeping a copy of it.
pub fn check(dir: &Path, repair: bool) -> Result<CheckReport, StoreError> {
    let path = dir.join(FILE_NAME);
    let journal_backups = if repair {
        crate::journal::repair(dir)?
    } else {
        Vec::new()
    };
    let journal = crate::journal::read(dir).map_err(|e| e.to_string());
    let replay = journal.as_deref().unwrap_or_default();
    let bytes = std::fs::metadata(&path)
        .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))?
        .len();
    let mut report = if bytes < HEADER_LEN {
        CheckReport {
            path: path.clone(),
            bytes,
            opened: false,
            problem: Some(no_data(&path, bytes)),
            needed_repair: false,
            integrity: Integrity::Damaged("no redb header".into()),
            tables: Vec::new(),
            journal: Ok(0),
            backup: None,
            journal_backups: Vec::new(),
        }
    } else {
        let found = examine(&path, replay)?;
        if repair && matches!(found.integrity, Integrity::Repairable(_)) {
            let (db, _, backup) = open(&path, true)?;
            drop(db);
            let bytes = std::fs::metadata(&path)
                .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))?
                .len();
            let mut report = examine(&path, replay)?.report(path, bytes);
            report.backup = backup;
            report
        } else {
            found.report(path, bytes)
        }
    };
    report.journal = journal.map(|records| records.len());
    report.journal_backups = journal_backups;
    Ok(report)
}

/// Opens (or, with `new`, creates) the file through a [`BackgroundSync`]
/// backend.
fn backed(path: &Path, builder: &Builder, new: bool) -> Result<(Database, Arc<Syncs>), StoreError> {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(new)
        .open(path)
        .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
    let backend = FileBackend::new(file).map_err(|e| open_error(path, &e))?;
    let (backend, syncs) = BackgroundSync::new(backend)
        .map_err(|e| unavailable(format!("cannot start the store's sync thread: {e}")))?;
    let db = guarded(|| builder.create_with_backend(backend))
        .map_err(|p| unavailable(damaged(path, &p)))?
        .map_err(|e| open_error(path, &e))?;
    Ok((db, syncs))
}

/// What redb made of a file, on a [`Scratch`] view of it.
struct Found {
    opened: bool,
    problem: Option<String>,
    needed_repair: bool,
    integrity: Integrity,
    tables: Vec<(&'static str, Result<u64, String>)>,
}

impl Found {
    fn report(self, path: PathBuf, bytes: u64) -> CheckReport {
        CheckReport {
            path,
            bytes,
            opened: self.opened,
            problem: self.problem,
            needed_repair: self.needed_repair,
            integrity: self.integrity,
            tables: self.tables,
            journal: Ok(0),
            backup: None,
            journal_backups: Vec::new(),
        }
    }
}

/// Opens the file as the router does, then runs redb's integrity check;
/// when the open fails, opens it again with the check on open, which is
/// how redb repairs what it can. All on a scratch view: the file is left
/// as it was.
fn examine(path: &Path, replay: &[Vec<Row>]) -> Result<Found, StoreError> {
    let recovered = Arc::new(AtomicBool::new(false));
    let scratch = || {
        Scratch::open(path).map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))
    };
    let view = scratch()?;
    let plain = guarded(|| scratch_builder(&recovered, false).create_with_backend(view));
    let problem = match plain {
        Ok(Ok(mut db)) => {
            let integrity = match guarded(|| db.check_integrity()) {
                Ok(Ok(true)) => Integrity::Intact,
                Ok(Ok(false)) => Integrity::Repairable("its integrity check failed".into()),
                Ok(Err(e)) => Integrity::Damaged(e.to_string()),
                Err(panicked) => Integrity::Damaged(panicked),
            };
            let tables = match integrity {
                Integrity::Damaged(_) => Vec::new(),
                _ => count_rows(&replayed(db, replay)),
            };
            return Ok(Found {
                opened: true,
                problem: None,
                needed_repair: recovered.load(Ordering::Relaxed),
                integrity,
                tables,
            });
        }
        // Another process holds it: nothing to learn. Any other error,
        // I/O errors included, is in what redb read.
        Ok(Err(e @ (DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch))) => {
            return Err(open_error(path, &e));
        }
        Ok(Err(e)) => e.to_string(),
        Err(panicked) => panicked,
    };
    let checked = Arc::new(AtomicBool::new(false));
    let view = scratch()?;
    let outcome = guarded(|| scratch_builder(&checked, true).create_with_backend(view));
    let (integrity, tables) = match outcome {
        Ok(Ok(db)) => (
            Integrity::Repairable(problem.clone()),
            count_rows(&replayed(db, replay)),
        ),
        Ok(Err(e)) => (Integrity::Damaged(e.to_string()), Vec::new()),
        Err(panicked) => (Integrity::Damaged(panicked), Vec::new()),
    };
    Ok(Found {
        opened: false,
        problem: Some(problem),
        needed_repair: false,
        integrity,
        tables,
    })
}

/// The database with the journal's records applied, as the router applies
/// them at start; on a scratch view, so the file is not written. Left as it
/// was when redb refuses them (the count then shows the file alone).
fn replayed(db: Database, replay: &[Vec<Row>]) -> Database {
    if replay.is_empty() {
        return db;
    }
    let applied = guarded(|| {
        let txn = db.begin_write().map_err(StoreError::unavailable)?;
        {
            let mut view = crate::embedded::RedbWrite::new(&txn);
            for rows in replay {
                view.apply(rows)?;
            }
        }
        txn.commit().map_err(StoreError::unavailable)
    });
    if let Ok(Err(e)) | Err(e) = applied.map_err(StoreError::Unavailable) {
        tracing::warn!(error = %e, "cannot apply the journal to the store's copy");
    }
    db
}

fn count_rows(db: &Database) -> Vec<(&'static str, Result<u64, String>)> {
    let count = |table: Table| -> Result<u64, String> {
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let definition: TableDefinition<&str, &[u8]> = TableDefinition::new(table.name());
        match txn.open_table(definition) {
            Ok(t) => t.len().map_err(|e| e.to_string()),
            Err(TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.to_string()),
        }
    };
    Table::ALL
        .into_iter()
        .map(|table| {
            let rows = guarded(|| count(table)).unwrap_or_else(Err);
            (table.name(), rows)
        })
        .collect()
}

/// [`builder`] for a [`Scratch`] view, which reads the file once.
fn scratch_builder(recovered: &Arc<AtomicBool>, check_on_open: bool) -> Builder {
    let mut builder = builder(recovered, check_on_open);
    builder.set_cache_size(SCRATCH_CACHE);
    builder
}

/// A redb builder that notes, in `recovered`, that the open had to repair
/// the file; `check_on_open` verifies every page first (a repair too).
fn builder(recovered: &Arc<AtomicBool>, check_on_open: bool) -> Builder {
    let mut builder = Builder::new();
    let recovered = Arc::clone(recovered);
    builder
        .set_repair_callback(move |_| recovered.store(true, Ordering::Relaxed))
        .set_check_integrity_on_open(check_on_open);
    builder
}

/// Runs `f`, turning a panic inside redb into a message. The panic is not
/// printed: the error that reports it is (a debug build of redb panics
/// where a release build returns [`StorageError::Corrupted`]).
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    quiet_panics();
    let was = GUARDED.replace(true);
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.set(was);
    result.map_err(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        format!("redb panicked: {what}")
    })
}

thread_local! {
    /// Whether this thread runs [`guarded`] code.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Installs, once, a panic hook that logs a panic in [`guarded`] code at
/// debug level and hands every other panic to the hook it replaced.
fn quiet_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.get() {
                tracing::debug!(panic = %info, "redb panicked on the store file");
            } else {
                previous(info);
            }
        }));
    });
}

/// Copies the file to `<name>.bak-<unix seconds>` beside it, synced.
pub(crate) fn back_up(path: &Path) -> Result<PathBuf, StoreError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path
        .file_name()
        .map_or_else(|| FILE_NAME.into(), |n| n.to_string_lossy());
    let mut backup = path.with_file_name(format!("{name}.bak-{secs}"));
    let mut n = 1;
    while backup.exists() {
        backup = path.with_file_name(format!("{name}.bak-{secs}-{n}"));
        n += 1;
    }
    let copied = std::fs::copy(path, &backup)
        .and_then(|_| File::open(&backup))
        .and_then(|f| f.sync_all());
    copied.map_err(|e| {
        unavailable(format!(
            "cannot copy {} to {} before repairing it: {e}",
            path.display(),
            backup.display()
        ))
    })?;
    Ok(backup)
}

fn unavailable(message: String) -> StoreError {
    StoreError::Unavailable(message)
}

fn check_hint(path: &Path) -> String {
    let dir = path.parent().unwrap_or(Path::new("."));
    format!("baton-router check --data-dir {}", dir.display())
}

fn no_data(path: &Path, bytes: u64) -> String {
    let size = if bytes == 0 {
        "is empty".to_owned()
    } else {
        format!("is {bytes} bytes, shorter than a redb header")
    };
    format!(
        "{} {size}: it holds no data, and baton will not start empty over it; move it away \
         to start a new store",
        path.display()
    )
}

fn damaged(path: &Path, why: &str) -> String {
    format!(
        "{} is damaged and redb cannot read it ({why}); `{}` says what can be recovered",
        path.display(),
        check_hint(path)
    )
}

fn open_error(path: &Path, e: &DatabaseError) -> StoreError {
    unavailable(open_failure(path, e))
}

fn open_failure(path: &Path, e: &DatabaseError) -> String {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            format!("{} is in use by another process", path.display())
        }
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() != io::ErrorKind::InvalidData => {
            format!("cannot open {}: {io}", path.display())
        }
        other => damaged(path, &other.to_string()),
    }
}

fn refusal(path: &Path, found: &Found) -> String {
    match &found.integrity {
        Integrity::Repairable(why) => format!(
            "{} is damaged ({why}); redb can repair it, possibly losing the latest writes: \
             `{} --repair` keeps a copy and repairs it",
            path.display(),
            check_hint(path)
        ),
        Integrity::Damaged(why) => damaged(path, why),
        Integrity::Intact => damaged(path, found.problem.as_deref().unwrap_or("it does not open")),
    }
}

/// A view of the file through which redb may open, recover and check it as
/// it likes: reads come from the file unless redb wrote there, and writes
/// stay in memory; nothing here writes to the file. redb's locks are taken
/// on the file itself, so a router using it is not disturbed. Byte-range
/// locks need a writable handle: a file this process may only read is
/// examined without them.
#[derive(Debug)]
struct Scratch {
    file: FileBackend,
    locks: bool,
    state: Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    /// The length redb sees.
    len: u64,
    /// How much of the file is still visible (redb may have shrunk it).
    file_len: u64,
    /// Blocks redb wrote, by index.
    blocks: BTreeMap<u64, Vec<u8>>,
}

const BLOCK: u64 = 4096;

impl Scratch {
    fn open(path: &Path) -> Result<Self, DatabaseError> {
        let (file, locks) = match File::options().read(true).write(true).open(path) {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => (File::open(path)?, false),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        let file = FileBackend::new(file)?;
        Ok(Self {
            file,
            locks,
            state: Mutex::new(Overlay {
                len,
                file_len: len,
                blocks: BTreeMap::new(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, Overlay> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `out` from the file at `offset`, zeros past what is visible.
    fn read_file(&self, file_len: u64, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let from_file = file_len.saturating_sub(offset).min(out.len() as u64) as usize;
        if from_file > 0 {
            self.file.read(offset, &mut out[..from_file])?;
        }
        out[from_file..].fill(0);
        Ok(())
    }
}

impl StorageBackend for Scratch {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.state();
        let end = offset + out.len() as u64;
        if end > state.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            ));
        }
        let mut pos = offset;
        while pos < end {
            let at = (pos - offset) as usize;
            let block = pos / BLOCK;
            if let Some(data) = state.blocks.get(&block) {
                let within = (pos % BLOCK) as usize;
                let n = (BLOCK - pos % BLOCK).min(end - pos) as usize;
                out[at..at + n].copy_from_slice(&data[within..within + n]);
                pos += n as u64;
            } else {
                let next = state
                    .blocks
                    .range(block..)
                    .next()
                    .map_or(end, |(b, _)| (b * BLOCK).min(end));
                let n = (next - pos) as usize;
                self.read_file(state.file_len, pos, &mut out[at..at + n])?;
                pos = next;
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state();
        if len < state.len {
            state.file_len = state.file_len.min(len);
            let first_gone = len.div_ceil(BLOCK);
            state.blocks.split_off(&first_gone);
            if let Some(data) = state.blocks.get_mut(&(len / BLOCK)) {
                data[(len % BLOCK) as usize..].fill(0);
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state();
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let block = pos / BLOCK;
            if !state.blocks.contains_key(&block) {
                let mut fresh = vec![0; BLOCK as usize];
                self.read_file(state.file_len, block * BLOCK, &mut fresh)?;
                state.blocks.insert(block, fresh);
            }
            let within = (pos % BLOCK) as usize;
            let n = (BLOCK - pos % BLOCK).min(end - pos) as usize;
            let at = (pos - offset) as usize;
            if let Some(target) = state.blocks.get_mut(&block) {
                target[within..within + n].copy_from_slice(&data[at..at + n]);
            }
            pos += n as u64;
        }
        state.len = state.len.max(end);
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        if !self.locks {
            return Err(BackendError::Unsupported);
        }
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        if !self.locks {
            return Err(BackendError::Unsupported);
        }
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        if !self.locks {
            return Err(BackendError::Unsupported);
        }
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        if !self.locks {
            return Err(BackendError::Unsupported);
        }
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        if !self.locks {
            return Err(BackendError::Unsupported);
        }
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        if !self.locks {
            return Err(BackendError::Unsupported);
        }
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_over(bytes: &[u8]) -> (baton_test_support::TempDir, Scratch) {
        let dir = baton_test_support::TempDir::new("scratch");
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        let scratch = Scratch::open(&path).unwrap();
        (dir, scratch)
    }

    fn read(s: &Scratch, offset: u64, n: usize) -> Vec<u8> {
        let mut out = vec![0xee; n];
        s.read(offset, &mut out).unwrap();
        out
    }

    #[test]
    fn scratch_reads_writes_over_the_file_and_never_writes_it() {
        let original: Vec<u8> = (0..3 * BLOCK).map(|i| (i % 251) as u8).collect();
        let (dir, s) = scratch_over(&original);
        s.write(BLOCK - 2, &[1, 2, 3, 4]).unwrap();
        let mut expected = original.clone();
        expected[BLOCK as usize - 2..BLOCK as usize + 2].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(read(&s, 0, expected.len()), expected);

        // Shrink into the written block, then grow: the tail reads as zeros.
        s.set_len(BLOCK + 1).unwrap();
        s.set_len(4 * BLOCK).unwrap();
        expected.truncate(BLOCK as usize + 1);
        expected.resize(4 * BLOCK as usize, 0);
        assert_eq!(read(&s, 0, expected.len()), expected);
        assert!(s.read(4 * BLOCK - 1, &mut [0; 2]).is_err());

        // Writing past the end extends it.
        s.write(5 * BLOCK, &[9]).unwrap();
        assert_eq!(s.len().unwrap(), 5 * BLOCK + 1);
        assert_eq!(read(&s, 5 * BLOCK - 1, 2), vec![0, 9]);

        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), original);
    }
}
