//! Rows the writer has put in its open redb transaction but not committed
//! yet: what every reader sees first.
//!
//! The writer keeps one redb write transaction open across batches and
//! commits it every `store.commit_every` (in memory; see [`crate::batch`]),
//! so redb's fixed cost per commit is paid once for many batches. A batch
//! is answered once its journal record is durable, which may be before its
//! transaction commits: until then its rows are here, and a reader looks
//! here before redb. The writer clears them only after the commit that
//! holds them, and a reader opens its redb snapshot under the same lock, so
//! no row is ever missing from both.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard};

use crate::StoreError;
use crate::batch::Row;
use crate::tables::{Read, Table};

type Rows = [BTreeMap<String, Option<Vec<u8>>>; Table::ALL.len()];

/// The uncommitted rows, by table; `None` marks a removed key.
#[derive(Default)]
pub(crate) struct Pending {
    rows: RwLock<Rows>,
}

impl Pending {
    /// Adds a batch's rows, in order.
    pub(crate) fn add(&self, rows: Vec<Row>) {
        let mut pending = self.rows.write().unwrap_or_else(|p| p.into_inner());
        for (table, key, value) in rows {
            pending[table as usize].insert(key, value);
        }
    }

    /// Forgets every row: the transaction holding them was committed.
    pub(crate) fn clear(&self) {
        let mut pending = self.rows.write().unwrap_or_else(|p| p.into_inner());
        for table in pending.iter_mut() {
            table.clear();
        }
    }

    /// Runs `f` on the pending rows over a redb snapshot that `base` opens
    /// while the rows cannot change.
    pub(crate) fn read<B: Read, T>(
        &self,
        base: impl FnOnce() -> Result<B, StoreError>,
        f: impl FnOnce(&dyn Read) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pending = self.rows.read().unwrap_or_else(|p| p.into_inner());
        let layered = Layered {
            pending,
            base: base()?,
        };
        f(&layered)
    }
}

/// The pending rows over a redb snapshot.
struct Layered<'a, B> {
    pending: RwLockReadGuard<'a, Rows>,
    base: B,
}

impl<B: Read> Layered<'_, B> {
    /// `rows` from the snapshot with the pending ones of `table` in
    /// `[from, to)` laid over them.
    fn over(
        &self,
        table: Table,
        rows: Vec<(String, Vec<u8>)>,
        from: Bound<&str>,
        to: Bound<&str>,
    ) -> BTreeMap<String, Vec<u8>> {
        let mut merged: BTreeMap<String, Vec<u8>> = rows.into_iter().collect();
        for (key, value) in self.pending[table as usize].range::<str, _>((from, to)) {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        merged
    }
}

impl<B: Read> Read for Layered<'_, B> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending[table as usize].get(key) {
            Some(value) => Ok(value.clone()),
            None => self.base.get(table, key),
        }
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = self.base.scan(table)?;
        if self.pending[table as usize].is_empty() {
            return Ok(rows);
        }
        let all = (Bound::Unbounded, Bound::Unbounded);
        Ok(self.over(table, rows, all.0, all.1).into_iter().collect())
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
        let bounds = (Bound::Included(from), Bound::Excluded(to));
        let removed = self.pending[table as usize]
            .range::<str, _>(bounds)
            .filter(|(_, v)| v.is_none())
            .count();
        // Rows removed here may hide some of the first `limit` below.
        let rows = self
            .base
            .range(table, from, to, limit.saturating_add(removed))?;
        Ok(self
            .over(table, rows, bounds.0, bounds.1)
            .into_iter()
            .take(limit)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot of plain rows, for the layering alone.
    struct Base(Vec<(String, Vec<u8>)>);

    impl Read for Base {
        fn get(&self, _: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self
                .0
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone()))
        }
        fn scan(&self, _: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            Ok(self.0.clone())
        }
        fn range(
            &self,
            _: Table,
            from: &str,
            to: &str,
            limit: usize,
        ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            Ok(self
                .0
                .iter()
                .filter(|(k, _)| k.as_str() >= from && k.as_str() < to)
                .take(limit)
                .cloned()
                .collect())
        }
    }

    fn row(key: &str, value: &str) -> (String, Vec<u8>) {
        (key.to_owned(), value.as_bytes().to_vec())
    }

    #[test]
    fn pending_rows_lie_over_the_snapshot_until_cleared() {
        let pending = Pending::default();
        pending.add(vec![
            (Table::Expiry, "b".into(), Some(b"B2".to_vec())),
            (Table::Expiry, "c".into(), None),
            (Table::Expiry, "e".into(), Some(b"E".to_vec())),
            (Table::Health, "a".into(), Some(b"other table".to_vec())),
        ]);
        let base = || {
            Ok(Base(vec![
                row("a", "A"),
                row("b", "B"),
                row("c", "C"),
                row("d", "D"),
            ]))
        };
        type Rows = Vec<(String, Vec<u8>)>;
        let read = |f: &dyn Fn(&dyn Read) -> Result<Rows, StoreError>| {
            pending.read(base, |r| f(r)).unwrap()
        };
        let got = pending
            .read(base, |r| {
                Ok((
                    r.get(Table::Expiry, "b")?,
                    r.get(Table::Expiry, "c")?,
                    r.get(Table::Expiry, "a")?,
                ))
            })
            .unwrap();
        assert_eq!(got, (Some(b"B2".to_vec()), None, Some(b"A".to_vec())));
        assert_eq!(
            read(&|r| r.scan(Table::Expiry)),
            vec![row("a", "A"), row("b", "B2"), row("d", "D"), row("e", "E")]
        );
        // Two rows from "b": "c" is removed, so "d" comes second.
        assert_eq!(
            read(&|r| r.range(Table::Expiry, "b", "z", 2)),
            vec![row("b", "B2"), row("d", "D")]
        );
        assert_eq!(read(&|r| r.range(Table::Expiry, "c", "c", 5)), vec![]);

        pending.clear();
        assert_eq!(
            read(&|r| r.scan(Table::Expiry)),
            vec![row("a", "A"), row("b", "B"), row("c", "C"), row("d", "D")]
        );
    }
}
