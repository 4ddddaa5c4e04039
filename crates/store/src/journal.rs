//! The embedded store's write-ahead journal: what makes a batch durable.
//!
//! A batch's rows are appended to the journal and redb takes them in a
//! commit that is not synced; one `fdatasync` of the journal (a few
//! sequential pages) then makes every batch written before it durable.
//! Every `store.checkpoint_every` the writer makes one redb commit durable,
//! which covers everything journalled before it, and the journal moves on.
//! A crash loses neither: at open, what the journal holds is put back into
//! redb before anything else runs.
//!
//! Two files take turns, `baton.journal.0` and `baton.journal.1`. At a
//! checkpoint the writer moves to the other file, and the one it leaves is
//! reused only once that checkpoint's fsync is done. Each file starts with a
//! header naming the sequence number of its first record; records follow,
//! each with its own sequence number and checksum, so what an earlier turn
//! left behind, or a write a crash cut short, is never read as new.
//!
//! Replaying rows that redb already holds changes nothing: a record holds
//! the whole new value of every key it writes, and records are replayed in
//! order from a point redb's durable state has reached.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::StoreError;
use crate::batch::Row;
use crate::tables::Table;

const MAGIC: &[u8; 8] = b"BATONJRN";
const VERSION: u32 = 1;
/// Magic, version, first sequence number, checksum.
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// Records start one page in, so a header write never shares their page.
const RECORDS_AT: u64 = 4096;
/// Payload length, sequence number, checksum.
const RECORD_HEAD: usize = 4 + 8 + 4;
/// A record longer than this is damage, not data.
const MAX_RECORD: usize = 1 << 30;

/// The journal's files in a data directory.
pub(crate) fn paths(dir: &Path) -> [PathBuf; 2] {
    [0, 1].map(|i| dir.join(format!("baton.journal.{i}")))
}

/// Where journal bytes go: a file, or a test double that fails on cue.
pub(crate) trait Medium: Send + Sync {
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    fn sync(&self) -> io::Result<()>;
}

impl Medium for File {
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}

struct Side {
    path: PathBuf,
    medium: Arc<dyn Medium>,
}

/// A journal file, for a thread that syncs what the writer wrote.
#[derive(Clone)]
pub(crate) struct SyncHandle {
    pub path: PathBuf,
    medium: Arc<dyn Medium>,
}

impl SyncHandle {
    /// Makes everything written to the file so far durable.
    pub(crate) fn sync(&self) -> Result<(), String> {
        self.medium
            .sync()
            .map_err(|e| format!("cannot sync {}: {e}", self.path.display()))
    }

