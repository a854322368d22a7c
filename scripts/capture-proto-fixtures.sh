#!/usr/bin/env bash
# Regenerate the pgoutput fixtures in proto/ from a throwaway PostgreSQL cluster.
#
#   scripts/capture-proto-fixtures.sh [OUT_DIR]     (default: proto/ next to this script)
#
# Each scenario gets its own logical slot, runs its SQL, and reads what pgoutput produced with
# pg_logical_slot_peek_binary_changes (the SQL interface runs the same plugin code the walsender
# runs; each row is one pgoutput message, i.e. one XLogData payload). Output:
#   OUT_DIR/pg15/<scenario>.hex     '#' comment lines, then one message per line, in hex
#   OUT_DIR/pgbench-2000.bin        2,000 pgbench transactions: u32 big-endian length + message
# LSNs, xids, OIDs and timestamps differ on every run; the tests assert only what is stable.
#
# Server binaries: $PG_BINDIR, else /usr/lib/postgresql/15/bin. As root, the server runs as the
# `postgres` OS user.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../proto}
mkdir -p "$out/pg15"
out=$(cd "$out" && pwd)
bindir=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
[ -x "$bindir/postgres" ] || { echo "no PostgreSQL server in $bindir; set PG_BINDIR" >&2; exit 1; }

as_server() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

