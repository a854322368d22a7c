//! The decoder never panics: random bytes, every truncation and single-byte corruptions of every
//! captured frame return `Err` or a value. (That it never allocates while doing so is shown with
//! a counting allocator in `tests/decode_alloc.rs`.)

use bytes::Bytes;
use proptest::prelude::*;

use super::fixture_tests::{FIXTURES, frames};
use super::*;

/// Every captured frame, with the context it was captured in (parsed once per test binary).
fn captured() -> &'static [(Bytes, DecodeContext)] {
    static CAPTURED: std::sync::OnceLock<Vec<(Bytes, DecodeContext)>> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(parse_captured)
}

fn parse_captured() -> Vec<(Bytes, DecodeContext)> {
    let mut out = Vec::new();
    for (_, text) in FIXTURES {
        let mut ctx = DecodeContext::default();
        for f in frames(text) {
            let this = ctx;
            match f.first() {
                Some(b'S') => ctx.in_stream = true,
                Some(b'E') => ctx.in_stream = false,
                _ => {}
            }
            out.push((f, this));
        }
    }
    out
}

/// The captured frames that differ in tag or length: the streamed fixtures repeat one shape
/// hundreds of times, and the exhaustive loops below need each shape once.
fn distinct_shapes() -> Vec<(Bytes, DecodeContext)> {
    let mut seen = std::collections::HashSet::new();
    captured()
        .iter()
        .filter(|(f, ctx)| seen.insert((f.first().copied(), f.len(), ctx.in_stream)))
        .cloned()
        .collect()
}

/// Decode in every context; the point is that this returns.
fn decode_all_contexts(frame: &Bytes) {
    for in_stream in [false, true] {
        for parallel_streaming in [false, true] {
            let ctx = DecodeContext {
                in_stream,
                parallel_streaming,
            };
            if let Ok(message) = decode(frame.clone(), ctx) {
                walk(&message);
            }
        }
    }
}

/// Touch every lazily read part of a decoded message (the iterators are where a bad bound
/// would show).
fn walk(message: &LogicalMessage) {
    let tuples: Vec<&TupleData> = match message {
        LogicalMessage::Insert(i) => vec![&i.new],
        LogicalMessage::Update(u) => {
            let mut t = vec![&u.new];
            t.extend(u.old.as_ref().map(OldTuple::tuple));
            t
        }
        LogicalMessage::Delete(d) => vec![d.old.tuple()],
        LogicalMessage::Relation(r) => {
            assert_eq!(r.columns().count(), r.column_count());
            let _ = (r.namespace().len(), r.name().len());
            vec![]
        }
        LogicalMessage::Truncate(t) => {
            assert_eq!(t.relation_oids().count(), t.relation_count());
            vec![]
        }
        _ => vec![],
    };
    for t in tuples {
        assert_eq!(t.iter().count(), t.len());
        assert_eq!(t.slices().count(), t.len());
        assert_eq!(t.get(t.len()), None);
        for (value, slice) in t.iter().zip(t.slices()) {
            let same = match (value, slice) {
                (ColumnValue::Null, ColumnSlice::Null) => true,
                (ColumnValue::UnchangedToast, ColumnSlice::UnchangedToast) => true,
                (ColumnValue::Text(v), ColumnSlice::Text(s)) => v == s,
                (ColumnValue::Binary(v), ColumnSlice::Binary(s)) => v == s,
                _ => false,
            };
            assert!(same);
        }
    }
}

#[test]
fn every_truncation_of_every_captured_shape_is_an_error() {
    for (frame, ctx) in distinct_shapes() {
        assert!(decode(frame.clone(), ctx).is_ok());
        for len in 0..frame.len() {
            let short = frame.slice(..len);
            assert!(
                decode(short.clone(), ctx).is_err(),
                "prefix of {len} bytes of {frame:02x?} decoded"
            );
            decode_all_contexts(&short);
        }
    }
}

#[test]
fn every_single_byte_corruption_of_every_captured_shape_returns() {
    // All 256 values at every position; decoded inside and outside a stream (the parallel
    // flag changes only Stream Abort, whose shapes the random tests cover), to keep this quick
    // in an unoptimised test build.
    for (frame, ctx) in distinct_shapes() {
        for pos in 0..frame.len() {
            for value in 0..=u8::MAX {
                let mut bad = frame.to_vec();
                bad[pos] = value;
                let bad = Bytes::from(bad);
                for in_stream in [ctx.in_stream, !ctx.in_stream] {
                    if let Ok(m) = decode(bad.clone(), DecodeContext { in_stream, ..ctx }) {
                        walk(&m);
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn random_bytes_return(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_all_contexts(&Bytes::from(data));
    }

    #[test]
    fn random_bytes_after_a_valid_tag_return(
        tag in proptest::sample::select(b"BCORYIUDTMSEcAbPKrp".to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut data = vec![tag];
        data.extend(body);
        decode_all_contexts(&Bytes::from(data));
    }

    #[test]
    fn any_byte_anywhere_in_any_captured_frame_returns(
        index in any::<prop::sample::Index>(),
        pos in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let frames = captured();
        let (frame, ctx) = &frames[index.index(frames.len())];
        let mut bad = frame.to_vec();
        let p = pos.index(bad.len());
        bad[p] = value;
        let bad = Bytes::from(bad);
        if let Ok(m) = decode(bad.clone(), *ctx) {
            walk(&m);
        }
        decode_all_contexts(&bad.slice(..cut.index(bad.len() + 1)));
    }
}
