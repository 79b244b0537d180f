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


@pytest.fixture
async def team(tmp_path: Path, redis: Redis) -> AsyncIterator[Team]:
    team = await start_team(tmp_path, redis, port=free_port(), staging_port=free_port())
    try:
        yield team
    finally:
        await team.stack.stop()
        await team.emulator.stop()
        for pidfile in list(tmp_path.glob("*.pid")):  # noqa: ASYNC240 - teardown, a few files
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
