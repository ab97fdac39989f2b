//! `bench`: pg_flo (release binaries) side by side with PostgreSQL's native logical
//! replication and a COPY pipe, in one run on throw-away local servers, on the same data and
//! the same WAL. Prints the tables quoted in `docs/benchmarks.md` and writes
//! `bench/results.json`.
//!
//! One PostgreSQL 15 cluster (the harness's settings: `fsync=off`, so the disk is not what is
//! measured; plus `wal_retrieve_retry_interval = 100ms`, so a re-enabled subscription starts
//! at once) holds the databases `source`, `target` (pg_flo's worker writes there) and `native`
//! (the subscription's); one `nats-server -js`. Scenarios, each in its own module:
//! - catch-up ([`catch_up`]): inserts and updates in 1000-row transactions, single-row
//!   transactions from several clients, one large transaction; each pipeline started after
//!   the workload and timed until it holds it;
//! - live latency ([`latency`]), commit -> visible, p50 / p99 / max, at a paced rate of
//!   single-row transactions and of 100-row transactions, for each pipeline;
//! - initial load ([`initial_load`]): `pg_flo replicator --copy` vs a binary COPY pipe vs
//!   native initial sync (`copy_data = true`);
//! - CPU (core-ms per 1,000 rows, `/proc/<pid>/stat`) of the replicator, the worker,
//!   nats-server and the PostgreSQL backends of each pipeline, and the peak RSS of the
//!   replicator and the worker.
//!
//! Sizes (env): `BENCH_ROWS` (default 50,000) inserts and updates; `BENCH_SINGLE_ROWS`
//! (default `BENCH_ROWS / 10`) single-row transactions over `BENCH_CLIENTS` (default 4)
//! connections; `BENCH_ONE_TX_ROWS` (default `5 * BENCH_ROWS`); `BENCH_COPY_ROWS` (default
//! `10 * BENCH_ROWS`); `BENCH_LIVE_SECONDS` (default 5) per live phase at
//! `BENCH_LIVE_TX_PER_SECOND` (default 1000) single-row and `BENCH_LIVE_BATCH_TX_PER_SECOND`
//! (default 200, i.e. 20,000 rows/s) 100-row transactions. `BENCH_ROWS=200000` gives the performance issue's sizes (200k, 20k, 1M,
//! 2M). `BENCH_SCENARIO=large_values` runs [`large_values`] only.
//!
//! Run with `scripts/bench.sh` (builds the release binaries first).

mod catch_up;
mod cpu;
mod initial_load;
mod large_values;
mod latency;
mod report;
mod systems;
mod workload;

use e2e::{PgOptions, Pipeline};
use tokio_postgres::Client;

use crate::systems::{Native, PgFlo};
use crate::workload::Workload;

/// The pipelines under test and connections to the three databases.
pub struct Bench {
    pub p: Pipeline,
    pub src: Client,
    pub target: Client,
    pub native_db: Client,
    pub pg_flo: PgFlo,
    pub native: Native,
    marker: i32,
}

impl Bench {
    /// A fresh marker id.
    pub fn next_marker(&mut self) -> i32 {
        self.marker += 1;
        self.marker
    }
}

/// Benchmark sizes, from the environment.
struct Sizes {
    rows: i64,
    single_rows: i64,
    clients: i64,
    one_tx_rows: i64,
    copy_rows: i64,
    live_seconds: f64,
    live_tx_per_second: u32,
    live_batch_tx_per_second: u32,
}

