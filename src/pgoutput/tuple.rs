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

/// A borrowed view of one column of a [`TupleData`]: what [`TupleData::slices`] yields when the
/// caller only reads the bytes (no reference-count traffic at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnSlice<'a> {
    Null,
    UnchangedToast,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

/// A row: the values of the Relation's columns, in the Relation's column order.
///
/// Holds the received frame (moved in by [`decode`](super::decode), so decoding an Insert or a
/// Delete touches no reference count) and where in it the column entries lie.
#[derive(Clone, Default)]
pub struct TupleData {
    frame: Bytes,
    /// The column entries after the count: `frame[start..end]`, validated.
    start: usize,
    end: usize,
    len: u16,
}

/// Where a validated tuple lies in the frame, before the frame is handed to the `TupleData`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TupleRange {
    start: usize,
    end: usize,
    len: u16,
}

const NULL: u8 = b'n';
const UNCHANGED_TOAST: u8 = b'u';
const TEXT: u8 = b't';
const BINARY: u8 = b'b';

impl TupleData {
    /// Read a tuple at the reader's position and check every column entry.
    pub(crate) fn validate(reader: &mut Reader<'_>) -> Result<TupleRange, DecodeError> {
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
        Ok(TupleRange {
            start,
            end: reader.pos(),
            // `count` bounded `len` by a non-negative i16.
            len: u16::try_from(len).unwrap_or(u16::MAX),
        })
    }

    /// `frame` must be the frame `range` was validated in.
    pub(crate) fn new(frame: Bytes, range: TupleRange) -> Self {
        TupleData {
            frame,
            start: range.start,
            end: range.end,
            len: range.len,
        }
    }

    /// The number of columns (equal to the Relation's column count).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The column values in order, each value a `Bytes` view of the frame (one reference-count
    /// increment each, no copy).
    pub fn iter(&self) -> Columns<'_> {
        Columns {
            tuple: self,
            slices: self.slices(),
        }
    }

    /// The column values in order as borrowed slices: the cheapest way to read a row.
    pub fn slices(&self) -> ColumnSlices<'_> {
        ColumnSlices {
            entries: self.raw(),
            left: self.len,
        }
    }

    /// The `index`th column value (a walk from the first column: O(index)).
    pub fn get(&self, index: usize) -> Option<ColumnValue> {
        self.iter().nth(index)
    }

    /// The encoded column entries (after the count), a view of the frame.
    pub fn raw(&self) -> &[u8] {
        self.frame.get(self.start..self.end).unwrap_or_default()
    }

    /// The whole frame this tuple came from.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    fn to_value(&self, slice: ColumnSlice<'_>) -> ColumnValue {
        match slice {
            ColumnSlice::Null => ColumnValue::Null,
            ColumnSlice::UnchangedToast => ColumnValue::UnchangedToast,
            ColumnSlice::Text(v) => ColumnValue::Text(self.frame.slice_ref(v)),
            ColumnSlice::Binary(v) => ColumnValue::Binary(self.frame.slice_ref(v)),
        }
    }
}

impl PartialEq for TupleData {
    /// Equal values, wherever they were received.
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.raw() == other.raw()
    }
}

impl Eq for TupleData {}

impl std::fmt::Debug for TupleData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.slices()).finish()
    }
}

impl<'a> IntoIterator for &'a TupleData {
    type Item = ColumnValue;
    type IntoIter = Columns<'a>;

    fn into_iter(self) -> Columns<'a> {
        self.iter()
    }
}

/// Iterator over a [`TupleData`]'s values as borrowed slices. Infallible: the tuple was checked
/// when decoded.
#[derive(Debug, Clone)]
pub struct ColumnSlices<'a> {
    entries: &'a [u8],
    left: u16,
}

impl<'a> Iterator for ColumnSlices<'a> {
    type Item = ColumnSlice<'a>;

    fn next(&mut self) -> Option<ColumnSlice<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (&kind, rest) = self.entries.split_first()?;
        match kind {
            NULL => {
                self.entries = rest;
                Some(ColumnSlice::Null)
            }
            UNCHANGED_TOAST => {
                self.entries = rest;
                Some(ColumnSlice::UnchangedToast)
            }
            _ => {
                let (len, rest) = rest.split_first_chunk::<4>()?;
                let len = usize::try_from(i32::from_be_bytes(*len)).ok()?;
                let (value, rest) = rest.split_at_checked(len)?;
                self.entries = rest;
                Some(if kind == TEXT {
                    ColumnSlice::Text(value)
                } else {
                    ColumnSlice::Binary(value)
                })
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Exact: the tuple was validated, so every remaining entry is there.
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

impl ExactSizeIterator for ColumnSlices<'_> {}

/// Iterator over a [`TupleData`]'s values as `Bytes` views. Infallible, like [`ColumnSlices`].
#[derive(Debug, Clone)]
pub struct Columns<'a> {
    tuple: &'a TupleData,
    slices: ColumnSlices<'a>,
}

impl Iterator for Columns<'_> {
    type Item = ColumnValue;

    fn next(&mut self) -> Option<ColumnValue> {
        let slice = self.slices.next()?;
        Some(self.tuple.to_value(slice))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.slices.size_hint()
    }
}

impl ExactSizeIterator for Columns<'_> {}
