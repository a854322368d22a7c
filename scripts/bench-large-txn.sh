#!/usr/bin/env bash
# One large source transaction through lsnpipe: peak memory and time.
#
#   scripts/bench-large-txn.sh [ROWS]     default 2,000,000 rows in a single INSERT
#
# lsnpipe applies a transaction's changes inside an open target transaction as they arrive, so its
# memory does not grow with the transaction. Prints the peak RSS from /usr/bin/time -v (Debian
# package `time`) and the time from start to the whole transaction being visible on the target.
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

ROWS=${1:-2000000}
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time: apt-get install time" >&2; exit 1; }
build_lsnpipe
trap cleanup_bench EXIT
start_clusters

ddl="CREATE TABLE big (id bigint PRIMARY KEY, payload text, n numeric, at timestamptz)"
sq postgres "CREATE DATABASE bench"
dq postgres "CREATE DATABASE bench"
sq bench "$ddl; CREATE PUBLICATION big_pub FOR TABLE big" >/dev/null
dq bench "$ddl"
sq bench "SELECT pg_create_logical_replication_slot('big_slot', 'pgoutput')" >/dev/null
echo "writing one transaction of $ROWS rows…" >&2
sq bench "INSERT INTO big SELECT g, md5(g::text) || md5((g + 1)::text), g * 1.5, now()
          FROM generate_series(1, $ROWS) g"
wal=$(sq bench "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)) FROM pg_replication_slots WHERE slot_name = 'big_slot'")

t0=$(now_ns)
/usr/bin/time -v -o "$BENCH_DIR/time.txt" "$LSNPIPE" run --source "$(src bench)" --target "$(dst bench)" \
  --publication big_pub --slot big_slot --metrics-listen off 2>"$BENCH_DIR/lsnpipe.log" &
lsnpipe_pid=$!
wait_target bench "SELECT count(*) = $ROWS FROM big" 1800
t1=$(now_ns)
kill -TERM "$(pgrep -P "$lsnpipe_pid")"  # lsnpipe itself, the child of /usr/bin/time
wait "$lsnpipe_pid" || { cat "$BENCH_DIR/lsnpipe.log" >&2; exit 1; }
lsnpipe_pid=
same_tables bench bench big

machine
echo "one source transaction of $ROWS rows ($wal of WAL)"
awk -v a="$t0" -v b="$t1" -v r="$ROWS" 'BEGIN{printf "visible on the target after %.1f s (%.0f rows/s, including the source decoding it)\n", (b-a)/1e9, r/((b-a)/1e9)}'
sed -n 's/^\tMaximum resident set size (kbytes): \(.*\)/lsnpipe peak RSS: \1 kB/p' "$BENCH_DIR/time.txt"
echo "target equals the source: big"
