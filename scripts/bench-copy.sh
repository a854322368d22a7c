#!/usr/bin/env bash
# Initial copy throughput: lsnpipe's snapshot copy against PostgreSQL's own CREATE SUBSCRIPTION
# (copy_data) and pgcopydb, into a target whose schema exists and into an empty one.
#
#   scripts/bench-copy.sh [SCALE]     pgbench scale of the source (default 50: 5 million rows)
#
# RUNS (default 3) rounds, each tool in turn within a round (alternating, so both see the same
# load); every run is printed, and the figure per tool is the median of its runs. Each run also
# prints the CPU seconds both servers spent on it (source + target, every process of each
# cluster): on a machine with N cores a copy cannot take less wall time than that sum over N.
#
# Every tool copies the same pgbench database from one source cluster into a fresh database of
# one target cluster, one after the other. "schema": the tables (with their primary keys) exist
# on the target. "empty": the tool (or, for the native subscription, pg_dump's pre-data and
# post-data sections around it) creates them. A run counts only when the target then equals the
# source. JOBS (default: nproc) is lsnpipe's --copy-jobs, the subscription's
# max_sync_workers_per_subscription and pgcopydb's --table-jobs/--index-jobs.
# pgcopydb is optional: install it with `apt-get install pgcopydb` to include it.
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

SCALE=${1:-50}
RUNS=${RUNS:-3}
JOBS=${JOBS:-$(nproc)}
TABLES=(pgbench_accounts pgbench_branches pgbench_tellers pgbench_history)
BENCH_EXTRA_CONF="max_sync_workers_per_subscription = $JOBS
max_logical_replication_workers = $((JOBS + 4))
max_worker_processes = $((JOBS + 12))
"

have_pgcopydb=1
if ! command -v pgcopydb >/dev/null 2>&1; then
  have_pgcopydb=0
  echo "pgcopydb not found: its runs are skipped (install it with: apt-get install pgcopydb)" >&2
fi

build_lsnpipe

lsnpipe_pid=
cleanup() {
  [ -n "$lsnpipe_pid" ] && kill "$lsnpipe_pid" 2>/dev/null && wait "$lsnpipe_pid" 2>/dev/null
  stop_clusters
}
trap cleanup EXIT
start_clusters

echo "loading pgbench scale $SCALE on the source…" >&2
sq postgres "CREATE DATABASE bench"
pgbench -i -q -s "$SCALE" "$(src bench)" >/dev/null 2>&1
sq bench "VACUUM ANALYZE"
sq bench "CREATE PUBLICATION bench_pub FOR TABLE $(IFS=,; echo "${TABLES[*]}")" >/dev/null
rows=$(sq bench "SELECT sum(n) FROM (SELECT count(*) n FROM pgbench_accounts UNION ALL
                 SELECT count(*) FROM pgbench_branches UNION ALL SELECT count(*) FROM pgbench_tellers
                 UNION ALL SELECT count(*) FROM pgbench_history) c")
size=$(sq bench "SELECT pg_size_pretty(pg_database_size('bench'))")

declare -A secs
# CPU seconds of both clusters since `cpu_mark`, as "source+target".
cpu_mark() { cpu_src0=$(cluster_cpu_ticks source); cpu_dst0=$(cluster_cpu_ticks target); }
cpu_spent() {
  echo "$(ticks_to_s $(($(cluster_cpu_ticks source) - cpu_src0)))+$(ticks_to_s $(($(cluster_cpu_ticks target) - cpu_dst0)))"
}
report_run() { # tool mode seconds cpu [own CPU]
  echo "  $1 $2: $3 s, server CPU $4 s (source+target)${5:+, $1 process $5 s}" >&2
}
uri() { echo "postgresql://postgres@127.0.0.1:$1/$2"; }

# Each run starts from a clean slate: no checkpoint of an earlier run's writes in its way.
settle() { sq postgres CHECKPOINT; dq postgres CHECKPOINT; }

schema_into() { pg_dump -s --section="$2" "$(src bench)" | psql -Xq -v ON_ERROR_STOP=1 "$(dst "$1")" >/dev/null; }

native() { # mode run
  local db="native_$1_$2" t0 t1
  dq postgres "CREATE DATABASE $db"
  [ "$1" = schema ] && { schema_into "$db" pre-data; schema_into "$db" post-data; }
  settle
  cpu_mark
  t0=$(now_ns)
  [ "$1" = empty ] && schema_into "$db" pre-data
  dq "$db" "CREATE SUBSCRIPTION sub_$1_$2 CONNECTION '$(src bench)' PUBLICATION bench_pub WITH (copy_data = true)" 2>/dev/null
  wait_target "$db" "SELECT count(*) = ${#TABLES[@]} AND bool_and(srsubstate = 'r') FROM pg_subscription_rel" 3600
  [ "$1" = empty ] && schema_into "$db" post-data
  t1=$(now_ns)
  report_run native "$1" "$(elapsed "$t0" "$t1")" "$(cpu_spent)"
  dq "$db" "DROP SUBSCRIPTION sub_$1_$2" >/dev/null 2>&1
  secs[native_$1]+="$(elapsed "$t0" "$t1") "
  same_tables bench "$db" "${TABLES[@]}"
  dq postgres "DROP DATABASE $db"
}

