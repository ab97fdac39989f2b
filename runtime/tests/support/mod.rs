//! Shared fixtures of the worker's integration tests: hand-made change messages, a group's
//! stream on a real NATS JetStream, and the real `pg_flo worker` as a process.

#![allow(dead_code)] // each test binary uses its own part

use std::process::Command;
use std::time::Duration;

use e2e::{wait_for, NatsServer, PgCluster, Process};
use pg_flo::message::{
    Change, ChangeBatch, Column, KeyKind, OldKind, Op, Position, Relation, ReplicationKey, Value,
    FORMAT_VERSION,
};
use pg_flo_source::oid::INT4;

pub fn pos(lsn: u64, seq: u64) -> Position {
    Position {
        commit_lsn: lsn,
        seq,
    }
}

pub fn text(s: &str) -> Value {
    Value::Text(s.as_bytes().to_vec().into())
}

/// `public.<table>` with `(name, type oid)` columns; the first one is the primary key.
pub fn relation(table: &str, columns: &[(&str, u32)]) -> Relation {
    Relation {
        oid: 1,
        schema: "public".into(),
        table: table.into(),
        columns: columns
            .iter()
            .enumerate()
            .map(|(i, (name, type_oid))| Column {
                name: (*name).into(),
                type_oid: *type_oid,
                type_modifier: -1,
                identity: i == 0,
            })
            .collect(),
        key: ReplicationKey {
            kind: KeyKind::PrimaryKey,
            columns: vec![columns[0].0.into()],
        },
    }
}

/// `public.t (id int PRIMARY KEY, v int)`, the table most tests use.
pub fn table_t() -> Relation {
    relation("t", &[("id", INT4), ("v", INT4)])
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
    ChangeBatch {
        version: FORMAT_VERSION,
        commit_lsn: lsn,
        commit_time_us: 0,
        xid: lsn as u32,
        seq,
        last,
        prev,
        emitted_at_us: 0,
        relations: vec![rel],
        changes: vec![Change {
            op,
            lsn,
            relation: 0,
            new: (op != Op::Delete).then_some(row),
            old: (op == Op::Delete).then_some((OldKind::Key, key)),
            truncate: None,
        }],
        source: None,
        copy: false,
    }
}

/// A whole one-message transaction inserting `(id, v)` into `public.t`, after the
/// transaction committed at `prev`.
pub fn tx(lsn: u64, prev: Option<u64>, id: &str, v: &str) -> ChangeBatch {
    message(
        lsn,
        0,
        true,
        prev.map(|p| pos(p, 0)),
        table_t(),
        Op::Insert,
        &[id, v],
    )
}

/// A group's stream on a real NATS server.
pub struct Group {
    pub name: &'static str,
    pub js: async_nats::jetstream::Context,
    url: String,
}

impl Group {
    pub async fn new(nats: &NatsServer, name: &'static str) -> Group {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        pg_flo::nats::ensure_stream(
            &js,
            &pg_flo::config::stream_name(name),
            &pg_flo::config::subject(name),
            None,
        )
        .await
        .unwrap();
        Group {
            name,
            js,
            url: nats.url(),
        }
    }

    /// Publishes without a message id: JetStream stores every copy, as it does for a replay
    /// after its duplicate window or a publish whose PubAck was lost.
    pub async fn publish(&self, b: &ChangeBatch) {
        self.js
            .publish(
                pg_flo::config::subject(self.name),
                b.encode().unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Messages in `stream` (0 when it does not exist).
    pub async fn messages_in(&self, stream: &str) -> u64 {
        match self.js.get_stream(stream).await {
            Ok(mut s) => s.info().await.unwrap().state.messages,
            Err(_) => 0,
        }
    }

    /// Messages not yet acked by a worker.
    pub async fn unacked(&self) -> u64 {
        self.messages_in(&pg_flo::config::stream_name(self.name))
            .await
    }

    /// Waits until a worker acked every message.
    pub async fn drained(&self) {
        wait_for(
            "the main stream drained",
            Duration::from_secs(60),
            || async { (self.unacked().await == 0).then_some(()) },
        )
        .await
        .unwrap();
    }

    /// `pg_flo worker <sink> --group <name> --nats-url <url>` with `args` after them.
    pub fn worker(&self, name: &str, sink: &str, args: &[String]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg_flo"));
        cmd.args([
            "worker",
            sink,
            "--group",
            self.name,
            "--nats-url",
            &self.url,
        ])
        .args(args);
        Process::spawn(name, cmd).unwrap()
    }
}

/// The postgres sink's flags for database `db` of `pg`, followed by `extra`.
pub fn target_args(pg: &PgCluster, db: &str, extra: &[&str]) -> Vec<String> {
    [
        "--target-host",
        pg.host(),
        "--target-port",
        &pg.port().to_string(),
        "--target-dbname",
        db,
        "--target-user",
        pg.user(),
        "--target-password",
        pg.password(),
        "--target-sslmode",
        "disable",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}
