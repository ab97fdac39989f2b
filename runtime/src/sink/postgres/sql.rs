//! SQL text and parameters for one change (see the parent module for the statement shapes).

use std::error::Error;
use std::fmt::{self, Write as _};

use bytes::BytesMut;
use postgres_types::{to_sql_checked, Format, IsNull, ToSql, Type};

use crate::message::{Change, ChangeBatch, KeyKind, OldKind, Op, Relation, Value};
use crate::sink::SinkError;

/// A parameter sent in PostgreSQL text format: the raw text output of a value, or NULL. The
/// server converts it with the input function of the parameter type it inferred when the
/// statement was prepared, so every type (arrays, json, ranges, enums, domains...) works
/// without a client-side conversion.
#[derive(Clone, Copy)]
pub(super) struct TextParam<'a>(pub Option<&'a [u8]>);

impl fmt::Debug for TextParam<'_> {
    // Never print values (they may hold personal data), only their shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("TextParam(NULL)"),
            Some(b) => write!(f, "TextParam({} bytes)", b.len()),
        }
    }
}

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self.0 {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }
}

/// Appends `name` as a quoted identifier (`"` doubled).
pub(super) fn push_ident(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// `"schema"."table"`.
pub(super) fn qualified(schema: &str, table: &str) -> String {
    let mut s = String::with_capacity(schema.len() + table.len() + 5);
    push_ident(&mut s, schema);
    s.push('.');
    push_ident(&mut s, table);
    s
}

/// What a statement does, for error messages and row-count checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Upsert,
    Insert,
    Update,
    Delete,
    Truncate,
    /// `COPY ... FROM STDIN` of a run of inserted rows (see [`coalesce`]).
    Copy,
}

impl Action {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Action::Upsert => "upserting into",
            Action::Insert => "inserting into",
            Action::Update => "updating",
            Action::Delete => "deleting from",
            Action::Truncate => "truncating",
            Action::Copy => "copying rows into",
        }
    }
}

/// One statement to run for a change.
#[derive(Debug)]
pub(super) struct Planned<'b> {
    pub sql: String,
    pub params: Vec<TextParam<'b>>,
    pub action: Action,
    /// `"schema"."table"` (or the list of truncated tables).
    pub table: String,
    /// For a single-row insert / upsert: how to merge it with its neighbours into one
    /// multi-row statement (shared by the rows of one relation in a flush).
    pub row: Option<std::sync::Arc<RowShape>>,
    /// For an UPDATE / DELETE that must find a row: the conflict that affecting none means.
    pub conflict: Option<Conflict>,
    /// The row of a source INSERT (not an update applied as an upsert): it may go into a
    /// `COPY` with its neighbours.
    pub insert: bool,
}

/// What an UPDATE or DELETE that matched no row in the target means (PostgreSQL 17's conflict
/// types); named by table and key column names only, never values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Conflict {
    /// `update_missing` or `delete_missing`.
    pub kind: &'static str,
    /// `schema.table`, unquoted (a metric label).
    pub table: String,
    /// The key column names, `, `-separated, or `replica identity full`.
    pub key: String,
}

impl Conflict {
    pub const UPDATE_MISSING: &'static str = "update_missing";
    pub const DELETE_MISSING: &'static str = "delete_missing";

    fn new(rel: &Relation, kind: &'static str) -> Self {
        let key = match rel.key.kind {
            KeyKind::PrimaryKey | KeyKind::Unique if !rel.key.columns.is_empty() => {
                rel.key.columns.join(", ")
            }
            _ => "replica identity full".to_owned(),
        };
        Conflict {
            kind,
            table: format!("{}.{}", rel.schema, rel.table),
            key,
        }
    }
}

/// A single-row `INSERT` split around its `VALUES` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RowShape {
    /// `INSERT INTO t (c1, c2) VALUES `.
    pub head: String,
    /// What follows the values list (` ON CONFLICT ...`, or nothing).
    pub tail: String,
    /// Positions in `params` of the conflict key's values (empty without a key).
    pub key: Vec<usize>,
    /// Values per row (the table's columns).
    pub columns: usize,
    /// `COPY t (c1, c2) FROM STDIN`: the same table and columns, for a run of inserts.
    pub copy_sql: String,
}

