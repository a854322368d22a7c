#!/usr/bin/env bash
# Random faults under load for longer than `cargo test` should take: link resets, silences,
# delays and throttles on both sides, source and target crashes (-m immediate), lsnpipe SIGKILL.
#
#   scripts/fault-loop.sh [SECONDS] [SEED]     default 600 s and a fresh seed (printed)
#
# Runs the ignored test faults::random_loop on two private clusters; it ends by checking that the
# target equals the source (pgbench_history as a multiset) and that lsnpipe never exited. Replay a
# failed run with the seed it printed.
set -euo pipefail
cd "$(dirname "$0")/.."

export LSNPIPE_FAULT_LOOP_SECS=${1:-600}
if [[ -n ${2:-} ]]; then
    export LSNPIPE_FAULT_SEED=$2
fi
exec cargo test --test it faults::random_loop -- --ignored --nocapture