impl Sizes {
    fn from_env() -> Self {
        let var = |name: &str, default: i64| {
            std::env::var(name)
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|v: &i64| *v > 0)
                .unwrap_or(default)
        };
        let rows = var("BENCH_ROWS", 50_000);
        Self {
            rows,
            single_rows: var("BENCH_SINGLE_ROWS", (rows / 10).max(1)),
            clients: var("BENCH_CLIENTS", 4),
            one_tx_rows: var("BENCH_ONE_TX_ROWS", rows * 5),
            copy_rows: var("BENCH_COPY_ROWS", rows * 10),
            live_seconds: var("BENCH_LIVE_SECONDS", 5) as f64,
            live_tx_per_second: u32::try_from(var("BENCH_LIVE_TX_PER_SECOND", 1000))
                .unwrap_or(1000),
            live_batch_tx_per_second: u32::try_from(var("BENCH_LIVE_BATCH_TX_PER_SECOND", 200))
                .unwrap_or(200),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let sizes = Sizes::from_env();
    let p = Pipeline::start(PgOptions {
        extra_conf: vec![("wal_retrieve_retry_interval".into(), "100ms".into())],
        ..PgOptions::default()
    })
    .await?;
    if std::env::var("BENCH_SCENARIO").as_deref() == Ok("large_values") {
        return large_values::run(&p).await;
    }
    let mut b = setup(p).await?;

    let mut lines = Vec::new();
    let mut cpu_lines = Vec::new();
    let mut results = Vec::new();
    let mut peak_rss = (None, None);
    let mut next_id = 1;
    for w in [
        Workload::Inserts { rows: sizes.rows },
        Workload::Updates { rows: sizes.rows },
        Workload::SingleRow {
            rows: sizes.single_rows,
            clients: sizes.clients,
        },
        Workload::OneTx {
            rows: sizes.one_tx_rows,
        },
    ] {
        let c = catch_up::run(&mut b, w, &mut next_id).await?;
        peak_rss = (
            peak_rss.0.max(c.peak_rss_mib.0),
            peak_rss.1.max(c.peak_rss_mib.1),
        );
        results.push(c.json);
        lines.push(c.line);
        cpu_lines.push(c.cpu);
    }
    lines.push(report::Line {
        workload: "peak RSS replicator / worker through the catch-up workloads".into(),
        native: "–".into(),
        pg_flo: format!(
            "{} / {} MiB",
            peak_rss.0.map_or("?".into(), |v| v.to_string()),
            peak_rss.1.map_or("?".into(), |v| v.to_string())
        ),
        copy_pipe: "–".into(),
        ratio: String::new(),
    });

    let rates = [
        latency::Rate {
            rows_per_tx: 1,
            tx_per_second: sizes.live_tx_per_second,
        },
        latency::Rate {
            rows_per_tx: 100,
            tx_per_second: sizes.live_batch_tx_per_second,
        },
    ];
    let live = latency::run(&mut b, &rates, sizes.live_seconds).await?;
    results.extend(live.json);
    lines.extend(live.lines);

    let load = initial_load::run(&b.p, sizes.copy_rows).await?;
    results.extend(load.json);
    lines.push(load.line);

    let json = serde_json::json!({
        "rows": sizes.rows,
        "sizes": {
            "rows": sizes.rows,
            "single_rows": sizes.single_rows,
            "clients": sizes.clients,
            "one_tx_rows": sizes.one_tx_rows,
            "copy_rows": sizes.copy_rows,
            "live_seconds": sizes.live_seconds,
            "live_tx_per_second": sizes.live_tx_per_second,
            "live_batch_tx_per_second": sizes.live_batch_tx_per_second,
        },
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "postgres": "15, fsync=off (harness settings), source, target and native subscriber databases in one cluster",
        "peak_rss_mib": { "replicator": peak_rss.0, "worker": peak_rss.1 },
        "results": results,
    });
    std::fs::create_dir_all("bench")?;
    std::fs::write(
        "bench/results.json",
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    println!("{}", report::table(&lines));
    println!("{}", report::cpu_table(&cpu_lines));
    Ok(())
}

/// Creates the tables in the three databases, pg_flo's slot, publication and stream (one
/// start and stop of the group) and the native slot, publication and (disabled) subscription.
async fn setup(p: Pipeline) -> anyhow::Result<Bench> {
    p.pg.create_database("native").await?;
    let src = p.source().await?;
    let target = p.target().await?;
    let native_db = p.pg.client("native").await?;
    for db in [&src, &target, &native_db] {
        db.batch_execute(workload::TABLES).await?;
    }
    src.batch_execute(workload::SOURCE_ONLY).await?;
    for db in [&target, &native_db] {
        db.batch_execute(workload::TARGET_ONLY).await?;
    }
    let pg_flo = PgFlo {
        group: "bench",
        tables: "rows_bench,bench_marker,latency_bench",
    };
    let first = pg_flo.spawn(&p)?;
    first.wait_ready().await?;
    first.stop(&src, &pg_flo.slot()).await?;
    let native = Native::create(
        &src,
        &native_db,
        &p.pg.conn_string("source"),
        "bench_native",
        &workload::REPLICATED,
        false,
    )
    .await?;
    Ok(Bench {
        p,
        src,
        target,
        native_db,
        pg_flo,
        native,
        marker: 0,
    })
}
