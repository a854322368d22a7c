//! `lsnpipe ddl install` / `ddl remove`: the event triggers on the source that write each DDL
//! command touching a published table into the WAL, where the stream carries it to the target.
//!
//! ```text
//!  ddl_command_end ─▶ lsnpipe.ddl_capture()      ─┐  for the tables the command touched (an
//!  sql_drop        ─▶ lsnpipe.ddl_capture_drop() ─┤  index's or constraint's table, a new table
//!                                                 │  a publication includes, a dropped table)
//!                                                 ▼
//!      pg_logical_emit_message(true, 'lsnpipe.ddl', {tag, command, search_path, publications, …})
//! ```
//!
//! The functions are `SECURITY DEFINER` (the installing superuser), so DDL run by any role is
//! captured; they read the caller's `search_path` first and then work under `pg_catalog` only,
//! putting the caller's path back before returning. `CREATE TABLE AS` and `SELECT INTO` are left
//! out: their rows are replicated as inserts, and replaying the command would copy them twice
//! (such a table is created and copied as a table that joined the publication, with
//! `--create-tables`).

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::message::PREFIX;

/// What `install` creates, in order; `remove` drops the same names.
const INSTALL: &str = r#"
CREATE SCHEMA IF NOT EXISTS lsnpipe;

CREATE OR REPLACE FUNCTION lsnpipe.ddl_capture() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER AS $capture$
DECLARE
    caller_path text := pg_catalog.current_setting('search_path');
    cmd record;
    rel oid;
    nsp text;
    relname text;
    rel_pubs text[];
    pubs text[] := '{}';
    objects jsonb := '[]';
    created jsonb := '[]';
BEGIN
    IF tg_tag IN ('CREATE TABLE AS', 'SELECT INTO') THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    FOR cmd IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() LOOP
        rel := NULL;
        IF cmd.classid = 'pg_catalog.pg_class'::regclass THEN
            SELECT CASE WHEN c.relkind IN ('i', 'I')
                        THEN (SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = c.oid)
                        ELSE c.oid END
              INTO rel FROM pg_class c
             WHERE c.oid = cmd.objid AND c.relkind IN ('r', 'p', 'i', 'I');
        ELSIF cmd.classid = 'pg_catalog.pg_constraint'::regclass THEN
            SELECT nullif(c.conrelid, 0) INTO rel FROM pg_constraint c WHERE c.oid = cmd.objid;
        ELSIF cmd.classid = 'pg_catalog.pg_trigger'::regclass THEN
            SELECT t.tgrelid INTO rel FROM pg_trigger t WHERE t.oid = cmd.objid;
        ELSIF cmd.classid = 'pg_catalog.pg_attrdef'::regclass THEN
            SELECT d.adrelid INTO rel FROM pg_attrdef d WHERE d.oid = cmd.objid;
        ELSIF cmd.classid = 'pg_catalog.pg_policy'::regclass THEN
            SELECT p.polrelid INTO rel FROM pg_policy p WHERE p.oid = cmd.objid;
        END IF;
        CONTINUE WHEN rel IS NULL;
        SELECT n.nspname, c.relname INTO nsp, relname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
        SELECT coalesce(array_agg(DISTINCT p.pubname::text), '{}') INTO rel_pubs
          FROM pg_publication_tables p WHERE p.schemaname = nsp AND p.tablename = relname;
        CONTINUE WHEN cardinality(rel_pubs) = 0;
        pubs := pubs || rel_pubs;
        objects := objects || jsonb_build_object('type', cmd.object_type,
            'identity', cmd.object_identity, 'schema', nsp, 'table', relname);
        IF cmd.command_tag = 'CREATE TABLE' AND cmd.object_type = 'table' THEN
            created := created || jsonb_build_object('schema', nsp, 'table', relname);
        END IF;
    END LOOP;
    IF objects <> '[]' THEN
        PERFORM pg_logical_emit_message(true, '@PREFIX@', jsonb_build_object(
            'version', 1, 'tag', tg_tag, 'command', current_query(),
            'search_path', caller_path, 'objects', objects, 'created', created,
            'publications', (SELECT jsonb_agg(DISTINCT p) FROM unnest(pubs) p))::text);
    END IF;
    PERFORM pg_catalog.set_config('search_path', caller_path, true);
END
$capture$;

CREATE OR REPLACE FUNCTION lsnpipe.ddl_capture_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER AS $capture$
DECLARE
    caller_path text := pg_catalog.current_setting('search_path');
    dropped record;
    pubs text[] := '{}';
    objects jsonb := '[]';
