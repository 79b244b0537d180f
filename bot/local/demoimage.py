"""A tiny service image for demos and tests: ``FROM scratch`` plus Debian's static busybox.

It serves ``/version`` (the short sha it was built for) and ``/healthz`` on
``127.0.0.1:$PORT`` with busybox httpd. Built locally through the Docker API; no
registry, no base image download. The ``shipmate demo --docker`` story, the Docker
tests and ``bench.rollback`` all use it, so what the demo shows is what the tests check
and the benchmark measures.

:class:`DockerKit` names, builds and removes what one test run or benchmark run puts on
the engine (everything under one random prefix and label), so it can always clean up.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import tarfile
from dataclasses import dataclass

import docker
from docker.errors import APIError, NotFound

BUSYBOX = "/bin/busybox"
#: the label on every image and container a DockerKit made; its value is the kit's prefix
LABEL = "shipmate.test"


@dataclass(frozen=True)
class ImageKind:
    """What the service does: answer /healthz with 200 or 404, with or without a HEALTHCHECK."""

    healthy: bool = True
    healthcheck: bool = False
    #: exit right away instead of serving (a container that cannot start)
    crash: bool = False


def dockerfile(kind: ImageKind) -> str:
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


def build_context(kind: ImageKind, version: str) -> bytes:
    """A build context tar: Dockerfile, busybox, and /www with the version and /healthz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", dockerfile(kind).encode())
        with open(BUSYBOX, "rb") as f:
            add("busybox", f.read(), 0o755)
        add("www/index.html", f"{version}\n".encode())
        add("www/version", f"{version}\n".encode())
        if kind.healthy:
            add("www/healthz", b"ok\n")
        else:
            add("www/broken", b"no healthz here\n")
    return buffer.getvalue()


def build_image(
    client: docker.DockerClient,
    tag: str,
    version: str,
    kind: ImageKind | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """Build ``tag`` serving ``version`` (a real build; cached layers make repeats fast)."""
    client.images.build(
        fileobj=io.BytesIO(build_context(kind or ImageKind(), version)),
        custom_context=True,
        tag=tag,
        rm=True,
        labels=labels or {},
    )
    return tag


class DockerKit:
    """Names, images and cleanup for one run that uses a real Docker engine."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.prefix = f"smt{secrets.token_hex(3)}"

    def build(self, repository: str, sha: str, kind: ImageKind | None = None) -> str:
        """Build ``repository:sha`` serving the short sha."""
        return build_image(
            self.client, f"{repository}:{sha}", sha[:7], kind, labels={LABEL: self.prefix}
        )

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
        """A container/service/repository name unique to this run."""
        return f"{self.prefix}-{what}"
