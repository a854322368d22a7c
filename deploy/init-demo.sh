#!/usr/bin/env bash
# Prepare the docker-compose (and scripts/demo.sh) topology: pgbench tables on the primary, the
# same tables on the replica, a publication, and the slot, before the sample rows are written,
# so that streaming alone carries every row to the replica.
#
# Needs: psql, pg_dump, pgbench on PATH; PRIMARY and REPLICA connection strings; PGPASSWORD (or a
# passfile) if the servers ask for one. Idempotent: a second run leaves things as they are.
set -euo pipefail
: "${PRIMARY:?connection string of the primary}" "${REPLICA:?connection string of the replica}"
SCALE=${SCALE:-10}
SLOT=${SLOT:-lsnpipe}
PUBLICATION=${PUBLICATION:-lsnpipe_pub}

q() { psql "$1" -v ON_ERROR_STOP=1 -qAtc "$2"; }
# pgbench reports progress on stderr: shown only when it fails.
quiet() { local out; out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }; }

if [ "$(q "$PRIMARY" "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$SLOT'")" = 1 ]; then
  echo "init: slot $SLOT exists already; nothing to do"
  exit 0
fi
# Tables and primary keys only (pgbench init steps: d=drop, t=tables, p=primary keys).
quiet pgbench -i -I dtp "$PRIMARY"
pg_dump --schema-only --no-owner --no-privileges -t 'pgbench_*' "$PRIMARY" \
  | psql "$REPLICA" -v ON_ERROR_STOP=1 -q >/dev/null
# pgbench_history has no primary key: without this, UPDATE/DELETE on it could not replicate
# (pgbench only inserts there, but `lsnpipe check` rightly flags it).
q "$PRIMARY" "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
q "$PRIMARY" "CREATE PUBLICATION $PUBLICATION FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history"
q "$PRIMARY" "SELECT pg_create_logical_replication_slot('$SLOT', 'pgoutput')" >/dev/null
# g = generate the rows, now that the slot sees them.
quiet pgbench -i -I g -s "$SCALE" "$PRIMARY"
echo "init: pgbench scale $SCALE on the primary, publication $PUBLICATION, slot $SLOT"
