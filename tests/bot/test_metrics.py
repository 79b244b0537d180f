"""Metrics against a real redis-server and real HTTP: counted in memory, flushed to Redis,
kept through an outage, scraped by `web` in Prometheus' text format."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from redis.asyncio import Redis
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.keys import JOBS_GROUP, Keys
from bot.adapters.metrics import (
    APPROVAL_WAIT,
    DEPLOY_SECONDS,
    JOBS,
    LIVE_STATES,
    SLACK_CALLS,
    SLACK_ERRORS,
    SLACK_RATE_LIMITED,
    Flusher,
    Recorder,
    metrics_key,
)
from bot.adapters.slackapi import RateLimited, SlackGateway
from bot.adapters.store import Snapshot, Store, Write
from bot.domain import environment
from bot.domain import release as rel
from bot.domain.jobs import Job, JobKind, collect_job
from bot.domain.models import Author, Commit, Person, Release
from bot.local.slackemu import SlackEmulator
from bot.runtime.app import connect_redis
from tests.conftest import RedisServer, free_port

CHANNEL = "C0RELEASES"
ALICE = Person(email="alice@example.com", name="Alice", slack_user="U0ALICE")
COMMIT = Commit(sha="a" * 40, title="Add cart", author=Author("Alice", "alice@example.com"))


def stored(fields: Mapping[Any, Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The shared hash as (sample name, labels) -> value."""
    out = {}
    for key, value in fields.items():
        name, labels = json.loads(key)
        out[(name, frozenset(labels.items()))] = float(value)
    return out


def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


# -- the recorder and its flush ---------------------------------------------------------------


async def test_flush_adds_counters_and_histogram_buckets_to_redis(redis: Redis) -> None:
    keys = Keys("flush")
    recorder = Recorder()
    flusher = Flusher(redis, keys, process="worker", recorder=recorder)
    recorder.inc(SLACK_CALLS, method="chat.postMessage")
    recorder.inc(SLACK_CALLS, 2, method="chat.postMessage")
    recorder.observe(DEPLOY_SECONDS, 0.3, env="staging", outcome="live")
    recorder.observe(DEPLOY_SECONDS, 7.0, env="staging", outcome="live")
    assert recorder.unflushed == 4  # a counter, two buckets, a sum
    assert await flusher.flush()
    assert recorder.unflushed == 0

    recorder.inc(SLACK_CALLS, method="chat.postMessage")
    recorder.observe(DEPLOY_SECONDS, 0.4, env="staging", outcome="live")
    assert await flusher.flush()

    got = stored(await redis.hgetall(metrics_key(keys)))
    assert got == {
        series("shipmate_slack_api_calls", method="chat.postMessage"): 4,
        series(
            "shipmate_deploy_duration_seconds_bucket", env="staging", outcome="live", le="0.5"
        ): 2,
        series(
            "shipmate_deploy_duration_seconds_bucket", env="staging", outcome="live", le="10.0"
        ): 1,
        series(
            "shipmate_deploy_duration_seconds_sum", env="staging", outcome="live"
        ): pytest.approx(7.7),
    }


async def test_wrong_labels_are_refused_where_they_are_recorded() -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match="takes labels"):
        recorder.inc(JOBS, kind="deploy")
    with pytest.raises(ValueError, match="takes labels"):
        recorder.observe(APPROVAL_WAIT, 1.0, env="x", outcome="y")


