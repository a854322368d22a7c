//! Random schemas: tables of many shapes and column types, and their DDL for the source and for
//! the target (which may order columns differently and hold extra defaulted columns).
//!
//! ```text
//!  seed ─▶ Features ─▶ Schema { tables } ─┬─▶ source DDL (+ publication)
//!                                          ├─▶ target DDL (reordered, extra columns)
//!                                          └─▶ compared relations (leaves, ONLY each table)
//! ```

use super::features::Features;
use super::rng::Rng;

/// `ident` quoted for SQL: `a"b` → `"a""b"`.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a standard-conforming SQL string literal.
pub fn lit(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Column types the generator knows how to write values for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    BigInt,
    Text,
    Uuid,
    Bool,
    Numeric,
    Float8,
    Date,
    Timestamp,
    Timestamptz,
    Interval,
    IntArray,
    TextArray,
    Enum,
    Domain,
    Json,
    Jsonb,
    Xml,
    IntRange,
    TsRange,
    Bytea,
    Composite,
    Point,
    Box,
    /// text that is sometimes large enough to be stored out of line (TOAST).
    BigText,
}

/// Plain column types and the feature each needs (`None`: always available).
const PLAIN_TYPES: &[(Ty, Option<&str>)] = &[
    (Ty::Int, None),
    (Ty::Text, None),
    (Ty::Bool, None),
    (Ty::BigInt, None),
    (Ty::Numeric, None),
    (Ty::Float8, None),
    (Ty::Date, Some("temporal")),
    (Ty::Timestamp, Some("temporal")),
    (Ty::Timestamptz, Some("temporal")),
    (Ty::Interval, Some("temporal")),
    (Ty::IntArray, Some("arrays")),
    (Ty::TextArray, Some("arrays")),
    (Ty::Enum, Some("enum")),
    (Ty::Domain, Some("domain")),
    (Ty::Json, Some("json")),
    (Ty::Jsonb, Some("json")),
    (Ty::Xml, Some("xml")),
    (Ty::IntRange, Some("ranges")),
    (Ty::TsRange, Some("ranges")),
    (Ty::Bytea, Some("bytea")),
    (Ty::Composite, Some("composite_type")),
    (Ty::Point, Some("geometric")),
    (Ty::Box, Some("geometric")),
    (Ty::Uuid, None),
];

