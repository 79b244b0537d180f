"""A worker started while Redis is down waits for it instead of dying."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.keys import JOBS_GROUP
from bot.adapters.metrics import RECORDER
from bot.adapters.store import Store
from bot.local.slackemu import SlackEmulator
from bot.runtime.app import build_worker
from tests.conftest import RedisServer, free_port
from tests.e2e.harness import write_config


async def test_worker_started_before_redis_starts_once_redis_is_up(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = write_config(tmp_path, port=free_port(), staging_port=free_port())
    redis_server.stop()
    client = Redis.from_url(redis_server.url, decode_responses=True, socket_connect_timeout=0.5)
    stop = asyncio.Event()
    before = RECORDER.local_redis_errors().get(("worker", "start"), 0)
    try:
        async with SlackEmulator() as emu:
            slack = AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)
            worker = build_worker(config, Store(client), slack, name="early")
            running = asyncio.create_task(worker.run(stop))
            await emu.wait_for(
                lambda: RECORDER.local_redis_errors().get(("worker", "start"), 0) > before,
                timeout=10,
                what="the worker to notice Redis is down",
            )
            assert not running.done(), "the worker must wait for Redis, not die"
            redis_server.start()

            async def group_exists() -> bool:
                try:
                    groups = await client.xinfo_groups(Store(client).keys.jobs)
                except RedisError:  # the stream is not there until the worker makes it
                    return False
                return any(g["name"] == JOBS_GROUP for g in groups)

            async with asyncio.timeout(15):
                while not await group_exists():  # noqa: ASYNC110 - the condition is in Redis
                    await asyncio.sleep(0.05)  # polling a condition, with the timeout above
            stop.set()
            await asyncio.wait_for(running, timeout=10)
    finally:
        stop.set()
        await client.aclose()