/// Most rows merged into one statement (also kept under PostgreSQL's 65535 parameters).
const MAX_ROWS_PER_STATEMENT: usize = 256;

/// Rows in a run of source inserts from which the run goes into the target by `COPY`.
pub(super) const COPY_MIN_ROWS: usize = 32;

/// Merges runs of consecutive single-row inserts / upserts of the same shape into multi-row
/// statements, in power-of-two sizes (so few distinct statements get prepared). A run is cut
/// where a key repeats: one `INSERT ... ON CONFLICT DO UPDATE` may not touch a row twice, and
/// the later change must win.
///
/// A run of at least `copy_min` rows that all come from source INSERTs, into a table for which
/// `copy_ok` holds, becomes one `COPY ... FROM STDIN` instead ([`Action::Copy`]): no key
/// repeats in it, so on a target without those keys it is exactly the upserts' result; a key
/// that already exists in the target makes the COPY fail with a unique violation, and the sink
/// then applies that table's inserts as upserts (see `PostgresSink::execute`).
pub(super) fn coalesce<'b>(
    planned: Vec<Planned<'b>>,
    copy_min: usize,
    copy_ok: impl Fn(&str) -> bool,
) -> Vec<Planned<'b>> {
    let mut out = Vec::with_capacity(planned.len());
    let mut run: Vec<Planned<'_>> = Vec::new();
    let mut keys: std::collections::HashSet<Vec<Option<&[u8]>>> = std::collections::HashSet::new();
    for p in planned {
        let joins = match (&p.row, run.first().and_then(|r| r.row.as_ref())) {
            (Some(shape), Some(first)) => {
                shape == first && {
                    let key: Vec<Option<&[u8]>> =
                        shape.key.iter().map(|&i| p.params[i].0).collect();
                    shape.key.is_empty() || !keys.contains(&key)
                }
            }
            _ => false,
        };
        if !joins {
            flush_run(&mut run, &mut out, copy_min, &copy_ok);
            keys.clear();
        }
        if let Some(shape) = &p.row {
            if !shape.key.is_empty() {
                keys.insert(shape.key.iter().map(|&i| p.params[i].0).collect());
            }
            run.push(p);
        } else {
            out.push(p);
        }
    }
    flush_run(&mut run, &mut out, copy_min, &copy_ok);
    out
}

fn flush_run<'b>(
    run: &mut Vec<Planned<'b>>,
    out: &mut Vec<Planned<'b>>,
    copy_min: usize,
    copy_ok: &impl Fn(&str) -> bool,
) {
    // A table without columns has nothing to copy (its rows would vanish): statements.
    let copy_shape = run
        .first()
        .and_then(|p| p.row.clone())
        .filter(|shape| shape.columns > 0);
    if let Some(shape) = copy_shape {
        if run.len() >= copy_min && run.iter().all(|p| p.insert) && copy_ok(&run[0].table) {
            out.push(copy_of(std::mem::take(run), shape));
            return;
        }
    }
    let mut rows = std::mem::take(run).into_iter();
    let mut left = rows.len();
    while left > 0 {
        let ncols = rows.as_slice().first().map_or(1, |p| p.params.len().max(1));
        let cap = MAX_ROWS_PER_STATEMENT.min(65_535 / ncols).max(1);
        let mut take = 1;
        while take * 2 <= left.min(cap) {
            take *= 2;
        }
        let chunk: Vec<Planned<'b>> = rows.by_ref().take(take).collect();
        left -= chunk.len();
        out.push(merge(chunk));
    }
}

fn merge(mut chunk: Vec<Planned<'_>>) -> Planned<'_> {
    if chunk.len() == 1 {
        if let Some(p) = chunk.pop() {
            return p;
        }
    }
    let first_shape = chunk.first().and_then(|p| p.row.clone());
    let Some(shape) = first_shape else {
        // Unreachable: runs only hold rows with a shape.
        return Planned::statement(String::new(), Vec::new(), Action::Insert, String::new());
    };
    let mut sql = String::with_capacity(shape.head.len() + shape.tail.len() + chunk.len() * 32);
    sql.push_str(&shape.head);
    let mut params = Vec::new();
    let (action, table) = (chunk[0].action, chunk[0].table.clone());
    for (r, p) in chunk.into_iter().enumerate() {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for (i, v) in p.params.into_iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            params.push(v);
            let _ = write!(sql, "${}", params.len());
        }
        sql.push(')');
    }
    sql.push_str(&shape.tail);
    Planned::statement(sql, params, action, table)
}

