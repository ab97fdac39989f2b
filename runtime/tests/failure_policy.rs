//! The worker's failure policy for changes a sink rejects permanently: by default it stops and
//! keeps everything; with `--dead-letter` the rejected message goes to the dead-letter stream
//! and the rest flows on. Hand-made messages on a real NATS, the real worker binary, a real
//! PostgreSQL target that rejects one row (a CHECK constraint the source does not have).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;
use std::time::Duration;

use e2e::{dump_table, wait_for, wait_for_eq, NatsServer, PgCluster, PgOptions, Process};
use futures_util::StreamExt;
use pg_flo::message::{
    Change, ChangeBatch, Column, KeyKind, Op, Position, Relation, ReplicationKey, Value,
    FORMAT_VERSION,
};

fn insert(lsn: u64, prev: Option<u64>, id: &str, v: &str) -> ChangeBatch {
    let col = |name: &str, identity| Column {
        name: name.into(),
        type_oid: 23,
        type_modifier: -1,
        identity,
    };
    ChangeBatch {
        version: FORMAT_VERSION,
        commit_lsn: lsn,
        commit_time_us: 0,
        xid: 1,
        seq: 0,
        last: true,
        prev: prev.map(|p| Position {
            commit_lsn: p,
            seq: 0,
        }),
        emitted_at_us: 0,
        relations: vec![Relation {
            oid: 1,
            schema: "public".into(),
            table: "t".into(),
            columns: vec![col("id", true), col("v", false)],
            key: ReplicationKey {
                kind: KeyKind::PrimaryKey,
                columns: vec!["id".into()],
            },
        }],
        changes: vec![Change {
            op: Op::Insert,
            lsn,
            relation: 0,
            new: Some(vec![
                Value::Text(id.as_bytes().to_vec()),
                Value::Text(v.as_bytes().to_vec()),
            ]),
            old: None,
            truncate: None,
        }],
        source: None,
        copy: false,
    }
}

struct Setup {
    pg: PgCluster,
    nats: NatsServer,
    js: async_nats::jetstream::Context,
}

const GROUP: &str = "policy";

async fn setup() -> Setup {
    let pg = PgCluster::start(PgOptions::default()).await.unwrap();
    pg.create_database("target").await.unwrap();
    pg.client("target")
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int CHECK (v > 0))")
        .await
        .unwrap();
    let nats = NatsServer::start().await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    pg_flo::nats::ensure_stream(
        &js,
        &pg_flo::config::stream_name(GROUP),
        &pg_flo::config::subject(GROUP),
        None,
    )
    .await
    .unwrap();
    // Source history: 1 ok, 2 rejected by the target, 3 ok.
    let msgs = [
        insert(100, None, "1", "1"),
        insert(200, Some(100), "2", "-1"),
        insert(300, Some(200), "3", "3"),
    ];
    for m in &msgs {
        js.publish(pg_flo::config::subject(GROUP), m.encode().unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    Setup { pg, nats, js }
}

fn worker(s: &Setup, extra: &[&str]) -> Process {
    let port = s.pg.port().to_string();
    let url = s.nats.url();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg_flo"));
    cmd.args([
        "worker",
        "postgres",
        "--group",
        GROUP,
        "--nats-url",
        &url,
        "--target-host",
        s.pg.host(),
        "--target-port",
        &port,
        "--target-dbname",
        "target",
        "--target-user",
        s.pg.user(),
        "--target-password",
        s.pg.password(),
        "--target-sslmode",
        "disable",
    ]);
    cmd.args(extra);
    Process::spawn("worker", cmd).unwrap()
}

async fn messages_in(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.unwrap().state.messages,
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_worker_stops_and_loses_nothing() {
    let s = setup().await;
    let mut w = worker(&s, &[]);
    let status = w.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(!status.success());
    let err = w.stderr();
    assert!(err.contains("rejected a change permanently"), "{err}");
    assert!(err.contains("violates check constraint"), "{err}");
    assert!(err.contains("--dead-letter"), "{err}");
    // The rejected message and the one after it are still in the stream.
    let left = messages_in(&s.js, &pg_flo::config::stream_name(GROUP)).await;
    assert!(left >= 2, "{left} messages left");
    // After the target is fixed, a new worker applies everything.
    let target = s.pg.client("target").await.unwrap();
    target
        .batch_execute("ALTER TABLE t DROP CONSTRAINT t_v_check")
        .await
        .unwrap();
    let _w = worker(&s, &[]);
    wait_for_eq(
        "all rows",
        Duration::from_secs(60),
        "(1,1)\n(2,-1)\n(3,3)".to_owned(),
        || dump_table(&target, "t", "id"),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dead_letter_the_rejected_change_is_set_aside_and_the_rest_flows() {
    let s = setup().await;
    let mut w = worker(&s, &["--dead-letter"]);
    let target = s.pg.client("target").await.unwrap();
    wait_for_eq(
        "rows 1 and 3",
        Duration::from_secs(60),
        "(1,1)\n(3,3)".to_owned(),
        || dump_table(&target, "t", "id"),
    )
    .await
    .unwrap();
    wait_for(
        "the main stream drained",
        Duration::from_secs(60),
        || async {
            (messages_in(&s.js, &pg_flo::config::stream_name(GROUP)).await == 0).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(w.try_status().unwrap().is_none(), "{}", w.output_dump());
    // The rejected message, readable from the dead-letter subject's stream, with the error.
    let dlq =
        s.js.get_stream(pg_flo::nats::dead_letter_stream(GROUP))
            .await
            .unwrap();
    let msg = dlq
        .get_last_raw_message_by_subject(&pg_flo::nats::dead_letter_subject(GROUP))
        .await
        .unwrap();
    let error = msg.headers.get("Pg-Flo-Error").unwrap().to_string();
    assert!(error.contains("violates check constraint"), "{error}");
    let batch = ChangeBatch::decode(&msg.payload).unwrap();
    assert_eq!(
        batch.position(),
        Position {
            commit_lsn: 200,
            seq: 0
        }
    );
    assert_eq!(
        batch.changes[0].new.as_ref().unwrap()[1],
        Value::Text(b"-1".to_vec())
    );
    assert_eq!(
        messages_in(&s.js, &pg_flo::nats::dead_letter_stream(GROUP)).await,
        1
    );
    let m = w.stderr();
    assert!(
        m.contains("moving a rejected message to the dead-letter subject"),
        "{m}"
    );
    // A subscriber on the subject sees new dead letters live, too.
    let mut sub = async_nats::connect(s.nats.url())
        .await
        .unwrap()
        .subscribe(pg_flo::nats::dead_letter_subject(GROUP))
        .await
        .unwrap();
    s.js.publish(
        pg_flo::config::subject(GROUP),
        insert(400, Some(300), "4", "-4").encode().unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let live = tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ChangeBatch::decode(&live.payload)
            .unwrap()
            .position()
            .commit_lsn,
        400
    );
}
