#!/usr/bin/env bash
# Freshness under a steady load: how long from a commit on the source until it is visible on the
# target, for PostgreSQL's own CREATE SUBSCRIPTION and for lsnpipe, in the same run.
#
#   scripts/bench-freshness.sh [SECONDS] [RATE…]     defaults: 30 s at 1000 and 4000 tx/s
#
# For each rate, ROUNDS (default 3) rounds of native and lsnpipe in turn, on the same data (the
# order alternates between rounds, so neither always runs on the warmer cluster): a pgbench
# TPC-B-like load at that rate (`pgbench -c 4 -j 2 -R RATE`, scale 10) runs on the source, and one
# client, examples/freshness_probe.rs, inserts a probe row on the source in autocommit every
# 100 ms and then polls the target every 1 ms until it sees the row. The figure is the wall time
# from issuing the insert to seeing the row: one program and one clock time both replicators.
# Prints every round, then p50/p99/max per replicator and rate over the probes of all its
# rounds, and the lsnpipe/native ratios of those (below 1: lsnpipe is fresher). One round swings
# with what the disk's fsync and the scheduler do in those seconds; quote the pooled figures.
# Both clusters run with fsync on. The load's sessions get LOAD_OPTIONS as PGOPTIONS, by default
# '-c synchronous_commit=off': four clients waiting for an fsync each cannot reach 1,000 tx/s on
# a small machine's disk (LOAD_OPTIONS= for synchronous commits; the achieved rate is printed).
# The probe always commits synchronously. TOOLS="lsnpipe" runs one replicator only.
# LSNPIPE_B_BIN=PATH adds a second lsnpipe build, lsnpipe_b, to every round (it resumes lsnpipe's
# slot and target database): two builds compared on the same load, in one run. LSNPIPE_B_ARGS
# adds `run` flags to lsnpipe_b only (the same build with another setting, e.g.
# LSNPIPE_B_BIN=target/release/lsnpipe LSNPIPE_B_ARGS="--max-batch-transactions 8").
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

DURATION=${1:-30}
ROUNDS=${ROUNDS:-3}
shift || true
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(1000 4000)
SCALE=${SCALE:-10}
read -r -a WHO <<<"${TOOLS:-native lsnpipe${LSNPIPE_B_BIN:+ lsnpipe_b}}"
# The load starts this long before the probe, so both see a steady state.
WARMUP=2
LOAD_OPTIONS=${LOAD_OPTIONS-"-c synchronous_commit=off"}
TABLES=(pgbench_accounts pgbench_branches pgbench_tellers pgbench_history probe)

build_lsnpipe
echo "building the probe (release)…" >&2
cargo build --release --quiet --example freshness_probe --manifest-path "$root/Cargo.toml"
PROBE="$root/target/release/examples/freshness_probe"
trap cleanup_bench EXIT
start_clusters
setup_pgbench_pair "CREATE TABLE probe (id bigint PRIMARY KEY, phase int NOT NULL)" probe

# The target database a replicator writes.
db_of() { case $1 in native) echo native ;; *) echo lsnpipe ;; esac; }
start_replicator() {
  local bin=$LSNPIPE
  case $1 in
    native) dq native "ALTER SUBSCRIPTION native_sub ENABLE" ;;
    lsnpipe | lsnpipe_b)
      local extra=()
      if [ "$1" = lsnpipe_b ]; then
        bin=$LSNPIPE_B_BIN
        read -r -a extra <<<"${LSNPIPE_B_ARGS:-}"
      fi
      "$bin" run --source "$(src bench)" --target "$(dst lsnpipe)" --publication bench_pub \
        --slot lsnpipe_bench --metrics-listen off "${extra[@]}" 2>>"$BENCH_DIR/lsnpipe.log" &
      lsnpipe_pid=$! ;;
  esac
}
stop_replicator() {
  case $1 in
    native) dq native "ALTER SUBSCRIPTION native_sub DISABLE" ;;
    lsnpipe | lsnpipe_b)
      kill -TERM "$lsnpipe_pid"; wait "$lsnpipe_pid"; lsnpipe_pid=
      # RUST_LOG=info,lsnpipe::latency=debug LSNPIPE_LOG_KEEP=FILE: keep the log to study.
      [ -z "${LSNPIPE_LOG_KEEP:-}" ] || cp "$BENCH_DIR/lsnpipe.log" "$LSNPIPE_LOG_KEEP" ;;
  esac
}
# A probe row of phase 0 marks "caught up with everything written so far".
catch_up() {
  local id
  id=$(sq bench "INSERT INTO probe (id, phase) SELECT coalesce(max(id), 0) + 1, 0 FROM probe RETURNING id")
  wait_target "$(db_of "$1")" "SELECT EXISTS (SELECT 1 FROM probe WHERE id = $id)"
}

