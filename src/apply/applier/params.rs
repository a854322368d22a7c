//! Row values turned into statement parameters: which columns are written, the key or the whole
//! old row a change is matched by, and the column count check.

use super::*;

/// The value written to source column `i`: none for a column generated on the target (the
/// target computes it) or an unchanged TOAST value.
pub(super) fn written(relation: &CachedRelation, i: usize, value: ColumnValue) -> Option<Param> {
    if relation.target.as_ref().is_some_and(|t| t.is_generated(i)) {
        return None;
    }
    param(value)
}

pub(super) fn param(value: ColumnValue) -> Option<Param> {
    match value {
        ColumnValue::Null => Some(Param::Null),
        ColumnValue::UnchangedToast => None,
        ColumnValue::Text(bytes) => Some(Param::Text(bytes)),
        ColumnValue::Binary(bytes) => Some(Param::Binary(bytes)),
    }
}

pub(super) fn check_width(relation: &CachedRelation, tuple: &TupleData) -> Result<(), ApplyError> {
    if tuple.len() == relation.source.columns.len() {
        Ok(())
    } else {
        Err(ApplyError::protocol(format!(
            "a row for {} has {} columns, its Relation message {}",
            relation.name,
            tuple.len(),
            relation.source.columns.len()
        )))
    }
}

/// Push the key values of `tuple`.
pub(super) fn key_params(
    relation: &CachedRelation,
    tuple: &TupleData,
    params: &mut Vec<Param>,
) -> Result<(), ApplyError> {
    let mut keys = 0;
    for (column, value) in relation.source.columns.iter().zip(tuple.iter()) {
        if !column.is_key {
            continue;
        }
        let Some(p) = param(value) else {
            return Err(ApplyError::protocol(format!(
                "the key column \"{}\" of {} was not sent (unchanged TOAST)",
                column.name, relation.name
            )));
        };
        params.push(p);
        keys += 1;
    }
    if keys == 0 {
        return Err(ApplyError::protocol(format!(
            "{} has no replica identity key on the source, yet an update or delete arrived",
            relation.name
        )));
    }
    Ok(())
}

/// Push the values an identity-FULL match compares and return the match's shape.
pub(super) fn full_match(
    relation: &CachedRelation,
    old: &TupleData,
    params: &mut Vec<Param>,
) -> Result<OldMatch, ApplyError> {
    check_width(relation, old)?;
    let width = relation.source.columns.len();
    let comparable = relation.target.as_ref().map(|t| &t.comparable);
    let mut nulls = ColumnSet::with_columns(width);
    let mut skipped = ColumnSet::with_columns(width);
    for (i, value) in old.iter().enumerate() {
        let equality = comparable.and_then(|c| c.get(i)).copied().unwrap_or(false);
        if relation.target.as_ref().is_some_and(|t| t.is_generated(i)) {
            // The target computed its own value; the row is found by the others.
            skipped.insert(i);
            continue;
        }
        match value {
            ColumnValue::Null => nulls.insert(i),
            ColumnValue::Binary(_) if !equality => skipped.insert(i),
            ColumnValue::Text(bytes) => params.push(Param::Text(bytes)),
            ColumnValue::Binary(bytes) => params.push(Param::Binary(bytes)),
            ColumnValue::UnchangedToast => {
                return Err(ApplyError::protocol(format!(
                    "the old row of {} lacks a column value (unchanged TOAST)",
                    relation.name
                )));
            }
        }
    }
    Ok(OldMatch { nulls, skipped })
}
