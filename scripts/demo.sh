#!/usr/bin/env bash
# Runs the demo pipeline on throw-away local servers: a PostgreSQL cluster (databases
# `source` and `target`) and NATS JetStream, `pg_flo replicator` + `pg_flo worker postgres`
# (and a `pg_flo worker stdout` printing the changes as JSON), a short scripted workload,
# then a source/target comparison. Installs postgresql and nats-server with apt when missing.
# DEMO_SECONDS=N sets the workload length (default 10; 0 = until Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --bins
exec cargo run -q -p pg-flo-e2e --bin demo
