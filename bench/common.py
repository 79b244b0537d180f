"""Helpers shared by the benchmarks: a private redis-server, server child processes, statistics.

Everything listens on 127.0.0.1 only. Whatever a helper starts, it can also stop; the
benchmark entry points call those stops in ``finally`` blocks, and ``kill_leftovers``
is the last resort for child processes when the event loop itself went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bot.adapters.keys import JOBS_GROUP
from bot.adapters.store import Store

#: child processes started by this module and not yet reaped (see ``kill_leftovers``)
_CHILDREN: set[subprocess.Popen[bytes]] = set()


class BenchError(Exception):
    """The benchmark cannot go on as designed; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# redis-server


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError(
            "redis-server is not installed; install it with `apt-get install -y redis-server`"
        )
    return binary


@dataclass
class RedisServer:
    """A private redis-server on a free loopback port, AOF on (fsync every second)."""

    directory: Path
    port: int = field(default_factory=free_port)
    version: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = redis_server_binary()
        self.version = _redis_version(binary)
        log = (self.directory / "redis.log").open("wb")
        try:
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
                    "everysec",
                    "--dir",
                    str(self.directory),
                    "--save",
                    "",
                    "--protected-mode",
                    "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        _CHILDREN.add(self.process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if _redis_answers(self.port):
                return
            time.sleep(0.02)
        tail = _tail(self.directory / "redis.log")
        self.stop()
        raise BenchError(f"redis-server did not start on 127.0.0.1:{self.port}:\n{tail}")

    def stop(self) -> None:
        if self.process is not None:
            _terminate(self.process)
            self.process = None


def _redis_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    for word in done.stdout.split():
        if word.startswith("v="):
            return word[2:]
    return done.stdout.strip() or "unknown"


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Child processes serving HTTP


@dataclass
class ChildServer:
    """A server in its own process; it prints ``READY <port>`` and stops at EOF on stdin."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self, grace: float = 15.0) -> None:
        """Close its stdin, give it ``grace`` seconds to finish, then terminate it."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.process.wait, grace)
        _terminate(self.process)
        if self.process.returncode not in (0, None):
            raise BenchError(
                f"{self.name} exited with status {self.process.returncode}; "
                f"its log:\n{_tail(self.log_path)}"
            )


def _spawn(argv: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            # Ctrl-C reaches the parent only; the child stops when its stdin closes
            start_new_session=True,
        )
    _CHILDREN.add(process)
    return process


async def start_child(
    name: str, argv: Sequence[str], log_path: Path, *, startup: float = 60.0
) -> ChildServer:
    """Start ``argv`` and wait up to ``startup`` seconds for its ``READY <port>`` line.

    Its stderr goes to ``log_path``, shown when it fails.
    """
    process = await asyncio.to_thread(_spawn, argv, log_path)
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), startup)
    except TimeoutError:
        _terminate(process)
        raise BenchError(
            f"{name} did not report READY within {startup:.0f}s; its log:\n{_tail(log_path)}"
        ) from None
    words = line.decode(errors="replace").split()
    if len(words) != 2 or words[0] != "READY" or not words[1].isdigit():
        _terminate(process)
        raise BenchError(f"{name} did not start (said {line!r}); its log:\n{_tail(log_path)}")
    return ChildServer(name, process, int(words[1]), log_path)


def kill_leftovers() -> None:
    """Stop every child this module started that is still running (last resort)."""
    for process in list(_CHILDREN):
        _terminate(process)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    _CHILDREN.discard(process)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, within: float, what: str, every: float = 0.05
) -> None:
    """Poll ``check`` until it is true; BenchError naming ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() >= deadline:
            raise BenchError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(every)


async def jobs_drained(store: Store) -> bool:
    """Every job ever queued was delivered to a worker and acknowledged."""
    stream: Any = await store.redis.xinfo_stream(store.keys.jobs)
    groups: Any = await store.redis.xinfo_groups(store.keys.jobs)
    group = next((g for g in groups if g["name"] == JOBS_GROUP), None)
    return (
        group is not None
        and int(group["pending"]) == 0
        and group["last-delivered-id"] == stream["last-generated-id"]
    )


# ---------------------------------------------------------------------------------------------
# Statistics and the machine


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    p50: float
    p90: float
    p99: float
    max: float


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize_ns(samples_ns: Sequence[int]) -> Summary:
    """p50/p90/p99/max in milliseconds."""
    ms = sorted(ns / 1e6 for ns in samples_ns)
    return Summary(len(ms), percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), ms[-1])


def as_text(value: object) -> str:
    """A Redis reply as text ("" for none)."""
    if value is None or value is False:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_line() -> str:
    cpus = len(os.sched_getaffinity(0))
    return (
        f"machine: nproc {cpus} ({cpu_model()}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()} ({sys.implementation.name})"
    )


_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    # cpu  user nice system idle iowait irq softirq steal ...
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _process_cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


class OtherLoad:
    """How many CPUs processes other than ours kept busy between ``start`` and ``stop``.

    Other work on the machine (a test suite, a build) inflates tail latencies; the
    report says so instead of leaving the reader to guess.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = [os.getpid(), *pids]
        self._start = (0.0, 0.0, 0.0)

    def _sample(self) -> tuple[float, float, float]:
        ours = sum(_process_cpu_seconds(pid) for pid in self.pids)
        return time.monotonic(), _machine_busy_seconds(), ours

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> float:
        wall, busy, ours = self._sample()
        elapsed = wall - self._start[0]
        if elapsed <= 0:
            return 0.0
        others = (busy - self._start[1]) - (ours - self._start[2])
        return max(0.0, others / elapsed)
