//! Column types and their values: every value is an SQL expression (a literal, or a small
//! expression for TOASTed text), never NULL here (callers add NULLs), and many of them are the
//! edge cases a replica gets wrong: NaN, ±Infinity, ±infinity, quotes, backslashes, newlines,
//! non-ASCII, empty arrays and ranges, json with duplicate keys.

use super::features::Features;
use super::rng::Rng;
use super::schema::lit;

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
pub const PLAIN_TYPES: &[(Ty, Option<&str>)] = &[
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
