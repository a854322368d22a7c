#!/usr/bin/env bash
# What the two servers themselves need to copy pgbench_accounts, with no replication tool in the
# way: the floor under any initial copy on this machine (scripts/bench-copy.sh measures the tools).
#
#   scripts/bench-copy-floor.sh [SCALE]     pgbench scale of the source (default 50)
#
# Each variant pipes `COPY … TO STDOUT` on the source into `COPY … FROM STDIN` on the target with
# two psql processes, into a fresh table, after a checkpoint on both, and prints its wall time and
# the CPU seconds of each cluster (every process, exited ones included):
#   text / binary      one COPY in text / binary format
#   binary freeze      one binary COPY with FREEZE, in the transaction that emptied the table
#   binary 2 ranges    two binary COPYs at once, each of half the table's blocks
#   key after          one binary COPY into the table without its primary key, then the key built
# With KEY=1 (the default) the target table has its primary key during the COPY, as a target
# whose schema is in place has; KEY=0 copies into a table without one. ROUNDS (default 2).
set -euo pipefail
source "$(dirname "$0")/lib/bench-common.sh"

SCALE=${1:-50}
ROUNDS=${ROUNDS:-2}
KEY=${KEY:-1}
trap stop_clusters EXIT
start_clusters
sq postgres "CREATE DATABASE bench"
dq postgres "CREATE DATABASE floor"
echo "loading pgbench scale $SCALE on the source…" >&2
pgbench -i -q -s "$SCALE" "$(src bench)" >/dev/null 2>&1
sq bench "VACUUM ANALYZE"
blocks=$(sq bench "SELECT relpages FROM pg_class WHERE oid = 'pgbench_accounts'::regclass")
half=$((blocks / 2))

COLUMNS="aid int NOT NULL, bid int, abalance int, filler char(84)"
fresh_table() { # with_key
  local key=""
  [ "$1" = 1 ] && key=", PRIMARY KEY (aid)"
  dq floor "SET client_min_messages = warning; DROP TABLE IF EXISTS a; CREATE TABLE a ($COLUMNS$key)"
}
out() { psql "$(src bench)" -Xq -v ON_ERROR_STOP=1 -c "COPY ($1) TO STDOUT $2"; }
into() { psql "$(dst floor)" -Xq -v ON_ERROR_STOP=1 "$@"; }

ALL="SELECT * FROM ONLY pgbench_accounts"
FIRST="$ALL WHERE ctid < '($half,0)'::tid"
SECOND="$ALL WHERE ctid >= '($half,0)'::tid"
BIN="(FORMAT binary)"

text() { out "$ALL" "" | into -c "COPY a FROM STDIN"; }
binary() { out "$ALL" "$BIN" | into -c "COPY a FROM STDIN $BIN"; }
binary_freeze() {
  out "$ALL" "$BIN" |
    into -c "BEGIN" -c "TRUNCATE a" -c "COPY a FROM STDIN (FORMAT binary, FREEZE)" -c "COMMIT"
}
binary_2_ranges() {
  out "$FIRST" "$BIN" | into -c "COPY a FROM STDIN $BIN" &
  out "$SECOND" "$BIN" | into -c "COPY a FROM STDIN $BIN"
  wait
}
key_after() {
  out "$ALL" "$BIN" | into -c "COPY a FROM STDIN $BIN" -c "ALTER TABLE a ADD PRIMARY KEY (aid)"
}

measure() { # name function with_key
  local t0 t1 s0 d0 rows
  fresh_table "$3"
  sq postgres CHECKPOINT
  dq postgres CHECKPOINT
  s0=$(cluster_cpu_ticks source)
  d0=$(cluster_cpu_ticks target)
  t0=$(now_ns)
  "$2"
  t1=$(now_ns)
  rows=$(dq floor "SELECT count(*) FROM a")
  printf '  %-16s %6.2f s   CPU source %5s s  target %5s s   (%s rows)\n' "$1" \
    "$(elapsed "$t0" "$t1")" \
    "$(ticks_to_s $(($(cluster_cpu_ticks source) - s0)))" \
    "$(ticks_to_s $(($(cluster_cpu_ticks target) - d0)))" "$rows"
}

machine
echo "pgbench_accounts at scale $SCALE ($blocks blocks), target table $([ "$KEY" = 1 ] && echo "with" || echo "without") its primary key during the COPY; fsync on"
for round in $(seq "$ROUNDS"); do
  echo "round $round:"
  measure "text" text "$KEY"
  measure "binary" binary "$KEY"
  measure "binary freeze" binary_freeze "$KEY"
  measure "binary 2 ranges" binary_2_ranges "$KEY"
  if [ "$KEY" = 1 ]; then
    measure "key after" key_after 0
  fi
done
