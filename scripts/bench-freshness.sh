#!/usr/bin/env bash
# Freshness under a steady load: how long from a commit on the source until it is visible on the
# target, for lsnpipe and for PostgreSQL's own CREATE SUBSCRIPTION, in the same run.
#
#   scripts/bench-freshness.sh [SECONDS] [RATE…]     defaults: 20 s at 2000 and 8000 tx/s
#
# For each rate and each replicator in turn: a pgbench TPC-B-like load at that rate plus a probe
# stream (50 probe rows/s, each stamped with clock_timestamp() at its source commit). Both
# clusters share this machine's clock. Latency of a probe:
#   lsnpipe: its commit time on the target (track_commit_timestamp) − its source time;
#   native:  the time the apply worker wrote it (a target-only column defaulting to
#            clock_timestamp()) − its source time. The native worker stamps its commits with the
#            source's commit time, so its commit timestamps cannot be used; the write time is a
#            lower bound of its visibility (the row shows at the commit just after).
# The load runs with synchronous_commit = off on the source so that the requested rates can be
# reached on this machine's disk. Prints p50/p99/max per replicator and rate.
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

DURATION=${1:-20}
shift || true
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(2000 8000)
SCALE=${SCALE:-10}
TABLES=(pgbench_accounts pgbench_branches pgbench_tellers pgbench_history "(SELECT id, phase, src_ts FROM probe)")

build_lsnpipe
trap cleanup_bench EXIT
start_clusters
setup_pgbench_pair "CREATE TABLE probe (id bigserial PRIMARY KEY, phase int NOT NULL, src_ts timestamptz NOT NULL)" probe
for db in native lsnpipe; do
  dq "$db" "ALTER TABLE probe ADD COLUMN applied_at timestamptz DEFAULT clock_timestamp()"
done
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
    load=$(PGOPTIONS='-c synchronous_commit=off' pgbench -n -R "$rate" -T "$DURATION" -c 8 -j 2 "$(src bench)" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    wait "$probe_pid"
    catch_up "$who"
    stop_replicator "$who"
    stats=$(dq "$who" "SELECT format('%s  p50 %s ms  p99 %s ms  max %s ms  (%s probes)',
                  rpad('$who', 8),
                  round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 1),
                  round((percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::numeric, 1),
                  round(max(ms)::numeric, 1), count(*))
             FROM (SELECT extract(epoch FROM
                     CASE WHEN '$who' = 'native' THEN applied_at
                          ELSE pg_xact_commit_timestamp(xmin) END - src_ts) * 1000 AS ms
                   FROM probe WHERE phase = $phase) p")
    results+=("rate $rate tx/s (achieved $(printf '%.0f' "$load")): $stats")
  done
done
for who in native lsnpipe; do
  start_replicator "$who"; catch_up "$who"; stop_replicator "$who"
  same_tables bench "$who" "${TABLES[@]}"
done

machine
echo "load: pgbench TPC-B-like, scale $SCALE, 8 clients, ${DURATION}s per phase"
echo "latency: lsnpipe = target commit − source commit; native = target write − source commit (a lower bound)"
printf '%s\n' "${results[@]}"
echo "both targets equal the source: pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history, probe"
