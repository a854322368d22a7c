#!/usr/bin/env bash
# Differential torture campaign: random schemas and concurrent random transactions on a source,
# faults at random points, lsnpipe replicating; after catch-up every table on the target must
# equal the source. Prints one line per seed; a failure is shrunk to SQL you can paste, and the
# shrunk run is replayed beside PostgreSQL's own CREATE SUBSCRIPTION.
#
#   scripts/torture.sh --minutes N          fresh seeds for N minutes (default 10)
#   scripts/torture.sh --seed S             replay one seed (decimal or 0x-hex), shrink if it fails
#   options: --features SPEC   safe (default: no known-bug features), all, none, +name, -name
#                              e.g. --features safe,+unique_reuse
#            --txns N          transactions per client (default 80)
#            --large-rows N    rows of an occasional large transaction (default 100000)
#            --shrink-secs N   time budget for shrinking one failure (default 600)
#            --first-failure   stop the campaign at the first failing seed (after shrinking it)
#            --debug           build without --release
# Feature names and the known-bug list: tests/it/torture/features.rs.
set -euo pipefail
export RUST_BACKTRACE=0
cd "$(dirname "$0")/.."

minutes=10 profile=(--release)
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes=$2; shift 2 ;;
        --seed) export TORTURE_SEED=$2; shift 2 ;;
        --features) export TORTURE_FEATURES=$2; shift 2 ;;
        --txns) export TORTURE_TXNS=$2; shift 2 ;;
        --large-rows) export TORTURE_LARGE_ROWS=$2; shift 2 ;;
        --shrink-secs) export TORTURE_SHRINK_SECS=$2; shift 2 ;;
        --first-failure) export TORTURE_STOP_AT_FIRST=true; shift ;;
        --debug) profile=(); shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
export TORTURE_MINUTES=$minutes

# The test harness's own lines go to stdout; the campaign's lines go to stderr.
cargo test "${profile[@]}" --test it torture::campaign -- --ignored --nocapture --test-threads=1 \
    2>&1 | grep --line-buffered -v -E '^(running [0-9]+ test|test torture::campaign|$)'
exit "${PIPESTATUS[0]}"
