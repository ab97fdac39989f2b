#!/usr/bin/env bash
# pg_flo (release build) side by side with native logical replication and a COPY pipe, on
# throw-away local servers; prints the tables and writes bench/results.json. Sizes:
# BENCH_ROWS (default 50000; 200000 gives the performance issue's sizes), see
# e2e/src/bin/bench/main.rs; BENCH_SCENARIO=large_values runs the large-values scenario only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bins
exec cargo run --release -q -p pg-flo-e2e --bin bench