async def test_increments_are_kept_through_a_redis_outage_and_flushed_after(
    tmp_path: Path,
) -> None:
    """Redis stops (a real redis-server, restarted on the same port with its AOF): the
    increments stay in memory, the failed flushes are counted, and all of it lands after."""
    server = RedisServer(port=free_port(), directory=tmp_path)
    server.start()
    redis = connect_redis(server.url)
    keys = Keys("outage")
    recorder = Recorder()
    flusher = Flusher(redis, keys, process="worker", recorder=recorder)
    try:
        recorder.inc(SLACK_CALLS, method="chat.update")
        assert await flusher.flush()

        server.stop()
        recorder.inc(SLACK_CALLS, method="chat.update")
        recorder.inc(SLACK_RATE_LIMITED, method="chat.update")
        recorder.observe(DEPLOY_SECONDS, 2.0, env="prod", outcome="failed")
        assert not await flusher.flush()
        assert not await flusher.flush()
        assert recorder.local_redis_errors() == {("worker", "metrics_flush"): 2}
        assert recorder.unflushed == 5  # calls, 429s, a bucket, a sum, the flush errors

        server.start()
        assert await flusher.flush()
        assert recorder.unflushed == 0
        got = stored(await redis.hgetall(metrics_key(keys)))
    finally:
        await redis.aclose()
        server.stop()
    assert got == {
        series("shipmate_slack_api_calls", method="chat.update"): 2,
        series("shipmate_slack_api_rate_limited", method="chat.update"): 1,
        series(
            "shipmate_deploy_duration_seconds_bucket", env="prod", outcome="failed", le="2.5"
        ): 1,
        series("shipmate_deploy_duration_seconds_sum", env="prod", outcome="failed"): 2.0,
        series("shipmate_redis_errors", process="worker", op="metrics_flush"): 2,
    }


