"""Per-environment deploy locks: a token, a lifetime that is renewed, and a fencing number.

A lock names the worker holding it, and every worker keeps a short-lived liveness key
(:class:`Liveness`): a lock whose holder is no longer alive can be taken at once, so a
worker killed mid-deploy holds its environment for seconds, not for the lock's lifetime.

The fencing number grows with every acquisition and is written into the release when
its deploy starts; every later write checks it. A worker that was paused past its
lock's lifetime therefore cannot move a release another worker has taken over, and
``kept_alive`` tells it the lease is gone as soon as it runs again, so it can stop the
deploy it had started instead of letting it run beside the new owner's.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.adapters.keys import Keys

#: a worker refreshes its liveness key this often ...
ALIVE_EVERY = 1.0
#: ... and it lives this long: missing for this long, the worker is taken for dead. Three
#: refreshes, so a slow event loop or a Redis hiccup does not make a live worker look dead.
ALIVE_TTL = 3.0

# KEYS: lock, fence; ARGV: token, ttl ms, liveness key prefix ('' when locks are not tied to
# liveness). A token is "<holder>|<random>": a lock whose holder's liveness key is gone is free.
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then
  local holder = ARGV[3] ~= '' and string.match(held, '^(.*)|%x+$')
  if not holder or redis.call('EXISTS', ARGV[3] .. holder) == 1 then return false end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Lease:
    env: str
    token: str
    fence: int


class LockLost(Exception):
    """The lease expired and someone else may hold the lock now."""


class Liveness:
    """A worker's liveness key, refreshed while the worker runs: others take its jobs and its
    deploy locks once the key is gone. A paused worker looks dead too; fencing keeps it
    harmless when it resumes."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        name: str,
        *,
        ttl: float = ALIVE_TTL,
        every: float = ALIVE_EVERY,
    ) -> None:
        self.redis = redis
        self.key = keys.alive(name)
        self.ttl_ms = int(ttl * 1000)
        self.every = every

    async def beat(self) -> None:
        await self.redis.set(self.key, "1", px=self.ttl_ms)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh until ``stop``; then say so at once, so others need not wait for the TTL."""
        while not stop.is_set():
            with contextlib.suppress(RedisError):  # the worker's other loops report outages
                await self.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every)
        with contextlib.suppress(RedisError):
            await self.redis.delete(self.key)


class DeployLocks:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        ttl: float = 30.0,
        poll: float | None = None,
        holder: str | None = None,
        alive_ttl: float = ALIVE_TTL,
    ) -> None:
        """``holder``: the worker's name (its :class:`Liveness` key); its locks are free
        once it is dead. Without one a lock is free only once its ``ttl`` ran out."""
        self.redis = redis
        self.keys = keys
        self.ttl_ms = int(ttl * 1000)
        self.holder = holder
        #: how long this lease is safe without a renewal: the lock's lifetime, or less when a
        #: missed liveness refresh can free it sooner
        self.safe_for = min(ttl, alive_ttl) if holder is not None else ttl
        #: how often a waiting worker tries again; a short lease is worth a short wait
        self.poll = poll if poll is not None else min(0.5, self.safe_for / 10)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def try_acquire(self, env: str) -> Lease | None:
        token = secrets.token_hex(12)
        alive_prefix = ""
        if self.holder is not None:
            token = f"{self.holder}|{token}"
            alive_prefix = self.keys.alive("")
        fence = await self._acquire(
            keys=[self.keys.deploy_lock(env), self.keys.fence(env)],
            args=[token, self.ttl_ms, alive_prefix],
        )
        return Lease(env, token, int(fence)) if fence else None

    async def acquire(self, env: str, *, wait: float) -> Lease | None:
        """Wait up to ``wait`` seconds for the lock (its holder may be finishing)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            lease = await self.try_acquire(env)
            if lease is not None or loop.time() >= deadline:
                return lease
            await asyncio.sleep(min(self.poll, max(0.0, deadline - loop.time())))

    async def renew(self, lease: Lease) -> bool:
        return bool(
            await self._renew(
                keys=[self.keys.deploy_lock(lease.env)], args=[lease.token, self.ttl_ms]
            )
        )

    async def release(self, lease: Lease) -> None:
        await self._release(keys=[self.keys.deploy_lock(lease.env)], args=[lease.token])

    @contextlib.asynccontextmanager
    async def kept_alive(self, lease: Lease) -> AsyncIterator[asyncio.Event]:
        """Renew the lease in the background; the event is set once it may be lost.

        That is when a renewal is refused (someone else holds the lock) and also when no
        renewal succeeded for as long as the lease is safe (``safe_for``): after a pause
        (SIGSTOP, a stalled VM) or while Redis is unreachable the lock may have expired, or
        this worker been taken for dead, and the lock been taken; a worker must assume the
        worst rather than wait to be told.
        """
        lost = asyncio.Event()
        ttl = self.safe_for

        async def keep() -> None:
            loop = asyncio.get_running_loop()
            confirmed = loop.time()  # the lease runs until at least confirmed + ttl
            while True:
                await asyncio.sleep(ttl / 3)
                asked = loop.time()
                if asked - confirmed >= ttl:
                    lost.set()
                    return
                try:
                    renewed = await self.renew(lease)
                except RedisError:
                    continue  # try again; the lifetime check above gives up in time
                if not renewed:
                    lost.set()
                    return
                confirmed = asked

        task = asyncio.create_task(keep())
        try:
            yield lost
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(RedisError):  # unreleased, it expires on its own
                await self.release(lease)
