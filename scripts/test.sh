#!/usr/bin/env bash
# `make test`: install what the suite needs on a fresh machine, start the services it
# uses, then run it. Tests start their own redis-server (AOF on) on a free loopback port;
# Docker tests use the local engine (started here if it is not running) in swarm mode.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)  # the browser view's tests (Playwright)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

scripts/docker-up.sh
scripts/venv.sh
exec .venv/bin/pytest "$@"
