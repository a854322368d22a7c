#!/usr/bin/env bash
# Runs the docker-compose demo for real, under podman, and tears it down: the real
# docker-compose.yml (plus scripts/compose-test/override.yml, which only names the locally built
# lsnpipe image), driven by docker-compose 1.29 through podman's Docker-compatible socket.
#
#   scripts/compose-test.sh             (as root; .ci/run runs it)
#   LSNPIPE_BIN=target/release/lsnpipe scripts/compose-test.sh
#
# Checks: the stack comes up in the compose file's dependency order (health checks, the one-shot
# init), the pgbench rows and the running load reach the replica, lsnpipe runs without a restart,
# its /metrics answers on the published port, Prometheus (the stack's, on its published port) has
# scraped lsnpipe_lag_bytes and loaded the alert rules, and once the load stops the replica equals
# the primary in every pgbench table (row count and a hash of every row) and the byte lag on
# /metrics falls to 0. Then `docker-compose down -v`, a check that it left no container, network or
# volume of the test behind, and the podman service this script started is stopped.
#
# Stand-ins, because no container registry is reachable on our machines (an image already present
# under a name is used as it is: pull the official ones first, where you can, to test those):
# - debian:bookworm-slim: a minbase Debian made by mmdebstrap from this host's apt sources.
# - postgres:15 and prom/prometheus: Debian's packages (scripts/compose-test/*/Dockerfile).
# - lsnpipe: the final stage of the real Dockerfile, with the binary built on this host instead of
#   in the rust:1-bookworm stage ($LSNPIPE_BIN, else `cargo build --bin lsnpipe`: a debug build;
#   CI passes the one `cargo test` has just built; the demo's load needs no release build).
# - Grafana is left out (it has no Debian package): the other services do not depend on it.
# - podman runs no health checks without systemd: a loop here runs `podman healthcheck run`.
# The images stay in podman's storage as the cache for the next run (mmdebstrap and the apt
# installs take a few minutes on the first one); removing them only makes the next run slower.
#
# Needs: root, podman, docker-compose, mmdebstrap (Debian: apt-get install podman docker-compose
# mmdebstrap), curl, and ports 5432, 5433, 9090 and 9930 free on this host (the compose file
# publishes them).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

project=lsnpipecomposetest
lsnpipe_image=localhost/lsnpipe-compose-test:latest
stand_in_label=org.lsnpipe.compose-test.stand-in
# pgbench scale of deploy/init-demo.sh.
scale=10

say() { echo "compose-test: $*"; }
die() { echo "compose-test: $*" >&2; exit 1; }
started=$SECONDS

[ "$(id -u)" = 0 ] || die "run as root (rootful podman, as CI does)"
for tool in podman docker-compose mmdebstrap curl; do
  command -v "$tool" >/dev/null || die "$tool not found: apt-get install podman docker-compose mmdebstrap curl"
done
for port in 5432 5433 9090 9930; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is in use on this host, and docker-compose.yml publishes it: stop what listens there"
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/lsnpipe-compose-test.XXXXXX")
# Containers fail to start with "error setting rlimits" unless the open-files and process limits
# are capped below the host's; no systemd here, so cgroupfs and file events.
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$work/containers.conf
export DOCKER_HOST=unix://$work/podman.sock
compose=(docker-compose -p "$project" -f docker-compose.yml -f scripts/compose-test/override.yml)
project_containers() { podman ps -a -q --filter "label=com.docker.compose.project=$project"; }
container() { echo "${project}_$1_1"; }

