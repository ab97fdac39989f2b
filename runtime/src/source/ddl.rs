//! DDL tracking (`--track-ddl`): schema changes of the group's tables travel in WAL order with
//! the data.
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
//! it with what to do ([`refusal_step`]), instead of running anything else of the query.
//!
//! On the target, only errors that mean "this is already applied" are skipped
//! ([`error_verdict`]).
//!
//! Everything is created idempotently at start (replacing the functions of earlier versions)
//! and removed by `pg_flo replicator --cleanup` (and by the operator when a group is deleted
//! with `reclaimPolicy: delete`).

use std::fmt;

use ring::hmac;
use serde::Deserialize;
use tokio_postgres::Client;

use crate::message::{Change, Column, KeyKind, Op, Relation, ReplicationKey, Value, DDL_COLUMNS};
use crate::source::catalog::{CatalogError, TableName};
use crate::source::replication::quote_ident;

pub use pg_flo_source::ddl::{cleanup_sql, message_prefix, setup_sql};
use pg_flo_source::ddl::{KEY_SQL, MAC_HEX_LEN};

/// Name of the extra column of a refused DDL change (after [`DDL_COLUMNS`]): why it cannot be
/// replayed.
pub const REFUSED_COLUMN: &str = "ddl_refused";

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
            names.push(REFUSED_COLUMN);
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

/// The token of a statement that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An unquoted word (keyword or identifier), lowercased.
    Word(String),
    /// A quoted identifier, as written.
    Quoted(String),
    /// Any other symbol; parentheses and commas are told apart.
    Symbol(char),
    /// A literal (string, number, dollar-quoted).
    Literal,
}

impl Token {
    fn name(&self) -> Option<String> {
        match self {
            Token::Word(w) | Token::Quoted(w) => Some(w.clone()),
            _ => None,
        }
    }
}

/// One statement of a query string.
#[derive(Debug)]
struct Statement {
    /// Its text, trimmed, without the `;`.
    text: String,
    tokens: Vec<Token>,
}

impl Statement {
    fn parse(text: &str) -> Statement {
        Statement {
            text: text.trim().to_owned(),
            tokens: tokenize(text),
        }
    }

    fn words(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map_while(|t| match t {
            Token::Word(w) => Some(w.as_str()),
            _ => None,
        })
    }

    fn has_word(&self, word: &str) -> bool {
        self.tokens
            .iter()
            .any(|t| matches!(t, Token::Word(w) if w == word))
    }

    /// The command tag PostgreSQL gives the statement, for the kinds that can be captured
    /// (else a tag no capture has).
    fn tag(&self) -> String {
        let words: Vec<&str> = self.words().collect();
        let upper = |w: &str| w.to_uppercase();
        match words.as_slice() {
            ["alter", kind, ..] | ["drop", kind, ..] => {
                format!("{} {}", upper(words[0]), upper(kind))
            }
            ["security", "label", ..] => "SECURITY LABEL".to_owned(),
            ["create", rest @ ..] => {
                let kind = rest.iter().find(|w| {
                    !matches!(
                        **w,
                        "or" | "replace"
                            | "unique"
                            | "global"
                            | "local"
                            | "temp"
                            | "temporary"
                            | "unlogged"
                    )
                });
                match kind {
                    Some(&"table") if self.has_top_level_word("as") => "CREATE TABLE AS".to_owned(),
                    Some(kind) => format!("CREATE {}", upper(kind)),
                    None => "CREATE".to_owned(),
                }
            }
            [first, ..] => upper(first),
            [] => String::new(),
        }
    }

    fn has_top_level_word(&self, word: &str) -> bool {
        let mut depth = 0i32;
        self.tokens.iter().any(|t| match t {
            Token::Symbol('(') => {
                depth += 1;
                false
            }
            Token::Symbol(')') => {
                depth -= 1;
                false
            }
            Token::Word(w) => depth == 0 && w == word,
            _ => false,
        })
    }

    /// Whether an identifier of the statement is `name` (unquoted words fold to lower case).
    fn names(&self, name: &str) -> bool {
        !name.is_empty()
            && self.tokens.iter().any(|t| match t {
                Token::Word(w) => {
                    *w == name.to_ascii_lowercase() && name == name.to_ascii_lowercase()
                }
                Token::Quoted(q) => q == name,
                _ => false,
            })
    }

