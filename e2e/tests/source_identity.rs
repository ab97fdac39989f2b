//! End-to-end: the target knows which source it follows. A group replicated into a target,
//! removed with `--cleanup`, and re-created with the same name against another cluster (a new
//! `initdb`, whose LSNs are lower than the ones the target stored): streaming must stop with
//! the mismatch error instead of skipping everything as "already applied"; a new copy starts
//! the position over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use e2e::{dump_table, wait_for_eq, PgCluster, PgOptions, Pipeline, Process, ARRIVAL_TIMEOUT};
use tokio_postgres::Client;

const GROUP: &str = "swap";
const TABLE: &str = "CREATE TABLE public.items (id int PRIMARY KEY, v text)";

/// The target's stored row of the group: commit LSN, system identifier, slot origin.
async fn stored(target: &Client) -> (String, Option<String>, Option<String>) {
    let row = target
        .query_one(
            "SELECT commit_lsn::text, source_system_identifier::text, source_slot_origin::text
             FROM internal_pg_flo.applied_position WHERE group_name = $1",
            &[&GROUP],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn system_identifier(c: &Client) -> String {
    c.query_one(
        "SELECT system_identifier::text FROM pg_control_system()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn stop(mut p: Process) {
    p.terminate().unwrap();
    let status = p.wait_exit(Duration::from_secs(60)).await;
    assert!(status.is_some(), "{} did not stop", p.name());
}

/// Replicates ids 1..=6 of cluster A's `source` into `target`, with A's WAL pushed several
/// segments ahead, then stops and removes the group (`--cleanup`). Returns the stored LSN.
async fn replicate_then_clean_up(p: &Pipeline) -> String {
    p.both(TABLE).await.unwrap();
    let r = p.start_replicator(GROUP, "items").await.unwrap();
    let w = p.start_pg_worker(GROUP).await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute("INSERT INTO items SELECT g, 'old' FROM generate_series(1, 5) g")
        .await
        .unwrap();
    for i in 0..6 {
        src.batch_execute(&format!(
            "UPDATE items SET v = 'old{i}' WHERE id = 1; SELECT pg_switch_wal()"
        ))
        .await
        .unwrap();
    }
    src.batch_execute("INSERT INTO items VALUES (6, 'old')")
        .await
        .unwrap();
    p.wait_equal("public.items", "id").await.unwrap();
    let target = p.target().await.unwrap();
    let (lsn, system, origin) = stored(&target).await;
    assert_eq!(system, Some(system_identifier(&src).await));
    assert!(origin.is_some());
    stop(w).await;
    stop(r).await;
    let mut args = p.replicator_args(GROUP, "items");
    args.push("--cleanup".into());
    let mut c = Pipeline::spawn("cleanup", &args).unwrap();
    let status = c.wait_exit(ARRIVAL_TIMEOUT).await.unwrap();
    assert!(status.success(), "{}", c.output_dump());
    // `--cleanup` leaves the target alone: the position is still there.
    assert_eq!(stored(&target).await.0, lsn);
    lsn
}

/// Cluster B (a new `initdb`) with database `source` and the table.
async fn new_source() -> PgCluster {
    let b = PgCluster::start(PgOptions::default()).await.unwrap();
    b.create_database("source").await.unwrap();
    b.client("source")
        .await
        .unwrap()
        .batch_execute(TABLE)
        .await
        .unwrap();
    b
}

/// Replicator flags for the group against cluster `b`.
fn replicator_on(p: &Pipeline, b: &PgCluster) -> Vec<String> {
    let mut args = p.replicator_args(GROUP, "items");
    let at = args.iter().position(|a| a == "--port").unwrap();
    args[at + 1] = b.port().to_string();
    args
}

async fn lsn_below(c: &Client, lsn: &str) -> bool {
    c.query_one("SELECT pg_current_wal_lsn() < $1::text::pg_lsn", &[&lsn])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_from_a_replaced_source_stops_with_the_remedy_and_applies_nothing() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    let old_lsn = replicate_then_clean_up(&p).await;
    let target = p.target().await.unwrap();
    let before = dump_table(&target, "public.items", "id").await.unwrap();

    let b = new_source().await;
    let bsrc = b.client("source").await.unwrap();
    let r = Pipeline::spawn("replicator-b", &replicator_on(&p, &b)).unwrap();
    r.wait_streaming().await.unwrap();
    bsrc.batch_execute("INSERT INTO items SELECT g, 'new' FROM generate_series(100, 102) g")
        .await
        .unwrap();
    // Every change of B is below what the target stored: today's skip would swallow them.
    assert!(
        lsn_below(&bsrc, &old_lsn).await,
        "B must be behind {old_lsn}"
    );

    let mut w = Pipeline::spawn("worker-b", &p.pg_worker_args(GROUP)).unwrap();
    let status = w.wait_exit(ARRIVAL_TIMEOUT).await;
    let out = w.output_dump();
    assert!(
        status.is_some_and(|s| !s.success()),
        "worker must stop with an error: {out}"
    );
    for needle in [
        "belongs to another source",
        &format!("system identifier {}", system_identifier(&bsrc).await),
        "--copy-and-stream",
        "DELETE FROM internal_pg_flo.applied_position WHERE group_name = 'swap'",
    ] {
        assert!(out.contains(needle), "{needle:?} missing: {out}");
    }
    assert_eq!(
        dump_table(&target, "public.items", "id").await.unwrap(),
        before
    );
    assert_eq!(stored(&target).await.0, old_lsn);

    // The remedy named in the error: forget the old position; B's changes then arrive.
    target
        .batch_execute("DELETE FROM internal_pg_flo.applied_position WHERE group_name = 'swap'")
        .await
        .unwrap();
    let _w = p.start_pg_worker(GROUP).await.unwrap();
    wait_for_eq("B's rows in the target", ARRIVAL_TIMEOUT, 3i64, || async {
        target
            .query_one("SELECT count(*) FROM items WHERE v = 'new'", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
    })
    .await
    .unwrap();
    assert_eq!(
        stored(&target).await.1,
        Some(system_identifier(&bsrc).await)
    );
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_replaced_source_starts_the_position_over() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    let old_lsn = replicate_then_clean_up(&p).await;
    let target = p.target().await.unwrap();

    let b = new_source().await;
    let bsrc = b.client("source").await.unwrap();
    // B covers A's keys with other values, and more.
    bsrc.batch_execute("INSERT INTO items SELECT g, 'copied' FROM generate_series(1, 8) g")
        .await
        .unwrap();
    let mut args = replicator_on(&p, &b);
    args.push("--copy-and-stream".into());
    let r = Pipeline::spawn("replicator-b", &args).unwrap();
    r.wait_streaming().await.unwrap();
    bsrc.batch_execute(
        "INSERT INTO items VALUES (9, 'streamed'); UPDATE items SET v = 'changed' WHERE id = 2",
    )
    .await
    .unwrap();
    assert!(
        lsn_below(&bsrc, &old_lsn).await,
        "B must be behind {old_lsn}"
    );

    let w = p.start_pg_worker(GROUP).await.unwrap();
    let expected = dump_table(&bsrc, "public.items", "id").await.unwrap();
    wait_for_eq("target equal to B", ARRIVAL_TIMEOUT, expected, || {
        dump_table(&target, "public.items", "id")
    })
    .await
    .unwrap();
    let (lsn, system, _) = stored(&target).await;
    assert_eq!(system, Some(system_identifier(&bsrc).await));
    assert!(lsn_below(&bsrc, &old_lsn).await);
    assert_ne!(lsn, old_lsn);
    drop((w, r));
}
