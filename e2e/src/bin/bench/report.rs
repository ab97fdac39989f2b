//! The printed tables (markdown, as quoted in `docs/benchmarks.md`) and the number formats.

use crate::systems::Cpu;

/// A line of the main table: one workload, native vs pg_flo (vs the COPY pipe).
pub struct Line {
    pub workload: String,
    pub native: String,
    pub pg_flo: String,
    pub copy_pipe: String,
    pub ratio: String,
}

/// A line of the CPU table: core-ms per 1,000 rows over one workload.
pub struct CpuLine {
    pub workload: String,
    pub pg_flo: Cpu,
    pub native: Cpu,
}

pub fn table(lines: &[Line]) -> String {
    let mut out = String::from(
        "| workload | native LR | pg_flo | COPY pipe | ratio |\n|---|---|---|---|---|\n",
    );
    for l in lines {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            l.workload, l.native, l.pg_flo, l.copy_pipe, l.ratio
        ));
    }
    out
}

pub fn cpu_table(lines: &[CpuLine]) -> String {
    let mut out = String::from(
        "| core-ms per 1k rows | pg_flo replicator | pg_flo worker | nats-server | pg_flo total | \
         PostgreSQL backends of pg_flo | PostgreSQL backends of native |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for l in lines {
        let total = [l.pg_flo.replicator, l.pg_flo.worker, l.pg_flo.nats_server]
            .into_iter()
            .sum::<Option<f64>>();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            l.workload,
            opt(l.pg_flo.replicator),
            opt(l.pg_flo.worker),
            opt(l.pg_flo.nats_server),
            opt(total),
            opt(l.pg_flo.postgres_backends),
            opt(l.native.postgres_backends),
        ));
    }
    out
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

/// `12.3k rows/s`.
pub fn rate(rows_per_second: f64) -> String {
    if rows_per_second >= 1000.0 {
        format!("{:.1}k rows/s", rows_per_second / 1000.0)
    } else {
        format!("{rows_per_second:.0} rows/s")
    }
}

/// `2.3x` (`a / b`).
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "–".into()
    }
}
