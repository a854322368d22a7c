#!/usr/bin/env bash
# `lsnpipe verify` against the whole-table checksum that pgcopydb's `compare data` runs
# (`count(*)` and `sum(hashtext(t::text))` per table, source and target at once), on the same
# equal pair: elapsed time of each and their ratio.
#
#   scripts/bench-verify.sh [SCALE] [RUNS]   pgbench scale (default 50: 5 million rows), runs of
#                                            each (default 3; the median counts)
#
# The target is filled by `lsnpipe run --create-slot` (initial copy), which then keeps streaming
# (idle) during the measurements, as in production. The checksum runs every table on both sides
# at once (the most parallel it can be); verify runs with --jobs $JOBS (default 2). The checksum
# only says whether each table is equal; verify also names the rows that differ and tolerates lag.
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

SCALE=${1:-50}
RUNS=${2:-3}
JOBS=${JOBS:-2}
TABLES=(pgbench_accounts pgbench_branches pgbench_tellers pgbench_history)

build_lsnpipe
trap cleanup_bench EXIT
start_clusters
machine

echo "loading pgbench scale $SCALE on the source…" >&2
sq postgres "CREATE DATABASE bench"
pgbench -i -q -s "$SCALE" "$(src bench)" >/dev/null 2>&1
sq bench "VACUUM ANALYZE"
sq bench "CREATE PUBLICATION bench_pub FOR TABLE $(IFS=,; echo "${TABLES[*]}")" >/dev/null
dq postgres "CREATE DATABASE bench"
pg_dump -s -t 'pgbench_*' "$(src bench)" | psql -Xq "$(dst bench)" >/dev/null

echo "copying with lsnpipe run…" >&2
"$LSNPIPE" run --source "$(src bench)" --target "$(dst bench)" --publication bench_pub \
  --slot verify_bench --create-slot --metrics-listen off 2>"$BENCH_DIR/run.log" &
lsnpipe_pid=$!
wait_target bench "SELECT EXISTS (SELECT 1 FROM lsnpipe.progress WHERE slot = 'verify_bench')" 1200
dq bench "VACUUM ANALYZE" >/dev/null
sq postgres CHECKPOINT >/dev/null
dq postgres CHECKPOINT >/dev/null
rows=$(sq bench "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM pgbench_tellers)
                        + (SELECT count(*) FROM pgbench_branches)")

checksum() {
  local t pids=()
  local q="SELECT count(*), sum(hashtext(t::text)) FROM %s t"
  for t in "${TABLES[@]}"; do
    # shellcheck disable=SC2059
    sq bench "$(printf "$q" "$t")" >"$BENCH_DIR/src.$t" &
    pids+=($!)
    # shellcheck disable=SC2059
    dq bench "$(printf "$q" "$t")" >"$BENCH_DIR/dst.$t" &
    pids+=($!)
  done
  wait "${pids[@]}"
  for t in "${TABLES[@]}"; do
    cmp -s "$BENCH_DIR/src.$t" "$BENCH_DIR/dst.$t" || { echo "checksum: $t differs" >&2; return 1; }
  done
}

verify() {
  "$LSNPIPE" verify --source "$(src bench)" --target "$(dst bench)" --publication bench_pub \
    --slot verify_bench --jobs "$JOBS" >"$BENCH_DIR/verify.out" 2>"$BENCH_DIR/verify.log"
}

median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
time_of() {
  local start end
  start=$(now_ns)
  "$@"
  end=$(now_ns)
  awk -v a="$start" -v b="$end" 'BEGIN{printf "%.2f\n", (b-a)/1e9}'
}

# One untimed run of each warms the caches of both servers.
checksum
verify
c_times=() v_times=()
for _ in $(seq "$RUNS"); do
  c_times+=("$(time_of checksum)")
  v_times+=("$(time_of verify)")
done
c=$(printf '%s\n' "${c_times[@]}" | median)
v=$(printf '%s\n' "${v_times[@]}" | median)
echo "pgbench scale $SCALE ($rows keyed rows), $RUNS runs each, median:"
echo "  checksum (count + sum(hashtext), all tables, both sides at once): ${c} s  [${c_times[*]}]"
echo "  lsnpipe verify --jobs $JOBS:                                      ${v} s  [${v_times[*]}]"
awk -v v="$v" -v c="$c" 'BEGIN{printf "  ratio verify / checksum: %.2f\n", v/c}'
cat "$BENCH_DIR/verify.out"