# Every probe's latency, one file per replicator and rate, pooled over the rounds.
latencies() { echo "$BENCH_DIR/latencies-$1-$2"; }
# p50, p99 and max of a file of latencies (ms), nearest rank.
percentiles() {
  grep -E '^[0-9.]+$' "$1" | sort -g | awk '{a[NR]=$1} END{
    r50=int(NR*0.50+0.999); r99=int(NR*0.99+0.999); if(r50<1)r50=1; if(r99<1)r99=1;
    printf "%d %.1f %.1f %.1f\n", NR, a[r50], a[r99], a[NR]}'
}

results=()
phase=0
for rate in "${RATES[@]}"; do
  for round in $(seq "$ROUNDS"); do
    order=("${WHO[@]}")
    if ((round % 2 == 0)); then
      order=(); for ((i = ${#WHO[@]} - 1; i >= 0; i--)); do order+=("${WHO[$i]}"); done
    fi
    for who in "${order[@]}"; do
      phase=$((phase + 1))
      start_replicator "$who"
      catch_up "$who"
      PGOPTIONS="$LOAD_OPTIONS" pgbench -n -R "$rate" -T $((DURATION + WARMUP + 1)) -c 4 -j 2 "$(src bench)" \
        >"$BENCH_DIR/load-$phase.log" 2>&1 &
      load_pid=$!
      sleep "$WARMUP"
      stats=$(PROBE_ALL=1 "$PROBE" "$(src bench)" "$(dst "$(db_of "$who")")" probe "$DURATION" "$phase" \
        2>>"$(latencies "$who" "$rate")")
      wait "$load_pid"
      load=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$BENCH_DIR/load-$phase.log")
      catch_up "$who"
      stop_replicator "$who"
      read -r _ n _ p50 _ p99 _ max <<<"$stats"
      results+=("$(printf 'rate %5s tx/s round %s (achieved %5.0f)  %-8s p50 %6s ms  p99 %6s ms  max %6s ms  (%s probes)' \
        "$rate" "$round" "$load" "$who" "$p50" "$p99" "$max" "$n")")
    done
  done
done
for who in "${WHO[@]}"; do
  start_replicator "$who"; catch_up "$who"; stop_replicator "$who"
  same_tables bench "$(db_of "$who")" "${TABLES[@]}"
done

machine
echo "load: pgbench TPC-B-like, scale $SCALE, 4 clients, 2 threads, ${DURATION}s of probes per round, $ROUNDS rounds${LOAD_OPTIONS:+, PGOPTIONS=$LOAD_OPTIONS}"
echo "latency: from issuing the probe's INSERT on the source to the target showing it (examples/freshness_probe.rs, 1 ms polls)"
printf '%s\n' "${results[@]}"
declare -A figures
for rate in "${RATES[@]}"; do
  for who in "${WHO[@]}"; do
    read -r n p50 p99 max <<<"$(percentiles "$(latencies "$who" "$rate")")"
    figures[$who-$rate]="$p50 $p99 $max"
    printf 'rate %5s tx/s, all rounds  %-8s p50 %6s ms  p99 %6s ms  max %6s ms  (%s probes)\n' \
      "$rate" "$who" "$p50" "$p99" "$max" "$n"
  done
done
# A tool's figures over another's, per rate, when both ran (below 1: the first is fresher).
ratio() { # tool base
  local rate b50 b99 bmax t50 t99 tmax
  [ -n "${figures[$1-${RATES[0]}]:-}" ] && [ -n "${figures[$2-${RATES[0]}]:-}" ] || return 0
  for rate in "${RATES[@]}"; do
    read -r b50 b99 bmax <<<"${figures[$2-$rate]}"
    read -r t50 t99 tmax <<<"${figures[$1-$rate]}"
    awk -v t="$1" -v b="$2" -v r="$rate" -v a="$t50" -v c="$b50" -v d="$t99" -v e="$b99" -v f="$tmax" -v g="$bmax" \
      'BEGIN{printf "ratio %s/%s at %s tx/s, all rounds: p50 %.2f  p99 %.2f  max %.2f\n", t, b, r, a/c, d/e, f/g}'
  done
}
ratio lsnpipe native
ratio lsnpipe_b native
ratio lsnpipe_b lsnpipe
echo "targets equal the source: ${TABLES[*]}"
