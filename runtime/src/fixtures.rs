//! Test data shared by the unit tests (`cfg(test)`) and, with the `testing` feature, the
//! integration tests in `runtime/tests`: builders of change messages (values, columns,
//! relations, changes, batches), configurations and table names, and small stand-in servers.
//! Nothing here runs in the binaries.

// Test data: a malformed fixture argument is a bug in the test, so these builders panic.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use pg_flo_source::oid::{INT4, TEXT};
use secrecy::SecretString;

use crate::config::{PgConnConfig, SslMode};
use crate::message::{
    Change, ChangeBatch, Column, KeyKind, OldKind, Op, Position, Relation, ReplicationKey,
    SourceId, Value, FORMAT_VERSION,
};
use crate::source::catalog::TableName;

/// Position `(commit_lsn, seq)`.
pub fn pos(commit_lsn: u64, seq: u64) -> Position {
    Position { commit_lsn, seq }
}

/// A value in PostgreSQL's text form.
pub fn text(s: &str) -> Value {
    Value::Text(s.as_bytes().to_vec().into())
}

/// A column without type modifier.
pub fn col(name: &str, type_oid: u32, identity: bool) -> Column {
    Column {
        name: name.into(),
        type_oid,
        type_modifier: -1,
        identity,
    }
}

/// `schema.table` (oid 1) with `(name, type oid)` columns, keyed by `kind` on `key` (those
/// columns are its identity columns).
pub fn relation(
    schema: &str,
    table: &str,
    columns: &[(&str, u32)],
    kind: KeyKind,
    key: &[&str],
) -> Relation {
    Relation {
        oid: 1,
        schema: schema.into(),
        table: table.into(),
        columns: columns
            .iter()
            .map(|(name, type_oid)| col(name, *type_oid, key.contains(name)))
            .collect(),
        key: ReplicationKey {
            kind,
            columns: key.iter().map(|k| (*k).into()).collect(),
        },
    }
}

/// [`relation`] with text columns.
pub fn text_relation(
    schema: &str,
    table: &str,
    columns: &[&str],
    kind: KeyKind,
    key: &[&str],
) -> Relation {
    let typed: Vec<(&str, u32)> = columns.iter().map(|c| (*c, TEXT)).collect();
    relation(schema, table, &typed, kind, key)
}

/// `public.<table>` with `(name, type oid)` columns; the first one is the primary key.
pub fn public_table(table: &str, columns: &[(&str, u32)]) -> Relation {
    relation(
        "public",
        table,
        columns,
        KeyKind::PrimaryKey,
        &[columns[0].0],
    )
}

/// `public.t (id int PRIMARY KEY, v int)`, the table most tests use.
pub fn table_t() -> Relation {
    public_table("t", &[("id", INT4), ("v", INT4)])
}

/// An insert of `new` into relation index `rel`.
pub fn ins(rel: u16, new: Vec<Value>) -> Change {
    change(Op::Insert, rel, Some(new), None)
}

/// An update to `new` of relation index `rel`, with the old key or row if the change has one.
pub fn upd(rel: u16, new: Vec<Value>, old: Option<(OldKind, Vec<Value>)>) -> Change {
    change(Op::Update, rel, Some(new), old)
}

/// A delete from relation index `rel` by its old key (`OldKind::Key`) or row.
pub fn del(rel: u16, kind: OldKind, old: Vec<Value>) -> Change {
    change(Op::Delete, rel, None, Some((kind, old)))
}

/// A change of relation index `relation` (at LSN 0).
pub fn change(
    op: Op,
    relation: u16,
    new: Option<Vec<Value>>,
    old: Option<(OldKind, Vec<Value>)>,
) -> Change {
    Change {
        op,
        lsn: 0,
        relation,
        new,
        old,
        truncate: None,
    }
}

/// The whole (`last`) message of a transaction committed at `commit_lsn` (xid 1, seq 0, no
/// predecessor, no source, times 0).
pub fn batch(commit_lsn: u64, relations: &[Relation], changes: Vec<Change>) -> ChangeBatch {
    ChangeBatch {
        version: FORMAT_VERSION,
        commit_lsn,
        commit_time_us: 0,
        xid: 1,
        seq: 0,
        last: true,
        prev: None,
        emitted_at_us: 0,
        relations: relations.to_vec(),
        changes,
        source: None,
        copy: false,
    }
}

