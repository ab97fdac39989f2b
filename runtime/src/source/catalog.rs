//! Source-database catalog work done by the replicator before streaming: the server version
//! and `wal_level`, the group's tables, their keys, the publication and the slot.
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
//! Ownership: the publication's comment names the group that owns it and the slot of the
//! same name (`pg_flo_source::names`), so group `a_b` never uses or drops the slot of group
//! `a-b`.

use std::collections::HashMap;

use tokio_postgres::Client;

use pg_flo_source::names::{self, Ownership};

use crate::message::{KeyKind, ReplicationKey};
use crate::source::replication::{quote_ident, quote_literal};

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
async fn ancestors(
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

/// What [`ensure_publication`] found of an existing publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationState {
    /// Its comment (the owner mark, see `pg_flo_source::names::ownership`).
    pub comment: Option<String>,
    /// `publish_via_partition_root`.
    pub via_root: bool,
    /// Whether the connected role may alter it (owns it or is a member of its owner).
    pub may_alter: bool,
    /// Its member tables.
    pub members: Vec<TableName>,
    /// Members that are partition ancestors of one of the group's tables.
    pub ancestors_of_tables: Vec<TableName>,
}

/// The SQL that brings an existing publication in line with the group, or why it cannot be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationPlan {
    /// Statements to run, in order, in one transaction.
    pub statements: Vec<String>,
    /// `publish_via_partition_root` is turned on.
    pub via_root_set: bool,
    /// Tables added.
    pub added: usize,
    /// Ancestors removed.
    pub removed: Vec<TableName>,
    /// The group adopts an unmarked publication.
    pub adopted: bool,
}

/// The statements that create the group's publication for `tables`: published via the root,
/// marked as the group's.
pub fn create_publication_sql(group: &str, publication: &str, tables: &[TableName]) -> Vec<String> {
    vec![
        format!(
            "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
            quote_ident(publication),
            table_list(tables.iter())
        ),
        names::mark_owner_sql(publication, group),
    ]
}

fn table_list<'a>(tables: impl Iterator<Item = &'a TableName>) -> String {
    tables.map(|t| t.quoted()).collect::<Vec<_>>().join(", ")
}

/// Decides what to do with the existing publication `state` of `group`: refuse another group's
/// publication; adopt an unmarked one (write the mark); publish via the root; add the tables it
/// lacks; remove members that are ancestors of the group's tables but not the group's own
/// (PostgreSQL would publish the partition's rows under them). `partitioned`: some of `tables`
/// is a partitioned table (then publishing via the root is required, not only wanted).
pub fn plan_publication(
    group: &str,
    publication: &str,
    tables: &[TableName],
    partitioned: bool,
    state: &PublicationState,
) -> Result<PublicationPlan, CatalogError> {
    let adopted = match names::ownership(group, state.comment.as_deref()) {
        Ownership::Other(owner) => {
            return Err(CatalogError::OtherGroup(names::foreign_owner_message(
                group, &owner,
            )))
        }
        Ownership::Own => false,
        Ownership::Unmarked => true,
    };
    let qp = quote_ident(publication);
    let missing: Vec<&TableName> = tables
        .iter()
        .filter(|t| !state.members.contains(t))
        .collect();
    let mut removed: Vec<TableName> = state
        .ancestors_of_tables
        .iter()
        .filter(|a| state.members.contains(a) && !tables.contains(a))
        .cloned()
        .collect();
    removed.sort();
    removed.dedup();
    let mut statements = Vec::new();
    let changes = !state.via_root || !missing.is_empty() || !removed.is_empty() || adopted;
    if changes && !state.may_alter {
        let needed = !missing.is_empty() || !removed.is_empty() || (!state.via_root && partitioned);
        if needed {
            let mut fix = Vec::new();
            if !state.via_root {
                fix.push(format!(
                    "ALTER PUBLICATION {qp} SET (publish_via_partition_root = true)"
                ));
            }
            if !missing.is_empty() {
                fix.push(format!(
                    "ALTER PUBLICATION {qp} ADD TABLE {}",
                    table_list(missing.iter().copied())
                ));
            }
            if !removed.is_empty() {
                fix.push(format!(
                    "ALTER PUBLICATION {qp} DROP TABLE {}",
                    table_list(removed.iter())
                ));
            }
            return Err(CatalogError::Publication(format!(
                "publication {publication} needs changes that only its owner can make: run {} \
                 as its owner, or grant its owner role to the replicator's user",
                fix.join("; ")
            )));
        }
        // Only the mark (and publishing via the root, which changes nothing without
        // partitioned tables) are missing: go on without them.
        return Ok(PublicationPlan {
            statements,
            via_root_set: false,
            added: 0,
            removed: Vec::new(),
            adopted: false,
        });
    }
    if !state.via_root {
        statements.push(format!(
            "ALTER PUBLICATION {qp} SET (publish_via_partition_root = true)"
        ));
    }
    if !removed.is_empty() {
        statements.push(format!(
            "ALTER PUBLICATION {qp} DROP TABLE {}",
            table_list(removed.iter())
        ));
    }
    if !missing.is_empty() {
        statements.push(format!(
            "ALTER PUBLICATION {qp} ADD TABLE {}",
            table_list(missing.iter().copied())
        ));
    }
    if adopted {
        statements.push(names::mark_owner_sql(publication, group));
    }
    Ok(PublicationPlan {
        statements,
        via_root_set: !state.via_root,
        added: missing.len(),
        removed,
        adopted,
    })
}