dir=$(mktemp -d /tmp/lsnpipe-capture.XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
cleanup() {
  as_server "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

as_server "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
  >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
port=$((20000 + RANDOM % 40000))
as_server tee -a "$dir/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = ''
port = $port
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 20
max_prepared_transactions = 10
# The minimum: transactions over 64 kB of changes are streamed when streaming is on.
logical_decoding_work_mem = 64kB
fsync = off
CONF
as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null

export PGHOST=$dir PGPORT=$port PGUSER=postgres PGDATABASE=postgres
sql() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

sql <<'SQL'
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE dml (id int PRIMARY KEY, name text, score numeric(10,2), note varchar(20));
CREATE TABLE typed (id int PRIMARY KEY, m mood, p posint);
CREATE TABLE toasted (id int PRIMARY KEY, counter int, big text);
ALTER TABLE toasted ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE full_ident (id int, v text);
ALTER TABLE full_ident REPLICA IDENTITY FULL;
CREATE TABLE idx_ident (id int PRIMARY KEY, code text NOT NULL, v text);
CREATE UNIQUE INDEX idx_ident_code ON idx_ident (code);
ALTER TABLE idx_ident REPLICA IDENTITY USING INDEX idx_ident_code;
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent (id));
CREATE TABLE stream_big (id int PRIMARY KEY, v text);
CREATE TABLE twophase (id int PRIMARY KEY, v text);
CREATE PUBLICATION pub FOR ALL TABLES;
SELECT pg_replication_origin_create('upstream') \gset
SQL

# capture NAME 'OPTIONS' 'DESCRIPTION' [two_phase]  (workload SQL on stdin)
capture() {
  local name=$1 options=$2 description=$3 two_phase=${4:-false}
  sql -c "SELECT pg_create_logical_replication_slot('$name', 'pgoutput', false, $two_phase)" >/dev/null
  sql >/dev/null
  {
    echo "# $description"
    echo "# pg_logical_slot_peek_binary_changes options: $options"
    echo "# server: $(psql -X -At -c 'SHOW server_version')"
    psql -X -At -v ON_ERROR_STOP=1 -c \
      "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('$name', NULL, NULL, $options)"
  } >"$out/pg15/$name.hex"
  sql -c "SELECT pg_drop_replication_slot('$name')" >/dev/null
  echo "captured $out/pg15/$name.hex: $(grep -vc '^#' "$out/pg15/$name.hex") message(s)"
}

v1="'proto_version', '1', 'publication_names', 'pub'"

capture v1_dml "$v1" "protocol 1: insert (with NULL), update (key unchanged), update (key changed: K), delete" <<'SQL'
INSERT INTO dml VALUES (1, 'alice', 12.50, 'first'), (2, 'bob', NULL, NULL);
UPDATE dml SET score = 99.99, note = 'updated' WHERE id = 1;
UPDATE dml SET id = 3 WHERE id = 2;
DELETE FROM dml WHERE id = 1;
SQL

capture v1_binary "$v1, 'binary', 'true'" "protocol 1, binary 'true': insert (int4, text, numeric, varchar and a NULL as 'b' / 'n')" <<'SQL'
INSERT INTO dml VALUES (10, 'binary', 1.25, NULL);
SQL

capture v1_truncate "$v1" "protocol 1: TRUNCATE parent, child RESTART IDENTITY CASCADE (2 relations, flags 3), then TRUNCATE dml (flags 0)" <<'SQL'
TRUNCATE parent, child RESTART IDENTITY CASCADE;
TRUNCATE dml;
SQL

capture v1_messages "$v1, 'messages', 'true'" "protocol 1, messages 'true': non-transactional message, then a transaction with a transactional message (raw bytes 00 ff) and an insert" <<'SQL'
SELECT pg_logical_emit_message(false, 'lsnpipe', 'non-transactional');
BEGIN;
SELECT pg_logical_emit_message(true, 'lsnpipe', '\x00ff'::bytea);
INSERT INTO dml VALUES (20, 'with message', 1, 'm');
COMMIT;
SQL

capture v1_origin "$v1" "protocol 1: a transaction replayed from origin 'upstream' with origin commit LSN 0/12345678" <<'SQL'
SELECT pg_replication_origin_session_setup('upstream');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/12345678', '2026-01-01 00:00:00+00');
INSERT INTO dml VALUES (30, 'from upstream', 3, 'o');
COMMIT;
SELECT pg_replication_origin_session_reset();
SQL

capture v1_types "$v1" "protocol 1: custom types: an enum column and a domain over int4 (Type messages before the Relation)" <<'SQL'
INSERT INTO typed VALUES (1, 'happy', 42);
SQL

capture v1_toast "$v1" "protocol 1: insert of an out-of-line (TOAST, storage EXTERNAL) text of 2240 bytes, then an update of another column (new tuple has 'u')" <<'SQL'
INSERT INTO toasted SELECT 1, 0, string_agg(md5(i::text), '') FROM generate_series(1, 70) i;
UPDATE toasted SET counter = counter + 1 WHERE id = 1;
SQL

capture v1_identity_full "$v1" "protocol 1: REPLICA IDENTITY FULL: insert, update (O old tuple), delete (O old tuple)" <<'SQL'
INSERT INTO full_ident VALUES (1, 'before');
UPDATE full_ident SET v = 'after' WHERE id = 1;
DELETE FROM full_ident WHERE id = 1;
SQL

capture v1_identity_index "$v1" "protocol 1: REPLICA IDENTITY USING INDEX (code): insert, update of the index column (K old tuple), update of a non-key column (no old tuple), delete (K)" <<'SQL'
INSERT INTO idx_ident VALUES (1, 'a', 'x');
UPDATE idx_ident SET code = 'b' WHERE id = 1;
UPDATE idx_ident SET v = 'y' WHERE id = 1;
DELETE FROM idx_ident WHERE id = 1;
SQL

v2="'proto_version', '2', 'streaming', 'on', 'messages', 'true', 'publication_names', 'pub'"

capture v2_stream_commit "$v2" "protocol 2, streaming 'on': a transaction over logical_decoding_work_mem (64kB): a transactional message, 500 inserts, a rolled-back savepoint with 500 inserts (streamed subtransaction abort), one more insert, commit" <<'SQL'
BEGIN;
SELECT pg_logical_emit_message(true, 'lsnpipe', 'in stream');
INSERT INTO stream_big SELECT i, 'row ' || i FROM generate_series(1, 500) i;
SAVEPOINT s1;
INSERT INTO stream_big SELECT i, 'sub ' || i FROM generate_series(501, 1000) i;
ROLLBACK TO SAVEPOINT s1;
INSERT INTO stream_big VALUES (1001, 'after rollback');
COMMIT;
SQL

capture v2_stream_abort "$v2" "protocol 2, streaming 'on': a streamed transaction of 600 inserts that is rolled back" <<'SQL'
BEGIN;
INSERT INTO stream_big SELECT i, 'aborted ' || i FROM generate_series(2001, 2600) i;
ROLLBACK;
-- An abort record is not flushed by itself, and the SQL interface reads only flushed WAL.
CHECKPOINT;
SQL

v3="'proto_version', '3', 'two_phase', 'on', 'publication_names', 'pub'"

capture v3_two_phase "$v3" "protocol 3, two_phase 'on': PREPARE TRANSACTION + COMMIT PREPARED, then PREPARE TRANSACTION + ROLLBACK PREPARED" true <<'SQL'
BEGIN;
INSERT INTO twophase VALUES (1, 'prepared then committed');
PREPARE TRANSACTION 'lsnpipe-gid-1';
COMMIT PREPARED 'lsnpipe-gid-1';
BEGIN;
INSERT INTO twophase VALUES (2, 'prepared then rolled back');
PREPARE TRANSACTION 'lsnpipe-gid-2';
ROLLBACK PREPARED 'lsnpipe-gid-2';
SQL

capture v3_stream_prepare "$v3, 'streaming', 'on'" "protocol 3, two_phase 'on', streaming 'on': a streamed transaction of 500 inserts, PREPARE TRANSACTION (Stream Prepare), COMMIT PREPARED" true <<'SQL'
BEGIN;
INSERT INTO twophase SELECT i, 'streamed ' || i FROM generate_series(100, 599) i;
PREPARE TRANSACTION 'lsnpipe-gid-3';
COMMIT PREPARED 'lsnpipe-gid-3';
SQL

# The benchmark stream: pgbench's TPC-B-like transaction (3 updates, 1 insert) 2,000 times.
"$bindir/pgbench" -i -q -s 1 >/dev/null 2>&1
sql -c "SELECT pg_create_logical_replication_slot('bench', 'pgoutput')" >/dev/null
"$bindir/pgbench" -n -c 1 -t 2000 >/dev/null
psql -X -At -v ON_ERROR_STOP=1 -c \
  "SELECT encode(int4send(length(data)) || data, 'hex')
     FROM pg_logical_slot_peek_binary_changes('bench', NULL, NULL, $v1)" \
  | xxd -r -p >"$out/pgbench-2000.bin"
sql -c "SELECT pg_drop_replication_slot('bench')" >/dev/null
echo "captured $out/pgbench-2000.bin: $(stat -c %s "$out/pgbench-2000.bin") bytes"
