//! Source-database catalog work done by the replicator before streaming: the server version
//! and `wal_level`, the group's tables, their keys, the partitions' roots and the slot. The
//! publication is `source::publication`.
//!
//! Partitioned tables: the group's publication is created (or altered, for publications of
//! earlier versions) with `publish_via_partition_root = true`, so PostgreSQL publishes a
//! partition's changes under the partitioned table the group names, the same name the copy
//! uses, and rules, routing and keys see one table whatever partition a row lives in;
//! partitions created or attached later are covered. A partition named on its own in
//! `--tables` is published under its own name. Naming a partitioned table and one of its
//! partitions together is refused ([`resolve_tables`]), and the publication never keeps an
//! ancestor of one of the group's tables that the group does not name (PostgreSQL would
//! publish the partition's rows under that ancestor). WAL written before the publication
//! published via the root (an upgrade) still names the partitions: [`partition_roots`] maps
//! them to their root.
//!
use std::collections::HashMap;

use tokio_postgres::Client;

use crate::message::{KeyKind, ReplicationKey};
use pg_flo_source::sql::{quote_ident, quote_literal};

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
    #[error("{0}")]
    ServerVersion(String),
    #[error("{0}")]
    NestedPartitions(String),
    #[error("{0}")]
    OtherGroup(String),
    #[error("{0}")]
    Publication(String),
    #[error("replication slot {slot} exists but {problem}")]
    Slot { slot: String, problem: String },
    #[error("catalog query failed while {step}")]
    Query {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

pub(super) fn q(step: &'static str) -> impl FnOnce(tokio_postgres::Error) -> CatalogError {
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

/// The oldest source PostgreSQL version (`server_version_num`): 13 brings
/// `publish_via_partition_root` (partitioned tables), `pg_replication_slots.wal_status`.
pub const MIN_SOURCE_VERSION: u32 = 130_000;

/// The oldest source version for `--track-ddl`: 14 brings logical messages in pgoutput
/// (`messages 'true'`).
pub const MIN_TRACK_DDL_VERSION: u32 = 140_000;

/// Why a source of version `num` (`server_version_num`) cannot serve this group, if it cannot.
pub fn version_problem(num: u32, track_ddl: bool) -> Option<String> {
    let show = |n: u32| format!("{}.{}", n / 10_000, n % 10_000);
    if num < MIN_SOURCE_VERSION {
        return Some(format!(
            "the source runs PostgreSQL {}, but pg_flo needs PostgreSQL {} or later \
             (publish_via_partition_root, pgoutput protocol 1): upgrade the source",
            show(num),
            MIN_SOURCE_VERSION / 10_000
        ));
    }
    if track_ddl && num < MIN_TRACK_DDL_VERSION {
        return Some(format!(
            "the source runs PostgreSQL {}, but --track-ddl needs PostgreSQL {} or later \
             (logical messages in pgoutput): upgrade the source or run without --track-ddl",
            show(num),
            MIN_TRACK_DDL_VERSION / 10_000
        ));
    }
    None
}

/// Refuses a source older than this version supports ([`version_problem`]); returns its
/// `server_version_num`.
pub async fn check_server_version(client: &Client, track_ddl: bool) -> Result<u32, CatalogError> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(q("reading the server version"))?;
    let num: i32 = row.get(0);
    let num = u32::try_from(num).unwrap_or(0);
    match version_problem(num, track_ddl) {
        Some(p) => Err(CatalogError::ServerVersion(p)),
        None => Ok(num),
    }
}

/// Resolves `--tables` (bare names in `schema`, or `schema.table`) or, when empty, every
/// ordinary or partitioned table of `schema` that is not a partition of another table of
/// `schema` (a partitioned table stands for its partitions). A named table that is a
/// partition of another named table is refused ([`nested_partitions`]).
pub async fn resolve_tables(
    client: &Client,
    schema: &str,
    tables: &[String],
) -> Result<Vec<TableName>, CatalogError> {
    if tables.is_empty() {
        let rows = client
            .query(
                "SELECT n.nspname::text, c.relname::text
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
                   AND NOT EXISTS (
                     SELECT 1 FROM pg_partition_ancestors(c.oid) a
                     JOIN pg_class ac ON ac.oid = a.relid
                     WHERE a.relid <> c.oid AND ac.relnamespace = c.relnamespace)
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
    let ancestors = ancestors(client, &out).await?;
    let problems = nested_partitions(&out, &ancestors);
    if !problems.is_empty() {
        return Err(CatalogError::NestedPartitions(problems.join("\n")));
    }
    Ok(out)
}

/// `(table, ancestor)` for every partition ancestor of each of `tables` (partitioned tables
/// that contain it, at any level).
pub(super) async fn ancestors(
    client: &Client,
    tables: &[TableName],
) -> Result<Vec<(TableName, TableName)>, CatalogError> {
    table_pairs(
        client,
        tables,
        "CROSS JOIN LATERAL pg_partition_ancestors(c.oid) a
         JOIN pg_class oc ON oc.oid = a.relid",
        "reading the partition ancestors of the tables",
    )
    .await
}

/// `(table, other)` for each of `tables` and every other relation `join` relates it to: `join`
/// joins `pg_class c` (the table) to `pg_class oc` (the other).
async fn table_pairs(
    client: &Client,
    tables: &[TableName],
    join: &str,
    step: &'static str,
) -> Result<Vec<(TableName, TableName)>, CatalogError> {
    let (schemas, names): (Vec<&str>, Vec<&str>) = tables
        .iter()
        .map(|t| (t.schema.as_str(), t.table.as_str()))
        .unzip();
    let sql = format!(
        "SELECT t.s, t.t, onsp.nspname::text, oc.relname::text
         FROM unnest($1::text[], $2::text[]) AS t(s, t)
         JOIN pg_namespace n ON n.nspname = t.s
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.t
         {join}
         JOIN pg_namespace onsp ON onsp.oid = oc.relnamespace
         WHERE oc.oid <> c.oid"
    );
    let rows = client
        .query(&sql, &[&schemas, &names])
        .await
        .map_err(q(step))?;
    let name = |r: &tokio_postgres::Row, i: usize| TableName {
        schema: r.get(i),
        table: r.get(i + 1),
    };
    Ok(rows.iter().map(|r| (name(r, 0), name(r, 2))).collect())
}

/// One problem per table of `tables` that is a partition of another table of `tables`
/// (`ancestors`: `(table, ancestor)` pairs): PostgreSQL publishes its rows under the ancestor,
/// so they would be copied twice and the partition's rules and routes would never apply.
pub fn nested_partitions(
    tables: &[TableName],
    ancestors: &[(TableName, TableName)],
) -> Vec<String> {
    let mut problems: Vec<String> = ancestors
        .iter()
        .filter(|(t, a)| t != a && tables.contains(t) && tables.contains(a))
        .map(|(t, a)| {
            format!(
                "table {t} is a partition of {a}, which is listed too: its changes are published \
                 under {a} (publish_via_partition_root), so list only {a} (all its partitions) \
                 or only {t}"
            )
        })
        .collect();
    problems.sort();
    problems.dedup();
    problems
}

/// For each partitioned table of `tables`, every partition under it (at any level) mapped to
/// it. Changes a publication sent under a partition's own name (WAL written before it
/// published via the root) are renamed to their root with this map.
pub async fn partition_roots(
    client: &Client,
    tables: &[TableName],
) -> Result<HashMap<TableName, TableName>, CatalogError> {
    let pairs = table_pairs(
        client,
        tables,
        "CROSS JOIN LATERAL pg_partition_tree(c.oid) pt
         JOIN pg_class oc ON oc.oid = pt.relid AND c.relkind = 'p'",
        "reading the partitions of the tables",
    )
    .await?;
    Ok(pairs
        .into_iter()
        .map(|(root, partition)| (partition, root))
        .collect())
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
                     WHERE i.indrelid = c.oid AND i.indisreplident), '{}'),
                   c.relkind = 'p'
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&t.schema, &t.table],
            )
            .await
            .map_err(q("reading table keys"))?;
        let ident: String = row.get(0);
        let pk: Vec<String> = row.get(1);
        let ident_index: Vec<String> = row.get(2);
        let partitioned: bool = row.get(3);
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
            None => problems.push(replica_identity_problem(t, &ident, partitioned)),
        }
    }
    if !problems.is_empty() {
        return Err(CatalogError::ReplicaIdentity(problems.join("\n")));
    }
    Ok(keys)
}

