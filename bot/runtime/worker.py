"""The `worker` process: jobs from a Redis Streams consumer group, plus the poll timer.

Any number of workers share the group. A job is acknowledged only after it is done; a
worker that dies leaves it pending. Every worker keeps a liveness key a few seconds
long (bot.adapters.locks.Liveness), and the others claim a dead worker's pending jobs as soon as
its key is gone; as a fallback, a job idle for ``reclaim_idle`` seconds is claimed
whoever holds it. A running job keeps claiming itself so nobody steals it, and one that
keeps failing goes to a dead-letter stream and the channel is told.

Collects have their own stream, read by their own loop one at a time, so a backlog of
collect triggers never holds up a deploy, a rollback or a render.

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
from typing import Any, assert_never

from redis.exceptions import RedisError

from bot import trace
from bot.adapters.keys import JOBS_GROUP
from bot.adapters.locks import ALIVE_EVERY, ALIVE_TTL, Liveness, LockLost
from bot.adapters.logs import bind
from bot.adapters.metrics import DEAD_LETTERED, FLUSH_EVERY, JOBS, RECORDER, Flusher, Recorder
from bot.adapters.redisconn import describe, redis_not_ready
from bot.adapters.slackapi import SlackGateway
from bot.adapters.store import Store
from bot.config.loader import Config
from bot.domain.jobs import Job, JobKind, JobOutcome, parse_job
from bot.domain.models import ReleaseState
from bot.domain.render import escape, render_approval_request
from bot.services.collector import Collector
from bot.services.deploys import DeployRunner
from bot.services.renderer import Renderer, options_for

log = logging.getLogger(__name__)

Handler = Callable[["Worker", Job], Awaitable[None]]

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

# KEYS: a jobs stream; ARGV: group, consumer, liveness key prefix, count. Claims up to count
# pending jobs of consumers whose liveness key is gone, whatever their idle time; atomic,
# so two workers never both claim one. A consumer left with nothing is forgotten.
_CLAIM_DEAD = """
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
local out = {}
if summary[1] == 0 or not summary[4] then return out end
local room = tonumber(ARGV[4])
for _, row in ipairs(summary[4]) do
  local name = row[1]
  if room > 0 and name ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. name) == 0 then
    local ids = {}
    for _, p in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', room, name)) do
      ids[#ids + 1] = p[1]
    end
    if #ids > 0 then
      for _, entry in ipairs(redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))) do
        out[#out + 1] = entry
      end
      room = room - #ids
    end
    if tonumber(row[2]) <= #ids then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name) end
  end
end
return out
"""


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
        alive_ttl: float = ALIVE_TTL,
        alive_every: float = ALIVE_EVERY,
    ) -> None:
        """``reclaim_idle``: how long a job may go untouched before any worker takes it, even
        from a worker that looks alive; a dead worker's jobs are taken once its liveness key
        (``alive_ttl``, refreshed every ``alive_every``) is gone."""
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
        self.liveness = Liveness(
            store.redis, store.keys, self.name, ttl=alive_ttl, every=alive_every
        )
        #: how often to look for the jobs of dead workers (and for idle ones)
        self.reclaim_every = min(reclaim_idle / 2, alive_ttl / 6)
        self._slots = asyncio.Semaphore(concurrency)
        #: per stream: how many of its jobs may run at once (collects serialize anyway)
        self._stream_slots = {
            store.keys.jobs: self._slots,
            store.keys.collects: asyncio.Semaphore(1),
        }
        self._tasks: set[asyncio.Task[None]] = set()
        #: (stream, entry id) this worker is running now (a late heartbeat must not start
        #: them twice)
        self._running: set[tuple[str, str]] = set()
        self._ack_if_owned = store.redis.register_script(_ACK_IF_OWNED)
        self._touch_if_owned = store.redis.register_script(_TOUCH_IF_OWNED)
        self._claim_dead = store.redis.register_script(_CLAIM_DEAD)
        self._collect_lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        if not await self._ensure_group(stop):
            return
        # stopped after the jobs, so what they counted on their way out is flushed too
        flushed = asyncio.Event()
        flusher = asyncio.create_task(self._flusher.run(flushed), name="metrics-flush")
        # also stopped after the jobs: nobody takes them over while their scripts are killed
        dead = asyncio.Event()
        alive = asyncio.create_task(self.liveness.run(dead), name="liveness")
        loops = [
            *(
                asyncio.create_task(self._consume(stop, stream), name=f"consume {stream}")
                for stream in self.store.streams
            ),
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
            dead.set()
            await asyncio.gather(alive, return_exceptions=True)
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
                # alive before the first job is read, or another worker could take it back
                await self.liveness.beat()
                return True
            except RedisError as err:
                self.metrics.redis_error("worker", "start")
                log.warning("Redis is unreachable (%s); the worker starts once it is back", err)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, 5.0)
        return False

    async def _consume(self, stop: asyncio.Event, stream: str) -> None:
        redis = self.store.redis
        slots = self._stream_slots[stream]
        while not stop.is_set():
            try:
                await slots.acquire()
                slots.release()
                batches: Any = await redis.xreadgroup(
                    JOBS_GROUP,
                    self.name,
                    {stream: ">"},
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
                    await self._spawn(stream, entry_id, fields)

    async def _spawn(self, stream: str, entry_id: str, fields: Mapping[str, str]) -> None:
        slots = self._stream_slots[stream]
        await slots.acquire()
        running = (stream, entry_id)
        self._running.add(running)
        task = asyncio.create_task(self._handle(stream, entry_id, fields))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._running.discard(running))
        task.add_done_callback(lambda _: slots.release())

    async def _handle(self, stream: str, entry_id: str, fields: Mapping[str, str]) -> None:
        job = parse_job(fields)
        kind = _kind_label(job, fields)
        release, env = (job.release, job.env) if job else (fields.get("release"), None)
        with bind(job=entry_id, kind=kind, release=release, env=env):
            outcome = await self._run_job(stream, entry_id, job) if job else _dropped(kind)
            self.metrics.inc(JOBS, kind=kind, outcome=outcome.value)
            if outcome.done:
                await self._ack(stream, entry_id)

    async def _run_job(self, stream: str, entry_id: str, job: Job) -> JobOutcome:
        """Run the job's handler: ok, or failed / lock_lost (left pending, to be retried)."""
        kind = job.kind.value
        heartbeat = asyncio.create_task(self._keep_claimed(stream, entry_id))
        try:
            with trace.span("job", kind=kind, release=job.release):
                await handler_for(job.kind)(self, job)
            return JobOutcome.OK
        except asyncio.CancelledError:
            raise
        except LockLost as err:
            log.warning("job %s (%s) stopped: %s; it will be retried", entry_id, kind, err)
            return JobOutcome.LOCK_LOST
        except Exception as err:
            if isinstance(err, RedisError):
                self.metrics.redis_error("worker", "job")
            if redis_not_ready(err):
                # an outage or a restart, not a bug: one line, and the job waits for reclaim
                log.warning(
                    "job %s (%s) waits for Redis (%s); it will be retried",
                    entry_id,
                    kind,
                    describe(err),
                )
            else:
                log.exception("job %s (%s) failed; it will be retried", entry_id, kind)
            return JobOutcome.FAILED
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    def _owned_args(self, stream: str, entry_id: str) -> dict[str, Any]:
        return {"keys": [stream], "args": [JOBS_GROUP, self.name, entry_id]}

    async def _ack(self, stream: str, entry_id: str) -> None:
        """Acknowledge a finished job, unless another worker reclaimed it meanwhile (then
        it is theirs to finish and acknowledge)."""
        try:
            acked = await self._ack_if_owned(**self._owned_args(stream, entry_id))
        except RedisError as err:
            # the job stays pending and is reclaimed later; jobs are idempotent
            self.metrics.redis_error("worker", "ack")
            log.warning("could not acknowledge job %s (%s); it will run again", entry_id, err)
            return
        if not acked:
            log.info("job %s was reclaimed by another worker; leaving it to them", entry_id)

    async def _keep_claimed(self, stream: str, entry_id: str) -> None:
        """Reset the job's idle time while it runs, so a long deploy is not reclaimed."""
        while True:
            await asyncio.sleep(self.reclaim_idle_ms / 3000)
            try:
                await self._touch_if_owned(**self._owned_args(stream, entry_id))
            except RedisError:
                self.metrics.redis_error("worker", "heartbeat")

    async def _reclaim(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.reclaim_every)
            try:
                for stream in self.store.streams:
                    for entry_id, fields in await self._claimable(stream):
                        await self._take_over(stream, entry_id, fields)
            except RedisError as err:
                self.metrics.redis_error("worker", "reclaim")
                log.warning("cannot reclaim jobs (%s)", err)

    async def _claimable(self, stream: str) -> list[tuple[str, dict[str, str]]]:
        """Claim the jobs of dead workers, then those idle past ``reclaim_idle``."""
        dead: Any = await self._claim_dead(
            keys=[stream], args=[JOBS_GROUP, self.name, self.store.keys.alive(""), 32]
        )
        idle: Any = await self.store.redis.xautoclaim(
            stream, JOBS_GROUP, self.name, self.reclaim_idle_ms, "0-0", count=32
        )
        claimed = [_entry(raw) for raw in dead or [] if raw]
        claimed += [(str(entry_id), dict(fields or {})) for entry_id, fields in idle[1]]
        return claimed

    async def _take_over(self, stream: str, entry_id: str, fields: Mapping[str, str]) -> None:
        if (stream, entry_id) in self._running or not fields:
            return  # its heartbeat was late and it still runs here; or it was deleted
        with bind(job=entry_id, release=fields.get("release")):
            if stream == self.store.keys.collects:
                dead = await self._collect_exhausted(entry_id, fields)
            else:
                dead = await self._dead_lettered(entry_id, fields)
        if not dead:
            log.info("took over job %s (%s)", entry_id, fields.get("kind"))
            await self._spawn(stream, entry_id, fields)

    async def _collect_exhausted(self, entry_id: str, fields: Mapping[str, str]) -> bool:
        """A collect that failed ``max_deliveries`` times is dropped, not dead-lettered: it
        is only a trigger, and the poll timer and the next trigger collect again."""
        stream = self.store.keys.collects
        info: Any = await self.store.redis.xpending_range(stream, JOBS_GROUP, entry_id, entry_id, 1)
        if not info or int(info[0]["times_delivered"]) <= self.max_deliveries:
            return False
        await self.store.redis.xack(stream, JOBS_GROUP, entry_id)
        await self.store.collect_started()  # a later trigger must queue a collect again
        log.error("collect job %s failed %d times; dropped it", entry_id, self.max_deliveries)
        return True

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
        job = parse_job(fields)
        self.metrics.inc(DEAD_LETTERED, kind=_kind_label(job, fields))
        log.error(
            "job %s (%s) failed %d times; moved to the dead-letter stream",
            entry_id,
            fields.get("kind"),
            tries,
        )
        # only a release stuck deploying matters to the channel; a notice or a render that
        # kept failing is the operators' business (the log line, the metric, the stream)
        if job is not None and job.kind is JobKind.DEPLOY and job.release and job.env:
            await self._gave_up_on(job.release, job.env, tries)
        return True

    async def _gave_up_on(self, release_id: str, env: str, tries: int) -> None:
        """End a release whose deploy job is dead, and say so in the channel once: the
        first dead job ends the release, any later one finds it ended and stays quiet.
        The text is built from the stored release, never from the job's fields."""
        try:
            ended = await self.deploys.give_up(
                release_id, env=env, reason=f"shipmate gave up deploying it after {tries} tries"
            )
        except Exception:
            log.exception("could not mark release %s failed after its dead job", release_id)
            return
        if ended is None:
            return
        env = escape(ended.env)
        text = (
            f":rotating_light: shipmate gave up deploying release {escape(ended.id)} to *{env}* "
            f"after {tries} tries; it is marked failed and *{env}* takes releases again. "
            "The job is kept in the dead-letter stream; check the worker logs."
        )
        try:
            await self.slack.post(ended.channel or self.config.channel_for(ended.env), text)
        except Exception:
            log.exception("could not tell the channel that release %s was given up", release_id)

    async def _poll(self, stop: asyncio.Event) -> None:
        every = self.config.repo.poll_every
        lease = self.store.keys.collector_lease
        while not stop.is_set():
            try:
                # one collect per interval across all workers
                if await self.store.redis.set(
                    lease, self.name, nx=True, px=max(1, int(every * 1000 * 0.9))
                ):
                    async with self._collect_lock:
                        await self.collector.collect()
            except RedisError as err:
                # an outage: one line per poll, not a traceback a second
                self.metrics.redis_error("worker", "poll")
                log.warning("poll collect skipped, Redis unreachable (%s)", err)
            except Exception:
                log.exception("poll collect failed; trying again in %.0fs", every)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)

    async def _collect(self, _: Job) -> None:
        async with self._collect_lock:
            # before reading git: a trigger from now on may hold news this read misses
            await self.store.collect_started()
            await self.collector.collect()

    async def _render(self, job: Job) -> None:
        await self.renderer.render(job.fields["release"])

    async def _deploy(self, job: Job) -> None:
        release_id, env = job.about()
        await self.deploys.run(release_id, env=env)

    async def _ask_approvals(self, job: Job) -> None:
        release = await self.renderer.ensure_posted(job.fields["release"])
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

    async def _thread(self, job: Job) -> None:
        """A line in the release's thread (a block and its reason, a cancel), for everyone."""
        fields = job.fields
        release = await self.renderer.ensure_posted(fields["release"])
        if release is None or release.message_ts is None or release.channel is None:
            return
        with self.slack.dropped_if_undeliverable(job.kind.value):
            await self.slack.post(release.channel, fields["text"], thread_ts=release.message_ts)

    async def _notice(self, job: Job) -> None:
        """An ephemeral for one person: rate-limited per person, and one Slack refuses for
        good (they left the channel) is dropped. A notice never becomes a channel post."""
        fields = job.fields
        await self.slack.notice(fields["channel"], fields["user"], fields["text"])

    async def _channel_notice(self, job: Job) -> None:
        with self.slack.dropped_if_undeliverable(job.kind.value):
            await self.slack.post(job.fields["channel"], job.fields["text"])


