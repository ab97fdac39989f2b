//! SQL of a group's DDL capture objects (`pg_flo replicator --track-ddl`): event triggers
//! `pg_flo_ddl_end_<group>` (`ddl_command_end`) and `pg_flo_ddl_drop_<group>` (`sql_drop`)
//! whose functions in schema `internal_pg_flo` emit a transactional logical message
//! ([`message_prefix`]) for each command on one of the group's tables (listed in
//! `internal_pg_flo.ddl_tracked`, their indexes in `internal_pg_flo.ddl_indexes`).
//!
//! The runtime runs [`setup_sql`] at start and decodes the messages (`pg_flo::ddl`); the
//! runtime's `--cleanup` and the operator's group deletion run [`cleanup_sql`].

use std::fmt::Display;

use crate::sql::quote_literal;

/// Prefix of the group's logical messages.
pub fn message_prefix(group: &str) -> String {
    format!("pg_flo_ddl:{}", group_suffix(group))
}

fn group_suffix(group: &str) -> String {
    group.replace('-', "_").to_lowercase()
}

/// SQL that creates or refreshes the group's capture objects for `tables` (`schema.table`). Run as one simple
/// query (one transaction); an advisory lock serialises groups starting at the same moment
/// (`CREATE SCHEMA IF NOT EXISTS` is not safe against a concurrent twin).
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
    format!(
        r#"SELECT pg_advisory_xact_lock(hashtext('pg_flo_ddl_setup'));
CREATE SCHEMA IF NOT EXISTS internal_pg_flo;
CREATE TABLE IF NOT EXISTS internal_pg_flo.ddl_tracked (
    group_name text NOT NULL, table_name text NOT NULL, PRIMARY KEY (group_name, table_name));
CREATE TABLE IF NOT EXISTS internal_pg_flo.ddl_indexes (
    group_name text NOT NULL, index_name text NOT NULL, table_name text NOT NULL,
    PRIMARY KEY (group_name, index_name));
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $pg_flo$
DECLARE
  obj record;
  tbl text;
BEGIN
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
      PERFORM pg_logical_emit_message(true, {prefix}, json_build_object(
        'event_type', 'ddl_command_end', 'object_type', obj.object_type,
        'object_identity', obj.object_identity, 'command_tag', obj.command_tag,
        'table', tbl, 'query', current_query())::text);
    END IF;
  END LOOP;
END
$pg_flo$;
CREATE OR REPLACE FUNCTION internal_pg_flo.ddl_drop_{g}() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $pg_flo$
DECLARE
  obj record;
  tbl text;
BEGIN
  FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE object_type = 'index' LOOP
    DELETE FROM internal_pg_flo.ddl_indexes
      WHERE group_name = {gl} AND index_name = obj.object_identity
      RETURNING table_name INTO tbl;
    IF tbl IS NOT NULL THEN
      PERFORM pg_logical_emit_message(true, {prefix}, json_build_object(
        'event_type', 'sql_drop', 'object_type', obj.object_type,
        'object_identity', obj.object_identity, 'command_tag', 'DROP INDEX',
        'table', tbl, 'query', current_query())::text);
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

/// SQL that removes the group's capture objects (tolerates their absence).
pub fn cleanup_sql(group: &str) -> String {
    let g = group_suffix(group);
    let gl = quote_literal(group);
    format!(
        "DROP EVENT TRIGGER IF EXISTS pg_flo_ddl_end_{g};
DROP EVENT TRIGGER IF EXISTS pg_flo_ddl_drop_{g};
DROP FUNCTION IF EXISTS internal_pg_flo.ddl_end_{g}();
DROP FUNCTION IF EXISTS internal_pg_flo.ddl_drop_{g}();
DO $pg_flo$ BEGIN
  IF to_regclass('internal_pg_flo.ddl_tracked') IS NOT NULL THEN
    DELETE FROM internal_pg_flo.ddl_tracked WHERE group_name = {gl};
  END IF;
  IF to_regclass('internal_pg_flo.ddl_indexes') IS NOT NULL THEN
    DELETE FROM internal_pg_flo.ddl_indexes WHERE group_name = {gl};
  END IF;
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
        ] {
            assert!(setup.contains(created), "{created}");
            assert!(cleanup.contains(dropped), "{dropped}");
        }
    }
}