/// One `COPY t (columns) FROM STDIN` of a run's rows, all of `shape`: its `row` is that shape
/// (columns per row), its `params` the rows' values one after the other.
fn copy_of(run: Vec<Planned<'_>>, shape: std::sync::Arc<RowShape>) -> Planned<'_> {
    let table = run.first().map(|p| p.table.clone()).unwrap_or_default();
    let mut params = Vec::with_capacity(run.len() * shape.columns);
    for p in run {
        params.extend(p.params);
    }
    Planned {
        row: Some(shape.clone()),
        ..Planned::statement(shape.copy_sql.clone(), params, Action::Copy, table)
    }
}

/// Appends one row in `COPY` text format: values separated by tabs, a newline at the end,
/// `NULL` as `\N`, and in each value a backslash, newline, carriage return and tab escaped with
/// a backslash. The values are the source's text output, which `COPY` parses with each
/// column type's input function, as it does a text parameter. The session's
/// `client_encoding` is UTF-8, where these four bytes never occur inside a multi-byte
/// character.
pub(super) fn copy_text_row(out: &mut Vec<u8>, row: &[TextParam<'_>]) {
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        let Some(bytes) = v.0 else {
            out.extend_from_slice(b"\\N");
            continue;
        };
        let mut from = 0;
        for (at, b) in bytes.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                _ => continue,
            };
            out.extend_from_slice(&bytes[from..at]);
            out.extend_from_slice(escaped);
            from = at + 1;
        }
        out.extend_from_slice(&bytes[from..]);
    }
    out.push(b'\n');
}

impl<'b> Planned<'b> {
    /// A statement that is not a row to merge, a conflict to count or a `COPY`.
    fn statement(sql: String, params: Vec<TextParam<'b>>, action: Action, table: String) -> Self {
        Planned {
            sql,
            params,
            action,
            table,
            row: None,
            conflict: None,
            insert: false,
        }
    }

    pub(super) fn step(&self) -> String {
        format!("{} {}", self.action.describe(), self.table)
    }
}

/// How rows of a relation are found.
enum Key {
    /// Indexes of the key columns (primary key or unique replica-identity index).
    Columns(Vec<usize>),
    /// No usable key: a row is matched by all of its (old) values.
    Full,
}

fn invalid(rel: &Relation, what: impl fmt::Display) -> SinkError {
    SinkError::Invalid(format!(
        "cannot apply change to {}: {what}",
        qualified(&rel.schema, &rel.table)
    ))
}

