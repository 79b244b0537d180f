"""Real Docker for tests: the engine, swarm mode, and tiny images built locally.

Images are ``FROM scratch`` plus Debian's static busybox serving ``/www`` with busybox
httpd on a loopback port taken from ``$PORT`` (containers use host networking). No
registry is involved. In CI (CI=true) a missing engine fails the run instead of skipping.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import time
from collections.abc import Iterator

import docker
import pytest
from docker.errors import APIError, DockerException, NotFound

from bot.demoimage import ImageKind, build_context

IN_CI = os.environ.get("CI", "").lower() == "true"
LABEL = "shipmate.test"


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


class DockerKit:
    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.prefix = f"smt{secrets.token_hex(3)}"

    def build(self, repository: str, sha: str, kind: ImageKind | None = None) -> str:
        """Build ``repository:sha`` (a real build; cached layers make repeats fast)."""
        kind = kind or ImageKind()
        tag = f"{repository}:{sha}"
        self.client.images.build(
            fileobj=io.BytesIO(build_context(kind, sha[:7])),
            custom_context=True,
            tag=tag,
            rm=True,
            labels={LABEL: self.prefix},
        )
        return tag

    def cleanup(self) -> None:
        labelled = self.client.containers.list(
            all=True, filters={"label": f"{LABEL}={self.prefix}"}
        )
        named = [c for c in self.client.containers.list(all=True) if c.name.startswith(self.prefix)]
        for container in [*labelled, *named]:
            with contextlib.suppress(NotFound, APIError):
                container.remove(force=True)
        if self.client.info().get("Swarm", {}).get("LocalNodeState") == "active":
            for service in self.client.services.list():
                if service.name.startswith(self.prefix):
                    with contextlib.suppress(NotFound, APIError):
                        service.remove()
        for image in self.client.images.list(filters={"label": f"{LABEL}={self.prefix}"}):
            for tag in image.tags:
                with contextlib.suppress(NotFound, APIError):
                    self.client.images.remove(tag, force=True)

    def name(self, what: str) -> str:
        """A container/service/repository name unique to this test run."""
        return f"{self.prefix}-{what}"


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
