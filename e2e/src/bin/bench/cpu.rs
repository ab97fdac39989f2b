//! CPU time of processes, in core-milliseconds, from `/proc/<pid>/stat` (`utime + stime`, in
//! clock ticks of `getconf CLK_TCK`, usually 10 ms): the cost per row the benchmark reports for
//! the replicator, the worker, nats-server and the PostgreSQL backends that stream and apply.
//!
//! A process that already exited has no `/proc` entry; a reaped child's time is in the
//! benchmark's own `cutime + cstime` ([`reaped_children_ms`]).

use std::sync::OnceLock;

/// Milliseconds per clock tick.
fn tick_ms() -> f64 {
    static TICK: OnceLock<f64> = OnceLock::new();
    *TICK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|hz| *hz > 0.0)
            .map_or(10.0, |hz| 1000.0 / hz)
    })
}

/// The fields of a `/proc/<pid>/stat` line after the command name (field 3, `state`, first).
fn fields(stat: &str) -> Option<Vec<&str>> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().collect())
}

/// Sum of the fields numbered `a` and `b` (1-based, as in proc(5)) of `/proc/<pid>/stat`, in ms.
fn stat_ms(pid: &str, a: usize, b: usize) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f = fields(&stat)?;
    let ticks = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some((ticks(a)? + ticks(b)?) as f64 * tick_ms())
}

/// CPU time (user + system) of process `pid` so far, in ms; `None` if it is gone.
pub fn process_ms(pid: u32) -> Option<f64> {
    stat_ms(&pid.to_string(), 14, 15)
}

/// CPU time of the benchmark's children that exited and were reaped, in ms.
pub fn reaped_children_ms() -> Option<f64> {
    stat_ms("self", 16, 17)
}

/// Core-ms per 1,000 rows.
pub fn per_1k_rows(ms: f64, rows: i64) -> f64 {
    if rows <= 0 {
        return 0.0;
    }
    ms * 1000.0 / rows as f64
}
