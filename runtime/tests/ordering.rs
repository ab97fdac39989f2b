//! The worker's ordering and effectively-once rules, driven by hand-made messages on a real
//! NATS JetStream and applied by the real `pg_flo worker postgres` to a real PostgreSQL.
//!
//! A message re-published after a newer one (NATS restarted mid-window) must be applied before
//! it; a message at or below the position the target already holds must be skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;
use std::time::Duration;

use e2e::{dump_table, wait_for_eq, NatsServer, PgCluster, PgOptions, Process};
use pg_flo::message::{
    Change, ChangeBatch, Column, KeyKind, OldKind, Op, Position, Relation, ReplicationKey, Value,
    FORMAT_VERSION,
};

const GROUP: &str = "ordering";

fn relation() -> Relation {
    let col = |name: &str, identity| Column {
        name: name.into(),
        type_oid: 23,
        type_modifier: -1,
        identity,
    };
    Relation {
        oid: 1,
        schema: "public".into(),
        table: "t".into(),
        columns: vec![col("id", true), col("v", false)],
        key: ReplicationKey {
            kind: KeyKind::PrimaryKey,
            columns: vec!["id".into()],
        },
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.as_bytes().to_vec())
}

fn batch(lsn: u64, prev: Option<u64>, op: Op, id: &str, v: &str) -> ChangeBatch {
    let row = vec![text(id), text(v)];
    ChangeBatch {
        version: FORMAT_VERSION,
        commit_lsn: lsn,
        commit_time_us: 0,
        xid: lsn as u32,
        seq: 0,
        last: true,
        prev: prev.map(|p| Position {
            commit_lsn: p,
            seq: 0,
        }),
        emitted_at_us: 0,
        relations: vec![relation()],
        changes: vec![Change {
            op,
            lsn,
            relation: 0,
            new: (op != Op::Delete).then(|| row.clone()),
            old: (op == Op::Delete).then(|| (OldKind::Key, vec![text(id), Value::Null])),
            truncate: None,
        }],
        source: None,
        copy: false,
    }
}

async fn publish(js: &async_nats::jetstream::Context, b: &ChangeBatch) {
    // No Nats-Msg-Id: the test wants JetStream to store every copy, duplicates included.
    js.publish(pg_flo::config::subject(GROUP), b.encode().unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn stream_messages(js: &async_nats::jetstream::Context) -> u64 {
    let mut s = js
        .get_stream(pg_flo::config::stream_name(GROUP))
        .await
        .unwrap();
    s.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_duplicate_messages_are_put_right() {
    let pg = PgCluster::start(PgOptions::default()).await.unwrap();
    pg.create_database("target").await.unwrap();
    let target = pg.client("target").await.unwrap();
    target
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
        .await
        .unwrap();
    let nats = NatsServer::start().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    pg_flo::nats::ensure_stream(
        &js,
        &pg_flo::config::stream_name(GROUP),
        &pg_flo::config::subject(GROUP),
        None,
    )
    .await
    .unwrap();

    // Source history: A inserts (1,1); B updates it to (1,2); C inserts (2,1); D deletes 2.
    let a = batch(100, None, Op::Insert, "1", "1");
    let b = batch(200, Some(100), Op::Update, "1", "2");
    let c = batch(300, Some(200), Op::Insert, "2", "1");
    let d = batch(400, Some(300), Op::Delete, "2", "1");
    // The stream got them as A, C, D, B (B re-published late), then A again.
    for m in [&a, &c, &d, &b, &a] {
        publish(&js, m).await;
    }

    let args = [
        "worker",
        "postgres",
        "--group",
        GROUP,
        "--nats-url",
        &nats.url(),
        "--target-host",
        pg.host(),
        "--target-port",
        &pg.port().to_string(),
        "--target-dbname",
        "target",
        "--target-user",
        pg.user(),
        "--target-password",
        pg.password(),
        "--target-sslmode",
        "disable",
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg_flo"));
    cmd.args(args);
    let mut worker = Process::spawn("worker", cmd).unwrap();

    wait_for_eq(
        "every message acked",
        Duration::from_secs(60),
        0u64,
        || async { Ok::<_, std::convert::Infallible>(stream_messages(&js).await) },
    )
    .await
    .unwrap();
    // Applied in source order: B after A (v = 2), C then D (row 2 gone).
    assert_eq!(dump_table(&target, "t", "id").await.unwrap(), "(1,2)");
    let row = target
        .query_one(
            "SELECT commit_lsn::text, seq FROM internal_pg_flo.applied_position WHERE group_name = $1",
            &[&GROUP],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "0/190");
    assert_eq!(row.get::<_, i64>(1), 0);

    // After a restart the worker reads the applied position from the target: an old message
    // delivered again must not undo newer ones.
    worker.kill_9().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg_flo"));
    cmd.args(args);
    let _worker = Process::spawn("worker-again", cmd).unwrap();
    publish(&js, &a).await;
    publish(&js, &batch(500, Some(400), Op::Insert, "3", "3")).await;
    wait_for_eq(
        "every message acked",
        Duration::from_secs(60),
        0u64,
        || async { Ok::<_, std::convert::Infallible>(stream_messages(&js).await) },
    )
    .await
    .unwrap();
    assert_eq!(
        dump_table(&target, "t", "id").await.unwrap(),
        "(1,2)\n(3,3)"
    );
}
