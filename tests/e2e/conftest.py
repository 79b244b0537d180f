from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.e2e.harness import Team, running_team

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
    async with running_team(tmp_path, redis, mode=slack_mode) as team:
        yield team
