//! `Param`: a column value from the source, handed to the target as a statement parameter.
//!
//! pgoutput sends each value as the source type's text output (`t`) or binary send format (`b`).
//! For a PostgreSQL target nothing needs decoding: the bytes go out unchanged, in the same
//! format, and the target's own input (or receive) function parses them for the column type it
//! inferred when the statement was prepared. Enums, domains, arrays, jsonb, uuid, extension types
//! all work without a Rust type for each.
//!
//! Binary values carry type OIDs inside arrays and records; those OIDs are the source's, so
//! binary mode is only safe for built-in element types. Text mode has no such limit.

use std::error::Error;
use std::fmt;

use bytes::{Bytes, BytesMut};
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

/// One parameter value. `Debug` shows the length only: row values never reach a log.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Param {
    Null,
    /// The type's text output, sent in text format.
    Text(Bytes),
    /// The type's binary send format, sent in binary format.
    Binary(Bytes),
}

impl Param {
    /// Bytes held by this value (for memory bounds).
    pub fn size(&self) -> usize {
        match self {
            Param::Null => 0,
            Param::Text(b) | Param::Binary(b) => b.len(),
        }
    }
}

impl fmt::Debug for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Null => f.write_str("NULL"),
            Param::Text(b) => write!(f, "text({} bytes)", b.len()),
            Param::Binary(b) => write!(f, "binary({} bytes)", b.len()),
        }
    }
}

impl ToSql for Param {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Text(bytes) | Param::Binary(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
        }
    }

    /// Any type: the target parses the value for the column type it inferred.
    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();

    fn encode_format(&self, _ty: &Type) -> Format {
        match self {
            Param::Binary(_) => Format::Binary,
            Param::Null | Param::Text(_) => Format::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_goes_out_unchanged_in_text_format() {
        let param = Param::Text(Bytes::from_static(b"{\"a\": 1}"));
        let mut out = BytesMut::new();
        let is_null = param.to_sql_checked(&Type::JSONB, &mut out).unwrap();
        assert!(matches!(is_null, IsNull::No));
        assert_eq!(&out[..], b"{\"a\": 1}");
        assert!(matches!(param.encode_format(&Type::JSONB), Format::Text));
    }

    #[test]
    fn null_writes_nothing_and_binary_is_binary() {
        let mut out = BytesMut::new();
        assert!(matches!(
            Param::Null.to_sql_checked(&Type::INT4, &mut out).unwrap(),
            IsNull::Yes
        ));
        assert!(out.is_empty());
        let binary = Param::Binary(Bytes::from_static(&[0, 0, 0, 7]));
        assert!(matches!(binary.encode_format(&Type::INT4), Format::Binary));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let param = Param::Text(Bytes::from_static(b"secret"));
        assert_eq!(format!("{param:?}"), "text(6 bytes)");
    }
}