/// Creates the group's publication for `tables` (published via the partition root, marked as
/// the group's), or brings an existing one in line ([`plan_publication`]). Runs in one
/// transaction under an advisory lock on the publication's name, so two groups that map to
/// the same name (`a-b`, `a_b`) starting together cannot both claim it.
pub async fn ensure_publication(
    client: &Client,
    group: &str,
    publication: &str,
    tables: &[TableName],
) -> Result<(), CatalogError> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(q("starting the publication transaction"))?;
    let result = ensure_publication_in_tx(client, group, publication, tables).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = client
        .batch_execute(end)
        .await
        .map_err(q("ending the publication transaction"));
    result?;
    ended
}

async fn ensure_publication_in_tx(
    client: &Client,
    group: &str,
    publication: &str,
    tables: &[TableName],
) -> Result<(), CatalogError> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('pg_flo publication ' || $1::text))",
            &[&publication],
        )
        .await
        .map_err(q("locking the publication's name"))?;
    let (schemas, names): (Vec<&str>, Vec<&str>) = tables
        .iter()
        .map(|t| (t.schema.as_str(), t.table.as_str()))
        .unzip();
    let partitioned = client
        .query_one(
            "SELECT count(*) > 0 FROM unnest($1::text[], $2::text[]) AS t(s, t)
             JOIN pg_namespace n ON n.nspname = t.s
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.t AND c.relkind = 'p'",
            &[&schemas, &names],
        )
        .await
        .map_err(q("looking for partitioned tables"))?
        .get::<_, bool>(0);
    let row = client
        .query_opt(
            "SELECT obj_description(p.oid, 'pg_publication'), p.pubviaroot,
                    pg_has_role(p.pubowner, 'USAGE')
             FROM pg_publication p WHERE p.pubname = $1",
            &[&publication],
        )
        .await
        .map_err(q("looking up the publication"))?;
    let Some(row) = row else {
        for sql in create_publication_sql(group, publication, tables) {
            client
                .batch_execute(&sql)
                .await
                .map_err(q("creating the publication"))?;
        }
        tracing::info!(
            publication,
            tables = tables.len(),
            "created publication (publish_via_partition_root)"
        );
        return Ok(());
    };
    let pair = |r: &tokio_postgres::Row| TableName {
        schema: r.get(0),
        table: r.get(1),
    };
    // pg_publication_rel holds the members (pg_publication_tables hides partitions whose root
    // is published via the root); pg_publication_tables adds FOR ALL TABLES / IN SCHEMA ones.
    let members = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_publication_rel pr
             JOIN pg_publication p ON p.oid = pr.prpubid
             JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE p.pubname = $1
             UNION
             SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(q("reading the publication's tables"))?
        .iter()
        .map(pair)
        .collect();
    let ancestors_of_tables = ancestors(client, tables)
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let state = PublicationState {
        comment: row.get(0),
        via_root: row.get(1),
        may_alter: row.get(2),
        members,
        ancestors_of_tables,
    };
    let plan = plan_publication(group, publication, tables, partitioned, &state)?;
    for sql in &plan.statements {
        client
            .batch_execute(sql)
            .await
            .map_err(q("altering the publication"))?;
    }
    if plan.via_root_set {
        tracing::info!(
            publication,
            "publication now publishes partitions via their root (publish_via_partition_root)"
        );
    }
    if plan.added > 0 {
        tracing::info!(
            publication,
            added = plan.added,
            "added tables to existing publication"
        );
    }
    for t in &plan.removed {
        tracing::warn!(publication, table = %t, "removed a partitioned table the group does not name from the publication: its partitions named by the group would be published under it");
    }
    if plan.adopted {
        tracing::info!(
            publication,
            group,
            "marked the existing publication as the group's"
        );
    } else if names::ownership(group, state.comment.as_deref()) == Ownership::Unmarked {
        tracing::warn!(publication, "the publication belongs to another role: it cannot be marked as the group's, so a group whose name differs only in '-' versus '_' would not be detected");
    }
    Ok(())
}

