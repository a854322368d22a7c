#!/usr/bin/env bash
# Catch-up throughput and apply CPU: lsnpipe against PostgreSQL's own CREATE SUBSCRIPTION.
#
#   scripts/bench-catchup.sh [N]      N pgbench transactions of backlog (default 100000), scale 10
#
# Builds a backlog of N pgbench (TPC-B-like) transactions on a fresh source with two slots, then
# times native logical replication and lsnpipe catching up on the same backlog, one after the
# other, into two databases of one target cluster. Each must equal the source before its figure
# counts. CPU: native = all target-cluster processes; lsnpipe = the same plus lsnpipe itself.
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

N=${1:-100000}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-4}
TABLES=(pgbench_accounts pgbench_branches pgbench_tellers pgbench_history bench_marker)

build_lsnpipe
trap cleanup_bench EXIT
start_clusters
setup_pgbench_pair "CREATE TABLE bench_marker (id int PRIMARY KEY)" bench_marker

echo "building a backlog of $N transactions…" >&2
pgbench -n -c "$CLIENTS" -j 2 -t $((N / CLIENTS)) "$(src bench)" >/dev/null
sq bench "INSERT INTO bench_marker VALUES (1)"
txns=$((N / CLIENTS * CLIENTS))
rows=$((txns * 4))
backlog=$(sq bench "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)) FROM pg_replication_slots WHERE slot_name = 'lsnpipe_bench'")

# Native
cpu0=$(target_cpu_ticks); t0=$(now_ns)
dq native "ALTER SUBSCRIPTION native_sub ENABLE"
wait_target native "SELECT EXISTS (SELECT 1 FROM bench_marker)"
t1=$(now_ns); cpu1=$(target_cpu_ticks)
dq native "ALTER SUBSCRIPTION native_sub DISABLE"
native_s=$(elapsed "$t0" "$t1")
native_cpu=$((cpu1 - cpu0))
same_tables bench native "${TABLES[@]}"

# lsnpipe
cpu0=$(target_cpu_ticks); t0=$(now_ns)
${LSNPIPE_WRAP:-} "$LSNPIPE" run --source "$(src bench)" --target "$(dst lsnpipe)" --publication bench_pub \
  --slot lsnpipe_bench --metrics-listen off 2>"$BENCH_DIR/lsnpipe.log" &
lsnpipe_pid=$!
wait_target lsnpipe "SELECT EXISTS (SELECT 1 FROM bench_marker)"
t1=$(now_ns); cpu1=$(target_cpu_ticks); own=$(process_cpu_ticks "$lsnpipe_pid")
kill -TERM "$lsnpipe_pid"; wait "$lsnpipe_pid" || { echo "lsnpipe exited with an error:" >&2; cat "$BENCH_DIR/lsnpipe.log" >&2; exit 1; }
lsnpipe_pid=
lsnpipe_s=$(elapsed "$t0" "$t1")
lsnpipe_cpu=$((cpu1 - cpu0 + own))
same_tables bench lsnpipe "${TABLES[@]}"

machine
echo "backlog: $txns pgbench transactions (scale $SCALE, $CLIENTS clients), $rows row changes, $backlog of WAL"
report() {
  awk -v name="$1" -v s="$2" -v tx="$txns" -v r="$rows" -v cpu="$(ticks_to_s "$3")" -v extra="$4" \
    'BEGIN{printf "%-8s %7.2f s  %9.0f tx/s  %9.0f rows/s  apply CPU %6.2f s%s\n", name, s, tx/s, r/s, cpu, extra}'
}
report native "$native_s" "$native_cpu" ""
report lsnpipe "$lsnpipe_s" "$lsnpipe_cpu" " (lsnpipe process $(ticks_to_s "$own") s)"
awk -v n="$native_s" -v l="$lsnpipe_s" -v nc="$native_cpu" -v lc="$lsnpipe_cpu" \
  'BEGIN{printf "ratio lsnpipe/native: throughput %.2f, apply CPU %.2f\n", n/l, lc/nc}'
echo "both targets equal the source: ${TABLES[*]}"
