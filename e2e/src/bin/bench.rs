//! `bench`: throughput of the real pipeline (release binaries, real servers), source commit to
//! target row, written to `bench/results.json` and printed.
//!
//! Scenarios (pg_flo's benchmark table):
//! - `single_row_tx`: N single-row INSERT transactions (a procedure that COMMITs after every
//!   row), with replicator and worker already running;
//! - `one_big_tx`: one N-row INSERT ... SELECT transaction;
//! - `large_values` (only with `BENCH_SCENARIO=large_values`, written to
//!   `bench/large-values.json`): eight 64 MiB values (one transaction each, then four in one
//!   transaction) through NATS at its default 1 MiB `max_payload`, with the replicator's peak
//!   RSS against its bound (64 MiB + twice the largest value).
//!
//! Timing: from just before the source workload starts until the target holds every row.
//! Run with `scripts/bench.sh` (builds the release binaries first). `BENCH_ROWS` sets N
//! (default 100000). PostgreSQL runs with the harness's test settings (fsync=off), so the
//! numbers measure pg_flo, not the disk.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use e2e::{count, wait_for_eq, PgOptions, Pipeline};

const TABLE: &str = "CREATE TABLE public.benchmark_table (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL,
    email varchar(255),
    data jsonb,
    balance numeric(15,2),
    created_at timestamp DEFAULT current_timestamp
);
CREATE PROCEDURE public.single_row_txs(n int, start bigint) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..n LOOP
    INSERT INTO public.benchmark_table (user_id, email, data, balance)
    VALUES (start + i, 'user' || (start + i) || '@example.com',
            json_build_object('key', 'value' || i, 'number', i), i * 1.5);
    COMMIT;
  END LOOP;
