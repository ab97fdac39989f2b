//! Initial load of one table of `rows` rows, three ways, one after the other:
//! - pg_flo: `pg_flo replicator --copy --max-copy-workers-per-table 4` -> NATS -> `pg_flo
//!   worker postgres` into `target` (group `bulk`), timed from the replicator's spawn until
//!   the target holds every row;
//! - the COPY pipe: `COPY .. TO STDOUT (FORMAT binary)` piped into `COPY .. FROM STDIN (FORMAT
//!   binary)`, one stream, into another table of `target`;
//! - native initial sync: a subscription with `copy_data = true` (its own slot, publication
//!   and database `native`), timed from `ALTER SUBSCRIPTION .. ENABLE` until the table's state
//!   in `pg_subscription_rel` is `s` (synchronized) or `r` (ready), then its row count is
//!   checked.
//!
//! CPU of the copying replicator (reaped, so read from the benchmark's children time), the
//! worker and nats-server over pg_flo's load is reported per 1,000 rows.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use e2e::{count, wait_for_eq, Pipeline};
use futures_util::{SinkExt as _, StreamExt as _};

use crate::cpu;
use crate::report::{rate, ratio, Line};
use crate::systems::Native;

const COPY_TABLE: &str = "CREATE TABLE public.copy_bench (
    id bigint PRIMARY KEY, user_id bigint NOT NULL, email varchar(255), data jsonb,
    balance numeric(15,2), created_at timestamp DEFAULT current_timestamp);";
const PIPE_TABLE: &str =
    "CREATE TABLE public.copy_bench_pipe (LIKE public.copy_bench INCLUDING ALL);";
const LOAD_TIMEOUT: Duration = Duration::from_secs(1800);

pub struct InitialLoad {
    pub json: Vec<serde_json::Value>,
    pub line: Line,
}

