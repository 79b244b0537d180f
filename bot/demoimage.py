"""A tiny service image for demos and tests: ``FROM scratch`` plus Debian's static busybox.

It serves ``/version`` (the short sha it was built for) and ``/healthz`` on
``127.0.0.1:$PORT`` with busybox httpd. Built locally through the Docker API; no
registry, no base image download. The ``shipmate demo --docker`` story and the Docker
tests both use it, so what the demo shows is what the tests check.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass

BUSYBOX = "/bin/busybox"


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
