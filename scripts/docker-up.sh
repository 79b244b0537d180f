#!/usr/bin/env bash
# Start the Docker engine for tests if it is not running, and make this node a swarm manager.
# No bridge and no iptables: test containers use host networking and only loopback addresses.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null 2>&1; then
    echo "dockerd is not installed (apt-get install docker.io)" >&2
    exit 1
  fi
  echo "starting dockerd"
  $SUDO sh -c 'nohup dockerd --bridge=none --iptables=false --ip-masq=false >/var/log/shipmate-dockerd.log 2>&1 &'
  for _ in $(seq 1 150); do
    docker info >/dev/null 2>&1 && break
    sleep 0.2
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/shipmate-dockerd.log" >&2; exit 1; }
fi
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != "active" ]; then
  docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >/dev/null
fi
