//! `TupleData`: one row's column values as views of the received frame.
//!
//! ```text
//! Int16 n │ kind 'n' │ kind 'u' │ kind 't' Int32 len bytes │ kind 'b' Int32 len bytes │ ...
//!            NULL      unchanged   text value                 binary value
//!                      TOAST
//! ```
//!
//! The whole tuple is walked once when the message is decoded, so a `TupleData` that exists is
//! well formed: its iterator cannot fail, and a column value is a `Bytes` slice of the frame
//! (no copy, no allocation).

use bytes::Bytes;

use super::DecodeError;
use super::reader::Reader;

/// One column of a [`TupleData`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue {
    /// `n`: SQL NULL (in an old-key `K` tuple also every column that is not part of the key).
    Null,
    /// `u`: an out-of-line (TOASTed) value that the change did not touch; the server did not send
    /// it. Never "NULL" and never empty: the target keeps its current value.
    UnchangedToast,
    /// `t`: the type's text output, in the connection's client encoding, not NUL-terminated.
    Text(Bytes),
    /// `b`: the type's binary send format (option `binary`).
    Binary(Bytes),
}

/// A row: the values of the Relation's columns, in the Relation's column order.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TupleData {
    len: u16,
    /// The column entries after the count, validated.
    columns: Bytes,
}

const NULL: u8 = b'n';
const UNCHANGED_TOAST: u8 = b'u';
const TEXT: u8 = b't';
const BINARY: u8 = b'b';

impl TupleData {
    /// Read a tuple at the reader's position and check every column entry.
    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let raw = reader.i16()?;
        // Each column takes at least its kind byte.
        let len = reader.count(i64::from(raw), 1)?;
        let start = reader.pos();
        for _ in 0..len {
            match reader.u8()? {
                NULL | UNCHANGED_TOAST => {}
                TEXT | BINARY => {
                    let raw = reader.i32()?;
                    let value_len = reader.count(i64::from(raw), 1)?;
                    reader.take(value_len)?;
                }
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "tuple column kind",
                        tag,
                    });
                }
            }
        }
        Ok(TupleData {
            // `count` bounded `len` by a non-negative i16.
            len: u16::try_from(len).unwrap_or(u16::MAX),
            columns: reader.since(start),
        })
    }

    /// The number of columns (equal to the Relation's column count).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The column values in order.
    pub fn iter(&self) -> Columns<'_> {
        Columns {
            columns: &self.columns,
            pos: 0,
            left: self.len,
        }
    }

    /// The `index`th column value (a walk from the first column: O(index)).
    pub fn get(&self, index: usize) -> Option<ColumnValue> {
        self.iter().nth(index)
    }

    /// The encoded column entries (after the count), a view of the frame.
    pub fn raw(&self) -> &Bytes {
        &self.columns
    }
}

impl std::fmt::Debug for TupleData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a TupleData {
    type Item = ColumnValue;
    type IntoIter = Columns<'a>;

    fn into_iter(self) -> Columns<'a> {
        self.iter()
    }
}

/// Iterator over a [`TupleData`]'s values. Infallible: the tuple was checked when decoded.
#[derive(Debug, Clone)]
pub struct Columns<'a> {
    columns: &'a Bytes,
    pos: usize,
    left: u16,
}

impl Iterator for Columns<'_> {
    type Item = ColumnValue;

    fn next(&mut self) -> Option<ColumnValue> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let kind = *self.columns.get(self.pos)?;
        self.pos += 1;
        match kind {
            NULL => Some(ColumnValue::Null),
            UNCHANGED_TOAST => Some(ColumnValue::UnchangedToast),
            _ => {
                let len_bytes = self.columns.get(self.pos..self.pos + 4)?;
                let mut len = [0u8; 4];
                len.copy_from_slice(len_bytes);
                let start = self.pos + 4;
                let end = start + usize::try_from(i32::from_be_bytes(len)).ok()?;
                if end > self.columns.len() {
                    return None;
                }
                self.pos = end;
                let value = self.columns.slice(start..end);
                Some(if kind == TEXT {
                    ColumnValue::Text(value)
                } else {
                    ColumnValue::Binary(value)
                })
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Exact: the tuple was validated, so every remaining entry is there.
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

impl ExactSizeIterator for Columns<'_> {}
