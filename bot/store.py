"""Redis as the single source of truth: read a snapshot, decide in pure code, write atomically.

Every change is an optimistic transaction in two round trips. A Lua script reads an
environment with the releases it points at; the caller decides with ``domain``; a
second script checks that nothing it read has changed since (by version), then writes
the new documents, the message index, the jobs and the de-duplication mark in one
step. A write based on stale state is refused and the decision is made again, so a
release can never be approved twice, deployed twice or half-applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from redis.asyncio import Redis

from bot.keys import DEDUPE_TTL_SECONDS, JOBS_GROUP, JOBS_MAXLEN, Keys
from domain.codec import env_from_doc, env_to_doc, release_from_doc, release_to_doc
from domain.models import EnvState, Release

T = TypeVar("T")

MAX_ATTEMPTS = 50

_READ = """
local prefix = ARGV[1]
local env = ARGV[2]
local from_msg = false
if ARGV[3] ~= '' then
  local hit = redis.call('GET', prefix .. 'msg:' .. ARGV[3])
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
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
if env_raw then
  local doc = cjson.decode(env_raw)
  for _, k in ipairs({'active_release', 'batch_release', 'live_release'}) do
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
"""

_WRITE = """
local p = cjson.decode(ARGV[1])
local function version(key)
  local raw = redis.call('GET', key)
  if not raw then return 0 end
  return tonumber(string.match(raw, '^{"version": (%d+)'))
end
if p.dedupe ~= cjson.null and redis.call('EXISTS', p.dedupe) == 1 then return 'duplicate' end
for _, w in ipairs(p.docs) do
  if version(w[1]) ~= w[2] then return 'conflict' end
end
for _, w in ipairs(p.docs) do redis.call('SET', w[1], w[3]) end
for _, kv in ipairs(p.index) do redis.call('SET', kv[1], kv[2]) end
for _, job in ipairs(p.jobs) do
  redis.call('XADD', p.stream, 'MAXLEN', '~', p.maxlen, '*', unpack(job))
end
if p.dedupe ~= cjson.null then redis.call('SET', p.dedupe, '1', 'EX', p.ttl) end
return 'ok'
"""


class Conflict(Exception):
    """Too many concurrent writers kept changing the same environment."""


class Duplicate(Exception):
    """This delivery (event_id, delivery id) was already recorded."""


@dataclass(frozen=True, slots=True)
class Job:
    kind: str
    fields: Mapping[str, str] = field(default_factory=dict)

    def flat(self) -> list[str]:
        out = ["kind", self.kind]
        for k, v in self.fields.items():
            out.extend((k, v))
        return out


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
class Write:
    """What one decision writes. ``env`` None leaves the environment untouched."""

    env: EnvState | None = None
    releases: Sequence[Release] = ()
    jobs: Sequence[Job] = ()
    #: (channel, ts, release id) message index entries
    messages: Sequence[tuple[str, str, str]] = ()


Decide = Callable[[Snapshot], tuple[Write | None, T]]


def render_job(release_id: str) -> Job:
    return Job("render", {"release": release_id})


class Store:
    def __init__(self, redis: Redis, keys: Keys | None = None) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self._read = redis.register_script(_READ)
        self._write = redis.register_script(_WRITE)

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
        if message and not raw[1]:
            return None
        env_raw, from_msg = raw[0], raw[1]
        releases: dict[str, Release] = {}
        for i in range(2, len(raw), 2):
            rid = _text(raw[i])
            releases[rid] = release_from_doc(json.loads(raw[i + 1]))
        if env_raw:
            state = env_from_doc(json.loads(env_raw))
        else:
            name = env or next(iter(releases.values())).env
            state = EnvState(name=name)
        return Snapshot(env=state, releases=releases, message_release=_text(from_msg) or None)

    async def update(
        self,
        env: str,
        decide: Decide[T],
        *,
        extra: Sequence[str] = (),
        message: tuple[str, str] | None = None,
        dedupe: str | None = None,
    ) -> T:
        """Read, decide, write; decide again whenever someone else wrote in between.

        ``decide`` must be pure: it may run several times. Raises Duplicate when the
        ``dedupe`` key was already recorded (the effect happened before).
        """
        for _ in range(MAX_ATTEMPTS):
            snap = await self.snapshot(env, extra=extra, message=message)
            if snap is None:
                return decide(Snapshot(env=EnvState(name=env), releases={}))[1]
            write, result = decide(snap)
            if write is None and dedupe is None:
                return result
            outcome = await self._commit(snap, write or Write(), dedupe)
            if outcome == "ok":
                return result
            if outcome == "duplicate":
                raise Duplicate(dedupe)
        raise Conflict(f"gave up after {MAX_ATTEMPTS} concurrent updates of {env}")

    async def _commit(self, snap: Snapshot, write: Write, dedupe: str | None) -> str:
        docs: list[list[Any]] = []
        index: list[list[str]] = []
        jobs = list(write.jobs)
        if write.env is not None:
            expected = snap.env.version
            env_doc = env_to_doc(replace(write.env, version=expected + 1))
            docs.append([self.keys.env(write.env.name), expected, json.dumps(env_doc)])
        for release in write.releases:
            before = snap.releases.get(release.id)
            expected = before.version if before else 0
            doc = release_to_doc(replace(release, version=expected + 1))
            docs.append([self.keys.release(release.id), expected, json.dumps(doc)])
            jobs.append(render_job(release.id))
        for channel, ts, rid in write.messages:
            env_name = next((r.env for r in write.releases if r.id == rid), snap.env.name)
            index.append([self.keys.message(channel, ts), f"{env_name}/{rid}"])
        payload = {
            "docs": docs,
            "index": index,
            "jobs": [job.flat() for job in jobs],
            "stream": self.keys.jobs,
            "maxlen": JOBS_MAXLEN,
            "dedupe": dedupe,
            "ttl": DEDUPE_TTL_SECONDS,
        }
        result = await self._write(keys=[self.keys.env(snap.env.name)], args=[json.dumps(payload)])
        return _text(result)

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
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.xadd(
                    self.keys.jobs, dict(_pairs(job.flat())), maxlen=JOBS_MAXLEN, approximate=True
                )
            await pipe.execute()

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.jobs, JOBS_GROUP, id="0", mkstream=True)
        except Exception as err:  # redis raises ResponseError BUSYGROUP when it exists
            if "BUSYGROUP" not in str(err):
                raise


def _pairs(flat: list[str]) -> list[tuple[str, str]]:
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _text(value: Any) -> str:
    if value is None or value is False:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
