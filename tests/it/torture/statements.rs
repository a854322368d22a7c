//! The statement generator of one client: transactions of inserts, updates (also of keys and
//! unique values), deletes, upserts, truncates, savepoints, messages and large batches, over the
//! run's schema. Keys come from a small range per table so statements meet existing rows.

use super::features::Features;
use super::rng::Rng;
use super::schema::{Identity, KeyTy, Schema, Shape, Table, Ty, lit};
use super::workload::{Size, Stmt, Txn};

/// Statement generator for one client.
pub struct Gen<'a> {
    rng: Rng,
    f: &'a Features,
    schema: &'a Schema,
    client: usize,
    counter: u64,
    size: Size,
}

impl<'a> Gen<'a> {
    pub fn new(rng: Rng, f: &'a Features, schema: &'a Schema, client: usize, size: Size) -> Self {
        Gen {
            rng,
            f,
            schema,
            client,
            counter: 0,
            size,
        }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    pub fn txn(&mut self, live: bool) -> Txn {
        if live && self.f.has("truncate") && self.rng.percent(2) {
            return Txn {
                stmts: vec![self.truncate()],
                commit: true,
            };
        }
        if live && self.f.has("large_txn") && self.rng.percent(2) {
            if let Some(t) = self.large() {
                return t;
            }
        }
        let mut stmts = Vec::new();
        for _ in 0..self.rng.range(1, 6) {
            if self.f.has("savepoints") && self.rng.percent(10) {
                let name = format!("sp{}", self.next());
                stmts.push(Stmt {
                    sql: format!("SAVEPOINT {name}"),
                    guard: false,
                });
                for _ in 0..self.rng.range(1, 3) {
                    stmts.extend(self.change());
                }
                let end = if self.rng.percent(60) {
                    "ROLLBACK TO SAVEPOINT"
                } else {
                    "RELEASE SAVEPOINT"
                };
                stmts.push(Stmt {
                    sql: format!("{end} {name}"),
                    guard: false,
                });
            } else {
                stmts.extend(self.change());
            }
            if self.f.has("messages") && self.rng.percent(5) {
                let transactional = self.rng.percent(50);
                stmts.push(Stmt {
                    sql: format!(
                        "SELECT pg_logical_emit_message({transactional}, 'torture', 'note {}')",
                        self.next()
                    ),
                    guard: true,
                });
            }
        }
        let commit = !(live && self.f.has("aborts") && self.rng.percent(8));
        Txn { stmts, commit }
    }

    fn table(&mut self) -> &'a Table {
        let schema = self.schema;
        schema
            .tables
            .get(
                usize::try_from(
                    self.rng
                        .below(u64::try_from(schema.tables.len()).unwrap_or(1)),
                )
                .unwrap_or(0),
            )
            .unwrap_or(&schema.tables[0])
    }

    fn guarded(sql: String) -> Stmt {
        Stmt { sql, guard: true }
    }

    /// The SQL form of key number `n` (1-based) for column `k` of `t`.
    fn key_value(&self, t: &Table, k: usize, n: i64) -> String {
        let v = t.key_base + n;
        if k > 0 {
            return v.to_string();
        }
        match t.key_ty {
            KeyTy::Int => v.to_string(),
            KeyTy::BigInt => (v * 1_000_000_007).to_string(),
            KeyTy::Text if self.f.has("odd_text") => lit(&format!("k'{v}é")),
            KeyTy::Text => lit(&format!("k{v}")),
            KeyTy::Uuid => format!("'00000000-0000-4000-8000-{v:012}'"),
        }
    }

    /// A random existing-looking key: one value per key column.
    fn key(&mut self, t: &Table) -> Vec<String> {
        let n = self.rng.range(1, t.key_count);
        let second = self.rng.range(1, 2);
        (0..t.key.len())
            .map(|k| self.key_value(t, k, if k == 0 { n } else { second }))
            .collect()
    }

