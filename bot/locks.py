"""Per-environment deploy locks: a token, a lifetime that is renewed, and a fencing number.

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

from bot.keys import Keys

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
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


class DeployLocks:
    def __init__(
        self, redis: Redis, keys: Keys, *, ttl: float = 30.0, poll: float | None = None
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_ms = int(ttl * 1000)
        #: how often a waiting worker tries again; a short lease is worth a short wait
        self.poll = poll if poll is not None else min(0.5, ttl / 10)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def try_acquire(self, env: str) -> Lease | None:
        token = secrets.token_hex(12)
        fence = await self._acquire(
            keys=[self.keys.deploy_lock(env), self.keys.fence(env)], args=[token, self.ttl_ms]
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
        renewal succeeded for a whole lifetime: after a pause (SIGSTOP, a stalled VM) or
        while Redis is unreachable the lock may have expired and been taken, and a worker
        must assume the worst rather than wait to be told.
        """
        lost = asyncio.Event()
        ttl = self.ttl_ms / 1000

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
