#!/usr/bin/env bash
# Smoke test of lsnpipe's metrics through a real Prometheus.
#
#   scripts/prometheus-smoke.sh HOST:PORT
#
# Starts a throwaway Prometheus (binary from PATH, or $PROMETHEUS) on a free loopback port with
# a temporary config and data directory, scraping the lsnpipe metrics address HOST:PORT every
# second; waits for a successful scrape; queries lsnpipe_lag_bytes through Prometheus' HTTP API
# and prints its value; then stops Prometheus and removes its files. Exits non-zero if any step
# fails. Needs: prometheus (Debian package `prometheus`), curl.
set -euo pipefail

target=${1:?usage: $0 HOST:PORT (an lsnpipe --metrics-listen address)}
prometheus=${PROMETHEUS:-prometheus}
timeout_s=${SMOKE_TIMEOUT:-30}

die() { echo "prometheus-smoke: $*" >&2; exit 1; }
command -v "$prometheus" >/dev/null || die "'$prometheus' not found: install Prometheus (Debian/Ubuntu: apt-get install prometheus) or set PROMETHEUS"
command -v curl >/dev/null || die "curl not found: install it (apt-get install curl)"

work=$(mktemp -d "${TMPDIR:-/tmp}/lsnpipe-prom.XXXXXX")
prom_pid=
cleanup() {
  if [ -n "$prom_pid" ]; then
    kill "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: lsnpipe
    static_configs:
      - targets: ['$target']
YAML

# query EXPR: the first sample's value of an instant query, or nothing.
query() {
  curl -fsS --max-time 5 "$api/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
    sed -n 's/.*"value":\[[^,]*,"\([^"]*\)"\].*/\1/p'
}

deadline=$((SECONDS + timeout_s))
# A loopback port below the kernel's ephemeral range (a client socket of another process may
# hold any port in it), nobody answering on it; tried again on another port should Prometheus
# lose the race for it.
api=
for _ in $(seq 1 5); do
  port=
  for _ in $(seq 1 50); do
    candidate=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
      port=$candidate
      break
    fi
  done
  [ -n "$port" ] || die "no free loopback port found"
  rm -rf "$work/data"
  "$prometheus" \
    --config.file="$work/prometheus.yml" \
    --storage.tsdb.path="$work/data" \
    --web.listen-address="127.0.0.1:$port" \
    --log.level=warn \
    >"$work/prometheus.log" 2>&1 &
  prom_pid=$!
  until curl -fsS --max-time 2 "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; do
    if ! kill -0 "$prom_pid" 2>/dev/null; then
      wait "$prom_pid" 2>/dev/null || true
      prom_pid=
      grep -q "address already in use" "$work/prometheus.log" && continue 2
      cat "$work/prometheus.log" >&2
      die "Prometheus exited"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "Prometheus not ready after ${timeout_s}s"
    sleep 0.2
  done
  api="http://127.0.0.1:$port"
  break
done
[ -n "$api" ] || { cat "$work/prometheus.log" >&2; die "no port Prometheus could listen on"; }

until [ "$(query 'up{job="lsnpipe"}')" = 1 ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    curl -fsS "$api/api/v1/targets" >&2 || true
    echo >&2
    die "no successful scrape of $target after ${timeout_s}s (target status above)"
  fi
  sleep 0.2
done

lag=$(query 'lsnpipe_lag_bytes{job="lsnpipe"}')
[ -n "$lag" ] || die "Prometheus scraped $target but has no lsnpipe_lag_bytes"
echo "lsnpipe_lag_bytes $lag"