lsnpipe() { # mode run
  local db="lsnpipe_$1_$2" t0 t1 extra=()
  dq postgres "CREATE DATABASE $db"
  if [ "$1" = schema ]; then
    schema_into "$db" pre-data; schema_into "$db" post-data
  else
    extra=(--create-tables)
  fi
  settle
  cpu_mark
  t0=$(now_ns)
  "$LSNPIPE" run --source "$(src bench)" --target "$(dst "$db")" --publication bench_pub \
    --slot "lsnpipe_$1_$2" --create-slot --copy-jobs "$JOBS" --metrics-listen off "${extra[@]}" \
    2>"$BENCH_DIR/lsnpipe_$1.log" &
  lsnpipe_pid=$!
  wait_target "$db" "SELECT to_regclass('lsnpipe.copy_run') IS NOT NULL AND EXISTS (SELECT 1 FROM lsnpipe.copy_run WHERE status = 'done')" 3600
  t1=$(now_ns)
  report_run lsnpipe "$1" "$(elapsed "$t0" "$t1")" "$(cpu_spent)" \
    "$(ticks_to_s "$(process_cpu_ticks "$lsnpipe_pid")")"
  kill -TERM "$lsnpipe_pid"
  wait "$lsnpipe_pid" || { echo "lsnpipe exited with an error:" >&2; cat "$BENCH_DIR/lsnpipe_$1.log" >&2; exit 1; }
  lsnpipe_pid=
  echo "  lsnpipe $1: $(grep -o 'initial copy finished.*' "$BENCH_DIR/lsnpipe_$1.log" | sed 's/\x1b\[[0-9;]*m//g')" >&2
  sq bench "SELECT pg_drop_replication_slot('lsnpipe_$1_$2')" >/dev/null
  secs[lsnpipe_$1]+="$(elapsed "$t0" "$t1") "
  same_tables bench "$db" "${TABLES[@]}"
  dq postgres "DROP DATABASE $db"
}

pgcopydb_run() { # mode run
  local db="pgcopydb_$1_$2" t0 t1 dir="$BENCH_DIR/pgcopydb_$1_$2"
  dq postgres "CREATE DATABASE $db"
  mkdir -p "$dir"
  if [ "$1" = schema ]; then
    schema_into "$db" pre-data; schema_into "$db" post-data
    settle
    t0=$(now_ns)
    pgcopydb copy table-data --source "$(uri "$SRC_PORT" bench)" --target "$(uri "$DST_PORT" "$db")" --dir "$dir" \
      --table-jobs "$JOBS" >"$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
  else
    settle
    t0=$(now_ns)
    pgcopydb clone --source "$(uri "$SRC_PORT" bench)" --target "$(uri "$DST_PORT" "$db")" --dir "$dir" \
      --table-jobs "$JOBS" --index-jobs "$JOBS" --no-owner --no-acl >"$dir.log" 2>&1 ||
      { cat "$dir.log" >&2; exit 1; }
  fi
  t1=$(now_ns)
  secs[pgcopydb_$1]+="$(elapsed "$t0" "$t1") "
  same_tables bench "$db" "${TABLES[@]}"
  dq postgres "DROP DATABASE $db"
}

for mode in schema empty; do
  for run in $(seq "$RUNS"); do
    echo "copying into a target with $([ $mode = schema ] && echo "the schema in place" || echo "no tables"), round $run of $RUNS…" >&2
    native "$mode" "$run"
    lsnpipe "$mode" "$run"
    ((have_pgcopydb)) && pgcopydb_run "$mode" "$run"
  done
done
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

machine
echo "source: pgbench scale $SCALE, $rows rows, database $size; jobs: $JOBS; fsync on; median of $RUNS alternating runs"
for mode in schema empty; do
  echo "target $mode:"
  native_median=$(median "${secs[native_$mode]}")
  for tool in native lsnpipe pgcopydb; do
    runs=${secs[${tool}_$mode]:-}
    [ -z "$runs" ] && continue
    awk -v name="$tool" -v s="$(median "$runs")" -v r="$rows" -v n="$native_median" -v runs="${runs% }" \
      'BEGIN{printf "  %-9s %8.2f s %10.0f rows/s   %.2fx native   runs: %s s\n", name, s, r/s, n/s, runs}'
  done
done
echo "every target equals the source: ${TABLES[*]}"