    /// `ROLLBACK [TO SAVEPOINT]` or `ABORT`.
    fn rolls_back(&self) -> bool {
        matches!(self.words().next(), Some("rollback" | "abort"))
    }

    /// A `DROP ...`, or an `ALTER TABLE` / `ALTER INDEX` whose every action is a `DROP`
    /// (`DROP COLUMN`, `DROP CONSTRAINT`; not `ALTER COLUMN ... DROP DEFAULT`).
    fn is_drop(&self) -> bool {
        let t = &self.tokens;
        let word = |i: usize, w: &str| matches!(t.get(i), Some(Token::Word(x)) if x == w);
        if word(0, "drop") {
            return true;
        }
        if !(word(0, "alter") && (word(1, "table") || word(1, "index"))) {
            return false;
        }
        let mut i = 2;
        if word(i, "if") && word(i + 1, "exists") {
            i += 2;
        }
        if word(i, "only") {
            i += 1;
        }
        // The name, maybe qualified, maybe followed by `*`.
        if !matches!(t.get(i), Some(Token::Word(_) | Token::Quoted(_))) {
            return false;
        }
        i += 1;
        while matches!(t.get(i), Some(Token::Symbol('.')))
            && matches!(t.get(i + 1), Some(Token::Word(_) | Token::Quoted(_)))
        {
            i += 2;
        }
        if matches!(t.get(i), Some(Token::Symbol('*'))) {
            i += 1;
        }
        // Actions are separated by top-level commas; each must start with DROP.
        let mut depth = 0i32;
        let mut action_start = true;
        let mut any = false;
        for tok in &t[i..] {
            if action_start {
                if !matches!(tok, Token::Word(w) if w == "drop") {
                    return false;
                }
                action_start = false;
                any = true;
            }
            match tok {
                Token::Symbol('(') => depth += 1,
                Token::Symbol(')') => depth -= 1,
                Token::Symbol(',') if depth == 0 => action_start = true,
                _ => {}
            }
        }
        any && !action_start
    }
}

/// Tokens of one SQL statement: words, quoted identifiers, symbols; comments skipped,
/// literals (strings, numbers, dollar quotes) kept as [`Token::Literal`].
fn tokenize(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'\'' => {
                i = skip_quoted(b, i, b'\'', false);
                out.push(Token::Literal);
            }
            b'"' => {
                let end = skip_quoted(b, i, b'"', false);
                let inner = &sql[i + 1..end.saturating_sub(1).max(i + 1)];
                out.push(Token::Quoted(inner.replace("\"\"", "\"")));
                i = end;
            }
            b'$' => match dollar_tag_end(sql, i) {
                Some(e) => {
                    i = e;
                    out.push(Token::Literal);
                }
                None => {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    out.push(Token::Literal);
                }
            },
            _ if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                out.push(Token::Literal);
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                // E'...', B'...', X'...', U&'...' string prefixes.
                if b.get(i) == Some(&b'\'') && i - start == 1 {
                    i = skip_quoted(b, i, b'\'', escape_string(b, i));
                    out.push(Token::Literal);
                } else {
                    out.push(Token::Word(sql[start..i].to_ascii_lowercase()));
                }
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or(' ');
                out.push(Token::Symbol(ch));
                i += ch.len_utf8();
            }
        }
    }
    out
}

