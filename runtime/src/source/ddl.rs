//! DDL capture (`--track-ddl`): schema changes of the group's tables travel in WAL order with
//! the data. Their replay in the target is `sink::postgres::ddl`.
//!
//! Capture, per group (two groups never share objects; SQL in `pg_flo_source::ddl`): event
//! triggers in the source call `pg_logical_emit_message(true, 'pg_flo_ddl:<group>', ...)` for
//! each command on one of the group's tables. The message is *transactional*: pgoutput delivers
//! it inside the transaction that ran the DDL, at its place in the WAL, so an INSERT using a
//! column added just before arrives after the ALTER.
//!
//! Trust ([`Capture::accept`]): any role may emit a logical message with the group's prefix, so
//! a message is accepted only when its HMAC-SHA256 verifies with the group's key (which only
//! superusers can read) and it names the transaction it arrives in. Anything else is dropped
//! with a warning (never its content) and counted in `pg_flo_errors_total{kind="ddl_forged"}`.
//!
//! Replay ([`isolate`]): the message carries the client's whole query string, which may hold
//! several statements (a migration file sent as one query), DML, `DO` blocks or `CALL`s. Only
//! the one statement that ran the command is replayed: the source says which (the `n`-th
//! statement with its command tag in the query, counted by the capture functions), and
//! that statement must carry the same tag and name the table or object. A `DROP INDEX` is
//! replayed as `DROP INDEX IF EXISTS <the dropped index>`, never the other indexes of its
//! statement. When the statement cannot be told (the command ran inside a function, `DO` block
//! or procedure; the query rolls back to a savepoint; the statement does not match), the change
//! travels *refused* (no `ddl_command`, a `ddl_refused` reason) and the postgres sink stops at
//! it with what to do, instead of running anything else of the query. How a query string is
//! cut into statements and tokens is `crate::statement`.
//!
//! Everything is created idempotently at start (replacing the functions of earlier versions)
//! and removed by `pg_flo replicator --cleanup` (and by the operator when a group is deleted
//! with `reclaimPolicy: delete`).

use std::fmt;

use ring::hmac;
use serde::Deserialize;
use tokio_postgres::Client;

use crate::message::{
    Change, Column, KeyKind, Op, Relation, ReplicationKey, Value, DDL_COLUMNS, DDL_REFUSED_COLUMN,
};
use crate::source::catalog::{CatalogError, TableName};
use crate::statement::{split_statements, Statement, Token};

pub use pg_flo_source::ddl::{cleanup_sql, message_prefix, setup_sql};
use pg_flo_source::ddl::{KEY_SQL, MAC_HEX_LEN};

