"""Redis "not ready" through real HTTP: a redis-server replaying its AOF (LOADING) and one
that became a replica, as a failover leaves an old primary (READONLY), are to `web` what a
Redis that is down is: a command answers "try again" in time, an event gets a 503 with one
warning line and no traceback, and once Redis is ready again the event Slack delivers
again is recorded, once.

`web` talks to Redis through a client made like production's (bot.runtime.app.connect_redis), which
retries a not-ready Redis briefly; each condition lasts until the test ends it, so the
answers are given while Redis is not ready, however slow the machine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, ReadOnlyError, RedisError

from bot.domain.render import APPROVE_ACTION
from bot.runtime.app import connect_redis
from tests.chaos.test_outages import (
    ACK_LIMIT,
    Crew,
    frozen_sandbox,
    reaction_envelope,
    start_crew,
    stop_crew,
    until,
)
from tests.conftest import RedisServer, free_port
from tests.e2e.harness import ALICE, BOB, CHANNEL, start_team

pytestmark = pytest.mark.chaos

#: keys in the AOF that a restarted redis-server replays ...
FILLER_KEYS = 30_000
#: ... sleeping this many microseconds per key: LOADING for up to 30 s, until the test says
KEY_LOAD_DELAY_US = 1000
#: how often (bytes loaded) a loading redis-server answers its clients: often, so a
#: command gets its LOADING in about 0.1 s rather than once the load is done
LOADING_ANSWER_EVERY_BYTES = 1024
#: the loggers of `web` (the worker runs in the same process and logs on its own)
WEB_LOGGERS = ("handlers", "slack_bolt", "bot.runtime.web", "aiohttp")


@dataclass(frozen=True)
class Condition:
    """A way for Redis not to be ready: how to bring it about and end it, and the error
    a write gets meanwhile."""

    begin: Callable[[Crew], Awaitable[None]]
    end: Callable[[Crew], Awaitable[None]]
    refusal: type[RedisError]


def _raw_client(server: RedisServer) -> Redis:
    """A client that reports what Redis answers, without retrying it away."""
    return Redis.from_url(server.url, decode_responses=True, retry=Retry(NoBackoff(), 0))


async def _write_refused(server: RedisServer, refusal: type[RedisError]) -> bool:
    client = _raw_client(server)
    try:
        await client.set("shipmate-test:probe", "1")
    except refusal:
        return True
    except RedisError:
        return False
    finally:
        await client.aclose()
    return False


async def _rewrite_done(redis: Redis) -> bool:
    info = await redis.info("persistence")
    return not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]


async def _begin_loading(crew: Crew) -> None:
    """Restart Redis on an AOF it replays slowly: it takes connections at once, and
    answers LOADING to everything else until the load is done."""
    async with crew.redis.pipeline(transaction=False) as pipe:
        for i in range(FILLER_KEYS):
            pipe.set(f"filler:{i}", i)
        await pipe.execute()
    # the rewrite turns the AOF into an RDB base file, which is what the delay applies to
    await crew.redis.bgrewriteaof()
    await until(partial(_rewrite_done, crew.redis), within=30, what="the AOF rewrite")
    server = crew.redis_server
    await asyncio.to_thread(server.stop)
    slow_load = [
        "--key-load-delay",
        str(KEY_LOAD_DELAY_US),
        "--loading-process-events-interval-bytes",
        str(LOADING_ANSWER_EVERY_BYTES),
    ]
    await asyncio.to_thread(partial(server.start, wait_writable=False, extra_args=slow_load))
    await until(partial(_write_refused, server, BusyLoadingError), within=10, what="Redis LOADING")


async def _end_loading(crew: Crew) -> None:
    client = _raw_client(crew.redis_server)
    try:
        await client.config_set("key-load-delay", 0)  # CONFIG is served while loading
    finally:
        await client.aclose()
    await asyncio.to_thread(crew.redis_server.wait_writable)


async def _begin_readonly(crew: Crew) -> None:
    """Make our Redis a replica of a primary that is not there: it keeps its data and
    serves reads, and refuses every write with READONLY."""
    await crew.redis.replicaof("127.0.0.1", str(free_port()))
    await until(
        partial(_write_refused, crew.redis_server, ReadOnlyError), within=10, what="READONLY"
    )


async def _end_readonly(crew: Crew) -> None:
    """The failover is over: promoted again."""
    await crew.redis.replicaof("NO", "ONE")
    await asyncio.to_thread(crew.redis_server.wait_writable)


CONDITIONS = {
    "loading": Condition(_begin_loading, _end_loading, BusyLoadingError),
    "readonly": Condition(_begin_readonly, _end_readonly, ReadOnlyError),
}


@pytest.fixture
async def crew(tmp_path: Path, chaos_redis: RedisServer) -> AsyncIterator[Crew]:
    crew = await start_crew(tmp_path, chaos_redis)
    try:
        yield crew
    finally:
        await stop_crew(crew, tmp_path)


async def _deliver(crew: Crew, body: bytes, attempt: int) -> int:
    """Slack's ``attempt``-th delivery of an event, signed when it is sent (as Slack does:
    each retry has its own timestamp, so its own signature)."""
    headers = crew.emu.signed_headers(body, timestamp=int(time.time()) - attempt)
    if attempt:
        headers |= {"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": "http_error"}
    status, _ = await crew.emu.send_raw(body, headers)
    return status


def _web_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(WEB_LOGGERS)]


def _one_line_each_no_traceback(records: list[logging.LogRecord], *, requests: int) -> None:
    """What `web` logged for ``requests`` refused while Redis was not ready: a warning
    line at most per request (the edge rate-limits its lines, so maybe none), never a
    traceback."""
    lines = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in records]
    assert not [r for r in records if r.exc_info], lines
    assert all(r.levelno <= logging.WARNING for r in records), lines
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) <= requests, lines


@pytest.mark.parametrize("condition", sorted(CONDITIONS))
async def test_redis_not_ready_answers_try_again_and_recovers(
    crew: Crew, condition: str, caplog: pytest.LogCaptureFixture
) -> None:
    team, how = crew.team, CONDITIONS[condition]
    ts = await frozen_sandbox(team)
    body = reaction_envelope(team, "reaction_added", ALICE, ts)

    await how.begin(crew)
    caplog.clear()
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/lock", "sandbox drill")
    took = time.monotonic() - started
    event_status = await _deliver(crew, body, attempt=0)
    assert await _write_refused(crew.redis_server, how.refusal), "Redis was ready too soon"

    assert answer.status == 200 and answer.response_type == "ephemeral", answer
    assert "Redis) is unreachable or not ready" in answer.text, answer.text
    assert "Nothing was changed" in answer.text, answer.text
    assert took < ACK_LIMIT, took
    assert event_status == 503, "a non-2xx, so that Slack delivers the event again"
    _one_line_each_no_traceback(_web_records(caplog), requests=2)

    await how.end(crew)
    assert await _deliver(crew, body, attempt=1) == 200
    recorded = await crew.release("sandbox-1")
    assert await _deliver(crew, body, attempt=2) == 200
    again = await crew.release("sandbox-1")
    assert recorded.approvals == again.approvals == {ALICE}
    assert again.version == recorded.version, "the second redelivery changed nothing"
    assert (await team.stack.store.env("sandbox")).lock is None, "the refused /lock left nothing"


@pytest.fixture
async def socket_crew(tmp_path: Path, chaos_redis: RedisServer) -> AsyncIterator[Crew]:
    """The team in Socket Mode: envelopes carry no signature, so nothing at `web`'s HTTP
    edge touches Redis first and the listeners meet a not-ready Redis themselves."""
    redis = connect_redis(chaos_redis.url)
    team = await start_team(
        tmp_path, redis, port=free_port(), staging_port=free_port(), mode="socket"
    )
    crew = Crew(team=team, redis=redis, redis_server=chaos_redis)
    try:
        yield crew
    finally:
        await stop_crew(crew, tmp_path)


async def test_listeners_answer_try_again_and_leave_events_unacked(
    socket_crew: Crew, caplog: pytest.LogCaptureFixture
) -> None:
    crew, team, emu = socket_crew, socket_crew.team, socket_crew.emu
    ts = await frozen_sandbox(team)
    message = emu.message(CHANNEL, ts)
    assert message is not None

    await _begin_readonly(crew)
    caplog.clear()
    caplog.set_level(logging.INFO)
    answer = await emu.slash_command(ALICE, CHANNEL, "/lock", "sandbox drill")
    assert "Redis) is unreachable or not ready" in answer.text, answer.text
    assert await emu.click_button(BOB, CHANNEL, ts, APPROVE_ACTION) == 200
    await team.wait_ephemeral(BOB, "Redis) is unreachable or not ready")
    reacting = asyncio.create_task(emu.add_reaction(ALICE, CHANNEL, ts, "white_check_mark"))
    await emu.wait_for(
        lambda: any(d.kind == "event" and d.failure == "timeout" for d in emu.deliveries),
        timeout=10,
        what="the reaction envelope to go unacked",
    )
    records = _web_records(caplog)
    _one_line_each_no_traceback(records, requests=3)
    said = " | ".join(r.getMessage() for r in records)
    for what in ("/lock", "a button click", "reaction_added"):
        assert f"Redis not ready while handling {what} (ReadOnlyError" in said, said

    await _end_readonly(crew)
    assert await reacting == 200
    release = await crew.release("sandbox-1")
    assert release.approvals == {ALICE}, "the refused click left nothing, the reaction counts"
    assert (await team.stack.store.env("sandbox")).lock is None
