"""Real Docker for tests: the engine, swarm mode, and tiny images built locally.

Images are ``FROM scratch`` plus Debian's static busybox serving ``/www`` with busybox
httpd on a loopback port taken from ``$PORT`` (containers use host networking). No
registry is involved. In CI (CI=true) a missing engine fails the run instead of skipping.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest
from docker.errors import APIError, DockerException, NotFound

IN_CI = os.environ.get("CI", "").lower() == "true"
BUSYBOX = "/bin/busybox"
LABEL = "shipmate.test"


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class ImageKind:
    """What the test service does: answer /healthz with 200 or 404, with or without a HEALTHCHECK."""

    healthy: bool = True
    healthcheck: bool = False
    #: exit right away instead of serving (a container that cannot start)
    crash: bool = False


def _dockerfile(kind: ImageKind) -> str:
    serve = "exec /bin/busybox httpd -f -p 127.0.0.1:${PORT:-18080} -h /www"
    if kind.crash:
        serve = 'echo "fatal: cannot connect to the database" >&2; exit 3'
    lines = [
        "FROM scratch",
        "COPY busybox /bin/busybox",
        "COPY www /www",
        'ENTRYPOINT ["/bin/busybox", "sh", "-c"]',
        f"CMD {json.dumps([serve])}",
    ]
    if kind.healthcheck:
        lines.insert(
            3,
            "HEALTHCHECK --interval=1s --timeout=1s --retries=1 "
            'CMD ["/bin/busybox", "sh", "-c", '
            '"/bin/busybox wget -q -O /dev/null http://127.0.0.1:${PORT:-18080}/healthz"]',
        )
    return "\n".join(lines) + "\n"


def _context(kind: ImageKind, version: str) -> bytes:
    """A build context tar: Dockerfile, busybox, and /www with the version and /healthz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", _dockerfile(kind).encode())
        with open(BUSYBOX, "rb") as f:
            add("busybox", f.read(), 0o755)
        add("www/index.html", f"{version}\n".encode())
        add("www/version", f"{version}\n".encode())
        if kind.healthy:
            add("www/healthz", b"ok\n")
        else:
            add("www/broken", b"no healthz here\n")
    return buffer.getvalue()


class DockerKit:
    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.prefix = f"smt{secrets.token_hex(3)}"

    def build(self, repository: str, sha: str, kind: ImageKind = ImageKind()) -> str:
        """Build ``repository:sha`` (a real build; cached layers make repeats fast)."""
        tag = f"{repository}:{sha}"
        self.client.images.build(
            fileobj=io.BytesIO(_context(kind, sha[:7])),
            custom_context=True,
            tag=tag,
            rm=True,
            labels={LABEL: self.prefix},
        )
        return tag

    def cleanup(self) -> None:
        for container in self.client.containers.list(
            all=True, filters={"label": f"{LABEL}={self.prefix}"}
        ):
            _quietly(lambda c=container: c.remove(force=True))
        for container in self.client.containers.list(all=True):
            if container.name.startswith(self.prefix):
                _quietly(lambda c=container: c.remove(force=True))
        if self.client.info().get("Swarm", {}).get("LocalNodeState") == "active":
            for service in self.client.services.list():
                if service.name.startswith(self.prefix):
                    _quietly(service.remove)
        for image in self.client.images.list(filters={"label": f"{LABEL}={self.prefix}"}):
            for tag in image.tags:
                _quietly(lambda t=tag: self.client.images.remove(t, force=True))

    def name(self, what: str) -> str:
        """A container/service/repository name unique to this test run."""
        return f"{self.prefix}-{what}"


def _quietly(fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except (NotFound, APIError):
        pass


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
