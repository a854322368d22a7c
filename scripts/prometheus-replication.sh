#!/usr/bin/env bash
# A real Prometheus scraping lsnpipe during a live replication, end to end on this machine:
# a throwaway source/target pair, a pgbench load, lsnpipe streaming with its metrics server,
# then scripts/prometheus-smoke.sh asks Prometheus for lsnpipe_lag_bytes through PromQL.
#
#   scripts/prometheus-replication.sh
#
# Needs: PostgreSQL server binaries, pgbench, prometheus and curl (Debian: postgresql,
# postgresql-contrib, prometheus, curl).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

cargo build --quiet --manifest-path "$root/Cargo.toml"
dir=$(mktemp -d /tmp/lsnpipe-promrepl-XXXXXX)
rmdir "$dir"
lsnpipe_pid=
load_pid=
cleanup() {
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null
  [ -n "$lsnpipe_pid" ] && kill "$lsnpipe_pid" 2>/dev/null && wait "$lsnpipe_pid" 2>/dev/null
  "$root/scripts/pg-test-cluster.sh" stop "$dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT

eval "$("$root/scripts/pg-test-cluster.sh" start "$dir")"
for conn in "$LSNPIPE_SOURCE" "$LSNPIPE_TARGET"; do pgbench -i -q -s 1 "$conn" >/dev/null 2>&1; done
psql "$LSNPIPE_SOURCE" -Xq -c "CREATE PUBLICATION pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history"
psql "$LSNPIPE_SOURCE" -Xq -c "SELECT pg_create_logical_replication_slot('prom_demo', 'pgoutput')" >/dev/null

port=$((20000 + RANDOM % 20000))
"$root/target/debug/lsnpipe" run --source "$LSNPIPE_SOURCE" --target "$LSNPIPE_TARGET" \
  --publication pub --slot prom_demo --metrics-listen "127.0.0.1:$port" 2>"$dir.lsnpipe.log" &
lsnpipe_pid=$!
pgbench -n -R 200 -T 60 "$LSNPIPE_SOURCE" >/dev/null 2>&1 &
load_pid=$!
until curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
  kill -0 "$lsnpipe_pid" 2>/dev/null || { cat "$dir.lsnpipe.log" >&2; exit 1; }
  sleep 0.2
done
"$root/scripts/prometheus-smoke.sh" "127.0.0.1:$port"
