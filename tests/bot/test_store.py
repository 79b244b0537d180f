"""The Redis store against a real redis-server: atomic, versioned, exactly-once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from bot.adapters.keys import Keys
from bot.adapters.locks import DeployLocks
from bot.adapters.store import Duplicate, Snapshot, Store, Write
from bot.domain import environment
from bot.domain import release as rel
from bot.domain.errors import DomainError, ReleaseInProgress
from bot.domain.jobs import approvals_job
from bot.domain.models import Author, Commit, EnvState, Person, Release, ReleaseState

ALICE = Person(email="alice@example.com", name="Alice", slack_user="U0ALICE")
COMMIT = Commit(sha="a" * 40, title="Add cart", author=Author("Alice", "alice@example.com"))


async def _seed_batch(store: Store, env: str = "sandbox") -> Release:
    release_id = await store.next_release_id(env)

    def decide(snap: Snapshot) -> tuple[Write, Release]:
        change = environment.new_batch(snap.env, release_id, at=1.0)
        batch = rel.apply(change.releases[0], rel.Collect((COMMIT,), (ALICE,), None), at=1.0)
        return Write(env=change.env, releases=[batch]), batch

    return await store.update(env, decide)


def _freeze(by: str) -> Callable[[Snapshot], tuple[Write, Release]]:
    def decide(snap: Snapshot) -> tuple[Write, Release]:
        change = environment.request_release(
            snap.env, snap.batch, snap.active, by=by, approval_required=True, stand_ins=(), at=2.0
        )
        return Write(env=change.env, releases=change.releases), change.releases[0]

    return decide


@pytest.fixture
def store(redis: Redis) -> Store:
    return Store(redis, Keys("test"))


async def test_snapshot_reads_env_and_its_releases(store: Store) -> None:
    """One read returns the environment with its batch, active and live releases."""
    batch = await _seed_batch(store)
    snap = await store.snapshot("sandbox")
    assert snap is not None
    assert snap.env.batch_release == batch.id
    assert snap.batch is not None and snap.batch.commits == (COMMIT,)
    assert snap.env.version == 1 and snap.batch.version == 1


async def test_fifty_concurrent_releases_make_exactly_one(store: Store) -> None:
    """Fifty /release at once: one freezes the batch, every other is refused."""
    await _seed_batch(store)
    results = await asyncio.gather(
        *(store.update("sandbox", _freeze(f"U{i:04d}")) for i in range(50)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Release)]
    refused = [r for r in results if isinstance(r, ReleaseInProgress)]
    assert len(won) == 1 and len(refused) == 49
    env = await store.env("sandbox")
    assert env.active_release == won[0].id and env.batch_release is None


async def test_a_stale_write_is_refused_and_decided_again(store: Store) -> None:
    """A decision based on a version someone else replaced is recomputed, never written."""
    batch = await _seed_batch(store)
    calls = 0

    def slow(snap: Snapshot) -> tuple[Write, int]:
        nonlocal calls
        calls += 1
        current = snap.get(batch.id)
        assert current is not None
        return Write(releases=[replace(current, reason=f"try {calls}")]), calls

    snap = await store.snapshot("sandbox")
    assert snap is not None
    await store.update("sandbox", slow)  # bumps the version
    outcome, fresh = await store._commit(
        snap, Write(releases=[replace(batch, reason="stale")]), None, "sandbox", (), None
    )
    assert outcome == "conflict"
    assert fresh is not None and fresh.get(batch.id) is not None
    current = await store.release(batch.id)
    assert current is not None and current.reason == "try 1"


async def test_dedupe_key_gives_one_effect(store: Store) -> None:
    """The same delivery recorded twice changes state once and then raises Duplicate."""
    await _seed_batch(store)
    key = store.keys.dedupe("slack", "Ev1")

    def touch(snap: Snapshot) -> tuple[Write, None]:
        return Write(env=snap.env), None

    await store.update("sandbox", touch, dedupe=key)
    with pytest.raises(Duplicate):
        await store.update("sandbox", touch, dedupe=key)
    assert (await store.env("sandbox")).version == 2


async def test_domain_refusal_writes_nothing(store: Store) -> None:
    """A decision that raises leaves Redis exactly as it was."""
    before = await store.env("sandbox")

    def refuse(snap: Snapshot) -> tuple[Write, None]:
        raise DomainError("no")

    with pytest.raises(DomainError):
        await store.update("sandbox", refuse)
    assert await store.env("sandbox") == before == EnvState(name="sandbox")


async def test_message_index_resolves_reactions(store: Store) -> None:
    """A (channel, ts) written with a release leads a later read to that release and its env."""
    batch = await _seed_batch(store)

    def post(snap: Snapshot) -> tuple[Write, None]:
        current = snap.get(batch.id)
        assert current is not None
        return Write(
            releases=[replace(current, channel="C1", message_ts="1.000100")],
            messages=[("C1", "1.000100", batch.id)],
        ), None

    await store.update("sandbox", post, extra=[batch.id])
    snap = await store.snapshot("", message=("C1", "1.000100"))
    assert snap is not None and snap.message_release == batch.id and snap.env.name == "sandbox"
    assert await store.snapshot("", message=("C1", "9.999999")) is None


async def test_every_write_enqueues_a_render(store: Store) -> None:
    """Messages are views: each written release gets a render job, along with the decision's jobs."""
    await store.ensure_group()
    batch = await _seed_batch(store)

    def freeze(snap: Snapshot) -> tuple[Write, None]:
        change = environment.request_release(
            snap.env, snap.batch, None, by="U1", approval_required=True, stand_ins=(), at=2
        )
        return Write(
            env=change.env,
            releases=change.releases,
            jobs=[approvals_job(batch)],
        ), None

    await store.update("sandbox", freeze)
    entries: list[tuple[str, dict[str, str]]] = await store.redis.xrange(store.keys.jobs)  # type: ignore[assignment]
    kinds = [fields["kind"] for _, fields in entries]
    assert kinds == ["render", "ask_approvals", "render"]


