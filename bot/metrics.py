"""Metrics: counted where they happen, shared through Redis, exposed by `web` at GET /metrics.

`web` and `worker` are separate processes, possibly many replicas on many hosts, so what a
worker counts has to reach whichever `web` Prometheus scrapes. Each process counts into a
process-local :class:`Recorder`; a :class:`Flusher` adds the increments to one Redis hash
every few seconds (HINCRBY / HINCRBYFLOAT in one MULTI/EXEC). While Redis is away the
increments stay in memory (one number per series, however long the outage) and go out with
the first flush that works. At scrape time `web` reads that hash, the per-state release
counters the store keeps, the environments and the job stream, and prometheus_client
renders them.

A flush whose reply was lost after Redis applied it is sent again, so the shared counters
are at-least-once; a process that dies loses what it had not flushed yet (seconds' worth).
Series the shared figures cannot give while Redis is down are left out of the scrape rather
than shown stale: a gap is honest, a counter going backwards would read as a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.keys import JOBS_GROUP, Keys
from domain.codec import env_from_doc, release_from_doc
from domain.models import TERMINAL_STATES, ReleaseState

log = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds between two flushes of a process's increments to Redis
FLUSH_EVERY = 2.0
#: the last flush of a stopping process gives up after this long (a hung Redis must not
#: hold up a shutdown; what it could not write is lost with the process)
LAST_FLUSH_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class CounterSpec:
    #: without the ``_total`` suffix, which the exposition adds
    name: str
    help: str
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HistogramSpec:
    name: str
    help: str
    labels: tuple[str, ...]
    #: upper bounds, ascending; +Inf is implied
    buckets: tuple[float, ...]


#: deploys take from a fraction of a second (an instant rollback) to many minutes
DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)
#: people approve within minutes or within days
WAIT_BUCKETS = (
    1.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
    259200.0,
)

DEPLOY_SECONDS = HistogramSpec(
    "shipmate_deploy_duration_seconds",
    "Seconds from a release's deploy start until it was live or failed",
    ("env", "outcome"),
    DURATION_BUCKETS,
)
ROLLBACK_SECONDS = HistogramSpec(
    "shipmate_rollback_duration_seconds",
    "Seconds a rollback took: automatic (after a failed deploy) or manual (/rollback), start to done",
    ("env", "trigger", "outcome"),
    DURATION_BUCKETS,
)
APPROVAL_WAIT = HistogramSpec(
    "shipmate_approval_wait_seconds",
    "Seconds from /release (the batch frozen) until the last approval, observed when the deploy starts",
    ("env",),
    WAIT_BUCKETS,
)
DEPLOYS = CounterSpec(
    "shipmate_deploys",
    "Release deploys that ended, by outcome (live, failed, gave_up)",
    ("env", "outcome"),
)
ROLLBACKS = CounterSpec(
    "shipmate_rollbacks",
    "Rollbacks that ended, by trigger (automatic, manual) and outcome (healthy, unhealthy, gave_up)",
    ("env", "trigger", "outcome"),
)
SLACK_CALLS = CounterSpec(
    "shipmate_slack_api_calls", "Slack Web API calls, each try counted", ("method",)
)
SLACK_RATE_LIMITED = CounterSpec(
    "shipmate_slack_api_rate_limited", "Slack Web API answers HTTP 429", ("method",)
)
SLACK_ERRORS = CounterSpec(
    "shipmate_slack_api_errors",
    "Slack Web API calls that failed other than by 429 (Slack's error code, or the exception)",
    ("method", "error"),
)
JOBS = CounterSpec(
    "shipmate_jobs",
    "Jobs the workers ran, by kind and outcome (ok, failed, lock_lost, unknown)",
    ("kind", "outcome"),
)
DEAD_LETTERED = CounterSpec(
    "shipmate_jobs_dead_lettered", "Jobs moved to the dead-letter stream", ("kind",)
)
REDIS_ERRORS = CounterSpec(
    "shipmate_redis_errors",
    "Redis commands that failed, by process (web, worker) and operation",
    ("process", "op"),
)

COUNTERS: tuple[CounterSpec, ...] = (
    DEPLOYS,
    ROLLBACKS,
    SLACK_CALLS,
    SLACK_RATE_LIMITED,
    SLACK_ERRORS,
    JOBS,
    DEAD_LETTERED,
    REDIS_ERRORS,
)
HISTOGRAMS: tuple[HistogramSpec, ...] = (DEPLOY_SECONDS, ROLLBACK_SECONDS, APPROVAL_WAIT)

#: the states a release can still leave; the gauge of current releases covers these
LIVE_STATES: tuple[str, ...] = tuple(s.value for s in ReleaseState if s not in TERMINAL_STATES)


def metrics_key(keys: Keys) -> str:
    """The hash of shared counters; it shares the deployment's hash tag (one cluster slot)."""
    return f"{keys.prefix}stats:metrics"


