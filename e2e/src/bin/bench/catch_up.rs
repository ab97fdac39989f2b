//! Catch-up: the workload runs while neither pipeline runs (pg_flo's replicator and worker
//! stopped, the native subscription disabled; both slots exist, so both keep the same WAL);
//! then pg_flo starts and is timed from the spawn of its processes until the workload's marker
//! is in `target`, then stopped; then the native subscription is enabled and timed the same
//! way into `native`. After each, the target's fingerprint (count, sums) must equal the
//! source's.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::report::{rate, ratio, CpuLine, Line};
use crate::systems::Cpu;
use crate::workload::{commit_marker, fingerprint, wait_marker, Workload};
use crate::Bench;

/// How long one pipeline may take to catch up with one workload.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(1800);

/// One workload's measurements.
pub struct CatchUp {
    pub json: serde_json::Value,
    pub line: Line,
    pub cpu: CpuLine,
    /// Peak RSS (MiB) of the replicator and the worker through it.
    pub peak_rss_mib: (Option<u64>, Option<u64>),
}

pub async fn run(b: &mut Bench, w: Workload, next_id: &mut i64) -> anyhow::Result<CatchUp> {
    let rows = w.rows();
    eprintln!("{}: generating on the source", w.describe());
    let source = w.run(&b.p, next_id).await?;
    let marker = b.next_marker();
    commit_marker(&b.src, marker).await?;
    let expected = fingerprint(&b.src).await?;

    // pg_flo.
    let start = Instant::now();
    let pipeline = b.pg_flo.spawn(&b.p)?;
    let seen = match wait_marker(&b.target, marker, CATCH_UP_TIMEOUT).await {
        Ok(seen) => seen,
        Err(e) => {
            return Err(e.context(format!(
                "{}\n{}",
                pipeline.replicator.output_dump(),
                pipeline.worker.output_dump()
            )))
        }
    };
    let pg_flo = seen - start;
    let pg_flo_cpu = per_1k(
        pipeline.cpu(&b.p, &b.src, &b.target, b.pg_flo.group).await,
        rows,
    );
    let peak_rss_mib = pipeline.peak_rss_mib();
    pipeline.stop(&b.src, &b.pg_flo.slot()).await?;
    anyhow::ensure!(
        fingerprint(&b.target).await? == expected,
        "pg_flo's target differs from the source after {}",
        w.name()
    );

    // Native logical replication.
    let start = Instant::now();
    b.native.enable(&b.native_db).await?;
    let seen = wait_marker(&b.native_db, marker, CATCH_UP_TIMEOUT)
        .await
        .context("native catch-up")?;
    let native = seen - start;
    let native_cpu = per_1k(b.native.cpu(&b.src, &b.native_db).await, rows);
    b.native.disable(&b.native_db, &b.src).await?;
    anyhow::ensure!(
        fingerprint(&b.native_db).await? == expected,
        "the native subscriber differs from the source after {}",
        w.name()
    );

    let pg_flo_rate = rows as f64 / pg_flo.as_secs_f64();
    let native_rate = rows as f64 / native.as_secs_f64();
    eprintln!(
        "{}: pg_flo {} ({:.2}s), native {} ({:.2}s)",
        w.describe(),
        rate(pg_flo_rate),
        pg_flo.as_secs_f64(),
        rate(native_rate),
        native.as_secs_f64()
    );
    let json = serde_json::json!({
        "scenario": w.name(),
        "rows": rows,
        "source_generation_seconds": source.as_secs_f64(),
        "rows_per_second": pg_flo_rate.round(),
        "pg_flo": {
            "seconds": pg_flo.as_secs_f64(),
            "rows_per_second": pg_flo_rate.round(),
            "cpu_ms_per_1k_rows": cpu_json(&pg_flo_cpu),
            "replicator_peak_rss_mib": peak_rss_mib.0,
            "worker_peak_rss_mib": peak_rss_mib.1,
        },
        "native": {
            "seconds": native.as_secs_f64(),
            "rows_per_second": native_rate.round(),
            "cpu_ms_per_1k_rows": cpu_json(&native_cpu),
        },
        "pg_flo_vs_native": pg_flo_rate / native_rate,
    });
    Ok(CatchUp {
        json,
        line: Line {
            workload: w.describe(),
            native: rate(native_rate),
            pg_flo: rate(pg_flo_rate),
            copy_pipe: "–".into(),
            ratio: format!("{} native", ratio(pg_flo_rate, native_rate)),
        },
        cpu: CpuLine {
            workload: w.describe(),
            pg_flo: pg_flo_cpu,
            native: native_cpu,
        },
        peak_rss_mib,
    })
}

fn per_1k(cpu: Cpu, rows: i64) -> Cpu {
    let f = |v: Option<f64>| v.map(|ms| crate::cpu::per_1k_rows(ms, rows));
    Cpu {
        replicator: f(cpu.replicator),
        worker: f(cpu.worker),
        nats_server: f(cpu.nats_server),
        postgres_backends: f(cpu.postgres_backends),
    }
}

pub fn cpu_json(cpu: &Cpu) -> serde_json::Value {
    serde_json::json!({
        "replicator": cpu.replicator,
        "worker": cpu.worker,
        "nats_server": cpu.nats_server,
        "postgres_backends": cpu.postgres_backends,
    })
}
