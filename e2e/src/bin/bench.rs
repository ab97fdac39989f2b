//! `bench`: throughput of the real pipeline (release binaries, real servers), source commit to
//! target row, written to `bench/results.json` and printed.
//!
//! Scenarios (pg_flo's benchmark table):
//! - `single_row_tx`: N single-row INSERT transactions (a procedure that COMMITs after every
//!   row), with replicator and worker already running;
//! - `one_big_tx`: one N-row INSERT ... SELECT transaction.
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
    p.both(TABLE).await?;
    let _r = p.start_replicator("bench", "benchmark_table").await?;
    let _w = p.start_pg_worker("bench").await?;
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
    results.push(report("one_big_tx", rows, generated, total));

    p.wait_equal("public.benchmark_table", "id").await?;
    let json = serde_json::json!({
        "rows": rows,
        "build": "release",
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