    /// Zeroes the head of the record at `at` and syncs, so a reopen stops
    /// reading there: for records whose sync failed.
    pub(crate) fn take_back(&self, at: u64) -> Result<(), String> {
        self.medium
            .write_at(&[0; RECORD_HEAD], at)
            .and_then(|()| self.medium.sync())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// Where a record was written: which file, at which byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub side: usize,
    pub at: u64,
}

/// The journal, open for appending.
pub(crate) struct Journal {
    sides: [Side; 2],
    active: usize,
    /// Where the next record goes in the active file.
    offset: u64,
    next_seq: u64,
    /// Whether the inactive file may be written over: everything in it is
    /// in a durable redb commit.
    other_free: bool,
    /// Where the last record appended starts, while it may be taken back.
    last: Option<u64>,
    /// Set when a failed append could not be taken back: nothing more is
    /// written until the store is reopened.
    broken: Option<String>,
}

/// What the journal held at open, oldest first.
pub(crate) struct Replay {
    pub records: Vec<Vec<Row>>,
}

impl Journal {
    /// Opens (creating when missing) the journal files in `dir` and reads
    /// what they hold. The caller puts that into redb, makes it durable,
    /// then calls [`Journal::reset`] before the first append. Refuses,
    /// naming the file, a journal damaged before its last record: that is
    /// not a write a crash cut short.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Replay), StoreError> {
        let [p0, p1] = paths(dir);
        let mut found = Vec::new();
        let mut sides = Vec::new();
        let created = !p0.exists() || !p1.exists();
        for path in [p0, p1] {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
            let bytes = std::fs::read(&path)
                .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))?;
            found.push(read_side(&path, &bytes)?);
            sides.push(Side {
                path,
                medium: Arc::new(file),
            });
        }
        if created {
            // A new file's name must survive a crash as its records do.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| unavailable(format!("cannot sync {}: {e}", dir.display())))?;
        }
        let records = chain(&sides[0].path, &found[0], &sides[1].path, &found[1])?;
        let next_seq = found
            .iter()
            .map(|f| f.start + f.records.len() as u64)
            .max()
            .unwrap_or(0);
        let [s0, s1]: [Side; 2] = sides
            .try_into()
            .map_err(|_| unavailable("journal: two files expected".into()))?;
        let journal = Self::new([s0, s1], next_seq);
        Ok((journal, Replay { records }))
    }

    /// A journal over two media, empty: for tests that inject failures.
    #[cfg(test)]
    pub(crate) fn over(sides: [(PathBuf, Arc<dyn Medium>); 2], next_seq: u64) -> Self {
        Self::new(sides.map(|(path, medium)| Side { path, medium }), next_seq)
    }

    fn new(sides: [Side; 2], next_seq: u64) -> Self {
        Self {
            sides,
            active: 0,
            offset: RECORDS_AT,
            next_seq,
            other_free: false,
            last: None,
            broken: None,
        }
    }

    /// Starts both files afresh once everything they held is in a durable
    /// redb commit: each header names the next sequence number, so what
    /// they held is never read again.
    pub(crate) fn reset(&mut self) -> Result<(), StoreError> {
        for side in &self.sides {
            let header = header(self.next_seq);
            side.medium
                .write_at(&header, 0)
                .and_then(|()| side.medium.sync())
                .map_err(|e| unavailable(format!("cannot write {}: {e}", side.path.display())))?;
        }
        self.active = 0;
        self.offset = RECORDS_AT;
        self.other_free = true;
        Ok(())
    }

    /// Bytes of records in the active file.
    pub(crate) fn active_bytes(&self) -> u64 {
        self.offset - RECORDS_AT
    }

    /// Whether the writer may move to the other file.
    pub(crate) fn can_switch(&self) -> bool {
        self.other_free
    }

    /// Moves to the other file, for a checkpoint: the file left behind is
    /// kept until [`Journal::release_other`]. The new header reaches the
    /// disk with the next append's sync; until then the file still reads
    /// as what it held before, all of which is in redb's durable state.
    pub(crate) fn switch(&mut self) -> Result<(), StoreError> {
        debug_assert!(self.other_free);
        let next = 1 - self.active;
        let side = &self.sides[next];
        side.medium
            .write_at(&header(self.next_seq), 0)
            .map_err(|e| unavailable(format!("cannot write {}: {e}", side.path.display())))?;
        self.active = next;
        self.offset = RECORDS_AT;
        self.other_free = false;
        Ok(())
    }

    /// The checkpoint that made the other file unnecessary is durable.
    pub(crate) fn release_other(&mut self) {
        self.other_free = true;
    }

    /// The two files, for the thread that syncs them.
    pub(crate) fn sync_handles(&self) -> [SyncHandle; 2] {
        [0, 1].map(|i| SyncHandle {
            path: self.sides[i].path.clone(),
            medium: Arc::clone(&self.sides[i].medium),
        })
    }

    /// Writes one record holding `rows`, without syncing it: it is durable
    /// once its file is synced ([`SyncHandle::sync`]). On failure the
    /// record is taken back.
    pub(crate) fn write(&mut self, rows: &[Row]) -> Result<Written, StoreError> {
        if let Some(why) = &self.broken {
            return Err(unavailable(why.clone()));
        }
        let record = record(self.next_seq, rows);
        let side = &self.sides[self.active];
        match side.medium.write_at(&record, self.offset) {
            Ok(()) => {
                let written = Written {
                    side: self.active,
                    at: self.offset,
                };
                self.last = Some(self.offset);
                self.offset += record.len() as u64;
                self.next_seq += 1;
                Ok(written)
            }
            Err(e) => {
                let failed = format!("cannot write {}: {e}", side.path.display());
                self.undo(self.offset, &failed);
                Err(unavailable(failed))
            }
        }
    }

    /// Writes one record holding `rows` and syncs it: once this returns,
    /// the rows survive a crash. On failure the record is taken back (its
    /// head zeroed and synced), so a reopen never replays it.
    pub(crate) fn append(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        self.write(rows)?;
        let side = &self.sides[self.active];
        if let Err(e) = side.medium.sync() {
            let failed = format!("cannot sync {}: {e}", side.path.display());
            self.retract_as(&failed);
            return Err(unavailable(failed));
        }
        Ok(())
    }

    /// Takes back the last record written, when what it was written for
    /// failed after all (redb refused the commit): a reopen must not replay
    /// what its callers were told failed.
    pub(crate) fn retract(&mut self) -> Result<(), StoreError> {
        self.retract_as("the store commit failed after its journal record was written");
        match &self.broken {
            Some(why) => Err(unavailable(why.clone())),
            None => Ok(()),
        }
    }

    fn retract_as(&mut self, failed: &str) {
        if let Some(at) = self.last.take() {
            self.offset = at;
            self.next_seq -= 1;
            self.undo(at, failed);
        }
    }

    /// Zeroes the head of the record at `at` and syncs, so it is never
    /// read; when that fails too, the journal stops taking writes.
    fn undo(&mut self, at: u64, failed: &str) {
        let side = &self.sides[self.active];
        let undone = side
            .medium
            .write_at(&[0; RECORD_HEAD], at)
            .and_then(|()| side.medium.sync());
        if let Err(undo) = undone {
            self.broken = Some(format!(
                "{failed}; taking the write back failed too ({undo}): the store refuses \
                 writes until it is reopened"
            ));
        }
    }
}

