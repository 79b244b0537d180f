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
from collections.abc import Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.adapters.keys import Keys
from bot.domain.models import TERMINAL_STATES, ReleaseState

log = logging.getLogger(__name__)


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
NOTICES = CounterSpec(
    "shipmate_notices",
    "Ephemeral notices to one person, by outcome: sent, coalesced (the same notice was queued "
    "moments ago), rate_limited (too many to that person), undeliverable (Slack refused for good)",
    ("outcome",),
)
SLACK_UNDELIVERABLE = CounterSpec(
    "shipmate_slack_undeliverable",
    "Jobs dropped because Slack answered with an error that retrying cannot fix "
    "(user_not_in_channel, channel_not_found, …), by job kind and Slack's error",
    ("kind", "error"),
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
    NOTICES,
    SLACK_UNDELIVERABLE,
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


def le_label(bound: float) -> str:
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
        bucket = _field(f"{spec.name}_bucket", {**base, "le": le_label(bound)})
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