fn key_of(rel: &Relation) -> Result<Key, SinkError> {
    match rel.key.kind {
        KeyKind::PrimaryKey | KeyKind::Unique if !rel.key.columns.is_empty() => rel
            .key
            .columns
            .iter()
            .map(|name| {
                rel.column_index(name).ok_or_else(|| {
                    invalid(
                        rel,
                        format_args!("key column \"{name}\" is not among the table's columns"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Key::Columns),
        _ => Ok(Key::Full),
    }
}

/// Builds a statement's SQL and parameters.
struct Builder<'b> {
    sql: String,
    params: Vec<TextParam<'b>>,
}

impl<'b> Builder<'b> {
    fn new(head: &str, table: &str) -> Self {
        let mut sql = String::with_capacity(128);
        sql.push_str(head);
        sql.push_str(table);
        Builder {
            sql,
            params: Vec::new(),
        }
    }

    fn param(&mut self, value: Option<&'b [u8]>) {
        self.params.push(TextParam(value));
        let _ = write!(self.sql, "${}", self.params.len());
    }

    fn push(&mut self, s: &str) {
        self.sql.push_str(s);
    }

    fn ident(&mut self, name: &str) {
        push_ident(&mut self.sql, name);
    }

    /// `SET c = $n, ...` for the given columns.
    fn set_list(&mut self, rel: &Relation, cols: &[usize], row: &'b [Value]) {
        self.push(" SET ");
        for (i, &c) in cols.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.ident(&rel.columns[c].name);
            self.push(" = ");
            self.param(row[c].as_bytes());
        }
    }

    /// ` WHERE k1 = $n AND k2 IS NULL ...`.
    fn key_where(&mut self, rel: &Relation, key: &[(usize, &'b Value)]) {
        self.push(" WHERE ");
        for (i, (c, v)) in key.iter().enumerate() {
            if i > 0 {
                self.push(" AND ");
            }
            self.ident(&rel.columns[*c].name);
            match v.as_bytes() {
                Some(b) => {
                    self.push(" = ");
                    self.param(Some(b));
                }
                None => self.push(" IS NULL"),
            }
        }
    }

    /// ` WHERE ctid = (SELECT ctid FROM t WHERE c::text IS NOT DISTINCT FROM $n ... LIMIT 1)`,
    /// matching every column of `old` except unchanged TOAST values.
    fn ctid_where(&mut self, rel: &Relation, table: &str, old: &'b [Value]) {
        self.push(" WHERE ctid = (SELECT ctid FROM ");
        self.push(table);
        let mut first = true;
        for (c, v) in old.iter().enumerate() {
            if *v == Value::UnchangedToast {
                continue;
            }
            self.push(if first { " WHERE " } else { " AND " });
            first = false;
            self.ident(&rel.columns[c].name);
            self.push("::text IS NOT DISTINCT FROM ");
            self.param(v.as_bytes());
        }
        self.push(" LIMIT 1)");
    }

    fn finish(self, action: Action, table: String) -> Planned<'b> {
        Planned::statement(self.sql, self.params, action, table)
    }
}

fn row_of<'b>(
    rel: &Relation,
    row: &'b Option<Vec<Value>>,
    what: &str,
) -> Result<&'b [Value], SinkError> {
    let row = row
        .as_deref()
        .ok_or_else(|| invalid(rel, format_args!("the change has no {what} row")))?;
    if row.len() != rel.columns.len() {
        return Err(invalid(
            rel,
            format_args!(
                "the {what} row has {} values for {} columns",
                row.len(),
                rel.columns.len()
            ),
        ));
    }
    Ok(row)
}

fn old_of<'b>(
    rel: &Relation,
    change: &'b Change,
) -> Result<Option<(OldKind, &'b [Value])>, SinkError> {
    match &change.old {
        None => Ok(None),
        Some((kind, values)) => {
            if values.len() != rel.columns.len() {
                return Err(invalid(
                    rel,
                    format_args!(
                        "the old row has {} values for {} columns",
                        values.len(),
                        rel.columns.len()
                    ),
                ));
            }
            Ok(Some((*kind, values.as_slice())))
        }
    }
}

/// The single-row insert statement of each relation seen in one flush, built once. Every
/// message carries its own copy of its relations, so a relation is found by its OID and then
/// by equality (a changed schema is another relation); the address of the copy last matched
/// saves the comparison for the rest of its message.
#[derive(Default)]
pub(super) struct InsertShapes(std::collections::HashMap<u32, Vec<CachedInsert>>);

struct CachedInsert {
    /// Address of the message's copy of `relation` last matched.
    seen_at: usize,
    relation: Relation,
    shape: std::sync::Arc<RowShape>,
    sql: String,
    action: Action,
}

impl InsertShapes {
    fn get(&mut self, rel: &Relation) -> Option<&CachedInsert> {
        let at = std::ptr::from_ref(rel) as usize;
        let cached = self
            .0
            .get_mut(&rel.oid)?
            .iter_mut()
            .find(|c| c.seen_at == at || c.relation == *rel)?;
        cached.seen_at = at;
        Some(cached)
    }
}

/// [`build_insert_row`], with the statement of `rel` built once per [`InsertShapes`].
fn insert_row<'b>(
    rel: &Relation,
    table: &str,
    key: &Key,
    row: &'b [Value],
    shapes: &mut InsertShapes,
) -> Result<Planned<'b>, SinkError> {
    let Some(CachedInsert {
        shape, sql, action, ..
    }) = shapes.get(rel)
    else {
        let p = build_insert_row(rel, table, key, row)?;
        if let Some(shape) = &p.row {
            shapes.0.entry(rel.oid).or_default().push(CachedInsert {
                seen_at: std::ptr::from_ref(rel) as usize,
                relation: rel.clone(),
                shape: shape.clone(),
                sql: p.sql.clone(),
                action: p.action,
            });
        }
        return Ok(p);
    };
    if row.contains(&Value::UnchangedToast) {
        return Err(invalid(
            rel,
            "a row to insert carries an unchanged TOAST value",
        ));
    }
    let params = row.iter().map(|v| TextParam(v.as_bytes())).collect();
    Ok(Planned {
        row: Some(shape.clone()),
        ..Planned::statement(sql.clone(), params, *action, table.to_owned())
    })
}