/// The group's DDL capture, as the replicator sees it: the message prefix, the signing key and
/// the tracked tables.
pub struct Capture {
    prefix: String,
    key: hmac::Key,
    tables: Vec<TableName>,
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture")
            .field("prefix", &self.prefix)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

/// The JSON the capture functions emit (after the MAC).
#[derive(Debug, Deserialize)]
struct Captured {
    event_type: String,
    object_type: String,
    object_identity: String,
    /// The statement's command tag (`TG_TAG`).
    tag: String,
    table: String,
    query: String,
    /// Which statement with `tag` in `query` (1-based), when the start trigger counted it.
    stmt: Option<u32>,
    /// Run inside a function, `DO` block or procedure.
    nested: bool,
    /// `txid_current()` of the transaction that emitted it.
    xid: String,
    /// When the server received the query (`statement_timestamp()`): tells two runs of the
    /// same query text apart.
    #[serde(default)]
    at: String,
}

/// Why a message with the group's prefix was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// No valid MAC (anyone can emit such a message), or a genuine one of another transaction.
    Forged(&'static str),
    /// Genuine but unreadable (a capture function of another version).
    Malformed(&'static str),
}

/// A DDL change accepted from the source.
#[derive(Debug)]
pub struct Accepted {
    /// The tracked table it changes.
    pub table: TableName,
    /// Its relation (relation index 0 in `change`).
    pub relation: Relation,
    pub change: Change,
    /// Identifies what is replayed, so that several commands of one statement replay it once
    /// per transaction.
    pub key: String,
    /// Why it cannot be replayed, if so.
    pub refused: Option<Refusal>,
}

impl Capture {
    /// Creates or refreshes the group's capture objects (replacing the functions of earlier
    /// versions) and reads the group's key. Needs a superuser.
    pub async fn setup(
        client: &Client,
        group: &str,
        tables: &[TableName],
    ) -> Result<Capture, CatalogError> {
        client
            .batch_execute(&setup_sql(group, tables))
            .await
            .map_err(|source| CatalogError::Query {
                step: "creating the DDL capture triggers (they need a superuser)",
                source,
            })?;
        let step = "reading the group's DDL signing key from internal_pg_flo.ddl_keys";
        let secret: Vec<u8> = client
            .query_one(KEY_SQL, &[&group])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|source| CatalogError::Query { step, source })?;
        Ok(Capture::new(group, &secret, tables.to_vec()))
    }

    /// A capture with a known key (tests, and [`Capture::setup`]).
    pub fn new(group: &str, secret: &[u8], tables: Vec<TableName>) -> Capture {
        Capture {
            prefix: message_prefix(group),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            tables,
        }
    }

    /// The prefix of the group's messages.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Checks a message with the group's prefix, read inside transaction `xid` at `lsn`, and
    /// turns it into a DDL change.
    pub fn accept(&self, content: &[u8], xid: u32, lsn: u64) -> Result<Accepted, Rejected> {
        let (mac, json) = content
            .split_at_checked(MAC_HEX_LEN)
            .ok_or(Rejected::Forged("too short to carry a MAC"))?;
        let mac = decode_hex(mac).ok_or(Rejected::Forged("no MAC"))?;
        hmac::verify(&self.key, json, &mac)
            .map_err(|_| Rejected::Forged("the MAC does not verify"))?;
        let c: Captured = serde_json::from_slice(json)
            .map_err(|_| Rejected::Malformed("the JSON does not parse"))?;
        let emitted_in = c
            .xid
            .parse::<u64>()
            .map_err(|_| Rejected::Malformed("no transaction id"))?;
        // pgoutput's Begin carries the 32-bit xid, txid_current() has the epoch above it.
        if emitted_in & u64::from(u32::MAX) != u64::from(xid) {
            return Err(Rejected::Forged(
                "a genuine message of another transaction, emitted again",
            ));
        }
        let table = self
            .tables
            .iter()
            .find(|t| t.to_string() == c.table)
            .cloned()
            .ok_or(Rejected::Malformed("not about one of the group's tables"))?;
        let position = StatementRef {
            tag: &c.tag,
            stmt: c.stmt,
            nested: c.nested,
        };
        let (command, refused) = match isolate(
            &c.query,
            position,
            &table,
            &c.object_identity,
            &c.event_type,
        ) {
            Ok(command) => (Some(command), None),
            Err(r) => (None, Some(r)),
        };
        let key = match &command {
            Some(cmd) => format!(
                "{}\u{0}{}\u{0}{:?}\u{0}{}\u{0}{cmd}",
                c.at, c.tag, c.stmt, c.query
            ),
            None => format!("refused\u{0}{lsn}"),
        };
        let mut names: Vec<&str> = DDL_COLUMNS.to_vec();
        let text = |s: &str| Value::Text(s.as_bytes().to_vec().into());
        let mut values = vec![
            text(&c.event_type),
            text(&c.object_type),
            text(&c.object_identity),
            command.as_deref().map_or(Value::Null, text),
        ];
        if let Some(r) = &refused {
            names.push(DDL_REFUSED_COLUMN);
            values.push(text(&r.to_string()));
        }
        let relation = Relation {
            oid: 0,
            schema: table.schema.clone(),
            table: table.table.clone(),
            columns: names
                .iter()
                .map(|name| Column {
                    name: (*name).to_owned(),
                    type_oid: pg_flo_source::oid::TEXT,
                    type_modifier: -1,
                    identity: false,
                })
                .collect(),
            key: ReplicationKey {
                kind: KeyKind::Full,
                columns: Vec::new(),
            },
        };
        let change = Change {
            op: Op::Ddl,
            lsn,
            relation: 0,
            new: Some(values),
            old: None,
            truncate: None,
        };
        Ok(Accepted {
            table,
            relation,
            change,
            key,
            refused,
        })
    }
}

fn decode_hex(s: &[u8]) -> Option<Vec<u8>> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.chunks(2)
        .map(|p| match p {
            [h, l] => Some(nibble(*h)? << 4 | nibble(*l)?),
            _ => None,
        })
        .collect()
}

