#!/usr/bin/env bash
# `make bench`: benchmarks that print their figures next to baselines measured in the same run.
# Each starts its own redis-server (AOF on) on a free loopback port and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "scripts/bench.sh: redis-server is not installed; install it first:" >&2
  echo "  apt-get update && apt-get install -y redis-server" >&2
  exit 2
fi
command -v git >/dev/null 2>&1 || { echo "scripts/bench.sh: git is not installed" >&2; exit 2; }
scripts/venv.sh
exec .venv/bin/python -m bench.ack "$@"
