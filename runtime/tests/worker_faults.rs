//! The worker at its bad moments, with hand-made messages on a real NATS JetStream and the real
//! `pg_flo worker` (postgres sink on a real PostgreSQL, or stdout): dead letters in the middle
//! and at the end of a transaction, a rejection at COMMIT, a predecessor that never comes, a
//! restart between a lost publish and its re-publish, and a second worker for the same group.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::Duration;

use e2e::{dump_table, wait_for, wait_for_eq, Process};
use pg_flo::fixtures::{message, pos, public_table, table_t, text, tx};
use pg_flo::message::{ChangeBatch, Op, Position};
use pg_flo_source::oid::{INT4, TEXT};
use support::{wait_rows, Setup};

/// Message `seq` of the transaction committed at `lsn`, inserting `(id, v)` into `public.t`.
fn insert(
    lsn: u64,
    seq: u64,
    last: bool,
    prev: Option<Position>,
    id: &str,
    v: &str,
) -> ChangeBatch {
    message(lsn, seq, last, prev, table_t(), Op::Insert, &[id, v])
}

/// `(id, v)` of every NewTuple the stdout sink printed, in order.
fn printed(worker: &Process) -> Vec<(i64, i64)> {
    worker
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|j| {
            (
                j["NewTuple"]["id"].as_i64().unwrap(),
                j["NewTuple"]["v"].as_i64().unwrap(),
            )
        })
        .collect()
}