/// Where in its query a captured command ran, as the source reports it.
#[derive(Debug, Clone, Copy)]
pub struct StatementRef<'a> {
    /// The statement's command tag.
    pub tag: &'a str,
    /// The statement is the `stmt`-th with `tag` in the query (1-based).
    pub stmt: Option<u32>,
    /// The command ran inside a function, `DO` block or procedure.
    pub nested: bool,
}

/// Why a captured command cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Run by a function, `DO` block or procedure: its statement is not in the query.
    Nested,
    /// The query's statements cannot be matched to the command.
    Unmatched(&'static str),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Nested => f.write_str(
                "it ran inside a function, DO block or procedure, so the statement that made it \
                 is not one of the query's statements",
            ),
            Refusal::Unmatched(why) => write!(
                f,
                "the statement that made it cannot be singled out of its query ({why})"
            ),
        }
    }
}

/// The statement of `query` that ran a captured command on `table` (object `object`), to replay
/// on the target; or why there is none. Never the whole query, never a statement of another
/// kind (DML, `DO`, `CALL`, ...).
pub fn isolate(
    query: &str,
    at: StatementRef<'_>,
    table: &TableName,
    object: &str,
    event_type: &str,
) -> Result<String, Refusal> {
    if at.nested {
        return Err(Refusal::Nested);
    }
    let statements: Vec<Statement> = split_statements(query)
        .iter()
        .map(|s| Statement::parse(s))
        .filter(|s| !s.tokens.is_empty())
        .collect();
    let statement = match statements.as_slice() {
        [] => return Err(Refusal::Unmatched("the query is empty")),
        [only] => only,
        many => {
            if many.iter().any(Statement::rolls_back) {
                return Err(Refusal::Unmatched(
                    "the query rolls back part of itself, so its statements cannot be counted",
                ));
            }
            let n = at
                .stmt
                .ok_or(Refusal::Unmatched("the source did not count its statement"))?;
            many.iter()
                .filter(|s| s.tag() == at.tag)
                .nth(n.saturating_sub(1) as usize)
                .ok_or(Refusal::Unmatched(
                    "the query has fewer statements of its kind than the source counted",
                ))?
        }
    };
    if statement.tag() != at.tag {
        return Err(Refusal::Unmatched("its statement is of another kind"));
    }
    let object_name = Statement::parse(object)
        .tokens
        .iter()
        .rev()
        .find_map(Token::name)
        .unwrap_or_default();
    if !statement.names(&table.table) && !statement.names(&object_name) {
        return Err(Refusal::Unmatched("its statement does not name the table"));
    }
    if event_type == "sql_drop" && at.tag == "DROP INDEX" {
        // Only the dropped index of the group, never the others the statement lists.
        let mut sql = "DROP INDEX".to_owned();
        if statement.has_word("concurrently") {
            sql.push_str(" CONCURRENTLY");
        }
        sql.push_str(" IF EXISTS ");
        sql.push_str(object);
        if statement.has_word("cascade") {
            sql.push_str(" CASCADE");
        }
        return Ok(sql);
    }
    Ok(statement.text.clone())
}

#[cfg(test)]
mod tests;
