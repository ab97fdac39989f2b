//! `chaos [ROUNDS] [SEED] [FIRST_ROUND]`: the chaos run of [`e2e::chaos`] (defaults: 50
//! rounds, seed 1, from round 0). Prints each round's faults and result, writes the report to
//! `$CHAOS_REPORT` (default `bench/chaos-report.json`) and exits 1 when a round fails, after
//! printing what diverged and the processes' and servers' last log lines.
//!
//! `CHAOS_WINDOW_SECS` sets how long the workload runs per round (default 8). Needs the
//! `pg_flo` binary of the same cargo profile; `scripts/chaos.sh` builds both.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use e2e::chaos::{run, Options};

fn arg<T: std::str::FromStr>(n: usize, what: &str) -> anyhow::Result<Option<T>> {
    std::env::args()
        .nth(n)
        .map(|a| {
            a.parse()
                .map_err(|_| anyhow::anyhow!("{what} must be a number, got {a:?}"))
        })
        .transpose()
}

async fn main_inner() -> anyhow::Result<bool> {
    let defaults = Options::default();
    let window = match std::env::var("CHAOS_WINDOW_SECS") {
        Ok(s) => Duration::from_secs(s.parse().context("CHAOS_WINDOW_SECS must be seconds")?),
        Err(_) => defaults.window,
    };
    let opts = Options {
        rounds: arg(1, "ROUNDS")?.unwrap_or(defaults.rounds),
        seed: arg(2, "SEED")?.unwrap_or(defaults.seed),
        first_round: arg(3, "FIRST_ROUND")?.unwrap_or(defaults.first_round),
        window,
        ..defaults
    };
    let report = run(&opts).await?;
    let path =
        std::env::var("CHAOS_REPORT").unwrap_or_else(|_| "bench/chaos-report.json".to_owned());
    let json = serde_json::to_string_pretty(&report.to_json())?;
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&path, format!("{json}\n")).with_context(|| format!("write {path}"))?;
    if let Some(failure) = &report.failure {
        println!("\nFAILED\n{failure}");
    }
    println!("\n{json}\nreport written to {path}");
    Ok(report.passed())
}

#[tokio::main]
async fn main() -> ExitCode {
    match main_inner().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}