def _field(name: str, labels: Mapping[str, str]) -> str:
    return json.dumps([name, labels], sort_keys=True, separators=(",", ":"))


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _labels(spec: CounterSpec | HistogramSpec, given: Mapping[str, str]) -> dict[str, str]:
    if set(given) != set(spec.labels):
        raise ValueError(f"{spec.name} takes labels {spec.labels}, got {sorted(given)}")
    return {name: str(given[name]) for name in spec.labels}


@dataclass
class Increments:
    """What a recorder counted since its last flush: field -> amount."""

    counts: dict[str, int] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.counts or self.sums)

    def __len__(self) -> int:
        return len(self.counts) + len(self.sums)


class Recorder:
    """Process-local counters and histograms (fixed buckets), waiting for a Flusher.

    Recording never touches Redis, so it costs nothing on a hot path and cannot fail.
    """

    def __init__(self) -> None:
        # asyncio code records from one thread, but a lock costs nothing and a backend
        # helper running in a thread may record too
        self._lock = threading.Lock()
        self._pending = Increments()
        self._redis_errors: dict[tuple[str, str], int] = {}

    def inc(self, spec: CounterSpec, amount: int = 1, **labels: str) -> None:
        key = _field(spec.name, _labels(spec, labels))
        with self._lock:
            self._pending.counts[key] = self._pending.counts.get(key, 0) + amount

    def observe(self, spec: HistogramSpec, value: float, **labels: str) -> None:
        base = _labels(spec, labels)
        value = max(0.0, value)  # a clock step between two hosts must not make a negative one
        bound = next((b for b in spec.buckets if value <= b), math.inf)
        bucket = _field(f"{spec.name}_bucket", {**base, "le": _le(bound)})
        total = _field(f"{spec.name}_sum", base)
        with self._lock:
            counts, sums = self._pending.counts, self._pending.sums
            counts[bucket] = counts.get(bucket, 0) + 1
            sums[total] = sums.get(total, 0.0) + value

    def redis_error(self, process: str, op: str) -> None:
        """A Redis command failed in ``process`` (web, worker) doing ``op``."""
        self.inc(REDIS_ERRORS, process=process, op=op)
        with self._lock:
            self._redis_errors[(process, op)] = self._redis_errors.get((process, op), 0) + 1

    def take(self) -> Increments:
        """Everything pending, leaving nothing: the caller flushes it or gives it back."""
        with self._lock:
            taken, self._pending = self._pending, Increments()
        return taken

    def give_back(self, taken: Increments) -> None:
        with self._lock:
            counts, sums = self._pending.counts, self._pending.sums
            for key, n in taken.counts.items():
                counts[key] = counts.get(key, 0) + n
            for key, x in taken.sums.items():
                sums[key] = sums.get(key, 0.0) + x

    @property
    def unflushed(self) -> int:
        """How many fields of the shared hash (a counter, a bucket, a sum) have increments
        that are not in Redis yet."""
        with self._lock:
            return len(self._pending)

    def local_redis_errors(self) -> dict[tuple[str, str], int]:
        """(process, op) -> Redis errors this process saw since it started."""
        with self._lock:
            return dict(self._redis_errors)