    fn key_where(t: &Table, key: &[String]) -> String {
        t.key
            .iter()
            .zip(key)
            .map(|(&c, v)| format!("{} = {v}", t.col(c)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn unique_value(&mut self, t: &Table, col: usize) -> String {
        let reuse = self.f.has("unique_reuse") || self.f.has("unique_swap");
        let n = if reuse {
            self.rng.range(1, t.key_count + 4)
        } else {
            // Never reused: client and counter make it fresh.
            i64::try_from(self.client as u64 * 1_000_000 + self.next()).unwrap_or(0)
        };
        match t.cols[col].ty {
            Ty::Int => n.to_string(),
            _ => lit(&format!("u{n}")),
        }
    }

    fn value(&mut self, t: &Table, col: usize) -> String {
        if t.uniques.iter().any(|u| u.col == col) {
            return self.unique_value(t, col);
        }
        if let Some((fk, parent)) = t.fk {
            if fk == col {
                let p = &self.schema.tables[parent];
                return self.key(p).swap_remove(0);
            }
        }
        if self.rng.percent(10) && !t.cols[col].not_null {
            return "NULL".into();
        }
        t.cols[col].ty.value(&mut self.rng, self.f)
    }

    fn insert(&mut self, t: &Table) -> Stmt {
        let mut cols = t.writable();
        if t.identity_column && self.rng.percent(30) {
            cols.retain(|c| Some(c) != t.key.first());
        }
        let key = self.key(t);
        let values: Vec<String> = cols
            .iter()
            .map(|&c| match t.key.iter().position(|&k| k == c) {
                Some(i) => key[i].clone(),
                None => self.value(t, c),
            })
            .collect();
        let names: Vec<String> = cols.iter().map(|&c| t.col(c)).collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            t.qualified(),
            names.join(", "),
            values.join(", ")
        );
        if self.f.has("upsert")
            && t.identity == Identity::Key
            && t.shape != Shape::Parent
            && self.rng.percent(20)
        {
            let keys: Vec<String> = t.key.iter().map(|&c| t.col(c)).collect();
            let set: Vec<String> = t
                .plain()
                .iter()
                .map(|&c| format!("{0} = EXCLUDED.{0}", t.col(c)))
                .collect();
            if set.is_empty() {
                sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", ")));
            } else {
                sql.push_str(&format!(
                    " ON CONFLICT ({}) DO UPDATE SET {}",
                    keys.join(", "),
                    set.join(", ")
                ));
            }
        }
        Self::guarded(sql)
    }

    /// `UPDATE` or `DELETE` target: `ONLY` on an inheritance parent when that feature is on.
    fn target(&mut self, t: &Table) -> String {
        if t.shape == Shape::Parent && self.f.has("inherit_only") && self.rng.percent(60) {
            format!("ONLY {}", t.qualified())
        } else {
            t.qualified()
        }
    }

    fn set_list(&mut self, t: &Table) -> Option<String> {
        let mut cols: Vec<usize> = t.plain();
        cols.extend(t.uniques.iter().map(|u| u.col));
        if cols.is_empty() {
            return None;
        }
        // Usually leave a large (TOASTed) column alone: the stream then marks it unchanged.
        let big: Vec<usize> = cols
            .iter()
            .copied()
            .filter(|&c| t.cols[c].ty == Ty::BigText)
            .collect();
        if !self.rng.percent(15) && big.len() < cols.len() {
            cols.retain(|c| !big.contains(c));
        }
        let n = self
            .rng
            .range(1, i64::try_from(cols.len()).unwrap_or(1).min(3));
        let mut set = Vec::new();
        for _ in 0..n {
            let c = *self.rng.pick(&cols);
            let v = self.value(t, c);
            let assignment = format!("{} = {v}", t.col(c));
            if !set
                .iter()
                .any(|s: &String| s.starts_with(&format!("{} =", t.col(c))))
            {
                set.push(assignment);
            }
        }
        Some(set.join(", "))
    }

    fn change(&mut self) -> Vec<Stmt> {
        let t = self.table();
        match t.identity {
            Identity::Nothing => vec![self.insert(t)],
            Identity::Full => vec![self.full_change(t)],
            Identity::Key | Identity::Index => self.keyed_change(t),
        }
    }

    /// Rows of a table without a key are addressed by position (the n-th by ctid), so a
    /// statement hits a row; duplicates are made by copying a row.
    fn full_change(&mut self, t: &Table) -> Stmt {
        let q = t.qualified();
        let nth = format!(
            "(SELECT ctid FROM {q} ORDER BY ctid OFFSET {} LIMIT 1)",
            self.rng.below(6)
        );
        match self.rng.below(100) {
            0..=34 => self.insert(t),
            35..=54 => {
                let cols: Vec<String> = t.writable().iter().map(|&c| t.col(c)).collect();
                Self::guarded(format!(
                    "INSERT INTO {q} ({0}) SELECT {0} FROM {q} WHERE ctid = {nth}",
                    cols.join(", ")
                ))
            }
            55..=79 => {
                let set = self
                    .set_list(t)
                    .unwrap_or_else(|| format!("{0} = {0}", t.col(0)));
                if self.rng.percent(25) {
                    // Every duplicate of that row's first column: several identical old rows.
                    let c = t.col(0);
                    Self::guarded(format!(
                        "UPDATE {q} SET {set} WHERE {c}::text IS NOT DISTINCT FROM \
                         (SELECT {c}::text FROM {q} WHERE ctid = {nth})"
                    ))
                } else {
                    Self::guarded(format!("UPDATE {q} SET {set} WHERE ctid = {nth}"))
                }
            }
            _ => Self::guarded(format!("DELETE FROM {q} WHERE ctid = {nth}")),
        }
    }

    fn keyed_change(&mut self, t: &Table) -> Vec<Stmt> {
        let roll = self.rng.below(100);
        let target = self.target(t);
        match roll {
            0..=39 => vec![self.insert(t)],
            40..=64 => {
                let key = self.key(t);
                match self.set_list(t) {
                    Some(set) => vec![Self::guarded(format!(
                        "UPDATE {target} SET {set} WHERE {}",
                        Self::key_where(t, &key)
                    ))],
                    None => vec![self.insert(t)],
                }
            }
            65..=79 => {
                let key = self.key(t);
                vec![Self::guarded(format!(
                    "DELETE FROM {target} WHERE {}",
                    Self::key_where(t, &key)
                ))]
            }
            80..=83 if t.key_ty == KeyTy::Int => {
                let a = t.key_base + self.rng.range(1, t.key_count);
                let b = a + self.rng.range(0, 5);
                let k = t.col(t.key[0]);
                if self.rng.percent(50) {
                    let set = self.set_list(t).unwrap_or_else(|| format!("{k} = {k}"));
                    vec![Self::guarded(format!(
                        "UPDATE {target} SET {set} WHERE {k} BETWEEN {a} AND {b}"
                    ))]
                } else {
                    vec![Self::guarded(format!(
                        "DELETE FROM {target} WHERE {k} BETWEEN {a} AND {b}"
                    ))]
                }
            }
            84..=91 if self.f.has("key_change") => self.key_change(t, &target),
            92..=99 if !t.uniques.is_empty() => self.unique_play(t, &target),
            _ => vec![self.insert(t)],
        }
    }

    /// Move a row to another key, or swap two rows' keys through a spare key.
    fn key_change(&mut self, t: &Table, target: &str) -> Vec<Stmt> {
        let from = self.key(t);
        let to = self.key(t);
        let k = t.col(t.key[0]);
        if self.rng.percent(60) {
            return vec![Self::guarded(format!(
                "UPDATE {target} SET {k} = {} WHERE {}",
                to[0],
                Self::key_where(t, &from)
            ))];
        }
        let spare = self.key_value(t, 0, 5000 + i64::try_from(self.client).unwrap_or(0));
        let mut spare_key = to.clone();
        spare_key[0] = spare.clone();
        let mut from_at_to = to.clone();
        from_at_to[0] = from[0].clone();
        vec![
            Self::guarded(format!(
                "UPDATE {target} SET {k} = {spare} WHERE {}",
                Self::key_where(t, &from_at_to)
            )),
            Self::guarded(format!(
                "UPDATE {target} SET {k} = {} WHERE {}",
                from[0],
                Self::key_where(t, &to)
            )),
            Self::guarded(format!(
                "UPDATE {target} SET {k} = {} WHERE {}",
                to[0],
                Self::key_where(t, &spare_key)
            )),
        ]
    }

    /// Unique values freed and taken again (unique_reuse), or swapped (unique_swap), in one
    /// transaction; without those features, a fresh value.
    fn unique_play(&mut self, t: &Table, target: &str) -> Vec<Stmt> {
        let u = *self.rng.pick(&t.uniques);
        let uc = t.col(u.col);
        let a = self.key(t);
        let b = self.key(t);
        let (wa, wb) = (Self::key_where(t, &a), Self::key_where(t, &b));
        let serial = self.next();
        let tmp = format!("torture_tmp_{}_{serial}", self.client);
        let q = t.qualified();
        let swap = self.f.has("unique_swap") && self.rng.percent(50);
        if swap && u.deferrable.is_some() && self.rng.percent(50) {
            // One statement: only a deferrable constraint lets it pass on the source.
            return vec![Self::guarded(format!(
                "UPDATE {q} AS x SET {uc} = y.{uc} FROM {q} AS y \
                 WHERE (x.{k} = {ak} AND y.{k} = {bk}) OR (x.{k} = {bk} AND y.{k} = {ak})",
                k = t.col(t.key[0]),
                ak = a[0],
                bk = b[0],
            ))];
        }
        if swap {
            return vec![
                Self::guarded(format!(
                    "CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT * FROM {q} WHERE ({wa}) OR ({wb})"
                )),
                Self::guarded(format!("UPDATE {target} SET {uc} = NULL WHERE {wa}")),
                Self::guarded(format!(
                    "UPDATE {target} SET {uc} = (SELECT {uc} FROM {tmp} WHERE {wa}) WHERE {wb}"
                )),
                Self::guarded(format!(
                    "UPDATE {target} SET {uc} = (SELECT {uc} FROM {tmp} WHERE {wb}) WHERE {wa}"
                )),
            ];
        }
        if self.f.has("unique_reuse") {
            let fresh = self.unique_value(t, u.col);
            let mut out = vec![Self::guarded(format!(
                "CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {uc} FROM {q} WHERE {wa}"
            ))];
            if self.rng.percent(30) {
                out.push(Self::guarded(format!("DELETE FROM {target} WHERE {wa}")));
            } else {
                out.push(Self::guarded(format!(
                    "UPDATE {target} SET {uc} = {fresh} WHERE {wa}"
                )));
            }
            if self.rng.percent(50) {
                out.push(Self::guarded(format!(
                    "UPDATE {target} SET {uc} = (SELECT {uc} FROM {tmp}) WHERE {wb}"
                )));
            } else {
                let mut ins = self.insert(t);
                // Take the freed value: the inserted row's unique column reads the temp table.
                let cols = t.writable();
                if let Some(pos) = cols.iter().position(|&c| c == u.col) {
                    let names: Vec<String> = cols.iter().map(|&c| t.col(c)).collect();
                    let values: Vec<String> = cols
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| match t.key.iter().position(|&k| k == c) {
                            Some(ki) => b[ki].clone(),
                            None if i == pos => format!("(SELECT {uc} FROM {tmp})"),
                            None => self.value(t, c),
                        })
                        .collect();
                    ins.sql = format!(
                        "INSERT INTO {q} ({}) VALUES ({})",
                        names.join(", "),
                        values.join(", ")
                    );
                }
                out.push(ins);
            }
            return out;
        }
        let fresh = self.unique_value(t, u.col);
        vec![Self::guarded(format!(
            "UPDATE {target} SET {uc} = {fresh} WHERE {wa}"
        ))]
    }

    fn truncate(&mut self) -> Stmt {
        let t = self.table();
        let only = t.shape == Shape::Parent && self.f.has("inherit_only") && self.rng.percent(50);
        let mut sql = format!(
            "TRUNCATE {}{}",
            if only { "ONLY " } else { "" },
            t.qualified()
        );
        if self.rng.percent(30) {
            let other = self.table();
            if other.name != t.name {
                sql.push_str(&format!(", {}", other.qualified()));
            }
        }
        if self.rng.percent(40) {
            sql.push_str(" RESTART IDENTITY");
        }
        if self.rng.percent(50) {
            sql.push_str(" CASCADE");
        }
        Self::guarded(sql)
    }

    /// Many rows in one transaction, then some of them changed.
    fn large(&mut self) -> Option<Txn> {
        let t = &self.schema.tables[0];
        if t.key_ty != KeyTy::Int || t.key.len() != 1 {
            return None;
        }
        let base = 100_000
            + i64::try_from(self.client).unwrap_or(0) * 10_000_000
            + i64::try_from(self.next()).unwrap_or(0) * 200_000;
        let cols = t.writable();
        let names: Vec<String> = cols.iter().map(|&c| t.col(c)).collect();
        let values: Vec<String> = cols
            .iter()
            .map(|&c| {
                if t.key[0] == c {
                    format!("{base} + g")
                } else if t.uniques.iter().any(|u| u.col == c) {
                    match t.cols[c].ty {
                        Ty::Int => format!("{base} + g"),
                        _ => format!("'L' || ({base} + g)"),
                    }
                } else {
                    self.value(t, c)
                }
            })
            .collect();
        let k = t.col(t.key[0]);
        let mut stmts = vec![Stmt {
            sql: format!(
                "INSERT INTO {} ({}) SELECT {} FROM generate_series(1, {}) g",
                t.qualified(),
                names.join(", "),
                values.join(", "),
                self.size.large_rows
            ),
            guard: true,
        }];
        if let Some(set) = self.set_list(t) {
            stmts.push(Self::guarded(format!(
                "UPDATE {} SET {set} WHERE {k} > {base} AND {k} % 3 = 0",
                t.qualified()
            )));
        }
        stmts.push(Self::guarded(format!(
            "DELETE FROM {} WHERE {k} > {base} AND {k} % 5 = 0",
            t.qualified()
        )));
        Some(Txn {
            stmts,
            commit: true,
        })
    }
}