fn replica_identity_problem(t: &TableName, ident: &str, partitioned: bool) -> String {
    let why = if ident == "n" {
        "has REPLICA IDENTITY NOTHING".to_owned()
    } else {
        "has no primary key and REPLICA IDENTITY DEFAULT".to_owned()
    };
    let q = t.quoted();
    if partitioned {
        // Partitions inherit a primary key, but not a replica identity.
        return format!(
            "partitioned table {t} {why}, so its updates and deletes cannot be replicated; fix it \
             in one of two ways: (1) add a primary key (its partitions get it too): ALTER TABLE \
             {q} ADD PRIMARY KEY (<columns, including the partition key>); (2) log whole old \
             rows: ALTER TABLE {q} REPLICA IDENTITY FULL, and the same on each of its \
             partitions (partitions do not inherit it)"
        );
    }
    format!(
        "table {t} {why}, so its updates and deletes cannot be replicated; fix it in one of three ways: \
         (1) add a primary key: ALTER TABLE {q} ADD PRIMARY KEY (<columns>); \
         (2) use a unique index on NOT NULL columns: ALTER TABLE {q} REPLICA IDENTITY USING INDEX <index>; \
         (3) log whole old rows: ALTER TABLE {q} REPLICA IDENTITY FULL"
    )
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

/// The replicator's lag and the health of its slot, as one reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotReading {
    /// WAL between the server's current position and the position the replicator confirmed.
    pub lag_bytes: i64,
    /// WAL between the server's current position and the slot's `restart_lsn` (what the slot
    /// keeps from being recycled); `None` without the slot.
    pub retained_bytes: Option<i64>,
    /// `pg_replication_slots.wal_status` (PostgreSQL 13+).
    pub wal_status: Option<String>,
    /// `pg_replication_slots.safe_wal_size`; `None` when unlimited.
    pub safe_wal_size: Option<i64>,
}

