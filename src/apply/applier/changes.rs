//! Row changes (Insert, Update, Delete, Truncate) turned into planner input: which statement,
//! which parameters, matched by key or by the whole old row.

use super::*;

impl Applier {
    pub(super) async fn insert(&mut self, insert: &Insert) -> Result<(), ApplyError> {
        let oid = insert.relation_oid;
        self.check_target(oid).await?;
        let relation = self.relations.get(oid)?;
        check_width(relation, &insert.new)?;
        let order = self.order(relation);
        // An unchanged-TOAST marker in an insert (a row-filter transformation) has no value:
        // leave the column out so the target's default applies, and say so once per column.
        let mut columns = ColumnSet::with_columns(relation.source.columns.len());
        let mut row = Vec::with_capacity(relation.source.columns.len());
        for (i, value) in insert.new.iter().enumerate() {
            let valueless = matches!(value, ColumnValue::UnchangedToast)
                && !relation.target.as_ref().is_some_and(|t| t.is_generated(i));
            if let Some(p) = written(relation, i, value) {
                columns.insert(i);
                row.push(p);
            } else if valueless && self.warned_valueless.insert((relation.name.clone(), i)) {
                let column = relation
                    .source
                    .columns
                    .get(i)
                    .map_or("?", |c| c.name.as_str());
                tracing::warn!(
                    table = %relation.name,
                    column,
                    "an insert came without this column's value: an UPDATE moved the row into \
                     the publication's row filter, and the source sends no value for a large \
                     (TOASTed) column the UPDATE left unchanged, so the target row holds the \
                     column's default. REPLICA IDENTITY FULL on the source table sends the value; \
                     logged once per column"
                );
            }
        }
        self.count(oid, Operation::Insert);
        self.planner.insert(oid, order, columns, row);
        self.run_plans().await
    }

    pub(super) async fn update(&mut self, update: &Update) -> Result<(), ApplyError> {
        let oid = update.relation_oid;
        self.check_target(oid).await?;
        self.count(oid, Operation::Update);
        let relation = self.relations.get(oid)?;
        check_width(relation, &update.new)?;
        let order = self.order(relation);
        if update.old.is_none() && relation.source.identity != ReplicaIdentity::Full {
            // The key is unchanged: the planner decides whether it may be folded.
            let mut key = Vec::new();
            key_params(relation, &update.new, &mut key)?;
            let values = update
                .new
                .iter()
                .enumerate()
                .map(|(i, value)| written(relation, i, value))
                .collect();
            self.planner.update(oid, order, key, values);
            return self.run_plans().await;
        }

        // SET every column that was sent; unchanged TOAST values stay as they are on the
        // target (under FULL identity the matched row already holds the old value).
        let width = relation.source.columns.len();
        let mut set = ColumnSet::with_columns(width);
        let mut params = Vec::with_capacity(width * 2);
        for (i, value) in update.new.iter().enumerate() {
            if let Some(p) = written(relation, i, value) {
                set.insert(i);
                params.push(p);
            }
        }
        if params.is_empty() {
            return Ok(());
        }
        let kind = if relation.source.identity == ReplicaIdentity::Full {
            let Some(OldTuple::Full(old)) = &update.old else {
                return Err(ApplyError::protocol(format!(
                    "an update of {} (REPLICA IDENTITY FULL) came without its old row",
                    relation.name
                )));
            };
            StatementKind::UpdateOneRow {
                old: full_match(relation, old, &mut params)?,
            }
        } else {
            let key_tuple = match &update.old {
                Some(OldTuple::Key(key)) | Some(OldTuple::Full(key)) => key,
                None => &update.new,
            };
            check_width(relation, key_tuple)?;
            key_params(relation, key_tuple, &mut params)?;
            StatementKind::UpdateByKey
        };
        let plan = Plan::Rows {
            oid,
            kind,
            columns: set,
            params,
            operation: Operation::Update,
        };
        self.planner.statement(plan, order);
        self.run_plans().await
    }

    pub(super) async fn delete(&mut self, delete: &Delete) -> Result<(), ApplyError> {
        let oid = delete.relation_oid;
        self.check_target(oid).await?;
        self.count(oid, Operation::Delete);
        let relation = self.relations.get(oid)?;
        let order = self.order(relation);
        let old = delete.old.tuple();
        check_width(relation, old)?;
        let mut params = Vec::new();
        if relation.source.identity != ReplicaIdentity::Full {
            key_params(relation, old, &mut params)?;
            self.planner.delete(oid, order, params);
            return self.run_plans().await;
        }
        let kind = StatementKind::DeleteOneRow {
            old: full_match(relation, old, &mut params)?,
        };
        let plan = Plan::Rows {
            oid,
            kind,
            columns: ColumnSet::default(),
            params,
            operation: Operation::Delete,
        };
        self.planner.statement(plan, order);
        self.run_plans().await
    }

    pub(super) async fn truncate(&mut self, truncate: &Truncate) -> Result<(), ApplyError> {
        let mut oids = Vec::with_capacity(truncate.relation_count());
        for oid in truncate.relation_oids() {
            self.check_target(oid).await?;
            oids.push(oid);
        }
        if oids.is_empty() {
            return Ok(());
        }
        self.stats.truncates += 1;
        if let Some(group) = &mut self.group {
            for &oid in &oids {
                group.count(oid, Operation::Truncate);
            }
        }
        self.planner.truncate(oids, truncate.restart_identity());
        self.run_plans().await
    }
}
