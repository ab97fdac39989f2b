//! End-to-end: the initial load (`--copy`, `--copy-and-stream`) with the real binaries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::{count, wait_for_eq, PgOptions, Pipeline, ARRIVAL_TIMEOUT};
use tokio_postgres::Client;

const MIXED: &str = "CREATE TABLE public.mixed (
    id bigint PRIMARY KEY,
    user_id bigint NOT NULL,
    email varchar(255),
    data jsonb,
    balance numeric(15,2),
    created_at timestamptz,
    tags text[],
    flag boolean,
    note text
)";

/// `n` rows of mixed types (some NULL, some '', quotes, tabs and newlines), never analysed.
fn fill(n: i64) -> String {
    format!(
        "INSERT INTO public.mixed
         SELECT g, g * 7, 'user' || g || '@example.com',
                jsonb_build_object('k', 'v' || g, 'n', g, 'nested', jsonb_build_array(g, 'x\ty', null)),
                (g * 1.5)::numeric(15,2),
                timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
                ARRAY['a' || g, 'q\"uote', 'back\\\\slash', NULL],
                g % 2 = 0,
                CASE WHEN g % 10 = 0 THEN NULL WHEN g % 10 = 1 THEN '' ELSE E'line\\nbreak ' || g END
         FROM generate_series(1, {n}) g;
         INSERT INTO public.mixed (id, user_id, data)
         VALUES ({n} + 1, 0, (SELECT jsonb_agg(g) FROM generate_series(1, 10000) g))"
    )
}

