//! The worker's failure policy for changes a sink rejects permanently: by default it stops and
//! keeps everything; with `--dead-letter` the rejected message goes to the dead-letter stream
//! and the rest flows on. Hand-made messages on a real NATS, the real worker binary, a real
//! PostgreSQL target that rejects one row (a CHECK constraint the source does not have).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use pg_flo::fixtures::tx as insert;
use pg_flo::message::{ChangeBatch, Position, Value};
use support::{wait_rows, Setup};

const GROUP: &str = "policy";

/// Source history: 1 ok, 2 rejected by the target, 3 ok.
async fn setup() -> Setup {
    let s = Setup::start(
        GROUP,
        "CREATE TABLE t (id int PRIMARY KEY, v int CHECK (v > 0))",
    )
    .await;
    for m in [
        insert(100, None, "1", "1"),
        insert(200, Some(100), "2", "-1"),
        insert(300, Some(200), "3", "3"),
    ] {
        s.publish(&m).await;
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_worker_stops_and_loses_nothing() {
    let s = setup().await;
    let mut w = s.worker("worker", "postgres", &[]);
    let status = w.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(!status.success());
    let err = w.stderr();
    assert!(err.contains("rejected a change permanently"), "{err}");
    assert!(err.contains("violates check constraint"), "{err}");
    assert!(err.contains("--dead-letter"), "{err}");
    // The rejected message and the one after it are still in the stream.
    let left = s.group.unacked().await;
    assert!(left >= 2, "{left} messages left");
    // After the target is fixed, a new worker applies everything.
    let target = s.target().await;
    target
        .batch_execute("ALTER TABLE t DROP CONSTRAINT t_v_check")
        .await
        .unwrap();
    let _w = s.worker("worker", "postgres", &[]);
    wait_rows(&target, "t", "all rows", "(1,1)\n(2,-1)\n(3,3)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dead_letter_the_rejected_change_is_set_aside_and_the_rest_flows() {
    let s = setup().await;
    let mut w = s.worker("worker", "postgres", &["--dead-letter"]);
    let target = s.target().await;
    wait_rows(&target, "t", "rows 1 and 3", "(1,1)\n(3,3)").await;
    s.group.drained().await;
    assert!(w.try_status().unwrap().is_none(), "{}", w.output_dump());
    // The rejected message, readable from the dead-letter subject's stream, with the error.
    let msg = s.group.last_dead_letter().await.unwrap();
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
        Value::Text(b"-1".to_vec().into())
    );
    assert_eq!(
        s.group
            .messages_in(&pg_flo::nats::dead_letter_stream(GROUP))
            .await,
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
    s.group.publish(&insert(400, Some(300), "4", "-4")).await;
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