#: the recorder of this process; components take another one in tests
RECORDER = Recorder()


class Flusher:
    """Moves a recorder's increments into the shared Redis hash, periodically and at the end."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        process: str,
        recorder: Recorder | None = None,
        every: float = FLUSH_EVERY,
    ) -> None:
        self.redis = redis
        self.key = metrics_key(keys)
        self.process = process
        self.recorder = recorder or RECORDER
        self.every = every
        self._failing = False

    async def flush(self) -> bool:
        """Write the pending increments; False (they stay pending) if Redis refused."""
        taken = self.recorder.take()
        if not taken:
            return True
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for key, n in taken.counts.items():
                    pipe.hincrby(self.key, key, n)
                for key, x in taken.sums.items():
                    pipe.hincrbyfloat(self.key, key, x)
                await pipe.execute()
        except BaseException as err:
            # MULTI/EXEC applied all or nothing; the rare lost reply counts twice, never zero
            self.recorder.give_back(taken)
            if not isinstance(err, RedisError):
                raise
            self.recorder.redis_error(self.process, "metrics_flush")
            if not self._failing:
                log.warning("metrics kept in memory until Redis answers again (%s)", err)
            self._failing = True
            return False
        if self._failing:
            log.info("metrics flushed to Redis again (%d figures caught up)", len(taken))
            self._failing = False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``every`` seconds until ``stop``, then once more."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every)
            if not stop.is_set():
                await self.flush()
        try:
            await asyncio.wait_for(self.flush(), timeout=LAST_FLUSH_TIMEOUT)
        except TimeoutError:
            log.warning("metrics not flushed at shutdown: Redis did not answer in time")


# -- the scrape -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobQueue:
    #: in the stream, not delivered to any worker yet
    waiting: int
    #: delivered to a worker, not acknowledged (running, or waiting to be reclaimed)
    pending: int
    #: seconds since the oldest job not acknowledged yet was enqueued (0: none)
    oldest_age: float
    dead_letters: int
    stream_length: int


@dataclass(frozen=True, slots=True)
class Shared:
    """What every process contributed, read from Redis at one scrape."""

    #: the shared hash as stored: field -> value
    recorded: Mapping[str, str]
    #: (env, state) -> releases that entered the state
    entered: Mapping[tuple[str, str], int]
    #: (env, state) -> current releases (the batch and the active release), zeros included
    current: Mapping[tuple[str, str], int]
    queue: JobQueue


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _answer(value: Any) -> Any:
    """A pipeline reply; a command error (no stream yet, no group yet) reads as nothing."""
    if isinstance(value, ResponseError):
        return None
    if isinstance(value, BaseException):
        raise value
    return value


def _id_ms(entry_id: Any) -> int:
    return int(_text(entry_id).split("-", 1)[0])


async def read_shared(redis: Redis, keys: Keys, environments: Sequence[str] = ()) -> Shared:
    """Three round trips: the hashes and the stream's group; the environments and the oldest
    undelivered job; the releases the environments point at. Raises RedisError."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(metrics_key(keys))
        pipe.hgetall(keys.state_counts)
        pipe.xinfo_groups(keys.jobs)
        pipe.xpending(keys.jobs, JOBS_GROUP)
        pipe.xlen(keys.jobs)
        pipe.xlen(keys.dead_letters)
        pipe.time()
        replies = [_answer(r) for r in await pipe.execute(raise_on_error=False)]
    recorded_raw, entered_raw, groups, summary, length, dead, now = replies

    entered: dict[tuple[str, str], int] = {}
    for key, value in (entered_raw or {}).items():
        env, sep, state = _text(key).rpartition("|")
        if sep:
            entered[(env, state)] = int(value)
    envs = sorted(set(environments) | {env for env, _ in entered})

    group = next((g for g in groups or [] if _text(g.get("name")) == JOBS_GROUP), None)
    last_delivered = _text(group.get("last-delivered-id")) if group else "0-0"
    lag = group.get("lag") if group else None
    async with redis.pipeline(transaction=False) as pipe:
        for env in envs:
            pipe.get(keys.env(env))
        # Redis cannot tell the lag after some deletions: count what follows, within reason
        pipe.xrange(keys.jobs, min=f"({last_delivered}", count=1 if lag is not None else 10_000)
        *env_docs, undelivered = [_answer(r) for r in await pipe.execute(raise_on_error=False)]

    owned: dict[str, str] = {}  # release id -> env
    for env, raw in zip(envs, env_docs, strict=True):
        doc = _parse(env_from_doc, raw)
        if doc is not None:
            for rid in (doc.batch_release, doc.active_release):
                if rid:
                    owned[rid] = env
    current = {(env, state): 0 for env in envs for state in LIVE_STATES}
    if owned:
        async with redis.pipeline(transaction=False) as pipe:
            for rid in owned:
                pipe.get(keys.release(rid))
            release_docs = [_answer(r) for r in await pipe.execute(raise_on_error=False)]
        for env, raw in zip(owned.values(), release_docs, strict=True):
            release = _parse(release_from_doc, raw)
            if release is not None and not release.is_terminal:
                current[(env, release.state.value)] += 1

    pending = int(summary["pending"]) if summary else 0
    oldest = [_id_ms(summary["min"])] if pending and summary.get("min") else []
    if undelivered:
        oldest.append(_id_ms(undelivered[0][0]))
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    queue = JobQueue(
        waiting=int(lag) if lag is not None else len(undelivered or []),
        pending=pending,
        oldest_age=max(0.0, (now_ms - min(oldest)) / 1000) if oldest else 0.0,
        dead_letters=int(dead or 0),
        stream_length=int(length or 0),
    )
    recorded = {_text(k): _text(v) for k, v in (recorded_raw or {}).items()}
    return Shared(recorded=recorded, entered=entered, current=current, queue=queue)


