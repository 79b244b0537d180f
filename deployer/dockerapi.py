"""The one place shipmate talks to docker-py.

docker-py is blocking (requests underneath), so every call runs in a worker thread; a slow
or hung engine must never stall the event loop that also serves Slack. Its exceptions are
turned into :class:`DockerError` subclasses whose ``str()`` is one line a person can act on,
because those messages end up in the release thread, not in a log.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import docker
import docker.errors
import docker.utils
import requests.exceptions

from deployer.base import DeployError

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


class DockerError(DeployError):
    """A Docker call failed. A DeployError so a backend can let it propagate unchanged."""


class DockerUnreachable(DockerError):
    """The engine did not answer at all (no socket, refused, timed out)."""


class DockerNotFound(DockerError):
    """The engine answered 404: no such container, image, service, …"""


class DockerConflict(DockerError):
    """The engine answered 409: a name in use, a container in the wrong state, …"""


_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ENOENT,
    errno.EACCES,
    errno.EPERM,
    errno.ECONNRESET,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.ENOTSOCK,
}


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else ""


def _causes(exc: BaseException) -> list[BaseException]:
    """Every exception wrapped inside ``exc``. requests and urllib3 nest the real OSError in
    args and ``.reason`` rather than ``__cause__``, so all three are followed."""
    seen: list[BaseException] = []
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend(item.args)
        todo.extend([item.__cause__, item.__context__, getattr(item, "reason", None)])
    return seen


def _os_reason(exc: BaseException) -> str | None:
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.errno in _UNREACHABLE_ERRNOS:
            if cause.errno == errno.ENOENT:
                return "no such socket (is dockerd running?)"
            return (cause.strerror or os.strerror(cause.errno or 0)).lower()
    return None


def _is_timeout(exc: BaseException) -> bool:
    return any(isinstance(c, requests.exceptions.Timeout | TimeoutError) for c in _causes(exc))


def _close_unconnected_sockets(exc: BaseException) -> None:
    """docker-py's UnixHTTPConnection.connect() drops its socket without closing it when
    the connect fails (no socket file, dockerd gone), which is a ResourceWarning later.
    The socket is still a local of that frame in the traceback; close it there. Only
    sockets that never connected are touched, so no live pooled connection is affected."""
    for cause in _causes(exc):
        tb = cause.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if "docker" in frame.f_code.co_filename:
                for value in list(frame.f_locals.values()):
                    if isinstance(value, socket.socket) and value.fileno() != -1:
                        try:
                            value.getpeername()
                        except OSError:
                            value.close()
            tb = tb.tb_next


def describe_host(client: Any) -> str:
    """Where ``client`` connects, as a person would write it (docker-py rewrites a unix
    socket to ``http+docker://localhost``, which says nothing)."""
    api = getattr(client, "api", client)
    base_url = str(getattr(api, "base_url", "") or "")
    if base_url.startswith("http+docker://"):
        adapter = getattr(api, "_custom_adapter", None)
        socket_path = getattr(adapter, "socket_path", None)
        if socket_path:
            return f"unix://{socket_path}"
    return base_url or DEFAULT_DOCKER_HOST


def translate(exc: BaseException, host: str, timeout: float) -> DockerError:
    """A docker-py / requests exception as a one-line :class:`DockerError`."""
    if isinstance(exc, DockerError):
        return exc
    if isinstance(exc, docker.errors.APIError):
        explanation = exc.explanation
        if isinstance(explanation, bytes):
            explanation = explanation.decode("utf-8", "replace")
        message = _first_line(str(explanation or exc)) or type(exc).__name__
        status = exc.status_code
        if status == 404:
            return DockerNotFound(f"Docker: {message}")
        if status == 409:
            return DockerConflict(f"Docker: {message}")
        return DockerError(f"Docker: {message}")
    _close_unconnected_sockets(exc)
    if _is_timeout(exc):
        return DockerUnreachable(f"Docker at {host} did not answer within {timeout:g}s")
    reason = _os_reason(exc)
    if reason is not None:
        return DockerUnreachable(f"Docker is not reachable at {host}: {reason}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return DockerUnreachable(f"Docker is not reachable at {host}: {_first_line(str(exc))}")
    return DockerError(f"Docker: {_first_line(str(exc)) or type(exc).__name__}")


_TRANSLATED = (docker.errors.DockerException, requests.exceptions.RequestException)


class DockerApi:
    """An async face for one docker-py client.

    Without ``client`` one is made on first use (from ``base_url``, else the environment
    like ``docker`` does) and closed by :meth:`close`; a given client is the caller's to
    close. The client is made lazily because docker-py asks the engine for its API version
    in the constructor, and an unreachable engine must show up as a DockerError from an
    awaited call, not as an exception while wiring up the bot.
    """

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 60,
    ) -> None:
        if client is not None and base_url is not None:
            raise ValueError("pass either a Docker client or a base_url, not both")
        self._client = client
        self._owned = client is None
        self._base_url = base_url
        self._timeout = timeout
        self._lock = threading.Lock()
        self._closed = False

    @property
    def host(self) -> str:
        """Where the engine is expected, for messages."""
        if self._client is not None:
            return describe_host(self._client)
        return self._base_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST

    @property
    def client(self) -> docker.DockerClient:
        """The docker-py client. Blocking the first time (it connects): use it inside
        :meth:`run`, where that first connection happens in a thread anyway."""
        try:
            return self._connect()
        except _TRANSLATED as exc:
            raise translate(exc, self.host, self._timeout) from exc

    def _connect(self) -> docker.DockerClient:
        with self._lock:
            if self._closed:
                raise DockerError("Docker: the client was closed")
            if self._client is None:
                if self._base_url is not None:
                    self._client = docker.DockerClient(
                        base_url=self._base_url, timeout=self._timeout
                    )
                else:
                    self._client = docker.from_env(timeout=self._timeout)
            return self._client

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` in a thread; docker-py and requests errors come out as
        :class:`DockerError`. Pass a lambda to reach objects through :attr:`client`."""
        try:
            if self._client is None:
                await asyncio.to_thread(self._connect)
            return await asyncio.to_thread(fn, *args, **kwargs)
        except _TRANSLATED as exc:
            raise translate(exc, self.host, self._timeout) from exc

    async def image_exists(self, ref: str) -> bool:
        try:
            await self.run(lambda: self.client.images.get(ref))
        except DockerNotFound:
            return False
        return True

    async def pull(self, ref: str) -> None:
        """Pull exactly ``ref`` (a bare repository means ``:latest``, never all tags)."""
        repository, tag = docker.utils.parse_repository_tag(ref)
        await self.run(lambda: self.client.images.pull(repository, tag=tag or "latest"))

    async def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._closed = True
        if client is not None and self._owned:
            await asyncio.to_thread(client.close)
