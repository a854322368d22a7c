//! Why a frame could not be decoded.

/// A frame the decoder rejects. Never a panic: every malformed input ends here.
///
/// `what` names the message (or part) being decoded. Any of these from a live server means the
/// stream is corrupt or the server speaks a protocol this build does not know: stop, keep the
/// slot, and report the error with the server version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what}: truncated: needed {needed} more byte(s) at offset {offset}")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("{what}: unknown tag {tag:#04x} ({})", char::from(*tag).escape_default())]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("{what}: {len} trailing byte(s) after a complete message")]
    TrailingBytes { what: &'static str, len: usize },
    /// A count or length that is negative, or larger than the bytes that remain could hold.
    #[error(
        "{what}: invalid count or length {count} with {remaining} byte(s) left: the frame is \
         corrupt or was cut short"
    )]
    InvalidCount {
        what: &'static str,
        count: i64,
        remaining: usize,
    },
    #[error("{what}: string not terminated by NUL")]
    UnterminatedString { what: &'static str },
    #[error("{what}: name is not valid UTF-8")]
    InvalidName { what: &'static str },
    #[error("{what}: unexpected value {value}")]
    InvalidValue { what: &'static str, value: u64 },
}
