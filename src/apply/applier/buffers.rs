//! Per-table buffers of an open group and the order they are sent in.
//!
//! ```text
//! per table:  deletes by key ─▶ inserts ─▶ folded updates      (flush_table / flush_all)
//! an insert first sends the table's deletes (it may reuse a key);
//! a buffered delete first sends the table's inserts and updates (it may remove those rows);
//! any other change to a table first sends everything buffered for it (`before_change`).
//! ```
//!
//! Without `session_replication_role = replica` only inserts are buffered, and a run is sent
//! before a change to any other table, so statements keep stream order.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::batch::{
    ColumnSet, DeleteRun, MAX_BUFFERED_BYTES, MAX_BUFFERED_ROWS, UpdateRun, next_chunk,
    rows_per_delete, rows_per_insert, rows_per_update,
};
use super::super::error::{ApplyError, Operation};
use super::super::statements::{StatementKey, StatementKind};
use super::super::value::Param;
use super::{Applier, check_width, key_params, param};
use crate::pgoutput::TupleData;

impl Applier {
    /// Buffer an update that keeps its key, merged with earlier ones to the same row.
    pub(super) async fn fold_update(
        &mut self,
        oid: u32,
        new: &TupleData,
    ) -> Result<(), ApplyError> {
        let relation = self.relations.get(oid)?;
        let mut key = Vec::new();
        key_params(relation, new, &mut key)?;
        let values: Vec<Option<Param>> = new.iter().map(param).collect();
        let index = match self.updates.iter().position(|r| r.oid == oid) {
            Some(i) => i,
            None => {
                self.updates.push(UpdateRun::new(oid));
                self.updates.len() - 1
            }
        };
        let (added, bytes) = self.updates[index].add(key, values);
        self.buffered_rows += usize::from(added);
        self.buffered_bytes += bytes;
        if self.buffered_rows >= MAX_BUFFERED_ROWS || self.buffered_bytes >= MAX_BUFFERED_BYTES {
            self.flush_all().await?;
        }
        Ok(())
    }

    /// Buffer a delete by key; rows inserted or updated earlier in the group go first.
    pub(super) async fn buffer_delete(
        &mut self,
        oid: u32,
        old: &TupleData,
    ) -> Result<(), ApplyError> {
        while let Some(i) = self.runs.iter().position(|r| r.oid == oid) {
            self.flush_run(i).await?;
        }
        while let Some(i) = self.updates.iter().position(|r| r.oid == oid) {
            self.flush_updates(i).await?;
        }
        let relation = self.relations.get(oid)?;
        check_width(relation, old)?;
        let mut key = Vec::new();
        key_params(relation, old, &mut key)?;
        self.count(oid, Operation::Delete);
        let index = match self.deletes.iter().position(|r| r.oid == oid) {
            Some(i) => i,
            None => {
                self.deletes.push(DeleteRun {
                    oid,
                    width: key.len(),
                    keys: Vec::new(),
                    rows: 0,
                    bytes: 0,
                });
                self.deletes.len() - 1
            }
        };
        let run = &mut self.deletes[index];
        let bytes: usize = key.iter().map(Param::size).sum();
        run.keys.extend(key);
        run.rows += 1;
        run.bytes += bytes;
        self.buffered_rows += 1;
        self.buffered_bytes += bytes;
        if run.rows >= rows_per_delete(run.width) {
            self.flush_deletes(index).await?;
        }
        if self.buffered_rows >= MAX_BUFFERED_ROWS || self.buffered_bytes >= MAX_BUFFERED_BYTES {
            self.flush_all().await?;
        }
        Ok(())
    }

    /// Send delete run `index` as multi-row DELETEs and forget it.
    pub(super) async fn flush_deletes(&mut self, index: usize) -> Result<(), ApplyError> {
        let run = self.deletes.swap_remove(index);
        self.buffered_rows -= run.rows;
        self.buffered_bytes -= run.bytes;
        let table = Arc::clone(&self.relations.get(run.oid)?.name);
        let full = rows_per_delete(run.width);
        let mut rows = run.rows;
        let mut keys = run.keys.into_iter();
        while rows > 0 {
            let chunk = next_chunk(rows, full);
            rows -= chunk;
            let kind = if chunk == 1 {
                StatementKind::DeleteByKey
            } else {
                StatementKind::DeleteRows { rows: chunk }
            };
            let key = StatementKey {
                oid: run.oid,
                kind,
                columns: ColumnSet::default(),
            };
            let params: Vec<Param> = keys.by_ref().take(chunk * run.width).collect();
            self.execute(key, Arc::clone(&table), Operation::Delete, params)
                .await?;
        }
        Ok(())
    }