/// Who owns the group's publication and slot, read from the publication's comment; `None`
/// when the publication does not exist.
pub async fn publication_ownership(
    client: &Client,
    group: &str,
    publication: &str,
) -> Result<Option<Ownership>, CatalogError> {
    let row = client
        .query_opt(names::PUBLICATION_COMMENT_SQL, &[&publication])
        .await
        .map_err(q("reading the publication's owner mark"))?;
    Ok(row.map(|r| names::ownership(group, r.get::<_, Option<&str>>(0))))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableName {
        let (schema, table) = name.split_once('.').unwrap();
        TableName {
            schema: schema.into(),
            table: table.into(),
        }
    }

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

    #[test]
    fn a_new_publication_is_published_via_the_root_and_marked() {
        assert_eq!(
            create_publication_sql("a-b", "pg_flo_a_b_publication", &[t("public.c"), t("s.x")]),
            vec![
                "CREATE PUBLICATION \"pg_flo_a_b_publication\" FOR TABLE \"public\".\"c\", \"s\".\"x\" \
                 WITH (publish_via_partition_root = true)"
                    .to_owned(),
                "COMMENT ON PUBLICATION \"pg_flo_a_b_publication\" IS 'pg_flo group a-b'".to_owned(),
            ]
        );
    }

    fn state(
        comment: Option<&str>,
        via_root: bool,
        may_alter: bool,
        members: &[&str],
    ) -> PublicationState {
        PublicationState {
            comment: comment.map(str::to_owned),
            via_root,
            may_alter,
            members: members.iter().map(|m| t(m)).collect(),
            ancestors_of_tables: Vec::new(),
        }
    }

    #[test]
    fn existing_publications() {
        const P: &str = "pg_flo_a_b_publication";
        let tables = [t("public.c"), t("public.d")];
        let plan = |group: &str, partitioned: bool, st: &PublicationState| {
            plan_publication(group, P, &tables, partitioned, st)
        };
        // Ours, up to date: nothing to do.
        let st = state(
            Some("pg_flo group a-b"),
            true,
            true,
            &["public.c", "public.d"],
        );
        assert_eq!(
            plan("a-b", true, &st).unwrap().statements,
            Vec::<String>::new()
        );
        // Another group's: refused, naming both groups.
        let err = plan("a_b", true, &st).unwrap_err().to_string();
        assert!(err.contains("group \"a_b\" and group \"a-b\""), "{err}");
        assert!(err.contains("belong to group \"a-b\""), "{err}");
        // Of an earlier version: via the root, the missing table, and the mark.
        let st = state(None, false, true, &["public.c"]);
        let p = plan("a-b", true, &st).unwrap();
        assert_eq!(
            p.statements,
            vec![
                format!("ALTER PUBLICATION \"{P}\" SET (publish_via_partition_root = true)"),
                format!("ALTER PUBLICATION \"{P}\" ADD TABLE \"public\".\"d\""),
                format!("COMMENT ON PUBLICATION \"{P}\" IS 'pg_flo group a-b'"),
            ]
        );
        assert!(p.adopted && p.via_root_set);
        assert_eq!(p.added, 1);
        // A member that is an ancestor of one of the group's tables (the group names only a
        // partition now) is removed; other extra members stay.
        let mut st = state(
            Some("pg_flo group a-b"),
            true,
            true,
            &["public.c", "public.d", "public.root", "public.x"],
        );
        st.ancestors_of_tables = vec![t("public.root"), t("public.root")];
        let p = plan("a-b", true, &st).unwrap();
        assert_eq!(
            p.statements,
            vec![format!(
                "ALTER PUBLICATION \"{P}\" DROP TABLE \"public\".\"root\""
            )]
        );
        assert_eq!(p.removed, vec![t("public.root")]);
        // Not ours to alter: needed changes are refused with the statements to run...
        let st = state(None, false, false, &["public.c", "public.d"]);
        let err = plan("a-b", true, &st).unwrap_err().to_string();
        assert!(
            err.contains(&format!("run ALTER PUBLICATION \"{P}\" SET (publish_via_partition_root = true) as its owner")),
            "{err}"
        );
        let st = state(None, true, false, &["public.c"]);
        let err = plan("a-b", false, &st).unwrap_err().to_string();
        assert!(err.contains("ADD TABLE \"public\".\"d\""), "{err}");
        // ...while the mark alone (and via-root without partitioned tables) is skipped.
        let st = state(None, false, false, &["public.c", "public.d"]);
        let p = plan("a-b", false, &st).unwrap();
        assert!(p.statements.is_empty() && !p.adopted);
    }
}