def handler_for(kind: JobKind) -> Handler:
    """The worker's method that runs jobs of ``kind``; mypy checks that every kind has one."""
    match kind:
        case JobKind.RENDER:
            return Worker._render
        case JobKind.DEPLOY:
            return Worker._deploy
        case JobKind.COLLECT:
            return Worker._collect
        case JobKind.ASK_APPROVALS:
            return Worker._ask_approvals
        case JobKind.NOTICE:
            return Worker._notice
        case JobKind.CHANNEL_NOTICE:
            return Worker._channel_notice
        case JobKind.THREAD:
            return Worker._thread
        case _:
            assert_never(kind)


def _dropped(kind: str) -> JobOutcome:
    # queued by a newer version (a rolling upgrade) or by a bug: retrying it here would
    # only end in the dead-letter stream
    log.error("unknown job kind %r; dropping it", kind)
    return JobOutcome.UNKNOWN


def _kind_label(job: Job | None, fields: Mapping[str, str]) -> str:
    """The ``kind`` label of logs and metrics: the enum's value, the very string dashboards
    have always seen; an unknown kind as the stream has it."""
    return job.kind.value if job else fields.get("kind", "")


def _entry(raw: Any) -> tuple[str, dict[str, str]]:
    """A stream entry as a script returns it: [id, [field, value, ...]] (fields nil once
    the entry was deleted)."""
    entry_id, flat = raw[0], raw[1] or []
    return str(entry_id), {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