/// Index just past the quoted text starting at `i` (doubled quotes stay inside; with
/// `backslash`, as in `E'...'`, a backslash escapes the next byte).
fn skip_quoted(b: &[u8], mut i: usize, q: u8, backslash: bool) -> usize {
    i += 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// Whether the `'` at `i` opens an `E'...'` string.
fn escape_string(b: &[u8], i: usize) -> bool {
    i >= 1
        && matches!(b[i - 1], b'e' | b'E')
        && (i < 2 || !(b[i - 2].is_ascii_alphanumeric() || b[i - 2] == b'_' || b[i - 2] >= 0x80))
}

fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    // Block comments nest in PostgreSQL.
    let mut depth = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Index just past a `$tag$ ... $tag$` string starting at `i`, if one starts there.
fn dollar_tag_end(sql: &str, i: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let e = b[i + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
        .map(|p| i + 1 + p)?;
    if b[e] != b'$' || b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let tag = &sql[i..=e];
    Some(match sql[e + 1..].find(tag) {
        Some(p) => e + 1 + p + tag.len(),
        None => b.len(),
    })
}

/// Splits SQL on `;` outside quotes, dollar quotes and comments.
pub fn split_statements(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut depth = 0i32;
    while i < b.len() {
        match b[i] {
            b'\'' => i = skip_quoted(b, i, b'\'', escape_string(b, i)),
            b'"' => i = skip_quoted(b, i, b'"', false),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'$' => match dollar_tag_end(sql, i) {
                Some(e) => i = e,
                None => i += 1,
            },
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth -= 1;
                i += 1;
            }
            // `CREATE RULE ... DO (a; b)` keeps its `;` inside parentheses.
            b';' if depth <= 0 => {
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
        let st = Statement::parse(s);
        let words: Vec<&str> = st.words().take(4).collect();
        matches!(words.first(), Some(&"create" | &"drop")) && words.contains(&"concurrently")
    })
}

/// What a replayed DDL statement's error means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorVerdict {
    /// The target already has the change (a redelivery, or it was applied there by hand):
    /// skip it with a warning.
    AlreadyApplied,
    /// The change did not apply: stop.
    Failed,
}

/// Classifies the SQLSTATE of a replayed DDL statement's error. Only "already there" outcomes
/// are [`ErrorVerdict::AlreadyApplied`]: a duplicate column, table / relation or object; and an
/// undefined column, table or object only for a `DROP` of it (a `DROP ...`, or an `ALTER TABLE`
/// whose every action is a `DROP`, where a missing table still fails).
pub fn error_verdict(sqlstate: &str, command: &str) -> ErrorVerdict {
    const DUPLICATE_COLUMN: &str = "42701";
    const DUPLICATE_TABLE: &str = "42P07";
    const DUPLICATE_OBJECT: &str = "42710";
    const UNDEFINED_COLUMN: &str = "42703";
    const UNDEFINED_TABLE: &str = "42P01";
    const UNDEFINED_OBJECT: &str = "42704";
    let statement = split_statements(command)
        .first()
        .map(|s| Statement::parse(s))
        .unwrap_or_else(|| Statement::parse(""));
    let drop_statement = statement.words().next() == Some("drop");
    let drops = statement.is_drop();
    match sqlstate {
        DUPLICATE_COLUMN | DUPLICATE_TABLE | DUPLICATE_OBJECT => ErrorVerdict::AlreadyApplied,
        UNDEFINED_COLUMN | UNDEFINED_OBJECT if drops => ErrorVerdict::AlreadyApplied,
        UNDEFINED_TABLE if drop_statement => ErrorVerdict::AlreadyApplied,
        _ => ErrorVerdict::Failed,
    }
}

/// What a DDL change asks the sink to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Run this statement.
    Run(String),
    /// Refused at the source: stop, unless the target says it was applied by hand.
    Refused(String),
    /// Nothing (an empty command).
    Nothing,
}

/// Reads a DDL change's columns (by name, so older messages read the same).
pub fn replay_of(relation: &Relation, change: &Change) -> Replay {
    let value = |name: &str| {
        let i = relation.columns.iter().position(|c| c.name == name)?;
        let v = change.new.as_ref()?.get(i)?.as_bytes()?;
        Some(String::from_utf8_lossy(v).into_owned())
    };
    if let Some(reason) = value(REFUSED_COLUMN) {
        return Replay::Refused(reason);
    }
    match value("ddl_command") {
        Some(c) if !c.trim().is_empty() => Replay::Run(c),
        _ => Replay::Nothing,
    }
}

/// The error step of a refused DDL change: what happened and how to go on.
pub fn refusal_step(table: &str, group: &str, lsn: &str, reason: &str) -> String {
    format!(
        "DDL on {table} at source position {lsn} cannot be replayed: {reason}; nothing of its \
         query was run in the target. Apply the schema change to the target yourself, then \
         record that in the target with `INSERT INTO internal_pg_flo.ddl_applied_by_hand \
         (group_name, ddl_lsn) VALUES ('{}', '{lsn}')` and restart the worker. To avoid this, \
         run schema changes of tracked tables as plain statements, not inside DO blocks, \
         functions or procedures",
        group.replace('\'', "''")
    )
}

/// `"schema"."table"` of a tracked table, for messages.
pub fn quoted(t: &TableName) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table))
}

#[cfg(test)]
mod tests;