volumes_before=$(podman volume ls -q | sort)
service_pid=
ticker_pid=
failed_teardown=
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ "$status" != 0 ] && [ -S "$work/podman.sock" ]; then
    say "failed; the last lines of each container's log:"
    for c in $(project_containers); do
      echo "---- $(podman inspect --format '{{.Name}} ({{.State.Status}}, restarts {{.RestartCount}})' "$c")"
      podman logs --tail 30 "$c" 2>&1 || true
    done
    echo "---- podman system service"
    tail -n 20 "$work/service.log"
  fi
  [ -n "$ticker_pid" ] && { kill "$ticker_pid" 2>/dev/null; wait "$ticker_pid" 2>/dev/null || true; }
  say "tearing down"
  if [ -S "$work/podman.sock" ]; then
    "${compose[@]}" down -v --remove-orphans --timeout 10 >"$work/down.log" 2>&1 || cat "$work/down.log" >&2
  fi
  # What `down -v` should have removed: removed here if it did not, and then the test fails.
  local left
  left=$(project_containers)
  if [ -n "$left" ]; then
    failed_teardown+=" containers"
    podman rm -f -v $left >/dev/null 2>&1 || true
  fi
  left=$(podman network ls -q --filter "label=com.docker.compose.project=$project")
  if [ -n "$left" ]; then
    failed_teardown+=" networks"
    podman network rm -f $left >/dev/null 2>&1 || true
  fi
  left=$(comm -13 <(echo "$volumes_before") <(podman volume ls -q | sort))
  if [ -n "$left" ]; then
    failed_teardown+=" volumes"
    podman volume rm -f $left >/dev/null 2>&1 || true
  fi
  if [ -n "$service_pid" ]; then
    kill "$service_pid" 2>/dev/null || true
    wait "$service_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  if [ -n "$failed_teardown" ]; then
    echo "compose-test: docker-compose down left these behind (removed now):$failed_teardown" >&2
    [ "$status" = 0 ] && status=1
  fi
  [ "$status" = 0 ] && say "passed in $((SECONDS - started)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# until_ok polls a condition (a shell command) every second, for at most $1 seconds.
until_ok() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || die "$what: not within $limit s"
    sleep 1
  done
}

# A session of its own: Ctrl-C must not stop the service before `docker-compose down` has used it.
setsid podman system service --time=0 "$DOCKER_HOST" >"$work/service.log" 2>&1 &
service_pid=$!
until_ok 30 "podman's socket" curl -fs --unix-socket "$work/podman.sock" -o /dev/null http://d/_ping

