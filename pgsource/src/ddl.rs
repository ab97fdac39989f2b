//! SQL of a group's DDL capture objects (`pg_flo replicator --track-ddl`), in schema
//! `internal_pg_flo`:
//! - event triggers `pg_flo_ddl_end_<group>` (`ddl_command_end`) and `pg_flo_ddl_drop_<group>`
//!   (`sql_drop`) and their functions;
//! - the group's rows in `ddl_tracked` (its tables), `ddl_indexes` (their indexes, so that a
//!   `DROP INDEX` can be tied to its table), `ddl_keys` (the group's signing key) and
//!   `ddl_statements` (statement counts of the running queries).
//!
//! For each command on one of the group's tables the end and drop functions emit a
//! transactional logical message with prefix [`message_prefix`] whose content is
//! `hex(HMAC-SHA256(key, json)) || json` ([`MAC_HEX_LEN`] hex digits, then the JSON). Anyone
//! may call `pg_logical_emit_message` with that prefix, so the replicator trusts a message only
//! when its MAC verifies with the group's key. The key is 64 random bytes (`gen_random_uuid`,
//! PostgreSQL 13+) that only superusers can read: `ddl_keys` grants nothing to `PUBLIC` and has
//! row level security on with no policy, so even `pg_read_all_data` sees no row; the functions
//! are `SECURITY DEFINER`, owned by the superuser that ran the setup, and event-trigger
//! functions cannot be called directly. The HMAC is the RFC 2104 construction over the
//! builtin `sha256()`, so it is not open to length extension. The JSON carries the
//! transaction id (`xid`), so a genuine message cannot be replayed in another transaction.
//!
//! The JSON also says which statement of the client's query string ran the command: `tag`
//! (the statement's command tag), `stmt` (this is the `stmt`-th statement with that tag in the
//! query, counted at the end of each top-level statement per backend in the unlogged table
//! `ddl_statements`, keyed by the query's receipt time and hash; only the functions write it,
//! so a session cannot bend the count, and `RESET`/`DISCARD` do not touch it; counting at the
//! end, not in a `ddl_command_start` trigger, keeps `DROP INDEX CONCURRENTLY` the first action
//! of its transaction) and `nested` (the command ran inside a function, `DO` block or
//! procedure, seen from the PL/pgSQL call stack). `pg_flo::ddl` uses them to replay exactly
//! that statement, or to refuse.
//!
//! The runtime runs [`setup_sql`] at start (it replaces the functions of earlier versions) and
//! verifies the messages (`pg_flo::ddl`); the runtime's `--cleanup` and the operator's group
//! deletion run [`cleanup_sql`].

use std::fmt::Display;

use crate::sql::quote_literal;

/// Prefix of the group's logical messages.
pub fn message_prefix(group: &str) -> String {
    format!("pg_flo_ddl:{}", group_suffix(group))
}

/// Length of the hex MAC that starts every capture message.
pub const MAC_HEX_LEN: usize = 64;

/// Query that reads the group's signing key (parameter `$1`: the group name; one `bytea` or
/// no row).
pub const KEY_SQL: &str = "SELECT secret FROM internal_pg_flo.ddl_keys WHERE group_name = $1";

/// Command tags whose statements are counted (the commands that can be captured on a table or
/// index; a statement with another tag is replayed only as a query's one statement).
pub const COUNTED_TAGS: [&str; 7] = [
    "ALTER TABLE",
    "CREATE INDEX",
    "DROP INDEX",
    "ALTER INDEX",
    "COMMENT",
    "CREATE TABLE",
    "SECURITY LABEL",
];

fn group_suffix(group: &str) -> String {
    group.replace('-', "_").to_lowercase()
}

