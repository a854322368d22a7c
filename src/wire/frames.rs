//! The streaming-replication protocol inside CopyData: XLogData `w` and primary keepalive `k`
//! from the server, standby status update `r` to it.
//!
//! ```text
//!  CopyData payload ─▶ ReplicationMessage::parse ─▶ 'w' XLogData { start, end, clock, data }
//!                                                 | 'k' Keepalive { wal_end, clock, reply }
//!  StandbyStatusUpdate::encode ─▶ 'r' payload (34 bytes)
//! ```
//!
//! Sans-IO like the pgoutput decoder it hands `data` to: it depends on `bytes`, [`Lsn`] and
//! `DecodeError` only, so `fuzz/` compiles this file (by path) beside the decoder.

use bytes::{BufMut, Bytes, BytesMut};

use crate::Lsn;
use crate::pgoutput::DecodeError;

/// A CopyData payload sent by a walsender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    XLogData(XLogData),
    Keepalive(Keepalive),
}

/// `w`: one pgoutput message and the WAL positions the server attached to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// For pgoutput: the message's own LSN (0 for Relation/Type). Not monotonic.
    pub start: Lsn,
    pub end: Lsn,
    /// Server clock, microseconds since 2000-01-01 UTC.
    pub clock: i64,
    /// The pgoutput message, a slice of the received frame.
    pub data: Bytes,
}

/// `k`: the server's sent position, and whether it wants a status update at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub wal_end: Lsn,
    pub clock: i64,
    pub reply_requested: bool,
}

const XLOG_HEADER: usize = 25;
const KEEPALIVE_LEN: usize = 18;

impl ReplicationMessage {
    /// Decode a CopyData payload. `payload` is kept, not copied: `XLogData::data` slices it.
    pub fn parse(payload: Bytes) -> Result<Self, DecodeError> {
        match payload.first() {
            Some(b'w') => {
                let what = "XLogData";
                if payload.len() < XLOG_HEADER {
                    return Err(DecodeError::Truncated {
                        what,
                        offset: payload.len(),
                        needed: XLOG_HEADER - payload.len(),
                    });
                }
                Ok(ReplicationMessage::XLogData(XLogData {
                    start: Lsn::new(be_u64(&payload[1..9])),
                    end: Lsn::new(be_u64(&payload[9..17])),
                    clock: be_u64(&payload[17..25]) as i64,
                    data: payload.slice(XLOG_HEADER..),
                }))
            }
            Some(b'k') => {
                let what = "primary keepalive";
                if payload.len() < KEEPALIVE_LEN {
                    return Err(DecodeError::Truncated {
                        what,
                        offset: payload.len(),
                        needed: KEEPALIVE_LEN - payload.len(),
                    });
                }
                if payload.len() > KEEPALIVE_LEN {
                    return Err(DecodeError::TrailingBytes {
                        what,
                        len: payload.len() - KEEPALIVE_LEN,
                    });
                }
                Ok(ReplicationMessage::Keepalive(Keepalive {
                    wal_end: Lsn::new(be_u64(&payload[1..9])),
                    clock: be_u64(&payload[9..17]) as i64,
                    reply_requested: payload[17] != 0,
                }))
            }
            Some(&tag) => Err(DecodeError::UnknownTag {
                what: "replication CopyData",
                tag,
            }),
            None => Err(DecodeError::Truncated {
                what: "replication CopyData",
                offset: 0,
                needed: 1,
            }),
        }
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// `r`: what the client has received (write), made durable (flush) and applied (apply).
/// The server advances the slot's `confirmed_flush_lsn` to `flush`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    pub write: Lsn,
    pub flush: Lsn,
    pub apply: Lsn,
    /// Client clock, microseconds since 2000-01-01 UTC.
    pub clock: i64,
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    pub const ENCODED_LEN: usize = 34;

    /// Append the 34-byte CopyData payload (without the CopyData frame header).
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(Self::ENCODED_LEN);
        out.put_u8(b'r');
        out.put_u64(self.write.as_u64());
        out.put_u64(self.flush.as_u64());
        out.put_u64(self.apply.as_u64());
        out.put_i64(self.clock);
        out.put_u8(u8::from(self.reply_requested));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use crate::pgoutput::hex_bytes as hex;

    #[test]
    fn decodes_a_captured_keepalive() {
        let msg =
            ReplicationMessage::parse(hex("6b 000000000166fa38 000304185aa93241 00")).unwrap();
        assert_eq!(
            msg,
            ReplicationMessage::Keepalive(Keepalive {
                wal_end: "0/166FA38".parse().unwrap(),
                clock: 0x0003_0418_5aa9_3241,
                reply_requested: false,
            })
        );
    }

    #[test]
    fn decodes_a_captured_xlogdata_without_copying_the_payload() {
        let frame = hex("77 000000000166fa38 000000000166fa38 000304185aa93303 \
             42 000000000166fac0 00030418581cac15 00000308");
        let ReplicationMessage::XLogData(x) = ReplicationMessage::parse(frame.clone()).unwrap()
        else {
            panic!("not XLogData")
        };
        assert_eq!(x.start, "0/166FA38".parse().unwrap());
        assert_eq!(x.end, x.start);
        assert_eq!(x.clock, 0x0003_0418_5aa9_3303);
        assert_eq!(x.data.len(), 21);
        assert_eq!(x.data[0], b'B');
        assert_eq!(
            x.data.as_ptr(),
            frame[25..].as_ptr(),
            "payload is a slice of the frame"
        );
    }

    #[test]
    fn encodes_the_captured_status_update() {
        let lsn: Lsn = "0/165B818".parse().unwrap();
        let mut out = BytesMut::new();
        StandbyStatusUpdate {
            write: lsn,
            flush: lsn,
            apply: lsn,
            clock: 0x0003_0418_51a2_a4c3,
            reply_requested: true,
        }
        .encode(&mut out);
        assert_eq!(
            out.freeze(),
            hex("72 000000000165b818 000000000165b818 000000000165b818 0003041851a2a4c3 01")
        );
    }

    #[test]
    fn rejects_short_long_and_unknown_payloads() {
        assert!(matches!(
            ReplicationMessage::parse(Bytes::new()),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            ReplicationMessage::parse(hex("77 00")),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            ReplicationMessage::parse(hex("6b 000000000166fa38 000304185aa93241")),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            ReplicationMessage::parse(hex("6b 000000000166fa38 000304185aa93241 00 00")),
            Err(DecodeError::TrailingBytes { .. })
        ));
        assert!(matches!(
            ReplicationMessage::parse(hex("73 00")),
            Err(DecodeError::UnknownTag { tag: b's', .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn random_replication_payloads_return(
            tag in proptest::sample::select(b"wkrs".to_vec()),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut data = vec![tag];
            data.extend(body);
            let payload = Bytes::from(data);
            match ReplicationMessage::parse(payload.clone()) {
                Ok(ReplicationMessage::XLogData(x)) => {
                    prop_assert_eq!(&x.data[..], &payload[25..]);
                }
                Ok(ReplicationMessage::Keepalive(_)) => prop_assert_eq!(payload.len(), 18),
                Err(_) => prop_assert!(
                    (tag == b'w' && payload.len() < 25)
                        || (tag == b'k' && payload.len() != 18)
                        || tag == b'r'
                        || tag == b's'
                ),
            }
        }
    }
}