impl Ty {
    pub fn sql(self) -> &'static str {
        match self {
            Ty::Int => "int",
            Ty::BigInt => "bigint",
            Ty::Text | Ty::BigText => "text",
            Ty::Uuid => "uuid",
            Ty::Bool => "boolean",
            Ty::Numeric => "numeric",
            Ty::Float8 => "double precision",
            Ty::Date => "date",
            Ty::Timestamp => "timestamp",
            Ty::Timestamptz => "timestamptz",
            Ty::Interval => "interval",
            Ty::IntArray => "int[]",
            Ty::TextArray => "text[]",
            Ty::Enum => "public.mood",
            Ty::Domain => "public.posint",
            Ty::Json => "json",
            Ty::Jsonb => "jsonb",
            Ty::Xml => "xml",
            Ty::IntRange => "int4range",
            Ty::TsRange => "tstzrange",
            Ty::Bytea => "bytea",
            Ty::Composite => "public.pair",
            Ty::Point => "point",
            Ty::Box => "box",
        }
    }

    /// A value of this type as an SQL expression (never NULL; the caller adds NULLs).
    pub fn value(self, rng: &mut Rng, f: &Features) -> String {
        let special = f.has("special_numbers") && rng.percent(25);
        match self {
            Ty::Int if rng.percent(20) => rng.pick(&["0", "2147483647", "-2147483648"]).to_string(),
            Ty::Int => rng.range(-1000, 1000).to_string(),
            Ty::BigInt => rng.range(-9_000_000_000_000, 9_000_000_000_000).to_string(),
            Ty::Text => lit(&text(rng, f)),
            Ty::BigText => {
                if f.has("toast") && rng.percent(60) {
                    // md5 hex barely compresses: ~4 kB stays out of line.
                    format!(
                        "(SELECT string_agg(md5('{}' || i), '') FROM generate_series(1, {}) i)",
                        rng.below(1_000_000),
                        rng.range(70, 200)
                    )
                } else {
                    lit(&text(rng, f))
                }
            }
            Ty::Uuid => format!(
                "'{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}'",
                rng.below(1 << 32),
                rng.below(1 << 16),
                rng.below(1 << 12),
                rng.below(1 << 12),
                rng.below(1 << 48)
            ),
            Ty::Bool => rng.pick(&["true", "false"]).to_string(),
            Ty::Numeric if special => rng
                .pick(&["'NaN'", "'Infinity'", "'-Infinity'"])
                .to_string(),
            Ty::Numeric if rng.percent(30) => rng
                .pick(&[
                    "0",
                    "-0.000001",
                    "123456789012345678901234567890.123456789",
                    "1.50",
                ])
                .to_string(),
            Ty::Numeric => format!("{}.{:02}", rng.range(-99999, 99999), rng.below(100)),
            Ty::Float8 if special => rng
                .pick(&["'NaN'", "'Infinity'", "'-Infinity'", "'-0'"])
                .to_string(),
            Ty::Float8 if rng.percent(40) => rng
                .pick(&["0.1", "1e300", "-2.5e-300", "3.141592653589793"])
                .to_string(),
            Ty::Float8 => format!("{}.25", rng.range(-100, 100)),
            Ty::Date if special => rng.pick(&["'infinity'", "'-infinity'"]).to_string(),
            Ty::Date => format!(
                "'{:04}-{:02}-{:02}'::date",
                rng.range(1, 2400),
                rng.range(1, 12),
                rng.range(1, 28)
            ),
            Ty::Timestamp if special => rng.pick(&["'infinity'", "'-infinity'"]).to_string(),
            Ty::Timestamp => format!(
                "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'::timestamp",
                rng.range(1900, 2100),
                rng.range(1, 12),
                rng.range(13, 28),
                rng.range(0, 23),
                rng.range(0, 59),
                rng.range(0, 59),
                rng.below(1_000_000)
            ),
            Ty::Timestamptz if special => rng.pick(&["'infinity'", "'-infinity'"]).to_string(),
            Ty::Timestamptz => format!(
                "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}{}'::timestamptz",
                rng.range(1970, 2100),
                rng.range(1, 12),
                rng.range(13, 28),
                rng.range(0, 23),
                rng.range(0, 59),
                rng.range(0, 59),
                rng.pick(&["+00", "+05:30", "-08", ".5+01"])
            ),
            Ty::Interval => rng
                .pick(&[
                    "'-1 day -2 hours'::interval",
                    "'1 year 2 mons 3 days 04:05:06.7'::interval",
                    "'-3 mons +5 days'::interval",
                    "'P1Y2M3DT4H5M6S'::interval",
                    "'00:00:00.000001'::interval",
                    "'-178000000 years'::interval",
                ])
                .to_string(),
            Ty::IntArray => rng
                .pick(&[
                    "'{}'::int[]",
                    "ARRAY[1,NULL,3]",
                    "'{{1,2},{3,4}}'::int[]",
                    "ARRAY[-5]",
                ])
                .to_string(),
            Ty::TextArray => format!(
                "ARRAY[{}, NULL, 'c,d', 'e\"f', '{{}}', 'NULL']::text[]",
                lit(&text(rng, f))
            ),
            Ty::Enum => rng
                .pick(&["'sad'", "'ok'", "'happy'", "'it''s'"])
                .to_string(),
            Ty::Domain => rng.range(1, 100_000).to_string(),
            Ty::Json => rng
                .pick(&[
                    "'{\"a\": [1, 2.50, \"x\\\"y\"],  \"a\": null}'::json",
                    "'[]'::json",
                    "'\"ünï \\\\ code\"'::json",
                    "'{ \"k\" : 1e3 }'::json",
                ])
                .to_string(),
            Ty::Jsonb => rng
                .pick(&[
                    "'{\"b\": {\"c\": [true, null, 1.0]}, \"a\": \"it''s\"}'::jsonb",
                    "'{}'::jsonb",
                    "'12345678901234567890.5'::jsonb",
                ])
                .to_string(),
            Ty::Xml => rng
                .pick(&[
                    "'<a b=\"1\">t&amp;x</a>'::xml",
                    "'<r><é/>text</r>'::xml",
                    "'plain &lt; text'::xml",
                ])
                .to_string(),
            Ty::IntRange => rng
                .pick(&[
                    "'empty'::int4range",
                    "int4range(1, 5, '[]')",
                    "'[3,)'::int4range",
                ])
                .to_string(),
            Ty::TsRange => rng
                .pick(&[
                    "tstzrange('2024-01-01 00:00+00', NULL)",
                    "'[-infinity,2020-05-05 10:00+02)'::tstzrange",
                    "'empty'::tstzrange",
                ])
                .to_string(),
            Ty::Bytea => format!("'\\x{:08x}00ff5c27'::bytea", rng.below(1 << 32)),
            Ty::Composite => format!(
                "ROW({}, '{{\"k\": [1, \"two\"]}}', {})::public.pair",
                rng.range(-5, 5),
                lit(&text(rng, f))
            ),
            Ty::Point => format!("point({}.5, -{})", rng.range(-50, 50), rng.below(9)),
            Ty::Box => format!(
                "box(point(0,0), point({}, {}))",
                rng.range(1, 4),
                rng.range(1, 4)
            ),
        }
    }
}

