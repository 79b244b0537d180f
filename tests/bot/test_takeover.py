"""Collect triggers coalesce; a dead worker's locks and jobs are free within seconds.

Against a real redis-server. Liveness is a key with a TTL; a worker "dies" here by its
key going away, exactly what Redis does when a killed worker stops refreshing it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from bot.adapters.keys import JOBS_GROUP
from bot.adapters.locks import DeployLocks, Liveness
from bot.adapters.store import Store, Write
from bot.domain.jobs import Job, JobKind, collect_job
from bot.domain.models import EnvState


async def _entries(redis: Redis, stream: str) -> list[dict[str, str]]:
    rows: Any = await redis.xrange(stream)
    return [dict(fields) for _, fields in rows]


async def test_collect_triggers_coalesce_until_a_worker_starts_collecting(redis: Redis) -> None:
    store = Store(redis)
    for n in range(1000):
        await store.enqueue(collect_job("push", n=str(n)))
    assert await _entries(redis, store.keys.collects) == [
        {"kind": "collect", "reason": "push", "n": "0"}
    ]
    assert await redis.xlen(store.keys.jobs) == 0

    await store.collect_started()
    await store.enqueue(collect_job(), Job(JobKind.RENDER, {"release": "sandbox-1"}), collect_job())
    assert len(await _entries(redis, store.keys.collects)) == 2
    assert await _entries(redis, store.keys.jobs) == [{"kind": "render", "release": "sandbox-1"}]


async def test_a_decision_queues_collects_the_same_way(redis: Redis) -> None:
    """Jobs written with a decision (bot.services.deploys, bot.services.intents) go through the same gate."""
    store = Store(redis)
    await store.enqueue(collect_job())

    def decide(_: object) -> tuple[Write, None]:
        return Write(env=EnvState(name="sandbox"), jobs=[collect_job("cancel")]), None

    await store.update("sandbox", decide)
    assert await _entries(redis, store.keys.collects) == [{"kind": "collect"}]
    await store.collect_started()
    await store.update("sandbox", decide)
    assert [e.get("reason") for e in await _entries(redis, store.keys.collects)] == [
        None,
        "cancel",
    ]


async def test_ensure_group_covers_both_streams(redis: Redis) -> None:
    store = Store(redis)
    await store.ensure_group()
    await store.ensure_group()  # a second worker starting
    for stream in store.streams:
        groups: Any = await redis.xinfo_groups(stream)
        assert [g["name"] for g in groups] == [JOBS_GROUP]


async def test_a_dead_holders_lock_is_taken_at_once_and_fenced(redis: Redis) -> None:
    store = Store(redis)
    alive = Liveness(redis, store.keys, "w1", ttl=30.0)
    await alive.beat()
    first = await DeployLocks(redis, store.keys, ttl=30.0, holder="w1").try_acquire("staging")
    assert first is not None
    other = DeployLocks(redis, store.keys, ttl=30.0, holder="w2")
    assert await other.try_acquire("staging") is None  # w1 is alive: its lock holds

    await redis.delete(alive.key)  # w1's liveness lapsed: it was killed, or is paused
    taken = await other.try_acquire("staging")
    assert taken is not None and taken.fence > first.fence
    # w1 comes back: its renewal is refused, so it stops instead of deploying beside w2
    assert not await DeployLocks(redis, store.keys, ttl=30.0, holder="w1").renew(first)


async def test_a_lock_without_liveness_waits_for_its_lifetime(redis: Redis) -> None:
    store = Store(redis)
    plain = DeployLocks(redis, store.keys, ttl=30.0)
    assert await plain.try_acquire("staging") is not None
    tied = DeployLocks(redis, store.keys, ttl=30.0, holder="w2")
    assert await tied.try_acquire("staging") is None


async def test_liveness_is_refreshed_and_gone_once_stopped(redis: Redis) -> None:
    store = Store(redis)
    alive = Liveness(redis, store.keys, "w1", ttl=3.0, every=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(alive.run(stop))
    try:
        async with asyncio.timeout(5):
            while await redis.pttl(alive.key) <= 0:  # noqa: ASYNC110 - the state is in Redis
                await asyncio.sleep(0.01)
        assert 0 < await redis.pttl(alive.key) <= 3000
    finally:
        stop.set()
        await running
    assert await redis.exists(alive.key) == 0
