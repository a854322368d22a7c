#!/usr/bin/env bash
# The docker-compose topology without Docker, from local packages: a primary and a replica
# (scripts/pg-test-cluster.sh), lsnpipe between them, Prometheus with the alert rules scraping it,
# and a pgbench write load. Prints the URLs and connection strings; Ctrl-C tears everything down.
#
#   scripts/demo.sh                    until Ctrl-C
#   DEMO_DURATION=60 scripts/demo.sh   for 60 seconds
#
# Needs: PostgreSQL server and client packages (Debian: postgresql postgresql-contrib), Prometheus
# (Debian: prometheus; optional, skipped with a note if missing), curl. lsnpipe: $LSNPIPE_BIN, else
# target/release/lsnpipe, else built with `cargo build --release`.
# Grafana has no Debian package in the main archive: import monitoring/grafana/lsnpipe-dashboard.json
# into a Grafana of your own, with the Prometheus URL printed below as its data source.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

die() { echo "demo.sh: $*" >&2; exit 1; }
for tool in psql pg_dump pgbench curl; do
  command -v "$tool" >/dev/null || die "$tool not found: apt-get install postgresql postgresql-contrib curl"
done

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/lsnpipe-demo.XXXXXX")
chmod 755 "$work"
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "demo.sh: tearing down"
  # Reverse order: the load first, lsnpipe (SIGTERM: it finishes the current transaction), then
  # Prometheus, then the clusters.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  [ -d "$work/pg" ] && scripts/pg-test-cluster.sh stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lsnpipe=${LSNPIPE_BIN:-}
if [ -z "$lsnpipe" ]; then
  if [ ! -x target/release/lsnpipe ]; then
    echo "demo.sh: building lsnpipe (cargo build --release) …"
    cargo build --release --bin lsnpipe
  fi
  lsnpipe=$repo/target/release/lsnpipe
fi

echo "demo.sh: starting the primary and the replica …"
PG_EXTRA_CONF="max_slot_wal_keep_size = 4GB" scripts/pg-test-cluster.sh start "$work/pg" >"$work/pg-env"
eval "$(cat "$work/pg-env")"
export PRIMARY=$LSNPIPE_SOURCE REPLICA=$LSNPIPE_TARGET
SLOT=lsnpipe PUBLICATION=lsnpipe_pub SCALE=${SCALE:-10} deploy/init-demo.sh

metrics_port=$(free_port)
"$lsnpipe" run --source "$PRIMARY" --target "$REPLICA" --publication lsnpipe_pub --slot lsnpipe \
  --metrics-listen "127.0.0.1:$metrics_port" >"$work/lsnpipe.log" 2>&1 &
pids+=($!)

prometheus_url="(not started: apt-get install prometheus)"
if command -v prometheus >/dev/null; then
  prom_port=$(free_port)
  cp monitoring/alerts.yml "$work/alerts.yml"
  sed "s/127.0.0.1:9930/127.0.0.1:$metrics_port/" monitoring/prometheus-localhost.yml \
    >"$work/prometheus.yml"
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
  pids+=($!)
  prometheus_url="http://127.0.0.1:$prom_port (alerts: /alerts)"
fi

pgbench --client 2 --rate "${RATE:-100}" --time 86400 "$PRIMARY" >"$work/pgbench.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$metrics_port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
cat <<TEXT

  primary     psql "$PRIMARY"
  replica     psql "$REPLICA"
  metrics     http://127.0.0.1:$metrics_port/metrics
  prometheus  $prometheus_url
  grafana     import monitoring/grafana/lsnpipe-dashboard.json, data source: the Prometheus above
  logs        $work/lsnpipe.log, $work/pgbench.log
  status      $lsnpipe status --source "$PRIMARY" --target "$REPLICA" --slot lsnpipe

TEXT
echo "Ctrl-C tears everything down."

deadline=$((SECONDS + ${DEMO_DURATION:-31536000}))
while [ "$SECONDS" -lt "$deadline" ]; do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$work/lsnpipe.log" >&2; die "a demo process stopped (pid $pid)"; }
  done
  rows=$(curl -fsS "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null \
    | awk '/^lsnpipe_rows_applied_total/ {s += $2} END {printf "%d", s}')
  lag=$(curl -fsS "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null \
    | awk '/^lsnpipe_lag_bytes / {printf "%d", $2}')
  printf '\rrows applied %s, lag %s bytes   ' "${rows:-0}" "${lag:-?}"
  sleep 2
done
echo
"$lsnpipe" status --source "$PRIMARY" --target "$REPLICA" --slot lsnpipe || true