/// md5 over the md5s of every row's text form, in key order.
async fn digest(c: &Client, table: &str, key: &str) -> String {
    c.query_one(
        &format!("SELECT coalesce(md5(string_agg(md5(t::text), '' ORDER BY {key})), 'empty') FROM {table} t"),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn wait_same(p: &Pipeline, table: &str, key: &str) {
    let src = p.source().await.unwrap();
    let dst = p.target().await.unwrap();
    let expected = digest(&src, table, key).await;
    wait_for_eq(
        &format!("{table} digest equal in the target"),
        Duration::from_secs(300),
        expected,
        || async { Ok::<_, std::convert::Infallible>(digest(&dst, table, key).await) },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_only_of_a_never_analysed_million_rows_exits_by_itself() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(MIXED).await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute(&fill(1_000_000)).await.unwrap();
    let relpages: i32 = src
        .query_one("SELECT relpages FROM pg_class WHERE relname = 'mixed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(relpages, 0, "the table must not be analysed for this test");
    let _w = p.start_pg_worker("bulk").await.unwrap();
    let mut args = p.replicator_args("bulk", "mixed");
    args.extend([
        "--copy".into(),
        "--max-copy-workers-per-table".into(),
        "4".into(),
    ]);
    let mut r = Pipeline::spawn("replicator", &args).unwrap();
    let status = r.wait_exit(Duration::from_secs(600)).await.unwrap();
    assert!(status.success(), "{}", r.output_dump());
    wait_same(&p, "public.mixed", "id").await;
    assert_eq!(
        count(&p.target().await.unwrap(), "public.mixed")
            .await
            .unwrap(),
        1_000_001
    );
    // The slot stays for a later --stream run, which continues without a gap.
    src.batch_execute(
        "UPDATE mixed SET note = 'after copy' WHERE id = 5; DELETE FROM mixed WHERE id = 6",
    )
    .await
    .unwrap();
    let _r = p.start_replicator("bulk", "mixed").await.unwrap();
    wait_same(&p, "public.mixed", "id").await;
}

/// The worker writes a copy's rows with `COPY ... FROM STDIN`. Rows of the target that already
/// hold some of the copied keys (a target filled by hand, or by an earlier copy) make that COPY
/// fail with a unique violation: the worker rolls back, applies the table's inserts as
/// upserts from then on, and the target ends equal to the source, stale rows overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_into_a_target_already_holding_some_rows_overwrites_them() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(MIXED).await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute(&fill(20_000)).await.unwrap();
    let dst = p.target().await.unwrap();
    dst.batch_execute(
        "INSERT INTO public.mixed (id, user_id, note) SELECT g, -1, 'stale' FROM generate_series(15000, 15099) g",
    )
    .await
    .unwrap();
    let w = p.start_pg_worker("prefilled").await.unwrap();
    let mut args = p.replicator_args("prefilled", "mixed");
    args.push("--copy".into());
    let mut r = Pipeline::spawn("replicator", &args).unwrap();
    let status = r.wait_exit(Duration::from_secs(300)).await.unwrap();
    assert!(status.success(), "{}", r.output_dump());
    wait_same(&p, "public.mixed", "id").await;
    assert_eq!(count(&dst, "public.mixed").await.unwrap(), 20_001);
    let log = w.stderr();
    assert!(
        log.contains("applying the table's inserts as upserts from now on"),
        "the worker did not fall back to upserts:\n{log}"
    );
    assert!(!log.contains("stale"), "a value reached the log:\n{log}");
}

/// Random single-row writes until `stop`, deterministic per `seed`.
fn writer(
    p: &Pipeline,
    seed: u64,
    rows: i64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let conn = p.pg.conn_string(&p.source_db);
    tokio::spawn(async move {
        let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        let mut ops = 0u64;
        let mut new_id = rows + 10;
        while !stop.load(Ordering::Relaxed) {
            let id = (next() % rows as u64) as i64 + 1;
            match next() % 3 {
                0 => {
                    new_id += 1;
                    c.execute(
                        "INSERT INTO mixed (id, user_id, note) VALUES ($1, $2, 'inserted during copy')",
                        &[&new_id, &id],
                    )
                    .await
                    .unwrap();
                }
                1 => {
                    c.execute(
                        "UPDATE mixed SET balance = balance + 1, note = 'updated' WHERE id = $1",
                        &[&id],
                    )
                    .await
                    .unwrap();
                }
                _ => {
                    c.execute("DELETE FROM mixed WHERE id = $1", &[&id])
                        .await
                        .unwrap();
                }
            }
            ops += 1;
        }
        ops
    })
}

async fn copy_and_stream_under_writes(seed: u64) {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(MIXED).await.unwrap();
    let rows = 100_000;
    p.source()
        .await
        .unwrap()
        .batch_execute(&fill(rows))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let job = writer(&p, seed, rows, stop.clone());
    let _w = p.start_pg_worker("cs").await.unwrap();
    let mut args = p.replicator_args("cs", "mixed");
    args.extend([
        "--copy-and-stream".into(),
        "--max-copy-workers-per-table".into(),
        "3".into(),
    ]);
    let r = Pipeline::spawn("replicator", &args).unwrap();
    r.wait_for_output(
        "initial copy published and acknowledged",
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    // Keep writing a little into the streaming phase too.
    r.wait_streaming().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let ops = job.await.unwrap();
    assert!(ops > 50, "only {ops} concurrent writes ran");
    wait_same(&p, "public.mixed", "id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_stream_with_concurrent_writes_seed_1() {
    copy_and_stream_under_writes(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_stream_with_concurrent_writes_seed_2() {
    copy_and_stream_under_writes(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_stream_with_concurrent_writes_seed_3() {
    copy_and_stream_under_writes(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_copy_then_restart_converges() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(MIXED).await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute(&fill(300_000)).await.unwrap();
    let _w = p.start_pg_worker("killed").await.unwrap();
    let mut args = p.replicator_args("killed", "mixed");
    args.extend([
        "--copy-and-stream".into(),
        "--max-copy-workers-per-table".into(),
        "2".into(),
    ]);
    let mut r = Pipeline::spawn("replicator", &args).unwrap();
    // Wait until part of the copy reached the target, then kill it mid-copy.
    let dst = p.target().await.unwrap();
    e2e::wait_for(
        "part of the copy in the target",
        ARRIVAL_TIMEOUT,
        || async { (count(&dst, "public.mixed").await.unwrap() > 1000).then_some(()) },
    )
    .await
    .unwrap();
    r.kill_9().unwrap();
    assert!(
        !r.stderr()
            .contains("initial copy published and acknowledged"),
        "the copy finished before the kill; the test needs a bigger table\n{}",
        r.output_dump()
    );
    // While it is down: delete rows the target may already hold, update others.
    src.batch_execute("DELETE FROM mixed WHERE id % 1000 = 1; UPDATE mixed SET note = 'changed while down' WHERE id % 1000 = 2")
        .await
        .unwrap();
    let r2 = Pipeline::spawn("replicator-again", &args).unwrap();
    r2.wait_streaming().await.unwrap();
    assert!(
        r2.stderr().contains("the previous copy did not finish"),
        "{}",
        r2.stderr()
    );
    src.batch_execute("INSERT INTO mixed (id, user_id) VALUES (-1, -1)")
        .await
        .unwrap();
    wait_same(&p, "public.mixed", "id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_rows_of_every_table_show_their_values_in_json_and_progress_in_metrics() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (k text PRIMARY KEY, n numeric);")
        .await
        .unwrap();
    p.source()
        .await
        .unwrap()
        .batch_execute("INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 300) g; INSERT INTO b VALUES ('x', 1.50), ('', NULL);")
        .await
        .unwrap();
    let out = e2e::TempDir::new("pg-flo-copy-json").unwrap();
    let _w = Pipeline::spawn("worker", &p.file_worker_args("json", out.path())).unwrap();
    let port = e2e::free_port().unwrap();
    // No --tables: every table of the schema.
    let mut args = p.replicator_args("json", "");
    args.extend([
        "--copy-and-stream".into(),
        "--metrics-addr".into(),
        format!("127.0.0.1:{port}"),
    ]);
    let r = Pipeline::spawn("replicator", &args).unwrap();
    r.wait_streaming().await.unwrap();
    let metrics = e2e::http_get(port, "/metrics").await.unwrap();
    assert!(
        metrics.contains("pg_flo_copy_rows_total{table=\"public.a\"} 300"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pg_flo_copy_rows_total{table=\"public.b\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pg_flo_copy_ranges{table=\"public.a\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pg_flo_copy_ranges_done_total{table=\"public.a\"} 2"),
        "{metrics}"
    );

    let lines = e2e::wait_for("302 copied rows in the file sink", ARRIVAL_TIMEOUT, || {
        let dir = out.path().to_owned();
        async move {
            let lines = e2e::file_sink::json_lines(&dir).ok()?;
            (lines.len() >= 302).then_some(lines)
        }
    })
    .await
    .unwrap();
    assert_eq!(lines.len(), 302);
    let row = lines
        .iter()
        .find(|l| l["Table"] == "a" && l["NewTuple"]["id"] == 42)
        .unwrap();
    assert_eq!(row["Type"], "INSERT");
    assert_eq!(row["LSN"], "");
    assert_eq!(row["NewTuple"]["v"], "v42");
    let empty = lines
        .iter()
        .find(|l| l["Table"] == "b" && l["NewTuple"]["k"] == "")
        .unwrap();
    assert_eq!(empty["NewTuple"]["n"], serde_json::Value::Null);
    let x = lines.iter().find(|l| l["NewTuple"]["k"] == "x").unwrap();
    assert_eq!(x["NewTuple"]["n"], 1.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_copy_is_not_repeated_after_a_restart() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(MIXED).await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute(&fill(2_000)).await.unwrap();
    let _w = p.start_pg_worker("once").await.unwrap();
    let mut args = p.replicator_args("once", "mixed");
    args.push("--copy-and-stream".into());
    let mut r = Pipeline::spawn("replicator", &args).unwrap();
    r.wait_streaming().await.unwrap();
    wait_same(&p, "public.mixed", "id").await;
    r.terminate().unwrap();
    assert!(r
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap()
        .success());
    src.batch_execute(
        "DELETE FROM mixed WHERE id <= 10; UPDATE mixed SET note = 'later' WHERE id = 20",
    )
    .await
    .unwrap();
    let r2 = Pipeline::spawn("replicator-again", &args).unwrap();
    r2.wait_streaming().await.unwrap();
    assert!(
        r2.stderr().contains("initial copy already done"),
        "{}",
        r2.stderr()
    );
    assert!(!r2.stderr().contains("copying table"), "{}", r2.stderr());
    wait_same(&p, "public.mixed", "id").await;
}
