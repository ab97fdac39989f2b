//! DDL tracking (`--track-ddl`): schema changes of the group's tables travel in WAL order with
//! the data.
//!
//! Capture, per group (two groups never share objects): event triggers
//! `pg_flo_ddl_end_<group>` (`ddl_command_end`) and `pg_flo_ddl_drop_<group>` (`sql_drop`) run
//! functions in schema `internal_pg_flo` that, for a command on one of the group's tables
//! (listed in `internal_pg_flo.ddl_tracked`; its indexes in `internal_pg_flo.ddl_indexes`, so a
//! `DROP INDEX` can be tied to its table), call `pg_logical_emit_message(true, 'pg_flo_ddl:<group>',
//! <json>)`. The message is *transactional*: pgoutput delivers it inside the transaction that
//! ran the DDL, at its place in the WAL, so an INSERT using a column added just before arrives
//! after the ALTER. The replicator turns it into an [`Op::Ddl`] change whose SQL is the source
//! query reduced to its DDL statements about the group's tables.
//!
//! Everything is created idempotently at start and removed by `pg_flo replicator --cleanup`
//! (and by the operator when a group is deleted with `reclaimPolicy: delete`); the SQL of both
//! lives in `pg_flo_source::ddl`, shared with the operator.

use serde::Deserialize;

use crate::message::{Change, Column, KeyKind, Op, Relation, ReplicationKey, Value, DDL_COLUMNS};
use crate::postgres::catalog::TableName;
use crate::postgres::replication::quote_ident;

pub use pg_flo_source::ddl::{cleanup_sql, message_prefix, setup_sql};

/// The JSON the capture functions emit.
#[derive(Debug, Deserialize)]
struct Captured {
    event_type: String,
    object_type: String,
    object_identity: String,
    command_tag: String,
    table: String,
    query: String,
}

