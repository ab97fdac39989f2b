//! Source-database catalog work done by the replicator before streaming: `wal_level`, the
//! group's tables, their keys, the publication and the slot.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::message::{KeyKind, ReplicationKey};
use crate::postgres::replication::{quote_ident, quote_literal};

/// A catalog check or change failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("source database has wal_level={0}, but logical replication needs wal_level=logical: run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL")]
    WalLevel(String),
    #[error("table(s) not found in the source database: {0}")]
    MissingTables(String),
    #[error("no tables to replicate: schema {0:?} has no tables and --tables is empty")]
    NoTables(String),
    #[error("{0}")]
    ReplicaIdentity(String),
    #[error("replication slot {slot} exists but {problem}")]
    Slot { slot: String, problem: String },
    #[error("catalog query failed while {step}")]
    Query {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

fn q(step: &'static str) -> impl FnOnce(tokio_postgres::Error) -> CatalogError {
    move |source| CatalogError::Query { step, source }
}

/// A table name resolved against the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Refuses a source without `wal_level=logical`.
pub async fn check_wal_level(client: &Client) -> Result<(), CatalogError> {
    let row = client
        .query_one("SELECT current_setting('wal_level')", &[])
        .await
        .map_err(q("reading wal_level"))?;
    let level: String = row.get(0);
    if level != "logical" {
        return Err(CatalogError::WalLevel(level));
    }
    Ok(())
}

/// Resolves `--tables` (bare names in `schema`, or `schema.table`) or, when empty, every
/// ordinary or partitioned table of `schema`.
pub async fn resolve_tables(
    client: &Client,
    schema: &str,
    tables: &[String],
) -> Result<Vec<TableName>, CatalogError> {
    if tables.is_empty() {
        let rows = client
            .query(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                 ORDER BY c.relname",
                &[&schema],
            )
            .await
            .map_err(q("listing the schema's tables"))?;
        if rows.is_empty() {
            return Err(CatalogError::NoTables(schema.to_owned()));
        }
        return Ok(rows
            .iter()
            .map(|r| TableName {
                schema: r.get(0),
                table: r.get(1),
            })
            .collect());
    }
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for t in tables {
        let name = match t.split_once('.') {
            Some((s, t)) => TableName {
                schema: s.to_owned(),
                table: t.to_owned(),
            },
            None => TableName {
                schema: schema.to_owned(),
                table: t.clone(),
            },
        };
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[&name.schema, &name.table],
            )
            .await
            .map_err(q("looking up a table"))?
            .is_some();
        if exists {
            if !out.contains(&name) {
                out.push(name);
            }
        } else {
            missing.push(name.to_string());
        }
    }
    if !missing.is_empty() {
        return Err(CatalogError::MissingTables(missing.join(", ")));
    }
    Ok(out)
}

/// The key each table's changes carry, chosen to match what pgoutput sends as the old key:
/// identity `USING INDEX` -> that index (UNIQUE); `DEFAULT` -> the primary key; `FULL` -> the
/// primary key if there is one (the old row is complete), else FULL. A table whose updates and
/// deletes could not be replicated is refused with the ways to fix it.
pub async fn table_keys(
    client: &Client,
    tables: &[TableName],
) -> Result<HashMap<TableName, ReplicationKey>, CatalogError> {
    let mut keys = HashMap::new();
    let mut problems = Vec::new();
    for t in tables {
        let row = client
            .query_one(
                "SELECT c.relreplident::text,
                   coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                     FROM pg_index i CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                     WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
                   coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                     FROM pg_index i CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                     WHERE i.indrelid = c.oid AND i.indisreplident), '{}')
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&t.schema, &t.table],
            )
            .await
            .map_err(q("reading table keys"))?;
        let ident: String = row.get(0);
        let pk: Vec<String> = row.get(1);
        let ident_index: Vec<String> = row.get(2);
        let key = match ident.as_str() {
            "i" if !ident_index.is_empty() => Some(ReplicationKey {
                kind: KeyKind::Unique,
                columns: ident_index,
            }),
            "d" if !pk.is_empty() => Some(ReplicationKey {
                kind: KeyKind::PrimaryKey,
                columns: pk,
            }),
            "f" if !pk.is_empty() => Some(ReplicationKey {
                kind: KeyKind::PrimaryKey,
                columns: pk,
            }),
            "f" => Some(ReplicationKey {
                kind: KeyKind::Full,
                columns: Vec::new(),
            }),
            _ => None,
        };
        match key {
            Some(k) => {
                keys.insert(t.clone(), k);
            }
            None => problems.push(replica_identity_problem(t, &ident)),
        }
    }
    if !problems.is_empty() {
        return Err(CatalogError::ReplicaIdentity(problems.join("\n")));
    }
    Ok(keys)
}

