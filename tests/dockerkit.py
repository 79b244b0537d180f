"""Real Docker for tests: the engine, swarm mode, and tiny images built locally.

The kit itself (names, builds, cleanup) is ``bot.local.demoimage.DockerKit``, shared with the
benchmarks; this module adds the pytest fixtures. Images are ``FROM scratch`` plus Debian's static busybox serving ``/www`` with busybox
httpd on a loopback port taken from ``$PORT`` (containers use host networking). No
registry is involved. In CI (CI=true) a missing engine fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import docker
import pytest
from docker.errors import DockerException

from bot.local.demoimage import LABEL, DockerKit

__all__ = [
    "LABEL",
    "DockerKit",
    "docker_client",
    "docker_engine",
    "dockerkit",
    "ensure_swarm",
    "swarm",
]

IN_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def docker_client() -> docker.DockerClient:
    if shutil.which("dockerd") is None and not os.path.exists("/var/run/docker.sock"):
        _unavailable("Docker is not installed (make test installs docker.io and starts dockerd)")
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except DockerException as err:
        _unavailable(f"the Docker engine is not reachable: {err}")
        raise
    return client


def ensure_swarm(client: docker.DockerClient) -> None:
    state = client.info().get("Swarm", {}).get("LocalNodeState")
    if state != "active":
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    deadline = time.monotonic() + 30
    while client.info().get("Swarm", {}).get("LocalNodeState") != "active":
        if time.monotonic() > deadline:
            pytest.fail("swarm did not become active")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[docker.DockerClient]:
    client = docker_client()
    yield client
    client.close()


@pytest.fixture
def dockerkit(docker_engine: docker.DockerClient) -> Iterator[DockerKit]:
    kit = DockerKit(docker_engine)
    yield kit
    kit.cleanup()


@pytest.fixture(scope="session")
def swarm(docker_engine: docker.DockerClient) -> docker.DockerClient:
    ensure_swarm(docker_engine)
    return docker_engine
