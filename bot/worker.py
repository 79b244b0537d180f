"""The `worker` process: jobs from a Redis Streams consumer group, plus the poll timer.

Any number of workers share the group. A job is acknowledged only after it is done; a
worker that dies leaves it pending, and another worker claims it once it has been idle
for ``reclaim_idle`` seconds. A running job keeps claiming itself so nobody steals it,
and one that keeps failing goes to a dead-letter stream and the channel is told.

A job belongs to the consumer that claimed it last. A worker that was paused and whose
job was reclaimed meanwhile neither takes it back (its heartbeat only touches jobs it
still owns) nor acknowledges it when it resumes: the job stays pending for its new
owner, so it is not lost if that owner dies too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.exceptions import RedisError

from bot.collector import Collector
from bot.config import Config
from bot.deploys import DeployRunner
from bot.keys import JOBS_GROUP
from bot.locks import LockLost
from bot.logs import bind
from bot.metrics import DEAD_LETTERED, FLUSH_EVERY, JOBS, RECORDER, Flusher, Recorder
from bot.renderer import Renderer, options_for
from bot.slackapi import SlackGateway
from bot.store import Store
from domain.models import ReleaseState
from domain.render import render_approval_request

log = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, str]], Awaitable[None]]

# KEYS: jobs stream; ARGV: group, consumer, entry id. Only the job's current owner may
# acknowledge it or reset its idle time (XCLAIM alone would take it from anyone).
_OWNED = """
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #mine == 0 then return 0 end
"""
_ACK_IF_OWNED = _OWNED + "return redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])"
_TOUCH_IF_OWNED = (
    _OWNED + "redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')\nreturn 1"
)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        config: Config,
        slack: SlackGateway,
        collector: Collector,
        renderer: Renderer,
        deploys: DeployRunner,
        name: str | None = None,
        concurrency: int = 16,
        reclaim_idle: float = 30.0,
        max_deliveries: int = 5,
        block_ms: int = 1000,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        metrics: Recorder | None = None,
        flush_every: float = FLUSH_EVERY,
    ) -> None:
        self._on_stop = on_stop
        self.metrics = metrics or RECORDER
        self._flusher = Flusher(
            store.redis, store.keys, process="worker", recorder=self.metrics, every=flush_every
        )
        self.store = store
        self.config = config
        self.slack = slack
        self.collector = collector
        self.renderer = renderer
        self.deploys = deploys
        self.name = name or consumer_name()
        self.reclaim_idle_ms = int(reclaim_idle * 1000)
        self.max_deliveries = max_deliveries
        self.block_ms = block_ms
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        #: entry ids this worker is running now (a late heartbeat must not start them twice)
        self._running: set[str] = set()
        self._ack_if_owned = store.redis.register_script(_ACK_IF_OWNED)
        self._touch_if_owned = store.redis.register_script(_TOUCH_IF_OWNED)
        self._collect_lock = asyncio.Lock()
        self._handlers: dict[str, Handler] = {
            "render": self._render,
            "deploy": self._deploy,
            "collect": self._collect,
            "ask_approvals": self._ask_approvals,
            "notice": self._notice,
            "channel_notice": self._channel_notice,
            "thread": self._thread,
        }

    async def run(self, stop: asyncio.Event) -> None:
        if not await self._ensure_group(stop):
            return
        # stopped after the jobs, so what they counted on their way out is flushed too
        flushed = asyncio.Event()
        flusher = asyncio.create_task(self._flusher.run(flushed), name="metrics-flush")
        loops = [
            asyncio.create_task(self._consume(stop), name="consume"),
            asyncio.create_task(self._poll(stop), name="poll"),
            asyncio.create_task(self._reclaim(stop), name="reclaim"),
        ]
        try:
            await stop.wait()
        finally:
            for task in loops:
                task.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*loops, *self._tasks, return_exceptions=True)
            await self.deploys.close()
            flushed.set()
            await asyncio.gather(flusher, return_exceptions=True)
            if self._on_stop is not None:
                await self._on_stop()

    async def _ensure_group(self, stop: asyncio.Event) -> bool:
        """Create the consumer group, waiting out a Redis that is not up yet (a worker
        started before Redis, or during a restart, must not die); False if told to stop."""
        delay = 0.2
        while not stop.is_set():
            try:
                await self.store.ensure_group()
                return True
            except RedisError as err:
                self.metrics.redis_error("worker", "start")
                log.warning("Redis is unreachable (%s); the worker starts once it is back", err)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, 5.0)
        return False

    async def _consume(self, stop: asyncio.Event) -> None:
        redis = self.store.redis
        while not stop.is_set():
            try:
                await self._slots.acquire()
                self._slots.release()
                batches: Any = await redis.xreadgroup(
                    JOBS_GROUP,
                    self.name,
                    {self.store.keys.jobs: ">"},
                    count=16,
                    block=self.block_ms,
                )
            except RedisError as err:
                self.metrics.redis_error("worker", "consume")
                log.warning("cannot read jobs from Redis (%s); retrying", err)
                await asyncio.sleep(1.0)
                continue
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    await self._spawn(entry_id, fields)

    async def _spawn(self, entry_id: str, fields: Mapping[str, str]) -> None:
        await self._slots.acquire()
        self._running.add(entry_id)
        task = asyncio.create_task(self._handle(entry_id, fields))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._running.discard(entry_id))
        task.add_done_callback(lambda _: self._slots.release())

    async def _handle(self, entry_id: str, fields: Mapping[str, str]) -> None:
        release = fields.get("release")
        env = release.rsplit("-", 1)[0] if release else None
        with bind(job=entry_id, kind=fields.get("kind", ""), release=release, env=env):
            outcome = await self._run_job(entry_id, fields)
            self.metrics.inc(JOBS, kind=fields.get("kind", ""), outcome=outcome)
            if outcome in ("ok", "unknown"):
                await self._ack(entry_id)

    async def _run_job(self, entry_id: str, fields: Mapping[str, str]) -> str:
        """Run the job's handler: "ok", "unknown" (no such kind: dropped), or "failed" /
        "lock_lost" (left pending, to be retried)."""
        kind = fields.get("kind", "")
        handler = self._handlers.get(kind)
        heartbeat = asyncio.create_task(self._keep_claimed(entry_id))
        try:
            if handler is None:
                log.error("unknown job kind %r; dropping it", kind)
                return "unknown"
            await handler(fields)
            return "ok"
        except asyncio.CancelledError:
            raise
        except LockLost as err:
            log.warning("job %s (%s) stopped: %s; it will be retried", entry_id, kind, err)
            return "lock_lost"
        except Exception as err:
            if isinstance(err, RedisError):
                self.metrics.redis_error("worker", "job")
            log.exception("job %s (%s) failed; it will be retried", entry_id, kind)
            return "failed"
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    def _owned_args(self, entry_id: str) -> dict[str, Any]:
        return {"keys": [self.store.keys.jobs], "args": [JOBS_GROUP, self.name, entry_id]}

    async def _ack(self, entry_id: str) -> None:
        """Acknowledge a finished job, unless another worker reclaimed it meanwhile (then
        it is theirs to finish and acknowledge)."""
        try:
            acked = await self._ack_if_owned(**self._owned_args(entry_id))
        except RedisError as err:
            # the job stays pending and is reclaimed later; jobs are idempotent
            self.metrics.redis_error("worker", "ack")
            log.warning("could not acknowledge job %s (%s); it will run again", entry_id, err)
            return
        if not acked:
            log.info("job %s was reclaimed by another worker; leaving it to them", entry_id)

    async def _keep_claimed(self, entry_id: str) -> None:
        """Reset the job's idle time while it runs, so a long deploy is not reclaimed."""
        while True:
            await asyncio.sleep(self.reclaim_idle_ms / 3000)
            try:
                await self._touch_if_owned(**self._owned_args(entry_id))
            except RedisError:
                self.metrics.redis_error("worker", "heartbeat")

    async def _reclaim(self, stop: asyncio.Event) -> None:
        redis = self.store.redis
        while not stop.is_set():
            await asyncio.sleep(self.reclaim_idle_ms / 2000)
            try:
                result: Any = await redis.xautoclaim(
                    self.store.keys.jobs,
                    JOBS_GROUP,
                    self.name,
                    self.reclaim_idle_ms,
                    "0-0",
                    count=32,
                )
                for entry_id, fields in result[1]:
                    if entry_id in self._running:
                        continue  # its heartbeat was late; it is still running here
                    with bind(job=entry_id, release=fields.get("release")):
                        dead = bool(fields) and await self._dead_lettered(entry_id, fields)
                    if fields and not dead:
                        await self._spawn(entry_id, fields)
            except RedisError as err:
                self.metrics.redis_error("worker", "reclaim")
                log.warning("cannot reclaim jobs (%s)", err)

    async def _dead_lettered(self, entry_id: str, fields: Mapping[str, str]) -> bool:
        redis = self.store.redis
        info: Any = await redis.xpending_range(
            self.store.keys.jobs, JOBS_GROUP, entry_id, entry_id, 1
        )
        deliveries = int(info[0]["times_delivered"]) if info else 0
        if deliveries <= self.max_deliveries:
            return False
        # this claim is delivery number max + 1: the job ran (or was being run) max times
        tries = deliveries - 1
        dead: dict[Any, Any] = {**fields, "job_id": entry_id, "tries": str(tries)}
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.store.keys.dead_letters, dead)
            pipe.xack(self.store.keys.jobs, JOBS_GROUP, entry_id)
            await pipe.execute()
        self.metrics.inc(DEAD_LETTERED, kind=fields.get("kind", ""))
        log.error(
            "job %s (%s) failed %d times; moved to the dead-letter stream",
            entry_id,
            fields.get("kind"),
            tries,
        )
        text = (
            f":rotating_light: shipmate gave up on a `{fields.get('kind')}` job "
            f"({', '.join(f'{k}={v}' for k, v in fields.items() if k != 'kind')}) after {tries} tries. "
            "It is kept in the dead-letter stream; check the worker logs."
        )
        with contextlib.suppress(Exception):
            await self.slack.post(self.config.slack.channel, text)
        if fields.get("kind") == "deploy" and fields.get("release"):
            with contextlib.suppress(Exception):
                await self.deploys.give_up(
                    fields["release"], f"shipmate gave up deploying it after {tries} tries"
                )
        return True

    async def _poll(self, stop: asyncio.Event) -> None:
        every = self.config.repo.poll_every
        lease = self.store.keys.collector_lease
        while not stop.is_set():
            try:
                # one collect per interval across all workers
                if await self.store.redis.set(
                    lease, self.name, nx=True, px=max(1, int(every * 1000 * 0.9))
                ):
                    await self._collect({})
            except RedisError as err:
                # an outage: one line per poll, not a traceback a second
                self.metrics.redis_error("worker", "poll")
                log.warning("poll collect skipped, Redis unreachable (%s)", err)
            except Exception:
                log.exception("poll collect failed; trying again in %.0fs", every)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)

    async def _collect(self, _: Mapping[str, str]) -> None:
        async with self._collect_lock:
            await self.collector.collect()

    async def _render(self, fields: Mapping[str, str]) -> None:
        await self.renderer.render(fields["release"])

    async def _deploy(self, fields: Mapping[str, str]) -> None:
        await self.deploys.run(fields["release"])

    async def _ask_approvals(self, fields: Mapping[str, str]) -> None:
        release = await self.renderer.ensure_posted(fields["release"])
        if release is None or release.message_ts is None:
            return
        if release.state not in (ReleaseState.AWAITING_APPROVAL, ReleaseState.BLOCKED):
            return
        text = render_approval_request(release, options_for(self.config))
        await self.slack.post(
            release.channel or self.config.channel_for(release.env),
            text,
            thread_ts=release.message_ts,
        )

    async def _thread(self, fields: Mapping[str, str]) -> None:
        """A line in the release's thread (a block and its reason, a cancel), for everyone."""
        release = await self.renderer.ensure_posted(fields["release"])
        if release is None or release.message_ts is None or release.channel is None:
            return
        await self.slack.post(release.channel, fields["text"], thread_ts=release.message_ts)

    async def _notice(self, fields: Mapping[str, str]) -> None:
        await self.slack.ephemeral(fields["channel"], fields["user"], fields["text"])

    async def _channel_notice(self, fields: Mapping[str, str]) -> None:
        await self.slack.post(fields["channel"], fields["text"])