/// Why a captured DDL message could not be used.
#[derive(Debug, thiserror::Error)]
#[error("malformed DDL capture message")]
pub struct DdlMessageError(#[source] serde_json::Error);

/// A captured DDL command as a change: its relation and the change (relation index 0).
pub fn to_change(content: &[u8], lsn: u64) -> Result<(Relation, Change, String), DdlMessageError> {
    let c: Captured = serde_json::from_slice(content).map_err(DdlMessageError)?;
    let (schema, table) = match c.table.split_once('.') {
        Some((s, t)) => (s.to_owned(), t.to_owned()),
        None => ("public".to_owned(), c.table.clone()),
    };
    let command = reduce(&c.query, &table, &c.object_identity, &c.command_tag);
    let relation = Relation {
        oid: 0,
        schema,
        table,
        columns: DDL_COLUMNS
            .iter()
            .map(|name| Column {
                name: (*name).to_owned(),
                type_oid: 25,
                type_modifier: -1,
                identity: false,
            })
            .collect(),
        key: ReplicationKey {
            kind: KeyKind::Full,
            columns: Vec::new(),
        },
    };
    let text = |s: &str| Value::Text(s.as_bytes().to_vec());
    let change = Change {
        op: Op::Ddl,
        lsn,
        relation: 0,
        new: Some(vec![
            text(&c.event_type),
            text(&c.object_type),
            text(&c.object_identity),
            text(&command),
        ]),
        old: None,
        truncate: None,
    };
    Ok((relation, change, c.query))
}

/// Reduces a client query string (which may hold several statements) to the DDL statements
/// about `table` / `object`; the whole query when none can be singled out.
pub fn reduce(query: &str, table: &str, object: &str, tag: &str) -> String {
    let verb = tag.split_whitespace().next().unwrap_or("").to_uppercase();
    let object_name = object
        .rsplit('.')
        .next()
        .unwrap_or(object)
        .trim_matches('"');
    let mentions = |stmt: &str| {
        let lower = stmt.to_lowercase();
        lower.contains(&table.to_lowercase()) || lower.contains(&object_name.to_lowercase())
    };
    let statements = split_statements(query);
    let picked: Vec<&str> = statements
        .iter()
        .map(|s| s.trim())
        .filter(|s| {
            let first = s.split_whitespace().next().unwrap_or("").to_uppercase();
            first == verb && mentions(s)
        })
        .collect();
    if picked.is_empty() {
        query.trim().trim_end_matches(';').to_owned()
    } else {
        picked.join(";\n")
    }
}

/// Splits SQL on `;` outside quotes, dollar quotes and comments.
pub fn split_statements(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if i + 1 < b.len() && b[i + 1] == q {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'$' => {
                // $tag$ ... $tag$
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e) if b[e] == b'$' => {
                        let tag = &sql[i..=e];
                        match sql[e + 1..].find(tag) {
                            Some(p) => i = e + 1 + p + tag.len(),
                            None => i = b.len(),
                        }
                    }
                    _ => i += 1,
                }
            }
            b';' => {
                let stmt = sql[start..i].trim();
                if !stmt.is_empty() {
                    out.push(stmt.to_owned());
                }
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    let stmt = sql[start.min(sql.len())..].trim();
    if !stmt.is_empty() {
        out.push(stmt.to_owned());
    }
    out
}

/// Whether the DDL must run outside a transaction block.
pub fn is_concurrent(command: &str) -> bool {
    split_statements(command).iter().any(|s| {
        let upper = s.to_uppercase();
        let words: Vec<&str> = upper.split_whitespace().take(4).collect();
        (words.first() == Some(&"CREATE") || words.first() == Some(&"DROP"))
            && words.contains(&"CONCURRENTLY")
    })
}

/// `"schema"."table"` of a tracked table, for messages.
pub fn quoted(t: &TableName) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_outside_quotes_and_comments() {
        let sql = "ALTER TABLE t ADD c text DEFAULT 'a;b'; -- x;y\nINSERT INTO t VALUES ($$;$$); /* ; */ CREATE INDEX i ON t (c)";
        assert_eq!(
            split_statements(sql),
            vec![
                "ALTER TABLE t ADD c text DEFAULT 'a;b'".to_owned(),
                "-- x;y\nINSERT INTO t VALUES ($$;$$)".to_owned(),
                "/* ; */ CREATE INDEX i ON t (c)".to_owned(),
            ]
        );
        assert_eq!(split_statements("SELECT 1"), vec!["SELECT 1".to_owned()]);
        assert_eq!(
            split_statements("SELECT $a$x;y$a$;"),
            vec!["SELECT $a$x;y$a$".to_owned()]
        );
    }

    #[test]
    fn reduces_a_multi_statement_query_to_the_ddl_of_the_table() {
        let q = "ALTER TABLE users ADD COLUMN age int; INSERT INTO users VALUES (1, 2); ALTER TABLE other ADD x int;";
        assert_eq!(
            reduce(q, "users", "public.users", "ALTER TABLE"),
            "ALTER TABLE users ADD COLUMN age int"
        );
        assert_eq!(
            reduce(
                "DROP INDEX CONCURRENTLY users_age_idx",
                "users",
                "public.users_age_idx",
                "DROP INDEX"
            ),
            "DROP INDEX CONCURRENTLY users_age_idx"
        );
        // Nothing recognisable: the whole query.
        assert_eq!(
            reduce("do_it()", "users", "public.users", "ALTER TABLE"),
            "do_it()"
        );
    }

    #[test]
    fn concurrent_commands_are_recognised() {
        assert!(is_concurrent("CREATE INDEX CONCURRENTLY i ON t (c)"));
        assert!(is_concurrent("create unique index concurrently i on t (c)"));
        assert!(is_concurrent("DROP INDEX CONCURRENTLY i"));
        assert!(!is_concurrent("CREATE INDEX i ON t (c)"));
        assert!(!is_concurrent("ALTER TABLE t ADD concurrently int"));
    }

    #[test]
    fn captured_message_becomes_a_ddl_change() {
        let json = br#"{"event_type":"ddl_command_end","object_type":"table","object_identity":"public.users","command_tag":"ALTER TABLE","table":"public.users","query":"ALTER TABLE users ADD COLUMN x int; SELECT 1"}"#;
        let (rel, change, _) = to_change(json, 42).unwrap();
        assert_eq!(
            (rel.schema.as_str(), rel.table.as_str()),
            ("public", "users")
        );
        assert_eq!(change.op, Op::Ddl);
        assert_eq!(
            change.new.unwrap()[3],
            Value::Text(b"ALTER TABLE users ADD COLUMN x int".to_vec())
        );
        assert!(to_change(b"nope", 1).is_err());
    }
}