/// `INSERT ... ON CONFLICT (key) DO UPDATE SET c = EXCLUDED.c` (or plain `INSERT` without a
/// key) of a full row.
fn build_insert_row<'b>(
    rel: &Relation,
    table: &str,
    key: &Key,
    row: &'b [Value],
) -> Result<Planned<'b>, SinkError> {
    if row.contains(&Value::UnchangedToast) {
        return Err(invalid(
            rel,
            "a row to insert carries an unchanged TOAST value",
        ));
    }
    let mut b = Builder::new("INSERT INTO ", table);
    b.push(" (");
    for (i, col) in rel.columns.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.ident(&col.name);
    }
    // The source's value of an identity column is written as it is, `GENERATED ALWAYS` or not
    // (as PostgreSQL's apply worker and `COPY` do).
    let copy_sql = format!("COPY {}) FROM STDIN", &b.sql["INSERT INTO ".len()..]);
    b.push(") OVERRIDING SYSTEM VALUE VALUES ");
    let head = b.sql.clone();
    b.push("(");
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.param(v.as_bytes());
    }
    b.push(")");
    let tail_at = b.sql.len();
    let with_shape = |b: Builder<'b>, action: Action, key: Vec<usize>| {
        let tail = b.sql[tail_at..].to_owned();
        let mut p = b.finish(action, table.to_owned());
        p.row = Some(std::sync::Arc::new(RowShape {
            head,
            tail,
            key,
            columns: rel.columns.len(),
            copy_sql,
        }));
        p
    };
    let Key::Columns(key) = key else {
        return Ok(with_shape(b, Action::Insert, Vec::new()));
    };
    b.push(" ON CONFLICT (");
    for (i, &c) in key.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.ident(&rel.columns[c].name);
    }
    b.push(")");
    let mut first = true;
    for (c, col) in rel.columns.iter().enumerate() {
        if key.contains(&c) {
            continue;
        }
        b.push(if first { " DO UPDATE SET " } else { ", " });
        first = false;
        b.ident(&col.name);
        b.push(" = EXCLUDED.");
        b.ident(&col.name);
    }
    if first {
        b.push(" DO NOTHING");
    }
    // Parameters are one per column, in column order: a key column's index is its position.
    Ok(with_shape(b, Action::Upsert, key.clone()))
}

/// Appends the statements that apply `change` to `out`.
#[cfg(test)]
pub(super) fn plan<'b>(
    batch: &'b ChangeBatch,
    change: &'b Change,
    out: &mut Vec<Planned<'b>>,
) -> Result<(), SinkError> {
    plan_with(batch, change, out, &mut InsertShapes::default())
}

