#!/usr/bin/env bash
# The lag of the other tables while a table that joined the publication is copied online.
#
#   scripts/bench-add-table.sh [ROWS] [RATE]     defaults: 1000000 rows, 500 tx/s
#
# lsnpipe (release build) streams a pgbench database (scale $SCALE, default 5) and a probe table
# under a steady pgbench TPC-B-like load at RATE tx/s plus 50 probe rows/s, each stamped with
# clock_timestamp() at its source commit. Once it is caught up, a table `big` with ROWS rows is
# created (and the stream waited for past the transaction that filled it), added to the
# publication and changed once (so lsnpipe hears of it at once), and
# lsnpipe copies it beside the stream. The lag of the other tables is sampled every 100 ms on
# the target as now − the newest probe's source time (both clusters share this machine's
# clock; a probe arrives every 20 ms, so the floor is ~20 ms). Prints the lag before and during
# the copy (p50, p99, max), the copy's duration, and checks that big and the probe table equal
# the source's at the end.
# lsnpipe's log is kept in /tmp/bench-add-table.lsnpipe.log, the samples (seconds since the
# ALTER PUBLICATION, lag) in /tmp/bench-add-table.samples.
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

ROWS=${1:-1000000}
RATE=${2:-500}
SCALE=${SCALE:-5}

build_lsnpipe
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  cleanup_bench
}
trap cleanup EXIT
start_clusters
machine

sq postgres "CREATE DATABASE bench"
pgbench -i -q -s "$SCALE" "$(src bench)" >/dev/null 2>&1
sq bench "CREATE TABLE probe (id bigserial PRIMARY KEY, src_ts timestamptz NOT NULL)"
sq bench "CREATE PUBLICATION bench_pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history, probe" >/dev/null
dq postgres "CREATE DATABASE bench"

"$LSNPIPE" run --source "$(src bench)" --target "$(dst bench)" --publication bench_pub \
  --slot lsnpipe_bench --create-slot --create-tables --metrics-listen off \
  2>"$BENCH_DIR/lsnpipe.log" &
lsnpipe_pid=$!
wait_target bench "SELECT EXISTS (SELECT 1 FROM lsnpipe.copy_run WHERE status = 'done')" 600

echo "INSERT INTO probe (src_ts) VALUES (clock_timestamp());" >"$BENCH_DIR/probe.sql"
pgbench -n -c 2 -j 1 -R "$RATE" -T 100000 "$(src bench)" >/dev/null 2>&1 &
pids+=($!)
pgbench -n -c 1 -R 50 -T 100000 -f "$BENCH_DIR/probe.sql" "$(src bench)" >/dev/null 2>&1 &
pids+=($!)

# One psql session samples (time, lag) every 100 ms into $BENCH_DIR/samples until killed.
start_sampler() {
  psql "$(dst bench)" -XAtq -F ' ' >"$BENCH_DIR/samples" 2>/dev/null <<'SQL' &
SELECT extract(epoch FROM clock_timestamp()),
       coalesce(extract(epoch FROM clock_timestamp() - max(src_ts)), 0) FROM probe \watch 0.1
SQL
  pids+=($!)
}
# The lag samples taken between epoch seconds $1 and $2, into file $3.
window() { awk -v a="$1" -v b="$2" 'NF == 2 && $1 >= a && $1 <= b {print $2}' "$BENCH_DIR/samples" >"$3"; }
epoch() { date +%s.%N; }
wait_for() { until [ "$(dq bench "$1" 2>/dev/null)" = "t" ]; do sleep 0.05; done; }
summary() {
  sort -g "$1" | awk '{a[NR]=$1} END {
    if (NR == 0) { print "no samples"; exit }
    p50 = int(NR * 0.5) + 1; if (p50 > NR) p50 = NR
    p99 = int(NR * 0.99) + 1; if (p99 > NR) p99 = NR
    printf "%d samples, p50 %.3f s, p99 %.3f s, max %.3f s", NR, a[p50], a[p99], a[NR] }'
}

echo "steady state: ${RATE} tx/s + 50 probes/s for 10 s…" >&2
start_sampler
b0=$(epoch)
sleep 10
b1=$(epoch)

echo "creating big with $ROWS rows on the source…" >&2
sq bench "CREATE TABLE big (id int PRIMARY KEY, v text);
          INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, $ROWS) g"
# The walsender still decodes the filling transaction (to skip it, as big is not published
# yet): wait until the stream is past it, so that what follows measures the copy alone.
probe_now=$(sq bench "SELECT max(id) FROM probe")
wait_target bench "SELECT max(id) >= $probe_now FROM probe" 300
sleep 2
t0=$(now_ns)
d0=$(epoch)
sq bench "ALTER PUBLICATION bench_pub ADD TABLE big"
sq bench "UPDATE big SET v = 'changed' WHERE id = 1"
# Until the copy is done and big's key is built (keys and indexes come after the data).
wait_for \
  "SELECT EXISTS (SELECT 1 FROM lsnpipe.copy_state WHERE table_name = 'big' AND status = 'done')
          AND to_regclass('public.big_pkey') IS NOT NULL"
t1=$(now_ns)
d1=$(epoch)
window "$b0" "$b1" "$BENCH_DIR/before"
window "$d0" "$d1" "$BENCH_DIR/during"
cp "$BENCH_DIR/lsnpipe.log" /tmp/bench-add-table.lsnpipe.log
awk -v a="$d0" 'NF == 2 {printf "%.2f %s\n", $1 - a, $2}' "$BENCH_DIR/samples" >/tmp/bench-add-table.samples

for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
pids=()
wait_target bench "SELECT (SELECT count(*) FROM probe) = $(sq bench "SELECT count(*) FROM probe")" 300
sleep 1
same_tables bench bench big probe pgbench_accounts
kill "$lsnpipe_pid" && wait "$lsnpipe_pid" || true
lsnpipe_pid=

echo "big: $ROWS rows copied online in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", (b-a)/1e9}') s (from ALTER PUBLICATION to copy done and key built)"
echo "lag of the other tables before the copy: $(summary "$BENCH_DIR/before")"
echo "lag of the other tables during the copy: $(summary "$BENCH_DIR/during")"
echo "target equals source for big, probe, pgbench_accounts"
