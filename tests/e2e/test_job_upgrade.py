"""A rolling upgrade: the worker runs jobs an older `web` queued, and drops kinds it does not know.

Jobs go through the Redis stream as plain strings. An older version wrote a release's jobs
without their ``env`` field; a newer one may queue a kind this worker has never heard of.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.adapters.keys import JOBS_GROUP, Keys
from bot.adapters.store import Snapshot, Write
from bot.domain import environment
from bot.domain.models import ReleaseState
from tests.e2e.harness import ALICE, CHANNEL, Team

pytestmark = pytest.mark.http_only


async def _drained(redis: Redis, keys: Keys) -> bool:
    """Every job in the stream was delivered to a worker and acknowledged."""
    stream: Any = await redis.xinfo_stream(keys.jobs)
    groups: Any = await redis.xinfo_groups(keys.jobs)
    group = next(g for g in groups if g["name"] == JOBS_GROUP)
    return bool(group["pending"] == 0 and group["last-delivered-id"] == stream["last-generated-id"])


async def _wait_drained(team: Team, *, within: float = 15.0) -> None:
    started = time.monotonic()
    while not await _drained(team.stack.redis, team.stack.store.keys):
        assert time.monotonic() - started < within, "the worker did not drain its jobs"
        await asyncio.sleep(0.02)  # polling a condition in Redis, bounded above


async def test_a_deploy_job_an_older_version_queued_without_env_waits_for_the_lock_then_deploys(
    team: Team,
) -> None:
    emu, store = team.emu, team.stack.store
    # the lock holds the approved release back, so the deploy jobs queued meanwhile do nothing
    await emu.slash_command(ALICE, CHANNEL, "/lock", "sandbox upgrade in progress")
    team.commit(ALICE, "Add cart page")
    await team.collect()
    batch = await team.batch_message(containing="Add cart page")
    await emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    await team.wait_text(batch.ts, "waiting for approval")
    await emu.add_reaction(ALICE, CHANNEL, batch.ts, "white_check_mark")
    await team.wait_text(batch.ts, "is approved")
    old_deploy: dict[Any, Any] = {"kind": "deploy", "release": "sandbox-1"}
    # the claim reads the lock from the job's environment: a wrong one would deploy now
    await team.stack.redis.xadd(store.keys.jobs, old_deploy)
    await _wait_drained(team)
    assert (await team.release_state("sandbox-1")).state is ReleaseState.APPROVED

    def unlock(snap: Snapshot) -> tuple[Write, None]:
        return Write(env=environment.unlock(snap.env)), None

    await store.update("sandbox", unlock)  # unlocked without queuing a deploy of its own
    await team.stack.redis.xadd(store.keys.jobs, old_deploy)

    await team.wait_text(batch.ts, "is live on `sandbox`")
    await _wait_drained(team)
    assert await team.stack.redis.xlen(store.keys.dead_letters) == 0


async def test_a_job_of_an_unknown_kind_is_dropped_with_one_log_line(
    team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.runtime.worker")
    redis, keys = team.stack.redis, team.stack.store.keys
    await redis.xadd(keys.jobs, {"kind": "reticulate", "release": "sandbox-9"})
    await _wait_drained(team)

    said = [
        r
        for r in caplog.records
        if r.name == "bot.runtime.worker" and "reticulate" in r.getMessage()
    ]
    assert [r.getMessage() for r in said] == ["unknown job kind 'reticulate'; dropping it"]
    assert said[0].levelno == logging.ERROR
    assert await redis.xlen(keys.dead_letters) == 0