# ---- images -----------------------------------------------------------------------------------
step=$SECONDS
if ! podman image exists docker.io/library/debian:bookworm-slim; then
  say "making debian:bookworm-slim with mmdebstrap from this host's apt sources (first run only)"
  sources=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && grep -qE '^[[:space:]]*(deb[[:space:]]|URIs:)' "$f" && sources+=("$f")
  done
  ((${#sources[@]})) || die "no apt sources in /etc/apt/sources.list*"
  mmdebstrap --variant=minbase --quiet \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$work/rootfs.tar" "${sources[@]}" >"$work/mmdebstrap.log" 2>&1 \
    || { cat "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
  podman import --quiet --change 'CMD ["bash"]' "$work/rootfs.tar" \
    docker.io/library/debian:bookworm-slim >/dev/null
  rm -f "$work/rootfs.tar"
fi

# build NAME DIR [ARG…]: podman build, from its layer cache when nothing changed; the image the
# name had before is removed when it was replaced, so that reruns do not pile images up.
build() {
  local name=$1 dir=$2 old new
  shift 2
  old=$(podman image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
  podman build --quiet "$@" -t "$name" "$dir" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; die "building $name failed"; }
  new=$(podman image inspect --format '{{.Id}}' "$name")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
}
# A stand-in is built unless a real image has the name.
stand_in() {
  local name=$1 dir=$2
  if podman image exists "$name" \
    && [ -z "$(podman image inspect --format "{{index .Labels \"$stand_in_label\"}}" "$name")" ]; then
    say "$name: using the image present"
    return
  fi
  build "$name" "$dir" --label "$stand_in_label=yes"
}
stand_in docker.io/library/postgres:15 scripts/compose-test/postgres
stand_in docker.io/prom/prometheus:latest scripts/compose-test/prometheus

# lsnpipe: the real Dockerfile from its last FROM on, the binary copied from the build context.
bin=${LSNPIPE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --quiet --bin lsnpipe
  bin=$repo/target/debug/lsnpipe
fi
[ -x "$bin" ] || die "no lsnpipe binary at $bin"
mkdir "$work/lsnpipe"
awk -v last="$(grep -n '^FROM ' Dockerfile | tail -n 1 | cut -d: -f1)" 'NR >= last' Dockerfile \
  | sed 's|^COPY --from=build /src/target/release/lsnpipe |COPY lsnpipe |' >"$work/lsnpipe/Dockerfile"
grep -q '^COPY lsnpipe ' "$work/lsnpipe/Dockerfile" && ! grep -q -- '--from=' "$work/lsnpipe/Dockerfile" \
  || die "Dockerfile's last stage no longer copies /src/target/release/lsnpipe from the build stage: update this script"
# Debug information is most of a debug build's size and nothing the container needs.
if command -v strip >/dev/null; then strip --strip-debug -o "$work/lsnpipe/lsnpipe" "$bin"; else cp "$bin" "$work/lsnpipe/lsnpipe"; fi
build "$lsnpipe_image" "$work/lsnpipe"
say "images ready in $((SECONDS - step)) s"

# ---- up ---------------------------------------------------------------------------------------
# The engine's part of `healthcheck:` (docker-compose waits for service_healthy).
health_ticker() {
  while :; do
    for c in $(podman ps -q --filter "label=com.docker.compose.project=$project"); do
      podman healthcheck run "$c" >/dev/null 2>&1 || true
    done
    sleep 2
  done
}
health_ticker &
ticker_pid=$!

step=$SECONDS
say "docker-compose up (without grafana)"
# --foreground: Ctrl-C reaches docker-compose, not only this script.
timeout --foreground 300 "${compose[@]}" up -d --no-build primary replica init lsnpipe pgbench prometheus
say "up in $((SECONDS - step)) s"

psql_in() { podman exec "$(container "$1")" psql -U postgres -d app -v ON_ERROR_STOP=1 -qAtc "$2"; }
replica_count() { psql_in replica "SELECT count(*) FROM $1" 2>/dev/null || echo 0; }

step=$SECONDS
rows_copied() { [ "$(replica_count pgbench_accounts)" = $((scale * 100000)) ]; }
until_ok 180 "the $((scale * 100000)) pgbench_accounts rows on the replica" rows_copied
history_before=$(replica_count pgbench_history)
load_flows() { (($(replica_count pgbench_history) > history_before)); }
until_ok 60 "pgbench's transactions reaching the replica" load_flows
say "rows flow to the replica ($((SECONDS - step)) s)"

# Responses are read whole before grep: `grep -q` stopping early failed curl's write (pipefail).
metrics() { curl -fsS http://127.0.0.1:9930/metrics; }
grep -q '^lsnpipe_lag_bytes' <<<"$(metrics)" \
  || die "lsnpipe's /metrics on the published port 9930 has no lsnpipe_lag_bytes"
prom() { curl -fsS --get --data-urlencode "query=$1" http://127.0.0.1:9090/api/v1/query; }
lag_scraped() { grep -q '"__name__":"lsnpipe_lag_bytes"' <<<"$(prom lsnpipe_lag_bytes 2>/dev/null)"; }
until_ok 90 "lsnpipe_lag_bytes in Prometheus" lag_scraped
grep -q '"name":"LsnpipeDown"' <<<"$(curl -fsS http://127.0.0.1:9090/api/v1/rules)" \
  || die "Prometheus has not loaded monitoring/alerts.yml"
say "Prometheus: $(prom lsnpipe_lag_bytes | grep -o '"value":\[[^]]*\]')"

"${compose[@]}" stop --timeout 10 pgbench >/dev/null 2>&1 || die "docker-compose stop pgbench failed"
step=$SECONDS
tables="pgbench_accounts pgbench_branches pgbench_tellers pgbench_history"
digest_sql=
for t in $tables; do
  [ -n "$digest_sql" ] && digest_sql+=" UNION ALL "
  digest_sql+="SELECT '$t ' || count(*) || ' ' || coalesce(sum(hashtext(t::text)::numeric), 0) FROM $t t"
done
digest_sql="SELECT * FROM ($digest_sql) d ORDER BY 1"
digest() { psql_in "$1" "$digest_sql"; }
same() { [ "$(digest primary)" = "$(digest replica)" ]; }
until_ok 120 "the replica equal to the primary after the load stopped" same
say "replica equals primary: $(digest replica | tr '\n' ';')($((SECONDS - step)) s)"

restarts=$(podman inspect --format '{{.State.Status}} {{.RestartCount}}' "$(container lsnpipe)")
[ "$restarts" = "running 0" ] || die "lsnpipe container: $restarts (expected running, 0 restarts)"
# Idle, every position taken is applied: the byte lag lsnpipe reports falls to 0.
lag_zero() { grep -qx 'lsnpipe_lag_bytes 0' <<<"$(metrics)"; }
until_ok 60 "lsnpipe_lag_bytes 0 on /metrics once the replica caught up" lag_zero