END $$;";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rows: i64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let p = Pipeline::start(PgOptions::default()).await?;
    if std::env::var("BENCH_SCENARIO").as_deref() == Ok("large_values") {
        return large_values(&p).await;
    }
    p.both(TABLE).await?;
    let r = p.start_replicator("bench", "benchmark_table").await?;
    let w = p.start_pg_worker("bench").await?;
    let src = p.source().await?;
    let target = p.target().await?;

    let mut results = Vec::new();

    // Scenario 1: N single-row transactions.
    let start = Instant::now();
    src.execute("CALL public.single_row_txs($1, 0)", &[&(rows as i32)])
        .await
        .context("generating single-row transactions")?;
    let generated = start.elapsed();
    wait_arrival(&target, rows, &start).await?;
    let total = start.elapsed();
    results.push(report("single_row_tx", rows, generated, total));

    // Scenario 2: one transaction of N rows.
    let start = Instant::now();
    src.execute(
        "INSERT INTO public.benchmark_table (user_id, email, data, balance)
         SELECT n, 'user' || n || '@example.com', json_build_object('key', 'value' || n, 'number', n), n * 1.5
         FROM generate_series($1::bigint + 1, $1::bigint + $2::bigint) n",
        &[&rows, &rows],
    )
    .await
    .context("generating one big transaction")?;
    let generated = start.elapsed();
    wait_arrival(&target, 2 * rows, &start).await?;
    let total = start.elapsed();
    let mut big = report("one_big_tx", rows, generated, total);
    // Peak memory through both streaming scenarios (the largest: one N-row transaction).
    let mib = |kib: Option<u64>| kib.map(|k| k / 1024);
    big["replicator_peak_rss_mib"] = serde_json::json!(mib(r.peak_rss_kib()));
    big["worker_peak_rss_mib"] = serde_json::json!(mib(w.peak_rss_kib()));
    println!(
        "peak RSS through the streaming scenarios: replicator {:?} MiB, worker {:?} MiB",
        mib(r.peak_rss_kib()),
        mib(w.peak_rss_kib())
    );
    results.push(big);

    p.wait_equal("public.benchmark_table", "id").await?;

    // Scenario 3: initial copy of a table versus a plain COPY pipe between the same clusters.
    let copy_rows: i64 = std::env::var("BENCH_COPY_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    results.extend(copy_versus_pipe(&p, copy_rows).await?);

    let json = serde_json::json!({
        "rows": rows,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "postgres": "15, fsync=off (harness settings), source and target databases in one cluster",
        "results": results,
    });
    std::fs::create_dir_all("bench")?;
    std::fs::write(
        "bench/results.json",
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// Eight 64 MiB values, one per transaction, then four in one transaction: time to the target
/// and the replicator's and worker's peak RSS.
async fn large_values(p: &Pipeline) -> anyhow::Result<()> {
    const MIB: i64 = 64;
    p.both("CREATE TABLE public.large_values (id int PRIMARY KEY, v text)")
        .await?;
    let r = p.start_replicator("benchbig", "large_values").await?;
    let w = p.start_pg_worker("benchbig").await?;
    let src = p.source().await?;
    let target = p.target().await?;
    let value = |id: i64| format!("repeat(md5('{id}'), {MIB} * 1024 * 1024 / 32)");
    let start = Instant::now();
    for id in 1..=8 {
        src.batch_execute(&format!(
            "INSERT INTO public.large_values VALUES ({id}, {})",
            value(id)
        ))
        .await?;
    }
    let rows: Vec<String> = (9..=12)
        .map(|id| format!("({id}, {})", value(id)))
        .collect();
    src.batch_execute(&format!(
        "INSERT INTO public.large_values VALUES {}",
        rows.join(", ")
    ))
    .await?;
    wait_for_eq(
        "every large value in the target",
        Duration::from_secs(600),
        12,
        || count(&target, "public.large_values"),
    )
    .await?;
    let seconds = start.elapsed().as_secs_f64();
    p.wait_equal("public.large_values", "id").await?;
    let mib = |kib: Option<u64>| kib.map(|k| k / 1024);
    let json = serde_json::json!({
        "scenario": "large_values",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "values": 12,
        "value_mib": MIB,
        "nats_max_payload": "1 MiB (default)",
        "commit_to_target_seconds": seconds,
        "mib_per_second": (12 * MIB) as f64 / seconds,
        "replicator_peak_rss_mib": mib(r.peak_rss_kib()),
        "replicator_rss_bound_mib": 64 + 2 * MIB,
        "worker_peak_rss_mib": mib(w.peak_rss_kib()),
    });
    std::fs::create_dir_all("bench")?;
    std::fs::write(
        "bench/large-values.json",
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

const COPY_TABLE: &str = "CREATE TABLE public.copy_bench (
    id bigint PRIMARY KEY, user_id bigint NOT NULL, email varchar(255), data jsonb,
    balance numeric(15,2), created_at timestamp DEFAULT current_timestamp);
CREATE TABLE public.copy_bench_pipe (LIKE public.copy_bench INCLUDING ALL);";

async fn copy_versus_pipe(p: &Pipeline, rows: i64) -> anyhow::Result<Vec<serde_json::Value>> {
    use futures_util::{SinkExt as _, StreamExt as _};
    p.both(COPY_TABLE).await?;
    let src = p.source().await?;
    let target = p.target().await?;
    src.execute(
        "INSERT INTO public.copy_bench (id, user_id, email, data, balance)
         SELECT n, n, 'user' || n || '@example.com', json_build_object('key', 'value' || n, 'number', n), n * 1.5
         FROM generate_series(1, $1::bigint) n",
        &[&rows],
    )
    .await
    .context("filling the copy table")?;
    src.batch_execute("CHECKPOINT").await?;

    // pg_flo: replicator --copy (4 workers) -> NATS -> worker postgres.
    let _w = p.start_pg_worker("bulk").await?;
    let mut args = p.replicator_args("bulk", "copy_bench");
    args.extend([
        "--copy".into(),
        "--max-copy-workers-per-table".into(),
        "4".into(),
    ]);
    let start = Instant::now();
    let mut r = Pipeline::spawn("replicator-copy", &args)?;
    wait_for_eq(
        "all copied rows in the target",
        Duration::from_secs(900),
        rows,
        || count(&target, "public.copy_bench"),
    )
    .await?;
    let pg_flo = start.elapsed();
    let status = r.wait_exit(Duration::from_secs(60)).await;
    anyhow::ensure!(
        status.is_some_and(|s| s.success()),
        "the --copy replicator did not exit 0 by itself: {}",
        r.output_dump()
    );

    // The reference: COPY ... TO STDOUT piped into COPY ... FROM STDIN, one stream.
    let start = Instant::now();
    let out = src.copy_out("COPY public.copy_bench TO STDOUT").await?;
    let sink = target
        .copy_in("COPY public.copy_bench_pipe FROM STDIN")
        .await?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    while let Some(chunk) = out.next().await {
        sink.send(chunk?).await?;
    }
    let piped = sink.finish().await?;
    let pipe = start.elapsed();
    anyhow::ensure!(piped == rows as u64, "pipe copied {piped} rows");

    let ratio = pg_flo.as_secs_f64() / pipe.as_secs_f64();
    println!(
        "initial_copy: {rows} rows; pg_flo --copy {:.2}s = {:.0} rows/s; COPY pipe {:.2}s = {:.0} rows/s; pg_flo takes {ratio:.2}x the pipe's time",
        pg_flo.as_secs_f64(),
        rows as f64 / pg_flo.as_secs_f64(),
        pipe.as_secs_f64(),
        rows as f64 / pipe.as_secs_f64(),
    );
    Ok(vec![
        serde_json::json!({
            "scenario": "initial_copy_pg_flo",
            "rows": rows,
            "seconds": pg_flo.as_secs_f64(),
            "rows_per_second": (rows as f64 / pg_flo.as_secs_f64()).round(),
        }),
        serde_json::json!({
            "scenario": "initial_copy_copy_pipe",
            "rows": rows,
            "seconds": pipe.as_secs_f64(),
            "rows_per_second": (rows as f64 / pipe.as_secs_f64()).round(),
            "pg_flo_time_ratio": ratio,
        }),
    ])
}

async fn wait_arrival(
    target: &tokio_postgres::Client,
    rows: i64,
    start: &Instant,
) -> anyhow::Result<()> {
    wait_for_eq(
        "all rows in the target",
        Duration::from_secs(600),
        rows,
        || count(target, "public.benchmark_table"),
    )
    .await?;
    eprintln!("{rows} rows in the target after {:?}", start.elapsed());
    Ok(())
}

fn report(name: &str, rows: i64, generated: Duration, total: Duration) -> serde_json::Value {
    let rate = rows as f64 / total.as_secs_f64();
    println!(
        "{name}: {rows} rows; source generated them in {:.2}s; all in the target after {:.2}s = {:.0} rows/s",
        generated.as_secs_f64(),
        total.as_secs_f64(),
        rate
    );
    serde_json::json!({
        "scenario": name,
        "rows": rows,
        "source_generation_seconds": generated.as_secs_f64(),
        "commit_to_target_seconds": total.as_secs_f64(),
        "rows_per_second": rate.round(),
    })
}