    /// Before an update or delete of `oid`: send the inserts that must precede it.
    pub(super) async fn before_change(&mut self, oid: u32) -> Result<(), ApplyError> {
        if self.runs.is_empty() && self.updates.is_empty() && self.deletes.is_empty() {
            return Ok(());
        }
        if self.replica_role {
            self.flush_table(oid).await
        } else {
            self.flush_all().await
        }
    }

    /// Send what is buffered for `oid`, in the one order that is always right: deletes (an
    /// insert that arrived after them flushed them, so none reuses their keys), then inserts,
    /// then folded updates (which may be of rows inserted in the same group).
    pub(super) async fn flush_table(&mut self, oid: u32) -> Result<(), ApplyError> {
        while let Some(i) = self.deletes.iter().position(|r| r.oid == oid) {
            self.flush_deletes(i).await?;
        }
        while let Some(i) = self.runs.iter().position(|r| r.oid == oid) {
            self.flush_run(i).await?;
        }
        while let Some(i) = self.updates.iter().position(|r| r.oid == oid) {
            self.flush_updates(i).await?;
        }
        Ok(())
    }

    pub(super) async fn flush_all(&mut self) -> Result<(), ApplyError> {
        while !self.deletes.is_empty() {
            self.flush_deletes(self.deletes.len() - 1).await?;
        }
        while !self.runs.is_empty() {
            self.flush_run(self.runs.len() - 1).await?;
        }
        while !self.updates.is_empty() {
            self.flush_updates(self.updates.len() - 1).await?;
        }
        Ok(())
    }

    /// Send update run `index` and forget it: rows that set the same columns go together, as
    /// multi-row statements.
    pub(super) async fn flush_updates(&mut self, index: usize) -> Result<(), ApplyError> {
        let run = self.updates.swap_remove(index);
        self.buffered_rows -= run.entries.len();
        self.buffered_bytes -= run.bytes;
        let oid = run.oid;
        let mut shapes: HashMap<ColumnSet, (usize, Vec<Param>)> = HashMap::new();
        for (key, values) in run.entries {
            let mut set = ColumnSet::with_columns(values.len());
            let mut row = Vec::with_capacity(values.len() + key.len());
            for (i, value) in values.into_iter().enumerate() {
                if let Some(value) = value {
                    set.insert(i);
                    row.push(value);
                }
            }
            row.extend(key);
            let (rows, params) = shapes.entry(set).or_default();
            *rows += 1;
            params.extend(row);
        }
        let table = Arc::clone(&self.relations.get(oid)?.name);
        for (set, (mut rows, params)) in shapes {
            let width = params.len() / rows.max(1);
            let full = rows_per_update(width);
            let mut params = params.into_iter();
            while rows > 0 {
                let chunk = next_chunk(rows, full);
                rows -= chunk;
                // One row: the plain statement (an index lookup, no join to plan).
                let kind = if chunk == 1 {
                    StatementKind::UpdateByKey
                } else {
                    StatementKind::UpdateRows { rows: chunk }
                };
                let key = StatementKey {
                    oid,
                    kind,
                    columns: set.clone(),
                };
                let chunk_params: Vec<Param> = params.by_ref().take(chunk * width).collect();
                self.execute(key, Arc::clone(&table), Operation::Update, chunk_params)
                    .await?;
            }
        }
        Ok(())
    }

    /// Send run `index` as multi-row INSERTs and forget it.
    pub(super) async fn flush_run(&mut self, index: usize) -> Result<(), ApplyError> {
        let mut run = self.runs.swap_remove(index);
        self.buffered_rows -= run.rows;
        self.buffered_bytes -= run.bytes;
        let table = Arc::clone(&self.relations.get(run.oid)?.name);
        let full = rows_per_insert(run.width);
        let mut rows = run.rows;
        let mut params = std::mem::take(&mut run.params).into_iter();
        while rows > 0 {
            let chunk = next_chunk(rows, full);
            rows -= chunk;
            let key = StatementKey {
                oid: run.oid,
                kind: StatementKind::Insert { rows: chunk },
                columns: run.columns.clone(),
            };
            let chunk_params: Vec<Param> = params.by_ref().take(chunk * run.width).collect();
            self.execute(key, Arc::clone(&table), Operation::Insert, chunk_params)
                .await?;
        }
        Ok(())
    }
}
