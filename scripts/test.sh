#!/usr/bin/env bash
# The single "run all tests" command: setup, format check, lints, binaries (the e2e tests
# run them as processes), then every test with nextest (a run of zero tests fails).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo build --bins
cargo nextest run --workspace --no-fail-fast
