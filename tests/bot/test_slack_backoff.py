"""Slack's Retry-After is shared through Redis: Slack limits the app per method, so a 429
one worker earns must hold back every worker, and Redis going away must hold back none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.adapters.keys import Keys
from bot.adapters.metrics import Recorder
from bot.adapters.slackapi import SHARED_PAUSE, RateLimited, SlackGateway
from bot.local.slackemu import SlackEmulator
from bot.local.slackemu.models import ApiCall
from bot.runtime.app import connect_redis
from tests.conftest import RedisServer

CHANNEL = "C0RELEASES"
KEYS = Keys("backoff-test")
#: seconds; short to keep the suite fast, long enough to tell "waited" from "did not"
RETRY_AFTER = 2
#: the emulator stamps calls with time.time(), the gateway waits on time.monotonic()
TOLERANCE = 0.02


@pytest.fixture
async def emu() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator(bot_token="xoxb-backoff") as emulator:
        emulator.add_channel(CHANNEL, name="releases")
        yield emulator


def worker_gateway(emu: SlackEmulator, redis: Redis | None, **kwargs: Any) -> SlackGateway:
    """One worker's gateway: its own Slack client and in-memory deadlines."""
    client = AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)
    return SlackGateway(client, redis=redis, keys=KEYS, **kwargs)


def statuses(calls: list[ApiCall]) -> list[int]:
    return [c.status for c in calls]


async def test_a_429_one_worker_gets_holds_back_the_other_until_retry_after(
    redis: Redis, emu: SlackEmulator
) -> None:
    first, second = worker_gateway(emu, redis), worker_gateway(emu, redis)
    ts = str((await first.post(CHANNEL, "release 1"))["ts"])
    emu.force_ratelimit("chat.update", RETRY_AFTER)

    with pytest.raises(RateLimited) as limited:
        await first.update(CHANNEL, ts, "edited by the first worker", [])
    assert limited.value.retry_after == RETRY_AFTER
    pttl = await redis.pttl(KEYS.slack_backoff("chat.update"))
    assert RETRY_AFTER * 1000 - 500 < pttl <= RETRY_AFTER * 1000
    assert second.delay("chat.update") == 0, "the second worker saw no 429 of its own"

    await second.update(CHANNEL, ts, "edited by the second worker", [])

    refused, accepted = emu.calls_to("chat.update")  # nothing in between: it waited
    assert refused.status == 429 and refused.retry_after == RETRY_AFTER
    assert accepted.status == 200 and accepted.args["text"] == "edited by the second worker"
    waited = accepted.at - refused.at
    assert RETRY_AFTER - TOLERANCE <= waited < RETRY_AFTER + 0.5, f"waited {waited:.3f}s"
    assert second.rate_limited == 0
    # the deadline cleans up after itself
    assert await redis.exists(KEYS.slack_backoff("chat.update")) == 0
    # other methods were never held back
    assert statuses(emu.calls_to("chat.postMessage")) == [200]


@pytest.mark.parametrize(("earlier", "later"), [(2, 1), (1, 2)])
async def test_a_shorter_retry_after_never_shortens_a_longer_shared_one(
    redis: Redis, emu: SlackEmulator, earlier: int, later: int
) -> None:
    """Two workers pass the shared check together and both get a 429; whichever order
    their Retry-Afters reach Redis in, the longer one stands."""
    first, second = worker_gateway(emu, redis), worker_gateway(emu, redis)
    ts = str((await first.post(CHANNEL, "release 1"))["ts"])
    second_is_in, first_answered = asyncio.Event(), asyncio.Event()

    async def refused(gateway: SlackGateway, retry_after: int) -> AsyncSlackResponse:
        # each worker chooses its 429's Retry-After just before its call reaches Slack
        emu.force_ratelimit("chat.update", retry_after)
        return await gateway.client.chat_update(channel=CHANNEL, ts=ts, text="edit")

    async def first_call() -> AsyncSlackResponse:
        await second_is_in.wait()
        return await refused(first, earlier)

    async def second_call() -> AsyncSlackResponse:
        second_is_in.set()
        await first_answered.wait()
        return await refused(second, later)

    def attempt(
        gateway: SlackGateway, fn: Callable[[], Awaitable[AsyncSlackResponse]]
    ) -> asyncio.Task[AsyncSlackResponse]:
        return asyncio.create_task(gateway.call("chat.update", fn, replay=False))

    first_task, second_task = attempt(first, first_call), attempt(second, second_call)
    with pytest.raises(RateLimited):
        await first_task  # returns only once its deadline is in Redis
    first_answered.set()
    with pytest.raises(RateLimited):
        await second_task

    assert [(c.status, c.retry_after) for c in emu.calls_to("chat.update")] == [
        (429, earlier),
        (429, later),
    ]
    pttl = await redis.pttl(KEYS.slack_backoff("chat.update"))
    assert 1000 < pttl <= 2000, f"the shared deadline is {pttl} ms away"


class SteppedClock:
    """time.monotonic, plus a step the test may add to skip the pause after a Redis error."""

    def __init__(self) -> None:
        self.step = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.step


async def test_redis_down_never_stops_slack_calls(
    redis_server: RedisServer, emu: SlackEmulator
) -> None:
    recorder, clock = Recorder(), SteppedClock()
    # the worker's own client settings: short timeouts, a reconnect retried
    client = connect_redis(redis_server.url)
    try:
        gateway = worker_gateway(emu, client, metrics=recorder, clock=clock)
        ts = str((await gateway.post(CHANNEL, "release 1"))["ts"])

        redis_server.stop()
        try:
            await gateway.post(CHANNEL, "posted while Redis is down")
            emu.force_ratelimit("chat.update", 1)
            with pytest.raises(RateLimited):
                await gateway.update(CHANNEL, ts, "refused", [])
            # its own Retry-After still holds, in memory
            await gateway.update(CHANNEL, ts, "edited while Redis is down", [])
        finally:
            redis_server.start()

        assert statuses(emu.calls_to("chat.postMessage")) == [200, 200]
        refused, accepted = emu.calls_to("chat.update")
        assert (refused.status, accepted.status) == (429, 200)
        assert accepted.at - refused.at >= 1 - TOLERANCE
        # the check before the second post failed, then checks paused; sharing the 429
        # was still tried, and failed
        assert recorder.local_redis_errors() == {("worker", "slack_backoff"): 2}

        # Redis is back: once the pause is over, deadlines are shared again
        clock.step = SHARED_PAUSE
        set_at = time.time()
        await client.set(KEYS.slack_backoff("chat.postMessage"), "1000", px=1000)
        await gateway.post(CHANNEL, "posted after another worker's 429")
        assert emu.calls_to("chat.postMessage")[-1].at - set_at >= 1 - TOLERANCE
        assert recorder.local_redis_errors() == {("worker", "slack_backoff"): 2}
    finally:
        await client.aclose()


async def test_without_redis_the_gateway_keeps_retry_after_to_itself(
    emu: SlackEmulator,
) -> None:
    gateway = worker_gateway(emu, None)
    ts = str((await gateway.post(CHANNEL, "release 1"))["ts"])
    emu.force_ratelimit("chat.update", 1)
    with pytest.raises(RateLimited):
        await gateway.update(CHANNEL, ts, "refused", [])
    assert 0 < gateway.delay("chat.update") <= 1
    await gateway.update(CHANNEL, ts, "edited", [])
    refused, accepted = emu.calls_to("chat.update")
    assert accepted.status == 200 and accepted.at - refused.at >= 1 - TOLERANCE
