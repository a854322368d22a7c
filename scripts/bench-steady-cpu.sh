#!/usr/bin/env bash
# Apply CPU at a steady rate: what keeping up costs, lsnpipe against PostgreSQL's own
# CREATE SUBSCRIPTION, in the same run.
#
#   scripts/bench-steady-cpu.sh [SECONDS] [RATE]     defaults: 15 s at 1000 tx/s
#
# A pgbench TPC-B-like load at a fixed rate (`pgbench -c 4 -j 2 -R RATE`, scale 10, sessions with
# synchronous_commit = off as in bench-freshness.sh) runs on the source while each replicator in
# turn keeps up with it (native, then lsnpipe, on the same data). Prints the CPU seconds of every
# target-cluster process over the load and, for lsnpipe, of its own process, per transaction.
# ROUNDS (default 2) repeats the pair.
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

DURATION=${1:-15}
RATE=${2:-1000}
SCALE=${SCALE:-10}
ROUNDS=${ROUNDS:-2}
LOAD_OPTIONS=${LOAD_OPTIONS-"-c synchronous_commit=off"}
TABLES=(pgbench_accounts pgbench_branches pgbench_tellers pgbench_history bench_marker)
lsnpipe_pid=

build_lsnpipe
trap cleanup_bench EXIT
start_clusters
setup_pgbench_pair "CREATE TABLE bench_marker (id int PRIMARY KEY)" bench_marker

marker=0
caught_up() {
  marker=$((marker + 1))
  sq bench "INSERT INTO bench_marker VALUES ($marker)"
  wait_target "$1" "SELECT EXISTS (SELECT 1 FROM bench_marker WHERE id = $marker)"
}

results=()
for round in $(seq "$ROUNDS"); do
  for who in native lsnpipe; do
    if [ "$who" = native ]; then
      dq native "ALTER SUBSCRIPTION native_sub ENABLE"
    else
      "$LSNPIPE" run --source "$(src bench)" --target "$(dst lsnpipe)" --publication bench_pub \
        --slot lsnpipe_bench --metrics-listen off 2>>"$BENCH_DIR/lsnpipe.log" &
      lsnpipe_pid=$!
    fi
    caught_up "$who"
    t0=$(target_cpu_ticks)
    [ "$who" = lsnpipe ] && own0=$(process_cpu_ticks "$lsnpipe_pid")
    PGOPTIONS="$LOAD_OPTIONS" pgbench -n -R "$RATE" -T "$DURATION" -c 4 -j 2 "$(src bench)" \
      >"$BENCH_DIR/load.log" 2>&1
    caught_up "$who"
    t1=$(target_cpu_ticks)
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$BENCH_DIR/load.log")
    line=$(printf 'round %s  %-8s %6s txns  target CPU %6s s (%4.0f us/txn)' "$round" "$who" "$txns" \
      "$(ticks_to_s $((t1 - t0)))" "$(awk -v t=$((t1 - t0)) -v hz="$TICKS" -v n="$txns" 'BEGIN{print t/hz/n*1e6}')")
    if [ "$who" = native ]; then
      dq native "ALTER SUBSCRIPTION native_sub DISABLE"
    else
      own1=$(process_cpu_ticks "$lsnpipe_pid")
      line+=$(printf '  lsnpipe process %5s s (%3.0f us/txn)' "$(ticks_to_s $((own1 - own0)))" \
        "$(awk -v t=$((own1 - own0)) -v hz="$TICKS" -v n="$txns" 'BEGIN{print t/hz/n*1e6}')")
      kill -TERM "$lsnpipe_pid"; wait "$lsnpipe_pid"; lsnpipe_pid=
    fi
    results+=("$line")
  done
done
# Both take in what was written while the other ran, up to one last marker, then are compared.
dq native "ALTER SUBSCRIPTION native_sub ENABLE"
"$LSNPIPE" run --source "$(src bench)" --target "$(dst lsnpipe)" --publication bench_pub \
  --slot lsnpipe_bench --metrics-listen off 2>>"$BENCH_DIR/lsnpipe.log" &
lsnpipe_pid=$!
caught_up native
wait_target lsnpipe "SELECT EXISTS (SELECT 1 FROM bench_marker WHERE id = $marker)"
dq native "ALTER SUBSCRIPTION native_sub DISABLE"
kill -TERM "$lsnpipe_pid"; wait "$lsnpipe_pid"; lsnpipe_pid=
for who in native lsnpipe; do same_tables bench "$who" "${TABLES[@]}"; done

machine
echo "load: pgbench TPC-B-like at $RATE tx/s for ${DURATION}s, scale $SCALE, 4 clients${LOAD_OPTIONS:+, PGOPTIONS=$LOAD_OPTIONS}"
printf '%s\n' "${results[@]}"
echo "targets equal the source: ${TABLES[*]}"
