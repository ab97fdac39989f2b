#!/usr/bin/env bash
# The chaos run: `scripts/chaos.sh [ROUNDS] [SEED] [FIRST_ROUND]` (default 50 rounds, seed 1).
# Real pipelines on throw-away local servers, faults at random times (see e2e/src/chaos/mod.rs),
# every round checked; writes bench/chaos-report.json. A failing round prints the command that
# replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --bins
exec target/debug/chaos "$@"
