//! The group planner: which statements an open group's changes become, and in what order.
//! Sans-IO: changes go in, statement plans come out; the applier only executes them.
//!
//! ```text
//!  insert / update / delete / statement / truncate ──▶ per-table buffers ──▶ ready plans (in order)
//!                                                         ▲ flushed by the rules of its TableOrder
//! ```
//!
//! Reordering is allowed only where nothing on the target can tell. What can tell is decided per
//! table from the target catalog ([`TableOrder`]):
//!
//! * `Keyed`: the only unique index (or none) is implied by the replica identity key, and no
//!   trigger fires. Changes to different keys then commute, so per table deletes, inserts and
//!   updates are buffered separately and sent as deletes ─▶ inserts ─▶ folded updates. An
//!   insert first sends the table's deletes (it may reuse a key); a delete first sends the
//!   table's inserts and updates (it may remove those rows); any other change first sends
//!   everything buffered for the table.
//! * `Table`: other unique indexes or exclusion constraints exist. A multi-row UPDATE checks
//!   uniqueness row by row in an order of its own, and folding can skip a state the source
//!   passed through (two rows swapping a unique value), so the table's changes keep stream
//!   order: only consecutive inserts (checked row by row in stream order) and consecutive
//!   deletes (which never violate uniqueness) are merged into one statement.
//! * `Global`: triggers fire on the table (or `session_replication_role = replica` could not be
//!   set, so foreign keys and all triggers fire): stream order across tables too, and only
//!   consecutive inserts into the table are merged.
//!
//! Tables other than `Global` ones commute with each other: no unique index, exclusion constraint
//! or (disabled) foreign key spans two tables.

use std::collections::VecDeque;

use super::batch::{
    ColumnSet, DeleteRun, InsertRun, MAX_BUFFERED_BYTES, MAX_BUFFERED_ROWS, UpdateRun, next_chunk,
    rows_per_delete, rows_per_insert, rows_per_update,
};
use super::error::Operation;
use super::statements::StatementKind;
use super::value::Param;

/// How freely a table's changes may be reordered and merged (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableOrder {
    Keyed,
    Table,
    Global,
}

/// One statement to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    Rows {
        oid: u32,
        kind: StatementKind,
        /// Inserted or SET columns (empty for deletes).
        columns: ColumnSet,
        params: Vec<Param>,
        operation: Operation,
    },
    Truncate {
        oids: Vec<u32>,
        restart_identity: bool,
    },
}

/// What is buffered for one table.
#[derive(Debug)]
struct Buffer {
    oid: u32,
    order: TableOrder,
    deletes: Option<DeleteRun>,
    inserts: Option<InsertRun>,
    /// Only for `Keyed` tables.
    updates: Option<UpdateRun>,
}

impl Buffer {
    fn is_empty(&self) -> bool {
        self.deletes.is_none() && self.inserts.is_none() && self.updates.is_none()
    }
}

/// The open group's buffered changes and the plans ready to run.
#[derive(Debug, Default)]
pub(crate) struct Planner {
    buffers: Vec<Buffer>,
    ready: VecDeque<Plan>,
    buffered_rows: usize,
    buffered_bytes: usize,
}

impl Planner {
    /// The next plan to execute, in order.
    pub fn next_plan(&mut self) -> Option<Plan> {
        self.ready.pop_front()
    }