/// Part `seq` of the transaction committed at `lsn` (`last`: its final part), after `prev`,
/// with one change of `op` on `rel` (a delete names the key, the first value, only).
pub fn message(
    lsn: u64,
    seq: u64,
    last: bool,
    prev: Option<Position>,
    rel: Relation,
    op: Op,
    values: &[&str],
) -> ChangeBatch {
    let row: Vec<Value> = values.iter().map(|v| text(v)).collect();
    let key = row
        .iter()
        .enumerate()
        .map(|(i, v)| if i == 0 { v.clone() } else { Value::Null })
        .collect();
    let (new, old) = match op {
        Op::Delete => (None, Some((OldKind::Key, key))),
        _ => (Some(row), None),
    };
    ChangeBatch {
        xid: lsn as u32,
        seq,
        last,
        prev,
        ..batch(
            lsn,
            &[rel],
            vec![Change {
                lsn,
                ..change(op, 0, new, old)
            }],
        )
    }
}

/// A whole one-message transaction inserting `values` into `rel`, after the transaction
/// committed at `prev`.
pub fn insert_tx(lsn: u64, prev: Option<u64>, rel: Relation, values: &[&str]) -> ChangeBatch {
    message(
        lsn,
        0,
        true,
        prev.map(|p| pos(p, 0)),
        rel,
        Op::Insert,
        values,
    )
}

/// A whole one-message transaction inserting `(id, v)` into `public.t`, after the
/// transaction committed at `prev`.
pub fn tx(lsn: u64, prev: Option<u64>, id: &str, v: &str) -> ChangeBatch {
    insert_tx(lsn, prev, table_t(), &[id, v])
}

/// `public.users (id int4 PRIMARY KEY, bio text)`, oid 16384.
pub fn users() -> Relation {
    Relation {
        oid: 16384,
        ..relation(
            "public",
            "users",
            &[("id", INT4), ("bio", TEXT)],
            KeyKind::PrimaryKey,
            &["id"],
        )
    }
}

/// A message of every field set: an insert and an update with an unchanged TOAST value and
/// its old key, into `public.users (id int4 PRIMARY KEY, bio text)`, with a source.
pub fn sample() -> ChangeBatch {
    let users = users();
    ChangeBatch {
        commit_time_us: 1_700_000_000_000_000,
        xid: 42,
        seq: 0x16_B374_D100,
        emitted_at_us: 1_700_000_000_000_100,
        source: Some(SourceId {
            system_identifier: 7_300_000_000_000_000_001,
            slot_origin: 0x16_B000_0000,
        }),
        ..batch(
            0x16_B374_D848,
            &[users],
            vec![
                Change {
                    lsn: 0x16_B374_D000,
                    ..change(
                        Op::Insert,
                        0,
                        Some(vec![text("1"), Value::Text(bytes::Bytes::new())]),
                        None,
                    )
                },
                Change {
                    lsn: 0x16_B374_D100,
                    ..change(
                        Op::Update,
                        0,
                        Some(vec![text("2"), Value::UnchangedToast]),
                        Some((OldKind::Key, vec![text("1"), Value::Null])),
                    )
                },
            ],
        )
    }
}

/// One insert per id into `public.t (id int4 PRIMARY KEY)` (commit 0x100, change LSN 0x10,
/// emitted 2024-03-20T10:00:00Z).
pub fn int_inserts(ids: &[&str]) -> ChangeBatch {
    let t = public_table("t", &[("id", INT4)]);
    let changes = ids
        .iter()
        .map(|id| Change {
            lsn: 0x10,
            ..change(Op::Insert, 0, Some(vec![text(id)]), None)
        })
        .collect();
    ChangeBatch {
        emitted_at_us: 1_710_928_800_000_000,
        ..batch(0x100, &[t], changes)
    }
}

/// The JSON line the stdout and file sinks write for `int_inserts(&[id])`.
pub fn int_insert_line(id: &str) -> String {
    format!(
        r#"{{"EmittedAt":"2024-03-20T10:00:00Z","LSN":"0/10","NewTuple":{{"id":{id}}},"ReplicationKey":{{"Columns":["id"],"Type":"PRIMARY KEY"}},"Schema":"public","Table":"t","Type":"INSERT"}}"#
    ) + "\n"
}

/// A PostgreSQL endpoint of database `app` as user `flo` (password `hunter2`).
pub fn pg_conn(host: &str, port: u16, sslmode: SslMode) -> PgConnConfig {
    PgConnConfig {
        host: host.to_owned(),
        port,
        dbname: "app".to_owned(),
        user: "flo".to_owned(),
        password: SecretString::from("hunter2"),
        sslmode,
        sslrootcert: None,
    }
}

/// A server on a loopback port that accepts TCP connections and never answers (a hung
/// PostgreSQL); returns its port. It runs until the test's runtime ends.
pub async fn silent_server() -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    Ok(port)
}

/// The table `schema.table` (panics without a `.`).
pub fn table(name: &str) -> TableName {
    let (schema, table) = name
        .split_once('.')
        .unwrap_or_else(|| panic!("{name}: no schema"));
    TableName {
        schema: schema.into(),
        table: table.into(),
    }
}