def _parse(load: Callable[[Any], T], raw: Any) -> T | None:
    """A stored document through its codec; None when absent or unreadable (a scrape must
    not fail on one document a newer version wrote)."""
    if not raw:
        return None
    try:
        return load(json.loads(raw))
    except (ValueError, KeyError, TypeError) as err:
        log.debug("metrics skipped an unreadable document: %s", err)
        return None


class Exposition:
    """A prometheus_client collector over one scrape's figures."""

    def __init__(self, shared: Shared | None, recorder: Recorder) -> None:
        self.shared = shared
        self.recorder = recorder

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("shipmate_up", "This web process answers", value=1)
        yield GaugeMetricFamily(
            "shipmate_redis_up",
            "1 if this scrape could read Redis; without it the shared figures are left out",
            value=1 if self.shared is not None else 0,
        )
        yield from self._local()
        if self.shared is not None:
            yield from self._releases(self.shared)
            yield from self._queue(self.shared.queue)
            yield from self._recorded(self.shared.recorded)

    def _local(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "shipmate_local_redis_errors",
            "Redis errors seen by the process that answered this scrape, since it started",
            labels=["process", "op"],
        )
        for (process, op), n in sorted(self.recorder.local_redis_errors().items()):
            errors.add_metric([process, op], n)
        yield errors
        yield GaugeMetricFamily(
            "shipmate_local_unflushed_increments",
            "Shared figures (counters, buckets, sums) with increments this process holds and Redis has not got yet",
            value=self.recorder.unflushed,
        )

    def _releases(self, shared: Shared) -> Iterator[Metric]:
        current = GaugeMetricFamily(
            "shipmate_releases",
            "Releases in each state now, per environment (its batch and its active release)",
            labels=["env", "state"],
        )
        for (env, state), n in sorted(shared.current.items()):
            current.add_metric([env, state], n)
        yield current
        entered = CounterMetricFamily(
            "shipmate_releases_entered",
            "Releases that entered each state, per environment",
            labels=["env", "state"],
        )
        for (env, state), n in sorted(shared.entered.items()):
            entered.add_metric([env, state], n)
        yield entered

    def _queue(self, queue: JobQueue) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "shipmate_jobs_queue_depth",
            "Jobs not done yet: waiting (not delivered to a worker) or pending (delivered, not acknowledged)",
            labels=["state"],
        )
        depth.add_metric(["waiting"], queue.waiting)
        depth.add_metric(["pending"], queue.pending)
        yield depth
        yield GaugeMetricFamily(
            "shipmate_jobs_oldest_age_seconds",
            "Seconds since the oldest job not done yet was enqueued (0 when there is none)",
            value=queue.oldest_age,
        )
        yield GaugeMetricFamily(
            "shipmate_jobs_dead_letters",
            "Jobs in the dead-letter stream",
            value=queue.dead_letters,
        )
        yield GaugeMetricFamily(
            "shipmate_jobs_stream_length",
            "Entries in the jobs stream, acknowledged ones included until trimmed",
            value=queue.stream_length,
        )

    def _recorded(self, recorded: Mapping[str, str]) -> Iterator[Metric]:
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for key, raw in recorded.items():
            try:
                name, labels = json.loads(key)
                samples.setdefault(str(name), []).append((dict(labels), float(raw)))
            except (ValueError, TypeError):
                continue  # not a field this version wrote
        for spec in COUNTERS:
            family = CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
            for labels, value in _matching(samples.get(spec.name, []), spec.labels):
                family.add_metric(labels, value)
            yield family
        for hist in HISTOGRAMS:
            yield _histogram(hist, samples)


