//! The worker's ordering and effectively-once rules, driven by hand-made messages on a real
//! NATS JetStream and applied by the real `pg_flo worker postgres` to a real PostgreSQL.
//!
//! A message re-published after a newer one (NATS restarted mid-window) must be applied before
//! it; a message at or below the position the target already holds must be skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use e2e::dump_table;
use pg_flo::fixtures::{message, pos, table_t};
use pg_flo::message::{ChangeBatch, Op};
use support::Setup;

const GROUP: &str = "ordering";

/// A one-message transaction with one change to `public.t`.
fn batch(lsn: u64, prev: Option<u64>, op: Op, id: &str, v: &str) -> ChangeBatch {
    message(
        lsn,
        0,
        true,
        prev.map(|p| pos(p, 0)),
        table_t(),
        op,
        &[id, v],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_duplicate_messages_are_put_right() {
    let s = Setup::start(GROUP, "CREATE TABLE t (id int PRIMARY KEY, v int)").await;
    let target = s.target().await;
    let group = &s.group;

    // Source history: A inserts (1,1); B updates it to (1,2); C inserts (2,1); D deletes 2.
    let a = batch(100, None, Op::Insert, "1", "1");
    let b = batch(200, Some(100), Op::Update, "1", "2");
    let c = batch(300, Some(200), Op::Insert, "2", "1");
    let d = batch(400, Some(300), Op::Delete, "2", "1");
    // The stream got them as A, C, D, B (B re-published late), then A again.
    for m in [&a, &c, &d, &b, &a] {
        group.publish(m).await;
    }

    let mut worker = s.worker("worker", "postgres", &[]);

    group.drained().await;
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
    let _worker = s.worker("worker-again", "postgres", &[]);
    group.publish(&a).await;
    group
        .publish(&batch(500, Some(400), Op::Insert, "3", "3"))
        .await;
    group.drained().await;
    assert_eq!(
        dump_table(&target, "t", "id").await.unwrap(),
        "(1,2)\n(3,3)"
    );
}
