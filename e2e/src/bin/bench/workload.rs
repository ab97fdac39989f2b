//! The benchmark's tables and what the source does to them.
//!
//! Every database (source, pg_flo's `target`, native's `native`) holds the same tables:
//! - `rows_bench`: pg_flo's benchmark row (`user_id`, `email`, `data jsonb`, `balance`,
//!   `created_at`) with an explicit `id` and a `ver` the updates bump;
//! - `bench_marker`: one row committed after each workload; both pipelines apply transactions
//!   in commit order, so the marker in a target means everything before it is there (the
//!   wait polls one primary-key lookup instead of counting a large table);
//! - `latency_bench`: `sent timestamptz DEFAULT clock_timestamp()` on the source; in the
//!   targets an `arrived` column that a `BEFORE INSERT` trigger stamps with
//!   `clock_timestamp()`, set `ENABLE ALWAYS` so that it fires under
//!   `session_replication_role = replica` (which pg_flo's worker and native apply both use).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use e2e::Pipeline;
use tokio_postgres::Client;

pub const TABLES: &str = "CREATE TABLE public.rows_bench (
    id bigint PRIMARY KEY,
    user_id bigint NOT NULL,
    email varchar(255),
    data jsonb,
    balance numeric(15,2),
    ver int NOT NULL DEFAULT 0,
    created_at timestamp DEFAULT current_timestamp
);
CREATE TABLE public.bench_marker (id int PRIMARY KEY);
CREATE TABLE public.latency_bench (
    id bigserial PRIMARY KEY,
    phase text NOT NULL,
    sent timestamptz NOT NULL DEFAULT clock_timestamp(),
    pad text
);";

/// The tables both pipelines replicate (pg_flo's `--tables`, the native publication's list).
pub const REPLICATED: [&str; 3] = [
    "public.rows_bench",
    "public.bench_marker",
    "public.latency_bench",
];

/// Source only: one transaction per row.
pub const SOURCE_ONLY: &str = "CREATE PROCEDURE public.single_row_txs(first bigint, n int)
LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 0..n - 1 LOOP
    INSERT INTO public.rows_bench (id, user_id, email, data, balance)
    VALUES (first + i, first + i, 'user' || (first + i) || '@example.com',
            json_build_object('key', 'value' || i, 'number', i), i * 1.5);
    COMMIT;
  END LOOP;
END $$;";

/// Targets only: the arrival stamp.
pub const TARGET_ONLY: &str = "ALTER TABLE public.latency_bench ADD COLUMN arrived timestamptz;
CREATE FUNCTION public.stamp_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.arrived := clock_timestamp();
  RETURN NEW;
END $$;
CREATE TRIGGER stamp_arrival BEFORE INSERT ON public.latency_bench
  FOR EACH ROW EXECUTE FUNCTION public.stamp_arrival();
ALTER TABLE public.latency_bench ENABLE ALWAYS TRIGGER stamp_arrival;";

/// Rows `$1..=$2` of `rows_bench` in one statement.
const INSERT_RANGE: &str = "INSERT INTO public.rows_bench (id, user_id, email, data, balance)
    SELECT n, n, 'user' || n || '@example.com',
           json_build_object('key', 'value' || n, 'number', n), n * 1.5
    FROM generate_series($1::bigint, $2::bigint) n";

/// A catch-up workload.
#[derive(Debug, Clone, Copy)]
pub enum Workload {
    /// `rows` new rows in 1000-row transactions.
    Inserts { rows: i64 },
    /// Updates of the first `rows` rows in 1000-row transactions.
    Updates { rows: i64 },
    /// `rows` single-row transactions, split over `clients` connections running at once.
    SingleRow { rows: i64, clients: i64 },
    /// `rows` new rows in one transaction.
    OneTx { rows: i64 },
}