def _matching(
    samples: Sequence[tuple[dict[str, str], float]], names: Sequence[str]
) -> Iterator[tuple[list[str], float]]:
    """Samples whose labels are exactly ``names``, as (values in that order, value), sorted."""
    wanted = set(names)
    found = [([labels[n] for n in names], v) for labels, v in samples if set(labels) == wanted]
    yield from sorted(found)


def _histogram(
    spec: HistogramSpec, samples: Mapping[str, list[tuple[dict[str, str], float]]]
) -> HistogramMetricFamily:
    """Per-bucket counts as stored, made cumulative; a count stored under a bound this version
    does not have goes to the next bound up."""
    bounds = (*spec.buckets, math.inf)
    counts: dict[tuple[str, ...], list[float]] = {}
    for stored, value in samples.get(f"{spec.name}_bucket", []):
        labels = dict(stored)
        le = labels.pop("le", None)
        if le is None or set(labels) != set(spec.labels):
            continue
        try:
            at = next((i for i, b in enumerate(bounds) if float(le) <= b), None)
        except ValueError:
            continue
        if at is None:
            continue
        row = counts.setdefault(tuple(labels[n] for n in spec.labels), [0.0] * len(bounds))
        row[at] += value
    sums = {tuple(v): s for v, s in _matching(samples.get(f"{spec.name}_sum", []), spec.labels)}
    family = HistogramMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    for values, row in sorted(counts.items()):
        running, buckets = 0.0, []
        for bound, n in zip(bounds, row, strict=True):
            running += n
            buckets.append((_le(bound), running))
        family.add_metric(list(values), buckets, sums.get(values, 0.0))
    return family


async def scrape(
    redis: Redis,
    keys: Keys,
    *,
    environments: Sequence[str] = (),
    recorder: Recorder | None = None,
    process: str = "web",
) -> bytes:
    """The exposition for GET /metrics; without Redis, only this process's own figures."""
    recorder = recorder or RECORDER
    shared: Shared | None
    try:
        shared = await read_shared(redis, keys, environments)
    except RedisError as err:
        recorder.redis_error(process, "metrics")
        log.warning("/metrics without shared figures: Redis unreachable (%s)", err)
        shared = None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Exposition(shared, recorder))
    return generate_latest(registry)
