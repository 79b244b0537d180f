from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.domain.models import StepStatus
from deployer.base import DeployTarget, HealthCheckFailed, HealthResult
from deployer.health import HealthSpec, check_health
from deployer.testing import RecordingReporter
from tests.deployer.util import SHA, pid_gone, read_pid, wait_until, write_script

TARGET = DeployTarget(env="staging", sha=SHA)


@dataclass
class HealthServer:
    base: str
    #: answer 500 this many times before answering 200 on /flaky
    fail_first: int = 0
    hits: int = 0
    queries: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    state = HealthServer(base="")

    async def flaky(request: web.Request) -> web.Response:
        state.hits += 1
        state.queries.append(request.query_string)
        return web.Response(status=500 if state.hits <= state.fail_first else 200)

    async def broken(request: web.Request) -> web.Response:
        state.hits += 1
        return web.Response(status=500, text="boom")

    async def hang(request: web.Request) -> web.Response:
        state.hits += 1
        await state.release.wait()  # never answers in time; released at teardown
        return web.Response()

    async def alternate(request: web.Request) -> web.Response:
        state.hits += 1
        return web.Response(status=200 if state.hits % 2 else 503)

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/flaky")

    app = web.Application()
    app.add_routes(
        [
            web.get("/flaky", flaky),
            web.get("/broken", broken),
            web.get("/hang", hang),
            web.get("/alternate", alternate),
            web.get("/moved", moved),
        ]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.base = f"http://{host}:{port}"
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_http_passes_after_retries(server: HealthServer) -> None:
    server.fail_first = 3
    reporter = RecordingReporter()
    spec = HealthSpec(http=server.base + "/flaky", timeout=5, interval=0.02, successes=2)

    result = await check_health(spec, TARGET, reporter)

    assert result.healthy
    assert result.attempts == 5
    assert result.detail.startswith("2/2 passed after 5 attempts in ")
    details = [s.detail for s in reporter.steps]
    assert f"0/2 passed; last: GET {server.base}/flaky -> 500" in details
    assert "1/2 passed" in details
    assert reporter.steps[-1].status is StepStatus.OK
    assert reporter.steps[-1].detail == "2/2 passed"
    # identical failures are reported once, not once per poll
    assert len(reporter.steps) == 4


async def test_successes_must_be_consecutive(server: HealthServer) -> None:
    reporter = RecordingReporter()
    spec = HealthSpec(http=server.base + "/alternate", timeout=0.3, interval=0.01, successes=2)
    result = await check_health(spec, TARGET, reporter)
    assert not result.healthy
    assert result.attempts >= 4
    assert "2/2 passed" not in [s.detail for s in reporter.steps]


async def test_http_failing_reports_last_failure(server: HealthServer) -> None:
    reporter = RecordingReporter()
    spec = HealthSpec(http=server.base + "/broken", timeout=0.3, interval=0.05)

    result = await check_health(spec, TARGET, reporter)

    assert result == HealthResult(
        False, f"GET {server.base}/broken -> 500", result.attempts, result.elapsed
    )
    assert 0.3 <= result.elapsed < 2
    assert result.attempts >= 2
    assert reporter.steps[-1].status is StepStatus.FAILED
    assert reporter.steps[-1].detail == f"GET {server.base}/broken -> 500"
    with pytest.raises(HealthCheckFailed, match="-> 500"):
        result.raise_for_health()


async def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{closed_port()}/healthz"
    result = await check_health(
        HealthSpec(http=url, timeout=0.2, interval=0.05), TARGET, RecordingReporter()
    )
    assert not result.healthy
    assert result.detail == f"GET {url}: connection refused"


async def test_server_that_never_answers_in_time(server: HealthServer) -> None:
    # interval*5 = 0.1s per attempt, so several attempts fit in the timeout
    spec = HealthSpec(http=server.base + "/hang", timeout=0.5, interval=0.02)
    result = await check_health(spec, TARGET, RecordingReporter())
    assert not result.healthy
    assert result.detail.startswith(f"GET {server.base}/hang timed out after ")
    assert result.attempts >= 2
    assert result.elapsed < 2


async def test_a_long_interval_still_ends_at_the_deadline(server: HealthServer) -> None:
    spec = HealthSpec(http=server.base + "/broken", timeout=0.2, interval=30)
    started = time.monotonic()
    result = await check_health(spec, TARGET, RecordingReporter())
    assert time.monotonic() - started < 1.5
    assert result.attempts == 1 and not result.healthy


async def test_redirect_is_not_healthy(server: HealthServer) -> None:
    spec = HealthSpec(http=server.base + "/moved", timeout=0.1, interval=0.05)
    result = await check_health(spec, TARGET, RecordingReporter())
    assert result.detail == f"GET {server.base}/moved -> 302"


async def test_url_placeholders_and_a_given_session(server: HealthServer) -> None:
    spec = HealthSpec(http=server.base + "/flaky?sha={sha}&env={env}&s={short_sha}", timeout=2)
    async with aiohttp.ClientSession() as session:
        result = await check_health(spec, TARGET, RecordingReporter(), session=session)
        assert not session.closed  # the caller's session is the caller's to close
    assert result.healthy
    assert server.queries == [f"sha={SHA}&env=staging&s={SHA[:7]}"]


async def test_command_passes_after_retries(tmp_path: Path) -> None:
    write_script(
        tmp_path / "smoke.sh",
        '[ "$1" = "$SHIPMATE_SHA" ] || { echo "wrong sha $1"; exit 2; }\n'
        "echo x >> tries\n"
        'if [ "$(wc -l < tries)" -lt 3 ]; then echo "not ready yet"; exit 1; fi\n'
        "echo ok\n",
    )
    reporter = RecordingReporter()
    spec = HealthSpec(command=("./smoke.sh", "{sha}"), cwd=tmp_path, timeout=5, interval=0.01)

    result = await check_health(spec, TARGET, reporter)

    assert result.healthy and result.attempts == 3
    assert "0/1 passed; last: ./smoke.sh exited 1: not ready yet" in [
        s.detail for s in reporter.steps
    ]


async def test_command_failing_names_exit_code_and_last_line(tmp_path: Path) -> None:
    write_script(tmp_path / "smoke.sh", "echo checking\necho still broken >&2\nexit 1\n")
    spec = HealthSpec(command=("./smoke.sh",), cwd=tmp_path, timeout=0.2, interval=0.05)
    result = await check_health(spec, TARGET, RecordingReporter())
    assert not result.healthy
    assert result.detail == "./smoke.sh exited 1: still broken"


async def test_command_killed_when_it_overruns(tmp_path: Path) -> None:
    write_script(tmp_path / "smoke.sh", "sleep 60 &\necho $! > child.pid\nwait\n")
    spec = HealthSpec(command=("./smoke.sh",), cwd=tmp_path, timeout=0.3, interval=0.02)

    result = await check_health(spec, TARGET, RecordingReporter())

    assert not result.healthy
    assert result.detail.startswith("./smoke.sh timed out after ")
    child = read_pid(tmp_path / "child.pid")
    assert child is not None
    await wait_until(lambda: pid_gone(child))


async def test_missing_command_fails_at_once(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    spec = HealthSpec(command=("./smoke.sh",), cwd=tmp_path, timeout=30, interval=0.05)
    started = time.monotonic()
    result = await check_health(spec, TARGET, reporter)
    assert time.monotonic() - started < 2
    assert not result.healthy and result.attempts == 1
    assert result.detail.startswith("health command not found: ./smoke.sh")
    assert reporter.steps[-1].status is StepStatus.FAILED


async def test_http_and_command_must_both_pass(server: HealthServer, tmp_path: Path) -> None:
    write_script(tmp_path / "smoke.sh", "exit 0\n")
    spec = HealthSpec(
        http=server.base + "/broken",
        command=("./smoke.sh",),
        cwd=tmp_path,
        timeout=0.1,
        interval=0.05,
    )
    result = await check_health(spec, TARGET, RecordingReporter())
    assert result.detail == f"GET {server.base}/broken -> 500"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"http": "ftp://x/healthz"},
        {"http": "http://x/{tag}"},
        {"command": ()},
        {"command": "./smoke.sh"},
        {"command": ("./smoke.sh", "{sha1}")},
        {"http": "http://x/", "timeout": 0},
        {"http": "http://x/", "interval": 0},
        {"http": "http://x/", "successes": 0},
    ],
)
def test_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        HealthSpec(**kwargs)  # type: ignore[arg-type]
