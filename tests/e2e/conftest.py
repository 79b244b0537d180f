from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import free_port
from tests.e2e.harness import Team, start_team

#: how Slack reaches `web`: signed HTTP requests, or Socket Mode envelopes (SLACK_APP_TOKEN)
SLACK_MODES = ("http", "socket")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "http_only: run the `team` fixture in HTTP mode only")
    config.addinivalue_line("markers", "socket_only: run the `team` fixture in Socket Mode only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test using `team` runs once per mode, unless marked http_only/socket_only."""
    if "slack_mode" not in metafunc.fixturenames:
        return
    modes = [
        mode
        for mode in SLACK_MODES
        if not metafunc.definition.get_closest_marker(
            "socket_only" if mode == "http" else "http_only"
        )
    ]
    metafunc.parametrize("slack_mode", modes, ids=modes)


@pytest.fixture
async def team(tmp_path: Path, redis: Redis, slack_mode: str) -> AsyncIterator[Team]:
    team = await start_team(
        tmp_path, redis, port=free_port(), staging_port=free_port(), mode=slack_mode
    )
    try:
        yield team
    finally:
        await team.stack.stop()
        await team.emulator.stop()
        for pidfile in list(tmp_path.glob("*.pid")):  # noqa: ASYNC240 - teardown, a few files
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