pub async fn run(p: &Pipeline, rows: i64) -> anyhow::Result<InitialLoad> {
    let src = p.source().await?;
    let target = p.target().await?;
    let native_db = p.pg.client("native").await?;
    src.batch_execute(COPY_TABLE).await?;
    target.batch_execute(COPY_TABLE).await?;
    target.batch_execute(PIPE_TABLE).await?;
    native_db.batch_execute(COPY_TABLE).await?;
    eprintln!("initial load of {rows} rows: filling the source table");
    src.execute(
        "INSERT INTO public.copy_bench (id, user_id, email, data, balance)
         SELECT n, n, 'user' || n || '@example.com', json_build_object('key', 'value' || n, 'number', n), n * 1.5
         FROM generate_series(1, $1::bigint) n",
        &[&rows],
    )
    .await
    .context("filling the copy table")?;
    src.batch_execute("VACUUM ANALYZE public.copy_bench")
        .await?;
    src.batch_execute("CHECKPOINT").await?;

    // pg_flo: replicator --copy (4 workers) -> NATS -> worker postgres.
    let worker = p.start_pg_worker("bulk").await?;
    let worker_start = cpu::process_ms(worker.pid());
    let nats_start = p.nats.pid().and_then(cpu::process_ms);
    let children_start = cpu::reaped_children_ms();
    let mut args = p.replicator_args("bulk", "copy_bench");
    args.extend([
        "--copy".into(),
        "--max-copy-workers-per-table".into(),
        "4".into(),
    ]);
    let start = Instant::now();
    let mut replicator = Pipeline::spawn("replicator-copy", &args)?;
    wait_for_eq("all copied rows in the target", LOAD_TIMEOUT, rows, || {
        count(&target, "public.copy_bench")
    })
    .await?;
    let pg_flo = start.elapsed();
    let worker_ms = cpu::process_ms(worker.pid())
        .zip(worker_start)
        .map(|(b, a)| b - a);
    let nats_ms = p
        .nats
        .pid()
        .and_then(cpu::process_ms)
        .zip(nats_start)
        .map(|(b, a)| b - a);
    let status = replicator.wait_exit(Duration::from_secs(60)).await;
    anyhow::ensure!(
        status.is_some_and(|s| s.success()),
        "the --copy replicator did not exit 0 by itself: {}",
        replicator.output_dump()
    );
    let replicator_ms = cpu::reaped_children_ms()
        .zip(children_start)
        .map(|(b, a)| b - a);
    drop(worker);

    // The COPY pipe, binary, one stream.
    let start = Instant::now();
    let out = src
        .copy_out("COPY public.copy_bench TO STDOUT (FORMAT binary)")
        .await?;
    let sink = target
        .copy_in("COPY public.copy_bench_pipe FROM STDIN (FORMAT binary)")
        .await?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    while let Some(chunk) = out.next().await {
        sink.send(chunk?).await?;
    }
    let piped = sink.finish().await?;
    let pipe = start.elapsed();
    anyhow::ensure!(piped == rows as u64, "pipe copied {piped} rows");

    // Native initial sync.
    let native = Native::create(
        &src,
        &native_db,
        &p.pg.conn_string("source"),
        "bench_native_copy",
        &["public.copy_bench"],
        true,
    )
    .await?;
    let start = Instant::now();
    native.enable(&native_db).await?;
    wait_for_eq("the native initial sync", LOAD_TIMEOUT, true, || async {
        let row = native_db
            .query_one(
                "SELECT coalesce(bool_and(r.srsubstate IN ('s', 'r')), false)
                     FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
                     WHERE s.subname = $1",
                &[&native.name],
            )
            .await?;
        row.try_get::<_, bool>(0)
    })
    .await?;
    let synced = start.elapsed();
    let native_rows = count(&native_db, "public.copy_bench").await?;
    anyhow::ensure!(
        native_rows == rows,
        "native initial sync holds {native_rows} rows"
    );
    native.disable(&native_db, &src).await?;

    let per_s = |d: Duration| rows as f64 / d.as_secs_f64();
    let (pg_flo_rate, pipe_rate, native_rate) = (per_s(pg_flo), per_s(pipe), per_s(synced));
    eprintln!(
        "initial load, {rows} rows: pg_flo --copy {} ({:.2}s), COPY pipe {} ({:.2}s), native {} ({:.2}s)",
        rate(pg_flo_rate),
        pg_flo.as_secs_f64(),
        rate(pipe_rate),
        pipe.as_secs_f64(),
        rate(native_rate),
        synced.as_secs_f64()
    );
    let per_1k = |ms: Option<f64>| ms.map(|ms| cpu::per_1k_rows(ms, rows));
    Ok(InitialLoad {
        json: vec![
            serde_json::json!({
                "scenario": "initial_copy_pg_flo",
                "rows": rows,
                "seconds": pg_flo.as_secs_f64(),
                "rows_per_second": pg_flo_rate.round(),
                "cpu_ms_per_1k_rows": {
                    "replicator": per_1k(replicator_ms),
                    "worker": per_1k(worker_ms),
                    "nats_server": per_1k(nats_ms),
                },
            }),
            serde_json::json!({
                "scenario": "initial_copy_copy_pipe",
                "format": "binary",
                "rows": rows,
                "seconds": pipe.as_secs_f64(),
                "rows_per_second": pipe_rate.round(),
                "pg_flo_time_ratio": pg_flo.as_secs_f64() / pipe.as_secs_f64(),
            }),
            serde_json::json!({
                "scenario": "initial_copy_native",
                "rows": rows,
                "seconds": synced.as_secs_f64(),
                "rows_per_second": native_rate.round(),
                "pg_flo_time_ratio": pg_flo.as_secs_f64() / synced.as_secs_f64(),
            }),
        ],
        line: Line {
            workload: format!("initial load, {rows} rows"),
            native: rate(native_rate),
            pg_flo: rate(pg_flo_rate),
            copy_pipe: rate(pipe_rate),
            ratio: format!(
                "{} native, {} COPY pipe",
                ratio(pg_flo_rate, native_rate),
                ratio(pg_flo_rate, pipe_rate)
            ),
        },
    })
}
