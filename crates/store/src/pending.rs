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

use std::sync::RwLock;

use crate::StoreError;
use crate::batch::Row;
use crate::overlay::Overlay;
use crate::tables::Read;

/// The uncommitted rows.
#[derive(Default)]
pub(crate) struct Pending {
    rows: RwLock<Overlay>,
}

impl Pending {
    /// Adds a batch's rows, in order.
    pub(crate) fn add(&self, rows: Vec<Row>) {
        let mut pending = self.rows.write().unwrap_or_else(|p| p.into_inner());
        pending.extend(rows);
    }

    /// Forgets every row: the transaction holding them was committed.
    pub(crate) fn clear(&self) {
        self.rows.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Runs `f` on the pending rows over a redb snapshot that `base` opens
    /// while the rows cannot change.
    pub(crate) fn read<B: Read, T>(
        &self,
        base: impl FnOnce() -> Result<B, StoreError>,
        f: impl FnOnce(&dyn Read) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pending = self.rows.read().unwrap_or_else(|p| p.into_inner());
        let base = base()?;
        f(&pending.over(&base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::Table;

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
