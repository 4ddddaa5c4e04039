//! Rows laid over a [`Read`]: what a write staged before it lands
//! ([`crate::batch::Staged`]) and what the writer's open transaction holds
//! before it commits ([`crate::pending`]) both are. Reads see the rows
//! first, then what lies beneath.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::StoreError;
use crate::batch::Row;
use crate::tables::{Read, Table};

/// Rows by table and key; `None` marks a removed key. A key written twice
/// keeps its last value.
#[derive(Default)]
pub(crate) struct Overlay([BTreeMap<String, Option<Vec<u8>>>; Table::ALL.len()]);

impl Overlay {
    pub(crate) fn set(&mut self, table: Table, key: String, value: Option<Vec<u8>>) {
        self.0[table as usize].insert(key, value);
    }

    pub(crate) fn extend(&mut self, rows: Vec<Row>) {
        for (table, key, value) in rows {
            self.set(table, key, value);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.0.iter_mut().for_each(BTreeMap::clear);
    }

    /// The rows, table by table, each in key order.
    pub(crate) fn into_rows(self) -> Vec<Row> {
        Table::ALL
            .into_iter()
            .zip(self.0)
            .flat_map(|(table, rows)| rows.into_iter().map(move |(k, v)| (table, k, v)))
            .collect()
    }

    /// These rows over `base`, as one view to read.
    pub(crate) fn over<'a>(&'a self, base: &'a dyn Read) -> Over<'a> {
        Over { rows: self, base }
    }

    /// `rows` read from beneath, with this table's rows in `bounds` laid
    /// over them.
    fn lay(
        &self,
        table: Table,
        rows: Vec<(String, Vec<u8>)>,
        bounds: (Bound<&str>, Bound<&str>),
    ) -> BTreeMap<String, Vec<u8>> {
        let mut merged: BTreeMap<String, Vec<u8>> = rows.into_iter().collect();
        for (key, value) in self.0[table as usize].range::<str, _>(bounds) {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        merged
    }
}

/// An [`Overlay`] over what lies beneath it.
pub(crate) struct Over<'a> {
    rows: &'a Overlay,
    base: &'a dyn Read,
}

impl Read for Over<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.rows.0[table as usize].get(key) {
            Some(value) => Ok(value.clone()),
            None => self.base.get(table, key),
        }
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = self.base.scan(table)?;
        if self.rows.0[table as usize].is_empty() {
            return Ok(rows);
        }
        let all = (Bound::Unbounded, Bound::Unbounded);
        Ok(self.rows.lay(table, rows, all).into_iter().collect())
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
        let removed = self.rows.0[table as usize]
            .range::<str, _>(bounds)
            .filter(|(_, v)| v.is_none())
            .count();
        // Rows removed here may hide some of the first `limit` beneath.
        let rows = self
            .base
            .range(table, from, to, limit.saturating_add(removed))?;
        Ok(self
            .rows
            .lay(table, rows, bounds)
            .into_iter()
            .take(limit)
            .collect())
    }
}
