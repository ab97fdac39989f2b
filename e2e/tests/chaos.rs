//! The CI subset of the chaos run (`scripts/chaos.sh` runs the full one): a few rounds with a
//! fixed seed, each with its faults, its workload over six tables and three pipelines, and its
//! check of the postgres target, the file and webhook outputs against what the source
//! committed (see `e2e::chaos`). A failing round prints what diverged, the processes' and
//! servers' last log lines, and the command that replays it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use e2e::chaos::{run, Options};

/// Seed 1's first rounds: a source restart, a target crash, a frozen NATS, a killed
/// replicator, a frozen webhook link and delays (printed at the start of each round).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rounds_of_faults_lose_reorder_and_duplicate_nothing() {
    let report = run(&Options {
        rounds: 3,
        seed: 1,
        window: Duration::from_secs(6),
        ..Options::default()
    })
    .await
    .unwrap();
    let json = serde_json::to_string_pretty(&report.to_json()).unwrap();
    assert!(report.passed(), "{json}");
    assert!(report.changes_checked > 1000, "{json}");
    assert!(report.rows_compared > 0, "{json}");
    assert_eq!(
        (
            report.lost,
            report.diverged,
            report.diverged_tables,
            report.stalls
        ),
        (0, 0, 0, 0),
        "{json}"
    );
    assert_eq!(report.file_duplicates, 0, "{json}");
    assert!(report.faults_by_kind.values().sum::<u32>() >= 3, "{json}");
}
