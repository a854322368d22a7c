//! Decoding allocates nothing: a counting global allocator shows zero heap allocations while
//! Insert, Update and Delete messages of a 20-column row are decoded and every value is read,
//! and while every truncation and single-byte corruption of the captured frames is rejected.
//!
//! Its own test binary, so the global allocator affects no other test. Counts are per thread, so
//! tests running in parallel do not disturb each other.

// The allocator interface is `unsafe`; this file only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, Bytes, BytesMut};
use lsnpipe::pgoutput::{ColumnValue, DecodeContext, LogicalMessage, OldTuple, decode};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; counting touches only a const-initialised thread-local `Cell` (which
// never allocates and has no destructor).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Heap allocations made by this thread while `f` runs.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

const COLUMNS: usize = 20;

fn tuple(out: &mut BytesMut, marker: u8, seed: u8) {
    out.put_u8(marker);
    out.put_i16(i16::try_from(COLUMNS).expect("20 fits"));
    for i in 0..COLUMNS {
        match i % 5 {
            0 => out.put_u8(b'n'),
            1 => out.put_u8(b'u'),
            2 => {
                out.put_u8(b'b');
                out.put_i32(8);
                out.put_u64(u64::from(seed) << 8 | i as u64);
            }
            _ => {
                let text = format!("column {i} of row {seed}: some text value");
                out.put_u8(b't');
                out.put_i32(i32::try_from(text.len()).expect("short text"));
                out.put_slice(text.as_bytes());
            }
        }
    }
}

/// A frame as the wire layer hands it over: split off a shared receive buffer. (A `Bytes` made
/// from a `Vec` allocates its shared header on the first slice; a frame split off a `BytesMut`
/// already has one, so the decoder's slices only bump a reference count.)
fn frame(build: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut buffer = BytesMut::with_capacity(4096);
    build(&mut buffer);
    let len = buffer.len();
    let frame = buffer.split_to(len).freeze();
    drop(frame.slice(..1));
    frame
}

/// A change of relation 16384: `tag`, then one tuple per (marker, seed).
fn change(tag: u8, tuples: &[(u8, u8)]) -> Bytes {
    frame(|b| {
        b.put_u8(tag);
        b.put_u32(16_384);
        for &(marker, seed) in tuples {
            tuple(b, marker, seed);
        }
    })
}

fn messages() -> Vec<Bytes> {
    vec![
        change(b'I', &[(b'N', 1)]),
        change(b'U', &[(b'N', 2)]),
        change(b'U', &[(b'K', 3), (b'N', 4)]),
        change(b'U', &[(b'O', 5), (b'N', 6)]),
        change(b'D', &[(b'O', 7)]),
        change(b'D', &[(b'K', 8)]),
    ]
}

/// Decode and read every value; returns (columns seen, value bytes seen).
fn decode_and_read(frame: &Bytes) -> (usize, usize) {
    let message = decode(frame.clone(), DecodeContext::default()).expect("a valid frame");
    let tuples = match &message {
        LogicalMessage::Insert(i) => [Some(&i.new), None],
        LogicalMessage::Update(u) => [Some(&u.new), u.old.as_ref().map(OldTuple::tuple)],
        LogicalMessage::Delete(d) => [Some(d.old.tuple()), None],
        other => panic!("unexpected {other:?}"),
    };
    let (mut columns, mut bytes) = (0, 0);
    for t in tuples.into_iter().flatten() {
        for value in t {
            columns += 1;
            if let ColumnValue::Text(v) | ColumnValue::Binary(v) = value {
                bytes += v.len();
            }
        }
    }
    (columns, bytes)
}

#[test]
fn decoding_insert_update_and_delete_of_a_20_column_row_allocates_nothing() {
    let frames = messages();
    for frame in &frames {
        let (allocations, (columns, bytes)) = allocations_during(|| decode_and_read(frame));
        assert_eq!(allocations, 0, "{} allocated", char::from(frame[0]));
        assert!(columns == COLUMNS || columns == 2 * COLUMNS);
        assert!(bytes > 0);
    }
    // The counter does count: the frames above allocated when they were built.
    let (allocations, _) = allocations_during(messages);
    assert!(allocations > 0);
}

#[test]
fn rejecting_every_truncation_and_corruption_allocates_nothing() {
    let mut frames = messages();
    for text in [
        include_str!("../proto/pg15/v1_dml.hex"),
        include_str!("../proto/pg15/v1_truncate.hex"),
        include_str!("../proto/pg15/v1_messages.hex"),
        include_str!("../proto/pg15/v1_types.hex"),
        include_str!("../proto/pg15/v3_two_phase.hex"),
        include_str!("../proto/pg15/v2_stream_abort.hex"),
    ] {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let raw: Vec<u8> = (0..line.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
                .collect();
            frames.push(frame(|b| b.put_slice(&raw)));
        }
    }
    let mut inputs = Vec::new();
    for f in &frames {
        for len in 0..f.len() {
            inputs.push(f.slice(..len));
        }
        for pos in 0..f.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = f.to_vec();
                bad[pos] = value;
                inputs.push(frame(|b| b.put_slice(&bad)));
            }
        }
    }
    let contexts = [
        DecodeContext::default(),
        DecodeContext {
            in_stream: true,
            parallel_streaming: true,
        },
    ];
    let (allocations, errors) = allocations_during(|| {
        let mut errors = 0usize;
        for input in &inputs {
            for ctx in contexts {
                if decode(input.clone(), ctx).is_err() {
                    errors += 1;
                }
            }
        }
        errors
    });
    assert_eq!(allocations, 0);
    assert!(errors > inputs.len(), "most of these inputs are invalid");
}
