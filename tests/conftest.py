"""Shared fixtures: a real redis-server per test session (AOF on), flushed per test.

In CI (CI=true) a missing redis-server is a failure, never a skip.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

IN_CI = os.environ.get("CI", "").lower() == "true"

#: how long a (re)started redis-server may take to replay its AOF before a test gives up
WRITABLE_WITHIN = 30.0
#: written and deleted again to see that Redis takes writes; no test reads it
WRITABLE_PROBE = "shipmate-test:writable-probe"

# the Docker engine, swarm and test-image fixtures
pytest_plugins = ["tests.dockerkit"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, wait_writable: bool = True, extra_args: Sequence[str] = ()) -> None:
        """Start redis-server and, unless told otherwise, return only once it takes writes.
        ``extra_args`` are more redis-server options (``--key-load-delay 1000``, …)."""
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed (make test installs it: apt-get install redis-server)"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--protected-mode",
                "no",
                *extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    if wait_writable:
                        self.wait_writable()
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        pytest.fail(f"redis-server did not start on port {self.port}")

    def wait_writable(self, within: float = WRITABLE_WITHIN) -> None:
        """Return once the server takes a write. A restarted redis-server accepts
        connections at once but answers LOADING while it replays its AOF (seconds on a slow
        disk); a test that writes straight away would fail for a reason it is not testing."""
        client = SyncRedis(  # no retries of its own: this loop is the retry
            host="127.0.0.1",
            port=self.port,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
        )
        deadline = time.monotonic() + within
        try:
            while True:
                try:
                    client.set(WRITABLE_PROBE, "1")
                    client.delete(WRITABLE_PROBE)
                    return
                except (RedisConnectionError, RedisTimeoutError) as err:  # LOADING included
                    if self.process is not None and self.process.poll() is not None:
                        return  # not ours that answers on the port; the caller checks
                    if time.monotonic() > deadline:
                        pytest.fail(f"redis-server on port {self.port} took no write: {err}")
                time.sleep(0.02)  # polling a condition, bounded by the deadline above
        finally:
            client.close()

    def kill(self) -> None:
        """kill -9: what a crash looks like; the AOF is all that survives."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), directory=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_per_module() -> Iterator[None]:
    """A client or socket left open is reported by the module that leaked it (its last
    test's teardown), not by whichever later test happens to trigger a collection."""
    yield
    gc.collect()
