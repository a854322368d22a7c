#!/usr/bin/env bash
# Freshness under a steady load: how long from a commit on the source until it is visible on the
# target, for lsnpipe and for PostgreSQL's own CREATE SUBSCRIPTION, in the same run.
#
#   scripts/bench-freshness.sh [SECONDS] [RATE…]     defaults: 20 s at 2000 and 8000 tx/s
#
# For each rate and each replicator in turn: a pgbench TPC-B-like load at that rate plus a probe
# stream (50 probe rows/s, each stamped with clock_timestamp() at its source commit). Latency of a
# probe = its commit time on the target (track_commit_timestamp) − its source time; both clusters
# share this machine's clock. Prints p50/p99/max per replicator and rate.
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

DURATION=${1:-20}
shift || true
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(2000 8000)
SCALE=${SCALE:-10}
TABLES=(pgbench_accounts pgbench_branches pgbench_tellers pgbench_history probe)

echo "building lsnpipe (release)…" >&2
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
LSNPIPE="$root/target/release/lsnpipe"

lsnpipe_pid=
cleanup() {
  [ -n "$lsnpipe_pid" ] && kill "$lsnpipe_pid" 2>/dev/null && wait "$lsnpipe_pid" 2>/dev/null
  stop_clusters
}
trap cleanup EXIT
start_clusters

sq postgres "CREATE DATABASE bench"
pgbench -i -q -s "$SCALE" "$(src bench)" >/dev/null 2>&1
sq bench "CREATE TABLE probe (id bigserial PRIMARY KEY, phase int NOT NULL, src_ts timestamptz NOT NULL);
          CREATE PUBLICATION bench_pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history, probe;
" >/dev/null
# Each slot in a transaction of its own (a slot cannot be created after writes in one).
sq bench "SELECT pg_create_logical_replication_slot('native_bench', 'pgoutput')" >/dev/null
sq bench "SELECT pg_create_logical_replication_slot('lsnpipe_bench', 'pgoutput')" >/dev/null
for db in native lsnpipe; do
  dq postgres "CREATE DATABASE $db"
  pg_dump -s -t 'pgbench_*' -t probe "$(src bench)" | psql -Xq "$(dst $db)" >/dev/null
  pg_dump -a -t 'pgbench_*' "$(src bench)" | psql -Xq "$(dst $db)" >/dev/null
done
dq native "CREATE SUBSCRIPTION native_sub CONNECTION '$(src bench)' PUBLICATION bench_pub
           WITH (create_slot = false, slot_name = 'native_bench', copy_data = false, enabled = false)" 2>/dev/null
echo "INSERT INTO probe (phase, src_ts) VALUES (:phase, clock_timestamp());" >"$BENCH_DIR/probe.sql"

start_replicator() {
  case $1 in
    native) dq native "ALTER SUBSCRIPTION native_sub ENABLE" ;;
    lsnpipe)
      "$LSNPIPE" run --source "$(src bench)" --target "$(dst lsnpipe)" --publication bench_pub \
        --slot lsnpipe_bench --metrics-listen off 2>>"$BENCH_DIR/lsnpipe.log" &
      lsnpipe_pid=$! ;;
  esac
}
stop_replicator() {
  case $1 in
    native) dq native "ALTER SUBSCRIPTION native_sub DISABLE" ;;
    lsnpipe) kill -TERM "$lsnpipe_pid"; wait "$lsnpipe_pid"; lsnpipe_pid= ;;
  esac
}
# A probe row of phase 0 marks "caught up with everything written so far".
catch_up() {
  local id
  id=$(sq bench "INSERT INTO probe (phase, src_ts) VALUES (0, clock_timestamp()) RETURNING id")
  wait_target "$1" "SELECT EXISTS (SELECT 1 FROM probe WHERE id = $id)"
}

results=()
phase=0
for rate in "${RATES[@]}"; do
  for who in native lsnpipe; do
    phase=$((phase + 1))
    start_replicator "$who"
    catch_up "$who"
    pgbench -n -R 50 -T "$DURATION" -c 1 -f "$BENCH_DIR/probe.sql" -D phase="$phase" "$(src bench)" >/dev/null 2>&1 &
    probe_pid=$!
    load=$(pgbench -n -R "$rate" -T "$DURATION" -c 8 -j 2 "$(src bench)" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    wait "$probe_pid"
    catch_up "$who"
    stop_replicator "$who"
    stats=$(dq "$who" "SELECT format('%s  p50 %6.1f ms  p99 %6.1f ms  max %7.1f ms  (%s probes)',
                  rpad('$who', 8),
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms), count(*))
             FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - src_ts) * 1000 AS ms
                   FROM probe WHERE phase = $phase) p")
    results+=("rate $rate tx/s (achieved $(printf '%.0f' "$load")): $stats")
  done
done
for who in native lsnpipe; do
  start_replicator "$who"; catch_up "$who"; stop_replicator "$who"
  same_tables bench "$who" "${TABLES[@]}"
done

machine
echo "load: pgbench TPC-B-like, scale $SCALE, 8 clients, ${DURATION}s per phase; latency = target commit − source commit"
printf '%s\n' "${results[@]}"
echo "both targets equal the source: ${TABLES[*]}"