/// Text that sometimes needs every kind of escaping.
fn text(rng: &mut Rng, f: &Features) -> String {
    let mut s = format!("v{}", rng.below(1000));
    if f.has("odd_text") && rng.percent(50) {
        let odd = rng.pick(&[
            "it's",
            "back\\slash",
            "new\nline",
            "tab\there",
            "ünïcødé",
            "日本語",
            "🎉",
            "",
            "\"quoted\"",
            "NULL",
            "\\N",
            " trailing ",
            "a\r\nb",
            "$1",
            "E'x'",
        ]);
        s = if rng.percent(30) {
            (*odd).to_owned()
        } else {
            format!("{s}{odd}")
        };
    }
    s
}

/// The type of a key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTy {
    Int,
    BigInt,
    Text,
    Uuid,
}

/// How the table identifies rows in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The primary key.
    Key,
    /// A unique index on NOT NULL columns, no primary key.
    Index,
    /// Whole old row; no key, duplicates allowed.
    Full,
    /// Insert-only.
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Plain,
    /// Partitioned by range of its int key; `leaves` are its partitions.
    Partitioned,
    /// An inheritance parent.
    Parent,
    /// An inheritance child of table `n` (its first columns are the parent's).
    Child(usize),
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: Ty,
    /// `GENERATED ALWAYS AS (expr) STORED`.
    pub generated: Option<String>,
    pub not_null: bool,
}

/// A secondary unique column.
#[derive(Debug, Clone, Copy)]
pub struct Unique {
    pub col: usize,
    /// `Some(initially_deferred)` for a DEFERRABLE constraint.
    pub deferrable: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub cols: Vec<Column>,
    /// Key columns (indexes into `cols`): the primary key, or the identity index.
    pub key: Vec<usize>,
    pub key_ty: KeyTy,
    /// The key is `GENERATED BY DEFAULT AS IDENTITY` (inserts may leave it out).
    pub identity_column: bool,
    /// Keys are `key_base + 1 ..= key_base + key_count`.
    pub key_base: i64,
    pub key_count: i64,
    pub identity: Identity,
    pub uniques: Vec<Unique>,
    /// Column referencing table `n`'s key, ON DELETE CASCADE.
    pub fk: Option<(usize, usize)>,
    pub shape: Shape,
    /// Partitions: name and bound clause.
    pub leaves: Vec<(String, String)>,
    /// Target column order (indexes into `cols`), and extra target-only column definitions.
    pub target_order: Vec<usize>,
    pub target_extra: Vec<String>,
}

impl Table {
    pub fn qualified(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }

    pub fn col(&self, i: usize) -> String {
        ident(&self.cols[i].name)
    }

    /// Columns an INSERT may write (not generated).
    pub fn writable(&self) -> Vec<usize> {
        (0..self.cols.len())
            .filter(|&i| self.cols[i].generated.is_none())
            .collect()
    }

    /// Plain value columns: not key, not unique, not foreign key, not generated.
    pub fn plain(&self) -> Vec<usize> {
        (0..self.cols.len())
            .filter(|i| {
                !self.key.contains(i)
                    && !self.uniques.iter().any(|u| u.col == *i)
                    && self.fk.map(|(c, _)| c) != Some(*i)
                    && self.cols[*i].generated.is_none()
            })
            .collect()
    }

    /// The relations whose rows are compared (each read with ONLY).
    pub fn compared(&self) -> Vec<String> {
        if self.shape == Shape::Partitioned {
            self.leaves
                .iter()
                .map(|(leaf, _)| format!("{}.{}", ident(&self.schema), ident(leaf)))
                .collect()
        } else {
            vec![self.qualified()]
        }
    }
}

/// Every table of one run.
#[derive(Debug, Clone)]
pub struct Schema {
    pub tables: Vec<Table>,
}