/// What one file held.
#[derive(Debug, Default)]
struct Found {
    /// Sequence number of its first record.
    start: u64,
    records: Vec<Vec<Row>>,
}

fn header(start: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&start.to_le_bytes());
    let sum = crc32(&h);
    h.extend_from_slice(&sum.to_le_bytes());
    h
}

fn record(seq: u64, rows: &[Row]) -> Vec<u8> {
    // The head is filled in once the payload after it is known.
    let mut out = vec![0; RECORD_HEAD];
    out.reserve(4 + rows.iter().map(row_len).sum::<usize>());
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for (table, key, value) in rows {
        out.push(*table as u8);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        match value {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
    }
    let payload = &out[RECORD_HEAD..];
    let (len, sum) = (payload.len() as u32, record_sum(seq, payload));
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    out[12..RECORD_HEAD].copy_from_slice(&sum.to_le_bytes());
    out
}

fn row_len((_, key, value): &Row) -> usize {
    10 + key.len() + value.as_ref().map_or(0, Vec::len)
}

fn record_sum(seq: u64, payload: &[u8]) -> u32 {
    crc32_update(crc32(&seq.to_le_bytes()), payload)
}

/// Reads one file: its header, then records while each is whole and
/// follows the one before.
fn read_side(path: &Path, bytes: &[u8]) -> Result<Found, StoreError> {
    match read_records(path, bytes)? {
        Ok(found) => Ok(found),
        Err(at) => Err(unavailable(format!(
            "{} is damaged at byte {at}, before records that follow it: `baton-router check \
             --data-dir {} --repair` keeps a copy and replays what comes before the damage",
            path.display(),
            path.parent().unwrap_or(Path::new(".")).display()
        ))),
    }
}

/// [`read_side`], giving the byte where damage before whole records starts.
fn read_records(path: &Path, bytes: &[u8]) -> Result<Result<Found, usize>, StoreError> {
    if bytes.len() < HEADER_LEN {
        return Ok(Ok(Found::default()));
    }
    let head = &bytes[..HEADER_LEN];
    if head.iter().all(|&b| b == 0) {
        return Ok(Ok(Found::default()));
    }
    if &head[..8] != MAGIC {
        return Err(unavailable(format!(
            "{} is not a baton journal; move it away if it does not belong there",
            path.display()
        )));
    }
    let sum = u32::from_le_bytes(head[20..24].try_into().unwrap_or_default());
    if crc32(&head[..20]) != sum {
        // A header is written only over a file whose records are all in a
        // durable commit: one cut short holds nothing to replay.
        tracing::warn!(path = %path.display(), "journal header cut short; nothing to replay from it");
        return Ok(Ok(Found::default()));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
    if version != VERSION {
        return Err(unavailable(format!(
            "{} is journal version {version}, this baton reads version {VERSION}",
            path.display()
        )));
    }
    let start = u64::from_le_bytes(head[12..20].try_into().unwrap_or_default());
    let mut found = Found {
        start,
        records: Vec::new(),
    };
    let mut at = RECORDS_AT as usize;
    loop {
        let seq = start + found.records.len() as u64;
        match parse(bytes, at, seq) {
            Parsed::Record(rows, len) => {
                found.records.push(rows);
                at += len;
            }
            Parsed::End => {
                // Not a record here, yet the record after it follows on: the
                // head of this one was damaged.
                let len = bytes.get(at..at + 4).map_or(0, |b| {
                    u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize
                });
                if len <= MAX_RECORD
                    && matches!(
                        parse(bytes, at + RECORD_HEAD + len, seq + 1),
                        Parsed::Record(..)
                    )
                {
                    return Ok(Err(at));
                }
                return Ok(Ok(found));
            }
            Parsed::Damaged(len) => {
                // A record cut short by a crash is the last one written; a
                // whole record after a damaged one means the damage came later.
                if matches!(parse(bytes, at + len, seq + 1), Parsed::Record(..)) {
                    return Ok(Err(at));
                }
                return Ok(Ok(found));
            }
        }
    }
}

enum Parsed {
    /// A whole record with the expected sequence number, and its length.
    Record(Vec<Row>, usize),
    /// No record here: the end of what was written, or an older turn's.
    End,
    /// A record head naming the expected sequence number over a body that
    /// does not check out; its length as the head gives it.
    Damaged(usize),
}

fn parse(bytes: &[u8], at: usize, seq: u64) -> Parsed {
    let Some(head) = bytes.get(at..at + RECORD_HEAD) else {
        return Parsed::End;
    };
    let len = u32::from_le_bytes(head[..4].try_into().unwrap_or_default()) as usize;
    let found_seq = u64::from_le_bytes(head[4..12].try_into().unwrap_or_default());
    let sum = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default());
    if found_seq != seq || len > MAX_RECORD {
        return Parsed::End;
    }
    let Some(payload) = bytes.get(at + RECORD_HEAD..at + RECORD_HEAD + len) else {
        return Parsed::Damaged(RECORD_HEAD + len);
    };
    if record_sum(seq, payload) != sum {
        return Parsed::Damaged(RECORD_HEAD + len);
    }
    match decode(payload) {
        Some(rows) => Parsed::Record(rows, RECORD_HEAD + len),
        None => Parsed::Damaged(RECORD_HEAD + len),
    }
}

fn decode(payload: &[u8]) -> Option<Vec<Row>> {
    let mut r = Reader(payload);
    let n = r.u32()?;
    let mut rows = Vec::with_capacity(n.min(1 << 16) as usize);
    for _ in 0..n {
        let table = *Table::ALL.get(r.u8()? as usize)?;
        let key_len = r.u32()? as usize;
        let key = String::from_utf8(r.take(key_len)?.to_vec()).ok()?;
        let value = match r.u8()? {
            0 => None,
            1 => {
                let len = r.u32()? as usize;
                Some(r.take(len)?.to_vec())
            }
            _ => return None,
        };
        rows.push((table, key, value));
    }
    r.0.is_empty().then_some(rows)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
}

/// Both files' records as one sequence, oldest file first; they must follow
/// on from each other.
fn chain(p0: &Path, f0: &Found, p1: &Path, f1: &Found) -> Result<Vec<Vec<Row>>, StoreError> {
    let (mut older, newer, older_path, newer_path) = if f0.start <= f1.start {
        (f0, f1, p0, p1)
    } else {
        (f1, f0, p1, p0)
    };
    let older_end = older.start + older.records.len() as u64;
    if older.records.is_empty() || newer.records.is_empty() {
        if older.records.is_empty() {
            older = newer;
        }
        return Ok(older.records.clone());
    }
    if older_end != newer.start {
        return Err(unavailable(format!(
            "the journal files do not follow on: {} ends before record {older_end}, {} starts \
             at record {}",
            older_path.display(),
            newer_path.display(),
            newer.start
        )));
    }
    Ok(older
        .records
        .iter()
        .chain(&newer.records)
        .cloned()
        .collect())
}

/// What the journal in `dir` would replay at open, without changing it:
/// for `baton-router check`. Missing files hold nothing.
pub(crate) fn read(dir: &Path) -> Result<Vec<Vec<Row>>, StoreError> {
    let [p0, p1] = paths(dir);
    let (f0, f1) = (read_path(&p0)?, read_path(&p1)?);
    chain(&p0, &f0, &p1, &f1)
}

fn read_path(path: &Path) -> Result<Found, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => read_side(path, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Found::default()),
        Err(e) => Err(unavailable(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Repairs a journal damaged before its last record: each such file is
/// copied to `<name>.bak-<unix seconds>`, then cut at the damage (the head
/// of the damaged record zeroed), so the records before it are replayed and
/// the ones after it are not. Returns the copies made.
pub(crate) fn repair(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut copies = Vec::new();
    for path in paths(dir) {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(unavailable(format!("cannot read {}: {e}", path.display()))),
        };
        let Err(at) = read_records(&path, &bytes)? else {
            continue;
        };
        let copy = crate::file::back_up(&path)?;
        let cut = File::options().write(true).open(&path).and_then(|f| {
            f.write_all_at(&[0; RECORD_HEAD], at as u64)
                .and_then(|()| f.sync_data())
        });
        cut.map_err(|e| unavailable(format!("cannot repair {}: {e}", path.display())))?;
        tracing::warn!(path = %path.display(), byte = at, copy = %copy.display(), "journal cut at its damage");
        copies.push(copy);
    }
    Ok(copies)
}

fn unavailable(message: String) -> StoreError {
    StoreError::Unavailable(message)
}

/// CRC-32 (IEEE), as zlib computes it.
fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

/// CRC-32 (IEEE), eight bytes a step through eight tables (slicing-by-8).
fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    const TABLES: [[u32; 256]; 8] = {
        let mut tables = [[0u32; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            tables[0][i] = c;
            i += 1;
        }
        let mut t = 1;
        while t < 8 {
            let mut i = 0;
            while i < 256 {
                let prev = tables[t - 1][i];
                tables[t][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
                i += 1;
            }
            t += 1;
        }
        tables
    };
    let [t0, t1, t2, t3, t4, t5, t6, t7] = &TABLES;
    let mut c = !crc;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let lo = c ^ u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let hi = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        c = t7[(lo & 0xff) as usize]
            ^ t6[((lo >> 8) & 0xff) as usize]
            ^ t5[((lo >> 16) & 0xff) as usize]
            ^ t4[(lo >> 24) as usize]
            ^ t3[(hi & 0xff) as usize]
            ^ t2[((hi >> 8) & 0xff) as usize]
            ^ t1[((hi >> 16) & 0xff) as usize]
            ^ t0[(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = t0[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// A medium whose syncs fail while `fail` is set.
#[cfg(test)]
struct Flaky {
    file: File,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(test)]
impl Medium for Flaky {
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.file.sync_data()
    }
}

/// A journal in `dir` whose syncs fail while `fail` is set.
#[cfg(test)]
pub(crate) fn flaky(dir: &Path, fail: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> Journal {
    let sides = paths(dir).map(|path| {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("journal file");
        let medium: Arc<dyn Medium> = Arc::new(Flaky {
            file,
            fail: std::sync::Arc::clone(fail),
        });
        (path, medium)
    });
    Journal::over(sides, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_test_support::TempDir;

    fn rows(n: u8) -> Vec<Row> {
        vec![
            (Table::Contacts, format!("c{n}"), Some(vec![n; 40])),
            (Table::Decisions, format!("d{n}"), None),
        ]
    }

    fn reopen(dir: &Path) -> Result<Vec<Vec<Row>>, StoreError> {
        Journal::open(dir).map(|(_, replay)| replay.records)
    }

    #[test]
    fn crc32_matches_the_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        // Split anywhere, the running sum is the same as in one piece.
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let whole = crc32(&data);
        for cut in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let (a, b) = data.split_at(cut);
            assert_eq!(crc32_update(crc32(a), b), whole, "cut at {cut}");
        }
    }

    #[test]
    fn appended_records_are_read_back_in_order_across_a_switch() {
        let dir = TempDir::new("journal-order");
        {
            let (mut j, replay) = Journal::open(dir.path()).unwrap();
            assert!(replay.records.is_empty());
            j.reset().unwrap();
            j.append(&rows(1)).unwrap();
            j.append(&rows(2)).unwrap();
            j.switch().unwrap();
            j.append(&rows(3)).unwrap();
        }
        assert_eq!(reopen(dir.path()).unwrap(), vec![rows(1), rows(2), rows(3)]);
    }

    #[test]
    fn a_reused_file_never_reads_what_its_last_turn_left() {
        let dir = TempDir::new("journal-turns");
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.reset().unwrap();
        for n in 0..3 {
            j.append(&rows(n)).unwrap();
        }
        j.switch().unwrap();
        j.append(&rows(10)).unwrap();
        j.release_other();
        j.switch().unwrap();
        j.append(&rows(20)).unwrap();
        drop(j);
        // File 0 holds record 20 over the remains of 1 and 2; they are not
        // read, and file 1 comes first.
        assert_eq!(reopen(dir.path()).unwrap(), vec![rows(10), rows(20)]);
    }

    #[test]
    fn a_reset_journal_replays_nothing() {
        let dir = TempDir::new("journal-reset");
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.reset().unwrap();
        j.append(&rows(1)).unwrap();
        j.reset().unwrap();
        drop(j);
        assert!(reopen(dir.path()).unwrap().is_empty());
        // And the numbering goes on: a new record is read after a reopen.
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&rows(2)).unwrap();
        drop(j);
        assert_eq!(reopen(dir.path()).unwrap(), vec![rows(2)]);
    }

    #[test]
    fn a_record_cut_short_is_dropped_and_damage_before_others_is_refused() {
        let dir = TempDir::new("journal-torn");
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.reset().unwrap();
        for n in 0..3 {
            j.append(&rows(n)).unwrap();
        }
        drop(j);
        let path = &paths(dir.path())[0];
        let whole = std::fs::read(path).unwrap();
        let len = record(0, &rows(0)).len();

        // The last record cut short: the two before it are replayed.
        let cut = RECORDS_AT as usize + 3 * len - 5;
        std::fs::write(path, &whole[..cut]).unwrap();
        assert_eq!(reopen(dir.path()).unwrap(), vec![rows(0), rows(1)]);

        // A byte flipped in the head of the second record (its sequence
        // number), with a whole one after it.
        let mut flipped = whole.clone();
        flipped[RECORDS_AT as usize + len + 5] ^= 0xff;
        std::fs::write(path, &flipped).unwrap();
        let err = reopen(dir.path()).err().unwrap().to_string();
        let at = RECORDS_AT as usize + len;
        assert!(
            err.contains(&format!("baton.journal.0 is damaged at byte {at}")),
            "{err}"
        );

        // A byte flipped in the first record's rows, with whole ones after it.
        let mut flipped = whole.clone();
        flipped[RECORDS_AT as usize + RECORD_HEAD + 3] ^= 0xff;
        std::fs::write(path, &flipped).unwrap();
        let err = reopen(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("baton.journal.0 is damaged at byte 4096"),
            "{err}"
        );
        // Repaired: a copy is kept, and what came before the damage (here
        // nothing) is replayed, not what followed it.
        let copies = repair(dir.path()).unwrap();
        assert_eq!(copies.len(), 1);
        assert_eq!(std::fs::read(&copies[0]).unwrap(), flipped);
        assert!(reopen(dir.path()).unwrap().is_empty());
        assert!(repair(dir.path()).unwrap().is_empty());

        // Not a journal at all.
        std::fs::write(path, b"something else entirely, not a journal").unwrap();
        let err = reopen(dir.path()).err().unwrap().to_string();
        assert!(err.contains("is not a baton journal"), "{err}");
    }

    #[test]
    fn a_failed_append_is_taken_back_or_stops_the_journal() {
        let dir = TempDir::new("journal-fail");
        let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut j = flaky(dir.path(), &fail);
        j.reset().unwrap();
        j.append(&rows(1)).unwrap();
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = j.append(&rows(2)).unwrap_err().to_string();
        assert!(err.contains("injected fsync failure"), "{err}");
        // The undo's sync failed too: the journal refuses from now on.
        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        let err = j.append(&rows(3)).unwrap_err().to_string();
        assert!(err.contains("refuses writes until it is reopened"), "{err}");
        drop(j);
        // Record 2's head was zeroed by the undo's write: only 1 is replayed.
        assert_eq!(reopen(dir.path()).unwrap(), vec![rows(1)]);
    }
}