/// Rows per transaction of the batched workloads.
const TX_ROWS: i64 = 1000;

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Self::Inserts { .. } => "catch_up_inserts_1000_row_tx",
            Self::Updates { .. } => "catch_up_updates_1000_row_tx",
            Self::SingleRow { .. } => "catch_up_single_row_tx",
            Self::OneTx { .. } => "catch_up_one_tx",
        }
    }

    pub fn describe(self) -> String {
        match self {
            Self::Inserts { rows } => format!("catch-up, {rows} inserts in 1000-row tx"),
            Self::Updates { rows } => format!("catch-up, {rows} updates in 1000-row tx"),
            Self::SingleRow { rows, clients } => {
                format!("catch-up, {rows} single-row tx ({clients} clients)")
            }
            Self::OneTx { rows } => format!("catch-up, one {rows}-row tx"),
        }
    }

    pub fn rows(self) -> i64 {
        match self {
            Self::Inserts { rows }
            | Self::Updates { rows }
            | Self::SingleRow { rows, .. }
            | Self::OneTx { rows } => rows,
        }
    }

    /// Runs the workload on the source; new rows get ids from `next_id` on. Returns how long
    /// the source took.
    pub async fn run(self, p: &Pipeline, next_id: &mut i64) -> anyhow::Result<Duration> {
        let src = p.source().await?;
        let start = Instant::now();
        match self {
            Self::Inserts { rows } => {
                let stmt = src.prepare(INSERT_RANGE).await?;
                for first in (*next_id..*next_id + rows).step_by(TX_ROWS as usize) {
                    let last = (first + TX_ROWS - 1).min(*next_id + rows - 1);
                    src.execute(&stmt, &[&first, &last]).await?;
                }
                *next_id += rows;
            }
            Self::Updates { rows } => {
                let stmt = src
                    .prepare(
                        "UPDATE public.rows_bench SET ver = ver + 1, balance = balance + 1
                         WHERE id BETWEEN $1 AND $2",
                    )
                    .await?;
                for first in (1..=rows).step_by(TX_ROWS as usize) {
                    let last = (first + TX_ROWS - 1).min(rows);
                    src.execute(&stmt, &[&first, &last]).await?;
                }
            }
            Self::SingleRow { rows, clients } => {
                let per_client = rows / clients;
                let mut clients_sql = Vec::new();
                for c in 0..clients {
                    let n = if c == clients - 1 {
                        rows - per_client * c
                    } else {
                        per_client
                    };
                    clients_sql.push((p.source().await?, *next_id + per_client * c, n));
                }
                let calls = clients_sql.iter().map(|(client, first, n)| async move {
                    let n = i32::try_from(*n).context("rows per client")?;
                    client
                        .execute("CALL public.single_row_txs($1, $2)", &[first, &n])
                        .await
                        .context("single-row transactions")
                });
                for r in futures_util::future::join_all(calls).await {
                    r?;
                }
                *next_id += rows;
            }
            Self::OneTx { rows } => {
                let last = *next_id + rows - 1;
                src.execute(INSERT_RANGE, &[&*next_id, &last]).await?;
                *next_id += rows;
            }
        }
        Ok(start.elapsed())
    }
}

/// Commits marker `id` on the source.
pub async fn commit_marker(src: &Client, id: i32) -> anyhow::Result<()> {
    src.execute("INSERT INTO public.bench_marker VALUES ($1)", &[&id])
        .await
        .context("commit a marker")?;
    Ok(())
}

/// Polls `target` every few milliseconds until marker `id` is there; returns when it was seen.
pub async fn wait_marker(target: &Client, id: i32, timeout: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let row = target
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM public.bench_marker WHERE id = $1)",
                &[&id],
            )
            .await
            .context("look for the marker")?;
        if row.try_get::<_, bool>(0)? {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "marker {id} did not arrive within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Row count, `sum(ver)` and `sum(id)` of `rows_bench`: equal in source and target once the
/// target holds every change.
pub async fn fingerprint(client: &Client) -> anyhow::Result<String> {
    let row = client
        .query_one(
            "SELECT count(*)::text || ' rows, ver ' || coalesce(sum(ver), 0)::text
                    || ', ids ' || coalesce(sum(id), 0)::text
             FROM public.rows_bench",
            &[],
        )
        .await
        .context("fingerprint rows_bench")?;
    Ok(row.try_get(0)?)
}