/// Types and schemas both sides need before any table.
const PRELUDE: &str = "CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy', 'it''s');\n\
    CREATE DOMAIN public.posint AS int CHECK (VALUE > 0);\n\
    CREATE TYPE public.pair AS (n int, j json, t text);\n\
    CREATE TABLE public._torture_marker (id int PRIMARY KEY);\n";

impl Schema {
    pub fn generate(rng: &mut Rng, f: &Features) -> Schema {
        let mut g = Builder {
            rng,
            f,
            tables: Vec::new(),
        };
        g.build();
        Schema { tables: g.tables }
    }

    /// DDL for the source (`target == false`) or the target.
    pub fn ddl(&self, target: bool) -> String {
        let mut out = String::from(PRELUDE);
        let mut schemas: Vec<&str> = self.tables.iter().map(|t| t.schema.as_str()).collect();
        schemas.sort_unstable();
        schemas.dedup();
        for s in schemas.into_iter().filter(|s| *s != "public") {
            out.push_str(&format!("CREATE SCHEMA {};\n", ident(s)));
        }
        for t in &self.tables {
            out.push_str(&self.table_ddl(t, target));
        }
        out
    }

    fn table_ddl(&self, t: &Table, target: bool) -> String {
        let mut parts = Vec::new();
        let own_from = match t.shape {
            Shape::Child(p) => self.tables[p].cols.len(),
            _ => 0,
        };
        let order: Vec<usize> = if target {
            t.target_order.clone()
        } else {
            (0..t.cols.len()).collect()
        };
        for &i in order.iter().filter(|&&i| i >= own_from) {
            let c = &t.cols[i];
            let mut def = format!("{} {}", ident(&c.name), c.ty.sql());
            if t.identity_column && t.key.first() == Some(&i) {
                def.push_str(" GENERATED BY DEFAULT AS IDENTITY");
            }
            if let Some(expr) = &c.generated {
                def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
            }
            if c.not_null {
                def.push_str(" NOT NULL");
            }
            parts.push(def);
        }
        if target {
            parts.extend(t.target_extra.iter().cloned());
        }
        let key_cols = t
            .key
            .iter()
            .map(|&i| t.col(i))
            .collect::<Vec<_>>()
            .join(", ");
        if t.identity == Identity::Key {
            parts.push(format!("PRIMARY KEY ({key_cols})"));
        }
        for u in &t.uniques {
            let mut c = format!("UNIQUE ({})", t.col(u.col));
            match u.deferrable {
                Some(true) => c.push_str(" DEFERRABLE INITIALLY DEFERRED"),
                Some(false) => c.push_str(" DEFERRABLE INITIALLY IMMEDIATE"),
                None => {}
            }
            parts.push(c);
        }
        if let Some((col, parent)) = t.fk {
            let p = &self.tables[parent];
            parts.push(format!(
                "FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE CASCADE",
                t.col(col),
                p.qualified(),
                p.col(p.key[0])
            ));
        }
        let mut sql = format!("CREATE TABLE {} ({})", t.qualified(), parts.join(", "));
        match t.shape {
            Shape::Partitioned => sql.push_str(&format!(" PARTITION BY RANGE ({key_cols})")),
            Shape::Child(p) => sql.push_str(&format!(" INHERITS ({})", self.tables[p].qualified())),
            _ => {}
        }
        sql.push_str(";\n");
        for (leaf, bound) in &t.leaves {
            sql.push_str(&format!(
                "CREATE TABLE {}.{} PARTITION OF {} {bound};\n",
                ident(&t.schema),
                ident(leaf),
                t.qualified()
            ));
        }
        match t.identity {
            Identity::Index => {
                let index = format!("{}_ident", t.name);
                sql.push_str(&format!(
                    "CREATE UNIQUE INDEX {} ON {} ({key_cols});\n\
                     ALTER TABLE {} REPLICA IDENTITY USING INDEX {};\n",
                    ident(&index),
                    t.qualified(),
                    t.qualified(),
                    ident(&index)
                ));
            }
            Identity::Full => sql.push_str(&format!(
                "ALTER TABLE {} REPLICA IDENTITY FULL;\n",
                t.qualified()
            )),
            Identity::Nothing => sql.push_str(&format!(
                "ALTER TABLE {} REPLICA IDENTITY NOTHING;\n",
                t.qualified()
            )),
            Identity::Key => {}
        }
        sql
    }

