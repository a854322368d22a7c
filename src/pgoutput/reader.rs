//! A bounds-checked cursor over one received frame.
//!
//! Every read checks the bytes that remain and fails with [`DecodeError::Truncated`] instead of
//! panicking; slices it hands out are `Bytes` views of the frame (a reference-count increment, no
//! copy). The `what` label names the message being decoded so errors tell an operator where the
//! stream broke.

use bytes::Bytes;

use super::DecodeError;
use crate::Lsn;

#[derive(Debug)]
pub(crate) struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(frame: &'a Bytes, pos: usize, what: &'static str) -> Self {
        Reader { frame, pos, what }
    }

    pub(crate) fn what(&self) -> &'static str {
        self.what
    }

    #[inline(always)]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    #[inline(always)]
    pub(crate) fn remaining(&self) -> usize {
        self.frame.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes as a plain slice, advancing past them.
    #[inline(always)]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(DecodeError::Truncated {
                what: self.what,
                offset: self.frame.len(),
                needed: n - remaining,
            });
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.frame[start..self.pos])
    }

    /// The next `n` bytes as a view of the frame, advancing past them.
    #[inline]
    pub(crate) fn take_bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.frame.slice(start..self.pos))
    }

    /// The frame from `start` to the current position, as a view.
    pub(crate) fn since(&self, start: usize) -> Bytes {
        self.frame.slice(start..self.pos)
    }

    #[inline(always)]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    #[inline(always)]
    pub(crate) fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    #[inline(always)]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    #[inline(always)]
    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    #[inline(always)]
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    #[inline(always)]
    pub(crate) fn lsn(&mut self) -> Result<Lsn, DecodeError> {
        Ok(Lsn::new(u64::from_be_bytes(self.array()?)))
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A NUL-terminated string that must be UTF-8, as a view without the NUL.
    pub(crate) fn name(&mut self) -> Result<Name, DecodeError> {
        let rest = &self.frame[self.pos.min(self.frame.len())..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString { what: self.what })?;
        if std::str::from_utf8(&rest[..len]).is_err() {
            return Err(DecodeError::InvalidName { what: self.what });
        }
        let bytes = self.take_bytes(len)?;
        self.pos += 1; // the NUL, found above
        Ok(Name(bytes))
    }

    /// A count from the wire: non-negative, and no more items than the remaining bytes can hold
    /// when each item needs at least `min_item_len` bytes.
    #[inline]
    pub(crate) fn count(&mut self, raw: i64, min_item_len: usize) -> Result<usize, DecodeError> {
        let invalid = || DecodeError::InvalidCount {
            what: self.what,
            count: raw,
            remaining: self.remaining(),
        };
        let count = usize::try_from(raw).map_err(|_| invalid())?;
        match count.checked_mul(min_item_len) {
            Some(needed) if needed <= self.remaining() => Ok(count),
            _ => Err(invalid()),
        }
    }

    /// A length prefix (`Int32`) followed by that many bytes, as a view.
    pub(crate) fn counted_bytes(&mut self) -> Result<Bytes, DecodeError> {
        let raw = self.i32()?;
        let len = self.count(i64::from(raw), 1)?;
        self.take_bytes(len)
    }

    /// Reject bytes after a complete message.
    #[inline]
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            len => Err(DecodeError::TrailingBytes {
                what: self.what,
                len,
            }),
        }
    }
}

/// A name from the wire (schema, table, type, origin, message prefix, GID): a view of the frame
/// that was checked to be UTF-8 when the message was decoded. Messages expose it as `&str`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Name(Bytes);

impl Name {
    pub fn as_str(&self) -> &str {
        // Validated in `Reader::name`; the fallback is unreachable but keeps this free of
        // `unsafe` and of panics.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
