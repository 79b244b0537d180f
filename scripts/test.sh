#!/usr/bin/env bash
# `make test`: install what the suite needs on a fresh machine, then run it.
# Tests start their own redis-server (AOF on) on a free loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v git >/dev/null 2>&1 || need_apt+=(git)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# the Debian package starts a system redis on :6379; the tests never use it
scripts/venv.sh
exec .venv/bin/pytest "$@"
