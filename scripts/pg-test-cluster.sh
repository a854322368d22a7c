#!/usr/bin/env bash
# A throwaway pair of local PostgreSQL clusters for trying lsnpipe by hand.
#
#   scripts/pg-test-cluster.sh start DIR   create DIR/source (wal_level=logical) and DIR/target, start both
#   scripts/pg-test-cluster.sh env DIR     print LSNPIPE_SOURCE / LSNPIPE_TARGET connection strings
#   scripts/pg-test-cluster.sh stop DIR    stop both and remove DIR
#
# Server binaries: $PG_BINDIR, else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin,
# else the build `lsnpipe pg-fetch` downloads (LSNPIPE_PG_DOWNLOAD=never|always as for lsnpipe).
# As root, the servers run as the `postgres` OS user (initdb refuses root).
# PG_EXTRA_CONF: extra postgresql.conf lines for both clusters (they win over the defaults), e.g.
#   PG_EXTRA_CONF=$'fsync = on\ntrack_commit_timestamp = on' scripts/pg-test-cluster.sh start DIR
set -euo pipefail

usage() { echo "usage: $0 start|stop|env DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# The build lsnpipe downloads and caches (README, "PostgreSQL server binaries"), through the
# lsnpipe on PATH or the one built in this repository.
downloaded_bindir() {
  local repo exe
  repo=$(cd "$(dirname "$0")/.." && pwd)
  for exe in "$(command -v lsnpipe || true)" "$repo/target/release/lsnpipe" "$repo/target/debug/lsnpipe"; do
    if [ -n "$exe" ] && [ -x "$exe" ]; then
      "$exe" pg-fetch --print-bindir
      return
    fi
  done
  echo "no lsnpipe binary to download PostgreSQL with: cargo build first" >&2
  return 1
}

find_bindir() {
  local d policy=${LSNPIPE_PG_DOWNLOAD:-auto}
  if [ "$policy" = always ]; then downloaded_bindir; return; fi
  for d in "${PG_BINDIR:-}" "$(pg_config --bindir 2>/dev/null || true)" \
           $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
      echo "$d"; return 0
    fi
  done
  if [ "$policy" != never ] && downloaded_bindir; then return 0; fi
  echo "PostgreSQL server binaries not found: apt-get install postgresql, or set PG_BINDIR" >&2
  return 1
}

as_server() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "running as root needs a 'postgres' OS user" >&2; exit 1; }
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "no free port found" >&2; return 1
}

conn() { echo "host=127.0.0.1 port=$(cat "$dir/$1/port") user=postgres dbname=postgres"; }

case "$cmd" in
  start)
    bindir=$(find_bindir)
    [ -e "$dir" ] && { echo "$dir already exists; stop it first or pick another DIR" >&2; exit 1; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    for name in source target; do
      as_server mkdir -p "$dir/$name"
      as_server "$bindir/initdb" -D "$dir/$name/data" -U postgres --auth=trust -E UTF8 --locale=C \
        --no-sync >"$dir/$name.initdb.log" 2>&1 || { cat "$dir/$name.initdb.log" >&2; exit 1; }
      port=$(free_port)
      as_server tee -a "$dir/$name/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/$name'
wal_level = logical
max_replication_slots = 100
max_wal_senders = 100
max_connections = 300
fsync = off
full_page_writes = off
${PG_EXTRA_CONF:-}
CONF
      echo "$port" >"$dir/$name/port"
      as_server "$bindir/pg_ctl" -D "$dir/$name/data" -l "$dir/$name/server.log" -w -t 60 start >/dev/null
    done
    echo "$bindir" >"$dir/bindir"
    "$0" env "$dir"
    ;;
  env)
    [ -f "$dir/source/port" ] || { echo "no clusters in $dir" >&2; exit 1; }
    echo "LSNPIPE_SOURCE='$(conn source)'"
    echo "LSNPIPE_TARGET='$(conn target)'"
    ;;
  stop)
    [ -f "$dir/bindir" ] || { echo "no clusters in $dir" >&2; exit 1; }
    bindir=$(cat "$dir/bindir")
    for name in source target; do
      [ -f "$dir/$name/data/postmaster.pid" ] && \
        as_server "$bindir/pg_ctl" -D "$dir/$name/data" -m fast -w stop >/dev/null
    done
    rm -rf "$dir"
    ;;
  *) usage ;;
esac