    /// Nothing buffered and nothing ready.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.buffers.iter().all(Buffer::is_empty)
    }

    /// Forget everything (the target transaction was rolled back).
    pub fn clear(&mut self) {
        *self = Planner::default();
    }

    /// An inserted row: the values of `columns`, in column order.
    pub fn insert(&mut self, oid: u32, order: TableOrder, columns: ColumnSet, row: Vec<Param>) {
        self.before_change(oid, order);
        let i = self.buffer(oid, order);
        self.flush_deletes(i);
        if self.buffers[i]
            .inserts
            .as_ref()
            .is_some_and(|run| run.columns != columns)
        {
            self.flush_inserts(i);
        }
        let bytes: usize = row.iter().map(Param::size).sum();
        let run = self.buffers[i].inserts.get_or_insert_with(|| InsertRun {
            oid,
            columns,
            width: row.len(),
            params: Vec::new(),
            rows: 0,
            bytes: 0,
        });
        run.params.extend(row);
        run.rows += 1;
        run.bytes += bytes;
        let full = run.rows >= rows_per_insert(run.width);
        self.buffered_rows += 1;
        self.buffered_bytes += bytes;
        if full {
            self.flush_inserts(i);
        }
        self.bound_memory();
    }

    /// An update that keeps its key (`key`: the key values; `values`: per column the new value,
    /// `None` where the source did not send it, an unchanged TOAST value).
    pub fn update(
        &mut self,
        oid: u32,
        order: TableOrder,
        key: Vec<Param>,
        values: Vec<Option<Param>>,
    ) {
        if order != TableOrder::Keyed {
            let mut columns = ColumnSet::with_columns(values.len());
            let mut params = Vec::with_capacity(values.len() + key.len());
            for (i, value) in values.into_iter().enumerate() {
                if let Some(value) = value {
                    columns.insert(i);
                    params.push(value);
                }
            }
            if params.is_empty() {
                return;
            }
            params.extend(key);
            self.statement(
                Plan::Rows {
                    oid,
                    kind: StatementKind::UpdateByKey,
                    columns,
                    params,
                    operation: Operation::Update,
                },
                order,
            );
            return;
        }
        self.before_change(oid, order);
        let i = self.buffer(oid, order);
        let run = self.buffers[i]
            .updates
            .get_or_insert_with(|| UpdateRun::new(oid));
        let (added, bytes) = run.add(key, values);
        self.buffered_rows += usize::from(added);
        self.buffered_bytes += bytes;
        self.bound_memory();
    }

    /// A delete by key.
    pub fn delete(&mut self, oid: u32, order: TableOrder, key: Vec<Param>) {
        if order == TableOrder::Global {
            self.statement(
                Plan::Rows {
                    oid,
                    kind: StatementKind::DeleteByKey,
                    columns: ColumnSet::default(),
                    params: key,
                    operation: Operation::Delete,
                },
                order,
            );
            return;
        }
        self.before_change(oid, order);
        let i = self.buffer(oid, order);
        self.flush_inserts(i);
        self.flush_updates(i);
        let bytes: usize = key.iter().map(Param::size).sum();
        let run = self.buffers[i].deletes.get_or_insert_with(|| DeleteRun {
            oid,
            width: key.len(),
            keys: Vec::new(),
            rows: 0,
            bytes: 0,
        });
        run.keys.extend(key);
        run.rows += 1;
        run.bytes += bytes;
        let full = run.rows >= rows_per_delete(run.width);
        self.buffered_rows += 1;
        self.buffered_bytes += bytes;
        if full {
            self.flush_deletes(i);
        }
        self.bound_memory();
    }

    /// Any other change of one table (a key change, an identity-FULL update or delete): it goes
    /// after everything buffered for its table.
    pub fn statement(&mut self, plan: Plan, order: TableOrder) {
        let oid = match &plan {
            Plan::Rows { oid, .. } => *oid,
            Plan::Truncate { .. } => {
                self.flush_all();
                self.ready.push_back(plan);
                return;
            }
        };
        self.before_change(oid, order);
        self.flush_table(oid);
        self.ready.push_back(plan);
    }

    /// A TRUNCATE of `oids`: after everything (it may reach tables with buffered rows).
    pub fn truncate(&mut self, oids: Vec<u32>, restart_identity: bool) {
        self.flush_all();
        self.ready.push_back(Plan::Truncate {
            oids,
            restart_identity,
        });
    }

    /// Send what is buffered for `oid` (its shape is about to change).
    pub fn flush_table(&mut self, oid: u32) {
        if let Some(i) = self.buffers.iter().position(|b| b.oid == oid) {
            self.flush_buffer(i);
        }
    }

    /// Send everything buffered (the group commits).
    pub fn flush_all(&mut self) {
        for i in 0..self.buffers.len() {
            self.flush_buffer(i);
        }
    }

    /// Stream order across tables where a `Global` table is involved: before a change to `oid`,
    /// send what other tables buffered if either side is `Global`.
    fn before_change(&mut self, oid: u32, order: TableOrder) {
        for i in 0..self.buffers.len() {
            let buffer = &self.buffers[i];
            if buffer.oid != oid
                && !buffer.is_empty()
                && (order == TableOrder::Global || buffer.order == TableOrder::Global)
            {
                self.flush_buffer(i);
            }
        }
        // `Table` and `Global` keep stream order inside the table: only the newest run may grow.
        if order != TableOrder::Keyed {
            if let Some(i) = self.buffers.iter().position(|b| b.oid == oid) {
                self.buffers[i].order = order;
            }
        }
    }

    fn buffer(&mut self, oid: u32, order: TableOrder) -> usize {
        match self.buffers.iter().position(|b| b.oid == oid) {
            Some(i) => {
                self.buffers[i].order = order;
                i
            }
            None => {
                self.buffers.push(Buffer {
                    oid,
                    order,
                    deletes: None,
                    inserts: None,
                    updates: None,
                });
                self.buffers.len() - 1
            }
        }
    }

    /// In the one order that is right for every `TableOrder`: deletes (an insert that arrived
    /// after them sent them first), inserts, then folded updates (which may be of rows inserted
    /// in the same group). `Table` and `Global` tables hold at most one run at a time.
    fn flush_buffer(&mut self, i: usize) {
        self.flush_deletes(i);
        self.flush_inserts(i);
        self.flush_updates(i);
    }

    fn bound_memory(&mut self) {
        if self.buffered_rows >= MAX_BUFFERED_ROWS || self.buffered_bytes >= MAX_BUFFERED_BYTES {
            self.flush_all();
        }
    }

    fn flush_deletes(&mut self, i: usize) {
        let Some(run) = self.buffers[i].deletes.take() else {
            return;
        };
        self.buffered_rows -= run.rows;
        self.buffered_bytes -= run.bytes;
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
            self.ready.push_back(Plan::Rows {
                oid: run.oid,
                kind,
                columns: ColumnSet::default(),
                params: keys.by_ref().take(chunk * run.width).collect(),
                operation: Operation::Delete,
            });
        }
    }

    fn flush_inserts(&mut self, i: usize) {
        let Some(run) = self.buffers[i].inserts.take() else {
            return;
        };
        self.buffered_rows -= run.rows;
        self.buffered_bytes -= run.bytes;
        let full = rows_per_insert(run.width);
        let mut rows = run.rows;
        let mut params = run.params.into_iter();
        while rows > 0 {
            let chunk = next_chunk(rows, full);
            rows -= chunk;
            self.ready.push_back(Plan::Rows {
                oid: run.oid,
                kind: StatementKind::Insert { rows: chunk },
                columns: run.columns.clone(),
                params: params.by_ref().take(chunk * run.width).collect(),
                operation: Operation::Insert,
            });
        }
    }

    /// Folded updates as multi-row statements, one per set of columns sent (first seen first).
    fn flush_updates(&mut self, i: usize) {
        let Some(run) = self.buffers[i].updates.take() else {
            return;
        };
        self.buffered_rows -= run.entries.len();
        self.buffered_bytes -= run.bytes;
        let oid = run.oid;
        let mut shapes: Vec<(ColumnSet, usize, Vec<Param>)> = Vec::new();
        for (key, values) in run.entries {
            let mut set = ColumnSet::with_columns(values.len());
            let mut row = Vec::with_capacity(values.len() + key.len());
            for (c, value) in values.into_iter().enumerate() {
                if let Some(value) = value {
                    set.insert(c);
                    row.push(value);
                }
            }
            if row.is_empty() {
                continue;
            }
            row.extend(key);
            match shapes.iter_mut().find(|(s, _, _)| *s == set) {
                Some((_, rows, params)) => {
                    *rows += 1;
                    params.extend(row);
                }
                None => shapes.push((set, 1, row)),
            }
        }
        for (set, mut rows, params) in shapes {
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
                self.ready.push_back(Plan::Rows {
                    oid,
                    kind,
                    columns: set.clone(),
                    params: params.by_ref().take(chunk * width).collect(),
                    operation: Operation::Update,
                });
            }
        }
    }
}

#[cfg(test)]
mod model;
