#!/bin/bash
# What scripts/compose-test.sh needs of the official image's entrypoint: on the first start of
# `postgres …`, initdb with POSTGRES_PASSWORD for the superuser `postgres`, password (scram)
# authentication from other hosts, listen on all addresses, create POSTGRES_DB; then run the
# server as `postgres`. Any other command runs as given.
set -euo pipefail
if [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi

: "${POSTGRES_PASSWORD:?the official image refuses to start without POSTGRES_PASSWORD too}"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
install -d -o postgres -g postgres -m 3777 /var/run/postgresql
install -d -o postgres -g postgres -m 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  chown postgres "$pwfile"
  as_postgres initdb --username=postgres --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.auto.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "${POSTGRES_DB:-postgres}" != postgres ]; then
    as_postgres pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
    as_postgres psql -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$POSTGRES_DB\"" postgres
    as_postgres pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
  fi
  echo "docker-entrypoint.sh: initialised $PGDATA"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