/// PL/pgSQL that emits the signed capture message for the JSON object in `payload_expr`.
/// Needs the variables `key bytea`, `ipad bytea`, `opad bytea`, `payload text`.
fn emit(group_literal: &str, prefix_literal: &str, payload_expr: &str) -> String {
    format!(
        r#"      payload := {payload_expr}::text;
      SELECT k.secret INTO key FROM internal_pg_flo.ddl_keys k WHERE k.group_name = {group_literal};
      IF key IS NULL OR length(key) <> 64 THEN
        RAISE WARNING 'pg_flo: no DDL signing key for group %; the command is not replicated', {group_literal};
      ELSE
        ipad := key;
        opad := key;
        FOR i IN 0..63 LOOP
          ipad := set_byte(ipad, i, get_byte(key, i) # 54);
          opad := set_byte(opad, i, get_byte(key, i) # 92);
        END LOOP;
        PERFORM pg_logical_emit_message(true, {prefix_literal},
          encode(sha256(opad || sha256(ipad || textsend(payload))), 'hex') || payload);
      END IF;"#
    )
}

/// The key of the client's query (its receipt time and hash) in `ddl_statements`.
const QUERY_KEY: &str =
    "statement_timestamp()::text || ' ' || encode(sha256(textsend(current_query())), 'hex')";

/// PL/pgSQL that sets `nested` and, for a top-level statement, `stmt`. `count`: this is the
/// statement's `ddl_command_end` (count it, once per statement); otherwise its `sql_drop`
/// (which comes before: the statement is the one after those counted).
fn statement_position(gl: &str, count: bool, counted: &str) -> String {
    let lookup = if count {
        format!(
            r#"    IF TG_TAG IN ({counted}) THEN
      INSERT INTO internal_pg_flo.ddl_statements AS s VALUES ({gl}, pg_backend_pid(), TG_TAG, {QUERY_KEY}, 1)
        ON CONFLICT (group_name, pid, tag) DO UPDATE
        SET n = CASE WHEN s.query_key = EXCLUDED.query_key THEN s.n + 1 ELSE 1 END,
            query_key = EXCLUDED.query_key
        RETURNING n INTO stmt;
    END IF;"#
        )
    } else {
        format!(
            r#"    SELECT s.n + 1 INTO stmt FROM internal_pg_flo.ddl_statements s
      WHERE s.group_name = {gl} AND s.pid = pg_backend_pid() AND s.tag = TG_TAG
        AND s.query_key = {QUERY_KEY};
    stmt := coalesce(stmt, 1);"#
        )
    };
    format!(
        r#"  GET DIAGNOSTICS ctx = PG_CONTEXT;
  nested := strpos(ctx, E'\n') > 0;
  IF NOT nested THEN
{lookup}
  END IF;"#
    )
}

/// What follows `RETURNS event_trigger` in both trigger functions, up to `BEGIN`: a
/// `SECURITY DEFINER` function with a fixed `search_path`, and the variables they use.
const TRIGGER_HEAD: &str =
    "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pg_flo$
DECLARE
  obj record;
  tbl text;
  ctx text;
  nested boolean;
  stmt int;
  key bytea;
  ipad bytea;
  opad bytea;
  payload text;
BEGIN";

/// SQL that creates or refreshes the group's capture objects for `tables` (`schema.table`). Run as one simple
/// query (one transaction); an advisory lock serialises groups starting at the same moment
/// (`CREATE SCHEMA IF NOT EXISTS` is not safe against a concurrent twin). Refuses (raises)
/// when schema `internal_pg_flo` or one of its capture tables belongs to a role that is not a
/// superuser: such a role could replace the tables or read the key.
pub fn setup_sql<T: Display>(group: &str, tables: &[T]) -> String {
    let g = group_suffix(group);
    let gl = quote_literal(group);
    let prefix = quote_literal(&message_prefix(group));
    let table_list = tables
        .iter()
        .map(|t| format!("({gl}, {})", quote_literal(&t.to_string())))
        .collect::<Vec<_>>()
        .join(", ");
    let table_array = tables
        .iter()
        .map(|t| quote_literal(&t.to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let counted = COUNTED_TAGS
        .iter()
        .map(|t| quote_literal(t))
        .collect::<Vec<_>>()
        .join(", ");
    let end_position = statement_position(&gl, true, &counted);
    let drop_position = statement_position(&gl, false, &counted);
    // The payload of both triggers; only the event type and where the command tag comes
    // from differ.
    let payload = |event_type: &str, command_tag: &str| {
        format!(
            "json_build_object('v', 2, 'event_type', '{event_type}', 'object_type', obj.object_type,
        'object_identity', obj.object_identity, 'command_tag', {command_tag}, 'tag', TG_TAG,
        'table', tbl, 'query', current_query(), 'stmt', stmt, 'nested', nested,
        'xid', txid_current()::text, 'at', statement_timestamp()::text)"
        )
    };
    let emit_end = emit(&gl, &prefix, &payload("ddl_command_end", "obj.command_tag"));
    let emit_drop = emit(&gl, &prefix, &payload("sql_drop", "TG_TAG"));
    let trigger_head = TRIGGER_HEAD;
    format!(
        r#"SELECT pg_advisory_xact_lock(hashtext('pg_flo_ddl_setup'));
CREATE SCHEMA IF NOT EXISTS internal_pg_flo;
DO $pg_flo$
DECLARE
  bad text;
BEGIN
  SELECT string_agg(what || ' (owner ' || quote_ident(r.rolname) || ')', ', ') INTO bad FROM (
      SELECT 'schema internal_pg_flo' AS what, n.nspowner AS owner
        FROM pg_catalog.pg_namespace n WHERE n.nspname = 'internal_pg_flo'
      UNION ALL
      SELECT 'table internal_pg_flo.' || c.relname, c.relowner
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'internal_pg_flo' AND c.relname IN ('ddl_tracked', 'ddl_indexes', 'ddl_keys', 'ddl_statements')
    ) o JOIN pg_catalog.pg_roles r ON r.oid = o.owner
    WHERE NOT r.rolsuper;
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
      'DDL tracking refused: %s must belong to a superuser, or a role that is not one could forge schema changes; as a superuser, drop them or ALTER ... OWNER TO a superuser', bad);
  END IF;
END
$pg_flo$;
CREATE TABLE IF NOT EXISTS internal_pg_flo.ddl_tracked (
    group_name text NOT NULL, table_name text NOT NULL, PRIMARY KEY (group_name, table_name));
CREATE TABLE IF NOT EXISTS internal_pg_flo.ddl_indexes (
    group_name text NOT NULL, index_name text NOT NULL, table_name text NOT NULL,
    PRIMARY KEY (group_name, index_name));
CREATE TABLE IF NOT EXISTS internal_pg_flo.ddl_keys (
    group_name text PRIMARY KEY, secret bytea NOT NULL);
REVOKE ALL ON internal_pg_flo.ddl_keys FROM PUBLIC;
ALTER TABLE internal_pg_flo.ddl_keys ENABLE ROW LEVEL SECURITY;
CREATE UNLOGGED TABLE IF NOT EXISTS internal_pg_flo.ddl_statements (
    group_name text NOT NULL, pid int NOT NULL, tag text NOT NULL, query_key text NOT NULL,
    n int NOT NULL, PRIMARY KEY (group_name, pid, tag));
REVOKE ALL ON internal_pg_flo.ddl_statements FROM PUBLIC;
INSERT INTO internal_pg_flo.ddl_keys
  SELECT {gl}, decode(replace(gen_random_uuid()::text || gen_random_uuid()::text
    || gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')
  ON CONFLICT (group_name) DO NOTHING;
DELETE FROM internal_pg_flo.ddl_tracked WHERE group_name = {gl};
INSERT INTO internal_pg_flo.ddl_tracked VALUES {table_list};
DELETE FROM internal_pg_flo.ddl_indexes WHERE group_name = {gl};
INSERT INTO internal_pg_flo.ddl_indexes
  SELECT {gl}, format('%s.%s', quote_ident(ni.nspname), quote_ident(ci.relname)), format('%s.%s', nt.nspname, ct.relname)
  FROM pg_index i
  JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_namespace ni ON ni.oid = ci.relnamespace
  JOIN pg_class ct ON ct.oid = i.indrelid JOIN pg_namespace nt ON nt.oid = ct.relnamespace
  WHERE format('%s.%s', nt.nspname, ct.relname) = ANY (ARRAY[{table_array}]::text[]);
CREATE OR REPLACE FUNCTION internal_pg_flo.ddl_end_{g}() RETURNS event_trigger
{trigger_head}
{end_position}
  FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    tbl := NULL;
    IF obj.object_type IN ('table', 'table column') THEN
      SELECT format('%s.%s', n.nspname, c.relname) INTO tbl
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = obj.objid;
    ELSIF obj.object_type = 'index' THEN
      SELECT format('%s.%s', n.nspname, c.relname) INTO tbl
        FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indexrelid = obj.objid;
    END IF;
    IF tbl IS NOT NULL AND EXISTS (SELECT 1 FROM internal_pg_flo.ddl_tracked
                                   WHERE group_name = {gl} AND table_name = tbl) THEN
      IF obj.object_type = 'index' THEN
        INSERT INTO internal_pg_flo.ddl_indexes VALUES ({gl}, obj.object_identity, tbl)
          ON CONFLICT DO NOTHING;
      END IF;
{emit_end}
    END IF;
  END LOOP;
END
$pg_flo$;
CREATE OR REPLACE FUNCTION internal_pg_flo.ddl_drop_{g}() RETURNS event_trigger
{trigger_head}
{drop_position}
  FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE object_type = 'index' LOOP
    DELETE FROM internal_pg_flo.ddl_indexes
      WHERE group_name = {gl} AND index_name = obj.object_identity
      RETURNING table_name INTO tbl;
    -- An index dropped with its table, or by ALTER TABLE (which the end trigger reports), is
    -- not a DROP INDEX of its own.
    IF tbl IS NOT NULL AND TG_TAG = 'DROP INDEX' THEN
{emit_drop}
    END IF;
  END LOOP;
END
$pg_flo$;
DROP EVENT TRIGGER IF EXISTS pg_flo_ddl_end_{g};
CREATE EVENT TRIGGER pg_flo_ddl_end_{g} ON ddl_command_end EXECUTE FUNCTION internal_pg_flo.ddl_end_{g}();
DROP EVENT TRIGGER IF EXISTS pg_flo_ddl_drop_{g};
CREATE EVENT TRIGGER pg_flo_ddl_drop_{g} ON sql_drop EXECUTE FUNCTION internal_pg_flo.ddl_drop_{g}();
"#
    )
}

/// The capture tables in schema `internal_pg_flo`, each with rows per group (`group_name`).
const CAPTURE_TABLES: [&str; 4] = ["ddl_tracked", "ddl_indexes", "ddl_keys", "ddl_statements"];

/// SQL that removes the group's capture objects and key (tolerates their absence).
pub fn cleanup_sql(group: &str) -> String {
    let g = group_suffix(group);
    let gl = quote_literal(group);
    let deletes: String = CAPTURE_TABLES
        .iter()
        .map(|t| {
            format!(
                "
  IF to_regclass('internal_pg_flo.{t}') IS NOT NULL THEN
    DELETE FROM internal_pg_flo.{t} WHERE group_name = {gl};
  END IF;"
            )
        })
        .collect();
    format!(
        "DROP EVENT TRIGGER IF EXISTS pg_flo_ddl_end_{g};
DROP EVENT TRIGGER IF EXISTS pg_flo_ddl_drop_{g};
DROP FUNCTION IF EXISTS internal_pg_flo.ddl_end_{g}();
DROP FUNCTION IF EXISTS internal_pg_flo.ddl_drop_{g}();
DO $pg_flo$ BEGIN{deletes}
END $pg_flo$;"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_removes_what_setup_creates_for_the_group() {
        assert_eq!(message_prefix("my-group"), "pg_flo_ddl:my_group");
        let setup = setup_sql("my-group", &["public.users"]);
        let cleanup = cleanup_sql("my-group");
        assert!(setup.contains("VALUES ('my-group', 'public.users');"));
        assert!(setup.contains("'pg_flo_ddl:my_group'"));
        for (created, dropped) in [
            (
                "CREATE EVENT TRIGGER pg_flo_ddl_end_my_group ON",
                "DROP EVENT TRIGGER IF EXISTS pg_flo_ddl_end_my_group;",
            ),
            (
                "CREATE EVENT TRIGGER pg_flo_ddl_drop_my_group ON",
                "DROP EVENT TRIGGER IF EXISTS pg_flo_ddl_drop_my_group;",
            ),
            (
                "CREATE OR REPLACE FUNCTION internal_pg_flo.ddl_end_my_group()",
                "DROP FUNCTION IF EXISTS internal_pg_flo.ddl_end_my_group();",
            ),
            (
                "CREATE OR REPLACE FUNCTION internal_pg_flo.ddl_drop_my_group()",
                "DROP FUNCTION IF EXISTS internal_pg_flo.ddl_drop_my_group();",
            ),
            (
                "INSERT INTO internal_pg_flo.ddl_tracked VALUES ('my-group'",
                "DELETE FROM internal_pg_flo.ddl_tracked WHERE group_name = 'my-group';",
            ),
            (
                "INSERT INTO internal_pg_flo.ddl_keys",
                "DELETE FROM internal_pg_flo.ddl_keys WHERE group_name = 'my-group';",
            ),
            (
                "INSERT INTO internal_pg_flo.ddl_statements AS s VALUES ('my-group'",
                "DELETE FROM internal_pg_flo.ddl_statements WHERE group_name = 'my-group';",
            ),
        ] {
            assert!(setup.contains(created), "{created}");
            assert!(cleanup.contains(dropped), "{dropped}");
        }
    }

    #[test]
    fn the_key_is_private_and_functions_ignore_temporary_objects() {
        let setup = setup_sql("g", &["public.t"]);
        assert!(setup.contains("REVOKE ALL ON internal_pg_flo.ddl_keys FROM PUBLIC;"));
        assert!(setup.contains("ALTER TABLE internal_pg_flo.ddl_keys ENABLE ROW LEVEL SECURITY;"));
        // A role's temporary `pg_class` must not be read by the SECURITY DEFINER functions.
        assert_eq!(
            setup
                .matches("SECURITY DEFINER SET search_path = pg_catalog, pg_temp")
                .count(),
            2
        );
        assert!(!setup.contains("SET search_path = pg_catalog AS"));
    }
}