/// [`plan`], with the insert statements of a flush built once per relation.
pub(super) fn plan_with<'b>(
    batch: &'b ChangeBatch,
    change: &'b Change,
    out: &mut Vec<Planned<'b>>,
    shapes: &mut InsertShapes,
) -> Result<(), SinkError> {
    let rel = batch
        .relations
        .get(usize::from(change.relation))
        .ok_or_else(|| {
            SinkError::Invalid(format!(
                "change refers to relation index {} that the message does not carry",
                change.relation
            ))
        })?;
    if change.op == Op::Truncate {
        return plan_truncate(batch, change, out);
    }
    let table = qualified(&rel.schema, &rel.table);
    let key = key_of(rel)?;
    match change.op {
        Op::Insert => {
            let new = row_of(rel, &change.new, "new")?;
            let mut p = insert_row(rel, &table, &key, new, shapes)?;
            p.insert = true;
            out.push(p);
        }
        Op::Update => plan_update(rel, &table, &key, change, out, shapes)?,
        Op::Delete => {
            let Some((_, old)) = old_of(rel, change)? else {
                return Err(invalid(rel, "a delete carries no old row or key"));
            };
            let mut b = Builder::new("DELETE FROM ", &table);
            match &key {
                Key::Columns(key) => {
                    let vals = key
                        .iter()
                        .map(|&c| match &old[c] {
                            Value::UnchangedToast => Err(invalid(
                                rel,
                                "a delete's key value is an unchanged TOAST value",
                            )),
                            v => Ok((c, v)),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    b.key_where(rel, &vals);
                }
                Key::Full => b.ctid_where(rel, &table, old),
            }
            let mut p = b.finish(Action::Delete, table);
            p.conflict = Some(Conflict::new(rel, Conflict::DELETE_MISSING));
            out.push(p);
        }
        // Applied by the sink itself (it may need to leave the transaction).
        Op::Truncate | Op::Ddl => {}
    }
    Ok(())
}

fn plan_update<'b>(
    rel: &'b Relation,
    table: &str,
    key: &Key,
    change: &'b Change,
    out: &mut Vec<Planned<'b>>,
    shapes: &mut InsertShapes,
) -> Result<(), SinkError> {
    let new = row_of(rel, &change.new, "new")?;
    let old = old_of(rel, change)?;
    let has_toast = new.contains(&Value::UnchangedToast);
    let set_cols: Vec<usize> = (0..new.len())
        .filter(|&c| new[c] != Value::UnchangedToast)
        .collect();
    match key {
        Key::Columns(key) => {
            // The row's current key: the old key where the change carries one, else the new.
            let mut changed = false;
            let mut where_key = Vec::with_capacity(key.len());
            for &c in key {
                let old_v = old
                    .map(|(_, o)| &o[c])
                    .filter(|v| **v != Value::UnchangedToast);
                let v = match old_v {
                    Some(o) => {
                        if new[c] != Value::UnchangedToast && new[c] != *o {
                            changed = true;
                        }
                        o
                    }
                    None => &new[c],
                };
                if *v == Value::UnchangedToast {
                    return Err(invalid(
                        rel,
                        "an update's key value is an unchanged TOAST value and no old key was sent",
                    ));
                }
                where_key.push((c, v));
            }
            if !has_toast {
                if changed {
                    // The key changed: the row under the old key goes, the new row is upserted
                    // (so a missing old row is inserted, and counted as update_missing).
                    let mut b = Builder::new("DELETE FROM ", table);
                    b.key_where(rel, &where_key);
                    let mut p = b.finish(Action::Delete, table.to_owned());
                    p.conflict = Some(Conflict::new(rel, Conflict::UPDATE_MISSING));
                    out.push(p);
                }
                out.push(insert_row(
                    rel,
                    table,
                    &Key::Columns(key.clone()),
                    new,
                    shapes,
                )?);
                return Ok(());
            }
            if set_cols.is_empty() {
                return Ok(());
            }
            let mut b = Builder::new("UPDATE ", table);
            b.set_list(rel, &set_cols, new);
            b.key_where(rel, &where_key);
            let mut p = b.finish(Action::Update, table.to_owned());
            p.conflict = Some(Conflict::new(rel, Conflict::UPDATE_MISSING));
            out.push(p);
        }
        Key::Full => {
            let Some((_, old)) = old else {
                return Err(invalid(
                    rel,
                    "an update of a table without a primary key or replica identity index carries \
                     no old row (set REPLICA IDENTITY FULL on the source table)",
                ));
            };
            if set_cols.is_empty() {
                return Ok(());
            }
            let mut b = Builder::new("UPDATE ", table);
            b.set_list(rel, &set_cols, new);
            b.ctid_where(rel, table, old);
            let mut p = b.finish(Action::Update, table.to_owned());
            p.conflict = Some(Conflict::new(rel, Conflict::UPDATE_MISSING));
            out.push(p);
        }
    }
    Ok(())
}

pub(super) fn plan_truncate<'b>(
    batch: &'b ChangeBatch,
    change: &'b Change,
    out: &mut Vec<Planned<'b>>,
) -> Result<(), SinkError> {
    let Some(t) = &change.truncate else {
        return Err(SinkError::Invalid(
            "a truncate change carries no truncate details".into(),
        ));
    };
    let mut tables = String::new();
    let indexes: Vec<u16> = if t.relations.is_empty() {
        vec![change.relation]
    } else {
        t.relations.clone()
    };
    for (i, idx) in indexes.iter().enumerate() {
        let rel = batch.relations.get(usize::from(*idx)).ok_or_else(|| {
            SinkError::Invalid(format!(
                "truncate refers to relation index {idx} that the message does not carry"
            ))
        })?;
        if i > 0 {
            tables.push_str(", ");
        }
        tables.push_str(&qualified(&rel.schema, &rel.table));
    }
    let mut b = Builder::new("TRUNCATE ", &tables);
    if t.restart_identity {
        b.push(" RESTART IDENTITY");
    }
    // Never CASCADE: only the tables listed (the published ones) are truncated, as
    // PostgreSQL's apply worker does; a table outside the group that references one of them
    // makes the TRUNCATE fail instead of being emptied.
    out.push(b.finish(Action::Truncate, tables));
    Ok(())
}