BEGIN
    IF tg_tag <> 'DROP TABLE' THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    FOR dropped IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() LOOP
        -- A table listed in a publication leaves its membership among the dropped objects;
        -- FOR ALL TABLES and TABLES IN SCHEMA publications are looked up.
        IF dropped.object_type = 'publication relation' THEN
            pubs := pubs || dropped.address_args[1];
            objects := objects || jsonb_build_object('type', 'table',
                'identity', pg_catalog.quote_ident(dropped.address_names[1]) || '.'
                    || pg_catalog.quote_ident(dropped.address_names[2]),
                'schema', dropped.address_names[1], 'table', dropped.address_names[2]);
        ELSIF dropped.object_type = 'table' AND dropped.original THEN
            pubs := pubs || ARRAY(
                SELECT p.pubname::text FROM pg_publication p WHERE p.puballtables
                UNION
                SELECT p.pubname::text FROM pg_publication p
                  JOIN pg_publication_namespace pn ON pn.pnpubid = p.oid
                  JOIN pg_namespace n ON n.oid = pn.pnnspid
                 WHERE n.nspname = dropped.schema_name);
            IF cardinality(pubs) > 0 THEN
                objects := objects || jsonb_build_object('type', 'table',
                    'identity', dropped.object_identity, 'schema', dropped.schema_name,
                    'table', dropped.object_name);
            END IF;
        END IF;
    END LOOP;
    IF cardinality(pubs) > 0 THEN
        PERFORM pg_logical_emit_message(true, '@PREFIX@', jsonb_build_object(
            'version', 1, 'tag', tg_tag, 'command', current_query(),
            'search_path', caller_path, 'objects', objects, 'created', '[]'::jsonb,
            'publications', (SELECT jsonb_agg(DISTINCT p) FROM unnest(pubs) p))::text);
    END IF;
    PERFORM pg_catalog.set_config('search_path', caller_path, true);
END
$capture$;

DROP EVENT TRIGGER IF EXISTS lsnpipe_ddl_capture;
CREATE EVENT TRIGGER lsnpipe_ddl_capture ON ddl_command_end
    EXECUTE FUNCTION lsnpipe.ddl_capture();
DROP EVENT TRIGGER IF EXISTS lsnpipe_ddl_capture_drop;
CREATE EVENT TRIGGER lsnpipe_ddl_capture_drop ON sql_drop
    EXECUTE FUNCTION lsnpipe.ddl_capture_drop();
"#;

const REMOVE: &str = "DROP EVENT TRIGGER IF EXISTS lsnpipe_ddl_capture;
    DROP EVENT TRIGGER IF EXISTS lsnpipe_ddl_capture_drop;
    DROP FUNCTION IF EXISTS lsnpipe.ddl_capture();
    DROP FUNCTION IF EXISTS lsnpipe.ddl_capture_drop()";

/// Why the capture could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "the source role {role} is not a superuser: only a superuser can create event triggers \
         (connect as one for `lsnpipe ddl install`/`remove`; `run` itself needs no more than before)"
    )]
    NotSuperuser { role: String },
    #[error("{doing} on the source")]
    Sql {
        doing: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

fn sql(doing: &'static str) -> impl FnOnce(tokio_postgres::Error) -> InstallError {
    move |source| InstallError::Sql { doing, source }
}

async fn require_superuser(client: &Client) -> Result<(), InstallError> {
    let row = client
        .query_one(
            "SELECT current_user::text, rolsuper FROM pg_catalog.pg_roles \
             WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(sql("reading the role"))?;
    let super_user: bool = row.try_get(1).map_err(sql("reading the role"))?;
    if super_user {
        Ok(())
    } else {
        Err(InstallError::NotSuperuser {
            role: row.try_get(0).map_err(sql("reading the role"))?,
        })
    }
}

/// Create (or replace) the capture functions and event triggers, in one transaction.
pub async fn install(client: &mut Client) -> Result<(), InstallError> {
    require_superuser(client).await?;
    let tx = client
        .transaction()
        .await
        .map_err(sql("starting a transaction"))?;
    tx.batch_execute(&INSTALL.replace("@PREFIX@", PREFIX))
        .await
        .map_err(sql("creating the event triggers"))?;
    tx.commit()
        .await
        .map_err(sql("committing the event triggers"))
}

/// Drop what [`install`] created. The `lsnpipe` schema goes too when nothing else is in it.
/// Returns whether the schema was dropped.
pub async fn remove(client: &mut Client) -> Result<bool, InstallError> {
    require_superuser(client).await?;
    let tx = client
        .transaction()
        .await
        .map_err(sql("starting a transaction"))?;
    tx.batch_execute(REMOVE)
        .await
        .map_err(sql("dropping the event triggers"))?;
    tx.commit().await.map_err(sql("committing the removal"))?;
    match client.batch_execute("DROP SCHEMA IF EXISTS lsnpipe").await {
        Ok(()) => Ok(true),
        // Something else lives there (lsnpipe's own tables on a source that is also a target,
        // say): it stays.
        Err(e) if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => Ok(false),
        Err(e) => Err(InstallError::Sql {
            doing: "dropping the lsnpipe schema",
            source: e,
        }),
    }
}
