"""Redis as the single source of truth: read a snapshot, decide in pure code, write atomically.

Every change is an optimistic transaction in two round trips. A Lua script reads an
environment with the releases it points at; the caller decides with ``domain``; a
second script checks that nothing it read has changed since (by version), then writes
the new documents, the message index, the jobs, the de-duplication mark and the audit
entries saying what was decided (``bot.domain.audit``) in one step. A write based on stale
state is refused and the decision is made again, so a release can never be approved
twice, deployed twice or half-applied, nor a decision be recorded without its audit entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.adapters.keys import (
    COLLECT_PENDING_TTL_SECONDS,
    DEDUPE_TTL_SECONDS,
    JOBS_GROUP,
    JOBS_MAXLEN,
    Keys,
)
from bot.domain import audit
from bot.domain.codec import env_from_doc, env_to_doc, release_from_doc, release_to_doc
from bot.domain.jobs import Job, render_job
from bot.domain.models import EnvState, Release

T = TypeVar("T")

MAX_ATTEMPTS = 50

# Reads an environment with its active and batch releases (plus a message's release and any
# extra ids). Shared by both scripts: a refused write answers with fresh state at once.
_READ_FUNCTION = """
local function read_snapshot(prefix, env, msg, extras)
  local from_msg = false
  if msg ~= '' then
    local hit = redis.call('GET', prefix .. 'msg:' .. msg)
    if not hit then return {false, false} end
    local slash = string.find(hit, '/', 1, true)
    env = string.sub(hit, 1, slash - 1)
    from_msg = string.sub(hit, slash + 1)
  end
  local out = {}
  local env_raw = redis.call('GET', prefix .. 'env:' .. env)
  out[1] = env_raw or false
  out[2] = from_msg
  local ids = {}
  if from_msg then ids[#ids + 1] = from_msg end
  for _, id in ipairs(extras) do ids[#ids + 1] = id end
  if env_raw then
    local doc = cjson.decode(env_raw)
    for _, k in ipairs({'active_release', 'batch_release'}) do
      if doc[k] and doc[k] ~= cjson.null then ids[#ids + 1] = doc[k] end
    end
  end
  local seen = {}
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      local raw = redis.call('GET', prefix .. 'release:' .. id)
      if raw then
        out[#out + 1] = id
        out[#out + 1] = raw
      end
    end
  end
  return out
end
"""

_READ = (
    _READ_FUNCTION
    + """
local extras = {}
for i = 4, #ARGV do extras[#extras + 1] = ARGV[i] end
return read_snapshot(ARGV[1], ARGV[2], ARGV[3], extras)
"""
)

# Adds one job. A collect only triggers a fresh read of the repository, so it goes to its own
# stream (a flood of triggers never delays a deploy) and only when none waits already: the
# flag is cleared by the worker as it starts collecting, before it reads git, so a trigger
# that lands meanwhile queues the next collect and nothing is missed.
_ENQUEUE_FUNCTION = """
local function enqueue(q, job)
  if job[1] == 'kind' and job[2] == 'collect' then
    if not redis.call('SET', q.collect_flag, '1', 'NX', 'EX', q.collect_ttl) then return end
    redis.call('XADD', q.collects, 'MAXLEN', '~', q.maxlen, '*', unpack(job))
  else
    redis.call('XADD', q.jobs, 'MAXLEN', '~', q.maxlen, '*', unpack(job))
  end
end
"""

_ENQUEUE = (
    _ENQUEUE_FUNCTION
    + """
local p = cjson.decode(ARGV[1])
for _, job in ipairs(p.jobs) do enqueue(p.queue, job) end
return #p.jobs
"""
)

# Writes documents only if every document the decision read (``checks``) and every one
# it replaces (``docs``) still has the version the decision saw.
_WRITE = (
    _READ_FUNCTION
    + _ENQUEUE_FUNCTION
    + """
local p = cjson.decode(ARGV[1])
local function version(key)
  local raw = redis.call('GET', key)
  if not raw then return 0 end
  return tonumber(string.match(raw, '^{"version": (%d+)'))
end
if p.dedupe ~= cjson.null and redis.call('EXISTS', p.dedupe) == 1 then return {'duplicate'} end
local stale = false
for _, c in ipairs(p.checks) do
  if version(c[1]) ~= c[2] then stale = true end
end
for _, w in ipairs(p.docs) do
  if version(w[1]) ~= w[2] then stale = true end
end
if stale then
  local fresh = read_snapshot(p.read[1], p.read[2], p.read[3], p.read[4])
  local reply = {'conflict'}
  for i = 1, #fresh do reply[#reply + 1] = fresh[i] end
  return reply
end
-- Redis does not undo a script's earlier writes when a later command fails, so anything
-- that could fail for a wrong key type is checked before the first write
local function holds(key, kind)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == kind
end
if p.audit and not holds(p.audit_key, 'stream') then
  return redis.error_reply('WRONGTYPE ' .. p.audit_key .. ' is not a stream; nothing written')
end
if p.counts and not holds(p.counts_key, 'hash') then
  return redis.error_reply('WRONGTYPE ' .. p.counts_key .. ' is not a hash; nothing written')
end
for _, w in ipairs(p.docs) do redis.call('SET', w[1], w[3]) end
for _, kv in ipairs(p.index) do redis.call('SET', kv[1], kv[2]) end
for _, job in ipairs(p.jobs) do enqueue(p.queue, job) end
if p.dedupe ~= cjson.null then redis.call('SET', p.dedupe, '1', 'EX', p.ttl) end
if p.audit then
  for _, entry in ipairs(p.audit) do
    if p.audit_maxlen > 0 then
      redis.call('XADD', p.audit_key, 'MAXLEN', '~', p.audit_maxlen, '*', unpack(entry))
    else
      redis.call('XADD', p.audit_key, '*', unpack(entry))
    end
  end
end
if p.counts then
  for _, f in ipairs(p.counts) do redis.call('HINCRBY', p.counts_key, f, 1) end
end
return {'ok'}
"""
)

# The newest releases of an environment, newest first: ids are "<env>-<n>" from one counter
# and release documents are never deleted, so walking down from the counter finds them with
# no index. Ids that were handed out but never written (a refused /rollback) are skipped;
# ``scan`` bounds the walk.
_RECENT = """
local prefix, env, want, scan = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local n = tonumber(redis.call('GET', prefix .. 'seq:' .. env) or '0')
local out = {redis.call('GET', prefix .. 'env:' .. env) or false, n}
local found, i = 0, n
while i > 0 and found < want and n - i < scan do
  local raw = redis.call('GET', prefix .. 'release:' .. env .. '-' .. i)
  if raw then
    out[#out + 1] = raw
    found = found + 1
  end
  i = i - 1
end
return out
"""


class Conflict(Exception):
    """Too many concurrent writers kept changing the same environment."""


class Duplicate(Exception):
    """This delivery (event_id, delivery id) was already recorded."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    env: EnvState
    releases: Mapping[str, Release]
    #: the release a (channel, ts) lookup resolved to
    message_release: str | None = None

    def get(self, release_id: str | None) -> Release | None:
        return self.releases.get(release_id) if release_id else None

    @property
    def active(self) -> Release | None:
        return self.get(self.env.active_release)

    @property
    def batch(self) -> Release | None:
        return self.get(self.env.batch_release)


@dataclass(frozen=True, slots=True)
class Recent:
    """An environment and its newest releases (newest first), for ``/history``."""

    env: EnvState
    releases: Sequence[Release]
    #: how many release ids the environment has handed out
    total: int


@dataclass(frozen=True, slots=True)
class Write:
    """What one decision writes. ``env`` None leaves the environment untouched."""

    env: EnvState | None = None
    releases: Sequence[Release] = ()
    jobs: Sequence[Job] = ()
    #: (channel, ts, release id) message index entries
    messages: Sequence[tuple[str, str, str]] = ()
    #: who asked for this write, for decisions that do not name who made them (``/unlock``)
    actor: str | None = None


Decide = Callable[[Snapshot], tuple[Write | None, T]]


class Store:
    """Optimistic transactions over Redis.

    With ``cache=True`` (the `web` process) the store remembers the last snapshot of each
    environment and decides on it directly: the write then checks, in the same round trip,
    that nothing the decision read has changed, and a refused write comes back with the
    fresh state to decide on again. A warm cache makes an intent one round trip instead of
    two, and a stale one costs nothing extra. Correctness never depends on the cache.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys | None = None,
        *,
        cache: bool = False,
        audit_maxlen: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``audit_maxlen``: keep about that many audit entries (approximate trimming); the
        default None keeps every one, since an audit trail that forgets is not one."""
        self.redis = redis
        self.keys = keys or Keys()
        self.audit_maxlen = audit_maxlen
        self.clock = clock
        self._read = redis.register_script(_READ)
        self._write = redis.register_script(_WRITE)
        self._recent = redis.register_script(_RECENT)
        self._enqueue = redis.register_script(_ENQUEUE)
        #: where the scripts put jobs (see ``_ENQUEUE_FUNCTION``)
        self._queue: dict[str, str | int] = {
            "jobs": self.keys.jobs,
            "collects": self.keys.collects,
            "collect_flag": self.keys.collect_pending,
            "collect_ttl": COLLECT_PENDING_TTL_SECONDS,
            "maxlen": JOBS_MAXLEN,
        }
        self._cache: _SnapshotCache | None = _SnapshotCache() if cache else None

    async def snapshot(
        self,
        env: str,
        *,
        extra: Sequence[str] = (),
        message: tuple[str, str] | None = None,
    ) -> Snapshot | None:
        """Read an environment and its releases; None if ``message`` indexes no release."""
        msg = self.keys.message_suffix(*message) if message else ""
        raw: list[Any] = await self._read(
            keys=[self.keys.env(env or "_")], args=[self.keys.prefix, env, msg, *extra]
        )
        return self._parse(raw, env, message)

    def _parse(
        self, raw: Sequence[Any], env: str, message: tuple[str, str] | None
    ) -> Snapshot | None:
        if message and not raw[1]:
            return None
        env_raw, from_msg = raw[0], raw[1]
        releases: dict[str, Release] = {}
        for i in range(2, len(raw), 2):
            releases[_text(raw[i])] = release_from_doc(json.loads(raw[i + 1]))
        if env_raw:
            state = env_from_doc(json.loads(env_raw))
        else:
            name = env or next(iter(releases.values())).env
            state = EnvState(name=name)
        snap = Snapshot(env=state, releases=releases, message_release=_text(from_msg) or None)
        if self._cache is not None:
            self._cache.remember(snap, message)
        return snap

    async def update(
        self,
        env: str,
        decide: Decide[T],
        *,
        extra: Sequence[str] = (),
        message: tuple[str, str] | None = None,
        dedupe: str | None = None,
    ) -> T:
        """Decide on the latest state and write the decision atomically.

        ``decide`` must be pure: it may run several times. A DomainError it raises is the
        answer only once it was raised on state known to be current. Raises Duplicate
        when the ``dedupe`` key was already recorded (the effect happened before).
        """
        snap = self._cache.lookup(env, extra, message) if self._cache is not None else None
        fresh = snap is None
        for _ in range(MAX_ATTEMPTS):
            if snap is None:
                snap = await self.snapshot(env, extra=extra, message=message)
                fresh = True
                if snap is None:
                    return decide(Snapshot(env=EnvState(name=env), releases={}))[1]
            try:
                write, result = decide(snap)
            except Exception:
                if fresh:
                    raise
                # refused on remembered state: confirm the state in one round trip
                outcome, snap = await self._commit(snap, Write(), None, env, extra, message)
                fresh = True
                if outcome == "ok":
                    raise
                continue
            if write is None and dedupe is None and fresh:
                return result
            outcome, after = await self._commit(snap, write or Write(), dedupe, env, extra, message)
            if outcome == "ok":
                return result
            if outcome == "duplicate":
                raise Duplicate(dedupe)
            snap, fresh = after, True
        raise Conflict(f"gave up after {MAX_ATTEMPTS} concurrent updates of {env}")

    async def _commit(
        self,
        snap: Snapshot,
        write: Write,
        dedupe: str | None,
        env: str,
        extra: Sequence[str],
        message: tuple[str, str] | None,
    ) -> tuple[str, Snapshot | None]:
        """Write if nothing ``snap`` holds has changed: ("ok" | "duplicate" | "conflict", fresh state)."""
        docs: list[list[Any]] = []
        index: list[list[str]] = []
        jobs = list(write.jobs)
        written_env: EnvState | None = None
        written: list[Release] = []
        pairs: list[tuple[Release | None, Release]] = []
        if write.env is not None:
            expected = snap.env.version
            # decisions are audited below, never stored or remembered as already made
            written_env = replace(write.env, version=expected + 1, decisions=())
            docs.append(
                [self.keys.env(write.env.name), expected, json.dumps(env_to_doc(written_env))]
            )
        for release in write.releases:
            before = snap.releases.get(release.id)
            expected = before.version if before else 0
            new = replace(release, version=expected + 1, decisions=())
            written.append(new)
            pairs.append((before, new))
            docs.append([self.keys.release(release.id), expected, json.dumps(release_to_doc(new))])
            jobs.append(render_job(release))
        for channel, ts, rid in write.messages:
            env_name = next((r.env for r in write.releases if r.id == rid), snap.env.name)
            index.append([self.keys.message(channel, ts), f"{env_name}/{rid}"])
        checks = [[self.keys.env(snap.env.name), snap.env.version]]
        checks += [[self.keys.release(r.id), r.version] for r in snap.releases.values()]
        msg = self.keys.message_suffix(*message) if message else ""
        payload: dict[str, Any] = {
            "docs": docs,
            "checks": checks,
            "index": index,
            "jobs": [job.flat() for job in jobs],
            "queue": self._queue,
            "dedupe": dedupe,
            "ttl": DEDUPE_TTL_SECONDS,
            "read": [self.keys.prefix, env or snap.env.name, msg, list(extra)],
        }
        # what the decision's events decided; if the state it read is stale the script refuses
        # the write and these entries with it
        entries = audit.entries(write.releases, write.env, at=self.clock(), actor=write.actor)
        if entries:
            payload["audit"] = [entry.fields() for entry in entries]
            payload["audit_key"] = self.keys.audit
            payload["audit_maxlen"] = self.audit_maxlen or 0
        counts = audit.state_changes(pairs)
        if counts:
            payload["counts"] = [f"{e}|{state}" for e, state in counts]
            payload["counts_key"] = self.keys.state_counts
        reply: list[Any] = await self._write(
            keys=[self.keys.env(snap.env.name)], args=[json.dumps(payload)]
        )
        outcome = _text(reply[0])
        if outcome == "conflict":
            return outcome, self._parse(reply[1:], env, message)
        if outcome == "ok" and self._cache is not None:
            self._cache.written(snap, written_env, written, write.messages)
        return outcome, None

    async def keep_warm(self, envs: Sequence[str], *, every: float, stop: asyncio.Event) -> None:
        """Re-read each environment about every ``every`` seconds, one at a time, so a
        cached store usually decides in one round trip. Errors only cost the warmth."""
        if not envs:
            return
        pause = every / len(envs)
        while not stop.is_set():
            for env in envs:
                with contextlib.suppress(RedisError):
                    await self.snapshot(env)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                if stop.is_set():
                    return

    async def recent(self, env: str, limit: int, *, scan: int = 200) -> Recent:
        """The environment and up to ``limit`` of its newest release documents, in one
        round trip (the collecting batch counts towards ``limit`` when it is among them)."""
        raw: list[Any] = await self._recent(
            keys=[self.keys.env(env)], args=[self.keys.prefix, env, limit, scan]
        )
        state = env_from_doc(json.loads(raw[0])) if raw[0] else EnvState(name=env)
        releases = [release_from_doc(json.loads(doc)) for doc in raw[2:]]
        return Recent(env=state, releases=releases, total=int(raw[1]))

    async def audit_log(self, count: int = 100) -> list[audit.Entry]:
        """The newest ``count`` audit entries, oldest first."""
        raw = await self.redis.xrevrange(self.keys.audit, count=count) or []
        return [audit.Entry.from_fields(_decoded(fields or {})) for _, fields in reversed(raw)]

    async def release(self, release_id: str) -> Release | None:
        raw = await self.redis.get(self.keys.release(release_id))
        return release_from_doc(json.loads(raw)) if raw else None

    async def env(self, name: str) -> EnvState:
        raw = await self.redis.get(self.keys.env(name))
        return env_from_doc(json.loads(raw)) if raw else EnvState(name=name)

    async def next_release_id(self, env: str) -> str:
        n = await self.redis.incr(self.keys.sequence(env))
        return f"{env}-{n}"

    async def enqueue(self, *jobs: Job) -> None:
        """Queue ``jobs``; a collect is dropped when one waits already (see ``_ENQUEUE_FUNCTION``)."""
        if not jobs:
            return
        payload = {"jobs": [job.flat() for job in jobs], "queue": self._queue}
        await self._enqueue(keys=[self.keys.jobs], args=[json.dumps(payload)])

    async def collect_started(self) -> None:
        """A worker is about to read the repository: the next trigger queues a new collect."""
        await self.redis.delete(self.keys.collect_pending)

    @property
    def streams(self) -> tuple[str, str]:
        """Every job stream: deploys, renders and notices; collects."""
        return (self.keys.jobs, self.keys.collects)

    async def ensure_group(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, JOBS_GROUP, id="0", mkstream=True)
            except Exception as err:  # redis raises ResponseError BUSYGROUP when it exists
                if "BUSYGROUP" not in str(err):
                    raise


class _SnapshotCache:
    """The last known state per environment, for the `web` process's one-round-trip path."""

    MAX_RELEASES = 16
    MAX_MESSAGES = 2048

    def __init__(self) -> None:
        self._envs: dict[str, Snapshot] = {}
        self._messages: dict[tuple[str, str], tuple[str, str]] = {}

    def lookup(
        self, env: str, extra: Sequence[str], message: tuple[str, str] | None
    ) -> Snapshot | None:
        release_id = None
        if message is not None:
            hit = self._messages.get(message)
            if hit is None:
                return None
            env, release_id = hit
        snap = self._envs.get(env)
        if snap is None or any(
            rid not in snap.releases for rid in (*extra, *([release_id] if release_id else []))
        ):
            return None
        return replace(snap, message_release=release_id)

    def remember(self, snap: Snapshot, message: tuple[str, str] | None) -> None:
        self._envs[snap.env.name] = replace(snap, message_release=None)
        if message is not None and snap.message_release:
            self._index(message, snap.env.name, snap.message_release)

    def written(
        self,
        snap: Snapshot,
        env: EnvState | None,
        releases: Sequence[Release],
        messages: Sequence[tuple[str, str, str]],
    ) -> None:
        merged = dict(snap.releases)
        for release in releases:
            merged.pop(release.id, None)
            merged[release.id] = release
        while len(merged) > self.MAX_RELEASES:
            merged.pop(next(iter(merged)))
        new_env = env or snap.env
        self._envs[new_env.name] = Snapshot(env=new_env, releases=merged)
        for channel, ts, rid in messages:
            self._index((channel, ts), new_env.name, rid)

    def _index(self, message: tuple[str, str], env: str, release_id: str) -> None:
        self._messages[message] = (env, release_id)
        if len(self._messages) > self.MAX_MESSAGES:
            self._messages.pop(next(iter(self._messages)))


def _decoded(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}


def _text(value: Any) -> str:
    if value is None or value is False:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