/// The statements that reset the tables of a restarted copy (a TRUNCATE in a copy message):
/// `TRUNCATE t1, t2`, and the fallback when a table outside the group references one of them
/// by a foreign key (TRUNCATE checks foreign keys whatever the replication role):
/// `DELETE FROM t1; DELETE FROM t2`, which in replica mode fires no foreign-key trigger.
pub(super) fn copy_reset(
    batch: &ChangeBatch,
    change: &Change,
) -> Result<(String, String), SinkError> {
    let mut planned = Vec::new();
    plan_truncate(batch, change, &mut planned)?;
    let truncate = planned.pop().map(|p| p.sql).unwrap_or_default();
    let mut delete = String::new();
    let indexes = change
        .truncate
        .as_ref()
        .map(|t| t.relations.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| vec![change.relation]);
    for idx in indexes {
        if let Some(rel) = batch.relations.get(usize::from(idx)) {
            if !delete.is_empty() {
                delete.push_str("; ");
            }
            delete.push_str("DELETE FROM ");
            delete.push_str(&qualified(&rel.schema, &rel.table));
        }
    }
    Ok((truncate, delete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, text as t, text_relation};

    fn rel(kind: KeyKind, key: &[&str]) -> Relation {
        text_relation("s", "T\"x", &["id", "k2", "v"], kind, key)
    }

    fn batch(rel: Relation, changes: Vec<Change>) -> ChangeBatch {
        fixtures::batch(1, &[rel], changes)
    }

    fn change(op: Op, new: Option<Vec<Value>>, old: Option<(OldKind, Vec<Value>)>) -> Change {
        Change {
            lsn: 1,
            ..fixtures::change(op, 0, new, old)
        }
    }

    fn sqls(b: &ChangeBatch) -> Vec<String> {
        let mut out = Vec::new();
        for c in &b.changes {
            plan(b, c, &mut out).unwrap();
        }
        out.into_iter().map(|p| p.sql).collect()
    }

    #[test]
    fn statement_shapes() {
        let b = batch(
            rel(KeyKind::PrimaryKey, &["id"]),
            vec![
                change(Op::Insert, Some(vec![t("1"), Value::Null, t("")]), None),
                change(
                    Op::Update,
                    Some(vec![t("2"), t("a"), t("b")]),
                    Some((OldKind::Key, vec![t("1"), Value::Null, Value::Null])),
                ),
                change(
                    Op::Update,
                    Some(vec![t("2"), t("a"), Value::UnchangedToast]),
                    None,
                ),
                change(
                    Op::Delete,
                    None,
                    Some((OldKind::Key, vec![t("2"), Value::Null, Value::Null])),
                ),
            ],
        );
        assert_eq!(
            sqls(&b),
            vec![
                r#"INSERT INTO "s"."T""x" ("id", "k2", "v") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3) ON CONFLICT ("id") DO UPDATE SET "k2" = EXCLUDED."k2", "v" = EXCLUDED."v""#,
                r#"DELETE FROM "s"."T""x" WHERE "id" = $1"#,
                r#"INSERT INTO "s"."T""x" ("id", "k2", "v") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3) ON CONFLICT ("id") DO UPDATE SET "k2" = EXCLUDED."k2", "v" = EXCLUDED."v""#,
                r#"UPDATE "s"."T""x" SET "id" = $1, "k2" = $2 WHERE "id" = $3"#,
                r#"DELETE FROM "s"."T""x" WHERE "id" = $1"#,
            ]
        );
        let b = batch(
            rel(KeyKind::Unique, &["id", "k2"]),
            vec![change(
                Op::Delete,
                None,
                Some((OldKind::Key, vec![t("1"), Value::Null, Value::Null])),
            )],
        );
        assert_eq!(
            sqls(&b),
            vec![r#"DELETE FROM "s"."T""x" WHERE "id" = $1 AND "k2" IS NULL"#]
        );
        let b = batch(
            rel(KeyKind::Full, &[]),
            vec![
                change(Op::Insert, Some(vec![t("1"), t("2"), t("3")]), None),
                change(
                    Op::Delete,
                    None,
                    Some((
                        OldKind::Full,
                        vec![t("1"), Value::UnchangedToast, Value::Null],
                    )),
                ),
            ],
        );
        assert_eq!(
            sqls(&b),
            vec![
                r#"INSERT INTO "s"."T""x" ("id", "k2", "v") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3)"#,
                r#"DELETE FROM "s"."T""x" WHERE ctid = (SELECT ctid FROM "s"."T""x" WHERE "id"::text IS NOT DISTINCT FROM $1 AND "v"::text IS NOT DISTINCT FROM $2 LIMIT 1)"#,
            ]
        );
    }

    #[test]
    fn truncate_never_cascades_and_copy_reset_has_a_delete_fallback() {
        let mut b = batch(rel(KeyKind::PrimaryKey, &["id"]), Vec::new());
        let mut other = rel(KeyKind::Full, &[]);
        other.table = "o".into();
        b.relations.push(other);
        for (cascade, restart, sql) in [
            (true, false, r#"TRUNCATE "s"."T""x", "s"."o""#),
            (false, false, r#"TRUNCATE "s"."T""x", "s"."o""#),
            (
                true,
                true,
                r#"TRUNCATE "s"."T""x", "s"."o" RESTART IDENTITY"#,
            ),
        ] {
            let mut c = change(Op::Truncate, None, None);
            c.truncate = Some(crate::message::Truncate {
                relations: vec![0, 1],
                cascade,
                restart_identity: restart,
            });
            b.changes = vec![c];
            assert_eq!(sqls(&b), vec![sql.to_owned()]);
        }
        let (truncate, delete) = copy_reset(&b, &b.changes[0]).unwrap();
        assert_eq!(truncate, r#"TRUNCATE "s"."T""x", "s"."o" RESTART IDENTITY"#);
        assert_eq!(delete, r#"DELETE FROM "s"."T""x"; DELETE FROM "s"."o""#);
    }

    #[test]
    fn all_key_columns_do_nothing_and_missing_key_is_invalid() {
        let mut r = rel(KeyKind::PrimaryKey, &["id", "k2", "v"]);
        let b = batch(
            r.clone(),
            vec![change(Op::Insert, Some(vec![t("1"), t("2"), t("3")]), None)],
        );
        assert!(sqls(&b)[0].ends_with(r#"ON CONFLICT ("id", "k2", "v") DO NOTHING"#));
        r.key.columns = vec!["nope".into()];
        let b = batch(
            r,
            vec![change(Op::Insert, Some(vec![t("1"), t("2"), t("3")]), None)],
        );
        let err = plan(&b, &b.changes[0], &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains(r#""s"."T""x""#), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