async def test_the_periodic_flusher_flushes_on_its_own_and_once_more_when_stopped(
    redis: Redis,
) -> None:
    keys = Keys("periodic")
    recorder = Recorder()
    flusher = Flusher(redis, keys, process="web", recorder=recorder, every=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(flusher.run(stop))
    recorder.inc(JOBS, kind="render", outcome="ok")

    async def flushed(n: int) -> bool:
        got = stored(await redis.hgetall(metrics_key(keys)))
        return got.get(series("shipmate_jobs", kind="render", outcome="ok")) == n

    await until(lambda: flushed(1), what="the periodic flush")
    recorder.inc(JOBS, kind="render", outcome="ok")
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert await flushed(2), "the last increments go out when the flusher stops"


# -- GET /metrics -----------------------------------------------------------------------------


@asynccontextmanager
async def serving(
    store: Store, recorder: Recorder, *, environments: tuple[str, ...] = ()
) -> AsyncIterator[str]:
    """`web`'s aiohttp application on a real port; yields its base URL."""
    bolt = AsyncApp(
        client=AsyncWebClient(token="xoxb-test", base_url="http://127.0.0.1:9/"),
        signing_secret="test-secret",
    )
    from bot.runtime.web import create_web_app

    app: web.Application = create_web_app(
        bolt, store, serve_slack_events=False, environments=environments, metrics=recorder
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float | None:
    for sample in samples(text):
        if sample.name == name and sample.labels == labels:
            return float(sample.value)
    return None


async def _seed_batch(store: Store, env: str) -> Release:
    release_id = await store.next_release_id(env)

    def decide(snap: Snapshot) -> tuple[Write, Release]:
        change = environment.new_batch(snap.env, release_id, at=1.0)
        batch = rel.apply(change.releases[0], rel.Collect((COMMIT,), (ALICE,), None), at=1.0)
        return Write(env=change.env, releases=[batch]), batch

    return await store.update(env, decide)


async def _freeze(store: Store, env: str) -> None:
    def decide(snap: Snapshot) -> tuple[Write, None]:
        change = environment.request_release(
            snap.env,
            snap.batch,
            snap.active,
            by="U0ALICE",
            approval_required=True,
            stand_ins=(),
            at=2.0,
        )
        return Write(env=change.env, releases=change.releases), None

    await store.update(env, decide)


async def test_metrics_serves_releases_counters_and_histograms(redis: Redis) -> None:
    store = Store(redis, Keys("scrape"))
    recorder = Recorder()
    await _seed_batch(store, "sandbox")
    await _freeze(store, "sandbox")
    await _seed_batch(store, "sandbox")  # the next batch, collecting behind the frozen one
    await redis.hincrby(store.keys.state_counts, "staging|live", 3)
    flusher = Flusher(redis, store.keys, process="worker", recorder=recorder)
    for seconds in (0.3, 0.3, 7.0, 5000.0):
        recorder.observe(DEPLOY_SECONDS, seconds, env="sandbox", outcome="live")
    recorder.inc(SLACK_CALLS, 5, method="chat.postMessage")
    recorder.inc(SLACK_ERRORS, method="chat.postMessage", error="channel_not_found")
    assert await flusher.flush()

    async with serving(store, recorder, environments=("production",)) as base:
        status, content_type, text = await get(base + "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=")

    assert value(text, "shipmate_redis_up") == 1
    assert value(text, "shipmate_releases", env="sandbox", state="awaiting_approval") == 1
    assert value(text, "shipmate_releases", env="sandbox", state="collecting") == 1
    assert value(text, "shipmate_releases", env="sandbox", state="deploying") == 0
    # a configured environment without releases, and one known only from the state counts
    for env in ("production", "staging"):
        assert {value(text, "shipmate_releases", env=env, state=s) for s in LIVE_STATES} == {0}
    # whatever the store counted, as it counted it
    counted: Any = await redis.hgetall(store.keys.state_counts)
    for key, n in counted.items():
        env, state = key.rsplit("|", 1)
        assert value(text, "shipmate_releases_entered_total", env=env, state=state) == int(n)
    assert value(text, "shipmate_releases_entered_total", env="staging", state="live") == 3

    labels = {"env": "sandbox", "outcome": "live"}
    cumulative = [
        (s.labels["le"], s.value)
        for s in samples(text)
        if s.name == "shipmate_deploy_duration_seconds_bucket"
        and {k: v for k, v in s.labels.items() if k != "le"} == labels
    ]
    assert ("0.25", 0.0) in cumulative and ("0.5", 2.0) in cumulative
    assert ("10.0", 3.0) in cumulative and ("1800.0", 3.0) in cumulative
    assert cumulative[-1] == ("+Inf", 4.0)
    assert value(text, "shipmate_deploy_duration_seconds_count", **labels) == 4
    assert value(text, "shipmate_deploy_duration_seconds_sum", **labels) == pytest.approx(5007.6)
    assert value(text, "shipmate_slack_api_calls_total", method="chat.postMessage") == 5
    assert (
        value(
            text,
            "shipmate_slack_api_errors_total",
            method="chat.postMessage",
            error="channel_not_found",
        )
        == 1
    )


async def test_metrics_reports_the_job_queue(redis: Redis) -> None:
    """Depth (waiting / pending), the oldest unfinished job's age by Redis' clock, dead letters."""
    store = Store(redis, Keys("queue"))
    await store.ensure_group()
    seconds, _ = await redis.time()
    # enqueued 90 s ago (a stream id is its enqueue time in ms)
    await redis.xadd(store.keys.jobs, {"kind": "collect"}, id=f"{(seconds - 90) * 1000}-0")
    # one waits in the jobs stream, one in the collects stream: both are counted
    await store.enqueue(Job(JobKind.RENDER, {"release": "prod-1"}), collect_job())
    delivered: Any = await redis.xreadgroup(JOBS_GROUP, "w1", {store.keys.jobs: ">"}, count=1)
    assert len(delivered[0][1]) == 1
    await redis.xadd(store.keys.dead_letters, {"kind": "deploy", "release": "prod-1"})

    async with serving(store, Recorder()) as base:
        _, _, text = await get(base + "/metrics")
    assert value(text, "shipmate_jobs_queue_depth", state="waiting") == 2
    assert value(text, "shipmate_jobs_queue_depth", state="pending") == 1
    age = value(text, "shipmate_jobs_oldest_age_seconds")
    assert age is not None and 89 <= age < 150, age
    assert value(text, "shipmate_jobs_dead_letters") == 1
    assert value(text, "shipmate_jobs_stream_length") == 3

    # once every job is acknowledged, nothing is waiting and nothing is old
    rest: Any = await redis.xreadgroup(JOBS_GROUP, "w1", {store.keys.jobs: ">"})
    ids = [delivered[0][1][0][0], *(entry_id for entry_id, _ in rest[0][1])]
    await redis.xack(store.keys.jobs, JOBS_GROUP, *ids)
    collects: Any = await redis.xreadgroup(JOBS_GROUP, "w1", {store.keys.collects: ">"})
    await redis.xack(store.keys.collects, JOBS_GROUP, *(i for i, _ in collects[0][1]))
    async with serving(store, Recorder()) as base:
        _, _, text = await get(base + "/metrics")
    assert value(text, "shipmate_jobs_queue_depth", state="waiting") == 0
    assert value(text, "shipmate_jobs_queue_depth", state="pending") == 0
    assert value(text, "shipmate_jobs_oldest_age_seconds") == 0


async def test_metrics_answers_without_redis_with_this_process_figures() -> None:
    """Redis unreachable: 200 with shipmate_redis_up 0 and this process's own Redis errors,
    and no shared series (a stale or partial counter would read as a reset)."""
    down = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", decode_responses=True, socket_connect_timeout=1
    )
    recorder = Recorder()
    try:
        async with serving(Store(down, Keys("down")), recorder) as base:
            health, _, _ = await get(base + "/healthz")
            status, content_type, text = await get(base + "/metrics")
    finally:
        await down.aclose()
    assert health == 503
    assert status == 200 and content_type.startswith("text/plain; version=")
    assert value(text, "shipmate_up") == 1
    assert value(text, "shipmate_redis_up") == 0
    assert value(text, "shipmate_local_redis_errors_total", process="web", op="healthz") == 1
    assert value(text, "shipmate_local_redis_errors_total", process="web", op="metrics") == 1
    # the two errors wait for Redis, to be added to the shared figures
    assert value(text, "shipmate_local_unflushed_increments") == 2
    names = {s.name for s in samples(text)}
    assert not any(
        n.startswith(("shipmate_jobs", "shipmate_releases", "shipmate_slack")) for n in names
    )


# -- the Slack gateway ------------------------------------------------------------------------


async def test_slack_gateway_counts_calls_429s_and_errors_by_method() -> None:
    recorder = Recorder()
    async with SlackEmulator(bot_token="xoxb-metrics") as emu:
        emu.add_channel(CHANNEL, name="releases")
        gateway = SlackGateway(
            AsyncWebClient(token=emu.bot_token, base_url=emu.api_url), metrics=recorder
        )
        posted = await gateway.post(CHANNEL, "hello")
        emu.force_ratelimit("chat.update", 30)
        with pytest.raises(RateLimited):
            await gateway.update(CHANNEL, posted["ts"], "edited", [])
        with pytest.raises(SlackApiError):
            await gateway.post("C0NOWHERE", "lost")
    counted = {
        (name, frozenset(labels.items())): n
        for (name, labels), n in ((json.loads(key), n) for key, n in recorder.take().counts.items())
    }
    assert counted == {
        series("shipmate_slack_api_calls", method="chat.postMessage"): 2,
        series("shipmate_slack_api_calls", method="chat.update"): 1,
        series("shipmate_slack_api_rate_limited", method="chat.update"): 1,
        series(
            "shipmate_slack_api_errors", method="chat.postMessage", error="channel_not_found"
        ): 1,
    }


async def until(check: Callable[[], Awaitable[bool]], *, what: str, within: float = 10.0) -> None:
    """Wait for ``check`` to come true, polling; fail after ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {within:g}s waiting for {what}") from None