const CHECKED: &str = "CREATE TABLE t (id int PRIMARY KEY, v int CHECK (v > 0))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_final_part_ends_its_transaction() {
    let s = Setup::start("dlq-last", CHECKED).await;
    // Transaction 200 spans two messages; its final part is rejected by the target.
    s.publish(&tx(100, None, "1", "1")).await;
    s.publish(&insert(200, 0, false, Some(pos(100, 0)), "2", "2"))
        .await;
    s.publish(&insert(200, 1, true, Some(pos(200, 0)), "3", "-3"))
        .await;
    s.publish(&insert(300, 0, true, Some(pos(200, 1)), "4", "4"))
        .await;
    let mut w = s.worker("worker", "postgres", &["--dead-letter"]);
    let target = s.target().await;
    wait_rows(
        &target,
        "t",
        "every row but the rejected one",
        "(1,1)\n(2,2)\n(4,4)",
    )
    .await;
    s.group.drained().await;
    assert!(w.try_status().unwrap().is_none(), "{}", w.output_dump());
    assert_eq!(s.group.dead_letters().await, [pos(200, 1)]);
    // The stored position is past the dead letter's transaction.
    let row = target
        .query_one(
            "SELECT commit_lsn::text, seq FROM internal_pg_flo.applied_position",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "0/12C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_dead_letters_in_one_transaction_and_a_restart_between_them() {
    let s = Setup::start("dlq-several", CHECKED).await;
    s.publish(&tx(100, None, "1", "1")).await;
    s.publish(&insert(200, 0, false, Some(pos(100, 0)), "2", "-2"))
        .await;
    s.publish(&insert(200, 1, false, Some(pos(200, 0)), "3", "-3"))
        .await;
    s.publish(&insert(200, 2, true, Some(pos(200, 1)), "5", "5"))
        .await;
    let mut w = s.worker("worker", "postgres", &["--dead-letter"]);
    // Kill the worker as soon as the first dead letter is stored: the next one must not wait
    // for it (it is read back from the dead-letter stream).
    wait_for("the first dead letter", Duration::from_secs(60), || async {
        (!s.group.dead_letters().await.is_empty()).then_some(())
    })
    .await
    .unwrap();
    w.kill_9().unwrap();
    s.publish(&insert(300, 0, true, Some(pos(200, 2)), "6", "6"))
        .await;
    let mut w = s.worker("worker-again", "postgres", &["--dead-letter"]);
    let target = s.target().await;
    wait_rows(&target, "t", "the accepted rows", "(1,1)\n(5,5)\n(6,6)").await;
    s.group.drained().await;
    assert!(w.try_status().unwrap().is_none(), "{}", w.output_dump());
    assert_eq!(s.group.dead_letters().await, [pos(200, 0), pos(200, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_at_commit_is_dead_lettered_like_any_other() {
    // A deferred constraint trigger rejects at COMMIT, not when the row is written. ENABLE
    // ALWAYS: it fires for replicated changes too.
    let s = Setup::start(
        "dlq-commit",
        "CREATE TABLE t (id int PRIMARY KEY, v int);
         CREATE FUNCTION no_negative() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.v < 0 THEN RAISE EXCEPTION 'negative v'; END IF; RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER t_no_negative AFTER INSERT OR UPDATE ON t
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION no_negative();
         ALTER TABLE t ENABLE ALWAYS TRIGGER t_no_negative;",
    )
    .await;
    s.publish(&tx(100, None, "1", "1")).await;
    s.publish(&tx(200, Some(100), "2", "-2")).await;
    s.publish(&tx(300, Some(200), "3", "3")).await;
    let mut w = s.worker("worker", "postgres", &["--dead-letter"]);
    let target = s.target().await;
    wait_rows(&target, "t", "rows 1 and 3", "(1,1)\n(3,3)").await;
    s.group.drained().await;
    assert!(w.try_status().unwrap().is_none(), "{}", w.output_dump());
    assert_eq!(s.group.dead_letters().await, [pos(200, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_predecessor_that_never_comes_stops_the_worker_with_one_clear_error() {
    let s = Setup::start("gap", "CREATE TABLE t (id int PRIMARY KEY, v int)").await;
    s.publish(&tx(100, None, "1", "1")).await;
    // 300 follows 200, which was lost and is never re-published.
    s.publish(&tx(300, Some(200), "3", "3")).await;
    let mut w = s.worker("worker", "postgres", &["--gap-timeout", "6s"]);
    let status = w.wait_exit(Duration::from_secs(60)).await;
    let err = w.stderr();
    assert!(status.is_some_and(|s| !s.success()), "{err}");
    assert!(
        err.contains("message 0/12C#0 has waited")
            && err.contains("for its predecessor 0/C8#0, which is not in the stream"),
        "{err}"
    );
    assert!(err.contains("re-copy the group"), "{err}");
    // Delivery was restarted once to recover a lost delivery, not in a loop.
    assert_eq!(
        err.matches("a message waits for a predecessor; a delivery may have been lost")
            .count(),
        1,
        "{err}"
    );
    let target = s.target().await;
    assert_eq!(dump_table(&target, "t", "id").await.unwrap(), "(1,1)");
    // 300 is still in the stream, unacked.
    assert_eq!(s.group.unacked().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdout_worker_keeps_source_order_across_a_restart() {
    let s = Setup::start("restart", "SELECT 1").await;
    s.publish(&tx(100, None, "1", "1")).await;
    let mut w = s.worker("worker", "stdout", &[]);
    s.group.drained().await;
    assert_eq!(printed(&w), [(1, 1)]);
    w.kill_9().unwrap();
    // While no worker runs: 300 is stored, 200's publish was lost and is re-published after
    // it; 100 is delivered again (a publish whose PubAck was lost).
    s.publish(&tx(300, Some(200), "3", "3")).await;
    s.publish(&tx(200, Some(100), "2", "2")).await;
    s.publish(&tx(100, None, "1", "1")).await;
    let w = s.worker("worker-again", "stdout", &[]);
    s.group.drained().await;
    // Source order, nothing twice: the restarted worker knows it applied 100.
    assert_eq!(printed(&w), [(2, 2), (3, 3)], "{}", w.output_dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_waits_until_the_first_is_gone() {
    let s = Setup::start("lease", "CREATE TABLE t (id int PRIMARY KEY, v int)").await;
    let mut first = s.worker("first", "stdout", &[]);
    first
        .wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap();
    let second = s.worker("second", "stdout", &[]);
    second
        .wait_for_output("another worker applies this group", Duration::from_secs(60))
        .await
        .unwrap();
    for i in 1..=20u64 {
        let prev = (i > 1).then(|| (i - 1) * 100);
        s.publish(&tx(i * 100, prev, &i.to_string(), "1")).await;
    }
    s.group.drained().await;
    assert_eq!(printed(&first).len(), 20);
    assert!(printed(&second).is_empty(), "{}", second.output_dump());
    assert!(!second.stderr().contains("worker consuming"));
    // A clean stop releases the lease: the second worker takes over at once.
    first.terminate().unwrap();
    first.wait_exit(Duration::from_secs(30)).await.unwrap();
    second
        .wait_for_output("worker consuming", Duration::from_secs(10))
        .await
        .unwrap();
    s.publish(&tx(2100, Some(2000), "21", "1")).await;
    s.group.drained().await;
    assert_eq!(printed(&second), [(21, 1)], "{}", second.output_dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_beyond_the_memory_bound_are_fetched_again_in_order() {
    let s = Setup::start("held-bytes", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let rel = || public_table("t", &[("id", INT4), ("v", TEXT)]);
    let update = |lsn: u64, prev: u64, v: String| {
        let mut b = message(
            lsn,
            0,
            true,
            Some(pos(prev, 0)),
            rel(),
            Op::Update,
            &["1", "0"],
        );
        b.changes[0].new = Some(vec![text("1"), text(&v)]);
        b
    };
    s.publish(&message(100, 0, true, None, rel(), Op::Insert, &["1", "0"]))
        .await;
    // 80 updates of ~1 MB each (80 MB, more than the 32 MiB the worker holds) wait for 200.
    let pad = "x".repeat(1_000_000);
    for i in 1..=80u64 {
        s.publish(&update(200 + i, 200 + i - 1, format!("c{i:02}{pad}")))
            .await;
    }
    let w = s.worker("worker", "postgres", &[]);
    // The lost one arrives last.
    s.publish(&update(200, 100, "b".into())).await;
    let target = s.target().await;
    wait_for_eq(
        "the last update applied last",
        Duration::from_secs(120),
        "c80".to_owned(),
        || async {
            target
                .query_one("SELECT left(v, 3) FROM t WHERE id = 1", &[])
                .await
                .map(|r| r.get::<_, String>(0))
        },
    )
    .await
    .unwrap();
    s.group.drained().await;
    // Peak memory stays bounded (32 MiB held, 16 MiB fetched ahead, the sink's buffer), not
    // growing with the 80 MB that waited.
    let peak_kib = w.peak_rss_kib().unwrap();
    eprintln!("worker peak RSS: {} MiB", peak_kib / 1024);
    assert!(peak_kib < 128 * 1024, "worker peak RSS {peak_kib} kB");
    assert!(
        w.stderr()
            .contains("held messages over the memory bound were let go"),
        "{}",
        w.output_dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_whose_lease_expired_never_applies_again() {
    let s = Setup::start("fence", "SELECT 1").await;
    let first = s.worker("first", "stdout", &[]);
    first
        .wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap();
    s.publish(&tx(100, None, "1", "1")).await;
    s.group.drained().await;
    // The first worker freezes (a paused VM, a node cut off); the second takes over once the
    // lease expires (30 s).
    first.pause().unwrap();
    let second = s.worker("second", "stdout", &[]);
    second
        .wait_for_output("another worker applies this group", Duration::from_secs(30))
        .await
        .unwrap();
    second
        .wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap();
    // It comes back while the second worker runs: it must stop applying, not write.
    first.resume().unwrap();
    for i in 2..=6u64 {
        s.publish(&tx(i * 100, Some((i - 1) * 100), &i.to_string(), "1"))
            .await;
    }
    s.group.drained().await;
    first
        .wait_for_output("stopped applying", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(printed(&first), [(1, 1)], "{}", first.output_dump());
    assert_eq!(
        printed(&second),
        [(2, 1), (3, 1), (4, 1), (5, 1), (6, 1)],
        "{}",
        second.output_dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_larger_than_max_payload_is_stored_in_parts() {
    let s = Setup::start(
        "dlq-large",
        "CREATE TABLE t (id int PRIMARY KEY, v text CHECK (length(v) < 10))",
    )
    .await;
    let rel = || public_table("t", &[("id", INT4), ("v", TEXT)]);
    // A message just under the server's 1 MiB max_payload: with the dead letter's headers it
    // no longer fits one message.
    let big = message(
        100,
        0,
        true,
        None,
        rel(),
        Op::Insert,
        &["1", &"x".repeat(1_048_445)],
    );
    let raw = big.encode().unwrap();
    assert!(
        raw.len() > 1_048_300 && raw.len() < 1_048_576,
        "{}",
        raw.len()
    );
    s.publish(&big).await;
    s.publish(&message(
        200,
        0,
        true,
        Some(pos(100, 0)),
        rel(),
        Op::Insert,
        &["2", "ok"],
    ))
    .await;
    let mut w = s.worker("worker", "postgres", &["--dead-letter"]);
    let target = s.target().await;
    wait_rows(&target, "t", "the accepted row", "(2,ok)").await;
    s.group.drained().await;
    assert!(w.try_status().unwrap().is_none(), "{}", w.output_dump());
    // Stored in parts that, put together, are the original message.
    let stream = s
        .group
        .js
        .get_stream(pg_flo::nats::dead_letter_stream(s.group.name))
        .await
        .unwrap();
    let mut payload = Vec::new();
    let mut chunks = Vec::new();
    let mut seq = 1;
    while let Ok(m) = stream.get_raw_message(seq).await {
        chunks.push(m.headers.get("Pg-Flo-Chunk").unwrap().to_string());
        assert_eq!(m.headers.get("Pg-Flo-Position").unwrap().as_str(), "0/64#0");
        assert!(m.headers.get("Pg-Flo-Error").is_some());
        payload.extend_from_slice(&m.payload);
        seq += 1;
    }
    assert_eq!(chunks, ["1/2", "2/2"]);
    assert_eq!(payload, raw);
}