    /// Every compared relation, with the source column list to read in source order.
    pub fn compared(&self) -> Vec<(String, Vec<String>)> {
        self.tables
            .iter()
            .flat_map(|t| {
                let cols: Vec<String> = (0..t.cols.len()).map(|i| t.col(i)).collect();
                t.compared().into_iter().map(move |r| (r, cols.clone()))
            })
            .collect()
    }
}

struct Builder<'a> {
    rng: &'a mut Rng,
    f: &'a Features,
    tables: Vec<Table>,
}

impl Builder<'_> {
    fn name(&mut self, base: &str) -> String {
        let n = self.tables.len();
        if self.f.has("quoted_idents") && self.rng.percent(50) {
            let odd = self
                .rng
                .pick(&["Mixed Case", "sel\"ect", "wïth space", "order", "a.b"]);
            format!("{odd} {base}{n}")
        } else {
            format!("{base}{n}")
        }
    }

    fn col_name(&mut self, i: usize) -> String {
        if self.f.has("quoted_idents") && self.rng.percent(30) {
            let odd = self
                .rng
                .pick(&["User", "select", "col\"q", "ñame", "two words"]);
            format!("{odd}{i}")
        } else {
            format!("c{i}")
        }
    }

    fn schema(&mut self) -> String {
        if self.f.has("other_schema") && self.rng.percent(50) {
            if self.f.has("quoted_idents") {
                "Other Schema".into()
            } else {
                "torture".into()
            }
        } else {
            "public".into()
        }
    }

    fn plain_types(&mut self, full: bool) -> Vec<Ty> {
        let allowed: Vec<Ty> = PLAIN_TYPES
            .iter()
            .filter(|(_, feat)| feat.is_none_or(|x| self.f.has(x)))
            .filter(|(ty, _)| !(full && *ty == Ty::Xml && !self.f.has("full_xml")))
            .map(|(ty, _)| *ty)
            .collect();
        let n = self.rng.range(1, 5);
        let mut out: Vec<Ty> = (0..n).map(|_| *self.rng.pick(&allowed)).collect();
        if full && self.f.has("full_xml") && !out.contains(&Ty::Xml) {
            out.push(Ty::Xml);
        }
        if self.f.has("datestyle") {
            out.extend([Ty::Date, Ty::Interval, Ty::Enum]);
        }
        if self.f.has("toast") && self.rng.percent(60) {
            out.push(Ty::BigText);
        }
        out
    }

    fn key_ty(&mut self) -> KeyTy {
        if self.f.has("key_types") {
            *self
                .rng
                .pick(&[KeyTy::Int, KeyTy::BigInt, KeyTy::Text, KeyTy::Uuid])
        } else {
            KeyTy::Int
        }
    }

    /// A table with key columns (by `identity`) then plain columns.
    fn table(&mut self, base: &str, identity: Identity, key_ty: KeyTy, composite: bool) -> Table {
        let mut cols = Vec::new();
        let mut key = Vec::new();
        if matches!(identity, Identity::Key | Identity::Index) {
            let ty = match key_ty {
                KeyTy::Int => Ty::Int,
                KeyTy::BigInt => Ty::BigInt,
                KeyTy::Text => Ty::Text,
                KeyTy::Uuid => Ty::Uuid,
            };
            for (i, ty) in std::iter::once(ty)
                .chain(composite.then_some(Ty::Int))
                .enumerate()
            {
                key.push(cols.len());
                cols.push(Column {
                    name: format!("k{i}"),
                    ty,
                    generated: None,
                    not_null: true,
                });
            }
        }
        let types = self.plain_types(identity == Identity::Full);
        for ty in types {
            let name = self.col_name(cols.len());
            cols.push(Column {
                name,
                ty,
                generated: None,
                not_null: false,
            });
        }
        let mut uniques = Vec::new();
        if matches!(identity, Identity::Key | Identity::Index) && self.f.has("unique") {
            for _ in 0..self.rng.range(1, 2) {
                let ty = *self.rng.pick(&[Ty::Text, Ty::Int]);
                let col = cols.len();
                cols.push(Column {
                    name: format!("u{col}"),
                    ty,
                    generated: None,
                    not_null: false,
                });
                let deferrable = (self.f.has("deferrable") && self.rng.percent(50))
                    .then(|| self.rng.percent(50));
                uniques.push(Unique { col, deferrable });
            }
        }
        if self.f.has("generated") && !key.is_empty() && self.rng.percent(50) {
            let expr = format!("{}::text || '#'", ident(&cols[key[0]].name));
            cols.push(Column {
                name: "gen".into(),
                ty: Ty::Text,
                generated: Some(expr),
                not_null: false,
            });
        }
        let schema = self.schema();
        let name = self.name(base);
        let target_order: Vec<usize> = (0..cols.len()).collect();
        Table {
            schema,
            name,
            cols,
            key,
            key_ty,
            identity_column: false,
            key_base: 0,
            key_count: self.rng.range(8, 40),
            identity,
            uniques,
            fk: None,
            shape: Shape::Plain,
            leaves: Vec::new(),
            target_order,
            target_extra: Vec::new(),
        }
    }

    /// Reorder and extend a plain table's target form.
    fn target_form(&mut self, t: &mut Table) {
        if self.f.has("target_reorder") && self.rng.percent(60) {
            let n = t.target_order.len();
            for i in (1..n).rev() {
                let j =
                    usize::try_from(self.rng.below(u64::try_from(i + 1).unwrap_or(1))).unwrap_or(0);
                t.target_order.swap(i, j);
            }
        }
        if self.f.has("target_extra") && self.rng.percent(60) {
            t.target_extra
                .push("\"extra note\" text DEFAULT 'from target'".into());
            if self.rng.percent(50) {
                t.target_extra
                    .push("extra_at timestamptz NOT NULL DEFAULT now()".into());
            }
        }
    }

    fn push(&mut self, t: Table) -> usize {
        self.tables.push(t);
        self.tables.len() - 1
    }

    fn build(&mut self) {
        // Keyed plain tables: always at least one with an int key (large transactions, FKs).
        let plain = self.rng.range(1, 3);
        for n in 0..plain {
            let identity = if self.f.has("identity_index") && self.rng.percent(40) {
                Identity::Index
            } else {
                Identity::Key
            };
            let key_ty = if n == 0 { KeyTy::Int } else { self.key_ty() };
            let composite = self.f.has("composite_key") && self.rng.percent(50);
            let mut t = self.table("t", identity, key_ty, composite);
            t.identity_column =
                n == 0 && identity == Identity::Key && !composite && self.rng.percent(30);
            self.target_form(&mut t);
            self.push(t);
        }
        if self.f.has("identity_full") {
            let mut t = self.table("full", Identity::Full, KeyTy::Int, false);
            t.key_count = 6;
            self.target_form(&mut t);
            self.push(t);
        }
        if self.f.has("identity_nothing") {
            let mut t = self.table("log", Identity::Nothing, KeyTy::Int, false);
            self.target_form(&mut t);
            self.push(t);
        }
        if self.f.has("fk_cascade") {
            let mut t = self.table("fk", Identity::Key, KeyTy::Int, false);
            let col = t.cols.len();
            t.cols.push(Column {
                name: "parent".into(),
                ty: Ty::Int,
                generated: None,
                not_null: false,
            });
            t.target_order.push(col);
            t.fk = Some((col, 0));
            self.target_form(&mut t);
            self.push(t);
        }
        if self.f.has("inherit") {
            let mut parent = self.table("parent", Identity::Key, KeyTy::Int, false);
            parent.uniques.clear();
            parent
                .cols
                .retain(|c| !c.name.starts_with('u') && c.generated.is_none());
            parent.target_order = (0..parent.cols.len()).collect();
            parent.shape = Shape::Parent;
            let p = self.push(parent);
            let mut child = self.tables[p].clone();
            child.name = self.name("child");
            child.cols.push(Column {
                name: "own".into(),
                ty: Ty::Text,
                generated: None,
                not_null: false,
            });
            child.target_order = (0..child.cols.len()).collect();
            child.shape = Shape::Child(p);
            // Shared keys are what exposes UPDATE/DELETE without ONLY on the target.
            child.key_base = if self.f.has("inherit_only") { 0 } else { 1000 };
            self.push(child);
        }
        if self.f.has("partition") {
            let mut t = self.table("part", Identity::Key, KeyTy::Int, false);
            // A unique constraint on a partitioned table must contain the partition key.
            for u in std::mem::take(&mut t.uniques) {
                t.cols[u.col].name = format!("nu{}", u.col);
            }
            t.shape = Shape::Partitioned;
            t.key_count = 45;
            let base = t.name.clone();
            t.leaves = vec![
                (
                    format!("{base}_low"),
                    "FOR VALUES FROM (MINVALUE) TO (15)".into(),
                ),
                (format!("{base}_mid"), "FOR VALUES FROM (15) TO (30)".into()),
                (format!("{base}_rest"), "DEFAULT".into()),
            ];
            self.push(t);
        }
    }
}
