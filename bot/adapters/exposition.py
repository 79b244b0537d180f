"""GET /metrics: what every process recorded (read back from Redis) plus live state.

The figures come from three places: the hash each process's :class:`bot.adapters.metrics.Flusher`
adds to, the per-state counters the store's write keeps, and the environments and job
stream as they are now. prometheus_client renders them, so the text format is its concern.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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

from bot.adapters.keys import JOBS_GROUP, Keys
from bot.adapters.metrics import (
    COUNTERS,
    HISTOGRAMS,
    LIVE_STATES,
    RECORDER,
    HistogramSpec,
    Recorder,
    le_label,
    metrics_key,
)
from bot.domain.codec import env_from_doc, release_from_doc

log = logging.getLogger(__name__)

T = TypeVar("T")


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


#: the job streams counted as one queue: deploys, renders and notices; collects
def _streams(keys: Keys) -> tuple[str, str]:
    return (keys.jobs, keys.collects)


async def read_shared(redis: Redis, keys: Keys, environments: Sequence[str] = ()) -> Shared:
    """Three round trips: the hashes and the streams' groups; the environments and the oldest
    undelivered jobs; the releases the environments point at. Raises RedisError."""
    streams = _streams(keys)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(metrics_key(keys))
        pipe.hgetall(keys.state_counts)
        pipe.xlen(keys.dead_letters)
        pipe.time()
        for stream in streams:
            pipe.xinfo_groups(stream)
            pipe.xpending(stream, JOBS_GROUP)
            pipe.xlen(stream)
        replies = [_answer(r) for r in await pipe.execute(raise_on_error=False)]
    recorded_raw, entered_raw, dead, now = replies[:4]
    per_stream = [replies[4 + 3 * i : 7 + 3 * i] for i in range(len(streams))]

    entered: dict[tuple[str, str], int] = {}
    for key, value in (entered_raw or {}).items():
        env, sep, state = _text(key).rpartition("|")
        if sep:
            entered[(env, state)] = int(value)
    envs = sorted(set(environments) | {env for env, _ in entered})

    lags: list[Any] = []
    async with redis.pipeline(transaction=False) as pipe:
        for env in envs:
            pipe.get(keys.env(env))
        for stream, (groups, _, _) in zip(streams, per_stream, strict=True):
            group = next((g for g in groups or [] if _text(g.get("name")) == JOBS_GROUP), None)
            last_delivered = _text(group.get("last-delivered-id")) if group else "0-0"
            lag = group.get("lag") if group else None
            lags.append(lag)
            # Redis cannot tell the lag after some deletions: count what follows, within reason
            pipe.xrange(stream, min=f"({last_delivered}", count=1 if lag is not None else 10_000)
        replies = [_answer(r) for r in await pipe.execute(raise_on_error=False)]
    env_docs, undelivered = replies[: len(envs)], replies[len(envs) :]

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

    waiting = pending = length = 0
    oldest: list[int] = []
    for (_, summary, size), lag, later in zip(per_stream, lags, undelivered, strict=True):
        in_stream = int(summary["pending"]) if summary else 0
        pending += in_stream
        length += int(size or 0)
        waiting += int(lag) if lag is not None else len(later or [])
        if in_stream and summary.get("min"):
            oldest.append(_id_ms(summary["min"]))
        if later:
            oldest.append(_id_ms(later[0][0]))
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    queue = JobQueue(
        waiting=waiting,
        pending=pending,
        oldest_age=max(0.0, (now_ms - min(oldest)) / 1000) if oldest else 0.0,
        dead_letters=int(dead or 0),
        stream_length=length,
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
            "Entries in the job streams (jobs and collects), acknowledged ones included until trimmed",
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
            buckets.append((le_label(bound), running))
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
