"""Polling while nothing merged reads no git history again; a merge reads it once for every
environment on the same base."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.adapters.keys import JOBS_GROUP
from bot.domain.models import Commit
from tests.e2e.harness import ALICE, BOB, Team


async def collects_drained(team: Team, *, within: float = 10.0) -> None:
    """Wait until no collect job waits or runs: the worker's own collects would otherwise
    read git beside the ones the test counts."""
    redis, keys = team.stack.store.redis, team.stack.store.keys
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        groups: Any = await redis.xinfo_groups(keys.collects)
        group = next(g for g in groups if g["name"] == JOBS_GROUP)
        busy = int(group["pending"]) or int(group.get("lag") or 0)
        if not busy and not await redis.exists(keys.collect_pending):
            return
        assert loop.time() < deadline, f"collect jobs still queued after {within}s"
        await asyncio.sleep(0.01)


@pytest.mark.http_only  # the collector does not depend on how Slack reaches web
async def test_unchanged_branch_reads_no_history_and_envs_share_one_read(team: Team) -> None:
    await team.collect()
    await team.batch_message(containing="Initial shop")
    # the triggered collect and the worker's own poll are over; only ours run below
    await collects_drained(team)
    collector = team.stack.workers[0].worker.collector
    reads: list[tuple[str | None, str]] = []
    original = collector.mirror.commits_between

    async def counting(base: str | None, head: str, *, limit: int = 200) -> list[Commit]:
        reads.append((base, head))
        return await original(base, head, limit=limit)

    collector.mirror.commits_between = counting  # type: ignore[method-assign]
    team.commit(ALICE, "Add cart page")
    await collector.collect()
    first = len(reads)
    assert first == 1, reads  # sandbox and staging both run nothing yet: one read serves both

    await collector.collect()
    await collector.collect()
    assert len(reads) == first, "nothing merged: no git log"

    team.commit(BOB, "Fix rounding")
    await collector.collect()
    assert len(reads) == first + 1
    await team.batch_message(containing="Fix rounding")
    await team.batch_message(containing="Fix rounding", env="staging")