fn replica_identity_problem(t: &TableName, ident: &str) -> String {
    let why = if ident == "n" {
        "has REPLICA IDENTITY NOTHING".to_owned()
    } else {
        "has no primary key and REPLICA IDENTITY DEFAULT".to_owned()
    };
    let q = t.quoted();
    format!(
        "table {t} {why}, so its updates and deletes cannot be replicated; fix it in one of three ways: \
         (1) add a primary key: ALTER TABLE {q} ADD PRIMARY KEY (<columns>); \
         (2) use a unique index on NOT NULL columns: ALTER TABLE {q} REPLICA IDENTITY USING INDEX <index>; \
         (3) log whole old rows: ALTER TABLE {q} REPLICA IDENTITY FULL"
    )
}

/// Creates the publication for `tables`, or adds the tables it lacks to an existing one.
pub async fn ensure_publication(
    client: &Client,
    publication: &str,
    tables: &[TableName],
) -> Result<(), CatalogError> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(q("looking up the publication"))?
        .is_some();
    let list = |ts: &[&TableName]| ts.iter().map(|t| t.quoted()).collect::<Vec<_>>().join(", ");
    if !exists {
        let all: Vec<&TableName> = tables.iter().collect();
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_ident(publication),
            list(&all)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(q("creating the publication"))?;
        tracing::info!(publication, tables = all.len(), "created publication");
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(q("reading the publication's tables"))?;
    let have: Vec<TableName> = rows
        .iter()
        .map(|r| TableName {
            schema: r.get(0),
            table: r.get(1),
        })
        .collect();
    let missing: Vec<&TableName> = tables.iter().filter(|t| !have.contains(t)).collect();
    if !missing.is_empty() {
        let sql = format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            quote_ident(publication),
            list(&missing)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(q("adding tables to the publication"))?;
        tracing::info!(
            publication,
            added = missing.len(),
            "added tables to existing publication"
        );
    }
    Ok(())
}

/// The slot's state, if it exists.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub confirmed_flush: Option<crate::lsn::Lsn>,
    pub active: bool,
}

/// Looks the slot up and checks it is a pgoutput slot of this database.
pub async fn find_slot(client: &Client, slot: &str) -> Result<Option<SlotInfo>, CatalogError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, current_database()::text, active,
                    confirmed_flush_lsn::text
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(q("looking up the replication slot"))?;
    let Some(row) = row else { return Ok(None) };
    let plugin: Option<String> = row.get(0);
    let database: Option<String> = row.get(1);
    let current: String = row.get(2);
    if plugin.as_deref() != Some("pgoutput") {
        return Err(CatalogError::Slot {
            slot: slot.to_owned(),
            problem: format!(
                "uses plugin {:?}, not pgoutput: drop it with SELECT pg_drop_replication_slot({})",
                plugin.unwrap_or_default(),
                quote_literal(slot)
            ),
        });
    }
    if database.as_deref() != Some(current.as_str()) {
        return Err(CatalogError::Slot {
            slot: slot.to_owned(),
            problem: format!(
                "belongs to database {:?}, not {current:?}; use another --group",
                database.unwrap_or_default()
            ),
        });
    }
    let lsn: Option<String> = row.get(4);
    Ok(Some(SlotInfo {
        active: row.get(3),
        confirmed_flush: lsn.and_then(|s| s.parse().ok()),
    }))
}

/// Bytes of WAL between the server's current position and `lsn`.
pub async fn lag_bytes(client: &Client, lsn: crate::lsn::Lsn) -> Result<i64, CatalogError> {
    let row = client
        .query_one(
            "SELECT (pg_current_wal_lsn() - $1::text::pg_lsn)::bigint",
            &[&lsn.to_string()],
        )
        .await
        .map_err(q("measuring replication lag"))?;
    Ok(row.get(0))
}
