#!/usr/bin/env bash
# Throughput benchmark of the release build on throw-away local servers; writes
# bench/results.json. BENCH_ROWS (default 100000) sets the row count.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bins
exec cargo run --release -q -p pg-flo-e2e --bin bench
