//! Decoder throughput on a captured stream: 2,000 pgbench TPC-B-like transactions
//! (Begin, Update ×3, Insert, Commit, with Relation messages) read from a PostgreSQL 15 slot by
//! `scripts/capture-proto-fixtures.sh` into `proto/pgbench-2000.bin`.
//!
//! Three ways: decode only (`decode` validates every tuple, so this is the decoder's own cost);
//! decode and read every column value as a borrowed slice (what an applier copying values out
//! does); decode and read every value as a `Bytes` view. Reported as pgoutput payload bytes per
//! second and as messages per second.
//!
//!     cargo bench --bench decode

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
use lsnpipe::pgoutput::{
    ColumnSlice, ColumnValue, DecodeContext, LogicalMessage, OldTuple, decode,
};

/// The capture: each message is a big-endian u32 length followed by the message.
fn messages() -> Vec<Bytes> {
    let file = Bytes::from_static(include_bytes!("../proto/pgbench-2000.bin"));
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < file.len() {
        let mut len = [0u8; 4];
        len.copy_from_slice(&file[pos..pos + 4]);
        let len = u32::from_be_bytes(len) as usize;
        out.push(file.slice(pos + 4..pos + 4 + len));
        pos += 4 + len;
    }
    out
}

/// How the bench reads each value.
#[derive(Clone, Copy)]
enum Read {
    /// Decode only (the tuples are validated by `decode`, values are not read).
    Nothing,
    /// `TupleData::slices`: borrowed slices (what an applier that copies the bytes out needs).
    Slices,
    /// `TupleData::iter`: a `Bytes` view per value (one reference-count increment each).
    Bytes,
}

/// Decode every message and read every value; returns the value bytes seen.
fn decode_all(messages: &[Bytes], read: Read) -> usize {
    let mut ctx = DecodeContext::default();
    let mut value_bytes = 0;
    for m in messages {
        // Matched in place: moving the 136-byte message out of the Result costs a memcpy.
        let result = decode(m.clone(), ctx);
        let decoded = match &result {
            Ok(d) => d,
            Err(e) => panic!("the capture does not decode: {e}"),
        };
        let (a, b) = match decoded {
            LogicalMessage::Insert(i) => (Some(&i.new), None),
            LogicalMessage::Update(u) => (Some(&u.new), u.old.as_ref().map(OldTuple::tuple)),
            LogicalMessage::Delete(d) => (Some(d.old.tuple()), None),
            LogicalMessage::StreamStart(_) => {
                ctx.in_stream = true;
                (None, None)
            }
            LogicalMessage::StreamStop => {
                ctx.in_stream = false;
                (None, None)
            }
            _ => (None, None),
        };
        for tuple in [a, b].into_iter().flatten() {
            match read {
                Read::Nothing => {}
                Read::Slices => {
                    for value in tuple.slices() {
                        if let ColumnSlice::Text(v) | ColumnSlice::Binary(v) = value {
                            value_bytes += black_box(v).len();
                        }
                    }
                }
                Read::Bytes => {
                    for value in tuple {
                        if let ColumnValue::Text(v) | ColumnValue::Binary(v) = value {
                            value_bytes += black_box(v).len();
                        }
                    }
                }
            }
        }
        black_box(decoded);
    }
    value_bytes
}

fn bench(c: &mut Criterion) {
    let messages = messages();
    let payload: usize = messages.iter().map(Bytes::len).sum();
    assert_eq!(
        decode_all(&messages, Read::Slices),
        decode_all(&messages, Read::Bytes)
    );

    let mut group = c.benchmark_group("pgbench-2000");
    group.throughput(Throughput::Bytes(payload as u64));
    group.bench_function("bytes/s, decode only", |b| {
        b.iter(|| decode_all(black_box(&messages), Read::Nothing))
    });
    group.bench_function("bytes/s, values as slices", |b| {
        b.iter(|| decode_all(black_box(&messages), Read::Slices))
    });
    group.bench_function("bytes/s, values as Bytes", |b| {
        b.iter(|| decode_all(black_box(&messages), Read::Bytes))
    });
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("messages/s, decode only", |b| {
        b.iter(|| decode_all(black_box(&messages), Read::Nothing))
    });
    group.bench_function("messages/s, values as slices", |b| {
        b.iter(|| decode_all(black_box(&messages), Read::Slices))
    });
    group.finish();
}

/// This thread's CPU time, from the kernel's per-thread scheduler statistics (nanoseconds).
/// `None` where `/proc/thread-self/schedstat` does not exist.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Criterion measures wall time, which on a shared machine includes time the thread waited for
/// a core. This divides the same work by the CPU time the thread actually got: throughput per
/// busy core.
#[allow(
    clippy::print_stdout,
    reason = "a bench reports on stdout, like criterion"
)]
fn per_cpu_second() {
    let messages = messages();
    let payload: usize = messages.iter().map(Bytes::len).sum();
    for (label, read) in [
        ("decode only", Read::Nothing),
        ("values as slices", Read::Slices),
        ("values as Bytes", Read::Bytes),
    ] {
        let rounds = 3_000u32;
        let (Some(start), wall) = (thread_cpu_ns(), std::time::Instant::now()) else {
            return;
        };
        for _ in 0..rounds {
            black_box(decode_all(black_box(&messages), read));
        }
        let Some(end) = thread_cpu_ns() else { return };
        let cpu = (end - start) as f64 / 1e9;
        let bytes = payload as f64 * f64::from(rounds);
        let count = messages.len() as f64 * f64::from(rounds);
        println!(
            "pgbench-2000 per CPU-second, {label}: {:.0} MB/s, {:.1} M messages/s \
             ({:.0}% of wall time on a core)",
            bytes / cpu / 1e6,
            count / cpu / 1e6,
            100.0 * cpu / wall.elapsed().as_secs_f64()
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    // Not in `cargo test --benches` (criterion's --test mode) or when listing.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        per_cpu_second();
    }
    Criterion::default().configure_from_args().final_summary();
}