async def test_deploy_lock_fences_and_expires(redis: Redis) -> None:
    """A lock is exclusive, every acquisition gets a larger fence, and an expired lease cannot be renewed."""
    locks = DeployLocks(redis, Keys("test"), ttl=0.2)
    first = await locks.try_acquire("sandbox")
    assert first is not None
    assert await locks.try_acquire("sandbox") is None
    assert await locks.renew(first)

    async def expired() -> bool:
        return not await redis.exists(Keys("test").deploy_lock("sandbox"))

    for _ in range(100):
        if await expired():
            break
        await asyncio.sleep(0.05)
    second = await locks.try_acquire("sandbox")
    assert second is not None and second.fence > first.fence
    assert not await locks.renew(first), "the old holder cannot renew another's lock"
    await locks.release(first)  # a no-op: not the holder
    assert await redis.exists(Keys("test").deploy_lock("sandbox"))
    await locks.release(second)
    assert not await redis.exists(Keys("test").deploy_lock("sandbox"))


async def test_state_survives_a_redis_crash(store: Store, redis_server: object) -> None:
    """With AOF on, an acknowledged write is there after kill -9 and a restart."""
    from tests.conftest import RedisServer

    assert isinstance(redis_server, RedisServer)
    batch = await _seed_batch(store)
    await store.update("sandbox", _freeze("U0ALICE"))
    redis_server.kill()
    redis_server.start()
    await store.redis.connection_pool.disconnect()
    frozen = await store.release(batch.id)
    assert frozen is not None and frozen.state is ReleaseState.AWAITING_APPROVAL


class _Counting:
    """Counts script calls, to see how many round trips an update took."""

    def __init__(self, store: Store) -> None:
        self.reads = self.writes = 0
        read, write = store._read, store._write

        async def counted_read(*args: object, **kwargs: object) -> object:
            self.reads += 1
            return await read(*args, **kwargs)  # type: ignore[arg-type]

        async def counted_write(*args: object, **kwargs: object) -> object:
            self.writes += 1
            return await write(*args, **kwargs)  # type: ignore[arg-type]

        store._read = counted_read  # type: ignore[assignment]
        store._write = counted_write  # type: ignore[assignment]


async def test_cached_store_decides_in_one_round_trip(redis: Redis) -> None:
    """With a warm cache an intent is one script call; the result is the same."""
    plain = Store(redis, Keys("test"))
    await _seed_batch(plain)
    cached = Store(redis, Keys("test"), cache=True)
    assert await cached.snapshot("sandbox") is not None  # warms the cache
    calls = _Counting(cached)
    frozen = await cached.update("sandbox", _freeze("U0ALICE"))
    assert (calls.reads, calls.writes) == (0, 1)
    assert frozen.state is ReleaseState.AWAITING_APPROVAL
    assert (await plain.env("sandbox")).active_release == frozen.id


async def test_stale_cache_is_corrected_without_an_extra_read(redis: Redis) -> None:
    """Another writer changed the state: the refused write brings fresh state, and the decision is redone."""
    plain = Store(redis, Keys("test"))
    await _seed_batch(plain)
    cached = Store(redis, Keys("test"), cache=True)
    await cached.snapshot("sandbox")
    await plain.update("sandbox", _freeze("U0BOB"))  # behind the cache's back
    calls = _Counting(cached)
    with pytest.raises(ReleaseInProgress):
        await cached.update("sandbox", _freeze("U0ALICE"))
    assert (calls.reads, calls.writes) == (0, 1)


async def test_refusal_on_remembered_state_is_confirmed_first(redis: Redis) -> None:
    """A refusal decided on stale state is never the answer: the fresh state lets the release through."""
    plain = Store(redis, Keys("test"))
    await _seed_batch(plain)
    cached = Store(redis, Keys("test"), cache=True)
    first = await cached.update("sandbox", _freeze("U0ALICE"))

    def cancel(snap: Snapshot) -> tuple[Write, None]:
        current = snap.get(first.id)
        assert current is not None
        change = environment.cancel(snap.env, current, by="U0ALICE", at=3.0)
        return Write(env=change.env, releases=change.releases), None

    await plain.update("sandbox", cancel, extra=[first.id])  # the cache still sees it active
    await _seed_batch(plain)
    second = await cached.update("sandbox", _freeze("U0BOB"))
    assert second.id != first.id and second.state is ReleaseState.AWAITING_APPROVAL
