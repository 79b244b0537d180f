"""Collect triggers never delay a deploy: they coalesce (at most one collect waits) and
have their own stream, so a /rollback goes live at once whatever arrives before it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from bot.domain.jobs import collect_job
from tests.e2e.harness import ALICE, BOB, CHANNEL, Team

T = TypeVar("T")

TRIGGERS = 1000
#: how soon a /rollback must be live, whatever is queued
ROLLBACK_WITHIN = 1.0


async def _until(check: Callable[[], Awaitable[T | None]], *, within: float, what: str) -> T:
    """Poll an async condition (its state is in Redis) until it holds; its value."""
    async with asyncio.timeout(within):
        while not (found := await check()):  # noqa: ASYNC110 - the condition is in Redis
            await asyncio.sleep(0.01)
    assert found, what
    return found


async def _waiting(team: Team, stream: str) -> int:
    """Jobs in ``stream`` not delivered to a worker yet."""
    groups: Any = await team.stack.redis.xinfo_groups(stream)
    return sum(int(group.get("lag") or 0) for group in groups)


async def _release_live(team: Team, env: str, sha: str) -> None:
    """/release ``env`` (no approvals needed there) and wait until it runs ``sha``."""
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", env)
    assert "deploying now" in answer.text, answer.text

    async def live() -> bool:
        return (await team.stack.store.env(env)).live_sha == sha

    await _until(live, within=15, what=f"{sha[:7]} to be live on {env}")


@pytest.mark.http_only
async def test_rollback_goes_live_within_a_second_behind_1000_collect_triggers(
    team: Team,
) -> None:
    store, redis = team.stack.store, team.stack.redis
    await team.batch_message(containing="Initial shop", env="staging")
    first = team.repo.head()
    await _release_live(team, "staging", first)
    second = team.commit(BOB, "Speed up search")
    await team.collect()
    await team.batch_message(containing="Speed up search", env="staging")
    await _release_live(team, "staging", second)

    collects_before = await redis.xlen(store.keys.collects)
    jobs_before = await redis.xlen(store.keys.jobs)
    most_waiting = 0
    for n in range(TRIGGERS):  # as a webhook flood would: one trigger per request
        await store.enqueue(collect_job("push", n=str(n)))
        most_waiting = max(most_waiting, await _waiting(team, store.keys.collects))
    queued = await redis.xlen(store.keys.collects) - collects_before
    print(f"{TRIGGERS} collect triggers queued {queued} collects, at most {most_waiting} waiting")
    # the worker kept collecting (it clears the mark as it starts), never more than one behind
    assert most_waiting <= 1 and queued < TRIGGERS / 10
    assert await redis.xlen(store.keys.jobs) == jobs_before

    loop = asyncio.get_running_loop()
    asked = loop.time()
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/rollback", "staging")
    assert "rolling *staging* back" in answer.text, answer.text

    async def rolled_back() -> bool:
        return (await store.env("staging")).live_sha == first

    await _until(rolled_back, within=10, what="the rollback to go live")
    took = loop.time() - asked
    print(f"/rollback behind {TRIGGERS} collect triggers went live in {took:.2f}s")
    assert took < ROLLBACK_WITHIN
