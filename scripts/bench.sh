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
# arguments before a "--" go to bench.ack, those after it to bench.rollback (needs Docker + swarm)
ack_args=() rollback_args=() split=0
for arg in "$@"; do
  if [ "$split" -eq 0 ] && [ "$arg" = "--" ]; then split=1
  elif [ "$split" -eq 0 ]; then ack_args+=("$arg")
  else rollback_args+=("$arg"); fi
done
status=0
# the tracing hook the runtime calls at every milestone: what an emit costs when nobody listens
.venv/bin/python -m bench.emit || status=$?
[ "$status" -ne 130 ] || exit 130
rc=0
.venv/bin/python -m bench.ack "${ack_args[@]}" || rc=$?
[ "$rc" -ne 130 ] || exit 130  # interrupted: do not start the next benchmark
[ "$status" -ne 0 ] || status=$rc
.venv/bin/python -m bench.rollback "${rollback_args[@]}" || { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
exit "$status"
