//! `Lsn`: a position in the write-ahead log.
//!
//! PostgreSQL prints an LSN as two hexadecimal halves, `16/B374D848` (high/low 32 bits, not
//! zero-padded through PostgreSQL 18; later releases may pad the low half). This type parses
//! both, formats the unpadded form the server itself uses, and is the only place that does
//! arithmetic on positions.

use std::fmt;
use std::str::FromStr;

/// A WAL position. `Lsn::ZERO` (`0/0`) means "none" on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(u64);

impl Lsn {
    /// `0/0`: no position (for example "start from the slot's confirmed position").
    pub const ZERO: Lsn = Lsn(0);

    pub const fn new(value: u64) -> Self {
        Lsn(value)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Bytes of WAL from `earlier` to `self`; zero when `earlier` is not before `self`.
    pub const fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The position `bytes` further on, saturating at the largest LSN.
    pub const fn advance(self, bytes: u64) -> Lsn {
        Lsn(self.0.saturating_add(bytes))
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> Self {
        lsn.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Why a text LSN was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {text:?}: expected two hexadecimal halves of 1 to 8 digits, like 16/B374D848")]
pub struct ParseLsnError {
    text: String,
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError {
            text: text.to_owned(),
        };
        let (hi, lo) = text.split_once('/').ok_or_else(err)?;
        let half = |s: &str| -> Result<u64, ParseLsnError> {
            let valid = (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                return Err(err());
            }
            u64::from_str_radix(s, 16).map_err(|_| err())
        };
        Ok(Lsn((half(hi)? << 32) | half(lo)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_the_server_form() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.as_u64(), 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/1677C80".parse::<Lsn>().unwrap().to_string(), "0/1677C80");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::ZERO);
    }

    #[test]
    fn accepts_padded_halves_and_lower_case() {
        let lsn: Lsn = "00000000/01677c80".parse().unwrap();
        assert_eq!(lsn, Lsn::new(0x0167_7C80));
        let max: Lsn = "FFFFFFFF/FFFFFFFF".parse().unwrap();
        assert_eq!(max.as_u64(), u64::MAX);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "1/2/3",
            "123456789/0",
            "0/123456789",
            "g/0",
            "+1/0",
            " 1/0",
            "1/0 ",
            "-1/0",
        ] {
            let err = bad.parse::<Lsn>().unwrap_err();
            assert!(err.to_string().contains("invalid LSN"), "{bad:?}");
        }
    }

    #[test]
    fn orders_and_measures_distance() {
        let a = Lsn::new(100);
        let b = Lsn::new(250);
        assert!(a < b);
        assert_eq!(b.bytes_since(a), 150);
        assert_eq!(a.bytes_since(b), 0);
        assert_eq!(a.advance(150), b);
        assert_eq!(Lsn::new(u64::MAX).advance(1).as_u64(), u64::MAX);
        assert_eq!(u64::from(Lsn::from(7u64)), 7);
    }

    #[test]
    fn round_trips_every_shape() {
        for v in [
            0u64,
            1,
            0xFFFF_FFFF,
            0x1_0000_0000,
            0xDEAD_BEEF_0000_0001,
            u64::MAX,
        ] {
            let lsn = Lsn::new(v);
            assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
        }
    }
}
