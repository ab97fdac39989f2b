//! Live latency, commit -> visible: with one pipeline running and caught up, the source
//! commits paced transactions into `latency_bench` for a while (each row's `sent` is the
//! source's `clock_timestamp()` at insert, i.e. just before its commit; the target's `arrived`
//! is stamped by an `ENABLE ALWAYS` trigger when the row is applied; both clocks are the same
//! machine's). Then a marker is committed and awaited, and p50 / p99 / max of
//! `arrived - sent` over the phase's rows are read from the target. pg_flo runs its phases
//! first (the native subscription disabled), then native (pg_flo stopped); the native
//! subscription first catches up with pg_flo's phases behind a marker, so those rows never
//! count as native latency (each phase's rows carry its name).
//!
//! The pacer sends one transaction per tick on one connection; when a tick is missed the
//! next ones follow at once (`MissedTickBehavior::Burst`), and the rate reached is reported.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;

use crate::report::Line;
use crate::workload::{commit_marker, wait_marker};
use crate::Bench;

const MARKER_TIMEOUT: Duration = Duration::from_secs(600);

/// A paced load.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub rows_per_tx: i32,
    pub tx_per_second: u32,
}

impl Rate {
    fn name(self) -> String {
        format!(
            "live_{}_row_tx_{}_rows_per_second",
            self.rows_per_tx,
            self.rows_per_tx as u32 * self.tx_per_second
        )
    }

    fn describe(self) -> String {
        if self.rows_per_tx == 1 {
            format!(
                "live, {} single-row tx/s: p50 / p99 / max",
                self.tx_per_second
            )
        } else {
            format!(
                "live, {} rows/s in {}-row tx: p50 / p99 / max",
                self.rows_per_tx as u32 * self.tx_per_second,
                self.rows_per_tx
            )
        }
    }
}

/// Commit -> visible of one phase, in ms.
#[derive(Debug, Clone, Copy)]
struct Latency {
    rows: i64,
    tx_per_second: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "rows": self.rows,
            "tx_per_second_reached": self.tx_per_second.round(),
            "p50_ms": self.p50,
            "p99_ms": self.p99,
            "max_ms": self.max,
        })
    }

    fn cell(&self) -> String {
        format!("{:.2} / {:.2} / {:.1} ms", self.p50, self.p99, self.max)
    }
}

pub struct Live {
    pub json: Vec<serde_json::Value>,
    pub lines: Vec<Line>,
}

pub async fn run(b: &mut Bench, rates: &[Rate], seconds: f64) -> anyhow::Result<Live> {
    let pacer = b.p.source().await?;

    let mut pg_flo = Vec::new();
    let pipeline = b.pg_flo.spawn(&b.p)?;
    pipeline.wait_ready().await?;
    let marker = b.next_marker();
    commit_marker(&b.src, marker).await?;
    wait_marker(&b.target, marker, MARKER_TIMEOUT).await?;
    for rate in rates {
        let phase = format!("pg_flo_{}", rate.name());
        eprintln!("{}: pg_flo", rate.describe());
        let tx_per_second = pace(&pacer, &phase, *rate, seconds).await?;
        let marker = b.next_marker();
        commit_marker(&b.src, marker).await?;
        wait_marker(&b.target, marker, MARKER_TIMEOUT).await?;
        pg_flo.push(stats(&b.target, &phase, tx_per_second).await?);
    }
    pipeline.stop(&b.src, &b.pg_flo.slot()).await?;

    let mut native = Vec::new();
    b.native.enable(&b.native_db).await?;
    let marker = b.next_marker();
    commit_marker(&b.src, marker).await?;
    wait_marker(&b.native_db, marker, MARKER_TIMEOUT).await?;
    for rate in rates {
        let phase = format!("native_{}", rate.name());
        eprintln!("{}: native", rate.describe());
        let tx_per_second = pace(&pacer, &phase, *rate, seconds).await?;
        let marker = b.next_marker();
        commit_marker(&b.src, marker).await?;
        wait_marker(&b.native_db, marker, MARKER_TIMEOUT).await?;
        native.push(stats(&b.native_db, &phase, tx_per_second).await?);
    }
    b.native.disable(&b.native_db, &b.src).await?;

    let mut live = Live {
        json: Vec::new(),
        lines: Vec::new(),
    };
    for ((rate, f), n) in rates.iter().zip(&pg_flo).zip(&native) {
        eprintln!(
            "{}: pg_flo {} ({:.0} tx/s reached), native {} ({:.0} tx/s reached)",
            rate.describe(),
            f.cell(),
            f.tx_per_second,
            n.cell(),
            n.tx_per_second
        );
        live.json.push(serde_json::json!({
            "scenario": rate.name(),
            "rows_per_tx": rate.rows_per_tx,
            "tx_per_second": rate.tx_per_second,
            "seconds": seconds,
            "pg_flo": f.json(),
            "native": n.json(),
            "pg_flo_p99_vs_native": f.p99 / n.p99,
        }));
        live.lines.push(Line {
            workload: rate.describe(),
            native: n.cell(),
            pg_flo: f.cell(),
            copy_pipe: "–".into(),
            ratio: format!("{:.1}x native at p99", f.p99 / n.p99),
        });
    }
    Ok(live)
}

/// Commits `rate` transactions of `phase` rows for `seconds`; returns the tx/s reached.
async fn pace(src: &Client, phase: &str, rate: Rate, seconds: f64) -> anyhow::Result<f64> {
    let stmt = src
        .prepare(
            "INSERT INTO public.latency_bench (phase, pad)
             SELECT $1, md5(g::text) FROM generate_series(1, $2::int) g",
        )
        .await?;
    let total = (f64::from(rate.tx_per_second) * seconds).round().max(1.0) as u64;
    let mut tick =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.tx_per_second)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let start = Instant::now();
    for _ in 0..total {
        tick.tick().await;
        src.execute(&stmt, &[&phase, &rate.rows_per_tx])
            .await
            .context("paced insert")?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn stats(target: &Client, phase: &str, tx_per_second: f64) -> anyhow::Result<Latency> {
    let row = target
        .query_one(
            "SELECT count(*),
                    coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), 0),
                    coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), 0),
                    coalesce(max(ms), 0)
             FROM (SELECT extract(epoch FROM arrived - sent)::float8 * 1000 AS ms
                   FROM public.latency_bench WHERE phase = $1) l",
            &[&phase],
        )
        .await
        .context("latency percentiles")?;
    Ok(Latency {
        rows: row.try_get(0)?,
        tx_per_second,
        p50: row.try_get(1)?,
        p99: row.try_get(2)?,
        max: row.try_get(3)?,
    })
}