/// Reads [`SlotReading`] for `slot`, with `confirmed` the replicator's confirmed position
/// (PostgreSQL 13+, as pg_flo requires).
pub async fn slot_reading(
    client: &Client,
    slot: &str,
    confirmed: crate::lsn::Lsn,
) -> Result<SlotReading, CatalogError> {
    let row = client
        .query_one(
            "SELECT (pg_current_wal_lsn() - $1::text::pg_lsn)::bigint, \
                    (SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots \
                      WHERE slot_name = $2), \
                    (SELECT wal_status FROM pg_replication_slots WHERE slot_name = $2), \
                    (SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = $2)",
            &[&confirmed.to_string(), &slot],
        )
        .await
        .map_err(q("reading the slot's lag and retained WAL"))?;
    Ok(SlotReading {
        lag_bytes: row.get(0),
        retained_bytes: row.get(1),
        wal_status: row.get(2),
        safe_wal_size: row.get(3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::table as t;

    #[test]
    fn supported_versions() {
        for (num, track_ddl, problem) in [
            (170_002, true, None),
            (150_004, true, None),
            (140_000, true, None),
            (130_016, false, None),
            (
                130_016,
                true,
                Some("--track-ddl needs PostgreSQL 14 or later"),
            ),
            (
                120_020,
                false,
                Some("the source runs PostgreSQL 12.20, but pg_flo needs PostgreSQL 13 or later"),
            ),
            (90_624, false, Some("PostgreSQL 9.624")),
            (0, false, Some("needs PostgreSQL 13")),
        ] {
            let got = version_problem(num, track_ddl);
            match (problem, &got) {
                (None, None) => {}
                (Some(needle), Some(p)) => assert!(p.contains(needle), "{num}: {p}"),
                _ => panic!("{num} {track_ddl}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_partition_next_to_its_root_is_refused() {
        let tables = [t("public.c"), t("public.c_2024"), t("public.other")];
        let ancestors = [
            (t("public.c_2024"), t("public.c")),
            (t("public.c_2024_q1"), t("public.c_2024")),
            (t("public.c_2024_q1"), t("public.c")),
            (t("public.other"), t("archive.other_root")),
        ];
        assert_eq!(
            nested_partitions(&tables, &ancestors),
            vec![
                "table public.c_2024 is a partition of public.c, which is listed too: its changes \
                  are published under public.c (publish_via_partition_root), so list only \
                  public.c (all its partitions) or only public.c_2024"
                    .to_owned()
            ]
        );
        // A partition alone, or under a root the group does not name, is fine.
        assert!(nested_partitions(&[t("public.c_2024"), t("public.other")], &ancestors).is_empty());
        // A deeper level is caught too.
        let problems = nested_partitions(&[t("public.c"), t("public.c_2024_q1")], &ancestors);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("table public.c_2024_q1 is a partition of public.c,"));
    }
}
