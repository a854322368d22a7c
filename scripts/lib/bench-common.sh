# Shared pieces of the benchmark scripts: a pair of clusters with production-like durability,
# CPU accounting from /proc, and table comparison. Sourced, not run.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TICKS=$(getconf CLK_TCK)

machine() {
  echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/Mem:/{print $2}') GiB"
}

# Start a source/target pair in $BENCH_DIR with fsync on (as a real server would run).
start_clusters() {
  BENCH_DIR=$(mktemp -d /tmp/lsnpipe-bench-XXXXXX)
  rmdir "$BENCH_DIR"
  PG_EXTRA_CONF=$'fsync = on\nfull_page_writes = on\nshared_buffers = 512MB\nmax_wal_size = 8GB\ncheckpoint_timeout = 30min\ntrack_commit_timestamp = on\nwal_sender_timeout = 60s\n'"${BENCH_EXTRA_CONF:-}" \
    "$root/scripts/pg-test-cluster.sh" start "$BENCH_DIR" >/dev/null
  SRC_PORT=$(cat "$BENCH_DIR/source/port")
  DST_PORT=$(cat "$BENCH_DIR/target/port")
}

stop_clusters() {
  [ -n "${BENCH_DIR:-}" ] && "$root/scripts/pg-test-cluster.sh" stop "$BENCH_DIR" >/dev/null 2>&1 || true
}

src() { echo "host=127.0.0.1 port=$SRC_PORT user=postgres dbname=$1"; }
dst() { echo "host=127.0.0.1 port=$DST_PORT user=postgres dbname=$1"; }
sq() { psql "$(src "$1")" -XAtq -v ON_ERROR_STOP=1 -c "$2"; }
dq() { psql "$(dst "$1")" -XAtq -v ON_ERROR_STOP=1 -c "$2"; }

# CPU ticks (user+system) of every process of one cluster (source or target), including children
# that have already exited (the postmaster's cutime/cstime).
cluster_cpu_ticks() {
  local pm total=0 pid f
  pm=$(head -1 "$BENCH_DIR/$1/data/postmaster.pid")
  read -r -a f < <(sed 's/^.*) //' "/proc/$pm/stat")
  total=$((f[11] + f[12] + f[13] + f[14]))
  for pid in $(pgrep -P "$pm"); do
    if read -r -a f < <(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null); then
      total=$((total + f[11] + f[12]))
    fi
  done
  echo "$total"
}
target_cpu_ticks() { cluster_cpu_ticks target; }

process_cpu_ticks() {
  local f
  read -r -a f < <(sed 's/^.*) //' "/proc/$1/stat")
  echo $((f[11] + f[12]))
}

ticks_to_s() { awk -v t="$1" -v hz="$TICKS" 'BEGIN{printf "%.2f", t/hz}'; }
now_ns() { date +%s%N; }
# Seconds between two now_ns readings, to the millisecond.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", (b-a)/1e9}'; }

# Wait until `query` (on the target database $1) prints t; fail after $3 seconds.
wait_target() {
  local db=$1 query=$2 limit=${3:-600} start
  start=$(date +%s)
  until [ "$(dq "$db" "$query" 2>/dev/null)" = "t" ]; do
    if (($(date +%s) - start > limit)); then
      echo "timed out after ${limit}s waiting for: $query on $db" >&2
      return 1
    fi
    sleep 0.02
  done
}

# Compare every listed table between the source db and a target db, row for row.
same_tables() {
  local sdb=$1 tdb=$2 t q
  shift 2
  for t in "$@"; do
    q="SELECT md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) || ':' || count(*) FROM $t x"
    if [ "$(sq "$sdb" "$q")" != "$(dq "$tdb" "$q")" ]; then
      echo "MISMATCH: $t differs between source $sdb and target $tdb" >&2
      return 1
    fi
  done
}

# Build the release binary into $LSNPIPE (LSNPIPE_BIN: use that binary instead, e.g. an older
# build to compare with).
build_lsnpipe() {
  if [ -n "${LSNPIPE_BIN:-}" ]; then
    LSNPIPE=$LSNPIPE_BIN
    return
  fi
  echo "building lsnpipe (release)…" >&2
  cargo build --release --quiet --manifest-path "$root/Cargo.toml"
  LSNPIPE="$root/target/release/lsnpipe"
}

# On exit: stop a running lsnpipe ($lsnpipe_pid) and the clusters.
lsnpipe_pid=
cleanup_bench() {
  if [ -n "$lsnpipe_pid" ]; then
    kill "$lsnpipe_pid" 2>/dev/null && wait "$lsnpipe_pid" 2>/dev/null
  fi
  stop_clusters
}

# The catch-up and freshness setup: database `bench` on the source (pgbench scale $SCALE plus one
# extra table, created by DDL $1 and named $2), publication bench_pub, slots native_bench and
# lsnpipe_bench, and target databases `native` and `lsnpipe` holding the same starting state, with
# a disabled subscription native_sub in `native`.
setup_pgbench_pair() {
  local ddl=$1 extra=$2 db
  sq postgres "CREATE DATABASE bench"
  pgbench -i -q -s "$SCALE" "$(src bench)" >/dev/null 2>&1
  sq bench "$ddl" >/dev/null
  sq bench "CREATE PUBLICATION bench_pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history, $extra" >/dev/null
  # Each slot in a transaction of its own (a slot cannot be created after writes in one).
  sq bench "SELECT pg_create_logical_replication_slot('native_bench', 'pgoutput')" >/dev/null
  sq bench "SELECT pg_create_logical_replication_slot('lsnpipe_bench', 'pgoutput')" >/dev/null
  for db in native lsnpipe; do
    dq postgres "CREATE DATABASE $db"
    pg_dump -s -t 'pgbench_*' -t "$extra" "$(src bench)" | psql -Xq "$(dst $db)" >/dev/null
    # Nothing is written between the slots' creation and this copy: it is their starting state.
    pg_dump -a -t 'pgbench_*' "$(src bench)" | psql -Xq "$(dst $db)" >/dev/null
  done
  dq native "CREATE SUBSCRIPTION native_sub CONNECTION '$(src bench)' PUBLICATION bench_pub
             WITH (create_slot = false, slot_name = 'native_bench', copy_data = false, enabled = false)" 2>/dev/null
}
