#!/usr/bin/env bash
# One large source transaction: the time from its COMMIT on the source to its visibility on the
# target, PostgreSQL's own subscription (streaming = on; parallel on 16+) against lsnpipe, in one
# run; and lsnpipe's peak memory.
#
#   scripts/bench-large-txn.sh [ROWS]     default 2,000,000 rows in a single transaction
#
# Both tools stream the transaction while the source writes it. The native apply worker (on 15)
# spools the streamed changes to a file and applies them at the commit; lsnpipe applies them as
# they arrive on a target session of its own and only commits at the commit. Each tool gets its
# own table, publication and slot and its own transaction of the same rows, one after the other,
# with the other tool idle; each target must equal the source. The clock starts just before the
# source's COMMIT is sent and stops when a poll of the target (every 20 ms, by the last row's
# key) sees the transaction. Peak RSS of lsnpipe from /usr/bin/time -v (Debian package `time`).
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

ROWS=${1:-2000000}
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time: apt-get install time" >&2; exit 1; }
build_lsnpipe
trap cleanup_bench EXIT
start_clusters

sq postgres "CREATE DATABASE bench"
for db in native lsnpipe; do
  dq postgres "CREATE DATABASE $db"
  ddl="CREATE TABLE big_$db (id bigint PRIMARY KEY, payload text, n numeric, at timestamptz)"
  sq bench "$ddl; CREATE PUBLICATION pub_$db FOR TABLE big_$db" >/dev/null
  dq "$db" "$ddl"
done
version=$(sq bench "SHOW server_version_num")
mode=on
((version >= 160000)) && mode=parallel

# Write ROWS rows into big_$1 in one transaction; print the nanosecond clock just before COMMIT.
write_transaction() {
  local table=big_$1 stamp=$BENCH_DIR/commit_$1
  psql "$(src bench)" -XAtq -v ON_ERROR_STOP=1 >/dev/null <<SQL
BEGIN;
INSERT INTO $table SELECT g, md5(g::text) || md5((g + 1)::text), g * 1.5, now()
  FROM generate_series(1, $ROWS) g;
\! date +%s%N > $stamp
COMMIT;
SQL
  cat "$stamp"
}

# Poll target database $1 until the transaction's last row is visible; print the clock then.
visible_at() {
  wait_target "$1" "SELECT EXISTS (SELECT 1 FROM big_$1 WHERE id = $ROWS)" 1800
  now_ns
}

# Seconds from commit to visibility for tool $1 (its poller must already run).
measure() {
  local tool=$1 t_commit t_visible
  visible_at "$tool" >"$BENCH_DIR/visible_$tool" &
  local poller=$!
  t_commit=$(write_transaction "$tool")
  wait "$poller"
  t_visible=$(cat "$BENCH_DIR/visible_$tool")
  elapsed "$t_commit" "$t_visible"
}

# Native: a subscription with its own slot, streaming in-progress transactions.
dq native "CREATE SUBSCRIPTION native_sub CONNECTION '$(src bench)' PUBLICATION pub_native
           WITH (copy_data = false, streaming = $mode)" 2>/dev/null
until [ "$(sq bench "SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE application_name = 'native_sub' AND state = 'streaming')")" = t ]; do
  sleep 0.1
done
echo "native: one transaction of $ROWS rows…" >&2
native_s=$(measure native)
same_tables bench native big_native
dq native "ALTER SUBSCRIPTION native_sub DISABLE"

# lsnpipe: a slot of its own, created now (after the native run's transaction).
/usr/bin/time -v -o "$BENCH_DIR/time.txt" "$LSNPIPE" run --source "$(src bench)" --target "$(dst lsnpipe)" \
  --publication pub_lsnpipe --slot lsnpipe_slot --create-slot --metrics-listen off 2>"$BENCH_DIR/lsnpipe.log" &
lsnpipe_pid=$!
until grep -qs "streaming slot" "$BENCH_DIR/lsnpipe.log"; do
  kill -0 "$lsnpipe_pid" 2>/dev/null || { cat "$BENCH_DIR/lsnpipe.log" >&2; exit 1; }
  sleep 0.1
done
echo "lsnpipe: one transaction of $ROWS rows…" >&2
lsnpipe_s=$(measure lsnpipe)
kill -TERM "$(pgrep -P "$lsnpipe_pid")" # lsnpipe itself, the child of /usr/bin/time
wait "$lsnpipe_pid" || { cat "$BENCH_DIR/lsnpipe.log" >&2; exit 1; }
lsnpipe_pid=
same_tables bench lsnpipe big_lsnpipe
grep -q "in-progress transactions are streamed" "$BENCH_DIR/lsnpipe.log" ||
  echo "note: lsnpipe did not stream (see $BENCH_DIR/lsnpipe.log)" >&2

machine
wal=$(sq bench "SELECT pg_size_pretty(pg_relation_size('big_lsnpipe'))")
echo "one source transaction of $ROWS rows ($wal of table), PostgreSQL $(sq bench "SHOW server_version")"
echo "commit to visible on the target: native (streaming = $mode) ${native_s} s, lsnpipe ${lsnpipe_s} s"
awk -v n="$native_s" -v l="$lsnpipe_s" 'BEGIN{printf "ratio lsnpipe/native: %.3f\n", l/n}'
sed -n 's/^\tMaximum resident set size (kbytes): \(.*\)/lsnpipe peak RSS: \1 kB/p' "$BENCH_DIR/time.txt"
echo "targets equal the source: big_native, big_lsnpipe"
