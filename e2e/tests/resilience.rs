//! End-to-end: crashes and restarts while the source keeps writing. Afterwards the target
//! must equal the source row for row (no loss, no duplicate effects).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use e2e::{count, wait_for, PgOptions, Pipeline, Process};
use tokio::task::JoinHandle;

const TABLE: &str = "CREATE TABLE events (id int PRIMARY KEY, v int NOT NULL, note text)";

/// Writes `ops` single-statement transactions (inserts, updates, deletes) plus a few
/// multi-statement ones; reports progress through `done`.
fn writer(p: &Pipeline, ops: i32, progress: Arc<std::sync::atomic::AtomicI32>) -> JoinHandle<()> {
    let conn = p.pg.conn_string(&p.source_db);
    tokio::spawn(async move {
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        for i in 1..=ops {
            client
                .execute(
                    "INSERT INTO events VALUES ($1, 0, $2)",
                    &[&i, &format!("n{i}")],
                )
                .await
                .unwrap();
            if i % 3 == 0 {
                client
                    .execute("UPDATE events SET v = v + 1 WHERE id = $1", &[&(i / 2)])
                    .await
                    .unwrap();
            }
            if i % 5 == 0 {
                client
                    .execute("DELETE FROM events WHERE id = $1", &[&(i / 3)])
                    .await
                    .unwrap();
            }
            if i % 50 == 0 {
                client
                    .batch_execute(&format!(
                        "BEGIN; UPDATE events SET v = v + 10 WHERE id > {} AND id <= {i}; DELETE FROM events WHERE id = {}; COMMIT;",
                        i - 20,
                        i - 1
                    ))
                    .await
                    .unwrap();
            }
            progress.store(i, Ordering::Relaxed);
        }
    })
}

async fn wait_progress(progress: &std::sync::atomic::AtomicI32, at: i32) {
    wait_for("writer progress", Duration::from_secs(120), || async {
        (progress.load(Ordering::Relaxed) >= at).then_some(())
    })
    .await
    .unwrap();
}

async fn setup() -> (Pipeline, Process, Process) {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(TABLE).await.unwrap();
    let r = p.start_replicator("crash", "events").await.unwrap();
    let w = p.start_pg_worker("crash").await.unwrap();
    (p, r, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_replicator_while_writing_loses_nothing() {
    let (p, mut r, _w) = setup().await;
    let progress = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let job = writer(&p, 1500, progress.clone());
    for at in [300, 900] {
        wait_progress(&progress, at).await;
        r.kill_9().unwrap();
        r = p.start_replicator("crash", "events").await.unwrap();
    }
    job.await.unwrap();
    p.wait_equal("public.events", "id").await.unwrap();
    assert!(
        count(&p.target().await.unwrap(), "public.events")
            .await
            .unwrap()
            > 1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_worker_while_writing_loses_nothing() {
    let (p, _r, mut w) = setup().await;
    let progress = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let job = writer(&p, 1500, progress.clone());
    for at in [300, 900] {
        wait_progress(&progress, at).await;
        w.kill_9().unwrap();
        w = p.start_pg_worker("crash").await.unwrap();
    }
    job.await.unwrap();
    p.wait_equal("public.events", "id").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_while_writing_loses_nothing() {
    let (mut p, r, w) = setup().await;
    let progress = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let job = writer(&p, 1500, progress.clone());
    wait_progress(&progress, 400).await;
    p.nats.restart().await.unwrap();
    wait_progress(&progress, 1000).await;
    p.nats.kill().unwrap();
    p.nats.start_again().await.unwrap();
    job.await.unwrap();
    p.wait_equal("public.events", "id").await.unwrap();
    // Both processes rode it out (they may have reconnected, but did not exit).
    let (mut r, mut w) = (r, w);
    assert!(r.try_status().unwrap().is_none(), "{}", r.output_dump());
    assert!(w.try_status().unwrap().is_none(), "{}", w.output_dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_makes_the_replicator_wait_and_nothing_is_lost() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(TABLE).await.unwrap();
    // A stream far smaller than the workload; no worker yet to drain it.
    let r = p
        .start_replicator_with("small", "events", &["--nats-stream-max-bytes", "64KiB"])
        .await
        .unwrap();
    let src = p.source().await.unwrap();
    for i in 0..2000 {
        src.execute("INSERT INTO events VALUES ($1, 0, repeat('x', 100))", &[&i])
            .await
            .unwrap();
    }
    r.wait_for_output("stream is full", Duration::from_secs(60))
        .await
        .unwrap();
    let mut r = r;
    assert!(
        r.try_status().unwrap().is_none(),
        "the replicator gave up:\n{}",
        r.output_dump()
    );
    let _w = p.start_pg_worker("small").await.unwrap();
    p.wait_equal("public.events", "id").await.unwrap();
    assert_eq!(
        count(&p.target().await.unwrap(), "public.events")
            .await
            .unwrap(),
        2000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_both_processes_cleanly_and_they_resume() {
    let (p, mut r, mut w) = setup().await;
    let src = p.source().await.unwrap();
    src.batch_execute("INSERT INTO events SELECT g, 0, 'a' FROM generate_series(1, 500) g")
        .await
        .unwrap();
    p.wait_equal("public.events", "id").await.unwrap();
    r.terminate().unwrap();
    w.terminate().unwrap();
    let rs = r.wait_exit(Duration::from_secs(30)).await.unwrap();
    let ws = w.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(rs.success(), "replicator: {rs:?}\n{}", r.output_dump());
    assert!(ws.success(), "worker: {ws:?}\n{}", w.output_dump());
    assert!(r.stderr().contains("replicator stopped"), "{}", r.stderr());
    // Changes made while both are down arrive after a restart.
    src.batch_execute("UPDATE events SET v = 1 WHERE id <= 100; DELETE FROM events WHERE id > 400")
        .await
        .unwrap();
    let _r = p.start_replicator("crash", "events").await.unwrap();
    let _w = p.start_pg_worker("crash").await.unwrap();
    p.wait_equal("public.events", "id").await.unwrap();
}

/// A replicator started while the source is down (restarting, or a link still coming back)
/// retries its start as it retries streaming, instead of exiting at once; once the source is
/// back it streams and nothing is missed (found by the chaos run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicator_started_while_the_source_is_down_waits_for_it() {
    let mut p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(TABLE).await.unwrap();
    p.pg.stop().await.unwrap();
    let mut r = Pipeline::spawn("replicator", &p.replicator_args("late", "events")).unwrap();
    r.wait_for_output(
        "replicator could not start; retrying",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(r.try_status().unwrap().is_none(), "{}", r.output_dump());
    p.pg.start_again().await.unwrap();
    r.wait_streaming().await.unwrap();
    let w = p.start_pg_worker("late").await.unwrap();
    p.source()
        .await
        .unwrap()
        .batch_execute("INSERT INTO events VALUES (1, 1, 'after the outage')")
        .await
        .unwrap();
    p.wait_equal("public.events", "id")
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", r.output_dump(), w.output_dump()));
}
